//! Configuration in two phases: [`RawConfig`] only parses (TOML file + `EVENTS_ETL__*`
//! environment, unknown keys refused); [`Config::validate`] fills defaults, checks every
//! value and cross-field rule, and names the offending key. Both run before any IO
//! besides reading the config file itself.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::event_types::{self, ColumnType, EventType, EventTypes, UnknownEventTypes};

/// Prefix of environment overrides: `EVENTS_ETL__WAREHOUSE__POSTGRES__URL` sets
/// `warehouse.postgres.url`.
pub const ENV_PREFIX: &str = "EVENTS_ETL";
/// Separator between the prefix and key segments in environment overrides.
pub const ENV_SEPARATOR: &str = "__";

/// A configuration problem, always naming the key (or the file) at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: config::ConfigError,
    },
    #[error("invalid configuration: {0} (check the key's spelling and type; environment overrides are {ENV_PREFIX}{ENV_SEPARATOR}<SECTION>{ENV_SEPARATOR}<KEY>)")]
    Parse(#[source] config::ConfigError),
    #[error("invalid configuration key `{key}`: {message}")]
    Invalid { key: Cow<'static, str>, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: Cow::Borrowed(key),
        message: message.into(),
    }
}

/// [`invalid`] for a key named by the configuration itself (`event_types.<name>...`).
fn invalid_at(key: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: Cow::Owned(key),
        message: message.into(),
    }
}

// ---- phase 1: parse only ----

/// The configuration as written. Every struct refuses unknown keys.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub source: RawSource,
    #[serde(default)]
    pub staging: RawStaging,
    #[serde(default)]
    pub warehouse: RawWarehouse,
    #[serde(default)]
    pub s3: RawS3,
    #[serde(default)]
    pub load: RawLoad,
    #[serde(default)]
    pub monitor: RawMonitor,
    #[serde(default)]
    pub cleaning: RawCleaning,
    /// `[event_types.<name>]`: per-type metadata contracts and typed view columns.
    #[serde(default)]
    pub event_types: BTreeMap<String, RawEventType>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[cleaning]` as written.
pub struct RawCleaning {
    pub unknown_event_types: Option<String>,
    pub naive_timezone: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[event_types.<name>]` as written.
pub struct RawEventType {
    pub required_metadata: Option<Vec<String>>,
    pub columns: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[monitor]` as written.
pub struct RawMonitor {
    pub max_pending_age_hours: Option<Scalar>,
    pub max_source_silence_hours: Option<Scalar>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[source]` as written.
pub struct RawSource {
    pub url: Option<String>,
    pub retention_days: Option<Scalar>,
    pub systemic_min_files: Option<Scalar>,
    pub systemic_min_percent: Option<Scalar>,
    pub list_concurrency: Option<Scalar>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[staging]` as written.
pub struct RawStaging {
    pub url: Option<String>,
    pub part_size_mb: Option<Scalar>,
    pub keep: Option<Scalar>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[warehouse]` as written.
pub struct RawWarehouse {
    pub kind: Option<String>,
    pub schema: Option<String>,
    #[serde(default)]
    pub postgres: RawPostgres,
    #[serde(default)]
    pub redshift: RawRedshift,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[warehouse.redshift]` as written.
pub struct RawRedshift {
    pub cluster_identifier: Option<String>,
    pub workgroup_name: Option<String>,
    pub database: Option<String>,
    pub db_user: Option<String>,
    pub secret_arn: Option<String>,
    pub iam_role: Option<String>,
    pub copy_region: Option<String>,
    pub statement_timeout_secs: Option<Scalar>,
    pub max_poll_interval_ms: Option<Scalar>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[warehouse.postgres]` as written.
pub struct RawPostgres {
    pub url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[s3]` as written.
pub struct RawS3 {
    pub force_path_style: Option<Scalar>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
/// `[load]` as written.
pub struct RawLoad {
    pub max_files: Option<Scalar>,
    pub max_bytes: Option<Scalar>,
    pub dedupe_window_days: Option<Scalar>,
    pub concurrency: Option<Scalar>,
}

/// A number or boolean as written: typed in TOML, text from the environment. Phase 1
/// keeps it as it came; [`Config::validate`] reads it strictly, naming the key.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Integer(i128),
    Bool(bool),
    Text(String),
    /// Anything else (a float, a table, an array): always refused by validation.
    Other(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number or a boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Integer(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Integer(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar::Integer(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Other(format!("the number {v}")))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
                Ok(Scalar::Other("a table".into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
                Ok(Scalar::Other("an array".into()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Scalar {
    /// A whole number: a TOML integer, or text of ASCII digits only (environment).
    fn whole(&self, key: &'static str) -> Result<u64, ConfigError> {
        let bad = |what: String| invalid(key, format!("{what} is not a whole number"));
        match self {
            Scalar::Integer(n) => u64::try_from(*n).map_err(|_| bad(n.to_string())),
            Scalar::Text(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                t.parse().map_err(|_| bad(format!("`{t}`")))
            }
            Scalar::Text(t) => Err(bad(format!("`{t}`"))),
            Scalar::Bool(b) => Err(bad(b.to_string())),
            Scalar::Other(what) => Err(bad(what.clone())),
        }
    }

    /// A boolean: a TOML boolean, or exactly `true` / `false` (environment).
    fn boolean(&self, key: &'static str) -> Result<bool, ConfigError> {
        match self {
            Scalar::Bool(b) => Ok(*b),
            Scalar::Text(t) if t == "true" => Ok(true),
            Scalar::Text(t) if t == "false" => Ok(false),
            Scalar::Text(t) => Err(invalid(key, format!("`{t}` is not true or false"))),
            Scalar::Integer(n) => Err(invalid(key, format!("{n} is not true or false"))),
            Scalar::Other(what) => Err(invalid(key, format!("{what} is not true or false"))),
        }
    }
}

fn whole(key: &'static str, v: Option<Scalar>, default: u64) -> Result<u64, ConfigError> {
    v.map_or(Ok(default), |v| v.whole(key))
}

/// A whole number within `range`, or an error naming the key and the range.
fn ranged(
    key: &'static str,
    v: Option<Scalar>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let n = whole(key, v, default)?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(invalid(
            key,
            format!("{n} is outside {}..={}", range.start(), range.end()),
        ))
    }
}

/// A whole number of at least 1.
fn at_least_one(key: &'static str, v: Option<Scalar>, default: u64) -> Result<u64, ConfigError> {
    match whole(key, v, default)? {
        0 => Err(invalid(key, "must be at least 1")),
        n => Ok(n),
    }
}

/// `source.url` and `staging.url`, both required, parsed, and not overlapping.
fn locations(
    source_url: Option<String>,
    staging_url: Option<String>,
    cwd: &Path,
) -> Result<(Location, Location), ConfigError> {
    let source_url = source_url.ok_or_else(|| invalid("source.url", "is required"))?;
    let source = parse_location("source.url", &source_url, cwd)?;
    let staging_url = staging_url.ok_or_else(|| invalid("staging.url", "is required"))?;
    let staging = parse_location("staging.url", &staging_url, cwd)?;
    if overlaps(&source, &staging) {
        return Err(invalid(
            "staging.url",
            format!("`{staging}` overlaps source.url `{source}`: staged parts would be discovered as input; use a separate prefix"),
        ));
    }
    Ok((source, staging))
}

/// `warehouse.kind` and the section it names.
fn warehouse_target(
    kind: Option<String>,
    postgres: RawPostgres,
    redshift: RawRedshift,
    staging: &Location,
) -> Result<WarehouseTarget, ConfigError> {
    match kind.as_deref().unwrap_or("postgres") {
        "postgres" => {
            let url = postgres.url.ok_or_else(|| {
                invalid(
                    "warehouse.postgres.url",
                    "is required when warehouse.kind = \"postgres\"",
                )
            })?;
            let tls =
                crate::warehouse::tls::settings(&url).map_err(|e| invalid("warehouse.postgres.url", e))?;
            tls.rest.parse::<tokio_postgres::Config>().map_err(|e| {
                invalid(
                    "warehouse.postgres.url",
                    format!("not a libpq URL or key=value string: {e}"),
                )
            })?;
            Ok(WarehouseTarget::Postgres { url })
        }
        "redshift" => Ok(WarehouseTarget::Redshift(RedshiftConfig::validate(
            redshift, staging,
        )?)),
        other => Err(invalid(
            "warehouse.kind",
            format!("`{other}`: expected \"postgres\" or \"redshift\""),
        )),
    }
}

fn boolean(key: &'static str, v: Option<Scalar>, default: bool) -> Result<bool, ConfigError> {
    v.map_or(Ok(default), |v| v.boolean(key))
}

impl RawConfig {
    /// Reads `path` (TOML) and overlays `EVENTS_ETL__*` variables from `env`.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        let built = config::Config::builder()
            .add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            )
            // Environment values stay the strings they are (no `try_parsing`): a schema
            // named `1e3` or `007` must not turn into a number, nor `True` into `true`.
            // Numbers and booleans are read from text in phase 2, naming the key.
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .source(Some(env)),
            )
            .build()
            .map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
        built.try_deserialize().map_err(ConfigError::Parse)
    }
}

// ---- phase 2: validate ----

pub use crate::store::Location;

/// Parses `s3://bucket/prefix/`, `file:///abs/dir/` or a filesystem path (relative paths
/// are taken from `cwd`) as the location of configuration key `key`.
fn parse_location(key: &'static str, url: &str, cwd: &Path) -> Result<Location, ConfigError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(invalid(
                key,
                format!("`{url}`: `{bucket}` is not a valid S3 bucket name (3-63 characters of a-z, 0-9, '.', '-', starting and ending with a letter or digit)"),
            ));
        }
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        return Ok(Location::S3 {
            bucket: bucket.to_owned(),
            prefix,
        });
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(invalid(
                key,
                format!("`{url}`: a file URL needs an absolute path (file:///abs/dir/)"),
            ));
        }
        PathBuf::from(rest)
    } else if url.contains("://") {
        return Err(invalid(
            key,
            format!("`{url}`: only s3:// and file:// URLs or plain paths are supported"),
        ));
    } else if url.is_empty() {
        return Err(invalid(key, "is empty"));
    } else {
        cwd.join(url)
    };
    Ok(Location::Local {
        root: normalise_path(&path),
    })
}

/// Removes `.` and `..` components without touching the filesystem.
fn normalise_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

/// Which warehouse the load goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarehouseTarget {
    /// PostgreSQL: the stand-in for Redshift in tests and local runs.
    Postgres { url: String },
    /// Amazon Redshift through the Data API.
    Redshift(RedshiftConfig),
}

pub use crate::warehouse::redshift::{RedshiftConfig, RedshiftTarget};

/// Default `warehouse.redshift.statement_timeout_secs`.
pub const DEFAULT_STATEMENT_TIMEOUT_SECS: u64 = 3600;
/// Default `warehouse.redshift.max_poll_interval_ms`.
pub const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 5000;

/// How the Data API reaches the database: a provisioned cluster with `db_user` or a
/// secret, or a Serverless workgroup; exactly one way, or an error naming the key.
fn redshift_target(
    cluster: Option<String>,
    workgroup: Option<String>,
    db_user: Option<String>,
    secret: Option<String>,
) -> Result<RedshiftTarget, ConfigError> {
    if let Some(s) = &secret {
        if !s.starts_with("arn:") || !s.contains(":secretsmanager:") {
            return Err(invalid(
                "warehouse.redshift.secret_arn",
                format!("`{s}` is not a Secrets Manager ARN"),
            ));
        }
    }
    Ok(match (cluster, workgroup) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "warehouse.redshift.workgroup_name",
                "set either cluster_identifier (provisioned) or workgroup_name (Serverless), not both",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "warehouse.redshift.cluster_identifier",
                "set cluster_identifier (provisioned) or workgroup_name (Serverless)",
            ))
        }
        (Some(cluster_identifier), None) => match (db_user, secret) {
            (Some(db_user), None) => RedshiftTarget::ClusterDbUser {
                cluster_identifier,
                db_user,
            },
            (None, Some(secret_arn)) => RedshiftTarget::ClusterSecret {
                cluster_identifier,
                secret_arn,
            },
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "warehouse.redshift.secret_arn",
                    "set db_user or secret_arn, not both",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "warehouse.redshift.db_user",
                    "a provisioned cluster needs db_user (temporary credentials) or secret_arn",
                ))
            }
        },
        (None, Some(workgroup_name)) => {
            if db_user.is_some() {
                return Err(invalid(
                    "warehouse.redshift.db_user",
                    "is not used with workgroup_name (Serverless uses your IAM identity or secret_arn)",
                ));
            }
            RedshiftTarget::Workgroup {
                workgroup_name,
                secret_arn: secret,
            }
        }
    })
}

fn nonempty(key: &'static str, v: Option<String>) -> Result<Option<String>, ConfigError> {
    match v {
        Some(s) if s.trim().is_empty() => Err(invalid(key, "is empty")),
        other => Ok(other),
    }
}

/// Characters that cannot appear in values spliced into Redshift SQL as literals.
fn literal_safe(key: &'static str, v: &str) -> Result<(), ConfigError> {
    if v.contains('\'') || v.contains('\\') || v.chars().any(char::is_control) {
        return Err(invalid(
            key,
            format!("`{v}` contains a quote, backslash or control character"),
        ));
    }
    Ok(())
}

impl RedshiftConfig {
    fn validate(raw: RawRedshift, staging: &Location) -> Result<RedshiftConfig, ConfigError> {
        let target = redshift_target(
            nonempty("warehouse.redshift.cluster_identifier", raw.cluster_identifier)?,
            nonempty("warehouse.redshift.workgroup_name", raw.workgroup_name)?,
            nonempty("warehouse.redshift.db_user", raw.db_user)?,
            nonempty("warehouse.redshift.secret_arn", raw.secret_arn)?,
        )?;
        let database = nonempty("warehouse.redshift.database", raw.database)?.ok_or_else(|| {
            invalid(
                "warehouse.redshift.database",
                "is required when warehouse.kind = \"redshift\"",
            )
        })?;
        let iam_role = nonempty("warehouse.redshift.iam_role", raw.iam_role)?.ok_or_else(|| {
            invalid(
                "warehouse.redshift.iam_role",
                "is required: the role COPY assumes to read staging (ARN or \"default\")",
            )
        })?;
        let role_ok = iam_role == "default"
            || (iam_role.starts_with("arn:aws")
                && iam_role.contains(":iam::")
                && iam_role.contains(":role/"));
        if !role_ok {
            return Err(invalid(
                "warehouse.redshift.iam_role",
                format!("`{iam_role}` is neither an IAM role ARN (arn:aws:iam::<account>:role/<name>) nor \"default\""),
            ));
        }
        literal_safe("warehouse.redshift.iam_role", &iam_role)?;
        let copy_region = nonempty("warehouse.redshift.copy_region", raw.copy_region)?;
        if let Some(r) = &copy_region {
            if !r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(invalid(
                    "warehouse.redshift.copy_region",
                    format!("`{r}` is not a region name"),
                ));
            }
        }
        let secs = at_least_one(
            "warehouse.redshift.statement_timeout_secs",
            raw.statement_timeout_secs,
            DEFAULT_STATEMENT_TIMEOUT_SECS,
        )?;
        let poll_ms = whole(
            "warehouse.redshift.max_poll_interval_ms",
            raw.max_poll_interval_ms,
            DEFAULT_MAX_POLL_INTERVAL_MS,
        )?;
        if !(10..=60_000).contains(&poll_ms) {
            return Err(invalid(
                "warehouse.redshift.max_poll_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        match staging {
            Location::S3 { bucket, prefix } => {
                literal_safe("staging.url", &format!("{bucket}/{prefix}"))?;
            }
            Location::Local { .. } => return Err(invalid(
                "staging.url",
                "must be an s3:// URL when warehouse.kind = \"redshift\": COPY reads staged parts from S3",
            )),
        }
        Ok(RedshiftConfig {
            target,
            database,
            iam_role,
            copy_region,
            statement_timeout: std::time::Duration::from_secs(secs),
            max_poll_interval: std::time::Duration::from_millis(poll_ms),
        })
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Location,
    pub staging: Location,
    /// Uncompressed bytes per staged part before it is closed and uploaded.
    pub part_size_bytes: u64,
    /// Keep every load's staged objects (otherwise deleted once its COPYs have read them).
    pub keep_staging: bool,
    pub warehouse: WarehouseTarget,
    /// Validated SQL identifier.
    pub schema: String,
    pub s3_force_path_style: bool,
    /// At most this many files go into one load (one transaction); a run makes as many
    /// loads as it needs.
    pub max_files_per_load: usize,
    /// A load also ends before its files' source bytes pass this (a file larger than it
    /// is a load of its own): a load's COPY and merge time stay bounded.
    pub max_bytes_per_load: u64,
    /// A staged event is a duplicate of a row already in `events` with the same id whose
    /// `created_at` is at most this many days from its own; the dedupe reads only that
    /// `created_at` range of `events` (see [`DEFAULT_DEDUPE_WINDOW_DAYS`]).
    pub dedupe_window_days: u32,
    /// Files read and cleaned at once, each by a worker with its own staged parts; up
    /// to [`crate::stage::pool::READ_AHEAD_FILES`] small objects are fetched ahead.
    pub concurrency: usize,
    /// Days after which the source deletes a file (S3 lifecycle): `status` says how many
    /// are left for each pending file.
    pub retention_days: u64,
    /// `status --check` fails when a pending file is older than this.
    pub max_pending_age_hours: u64,
    /// `status --check` fails when the newest source object is older than this many
    /// hours: the producer stopped writing (off when `None`).
    pub max_source_silence_hours: Option<u64>,
    /// When more than this many of a run's source objects fail to be read the same way
    /// (and more than [`Config::systemic`]'s share), the failure is systemic.
    pub systemic: Systemic,
    /// `cleaning.naive_timezone`: what a `created_at` without an offset means.
    pub naive_timezone: chrono_tz::Tz,
    /// Source listings in flight at once: the day partitions are listed this many at a
    /// time.
    pub list_concurrency: usize,
    /// `[event_types]` and `cleaning.unknown_event_types`: per-type contracts.
    pub event_types: EventTypes,
}

pub use crate::failure::Systemic;

/// Default uncompressed part size. Each worker holds about two parts in memory (the
/// one being filled and one uploading), compressed; on input gzip cannot shrink that is
/// twice the part size per worker, so 8 MiB keeps a run on two cores well under 64 MiB
/// whatever the data (docs/architecture.md, "Concurrency and memory"). Redshift suggests 1 MB-1 GB per file after
/// compression: 8 MiB of typical event JSON is about 1-2 MiB gzipped, and more parts
/// let COPY spread them over more slices.
pub const DEFAULT_PART_SIZE_MB: u64 = 8;
/// The default `load.concurrency` is the core count, at most this.
pub const MAX_DEFAULT_CONCURRENCY: usize = 8;

/// The default `load.concurrency` (and `clean --concurrency`): one worker per core, so
/// cleaning uses every core, up to [`MAX_DEFAULT_CONCURRENCY`].
pub fn default_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.clamp(1, MAX_DEFAULT_CONCURRENCY)
}
/// Default `warehouse.schema`.
pub const DEFAULT_SCHEMA: &str = "analytics";
/// Default `load.max_files`.
pub const DEFAULT_MAX_FILES: u64 = 5000;
/// Default `load.max_bytes`: 1 GiB of source objects per load.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
pub use crate::warehouse::DEFAULT_DEDUPE_WINDOW_DAYS;
/// The widest window accepted: ten years is all of history for any real table.
pub const MAX_DEDUPE_WINDOW_DAYS: u64 = 3650;
/// Default `source.list_concurrency`: day partitions listed at once.
pub const DEFAULT_LIST_CONCURRENCY: u64 = 8;

/// Default `source.retention_days`: S3 deletes source files after 28 days.
pub const DEFAULT_RETENTION_DAYS: u64 = 28;
/// Default `monitor.max_pending_age_hours`.
pub const DEFAULT_MAX_PENDING_AGE_HOURS: u64 = 24;

impl Config {
    /// Phase 2: defaults, value checks and cross-field rules. No IO.
    pub fn validate(raw: RawConfig, cwd: &Path) -> Result<Config, ConfigError> {
        let (source, staging) = locations(raw.source.url, raw.staging.url, cwd)?;
        let part_mb = ranged(
            "staging.part_size_mb",
            raw.staging.part_size_mb,
            DEFAULT_PART_SIZE_MB,
            1..=4096,
        )?;
        let warehouse = warehouse_target(
            raw.warehouse.kind,
            raw.warehouse.postgres,
            raw.warehouse.redshift,
            &staging,
        )?;
        let schema = raw.warehouse.schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        if !valid_identifier(&schema) {
            return Err(invalid(
                "warehouse.schema",
                format!("`{schema}` is not a plain identifier: [a-z_][a-z0-9_]*, at most 63 bytes"),
            ));
        }
        let load = raw.load;
        let max_files = at_least_one("load.max_files", load.max_files, DEFAULT_MAX_FILES)?;
        let max_bytes = at_least_one("load.max_bytes", load.max_bytes, DEFAULT_MAX_BYTES)?;
        let dedupe_window_days = ranged(
            "load.dedupe_window_days",
            load.dedupe_window_days,
            DEFAULT_DEDUPE_WINDOW_DAYS,
            0..=MAX_DEDUPE_WINDOW_DAYS,
        )?;
        let concurrency = ranged(
            "load.concurrency",
            load.concurrency,
            default_concurrency() as u64,
            1..=256,
        )?;
        let retention_days = ranged(
            "source.retention_days",
            raw.source.retention_days,
            DEFAULT_RETENTION_DAYS,
            1..=3650,
        )?;
        let max_pending_age_hours = at_least_one(
            "monitor.max_pending_age_hours",
            raw.monitor.max_pending_age_hours,
            DEFAULT_MAX_PENDING_AGE_HOURS,
        )?;
        let max_source_silence_hours = match raw.monitor.max_source_silence_hours {
            None => None,
            v => Some(at_least_one("monitor.max_source_silence_hours", v, 1)?),
        };
        let systemic = Systemic {
            min_files: whole(
                "source.systemic_min_files",
                raw.source.systemic_min_files,
                Systemic::DEFAULT.min_files,
            )?,
            min_percent: ranged(
                "source.systemic_min_percent",
                raw.source.systemic_min_percent,
                Systemic::DEFAULT.min_percent,
                0..=100,
            )?,
        };
        let naive_timezone = naive_timezone(raw.cleaning.naive_timezone.as_deref())?;
        let list_concurrency = ranged(
            "source.list_concurrency",
            raw.source.list_concurrency,
            DEFAULT_LIST_CONCURRENCY,
            1..=64,
        )?;
        let event_types = validate_event_types(raw.event_types, raw.cleaning)?;
        Ok(Config {
            source,
            staging,
            part_size_bytes: part_mb * 1024 * 1024,
            keep_staging: boolean("staging.keep", raw.staging.keep, false)?,
            warehouse,
            schema,
            s3_force_path_style: boolean("s3.force_path_style", raw.s3.force_path_style, false)?,
            max_files_per_load: usize::try_from(max_files).unwrap_or(usize::MAX),
            max_bytes_per_load: max_bytes,
            dedupe_window_days: u32::try_from(dedupe_window_days).unwrap_or(u32::MAX),
            concurrency: usize::try_from(concurrency).unwrap_or(1),
            retention_days,
            max_pending_age_hours,
            max_source_silence_hours,
            systemic,
            list_concurrency: usize::try_from(list_concurrency).unwrap_or(1),
            naive_timezone,
            event_types,
        })
    }

    /// Both phases, from a file and the process environment.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let raw = RawConfig::load(path, std::env::vars())?;
        let cwd = std::env::current_dir()
            .map_err(|e| invalid("source.url", format!("cannot resolve relative paths: {e}")))?;
        Config::validate(raw, &cwd)
    }
}

/// `[event_types.<name>]` and `cleaning.unknown_event_types`: names follow the event name
/// rule (and fit in a view name), column types are known, each problem names its key.
/// `cleaning.naive_timezone`: an IANA time zone name (`UTC` by default).
fn naive_timezone(name: Option<&str>) -> Result<chrono_tz::Tz, ConfigError> {
    match name {
        None => Ok(chrono_tz::Tz::UTC),
        Some(n) => n.parse::<chrono_tz::Tz>().map_err(|_| {
            invalid(
                "cleaning.naive_timezone",
                format!("`{n}` is not an IANA time zone name (such as `UTC` or `Europe/Paris`)"),
            )
        }),
    }
}

fn validate_event_types(
    raw: BTreeMap<String, RawEventType>,
    cleaning: RawCleaning,
) -> Result<EventTypes, ConfigError> {
    let unknown = match cleaning.unknown_event_types.as_deref() {
        None | Some("load") => UnknownEventTypes::Load,
        Some("reject") => UnknownEventTypes::Reject,
        Some(other) => {
            return Err(invalid(
                "cleaning.unknown_event_types",
                format!("`{other}`: expected \"load\" or \"reject\""),
            ))
        }
    };
    let mut types = BTreeMap::new();
    for (name, t) in raw {
        let key = format!("event_types.{name}");
        if let Some(p) = event_types::name_problem(&name, event_types::MAX_TYPE_NAME_BYTES) {
            return Err(invalid_at(
                key,
                format!(
                    "{p} (its view is {}<type>, at most {} bytes)",
                    event_types::VIEW_PREFIX,
                    event_types::MAX_IDENTIFIER_BYTES
                ),
            ));
        }
        let mut required = Vec::new();
        for k in t.required_metadata.unwrap_or_default() {
            if let Some(p) = event_types::name_problem(&k, crate::clean::fields::MAX_EVENT_NAME_BYTES) {
                return Err(invalid_at(format!("{key}.required_metadata"), p));
            }
            if required.contains(&k) {
                return Err(invalid_at(
                    format!("{key}.required_metadata"),
                    format!("`{k}` is listed twice"),
                ));
            }
            required.push(k);
        }
        let mut columns = BTreeMap::new();
        for (column, ty) in t.columns.unwrap_or_default() {
            let column_key = format!("{key}.columns.{column}");
            if let Some(p) = event_types::column_problem(&column) {
                return Err(invalid_at(column_key, p));
            }
            let Some(ty) = ColumnType::parse(&ty) else {
                let known: Vec<&str> = ColumnType::ALL.iter().map(|t| t.as_str()).collect();
                return Err(invalid_at(
                    column_key,
                    format!(
                        "`{ty}` is not a column type: expected one of {}",
                        known.join(", ")
                    ),
                ));
            };
            columns.insert(column, ty);
        }
        types.insert(
            name,
            EventType {
                required_metadata: required,
                columns,
            },
        );
    }
    Ok(EventTypes { types, unknown })
}

/// Lowercase SQL identifier safe to splice into statements unquoted.
pub fn valid_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn overlaps(a: &Location, b: &Location) -> bool {
    match (a, b) {
        (
            Location::S3 {
                bucket: ba,
                prefix: pa,
            },
            Location::S3 {
                bucket: bb,
                prefix: pb,
            },
        ) => ba == bb && (pa.starts_with(pb.as_str()) || pb.starts_with(pa.as_str())),
        (Location::Local { root: ra }, Location::Local { root: rb }) => {
            ra.starts_with(rb) || rb.starts_with(ra)
        }
        _ => false,
    }
}

//! The two-phase configuration (`src/config.rs`): the shipped configs parse, unknown keys
//! are refused by name (file and environment), overrides apply, every validation rule
//! names its key; and the real binary maps config failures to exit code 2 before any IO.

// The helpers pass the library's `ConfigError` through unchanged; its size is the library's.
#![allow(clippy::result_large_err)]

use crate::support;

use std::path::{Path, PathBuf};

use events_etl::config::{Config, ConfigError, Location, RawConfig, WarehouseTarget};

/// A valid configuration touching every key; tests change one line at a time.
const BASE: &str = r#"
[source]
url = "s3://events-bucket/app/events/"

[staging]
url = "s3://events-bucket/app/staging/"
part_size_mb = 64
keep = false

[warehouse]
kind = "postgres"
schema = "analytics"

[warehouse.postgres]
url = "postgresql://etl@db.internal:5432/warehouse"

[s3]
force_path_style = true

[load]
max_files = 100
"#;

/// The working directory validation resolves relative paths against. Nothing is read
/// from it: phase 2 does no IO.
const CWD: &str = "/srv/etl";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `BASE` with the line `from` replaced by `to` (which may be empty, or several lines).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no line {from:?}");
    BASE.replacen(from, to, 1)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Phase 1 over `toml` written to a temporary file, with exactly `env`.
fn raw(toml: &str, env: Vec<(String, String)>) -> Result<RawConfig, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("etl.toml");
    std::fs::write(&path, toml).expect("write config");
    RawConfig::load(&path, env)
}

/// Both phases, no environment.
fn load(toml: &str) -> Result<Config, ConfigError> {
    load_env(toml, &[])
}

fn load_env(toml: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::validate(raw(toml, env(pairs))?, Path::new(CWD))
}

#[track_caller]
fn ok(toml: &str) -> Config {
    load(toml).unwrap_or_else(|e| panic!("expected a valid config, got: {e}\n{toml}"))
}

/// Asserts phase 2 refused the config naming `key`, with every one of `needles` in the
/// message.
#[track_caller]
fn invalid(toml: &str, key: &str, needles: &[&str]) {
    let e = match load(toml) {
        Ok(c) => panic!("expected an error naming {key}, got {c:#?}\n{toml}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    match &e {
        ConfigError::Invalid { key: k, .. } => assert_eq!(*k, key, "{msg}"),
        other => panic!("expected Invalid {{ key: {key} }}, got {other:?}"),
    }
    assert!(
        msg.starts_with(&format!("invalid configuration key `{key}`: ")),
        "{msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
}

/// Asserts phase 1 refused the config, naming `field` as an unknown field.
#[track_caller]
fn unknown(result: Result<RawConfig, ConfigError>, field: &str) {
    let e = match result {
        Ok(c) => panic!("expected unknown field {field}, got {c:#?}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Parse(_)), "{e:?}");
    assert!(msg.contains(&format!("unknown field `{field}`")), "{msg}");
    assert!(msg.contains("EVENTS_ETL__<SECTION>__<KEY>"), "{msg}");
}

/// Like [`unknown`], and the message names the section holding the field.
#[track_caller]
fn unknown_in(result: Result<RawConfig, ConfigError>, field: &str, section: &str) {
    let msg = result
        .as_ref()
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    unknown(result, field);
    assert!(msg.contains(&format!("for key `{section}`")), "{msg}");
}

// ---- shipped configs ----

#[test]
fn example_config_parses_and_validates() {
    let path = manifest_dir().join("config/example.toml");
    let c = Config::validate(RawConfig::load(&path, []).unwrap(), Path::new(CWD)).unwrap();
    assert_eq!(
        c.source,
        Location::S3 {
            bucket: "dataeng-challenge".into(),
            prefix: "8uht6u8bh/events/".into()
        }
    );
    assert_eq!(
        c.staging,
        Location::S3 {
            bucket: "dataeng-challenge".into(),
            prefix: "8uht6u8bh/staging/".into()
        }
    );
    assert_eq!(c.part_size_bytes, 8 * 1024 * 1024);
    assert_eq!(c.concurrency, events_etl::config::default_concurrency());
    assert!(!c.keep_staging);
    assert_eq!(
        c.warehouse,
        WarehouseTarget::Postgres {
            url: "postgresql://postgres@127.0.0.1:5432/postgres".into()
        }
    );
    assert_eq!(c.schema, "analytics");
    assert!(!c.s3_force_path_style);
    assert_eq!(c.max_files_per_load, 5000);
    // The seed's event types, with the keys the problem statement names.
    use events_etl::event_types::{ColumnType, UnknownEventTypes};
    let types = &c.event_types;
    assert_eq!(types.unknown, UnknownEventTypes::Load);
    let names: Vec<&str> = types.types.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "change_operator_identity",
            "meeting_scheduled",
            "message_saved",
            "page_visit"
        ]
    );
    let page = types.get("page_visit").unwrap();
    assert_eq!(page.required_metadata, ["path"]);
    assert_eq!(page.columns.get("path"), Some(&ColumnType::Text));
    assert_eq!(
        types.get("message_saved").unwrap().columns.get("message_id"),
        Some(&ColumnType::Bigint)
    );
    let meeting = &types.get("meeting_scheduled").unwrap().columns;
    assert_eq!(meeting.get("meeting_id"), Some(&ColumnType::Text));
    assert_eq!(meeting.get("meeting_time"), Some(&ColumnType::Timestamp));
    assert_eq!(
        types
            .get("change_operator_identity")
            .unwrap()
            .columns
            .get("action"),
        Some(&ColumnType::Text)
    );
}

#[test]
fn local_config_parses_and_resolves_paths_against_cwd() {
    let path = manifest_dir().join("config/local.toml");
    let c = Config::validate(RawConfig::load(&path, []).unwrap(), Path::new(CWD)).unwrap();
    assert_eq!(
        c.source,
        Location::Local {
            root: "/srv/etl/tests/data/sample".into()
        }
    );
    assert_eq!(
        c.staging,
        Location::Local {
            root: "/srv/etl/target/staging".into()
        }
    );
    assert_eq!(c.schema, "analytics");
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let c = ok(r#"
[source]
url = "s3://in-bucket/events/"
[staging]
url = "s3://in-bucket/staging/"
[warehouse.postgres]
url = "host=db user=etl"
"#);
    assert_eq!(c.part_size_bytes, 8 * 1024 * 1024);
    assert!(!c.keep_staging);
    assert_eq!(
        c.warehouse,
        WarehouseTarget::Postgres {
            url: "host=db user=etl".into()
        }
    );
    assert_eq!(c.schema, "analytics");
    assert!(!c.s3_force_path_style);
    assert_eq!(c.max_files_per_load, 5000);
}

// ---- phase 1: unknown keys ----

#[test]
fn unknown_top_level_key_is_named() {
    unknown(raw(&format!("sorce_url = \"x\"\n{BASE}"), vec![]), "sorce_url");
}

#[test]
fn unknown_top_level_section_is_named() {
    unknown(raw(&format!("{BASE}\n[extras]\nx = 1\n"), vec![]), "extras");
}

#[test]
fn unknown_key_in_a_section_is_named() {
    let toml = edit("keep = false", "keep = false\nkeep_days = 3");
    unknown_in(raw(&toml, vec![]), "keep_days", "staging");
    unknown_in(
        raw(&edit("max_files = 100", "max_file = 100"), vec![]),
        "max_file",
        "load",
    );
}

#[test]
fn unknown_key_in_warehouse_postgres_is_named() {
    let toml = edit(
        "url = \"postgresql://etl@db.internal:5432/warehouse\"",
        "url = \"postgresql://etl@db.internal:5432/warehouse\"\npassword = \"hunter2\"",
    );
    unknown_in(raw(&toml, vec![]), "password", "warehouse.postgres");
}

#[test]
fn unknown_env_override_is_named() {
    // Named lowercased, with its section; the message does not repeat the variable's name.
    unknown_in(
        raw(BASE, env(&[("EVENTS_ETL__STAGING__KEPP", "true")])),
        "kepp",
        "staging",
    );
    unknown_in(
        raw(BASE, env(&[("EVENTS_ETL__WAREHOUSE__POSTGRES__HOST", "db")])),
        "host",
        "warehouse.postgres",
    );
    unknown(raw(BASE, env(&[("EVENTS_ETL__BOGUS", "1")])), "bogus");
}

#[test]
fn env_without_the_double_underscore_prefix_is_ignored() {
    // EVENTS_ETL_CONFIG is the binary's own flag; other variables are not ours at all.
    let c = Config::validate(
        raw(
            BASE,
            env(&[
                ("EVENTS_ETL_CONFIG", "/etc/etl.toml"),
                ("EVENTS_ETLX__SOURCE__URL", "s3://other-bucket/"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap(),
        Path::new(CWD),
    )
    .unwrap();
    assert_eq!(c.source.to_string(), "s3://events-bucket/app/events/");
}

// ---- phase 1: environment overrides ----

#[test]
fn env_overrides_apply() {
    let c = load_env(
        BASE,
        &[
            (
                "EVENTS_ETL__WAREHOUSE__POSTGRES__URL",
                "postgresql://other@10.0.0.9:6543/wh",
            ),
            ("EVENTS_ETL__STAGING__KEEP", "true"),
            ("EVENTS_ETL__STAGING__PART_SIZE_MB", "5"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.warehouse,
        WarehouseTarget::Postgres {
            url: "postgresql://other@10.0.0.9:6543/wh".into()
        }
    );
    assert!(c.keep_staging);
    assert_eq!(c.part_size_bytes, 5 * 1024 * 1024);
    // Untouched keys keep the file's values.
    assert_eq!(c.schema, "analytics");
    assert_eq!(c.max_files_per_load, 100);
}

#[test]
fn env_override_can_supply_a_key_the_file_lacks() {
    let c = load_env(
        &edit("url = \"s3://events-bucket/app/events/\"", ""),
        &[("EVENTS_ETL__SOURCE__URL", "s3://env-bucket/from-env")],
    )
    .unwrap();
    assert_eq!(
        c.source,
        Location::S3 {
            bucket: "env-bucket".into(),
            prefix: "from-env/".into()
        }
    );
}

/// Environment values are text; numbers and booleans are read from it in phase 2,
/// strictly, and a bad one is named by its key.
#[test]
fn env_override_of_the_wrong_type_is_named() {
    let cases = [
        (
            "EVENTS_ETL__STAGING__PART_SIZE_MB",
            "lots",
            "staging.part_size_mb",
            "`lots` is not a whole number",
        ),
        (
            "EVENTS_ETL__STAGING__PART_SIZE_MB",
            "1e3",
            "staging.part_size_mb",
            "`1e3` is not a whole number",
        ),
        (
            "EVENTS_ETL__STAGING__PART_SIZE_MB",
            "-5",
            "staging.part_size_mb",
            "`-5` is not a whole number",
        ),
        (
            "EVENTS_ETL__STAGING__PART_SIZE_MB",
            "",
            "staging.part_size_mb",
            "`` is not a whole number",
        ),
        (
            "EVENTS_ETL__LOAD__MAX_FILES",
            "10.0",
            "load.max_files",
            "`10.0` is not a whole number",
        ),
        (
            "EVENTS_ETL__STAGING__KEEP",
            "True",
            "staging.keep",
            "`True` is not true or false",
        ),
        (
            "EVENTS_ETL__S3__FORCE_PATH_STYLE",
            "1",
            "s3.force_path_style",
            "`1` is not true or false",
        ),
    ];
    for (var, value, key, needle) in cases {
        let e = load_env(BASE, &[(var, value)]).unwrap_err();
        match &e {
            ConfigError::Invalid { key: k, .. } => assert_eq!(*k, key, "{e}"),
            other => panic!("{var}={value}: expected Invalid naming {key}, got {other:?}"),
        }
        assert!(e.to_string().contains(needle), "{var}={value}: {e}");
    }
}

/// Numbers and booleans still come from the environment, for every such key.
#[test]
fn env_numbers_and_booleans_are_read_from_text() {
    let c = load_env(
        &redshift(&format!("workgroup_name = \"wg\"\ndatabase = \"dev\"\n{ROLE}")),
        &[
            ("EVENTS_ETL__STAGING__PART_SIZE_MB", "007"),
            ("EVENTS_ETL__STAGING__KEEP", "true"),
            ("EVENTS_ETL__S3__FORCE_PATH_STYLE", "false"),
            ("EVENTS_ETL__LOAD__MAX_FILES", "12"),
            ("EVENTS_ETL__LOAD__CONCURRENCY", "3"),
            ("EVENTS_ETL__WAREHOUSE__REDSHIFT__STATEMENT_TIMEOUT_SECS", "90"),
        ],
    )
    .unwrap();
    assert_eq!(c.concurrency, 3);
    assert_eq!(c.part_size_bytes, 7 * 1024 * 1024);
    assert!(c.keep_staging);
    assert!(!c.s3_force_path_style);
    assert_eq!(c.max_files_per_load, 12);
    let WarehouseTarget::Redshift(r) = &c.warehouse else {
        panic!("{c:?}")
    };
    assert_eq!(r.statement_timeout.as_secs(), 90);
}

/// A string key set from the environment is the string as written: no number or
/// boolean is read into it (`1e3` once became `1000`, `True` became `true`, `007`
/// became `7`).
#[test]
fn env_string_values_are_taken_as_written() {
    let c = load_env(
        &redshift(&format!("workgroup_name = \"wg\"\ndatabase = \"dev\"\n{ROLE}")),
        &[
            ("EVENTS_ETL__WAREHOUSE__REDSHIFT__DATABASE", "007"),
            ("EVENTS_ETL__WAREHOUSE__REDSHIFT__WORKGROUP_NAME", "True"),
            ("EVENTS_ETL__WAREHOUSE__REDSHIFT__COPY_REGION", "1e3"),
        ],
    )
    .unwrap();
    let WarehouseTarget::Redshift(r) = &c.warehouse else {
        panic!("{c:?}")
    };
    assert_eq!(r.database, "007");
    assert_eq!(
        r.target,
        events_etl::config::RedshiftTarget::Workgroup {
            workgroup_name: "True".into(),
            secret_arn: None
        }
    );
    assert_eq!(r.copy_region.as_deref(), Some("1e3"));
    for (value, shown) in [("1e3", "`1e3`"), ("True", "`True`"), ("007", "`007`")] {
        let e = load_env(BASE, &[("EVENTS_ETL__WAREHOUSE__SCHEMA", value)]).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "invalid configuration key `warehouse.schema`: {shown} is not a plain identifier"
            )),
            "{value}: {e}"
        );
    }
}

#[test]
fn toml_numbers_and_booleans_of_the_wrong_type_are_named() {
    invalid(
        &edit("part_size_mb = 64", "part_size_mb = 6.4"),
        "staging.part_size_mb",
        &["the number 6.4 is not a whole number"],
    );
    invalid(
        &edit("part_size_mb = 64", "part_size_mb = true"),
        "staging.part_size_mb",
        &["true is not a whole number"],
    );
    invalid(
        &edit("keep = false", "keep = 0"),
        "staging.keep",
        &["0 is not true or false"],
    );
    invalid(
        &edit("keep = false", "keep = \"yes\""),
        "staging.keep",
        &["`yes` is not true or false"],
    );
    invalid(
        &edit("max_files = 100", "max_files = [1]"),
        "load.max_files",
        &["an array is not a whole number"],
    );
    invalid(
        &edit("max_files = 100", "max_files = 100\nconcurrency = 0"),
        "load.concurrency",
        &["0 is outside 1..=256"],
    );
    invalid(
        &edit("max_files = 100", "max_files = 100\nconcurrency = 257"),
        "load.concurrency",
        &["257 is outside 1..=256"],
    );
}

#[test]
fn missing_file_names_the_path() {
    let e = RawConfig::load(Path::new("/nonexistent/etl.toml"), []).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("cannot read configuration /nonexistent/etl.toml"),
        "{e}"
    );
}

// ---- phase 2: locations ----

#[test]
fn missing_source_url_is_named() {
    invalid(
        &edit("url = \"s3://events-bucket/app/events/\"", ""),
        "source.url",
        &["is required"],
    );
}

#[test]
fn missing_staging_url_is_named() {
    invalid(
        &edit("url = \"s3://events-bucket/app/staging/\"", ""),
        "staging.url",
        &["is required"],
    );
}

#[test]
fn empty_source_url_is_named() {
    invalid(
        &edit("url = \"s3://events-bucket/app/events/\"", "url = \"\""),
        "source.url",
        &["is empty"],
    );
}

#[test]
fn bad_bucket_names_are_named() {
    let b64 = "b".repeat(64);
    for bucket in [
        "Events-Bucket",
        "ab",
        "events_bucket",
        "-events",
        "events-",
        "events.",
        "",
        &b64,
    ] {
        let toml = edit(
            "url = \"s3://events-bucket/app/events/\"",
            &format!("url = \"s3://{bucket}/app/events/\""),
        );
        invalid(
            &toml,
            "source.url",
            &[&format!("`{bucket}` is not a valid S3 bucket name")],
        );
    }
    // Also on the staging side.
    let toml = edit(
        "url = \"s3://events-bucket/app/staging/\"",
        "url = \"s3://Staging/x/\"",
    );
    invalid(&toml, "staging.url", &["`Staging` is not a valid S3 bucket name"]);
    // 63 characters is the limit, not past it.
    let b63 = "b".repeat(63);
    let c = ok(&edit(
        "url = \"s3://events-bucket/app/events/\"",
        &format!("url = \"s3://{b63}/events/\""),
    ));
    assert_eq!(c.source.to_string(), format!("s3://{b63}/events/"));
}

#[test]
fn relative_file_url_is_named() {
    invalid(
        &edit(
            "url = \"s3://events-bucket/app/events/\"",
            "url = \"file://data/events/\"",
        ),
        "source.url",
        &["`file://data/events/`", "needs an absolute path"],
    );
}

#[test]
fn unsupported_scheme_is_named() {
    for url in [
        "gs://events-bucket/x/",
        "https://events-bucket.s3.amazonaws.com/x/",
    ] {
        invalid(
            &edit(
                "url = \"s3://events-bucket/app/staging/\"",
                &format!("url = \"{url}\""),
            ),
            "staging.url",
            &[&format!("`{url}`"), "only s3:// and file://"],
        );
    }
}

#[test]
fn s3_prefixes_are_normalised() {
    let with = |url: &str| {
        ok(&edit(
            "url = \"s3://events-bucket/app/events/\"",
            &format!("url = \"{url}\""),
        ))
        .source
    };
    let s3 = |bucket: &str, prefix: &str| Location::S3 {
        bucket: bucket.into(),
        prefix: prefix.into(),
    };
    assert_eq!(with("s3://in-bucket"), s3("in-bucket", ""));
    assert_eq!(with("s3://in-bucket/"), s3("in-bucket", ""));
    assert_eq!(with("s3://in-bucket/events"), s3("in-bucket", "events/"));
    assert_eq!(with("s3://in-bucket/a/b/"), s3("in-bucket", "a/b/"));
    assert_eq!(
        with("s3://in-bucket/events").to_string(),
        "s3://in-bucket/events/"
    );
}

#[test]
fn local_paths_resolve_against_cwd() {
    let c = ok(&edit(
        "url = \"s3://events-bucket/app/events/\"",
        "url = \"data/./events/../in\"",
    ));
    assert_eq!(
        c.source,
        Location::Local {
            root: "/srv/etl/data/in".into()
        }
    );
    assert_eq!(c.source.to_string(), "file:///srv/etl/data/in/");
    let c = ok(&edit(
        "url = \"s3://events-bucket/app/events/\"",
        "url = \"file:///var/events/\"",
    ));
    assert_eq!(
        c.source,
        Location::Local {
            root: "/var/events".into()
        }
    );
    let c = ok(&edit(
        "url = \"s3://events-bucket/app/events/\"",
        "url = \"/abs/events\"",
    ));
    assert_eq!(
        c.source,
        Location::Local {
            root: "/abs/events".into()
        }
    );
}

#[test]
fn staging_overlapping_source_on_s3_is_named() {
    for (source, staging) in [
        ("s3://events-bucket/app/", "s3://events-bucket/app/staging/"),
        ("s3://events-bucket/app/events/", "s3://events-bucket/app/"),
        ("s3://events-bucket/app/events/", "s3://events-bucket/app/events"),
        ("s3://events-bucket", "s3://events-bucket/staging/"),
    ] {
        let toml = edit(
            "url = \"s3://events-bucket/app/events/\"",
            &format!("url = \"{source}\""),
        )
        .replace(
            "url = \"s3://events-bucket/app/staging/\"",
            &format!("url = \"{staging}\""),
        );
        invalid(
            &toml,
            "staging.url",
            &["overlaps source.url", "use a separate prefix"],
        );
    }
}

#[test]
fn staging_overlapping_source_locally_is_named() {
    for (source, staging) in [
        ("data/events", "data/events/staging"),
        ("data/events/", "data"),
        ("/srv/etl/data", "data/"),
    ] {
        let toml = edit(
            "url = \"s3://events-bucket/app/events/\"",
            &format!("url = \"{source}\""),
        )
        .replace(
            "url = \"s3://events-bucket/app/staging/\"",
            &format!("url = \"{staging}\""),
        );
        invalid(&toml, "staging.url", &["overlaps source.url"]);
    }
}

#[test]
fn neighbouring_prefixes_do_not_overlap() {
    for (source, staging) in [
        (
            "s3://events-bucket/app/events/",
            "s3://events-bucket/app/events-staging/",
        ),
        ("s3://events-bucket/app/", "s3://staging-bucket/app/"),
        ("data/events", "data/events2"),
        ("data/events", "s3://events-bucket/data/events/"),
    ] {
        let toml = edit(
            "url = \"s3://events-bucket/app/events/\"",
            &format!("url = \"{source}\""),
        )
        .replace(
            "url = \"s3://events-bucket/app/staging/\"",
            &format!("url = \"{staging}\""),
        );
        ok(&toml);
    }
}

// ---- phase 2: values ----

#[test]
fn part_size_out_of_range_is_named() {
    for mb in [0, 4097, 5000] {
        invalid(
            &edit("part_size_mb = 64", &format!("part_size_mb = {mb}")),
            "staging.part_size_mb",
            &[&format!("{mb} is outside 1..=4096")],
        );
    }
    for mb in [1, 4096] {
        let c = ok(&edit("part_size_mb = 64", &format!("part_size_mb = {mb}")));
        assert_eq!(c.part_size_bytes, mb * 1024 * 1024);
    }
}

#[test]
fn negative_part_size_is_refused() {
    let e = load(&edit("part_size_mb = 64", "part_size_mb = -1")).unwrap_err();
    assert!(e.to_string().contains("part_size_mb"), "{e}");
}

#[test]
fn unknown_warehouse_kind_is_named() {
    invalid(
        &edit("kind = \"postgres\"", "kind = \"snowflake\""),
        "warehouse.kind",
        &["`snowflake`", "expected \"postgres\" or \"redshift\""],
    );
}

/// `BASE` switched to Redshift with the given `[warehouse.redshift]` body.
fn redshift(section: &str) -> String {
    edit("kind = \"postgres\"", "kind = \"redshift\"") + "\n[warehouse.redshift]\n" + section
}

const ROLE: &str = "iam_role = \"arn:aws:iam::123456789012:role/events-etl-copy\"\n";

#[test]
fn redshift_modes_validate() {
    use events_etl::config::RedshiftTarget;
    let c = ok(&redshift(&format!(
        "cluster_identifier = \"c1\"\ndatabase = \"dev\"\ndb_user = \"etl\"\n{ROLE}"
    )));
    let WarehouseTarget::Redshift(r) = &c.warehouse else {
        panic!("{c:?}")
    };
    assert_eq!(
        r.target,
        RedshiftTarget::ClusterDbUser {
            cluster_identifier: "c1".into(),
            db_user: "etl".into()
        }
    );
    assert_eq!(r.database, "dev");
    assert_eq!(r.statement_timeout.as_secs(), 3600);
    assert_eq!(r.max_poll_interval.as_millis(), 5000);
    let c = ok(&redshift(&format!(
        "cluster_identifier = \"c1\"\ndatabase = \"dev\"\nsecret_arn = \"arn:aws:secretsmanager:us-east-1:123456789012:secret:x\"\n{ROLE}"
    )));
    let WarehouseTarget::Redshift(r) = &c.warehouse else {
        panic!("{c:?}")
    };
    assert!(matches!(r.target, RedshiftTarget::ClusterSecret { .. }), "{r:?}");
    let c = ok(&redshift(
        "workgroup_name = \"wg\"\ndatabase = \"dev\"\niam_role = \"default\"\ncopy_region = \"eu-west-1\"\nstatement_timeout_secs = 60\nmax_poll_interval_ms = 200\n",
    ));
    let WarehouseTarget::Redshift(r) = &c.warehouse else {
        panic!("{c:?}")
    };
    assert_eq!(
        r.target,
        RedshiftTarget::Workgroup {
            workgroup_name: "wg".into(),
            secret_arn: None
        }
    );
    assert_eq!(
        (r.iam_role.as_str(), r.copy_region.as_deref()),
        ("default", Some("eu-west-1"))
    );
    assert_eq!(r.statement_timeout.as_secs(), 60);
    assert_eq!(r.max_poll_interval.as_millis(), 200);
}

#[test]
fn redshift_rules_name_their_key() {
    let cases: [(String, &str, &str); 11] = [
        (redshift(&format!("database = \"dev\"\n{ROLE}")), "warehouse.redshift.cluster_identifier", "workgroup_name"),
        (
            redshift(&format!("cluster_identifier = \"c\"\nworkgroup_name = \"w\"\ndatabase = \"d\"\n{ROLE}")),
            "warehouse.redshift.workgroup_name",
            "not both",
        ),
        (redshift(&format!("cluster_identifier = \"c\"\ndatabase = \"d\"\n{ROLE}")), "warehouse.redshift.db_user", "secret_arn"),
        (
            redshift(&format!(
                "cluster_identifier = \"c\"\ndatabase = \"d\"\ndb_user = \"u\"\nsecret_arn = \"arn:aws:secretsmanager:x\"\n{ROLE}"
            )),
            "warehouse.redshift.secret_arn",
            "not both",
        ),
        (
            redshift(&format!("workgroup_name = \"w\"\ndatabase = \"d\"\ndb_user = \"u\"\n{ROLE}")),
            "warehouse.redshift.db_user",
            "Serverless",
        ),
        (redshift(&format!("workgroup_name = \"w\"\n{ROLE}")), "warehouse.redshift.database", "required"),
        (redshift("workgroup_name = \"w\"\ndatabase = \"d\"\n"), "warehouse.redshift.iam_role", "required"),
        (
            redshift("workgroup_name = \"w\"\ndatabase = \"d\"\niam_role = \"admin\"\n"),
            "warehouse.redshift.iam_role",
            "neither an IAM role ARN",
        ),
        (
            redshift(&format!("workgroup_name = \"w\"\ndatabase = \"d\"\n{ROLE}statement_timeout_secs = 0\n")),
            "warehouse.redshift.statement_timeout_secs",
            "at least 1",
        ),
        (
            redshift(&format!("workgroup_name = \"w\"\ndatabase = \"d\"\n{ROLE}max_poll_interval_ms = 5\n")),
            "warehouse.redshift.max_poll_interval_ms",
            "between 10 and 60000",
        ),
        (
            redshift(&format!("workgroup_name = \"w\"\ndatabase = \"d\"\n{ROLE}"))
                .replace("s3://events-bucket/app/staging/", "/tmp/staging/"),
            "staging.url",
            "must be an s3:// URL",
        ),
    ];
    for (toml, key, words) in cases {
        invalid(&toml, key, &[words]);
    }
}

#[test]
fn missing_postgres_url_is_named() {
    invalid(
        &edit("url = \"postgresql://etl@db.internal:5432/warehouse\"", ""),
        "warehouse.postgres.url",
        &["is required when warehouse.kind = \"postgres\""],
    );
}

#[test]
fn unparseable_postgres_url_is_named() {
    for url in [
        "postgresql://etl@db:notaport/wh",
        "host=db port=",
        "mysql://db/wh",
    ] {
        invalid(
            &edit(
                "url = \"postgresql://etl@db.internal:5432/warehouse\"",
                &format!("url = \"{url}\""),
            ),
            "warehouse.postgres.url",
            &["not a libpq URL or key=value string"],
        );
    }
}

#[test]
fn bad_schema_identifiers_are_named() {
    let long = "a".repeat(64);
    for schema in [
        "Analytics",
        "a-b",
        "1abc",
        long.as_str(),
        "",
        "a b",
        "analytics;drop",
    ] {
        invalid(
            &edit("schema = \"analytics\"", &format!("schema = \"{schema}\"")),
            "warehouse.schema",
            &[&format!("`{schema}` is not a plain identifier")],
        );
    }
    for schema in ["_x", "a1_b2", &"a".repeat(63)] {
        let c = ok(&edit("schema = \"analytics\"", &format!("schema = \"{schema}\"")));
        assert_eq!(c.schema, schema);
    }
}

#[test]
fn zero_max_files_is_named() {
    invalid(
        &edit("max_files = 100", "max_files = 0"),
        "load.max_files",
        &["must be at least 1"],
    );
    assert_eq!(
        ok(&edit("max_files = 100", "max_files = 1")).max_files_per_load,
        1
    );
}

/// `load.dedupe_window_days`: 1 by default, 0..=3650, from the file or the environment.
#[test]
fn dedupe_window_days_is_validated() {
    assert_eq!(ok(BASE).dedupe_window_days, 1);
    for days in [0, 7, 3650] {
        let c = ok(&edit(
            "max_files = 100",
            &format!("max_files = 100\ndedupe_window_days = {days}"),
        ));
        assert_eq!(c.dedupe_window_days, days);
    }
    invalid(
        &edit("max_files = 100", "max_files = 100\ndedupe_window_days = 3651"),
        "load.dedupe_window_days",
        &["3651 is outside 0..=3650"],
    );
    invalid(
        &edit("max_files = 100", "max_files = 100\ndedupe_window_days = -1"),
        "load.dedupe_window_days",
        &["not a whole number"],
    );
    let c = load_env(BASE, &[("EVENTS_ETL__LOAD__DEDUPE_WINDOW_DAYS", "30")]).unwrap();
    assert_eq!(c.dedupe_window_days, 30);
    let e = load_env(BASE, &[("EVENTS_ETL__LOAD__DEDUPE_WINDOW_DAYS", "1.5")]).unwrap_err();
    assert!(e.to_string().contains("load.dedupe_window_days"), "{e}");
}

// ---- the real binary ----

/// A directory holding `etl.toml` with `body`; the binary runs with it as cwd.
fn config_dir(body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("etl-config-")
        .tempdir_in(support::scratch_base())
        .expect("tempdir");
    let path = dir.path().join("etl.toml");
    std::fs::write(&path, body).expect("write config");
    let path = path.display().to_string();
    (dir, path)
}

/// A TCP port where no PostgreSQL answers: a listener, kept for the whole test process,
/// that closes every connection at once. (Binding a port and releasing it would be racy:
/// anything may take the port meanwhile.)
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    port
}

/// A local-only config (no S3, so no AWS lookups) in `dir`.
fn local_config(source: &str, schema: &str, pg_port: u16) -> String {
    format!(
        r#"
[source]
url = "{source}"
[staging]
url = "staging/"
[warehouse]
schema = "{schema}"
[warehouse.postgres]
url = "postgresql://postgres@127.0.0.1:{pg_port}/postgres?connect_timeout=5"
"#
    )
}

#[test]
fn binary_unknown_key_exits_2_naming_it() {
    let (dir, path) = config_dir(&format!(
        "{}\n[load]\nmax_filez = 3\n",
        local_config("in/", "analytics", 1)
    ));
    let out = support::run_bin(&["--config", &path, "run"], &[], dir.path());
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("unknown field `max_filez`"), "{out}");
    assert!(out.stderr.contains("error: invalid configuration"), "{out}");
}

#[test]
fn binary_unknown_env_override_exits_2_naming_it() {
    let (dir, path) = config_dir(&local_config("in/", "analytics", 1));
    let out = support::run_bin(
        &["--config", &path, "run"],
        &env(&[("EVENTS_ETL__LOAD__MAX_FILEZ", "3")]),
        dir.path(),
    );
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("unknown field `max_filez`"), "{out}");
}

#[test]
fn binary_env_values_are_shown_as_written() {
    let (dir, path) = config_dir(&local_config("in/", "analytics", 1));
    for (value, shown) in [("1e3", "`1e3`"), ("True", "`True`"), ("007", "`007`")] {
        let out = support::run_bin(
            &["--config", &path, "run"],
            &env(&[("EVENTS_ETL__WAREHOUSE__SCHEMA", value)]),
            dir.path(),
        );
        assert_eq!(out.code(), Some(2), "{out}");
        assert!(
            out.stderr.contains(&format!(
                "invalid configuration key `warehouse.schema`: {shown} is not a plain identifier"
            )),
            "{out}"
        );
    }
    let out = support::run_bin(
        &["--config", &path, "run"],
        &env(&[("EVENTS_ETL__LOAD__MAX_FILES", "many")]),
        dir.path(),
    );
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("invalid configuration key `load.max_files`: `many` is not a whole number"),
        "{out}"
    );
}

#[test]
fn binary_unreachable_postgres_exits_4_naming_the_target() {
    let port = closed_port();
    let (dir, path) = config_dir(&local_config("in/", "analytics", port));
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let out = support::run_bin(&["--config", &path, "migrate"], &[], dir.path());
    assert_eq!(out.code(), Some(4), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "cannot connect to the warehouse at 127.0.0.1:{port}/postgres"
        )),
        "{out}"
    );
    assert!(out.stderr.contains("check warehouse.postgres.url"), "{out}");
}

#[test]
fn binary_bad_value_exits_2_before_any_io() {
    // Every IO would fail differently: the warehouse port is closed (exit 4) and the source
    // directory does not exist. Only the config error may show, and nothing is created.
    let port = closed_port();
    let (dir, path) = config_dir(&local_config("no/such/dir/", "A-B", port));
    for cmd in ["run", "migrate", "status"] {
        let out = support::run_bin(&["--config", &path, cmd], &[], dir.path());
        assert_eq!(out.code(), Some(2), "{out}");
        assert!(
            out.stderr
                .contains("invalid configuration key `warehouse.schema`: `A-B` is not a plain identifier"),
            "{out}"
        );
        assert!(!out.stderr.contains("cannot connect"), "{out}");
        assert!(!out.stderr.contains(&port.to_string()), "{out}");
    }
    assert!(!dir.path().join("staging").exists(), "staging was created");
    assert!(!dir.path().join("no").exists(), "source was created");
}

#[test]
fn binary_missing_config_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_bin(&["--config", "nope.toml", "status"], &[], dir.path());
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("cannot read configuration nope.toml"),
        "{out}"
    );
}

#[test]
fn binary_help_lists_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_bin(&["--help"], &[], dir.path());
    out.assert_success();
    let commands: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for cmd in ["migrate", "run", "status", "clean"] {
        assert!(commands.contains(&cmd), "{cmd} not in {commands:?}\n{out}");
    }
    assert!(out.stdout.contains("--config"), "{out}");
}

// ---- event types ----

#[test]
fn event_types_are_optional_and_parse() {
    let c = ok(BASE);
    assert!(c.event_types.types.is_empty());
    assert_eq!(
        c.event_types.unknown,
        events_etl::event_types::UnknownEventTypes::Load
    );
    let c = ok(&format!(
        "{BASE}\n[cleaning]\nunknown_event_types = \"reject\"\n\
         [event_types.page_visit]\nrequired_metadata = [\"path\"]\ncolumns = {{ path = \"text\", n = \"bigint\", x = \"double\", b = \"boolean\", t = \"timestamp\" }}\n\
         [event_types.bare]\n"
    ));
    assert_eq!(
        c.event_types.unknown,
        events_etl::event_types::UnknownEventTypes::Reject
    );
    assert_eq!(c.event_types.get("page_visit").unwrap().columns.len(), 5);
    assert!(c.event_types.get("bare").unwrap().columns.is_empty());
}

#[test]
fn bad_event_types_name_their_key() {
    let with = |section: &str| format!("{BASE}\n{section}\n");
    invalid(
        &with("[event_types.page_visit]\ncolumns = { path = \"varchar\" }"),
        "event_types.page_visit.columns.path",
        &[
            "`varchar` is not a column type",
            "text, bigint, double, boolean, timestamp",
        ],
    );
    invalid(
        &with("[event_types.Page_Visit]\ncolumns = { path = \"text\" }"),
        "event_types.Page_Visit",
        &["[a-z][a-z0-9_]*", "invalid_event_name"],
    );
    invalid(
        &with("[event_types.page-visit]\n"),
        "event_types.page-visit",
        &["not a valid name"],
    );
    invalid(
        &with(&format!("[event_types.{}]\n", "a".repeat(57))),
        &format!("event_types.{}", "a".repeat(57)),
        &["longer than 56 bytes"],
    );
    invalid(
        &with("[event_types.page_visit]\ncolumns = { Path = \"text\" }"),
        "event_types.page_visit.columns.Path",
        &["not a valid name"],
    );
    invalid(
        &with("[event_types.page_visit]\ncolumns = { event_id = \"text\" }"),
        "event_types.page_visit.columns.event_id",
        &["already a column"],
    );
    invalid(
        &with("[event_types.page_visit]\ncolumns = { user = \"text\" }"),
        "event_types.page_visit.columns.user",
        &["Redshift reserved word"],
    );
    invalid(
        &with("[event_types.page_visit]\nrequired_metadata = [\"path\", \"bad key\"]"),
        "event_types.page_visit.required_metadata",
        &["`bad key`"],
    );
    invalid(
        &with("[event_types.page_visit]\nrequired_metadata = [\"path\", \"path\"]"),
        "event_types.page_visit.required_metadata",
        &["listed twice"],
    );
    invalid(
        &with("[cleaning]\nunknown_event_types = \"drop\""),
        "cleaning.unknown_event_types",
        &["`drop`", "\"load\" or \"reject\""],
    );
    unknown_in(
        raw(&with("[event_types.page_visit]\nrequired = [\"path\"]"), vec![]),
        "required",
        "event_types.page_visit",
    );
    unknown_in(
        raw(&with("[cleaning]\nunknown = 1"), vec![]),
        "unknown",
        "cleaning",
    );
}

#[test]
fn binary_bad_event_type_exits_2_before_any_io() {
    let (dir, cfg) = config_dir(&format!(
        "{}\n[event_types.page_visit]\ncolumns = {{ path = \"varchar\" }}\n",
        local_config("src", "analytics", closed_port())
    ));
    let out = support::run_bin(&["--config", &cfg, "migrate"], &[], dir.path());
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("event_types.page_visit.columns.path"),
        "{out}"
    );
}

/// `cleaning.naive_timezone`: UTC by default, an IANA name, anything else refused by
/// name before any IO.
#[test]
fn naive_timezone_is_an_iana_name() {
    assert_eq!(ok(BASE).naive_timezone, chrono_tz::Tz::UTC);
    let with = |zone: &str| format!("{BASE}\n[cleaning]\nnaive_timezone = \"{zone}\"\n");
    assert_eq!(
        ok(&with("Europe/Paris")).naive_timezone,
        chrono_tz::Tz::Europe__Paris
    );
    invalid(
        &with("Mars/Olympus_Mons"),
        "cleaning.naive_timezone",
        &["Mars/Olympus_Mons", "IANA"],
    );
}

/// There is no default configuration file: a command that needs one and gets neither
/// `--config` nor `EVENTS_ETL_CONFIG` exits 2 saying so, before any IO, even where a
/// `config/local.toml` exists in the working directory.
#[test]
fn a_configuration_must_be_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::copy(
        manifest_dir().join("config/local.toml"),
        dir.path().join("config/local.toml"),
    )
    .unwrap();
    for cmd in ["migrate", "run", "status", "check"] {
        let out = support::run_bin(&[cmd], &[], dir.path());
        assert_eq!(out.code(), Some(2), "{cmd}: {out}");
        assert!(
            out.stderr.contains("--config") && out.stderr.contains("EVENTS_ETL_CONFIG"),
            "{cmd}: {out}"
        );
    }
}

/// `--version` names the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_bin(&["--version"], &[], dir.path());
    out.assert_success();
    let expected = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(manifest_dir())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = expected.unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        out.stdout.trim(),
        format!("events-etl {} (commit {commit})", env!("CARGO_PKG_VERSION")),
        "{out}"
    );
}

/// `completions SHELL` and `man` print a completion script and a manual page that know
/// every command, with no configuration.
#[test]
fn completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = support::run_bin(&["completions", shell], &[], dir.path());
        out.assert_success();
        for cmd in ["migrate", "run", "status", "reload", "quarantine", "clean"] {
            assert!(out.stdout.contains(cmd), "{shell}: {cmd}\n{out}");
        }
    }
    let out = support::run_bin(&["man"], &[], dir.path());
    out.assert_success();
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH events-etl 1"),
        "{out}"
    );
    assert!(out.stdout.contains(".TH events-etl 1"), "{out}");
    assert!(
        out.stdout.contains("quarantine") && out.stdout.contains("\\-\\-config"),
        "{out}"
    );
    let out = support::run_bin(&["completions", "tcsh"], &[], dir.path());
    assert_eq!(out.code(), Some(2), "an unknown shell is a usage error: {out}");
}

/// `config` prints the effective configuration: each key with its value and where it
/// came from (environment, file, default), the warehouse password masked.
#[test]
fn config_prints_effective_values_with_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etl.toml");
    std::fs::write(
        &path,
        BASE.replace(
            "postgresql://etl@db.internal:5432/warehouse",
            "postgresql://etl:hunter2@db.internal:5432/warehouse",
        ),
    )
    .unwrap();
    let config = path.display().to_string();
    let out = support::run_bin(
        &["--config", &config, "config"],
        &env(&[("EVENTS_ETL__LOAD__CONCURRENCY", "3")]),
        dir.path(),
    );
    out.assert_success();
    for line in [
        "load.concurrency = 3    # env",
        "load.max_files = 100    # file",
        "source.retention_days = 28    # default",
        "warehouse.postgres.url = \"postgresql://etl:***@db.internal:5432/warehouse\"    # file",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "{line}\n{out}");
    }
    assert!(!out.stdout.contains("hunter2"), "{out}");
}

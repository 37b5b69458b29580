//! `events-etl check`: can this configuration work here? One line per check, with what to
//! fix: the configuration, listing and reading the source, writing, reading and deleting
//! a probe under staging, reaching the warehouse with current migrations and, on Redshift,
//! COPY reading staging through `iam_role`. Nothing is loaded or recorded.

use std::io::Write as _;

use tokio::io::AsyncReadExt as _;

use crate::app::Stores;
use crate::config::Config;
use crate::migrate::{self, Dialect};
use crate::store::Place;

/// The outcome of one check: what was checked, and the failure with its fix, or a
/// warning (something that works but will hurt later) with its fix.
pub struct Line {
    pub what: String,
    pub failure: Option<String>,
    pub warning: Option<String>,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.failure, &self.warning) {
            (Some(why), _) => write!(f, "FAIL  {}: {why}", self.what),
            (None, Some(why)) => write!(f, "WARN  {}: {why}", self.what),
            (None, None) => write!(f, "ok    {}", self.what),
        }
    }
}

fn line(what: impl Into<String>, result: Result<(), String>) -> Line {
    Line {
        what: what.into(),
        failure: result.err(),
        warning: None,
    }
}

fn warning(what: impl Into<String>, why: String) -> Line {
    Line {
        what: what.into(),
        failure: None,
        warning: Some(why),
    }
}

/// Runs every check it can; `print` is called with each line as it is known.
pub async fn run(config_path: &std::path::Path, mut print: impl FnMut(&Line)) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut push = |l: Line| {
        print(&l);
        lines.push(l);
    };
    let what = format!("configuration {}", config_path.display());
    let config = match Config::from_file(config_path) {
        Ok(c) => c,
        Err(e) => {
            push(line(what, Err(e.to_string())));
            return lines;
        }
    };
    push(line(what, Ok(())));
    let Stores { source, staging } = Stores::open(&config).await;
    for l in check_source(&config, &source).await {
        push(l);
    }
    let probe = Probe::new(&staging);
    let written = probe.write(&staging).await;
    let staging_ok = written.is_ok();
    push(line(
        format!("write and read a probe under staging {}", config.staging),
        written.map_err(|e| format!("{e} (check staging.url, s3:PutObject and s3:GetObject)")),
    ));
    for l in check_warehouse(
        &config,
        &staging,
        staging_ok.then_some(probe.manifest_key.as_str()),
    )
    .await
    {
        push(l);
    }
    for l in check_lifecycles(&config, &source, &staging).await {
        push(l);
    }
    let deleted = staging
        .store
        .delete_prefix(&probe.prefix)
        .await
        .map(|_| ())
        .map_err(|e| format!("{e} (check s3:DeleteObject on staging)"));
    push(line("delete the staging probe", deleted));
    lines
}

/// The source: listed, and its first event file readable.
async fn check_source(config: &Config, source: &Place) -> Vec<Line> {
    let objects = match source.store.list(&source.prefix).await {
        Ok(objects) => objects,
        Err(e) => {
            return vec![line(
                format!("list source {}", config.source),
                Err(format!("{e} (check source.url and s3:ListBucket)")),
            )]
        }
    };
    let events: Vec<_> = objects
        .iter()
        .filter(|o| crate::discover::is_event_file(&o.key))
        .collect();
    let mut lines = vec![line(
        format!("list source {} ({} event files)", config.source, events.len()),
        Ok(()),
    )];
    if let Some(first) = events.first() {
        let read = async {
            let mut body = source.store.get(&first.key).await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            body.read(&mut byte).await.map(|_| ()).map_err(|e| e.to_string())
        }
        .await;
        lines.push(line(
            format!("read source object {}", source.store.url(&first.key)),
            read.map_err(|e| format!("{e} (check s3:GetObject on the source and any KMS key)")),
        ));
    }
    lines
}

/// The buckets' lifecycle rules: staging should expire (leftovers of killed runs are
/// never read again), and the source must not delete files sooner than
/// `source.retention_days` says (`status` would promise days the files do not have).
/// Only warnings: neither stops a run.
async fn check_lifecycles(config: &Config, source: &Place, staging: &Place) -> Vec<Line> {
    let mut lines = Vec::new();
    let what = format!("lifecycle of staging {}", config.staging);
    match soonest_expiry(staging, |prefix, rule| prefix.starts_with(rule)).await {
        Ok(None) => {}
        Ok(Some(Some(days))) => lines.push(line(
            format!("{what}: its objects expire after {days} days"),
            Ok(()),
        )),
        Ok(Some(None)) => lines.push(warning(
            what,
            "no lifecycle rule expires the staging prefix, so objects a killed run left stay; \
             apply deploy/aws/staging-lifecycle.json"
                .to_owned(),
        )),
        Err(why) => lines.push(warning(what, why)),
    }
    let what = format!("lifecycle of source {}", config.source);
    let touches = |prefix: &str, rule: &str| prefix.starts_with(rule) || rule.starts_with(prefix);
    match soonest_expiry(source, touches).await {
        Ok(None) => {}
        Ok(Some(Some(days))) if u64::from(days) < config.retention_days => lines.push(warning(
            what,
            format!(
                "a lifecycle rule deletes source objects after {days} days, sooner than \
                 source.retention_days ({}): set source.retention_days = {days}",
                config.retention_days
            ),
        )),
        Ok(Some(_)) => lines.push(line(
            format!("{what}: nothing is deleted sooner than source.retention_days"),
            Ok(()),
        )),
        Err(why) => lines.push(warning(what, why)),
    }
    lines
}

/// The fewest days after which a lifecycle rule `applies` (given the place's prefix and
/// the rule's) deletes objects: `None` for a store without lifecycles, `Some(None)` when
/// no rule applies.
async fn soonest_expiry(
    place: &Place,
    applies: impl Fn(&str, &str) -> bool,
) -> Result<Option<Option<u32>>, String> {
    let rules = place
        .store
        .expirations()
        .await
        .map_err(|e| format!("{e} (check s3:GetLifecycleConfiguration)"))?;
    Ok(rules.map(|rules| {
        rules
            .iter()
            .filter(|r| applies(&place.prefix, &r.prefix))
            .map(|r| r.days)
            .min()
    }))
}

/// A probe part and its manifest under a prefix of their own in staging.
struct Probe {
    prefix: String,
    part_key: String,
    manifest_key: String,
    part: Vec<u8>,
    manifest: String,
}

impl Probe {
    fn new(staging: &Place) -> Probe {
        let prefix = format!(
            "{}_events_etl_check/{}/",
            staging.prefix,
            uuid::Uuid::new_v4().simple()
        );
        let part_key = format!("{prefix}probe.jsonl.gz");
        let manifest_key = format!("{prefix}probe.manifest");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let part = gz
            .write_all(b"{\"probe\":1}\n")
            .and_then(|()| gz.finish())
            .unwrap_or_default();
        let manifest = format!(
            "{{\"entries\":[{{\"url\":\"{}\",\"mandatory\":true,\"meta\":{{\"content_length\":{}}}}}]}}",
            staging.store.url(&part_key),
            part.len()
        );
        Probe {
            prefix,
            part_key,
            manifest_key,
            part,
            manifest,
        }
    }

    /// Writes the part and the manifest, and reads the part back.
    async fn write(&self, staging: &Place) -> Result<(), String> {
        let store = &staging.store;
        store
            .put(&self.part_key, self.part.clone())
            .await
            .map_err(|e| e.to_string())?;
        store
            .put(&self.manifest_key, self.manifest.clone().into_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut back = Vec::new();
        let mut body = store.get(&self.part_key).await.map_err(|e| e.to_string())?;
        body.read_to_end(&mut back).await.map_err(|e| e.to_string())?;
        if back != self.part {
            return Err("the probe read back differs from what was written".to_owned());
        }
        Ok(())
    }
}

/// The warehouse: reachable, migrated, and on Redshift COPY reading the probe at
/// `manifest_key` through `iam_role` (when the probe was written).
async fn check_warehouse(config: &Config, staging: &Place, manifest_key: Option<&str>) -> Vec<Line> {
    let wh = match crate::app::connect(config, staging).await {
        Ok(wh) => wh,
        Err(e) => return vec![line("connect to the warehouse", Err(e.to_string()))],
    };
    let dialect = crate::app::dialect(config);
    let current = async {
        let all = migrate::migrations(dialect.dir(), dialect.files()).map_err(|e| e.to_string())?;
        let applied = wh.applied_migrations().await.map_err(|e| e.to_string())?;
        let pending = migrate::pending(&all, &applied).map_err(|e| e.to_string())?;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} migration(s) not applied: run `events-etl migrate`",
                pending.len()
            ))
        }
    }
    .await;
    let mut lines = vec![line(
        format!("warehouse reachable, schema {} migrated", config.schema),
        current,
    )];
    if let (Dialect::Redshift, Some(manifest_key)) = (dialect, manifest_key) {
        lines.push(line(
            "COPY reads staging through warehouse.redshift.iam_role",
            wh.probe_copy(manifest_key).await.map_err(|e| {
                format!("{e} (the role needs s3:GetObject and s3:ListBucket on the staging prefix and must be attached to the cluster or namespace)")
            }),
        ));
    }
    lines
}

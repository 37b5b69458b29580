//! `events-etl check`: can this configuration work here? One line per check, with what to
//! fix: the configuration, listing and reading the source, writing, reading and deleting
//! a probe under staging, reaching the warehouse with current migrations and, on Redshift,
//! COPY reading staging through `iam_role`. Nothing is loaded or recorded.

use std::io::Write as _;
use std::sync::Arc;

use tokio::io::AsyncReadExt as _;

use crate::config::{Config, WarehouseTarget};
use crate::migrate::{self, Dialect};
use crate::store::{s3::S3Factory, Place};
use crate::warehouse::{postgres::Postgres, redshift::Redshift, Warehouse};

/// The outcome of one check: what was checked, and the failure with its fix.
pub struct Line {
    pub what: String,
    pub failure: Option<String>,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failure {
            None => write!(f, "ok    {}", self.what),
            Some(why) => write!(f, "FAIL  {}: {why}", self.what),
        }
    }
}

fn line(what: impl Into<String>, result: Result<(), String>) -> Line {
    Line {
        what: what.into(),
        failure: result.err(),
    }
}

/// Runs every check it can; `print` is called with each line as it is known.
pub async fn run(config_path: &std::path::Path, mut print: impl FnMut(&Line)) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut push = |l: Line, lines: &mut Vec<Line>| {
        print(&l);
        lines.push(l);
    };
    let config = match Config::from_file(config_path) {
        Ok(c) => c,
        Err(e) => {
            push(
                line(
                    format!("configuration {}", config_path.display()),
                    Err(e.to_string()),
                ),
                &mut lines,
            );
            return lines;
        }
    };
    push(
        line(format!("configuration {}", config_path.display()), Ok(())),
        &mut lines,
    );

    let s3 = S3Factory::new(config.s3_force_path_style);
    let source = Place::open(&config.source, &s3).await;
    let staging = Place::open(&config.staging, &s3).await;

    // The source: listed, and its first event file readable.
    match source.store.list(&source.prefix).await {
        Ok(objects) => {
            let events: Vec<_> = objects
                .iter()
                .filter(|o| crate::discover::is_event_file(&o.key))
                .collect();
            push(
                line(
                    format!("list source {} ({} event files)", config.source, events.len()),
                    Ok(()),
                ),
                &mut lines,
            );
            if let Some(first) = events.first() {
                let read = async {
                    let mut body = source.store.get(&first.key).await.map_err(|e| e.to_string())?;
                    let mut byte = [0u8; 1];
                    body.read(&mut byte).await.map(|_| ()).map_err(|e| e.to_string())
                }
                .await;
                push(
                    line(
                        format!("read source object {}", source.store.url(&first.key)),
                        read.map_err(|e| format!("{e} (check s3:GetObject on the source and any KMS key)")),
                    ),
                    &mut lines,
                );
            }
        }
        Err(e) => push(
            line(
                format!("list source {}", config.source),
                Err(format!("{e} (check source.url and s3:ListBucket)")),
            ),
            &mut lines,
        ),
    }

    // Staging: a probe part and manifest written, read back, (COPYed on Redshift), deleted.
    let probe_prefix = format!(
        "{}_events_etl_check/{}/",
        staging.prefix,
        uuid::Uuid::new_v4().simple()
    );
    let part_key = format!("{probe_prefix}probe.jsonl.gz");
    let manifest_key = format!("{probe_prefix}probe.manifest");
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
    let written = async {
        staging
            .store
            .put(&part_key, part.clone())
            .await
            .map_err(|e| e.to_string())?;
        staging
            .store
            .put(&manifest_key, manifest.into_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut back = Vec::new();
        let mut body = staging.store.get(&part_key).await.map_err(|e| e.to_string())?;
        body.read_to_end(&mut back).await.map_err(|e| e.to_string())?;
        if back != part {
            return Err("the probe read back differs from what was written".to_owned());
        }
        Ok(())
    }
    .await;
    let staging_ok = written.is_ok();
    push(
        line(
            format!("write and read a probe under staging {}", config.staging),
            written.map_err(|e| format!("{e} (check staging.url, s3:PutObject and s3:GetObject)")),
        ),
        &mut lines,
    );

    // The warehouse: reachable, migrated, and (Redshift) COPY through iam_role.
    let (warehouse, dialect): (Result<Arc<dyn Warehouse>, String>, Dialect) = match &config.warehouse {
        WarehouseTarget::Postgres { url } => (
            Postgres::connect(url, &config.schema, staging.clone())
                .await
                .map(|p| Arc::new(p) as Arc<dyn Warehouse>)
                .map_err(|e| e.to_string()),
            Dialect::Postgres,
        ),
        WarehouseTarget::Redshift(rs) => (
            Ok(Arc::new(Redshift::connect(rs, &config.schema, staging.clone()).await) as Arc<dyn Warehouse>),
            Dialect::Redshift,
        ),
    };
    match warehouse {
        Err(e) => push(line("connect to the warehouse", Err(e)), &mut lines),
        Ok(wh) => {
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
            push(
                line(
                    format!("warehouse reachable, schema {} migrated", config.schema),
                    current,
                ),
                &mut lines,
            );
            if dialect == Dialect::Redshift && staging_ok {
                push(
                    line(
                        "COPY reads staging through warehouse.redshift.iam_role",
                        wh.probe_copy(&manifest_key).await.map_err(|e| {
                            format!("{e} (the role needs s3:GetObject and s3:ListBucket on the staging prefix and must be attached to the cluster or namespace)")
                        }),
                    ),
                    &mut lines,
                );
            }
        }
    }

    let deleted = staging
        .store
        .delete_prefix(&probe_prefix)
        .await
        .map(|_| ())
        .map_err(|e| format!("{e} (check s3:DeleteObject on staging)"));
    push(line("delete the staging probe", deleted), &mut lines);
    lines
}

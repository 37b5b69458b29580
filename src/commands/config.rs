//! `events-etl config`: the effective configuration after `EVENTS_ETL__*` overrides, one
//! key a line with where its value came from (`env`, `file` or `default`), secrets masked.

use std::path::Path;

use events_etl::config::{Config, RawConfig, RedshiftTarget, WarehouseTarget, ENV_PREFIX, ENV_SEPARATOR};
use events_etl::event_types::UnknownEventTypes;

use super::{Failure, Outcome};

pub fn run(path: &Path) -> Result<Outcome, Failure> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = {
        let raw = RawConfig::load(path, env.clone())?;
        let cwd = std::env::current_dir()
            .map_err(|e| Failure::usage(format!("cannot resolve relative paths: {e}")))?;
        Config::validate(raw, &cwd)?
    };
    let in_file = file_keys(path);
    for (key, value) in settings(&config) {
        let env_name = format!(
            "{ENV_PREFIX}{ENV_SEPARATOR}{}",
            key.replace('.', ENV_SEPARATOR).to_ascii_uppercase()
        );
        let origin = if env.iter().any(|(k, _)| *k == env_name) {
            "env"
        } else if in_file.contains(&key) {
            "file"
        } else {
            "default"
        };
        println!("{key} = {value}    # {origin}");
    }
    Ok(Outcome::Done)
}

/// The keys the file sets, dotted (`load.max_files`).
fn file_keys(path: &Path) -> Vec<String> {
    fn walk(prefix: &str, value: &config::Value, out: &mut Vec<String>) {
        match value.clone().into_table() {
            Ok(table) => {
                for (k, v) in &table {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Err(_) => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    if let Ok(built) = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .build()
    {
        if let Ok(root) = built.cache.clone().into_table() {
            for (k, v) in &root {
                walk(k, v, &mut out);
            }
        }
    }
    out
}

/// A PostgreSQL URL or key=value string with its password replaced by `***`: in the
/// URL's user information, in a `password=` query parameter, or as a `password=` pair.
fn masked_url(url: &str) -> String {
    let mask_param = |s: &str, sep: char| -> String {
        s.split(sep)
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(&sep.to_string())
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return mask_param(url, ' ');
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let before_query = match before_query.split_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{auth}@{host}"),
        },
        None => before_query.to_owned(),
    };
    match query {
        Some(q) => format!("{scheme}://{before_query}?{}", mask_param(q, '&')),
        None => format!("{scheme}://{before_query}"),
    }
}

/// Every key the configuration has, with its effective value.
fn settings(c: &Config) -> Vec<(String, String)> {
    let q = |s: &str| format!("{s:?}");
    let mut out: Vec<(String, String)> = vec![
        ("source.url".into(), q(&c.source.to_string())),
        ("source.retention_days".into(), c.retention_days.to_string()),
        (
            "source.systemic_min_files".into(),
            c.systemic.min_files.to_string(),
        ),
        (
            "source.systemic_min_percent".into(),
            c.systemic.min_percent.to_string(),
        ),
        ("source.list_concurrency".into(), c.list_concurrency.to_string()),
        ("staging.url".into(), q(&c.staging.to_string())),
        (
            "staging.part_size_mb".into(),
            (c.part_size_bytes / (1024 * 1024)).to_string(),
        ),
        ("staging.keep".into(), c.keep_staging.to_string()),
        ("s3.force_path_style".into(), c.s3_force_path_style.to_string()),
        ("warehouse.schema".into(), q(&c.schema)),
    ];
    match &c.warehouse {
        WarehouseTarget::Postgres { url } => {
            out.push(("warehouse.kind".into(), q("postgres")));
            out.push(("warehouse.postgres.url".into(), q(&masked_url(url))));
        }
        WarehouseTarget::Redshift(rs) => {
            out.push(("warehouse.kind".into(), q("redshift")));
            let (cluster, workgroup, db_user, secret) = match &rs.target {
                RedshiftTarget::ClusterDbUser {
                    cluster_identifier,
                    db_user,
                } => (Some(cluster_identifier), None, Some(db_user), None),
                RedshiftTarget::ClusterSecret {
                    cluster_identifier,
                    secret_arn,
                } => (Some(cluster_identifier), None, None, Some(secret_arn)),
                RedshiftTarget::Workgroup {
                    workgroup_name,
                    secret_arn,
                } => (None, Some(workgroup_name), None, secret_arn.as_ref()),
            };
            for (key, v) in [
                ("cluster_identifier", cluster),
                ("workgroup_name", workgroup),
                ("db_user", db_user),
                ("secret_arn", secret),
                ("database", Some(&rs.database)),
                ("iam_role", Some(&rs.iam_role)),
                ("copy_region", rs.copy_region.as_ref()),
            ] {
                if let Some(v) = v {
                    out.push((format!("warehouse.redshift.{key}"), q(v)));
                }
            }
            out.push((
                "warehouse.redshift.statement_timeout_secs".into(),
                rs.statement_timeout.as_secs().to_string(),
            ));
            out.push((
                "warehouse.redshift.max_poll_interval_ms".into(),
                rs.max_poll_interval.as_millis().to_string(),
            ));
        }
    }
    out.extend([
        ("load.max_files".into(), c.max_files_per_load.to_string()),
        ("load.max_bytes".into(), c.max_bytes_per_load.to_string()),
        ("load.dedupe_window_days".into(), c.dedupe_window_days.to_string()),
        ("load.concurrency".into(), c.concurrency.to_string()),
        (
            "monitor.max_pending_age_hours".into(),
            c.max_pending_age_hours.to_string(),
        ),
    ]);
    if let Some(h) = c.max_source_silence_hours {
        out.push(("monitor.max_source_silence_hours".into(), h.to_string()));
    }
    let unknown = match c.event_types.unknown {
        UnknownEventTypes::Load => "load",
        UnknownEventTypes::Reject => "reject",
    };
    out.push(("cleaning.unknown_event_types".into(), q(unknown)));
    out.push(("cleaning.naive_timezone".into(), q(c.naive_timezone.name())));
    for name in c.event_types.types.keys() {
        out.push((format!("event_types.{name}"), "(configured)".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::masked_url;

    #[test]
    fn passwords_are_masked_in_every_form() {
        assert_eq!(
            masked_url("postgresql://etl:s3cret@db:5432/wh"),
            "postgresql://etl:***@db:5432/wh"
        );
        assert_eq!(
            masked_url("postgresql://etl@db/wh?sslmode=require&password=s3cret"),
            "postgresql://etl@db/wh?sslmode=require&password=***"
        );
        assert_eq!(
            masked_url("host=db user=etl password=s3cret"),
            "host=db user=etl password=***"
        );
        assert_eq!(masked_url("postgresql://db/wh"), "postgresql://db/wh");
    }
}

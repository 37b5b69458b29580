//! The commands of the `events-etl` binary, one module each, over the library's shared
//! wiring ([`events_etl::app`]); what they print, and how their errors map to exit codes.

use events_etl::config::ConfigError;
use events_etl::pipeline::PipelineError;
use events_etl::warehouse::{LoadRow, Quarantined, WarehouseError};

pub mod check;
pub mod clean;
pub mod config;
pub mod migrate;
pub mod quarantine;
pub mod reload;
pub mod run;
pub mod status;

/// Exit codes (documented in the README).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_STORE: u8 = 3;
pub const EXIT_WAREHOUSE: u8 = 4;
/// The run loaded everything else, but set files aside or found files lost; or
/// `status --check` found something that needs a person.
pub const EXIT_ATTENTION: u8 = 5;
/// `check` found something that would fail.
pub const EXIT_CHECK: u8 = 6;

/// How a command that did its work ended.
pub enum Outcome {
    Done,
    /// Done, with files quarantined or lost that someone must look at.
    Attention,
    /// `check` found a problem.
    CheckFailed,
}

/// An error with its exit code; printed with its whole cause chain.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure {
            code: EXIT_CONFIG,
            error: e.into(),
        }
    }
}

/// Reading staged objects back (PostgreSQL loads read them) is a store failure, exit 3,
/// as the README's exit-code table says; everything else the warehouse reports is 4.
fn warehouse_code(e: &WarehouseError) -> u8 {
    match e {
        WarehouseError::Staging(_) | WarehouseError::StagedData { .. } => EXIT_STORE,
        _ => EXIT_WAREHOUSE,
    }
}

impl From<WarehouseError> for Failure {
    fn from(e: WarehouseError) -> Self {
        Failure {
            code: warehouse_code(&e),
            error: e.into(),
        }
    }
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        let code = match &e {
            PipelineError::Warehouse(w) => warehouse_code(w),
            PipelineError::Source(_)
            | PipelineError::Read { .. }
            | PipelineError::Stage(_)
            | PipelineError::Systemic { .. } => EXIT_STORE,
        };
        Failure {
            code,
            error: e.into(),
        }
    }
}

impl Failure {
    /// A usage error (exit 2): the command line asks for something that cannot be.
    pub fn usage(message: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!("{message}"),
        }
    }
}

/// An error and its causes on one line, each message once.
pub fn error_chain(e: &PipelineError) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// At most this many quarantined and lost versions are read for `status` and metrics.
pub const QUARANTINE_SHOWN: i64 = 100_000;

/// One line per quarantined or lost version; with `written` (when each listed object
/// was written), the days left before the source deletes it.
pub fn print_quarantined(
    files: &[Quarantined],
    written: Option<&std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>>,
    retention_days: u64,
) {
    let now = chrono::Utc::now();
    for q in files {
        let left = written
            .and_then(|w| w.get(&q.source_key))
            .map(|t| {
                let days = retention_days as f64 - (now - *t).num_seconds() as f64 / 86_400.0;
                format!(", {days:.1} days before the source deletes it")
            })
            .unwrap_or_default();
        let resolved = match (&q.resolved_at, &q.resolved_by, &q.resolution) {
            (Some(at), by, why) => format!(
                " [resolved {at} by {}: {}]",
                by.as_deref().unwrap_or("?"),
                why.as_deref().unwrap_or("")
            ),
            _ => String::new(),
        };
        println!(
            "  {} (etag {}, {} bytes{left}) {} at {}: {}{resolved}",
            q.source_key, q.etag, q.size_bytes, q.reason, q.quarantined_at, q.detail
        );
    }
}

/// The loads as a table.
pub fn print_loads(loads: &[LoadRow]) {
    println!(
        "{:<32} {:>6} {:>10} {:>10} {:>10} {:>8} {:>9} {:>8}",
        "load_id", "files", "lines", "loaded", "duplicates", "rejects", "conflicts", "blank"
    );
    for l in loads {
        println!(
            "{:<32} {:>6} {:>10} {:>10} {:>10} {:>8} {:>9} {:>8}",
            l.load_id, l.files, l.lines, l.events_loaded, l.duplicates, l.rejects, l.conflicts, l.blank_lines
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_objects_unreadable_is_a_store_error() {
        let staged = WarehouseError::StagedData {
            url: "s3://b/staging/l/events/part-00000.jsonl.gz".into(),
            message: "gone".into(),
        };
        assert_eq!(Failure::from(PipelineError::Warehouse(staged)).code, EXIT_STORE);
        let missing = WarehouseError::Staging(events_etl::store::StoreError::NotFound { url: "x".into() });
        assert_eq!(Failure::from(missing).code, EXIT_STORE);
        let statement = WarehouseError::systemic("insert_events", "boom");
        assert_eq!(
            Failure::from(PipelineError::Warehouse(statement)).code,
            EXIT_WAREHOUSE
        );
    }
}

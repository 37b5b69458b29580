//! What a run tells machines: Prometheus text for node_exporter's textfile collector
//! (`run --metrics-file`) and a JSON run report (`run --report-json`). PURE formatting;
//! `write_atomically` is the one IO helper, so a collector never reads half a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::pipeline::RunReport;

/// Everything the metrics and the report say about one run.
pub struct RunSummary<'a> {
    pub run_id: &'a str,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The run's report when it succeeded; `None` when it failed.
    pub report: Option<&'a RunReport>,
    /// The error chain of a failed run.
    pub error: Option<String>,
    /// The last successful run's end (this run's, when it succeeded), if known.
    pub last_success: Option<DateTime<Utc>>,
    /// Files still pending after the run, and the oldest one's age, if the source could
    /// be listed.
    pub pending: Option<(usize, Option<chrono::Duration>)>,
    /// Quarantined file versions whose alarm stands, if the warehouse could say.
    pub quarantined: Option<usize>,
    /// File versions lost before they were read (`vanished`) whose alarm stands, if
    /// the warehouse could say.
    pub lost: Option<usize>,
    /// How old the newest source object was when the run listed them, if it did.
    pub newest_source_age: Option<chrono::Duration>,
}

fn metric(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

fn one(v: f64) -> Vec<(String, f64)> {
    vec![(String::new(), v)]
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The Prometheus text exposition of a run. Values a failed run cannot know (events
/// loaded, steps) are left out rather than reported as zero.
pub fn prometheus(s: &RunSummary<'_>) -> String {
    let mut out = String::new();
    metric(
        &mut out,
        "events_etl_last_run_timestamp_seconds",
        "End of the last run, success or not.",
        &one(seconds(s.finished)),
    );
    metric(
        &mut out,
        "events_etl_last_run_success",
        "1 when the last run succeeded, 0 when it failed.",
        &one(if s.report.is_some() { 1.0 } else { 0.0 }),
    );
    if let Some(t) = s.last_success {
        metric(
            &mut out,
            "events_etl_last_success_timestamp_seconds",
            "End of the last successful run.",
            &one(seconds(t)),
        );
    }
    let total = (s.finished - s.started).num_milliseconds() as f64 / 1000.0;
    let mut steps = vec![("{step=\"total\"}".to_owned(), total)];
    if let Some(r) = s.report {
        steps.extend(r.seconds.iter().map(|(k, v)| (format!("{{step=\"{k}\"}}"), *v)));
    }
    metric(
        &mut out,
        "events_etl_run_duration_seconds",
        "Seconds the last run spent, per step.",
        &steps,
    );
    if let Some((n, oldest)) = s.pending {
        metric(
            &mut out,
            "events_etl_files_pending",
            "Event files not yet loaded.",
            &one(n as f64),
        );
        let age = oldest.map_or(0.0, |a| a.num_milliseconds() as f64 / 1000.0);
        metric(
            &mut out,
            "events_etl_oldest_pending_age_seconds",
            "Age of the oldest pending file (0 when none): alert well before the source's retention.",
            &one(age),
        );
    }
    if let Some(r) = s.report {
        let sum = |f: fn(&crate::warehouse::LoadRow) -> i64| r.loads.iter().map(f).sum::<i64>() as f64;
        metric(
            &mut out,
            "events_etl_events_loaded",
            "Events the last run loaded.",
            &one(sum(|l| l.events_loaded)),
        );
        metric(
            &mut out,
            "events_etl_duplicates",
            "Duplicate events the last run skipped.",
            &one(sum(|l| l.duplicates)),
        );
        let by_type: Vec<(String, f64)> = events_by_type(r)
            .iter()
            .map(|(k, v)| (format!("{{event_name=\"{k}\"}}"), *v as f64))
            .collect();
        if !by_type.is_empty() {
            metric(
                &mut out,
                "events_etl_events_loaded_by_type",
                "Events the last run loaded, per event type.",
                &by_type,
            );
        }
        let rejects: Vec<(String, f64)> = r
            .rejects_by_reason
            .iter()
            .map(|(k, v)| (format!("{{reason=\"{}\"}}", k.as_str()), *v as f64))
            .collect();
        if !rejects.is_empty() {
            metric(
                &mut out,
                "events_etl_rejects",
                "Lines the last run rejected, by reason.",
                &rejects,
            );
        }
    }
    if let Some(q) = s.quarantined {
        metric(
            &mut out,
            "events_etl_files_quarantined",
            "File versions quarantined and not resolved (see `events-etl quarantine list`).",
            &one(q as f64),
        );
    }
    if let Some(age) = s.newest_source_age {
        metric(
            &mut out,
            "events_etl_newest_source_object_age_seconds",
            "Age of the newest source object the run listed: a producer that stopped writing shows here.",
            &one(age.num_seconds() as f64),
        );
    }
    if let Some(n) = s.lost {
        metric(
            &mut out,
            "events_etl_files_lost",
            "File versions listed but gone before they were read, not resolved (see `status`).",
            &one(n as f64),
        );
    }
    out
}

/// Events the run's loads inserted, per event type (the names are validated event
/// names, `[a-z][a-z0-9_]*`: safe as Prometheus label values).
fn events_by_type(r: &RunReport) -> BTreeMap<&str, i64> {
    let mut by_type = BTreeMap::new();
    for (name, n) in r.loads.iter().flat_map(|l| &l.events_by_type) {
        *by_type.entry(name.as_str()).or_insert(0) += n;
    }
    by_type
}

#[derive(Serialize)]
struct FileReport<'a> {
    key: &'a str,
    etag: &'a str,
    size_bytes: u64,
    lines: u64,
    blank_lines: u64,
    events_staged: u64,
    rejects: u64,
    recovered_events: u64,
    invalid_ips: u64,
}

#[derive(Serialize)]
struct Report<'a> {
    run_id: &'a str,
    status: &'static str,
    started_at: String,
    finished_at: String,
    error: Option<&'a str>,
    load_ids: Vec<&'a str>,
    files: Vec<FileReport<'a>>,
    quarantined: Vec<&'a str>,
    rejects_by_reason: BTreeMap<&'static str, u64>,
    events_loaded_by_type: BTreeMap<&'a str, i64>,
    duration_seconds: BTreeMap<&'static str, f64>,
    /// Why the run took no more loads with files still pending (`--max-files`,
    /// `--max-duration`); absent when it took every pending file.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_early: Option<&'a str>,
    /// Versions still pending when the run ended (absent when it did not list).
    #[serde(skip_serializing_if = "Option::is_none")]
    files_left_pending: Option<usize>,
}

/// The JSON run report.
pub fn json(s: &RunSummary<'_>) -> String {
    let empty = RunReport::default();
    let r = s.report.unwrap_or(&empty);
    let mut duration_seconds = r.seconds.clone();
    duration_seconds.insert(
        "total",
        (s.finished - s.started).num_milliseconds() as f64 / 1000.0,
    );
    let report = Report {
        run_id: s.run_id,
        status: if s.report.is_some() { "succeeded" } else { "failed" },
        started_at: s.started.to_rfc3339(),
        finished_at: s.finished.to_rfc3339(),
        error: s.error.as_deref(),
        load_ids: r.loads.iter().map(|l| l.load_id.as_str()).collect(),
        files: r
            .files
            .iter()
            .map(|f| FileReport {
                key: &f.source_key,
                etag: &f.etag,
                size_bytes: f.size_bytes,
                lines: f.lines,
                blank_lines: f.blank_lines,
                events_staged: f.events_staged,
                rejects: f.rejects,
                recovered_events: f.recovered_events,
                invalid_ips: f.invalid_ips,
            })
            .collect(),
        quarantined: r.quarantined.iter().map(|q| q.source_key.as_str()).collect(),
        rejects_by_reason: r
            .rejects_by_reason
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect(),
        events_loaded_by_type: events_by_type(r),
        duration_seconds,
        stopped_early: r.stopped_early.as_deref(),
        files_left_pending: r.left_pending,
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename,
/// so that a reader sees the old file or the new one, never a partial one.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if path == Path::new("-") {
        // Standard output, for a container whose stdout is collected (ECS, Kubernetes).
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        return out.flush();
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

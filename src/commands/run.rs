//! `events-etl run`: load every new file once (or, with `--dry-run`, show what cleaning
//! would make of them), record the run, and write its metrics and report.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use events_etl::app::App;
use events_etl::pipeline::{Days, PipelineError, RunReport};
use events_etl::warehouse::{RunRow, RunStatus, Warehouse};

use super::{error_chain, print_loads, print_quarantined, Failure, Outcome, QUARANTINE_SHOWN};

/// Where the run's outputs go.
pub struct Outputs {
    /// Prometheus text (`--metrics-file`).
    pub metrics_file: Option<PathBuf>,
    /// The JSON report (`--report-json`).
    pub report_json: Option<PathBuf>,
}

pub async fn run(app: &App, days: Option<Days>, dry_run: bool, outputs: Outputs) -> Result<Outcome, Failure> {
    let started = Utc::now();
    if dry_run {
        let files = app.pipeline.dry_run(started, days).await?;
        print_dry_run(&files);
        return Ok(Outcome::Done);
    }
    let run_id = events_etl::pipeline::new_load_id(started);
    let span = tracing::info_span!("run", run_id = %run_id);
    let (report, result) =
        tracing::Instrument::instrument(app.pipeline.run_reporting(started, days), span).await;
    record_run(app.warehouse.as_ref(), &run_id, started, &report, &result).await;
    if outputs.metrics_file.is_some() || outputs.report_json.is_some() {
        let summary = summarise(app.warehouse.as_ref(), &run_id, started, &report, &result).await;
        for (path, text) in [
            (outputs.metrics_file, events_etl::report::prometheus(&summary)),
            (outputs.report_json, events_etl::report::json(&summary)),
        ] {
            if let Some(path) = path {
                if let Err(e) = events_etl::report::write_atomically(&path, &text) {
                    tracing::error!(path = %path.display(), error = %e, "could not write the run's metrics or report");
                }
            }
        }
    }
    result?;
    print_run(&report);
    if report.quarantined.is_empty() {
        return Ok(Outcome::Done);
    }
    println!(
        "quarantined {} file(s) (not loaded until a new version is uploaded):",
        report.quarantined.len()
    );
    print_quarantined(&report.quarantined, None, app.config.retention_days);
    Ok(Outcome::Attention)
}

/// What the metrics and the report say about a finished run, from the run's own figures
/// (no second listing); what cannot be learned (the warehouse or the source unreachable
/// after a failure) is left out.
async fn summarise<'a>(
    warehouse: &dyn Warehouse,
    run_id: &'a str,
    started: DateTime<Utc>,
    report: &'a RunReport,
    result: &Result<(), PipelineError>,
) -> events_etl::report::RunSummary<'a> {
    let finished = Utc::now();
    let last_success = match result {
        Ok(()) => Some(finished),
        Err(_) => warehouse
            .last_run(RunStatus::Succeeded)
            .await
            .ok()
            .flatten()
            .map(|r| r.finished_at.and_utc()),
    };
    let pending = report
        .left_pending
        .map(|n| (n, report.oldest_left.map(|t| finished - t)));
    let alarms = warehouse.quarantined(QUARANTINE_SHOWN, false).await.ok();
    let lost = alarms.as_ref().map(|a| a.iter().filter(|q| q.is_lost()).count());
    let quarantined = alarms.as_ref().zip(lost).map(|(a, lost)| a.len() - lost);
    events_etl::report::RunSummary {
        run_id,
        started,
        finished,
        report: result.as_ref().ok().map(|()| report),
        error: result.as_ref().err().map(error_chain),
        last_success,
        pending,
        quarantined,
        lost,
        newest_source_age: report.newest_source.map(|t| finished - t),
    }
}

/// Records the run in `etl_runs`, succeeded or failed, in its own statement: a failed
/// run leaves a trace whenever the warehouse is reachable. Best effort: a run's own
/// outcome is never changed by a failure to record it.
async fn record_run(
    warehouse: &dyn Warehouse,
    run_id: &str,
    started: DateTime<Utc>,
    report: &RunReport,
    result: &Result<(), PipelineError>,
) {
    let r = report;
    let (status, error, loads, files, events, rejects) = match result {
        Ok(()) => (
            RunStatus::Succeeded,
            None,
            r.loads.len() as i64,
            r.loads.iter().map(|l| l.files).sum(),
            r.loads.iter().map(|l| l.events_loaded).sum(),
            r.loads.iter().map(|l| l.rejects).sum(),
        ),
        Err(e) => {
            let mut text = error_chain(e);
            let mut end = text.len().min(events_etl::warehouse::MAX_RUN_ERROR);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            (RunStatus::Failed, Some(text), 0, 0, 0, 0)
        }
    };
    let row = RunRow {
        run_id: run_id.to_owned(),
        started_at: started.naive_utc(),
        finished_at: chrono::Utc::now().naive_utc(),
        status,
        error,
        loads,
        files,
        events_loaded: events,
        rejects,
    };
    if let Err(e) = warehouse.record_run(&row).await {
        tracing::warn!(run_id, error = %e, "could not record the run in etl_runs");
    }
}

fn print_dry_run(files: &[events_etl::pipeline::DryFile]) {
    let mut reasons: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let (mut lines, mut events, mut rejects, mut blank) = (0, 0, 0, 0);
    println!("dry run: {} pending file(s); nothing is written", files.len());
    println!(
        "{:<60} {:>12} {:>8} {:>8} {:>8} {:>6}",
        "file", "bytes", "lines", "events", "rejects", "blank"
    );
    for f in files {
        let t = &f.tally;
        println!(
            "{:<60} {:>12} {:>8} {:>8} {:>8} {:>6}",
            f.file.key, f.file.size, t.lines, t.events, t.rejects, t.blank_lines
        );
        (lines, events, rejects, blank) = (
            lines + t.lines,
            events + t.events,
            rejects + t.rejects,
            blank + t.blank_lines,
        );
        for (r, n) in &f.reasons {
            *reasons.entry(r.as_str()).or_insert(0) += n;
        }
    }
    println!(
        "total: {lines} lines, {events} events (before deduplication), {rejects} rejects, {blank} blank"
    );
    for (r, n) in reasons {
        println!("  rejects {r}: {n}");
    }
}

fn print_run(r: &RunReport) {
    print_loaded(r);
    if let Some(why) = &r.stopped_early {
        println!(
            "stopped taking new loads ({why}): {} file(s) stay pending for the next run",
            r.left_pending.unwrap_or(0)
        );
    }
}

fn print_loaded(r: &RunReport) {
    if r.loads.is_empty() {
        if r.stopped_early.is_some() {
            println!(
                "nothing loaded: {} event files, {} pending",
                r.event_files, r.pending
            );
        } else if r.pending == 0 {
            println!(
                "nothing to load: {} event files, all already recorded",
                r.event_files
            );
        } else {
            println!(
                "nothing loaded: the {} pending file(s) were recorded by a concurrent run or vanished before they were read",
                r.pending
            );
        }
        return;
    }
    let loaded: i64 = r.loads.iter().map(|l| l.files).sum();
    println!(
        "loaded {loaded} of {} event files in {} load(s):",
        r.event_files,
        r.loads.len()
    );
    print_loads(&r.loads);
}

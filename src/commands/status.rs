//! `events-etl status [--check]`: what was loaded, what is pending and for how long
//! before the source deletes it, what is quarantined or lost, open reload requests, and
//! the event types seen; with `--check`, exit 5 when something needs a person.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use events_etl::app::App;
use events_etl::config::Config;
use events_etl::store::ObjectMeta;
use events_etl::warehouse::{CatalogRow, LoadRow, OpenReload, Quarantined, RunRow, RunStatus};

use super::{print_loads, print_quarantined, Failure, Outcome, QUARANTINE_SHOWN};

pub async fn run(app: &App, limit: i64, check: bool) -> Result<Outcome, Failure> {
    let (config, warehouse, pipeline) = (&app.config, &app.warehouse, &app.pipeline);
    let loads = warehouse.recent_loads(limit).await?;
    let files = pipeline.event_files(None).await?.1;
    let written: HashMap<String, DateTime<Utc>> = files
        .iter()
        .filter_map(|f| Some((f.key.clone(), f.last_modified?)))
        .collect();
    let event_files = files.len();
    let pending = pipeline.unsettled(files).await?;
    let alarms = warehouse.quarantined(QUARANTINE_SHOWN, false).await?;
    let runs = [
        warehouse.last_run(RunStatus::Succeeded).await?,
        warehouse.last_run(RunStatus::Failed).await?,
    ];
    let catalog = warehouse.event_catalog().await?;
    let reloads = warehouse.open_reloads(QUARANTINE_SHOWN).await?;
    let oldest = print_status(config, event_files, &pending, &runs, &loads, &alarms, &written);
    print_reloads(&reloads);
    print_event_types(config, &catalog, Utc::now().naive_utc());
    if !check {
        return Ok(Outcome::Done);
    }
    let failed = alarms_raised(config, oldest, &alarms);
    if failed.is_empty() {
        println!("check: ok");
        Ok(Outcome::Done)
    } else {
        println!("check: FAILED ({})", failed.join("; "));
        Ok(Outcome::Attention)
    }
}

/// What `status --check` fails on: a pending file older than
/// `monitor.max_pending_age_hours`, an unresolved quarantined or lost version.
fn alarms_raised(config: &Config, oldest: Option<chrono::Duration>, alarms: &[Quarantined]) -> Vec<String> {
    let max = chrono::Duration::hours(i64::try_from(config.max_pending_age_hours).unwrap_or(i64::MAX));
    let mut failed = Vec::new();
    if oldest.is_some_and(|a| a > max) {
        failed.push(format!(
            "a pending file is older than {} hours",
            config.max_pending_age_hours
        ));
    }
    let lost = alarms.iter().filter(|q| q.is_lost()).count();
    let set_aside = alarms.len() - lost;
    if set_aside > 0 {
        failed.push(format!("{set_aside} file(s) quarantined"));
    }
    if lost > 0 {
        failed.push(format!("{lost} file(s) lost before they were read"));
    }
    failed
}

fn print_reloads(reloads: &[OpenReload]) {
    if reloads.is_empty() {
        return;
    }
    println!(
        "open reload requests (read again by the next run): {}",
        reloads.len()
    );
    for r in reloads.iter().take(20) {
        println!(
            "  {} (ETag {}) requested {}",
            r.source_key, r.etag, r.requested_at
        );
    }
    if reloads.len() > 20 {
        println!("  ... and {} more", reloads.len() - 20);
    }
}

/// Prints `status`; returns the age of the oldest pending file, when known.
fn print_status(
    config: &Config,
    event_files: usize,
    pending: &[ObjectMeta],
    runs: &[Option<RunRow>],
    loads: &[LoadRow],
    alarms: &[Quarantined],
    written: &HashMap<String, DateTime<Utc>>,
) -> Option<chrono::Duration> {
    let now = chrono::Utc::now();
    let hours = |d: chrono::Duration| d.num_seconds() as f64 / 3600.0;
    println!(
        "source {}: {event_files} event files, {} pending",
        config.source,
        pending.len()
    );
    let age = |p: &ObjectMeta| p.last_modified.map(|t| now - t);
    for p in pending.iter().take(20) {
        match age(p) {
            Some(a) => println!(
                "  pending {} ({} bytes), {:.1} hours old, {:.1} days before the source deletes it",
                p.key,
                p.size,
                hours(a),
                config.retention_days as f64 - hours(a) / 24.0
            ),
            None => println!("  pending {} ({} bytes), age unknown", p.key, p.size),
        }
    }
    if pending.len() > 20 {
        println!("  ... and {} more", pending.len() - 20);
    }
    let oldest = pending.iter().filter_map(age).max();
    if let Some(a) = oldest {
        println!(
            "oldest pending file: {:.1} hours old (alert above {} hours; the source deletes files after {} days)",
            hours(a),
            config.max_pending_age_hours,
            config.retention_days
        );
    }
    for (status, run) in [RunStatus::Succeeded, RunStatus::Failed].iter().zip(runs) {
        match run {
            Some(r) => println!(
                "last {status} run: {} finished {} ({} loads, {} files, {} events){}",
                r.run_id,
                r.finished_at,
                r.loads,
                r.files,
                r.events_loaded,
                r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
            None => println!("last {status} run: none recorded"),
        }
    }
    println!("recent loads:");
    print_loads(loads);
    let (lost, set_aside): (Vec<Quarantined>, Vec<Quarantined>) =
        alarms.iter().cloned().partition(Quarantined::is_lost);
    if !set_aside.is_empty() {
        println!(
            "quarantined files (not loaded until a new version loads or `reload --key`; \
             `quarantine resolve` clears one that will not be fixed):"
        );
        print_quarantined(&set_aside, Some(written), config.retention_days);
    }
    if !lost.is_empty() {
        println!(
            "lost files (listed, then gone before they were read: their events are not loaded; \
             upload a copy, or `quarantine resolve` once accepted):"
        );
        print_quarantined(&lost, None, config.retention_days);
    }
    oldest
}

/// `status`: event types first seen in the last 7 days, and configured types not seen
/// in the last 7 days (by event time, as the catalog keeps it).
fn print_event_types(config: &Config, catalog: &[CatalogRow], now: chrono::NaiveDateTime) {
    let since = now - chrono::Duration::days(NEW_TYPE_DAYS);
    let new: Vec<&CatalogRow> = catalog.iter().filter(|c| c.first_seen >= since).collect();
    println!(
        "event types: {} seen in all, {} first seen in the last {NEW_TYPE_DAYS} days",
        catalog.len(),
        new.len()
    );
    for c in &new {
        let configured = if config.event_types.get(&c.event_name).is_some() {
            ""
        } else {
            " (not configured)"
        };
        println!(
            "  new type {}: first seen {}, {} events{configured}",
            c.event_name, c.first_seen, c.events
        );
    }
    for name in config.event_types.types.keys() {
        match catalog.iter().find(|c| &c.event_name == name) {
            Some(c) if c.last_seen >= since => {}
            Some(c) => println!(
                "  configured type {name} not seen in the last {NEW_TYPE_DAYS} days (last seen {})",
                c.last_seen
            ),
            None => {
                println!("  configured type {name} not seen in the last {NEW_TYPE_DAYS} days (never seen)")
            }
        }
    }
}

/// How recent "new" and "not seen lately" are, for `status`'s event types.
const NEW_TYPE_DAYS: i64 = 7;

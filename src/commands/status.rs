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

/// What `status` reports, gathered once for the text and the JSON forms.
struct Snapshot {
    event_files: usize,
    pending: Vec<ObjectMeta>,
    written: HashMap<String, DateTime<Utc>>,
    newest_source: Option<DateTime<Utc>>,
    loads: Vec<LoadRow>,
    alarms: Vec<Quarantined>,
    runs: [Option<RunRow>; 2],
    catalog: Vec<CatalogRow>,
    reloads: Vec<OpenReload>,
}

pub async fn run(app: &App, limit: i64, check: bool, json: bool) -> Result<Outcome, Failure> {
    let (config, warehouse, pipeline) = (&app.config, &app.warehouse, &app.pipeline);
    // One pass over the source, as a run makes it; of the listing only what status
    // shows is kept: the pending versions, and when the alarms' files were written.
    let alarms = warehouse.quarantined(QUARANTINE_SHOWN, false).await?;
    let mut written: HashMap<String, DateTime<Utc>> = HashMap::new();
    let alarm_keys: std::collections::HashSet<&str> = alarms.iter().map(|q| q.source_key.as_str()).collect();
    let scan = pipeline
        .scan(None, |files| {
            for f in files {
                if let (true, Some(t)) = (alarm_keys.contains(f.key.as_str()), f.last_modified) {
                    written.insert(f.key.clone(), t);
                }
            }
        })
        .await?;
    drop(alarm_keys);
    let snapshot = Snapshot {
        event_files: scan.event_files,
        pending: scan.pending.to_vec(),
        written,
        newest_source: scan.newest,
        loads: warehouse.recent_loads(limit).await?,
        alarms,
        runs: [
            warehouse.last_run(RunStatus::Succeeded).await?,
            warehouse.last_run(RunStatus::Failed).await?,
        ],
        catalog: warehouse.event_catalog().await?,
        reloads: warehouse.open_reloads(QUARANTINE_SHOWN).await?,
    };
    let now = Utc::now();
    let oldest = snapshot
        .pending
        .iter()
        .filter_map(|p| p.last_modified.map(|t| now - t))
        .max();
    let failed = alarms_raised(
        config,
        oldest,
        snapshot.newest_source.map(|t| now - t),
        &snapshot.alarms,
    );
    if json {
        println!("{}", status_json(config, &snapshot, &failed, now));
    } else {
        print_status(config, &snapshot);
        print_reloads(&snapshot.reloads);
        print_event_types(config, &snapshot.catalog, now.naive_utc());
        if check {
            if failed.is_empty() {
                println!("check: ok");
            } else {
                println!("check: FAILED ({})", failed.join("; "));
            }
        }
    }
    Ok(if check && !failed.is_empty() {
        Outcome::Attention
    } else {
        Outcome::Done
    })
}

/// What `status --check` fails on: a pending file older than
/// `monitor.max_pending_age_hours`, an unresolved quarantined or lost version, and (when
/// set) a newest source object older than `monitor.max_source_silence_hours`.
fn alarms_raised(
    config: &Config,
    oldest: Option<chrono::Duration>,
    silence: Option<chrono::Duration>,
    alarms: &[Quarantined],
) -> Vec<String> {
    let hours = |h: u64| chrono::Duration::hours(i64::try_from(h).unwrap_or(i64::MAX));
    let mut failed = Vec::new();
    if oldest.is_some_and(|a| a > hours(config.max_pending_age_hours)) {
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
    if let Some(max) = config.max_source_silence_hours {
        // No object at all is silence too.
        if silence.is_none_or(|s| s > hours(max)) {
            failed.push(format!("no new source object for more than {max} hours"));
        }
    }
    failed
}

/// `status --json`: one object; its fields are listed in the README.
fn status_json(config: &Config, s: &Snapshot, failed: &[String], now: DateTime<Utc>) -> serde_json::Value {
    use serde_json::json;
    let age = |t: Option<DateTime<Utc>>| t.map(|t| (now - t).num_seconds());
    let days_left = |t: Option<DateTime<Utc>>| {
        t.map(|t| config.retention_days as f64 - (now - t).num_seconds() as f64 / 86_400.0)
    };
    let run = |r: &Option<RunRow>| {
        r.as_ref().map(|r| {
            json!({
                "run_id": r.run_id, "started_at": r.started_at.to_string(),
                "finished_at": r.finished_at.to_string(), "error": r.error,
                "loads": r.loads, "files": r.files, "events_loaded": r.events_loaded, "rejects": r.rejects,
            })
        })
    };
    let version = |q: &Quarantined| {
        let written = s.written.get(&q.source_key).copied();
        json!({
            "source_key": q.source_key, "etag": q.etag, "size_bytes": q.size_bytes,
            "reason": q.reason.as_str(), "detail": q.detail,
            "quarantined_at": q.quarantined_at.to_string(),
            "days_left": days_left(written),
        })
    };
    let oldest = s.pending.iter().filter_map(|p| p.last_modified).min();
    let since = now.naive_utc() - chrono::Duration::days(NEW_TYPE_DAYS);
    json!({
        "source": config.source.to_string(),
        "event_files": s.event_files,
        "newest_source_object_age_seconds": age(s.newest_source),
        "pending": {
            "count": s.pending.len(),
            "oldest_age_seconds": age(oldest),
            "days_left": days_left(oldest),
            "files": s.pending.iter().take(PENDING_LISTED).map(|p| json!({
                "key": p.key, "size": p.size,
                "age_seconds": age(p.last_modified), "days_left": days_left(p.last_modified),
            })).collect::<Vec<_>>(),
        },
        "last_success": run(&s.runs[0]),
        "last_failure": run(&s.runs[1]),
        "quarantined": s.alarms.iter().filter(|q| !q.is_lost()).map(version).collect::<Vec<_>>(),
        "lost": s.alarms.iter().filter(|q| q.is_lost()).map(version).collect::<Vec<_>>(),
        "open_reloads": s.reloads.iter().map(|r| json!({
            "source_key": r.source_key, "etag": r.etag, "requested_at": r.requested_at.to_string(),
        })).collect::<Vec<_>>(),
        "recent_loads": s.loads.iter().map(|l| json!({
            "load_id": l.load_id, "started_at": l.started_at.to_string(),
            "finished_at": l.finished_at.to_string(), "status": l.status.as_str(),
            "files": l.files, "lines": l.lines, "events_loaded": l.events_loaded,
            "duplicates": l.duplicates, "rejects": l.rejects, "conflicts": l.conflicts,
            "blank_lines": l.blank_lines,
        })).collect::<Vec<_>>(),
        "event_types": s.catalog.iter().map(|c| json!({
            "event_name": c.event_name, "first_seen": c.first_seen.to_string(),
            "last_seen": c.last_seen.to_string(), "events": c.events,
            "new": c.first_seen >= since,
            "configured": config.event_types.get(&c.event_name).is_some(),
        })).collect::<Vec<_>>(),
        "check": { "ok": failed.is_empty(), "failed": failed },
    })
}

/// Pending files `status --json` lists one by one (all are counted).
const PENDING_LISTED: usize = 1000;

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

/// Prints `status`.
fn print_status(config: &Config, s: &Snapshot) {
    let (event_files, pending, runs, loads, alarms, written) = (
        s.event_files,
        &s.pending,
        &s.runs,
        &s.loads,
        &s.alarms,
        &s.written,
    );
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
    for (status, run) in [RunStatus::Succeeded, RunStatus::Failed].iter().zip(runs.iter()) {
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
    if let Some(t) = s.newest_source {
        println!(
            "newest source object: {:.1} hours old",
            (chrono::Utc::now() - t).num_seconds() as f64 / 3600.0
        );
    }
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

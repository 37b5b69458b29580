//! Operating it unattended, through the real binary: every run is recorded in
//! `etl_runs` (a failure too, outside the failed load's transaction); `status` shows
//! pending files' age and the days before the source deletes them, the last success and
//! failure; `status --check` exits 5 on an old pending file or a quarantined one; JSON
//! logs carry the run and load ids; redirected logs carry no ANSI codes; passwords never
//! appear.

use std::time::Duration;

use crate::support::local_world::LocalWorld;
use crate::support::run_bin;

fn event(n: u32) -> String {
    format!(
        r#"{{"id":"{n:08x}-0000-4000-8000-000000000000","created_at":"2020-01-13 10:00:00","user_email":"u{n}@x.io","event_name":"e"}}"#
    )
}

/// `(status, error)` of every recorded run, oldest first.
async fn recorded_runs(w: &LocalWorld) -> Vec<(String, Option<String>)> {
    w.pg.client()
        .await
        .query(
            &format!(
                "SELECT status, error FROM {}.etl_runs ORDER BY started_at",
                w.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_is_recorded_and_status_shows_the_last_success_and_failure() {
    let w = LocalWorld::new("ops_runs", "").await;
    w.file("2020/01/13/a.json", &[event(1)], Duration::ZERO);
    w.break_loads().await;
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(4), "{out}");
    let runs = recorded_runs(&w).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].0, "failed");
    assert!(
        runs[0]
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("simulated failure"),
        "{runs:?}"
    );
    let out = w.cli(&["status"], &[]);
    assert!(out.stdout.contains("last succeeded run: none recorded"), "{out}");
    assert!(
        out.stdout.contains("last failed run") && out.stdout.contains("simulated failure"),
        "{out}"
    );

    w.repair_loads().await;
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));
    let runs = recorded_runs(&w).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[1].0.as_str(), runs[1].1.as_deref()), ("succeeded", None));
    let out = w.cli(&["status"], &[]);
    assert!(
        out.stdout.contains("last succeeded run") && out.stdout.contains("(1 loads, 1 files, 1 events)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_check_alerts_on_old_pending_files_and_quarantined_ones() {
    let w = LocalWorld::new("ops_check", "").await;
    // Two days old: past the 24-hour alert, 26 days before a 28-day source deletes it.
    w.file("2020/01/13/old.json", &[event(1)], Duration::from_secs(48 * 3600));
    let out = w.cli(&["status", "--check"], &[]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(
        out.stdout
            .contains("48.0 hours old, 26.0 days before the source deletes it"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("check: FAILED (a pending file is older than 24 hours)"),
        "{out}"
    );
    // A new file is no alarm; the old one loaded, all is well.
    w.file("2020/01/13/new.json", &[event(2)], Duration::ZERO);
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));
    let out = w.cli(&["status", "--check"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("check: ok"), "{out}");
    // A quarantined file is an alarm until a new version loads.
    w.file("2020/01/13/poison.json", &[event(3)], Duration::ZERO);
    let key = "2020/01/13/poison.json";
    assert_eq!(
        w.cli(&["run"], &[("EVENTS_ETL_TEST_POISON_KEY", key)]).code(),
        Some(5)
    );
    let out = w.cli(&["status", "--check"], &[]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(out.stdout.contains("1 file(s) quarantined"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_run_and_load_ids_and_text_logs_no_ansi() {
    let w = LocalWorld::new("ops_logs", "").await;
    w.file(
        "2020/01/13/a.json",
        &[event(1), "not json".into()],
        Duration::ZERO,
    );
    let out = w.cli(&["--log-format", "json", "run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(!lines.is_empty(), "{out}");
    let with = |field: &str| {
        lines
            .iter()
            .filter(|l| {
                l["spans"]
                    .as_array()
                    .is_some_and(|spans| spans.iter().any(|s| s.get(field).is_some()))
            })
            .count()
    };
    assert!(with("run_id") > 0, "no line carries run_id: {out}");
    assert!(with("load_id") > 0, "no line carries load_id: {out}");
    // Redirected (not a terminal): no colour codes.
    w.file(
        "2020/01/13/b.json",
        &[event(2), "not json".into()],
        Duration::ZERO,
    );
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stderr.is_empty());
    assert!(
        !out.stderr.contains('\u{1b}'),
        "ANSI codes in redirected logs: {:?}",
        out.stderr
    );
}

#[test]
fn a_password_in_the_warehouse_url_never_appears() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let cfg = dir.path().join("etl.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"src/\"\n[staging]\nurl = \"staging/\"\n[warehouse.postgres]\n\
             url = \"postgresql://etl:Sup3rSecretPw@127.0.0.1:{port}/postgres?connect_timeout=5\"\n"
        ),
    )
    .unwrap();
    for cmd in ["migrate", "run", "status"] {
        let out = run_bin(&["--config", &cfg.display().to_string(), cmd], &[], dir.path());
        assert_eq!(out.code(), Some(4), "{out}");
        assert!(
            !out.stderr.contains("Sup3rSecretPw") && !out.stdout.contains("Sup3rSecretPw"),
            "{out}"
        );
    }
}

/// `run --metrics-file` and `--report-json`: written at the end of every run, failed or
/// not, with what the tables say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_report_match_the_tables_failed_runs_included() {
    let w = LocalWorld::new("ops_metrics", "").await;
    w.file(
        "2020/01/13/a.json",
        &[event(1), event(1), "not json".into(), "".into()],
        Duration::ZERO,
    );
    let metrics = w.dir.path().join("metrics/events_etl.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    let report = w.dir.path().join("report.json");
    let (m, r) = (metrics.display().to_string(), report.display().to_string());
    let out = w.cli(&["run", "--metrics-file", &m, "--report-json", &r], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let value = |line: &str| {
        text.lines()
            .find(|l| l.starts_with(line) && l[line.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no `{line}` in\n{text}"))[line.len() + 1..]
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(value("events_etl_last_run_success"), 1.0);
    assert_eq!(value("events_etl_events_loaded"), 1.0);
    assert_eq!(value("events_etl_duplicates"), 1.0);
    assert_eq!(value("events_etl_rejects{reason=\"malformed_json\"}"), 1.0);
    assert_eq!(value("events_etl_files_pending"), 0.0);
    assert_eq!(value("events_etl_files_quarantined"), 0.0);
    assert!(value("events_etl_last_success_timestamp_seconds") > 1.7e9);
    for step in ["discover", "stage", "load", "total"] {
        assert!(value(&format!("events_etl_run_duration_seconds{{step=\"{step}\"}}")) >= 0.0);
    }
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            l.starts_with("events_etl_") && l.split(' ').count() == 2,
            "not Prometheus text: {l:?}"
        );
    }
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let load_id: String =
        w.pg.client()
            .await
            .query_one(&format!("SELECT load_id FROM {}.etl_loads", w.schema), &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(rep["status"], "succeeded");
    assert_eq!(rep["load_ids"], serde_json::json!([load_id]));
    assert_eq!(rep["files"][0]["key"], "2020/01/13/a.json");
    assert_eq!(rep["files"][0]["lines"], 4);
    assert_eq!(rep["files"][0]["blank_lines"], 1);
    assert_eq!(rep["rejects_by_reason"]["malformed_json"], 1);
    assert!(rep["duration_seconds"]["total"].as_f64().is_some());

    // A failed run writes them too: success 0, the last success kept, the error named.
    w.file("2020/01/13/b.json", &[event(2)], Duration::ZERO);
    w.break_loads().await;
    let before = value("events_etl_last_success_timestamp_seconds");
    let out = w.cli(&["run", "--metrics-file", &m, "--report-json", &r], &[]);
    assert_eq!(out.code(), Some(4), "{out}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let value = |line: &str| {
        text.lines()
            .find(|l| l.starts_with(line) && l[line.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no `{line}` in\n{text}"))[line.len() + 1..]
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(value("events_etl_last_run_success"), 0.0);
    assert!((value("events_etl_last_success_timestamp_seconds") - before).abs() < 1.0);
    assert_eq!(value("events_etl_files_pending"), 1.0);
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(rep["status"], "failed");
    assert!(
        rep["error"]
            .as_str()
            .unwrap_or_default()
            .contains("simulated failure"),
        "{rep}"
    );
    // Each cause printed once.
    assert_eq!(out.stderr.matches("simulated failure").count(), 1, "{out}");
}

/// `run --dry-run` lists the pending files and what cleaning would make of them, and
/// writes nothing; `run --from --to` loads only the date partitions of that range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_a_date_range_loads_only_its_days() {
    let w = LocalWorld::new("ops_dry", "").await;
    w.file(
        "2020/01/13/a.json",
        &[event(1), "oops".into(), "".into()],
        Duration::ZERO,
    );
    w.file("2020/01/14/b.json", &[event(2)], Duration::ZERO);

    let out = w.cli(&["run", "--dry-run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("dry run: 2 pending file(s)"), "{out}");
    assert!(
        out.stdout
            .contains("total: 4 lines, 2 events (before deduplication), 1 rejects, 1 blank"),
        "{out}"
    );
    assert!(out.stdout.contains("rejects malformed_json: 1"), "{out}");
    for t in ["events", "etl_files", "etl_loads", "event_rejects", "etl_runs"] {
        assert_eq!(w.count(t).await, 0, "the dry run wrote to {t}");
    }
    assert!(
        !w.dir.path().join("staging").exists(),
        "the dry run staged something"
    );

    let out = w.cli(&["run", "--from", "2020-01-14", "--to", "2020-01-14"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("loaded 1 of 1 event files"), "{out}");
    assert_eq!(w.count("events").await, 1);
    let out = w.cli(&["run", "--from", "2020-01-15", "--to", "2020-01-14"], &[]);
    assert_eq!(out.code(), Some(2), "{out}");
    let out = w.cli(&["run", "--from", "2020-01-14"], &[]);
    assert_eq!(out.code(), Some(2), "--from needs --to: {out}");
}

/// `check`: one line per check; exit 0 when all pass, 6 otherwise, naming the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_check_and_exits_6_on_a_problem() {
    let w = LocalWorld::new("ops_check_cmd", "").await;
    w.file("2020/01/13/a.json", &[event(1)], Duration::ZERO);
    let out = w.cli(&["check"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    for what in [
        "ok    configuration",
        "ok    list source",
        "ok    read source object",
        "ok    write and read a probe under staging",
        "ok    warehouse reachable",
        "ok    delete the staging probe",
    ] {
        assert!(out.stdout.contains(what), "{what} missing: {out}");
    }
    assert!(out.stdout.contains("check: all 6 passed"), "{out}");
    assert!(!w
        .dir
        .path()
        .join("staging/_events_etl_check")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));

    // Not migrated: named, with the fix.
    let fresh = w.pg.fresh_schema("ops_check_new").await;
    let out = w.cli(&["check"], &[("EVENTS_ETL__WAREHOUSE__SCHEMA", fresh.as_str())]);
    assert_eq!(out.code(), Some(6), "{out}");
    assert!(out.stdout.contains("FAIL  warehouse reachable"), "{out}");
    assert!(out.stdout.contains("events-etl migrate"), "{out}");
    // A bad configuration is a failed check too.
    let out = w.cli(&["check"], &[("EVENTS_ETL__LOAD__MAX_FILES", "0")]);
    assert_eq!(out.code(), Some(6), "{out}");
    assert!(
        out.stdout.contains("FAIL  configuration") && out.stdout.contains("load.max_files"),
        "{out}"
    );
}

/// `reload --key` and `reload --from/--to` make the next run read files again (ids never
/// overwritten, the ledger keeps both versions, the request recorded); a quarantined
/// file is read again after its fix is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reads_files_again_by_key_or_date_range() {
    let w = LocalWorld::new("ops_reload", "").await;
    let key = "2020/01/13/a.json";
    w.file(key, &[event(1), event(2)], Duration::ZERO);
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));

    let out = w.cli(&["reload", "--key", key, "--key", "2020/01/13/none.json"], &[]);
    // A key the source does not have is refused by name; the others are requested.
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stdout
            .contains(&format!("{key}: 1 version(s) will be read again")),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("none.json: the source no longer has this key"),
        "{out}"
    );
    assert!(out.stderr.contains("2020/01/13/none.json"), "{out}");
    let out = w.cli(&["reload", "--key", key], &[]);
    assert!(
        out.stdout.contains(&format!("{key}: nothing to reload")),
        "already requested: {out}"
    );
    assert!(w.cli(&["status"], &[]).stdout.contains("1 pending"));
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("loaded 1 of 1 event files"), "{out}");
    assert_eq!(w.count("events").await, 2, "ids are never loaded twice");
    assert_eq!(w.count("etl_files").await, 1);
    assert_eq!(w.count("etl_files_history").await, 1);

    let out = w.cli(&["reload", "--from", "2020-01-13", "--to", "2020-01-13"], &[]);
    assert!(
        out.stdout.contains("reload requested for 1 file version(s)"),
        "{out}"
    );
    assert!(w.cli(&["run"], &[]).stdout.contains("loaded 1 of 1"));
    assert_eq!(w.count("etl_files_history").await, 2);
    assert_eq!(w.count("etl_reloads").await, 2);
    assert_eq!(w.count("events").await, 2);

    // A file quarantined by a refused row, read again once the fix is deployed.
    let poison = "2020/01/13/p.json";
    w.file(poison, &[event(3)], Duration::ZERO);
    assert_eq!(
        w.cli(&["run"], &[("EVENTS_ETL_TEST_POISON_KEY", poison)]).code(),
        Some(5)
    );
    assert_eq!(w.count("events").await, 2);
    assert!(w
        .cli(&["reload", "--key", poison], &[])
        .stdout
        .contains("1 version(s)"));
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("events").await, 3);
    // Reloaded but refused again: quarantined again and the request closed, so the next
    // run does not read it once more (no retry loop).
    let bad = "2020/01/13/q.json";
    w.file(bad, &[event(4)], Duration::ZERO);
    let hook = [("EVENTS_ETL_TEST_POISON_KEY", bad)];
    assert_eq!(w.cli(&["run"], &hook).code(), Some(5));
    assert!(w
        .cli(&["reload", "--key", bad], &[])
        .stdout
        .contains("1 version(s)"));
    assert_eq!(w.cli(&["run"], &hook).code(), Some(5));
    let out = w.cli(&["run"], &hook);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("nothing to load"), "{out}");

    let out = w.cli(&["reload"], &[]);
    assert_eq!(out.code(), Some(2), "a key or a date range is required: {out}");
}

/// `status --json`: one object whose fields say what `status` says, and `--check` with
/// it still exits 5 when something needs a person (`check.failed` says what).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_every_field() {
    let w = LocalWorld::new("ops_status_json", "").await;
    w.file(
        "2020/01/13/a.json",
        &[event(1), event(2)],
        Duration::from_secs(3600),
    );
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));
    w.file("2020/01/13/b.json", &[event(3)], Duration::from_secs(30 * 3600));
    let out = w.cli(&["status", "--json", "--check"], &[]);
    assert_eq!(out.code(), Some(5), "the pending file is 30 hours old: {out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["event_files"], 2, "{v}");
    assert_eq!(v["pending"]["count"], 1, "{v}");
    let age = v["pending"]["oldest_age_seconds"].as_i64().unwrap();
    assert!((30 * 3600 - 60..30 * 3600 + 600).contains(&age), "{v}");
    let days_left = v["pending"]["days_left"].as_f64().unwrap();
    assert!((26.7..26.8).contains(&days_left), "28 days less 30 hours: {v}");
    assert_eq!(v["pending"]["files"][0]["key"], "2020/01/13/b.json", "{v}");
    assert!(
        v["newest_source_object_age_seconds"].as_i64().unwrap() >= 3600 - 60,
        "{v}"
    );
    assert_eq!(v["last_success"]["loads"], 1, "{v}");
    assert!(v["last_failure"].is_null(), "{v}");
    assert_eq!(v["recent_loads"][0]["events_loaded"], 2, "{v}");
    assert_eq!(v["recent_loads"][0]["status"], "committed", "{v}");
    assert_eq!(v["quarantined"], serde_json::json!([]), "{v}");
    assert_eq!(v["lost"], serde_json::json!([]), "{v}");
    assert_eq!(v["open_reloads"], serde_json::json!([]), "{v}");
    assert_eq!(v["event_types"][0]["event_name"], "e", "{v}");
    assert_eq!(v["event_types"][0]["events"], 2, "{v}");
    assert_eq!(v["check"]["ok"], false, "{v}");
    assert!(
        v["check"]["failed"][0]
            .as_str()
            .unwrap()
            .contains("older than 24 hours"),
        "{v}"
    );
    assert!(out.stderr.is_empty() || !out.stderr.contains("error"), "{out}");
}

/// `monitor.max_source_silence_hours`: when the producer stops writing, `status
/// --check` exits 5 once the newest source object is older than that; off by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_source_fails_status_check_when_asked() {
    let w = LocalWorld::new("ops_silence", "").await;
    w.file("2020/01/13/a.json", &[event(1)], Duration::from_secs(8 * 3600));
    let metrics = w.dir.path().join("etl.prom");
    let metrics_arg = metrics.display().to_string();
    assert_eq!(
        w.cli(&["run", "--metrics-file", &metrics_arg], &[]).code(),
        Some(0)
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let age: f64 = prom
        .lines()
        .find_map(|l| l.strip_prefix("events_etl_newest_source_object_age_seconds "))
        .unwrap_or_else(|| panic!("{prom}"))
        .parse()
        .unwrap();
    assert!(
        (8.0 * 3600.0 - 60.0..8.0 * 3600.0 + 600.0).contains(&age),
        "{prom}"
    );
    let out = w.cli(&["status", "--check"], &[]);
    assert_eq!(out.code(), Some(0), "off by default: {out}");
    let silence = [("EVENTS_ETL__MONITOR__MAX_SOURCE_SILENCE_HOURS", "6")];
    let out = w.cli(&["status", "--check"], &silence);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(
        out.stdout.contains("no new source object for more than 6 hours"),
        "{out}"
    );
    w.file("2020/01/13/b.json", &[event(2)], Duration::ZERO);
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));
    let out = w.cli(&["status", "--check"], &silence);
    assert_eq!(out.code(), Some(0), "{out}");
}

/// `--report-json -` and `--metrics-file -` write to stdout, for a container whose
/// stdout is collected (the ECS recipe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_can_go_to_stdout() {
    let w = LocalWorld::new("ops_stdout_report", "").await;
    w.file("2020/01/13/a.json", &[event(1)], Duration::ZERO);
    let out = w.cli(&["run", "--report-json", "-", "--metrics-file", "-"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("\"run_id\""), "{out}");
    assert!(out.stdout.contains("events_etl_last_run_success 1"), "{out}");
    assert!(!w.dir.path().join("-").exists(), "no file named -");
}

/// `run --max-files` and `--max-duration` bound one run's work: the first pending files
/// in key order are taken, the rest stays pending (exit 0, counted in the metrics), and
/// the runs together end as one unbounded run does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_runs_leave_the_rest_pending_and_end_as_one_run() {
    let w = LocalWorld::new("ops_budget", "").await;
    let keys = [
        "2020/01/13/a.json",
        "2020/01/13/b.json",
        "2020/01/14/c.json",
        "2020/01/15/d.json",
        "2020/01/15/e.json",
    ];
    for (n, key) in keys.iter().enumerate() {
        w.file(key, &[event(n as u32)], Duration::ZERO);
    }
    let metrics = w.dir.path().join("events_etl.prom");
    let m = metrics.display().to_string();
    let pending_metric = || {
        std::fs::read_to_string(&metrics)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("events_etl_files_pending ").map(str::to_owned))
            .unwrap()
    };

    let out = w.cli(&["run", "--max-files", "2", "--metrics-file", &m], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("loaded 2 of 5 event files"), "{out}");
    assert!(
        out.stdout
            .contains("stopped taking new loads (--max-files 2 reached): 3 file(s) stay pending"),
        "{out}"
    );
    assert_eq!(pending_metric(), "3");
    let loaded: Vec<String> =
        w.pg.client()
            .await
            .query(
                &format!("SELECT source_key FROM {}.etl_files ORDER BY 1", w.schema),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(loaded.len(), 2);
    assert!(
        loaded[0].ends_with(keys[0]) && loaded[1].ends_with(keys[1]),
        "{loaded:?}"
    );

    let out = w.cli(&["run", "--max-duration", "0s", "--metrics-file", &m], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("stopped taking new loads (--max-duration reached): 3 file(s) stay pending"),
        "{out}"
    );
    assert_eq!(w.count("events").await, 2);
    assert_eq!(pending_metric(), "3");

    for bad in [["--max-files", "0"], ["--max-duration", "soon"]] {
        let out = w.cli(&["run", bad[0], bad[1]], &[]);
        assert_eq!(out.code(), Some(2), "{out}");
    }

    let out = w.cli(&["run", "--max-files", "100", "--max-duration", "1h"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("loaded 3 of 5 event files"), "{out}");
    assert!(!out.stdout.contains("stopped taking"), "{out}");
    assert_eq!(w.count("events").await, 5);
    assert_eq!(w.count("etl_files").await, 5);
    assert_eq!(w.count("etl_quarantine").await, 0);
    let out = w.cli(&["run"], &[]);
    assert!(out.stdout.contains("nothing to load: 5 event files"), "{out}");
}

//! Each failure is handled by its class, decided where it arises, through the real binary
//! on the in-process S3 server, against PostgreSQL and the Redshift stand-in:
//! - transient (a statement timeout): nothing is set aside, the next run ends as one
//!   clean run;
//! - systemic (every GET denied): the run fails with exit 3, nothing is set aside;
//! - permanent for one object (one GET denied, an archived object): that version is
//!   quarantined, an alarm that clears when a new version or a reload of it loads;
//! - a file gone between listing and reading: recorded as lost until resolved;
//! - keys that SQL could misread (quotes, backslashes, `{...}`, `$$`, `;`, `--`, any
//!   UTF-8) load once, are found settled, and can be reloaded and quarantined.

use crate::quarantine::{event, lines, World, BUCKET};
use crate::support::ObjectPolicy;

fn day_key(name: &str) -> String {
    format!("events/2020/01/13/{name}")
}

/// A statement timeout on the loader's session (as `ALTER ROLE ... SET
/// statement_timeout` gives every session) cancels the load: PostgreSQL reports it with
/// the COPY's `line N` context, yet it is transient. Nothing is set aside, and once the
/// timeout is lifted the next run loads everything, as one clean run would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_sets_nothing_aside() {
    let w = World::new("fc_timeout", false).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    const FILES: u32 = 8;
    const PER_FILE: u32 = 6000;
    for f in 0..FILES {
        w.s3.put(
            BUCKET,
            &day_key(&format!("f{f}.json")),
            lines(f * PER_FILE..(f + 1) * PER_FILE),
        )
        .await;
    }
    let timed_out = format!("{}?options=-c%20statement_timeout%3D25ms", w.pg.url());
    let out = w.cli(&["run"], &[("EVENTS_ETL__WAREHOUSE__POSTGRES__URL", &timed_out)]);
    assert_eq!(out.code(), Some(4), "{out}");
    assert!(
        out.stderr.contains("57014"),
        "the timeout's SQLSTATE is named: {out}"
    );
    assert!(out.stderr.contains("transient"), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_quarantine").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 0);

    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        w.count("SELECT count(*) FROM {s}.events").await,
        i64::from(FILES * PER_FILE)
    );
    assert_eq!(
        w.count("SELECT count(*) FROM {s}.etl_files").await,
        i64::from(FILES)
    );
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_quarantine").await, 0);
    assert_eq!(w.cli(&["status", "--check"], &[]).code(), Some(0));
}

/// Every GET denied (a changed task role, a KMS grant not yet propagated): systemic. The
/// run fails with exit 3 naming the likely cause and sets nothing aside, whether the
/// files come in one load or one file a load; once access is back, the next run loads
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_denied_fails_the_run_and_sets_nothing_aside() {
    let w = World::new("fc_denied_all", false).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let keys: Vec<String> = (0..9).map(|f| day_key(&format!("f{f}.json"))).collect();
    for (f, key) in keys.iter().enumerate() {
        let f = f as u32;
        w.s3.put(BUCKET, key, lines(f * 3..f * 3 + 3)).await;
    }
    w.s3.set_bucket_policy(BUCKET, Some(ObjectPolicy::Denied));
    for max_files in ["1000", "1"] {
        let out = w.cli(&["run"], &[("EVENTS_ETL__LOAD__MAX_FILES", max_files)]);
        assert_eq!(out.code(), Some(3), "max_files {max_files}: {out}");
        assert!(out.stderr.contains("AccessDenied"), "{out}");
        assert!(out.stderr.contains("systemic"), "{out}");
        assert!(out.stderr.contains("s3:GetObject"), "the likely cause: {out}");
        assert_eq!(w.count("SELECT count(*) FROM {s}.etl_quarantine").await, 0);
        assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files").await, 0);
    }
    w.s3.set_bucket_policy(BUCKET, None);
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 27);
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files").await, 9);
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_quarantine").await, 0);
}

/// One GET denied among nine: that file alone is quarantined (exit 5) and `status
/// --check` alarms; once it is readable, `reload --key` loads it and the alarm clears.
async fn one_denied_file_is_quarantined_until_reloaded(redshift: bool) {
    let w = World::new(if redshift { "fc_denied_rs" } else { "fc_denied_pg" }, redshift).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let denied = day_key("f4.json");
    for f in 0..9u32 {
        w.s3.put(BUCKET, &day_key(&format!("f{f}.json")), lines(f * 3..f * 3 + 3))
            .await;
    }
    w.s3.set_policy(BUCKET, &denied, Some(ObjectPolicy::Denied));
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(
        out.stdout.contains(&denied) && out.stdout.contains("unreadable"),
        "{out}"
    );
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 24);
    let check = w.cli(&["status", "--check"], &[]);
    assert_eq!(check.code(), Some(5), "{check}");
    assert!(check.stdout.contains("1 file(s) quarantined"), "{check}");
    let list = w.cli(&["quarantine", "list"], &[]);
    assert_eq!(list.code(), Some(0), "{list}");
    assert!(list.stdout.contains(&denied), "{list}");

    w.s3.set_policy(BUCKET, &denied, None);
    let out = w.cli(&["reload", "--key", &denied], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("1 version(s)"), "{out}");
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 27);
    let check = w.cli(&["status", "--check"], &[]);
    assert_eq!(
        check.code(),
        Some(0),
        "the alarm cleared when the reload loaded: {check}"
    );
    let list = w.cli(&["quarantine", "list", "--all"], &[]);
    assert!(
        list.stdout.contains("resolved") && list.stdout.contains("loaded"),
        "{list}"
    );
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_denied_file_is_quarantined_until_reloaded_on_postgres() {
    one_denied_file_is_quarantined_until_reloaded(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_denied_file_is_quarantined_until_reloaded_on_redshift() {
    one_denied_file_is_quarantined_until_reloaded(true).await;
}

/// An archived object is quarantined; a new version of it loads and clears the alarm. A
/// restored object, which S3 still lists in its archive class, loads after `reload
/// --key`: the object is read, the listing's storage class is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_objects_clear_by_a_new_version_or_a_restore() {
    let w = World::new("fc_archived", false).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let (a, b) = (day_key("a.json"), day_key("b.json"));
    w.s3.put(BUCKET, &day_key("ok.json"), lines(0..2)).await;
    w.s3.put(BUCKET, &a, lines(2..4)).await;
    w.s3.set_policy(BUCKET, &a, Some(ObjectPolicy::Archived));
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(out.stdout.contains("archived"), "{out}");
    assert_eq!(w.cli(&["status", "--check"], &[]).code(), Some(5));

    // Uploaded again: a new version in the standard class.
    w.s3.set_policy(BUCKET, &a, None);
    w.s3.put(BUCKET, &a, lines(2..5)).await;
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 5);
    let check = w.cli(&["status", "--check"], &[]);
    assert_eq!(check.code(), Some(0), "{check}");

    w.s3.put(BUCKET, &b, lines(10..12)).await;
    w.s3.set_policy(BUCKET, &b, Some(ObjectPolicy::Archived));
    assert_eq!(w.cli(&["run"], &[]).code(), Some(5));
    w.s3.set_policy(BUCKET, &b, Some(ObjectPolicy::Restored));
    let out = w.cli(&["reload", "--key", &b], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "the restored object loads: {out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 7);
    let check = w.cli(&["status", "--check"], &[]);
    assert_eq!(check.code(), Some(0), "{check}");
}

/// A file listed, then gone before it is read (expiry racing a backlog): recorded as
/// lost, named by `status`, counted by the metric, and `status --check` exits 5 until an
/// operator resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_gone_before_it_is_read_is_recorded_as_lost() {
    let w = World::new("fc_vanished", false).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let gone = day_key("gone.json");
    w.s3.put(BUCKET, &day_key("ok.json"), lines(0..2)).await;
    w.s3.put(BUCKET, &gone, lines(2..4)).await;
    w.s3.set_policy(BUCKET, &gone, Some(ObjectPolicy::Gone));
    let metrics = tempfile::NamedTempFile::new().unwrap();
    let metrics_path = metrics.path().display().to_string();
    let out = w.cli(&["run", "--metrics-file", &metrics_path], &[]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(
        out.stdout.contains(&gone) && out.stdout.contains("vanished"),
        "{out}"
    );
    let prom = std::fs::read_to_string(metrics.path()).unwrap();
    assert!(prom.contains("events_etl_files_lost 1"), "{prom}");
    assert!(prom.contains("events_etl_files_quarantined 0"), "{prom}");
    assert_eq!(
        w.count("SELECT count(*) FROM {s}.etl_quarantine WHERE reason = 'vanished'")
            .await,
        1
    );

    let status = w.cli(&["status"], &[]);
    assert!(
        status.stdout.contains("lost files") && status.stdout.contains(&gone),
        "{status}"
    );
    let check = w.cli(&["status", "--check"], &[]);
    assert_eq!(check.code(), Some(5), "{check}");
    assert!(check.stdout.contains("1 file(s) lost"), "{check}");
    // A rerun does not read it again, and the alarm stands.
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));
    assert_eq!(w.cli(&["status", "--check"], &[]).code(), Some(5));

    let out = w.cli(
        &[
            "quarantine",
            "resolve",
            &gone,
            "--note",
            "expired; accepted",
            "--by",
            "ops",
        ],
        &[],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("resolved 1 version(s)"), "{out}");
    let check = w.cli(&["status", "--check"], &[]);
    assert_eq!(check.code(), Some(0), "{check}");
    let list = w.cli(&["quarantine", "list", "--all"], &[]);
    assert!(
        list.stdout.contains("by ops") && list.stdout.contains("expired; accepted"),
        "{list}"
    );
    let out = w.cli(&["quarantine", "resolve", &gone, "--note", "again"], &[]);
    assert!(out.stdout.contains("nothing to resolve"), "{out}");
}

/// Keys that SQL text could misread. Each loads once; the rerun finds nothing pending;
/// `reload --key` reads each again (its ids are duplicates then); one of them denied is
/// quarantined and reloaded by key.
async fn keys_sql_could_misread(redshift: bool) {
    let w = World::new(if redshift { "fc_keys_rs" } else { "fc_keys_pg" }, redshift).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let names = [
        "it's.json",
        "back\\slash.json",
        "back\\'quote.json",
        "{offset}-{limit}.json",
        "{key_range}{source_key}.json",
        "{etag}{schema}.json",
        "$$dollar$$;semi--dash.json",
        "ünïcødé-événement.json",
        "zz-{offset}.json",
    ];
    let keys: Vec<String> = names.iter().map(|n| day_key(n)).collect();
    for (i, key) in keys.iter().enumerate() {
        let i = i as u32;
        w.s3.put(BUCKET, key, lines(i * 2..i * 2 + 2)).await;
    }
    let n = keys.len() as i64;
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 2 * n);
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files").await, n);
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("nothing to load"), "{out}");

    for key in &keys {
        let out = w.cli(&["reload", "--key", key], &[]);
        assert_eq!(out.code(), Some(0), "{out}");
        assert!(out.stdout.contains("1 version(s)"), "{key}: {out}");
    }
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 2 * n);
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files_history").await, n);
    assert!(w.cli(&["run"], &[]).stdout.contains("nothing to load"));

    // Quarantined, then reloaded by key.
    let odd = day_key("odd\\'{offset}.json");
    w.s3.put(BUCKET, &odd, event(900) + "\n").await;
    w.s3.set_policy(BUCKET, &odd, Some(ObjectPolicy::Denied));
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(5), "{out}");
    let list = w.cli(&["quarantine", "list"], &[]);
    assert!(list.stdout.contains(&odd), "{list}");
    w.s3.set_policy(BUCKET, &odd, None);
    let out = w.cli(&["reload", "--key", &odd], &[]);
    assert!(out.stdout.contains("1 version(s)"), "{out}");
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 2 * n + 1);
    assert_eq!(w.cli(&["status", "--check"], &[]).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_sql_could_misread_load_on_postgres() {
    keys_sql_could_misread(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_sql_could_misread_load_on_redshift() {
    keys_sql_could_misread(true).await;
}

/// A load that fails without naming a file (a Redshift COPY error with no
/// SYS_LOAD_ERROR_DETAIL row) in the run's first chunk: the chunk is narrowed within the
/// run, so its other files and every later chunk load; the file that fails alone is
/// quarantined (`refused`) and, once it loads, its alarm clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_failing_without_naming_a_file_does_not_stop_the_rest() {
    let w = World::new("fc_narrow_rs", true).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let poison = day_key("f1.json");
    for f in 0..8u32 {
        w.s3.put(BUCKET, &day_key(&format!("f{f}.json")), lines(f * 3..f * 3 + 3))
            .await;
    }
    let api = w._api.as_ref().expect("stand-in");
    api.fail_copy_of_rows_containing(&poison, "ERROR: XX000: internal error, node 3 lost during COPY");
    let out = w.cli(&["run"], &[("EVENTS_ETL__LOAD__MAX_FILES", "4")]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(out.stderr.contains("loading its two halves"), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 21);
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files").await, 7);
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM {{s}}.etl_quarantine WHERE source_key = '{poison}' AND reason = 'refused'"
        ))
        .await,
        1
    );
    assert_eq!(w.cli(&["status", "--check"], &[]).code(), Some(5));

    api.clear_failures();
    assert_eq!(w.cli(&["reload", "--key", &poison], &[]).code(), Some(0));
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 24);
    assert_eq!(w.cli(&["status", "--check"], &[]).code(), Some(0));
}

/// When the only load of a run fails without naming a file, nothing shows the failure
/// is the file's: the run fails (exit 4) and nothing is set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_unattributed_failure_sets_nothing_aside() {
    let w = World::new("fc_narrow_alone", true).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let only = day_key("only.json");
    w.s3.put(BUCKET, &only, lines(0..3)).await;
    let api = w._api.as_ref().expect("stand-in");
    api.fail_copy_of_rows_containing(&only, "ERROR: XX000: internal error");
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(4), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_quarantine").await, 0);
    api.clear_failures();
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 3);
}

/// Two files with a staged row the warehouse refuses (a test hook) among five:
/// both are set aside, each counted once, and the other three load in the same run.
/// Redshift's COPYs skip refused rows (MAXERROR) and the load error view names both
/// files at once: one failed pass, then one that commits. PostgreSQL copies again
/// without each refused file inside one transaction: one load, nothing staged again.
async fn refused_files_are_set_aside_in_one_pass(redshift: bool) {
    let w = World::new(
        if redshift {
            "fc_refused_rs"
        } else {
            "fc_refused_pg"
        },
        redshift,
    )
    .await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let (p1, p2) = (day_key("f1.json"), day_key("f3.json"));
    for f in 0..5u32 {
        w.s3.put(BUCKET, &day_key(&format!("f{f}.json")), lines(f * 3..f * 3 + 3))
            .await;
    }
    let report = tempfile::NamedTempFile::new().unwrap();
    let report_path = report.path().display().to_string();
    let poison = format!("{p1},{p2}");
    let out = w.cli(
        &["run", "--report-json", &report_path],
        &[("EVENTS_ETL_TEST_POISON_KEY", &poison)],
    );
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(out.stdout.contains("quarantined 2 file(s)"), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 9);
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files").await, 3);
    assert_eq!(
        w.count("SELECT count(*) FROM {s}.etl_quarantine WHERE reason = 'refused'")
            .await,
        2
    );
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_loads").await, 1);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    let quarantined = json["quarantined"].as_array().expect("quarantined");
    assert_eq!(quarantined.len(), 2, "each set-aside file once: {json}");
    assert!(w.s3.list(BUCKET, "staging/").await.is_empty());
    if let Some(api) = w._api.as_ref() {
        let copies = api
            .sent_sql()
            .iter()
            .filter(|s| s.starts_with("COPY") && s.contains("stage_files"))
            .count();
        assert_eq!(copies, 2, "one refused pass, one that commits");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_files_are_set_aside_in_one_pass_on_postgres() {
    refused_files_are_set_aside_in_one_pass(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_files_are_set_aside_in_one_pass_on_redshift() {
    refused_files_are_set_aside_in_one_pass(true).await;
}

/// `reload --key` of a key the source no longer has is refused by name (exit 2); a
/// range reload opens every settled version of those days in one statement, `status`
/// lists the open requests, and a requested version that has left the source is closed
/// by the next run instead of staying open forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_of_versions_the_source_no_longer_has_do_not_stay_open() {
    let w = World::new("fc_reload_gone", true).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let (a, b, c) = (day_key("a.json"), day_key("b.json"), "events/2020/01/14/c.json");
    w.s3.put(BUCKET, &a, lines(0..2)).await;
    w.s3.put(BUCKET, &b, lines(2..4)).await;
    w.s3.put(BUCKET, c, lines(4..6)).await;
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));

    let out = w.cli(&["reload", "--key", "events/2020/01/13/never.json"], &[]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("events/2020/01/13/never.json"), "{out}");

    let out = w.cli(&["reload", "--from", "2020-01-13", "--to", "2020-01-13"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout.contains("reload requested for 2 file version(s)"),
        "{out}"
    );
    let status = w.cli(&["status"], &[]);
    assert!(
        status
            .stdout
            .contains("open reload requests (read again by the next run): 2"),
        "{status}"
    );
    // b expires before the next run: its request is closed, a is read again.
    w.s3.delete(BUCKET, &b).await;
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("loaded 1 of 2 event files"), "{out}");
    assert_eq!(
        w.count("SELECT count(*) FROM {s}.etl_reloads WHERE load_id IS NULL")
            .await,
        0
    );
    assert_eq!(
        w.count("SELECT count(*) FROM {s}.etl_reloads WHERE load_id = 'gone'")
            .await,
        1
    );
    assert!(!w.cli(&["status"], &[]).stdout.contains("open reload requests"));
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 6);
}

/// A version a failed run listed and left pending, gone from the source before the next
/// run (the 28-day expiry racing a stalled backlog): the next run records it as lost,
/// `status` names it and `status --check` exits 5; a version overwritten meanwhile (same
/// key, new ETag) is not lost, its new version loads.
async fn a_pending_file_that_leaves_the_listing_is_recorded_as_lost(redshift: bool) {
    let w = World::new(if redshift { "fc_left_rs" } else { "fc_left_pg" }, redshift).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let (a, b, c) = (day_key("a.json"), day_key("b.json"), day_key("c.json"));
    w.s3.put(BUCKET, &a, lines(0..2)).await;
    w.s3.put(BUCKET, &b, lines(2..4)).await;
    w.s3.put(BUCKET, &c, lines(4..6)).await;
    match w._api.as_ref() {
        Some(api) => api.fail_when_sql_contains(
            &format!("INSERT INTO {}.etl_loads", w.schema),
            "ERROR: permission denied for relation etl_loads",
        ),
        None => {
            w.pg.break_load_recording(&w.schema, "permission denied for etl_loads")
                .await
        }
    }
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(4), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_pending").await, 3);

    w.s3.delete(BUCKET, &b).await;
    w.s3.put(BUCKET, &c, lines(4..7)).await;
    match w._api.as_ref() {
        Some(api) => api.clear_failures(),
        None => w.pg.repair_load_recording(&w.schema).await,
    }
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(
        out.stdout.contains(&b) && out.stdout.contains("vanished"),
        "{out}"
    );
    assert!(
        !out.stdout.contains(&format!("{c} (")),
        "overwritten, not lost: {out}"
    );
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 5);
    assert_eq!(
        w.count("SELECT count(*) FROM {s}.etl_quarantine WHERE reason = 'vanished'")
            .await,
        1
    );
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_pending").await, 0);
    let status = w.cli(&["status", "--check"], &[]);
    assert_eq!(status.code(), Some(5), "{status}");
    assert!(
        status.stdout.contains("lost files") && status.stdout.contains(&b),
        "{status}"
    );
    assert_eq!(w.cli(&["run"], &[]).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_file_that_leaves_the_listing_is_recorded_as_lost_on_postgres() {
    a_pending_file_that_leaves_the_listing_is_recorded_as_lost(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_file_that_leaves_the_listing_is_recorded_as_lost_on_redshift() {
    a_pending_file_that_leaves_the_listing_is_recorded_as_lost(true).await;
}

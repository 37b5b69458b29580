//! The Redshift Data API adapter's own failure modes, against the Data API stand-in:
//! a statement failing mid-batch, a statement outliving the timeout (or finishing just
//! as it expires), throttling, a failed COPY explained from SYS_LOAD_ERROR_DETAIL; and
//! the Redshift grammar gate over every statement the adapter sends.
//! (What every warehouse must do is in `warehouse_conformance.rs`, which runs this
//! adapter too.)

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use events_etl::clean::Cleaner;
use events_etl::config::{RedshiftConfig, RedshiftTarget};
use events_etl::read::Input;
use events_etl::stage::clean_object;
use events_etl::stage::{FileRow, StageWriter, StagedLoad};
use events_etl::store::s3::S3Store;
use events_etl::store::Place;
use events_etl::warehouse::redshift::Redshift;
use events_etl::warehouse::{LoadRow, Warehouse, WarehouseError};
use support::redshift_data::{redshift_data, DataApiServer, TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER};

const BUCKET: &str = "adapter-staging";

struct Fixture {
    pg: &'static support::PgServer,
    s3: support::S3Server,
    api: DataApiServer,
    staging: Place,
    schema: String,
}

fn config(timeout: Duration) -> RedshiftConfig {
    RedshiftConfig {
        target: RedshiftTarget::ClusterDbUser {
            cluster_identifier: TEST_CLUSTER.into(),
            db_user: TEST_DB_USER.into(),
        },
        database: TEST_DATABASE.into(),
        iam_role: "default".into(),
        copy_region: Some("us-east-1".into()),
        statement_timeout: timeout,
        // The stand-in answers in milliseconds: poll it often.
        max_poll_interval: Duration::from_millis(100),
    }
}

async fn fixture(label: &str) -> Fixture {
    let pg = support::postgres().await;
    let s3 = support::s3().await;
    s3.create_bucket(BUCKET).await;
    let api = redshift_data(s3.client().await).await;
    let schema = pg.fresh_schema(label).await;
    let staging = Place {
        store: Arc::new(S3Store::with_client(s3.client().await, BUCKET)),
        prefix: "staging/".into(),
    };
    Fixture {
        pg,
        s3,
        api,
        staging,
        schema,
    }
}

impl Fixture {
    /// The adapter, with the SDK's retry backoff shortened so that throttling and lost
    /// responses cost milliseconds (the retry policy itself is the product's).
    async fn adapter(&self, timeout: Duration) -> Redshift {
        Redshift::with_client(
            self.api.client().await,
            &config(timeout),
            &self.schema,
            self.staging.clone(),
        )
        .with_initial_backoff(Duration::from_millis(1))
    }

    async fn stage(&self, load_id: &str, lines: &[String]) -> StagedLoad {
        let cleaner = Cleaner::new(chrono::Utc::now());
        let mut w = StageWriter::new(self.staging.clone(), load_id, 1 << 20);
        let body = lines.join("\n").into_bytes();
        let size = body.len() as u64;
        let key = format!("events/{load_id}.json");
        let cleaned = clean_object(&cleaner, &key, &key, Input::Bytes(body), &mut w)
            .await
            .expect("clean");
        w.file(&FileRow::new(&key, "etag-1", size, &cleaned.tally))
            .expect("file row");
        w.finish().await.expect("finish")
    }

    async fn count(&self, table: &str) -> i64 {
        self.pg
            .client()
            .await
            .query_one(&format!("SELECT count(*) FROM {}.{table}", self.schema), &[])
            .await
            .expect("count")
            .get(0)
    }

    async fn assert_nothing_recorded(&self) {
        for t in [
            "events",
            "event_rejects",
            "etl_files",
            "etl_loads",
            "stage_events",
            "stage_files",
        ] {
            assert_eq!(
                self.count(t).await,
                0,
                "{t} is not empty\n{}\n{}",
                self.pg.dump(&self.schema).await,
                self.api.log()
            );
        }
    }
}

fn event(n: u32) -> String {
    format!(
        r#"{{"id": "{n:08x}-0000-4000-8000-000000000000", "created_at": "2024-01-01 00:00:{:02}", "user_email": "u{n}@x.io", "event_name": "page_visit", "metadata": {{"n": {n}}}}}"#,
        n % 60
    )
}

fn started() -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2024, 6, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("date")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_statement_mid_batch_commits_nothing_and_is_named() {
    let f = fixture("rs_fail").await;
    let wh = f.adapter(Duration::from_secs(60)).await;
    wh.migrate().await.expect("migrate");
    let staged = f.stage("load-1", &[event(1), event(2), "junk".into()]).await;

    f.api.fail_when_sql_contains(
        "FROM load_classes\nWHERE class = 'insert';",
        "simulated: disk full on slice 3",
    );
    let e = wh.load(&staged, started()).await.expect_err("the insert fails");
    match &e {
        WarehouseError::Statement {
            statement, message, ..
        } => {
            assert_eq!(statement, "insert_events", "{e}");
            assert!(message.contains("simulated: disk full on slice 3"), "{e}");
            assert!(message.contains("sub-statement"), "{e}");
        }
        other => panic!("expected a Statement error, got {other:?}"),
    }
    // The COPYs before the insert ran, but the batch is one transaction.
    f.assert_nothing_recorded().await;

    f.api.clear_failures();
    let row = wh
        .load(&staged, started())
        .await
        .expect("load")
        .expect("a load row");
    assert_eq!((row.files, row.events_loaded, row.rejects), (1, 2, 1));
    assert_eq!(f.count("events").await, 2);
}

/// A migrated fixture, an adapter whose statements time out after 1 s, and one staged
/// load of one event.
async fn short_timeout(label: &str) -> (Fixture, Redshift, StagedLoad) {
    let f = fixture(label).await;
    f.adapter(Duration::from_secs(60))
        .await
        .migrate()
        .await
        .expect("migrate");
    let staged = f.stage("load-1", &[event(1)]).await;
    let wh = f.adapter(Duration::from_secs(1)).await;
    (f, wh, staged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_past_the_timeout_is_cancelled_and_commits_nothing() {
    let (f, wh, staged) = short_timeout("rs_timeout").await;
    // Held far past the timeout: only the cancel can end it early.
    f.api.delay_statements(Duration::from_secs(600));
    let e = wh.load(&staged, started()).await.expect_err("times out");
    match &e {
        WarehouseError::Timeout { cancelled, secs, .. } => {
            assert!(*cancelled, "{e}");
            assert_eq!(*secs, 1);
        }
        other => panic!("expected a Timeout, got {other:?}"),
    }
    assert!(e.to_string().contains("nothing was committed"), "{e}");
    assert_eq!(f.api.calls("CancelStatement"), 1);
    f.api.delay_statements(Duration::ZERO);
    // The adapter reports a timeout only once the batch is seen ABORTED: it can no
    // longer commit.
    assert!(f.api.log().contains("ABORTED (batch)"), "{}", f.api.log());
    f.assert_nothing_recorded().await;

    let row = wh.load(&staged, started()).await.expect("load").expect("row");
    assert_eq!(row.events_loaded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_are_retried() {
    let f = fixture("rs_throttle").await;
    let wh = f.adapter(Duration::from_secs(60)).await;
    wh.migrate().await.expect("migrate");
    let staged = f.stage("load-1", &[event(1), event(2)]).await;

    let before = f.api.call_counts().values().sum::<u64>();
    f.api.throttle_next(4);
    let row = wh
        .load(&staged, started())
        .await
        .expect("load despite throttling")
        .expect("row");
    assert_eq!(row.events_loaded, 2);
    let after = f.api.call_counts().values().sum::<u64>();
    // The load itself needs at least a batch, a describe and the summary's result page;
    // four throttled answers come on top.
    assert!(after - before >= 3 + 4, "calls: {:?}", f.api.call_counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_region_and_default_role_reach_the_copy() {
    let f = fixture("rs_copy_opts").await;
    let wh = f.adapter(Duration::from_secs(60)).await;
    wh.migrate().await.expect("migrate");
    let staged = f.stage("load-1", &[event(7)]).await;
    wh.load(&staged, started()).await.expect("load");
    let log = f.api.log();
    assert!(log.contains("IAM_ROLE default"), "{log}");
    assert!(log.contains("REGION 'us-east-1'"), "{log}");
    assert!(log.contains("MANIFEST"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_finishing_as_its_timeout_expires_is_a_success() {
    let (f, wh, staged) = short_timeout("rs_late").await;
    // The batch waits until the cancel arrives, then commits: what happens when it
    // finishes between the adapter's last poll and its CancelStatement.
    f.api.delay_statements(Duration::from_secs(600));
    f.api.cancel_too_late(true);
    let row = wh
        .load(&staged, started())
        .await
        .expect("a batch that committed is a success, not a timeout")
        .expect("a load row");
    assert_eq!(row.events_loaded, 1);
    assert_eq!(f.api.calls("CancelStatement"), 1);
    assert_eq!(f.count("events").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_names_the_file_line_and_reason() {
    let f = fixture("rs_copy_err").await;
    let wh = f.adapter(Duration::from_secs(60)).await;
    wh.migrate().await.expect("migrate");
    let staged = f.stage("load-1", &[event(1), event(2), event(3)]).await;
    // Damage the staged events part: its second line is no JSON object any more.
    let manifest: serde_json::Value =
        serde_json::from_slice(&f.s3.get(BUCKET, &staged.events_manifest).await).expect("manifest");
    let url = manifest["entries"][0]["url"]
        .as_str()
        .expect("part url")
        .to_owned();
    let key = url
        .strip_prefix(&format!("s3://{BUCKET}/"))
        .expect("part in the bucket")
        .to_owned();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut gz,
        b"{\"event_id\":\"00000001-0000-4000-8000-000000000000\"}\n{\"event_id\": oops\n{}\n",
    )
    .expect("gzip");
    f.s3.put(BUCKET, &key, gz.finish().expect("gzip")).await;

    let e = wh.load(&staged, started()).await.expect_err("the COPY fails");
    let text = e.to_string();
    assert!(text.contains("copy_events"), "{text}");
    assert!(text.contains("SYS_LOAD_ERROR_DETAIL"), "{text}");
    assert!(
        text.contains(&url) && text.contains("line 2"),
        "names the part and line: {text}"
    );
    assert!(text.contains("Invalid JSON"), "says why: {text}");
    f.assert_nothing_recorded().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_say_transaction_mode() {
    let f = fixture("rs_mode").await;
    let wh = f.adapter(Duration::from_secs(60)).await;
    wh.migrate().await.expect("migrate");
    let staged = f.stage("load-1", &[event(1)]).await;
    wh.load(&staged, started()).await.expect("load");
    let modes = f.api.execution_modes();
    assert!(!modes.is_empty());
    assert!(
        modes.iter().all(|m| m.as_deref() == Some("TRANSACTION")),
        "{modes:?}"
    );
}

/// Two `migrate` runs at once: each migration is applied once, and both succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrates_apply_each_migration_once() {
    let f = fixture("rs_migrate2").await;
    let (a, b) = (
        f.adapter(Duration::from_secs(60)).await,
        f.adapter(Duration::from_secs(60)).await,
    );
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.expect("first migrate"), rb.expect("second migrate"));
    let all = events_etl::migrate::migrations(
        events_etl::migrate::Dialect::Redshift.dir(),
        events_etl::migrate::Dialect::Redshift.files(),
    )
    .expect("migrations");
    let mut applied: Vec<i64> = ra.iter().chain(&rb).map(|m| m.version).collect();
    applied.sort();
    assert_eq!(
        applied,
        all.iter().map(|m| m.version).collect::<Vec<_>>(),
        "{}",
        f.api.log()
    );
    assert_eq!(f.count("schema_migrations").await, all.len() as i64);
}

/// The grammar gate: every statement the adapter sends (migrate with every migration,
/// the load batch with all three COPYs, discovery, status, the COPY error lookup),
/// exactly as sent, uses no Redshift reserved word as a name and parses with sqlfluff's
/// Redshift grammar (`scripts/redshift-grammar.sh`, pinned, installed on first use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_sent_parses_as_redshift() {
    use support::redshift_rules::check_reserved;
    let f = fixture("rs_grammar").await;
    let wh = f.adapter(Duration::from_secs(60)).await;
    wh.migrate().await.expect("migrate");
    // migrate's typed views: created with a column of every type, then one replaced and
    // one dropped.
    let all_types = support::event_types(&[
        (
            "page_visit",
            &[
                ("path", "text"),
                ("n", "bigint"),
                ("x", "double"),
                ("b", "boolean"),
                ("t", "timestamp"),
            ],
        ),
        ("message_saved", &[("message_id", "bigint")]),
    ]);
    assert_eq!(wh.sync_views(&all_types).await.expect("views").len(), 2);
    let fewer = support::event_types(&[("page_visit", &[("path", "text")])]);
    assert_eq!(wh.sync_views(&fewer).await.expect("views").len(), 2);
    let staged = f.stage("load-1", &[event(1), event(2), "junk".into()]).await;
    wh.load(&staged, started()).await.expect("load").expect("row");
    wh.event_catalog().await.expect("event_catalog");
    wh.probe_copy(&staged.files_manifest)
        .await
        .expect("check's COPY probe");
    wh.recorded_versions(&["events/load-1.json".into(), "events/z'.json".into()])
        .await
        .expect("recorded_versions");
    wh.recent_loads(10).await.expect("recent_loads");
    let q = events_etl::warehouse::Quarantined::new(
        "events/q'.json",
        "etag-q",
        10,
        events_etl::warehouse::QuarantineReason::Unreadable,
        "AccessDenied: it's C:\\path",
        started(),
    );
    wh.quarantine(&[q]).await.expect("quarantine");
    assert_eq!(wh.quarantined(10, false).await.expect("quarantined").len(), 1);
    // Keyset pages of one row, past a key with a quote: every settled version once.
    let paged = f.adapter(Duration::from_secs(60)).await.with_page_rows(1);
    let mut got: Vec<String> = paged
        .recorded_versions(&["events/load-1.json".into(), "events/q'.json".into()])
        .await
        .expect("recorded_versions, paged")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    got.sort();
    assert_eq!(got, ["events/load-1.json", "events/q'.json"]);
    assert_eq!(
        wh.resolve_quarantine("events/q'.json", "ops\\me", "won't fix: C:\\x", started())
            .await
            .expect("resolve_quarantine"),
        1
    );
    let all = wh.quarantined(10, true).await.expect("quarantined, resolved too");
    assert_eq!(all[0].resolution.as_deref(), Some("won't fix: C:\\x"));
    assert_eq!(all[0].resolved_by.as_deref(), Some("ops\\me"));
    assert!(wh.quarantined(10, false).await.expect("quarantined").is_empty());
    wh.recorded_versions(&["events/a\\b'{offset}.json".into(), "events/z.json".into()])
        .await
        .expect("recorded_versions with a backslash");
    let run = events_etl::warehouse::RunRow {
        run_id: "run-1".into(),
        started_at: started(),
        finished_at: started(),
        status: events_etl::warehouse::RunStatus::Failed,
        error: Some("it's C:\\broken".into()),
        loads: 0,
        files: 0,
        events_loaded: 0,
        rejects: 0,
    };
    wh.record_run(&run).await.expect("record_run");
    assert_eq!(
        wh.request_reload("events/load-1.json", "etag-1", started())
            .await
            .expect("request_reload"),
        1
    );
    assert_eq!(
        wh.request_reload_range("events/", "events0", started())
            .await
            .expect("request_reload_range"),
        1,
        "the quarantined version; the loaded one's request is open already"
    );
    assert_eq!(wh.open_reloads(10).await.expect("open_reloads").len(), 2);
    wh.close_reloads_gone(&[
        ("events/load-1.json".into(), "etag-1".into()),
        ("events/q'.json".into(), "etag-q".into()),
    ])
    .await
    .expect("close_reloads_gone");
    assert!(wh.open_reloads(10).await.expect("open_reloads").is_empty());
    let left = |key: &str, modified| events_etl::store::ObjectMeta {
        key: key.into(),
        etag: "e'1".into(),
        size: 7,
        archived: false,
        last_modified: modified,
    };
    wh.remember_pending(
        "events/",
        "events0",
        &[
            left("events/a\\'b.json", None),
            left("events/c.json", Some(chrono::Utc::now())),
        ],
        started(),
    )
    .await
    .expect("remember_pending");
    let known = wh
        .known_pending("events/", "events0")
        .await
        .expect("known_pending");
    assert_eq!(known.len(), 2);
    assert_eq!(known[0].source_key, "events/a\\'b.json");
    let known = paged
        .known_pending("events/", "events0")
        .await
        .expect("known_pending, paged");
    let keys: Vec<&str> = known.iter().map(|k| k.source_key.as_str()).collect();
    assert_eq!(keys, ["events/a\\'b.json", "events/c.json"]);
    wh.remember_pending("events/", "events0", &[], started())
        .await
        .expect("forget_pending");
    assert!(wh
        .known_pending("events/", "events0")
        .await
        .expect("known")
        .is_empty());
    assert!(wh
        .last_run(events_etl::warehouse::RunStatus::Failed)
        .await
        .expect("last_run")
        .is_some());
    // A failing COPY, for the error lookup.
    let staged = f.stage("load-2", &[event(3)]).await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&f.s3.get(BUCKET, &staged.events_manifest).await).expect("manifest");
    let url = manifest["entries"][0]["url"].as_str().expect("url").to_owned();
    let key = url
        .strip_prefix(&format!("s3://{BUCKET}/"))
        .expect("key")
        .to_owned();
    f.s3.put(BUCKET, &key, b"not gzip".to_vec()).await;
    wh.load(&staged, started()).await.expect_err("COPY fails");

    let mut sent = f.api.sent_sql();
    sent.dedup();
    let mut seen = std::collections::HashSet::new();
    sent.retain(|s| seen.insert(s.clone()));
    for needle in [
        "CREATE TABLE",
        "LOCK",
        "COPY",
        "load_classes",
        "DATEDIFF",
        "JSON_SERIALIZE",
        "INTERVAL",
        "BETWEEN",
        "etl_loads",
        "sys_load_error_detail",
        "CREATE VIEW",
        "DROP VIEW",
        "IS_BIGINT",
        "JSON_TYPEOF",
        "event_types_seen",
        "catalog_source",
    ] {
        assert!(
            sent.iter().any(|s| s.contains(needle)),
            "no statement with {needle} was sent"
        );
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redshift-sql");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create dir");
    let mut reserved = Vec::new();
    for (i, sql) in sent.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:03}.sql")), sql).expect("write statement");
        let lexed = support::redshift_data::lex(sql).expect("lex");
        if let Err(e) = check_reserved(&lexed) {
            reserved.push(format!("{i:03}.sql: {e}\n{sql}"));
        }
    }
    assert!(
        reserved.is_empty(),
        "reserved words used as names:\n{}",
        reserved.join("\n\n")
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/redshift-grammar.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("run scripts/redshift-grammar.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} statements written to {}:\n{text}",
        sent.len(),
        dir.display()
    );
    eprintln!("{text}");
}

/// The exactly-once invariants after the loads of [`dupes_scenario`]: every id once,
/// the first copy by (key, line) kept, the file rows balanced. Counted, since Redshift
/// enforces no primary key (and neither does the stand-in).
async fn exactly_once(f: &Fixture) -> Result<(), String> {
    let pg = f.pg.client().await;
    let one = |sql: String| {
        let pg = &pg;
        async move {
            pg.query_one(&sql, &[])
                .await
                .map_err(|e| format!("{sql}: {e}"))
                .map(|r| r.get::<_, i64>(0))
        }
    };
    let s = &f.schema;
    let (rows, ids) = (
        one(format!("SELECT count(*) FROM {s}.events")).await?,
        one(format!("SELECT count(DISTINCT event_id) FROM {s}.events")).await?,
    );
    if rows != ids || ids != 3 {
        return Err(format!("events: {rows} rows for {ids} ids, 3 expected"));
    }
    let first = one(format!(
        "SELECT count(*) FROM {s}.events WHERE event_id = '00000001-0000-4000-8000-000000000000' \
         AND source_key = 'events/load-1.json' AND source_line = 1"
    ))
    .await?;
    if first != 1 {
        return Err("the first copy of id 1 by (key, line) was not the one kept".into());
    }
    // The changed copies are the conflicting duplicates, and only they.
    let conflicts = one(format!(
        "SELECT count(*) FROM {s}.event_rejects WHERE reason = 'conflicting_duplicate'"
    ))
    .await?;
    let changed = one(format!(
        "SELECT count(*) FROM {s}.event_rejects WHERE reason = 'conflicting_duplicate' \
         AND raw_line LIKE '%changed%'"
    ))
    .await?;
    if conflicts != 2 || changed != 2 {
        return Err(format!(
            "{conflicts} conflicting duplicates, {changed} of them the changed copies; 2 and 2 expected"
        ));
    }
    let recorded = one(format!(
        "SELECT COALESCE(SUM(events_loaded), 0)::bigint FROM {s}.etl_files"
    ))
    .await?;
    let in_loads = one(format!(
        "SELECT COALESCE(SUM(events_loaded), 0)::bigint FROM {s}.etl_loads"
    ))
    .await?;
    if recorded != rows || in_loads != rows {
        return Err(format!(
            "the control tables say {recorded} (etl_files) and {in_loads} (etl_loads) events loaded; events holds {rows}"
        ));
    }
    let unbalanced = one(format!(
        "SELECT count(*) FROM {s}.etl_files WHERE lines + recovered_events <> \
         events_loaded + duplicates + rejects + blank_lines"
    ))
    .await?;
    if unbalanced != 0 {
        return Err(format!("{unbalanced} etl_files rows do not balance"));
    }
    let catalog_off = one(format!(
        "SELECT count(*) FROM (SELECT event_name, events FROM {s}.event_types_seen \
         EXCEPT SELECT event_name, count(*) FROM {s}.events GROUP BY 1) d"
    ))
    .await?;
    let catalog = one(format!(
        "SELECT COALESCE(SUM(events), 0)::bigint FROM {s}.event_types_seen"
    ))
    .await?;
    if catalog_off != 0 || catalog != rows {
        return Err(format!(
            "the event catalog counts {catalog} events; events holds {rows}"
        ));
    }
    Ok(())
}

/// An event sent again with another email: a conflicting duplicate of `event(n)`.
fn changed(n: u32) -> String {
    event(n).replace(&format!("u{n}@x.io"), &format!("changed{n}@x.io"))
}

/// Two loads: the first holds id 1 twice and id 2 once changed, the second repeats id
/// 2, adds 3, and sends id 1 changed (only that copy of it).
async fn dupes_scenario(f: &Fixture, wh: &Redshift) -> Result<(), String> {
    wh.migrate().await.map_err(|e| e.to_string())?;
    let first = f
        .stage("load-1", &[event(1), event(2), event(1), changed(2)])
        .await;
    wh.load(&first, started()).await.map_err(|e| e.to_string())?;
    let second = f.stage("load-2", &[event(2), event(3), changed(1)]).await;
    wh.load(&second, started()).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// SQL that PostgreSQL would take but that would break a real Redshift fails the suite:
/// an insert source not deduplicated within the load, one not checked against `events`,
/// a TRUNCATE inside the load's transaction, and an event catalog counting duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_that_would_break_redshift_are_caught() {
    let shipped = Redshift::load_sql();
    let f = fixture("rs_mut_ok").await;
    dupes_scenario(&f, &f.adapter(Duration::from_secs(60)).await)
        .await
        .expect("the shipped SQL loads");
    exactly_once(&f).await.expect("the shipped SQL is exactly-once");

    let mutations: [(&str, &str, &str); 6] = [
        (
            "no dedupe of identical copies within the load",
            ") copies\nWHERE hn = 1;",
            ") copies\nWHERE hn >= 1;",
        ),
        (
            "no check of stored payloads",
            "JOIN load_near n ON n.event_id = r.event_id AND n.created_at = r.created_at",
            "JOIN load_near n ON FALSE AND n.created_at = r.created_at",
        ),
        (
            "no check against events",
            "SELECT event_id, created_at, payload_hash FROM {schema}.events\nWHERE created_at",
            "SELECT event_id, created_at, payload_hash FROM {schema}.events\nWHERE FALSE AND created_at",
        ),
        (
            "no earlier copies within the load",
            "WHEN e.event_id IS NOT NULL OR s0.event_id IS NOT NULL",
            "WHEN s0.event_id IS NOT NULL",
        ),
        (
            "TRUNCATE in the load",
            "-- AWS: r_DELETE.html\nDELETE FROM {schema}.stage_events;",
            "TRUNCATE {schema}.stage_events;",
        ),
        (
            "the catalog counts staged events, duplicates included",
            "FROM load_classes\nWHERE class = 'insert'\nGROUP BY event_name;",
            "FROM {schema}.stage_events\nGROUP BY event_name;",
        ),
    ];
    for (what, from, to) in mutations {
        assert!(
            shipped.contains(from),
            "{what}: load.sql no longer holds {from:?}"
        );
        let f = fixture("rs_mut").await;
        let wh = f
            .adapter(Duration::from_secs(60))
            .await
            .with_load_sql(&shipped.replacen(from, to, 1));
        let outcome = match dupes_scenario(&f, &wh).await {
            Err(e) => Err(format!("load failed: {e}")),
            Ok(()) => exactly_once(&f).await,
        };
        let caught = outcome.expect_err(&format!("the mutation `{what}` went unnoticed"));
        eprintln!("{what}: caught: {caught}");
    }
}

/// Two loaders at once through the Data API, on files that overlap: the table lock and
/// the ledger load each file version once (Redshift runs them serializable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_loaders_at_once_load_each_file_once() {
    let f = fixture("rs_two").await;
    let (a, b) = (
        f.adapter(Duration::from_secs(60)).await,
        f.adapter(Duration::from_secs(60)).await,
    );
    a.migrate().await.expect("migrate");
    // Both loads stage the same file version (`events/same.json`, etag-1).
    let stage = |id: &'static str| {
        let f = &f;
        async move {
            let cleaner = Cleaner::new(chrono::Utc::now());
            let mut w = StageWriter::new(f.staging.clone(), id, 1 << 20);
            let body = [event(1), event(2)].join("\n").into_bytes();
            let size = body.len() as u64;
            let key = "events/same.json";
            let cleaned = clean_object(&cleaner, key, key, Input::Bytes(body), &mut w)
                .await
                .expect("clean");
            w.file(&FileRow::new(key, "etag-1", size, &cleaned.tally))
                .expect("file row");
            w.finish().await.expect("finish")
        }
    };
    let (sa, sb) = (stage("load-a").await, stage("load-b").await);
    // Hold both batches until both are submitted, so that they really overlap.
    let base = f.api.calls("BatchExecuteStatement");
    f.api.delay_statements(Duration::from_secs(600));
    let (ra, rb, ()) = tokio::join!(a.load(&sa, started()), b.load(&sb, started()), async {
        while f.api.calls("BatchExecuteStatement") < base + 2 {
            tokio::task::yield_now().await;
        }
        f.api.release_delayed();
    });
    let rows: Vec<_> = [ra, rb]
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a loader failed: {e}\n{}", f.api.log())))
        .collect();
    assert_eq!(
        rows.iter().flatten().count(),
        1,
        "exactly one load recorded the file: {rows:?}"
    );
    assert_eq!(f.count("events").await, 2);
    assert_eq!(f.count("etl_files").await, 1);
    assert_eq!(f.count("etl_loads").await, 1);
}

/// A BatchExecuteStatement whose response is lost after it ran: the SDK sends it again,
/// and the load stays exactly-once (the second batch waits on the lock, then finds the
/// file recorded) and is reported as the one load it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_batch_response_stays_exactly_once() {
    let f = fixture("rs_lost").await;
    let wh = f.adapter(Duration::from_secs(60)).await;
    wh.migrate().await.expect("migrate");
    let staged = f.stage("load-1", &[event(1), event(2)]).await;
    let before = f.api.calls("BatchExecuteStatement");
    f.api.lose_next_response("BatchExecuteStatement");
    let row = wh
        .load(&staged, started())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.api.log()))
        .expect("the load's row");
    assert_eq!(
        f.api.calls("BatchExecuteStatement") - before,
        2,
        "the SDK resent the batch"
    );
    assert_eq!((row.load_id.as_str(), row.events_loaded), ("load-1", 2));
    assert_eq!(f.count("events").await, 2);
    assert_eq!(f.count("etl_files").await, 1);
    assert_eq!(f.count("etl_loads").await, 1);
}

/// A migration marked `-- events-etl: no-transaction` runs its statements one at a time
/// (Redshift refuses `ALTER COLUMN ... TYPE` in a transaction block); unmarked, the same
/// file fails inside its batch and records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_transaction_migrations_run_outside_a_batch() {
    const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS {schema};\nCREATE TABLE {schema}.t (v VARCHAR(10));\n";
    const MARKED: &str =
        "-- events-etl: no-transaction\nALTER TABLE {schema}.t ALTER COLUMN v TYPE VARCHAR(300);\n";
    const UNMARKED: &str = "ALTER TABLE {schema}.t ALTER COLUMN v TYPE VARCHAR(300);\n";
    for (second, ok) in [(MARKED, true), (UNMARKED, false)] {
        let f = fixture("rs_notx").await;
        let wh = f.adapter(Duration::from_secs(60)).await;
        let files: [(&'static str, &'static str); 2] = [("0001_t.sql", CREATE), ("0002_widen.sql", second)];
        let result = wh.migrate_files(&files).await;
        if ok {
            assert_eq!(
                result.expect("marked: runs outside a batch").len(),
                2,
                "{}",
                f.api.log()
            );
            assert_eq!(f.count("schema_migrations").await, 2);
        } else {
            let e = result.expect_err("unmarked: refused inside the batch");
            assert!(
                e.to_string().contains("cannot run inside a transaction block"),
                "{e}"
            );
            assert_eq!(f.count("schema_migrations").await, 1);
        }
    }
}

/// Loads two events with the next `lost` responses to `operation` lost (each request
/// carried out, its answer never arriving); returns the fixture, the calls of
/// `operation` the load made, and what the load returned.
async fn load_losing(label: &str, operation: &str, lost: usize) -> (Fixture, u64, LoadRow) {
    let f = fixture(label).await;
    let wh = f.adapter(Duration::from_secs(60)).await;
    wh.migrate().await.expect("migrate");
    let staged = f.stage("load-1", &[event(1), event(2)]).await;
    for _ in 0..lost {
        f.api.lose_next_response(operation);
    }
    let before = f.api.calls(operation);
    let row = wh
        .load(&staged, started())
        .await
        .unwrap_or_else(|e| panic!("a committed load must not fail the run: {e}\n{}", f.api.log()))
        .expect("row");
    let calls = f.api.calls(operation) - before;
    (f, calls, row)
}

/// DescribeStatement failing for a while (past the SDK's own retries) does not abandon a
/// batch that may still commit: the adapter keeps describing until the statement ends,
/// and reports the committed load as the success it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_failures_do_not_abandon_a_running_batch() {
    // Twice the SDK's 6 attempts of one call.
    let (f, calls, row) = load_losing("rs_describe", "DescribeStatement", 12).await;
    assert!(calls > 12, "{:?}", f.api.call_counts());
    assert_eq!(row.events_loaded, 2);
    assert_eq!(f.count("etl_loads").await, 1);
}

/// The batch committed but its summary cannot be read back: the load is still reported
/// as committed (a rerun must not be told it failed), marked as summary unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_load_whose_summary_is_lost_is_still_a_success() {
    // The SDK's 6 attempts: every try of GetStatementResult is lost.
    let (f, _, row) = load_losing("rs_summary", "GetStatementResult", 6).await;
    assert_eq!(row.load_id, "load-1");
    assert!(row.status.as_str().contains("summary unavailable"), "{row:?}");
    assert_eq!(f.count("etl_loads").await, 1);
    assert_eq!(f.count("events").await, 2);
}

/// The dedupe reads `events` only in the load's `created_at` range widened by the
/// window, as literals in the statement, so that zone maps on the sort key can skip
/// every block outside it (t_Sorting_data.html): the range and the window as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dedupe_scans_events_only_in_the_loads_time_range() {
    let f = fixture("rs_window").await;
    let wh = f
        .adapter(Duration::from_secs(60))
        .await
        .with_dedupe_window_days(2);
    wh.migrate().await.expect("migrate");
    // created_at 2024-01-01 00:00:05 and 00:00:07.
    let staged = f.stage("load-1", &[event(7), event(5)]).await;
    wh.load(&staged, started()).await.expect("load").expect("row");
    let sent = f.api.sent_sql();
    let statement = |name: &str| {
        sent.iter()
            .find(|s| s.starts_with(&format!("CREATE TEMP TABLE {name} ")))
            .unwrap_or_else(|| panic!("{name} was sent"))
    };
    let range = "created_at BETWEEN CAST('2023-12-30 00:00:05.000000' AS TIMESTAMP) \
                 AND CAST('2024-01-03 00:00:07.000000' AS TIMESTAMP)";
    // events and event_rejects are read once, each restricted to the range.
    let near = statement("load_near");
    assert_eq!(near.matches(range).count(), 2, "{range} not twice in {near}");
    for name in ["load_stored", "load_identical", "load_classes"] {
        let sql = statement(name);
        assert!(
            !sql.contains(".events") && !sql.contains(".event_rejects"),
            "{name} reads a table again: {sql}"
        );
    }
    let classes = statement("load_classes");
    for needle in [
        "r.created_at - INTERVAL '2 days'",
        "r.created_at + INTERVAL '2 days'",
    ] {
        assert!(classes.contains(needle), "{needle} not in {classes}");
    }
    // The buckets are the window wide: two days in microseconds.
    assert!(
        statement("load_reps").contains("/ 172800000000 AS b"),
        "{}",
        statement("load_reps")
    );
    // Only the event catalog is MERGEd: MERGE cannot restrict its join with events to
    // the range (r_MERGE.html).
    let merged: Vec<&String> = sent.iter().filter(|s| s.contains("MERGE INTO")).collect();
    assert!(
        merged.iter().all(|s| s.contains("event_types_seen")),
        "{merged:?}"
    );
}

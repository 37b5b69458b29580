//! The warehouse conformance suite: what every `Warehouse` adapter must do, written once.
//!
//! Each check is an `async fn(&dyn Warehouse, &Cx)`: the adapter under test, plus a
//! [`Cx`] holding what the check needs around it (a [`Stager`] that stages real loads
//! into a staging `Place` with the pipeline's own cleaner and stage writer, and a [`Db`]
//! to look at the tables with plain SQL). A backend supplies one [`Backend`]; the
//! `conformance!` macro at the bottom runs every check against it, each check in its own
//! fresh namespace. Both adapters run them: PostgreSQL directly, and the Redshift Data
//! API adapter against the Data API stand-in (`support::redshift_data`), which executes
//! every statement on the same test PostgreSQL and COPYs from the in-process S3 server.
//!
//! Known differences between backends, written down rather than hidden:
//! * the JSON text of `metadata` is dialect-specific (PostgreSQL prints JSONB's
//!   normalised form); every backend must store the same JSON *value*, the exact text is
//!   only checked for PostgreSQL;
//! * [`Db::break_load_recording`] is a trigger on PostgreSQL; another backend may make
//!   the INSERT into `etl_loads` fail any other way. The Redshift stand-in runs on
//!   PostgreSQL, so the same trigger serves;
//! * Redshift stages through S3 (COPY reads it), PostgreSQL through a local directory.

use crate::support;

use std::collections::HashSet;
use std::io::{Cursor, Write as _};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use events_etl::clean::Cleaner;
use events_etl::migrate::{self, Dialect, MigrateError};
use events_etl::stage::clean_object;
use events_etl::stage::{FileRow, Manifest, StageWriter, StagedLoad};
use events_etl::store::local::LocalStore;
use events_etl::store::{Body, Place};
use events_etl::warehouse::postgres::{pg_message, Postgres};
use events_etl::warehouse::{AppliedMigration, LoadRow, StagedRead, Warehouse, WarehouseError};
use tokio_postgres::SimpleQueryMessage;

// ---------------------------------------------------------------------------------------
// What a backend provides
// ---------------------------------------------------------------------------------------

/// SQL access to one namespace (schema), for checking what a warehouse holds.
#[async_trait]
pub trait Db: Send + Sync {
    /// The namespace the warehouse under test uses.
    fn namespace(&self) -> &str;
    /// Runs `sql` (`{schema}` replaced) and returns each row's values as text joined by
    /// `" | "`, NULL shown as `NULL`.
    async fn rows(&self, sql: &str) -> Vec<String>;
    /// Runs statements (`{schema}` replaced); panics on failure.
    async fn exec(&self, sql: &str);
    /// SQL for the JSON text of a JSON column.
    fn json_text(&self, column: &str) -> String;
    /// Every row of every table of the namespace, in a stable order.
    async fn snapshot(&self) -> String;
    /// Runs `sql` (`{schema}` replaced) at the start of a transaction of a session of its
    /// own, and keeps both (and so the locks it took) until the returned value is dropped.
    async fn hold(&self, sql: &str) -> Box<dyn std::any::Any + Send>;
    /// Makes every INSERT into `etl_loads` fail until [`Db::repair_load_recording`].
    async fn break_load_recording(&self);
    async fn repair_load_recording(&self);
}

/// One warehouse engine: makes fresh namespaces with an adapter on each.
#[async_trait]
pub trait Backend: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// A new, empty (not migrated, not even created) namespace, the adapter on it, and
    /// a staging place of its own.
    async fn fresh(self: Arc<Self>, label: &str) -> Env;
    /// A second adapter (its own connection) on an existing namespace.
    async fn connect(&self, namespace: &str, staging: Place) -> Box<dyn Warehouse>;
    /// The same, with `load.dedupe_window_days` set to `days`.
    async fn connect_with_window(&self, namespace: &str, staging: Place, days: u32) -> Box<dyn Warehouse>;
}

/// Everything a check needs besides the adapter.
pub struct Cx {
    pub db: Box<dyn Db>,
    pub stager: Stager,
    pub backend: Arc<dyn Backend>,
}

/// An adapter and its surroundings; dropping it drops the staging directory.
pub struct Env {
    pub wh: Box<dyn Warehouse>,
    pub cx: Cx,
    _staging_dir: tempfile::TempDir,
}

/// One source file: key, version (ETag) and bytes.
#[derive(Clone)]
pub struct Src {
    pub key: String,
    pub etag: String,
    pub bytes: Vec<u8>,
}

fn src(key: &str, etag: &str, text: &str) -> Src {
    Src {
        key: key.into(),
        etag: etag.into(),
        bytes: text.as_bytes().to_vec(),
    }
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).expect("gzip");
    enc.finish().expect("gzip")
}

/// Stages loads exactly as the pipeline does: `clean_object` over each file's bytes into
/// a `StageWriter`, then a `FileRow` per file.
pub struct Stager {
    pub place: Place,
    cleaner: Cleaner,
    /// Small, so a load has several parts per table.
    part_size: u64,
}

impl Stager {
    pub fn new(place: Place) -> Stager {
        Stager {
            place,
            cleaner: Cleaner::new(run_start()),
            part_size: 256,
        }
    }

    pub async fn stage(&self, load_id: &str, files: &[Src]) -> StagedLoad {
        let mut w = StageWriter::new(self.place.clone(), load_id, self.part_size);
        for f in files {
            let body: Body = Box::new(Cursor::new(f.bytes.clone()));
            let url = format!("test-source://{}", f.key);
            let cleaned = clean_object(&self.cleaner, &f.key, &url, body, &mut w)
                .await
                .unwrap_or_else(|e| panic!("cleaning {}: {e}", f.key));
            w.file(&FileRow::new(
                &f.key,
                &f.etag,
                f.bytes.len() as u64,
                &cleaned.tally,
            ))
            .expect("stage file row");
        }
        w.finish().await.expect("finish staging")
    }
}

/// The run's start as the cleaner sees it: bounds `created_at`.
fn run_start() -> DateTime<Utc> {
    "2024-06-01T00:00:00Z".parse().expect("time")
}

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("time")
}

async fn migrated(wh: &dyn Warehouse) {
    wh.migrate().await.expect("migrate");
}

/// Loads `staged`; the adapter must have said its COPYs read the staged objects.
async fn load(wh: &dyn Warehouse, staged: &StagedLoad, started: &str) -> LoadRow {
    let (result, told) = load_telling(wh, staged, started).await;
    let row = match result {
        Ok(Some(row)) => row,
        Ok(None) => panic!("load {} committed nothing", staged.load_id),
        Err(e) => panic!("load {} failed: {e}", staged.load_id),
    };
    assert!(told, "load {}: its StagedRead was never told", staged.load_id);
    row
}

/// Loads `staged`, and says whether the adapter told its [`StagedRead`] (every COPY of
/// the load finished reading the staged objects).
async fn load_telling(
    wh: &dyn Warehouse,
    staged: &StagedLoad,
    started: &str,
) -> (Result<Option<LoadRow>, WarehouseError>, bool) {
    let (read, told) = StagedRead::channel();
    let result = wh.load_reporting(staged, at(started), read).await.map(|l| l.row);
    // The StagedRead went with the load: told or dropped by now.
    (result, told.await.is_ok())
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

/// In byte order, as `ORDER BY` in a bytewise collation sorts them.
const TABLES: [&str; 15] = [
    "etl_files",
    "etl_files_history",
    "etl_loads",
    "etl_pending",
    "etl_quarantine",
    "etl_reloads",
    "etl_runs",
    "event_rejects",
    "event_type_views",
    "event_types_seen",
    "events",
    "schema_migrations",
    "stage_events",
    "stage_files",
    "stage_rejects",
];

async fn tables(cx: &Cx) -> Vec<String> {
    cx.db
        .rows(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = '{schema}' ORDER BY table_name",
        )
        .await
}

async fn assert_stage_empty(cx: &Cx) {
    for t in ["stage_events", "stage_rejects", "stage_files"] {
        let n = cx.db.rows(&format!("SELECT COUNT(*) FROM {{schema}}.{t}")).await;
        assert_eq!(n, ["0"], "{t} must be empty outside a load");
    }
}

/// After a failed load: every table as it was `before` it, the staging tables empty.
async fn assert_failed_load_left_nothing(cx: &Cx, before: &str) {
    assert_eq!(
        cx.db.snapshot().await,
        before,
        "a failed load left something behind"
    );
    assert_stage_empty(cx).await;
}

/// migrate on an empty namespace applies every migration of the dialect, creating the
/// tables; a second migrate applies nothing.
pub async fn migrate_creates_tables(wh: &dyn Warehouse, cx: &Cx) {
    let d = cx.backend.dialect();
    let expected: Vec<AppliedMigration> = migrate::migrations(d.dir(), d.files())
        .expect("shipped migrations")
        .into_iter()
        .map(|m| AppliedMigration {
            version: m.version,
            name: m.name,
        })
        .collect();
    assert_eq!(
        expected.first(),
        Some(&AppliedMigration {
            version: 1,
            name: "create_tables".into()
        })
    );
    let applied = wh.migrate().await.expect("first migrate");
    assert_eq!(applied, expected);
    assert_eq!(tables(cx).await, TABLES);
    let recorded = cx
        .db
        .rows("SELECT version, name FROM {schema}.schema_migrations ORDER BY version")
        .await;
    let want: Vec<String> = expected
        .iter()
        .map(|m| format!("{} | {}", m.version, m.name))
        .collect();
    assert_eq!(recorded, want);
    let before = cx.db.snapshot().await;
    assert_eq!(wh.migrate().await.expect("second migrate"), []);
    assert_eq!(
        cx.db.snapshot().await,
        before,
        "a second migrate changed something"
    );
    assert_stage_empty(cx).await;
}

/// Two `migrate` runs at once, from two connections: both succeed, and each migration is
/// applied exactly once (PostgreSQL: an advisory lock; Redshift: LOCK and a re-check).
pub async fn concurrent_migrates_apply_each_once(wh: &dyn Warehouse, cx: &Cx) {
    let other = cx
        .backend
        .connect(cx.db.namespace(), cx.stager.place.clone())
        .await;
    let (a, b) = tokio::join!(wh.migrate(), other.migrate());
    let (a, b) = (a.expect("first migrate"), b.expect("second migrate"));
    let d = cx.backend.dialect();
    let all: Vec<i64> = migrate::migrations(d.dir(), d.files())
        .expect("shipped migrations")
        .iter()
        .map(|m| m.version)
        .collect();
    let mut applied: Vec<i64> = a.iter().chain(&b).map(|m| m.version).collect();
    applied.sort_unstable();
    assert_eq!(applied, all, "first {a:?}, second {b:?}");
    let recorded = cx
        .db
        .rows("SELECT version FROM {schema}.schema_migrations ORDER BY version")
        .await;
    assert_eq!(recorded, all.iter().map(i64::to_string).collect::<Vec<_>>());
    assert_eq!(tables(cx).await, TABLES);
}

/// Absent and JSON-null metadata both load as SQL NULL. On Redshift a JSON null would
/// load into SUPER as a SUPER null, which `IS NULL` does not match: the stager omits the
/// key instead, and this check fails if it ever stops doing so.
pub async fn absent_and_null_metadata_load_as_sql_null(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let line = |id: &str, meta: &str| {
        format!(
            r#"{{"id":"{id}","created_at":"2024-02-01T00:00:00Z","user_email":"a@x.io","event_name":"e"{meta}}}"#
        )
    };
    let text = [
        line(X, ""),
        line(Y, r#","metadata":null"#),
        line(Z, r#","metadata":{}"#),
        line(W, r#","ip":null,"metadata":{"k":null}"#),
    ]
    .join("\n");
    let staged = cx.stager.stage("load-1", &[src("n/a.json", "e-1", &text)]).await;
    load(wh, &staged, "2024-06-01 00:00:00").await;
    let nulls = cx
        .db
        .rows("SELECT event_id FROM {schema}.events WHERE metadata IS NULL ORDER BY event_id")
        .await;
    assert_eq!(nulls, [X.to_owned(), Y.to_owned()]);
    let ips = cx
        .db
        .rows("SELECT COUNT(*) FROM {schema}.events WHERE ip IS NULL")
        .await;
    assert_eq!(ips, ["4"]);
}

/// Against the real clock: a load started now finishes at or after its start, and not
/// in the future; `invalid_ips` counts a file's clean events whose ip was invalid and
/// stored as NULL, duplicates included (it is counted when the file is cleaned, before
/// deduplication).
pub async fn times_and_invalid_ips(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let line = |id: &str, ip: &str| {
        format!(
            r#"{{"id":"{id}","created_at":"2024-02-01T00:00:00Z","user_email":"a@x.io","event_name":"e","ip":"{ip}"}}"#
        )
    };
    let text = [
        line(X, "999.0.0.1"),
        line(X, "999.0.0.1"),
        line(Y, "10.0.0.1"),
        line(Z, "nope"),
    ]
    .join("\n");
    let staged = cx.stager.stage("load-1", &[src("i/a.json", "e-1", &text)]).await;
    let started = Utc::now().naive_utc();
    let row = match wh.load(&staged, started).await {
        Ok(Some(row)) => row,
        other => panic!("load: {other:?}"),
    };
    let after = Utc::now().naive_utc();
    assert!(
        row.started_at <= row.finished_at && row.finished_at <= after + chrono::Duration::seconds(1),
        "started {started}, returned {row:?}, checked at {after}"
    );
    assert_eq!(
        (row.events_loaded, row.duplicates, row.invalid_ips),
        (3, 1, 3),
        "{row:?}"
    );
    assert_totals_consistent(cx, &row).await;
}

/// A quarantine row is an alarm that clears: a load of a newer version of the key
/// resolves it (`load <id>`, `loaded`); an operator resolves another with who and why;
/// the same version quarantined again after that stands again. Resolved rows stay
/// settled and are listed only with `include_resolved`.
pub async fn quarantine_alarms_clear(wh: &dyn Warehouse, cx: &Cx) {
    use events_etl::warehouse::{QuarantineReason, Quarantined};
    migrated(wh).await;
    let q = |key: &str, etag: &str, reason| {
        Quarantined::new(
            key,
            etag,
            7,
            reason,
            "it's gone: C:\\x",
            at("2024-06-02 00:00:00"),
        )
    };
    let text = r#"{"id":"a1b2c3d4-0000-4000-8000-000000000001","created_at":"2024-01-05T12:00:00Z","user_email":"a@x.io","event_name":"view"}"#;
    wh.quarantine(&[
        q("r/a.json", "e-1", QuarantineReason::Unreadable),
        q("r/b'\\{offset}.json", "e-1", QuarantineReason::Vanished),
    ])
    .await
    .expect("quarantine");
    assert_eq!(wh.quarantined(10, false).await.expect("quarantined").len(), 2);

    // A new version of r/a.json loads: its alarm clears.
    let staged = cx.stager.stage("load-1", &[src("r/a.json", "e-2", text)]).await;
    load(wh, &staged, "2024-06-03 00:00:00").await;
    let standing = wh.quarantined(10, false).await.expect("quarantined");
    assert_eq!(standing.len(), 1, "{standing:?}");
    assert_eq!(standing[0].source_key, "r/b'\\{offset}.json");
    assert!(standing[0].is_lost());
    let all = wh.quarantined(10, true).await.expect("quarantined, resolved too");
    let a = all.iter().find(|r| r.source_key == "r/a.json").expect("kept");
    assert_eq!(a.resolution.as_deref(), Some("loaded"), "{a:?}");
    assert_eq!(a.resolved_by.as_deref(), Some("load load-1"), "{a:?}");
    assert!(a.resolved_at.is_some());

    // An operator resolves the lost one; nothing else matches.
    let by_op = wh
        .resolve_quarantine(
            "r/b'\\{offset}.json",
            "ops",
            "accepted; no copy",
            at("2024-06-04 00:00:00"),
        )
        .await
        .expect("resolve");
    assert_eq!(by_op, 1);
    assert_eq!(
        wh.resolve_quarantine("r/none.json", "ops", "x", at("2024-06-04 00:00:00"))
            .await
            .expect("resolve"),
        0
    );
    assert!(wh.quarantined(10, false).await.expect("quarantined").is_empty());
    let all = wh.quarantined(10, true).await.expect("quarantined, resolved too");
    let b = all
        .iter()
        .find(|r| r.source_key.starts_with("r/b"))
        .expect("kept");
    assert_eq!(
        (b.resolved_by.as_deref(), b.resolution.as_deref(), b.resolved_at),
        (
            Some("ops"),
            Some("accepted; no copy"),
            Some(at("2024-06-04 00:00:00"))
        )
    );
    // Still settled: discovery does not read it again.
    let settled = wh
        .recorded_versions(&["r/b'\\{offset}.json".to_owned()])
        .await
        .expect("recorded_versions");
    assert_eq!(settled.len(), 1);

    // Quarantined again (a reload that failed alike): the alarm stands again.
    wh.quarantine(&[q("r/b'\\{offset}.json", "e-1", QuarantineReason::Unreadable)])
        .await
        .expect("quarantine again");
    let standing = wh.quarantined(10, false).await.expect("quarantined");
    assert_eq!(standing.len(), 1);
    assert_eq!(standing[0].reason, "unreadable");
    assert_eq!(standing[0].resolved_at, None);
}

/// The pending versions a run remembers are kept per key range: replacing one range
/// leaves the others alone, and ranges compare keys bytewise.
pub async fn pending_versions_are_remembered_per_range(wh: &dyn Warehouse, cx: &Cx) {
    let _ = cx;
    migrated(wh).await;
    let meta = |key: &str| events_etl::store::ObjectMeta {
        key: key.into(),
        etag: "e-1".into(),
        size: 3,
        archived: false,
        last_modified: None,
    };
    let t = at("2024-06-01 00:00:00");
    wh.remember_pending("p/1/", "p/10", &[meta("p/1/a'\\.json"), meta("p/1/b.json")], t)
        .await
        .expect("remember");
    wh.remember_pending("p/2/", "p/20", &[meta("p/2/{offset}.json")], t)
        .await
        .expect("remember");
    let keys = |v: Vec<events_etl::warehouse::KnownPending>| -> Vec<String> {
        v.into_iter().map(|p| p.source_key).collect()
    };
    assert_eq!(
        keys(wh.known_pending("p/1/", "p/10").await.expect("known")),
        ["p/1/a'\\.json", "p/1/b.json"]
    );
    wh.remember_pending("p/1/", "p/10", &[meta("p/1/b.json")], t)
        .await
        .expect("replace");
    assert_eq!(
        keys(wh.known_pending("p/", "p0").await.expect("known")),
        ["p/1/b.json", "p/2/{offset}.json"]
    );
    let one = wh.known_pending("p/2/", "p/20").await.expect("known");
    assert_eq!(
        (one[0].etag.as_str(), one[0].size_bytes, one[0].listed_at),
        ("e-1", 3, t)
    );
}

/// A quarantined version is settled (discovery skips it) and listed; another version of
/// the same key is not; quarantining a loaded version, or one twice, changes nothing.
pub async fn quarantine_settles_a_version(wh: &dyn Warehouse, cx: &Cx) {
    use events_etl::warehouse::{QuarantineReason, Quarantined};
    migrated(wh).await;
    let staged = cx.stager.stage("load-1", &[sample_b()]).await;
    load(wh, &staged, "2024-06-01 00:00:00").await;
    let q = |key: &str, etag: &str| {
        Quarantined::new(
            key,
            etag,
            7,
            QuarantineReason::Refused,
            "copy_raw: it's refused",
            at("2024-06-02 00:00:00"),
        )
    };
    let bad = q("q/bad.json", "e-1");
    wh.quarantine(&[bad.clone(), bad.clone()])
        .await
        .expect("quarantine");
    // A loaded version is not quarantined.
    wh.quarantine(&[q(&sample_b().key, &sample_b().etag)])
        .await
        .expect("quarantine loaded");
    let keys = vec!["q/bad.json".to_owned(), sample_b().key];
    let settled = wh.recorded_versions(&keys).await.expect("recorded_versions");
    assert!(
        settled.contains(&("q/bad.json".to_owned(), "e-1".to_owned())),
        "{settled:?}"
    );
    assert!(!settled.contains(&("q/bad.json".to_owned(), "e-2".to_owned())));
    assert_eq!(wh.quarantined(10, false).await.expect("quarantined"), [bad]);
}

/// Runs are recorded and read back: the latest of each status, with the error text of a
/// failed one exactly as given (quotes and backslashes included).
pub async fn runs_are_recorded(wh: &dyn Warehouse, cx: &Cx) {
    use events_etl::warehouse::{RunRow, RunStatus};
    migrated(wh).await;
    let run = |id: &str, at: &str, status: &str, error: Option<&str>| RunRow {
        run_id: id.into(),
        started_at: self::at(at),
        finished_at: self::at(at),
        status: RunStatus::parse(status).expect("a run status"),
        error: error.map(str::to_owned),
        loads: 1,
        files: 2,
        events_loaded: 3,
        rejects: 4,
    };
    assert_eq!(wh.last_run(RunStatus::Failed).await.expect("last_run"), None);
    let failed = run(
        "r1",
        "2024-06-01 00:00:00",
        "failed",
        Some("statement `x` failed: it's 'quoted'"),
    );
    wh.record_run(&failed).await.expect("record");
    wh.record_run(&run("r2", "2024-06-02 00:00:00", "succeeded", None))
        .await
        .expect("record");
    wh.record_run(&run("r3", "2024-06-03 00:00:00", "succeeded", None))
        .await
        .expect("record");
    assert_eq!(
        wh.last_run(RunStatus::Failed).await.expect("last_run"),
        Some(failed)
    );
    assert_eq!(
        wh.last_run(RunStatus::Succeeded)
            .await
            .expect("last_run")
            .map(|r| r.run_id),
        Some("r3".to_owned())
    );
    let _ = cx;
}

/// `reload`: a recorded version is read again by the next load. Its ids are never
/// overwritten (all duplicates now), its previous ledger row moves to
/// `etl_files_history`, the request is closed, and afterwards the version is settled.
pub async fn reload_reads_a_version_again(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let file = sample_b();
    let key = file.key.clone();
    let first = load(
        wh,
        &cx.stager.stage("load-1", std::slice::from_ref(&file)).await,
        "2024-06-01 00:00:00",
    )
    .await;
    assert_eq!(first.events_loaded, 2);
    let before = cx.db.rows(&events_sql(cx)).await;
    let keys = vec![key.clone()];
    let settled = |v: &HashSet<(String, String)>| v.contains(&(key.clone(), file.etag.clone()));
    assert!(settled(&wh.recorded_versions(&keys).await.expect("rv")));

    assert_eq!(
        wh.request_reload(&key, &file.etag, at("2024-06-02 00:00:00"))
            .await
            .expect("reload"),
        1
    );
    assert_eq!(
        wh.request_reload(&key, &file.etag, at("2024-06-02 00:00:01"))
            .await
            .expect("again"),
        0,
        "one open request"
    );
    assert_eq!(
        wh.request_reload("no/such.json", "e", at("2024-06-02 00:00:00"))
            .await
            .expect("unknown"),
        0
    );
    assert_eq!(
        wh.request_reload(&key, "another-etag", at("2024-06-02 00:00:00"))
            .await
            .expect("unsettled version"),
        0,
        "only the settled version the source lists"
    );
    let open = wh.open_reloads(10).await.expect("open_reloads");
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].source_key.as_str(), open[0].etag.as_str()),
        (key.as_str(), file.etag.as_str())
    );
    assert!(
        !settled(&wh.recorded_versions(&keys).await.expect("rv")),
        "an open reload makes it pending"
    );

    let again = load(
        wh,
        &cx.stager.stage("load-2", std::slice::from_ref(&file)).await,
        "2024-06-03 00:00:00",
    )
    .await;
    assert_eq!(
        (again.files, again.events_loaded, again.duplicates),
        (1, 0, 2),
        "{again:?}"
    );
    assert_eq!(
        cx.db.rows(&events_sql(cx)).await,
        before,
        "events are never overwritten"
    );
    assert_eq!(
        cx.db.rows("SELECT load_id FROM {schema}.etl_files").await,
        ["load-2"],
        "one ledger row per version"
    );
    assert_eq!(
        cx.db
            .rows("SELECT load_id || ' ' || superseded_by FROM {schema}.etl_files_history")
            .await,
        ["load-1 load-2"]
    );
    assert_eq!(
        cx.db.rows("SELECT load_id FROM {schema}.etl_reloads").await,
        ["load-2"]
    );
    assert!(
        settled(&wh.recorded_versions(&keys).await.expect("rv")),
        "settled again"
    );
    // Without a request, the same version staged again is skipped.
    let skipped = wh
        .load(
            &cx.stager.stage("load-3", std::slice::from_ref(&file)).await,
            at("2024-06-04 00:00:00"),
        )
        .await
        .expect("load");
    assert_eq!(skipped, None);
    assert_totals_consistent(cx, &again).await;
    assert_stage_empty(cx).await;
}

/// A second adapter can migrate (so a refused migrate released its lock).
async fn migrate_again_elsewhere(cx: &Cx) -> Result<Vec<AppliedMigration>, WarehouseError> {
    let other = cx
        .backend
        .connect(cx.db.namespace(), cx.stager.place.clone())
        .await;
    tokio::time::timeout(Duration::from_secs(20), other.migrate())
        .await
        .expect("migrate from a second connection hung: a refused migrate kept its lock")
}

/// An applied migration whose checksum differs from the file's: refused, naming the fix.
pub async fn migrate_refuses_edited(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let original = cx
        .db
        .rows("SELECT checksum FROM {schema}.schema_migrations WHERE version = 1")
        .await;
    assert_eq!(original.len(), 1);
    cx.db
        .exec("UPDATE {schema}.schema_migrations SET checksum = 'edited' WHERE version = 1")
        .await;
    let before = cx.db.snapshot().await;
    let e = wh
        .migrate()
        .await
        .expect_err("migrate must refuse an edited migration");
    assert!(
        matches!(e, WarehouseError::Migrate(MigrateError::Edited { version: 1, ref applied, .. }) if applied == "edited"),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("was edited"), "{msg}");
    assert!(msg.contains("new migration"), "{msg}");
    assert_eq!(
        cx.db.snapshot().await,
        before,
        "a refused migrate changed something"
    );
    let e = migrate_again_elsewhere(cx).await.expect_err("still edited");
    assert!(
        matches!(e, WarehouseError::Migrate(MigrateError::Edited { .. })),
        "{e:?}"
    );
    cx.db
        .exec(&format!(
            "UPDATE {{schema}}.schema_migrations SET checksum = '{}' WHERE version = 1",
            original[0]
        ))
        .await;
    assert_eq!(migrate_again_elsewhere(cx).await.expect("restored"), []);
}

/// A database ahead of this build (an applied version no file has): refused.
pub async fn migrate_refuses_unknown_version(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    cx.db
        .exec(
            "INSERT INTO {schema}.schema_migrations (version, name, checksum, applied_at) \
             VALUES (9999, 'from_the_future', 'abc', '2030-01-01 00:00:00')",
        )
        .await;
    let before = cx.db.snapshot().await;
    let e = wh
        .migrate()
        .await
        .expect_err("migrate must refuse an unknown version");
    assert!(
        matches!(e, WarehouseError::Migrate(MigrateError::Unknown { version: 9999, ref name }) if name == "from_the_future"),
        "{e:?}"
    );
    assert!(e.to_string().contains("newer events-etl"), "{e}");
    assert_eq!(cx.db.snapshot().await, before);
    let e = migrate_again_elsewhere(cx).await.expect_err("still unknown");
    assert!(
        matches!(e, WarehouseError::Migrate(MigrateError::Unknown { .. })),
        "{e:?}"
    );
}

fn assert_not_migrated<T: std::fmt::Debug>(what: &str, r: Result<T, WarehouseError>) {
    match r {
        Err(e @ WarehouseError::NotMigrated { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("run `events-etl migrate`"), "{what}: {msg}");
        }
        other => panic!("{what} before migrate: expected NotMigrated, got {other:?}"),
    }
}

/// Every operation but migrate fails on an unmigrated namespace, telling the fix.
pub async fn operations_before_migrate_say_migrate(wh: &dyn Warehouse, cx: &Cx) {
    assert_not_migrated(
        "recorded_versions",
        wh.recorded_versions(&["k/a.json".to_owned()]).await,
    );
    assert_not_migrated("recent_loads", wh.recent_loads(5).await);
    let staged = cx.stager.stage("load-1", &[sample_a()]).await;
    assert_not_migrated("load", wh.load(&staged, at("2024-06-01 00:00:00")).await);
    // Also when the namespace exists but lacks the tables.
    cx.db.exec("CREATE SCHEMA IF NOT EXISTS {schema}").await;
    assert_not_migrated("recent_loads (empty schema)", wh.recent_loads(5).await);
    assert_not_migrated(
        "load (empty schema)",
        wh.load(&staged, at("2024-06-01 00:00:00")).await,
    );
    // And the adapter is still usable afterwards.
    migrated(wh).await;
    assert_eq!(wh.recent_loads(5).await.expect("recent_loads"), []);
}

const ID_A1: &str = "0f6e0555-e9f3-4b06-b711-a676d13e38f9";
const METADATA_A1: &str = r#"{"z":[1,2.50,"x"],"big":9007199254740993,"a":{"y":true,"x":null},"é":"ü"}"#;
/// PostgreSQL's JSONB text of [`METADATA_A1`]: keys by length then bytes, one space
/// after `:` and `,`, numbers exactly as sent (2^53 + 1 is not rounded).
const METADATA_A1_JSONB: &str =
    r#"{"a": {"x": null, "y": true}, "z": [1, 2.50, "x"], "é": "ü", "big": 9007199254740993}"#;
const LINE_A3: &str =
    r#"{"id":"not-a-uuid","created_at":"2024-01-01T00:00:00Z","user_email":"a@b.co","event_name":"x"}"#;

/// 7 lines: 4 events (one recovered from a glued line, one with an invalid ip), 1 blank,
/// 3 rejects.
fn sample_a() -> Src {
    let lines = [
        format!(
            r#"{{"id":"0F6E0555-E9F3-4B06-B711-A676D13E38F9","created_at":"2024-01-01T10:00:00.123456+02:00","user_email":"  Alice@Example.COM ","event_name":"Page_View","ip":"10.0.0.1","metadata":{METADATA_A1}}}"#
        ),
        "   ".to_owned(),
        LINE_A3.to_owned(),
        r#"{"id":"#.to_owned(),
        r#"{"id":"7c1d9a3b-e54f-4b2c-8d1e-0f2a3b4c5d6e","created_at":"2024-01-02 03:04:05","user_email":"bob@example.org","event_name":"signup","ip":"2001:DB8::1"}"#.to_owned(),
        r#"{"id":"a1b2c3d4-e5f6-4718-893a-4b5c6d7e8f90","created_at":"2024-01-03T00:00:00.5Z","user_email":"carol@example.net","event_name":"click","ip":"999.1.1.1","metadata":null}"#.to_owned(),
        r#"{"id":"trunc{"id":"b2c3d4e5-f607-4829-9a3b-5c6d7e8f9001","created_at":"2024-01-04T00:00:00Z","user_email":"dave@example.com","event_name":"purchase","metadata":{}}"#.to_owned(),
    ];
    src("events/2024/01/01/a.json", "etag-a", &(lines.join("\n") + "\n"))
}

/// Gzipped, 3 lines: 2 events, 1 reject.
fn sample_b() -> Src {
    let text = [
        r#"{"id":"c3d4e5f6-0718-493a-8b4c-6d7e8f900112","created_at":"2024-01-05T12:00:00-05:00","user_email":"ERIN@EXAMPLE.COM","event_name":"LOGOUT"}"#,
        "[1,2]",
        r#"{"id":"d4e5f607-1829-4a3b-9c5d-7e8f90011223","created_at":"2024-01-06T00:00:00Z","user_email":"frank@example.com","event_name":"view","metadata":{"n":-1.5e3}}"#,
    ]
    .join("\n")
        + "\n";
    Src {
        key: "events/2024/01/01/b.json.gz".into(),
        etag: "etag-b".into(),
        bytes: gzip(&text),
    }
}

fn events_sql(cx: &Cx) -> String {
    format!(
        "SELECT event_id, CAST(created_at AS VARCHAR), user_email, ip, event_name, {}, \
         source_key, CAST(source_line AS VARCHAR) FROM {{schema}}.events ORDER BY event_id",
        cx.db.json_text("metadata")
    )
}

/// The control tables agree with each other and with the data: etl_loads totals are the
/// sums over its etl_files rows and the counts of its rows in events and event_rejects.
async fn assert_totals_consistent(cx: &Cx, row: &LoadRow) {
    let id = &row.load_id;
    let loads = cx
        .db
        .rows(&format!(
            "SELECT files, lines, events_loaded, duplicates, rejects, blank_lines, recovered_events, \
             invalid_ips, conflicts, status FROM {{schema}}.etl_loads WHERE load_id = '{id}'"
        ))
        .await;
    let sums = cx
        .db
        .rows(&format!(
            "SELECT COUNT(*), SUM(lines), SUM(events_loaded), SUM(duplicates), SUM(rejects), \
             SUM(blank_lines), SUM(recovered_events), SUM(invalid_ips), SUM(conflicts), 'committed' \
             FROM {{schema}}.etl_files WHERE load_id = '{id}'"
        ))
        .await;
    assert_eq!(
        loads, sums,
        "etl_loads row of {id} vs the sums over its etl_files rows"
    );
    let returned = format!(
        "{} | {} | {} | {} | {} | {} | {} | {} | {} | {}",
        row.files,
        row.lines,
        row.events_loaded,
        row.duplicates,
        row.rejects,
        row.blank_lines,
        row.recovered_events,
        row.invalid_ips,
        row.conflicts,
        row.status
    );
    assert_eq!(loads, [returned], "the LoadRow load() returned vs etl_loads");
    let in_events = cx
        .db
        .rows(&format!(
            "SELECT COUNT(*) FROM {{schema}}.events WHERE load_id = '{id}'"
        ))
        .await;
    assert_eq!(in_events, [row.events_loaded.to_string()], "events rows of {id}");
    let in_rejects = cx
        .db
        .rows(&format!(
            "SELECT COUNT(*) FROM {{schema}}.event_rejects WHERE load_id = '{id}'"
        ))
        .await;
    assert_eq!(
        in_rejects,
        [row.rejects.to_string()],
        "event_rejects rows of {id}"
    );
    let conflicting = cx
        .db
        .rows(&format!(
            "SELECT COUNT(*) FROM {{schema}}.event_rejects WHERE load_id = '{id}' \
             AND reason = 'conflicting_duplicate'"
        ))
        .await;
    assert_eq!(
        conflicting,
        [row.conflicts.to_string()],
        "conflicting duplicates of {id}"
    );
    assert!(row.finished_at >= row.started_at, "{row:?}");
    // Every file row balances on its own, not only the totals.
    let unbalanced = cx
        .db
        .rows(&format!(
            "SELECT source_key FROM {{schema}}.etl_files WHERE load_id = '{id}' \
             AND lines + recovered_events <> events_loaded + duplicates + rejects + blank_lines"
        ))
        .await;
    assert!(
        unbalanced.is_empty(),
        "file rows that do not balance: {unbalanced:?}"
    );
    // Per file, the events and rejects rows are the ones the file row counts.
    let per_file = cx
        .db
        .rows(&format!(
            "SELECT f.source_key FROM {{schema}}.etl_files f \
             WHERE f.load_id = '{id}' AND (f.events_loaded <> (SELECT COUNT(*) FROM {{schema}}.events e \
                 WHERE e.load_id = f.load_id AND e.source_key = f.source_key) \
             OR f.rejects <> (SELECT COUNT(*) FROM {{schema}}.event_rejects r \
                 WHERE r.load_id = f.load_id AND r.source_key = f.source_key))"
        ))
        .await;
    assert!(
        per_file.is_empty(),
        "file rows whose counts disagree with the data: {per_file:?}"
    );
}

async fn files_rows(cx: &Cx) -> Vec<String> {
    cx.db
        .rows(
            "SELECT source_key, etag, size_bytes, load_id, lines, events_loaded, duplicates, rejects, \
             blank_lines, recovered_events, invalid_ips FROM {schema}.etl_files ORDER BY source_key, etag",
        )
        .await
}

/// A staged load of two files commits clean events, rejects, file rows and the load row.
pub async fn load_commits_events_rejects_and_records(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let (a, b) = (sample_a(), sample_b());
    let staged = cx.stager.stage("load-1", &[a.clone(), b.clone()]).await;
    assert!(staged.events_staged == 6 && staged.rejects_staged == 4 && staged.files_staged == 2);
    let row = load(wh, &staged, "2024-06-01 00:00:00").await;
    assert_eq!(row.load_id, "load-1");
    assert_eq!(row.started_at, at("2024-06-01 00:00:00"));
    assert_eq!(row.status, "committed");
    assert_eq!(
        (
            row.files,
            row.lines,
            row.events_loaded,
            row.duplicates,
            row.rejects,
            row.blank_lines,
            row.recovered_events,
            row.invalid_ips
        ),
        (2, 10, 6, 0, 4, 1, 1, 1)
    );

    let (ka, kb) = (&a.key, &b.key);
    let events = cx.db.rows(&events_sql(cx)).await;
    let expected = [
        format!("{ID_A1} | 2024-01-01 08:00:00.123456 | alice@example.com | 10.0.0.1 | page_view | {METADATA_A1_JSONB} | {ka} | 1"),
        format!("7c1d9a3b-e54f-4b2c-8d1e-0f2a3b4c5d6e | 2024-01-02 03:04:05 | bob@example.org | 2001:db8::1 | signup | NULL | {ka} | 5"),
        format!("a1b2c3d4-e5f6-4718-893a-4b5c6d7e8f90 | 2024-01-03 00:00:00.5 | carol@example.net | NULL | click | NULL | {ka} | 6"),
        format!("b2c3d4e5-f607-4829-9a3b-5c6d7e8f9001 | 2024-01-04 00:00:00 | dave@example.com | NULL | purchase | {{}} | {ka} | 7"),
        format!("c3d4e5f6-0718-493a-8b4c-6d7e8f900112 | 2024-01-05 17:00:00 | erin@example.com | NULL | logout | NULL | {kb} | 1"),
        format!(r#"d4e5f607-1829-4a3b-9c5d-7e8f90011223 | 2024-01-06 00:00:00 | frank@example.com | NULL | view | {{"n": -1500}} | {kb} | 3"#),
    ];
    if cx.backend.dialect() == Dialect::Postgres {
        assert_eq!(events, expected);
    } else {
        // Known difference: the JSON text (column 6) is the dialect's; the value is
        // checked below.
        let mask = |rows: &[String]| -> Vec<String> {
            rows.iter()
                .map(|r| {
                    let mut c: Vec<&str> = r.split(" | ").collect();
                    if c[5] != "NULL" {
                        c[5] = "<json>";
                    }
                    c.join(" | ")
                })
                .collect()
        };
        assert_eq!(mask(&events), mask(&expected));
    }

    // metadata: the same JSON value as sent, big integer included, on every backend;
    // on PostgreSQL, exactly JSONB's normalised text.
    let meta = cx
        .db
        .rows(&format!(
            "SELECT {} FROM {{schema}}.events WHERE event_id = '{ID_A1}'",
            cx.db.json_text("metadata")
        ))
        .await;
    assert_eq!(meta.len(), 1, "{meta:?}");
    let stored: serde_json::Value = serde_json::from_str(&meta[0]).expect("metadata is JSON");
    let sent: serde_json::Value = serde_json::from_str(METADATA_A1).expect("input JSON");
    assert_eq!(stored, sent);
    assert_eq!(
        stored["big"].as_u64(),
        Some(9_007_199_254_740_993),
        "2^53 + 1 was rounded"
    );
    if cx.backend.dialect() == Dialect::Postgres {
        assert_eq!(meta[0], METADATA_A1_JSONB);
    }

    let rejects = cx
        .db
        .rows(
            "SELECT source_key, source_line, reason, raw_line, load_id FROM {schema}.event_rejects \
             ORDER BY source_key, source_line, raw_line",
        )
        .await;
    assert_eq!(
        rejects,
        [
            format!("{ka} | 3 | invalid_id | {LINE_A3} | load-1"),
            format!(r#"{ka} | 4 | malformed_json | {{"id": | load-1"#),
            format!(r#"{ka} | 7 | malformed_json | {{"id":"trunc | load-1"#),
            format!("{kb} | 2 | not_an_object | [1,2] | load-1"),
        ]
    );

    assert_eq!(
        files_rows(cx).await,
        [
            format!(
                "{ka} | etag-a | {} | load-1 | 7 | 4 | 0 | 3 | 1 | 1 | 1",
                a.bytes.len()
            ),
            format!(
                "{kb} | etag-b | {} | load-1 | 3 | 2 | 0 | 1 | 0 | 0 | 0",
                b.bytes.len()
            ),
        ]
    );
    let load_ids = cx.db.rows("SELECT DISTINCT load_id FROM {schema}.events").await;
    assert_eq!(load_ids, ["load-1"]);
    assert_totals_consistent(cx, &row).await;
    // The load's events per type are what it inserted, and what the catalog holds.
    let by_type: Vec<String> = row
        .events_by_type
        .iter()
        .map(|(name, n)| format!("{name} | {n}"))
        .collect();
    assert_eq!(
        by_type,
        cx.db
            .rows("SELECT event_name, COUNT(*) FROM {schema}.events GROUP BY 1 ORDER BY 1")
            .await
    );
    assert_eq!(
        by_type,
        cx.db
            .rows("SELECT event_name, events FROM {schema}.event_types_seen ORDER BY 1")
            .await
    );
    assert!(!by_type.is_empty());
    // recent_loads reads etl_loads, which keeps no per-type counts.
    let row = LoadRow {
        events_by_type: Default::default(),
        ..row
    };
    assert_eq!(wh.recent_loads(10).await.expect("recent_loads"), [row]);
    assert_stage_empty(cx).await;
}

const X: &str = "11111111-1111-4111-8111-111111111111";
const Y: &str = "22222222-2222-4222-8222-222222222222";
const Z: &str = "33333333-3333-4333-8333-333333333333";
const W: &str = "4444aaaa-4444-4444-8444-44444444abcd";
const V: &str = "55555555-5555-4555-8555-555555555555";

fn ev(id: &str, email: &str) -> String {
    format!(r#"{{"id":"{id}","created_at":"2024-02-01T00:00:00Z","user_email":"{email}","event_name":"e"}}"#)
}

/// Three files staged out of key order. Keys compare as bytes (as S3 lists them and the
/// pipeline loads them): `d/B.json` < `d/a.json` < `d/b.json`. X's three copies are
/// identical; Y's two and W's two (one id in upper case) differ in their email.
pub fn dedupe_files() -> Vec<Src> {
    let upper_w = W.to_uppercase();
    vec![
        src(
            "d/b.json",
            "e-b",
            &[ev(X, "x@x.io"), ev(Z, "zb2@x.io"), ev(Y, "yb3@x.io")].join("\n"),
        ),
        src(
            "d/a.json",
            "e-a",
            &[
                ev(Y, "ya1@x.io"),
                ev(W, "wa2@x.io"),
                ev(X, "x@x.io"),
                ev(&upper_w, "wa4@x.io"),
            ]
            .join("\n"),
        ),
        src("d/B.json", "e-B", &format!("\n{}\n", ev(X, "x@x.io"))),
    ]
}

/// Repeated ids within a file, across the files of one load, and against rows loaded
/// earlier: the first copy by (key, line) wins, existing rows are never overwritten, an
/// identical copy is counted as a duplicate of the file it came from, and a copy whose
/// payload differs is a conflicting duplicate, kept as a reject.
pub async fn dedupe_first_by_key_and_line_wins(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let staged = cx.stager.stage("load-1", &dedupe_files()).await;
    let row = load(wh, &staged, "2024-06-01 00:00:00").await;
    assert_eq!(
        (row.files, row.events_loaded, row.duplicates, row.conflicts),
        (3, 4, 2, 2),
        "{row:?}"
    );
    let kept = cx
        .db
        .rows("SELECT event_id, user_email, source_key, source_line, load_id FROM {schema}.events ORDER BY event_id")
        .await;
    assert_eq!(
        kept,
        [
            format!("{X} | x@x.io | d/B.json | 2 | load-1"),
            format!("{Y} | ya1@x.io | d/a.json | 1 | load-1"),
            format!("{Z} | zb2@x.io | d/b.json | 2 | load-1"),
            format!("{W} | wa2@x.io | d/a.json | 2 | load-1"),
        ]
    );
    let per_file = cx
        .db
        .rows("SELECT source_key, events_loaded, duplicates, conflicts, rejects FROM {schema}.etl_files ORDER BY source_key")
        .await;
    assert_eq!(
        per_file,
        [
            "d/B.json | 1 | 0 | 0 | 0",
            "d/a.json | 2 | 1 | 1 | 1",
            "d/b.json | 1 | 1 | 1 | 1"
        ]
    );
    let conflicts = cx
        .db
        .rows("SELECT event_id, source_key, source_line, reason, load_id FROM {schema}.event_rejects ORDER BY source_key")
        .await;
    assert_eq!(
        conflicts,
        [
            format!("{W} | d/a.json | 4 | conflicting_duplicate | load-1"),
            format!("{Y} | d/b.json | 3 | conflicting_duplicate | load-1"),
        ]
    );
    // The reject keeps the conflicting copy's cleaned payload.
    let raw = cx
        .db
        .rows(&format!(
            "SELECT raw_line FROM {{schema}}.event_rejects WHERE event_id = '{Y}'"
        ))
        .await;
    let payload: serde_json::Value = serde_json::from_str(&raw[0]).unwrap();
    assert_eq!(payload["id"], Y, "{raw:?}");
    assert_eq!(payload["user_email"], "yb3@x.io", "{raw:?}");
    assert_eq!(payload["event_name"], "e", "{raw:?}");
    assert!(
        payload["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2024-02-01 00:00:00"),
        "{raw:?}"
    );
    assert_totals_consistent(cx, &row).await;

    // A later load with an id already loaded: once identical, once with another email,
    // and a new id.
    let later = src(
        "d/c.json",
        "e-c",
        &[ev(Y, "ya1@x.io"), ev(Y, "changed@x.io"), ev(V, "v@x.io")].join("\n"),
    );
    let staged2 = cx.stager.stage("load-2", &[later]).await;
    let row2 = load(wh, &staged2, "2024-06-01 00:00:01").await;
    assert_eq!(
        (
            row2.files,
            row2.events_loaded,
            row2.duplicates,
            row2.conflicts,
            row2.rejects
        ),
        (1, 1, 1, 1, 1),
        "{row2:?}"
    );
    let y = cx
        .db
        .rows(&format!(
            "SELECT user_email, source_key, source_line, load_id FROM {{schema}}.events WHERE event_id = '{Y}'"
        ))
        .await;
    assert_eq!(
        y,
        ["ya1@x.io | d/a.json | 1 | load-1"],
        "an existing row was overwritten"
    );
    let c = cx
        .db
        .rows("SELECT events_loaded, duplicates, conflicts FROM {schema}.etl_files WHERE source_key = 'd/c.json'")
        .await;
    assert_eq!(c, ["1 | 1 | 1"]);
    assert_eq!(cx.db.rows("SELECT COUNT(*) FROM {schema}.events").await, ["5"]);
    assert_totals_consistent(cx, &row2).await;
    assert_stage_empty(cx).await;
}

/// The dedupe window (`load.dedupe_window_days`, 1 day unless set): a copy of an id is
/// a duplicate when an earlier copy has the same payload (counted only), a conflicting
/// duplicate when it differs but an earlier copy (a row of events, a conflicting
/// duplicate's reject, or an earlier copy of the same load by key and line) lies at most
/// the window away, bounds included (a reject), and otherwise another row with the same
/// id: the scan of `events` is restricted to the window, so that a load's cost does not
/// grow with history. The rule is the same within a load as across loads.
pub async fn dedupe_window_decides_what_is_a_repeat(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let at = |t: &str| format!(r#"{{"id":"{X}","created_at":"{t}","user_email":"a@x.io","event_name":"e"}}"#);
    let mut n = 0;
    let mut load_one = |t: &'static str| {
        n += 1;
        (n, at(t))
    };
    let mut outcomes = Vec::new();
    for t in [
        "2024-02-01T00:00:00Z",        // first copy
        "2024-02-02T00:00:00Z",        // exactly one day later: a conflict
        "2024-02-02T00:00:00.000001Z", // 1 µs from that conflict: a conflict too
        "2024-01-30T23:59:59Z",        // one day and 1 s earlier than the first: a second row
        "2024-02-01T12:00:00Z",        // within a day of rows: a conflict
        "2024-02-01T00:00:00Z",        // the first copy again: a duplicate
    ] {
        let (i, line) = load_one(t);
        let staged = cx
            .stager
            .stage(&format!("load-{i}"), &[src(&format!("w/{i}.json"), "e", &line)])
            .await;
        let row = load(wh, &staged, "2024-06-01 00:00:00").await;
        assert_totals_consistent(cx, &row).await;
        outcomes.push((row.events_loaded, row.duplicates, row.conflicts));
    }
    assert_eq!(
        outcomes,
        [(1, 0, 0), (0, 0, 1), (0, 0, 1), (1, 0, 0), (0, 0, 1), (0, 1, 0)]
    );
    let rows = || async {
        cx.db
            .rows(&format!(
                "SELECT created_at, source_key, load_id FROM {{schema}}.events WHERE event_id = '{X}' ORDER BY created_at"
            ))
            .await
    };
    assert_eq!(
        rows().await,
        [
            "2024-01-30 23:59:59 | w/4.json | load-4",
            "2024-02-01 00:00:00 | w/1.json | load-1",
        ]
    );
    // Within one load the window applies as across loads: two months apart are two
    // rows; an hour apart, a row and a conflict (the first by key and line is the row).
    let copies = [
        at("2024-03-01T00:00:00Z"),
        at("2024-05-01T00:00:00Z"),
        at("2024-05-01T01:00:00Z"),
    ]
    .join("\n");
    let staged = cx.stager.stage("load-7", &[src("w/7.json", "e", &copies)]).await;
    let row = load(wh, &staged, "2024-06-01 00:00:01").await;
    assert_eq!(
        (row.events_loaded, row.duplicates, row.conflicts),
        (2, 0, 1),
        "{row:?}"
    );
    assert_totals_consistent(cx, &row).await;

    // A wider window, as configured: 3 days from the conflicts is a conflict.
    let wide = cx
        .backend
        .connect_with_window(cx.db.namespace(), cx.stager.place.clone(), 3)
        .await;
    let staged = cx
        .stager
        .stage(
            "load-8",
            &[src("w/8.json", "e", &at("2024-02-05T00:00:00.000001Z"))],
        )
        .await;
    let row = load(&*wide, &staged, "2024-06-01 00:00:02").await;
    assert_eq!(
        (row.events_loaded, row.duplicates, row.conflicts),
        (0, 0, 1),
        "{row:?}"
    );
    // And with the window at 0, only the same created_at is a repeat.
    let exact = cx
        .backend
        .connect_with_window(cx.db.namespace(), cx.stager.place.clone(), 0)
        .await;
    for (i, t, loaded) in [(9, "2024-02-01T00:00:00Z", 0), (10, "2024-02-01T00:00:01Z", 1)] {
        let staged = cx
            .stager
            .stage(&format!("load-{i}"), &[src(&format!("w/{i}.json"), "e", &at(t))])
            .await;
        let row = load(&*exact, &staged, "2024-06-01 00:00:03").await;
        assert_eq!(row.events_loaded, loaded, "{t}: {row:?}");
        assert_eq!(row.conflicts, 0, "{t}: {row:?}");
    }
    assert_eq!(
        cx.db
            .rows(&format!(
                "SELECT COUNT(*) FROM {{schema}}.events WHERE event_id = '{X}'"
            ))
            .await,
        ["5"]
    );
    assert_stage_empty(cx).await;
}

/// Copies of one id however many: an id sent in every line of a file, each copy a day
/// and a half after the one before and each with its own payload, gives rows and
/// conflicts by the window's rule, found without comparing copies pairwise; and the
/// same copies loaded one by one give the same rows.
pub async fn many_copies_of_one_id_follow_the_window(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    // Times 0, 1.5, 3, 4.5, ... days, then each again 12 h later. With a window of one
    // day, each first copy is more than a day from the previous first copy: a row. Each
    // second copy is 12 h after its first: a conflict.
    let start = chrono::NaiveDate::from_ymd_opt(2024, 3, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let line = |k: i64, half: bool| {
        let t = start + chrono::Duration::hours(36 * k + if half { 12 } else { 0 });
        format!(
            r#"{{"id":"{V}","created_at":"{}Z","user_email":"a{k}@x.io","event_name":"e"}}"#,
            t.format("%Y-%m-%dT%H:%M:%S")
        )
    };
    let mut lines = Vec::new();
    for k in 0..12 {
        lines.push(line(k, false));
    }
    for k in (0..12).rev() {
        lines.push(line(k, true));
    }
    let staged = cx
        .stager
        .stage("load-1", &[src("m/1.json", "e", &lines.join("\n"))])
        .await;
    let row = load(wh, &staged, "2024-06-01 00:00:00").await;
    assert_eq!(
        (row.events_loaded, row.duplicates, row.conflicts),
        (12, 0, 12),
        "{row:?}"
    );
    assert_totals_consistent(cx, &row).await;
    // The same copies, one load per copy, in the same order, under another id: the same
    // rows.
    for (i, l) in lines.iter().enumerate() {
        let l = l.replace(V, W);
        let staged = cx
            .stager
            .stage(&format!("load-n{i}"), &[src(&format!("m/n{i:03}.json"), "e", &l)])
            .await;
        load(wh, &staged, "2024-06-01 00:00:01").await;
    }
    let per_id = cx
        .db
        .rows(&format!(
            "SELECT event_id, COUNT(*) FROM {{schema}}.events WHERE event_id IN ('{V}', '{W}') \
             GROUP BY event_id ORDER BY event_id"
        ))
        .await;
    let times = |id: &'static str| async move {
        cx.db
            .rows(&format!(
                "SELECT created_at FROM {{schema}}.events WHERE event_id = '{id}' ORDER BY created_at"
            ))
            .await
    };
    assert_eq!(times(V).await, times(W).await);
    assert_eq!(per_id.len(), 2, "{per_id:?}");
    assert!(per_id.iter().all(|r| r.ends_with("| 12")), "{per_id:?}");
}

/// recorded_versions: exactly the (key, ETag) pairs loaded, among the keys asked about.
pub async fn recorded_versions_are_exact(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let keys = |ks: &[&str]| ks.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        wh.recorded_versions(&keys(&["r/1.json"])).await.expect("rv"),
        HashSet::new()
    );
    let files = [
        src("r/1.json", "v1", &ev(X, "a@x.io")),
        src("r/2.json", "v2", "\n"),
    ];
    let staged = cx.stager.stage("load-1", &files).await;
    load(wh, &staged, "2024-06-01 00:00:00").await;
    let pair = |k: &str, e: &str| (k.to_owned(), e.to_owned());
    let all = wh
        .recorded_versions(&keys(&["r/1.json", "r/2.json", "r/3.json"]))
        .await
        .expect("rv");
    assert_eq!(
        all,
        HashSet::from([pair("r/1.json", "v1"), pair("r/2.json", "v2")])
    );
    let one = wh.recorded_versions(&keys(&["r/2.json"])).await.expect("rv");
    assert_eq!(one, HashSet::from([pair("r/2.json", "v2")]));
    assert!(!one.contains(&pair("r/2.json", "v1")));
    assert_eq!(wh.recorded_versions(&[]).await.expect("rv"), HashSet::new());
    // A new version of r/1.json, loaded: both versions are recorded; an unseen ETag is not.
    let staged = cx
        .stager
        .stage("load-2", &[src("r/1.json", "v1b", &ev(Y, "b@x.io"))])
        .await;
    load(wh, &staged, "2024-06-01 00:00:01").await;
    let got = wh.recorded_versions(&keys(&["r/1.json"])).await.expect("rv");
    assert_eq!(
        got,
        HashSet::from([pair("r/1.json", "v1"), pair("r/1.json", "v1b")])
    );
    assert!(!got.contains(&pair("r/1.json", "v9")));
    // unsettled_versions is the complement, by position: of these versions only the
    // unseen ETag and the unseen key are not settled.
    let asked = [
        ("r/1.json", "v1"),
        ("r/1.json", "v9"),
        ("r/2.json", "v2"),
        ("r/3.json", "v3"),
        ("r/1.json", "v1b"),
    ];
    assert_eq!(wh.unsettled_versions(&asked).await.expect("uv"), [1, 3]);
    assert_eq!(wh.unsettled_versions(&[]).await.expect("uv"), Vec::<usize>::new());
    // A version with an open reload request is not settled.
    let at = chrono::NaiveDate::from_ymd_opt(2024, 6, 2)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    wh.request_reload("r/2.json", "v2", at).await.expect("reload");
    assert_eq!(wh.unsettled_versions(&asked).await.expect("uv"), [1, 2, 3]);
}

/// A load staging a file version another load recorded meanwhile skips it; a load whose
/// files were all recorded commits nothing and returns None.
pub async fn concurrently_recorded_files_are_skipped(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let f1 = src(
        "c/1.json",
        "e1",
        &[ev(X, "x1@x.io"), ev(Y, "y1@x.io"), "oops".to_owned()].join("\n"),
    );
    let f2 = src(
        "c/2.json",
        "e2",
        &[ev(Z, "z2@x.io"), ev(X, "x1@x.io"), "[]".to_owned()].join("\n"),
    );
    // Both loaders clean before either commits.
    let first = cx.stager.stage("load-1", std::slice::from_ref(&f1)).await;
    let second = cx.stager.stage("load-2", &[f1.clone(), f2.clone()]).await;
    let all_recorded = cx.stager.stage("load-3", &[f1.clone(), f2.clone()]).await;

    let row1 = load(wh, &first, "2024-06-01 00:00:00").await;
    assert_eq!((row1.files, row1.events_loaded, row1.rejects), (1, 2, 1));
    let row2 = load(wh, &second, "2024-06-01 00:00:01").await;
    assert_eq!(
        (
            row2.files,
            row2.lines,
            row2.events_loaded,
            row2.duplicates,
            row2.rejects
        ),
        (1, 3, 1, 1, 1),
        "only c/2.json is loaded by load-2: {row2:?}"
    );
    assert_eq!(
        files_rows(cx).await,
        [
            format!(
                "c/1.json | e1 | {} | load-1 | 3 | 2 | 0 | 1 | 0 | 0 | 0",
                f1.bytes.len()
            ),
            format!(
                "c/2.json | e2 | {} | load-2 | 3 | 1 | 1 | 1 | 0 | 0 | 0",
                f2.bytes.len()
            ),
        ]
    );
    let events = cx
        .db
        .rows("SELECT event_id, user_email, load_id FROM {schema}.events ORDER BY event_id")
        .await;
    assert_eq!(
        events,
        [
            format!("{X} | x1@x.io | load-1"),
            format!("{Y} | y1@x.io | load-1"),
            format!("{Z} | z2@x.io | load-2"),
        ]
    );
    let rejects = cx
        .db
        .rows("SELECT source_key, source_line, load_id FROM {schema}.event_rejects ORDER BY source_key")
        .await;
    assert_eq!(rejects, ["c/1.json | 3 | load-1", "c/2.json | 3 | load-2"]);
    assert_totals_consistent(cx, &row2).await;

    let before = cx.db.snapshot().await;
    let none = wh
        .load(&all_recorded, at("2024-06-01 00:00:02"))
        .await
        .expect("load of recorded files");
    assert_eq!(none, None, "a load of recorded files only must return None");
    assert_eq!(
        cx.db.snapshot().await,
        before,
        "a load of recorded files changed tables"
    );
    let loads = cx
        .db
        .rows("SELECT load_id FROM {schema}.etl_loads ORDER BY load_id")
        .await;
    assert_eq!(loads, ["load-1", "load-2"]);
    assert_stage_empty(cx).await;
}

async fn staged_manifest(cx: &Cx, key: &str) -> Manifest {
    let mut body = cx.stager.place.store.get(key).await.expect("manifest");
    let mut text = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut text)
        .await
        .expect("read manifest");
    serde_json::from_slice(&text).expect("manifest JSON")
}

/// A manifest naming a part that is gone: the load fails naming it, and leaves every
/// table exactly as it was; the adapter keeps working.
pub async fn missing_part_fails_and_leaves_nothing(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let base = cx.stager.stage("load-0", &[sample_b()]).await;
    load(wh, &base, "2024-06-01 00:00:00").await;

    let files = [sample_a(), src("m/2.json", "m2", &ev(X, "x@x.io"))];
    let staged = cx.stager.stage("load-1", &files).await;
    let manifest = staged_manifest(cx, &staged.events_manifest).await;
    assert!(manifest.entries.len() >= 2, "want several parts: {manifest:?}");
    let url = manifest.entries[1].url.clone();
    let key = cx.stager.place.store.key_of(&url).expect("part key");
    assert_eq!(
        cx.stager.place.store.delete_prefix(&key).await.expect("delete"),
        1
    );

    let before = cx.db.snapshot().await;
    let (result, told) = load_telling(wh, &staged, "2024-06-01 00:00:01").await;
    let e = result.expect_err("a load with a missing part must fail");
    assert!(e.to_string().contains(&url), "error must name {url}: {e}");
    assert!(
        !told,
        "a COPY failed: the staged objects must stay for inspection"
    );
    assert_failed_load_left_nothing(cx, &before).await;
    let keys: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
    assert_eq!(wh.recorded_versions(&keys).await.expect("rv"), HashSet::new());

    // Restaged, the same files load.
    let again = cx.stager.stage("load-2", &files).await;
    let row = load(wh, &again, "2024-06-01 00:00:02").await;
    assert_eq!((row.files, row.events_loaded), (2, 5), "{row:?}");
    assert_totals_consistent(cx, &row).await;
}

/// A manifest changed under the load (here: its last part dropped, as if staging were
/// rewritten between staging and loading): the load fails and leaves every table as it
/// was. PostgreSQL reads the manifest and finds it is not the one the load wrote, and
/// says so naming it; Redshift's COPY loads what the manifest lists, and the row-count
/// check refuses the shortfall.
pub async fn changed_manifest_fails_and_leaves_nothing(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let files = [sample_a(), src("m/2.json", "m2", &ev(X, "x@x.io"))];
    let staged = cx.stager.stage("load-1", &files).await;
    let mut manifest = staged_manifest(cx, &staged.events_manifest).await;
    assert!(manifest.entries.len() >= 2, "want several parts: {manifest:?}");
    manifest.entries.pop();
    cx.stager
        .place
        .store
        .put(&staged.events_manifest, manifest.to_json())
        .await
        .expect("rewrite the manifest");

    let before = cx.db.snapshot().await;
    let (result, told) = load_telling(wh, &staged, "2024-06-01 00:00:01").await;
    let e = result.expect_err("a load whose manifest changed must fail");
    assert!(
        !told,
        "the COPY's check failed: the staged objects must stay for inspection"
    );
    if cx.backend.dialect() == Dialect::Postgres {
        let url = cx.stager.place.store.url(&staged.events_manifest);
        assert!(
            e.to_string().contains(&url) && e.to_string().contains("is not the one this load wrote"),
            "error must name {url}: {e}"
        );
    }
    assert_failed_load_left_nothing(cx, &before).await;
    let keys: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
    assert_eq!(wh.recorded_versions(&keys).await.expect("rv"), HashSet::new());
}

/// What a load leaves, minus load ids and timestamps: comparable across namespaces.
async fn contents(cx: &Cx) -> Vec<String> {
    let mut out = cx.db.rows(&events_sql(cx)).await;
    out.push("--- rejects".into());
    out.extend(
        cx.db
            .rows(
                "SELECT source_key, source_line, reason, raw_line FROM {schema}.event_rejects \
                 ORDER BY source_key, source_line, raw_line",
            )
            .await,
    );
    out.push("--- files".into());
    out.extend(
        cx.db
            .rows(
                "SELECT source_key, etag, size_bytes, lines, events_loaded, duplicates, rejects, \
                 blank_lines, recovered_events, invalid_ips FROM {schema}.etl_files ORDER BY source_key, etag",
            )
            .await,
    );
    out
}

/// A load failing at its last statement (recording the load) leaves nothing; once the
/// cause is gone, the same staged load gives what a clean load of the input gives.
pub async fn failure_at_last_statement_rolls_back_everything(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let base = src("t/0.json", "t0", &[ev(X, "x0@x.io"), ev(Y, "y0@x.io")].join("\n"));
    let base_load = cx.stager.stage("load-0", std::slice::from_ref(&base)).await;
    load(wh, &base_load, "2024-06-01 00:00:00").await;

    let mut files = dedupe_files();
    files.push(sample_a());
    let staged = cx.stager.stage("load-1", &files).await;
    cx.db.break_load_recording().await;
    let before = cx.db.snapshot().await;
    let (result, told) = load_telling(wh, &staged, "2024-06-01 00:00:01").await;
    let e = result.expect_err("recording the load must fail");
    assert!(
        matches!(e, WarehouseError::Statement { ref statement, .. } if statement == "insert_load"),
        "{e:?}"
    );
    assert!(
        told,
        "the COPYs finished before the failure: the staged objects are not needed"
    );
    assert_failed_load_left_nothing(cx, &before).await;

    cx.db.repair_load_recording().await;
    let row = load(wh, &staged, "2024-06-01 00:00:02").await;
    assert_totals_consistent(cx, &row).await;
    assert_stage_empty(cx).await;

    // The same input, loaded cleanly in a fresh namespace.
    let clean = cx.backend.clone().fresh("rollback_ref").await;
    migrated(&*clean.wh).await;
    let b = clean.cx.stager.stage("load-0", &[base]).await;
    load(&*clean.wh, &b, "2024-06-01 00:00:00").await;
    let s = clean.cx.stager.stage("load-1", &files).await;
    load(&*clean.wh, &s, "2024-06-01 00:00:01").await;
    let want = contents(&clean.cx).await;
    assert!(want.len() > 10, "{want:#?}");
    assert_eq!(contents(cx).await, want);
}

/// The adapter says its COPYs have read the staged objects while the load still runs,
/// not only once it has ended: here the load cannot write `events` (another session
/// holds a SHARE lock on it), yet the `StagedRead` is told, and nothing is committed
/// until the lock goes. Then the load commits as usual.
pub async fn staged_objects_are_released_before_the_load_ends(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let staged = cx.stager.stage("load-1", &[sample_a()]).await;
    let lock = cx.db.hold("LOCK TABLE {schema}.events IN SHARE MODE").await;
    let (read, told) = StagedRead::channel();
    let load = wh.load_reporting(&staged, at("2024-06-01 00:00:01"), read);
    tokio::pin!(load);
    // A guard against a hang only: a load blocked on the lock never ends by itself.
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::select! {
            r = &mut load => panic!("the load ended while events was locked: {r:?}"),
            t = told => t.is_ok(),
        }
    })
    .await;
    assert_eq!(waited, Ok(true), "told while the load waits for events");
    assert_eq!(
        cx.db.rows("SELECT COUNT(*) FROM {schema}.etl_loads").await,
        ["0"],
        "nothing committed yet"
    );
    drop(lock);
    let row = match tokio::time::timeout(Duration::from_secs(120), load).await {
        Ok(Ok(events_etl::warehouse::Loaded { row: Some(row), .. })) => row,
        other => panic!("the load must commit once events is free: {other:?}"),
    };
    assert_totals_consistent(cx, &row).await;
}

/// A load whose files hold only blanks and rejects (or nothing) commits and records them.
pub async fn load_without_events_records_files(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let files = [
        src("r/empty.json", "e0", ""),
        src("r/junk.json", "e1", "\n  \nnot json\n[1]\n"),
    ];
    let staged = cx.stager.stage("load-1", &files).await;
    assert_eq!(staged.events_staged, 0);
    let row = load(wh, &staged, "2024-06-01 00:00:00").await;
    assert_eq!(
        (
            row.files,
            row.lines,
            row.events_loaded,
            row.duplicates,
            row.rejects,
            row.blank_lines
        ),
        (2, 4, 0, 0, 2, 2),
        "{row:?}"
    );
    assert_eq!(
        files_rows(cx).await,
        [
            "r/empty.json | e0 | 0 | load-1 | 0 | 0 | 0 | 0 | 0 | 0 | 0".to_owned(),
            format!(
                "r/junk.json | e1 | {} | load-1 | 4 | 0 | 0 | 2 | 2 | 0 | 0",
                files[1].bytes.len()
            ),
        ]
    );
    assert_eq!(cx.db.rows("SELECT COUNT(*) FROM {schema}.events").await, ["0"]);
    let rejects = cx
        .db
        .rows("SELECT source_line, reason FROM {schema}.event_rejects ORDER BY source_line")
        .await;
    assert_eq!(rejects, ["3 | malformed_json", "4 | not_an_object"]);
    assert_totals_consistent(cx, &row).await;
    assert_stage_empty(cx).await;
}

/// recent_loads: newest (by start) first, at most `limit`.
pub async fn recent_loads_newest_first(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let mut rows = Vec::new();
    // Committed in this order, started at 10:00, 12:00, 11:00.
    for (i, started) in [
        "2024-06-01 10:00:00",
        "2024-06-01 12:00:00",
        "2024-06-01 11:00:00",
    ]
    .iter()
    .enumerate()
    {
        let f = src(&format!("n/{i}.json"), "e", &"\n".repeat(i + 1));
        let staged = cx.stager.stage(&format!("load-{i}"), &[f]).await;
        rows.push(load(wh, &staged, started).await);
    }
    let ids = |rs: &[LoadRow]| rs.iter().map(|r| r.load_id.clone()).collect::<Vec<_>>();
    let all = wh.recent_loads(10).await.expect("recent_loads");
    assert_eq!(ids(&all), ["load-1", "load-2", "load-0"]);
    assert_eq!(all, [rows[1].clone(), rows[2].clone(), rows[0].clone()]);
    let two = wh.recent_loads(2).await.expect("recent_loads");
    assert_eq!(ids(&two), ["load-1", "load-2"]);
    assert_eq!(wh.recent_loads(1).await.expect("recent_loads"), [rows[1].clone()]);
    assert_eq!(wh.recent_loads(0).await.expect("recent_loads"), []);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

struct PgBackend {
    pg: &'static support::PgServer,
}

struct PgDb {
    pg: &'static support::PgServer,
    client: tokio_postgres::Client,
    schema: String,
}

/// On a failing check, prints what the schema holds.
impl Drop for PgDb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let (pg, schema) = (self.pg, self.schema.clone());
        let dump = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(pg.dump(&schema)))
                .unwrap_or_else(|e| format!("(no runtime for the dump: {e})"))
        })
        .join()
        .unwrap_or_else(|_| "(dump panicked)".into());
        eprintln!("{dump}");
    }
}

#[async_trait]
impl Db for PgDb {
    fn namespace(&self) -> &str {
        &self.schema
    }

    async fn rows(&self, sql: &str) -> Vec<String> {
        let sql = sql.replace("{schema}", &self.schema);
        let msgs = self
            .client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", pg_message(&e)));
        msgs.iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL"))
                        .collect::<Vec<_>>()
                        .join(" | "),
                ),
                _ => None,
            })
            .collect()
    }

    async fn exec(&self, sql: &str) {
        let sql = sql.replace("{schema}", &self.schema);
        self.client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", pg_message(&e)));
    }

    fn json_text(&self, column: &str) -> String {
        format!("CAST({column} AS TEXT)")
    }

    async fn snapshot(&self) -> String {
        let tables = self
            .rows(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p') ORDER BY c.relname",
            )
            .await;
        let mut out = String::new();
        for t in tables {
            out.push_str(&format!("--- {t}\n"));
            for row in self
                .rows(&format!(
                    "SELECT CAST(t AS TEXT) FROM {{schema}}.{t} t ORDER BY 1"
                ))
                .await
            {
                out.push_str(&row);
                out.push('\n');
            }
        }
        out
    }

    async fn hold(&self, sql: &str) -> Box<dyn std::any::Any + Send> {
        let client = self.pg.client().await;
        let sql = format!("BEGIN; {}", sql.replace("{schema}", &self.schema));
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", pg_message(&e)));
        Box::new(client)
    }

    async fn break_load_recording(&self) {
        self.pg
            .break_load_recording(&self.schema, "conformance: INSERT into etl_loads refused")
            .await;
    }

    async fn repair_load_recording(&self) {
        self.pg.repair_load_recording(&self.schema).await;
    }
}

#[async_trait]
impl Backend for PgBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn fresh(self: Arc<Self>, label: &str) -> Env {
        let schema = self.pg.fresh_schema(label).await;
        let dir = tempfile::tempdir().expect("staging dir");
        let staging = Place {
            store: Arc::new(LocalStore::new(dir.path().to_path_buf())),
            prefix: "staging/".into(),
        };
        let pg = self.pg;
        env_on_postgres(self, pg, schema, staging, dir).await
    }

    async fn connect(&self, namespace: &str, staging: Place) -> Box<dyn Warehouse> {
        match Postgres::connect(&self.pg.url(), namespace, staging).await {
            Ok(p) => Box::new(p),
            Err(e) => panic!("connect: {e}"),
        }
    }

    async fn connect_with_window(&self, namespace: &str, staging: Place, days: u32) -> Box<dyn Warehouse> {
        match Postgres::connect(&self.pg.url(), namespace, staging).await {
            Ok(p) => Box::new(p.with_dedupe_window_days(days)),
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// An adapter of `backend` on `schema`, checked through plain SQL on the test PostgreSQL
/// (which the Redshift stand-in runs on too).
async fn env_on_postgres(
    backend: Arc<dyn Backend>,
    pg: &'static support::PgServer,
    schema: String,
    staging: Place,
    dir: tempfile::TempDir,
) -> Env {
    let wh = backend.connect(&schema, staging.clone()).await;
    let db = PgDb {
        pg,
        client: pg.client().await,
        schema,
    };
    Env {
        wh,
        cx: Cx {
            db: Box::new(db),
            stager: Stager::new(staging),
            backend,
        },
        _staging_dir: dir,
    }
}

async fn pg_backend() -> Arc<PgBackend> {
    Arc::new(PgBackend {
        pg: support::postgres().await,
    })
}

// ---------------------------------------------------------------------------------------
// Redshift Data API (against the stand-in)
// ---------------------------------------------------------------------------------------

const STAGING_BUCKET: &str = "conformance-staging";

struct RedshiftBackend {
    pg: &'static support::PgServer,
    s3: support::S3Server,
    data_api: support::redshift_data::DataApiServer,
}

fn redshift_config() -> events_etl::config::RedshiftConfig {
    use support::redshift_data::{TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER};
    events_etl::config::RedshiftConfig {
        target: events_etl::config::RedshiftTarget::ClusterDbUser {
            cluster_identifier: TEST_CLUSTER.into(),
            db_user: TEST_DB_USER.into(),
        },
        database: TEST_DATABASE.into(),
        iam_role: "arn:aws:iam::123456789012:role/events-etl-copy".into(),
        copy_region: None,
        statement_timeout: Duration::from_secs(60),
        max_poll_interval: Duration::from_millis(100),
    }
}

#[async_trait]
impl Backend for RedshiftBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Redshift
    }

    async fn fresh(self: Arc<Self>, label: &str) -> Env {
        let schema = self.pg.fresh_schema(label).await;
        // Redshift's staging must be S3: COPY reads it. The tempdir is unused but keeps
        // `Env` uniform.
        let dir = tempfile::tempdir().expect("staging dir");
        let staging = Place {
            store: Arc::new(events_etl::store::s3::S3Store::with_client(
                self.s3.client().await,
                STAGING_BUCKET,
            )),
            prefix: format!("staging/{schema}/"),
        };
        let pg = self.pg;
        env_on_postgres(self, pg, schema, staging, dir).await
    }

    async fn connect(&self, namespace: &str, staging: Place) -> Box<dyn Warehouse> {
        Box::new(events_etl::warehouse::redshift::Redshift::with_client(
            self.data_api.client().await,
            &redshift_config(),
            namespace,
            staging,
        ))
    }

    async fn connect_with_window(&self, namespace: &str, staging: Place, days: u32) -> Box<dyn Warehouse> {
        Box::new(
            events_etl::warehouse::redshift::Redshift::with_client(
                self.data_api.client().await,
                &redshift_config(),
                namespace,
                staging,
            )
            .with_dedupe_window_days(days),
        )
    }
}

async fn redshift_backend() -> Arc<RedshiftBackend> {
    let s3 = support::s3().await;
    s3.create_bucket(STAGING_BUCKET).await;
    let data_api = support::redshift_data::redshift_data(s3.client().await).await;
    Arc::new(RedshiftBackend {
        pg: support::postgres().await,
        s3,
        data_api,
    })
}

/// The event catalog counts what each load inserted, per type: never a duplicate
/// (within a load, or of a row loaded before, or a reloaded file's rows), and its first
/// and last times are the types' earliest and latest `created_at`.
pub async fn catalog_counts_what_each_load_inserted(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let ev = |n: u32, day: u32, name: &str| {
        format!(
            r#"{{"id":"{n:08x}-0000-4000-8000-000000000000","created_at":"2024-02-{day:02} 10:00:00","user_email":"a@b.co","event_name":"{name}"}}"#
        )
    };
    let catalog =
        "SELECT event_name, events, first_seen, last_seen FROM {schema}.event_types_seen ORDER BY 1";
    let from_events = "SELECT event_name, COUNT(*), MIN(created_at), MAX(created_at) FROM {schema}.events GROUP BY 1 ORDER BY 1";
    let first = src(
        "c/1.json",
        "e1",
        &[ev(1, 5, "a"), ev(2, 7, "a"), ev(3, 6, "b"), ev(1, 5, "a")].join("\n"),
    );
    let row = load(
        wh,
        &cx.stager.stage("load-1", std::slice::from_ref(&first)).await,
        "2024-06-01 00:00:00",
    )
    .await;
    assert_eq!(row.events_by_type, [("a".into(), 2), ("b".into(), 1)].into());
    assert_eq!(cx.db.rows(catalog).await, cx.db.rows(from_events).await);
    // Old ids again, an earlier `a`, a new type.
    let second = src(
        "c/2.json",
        "e2",
        &[ev(2, 7, "a"), ev(4, 1, "a"), ev(5, 9, "c"), ev(3, 6, "b")].join("\n"),
    );
    let row = load(
        wh,
        &cx.stager.stage("load-2", &[second]).await,
        "2024-06-01 00:00:01",
    )
    .await;
    assert_eq!(row.events_by_type, [("a".into(), 1), ("c".into(), 1)].into());
    assert_eq!(row.duplicates, 2);
    assert_eq!(cx.db.rows(catalog).await, cx.db.rows(from_events).await);
    assert_eq!(
        cx.db
            .rows("SELECT event_name, events FROM {schema}.event_types_seen ORDER BY 1")
            .await,
        ["a | 3", "b | 1", "c | 1"]
    );
    // A reloaded file inserts nothing new: the catalog does not move.
    let before = cx.db.rows(catalog).await;
    wh.request_reload(&first.key, &first.etag, at("2024-06-02 00:00:00"))
        .await
        .expect("reload");
    let row = load(
        wh,
        &cx.stager.stage("load-3", &[first]).await,
        "2024-06-02 00:00:01",
    )
    .await;
    assert!(row.events_by_type.is_empty(), "{row:?}");
    assert_eq!(cx.db.rows(catalog).await, before);
    assert_eq!(
        wh.event_catalog()
            .await
            .expect("event_catalog")
            .iter()
            .map(|c| format!(
                "{} | {} | {} | {}",
                c.event_name, c.events, c.first_seen, c.last_seen
            ))
            .collect::<Vec<_>>(),
        [
            "a | 3 | 2024-02-01 10:00:00 | 2024-02-07 10:00:00",
            "b | 1 | 2024-02-06 10:00:00 | 2024-02-06 10:00:00",
            "c | 1 | 2024-02-09 10:00:00 | 2024-02-09 10:00:00",
        ]
    );
}

/// Two `migrate` runs bringing the views in line at once: both succeed, each view is
/// made once and recorded once.
pub async fn concurrent_view_syncs_agree(wh: &dyn Warehouse, cx: &Cx) {
    migrated(wh).await;
    let other = cx
        .backend
        .connect(cx.db.namespace(), cx.stager.place.clone())
        .await;
    let types = support::event_types(&[
        ("page_visit", &[("path", "text")]),
        ("message_saved", &[("message_id", "bigint")]),
    ]);
    let (a, b) = tokio::join!(wh.sync_views(&types), other.sync_views(&types));
    let (a, b) = (a.expect("first"), b.expect("second"));
    let mut made: Vec<String> = a.iter().chain(&b).map(|c| c.view_name.clone()).collect();
    made.sort();
    assert_eq!(made, ["events_message_saved", "events_page_visit"]);
    assert_eq!(
        cx.db
            .rows("SELECT view_name FROM {schema}.event_type_views ORDER BY 1")
            .await,
        ["events_message_saved", "events_page_visit"]
    );
    assert!(wh.sync_views(&types).await.expect("again").is_empty());
    assert_eq!(
        cx.db
            .rows("SELECT COUNT(*) FROM {schema}.events_page_visit")
            .await,
        ["0"]
    );
}

/// One `#[tokio::test]` per check, each on a fresh namespace of `$backend`.
macro_rules! conformance {
    ($module:ident, $backend:expr, [$($check:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $check() {
                    let env = super::Backend::fresh($backend.await, stringify!($check)).await;
                    super::$check(&*env.wh, &env.cx).await;
                }
            )*
        }
    };
}

/// Every check, for every backend: a new check runs on all adapters at once.
macro_rules! every_check {
    ($module:ident, $backend:expr) => {
        conformance!(
            $module,
            $backend,
            [
                migrate_creates_tables,
                concurrent_migrates_apply_each_once,
                absent_and_null_metadata_load_as_sql_null,
                times_and_invalid_ips,
                quarantine_settles_a_version,
                quarantine_alarms_clear,
                pending_versions_are_remembered_per_range,
                runs_are_recorded,
                reload_reads_a_version_again,
                migrate_refuses_edited,
                migrate_refuses_unknown_version,
                operations_before_migrate_say_migrate,
                load_commits_events_rejects_and_records,
                staged_objects_are_released_before_the_load_ends,
                dedupe_first_by_key_and_line_wins,
                dedupe_window_decides_what_is_a_repeat,
                many_copies_of_one_id_follow_the_window,
                recorded_versions_are_exact,
                concurrently_recorded_files_are_skipped,
                missing_part_fails_and_leaves_nothing,
                changed_manifest_fails_and_leaves_nothing,
                failure_at_last_statement_rolls_back_everything,
                load_without_events_records_files,
                recent_loads_newest_first,
                catalog_counts_what_each_load_inserted,
                concurrent_view_syncs_agree,
            ]
        );
    };
}

every_check!(postgres, super::pg_backend());
every_check!(redshift, super::redshift_backend());

/// PostgreSQL only: a database whose default collation is not bytewise (most installs:
/// en_US.UTF-8) must still pick the first copy of an id by the keys' byte order, which is
/// the order S3 lists and the pipeline loads in (and Redshift compares in). Simulated
/// with an ICU collation on the staging column.
#[tokio::test]
async fn postgres_dedupe_ignores_the_database_collation() {
    let env = pg_backend().await.fresh("collation").await;
    migrated(&*env.wh).await;
    let icu = env
        .cx
        .db
        .rows("SELECT collname FROM pg_collation WHERE collname = 'und-x-icu'")
        .await;
    if icu.is_empty() {
        eprintln!("skipped: this PostgreSQL has no ICU collations");
        return;
    }
    env.cx
        .db
        .exec(
            "ALTER TABLE {schema}.stage_events ALTER COLUMN source_key \
             TYPE VARCHAR(1024) COLLATE \"und-x-icu\"",
        )
        .await;
    dedupe_first_by_key_and_line_wins(&*env.wh, &env.cx).await;
}

/// A migration marked `-- events-etl: no-transaction` runs its statements outside a
/// transaction (PostgreSQL refuses `CREATE INDEX CONCURRENTLY` inside one); unmarked,
/// the same file fails and records nothing.
#[tokio::test]
async fn postgres_no_transaction_migrations_run_outside_a_transaction() {
    const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS {schema};\nCREATE TABLE {schema}.t (v VARCHAR(10));\n";
    const MARKED: &str =
        "-- events-etl: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_v ON {schema}.t (v);\n";
    const UNMARKED: &str = "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_v ON {schema}.t (v);\n";
    let pg = support::postgres().await;
    for (second, ok) in [(MARKED, true), (UNMARKED, false)] {
        let schema = pg.fresh_schema("pg_notx").await;
        let dir = tempfile::tempdir().expect("staging dir");
        let staging = Place {
            store: Arc::new(LocalStore::new(dir.path().to_path_buf())),
            prefix: "staging/".into(),
        };
        let wh = Postgres::connect(&pg.url(), &schema, staging)
            .await
            .expect("connect");
        let files: [(&'static str, &'static str); 2] = [("0001_t.sql", CREATE), ("0002_index.sql", second)];
        let result = wh.migrate_files(&files).await;
        let versions: i64 = pg
            .client()
            .await
            .query_one(&format!("SELECT count(*) FROM {schema}.schema_migrations"), &[])
            .await
            .expect("count")
            .get(0);
        if ok {
            let applied = result.expect("a marked migration runs outside a transaction");
            assert_eq!(applied.len(), 2);
            assert_eq!(versions, 2);
        } else {
            let e = result.expect_err("CREATE INDEX CONCURRENTLY inside a transaction fails");
            assert!(e.to_string().contains("transaction block"), "{e}");
            assert_eq!(versions, 1, "the failed migration is not recorded");
        }
    }
}

/// PostgreSQL only: the dedupe against `events` is one probe of the primary key's index
/// (event_id, created_at) per staged id, never a scan of `events`, however many rows
/// the load stages and whatever the statistics say: its cost follows the load's size,
/// not the table's. Checked on the plans of the shipped `classify` and `insert_events`
/// (after `probe_by_index`, as the adapter runs them), with staged rows half of which `events`
/// holds, and with `events` empty and analyzed as empty (a new table autovacuum has
/// seen), where a sequential scan per staged id looked free and made the load quadratic.
#[tokio::test]
async fn postgres_dedupe_probes_the_key_index_not_the_table() {
    for history in [20000, 0] {
        let env = pg_backend().await.fresh("explain").await;
        migrated(&*env.wh).await;
        let schema = env.cx.db.namespace().to_owned();
        let mut client = support::postgres().await.client().await;
        let q = |s: &str| s.replace("{schema}", &schema);
        client
            .batch_execute(&q(&format!(
                "INSERT INTO {{schema}}.events \
                 SELECT md5(i::text), TIMESTAMP '2024-01-01' + i * INTERVAL '1 minute', 'a@x.io', NULL, 'e', \
                        NULL, 'h.json', i, 'old', TIMESTAMP '2024-01-01' \
                 FROM generate_series(1, {history}) i"
            )))
            .await
            .expect("history");
        client
            .batch_execute(&q("VACUUM ANALYZE {schema}.events"))
            .await
            .expect("analyze");
        let sql = events_etl::warehouse::statements::Statements::parse(
            include_str!("../../sql/postgres/load.sql"),
            &schema,
        );
        let tx = client.transaction().await.expect("begin");
        tx.batch_execute(sql.get("create_stage"))
            .await
            .expect("create_stage");
        tx.batch_execute(&q(
            "INSERT INTO pg_temp.stage_events \
             SELECT CASE WHEN i % 2 = 0 THEN md5(i::text) ELSE md5((-i)::text) END, \
                    TIMESTAMP '2024-01-01' + i * INTERVAL '1 minute', 'a@x.io', NULL, 'e', NULL, 'n.json', i, \
                    left(md5(i::text), 32) \
             FROM generate_series(1, 10000) i; \
             INSERT INTO pg_temp.stage_files VALUES ('n.json', 'e', 1, 10000, 0, 10000, 0, 0, 0);",
        ))
        .await
        .expect("stage");
        tx.batch_execute(sql.get("analyze_stage"))
            .await
            .expect("analyze_stage");
        tx.batch_execute(sql.get("create_load_types"))
            .await
            .expect("create_load_types");
        tx.batch_execute(sql.get("probe_by_index"))
            .await
            .expect("probe_by_index");
        let explain = |name: &str| format!("EXPLAIN (ANALYZE, COSTS OFF) {}", sql.get(name));
        let classified: Vec<String> = tx
            .query(
                &explain("classify"),
                &[
                    &1i32,
                    &86_400_000_000i64,
                    &chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
                        .unwrap()
                        .and_hms_opt(0, 0, 0)
                        .unwrap(),
                    &chrono::NaiveDate::from_ymd_opt(2024, 2, 1)
                        .unwrap()
                        .and_hms_opt(0, 0, 0)
                        .unwrap(),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("explain classify: {}", pg_message(&e)))
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let classified = classified.join("\n");
        let plan: Vec<String> = tx
            .query(&explain("insert_events"), &[&"L"])
            .await
            .unwrap_or_else(|e| panic!("explain: {}", pg_message(&e)))
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let text = plan.join("\n");
        tx.rollback().await.expect("rollback");
        assert!(
            classified.contains("Index Only Scan using events_pkey on events x")
                || classified.contains("Index Scan using events_pkey on events x"),
            "history {history}: {classified}"
        );
        assert!(
            classified.contains("Index Cond: ((event_id = ") && classified.contains("created_at >="),
            "the probe is bounded by id and window: {classified}"
        );
        assert!(
            classified.contains("using event_rejects_event_idx on event_rejects x"),
            "the conflicts are probed by index: {classified}"
        );
        assert!(
            !classified.contains("Seq Scan on events"),
            "history {history}: {classified}"
        );
        assert!(
            !classified.contains("Seq Scan on event_rejects"),
            "history {history}: {classified}"
        );
        assert!(!text.contains("Seq Scan on events"), "history {history}: {text}");
        // Half the staged ids are in the history, when there is one.
        let inserted = if history > 0 {
            "rows=5000 loops=1"
        } else {
            "rows=10000 loops=1"
        };
        assert!(
            text.contains("Insert on events (actual") && text.contains(inserted),
            "history {history}: {text}"
        );
    }
}

//! README promises, each through the real binary on local files and PostgreSQL:
//! `load.max_files` splits a run into several loads (an id repeated across them loads
//! once); `staging.keep` keeps a committed load's staged objects; a load whose COPY fails
//! keeps its `<staging>/<load_id>/`, one failing later leaves none; a missing bucket
//! exits 3 with nothing recorded.

use std::path::Path;
use std::time::Duration;

use crate::support::local_world::LocalWorld;
use crate::support::{self, run_bin};

fn event(id: u32, name: &str) -> String {
    format!(
        r#"{{"id":"{id:08x}-0000-4000-8000-000000000000","created_at":"2020-01-13 10:00:00","user_email":"u{id}@x.io","event_name":"{name}"}}"#
    )
}

/// Load directories under staging (each `<load_id>/` with its manifests).
fn load_dirs(staging: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(staging) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_files_splits_a_run_into_loads_and_an_id_repeated_across_them_loads_once() {
    let w = LocalWorld::new("pr_split", "[load]\nmax_files = 2\n").await;
    w.file(
        "2020/01/13/a.json",
        &[event(1, "a"), event(2, "a")],
        Duration::ZERO,
    );
    w.file("2020/01/13/b.json", &[event(3, "b")], Duration::ZERO);
    // Ids 1 and 2 again, in a later load of the same run: never loaded twice. Id 2 is
    // sent as it was, a duplicate; id 1 with another event_name, a conflicting
    // duplicate, kept as a reject.
    w.file(
        "2020/01/13/c.json",
        &[event(1, "c"), event(4, "c"), event(2, "a")],
        Duration::ZERO,
    );
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout.contains("loaded 3 of 3 event files in 2 load(s)"),
        "{out}"
    );
    let loads = w
        .rows(
            "SELECT files::text || ' ' || events_loaded::text || ' ' || duplicates::text || ' ' \
             || conflicts::text || ' ' || rejects::text FROM {s}.etl_loads ORDER BY load_id",
        )
        .await;
    assert_eq!(loads, ["2 3 0 0 0", "1 1 1 1 1"]);
    let conflict = w
        .rows("SELECT source_key || ' ' || source_line || ' ' || reason FROM {s}.event_rejects")
        .await;
    assert_eq!(conflict, ["2020/01/13/c.json 1 conflicting_duplicate"]);
    let ones = w
        .rows("SELECT source_key || ' ' || event_name FROM {s}.events WHERE event_id LIKE '00000001-%'")
        .await;
    assert_eq!(ones, ["2020/01/13/a.json a"], "the first copy by key order wins");
    // Committed loads leave nothing staged (staging.keep is false by default).
    assert_eq!(load_dirs(&w.staging()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_keep_keeps_a_committed_loads_objects() {
    let w = LocalWorld::new("pr_keep", "").await;
    w.file("2020/01/13/a.json", &[event(1, "a")], Duration::ZERO);
    let out = run_bin(
        &["--config", w.config.as_str(), "run"],
        &[("EVENTS_ETL__STAGING__KEEP".into(), "true".into())],
        w.dir.path(),
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let loads = w.rows("SELECT load_id FROM {s}.etl_loads").await;
    assert_eq!(
        load_dirs(&w.staging()),
        loads,
        "the committed load's staging prefix stays"
    );
    let kept: Vec<String> = load_dirs(&w.staging().join(&loads[0]));
    assert!(kept.iter().any(|f| f.ends_with(".manifest")), "{kept:?}");
}

/// A staged row the warehouse refuses (made by a test hook): its file is
/// quarantined, the other file loads in the same run, and no staged copy of the cleaned
/// rows is left behind; with `staging.keep` the committed load's objects stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_leaves_no_staged_objects_unless_kept() {
    let w = LocalWorld::new("pr_fail", "").await;
    w.file("2020/01/13/a.json", &[event(1, "a")], Duration::ZERO);
    w.file("2020/01/13/b.json", &[event(2, "b")], Duration::ZERO);
    let out = w.cli(&["run"], &[("EVENTS_ETL_TEST_POISON_KEY", "2020/01/13/b.json")]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert_eq!(load_dirs(&w.staging()), Vec::<String>::new());
    assert_eq!(w.rows("SELECT count(*)::text FROM {s}.events").await, ["1"]);
    assert_eq!(w.rows("SELECT reason FROM {s}.etl_quarantine").await, ["refused"]);

    w.file("2020/01/13/c.json", &[event(3, "c")], Duration::ZERO);
    w.file("2020/01/13/d.json", &[event(4, "d")], Duration::ZERO);
    let out = w.cli(
        &["run"],
        &[
            ("EVENTS_ETL_TEST_POISON_KEY", "2020/01/13/d.json"),
            ("EVENTS_ETL__STAGING__KEEP", "true"),
        ],
    );
    assert_eq!(out.code(), Some(5), "{out}");
    let dirs = load_dirs(&w.staging());
    let loads = w
        .rows("SELECT load_id FROM {s}.etl_loads ORDER BY started_at DESC LIMIT 1")
        .await;
    assert_eq!(dirs, loads, "the kept load's <load_id>/ stays");
    let staged = load_dirs(&w.staging().join(&dirs[0]));
    assert!(staged.iter().any(|f| f.ends_with(".manifest")), "{staged:?}");
}

/// A load that fails after its COPYs read the staged objects (here at its last
/// statement) records nothing and leaves nothing staged: the objects were deleted while
/// it merged. The rerun stages the files again and loads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_failing_after_its_copy_leaves_nothing_staged_or_recorded() {
    let w = LocalWorld::new("pr_late_fail", "").await;
    w.file("2020/01/13/a.json", &[event(1, "a")], Duration::ZERO);
    w.break_loads().await;
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(4), "{out}");
    assert_eq!(load_dirs(&w.staging()), Vec::<String>::new(), "{out}");
    assert_eq!(w.rows("SELECT count(*)::text FROM {s}.events").await, ["0"]);
    assert_eq!(w.rows("SELECT count(*)::text FROM {s}.etl_files").await, ["0"]);

    w.repair_loads().await;
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.rows("SELECT count(*)::text FROM {s}.events").await, ["1"]);
    assert_eq!(load_dirs(&w.staging()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_exits_3_with_nothing_recorded() {
    let pg = support::postgres().await;
    let s3 = support::s3().await;
    let schema = pg.fresh_schema("pr_bucket").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("etl.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"s3://no-such-bucket/events/\"\n[staging]\nurl = \"staging/\"\n\
             [warehouse]\nschema = \"{schema}\"\n[warehouse.postgres]\nurl = \"{}\"\n[s3]\nforce_path_style = true\n",
            pg.url()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let env = s3.env();
    let out = run_bin(&["--config", &cfg, "migrate"], &env, dir.path());
    assert_eq!(out.code(), Some(0), "{out}");
    let out = run_bin(&["--config", &cfg, "run"], &env, dir.path());
    assert_eq!(out.code(), Some(3), "{out}");
    assert!(out.stderr.contains("no-such-bucket"), "names the bucket: {out}");
    let n: i64 = pg
        .client()
        .await
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {schema}.etl_files) + (SELECT count(*) FROM {schema}.etl_loads) \
                 + (SELECT count(*) FROM {schema}.etl_quarantine)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing recorded");
}

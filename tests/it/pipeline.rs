//! The pipeline's own decisions, in process: a file that vanishes between listing and
//! reading is skipped (not recorded, the run goes on), and a run whose every pending
//! file vanished commits no load.

use crate::support;

use std::sync::Arc;

use async_trait::async_trait;
use events_etl::pipeline::Pipeline;
use events_etl::store::local::LocalStore;
use events_etl::store::{Body, ObjectMeta, ObjectStore, Place, StoreError};
use events_etl::warehouse::postgres::Postgres;
use events_etl::warehouse::Warehouse;

/// A directory whose listing also shows keys that no longer exist, as an S3 listing
/// does when objects expire between the list and the get.
#[derive(Debug)]
struct Expiring {
    inner: LocalStore,
    ghosts: Vec<String>,
}

#[async_trait]
impl ObjectStore for Expiring {
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = self.inner.list(prefix).await?;
        out.extend(self.ghosts.iter().map(|k| ObjectMeta {
            key: k.clone(),
            etag: "gone".into(),
            size: 10,
            archived: false,
            last_modified: None,
        }));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
    async fn get(&self, key: &str) -> Result<Body, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put(key, bytes).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        self.inner.delete_prefix(prefix).await
    }
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        self.inner.delete(keys).await
    }
    fn url(&self, key: &str) -> String {
        self.inner.url(key)
    }
    fn key_of(&self, url: &str) -> Option<String> {
        self.inner.key_of(url)
    }
}

fn event(n: u32) -> String {
    format!(
        r#"{{"id": "{n:08x}-1111-4000-8000-000000000000", "created_at": "2024-01-01 00:00:00", "user_email": "u{n}@x.io", "event_name": "e"}}"#
    )
}

async fn pipeline(ghosts: &[&str], files: &[(&str, String)]) -> (Pipeline, String, tempfile::TempDir) {
    let pg = support::postgres().await;
    let schema = pg.fresh_schema("pipeline").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    for (key, body) in files {
        let p = dir.path().join("src").join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let source = Place {
        store: Arc::new(Expiring {
            inner: LocalStore::new(dir.path().join("src")),
            ghosts: ghosts.iter().map(|g| (*g).to_owned()).collect(),
        }),
        prefix: String::new(),
    };
    let staging = Place {
        store: Arc::new(LocalStore::new(dir.path().join("staging"))),
        prefix: String::new(),
    };
    let wh = Postgres::connect(&pg.url(), &schema, staging.clone())
        .await
        .unwrap();
    wh.migrate().await.unwrap();
    let p = Pipeline {
        source,
        staging,
        warehouse: Arc::new(wh),
        part_size: 1 << 20,
        max_files_per_load: 100,
        keep_staging: false,
        event_types: Default::default(),
        concurrency: 4,
        systemic: events_etl::config::Systemic::DEFAULT,
        max_bytes_per_load: events_etl::config::DEFAULT_MAX_BYTES,
        naive_timezone: chrono_tz::Tz::UTC,
        budget: Default::default(),
        list_concurrency: 4,
        file_rows: true,
    };
    (p, schema, dir)
}

async fn count(schema: &str, table: &str) -> i64 {
    let pg = support::postgres().await;
    pg.client()
        .await
        .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// A file listed, then gone when read: the rest loads, and the lost version is recorded
/// (reason `vanished`), never only logged; it is settled, so no run reads it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_gone_between_list_and_read_is_recorded_as_lost() {
    let (p, schema, _dir) = pipeline(
        &["events/2020/01/01/expired.json"],
        &[("events/2020/01/02/a.json", event(1) + "\n" + &event(2))],
    )
    .await;
    let report = p.run(chrono::Utc::now(), None).await.expect("the run goes on");
    assert_eq!(report.pending, 2);
    assert_eq!(report.loads.len(), 1);
    assert_eq!((report.loads[0].files, report.loads[0].events_loaded), (1, 2));
    assert_eq!(count(&schema, "etl_files").await, 1);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(report.quarantined[0].source_key, "events/2020/01/01/expired.json");
    assert!(report.quarantined[0].is_lost(), "{:?}", report.quarantined);
    let lost = p.warehouse.quarantined(10, false).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].reason, "vanished");
    let recorded = p
        .warehouse
        .recorded_versions(&["events/2020/01/01/expired.json".to_owned()])
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1, "the lost version is settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_files_all_vanished_commits_no_load() {
    let (p, schema, dir) = pipeline(&["events/x.json", "events/y.json.gz"], &[]).await;
    let report = p.run(chrono::Utc::now(), None).await.expect("run");
    assert_eq!(report.pending, 2);
    assert!(report.loads.is_empty(), "{report:?}");
    assert_eq!(count(&schema, "etl_loads").await, 0);
    assert_eq!(count(&schema, "etl_files").await, 0);
    assert_eq!(
        count(&schema, "etl_quarantine").await,
        2,
        "both are recorded as lost"
    );
    // Its staging was cleaned up like any load's.
    let left: Vec<_> = walk(&dir.path().join("staging"));
    assert!(left.is_empty(), "{left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// One source that exercises every path of the staging pool: ids repeated across files
/// (first by key order must win), bad and blank lines, a file too large to be read
/// ahead, a gzip file, one cut short and one corrupt (rolled back), and a vanished one.
fn mixed_source(root: &std::path::Path) {
    use std::io::Write as _;
    let write = |key: &str, bytes: &[u8]| {
        let p = root.join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    let gz = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    // `n`'s copy in file `f`: the email says which copy was loaded.
    let copy = |n: u32, f: usize| {
        format!(
            r#"{{"id": "{n:08x}-1111-4000-8000-000000000000", "created_at": "2024-01-01 00:00:00", "user_email": "f{f}@x.io", "event_name": "e"}}"#
        )
    };
    for f in 0..40 {
        // Ids 0..60 recur in every file; 1000 * f + i are the file's own.
        let mut lines: Vec<String> = (0..60).map(|n| copy(n, f)).collect();
        lines.extend((0..30).map(|i| copy(1000 * f as u32 + i, f)));
        lines.push("not json".into());
        lines.push(String::new());
        lines.push(copy(1000 * f as u32, f)); // a repeat inside the file
        let text = lines.join("\n") + "\n";
        let key = format!("events/2024/01/01/{f:03}.json");
        match f {
            7 => write(&format!("{key}.gz"), &gz(&text)),
            11 => {
                let bytes = gz(&text);
                write(&format!("{key}.gz"), &bytes[..bytes.len() - 20]);
            }
            13 => {
                let mut bytes = gz(&text);
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x55;
                bytes[mid + 1] ^= 0xaa;
                write(&format!("{key}.gz"), &bytes);
            }
            _ => write(&key, text.as_bytes()),
        }
    }
    // Over the read-ahead limit: streamed by the worker that cleans it.
    let big: String = (0..12_000u32).map(|i| copy(500_000 + i, 99) + "\n").collect();
    assert!(big.len() as u64 > events_etl::stage::pool::READ_AHEAD_MAX_OBJECT);
    write("events/2024/01/01/020-big.json", big.as_bytes());
}

/// What a load left in the tables, in an order that does not depend on how it ran.
async fn tables(schema: &str) -> Vec<String> {
    let pg = support::postgres().await;
    let c = pg.client().await;
    let mut out = Vec::new();
    for q in [
        "SELECT event_id || ' ' || user_email || ' ' || source_key || ':' || source_line FROM {s}.events ORDER BY 1",
        "SELECT source_key || ' ' || lines || ' ' || events_loaded || ' ' || duplicates || ' ' || rejects || ' ' \
         || blank_lines FROM {s}.etl_files ORDER BY 1",
        "SELECT source_key || ':' || source_line || ' ' || reason FROM {s}.event_rejects ORDER BY 1",
        "SELECT files || ' ' || lines || ' ' || events_loaded || ' ' || duplicates || ' ' || rejects FROM {s}.etl_loads",
    ] {
        for row in c.query(&q.replace("{s}", schema), &[]).await.unwrap() {
            out.push(row.get::<_, String>(0));
        }
        out.push("--".into());
    }
    out
}

/// Files are read and cleaned concurrently, yet the rows, rejects and per-file counts
/// are those of one file at a time: the same whatever the concurrency and part size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_do_not_depend_on_concurrency() {
    let mut seen = Vec::new();
    for (concurrency, part_size) in [(1, 1 << 20), (6, 16 * 1024), (3, 1 << 20)] {
        let (mut p, schema, dir) = pipeline(&["events/2024/01/01/015-gone.json"], &[]).await;
        mixed_source(&dir.path().join("src"));
        p.concurrency = concurrency;
        p.part_size = part_size;
        let report = p.run(chrono::Utc::now(), None).await.expect("run");
        assert_eq!(report.loads.len(), 1, "{report:?}");
        let keys: Vec<&str> = report.files.iter().map(|f| f.source_key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "the report lists files in key order");
        seen.push((concurrency, tables(&schema).await));
    }
    let (_, first) = &seen[0];
    // Sanity: the first copy by key order won, the corrupt file loaded nothing.
    assert!(first
        .iter()
        .any(|r| r.starts_with("00000000-1111-4000-8000-000000000000 f0@x.io ")));
    assert!(
        first.iter().any(|r| r.ends_with("013.json.gz 1 0 0 1 0")),
        "{first:?}"
    );
    assert!(first
        .iter()
        .any(|r| r.starts_with("events/2024/01/01/020-big.json 12000 12000 ")));
    for (concurrency, t) in &seen[1..] {
        assert_eq!(t, first, "concurrency {concurrency} changed the result");
    }
}

//! The Redshift Data API adapter's own failure modes, against the Data API stand-in:
//! a statement failing mid-batch, a statement outliving the timeout, throttling.
//! (What every warehouse must do is in `warehouse_conformance.rs`, which runs this
//! adapter too.)

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use events_etl::clean::Cleaner;
use events_etl::config::{RedshiftConfig, RedshiftTarget};
use events_etl::pipeline::clean_object;
use events_etl::stage::{FileRow, StageWriter, StagedLoad};
use events_etl::store::s3::S3Store;
use events_etl::store::Place;
use events_etl::warehouse::redshift::Redshift;
use events_etl::warehouse::{Warehouse, WarehouseError};
use support::redshift_data::{redshift_data, DataApiServer, TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER};

const BUCKET: &str = "adapter-staging";

struct Fixture {
    pg: &'static support::PgServer,
    _s3: support::S3Server,
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
        _s3: s3,
        api,
        staging,
        schema,
    }
}

impl Fixture {
    async fn adapter(&self, timeout: Duration) -> Redshift {
        Redshift::with_client(
            self.api.client().await,
            &config(timeout),
            &self.schema,
            self.staging.clone(),
        )
    }

    async fn stage(&self, load_id: &str, lines: &[String]) -> StagedLoad {
        let cleaner = Cleaner::new(chrono::Utc::now());
        let mut w = StageWriter::new(self.staging.clone(), load_id, 1 << 20);
        let body = lines.join("\n").into_bytes();
        let size = body.len() as u64;
        let key = format!("events/{load_id}.json");
        let cleaned = clean_object(&cleaner, &key, &key, Box::new(std::io::Cursor::new(body)), &mut w)
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

    f.api
        .fail_when_sql_contains("MERGE INTO", "simulated: disk full on slice 3");
    let e = wh.load(&staged, started()).await.expect_err("the MERGE fails");
    match &e {
        WarehouseError::Statement { statement, message } => {
            assert_eq!(statement, "merge_events", "{e}");
            assert!(message.contains("simulated: disk full on slice 3"), "{e}");
            assert!(message.contains("sub-statement"), "{e}");
        }
        other => panic!("expected a Statement error, got {other:?}"),
    }
    // The COPYs before the MERGE ran, but the batch is one transaction.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_past_the_timeout_is_cancelled_and_commits_nothing() {
    let f = fixture("rs_timeout").await;
    f.adapter(Duration::from_secs(60))
        .await
        .migrate()
        .await
        .expect("migrate");
    let staged = f.stage("load-1", &[event(1)]).await;

    let wh = f.adapter(Duration::from_secs(1)).await;
    f.api.delay_statements(Duration::from_secs(20));
    let t0 = Instant::now();
    let e = wh.load(&staged, started()).await.expect_err("times out");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        t0.elapsed()
    );
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
    // Give a (wrongly) uncancelled batch time to commit before checking it did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    // The load itself needs at least a batch, a describe, a query, a describe and a
    // result page; four throttled answers come on top.
    assert!(after - before >= 5 + 4, "calls: {:?}", f.api.call_counts());
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

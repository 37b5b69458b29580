//! Permanent per-object failures are quarantined, not retried: through the real binary,
//! on S3, against PostgreSQL and Redshift (the Data API stand-in). A poison file whose
//! staged row the warehouse refuses (made by a test hook of the `test-hooks` feature, since the cleaner
//! lets no such row through), an archived object and one the tool may not read: each is
//! set aside with its reason, everything else loads, `run` exits 5, `status` lists it,
//! reruns load nothing more, and a new version of the file loads normally.

use crate::support::{self, run_bin, CmdOutput, ObjectPolicy, PgServer};

pub(crate) const BUCKET: &str = "quarantine-events";

pub(crate) fn event(n: u32) -> String {
    format!(
        r#"{{"id":"{n:08x}-0000-4000-8000-000000000000","created_at":"2020-01-13 10:00:{:02}","user_email":"u{n}@x.io","event_name":"page_visit","metadata":{{"n":{n}}}}}"#,
        n % 60
    )
}

pub(crate) fn lines(ns: std::ops::Range<u32>) -> String {
    ns.map(|n| event(n) + "\n").collect()
}

async fn scalar(pg: &PgServer, sql: &str) -> i64 {
    pg.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

pub(crate) struct World {
    pub(crate) pg: &'static PgServer,
    pub(crate) s3: support::S3Server,
    pub(crate) schema: String,
    dir: tempfile::TempDir,
    config: String,
    env: Vec<(String, String)>,
    pub(crate) _api: Option<support::redshift_data::DataApiServer>,
}

impl World {
    pub(crate) async fn new(label: &str, redshift: bool) -> World {
        let pg = support::postgres().await;
        let s3 = support::s3().await;
        s3.create_bucket(BUCKET).await;
        let schema = pg.fresh_schema(label).await;
        let dir = tempfile::tempdir().unwrap();
        let mut env = s3.env();
        let mut extra = String::new();
        let api = if redshift {
            use support::redshift_data::{redshift_data, TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER};
            let api = redshift_data(s3.client().await).await;
            env = api.env_with(env);
            extra = format!(
                "[warehouse.redshift]\ncluster_identifier = \"{TEST_CLUSTER}\"\ndatabase = \"{TEST_DATABASE}\"\n\
                 db_user = \"{TEST_DB_USER}\"\niam_role = \"default\"\nmax_poll_interval_ms = 100\n"
            );
            Some(api)
        } else {
            None
        };
        let path = dir.path().join("events-etl.toml");
        std::fs::write(
            &path,
            format!(
                "[source]\nurl = \"s3://{BUCKET}/events/\"\n[staging]\nurl = \"s3://{BUCKET}/staging/\"\n\
                 [warehouse]\nkind = \"{}\"\nschema = \"{schema}\"\n\
                 [warehouse.postgres]\nurl = \"{}\"\n[s3]\nforce_path_style = true\n{extra}",
                if redshift { "redshift" } else { "postgres" },
                pg.url()
            ),
        )
        .unwrap();
        World {
            pg,
            s3,
            schema,
            config: path.display().to_string(),
            dir,
            env,
            _api: api,
        }
    }

    pub(crate) fn cli(&self, args: &[&str], extra_env: &[(&str, &str)]) -> CmdOutput {
        let mut full = vec!["--config", self.config.as_str()];
        full.extend_from_slice(args);
        let mut env = self.env.clone();
        env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        run_bin(&full, &env, self.dir.path())
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        scalar(self.pg, &sql.replace("{s}", &self.schema)).await
    }
}

/// A file whose staged row the warehouse refuses is quarantined with the warehouse's
/// error; the other files load in the same run; a new version of it loads.
async fn poison_file_is_quarantined(redshift: bool) {
    let w = World::new(if redshift { "q_poison_rs" } else { "q_poison_pg" }, redshift).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let poison = "events/2020/01/13/b.json";
    w.s3.put(BUCKET, "events/2020/01/13/a.json", lines(0..3)).await;
    w.s3.put(BUCKET, poison, lines(3..6)).await;
    w.s3.put(BUCKET, "events/2020/01/13/c.json", lines(6..9)).await;

    let out = w.cli(&["run"], &[("EVENTS_ETL_TEST_POISON_KEY", poison)]);
    assert_eq!(out.code(), Some(5), "quarantining is not a silent success: {out}");
    assert!(out.stdout.contains("loaded 2 of 3 event files"), "{out}");
    assert!(out.stdout.contains("quarantined 1 file(s)"), "{out}");
    assert!(
        out.stdout.contains(poison) && out.stdout.contains("refused"),
        "{out}"
    );
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 6);
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM {{s}}.etl_quarantine WHERE source_key = '{poison}' AND reason = 'refused'"
        ))
        .await,
        1
    );
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files").await, 2);
    // One load committed. No staged copy of the cleaned rows (emails, IPs) is left:
    // PostgreSQL copied again without the refused file inside the load's transaction;
    // on Redshift the refused pass's objects were deleted once its batch failed.
    assert!(
        w.s3.list(BUCKET, "staging/").await.is_empty(),
        "nothing staged is left behind"
    );
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_loads").await, 1);

    let out = w.cli(&["status"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("0 pending"), "{out}");
    assert!(
        out.stdout.contains("quarantined files") && out.stdout.contains(poison),
        "{out}"
    );

    // Reruns are quiet: the quarantined version is settled, nothing is retried.
    let out = w.cli(&["run"], &[("EVENTS_ETL_TEST_POISON_KEY", poison)]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("nothing to load"), "{out}");

    // A fixed file (a new version: new ETag) loads normally.
    w.s3.put(BUCKET, poison, lines(3..6) + &event(100) + "\n").await;
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("loaded 1 of 3 event files"), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 10);
    assert_eq!(w.count("SELECT count(*) FROM {s}.etl_files").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_file_is_quarantined_on_postgres() {
    poison_file_is_quarantined(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_file_is_quarantined_on_redshift() {
    poison_file_is_quarantined(true).await;
}

/// An archived object and one the tool may list but not read: quarantined with their
/// reasons, every run after that loads the rest without stalling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_and_unreadable_objects_are_quarantined() {
    let w = World::new("q_objects", false).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    let (archived, denied) = ("events/2020/01/13/archived.json", "events/2020/01/13/denied.json");
    w.s3.put(BUCKET, "events/2020/01/13/ok.json", lines(0..2)).await;
    w.s3.put(BUCKET, archived, lines(2..4)).await;
    w.s3.put(BUCKET, denied, lines(4..6)).await;
    w.s3.set_policy(BUCKET, archived, Some(ObjectPolicy::Archived));
    w.s3.set_policy(BUCKET, denied, Some(ObjectPolicy::Denied));

    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(out.stdout.contains("loaded 1 of 3 event files"), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 2);
    let reasons =
        w.pg.client()
            .await
            .query(
                &format!(
                    "SELECT source_key, reason, detail FROM {}.etl_quarantine ORDER BY source_key",
                    w.schema
                ),
                &[],
            )
            .await
            .unwrap();
    let got: Vec<(String, String, String)> = reasons.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), (archived, "archived"));
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), (denied, "unreadable"));
    assert!(got[1].2.contains("AccessDenied"), "{got:?}");

    // No stall: the next run is quiet and successful.
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("nothing to load"), "{out}");

    // Access granted and the object rewritten (new ETag): it loads.
    w.s3.set_policy(BUCKET, denied, None);
    w.s3.put(BUCKET, denied, lines(4..7)).await;
    let out = w.cli(&["run"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM {s}.events").await, 5);
}

/// `check` on Redshift (the Data API stand-in): COPY reads a probe from staging through
/// `iam_role`; when that COPY fails, `check` exits 6 and says what the role needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_redshift_probes_copy_from_staging() {
    let w = World::new("q_check_rs", true).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    w.s3.put(BUCKET, "events/2020/01/13/a.json", lines(0..1)).await;
    let out = w.cli(&["check"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("ok    COPY reads staging through warehouse.redshift.iam_role"),
        "{out}"
    );
    let api = w._api.as_ref().expect("stand-in");
    api.fail_when_sql_contains(
        "COPY events_etl_probe",
        "ERROR: Not authorized to get credentials of role",
    );
    let out = w.cli(&["check"], &[]);
    assert_eq!(out.code(), Some(6), "{out}");
    assert!(
        out.stdout.contains("FAIL  COPY reads staging") && out.stdout.contains("s3:GetObject"),
        "{out}"
    );
}

/// `check` reads the buckets' lifecycles: it warns (exit 0 all the same) when no rule
/// expires the staging prefix, and when the source's rule deletes files sooner than
/// `source.retention_days`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_lifecycles() {
    let w = World::new("q_check_lifecycle", false).await;
    assert_eq!(w.cli(&["migrate"], &[]).code(), Some(0));
    w.s3.put(BUCKET, "events/2020/01/13/a.json", lines(0..1)).await;
    let out = w.cli(&["check"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout.contains("WARN  lifecycle of staging") && out.stdout.contains("staging-lifecycle.json"),
        "{out}"
    );
    assert!(out.stdout.contains("with a warning"), "{out}");

    w.s3.set_lifecycle(BUCKET, &[("staging/", 7), ("events/", 14)])
        .await;
    let out = w.cli(&["check"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("expire after 7 days"), "{out}");
    assert!(
        out.stdout.contains("WARN  lifecycle of source")
            && out.stdout.contains("set source.retention_days = 14"),
        "{out}"
    );

    w.s3.set_lifecycle(BUCKET, &[("staging/", 7), ("events/", 30)])
        .await;
    let out = w.cli(&["check"], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stdout.contains("WARN"), "{out}");
    assert!(
        out.stdout.contains("check: all") && out.stdout.contains("passed"),
        "{out}"
    );
}

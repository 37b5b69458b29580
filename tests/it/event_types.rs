//! Issue 10 through the real binary, on PostgreSQL and on Redshift (the Data API
//! stand-in): per-type metadata contracts in cleaning, the typed views `migrate` keeps in
//! line with `[event_types]`, the event catalog, and the per-type counts in the run
//! report and metrics.

use crate::support::{self, CmdOutput, PgServer};

/// One event line; `metadata` is raw JSON text (or `None` for no key at all).
fn line(id: u32, created_at: &str, name: &str, metadata: Option<&str>) -> String {
    let meta = metadata.map_or(String::new(), |m| format!(r#", "metadata": {m}"#));
    format!(
        r#"{{"id": "{id:08x}-0000-4000-8000-{id:012x}", "created_at": "{created_at}", "user_email": "u{id}@example.com", "event_name": "{name}"{meta}}}"#
    )
}

const CONFIG: &str = r#"
[event_types.page_visit]
required_metadata = ["path"]
columns = { path = "text" }
[event_types.message_saved]
columns = { message_id = "bigint" }
[event_types.meeting_scheduled]
columns = { meeting_id = "text", meeting_time = "timestamp" }
[event_types.flags]
columns = { ratio = "double", ok = "boolean" }
[event_types.never_sent]
columns = { x = "text" }
"#;

/// A schema and S3 prefixes of one test, run through the binary on either warehouse.
struct World {
    pg: &'static PgServer,
    s3: support::S3Server,
    bucket: String,
    schema: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Kept alive for the Redshift world.
    _api: Option<support::redshift_data::DataApiServer>,
    warehouse_section: String,
}

impl World {
    async fn new(label: &str, redshift: bool) -> World {
        use support::redshift_data::{redshift_data, TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER};
        let pg = support::postgres().await;
        let s3 = support::s3().await;
        let bucket = format!("types-{}", label.replace('_', "-"));
        s3.create_bucket(&bucket).await;
        let schema = pg.fresh_schema(label).await;
        let (api, env, warehouse_section) = if redshift {
            let api = redshift_data(s3.client().await).await;
            let env = api.env_with(s3.env());
            let section = format!(
                "kind = \"redshift\"\n[warehouse.redshift]\ncluster_identifier = \"{TEST_CLUSTER}\"\n\
                 database = \"{TEST_DATABASE}\"\ndb_user = \"{TEST_DB_USER}\"\n\
                 iam_role = \"arn:aws:iam::123456789012:role/events-etl-copy\"\nmax_poll_interval_ms = 100\n"
            );
            (Some(api), env, section)
        } else {
            let section = format!(
                "kind = \"postgres\"\n[warehouse.postgres]\nurl = \"{}\"\n",
                pg.url()
            );
            (None, s3.env(), section)
        };
        let w = World {
            pg,
            s3,
            bucket,
            schema,
            dir: tempfile::tempdir().unwrap(),
            env,
            _api: api,
            warehouse_section,
        };
        w.configure(CONFIG);
        w
    }

    /// Writes the config file with `types` as its `[event_types]` / `[cleaning]` part.
    fn configure(&self, types: &str) {
        std::fs::write(
            self.dir.path().join("etl.toml"),
            format!(
                "[source]\nurl = \"s3://{b}/events/\"\n[staging]\nurl = \"s3://{b}/staging/\"\n\
                 [s3]\nforce_path_style = true\n[warehouse]\nschema = \"{s}\"\n{w}\n{types}",
                b = self.bucket,
                s = self.schema,
                w = self.warehouse_section
            ),
        )
        .unwrap();
    }

    fn cli(&self, args: &[&str]) -> CmdOutput {
        let cfg = self.dir.path().join("etl.toml").display().to_string();
        let mut full = vec!["--config", cfg.as_str()];
        full.extend_from_slice(args);
        support::run_bin(&full, &self.env, self.dir.path())
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> CmdOutput {
        let out = self.cli(args);
        out.assert_success();
        out
    }

    async fn put(&self, key: &str, lines: &[String]) {
        self.s3
            .put(&self.bucket, &format!("events/{key}"), lines.join("\n") + "\n")
            .await;
    }

    /// Each row of `sql` (`{s}` is the schema) as its columns' text joined by ` | `;
    /// NULL shows as `NULL`.
    async fn rows(&self, sql: &str) -> Vec<String> {
        let sql = format!(
            "SELECT concat_ws(' | ', VARIADIC ARRAY(SELECT COALESCE(v, 'NULL') FROM json_each_text(to_json(q)) AS j(k, v))) FROM ({}) q",
            sql.replace("{s}", &self.schema)
        );
        self.pg
            .client()
            .await
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", support::err_text(&e)))
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }
}

fn now_minus(hours: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(hours))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The issue's "done when", on one warehouse.
async fn scenario(label: &str, redshift: bool) {
    let w = World::new(label, redshift).await;
    let out = w.ok(&["migrate"]);
    for view in [
        "events_page_visit",
        "events_message_saved",
        "events_meeting_scheduled",
        "events_flags",
        "events_never_sent",
    ] {
        assert!(
            out.stdout.contains(&format!("created view {}.{view}", w.schema)),
            "{out}"
        );
    }
    assert!(
        !w.ok(&["migrate"]).stdout.contains("view"),
        "a second migrate changes no view"
    );

    let old = "2020-01-13 05:10:12";
    let recent = now_minus(2);
    w.put(
        "2020/01/13/a.json",
        &[
            line(1, old, "page_visit", Some(r#"{"path": "main/categories/category"}"#)),
            line(2, &recent, "page_visit", Some(r#"{"path": "/a", "other": 1}"#)),
            // A configured page_visit without path: rejected, naming the key.
            line(3, old, "page_visit", Some(r#"{"referrer": "/x"}"#)),
            line(4, old, "page_visit", Some(r#"{"path": null}"#)),
            line(5, old, "page_visit", None),
            line(10, old, "message_saved", Some(r#"{"message_id": 99979}"#)),
            // bigint over a string, a fraction, and a number beyond BIGINT: NULL.
            line(11, old, "message_saved", Some(r#"{"message_id": "99979"}"#)),
            line(12, old, "message_saved", Some(r#"{"message_id": 1.5}"#)),
            line(13, old, "message_saved", Some(r#"{"message_id": 99999999999999999999}"#)),
            line(14, old, "message_saved", Some(r#"{"message_id": -9223372036854775808}"#)),
            line(
                20,
                old,
                "meeting_scheduled",
                Some(r#"{"meeting_id": "eafb8c01-67ed-44aa-94fb-738330fbff95", "meeting_time": "2020-01-20 16:44:26"}"#),
            ),
            line(21, old, "meeting_scheduled", Some(r#"{"meeting_id": 7, "meeting_time": "2020-02-30 10:00:00"}"#)),
            line(22, old, "meeting_scheduled", Some(r#"{"meeting_time": "soon"}"#)),
            line(23, old, "meeting_scheduled", Some(r#"{"meeting_time": 1579538666}"#)),
            line(24, old, "meeting_scheduled", Some(r#"{"meeting_time": "2020-02-29T23:59:59.123456"}"#)),
            line(25, old, "meeting_scheduled", Some(r#"{"meeting_time": {"at": "2020-01-20 16:44:26"}}"#)),
            line(30, old, "flags", Some(r#"{"ratio": 0.25, "ok": true}"#)),
            line(31, old, "flags", Some(r#"{"ratio": "0.25", "ok": "true"}"#)),
            line(32, old, "flags", Some(r#"{"ratio": 3, "ok": [true]}"#)),
            // A type not configured: loaded (unknown_event_types defaults to "load").
            line(40, &recent, "brand_new", Some("{}")),
            // A duplicate of id 1: counted once everywhere.
            line(1, old, "page_visit", Some(r#"{"path": "main/categories/category"}"#)),
        ],
    )
    .await;
    let report = w.dir.path().join("report.json");
    let metrics = w.dir.path().join("metrics.prom");
    w.ok(&[
        "run",
        "--report-json",
        &report.display().to_string(),
        "--metrics-file",
        &metrics.display().to_string(),
    ]);

    // A configured page_visit without path is rejected as missing_metadata_key.
    assert_eq!(
        w.rows("SELECT source_line, reason, raw_line LIKE 'metadata key `path` is required for page_visit events and is absent or null: {%' FROM {s}.event_rejects ORDER BY source_line")
            .await,
        [
            "3 | missing_metadata_key | true",
            "4 | missing_metadata_key | true",
            "5 | missing_metadata_key | true"
        ]
    );
    // The view's path is exactly the loaded page visits' paths.
    let paths = w.rows("SELECT path FROM {s}.events_page_visit ORDER BY 1").await;
    assert_eq!(paths, ["/a", "main/categories/category"]);
    assert_eq!(
        paths,
        w.rows("SELECT metadata->>'path' FROM {s}.events WHERE event_name = 'page_visit' ORDER BY 1")
            .await
    );
    // Wrong JSON types read NULL, without error; the event columns come first.
    assert_eq!(
        w.rows("SELECT event_id, message_id FROM {s}.events_message_saved ORDER BY event_id")
            .await,
        [
            "0000000a-0000-4000-8000-00000000000a | 99979",
            "0000000b-0000-4000-8000-00000000000b | NULL",
            "0000000c-0000-4000-8000-00000000000c | NULL",
            "0000000d-0000-4000-8000-00000000000d | NULL",
            "0000000e-0000-4000-8000-00000000000e | -9223372036854775808",
        ]
    );
    assert_eq!(
        w.rows("SELECT meeting_id, meeting_time FROM {s}.events_meeting_scheduled ORDER BY event_id")
            .await,
        [
            "eafb8c01-67ed-44aa-94fb-738330fbff95 | 2020-01-20T16:44:26",
            "NULL | NULL",
            "NULL | NULL",
            "NULL | NULL",
            "NULL | 2020-02-29T23:59:59.123456",
            "NULL | NULL",
        ]
    );
    assert_eq!(
        w.rows("SELECT ratio, ok FROM {s}.events_flags ORDER BY event_id")
            .await,
        ["0.25 | true", "NULL | NULL", "3 | NULL"]
    );
    assert_eq!(w.rows("SELECT count(*) FROM {s}.events_never_sent").await, ["0"]);
    // The catalog matches the events, counts and times.
    let catalog = "SELECT event_name, events, first_seen, last_seen FROM {s}.event_types_seen ORDER BY 1";
    let from_events =
        "SELECT event_name, count(*), min(created_at), max(created_at) FROM {s}.events GROUP BY 1 ORDER BY 1";
    assert_eq!(w.rows(catalog).await, w.rows(from_events).await);
    assert_eq!(
        w.rows("SELECT event_name, events FROM {s}.event_types_seen ORDER BY 1")
            .await,
        [
            "brand_new | 1",
            "flags | 3",
            "meeting_scheduled | 6",
            "message_saved | 5",
            "page_visit | 2"
        ]
    );
    // The run report and metrics carry the counts per type.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        report["events_loaded_by_type"],
        serde_json::json!({"brand_new": 1, "flags": 3, "meeting_scheduled": 6, "message_saved": 5, "page_visit": 2}),
        "{report:#}"
    );
    assert_eq!(
        report["rejects_by_reason"]["missing_metadata_key"], 3,
        "{report:#}"
    );
    let metrics = std::fs::read_to_string(&metrics).unwrap();
    for sample in [
        "events_etl_events_loaded_by_type{event_name=\"page_visit\"} 2",
        "events_etl_events_loaded_by_type{event_name=\"brand_new\"} 1",
        "events_etl_rejects{reason=\"missing_metadata_key\"} 3",
    ] {
        assert!(metrics.contains(sample), "{sample} in\n{metrics}");
    }
    // status: types first seen lately, configured types not seen lately.
    let out = w.ok(&["status"]);
    assert!(
        out.stdout
            .contains("event types: 5 seen in all, 1 first seen in the last 7 days"),
        "{out}"
    );
    assert!(out.stdout.contains("new type brand_new: first seen"), "{out}");
    assert!(out.stdout.contains("(not configured)"), "{out}");
    assert!(!out.stdout.contains("new type page_visit"), "{out}");
    assert!(
        out.stdout
            .contains("configured type never_sent not seen in the last 7 days (never seen)"),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "configured type message_saved not seen in the last 7 days (last seen 2020-01-13 05:10:12)"
        ),
        "{out}"
    );
    assert!(
        !out.stdout.contains("configured type page_visit not seen"),
        "{out}"
    );

    // The configuration changes: flags leaves, message_id becomes text, unknown types are
    // rejected. A view of a removed type that migrate did not create is never dropped.
    w.pg.client()
        .await
        .batch_execute(&format!(
            "CREATE VIEW {s}.events_mine AS SELECT event_id FROM {s}.events",
            s = w.schema
        ))
        .await
        .unwrap();
    w.configure(
        r#"
[cleaning]
unknown_event_types = "reject"
[event_types.page_visit]
required_metadata = ["path"]
columns = { path = "text" }
[event_types.message_saved]
columns = { message_id = "text" }
[event_types.meeting_scheduled]
columns = { meeting_id = "text", meeting_time = "timestamp" }
[event_types.never_sent]
columns = { x = "text" }
"#,
    );
    let out = w.ok(&["migrate"]);
    assert!(
        out.stdout
            .contains(&format!("replaced view {}.events_message_saved", w.schema)),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("dropped view {}.events_flags", w.schema)),
        "{out}"
    );
    assert!(!out.stdout.contains("events_page_visit"), "{out}");
    let views = "SELECT table_name FROM information_schema.views WHERE table_schema = '{s}' ORDER BY 1";
    assert_eq!(
        w.rows(views).await,
        [
            "events_meeting_scheduled",
            "events_message_saved",
            "events_mine",
            "events_never_sent",
            "events_page_visit"
        ]
    );
    assert_eq!(
        w.rows("SELECT message_id FROM {s}.events_message_saved ORDER BY event_id")
            .await,
        ["NULL", "99979", "NULL", "NULL", "NULL"]
    );

    // With unknown_event_types = "reject", an unconfigured type is rejected.
    w.put(
        "2020/01/14/b.json",
        &[
            line(50, old, "brand_new", Some("{}")),
            line(51, old, "flags", Some(r#"{"ratio": 1}"#)),
            line(52, old, "page_visit", Some(r#"{"path": "/b"}"#)),
        ],
    )
    .await;
    w.ok(&["run"]);
    assert_eq!(
        w.rows("SELECT source_line, reason, raw_line FROM {s}.event_rejects WHERE source_key LIKE '%b.json' ORDER BY 1")
            .await,
        [
            format!("1 | unknown_event_type | {}", line(50, old, "brand_new", Some("{}"))),
            format!("2 | unknown_event_type | {}", line(51, old, "flags", Some(r#"{"ratio": 1}"#))),
        ]
    );
    assert_eq!(w.rows(catalog).await, w.rows(from_events).await);
    assert_eq!(
        w.rows("SELECT path FROM {s}.events_page_visit ORDER BY 1").await,
        ["/a", "/b", "main/categories/category"]
    );

    // A configured type whose view name is taken by something migrate did not create:
    // migrate refuses, naming it, and leaves it alone.
    w.pg.client()
        .await
        .batch_execute(&format!("CREATE TABLE {s}.events_taken (a int)", s = w.schema))
        .await
        .unwrap();
    w.configure("[event_types.taken]\ncolumns = { a = \"text\" }\n");
    let out = w.cli(&["migrate"]);
    assert_eq!(out.code(), Some(4), "{out}");
    assert!(out.stderr.contains("view events_taken"), "{out}");
    assert!(out.stderr.contains("did not create"), "{out}");
    assert_eq!(w.rows("SELECT count(*) FROM {s}.events_taken").await, ["0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_on_postgres() {
    scenario("types_pg", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_on_redshift() {
    scenario("types_rs", true).await;
}

/// A typed view's timestamp column takes exactly the forms `created_at` takes and
/// converts them to UTC as the cleaner does: offsets, `Z`/`z`, a lowercase `t`, long
/// fractions cut to microseconds, and a naive time in `cleaning.naive_timezone`.
async fn typed_timestamps(label: &str, redshift: bool) {
    let w = World::new(label, redshift).await;
    w.configure(
        r#"
[cleaning]
naive_timezone = "America/New_York"
[event_types.meeting_scheduled]
columns = { meeting_time = "timestamp" }
"#,
    );
    w.ok(&["migrate"]);
    let at = "2020-01-20T16:44:26Z";
    let values = [
        // (sent, read in the view)
        ("2020-01-20T16:44:26Z", "2020-01-20T16:44:26"),
        ("2020-01-20t18:44:26+0200", "2020-01-20T16:44:26"),
        ("2020-01-20 12:44:26-04", "2020-01-20T16:44:26"),
        ("2020-01-20 22:14:26.1234567+05:30", "2020-01-20T16:44:26.123456"),
        ("2020-01-20 16:44:26z", "2020-01-20T16:44:26"),
        // Naive: New York time, UTC-5 in January.
        ("2020-01-20 11:44:26", "2020-01-20T16:44:26"),
        // What created_at refuses reads NULL.
        ("2020-01-20 16:44:26+24", "NULL"),
        ("2020-01-20 16:44:26+05:60", "NULL"),
        ("2020-01-20 16:44:26.", "NULL"),
        ("2020-01-20 16:44:26 Z", "NULL"),
        ("2020-01-20 16:44:26GMT", "NULL"),
    ];
    let lines: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, (v, _))| {
            line(
                100 + i as u32,
                at,
                "meeting_scheduled",
                Some(&format!(r#"{{"meeting_time": "{v}"}}"#)),
            )
        })
        .collect();
    w.put("2020/01/20/t.json", &lines).await;
    w.ok(&["run"]);
    let got = w
        .rows("SELECT meeting_time FROM {s}.events_meeting_scheduled ORDER BY event_id")
        .await;
    let want: Vec<String> = values.iter().map(|(_, r)| (*r).to_owned()).collect();
    assert_eq!(got, want, "{values:?}");
    // The same forms as created_at: each sent value, loaded as an event's created_at,
    // is the same instant (or a reject where the view reads NULL).
    let as_created: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, (v, _))| line(200 + i as u32, v, "meeting_scheduled", None))
        .collect();
    w.put("2020/01/20/u.json", &as_created).await;
    w.ok(&["run"]);
    let created = w
        .rows(
            "SELECT COALESCE(to_char(e.created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), 'NULL') FROM \
             generate_series(200, 210) i LEFT JOIN {s}.events e \
             ON e.event_id = lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0') ORDER BY i",
        )
        .await;
    let want_created: Vec<String> = values
        .iter()
        .map(|(_, r)| match *r {
            "NULL" => "NULL".to_owned(),
            r if r.contains('.') => r.to_owned(),
            r => format!("{r}.000000"),
        })
        .collect();
    assert_eq!(created, want_created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_timestamps_on_postgres() {
    typed_timestamps("types_ts_pg", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_timestamps_on_redshift() {
    typed_timestamps("types_ts_rs", true).await;
}

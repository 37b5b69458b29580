//! End-to-end through the real binary: S3 source and staging on an in-process S3
//! server, the throwaway PostgreSQL as the warehouse. migrate, run, run again, add
//! files, run; an interrupted load rerun; corrupt input; the offline `clean` command.

use crate::support;

use std::io::Write;
use std::path::Path;

use support::{run_bin, CmdOutput, PgServer};

const BUCKET: &str = "product-events";

fn event(id: u32, day: u32, name: &str) -> String {
    format!(
        r#"{{"id": "{id:08x}-0000-4000-8000-{id:012x}", "created_at": "2020-01-{day:02} 10:{:02}:{:02}", "user_email": "User{id}@Example.com", "ip": "10.0.{}.{}", "event_name": "{name}", "metadata": {{"n": {id}, "big": 12345678901234567890}}}}"#,
        id % 60,
        (id / 60) % 60,
        id % 250,
        id % 200 + 1
    )
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// A config file for one test: its own schema and S3 prefixes.
fn write_config(dir: &Path, source: &str, staging: &str, pg: &PgServer, schema: &str, extra: &str) -> String {
    let path = dir.join("events-etl.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"{source}\"\n[staging]\nurl = \"{staging}\"\npart_size_mb = 1\n\
             [warehouse]\nkind = \"postgres\"\nschema = \"{schema}\"\n\
             [warehouse.postgres]\nurl = \"{}\"\n[s3]\nforce_path_style = true\n{extra}",
            pg.url()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Puts these (key, body) objects into `BUCKET`, 16 at a time.
async fn put_many(s3: &support::S3Server, objects: impl Iterator<Item = (String, String)>) {
    let mut puts = tokio::task::JoinSet::new();
    for (key, body) in objects {
        let client = s3.client().await;
        puts.spawn(async move {
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(body.into_bytes().into())
                .send()
                .await
                .unwrap()
        });
        if puts.len() >= 16 {
            puts.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = puts.join_next().await {
        r.unwrap();
    }
}

async fn scalar(pg: &PgServer, sql: &str) -> i64 {
    pg.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// One test's runs of the binary from and to the S3 server: a bucket, a fresh schema,
/// and a config whose source is `s3://BUCKET/<root>events/` and staging
/// `s3://BUCKET/<root>staging/`, plus `extra`.
struct S3Case {
    s3: support::S3Server,
    schema: String,
    dir: tempfile::TempDir,
    config: String,
    env: Vec<(String, String)>,
}

impl S3Case {
    async fn new(pg: &PgServer, label: &str, root: &str, extra: &str) -> S3Case {
        let s3 = support::s3().await;
        s3.create_bucket(BUCKET).await;
        let schema = pg.fresh_schema(label).await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &format!("s3://{BUCKET}/{root}events/"),
            &format!("s3://{BUCKET}/{root}staging/"),
            pg,
            &schema,
            extra,
        );
        let env = s3.env();
        S3Case {
            s3,
            schema,
            dir,
            config,
            env,
        }
    }

    /// The binary with this case's config, then `args`.
    fn cli(&self, args: &[&str]) -> CmdOutput {
        self.cli_env(args, &[])
    }

    /// [`S3Case::cli`] with `extra` variables in the environment too.
    fn cli_env(&self, args: &[&str], extra: &[(&str, &str)]) -> CmdOutput {
        let mut full = vec!["--config", self.config.as_str()];
        full.extend_from_slice(args);
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        run_bin(&full, &env, self.dir.path())
    }
}

/// The control tables must agree with the data tables, and every line must be accounted for.
async fn assert_books_balance(pg: &PgServer, schema: &str) {
    let q = |s: &str| s.replace("{s}", schema);
    let events = scalar(pg, &q("SELECT count(*) FROM {s}.events")).await;
    let rejects = scalar(pg, &q("SELECT count(*) FROM {s}.event_rejects")).await;
    let files = scalar(pg, &q("SELECT count(*) FROM {s}.etl_files")).await;
    let row = pg
        .client()
        .await
        .query_one(
            &q(
                "SELECT COALESCE(sum(files),0)::bigint, COALESCE(sum(events_loaded),0)::bigint, \
                COALESCE(sum(rejects),0)::bigint, COALESCE(sum(lines + recovered_events - events_loaded \
                - duplicates - rejects - blank_lines),0)::bigint FROM {s}.etl_loads",
            ),
            &[],
        )
        .await
        .unwrap();
    let dump = pg.dump(schema).await;
    assert_eq!(
        row.get::<_, i64>(0),
        files,
        "etl_loads.files vs etl_files\n{dump}"
    );
    assert_eq!(
        row.get::<_, i64>(1),
        events,
        "etl_loads.events_loaded vs events\n{dump}"
    );
    assert_eq!(
        row.get::<_, i64>(2),
        rejects,
        "etl_loads.rejects vs event_rejects\n{dump}"
    );
    assert_eq!(row.get::<_, i64>(3), 0, "some lines are unaccounted for\n{dump}");
    let per_load = scalar(
        pg,
        &q("SELECT count(*) FROM {s}.etl_loads l WHERE l.events_loaded <> \
            (SELECT count(*) FROM {s}.events e WHERE e.load_id = l.load_id)"),
    )
    .await;
    assert_eq!(
        per_load, 0,
        "a load's events_loaded differs from its rows\n{dump}"
    );
    let dup_ids = scalar(
        pg,
        &q("SELECT count(*) FROM (SELECT event_id FROM {s}.events GROUP BY 1 HAVING count(*) > 1) d"),
    )
    .await;
    assert_eq!(dup_ids, 0, "duplicate event ids\n{dump}");
    let staged = scalar(
        pg,
        &q(
            "SELECT (SELECT count(*) FROM {s}.stage_events) + (SELECT count(*) FROM {s}.stage_rejects) \
            + (SELECT count(*) FROM {s}.stage_files)",
        ),
    )
    .await;
    assert_eq!(staged, 0, "staging tables not empty after commit\n{dump}");
}

fn check(out: CmdOutput) -> CmdOutput {
    out.assert_success();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_incremental_load_through_the_binary() {
    let pg = support::postgres().await;
    let case = S3Case::new(pg, "e2e_s3", "", "").await;
    let (s3, schema) = (&case.s3, &case.schema);
    let cli = |args: &[&str]| case.cli(args);

    // More keys than one ListObjectsV2 page (1,000) holds: 1,001 one-line files, plus the
    // seed's two lines, a duplicate, a gzipped file, and keys that are not event files.
    put_many(
        s3,
        (0..1001u32).map(|i| {
            (
                format!("events/2020/01/{:02}/{i:032x}.json", 1 + i % 28),
                event(i, 1 + i % 28, "page_visit") + "\n",
            )
        }),
    )
    .await;
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/sample/events/2020/01/13/0f6e0555e9f34063b711a676d13e38f9.json"),
    )
    .unwrap();
    let seed_two: String = seed.lines().take(2).map(|l| format!("{l}\n")).collect();
    s3.put(BUCKET, "events/2020/01/29/seed.json", seed_two).await;
    s3.put(
        BUCKET,
        "events/2020/01/29/dup.jsonl.gz",
        gz(&(event(5, 6, "page_visit") + "\n\n")),
    )
    .await;
    s3.put(BUCKET, "events/2020/01/29/_SUCCESS", "").await;
    s3.put(BUCKET, "events/notes.txt", "not events").await;

    let out = check(cli(&["migrate"]));
    assert!(
        out.stdout.contains("applied migration 0001_create_tables"),
        "{out}"
    );
    let out = check(cli(&["migrate"]));
    assert!(out.stdout.contains("up to date"), "{out}");

    let out = check(cli(&["run"]));
    assert!(out.stdout.contains("loaded 1003 of 1003 event files"), "{out}");
    let dump = || async { pg.dump(schema).await };
    let q = |s: &str| s.replace("{s}", schema);
    // 1,001 + 2 from the seed (its truncated record rejected); the duplicate not loaded.
    assert_eq!(
        scalar(pg, &q("SELECT count(*) FROM {s}.events")).await,
        1003,
        "{}",
        dump().await
    );
    assert_eq!(scalar(pg, &q("SELECT count(*) FROM {s}.etl_files")).await, 1003);
    assert_eq!(
        scalar(
            pg,
            &q("SELECT sum(duplicates)::bigint FROM {s}.etl_files WHERE source_key LIKE '%dup.jsonl.gz'")
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            pg,
            &q("SELECT count(*) FROM {s}.event_rejects WHERE reason = 'malformed_json' AND source_line = 2")
        )
        .await,
        1
    );
    // Normalised values and exact metadata.
    let row = pg
        .client()
        .await
        .query_one(
            &q(
                "SELECT user_email, ip, metadata->>'big', source_key FROM {s}.events \
                WHERE event_id = '00000005-0000-4000-8000-000000000005'",
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "user5@example.com");
    assert_eq!(row.get::<_, String>(1), "10.0.5.6");
    assert_eq!(row.get::<_, String>(2), "12345678901234567890");
    assert_eq!(
        row.get::<_, String>(3),
        "events/2020/01/06/00000000000000000000000000000005.json"
    );
    assert_books_balance(pg, schema).await;
    // Staged objects are deleted after the commit.
    assert!(
        s3.list(BUCKET, "staging/").await.is_empty(),
        "staging left behind"
    );

    // Second run: nothing new.
    let out = check(cli(&["run"]));
    assert!(out.stdout.contains("nothing to load"), "{out}");
    assert_eq!(scalar(pg, &q("SELECT count(*) FROM {s}.etl_loads")).await, 1);

    // New files and a new version of an old key: only they load.
    s3.put(
        BUCKET,
        "events/2020/01/30/new.json",
        event(5000, 30, "feature_used") + "\n" + &event(5001, 30, "x") + "\n",
    )
    .await;
    s3.put(
        BUCKET,
        "events/2020/01/29/seed.json",
        seed.lines().next().unwrap().to_owned() + "\n",
    )
    .await;
    let out = check(cli(&["status"]));
    assert!(out.stdout.contains("2 pending"), "{out}");
    let out = check(cli(&["run"]));
    assert!(out.stdout.contains("loaded 2 of 1004 event files"), "{out}");
    let last = pg
        .client()
        .await
        .query_one(
            &q("SELECT files, events_loaded, duplicates FROM {s}.etl_loads ORDER BY started_at DESC LIMIT 1"),
            &[],
        )
        .await
        .unwrap();
    // new.json: 2 events; seed.json v2: its one event is already loaded -> duplicate.
    assert_eq!(
        (
            last.get::<_, i64>(0),
            last.get::<_, i64>(1),
            last.get::<_, i64>(2)
        ),
        (2, 2, 1)
    );
    assert_eq!(scalar(pg, &q("SELECT count(*) FROM {s}.events")).await, 1005);
    assert_eq!(
        scalar(
            pg,
            &q("SELECT count(*) FROM {s}.etl_files WHERE source_key = 'events/2020/01/29/seed.json'")
        )
        .await,
        2,
        "both versions of the key are recorded"
    );
    assert_books_balance(pg, schema).await;
    let out = check(cli(&["status"]));
    assert!(out.stdout.contains("0 pending"), "{out}");
}

/// On S3 with `staging.keep`, a load keeps its `<staging>/<load_id>/` whole: the three
/// manifests and every part they list (staging returns only once every write
/// succeeded, even with the manifests written alongside the last parts), and nothing
/// else. One file's staged row is refused (a test hook): it is quarantined, and
/// the load copies again without it in its own transaction. A later load without
/// `staging.keep` deletes its own objects and leaves the kept ones alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_kept_load_holds_its_staged_objects_whole() {
    let pg = support::postgres().await;
    // Two workers: each stages its own parts, both listed by one manifest.
    let case = S3Case::new(pg, "e2e_s3_fail", "", "[load]\nconcurrency = 2\n").await;
    let (s3, schema) = (&case.s3, &case.schema);
    for i in 0..6u32 {
        let body = format!(
            "{}\n{}\nnot json\n",
            event(2 * i, 3, "a"),
            event(2 * i + 1, 3, "b")
        );
        s3.put(BUCKET, &format!("events/2020/01/03/{i}.json"), body).await;
    }
    check(case.cli(&["migrate"]));
    let poison = "events/2020/01/03/4.json";
    let out = case.cli_env(
        &["run"],
        &[
            ("EVENTS_ETL_TEST_POISON_KEY", poison),
            ("EVENTS_ETL__STAGING__KEEP", "true"),
        ],
    );
    assert_eq!(out.code(), Some(5), "{out}");
    assert!(out.stdout.contains("loaded 5 of 6 event files"), "{out}");

    let kept = s3.list(BUCKET, "staging/").await;
    // staging/<load_id>/...
    let prefix = kept
        .first()
        .and_then(|k| k.split('/').nth(1))
        .map(|load_id| format!("staging/{load_id}/"))
        .unwrap_or_else(|| panic!("nothing kept: {out}"));
    assert!(
        kept.iter().all(|k| k.starts_with(&prefix)),
        "one load, kept: {kept:?}"
    );
    let loads: Vec<String> = pg
        .client()
        .await
        .query(&format!("SELECT load_id FROM {schema}.etl_loads"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(loads.len(), 1, "{loads:?}");
    assert_eq!(
        prefix,
        format!("staging/{}/", loads[0]),
        "the committed, kept load's objects stay"
    );
    let mut expected = Vec::new();
    for table in ["events", "rejects", "files"] {
        let key = format!("{prefix}{table}.manifest");
        let manifest: serde_json::Value = serde_json::from_slice(&s3.get(BUCKET, &key).await).unwrap();
        let entries = manifest["entries"].as_array().unwrap();
        assert!(!entries.is_empty(), "{key}: {manifest}");
        for e in entries {
            let url = e["url"].as_str().unwrap();
            let part = url.strip_prefix(&format!("s3://{BUCKET}/")).unwrap().to_owned();
            assert_eq!(
                s3.get(BUCKET, &part).await.len() as u64,
                e["meta"]["content_length"].as_u64().unwrap(),
                "{url}"
            );
            expected.push(part);
        }
        expected.push(key);
    }
    expected.sort();
    assert_eq!(kept, expected, "exactly the manifests and the parts they list");
    assert_eq!(
        scalar(pg, &format!("SELECT count(*) FROM {schema}.events")).await,
        10
    );

    // A new version of the quarantined file loads; that load too deletes only its own.
    s3.put(BUCKET, poison, format!("{}\n", event(100, 3, "c"))).await;
    let out = check(case.cli(&["run"]));
    assert!(out.stdout.contains("loaded 1 of 6 event files"), "{out}");
    assert_eq!(
        scalar(pg, &format!("SELECT count(*) FROM {schema}.events")).await,
        11
    );
    assert_eq!(
        s3.list(BUCKET, "staging/").await,
        kept,
        "the committed load deleted its own objects, and only those"
    );
    assert_books_balance(pg, schema).await;
}

/// On S3, a load that fails after its COPYs have read the staged objects (here at its
/// last statement) leaves nothing: nothing recorded, and nothing staged, since its
/// objects were deleted while it merged. The rerun stages and loads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_load_failing_after_its_copy_leaves_nothing_staged() {
    let pg = support::postgres().await;
    let case = S3Case::new(pg, "e2e_s3_late_fail", "", "").await;
    let (s3, schema) = (&case.s3, &case.schema);
    for i in 0..3u32 {
        s3.put(
            BUCKET,
            &format!("events/2020/01/03/{i}.json"),
            event(i, 3, "a") + "\n",
        )
        .await;
    }
    check(case.cli(&["migrate"]));
    pg.break_load_recording(schema, "simulated failure").await;
    let out = case.cli(&["run"]);
    assert_eq!(out.code(), Some(4), "{out}");
    assert_eq!(s3.list(BUCKET, "staging/").await, Vec::<String>::new(), "{out}");
    assert_eq!(
        scalar(pg, &format!("SELECT count(*) FROM {schema}.etl_files")).await,
        0
    );

    pg.repair_load_recording(schema).await;
    let out = check(case.cli(&["run"]));
    assert!(out.stdout.contains("loaded 3 of 3 event files"), "{out}");
    assert_eq!(s3.list(BUCKET, "staging/").await, Vec::<String>::new());
    assert_books_balance(pg, schema).await;
}

/// Copies the repo's sample files into a fresh source dir.
fn sample_source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("source");
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample");
    let mut stack = vec![from.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(&from).unwrap();
            if p.is_dir() {
                stack.push(p.clone());
                std::fs::create_dir_all(src.join(rel)).unwrap();
            } else {
                std::fs::create_dir_all(src.join(rel).parent().unwrap()).unwrap();
                std::fs::copy(&p, src.join(rel)).unwrap();
            }
        }
    }
    src
}

/// Events and rejects, without the columns that differ between runs.
async fn contents(pg: &PgServer, schema: &str) -> Vec<String> {
    texts(
        pg,
        schema,
        &[
            "SELECT event_id || created_at || user_email || coalesce(ip,'') || event_name || coalesce(metadata::text,'') \
             || source_key || source_line FROM {s}.events ORDER BY event_id",
            "SELECT source_key || source_line || reason || coalesce(raw_line,'') FROM {s}.event_rejects ORDER BY 1",
            "SELECT source_key || etag || lines || events_loaded || duplicates || rejects || blank_lines \
             FROM {s}.etl_files ORDER BY 1",
            "SELECT files || ' ' || lines || ' ' || events_loaded || ' ' || duplicates || ' ' || rejects FROM {s}.etl_loads",
        ],
    )
    .await
}

/// The one text column of every row of each query, in turn (`{s}` is the schema).
async fn texts(pg: &PgServer, schema: &str, queries: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for sql in queries {
        for r in pg
            .client()
            .await
            .query(&sql.replace("{s}", schema), &[])
            .await
            .unwrap()
        {
            out.push(r.get::<_, String>(0));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_load_then_rerun_equals_one_clean_run() {
    let pg = support::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let src = sample_source(dir.path());

    // The reference: one clean run.
    let clean_schema = pg.fresh_schema("e2e_ref").await;
    let cfg = write_config(
        dir.path(),
        &src.display().to_string(),
        "staging-ref/",
        pg,
        &clean_schema,
        "",
    );
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    let reference = contents(pg, &clean_schema).await;
    assert!(reference.len() > 70, "sample loaded too little: {reference:?}");

    // The same input, but the load fails at its very last statement.
    let schema = pg.fresh_schema("e2e_int").await;
    let cfg = write_config(
        dir.path(),
        &src.display().to_string(),
        "staging/",
        pg,
        &schema,
        "",
    );
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    pg.break_load_recording(&schema, "simulated crash before commit")
        .await;
    let out = run_bin(&["--config", &cfg, "run"], &[], dir.path());
    out.assert_failure();
    assert_eq!(out.code(), Some(4), "{out}");
    assert!(
        out.stderr.contains("insert_load") && out.stderr.contains("simulated crash"),
        "{out}"
    );
    assert!(
        contents(pg, &schema).await.is_empty(),
        "a failed load left rows\n{}",
        pg.dump(&schema).await
    );

    pg.repair_load_recording(&schema).await;
    check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    assert_eq!(
        contents(pg, &schema).await,
        reference,
        "rerun differs from one clean run"
    );
    assert_books_balance(pg, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_gzip_and_bad_lines_never_stop_good_data() {
    let pg = support::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/events/2020/02/01");
    std::fs::create_dir_all(&src).unwrap();
    // A gzip file cut short: the lines before the damage load, the damage is a reject.
    let body: String = (0..2000)
        .map(|i| event(10_000 + i, 1, "page_visit") + "\n")
        .collect();
    let full = gz(&body);
    std::fs::write(src.join("cut.json.gz"), &full[..full.len() / 2]).unwrap();
    std::fs::write(
        src.join("good.json"),
        event(1, 1, "page_visit") + "\n\u{feff}garbage\n" + &event(2, 1, "x"),
    )
    .unwrap();
    std::fs::write(src.join("binary.ndjson"), b"\xff\xfe\x00\n").unwrap();

    let schema = pg.fresh_schema("e2e_bad").await;
    let cfg = write_config(dir.path(), "src/", "staging/", pg, &schema, "");
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    let out = check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    assert!(out.stderr.contains("invalid_gzip"), "{out}");
    assert!(
        out.stderr.contains("binary.ndjson") && out.stderr.contains("invalid_utf8"),
        "{out}"
    );
    // One warning per file with rejects names the file, the count, and each reject's
    // line and reason.
    let good = out
        .stderr
        .lines()
        .filter(|l| l.contains("lines rejected") && l.contains("good.json"))
        .collect::<Vec<_>>();
    assert_eq!(good.len(), 1, "{out}");
    assert!(
        good[0].contains("rejects=1") && good[0].contains("first=\"2:"),
        "{out}"
    );
    let q = |s: &str| s.replace("{s}", &schema);
    let loaded_cut = scalar(
        pg,
        &q("SELECT count(*) FROM {s}.events WHERE source_key LIKE '%cut.json.gz'"),
    )
    .await;
    assert!(
        loaded_cut > 0 && loaded_cut < 2000,
        "cut file loaded {loaded_cut}"
    );
    assert_eq!(
        scalar(
            pg,
            &q("SELECT count(*) FROM {s}.event_rejects WHERE reason = 'invalid_gzip'")
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            pg,
            &q("SELECT count(*) FROM {s}.events WHERE source_key LIKE '%good.json'")
        )
        .await,
        2
    );
    assert_books_balance(pg, &schema).await;
}

#[test]
fn clean_command_works_offline() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample/events/2020/01/13");
    let files: Vec<String> = std::fs::read_dir(&sample)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    // One worker: one writer, so one part per table.
    let mut args = vec!["clean", "--out", "out", "--concurrency", "1"];
    args.extend(files.iter().map(String::as_str));
    // No config, no warehouse, no AWS: it must still work.
    let out = check(run_bin(&args, &[], dir.path()));
    assert!(out.stdout.contains("total: 2 files, 54 lines"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/events.manifest")).unwrap()).unwrap();
    let entries = manifest["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{manifest}");
    let url = entries[0]["url"].as_str().unwrap();
    let part = std::fs::read(url.strip_prefix("file://").unwrap()).unwrap();
    assert_eq!(
        entries[0]["meta"]["content_length"].as_u64().unwrap(),
        part.len() as u64
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&part[..]), &mut text).unwrap();
    // 23 + 25 clean events before deduplication (see the sample's etl_files).
    assert_eq!(text.lines().count(), 48);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["event_id"].as_str().unwrap().len() == 36 && v["source_line"].as_u64().is_some(),
            "{line}"
        );
    }
    let rejects = std::fs::read(dir.path().join("out/rejects/part-00000.jsonl.gz")).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&rejects[..]), &mut text).unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
}

/// `warehouse.kind = "redshift"` through the real binary, against the Data API stand-in
/// (every statement executed on the test PostgreSQL, COPY reading the staged manifests
/// from the S3 server): migrate, run, run again, add files, run. The tables end up
/// exactly as the PostgreSQL adapter leaves them on the same input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_through_the_data_api_matches_postgres() {
    use support::redshift_data::{redshift_data, TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER};
    let pg = support::postgres().await;
    let s3 = support::s3().await;
    s3.create_bucket(BUCKET).await;
    let api = redshift_data(s3.client().await).await;
    let env = api.env_with(s3.env());

    // The sample files, plus a gzipped file that repeats an id of the sample.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample");
    let mut stack = vec![sample.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(&sample).unwrap().display().to_string();
                s3.put(BUCKET, &key, std::fs::read(&p).unwrap()).await;
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let rs_schema = pg.fresh_schema("e2e_rs").await;
    let pg_schema = pg.fresh_schema("e2e_rs_ref").await;
    let redshift_section = format!(
        "[warehouse.redshift]\ncluster_identifier = \"{TEST_CLUSTER}\"\ndatabase = \"{TEST_DATABASE}\"\n\
         db_user = \"{TEST_DB_USER}\"\niam_role = \"arn:aws:iam::123456789012:role/events-etl-copy\"\nmax_poll_interval_ms = 100\n"
    );
    let rs_dir = dir.path().join("rs");
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&rs_dir).unwrap();
    std::fs::create_dir_all(&pg_dir).unwrap();
    let source = format!("s3://{BUCKET}/events/");
    let rs_cfg = write_config(
        &rs_dir,
        &source,
        &format!("s3://{BUCKET}/staging-rs/"),
        pg,
        &rs_schema,
        &redshift_section,
    );
    let pg_cfg = write_config(
        &pg_dir,
        &source,
        &format!("s3://{BUCKET}/staging-pg/"),
        pg,
        &pg_schema,
        "",
    );
    let mut rs_env = env.clone();
    rs_env.push(("EVENTS_ETL__WAREHOUSE__KIND".into(), "redshift".into()));
    let rs = |args: &[&str]| {
        let mut full = vec!["--config", rs_cfg.as_str()];
        full.extend_from_slice(args);
        check(run_bin(&full, &rs_env, &rs_dir))
    };
    let pgc = |args: &[&str]| {
        let mut full = vec!["--config", pg_cfg.as_str()];
        full.extend_from_slice(args);
        check(run_bin(&full, &env, &pg_dir))
    };

    let out = rs(&["migrate"]);
    assert!(
        out.stdout.contains("applied migration 0001_create_tables"),
        "{out}"
    );
    assert!(rs(&["migrate"]).stdout.contains("up to date"));
    pgc(&["migrate"]);
    let out = rs(&["run"]);
    assert!(
        out.stdout.contains("loaded 3 of 3 event files"),
        "{out}\n{}",
        api.log()
    );
    pgc(&["run"]);
    let out = rs(&["run"]);
    assert!(out.stdout.contains("nothing to load"), "{out}");

    s3.put(
        BUCKET,
        "events/2020/01/15/late.json.gz",
        gz(&(event(77, 15, "late_event") + "\n")),
    )
    .await;
    let out = rs(&["status"]);
    assert!(out.stdout.contains("1 pending"), "{out}");
    let out = rs(&["run"]);
    assert!(out.stdout.contains("loaded 1 of 4 event files"), "{out}");
    pgc(&["run"]);

    let got = contents(pg, &rs_schema).await;
    assert!(got.len() > 80, "{got:?}");
    assert_eq!(
        got,
        contents(pg, &pg_schema).await,
        "Redshift and PostgreSQL adapters disagree"
    );
    assert_books_balance(pg, &rs_schema).await;
    assert!(api.calls("BatchExecuteStatement") >= 3, "{:?}", api.call_counts());
    assert!(
        s3.list(BUCKET, "staging-rs/").await.is_empty(),
        "staging left behind"
    );
}

/// Many files of many lines, for runs long enough to interrupt or overlap.
fn busy_source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    for f in 0..40u32 {
        let p = src.join(format!("events/2020/03/{:02}/{f:032x}.json", 1 + f % 28));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // Ids repeat across files, identical (an id's day follows from the id), so which
        // copy wins is decided by key order and the others are duplicates.
        let body: String = (0..1500u32)
            .map(|i| {
                let id = f * 1000 + i;
                event(id, 1 + (id / 1000) % 28, "page_visit") + "\n"
            })
            .collect();
        std::fs::write(p, body).unwrap();
    }
    src
}

/// A busy source loaded by one clean run into a `reference` schema, and a second,
/// migrated `schema` (with its config) for the run under test.
struct Twin {
    pg: &'static PgServer,
    dir: tempfile::TempDir,
    reference: String,
    schema: String,
    cfg: String,
}

async fn busy_twin(label: &str) -> Twin {
    let pg = support::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let src = busy_source(dir.path()).display().to_string();
    let reference = pg.fresh_schema(&format!("{label}_ref")).await;
    let cfg = write_config(dir.path(), &src, "staging-ref/", pg, &reference, "");
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    let schema = pg.fresh_schema(label).await;
    let cfg = write_config(dir.path(), &src, "staging/", pg, &schema, "");
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    Twin {
        pg,
        dir,
        reference,
        schema,
        cfg,
    }
}

/// Two `run`s at once on the same source: the loaders serialise on the control table,
/// and the tables end as one run leaves them (no file recorded twice, no event twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_load_each_file_once() {
    let Twin {
        pg,
        dir,
        reference,
        schema,
        cfg,
    } = busy_twin("e2e_conc").await;
    let q = |s: &str| s.replace("{s}", &schema);
    // Make them really overlap: hold the loaders' lock until both runs have discovered,
    // cleaned and staged everything and wait for it; then let them race.
    let mut holder = pg.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute(&q("LOCK TABLE {s}.etl_files IN SHARE ROW EXCLUSIVE MODE"))
        .await
        .unwrap();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (cfg, cwd) = (cfg.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || run_bin(&["--config", &cfg, "run"], &[], &cwd))
        })
        .collect();
    let watcher = pg.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE 'LOCK TABLE %etl_files%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the two runs never both waited for the lock"
        );
        tokio::task::yield_now().await;
    }
    tx.commit().await.unwrap();
    let outs: Vec<_> = runs.into_iter().map(|r| check(r.join().unwrap())).collect();
    assert_eq!(
        outs.iter()
            .filter(|o| o.stdout.contains("recorded by a concurrent run"))
            .count(),
        1,
        "exactly one run found every file taken: {outs:?}"
    );
    assert_eq!(
        scalar(pg, &q("SELECT count(*) FROM {s}.etl_files")).await,
        40,
        "{}",
        pg.dump(&schema).await
    );
    let want = contents(pg, &reference).await;
    let got = contents(pg, &schema).await;
    // Events, rejects and file rows match one run; the load rows may be split in two.
    let without_loads = |v: &[String], n: usize| v[..v.len() - n].to_vec();
    let ref_loads = scalar(pg, &format!("SELECT count(*) FROM {reference}.etl_loads")).await as usize;
    let loads = scalar(pg, &q("SELECT count(*) FROM {s}.etl_loads")).await as usize;
    assert_eq!(loads, 1, "the second loader must record nothing");
    assert_eq!(without_loads(&got, loads), without_loads(&want, ref_loads));
    assert_books_balance(pg, &schema).await;
}

/// A run killed at an arbitrary moment (here: while it is cleaning and staging, once it
/// logged its first cleaned file), then run again, ends as one clean run: nothing of the
/// killed run was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_then_a_rerun_equals_one_clean_run() {
    let Twin {
        pg,
        dir,
        reference,
        schema,
        cfg,
    } = busy_twin("e2e_kill").await;
    let mut child = std::process::Command::new(support::bin())
        .args(["--config", &cfg, "run"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Waits for the event, not for a time: the first file cleaned (the log goes to
    // stderr), so the kill lands inside cleaning and staging however busy the machine.
    let log = std::io::BufReader::new(child.stderr.take().unwrap());
    let cleaning = std::io::BufRead::lines(log)
        .map_while(Result::ok)
        .any(|l| l.contains("file cleaned"));
    assert!(cleaning, "the run ended without logging a cleaned file");
    let _ = child.kill(); // SIGKILL: no cleanup of any kind
    let status = child.wait().unwrap();
    eprintln!("killed run ended with {status}");
    check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    let q = |s: &str| s.replace("{s}", &schema);
    let loads = scalar(pg, &q("SELECT count(*) FROM {s}.etl_loads")).await as usize;
    let want = contents(pg, &reference).await;
    let got = contents(pg, &schema).await;
    // If the kill came after the commit, the load is the killed run's; either way one load.
    assert_eq!(loads, 1, "{}", pg.dump(&schema).await);
    assert_eq!(got, want, "the rerun differs from one clean run");
    assert_books_balance(pg, &schema).await;
}

/// Everything left under a directory (files and directories), relative to it.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A source directory that does not exist is an error naming it (exit 3), for `run` and
/// `status`, whether written as a path or a file:// URL: a typo must not look like
/// "nothing to load".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_source_directory_is_an_error_naming_it() {
    let pg = support::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let schema = pg.fresh_schema("e2e_nosrc").await;
    let missing = dir.path().join("no/such/events");
    for source in [
        "no/such/events/".to_owned(),
        format!("file://{}/", missing.display()),
    ] {
        let cfg = write_config(dir.path(), &source, "staging/", pg, &schema, "");
        check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
        for cmd in ["run", "status"] {
            let out = run_bin(&["--config", &cfg, cmd], &[], dir.path());
            assert_eq!(out.code(), Some(3), "{source} {cmd}: {out}");
            assert!(
                out.stderr.contains(&format!(
                    "source: cannot list file://{}/: the directory {} does not exist",
                    missing.display(),
                    missing.display()
                )),
                "{source} {cmd}: {out}"
            );
            assert!(!out.stdout.contains("nothing to load"), "{out}");
        }
    }
    // An existing but empty source is still "nothing to load".
    std::fs::create_dir_all(&missing).unwrap();
    let cfg = write_config(dir.path(), "no/such/events/", "staging/", pg, &schema, "");
    let out = check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    assert!(out.stdout.contains("nothing to load: 0 event files"), "{out}");
}

/// A local load deletes its staged objects and the directories that held them: no
/// empty `<load_id>/{events,rejects,files}/` is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_load_leaves_no_empty_directories_in_staging() {
    let pg = support::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let src = sample_source(dir.path());
    let schema = pg.fresh_schema("e2e_tidy").await;
    let cfg = write_config(
        dir.path(),
        &src.display().to_string(),
        "staging/",
        pg,
        &schema,
        "",
    );
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    let out = check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    assert!(out.stdout.contains("loaded 3 of 3 event files"), "{out}");
    assert_eq!(leftovers(&dir.path().join("staging")), Vec::<String>::new());
    assert_books_balance(pg, &schema).await;
}

// ---- damaged gzip input ----

/// `text` gzipped at `level` as one member.
fn gz_level(text: &str, level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// `n` event lines, ids `first..first + n`, each ending in `\n`.
fn events_text(first: u32, n: u32) -> String {
    (first..first + n)
        .map(|i| event(i, 2, "page_visit") + "\n")
        .collect()
}

/// The rows of every part a staged manifest lists (under `out`), as JSON.
fn staged_rows(out: &Path, table: &str) -> Vec<serde_json::Value> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{table}.manifest"))).unwrap()).unwrap();
    let mut rows = Vec::new();
    for entry in manifest["entries"].as_array().unwrap() {
        let path = entry["url"].as_str().unwrap().strip_prefix("file://").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(&std::fs::read(path).unwrap()[..]),
            &mut text,
        )
        .unwrap();
        rows.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    rows
}

/// The `clean` summary line of one file.
fn summary<'a>(out: &'a CmdOutput, file: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with(&format!("{file}: ")))
        .unwrap_or_else(|| panic!("no summary for {file}\n{out}"))
}

/// A valid member followed by a member whose deflate data holds a reserved block type
/// (flate2 reports that as `ErrorKind::Other`, not a transport error). The lines of the
/// first member, whose CRC-32 and length verified, load; the corrupt member loads none of
/// its lines and is one `invalid_gzip` reject after them; the file is recorded,
/// everything else loads, and reruns do nothing; a new version of the file loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_deflate_data_is_quarantined_not_a_transport_error() {
    let pg = support::postgres().await;
    let case = S3Case::new(pg, "e2e_deflate", "deflate/", "").await;
    let (s3, schema) = (&case.s3, &case.schema);
    let cli = |args: &[&str]| case.cli(args);
    let mut bad = gz(&events_text(100, 3));
    let mut second = gz(&events_text(200, 3));
    second[10] = 0b111; // first block: BFINAL = 1, BTYPE = 11 (reserved)
    bad.extend(second);
    s3.put(BUCKET, "deflate/events/2020/02/02/bad.json.gz", bad).await;
    s3.put(BUCKET, "deflate/events/2020/02/02/good.json", events_text(300, 4))
        .await;

    check(cli(&["migrate"]));
    let out = cli(&["run"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("loaded 2 of 2 event files"), "{out}");
    let q = |s: &str| s.replace("{s}", schema);
    assert_eq!(
        scalar(
            pg,
            &q("SELECT count(*) FROM {s}.events WHERE source_key LIKE '%bad.json.gz'")
        )
        .await,
        3,
        "the verified first member's lines: {}",
        pg.dump(schema).await
    );
    assert_eq!(
        scalar(
            pg,
            &q("SELECT count(*) FROM {s}.events WHERE source_key LIKE '%good.json'")
        )
        .await,
        4
    );
    let raw: String = pg
        .client()
        .await
        .query_one(
            &q("SELECT raw_line FROM {s}.event_rejects WHERE reason = 'invalid_gzip' AND source_key LIKE '%bad.json.gz' AND source_line = 4"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(raw.contains("corrupt in member 2"), "{raw}");
    assert!(raw.contains("members 1 to 1"), "{raw}");
    let row = pg
        .client()
        .await
        .query_one(
            &q("SELECT lines, events_loaded, rejects FROM {s}.etl_files WHERE source_key LIKE '%bad.json.gz'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)),
        (4, 3, 1)
    );
    assert_books_balance(pg, schema).await;

    // Quarantined: the next runs do not retry it.
    let out = check(cli(&["run"]));
    assert!(out.stdout.contains("nothing to load"), "{out}");
    // A repaired upload is a new version and loads.
    s3.put(
        BUCKET,
        "deflate/events/2020/02/02/bad.json.gz",
        gz(&events_text(100, 3)),
    )
    .await;
    let out = check(cli(&["run"]));
    assert!(out.stdout.contains("loaded 1 of 2 event files"), "{out}");
    assert_eq!(
        scalar(
            pg,
            &q("SELECT count(*) FROM {s}.events WHERE source_key LIKE '%bad.json.gz'")
        )
        .await,
        3
    );
    assert_books_balance(pg, schema).await;
}

/// The lines of gzip members whose CRC-32 and length verified load, whatever follows
/// them; what follows the last verified member (bytes that are no gzip member, a member
/// whose trailer does not match) is one `invalid_gzip` reject naming the offset, and a
/// line that runs from a verified member into the damaged one does not load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_verified_gzip_members_load_before_damage() {
    let dir = tempfile::tempdir().unwrap();
    let text = events_text(70_000, 6);
    // Inside line 3: the members split a line.
    let split = text.match_indices('\n').nth(1).map(|(i, _)| i + 20).unwrap();
    let (head, tail) = text.split_at(split);
    let with_bad_crc = |t: &str| {
        let mut m = gz_level(t, 6);
        let at = m.len() - 8;
        m[at] ^= 0xff;
        m
    };
    let files: Vec<(&str, Vec<u8>)> = vec![
        // 1,000 lines in one verified member, then bytes that are no gzip member.
        ("garbage.json.gz", {
            let mut b = gz_level(&events_text(71_000, 1000), 6);
            b.extend_from_slice(b"this is not another gzip member");
            b
        }),
        // Two verified members (a line split across them), then a corrupt member.
        ("third.json.gz", {
            let mut b = gz_level(head, 6);
            b.extend(gz_level(tail, 6));
            b.extend(with_bad_crc(&events_text(72_000, 3)));
            b
        }),
        // One verified member, then a member whose trailer does not match: the line that
        // starts in the first and ends in the second does not load, nor do the second's.
        ("straddle.json.gz", {
            let mut b = gz_level(head, 6);
            b.extend(with_bad_crc(tail));
            b
        }),
    ];
    let mut args = vec!["clean".to_owned(), "--out".to_owned(), "out".to_owned()];
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        args.push(dir.path().join(name).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = check(run_bin(&args, &[], dir.path()));
    let key = |name: &str| dir.path().join(name).display().to_string();
    for (name, counts) in [
        ("garbage.json.gz", "1001 lines, 1000 events, 1 rejects"),
        ("third.json.gz", "7 lines, 6 events, 1 rejects"),
        ("straddle.json.gz", "3 lines, 2 events, 1 rejects"),
    ] {
        assert!(
            summary(&out, &key(name)).starts_with(&format!("{}: {counts}", key(name))),
            "{name}\n{out}"
        );
    }
    let events = staged_rows(&dir.path().join("out"), "events");
    let of = |name: &str| {
        events
            .iter()
            .filter(|e| e["source_key"].as_str() == Some(key(name).as_str()))
            .count()
    };
    assert_eq!(
        (of("garbage.json.gz"), of("third.json.gz"), of("straddle.json.gz")),
        (1000, 6, 2)
    );
    let rejects = staged_rows(&dir.path().join("out"), "rejects");
    let reject = |name: &str| {
        rejects
            .iter()
            .find(|r| r["source_key"].as_str() == Some(key(name).as_str()))
            .unwrap_or_else(|| panic!("no reject for {name}: {rejects:?}"))
            .clone()
    };
    let r = reject("garbage.json.gz");
    assert_eq!(
        (r["reason"].as_str(), r["source_line"].as_u64()),
        (Some("invalid_gzip"), Some(1001))
    );
    let raw = r["raw_line"].as_str().unwrap();
    assert!(
        raw.contains("compressed byte") && raw.contains("members 1 to 1"),
        "{raw}"
    );
    assert_eq!(reject("third.json.gz")["source_line"].as_u64(), Some(7));
    let r = reject("straddle.json.gz");
    assert_eq!(r["source_line"].as_u64(), Some(3));
    assert!(r["raw_line"].as_str().unwrap().contains("CRC-32 mismatch"), "{r}");
}

/// No row of a file whose gzip data is corrupt is staged, by `clean` or `run`: a flipped
/// byte in a stored block (only the CRC-32 notices), random bytes inside a deflate
/// stream, and damage found after several parts of the file were already uploaded.
/// The files around them load in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_gzip_data_stages_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/events/2020/02/03");
    std::fs::create_dir_all(&src).unwrap();
    let mut damaged = Vec::new();

    // A stored (uncompressed) block with one byte changed: it decodes to a modified event.
    let mut stored = gz_level(&events_text(1_000, 40), 0);
    let i = stored.len() / 2;
    stored[i] = if stored[i] == b'7' { b'8' } else { b'7' };
    damaged.push(("stored.json.gz", stored));
    // Random bytes over the deflate data, in the middle and near its end.
    let deflated = gz_level(&events_text(2_000, 1000), 6);
    let data_end = deflated.len() - 8;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for (n, at) in [
        deflated.len() / 3,
        deflated.len() / 2,
        data_end - 400,
        data_end - 40,
        data_end - 9,
    ]
    .into_iter()
    .enumerate()
    {
        let mut bytes = deflated.clone();
        for b in bytes.iter_mut().skip(at).take(8).take(data_end - at) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        damaged.push((
            [
                "random0.json.gz",
                "random1.json.gz",
                "random2.json.gz",
                "random3.json.gz",
                "random4.json.gz",
            ][n],
            bytes,
        ));
    }
    // Big enough to fill several 1 MiB parts before the damage near its end is found.
    let big = gz_level(&events_text(10_000, 8_000), 6);
    let mut big_bad = big.clone();
    let at = big_bad.len() - 8 - 200;
    big_bad[at..at + 8].copy_from_slice(b"\xde\xad\xbe\xef\xde\xad\xbe\xef");
    damaged.push(("big.json.gz", big_bad));
    for (name, bytes) in &damaged {
        std::fs::write(src.join(name), bytes).unwrap();
    }
    std::fs::write(src.join("a-first.json"), events_text(50_000, 3000)).unwrap();
    std::fs::write(src.join("z-last.json"), events_text(60_000, 5)).unwrap();

    // `clean`, 1 MiB parts: a good file, every damaged one, a good one.
    let mut files = vec![src.join("a-first.json").display().to_string()];
    files.extend(damaged.iter().map(|(n, _)| src.join(n).display().to_string()));
    files.push(src.join("z-last.json").display().to_string());
    // One worker, so the damaged file's rows share parts with its neighbours'.
    let mut args = vec![
        "clean",
        "--out",
        "out",
        "--part-size-mb",
        "1",
        "--concurrency",
        "1",
    ];
    args.extend(files.iter().map(String::as_str));
    let out = check(run_bin(&args, &[], dir.path()));
    for (name, _) in &damaged {
        let key = src.join(name).display().to_string();
        assert!(
            summary(&out, &key).starts_with(&format!("{key}: 1 lines, 0 events, 1 rejects")),
            "{name}\n{out}"
        );
    }
    let events = staged_rows(&dir.path().join("out"), "events");
    assert_eq!(events.len(), 3005, "{out}");
    assert!(
        events.iter().all(|e| {
            let key = e["source_key"].as_str().unwrap();
            key.ends_with("a-first.json") || key.ends_with("z-last.json")
        }),
        "a row of a damaged file was staged"
    );
    let rejects = staged_rows(&dir.path().join("out"), "rejects");
    assert_eq!(rejects.len(), damaged.len(), "{rejects:?}");
    assert!(rejects
        .iter()
        .all(|r| r["reason"] == "invalid_gzip" && r["source_line"] == 1));
    // The parts rolled back are gone: every part left is one the manifests list.
    let parts: Vec<String> = leftovers(&dir.path().join("out/events"));
    let listed: Vec<String> = {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("out/events.manifest")).unwrap()).unwrap();
        let mut v: Vec<String> = m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(parts, listed);
    // Parts of big.json.gz had been closed and uploaded before its damage was found
    // (the part numbers went on past them), yet a-first.json's rows, which shared the
    // first of them, are all there.
    assert!(
        listed.last().is_some_and(|p| p.as_str() >= "part-00002.jsonl.gz"),
        "{listed:?}"
    );

    // `run` into PostgreSQL: the same, and the books balance.
    let pg = support::postgres().await;
    let schema = pg.fresh_schema("e2e_gzbad").await;
    let cfg = write_config(dir.path(), "src/", "staging/", pg, &schema, "");
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    let out = check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    assert!(out.stdout.contains("loaded 9 of 9 event files"), "{out}");
    let q = |s: &str| s.replace("{s}", &schema);
    assert_eq!(
        scalar(pg, &q("SELECT count(*) FROM {s}.events")).await,
        3005,
        "{}",
        pg.dump(&schema).await
    );
    assert_eq!(
        scalar(
            pg,
            &q("SELECT count(*) FROM {s}.event_rejects WHERE reason = 'invalid_gzip'")
        )
        .await,
        damaged.len() as i64
    );
    assert_books_balance(pg, &schema).await;
    let out = check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    assert!(out.stdout.contains("nothing to load"), "{out}");
}

/// A gzip file cut short loads its complete lines; the line the data ends inside is its
/// `invalid_gzip` reject, and no line is added: a 3-line file reports 3 lines however
/// it is cut.
#[test]
fn a_cut_gzip_file_reports_the_lines_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let text = events_text(1, 3);
    let full = gz(&text);
    let trailer_cut = &full[..full.len() - 4];
    // Find a cut that ends the data inside line 3.
    let third_start = text.len() - text.lines().last().unwrap().len() - 1;
    let mid_line3 = (11..full.len() - 8)
        .find(|&n| {
            let mut got = Vec::new();
            let _ =
                std::io::Read::read_to_end(&mut flate2::read::DeflateDecoder::new(&full[10..n]), &mut got);
            let got = got.len();
            got > third_start + 10 && got < text.len() - 10
        })
        .expect("a cut inside line 3");
    std::fs::write(dir.path().join("trailer.json.gz"), trailer_cut).unwrap();
    std::fs::write(dir.path().join("midline.json.gz"), &full[..mid_line3]).unwrap();
    let out = check(run_bin(
        &["clean", "--out", "out", "trailer.json.gz", "midline.json.gz"],
        &[],
        dir.path(),
    ));
    assert!(
        summary(&out, "trailer.json.gz").starts_with("trailer.json.gz: 3 lines, 3 events, 0 rejects"),
        "{out}"
    );
    assert!(
        summary(&out, "midline.json.gz").starts_with("midline.json.gz: 3 lines, 2 events, 1 rejects"),
        "{out}"
    );
    assert!(out.stderr.contains("gzip data ends early"), "{out}");
    let rejects = staged_rows(&dir.path().join("out"), "rejects");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["reason"], "invalid_gzip");
    assert_eq!(rejects[0]["source_line"], 3);
    assert!(
        rejects[0]["raw_line"]
            .as_str()
            .unwrap()
            .contains("inside this line"),
        "{}",
        rejects[0]["raw_line"]
    );
}

/// Concatenated gzip members are one file; a BOM at the start of a later member (as `cat
/// a.gz b.gz` makes of two files that each begin with one) is ignored like the file's
/// own.
#[test]
fn a_bom_starting_a_later_gzip_member_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = gz(&format!("\u{feff}{}", events_text(1, 2)));
    bytes.extend(gz(&format!("\u{feff}{}", events_text(3, 2))));
    std::fs::write(dir.path().join("cat.json.gz"), bytes).unwrap();
    let out = check(run_bin(
        &["clean", "--out", "out", "cat.json.gz"],
        &[],
        dir.path(),
    ));
    assert!(
        summary(&out, "cat.json.gz").starts_with("cat.json.gz: 4 lines, 4 events, 0 rejects"),
        "{out}"
    );
}

// ---- lines at the size limit ----

/// A valid event line of exactly `len` bytes, its metadata padded in strings SUPER
/// can hold (at most 65,535 bytes each).
fn event_of_len(id: u32, len: usize) -> String {
    let head = format!(
        r#"{{"id":"{id:08x}-0000-4000-8000-{id:012x}","created_at":"2020-01-03 10:00:00","user_email":"big@example.com","event_name":"big","metadata":{{"#
    );
    let mut line = head;
    let mut k = 0;
    while line.len() + 40 + 60_000 < len {
        line.push_str(&format!("\"k{k}\":\"{}\",", "x".repeat(60_000)));
        k += 1;
    }
    let fixed = format!("\"k{k}\":\"\"}}}}").len();
    let pad = len - line.len() - fixed;
    line.push_str(&format!("\"k{k}\":\"{}\"}}}}", "y".repeat(pad)));
    assert_eq!(line.len(), len);
    line
}

/// Lines within a few bytes of the 1 MiB limit load into PostgreSQL. Their staged rows
/// are longer than the lines (the id, timestamp, source key and line number are added),
/// and reading the staged parts back cut them at 1 MiB + 1: every `run` exited 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_at_the_size_limit_load_into_postgres() {
    const MAX: usize = events_etl::clean::MAX_LINE_BYTES;
    let pg = support::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    // A long key, as real ones are (the staged row repeats it).
    let src = dir
        .path()
        .join("src/events/2020/01/03/app-server-eu-west-1-production-0f6e0555e9f34063b711a676d13e38f9");
    std::fs::create_dir_all(&src).unwrap();
    let body = [
        event_of_len(1, MAX),
        event_of_len(2, MAX - 3) + "\r",
        event_of_len(3, MAX - 110),
        event_of_len(4, MAX + 1),
    ]
    .join("\n");
    std::fs::write(src.join("big.json"), body).unwrap();
    let schema = pg.fresh_schema("e2e_big").await;
    let cfg = write_config(dir.path(), "src/", "staging/", pg, &schema, "");
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    let out = run_bin(&["--config", &cfg, "run"], &[], dir.path());
    assert_eq!(out.code(), Some(0), "{out}");
    let q = |s: &str| s.replace("{s}", &schema);
    assert_eq!(
        scalar(pg, &q("SELECT count(*) FROM {s}.events")).await,
        3,
        "{}",
        pg.dump(&schema).await
    );
    assert_eq!(
        scalar(pg, &q("SELECT count(*) FROM {s}.event_rejects WHERE reason = 'record_too_large' AND source_line = 4")).await,
        1
    );
    // Loaded whole: every metadata string of the longest line, to the last byte.
    let line: serde_json::Value = serde_json::from_str(&event_of_len(1, MAX)).unwrap();
    let want: i64 = line["metadata"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().len() as i64)
        .sum();
    assert_eq!(
        scalar(
            pg,
            &q(
                "SELECT sum(length(m.value))::bigint FROM {s}.events e, jsonb_each_text(e.metadata) m \
                WHERE e.event_id = '00000001-0000-4000-8000-000000000001'"
            )
        )
        .await,
        want
    );
    assert_books_balance(pg, &schema).await;
}

/// `clean` opens local files by the name the OS gives, whatever bytes it holds (a quote,
/// a newline, a backslash, a byte that is not UTF-8), and shows such names escaped.
#[test]
fn clean_opens_files_whose_names_are_not_plain_utf8() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let names: [&[u8]; 4] = [
        b"it's.json",
        b"new\nline.json",
        b"back\\slash.json",
        b"byte\xff.json",
    ];
    let mut cmd = std::process::Command::new(support::bin());
    cmd.current_dir(dir.path()).args(["clean", "--out", "out"]);
    for (i, name) in names.iter().enumerate() {
        let name = std::ffi::OsStr::from_bytes(name);
        std::fs::write(dir.path().join(name), events_text(80_000 + 10 * i as u32, 2)).unwrap();
        cmd.arg(name);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("total: 4 files, 8 lines, 8 events"), "{stdout}");
    assert!(stdout.contains("it's.json: 2 lines, 2 events"), "{stdout}");
    assert!(stdout.contains("back\\slash.json: 2 lines, 2 events"), "{stdout}");
    assert!(
        stdout.contains(r#""new\nline.json": 2 lines, 2 events"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""byte\xFF.json": 2 lines, 2 events"#),
        "{stdout}"
    );
    assert_eq!(staged_rows(&dir.path().join("out"), "events").len(), 8);
}

/// One line of the cut corpus: id `id`, `created_at` at `hours` after 2020-02-01 00:00.
fn cut_event(id: u32, hours: u32, email: &str) -> String {
    let t = chrono::NaiveDate::from_ymd_opt(2020, 2, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::hours(i64::from(hours));
    format!(
        r#"{{"id": "{id:08x}-0000-4000-8000-00000000cafe", "created_at": "{}", "user_email": "{email}", "event_name": "e", "metadata": {{"n": {id}}}}}"#,
        t.format("%Y-%m-%d %H:%M:%S")
    )
}

/// Repeats within and beyond the one-day window, within files, across files and across
/// days (partitions 2020/02/01 to 2020/02/04, two files each).
fn cut_corpus() -> Vec<(String, String)> {
    let mut files: Vec<(String, Vec<String>)> = Vec::new();
    for day in 1..=4u32 {
        for f in ["a", "b"] {
            files.push((format!("events/2020/02/{day:02}/{f}.json"), Vec::new()));
        }
    }
    let at = |day: u32, f: &str| (day as usize - 1) * 2 + usize::from(f == "b");
    // Unique ids, two per file.
    for (i, file) in files.iter_mut().enumerate() {
        for k in 0..2u32 {
            let id = 100 + i as u32 * 2 + k;
            file.1.push(cut_event(id, 24 * (i as u32 / 2) + k, "u@x.io"));
        }
    }
    let mut put = |day: u32, f: &str, line: String| files[at(day, f)].1.push(line);
    // 1: identical copies on days 1 and 3: a duplicate.
    put(1, "a", cut_event(1, 5, "one@x.io"));
    put(3, "b", cut_event(1, 5, "one@x.io"));
    // 2: two days apart: two rows.
    put(1, "b", cut_event(2, 5, "two@x.io"));
    put(3, "a", cut_event(2, 53, "two@x.io"));
    // 3: a chain 20 hours apart each: a row, then conflicting duplicates.
    put(1, "a", cut_event(3, 10, "three@x.io"));
    put(2, "a", cut_event(3, 30, "three@x.io"));
    put(3, "a", cut_event(3, 50, "three@x.io"));
    // 4: another email in the same file: a row and a conflicting duplicate.
    put(2, "b", cut_event(4, 30, "four@x.io"));
    put(2, "b", cut_event(4, 30, "FOUR-changed@x.io"));
    // 5: repeated identically within one file: a duplicate.
    put(4, "a", cut_event(5, 80, "five@x.io"));
    put(4, "a", cut_event(5, 80, "five@x.io"));
    // 6: 0, 3 and 1.5 days: three rows, each copy more than a day from the others.
    put(1, "b", cut_event(6, 0, "six@x.io"));
    put(3, "b", cut_event(6, 72, "six@x.io"));
    put(4, "b", cut_event(6, 36, "six@x.io"));
    // 7: first sent on day 4, then again in an earlier partition: key order decides.
    put(4, "a", cut_event(7, 90, "seven@x.io"));
    put(2, "a", cut_event(7, 91, "seven-early@x.io"));
    files
        .into_iter()
        .map(|(k, lines)| (k, lines.join("\n") + "\n"))
        .collect()
}

/// What a schema holds, for comparing cuts: events, rejects, and the load totals.
async fn cut_state(pg: &PgServer, schema: &str) -> Vec<String> {
    texts(
        pg,
        schema,
        &[
            "SELECT event_id || ' ' || created_at || ' ' || user_email || ' ' || source_key || ':' || source_line \
             FROM {s}.events ORDER BY 1",
            "SELECT reason || ' ' || source_key || ':' || source_line FROM {s}.event_rejects ORDER BY 1",
            "SELECT 'totals ' || sum(lines) || ' ' || sum(events_loaded) || ' ' || sum(duplicates) || ' ' \
             || sum(rejects) || ' ' || sum(conflicts) || ' ' || sum(blank_lines) FROM {s}.etl_loads",
            "SELECT 'files ' || count(*) FROM {s}.etl_files",
        ],
    )
    .await
}

/// The rows per id do not depend on how the files are cut into loads and runs: the
/// same corpus loaded in one run, one file per load (`load.max_files = 1`), and day by
/// day (`run --from D --to D`), on PostgreSQL and on Redshift (the Data API stand-in),
/// ends in the same events, the same rejects (conflicting duplicates included) and the
/// same totals in `etl_loads`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_do_not_depend_on_how_loads_are_cut() {
    use support::redshift_data::{redshift_data, TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER};
    let pg = support::postgres().await;
    let s3 = support::s3().await;
    s3.create_bucket(BUCKET).await;
    for (key, body) in cut_corpus() {
        s3.put(BUCKET, &format!("cut/{key}"), body).await;
    }
    let api = redshift_data(s3.client().await).await;
    let env = api.env_with(s3.env());
    let redshift_section = format!(
        "[warehouse.redshift]\ncluster_identifier = \"{TEST_CLUSTER}\"\ndatabase = \"{TEST_DATABASE}\"\n\
         db_user = \"{TEST_DB_USER}\"\niam_role = \"arn:aws:iam::123456789012:role/events-etl-copy\"\nmax_poll_interval_ms = 100\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut states = Vec::new();
    for kind in ["postgres", "redshift"] {
        for cut in ["one run", "file by file", "day by day"] {
            let label = format!("cut_{}_{}", &kind[..2], cut.replace(' ', "_"));
            let schema = pg.fresh_schema(&label).await;
            let run_dir = dir.path().join(&label);
            std::fs::create_dir_all(&run_dir).unwrap();
            let section = if kind == "redshift" {
                redshift_section.as_str()
            } else {
                ""
            };
            let cfg = write_config(
                &run_dir,
                &format!("s3://{BUCKET}/cut/events/"),
                &format!("s3://{BUCKET}/staging-{label}/"),
                pg,
                &schema,
                section,
            );
            let mut run_env = env.clone();
            run_env.push(("EVENTS_ETL__WAREHOUSE__KIND".into(), kind.into()));
            if cut == "file by file" {
                run_env.push(("EVENTS_ETL__LOAD__MAX_FILES".into(), "1".into()));
            }
            let bin = |args: &[&str]| {
                let mut full = vec!["--config", cfg.as_str()];
                full.extend_from_slice(args);
                check(run_bin(&full, &run_env, &run_dir))
            };
            bin(&["migrate"]);
            if cut == "day by day" {
                for day in 1..=4 {
                    let d = format!("2020-02-{day:02}");
                    let out = bin(&["run", "--from", &d, "--to", &d]);
                    assert!(
                        out.stdout.contains("loaded 2 of 2 event files"),
                        "{kind} {cut} {d}: {out}"
                    );
                }
            } else {
                let metrics = run_dir.join("metrics.prom").display().to_string();
                let out = bin(&["run", "--metrics-file", &metrics]);
                assert!(
                    out.stdout.contains("loaded 8 of 8 event files"),
                    "{kind} {cut}: {out}"
                );
                if cut == "file by file" {
                    assert!(out.stdout.contains("in 8 load(s)"), "{kind} {cut}: {out}");
                }
                // The conflicting duplicates are counted in the metrics and in status.
                let text = std::fs::read_to_string(&metrics).unwrap();
                assert!(
                    text.contains("events_etl_rejects{reason=\"conflicting_duplicate\"} 4"),
                    "{kind} {cut}: {text}"
                );
                let status: serde_json::Value =
                    serde_json::from_str(&bin(&["status", "--json"]).stdout).unwrap();
                let conflicts: i64 = status["recent_loads"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["conflicts"].as_i64().unwrap())
                    .sum();
                assert_eq!(conflicts, 4, "{kind} {cut}: {status:#}");
            }
            states.push((format!("{kind}, {cut}"), cut_state(pg, &schema).await));
        }
    }
    let (first, reference) = &states[0];
    // The expected outcome, spelled out once: 16 unique ids, id 1 once, id 2 twice, id 3
    // once with 2 conflicts, id 4 once with 1 conflict, id 5 once, id 6 three times, id 7
    // once (its day-2 copy, first by key) with 1 conflict.
    let rows = reference
        .iter()
        .filter(|l| l.contains("-4000-8000-00000000cafe "))
        .count();
    assert_eq!(rows, 16 + 1 + 2 + 1 + 1 + 1 + 3 + 1, "{reference:#?}");
    let conflicts = reference
        .iter()
        .filter(|l| l.starts_with("conflicting_duplicate "))
        .count();
    assert_eq!(conflicts, 4, "{reference:#?}");
    assert!(
        reference.iter().any(
            |l| l.starts_with("00000007-") && l.contains("seven-early@x.io cut/events/2020/02/02/a.json")
        ),
        "{reference:#?}"
    );
    assert!(
        reference.contains(&"totals 32 26 2 4 4 0".to_owned()),
        "{reference:#?}"
    );
    for (what, state) in &states[1..] {
        assert_eq!(state, reference, "{what} differs from {first}");
    }
}

/// A no-op run lists the source once, with or without `--metrics-file` (the metrics
/// come from the run's own figures): through a proxy counting requests, a source of
/// more than one listing page in three day partitions costs the first page, the
/// delimiter listings of the root, the year and the month, and one listing per day:
/// seven requests, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_run_lists_the_source_once() {
    use support::latency_proxy::LatencyProxy;
    let pg = support::postgres().await;
    let case = S3Case::new(pg, "e2e_one_pass", "", "").await;
    put_many(
        &case.s3,
        (0..1050u32).map(|i| {
            (
                format!("events/2020/01/{:02}/{i:032x}.json", 1 + i % 3),
                event(i, 1 + i % 3, "page_visit") + "\n",
            )
        }),
    )
    .await;
    check(case.cli(&["migrate"]));
    let out = check(case.cli(&["run"]));
    assert!(out.stdout.contains("loaded 1050 of 1050 event files"), "{out}");
    let proxy = LatencyProxy::start(case.s3.port(), std::time::Duration::ZERO);
    let through = [("AWS_ENDPOINT_URL", proxy.endpoint())];
    let through: Vec<(&str, &str)> = through.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let metrics = case.dir.path().join("metrics.prom").display().to_string();
    let mut counts = Vec::new();
    for args in [vec!["run", "--metrics-file", metrics.as_str()], vec!["run"]] {
        let before = proxy.requests();
        let out = check(case.cli_env(&args, &through));
        assert!(out.stdout.contains("nothing to load"), "{out}");
        counts.push(proxy.requests() - before);
    }
    assert_eq!(
        counts,
        [7, 7],
        "requests of a no-op run with and without --metrics-file"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("events_etl_files_pending 0"), "{text}");
}

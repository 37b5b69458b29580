//! The Redshift Data API stand-in (`tests/support/redshift_data.rs`), proven with the real
//! `aws_sdk_redshiftdata` client: the product's Redshift DDL and load batch run on it,
//! results come back typed and paged, failures roll batches back and name the PostgreSQL
//! error, limits and throttling behave like the service, unmappable SQL fails loudly,
//! COPY loads gzipped JSON through a manifest, and CancelStatement aborts.

use crate::support;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_redshiftdata::error::ProvideErrorMetadata as _;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString};
use aws_sdk_redshiftdata::Client;
use support::redshift_data::{
    redshift_data, run_batch, run_one, wait_for, DataApiServer, MAX_BATCH_STATEMENTS, MAX_STATEMENT_BYTES,
    PAGE_ROWS, TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER,
};
use support::{err_text, PgServer, S3Server};

/// id, at, name, doc, doc equals the source document.
type DocRow = (i64, String, Option<String>, Option<String>, Option<bool>);

const BUCKET: &str = "warehouse-staging";
const ROLE: &str = "'arn:aws:iam::123456789012:role/events-etl'";

/// One test's world: S3, the stand-in, an SDK client and a schema name of its own.
struct World {
    pg: &'static PgServer,
    s3: S3Server,
    api: DataApiServer,
    client: Client,
    schema: String,
}

impl World {
    /// Runs `stmts` (`{schema}` replaced) as one batch and asserts it finished.
    async fn setup(&self, stmts: &[&str]) {
        let sqls: Vec<String> = stmts.iter().map(|s| self.sql(s)).collect();
        let done = run_batch(&self.client, &sqls).await;
        assert_eq!(
            done.status(),
            Some(&StatusString::Finished),
            "{}",
            self.evidence().await
        );
    }

    async fn new(prefix: &str) -> World {
        let pg = support::postgres().await;
        let s3 = support::s3().await;
        s3.create_bucket(BUCKET).await;
        let api = redshift_data(s3.client().await).await;
        let client = api.client().await;
        let schema = pg.fresh_schema(prefix).await;
        World {
            pg,
            s3,
            api,
            client,
            schema,
        }
    }

    /// What the stand-in ran and what the schema holds, for failure messages.
    async fn evidence(&self) -> String {
        format!(
            "--- stand-in log ---\n{}--- database ---\n{}",
            self.api.log(),
            self.pg.dump(&self.schema).await
        )
    }

    /// `{schema}` replaced.
    fn sql(&self, template: &str) -> String {
        template.replace("{schema}", &self.schema)
    }

    /// Runs the product's bootstrap and migrations, each file as one batch.
    async fn migrate(&self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/redshift");
        let mut files = vec![root.join("bootstrap.sql")];
        let mut migrations: Vec<_> = std::fs::read_dir(root.join("migrations"))
            .expect("read sql/redshift/migrations")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        migrations.sort();
        files.extend(migrations);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read SQL file");
            let statements = split_script(&self.sql(&text));
            if statements.is_empty() {
                // A version with nothing to do in this dialect (comments only).
                continue;
            }
            let d = run_batch(&self.client, &statements).await;
            assert_eq!(
                d.status(),
                Some(&StatusString::Finished),
                "{} failed: {:?}\n{}",
                file.display(),
                d.error(),
                self.evidence().await
            );
            assert_eq!(d.sub_statements().len(), statements.len());
        }
    }

    async fn count(&self, table: &str) -> i64 {
        self.pg
            .client()
            .await
            .query_one(&format!("SELECT count(*) FROM {}.{table}", self.schema), &[])
            .await
            .unwrap_or_else(|e| panic!("count {table}: {e}"))
            .get(0)
    }

    async fn put_gz(&self, key: &str, text: &str) -> String {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).expect("gzip");
        self.s3.put(BUCKET, key, gz.finish().expect("gzip finish")).await;
        format!("s3://{BUCKET}/{key}")
    }

    /// COPYs a manifest of `entries` into `{schema}.table` and asserts the COPY failed.
    async fn copy_failing(&self, table: &str, entries: &[(&str, bool)]) -> DescribeStatementOutput {
        let manifest = self
            .put_manifest(&format!("{table}/copy.manifest"), entries)
            .await;
        let d = run_one(
            &self.client,
            &self.sql(&format!(
                "COPY {{schema}}.{table} FROM '{manifest}' IAM_ROLE {ROLE} FORMAT AS JSON 'auto' GZIP MANIFEST"
            )),
        )
        .await;
        assert_eq!(
            d.status(),
            Some(&StatusString::Failed),
            "{}",
            self.evidence().await
        );
        d
    }

    /// Writes a COPY manifest listing `entries` (url, mandatory) and returns its URL.
    async fn put_manifest(&self, key: &str, entries: &[(&str, bool)]) -> String {
        let entries: Vec<_> = entries
            .iter()
            .map(|(url, mandatory)| serde_json::json!({"url": url, "mandatory": mandatory, "meta": {"content_length": 1}}))
            .collect();
        let body = serde_json::to_vec_pretty(&serde_json::json!({ "entries": entries })).expect("manifest");
        self.s3.put(BUCKET, key, body).await;
        format!("s3://{BUCKET}/{key}")
    }
}

/// Statements of a `;`-terminated script, comment lines dropped.
fn split_script(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    code.split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("{};", s.trim_end_matches(';')))
        .collect()
}

fn sub_statuses(d: &DescribeStatementOutput) -> Vec<StatementStatusString> {
    d.sub_statements()
        .iter()
        .filter_map(|s| s.status().cloned())
        .collect()
}

async fn submit_one(client: &Client, sql: &str) -> String {
    client
        .execute_statement()
        .cluster_identifier(TEST_CLUSTER)
        .database(TEST_DATABASE)
        .db_user(TEST_DB_USER)
        .sql(sql)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ExecuteStatement {sql}: {}", err_text(&e)))
        .id()
        .expect("ExecuteStatement returns an Id")
        .to_owned()
}

/// Every page of a statement's result: (records, pages, next tokens seen).
async fn all_records(client: &Client, id: &str) -> (Vec<Vec<Field>>, usize, Vec<String>) {
    let mut records = Vec::new();
    let mut pages = 0;
    let mut tokens = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_statement_result()
            .id(id)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetStatementResult {id}: {}", err_text(&e)));
        pages += 1;
        assert!(page.records().len() <= PAGE_ROWS);
        records.extend(page.records().iter().cloned());
        match page.next_token() {
            Some(t) => {
                tokens.push(t.to_owned());
                token = Some(t.to_owned());
            }
            None => return (records, pages, tokens),
        }
    }
}

fn string(f: &Field) -> &str {
    f.as_string_value()
        .unwrap_or_else(|_| panic!("expected a stringValue, got {f:?}"))
}

#[tokio::test]
async fn product_ddl_runs_as_batches() {
    let w = World::new("rsd_ddl").await;
    w.migrate().await;

    let client = w.pg.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            &[&w.schema],
        )
        .await
        .expect("list tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
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
            "stage_rejects"
        ],
        "{}",
        w.evidence().await
    );
    let metadata_type: String = client
        .query_one(
            "SELECT data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'events' AND column_name = 'metadata'",
            &[&w.schema],
        )
        .await
        .expect("metadata column")
        .get(0);
    assert_eq!(metadata_type, "jsonb", "SUPER maps to JSONB");
    // Redshift enforces no PRIMARY KEY or UNIQUE, so the stand-in keeps none: a broken
    // dedupe must show as duplicate rows (which the suites count), not as an error.
    let keys: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.table_constraints \
             WHERE table_schema = $1 AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
            &[&w.schema],
        )
        .await
        .expect("constraints")
        .get(0);
    assert_eq!(keys, 0, "{}", w.evidence().await);
    let d = run_batch(
        &w.client,
        &[
            w.sql("INSERT INTO {schema}.etl_loads VALUES ('x', GETDATE(), GETDATE(), 'committed', 0, 0, 0, 0, 0, 0, 0, 0)"),
            w.sql("INSERT INTO {schema}.etl_loads VALUES ('x', GETDATE(), GETDATE(), 'committed', 0, 0, 0, 0, 0, 0, 0, 0)"),
        ],
    )
    .await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Finished),
        "a duplicate key is accepted, as on Redshift"
    );

    // Describe of a finished batch: every sub-statement FINISHED, with its own id.
    let statements = [
        w.sql("CREATE SCHEMA IF NOT EXISTS {schema}"),
        "SELECT 1 AS one".to_owned(),
    ];
    let d = run_batch(&w.client, &statements).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{}", w.api.log());
    assert_eq!(
        d.has_result_set(),
        Some(true),
        "a SELECT in the batch has a result set"
    );
    assert!(d.redshift_pid() > 0);
    let subs = d.sub_statements();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1].id(), format!("{}:2", d.id()));
    assert_eq!(
        (subs[0].has_result_set(), subs[1].has_result_set()),
        (Some(false), Some(true))
    );
    // The batch id answers with the last result set (Redshift itself wants `<id>:<n>`).
    let (records, _, _) = all_records(&w.client, d.id()).await;
    assert_eq!(records, [[Field::LongValue(1)]]);
}

#[tokio::test]
async fn results_are_typed_and_paged() {
    let w = World::new("rsd_types").await;
    let create = w.sql(
        "CREATE TABLE {schema}.typed (id BIGINT NOT NULL ENCODE az64, small SMALLINT, i INTEGER, f DOUBLE PRECISION, \
         ok BOOLEAN, name VARCHAR(32), at TIMESTAMP, doc SUPER, amount NUMERIC(12,2)) DISTSTYLE EVEN SORTKEY (id)",
    );
    let fill = w.sql(
        "INSERT INTO {schema}.typed SELECT g, (g % 100)::smallint, g * 2, g / 4.0, g % 2 = 0, 'row ' || g, \
         TIMESTAMP '2020-01-13 10:00:00.123456' + g * INTERVAL '1 second', JSON_PARSE('{\"g\": ' || g || '}'), 12.5 \
         FROM generate_series(1, 2500) g",
    );
    let param_row =
        w.sql("INSERT INTO {schema}.typed (id, name, doc) VALUES (9999, :name, JSON_PARSE(:doc))");
    let doc = r#"{"big": 123456789012345678901234567890, "n": 9007199254740993, "s": "é"}"#;
    let out = w
        .client
        .batch_execute_statement()
        .cluster_identifier(TEST_CLUSTER)
        .database(TEST_DATABASE)
        .db_user(TEST_DB_USER)
        .sqls(w.sql("CREATE SCHEMA {schema}"))
        .sqls(create)
        .sqls(fill)
        .sqls(param_row)
        .parameters(param("name", "O'Brien"))
        .parameters(param("doc", doc))
        .send()
        .await
        .unwrap_or_else(|e| panic!("batch: {}", err_text(&e)));
    let d = wait_for(&w.client, out.id().expect("batch Id")).await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Finished),
        "{}",
        w.evidence().await
    );
    assert_eq!(
        d.sub_statements()[2].result_rows(),
        2500,
        "rows affected by the INSERT\n{}",
        w.api.log()
    );
    assert_eq!(d.has_result_set(), Some(false));

    // A sub-statement without a result set has no result.
    let err = w
        .client
        .get_statement_result()
        .id(format!("{}:3", d.id()))
        .send()
        .await
        .expect_err("an INSERT has no result");
    assert_eq!(err.code(), Some("ValidationException"), "{}", err_text(&err));

    let id = submit_one(
        &w.client,
        &w.sql("SELECT id, small, i, f, ok, name, at, doc, amount FROM {schema}.typed ORDER BY id"),
    )
    .await;
    let d = wait_for(&w.client, &id).await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Finished),
        "{}",
        w.evidence().await
    );
    assert_eq!(d.has_result_set(), Some(true));
    assert_eq!(d.result_rows(), 2501);

    let (records, pages, tokens) = all_records(&w.client, &id).await;
    assert_eq!(records.len(), 2501);
    assert_eq!(pages, 3, "2501 rows in pages of {PAGE_ROWS}; tokens {tokens:?}");

    let first = &records[0];
    assert_eq!(first[0], Field::LongValue(1));
    assert_eq!(first[1], Field::LongValue(1));
    assert_eq!(first[2], Field::LongValue(2));
    assert_eq!(first[3], Field::DoubleValue(0.25));
    assert_eq!(first[4], Field::BooleanValue(false));
    assert_eq!(string(&first[5]), "row 1");
    assert_eq!(string(&first[6]), "2020-01-13 10:00:01.123456");
    assert_eq!(string(&first[7]), r#"{"g": 1}"#);
    assert_eq!(string(&first[8]), "12.50");

    let last = &records[2500];
    assert_eq!(last[0], Field::LongValue(9999));
    assert_eq!(last[1], Field::IsNull(true));
    assert_eq!(string(&last[5]), "O'Brien", "parameter substituted as a literal");
    let stored = string(&last[7]);
    assert!(
        stored.contains("123456789012345678901234567890") && stored.contains("9007199254740993"),
        "big integers kept exactly: {stored}"
    );

    let page = w
        .client
        .get_statement_result()
        .id(&id)
        .send()
        .await
        .expect("first page");
    assert_eq!(page.total_num_rows(), 2501);
    let types: Vec<&str> = page
        .column_metadata()
        .iter()
        .filter_map(|c| c.type_name())
        .collect();
    assert_eq!(
        types,
        [
            "int8",
            "int2",
            "int4",
            "float8",
            "bool",
            "varchar",
            "timestamp",
            "super",
            "numeric"
        ]
    );
    let names: Vec<&str> = page.column_metadata().iter().filter_map(|c| c.name()).collect();
    assert_eq!(names[0], "id");
}

fn param(name: &str, value: &str) -> aws_sdk_redshiftdata::types::SqlParameter {
    aws_sdk_redshiftdata::types::SqlParameter::builder()
        .name(name)
        .value(value)
        .build()
        .expect("parameter")
}

#[tokio::test]
async fn a_failing_sub_statement_rolls_back_the_batch() {
    let w = World::new("rsd_fail").await;
    w.setup(&[
        "CREATE SCHEMA {schema}",
        "CREATE TABLE {schema}.t (id BIGINT NOT NULL)",
    ])
    .await;

    let d = run_batch(
        &w.client,
        &[
            w.sql("INSERT INTO {schema}.t VALUES (1)"),
            w.sql("INSERT INTO {schema}.missing VALUES (2)"),
            w.sql("INSERT INTO {schema}.t VALUES (3)"),
        ],
    )
    .await;
    assert_eq!(d.status(), Some(&StatusString::Failed), "{}", w.evidence().await);
    let expected = format!("relation \"{}.missing\" does not exist", w.schema);
    let error = d.error().unwrap_or_default();
    assert!(
        error.contains(&expected),
        "top-level error {error:?} names {expected:?}"
    );
    assert_eq!(
        sub_statuses(&d),
        [
            StatementStatusString::Finished,
            StatementStatusString::Failed,
            StatementStatusString::Aborted
        ]
    );
    let failed = &d.sub_statements()[1];
    assert_eq!(failed.id(), format!("{}:2", d.id()));
    assert!(failed.error().unwrap_or_default().contains(&expected));
    assert_eq!(
        w.count("t").await,
        0,
        "the first INSERT was rolled back\n{}",
        w.evidence().await
    );

    // The fault-injection knob fails a sub-statement the same way.
    w.api.fail_when_sql_contains("VALUES (42)", "injected: disk full");
    let d = run_batch(
        &w.client,
        &[
            w.sql("INSERT INTO {schema}.t VALUES (41)"),
            w.sql("INSERT INTO {schema}.t VALUES (42)"),
        ],
    )
    .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert_eq!(d.error(), Some("injected: disk full"));
    assert_eq!(w.count("t").await, 0, "{}", w.evidence().await);

    // A batch that succeeds commits.
    let d = run_batch(&w.client, &[w.sql("INSERT INTO {schema}.t VALUES (7)")]).await;
    assert_eq!(d.status(), Some(&StatusString::Finished));
    assert_eq!(w.count("t").await, 1);

    // Unknown ids.
    let err = w
        .client
        .describe_statement()
        .id("00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .expect_err("unknown id");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{}",
        err_text(&err)
    );
}

#[tokio::test]
async fn batch_limits_are_enforced() {
    let w = World::new("rsd_limits").await;
    let too_many: Vec<String> = (0..=MAX_BATCH_STATEMENTS)
        .map(|i| format!("SELECT {i}"))
        .collect();
    let err = w
        .client
        .batch_execute_statement()
        .cluster_identifier(TEST_CLUSTER)
        .database(TEST_DATABASE)
        .db_user(TEST_DB_USER)
        .set_sqls(Some(too_many.clone()))
        .send()
        .await
        .expect_err("41 statements");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_validation_exception()),
        "{}",
        err_text(&err)
    );
    let d = run_batch(&w.client, &too_many[..MAX_BATCH_STATEMENTS]).await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Finished),
        "40 statements are fine"
    );

    let padded = |len: usize| {
        let head = "SELECT 1 /*";
        format!("{head}{}*/", "x".repeat(len - head.len() - 2))
    };
    let at_limit = padded(MAX_STATEMENT_BYTES);
    assert_eq!(at_limit.len(), MAX_STATEMENT_BYTES);
    let d = run_batch(&w.client, std::slice::from_ref(&at_limit)).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{}", w.api.log());

    let over = padded(101 * 1024);
    let err = w
        .client
        .batch_execute_statement()
        .cluster_identifier(TEST_CLUSTER)
        .database(TEST_DATABASE)
        .db_user(TEST_DB_USER)
        .sqls("SELECT 1")
        .sqls(over.clone())
        .send()
        .await
        .expect_err("101 KB statement in a batch");
    assert_eq!(err.code(), Some("ValidationException"), "{}", err_text(&err));
    let err = w
        .client
        .execute_statement()
        .cluster_identifier(TEST_CLUSTER)
        .database(TEST_DATABASE)
        .db_user(TEST_DB_USER)
        .sql(over)
        .send()
        .await
        .expect_err("101 KB statement");
    assert_eq!(err.code(), Some("ValidationException"), "{}", err_text(&err));
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk() {
    let w = World::new("rsd_throttle").await;
    let before = w.api.calls("ExecuteStatement");
    w.api.throttle_next(2);
    let id = submit_one(&w.client, "SELECT 1").await;
    assert_eq!(
        w.api.calls("ExecuteStatement") - before,
        3,
        "two throttled attempts, then success: {:?}",
        w.api.call_counts()
    );
    assert_eq!(
        wait_for(&w.client, &id).await.status(),
        Some(&StatusString::Finished)
    );

    // The standard policy makes 3 attempts: a third throttle reaches the caller.
    let before = w.api.calls("ExecuteStatement");
    w.api.throttle_next(3);
    let err = w
        .client
        .execute_statement()
        .cluster_identifier(TEST_CLUSTER)
        .database(TEST_DATABASE)
        .db_user(TEST_DB_USER)
        .sql("SELECT 1")
        .send()
        .await
        .expect_err("throttled three times");
    assert_eq!(err.code(), Some("ThrottlingException"), "{}", err_text(&err));
    assert_eq!(w.api.calls("ExecuteStatement") - before, 3);
}

#[tokio::test]
async fn unmappable_sql_fails_loudly() {
    let w = World::new("rsd_unmapped").await;
    w.setup(&[
        "CREATE SCHEMA {schema}",
        "CREATE TABLE {schema}.t (id BIGINT, v VARCHAR(10))",
    ])
    .await;

    let manifest = format!("'s3://{BUCKET}/none.manifest'");
    let cases = [
        w.sql("VACUUM {schema}.t"),
        w.sql("ANALYZE {schema}.t"),
        w.sql("UNLOAD ('SELECT 1') TO 's3://b/x' IAM_ROLE default"),
        w.sql("DROP SCHEMA {schema}"),
        w.sql("CREATE MATERIALIZED VIEW {schema}.v AS SELECT 1"),
        "BEGIN".to_owned(),
        w.sql("SELECT NVL(v, 'x') FROM {schema}.t"),
        w.sql("SELECT DECODE(id, 1, 'one') FROM {schema}.t"),
        w.sql("SELECT 1; SELECT 2"),
        w.sql(&format!("COPY {{schema}}.t FROM {manifest} IAM_ROLE default FORMAT AS JSON 'auto' GZIP")),
        w.sql(&format!(
            "COPY {{schema}}.t FROM {manifest} IAM_ROLE default FORMAT AS JSON 'auto' GZIP MANIFEST DELIMITER ','"
        )),
        w.sql(&format!("COPY {{schema}}.t FROM {manifest} IAM_ROLE default CSV GZIP MANIFEST")),
    ];
    for sql in &cases {
        let d = run_one(&w.client, sql).await;
        assert_eq!(
            d.status(),
            Some(&StatusString::Failed),
            "{sql} must fail\n{}",
            w.api.log()
        );
        let error = d.error().unwrap_or_default();
        assert!(
            error.contains("cannot map"),
            "{sql}: error {error:?} says the stand-in cannot map it"
        );
    }

    // An unmappable statement fails its whole batch.
    let d = run_batch(
        &w.client,
        &[
            w.sql("INSERT INTO {schema}.t VALUES (1, 'a')"),
            w.sql("VACUUM {schema}.t"),
        ],
    )
    .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert_eq!(w.count("t").await, 0);

    // A Redshift function PostgreSQL lacks: the PostgreSQL error, flagged as a possible gap.
    let d = run_one(&w.client, &w.sql("SELECT LISTAGG(v, ',') FROM {schema}.t")).await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    let d = run_one(&w.client, "SELECT MAGIC_REDSHIFT_FN(1)").await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    let error = d.error().unwrap_or_default();
    assert!(
        error.contains("magic_redshift_fn") && error.contains("stand-in may lack a mapping"),
        "{error}"
    );

    // Operations the stand-in does not implement.
    let err = w
        .client
        .list_databases()
        .database(TEST_DATABASE)
        .cluster_identifier(TEST_CLUSTER)
        .db_user(TEST_DB_USER)
        .send()
        .await
        .expect_err("not implemented");
    assert_eq!(
        err.code(),
        Some("UnknownOperationException"),
        "{}",
        err_text(&err)
    );
}

#[tokio::test]
async fn copy_loads_a_manifest_of_gzipped_json() {
    let w = World::new("rsd_copy").await;
    let setup = run_batch(
        &w.client,
        &[
            w.sql("CREATE SCHEMA {schema}"),
            w.sql(
                "CREATE TABLE {schema}.docs (id BIGINT NOT NULL, at TIMESTAMP NOT NULL, name VARCHAR(16), doc SUPER) \
                 DISTKEY (id) COMPOUND SORTKEY (at)",
            ),
        ],
    )
    .await;
    assert_eq!(
        setup.status(),
        Some(&StatusString::Finished),
        "{}",
        w.evidence().await
    );

    let doc1 =
        r#"{"big": 123456789012345678901234567890, "n": 9007199254740993, "nested": {"a": [1, 2.5, "x"]}}"#;
    let part1 = w
        .put_gz(
            "copy/part-0.jsonl.gz",
            &format!(
                "{{\"id\": 1, \"at\": \"2020-01-13 10:00:00.250000\", \"name\": \"one\", \"doc\": {doc1}, \"extra\": 5}}\n\
                 {{\"id\": 2, \"at\": \"2020-01-13 10:00:01.000000\", \"Name\": \"two\", \"doc\": null}}\n"
            ),
        )
        .await;
    // JSON 'auto' reads a stream of objects, not only one per line.
    let part2 = w
        .put_gz(
            "copy/part-1.jsonl.gz",
            "{\n  \"id\": 3,\n  \"at\": \"2020-01-13 10:00:02.000000\",\n  \"doc\": \"text\"\n}\n",
        )
        .await;
    let absent = format!("s3://{BUCKET}/copy/optional-missing.jsonl.gz");
    let manifest = w
        .put_manifest(
            "copy/docs.manifest",
            &[(&part1, true), (&part2, true), (&absent, false)],
        )
        .await;

    let d = run_batch(
        &w.client,
        &[w.sql(&format!(
            "COPY {{schema}}.docs FROM '{manifest}' IAM_ROLE {ROLE} FORMAT AS JSON 'auto' GZIP MANIFEST \
             TIMEFORMAT 'auto' REGION 'us-east-1'"
        ))],
    )
    .await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Finished),
        "{}",
        w.evidence().await
    );
    assert_eq!(d.sub_statements()[0].result_rows(), 3, "rows loaded");

    let pg = w.pg.client().await;
    let rows = pg
        .query(
            &format!(
                "SELECT id, at::text, name, doc::text, doc = $1::text::jsonb FROM {}.docs ORDER BY id",
                w.schema
            ),
            &[&doc1],
        )
        .await
        .expect("select docs");
    let got: Vec<DocRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(got.len(), 3, "{}", w.evidence().await);
    assert_eq!(got[0].1, "2020-01-13 10:00:00.25");
    assert_eq!(got[0].2.as_deref(), Some("one"));
    assert_eq!(
        got[0].4,
        Some(true),
        "SUPER (JSONB) value equals the source exactly: {:?}",
        got[0].3
    );
    assert!(got[0]
        .3
        .as_deref()
        .unwrap_or_default()
        .contains("123456789012345678901234567890"));
    assert_eq!(
        got[1].2, None,
        "JSON 'auto' matches keys case-sensitively: \"Name\" is not column name"
    );
    // Redshift's COPY stores a JSON null in a SUPER column as a SUPER null, which is not
    // SQL NULL; only an absent key loads NULL (the stager omits absent metadata for this).
    assert_eq!(got[1].3.as_deref(), Some("null"), "JSON null loads a SUPER null");
    assert_eq!(
        got[2].3.as_deref(),
        Some("\"text\""),
        "a JSON string loads as a SUPER string"
    );

    // The same data through GetStatementResult.
    let id = submit_one(&w.client, &w.sql("SELECT doc FROM {schema}.docs WHERE id = 1")).await;
    assert_eq!(
        wait_for(&w.client, &id).await.status(),
        Some(&StatusString::Finished)
    );
    let (records, _, _) = all_records(&w.client, &id).await;
    assert!(string(&records[0][0]).contains("9007199254740993"));

    // A column list loads only those columns.
    let d = run_one(
        &w.client,
        &w.sql(&format!(
            "COPY {{schema}}.docs (id, at) FROM '{manifest}' IAM_ROLE default FORMAT JSON 'auto' GZIP MANIFEST"
        )),
    )
    .await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Finished),
        "{}",
        w.evidence().await
    );
    assert_eq!(w.count("docs").await, 6);
    let named: i64 = pg
        .query_one(&format!("SELECT count(name) FROM {}.docs", w.schema), &[])
        .await
        .expect("count names")
        .get(0);
    assert_eq!(named, 1, "only the first COPY loaded name");
}

#[tokio::test]
async fn copy_fails_when_a_mandatory_part_is_missing() {
    let w = World::new("rsd_copy_missing").await;
    w.setup(&[
        "CREATE SCHEMA {schema}",
        "CREATE TABLE {schema}.docs (id BIGINT NOT NULL, doc SUPER)",
    ])
    .await;
    let present = w.put_gz("m/part-0.jsonl.gz", "{\"id\": 1, \"doc\": {}}\n").await;
    let missing = format!("s3://{BUCKET}/m/part-1.jsonl.gz");
    let manifest = w
        .put_manifest("m/docs.manifest", &[(&present, true), (&missing, true)])
        .await;

    let d = run_batch(
        &w.client,
        &[
            w.sql("INSERT INTO {schema}.docs VALUES (0, NULL)"),
            w.sql(&format!(
                "COPY {{schema}}.docs FROM '{manifest}' IAM_ROLE {ROLE} FORMAT AS JSON 'auto' GZIP MANIFEST"
            )),
        ],
    )
    .await;
    assert_eq!(d.status(), Some(&StatusString::Failed), "{}", w.evidence().await);
    let error = d.error().unwrap_or_default();
    assert!(error.contains(&missing), "error {error:?} names {missing}");
    assert_eq!(
        sub_statuses(&d),
        [StatementStatusString::Finished, StatementStatusString::Failed]
    );
    assert_eq!(
        w.count("docs").await,
        0,
        "the batch rolled back\n{}",
        w.evidence().await
    );

    // A missing manifest fails too, naming it.
    let gone = format!("s3://{BUCKET}/m/gone.manifest");
    let d = run_one(
        &w.client,
        &w.sql(&format!(
            "COPY {{schema}}.docs FROM '{gone}' IAM_ROLE {ROLE} FORMAT AS JSON 'auto' GZIP MANIFEST"
        )),
    )
    .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert!(d.error().unwrap_or_default().contains(&gone), "{:?}", d.error());
}

#[tokio::test]
async fn cancel_aborts_a_statement() {
    let w = World::new("rsd_cancel").await;
    w.setup(&["CREATE SCHEMA {schema}", "CREATE TABLE {schema}.t (id BIGINT)"])
        .await;

    // Delayed by the knob: STARTED, then ABORTED by CancelStatement, never executed.
    w.api.delay_statements(Duration::from_secs(30));
    let id = submit_one(&w.client, &w.sql("INSERT INTO {schema}.t VALUES (1)")).await;
    wait_until_started(&w.client, &id).await;
    let out = w.client.cancel_statement().id(&id).send().await.expect("cancel");
    assert_eq!(out.status(), Some(true));
    let d = wait_for(&w.client, &id).await;
    assert_eq!(d.status(), Some(&StatusString::Aborted), "{}", w.api.log());
    w.api.delay_statements(Duration::ZERO);
    assert_eq!(w.count("t").await, 0);

    // Running in PostgreSQL: cancelled through the backend's cancel key.
    let id = submit_one(&w.client, "SELECT pg_sleep(30)").await;
    wait_until_started(&w.client, &id).await;
    // Wait until PostgreSQL really runs it, so the cancel interrupts a running query.
    let pg = w.pg.client().await;
    loop {
        let running: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if running > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    w.client.cancel_statement().id(&id).send().await.expect("cancel");
    let d = wait_for(&w.client, &id).await;
    // Uncancelled, it would have FINISHED after 30 s.
    assert_eq!(d.status(), Some(&StatusString::Aborted), "{}", w.api.log());

    // A finished statement cannot be cancelled.
    let err = w
        .client
        .cancel_statement()
        .id(&id)
        .send()
        .await
        .expect_err("already aborted");
    assert_eq!(err.code(), Some("ValidationException"), "{}", err_text(&err));
}

async fn wait_until_started(client: &Client, id: &str) {
    let start = Instant::now();
    loop {
        let d = client.describe_statement().id(id).send().await.expect("describe");
        match d.status() {
            Some(StatusString::Started) => return,
            Some(StatusString::Submitted | StatusString::Picked)
                if start.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => panic!("statement {id} is {other:?}, expected STARTED"),
        }
    }
}

/// The product's load batch (`sql/redshift/load.sql`), placeholders filled the way the
/// adapter fills them, runs on the stand-in and loads exactly once.
#[tokio::test]
async fn the_product_load_batch_runs() {
    let w = World::new("rsd_load").await;
    w.migrate().await;

    let events = w
        .put_gz(
            "L1/events-0.jsonl.gz",
            concat!(
                r#"{"event_id":"e1","created_at":"2020-01-13 10:00:00.000000","user_email":"a@example.com","ip":"10.0.0.1","event_name":"view","metadata":{"big":123456789012345678901234567890},"source_key":"events/a.json","source_line":1}"#,
                "\n",
                r#"{"event_id":"e2","created_at":"2020-01-13 10:00:01.500000","user_email":"b@example.com","ip":null,"event_name":"click","metadata":null,"source_key":"events/a.json","source_line":2}"#,
                "\n",
                r#"{"event_id":"e1","created_at":"2020-01-13 10:00:00.000000","user_email":"a@example.com","ip":"10.0.0.1","event_name":"view","metadata":{},"source_key":"events/a.json","source_line":3}"#,
                "\n"
            ),
        )
        .await;
    let rejects = w
        .put_gz(
            "L1/rejects-0.jsonl.gz",
            "{\"source_key\":\"events/a.json\",\"source_line\":4,\"reason\":\"invalid_json\",\"raw_line\":\"{oops\"}\n",
        )
        .await;
    let files = w
        .put_gz(
            "L1/files-0.jsonl.gz",
            "{\"source_key\":\"events/a.json\",\"etag\":\"\\\"abc\\\"\",\"size_bytes\":400,\"lines\":4,\"blank_lines\":0,\
             \"events_staged\":3,\"rejects\":1,\"recovered_events\":0,\"invalid_ips\":1}\n",
        )
        .await;
    let events_manifest = w.put_manifest("L1/events.manifest", &[(&events, true)]).await;
    let rejects_manifest = w.put_manifest("L1/rejects.manifest", &[(&rejects, true)]).await;
    let files_manifest = w.put_manifest("L1/files.manifest", &[(&files, true)]).await;

    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/redshift/load.sql"))
        .expect("read sql/redshift/load.sql");
    let fill = |sql: &str, iam: &str, region: &str| {
        let filled = w
            .sql(sql)
            .replace("{load_id}", "'L1'")
            .replace("{started_at}", "'2020-01-13 09:59:00'")
            .replace("{loaded_at}", "'2020-01-13 10:00:00.000000'")
            .replace("{window_low}", "'2020-01-12 10:00:00.000000'")
            .replace("{window_high}", "'2020-01-14 10:00:00.000000'")
            .replace("{window_days}", "1")
            .replace("{bucket_us}", "86400000000")
            .replace("{key_range}", "source_key BETWEEN 'events/' AND 'events/z'")
            .replace("{after}", "TRUE")
            .replace("{parts_prefix}", "'s3://b/L1/'")
            .replace("{events_manifest}", &format!("'{events_manifest}'"))
            .replace("{rejects_manifest}", &format!("'{rejects_manifest}'"))
            .replace("{files_manifest}", &format!("'{files_manifest}'"))
            .replace("{iam_role}", iam)
            .replace("{region}", region)
            .replace("{limit}", "10")
            .replace("{key_prefix}", "'events/'")
            .replace("{prefix_len}", "7");
        assert!(!has_placeholder(&filled), "unknown placeholder left in {filled}");
        filled
    };
    let named = named_statements(&text);
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let first = names
        .iter()
        .position(|n| *n == "lock")
        .expect("load.sql has `lock`");
    let last = names
        .iter()
        .position(|n| *n == "end_clear_files")
        .expect("load.sql has `end_clear_files`");
    // `check_count` is a template the adapter instantiates once per staging table.
    let staged = [("stage_files", 1), ("stage_events", 3), ("stage_rejects", 1)];
    let batch_with = |expected_events: i64| -> Vec<String> {
        let mut batch = Vec::new();
        for (name, sql) in &named[first..=last] {
            if name == "check_count" {
                for (table, expected) in staged {
                    let expected = if table == "stage_events" {
                        expected_events
                    } else {
                        expected
                    };
                    let sql = sql
                        .replace("{table}", table)
                        .replace("{expected}", &expected.to_string());
                    batch.push(fill(&sql, ROLE, " REGION 'us-east-1'"));
                }
            } else {
                batch.push(fill(sql, ROLE, " REGION 'us-east-1'"));
            }
        }
        batch
    };
    // A count check that disagrees fails the whole load.
    let d = run_batch(&w.client, &batch_with(4)).await;
    assert_eq!(d.status(), Some(&StatusString::Failed), "{}", w.evidence().await);
    assert!(
        d.error().unwrap_or_default().contains("Divide by zero"),
        "{:?}",
        d.error()
    );
    assert_eq!(w.count("etl_files").await, 0);

    let batch = batch_with(3);
    let query = |name: &str| {
        let sql = &named.iter().find(|(n, _)| n == name).expect("named statement").1;
        fill(sql, "default", "")
    };

    let d = run_batch(&w.client, &batch).await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Finished),
        "{}",
        w.evidence().await
    );
    assert_eq!(w.count("events").await, 2, "{}", w.evidence().await);
    assert_eq!(w.count("event_rejects").await, 1);
    assert_eq!(w.count("stage_events").await, 0);

    let id = submit_one(&w.client, &query("load_summary")).await;
    assert_eq!(
        wait_for(&w.client, &id).await.status(),
        Some(&StatusString::Finished),
        "{}",
        w.api.log()
    );
    let (records, _, _) = all_records(&w.client, &id).await;
    assert_eq!(records.len(), 1, "{}", w.evidence().await);
    // files, lines, events_loaded, duplicates, rejects
    assert_eq!(
        records[0][4..9],
        [1, 4, 2, 1, 1].map(Field::LongValue),
        "{}",
        w.evidence().await
    );

    // The same staged file again, in a later load: recorded, so nothing loads and no load
    // row is written.
    let again: Vec<String> = batch.iter().map(|s| s.replace("'L1'", "'L2'")).collect();
    let d = run_batch(&w.client, &again).await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Finished),
        "{}",
        w.evidence().await
    );
    assert_eq!(w.count("events").await, 2);
    assert_eq!(w.count("etl_loads").await, 1);

    for name in ["recent_loads", "recorded_versions"] {
        let d = run_one(&w.client, &query(name)).await;
        assert_eq!(
            d.status(),
            Some(&StatusString::Finished),
            "{name}\n{}",
            w.api.log()
        );
        assert_eq!(d.result_rows(), 1, "{name}");
    }
}

/// `(name, sql)` of each `-- name:` section of a statement file.
fn named_statements(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("-- name:") {
            out.push((name.trim().to_owned(), String::new()));
        } else if line.trim_start().starts_with("--") {
            continue;
        } else if let Some((_, sql)) = out.last_mut() {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    out.into_iter().map(|(n, s)| (n, s.trim().to_owned())).collect()
}

/// Whether `sql` still holds a `{name}` placeholder.
fn has_placeholder(sql: &str) -> bool {
    sql.split('{').skip(1).any(|rest| {
        rest.split_once('}').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    })
}

/// Text compares by bytes, as on Redshift (binary UTF-8 order, c_collation_sequences.html),
/// whatever the test PostgreSQL's locale: every character column the stand-in creates
/// has the "C" collation.
#[tokio::test]
async fn text_columns_sort_by_bytes() {
    let w = World::new("rsd_collate").await;
    w.setup(&[
        "CREATE SCHEMA {schema}",
        "CREATE TABLE {schema}.k (a VARCHAR(10) NOT NULL, b CHAR(3), c CHARACTER VARYING(5), n BIGINT)",
    ])
    .await;
    let pg = w.pg.client().await;
    let rows = pg
        .query(
            "SELECT column_name::text, collation_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'k' ORDER BY ordinal_position",
            &[&w.schema],
        )
        .await
        .expect("columns");
    let got: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            ("a".to_owned(), Some("C".to_owned())),
            ("b".to_owned(), Some("C".to_owned())),
            ("c".to_owned(), Some("C".to_owned())),
            ("n".to_owned(), None)
        ]
    );
}

/// The reserved-word rule on its own: it finds names, not keywords.
mod redshift_rules {
    use super::support::redshift_rules::{check_reserved, reserved, Lex};

    fn lex(sql: &str) -> Vec<Lex> {
        super::support::redshift_data::lex(sql).expect("lexes")
    }

    #[test]
    fn list_is_the_documented_one() {
        for w in ["RAW", "OPEN", "NEW", "OLD", "TAG", "TIMESTAMP", "SELECT", "USER"] {
            assert!(reserved().contains(w), "{w}");
        }
        assert!(!reserved().contains("EVENTS"));
    }

    #[test]
    fn reserved_names_are_found() {
        for bad in [
            "CREATE TABLE s.t (raw VARCHAR(10))",
            "CREATE TABLE s.t (a INT, order INT)",
            "SELECT t.raw FROM s.t",
            "SELECT a AS open FROM s.t",
            "INSERT INTO s.t (a, tag) VALUES (1, 2)",
            "SELECT raw FROM s.t",
            "SELECT user FROM s.t",
        ] {
            assert!(check_reserved(&lex(bad)).is_err(), "{bad}");
        }
        for good in [
            "CREATE TABLE s.t (raw_line VARCHAR(10), PRIMARY KEY (raw_line))",
            "SELECT CAST('2020-01-01' AS TIMESTAMP), \"raw\" FROM s.t ORDER BY 1 LIMIT 2 OFFSET 1",
            "CREATE TEMP TABLE m DISTKEY (a) AS SELECT a FROM s.t",
            "INSERT INTO s.t (a) SELECT a FROM s.u",
        ] {
            assert!(check_reserved(&lex(good)).is_ok(), "{good}");
        }
    }
}

/// Each thing Redshift refuses and PostgreSQL takes is refused by the stand-in, with
/// Redshift's wording and the AWS page (under docs.aws.amazon.com/redshift/latest/dg/)
/// that states the rule.
#[tokio::test]
async fn the_stand_in_refuses_what_redshift_refuses() {
    let w = World::new("rsd_refuse").await;
    w.setup(&[
        "CREATE SCHEMA {schema}",
        "CREATE TABLE {schema}.t (id BIGINT, v VARCHAR(10))",
    ])
    .await;
    // (statement, in a batch, what the error must say, the AWS page of the rule)
    let cases: Vec<(String, bool, &str, &str)> = vec![
        // r_pg_keywords.html: RAW is reserved; PostgreSQL takes it as a column name.
        (
            w.sql("CREATE TABLE {schema}.r (raw VARCHAR(10))"),
            false,
            "syntax error at or near \"raw\"",
            "r_pg_keywords.html",
        ),
        (
            w.sql("SELECT t.open FROM {schema}.t t"),
            false,
            "syntax error at or near \"open\"",
            "r_pg_keywords.html",
        ),
        (
            w.sql("INSERT INTO {schema}.t (id, tag) VALUES (1, 'x')"),
            false,
            "syntax error at or near \"tag\"",
            "r_pg_keywords.html",
        ),
        (
            w.sql("INSERT INTO {schema}.t VALUES (1, 'a') ON CONFLICT DO NOTHING"),
            false,
            "syntax error at or near \"CONFLICT\"",
            "r_INSERT_30.html",
        ),
        (
            w.sql("DELETE FROM {schema}.t RETURNING id"),
            false,
            "RETURNING",
            "r_DELETE.html",
        ),
        (
            "SELECT pg_advisory_lock(1)".to_owned(),
            false,
            "function pg_advisory_lock() does not exist",
            "c_unsupported-postgresql-functions.html",
        ),
        (
            w.sql("CREATE INDEX i ON {schema}.t (id)"),
            false,
            "INDEX",
            "c_unsupported-postgresql-features.html",
        ),
        (
            w.sql("CREATE TABLE {schema}.s (id SERIAL)"),
            false,
            "type \"serial\" does not exist",
            "c_unsupported-postgresql-datatypes.html",
        ),
        (
            w.sql("CREATE TABLE {schema}.j (doc JSONB)"),
            false,
            "type \"jsonb\" does not exist",
            "c_unsupported-postgresql-datatypes.html",
        ),
        (
            w.sql("SELECT '{}'::jsonb FROM {schema}.t"),
            false,
            "type \"jsonb\" does not exist",
            "c_unsupported-postgresql-datatypes.html",
        ),
        (w.sql("TRUNCATE {schema}.t"), true, "commits", "r_TRUNCATE.html"),
        (
            w.sql("ALTER TABLE {schema}.t ALTER COLUMN v TYPE VARCHAR(20)"),
            true,
            "cannot run inside a transaction block",
            "r_ALTER_TABLE.html",
        ),
        (
            w.sql("ALTER TABLE {schema}.t APPEND FROM {schema}.u"),
            true,
            "cannot run inside a transaction block",
            "r_ALTER_TABLE_APPEND.html",
        ),
        // jsonb functions and operators: SUPER is navigated, not jsonb (query-super.html).
        (
            w.sql("SELECT jsonb_typeof(v) FROM {schema}.t"),
            false,
            "function jsonb_typeof() does not exist",
            "query-super.html",
        ),
        (
            w.sql("SELECT v -> 'a' FROM {schema}.t"),
            false,
            "syntax error at or near \">\"",
            "query-super.html",
        ),
        (
            w.sql("SELECT v ->> 'a' FROM {schema}.t"),
            false,
            "syntax error at or near \">\"",
            "query-super.html",
        ),
        (
            w.sql("SELECT v #>> '{}' FROM {schema}.t"),
            false,
            "syntax error at or near \">\"",
            "query-super.html",
        ),
    ];
    for (sql, in_batch, says, page) in &cases {
        let d = if *in_batch {
            run_batch(&w.client, &[w.sql("DELETE FROM {schema}.t"), sql.clone()]).await
        } else {
            run_one(&w.client, sql).await
        };
        assert_eq!(
            d.status(),
            Some(&StatusString::Failed),
            "{sql} must fail\n{}",
            w.api.log()
        );
        let subs: Vec<&str> = d.sub_statements().iter().filter_map(|s| s.error()).collect();
        let error = format!("{} {}", d.error().unwrap_or_default(), subs.join(" "));
        assert!(error.contains(says), "{sql}: {error} should say {says:?}");
        let rules = include_str!("../support/redshift_rules.rs");
        assert!(rules.contains(page), "the rule for {sql} must cite {page}");
    }
    // The same words quoted are names Redshift accepts.
    let d = run_one(&w.client, &w.sql("CREATE TABLE {schema}.q (\"raw\" VARCHAR(10))")).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{}", w.api.log());
}

/// VARCHAR(n) holds n bytes on Redshift (r_Character_types.html), n characters on
/// PostgreSQL: the stand-in's COPY refuses a value over n bytes even when it has fewer
/// than n characters, and logs it in sys_load_error_detail as Redshift does.
#[tokio::test]
async fn copy_counts_varchar_length_in_bytes() {
    let w = World::new("rsd_bytes").await;
    w.setup(&[
        "CREATE SCHEMA {schema}",
        "CREATE TABLE {schema}.v (id BIGINT, name VARCHAR(12))",
    ])
    .await;
    // 8 characters, 16 bytes.
    let part = w
        .put_gz(
            "bytes/part-0.jsonl.gz",
            "{\"id\": 1, \"name\": \"abc\"}\n{\"id\": 2, \"name\": \"éééééééé\"}\n",
        )
        .await;
    let d = w.copy_failing("v", &[(&part, true)]).await;
    assert!(
        d.error().unwrap_or_default().contains("Check 'stl_load_errors'"),
        "{:?}",
        d.error()
    );
    assert_eq!(w.count("v").await, 0);
    let logged: Vec<(String, i64, String, String)> =
        w.pg.client()
            .await
            .query(
                "SELECT TRIM(file_name), line_number, TRIM(column_name), TRIM(error_message) \
             FROM public.sys_load_error_detail WHERE TRIM(file_name) = $1",
                &[&part],
            )
            .await
            .expect("sys_load_error_detail")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!((logged[0].1, logged[0].2.as_str()), (2, "name"));
    assert!(
        logged[0].3.contains("String length exceeds DDL length"),
        "{logged:?}"
    );
}

/// COPY of a manifest that lists no file fails on Redshift; the adapter never sends one
/// (the warehouse suite's load without events proves the skip on this stand-in).
#[tokio::test]
async fn copy_of_an_empty_manifest_fails() {
    let w = World::new("rsd_empty").await;
    w.setup(&["CREATE SCHEMA {schema}", "CREATE TABLE {schema}.v (id BIGINT)"])
        .await;
    let d = w.copy_failing("v", &[]).await;
    assert!(
        d.error().unwrap_or_default().contains("lists no files"),
        "{:?}",
        d.error()
    );
}

/// SUPER navigation and the SUPER type functions the typed views use, mapped as AWS
/// documents them (query-super.html, r_is_varchar.html, r_is_bigint.html,
/// r_is_boolean.html, r_json_typeof.html): a missing attribute reads NULL, IS_* are
/// false for NULL and for other types, IS_BIGINT only for whole numbers in 64 bits, a
/// cast of a SUPER string is its text.
#[tokio::test]
async fn super_navigation_and_type_functions_map_as_documented() {
    let w = World::new("rsd_super").await;
    w.setup(&[
        "CREATE SCHEMA {schema}",
        "CREATE TABLE {schema}.s (id BIGINT, metadata SUPER)",
        "INSERT INTO {schema}.s VALUES \
         (1, JSON_PARSE('{\"k\": \"a b\"}')), (2, JSON_PARSE('{\"k\": 5}')), \
         (3, JSON_PARSE('{\"k\": 1.5}')), (4, JSON_PARSE('{\"k\": 9223372036854775808}')), \
         (5, JSON_PARSE('{\"k\": true}')), (6, JSON_PARSE('{\"k\": null}')), \
         (7, JSON_PARSE('{\"o\": {\"k\": \"deep\"}}')), (8, NULL)",
    ])
    .await;
    let sql = w.sql(
        "SELECT e.id, IS_VARCHAR(e.metadata.k), IS_BIGINT(e.metadata.k), IS_BOOLEAN(e.metadata.k), \
         JSON_TYPEOF(e.metadata.k), \
         CASE WHEN IS_VARCHAR(e.metadata.k) THEN e.metadata.k::VARCHAR(100) END, \
         CASE WHEN IS_BIGINT(e.metadata.k) THEN e.metadata.k::BIGINT END, \
         e.metadata.o.k::VARCHAR(10) \
         FROM {schema}.s e ORDER BY e.id",
    );
    let id = submit_one(&w.client, &sql).await;
    let d = wait_for(&w.client, &id).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{}", w.api.log());
    let (records, _, _) = all_records(&w.client, &id).await;
    let show = |f: &Field| match f {
        Field::IsNull(_) => "NULL".to_owned(),
        Field::BooleanValue(b) => b.to_string(),
        Field::LongValue(n) => n.to_string(),
        Field::StringValue(s) => s.clone(),
        other => format!("{other:?}"),
    };
    let rows: Vec<String> = records
        .iter()
        .map(|r| r.iter().map(show).collect::<Vec<_>>().join(" | "))
        .collect();
    assert_eq!(
        rows,
        [
            "1 | true | false | false | string | a b | NULL | NULL",
            "2 | false | true | false | number | NULL | 5 | NULL",
            "3 | false | false | false | number | NULL | NULL | NULL",
            "4 | false | false | false | number | NULL | NULL | NULL",
            "5 | false | false | true | boolean | NULL | NULL | NULL",
            "6 | false | false | false | null | NULL | NULL | NULL",
            "7 | false | false | false | NULL | NULL | NULL | deep",
            "8 | false | false | false | NULL | NULL | NULL | NULL",
        ],
        "{}",
        w.api.log()
    );
}

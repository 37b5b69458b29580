//! A Redshift Data API stand-in for tests: an in-process HTTP server speaking the Data
//! API's JSON protocol that runs every statement for real on the test PostgreSQL, after a
//! narrow, explicit Redshift -> PostgreSQL mapping.
//!
//! Start one with [`redshift_data`]; point the ordinary `aws_sdk_redshiftdata::Client` at
//! it ([`DataApiServer::client`] in-process, [`DataApiServer::env`] for the binary).
//!
//! What it models (the AWS SDK model, `aws-sdk-redshiftdata` 1.126, is the source of truth
//! for shapes and field names):
//!
//! * `ExecuteStatement`, `BatchExecuteStatement` (one PostgreSQL transaction, in order, all
//!   rolled back when one fails; at most [`MAX_BATCH_STATEMENTS`] statements of at most
//!   [`MAX_STATEMENT_BYTES`] each), `DescribeStatement` (statuses SUBMITTED -> STARTED ->
//!   FINISHED | FAILED | ABORTED, statements run on a background task), `GetStatementResult`
//!   (typed fields, pages of [`PAGE_ROWS`] rows with `NextToken`) and `CancelStatement`.
//!   Any other operation answers `UnknownOperationException`.
//! * The SQL mapping is an allow-list: statement kinds CREATE SCHEMA, CREATE TABLE, INSERT,
//!   DELETE, UPDATE, SELECT, MERGE, LOCK and COPY (from an S3 manifest of gzipped JSON);
//!   everything else, and every Redshift-only function it does not know, FAILS with an
//!   error saying the stand-in cannot map it, so untested SQL never passes. See
//!   [`map_statement`] for the rules.
//!
//! Signatures are not verified; the database name is recorded but every statement runs in
//! the one test database (the product names its schema in the SQL).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::TcpListener as StdTcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio_postgres::types::Type;

use super::redshift_rules::{check_forms, check_reserved, Lex};
use super::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY};

/// BatchExecuteStatement accepts at most this many statements (the real API's limit).
pub const MAX_BATCH_STATEMENTS: usize = 40;
/// Largest SQL text of one statement, in bytes (the real API's 100 KB limit).
pub const MAX_STATEMENT_BYTES: usize = 100 * 1024;
/// Rows per GetStatementResult page (small, so that tests exercise `NextToken`).
pub const PAGE_ROWS: usize = 1000;
/// Identity the tests pass; any value is accepted and echoed back.
pub const TEST_CLUSTER: &str = "events-etl-test";
pub const TEST_DATABASE: &str = "dev";
pub const TEST_DB_USER: &str = "etl";
/// How long [`wait_for`] polls before giving up.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// JSON documents per INSERT when a COPY loads a part.
const COPY_CHUNK_DOCS: usize = 2000;

// ---------------------------------------------------------------------------------------
// Server handle
// ---------------------------------------------------------------------------------------

/// Starts a Data API stand-in on `127.0.0.1:<free port>`, executing on the shared test
/// PostgreSQL ([`super::postgres`]) and reading COPY manifests and parts through
/// `s3_client` (normally `support::s3().await.client().await`).
///
/// The server runs on its own thread and tokio runtime, so it keeps serving while the test
/// blocks (e.g. in [`super::run_bin`]). It stops when the returned value is dropped.
pub async fn redshift_data(s3_client: aws_sdk_s3::Client) -> DataApiServer {
    let pg_url = super::postgres().await.url();
    // Concurrent test processes may race to create it: an error here is fine when the
    // table exists afterwards.
    if let Ok(c) = connect(&pg_url).await {
        if c.batch_execute(SYS_LOAD_ERROR_DETAIL).await.is_err() {
            c.batch_execute("SELECT 1 FROM public.sys_load_error_detail LIMIT 0")
                .await
                .expect("stand-in: cannot create public.sys_load_error_detail");
        }
    }
    // A fresh connection pool: the caller's client may hold pooled connections whose tasks
    // live on the test's runtime, which stalls while a test blocks in `run_bin`.
    let s3 =
        aws_sdk_s3::Client::from_conf(s3_client.config().to_builder().http_client(http_client()).build());
    let shared = Arc::new(Shared {
        pg_url,
        s3,
        statements: Mutex::new(HashMap::new()),
        throttle: AtomicU32::new(0),
        delay: Mutex::new(Duration::ZERO),
        failures: Mutex::new(Vec::new()),
        copy_failures: Mutex::new(Vec::new()),
        calls: Mutex::new(BTreeMap::new()),
        execution_modes: Mutex::new(Vec::new()),
        cancel_too_late: std::sync::atomic::AtomicBool::new(false),
        lose_responses: Mutex::new(Vec::new()),
        release: tokio::sync::watch::channel(0).0,
    });

    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind Data API listener");
    listener
        .set_nonblocking(true)
        .expect("set Data API listener non-blocking");
    let port = listener.local_addr().expect("Data API listener address").port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("data-api-{port}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("data-api")
                .enable_all()
                .build()
                .expect("Data API runtime");
            rt.block_on(serve(listener, serve_shared, stop_rx));
            // Dropping the runtime cancels connection and statement tasks.
        })
        .expect("spawn Data API thread");

    DataApiServer {
        endpoint: format!("http://127.0.0.1:{port}"),
        shared,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

/// A running Data API stand-in. See [`redshift_data`].
pub struct DataApiServer {
    endpoint: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DataApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl DataApiServer {
    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Environment for running the real binary against this server:
    /// `AWS_ENDPOINT_URL_REDSHIFT_DATA` plus the test credentials and region (the same
    /// values as `S3Server::env`). See [`DataApiServer::env_with`] to merge.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with(Vec::new())
    }

    /// `base` (e.g. `S3Server::env()`) plus whatever of [`DataApiServer::env`] it lacks.
    pub fn env_with(&self, base: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut env = base;
        for (k, v) in [
            ("AWS_ENDPOINT_URL_REDSHIFT_DATA", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("AWS_REGION", S3_REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            if !env.iter().any(|(e, _)| e == k) {
                env.push((k.to_owned(), v.to_owned()));
            }
        }
        env
    }

    /// An SDK client for this server, configured the way the product configures its own
    /// (aws-config defaults with the standard retry policy, explicit rustls/ring HTTP
    /// client) plus the test credentials, region and endpoint. A new client (and
    /// connection pool) per call.
    pub async fn client(&self) -> aws_sdk_redshiftdata::Client {
        let credentials = aws_sdk_redshiftdata::config::Credentials::new(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
            None,
            None,
            "events-etl-tests",
        );
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .region(aws_sdk_redshiftdata::config::Region::new(S3_REGION))
            .credentials_provider(credentials)
            .endpoint_url(self.endpoint.clone())
            .load()
            .await;
        aws_sdk_redshiftdata::Client::new(&sdk)
    }

    /// The next `n` API calls (of any operation) answer HTTP 400 `ThrottlingException`.
    pub fn throttle_next(&self, n: u32) {
        self.shared.throttle.store(n, Ordering::SeqCst);
    }

    /// Statements submitted from now on stay STARTED for `delay` before executing
    /// (cancellable meanwhile). `Duration::ZERO` turns it off.
    pub fn delay_statements(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// Ends the delay of every statement waiting in it now, and turns delays off: lets
    /// a test hold statements until they are all submitted, then run them together.
    pub fn release_delayed(&self) {
        *lock(&self.shared.delay) = Duration::ZERO;
        self.shared.release.send_modify(|n| *n += 1);
    }

    /// The next `operation` request is carried out, but its response is lost: the
    /// client gets HTTP 500 and, as the SDK does, sends the same request again.
    pub fn lose_next_response(&self, operation: &str) {
        lock(&self.shared.lose_responses).push(operation.to_owned());
    }

    /// From now on, CancelStatement models a statement that finished just before the
    /// cancel arrived: the statement stops waiting (see [`DataApiServer::delay_statements`])
    /// and runs to completion, and the cancel answers that it already finished.
    pub fn cancel_too_late(&self, on: bool) {
        self.shared.cancel_too_late.store(on, Ordering::SeqCst);
    }

    /// From now on, a (sub-)statement whose SQL contains `needle` fails with error text
    /// `message` instead of running (rolling back its batch like any failure).
    pub fn fail_when_sql_contains(&self, needle: &str, message: &str) {
        lock(&self.shared.failures).push((needle.to_owned(), message.to_owned()));
    }

    /// From now on, a COPY that reads a staged row containing `needle` fails with error
    /// text `message` and logs no SYS_LOAD_ERROR_DETAIL row: a COPY failure that names no
    /// row (an internal error, a node lost mid-COPY).
    pub fn fail_copy_of_rows_containing(&self, needle: &str, message: &str) {
        lock(&self.shared.copy_failures).push((needle.to_owned(), message.to_owned()));
    }

    /// Forgets every [`DataApiServer::fail_when_sql_contains`] and
    /// [`DataApiServer::fail_copy_of_rows_containing`] rule.
    pub fn clear_failures(&self) {
        lock(&self.shared.failures).clear();
        lock(&self.shared.copy_failures).clear();
    }

    /// How many requests named `operation` (e.g. `"ExecuteStatement"`) arrived, throttled
    /// ones included.
    pub fn calls(&self, operation: &str) -> u64 {
        lock(&self.shared.calls).get(operation).copied().unwrap_or(0)
    }

    /// The ExecutionMode each BatchExecuteStatement carried, in order (`None`: absent).
    pub fn execution_modes(&self) -> Vec<Option<String>> {
        lock(&self.shared.execution_modes).clone()
    }

    /// The SQL of every (sub-)statement received so far, in submission order, exactly as
    /// sent: what the grammar gate parses.
    pub fn sent_sql(&self) -> Vec<String> {
        let mut all: Vec<Arc<Mutex<Statement>>> = lock(&self.shared.statements).values().cloned().collect();
        all.sort_by_key(|s| lock(s).seq);
        all.iter()
            .flat_map(|s| lock(s).subs.iter().map(|sub| sub.sql.clone()).collect::<Vec<_>>())
            .collect()
    }

    /// Requests per operation so far.
    pub fn call_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.calls).clone()
    }

    /// Every statement so far, in submission order, with its sub-statements' SQL, the
    /// PostgreSQL SQL it was mapped to, status and error: for failure messages.
    pub fn log(&self) -> String {
        let mut all: Vec<Arc<Mutex<Statement>>> = lock(&self.shared.statements).values().cloned().collect();
        all.sort_by_key(|s| lock(s).seq);
        let mut out = String::new();
        for s in all {
            let s = lock(&s);
            let _ = writeln!(
                out,
                "=== {} {} ({}){}",
                s.id,
                s.status.as_str(),
                if s.batch { "batch" } else { "single" },
                s.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            );
            for (i, sub) in s.subs.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  [{}] {} {}",
                    i + 1,
                    sub.status.as_str(),
                    one_line(&sub.sql, 300)
                );
                if let Some(m) = &sub.mapped {
                    let _ = writeln!(out, "      mapped: {}", one_line(m, 300));
                }
                if let Some(e) = &sub.error {
                    let _ = writeln!(out, "      error: {e}");
                }
            }
        }
        out
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() > max {
        let mut end = max;
        while !flat.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &flat[..end])
    } else {
        flat
    }
}

fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

/// Polls DescribeStatement every 20 ms until `id` reaches FINISHED, FAILED or ABORTED and
/// returns that description. Panics after a minute, or on an API error.
pub async fn wait_for(
    client: &aws_sdk_redshiftdata::Client,
    id: &str,
) -> aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput {
    use aws_sdk_redshiftdata::types::StatusString;
    let start = Instant::now();
    loop {
        let d = client
            .describe_statement()
            .id(id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStatement {id}: {}", super::err_text(&e)));
        if matches!(
            d.status(),
            Some(StatusString::Finished | StatusString::Failed | StatusString::Aborted)
        ) {
            return d;
        }
        if start.elapsed() > WAIT_TIMEOUT {
            panic!("statement {id} still {:?} after {WAIT_TIMEOUT:?}", d.status());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits `sqls` as one BatchExecuteStatement (test identity) and waits for the outcome.
pub async fn run_batch(
    client: &aws_sdk_redshiftdata::Client,
    sqls: &[String],
) -> aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput {
    let out = client
        .batch_execute_statement()
        .cluster_identifier(TEST_CLUSTER)
        .database(TEST_DATABASE)
        .db_user(TEST_DB_USER)
        .set_sqls(Some(sqls.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("BatchExecuteStatement: {}", super::err_text(&e)));
    let id = out.id().unwrap_or_else(|| panic!("no Id in {out:?}"));
    wait_for(client, id).await
}

/// Submits `sql` as one ExecuteStatement (test identity) and waits for the outcome.
pub async fn run_one(
    client: &aws_sdk_redshiftdata::Client,
    sql: &str,
) -> aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput {
    let out = client
        .execute_statement()
        .cluster_identifier(TEST_CLUSTER)
        .database(TEST_DATABASE)
        .db_user(TEST_DB_USER)
        .sql(sql)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ExecuteStatement: {}", super::err_text(&e)));
    let id = out.id().unwrap_or_else(|| panic!("no Id in {out:?}"));
    wait_for(client, id).await
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

struct Shared {
    pg_url: String,
    s3: aws_sdk_s3::Client,
    statements: Mutex<HashMap<String, Arc<Mutex<Statement>>>>,
    throttle: AtomicU32,
    delay: Mutex<Duration>,
    failures: Mutex<Vec<(String, String)>>,
    /// (needle, error): a COPY that reads a row containing needle fails with error and
    /// logs no SYS_LOAD_ERROR_DETAIL row.
    copy_failures: Mutex<Vec<(String, String)>>,
    calls: Mutex<BTreeMap<String, u64>>,
    /// Bumped to end every statement's delay (see [`DataApiServer::release_delayed`]).
    release: tokio::sync::watch::Sender<u64>,
    /// Operations whose next response is lost after the request was carried out.
    lose_responses: Mutex<Vec<String>>,
    /// CancelStatement comes too late: see [`DataApiServer::cancel_too_late`].
    cancel_too_late: std::sync::atomic::AtomicBool,
    /// The ExecutionMode of each BatchExecuteStatement, `None` when not sent.
    execution_modes: Mutex<Vec<Option<String>>>,
}

/// Locks a std mutex, ignoring poisoning (a panicking test must not hide the state).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Submitted,
    Started,
    Finished,
    Failed,
    Aborted,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "SUBMITTED",
            Status::Started => "STARTED",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Aborted => "ABORTED",
        }
    }

    fn terminal(self) -> bool {
        matches!(self, Status::Finished | Status::Failed | Status::Aborted)
    }
}

#[derive(Clone, Default)]
struct Identity {
    database: Option<String>,
    cluster: Option<String>,
    workgroup: Option<String>,
    db_user: Option<String>,
    secret_arn: Option<String>,
}

struct ResultSet {
    columns: Vec<Value>,
    records: Vec<Value>,
    size: i64,
}

struct Sub {
    sql: String,
    mapped: Option<String>,
    status: Status,
    error: Option<String>,
    updated_at: SystemTime,
    started: Option<Instant>,
    duration_ns: i64,
    result_rows: i64,
    result: Option<ResultSet>,
}

struct Statement {
    seq: u64,
    id: String,
    batch: bool,
    identity: Identity,
    created_at: SystemTime,
    updated_at: SystemTime,
    status: Status,
    error: Option<String>,
    started: Option<Instant>,
    duration_ns: i64,
    pid: i64,
    subs: Vec<Sub>,
    cancel_requested: bool,
    cancel_token: Option<tokio_postgres::CancelToken>,
    cancel_tx: tokio::sync::watch::Sender<bool>,
}

impl Statement {
    fn set_status(&mut self, status: Status) {
        self.status = status;
        self.updated_at = SystemTime::now();
        if status.terminal() {
            self.duration_ns = elapsed_ns(self.started);
        }
    }

    fn set_sub(&mut self, i: usize, status: Status, error: Option<String>) {
        let sub = &mut self.subs[i];
        if status == Status::Started {
            sub.started = Some(Instant::now());
        }
        sub.status = status;
        sub.updated_at = SystemTime::now();
        if status.terminal() {
            sub.duration_ns = elapsed_ns(sub.started);
        }
        if error.is_some() {
            sub.error = error;
        }
    }
}

fn elapsed_ns(since: Option<Instant>) -> i64 {
    since.map_or(0, |t| i64::try_from(t.elapsed().as_nanos()).unwrap_or(i64::MAX))
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// HTTP: awsJson1_1
// ---------------------------------------------------------------------------------------

type HttpResponse = hyper::Response<http_body_util::Full<bytes::Bytes>>;

async fn serve(listener: StdTcpListener, shared: Arc<Shared>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio Data API listener");
    loop {
        let socket = tokio::select! {
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((socket, _)) => socket,
                Err(e) => {
                    eprintln!("Data API stand-in: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// An API error: HTTP 400 with `{"__type": code, "message": ...}`.
#[derive(Debug)]
struct ApiError {
    code: &'static str,
    message: String,
}

fn api_err(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

fn validation(message: impl Into<String>) -> ApiError {
    api_err("ValidationException", message)
}

fn respond(status: u16, body: &Value) -> HttpResponse {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap_or_else(|_| hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
}

fn error_response(e: &ApiError) -> HttpResponse {
    let mut body = json!({"__type": e.code, "message": e.message});
    if e.code == "ResourceNotFoundException" {
        body["ResourceId"] = json!("");
    }
    respond(400, &body)
}

async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<HttpResponse, Infallible> {
    use http_body_util::BodyExt as _;

    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let operation = target.strip_prefix("RedshiftData.").unwrap_or(&target).to_owned();
    *lock(&shared.calls).entry(operation.clone()).or_insert(0) += 1;
    let is_post = req.method() == hyper::Method::POST;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&api_err(
                "SerializationException",
                format!("reading body: {e}"),
            )))
        }
    };
    let throttled = shared
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if throttled {
        return Ok(error_response(&api_err("ThrottlingException", "Rate exceeded")));
    }
    if !is_post || !target.starts_with("RedshiftData.") {
        return Ok(error_response(&api_err(
            "UnknownOperationException",
            format!("expected POST with X-Amz-Target RedshiftData.<Operation>, got target {target:?}"),
        )));
    }
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return Ok(error_response(&api_err(
                    "SerializationException",
                    "body is not a JSON object",
                )))
            }
            Err(e) => {
                return Ok(error_response(&api_err(
                    "SerializationException",
                    format!("invalid JSON: {e}"),
                )))
            }
        }
    };
    let result = match operation.as_str() {
        "ExecuteStatement" => execute_statement(&shared, &input),
        "BatchExecuteStatement" => batch_execute_statement(&shared, &input),
        "DescribeStatement" => describe_statement(&shared, &input),
        "GetStatementResult" => get_statement_result(&shared, &input),
        "CancelStatement" => cancel_statement(&shared, &input).await,
        other => Err(api_err(
            "UnknownOperationException",
            format!("the Redshift Data API stand-in does not implement {other}"),
        )),
    };
    let lost = {
        let mut lose = lock(&shared.lose_responses);
        match lose.iter().position(|op| *op == operation) {
            Some(i) => {
                lose.remove(i);
                true
            }
            None => false,
        }
    };
    if lost {
        // The request was carried out; only its answer is lost on the way back.
        return Ok(respond(
            500,
            &json!({"__type": "InternalServerException", "message": "stand-in: response lost"}),
        ));
    }
    Ok(match result {
        Ok(v) => respond(200, &v),
        Err(e) => error_response(&e),
    })
}

fn opt_str(input: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(validation(format!("{key} must be a string"))),
    }
}

fn req_str(input: &Value, key: &str) -> Result<String, ApiError> {
    opt_str(input, key)?.ok_or_else(|| validation(format!("1 validation error detected: Value null at '{key}' failed to satisfy constraint: Member must not be null")))
}

fn identity(input: &Value) -> Result<Identity, ApiError> {
    let id = Identity {
        database: opt_str(input, "Database")?,
        cluster: opt_str(input, "ClusterIdentifier")?,
        workgroup: opt_str(input, "WorkgroupName")?,
        db_user: opt_str(input, "DbUser")?,
        secret_arn: opt_str(input, "SecretArn")?,
    };
    if id.database.is_none() {
        return Err(validation("Database must be provided"));
    }
    match (&id.cluster, &id.workgroup) {
        (Some(_), Some(_)) => {
            return Err(validation(
                "Specify either ClusterIdentifier or WorkgroupName, not both",
            ))
        }
        (None, None) => {
            return Err(validation(
                "Either ClusterIdentifier or WorkgroupName must be provided",
            ))
        }
        (Some(_), None) if id.db_user.is_none() && id.secret_arn.is_none() => {
            return Err(validation("With ClusterIdentifier, provide DbUser or SecretArn"))
        }
        _ => {}
    }
    Ok(id)
}

fn parameters(input: &Value) -> Result<Vec<(String, String)>, ApiError> {
    let Some(list) = input.get("Parameters") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| validation("Parameters must be a list"))?;
    list.iter()
        .map(|p| {
            let name = req_str(p, "name")?;
            let value = req_str(p, "value")?;
            Ok((name, value))
        })
        .collect()
}

fn check_size(sql: &str) -> Result<(), ApiError> {
    if sql.is_empty() {
        return Err(validation("SQL statement must not be empty"));
    }
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(validation(format!(
            "SQL statement is {} bytes; the maximum is {MAX_STATEMENT_BYTES} bytes (100 KB)",
            sql.len()
        )));
    }
    Ok(())
}

fn execute_statement(shared: &Arc<Shared>, input: &Value) -> Result<Value, ApiError> {
    let sql = req_str(input, "Sql")?;
    check_size(&sql)?;
    let id = identity(input)?;
    let params = parameters(input)?;
    Ok(submit(shared, false, vec![sql], params, id))
}

fn batch_execute_statement(shared: &Arc<Shared>, input: &Value) -> Result<Value, ApiError> {
    let sqls = input
        .get("Sqls")
        .and_then(Value::as_array)
        .ok_or_else(|| validation("Sqls must be provided"))?;
    if sqls.is_empty() || sqls.len() > MAX_BATCH_STATEMENTS {
        return Err(validation(format!(
            "Sqls has {} statements; a batch holds 1 to {MAX_BATCH_STATEMENTS}",
            sqls.len()
        )));
    }
    let mut list = Vec::with_capacity(sqls.len());
    for (i, s) in sqls.iter().enumerate() {
        let s = s
            .as_str()
            .ok_or_else(|| validation(format!("Sqls[{i}] must be a string")))?;
        check_size(s).map_err(|e| validation(format!("Sqls[{i}]: {}", e.message)))?;
        list.push(s.to_owned());
    }
    // TRANSACTION is the default (one transaction, all or nothing); AUTO_COMMIT commits
    // each statement on its own, which the product never wants: modelled as refused.
    let mode = opt_str(input, "ExecutionMode")?;
    if let Some(m) = mode.as_deref().filter(|m| *m != "TRANSACTION") {
        return Err(validation(format!(
            "ExecutionMode {m}: the stand-in models only TRANSACTION (events-etl loads must be atomic)"
        )));
    }
    lock(&shared.execution_modes).push(mode);
    let id = identity(input)?;
    let params = parameters(input)?;
    Ok(submit(shared, true, list, params, id))
}

fn submit(
    shared: &Arc<Shared>,
    batch: bool,
    sqls: Vec<String>,
    params: Vec<(String, String)>,
    identity: Identity,
) -> Value {
    let now = SystemTime::now();
    let id = uuid::Uuid::new_v4().to_string();
    let (cancel_tx, _) = tokio::sync::watch::channel(false);
    let subs = sqls
        .into_iter()
        .map(|sql| Sub {
            sql,
            mapped: None,
            status: Status::Submitted,
            error: None,
            updated_at: now,
            started: None,
            duration_ns: 0,
            result_rows: -1,
            result: None,
        })
        .collect();
    let mut statements = lock(&shared.statements);
    let statement = Arc::new(Mutex::new(Statement {
        seq: statements.len() as u64,
        id: id.clone(),
        batch,
        identity: identity.clone(),
        created_at: now,
        updated_at: now,
        status: Status::Submitted,
        error: None,
        started: None,
        duration_ns: 0,
        pid: -1,
        subs,
        cancel_requested: false,
        cancel_token: None,
        cancel_tx,
    }));
    statements.insert(id.clone(), statement.clone());
    drop(statements);
    tokio::spawn(run(shared.clone(), statement, params));

    let mut out = Map::new();
    out.insert("Id".into(), json!(id));
    out.insert("CreatedAt".into(), json!(epoch(now)));
    for (k, v) in [
        ("Database", &identity.database),
        ("ClusterIdentifier", &identity.cluster),
        ("WorkgroupName", &identity.workgroup),
        ("DbUser", &identity.db_user),
        ("SecretArn", &identity.secret_arn),
    ] {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    Value::Object(out)
}

/// Finds a statement by `<id>` or a sub-statement by `<id>:<n>` (n from 1).
fn find(shared: &Shared, id: &str) -> Result<(Arc<Mutex<Statement>>, Option<usize>), ApiError> {
    let not_found = || api_err("ResourceNotFoundException", format!("Query does not exist: {id}"));
    let statements = lock(&shared.statements);
    if let Some(s) = statements.get(id) {
        return Ok((s.clone(), None));
    }
    let (base, n) = id.rsplit_once(':').ok_or_else(not_found)?;
    let n: usize = n.parse().map_err(|_| not_found())?;
    let s = statements.get(base).ok_or_else(not_found)?;
    if n == 0 || n > lock(s).subs.len() {
        return Err(not_found());
    }
    Ok((s.clone(), Some(n - 1)))
}

fn sub_json(id: &str, i: usize, s: &Statement, sub: &Sub) -> Value {
    let mut v = json!({
        "Id": format!("{id}:{}", i + 1),
        "Status": sub.status.as_str(),
        "QueryString": sub.sql,
        "HasResultSet": sub.result.is_some(),
        "ResultRows": sub.result_rows,
        "ResultSize": sub.result.as_ref().map_or(-1, |r| r.size),
        "CreatedAt": epoch(s.created_at),
        "UpdatedAt": epoch(sub.updated_at),
        "Duration": if sub.status.terminal() { sub.duration_ns } else { elapsed_ns(sub.started) },
    });
    if let Some(e) = &sub.error {
        v["Error"] = json!(e);
    }
    v
}

fn describe_statement(shared: &Shared, input: &Value) -> Result<Value, ApiError> {
    let id = req_str(input, "Id")?;
    let (statement, sub) = find(shared, &id)?;
    let s = lock(&statement);
    let mut out = match sub {
        Some(i) => sub_json(&s.id, i, &s, &s.subs[i]),
        None => {
            let mut v = json!({
                "Id": s.id,
                "Status": s.status.as_str(),
                "QueryString": s.subs.iter().map(|x| x.sql.as_str()).collect::<Vec<_>>().join(";\n"),
                "HasResultSet": s.subs.iter().any(|x| x.result.is_some()),
                "ResultRows": s.subs.iter().map(|x| x.result_rows.max(0)).sum::<i64>(),
                "ResultSize": s.subs.iter().filter_map(|x| x.result.as_ref()).map(|r| r.size).sum::<i64>(),
                "CreatedAt": epoch(s.created_at),
                "UpdatedAt": epoch(s.updated_at),
                "Duration": if s.status.terminal() { s.duration_ns } else { elapsed_ns(s.started) },
                "RedshiftPid": s.pid,
            });
            if let Some(e) = &s.error {
                v["Error"] = json!(e);
            }
            if s.batch {
                v["SubStatements"] = Value::Array(
                    s.subs
                        .iter()
                        .enumerate()
                        .map(|(i, sub)| sub_json(&s.id, i, &s, sub))
                        .collect(),
                );
            }
            v
        }
    };
    out["RedshiftPid"] = json!(s.pid);
    for (k, v) in [
        ("Database", &s.identity.database),
        ("ClusterIdentifier", &s.identity.cluster),
        ("WorkgroupName", &s.identity.workgroup),
        ("DbUser", &s.identity.db_user),
        ("SecretArn", &s.identity.secret_arn),
    ] {
        if let Some(v) = v {
            out[k] = json!(v);
        }
    }
    Ok(out)
}

fn get_statement_result(shared: &Shared, input: &Value) -> Result<Value, ApiError> {
    let id = req_str(input, "Id")?;
    let (statement, sub) = find(shared, &id)?;
    let s = lock(&statement);
    let no_result =
        || validation("Query does not have result. Please check query status with DescribeStatement.");
    let index = match sub {
        Some(i) => i,
        // Redshift wants `<id>:<n>` for a batch; the stand-in also takes the batch id and
        // answers with the last sub-statement that has a result set.
        None => {
            if s.status != Status::Finished {
                return Err(no_result());
            }
            s.subs
                .iter()
                .rposition(|x| x.result.is_some())
                .ok_or_else(no_result)?
        }
    };
    let sub = &s.subs[index];
    if sub.status != Status::Finished {
        return Err(no_result());
    }
    let result = sub.result.as_ref().ok_or_else(no_result)?;
    let offset = match opt_str(input, "NextToken")? {
        None => 0,
        Some(t) => t
            .strip_prefix("standin-offset-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < result.records.len())
            .ok_or_else(|| validation(format!("invalid NextToken {t:?}")))?,
    };
    let end = (offset + PAGE_ROWS).min(result.records.len());
    let mut out = json!({
        "Records": result.records[offset..end],
        "ColumnMetadata": result.columns,
        "TotalNumRows": result.records.len(),
    });
    if end < result.records.len() {
        out["NextToken"] = json!(format!("standin-offset-{end}"));
    }
    Ok(out)
}

async fn cancel_statement(shared: &Shared, input: &Value) -> Result<Value, ApiError> {
    let id = req_str(input, "Id")?;
    let (statement, _) = find(shared, &id)?;
    let token = {
        let mut s = lock(&statement);
        if s.status.terminal() {
            return Err(validation(format!(
                "Could not cancel a query that is already in {} state with ID: {id}",
                s.status.as_str()
            )));
        }
        if shared.cancel_too_late.load(Ordering::SeqCst) {
            // The statement was about to finish: it ends its wait and commits, and the
            // cancel fails as Redshift's does for a statement that already finished.
            let _ = s.cancel_tx.send(true);
            drop(s);
            return Err(validation(format!(
                "Could not cancel a query that is already in FINISHED state with ID: {id}"
            )));
        }
        s.cancel_requested = true;
        let _ = s.cancel_tx.send(true);
        s.cancel_token.clone()
    };
    if let Some(token) = token {
        // Interrupts a running query; harmless when the connection is idle.
        let _ = token.cancel_query(tokio_postgres::NoTls).await;
    }
    Ok(json!({"Status": true}))
}

// ---------------------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------------------

enum Outcome {
    Done,
    Failed(usize, String),
    Aborted(usize),
}

async fn run(shared: Arc<Shared>, statement: Arc<Mutex<Statement>>, params: Vec<(String, String)>) {
    let mut cancel_rx = lock(&statement).cancel_tx.subscribe();
    let mut release_rx = shared.release.subscribe();
    let cancelled = |st: &Arc<Mutex<Statement>>| lock(st).cancel_requested;

    let client = match connect(&shared.pg_url).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("stand-in: cannot connect to the test PostgreSQL: {e}");
            finish(&statement, Outcome::Failed(0, msg));
            return;
        }
    };
    let pid = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .unwrap_or(-1);
    {
        let mut s = lock(&statement);
        s.pid = pid;
        s.cancel_token = Some(client.cancel_token());
        s.started = Some(Instant::now());
        s.set_status(Status::Started);
    }

    let delay = *lock(&shared.delay);
    if !delay.is_zero() && !cancelled(&statement) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel_rx.wait_for(|c| *c) => {}
            _ = release_rx.changed() => {}
        }
    }
    if cancelled(&statement) {
        finish(&statement, Outcome::Aborted(0));
        return;
    }

    // Redshift runs every transaction serializable (c_serial_isolation.html).
    if let Err(e) = client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE").await {
        finish(
            &statement,
            Outcome::Failed(0, format!("ERROR: {}", pg_message(&e))),
        );
        return;
    }
    let sqls: Vec<String> = lock(&statement).subs.iter().map(|s| s.sql.clone()).collect();
    let batch = lock(&statement).batch;
    let mut outcome = Outcome::Done;
    for (i, sql) in sqls.iter().enumerate() {
        if cancelled(&statement) {
            outcome = Outcome::Aborted(i);
            break;
        }
        lock(&statement).set_sub(i, Status::Started, None);
        let result = run_sub(&shared, &client, sql, &params, batch).await;
        let mut s = lock(&statement);
        match result {
            Ok(done) => {
                let sub = &mut s.subs[i];
                sub.mapped = done.mapped;
                sub.result_rows = done.rows;
                sub.result = done.result;
                s.set_sub(i, Status::Finished, None);
            }
            Err(failed) => {
                s.subs[i].mapped = failed.mapped;
                outcome = if s.cancel_requested {
                    Outcome::Aborted(i)
                } else {
                    Outcome::Failed(i, failed.error)
                };
                break;
            }
        }
    }
    if matches!(outcome, Outcome::Done) && cancelled(&statement) {
        outcome = Outcome::Aborted(sqls.len());
    }
    match outcome {
        Outcome::Done => match client.batch_execute("COMMIT").await {
            Ok(()) => finish(&statement, Outcome::Done),
            Err(e) => {
                let mut s = lock(&statement);
                s.error = Some(format!("ERROR: {}", pg_message(&e)));
                s.set_status(Status::Failed);
            }
        },
        other => {
            let _ = client.batch_execute("ROLLBACK").await;
            finish(&statement, other);
        }
    }
}

/// Records the final state: on failure the failing sub-statement is FAILED, later ones
/// ABORTED, earlier ones stay FINISHED (their work rolled back with the batch).
fn finish(statement: &Arc<Mutex<Statement>>, outcome: Outcome) {
    let mut s = lock(statement);
    let n = s.subs.len();
    match outcome {
        Outcome::Done => s.set_status(Status::Finished),
        Outcome::Failed(i, error) => {
            s.set_sub(i, Status::Failed, Some(error.clone()));
            for j in i + 1..n {
                s.set_sub(j, Status::Aborted, None);
            }
            s.error = Some(error);
            s.set_status(Status::Failed);
        }
        Outcome::Aborted(i) => {
            for j in i..n {
                s.set_sub(j, Status::Aborted, None);
            }
            s.set_status(Status::Aborted);
        }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // Redshift sessions run in UTC; ISO output is the `YYYY-MM-DD HH:MM:SS[.ffffff]` form.
    client
        .batch_execute(
            "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, MDY'; SET extra_float_digits = 1; \
             SET standard_conforming_strings = off; SET escape_string_warning = off",
        )
        .await?;
    Ok(client)
}

/// The PostgreSQL error text: message, plus detail when there is one.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_owned();
            if let Some(detail) = db.detail() {
                let _ = write!(text, " DETAIL: {detail}");
            }
            use tokio_postgres::error::SqlState;
            let code = db.code();
            // Redshift's words where they differ from PostgreSQL's.
            if *code == SqlState::DIVISION_BY_ZERO {
                return "Divide by zero".to_owned();
            }
            // c_serial_isolation-serializable-isolation-troubleshooting.html
            if *code == SqlState::T_R_SERIALIZATION_FAILURE {
                return format!(
                    "1023 DETAIL: Serializable isolation violation on table ({})",
                    db.message()
                );
            }
            if *code == SqlState::UNDEFINED_FUNCTION
                || *code == SqlState::SYNTAX_ERROR
                || *code == SqlState::UNDEFINED_OBJECT
            {
                text.push_str(
                    " (stand-in: PostgreSQL rejected the mapped statement; the Redshift Data API \
                     stand-in may lack a mapping for this Redshift SQL)",
                );
            }
            text
        }
        None => format!("stand-in: PostgreSQL connection error: {e}"),
    }
}

struct SubDone {
    mapped: Option<String>,
    rows: i64,
    result: Option<ResultSet>,
}

struct SubFailed {
    mapped: Option<String>,
    error: String,
}

async fn run_sub(
    shared: &Shared,
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[(String, String)],
    in_batch: bool,
) -> Result<SubDone, SubFailed> {
    let injected = lock(&shared.failures)
        .iter()
        .find(|(needle, _)| sql.contains(needle.as_str()))
        .map(|(_, message)| message.clone());
    if let Some(error) = injected {
        return Err(SubFailed { mapped: None, error });
    }
    match map_statement(sql, params, in_batch) {
        Err(error) => Err(SubFailed { mapped: None, error }),
        Ok(Mapped::Sql(mapped)) => match exec_sql(client, &mapped).await {
            Ok((rows, result)) => Ok(SubDone {
                mapped: Some(mapped),
                rows,
                result,
            }),
            Err(e) => Err(SubFailed {
                mapped: Some(mapped),
                error: format!("ERROR: {}", pg_message(&e)),
            }),
        },
        Ok(Mapped::Copy(copy)) => {
            let mapped = Some(format!(
                "(COPY from {} via jsonb_populate_record into {})",
                copy.manifest, copy.table
            ));
            match run_copy(shared, client, &copy).await {
                Ok(rows) => Ok(SubDone {
                    mapped,
                    rows,
                    result: None,
                }),
                Err(error) => Err(SubFailed { mapped, error }),
            }
        }
    }
}

/// Runs one mapped statement: typed column list from a prepare, values as PostgreSQL's
/// text output (simple protocol), so every type has a faithful string form.
async fn exec_sql(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(i64, Option<ResultSet>), tokio_postgres::Error> {
    let prepared = client.prepare(sql).await?;
    if prepared.columns().is_empty() {
        let n = client.execute(&prepared, &[]).await?;
        return Ok((i64::try_from(n).unwrap_or(i64::MAX), None));
    }
    let types: Vec<Type> = prepared.columns().iter().map(|c| c.type_().clone()).collect();
    let columns: Vec<Value> = prepared.columns().iter().map(column_meta).collect();
    let mut records = Vec::new();
    let mut size = 0i64;
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            let mut record = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                let text = row.get(i);
                size += text.map_or(0, |t| t.len() as i64);
                record.push(field(ty, text));
            }
            records.push(Value::Array(record));
        }
    }
    Ok((
        records.len() as i64,
        Some(ResultSet {
            columns,
            records,
            size,
        }),
    ))
}

/// One value as a Data API `Field` union member.
fn field(ty: &Type, text: Option<&str>) -> Value {
    let Some(text) = text else {
        return json!({"isNull": true});
    };
    if *ty == Type::BOOL {
        json!({"booleanValue": text == "t"})
    } else if *ty == Type::INT2 || *ty == Type::INT4 || *ty == Type::INT8 {
        match text.parse::<i64>() {
            Ok(v) => json!({"longValue": v}),
            Err(_) => json!({"stringValue": text}),
        }
    } else if *ty == Type::FLOAT4 || *ty == Type::FLOAT8 {
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => json!({"doubleValue": v}),
            _ => json!({"stringValue": text}),
        }
    } else {
        json!({"stringValue": text})
    }
}

fn column_meta(c: &tokio_postgres::Column) -> Value {
    let ty = c.type_();
    let name = match ty.name() {
        // SUPER is mapped to JSONB; report it under its Redshift name.
        "jsonb" => "super",
        other => other,
    };
    let numeric = [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
    ]
    .contains(ty);
    let texty = [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty);
    let typmod = c.type_modifier();
    let (mut precision, mut scale, mut length) = (0, 0, 0);
    if texty && typmod >= 4 {
        length = typmod - 4;
        precision = length;
    } else if *ty == Type::NUMERIC && typmod >= 4 {
        precision = ((typmod - 4) >> 16) & 0xffff;
        scale = (typmod - 4) & 0xffff;
    }
    json!({
        "name": c.name(),
        "label": c.name(),
        "typeName": name,
        "isSigned": numeric,
        "isCaseSensitive": texty,
        "isCurrency": false,
        "nullable": 1,
        "precision": precision,
        "scale": scale,
        "length": length,
        "schemaName": "",
        "tableName": "",
    })
}

// ---------------------------------------------------------------------------------------
// COPY from an S3 manifest
// ---------------------------------------------------------------------------------------

/// A parsed `COPY t [(cols)] FROM 's3://...manifest' IAM_ROLE .. FORMAT AS JSON 'auto' GZIP
/// MANIFEST [TIMEFORMAT 'auto'] [REGION 'r']`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// The target table as written (`schema.table`).
    pub table: String,
    /// The column list, as written, when one was given.
    pub columns: Option<Vec<String>>,
    /// `s3://bucket/key` of the manifest.
    pub manifest: String,
    /// `MAXERROR n` (default 0): the COPY skips refused rows, logging each, and fails
    /// once it has met max(n, 1) of them (copy-parameters-data-load.html: "If the load
    /// returns the error_count number of errors or greater, the load fails").
    pub max_errors: u32,
}

enum Fetch {
    Missing,
    Failed(String),
}

async fn s3_get(s3: &aws_sdk_s3::Client, url: &str) -> Result<Vec<u8>, Fetch> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Fetch::Failed(format!("{url} is not an s3:// URL")))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| Fetch::Failed(format!("{url} has no key")))?;
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) => {
            let missing = e.as_service_error().is_some_and(|se| se.is_no_such_key())
                || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
            return Err(if missing {
                Fetch::Missing
            } else {
                Fetch::Failed(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)))
            });
        }
    };
    out.body
        .collect()
        .await
        .map(|b| b.into_bytes().to_vec())
        .map_err(|e| Fetch::Failed(format!("reading {url}: {e}")))
}

async fn run_copy(shared: &Shared, client: &tokio_postgres::Client, copy: &CopySpec) -> Result<i64, String> {
    let manifest_bytes = match s3_get(&shared.s3, &copy.manifest).await {
        Ok(b) => b,
        Err(Fetch::Missing) => {
            return Err(format!(
                "ERROR: Problem reading manifest file - S3ServiceException: The specified key does not exist ({})",
                copy.manifest
            ))
        }
        Err(Fetch::Failed(e)) => {
            return Err(format!("ERROR: Problem reading manifest file {}: {e}", copy.manifest))
        }
    };
    let manifest: Value = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        format!(
            "ERROR: Manifest file {} is not in correct format: {e}",
            copy.manifest
        )
    })?;
    let entries = manifest.get("entries").and_then(Value::as_array).ok_or_else(|| {
        format!(
            "ERROR: Manifest file {} is not in correct format: no \"entries\" list",
            copy.manifest
        )
    })?;

    // Redshift's COPY terminates when no files are found (r_COPY.html); the product
    // must never send a manifest without entries.
    if entries.is_empty() {
        return Err(format!(
            "ERROR: Load into table '{}' failed: manifest {} lists no files, and COPY needs at least one",
            copy.table, copy.manifest
        ));
    }

    // The target's columns: (name, SUPER?, VARCHAR/CHAR length limit in bytes).
    let columns: Vec<(String, bool, Option<usize>)> = client
        .query(
            "SELECT a.attname::text, t.typname = 'jsonb', \
                    CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 THEN a.atttypmod - 4 END \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&copy.table],
        )
        .await
        .map_err(|e| format!("ERROR: {}", pg_message(&e)))?
        .iter()
        .map(|r| {
            let max: Option<i32> = r.get(2);
            (r.get(0), r.get(1), max.and_then(|n| usize::try_from(n).ok()))
        })
        .collect();
    let chosen: Vec<&(String, bool, Option<usize>)> = match &copy.columns {
        Some(cols) => cols
            .iter()
            .map(|c| {
                columns.iter().find(|(n, _, _)| n == c).ok_or_else(|| {
                    format!(
                        "ERROR: column \"{c}\" of relation \"{}\" does not exist",
                        copy.table
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        None => columns.iter().collect(),
    };
    let names: Vec<&str> = chosen.iter().map(|(n, _, _)| n.as_str()).collect();
    // jsonb_populate_record maps keys to columns by exact name, as JSON 'auto' does (it is
    // case-sensitive; only 'auto ignorecase' is not); missing keys load NULL, other keys
    // are ignored, nested values land in JSONB (SUPER) columns with exact numbers. A JSON
    // null into a SUPER column is a SUPER null (JSONB 'null'), not SQL NULL: only an
    // absent key loads SQL NULL, as on Redshift.
    let select: Vec<String> = chosen
        .iter()
        .map(|(n, is_super, _)| {
            if *is_super {
                format!("CASE WHEN jsonb_typeof(u.doc::jsonb -> '{n}') = 'null' THEN 'null'::jsonb ELSE r.{n} END")
            } else {
                format!("r.{n}")
            }
        })
        .collect();
    let insert = format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest($1::text[]) AS u(doc), \
         jsonb_populate_record(NULL::{}, u.doc::jsonb) AS r",
        copy.table,
        names.join(", "),
        select.join(", "),
        copy.table
    );
    // VARCHAR(n) and CHAR(n) hold n *bytes* on Redshift (r_Character_types.html), n
    // characters on PostgreSQL: check bytes here, as Redshift's COPY does.
    let limits: Vec<(&str, usize)> = chosen
        .iter()
        .filter_map(|(n, _, max)| max.map(|m| (n.as_str(), m)))
        .collect();

    let mut loaded = 0i64;
    let mut errors = 0u32;
    for entry in entries {
        let url = entry.get("url").and_then(Value::as_str).ok_or_else(|| {
            format!(
                "ERROR: Manifest file {} is not in correct format: entry without url",
                copy.manifest
            )
        })?;
        let mandatory = entry.get("mandatory").and_then(Value::as_bool).unwrap_or(false);
        let gz = match s3_get(&shared.s3, url).await {
            Ok(b) => b,
            Err(Fetch::Missing) if !mandatory => continue,
            Err(Fetch::Missing) => {
                return Err(format!(
                    "ERROR: Manifest file entry {url} is mandatory, but the object does not exist \
                     (S3ServiceException: The specified key does not exist)"
                ))
            }
            Err(Fetch::Failed(e)) => return Err(format!("ERROR: cannot read {url}: {e}")),
        };
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(gz.as_slice())
            .read_to_end(&mut text)
            .map_err(|e| format!("ERROR: gzip error in {url} (COPY ... GZIP): {e}"))?;
        // (line of the object's last line, the object), as SYS_LOAD_ERROR_DETAIL numbers
        // lines for JSON.
        let mut docs: Vec<(i64, String)> = Vec::new();
        let mut stream =
            serde_json::Deserializer::from_slice(&text).into_iter::<Box<serde_json::value::RawValue>>();
        let (mut counted_to, mut line) = (0usize, 1i64);
        let mut line_at = |end: usize| {
            line += text[counted_to..end.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as i64;
            counted_to = end.min(text.len());
            line
        };
        while let Some(doc) = stream.next() {
            let end = stream.byte_offset();
            let at = line_at(end);
            let doc = match doc {
                Ok(doc) => doc,
                Err(e) => {
                    let at = at + i64::try_from(e.line()).unwrap_or(1) - 1;
                    let reason = format!("Invalid JSON: {e}");
                    row_error(shared, copy, url, at, "", 1224, &reason, &mut errors).await?;
                    // Nothing after an unparsable object can be read.
                    break;
                }
            };
            let injected = lock(&shared.copy_failures)
                .iter()
                .find(|(needle, _)| doc.get().contains(needle.as_str()))
                .map(|(_, message)| message.clone());
            if let Some(message) = injected {
                return Err(message);
            }
            if !doc.get().starts_with('{') {
                let reason = "Invalid JSONPath format: a JSON object is expected";
                row_error(shared, copy, url, at, "", 1224, reason, &mut errors).await?;
                continue;
            }
            if !limits.is_empty() {
                let value: Value = serde_json::from_str(doc.get()).unwrap_or(Value::Null);
                let too_long = limits.iter().find_map(|(column, max)| match value.get(*column) {
                    Some(Value::String(v)) if v.len() > *max => Some((
                        *column,
                        format!("String length exceeds DDL length ({} bytes > {max})", v.len()),
                    )),
                    _ => None,
                });
                if let Some((column, reason)) = too_long {
                    row_error(shared, copy, url, at, column, 1204, &reason, &mut errors).await?;
                    continue;
                }
            }
            docs.push((at, doc.get().to_owned()));
        }
        for chunk in docs.chunks(COPY_CHUNK_DOCS) {
            let texts: Vec<&str> = chunk.iter().map(|(_, d)| d.as_str()).collect();
            client
                .batch_execute("SAVEPOINT copy_chunk")
                .await
                .map_err(|e| format!("ERROR: {}", pg_message(&e)))?;
            match client.execute(insert.as_str(), &[&texts]).await {
                Ok(n) => {
                    loaded += i64::try_from(n).unwrap_or(i64::MAX);
                    client
                        .batch_execute("RELEASE SAVEPOINT copy_chunk")
                        .await
                        .map_err(|e| format!("ERROR: {}", pg_message(&e)))?;
                }
                Err(chunk_err) => {
                    // One object at a time: each that fails is a load error (logged and
                    // skipped while MAXERROR allows), the others load.
                    let _ = client.batch_execute("ROLLBACK TO SAVEPOINT copy_chunk").await;
                    let mut any_failed = false;
                    for (at, doc) in chunk {
                        let one = [doc.as_str()];
                        let _ = client.batch_execute("SAVEPOINT copy_one").await;
                        match client.execute(insert.as_str(), &[&one.as_slice()]).await {
                            Ok(n) => {
                                loaded += i64::try_from(n).unwrap_or(i64::MAX);
                                let _ = client.batch_execute("RELEASE SAVEPOINT copy_one").await;
                            }
                            Err(e) => {
                                any_failed = true;
                                let _ = client.batch_execute("ROLLBACK TO SAVEPOINT copy_one").await;
                                let column = e
                                    .as_db_error()
                                    .and_then(|d| d.column())
                                    .unwrap_or_default()
                                    .to_owned();
                                let reason = pg_message(&e);
                                if let Err(failed) =
                                    row_error(shared, copy, url, *at, &column, 1216, &reason, &mut errors)
                                        .await
                                {
                                    let _ = client.batch_execute("ROLLBACK TO SAVEPOINT copy_chunk").await;
                                    return Err(failed);
                                }
                            }
                        }
                    }
                    if !any_failed {
                        let _ = client.batch_execute("ROLLBACK TO SAVEPOINT copy_chunk").await;
                        return Err(load_failed(
                            shared,
                            copy,
                            url,
                            chunk[0].0,
                            "",
                            1216,
                            &pg_message(&chunk_err),
                        )
                        .await);
                    }
                    client
                        .batch_execute("RELEASE SAVEPOINT copy_chunk")
                        .await
                        .map_err(|e| format!("ERROR: {}", pg_message(&e)))?;
                }
            }
        }
    }
    Ok(loaded)
}

/// One row COPY refuses: logged in `sys_load_error_detail`; an error (the COPY fails)
/// once `errors` reaches max(MAXERROR, 1).
#[allow(clippy::too_many_arguments)]
async fn row_error(
    shared: &Shared,
    copy: &CopySpec,
    file: &str,
    line: i64,
    column: &str,
    code: i32,
    reason: &str,
    errors: &mut u32,
) -> Result<(), String> {
    let failed = load_failed(shared, copy, file, line, column, code, reason).await;
    *errors += 1;
    if *errors >= copy.max_errors.max(1) {
        Err(failed)
    } else {
        Ok(())
    }
}

/// Records a COPY error in the stand-in's `sys_load_error_detail` (outside the COPY's
/// transaction, as Redshift's system view keeps it after the rollback) and returns
/// Redshift's COPY error, which only points there (tutorial-loading-data.html:
/// "Load into table 'part' failed.  Check 'stl_load_errors' system table for details.").
async fn load_failed(
    shared: &Shared,
    copy: &CopySpec,
    file: &str,
    line: i64,
    column: &str,
    code: i32,
    reason: &str,
) -> String {
    let table = copy.table.rsplit('.').next().unwrap_or(&copy.table).to_owned();
    let logged = async {
        let c = connect(&shared.pg_url).await?;
        c.execute(
            "INSERT INTO public.sys_load_error_detail \
             (start_time, file_name, line_number, column_name, error_code, error_message) \
             VALUES (clock_timestamp() AT TIME ZONE 'UTC', left($1, 256), $2, $3, $4, left($5, 512))",
            &[&file, &line, &column, &code, &reason],
        )
        .await
    }
    .await;
    if let Err(e) = logged {
        eprintln!("stand-in: could not record the load error: {e}");
    }
    format!("ERROR: Load into table '{table}' failed.  Check 'stl_load_errors' system table for details.")
}

/// The stand-in's copy of Redshift's SYS_LOAD_ERROR_DETAIL (SYS_LOAD_ERROR_DETAIL.html):
/// the same columns and fixed-width types, so that queries must TRIM as on Redshift.
const SYS_LOAD_ERROR_DETAIL: &str = "CREATE TABLE IF NOT EXISTS public.sys_load_error_detail (
    user_id integer, query_id bigint, transaction_id bigint, session_id integer,
    database_name character(64), table_id integer, start_time timestamp,
    file_name character(256), line_number bigint, column_name character(127),
    column_type character(10), column_length character(10), position integer,
    error_code integer, error_message character(512))";

// ---------------------------------------------------------------------------------------
// SQL mapping: Redshift -> PostgreSQL, textual and narrow
// ---------------------------------------------------------------------------------------

/// What one Redshift statement becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// One PostgreSQL statement.
    Sql(String),
    /// A COPY, executed by the stand-in from S3.
    Copy(CopySpec),
}

/// Redshift-only functions (or functions PostgreSQL has with other meanings) that the
/// stand-in does not map: a statement calling one fails instead of running something else.
const UNMAPPED_FUNCTIONS: &[&str] = &[
    "NVL",
    "NVL2",
    "DECODE",
    "LISTAGG",
    "DATE_ADD",
    "CONVERT",
    "LEN",
    "CHARINDEX",
    "STRTOL",
    "MEDIAN",
    "RATIO_TO_REPORT",
    "APPROXIMATE",
    "TRUNC",
    "IDENTITY",
    "JSON_EXTRACT_PATH_TEXT",
    "JSON_EXTRACT_ARRAY_ELEMENT_TEXT",
    "JSON_ARRAY_LENGTH",
    "JSON_SERIALIZE_TO_VARBYTE",
    "IS_VALID_JSON",
    "IS_VALID_JSON_ARRAY",
    "CAN_JSON_PARSE",
    "SPLIT_TO_ARRAY",
    "SUBARRAY",
    "ARRAY_CONCAT",
    "ARRAY_FLATTEN",
    "GET_ARRAY_LENGTH",
    "OBJECT_TRANSFORM",
    "IS_ARRAY",
    "IS_OBJECT",
    "IS_SCALAR",
    "IS_INTEGER",
    "IS_DECIMAL",
    "IS_FLOAT",
    "FNV_HASH",
    "CHECKSUM",
    "FUNC_SHA1",
    "TEXT_TO_INT_ALT",
    "TEXT_TO_NUMERIC_ALT",
    "MONTHS_BETWEEN",
    "ADD_MONTHS",
    "TIMEZONE",
    "SYSDATE",
];

/// Maps one Redshift statement to PostgreSQL, or says why it cannot.
///
/// Rules (only what the product's `sql/redshift/*.sql` needs):
/// * `:name` parameters become quoted literals from `params` (a missing one fails);
///   comments are dropped; one trailing `;` is allowed, a second statement is not;
///   a backslash in a string literal escapes the next character, as on Redshift (the
///   session runs with `standard_conforming_strings = off`);
/// * SUPER navigation on `metadata` and IS_VARCHAR/IS_BIGINT/IS_BOOLEAN/JSON_TYPEOF, see
///   [`rewrite_super`];
/// * statement kinds allowed: CREATE SCHEMA, CREATE TABLE, CREATE [OR REPLACE] VIEW,
///   DROP TABLE/VIEW, INSERT, DELETE, UPDATE, SELECT,
///   MERGE, LOCK, COPY; any other kind (VACUUM, UNLOAD, ANALYZE, DROP, ALTER, BEGIN, ...)
///   fails;
/// * type `SUPER` -> `JSONB`; `JSON_PARSE(x)` -> `(x)::jsonb`;
///   `GETDATE()` -> `date_trunc('second', statement_timestamp() AT TIME ZONE 'UTC')`
///   (statement start, whole seconds, as Redshift's GETDATE);
///   `SYSDATE` -> `(now() AT TIME ZONE 'UTC')` (transaction start, microseconds);
/// * in CREATE TABLE: `DISTSTYLE x`, `DISTKEY [(..)]`, `[COMPOUND|INTERLEAVED] SORTKEY
///   [(..)|AUTO]` and `ENCODE x` are dropped;
/// * `LOCK a.b[, ...]` -> `LOCK TABLE a.b[, ...] IN ACCESS EXCLUSIVE MODE`;
/// * `COPY` -> [`Mapped::Copy`] (see [`CopySpec`]); only `FROM 's3://..' IAM_ROLE
///   '..'|default [FORMAT [AS]] JSON 'auto' GZIP MANIFEST [TIMEFORMAT 'auto'] [REGION
///   [AS] '..']` with all of IAM_ROLE, JSON 'auto', GZIP and MANIFEST;
/// * a call of a function in [`UNMAPPED_FUNCTIONS`] fails.
pub fn map_statement(sql: &str, params: &[(String, String)], in_batch: bool) -> Result<Mapped, String> {
    let cannot = |why: String| {
        format!("the Redshift Data API stand-in cannot map this statement to PostgreSQL: {why}")
    };
    let mut toks = tokenize(sql).map_err(cannot)?;
    for t in toks.iter_mut() {
        if let Tok::Param(name) = t {
            let value = params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("ERROR: no value for parameter :{name} in Parameters"))?;
            *t = Tok::Str(quote_literal(value));
        }
    }
    // Leading/trailing blanks and one trailing semicolon.
    while matches!(toks.last(), Some(Tok::Space)) {
        toks.pop();
    }
    if matches!(toks.last(), Some(Tok::Punct(p)) if p == ";") {
        toks.pop();
    }
    while matches!(toks.last(), Some(Tok::Space)) {
        toks.pop();
    }
    while matches!(toks.first(), Some(Tok::Space)) {
        toks.remove(0);
    }
    if toks.is_empty() {
        return Err(cannot("the statement is empty".into()));
    }
    if toks.iter().any(|t| matches!(t, Tok::Punct(p) if p == ";")) {
        return Err(cannot("more than one statement in one SQL string".into()));
    }
    // What Redshift refuses, refused first, in Redshift's words (redshift_rules.rs);
    // reserved words once the statement kind is known to be on the allow-list.
    let lexed = to_lex(&toks);
    check_forms(&lexed, in_batch).map_err(|r| r.message)?;
    for i in 0..toks.len() {
        if let Tok::Word(w) = &toks[i] {
            let upper = w.to_ascii_uppercase();
            let called = next_sig(&toks, i + 1).is_some_and(|j| toks[j].is_punct("("));
            let qualified = prev_sig(&toks, i).is_some_and(|j| toks[j].is_punct("."));
            if called && !qualified && UNMAPPED_FUNCTIONS.contains(&upper.as_str()) {
                return Err(cannot(format!("Redshift function {upper}() has no mapping")));
            }
        }
    }
    let words: Vec<String> = toks
        .iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        })
        .take(2)
        .collect();
    let Some(Tok::Word(_)) = toks.first() else {
        return Err(cannot("the statement does not start with a keyword".into()));
    };
    let kind = words[0].as_str();
    match kind {
        "CREATE" => match words.get(1).map(String::as_str) {
            Some("SCHEMA") => {}
            // Also `CREATE TEMP TABLE t [attributes] AS query` (r_CREATE_TABLE_AS.html).
            Some("TABLE" | "TEMP" | "TEMPORARY") => {
                drop_table_attributes(&mut toks);
                let table = table_named(&toks);
                informational_keys(&mut toks, &table);
                byte_order_text(&mut toks);
            }
            // CREATE VIEW (r_CREATE_VIEW.html); CREATE OR REPLACE VIEW is refused by
            // PostgreSQL when the columns change, as by Redshift.
            Some("VIEW") => {}
            Some("OR")
                if toks
                    .iter()
                    .filter_map(|t| match t {
                        Tok::Word(w) => Some(w.to_ascii_uppercase()),
                        _ => None,
                    })
                    .nth(3)
                    .as_deref()
                    == Some("VIEW") => {}
            other => {
                return Err(cannot(format!(
                    "statement kind CREATE {} is not on the stand-in's allow-list",
                    other.unwrap_or("")
                )))
            }
        },
        "INSERT" | "DELETE" | "UPDATE" | "SELECT" | "MERGE" => {}
        "DROP" if matches!(words.get(1).map(String::as_str), Some("TABLE" | "VIEW")) => {}
        // Forms Redshift runs only outside a transaction block are refused in batches by
        // the rules above.
        "ALTER" if words.get(1).map(String::as_str) == Some("TABLE") => {
            let table = table_named(&toks);
            informational_keys(&mut toks, &table);
        }
        // `WITH cte AS (...) <statement>`: the statement after the CTEs decides.
        "WITH" => {
            let mut depth = 0i32;
            let mut main = None;
            for t in &toks[1..] {
                match t {
                    Tok::Punct(p) if p == "(" => depth += 1,
                    Tok::Punct(p) if p == ")" => depth -= 1,
                    Tok::Word(w) if depth == 0 => {
                        let w = w.to_ascii_uppercase();
                        if matches!(w.as_str(), "SELECT" | "INSERT" | "DELETE" | "UPDATE") {
                            main = Some(w);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            if main.is_none() {
                return Err(cannot(
                    "WITH must be followed by SELECT, INSERT, DELETE or UPDATE".into(),
                ));
            }
        }
        "LOCK" => {
            let mut rest: Vec<Tok> = toks[1..].to_vec();
            if let Some(j) = next_sig(&rest, 0) {
                if rest[j].is_word("TABLE") {
                    rest.drain(..=j);
                }
            }
            check_reserved(&lexed)?;
            let tables = render(&rest).trim().to_owned();
            if tables.is_empty() {
                return Err(cannot("LOCK without a table".into()));
            }
            return Ok(Mapped::Sql(format!(
                "LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"
            )));
        }
        "COPY" => {
            check_reserved(&lexed)?;
            return parse_copy(&toks).map(Mapped::Copy).map_err(cannot);
        }
        other => {
            return Err(cannot(format!(
                "statement kind {other} is not on the stand-in's allow-list \
                 (CREATE SCHEMA/TABLE, INSERT, DELETE, UPDATE, SELECT, MERGE, LOCK, COPY, WITH ... those)"
            )))
        }
    }
    check_reserved(&lexed)?;
    rewrite_super(&mut toks)?;
    rewrite_expressions(&mut toks)?;
    Ok(Mapped::Sql(render(&toks)))
}

/// The name of the product's one SUPER column: navigation is mapped on it only.
const SUPER_COLUMN: &str = "metadata";

/// SUPER navigation and type functions, mapped to jsonb (what `sql/redshift/views.sql`
/// uses, with Redshift's lax-mode meaning: query-super.html,
/// r_navigate_super_null_on_error.html):
/// * `[alias.]metadata.key[.key...]` -> `([alias.]metadata -> 'key' ...)`: a missing
///   attribute reads NULL, as in Redshift's lax mode;
/// * `<navigation>::TYPE` -> `((<navigation>) #>> '{}')::TYPE`: a SUPER scalar cast to a
///   type is its value (a string's text, not its JSON quotes). A value PostgreSQL cannot
///   cast fails the statement, where lax Redshift would read NULL: stricter, never laxer;
/// * `IS_VARCHAR(x)`, `IS_BOOLEAN(x)` -> the jsonb type test, false for NULL
///   (r_is_varchar.html, r_is_boolean.html); `IS_BIGINT(x)` -> a number of scale 0 in the
///   64-bit range (r_is_bigint.html); `JSON_TYPEOF(x)` -> `jsonb_typeof(x)`
///   (r_json_typeof.html: boolean, number, string, object, array or null).
fn rewrite_super(toks: &mut Vec<Tok>) -> Result<(), String> {
    let mut i = 0;
    while i < toks.len() {
        let is_column = toks[i].is_word(SUPER_COLUMN);
        let dot = next_sig(toks, i + 1).filter(|&j| toks[j].is_punct("."));
        let attr = dot
            .and_then(|d| next_sig(toks, d + 1))
            .filter(|&k| matches!(toks[k], Tok::Word(_)));
        let (true, Some(mut last)) = (is_column, attr) else {
            i += 1;
            continue;
        };
        // The column, qualified by an alias or not.
        let start = prev_sig(toks, i)
            .filter(|&d| toks[d].is_punct("."))
            .and_then(|d| prev_sig(toks, d))
            .filter(|&a| matches!(toks[a], Tok::Word(_)))
            .unwrap_or(i);
        let mut path = format!(
            "{} -> '{}'",
            render(&toks[start..=i]),
            toks[last].text().to_ascii_lowercase()
        );
        while let Some(k) = next_sig(toks, last + 1)
            .filter(|&d| toks[d].is_punct("."))
            .and_then(|d| next_sig(toks, d + 1))
            .filter(|&k| matches!(toks[k], Tok::Word(_)))
        {
            path.push_str(&format!(" -> '{}'", toks[k].text().to_ascii_lowercase()));
            last = k;
        }
        let cast = next_sig(toks, last + 1).is_some_and(|j| toks[j].is_punct("::"));
        let mapped = if cast {
            format!("(({path}) #>> '{{}}')")
        } else {
            format!("({path})")
        };
        toks.splice(start..=last, [Tok::Raw(mapped)]);
        i = start + 1;
    }
    let mut i = 0;
    while i < toks.len() {
        let qualified = prev_sig(toks, i).is_some_and(|j| toks[j].is_punct("."));
        let open = next_sig(toks, i + 1).filter(|&j| toks[j].is_punct("("));
        let function = ["IS_VARCHAR", "IS_BOOLEAN", "IS_BIGINT", "JSON_TYPEOF"]
            .into_iter()
            .find(|f| toks[i].is_word(f));
        let (false, Some(o), Some(f)) = (qualified, open, function) else {
            i += 1;
            continue;
        };
        let c = matching_paren(toks, o)
            .ok_or("the Redshift Data API stand-in cannot map this statement: unbalanced parentheses")?;
        let x = render(&toks[o + 1..c]);
        let mapped = match f {
            "IS_VARCHAR" => format!("COALESCE(jsonb_typeof({x}) = 'string', false)"),
            "IS_BOOLEAN" => format!("COALESCE(jsonb_typeof({x}) = 'boolean', false)"),
            "IS_BIGINT" => format!(
                "COALESCE(CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x})::numeric = trunc(({x})::numeric) \
                 AND ({x})::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 END, false)"
            ),
            _ => format!("jsonb_typeof({x})"),
        };
        toks.splice(i..=c, [Tok::Raw(mapped)]);
        i += 1;
    }
    Ok(())
}

/// `'value'` with quotes doubled.
/// A string literal as Redshift reads it: quotes doubled, and backslashes doubled since
/// a backslash in a literal is an escape (as QUOTE_LITERAL does, r_QUOTE_LITERAL.html).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Last token first, so that a call inside another's arguments is mapped before the
/// outer call takes its arguments' text.
fn rewrite_expressions(toks: &mut Vec<Tok>) -> Result<(), String> {
    let mut i = toks.len();
    while i > 0 {
        i -= 1;
        let qualified = prev_sig(toks, i).is_some_and(|j| toks[j].is_punct("."));
        if qualified {
            continue;
        }
        let open = next_sig(toks, i + 1).filter(|&j| toks[j].is_punct("("));
        if toks[i].is_word("GETDATE") {
            let close = open
                .and_then(|o| next_sig(toks, o + 1))
                .filter(|&c| toks[c].is_punct(")"));
            let Some(close) = close else {
                return Err(
                    "the Redshift Data API stand-in cannot map this statement: GETDATE takes no arguments"
                        .into(),
                );
            };
            toks.splice(
                i..=close,
                [Tok::Raw(
                    "date_trunc('second', statement_timestamp() AT TIME ZONE 'UTC')".into(),
                )],
            );
        } else if toks[i].is_word("SYSDATE") && open.is_none() {
            toks[i] = Tok::Raw("(now() AT TIME ZONE 'UTC')".into());
        } else if toks[i].is_word("SUPER") && open.is_none() {
            toks[i] = Tok::Raw("JSONB".into());
        } else if let Some(o) = open.filter(|_| {
            [
                "OBJECT",
                "JSON_SERIALIZE",
                "JSON_SIZE",
                "DATEDIFF",
                "DATEADD",
                "CONVERT_TIMEZONE",
            ]
            .iter()
            .any(|f| toks[i].is_word(f))
        }) {
            let c = matching_paren(toks, o)
                .ok_or("the Redshift Data API stand-in cannot map this statement: unbalanced parentheses")?;
            let args = split_args(&toks[o + 1..c]);
            let arg = |k: usize| render(&args[k]);
            let mapped = if toks[i].is_word("OBJECT") {
                // r_object_function.html: keys and values alternate; a SUPER of them.
                format!("jsonb_build_object({})", render(&toks[o + 1..c]))
            } else if toks[i].is_word("JSON_SERIALIZE") {
                // JSON_SERIALIZE.html: a SUPER's JSON text; NULL gives 'null'.
                format!("COALESCE(CAST(({}) AS TEXT), 'null')", render(&toks[o + 1..c]))
            } else if toks[i].is_word("JSON_SIZE") {
                // r_json_size.html: the bytes of the serialized SUPER value.
                format!("octet_length(CAST(({}) AS TEXT))", render(&toks[o + 1..c]))
            } else if toks[i].is_word("CONVERT_TIMEZONE") {
                // CONVERT_TIMEZONE.html: (source zone, target zone, timestamp).
                if args.len() != 3 {
                    return Err(
                        "the Redshift Data API stand-in maps only CONVERT_TIMEZONE(source, target, ts)"
                            .into(),
                    );
                }
                format!("(({}) AT TIME ZONE {}) AT TIME ZONE {}", arg(2), arg(0), arg(1))
            } else if toks[i].is_word("DATEADD") {
                // r_DATEADD_function.html; only the datepart the product uses.
                if args.len() != 3 || !render(&args[0]).trim().eq_ignore_ascii_case("minute") {
                    return Err(format!(
                        "the Redshift Data API stand-in maps only DATEADD(minute, n, ts), not DATEADD({})",
                        render(&toks[o + 1..c])
                    ));
                }
                format!("(({}) + make_interval(mins => ({})))", arg(2), arg(1))
            } else {
                // r_DATEDIFF_function.html; only the datepart the product uses.
                if args.len() != 3 || !render(&args[0]).trim().eq_ignore_ascii_case("microsecond") {
                    return Err(format!(
                        "the Redshift Data API stand-in maps only DATEDIFF(microsecond, a, b), not DATEDIFF({})",
                        render(&toks[o + 1..c])
                    ));
                }
                format!(
                    "CAST(extract(epoch FROM ({}) - ({})) * 1000000 AS BIGINT)",
                    arg(2),
                    arg(1)
                )
            };
            toks.splice(i..=c, [Tok::Raw(mapped)]);
        } else if toks[i].is_word("JSON_PARSE") {
            let Some(o) = open else {
                return Err(
                    "the Redshift Data API stand-in cannot map this statement: JSON_PARSE without arguments"
                        .into(),
                );
            };
            let c = matching_paren(toks, o)
                .ok_or("the Redshift Data API stand-in cannot map this statement: unbalanced parentheses")?;
            toks.insert(c + 1, Tok::Raw("::jsonb".into()));
            toks.drain(i..o);
        }
    }
    Ok(())
}

/// Gives every character column of a CREATE TABLE the "C" collation: Redshift compares
/// and sorts text by binary UTF-8 order whatever the locale (c_collation_sequences.html),
/// so the stand-in must too, even on a PostgreSQL created with another locale.
fn byte_order_text(toks: &mut Vec<Tok>) {
    let mut i = 0;
    while i < toks.len() {
        let text_type = [
            "VARCHAR",
            "CHAR",
            "CHARACTER",
            "TEXT",
            "NVARCHAR",
            "NCHAR",
            "BPCHAR",
        ]
        .iter()
        .any(|t| toks[i].is_word(t));
        // Only as a type: after a column name, not as a name itself.
        let after_name = prev_sig(toks, i)
            .is_some_and(|j| matches!(toks[j], Tok::Word(_) | Tok::QIdent(_)) && !toks[j].is_word("AS"));
        if !(text_type && after_name) {
            i += 1;
            continue;
        }
        let mut end = i;
        if let Some(j) = next_sig(toks, end + 1).filter(|&j| toks[j].is_word("VARYING")) {
            end = j;
        }
        if let Some(j) = next_sig(toks, end + 1).filter(|&j| toks[j].is_punct("(")) {
            end = matching_paren(toks, j).unwrap_or(end);
        }
        toks.insert(end + 1, Tok::Raw(" COLLATE \"C\"".into()));
        i = end + 2;
    }
}

/// Primary keys and UNIQUE in a CREATE TABLE or ALTER TABLE ... ADD: Redshift records
/// them but does not enforce them (r_CREATE_TABLE_NEW.html: "Primary key constraints are
/// informational only"), so neither may the stand-in, or a broken dedupe would fail
/// loudly here and write silent duplicates on Redshift. UNIQUE is dropped. A primary key
/// becomes a CHECK that always holds, under the name Redshift gives it (`<table>_pkey`,
/// r_SHOW_CONSTRAINTS.html) or the one written, so that what Redshift refuses about keys
/// is refused here too: a second primary key, a key on a column that does not exist, and
/// `DROP CONSTRAINT` of a key that is not there.
fn informational_keys(toks: &mut [Tok], table: &str) {
    let blank = |toks: &mut [Tok], from: usize, to: usize| {
        for t in &mut toks[from..=to] {
            *t = Tok::Space;
        }
    };
    let mut i = 0;
    while i < toks.len() {
        let is_key =
            toks[i].is_word("PRIMARY") && next_sig(toks, i + 1).is_some_and(|j| toks[j].is_word("KEY"));
        let is_unique = toks[i].is_word("UNIQUE");
        if !(is_key || is_unique) {
            i += 1;
            continue;
        }
        let last_word = if is_key {
            next_sig(toks, i + 1).unwrap_or(i)
        } else {
            i
        };
        let mut start = i;
        let mut name = format!("{table}_pkey");
        // `CONSTRAINT name PRIMARY KEY ...`
        if let Some(n) = prev_sig(toks, i) {
            if let Some(c) = prev_sig(toks, n) {
                if toks[c].is_word("CONSTRAINT") {
                    start = c;
                    name = toks[n].text();
                }
            }
        }
        let columns = next_sig(toks, last_word + 1)
            .filter(|&open| toks[open].is_punct("("))
            .map(|open| (open, matching_paren(toks, open).unwrap_or(open)));
        match (is_key, columns) {
            // A table constraint: `, UNIQUE (a, b)` goes with its comma.
            (false, Some((_, close))) => {
                if let Some(comma) = prev_sig(toks, start).filter(|&c| toks[c].is_punct(",")) {
                    start = comma;
                }
                blank(toks, start, close);
                i = close + 1;
            }
            (false, None) => {
                blank(toks, start, last_word);
                i = last_word + 1;
            }
            (true, Some((open, close))) => {
                let cols = render(&toks[open + 1..close]);
                blank(toks, start, close);
                toks[start] = Tok::Raw(format!("CONSTRAINT {name} CHECK (ROW({cols}) IS NULL OR TRUE)"));
                i = close + 1;
            }
            (true, None) => {
                blank(toks, start, last_word);
                toks[start] = Tok::Raw(format!("CONSTRAINT {name} CHECK (TRUE)"));
                i = last_word + 1;
            }
        }
    }
}

/// The table a CREATE TABLE or ALTER TABLE names (its last name part, unquoted).
fn table_named(toks: &[Tok]) -> String {
    let Some(mut at) = toks.iter().position(|t| t.is_word("TABLE")) else {
        return String::new();
    };
    let ident = |j: usize| match &toks[j] {
        Tok::Word(w) | Tok::QIdent(w) => Some(w.clone()),
        _ => None,
    };
    for kw in ["IF", "NOT", "EXISTS"] {
        if let Some(j) = next_sig(toks, at + 1).filter(|&j| toks[j].is_word(kw)) {
            at = j;
        }
    }
    let mut name = String::new();
    let mut j = next_sig(toks, at + 1);
    while let Some(k) = j {
        let Some(part) = ident(k) else { break };
        name = part;
        match next_sig(toks, k + 1) {
            Some(dot) if toks[dot].is_punct(".") => j = next_sig(toks, dot + 1),
            _ => break,
        }
    }
    name
}

/// Drops Redshift's physical table attributes from a CREATE TABLE.
fn drop_table_attributes(toks: &mut [Tok]) {
    let blank = |toks: &mut [Tok], from: usize, to: usize| {
        for t in &mut toks[from..=to] {
            *t = Tok::Space;
        }
    };
    let mut i = 0;
    while i < toks.len() {
        let next = next_sig(toks, i + 1);
        if toks[i].is_word("DISTSTYLE") || toks[i].is_word("ENCODE") {
            let end = next.filter(|&j| matches!(toks[j], Tok::Word(_))).unwrap_or(i);
            blank(toks, i, end);
            i = end;
        } else if toks[i].is_word("COMPOUND") || toks[i].is_word("INTERLEAVED") {
            if next.is_some_and(|j| toks[j].is_word("SORTKEY")) {
                toks[i] = Tok::Space;
            }
        } else if toks[i].is_word("DISTKEY") || toks[i].is_word("SORTKEY") {
            let end = match next {
                Some(j) if toks[j].is_punct("(") => matching_paren(toks, j).unwrap_or(i),
                Some(j) if toks[j].is_word("AUTO") => j,
                _ => i,
            };
            blank(toks, i, end);
            i = end;
        }
        i += 1;
    }
}

fn parse_copy(toks: &[Tok]) -> Result<CopySpec, String> {
    let sig: Vec<&Tok> = toks.iter().filter(|t| !matches!(t, Tok::Space)).collect();
    let mut i = 1; // after COPY
    let name_part = |t: &Tok| matches!(t, Tok::Word(_) | Tok::QIdent(_));
    let mut table = String::new();
    loop {
        let t = sig.get(i).ok_or("COPY without a table")?;
        if !name_part(t) {
            return Err("COPY needs a table name".into());
        }
        table.push_str(&t.text());
        i += 1;
        if sig.get(i).is_some_and(|t| t.is_punct(".")) {
            table.push('.');
            i += 1;
        } else {
            break;
        }
    }
    let mut columns = None;
    if sig.get(i).is_some_and(|t| t.is_punct("(")) {
        let mut cols = Vec::new();
        i += 1;
        loop {
            let t = sig.get(i).ok_or("COPY column list is not closed")?;
            if !name_part(t) {
                return Err("COPY column list must hold column names".into());
            }
            cols.push(t.text());
            i += 1;
            match sig.get(i) {
                Some(t) if t.is_punct(",") => i += 1,
                Some(t) if t.is_punct(")") => {
                    i += 1;
                    break;
                }
                _ => return Err("COPY column list is not closed".into()),
            }
        }
        columns = Some(cols);
    }
    if !sig.get(i).is_some_and(|t| t.is_word("FROM")) {
        return Err("COPY ... FROM expected".into());
    }
    i += 1;
    let manifest = match sig.get(i) {
        Some(Tok::Str(s)) => unquote(s),
        _ => return Err("COPY FROM needs an 's3://...' literal".into()),
    };
    if !manifest.starts_with("s3://") {
        return Err(format!("COPY FROM {manifest}: only s3:// sources are supported"));
    }
    i += 1;
    let (mut iam, mut json_auto, mut gzip, mut is_manifest) = (false, false, false, false);
    let mut max_errors = 0u32;
    let string_arg = |i: usize| match sig.get(i) {
        Some(Tok::Str(s)) => Some(unquote(s)),
        _ => None,
    };
    while i < sig.len() {
        let t = sig[i];
        let Tok::Word(w) = t else {
            return Err(format!("unexpected {:?} in COPY options", t.text()));
        };
        match w.to_ascii_uppercase().as_str() {
            "IAM_ROLE" => {
                match sig.get(i + 1) {
                    Some(Tok::Str(s)) if unquote(s).starts_with("arn:aws:iam::") => {}
                    Some(t) if t.is_word("DEFAULT") => {}
                    _ => return Err("IAM_ROLE must be 'arn:aws:iam::...' or default".into()),
                }
                iam = true;
                i += 2;
            }
            "FORMAT" => {
                i += 1;
                if sig.get(i).is_some_and(|t| t.is_word("AS")) {
                    i += 1;
                }
                if !sig.get(i).is_some_and(|t| t.is_word("JSON")) {
                    return Err("only FORMAT [AS] JSON 'auto' is supported".into());
                }
            }
            "JSON" => {
                if sig.get(i + 1).is_some_and(|t| t.is_word("AS")) {
                    i += 1;
                }
                if string_arg(i + 1).as_deref() != Some("auto") {
                    return Err(
                        "only JSON 'auto' is supported (not 'auto ignorecase', 'noshred' or JSONPaths)"
                            .into(),
                    );
                }
                json_auto = true;
                i += 2;
            }
            "GZIP" => {
                gzip = true;
                i += 1;
            }
            "MANIFEST" => {
                is_manifest = true;
                i += 1;
            }
            "TIMEFORMAT" => {
                if sig.get(i + 1).is_some_and(|t| t.is_word("AS")) {
                    i += 1;
                }
                if string_arg(i + 1).as_deref() != Some("auto") {
                    return Err("only TIMEFORMAT 'auto' is supported".into());
                }
                i += 2;
            }
            "REGION" => {
                if sig.get(i + 1).is_some_and(|t| t.is_word("AS")) {
                    i += 1;
                }
                if string_arg(i + 1).is_none_or(|r| r.is_empty()) {
                    return Err("REGION needs a region literal".into());
                }
                i += 2;
            }
            "MAXERROR" => {
                if sig.get(i + 1).is_some_and(|t| t.is_word("AS")) {
                    i += 1;
                }
                let n = match sig.get(i + 1) {
                    Some(Tok::Num(n)) => n.parse::<u32>().ok(),
                    _ => None,
                };
                // The limit is 100000 (copy-parameters-data-load.html).
                max_errors = match n {
                    Some(n) if n <= 100_000 => n,
                    _ => return Err("MAXERROR needs a whole number from 0 to 100000".into()),
                };
                i += 2;
            }
            // Throwaway staging tables: no compression analysis, no statistics
            // (copy-parameters-data-load.html, COMPUPDATE and STATUPDATE).
            "COMPUPDATE" | "STATUPDATE" => {
                if !sig.get(i + 1).is_some_and(|t| t.is_word("OFF")) {
                    return Err(format!("only {w} OFF is supported"));
                }
                i += 2;
            }
            other => return Err(format!("COPY option {other} is not supported")),
        }
    }
    let missing: Vec<&str> = [
        (iam, "IAM_ROLE"),
        (json_auto, "FORMAT JSON 'auto'"),
        (gzip, "GZIP"),
        (is_manifest, "MANIFEST"),
    ]
    .into_iter()
    .filter(|(have, _)| !have)
    .map(|(_, name)| name)
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the stand-in only loads COPY ... IAM_ROLE .. FORMAT JSON 'auto' GZIP MANIFEST; missing {}",
            missing.join(", ")
        ));
    }
    Ok(CopySpec {
        table,
        columns,
        manifest,
        max_errors,
    })
}

/// The text of a string literal: `''` and backslash escapes read as Redshift reads them.
fn unquote(literal: &str) -> String {
    let mut out = String::new();
    let mut chars = literal[1..literal.len() - 1].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            },
            '\'' => {
                chars.next(); // the second quote of ''
                out.push('\'');
            }
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    QIdent(String),
    Str(String),
    Num(String),
    Param(String),
    Punct(String),
    /// Whitespace or a comment.
    Space,
    /// Text inserted by a rewrite.
    Raw(String),
}

impl Tok {
    fn is_word(&self, w: &str) -> bool {
        matches!(self, Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self, Tok::Punct(x) if x == p)
    }

    fn text(&self) -> String {
        match self {
            Tok::Word(s) | Tok::QIdent(s) | Tok::Str(s) | Tok::Num(s) | Tok::Punct(s) | Tok::Raw(s) => {
                s.clone()
            }
            Tok::Param(s) => format!(":{s}"),
            Tok::Space => " ".into(),
        }
    }
}

fn render(toks: &[Tok]) -> String {
    toks.iter().map(Tok::text).collect()
}

fn next_sig(toks: &[Tok], from: usize) -> Option<usize> {
    (from..toks.len()).find(|&j| !matches!(toks[j], Tok::Space))
}

fn prev_sig(toks: &[Tok], before: usize) -> Option<usize> {
    (0..before).rev().find(|&j| !matches!(toks[j], Tok::Space))
}

/// The arguments between a call's parentheses, split at its top-level commas.
fn split_args(toks: &[Tok]) -> Vec<Vec<Tok>> {
    let mut args = vec![Vec::new()];
    let mut depth = 0i32;
    for t in toks {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
        } else if t.is_punct(",") && depth == 0 {
            args.push(Vec::new());
            continue;
        }
        if let Some(last) = args.last_mut() {
            last.push(t.clone());
        }
    }
    args
}

fn matching_paren(toks: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

/// The significant tokens of `toks`, for the rules in `redshift_rules.rs`.
fn to_lex(toks: &[Tok]) -> Vec<Lex> {
    toks.iter()
        .filter_map(|t| match t {
            Tok::Space => None,
            Tok::Word(w) => Some(Lex::Word(w.clone())),
            Tok::Punct(p) => Some(Lex::Punct(p.clone())),
            _ => Some(Lex::Other),
        })
        .collect()
}

/// `sql`'s significant tokens, as the stand-in reads them.
pub fn lex(sql: &str) -> Result<Vec<Lex>, String> {
    tokenize(sql).map(|t| to_lex(&t))
}

fn tokenize(sql: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = sql.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let take_while = |i: &mut usize, f: &dyn Fn(char) -> bool| {
        let start = *i;
        while *i < b.len() && f(b[*i]) {
            *i += 1;
        }
        b[start..*i].iter().collect::<String>()
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c.is_whitespace() {
            take_while(&mut i, &|c| c.is_whitespace());
            toks.push(Tok::Space);
        } else if c == '-' && next == Some('-') {
            take_while(&mut i, &|c| c != '\n');
            toks.push(Tok::Space);
        } else if c == '/' && next == Some('*') {
            let end = (i + 2..b.len().saturating_sub(1))
                .find(|&j| b[j] == '*' && b[j + 1] == '/')
                .ok_or("unterminated /* comment")?;
            i = end + 2;
            toks.push(Tok::Space);
        } else if c == '\'' || c == '"' {
            let mut j = i + 1;
            loop {
                match b.get(j) {
                    None => return Err(format!("unterminated {c}-quoted text")),
                    Some(&q) if q == c && b.get(j + 1) == Some(&c) => j += 2,
                    Some(&q) if q == c => break,
                    // Redshift reads a backslash in a literal as an escape of the next
                    // character; the session runs with standard_conforming_strings off,
                    // so PostgreSQL reads it the same way.
                    Some('\\') if c == '\'' => {
                        if j + 1 >= b.len() {
                            return Err("unterminated '-quoted text".into());
                        }
                        j += 2;
                    }
                    Some(_) => j += 1,
                }
            }
            let text: String = b[i..=j].iter().collect();
            toks.push(if c == '\'' {
                Tok::Str(text)
            } else {
                Tok::QIdent(text)
            });
            i = j + 1;
        } else if c.is_alphabetic() || c == '_' {
            toks.push(Tok::Word(take_while(&mut i, &|c| {
                c.is_alphanumeric() || c == '_' || c == '$'
            })));
        } else if c.is_ascii_digit() {
            toks.push(Tok::Num(take_while(&mut i, &|c| {
                c.is_ascii_alphanumeric() || c == '.'
            })));
        } else if c == ':' && next == Some(':') {
            toks.push(Tok::Punct("::".into()));
            i += 2;
        } else if c == ':' && next.is_some_and(|n| n.is_alphabetic() || n == '_') {
            i += 1;
            toks.push(Tok::Param(take_while(&mut i, &|c| {
                c.is_alphanumeric() || c == '_'
            })));
        } else {
            toks.push(Tok::Punct(c.to_string()));
            i += 1;
        }
    }
    Ok(toks)
}

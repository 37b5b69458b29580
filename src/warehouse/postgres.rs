//! PostgreSQL adapter: the stand-in for Redshift in tests and local runs. COPY reads
//! the same staged manifest and gzipped parts Redshift would: each staged row is parsed
//! here as Redshift's `FORMAT JSON 'auto'` reads it (`copy_rows`) and sent as typed
//! columns through `COPY ... FROM STDIN (FORMAT binary)` straight into the staging
//! tables, so the server parses no JSON but `metadata`. The load runs the dialect's
//! statements from `sql/postgres/load.sql` in one transaction.

use std::collections::{BTreeMap, HashSet};
use std::error::Error as _;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use chrono::NaiveDateTime;
use futures_util::SinkExt;
use tokio::sync::Mutex;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, GenericClient, NoTls, Row};

use super::copy_rows as rows;
use super::statements::{split_statements, with_schema, Statements};
use super::views::{self, TrackedView, ViewChange};
use super::{
    AppliedMigration, CatalogRow, KnownPending, LoadRow, LoadStatus, Loaded, OpenReload, QuarantineReason,
    Quarantined, RefusedFile, RunRow, RunStatus, StagedRead, Warehouse, WarehouseError,
};
use crate::event_types::EventTypes;
use crate::failure::FailureClass;
use crate::migrate::{self, AppliedRow, Dialect};
use crate::read::{GzipEnd, LineReader};
use crate::stage::rows::MAX_STAGED_ROW_BYTES;
use crate::stage::{Manifest, StagedLoad};
use crate::store::{ObjectMeta, Place};

const LOAD_SQL: &str = include_str!("../../sql/postgres/load.sql");
const BOOTSTRAP_SQL: &str = include_str!("../../sql/postgres/bootstrap.sql");
const VIEWS_SQL: &str = include_str!("../../sql/postgres/views.sql");

/// The statement names this adapter runs; a unit test checks `load.sql` has them all.
pub const STATEMENTS: [&str; 44] = [
    "lock",
    "settings",
    "copies_begin",
    "copies_undo",
    "create_stage",
    "copy_files",
    "copy_events",
    "copy_rejects",
    "analyze_stage",
    "skip_recorded",
    "drop_orphans",
    "create_load_types",
    "probe_by_index",
    "classify",
    "analyze_copies",
    "insert_events",
    "probe_reset",
    "insert_rejects",
    "insert_load",
    "load_summary",
    "recent_loads",
    "recorded_versions",
    "unsettled_versions",
    "quarantine",
    "quarantined",
    "reopen_quarantine",
    "resolve_quarantine",
    "resolve_loaded",
    "record_run",
    "last_run",
    "archive_reloaded",
    "drop_reloaded",
    "close_reloads",
    "request_reload",
    "request_reload_range",
    "open_reloads",
    "close_reload_gone",
    "known_pending",
    "forget_pending",
    "remember_pending",
    "close_reload_quarantined",
    "catalog",
    "loaded_by_type",
    "event_catalog",
];

/// One connection; loads are serialised on it (and across processes by the table lock).
pub struct Postgres {
    client: Mutex<Client>,
    schema: String,
    sql: Statements,
    staging: Place,
    /// `load.dedupe_window_days`, as the `integer` the SQL takes.
    dedupe_window_days: i32,
    /// `cleaning.naive_timezone`, for the typed views' timestamp columns.
    naive_timezone: chrono_tz::Tz,
}

/// Formats a driver error with the server's message, detail, hint and SQLSTATE.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(d) = db.detail() {
            m.push_str(&format!("; detail: {d}"));
        }
        if let Some(h) = db.hint() {
            m.push_str(&format!("; hint: {h}"));
        }
        return m;
    }
    match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

/// The class of a PostgreSQL error, from its SQLSTATE class (PostgreSQL manual,
/// appendix A): a lost connection (no SQLSTATE, or class 08), a transaction rollback
/// (40: serialization failure, deadlock), insufficient resources (53), operator
/// intervention (57: statement timeout, cancel, shutdown), a system error (58) or a lock
/// not available (55P03) may pass; anything else (privileges, configuration, a bug) is
/// systemic.
fn sqlstate_class(e: &tokio_postgres::Error) -> FailureClass {
    let Some(code) = e.code() else {
        return FailureClass::Transient;
    };
    let code = code.code();
    if matches!(&code[..2], "08" | "40" | "53" | "57" | "58") || code == "55P03" {
        FailureClass::Transient
    } else {
        FailureClass::Systemic
    }
}

/// Whether a COPY error names a row as the cause: only data exceptions (SQLSTATE class
/// 22) and program limits exceeded (54, such as a row too large). PostgreSQL attaches
/// the `COPY ..., line N` context to every error raised during a COPY, timeouts and
/// cancels included, so the context alone says nothing about the row.
fn row_refused(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| matches!(&c.code()[..2], "22" | "54"))
}

fn load_row(r: &Row) -> Result<LoadRow, WarehouseError> {
    Ok(LoadRow {
        load_id: r.get(0),
        started_at: r.get(1),
        finished_at: r.get(2),
        status: super::word(LoadStatus::parse, "etl_loads.status", r.get(3))?,
        files: r.get(4),
        lines: r.get(5),
        events_loaded: r.get(6),
        duplicates: r.get(7),
        rejects: r.get(8),
        blank_lines: r.get(9),
        recovered_events: r.get(10),
        invalid_ips: r.get(11),
        conflicts: r.get(12),
        events_by_type: BTreeMap::new(),
    })
}

impl Postgres {
    /// Connects. `staging` is where the staged manifests and parts are read from.
    pub async fn connect(url: &str, schema: &str, staging: Place) -> Result<Postgres, WarehouseError> {
        let tls = super::tls::settings(url).map_err(|message| WarehouseError::Connect {
            target: describe_target(url),
            message,
        })?;
        let target = describe_target(&tls.rest);
        let connect_err = |message: String| WarehouseError::Connect {
            target: target.clone(),
            message,
        };
        let mut config: tokio_postgres::Config = tls.rest.parse().map_err(|e| connect_err(pg_message(&e)))?;
        config.ssl_mode(tls.ssl_mode());
        let client = if tls.mode == super::tls::Mode::Disable {
            let (client, conn) = config
                .connect(NoTls)
                .await
                .map_err(|e| connect_err(pg_message(&e)))?;
            spawn_connection(conn);
            client
        } else {
            let connector =
                tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config().map_err(&connect_err)?);
            let (client, conn) = config
                .connect(connector)
                .await
                .map_err(|e| connect_err(pg_message(&e)))?;
            spawn_connection(conn);
            client
        };
        check_server_version(&client, &target).await?;
        Ok(Postgres {
            client: Mutex::new(client),
            schema: schema.to_owned(),
            sql: Statements::parse(LOAD_SQL, schema),
            staging,
            dedupe_window_days: i32::try_from(super::DEFAULT_DEDUPE_WINDOW_DAYS).unwrap_or(1),
            naive_timezone: chrono_tz::Tz::UTC,
        })
    }

    /// Deduplicates against `events` within this many days of each staged event's
    /// `created_at` (`load.dedupe_window_days`; the default otherwise).
    pub fn with_dedupe_window_days(mut self, days: u32) -> Postgres {
        self.dedupe_window_days = i32::try_from(days).unwrap_or(i32::MAX);
        self
    }

    /// Typed views read a timestamp without a zone in `zone` (`cleaning.naive_timezone`;
    /// UTC otherwise), as the cleaner reads `created_at`.
    pub fn with_naive_timezone(mut self, zone: chrono_tz::Tz) -> Postgres {
        self.naive_timezone = zone;
        self
    }

    fn stmt_err(&self, name: &str, e: &tokio_postgres::Error) -> WarehouseError {
        let message = pg_message(e);
        // A missing table, or a missing schema (which LOCK TABLE reports as 3F000).
        use tokio_postgres::error::SqlState;
        let missing = [SqlState::UNDEFINED_TABLE, SqlState::INVALID_SCHEMA_NAME];
        if e.code().is_some_and(|c| missing.contains(c)) {
            return WarehouseError::NotMigrated {
                schema: self.schema.clone(),
                message,
            };
        }
        if e.code() == Some(&SqlState::QUERY_CANCELED) {
            return WarehouseError::Cancelled {
                statement: name.to_owned(),
                message,
            };
        }
        WarehouseError::Statement {
            statement: name.to_owned(),
            message,
            class: sqlstate_class(e),
        }
    }

    async fn exec(
        &self,
        c: &impl GenericClient,
        name: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, WarehouseError> {
        let t0 = std::time::Instant::now();
        let rows = c
            .execute(self.sql.get(name), params)
            .await
            .map_err(|e| self.stmt_err(name, &e))?;
        tracing::debug!(
            statement = name,
            rows,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "statement done"
        );
        Ok(rows)
    }

    async fn batch(&self, c: &impl GenericClient, name: &str) -> Result<(), WarehouseError> {
        let t0 = std::time::Instant::now();
        c.batch_execute(self.sql.get(name))
            .await
            .map_err(|e| self.stmt_err(name, &e))?;
        tracing::debug!(
            statement = name,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "statement done"
        );
        Ok(())
    }

    /// COPYs every part a manifest lists into the staging table `table`, parsing each
    /// staged row in Rust and sending typed columns in binary, without the rows of the
    /// files in `without`; checks the row count against what staging wrote. Returns the
    /// (key, ETag, size) of the `stage_files` rows left out.
    ///
    /// A task of its own reads, parses and encodes the parts ([`encode_parts`]) while
    /// this one hands the encoded chunks to the connection: reading the staged rows back
    /// runs beside the server's COPY instead of taking turns with it.
    async fn copy_manifest(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        opened: Opened,
        table: StageTable,
        staged: u64,
        without: &HashSet<String>,
    ) -> Result<Vec<(String, String, i64)>, WarehouseError> {
        // The next parts' GETs are in flight while one is copied (staged.rs).
        let (manifest, parts) = opened;
        let statement = table.statement();
        let sink = tx
            .copy_in::<_, Bytes>(self.sql.get(statement))
            .await
            .map_err(|e| self.stmt_err(statement, &e))?;
        tokio::pin!(sink);
        let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel(COPY_CHUNKS_AHEAD);
        let mut encoder = AbortOnDrop(tokio::spawn(encode_parts(
            parts,
            table,
            without.clone(),
            chunks_tx,
        )));
        while let Some(chunk) = chunks.recv().await {
            if let Err(e) = sink.as_mut().send(chunk?).await {
                return Err(self.copy_err(statement, &manifest, without, &e).await);
            }
        }
        let copied = match sink.as_mut().finish().await {
            Ok(n) => n,
            Err(e) => return Err(self.copy_err(statement, &manifest, without, &e).await),
        };
        let left_out = (&mut encoder.0).await.unwrap_or_default();
        let skipped: u64 = left_out.rows;
        tracing::debug!(table = table.name(), rows = copied, skipped, "copied");
        if copied + skipped != staged {
            return Err(WarehouseError::CountMismatch {
                table: table.name(),
                staged,
                loaded: copied + skipped,
            });
        }
        Ok(left_out.files)
    }
}

/// What [`encode_parts`] left out: how many rows, and the `stage_files` rows'
/// (key, ETag, size).
#[derive(Debug, Default)]
struct LeftOut {
    rows: u64,
    files: Vec<(String, String, i64)>,
}

/// Encoded rows are handed to the connection in chunks of at least this size. Each
/// hand-off is a wake-up of the connection's task: tokio-postgres' own binary writer
/// hands off every 4 KiB, and those wake-ups cost more than the encoding.
const COPY_CHUNK_BYTES: usize = 256 * 1024;
/// Encoded chunks waiting for the connection: memory is this many chunks, at most.
const COPY_CHUNKS_AHEAD: usize = 4;
/// The header of `COPY ... (FORMAT binary)` data: signature, flags, extension length
/// (PostgreSQL's documentation, "COPY", "Binary Format").
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Aborts a task when dropped: the encoder stops reading parts when the COPY fails.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads every part in manifest order, parses each staged row as its table's row and
/// sends the rows encoded in COPY's binary format, header and trailer included, in
/// chunks of about [`COPY_CHUNK_BYTES`]. The first error (a part that cannot be read,
/// a row that is not a row of its table) is sent in place of the rest, and ends the
/// task; so does a receiver that went away.
async fn encode_parts(
    mut parts: super::staged::Parts,
    table: StageTable,
    without: HashSet<String>,
    out: tokio::sync::mpsc::Sender<Result<Bytes, WarehouseError>>,
) -> LeftOut {
    let mut left_out = LeftOut::default();
    let mut buf = BytesMut::with_capacity(COPY_CHUNK_BYTES + 64 * 1024);
    buf.put_slice(COPY_SIGNATURE);
    buf.put_i32(0);
    buf.put_i32(0);
    let (statement, types) = (table.statement(), table.types());
    let mut row_no = 0u64;
    while let Some(next) = parts.next().await {
        let (url, part) = match next {
            Ok(p) => p,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return left_out;
            }
        };
        let bad = |e: std::io::Error| WarehouseError::StagedData {
            url: url.clone(),
            message: e.to_string(),
        };
        // Staged rows are longer than the source lines they came from: read them with
        // the staging limit, and never load a row cut short.
        let mut lines = match LineReader::with_limit(part, &url, MAX_STAGED_ROW_BYTES).await {
            Ok(l) => l,
            Err(e) => {
                let _ = out.send(Err(bad(e))).await;
                return left_out;
            }
        };
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    let _ = out.send(Err(bad(e))).await;
                    return left_out;
                }
            };
            if line.too_long {
                let e = WarehouseError::StagedData {
                    url: url.clone(),
                    message: format!(
                        "row {} is longer than {MAX_STAGED_ROW_BYTES} bytes, the most staging writes",
                        line.no
                    ),
                };
                let _ = out.send(Err(e)).await;
                return left_out;
            }
            let encoded = encode_staged(table, line.bytes, types, &without, &mut buf, &mut left_out);
            match encoded {
                Ok(true) => row_no += 1,
                Ok(false) => left_out.rows += 1,
                Err(e) => {
                    let _ = out
                        .send(Err(refused(statement, line.bytes, row_no + 1, &url, &e)))
                        .await;
                    return left_out;
                }
            }
            if buf.len() >= COPY_CHUNK_BYTES && out.send(Ok(buf.split().freeze())).await.is_err() {
                return left_out;
            }
        }
        if let Some(end) = lines
            .gzip_end()
            .filter(|e| !matches!(e, GzipEnd::Verified { .. }))
        {
            let e = WarehouseError::StagedData {
                url: url.clone(),
                message: format!("the staged part is damaged: {end:?}"),
            };
            let _ = out.send(Err(e)).await;
            return left_out;
        }
    }
    buf.put_i16(-1);
    let _ = out.send(Ok(buf.freeze())).await;
    left_out
}

/// Parses one staged row as `table`'s row and appends it in COPY's binary format;
/// `Ok(false)` when its file is in `without` (then a `stage_files` row is noted in
/// `left_out`, and nothing is appended).
fn encode_staged(
    table: StageTable,
    line: &[u8],
    types: &[Type],
    without: &HashSet<String>,
    buf: &mut BytesMut,
    left_out: &mut LeftOut,
) -> Result<bool, Box<dyn std::error::Error + Sync + Send>> {
    let left = |key: Option<&str>| key.is_some_and(|k| without.contains(k));
    match table {
        StageTable::Files => {
            let r = rows::parse::<rows::File>(line)?;
            if left(r.source_key()) {
                let (etag, size) = r.version();
                left_out.files.push((
                    r.source_key().unwrap_or_default().to_owned(),
                    etag.unwrap_or_default().to_owned(),
                    size.unwrap_or(0),
                ));
                return Ok(false);
            }
            encode_row(buf, &r.columns(), types)?;
        }
        StageTable::Events => {
            let r = rows::parse::<rows::Event>(line)?;
            if left(r.source_key()) {
                return Ok(false);
            }
            encode_row(buf, &r.columns(), types)?;
        }
        StageTable::Rejects => {
            let r = rows::parse::<rows::Reject>(line)?;
            if left(r.source_key()) {
                return Ok(false);
            }
            encode_row(buf, &r.columns(), types)?;
        }
    }
    Ok(true)
}

/// Appends one row in COPY's binary format: the field count, then each field's length
/// (-1 for NULL) and its value in the type's binary form, as tokio-postgres' binary
/// writer encodes them.
fn encode_row(
    buf: &mut BytesMut,
    values: &[&(dyn ToSql + Sync)],
    types: &[Type],
) -> Result<(), Box<dyn std::error::Error + Sync + Send>> {
    let fields = i16::try_from(values.len())?;
    buf.put_i16(fields);
    for (value, ty) in values.iter().zip(types) {
        let at = buf.len();
        buf.put_i32(0);
        let len = match value.to_sql_checked(ty, buf)? {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(buf.len() - at - 4)?,
        };
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// The staging tables COPY fills, each from its own manifest.
#[derive(Debug, Clone, Copy)]
enum StageTable {
    Files,
    Events,
    Rejects,
}

impl StageTable {
    fn name(self) -> &'static str {
        match self {
            StageTable::Files => "stage_files",
            StageTable::Events => "stage_events",
            StageTable::Rejects => "stage_rejects",
        }
    }

    fn statement(self) -> &'static str {
        match self {
            StageTable::Files => "copy_files",
            StageTable::Events => "copy_events",
            StageTable::Rejects => "copy_rejects",
        }
    }

    /// The column types, in the order of the statement's column list.
    fn types(self) -> &'static [Type] {
        match self {
            StageTable::Files => &[
                Type::VARCHAR,
                Type::VARCHAR,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
            ],
            StageTable::Events => &[
                Type::VARCHAR,
                Type::TIMESTAMP,
                Type::VARCHAR,
                Type::VARCHAR,
                Type::VARCHAR,
                Type::JSONB,
                Type::VARCHAR,
                Type::VARCHAR,
                Type::INT8,
            ],
            StageTable::Rejects => &[Type::VARCHAR, Type::INT8, Type::VARCHAR, Type::VARCHAR],
        }
    }
}

/// A staged row refused before it reached the server (it does not parse as the table's
/// row): attributed to its source file when the row names one, like a row the server
/// refuses, so that the pipeline quarantines that file and loads the others.
fn refused(statement: &str, line: &[u8], row: u64, url: &str, e: &dyn std::fmt::Display) -> WarehouseError {
    match rows::source_key(line) {
        Some(source_key) => WarehouseError::Refused {
            statement: statement.to_owned(),
            files: vec![RefusedFile {
                source_key,
                message: format!("{e} (staged row {row})"),
            }],
        },
        None => WarehouseError::StagedData {
            url: url.to_owned(),
            message: format!("staged row {row} is not a row of its table: {e}"),
        },
    }
}

impl Postgres {
    /// The views `migrate` created before (`event_type_views`).
    async fn tracked_views(
        &self,
        c: &impl GenericClient,
        sql: &Statements,
    ) -> Result<Vec<TrackedView>, WarehouseError> {
        Ok(c.query(sql.get("tracked_views"), &[])
            .await
            .map_err(|e| self.stmt_err("tracked_views", &e))?
            .iter()
            .map(|r| TrackedView {
                view_name: r.get(0),
                event_name: r.get(1),
                checksum: r.get(2),
            })
            .collect())
    }
}

/// The oldest server the dialect's SQL runs on: `sql/postgres/load.sql` uses MERGE.
const MIN_SERVER_VERSION_NUM: u32 = 150_000;
const MIN_SERVER_VERSION: &str = "15";

/// Refuses a server older than [`MIN_SERVER_VERSION`] on connect, rather than failing
/// every load at its MERGE. A simple query, which any PostgreSQL answers.
async fn check_server_version(client: &Client, target: &str) -> Result<(), WarehouseError> {
    let messages = client
        .simple_query("SELECT current_setting('server_version_num'), current_setting('server_version')")
        .await
        .map_err(|e| WarehouseError::Connect {
            target: target.to_owned(),
            message: format!("cannot read the server version: {}", pg_message(&e)),
        })?;
    let row = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let num = row.and_then(|r| r.get(0)).unwrap_or_default();
    let text = row.and_then(|r| r.get(1)).unwrap_or(num);
    match num.parse::<u32>() {
        Ok(n) if n >= MIN_SERVER_VERSION_NUM => Ok(()),
        _ => Err(WarehouseError::UnsupportedVersion {
            target: target.to_owned(),
            found: if text.is_empty() {
                "(unknown version)".to_owned()
            } else {
                text.to_owned()
            },
            needed: MIN_SERVER_VERSION,
        }),
    }
}

impl Postgres {
    /// A failed COPY: when the server refuses a row's data ([`row_refused`]) and names the
    /// row (`COPY stage_events, line N`), the source file it came from, so that the
    /// pipeline can quarantine that file and load the others. Any other failure is the
    /// statement's, classed by its SQLSTATE.
    async fn copy_err(
        &self,
        statement: &str,
        manifest: &Manifest,
        without: &HashSet<String>,
        e: &tokio_postgres::Error,
    ) -> WarehouseError {
        let line = Some(e)
            .filter(|e| row_refused(e))
            .and_then(|e| e.as_db_error())
            .and_then(|db| db.where_())
            .and_then(|w| w.split(", line ").nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok());
        let err = self.stmt_err(statement, e);
        let Some(line) = line else { return err };
        let parts: Vec<&str> = manifest.entries.iter().map(|e| e.url.as_str()).collect();
        let rows = std::collections::BTreeSet::from([line]);
        match super::staged_row_sources(&self.staging, &parts, &rows, without)
            .await
            .remove(&line)
        {
            Some(source_key) => WarehouseError::Refused {
                statement: statement.into(),
                files: vec![RefusedFile {
                    source_key,
                    message: format!("{} (staged row {line})", pg_message(e)),
                }],
            },
            None => err,
        }
    }
}

/// Drives a connection in the background, logging how it ended.
fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!(error = %pg_message(&e), "PostgreSQL connection closed");
        }
    });
}

/// `host:port/db` of a URL, without credentials, for messages.
fn describe_target(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}/{}", c.get_dbname().unwrap_or("(default db)"))
        }
        Err(_) => "(unparseable URL)".into(),
    }
}

impl Postgres {
    /// The applied migrations, from `schema_migrations`: what `migrate` compares the
    /// shipped files with, and what `status` reports.
    async fn read_applied(&self, c: &impl GenericClient) -> Result<Vec<AppliedRow>, WarehouseError> {
        let rows = c
            .query(
                &with_schema(
                    "SELECT version, name, checksum FROM {schema}.schema_migrations ORDER BY version",
                    &self.schema,
                ),
                &[],
            )
            .await
            .map_err(|e| self.stmt_err("read schema_migrations", &e))?;
        Ok(rows
            .iter()
            .map(|r| AppliedRow {
                version: r.get(0),
                name: r.get(1),
                checksum: r.get(2),
            })
            .collect())
    }

    /// [`Warehouse::migrate`] with these migration files in place of the shipped ones
    /// (tests exercise migration forms the shipped files do not use).
    pub async fn migrate_files(
        &self,
        files: &[(&'static str, &'static str)],
    ) -> Result<Vec<AppliedMigration>, WarehouseError> {
        let all = migrate::migrations(Dialect::Postgres.dir(), files)?;
        let mut client = self.client.lock().await;
        // Session lock: two `migrate` runs never interleave; released on every path below.
        let key = format!("events-etl:migrate:{}", self.schema);
        client
            .execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
            .await
            .map_err(|e| self.stmt_err("advisory lock", &e))?;
        let result: Result<Vec<AppliedMigration>, WarehouseError> = async {
            client
                .batch_execute(&with_schema(BOOTSTRAP_SQL, &self.schema))
                .await
                .map_err(|e| self.stmt_err("bootstrap", &e))?;
            let applied = self.read_applied(&*client).await?;
            let mut done = Vec::new();
            for m in migrate::pending(&all, &applied)? {
                let label = format!("migration {:04}_{}", m.version, m.name);
                let sql = with_schema(m.sql, &self.schema);
                if !m.transaction {
                    // One statement at a time: a multi-statement query string would run
                    // as one implicit transaction.
                    for stmt in split_statements(&sql) {
                        client
                            .batch_execute(&stmt)
                            .await
                            .map_err(|e| self.stmt_err(&label, &e))?;
                    }
                }
                let tx = client
                    .transaction()
                    .await
                    .map_err(|e| self.stmt_err(&label, &e))?;
                if m.transaction {
                    tx.batch_execute(&sql)
                        .await
                        .map_err(|e| self.stmt_err(&label, &e))?;
                }
                tx.execute(
                    &with_schema(
                        "INSERT INTO {schema}.schema_migrations (version, name, checksum, applied_at) \
                         VALUES ($1, $2, $3, now() AT TIME ZONE 'UTC')",
                        &self.schema,
                    ),
                    &[&m.version, &m.name, &m.checksum],
                )
                .await
                .map_err(|e| self.stmt_err(&label, &e))?;
                tx.commit().await.map_err(|e| self.stmt_err(&label, &e))?;
                done.push(AppliedMigration {
                    version: m.version,
                    name: m.name.clone(),
                });
            }
            Ok(done)
        }
        .await;
        let unlock = client
            .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
            .await;
        let done = result?;
        unlock.map_err(|e| self.stmt_err("advisory unlock", &e))?;
        Ok(done)
    }
}

impl Postgres {
    /// The three manifests of a staged load, read and checked, with their parts being
    /// opened.
    async fn open_staged(&self, staged: &StagedLoad) -> Result<[Opened; 3], WarehouseError> {
        let store = &self.staging.store;
        let (files, events, rejects) = tokio::try_join!(
            super::staged::open(store, &staged.files_manifest, &staged.files_listed),
            super::staged::open(store, &staged.events_manifest, &staged.events_listed),
            super::staged::open(store, &staged.rejects_manifest, &staged.rejects_listed),
        )?;
        Ok([files, events, rejects])
    }

    /// The load's COPYs into the staging tables. A row the server refuses fails its
    /// COPY: the COPYs are rolled back to a savepoint and run again from the staged parts
    /// without that file's rows, in the same transaction, until they succeed; each pass
    /// sets one file aside. Returns the refused files, and the (key, ETag, size) of the
    /// file rows left out.
    async fn copy_refusing(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        staged: &StagedLoad,
        mut opened: Option<[Opened; 3]>,
    ) -> Result<(Vec<RefusedFile>, Vec<(String, String, i64)>), WarehouseError> {
        let mut refused: Vec<RefusedFile> = Vec::new();
        let mut without: HashSet<String> = HashSet::new();
        loop {
            self.batch(tx, "copies_begin").await?;
            let parts = match opened.take() {
                Some(p) => p,
                None => self.open_staged(staged).await?,
            };
            match self.copy_all(tx, parts, staged, &without).await {
                Ok(left_out) => return Ok((refused, left_out)),
                Err(WarehouseError::Refused { statement, files })
                    if files.iter().all(|f| !without.contains(&f.source_key)) =>
                {
                    self.batch(tx, "copies_undo").await?;
                    tracing::warn!(statement, files = ?files.iter().map(|f| &f.source_key).collect::<Vec<_>>(), "the server refused a staged row; copying again without its file");
                    without.extend(files.iter().map(|f| f.source_key.clone()));
                    refused.extend(files);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The load's three COPYs, leaving out the rows of the files in `without`; returns
    /// the (key, ETag, size) of the file rows left out.
    async fn copy_all(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        [files, events, rejects]: [Opened; 3],
        staged: &StagedLoad,
        without: &HashSet<String>,
    ) -> Result<Vec<(String, String, i64)>, WarehouseError> {
        let left_out = self
            .copy_manifest(tx, files, StageTable::Files, staged.files_staged, without)
            .await?;
        self.copy_manifest(tx, events, StageTable::Events, staged.events_staged, without)
            .await?;
        self.copy_manifest(tx, rejects, StageTable::Rejects, staged.rejects_staged, without)
            .await?;
        Ok(left_out)
    }

    /// Records these versions as quarantined inside `tx` (which holds the loaders' lock).
    async fn quarantine_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        files: &[Quarantined],
    ) -> Result<(), WarehouseError> {
        for q in files {
            self.exec(
                tx,
                "quarantine",
                &[
                    &q.source_key,
                    &q.etag,
                    &q.size_bytes,
                    &q.reason.as_str(),
                    &q.detail,
                    &q.quarantined_at,
                ],
            )
            .await?;
            self.exec(
                tx,
                "reopen_quarantine",
                &[
                    &q.source_key,
                    &q.etag,
                    &q.reason.as_str(),
                    &q.detail,
                    &q.quarantined_at,
                ],
            )
            .await?;
            self.exec(tx, "close_reload_quarantined", &[&q.source_key, &q.etag])
                .await?;
        }
        Ok(())
    }
}

impl Postgres {
    /// Runs one statement in a transaction of its own under the loaders' lock: a load
    /// recording the same versions meanwhile either commits first or waits.
    async fn under_lock(&self, name: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, WarehouseError> {
        let mut client = self.client.lock().await;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.stmt_err("begin", &e))?;
        self.batch(&tx, "lock").await?;
        let n = self.exec(&tx, name, params).await?;
        tx.commit().await.map_err(|e| self.stmt_err("commit", &e))?;
        Ok(n)
    }
}

/// A manifest read and checked, and its parts being opened.
type Opened = (Manifest, super::staged::Parts);

#[async_trait]
impl Warehouse for Postgres {
    async fn migrate(&self) -> Result<Vec<AppliedMigration>, WarehouseError> {
        self.migrate_files(Dialect::Postgres.files()).await
    }

    async fn recorded_versions(&self, keys: &[String]) -> Result<HashSet<(String, String)>, WarehouseError> {
        let client = self.client.lock().await;
        let rows = client
            .query(self.sql.get("recorded_versions"), &[&keys])
            .await
            .map_err(|e| self.stmt_err("recorded_versions", &e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn unsettled_versions(&self, versions: &[(&str, &str)]) -> Result<Vec<usize>, WarehouseError> {
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = versions.iter().map(|(k, _)| *k).collect();
        let etags: Vec<&str> = versions.iter().map(|(_, e)| *e).collect();
        let client = self.client.lock().await;
        let rows = client
            .query(self.sql.get("unsettled_versions"), &[&keys, &etags])
            .await
            .map_err(|e| self.stmt_err("unsettled_versions", &e))?;
        Ok(rows
            .iter()
            .filter_map(|r| usize::try_from(r.get::<_, i64>(0)).ok())
            .collect())
    }

    async fn load_reporting(
        &self,
        staged: &StagedLoad,
        started_at: NaiveDateTime,
        mut read: StagedRead,
    ) -> Result<Loaded, WarehouseError> {
        // The three manifests and their first parts are opened at once, before the
        // transaction: one round trip to the store, and none under the lock. The parts
        // are known from what the load staged; each manifest read must list them.
        let mut opened = Some(self.open_staged(staged).await?);
        let mut client = self.client.lock().await;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.stmt_err("begin", &e))?;
        self.batch(&tx, "lock").await?;
        self.batch(&tx, "settings").await?;
        self.batch(&tx, "create_stage").await?;
        let (refused, left_out) = self.copy_refusing(&tx, staged, opened.take()).await?;
        // Every part has been read whole into the staging tables.
        read.done();
        self.batch(&tx, "analyze_stage").await?;
        let skipped = self.exec(&tx, "skip_recorded", &[]).await?;
        if skipped > 0 {
            tracing::warn!(files = skipped, load_id = %staged.load_id, "files recorded by a concurrent load were skipped");
            self.batch(&tx, "drop_orphans").await?;
        }
        let id = &staged.load_id;
        // Reloaded versions: the previous ledger row to history, the request closed.
        self.exec(&tx, "archive_reloaded", &[id]).await?;
        self.exec(&tx, "drop_reloaded", &[]).await?;
        self.exec(&tx, "close_reloads", &[id]).await?;
        self.batch(&tx, "create_load_types").await?;
        self.batch(&tx, "probe_by_index").await?;
        let bucket_us = super::window_bucket_us(self.dedupe_window_days.unsigned_abs());
        // A load without events has no range; any one does (nothing is probed).
        let (low, high) = staged.created_range.unwrap_or_default();
        self.exec(
            &tx,
            "classify",
            &[&self.dedupe_window_days, &bucket_us, &low, &high],
        )
        .await?;
        self.batch(&tx, "analyze_copies").await?;
        self.batch(&tx, "probe_reset").await?;
        self.exec(&tx, "insert_events", &[id]).await?;
        self.exec(&tx, "insert_rejects", &[id]).await?;
        self.exec(&tx, "insert_load", &[id, &started_at]).await?;
        self.exec(&tx, "resolve_loaded", &[id]).await?;
        // The event catalog, in the load's transaction.
        self.exec(&tx, "catalog", &[]).await?;
        let by_type = tx
            .query(self.sql.get("loaded_by_type"), &[])
            .await
            .map_err(|e| self.stmt_err("loaded_by_type", &e))?;
        // The staging tables go with the transaction (ON COMMIT DROP).
        let row = tx
            .query_opt(self.sql.get("load_summary"), &[id])
            .await
            .map_err(|e| self.stmt_err("load_summary", &e))?;
        // The refused files are quarantined in the load's transaction: a rerun never
        // finds them pending once the rest has committed.
        let at = chrono::Utc::now().naive_utc();
        let refused: Vec<Quarantined> = refused
            .iter()
            .filter_map(|r| {
                let (key, etag, size) = left_out.iter().find(|(k, _, _)| *k == r.source_key)?;
                Some(Quarantined::new(
                    key,
                    etag,
                    u64::try_from(*size).unwrap_or(0),
                    super::QuarantineReason::Refused,
                    &format!("copy: {}", r.message),
                    at,
                ))
            })
            .collect();
        self.quarantine_in(&tx, &refused).await?;
        tx.commit().await.map_err(|e| self.stmt_err("commit", &e))?;
        let row = row.as_ref().map(load_row).transpose()?;
        Ok(Loaded {
            row: row.map(|r| LoadRow {
                events_by_type: by_type.iter().map(|t| (t.get(0), t.get(1))).collect(),
                ..r
            }),
            refused,
        })
    }

    async fn quarantine(&self, files: &[Quarantined]) -> Result<(), WarehouseError> {
        if files.is_empty() {
            return Ok(());
        }
        let mut client = self.client.lock().await;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.stmt_err("begin", &e))?;
        self.batch(&tx, "lock").await?;
        self.quarantine_in(&tx, files).await?;
        tx.commit().await.map_err(|e| self.stmt_err("commit", &e))
    }

    async fn request_reload(&self, key: &str, etag: &str, at: NaiveDateTime) -> Result<u64, WarehouseError> {
        let (key, etag) = (key.to_owned(), etag.to_owned());
        self.under_lock("request_reload", &[&key, &etag, &at]).await
    }

    async fn request_reload_range(
        &self,
        low: &str,
        high: &str,
        at: NaiveDateTime,
    ) -> Result<u64, WarehouseError> {
        let (low, high) = (low.to_owned(), high.to_owned());
        self.under_lock("request_reload_range", &[&low, &high, &at]).await
    }

    async fn open_reloads(&self, limit: i64) -> Result<Vec<OpenReload>, WarehouseError> {
        let client = self.client.lock().await;
        let rows = client
            .query(self.sql.get("open_reloads"), &[&limit])
            .await
            .map_err(|e| self.stmt_err("open_reloads", &e))?;
        Ok(rows
            .iter()
            .map(|r| OpenReload {
                source_key: r.get(0),
                etag: r.get(1),
                requested_at: r.get(2),
            })
            .collect())
    }

    async fn known_pending(&self, low: &str, high: &str) -> Result<Vec<KnownPending>, WarehouseError> {
        let client = self.client.lock().await;
        let (low, high) = (low.to_owned(), high.to_owned());
        let rows = client
            .query(self.sql.get("known_pending"), &[&low, &high])
            .await
            .map_err(|e| self.stmt_err("known_pending", &e))?;
        Ok(rows
            .iter()
            .map(|r| KnownPending {
                source_key: r.get(0),
                etag: r.get(1),
                size_bytes: r.get(2),
                listed_at: r.get(4),
            })
            .collect())
    }

    async fn remember_pending(
        &self,
        low: &str,
        high: &str,
        files: &[ObjectMeta],
        at: NaiveDateTime,
    ) -> Result<(), WarehouseError> {
        let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
        let etags: Vec<&str> = files.iter().map(|f| f.etag.as_str()).collect();
        let sizes: Vec<i64> = files
            .iter()
            .map(|f| i64::try_from(f.size).unwrap_or(i64::MAX))
            .collect();
        let modified: Vec<Option<NaiveDateTime>> = files
            .iter()
            .map(|f| f.last_modified.map(|t| t.naive_utc()))
            .collect();
        let listed: Vec<NaiveDateTime> = vec![at; files.len()];
        let (low, high) = (low.to_owned(), high.to_owned());
        let mut client = self.client.lock().await;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.stmt_err("begin", &e))?;
        self.exec(&tx, "forget_pending", &[&low, &high]).await?;
        if !files.is_empty() {
            self.exec(
                &tx,
                "remember_pending",
                &[&keys, &etags, &sizes, &modified, &listed],
            )
            .await?;
        }
        tx.commit().await.map_err(|e| self.stmt_err("commit", &e))
    }

    async fn close_reloads_gone(&self, versions: &[(String, String)]) -> Result<(), WarehouseError> {
        let client = self.client.lock().await;
        for (key, etag) in versions {
            self.exec(&*client, "close_reload_gone", &[key, etag]).await?;
        }
        Ok(())
    }

    async fn resolve_quarantine(
        &self,
        key: &str,
        by: &str,
        note: &str,
        at: NaiveDateTime,
    ) -> Result<u64, WarehouseError> {
        let mut client = self.client.lock().await;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.stmt_err("begin", &e))?;
        self.batch(&tx, "lock").await?;
        let (key, by, note) = (key.to_owned(), by.to_owned(), note.to_owned());
        let n = self
            .exec(&tx, "resolve_quarantine", &[&key, &at, &by, &note])
            .await?;
        tx.commit().await.map_err(|e| self.stmt_err("commit", &e))?;
        Ok(n)
    }

    async fn quarantined(
        &self,
        limit: i64,
        include_resolved: bool,
    ) -> Result<Vec<Quarantined>, WarehouseError> {
        let client = self.client.lock().await;
        let rows = client
            .query(self.sql.get("quarantined"), &[&limit, &include_resolved])
            .await
            .map_err(|e| self.stmt_err("quarantined", &e))?;
        rows.iter()
            .map(|r| {
                Ok(Quarantined {
                    source_key: r.get(0),
                    etag: r.get(1),
                    size_bytes: r.get(2),
                    reason: super::word(QuarantineReason::parse, "etl_quarantine.reason", r.get(3))?,
                    detail: r.get(4),
                    quarantined_at: r.get(5),
                    resolved_at: r.get(6),
                    resolved_by: r.get(7),
                    resolution: r.get(8),
                })
            })
            .collect()
    }

    async fn applied_migrations(&self) -> Result<Vec<AppliedRow>, WarehouseError> {
        let client = self.client.lock().await;
        self.read_applied(&*client).await
    }

    async fn record_run(&self, r: &RunRow) -> Result<(), WarehouseError> {
        let client = self.client.lock().await;
        self.exec(
            &*client,
            "record_run",
            &[
                &r.run_id,
                &r.started_at,
                &r.finished_at,
                &r.status.as_str(),
                &r.error,
                &r.loads,
                &r.files,
                &r.events_loaded,
                &r.rejects,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn last_run(&self, status: RunStatus) -> Result<Option<RunRow>, WarehouseError> {
        let client = self.client.lock().await;
        let row = client
            .query_opt(self.sql.get("last_run"), &[&status.as_str()])
            .await
            .map_err(|e| self.stmt_err("last_run", &e))?;
        Ok(row.map(|r| RunRow {
            run_id: r.get(0),
            started_at: r.get(1),
            finished_at: r.get(2),
            status,
            error: r.get(4),
            loads: r.get(5),
            files: r.get(6),
            events_loaded: r.get(7),
            rejects: r.get(8),
        }))
    }

    async fn sync_views(&self, types: &EventTypes) -> Result<Vec<ViewChange>, WarehouseError> {
        let sql = Statements::parse(VIEWS_SQL, &self.schema);
        let mut client = self.client.lock().await;
        let at = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
        let changes = views::plan(
            &sql,
            types,
            self.naive_timezone,
            &self.tracked_views(&*client, &sql).await?,
            &at,
        );
        let mut done = Vec::new();
        for change in changes {
            let label = format!("view {}", change.view_name);
            let applied: Result<(), WarehouseError> = async {
                let tx = client
                    .transaction()
                    .await
                    .map_err(|e| self.stmt_err(&label, &e))?;
                for stmt in &change.statements {
                    tx.batch_execute(stmt)
                        .await
                        .map_err(|e| self.stmt_err(&label, &e))?;
                }
                tx.commit().await.map_err(|e| self.stmt_err(&label, &e))
            }
            .await;
            if let Err(e) = applied {
                // Another `migrate` may have made this very change meanwhile.
                let now = self.tracked_views(&*client, &sql).await?;
                if views::still_needed(&sql, types, self.naive_timezone, &now, &change) {
                    return Err(views::explain_failure(&label, e));
                }
                continue;
            }
            done.push(change);
        }
        Ok(done)
    }

    async fn event_catalog(&self) -> Result<Vec<CatalogRow>, WarehouseError> {
        let client = self.client.lock().await;
        let rows = client
            .query(self.sql.get("event_catalog"), &[])
            .await
            .map_err(|e| self.stmt_err("event_catalog", &e))?;
        Ok(rows
            .iter()
            .map(|r| CatalogRow {
                event_name: r.get(0),
                first_seen: r.get(1),
                last_seen: r.get(2),
                events: r.get(3),
            })
            .collect())
    }

    async fn recent_loads(&self, limit: i64) -> Result<Vec<LoadRow>, WarehouseError> {
        let client = self.client.lock().await;
        let rows = client
            .query(self.sql.get("recent_loads"), &[&limit])
            .await
            .map_err(|e| self.stmt_err("recent_loads", &e))?;
        rows.iter().map(load_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_sql_defines_every_statement_used() {
        Statements::parse(LOAD_SQL, "s").assert_defines_exactly(&STATEMENTS, "sql/postgres/load.sql");
    }
}

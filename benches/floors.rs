//! `cargo bench --bench floors [-- [--pairs N] [--only clean,run,s3,history,listing,scale] [--logs DIR]]`: the
//! release binary against floors, the measurements of issues 8 and 21, each printed as a
//! ratio next to its goal with PASS or MISS.
//!
//! Each comparison alternates the binary with its floor on the same generated data (A,
//! floor, A, floor, ...: `N` pairs, 3 by default), so a change in the machine's load hits
//! both sides; the ratio is the median of the per-pair ratios, the times the medians of
//! each side. Only the command itself is timed: schemas, migrations, history loads and
//! database copies are set up before it, untimed, and a `CHECKPOINT` runs before each
//! timed command that writes to PostgreSQL.
//!
//! 1. `events-etl clean` on 200k events (~45 MB, 100 files) vs `gzip -1 -c` of the same
//!    files into one file: goal gzip time / clean time >= 2.
//! 2. `events-etl run` of the same files, from a local directory into a freshly migrated
//!    schema, vs `psql \copy` of the rows that run loads (already clean, as CSV) into a
//!    table with a primary key: goal run / copy <= 1.5.
//! 3. `events-etl run` of 400 files of 50 events from the in-process S3 server (source and
//!    staging), through a proxy adding 30 ms to every request vs through one adding none:
//!    goal with / without <= 1.3.
//! 4. `events-etl run` of 20k new events into a database already holding 200k events (10x,
//!    loaded by the binary from 20 older days, then vacuumed and analysed) vs into an empty
//!    one; each side runs in a fresh copy of its template database: goal <= 1.25.
//! 5. The peak RSS (VmHWM, polled from /proc) of the runs of 2: goal < 64 MiB.
//! 6. Discovery's listing of 50,000 objects in 28 day partitions on the in-process S3
//!    server through a proxy adding 30 ms to every request: by day partition vs one
//!    sequential pagination of the prefix: goal by day / sequential <= 0.3. Then (9) a
//!    no-op run of the binary over the same objects (settled by an untimed first run)
//!    through the same proxy, against that sequential pagination: goal <= 0.3.
//! 7. (`scale`) The peak RSS of the first run over 200,000 one-event files in 28 day
//!    partitions (local store): goal < 64 MiB.
//! 8. (`scale`) With 300,000 more files loaded, a no-op run over the 500,000 vs `find
//!    -printf '%s %T@ %p\n'` of the same tree: goal no-op / find <= 2, and its peak RSS
//!    < 64 MiB. Not in the default set (it writes and loads half a million files);
//!    `--only scale` runs it.
//!
//! Data is generated from fixed seeds: ~1% of lines are rejected (invalid `created_at`),
//! ~1% repeat the previous event's id (duplicates, the first wins). The binary gets the
//! default settings; `EVENTS_ETL__<SECTION>__<KEY>` variables in the environment reach it,
//! e.g. to try a setting. Exits 0 whatever the ratios (a MISS is a measurement), 1 when
//! something failed to run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use chrono::NaiveDate;

use support::latency_proxy::LatencyProxy;

/// Any run of a command longer than this is a hang: the bench fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(900);
/// The S3 latency each request gets in comparison 3.
const S3_LATENCY: Duration = Duration::from_millis(30);
const BUCKET: &str = "floors";

// ---------------------------------------------------------------------------------------
// Generated data
// ---------------------------------------------------------------------------------------

/// splitmix64: deterministic from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: [&str; 6] = [
    "page_visit",
    "message_saved",
    "meeting_scheduled",
    "meeting_invite",
    "feature_used",
    "search",
];

/// One event as generated: already in the cleaner's normal form (lowercase id and email,
/// a naive UTC time), so the CSV floor can hold exactly what `run` loads.
struct Event {
    id: String,
    created_at: String,
    email: String,
    ip: String,
    name: &'static str,
    metadata: String,
}

impl Event {
    fn random(rng: &mut Rng, day: NaiveDate) -> Event {
        let (a, b) = (rng.next(), rng.next());
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 | (b >> 62),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        );
        let s = rng.below(86_400);
        let date = day.format("%Y-%m-%d");
        let created_at = format!("{date} {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let metadata = if name.starts_with("meeting") {
            format!(
                r#"{{"meeting_id": {}, "minutes": {}}}"#,
                rng.below(10_000_000),
                5 * (1 + rng.below(12))
            )
        } else {
            format!(
                r#"{{"path": "/c/{}", "message_id": {}}}"#,
                rng.below(1000),
                rng.below(10_000_000)
            )
        };
        Event {
            id,
            created_at,
            email: format!("user{}@mail{}.com", rng.below(100_000), rng.below(300)),
            ip: format!(
                "{}.{}.{}.{}",
                1 + rng.below(223),
                rng.below(256),
                rng.below(256),
                1 + rng.below(254)
            ),
            name,
            metadata,
        }
    }

    fn line(&self) -> String {
        format!(
            r#"{{"id": "{}", "created_at": "{}", "user_email": "{}", "ip": "{}", "event_name": "{}", "metadata": {}}}"#,
            self.id, self.created_at, self.email, self.ip, self.name, self.metadata
        )
    }

    /// The `events` row `run` makes of this line, as CSV: every column of the table.
    fn csv(&self, out: &mut dyn std::io::Write, key: &str, line: usize) -> std::io::Result<()> {
        writeln!(
            out,
            "{},{},{},{},{},\"{}\",{key},{line},floor-load-00000000000000000000000000000,2026-01-01 00:00:00",
            self.id,
            self.created_at,
            self.email,
            self.ip,
            self.name,
            self.metadata.replace('"', "\"\"")
        )
    }
}

/// What to generate: `files` files of `lines` lines, spread evenly over `days` days from
/// `first_day`, keyed `events/YYYY/MM/DD/<32 hex>.json` in generation order (the order
/// `run` loads them in, so the first copy of a duplicated id is the one generated first).
struct Spec {
    seed: u64,
    files: usize,
    lines: usize,
    first_day: NaiveDate,
    days: u64,
}

struct DataSet {
    /// (key, contents), in key order.
    files: Vec<(String, Vec<u8>)>,
    bytes: u64,
    lines: u64,
    /// Lines that load as new events: not rejected, not a duplicate.
    events: u64,
}

impl DataSet {
    /// Writes the files under `root` at their keys; returns their paths.
    fn write(&self, root: &Path) -> Result<Vec<PathBuf>> {
        let mut paths = Vec::with_capacity(self.files.len());
        for (key, body) in &self.files {
            let p = root.join(key);
            std::fs::create_dir_all(p.parent().context("a key has a parent")?)
                .with_context(|| format!("create the directory of {}", p.display()))?;
            std::fs::write(&p, body).with_context(|| format!("write {}", p.display()))?;
            paths.push(p);
        }
        Ok(paths)
    }

    fn mb(&self) -> f64 {
        self.bytes as f64 / 1e6
    }
}

/// Generates `spec`'s files; with `csv`, writes there the row of each line that loads.
fn generate(spec: &Spec, mut csv: Option<&mut dyn std::io::Write>) -> Result<DataSet> {
    let mut rng = Rng(spec.seed);
    let mut set = DataSet {
        files: Vec::with_capacity(spec.files),
        bytes: 0,
        lines: 0,
        events: 0,
    };
    let mut last_id: Option<String> = None;
    for f in 0..spec.files {
        let day = spec.first_day + chrono::Days::new(f as u64 * spec.days / spec.files as u64);
        let key = format!(
            "events/{}/{f:08x}{:024x}.json",
            day.format("%Y/%m/%d"),
            rng.next()
        );
        let mut body = String::with_capacity(spec.lines * 240);
        for l in 1..=spec.lines {
            let mut e = Event::random(&mut rng, day);
            let r = rng.below(1000);
            match (r, &last_id) {
                // ~1%: a month 13, rejected as `invalid_created_at`.
                (0..10, _) => e.created_at = "2026-13-45 00:00:00".into(),
                // ~1%: the previous event's id again; the earlier line wins.
                (10..20, Some(id)) => e.id = id.clone(),
                _ => {
                    if let Some(out) = csv.as_mut() {
                        e.csv(&mut **out, &key, l).context("write the CSV")?;
                    }
                    set.events += 1;
                    last_id = Some(e.id.clone());
                }
            }
            body.push_str(&e.line());
            body.push('\n');
        }
        set.bytes += body.len() as u64;
        set.lines += spec.lines as u64;
        set.files.push((key, body.into_bytes()));
    }
    Ok(set)
}

// ---------------------------------------------------------------------------------------
// Running and timing commands
// ---------------------------------------------------------------------------------------

struct Ran {
    secs: f64,
    /// CPU seconds (user + system) the command used.
    cpu: f64,
    /// Peak RSS (VmHWM) in KiB, polled every 10 ms.
    peak_kib: u64,
}

/// CPU seconds of this process's waited-for children (`cutime + cstime`, 100 ticks/s).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // Fields 16 and 17 of stat(5); `rest` starts at field 3.
    let tick = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(16) + tick(17)) / 100.0
}

/// The `events-etl` binary (release, built by `cargo bench`), run in `cwd` with `envs`
/// and no other `AWS_*` variable, so a developer's AWS profile cannot leak in.
fn etl(cwd: &Path, args: &[&str], envs: &[(String, String)]) -> Command {
    let mut cmd = Command::new(support::bin());
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    cmd
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

fn reader<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `--logs DIR`: where each timed command's stderr is kept, for timelines (with
/// `RUST_LOG`, e.g. `RUST_LOG=info,aws_smithy_runtime::client::orchestrator=debug`).
static LOGS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Keeps `stderr` as `<n>.log` under `--logs DIR`, headed by the command, when it started
/// (Unix seconds, to set against the log's own timestamps) and how long it took.
fn keep_log(cmd: &Command, started_at: std::time::SystemTime, secs: f64, stderr: &str) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(dir) = LOGS.get() else { return };
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let since_epoch = started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let text = format!(
        "# {:?} {}\n# started {since_epoch:.6} (Unix seconds), took {secs:.3} s\n{stderr}",
        cmd.get_program(),
        args.join(" ")
    );
    if let Err(e) = std::fs::write(dir.join(format!("{n:03}.log")), text) {
        eprintln!("--logs: cannot write under {}: {e}", dir.display());
    }
}

/// Runs `cmd` to its end, timing it from spawn to exit and polling its peak RSS; stdout
/// goes to `stdout_to` when given (else it is captured). A failed command is an error
/// showing the end of its stderr.
fn timed(cmd: &mut Command, stdout_to: Option<std::fs::File>) -> Result<Ran> {
    let what = format!("{:?}", cmd.get_program());
    let args: Vec<String> = cmd
        .get_args()
        .take(4)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let what = format!("{what} {}", args.join(" "));
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    match stdout_to {
        Some(f) => cmd.stdout(f),
        None => cmd.stdout(Stdio::piped()),
    };
    let cpu_before = children_cpu();
    let started_at = std::time::SystemTime::now();
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start {what}"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let mut peak = 0u64;
    let mut polls = 0u32;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for {what}"))? {
            break status;
        }
        if start.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} still running after {COMMAND_TIMEOUT:?}: killed");
        }
        if polls % 5 == 0 {
            peak = peak.max(vm_hwm_kib(child.id()).unwrap_or(0));
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(2));
    };
    let secs = start.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu_before;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    keep_log(cmd, started_at, secs, &stderr);
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{what} failed: {status}\n--- stdout ---\n{}\n--- stderr (end) ---\n{}",
            stdout.trim_end(),
            tail.join("\n")
        );
    }
    Ok(Ran {
        secs,
        cpu,
        peak_kib: peak,
    })
}

impl Ran {
    fn describe(&self, what: &str) -> String {
        format!("{what} {:.3} s (cpu {:.2} s)", self.secs, self.cpu)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// `n` alternating pairs: `a(i)` then `floor(i)`, each returning the seconds it timed
/// and a description of them.
/// Returns the medians of each side and the median of the pairs' `ratio(a, floor)`.
fn pairs(
    label: &str,
    n: usize,
    ratio: fn(f64, f64) -> f64,
    mut a: impl FnMut(usize) -> Result<(f64, String)>,
    mut floor: impl FnMut(usize) -> Result<(f64, String)>,
) -> Result<(f64, f64, f64)> {
    let (mut sa, mut sf, mut sr) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (ta, na) = a(i)?;
        let (tf, nf) = floor(i)?;
        let r = ratio(ta, tf);
        println!("  {label} pair {}/{n}: {na}; {nf}; ratio {r:.2}", i + 1);
        sa.push(ta);
        sf.push(tf);
        sr.push(r);
    }
    Ok((median(&sa), median(&sf), median(&sr)))
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// The bench's world: a temporary directory, the test PostgreSQL, a runtime for its
/// admin connection (and the S3 server's client).
struct Ctx {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    pg: &'static support::PgServer,
    admin: tokio_postgres::Client,
    pairs: usize,
}

impl Ctx {
    fn sql(&self, sql: &str) -> Result<()> {
        self.rt
            .block_on(self.admin.batch_execute(sql))
            .with_context(|| format!("SQL failed: {sql}"))
    }

    fn scalar(&self, url: &str, sql: &str) -> Result<String> {
        self.rt.block_on(async {
            let client = connect(url).await?;
            let row = client
                .query_one(sql, &[])
                .await
                .with_context(|| format!("SQL failed: {sql}"))?;
            Ok(row.get::<_, String>(0))
        })
    }

    /// The server's URL with another database name.
    fn db_url(&self, db: &str) -> String {
        let url = self.pg.url();
        let (base, params) = match url.split_once('?') {
            Some((b, p)) => (b.to_owned(), format!("?{p}")),
            None => (url.clone(), String::new()),
        };
        let base = match base.rsplit_once('/') {
            Some((host, _)) if host.contains("//") && host.len() > "postgresql://".len() => host.to_owned(),
            _ => base,
        };
        format!("{base}/{db}{params}")
    }

    /// Before a timed command that writes to PostgreSQL: a checkpoint now, so that none
    /// falls inside the measurement by chance (best effort: it needs a superuser or
    /// `pg_checkpoint`).
    fn quiesce(&self) {
        let _ = self.rt.block_on(self.admin.batch_execute("CHECKPOINT"));
    }

    fn fresh_schema(&self, label: &str) -> String {
        self.rt.block_on(self.pg.fresh_schema(label))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config file for a run from `source` to `staging` into `schema` at `url`.
    fn config(
        &self,
        name: &str,
        source: &str,
        staging: &str,
        url: &str,
        schema: &str,
        extra: &str,
    ) -> Result<String> {
        let p = self.path(name);
        std::fs::write(
            &p,
            format!(
                "[source]\nurl = \"{source}\"\n[staging]\nurl = \"{staging}\"\n[warehouse]\nschema = \"{schema}\"\n\
                 [warehouse.postgres]\nurl = \"{url}\"\n{extra}"
            ),
        )
        .with_context(|| format!("write {}", p.display()))?;
        Ok(p.display().to_string())
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A digest of the loaded rows' content (not the load's own columns), to check that the
/// binary and the floor loaded the same rows.
fn rows_digest(table: &str) -> String {
    format!(
        "SELECT count(*)::text || ' rows, md5 ' || coalesce(md5(string_agg(concat_ws('|', event_id, \
         created_at::text, user_email, ip, event_name, metadata::text, source_key, source_line::text), \
         E'\\n' ORDER BY event_id)), '-') FROM {table}"
    )
}

/// The `events` table's columns and primary key (`(event_id, created_at)` since
/// migration 0007), for the `\copy` floor: without the table's secondary index on
/// `created_at`, which is the loader's choice, not the floor's.
const FLOOR_TABLE: &str = "(
    event_id     VARCHAR(36)   NOT NULL,
    created_at   TIMESTAMP     NOT NULL,
    user_email   VARCHAR(254)  NOT NULL,
    ip           VARCHAR(45),
    event_name   VARCHAR(128)  NOT NULL,
    metadata     JSONB,
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL,
    load_id      VARCHAR(64)   NOT NULL,
    loaded_at    TIMESTAMP     NOT NULL,
    PRIMARY KEY (event_id, created_at)
)";

// ---------------------------------------------------------------------------------------
// The comparisons
// ---------------------------------------------------------------------------------------

struct Row {
    what: String,
    measured: String,
    floor: String,
    ratio: String,
    goal: String,
    pass: bool,
}

/// Comparison 1, `events-etl clean` vs `gzip -1 -c` on the same files.
fn bench_clean(ctx: &Ctx, set: &DataSet, paths: &[PathBuf]) -> Result<Row> {
    println!(
        "1. events-etl clean vs gzip -1 -c, {} files, {:.1} MB",
        paths.len(),
        set.mb()
    );
    let out = ctx.path("clean-out");
    let gz = ctx.path("gzip-out.gz");
    let (clean, gzip, ratio) = pairs(
        "clean",
        ctx.pairs,
        |a, f| f / a,
        |_| {
            let _ = std::fs::remove_dir_all(&out);
            let out_s = out.display().to_string();
            let mut cmd = etl(ctx.dir.path(), &["clean", "--out", &out_s], &[]);
            cmd.args(paths);
            let ran = timed(&mut cmd, None)?;
            std::fs::remove_dir_all(&out).context("remove clean's output")?;
            Ok((ran.secs, ran.describe("clean")))
        },
        |_| {
            let file = std::fs::File::create(&gz).context("create gzip's output")?;
            let mut cmd = Command::new("gzip");
            cmd.args(["-1", "-c"]).args(paths);
            let ran = timed(&mut cmd, Some(file))?;
            std::fs::remove_file(&gz).context("remove gzip's output")?;
            Ok((ran.secs, ran.describe("gzip -1")))
        },
    )?;
    Ok(Row {
        what: format!("clean {:.0} MB vs gzip -1", set.mb()),
        measured: format!("{clean:.2} s {:.0} MB/s", set.mb() / clean),
        floor: format!("{gzip:.2} s {:.0} MB/s", set.mb() / gzip),
        ratio: format!("gzip/clean {ratio:.2}"),
        goal: ">= 2".into(),
        pass: ratio >= 2.0,
    })
}

/// Comparison 2, `events-etl run` into PostgreSQL vs `psql \copy` of the same rows as
/// CSV; returns the row and the runs' peak RSS in KiB.
fn bench_run(ctx: &Ctx, set: &DataSet, source: &Path, csv: &Path) -> Result<(Row, u64)> {
    println!(
        "2. events-etl run vs psql \\copy, {} files, {:.1} MB, {} lines, {} rows",
        set.files.len(),
        set.mb(),
        set.lines,
        set.events
    );
    let psql = support::pg_bindir().join("psql");
    ensure!(psql.exists(), "no psql at {}", psql.display());
    let url = ctx.pg.url();
    let floor_schema = ctx.fresh_schema("floors_copy");
    ctx.sql(&format!("CREATE SCHEMA {floor_schema}"))?;
    let floor_table = format!("{floor_schema}.events");
    let mut peak = 0u64;
    // The first run's schema, kept until the floor's first copy to compare the rows.
    let checked_schema: std::cell::Cell<Option<String>> = std::cell::Cell::new(None);
    let staging = ctx.path("run-staging");
    let (run, copy, ratio) = pairs(
        "run",
        ctx.pairs,
        |a, f| a / f,
        |i| {
            let schema = ctx.fresh_schema("floors_run");
            let _ = std::fs::remove_dir_all(&staging);
            let config = ctx.config(
                "run.toml",
                &format!("{}/", source.display()),
                &format!("{}/", staging.display()),
                &url,
                &schema,
                "",
            )?;
            timed(
                &mut etl(ctx.dir.path(), &["--config", &config, "migrate"], &[]),
                None,
            )?;
            ctx.quiesce();
            let ran = timed(&mut etl(ctx.dir.path(), &["--config", &config, "run"], &[]), None)?;
            peak = peak.max(ran.peak_kib);
            // Dropped at once (autovacuum must not work on it during the next command),
            // except the first, kept until the floor's first copy to compare the rows.
            if i == 0 {
                checked_schema.set(Some(schema));
            } else {
                ctx.sql(&format!("DROP SCHEMA {schema} CASCADE"))?;
            }
            let peak = ran.peak_kib as f64 / 1024.0;
            Ok((
                ran.secs,
                format!("{}, peak RSS {peak:.1} MiB", ran.describe("run")),
            ))
        },
        |_| {
            ctx.sql(&format!("CREATE TABLE {floor_table} {FLOOR_TABLE}"))?;
            ctx.quiesce();
            let copy = format!("\\copy {floor_table} FROM '{}' WITH (FORMAT csv)", csv.display());
            let mut cmd = Command::new(&psql);
            cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c", &copy]);
            let ran = timed(&mut cmd, None)?;
            if let Some(schema) = checked_schema.take() {
                let loaded = ctx.scalar(&url, &rows_digest(&format!("{schema}.events")))?;
                let floor = ctx.scalar(&url, &rows_digest(&floor_table))?;
                if loaded == floor {
                    println!("  same rows in events and the floor's table: {loaded}");
                } else {
                    println!("  WARNING: the rows differ: run loaded {loaded}; the floor {floor}");
                }
                ctx.sql(&format!("DROP SCHEMA {schema} CASCADE"))?;
            }
            ctx.sql(&format!("DROP TABLE {floor_table}"))?;
            Ok((ran.secs, ran.describe("\\copy")))
        },
    )?;
    ctx.sql(&format!("DROP SCHEMA {floor_schema} CASCADE"))?;
    let eps = |s: f64| set.events as f64 / s / 1000.0;
    Ok((
        Row {
            what: format!("run {:.0} MB vs psql \\copy", set.mb()),
            measured: format!("{run:.2} s {:.0}k ev/s", eps(run)),
            floor: format!("{copy:.2} s {:.0}k ev/s", eps(copy)),
            ratio: format!("run/copy {ratio:.2}"),
            goal: "<= 1.5".into(),
            pass: ratio <= 1.5,
        },
        peak,
    ))
}

/// An in-process S3 server whose bucket holds `objects` (key, body), put 32 at a time.
async fn s3_holding(objects: impl Iterator<Item = (String, Vec<u8>)>) -> Result<support::S3Server> {
    let s3 = support::s3().await;
    s3.create_bucket(BUCKET).await;
    let client = s3.client().await;
    let mut puts = tokio::task::JoinSet::new();
    for (key, body) in objects {
        let client = client.clone();
        puts.spawn(async move {
            client
                .put_object()
                .bucket(BUCKET)
                .key(&key)
                .body(body.into())
                .send()
                .await
                .with_context(|| format!("put {key}"))
        });
        if puts.len() >= 32 {
            puts.join_next().await.context("a put")?.context("a put task")??;
        }
    }
    while let Some(r) = puts.join_next().await {
        r.context("a put task")??;
    }
    Ok(s3)
}

/// Comparison 6, discovery's listing of a 28-day window on S3 through a proxy adding
/// 30 ms per request: by date partition (`discover::list_by_day` at the default
/// `source.list_concurrency`) vs one sequential `ListObjectsV2` pagination of the prefix.
/// The listing alone: a no-op run adds its warehouse round trips to both sides.
fn bench_listing(ctx: &Ctx) -> Result<Vec<Row>> {
    const OBJECTS: usize = 50_000;
    const DAYS: usize = 28;
    let first = NaiveDate::from_ymd_opt(2026, 3, 20).context("date")?;
    println!(
        "6. listing {OBJECTS} S3 objects in {DAYS} day partitions, {} ms per request: by day vs sequential",
        S3_LATENCY.as_millis()
    );
    let objects = (0..OBJECTS).map(|i| {
        let day = first + chrono::Days::new((i % DAYS) as u64);
        (
            format!("events/{}/{i:08x}.json", day.format("%Y/%m/%d")),
            b"{}\n".to_vec(),
        )
    });
    let s3 = ctx.rt.block_on(s3_holding(objects))?;
    let slow = LatencyProxy::start(s3.port(), S3_LATENCY);
    let store =
        events_etl::store::s3::S3Store::with_client(ctx.rt.block_on(s3.client_at(&slow.endpoint())), BUCKET);
    let concurrency = usize::try_from(events_etl::config::DEFAULT_LIST_CONCURRENCY).context("concurrency")?;
    let measure = |tag: &str, by_day: bool| -> Result<(f64, String)> {
        let before = slow.requests();
        let t = Instant::now();
        let listed = ctx.rt.block_on(async {
            if by_day {
                events_etl::discover::list_by_day(&store, "events/", concurrency).await
            } else {
                events_etl::store::ObjectStore::list(&store, "events/").await
            }
        })?;
        let secs = t.elapsed().as_secs_f64();
        ensure!(
            listed.len() == OBJECTS,
            "{tag} listed {} objects, not {OBJECTS}",
            listed.len()
        );
        Ok((
            secs,
            format!("{tag} {secs:.2} s, {} requests", slow.requests() - before),
        ))
    };
    let (by_day, sequential, ratio) = pairs(
        "listing",
        ctx.pairs,
        |a, f| a / f,
        |_| measure("by day", true),
        |_| measure("sequential", false),
    )?;
    // 9: a no-op run of the binary over the same objects through the same proxy, once a
    // first run (straight to the server, staging in a local directory) has settled them
    // all; against the sequential pagination's median just measured.
    println!("9. a no-op run over the {OBJECTS} objects, +30 ms per request, vs the sequential pagination");
    let schema = ctx.fresh_schema("floors_noop_s3");
    let config = ctx.config(
        "noop-s3.toml",
        &format!("s3://{BUCKET}/events/"),
        &ctx.path("noop-s3-staging").display().to_string(),
        &ctx.pg.url(),
        &schema,
        "[s3]\nforce_path_style = true\n",
    )?;
    let env_at = |endpoint: String| -> Vec<(String, String)> {
        s3.env()
            .into_iter()
            .map(|(k, v)| {
                if k == "AWS_ENDPOINT_URL" {
                    (k, endpoint.clone())
                } else {
                    (k, v)
                }
            })
            .collect()
    };
    let direct = s3.env();
    let through = env_at(slow.endpoint());
    let bin = |args: &[&str], env: &[(String, String)]| -> Result<Ran> {
        let mut full = vec!["--config", config.as_str()];
        full.extend_from_slice(args);
        timed(&mut etl(ctx.dir.path(), &full, env), None)
    };
    bin(&["migrate"], &direct)?;
    let first = bin(&["run"], &direct)?;
    println!(
        "  {} (settles every object, untimed)",
        first.describe("first run")
    );
    let mut noops = Vec::new();
    for i in 0..ctx.pairs {
        let before = slow.requests();
        let ran = bin(&["run"], &through)?;
        println!(
            "  no-op {}/{}: {}, {} requests",
            i + 1,
            ctx.pairs,
            ran.describe("no-op run"),
            slow.requests() - before
        );
        noops.push(ran.secs);
    }
    let noop = median(&noops);
    let noop_ratio = noop / sequential;
    drop((slow, s3));
    Ok(vec![
        Row {
            what: format!("list {}k S3 objects, {DAYS} days: +30 ms", OBJECTS / 1000),
            measured: format!("{by_day:.2} s"),
            floor: format!("{sequential:.2} s"),
            ratio: format!("by day/seq. {ratio:.2}"),
            goal: "<= 0.3".into(),
            pass: ratio <= 0.3,
        },
        Row {
            what: format!("no-op run, {}k S3 objects: +30 ms", OBJECTS / 1000),
            measured: format!("{noop:.2} s"),
            floor: format!("{sequential:.2} s"),
            ratio: format!("no-op/seq. {noop_ratio:.2}"),
            goal: "<= 0.3".into(),
            pass: noop_ratio <= 0.3,
        },
    ])
}

/// Writes `n` one-event files, `first..first+n`, into 28 day partitions under `dir`
/// (`events/YYYY/MM/DD/<hex>.json`), ids and times from the file number.
fn small_files(dir: &Path, first: usize, n: usize) -> Result<()> {
    const DAYS: usize = 28;
    let day0 = NaiveDate::from_ymd_opt(2026, 3, 1).context("date")?;
    for d in 0..DAYS {
        let day = day0 + chrono::Days::new(d as u64);
        std::fs::create_dir_all(dir.join(format!("events/{}", day.format("%Y/%m/%d"))))?;
    }
    for i in first..first + n {
        let day = day0 + chrono::Days::new((i % DAYS) as u64);
        let line = format!(
            "{{\"id\":\"{:08x}-0000-4000-8000-{:012x}\",\"created_at\":\"{} {:02}:{:02}:{:02}\",\"user_email\":\"u{i}@example.com\",\"event_name\":\"page_visit\"}}\n",
            i >> 16,
            i,
            day.format("%Y-%m-%d"),
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60
        );
        let path = dir.join(format!("events/{}/{i:032x}.json", day.format("%Y/%m/%d")));
        std::fs::write(&path, line).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Comparisons 7 and 8 (issue 21): memory and time that follow the new work, not the
/// files in the window. 7: the first run over 200,000 one-event files in 28 day
/// partitions (local store): peak RSS < 64 MiB. 8: 300,000 more files are loaded
/// (untimed), then a no-op run over the 500,000 (nothing new) vs `find -printf` of each
/// file's size and mtime over the same tree: peak RSS < 64 MiB, time <= 2x.
fn bench_scale(ctx: &Ctx) -> Result<Vec<Row>> {
    const FIRST: usize = 200_000;
    const MORE: usize = 300_000;
    let src = ctx.path("scale-src");
    println!("7. the first run over {FIRST} one-event files in 28 day partitions: peak RSS");
    small_files(&src, 0, FIRST)?;
    let schema = ctx.fresh_schema("floors_scale");
    let config = ctx.config(
        "scale.toml",
        &src.join("events").display().to_string(),
        &ctx.path("scale-staging").display().to_string(),
        &ctx.pg.url(),
        &schema,
        "",
    )?;
    let run = |args: &[&str]| -> Result<Ran> {
        let mut full = vec!["--config", config.as_str()];
        full.extend_from_slice(args);
        timed(&mut etl(ctx.dir.path(), &full, &[]), None)
    };
    run(&["migrate"])?;
    ctx.quiesce();
    let first = run(&["run"])?;
    let first_mib = first.peak_kib as f64 / 1024.0;
    println!("  {}, peak RSS {first_mib:.1} MiB", first.describe("first run"));
    small_files(&src, FIRST, MORE)?;
    let more = run(&["run"])?;
    println!("  {} (loading {MORE} more, untimed)", more.describe("second run"));
    // What autovacuum does on a live warehouse, done now rather than during a timed run.
    for table in ["etl_files", "etl_quarantine", "etl_reloads", "events"] {
        ctx.sql(&format!("VACUUM ANALYZE {schema}.{table}"))?;
    }
    ctx.quiesce();
    let total = FIRST + MORE;
    println!("8. a no-op run over {total} files vs find -printf of the same tree");
    let mut noop_peak = 0u64;
    let (noop, find, ratio) = pairs(
        "no-op",
        ctx.pairs,
        |a, f| a / f,
        |_| {
            let ran = run(&["run"])?;
            noop_peak = noop_peak.max(ran.peak_kib);
            Ok((
                ran.secs,
                format!(
                    "{}, peak RSS {:.1} MiB",
                    ran.describe("no-op run"),
                    ran.peak_kib as f64 / 1024.0
                ),
            ))
        },
        |_| {
            let ran = timed(
                Command::new("find")
                    .arg(src.join("events"))
                    .args(["-type", "f", "-printf", "%s %T@ %p\n"]),
                Some(std::fs::File::create("/dev/null").context("/dev/null")?),
            )?;
            Ok((ran.secs, ran.describe("find")))
        },
    )?;
    let noop_mib = noop_peak as f64 / 1024.0;
    Ok(vec![
        Row {
            what: format!("peak RSS of first run, {}k files", FIRST / 1000),
            measured: format!("{first_mib:.1} MiB"),
            floor: "-".into(),
            ratio: "-".into(),
            goal: "< 64 MiB".into(),
            pass: first_mib < 64.0,
        },
        Row {
            what: format!("no-op run, {}k files", total / 1000),
            measured: format!("{noop:.2} s"),
            floor: format!("{find:.2} s"),
            ratio: format!("no-op/find {ratio:.2}"),
            goal: "<= 2".into(),
            pass: ratio <= 2.0,
        },
        Row {
            what: format!("peak RSS of no-op run, {}k files", total / 1000),
            measured: format!("{noop_mib:.1} MiB"),
            floor: "-".into(),
            ratio: "-".into(),
            goal: "< 64 MiB".into(),
            pass: noop_mib < 64.0,
        },
    ])
}

/// Comparison 3, `events-etl run` from S3 through a proxy adding 30 ms per request vs one
/// adding none.
fn bench_s3(ctx: &Ctx) -> Result<Row> {
    let spec = Spec {
        seed: 0x5300_0003,
        files: 400,
        lines: 50,
        first_day: NaiveDate::from_ymd_opt(2026, 2, 1).context("date")?,
        days: 4,
    };
    let set = generate(&spec, None)?;
    println!(
        "3. events-etl run from S3, {} files of {} events, {:.1} MB: {} ms per request vs none",
        spec.files,
        spec.lines,
        set.mb(),
        S3_LATENCY.as_millis()
    );
    let s3 = ctx.rt.block_on(s3_holding(set.files.iter().cloned()))?;
    let slow = LatencyProxy::start(s3.port(), S3_LATENCY);
    let fast = LatencyProxy::start(s3.port(), Duration::ZERO);
    let url = ctx.pg.url();
    let run = |proxy: &LatencyProxy, tag: &str, i: usize| -> Result<(f64, String)> {
        let schema = ctx.fresh_schema("floors_s3");
        let config = ctx.config(
            "s3.toml",
            &format!("s3://{BUCKET}/events/"),
            &format!("s3://{BUCKET}/staging-{tag}-{i}/"),
            &url,
            &schema,
            "[s3]\nforce_path_style = true\n",
        )?;
        let env: Vec<(String, String)> = s3
            .env()
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "AWS_ENDPOINT_URL" {
                    proxy.endpoint()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        timed(
            &mut etl(ctx.dir.path(), &["--config", &config, "migrate"], &env),
            None,
        )?;
        let before = proxy.requests();
        ctx.quiesce();
        let ran = timed(
            &mut etl(ctx.dir.path(), &["--config", &config, "run"], &env),
            None,
        )?;
        let requests = proxy.requests() - before;
        let loaded = ctx.scalar(&url, &format!("SELECT count(*)::text FROM {schema}.events"))?;
        ctx.sql(&format!("DROP SCHEMA {schema} CASCADE"))?;
        ensure!(
            loaded == set.events.to_string(),
            "the run {tag} loaded {loaded} events, not {}",
            set.events
        );
        Ok((ran.secs, format!("{}, {requests} requests", ran.describe(tag))))
    };
    let (with, without, ratio) = pairs(
        "s3",
        ctx.pairs,
        |a, f| a / f,
        |i| run(&slow, "with 30 ms", i),
        |i| run(&fast, "without", i),
    )?;
    drop((slow, fast, s3));
    // The latency a run pays in sequence, in round trips: requests that each wait for the
    // one before cost the latency each, however many run beside them.
    let added = with - without;
    println!(
        "  latency added: {added:.3} s (median with - median without) = {:.1} x {} ms in sequence",
        added / S3_LATENCY.as_secs_f64(),
        S3_LATENCY.as_millis()
    );
    Ok(Row {
        what: format!("run {} S3 files: +30 ms/request", spec.files),
        measured: format!("{with:.2} s"),
        floor: format!("{without:.2} s"),
        ratio: format!("with/without {ratio:.2}"),
        goal: "<= 1.3".into(),
        pass: ratio <= 1.3,
    })
}

/// Comparison 4, the same increment into a database holding 10x its size of history vs an
/// empty one.
fn bench_history(ctx: &Ctx) -> Result<Row> {
    // History: 20 days of 10k events, loaded by the binary; the increment: the next day.
    let history = Spec {
        seed: 0x4000_0004,
        files: 200,
        lines: 1000,
        first_day: NaiveDate::from_ymd_opt(2026, 1, 1).context("date")?,
        days: 20,
    };
    let increment = Spec {
        seed: 0x1000_0004,
        files: 20,
        lines: 1000,
        first_day: NaiveDate::from_ymd_opt(2026, 1, 21).context("date")?,
        days: 1,
    };
    let hist = generate(&history, None)?;
    let inc = generate(&increment, None)?;
    let (hist_src, inc_src) = (ctx.path("history-src"), ctx.path("increment-src"));
    hist.write(&hist_src)?;
    inc.write(&inc_src)?;
    println!(
        "4. events-etl run of {} new events ({} files) into {} events of history vs into none",
        inc.events, increment.files, hist.events
    );
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (hist_db, empty_db, work_db) = (
        format!("floors_hist_{suffix}"),
        format!("floors_empty_{suffix}"),
        format!("floors_work_{suffix}"),
    );
    let schema = "floors";
    let staging = ctx.path("history-staging");
    let migrated = |db: &str, source: Option<&Path>| -> Result<()> {
        ctx.sql(&format!("CREATE DATABASE {db}"))?;
        let url = ctx.db_url(db);
        let src = format!("{}/", source.unwrap_or(&inc_src).display());
        let config = ctx.config(
            "template.toml",
            &src,
            &format!("{}/", staging.display()),
            &url,
            schema,
            "",
        )?;
        timed(
            &mut etl(ctx.dir.path(), &["--config", &config, "migrate"], &[]),
            None,
        )?;
        if source.is_some() {
            let start = Instant::now();
            timed(&mut etl(ctx.dir.path(), &["--config", &config, "run"], &[]), None)?;
            println!(
                "  history loaded by the binary in {:.1} s",
                start.elapsed().as_secs_f64()
            );
        }
        // A table that has held its history a while has been vacuumed and analysed.
        ctx.rt.block_on(async {
            let client = connect(&url).await?;
            client
                .batch_execute("VACUUM ANALYZE")
                .await
                .context("VACUUM ANALYZE")
        })?;
        Ok(())
    };
    migrated(&hist_db, Some(&hist_src))?;
    migrated(&empty_db, None)?;
    let hist_rows: u64 = ctx
        .scalar(
            &ctx.db_url(&hist_db),
            &format!("SELECT count(*)::text FROM {schema}.events"),
        )?
        .parse()
        .context("a count")?;
    let run = |template: &str, tag: &str| -> Result<(f64, String)> {
        // One statement each: DROP and CREATE DATABASE cannot run in a transaction.
        ctx.sql(&format!("DROP DATABASE IF EXISTS {work_db}"))?;
        ctx.sql(&format!("CREATE DATABASE {work_db} TEMPLATE {template}"))?;
        let url = ctx.db_url(&work_db);
        let _ = std::fs::remove_dir_all(&staging);
        let config = ctx.config(
            "increment.toml",
            &format!("{}/", inc_src.display()),
            &format!("{}/", staging.display()),
            &url,
            schema,
            "",
        )?;
        ctx.quiesce();
        let ran = timed(&mut etl(ctx.dir.path(), &["--config", &config, "run"], &[]), None)?;
        let rows: u64 = ctx
            .scalar(&url, &format!("SELECT count(*)::text FROM {schema}.events"))?
            .parse()
            .context("a count")?;
        // At once, so that autovacuum does not work on it during the next command.
        ctx.sql(&format!("DROP DATABASE {work_db}"))?;
        let before = if template == hist_db { hist_rows } else { 0 };
        ensure!(
            rows == before + inc.events,
            "the increment {tag} left {rows} events, not {before} + {}",
            inc.events
        );
        Ok((ran.secs, ran.describe(tag)))
    };
    let (with, without, ratio) = pairs(
        "history",
        ctx.pairs,
        |a, f| a / f,
        |_| run(&hist_db, "into history"),
        |_| run(&empty_db, "into empty"),
    )?;
    for db in [&work_db, &hist_db, &empty_db] {
        ctx.sql(&format!("DROP DATABASE IF EXISTS {db}"))?;
    }
    Ok(Row {
        what: format!(
            "run {}k new into {}k vs empty",
            inc.events / 1000,
            hist_rows / 1000
        ),
        measured: format!("{with:.2} s"),
        floor: format!("{without:.2} s"),
        ratio: format!("history/empty {ratio:.2}"),
        goal: "<= 1.25".into(),
        pass: ratio <= 1.25,
    })
}

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

const USAGE: &str =
    "usage: cargo bench --bench floors [-- --pairs N] [--only clean,run,s3,history,listing,scale] [--logs DIR]";

struct Opts {
    pairs: usize,
    only: Vec<String>,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        pairs: 3,
        only: vec![
            "clean".into(),
            "run".into(),
            "s3".into(),
            "history".into(),
            "listing".into(),
        ],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            // Passed by `cargo bench`.
            "--bench" => {}
            "--pairs" => {
                let n = args.next().context(USAGE)?;
                o.pairs = n.parse().with_context(|| format!("--pairs {n}: {USAGE}"))?;
                ensure!(o.pairs > 0, "--pairs must be at least 1");
            }
            "--only" => {
                let list = args.next().context(USAGE)?;
                o.only = list.split(',').map(str::to_owned).collect();
                for s in &o.only {
                    ensure!(
                        ["clean", "run", "s3", "history", "listing", "scale"].contains(&s.as_str()),
                        "--only {s}: {USAGE}"
                    );
                }
            }
            "--logs" => {
                let dir = PathBuf::from(args.next().context(USAGE)?);
                std::fs::create_dir_all(&dir).with_context(|| format!("--logs {}", dir.display()))?;
                let _ = LOGS.set(dir);
            }
            other => bail!("unknown argument {other}: {USAGE}"),
        }
    }
    Ok(o)
}

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{head} (with uncommitted changes)"),
        _ => head,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn bench() -> Result<()> {
    let o = opts()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = commit();
    let load_start = load_average();
    println!(
        "events-etl floors (issue 8): commit {commit}, {cores} cores, {} pairs, load average {load_start}",
        o.pairs
    );
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    let pg = rt.block_on(support::postgres());
    let admin = rt.block_on(connect(&pg.url()))?;
    // Under /dev/shm when it is writable, as the test PostgreSQL's data: no disk writeback
    // inside a measurement. Removed when the bench ends, however it ends.
    let dir = tempfile::Builder::new()
        .prefix("etl-floors-")
        .tempdir_in(support::scratch_base())
        .context("temporary directory")?;
    support::cleanup_at_exit(dir.path());
    let ctx = Ctx {
        dir,
        rt,
        pg,
        admin,
        pairs: o.pairs,
    };
    let wants = |s: &str| o.only.iter().any(|x| x == s);
    let mut rows = Vec::new();

    if wants("clean") || wants("run") {
        // 200k lines, ~45 MB, 100 files over 10 days; the CSV holds the rows run loads.
        let spec = Spec {
            seed: 0x4500_0001,
            files: 100,
            lines: 2000,
            first_day: NaiveDate::from_ymd_opt(2026, 3, 1).context("date")?,
            days: 10,
        };
        let csv_path = ctx.path("floor.csv");
        let mut csv = BufWriter::new(std::fs::File::create(&csv_path).context("create the CSV")?);
        let set = generate(&spec, Some(&mut csv))?;
        csv.flush().context("write the CSV")?;
        drop(csv);
        let source = ctx.path("big-src");
        let paths = set.write(&source)?;
        if wants("clean") {
            rows.push(bench_clean(&ctx, &set, &paths)?);
        }
        if wants("run") {
            let (row, peak) = bench_run(&ctx, &set, &source, &csv_path)?;
            rows.push(row);
            let mib = peak as f64 / 1024.0;
            rows.push(Row {
                what: format!("peak RSS of run {:.0} MB", set.mb()),
                measured: format!("{mib:.1} MiB"),
                floor: "-".into(),
                ratio: "-".into(),
                goal: "< 64 MiB".into(),
                pass: mib < 64.0,
            });
        }
    }
    if wants("s3") {
        rows.push(bench_s3(&ctx)?);
    }
    if wants("history") {
        rows.push(bench_history(&ctx)?);
    }
    if wants("listing") {
        rows.extend(bench_listing(&ctx)?);
    }
    if wants("scale") {
        rows.extend(bench_scale(&ctx)?);
    }

    println!();
    println!(
        "commit {commit}, {cores} cores, medians of {} pairs, load average {load_start} at start, {} at end",
        o.pairs,
        load_average()
    );
    println!(
        "| {:<36} | {:<20} | {:<20} | {:<20} | {:<8} | {:<6} |",
        "what", "measured", "floor", "ratio", "goal", "result"
    );
    println!(
        "|{:-<38}|{:-<22}|{:-<22}|{:-<22}|{:-<10}|{:-<8}|",
        "", "", "", "", "", ""
    );
    for r in &rows {
        println!(
            "| {:<36} | {:<20} | {:<20} | {:<20} | {:<8} | {:<6} |",
            r.what,
            r.measured,
            r.floor,
            r.ratio,
            r.goal,
            if r.pass { "PASS" } else { "MISS" }
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = bench() {
        eprintln!("floors bench failed: {e:#}");
        std::process::exit(1);
    }
}

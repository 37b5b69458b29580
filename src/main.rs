//! The `events-etl` command: CLI parsing, config loading, error -> exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use events_etl::config::{Config, ConfigError, WarehouseTarget};
use events_etl::pipeline::{PipelineError, RunReport};
use events_etl::store::{s3::S3Factory, ObjectMeta, Place};
use events_etl::warehouse::views::ViewAction;
use events_etl::warehouse::{
    postgres::Postgres, redshift::Redshift, CatalogRow, LoadRow, Quarantined, RunRow, Warehouse,
    WarehouseError,
};

mod offline;

/// Exit codes (documented in the README).
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_STORE: u8 = 3;
const EXIT_WAREHOUSE: u8 = 4;
/// The run loaded everything else, but set files aside: see `status`.
const EXIT_QUARANTINED: u8 = 5;
/// `check` found something that would fail.
const EXIT_CHECK: u8 = 6;

#[derive(Parser)]
#[command(
    name = "events-etl",
    version,
    about = "Load JSON-lines event logs from S3 into Redshift, exactly once"
)]
struct Cli {
    /// TOML configuration; every key can be overridden by EVENTS_ETL__<SECTION>__<KEY>.
    #[arg(
        long,
        global = true,
        default_value = "config/local.toml",
        env = "EVENTS_ETL_CONFIG"
    )]
    config: PathBuf,
    /// Log format on stderr: `text` for people, `json` (one object per line, with
    /// `run_id` and, inside a load, `load_id`) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create or upgrade the warehouse tables.
    Migrate,
    /// Check that this configuration can work here, one line per check with what to fix:
    /// the configuration, the source, staging, the warehouse and its migrations, and on
    /// Redshift a COPY from staging. Exits 0 when all pass, 6 otherwise.
    Check,
    /// Load every new file under the source prefix, once.
    Run {
        /// Write Prometheus metrics here at the end of every run, failed or not
        /// (atomically, for node_exporter's textfile collector).
        #[arg(long, value_name = "PATH")]
        metrics_file: Option<PathBuf>,
        /// Write a JSON report of the run here: run and load ids, per-file counts,
        /// rejects by reason, seconds per step.
        #[arg(long, value_name = "PATH")]
        report_json: Option<PathBuf>,
        /// List the pending files and what cleaning would make of them (counts by outcome
        /// and reject reason); write nothing to staging or the warehouse.
        #[arg(long)]
        dry_run: bool,
        /// Only the date partitions from this day (YYYY-MM-DD, with --to): lists only the
        /// `events/YYYY/MM/DD/` prefixes of the range.
        #[arg(long, value_name = "YYYY-MM-DD", requires = "to", value_parser = parse_day)]
        from: Option<chrono::NaiveDate>,
        /// The last day of the range, included.
        #[arg(long, value_name = "YYYY-MM-DD", requires = "from", value_parser = parse_day)]
        to: Option<chrono::NaiveDate>,
    },
    /// Show recent loads, the last success and failure, pending files with their age
    /// and the days before the source deletes them, quarantined and lost files.
    Status {
        /// How many recent loads to show.
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// Exit 5 when a pending file is older than monitor.max_pending_age_hours, or a
        /// quarantined or lost file is not resolved (for cron or any monitor), 0 otherwise.
        #[arg(long)]
        check: bool,
    },
    /// Make the next `run` read these files again while the source still has them (after a
    /// cleaning-contract change, or a fixed quarantined file). Ids already in `events` are
    /// never overwritten; the previous ledger rows move to `etl_files_history`.
    Reload {
        /// Source keys to read again (as `status` and `etl_files` show them).
        #[arg(long = "key", value_name = "KEY", required_unless_present = "from")]
        keys: Vec<String>,
        /// Every file of the date partitions from this day (YYYY-MM-DD, with --to).
        #[arg(long, value_name = "YYYY-MM-DD", requires = "to", conflicts_with = "keys", value_parser = parse_day)]
        from: Option<chrono::NaiveDate>,
        /// The last day of the range, included.
        #[arg(long, value_name = "YYYY-MM-DD", requires = "from", value_parser = parse_day)]
        to: Option<chrono::NaiveDate>,
    },
    /// The files set aside (quarantined) or lost before they were read: list them, or
    /// clear their alarm once handled.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Clean local files offline (no warehouse): staged parts, rejects and a summary.
    Clean {
        /// Event files (JSON lines, optionally gzipped).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output directory for events/, rejects/, files/ parts and manifests.
        #[arg(long)]
        out: PathBuf,
        /// Uncompressed bytes per part, in MiB.
        #[arg(long, default_value_t = events_etl::config::DEFAULT_PART_SIZE_MB)]
        part_size_mb: u64,
        /// Files cleaned at once (default: the core count, at most 8).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: Option<u16>,
    },
}

#[derive(Subcommand)]
enum QuarantineAction {
    /// The quarantined and lost file versions whose alarm stands (with --all, resolved
    /// ones too, with who resolved them and why).
    List {
        /// Resolved rows too.
        #[arg(long)]
        all: bool,
        /// At most this many rows, newest first.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Clears the alarm of every unresolved version of these keys, recording who and
    /// why: a lost file whose events are accepted as gone, or a quarantined one that will
    /// not be fixed. A fixed file needs no resolve: its new version, or `reload --key`,
    /// clears the alarm when it loads.
    Resolve {
        /// Source keys (as `status` and `quarantine list` show them).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Why the alarm may clear; kept in `etl_quarantine.resolution`.
        #[arg(long, value_name = "TEXT")]
        note: String,
        /// Who resolves it (default: $USER).
        #[arg(long, value_name = "NAME", env = "USER", default_value = "operator")]
        by: String,
    },
}

/// An error with its exit code; printed with its whole cause chain.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure {
            code: EXIT_CONFIG,
            error: e.into(),
        }
    }
}

/// Reading staged objects back (PostgreSQL loads read them) is a store failure, exit 3,
/// as the README's table says; everything else the warehouse reports is 4.
fn warehouse_code(e: &WarehouseError) -> u8 {
    match e {
        WarehouseError::Staging(_) | WarehouseError::StagedData { .. } => EXIT_STORE,
        _ => EXIT_WAREHOUSE,
    }
}

impl From<WarehouseError> for Failure {
    fn from(e: WarehouseError) -> Self {
        Failure {
            code: warehouse_code(&e),
            error: e.into(),
        }
    }
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        let code = match &e {
            PipelineError::Warehouse(w) => warehouse_code(w),
            PipelineError::Source(_)
            | PipelineError::Read { .. }
            | PipelineError::Stage(_)
            | PipelineError::Systemic { .. } => EXIT_STORE,
        };
        Failure {
            code,
            error: e.into(),
        }
    }
}

/// Logs go to stderr. Colour only for a person at a terminal: never when stderr is a
/// file or pipe, or when `NO_COLOR` is set (no-color.org).
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(events_etl::telemetry::LogWriter);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .flatten_event(true)
            .init(),
        LogFormat::Text => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(color).init()
        }
    }
}

/// Keeps glibc's malloc from holding on to freed staging parts. Workers on several
/// threads each fill multi-MiB parts; with glibc's defaults every thread gets its own
/// arena and, once a large block is freed, blocks of that size are carved from the
/// arenas instead of mmap, so freed parts linger as fragmented heap. Measured on
/// incompressible input with two workers (`cargo bench --bench pipeline -- 160
/// incompressible`): peak RSS 46-58 MiB with the defaults, 28-32 MiB with one arena and
/// blocks of 4 MiB and more always mmap'd (returned to the system when freed). The hot
/// path allocates little, so one arena costs no measurable time.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called first thing in main,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Attention) => ExitCode::from(EXIT_QUARANTINED),
        Ok(Outcome::CheckFailed) => ExitCode::from(EXIT_CHECK),
        Err(f) => {
            // Each cause once: a wrapper often repeats its source's words.
            let mut said = vec![f.error.to_string()];
            eprintln!("error: {}", said[0]);
            for cause in f.error.chain().skip(1) {
                let text = cause.to_string();
                if said.iter().any(|s| s.contains(&text)) {
                    continue;
                }
                eprintln!("  caused by: {text}");
                said.push(text);
            }
            ExitCode::from(f.code)
        }
    }
}

/// How a command that did its work ended.
enum Outcome {
    Done,
    /// Done, with files quarantined that someone must look at.
    Attention,
    /// `check` found a problem.
    CheckFailed,
}

async fn dispatch(cli: Cli) -> Result<Outcome, Failure> {
    if let Command::Clean {
        files,
        out,
        part_size_mb,
        concurrency,
    } = cli.command
    {
        let concurrency = concurrency.map_or_else(events_etl::config::default_concurrency, usize::from);
        offline::clean(files, out, part_size_mb, concurrency).await?;
        return Ok(Outcome::Done);
    }
    if let Command::Check = cli.command {
        let lines = events_etl::check::run(&cli.config, |l| println!("{l}")).await;
        let failed = lines.iter().filter(|l| l.failure.is_some()).count();
        if failed > 0 {
            println!("check: {failed} of {} failed", lines.len());
            return Ok(Outcome::CheckFailed);
        }
        println!("check: all {} passed", lines.len());
        return Ok(Outcome::Done);
    }
    // Configuration is validated whole before any IO.
    let config = Config::from_file(&cli.config)?;
    let s3 = S3Factory::new(config.s3_force_path_style);
    let source = Place::open(&config.source, &s3).await;
    let staging = Place::open(&config.staging, &s3).await;
    let warehouse: Arc<dyn Warehouse> = match &config.warehouse {
        WarehouseTarget::Postgres { url } => Arc::new(
            Postgres::connect(url, &config.schema, staging.clone())
                .await?
                .with_dedupe_window_days(config.dedupe_window_days),
        ),
        WarehouseTarget::Redshift(rs) => Arc::new(
            Redshift::connect(rs, &config.schema, staging.clone())
                .await
                .with_dedupe_window_days(config.dedupe_window_days),
        ),
    };
    let pipeline = events_etl::pipeline::Pipeline {
        source,
        staging,
        warehouse: warehouse.clone(),
        part_size: config.part_size_bytes,
        max_files_per_load: config.max_files_per_load,
        max_bytes_per_load: config.max_bytes_per_load,
        keep_staging: config.keep_staging,
        event_types: Arc::new(config.event_types.clone()),
        concurrency: config.concurrency,
        systemic: config.systemic,
    };
    match cli.command {
        Command::Migrate => {
            let applied = warehouse.migrate().await?;
            if applied.is_empty() {
                println!("schema {} is up to date", config.schema);
            }
            for m in applied {
                println!("applied migration {:04}_{}", m.version, m.name);
            }
            // The typed views follow the configuration, not the migrations.
            for v in warehouse.sync_views(&config.event_types).await? {
                let what = match v.action {
                    ViewAction::Create => "created",
                    ViewAction::Replace => "replaced",
                    ViewAction::Drop => "dropped",
                };
                println!("{what} view {}.{} ({})", config.schema, v.view_name, v.event_name);
            }
        }
        Command::Run {
            metrics_file,
            report_json,
            dry_run,
            from,
            to,
        } => {
            let days = match (from, to) {
                (Some(from), Some(to)) if from <= to && (to - from).num_days() < 3660 => {
                    Some(events_etl::pipeline::Days { from, to })
                }
                (Some(_), Some(_)) => {
                    return Err(Failure {
                        code: EXIT_CONFIG,
                        error: anyhow::anyhow!(
                            "--from must not be after --to, and the range at most 10 years"
                        ),
                    })
                }
                _ => None,
            };
            let started = chrono::Utc::now();
            if dry_run {
                let files = pipeline.dry_run(started, days).await?;
                print_dry_run(&files);
                return Ok(Outcome::Done);
            }
            let run_id = events_etl::pipeline::new_load_id(started);
            let span = tracing::info_span!("run", run_id = %run_id);
            let result = tracing::Instrument::instrument(pipeline.run(started, days), span).await;
            record_run(warehouse.as_ref(), &run_id, started, &result).await;
            if metrics_file.is_some() || report_json.is_some() {
                let summary = summarise(
                    &pipeline,
                    warehouse.as_ref(),
                    &run_id,
                    started,
                    &result,
                    metrics_file.is_some(),
                )
                .await;
                for (path, text) in [
                    (metrics_file, events_etl::report::prometheus(&summary)),
                    (report_json, events_etl::report::json(&summary)),
                ] {
                    if let Some(path) = path {
                        if let Err(e) = events_etl::report::write_atomically(&path, &text) {
                            tracing::error!(path = %path.display(), error = %e, "could not write the run's metrics or report");
                        }
                    }
                }
            }
            let report = result?;
            print_run(&report);
            if !report.quarantined.is_empty() {
                println!(
                    "quarantined {} file(s) (not loaded until a new version is uploaded):",
                    report.quarantined.len()
                );
                print_quarantined(&report.quarantined, None, config.retention_days);
                return Ok(Outcome::Attention);
            }
        }
        Command::Status { limit, check } => {
            let loads = warehouse.recent_loads(limit).await?;
            let files = pipeline.event_files(None).await?.1;
            let written: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> = files
                .iter()
                .filter_map(|f| Some((f.key.clone(), f.last_modified?)))
                .collect();
            let event_files = files.len();
            let pending = pipeline.unsettled(files).await?;
            let alarms = warehouse.quarantined(QUARANTINE_SHOWN, false).await?;
            let runs = [
                warehouse.last_run("succeeded").await?,
                warehouse.last_run("failed").await?,
            ];
            let catalog = warehouse.event_catalog().await?;
            let oldest = print_status(&config, event_files, &pending, &runs, &loads, &alarms, &written);
            let reloads = warehouse.open_reloads(QUARANTINE_SHOWN).await?;
            if !reloads.is_empty() {
                println!(
                    "open reload requests (read again by the next run): {}",
                    reloads.len()
                );
                for r in reloads.iter().take(20) {
                    println!(
                        "  {} (ETag {}) requested {}",
                        r.source_key, r.etag, r.requested_at
                    );
                }
                if reloads.len() > 20 {
                    println!("  ... and {} more", reloads.len() - 20);
                }
            }
            print_event_types(&config, &catalog, chrono::Utc::now().naive_utc());
            if check {
                let max =
                    chrono::Duration::hours(i64::try_from(config.max_pending_age_hours).unwrap_or(i64::MAX));
                let mut failed = Vec::new();
                if oldest.is_some_and(|a| a > max) {
                    failed.push(format!(
                        "a pending file is older than {} hours",
                        config.max_pending_age_hours
                    ));
                }
                let lost = alarms.iter().filter(|q| q.is_lost()).count();
                let set_aside = alarms.len() - lost;
                if set_aside > 0 {
                    failed.push(format!("{set_aside} file(s) quarantined"));
                }
                if lost > 0 {
                    failed.push(format!("{lost} file(s) lost before they were read"));
                }
                if !failed.is_empty() {
                    println!("check: FAILED ({})", failed.join("; "));
                    return Ok(Outcome::Attention);
                }
                println!("check: ok");
            }
        }
        Command::Quarantine { action } => match action {
            QuarantineAction::List { all, limit } => {
                let rows = warehouse.quarantined(limit, all).await?;
                if rows.is_empty() {
                    println!(
                        "no {}quarantined or lost files",
                        if all { "" } else { "unresolved " }
                    );
                }
                print_quarantined(&rows, None, config.retention_days);
            }
            QuarantineAction::Resolve { keys, note, by } => {
                if note.trim().is_empty() {
                    return Err(Failure {
                        code: EXIT_CONFIG,
                        error: anyhow::anyhow!("--note must say why the alarm may clear"),
                    });
                }
                let now = chrono::Utc::now().naive_utc();
                let mut resolved = 0;
                for key in &keys {
                    let n = warehouse.resolve_quarantine(key, &by, &note, now).await?;
                    if n == 0 {
                        println!("{key}: nothing to resolve (no unresolved quarantined or lost version)");
                    } else {
                        println!("{key}: resolved {n} version(s)");
                    }
                    resolved += n;
                }
                println!("resolved {resolved} version(s)");
            }
        },
        Command::Reload { keys, from, to } => {
            let now = chrono::Utc::now().naive_utc();
            match (from, to) {
                (Some(from), Some(to)) if from <= to && (to - from).num_days() < 3660 => {
                    let (low, high) = events_etl::discover::day_range(&pipeline.source.prefix, from, to);
                    let n = warehouse.request_reload_range(&low, &high, now).await?;
                    println!(
                        "reload requested for {n} file version(s) from {from} to {to}; run `events-etl run` to load them"
                    );
                }
                (Some(_), Some(_)) => {
                    return Err(Failure {
                        code: EXIT_CONFIG,
                        error: anyhow::anyhow!(
                            "--from must not be after --to, and the range at most 10 years"
                        ),
                    })
                }
                _ => return reload_keys(&pipeline, warehouse.as_ref(), &keys, now).await,
            }
        }
        Command::Clean { .. } | Command::Check => {}
    }
    Ok(Outcome::Done)
}

/// `reload --key`: a request for the version of each key the source lists now. A key
/// the source no longer has is refused by name (nothing could read it again): exit 2
/// once the others are requested.
async fn reload_keys(
    pipeline: &events_etl::pipeline::Pipeline,
    warehouse: &dyn Warehouse,
    keys: &[String],
    now: chrono::NaiveDateTime,
) -> Result<Outcome, Failure> {
    let mut requested = 0;
    let mut gone = Vec::new();
    for key in keys {
        let listed = pipeline
            .source
            .store
            .list(key)
            .await
            .map_err(|e| Failure::from(PipelineError::Source(e)))?;
        let Some(version) = listed.iter().find(|o| o.key == *key) else {
            println!("{key}: the source no longer has this key; nothing can read it again");
            gone.push(key.as_str());
            continue;
        };
        let n = warehouse.request_reload(key, &version.etag, now).await?;
        if n == 0 {
            println!(
                "{key}: nothing to reload (its version {} is not loaded nor quarantined, or a reload is already requested)",
                version.etag
            );
        } else {
            println!(
                "{key}: {n} version(s) will be read again by the next run (ETag {})",
                version.etag
            );
        }
        requested += n;
    }
    println!("reload requested for {requested} file version(s); run `events-etl run` to load them");
    if gone.is_empty() {
        Ok(Outcome::Done)
    } else {
        Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!(
                "the source no longer has {}: a reload reads the source again, so these cannot be reloaded",
                gone.join(", ")
            ),
        })
    }
}

/// Prints `status`; returns the age of the oldest pending file, when known.
fn print_status(
    config: &Config,
    event_files: usize,
    pending: &[ObjectMeta],
    runs: &[Option<RunRow>],
    loads: &[LoadRow],
    alarms: &[Quarantined],
    written: &std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>,
) -> Option<chrono::Duration> {
    let now = chrono::Utc::now();
    let hours = |d: chrono::Duration| d.num_seconds() as f64 / 3600.0;
    println!(
        "source {}: {event_files} event files, {} pending",
        config.source,
        pending.len()
    );
    let age = |p: &ObjectMeta| p.last_modified.map(|t| now - t);
    for p in pending.iter().take(20) {
        match age(p) {
            Some(a) => println!(
                "  pending {} ({} bytes), {:.1} hours old, {:.1} days before the source deletes it",
                p.key,
                p.size,
                hours(a),
                config.retention_days as f64 - hours(a) / 24.0
            ),
            None => println!("  pending {} ({} bytes), age unknown", p.key, p.size),
        }
    }
    if pending.len() > 20 {
        println!("  ... and {} more", pending.len() - 20);
    }
    let oldest = pending.iter().filter_map(age).max();
    if let Some(a) = oldest {
        println!(
            "oldest pending file: {:.1} hours old (alert above {} hours; the source deletes files after {} days)",
            hours(a),
            config.max_pending_age_hours,
            config.retention_days
        );
    }
    for (status, run) in ["succeeded", "failed"].iter().zip(runs) {
        match run {
            Some(r) => println!(
                "last {status} run: {} finished {} ({} loads, {} files, {} events){}",
                r.run_id,
                r.finished_at,
                r.loads,
                r.files,
                r.events_loaded,
                r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
            None => println!("last {status} run: none recorded"),
        }
    }
    println!("recent loads:");
    print_loads(loads);
    let (lost, set_aside): (Vec<Quarantined>, Vec<Quarantined>) =
        alarms.iter().cloned().partition(Quarantined::is_lost);
    if !set_aside.is_empty() {
        println!(
            "quarantined files (not loaded until a new version loads or `reload --key`; \
             `quarantine resolve` clears one that will not be fixed):"
        );
        print_quarantined(&set_aside, Some(written), config.retention_days);
    }
    if !lost.is_empty() {
        println!(
            "lost files (listed, then gone before they were read: their events are not loaded; \
             upload a copy, or `quarantine resolve` once accepted):"
        );
        print_quarantined(&lost, None, config.retention_days);
    }
    oldest
}

/// `status`: event types first seen in the last 7 days, and configured types not seen
/// in the last 7 days (by event time, as the catalog keeps it).
fn print_event_types(config: &Config, catalog: &[CatalogRow], now: chrono::NaiveDateTime) {
    let since = now - chrono::Duration::days(NEW_TYPE_DAYS);
    let new: Vec<&CatalogRow> = catalog.iter().filter(|c| c.first_seen >= since).collect();
    println!(
        "event types: {} seen in all, {} first seen in the last {NEW_TYPE_DAYS} days",
        catalog.len(),
        new.len()
    );
    for c in &new {
        let configured = if config.event_types.get(&c.event_name).is_some() {
            ""
        } else {
            " (not configured)"
        };
        println!(
            "  new type {}: first seen {}, {} events{configured}",
            c.event_name, c.first_seen, c.events
        );
    }
    for name in config.event_types.types.keys() {
        match catalog.iter().find(|c| &c.event_name == name) {
            Some(c) if c.last_seen >= since => {}
            Some(c) => println!(
                "  configured type {name} not seen in the last {NEW_TYPE_DAYS} days (last seen {})",
                c.last_seen
            ),
            None => {
                println!("  configured type {name} not seen in the last {NEW_TYPE_DAYS} days (never seen)")
            }
        }
    }
}

/// How recent "new" and "not seen lately" are, for `status`'s event types.
const NEW_TYPE_DAYS: i64 = 7;

/// An error and its causes on one line, each message once.
fn error_chain(e: &PipelineError) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// What the metrics and the report say about a finished run. The listing (for pending
/// files) is only redone when metrics were asked for; what cannot be learned (the
/// warehouse or the source unreachable after a failure) is left out.
async fn summarise<'a>(
    pipeline: &events_etl::pipeline::Pipeline,
    warehouse: &dyn Warehouse,
    run_id: &'a str,
    started: chrono::DateTime<chrono::Utc>,
    result: &'a Result<RunReport, PipelineError>,
    list_pending: bool,
) -> events_etl::report::RunSummary<'a> {
    let finished = chrono::Utc::now();
    let last_success = match result {
        Ok(_) => Some(finished),
        Err(_) => warehouse
            .last_run("succeeded")
            .await
            .ok()
            .flatten()
            .map(|r| r.finished_at.and_utc()),
    };
    let pending = if list_pending {
        pipeline.discover().await.ok().map(|(_, files)| {
            let oldest = files
                .iter()
                .filter_map(|f| f.last_modified)
                .min()
                .map(|t| finished - t);
            (files.len(), oldest)
        })
    } else {
        None
    };
    let alarms = warehouse.quarantined(QUARANTINE_SHOWN, false).await.ok();
    let lost = alarms.as_ref().map(|a| a.iter().filter(|q| q.is_lost()).count());
    let quarantined = alarms.as_ref().zip(lost).map(|(a, lost)| a.len() - lost);
    events_etl::report::RunSummary {
        run_id,
        started,
        finished,
        report: result.as_ref().ok(),
        error: result.as_ref().err().map(error_chain),
        last_success,
        pending,
        quarantined,
        lost,
    }
}

/// Records the run in `etl_runs`, succeeded or failed, in its own statement: a failed
/// run leaves a trace whenever the warehouse is reachable. Best effort: a run's own
/// outcome is never changed by a failure to record it.
async fn record_run(
    warehouse: &dyn Warehouse,
    run_id: &str,
    started: chrono::DateTime<chrono::Utc>,
    result: &Result<RunReport, PipelineError>,
) {
    let (status, error, loads, files, events, rejects) = match result {
        Ok(r) => (
            "succeeded",
            None,
            r.loads.len() as i64,
            r.loads.iter().map(|l| l.files).sum(),
            r.loads.iter().map(|l| l.events_loaded).sum(),
            r.loads.iter().map(|l| l.rejects).sum(),
        ),
        Err(e) => {
            let mut text = error_chain(e);
            let mut end = text.len().min(events_etl::warehouse::MAX_RUN_ERROR);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            ("failed", Some(text), 0, 0, 0, 0)
        }
    };
    let row = RunRow {
        run_id: run_id.to_owned(),
        started_at: started.naive_utc(),
        finished_at: chrono::Utc::now().naive_utc(),
        status: status.to_owned(),
        error,
        loads,
        files,
        events_loaded: events,
        rejects,
    };
    if let Err(e) = warehouse.record_run(&row).await {
        tracing::warn!(run_id, error = %e, "could not record the run in etl_runs");
    }
}

/// `YYYY-MM-DD`.
fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("`{s}` is not a YYYY-MM-DD date: {e}"))
}

fn print_dry_run(files: &[events_etl::pipeline::DryFile]) {
    let mut reasons: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let (mut lines, mut events, mut rejects, mut blank) = (0, 0, 0, 0);
    println!("dry run: {} pending file(s); nothing is written", files.len());
    println!(
        "{:<60} {:>12} {:>8} {:>8} {:>8} {:>6}",
        "file", "bytes", "lines", "events", "rejects", "blank"
    );
    for f in files {
        let t = &f.tally;
        println!(
            "{:<60} {:>12} {:>8} {:>8} {:>8} {:>6}",
            f.file.key, f.file.size, t.lines, t.events, t.rejects, t.blank_lines
        );
        (lines, events, rejects, blank) = (
            lines + t.lines,
            events + t.events,
            rejects + t.rejects,
            blank + t.blank_lines,
        );
        for (r, n) in &f.reasons {
            *reasons.entry(r.as_str()).or_insert(0) += n;
        }
    }
    println!(
        "total: {lines} lines, {events} events (before deduplication), {rejects} rejects, {blank} blank"
    );
    for (r, n) in reasons {
        println!("  rejects {r}: {n}");
    }
}

/// At most this many quarantined and lost versions are read for `status` and metrics.
const QUARANTINE_SHOWN: i64 = 100_000;

/// One line per quarantined or lost version; with `written` (when each listed object
/// was written), the days left before the source deletes it.
fn print_quarantined(
    files: &[Quarantined],
    written: Option<&std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>>,
    retention_days: u64,
) {
    let now = chrono::Utc::now();
    for q in files {
        let left = written
            .and_then(|w| w.get(&q.source_key))
            .map(|t| {
                let days = retention_days as f64 - (now - *t).num_seconds() as f64 / 86_400.0;
                format!(", {days:.1} days before the source deletes it")
            })
            .unwrap_or_default();
        let resolved = match (&q.resolved_at, &q.resolved_by, &q.resolution) {
            (Some(at), by, why) => format!(
                " [resolved {at} by {}: {}]",
                by.as_deref().unwrap_or("?"),
                why.as_deref().unwrap_or("")
            ),
            _ => String::new(),
        };
        println!(
            "  {} (etag {}, {} bytes{left}) {} at {}: {}{resolved}",
            q.source_key, q.etag, q.size_bytes, q.reason, q.quarantined_at, q.detail
        );
    }
}

fn print_run(r: &RunReport) {
    if r.loads.is_empty() {
        if r.pending == 0 {
            println!(
                "nothing to load: {} event files, all already recorded",
                r.event_files
            );
        } else {
            println!(
                "nothing loaded: the {} pending file(s) were recorded by a concurrent run or vanished before they were read",
                r.pending
            );
        }
        return;
    }
    let loaded: i64 = r.loads.iter().map(|l| l.files).sum();
    println!(
        "loaded {loaded} of {} event files in {} load(s):",
        r.event_files,
        r.loads.len()
    );
    print_loads(&r.loads);
}

fn print_loads(loads: &[LoadRow]) {
    println!(
        "{:<32} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "load_id", "files", "lines", "loaded", "duplicates", "rejects", "blank"
    );
    for l in loads {
        println!(
            "{:<32} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8}",
            l.load_id, l.files, l.lines, l.events_loaded, l.duplicates, l.rejects, l.blank_lines
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_objects_unreadable_is_a_store_error() {
        let staged = WarehouseError::StagedData {
            url: "s3://b/staging/l/events/part-00000.jsonl.gz".into(),
            message: "gone".into(),
        };
        assert_eq!(Failure::from(PipelineError::Warehouse(staged)).code, EXIT_STORE);
        let missing = WarehouseError::Staging(events_etl::store::StoreError::NotFound { url: "x".into() });
        assert_eq!(Failure::from(missing).code, EXIT_STORE);
        let statement = WarehouseError::systemic("insert_events", "boom");
        assert_eq!(
            Failure::from(PipelineError::Warehouse(statement)).code,
            EXIT_WAREHOUSE
        );
    }
}

//! The `events-etl` command: CLI parsing, config loading, error -> exit code. Each
//! command lives in its own module under `commands/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use events_etl::app::App;
use events_etl::config::Config;
use events_etl::pipeline::Days;

mod commands;

use commands::{Failure, Outcome, EXIT_ATTENTION, EXIT_CHECK, EXIT_FAILURE};

#[derive(Parser)]
#[command(
    name = "events-etl",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("EVENTS_ETL_COMMIT"), ")"),
    about = "Load JSON-lines event logs from S3 into Redshift, exactly once"
)]
struct Cli {
    /// TOML configuration (required, no default: a host never picks up a development
    /// file by accident); every key can be overridden by EVENTS_ETL__<SECTION>__<KEY>.
    #[arg(long, global = true, env = "EVENTS_ETL_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
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
        /// (atomically, for node_exporter's textfile collector; `-` for stdout).
        #[arg(long, value_name = "PATH")]
        metrics_file: Option<PathBuf>,
        /// Write a JSON report of the run here: run and load ids, per-file counts,
        /// rejects by reason, seconds per step (`-` for stdout).
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
        /// Take at most N pending files (the first in key order); the rest stays pending
        /// for the next run, and the run exits 0.
        #[arg(long, value_name = "N")]
        max_files: Option<std::num::NonZeroUsize>,
        /// Start no new load after this long (`45m`, `1h 30m`); a started load finishes,
        /// the rest stays pending for the next run, and the run exits 0.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        max_duration: Option<std::time::Duration>,
    },
    /// Show recent loads, the last success and failure, pending files with their age
    /// and the days before the source deletes them, quarantined and lost files.
    Status {
        /// How many recent loads to show.
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// Exit 5 when a pending file is older than monitor.max_pending_age_hours, a
        /// quarantined or lost file is not resolved, or (when set) the newest source
        /// object is older than monitor.max_source_silence_hours; 0 otherwise.
        #[arg(long)]
        check: bool,
        /// One JSON object on stdout instead of text (for monitors and dashboards).
        #[arg(long)]
        json: bool,
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
    /// Print a completion script for SHELL on stdout (e.g. `events-etl completions bash >
    /// /etc/bash_completion.d/events-etl`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout (e.g. `events-etl man > events-etl.1`).
    Man,
    /// Print the effective configuration after EVENTS_ETL__* overrides: one key a line
    /// with where its value came from (env, file or default), secrets masked.
    Config,
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
/// arenas instead of mmap, so freed parts linger as fragmented heap. One arena, and
/// blocks of 4 MiB and more always mmap'd (returned to the system when freed), keep peak
/// memory near what the parts need (`cargo bench --bench pipeline -- 160 incompressible`
/// measures it). The hot path allocates little, so one arena costs
/// no measurable time.
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
        Ok(Outcome::Attention) => ExitCode::from(EXIT_ATTENTION),
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

/// Runs the command. `clean` and `check` need no warehouse; every other command
/// validates the whole configuration before any IO, then builds the shared wiring.
async fn dispatch(cli: Cli) -> Result<Outcome, Failure> {
    let command = match cli.command {
        Command::Clean {
            files,
            out,
            part_size_mb,
            concurrency,
        } => {
            let concurrency = concurrency.map_or_else(events_etl::config::default_concurrency, usize::from);
            return commands::clean::run(files, out, part_size_mb, concurrency).await;
        }
        Command::Check => return commands::check::run(&config_path(cli.config)?).await,
        Command::Config => return commands::config::run(&config_path(cli.config)?),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "events-etl", &mut std::io::stdout());
            return Ok(Outcome::Done);
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| Failure {
                    code: commands::EXIT_FAILURE,
                    error: anyhow::anyhow!("cannot write the manual page: {e}"),
                })?;
            return Ok(Outcome::Done);
        }
        other => other,
    };
    let mut app = App::build(Config::from_file(&config_path(cli.config)?)?).await?;
    match command {
        Command::Migrate => commands::migrate::run(&app).await,
        Command::Run {
            metrics_file,
            report_json,
            dry_run,
            from,
            to,
            max_files,
            max_duration,
        } => {
            app.pipeline.budget = events_etl::pipeline::RunBudget {
                max_files: max_files.map(std::num::NonZeroUsize::get),
                max_duration,
            };
            app.pipeline.file_rows = report_json.is_some();
            let outputs = commands::run::Outputs {
                metrics_file,
                report_json,
            };
            commands::run::run(&app, days(from, to)?, dry_run, outputs).await
        }
        Command::Status { limit, check, json } => commands::status::run(&app, limit, check, json).await,
        Command::Reload { keys, from, to } => commands::reload::run(&app, &keys, days(from, to)?).await,
        Command::Quarantine { action } => match action {
            QuarantineAction::List { all, limit } => commands::quarantine::list(&app, all, limit).await,
            QuarantineAction::Resolve { keys, note, by } => {
                commands::quarantine::resolve(&app, &keys, &note, &by).await
            }
        },
        Command::Clean { .. }
        | Command::Check
        | Command::Config
        | Command::Completions { .. }
        | Command::Man => Ok(Outcome::Done),
    }
}

/// The configuration file: `--config` or `EVENTS_ETL_CONFIG`, never a default.
fn config_path(path: Option<PathBuf>) -> Result<PathBuf, Failure> {
    path.ok_or_else(|| {
        Failure::usage(
            "no configuration: pass --config PATH or set EVENTS_ETL_CONFIG (there is no default \
             file, so that a production host never picks up a development configuration)",
        )
    })
}

/// `--from`/`--to` as a range of date partitions: both or neither (clap), in order, at
/// most ten years.
fn days(from: Option<chrono::NaiveDate>, to: Option<chrono::NaiveDate>) -> Result<Option<Days>, Failure> {
    match (from, to) {
        (Some(from), Some(to)) if from <= to && (to - from).num_days() < 3660 => Ok(Some(Days { from, to })),
        (Some(_), Some(_)) => Err(Failure::usage(
            "--from must not be after --to, and the range at most 10 years",
        )),
        _ => Ok(None),
    }
}

/// `YYYY-MM-DD`.
fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("`{s}` is not a YYYY-MM-DD date: {e}"))
}

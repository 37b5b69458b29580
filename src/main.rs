//! The `events-etl` command: CLI parsing, config loading, error -> exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use events_etl::config::{Config, ConfigError, WarehouseTarget};
use events_etl::pipeline::{PipelineError, RunReport};
use events_etl::store::{s3::S3Factory, Place};
use events_etl::warehouse::{
    postgres::Postgres, redshift::Redshift, LoadRow, Quarantined, Warehouse, WarehouseError,
};

mod offline;

/// Exit codes (documented in the README).
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_STORE: u8 = 3;
const EXIT_WAREHOUSE: u8 = 4;
/// The run loaded everything else, but set files aside: see `status`.
const EXIT_QUARANTINED: u8 = 5;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or upgrade the warehouse tables.
    Migrate,
    /// Load every new file under the source prefix, once.
    Run,
    /// Show recent loads and the files still pending.
    Status {
        /// How many recent loads to show.
        #[arg(long, default_value_t = 10)]
        limit: i64,
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

impl From<WarehouseError> for Failure {
    fn from(e: WarehouseError) -> Self {
        Failure {
            code: EXIT_WAREHOUSE,
            error: e.into(),
        }
    }
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        let code = match &e {
            PipelineError::Warehouse(_) => EXIT_WAREHOUSE,
            PipelineError::Source(_) | PipelineError::Read { .. } | PipelineError::Stage(_) => EXIT_STORE,
        };
        Failure {
            code,
            error: e.into(),
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
        Err(f) => {
            eprintln!("error: {}", f.error);
            for cause in f.error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
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
}

async fn dispatch(cli: Cli) -> Result<Outcome, Failure> {
    if let Command::Clean {
        files,
        out,
        part_size_mb,
    } = cli.command
    {
        offline::clean(files, out, part_size_mb).await?;
        return Ok(Outcome::Done);
    }
    // Configuration is validated whole before any IO.
    let config = Config::from_file(&cli.config)?;
    let s3 = S3Factory::new(config.s3_force_path_style);
    let source = Place::open(&config.source, &s3).await;
    let staging = Place::open(&config.staging, &s3).await;
    let warehouse: Arc<dyn Warehouse> = match &config.warehouse {
        WarehouseTarget::Postgres { url } => {
            Arc::new(Postgres::connect(url, &config.schema, staging.clone()).await?)
        }
        WarehouseTarget::Redshift(rs) => {
            Arc::new(Redshift::connect(rs, &config.schema, staging.clone()).await)
        }
    };
    let pipeline = events_etl::pipeline::Pipeline {
        source,
        staging,
        warehouse: warehouse.clone(),
        part_size: config.part_size_bytes,
        max_files_per_load: config.max_files_per_load,
        keep_staging: config.keep_staging,
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
        }
        Command::Run => {
            let report = pipeline.run(chrono::Utc::now()).await?;
            print_run(&report);
            if !report.quarantined.is_empty() {
                println!(
                    "quarantined {} file(s) (not loaded until a new version is uploaded):",
                    report.quarantined.len()
                );
                print_quarantined(&report.quarantined);
                return Ok(Outcome::Attention);
            }
        }
        Command::Status { limit } => {
            let loads = warehouse.recent_loads(limit).await?;
            let (event_files, pending) = pipeline.discover().await?;
            println!(
                "source {}: {event_files} event files, {} pending",
                config.source,
                pending.len()
            );
            for p in pending.iter().take(20) {
                println!("  pending {} ({} bytes)", p.key, p.size);
            }
            if pending.len() > 20 {
                println!("  ... and {} more", pending.len() - 20);
            }
            println!("recent loads:");
            print_loads(&loads);
            let quarantined = warehouse.quarantined(limit).await?;
            if !quarantined.is_empty() {
                println!("quarantined files (not loaded until a new version is uploaded):");
                print_quarantined(&quarantined);
            }
        }
        Command::Clean { .. } => {}
    }
    Ok(Outcome::Done)
}

fn print_quarantined(files: &[Quarantined]) {
    for q in files {
        println!(
            "  {} (etag {}, {} bytes) {} at {}: {}",
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

//! The wiring every command shares: the configured stores, the warehouse and the
//! pipeline over them, built the same way for `run`, `status`, `check` and the rest.

use std::sync::Arc;

use crate::config::{Config, WarehouseTarget};
use crate::migrate::Dialect;
use crate::pipeline::Pipeline;
use crate::store::{s3::S3Factory, Place};
use crate::warehouse::{postgres::Postgres, redshift::Redshift, Warehouse, WarehouseError};

/// The source and staging stores a configuration names. Opening them does no IO: S3
/// clients are built on first use.
pub struct Stores {
    pub source: Place,
    pub staging: Place,
}

impl Stores {
    /// The configuration's source and staging stores.
    pub async fn open(config: &Config) -> Stores {
        let s3 = S3Factory::new(config.s3_force_path_style);
        Stores {
            source: Place::open(&config.source, &s3).await,
            staging: Place::open(&config.staging, &s3).await,
        }
    }
}

/// The SQL dialect of the configured warehouse.
pub fn dialect(config: &Config) -> Dialect {
    match config.warehouse {
        WarehouseTarget::Postgres { .. } => Dialect::Postgres,
        WarehouseTarget::Redshift(_) => Dialect::Redshift,
    }
}

/// Connects to the configured warehouse (PostgreSQL checks its server version here;
/// the Data API client connects on first use), reading staged loads from `staging`.
pub async fn connect(config: &Config, staging: &Place) -> Result<Arc<dyn Warehouse>, WarehouseError> {
    Ok(match &config.warehouse {
        WarehouseTarget::Postgres { url } => Arc::new(
            Postgres::connect(url, &config.schema, staging.clone())
                .await?
                .with_dedupe_window_days(config.dedupe_window_days)
                .with_naive_timezone(config.naive_timezone),
        ),
        WarehouseTarget::Redshift(rs) => Arc::new(
            Redshift::connect(rs, &config.schema, staging.clone())
                .await
                .with_dedupe_window_days(config.dedupe_window_days)
                .with_naive_timezone(config.naive_timezone),
        ),
    })
}

/// A configuration with its warehouse connected and its pipeline built.
pub struct App {
    pub config: Config,
    pub warehouse: Arc<dyn Warehouse>,
    pub pipeline: Pipeline,
}

impl App {
    /// Opens the stores and connects to the warehouse of a validated configuration.
    pub async fn build(config: Config) -> Result<App, WarehouseError> {
        let Stores { source, staging } = Stores::open(&config).await;
        let warehouse = connect(&config, &staging).await?;
        let pipeline = Pipeline {
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
            naive_timezone: config.naive_timezone,
            budget: Default::default(),
            file_rows: false,
            list_concurrency: config.list_concurrency,
        };
        Ok(App {
            config,
            warehouse,
            pipeline,
        })
    }
}

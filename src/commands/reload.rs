//! `events-etl reload`: make the next run read file versions again, by key (the version
//! the source lists now) or by date range (one set-based request).

use events_etl::app::App;
use events_etl::pipeline::{Days, PipelineError};

use super::{Failure, Outcome, EXIT_CONFIG};

pub async fn run(app: &App, keys: &[String], days: Option<Days>) -> Result<Outcome, Failure> {
    let now = chrono::Utc::now().naive_utc();
    match days {
        Some(Days { from, to }) => {
            let (low, high) = events_etl::discover::day_range(&app.pipeline.source.prefix, from, to);
            let n = app.warehouse.request_reload_range(&low, &high, now).await?;
            println!(
                "reload requested for {n} file version(s) from {from} to {to}; run `events-etl run` to load them"
            );
            Ok(Outcome::Done)
        }
        None => by_key(app, keys, now).await,
    }
}

/// `reload --key`: a request for the version of each key the source lists now. A key
/// the source no longer has is refused by name (nothing could read it again): exit 2
/// once the others are requested.
async fn by_key(app: &App, keys: &[String], now: chrono::NaiveDateTime) -> Result<Outcome, Failure> {
    let source = &app.pipeline.source;
    let mut requested = 0;
    let mut gone = Vec::new();
    for key in keys {
        let listed = source
            .store
            .list(key)
            .await
            .map_err(|e| Failure::from(PipelineError::Source(e)))?;
        let Some(version) = listed.iter().find(|o| o.key == *key) else {
            println!("{key}: the source no longer has this key; nothing can read it again");
            gone.push(key.as_str());
            continue;
        };
        let n = app.warehouse.request_reload(key, &version.etag, now).await?;
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

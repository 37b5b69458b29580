//! `events-etl clean`: the cleaning and staging steps on local files, with no
//! warehouse. Output has the staged layout: events/, rejects/, files/ and manifests.

use std::path::PathBuf;
use std::sync::Arc;

use events_etl::clean::{Cleaner, FileTally};
use events_etl::pipeline::clean_object;
use events_etl::stage::{FileRow, StageWriter};
use events_etl::store::{local::LocalStore, Place};

use crate::{Failure, EXIT_CONFIG, EXIT_STORE};

/// A store (file) failure: exit 3.
fn store_err(e: anyhow::Error) -> Failure {
    Failure {
        code: EXIT_STORE,
        error: e,
    }
}

pub async fn clean(files: Vec<PathBuf>, out: PathBuf, part_size_mb: u64) -> Result<(), Failure> {
    if !(1..=4096).contains(&part_size_mb) {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!("--part-size-mb {part_size_mb} is outside 1..=4096"),
        });
    }
    let out = std::path::absolute(&out).map_err(|e| store_err(e.into()))?;
    let place = Place {
        store: Arc::new(LocalStore::new(out.clone())),
        prefix: String::new(),
    };
    let cleaner = Cleaner::new(chrono::Utc::now());
    let mut w = StageWriter::at_prefix(place, "clean", String::new(), part_size_mb * 1024 * 1024);
    let mut total = FileTally::default();
    let bytes: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    events_etl::telemetry::progress_begin(files.len(), bytes);
    let result = clean_all(&files, &cleaner, &mut w, &mut total).await;
    events_etl::telemetry::progress_end();
    result?;
    w.finish().await.map_err(|e| store_err(e.into()))?;
    println!(
        "total: {} files, {} lines, {} events (before deduplication), {} rejects, {} blank; output in {}",
        files.len(),
        total.lines,
        total.events,
        total.rejects,
        total.blank_lines,
        out.display()
    );
    Ok(())
}

/// Cleans each file into `w`, printing its counts.
async fn clean_all(
    files: &[PathBuf],
    cleaner: &Cleaner,
    w: &mut StageWriter,
    total: &mut FileTally,
) -> Result<(), Failure> {
    for path in files {
        let key = path.display().to_string();
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| store_err(anyhow::anyhow!("cannot open {key}: {e}")))?;
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let cleaned = clean_object(cleaner, &key, &key, Box::new(file), w)
            .await
            .map_err(|e| store_err(e.into()))?;
        events_etl::telemetry::progress_file(size, cleaned.tally.events);
        w.file(&FileRow::new(&key, "", size, &cleaned.tally))
            .map_err(|e| store_err(e.into()))?;
        let t = cleaned.tally;
        println!(
            "{key}: {} lines, {} events, {} rejects, {} blank, {} recovered, {} invalid ips",
            t.lines, t.events, t.rejects, t.blank_lines, t.recovered, t.invalid_ips
        );
        total.merge(&t);
    }
    Ok(())
}

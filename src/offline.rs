//! `events-etl clean`: the cleaning and staging steps on local files, with no
//! warehouse. Output has the staged layout: events/, rejects/, files/ and manifests.

use std::path::PathBuf;
use std::sync::Arc;

use events_etl::clean::{Cleaner, FileTally};
use events_etl::pipeline::clean_object;
use events_etl::stage::{FileRow, StageWriter};
use events_etl::store::{local::LocalStore, Place};

use crate::{Failure, EXIT_CONFIG, EXIT_STORE};

pub async fn clean(files: Vec<PathBuf>, out: PathBuf, part_size_mb: u64) -> Result<(), Failure> {
    if !(1..=4096).contains(&part_size_mb) {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!("--part-size-mb {part_size_mb} is outside 1..=4096"),
        });
    }
    let store_err = |e: anyhow::Error| Failure {
        code: EXIT_STORE,
        error: e,
    };
    let out = std::path::absolute(&out).map_err(|e| store_err(e.into()))?;
    let place = Place {
        store: Arc::new(LocalStore::new(out.clone())),
        prefix: String::new(),
    };
    let cleaner = Cleaner::new(chrono::Utc::now());
    let mut w = StageWriter::at_prefix(place, "clean", String::new(), part_size_mb * 1024 * 1024);
    let mut total = FileTally::default();
    for path in &files {
        let key = path.display().to_string();
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| store_err(anyhow::anyhow!("cannot open {key}: {e}")))?;
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let cleaned = clean_object(&cleaner, &key, &key, Box::new(file), &mut w)
            .await
            .map_err(|e| store_err(e.into()))?;
        w.file(&FileRow::new(&key, "", size, &cleaned.tally))
            .map_err(|e| store_err(e.into()))?;
        let t = cleaned.tally;
        println!(
            "{key}: {} lines, {} events, {} rejects, {} blank, {} recovered, {} invalid ips",
            t.lines, t.events, t.rejects, t.blank_lines, t.recovered, t.invalid_ips
        );
        total.merge(&t);
    }
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

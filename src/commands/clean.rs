//! `events-etl clean`: the cleaning and staging steps on local files, with no
//! warehouse. Output has the staged layout: events/, rejects/, files/ and manifests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use events_etl::clean::{Cleaner, FileTally};
use events_etl::stage::pool::{self, stage_files, Open, Opened, Target};
use events_etl::stage::{FileError, ManifestOrder};
use events_etl::store::{local::LocalStore, ObjectMeta, Place};

use super::{Failure, Outcome, EXIT_CONFIG, EXIT_STORE};

/// A store (file) failure: exit 3.
fn store_err(e: anyhow::Error) -> Failure {
    Failure {
        code: EXIT_STORE,
        error: e,
    }
}

pub async fn run(
    files: Vec<PathBuf>,
    out: PathBuf,
    part_size_mb: u64,
    concurrency: usize,
) -> Result<Outcome, Failure> {
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
    let mut objects = Vec::with_capacity(files.len());
    let mut paths = std::collections::HashMap::new();
    for path in &files {
        let key = shown(path);
        let size = std::fs::metadata(path)
            .map_err(|e| store_err(anyhow::anyhow!("cannot open {key}: {e}")))?
            .len();
        paths.insert(key.clone(), path.clone());
        objects.push(ObjectMeta {
            key,
            etag: String::new(),
            size,
            archived: false,
            last_modified: None,
        });
    }
    let cleaner = Arc::new(Cleaner::new(chrono::Utc::now()));
    let target = Target {
        place,
        load_id: "clean".into(),
        prefix: String::new(),
        part_size: part_size_mb * 1024 * 1024,
        // Others read this output later: a manifest must only name parts that exist.
        manifests: ManifestOrder::AfterParts,
    };
    events_etl::telemetry::progress_begin(objects.len(), objects.iter().map(|o| o.size).sum());
    let result = stage_files(
        target,
        cleaner,
        Arc::new(LocalFiles { paths }),
        objects,
        concurrency,
    )
    .await;
    events_etl::telemetry::progress_end();
    let staged = result.map_err(|e| store_err(e.into()))?;
    let mut total = FileTally::default();
    for (obj, outcome) in &staged.outcomes {
        let pool::Outcome::Staged { tally: t, .. } = outcome else {
            continue;
        };
        println!(
            "{}: {} lines, {} events, {} rejects, {} blank, {} recovered, {} invalid ips",
            obj.key, t.lines, t.events, t.rejects, t.blank_lines, t.recovered, t.invalid_ips
        );
        total.merge(t);
    }
    println!(
        "total: {} files, {} lines, {} events (before deduplication), {} rejects, {} blank; output in {}",
        files.len(),
        total.lines,
        total.events,
        total.rejects,
        total.blank_lines,
        out.display()
    );
    Ok(Outcome::Done)
}

/// A path as messages and staged rows name it: as it is when it is UTF-8 without
/// control characters, otherwise escaped and quoted (`"a\xFF\nb"`), so that two names
/// never show alike and a name never breaks a line.
fn shown(path: &Path) -> String {
    match path.to_str() {
        Some(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("{:?}", path.as_os_str()),
    }
}

/// Local files named on the command line, opened by the path as the OS gave it (keys
/// are the names [`shown`] makes); a file that cannot be opened fails the command (exit
/// 3), as any store failure does.
struct LocalFiles {
    paths: std::collections::HashMap<String, PathBuf>,
}

#[async_trait::async_trait]
impl Open for LocalFiles {
    type Skip = std::convert::Infallible;

    async fn open(&self, obj: &ObjectMeta) -> Result<Opened<Self::Skip>, FileError> {
        let path = self
            .paths
            .get(&obj.key)
            .map_or_else(|| PathBuf::from(&obj.key), Clone::clone);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| FileError::Read {
                url: obj.key.clone(),
                source,
            })?;
        Ok(Opened::Body(Box::new(file)))
    }

    fn url(&self, obj: &ObjectMeta) -> String {
        obj.key.clone()
    }
}

//! Writes one load's staged objects. Parts are uploaded as soon as they fill (at most
//! [`MAX_IN_FLIGHT`] at once), so memory holds a few compressed parts, never the input.

use tokio::task::JoinSet;

use super::part::{GzPart, Manifest};
use super::rows::{self, FileRow};
use crate::clean::{CleanEvent, Reject};
use crate::store::{Place, StoreError};

/// Parts being uploaded while cleaning goes on.
pub const MAX_IN_FLIGHT: usize = 2;

/// What `finish` hands to the warehouse: where the manifests are, and the totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedLoad {
    pub load_id: String,
    /// `<staging prefix><load_id>/`
    pub prefix: String,
    pub events_manifest: String,
    pub rejects_manifest: String,
    pub files_manifest: String,
    pub events_staged: u64,
    pub rejects_staged: u64,
    pub files_staged: u64,
}

/// One table's stream of parts.
struct Stream {
    name: &'static str,
    current: GzPart,
    manifest: Manifest,
    next_part: u32,
    rows: u64,
}

impl Stream {
    /// Appends one row to the current part.
    fn write(&mut self, row: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Result<(), StageError> {
        self.current.push_row(row).map_err(|source| StageError::Compress {
            key: format!("{}/part-{:05}", self.name, self.next_part),
            source,
        })
    }

    fn new(name: &'static str) -> Self {
        Stream {
            name,
            current: GzPart::default(),
            manifest: Manifest::default(),
            next_part: 0,
            rows: 0,
        }
    }
}

/// Error while staging: the store's, or a local IO error compressing.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot compress staged part {key}: {source}")]
    Compress {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("staging upload task failed: {0}")]
    Join(String),
}

/// Collects one load's rows and writes its parts and manifests.
pub struct StageWriter {
    place: Place,
    load_id: String,
    prefix: String,
    part_size: u64,
    events: Stream,
    rejects: Stream,
    files: Stream,
    uploads: JoinSet<Result<(), StoreError>>,
}

impl StageWriter {
    /// Staged objects go under `<place prefix><load_id>/`.
    pub fn new(place: Place, load_id: &str, part_size: u64) -> Self {
        let prefix = place.key(&format!("{load_id}/"));
        Self::at_prefix(place, load_id, prefix, part_size)
    }

    /// Staged objects go under `prefix` exactly (`events clean` writes to a directory).
    pub fn at_prefix(place: Place, load_id: &str, prefix: String, part_size: u64) -> Self {
        StageWriter {
            place,
            load_id: load_id.to_owned(),
            prefix,
            part_size: part_size.max(1),
            events: Stream::new("events"),
            rejects: Stream::new("rejects"),
            files: Stream::new("files"),
            uploads: JoinSet::new(),
        }
    }

    pub fn event(&mut self, key: &str, line: u64, e: &CleanEvent<'_>) -> Result<(), StageError> {
        self.events.write(|w| rows::write_event(w, key, line, e))
    }

    pub fn reject(&mut self, key: &str, line: u64, r: &Reject<'_>) -> Result<(), StageError> {
        self.rejects.write(|w| rows::write_reject(w, key, line, r))
    }

    pub fn file(&mut self, f: &FileRow) -> Result<(), StageError> {
        self.files.write(|w| rows::write_file(w, f))
    }

    /// Uploads every part that reached the part size. Call between lines: it is cheap
    /// when nothing is full.
    pub async fn flush_full(&mut self) -> Result<(), StageError> {
        let size = self.part_size;
        for which in 0..3 {
            if self.stream(which).current.raw_bytes() >= size {
                self.close_part(which).await?;
            }
        }
        Ok(())
    }

    fn stream(&mut self, which: usize) -> &mut Stream {
        match which {
            0 => &mut self.events,
            1 => &mut self.rejects,
            _ => &mut self.files,
        }
    }

    /// Closes the stream's current part (if it has rows) and starts its upload.
    async fn close_part(&mut self, which: usize) -> Result<(), StageError> {
        let prefix = self.prefix.clone();
        let s = self.stream(which);
        if s.current.rows() == 0 {
            return Ok(());
        }
        let key = format!("{prefix}{}/part-{:05}.jsonl.gz", s.name, s.next_part);
        s.next_part += 1;
        s.rows += s.current.rows();
        let bytes = std::mem::take(&mut s.current)
            .finish()
            .map_err(|source| StageError::Compress {
                key: key.clone(),
                source,
            })?;
        let url = self.place.store.url(&key);
        self.stream(which).manifest.push(url, bytes.len() as u64);
        while self.uploads.len() >= MAX_IN_FLIGHT {
            self.join_one().await?;
        }
        let store = self.place.store.clone();
        self.uploads.spawn(async move { store.put(&key, bytes).await });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), StageError> {
        match self.uploads.join_next().await {
            None => Ok(()),
            Some(Ok(r)) => r.map_err(StageError::from),
            Some(Err(e)) => Err(StageError::Join(e.to_string())),
        }
    }

    /// Uploads the last parts and the three manifests. Manifests go last: a manifest
    /// only ever names parts that exist.
    pub async fn finish(mut self) -> Result<StagedLoad, StageError> {
        for which in 0..3 {
            self.close_part(which).await?;
        }
        while !self.uploads.is_empty() {
            self.join_one().await?;
        }
        let mut keys = Vec::new();
        for which in 0..3 {
            let prefix = self.prefix.clone();
            let s = self.stream(which);
            let key = format!("{prefix}{}.manifest", s.name);
            let body = s.manifest.to_json();
            self.place.store.put(&key, body).await?;
            keys.push(key);
        }
        let [events_manifest, rejects_manifest, files_manifest]: [String; 3] = keys
            .try_into()
            .map_err(|_| StageError::Join("manifest count".into()))?;
        Ok(StagedLoad {
            load_id: self.load_id,
            prefix: self.prefix,
            events_manifest,
            rejects_manifest,
            files_manifest,
            events_staged: self.events.rows,
            rejects_staged: self.rejects.rows,
            files_staged: self.files.rows,
        })
    }
}

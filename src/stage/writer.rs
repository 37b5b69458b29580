//! Writes one load's staged objects. Parts are uploaded as soon as they fill (at most
//! [`MAX_IN_FLIGHT`] at once per writer), so memory holds a few compressed parts, never
//! the input. Several writers can share one load (one per worker, see
//! [`super::pool`]): each names its parts with its own tag, and
//! [`write_manifests`] lists all their parts.
//!
//! When the manifests are written is the caller's choice ([`ManifestOrder`]): after
//! every part, so that a manifest only ever names parts that exist (output that others
//! read later), or alongside the last parts, which saves a round trip to the store when
//! the manifests are read only by this process once every write succeeded (a load's
//! own staging). Either way the [`StagedLoad`] is returned only when every object of
//! the load is written.

use chrono::NaiveDateTime;
use tokio::task::JoinSet;

use super::part::{GzPart, Manifest};
use super::rows::{self, FileRow};
use crate::clean::{CleanEvent, Reject};
use crate::store::{Place, StoreError};
#[cfg(feature = "test-hooks")]
use std::io::Write as _;

/// Parts being uploaded while cleaning goes on, per writer (see
/// [`StageWriter::with_in_flight`]).
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// What `finish` hands to the warehouse: where the manifests are, and the totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedLoad {
    pub load_id: String,
    /// `<staging prefix><load_id>/`
    pub prefix: String,
    pub events_manifest: String,
    pub rejects_manifest: String,
    pub files_manifest: String,
    /// What each manifest lists, as it was written. A reader that knows the load can
    /// open the parts while the manifest is still being read, then check that the
    /// manifest lists exactly these (see [`crate::warehouse::staged::open`]).
    pub events_listed: Manifest,
    pub rejects_listed: Manifest,
    pub files_listed: Manifest,
    /// The key of every object the load wrote, parts and manifests: what a committed
    /// load deletes, by name, without listing its prefix.
    pub objects: Vec<String>,
    pub events_staged: u64,
    pub rejects_staged: u64,
    pub files_staged: u64,
    /// The earliest and latest `created_at` of the staged events (None without events):
    /// the Redshift load scans `events` only in this range, widened by the dedupe
    /// window. Rows rolled back with a corrupt file may have widened it: a wider range
    /// costs a little more scanning, never a different result.
    pub created_range: Option<(NaiveDateTime, NaiveDateTime)>,
}

/// One table's stream of parts.
struct Stream {
    name: &'static str,
    current: GzPart,
    /// Closed parts, in order: what the manifest will list.
    closed: Vec<ClosedPart>,
    next_part: u32,
}

/// A part that was closed and handed to the store.
struct ClosedPart {
    key: String,
    url: String,
    len: u64,
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
            closed: Vec::new(),
            next_part: 0,
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            closed: self.closed.len(),
            rows_in_current: self.current.rows(),
        }
    }
}

/// Where one stream stood at a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// Parts closed by then.
    closed: usize,
    /// Rows in the part that was current then.
    rows_in_current: u64,
}

/// Where every stream stood: [`StageWriter::rollback`] returns to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    marks: [Mark; 3],
}

/// When [`write_manifests`] writes the manifests, relative to the last parts' uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestOrder {
    /// Once every part is written: a manifest only ever names parts that exist, even
    /// when a write fails midway. For output read later by others (`events-etl clean`).
    AfterParts,
    /// At the same time as the last parts, one round trip instead of two. Only for a
    /// load's own staging: each load writes under a fresh `<load_id>/` prefix, and its
    /// manifests are read (by this process, or by the COPY it issues) only after
    /// [`write_manifests`] returned, that is after every write of the load succeeded. A
    /// write that fails, or a process that dies, before then leaves a prefix that
    /// nothing loads, whose manifest may name a part that was never written.
    WithLastParts,
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
    #[error("cannot read back staged part {url} to roll it back: {message}")]
    Rollback { url: String, message: String },
}

/// Collects one load's rows and writes its parts and manifests.
pub struct StageWriter {
    place: Place,
    load_id: String,
    prefix: String,
    part_size: u64,
    /// Put in every part's name, so writers sharing a prefix never collide.
    tag: String,
    in_flight: usize,
    events: Stream,
    rejects: Stream,
    files: Stream,
    uploads: JoinSet<Result<(), StoreError>>,
    created_range: Option<(NaiveDateTime, NaiveDateTime)>,
}

/// The parts one writer closed: what [`write_manifests`] lists. The last ones may
/// still be uploading; [`write_manifests`] waits for them.
pub struct WrittenParts {
    streams: [Vec<ClosedPart>; 3],
    /// The `created_at` range of this writer's events (see [`StagedLoad::created_range`]).
    created_range: Option<(NaiveDateTime, NaiveDateTime)>,
    /// Uploads not yet known to have succeeded.
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
            tag: String::new(),
            in_flight: MAX_IN_FLIGHT,
            events: Stream::new("events"),
            rejects: Stream::new("rejects"),
            files: Stream::new("files"),
            uploads: JoinSet::new(),
            created_range: None,
        }
    }

    /// Parts are named `part-<tag><n>.jsonl.gz`: one writer per worker, one tag each.
    pub fn with_tag(mut self, tag: String) -> Self {
        self.tag = tag;
        self
    }

    /// At most `n` (at least 1) closed parts of this writer uploading at once.
    pub fn with_in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// Stages one cleaned event of line `line` of `key`.
    pub fn event(&mut self, key: &str, line: u64, e: &CleanEvent<'_>) -> Result<(), StageError> {
        self.widen_created_range(e.created_at);
        self.events.write(|w| rows::write_event(w, key, line, e))
    }

    /// Stages one reject of line `line` of `key`.
    pub fn reject(&mut self, key: &str, line: u64, r: &Reject<'_>) -> Result<(), StageError> {
        self.rejects.write(|w| rows::write_reject(w, key, line, r))
    }

    /// Test hook, compiled only with the `test-hooks` feature: stages one event row for
    /// `key` that the cleaner would never produce and both warehouses refuse (a metadata
    /// number out of every range), to prove a refused row quarantines its file and no
    /// more.
    #[cfg(feature = "test-hooks")]
    pub fn poison_event(&mut self, key: &str) -> Result<(), StageError> {
        if let Some(t) = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)) {
            self.widen_created_range(t);
        }
        self.events.write(|w| {
            let key = serde_json::to_string(key)?;
            writeln!(
                w,
                "{{\"event_id\":\"ffffffff-ffff-4fff-8fff-ffffffffffff\",\"created_at\":\"2020-01-01 00:00:00.000000\",\
                 \"user_email\":\"poison@example.com\",\"event_name\":\"poison\",\"metadata\":{{\"n\":1e999999}},\
                 \"source_key\":{key},\"source_line\":0}}"
            )
        })
    }

    fn widen_created_range(&mut self, t: NaiveDateTime) {
        self.created_range = Some(match self.created_range {
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
            None => (t, t),
        });
    }

    /// Stages one file's row (its counts, for `etl_files`).
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
        let tag = self.tag.clone();
        let s = self.stream(which);
        if s.current.rows() == 0 {
            return Ok(());
        }
        let key = format!("{prefix}{}/part-{tag}{:05}.jsonl.gz", s.name, s.next_part);
        s.next_part += 1;
        let rows = s.current.rows();
        let bytes = std::mem::take(&mut s.current)
            .finish()
            .map_err(|source| StageError::Compress {
                key: key.clone(),
                source,
            })?;
        let url = self.place.store.url(&key);
        self.stream(which).closed.push(ClosedPart {
            key: key.clone(),
            url,
            len: bytes.len() as u64,
            rows,
        });
        while self.uploads.len() >= self.in_flight {
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

    /// Where every stream stands now; see [`StageWriter::rollback`].
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            marks: [self.events.mark(), self.rejects.mark(), self.files.mark()],
        }
    }

    /// Removes every row written since `checkpoint`, as if it had never been written
    /// (a file whose gzip data turned out corrupt). The rows of a file are contiguous
    /// in each stream, so this truncates each stream: parts closed since are dropped
    /// from the manifest and deleted, and the part that was current at the checkpoint
    /// is rebuilt with its rows from before (read back from the store if it was closed
    /// meanwhile). Memory stays bounded by a part: nothing is held back to make this
    /// possible, which is why it costs a re-read, and only when it is used.
    pub async fn rollback(&mut self, checkpoint: Checkpoint) -> Result<(), StageError> {
        for (which, mark) in checkpoint.marks.into_iter().enumerate() {
            let s = self.stream(which);
            if s.mark() == mark {
                continue;
            }
            if s.closed.len() == mark.closed {
                // Still the same part: rebuild it in memory.
                let bytes =
                    std::mem::take(&mut s.current)
                        .finish()
                        .map_err(|source| StageError::Compress {
                            key: format!("{}/part-{:05}", s.name, s.next_part),
                            source,
                        })?;
                s.current = GzPart::first_rows_of(&bytes, mark.rows_in_current).map_err(|source| {
                    StageError::Compress {
                        key: format!("{}/part-{:05}", s.name, s.next_part),
                        source,
                    }
                })?;
                continue;
            }
            // Parts were closed since: let their uploads finish, then drop them.
            while !self.uploads.is_empty() {
                self.join_one().await?;
            }
            let s = self.stream(which);
            let dropped = s.closed.split_off(mark.closed);
            s.current = GzPart::default();
            if mark.rows_in_current > 0 {
                let first = &dropped[0];
                let bytes = self.read_back(&first.key, &first.url).await?;
                let rebuilt = GzPart::first_rows_of(&bytes, mark.rows_in_current).map_err(|e| {
                    StageError::Rollback {
                        url: first.url.clone(),
                        message: e.to_string(),
                    }
                })?;
                self.stream(which).current = rebuilt;
            }
            for part in &dropped {
                // The manifest no longer names it; deleting keeps the output tidy.
                self.place.store.delete_prefix(&part.key).await?;
            }
        }
        Ok(())
    }

    async fn read_back(&self, key: &str, url: &str) -> Result<Vec<u8>, StageError> {
        let mut body = self.place.store.get(key).await?;
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut body, &mut bytes)
            .await
            .map_err(|e| StageError::Rollback {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(bytes)
    }

    /// Uploads the last parts and the three manifests. Manifests go last
    /// ([`ManifestOrder::AfterParts`]): a manifest only ever names parts that exist.
    pub async fn finish(self) -> Result<StagedLoad, StageError> {
        let place = self.place.clone();
        let load_id = self.load_id.clone();
        let prefix = self.prefix.clone();
        let parts = self.close_parts().await?;
        write_manifests(&place, &load_id, &prefix, vec![parts], ManifestOrder::AfterParts).await
    }

    /// Closes the last parts and starts their uploads, without waiting for them: the
    /// manifests are left to [`write_manifests`], which lists the parts of every writer
    /// of the load and waits for every upload.
    pub async fn close_parts(mut self) -> Result<WrittenParts, StageError> {
        // The last parts of the three streams upload together: their latencies
        // overlap, and memory holds at most these three and the one still uploading.
        self.in_flight = self.in_flight.max(4);
        for which in 0..3 {
            self.close_part(which).await?;
        }
        Ok(WrittenParts {
            streams: [
                std::mem::take(&mut self.events.closed),
                std::mem::take(&mut self.rejects.closed),
                std::mem::take(&mut self.files.closed),
            ],
            created_range: self.created_range,
            uploads: std::mem::take(&mut self.uploads),
        })
    }
}

/// Waits for every task of `set`; the first failure is returned (the rest are aborted
/// when the set is dropped).
async fn join_all(set: &mut JoinSet<Result<(), StoreError>>) -> Result<(), StageError> {
    while let Some(done) = set.join_next().await {
        done.map_err(|e| StageError::Join(e.to_string()))??;
    }
    Ok(())
}

/// Writes the three manifests of a load under `prefix`, listing the parts of all its
/// writers (call it once every writer closed its parts), waits for every write, and
/// returns what the warehouse needs. `order` says whether the manifests wait for the
/// parts' uploads or go with them (see [`ManifestOrder`]); either way nothing is
/// returned before every object of the load is written.
pub(crate) async fn write_manifests(
    place: &Place,
    load_id: &str,
    prefix: &str,
    writers: Vec<WrittenParts>,
    order: ManifestOrder,
) -> Result<StagedLoad, StageError> {
    let mut streams: [Vec<ClosedPart>; 3] = Default::default();
    let mut created_range: Option<(NaiveDateTime, NaiveDateTime)> = None;
    let mut uploads = Vec::with_capacity(writers.len());
    for w in writers {
        for (all, mine) in streams.iter_mut().zip(w.streams) {
            all.extend(mine);
        }
        created_range = match (created_range, w.created_range) {
            (Some((lo, hi)), Some((l, h))) => Some((lo.min(l), hi.max(h))),
            (a, b) => a.or(b),
        };
        uploads.push(w.uploads);
    }
    if order == ManifestOrder::AfterParts {
        for set in &mut uploads {
            join_all(set).await?;
        }
    }
    let mut objects: Vec<String> = streams.iter().flatten().map(|p| p.key.clone()).collect();
    let mut keys = Vec::new();
    let mut listed = Vec::new();
    let mut rows = [0u64; 3];
    let mut puts = JoinSet::new();
    for (which, (name, parts)) in ["events", "rejects", "files"].iter().zip(&streams).enumerate() {
        let mut m = Manifest::default();
        for p in parts {
            m.push(p.url.clone(), p.len);
            rows[which] += p.rows;
        }
        let key = format!("{prefix}{name}.manifest");
        let store = place.store.clone();
        let (k, body) = (key.clone(), m.to_json());
        // The three manifests are written at once: one request's latency, not three.
        puts.spawn(async move { store.put(&k, body).await });
        objects.push(key.clone());
        keys.push(key);
        listed.push(m);
    }
    // With `WithLastParts`, the parts still uploading and the manifests finish together.
    for set in &mut uploads {
        join_all(set).await?;
    }
    join_all(&mut puts).await?;
    let [events_manifest, rejects_manifest, files_manifest]: [String; 3] = keys
        .try_into()
        .map_err(|_| StageError::Join("manifest count".into()))?;
    let [events_listed, rejects_listed, files_listed]: [Manifest; 3] = listed
        .try_into()
        .map_err(|_| StageError::Join("manifest count".into()))?;
    Ok(StagedLoad {
        load_id: load_id.to_owned(),
        prefix: prefix.to_owned(),
        events_manifest,
        rejects_manifest,
        files_manifest,
        events_listed,
        rejects_listed,
        files_listed,
        objects,
        events_staged: rows[0],
        rejects_staged: rows[1],
        files_staged: rows[2],
        created_range,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clean::Reason;
    use crate::store::local::LocalStore;
    use crate::store::{ObjectMeta, ObjectStore};

    fn reject(n: u64) -> Reject<'static> {
        Reject {
            reason: Reason::MalformedJson,
            raw: format!("row {n}").into(),
        }
    }

    /// The rows of every part a finished stream's manifest lists.
    async fn rows_listed(place: &Place, manifest_key: &str) -> Vec<String> {
        let mut body = place.store.get(manifest_key).await.unwrap();
        let mut text = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut body, &mut text)
            .await
            .unwrap();
        let manifest: Manifest = serde_json::from_slice(&text).unwrap();
        let mut out = Vec::new();
        for e in manifest.entries {
            let key = place.store.key_of(&e.url).unwrap();
            let mut body = place.store.get(&key).await.unwrap();
            let mut gz = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut body, &mut gz)
                .await
                .unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
            out.extend(text.lines().map(str::to_owned));
        }
        out
    }

    /// A directory whose writes of keys containing `fail` are refused, as a store
    /// refusing a PUT.
    #[derive(Debug)]
    struct RefusingPuts {
        inner: LocalStore,
        fail: &'static str,
    }

    #[async_trait::async_trait]
    impl ObjectStore for RefusingPuts {
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn get(&self, key: &str) -> Result<crate::store::Body, StoreError> {
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
            if key.contains(self.fail) {
                return Err(StoreError::io("write", self.url(key), "refused by the test"));
            }
            self.inner.put(key, bytes).await
        }
        async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
            self.inner.delete_prefix(prefix).await
        }
        async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
            self.inner.delete(keys).await
        }
        fn url(&self, key: &str) -> String {
            self.inner.url(key)
        }
        fn key_of(&self, url: &str) -> Option<String> {
            self.inner.key_of(url)
        }
    }

    async fn read_manifest(place: &Place, key: &str) -> Manifest {
        let mut body = place.store.get(key).await.unwrap();
        let mut text = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut body, &mut text)
            .await
            .unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    /// Two writers sharing a load, each with several parts per stream: whichever the
    /// manifest order, the manifests list every part of both, the load lists what each
    /// manifest holds, and `objects` names exactly what is under the load's prefix.
    #[tokio::test]
    async fn manifests_list_every_writers_parts_and_objects_name_every_key() {
        for order in [ManifestOrder::AfterParts, ManifestOrder::WithLastParts] {
            let dir = tempfile::tempdir().unwrap();
            let place = Place {
                store: Arc::new(LocalStore::new(dir.path().to_path_buf())),
                prefix: "staging/".into(),
            };
            let prefix = place.key("L/");
            let mut written = Vec::new();
            for tag in ["w0-", "w1-"] {
                let mut w = StageWriter::at_prefix(place.clone(), "L", prefix.clone(), 4 * 1024)
                    .with_tag(tag.into())
                    .with_in_flight(1);
                for n in 0..2_000 {
                    w.reject(&format!("{tag}.json"), n + 1, &reject(n)).unwrap();
                    w.flush_full().await.unwrap();
                }
                w.file(&FileRow::new(&format!("{tag}.json"), "e", 1, &Default::default()))
                    .unwrap();
                written.push(w.close_parts().await.unwrap());
            }
            let staged = write_manifests(&place, "L", &prefix, written, order)
                .await
                .unwrap();
            assert_eq!((staged.rejects_staged, staged.files_staged), (4_000, 2));
            assert!(staged.rejects_listed.entries.len() > 2, "{order:?}");
            for (key, listed) in [
                (&staged.events_manifest, &staged.events_listed),
                (&staged.rejects_manifest, &staged.rejects_listed),
                (&staged.files_manifest, &staged.files_listed),
            ] {
                assert_eq!(&read_manifest(&place, key).await, listed, "{order:?} {key}");
            }
            let rows = rows_listed(&place, &staged.rejects_manifest).await;
            assert_eq!(rows.len(), 4_000, "{order:?}");
            let mut on_store: Vec<String> = place
                .store
                .list(&prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect();
            let mut objects = staged.objects.clone();
            on_store.sort();
            objects.sort();
            assert_eq!(objects, on_store, "{order:?}");
            // Deleting them by name empties the prefix.
            place.store.delete(&staged.objects).await.unwrap();
            assert_eq!(place.store.list(&prefix).await.unwrap(), []);
        }
    }

    /// A part whose upload fails fails staging whichever the manifest order: no
    /// `StagedLoad` comes back, so nothing can load what a manifest names. Manifests
    /// written after the parts are not written at all.
    #[tokio::test]
    async fn a_failed_part_upload_fails_staging_in_either_order() {
        for order in [ManifestOrder::AfterParts, ManifestOrder::WithLastParts] {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn ObjectStore> = Arc::new(RefusingPuts {
                inner: LocalStore::new(dir.path().to_path_buf()),
                fail: "rejects/part-",
            });
            let place = Place {
                store,
                prefix: String::new(),
            };
            let mut w = StageWriter::new(place.clone(), "L", 1024 * 1024);
            for n in 0..10 {
                w.reject("a.json", n + 1, &reject(n)).unwrap();
            }
            w.file(&FileRow::new("a.json", "e", 1, &Default::default()))
                .unwrap();
            // The last parts are closed here; their uploads fail later.
            let parts = w.close_parts().await.unwrap();
            let e = write_manifests(&place, "L", "L/", vec![parts], order)
                .await
                .err()
                .unwrap_or_else(|| panic!("{order:?}: staging must fail"));
            assert!(e.to_string().contains("refused by the test"), "{order:?}: {e}");
            if order == ManifestOrder::AfterParts {
                let keys: Vec<String> = place
                    .store
                    .list("L/")
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|o| o.key)
                    .collect();
                assert!(keys.iter().all(|k| !k.ends_with(".manifest")), "{keys:?}");
            }
        }
    }

    /// Rolling back removes exactly the rows written since the checkpoint, whether they
    /// sit in the current part or in parts closed and uploaded since, and the parts it
    /// drops are deleted.
    #[tokio::test]
    async fn rollback_removes_exactly_the_rows_since_the_checkpoint() {
        for (before, during) in [(0u64, 3u64), (10, 3), (10, 5_000), (0, 5_000), (3_000, 0)] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("st")).unwrap();
            let place = Place {
                store: Arc::new(LocalStore::new(dir.path().join("st"))),
                prefix: String::new(),
            };
            // Parts of ~8 KiB: thousands of rows span many of them.
            let mut w = StageWriter::new(place.clone(), "L", 8 * 1024);
            for n in 0..before {
                w.reject("kept.json", n + 1, &reject(n)).unwrap();
                w.flush_full().await.unwrap();
            }
            let cp = w.checkpoint();
            for n in 0..during {
                w.reject("bad.json.gz", n + 1, &reject(n)).unwrap();
                w.flush_full().await.unwrap();
            }
            w.rollback(cp).await.unwrap();
            assert_eq!(w.checkpoint(), cp, "{before} {during}");
            w.reject("after.json", 1, &reject(0)).unwrap();
            let staged = w.finish().await.unwrap();
            assert_eq!(staged.rejects_staged, before + 1, "{before} {during}");
            let rows = rows_listed(&place, &staged.rejects_manifest).await;
            assert_eq!(rows.len() as u64, before + 1);
            assert!(
                rows.iter().all(|r| !r.contains("bad.json.gz")),
                "{before} {during}"
            );
            assert!(rows[rows.len() - 1].contains("after.json"));
            // Only the parts the manifest lists are left.
            let parts = std::fs::read_dir(dir.path().join("st/L/rejects"))
                .map(|d| d.count())
                .unwrap_or(0);
            let listed: Manifest = serde_json::from_slice(
                &std::fs::read(dir.path().join("st").join(&staged.rejects_manifest)).unwrap(),
            )
            .unwrap();
            assert_eq!(parts, listed.entries.len(), "{before} {during}");
        }
    }
}

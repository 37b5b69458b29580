//! Steps 2 and 3 over many files at once: a read-ahead keeps many GETs of small objects
//! in flight (S3's first-byte latency is paid in parallel, not once per file), and
//! `workers` tasks clean whole files on every core, each into its own [`StageWriter`]
//! whose full parts upload while cleaning goes on.
//!
//! Results do not depend on scheduling. Every staged row carries its (key, line), and
//! the warehouse ranks copies of an id by them, so which worker staged a row changes
//! nothing; per-file results come back in input order. A worker cleans one file at a
//! time, so a file's rows stay contiguous in its writer's streams and a file whose gzip
//! data turns out corrupt can still be rolled back (see [`StageWriter::rollback`]).
//!
//! Memory: each worker holds at most its current parts plus one part uploading (about
//! 2 x part size), and the read-ahead holds at most [`READ_AHEAD_BYTES`] of small
//! objects; larger objects are streamed by the worker that cleans them.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument as _;

use super::file::{clean_object, FileError};
use super::writer::{write_manifests, ManifestOrder, StageError, WrittenParts};
use super::{FileRow, StageWriter, StagedLoad};
use crate::clean::{Cleaner, FileTally, Reason};
use crate::read::Input;
use crate::store::{Body, ObjectMeta, Place};
use crate::telemetry;

/// Objects up to this size are read whole ahead of the worker that cleans them.
pub const READ_AHEAD_MAX_OBJECT: u64 = 1024 * 1024;
/// Bytes of small objects read ahead, in all.
pub const READ_AHEAD_BYTES: u64 = 8 * 1024 * 1024;
/// Small objects opened ahead of the workers (GETs in flight at most, beyond the
/// workers' own). Not tied to the core count: it hides S3's first-byte latency (20-100
/// ms), so a day of thousands of small files costs a few round trips, not one each.
pub const READ_AHEAD_FILES: usize = 256;

/// What opening one object gave.
pub enum Opened<S> {
    Body(Body),
    /// Not read: why is the caller's business (vanished, set aside...).
    Skip(S),
}

/// How the pool gets an object's bytes: the source store's GET, or a local file.
#[async_trait]
pub trait Open: Send + Sync + 'static {
    /// Why an object was not opened (set aside, gone), kept with its outcome.
    type Skip: Send + 'static;
    /// Opens `obj` for reading, or says why it is skipped; an error stops staging.
    async fn open(&self, obj: &ObjectMeta) -> Result<Opened<Self::Skip>, FileError>;
    /// The object's URL, as rejects and messages name it.
    fn url(&self, obj: &ObjectMeta) -> String;
}

/// How one file ended.
pub enum Outcome<S> {
    /// Cleaned and staged; its row ([`FileRow`] of this tally) is staged too.
    Staged {
        tally: FileTally,
        /// Its rejects, by reason.
        reasons: std::collections::BTreeMap<Reason, u64>,
    },
    Skipped(S),
}

/// Where the staged objects go and how they are cut.
#[derive(Clone)]
pub struct Target {
    pub place: Place,
    pub load_id: String,
    /// Under which every staged object goes (`<staging prefix><load_id>/`).
    pub prefix: String,
    pub part_size: u64,
    /// Whether the manifests wait for the last parts' uploads or go with them.
    pub manifests: ManifestOrder,
}

/// One staged load: the manifests, and each file's outcome in input order.
pub struct StagedFiles<S> {
    pub load: StagedLoad,
    pub outcomes: Vec<(ObjectMeta, Outcome<S>)>,
}

/// An object read ahead, holding its share of the read-ahead budget until cleaned.
enum Ahead<S> {
    Read(Input, Option<OwnedSemaphorePermit>),
    Skip(S),
    /// Too large to read ahead: the worker opens and streams it.
    Later,
}

type Handle<S> = JoinHandle<Result<Ahead<S>, FileError>>;
type Queue<S> = Arc<Mutex<mpsc::Receiver<(usize, ObjectMeta, Handle<S>)>>>;
/// What a worker did: its parts, and the outcomes of its files by their input index.
type Done<S> = (WrittenParts, Vec<(usize, Outcome<S>)>);

/// Cleans and stages `files` with `workers` workers (at least 1), then writes the
/// manifests (when, relative to the last parts, is `target.manifests`) and waits for
/// every write. The first error stops every worker and is returned; nothing is
/// recorded anywhere, and staged objects stay for inspection.
pub async fn stage_files<O: Open>(
    target: Target,
    cleaner: Arc<Cleaner>,
    opener: Arc<O>,
    files: Vec<ObjectMeta>,
    workers: usize,
) -> Result<StagedFiles<O::Skip>, FileError> {
    let workers = workers.clamp(1, files.len().max(1));
    let n = files.len();
    let (tx, rx) = mpsc::channel(READ_AHEAD_FILES);
    let queue: Queue<O::Skip> = Arc::new(Mutex::new(rx));
    let span = tracing::Span::current();
    let mut set = JoinSet::new();
    for i in 0..workers {
        let mut w = StageWriter::at_prefix(
            target.place.clone(),
            &target.load_id,
            target.prefix.clone(),
            target.part_size,
        );
        if workers > 1 {
            w = w.with_tag(format!("w{i}-")).with_in_flight(1);
        }
        set.spawn(work(queue.clone(), w, cleaner.clone(), opener.clone()).instrument(span.clone()));
    }
    drop(queue);
    let budget = Arc::new(Semaphore::new(kib(READ_AHEAD_BYTES)));
    let feed = async {
        for (i, obj) in files.iter().enumerate() {
            let handle: Handle<O::Skip> = if obj.size <= READ_AHEAD_MAX_OBJECT {
                // Taken in input order, released when the worker is done with it: the
                // object a worker waits for always holds its share.
                let permit = budget
                    .clone()
                    .acquire_many_owned(kib(obj.size).max(1) as u32)
                    .await
                    .map_err(|e| StageError::Join(e.to_string()))?;
                tokio::spawn(read_ahead(opener.clone(), obj.clone(), permit).instrument(span.clone()))
            } else {
                tokio::spawn(async { Ok(Ahead::Later) })
            };
            if tx.send((i, obj.clone(), handle)).await.is_err() {
                break; // the workers stopped: their error is returned below
            }
        }
        drop(tx);
        Ok::<(), FileError>(())
    };
    let drain = async {
        let mut parts = Vec::with_capacity(workers);
        let mut results: Vec<Option<Outcome<O::Skip>>> = (0..n).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok((p, done))) => {
                    parts.push(p);
                    for (i, outcome) in done {
                        results[i] = Some(outcome);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(StageError::Join(e.to_string()).into()),
            }
        }
        Ok((parts, results))
    };
    let ((), (parts, results)) = tokio::try_join!(feed, drain)?;
    let load = write_manifests(
        &target.place,
        &target.load_id,
        &target.prefix,
        parts,
        target.manifests,
    )
    .await?;
    let mut outcomes = Vec::with_capacity(n);
    for (obj, r) in files.into_iter().zip(results) {
        let r = r.ok_or_else(|| StageError::Join(format!("{} was never cleaned", obj.key)))?;
        outcomes.push((obj, r));
    }
    Ok(StagedFiles { load, outcomes })
}

/// Read-ahead budget units: KiB, rounded up, so a `u32` of permits covers any budget.
fn kib(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX)
}

/// Opens a small object and reads it whole, so its first-byte latency overlaps others'.
async fn read_ahead<O: Open>(
    opener: Arc<O>,
    obj: ObjectMeta,
    permit: OwnedSemaphorePermit,
) -> Result<Ahead<O::Skip>, FileError> {
    let body = match opener.open(&obj).await? {
        Opened::Body(b) => b,
        Opened::Skip(s) => return Ok(Ahead::Skip(s)),
    };
    // The listing's size bounds what is read ahead; should the object have grown since,
    // the rest is streamed after it.
    let mut head = body.take(READ_AHEAD_MAX_OBJECT + 1);
    let mut bytes = Vec::with_capacity(usize::try_from(obj.size).unwrap_or(0));
    head.read_to_end(&mut bytes)
        .await
        .map_err(|source| FileError::Read {
            url: opener.url(&obj),
            source,
        })?;
    let rest = head.into_inner();
    let input = if (bytes.len() as u64) <= READ_AHEAD_MAX_OBJECT {
        Input::Bytes(bytes)
    } else {
        Input::Stream(Box::new(std::io::Cursor::new(bytes).chain(rest)))
    };
    Ok(Ahead::Read(input, Some(permit)))
}

/// One worker: takes the next file in input order, cleans it whole into its writer.
async fn work<O: Open>(
    queue: Queue<O::Skip>,
    mut w: StageWriter,
    cleaner: Arc<Cleaner>,
    opener: Arc<O>,
) -> Result<Done<O::Skip>, FileError> {
    let mut done = Vec::new();
    loop {
        let next = queue.lock().await.recv().await;
        let Some((i, obj, handle)) = next else { break };
        let ahead = handle.await.map_err(|e| StageError::Join(e.to_string()))??;
        let (body, permit) = match ahead {
            Ahead::Read(body, permit) => (body, permit),
            Ahead::Skip(s) => {
                done.push((i, Outcome::Skipped(s)));
                continue;
            }
            Ahead::Later => match opener.open(&obj).await? {
                Opened::Body(body) => (Input::Stream(body), None),
                Opened::Skip(s) => {
                    done.push((i, Outcome::Skipped(s)));
                    continue;
                }
            },
        };
        let url = opener.url(&obj);
        let cleaned = clean_object(&cleaner, &obj.key, &url, body, &mut w).await?;
        drop(permit);
        #[cfg(feature = "test-hooks")]
        if std::env::var("EVENTS_ETL_TEST_POISON_KEY").is_ok_and(|k| k.split(',').any(|k| k == obj.key)) {
            w.poison_event(&obj.key)?;
        }
        telemetry::progress_file(obj.size, cleaned.tally.events);
        w.file(&FileRow::new(&obj.key, &obj.etag, obj.size, &cleaned.tally))?;
        w.flush_full().await?;
        done.push((
            i,
            Outcome::Staged {
                tally: cleaned.tally,
                reasons: cleaned.reasons,
            },
        ));
        // Let read-ahead and upload tasks run between files, whatever the data.
        tokio::task::yield_now().await;
    }
    // The last parts' uploads are left running: the manifests can go with them.
    Ok((w.close_parts().await?, done))
}

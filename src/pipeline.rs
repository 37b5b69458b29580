//! One run, step by step: discover -> clean -> stage -> load (COPY + insert) -> record.
//! Nothing but orchestration: each step lives in its own module.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use thiserror::Error;
use tracing::Instrument as _;

use crate::clean::{Cleaner, FileTally, Reason};
use crate::discover;
use crate::failure::{FailureClass, Systemic};
use crate::stage::pool;
use crate::stage::writer::StageError;
use crate::stage::{clean_object, FileError};
use crate::stage::{FileRow, ManifestOrder, StageWriter, StagedLoad};
use crate::store::{Body, ObjectMeta, Place, StoreError};
use crate::telemetry;
use crate::warehouse::{
    KnownPending, LoadRow, Loaded, QuarantineReason, Quarantined, StagedRead, Warehouse, WarehouseError,
};

/// What one pass over the source found ([`Pipeline::scan`]).
#[derive(Debug, Default)]
pub struct Scan {
    /// Objects listed, event files or not.
    pub listed: usize,
    /// Event files listed.
    pub event_files: usize,
    /// When the newest event file listed was written.
    pub newest: Option<DateTime<Utc>>,
    /// The versions the control tables have not settled, in key order.
    pub pending: discover::Pending,
}

/// Why a run stopped, by where it arose; each maps to an exit code.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("source: {0}")]
    Source(#[source] StoreError),
    #[error("reading {url}: {source} (transport error: nothing was recorded; rerun)")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("staging: {0}")]
    Stage(#[from] StageError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// Many source objects of one run failed alike: the cause is the deployment, not the
    /// objects, so none of them is set aside.
    #[error("{failed} of the {read} source objects this run read failed alike ({code}), e.g. {example}; {}; likely cause: {}", FailureClass::Systemic.advice(), systemic_cause(code))]
    Systemic {
        /// The store's error code they share.
        code: String,
        failed: u64,
        read: u64,
        /// One of them, with the store's words.
        example: String,
    },
}

/// What usually makes many objects fail with this store error code at once.
fn systemic_cause(code: &str) -> &'static str {
    match code {
        "InvalidObjectState" => {
            "a lifecycle rule moves source objects to an archive storage class before they are loaded"
        }
        c if c.starts_with("KMS.") => "the task role lacks kms:Decrypt on the source bucket's key",
        _ => "the task role lacks s3:GetObject (or kms:Decrypt) on the source, or a bucket or VPC endpoint policy denies it",
    }
}

impl From<FileError> for PipelineError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Source(e) => PipelineError::Source(e),
            FileError::Read { url, source } => PipelineError::Read { url, source },
            FileError::Stage(e) => PipelineError::Stage(e),
        }
    }
}

impl PipelineError {
    /// How this failure is handled (see [`FailureClass`]).
    pub fn class(&self) -> FailureClass {
        match self {
            PipelineError::Source(e) => e.class(),
            PipelineError::Read { .. } => FailureClass::Transient,
            PipelineError::Stage(_) => FailureClass::Transient,
            PipelineError::Warehouse(e) => e.class(),
            PipelineError::Systemic { .. } => FailureClass::Systemic,
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// Event files under the source prefix.
    pub event_files: usize,
    /// Of those, files that were not yet recorded.
    pub pending: usize,
    /// The committed loads, in order.
    pub loads: Vec<LoadRow>,
    /// File versions this run quarantined instead of loading, and those it found gone
    /// (reason `vanished`).
    pub quarantined: Vec<Quarantined>,
    /// The files of the committed loads, as cleaned and staged: kept only when the
    /// pipeline's `file_rows` is set (`run --report-json`), since they grow with the
    /// files a run loads.
    pub files: Vec<FileRow>,
    /// The versions this run settled (loaded or quarantined), as 128-bit digests of
    /// (key, ETag): what is left pending is told from them without holding every
    /// settled key (16 bytes a file instead of its key and ETag).
    settled: std::collections::HashSet<u128>,
    /// Rejects of the committed loads' files, by reason.
    pub rejects_by_reason: BTreeMap<Reason, u64>,
    /// Seconds spent per step: `discover`, `stage` (read, clean, stage), `load`.
    pub seconds: BTreeMap<&'static str, f64>,
    /// Versions still pending when the run ended (`None` when it did not list).
    pub left_pending: Option<usize>,
    /// When the oldest of them was written.
    pub oldest_left: Option<DateTime<Utc>>,
    /// When the newest event file listed was written (`None` when it did not list).
    pub newest_source: Option<DateTime<Utc>>,
    /// Why the run stopped taking new loads before every pending file was taken
    /// (`--max-files` or `--max-duration` reached), if it did.
    pub stopped_early: Option<String>,
}

impl RunReport {
    /// Adds what a load did: its committed row, its files and their rejects by reason,
    /// and the files the warehouse refused in its own transaction (quarantined, not
    /// counted as loaded).
    fn add_load(
        &mut self,
        loaded: Loaded,
        file_rows: Vec<FileRow>,
        reasons: Vec<(String, BTreeMap<Reason, u64>)>,
        keep_rows: bool,
    ) {
        for q in &loaded.refused {
            telemetry::file_quarantined(&q.source_key, QuarantineReason::Refused.as_str(), &q.detail);
        }
        let refused = |key: &str| loaded.refused.iter().any(|q| q.source_key == key);
        if let Some(row) = &loaded.row {
            telemetry::load_committed(&telemetry::LoadCounts {
                load_id: &row.load_id,
                files: row.files,
                lines: row.lines,
                events_loaded: row.events_loaded,
                duplicates: row.duplicates,
                rejects: row.rejects,
                blank_lines: row.blank_lines,
            });
            let loaded = file_rows.into_iter().filter(|f| !refused(&f.source_key));
            for f in loaded {
                self.settled.insert(version_digest(&f.source_key, &f.etag));
                if keep_rows {
                    self.files.push(f);
                }
            }
            for (reason, n) in reasons
                .into_iter()
                .filter(|(key, _)| !refused(key))
                .flat_map(|(_, by_reason)| by_reason)
            {
                *self.rejects_by_reason.entry(reason).or_insert(0) += n;
            }
            if let Ok(n @ 1..) = u64::try_from(row.conflicts) {
                *self
                    .rejects_by_reason
                    .entry(Reason::ConflictingDuplicate)
                    .or_insert(0) += n;
            }
        }
        for q in &loaded.refused {
            self.settled.insert(version_digest(&q.source_key, &q.etag));
        }
        self.quarantined.extend(loaded.refused);
        self.loads.extend(loaded.row);
    }
}

/// Removes the files the warehouse refused a row of from `files`, returning their
/// quarantine rows.
fn take_refused(files: &mut Vec<ObjectMeta>, refused: &[crate::warehouse::RefusedFile]) -> Vec<Quarantined> {
    let mut set_aside = Vec::new();
    for r in refused {
        if let Some(at) = files.iter().position(|f| f.key == r.source_key) {
            let f = files.remove(at);
            telemetry::file_quarantined(&f.key, QuarantineReason::Refused.as_str(), &r.message);
            set_aside.push(Quarantined::new(
                &f.key,
                &f.etag,
                f.size,
                QuarantineReason::Refused,
                &r.message,
                Utc::now().naive_utc(),
            ));
        }
    }
    set_aside
}

/// What staging one load produced.
struct Staged {
    load: StagedLoad,
    /// Versions gone when read: recorded as lost at once.
    lost: Vec<Quarantined>,
    /// Versions the store would not read: quarantined at the end of the run, unless so
    /// many failed alike that the failure is systemic.
    unreadable: Vec<Suspect>,
    files: Vec<FileRow>,
    /// Rejects staged per file, by reason.
    reasons: Vec<(String, BTreeMap<Reason, u64>)>,
}

/// A source object the store would not read, held until the run knows whether the
/// failure is the object's or the deployment's.
#[derive(Debug, Clone)]
struct Suspect {
    file: ObjectMeta,
    reason: QuarantineReason,
    /// The store's error code.
    code: String,
    detail: String,
}

/// The objects of one run the store would not read, and how many it tried to read.
#[derive(Debug, Default)]
struct Unreadable {
    read: u64,
    held: Vec<Suspect>,
}

impl Unreadable {
    /// A systemic failure when more objects failed with one code than `rule` allows.
    fn systemic(&self, rule: Systemic) -> Option<PipelineError> {
        let mut by_code: BTreeMap<&str, Vec<&Suspect>> = BTreeMap::new();
        for s in &self.held {
            by_code.entry(s.code.as_str()).or_default().push(s);
        }
        let (code, alike) = by_code
            .into_iter()
            .find(|(_, alike)| rule.holds(alike.len() as u64, self.read))?;
        Some(PipelineError::Systemic {
            code: code.to_owned(),
            failed: alike.len() as u64,
            read: self.read,
            example: alike[0].detail.clone(),
        })
    }
}

/// Pending versions a run remembers at most (the rest of a larger backlog is not
/// watched for leaving the source until a run leaves fewer).
const MAX_REMEMBERED_PENDING: usize = 200_000;

/// Segments of a listing compared with the control tables at once: one being compared
/// while the next is ready. More would hold more days' listings for little gain, the
/// warehouse answering one query at a time per connection.
const COMPARES_IN_FLIGHT: usize = 2;

/// Open reload requests each run compares with its listing.
const OPEN_RELOADS_CHECKED: i64 = 100_000;

/// A file version as a 128-bit digest (the first half of the SHA-256 of its key, a NUL
/// and its ETag): two versions of one run's listing share one with a probability near
/// 2^-100, far below any hardware fault.
fn version_digest(key: &str, etag: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0u8]);
    h.update(etag.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// The positions of the pending versions a run did not settle: not loaded by a
/// committed load, not quarantined.
fn left_pending(pending: &discover::Pending, report: &RunReport) -> Vec<usize> {
    (0..pending.len())
        .filter(|&i| {
            !report
                .settled
                .contains(&version_digest(pending.key(i), pending.etag(i)))
        })
        .collect()
}

/// The pending files, of these sizes, cut into loads in order, as ranges of their
/// positions: each at most `max_files` files, and a new load started before the source
/// bytes would pass `max_bytes` (a file larger than `max_bytes` is a load of its own).
pub fn load_cut_ranges(
    sizes: impl IntoIterator<Item = u64>,
    max_files: usize,
    max_bytes: u64,
) -> Vec<std::ops::Range<usize>> {
    let mut cuts = Vec::new();
    let (mut start, mut bytes, mut n) = (0, 0u64, 0);
    for (i, size) in sizes.into_iter().enumerate() {
        let full = i - start >= max_files.max(1) || (i > start && bytes.saturating_add(size) > max_bytes);
        if full {
            cuts.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(size);
        n = i + 1;
    }
    if start < n {
        cuts.push(start..n);
    }
    cuts
}

/// Loads tried while narrowing one failed chunk of `n` files: enough to find two files
/// that fail alone (two loads per halving), few enough that a failure every load hits
/// (a revoked role) costs a bounded number of attempts before the run stops.
pub fn narrowing_budget(n: usize) -> u32 {
    let halvings = usize::BITS - n.max(1).saturating_sub(1).leading_zeros();
    4 * halvings + 4
}

/// A load id: sortable by time, unique across hosts.
pub fn new_load_id(now: DateTime<Utc>) -> String {
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", now.format("%Y%m%dT%H%M%S%.3fZ"), &rand[..8])
}

/// A range of date partitions, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
}

/// What cleaning would make of one pending file (`run --dry-run`).
#[derive(Debug)]
pub struct DryFile {
    pub file: ObjectMeta,
    pub tally: FileTally,
    pub reasons: BTreeMap<Reason, u64>,
}

/// An object store that keeps nothing: a dry run cleans and compresses as a run would,
/// and writes nothing anywhere.
#[derive(Debug)]
struct Discard;

#[async_trait::async_trait]
impl crate::store::ObjectStore for Discard {
    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(Vec::new())
    }
    async fn get(&self, key: &str) -> Result<Body, StoreError> {
        Err(StoreError::NotFound { url: self.url(key) })
    }
    async fn put(&self, _key: &str, _bytes: Vec<u8>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete_prefix(&self, _prefix: &str) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn delete(&self, _keys: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
    fn url(&self, key: &str) -> String {
        format!("discard:{key}")
    }
    fn key_of(&self, url: &str) -> Option<String> {
        url.strip_prefix("discard:").map(str::to_owned)
    }
}

/// The scheduled job: everything a run needs, built once.
pub struct Pipeline {
    pub source: Place,
    pub staging: Place,
    pub warehouse: Arc<dyn Warehouse>,
    pub part_size: u64,
    pub max_files_per_load: usize,
    pub keep_staging: bool,
    /// `[event_types]`: the cleaner's per-type contracts.
    pub event_types: Arc<crate::event_types::EventTypes>,
    /// Files read and cleaned at once (`load.concurrency`).
    pub concurrency: usize,
    /// A load's source bytes stay under this (`load.max_bytes`), unless one file alone
    /// is larger.
    pub max_bytes_per_load: u64,
    /// When unreadable source objects are the deployment's failure (`source.systemic_*`).
    pub systemic: Systemic,
    /// What a `created_at` without an offset means (`cleaning.naive_timezone`).
    pub naive_timezone: chrono_tz::Tz,
    /// How much one run takes on (`run --max-files`, `--max-duration`).
    pub budget: RunBudget,
    /// Source listings in flight at once (`source.list_concurrency`).
    pub list_concurrency: usize,
    /// Keep each loaded file's row in the run report ([`RunReport::files`]), for `run
    /// --report-json`: off by default, since the rows grow with the files a run loads.
    pub file_rows: bool,
}

/// Bounds on the work of one run, so that a backlog is worked off over several
/// scheduled runs instead of one run that overlaps the next. What a run does not take
/// stays pending for the next; the loads it takes are cut as without a budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunBudget {
    /// Take at most this many pending files (the first, in key order).
    pub max_files: Option<usize>,
    /// Start no new load once the run has lasted this long; a load already started
    /// finishes.
    pub max_duration: Option<std::time::Duration>,
}

impl Pipeline {
    /// Step 1: the event files under the source prefix that are not recorded yet,
    /// limited to the date partitions `from..=to` when given: only the
    /// `<prefix>YYYY/MM/DD/` prefixes of those days are listed.
    pub async fn discover_in(&self, days: Option<Days>) -> Result<(usize, Vec<ObjectMeta>), PipelineError> {
        let scan = self.scan(days, |_| {}).await?;
        Ok((scan.event_files, scan.pending.to_vec()))
    }

    /// Step 1 in one pass: lists the source (only the partitions of `days`, when given)
    /// segment by segment (a day, or what lies outside the date layout; see
    /// [`discover::segments`]), compares each segment's event files with the control
    /// tables restricted to those keys, and keeps the versions not settled. `seen` is
    /// shown each segment's event files as they are listed. At most `list_concurrency`
    /// segments are being listed and [`COMPARES_IN_FLIGHT`] compared at once: memory
    /// holds those and the pending versions (the run's new work), never the whole
    /// window's listing.
    pub async fn scan(
        &self,
        days: Option<Days>,
        mut seen: impl FnMut(&[ObjectMeta]) + Send,
    ) -> Result<Scan, PipelineError> {
        let store = self.source.store.as_ref();
        let segments = match days {
            Some(Days { from, to }) => discover::each(
                store,
                discover::day_prefixes(&self.source.prefix, from, to),
                self.list_concurrency,
            ),
            None => discover::segments(store, &self.source.prefix, self.list_concurrency),
        };
        let (mut listed, mut event_files, mut newest) = (0usize, 0usize, None);
        let mut pending = discover::Pending::default();
        {
            let mut unsettled = segments
                .map_err(PipelineError::Source)
                .map_ok(|segment| {
                    listed += segment.len();
                    let files: Vec<ObjectMeta> = segment
                        .into_iter()
                        .filter(|o| discover::is_event_file(&o.key))
                        .collect();
                    event_files += files.len();
                    newest = newest.max(files.iter().filter_map(|f| f.last_modified).max());
                    seen(&files);
                    self.unsettled(files)
                })
                .try_buffered(COMPARES_IN_FLIGHT);
            while let Some(p) = unsettled.try_next().await? {
                for o in p {
                    pending.push(o);
                }
            }
        }
        pending.sort();
        telemetry::files_discovered(listed, event_files, pending.len());
        Ok(Scan {
            listed,
            event_files,
            newest,
            pending,
        })
    }

    /// Of these listed event files, the versions the control tables have not settled
    /// (loaded or quarantined), in key order.
    pub async fn unsettled(&self, event_files: Vec<ObjectMeta>) -> Result<Vec<ObjectMeta>, PipelineError> {
        if event_files.is_empty() {
            return Ok(event_files);
        }
        let versions: Vec<(&str, &str)> = event_files
            .iter()
            .map(|o| (o.key.as_str(), o.etag.as_str()))
            .collect();
        let unsettled = self.warehouse.unsettled_versions(&versions).await?;
        drop(versions);
        let mut keep = unsettled.into_iter().peekable();
        let mut pending: Vec<ObjectMeta> = event_files
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.next_if_eq(i).is_some())
            .map(|(_, o)| o)
            .collect();
        pending.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(pending)
    }

    /// Closes the open reload requests of `gone`, versions the source no longer lists:
    /// nothing can read them again, and an open request would stay open forever.
    async fn close_gone_reloads(&self, gone: Vec<(String, String)>) -> Result<(), PipelineError> {
        if gone.is_empty() {
            return Ok(());
        }
        for (key, etag) in &gone {
            tracing::warn!(
                key,
                etag,
                "a reload was requested for a version the source no longer lists; request closed"
            );
        }
        self.warehouse.close_reloads_gone(&gone).await?;
        Ok(())
    }

    /// Loads every pending file, `max_files_per_load` files per transaction. `now` is
    /// the run's start: it bounds `created_at` for the whole run.
    ///
    /// Failures are handled by their [`FailureClass`], decided where they arise:
    /// - permanent for one object (archived, unreadable, a staged row the warehouse
    ///   refuses): that version is recorded in `etl_quarantine` and the rest loads. An
    ///   unreadable object is held until the run ends, and when more of the run's objects
    ///   failed alike than `source.systemic_*` allows, the run fails instead and sets none
    ///   of them aside;
    /// - an object gone when read is recorded as lost (reason `vanished`);
    /// - transient or systemic (throttling, a timeout, a dropped connection, a permission
    ///   on the bucket or the warehouse): the run fails with nothing of the load recorded
    ///   and nothing set aside; the next run retries it.
    pub async fn run(&self, now: DateTime<Utc>, days: Option<Days>) -> Result<RunReport, PipelineError> {
        let (report, result) = self.run_reporting(now, days).await;
        result.map(|()| report)
    }

    /// [`Pipeline::run`], with the report of what the run did even when it failed (the
    /// loads that committed, the files it quarantined, what is left pending when the
    /// listing succeeded): the metrics and the run report come from it, with no second
    /// listing.
    pub async fn run_reporting(
        &self,
        now: DateTime<Utc>,
        days: Option<Days>,
    ) -> (RunReport, Result<(), PipelineError>) {
        let mut report = RunReport::default();
        let result = self.run_into(now, days, &mut report).await;
        (report, result)
    }

    async fn run_into(
        &self,
        now: DateTime<Utc>,
        days: Option<Days>,
        report: &mut RunReport,
    ) -> Result<(), PipelineError> {
        let t = Instant::now();
        let ranges = self.listed_ranges(days);
        // What earlier runs left pending and the open reload requests, checked off
        // against the listing as it goes by: what is not seen has left the source.
        let mut remembered = Vec::new();
        let mut known = Vec::new();
        for (low, high) in &ranges {
            let rows = self.warehouse.known_pending(low, high).await?;
            known.push(rows.len());
            remembered.extend(rows);
        }
        let mut remembered_seen: HashMap<String, bool> =
            remembered.iter().map(|p| (p.source_key.clone(), false)).collect();
        let covered = |key: &str| match days {
            Some(Days { from, to }) => {
                let (low, high) = discover::day_range(&self.source.prefix, from, to);
                low.as_str() <= key && key < high.as_str()
            }
            None => key.starts_with(&self.source.prefix),
        };
        let mut reloads_seen: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        for r in self.warehouse.open_reloads(OPEN_RELOADS_CHECKED).await? {
            if covered(&r.source_key) {
                reloads_seen
                    .entry(r.source_key)
                    .or_default()
                    .push((r.etag, false));
            }
        }
        let scan = self
            .scan(days, |files| {
                for f in files {
                    if let Some(seen) = remembered_seen.get_mut(f.key.as_str()) {
                        *seen = true;
                    }
                    if let Some(versions) = reloads_seen.get_mut(f.key.as_str()) {
                        for (etag, seen) in versions.iter_mut() {
                            *seen |= *etag == f.etag;
                        }
                    }
                }
            })
            .await?;
        report.event_files = scan.event_files;
        report.newest_source = scan.newest;
        let gone_reloads: Vec<(String, String)> = reloads_seen
            .into_iter()
            .flat_map(|(key, versions)| {
                versions
                    .into_iter()
                    .filter(|(_, seen)| !seen)
                    .map(move |(etag, _)| (key.clone(), etag))
            })
            .collect();
        self.close_gone_reloads(gone_reloads).await?;
        let gone: Vec<KnownPending> = remembered
            .into_iter()
            .filter(|p| remembered_seen.get(&p.source_key) == Some(&false))
            .collect();
        self.record_vanished(gone, report).await?;
        let pending = scan.pending;
        report.pending = pending.len();
        report.seconds.insert("discover", t.elapsed().as_secs_f64());
        let cleaner = Arc::new(self.cleaner(now));
        telemetry::progress_begin(pending.len(), (0..pending.len()).map(|i| pending.size(i)).sum());
        let taken = match self.budget.max_files {
            Some(n) if n < pending.len() => {
                report.stopped_early = Some(format!("--max-files {n} reached"));
                n
            }
            _ => pending.len(),
        };
        let deadline = self.budget.max_duration.map(|d| t + d);
        let result = self.load_all(&cleaner, &pending, taken, deadline, report).await;
        telemetry::progress_end();
        let left = left_pending(&pending, report);
        report.left_pending = Some(left.len());
        if let Some(why) = &report.stopped_early {
            tracing::info!(
                left_pending = left.len(),
                "{why}: no new loads taken; the rest stays pending for the next run"
            );
        }
        report.oldest_left = left.iter().filter_map(|&i| pending.last_modified(i)).min();
        self.remember_left(&pending, &left, &ranges, &known).await;
        result
    }

    /// The cleaner of a run started at `now`.
    fn cleaner(&self, now: DateTime<Utc>) -> Cleaner {
        Cleaner::new(now)
            .with_event_types(self.event_types.clone())
            .with_naive_timezone(self.naive_timezone)
    }

    /// The key ranges a listing of `days` (or of the whole source) covers.
    fn listed_ranges(&self, days: Option<Days>) -> Vec<(String, String)> {
        match days {
            Some(Days { from, to }) => vec![discover::day_range(&self.source.prefix, from, to)],
            None => vec![discover::prefix_range(&self.source.prefix)],
        }
    }

    /// Versions an earlier run listed and left pending that this listing of the same
    /// range no longer holds (`gone`), and that were not settled meanwhile: recorded as
    /// lost (reason `vanished`). A key listed again with another ETag was overwritten,
    /// not lost, and is not in `gone`.
    async fn record_vanished(
        &self,
        gone: Vec<KnownPending>,
        report: &mut RunReport,
    ) -> Result<(), PipelineError> {
        if gone.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = gone.iter().map(|p| p.source_key.clone()).collect();
        let settled = self.warehouse.recorded_versions(&keys).await?;
        let now = Utc::now().naive_utc();
        let lost: Vec<Quarantined> = gone
            .iter()
            .filter(|p| !settled.contains(&(p.source_key.clone(), p.etag.clone())))
            .map(|p| {
                let url = self.source.store.url(&p.source_key);
                telemetry::file_vanished(&url);
                Quarantined::new(
                    &p.source_key,
                    &p.etag,
                    u64::try_from(p.size_bytes).unwrap_or(0),
                    QuarantineReason::Vanished,
                    &format!(
                        "{url} was listed pending on {} and left the source before it was loaded \
                         (expired or deleted): its events were not loaded; if a copy exists, upload \
                         it again (a new version loads), then `events-etl quarantine resolve`",
                        p.listed_at
                    ),
                    now,
                )
            })
            .collect();
        self.quarantine(&lost, report).await
    }

    /// Remembers the pending versions this run did not settle (it failed, or stopped
    /// early), replacing what earlier runs remembered of the ranges it listed: the next
    /// run can then tell a version that left the source without loading. Best effort: a
    /// failure only loses that knowledge, with a warning.
    async fn remember_left(
        &self,
        pending: &discover::Pending,
        left: &[usize],
        ranges: &[(String, String)],
        known: &[usize],
    ) {
        let now = Utc::now().naive_utc();
        for (i, (low, high)) in ranges.iter().enumerate() {
            let left: Vec<ObjectMeta> = left
                .iter()
                .filter(|&&p| low.as_str() <= pending.key(p) && pending.key(p) < high.as_str())
                .take(MAX_REMEMBERED_PENDING)
                .map(|&p| pending.get(p))
                .collect();
            if left.is_empty() && known.get(i) == Some(&0) {
                continue; // nothing was remembered, nothing is left: nothing to write
            }
            if let Err(e) = self.warehouse.remember_pending(low, high, &left, now).await {
                tracing::warn!(error = %e, "could not record the files left pending; a later run cannot tell if they leave the source unloaded");
            }
        }
    }

    /// The loads of a run, at most `max_files_per_load` files and `max_bytes_per_load`
    /// source bytes each (see [`load_cuts`]), each narrowed when it fails without naming
    /// a file (see [`Pipeline::load_narrowing`]). Then the files that failed alone are
    /// quarantined when other loads of the run committed (without that, nothing shows
    /// the failure is theirs: the run fails), and the unreadable objects unless they are
    /// a systemic failure.
    async fn load_all(
        &self,
        cleaner: &Arc<Cleaner>,
        pending: &discover::Pending,
        taken: usize,
        deadline: Option<Instant>,
        report: &mut RunReport,
    ) -> Result<(), PipelineError> {
        let mut unreadable = Unreadable::default();
        let mut alone: Vec<(ObjectMeta, WarehouseError)> = Vec::new();
        let sizes = (0..taken).map(|i| pending.size(i));
        let cuts = load_cut_ranges(sizes, self.max_files_per_load, self.max_bytes_per_load);
        for range in cuts {
            let chunk: Vec<ObjectMeta> = range.map(|i| pending.get(i)).collect();
            let chunk = &chunk[..];
            if deadline.is_some_and(|d| Instant::now() >= d) {
                report.stopped_early = Some("--max-duration reached".to_owned());
                break;
            }
            unreadable.read += chunk.len() as u64;
            self.load_narrowing(cleaner, chunk, report, &mut unreadable, &mut alone)
                .await?;
            if let Some(e) = unreadable.systemic(self.systemic) {
                return Err(e);
            }
        }
        // A file that alone outlasts the statement timeout is not broken: it stays
        // pending (the run fails once everything else has loaded; raise the timeout).
        let (timed_out, alone): (Vec<_>, Vec<_>) = alone.into_iter().partition(|(_, e)| {
            matches!(
                e,
                WarehouseError::Timeout { .. } | WarehouseError::Cancelled { .. }
            )
        });
        if !alone.is_empty() {
            if report.loads.is_empty() {
                let mut alone = alone;
                return Err(alone.swap_remove(0).1.into());
            }
            let refused: Vec<Quarantined> = alone
                .iter()
                .map(|(f, e)| {
                    let detail =
                        format!("loaded alone, this file failed while other files of the run loaded: {e}");
                    telemetry::file_quarantined(&f.key, QuarantineReason::Refused.as_str(), &detail);
                    Quarantined::new(
                        &f.key,
                        &f.etag,
                        f.size,
                        QuarantineReason::Refused,
                        &detail,
                        Utc::now().naive_utc(),
                    )
                })
                .collect();
            self.quarantine(&refused, report).await?;
        }
        let set_aside: Vec<Quarantined> = unreadable
            .held
            .iter()
            .map(|s| {
                telemetry::file_quarantined(&s.file.key, s.reason.as_str(), &s.detail);
                Quarantined::new(
                    &s.file.key,
                    &s.file.etag,
                    s.file.size,
                    s.reason,
                    &s.detail,
                    Utc::now().naive_utc(),
                )
            })
            .collect();
        self.quarantine(&set_aside, report).await?;
        if let Some((f, e)) = timed_out.into_iter().next() {
            tracing::warn!(key = %f.key, "this file alone outlasts the warehouse's statement timeout; it stays pending");
            return Err(e.into());
        }
        Ok(())
    }

    /// Loads one chunk. When its load fails in a way that names no file
    /// ([`WarehouseError::narrowable`]: a timeout, a COPY error without a row), its two
    /// halves are loaded on their own, and each half that fails so is split again, so the
    /// rest of the chunk loads within this run instead of every run retrying the whole
    /// chunk first. A file that fails alone is added to `alone`. At most
    /// [`narrowing_budget`] loads are tried; past that the run fails with the error.
    async fn load_narrowing(
        &self,
        cleaner: &Arc<Cleaner>,
        chunk: &[ObjectMeta],
        report: &mut RunReport,
        unreadable: &mut Unreadable,
        alone: &mut Vec<(ObjectMeta, WarehouseError)>,
    ) -> Result<(), PipelineError> {
        let mut files = chunk.to_vec();
        let first = match self.load_chunk(cleaner, &mut files, report, unreadable).await {
            Err(PipelineError::Warehouse(e)) if e.narrowable() => e,
            other => return other,
        };
        let mut budget = narrowing_budget(files.len());
        let mut stack = vec![(files, first)];
        while let Some((mut files, err)) = stack.pop() {
            if files.len() <= 1 {
                if let Some(f) = files.pop() {
                    alone.push((f, err));
                }
                continue;
            }
            telemetry::load_narrowed(files.len(), &err);
            let right = files.split_off(files.len() / 2);
            let mut failed = Vec::new();
            for mut half in [files, right] {
                if budget == 0 {
                    return Err(err.into());
                }
                budget -= 1;
                match self.load_chunk(cleaner, &mut half, report, unreadable).await {
                    Ok(()) => {}
                    Err(PipelineError::Warehouse(e)) if e.narrowable() => failed.push((half, e)),
                    Err(e) => return Err(e),
                }
            }
            // The left half first: loads stay in key order where they can.
            stack.extend(failed.into_iter().rev());
        }
        Ok(())
    }

    /// One load of `files`: staged and loaded; a file whose staged row the warehouse
    /// refuses is quarantined and the rest staged again. Files that could not be read,
    /// or were quarantined, are removed from `files`, so that on failure it holds what
    /// is left to load.
    async fn load_chunk(
        &self,
        cleaner: &Arc<Cleaner>,
        files: &mut Vec<ObjectMeta>,
        report: &mut RunReport,
        unreadable: &mut Unreadable,
    ) -> Result<(), PipelineError> {
        let timed = |report: &mut RunReport, step: &'static str, t: Instant| {
            *report.seconds.entry(step).or_insert(0.0) += t.elapsed().as_secs_f64();
        };
        // Each pass quarantines at least one file or ends: at most len + 1 passes.
        loop {
            let started = Utc::now();
            let load_id = new_load_id(started);
            // Every log line of this load carries its id (JSON logs: in `spans`).
            let span = tracing::info_span!("load", load_id = %load_id);
            let t = Instant::now();
            let Staged {
                load: staged,
                lost,
                unreadable: held,
                files: file_rows,
                reasons,
            } = self
                .stage(cleaner, &load_id, files)
                .instrument(span.clone())
                .await?;
            timed(report, "stage", t);
            self.quarantine(&lost, report).await?;
            // A later pass need not open them again.
            files.retain(|f| {
                !lost.iter().any(|q| q.source_key == f.key) && !held.iter().any(|s| s.file.key == f.key)
            });
            unreadable.held.extend(held);
            let t = Instant::now();
            let (loaded, deleted) = if staged.files_staged == 0 {
                (Ok(Loaded::default()), false) // every file of the chunk vanished or was set aside
            } else {
                self.load_releasing(&staged, started, &span).await
            };
            let loaded = match loaded {
                Ok(loaded) => loaded,
                Err(WarehouseError::Refused {
                    statement,
                    files: refused,
                }) => {
                    timed(report, "load", t);
                    // The rows of these files are refused: all of them are set aside
                    // at once, and the rest is staged and loaded again without them.
                    let set_aside = take_refused(files, &refused);
                    if set_aside.is_empty() {
                        return Err(WarehouseError::Refused {
                            statement,
                            files: refused,
                        }
                        .into());
                    }
                    self.quarantine(&set_aside, report).await?;
                    if !self.keep_staging {
                        // Nothing will read this pass's objects (cleaned emails, IPs).
                        self.delete_staged(&staged).await;
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            timed(report, "load", t);
            files.retain(|f| !loaded.refused.iter().any(|q| q.source_key == f.key));
            span.in_scope(|| report.add_load(loaded, file_rows, reasons, self.file_rows));
            if !self.keep_staging && !deleted {
                // The warehouse did not say its COPYs had read them (or every file
                // was set aside): the load has ended, so now.
                self.delete_staged(&staged).await;
            }
            return Ok(());
        }
    }

    /// Steps 4 and 5 for one staged load, with its staged objects deleted as soon as the
    /// load's COPYs have read them, while it merges and commits (see [`StagedRead`]).
    /// Returns the load's outcome and whether the objects were deleted meanwhile.
    async fn load_releasing(
        &self,
        staged: &StagedLoad,
        started: DateTime<Utc>,
        span: &tracing::Span,
    ) -> (Result<Loaded, WarehouseError>, bool) {
        let (read, was_read) = StagedRead::channel();
        let delete_once_read = async {
            if self.keep_staging || was_read.await.is_err() {
                return false;
            }
            self.delete_staged(staged).await;
            true
        };
        tokio::join!(
            self.warehouse
                .load_reporting(staged, started.naive_utc(), read)
                .instrument(span.clone()),
            delete_once_read.instrument(span.clone()),
        )
    }

    /// Deletes a load's staged objects once nothing will read them. A failure only leaves
    /// objects behind (a warning): the load's outcome does not depend on it. The load
    /// knows every key it wrote, so no listing is needed.
    async fn delete_staged(&self, staged: &StagedLoad) {
        if let Err(e) = self.staging.store.delete(&staged.objects).await {
            tracing::warn!(error = %e, prefix = %staged.prefix, "could not delete staged objects");
        }
    }

    /// `run --dry-run`: what cleaning would make of each pending file. Reads the source
    /// and the control tables; writes nothing to staging or the warehouse. Each file is
    /// cleaned on its own, so memory stays bounded by one file's parts.
    pub async fn dry_run(
        &self,
        now: DateTime<Utc>,
        days: Option<Days>,
    ) -> Result<Vec<DryFile>, PipelineError> {
        let (_, pending) = self.discover_in(days).await?;
        let cleaner = self.cleaner(now);
        let discard = Place {
            store: Arc::new(Discard),
            prefix: String::new(),
        };
        let mut out = Vec::new();
        for obj in pending {
            let url = self.source.store.url(&obj.key);
            let body = match self.source.store.get(&obj.key).await {
                Ok(body) => body,
                Err(
                    StoreError::NotFound { .. } | StoreError::Archived { .. } | StoreError::Unreadable { .. },
                ) => continue,
                Err(e) => return Err(PipelineError::Source(e)),
            };
            let mut w = StageWriter::new(discard.clone(), "dry-run", self.part_size);
            let cleaned = clean_object(&cleaner, &obj.key, &url, body, &mut w).await?;
            out.push(DryFile {
                file: obj,
                tally: cleaned.tally,
                reasons: cleaned.reasons,
            });
        }
        Ok(out)
    }

    /// Records quarantined file versions (their own transaction) and reports them.
    async fn quarantine(&self, files: &[Quarantined], report: &mut RunReport) -> Result<(), PipelineError> {
        if files.is_empty() {
            return Ok(());
        }
        self.warehouse.quarantine(files).await?;
        for q in files {
            report.settled.insert(version_digest(&q.source_key, &q.etag));
        }
        report.quarantined.extend_from_slice(files);
        Ok(())
    }

    /// Steps 2 and 3: clean the files into staged parts, `concurrency` at once (see
    /// [`crate::stage::pool`]), and write the manifests. Also returns the files that
    /// could not be read: gone, archived or unreadable.
    async fn stage(
        &self,
        cleaner: &Arc<Cleaner>,
        load_id: &str,
        files: &[ObjectMeta],
    ) -> Result<Staged, PipelineError> {
        let target = pool::Target {
            place: self.staging.clone(),
            load_id: load_id.to_owned(),
            prefix: self.staging.key(&format!("{load_id}/")),
            part_size: self.part_size,
            // A fresh `<load_id>/` prefix, read only by this load once every write of
            // it succeeded: the manifests need not wait for the last parts.
            manifests: ManifestOrder::WithLastParts,
        };
        let opener = Arc::new(SourceOpener {
            source: self.source.clone(),
        });
        let staged =
            pool::stage_files(target, cleaner.clone(), opener, files.to_vec(), self.concurrency).await?;
        let (mut lost, mut unreadable) = (Vec::new(), Vec::new());
        let mut file_rows = Vec::new();
        let mut reasons = Vec::new();
        for (obj, outcome) in staged.outcomes {
            match outcome {
                pool::Outcome::Staged { tally, reasons: r } => {
                    file_rows.push(FileRow::new(&obj.key, &obj.etag, obj.size, &tally));
                    reasons.push((obj.key.clone(), r));
                }
                pool::Outcome::Skipped(Skip::Vanished(detail)) => lost.push(Quarantined::new(
                    &obj.key,
                    &obj.etag,
                    obj.size,
                    QuarantineReason::Vanished,
                    &detail,
                    Utc::now().naive_utc(),
                )),
                pool::Outcome::Skipped(Skip::Unreadable { reason, code, detail }) => {
                    unreadable.push(Suspect {
                        file: obj,
                        reason,
                        code,
                        detail,
                    })
                }
            }
        }
        let load = staged.load;
        telemetry::load_staged(load_id, files.len(), load.events_staged, load.rejects_staged);
        Ok(Staged {
            load,
            lost,
            unreadable,
            files: file_rows,
            reasons,
        })
    }
}

/// Why a source object was not read.
enum Skip {
    /// Listed, then gone (expired: the source deletes files after its retention, or
    /// removed): nothing is left to load, and the version is recorded as lost.
    Vanished(String),
    /// The store will not read it: archived, or refused with a permanent error code.
    Unreadable {
        reason: QuarantineReason,
        code: String,
        detail: String,
    },
}

/// Opens source objects for the staging pool. The object is always read: what the
/// listing says of its storage class is not trusted (a restored object still lists as
/// archived), the store's answer is.
struct SourceOpener {
    source: Place,
}

#[async_trait::async_trait]
impl pool::Open for SourceOpener {
    type Skip = Skip;

    async fn open(&self, obj: &ObjectMeta) -> Result<pool::Opened<Skip>, FileError> {
        let skip = |s| Ok(pool::Opened::Skip(s));
        match self.source.store.get(&obj.key).await {
            Ok(body) => Ok(pool::Opened::Body(body)),
            Err(StoreError::NotFound { url }) => {
                telemetry::file_vanished(&url);
                skip(Skip::Vanished(format!(
                    "{url} was listed but was gone when read (expired or deleted): its events were not loaded; \
                     if a copy exists, upload it again (a new version loads), then `events-etl quarantine resolve`"
                )))
            }
            Err(StoreError::Archived { url, message }) => skip(Skip::Unreadable {
                reason: QuarantineReason::Archived,
                code: "InvalidObjectState".to_owned(),
                detail: format!(
                    "{url} is in an archive storage class ({message}); restore it, then `events-etl reload --key {}`",
                    obj.key
                ),
            }),
            Err(StoreError::Unreadable { url, code, message }) => skip(Skip::Unreadable {
                reason: QuarantineReason::Unreadable,
                code,
                detail: format!("{url}: {message}"),
            }),
            Err(e) => Err(FileError::Source(e)),
        }
    }

    fn url(&self, obj: &ObjectMeta) -> String {
        self.source.store.url(&obj.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(sizes: &[u64]) -> Vec<u64> {
        sizes.to_vec()
    }

    fn shape(cuts: &[std::ops::Range<usize>]) -> Vec<usize> {
        cuts.iter().map(|c| c.len()).collect()
    }

    fn load_cuts(sizes: &[u64], max_files: usize, max_bytes: u64) -> Vec<std::ops::Range<usize>> {
        load_cut_ranges(sizes.iter().copied(), max_files, max_bytes)
    }

    #[test]
    fn loads_are_cut_by_files_and_by_bytes() {
        let f = files(&[10, 10, 10, 10, 10]);
        assert_eq!(shape(&load_cuts(&f, 2, 1000)), [2, 2, 1]);
        assert_eq!(shape(&load_cuts(&f, 100, 25)), [2, 2, 1]);
        assert_eq!(shape(&load_cuts(&f, 100, 30)), [3, 2]);
        // A file larger than the bound is a load of its own; none is ever empty.
        let f = files(&[5, 100, 5, 5]);
        assert_eq!(shape(&load_cuts(&f, 100, 20)), [1, 1, 2]);
        assert!(load_cuts(&[], 10, 10).is_empty());
        assert_eq!(shape(&load_cuts(&files(&[1, 1]), 0, 10)), [1, 1]);
    }

    #[test]
    fn narrowing_finds_two_files_within_its_budget() {
        // Two loads per halving, for two files: 4 per halving covers them.
        assert_eq!(narrowing_budget(1), 4);
        assert_eq!(narrowing_budget(2), 8);
        assert_eq!(narrowing_budget(5000), 4 * 13 + 4);
        assert!(narrowing_budget(usize::MAX) < 300);
    }
}

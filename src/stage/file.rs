//! Cleaning one object into a load's stage writer: its lines read, cleaned and staged as
//! events and rejects, with damaged gzip input handled as the cleaning contract says.

use std::collections::BTreeMap;

use thiserror::Error;

use super::writer::{Checkpoint, StageError};
use super::StageWriter;
use crate::clean::{Cleaner, FileTally, LineOutcome, Reason, Reject};
use crate::read::{At, GzipEnd, Input, LineReader};
use crate::store::StoreError;
use crate::telemetry;

/// Why a file could not be staged: nothing of it is recorded, and the next run retries.
#[derive(Debug, Error)]
pub enum FileError {
    /// The source store failed while opening the object (not a per-object refusal).
    #[error("source: {0}")]
    Source(#[source] StoreError),
    /// Reading the object's bytes failed part-way (a transport error).
    #[error("reading {url}: {source} (transport error: nothing was recorded; rerun)")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("staging: {0}")]
    Stage(#[from] StageError),
}

/// The result of cleaning one file into a stage writer.
pub struct CleanedFile {
    pub tally: FileTally,
    /// Rejects staged for the file, by reason.
    pub reasons: BTreeMap<Reason, u64>,
}

/// Bytes cleaned between two yields to the scheduler.
const YIELD_EVERY: usize = 256 * 1024;

/// Cleans one object's lines into `w`, recording rows and rejects.
///
/// Damaged gzip input (see docs/cleaning-contract.md):
/// - cut short ([`GzipEnd::Truncated`]): the complete lines load; a line the data ends
///   inside is that line's `invalid_gzip` reject;
/// - corrupt ([`GzipEnd::Corrupt`]: a deflate error, a CRC-32 or length mismatch, a bad
///   header, bytes that are no member): the lines of the members whose CRC-32 and length
///   verified before the damage are trustworthy and stay; every row written after the
///   last of them (a line that runs into the damaged member included) is rolled back,
///   and what follows is one `invalid_gzip` reject naming the member and offset. It is
///   recorded like any file, so it is not retried; a new version (new ETag) loads again.
///
/// A transport failure reading the body is an error: nothing of the file is recorded
/// and the next run retries it.
pub async fn clean_object(
    cleaner: &Cleaner,
    key: &str,
    url: &str,
    body: impl Into<Input>,
    w: &mut StageWriter,
) -> Result<CleanedFile, FileError> {
    let read_err = |source: std::io::Error| FileError::Read {
        url: url.to_owned(),
        source,
    };
    let mut trusted = Trusted {
        checkpoint: w.checkpoint(),
        tally: FileTally::default(),
        reasons: BTreeMap::new(),
        first_rejects: Vec::new(),
        members: 0,
    };
    let mut reader = LineReader::open(body, key).await.map_err(read_err)?;
    let mut tally = FileTally::default();
    let mut reasons = BTreeMap::new();
    let mut first_rejects = Vec::new();
    let mut since_yield = 0usize;
    while let Some(line) = reader.next_line().await.map_err(read_err)? {
        let no = line.no;
        // This line reaches past the end of a member whose CRC-32 and length verified:
        // what was staged before it is trustworthy whatever follows.
        if line.verified_before > trusted.members {
            trusted = Trusted {
                checkpoint: w.checkpoint(),
                tally,
                reasons: reasons.clone(),
                first_rejects: first_rejects.clone(),
                members: line.verified_before,
            };
        }
        since_yield += line.bytes.len() + 1;
        let outcome = match line.cut {
            Some(at) => LineOutcome::Reject(Reject {
                reason: Reason::InvalidGzip,
                raw: cut_line_message(&at, line.bytes).into(),
            }),
            None => cleaner.clean_line(no, line.bytes, line.too_long),
        };
        tally.add(&outcome);
        emit(w, key, no, outcome, &mut first_rejects, &mut reasons)?;
        w.flush_full().await?;
        if since_yield >= YIELD_EVERY {
            // A body read ahead into memory never makes the task wait: yield now and
            // then, so read-ahead and upload tasks keep running beside the cleaning.
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
    match reader.gzip_end() {
        Some(GzipEnd::Corrupt { at, detail }) => {
            let read = tally.lines;
            // Every line read lies within verified members: nothing to take back.
            let all_verified = reader
                .verified_ends()
                .last()
                .is_some_and(|&v| reader.line_end() <= v);
            let kept = if all_verified {
                reader.verified_ends().len()
            } else {
                w.rollback(trusted.checkpoint).await?;
                tally = trusted.tally;
                reasons = trusted.reasons;
                first_rejects = trusted.first_rejects;
                trusted.members
            };
            telemetry::gzip_corrupt(key, at.member, at.offset, detail, read);
            let loaded = match kept {
                0 => "no line of this file was loaded".to_owned(),
                m => format!(
                    "the {} lines of members 1 to {m}, whose CRC-32 and length verified, were loaded; the rest was not",
                    tally.lines
                ),
            };
            let outcome = LineOutcome::Reject(Reject {
                reason: Reason::InvalidGzip,
                raw: format!(
                    "gzip data is corrupt in member {} at or before compressed byte {}: {detail}; \
                     {loaded} ({read} lines had been read)",
                    at.member, at.offset
                )
                .into(),
            });
            let no = tally.lines + 1;
            tally.add(&outcome);
            emit(w, key, no, outcome, &mut first_rejects, &mut reasons)?;
        }
        Some(GzipEnd::Truncated(at)) => telemetry::gzip_truncated(key, at.member, at.offset, tally.lines),
        Some(GzipEnd::Verified { .. }) | None => {}
    }
    let by_reason: Vec<(&str, u64)> = reasons.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    let first: Vec<(u64, &str)> = first_rejects.iter().map(|(no, r)| (*no, r.as_str())).collect();
    telemetry::lines_rejected(key, &by_reason, &first);
    telemetry::file_cleaned(
        key,
        &telemetry::FileCounts {
            lines: tally.lines,
            events: tally.events,
            rejects: tally.rejects,
            blank_lines: tally.blank_lines,
            recovered: tally.recovered,
            invalid_ips: tally.invalid_ips,
        },
    );
    Ok(CleanedFile { tally, reasons })
}

/// What was staged for a file up to the end of its last gzip member whose CRC-32 and
/// length verified: where a corrupt member that follows is rolled back to.
struct Trusted {
    checkpoint: Checkpoint,
    tally: FileTally,
    reasons: BTreeMap<Reason, u64>,
    first_rejects: Vec<(u64, Reason)>,
    /// Verified members before it.
    members: usize,
}

/// The `raw` text of the reject for a line that gzip data ended inside: what happened,
/// then the start of what was read of the line.
fn cut_line_message(at: &At, bytes: &[u8]) -> String {
    const SHOWN: usize = 1024;
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]).replace('\0', "\u{FFFD}");
    format!(
        "gzip data ends early in member {} at compressed byte {}, inside this line \
         ({} bytes of it were read): {head}",
        at.member,
        at.offset,
        bytes.len()
    )
}

/// Writes one line's outcome to staging, counting rejects by reason and keeping the
/// file's first few (line, reason) for its one log line.
fn emit(
    w: &mut StageWriter,
    key: &str,
    no: u64,
    outcome: LineOutcome<'_>,
    first_rejects: &mut Vec<(u64, Reason)>,
    reasons: &mut BTreeMap<Reason, u64>,
) -> Result<(), StageError> {
    let mut reject = |w: &mut StageWriter, r: &Reject<'_>| {
        *reasons.entry(r.reason).or_insert(0) += 1;
        if first_rejects.len() < telemetry::REJECTS_LOGGED_PER_FILE {
            first_rejects.push((no, r.reason));
        }
        w.reject(key, no, r)
    };
    for row in outcome.into_rows() {
        match row {
            Ok(e) => w.event(key, no, &e)?,
            Err(r) => reject(w, &r)?,
        }
    }
    Ok(())
}

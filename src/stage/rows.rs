//! PURE: the staged row formats. Each row is one JSON object on one line whose keys are
//! the staging table's column names, which is what Redshift's `COPY ... FORMAT JSON
//! 'auto'` maps, and what the PostgreSQL adapter maps in `sql/postgres/load.sql`.

use std::io::Write;

use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::clean::{CleanEvent, FileTally, Reject};

/// `YYYY-MM-DD HH:MM:SS.ffffff`, the form both warehouses read as a TIMESTAMP.
pub struct Timestamp(pub NaiveDateTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        s.collect_str(&format_args!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond() / 1000
        ))
    }
}

#[derive(Serialize)]
struct EventRow<'a> {
    event_id: &'a str,
    created_at: Timestamp,
    user_email: &'a str,
    // Absent keys load as SQL NULL under COPY's JSON 'auto'; a JSON null into SUPER
    // would be a SUPER null, which is not the same as NULL to analysts.
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<std::net::IpAddr>,
    event_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a RawValue>,
    source_key: &'a str,
    source_line: u64,
}

#[derive(Serialize)]
struct RejectRow<'a> {
    source_key: &'a str,
    source_line: u64,
    reason: &'a str,
    /// `raw_line`: RAW is a Redshift reserved word.
    raw_line: &'a str,
}

/// One source file's control row, staged so that a load of many files never inlines
/// them into SQL text.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FileRow {
    pub source_key: String,
    pub etag: String,
    pub size_bytes: u64,
    pub lines: u64,
    pub blank_lines: u64,
    /// Clean events staged for this file, before deduplication.
    pub events_staged: u64,
    pub rejects: u64,
    pub recovered_events: u64,
    pub invalid_ips: u64,
}

impl FileRow {
    pub fn new(source_key: &str, etag: &str, size_bytes: u64, t: &FileTally) -> Self {
        FileRow {
            source_key: source_key.to_owned(),
            etag: etag.to_owned(),
            size_bytes,
            lines: t.lines,
            blank_lines: t.blank_lines,
            events_staged: t.events,
            rejects: t.rejects,
            recovered_events: t.recovered,
            invalid_ips: t.invalid_ips,
        }
    }
}

/// Appends one event row and its newline.
pub fn write_event(
    out: &mut (impl Write + ?Sized),
    key: &str,
    line: u64,
    e: &CleanEvent<'_>,
) -> std::io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &EventRow {
            event_id: &e.id,
            created_at: Timestamp(e.created_at),
            user_email: &e.user_email,
            ip: e.ip,
            event_name: &e.event_name,
            metadata: e.metadata,
            source_key: key,
            source_line: line,
        },
    )?;
    out.write_all(b"\n")
}

/// Appends one reject row and its newline.
pub fn write_reject(
    out: &mut (impl Write + ?Sized),
    key: &str,
    line: u64,
    r: &Reject<'_>,
) -> std::io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &RejectRow {
            source_key: key,
            source_line: line,
            reason: r.reason.as_str(),
            raw_line: &r.raw,
        },
    )?;
    out.write_all(b"\n")
}

/// Appends one file row and its newline.
pub fn write_file(out: &mut (impl Write + ?Sized), f: &FileRow) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, f)?;
    out.write_all(b"\n")
}

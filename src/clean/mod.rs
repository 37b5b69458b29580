//! PURE: the cleaning contract. One line of bytes in, one [`LineOutcome`] out; no IO,
//! no clock (the run's start is passed in), so every clause is unit-testable.
//!
//! The shell (`read::LineReader`, driven by `stage::file`) splits a file into lines and feeds them here in order;
//! [`FileTally`] counts what became of them. [`clean_bytes`] does both for a whole
//! in-memory file, for tests, benchmarks and small inputs.

pub(crate) mod fields;
mod json;
pub(crate) mod metadata;
mod reason;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use reason::Reason;

use crate::event_types::{EventTypes, UnknownEventTypes};
use fields::CreatedAt;
use json::{JsonKey, KeySet};

pub use crate::limits::MAX_LINE_BYTES;
/// How much of a rejected line is kept in `event_rejects.raw`.
pub const MAX_RAW_BYTES: usize = 4096;

/// A line that passed every check, normalised and ready to stage.
#[derive(Debug, Clone)]
pub struct CleanEvent<'a> {
    /// Lowercase hyphenated UUID.
    pub id: Cow<'a, str>,
    /// UTC, microsecond precision.
    pub created_at: NaiveDateTime,
    /// Trimmed, lowercase.
    pub user_email: Cow<'a, str>,
    /// `None` when absent, null or not an address (see `ip_was_invalid`).
    pub ip: Option<IpAddr>,
    /// The source sent an `ip` that was not an address; it was stored as NULL.
    pub ip_was_invalid: bool,
    /// Trimmed, lowercase.
    pub event_name: Cow<'a, str>,
    /// The metadata object exactly as sent (big integers and unicode untouched).
    pub metadata: Option<&'a RawValue>,
}

/// A rejected record: its reason and the start of its raw text.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject<'a> {
    pub reason: Reason,
    /// At most [`MAX_RAW_BYTES`], cut at a character boundary; invalid UTF-8 and NUL
    /// characters replaced by U+FFFD so the text can be stored anywhere.
    pub raw: Cow<'a, str>,
}

/// What became of one physical line.
#[derive(Debug, Clone)]
pub enum LineOutcome<'a> {
    /// Empty or whitespace only. Counted, not rejected.
    Blank,
    Event(CleanEvent<'a>),
    Reject(Reject<'a>),
    /// Unparseable line that ends in a complete `{"id"...}` object (a record glued to the
    /// next one): the fragment is cleaned like any other record, and so is the prefix
    /// when it is itself one complete object (`{...}{...}`); otherwise the prefix is a
    /// broken record, rejected as `malformed_json`. Stage it with
    /// [`LineOutcome::into_rows`].
    Recovered {
        prefix: Result<CleanEvent<'a>, Reject<'a>>,
        fragment: Result<CleanEvent<'a>, Reject<'a>>,
    },
}

/// One row to stage: an event or a reject.
pub type Row<'a> = Result<CleanEvent<'a>, Reject<'a>>;

impl<'a> LineOutcome<'a> {
    /// The rows to stage for this line, in line order. Two glued records with the same id
    /// stage only the first: the second is a duplicate of it, as the first copy of an id
    /// wins everywhere. It is counted among the file's events, so the warehouse counts it
    /// as a duplicate (staged events minus loaded). It must not be staged: both rows would
    /// share (key, line, id), which the warehouse's deduplication cannot order (Redshift's
    /// would delete both).
    pub fn into_rows(self) -> impl Iterator<Item = Row<'a>> {
        let rows: [Option<Row<'a>>; 2] = match self {
            LineOutcome::Blank => [None, None],
            LineOutcome::Event(e) => [Some(Ok(e)), None],
            LineOutcome::Reject(r) => [Some(Err(r)), None],
            LineOutcome::Recovered {
                prefix: Ok(first),
                fragment: Ok(second),
            } if first.id == second.id => [Some(Ok(first)), None],
            LineOutcome::Recovered { prefix, fragment } => [Some(prefix), Some(fragment)],
        };
        rows.into_iter().flatten()
    }
}

/// The fields we read; everything else in the object is skipped unparsed. Absent and
/// `null` are both `None`. A key that appears twice, known or not, fails the parse: the
/// object is ambiguous (parsers differ on which value wins), so the line is
/// `malformed_json`.
#[derive(Default)]
struct RawEvent<'a> {
    id: Option<&'a RawValue>,
    created_at: Option<&'a RawValue>,
    user_email: Option<&'a RawValue>,
    ip: Option<&'a RawValue>,
    event_name: Option<&'a RawValue>,
    metadata: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawEventVisitor)
    }
}

struct RawEventVisitor;

impl<'de> Visitor<'de> for RawEventVisitor {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEvent<'de>, A::Error> {
        let mut ev = RawEvent::default();
        // The six known keys by bit; any other key goes to `others`, allocated only when
        // the line has one.
        let mut known = 0u8;
        let mut others = KeySet::default();
        while let Some(JsonKey(key)) = map.next_key::<JsonKey<'de>>()? {
            let (bit, slot) = match key.as_ref() {
                "id" => (0, &mut ev.id),
                "created_at" => (1, &mut ev.created_at),
                "user_email" => (2, &mut ev.user_email),
                "ip" => (3, &mut ev.ip),
                "event_name" => (4, &mut ev.event_name),
                "metadata" => (5, &mut ev.metadata),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    if !others.insert(key) {
                        return Err(A::Error::custom("repeated key"));
                    }
                    continue;
                }
            };
            if known & (1 << bit) != 0 {
                return Err(A::Error::custom("repeated key"));
            }
            known |= 1 << bit;
            *slot = map.next_value()?;
        }
        Ok(ev)
    }
}

/// Why a record was rejected, with a note for the reject's text when the reason alone
/// does not say what to fix (which required metadata key was missing).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    reason: Reason,
    note: Option<String>,
}

impl From<Reason> for Fault {
    fn from(reason: Reason) -> Self {
        Fault { reason, note: None }
    }
}

impl Fault {
    /// The reject of `text` for this fault: the note, when there is one, then the text,
    /// cut to [`MAX_RAW_BYTES`] as every reject's text is.
    fn reject(self, text: &str) -> Reject<'_> {
        match self.note {
            None => reject_str(self.reason, text),
            Some(note) => {
                let full = format!("{note}: {text}");
                Reject {
                    reason: self.reason,
                    raw: Cow::Owned(reject_str(self.reason, &full).raw.into_owned()),
                }
            }
        }
    }
}

/// Applies the cleaning contract. Cheap to build and clone; holds the run's time window
/// and the configured event types (shared).
#[derive(Debug, Clone)]
pub struct Cleaner {
    latest: NaiveDateTime,
    types: Arc<EventTypes>,
    /// What a `created_at` without an offset means (`cleaning.naive_timezone`).
    naive_timezone: chrono_tz::Tz,
}

impl Cleaner {
    /// `run_started_at` bounds `created_at`: events more than a day in the future are
    /// rejected as `created_at_out_of_range`. No event type is configured: every type
    /// loads (see [`Cleaner::with_event_types`]).
    pub fn new(run_started_at: DateTime<Utc>) -> Self {
        Cleaner {
            latest: fields::latest_created_at(run_started_at),
            types: Arc::default(),
            naive_timezone: chrono_tz::Tz::UTC,
        }
    }

    /// A `created_at` without an offset is local time in `zone` (UTC otherwise).
    pub fn with_naive_timezone(mut self, zone: chrono_tz::Tz) -> Self {
        self.naive_timezone = zone;
        self
    }

    /// The per-type contracts of `[event_types]`: an event of a configured type must
    /// carry its `required_metadata` keys (`missing_metadata_key`), and with
    /// `cleaning.unknown_event_types = "reject"` an unconfigured type is rejected
    /// (`unknown_event_type`).
    pub fn with_event_types(mut self, types: Arc<EventTypes>) -> Self {
        self.types = types;
        self
    }

    /// Cleans one physical line. `line_no` is 1-based (line 1 may start with a BOM);
    /// `line` excludes the `\n` but may end in `\r`. When the reader stopped storing a
    /// line because it exceeded [`MAX_LINE_BYTES`], it passes the stored start and
    /// `too_long = true`. Time is linear in the line's length, whatever it holds.
    pub fn clean_line<'a>(&self, line_no: u64, line: &'a [u8], too_long: bool) -> LineOutcome<'a> {
        self.clean_line_counted(line_no, line, too_long, &mut Work::default())
    }

    /// [`Cleaner::clean_line`], adding the bytes each step went over to `work`.
    fn clean_line_counted<'a>(
        &self,
        line_no: u64,
        line: &'a [u8],
        too_long: bool,
        work: &mut Work,
    ) -> LineOutcome<'a> {
        let mut line = line;
        if line_no == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        // Length first: the reader keeps only a line's first MAX_LINE_BYTES (+1 for a CR),
        // so an over-long line's content is unknown and can be neither blank nor judged as
        // UTF-8. The table in docs/cleaning-contract.md documents this order.
        if too_long || line.len() > MAX_LINE_BYTES + usize::from(line.ends_with(b"\r")) {
            return LineOutcome::Reject(reject_bytes(Reason::RecordTooLarge, line));
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        work.add(line.len());
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(_) => return LineOutcome::Reject(reject_bytes(Reason::InvalidUtf8, line)),
        };
        let body = text.trim();
        if body.is_empty() {
            return LineOutcome::Blank;
        }
        if !body.starts_with('{') {
            let reason = match parse::<IgnoredAny>(body, work) {
                Ok(_) => Reason::NotAnObject,
                Err(_) => Reason::MalformedJson,
            };
            if reason == Reason::MalformedJson {
                if let Some(rec) = self.recover(text, work) {
                    return rec;
                }
            }
            return LineOutcome::Reject(reject_str(reason, text));
        }
        match parse::<RawEvent<'a>>(body, work) {
            Ok(raw) => match self.validate(raw, work) {
                Ok(ev) => LineOutcome::Event(ev),
                Err(fault) => LineOutcome::Reject(fault.reject(text)),
            },
            Err(_) => self
                .recover(text, work)
                .unwrap_or_else(|| LineOutcome::Reject(reject_str(Reason::MalformedJson, text))),
        }
    }

    /// Recovery: after the line's start, a fragment `{` + optional whitespace + `"id"`
    /// that parses as one complete object to the end of the line. At most one position
    /// can start such a fragment, and one backward scan finds it
    /// ([`json::recovery_start`]), so this is one scan and one parse: linear, where trying
    /// every `{"id"` in turn was quadratic.
    fn recover<'a>(&self, text: &'a str, work: &mut Work) -> Option<LineOutcome<'a>> {
        let start = json::recovery_start(text.as_bytes(), work)?;
        let fragment = &text[start..];
        let raw = parse::<RawEvent<'a>>(fragment, work).ok()?;
        let prefix = &text[..start];
        // Two complete records glued together: the first loads too.
        let glued = prefix.trim();
        let first = if glued.starts_with('{') {
            parse::<RawEvent<'a>>(glued, work).ok()
        } else {
            None
        };
        let prefix = match first {
            Some(first) => self.validate(first, work).map_err(|fault| fault.reject(prefix)),
            None => Err(reject_str(Reason::MalformedJson, prefix)),
        };
        let fragment = self.validate(raw, work).map_err(|fault| fault.reject(fragment));
        Some(LineOutcome::Recovered { prefix, fragment })
    }

    /// The field checks, in a fixed order: the first failure is the reason.
    fn validate<'a>(&self, raw: RawEvent<'a>, work: &mut Work) -> Result<CleanEvent<'a>, Fault> {
        // Each field is read a bounded number of times.
        for v in [
            raw.id,
            raw.created_at,
            raw.user_email,
            raw.ip,
            raw.event_name,
            raw.metadata,
        ]
        .into_iter()
        .flatten()
        {
            work.add(v.get().len());
        }
        let id = string(raw.id, Reason::MissingId, Reason::InvalidId)?;
        let id = fields::normalise_id(id).ok_or(Reason::InvalidId)?;

        let created_at = string(raw.created_at, Reason::MissingCreatedAt, Reason::InvalidCreatedAt)?;
        let created_at = match fields::parse_created_at(&created_at, self.latest, self.naive_timezone) {
            CreatedAt::Ok(t) => t,
            CreatedAt::Invalid => return Err(Reason::InvalidCreatedAt.into()),
            CreatedAt::OutOfRange => return Err(Reason::CreatedAtOutOfRange.into()),
        };

        let email = string(raw.user_email, Reason::MissingUserEmail, Reason::InvalidEmail)?;
        let user_email = fields::normalise_email(email).ok_or(Reason::InvalidEmail)?;

        let name = string(raw.event_name, Reason::MissingEventName, Reason::InvalidEventName)?;
        let event_name = fields::normalise_event_name(name).ok_or(Reason::InvalidEventName)?;
        let event_type = self.types.get(&event_name);
        if event_type.is_none() && self.types.unknown == UnknownEventTypes::Reject {
            return Err(Reason::UnknownEventType.into());
        }

        let metadata = match raw.metadata {
            None => None,
            Some(m) if m.get().starts_with('{') => {
                metadata::check(m.get()).map_err(metadata::Problem::reason)?;
                Some(m)
            }
            Some(_) => return Err(Reason::InvalidMetadata.into()),
        };
        // Last: the type's contract is judged on metadata both warehouses can store.
        if let Some(t) = event_type.filter(|t| !t.required_metadata.is_empty()) {
            work.add(metadata.map_or(0, |m| m.get().len()));
            if let Some(key) = metadata::first_missing(metadata, &t.required_metadata) {
                return Err(Fault {
                    reason: Reason::MissingMetadataKey,
                    note: Some(format!(
                        "metadata key `{key}` is required for {event_name} events and is absent or null"
                    )),
                });
            }
        }

        let (ip, ip_was_invalid) = match raw.ip {
            None => (None, false),
            // Any reason will do: a bad ip is counted, not rejected.
            Some(v) => match string(Some(v), Reason::MalformedJson, Reason::MalformedJson) {
                Ok(s) => match fields::parse_ip(&s) {
                    Some(ip) => (Some(ip), false),
                    None => (None, true),
                },
                Err(_) => (None, true),
            },
        };

        Ok(CleanEvent {
            id,
            created_at,
            user_email,
            ip,
            ip_was_invalid,
            event_name,
            metadata,
        })
    }
}

/// How many bytes cleaning a line went over, counting every parse and scan. Tests hold
/// it to a small multiple of the line's length, whatever the line holds: the cleaner's
/// time is linear by construction, and this keeps it so.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Work {
    pub bytes: usize,
}

impl Work {
    fn add(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n);
    }
}

/// Parses JSON text, counting it as work.
fn parse<'a, T: Deserialize<'a>>(text: &'a str, work: &mut Work) -> serde_json::Result<T> {
    work.add(text.len());
    serde_json::from_str(text)
}

/// Decodes a JSON string value; `None` is `missing`, a non-string is `invalid`.
fn string<'a>(v: Option<&'a RawValue>, missing: Reason, invalid: Reason) -> Result<Cow<'a, str>, Reason> {
    let v = v.ok_or(missing)?;
    let text = v.get();
    if !text.starts_with('"') {
        return Err(invalid);
    }
    // A string without escapes is its own text between the quotes: the RawValue parse
    // already checked it (closed, no control characters), so parsing it again would
    // only copy what is there.
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
            return Ok(Cow::Borrowed(inner));
        }
    }
    serde_json::from_str::<Cow<'a, str>>(text).map_err(|_| invalid)
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn reject_str(reason: Reason, text: &str) -> Reject<'_> {
    let head = cut(text, MAX_RAW_BYTES);
    let raw = if head.contains('\0') {
        Cow::Owned(cut(&head.replace('\0', "\u{FFFD}"), MAX_RAW_BYTES).to_owned())
    } else {
        Cow::Borrowed(head)
    };
    Reject { reason, raw }
}

fn reject_bytes(reason: Reason, line: &[u8]) -> Reject<'_> {
    // Three bytes of slack so a valid character straddling the limit is decoded whole
    // (and then cut at its boundary by `reject_str`) rather than turned into U+FFFD.
    let head = &line[..line.len().min(MAX_RAW_BYTES + 3)];
    match String::from_utf8_lossy(head) {
        Cow::Borrowed(s) => reject_str(reason, s),
        Cow::Owned(s) => Reject {
            reason,
            raw: Cow::Owned(reject_str(reason, &s).raw.into_owned()),
        },
    }
}

/// Counts of what became of a file's lines. Invariant, checked in tests:
/// `lines + recovered = events + rejects + blank_lines`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileTally {
    /// Physical lines read.
    pub lines: u64,
    pub blank_lines: u64,
    /// Clean events (before deduplication). All are staged but the second of two glued
    /// records with one id (see [`LineOutcome::into_rows`]), which the warehouse then
    /// counts as a duplicate.
    pub events: u64,
    pub rejects: u64,
    /// Lines that held two records: a broken or complete one followed by a recovered one.
    pub recovered: u64,
    /// Events whose `ip` was present but not an address, stored as NULL.
    pub invalid_ips: u64,
}

impl FileTally {
    /// Counts one line's outcome.
    pub fn add(&mut self, outcome: &LineOutcome<'_>) {
        self.lines += 1;
        match outcome {
            LineOutcome::Blank => self.blank_lines += 1,
            LineOutcome::Event(e) => self.event(e),
            LineOutcome::Reject(_) => self.rejects += 1,
            LineOutcome::Recovered { prefix, fragment } => {
                self.recovered += 1;
                for record in [prefix, fragment] {
                    match record {
                        Ok(e) => self.event(e),
                        Err(_) => self.rejects += 1,
                    }
                }
            }
        }
    }

    fn event(&mut self, e: &CleanEvent<'_>) {
        self.events += 1;
        self.invalid_ips += u64::from(e.ip_was_invalid);
    }

    /// Adds another tally (for load totals).
    pub fn merge(&mut self, other: &FileTally) {
        self.lines += other.lines;
        self.blank_lines += other.blank_lines;
        self.events += other.events;
        self.rejects += other.rejects;
        self.recovered += other.recovered;
        self.invalid_ips += other.invalid_ips;
    }
}

/// Splits an in-memory file into lines (LF; a trailing CR is the cleaner's business)
/// and cleans each, calling `each(line_no, outcome)`. A final line without a newline
/// counts; a file ending in a newline has no extra empty line.
pub fn clean_bytes<'a>(
    cleaner: &Cleaner,
    bytes: &'a [u8],
    mut each: impl FnMut(u64, LineOutcome<'a>),
) -> FileTally {
    let mut tally = FileTally::default();
    let mut rest = bytes;
    let mut line_no = 0u64;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        line_no += 1;
        let outcome = cleaner.clean_line(line_no, line, false);
        tally.add(&outcome);
        each(line_no, outcome);
        rest = next;
    }
    tally
}

#[cfg(test)]
mod tests;

//! PURE: the staged row formats. Each row is one JSON object on one line whose keys are
//! the staging table's column names, which is what Redshift's `COPY ... FORMAT JSON
//! 'auto'` maps, and what the PostgreSQL adapter maps the same way
//! (`src/warehouse/copy_rows.rs`).

use std::io::Write;

use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::Serialize;

use crate::clean::{CleanEvent, FileTally, Reject, MAX_LINE_BYTES};

/// The longest row staging writes, and so the limit for reading staged parts back. An
/// event row re-serialises the fields of a line of at most [`MAX_LINE_BYTES`]: the
/// strings come out no longer than they came in (serde_json escapes only what JSON
/// requires, normalising only trims and lowercases within the field limits) and
/// metadata is passed through as sent. To that it adds the column names and fixed-size
/// values (id, timestamp, line number: under 200 bytes) and the source key, at most
/// 1,024 bytes on S3 or a 4,096-byte path locally, up to 6 bytes each once escaped
/// (24 KiB). A reject row holds at most 4 KiB of raw text (24 KiB escaped) and the key.
/// 64 KiB of slack covers both with room to spare.
pub(crate) const MAX_STAGED_ROW_BYTES: usize = MAX_LINE_BYTES + 64 * 1024;

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
    /// The row of one file version cleaned into tally `t`.
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

/// Appends one event row and its newline: the JSON `EventRow` would serialise to,
/// written by hand. This runs once per event and serde's generic map machinery (and
/// `fmt` for the timestamp) cost more than the rest of staging a row; a unit test
/// checks the bytes are serde's. An absent `ip` or `metadata` is left out, not written
/// as null: COPY's JSON 'auto' loads an absent key as SQL NULL, while a JSON null into
/// SUPER would be a SUPER null, which is not the same to analysts. `payload_hash` is
/// [`payload_hash`] of the row's bytes from its start through `metadata`.
pub(crate) fn write_event(
    out: &mut Vec<u8>,
    key: &str,
    line: u64,
    e: &CleanEvent<'_>,
) -> std::io::Result<()> {
    let start = out.len();
    out.extend_from_slice(b"{\"event_id\":");
    // The cleaner let through only hex digits and hyphens here, and only
    // `[a-z][a-z0-9_]*` in event_name: nothing to escape.
    json_plain(out, &e.id);
    out.extend_from_slice(b",\"created_at\":\"");
    timestamp(out, e.created_at)?;
    out.extend_from_slice(b"\",\"user_email\":");
    json_str(out, &e.user_email)?;
    match e.ip {
        None => {}
        Some(std::net::IpAddr::V4(v4)) => {
            out.extend_from_slice(b",\"ip\":\"");
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                decimal(out, u64::from(octet));
            }
            out.push(b'"');
        }
        Some(ip) => {
            out.extend_from_slice(b",\"ip\":\"");
            write!(out, "{ip}")?;
            out.push(b'"');
        }
    }
    out.extend_from_slice(b",\"event_name\":");
    json_plain(out, &e.event_name);
    if let Some(m) = e.metadata {
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(m.get().as_bytes());
    }
    let hash = payload_hash(&out[start..]);
    out.extend_from_slice(b",\"payload_hash\":\"");
    out.extend_from_slice(&hash);
    out.extend_from_slice(b"\",\"source_key\":");
    json_str(out, key)?;
    out.extend_from_slice(b",\"source_line\":");
    decimal(out, line);
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// The `payload_hash` of an event row: the first 128 bits of the SHA-256 of its cleaned
/// payload as staged (id, created_at, user_email, ip, event_name, and metadata as sent),
/// in lowercase hex. Loads compare copies of one id by it instead of comparing their
/// columns (SUPER values on Redshift): a copy whose hash differs from every earlier
/// copy's is a conflicting duplicate. 128 bits: a collision between two copies of one id
/// is not a practical concern, and the column stays 32 bytes.
pub(crate) fn payload_hash(payload: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(payload);
    let mut hex = [0u8; 32];
    for (i, byte) in digest.iter().take(16).enumerate() {
        hex[2 * i] = HEX[usize::from(byte >> 4)];
        hex[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    hex
}

/// A JSON string, escaped as serde_json escapes it. serde_json escapes only quotes,
/// backslashes and control characters; a string with none of them (nearly every id,
/// email, name and key) is copied as it is, without serde_json's writer, which cost
/// more than the copy.
fn json_str(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    if needs_escape(s) {
        return serde_json::to_writer(out, s).map_err(std::io::Error::other);
    }
    json_plain(out, s);
    Ok(())
}

/// Whether serde_json would escape anything in `s`. A fold with no early exit: the
/// compiler vectorises it, and the strings are short.
fn needs_escape(s: &str) -> bool {
    s.bytes()
        .fold(false, |acc, b| acc | (b < 0x20) | (b == b'"') | (b == b'\\'))
}

/// A JSON string that holds nothing to escape, quoted.
fn json_plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!needs_escape(s));
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// `n` in decimal. Numbers below 1000 (every IPv4 octet, most line numbers) are
/// written as fixed-size arrays, which compile to plain stores; a slice of varying
/// length is a call to `memcpy`, which showed in profiles of `clean`.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let d = |v: u64| b'0' + (v % 10) as u8;
    if n < 10 {
        out.push(d(n));
        return;
    }
    if n < 100 {
        out.extend_from_slice(&[d(n / 10), d(n)]);
        return;
    }
    if n < 1000 {
        out.extend_from_slice(&[d(n / 100), d(n / 10), d(n)]);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = d(n);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, the form both warehouses read as a TIMESTAMP.
fn timestamp(out: &mut Vec<u8>, t: NaiveDateTime) -> std::io::Result<()> {
    let micros = t.nanosecond() / 1000;
    let year = t.year();
    if !(0..=9999).contains(&year) || micros > 999_999 {
        // A year of other than four digits, or a leap second (the cleaner lets neither
        // through): the general path.
        return write!(
            out,
            "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}",
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
    }
    let year = year as u32;
    let two = |out: &mut Vec<u8>, v: u32| {
        out.extend_from_slice(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8])
    };
    two(out, year / 100);
    two(out, year % 100);
    out.push(b'-');
    two(out, t.month());
    out.push(b'-');
    two(out, t.day());
    out.push(b' ');
    two(out, t.hour());
    out.push(b':');
    two(out, t.minute());
    out.push(b':');
    two(out, t.second());
    out.push(b'.');
    two(out, micros / 10_000);
    two(out, micros / 100 % 100);
    two(out, micros % 100);
    Ok(())
}

/// Appends one reject row and its newline.
pub(crate) fn write_reject(
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
pub(crate) fn write_file(out: &mut (impl Write + ?Sized), f: &FileRow) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, f)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The staged timestamp as serde wrote it before [`timestamp`]: the test's reference.
    struct Timestamp(NaiveDateTime);

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

    /// The event row's shape: [`write_event`] writes what serde would make of it (a test
    /// holds them equal).
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
        metadata: Option<&'a serde_json::value::RawValue>,
        payload_hash: &'a str,
        source_key: &'a str,
        source_line: u64,
    }

    use crate::clean::{Cleaner, LineOutcome, Reason, MAX_RAW_BYTES};

    /// A line of exactly `len` bytes whose every string is at its limit and made of
    /// characters that stay escaped, so its event row is as long as rows get.
    fn widest_line(len: usize) -> String {
        let head = r#"{"id":"00000001-0000-4000-8000-000000000001","created_at":"2020-01-02 03:04:05.123456789+01:00","user_email":"a@b.co","ip":"2001:db8::1","event_name":"e","metadata":{"#;
        let mut line = head.to_owned();
        let mut k = 0;
        // Strings of `\u0001` escapes, each within SUPER's 65,535 decoded bytes.
        while line.len() + 40 + 6 * 10_000 < len {
            line.push_str(&format!("\"k{k}\":\"{}\",", "\\u0001".repeat(10_000)));
            k += 1;
        }
        let tail = format!("\"k{k}\":\"\"}}}}");
        let pad = len - line.len() - tail.len();
        line.push_str(&format!("\"k{k}\":\"{}\"}}}}", "x".repeat(pad)));
        assert_eq!(line.len(), len);
        line
    }

    /// The hand-written event row is byte for byte what serde makes of [`EventRow`],
    /// for plain, escaped and unusual values.
    #[test]
    fn decimal_writes_what_to_string_writes() {
        let mut probes: Vec<u64> = (0..=12_000).collect();
        let mut p = 1u64;
        while let Some(q) = p.checked_mul(10) {
            probes.extend([p - 1, p, p + 1, q - 1]);
            p = q;
        }
        probes.push(u64::MAX);
        for n in probes {
            let mut out = b"x".to_vec();
            decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes(), "{n}");
        }
    }

    #[test]
    fn payload_hash_is_stable_and_ignores_where_the_copy_came_from() {
        // SHA-256 of "abc" (FIPS 180-2), first 16 bytes: stored hashes stay comparable
        // across versions only while this holds.
        assert_eq!(&payload_hash(b"abc"), b"ba7816bf8f01cfea414140de5dae2223");
        let cleaner = Cleaner::new(chrono::Utc::now());
        let hash_of = |line: &str, key: &str, no: u64| {
            let LineOutcome::Event(e) = cleaner.clean_line(1, line.as_bytes(), false) else {
                panic!("{line} must load")
            };
            let mut out = Vec::new();
            write_event(&mut out, key, no, &e).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            v["payload_hash"].as_str().unwrap().to_owned()
        };
        let line = r#"{"id": "9ba671d6-5154-41c1-93b1-41dd647b2d55", "created_at": "2020-01-13 05:10:12", "user_email": "a@b.com", "event_name": "x", "metadata": {"k": 1}}"#;
        let same = hash_of(line, "events/a.json", 1);
        assert_eq!(same.len(), 32);
        // The same event written differently (case, spacing, offset) cleans to the same
        // payload, wherever it came from.
        let respelled = r#"{"id":"9BA671D6-5154-41C1-93B1-41DD647B2D55","created_at":"2020-01-13T07:10:12+02:00","user_email":" A@B.com ","event_name":"X","metadata":{"k": 1}}"#;
        assert_eq!(hash_of(respelled, "events/b.json", 9), same);
        for changed in [
            line.replace("a@b.com", "c@b.com"),
            line.replace("05:10:12", "05:10:13"),
            line.replace("\"x\"", "\"y\""),
            line.replace("{\"k\": 1}", "{\"k\": 2}"),
            line.replace("\"event_name\"", "\"ip\": \"10.0.0.1\", \"event_name\""),
        ] {
            assert_ne!(hash_of(&changed, "events/a.json", 1), same, "{changed}");
        }
    }

    #[test]
    fn write_event_is_serdes_event_row() {
        let cleaner = Cleaner::new(chrono::Utc::now());
        let lines = [
            r#"{"id": "9BA671D6-5154-41C1-93B1-41DD647B2D55", "created_at": "2020-01-13 05:10:12", "user_email": " A@B.com ", "event_name": "X"}"#,
            r#"{"id": "9ba671d6-5154-41c1-93b1-41dd647b2d55", "created_at": "2019-12-31T23:59:59.123456789Z", "user_email": "A.b+C@B.com", "ip": "2001:db8::1", "event_name": "ev", "metadata": {"a": [1, 2.5e3, "\u2028"], "b": null}}"#,
            r#"{"id": "9ba671d6-5154-41c1-93b1-41dd647b2d55", "created_at": "2020-01-13 05:10:12.000001+02:00", "user_email": "a@b.com", "ip": "255.0.10.1", "event_name": "e", "metadata": null}"#,
        ];
        for (n, line) in lines.iter().enumerate() {
            let outcome = cleaner.clean_line(1, line.as_bytes(), false);
            let LineOutcome::Event(e) = outcome else {
                panic!("line {n} must load: {outcome:?}")
            };
            for (key, no) in [
                ("events/a.json", 1u64),
                ("k\"\u{1}é", u64::MAX),
                ("", 0),
                ("a\\b\u{1f}\u{7f} \u{2028}/c", 7),
            ] {
                let mut ours = Vec::new();
                write_event(&mut ours, key, no, &e).unwrap();
                let mut row = EventRow {
                    event_id: &e.id,
                    created_at: Timestamp(e.created_at),
                    user_email: &e.user_email,
                    ip: e.ip,
                    event_name: &e.event_name,
                    metadata: e.metadata,
                    payload_hash: "",
                    source_key: key,
                    source_line: no,
                };
                // The payload is the row up to its hash, so the hash is computed over
                // serde's bytes of the row without it.
                let mut payload = serde_json::to_vec(&row).unwrap();
                let cut = payload
                    .windows(17)
                    .position(|w| w == b",\"payload_hash\":\"".as_slice())
                    .unwrap();
                payload.truncate(cut);
                let hash = payload_hash(&payload);
                row.payload_hash = std::str::from_utf8(&hash).unwrap();
                let mut serde = serde_json::to_vec(&row).unwrap();
                serde.push(b'\n');
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&serde),
                    "line {n}"
                );
            }
        }
        // The timestamp's general path (years of other than four digits).
        for (y, us) in [(999, 7), (12345, 500_000), (-5, 0), (2020, 1_500_000)] {
            let t = chrono::NaiveDate::from_ymd_opt(y, 1, 2)
                .unwrap()
                .and_hms_micro_opt(3, 4, 59, us)
                .unwrap();
            let mut ours = Vec::new();
            timestamp(&mut ours, t).unwrap();
            let serde = serde_json::to_string(&Timestamp(t)).unwrap();
            assert_eq!(format!("\"{}\"", String::from_utf8_lossy(&ours)), serde);
        }
    }

    #[test]
    fn the_longest_rows_fit_the_staged_row_limit() {
        let cleaner = Cleaner::new(chrono::Utc::now());
        // S3 keys are at most 1,024 bytes; local paths, 4,096. Control characters escape
        // to six bytes each.
        let key = "\u{1}".repeat(4096);
        let line = widest_line(MAX_LINE_BYTES);
        let LineOutcome::Event(e) = cleaner.clean_line(1, line.as_bytes(), false) else {
            panic!("the widest line must load")
        };
        let mut row = Vec::new();
        write_event(&mut row, &key, u64::MAX, &e).unwrap();
        assert!(row.len() > MAX_LINE_BYTES, "{}", row.len());
        assert!(row.len() <= MAX_STAGED_ROW_BYTES, "{}", row.len());

        let raw = "\u{1}".repeat(MAX_RAW_BYTES);
        let mut row = Vec::new();
        let r = Reject {
            reason: Reason::MalformedJson,
            raw: raw.as_str().into(),
        };
        write_reject(&mut row, &key, u64::MAX, &r).unwrap();
        assert!(row.len() <= MAX_STAGED_ROW_BYTES, "{}", row.len());
    }
}

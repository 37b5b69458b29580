//! Staged rows read back as typed columns, the way Redshift's `COPY ... FORMAT JSON
//! 'auto'` reads them (`copy-usage_notes-copy-from-json.html`): keys map to the columns
//! of the same name, a key that is absent or holds a JSON null loads NULL, other keys
//! are ignored. The PostgreSQL adapter sends these columns in binary COPY, so the
//! server parses no JSON but `metadata`, which it stores as `jsonb`. Strings borrow from
//! the staged line unless they hold escapes.

use std::borrow::Cow;
use std::error::Error;

use bytes::{BufMut, BytesMut};
use chrono::NaiveDateTime;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

type SqlResult = Result<IsNull, Box<dyn Error + Sync + Send>>;

/// A text column: borrowed from the line when it holds no escapes.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(super) struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl ToSql for Text<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> SqlResult {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <Cow<'_, str> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// A `TIMESTAMP` column, staged as `YYYY-MM-DD HH:MM:SS[.ffffff]` (rows.rs writes
/// exactly that; `T` for the space is read too, as Redshift's TIMEFORMAT 'auto' does).
#[derive(Debug)]
pub(super) struct Stamp(pub NaiveDateTime);

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(d)?;
        parse_stamp(&text)
            .map(Stamp)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a timestamp")))
    }
}

/// The two formats a staged timestamp is read in.
const STAMP_FORMATS: [&str; 2] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"];

/// Reads a staged timestamp as `STAMP_FORMATS` do. The shape rows.rs writes (four-digit
/// year, seconds below 60, up to nine fraction digits) is read by hand: chrono's format
/// interpreter was the largest cost of reading staged events back. Anything else (a
/// leap second, a five-digit year, a malformed value) goes through chrono, so the
/// result is always chrono's; a unit test compares the two.
fn parse_stamp(text: &str) -> Option<NaiveDateTime> {
    fast_stamp(text.as_bytes()).or_else(|| {
        STAMP_FORMATS
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    })
}

fn fast_stamp(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if second > 59 {
        return None;
    }
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let n = num(20..b.len())?;
            n * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    date.and_hms_nano_opt(hour, minute, second, nanos)
}

impl ToSql for Stamp {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> SqlResult {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <NaiveDateTime as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// JSON text sent as `jsonb` in binary COPY: version byte 1, then the text as staged
/// (no re-encoding: numbers beyond f64 are kept exactly, and refused by the server
/// exactly as the old JSONB path refused them).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(super) struct Jsonb<'a>(#[serde(borrow)] pub &'a RawValue);

impl ToSql for Jsonb<'_> {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> SqlResult {
        out.put_u8(1);
        out.extend_from_slice(self.0.get().as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// A `stage_events` row. `metadata`: absent or JSON null is SQL NULL (the stager omits
/// it; a JSON null is mapped to NULL here as the SQL path did before).
#[derive(Debug, Deserialize)]
pub(super) struct Event<'a> {
    #[serde(borrow)]
    event_id: Option<Text<'a>>,
    created_at: Option<Stamp>,
    #[serde(borrow)]
    user_email: Option<Text<'a>>,
    #[serde(borrow)]
    ip: Option<Text<'a>>,
    #[serde(borrow)]
    event_name: Option<Text<'a>>,
    #[serde(borrow)]
    metadata: Option<Jsonb<'a>>,
    #[serde(borrow)]
    payload_hash: Option<Text<'a>>,
    #[serde(borrow)]
    source_key: Option<Text<'a>>,
    source_line: Option<i64>,
}

impl Event<'_> {
    /// The columns in `copy_events`' order.
    pub(super) fn columns(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.event_id,
            &self.created_at,
            &self.user_email,
            &self.ip,
            &self.event_name,
            &self.metadata,
            &self.payload_hash,
            &self.source_key,
            &self.source_line,
        ]
    }

    /// The source file the row came from.
    pub(super) fn source_key(&self) -> Option<&str> {
        self.source_key.as_ref().map(|t| t.0.as_ref())
    }

    #[cfg(test)]
    pub(crate) fn created_at(&self) -> Option<NaiveDateTime> {
        self.created_at.as_ref().map(|s| s.0)
    }
}

/// A `stage_rejects` row.
#[derive(Debug, Deserialize)]
pub(super) struct Reject<'a> {
    #[serde(borrow)]
    source_key: Option<Text<'a>>,
    source_line: Option<i64>,
    #[serde(borrow)]
    reason: Option<Text<'a>>,
    #[serde(borrow)]
    raw_line: Option<Text<'a>>,
}

impl Reject<'_> {
    /// The columns in `copy_rejects`' order.
    pub(super) fn columns(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.source_key, &self.source_line, &self.reason, &self.raw_line]
    }

    /// The source file the row came from.
    pub(super) fn source_key(&self) -> Option<&str> {
        self.source_key.as_ref().map(|t| t.0.as_ref())
    }
}

/// A `stage_files` row.
#[derive(Debug, Deserialize)]
pub(super) struct File<'a> {
    #[serde(borrow)]
    source_key: Option<Text<'a>>,
    #[serde(borrow)]
    etag: Option<Text<'a>>,
    size_bytes: Option<i64>,
    lines: Option<i64>,
    blank_lines: Option<i64>,
    events_staged: Option<i64>,
    rejects: Option<i64>,
    recovered_events: Option<i64>,
    invalid_ips: Option<i64>,
}

impl File<'_> {
    /// The columns in `copy_files`' order.
    pub(super) fn columns(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.source_key,
            &self.etag,
            &self.size_bytes,
            &self.lines,
            &self.blank_lines,
            &self.events_staged,
            &self.rejects,
            &self.recovered_events,
            &self.invalid_ips,
        ]
    }

    /// The source file the row describes.
    pub(super) fn source_key(&self) -> Option<&str> {
        self.source_key.as_ref().map(|t| t.0.as_ref())
    }

    /// The version and size of the source file.
    pub(super) fn version(&self) -> (Option<&str>, Option<i64>) {
        (self.etag.as_ref().map(|t| t.0.as_ref()), self.size_bytes)
    }
}

/// Parses one staged row.
pub(super) fn parse<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(line)
}

/// The `source_key` a staged row names, if it parses that far.
pub(super) fn source_key(line: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Key {
        source_key: String,
    }
    serde_json::from_slice::<Key>(line).ok().map(|k| k.source_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_map_as_json_auto_does() {
        let line = br#"{"event_id":"a","created_at":"2024-02-01 00:00:00.123456","user_email":"x@y.io","event_name":"e","metadata":{"k":[1,2]},"source_key":"k\"ey","source_line":3,"other":1}"#;
        let e: Event<'_> = parse(line).unwrap();
        assert!(matches!(e.event_id, Some(Text(Cow::Borrowed("a")))));
        assert!(matches!(&e.source_key, Some(Text(Cow::Owned(k))) if k == "k\"ey"));
        assert_eq!(e.created_at().unwrap().to_string(), "2024-02-01 00:00:00.123456");
        assert_eq!(e.metadata.as_ref().unwrap().0.get(), r#"{"k":[1,2]}"#);
        assert!(e.ip.is_none());
        assert_eq!(e.source_line, Some(3));

        let null = br#"{"event_id":"a","created_at":"2024-02-01T00:00:00","metadata":null,"ip":null}"#;
        let e: Event<'_> = parse(null).unwrap();
        assert!(e.metadata.is_none() && e.ip.is_none() && e.user_email.is_none());

        // What the server would refuse is refused here, with the row's source key.
        assert!(parse::<Event<'_>>(br#"{"created_at":"yesterday","source_key":"s"}"#).is_err());
        assert!(parse::<Event<'_>>(br#"{"source_line":1.5}"#).is_err());
        assert!(parse::<Event<'_>>(br#"{"source_line":18446744073709551615}"#).is_err());
        assert_eq!(
            source_key(br#"{"created_at":"yesterday","source_key":"s"}"#).as_deref(),
            Some("s")
        );
        assert_eq!(source_key(b"not json"), None);
    }

    /// The hand-written reader agrees with chrono's formats on every value it takes,
    /// and leaves the rest to them.
    #[test]
    fn stamps_read_as_chrono_reads_them() {
        let chrono_reads = |t: &str| {
            STAMP_FORMATS
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
        };
        let mut cases: Vec<String> = [
            "2024-02-01 00:00:00",
            "2024-02-01T00:00:00",
            "2024-02-29 23:59:59.999999",
            "2023-02-29 00:00:00",
            "2024-13-01 00:00:00",
            "2024-00-10 00:00:00",
            "2024-01-32 00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 23:60:00",
            "2016-12-31 23:59:60",
            "2016-12-31 23:59:60.5",
            "+10000-01-01 00:00:00",
            "10000-01-01 00:00:00",
            "0000-01-01 00:00:00",
            "2024-1-01 00:00:00",
            "2024-01-01 0:00:00",
            "2024-01-01 00:00:00.",
            "2024-01-01 00:00:00.1",
            "2024-01-01 00:00:00.123456789",
            "2024-01-01 00:00:00.1234567891",
            "2024-01-01 00:00:00Z",
            "2024-01-01 00:00:00 ",
            "2024-01-01x00:00:00",
            "2024-01-01 00-00-00",
            "2024+01-01 00:00:00",
            " 024-01-01 00:00:00",
            "2024-01-01 00:00:0a",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every prefix of a long value, and one digit changed at every place.
        let long = "2026-03-01 09:43:49.026490";
        for i in 0..long.len() {
            cases.push(long[..i].to_owned());
            for c in ['0', '9', ':', 'T', ' ', '.'] {
                let mut v = long.to_owned();
                v.replace_range(i..=i, &c.to_string());
                cases.push(v);
            }
        }
        for t in &cases {
            assert_eq!(parse_stamp(t), chrono_reads(t), "{t:?}");
        }
        assert!(
            fast_stamp(long.as_bytes()).is_some(),
            "the staged shape takes the fast path"
        );
    }
}

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
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

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
pub struct Stamp(pub NaiveDateTime);

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(d)?;
        ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(&text, f).ok())
            .map(Stamp)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a timestamp")))
    }
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
pub struct Jsonb<'a>(#[serde(borrow)] pub &'a RawValue);

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
pub struct Event<'a> {
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
    source_key: Option<Text<'a>>,
    source_line: Option<i64>,
}

impl Event<'_> {
    /// The columns in `copy_events`' order.
    pub fn columns(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.event_id,
            &self.created_at,
            &self.user_email,
            &self.ip,
            &self.event_name,
            &self.metadata,
            &self.source_key,
            &self.source_line,
        ]
    }

    #[cfg(test)]
    pub fn created_at(&self) -> Option<NaiveDateTime> {
        self.created_at.as_ref().map(|s| s.0)
    }
}

/// A `stage_rejects` row.
#[derive(Debug, Deserialize)]
pub struct Reject<'a> {
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
    pub fn columns(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.source_key, &self.source_line, &self.reason, &self.raw_line]
    }
}

/// A `stage_files` row.
#[derive(Debug, Deserialize)]
pub struct File<'a> {
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
    pub fn columns(&self) -> [&(dyn ToSql + Sync); 9] {
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
}

/// Parses one staged row.
pub fn parse<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(line)
}

/// The `source_key` a staged row names, if it parses that far.
pub fn source_key(line: &[u8]) -> Option<String> {
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
}

//! Field validators and normalisers: one function per column, each pure and total.

use std::borrow::Cow;
use std::net::IpAddr;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;

/// Longest accepted `user_email`, in bytes (RFC 5321 path limit; Redshift widths are bytes).
pub(crate) const MAX_EMAIL_BYTES: usize = 254;

pub(crate) use crate::limits::MAX_EVENT_NAME_BYTES;

/// Lowercases `s` only when it has uppercase ASCII, so the common case borrows.
fn ascii_lower(s: Cow<'_, str>) -> Cow<'_, str> {
    // A fold with no early exit, which the compiler vectorises: these strings are short
    // and nearly always lowercase already.
    if s.bytes().fold(false, |acc, b| acc | b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        s
    }
}

/// Lowercases `s` fully (Unicode, as `str::to_lowercase`: `JÖRG` is `jörg`), borrowing
/// when nothing changes. Some characters grow when lowercased (`Ⱥ`, 2 bytes, becomes
/// `ⱥ`, 3 bytes), so byte limits are checked on the result.
fn unicode_lower(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.is_ascii() {
        return ascii_lower(s);
    }
    let lower = s.to_lowercase();
    if lower == *s {
        s
    } else {
        Cow::Owned(lower)
    }
}

/// Trims surrounding whitespace without giving up a borrow.
fn trim(s: Cow<'_, str>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) => {
            let t = o.trim();
            if t.len() == o.len() {
                Cow::Owned(o)
            } else {
                Cow::Owned(t.to_owned())
            }
        }
    }
}

/// [`ID_CLASS`] bits of an id's byte: a hex digit or a hyphen (`ID_OK`), an uppercase
/// digit, a hyphen.
const ID_OK: u8 = 1;
const ID_UPPER: u8 = 2;
const ID_HYPHEN: u8 = 4;
const ID_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_digit() || matches!(b, b'a'..=b'f') {
            ID_OK
        } else if matches!(b, b'A'..=b'F') {
            ID_OK | ID_UPPER
        } else if b == b'-' {
            ID_OK | ID_HYPHEN
        } else {
            0
        };
        c += 1;
    }
    t
};

/// `8-4-4-4-12` hex digits, returned lowercased. Braced, URN and unhyphenated forms are
/// refused on purpose: the source always sends the hyphenated form, so anything else is
/// a sign of a broken producer.
pub(crate) fn normalise_id(s: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    // One branch-free pass over the 36 bytes (this runs for every line), one table
    // lookup each: every byte is a hex digit or a hyphen, the hyphens are only the four
    // checked above, and is any digit uppercase.
    let (mut all, mut any, mut hyphens) = (ID_OK, 0u8, 0u32);
    for &c in b {
        let class = ID_CLASS[usize::from(c)];
        all &= class;
        any |= class;
        hyphens += u32::from(class & ID_HYPHEN != 0);
    }
    let (hex, upper) = (all & ID_OK != 0 && hyphens == 4, any & ID_UPPER != 0);
    if !hex {
        return None;
    }
    Some(if upper {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        s
    })
}

/// The result of reading `created_at`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CreatedAt {
    Ok(NaiveDateTime),
    Invalid,
    OutOfRange,
}

/// Earliest accepted event time (UTC).
pub(crate) fn min_created_at() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or(NaiveDateTime::MIN)
}

/// Parses `YYYY-MM-DD[ Tt]HH:MM:SS[.fraction][Z|z|±HH:MM|±HHMM|±HH]` into UTC. The
/// fraction may have any number of digits; it is truncated to microseconds (the
/// precision of both warehouses' TIMESTAMP), never rounded: rounding could carry into the
/// next second, day or year, and across the accepted window's edge. A time without an
/// offset is local time in `naive` (`cleaning.naive_timezone`, UTC by default): of an
/// ambiguous local time (the hour a clock turns back) the earlier instant, and a local
/// time that does not exist (the hour it skips) is invalid.
/// `latest` is the run's start plus one day: clocks drift, but not by days.
pub(crate) fn parse_created_at(s: &str, latest: NaiveDateTime, naive: Tz) -> CreatedAt {
    match parse_timestamp(s.as_bytes(), naive) {
        None => CreatedAt::Invalid,
        Some(t) if t < min_created_at() || t > latest => CreatedAt::OutOfRange,
        Some(t) => CreatedAt::Ok(t),
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// The offset east of UTC, in seconds, that a timestamp's suffix names: `Z`, `z`,
/// `±HH:MM`, `±HHMM` or `±HH`; `None` for anything else.
fn offset_seconds(suffix: &[u8]) -> Option<i32> {
    let (sign, hh, mm) = match suffix {
        [b'Z' | b'z'] => return Some(0),
        [sign @ (b'+' | b'-'), h1, h2] => (sign, [*h1, *h2], [b'0', b'0']),
        [sign @ (b'+' | b'-'), h1, h2, m1, m2] | [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            (sign, [*h1, *h2], [*m1, *m2])
        }
        _ => return None,
    };
    let (oh, om) = (digits(&hh)?, digits(&mm)?);
    if oh > 23 || om > 59 {
        return None;
    }
    let secs = i32::try_from(oh * 3600 + om * 60).ok()?;
    Some(if *sign == b'-' { -secs } else { secs })
}

fn parse_timestamp(b: &[u8], naive_zone: Tz) -> Option<NaiveDateTime> {
    if b.len() < 19 {
        return None;
    }
    let sep = |i: usize, c: u8| b[i] == c;
    if !(sep(4, b'-')
        && sep(7, b'-')
        && (sep(10, b' ') || sep(10, b'T') || sep(10, b't'))
        && sep(13, b':')
        && sep(16, b':'))
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(&b[0..4])?).ok()?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    let (h, mi, sec) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let mut rest = &b[19..];
    let mut micros = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // Keep six digits, padding short fractions: ".5" is 500000 microseconds; digits
        // past the sixth are dropped.
        micros = frac[..n.min(6)]
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(6)
            .fold(0u32, |m, d| m * 10 + u32::from(d - b'0'));
        rest = &frac[n..];
    }
    let time = NaiveTime::from_hms_micro_opt(h, mi, sec, micros)?;
    let naive = NaiveDateTime::new(date, time);
    if rest.is_empty() {
        if naive_zone == Tz::UTC {
            return Some(naive);
        }
        return naive
            .and_local_timezone(naive_zone)
            .earliest()
            .map(|t| t.with_timezone(&Utc).naive_utc());
    }
    let offset = FixedOffset::east_opt(offset_seconds(rest)?)?;
    let local = naive.and_local_timezone(offset).single()?;
    Some(local.with_timezone(&Utc).naive_utc())
}

/// The latest `created_at` a run started at `started` accepts.
pub(crate) fn latest_created_at(started: DateTime<Utc>) -> NaiveDateTime {
    (started + Duration::days(1)).naive_utc()
}

/// Trimmed, lowercased (Unicode) `local@domain`: non-empty local part, no whitespace, a
/// dotted domain with no empty labels, at most [`MAX_EMAIL_BYTES`] once lowercased (the
/// stored value; Redshift's VARCHAR(254) counts bytes).
pub(crate) fn normalise_email(s: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let s = unicode_lower(trim(s));
    let v = s.as_ref();
    if v.len() > MAX_EMAIL_BYTES {
        return None;
    }
    let ok = if v.is_ascii() {
        ascii_address_ok(v.as_bytes())
    } else {
        address_ok(v)
    };
    ok.then_some(s)
}

/// No whitespace or NUL, one `@`, a non-empty local part, a dotted domain with no empty
/// label.
pub(super) fn address_ok(v: &str) -> bool {
    if v.chars().any(|c| c.is_whitespace() || c == '\0') {
        return false;
    }
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.split('.').any(str::is_empty)
}

/// [`address_ok`] for ASCII (nearly every address) in one pass
/// over the bytes, the checks of the general path being five; `char::is_whitespace` on
/// ASCII is exactly space and \t through \r.
pub(super) fn ascii_address_ok(b: &[u8]) -> bool {
    let (mut at, mut bad, mut dots, mut empty_label, mut prev) = (None, false, 0usize, false, 0u8);
    for (i, &c) in b.iter().enumerate() {
        match c {
            b' ' | b'\t'..=b'\r' | 0 => bad = true,
            b'@' => {
                bad |= at.is_some();
                at = Some(i);
            }
            b'.' if at.is_some() => {
                dots += 1;
                empty_label |= prev == b'.' || prev == b'@';
            }
            _ => {}
        }
        prev = c;
    }
    at.is_some_and(|a| a > 0) && !bad && dots > 0 && !empty_label && prev != b'.'
}

/// Trimmed, lowercased `[a-z][a-z0-9_]*` of at most [`MAX_EVENT_NAME_BYTES`].
pub(crate) fn normalise_event_name(s: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let s = ascii_lower(trim(s));
    let b = s.as_bytes();
    let first_ok = b.first().is_some_and(u8::is_ascii_lowercase);
    let rest_ok = b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    (first_ok && rest_ok && b.len() <= MAX_EVENT_NAME_BYTES).then_some(s)
}

/// A valid IPv4 or IPv6 address (surrounding whitespace ignored), in canonical form.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse().ok()
}

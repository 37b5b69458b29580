//! What either warehouse would refuse in a `metadata` object, found in one pass over its
//! text. One such value fails the whole load's COPY, on every rerun, so it must be
//! rejected here. The limits and where they are documented:
//!
//! - **Nesting**: SUPER arrays and structures nest at most 1,000 levels. Amazon Redshift,
//!   "Limitations" of the SUPER type:
//!   <https://docs.aws.amazon.com/redshift/latest/dg/limitations-super.html>.
//! - **Strings and keys**: "a single string value loaded to SUPER is limited to the
//!   maximum VARCHAR length of 65535 bytes" (same page; a newer revision allows 16,000,000
//!   bytes behind an opt-in database parameter, so the default is the limit here). Keys
//!   are held to the same limit.
//! - **Repeated keys**: "The same attribute name cannot appear in the same object, but can
//!   appear in a nested object"; by default SUPER parsing returns an error. Amazon Redshift,
//!   "SUPER configurations", Parsing options for SUPER:
//!   <https://docs.aws.amazon.com/redshift/latest/dg/super-configurations.html>.
//!   PostgreSQL's jsonb would keep the last value instead, so the two warehouses would not
//!   even agree on the row.
//! - **Numbers**: a SUPER number is a smallint, integer, bigint, decimal or floating point
//!   (float4, float8). Amazon Redshift, "SUPER type":
//!   <https://docs.aws.amazon.com/redshift/latest/dg/r_SUPER_type.html>. DECIMAL holds at
//!   most 38 digits ("Numeric types":
//!   <https://docs.aws.amazon.com/redshift/latest/dg/r_Numeric_types201.html>), so any
//!   other number can only be a float8, whose range AWS's SQL reference gives as "around
//!   1E-307 to 1E+308" (AWS Clean Rooms, "Floating-point types", Redshift's SQL dialect:
//!   <https://docs.aws.amazon.com/clean-rooms/latest/sql-reference/Numeric_types-floating-point-types.html>).
//!   AWS does not document what COPY does with a JSON number beyond that, so a number is
//!   accepted only when it is 0 or its magnitude is in [1e-307, 1e308). PostgreSQL's jsonb
//!   stores numbers as `numeric` (PostgreSQL, "JSON Types", Table 8.23:
//!   <https://www.postgresql.org/docs/current/datatype-json.html>), which holds "up to
//!   131072 digits before the decimal point; up to 16383 digits after the decimal point"
//!   ("Numeric Types": <https://www.postgresql.org/docs/current/datatype-numeric.html>).
//!   The magnitude rule already bounds the digits before the point; the digits after it
//!   are the number's written scale, trailing zeros included (`1.000…0` with 16,384 zeros
//!   is refused although it equals 1), so that is checked too. `1e999999`, `1e-999999`
//!   and a 140,000-digit integer all fail. (Checked by hand on PostgreSQL 15.18: every
//!   number the unit tests accept loads into jsonb; 131,073 integer digits, a scale of
//!   16,384, `0e-999999` and `0e9999999999` are refused by it.)
//! - **`\u0000` and unpaired surrogate escapes**: jsonb refuses them (PostgreSQL, "JSON
//!   Types": "jsonb will reject \u0000 (because that cannot be represented in PostgreSQL's
//!   text type)"; an unpaired surrogate is not a character at all).
//! - **Object size**: "An individual SUPER object can hold up to 16 MB of data"
//!   ("Limitations"), and COPY reads JSON objects of at most 4 MB ("Using COPY to load data
//!   into SUPER columns": <https://docs.aws.amazon.com/redshift/latest/dg/copy_json.html>).
//!   A line is at most [`MAX_LINE_BYTES`], metadata is part of one line and is staged as
//!   the same bytes, so neither can be reached: checked at compile time below, not per
//!   line.

use std::borrow::Cow;

use super::json::KeySet;
use super::{Reason, MAX_LINE_BYTES};

/// Deepest nesting of arrays and objects a Redshift SUPER value may have.
pub(crate) const MAX_SUPER_DEPTH: usize = 1000;
/// Longest string (key or value) a Redshift SUPER value may hold, in bytes once decoded.
pub(crate) const MAX_SUPER_STRING_BYTES: usize = 65_535;
/// Largest SUPER object, in bytes ("16 MB", read as the smaller 16,000,000).
pub(crate) const MAX_SUPER_OBJECT_BYTES: usize = 16_000_000;
/// Largest JSON object COPY reads, in bytes ("4 MB", read as 4,000,000).
pub(crate) const MAX_COPY_JSON_OBJECT_BYTES: usize = 4_000_000;
/// Smallest and largest decimal exponent of a number's first significant digit: the
/// magnitude must be in [1e-307, 1e308), float8's documented range.
pub(crate) const MIN_NUMBER_EXPONENT: i64 = -307;
pub(crate) const MAX_NUMBER_EXPONENT: i64 = 307;
/// Most digits after the decimal point (PostgreSQL numeric's display scale).
pub(crate) const MAX_NUMBER_SCALE: i64 = 16_383;

// The staged row is the line's fields plus a source key (at most 1,024 bytes, 6 KiB once
// JSON-escaped), a line number and fixed-width columns: far under twice a line.
const _: () = assert!(2 * MAX_LINE_BYTES <= MAX_COPY_JSON_OBJECT_BYTES);
const _: () = assert!(MAX_COPY_JSON_OBJECT_BYTES <= MAX_SUPER_OBJECT_BYTES);

/// Why a metadata object cannot be stored, in precedence order: when an object has more
/// than one problem, the first in this order is the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Problem {
    /// A `\u0000` or unpaired surrogate escape, or a key repeated within one object.
    Invalid,
    /// Nested deeper than [`MAX_SUPER_DEPTH`].
    TooDeep,
    /// A string (key or value) longer than [`MAX_SUPER_STRING_BYTES`] once decoded.
    StringTooLong,
    /// A number out of the range both warehouses store.
    NumberOutOfRange,
}

impl Problem {
    /// The reject reason.
    pub(crate) fn reason(self) -> Reason {
        match self {
            Problem::Invalid => Reason::InvalidMetadata,
            Problem::TooDeep => Reason::NestingTooDeep,
            Problem::StringTooLong => Reason::MetadataValueTooLong,
            Problem::NumberOutOfRange => Reason::MetadataNumberOutOfRange,
        }
    }
}

/// The first of `required` that is not a top-level key of `metadata` with a non-null
/// value (absent metadata lacks them all). `metadata` has passed [`check`], so it is one
/// valid object without repeated keys; one parse, linear in its length.
pub(crate) fn first_missing<'k>(
    metadata: Option<&serde_json::value::RawValue>,
    required: &'k [String],
) -> Option<&'k str> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct Present<'k>(&'k [String]);
    impl<'de> Visitor<'de> for Present<'_> {
        type Value = Vec<bool>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a metadata object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<bool>, A::Error> {
            let mut found = vec![false; self.0.len()];
            while let Some(super::json::JsonKey(key)) = map.next_key()? {
                match self.0.iter().position(|r| *r == key) {
                    Some(i) => {
                        let v: &serde_json::value::RawValue = map.next_value()?;
                        found[i] = v.get() != "null";
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }
    let found = match metadata {
        None => vec![false; required.len()],
        Some(m) => {
            let mut de = serde_json::Deserializer::from_str(m.get());
            de.deserialize_map(Present(required))
                .unwrap_or_else(|_| vec![false; required.len()])
        }
    };
    required
        .iter()
        .zip(found)
        .find(|(_, present)| !present)
        .map(|(k, _)| k.as_str())
}

/// Checks a metadata value's text, which serde_json has already found to be valid JSON,
/// in one pass: linear in its length, memory bounded by it.
pub(crate) fn check(raw: &str) -> Result<(), Problem> {
    let b = raw.as_bytes();
    let mut worst: Option<Problem> = None;
    let mut open = OpenContainers::default();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c @ (b'{' | b'[') => {
                open.push(c == b'{');
                if open.depth() > MAX_SUPER_DEPTH {
                    note(&mut worst, Problem::TooDeep);
                }
                i += 1;
            }
            b'}' | b']' => {
                open.pop();
                i += 1;
            }
            b'"' => {
                let s = scan_string(b, i).ok_or(Problem::Invalid)?;
                if s.decoded_len > MAX_SUPER_STRING_BYTES {
                    note(&mut worst, Problem::StringTooLong);
                }
                let next = skip_ws(b, s.end + 1);
                if b.get(next) == Some(&b':') {
                    let text = &raw[i..=s.end];
                    let key = if s.escaped {
                        Cow::Owned(serde_json::from_str::<String>(text).map_err(|_| Problem::Invalid)?)
                    } else {
                        Cow::Borrowed(&text[1..text.len() - 1])
                    };
                    if !open.insert_key(key) {
                        return Err(Problem::Invalid);
                    }
                }
                i = s.end + 1;
            }
            b'-' | b'0'..=b'9' => {
                let (end, ok) = scan_number(b, i);
                if !ok {
                    note(&mut worst, Problem::NumberOutOfRange);
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    worst.map_or(Ok(()), Err)
}

/// Keeps the highest-precedence problem seen.
fn note(worst: &mut Option<Problem>, p: Problem) {
    *worst = Some(worst.map_or(p, |w| w.min(p)));
}

/// The containers enclosing the scan position, with the keys seen so far in each open
/// object. Flat vectors rather than one set per level, so that nesting a million levels
/// deep costs a few bytes per level.
#[derive(Default)]
struct OpenContainers<'a> {
    /// Per open container: for an object, where its keys start in `keys`; `ARRAY` for
    /// an array.
    frames: Vec<usize>,
    /// The keys of every open object, innermost last.
    keys: Vec<Cow<'a, str>>,
    /// Objects with many keys: (their depth, their keys), innermost last.
    large: Vec<(usize, KeySet<'a>)>,
}

impl<'a> OpenContainers<'a> {
    const ARRAY: usize = usize::MAX;
    /// Keys an object may hold in `keys` before moving to a hash set.
    const SMALL: usize = 16;

    fn depth(&self) -> usize {
        self.frames.len()
    }

    fn push(&mut self, object: bool) {
        self.frames
            .push(if object { self.keys.len() } else { Self::ARRAY });
    }

    fn pop(&mut self) {
        let depth = self.frames.len();
        if let Some(start) = self.frames.pop() {
            if start != Self::ARRAY {
                self.keys.truncate(start);
                if self.large.last().is_some_and(|(d, _)| *d == depth) {
                    self.large.pop();
                }
            }
        }
    }

    /// Adds a key to the innermost object; `false` when that object already has it.
    fn insert_key(&mut self, key: Cow<'a, str>) -> bool {
        let depth = self.frames.len();
        let Some(&start) = self.frames.last() else {
            return true;
        };
        if start == Self::ARRAY {
            return true;
        }
        if let Some((d, set)) = self.large.last_mut() {
            if *d == depth {
                return set.insert(key);
            }
        }
        let mine = &self.keys[start..];
        if mine.contains(&key) {
            return false;
        }
        if mine.len() < Self::SMALL {
            self.keys.push(key);
            return true;
        }
        let mut set = KeySet::default();
        for k in self.keys.drain(start..) {
            set.insert(k);
        }
        set.insert(key);
        self.large.push((depth, set));
        true
    }
}

/// A string token: the index of its closing quote, its decoded length in bytes, and
/// whether it holds escapes.
struct StringToken {
    end: usize,
    decoded_len: usize,
    escaped: bool,
}

/// Scans the string starting at the quote `b[at]`; `None` when it holds an escape no
/// warehouse can store (`\u0000`, an unpaired surrogate).
fn scan_string(b: &[u8], at: usize) -> Option<StringToken> {
    let mut i = at + 1;
    let mut decoded_len = 0usize;
    let mut escaped = false;
    while i < b.len() {
        match b[i] {
            b'"' => {
                return Some(StringToken {
                    end: i,
                    decoded_len,
                    escaped,
                })
            }
            b'\\' => {
                escaped = true;
                if b.get(i + 1) != Some(&b'u') {
                    decoded_len += 1;
                    i += 2;
                    continue;
                }
                match hex4(b, i + 2)? {
                    0 => return None,
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed at once by an escaped low one.
                        let low = if b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u') {
                            hex4(b, i + 8)
                        } else {
                            None
                        };
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return None;
                        }
                        decoded_len += 4;
                        i += 12;
                    }
                    0xDC00..=0xDFFF => return None,
                    u => {
                        decoded_len += if u < 0x80 {
                            1
                        } else if u < 0x800 {
                            2
                        } else {
                            3
                        };
                        i += 6;
                    }
                }
            }
            _ => {
                decoded_len += 1;
                i += 1;
            }
        }
    }
    // Unterminated: cannot happen after serde_json, but never accept it.
    None
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let h = b.get(at..at + 4)?;
    h.iter()
        .try_fold(0u32, |n, c| Some(n * 16 + char::from(*c).to_digit(16)?))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// Scans the number starting at `b[at]`: its end, and whether both warehouses store it
/// (see the module documentation).
fn scan_number(b: &[u8], at: usize) -> (usize, bool) {
    let digits_from = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = at + usize::from(b.get(at) == Some(&b'-'));
    let int_end = digits_from(i);
    let int = &b[i..int_end];
    i = int_end;
    let mut frac: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        let end = digits_from(i + 1);
        frac = &b[i + 1..end];
        i = end;
    }
    // The exponent, saturated far beyond any limit that matters (a line holds at most a
    // million digits, so no other term comes near).
    let mut exp: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let negative = b.get(i) == Some(&b'-');
        i += usize::from(matches!(b.get(i), Some(b'+' | b'-')));
        let end = digits_from(i);
        for d in &b[i..end] {
            exp = (exp * 10 + i64::from(d - b'0')).min(1_000_000_000_000);
        }
        if negative {
            exp = -exp;
        }
        i = end;
    }
    let len = |s: &[u8]| i64::try_from(s.len()).unwrap_or(i64::MAX);
    // The decimal exponent of the first significant digit; for zero, of the written 0.
    let lead = if int.first().is_some_and(|d| *d != b'0') {
        len(int) - 1
    } else {
        match frac.iter().position(|d| *d != b'0') {
            Some(k) => -len(&frac[..=k]),
            None => len(int) - 1,
        }
    };
    let magnitude = lead.saturating_add(exp);
    let scale = (len(frac).saturating_sub(exp)).max(0);
    let ok = (MIN_NUMBER_EXPONENT..=MAX_NUMBER_EXPONENT).contains(&magnitude) && scale <= MAX_NUMBER_SCALE;
    (i, ok)
}

#[cfg(test)]
pub(crate) fn number_ok(text: &str) -> bool {
    let (end, ok) = scan_number(text.as_bytes(), 0);
    assert_eq!(end, text.len(), "{text}");
    ok
}

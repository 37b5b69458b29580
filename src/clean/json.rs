//! JSON helpers for the cleaner: object keys decoded once, repeated keys found in linear
//! time, and where a recoverable fragment can start.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Visitor};

use super::Work;

/// An object key as decoded by serde_json: borrowed from the line when it holds no
/// escape, so `"a"` and `"\u0061"` compare equal.
pub(crate) struct JsonKey<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for JsonKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = JsonKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonKey(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonKey(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonKey(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The keys of one JSON object, to find a repeated one. Small objects (the usual case)
/// are searched linearly; past [`KeySet::SMALL`] keys a hash set keeps the check linear
/// in the object's size. The hasher is std's randomly keyed SipHash, so crafted keys
/// cannot force collisions.
#[derive(Debug, Default)]
pub(crate) struct KeySet<'a> {
    small: Vec<Cow<'a, str>>,
    large: Option<HashSet<Cow<'a, str>>>,
}

impl<'a> KeySet<'a> {
    const SMALL: usize = 16;

    /// Adds `key`; `false` when the object already had it.
    pub(super) fn insert(&mut self, key: Cow<'a, str>) -> bool {
        if let Some(set) = &mut self.large {
            return set.insert(key);
        }
        if self.small.contains(&key) {
            return false;
        }
        if self.small.len() < Self::SMALL {
            self.small.push(key);
            return true;
        }
        let mut set: HashSet<Cow<'a, str>> = self.small.drain(..).collect();
        set.insert(key);
        self.large = Some(set);
        true
    }
}

/// JSON's whitespace (RFC 8259): what may surround a value.
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// The only position `q >= 1` where `line[q..]` may be one complete JSON object opening
/// `{` + whitespace + `"id"`, or `None` when no position can be. The caller still parses
/// `line[q..]`: this is a necessary condition that leaves one candidate.
///
/// Why one candidate, found by one backward scan from the line's end, in O(1) memory:
/// if `line[p..]` is an object, its last non-whitespace byte `E` is its closing `}`.
/// In valid JSON a backslash occurs only inside strings, so a quote preceded by an even
/// run of backslashes delimits a string and one preceded by an odd run is escaped,
/// whatever the start `p`. Walking back from `E` (outside any string), toggling at each
/// delimiting quote, therefore tells exactly which brackets of `line[p..]` are structural;
/// and since the object's brackets balance, the count of closers minus openers seen from
/// `E` back to any byte after `p` stays at least 1 and first reaches 0 at `p`. So `p` is
/// the first structural opener at which that count reaches 0, the same for every
/// possible `p`: there is at most one, and trying each `{"id"` in turn (quadratic in
/// the line's length) finds nothing more.
pub(crate) fn recovery_start(line: &[u8], work: &mut Work) -> Option<usize> {
    let end = line.iter().rposition(|c| !is_ws(*c))?;
    if line[end] != b'}' {
        return None;
    }
    let mut depth = 1usize;
    let mut in_string = false;
    let mut i = end;
    while i > 0 {
        i -= 1;
        match line[i] {
            b'"' => {
                let run = line[..i].iter().rev().take_while(|c| **c == b'\\').count();
                if run % 2 == 0 {
                    in_string = !in_string;
                }
                // The backslashes are neither quotes nor brackets: step over them.
                i -= run;
            }
            _ if in_string => {}
            b'}' | b']' => depth += 1,
            c @ (b'{' | b'[') => {
                depth -= 1;
                if depth == 0 {
                    work.add(end - i);
                    let opens_id = line[i + 1..]
                        .iter()
                        .position(|c| !is_ws(*c))
                        .is_some_and(|k| line[i + 1 + k..].starts_with(b"\"id\""));
                    return (c == b'{' && i >= 1 && opens_id).then_some(i);
                }
            }
            _ => {}
        }
    }
    work.add(end);
    None
}

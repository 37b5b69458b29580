//! JSON helpers for the cleaner: object keys decoded once, and repeated keys found in
//! linear time.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Visitor};

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
    pub fn insert(&mut self, key: Cow<'a, str>) -> bool {
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

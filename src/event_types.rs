//! Per-event-type contracts (`[event_types.<name>]`): which metadata keys a type must
//! carry (cleaning rejects it otherwise) and which keys its typed view exposes as columns.
//! Validated once from the configuration; read by the cleaner, `migrate` (views) and
//! `status` (configured types not seen lately).

use std::collections::BTreeMap;

use crate::limits::MAX_EVENT_NAME_BYTES;

/// Prefix of a type's view: `<schema>.events_<type>`.
pub const VIEW_PREFIX: &str = "events_";

/// Longest identifier both warehouses take unquoted: PostgreSQL cuts names at 63 bytes
/// (NAMEDATALEN), Redshift allows 127. A type's view name must fit, prefix included.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Longest configured event type name: its view name must stay a whole identifier.
pub const MAX_TYPE_NAME_BYTES: usize = MAX_IDENTIFIER_BYTES - VIEW_PREFIX.len();

/// The columns of `events` every typed view starts with; a configured column may not
/// reuse one of these names.
pub const EVENT_COLUMNS: [&str; 6] = [
    "event_id",
    "created_at",
    "user_email",
    "ip",
    "event_name",
    "metadata",
];

/// Redshift's reserved words (`sql/redshift/reserved_words.txt`): a view column named
/// like one would need quoting in every analyst's query, so configuration refuses them.
const RESERVED_WORDS: &str = include_str!("../sql/redshift/reserved_words.txt");

/// The SQL type of a typed view column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ColumnType {
    Text,
    Bigint,
    Double,
    Boolean,
    Timestamp,
}

impl ColumnType {
    /// Every type, as configured.
    pub const ALL: [ColumnType; 5] = [
        ColumnType::Text,
        ColumnType::Bigint,
        ColumnType::Double,
        ColumnType::Boolean,
        ColumnType::Timestamp,
    ];

    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Bigint => "bigint",
            ColumnType::Double => "double",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
        }
    }

    /// The type named `s` in `[event_types.<name>.columns]`.
    pub fn parse(s: &str) -> Option<ColumnType> {
        ColumnType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One configured event type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventType {
    /// Metadata keys that must be present and not null, in configuration order.
    pub required_metadata: Vec<String>,
    /// Typed view columns: metadata key (also the column's name) and type, by name.
    pub columns: BTreeMap<String, ColumnType>,
}

/// What cleaning does with an event whose type is not configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownEventTypes {
    /// Load it like any other event (the default: without `[event_types]`, every type
    /// is unknown and everything loads as before).
    #[default]
    Load,
    /// Reject it as `unknown_event_type`.
    Reject,
}

/// Every configured type, by name, and the rule for the others.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventTypes {
    pub types: BTreeMap<String, EventType>,
    pub unknown: UnknownEventTypes,
}

impl EventTypes {
    /// The contract of event type `name`, if it is configured.
    pub fn get(&self, name: &str) -> Option<&EventType> {
        self.types.get(name)
    }

    /// The view name of a type: `events_<type>`.
    pub fn view_name(event_name: &str) -> String {
        format!("{VIEW_PREFIX}{event_name}")
    }
}

/// Why a configured name is refused (the configuration names the key).
pub fn name_problem(name: &str, max: usize) -> Option<String> {
    let b = name.as_bytes();
    let shape = b.first().is_some_and(u8::is_ascii_lowercase)
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    if !shape {
        return Some(format!(
            "`{name}` is not a valid name: [a-z][a-z0-9_]*, the rule event names follow (invalid_event_name)"
        ));
    }
    if b.len() > max {
        return Some(format!("`{name}` is longer than {max} bytes"));
    }
    None
}

/// Why a configured view column name is refused, beyond [`name_problem`].
pub fn column_problem(name: &str) -> Option<String> {
    if let Some(p) = name_problem(name, MAX_IDENTIFIER_BYTES) {
        return Some(p);
    }
    if EVENT_COLUMNS.contains(&name) {
        return Some(format!(
            "`{name}` is already a column of every typed view (one of {})",
            EVENT_COLUMNS.join(", ")
        ));
    }
    let reserved = RESERVED_WORDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|w| w.eq_ignore_ascii_case(name));
    if reserved {
        return Some(format!(
            "`{name}` is a Redshift reserved word (sql/redshift/reserved_words.txt): choose another column name"
        ));
    }
    None
}

// A type's name is an event name too: the view's limit is the stricter one.
const _: () = assert!(MAX_TYPE_NAME_BYTES < MAX_EVENT_NAME_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_event_name_rule_and_fit_an_identifier() {
        assert_eq!(name_problem("page_visit", 56), None);
        for bad in ["", "Page", "1a", "a-b", "a b", "é"] {
            assert!(name_problem(bad, 56).is_some(), "{bad:?}");
        }
        assert!(name_problem(&"a".repeat(57), MAX_TYPE_NAME_BYTES).is_some());
        assert_eq!(name_problem(&"a".repeat(56), MAX_TYPE_NAME_BYTES), None);
        assert_eq!(EventTypes::view_name(&"a".repeat(56)).len(), MAX_IDENTIFIER_BYTES);
    }

    #[test]
    fn columns_may_not_shadow_event_columns_or_reserved_words() {
        assert_eq!(column_problem("path"), None);
        assert!(column_problem("event_id").unwrap().contains("already a column"));
        assert!(column_problem("user").unwrap().contains("reserved"));
        assert!(column_problem("open").unwrap().contains("reserved"));
    }

    #[test]
    fn column_types_round_trip() {
        for t in ColumnType::ALL {
            assert_eq!(ColumnType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ColumnType::parse("int"), None);
    }
}

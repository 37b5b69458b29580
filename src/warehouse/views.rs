//! Typed views of `[event_types]`: `<schema>.events_<type>` with one typed column per
//! configured metadata key. They are derived from the configuration, not from
//! checksummed migrations: `migrate` compares what the configuration asks for with what
//! it created before (`event_type_views`) and creates, replaces or drops views to match.
//! It never drops a view it did not create. The SQL is the dialect's `views.sql`; this
//! module only plans and renders it (pure), and the adapters run each change in a
//! transaction of its own.

use sha2::{Digest, Sha256};

use super::statements::Statements;
use crate::event_types::{ColumnType, EventTypes};

/// The forms `created_at` accepts (`clean::fields`): `YYYY-MM-DD HH:MM:SS` (a `T` or `t`
/// may stand for the space), a fraction of any length (cut to microseconds), then no
/// zone (a naive time, in `cleaning.naive_timezone`), `Z` or `z`, or an offset `±HH`,
/// `±HHMM` or `±HH:MM` (hours to 23, minutes to 59). Real dates only (month lengths,
/// leap years), year 0001-9999. What matches it converts to a UTC TIMESTAMP in both
/// dialects; anything else reads as NULL. No backslash (Redshift reads backslashes in
/// literals as escapes).
pub const TIMESTAMP_PATTERN: &str = concat!(
    "^(",
    "([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-",
    "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))",
    "|([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)-02-29",
    ")[ Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]+)?",
    "([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?$"
);

/// A view `migrate` created, as `event_type_views` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedView {
    pub view_name: String,
    pub event_name: String,
    /// SHA-256 of the `CREATE VIEW` statement that made it.
    pub checksum: String,
}

/// What `migrate` does to one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewAction {
    /// A newly configured type.
    Create,
    /// A type whose columns changed: dropped and created again.
    Replace,
    /// A type no longer configured: its view is dropped.
    Drop,
}

/// One view change, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewChange {
    pub view_name: String,
    pub event_name: String,
    pub action: ViewAction,
    /// The statements, in order, to run in one transaction.
    pub statements: Vec<String>,
}

/// A SQL string literal of a value events-etl generated or validated (no backslash).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `CREATE VIEW` statement of one configured type; `naive_zone` is what a
/// timestamp without a zone means (`cleaning.naive_timezone`).
pub fn create_view(
    sql: &Statements,
    event_name: &str,
    columns: &[(String, ColumnType)],
    naive_zone: chrono_tz::Tz,
) -> String {
    let mut cols = String::new();
    for (key, ty) in columns {
        let fragment = sql
            .get(&format!("column_{}", ty.as_str()))
            .replace("{key}", key)
            .replace("{timestamp_pattern}", &lit(TIMESTAMP_PATTERN))
            .replace("{naive_zone}", &lit(naive_zone.name()));
        cols.push_str(",\n       ");
        cols.push_str(&fragment);
    }
    sql.get("create_view")
        .replace("{view}", &EventTypes::view_name(event_name))
        .replace("{event_name}", &lit(event_name))
        .replace("{columns}", &cols)
}

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The changes that bring the views `migrate` created (`tracked`) in line with the
/// configuration. `at` is the time recorded for created views (a timestamp literal's
/// text). Views whose statement is unchanged are left alone.
pub fn plan(
    sql: &Statements,
    types: &EventTypes,
    naive_zone: chrono_tz::Tz,
    tracked: &[TrackedView],
    at: &str,
) -> Vec<ViewChange> {
    let fill = |name: &str, view: &str, event: &str, sum: &str| {
        sql.get(name)
            .replace("{view_name}", &lit(view))
            .replace("{view}", view)
            .replace("{event_name}", &lit(event))
            .replace("{checksum}", &lit(sum))
            .replace("{at}", &lit(at))
    };
    let mut changes = Vec::new();
    for (event_name, t) in &types.types {
        let view = EventTypes::view_name(event_name);
        let columns: Vec<(String, ColumnType)> = t.columns.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let create = create_view(sql, event_name, &columns, naive_zone);
        let sum = checksum(&create);
        let before = tracked.iter().find(|v| v.view_name == view);
        let action = match before {
            Some(v) if v.checksum == sum => continue,
            Some(_) => ViewAction::Replace,
            None => ViewAction::Create,
        };
        let mut statements = vec![sql.get("lock_views").to_owned()];
        if action == ViewAction::Replace {
            statements.push(fill("drop_view", &view, event_name, &sum));
            statements.push(fill("untrack_view", &view, event_name, &sum));
        }
        statements.push(create);
        statements.push(fill("track_view", &view, event_name, &sum));
        changes.push(ViewChange {
            view_name: view,
            event_name: event_name.clone(),
            action,
            statements,
        });
    }
    for v in tracked {
        if types.get(&v.event_name).is_some() && EventTypes::view_name(&v.event_name) == v.view_name {
            continue;
        }
        changes.push(ViewChange {
            view_name: v.view_name.clone(),
            event_name: v.event_name.clone(),
            action: ViewAction::Drop,
            statements: vec![
                sql.get("lock_views").to_owned(),
                fill("drop_view", &v.view_name, &v.event_name, &v.checksum),
                fill("untrack_view", &v.view_name, &v.event_name, &v.checksum),
            ],
        });
    }
    changes
}

/// A view change that failed: when a relation of the view's name exists that `migrate`
/// did not create, say so (it is never dropped or replaced).
pub fn explain_failure(label: &str, e: super::WarehouseError) -> super::WarehouseError {
    match e {
        super::WarehouseError::Statement {
            statement,
            message,
            class,
        } if message.contains("already exists") => super::WarehouseError::Statement {
            statement,
            class,
            message: format!(
                "{message}: a table or view of that name exists that events-etl did not create, \
                     and it is never dropped or replaced; rename it, or remove the event type ({label})"
            ),
        },
        other => other,
    }
}

/// Whether `change` (planned earlier) still has to be made, given what `migrate` has
/// recorded since (`tracked`): false when another `migrate` made it meanwhile.
pub fn still_needed(
    sql: &Statements,
    types: &EventTypes,
    naive_zone: chrono_tz::Tz,
    tracked: &[TrackedView],
    change: &ViewChange,
) -> bool {
    plan(sql, types, naive_zone, tracked, "")
        .iter()
        .any(|c| c.view_name == change.view_name)
}

/// The names every dialect's `views.sql` defines.
pub const STATEMENTS: [&str; 11] = [
    "create_view",
    "column_text",
    "column_bigint",
    "column_double",
    "column_boolean",
    "column_timestamp",
    "tracked_views",
    "lock_views",
    "drop_view",
    "untrack_view",
    "track_view",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_types::EventType;

    fn types(entries: &[(&str, &[(&str, ColumnType)])]) -> EventTypes {
        EventTypes {
            types: entries
                .iter()
                .map(|(name, cols)| {
                    (
                        (*name).to_owned(),
                        EventType {
                            required_metadata: vec![],
                            columns: cols.iter().map(|(k, t)| ((*k).to_owned(), *t)).collect(),
                        },
                    )
                })
                .collect(),
            unknown: Default::default(),
        }
    }

    #[test]
    fn both_dialects_define_every_view_statement() {
        for (file, text) in [
            (
                "sql/postgres/views.sql",
                include_str!("../../sql/postgres/views.sql"),
            ),
            (
                "sql/redshift/views.sql",
                include_str!("../../sql/redshift/views.sql"),
            ),
        ] {
            Statements::parse(text, "s").assert_defines_exactly(&STATEMENTS, file);
        }
    }

    #[test]
    fn views_are_created_replaced_only_when_changed_and_dropped_only_when_tracked() {
        let sql = Statements::parse(include_str!("../../sql/redshift/views.sql"), "s1");
        let cfg = types(&[
            ("page_visit", &[("path", ColumnType::Text)]),
            ("message_saved", &[("message_id", ColumnType::Bigint)]),
        ]);
        let first = plan(&sql, &cfg, chrono_tz::Tz::UTC, &[], "2026-01-01 00:00:00");
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|c| c.action == ViewAction::Create));
        let page = first.iter().find(|c| c.view_name == "events_page_visit").unwrap();
        assert!(
            page.statements[1].starts_with("CREATE VIEW s1.events_page_visit AS"),
            "{}",
            page.statements[1]
        );
        assert!(page.statements[1].contains("IS_VARCHAR(e.metadata.path)"));
        assert!(page.statements[1].contains("WHERE e.event_name = 'page_visit'"));
        // What the first run recorded: nothing to do the second time.
        let tracked: Vec<TrackedView> = first
            .iter()
            .map(|c| TrackedView {
                view_name: c.view_name.clone(),
                event_name: c.event_name.clone(),
                checksum: checksum(&c.statements[1]),
            })
            .collect();
        assert!(plan(&sql, &cfg, chrono_tz::Tz::UTC, &tracked, "t").is_empty());
        // A changed column type replaces that view only; a removed type drops its view;
        // an untracked view is never named.
        let cfg2 = types(&[("message_saved", &[("message_id", ColumnType::Text)])]);
        let second = plan(&sql, &cfg2, chrono_tz::Tz::UTC, &tracked, "t");
        let actions: Vec<(&str, &ViewAction)> =
            second.iter().map(|c| (c.view_name.as_str(), &c.action)).collect();
        assert_eq!(
            actions,
            [
                ("events_message_saved", &ViewAction::Replace),
                ("events_page_visit", &ViewAction::Drop)
            ]
        );
        assert!(second[1].statements[1].starts_with("DROP VIEW IF EXISTS s1.events_page_visit"));
    }
}

//! Named SQL statements read from `sql/<dialect>/load.sql`: each `-- name: X` line
//! starts statement X. Keeping SQL in .sql files lets data engineers read and run it.

use std::collections::HashMap;

/// A dialect's statements with `{schema}` already replaced.
#[derive(Debug, Clone)]
pub struct Statements {
    map: HashMap<String, String>,
}

/// Replaces `{schema}`; `schema` must be a validated identifier.
pub fn with_schema(sql: &str, schema: &str) -> String {
    sql.replace("{schema}", schema)
}

impl Statements {
    pub fn parse(text: &str, schema: &str) -> Statements {
        let mut map = HashMap::new();
        let mut name: Option<String> = None;
        let mut body = String::new();
        let mut flush = |name: &mut Option<String>, body: &mut String| {
            if let Some(n) = name.take() {
                map.insert(n, with_schema(body.trim(), schema));
            }
            body.clear();
        };
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("-- name:") {
                flush(&mut name, &mut body);
                name = Some(n.trim().to_owned());
            } else if name.is_some() && !line.trim_start().starts_with("--") {
                body.push_str(line);
                body.push('\n');
            }
        }
        flush(&mut name, &mut body);
        Statements { map }
    }

    /// The statement's text. Names are compile-time constants checked by a unit test,
    /// so a missing one is a build defect; it yields SQL that fails loudly.
    pub fn get(&self, name: &str) -> &str {
        self.map
            .get(name)
            .map_or("SELECT 'events-etl: unknown statement' :: int", String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_statements() {
        let s = Statements::parse(
            "-- header\n-- name: a\n-- why\nSELECT 1 FROM {schema}.t;\n\n-- name: b\nSELECT 2;\nSELECT 3;\n",
            "s1",
        );
        assert_eq!(s.get("a"), "SELECT 1 FROM s1.t;");
        assert_eq!(s.get("b"), "SELECT 2;\nSELECT 3;");
        assert!(s.get("zzz").contains("unknown statement"));
    }
}

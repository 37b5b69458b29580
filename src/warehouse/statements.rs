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

/// Renders `template` in one pass: each `{name}` whose name `values` holds is replaced by
/// its value, and a substituted value is never scanned again, so a value may hold any
/// text (an S3 key may be `{offset}.json`). Any other `{...}` is kept as it is.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let value = (after.as_bytes().get(name_len) == Some(&b'}'))
            .then(|| &after[..name_len])
            .and_then(|name| values.iter().find(|(n, _)| *n == name))
            .map(|(_, v)| *v);
        match value {
            Some(v) => {
                out.push_str(v);
                rest = &after[name_len + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl Statements {
    /// The named statements of a `load.sql`, with `{schema}` replaced.
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

    /// The names of the statements defined.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Test helper: the file defines exactly the statements an adapter runs.
    #[cfg(test)]
    pub fn assert_defines_exactly(&self, used: &[&str], file: &str) {
        for name in used {
            assert!(self.map.contains_key(*name), "{file} lacks `-- name: {name}`");
        }
        for name in self.names() {
            assert!(used.contains(&name), "unused statement `{name}` in {file}");
        }
    }
}

/// Splits a script into statements at `;` outside quotes and `--` comments. Used where
/// an API takes one statement at a time (the Redshift Data API). Comment-only pieces are
/// dropped.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let (mut in_quote, mut in_comment) = (false, false);
    while let Some(c) = chars.next() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
                cur.push(c);
            }
            continue;
        }
        match c {
            '\'' => in_quote = !in_quote,
            '-' if !in_quote && chars.peek() == Some(&'-') => {
                in_comment = true;
                continue;
            }
            ';' if !in_quote => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_owned());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_outside_quotes_and_comments() {
        let got = split_statements(
            "-- a; comment\nCREATE TABLE t (a int); -- x;\nINSERT INTO t VALUES (';');\n\n-- tail\n",
        );
        assert_eq!(got, ["CREATE TABLE t (a int)", "INSERT INTO t VALUES (';')"]);
        assert!(split_statements("-- only;\n").is_empty());
    }

    #[test]
    fn render_substitutes_in_one_pass() {
        let got = render(
            "SELECT {a}, {b}, {unknown}, {not a name}, {",
            &[("a", "'{b}'"), ("b", "{a}{offset}")],
        );
        assert_eq!(got, "SELECT '{b}', {a}{offset}, {unknown}, {not a name}, {");
        assert_eq!(render("{x}{x}", &[("x", "}{")]), "}{}{");
        assert_eq!(render("", &[]), "");
    }

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

//! The SQL dialects agree: PostgreSQL (the stand-in) and Redshift declare the same
//! migration files, the same tables with the same columns in the same order and the
//! same column definitions (up to the documented type mapping), and neither runs
//! TRUNCATE (it commits on Redshift, so it cannot be part of a load's transaction).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DIALECTS: [&str; 2] = ["postgres", "redshift"];

/// Column types that differ by design: PostgreSQL's JSONB is Redshift's SUPER.
const TYPE_MAP: [(&str, &str); 1] = [("JSONB", "SUPER")];

/// One `CREATE TABLE {schema}.name (...) tail;`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    name: String,
    /// (name, definition after the name: type and constraints, whitespace collapsed,
    /// upper case), in declaration order.
    columns: Vec<(String, String)>,
    /// Table constraints (`PRIMARY KEY (...)`, ...), normalised like definitions.
    constraints: Vec<String>,
    /// What follows the closing parenthesis up to `;` (Redshift's DISTKEY, SORTKEY...).
    tail: String,
}

impl Table {
    fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn column(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_str())
    }
}

fn sql_dir(dialect: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sql").join(dialect)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The `.sql` files directly in `dir`, sorted by name.
fn sql_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    names
}

/// Every `.sql` file under `dir`, recursively.
fn all_sql_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            all_sql_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "sql") {
            out.push(path);
        }
    }
    out.sort();
}

/// SQL without `--` comments (quote-aware: `'--'` in a literal stays).
fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for line in sql.lines() {
        let mut in_quote = false;
        let mut cut = line.len();
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\'' => in_quote = !in_quote,
                b'-' if !in_quote && b.get(i + 1) == Some(&b'-') => {
                    cut = i;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase() || f == '_')
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '_')
}

/// Positions of `word` in `upper` (already upper case) as a whole word.
fn word_positions(upper: &str, word: &str) -> Vec<usize> {
    let b = upper.as_bytes();
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    upper
        .match_indices(word)
        .map(|(i, _)| i)
        .filter(|&i| {
            let before = i == 0 || !is_word(b[i - 1]);
            let after = b.get(i + word.len()).is_none_or(|&c| !is_word(c));
            before && after
        })
        .collect()
}

/// Splits `body` at commas outside parentheses.
fn split_top_level(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

/// Every `CREATE TABLE [IF NOT EXISTS] {schema}.name ( ... ) tail;` of `sql`, strictly:
/// anything it does not understand is an error, never skipped.
fn parse_tables(sql: &str) -> Result<Vec<Table>, String> {
    let sql = strip_comments(sql);
    let upper = sql.to_ascii_uppercase();
    let mut tables: Vec<Table> = Vec::new();
    let creates = word_positions(&upper, "CREATE");
    for at in creates {
        let words: Vec<&str> = upper[at..].split_whitespace().take(2).collect();
        if words.get(1) != Some(&"TABLE") {
            continue;
        }
        let mut rest = sql[at..].trim_start()["CREATE".len()..].trim_start()["TABLE".len()..].trim_start();
        if rest.to_ascii_uppercase().starts_with("IF NOT EXISTS") {
            rest = rest["IF NOT EXISTS".len()..].trim_start();
        }
        let rest = rest
            .strip_prefix("{schema}.")
            .ok_or_else(|| format!("CREATE TABLE not qualified by {{schema}}.: {}", first_line(rest)))?;
        let open = rest
            .find('(')
            .ok_or_else(|| format!("CREATE TABLE without a column list: {}", first_line(rest)))?;
        let name = rest[..open].trim();
        if !is_ident(name) {
            return Err(format!("bad table name {name:?}"));
        }
        let mut depth = 0i32;
        let mut close = None;
        for (i, c) in rest[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let close = close.ok_or_else(|| format!("table {name}: unbalanced parentheses"))?;
        let body = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let semi = after
            .find(';')
            .ok_or_else(|| format!("table {name}: no `;` after the column list"))?;
        let tail = normalise(&after[..semi]);
        let mut columns: Vec<(String, String)> = Vec::new();
        let mut constraints = Vec::new();
        for (n, element) in split_top_level(body).into_iter().enumerate() {
            let element = element.trim();
            if element.is_empty() {
                return Err(format!(
                    "table {name}: empty element {} (a stray or trailing comma?)",
                    n + 1
                ));
            }
            let first = element.split_whitespace().next().unwrap_or_default();
            if ["PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK"]
                .contains(&first.to_ascii_uppercase().as_str())
            {
                constraints.push(normalise(element));
                continue;
            }
            if !is_ident(first) {
                return Err(format!("table {name}: bad column name {first:?} in {element:?}"));
            }
            let def = normalise(&element[first.len()..]);
            if def.is_empty() {
                return Err(format!("table {name}: column {first} has no type"));
            }
            if columns.iter().any(|(c, _)| c == first) {
                return Err(format!("table {name}: column {first} declared twice"));
            }
            columns.push((first.to_owned(), def));
        }
        if columns.is_empty() {
            return Err(format!("table {name}: no columns"));
        }
        if tables.iter().any(|t| t.name == name) {
            return Err(format!("table {name} created twice"));
        }
        tables.push(Table {
            name: name.to_owned(),
            columns,
            constraints,
            tail,
        });
    }
    // Every CREATE TABLE was parsed (none hidden by an odd spelling).
    let expected = word_positions(&normalise(&sql), "CREATE TABLE").len();
    if expected != tables.len() {
        return Err(format!(
            "found {expected} CREATE TABLE but parsed {}",
            tables.len()
        ));
    }
    Ok(tables)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Whether two column definitions agree, up to [`TYPE_MAP`].
fn same_definition(postgres: &str, redshift: &str) -> bool {
    let mapped = TYPE_MAP.iter().fold(postgres.to_owned(), |d, (pg, rs)| {
        let words: Vec<String> = d
            .split(' ')
            .map(|w| if w == *pg { (*rs).to_owned() } else { w.to_owned() })
            .collect();
        words.join(" ")
    });
    mapped == redshift
}

/// The differences between two dialects' tables (same names, same columns in the same
/// order, same definitions and constraints); empty when they agree.
fn compare(postgres: &[Table], redshift: &[Table]) -> Vec<String> {
    let mut diffs = Vec::new();
    let names = |ts: &[Table]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if names(postgres) != names(redshift) {
        diffs.push(format!(
            "tables differ: postgres {:?}, redshift {:?}",
            names(postgres),
            names(redshift)
        ));
    }
    for p in postgres {
        let Some(r) = redshift.iter().find(|r| r.name == p.name) else {
            continue;
        };
        if p.column_names() != r.column_names() {
            diffs.push(format!(
                "table {}: columns differ:\n  postgres {:?}\n  redshift {:?}",
                p.name,
                p.column_names(),
                r.column_names()
            ));
            continue;
        }
        for ((c, pd), (_, rd)) in p.columns.iter().zip(&r.columns) {
            if !same_definition(pd, rd) {
                diffs.push(format!(
                    "table {}: column {c}: postgres `{pd}`, redshift `{rd}`",
                    p.name
                ));
            }
        }
        if p.constraints != r.constraints {
            diffs.push(format!(
                "table {}: constraints differ: postgres {:?}, redshift {:?}",
                p.name, p.constraints, r.constraints
            ));
        }
    }
    diffs
}

/// Lines of `sql` (comments removed) holding a TRUNCATE.
fn truncates(sql: &str) -> Vec<String> {
    strip_comments(sql)
        .lines()
        .filter(|l| !word_positions(&l.to_ascii_uppercase(), "TRUNCATE").is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

fn migrations(dialect: &str) -> BTreeMap<String, Vec<Table>> {
    let dir = sql_dir(dialect).join("migrations");
    sql_files(&dir)
        .into_iter()
        .map(|f| {
            let tables = parse_tables(&read(&dir.join(&f)))
                .unwrap_or_else(|e| panic!("{dialect}/migrations/{f}: {e}"));
            (f, tables)
        })
        .collect()
}

/// Applies the ALTER statements of `sql` to `tables`: `ALTER TABLE {schema}.t RENAME
/// COLUMN a TO b`, `ALTER TABLE {schema}.t DROP CONSTRAINT t_pkey` (the primary key,
/// inline on a column or a table constraint) and `ALTER TABLE {schema}.t ADD PRIMARY KEY
/// (a, b)`. Any other ALTER is an error: this check must understand every change.
fn apply_alters(tables: &mut [Table], sql: &str) -> Result<(), String> {
    let sql = strip_comments(sql);
    for stmt in sql.split(';') {
        let words: Vec<&str> = stmt.split_whitespace().collect();
        if words.first().is_none_or(|w| !w.eq_ignore_ascii_case("ALTER")) {
            if stmt.to_ascii_uppercase().split_whitespace().any(|w| w == "ALTER") {
                return Err(format!("ALTER inside another statement: {}", stmt.trim()));
            }
            continue;
        }
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        if upper.get(1).map(String::as_str) != Some("TABLE") || words.len() < 4 {
            return Err(format!("unsupported ALTER: {}", stmt.trim()));
        }
        let name = words[2]
            .strip_prefix("{schema}.")
            .ok_or_else(|| format!("ALTER TABLE not qualified by {{schema}}.: {}", stmt.trim()))?;
        let t = tables
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("ALTER of unknown table {name}"))?;
        let action: Vec<&str> = upper[3..].iter().map(String::as_str).collect();
        match action.as_slice() {
            ["RENAME", "COLUMN", _, "TO", _] => {
                let (from, to) = (words[5], words[7]);
                let col = t
                    .columns
                    .iter_mut()
                    .find(|(c, _)| c == from)
                    .ok_or_else(|| format!("table {name} has no column {from} to rename"))?;
                col.0 = to.to_owned();
            }
            ["DROP", "CONSTRAINT", constraint]
                if *constraint == format!("{}_PKEY", name.to_ascii_uppercase()) =>
            {
                let before = t.constraints.len();
                t.constraints.retain(|c| !c.starts_with("PRIMARY KEY"));
                let mut dropped = t.constraints.len() != before;
                for (_, def) in t.columns.iter_mut() {
                    if def.contains(" PRIMARY KEY") {
                        *def = def.replace(" PRIMARY KEY", "");
                        dropped = true;
                    }
                }
                if !dropped {
                    return Err(format!("table {name} has no primary key to drop"));
                }
            }
            ["ADD", "COLUMN", _, _, ..] => {
                let column = words[5];
                if t.columns.iter().any(|(c, _)| c == column) {
                    return Err(format!("table {name} already has a column {column}"));
                }
                t.columns
                    .push((column.to_owned(), normalise(&words[6..].join(" "))));
            }
            ["ADD", "PRIMARY", "KEY", ..] => {
                let has_key = t.constraints.iter().any(|c| c.starts_with("PRIMARY KEY"))
                    || t.columns.iter().any(|(_, d)| d.contains("PRIMARY KEY"));
                if has_key {
                    return Err(format!("table {name} already has a primary key"));
                }
                let at = stmt
                    .to_ascii_uppercase()
                    .find("PRIMARY")
                    .ok_or_else(|| format!("unsupported ALTER: {}", stmt.trim()))?;
                t.constraints.push(normalise(&stmt[at..]));
            }
            _ => return Err(format!("unsupported ALTER: {}", stmt.trim())),
        }
    }
    Ok(())
}

/// The tables a dialect ends with after all its migrations, in order.
fn final_tables(dialect: &str) -> Vec<Table> {
    let dir = sql_dir(dialect).join("migrations");
    let texts: Vec<(String, String)> = sql_files(&dir)
        .into_iter()
        .map(|f| {
            let text = read(&dir.join(&f));
            (f, text)
        })
        .collect();
    fold(dialect, &texts)
}

fn fold(dialect: &str, files: &[(String, String)]) -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    for (f, text) in files {
        let created = parse_tables(text).unwrap_or_else(|e| panic!("{dialect}/migrations/{f}: {e}"));
        tables.extend(created);
        apply_alters(&mut tables, text).unwrap_or_else(|e| panic!("{dialect}/migrations/{f}: {e}"));
    }
    tables
}

#[test]
fn both_dialects_have_the_same_migration_files() {
    let pg = sql_files(&sql_dir("postgres").join("migrations"));
    let rs = sql_files(&sql_dir("redshift").join("migrations"));
    assert!(!pg.is_empty(), "no PostgreSQL migrations");
    assert_eq!(
        pg, rs,
        "sql/postgres/migrations and sql/redshift/migrations differ"
    );
    // And nothing else sits there (a stray file would be refused by migrate).
    for d in DIALECTS {
        let dir = sql_dir(d).join("migrations");
        let all = std::fs::read_dir(&dir).expect("dir").count();
        assert_eq!(all, sql_files(&dir).len(), "non-.sql files in {}", dir.display());
    }
}

#[test]
fn both_dialects_declare_the_same_tables_and_columns() {
    // What matters is the schema both end with: a dialect may need a step the other
    // does not (PostgreSQL's 0002 renames a column Redshift's 0001 never had).
    let pg = final_tables("postgres");
    let rs = final_tables("redshift");
    let diffs = compare(&pg, &rs);
    assert!(diffs.is_empty(), "after all migrations:\n{}", diffs.join("\n"));
    let names: Vec<&str> = pg.iter().map(|t| t.name.as_str()).collect();
    for t in [
        "events",
        "event_rejects",
        "etl_loads",
        "etl_files",
        "stage_events",
        "stage_rejects",
        "stage_files",
    ] {
        assert!(names.contains(&t), "0001 lacks {t}: {names:?}");
    }
    // The bookkeeping table, created by bootstrap.sql in both dialects.
    let boot = |d: &str| parse_tables(&read(&sql_dir(d).join("bootstrap.sql"))).expect("bootstrap.sql");
    let (pb, rb) = (boot("postgres"), boot("redshift"));
    assert_eq!(
        pb.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["schema_migrations"]
    );
    let diffs = compare(&pb, &rb);
    assert!(diffs.is_empty(), "bootstrap.sql:\n{}", diffs.join("\n"));
}

#[test]
fn redshift_uses_super_and_distributes_and_sorts_events() {
    let rs = migrations("redshift");
    let tables: Vec<&Table> = rs.values().flatten().collect();
    let table = |n: &str| {
        *tables
            .iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("redshift has no {n}"))
    };
    for t in ["events", "stage_events"] {
        let def = table(t).column("metadata").expect("metadata column");
        assert!(def.starts_with("SUPER"), "{t}.metadata is `{def}`, not SUPER");
    }
    let events = table("events");
    assert!(
        events.tail.contains("DISTKEY (EVENT_ID)"),
        "events must be distributed on event_id: `{}`",
        events.tail
    );
    assert!(
        !word_positions(&events.tail, "SORTKEY").is_empty() && events.tail.contains("SORTKEY (CREATED_AT)"),
        "events must be sorted by created_at: `{}`",
        events.tail
    );
    let pg = migrations("postgres");
    for t in pg.values().flatten() {
        assert_eq!(
            t.tail, "",
            "postgres table {} has Redshift-style attributes",
            t.name
        );
    }
}

#[test]
fn no_dialect_runs_truncate() {
    let mut checked = 0;
    for d in DIALECTS {
        let mut files = Vec::new();
        all_sql_files(&sql_dir(d), &mut files);
        for f in files {
            let found = truncates(&read(&f));
            assert!(found.is_empty(), "{} runs TRUNCATE: {found:?}", f.display());
            checked += 1;
        }
    }
    // load.sql, bootstrap.sql and the migrations at least.
    assert!(checked >= 5, "only {checked} SQL files found");
}

/// The checks above can fail: a doctored dialect is caught.
mod doctored {
    use super::*;

    fn postgres_0001() -> String {
        read(
            &sql_dir("postgres")
                .join("migrations")
                .join("0001_create_tables.sql"),
        )
    }

    fn redshift_0001() -> Vec<Table> {
        final_tables("redshift")
    }

    /// PostgreSQL's final tables with `doctored` in place of its 0001.
    fn postgres_with(doctored: &str) -> Vec<Table> {
        let dir = sql_dir("postgres").join("migrations");
        let files: Vec<(String, String)> = sql_files(&dir)
            .into_iter()
            .map(|f| {
                let text = if f == "0001_create_tables.sql" {
                    doctored.to_owned()
                } else {
                    read(&dir.join(&f))
                };
                (f, text)
            })
            .collect();
        fold("postgres", &files)
    }

    #[test]
    fn a_missing_column_is_caught() {
        let sql = postgres_0001();
        let line = "    ip           VARCHAR(45),\n";
        assert_eq!(sql.matches(line).count(), 2, "events and stage_events declare ip");
        let doctored = sql.replacen(line, "", 1);
        let diffs = compare(&postgres_with(&doctored), &redshift_0001());
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert!(diffs[0].contains("table events: columns differ"), "{diffs:?}");
    }

    #[test]
    fn a_missing_last_column_leaves_a_comma_and_is_refused() {
        let sql = postgres_0001();
        let doctored = sql.replacen(",\n    loaded_at    TIMESTAMP     NOT NULL\n", ",\n", 1);
        assert_ne!(doctored, sql);
        let e = parse_tables(&doctored).expect_err("a trailing comma must not parse");
        assert!(e.contains("table events: empty element"), "{e}");
    }

    #[test]
    fn swapped_columns_a_changed_type_and_a_missing_table_are_caught() {
        let sql = postgres_0001();
        let swapped = sql.replacen(
            "    reason       VARCHAR(32)   NOT NULL,\n    raw          VARCHAR(16384),\n",
            "    raw          VARCHAR(16384),\n    reason       VARCHAR(32)   NOT NULL,\n",
            1,
        );
        assert_ne!(swapped, sql);
        let diffs = compare(&postgres_with(&swapped), &redshift_0001());
        assert!(
            diffs
                .iter()
                .any(|d| d.contains("table event_rejects: columns differ")),
            "{diffs:?}"
        );

        let retyped = sql.replacen("event_id     VARCHAR(36)", "event_id     VARCHAR(64)", 1);
        let diffs = compare(&postgres_with(&retyped), &redshift_0001());
        assert!(diffs.iter().any(|d| d.contains("column event_id")), "{diffs:?}");

        let start = sql
            .find("CREATE TABLE {schema}.stage_files")
            .expect("stage_files");
        let without = &sql[..start];
        let diffs = compare(&postgres_with(without), &redshift_0001());
        assert!(diffs.iter().any(|d| d.starts_with("tables differ")), "{diffs:?}");
    }

    #[test]
    fn unparseable_tables_are_errors_not_skipped() {
        assert!(parse_tables("CREATE TABLE events (a INT);")
            .unwrap_err()
            .contains("{schema}"));
        assert!(parse_tables("CREATE TABLE {schema}.t (a INT, (b INT);").is_err());
        assert!(parse_tables("CREATE TABLE {schema}.t (a INT, a INT);").is_err());
        assert!(parse_tables("CREATE TABLE {schema}.t (a);").is_err());
        assert!(parse_tables("CREATE TABLE {schema}.t (a INT)").is_err());
        assert!(parse_tables("CREATE  TABLE {schema}.t (a INT);\nCREATE TABLE {schema}.t (b INT);").is_err());
        let t = parse_tables("-- CREATE TABLE {schema}.x (y INT);\ncreate table if not exists {schema}.t (\n a INT NOT NULL, -- why\n b VARCHAR(3),\n PRIMARY KEY (a)\n) DISTSTYLE ALL;")
            .expect("parses");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].column_names(), ["a", "b"]);
        assert_eq!(t[0].columns[1].1, "VARCHAR(3)");
        assert_eq!(t[0].constraints, ["PRIMARY KEY (A)"]);
        assert_eq!(t[0].tail, "DISTSTYLE ALL");
    }

    #[test]
    fn redshift_without_super_or_keys_is_caught() {
        let sql = read(
            &sql_dir("redshift")
                .join("migrations")
                .join("0001_create_tables.sql"),
        );
        let t = parse_tables(&sql.replace("SUPER", "VARCHAR(65535)")).expect("parses");
        let events = t.iter().find(|t| t.name == "events").expect("events");
        assert!(!events.column("metadata").expect("metadata").starts_with("SUPER"));
        let t = parse_tables(&sql.replacen("DISTKEY (event_id)\nCOMPOUND SORTKEY (created_at)", "", 1))
            .expect("parses");
        let events = t.iter().find(|t| t.name == "events").expect("events");
        assert!(
            !events.tail.contains("DISTKEY") && !events.tail.contains("SORTKEY"),
            "{}",
            events.tail
        );
    }

    #[test]
    fn truncate_statements_are_found_and_comments_ignored() {
        assert!(
            truncates("-- DELETE, not TRUNCATE: it commits\nDELETE FROM {schema}.stage_events;").is_empty()
        );
        assert!(truncates("SELECT 'TRUNCATE_ME' AS x;").is_empty());
        assert_eq!(
            truncates("DELETE FROM a;\n  truncate {schema}.stage_events; -- fast\n"),
            ["truncate {schema}.stage_events;"]
        );
        assert_eq!(truncates("BEGIN; TRUNCATE TABLE t; COMMIT;").len(), 1);
    }
}

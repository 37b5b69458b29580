//! What Redshift refuses that PostgreSQL accepts: the Data API stand-in checks every
//! statement against these rules before mapping it, so that it is at least as strict as
//! Redshift. Each rule names the AWS page that states it (pages under
//! <https://docs.aws.amazon.com/redshift/latest/dg/>). The error texts follow Redshift's
//! wording where the adapter or a person would read them.
//!
//! The same reserved-word check runs over every statement the adapter sends in the
//! grammar gate (`tests/it/redshift_adapter.rs`).

use std::collections::HashSet;
use std::sync::OnceLock;

/// `sql/redshift/reserved_words.txt`: the list from r_pg_keywords.html.
const RESERVED_FILE: &str = include_str!("../../sql/redshift/reserved_words.txt");

/// Redshift's reserved words, upper case.
pub fn reserved() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        RESERVED_FILE
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_ascii_uppercase)
            .collect()
    })
}

/// Reserved words that the statements Redshift accepts use as keywords. Any other
/// reserved word, unquoted, can only be a name, which Redshift refuses
/// (r_pg_keywords.html, r_names.html: a standard identifier must "Not be a reserved SQL
/// key word"). Even these are names, and refused, where only a name can stand: after or
/// before a `.`, as a column in CREATE TABLE or in an INSERT/COPY column list, or as an
/// alias after AS.
const KEYWORDS: &[&str] = &[
    "ALL",
    "AND",
    "ANY",
    "AS",
    "ASC",
    "BETWEEN",
    "BOTH",
    "CASE",
    "CAST",
    "CHECK",
    "COLLATE",
    "COLUMN",
    "CONSTRAINT",
    "CREATE",
    "CROSS",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "DEFAULT",
    "DESC",
    "DISTINCT",
    "ELSE",
    "ENCODE",
    "END",
    "EXCEPT",
    "FALSE",
    "FOR",
    "FOREIGN",
    "FROM",
    "FULL",
    "GROUP",
    "GZIP",
    "HAVING",
    "IDENTITY",
    "ILIKE",
    "IN",
    "INNER",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "IS",
    "ISNULL",
    "JOIN",
    "LEADING",
    "LEFT",
    "LIKE",
    "LIMIT",
    "MINUS",
    "NATURAL",
    "NOT",
    "NOTNULL",
    "NULL",
    "NULLS",
    // COPY ... COMPUPDATE OFF STATUPDATE OFF (copy-parameters-data-load.html).
    "OFF",
    "OFFSET",
    "ON",
    "ONLY",
    "OR",
    "ORDER",
    "OUTER",
    "PARTITION",
    "PRIMARY",
    "REFERENCES",
    "RIGHT",
    "SELECT",
    "SIMILAR",
    "SOME",
    "SYSDATE",
    "TABLE",
    "THEN",
    "TIMESTAMP",
    "TO",
    "TRAILING",
    "TRUE",
    "UNION",
    "UNIQUE",
    "USING",
    "WHEN",
    "WHERE",
    "WITH",
    "BACKUP",
];

/// A lexical token, as far as these rules need one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lex {
    /// An unquoted word, as written.
    Word(String),
    /// Punctuation (one character, or `::`).
    Punct(String),
    /// Anything else that is not a name: literals, quoted identifiers, numbers.
    Other,
}

impl Lex {
    fn word(&self) -> Option<String> {
        match self {
            Lex::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self, Lex::Word(x) if x.eq_ignore_ascii_case(w))
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self, Lex::Punct(x) if x == p)
    }
}

/// Redshift's wording for a name it cannot parse.
pub fn syntax_error(word: &str) -> String {
    format!("ERROR: syntax error at or near \"{word}\"")
}

/// Words used as names that Redshift reserves: `Err` with Redshift's syntax error for
/// the first. `toks` holds significant tokens only (no whitespace or comments).
pub fn check_reserved(toks: &[Lex]) -> Result<(), String> {
    let reserved = reserved();
    let name_positions = name_positions(toks);
    for (i, t) in toks.iter().enumerate() {
        let (Lex::Word(w), Some(upper)) = (t, t.word()) else {
            continue;
        };
        if !reserved.contains(&upper) {
            continue;
        }
        // `ENCODE RAW`, `ENCODE AZ64`, ...: encodings are keywords there
        // (c_Compression_encodings.html).
        if i > 0 && toks[i - 1].is_word("ENCODE") {
            continue;
        }
        if !KEYWORDS.contains(&upper.as_str()) || name_positions.contains(&i) {
            return Err(syntax_error(w));
        }
    }
    Ok(())
}

/// Indexes of tokens that can only be names.
fn name_positions(toks: &[Lex]) -> HashSet<usize> {
    let mut at = HashSet::new();
    for i in 0..toks.len() {
        if toks[i].is_punct(".") {
            if i > 0 {
                at.insert(i - 1);
            }
            at.insert(i + 1);
        }
        // `AS alias`, but not `CAST(x AS type)` nor `... AS SELECT` / `AS (`.
        if toks[i].is_word("AS") && !in_cast(toks, i) {
            if let Some(next) = toks.get(i + 1) {
                if !next.is_word("SELECT") && !next.is_word("WITH") && !next.is_punct("(") {
                    at.insert(i + 1);
                }
            }
        }
    }
    let first = toks.first().and_then(Lex::word);
    let second = toks.get(1).and_then(Lex::word);
    let column_list_open = match (first.as_deref(), second.as_deref()) {
        // CREATE [TEMP] TABLE [IF NOT EXISTS] name ( column definitions )
        (Some("CREATE"), _) => toks.iter().position(|t| t.is_punct("(")),
        // INSERT INTO name ( columns ) / COPY name ( columns )
        // (before any VALUES, SELECT or FROM: that parenthesis is not a column list)
        (Some("INSERT"), _) | (Some("COPY"), _) => toks
            .iter()
            .position(|t| t.is_punct("(") || t.is_word("VALUES") || t.is_word("SELECT") || t.is_word("FROM"))
            .filter(|&p| toks[p].is_punct("(")),
        _ => None,
    };
    if let Some(open) = column_list_open {
        let definitions = first.as_deref() == Some("CREATE");
        let mut depth = 0;
        let mut element_start = true;
        for (j, t) in toks.iter().enumerate().skip(open) {
            if t.is_punct("(") {
                depth += 1;
                if depth == 1 {
                    element_start = true;
                }
                continue;
            }
            if t.is_punct(")") {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                continue;
            }
            if depth == 1 && t.is_punct(",") {
                element_start = true;
                continue;
            }
            if depth == 1 && element_start {
                element_start = false;
                let constraint = ["PRIMARY", "UNIQUE", "FOREIGN", "CONSTRAINT", "CHECK"]
                    .iter()
                    .any(|k| t.is_word(k));
                if !(definitions && constraint) {
                    at.insert(j);
                }
            }
        }
    }
    at
}

/// Whether the `AS` at `i` sits directly inside `CAST( ... )`.
fn in_cast(toks: &[Lex], i: usize) -> bool {
    let mut depth = 0;
    for j in (0..i).rev() {
        if toks[j].is_punct(")") {
            depth += 1;
        } else if toks[j].is_punct("(") {
            if depth == 0 {
                return j > 0 && toks[j - 1].is_word("CAST");
            }
            depth -= 1;
        }
    }
    false
}

/// A PostgreSQL form Redshift does not take, found in a statement.
pub struct Refusal {
    /// Redshift's error, or the stand-in's when Redshift would not fail but do something
    /// else (TRUNCATE commits).
    pub message: String,
}

/// The forms PostgreSQL accepts and Redshift does not; `in_batch`: the statement is
/// part of a BatchExecuteStatement transaction. `toks` holds significant tokens only.
pub fn check_forms(toks: &[Lex], in_batch: bool) -> Result<(), Refusal> {
    let refuse = |message: String| Err(Refusal { message });
    let word = |i: usize| toks.get(i).and_then(Lex::word).unwrap_or_default();
    let unsupported = "(stand-in: Redshift does not support this PostgreSQL feature; see ";
    for i in 0..toks.len() {
        let w = word(i);
        // INSERT ... ON CONFLICT: Redshift's INSERT (r_INSERT_30.html) has no such
        // clause; upserts are MERGE (r_MERGE.html).
        if w == "ON" && word(i + 1) == "CONFLICT" {
            return refuse(format!(
                "{} {unsupported}r_INSERT_30.html: no ON CONFLICT clause; use MERGE)",
                syntax_error("CONFLICT")
            ));
        }
        // RETURNING: not in Redshift's INSERT, UPDATE, DELETE or MERGE syntax.
        if w == "RETURNING" {
            return refuse(format!(
                "{} {unsupported}r_INSERT_30.html, r_DELETE.html, r_UPDATE.html)",
                syntax_error("RETURNING")
            ));
        }
        // Advisory locks: c_unsupported-postgresql-functions.html.
        if w.starts_with("PG_ADVISORY_") || w.starts_with("PG_TRY_ADVISORY_") {
            return refuse(format!(
                "ERROR: function {}() does not exist {unsupported}c_unsupported-postgresql-functions.html)",
                w.to_ascii_lowercase()
            ));
        }
        // Indexes, SERIAL, JSON/JSONB: c_unsupported-postgresql-features.html,
        // c_unsupported-postgresql-datatypes.html (Redshift's JSON type is SUPER).
        if w == "CREATE" && (word(i + 1) == "INDEX" || (word(i + 1) == "UNIQUE" && word(i + 2) == "INDEX")) {
            return refuse(format!(
                "{} {unsupported}c_unsupported-postgresql-features.html: indexes)",
                syntax_error("INDEX")
            ));
        }
        if matches!(
            w.as_str(),
            "SERIAL" | "BIGSERIAL" | "SMALLSERIAL" | "SERIAL4" | "SERIAL8"
        ) {
            return refuse(format!(
                "ERROR: type \"{}\" does not exist {unsupported}c_unsupported-postgresql-datatypes.html; \
                 Redshift has IDENTITY columns)",
                w.to_ascii_lowercase()
            ));
        }
        if matches!(w.as_str(), "JSONB" | "JSON") {
            // `FORMAT [AS] JSON` is COPY's own.
            let before = word(i.wrapping_sub(1));
            let copy_format = before == "FORMAT" || (before == "AS" && word(i.wrapping_sub(2)) == "FORMAT");
            if !copy_format {
                return refuse(format!(
                    "ERROR: type \"{}\" does not exist {unsupported}c_unsupported-postgresql-datatypes.html; \
                     Redshift stores JSON in SUPER)",
                    w.to_ascii_lowercase()
                ));
            }
        }
        // TRUNCATE commits the open transaction on Redshift (r_TRUNCATE.html): inside a
        // batch it would silently commit half a load. PostgreSQL would not, so the
        // stand-in cannot model it and refuses it.
        if w == "TRUNCATE" && in_batch {
            return refuse(
                "stand-in: TRUNCATE inside a BatchExecuteStatement: on Redshift it commits the \
                 open transaction (r_TRUNCATE.html), so the batch would no longer be atomic; \
                 use DELETE"
                    .into(),
            );
        }
        // PostgreSQL's jsonb functions and operators: Redshift has no JSON/JSONB type
        // (c_unsupported-postgresql-datatypes.html) and reads SUPER with PartiQL
        // navigation (`metadata.key`, query-super.html) and its own functions
        // (JSON_TYPEOF, IS_VARCHAR, ...).
        if w.starts_with("JSONB_") || w == "TO_JSONB" {
            return refuse(format!(
                "ERROR: function {}() does not exist {unsupported}c_unsupported-postgresql-functions.html; \
                 SUPER is read with navigation and JSON_TYPEOF/IS_* functions, query-super.html)",
                w.to_ascii_lowercase()
            ));
        }
        let punct = |j: usize| match toks.get(j) {
            Some(Lex::Punct(p)) => p.as_str(),
            _ => "",
        };
        if (punct(i) == "-" || punct(i) == "#") && punct(i + 1) == ">" {
            return refuse(format!(
                "{} {unsupported}query-super.html: SUPER is navigated with `.`, not the jsonb operators -> ->> #>>)",
                syntax_error(">")
            ));
        }
        if w == "ALTER" && word(i + 1) == "TABLE" && in_batch {
            let rest: Vec<String> = (i + 2..toks.len()).map(word).collect();
            let alter_type = rest.windows(2).any(|p| p[0] == "ALTER" && p[1] == "COLUMN")
                && rest.iter().any(|w| w == "TYPE");
            // r_ALTER_TABLE.html: "ALTER TABLE ... ALTER COLUMN ... TYPE" and "ALTER
            // TABLE APPEND" cannot run inside a transaction block.
            if alter_type {
                return refuse(
                    "ERROR: ALTER TABLE ALTER COLUMN cannot run inside a transaction block \
                     (r_ALTER_TABLE.html)"
                        .into(),
                );
            }
            if rest.iter().any(|w| w == "APPEND") {
                return refuse(
                    "ERROR: ALTER TABLE APPEND cannot run inside a transaction block \
                     (r_ALTER_TABLE_APPEND.html)"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

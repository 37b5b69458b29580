//! Versioned migrations, as sqlx does them: files `NNNN_name.sql` under
//! `sql/<dialect>/migrations/`, each with a checksum; applied in order, each with its
//! bookkeeping row in one transaction, under a lock. An applied file that was edited, a
//! misnamed file, or a database ahead of this build stops `migrate` with the fix.
//!
//! A migration whose first line is [`NO_TRANSACTION`] runs its statements one by one,
//! outside a transaction, then records itself: Redshift refuses some DDL inside a
//! transaction block (`ALTER TABLE ... ALTER COLUMN ... TYPE`, `ALTER TABLE APPEND`).
//! Such a file must be safe to run again from the start (`IF EXISTS`, `IF NOT EXISTS`),
//! since it can be interrupted between statements.

use sha2::{Digest, Sha256};
use thiserror::Error;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// The first line that makes a migration run outside a transaction.
pub const NO_TRANSACTION: &str = "-- events-etl: no-transaction";

/// SQL dialects with their own migration files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Redshift,
}

impl Dialect {
    /// The embedded `(file name, contents)` pairs.
    pub fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Dialect::Postgres => embedded::POSTGRES,
            Dialect::Redshift => embedded::REDSHIFT,
        }
    }

    /// The dialect's directory under `sql/`.
    pub fn dir(self) -> &'static str {
        match self {
            Dialect::Postgres => "sql/postgres/migrations",
            Dialect::Redshift => "sql/redshift/migrations",
        }
    }
}

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    /// SHA-256 of the file's text, hex.
    pub checksum: String,
    /// The file's text; `{schema}` still to be replaced.
    pub sql: &'static str,
    /// Runs in one transaction with its bookkeeping row (false: [`NO_TRANSACTION`]).
    pub transaction: bool,
}

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRow {
    pub version: i64,
    pub name: String,
    pub checksum: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
/// A migration set that cannot be applied, with what to do about it.
pub enum MigrateError {
    #[error("migration file {dir}/{file} is misnamed: expected NNNN_name.sql (digits, underscore, [a-z0-9_] name); rename it")]
    Misnamed { dir: &'static str, file: String },
    #[error("migration files {dir}/{a} and {dir}/{b} share version {version}: give one a new number")]
    DuplicateVersion {
        dir: &'static str,
        version: i64,
        a: String,
        b: String,
    },
    #[error("migration {version} ({name}) was edited after it was applied (checksum in database {applied}, in this build {file}): restore the file and put the change in a new migration")]
    Edited {
        version: i64,
        name: String,
        applied: String,
        file: String,
    },
    #[error(
        "the database has migration {version} ({name}) that this build does not know: run a newer events-etl"
    )]
    Unknown { version: i64, name: String },
}

/// `0001_create_tables.sql` -> (1, "create_tables").
pub fn parse_name(file: &str) -> Option<(i64, String)> {
    let stem = file.strip_suffix(".sql")?;
    let (num, name) = stem.split_once('_')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    Some((num.parse().ok()?, name.to_owned()))
}

/// A migration file's checksum (SHA-256 of its text, hex): an applied file that was
/// edited afterwards no longer matches its recorded checksum.
pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Validates a dialect's files and orders them by version.
pub fn migrations(
    dir: &'static str,
    files: &[(&'static str, &'static str)],
) -> Result<Vec<Migration>, MigrateError> {
    let mut out: Vec<Migration> = Vec::new();
    for (file, sql) in files {
        let (version, name) = parse_name(file).ok_or_else(|| MigrateError::Misnamed {
            dir,
            file: (*file).to_owned(),
        })?;
        if let Some(other) = out.iter().find(|m| m.version == version) {
            return Err(MigrateError::DuplicateVersion {
                dir,
                version,
                a: format!("{:04}_{}.sql", other.version, other.name),
                b: (*file).to_owned(),
            });
        }
        out.push(Migration {
            version,
            name,
            checksum: checksum(sql),
            sql,
            transaction: sql.lines().next().map(str::trim_end) != Some(NO_TRANSACTION),
        });
    }
    out.sort_by_key(|m| m.version);
    Ok(out)
}

/// The migrations still to apply, after checking the applied ones are unchanged.
pub fn pending<'m>(all: &'m [Migration], applied: &[AppliedRow]) -> Result<Vec<&'m Migration>, MigrateError> {
    for row in applied {
        match all.iter().find(|m| m.version == row.version) {
            None => {
                return Err(MigrateError::Unknown {
                    version: row.version,
                    name: row.name.clone(),
                })
            }
            Some(m) if m.checksum != row.checksum => {
                return Err(MigrateError::Edited {
                    version: m.version,
                    name: m.name.clone(),
                    applied: row.checksum.clone(),
                    file: m.checksum.clone(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(all
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_name("0001_create_tables.sql"),
            Some((1, "create_tables".into()))
        );
        assert_eq!(parse_name("12_x.sql"), Some((12, "x".into())));
        for bad in [
            "create.sql",
            "0001.sql",
            "0001_.sql",
            "0001_Create.sql",
            "x001_a.sql",
            "0001_a.txt",
            "0001-a.sql",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn misnamed_and_duplicate_files_are_refused() {
        let e = migrations("d", &[("0001_a.sql", "x"), ("notes.sql", "y")]).unwrap_err();
        assert!(
            matches!(e, MigrateError::Misnamed { ref file, .. } if file == "notes.sql"),
            "{e}"
        );
        assert!(e.to_string().contains("rename it"));
        let e = migrations("d", &[("0001_a.sql", "x"), ("1_b.sql", "y")]).unwrap_err();
        assert!(
            matches!(e, MigrateError::DuplicateVersion { version: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn edited_and_unknown_migrations_are_refused() {
        let all = migrations("d", &[("0002_b.sql", "b"), ("0001_a.sql", "a")]).unwrap();
        assert_eq!(all.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
        let row = |v: i64, sql: &str| AppliedRow {
            version: v,
            name: "x".into(),
            checksum: checksum(sql),
        };
        assert_eq!(pending(&all, &[]).unwrap().len(), 2);
        assert_eq!(pending(&all, &[row(1, "a")]).unwrap()[0].version, 2);
        assert!(matches!(
            pending(&all, &[row(1, "edited")]),
            Err(MigrateError::Edited { version: 1, .. })
        ));
        assert!(matches!(
            pending(&all, &[row(3, "c")]),
            Err(MigrateError::Unknown { version: 3, .. })
        ));
    }

    #[test]
    fn no_transaction_marker_is_the_first_line_only() {
        let all = migrations(
            "d",
            &[
                ("0001_a.sql", "-- events-etl: no-transaction\nALTER TABLE x;"),
                ("0002_b.sql", "-- other\n-- events-etl: no-transaction\n"),
                ("0003_c.sql", "CREATE TABLE x (a int);"),
            ],
        )
        .unwrap();
        assert_eq!(
            all.iter().map(|m| m.transaction).collect::<Vec<_>>(),
            [false, true, true]
        );
    }

    #[test]
    fn shipped_migrations_are_well_formed() {
        for d in [Dialect::Postgres, Dialect::Redshift] {
            let all = migrations(d.dir(), d.files()).unwrap();
            assert!(!all.is_empty(), "{d:?} has no migrations");
        }
    }
}

//! `events-etl quarantine list|resolve`: the file versions set aside or lost, and an
//! operator clearing an alarm that will not clear by itself.

use events_etl::app::App;

use super::{print_quarantined, Failure, Outcome};

/// `quarantine list [--all] [--limit N]`.
pub async fn list(app: &App, all: bool, limit: i64) -> Result<Outcome, Failure> {
    let rows = app.warehouse.quarantined(limit, all).await?;
    if rows.is_empty() {
        println!(
            "no {}quarantined or lost files",
            if all { "" } else { "unresolved " }
        );
    }
    print_quarantined(&rows, None, app.config.retention_days);
    Ok(Outcome::Done)
}

/// `quarantine resolve KEY... --note TEXT [--by NAME]`.
pub async fn resolve(app: &App, keys: &[String], note: &str, by: &str) -> Result<Outcome, Failure> {
    if note.trim().is_empty() {
        return Err(Failure::usage("--note must say why the alarm may clear"));
    }
    let now = chrono::Utc::now().naive_utc();
    let mut resolved = 0;
    for key in keys {
        let n = app.warehouse.resolve_quarantine(key, by, note, now).await?;
        if n == 0 {
            println!("{key}: nothing to resolve (no unresolved quarantined or lost version)");
        } else {
            println!("{key}: resolved {n} version(s)");
        }
        resolved += n;
    }
    println!("resolved {resolved} version(s)");
    Ok(Outcome::Done)
}

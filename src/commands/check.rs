//! `events-etl check`: can this configuration work here? One line per check, with what
//! to fix; exit 6 when any fails.

use std::path::Path;

use super::{Failure, Outcome};

pub async fn run(config_path: &Path) -> Result<Outcome, Failure> {
    let lines = events_etl::check::run(config_path, |l| println!("{l}")).await;
    let failed = lines.iter().filter(|l| l.failure.is_some()).count();
    if failed > 0 {
        println!("check: {failed} of {} failed", lines.len());
        return Ok(Outcome::CheckFailed);
    }
    let warnings = lines.iter().filter(|l| l.warning.is_some()).count();
    match warnings {
        0 => println!("check: all {} passed", lines.len()),
        n => println!("check: all {} passed, {n} with a warning", lines.len()),
    }
    Ok(Outcome::Done)
}

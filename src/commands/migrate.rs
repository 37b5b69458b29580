//! `events-etl migrate`: create or upgrade the warehouse tables, then bring the typed
//! views in line with `[event_types]`.

use events_etl::app::App;
use events_etl::warehouse::views::ViewAction;

use super::{Failure, Outcome};

pub async fn run(app: &App) -> Result<Outcome, Failure> {
    let (config, warehouse) = (&app.config, &app.warehouse);
    let applied = warehouse.migrate().await?;
    if applied.is_empty() {
        println!("schema {} is up to date", config.schema);
    }
    for m in applied {
        println!("applied migration {:04}_{}", m.version, m.name);
    }
    // The typed views follow the configuration, not the migrations.
    for v in warehouse.sync_views(&config.event_types).await? {
        let what = match v.action {
            ViewAction::Create => "created",
            ViewAction::Replace => "replaced",
            ViewAction::Drop => "dropped",
        };
        println!("{what} view {}.{} ({})", config.schema, v.view_name, v.event_name);
    }
    Ok(Outcome::Done)
}

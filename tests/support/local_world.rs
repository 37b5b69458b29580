//! One test's world for runs of the real binary on local files: a source directory, a
//! staging directory, a config file and a schema of its own on the test PostgreSQL,
//! migrated.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{run_bin, CmdOutput, PgServer};

pub struct LocalWorld {
    pub pg: &'static PgServer,
    pub dir: tempfile::TempDir,
    pub schema: String,
    pub config: String,
}

impl LocalWorld {
    /// A migrated schema `label_*`; `extra` is appended to the config file.
    pub async fn new(label: &str, extra: &str) -> LocalWorld {
        let pg = super::postgres().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/events")).unwrap();
        let schema = pg.fresh_schema(label).await;
        let config = dir.path().join("etl.toml");
        std::fs::write(
            &config,
            format!(
                "[source]\nurl = \"src/events/\"\n[staging]\nurl = \"staging/\"\n[warehouse]\nschema = \"{schema}\"\n\
                 [warehouse.postgres]\nurl = \"{}\"\n{extra}",
                pg.url()
            ),
        )
        .unwrap();
        let w = LocalWorld {
            pg,
            dir,
            schema,
            config: config.display().to_string(),
        };
        let out = w.cli(&["migrate"], &[]);
        assert_eq!(out.code(), Some(0), "{out}");
        w
    }

    /// Writes the source file `events/<key>`, last modified `age` ago.
    pub fn file(&self, key: &str, lines: &[String], age: Duration) {
        let p = self.dir.path().join("src/events").join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    /// Runs the binary with this world's config, in its directory.
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
        let mut full = vec!["--config", self.config.as_str()];
        full.extend_from_slice(args);
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        run_bin(&full, &env, self.dir.path())
    }

    /// The first column of each row of `sql` (`{s}` is the schema), as text.
    pub async fn rows(&self, sql: &str) -> Vec<String> {
        self.pg
            .client()
            .await
            .query(&sql.replace("{s}", &self.schema), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }

    /// `SELECT count(*)` of `sql`'s rows (`{s}` is the schema).
    pub async fn count(&self, table: &str) -> i64 {
        self.pg
            .client()
            .await
            .query_one(&format!("SELECT count(*) FROM {}.{table}", self.schema), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Makes every INSERT into `etl_loads` fail, as a load failing at its last statement.
    pub async fn break_loads(&self) {
        self.pg
            .break_load_recording(&self.schema, "simulated failure")
            .await;
    }

    pub async fn repair_loads(&self) {
        self.pg.repair_load_recording(&self.schema).await;
    }

    pub fn staging(&self) -> PathBuf {
        self.dir.path().join("staging")
    }
}

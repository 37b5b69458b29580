//! Shared integration-test harness for `events-etl`.
//!
//! Use it from an integration test with `mod support;`. It provides:
//!
//! * a throwaway PostgreSQL server, started once per test binary ([`postgres`]), with
//!   per-test schema names ([`PgServer::fresh_schema`]) and a table dump for failure
//!   messages ([`PgServer::dump`]);
//! * an in-process S3 endpoint over real TCP ([`s3`]), backed by `s3s-fs` in a temporary
//!   directory, with signature checking against fixed test credentials;
//! * helpers to run the real `events-etl` binary ([`bin`], [`run_bin`], [`CmdOutput`]);
//! * a TCP proxy adding latency to every HTTP request ([`latency_proxy::LatencyProxy`]),
//!   for the benchmark of S3 latency.
//!
//! Each test binary compiles this module separately, so not every helper is used in each.
#![allow(dead_code)]

pub mod latency_proxy;
pub mod local_world;
pub mod redshift_data;
pub mod redshift_rules;

use std::fmt;
use std::fmt::Write as _;
use std::net::TcpListener as StdTcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// How long to wait for a freshly started server to accept connections.
const PG_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports to try when binding races with another process.
const PG_START_ATTEMPTS: u32 = 5;

static PG: OnceCell<PgServer> = OnceCell::const_new();

/// The PostgreSQL server shared by every test of one test binary.
///
/// Started on first use. If `DATABASE_URL` is set (and not empty), that server is used
/// instead and nothing is started. A started server is shut down (SIGQUIT) and its
/// directory removed by a small reaper process as soon as the test process exits, however
/// it exits (see [`cleanup_at_exit`]).
pub async fn postgres() -> &'static PgServer {
    PG.get_or_init(PgServer::start).await
}

/// A PostgreSQL server for tests. See [`postgres`].
pub struct PgServer {
    url: String,
    /// `None` when `DATABASE_URL` was used.
    process: Option<PgProcess>,
}

struct PgProcess {
    dir: PathBuf,
    log: PathBuf,
    port: u16,
    /// The postmaster. Never waited for: the reaper stops it when the test process exits.
    _postgres: Child,
}

impl PgServer {
    /// libpq-style URL, e.g. `postgresql://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// TCP port of a server started by the harness (`None` with `DATABASE_URL`).
    pub fn port(&self) -> Option<u16> {
        self.process.as_ref().map(|p| p.port)
    }

    /// Directory holding the data dir, socket and log of a server started by the harness.
    pub fn dir(&self) -> Option<&Path> {
        self.process.as_ref().map(|p| p.dir.as_path())
    }

    /// The server log (empty with `DATABASE_URL`).
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// A new connection; its connection task is spawned on the current tokio runtime.
    pub async fn client(&self) -> tokio_postgres::Client {
        match try_connect(&self.url).await {
            Ok(client) => client,
            Err(e) => panic!(
                "cannot connect to test PostgreSQL at {}: {e}\n{}",
                self.url,
                self.log()
            ),
        }
    }

    /// Makes every INSERT into `<schema>.etl_loads` fail with `message` (a trigger): a
    /// load failing at its last statement, before its commit. Undone by
    /// [`PgServer::repair_load_recording`].
    pub async fn break_load_recording(&self, schema: &str, message: &str) {
        assert!(
            !message.contains('$'),
            "the message is put in a $$ literal: {message}"
        );
        self.client()
            .await
            .batch_execute(&format!(
                "CREATE FUNCTION {schema}.refuse_load() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION $m${message}$m$; END $$; \
                 CREATE TRIGGER refuse_load BEFORE INSERT ON {schema}.etl_loads \
                 FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_load();"
            ))
            .await
            .expect("install the trigger refusing etl_loads rows");
    }

    /// Undoes [`PgServer::break_load_recording`].
    pub async fn repair_load_recording(&self, schema: &str) {
        self.client()
            .await
            .batch_execute(&format!(
                "DROP TRIGGER refuse_load ON {schema}.etl_loads; DROP FUNCTION {schema}.refuse_load();"
            ))
            .await
            .expect("drop the trigger refusing etl_loads rows");
    }

    /// A unique schema name `t_<prefix>_<8 hex>` (lowercase, `[a-z0-9_]`, at most 63
    /// bytes) that does not exist yet. The schema is not created.
    pub async fn fresh_schema(&self, prefix: &str) -> String {
        let mut clean: String = prefix
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // "t_" + prefix + "_" + 8 hex <= 63
        clean.truncate(63 - 2 - 1 - 8);
        let client = self.client().await;
        loop {
            let hex = uuid::Uuid::new_v4().simple().to_string();
            let name = format!("t_{clean}_{}", &hex[..8]);
            let exists = client
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&name])
                .await
                .expect("query pg_namespace")
                .is_some();
            if !exists {
                return name;
            }
        }
    }

    /// Drops a schema and everything in it, if it exists.
    pub async fn drop_schema(&self, schema: &str) {
        let client = self.client().await;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(schema)))
            .await
            .expect("drop schema");
    }

    /// Human-readable dump of every table in `schema`: name, row count and the first 20
    /// rows as text. Meant for failure messages, so errors are reported in the text.
    pub async fn dump(&self, schema: &str) -> String {
        let client = match try_connect(&self.url).await {
            Ok(c) => c,
            Err(e) => return format!("(cannot dump schema {schema}: connect failed: {e})\n"),
        };
        let mut out = String::new();
        let tables = match client
            .query(
                "SELECT c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
                 ORDER BY c.relname",
                &[&schema],
            )
            .await
        {
            Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(),
            Err(e) => return format!("(cannot dump schema {schema}: {e})\n"),
        };
        let exists = client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map(|r| r.is_some())
            .unwrap_or(false);
        if !exists {
            return format!("=== schema {schema}: does not exist\n");
        }
        let _ = writeln!(out, "=== schema {schema}: {} table(s)", tables.len());
        for table in tables {
            let qualified = format!("{}.{}", quote_ident(schema), quote_ident(&table));
            let count = match client
                .query_one(&format!("SELECT count(*) FROM {qualified}"), &[])
                .await
            {
                Ok(row) => row.get::<_, i64>(0),
                Err(e) => {
                    let _ = writeln!(out, "--- {table}: error: {e}");
                    continue;
                }
            };
            let _ = writeln!(out, "--- {table}: {count} row(s)");
            match client
                .query(&format!("SELECT t::text FROM {qualified} t LIMIT 20"), &[])
                .await
            {
                Ok(rows) => {
                    for row in &rows {
                        let _ = writeln!(out, "  {}", row.get::<_, String>(0));
                    }
                    if count > 20 {
                        let _ = writeln!(out, "  ... {} more row(s)", count - 20);
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  error: {e}");
                }
            }
        }
        out
    }

    async fn start() -> PgServer {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                if let Err(e) = try_connect(&url).await {
                    panic!("DATABASE_URL is set but connecting to it failed: {e}");
                }
                return PgServer { url, process: None };
            }
        }
        Self::start_with(|_, _| Vec::new()).await
    }

    /// A throwaway server of its own with TLS on (`ssl = on`): a CA and a server
    /// certificate for `localhost`, made with openssl, signed by it. Returns the server
    /// and the CA certificate's path (for `sslrootcert`).
    pub async fn start_tls() -> (PgServer, PathBuf) {
        let ca = std::sync::Arc::new(std::sync::Mutex::new(PathBuf::new()));
        let ca_out = ca.clone();
        let server = Self::start_with(move |dir, owner| {
            let run = |args: &[&str]| {
                let out = Command::new("openssl")
                    .args(args)
                    .current_dir(dir)
                    .output()
                    .expect("run openssl (the TLS test makes its certificates with it)");
                assert!(
                    out.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=events-etl test CA",
            ]);
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ]);
            std::fs::write(
                dir.join("san.ext"),
                "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
            )
            .expect("write san.ext");
            run(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ]);
            for f in ["server.key", "server.crt", "ca.crt"] {
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid)).expect("chown certificate");
                }
            }
            std::fs::set_permissions(
                dir.join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("chmod server.key");
            *ca_out.lock().unwrap_or_else(|e| e.into_inner()) = dir.join("ca.crt");
            // Role `etl` may connect over TCP only with TLS; the harness's own
            // connections (role postgres) stay plain.
            std::fs::write(
                dir.join("data/pg_hba.conf"),
                "local all all trust\n\
                 hostnossl all etl 127.0.0.1/32 reject\n\
                 hostnossl all etl ::1/128 reject\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostssl all all ::1/128 trust\n\
                 host all all 127.0.0.1/32 trust\n\
                 host all all ::1/128 trust\n",
            )
            .expect("write pg_hba.conf");
            vec![
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", dir.join("server.crt").display()),
                format!("ssl_key_file={}", dir.join("server.key").display()),
            ]
        })
        .await;
        let ca = ca.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (server, ca)
    }

    /// Starts a throwaway server; `settings` runs once its directory exists (with the
    /// server's owner, when the tests run as root) and returns extra `-c` settings.
    async fn start_with(settings: impl FnOnce(&Path, Option<(u32, u32)>) -> Vec<String>) -> PgServer {
        let bindir = pg_bindir();
        let owner = if effective_uid() == Some(0) {
            Some(postgres_user_ids())
        } else {
            None
        };

        let dir = tempfile::Builder::new()
            .prefix("etl-pg-")
            .tempdir_in(scratch_base())
            .expect("create PostgreSQL temp dir")
            .keep();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("chown PostgreSQL temp dir to postgres");
        }
        // Spawned before anything else so the directory goes away whatever happens next.
        reaper_register("pg", &dir);

        let data = dir.join("data");
        init_data_dir(&bindir, &data, &dir, owner);
        let extra = settings(&dir, owner);

        let log = dir.join("postgres.log");
        for attempt in 1..=PG_START_ATTEMPTS {
            let port = free_port();
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("open PostgreSQL log");
            let log_err = log_file.try_clone().expect("clone log file handle");
            let mut cmd = pg_command(&bindir.join("postgres"), &dir, owner);
            cmd.arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-c")
                .arg("listen_addresses=127.0.0.1")
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.display()))
                .args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                .args(["-c", "max_connections=200"])
                .args(extra.iter().flat_map(|e| ["-c", e.as_str()]))
                .stdout(log_file)
                .stderr(log_err);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bindir.join("postgres").display()));
            let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
            match wait_ready(&mut child, &url, &data).await {
                Ready::Yes => {
                    return PgServer {
                        url,
                        process: Some(PgProcess {
                            dir,
                            log,
                            port,
                            _postgres: child,
                        }),
                    };
                }
                Ready::PortTaken if attempt < PG_START_ATTEMPTS => {
                    eprintln!("test PostgreSQL: port {port} was taken, retrying");
                }
                Ready::PortTaken => {
                    panic!(
                        "test PostgreSQL: no free port after {PG_START_ATTEMPTS} attempts\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                Ready::Failed(why) => {
                    panic!(
                        "test PostgreSQL failed to start: {why}\n--- server log ({}) ---\n{}",
                        log.display(),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        unreachable!("loop always returns or panics")
    }
}

/// Creates the cluster in `data` with `initdb`.
fn init_data_dir(bindir: &Path, data: &Path, dir: &Path, owner: Option<(u32, u32)>) {
    let mut initdb = pg_command(&bindir.join("initdb"), dir, owner);
    initdb
        .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
        .arg("--no-sync")
        .arg("-D")
        .arg(data);
    let out = initdb
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bindir.join("initdb").display()));
    if !out.status.success() {
        panic!(
            "initdb failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Where scratch directories go: `$EVENTS_ETL_TEST_TMPDIR`, else `/dev/shm` when it is a
/// writable directory (tmpfs: `initdb` takes 0.6 s there against 2.2 s on this machine's
/// disk-backed /tmp), else `/tmp`. Kept short for PostgreSQL's 107-byte socket path limit.
pub fn scratch_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("EVENTS_ETL_TEST_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let writable = shm.is_dir()
        && tempfile::Builder::new()
            .prefix("etl-probe-")
            .tempdir_in(shm)
            .is_ok();
    if writable {
        shm.to_path_buf()
    } else {
        PathBuf::from("/tmp")
    }
}

enum Ready {
    Yes,
    PortTaken,
    Failed(String),
}

async fn wait_ready(child: &mut Child, url: &str, data: &Path) -> Ready {
    let deadline = Instant::now() + PG_READY_TIMEOUT;
    let log = data.parent().map(|d| d.join("postgres.log"));
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let text = log
                    .as_ref()
                    .and_then(|l| std::fs::read_to_string(l).ok())
                    .unwrap_or_default();
                let last = text.lines().rev().take(10).collect::<Vec<_>>().join("\n");
                if last.contains("could not bind")
                    || last.contains("Address already in use")
                    || last.contains("could not create any TCP/IP sockets")
                {
                    return Ready::PortTaken;
                }
                return Ready::Failed(format!("postgres exited early with {status}"));
            }
            Ok(None) => {}
            Err(e) => return Ready::Failed(format!("cannot poll postgres process: {e}")),
        }
        let attempt = tokio::time::timeout(Duration::from_secs(2), try_connect(url)).await;
        if let Ok(Ok(client)) = attempt {
            // Make sure we reached our server, not one that grabbed the port first.
            let theirs = tokio::time::timeout(
                Duration::from_secs(2),
                client.query_one("SHOW data_directory", &[]),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default();
            let same = match (Path::new(&theirs).canonicalize(), data.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if same {
                return Ready::Yes;
            }
            let _ = child.kill();
            let _ = child.wait();
            return Ready::PortTaken;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ready::Failed(format!(
                "not accepting connections at {url} after {PG_READY_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // Errors here surface on the client side as well; closing is normal.
        let _ = connection.await;
    });
    Ok(client)
}

/// `"ident"` with embedded quotes doubled.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A command for a PostgreSQL server binary, run as `postgres` when we are root.
fn pg_command(program: &Path, dir: &Path, owner: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST");
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid).env("HOME", dir).env("USER", "postgres");
    }
    cmd
}

/// Removes `dir` once the test process has exited, however it exits (panic, Ctrl-C,
/// SIGKILL). See [`reaper_register`].
pub fn cleanup_at_exit(dir: &Path) {
    reaper_register("dir", dir);
}

/// Registers `dir` with the reaper: at exit, for kind `pg`, the postmaster named in
/// `dir/data/postmaster.pid` is stopped first; then `dir` is removed.
///
/// One reaper process per test process: it reads `kind:path` lines from a pipe whose write
/// end only this process holds (std opens pipes close-on-exec, so no other child inherits
/// it). At exit the kernel closes it, the reaper sees EOF, sends SIGQUIT to each registered
/// postmaster (immediate shutdown: the data is thrown away anyway), waits for it, and
/// removes the directories. It ignores terminal signals and has its own process group, so a
/// Ctrl-C still gets the cleanup done.
fn reaper_register(kind: &str, dir: &Path) {
    use std::io::Write as _;
    use std::sync::{Mutex, OnceLock};

    const SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT PIPE
set -f
nl='
'
list=''
while IFS= read -r d; do list="$list$d$nl"; done
IFS=$nl
for line in $list; do
  kind=${line%%:*}
  d=${line#*:}
  [ -n "$d" ] || continue
  pid=''
  if [ "$kind" = pg ] && [ -f "$d/data/postmaster.pid" ]; then
    pid=$(head -n 1 "$d/data/postmaster.pid" 2>/dev/null)
  fi
  case "$pid" in
    ''|*[!0-9]*) ;;
    *)
      kill -QUIT "$pid" 2>/dev/null
      i=0
      while [ "$i" -lt 100 ] && kill -0 "$pid" 2>/dev/null \
          && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
      done
      kill -KILL "$pid" 2>/dev/null
      ;;
  esac
  rm -rf "$d"
done
"#;
    static REAPER: OnceLock<Mutex<Option<std::process::ChildStdin>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("events-etl-test-reaper")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        // The Child is dropped (never waited for); its stdin lives in the static.
        Mutex::new(child.ok().and_then(|mut c| c.stdin.take()))
    });
    let path = dir.to_string_lossy();
    if path.contains('\n') {
        return;
    }
    let mut guard = reaper.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stdin) = guard.as_mut() {
        if writeln!(stdin, "{kind}:{path}")
            .and_then(|()| stdin.flush())
            .is_err()
        {
            eprintln!("test harness: cannot register {path} for cleanup at exit");
        }
    } else {
        eprintln!("test harness: no reaper (/bin/sh); {path} will not be removed at exit");
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `$PG_BINDIR` if set.
pub fn pg_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let bin = entry.path().join("bin");
            if !bin.join("postgres").exists() || !bin.join("initdb").exists() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Vec<u64> = name.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            if best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    match best {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin; \
             install them, set PG_BINDIR, or set DATABASE_URL"
        ),
    }
}

/// Effective uid, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// (uid, gid) of the `postgres` user, from `/etc/passwd`.
fn postgres_user_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == "postgres" {
            if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                return (uid, gid);
            }
        }
    }
    panic!("running as root, but there is no `postgres` user to run initdb/postgres as");
}

/// A port that was free a moment ago (racy; callers retry).
fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// ---------------------------------------------------------------------------------------
// S3
// ---------------------------------------------------------------------------------------

/// Access key the in-process S3 server accepts.
pub const S3_ACCESS_KEY: &str = "AKIDEVENTSETL";
/// Secret key the in-process S3 server accepts.
pub const S3_SECRET_KEY: &str = "events-etl-test-secret";
/// Region used by the test clients.
pub const S3_REGION: &str = "us-east-1";

/// Starts a new in-process S3 server on `127.0.0.1:<free port>`, storing objects under a
/// fresh temporary directory (one subdirectory per bucket). Requests must be signed with
/// [`S3_ACCESS_KEY`] / [`S3_SECRET_KEY`]; path-style addressing.
///
/// The server runs on its own thread and tokio runtime, so it keeps serving while the test
/// blocks (e.g. in [`run_bin`]). It stops, and its directory is removed, when the returned
/// value is dropped.
pub async fn s3() -> S3Server {
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;

    let root = tempfile::Builder::new()
        .prefix("etl-s3-")
        .tempdir_in(scratch_base())
        .expect("create S3 temp dir");
    // Removed on drop; registered too so a killed test process does not leak it.
    cleanup_at_exit(root.path());
    let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
    let policies: Policies = Arc::default();
    let mut builder = S3ServiceBuilder::new(EtagFs {
        fs,
        policies: policies.clone(),
        lifecycles: Default::default(),
    });
    builder.set_auth(SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
    let service = builder.build();

    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind S3 listener");
    listener
        .set_nonblocking(true)
        .expect("set S3 listener non-blocking");
    let port = listener.local_addr().expect("S3 listener address").port();

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("s3-server-{port}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("s3-server")
                .enable_all()
                .build()
                .expect("S3 server runtime");
            rt.block_on(serve_s3(listener, service, stop_rx));
            // Dropping the runtime cancels the connection tasks.
        })
        .expect("spawn S3 server thread");

    S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        policies,
        port,
        client: OnceCell::new(),
        stop: Some(stop_tx),
        thread: Some(thread),
        root,
    }
}

async fn serve_s3(
    listener: StdTcpListener,
    service: s3s::service::S3Service,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;

    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio S3 listener");
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((socket, _)) => {
                    // As servers do: without it, a response written in two pieces waits
                    // for the client's delayed ACK (~40 ms), which made 400 small GETs take
                    // 17 s instead of 0.7 s.
                    let _ = socket.set_nodelay(true);
                    socket
                }
                Err(e) => {
                    eprintln!("test S3 server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// An in-process S3 server. See [`s3`].
pub struct S3Server {
    endpoint: String,
    policies: Policies,
    port: u16,
    client: OnceCell<aws_sdk_s3::Client>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    // Dropped after the server thread has stopped (fields drop after `Drop::drop`).
    root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl S3Server {
    /// From now on, `bucket/key` is served per `policy` (`None`: normally).
    pub fn set_policy(&self, bucket: &str, key: &str, policy: Option<ObjectPolicy>) {
        let mut p = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        let k = format!("{bucket}/{key}");
        match policy {
            Some(v) => p.insert(k, v),
            None => p.remove(&k),
        };
    }

    /// From now on, every object of `bucket` is served per `policy` (`None`: normally),
    /// unless a policy of its own says otherwise.
    pub fn set_bucket_policy(&self, bucket: &str, policy: Option<ObjectPolicy>) {
        self.set_policy(bucket, BUCKET_WIDE, policy);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Root directory of the store: one subdirectory per bucket, objects at their key
    /// path; s3s-fs keeps metadata in `.bucket-*` files directly under the root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Environment for running the real binary against this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("AWS_REGION", S3_REGION),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// An SDK client for this server, configured the way the product configures its own
    /// (aws-config defaults, explicit rustls/ring HTTP client) plus the test credentials,
    /// region, endpoint and path-style addressing. Cached; clones share one connection pool,
    /// bound to the tokio runtime of first use.
    pub async fn client(&self) -> aws_sdk_s3::Client {
        self.client
            .get_or_init(|| self.client_at(&self.endpoint))
            .await
            .clone()
    }

    /// A client of this server's credentials and region reaching it at `endpoint` (a
    /// proxy in front of it).
    pub async fn client_at(&self, endpoint: &str) -> aws_sdk_s3::Client {
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let credentials = aws_sdk_s3::config::Credentials::new(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
            None,
            None,
            "events-etl-tests",
        );
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_sdk_s3::config::Region::new(S3_REGION))
            .credentials_provider(credentials)
            .endpoint_url(endpoint)
            .load()
            .await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub async fn create_bucket(&self, name: &str) {
        self.client()
            .await
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {}", err_text(&e)));
    }

    pub async fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) {
        self.client()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes.into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {}", err_text(&e)));
    }

    /// Sets the bucket's lifecycle: objects under each `(prefix, days)` expire after
    /// that many days.
    pub async fn set_lifecycle(&self, bucket: &str, rules: &[(&str, i32)]) {
        use aws_sdk_s3::types::{
            BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
            LifecycleRuleFilter,
        };
        let rules = rules
            .iter()
            .map(|(prefix, days)| {
                LifecycleRule::builder()
                    .id(format!("expire-{prefix}"))
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().prefix(*prefix).build())
                    .expiration(LifecycleExpiration::builder().days(*days).build())
                    .build()
                    .expect("lifecycle rule")
            })
            .collect::<Vec<_>>();
        self.client()
            .await
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .set_rules(Some(rules))
                    .build()
                    .expect("lifecycle"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("put lifecycle of {bucket}: {}", err_text(&e)));
    }

    /// Deletes one object (as the source's expiry does).
    pub async fn delete(&self, bucket: &str, key: &str) {
        self.client()
            .await
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete s3://{bucket}/{key}: {}", err_text(&e)));
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self
            .client()
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get s3://{bucket}/{key}: {}", err_text(&e)));
        out.body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("read s3://{bucket}/{key}: {e}"))
            .into_bytes()
            .to_vec()
    }

    /// All keys under `prefix`, in S3 order (all pages).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let client = self.client().await;
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("list s3://{bucket}/{prefix}: {}", err_text(&e)));
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        keys
    }
}

/// Debug text of an SDK error, which includes the service's error code and message
/// (Display alone often says just "service error").
pub fn err_text<E: fmt::Debug>(e: &E) -> String {
    format!("{e:?}")
}

/// `s3s_fs::FileSystem` with ETags filled in on listings.
///
/// s3s-fs 0.14 leaves `ETag` out of ListObjects/ListObjectsV2 entries (real S3 always
/// sends it); this wrapper delegates everything s3s-fs implements and adds the ETag from
/// HeadObject to each listed object.
struct EtagFs {
    fs: s3s_fs::FileSystem,
    policies: Policies,
    /// Bucket lifecycle configurations (s3s-fs keeps none), by bucket.
    lifecycles: std::sync::Mutex<std::collections::HashMap<String, s3s::dto::BucketLifecycleConfiguration>>,
}

/// How the test S3 server treats particular objects, by `bucket/key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectPolicy {
    /// Listed with storage class DEEP_ARCHIVE; GetObject answers `InvalidObjectState`,
    /// as S3 does for an archived object that was not restored.
    Archived,
    /// GetObject answers `AccessDenied` (403), as for an object whose KMS key or
    /// ownership the reader lacks; listing still shows it.
    Denied,
    /// Listed with storage class DEEP_ARCHIVE but readable: an archived object that was
    /// restored (S3 keeps listing the archive class while a restored copy is readable).
    Restored,
    /// Listed, but GetObject answers `NoSuchKey` (404): an object deleted (expired)
    /// between the listing and the read.
    Gone,
}

type Policies = Arc<std::sync::Mutex<std::collections::HashMap<String, ObjectPolicy>>>;

fn policy(policies: &Policies, bucket: &str, key: &str) -> Option<ObjectPolicy> {
    let policies = policies.lock().unwrap_or_else(|e| e.into_inner());
    policies
        .get(&format!("{bucket}/{key}"))
        .or_else(|| policies.get(&format!("{bucket}/{BUCKET_WIDE}")))
        .copied()
}

/// The key under which a policy for every object of a bucket is kept.
const BUCKET_WIDE: &str = "\u{0}*";

impl EtagFs {
    async fn fill_etags<T>(&self, req: &s3s::S3Request<T>, bucket: &str, objects: &mut [s3s::dto::Object])
    where
        T: Clone,
    {
        use s3s::S3 as _;
        for object in objects.iter_mut().filter(|o| o.e_tag.is_none()) {
            let Some(key) = object.key.clone() else {
                continue;
            };
            let head = req.clone().map_input(|_| s3s::dto::HeadObjectInput {
                bucket: bucket.to_owned(),
                key,
                ..Default::default()
            });
            if let Ok(resp) = self.fs.head_object(head).await {
                object.e_tag = resp.output.e_tag;
            }
        }
    }
}

macro_rules! delegate_s3 {
    ( { $($method:ident($input:ident) -> $output:ident;)* } $($custom:tt)* ) => {
        #[async_trait::async_trait]
        impl s3s::S3 for EtagFs {
            $(
                async fn $method(
                    &self,
                    req: s3s::S3Request<s3s::dto::$input>,
                ) -> s3s::S3Result<s3s::S3Response<s3s::dto::$output>> {
                    self.fs.$method(req).await
                }
            )*
            $($custom)*
        }
    };
}

delegate_s3! {
    {
        abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
        complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
        copy_object(CopyObjectInput) -> CopyObjectOutput;
        create_bucket(CreateBucketInput) -> CreateBucketOutput;
        create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
        delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
        delete_object(DeleteObjectInput) -> DeleteObjectOutput;
        delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
        get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
        head_bucket(HeadBucketInput) -> HeadBucketOutput;
        head_object(HeadObjectInput) -> HeadObjectOutput;
        list_buckets(ListBucketsInput) -> ListBucketsOutput;
        list_parts(ListPartsInput) -> ListPartsOutput;
        put_object(PutObjectInput) -> PutObjectOutput;
        upload_part(UploadPartInput) -> UploadPartOutput;
        upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
    }

    async fn list_objects(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsOutput>> {
        let meta = req.clone();
        let bucket = req.input.bucket.clone();
        let mut resp = self.fs.list_objects(req).await?;
        if let Some(objects) = resp.output.contents.as_mut() {
            self.fill_etags(&meta, &bucket, objects).await;
        }
        Ok(resp)
    }

    async fn list_objects_v2(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        let meta = req.clone();
        let bucket = req.input.bucket.clone();
        let mut resp = self.fs.list_objects_v2(req).await?;
        if let Some(objects) = resp.output.contents.as_mut() {
            self.fill_etags(&meta, &bucket, objects).await;
            for o in objects.iter_mut() {
                let key = o.key.clone().unwrap_or_default();
                if matches!(
                    policy(&self.policies, &bucket, &key),
                    Some(ObjectPolicy::Archived | ObjectPolicy::Restored)
                ) {
                    o.storage_class = Some(s3s::dto::ObjectStorageClass::from_static(
                        s3s::dto::ObjectStorageClass::DEEP_ARCHIVE,
                    ));
                }
            }
        }
        Ok(resp)
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: s3s::S3Request<s3s::dto::PutBucketLifecycleConfigurationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutBucketLifecycleConfigurationOutput>> {
        let mut all = self.lifecycles.lock().unwrap_or_else(|e| e.into_inner());
        match req.input.lifecycle_configuration {
            Some(c) => all.insert(req.input.bucket.clone(), c),
            None => all.remove(&req.input.bucket),
        };
        Ok(s3s::S3Response::new(Default::default()))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketLifecycleConfigurationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketLifecycleConfigurationOutput>> {
        let all = self.lifecycles.lock().unwrap_or_else(|e| e.into_inner());
        match all.get(&req.input.bucket) {
            Some(c) => Ok(s3s::S3Response::new(s3s::dto::GetBucketLifecycleConfigurationOutput {
                rules: Some(c.rules.clone()),
                ..Default::default()
            })),
            None => Err(s3s::s3_error!(
                NoSuchLifecycleConfiguration,
                "The lifecycle configuration does not exist"
            )),
        }
    }

    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        match policy(&self.policies, &req.input.bucket, &req.input.key) {
            Some(ObjectPolicy::Archived) => Err(s3s::s3_error!(
                InvalidObjectState,
                "The operation is not valid for the object's storage class"
            )),
            Some(ObjectPolicy::Denied) => Err(s3s::s3_error!(AccessDenied, "Access Denied")),
            Some(ObjectPolicy::Gone) => Err(s3s::s3_error!(NoSuchKey, "The specified key does not exist.")),
            Some(ObjectPolicy::Restored) | None => self.fs.get_object(req).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------

/// Default time limit for [`run_bin`]; override with `EVENTS_ETL_TEST_TIMEOUT_SECS`.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Path of the `events-etl` binary built by cargo for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_events-etl"))
}

/// The outcome of a finished command, formatted for failure reports.
#[derive(Debug)]
pub struct CmdOutput {
    /// Reproducible command line: `cd DIR && VAR=value ... program args...`.
    pub command: String,
    /// `None` when the command was killed for exceeding the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Exit code (`None` when killed by a signal or the time limit).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panics, showing the command line, exit status, stdout and stderr, unless the
    /// command exited with status 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        if !self.success() {
            panic!("command failed\n{self}");
        }
        self
    }

    /// Panics with the full report unless the command exited with a non-zero status.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        if self.success() || self.status.is_none() {
            panic!("command was expected to fail\n{self}");
        }
        self
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        match self.status {
            Some(status) => writeln!(f, "exit: {status} (after {:.1?})", self.elapsed)?,
            None => writeln!(f, "exit: killed after time limit of {:.1?}", self.elapsed)?,
        }
        writeln!(f, "--- stdout ---")?;
        writeln!(f, "{}", self.stdout.trim_end())?;
        writeln!(f, "--- stderr ---")?;
        writeln!(f, "{}", self.stderr.trim_end())?;
        write!(f, "--- end ---")
    }
}

/// Runs the `events-etl` binary with `args`, extra `envs`, in `cwd`, and waits for it.
///
/// Inherited `AWS_*` variables not given in `envs` are removed, so a developer's AWS
/// profile cannot leak in. Blocking; fine with the in-process S3 server (own thread) and
/// PostgreSQL (own process).
pub fn run_bin(args: &[&str], envs: &[(String, String)], cwd: &Path) -> CmdOutput {
    run_cmd(&bin(), args, envs, cwd)
}

/// Like [`run_bin`] for any program.
pub fn run_cmd(program: &Path, args: &[&str], envs: &[(String, String)], cwd: &Path) -> CmdOutput {
    let mut command = format!("cd {} &&", shell_quote(&cwd.display().to_string()));
    for (k, v) in envs {
        let _ = write!(command, " {k}={}", shell_quote(v));
    }
    let _ = write!(command, " {}", shell_quote(&program.display().to_string()));
    for a in args {
        let _ = write!(command, " {}", shell_quote(a));
    }

    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("AWS_") && !envs.iter().any(|(e, _)| *e == *k) {
            cmd.env_remove(&*k);
        }
    }
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));

    let timeout = std::env::var("EVENTS_ETL_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(RUN_TIMEOUT);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let stdout = reader_thread(child.stdout.take());
    let stderr = reader_thread(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {command}: {e}"),
        }
    };
    let elapsed = start.elapsed();
    CmdOutput {
        command,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed,
    }
}

fn reader_thread<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Quotes `s` for a POSIX shell when needed.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `[event_types]` for tests: (type, [(column, type)]), no required keys, unknown types
/// loaded.
pub fn event_types(types: &[(&str, &[(&str, &str)])]) -> events_etl::event_types::EventTypes {
    use events_etl::event_types::{ColumnType, EventType, EventTypes};
    EventTypes {
        types: types
            .iter()
            .map(|(name, cols)| {
                let columns = cols
                    .iter()
                    .map(|(k, t)| {
                        let ty = ColumnType::parse(t).unwrap_or_else(|| panic!("column type {t}"));
                        ((*k).to_owned(), ty)
                    })
                    .collect();
                (
                    (*name).to_owned(),
                    EventType {
                        required_metadata: Vec::new(),
                        columns,
                    },
                )
            })
            .collect(),
        unknown: Default::default(),
    }
}

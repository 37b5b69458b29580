//! The PostgreSQL adapter refuses a server too old for its SQL (MERGE needs
//! PostgreSQL 15) when it connects, naming the version found and the one needed, with
//! the warehouse exit code; the real binary against a stand-in server that speaks just
//! enough of the wire protocol to say it is PostgreSQL 14.

use crate::support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// One backend message: type byte, length, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend(((body.len() + 4) as i32).to_be_bytes());
    m.extend(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Serves one client as a PostgreSQL server of the given version would: trust
/// authentication, then one row for every simple query (`server_version_num`,
/// `server_version`). Returns when the client goes away.
fn serve(mut s: TcpStream, num: &str, text: &str) -> std::io::Result<()> {
    // Startup (answering an SSL request with "no" first).
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize - 4];
        s.read_exact(&mut body)?;
        if body.starts_with(&80_877_103i32.to_be_bytes()) {
            s.write_all(b"N")?;
            continue;
        }
        break;
    }
    let mut hello = message(b'R', &0i32.to_be_bytes());
    hello.extend(message(b'S', &[cstr("server_version"), cstr(text)].concat()));
    hello.extend(message(b'S', &[cstr("client_encoding"), cstr("UTF8")].concat()));
    hello.extend(message(b'K', &[1i32.to_be_bytes(), 2i32.to_be_bytes()].concat()));
    hello.extend(message(b'Z', b"I"));
    s.write_all(&hello)?;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head)?;
        let mut body = vec![0u8; i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4];
        s.read_exact(&mut body)?;
        match head[0] {
            b'Q' => {
                let mut fields = 2i16.to_be_bytes().to_vec();
                for name in ["num", "text"] {
                    fields.extend(cstr(name));
                    fields.extend(0i32.to_be_bytes()); // table
                    fields.extend(0i16.to_be_bytes()); // column
                    fields.extend(25i32.to_be_bytes()); // text
                    fields.extend((-1i16).to_be_bytes());
                    fields.extend((-1i32).to_be_bytes());
                    fields.extend(0i16.to_be_bytes());
                }
                let mut row = 2i16.to_be_bytes().to_vec();
                for v in [num, text] {
                    row.extend((v.len() as i32).to_be_bytes());
                    row.extend(v.as_bytes());
                }
                let mut reply = message(b'T', &fields);
                reply.extend(message(b'D', &row));
                reply.extend(message(b'C', &cstr("SELECT 1")));
                reply.extend(message(b'Z', b"I"));
                s.write_all(&reply)?;
            }
            b'X' => return Ok(()),
            // Anything else (the extended protocol): hang up, as a broken server would.
            other => {
                return Err(std::io::Error::other(format!(
                    "the stand-in only answers simple queries, not {:?}",
                    other as char
                )))
            }
        }
    }
}

/// A server on 127.0.0.1 that claims to be `text`; its port.
fn old_server(num: &'static str, text: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || serve(s, num, text));
        }
    });
    port
}

#[test]
fn postgres_older_than_15_is_refused_on_connect_naming_both_versions() {
    let port = old_server("140011", "14.11 (Ubuntu 14.11-0ubuntu0.22.04.1)");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let cfg = dir.path().join("etl.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"in/\"\n[staging]\nurl = \"staging/\"\n\
             [warehouse.postgres]\nurl = \"postgresql://postgres@127.0.0.1:{port}/postgres\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    for cmd in ["migrate", "run", "status"] {
        let out = support::run_bin(&["--config", &cfg, cmd], &[], dir.path());
        assert_eq!(out.code(), Some(4), "{cmd}: {out}");
        assert!(
            out.stderr.contains(&format!(
                "the warehouse at 127.0.0.1:{port}/postgres runs PostgreSQL 14.11 (Ubuntu 14.11-0ubuntu0.22.04.1); \
                 events-etl needs PostgreSQL 15 or newer (its loads use MERGE)"
            )),
            "{cmd}: {out}"
        );
    }
    assert!(!dir.path().join("staging").exists());
}

/// The harness's server (15 or newer) passes the same check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_postgres_passes_the_check() {
    let pg = support::postgres().await;
    let staging = events_etl::store::Place {
        store: std::sync::Arc::new(events_etl::store::local::LocalStore::new("/nonexistent".into())),
        prefix: String::new(),
    };
    events_etl::warehouse::postgres::Postgres::connect(&pg.url(), "unused", staging)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

//! TLS to PostgreSQL, through the real binary against a throwaway server with
//! `ssl = on`, a CA and a server certificate for `localhost` the test makes, and a role
//! (`etl`) the server admits over TCP only with TLS: every `sslmode` does what libpq's
//! does, and `sslrootcert` is honoured.

use crate::support::{run_bin, PgServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_encrypt_and_verify_as_libpq_does() {
    let (pg, ca) = PgServer::start_tls().await;
    pg.client()
        .await
        .batch_execute("CREATE ROLE etl LOGIN SUPERUSER")
        .await
        .unwrap();
    let port = pg.port().expect("a server of the harness");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("staging")).unwrap();
    let ca = ca.display().to_string();
    let migrate = |host: &str, params: &str| {
        let url = format!("postgresql://etl@{host}:{port}/postgres?{params}");
        let path = dir.path().join("etl.toml");
        std::fs::write(
            &path,
            format!(
                "[source]\nurl = \"{}\"\n[staging]\nurl = \"{}\"\n[warehouse]\nkind = \"postgres\"\n\
                 schema = \"tls_check\"\n[warehouse.postgres]\nurl = \"{url}\"\n",
                dir.path().join("src").display(),
                dir.path().join("staging").display()
            ),
        )
        .unwrap();
        let config = path.display().to_string();
        run_bin(&["--config", &config, "migrate"], &[], dir.path())
    };
    // Plain text is refused for this role: disable cannot connect.
    let out = migrate("127.0.0.1", "sslmode=disable");
    assert_eq!(out.code(), Some(4), "{out}");
    assert!(
        out.stderr.contains("no encryption") || out.stderr.contains("pg_hba"),
        "{out}"
    );
    // Encrypted, not verified (libpq's prefer and require).
    for params in ["sslmode=prefer", "sslmode=require", "application_name=etl"] {
        let out = migrate("127.0.0.1", params);
        assert_eq!(out.code(), Some(0), "{params}: {out}");
    }
    // verify-ca: the chain must lead to sslrootcert; the host name is not checked.
    let out = migrate("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert_eq!(out.code(), Some(0), "{out}");
    // require with sslrootcert verifies the chain too.
    let out = migrate("localhost", &format!("sslmode=require&sslrootcert={ca}"));
    assert_eq!(out.code(), Some(0), "{out}");
    // verify-full: the certificate is for localhost, not 127.0.0.1.
    let out = migrate("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(out.code(), Some(4), "{out}");
    assert!(out.stderr.to_lowercase().contains("certificate"), "{out}");
    let out = migrate("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(out.code(), Some(0), "{out}");
    // The system's roots do not hold the test CA.
    let out = migrate("localhost", "sslmode=verify-full");
    assert_eq!(out.code(), Some(4), "{out}");
    // A bad sslmode is a configuration error, before any IO.
    let out = migrate("localhost", "sslmode=sometimes");
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("warehouse.postgres.url"), "{out}");
}

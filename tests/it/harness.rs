//! Self-test of the shared test harness in `tests/support`.

use crate::support;

use std::collections::BTreeSet;

use tokio::task::JoinSet;

#[tokio::test]
async fn s3_listing_paginates_with_etag_and_size() {
    let s3 = support::s3().await;
    assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
    s3.create_bucket("events").await;
    let client = s3.client().await;

    const N: usize = 1_100;
    let mut expected = BTreeSet::new();
    let mut puts = JoinSet::new();
    for i in 0..N {
        let key = format!("raw/2024/01/02/part-{i:05}.json");
        expected.insert(key.clone());
        let body = format!("{{\"n\":{i}}}\n");
        let client = client.clone();
        puts.spawn(async move {
            client
                .put_object()
                .bucket("events")
                .key(&key)
                .body(body.into_bytes().into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
        });
        if puts.len() >= 32 {
            puts.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = puts.join_next().await {
        r.unwrap();
    }
    // Outside the prefix: must not be listed.
    s3.put("events", "other/x.json", b"{}\n".to_vec()).await;

    let mut pages = client
        .list_objects_v2()
        .bucket("events")
        .prefix("raw/")
        .into_paginator()
        .send();
    let mut page_count = 0;
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("list page: {e:?}"));
        page_count += 1;
        for obj in page.contents() {
            let key = obj.key().expect("key").to_owned();
            let etag = obj.e_tag().unwrap_or_else(|| panic!("no ETag for {key}"));
            assert!(etag.len() > 2, "empty ETag for {key}: {etag:?}");
            let i: usize = key["raw/2024/01/02/part-".len()..][..5].parse().unwrap();
            let expected_size = format!("{{\"n\":{i}}}\n").len() as i64;
            assert_eq!(obj.size(), Some(expected_size), "size of {key}");
            keys.push(key);
        }
    }
    assert!(page_count > 1, "expected several pages, got {page_count}");
    assert_eq!(keys.len(), N, "keys listed");
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "S3 lists keys in lexicographic order");
    assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), expected);

    // The helper list() agrees, and objects read back.
    assert_eq!(s3.list("events", "raw/").await.len(), N);
    assert_eq!(
        s3.get("events", "raw/2024/01/02/part-00007.json").await,
        b"{\"n\":7}\n"
    );
    // s3s-fs layout: bucket = subdirectory of the root, key = path below it.
    assert!(s3.root().join("events/raw/2024/01/02/part-00007.json").is_file());
    // ETag from the listing matches the one from HeadObject / PutObject (MD5 hex).
    let head = client
        .head_object()
        .bucket("events")
        .key("other/x.json")
        .send()
        .await
        .unwrap();
    let listed = client
        .list_objects_v2()
        .bucket("events")
        .prefix("other/")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents()[0].e_tag(), head.e_tag());
    assert_eq!(head.e_tag(), Some("\"8a80554c91d9fca8acb82f023de02f11\""));
}

#[tokio::test]
async fn s3_rejects_bad_signatures() {
    let s3 = support::s3().await;
    s3.create_bucket("bucket-b").await;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(s3.endpoint())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            support::S3_ACCESS_KEY,
            "wrong-secret",
            None,
            None,
            "test",
        ))
        .build();
    let bad = aws_sdk_s3::Client::from_conf(conf);
    let err = bad
        .list_objects_v2()
        .bucket("bucket-b")
        .send()
        .await
        .expect_err("a wrong secret must be rejected");
    let text = support::err_text(&err);
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
}

#[tokio::test]
async fn s3_env_names_the_endpoint() {
    let s3 = support::s3().await;
    let env = s3.env();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("AWS_ENDPOINT_URL"), Some(s3.endpoint()));
    assert_eq!(get("AWS_ACCESS_KEY_ID").as_deref(), Some("AKIDEVENTSETL"));
    assert_eq!(get("AWS_REGION").as_deref(), Some("us-east-1"));
    assert_eq!(get("AWS_EC2_METADATA_DISABLED").as_deref(), Some("true"));
}

#[tokio::test]
async fn postgres_starts_and_gives_fresh_schemas() {
    let pg = support::postgres().await;
    assert!(pg.url().starts_with("postgresql://postgres@"), "{}", pg.url());
    let client = pg.client().await;
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);

    let a = pg.fresh_schema("Load Test!").await;
    let b = pg.fresh_schema("Load Test!").await;
    assert_ne!(a, b);
    for s in [&a, &b] {
        assert!(s.starts_with("t_load_test__"), "{s}");
        assert!(s.len() <= 63);
        assert!(s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        let exists = client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[s])
            .await
            .unwrap();
        assert!(exists.is_none(), "{s} must not be created");
    }
    let long = pg.fresh_schema(&"x".repeat(200)).await;
    assert_eq!(long.len(), 63, "{long}");
}

#[tokio::test]
async fn postgres_dump_shows_rows() {
    let pg = support::postgres().await;
    let schema = pg.fresh_schema("dump").await;
    let client = pg.client().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.events (id int, name text);
             INSERT INTO {schema}.events SELECT g, 'event ' || g FROM generate_series(1, 25) g;
             CREATE TABLE {schema}.empty (x int);"
        ))
        .await
        .unwrap();
    let dump = pg.dump(&schema).await;
    assert!(dump.contains("2 table(s)"), "{dump}");
    assert!(dump.contains("--- events: 25 row(s)"), "{dump}");
    assert!(dump.contains("(1,\"event 1\")"), "{dump}");
    assert!(dump.contains("(20,\"event 20\")"), "{dump}");
    assert!(!dump.contains("(21,\"event 21\")"), "{dump}");
    assert!(dump.contains("... 5 more row(s)"), "{dump}");
    assert!(dump.contains("--- empty: 0 row(s)"), "{dump}");

    let missing = pg.dump("t_does_not_exist").await;
    assert!(missing.contains("does not exist"), "{missing}");
    pg.drop_schema(&schema).await;
}

#[tokio::test]
async fn postgres_is_shared_within_the_binary() {
    let a = support::postgres().await;
    let b = support::postgres().await;
    assert!(std::ptr::eq(a, b));
    assert_eq!(a.url(), b.url());
}

#[test]
fn cmd_output_reports_everything_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_cmd(
        std::path::Path::new("/bin/sh"),
        &["-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
        &[("SOME_VAR".to_owned(), "a b".to_owned())],
        dir.path(),
    );
    assert_eq!(out.code(), Some(3));
    out.assert_failure();
    let msg = std::panic::catch_unwind(|| {
        out.assert_success();
    })
    .expect_err("assert_success must panic");
    let msg = msg
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "(non-string panic)".to_owned());
    for needle in [
        "SOME_VAR='a b'",
        "/bin/sh -c 'echo to-stdout; echo to-stderr >&2; exit 3'",
        "exit status: 3",
        "to-stdout",
        "to-stderr",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }

    let ok = support::run_cmd(std::path::Path::new("/bin/sh"), &["-c", "pwd"], &[], dir.path());
    ok.assert_success();
    assert_eq!(
        std::path::Path::new(ok.stdout.trim()).canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );
}

#[test]
fn bin_is_built() {
    let bin = support::bin();
    assert!(bin.is_file(), "{}", bin.display());
    assert!(bin.ends_with("events-etl"));
}

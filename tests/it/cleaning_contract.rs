//! The cleaning contract's edges through the real binary into PostgreSQL: what the
//! cleaner accepts, the warehouse stores (numbers at the edge of the accepted range, glued
//! records, Unicode emails, long fractions); what it rejects never reaches COPY (the
//! issue-7 poison numbers, repeated keys); and the books balance.

use crate::support;

use std::path::Path;

use support::{run_bin, CmdOutput, PgServer};

const ID_A: &str = "0a000000-0000-4000-8000-00000000000a";
const ID_B: &str = "0b000000-0000-4000-8000-00000000000b";

fn record(id: &str, extra: &str) -> String {
    format!(
        r#"{{"id": "{id}", "created_at": "2020-01-13 05:10:12", "user_email": "a@b.com", "event_name": "x"{extra}}}"#
    )
}

fn meta(id: &str, metadata: &str) -> String {
    record(id, &format!(r#", "metadata": {metadata}"#))
}

fn check(out: CmdOutput) -> CmdOutput {
    out.assert_success();
    out
}

async fn scalar(pg: &PgServer, sql: &str) -> i64 {
    pg.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn text(pg: &PgServer, sql: &str) -> String {
    pg.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

fn write_config(dir: &Path, pg: &PgServer, schema: &str) -> String {
    let path = dir.join("events-etl.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"src/\"\n[staging]\nurl = \"staging/\"\npart_size_mb = 1\n\
             [warehouse]\nkind = \"postgres\"\nschema = \"{schema}\"\n\
             [warehouse.postgres]\nurl = \"{}\"\n",
            pg.url()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_lines_load_or_reject_and_never_block_the_load() {
    let pg = support::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/events/2020/01/13");
    std::fs::create_dir_all(&src).unwrap();

    let edge_numbers = format!(
        r#"{{"max": 9.999999e307, "min": 1e-307, "neg": -1E+307, "digits": {}, "scale": 1.{}, "zero": 0e-307, "big": 123456789012345678901234567890123456789012}}"#,
        "9".repeat(308),
        "0".repeat(16_383)
    );
    let lines = [
        // 1. Numbers at the edges of the accepted range: PostgreSQL must store them.
        meta("01000000-0000-4000-8000-000000000001", &edge_numbers),
        // 2-4. The issue's poison numbers: rejected, the load goes on.
        meta("02000000-0000-4000-8000-000000000002", r#"{"n": 1e999999}"#),
        meta("03000000-0000-4000-8000-000000000003", r#"{"n": [1e-999999]}"#),
        meta("04000000-0000-4000-8000-000000000004", &format!(r#"{{"n": {}}}"#, "7".repeat(140_000))),
        // 5. Two records glued: both load.
        format!("{}{}", record(ID_A, ""), record(ID_B, "")),
        // 6. The same record glued twice: loads once, one duplicate.
        format!(
            "{0} {0}",
            record("06000000-0000-4000-8000-000000000006", "")
        ),
        // 7. A repeated unknown top-level key: malformed_json.
        record("07000000-0000-4000-8000-000000000007", r#", "x": 1, "x": 2"#),
        // 8. A key repeated inside metadata: invalid_metadata.
        meta("08000000-0000-4000-8000-000000000008", r#"{"a": 1, "\u0061": 2}"#),
        // 9. Unicode email and a 12-digit fraction.
        r#"{"id": "09000000-0000-4000-8000-000000000009", "created_at": "2020-01-13 05:10:12.123456789012", "user_email": " JÖRG@EXAMPLE.COM ", "event_name": "x"}"#.to_owned(),
        // 10. Whitespace past 1 MiB: record_too_large (only 1 MiB of a line is read).
        " ".repeat(events_etl::clean::MAX_LINE_BYTES + 10),
    ];
    std::fs::write(src.join("edges.json"), lines.join("\n") + "\n").unwrap();

    let schema = pg.fresh_schema("e2e_edges").await;
    let cfg = write_config(dir.path(), pg, &schema);
    check(run_bin(&["--config", &cfg, "migrate"], &[], dir.path()));
    check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    let q = |s: &str| s.replace("{s}", &schema);
    let dump = pg.dump(&schema).await;

    let file = pg
        .client()
        .await
        .query_one(
            &q(
                "SELECT lines, events_loaded, duplicates, rejects, blank_lines, recovered_events \
                FROM {s}.etl_files",
            ),
            &[],
        )
        .await
        .unwrap();
    let counts: Vec<i64> = (0..6).map(|i| file.get::<_, i64>(i)).collect();
    // lines 10 + recovered 2 = loaded 5 (1, A, B, 6, 9) + duplicates 1 + rejects 6.
    assert_eq!(counts, [10, 5, 1, 6, 0, 2], "{dump}");
    assert_eq!(
        counts[0] + counts[5],
        counts[1] + counts[2] + counts[3] + counts[4]
    );

    let reasons = text(
        pg,
        &q("SELECT string_agg(reason, ',' ORDER BY source_line) FROM {s}.event_rejects"),
    )
    .await;
    assert_eq!(
        reasons,
        "metadata_number_out_of_range,metadata_number_out_of_range,metadata_number_out_of_range,\
         malformed_json,invalid_metadata,record_too_large",
        "{dump}"
    );
    // The edge numbers are stored as numbers, the fraction truncated, the email lowercased.
    assert_eq!(
        text(
            pg,
            &q(
                "SELECT jsonb_typeof(metadata->'max') || jsonb_typeof(metadata->'scale') \
                FROM {s}.events WHERE event_id = '01000000-0000-4000-8000-000000000001'"
            ),
        )
        .await,
        "numbernumber"
    );
    assert_eq!(
        text(
            pg,
            &q("SELECT user_email || ' ' || created_at::text FROM {s}.events \
                WHERE event_id = '09000000-0000-4000-8000-000000000009'"),
        )
        .await,
        "jörg@example.com 2020-01-13 05:10:12.123456"
    );
    for id in [ID_A, ID_B] {
        let n = scalar(
            pg,
            &q(&format!(
                "SELECT count(*) FROM {{s}}.events WHERE event_id = '{id}'"
            )),
        )
        .await;
        assert_eq!(n, 1, "{id}\n{dump}");
    }

    // A second run finds nothing new.
    let out = check(run_bin(&["--config", &cfg, "run"], &[], dir.path()));
    assert!(out.stdout.contains("nothing to load"), "{out}");
    assert_eq!(scalar(pg, &q("SELECT count(*) FROM {s}.etl_files")).await, 1);
}

/// Issue 7's hostile line (`x{"id":{"id":...`, 1 MiB, once quadratic: minutes of CPU)
/// and a 2 MiB whitespace-only line go through `events-etl clean` beside a good line:
/// the run ends (under the harness's time limit) with both rejected, in the README's
/// order (an over-long line is `record_too_large` whatever it holds).
#[test]
fn hostile_lines_through_the_binary_are_rejected_without_stalling() {
    let dir = tempfile::tempdir().unwrap();
    let max = events_etl::clean::MAX_LINE_BYTES;
    let hostile = format!("x{}", "{\"id\":".repeat((max - 1) / 6));
    let blank = " ".repeat(2 * max);
    let file = dir.path().join("hostile.json");
    std::fs::write(&file, format!("{hostile}\n{blank}\n{}\n", record(ID_A, ""))).unwrap();
    let out = check(run_bin(
        &["clean", "--out", "out", &file.display().to_string()],
        &[],
        dir.path(),
    ));
    assert!(
        out.stdout.contains("3 lines, 1 events, 2 rejects, 0 blank"),
        "{out}"
    );
    let rejects = std::fs::read_dir(dir.path().join("out/rejects")).unwrap().count();
    assert!(rejects > 0, "{out}");
    let mut reasons = String::new();
    for part in std::fs::read_dir(dir.path().join("out/rejects")).unwrap() {
        let bytes = std::fs::read(part.unwrap().path()).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(bytes.as_slice()),
            &mut text,
        )
        .unwrap();
        reasons.push_str(&text);
    }
    assert!(
        reasons.contains("\"reason\":\"malformed_json\""),
        "{reasons:.300}"
    );
    assert!(
        reasons.contains("\"reason\":\"record_too_large\""),
        "{reasons:.300}"
    );
}

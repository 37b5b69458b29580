//! Unit tests pinning every clause of the cleaning contract.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use super::fields::{MAX_EMAIL_BYTES, MAX_EVENT_NAME_BYTES};
use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const ID: &str = "9ba671d6-5154-41c1-93b1-41dd647b2d55";

/// The seed's sample file, verbatim: two lines holding three records.
const SEED_LINE_1: &str = r#"{"id": "9ba671d6-5154-41c1-93b1-41dd647b2d55", "created_at": "2020-01-13 05:10:12", "user_email": "swalker@krause.com", "ip": "204.116.116.31", "event_name": "message_saved", "metadata": {"message_id": 99979}}"#;
const SEED_LINE_2: &str = r#"{"id": "242279cc-4b5d-4a43-a3ec-aa52a8e87e63", "created_at": "2020-01-13 02:31:30", {"id": "10cd6e40-cab2-432d-9e62-a8466761e307", "created_at": "2020-01-12 13:28:31", "user_email": "bryantjulie@navarro.net", "ip": "187.87.20.198", "event_name": "meeting_scheduled", "metadata": {"meeting_id": "eafb8c01-67ed-44aa-94fb-738330fbff95", "meeting_time": "2020-01-20 16:44:26"}}"#;

/// The seed's first record as (key, raw JSON value) pairs; `record(&[])` rebuilds it exactly.
const BASE: [(&str, &str); 6] = [
    ("id", r#""9ba671d6-5154-41c1-93b1-41dd647b2d55""#),
    ("created_at", r#""2020-01-13 05:10:12""#),
    ("user_email", r#""swalker@krause.com""#),
    ("ip", r#""204.116.116.31""#),
    ("event_name", r#""message_saved""#),
    ("metadata", r#"{"message_id": 99979}"#),
];

fn run_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).single().unwrap()
}

fn cleaner() -> Cleaner {
    Cleaner::new(run_start())
}

fn dt(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
}

/// The base record with `changes` applied: `Some(raw)` sets a key to raw JSON text
/// (appending it when new), `None` removes it.
fn record(changes: &[(&str, Option<&str>)]) -> String {
    let mut fields: Vec<(String, String)> = BASE
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (key, value) in changes {
        let pos = fields.iter().position(|(k, _)| k == key);
        match (pos, value) {
            (Some(i), Some(v)) => fields[i].1 = (*v).to_owned(),
            (Some(i), None) => {
                fields.remove(i);
            }
            (None, Some(v)) => fields.push(((*key).to_owned(), (*v).to_owned())),
            (None, None) => {}
        }
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", body.join(", "))
}

fn with(key: &str, raw: &str) -> String {
    record(&[(key, Some(raw))])
}

fn without(key: &str) -> String {
    record(&[(key, None)])
}

/// `s` as a JSON string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A valid record of exactly `total` bytes, padded through metadata with strings short
/// enough for a SUPER value (an array of chunks).
fn padded(total: usize) -> String {
    let base = with("metadata", r#"{"pad": []}"#);
    let remaining = total - base.len();
    let n = remaining / 60_000 + 1;
    // n strings cost 2 quotes each, plus ", " between them.
    let content = remaining - (4 * n - 2);
    let chunks: Vec<String> = (0..n)
        .map(|i| format!("\"{}\"", "x".repeat(content / n + usize::from(i < content % n))))
        .collect();
    let line = with("metadata", &format!(r#"{{"pad": [{}]}}"#, chunks.join(", ")));
    assert_eq!(line.len(), total);
    line
}

fn clean(line: &[u8]) -> LineOutcome<'_> {
    cleaner().clean_line(2, line, false)
}

#[track_caller]
fn event(line: &str) -> CleanEvent<'_> {
    match clean(line.as_bytes()) {
        LineOutcome::Event(e) => e,
        other => panic!("expected an event for {line:?}, got {other:?}"),
    }
}

#[track_caller]
fn reject(line: &[u8]) -> Reject<'_> {
    match clean(line) {
        LineOutcome::Reject(r) => r,
        other => panic!(
            "expected a reject for {:?}, got {other:?}",
            String::from_utf8_lossy(line)
        ),
    }
}

#[track_caller]
fn reason(line: &str) -> Reason {
    reject(line.as_bytes()).reason
}

#[track_caller]
fn assert_base_event(e: &CleanEvent<'_>) {
    assert_eq!(e.id, ID);
    assert_eq!(e.created_at, dt("2020-01-13 05:10:12"));
    assert_eq!(e.user_email, "swalker@krause.com");
    assert_eq!(e.ip, Some(IpAddr::V4(Ipv4Addr::new(204, 116, 116, 31))));
    assert!(!e.ip_was_invalid);
    assert_eq!(e.event_name, "message_saved");
    assert_eq!(e.metadata.map(RawValue::get), Some(r#"{"message_id": 99979}"#));
}

fn tally_of(bytes: &[u8]) -> FileTally {
    clean_bytes(&cleaner(), bytes, |_, _| {})
}

#[track_caller]
fn assert_invariant(t: &FileTally) {
    assert_eq!(
        t.lines + t.recovered,
        t.events + t.rejects + t.blank_lines,
        "{t:?}"
    );
}

fn outcomes(bytes: &[u8]) -> (FileTally, Vec<(u64, LineOutcome<'_>)>) {
    let mut all = Vec::new();
    let tally = clean_bytes(&cleaner(), bytes, |n, o| all.push((n, o)));
    (tally, all)
}

// ---------------------------------------------------------------------------------------------
// Framing: UTF-8, BOM, LF/CRLF, one event per line
// ---------------------------------------------------------------------------------------------

#[test]
fn base_record_is_the_seed_first_line_and_loads_with_every_field() {
    assert_eq!(record(&[]), SEED_LINE_1);
    assert_base_event(&event(SEED_LINE_1));
}

#[test]
fn bom_on_line_one_is_ignored() {
    let line = format!("\u{FEFF}{SEED_LINE_1}");
    match cleaner().clean_line(1, line.as_bytes(), false) {
        LineOutcome::Event(e) => assert_base_event(&e),
        other => panic!("{other:?}"),
    }
    // A BOM alone on line 1 leaves a blank line.
    assert!(matches!(
        cleaner().clean_line(1, b"\xEF\xBB\xBF", false),
        LineOutcome::Blank
    ));
    assert!(matches!(
        cleaner().clean_line(1, b"\xEF\xBB\xBF\r", false),
        LineOutcome::Blank
    ));
}

#[test]
fn bom_is_only_ignored_on_line_one() {
    let line = format!("\u{FEFF}{SEED_LINE_1}");
    match cleaner().clean_line(2, line.as_bytes(), false) {
        LineOutcome::Event(e) => panic!("a BOM on line 2 must not be ignored: {e:?}"),
        LineOutcome::Recovered {
            prefix: Err(prefix),
            fragment,
        } => {
            assert_eq!(prefix.reason, Reason::MalformedJson);
            assert_eq!(prefix.raw, "\u{FEFF}");
            assert_base_event(&fragment.unwrap());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn crlf_line_loads_like_lf_line() {
    let line = format!("{SEED_LINE_1}\r");
    assert_base_event(&event(&line));
}

#[test]
fn crlf_reject_raw_excludes_the_carriage_return() {
    let r = reject(b"{\"id\": \r");
    assert_eq!(r.reason, Reason::MalformedJson);
    assert_eq!(r.raw, "{\"id\": ");
}

// ---------------------------------------------------------------------------------------------
// blank
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_and_whitespace_lines_are_blank() {
    for line in ["", " ", "\t", "   \t  ", "\r", " \t\r", "\r\r"] {
        assert!(
            matches!(clean(line.as_bytes()), LineOutcome::Blank),
            "{line:?} should be blank"
        );
    }
}

#[test]
fn blank_lines_are_counted_not_rejected() {
    let t = tally_of(b"\n  \n\t\r\n");
    assert_eq!(
        t,
        FileTally {
            lines: 3,
            blank_lines: 3,
            ..FileTally::default()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// invalid_utf8
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_utf8_is_rejected_with_lossy_raw() {
    let mut line = SEED_LINE_1.as_bytes().to_vec();
    let at = SEED_LINE_1.find("message_saved").unwrap() + "message".len();
    line[at] = 0xFF;
    let r = reject(&line);
    assert_eq!(r.reason, Reason::InvalidUtf8);
    assert!(r.raw.contains("\"message\u{FFFD}saved\""), "{}", r.raw);
    assert_eq!(
        r.raw.len(),
        line.len() + 2,
        "one byte became the three-byte U+FFFD"
    );
}

#[test]
fn invalid_utf8_variants_are_rejected() {
    let cases: [&[u8]; 6] = [
        b"\xFF",
        b"{\"id\": \"\xC3\"}",             // truncated two-byte sequence
        b"{\"id\": \"\xE2\x82\"}",         // truncated three-byte sequence
        b"{\"id\": \"\xC0\xAF\"}",         // overlong encoding
        b"{\"id\": \"\xED\xA0\x80\"}",     // encoded surrogate
        b"{\"id\": \"\xF4\x90\x80\x80\"}", // above U+10FFFF
    ];
    for line in cases {
        assert_eq!(reject(line).reason, Reason::InvalidUtf8, "{line:?}");
    }
}

#[test]
fn invalid_utf8_line_does_not_stop_the_rest_of_the_file() {
    let mut file = Vec::new();
    file.extend_from_slice(SEED_LINE_1.as_bytes());
    file.extend_from_slice(b"\n{\"id\": \"\xFE\xFF\"}\n");
    file.extend_from_slice(SEED_LINE_1.replace("message_saved", "message_sent").as_bytes());
    file.push(b'\n');
    let (t, all) = outcomes(&file);
    assert_eq!(
        t,
        FileTally {
            lines: 3,
            events: 2,
            rejects: 1,
            ..FileTally::default()
        }
    );
    assert!(matches!(&all[0], (1, LineOutcome::Event(_))));
    match &all[1] {
        (2, LineOutcome::Reject(r)) => {
            assert_eq!(r.reason, Reason::InvalidUtf8);
            assert_eq!(r.raw, "{\"id\": \"\u{FFFD}\u{FFFD}\"}");
        }
        other => panic!("{other:?}"),
    }
    match &all[2] {
        (3, LineOutcome::Event(e)) => assert_eq!(e.event_name, "message_sent"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// record_too_large
// ---------------------------------------------------------------------------------------------

#[test]
fn line_of_exactly_max_bytes_loads() {
    let line = padded(MAX_LINE_BYTES);
    let e = event(&line);
    assert_eq!(e.id, ID);
    let fixed = SEED_LINE_1.len() - r#"{"message_id": 99979}"#.len();
    assert_eq!(e.metadata.unwrap().get().len(), MAX_LINE_BYTES - fixed);
}

#[test]
fn line_of_max_plus_one_bytes_is_rejected() {
    let line = padded(MAX_LINE_BYTES + 1);
    let r = reject(line.as_bytes());
    assert_eq!(r.reason, Reason::RecordTooLarge);
    assert_eq!(r.raw, &line[..MAX_RAW_BYTES]);
}

#[test]
fn too_long_flag_rejects_even_a_short_valid_line() {
    match cleaner().clean_line(7, SEED_LINE_1.as_bytes(), true) {
        LineOutcome::Reject(r) => {
            assert_eq!(r.reason, Reason::RecordTooLarge);
            assert_eq!(r.raw, SEED_LINE_1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn crlf_line_with_max_bytes_of_content_loads() {
    let line = format!("{}\r", padded(MAX_LINE_BYTES));
    assert_eq!(line.len(), MAX_LINE_BYTES + 1);
    assert_eq!(event(&line).id, ID);

    let line = format!("{}\r", padded(MAX_LINE_BYTES + 1));
    assert_eq!(reason(&line), Reason::RecordTooLarge);
}

#[test]
fn bom_does_not_count_towards_the_line_limit() {
    let line = format!("\u{FEFF}{}", padded(MAX_LINE_BYTES));
    assert!(matches!(
        cleaner().clean_line(1, line.as_bytes(), false),
        LineOutcome::Event(_)
    ));
    let line = format!("\u{FEFF}{}", padded(MAX_LINE_BYTES + 1));
    match cleaner().clean_line(1, line.as_bytes(), false) {
        LineOutcome::Reject(r) => assert_eq!(r.reason, Reason::RecordTooLarge),
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_large_is_checked_before_blank() {
    // Only the first 1 MiB of a line is ever read, so an over-long line is never known to
    // be blank: whitespace that goes on past the limit is record_too_large.
    for ws in [b' ', b'\t'] {
        let line = vec![ws; MAX_LINE_BYTES + 1];
        assert_eq!(reject(&line).reason, Reason::RecordTooLarge);
        let kept = vec![ws; MAX_LINE_BYTES + 1];
        match cleaner().clean_line(3, &kept, true) {
            LineOutcome::Reject(r) => assert_eq!(r.reason, Reason::RecordTooLarge),
            other => panic!("{other:?}"),
        }
    }
    // Within the limit, whitespace is blank.
    assert!(matches!(clean(&vec![b' '; MAX_LINE_BYTES]), LineOutcome::Blank));
}

#[test]
fn too_large_is_checked_before_utf8_even_at_the_line_start() {
    let mut line = vec![b'x'; MAX_LINE_BYTES + 1];
    line[0] = 0xFF;
    assert_eq!(reject(&line).reason, Reason::RecordTooLarge);
    match cleaner().clean_line(3, b"\xFF\xFE{", true) {
        LineOutcome::Reject(r) => {
            assert_eq!(r.reason, Reason::RecordTooLarge);
            assert_eq!(r.raw, "\u{FFFD}\u{FFFD}{");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_large_is_checked_before_utf8_and_json() {
    let mut line = vec![b'x'; MAX_LINE_BYTES + 1];
    line[10] = 0xFF;
    let r = reject(&line);
    assert_eq!(r.reason, Reason::RecordTooLarge);
    assert_eq!(r.raw.len(), MAX_RAW_BYTES);
    assert!(r.raw.starts_with("xxxxxxxxxx\u{FFFD}x"));
}

// ---------------------------------------------------------------------------------------------
// malformed_json and recovery
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_sample_two_lines_three_records() {
    let file = format!("{SEED_LINE_1}\n{SEED_LINE_2}\n");
    let (t, all) = outcomes(file.as_bytes());
    assert_eq!(
        t,
        FileTally {
            lines: 2,
            events: 2,
            rejects: 1,
            recovered: 1,
            ..FileTally::default()
        }
    );
    assert_invariant(&t);
    assert_eq!(all.len(), 2);
    match &all[0] {
        (1, LineOutcome::Event(e)) => assert_base_event(e),
        other => panic!("{other:?}"),
    }
    match &all[1] {
        (
            2,
            LineOutcome::Recovered {
                prefix: Err(prefix),
                fragment,
            },
        ) => {
            assert_eq!(prefix.reason, Reason::MalformedJson);
            assert_eq!(
                prefix.raw,
                r#"{"id": "242279cc-4b5d-4a43-a3ec-aa52a8e87e63", "created_at": "2020-01-13 02:31:30", "#
            );
            let e = fragment.as_ref().unwrap();
            assert_eq!(e.id, "10cd6e40-cab2-432d-9e62-a8466761e307");
            assert_eq!(e.created_at, dt("2020-01-12 13:28:31"));
            assert_eq!(e.user_email, "bryantjulie@navarro.net");
            assert_eq!(e.ip, Some(IpAddr::V4(Ipv4Addr::new(187, 87, 20, 198))));
            assert_eq!(e.event_name, "meeting_scheduled");
            assert_eq!(
                e.metadata.unwrap().get(),
                r#"{"meeting_id": "eafb8c01-67ed-44aa-94fb-738330fbff95", "meeting_time": "2020-01-20 16:44:26"}"#
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn recovered_fragment_that_fails_validation_gives_two_rejects() {
    let fragment = with("user_email", "\"not-an-email\"");
    let line = format!("{{\"id\": \"242279cc-4b5d-4a43-a3ec-aa52a8e87e63\", {fragment}");
    match clean(line.as_bytes()) {
        LineOutcome::Recovered {
            prefix: Err(prefix),
            fragment: Err(r),
        } => {
            assert_eq!(prefix.reason, Reason::MalformedJson);
            assert_eq!(prefix.raw, "{\"id\": \"242279cc-4b5d-4a43-a3ec-aa52a8e87e63\", ");
            assert_eq!(r.reason, Reason::InvalidEmail);
            assert_eq!(r.raw, fragment);
        }
        other => panic!("{other:?}"),
    }
    let t = tally_of(line.as_bytes());
    assert_eq!(
        t,
        FileTally {
            lines: 1,
            rejects: 2,
            recovered: 1,
            ..FileTally::default()
        }
    );
    assert_invariant(&t);
}

#[test]
fn recovery_allows_whitespace_after_the_brace() {
    for ws in [" ", "  ", "\t", " \t "] {
        let fragment = SEED_LINE_1.replacen("{\"id\"", &format!("{{{ws}\"id\""), 1);
        let line = format!("{{\"id\": \"trunc{fragment}");
        match clean(line.as_bytes()) {
            LineOutcome::Recovered {
                prefix: Err(prefix),
                fragment: Ok(e),
            } => {
                assert_eq!(prefix.raw, "{\"id\": \"trunc");
                assert_base_event(&e);
            }
            other => panic!("{ws:?}: {other:?}"),
        }
    }
}

#[test]
fn recovery_works_after_a_non_object_prefix_and_with_crlf() {
    let line = format!("garbage {SEED_LINE_1}\r");
    match clean(line.as_bytes()) {
        LineOutcome::Recovered {
            prefix: Err(prefix),
            fragment: Ok(e),
        } => {
            assert_eq!(prefix.reason, Reason::MalformedJson);
            assert_eq!(prefix.raw, "garbage ");
            assert_base_event(&e);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn recovery_fragment_may_start_at_the_second_byte() {
    for (prefix, line) in [
        ("{", format!("{{{SEED_LINE_1}")),
        ("x", format!("x{SEED_LINE_1}")),
    ] {
        match clean(line.as_bytes()) {
            LineOutcome::Recovered {
                prefix: Err(p),
                fragment: Ok(e),
            } => {
                assert_eq!(p.reason, Reason::MalformedJson);
                assert_eq!(p.raw, prefix);
                assert_base_event(&e);
            }
            other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn recovery_skips_id_fragments_that_do_not_parse_to_the_end() {
    let line = format!("{{\"id\": \"a\", {{\"id\": \"b\", {SEED_LINE_1}");
    match clean(line.as_bytes()) {
        LineOutcome::Recovered {
            prefix: Err(prefix),
            fragment: Ok(e),
        } => {
            assert_eq!(prefix.raw, "{\"id\": \"a\", {\"id\": \"b\", ");
            assert_base_event(&e);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn line_without_recoverable_fragment_is_one_malformed_reject() {
    let cases = [
        "{".to_owned(),
        "{\"id\": \"9ba671d6".to_owned(),
        "not json at all".to_owned(),
        "{\"id\": 1,}".to_owned(),
        "{'id': 'x'}".to_owned(),
        // The fragment must begin with "id".
        format!(
            "{{\"id\": \"trunc{}",
            with("zzz", "1").replacen("{\"id\"", "{\"xid\"", 1)
        ),
        // The fragment must run to the end of the line.
        format!("{{\"id\": \"trunc{SEED_LINE_1} trailing"),
        format!("{{\"id\": \"trunc{SEED_LINE_1}}}"),
        // A complete object with trailing junk is not recovered from its own start.
        format!("{SEED_LINE_1} junk"),
        // A truncated record alone.
        SEED_LINE_1[..SEED_LINE_1.len() - 1].to_owned(),
        // The recovered object must be a `{`, not `[`.
        format!("xx[{SEED_LINE_1}]"),
    ];
    for line in &cases {
        let r = reject(line.as_bytes());
        assert_eq!(r.reason, Reason::MalformedJson, "{line}");
        assert_eq!(r.raw, line.as_str());
        assert_eq!(tally_of(line.as_bytes()).rejects, 1);
    }
}

#[test]
fn duplicate_top_level_key_is_malformed() {
    let line = format!("{}, \"id\": \"{ID}\"}}", &SEED_LINE_1[..SEED_LINE_1.len() - 1]);
    assert_eq!(reason(&line), Reason::MalformedJson);
}

#[test]
fn any_repeated_top_level_key_is_malformed_not_only_the_known_ones() {
    let base = &SEED_LINE_1[..SEED_LINE_1.len() - 1];
    for extra in [
        r#", "x": 1, "x": 2"#,
        r#", "x": 1, "y": 0, "x": 1"#,
        // Keys compare decoded: "\u0078" is "x".
        r#", "x": 1, "\u0078": 2"#,
        r#", "x": null, "x": null"#,
        // Escaped known keys are the same keys too.
        r#", "\u0069d": "9ba671d6-5154-41c1-93b1-41dd647b2d55""#,
    ] {
        let line = format!("{base}{extra}}}");
        let r = reject(line.as_bytes());
        assert_eq!(r.reason, Reason::MalformedJson, "{line}");
        assert_eq!(r.raw, line);
    }
    // Many distinct keys (past the small set) and one repeated at the end.
    let many: String = (0..100).map(|i| format!(r#", "k{i}": {i}"#)).collect();
    let line = format!("{base}{many}}}");
    assert_base_event(&event(&line));
    let line = format!("{base}{many}, \"k7\": 0}}");
    assert_eq!(reason(&line), Reason::MalformedJson);
    // The same key in nested objects of a dropped key, or in different objects, is fine.
    let line = format!(r#"{base}, "x": {{"a": 1, "b": {{"a": 2}}}}, "y": {{"a": 3}}}}"#);
    assert_base_event(&event(&line));
}

#[test]
fn a_recovered_fragment_with_a_repeated_key_is_not_recovered() {
    let fragment = format!("{}, \"x\": 1, \"x\": 2}}", &SEED_LINE_1[..SEED_LINE_1.len() - 1]);
    let line = format!("{{\"id\": \"trunc{fragment}");
    assert_eq!(reason(&line), Reason::MalformedJson);
}

// ---------------------------------------------------------------------------------------------
// not_an_object
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_json_that_is_not_an_object_is_rejected() {
    let wrapped = format!("[{SEED_LINE_1}]");
    let cases = [
        "[]",
        "[1, 2]",
        "\"a string\"",
        "\"{\\\"id\\\": 1}\"",
        "42",
        "-1.5e3",
        "true",
        "false",
        "null",
        "  null  ",
        wrapped.as_str(),
    ];
    for line in cases {
        let r = reject(line.as_bytes());
        assert_eq!(r.reason, Reason::NotAnObject, "{line}");
        assert_eq!(r.raw, line);
    }
}

// ---------------------------------------------------------------------------------------------
// missing_<field>
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_required_fields_absent_or_null() {
    for (key, want) in [
        ("id", Reason::MissingId),
        ("created_at", Reason::MissingCreatedAt),
        ("user_email", Reason::MissingUserEmail),
        ("event_name", Reason::MissingEventName),
    ] {
        assert_eq!(reason(&without(key)), want, "{key} absent");
        assert_eq!(reason(&with(key, "null")), want, "{key} null");
        assert_eq!(reject(without(key).as_bytes()).raw, without(key));
    }
}

#[test]
fn empty_object_is_missing_id() {
    assert_eq!(reason("{}"), Reason::MissingId);
    assert_eq!(reason(" { } "), Reason::MissingId);
}

// ---------------------------------------------------------------------------------------------
// invalid_id
// ---------------------------------------------------------------------------------------------

#[test]
fn id_is_normalised_to_lowercase() {
    let line = with("id", "\"9BA671D6-5154-41C1-93B1-41DD647B2D55\"");
    let e = event(&line);
    assert_eq!(e.id, ID);
    let line = with("id", "\"9Ba671d6-5154-41c1-93b1-41dd647B2d55\"");
    let e = event(&line);
    assert_eq!(e.id, ID);
}

#[test]
fn id_json_escapes_are_decoded() {
    let line = with("id", "\"\\u0039ba671d6-5154-41c1-93b1-41dd647b2d55\"");
    let e = event(&line);
    assert_eq!(e.id, ID);
}

#[test]
fn invalid_ids_are_rejected() {
    let cases = [
        "12345".to_owned(),
        "1.5".to_owned(),
        "true".to_owned(),
        "[]".to_owned(),
        "{}".to_owned(),
        js(""),
        js(&format!("{{{ID}}}")),
        js(&format!("urn:uuid:{ID}")),
        js(&ID.replace('-', "")),
        js(&ID[1..]),
        js(&format!("{ID}0")),
        js("9ba671d65-154-41c1-93b1-41dd647b2d55"),
        js("9ba671d-65154-41c1-93b1-41dd647b2d55"),
        js("9ba671d6-5154-41c1-93b141-dd647b2d55"),
        js("9ba671d6_5154_41c1_93b1_41dd647b2d55"),
        js("9ba671d6-5154-41c1-93b1-41dd647b2d5g"),
        js("zba671d6-5154-41c1-93b1-41dd647b2d55"),
        js(&format!(" {ID}")),
        js(&format!("{ID} ")),
        js("9ba671d6-5154-41c1-93b1-41dd647b2d5é"),
    ];
    for raw in &cases {
        assert_eq!(reason(&with("id", raw)), Reason::InvalidId, "id {raw}");
    }
}

// ---------------------------------------------------------------------------------------------
// created_at
// ---------------------------------------------------------------------------------------------

/// The stored `created_at` of the base record with `created_at` set to the string `raw`.
fn created_at(raw: &str) -> Result<NaiveDateTime, Reason> {
    let line = with("created_at", &js(raw));
    match clean(line.as_bytes()) {
        LineOutcome::Event(e) => Ok(e.created_at),
        LineOutcome::Reject(r) => Err(r.reason),
        other => panic!("{raw}: {other:?}"),
    }
}

#[test]
fn created_at_accepted_forms_are_stored_as_utc() {
    let cases = [
        ("2020-01-13 05:10:12", "2020-01-13 05:10:12"),
        ("2020-01-13T05:10:12", "2020-01-13 05:10:12"),
        ("2020-01-13 05:10:12Z", "2020-01-13 05:10:12"),
        ("2020-01-13T05:10:12Z", "2020-01-13 05:10:12"),
        ("2020-01-13T05:10:12+00:00", "2020-01-13 05:10:12"),
        ("2020-01-13T05:10:12-00:00", "2020-01-13 05:10:12"),
        ("2020-01-13T05:10:12+02:00", "2020-01-13 03:10:12"),
        ("2020-01-13 05:10:12+02:00", "2020-01-13 03:10:12"),
        ("2020-01-13T05:10:12-05:30", "2020-01-13 10:40:12"),
        ("2020-01-13T00:10:12+02:00", "2020-01-12 22:10:12"),
        ("2020-12-31T23:10:12-01:00", "2021-01-01 00:10:12"),
        ("2020-01-13T05:10:12+23:59", "2020-01-12 05:11:12"),
        ("2020-02-29 00:00:00", "2020-02-29 00:00:00"),
        ("2020-01-13 23:59:59", "2020-01-13 23:59:59"),
        // Python's %z and Java's Z pattern (+HHMM), a bare hour offset, lowercase t and z.
        ("2022-03-02T10:00:00+0000", "2022-03-02 10:00:00"),
        ("2020-01-13T05:10:12+0200", "2020-01-13 03:10:12"),
        ("2020-01-13 05:10:12-0530", "2020-01-13 10:40:12"),
        ("2020-01-13T05:10:12+02", "2020-01-13 03:10:12"),
        ("2020-01-13T05:10:12-00", "2020-01-13 05:10:12"),
        ("2020-01-13T05:10:12.5+0100", "2020-01-13 04:10:12.500000"),
        ("2020-01-13t05:10:12", "2020-01-13 05:10:12"),
        ("2020-01-13t05:10:12z", "2020-01-13 05:10:12"),
        ("2020-01-13 05:10:12z", "2020-01-13 05:10:12"),
    ];
    for (input, want) in cases {
        assert_eq!(created_at(input), Ok(dt(want)), "{input}");
    }
}

/// A time without an offset is local time in `cleaning.naive_timezone`: converted to
/// UTC, the earlier instant of an ambiguous hour, a skipped hour invalid; a time with an
/// offset is not affected.
#[test]
fn naive_times_are_taken_in_the_configured_zone() {
    let paris: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
    let cleaner = Cleaner::new(run_start()).with_naive_timezone(paris);
    let at = |raw: &str| match cleaner.clean_line(1, with("created_at", &js(raw)).as_bytes(), false) {
        LineOutcome::Event(e) => Ok(e.created_at),
        LineOutcome::Reject(r) => Err(r.reason),
        other => panic!("{raw}: {other:?}"),
    };
    assert_eq!(
        at("2020-01-13 05:10:12"),
        Ok(dt("2020-01-13 04:10:12")),
        "CET, UTC+1"
    );
    assert_eq!(
        at("2020-07-13 05:10:12"),
        Ok(dt("2020-07-13 03:10:12")),
        "CEST, UTC+2"
    );
    assert_eq!(at("2020-07-13T05:10:12Z"), Ok(dt("2020-07-13 05:10:12")));
    assert_eq!(at("2020-07-13T05:10:12+0100"), Ok(dt("2020-07-13 04:10:12")));
    // 2020-10-25 02:30 happened twice in Paris (CEST, then CET): the earlier instant.
    assert_eq!(at("2020-10-25 02:30:00"), Ok(dt("2020-10-25 00:30:00")));
    // 2020-03-29 02:30 never happened in Paris.
    assert_eq!(at("2020-03-29 02:30:00"), Err(Reason::InvalidCreatedAt));
}

#[test]
fn created_at_fractional_seconds_kept_to_microseconds() {
    let cases = [
        ("2020-01-13T05:10:12.5", "2020-01-13 05:10:12.500000"),
        ("2020-01-13 05:10:12.05", "2020-01-13 05:10:12.050000"),
        ("2020-01-13T05:10:12.123456", "2020-01-13 05:10:12.123456"),
        ("2020-01-13T05:10:12.000001", "2020-01-13 05:10:12.000001"),
        // Beyond microseconds: truncated, not rounded.
        ("2020-01-13T05:10:12.1234567", "2020-01-13 05:10:12.123456"),
        ("2020-01-13T05:10:12.9999999", "2020-01-13 05:10:12.999999"),
        ("2020-01-13T05:10:12.999999999Z", "2020-01-13 05:10:12.999999"),
        ("2020-01-13T05:10:12.000000999", "2020-01-13 05:10:12.000000"),
        ("2020-01-13T05:10:12.250+01:00", "2020-01-13 04:10:12.250000"),
        ("2020-01-13T05:10:12.75-01:00", "2020-01-13 06:10:12.750000"),
        // Any number of digits: ten, twelve, thirty.
        ("2020-01-13 05:10:12.1234567891", "2020-01-13 05:10:12.123456"),
        ("2020-01-13T05:10:12.999999999999Z", "2020-01-13 05:10:12.999999"),
        (
            "2020-01-13T05:10:12.123456789012345678901234567890+01:00",
            "2020-01-13 04:10:12.123456",
        ),
    ];
    for (input, want) in cases {
        let got = created_at(input).unwrap();
        assert_eq!(got, dt(want), "{input}");
        assert_eq!(got.and_utc().timestamp_subsec_nanos() % 1000, 0, "{input}");
    }
    // A fraction of 10,000 nines is still the same second: truncation never carries.
    let long = format!("2020-12-31 23:59:59.{}", "9".repeat(10_000));
    assert_eq!(created_at(&long), Ok(dt("2020-12-31 23:59:59.999999")));
    // Truncation happens before the window check: the last accepted microsecond stays in.
    let edge = format!("2026-11-29 12:00:00.000000{}", "9".repeat(20));
    assert_eq!(created_at(&edge), Ok(dt("2026-11-29 12:00:00")));
    // The digits must still be digits.
    let bad = format!("2020-01-13 05:10:12.{}x", "1".repeat(12));
    assert_eq!(created_at(&bad), Err(Reason::InvalidCreatedAt));
}

#[test]
fn invalid_created_at_is_rejected() {
    let cases = [
        // Impossible dates and times.
        "2020-02-30 05:10:12",
        "2019-02-29 05:10:12",
        "2020-04-31 05:10:12",
        "2020-13-01 05:10:12",
        "2020-00-01 05:10:12",
        "2020-01-00 05:10:12",
        "2020-01-13 24:00:00",
        "2020-01-13 05:60:12",
        "2020-01-13 05:10:60",
        "2020-01-13 05:10:61",
        // Wrong separators.
        "2020/01/13 05:10:12",
        "2020-01-13_05:10:12",
        "2020-01-13  05:10:12",
        "2020-01-13 05.10.12",
        "2020-01-13 05:10:12,5",
        // Missing parts.
        "2020-01-13 05:10",
        "2020-01-13",
        "2020-01-13 05:10:1",
        "20-01-13 05:10:12",
        "2020-1-13 05:10:12",
        "2020-01-13 5:10:12",
        "",
        "1578892212",
        // Trailing junk and broken suffixes.
        "2020-01-13 05:10:12 ",
        " 2020-01-13 05:10:12",
        "2020-01-13 05:10:12junk",
        "2020-01-13 05:10:12ZZ",
        "2020-01-13 05:10:12 UTC",
        "2020-01-13 05:10:12.",
        "2020-01-13 05:10:12.Z",
        "2020-01-13 05:10:12.12a",
        "2020-01-13 05:10:12+2:00",
        "2020-01-13 05:10:12+2",
        "2020-01-13 05:10:12+020",
        "2020-01-13 05:10:12+02:0",
        "2020-01-13 05:10:12+02:000",
        "2020-01-13 05:10:12+02000",
        "2020-01-13 05:10:12+2400",
        "2020-01-13 05:10:12+0260",
        "2020-01-13 05:10:12+24",
        "2020-01-13 05:10:12zz",
        "2020-01-13T05:10:12Zz",
        "2020-01-13 05:10:12+02:00Z",
        "2020-01-13 05:10:12Z+02:00",
        "2020-01-13 05:10:12+24:00",
        "2020-01-13 05:10:12+02:60",
        "2020-01-13 05:10:12*02:00",
        "2020-01-13 05:10:12+0a:00",
        // Non-ASCII digits.
        "２020-01-13 05:10:12",
    ];
    for input in cases {
        assert_eq!(created_at(input), Err(Reason::InvalidCreatedAt), "{input:?}");
    }
    for raw in ["1578892212", "1.5", "true", "[]", "{}"] {
        assert_eq!(
            reason(&with("created_at", raw)),
            Reason::InvalidCreatedAt,
            "{raw}"
        );
    }
}

#[test]
fn created_at_window_boundaries() {
    // Run start 2026-11-28T12:00:00Z: the window is [2000-01-01 00:00:00, 2026-11-29 12:00:00] UTC.
    let ok = [
        "2000-01-01 00:00:00",
        "2000-01-01T00:00:00Z",
        "1999-12-31T23:00:00-01:00",
        "2000-01-01 00:00:00.000001",
        "2026-11-28 12:00:00",
        "2026-11-29 11:59:59.999999",
        "2026-11-29 12:00:00",
        "2026-11-29T12:00:00Z",
        "2026-11-29T13:00:00+01:00",
        "2026-11-29T11:00:00-01:00",
        // Truncated to microseconds before the window check.
        "2026-11-29 12:00:00.0000009",
    ];
    for input in ok {
        assert!(created_at(input).is_ok(), "{input} should load");
    }
    let out = [
        "1999-12-31 23:59:59",
        "1999-12-31 23:59:59.999999",
        "2000-01-01T01:00:00+02:00",
        "2000-01-01T00:00:00+00:01",
        "0000-01-01 00:00:00",
        "1970-01-01 00:00:00",
        "2026-11-29 12:00:00.000001",
        "2026-11-29 12:00:01",
        "2026-11-29T12:00:00-00:01",
        "2026-11-29T11:00:00-01:01",
        "2026-11-30 00:00:00",
        "9999-12-31 23:59:59",
    ];
    for input in out {
        assert_eq!(created_at(input), Err(Reason::CreatedAtOutOfRange), "{input}");
    }
}

#[test]
fn created_at_window_follows_the_run_start() {
    let line = with("created_at", "\"2026-11-29 12:00:00\"");
    let early = Cleaner::new(Utc.with_ymd_and_hms(2026, 11, 28, 11, 59, 59).single().unwrap());
    match early.clean_line(2, line.as_bytes(), false) {
        LineOutcome::Reject(r) => assert_eq!(r.reason, Reason::CreatedAtOutOfRange),
        other => panic!("{other:?}"),
    }
    let late = Cleaner::new(Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 1).single().unwrap());
    assert!(matches!(
        late.clean_line(2, line.as_bytes(), false),
        LineOutcome::Event(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// invalid_email
// ---------------------------------------------------------------------------------------------

#[test]
fn email_is_trimmed_and_lowercased() {
    for raw in [
        "\"SWalker@Krause.COM\"",
        "\"  swalker@krause.com  \"",
        "\"\\tSWALKER@KRAUSE.COM\\r\\n\"",
    ] {
        assert_eq!(
            event(&with("user_email", raw)).user_email,
            "swalker@krause.com",
            "{raw}"
        );
    }
    let line = with("user_email", "\"first.last+tag@mail.example.co.uk\"");
    let e = event(&line);
    assert_eq!(e.user_email, "first.last+tag@mail.example.co.uk");
}

#[test]
fn email_is_lowercased_fully_not_only_ascii() {
    for (input, want) in [
        ("JÖRG@EXAMPLE.COM", "jörg@example.com"),
        ("Jörg@Example.com", "jörg@example.com"),
        ("ÉLODIE@BÜCHER.DE", "élodie@bücher.de"),
        // Greek final sigma, a titlecase digraph, the Kelvin sign (which shrinks).
        ("ΣΊΣΥΦΟΣ@EXAMPLE.GR", "σίσυφος@example.gr"),
        ("ǅURO@EXAMPLE.COM", "ǆuro@example.com"),
        ("\u{212A}ATE@EXAMPLE.COM", "kate@example.com"),
        ("  МАРИЯ@ПОЧТА.РФ  ", "мария@почта.рф"),
    ] {
        assert_eq!(event(&with("user_email", &js(input))).user_email, want, "{input}");
    }
    // Already lowercase non-ASCII is kept byte for byte.
    let line = with("user_email", &js("jörg@example.com"));
    assert_eq!(event(&line).user_email, "jörg@example.com");
}

#[test]
fn email_byte_limit_applies_after_lowercasing() {
    // `Ⱥ` (U+023A) is 2 bytes; its lowercase `ⱥ` (U+2C65) is 3.
    let domain = "@krause.com";
    let fits = format!("Ⱥ{}{domain}", "a".repeat(MAX_EMAIL_BYTES - domain.len() - 3));
    assert_eq!(fits.len(), MAX_EMAIL_BYTES - 1);
    let line = with("user_email", &js(&fits));
    let e = event(&line);
    assert_eq!(e.user_email.len(), MAX_EMAIL_BYTES);
    assert!(e.user_email.starts_with('ⱥ'));
    let grows_over = format!("Ⱥ{}{domain}", "a".repeat(MAX_EMAIL_BYTES - domain.len() - 2));
    assert_eq!(grows_over.len(), MAX_EMAIL_BYTES);
    assert_eq!(
        reason(&with("user_email", &js(&grows_over))),
        Reason::InvalidEmail
    );
    // A character that shrinks can bring an address under the limit.
    let shrinks = format!(
        "\u{212A}{}{domain}",
        "a".repeat(MAX_EMAIL_BYTES - domain.len() - 1)
    );
    assert_eq!(shrinks.len(), MAX_EMAIL_BYTES + 2);
    assert_eq!(
        event(&with("user_email", &js(&shrinks))).user_email.len(),
        MAX_EMAIL_BYTES
    );
}

#[test]
fn invalid_emails_are_rejected() {
    let cases = [
        "",
        "   ",
        "swalker",
        "swalker.krause.com",
        "@krause.com",
        " @krause.com",
        "swalker@",
        "swalker@krause",
        "swalker@krause.",
        "swalker@.krause.com",
        "swalker@krause..com",
        "swalker@.",
        "sw alker@krause.com",
        "swalker@kra use.com",
        "swalker @krause.com",
        "sw\talker@krause.com",
        "sw\nalker@krause.com",
        "sw\u{a0}alker@krause.com",
        "sw\0alker@krause.com",
        "a@b@krause.com",
        "swalker@@krause.com",
    ];
    for input in cases {
        assert_eq!(
            reason(&with("user_email", &js(input))),
            Reason::InvalidEmail,
            "{input:?}"
        );
    }
    for raw in ["42", "true", "[\"a@b.c\"]", "{\"a\": \"b@c.d\"}"] {
        assert_eq!(reason(&with("user_email", raw)), Reason::InvalidEmail, "{raw}");
    }
}

#[test]
fn email_length_limit_is_254_bytes_after_trimming() {
    let domain = "@krause.com";
    let at_limit = format!("{}{domain}", "a".repeat(MAX_EMAIL_BYTES - domain.len()));
    assert_eq!(at_limit.len(), 254);
    assert_eq!(event(&with("user_email", &js(&at_limit))).user_email, at_limit);
    // Surrounding whitespace and case do not count.
    let padded_upper = format!("   {}   ", at_limit.to_uppercase());
    assert_eq!(
        event(&with("user_email", &js(&padded_upper))).user_email,
        at_limit
    );

    let over = format!("a{at_limit}");
    assert_eq!(over.len(), 255);
    assert_eq!(reason(&with("user_email", &js(&over))), Reason::InvalidEmail);
    // Bytes, not characters: with a two-byte character, 253 characters are 254 bytes (ok) and
    // 254 characters are 255 bytes (too long).
    let multibyte = format!("é{}{domain}", "a".repeat(MAX_EMAIL_BYTES - domain.len() - 2));
    assert_eq!(multibyte.len(), 254);
    assert!(matches!(
        clean(with("user_email", &js(&multibyte)).as_bytes()),
        LineOutcome::Event(_)
    ));
    let multibyte = format!("é{}{domain}", "a".repeat(MAX_EMAIL_BYTES - domain.len() - 1));
    assert_eq!(multibyte.chars().count(), 254);
    assert_eq!(reason(&with("user_email", &js(&multibyte))), Reason::InvalidEmail);
}

// ---------------------------------------------------------------------------------------------
// invalid_event_name
// ---------------------------------------------------------------------------------------------

#[test]
fn event_name_is_trimmed_and_lowercased() {
    for raw in [
        "\"Message_Saved\"",
        "\"  message_saved \"",
        "\"\\tMESSAGE_SAVED\\n\"",
    ] {
        assert_eq!(
            event(&with("event_name", raw)).event_name,
            "message_saved",
            "{raw}"
        );
    }
    for ok in ["a", "a1", "a_", "z9_x_0", "message_saved_2"] {
        assert_eq!(event(&with("event_name", &js(ok))).event_name, ok);
    }
}

#[test]
fn invalid_event_names_are_rejected() {
    let cases = [
        "",
        "   ",
        "1abc",
        "_abc",
        "9",
        "message-saved",
        "message saved",
        "message.saved",
        "message:saved",
        "méssage",
        "ÄBC",
        "message_saved!",
        "message\0saved",
    ];
    for input in cases {
        assert_eq!(
            reason(&with("event_name", &js(input))),
            Reason::InvalidEventName,
            "{input:?}"
        );
    }
    for raw in ["5", "false", "[\"a\"]", "{}"] {
        assert_eq!(
            reason(&with("event_name", raw)),
            Reason::InvalidEventName,
            "{raw}"
        );
    }
}

#[test]
fn event_name_length_limit_is_128_bytes() {
    let at_limit = format!("e{}", "x".repeat(MAX_EVENT_NAME_BYTES - 1));
    assert_eq!(at_limit.len(), 128);
    assert_eq!(event(&with("event_name", &js(&at_limit))).event_name, at_limit);
    let spaced = format!("  {}  ", at_limit.to_uppercase());
    assert_eq!(event(&with("event_name", &js(&spaced))).event_name, at_limit);
    let over = format!("{at_limit}x");
    assert_eq!(over.len(), 129);
    assert_eq!(reason(&with("event_name", &js(&over))), Reason::InvalidEventName);
}

// ---------------------------------------------------------------------------------------------
// metadata
// ---------------------------------------------------------------------------------------------

#[test]
fn metadata_absent_or_null_is_none() {
    assert!(event(&without("metadata")).metadata.is_none());
    assert!(event(&with("metadata", "null")).metadata.is_none());
}

#[test]
fn metadata_object_is_stored_byte_identical() {
    let cases = [
        "{}",
        "{ }",
        r#"{"message_id": 99979}"#,
        r#"{"big": 123456789012345678901234567890, "edge": 9007199254740993, "neg": -9007199254740993}"#,
        r#"{"f": 1.000000000000000000000001, "e": 1E+300, "z": -0.0}"#,
        r#"{"s": "héllo wörld ✓ 😀 中文", "esc": "\u00e9\n\t\"\\\/", "pair": "\ud83d\ude00"}"#,
        r#"{"nested": {"a": [1, {"b": null, "c": [true, false]}], "e": {}}, "arr": [[], [[]]]}"#,
        "{\"k\":1,\"id\":\"x\",\"metadata\":{\"metadata\":{}}}",
        "{ \"ws\" :\t[ 1 , 2 ] }",
    ];
    for meta in cases {
        let line = with("metadata", meta);
        let e = event(&line);
        assert_eq!(e.metadata.map(RawValue::get), Some(meta), "{meta}");
    }
}

#[test]
fn non_object_metadata_is_rejected() {
    for raw in [
        "[]",
        "[{\"a\": 1}]",
        "\"x\"",
        "\"{}\"",
        "1",
        "0",
        "-2.5",
        "true",
        "false",
    ] {
        let line = with("metadata", raw);
        let r = reject(line.as_bytes());
        assert_eq!(r.reason, Reason::InvalidMetadata, "{raw}");
        assert_eq!(r.raw, line);
    }
}

#[test]
fn metadata_with_unstorable_text_is_rejected() {
    let cases = [
        r#"{"a": "\u0000"}"#,
        r#"{"a": "x\u0000y"}"#,
        r#"{"\u0000": 1}"#,
        r#"{"a": ["ok", {"b": "\u0000"}]}"#,
        r#"{"a": "\ud83d"}"#,
        r#"{"a": "\uD83D"}"#,
        r#"{"a": "\ud83dx"}"#,
        r#"{"a": "\ud83d\n"}"#,
        r#"{"a": "\ud83d\ud83d"}"#,
        r#"{"a": "\ud83d\u0041"}"#,
        r#"{"a": "\ude00"}"#,
        r#"{"a": "\ude00\ud83d"}"#,
        r#"{"a": "\\\u0000"}"#,
        r#"{"\udfff": 1}"#,
    ];
    for meta in cases {
        assert_eq!(reason(&with("metadata", meta)), Reason::InvalidMetadata, "{meta}");
    }
}

#[test]
fn metadata_paired_surrogates_and_escaped_backslashes_are_fine() {
    let cases = [
        r#"{"a": "\ud83d\ude00"}"#,
        r#"{"a": "\uD83D\uDE00"}"#,
        r#"{"a": "x\udbff\udfffy"}"#,
        r#"{"a": "\\u0000"}"#,
        r#"{"a": "\\\\u0000"}"#,
        r#"{"a": "\\ud83d"}"#,
        r#"{"\\u0000": "\u0001"}"#,
        r#"{"a": "\u0001\u00e9\uffff"}"#,
    ];
    for meta in cases {
        let line = with("metadata", meta);
        assert_eq!(event(&line).metadata.map(RawValue::get), Some(meta), "{meta}");
    }
}

// ---------------------------------------------------------------------------------------------
// ip
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_ips_are_kept() {
    let cases = [
        ("\"204.116.116.31\"", IpAddr::V4(Ipv4Addr::new(204, 116, 116, 31))),
        ("\"0.0.0.0\"", IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ("\"255.255.255.255\"", IpAddr::V4(Ipv4Addr::BROADCAST)),
        ("\"::1\"", IpAddr::V6(Ipv6Addr::LOCALHOST)),
        (
            "\"2001:db8::1\"",
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ),
        (
            "\"2001:DB8:0:0:0:0:0:1\"",
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ),
        (
            "\"::ffff:1.2.3.4\"",
            IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped()),
        ),
        ("\" 10.0.0.1 \"", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
    ];
    for (raw, want) in cases {
        let line = with("ip", raw);
        let e = event(&line);
        assert_eq!(e.ip, Some(want), "{raw}");
        assert!(!e.ip_was_invalid, "{raw}");
    }
}

#[test]
fn absent_or_null_ip_is_none_and_not_invalid() {
    for line in [without("ip"), with("ip", "null")] {
        let e = event(&line);
        assert_eq!(e.ip, None);
        assert!(!e.ip_was_invalid);
        assert_eq!(tally_of(line.as_bytes()).invalid_ips, 0);
    }
}

#[test]
fn invalid_ips_become_null_and_are_counted_not_rejected() {
    let cases = [
        "\"\"",
        "\"not an ip\"",
        "\"256.1.1.1\"",
        "\"1.2.3\"",
        "\"1.2.3.4.5\"",
        "\"1.2.3.4:80\"",
        "\"1.2.3.4/24\"",
        "\"2001:db8:::1\"",
        "\"fe80::1%eth0\"",
        "\"[::1]\"",
        "\"gggg::1\"",
        "3232235777",
        "1.5",
        "true",
        "[\"1.2.3.4\"]",
        "{\"v4\": \"1.2.3.4\"}",
    ];
    for raw in cases {
        let line = with("ip", raw);
        let e = event(&line);
        assert_eq!(e.ip, None, "{raw}");
        assert!(e.ip_was_invalid, "{raw}");
        assert_base_fields_except_ip(&e);
        let t = tally_of(line.as_bytes());
        assert_eq!((t.events, t.rejects, t.invalid_ips), (1, 0, 1), "{raw}");
    }
}

#[track_caller]
fn assert_base_fields_except_ip(e: &CleanEvent<'_>) {
    assert_eq!(e.id, ID);
    assert_eq!(e.created_at, dt("2020-01-13 05:10:12"));
    assert_eq!(e.user_email, "swalker@krause.com");
    assert_eq!(e.event_name, "message_saved");
    assert_eq!(e.metadata.map(RawValue::get), Some(r#"{"message_id": 99979}"#));
}

#[test]
fn invalid_ips_in_a_file_are_tallied_including_recovered_fragments() {
    let bad_ip = with("ip", "\"999.1.1.1\"");
    let file = format!(
        "{SEED_LINE_1}\n{bad_ip}\n{{\"id\": \"x\", {bad_ip}\n{}\n",
        with("ip", "42")
    );
    let t = tally_of(file.as_bytes());
    assert_eq!(
        t,
        FileTally {
            lines: 4,
            events: 4,
            rejects: 1,
            recovered: 1,
            invalid_ips: 3,
            blank_lines: 0,
        }
    );
    assert_invariant(&t);
}

// ---------------------------------------------------------------------------------------------
// Other keys
// ---------------------------------------------------------------------------------------------

#[test]
fn other_top_level_keys_are_dropped() {
    let line = record(&[
        ("user_id", Some("12345678901234567890123")),
        (
            "extra",
            Some(r#"{"nested": [1, 2, {"deep": "\u0000"}], "s": "\ud83d"}"#),
        ),
        ("ID", Some("\"not-a-uuid\"")),
        ("Metadata", Some("[1]")),
        ("flag", Some("null")),
    ]);
    assert_base_event(&event(&line));
    // Extra keys before the known ones, too.
    let line = format!("{{\"first\": [\"x\"], {}", &SEED_LINE_1[1..]);
    assert_base_event(&event(&line));
}

// ---------------------------------------------------------------------------------------------
// Reason precedence
// ---------------------------------------------------------------------------------------------

#[test]
fn reasons_follow_check_order_id_created_at_email_event_name_metadata() {
    let bad: [(&str, &str); 6] = [
        ("id", "\"nope\""),
        ("created_at", "\"yesterday\""),
        ("user_email", "\"nobody\""),
        ("event_name", "\"1bad\""),
        ("metadata", "[]"),
        ("ip", "\"bad ip\""),
    ];
    let expected = [
        Reason::InvalidId,
        Reason::InvalidCreatedAt,
        Reason::InvalidEmail,
        Reason::InvalidEventName,
        Reason::InvalidMetadata,
    ];
    for (fixed, want) in expected.iter().enumerate() {
        let changes: Vec<(&str, Option<&str>)> = bad[fixed..].iter().map(|(k, v)| (*k, Some(*v))).collect();
        assert_eq!(reason(&record(&changes)), *want, "first {fixed} fields fixed");
    }
    // With every rejecting field fixed, the bad ip alone does not reject.
    let line = with("ip", "\"bad ip\"");
    let e = event(&line);
    assert!(e.ip_was_invalid);
}

#[test]
fn missing_fields_follow_the_same_order() {
    let order = ["id", "created_at", "user_email", "event_name"];
    let expected = [
        Reason::MissingId,
        Reason::MissingCreatedAt,
        Reason::MissingUserEmail,
        Reason::MissingEventName,
    ];
    for (fixed, want) in expected.iter().enumerate() {
        let mut changes: Vec<(&str, Option<&str>)> = order[fixed..].iter().map(|k| (*k, None)).collect();
        changes.push(("metadata", Some("1")));
        assert_eq!(reason(&record(&changes)), *want, "first {fixed} fields present");
    }
}

#[test]
fn precedence_mixes_missing_invalid_and_out_of_range() {
    // Out-of-range created_at beats a bad email; invalid id beats missing created_at.
    let line = record(&[
        ("created_at", Some("\"1999-01-01 00:00:00\"")),
        ("user_email", Some("\"x\"")),
    ]);
    assert_eq!(reason(&line), Reason::CreatedAtOutOfRange);
    let line = record(&[("id", Some("1")), ("created_at", None)]);
    assert_eq!(reason(&line), Reason::InvalidId);
    let line = record(&[("user_email", None), ("event_name", Some("\"1\""))]);
    assert_eq!(reason(&line), Reason::MissingUserEmail);
    let line = record(&[("event_name", None), ("metadata", Some(r#"{"a": "\u0000"}"#))]);
    assert_eq!(reason(&line), Reason::MissingEventName);
    // Key order in the line does not matter: checks run in the fixed order.
    let line = r#"{"metadata": 1, "event_name": "1", "user_email": "x", "created_at": "x", "id": "x"}"#;
    assert_eq!(reason(line), Reason::InvalidId);
}

// ---------------------------------------------------------------------------------------------
// Reject raw text
// ---------------------------------------------------------------------------------------------

#[test]
fn reject_raw_is_the_whole_short_line() {
    let line = with("id", "\"nope\"");
    assert_eq!(reject(line.as_bytes()).raw, line);
    // Untrimmed: the raw text is the line as read.
    let line = format!("  {}  ", with("id", "\"nope\""));
    assert_eq!(reject(line.as_bytes()).raw, line);
}

#[test]
fn reject_raw_is_cut_to_max_raw_bytes() {
    let line = format!("{{\"id\": {}", "x".repeat(10_000));
    let r = reject(line.as_bytes());
    assert_eq!(r.reason, Reason::MalformedJson);
    assert_eq!(r.raw, &line[..MAX_RAW_BYTES]);

    let line = with("id", &js(&"x".repeat(10_000)));
    let r = reject(line.as_bytes());
    assert_eq!(r.reason, Reason::InvalidId);
    assert_eq!(r.raw.len(), MAX_RAW_BYTES);
    assert_eq!(r.raw, &line[..MAX_RAW_BYTES]);
}

/// A malformed line whose byte `MAX_RAW_BYTES` falls `into` bytes inside the character `c`.
fn straddling(c: char, into: usize, tail: &str) -> String {
    let before = MAX_RAW_BYTES - into;
    format!("{}{c}{tail}", "x".repeat(before))
}

#[test]
fn reject_raw_is_cut_at_a_char_boundary() {
    for c in ['é', '€', '😀'] {
        for into in 1..c.len_utf8() {
            let line = straddling(c, into, "yyyy");
            let r = reject(line.as_bytes());
            assert_eq!(r.reason, Reason::MalformedJson);
            assert_eq!(r.raw.len(), MAX_RAW_BYTES - into, "{c} {into}");
            assert!(r.raw.bytes().all(|b| b == b'x'));
        }
        // A character ending exactly at the limit is kept.
        let line = straddling(c, c.len_utf8(), "yyyy");
        let r = reject(line.as_bytes());
        assert_eq!(r.raw.len(), MAX_RAW_BYTES);
        assert!(r.raw.ends_with(c));
    }
}

#[test]
fn byte_level_reject_raw_is_cut_at_a_char_boundary_too() {
    // record_too_large and invalid_utf8 rejects are cut from bytes: a valid character
    // straddling the limit is dropped whole, never turned into U+FFFD.
    for c in ['é', '€', '😀'] {
        for into in 1..c.len_utf8() {
            let mut line = straddling(c, into, "").into_bytes();
            line.resize(MAX_LINE_BYTES + 1, b'y');
            let r = reject(&line);
            assert_eq!(r.reason, Reason::RecordTooLarge);
            assert_eq!(r.raw.len(), MAX_RAW_BYTES - into, "{c} {into}");
            assert!(r.raw.bytes().all(|b| b == b'x'), "{c} {into}");

            let mut line = straddling(c, into, "yyyy").into_bytes();
            line.push(0xFF);
            let r = reject(&line);
            assert_eq!(r.reason, Reason::InvalidUtf8);
            assert_eq!(r.raw.len(), MAX_RAW_BYTES - into, "{c} {into}");
            assert!(r.raw.bytes().all(|b| b == b'x'), "{c} {into}");
        }
    }
    // An invalid sequence at the limit is replaced, and the replacement kept when it fits.
    let mut line = vec![b'x'; MAX_RAW_BYTES - 3];
    line.extend_from_slice(b"\xF0\x9F\x98yyyy");
    let r = reject(&line);
    assert_eq!(r.reason, Reason::InvalidUtf8);
    assert_eq!(r.raw.len(), MAX_RAW_BYTES);
    assert!(r.raw.ends_with("x\u{FFFD}"));
}

#[test]
fn reject_raw_replaces_nul_with_replacement_character() {
    let line = "{\"id\": \"a\0b\"}";
    let r = reject(line.as_bytes());
    assert_eq!(r.reason, Reason::MalformedJson);
    assert_eq!(r.raw, "{\"id\": \"a\u{FFFD}b\"}");

    let r = reject(b"{\"id\": \"\0\xFF\"}");
    assert_eq!(r.reason, Reason::InvalidUtf8);
    assert_eq!(r.raw, "{\"id\": \"\u{FFFD}\u{FFFD}\"}");

    // A replacement that would overflow the limit is cut at a character boundary.
    let mut line = "x".repeat(MAX_RAW_BYTES - 1);
    line.push('\0');
    line.push_str("yyyy");
    let r = reject(line.as_bytes());
    assert_eq!(r.raw, "x".repeat(MAX_RAW_BYTES - 1));
    let mut line = "x".repeat(MAX_RAW_BYTES - 3);
    line.push('\0');
    line.push_str("yyyy");
    let r = reject(line.as_bytes());
    assert_eq!(r.raw, format!("{}\u{FFFD}", "x".repeat(MAX_RAW_BYTES - 3)));
}

#[test]
fn recovered_prefix_and_fragment_raw_are_limited_too() {
    let prefix = format!("{{\"id\": \"{}", "é".repeat(3000));
    let fragment = with("metadata", &format!("{{\"p\": \"{}\"}}", "€".repeat(3000)));
    let fragment = fragment.replace("\"message_saved\"", "\"1bad\"");
    let line = format!("{prefix}{fragment}");
    match clean(line.as_bytes()) {
        LineOutcome::Recovered {
            prefix: Err(p),
            fragment: Err(f),
        } => {
            assert_eq!(p.reason, Reason::MalformedJson);
            assert_eq!(p.raw, &prefix[..MAX_RAW_BYTES]);
            assert_eq!(f.reason, Reason::InvalidEventName);
            assert!(fragment.starts_with(&*f.raw));
            assert!(f.raw.len() <= MAX_RAW_BYTES && f.raw.len() > MAX_RAW_BYTES - 3);
            assert!(f.raw.ends_with('€'));
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// FileTally and clean_bytes
// ---------------------------------------------------------------------------------------------

/// One line of each kind; returns the lines and the expected tally.
fn mixed_lines() -> (Vec<Vec<u8>>, FileTally) {
    let lines: Vec<Vec<u8>> = vec![
        SEED_LINE_1.as_bytes().to_vec(),                                     // event
        b"".to_vec(),                                                        // blank
        b"   \t".to_vec(),                                                   // blank
        SEED_LINE_2.as_bytes().to_vec(),                                     // recovered: reject + event
        format!("{{\"id\": \"x\", {}", with("metadata", "[]")).into_bytes(), // recovered: 2 rejects
        b"{\"id\": ".to_vec(),                                               // malformed
        b"[1, 2, 3]".to_vec(),                                               // not an object
        b"{\"id\": \"\xFF\"}".to_vec(),                                      // invalid utf8
        without("id").into_bytes(),                                          // missing id
        with("ip", "\"nope\"").into_bytes(),                                 // event, invalid ip
        with("created_at", "\"1999-01-01 00:00:00\"").into_bytes(),          // out of range
    ];
    let tally = FileTally {
        lines: 11,
        blank_lines: 2,
        events: 3,
        rejects: 8,
        recovered: 2,
        invalid_ips: 1,
    };
    (lines, tally)
}

#[test]
fn mixed_file_tally_and_invariant() {
    let (lines, want) = mixed_lines();
    let file = lines.join(&b'\n');
    let t = tally_of(&file);
    assert_eq!(t, want);
    assert_invariant(&t);
}

#[test]
fn crlf_file_tallies_like_lf_file() {
    let (lines, want) = mixed_lines();
    let lf = lines.join(&b'\n');
    let mut crlf = lines.join(&b"\r\n"[..]);
    crlf.extend_from_slice(b"\r\n");
    let (t_crlf, crlf_outcomes) = outcomes(&crlf);
    assert_eq!(t_crlf, want);
    assert_invariant(&t_crlf);
    // Every event is identical to the LF file's.
    let (_, lf_outcomes) = outcomes(&lf);
    for ((n, a), (m, b)) in lf_outcomes.iter().zip(&crlf_outcomes) {
        assert_eq!(n, m);
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "line {n}");
    }
}

#[test]
fn bom_file_loads_every_line() {
    let file = format!("\u{FEFF}{SEED_LINE_1}\n{SEED_LINE_1}\n");
    let t = tally_of(file.as_bytes());
    assert_eq!(
        t,
        FileTally {
            lines: 2,
            events: 2,
            ..FileTally::default()
        }
    );
    let file = format!("\u{FEFF}{SEED_LINE_1}\r\n{SEED_LINE_2}\r\n");
    let t = tally_of(file.as_bytes());
    assert_eq!(
        t,
        FileTally {
            lines: 2,
            events: 2,
            rejects: 1,
            recovered: 1,
            ..FileTally::default()
        }
    );
    assert_invariant(&t);
}

#[test]
fn file_without_trailing_newline_counts_its_last_line() {
    let file = format!("{SEED_LINE_1}\n{SEED_LINE_1}");
    let (t, all) = outcomes(file.as_bytes());
    assert_eq!((t.lines, t.events), (2, 2));
    assert_eq!(all.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2]);
    // With the newline there is no extra empty line; an empty last line before it is one blank.
    assert_eq!(tally_of(format!("{file}\n").as_bytes()).lines, 2);
    let t = tally_of(format!("{file}\n\n").as_bytes());
    assert_eq!((t.lines, t.blank_lines, t.events), (3, 1, 2));
    // A lone last line without newline, including a rejected one.
    let t = tally_of(b"{\"id\": ");
    assert_eq!((t.lines, t.rejects), (1, 1));
}

#[test]
fn empty_file_has_no_lines() {
    let mut calls = 0;
    let t = clean_bytes(&cleaner(), b"", |_, _| calls += 1);
    assert_eq!(t, FileTally::default());
    assert_eq!(calls, 0);
    // A single newline is one blank line.
    assert_eq!(
        tally_of(b"\n"),
        FileTally {
            lines: 1,
            blank_lines: 1,
            ..FileTally::default()
        }
    );
}

#[test]
fn line_numbers_are_one_based_and_sequential() {
    let (lines, _) = mixed_lines();
    let file = lines.join(&b'\n');
    let (_, all) = outcomes(&file);
    let numbers: Vec<u64> = all.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=11).collect::<Vec<u64>>());
}

#[test]
fn tally_merge_adds_every_count() {
    let (lines, one) = mixed_lines();
    let mut total = one;
    total.merge(&tally_of(&lines.join(&b'\n')));
    assert_eq!(
        total,
        FileTally {
            lines: 22,
            blank_lines: 4,
            events: 6,
            rejects: 16,
            recovered: 4,
            invalid_ips: 2,
        }
    );
    assert_invariant(&total);
}

#[test]
fn reason_codes_are_stable() {
    let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        codes,
        [
            "record_too_large",
            "invalid_utf8",
            "malformed_json",
            "not_an_object",
            "missing_id",
            "invalid_id",
            "missing_created_at",
            "invalid_created_at",
            "created_at_out_of_range",
            "missing_user_email",
            "invalid_email",
            "missing_event_name",
            "invalid_event_name",
            "unknown_event_type",
            "invalid_metadata",
            "nesting_too_deep",
            "metadata_value_too_long",
            "metadata_number_out_of_range",
            "missing_metadata_key",
            "invalid_gzip",
        ]
    );
    assert_eq!(Reason::MissingUserEmail.to_string(), "missing_user_email");
}

/// The reason codes in the cleaning-contract table (docs/cleaning-contract.md), in table order.
fn readme_reasons() -> Vec<String> {
    let doc = include_str!("../../docs/cleaning-contract.md");
    let table = doc
        .split("## Cleaning contract")
        .nth(1)
        .and_then(|s| s.split("\n\n| outcome | when |").nth(1))
        .and_then(|s| s.split("\n\n").next())
        .expect("docs/cleaning-contract.md has a cleaning-contract table");
    let mut codes = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| ")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        for code in first.split('`').skip(1).step_by(2) {
            codes.push(code.to_owned());
        }
    }
    codes
}

#[test]
fn readme_table_lists_every_reason_in_check_order() {
    let documented: Vec<String> = readme_reasons()
        .into_iter()
        .filter(|c| Reason::ALL.iter().any(|r| r.as_str() == c))
        .collect();
    let code: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    // Every reason is documented once.
    let mut sorted_doc = documented.clone();
    sorted_doc.sort();
    let mut sorted_code: Vec<String> = code.iter().map(|c| (*c).to_owned()).collect();
    sorted_code.sort();
    assert_eq!(sorted_doc, sorted_code);
    // The table groups the four `missing_*` codes in one row ("absent or null"); the
    // code checks each field's presence just before its value. Apart from that row, the
    // table's order is the check order.
    let not_missing = |c: &&str| !c.starts_with("missing_");
    let doc_order: Vec<&str> = documented
        .iter()
        .map(String::as_str)
        .filter(not_missing)
        .collect();
    let code_order: Vec<&str> = code.iter().copied().filter(not_missing).collect();
    assert_eq!(doc_order, code_order);
    for (missing, invalid) in [
        (Reason::MissingId, Reason::InvalidId),
        (Reason::MissingCreatedAt, Reason::InvalidCreatedAt),
        (Reason::MissingUserEmail, Reason::InvalidEmail),
        (Reason::MissingEventName, Reason::InvalidEventName),
    ] {
        let at = |r: Reason| Reason::ALL.iter().position(|x| *x == r);
        assert_eq!(
            at(missing).map(|i| i + 1),
            at(invalid),
            "{missing} just before {invalid}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Property-style: mutated lines never panic and the tally always balances
// ---------------------------------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

const GARBAGE: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b" ",
    b"\t",
    b"\r",
    b"\0",
    b"\xFF",
    b"\xC3",
    b"\xEF\xBB\xBF",
    b"{\"id\"",
    b"{ \"id\": ",
    b"\\u0000",
    b"\\ud83d",
    b"null",
    b"\xF0\x9F\x98\x80",
    b"\xE2\x82",
    b"1e999",
];

fn mutate(rng: &mut XorShift, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut line = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(3) {
        match rng.below(6) {
            // Truncate.
            0 => line.truncate(rng.below(line.len() + 1)),
            // Flip a byte.
            1 if !line.is_empty() => {
                let at = rng.below(line.len());
                line[at] ^= u8::try_from(1 + rng.below(255)).unwrap();
            }
            // Insert garbage.
            2 => {
                let at = rng.below(line.len() + 1);
                let g = GARBAGE[rng.below(GARBAGE.len())];
                line.splice(at..at, g.iter().copied());
            }
            // Glue another seed (or its truncation) on.
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut_at = rng.below(line.len() + 1);
                line.truncate(cut_at);
                line.extend_from_slice(other);
            }
            // Delete a span.
            4 if !line.is_empty() => {
                let a = rng.below(line.len());
                let b = a + rng.below(line.len() - a + 1);
                line.drain(a..b);
            }
            // Random bytes.
            _ => {
                let at = rng.below(line.len() + 1);
                let bytes: Vec<u8> = (0..rng.below(8)).map(|_| rng.next().to_le_bytes()[0]).collect();
                line.splice(at..at, bytes);
            }
        }
    }
    line
}

#[track_caller]
fn check_reject(r: &Reject<'_>) {
    assert!(r.raw.len() <= MAX_RAW_BYTES, "raw too long: {}", r.raw.len());
    assert!(!r.raw.contains('\0'));
}

#[track_caller]
fn check_event(e: &CleanEvent<'_>) {
    assert!(
        fields::normalise_id(e.id.clone()).is_some_and(|id| id == e.id),
        "{e:?}"
    );
    assert!(e.created_at >= fields::min_created_at());
    assert!(e.created_at <= fields::latest_created_at(run_start()));
    assert_eq!(e.created_at.and_utc().timestamp_subsec_nanos() % 1000, 0);
    assert!(fields::normalise_email(e.user_email.clone()).is_some_and(|m| m == e.user_email));
    assert!(fields::normalise_event_name(e.event_name.clone()).is_some_and(|n| n == e.event_name));
    if let Some(m) = e.metadata {
        assert!(m.get().starts_with('{') && metadata::check(m.get()).is_ok());
    }
    assert!(!(e.ip.is_some() && e.ip_was_invalid));
}

#[test]
fn mutated_lines_never_panic_and_the_tally_balances() {
    let seeds: Vec<Vec<u8>> = vec![
        SEED_LINE_1.as_bytes().to_vec(),
        SEED_LINE_2.as_bytes().to_vec(),
        format!("{SEED_LINE_1}\r").into_bytes(),
        with(
            "metadata",
            r#"{"s": "\ud83d\ude00 é", "n": [1, {"x": 18446744073709551616}]}"#,
        )
        .into_bytes(),
        with("created_at", "\"2026-11-29T12:59:59.123456789+01:00\"").into_bytes(),
        with("ip", "\"2001:db8::1\"").into_bytes(),
        without("metadata").into_bytes(),
        b"   ".to_vec(),
    ];
    let cleaner = cleaner();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut tally = FileTally::default();
    let mut file = Vec::new();
    let mut kinds = [0u64; 4];
    for i in 0..5000u64 {
        let line = mutate(&mut rng, &seeds);
        let too_long = rng.below(50) == 0;
        let line_no = if rng.below(4) == 0 { 1 } else { i + 2 };
        let outcome = cleaner.clean_line(line_no, &line, too_long);
        match &outcome {
            LineOutcome::Blank => kinds[0] += 1,
            LineOutcome::Event(e) => {
                kinds[1] += 1;
                check_event(e);
            }
            LineOutcome::Reject(r) => {
                kinds[2] += 1;
                check_reject(r);
                if too_long {
                    assert_eq!(r.reason, Reason::RecordTooLarge);
                }
            }
            LineOutcome::Recovered { prefix, fragment } => {
                kinds[3] += 1;
                for record in [prefix, fragment] {
                    match record {
                        Ok(e) => check_event(e),
                        Err(r) => check_reject(r),
                    }
                }
            }
        }
        assert!(!too_long || matches!(outcome, LineOutcome::Reject(_)));
        tally.add(&outcome);
        assert_invariant(&tally);
        assert_eq!(tally.lines, i + 1);

        file.extend_from_slice(&line);
        file.push(b'\n');
    }
    // The mutations exercise every kind of outcome.
    assert!(kinds.iter().all(|&k| k > 0), "{kinds:?}");

    // The same lines as one file: clean_bytes splits on every LF the mutations inserted too.
    let t = clean_bytes(&cleaner, &file, |_, o| match o {
        LineOutcome::Reject(r) => check_reject(&r),
        LineOutcome::Event(e) => check_event(&e),
        _ => {}
    });
    assert_invariant(&t);
    let newlines = u64::try_from(file.iter().filter(|b| **b == b'\n').count()).unwrap();
    assert_eq!(t.lines, newlines);
}

#[test]
fn metadata_strings_longer_than_a_super_value_are_rejected() {
    let c = cleaner();
    let max = metadata::MAX_SUPER_STRING_BYTES;
    let ok_value = format!("{{\"note\": \"{}\"}}", "x".repeat(max));
    match c.clean_line(1, with("metadata", &ok_value).as_bytes(), false) {
        LineOutcome::Event(e) => assert_eq!(e.metadata.unwrap().get(), ok_value),
        other => panic!("a {max}-byte string must load: {other:?}"),
    }
    let long_value = format!("{{\"a\": {{\"note\": \"{}\"}}}}", "x".repeat(max + 1));
    assert_eq!(
        reason(&with("metadata", &long_value)),
        Reason::MetadataValueTooLong
    );
    let long_key = format!("{{\"{}\": 1}}", "k".repeat(max + 1));
    assert_eq!(reason(&with("metadata", &long_key)), Reason::MetadataValueTooLong);
    // Escapes count once decoded: 40,000 escaped letters are 240,000 raw bytes, 40,000 decoded.
    let escaped = format!("{{\"q\": \"{}\"}}", "\\u0041".repeat(40_000));
    assert!(matches!(
        c.clean_line(1, with("metadata", &escaped).as_bytes(), false),
        LineOutcome::Event(_)
    ));
    // A long string outside metadata (a dropped key) does not matter.
    let line = with("extra", &format!("\"{}\"", "y".repeat(max + 10)));
    assert!(matches!(
        c.clean_line(1, line.as_bytes(), false),
        LineOutcome::Event(_)
    ));
}

#[test]
fn nesting_deeper_than_super_allows_has_its_own_reason() {
    let max = metadata::MAX_SUPER_DEPTH;
    // The metadata object is level 1: 999 arrays inside it reach the limit exactly.
    let at_limit = format!("{{\"d\": {}1{}}}", "[".repeat(max - 1), "]".repeat(max - 1));
    assert!(matches!(
        cleaner().clean_line(1, with("metadata", &at_limit).as_bytes(), false),
        LineOutcome::Event(_)
    ));
    let over = format!("{{\"d\": {}1{}}}", "[".repeat(max), "]".repeat(max));
    assert_eq!(reason(&with("metadata", &over)), Reason::NestingTooDeep);
    // Brackets inside strings do not count.
    let in_string = format!("{{\"d\": \"{}\"}}", "[".repeat(max + 5));
    assert!(matches!(
        cleaner().clean_line(1, with("metadata", &in_string).as_bytes(), false),
        LineOutcome::Event(_)
    ));
    // Outside metadata nesting does not matter: a deep array is still just not an object.
    let deep = format!("{}1{}", "[".repeat(2000), "]".repeat(2000));
    assert_eq!(reason(&deep), Reason::NotAnObject);
}

// ---------------------------------------------------------------------------------------------
// Metadata numbers, repeated keys and object size: what either warehouse would refuse
// ---------------------------------------------------------------------------------------------

#[test]
fn metadata_numbers_within_both_warehouses_ranges_are_accepted() {
    let cases = [
        "0".to_owned(),
        "-0".to_owned(),
        "0.0".to_owned(),
        "-0.000e5".to_owned(),
        "1".to_owned(),
        "-1.5".to_owned(),
        "12345e-5".to_owned(),
        "99979".to_owned(),
        "9223372036854775808".to_owned(),
        "123456789012345678901234567890123456789012345678901234567890".to_owned(),
        "1.000000000000000000000001".to_owned(),
        "1e307".to_owned(),
        "1E+307".to_owned(),
        "9.999999e307".to_owned(),
        "-9.999999E307".to_owned(),
        "1e-307".to_owned(),
        "-1e-307".to_owned(),
        "0.1e-306".to_owned(),
        "1e0000000000000000000000000000000000000307".to_owned(),
        // 308 digits: the largest magnitude below 1e308.
        "9".repeat(308),
        format!("1{}", "0".repeat(307)),
        // 1e-307 written out, and 16,383 digits after the point.
        format!("0.{}1", "0".repeat(306)),
        format!("1.{}", "0".repeat(16_383)),
        format!("1.{}e5", "0".repeat(16_388)),
    ];
    for n in &cases {
        assert!(metadata::number_ok(n), "{n} should be accepted");
        let meta = format!(r#"{{"n": {n}, "a": [{n}, {{"b": {n}}}]}}"#);
        let line = with("metadata", &meta);
        assert_eq!(event(&line).metadata.map(RawValue::get), Some(meta.as_str()));
    }
}

#[test]
fn metadata_numbers_out_of_range_are_rejected_with_their_own_reason() {
    let cases = [
        // The issue's examples: overflow, underflow, and 140,000 digits.
        "1e999999".to_owned(),
        "1e-999999".to_owned(),
        "1".repeat(140_000),
        // Past float8's documented range (around 1E-307 to 1E+308).
        "1e308".to_owned(),
        "1E+400".to_owned(),
        "-1.5e308".to_owned(),
        format!("1{}", "0".repeat(308)),
        "1e-308".to_owned(),
        "9.9e-308".to_owned(),
        format!("0.{}1", "0".repeat(307)),
        format!("1e{}", "9".repeat(40)),
        format!("1e-{}", "9".repeat(40)),
        // Zero with an exponent past the range, either way.
        "0e999999".to_owned(),
        "0e-999999".to_owned(),
        // More than 16,383 digits after the point (PostgreSQL's numeric scale), even
        // when they are trailing zeros of 1, or the exponent moves the point left.
        format!("1.{}", "0".repeat(16_384)),
        format!("1.{}", "1".repeat(16_384)),
        "1e-16384".to_owned(),
        format!("1.{}e-2", "0".repeat(16_382)),
    ];
    for n in &cases {
        assert!(
            !metadata::number_ok(n),
            "{} should be refused",
            &n[..n.len().min(40)]
        );
        for meta in [
            format!(r#"{{"n": {n}}}"#),
            format!(r#"{{"a": [1, {{"b": [{n}]}}], "c": 2}}"#),
        ] {
            let line = with("metadata", &meta);
            let r = reject(line.as_bytes());
            assert_eq!(r.reason, Reason::MetadataNumberOutOfRange);
            assert_eq!(r.reason.as_str(), "metadata_number_out_of_range");
        }
    }
}

#[test]
fn the_issues_poison_line_is_rejected() {
    let line = r#"{"id":"00000001-0000-4000-8000-000000000001","created_at":"2020-01-13 05:10:12","user_email":"a@b.com","event_name":"x","metadata":{"n":1e999999}}"#;
    let r = reject(line.as_bytes());
    assert_eq!(r.reason, Reason::MetadataNumberOutOfRange);
    assert_eq!(r.raw, line);
}

#[test]
fn numbers_outside_metadata_or_inside_strings_do_not_matter() {
    // In a string, in a dropped key, as a string key: not a number SUPER stores.
    let line = record(&[
        ("metadata", Some(r#"{"s": "1e999999", "1e999999": true}"#)),
        ("extra", Some("1e999999")),
    ]);
    assert!(matches!(clean(line.as_bytes()), LineOutcome::Event(_)));
    // An ip that is a huge number is just not an ip.
    let line = with("ip", "1e999999");
    let e = event(&line);
    assert!(e.ip_was_invalid);
}

#[test]
fn metadata_problems_follow_the_table_order() {
    let max = metadata::MAX_SUPER_DEPTH;
    let deep = format!("{}1{}", "[".repeat(max), "]".repeat(max));
    let long = js(&"x".repeat(metadata::MAX_SUPER_STRING_BYTES + 1));
    let cases = [
        // Unstorable text beats everything, wherever it is.
        (
            format!(r#"{{"n": 1e999, "l": {long}, "d": {deep}, "z": "\u0000"}}"#),
            Reason::InvalidMetadata,
        ),
        (
            format!(r#"{{"n": 1e999, "l": {long}, "d": {deep}, "n": 1}}"#),
            Reason::InvalidMetadata,
        ),
        // Then nesting, then string length, then numbers.
        (
            format!(r#"{{"n": 1e999, "l": {long}, "d": {deep}}}"#),
            Reason::NestingTooDeep,
        ),
        (
            format!(r#"{{"n": 1e999, "l": {long}}}"#),
            Reason::MetadataValueTooLong,
        ),
        (r#"{"n": 1e999}"#.to_owned(), Reason::MetadataNumberOutOfRange),
    ];
    for (meta, want) in cases {
        assert_eq!(
            reason(&with("metadata", &meta)),
            want,
            "{}",
            &meta[..meta.len().min(60)]
        );
    }
}

#[test]
fn metadata_with_a_key_repeated_in_one_object_is_invalid() {
    for meta in [
        r#"{"a": 1, "a": 2}"#,
        r#"{"a": 1, "b": 2, "a": 1}"#,
        r#"{"a": 1, "\u0061": 2}"#,
        r#"{"x": {"a": {}, "a": []}}"#,
        r#"{"x": [{"a": 1, "a": 1}]}"#,
        r#"{"x": {"y": {"z": 1}, "a": 1, "a": 2}}"#,
    ] {
        assert_eq!(reason(&with("metadata", meta)), Reason::InvalidMetadata, "{meta}");
    }
    // Past the small-set size too.
    let many: Vec<String> = (0..200).map(|i| format!(r#""k{i}": {i}"#)).collect();
    let ok = format!("{{{}}}", many.join(", "));
    assert!(matches!(
        clean(with("metadata", &ok).as_bytes()),
        LineOutcome::Event(_)
    ));
    let dup = format!("{{{}, \"k150\": 0}}", many.join(", "));
    assert_eq!(reason(&with("metadata", &dup)), Reason::InvalidMetadata);
    let nested = format!(r#"{{"x": {ok}, "y": {{"k1": 1, "z": {ok}}}, "k1": 2}}"#);
    assert!(matches!(
        clean(with("metadata", &nested).as_bytes()),
        LineOutcome::Event(_)
    ));
}

#[test]
fn metadata_may_repeat_a_key_across_objects() {
    for meta in [
        r#"{"a": {"a": {"a": 1}}}"#,
        r#"{"x": [{"a": 1}, {"a": 2}], "a": 3}"#,
        r#"{"x": {"a": 1}, "y": {"a": 2}}"#,
        r#"{"a": "a", "b": ["a", "a"], "c": {"b": "a"}}"#,
        r#"{"\\u0061": 1, "a": 2}"#,
    ] {
        let line = with("metadata", meta);
        assert_eq!(event(&line).metadata.map(RawValue::get), Some(meta), "{meta}");
    }
}

#[test]
fn metadata_as_large_as_a_line_allows_is_stored() {
    // The biggest metadata a line can carry is far below SUPER's object limits (checked at
    // compile time); it loads as sent.
    let line = padded(MAX_LINE_BYTES);
    let e = event(&line);
    let m = e.metadata.unwrap().get();
    assert!(m.len() > MAX_LINE_BYTES - 300);
    assert!(m.len() * 2 <= metadata::MAX_COPY_JSON_OBJECT_BYTES);
}

#[test]
fn deeply_nested_metadata_is_checked_in_bounded_time() {
    // Half a million levels: rejected as too deep, without recursion.
    let n = (MAX_LINE_BYTES - 300) / 2;
    let meta = format!("{{\"d\": {}{}}}", "[".repeat(n), "]".repeat(n));
    assert_eq!(reason(&with("metadata", &meta)), Reason::NestingTooDeep);
    // Objects all the way down, each with the same key: too deep, not a repeated key.
    let n = (MAX_LINE_BYTES - 300) / 7;
    let meta = format!("{}1{}", "{\"a\": ".repeat(n), "}".repeat(n));
    assert_eq!(reason(&with("metadata", &meta)), Reason::NestingTooDeep);
}

// ---------------------------------------------------------------------------------------------
// Recovery is linear in the line's length
// ---------------------------------------------------------------------------------------------

/// Hostile lines of about `n` bytes, each built to make some step do as much as it can.
fn hostile_lines(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    let rep = |unit: &str, head: &str, tail: &str| -> Vec<u8> {
        let count = n.saturating_sub(head.len() + tail.len()) / unit.len();
        format!("{head}{}{tail}", unit.repeat(count)).into_bytes()
    };
    let depth = n / 8;
    vec![
        // The issue's line: every `{"id"` a candidate, none closed.
        ("x{\"id\": repeated", rep("{\"id\":", "x", "")),
        ("{\"id\": repeated", rep("{\"id\":", "", "")),
        // Closed at the end: the outermost candidate parses, deep.
        (
            "x{\"id\": nested and closed",
            format!("x{}1{}", "{\"id\":".repeat(depth), "}".repeat(depth)).into_bytes(),
        ),
        // Closed, but with a wrong bracket at the very end.
        (
            "x{\"id\": nested, one ] short",
            format!("x{}1{}]}}", "{\"id\":".repeat(depth), "}".repeat(depth - 1)).into_bytes(),
        ),
        // Every candidate inside a string, quotes and backslashes everywhere.
        (
            "strings of {\"id\"",
            rep("\"{\\\"id\\\":\\\\\", ", "x{\"id\": [", "]}"),
        ),
        ("backslash runs", rep("\\\\\\\\\\\"", "x{\"id\": \"", "\"}")),
        // Many complete records glued on one line.
        ("glued records", rep(SEED_LINE_1, "", "")),
        ("glued {\"id\":1}", rep("{\"id\":1}", "", "")),
        // Brackets that never balance.
        ("closers", rep("}", "x{\"id\":", "")),
        ("openers then one closer", rep("[", "x{\"id\":", "}")),
        // A huge valid record whose metadata is the whole line.
        ("large metadata", padded(n.max(400)).into_bytes()),
        (
            "metadata of many keys",
            with(
                "metadata",
                &format!(
                    "{{{}\"z\": 0}}",
                    (0..n / 16)
                        .map(|i| format!("\"k{i:07}\": 1, "))
                        .collect::<String>()
                ),
            )
            .into_bytes(),
        ),
        ("whitespace", vec![b' '; n]),
        ("not json", rep("x", "", "")),
    ]
}

fn work_of(line: &[u8]) -> usize {
    let mut work = Work::default();
    cleaner().clean_line_counted(2, line, false, &mut work);
    work.bytes
}

#[test]
fn cleaning_work_is_linear_in_the_line_length_whatever_it_holds() {
    // Every parse and scan is counted: a line of n bytes costs at most a few n. Trying
    // each `{"id"` in turn, as recovery once did, costs about n * n / 12 on the first line.
    for n in [1_000, 100_000, MAX_LINE_BYTES] {
        for (what, line) in hostile_lines(n) {
            assert!(line.len() <= MAX_LINE_BYTES, "{what}: {}", line.len());
            let work = work_of(&line);
            assert!(
                work <= 6 * line.len() + 64,
                "{what}, {} bytes: {work} bytes of work",
                line.len()
            );
        }
    }
}

/// Recovery as it was specified and first written: the leftmost `{` (at 1 or later),
/// whitespace, `"id"`, whose text parses as one object to the end of the line.
fn reference_recovery_start(text: &str) -> Option<usize> {
    (1..text.len()).find(|&start| {
        text.as_bytes()[start] == b'{'
            && text[start + 1..].trim_start().starts_with("\"id\"")
            && serde_json::from_str::<RawEvent<'_>>(&text[start..]).is_ok()
    })
}

fn linear_recovery_start(text: &str) -> Option<usize> {
    json::recovery_start(text.as_bytes(), &mut Work::default())
        .filter(|&start| serde_json::from_str::<RawEvent<'_>>(&text[start..]).is_ok())
}

#[test]
fn linear_recovery_finds_what_trying_every_fragment_finds() {
    let mut lines: Vec<String> = vec![
        SEED_LINE_2.to_owned(),
        format!("{{\"id\": \"a\", {{\"id\": \"b\", {SEED_LINE_1}"),
        format!("x{{\"id\": {SEED_LINE_1}}}"),
        format!("x{{\"id\": {{\"id\": {{\"id\": 1}}}}"),
        format!("{SEED_LINE_1}{SEED_LINE_1}"),
        format!("{SEED_LINE_1} {SEED_LINE_1}\t"),
        format!("\"{{\\\"id\\\": 1}}\" {{\"id\": \"\\\\\"}}"),
        format!("x{{\"id\": \"{{\\\"id\\\": 1}}\"}}"),
        format!("x{{\"id\": \"\\\\\\\"{{\\\"id\\\": 1}}\"}}"),
        format!("[{{\"id\": 1}}]{{\"id\": [1, {{\"id\": 2}}]}}"),
        "x{\"id\": [}".to_owned(),
        "x{\"id\": ]}".to_owned(),
        "x{\"id\":1}}".to_owned(),
        "{{\"id\":1}".to_owned(),
        "{ {\"id\":1}".to_owned(),
    ];
    let seeds: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..20_000 {
        if let Ok(text) = String::from_utf8(mutate(&mut rng, &seeds)) {
            lines.push(text);
        }
    }
    let mut recovered = 0;
    for text in &lines {
        let want = reference_recovery_start(text);
        assert_eq!(linear_recovery_start(text), want, "{text}");
        recovered += usize::from(want.is_some());
    }
    assert!(recovered > 1_000, "the lines exercise recovery: {recovered}");
}

// ---------------------------------------------------------------------------------------------
// Two complete records glued on one line
// ---------------------------------------------------------------------------------------------

const OTHER_ID: &str = "10cd6e40-cab2-432d-9e62-a8466761e307";

fn other_record() -> String {
    with("id", &js(OTHER_ID))
}

/// What the warehouse would make of a file: stage each line's rows, then keep the first
/// event per id. Returns (loaded, duplicates, staged rejects).
fn load(bytes: &[u8]) -> (FileTally, u64, u64, u64) {
    let mut ids = std::collections::HashSet::new();
    let mut staged_rejects = 0u64;
    let mut staged_events = 0u64;
    let tally = clean_bytes(&cleaner(), bytes, |_, outcome| {
        let mut line_ids = std::collections::HashSet::new();
        for row in outcome.into_rows() {
            match row {
                Ok(e) => {
                    // Never two rows with one (key, line, id): the warehouse cannot order them.
                    assert!(line_ids.insert(e.id.clone().into_owned()), "{e:?}");
                    staged_events += 1;
                    ids.insert(e.id.into_owned());
                }
                Err(_) => staged_rejects += 1,
            }
        }
    });
    let loaded = ids.len() as u64;
    assert!(staged_events <= tally.events);
    (tally, loaded, tally.events - loaded, staged_rejects)
}

#[track_caller]
fn assert_balances(t: &FileTally, loaded: u64, duplicates: u64, staged_rejects: u64) {
    assert_eq!(staged_rejects, t.rejects, "{t:?}");
    assert_eq!(
        t.lines + t.recovered,
        loaded + duplicates + t.rejects + t.blank_lines,
        "{t:?}"
    );
}

#[test]
fn two_complete_records_glued_on_one_line_both_load() {
    for sep in ["", " ", "\t ", "  "] {
        let line = format!("{SEED_LINE_1}{sep}{}", other_record());
        match clean(line.as_bytes()) {
            LineOutcome::Recovered {
                prefix: Ok(first),
                fragment: Ok(second),
            } => {
                assert_base_event(&first);
                assert_eq!(second.id, OTHER_ID);
            }
            other => panic!("{sep:?}: {other:?}"),
        }
        let (t, loaded, duplicates, staged_rejects) = load(format!("{line}\r\n").as_bytes());
        assert_eq!(
            t,
            FileTally {
                lines: 1,
                events: 2,
                recovered: 1,
                ..FileTally::default()
            }
        );
        assert_eq!((loaded, duplicates), (2, 0));
        assert_balances(&t, loaded, duplicates, staged_rejects);
    }
}

#[test]
fn a_glued_first_record_that_fails_validation_is_rejected_with_its_own_reason() {
    let first = with("user_email", "\"nobody\"");
    let line = format!("{first}{}", other_record());
    match clean(line.as_bytes()) {
        LineOutcome::Recovered {
            prefix: Err(r),
            fragment: Ok(second),
        } => {
            assert_eq!(r.reason, Reason::InvalidEmail);
            assert_eq!(r.raw, first);
            assert_eq!(second.id, OTHER_ID);
        }
        other => panic!("{other:?}"),
    }
    // A complete object without the fields is a record too, missing its id.
    let line = format!("{{\"x\": 1}}{SEED_LINE_1}");
    match clean(line.as_bytes()) {
        LineOutcome::Recovered {
            prefix: Err(r),
            fragment: Ok(e),
        } => {
            assert_eq!(r.reason, Reason::MissingId);
            assert_base_event(&e);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn glued_records_with_one_id_load_once_and_count_a_duplicate() {
    for second in [SEED_LINE_1.to_owned(), with("event_name", "\"other_name\"")] {
        let line = format!("{SEED_LINE_1}{second}");
        let rows: Vec<_> = clean(line.as_bytes()).into_rows().collect();
        assert_eq!(rows.len(), 1);
        match &rows[0] {
            Ok(e) => assert_base_event(e),
            Err(r) => panic!("{r:?}"),
        }
        let (t, loaded, duplicates, staged_rejects) = load(line.as_bytes());
        assert_eq!((t.lines, t.recovered, t.events, t.rejects), (1, 1, 2, 0));
        assert_eq!((loaded, duplicates), (1, 1));
        assert_balances(&t, loaded, duplicates, staged_rejects);
    }
    // Ids compare normalised.
    let line = format!("{SEED_LINE_1}{}", with("id", &js(&ID.to_uppercase())));
    assert_eq!(clean(line.as_bytes()).into_rows().count(), 1);
}

#[test]
fn a_broken_record_before_a_complete_one_is_still_one_reject() {
    // The seed's case is unchanged: the truncated record is malformed_json.
    let (t, loaded, duplicates, staged_rejects) = load(SEED_LINE_2.as_bytes());
    assert_eq!((t.lines, t.recovered, t.events, t.rejects), (1, 1, 1, 1));
    assert_balances(&t, loaded, duplicates, staged_rejects);
    // Two complete records before the last: only the last is recovered, the two before
    // it are one broken prefix (recovery splits a line in two, not more).
    let line = format!("{SEED_LINE_1}{SEED_LINE_1}{}", other_record());
    match clean(line.as_bytes()) {
        LineOutcome::Recovered {
            prefix: Err(r),
            fragment: Ok(e),
        } => {
            assert_eq!(r.reason, Reason::MalformedJson);
            assert_eq!(r.raw, format!("{SEED_LINE_1}{SEED_LINE_1}"));
            assert_eq!(e.id, OTHER_ID);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rows_are_staged_in_line_order() {
    let line = format!("{}{SEED_LINE_1}", other_record());
    let ids: Vec<String> = clean(line.as_bytes())
        .into_rows()
        .map(|r| r.map(|e| e.id.into_owned()).unwrap_or_default())
        .collect();
    assert_eq!(ids, [OTHER_ID, ID]);
    assert_eq!(clean(b"").into_rows().count(), 0);
    assert_eq!(clean(SEED_LINE_1.as_bytes()).into_rows().count(), 1);
    assert_eq!(clean(b"{").into_rows().count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Property: generated files, hostile lines included, never panic, and every line ends in
// exactly one place
// ---------------------------------------------------------------------------------------------

fn pick<'s>(rng: &mut XorShift, from: &[&'s str]) -> &'s str {
    from[rng.below(from.len())]
}

/// A random JSON value for metadata: numbers in and out of range, strings with storable
/// and unstorable escapes, nesting, repeated keys.
fn gen_value(rng: &mut XorShift, depth: usize) -> String {
    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-17",
        "99979",
        "1.5",
        "-0.25e-3",
        "1e307",
        "1e308",
        "1E+400",
        "1e-307",
        "1e-308",
        "1e999999",
        "1e-999999",
        "9007199254740993",
        "123456789012345678901234567890123456789012",
        "0e999",
        "0.0",
        "2.50",
    ];
    const STRINGS: &[&str] = &[
        "\"\"",
        "\"x\"",
        "\"é ü 😀\"",
        "\"\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\u0000\"",
        "\"\\ud83d\"",
        "\"\\ude00x\"",
        "\"\\\\u0000\"",
        "\"a\\\"b\"",
        "\"{\\\"id\\\": 1}\"",
        "\"[[[\"",
    ];
    let leaf = depth > 4 || rng.below(3) > 0;
    if leaf {
        return match rng.below(7) {
            0..=2 => pick(rng, NUMBERS).to_owned(),
            3..=4 => pick(rng, STRINGS).to_owned(),
            5 => pick(rng, &["true", "false", "null"]).to_owned(),
            _ if rng.below(40) == 0 => js(&"s".repeat(65_530 + rng.below(10))),
            _ if rng.below(40) == 0 => format!("1.{}", "0".repeat(16_380 + rng.below(8))),
            _ if rng.below(15) == 0 => {
                let n = 990 + rng.below(20);
                format!("{}0{}", "[".repeat(n), "]".repeat(n))
            }
            _ => "1".to_owned(),
        };
    }
    let n = rng.below(4);
    if rng.below(2) == 0 {
        let items: Vec<String> = (0..n).map(|_| gen_value(rng, depth + 1)).collect();
        format!("[{}]", items.join(", "))
    } else {
        gen_object(rng, depth, n)
    }
}

fn gen_object(rng: &mut XorShift, depth: usize, n: usize) -> String {
    const KEYS: &[&str] = &[
        "\"a\"",
        "\"b\"",
        "\"id\"",
        "\"\\u0061\"",
        "\"é\"",
        "\"metadata\"",
        "\"n\"",
    ];
    let fields: Vec<String> = (0..n)
        .map(|_| format!("{}: {}", pick(rng, KEYS), gen_value(rng, depth + 1)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// A random record: mostly valid, each field sometimes wrong, absent, or odd.
fn gen_record(rng: &mut XorShift) -> String {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut field = |rng: &mut XorShift, key: &str, good: String, bad: &[&str]| match rng.below(40) {
        0 => {}
        1 => fields.push((key.to_owned(), pick(rng, bad).to_owned())),
        2 => fields.push((key.to_owned(), "null".to_owned())),
        _ => fields.push((key.to_owned(), good)),
    };
    // 2,000 ids, some sent uppercase: duplicates within and across files.
    let id = format!("9ba671d6-5154-41c1-93b1-41dd647b{:04x}", rng.below(2_000));
    let id = js(&if rng.below(8) == 0 { id.to_uppercase() } else { id });
    field(rng, "id", id, &["\"nope\"", "1", "[]"]);
    let frac = ".1234567890123"
        .get(..rng.below(15))
        .unwrap_or_default()
        .to_owned();
    let created = format!(
        "\"2020-01-{:02}{}05:10:12{}{}\"",
        1 + rng.below(28),
        pick(rng, &[" ", "T"]),
        if frac.len() == 1 { "" } else { &frac },
        pick(rng, &["", "Z", "+02:00", "-05:30"])
    );
    field(
        rng,
        "created_at",
        created,
        &["\"1999-01-01 00:00:00\"", "\"2020-13-01 00:00:00\"", "1578892212"],
    );
    let email = js(pick(
        rng,
        &["a@b.com", " JÖRG@EXAMPLE.COM ", "ΣΊΣΥΦΟΣ@EXAMPLE.GR", "Ⱥ@b.co"],
    ));
    field(rng, "user_email", email, &["\"nobody\"", "\"a@b\"", "7"]);
    let ip = js(pick(rng, &["10.0.0.1", "::1", "999.1.1.1"]));
    field(rng, "ip", ip, &["1e999999", "[]"]);
    let name = js(pick(rng, &["page_view", " Signup ", "x"]));
    field(rng, "event_name", name, &["\"1bad\"", "\"é\""]);
    let n = rng.below(4);
    let meta = gen_object(rng, 0, n);
    field(rng, "metadata", meta, &["[]", "1", "\"{}\""]);
    if rng.below(10) == 0 {
        fields.push(("extra".to_owned(), gen_value(rng, 0)));
    }
    if rng.below(30) == 0 && !fields.is_empty() {
        let repeated = fields[rng.below(fields.len())].clone();
        fields.push(repeated);
    }
    // Field order varies; "id" first is what recovery looks for, so keep it first mostly.
    if rng.below(5) == 0 {
        let len = fields.len();
        fields.rotate_left(rng.below(len + 1).min(len));
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", body.join(pick(rng, &[", ", ",", " , "])))
}

/// A random line: records, glued and truncated records, hostile and random bytes.
fn gen_line(rng: &mut XorShift, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(20) {
        0..=7 => gen_record(rng).into_bytes(),
        8..=9 => {
            let a = gen_record(rng);
            let b = gen_record(rng);
            format!("{a}{}{b}", pick(rng, &["", " ", "\t"])).into_bytes()
        }
        10 => {
            let a = gen_record(rng);
            let cut = rng.below(a.len());
            let cut = (0..=cut).rev().find(|&i| a.is_char_boundary(i)).unwrap_or(0);
            format!("{}{}", &a[..cut], gen_record(rng)).into_bytes()
        }
        11..=13 => mutate(rng, seeds),
        14 => {
            let n = 1 + rng.below(20_000);
            let lines = hostile_lines(n);
            lines[rng.below(lines.len())].1.clone()
        }
        15 => pick(rng, &["", " ", "\t", "\r", " \r", "\u{3000}"])
            .as_bytes()
            .to_vec(),
        16 => (0..rng.below(64)).map(|_| rng.next().to_le_bytes()[0]).collect(),
        17 => format!("[{}]", gen_record(rng)).into_bytes(),
        18 => format!("{}\r", gen_record(rng)).into_bytes(),
        _ => {
            let mut line = gen_record(rng).into_bytes();
            let at = rng.below(line.len() + 1);
            line.insert(at, pick(rng, &["\u{0}", "\u{FEFF}", "é"]).as_bytes()[0]);
            line
        }
    }
}

/// What became of every line of one load, as the warehouse would count it.
#[derive(Debug, Default, PartialEq)]
struct Accounted {
    loaded: u64,
    duplicates: u64,
    rejects: u64,
    blank: u64,
}

#[test]
fn generated_files_never_panic_and_every_line_ends_in_exactly_one_place() {
    let seeds: Vec<Vec<u8>> = vec![
        SEED_LINE_1.as_bytes().to_vec(),
        SEED_LINE_2.as_bytes().to_vec(),
        format!("{SEED_LINE_1}{SEED_LINE_1}").into_bytes(),
        with("metadata", r#"{"n": [1e5, {"a": 1}], "s": "\ud83d\ude00"}"#).into_bytes(),
    ];
    let cleaner = cleaner();
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    // invalid_gzip is not a line check; the event-type reasons need `[event_types]`
    // configured (their own tests are below).
    let codes: Vec<Reason> = Reason::ALL
        .iter()
        .copied()
        .filter(|r| {
            !matches!(
                r,
                Reason::InvalidGzip | Reason::UnknownEventType | Reason::MissingMetadataKey
            )
        })
        .collect();
    let mut reasons_seen = std::collections::BTreeSet::new();
    let mut hist = std::collections::BTreeMap::new();
    let mut kinds = [0u64; 4];
    // One load of many files: an id loads once across all of them, first file first.
    let mut loaded_ids = std::collections::HashSet::new();
    let mut total = Accounted::default();
    let mut tally_total = FileTally::default();
    for file_no in 0..60 {
        let mut file = Vec::new();
        for i in 0..200 {
            let mut line = gen_line(&mut rng, &seeds);
            if i == 0 && rng.below(4) == 0 {
                line.splice(0..0, *b"\xEF\xBB\xBF");
            }
            line.retain(|b| *b != b'\n');
            file.extend_from_slice(&line);
            file.push(b'\n');
        }
        if file_no % 20 == 0 {
            // A few over-long lines, blank and not.
            file.extend_from_slice(&vec![b' '; MAX_LINE_BYTES + 1]);
            file.push(b'\n');
            file.extend_from_slice(&padded(MAX_LINE_BYTES + 2).into_bytes());
            file.push(b'\n');
        }
        let mut accounted = Accounted::default();
        let mut staged_events = 0u64;
        let tally = clean_bytes(&cleaner, &file, |_, outcome| {
            // Every outcome is one kind, and its records are checked.
            let records = match &outcome {
                LineOutcome::Blank => {
                    kinds[0] += 1;
                    accounted.blank += 1;
                    0
                }
                LineOutcome::Event(e) => {
                    kinds[1] += 1;
                    check_event(e);
                    1
                }
                LineOutcome::Reject(r) => {
                    kinds[2] += 1;
                    check_reject(r);
                    1
                }
                LineOutcome::Recovered { prefix, fragment } => {
                    kinds[3] += 1;
                    for record in [prefix, fragment] {
                        match record {
                            Ok(e) => check_event(e),
                            Err(r) => check_reject(r),
                        }
                    }
                    2
                }
            };
            let events_in_line = match &outcome {
                LineOutcome::Event(_) => 1,
                LineOutcome::Recovered { prefix, fragment } => {
                    u64::from(prefix.is_ok()) + u64::from(fragment.is_ok())
                }
                _ => 0,
            };
            // Staged rows: each reject once; each event once, but a glued repeat of an id.
            let mut line_ids = std::collections::HashSet::new();
            let mut rows = 0u64;
            let mut line_events = 0u64;
            for row in outcome.into_rows() {
                rows += 1;
                match row {
                    Ok(e) => {
                        line_events += 1;
                        assert!(line_ids.insert(e.id.clone().into_owned()));
                        if loaded_ids.insert(e.id.into_owned()) {
                            accounted.loaded += 1;
                        }
                    }
                    Err(r) => {
                        assert!(codes.contains(&r.reason), "{r:?}");
                        reasons_seen.insert(r.reason);
                        *hist.entry(r.reason).or_insert(0u32) += 1;
                        accounted.rejects += 1;
                    }
                }
            }
            staged_events += line_events;
            assert!(rows == records || (records == 2 && rows == 1 && events_in_line == 2));
        });
        accounted.duplicates = tally.events - accounted.loaded;
        assert!(staged_events <= tally.events);
        // The file row balances: lines + recovered = loaded + duplicates + rejects + blank.
        assert_eq!(accounted.rejects, tally.rejects);
        assert_eq!(accounted.blank, tally.blank_lines);
        assert_eq!(
            tally.lines + tally.recovered,
            accounted.loaded + accounted.duplicates + accounted.rejects + accounted.blank,
            "file {file_no}: {tally:?} {accounted:?}"
        );
        assert_eq!(tally.lines, file.iter().filter(|b| **b == b'\n').count() as u64);
        total.loaded += accounted.loaded;
        total.duplicates += accounted.duplicates;
        total.rejects += accounted.rejects;
        total.blank += accounted.blank;
        tally_total.merge(&tally);
    }
    assert_eq!(
        tally_total.lines + tally_total.recovered,
        total.loaded + total.duplicates + total.rejects + total.blank
    );
    println!("blank/event/reject/recovered lines: {kinds:?}; {tally_total:?}; {total:?}; {hist:?}");
    // The generator reaches every kind of outcome and every line-level reason.
    assert!(kinds.iter().all(|&k| k > 100), "{kinds:?}");
    let missing: Vec<&Reason> = codes.iter().filter(|r| !reasons_seen.contains(r)).collect();
    assert!(missing.is_empty(), "reasons never produced: {missing:?}");
    assert!(total.duplicates > 100 && total.loaded > 0, "{total:?}");
}

#[test]
fn generated_lines_cost_linear_work_and_clean_the_same_way_twice() {
    let seeds: Vec<Vec<u8>> = vec![SEED_LINE_1.as_bytes().to_vec(), SEED_LINE_2.as_bytes().to_vec()];
    let mut rng = XorShift(0x9E6C_63D0_676A_9A99);
    for _ in 0..3_000 {
        let line = gen_line(&mut rng, &seeds);
        let work = work_of(&line);
        assert!(
            work <= 6 * line.len() + 64,
            "{work} for {}",
            String::from_utf8_lossy(&line)
        );
        let once = format!("{:?}", clean(&line));
        assert_eq!(format!("{:?}", clean(&line)), once);
    }
}

// ---------------------------------------------------------------------------------------------
// Event-type contracts: `[event_types]` and `cleaning.unknown_event_types`
// ---------------------------------------------------------------------------------------------

fn typed_cleaner(unknown: crate::event_types::UnknownEventTypes) -> Cleaner {
    use crate::event_types::{ColumnType, EventType, EventTypes};
    let mut types = std::collections::BTreeMap::new();
    types.insert(
        "page_visit".to_owned(),
        EventType {
            required_metadata: vec!["path".to_owned(), "referrer".to_owned()],
            columns: [("path".to_owned(), ColumnType::Text)].into_iter().collect(),
        },
    );
    types.insert("message_saved".to_owned(), EventType::default());
    Cleaner::new(run_start()).with_event_types(std::sync::Arc::new(EventTypes { types, unknown }))
}

fn typed(name: &str, metadata: Option<&str>) -> String {
    record(&[("event_name", Some(&js(name))), ("metadata", metadata)])
}

#[test]
fn a_configured_type_without_a_required_key_is_rejected_naming_it() {
    use crate::event_types::UnknownEventTypes;
    let c = typed_cleaner(UnknownEventTypes::Load);
    let outcome = |line: &str| match c.clean_line(2, line.as_bytes(), false) {
        LineOutcome::Event(_) => Ok(()),
        LineOutcome::Reject(r) => Err((r.reason, r.raw.into_owned())),
        other => panic!("{other:?}"),
    };
    // Present and not null, whatever the value: loads.
    for m in [
        r#"{"path": "/a", "referrer": ""}"#,
        r#"{"referrer": false, "path": 0, "other": null}"#,
        r#"{"path": {}, "referrer": []}"#,
    ] {
        assert_eq!(outcome(&typed("page_visit", Some(m))), Ok(()), "{m}");
    }
    // Absent, null, nested only, or no metadata at all: the first missing key, in
    // configuration order, is named in the reject's text.
    for (m, key) in [
        (Some(r#"{"referrer": "x"}"#), "path"),
        (Some(r#"{"path": null, "referrer": "x"}"#), "path"),
        (Some(r#"{"path": "/a"}"#), "referrer"),
        (Some(r#"{"x": {"path": "/a", "referrer": "r"}}"#), "path"),
        (Some("{}"), "path"),
        (Some("null"), "path"),
        (None, "path"),
    ] {
        let line = typed("page_visit", m);
        let (reason, raw) = outcome(&line).expect_err(&line);
        assert_eq!(reason, Reason::MissingMetadataKey, "{line}");
        assert!(
            raw.starts_with(&format!("metadata key `{key}` is required for page_visit events")),
            "{raw}"
        );
        assert!(raw.ends_with(&line), "the raw line follows the note: {raw}");
    }
    // The raw text stays within the limit however long the line.
    let long = typed(
        "page_visit",
        Some(&format!(r#"{{"x": "{}"}}"#, "y".repeat(10_000))),
    );
    let (_, raw) = outcome(&long).unwrap_err();
    assert!(raw.len() <= MAX_RAW_BYTES, "{}", raw.len());
    // A type name is compared once normalised.
    assert_eq!(
        outcome(&typed(" Page_Visit ", Some("{}"))).unwrap_err().0,
        Reason::MissingMetadataKey
    );
    // Other types, configured without required keys or not configured, load.
    assert_eq!(outcome(&typed("message_saved", None)), Ok(()));
    assert_eq!(outcome(&typed("meeting_scheduled", None)), Ok(()));
}

#[test]
fn unknown_event_types_load_by_default_and_are_rejected_when_asked() {
    use crate::event_types::UnknownEventTypes;
    let line = typed("meeting_scheduled", Some("{}"));
    let load = typed_cleaner(UnknownEventTypes::Load);
    assert!(matches!(
        load.clean_line(2, line.as_bytes(), false),
        LineOutcome::Event(_)
    ));
    let reject = typed_cleaner(UnknownEventTypes::Reject);
    match reject.clean_line(2, line.as_bytes(), false) {
        LineOutcome::Reject(r) => {
            assert_eq!(r.reason, Reason::UnknownEventType);
            assert_eq!(r.raw, line);
        }
        other => panic!("{other:?}"),
    }
    // Configured types still load under "reject".
    let ok = typed("message_saved", None);
    assert!(matches!(
        reject.clean_line(2, ok.as_bytes(), false),
        LineOutcome::Event(_)
    ));
}

#[test]
fn event_type_checks_come_in_the_documented_order() {
    use crate::event_types::UnknownEventTypes;
    let c = typed_cleaner(UnknownEventTypes::Reject);
    let reason_of = |line: &str| match c.clean_line(2, line.as_bytes(), false) {
        LineOutcome::Reject(r) => r.reason,
        other => panic!("{other:?}"),
    };
    // invalid_event_name before unknown_event_type, which comes before metadata checks.
    assert_eq!(
        reason_of(&typed("Not A Name", Some("{}"))),
        Reason::InvalidEventName
    );
    assert_eq!(reason_of(&typed("other", Some("[1]"))), Reason::UnknownEventType);
    // Metadata that cannot be stored is judged before the type's required keys.
    assert_eq!(
        reason_of(&typed("page_visit", Some("[1]"))),
        Reason::InvalidMetadata
    );
    let deep = format!("{}{}", "[".repeat(1001), "]".repeat(1001));
    assert_eq!(
        reason_of(&typed("page_visit", Some(&format!(r#"{{"a": {deep}}}"#)))),
        Reason::NestingTooDeep
    );
    // Field checks before the type's: a bad id is invalid_id even for an unknown type.
    let line = record(&[("id", Some("\"x\"")), ("event_name", Some("\"other\""))]);
    assert_eq!(reason_of(&line), Reason::InvalidId);
}

#[test]
fn recovered_records_follow_their_type_contract_too() {
    use crate::event_types::UnknownEventTypes;
    let c = typed_cleaner(UnknownEventTypes::Load);
    let first = typed("page_visit", Some(r#"{"path": "/a", "referrer": "r"}"#));
    let second = record(&[
        ("id", Some(r#""00000000-0000-4000-8000-000000000002""#)),
        ("event_name", Some(r#""page_visit""#)),
        ("metadata", Some(r#"{"path": "/b"}"#)),
    ]);
    let line = format!("{first}{second}");
    match c.clean_line(2, line.as_bytes(), false) {
        LineOutcome::Recovered {
            prefix: Ok(e),
            fragment: Err(r),
        } => {
            assert_eq!(e.event_name, "page_visit");
            assert_eq!(r.reason, Reason::MissingMetadataKey);
            assert!(r.raw.contains("`referrer`"), "{}", r.raw);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn required_key_checks_stay_linear() {
    use crate::event_types::UnknownEventTypes;
    let c = typed_cleaner(UnknownEventTypes::Load);
    let keys: String = (0..40_000).map(|i| format!(r#""k{i}": {i},"#)).collect();
    let line = typed(
        "page_visit",
        Some(&format!(r#"{{{keys} "path": "/", "referrer": 1}}"#)),
    );
    let mut work = Work::default();
    let outcome = c.clean_line_counted(2, line.as_bytes(), false, &mut work);
    assert!(matches!(outcome, LineOutcome::Event(_)));
    assert!(
        work.bytes <= 6 * line.len() + 64,
        "{} for {}",
        work.bytes,
        line.len()
    );
}

/// The table-driven id check agrees with the rule written plainly (36 bytes, hyphens at
/// 8, 13, 18 and 23, hex digits elsewhere, lowercased) for every byte at every place.
#[test]
fn id_check_agrees_with_the_plain_rule() {
    let plain = |s: &str| -> Option<String> {
        let b = s.as_bytes();
        let ok = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        ok.then(|| s.to_ascii_lowercase())
    };
    let base = "7ccdc80e-627e-49df-bb7d-501546e13532";
    let mut cases = vec![
        base.to_owned(),
        base.to_uppercase(),
        String::new(),
        format!("{base}0"),
    ];
    for i in 0..base.len() {
        for c in 0u8..128 {
            let mut v = base.as_bytes().to_vec();
            v[i] = c;
            cases.push(String::from_utf8(v).expect("ascii"));
        }
    }
    for case in &cases {
        assert_eq!(
            fields::normalise_id(Cow::Borrowed(case)).map(Cow::into_owned),
            plain(case),
            "{case:?}"
        );
    }
}

/// The one-pass ASCII address check agrees with the general one on every short string
/// over the characters that matter.
#[test]
fn ascii_address_check_agrees_with_the_general_one() {
    let alphabet = ['a', '@', '.', ' ', '\t', '\0', 'B'];
    let mut cases = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..6 {
        let mut next = Vec::new();
        for s in &frontier {
            for c in alphabet {
                let mut t = s.clone();
                t.push(c);
                next.push(t);
            }
        }
        cases.extend(next.iter().cloned());
        frontier = next;
    }
    assert!(cases.len() > 100_000);
    for case in &cases {
        assert_eq!(
            fields::ascii_address_ok(case.as_bytes()),
            fields::address_ok(case),
            "{case:?}"
        );
    }
}

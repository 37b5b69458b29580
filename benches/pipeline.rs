//! `cargo bench --bench pipeline [-- MB]`: throughput and memory of the loader on a
//! generated input (default 100 MB of JSON lines, ~1% bad lines, ~1% duplicates).
//!
//! 0. the pure cleaner on worst-case lines of 1 MiB (the longest a line may be), built to
//!    make each step of cleaning do as much work as it can; `-- hostile` runs only this;
//! 1. the pure cleaner over the input in memory (no IO, no compression);
//! 2. `events-etl clean` (read, clean, gzip, write parts) as a child process;
//! 3. `events-etl migrate` + `run` end to end into a throwaway PostgreSQL.
//!
//! For 2 and 3 the child's peak RSS (VmHWM, polled from /proc) is reported: it must
//! stay bounded by the part size, not grow with the input.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use events_etl::clean::{clean_bytes, Cleaner, LineOutcome, MAX_LINE_BYTES};

const FILES: usize = 10;

/// A valid record whose metadata is `meta`.
fn record(id: &str, meta: &str) -> String {
    format!(
        r#"{{"id": "{id}", "created_at": "2020-01-13 05:10:12", "user_email": "a@b.com", "event_name": "x", "metadata": {meta}}}"#
    )
}

/// A valid record with `n` extra top-level keys (dropped, but checked for repeats).
fn keyed(id: &str, n: usize, prefix: &str) -> String {
    let keys: String = (0..n).map(|i| format!(r#""{prefix}k{i:06}": 1, "#)).collect();
    format!(
        r#"{{"id": "{id}", {keys}"created_at": "2020-01-13 05:10:12", "user_email": "a@b.com", "event_name": "x"}}"#
    )
}

/// `unit` repeated to fill a line of at most `MAX_LINE_BYTES` with `head` and `tail`.
fn fill(head: &str, unit: &str, tail: &str) -> String {
    let n = (MAX_LINE_BYTES - head.len() - tail.len()) / unit.len();
    format!("{head}{}{tail}", unit.repeat(n))
}

/// Lines of 1 MiB built to make cleaning work hardest, each aimed at one step.
fn worst_lines() -> Vec<(&'static str, String)> {
    let id = "9ba671d6-5154-41c1-93b1-41dd647b2d55";
    let depth = (MAX_LINE_BYTES - 2) / 7;
    let half = MAX_LINE_BYTES / 2 - 200;
    let deep = 500_000;
    let big_meta = |n: usize| {
        format!(
            r#"{{"s": [{}]}}"#,
            vec![format!("\"{}\"", "x".repeat(60_000)); n / 60_004].join(", ")
        )
    };
    vec![
        // Issue 7's line: a `{"id"` every 6 bytes, none closed (was quadratic: 164 s).
        ("x{\"id\": repeated (issue 7)", fill("x", "{\"id\":", "")),
        // The same, closed: the one candidate parses, 150,000 levels deep.
        (
            "x{\"id\": nested 150k deep, closed",
            format!("x{}1{}", "{\"id\":".repeat(depth), "}".repeat(depth)),
        ),
        // Two half-MiB records glued: every byte parsed and checked twice.
        (
            "two 512 KiB records glued",
            format!(
                "{}{}",
                record(id, &big_meta(half)),
                record("10cd6e40-cab2-432d-9e62-a8466761e307", &big_meta(half))
            ),
        ),
        // One record whose metadata object has 74,000 keys (repeated-key check).
        (
            "metadata with 74k keys",
            record(
                id,
                &format!(
                    "{{{}\"z\": 0}}",
                    (0..74_000)
                        .map(|i| format!("\"k{i:06}\": 1, "))
                        .collect::<String>()
                ),
            ),
        ),
        // Two records glued, each with 37,000 top-level keys: the keys of the first are
        // checked for repeats twice (by the line's parse and by the glued record's).
        (
            "two records of 37k keys glued",
            format!("{0}{0}", keyed(id, 37_000, "")),
        ),
        // The same with escaped keys: each decoded into its own string, twice.
        (
            "two records of 25k escaped keys glued",
            format!("{0}{0}", keyed(id, 25_500, "\\u006b")),
        ),
        // 57,000 escaped keys: each one decoded into its own string.
        (
            "metadata with 57k escaped keys",
            record(
                id,
                &format!(
                    "{{{}\"z\": 0}}",
                    (0..57_000)
                        .map(|i| format!("\"\\u006b{i:05}\": 1, "))
                        .collect::<String>()
                ),
            ),
        ),
        // Metadata nested 500,000 arrays deep (depth check, parser's skip stack).
        (
            "metadata nested 500k deep",
            record(
                id,
                &format!("{{\"d\": {}{}}}", "[".repeat(deep), "]".repeat(deep)),
            ),
        ),
        // A million digits of numbers (range check).
        (
            "metadata of long numbers",
            record(
                id,
                &format!("{{\"n\": [{}1]}}", "1234567890.1234e-5, ".repeat(52_000)),
            ),
        ),
        // Quotes and backslashes that every candidate must see through.
        (
            "escaped quotes and {\"id\" in strings",
            fill("x{\"id\": [", "\"{\\\"id\\\":\\\\\", ", "]}"),
        ),
    ]
}

/// Step 0: the worst lines, each cleaned `reps` times; the fastest and the median run are
/// reported (the machine is shared: the fastest is the cleaner's own cost).
fn bench_worst_lines(cleaner: &Cleaner) {
    let reps = 15;
    println!("worst-case lines (at most {MAX_LINE_BYTES} bytes, {reps} runs each):");
    println!(
        "  {:<40} {:>9}   {:>8} {:>8} {:>9}",
        "line", "bytes", "min ms", "med ms", "MB/s min"
    );
    for (what, line) in worst_lines() {
        assert!(line.len() <= MAX_LINE_BYTES, "{what}: {}", line.len());
        let mut kind = "";
        let mut times: Vec<f64> = (0..reps)
            .map(|_| {
                let start = Instant::now();
                kind = match cleaner.clean_line(2, line.as_bytes(), false) {
                    LineOutcome::Blank => "blank",
                    LineOutcome::Event(_) => "event",
                    LineOutcome::Reject(r) => r.reason.as_str(),
                    LineOutcome::Recovered { .. } => "recovered",
                };
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let (min, median) = (times[0], times[reps / 2]);
        println!(
            "  {what:<40} {:>9}   {:>8.2} {:>8.2} {:>9.1}  -> {kind}",
            line.len(),
            min * 1e3,
            median * 1e3,
            line.len() as f64 / 1e6 / min
        );
    }
}

/// A realistic event line (~290 bytes), deterministic in `i`.
fn line(i: u64) -> String {
    let names = [
        "page_visit",
        "message_saved",
        "meeting_scheduled",
        "meeting_invite",
        "feature_used",
    ];
    let name = names[(i % 5) as usize];
    // ~1% duplicates: reuse an earlier id.
    let id = if i % 97 == 0 && i > 0 { i - 1 } else { i };
    let bad = i % 101 == 0;
    if bad {
        return format!(r#"{{"id": "{id:08x}-dead", "created_at": "2020-13-45 00:00:00"}}"#);
    }
    format!(
        r#"{{"id": "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", "created_at": "2020-01-{:02} {:02}:{:02}:{:02}", "user_email": "user{}@example-{}.com", "ip": "{}.{}.{}.{}", "event_name": "{name}", "metadata": {{"path": "main/categories/{}", "message_id": {}, "meeting_time": "2020-01-20 16:44:26"}}}}"#,
        id >> 32,
        (id >> 16) & 0xffff,
        id & 0xfff,
        (id >> 12) & 0xfff,
        id,
        1 + id % 28,
        id % 24,
        id % 60,
        (id / 60) % 60,
        id % 5000,
        id % 300,
        1 + id % 223,
        id % 256,
        (id / 256) % 256,
        1 + id % 254,
        id % 1000,
        id * 7919 % 1_000_000
    )
}

/// A valid event whose metadata is ~2 KB of pseudo-random text: gzip cannot shrink it,
/// so staged parts in memory are as large as their uncompressed size.
fn incompressible_line(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let blob: String = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(x % 64) as usize])
        })
        .collect();
    format!(
        r#"{{"id": "{:08x}-0000-4000-8000-{:012x}", "created_at": "2020-01-13 05:10:12", "user_email": "u{i}@example.com", "event_name": "blob", "metadata": {{"blob": "{blob}"}}}}"#,
        i >> 32,
        i & 0xffff_ffff_ffff
    )
}

fn generate(dir: &Path, total_mb: u64) -> (Vec<PathBuf>, u64, u64) {
    generate_with(dir, total_mb, line)
}

fn generate_with(dir: &Path, total_mb: u64, line: fn(u64) -> String) -> (Vec<PathBuf>, u64, u64) {
    let per_file = total_mb * 1024 * 1024 / FILES as u64;
    let mut paths = Vec::new();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut i = 0u64;
    for f in 0..FILES {
        let p = dir.join(format!("events/2020/01/{:02}/{f:032x}.json", 1 + f));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut buf = String::with_capacity(per_file as usize + 1024);
        while (buf.len() as u64) < per_file {
            buf.push_str(&line(i));
            buf.push('\n');
            i += 1;
            lines += 1;
        }
        bytes += buf.len() as u64;
        std::fs::write(&p, buf).unwrap();
        paths.push(p);
    }
    (paths, bytes, lines)
}

/// Peak RSS at default settings on input gzip cannot compress (`-- incompressible`):
/// `events-etl clean` and `run` into PostgreSQL, no part size given.
fn bench_incompressible(mb: u64) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let (paths, bytes, lines) = generate_with(&source, mb, incompressible_line);
    println!(
        "incompressible input: {FILES} files, {:.1} MB, {lines} lines",
        bytes as f64 / 1e6
    );
    let bin = support::bin();
    let mut cmd = Command::new(&bin);
    cmd.arg("clean")
        .arg("--out")
        .arg(dir.path().join("out"))
        .args(&paths);
    let (t, peak, _) = measure(&mut cmd);
    report(
        "events-etl clean, defaults, incompressible",
        t,
        bytes,
        lines,
        Some(peak),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, schema) = rt.block_on(async {
        let pg = support::postgres().await;
        (pg.url(), pg.fresh_schema("bench_inc").await)
    });
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{}\"\n[staging]\nurl = \"{}\"\n[warehouse]\nschema = \"{schema}\"\n\
             [warehouse.postgres]\nurl = \"{url}\"\n",
            source.display(),
            dir.path().join("staging").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(&bin);
    cmd.arg("--config").arg(&cfg).arg("migrate");
    measure(&mut cmd);
    let mut cmd = Command::new(&bin);
    cmd.arg("--config").arg(&cfg).arg("run");
    let (t, peak, _) = measure(&mut cmd);
    report(
        "events-etl run, defaults, incompressible",
        t,
        bytes,
        lines,
        Some(peak),
    );
}

/// Runs a command, polling its peak RSS; returns (elapsed, peak KiB, stdout).
fn measure(cmd: &mut Command) -> (Duration, u64, String) {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            for l in s.lines() {
                if let Some(v) = l.strip_prefix("VmHWM:") {
                    let kb: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                    peak = peak.max(kb);
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{cmd:?} failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    (elapsed, peak, out)
}

fn report(what: &str, elapsed: Duration, bytes: u64, lines: u64, peak_kb: Option<u64>) {
    let s = elapsed.as_secs_f64();
    let mem = peak_kb.map_or(String::new(), |k| {
        format!(", peak RSS {:.1} MiB", k as f64 / 1024.0)
    });
    println!(
        "{what:<34} {:>7.2} s  {:>7.1} MB/s  {:>10.0} lines/s{mem}",
        s,
        bytes as f64 / 1e6 / s,
        lines as f64 / s
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mb: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100);
    bench_worst_lines(&Cleaner::new(chrono::Utc::now()));
    if args.iter().any(|a| a == "hostile") {
        return;
    }
    if args.iter().any(|a| a == "incompressible") {
        bench_incompressible(mb);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let (paths, bytes, lines) = generate(&source, mb);
    println!(
        "input: {FILES} files, {:.1} MB, {lines} lines (generated in {})",
        bytes as f64 / 1e6,
        dir.path().display()
    );

    // 1. The pure cleaner.
    let cleaner = Cleaner::new(chrono::Utc::now());
    let data: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let start = Instant::now();
    let mut events = 0u64;
    for d in &data {
        events += clean_bytes(&cleaner, d, |_, _| {}).events;
    }
    report("clean (pure, in memory)", start.elapsed(), bytes, lines, None);
    assert!(events > lines * 9 / 10, "too few events: {events}");
    drop(data);

    let bin = support::bin();
    // 2. `events-etl clean`: read, clean, gzip, write.
    let out = dir.path().join("out");
    let mut cmd = Command::new(&bin);
    cmd.arg("clean")
        .arg("--part-size-mb")
        .arg("128")
        .arg("--out")
        .arg(&out)
        .args(&paths);
    let (t, peak, _) = measure(&mut cmd);
    report("events-etl clean (part 128 MiB)", t, bytes, lines, Some(peak));
    let mut cmd = Command::new(&bin);
    cmd.arg("clean")
        .arg("--part-size-mb")
        .arg("16")
        .arg("--out")
        .arg(dir.path().join("out16"))
        .args(&paths);
    let (t, peak, _) = measure(&mut cmd);
    report("events-etl clean (part 16 MiB)", t, bytes, lines, Some(peak));

    // 3. migrate + run end to end into PostgreSQL.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, schema) = rt.block_on(async {
        let pg = support::postgres().await;
        (pg.url(), pg.fresh_schema("bench").await)
    });
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{}\"\n[staging]\nurl = \"{}\"\npart_size_mb = 16\n[warehouse]\nschema = \"{schema}\"\n\
             [warehouse.postgres]\nurl = \"{url}\"\n",
            source.display(),
            dir.path().join("staging").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(&bin);
    cmd.arg("--config").arg(&cfg).arg("migrate");
    measure(&mut cmd);
    let mut cmd = Command::new(&bin);
    cmd.arg("--config").arg(&cfg).arg("run");
    let (t, peak, stdout) = measure(&mut cmd);
    report("events-etl run (PostgreSQL)", t, bytes, lines, Some(peak));
    println!("{}", stdout.trim_end());
}

//! One typed event per stage outcome, logged in one place (vector's internal_events
//! habit): operators grep for these names, tests do not depend on them.

/// How many of a file's rejects its log line names by line and reason; the rest are
/// only counted (every reject is stored in `event_rejects`).
pub const REJECTS_LOGGED_PER_FILE: usize = 20;

/// Discovery listed the source: objects, event files among them, and pending ones.
pub fn files_discovered(listed: usize, event_files: usize, pending: usize) {
    tracing::info!(listed, event_files, pending, "files discovered");
}

/// A listed object was gone when read, or left the listing before it loaded.
pub fn file_vanished(url: &str) {
    tracing::warn!(
        url,
        "file listed but gone when read (expired or deleted): recorded as lost (reason `vanished`, see `events-etl status`)"
    );
}

/// One warning per file with rejects, not one per rejected line: a file of bad lines
/// would otherwise cost a write to stderr per line, each a wake-up of whatever reads
/// the scheduler's log pipe. `first` names the first [`REJECTS_LOGGED_PER_FILE`] as
/// `line:reason`.
pub fn lines_rejected(key: &str, by_reason: &[(&str, u64)], first: &[(u64, &str)]) {
    let rejects: u64 = by_reason.iter().map(|(_, n)| n).sum();
    if rejects == 0 {
        return;
    }
    let reasons: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r}={n}")).collect();
    let mut lines: Vec<String> = first.iter().map(|(no, r)| format!("{no}:{r}")).collect();
    if rejects > first.len() as u64 {
        lines.push("...".into());
    }
    let (reasons, lines) = (reasons.join(" "), lines.join(" "));
    tracing::warn!(
        file = key,
        rejects,
        reasons,
        first = lines,
        "lines rejected; every one is in event_rejects with its line and reason"
    );
}

/// A file's gzip data is corrupt: none of its lines load.
pub fn gzip_corrupt(key: &str, member: u64, offset: u64, detail: &str, lines_read: u64) {
    tracing::warn!(
        file = key,
        member,
        offset,
        detail,
        lines_read,
        "gzip data is corrupt: no line of the file is loaded; it is recorded with one invalid_gzip reject"
    );
}

/// A file's gzip data ends early: its complete lines load.
pub fn gzip_truncated(key: &str, member: u64, offset: u64, lines: u64) {
    tracing::warn!(
        file = key,
        member,
        offset,
        lines,
        "gzip data ends early (the file was cut short): its complete lines load"
    );
}

/// What cleaning one file made of its lines.
pub struct FileCounts {
    pub lines: u64,
    pub events: u64,
    pub rejects: u64,
    pub blank_lines: u64,
    pub recovered: u64,
    pub invalid_ips: u64,
}

/// One file cleaned and staged.
pub fn file_cleaned(key: &str, t: &FileCounts) {
    tracing::info!(
        file = key,
        lines = t.lines,
        events = t.events,
        rejects = t.rejects,
        blank_lines = t.blank_lines,
        recovered = t.recovered,
        invalid_ips = t.invalid_ips,
        "file cleaned"
    );
}

/// A load's files are staged, ready to COPY.
pub fn load_staged(load_id: &str, files: usize, events: u64, rejects: u64) {
    tracing::info!(load_id, files, events, rejects, "load staged");
}

/// A committed load's totals, as `etl_loads` holds them.
pub struct LoadCounts<'a> {
    pub load_id: &'a str,
    pub files: i64,
    pub lines: i64,
    pub events_loaded: i64,
    pub duplicates: i64,
    pub rejects: i64,
    pub blank_lines: i64,
}

/// A load committed.
pub fn load_committed(r: &LoadCounts<'_>) {
    tracing::info!(
        load_id = r.load_id,
        files = r.files,
        lines = r.lines,
        events_loaded = r.events_loaded,
        duplicates = r.duplicates,
        rejects = r.rejects,
        blank_lines = r.blank_lines,
        "load committed"
    );
}

/// A load failed without naming a file: its files are loaded in halves.
pub fn load_narrowed(files: usize, error: &dyn std::fmt::Display) {
    tracing::warn!(
        files,
        error = %error,
        "the load failed without naming a file; loading its two halves on their own"
    );
}

/// A file version set aside: archived, unreadable, or refused by the warehouse.
pub fn file_quarantined(key: &str, reason: &str, detail: &str) {
    tracing::warn!(
        key,
        reason,
        detail,
        "file quarantined: it is not loaded until a new version is uploaded (see `events-etl status`)"
    );
}

/// A progress bar on stderr for `run` and `clean`, drawn only when stderr is a terminal
/// (indicatif hides it otherwise, so redirected output gets nothing extra). Log lines
/// are written through [`LogWriter`], which lifts the bar while they print.
mod progress {
    use std::sync::Mutex;
    use std::time::Instant;

    use indicatif::ProgressBar;

    pub(super) struct Progress {
        pub bar: ProgressBar,
        pub started: Instant,
        pub bytes: u64,
        pub events: u64,
    }

    pub(super) static CURRENT: Mutex<Option<Progress>> = Mutex::new(None);
}

/// Starts the progress bar over `files` files of `bytes` bytes.
pub fn progress_begin(files: usize, bytes: u64) {
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(files as u64), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files  {msg}") {
        bar.set_style(style);
    }
    bar.set_message(format!("0 of {:.1} MB", bytes as f64 / 1e6));
    let mut cur = progress::CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    *cur = Some(progress::Progress {
        bar,
        started: std::time::Instant::now(),
        bytes: 0,
        events: 0,
    });
}

/// One more file read and cleaned.
pub fn progress_file(bytes: u64, events: u64) {
    let mut cur = progress::CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cur.as_mut() {
        p.bytes += bytes;
        p.events += events;
        let secs = p.started.elapsed().as_secs_f64().max(1e-3);
        p.bar.inc(1);
        p.bar.set_message(format!(
            "{:.1} MB, {:.0} events/s",
            p.bytes as f64 / 1e6,
            p.events as f64 / secs
        ));
    }
}

/// Removes the progress bar.
pub fn progress_end() {
    let mut cur = progress::CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cur.take() {
        p.bar.finish_and_clear();
    }
}

/// The log writer: stderr, with the progress bar (if any) lifted while a line prints.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let cur = progress::CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        match cur.as_ref() {
            Some(p) => p.bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

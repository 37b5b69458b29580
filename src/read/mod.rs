//! Reads one object as lines: gzip detected by extension or magic bytes (every member
//! checked, see [`gzip`]), lines split on `\n`, and no line stored past a limit, so one
//! huge line cannot exhaust memory.
//!
//! Errors and damage are kept apart: [`LineReader::next_line`] fails only when reading
//! the body fails (a transport error, worth a retry); damaged gzip data ends the lines
//! and is reported by [`LineReader::gzip_end`].

pub(crate) mod gzip;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::limits::MAX_LINE_BYTES;

pub use gzip::{At, GzipEnd};

const BUF: usize = 256 * 1024;
/// A streaming body of bytes: an object being read.
pub type Body = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// Bytes kept of a source line: the cleaner's limit plus one for a trailing `\r`.
pub const SOURCE_LINE_KEEP: usize = MAX_LINE_BYTES + 1;

/// One line, borrowed from the reader until the next call.
pub struct Line<'a> {
    /// 1-based physical line number.
    pub no: u64,
    /// Without the `\n`; at most the reader's limit.
    pub bytes: &'a [u8],
    /// The line was longer than what `bytes` holds.
    pub too_long: bool,
    /// Where the gzip data ended, when it ended inside this line
    /// ([`GzipEnd::Truncated`]): the line is incomplete.
    pub cut: Option<At>,
    /// How many gzip members whose CRC-32 and length verified end before this line's
    /// end: the line reaches past all of them (0 for a plain object).
    pub verified_before: usize,
}

/// What a reader reads: an object already whole in memory (read ahead), or a body to
/// stream.
pub enum Input {
    Bytes(Vec<u8>),
    Stream(Body),
}

impl From<Body> for Input {
    fn from(body: Body) -> Input {
        Input::Stream(body)
    }
}

impl Input {
    fn into_body(self) -> Body {
        match self {
            Input::Bytes(b) => Box::new(std::io::Cursor::new(b)),
            Input::Stream(b) => b,
        }
    }
}

enum Source {
    /// Plain bytes in memory: the whole rest is the buffer, so every line is lent from it
    /// and none is copied.
    Memory {
        bytes: Vec<u8>,
        pos: usize,
    },
    Plain(BufReader<Body>),
    Gzip(Box<gzip::GzipDecoder>),
}

impl Source {
    async fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self {
            Source::Memory { bytes, pos } => Ok(&bytes[*pos..]),
            Source::Plain(r) => r.fill_buf().await,
            Source::Gzip(g) => g.fill_buf().await,
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Source::Memory { bytes, pos } => *pos = (*pos + n).min(bytes.len()),
            Source::Plain(r) => r.consume(n),
            Source::Gzip(g) => g.consume(n),
        }
    }
}

/// Streams lines out of one object.
pub struct LineReader {
    src: Source,
    keep: usize,
    buf: Vec<u8>,
    line_no: u64,
    /// Bytes of the source's buffer the last line was lent from, consumed at the next
    /// call.
    lent: usize,
    /// Bytes of the (decoded) stream consumed before the current line.
    consumed: u64,
    /// Where the last line handed out ends in the decoded stream (after its `\n`).
    line_end: u64,
}

impl LineReader {
    /// Wraps a source object's body, decompressing when the key ends in `.gz` or the
    /// bytes start with the gzip magic number; concatenated gzip members are read as one
    /// stream. Lines keep at most [`SOURCE_LINE_KEEP`] bytes.
    pub async fn open(input: impl Into<Input>, key: &str) -> std::io::Result<LineReader> {
        Self::with_limit(input, key, SOURCE_LINE_KEEP).await
    }

    /// Like [`LineReader::open`], keeping at most `keep` bytes of a line.
    pub async fn with_limit(input: impl Into<Input>, key: &str, keep: usize) -> std::io::Result<LineReader> {
        const MAGIC: [u8; 2] = [0x1f, 0x8b];
        let src = match input.into() {
            Input::Bytes(bytes) if !key.ends_with(".gz") && !bytes.starts_with(&MAGIC) => {
                Source::Memory { bytes, pos: 0 }
            }
            input => {
                let mut raw = BufReader::with_capacity(BUF, input.into_body());
                let head = raw.fill_buf().await?;
                if key.ends_with(".gz") || head.starts_with(&MAGIC) {
                    Source::Gzip(Box::new(gzip::GzipDecoder::new(raw)))
                } else {
                    Source::Plain(raw)
                }
            }
        };
        Ok(LineReader {
            src,
            keep,
            buf: Vec::new(),
            line_no: 0,
            lent: 0,
            consumed: 0,
            line_end: 0,
        })
    }

    /// Where the last line handed out ends (after its `\n`), in decoded bytes.
    pub fn line_end(&self) -> u64 {
        self.line_end
    }

    /// The decoded offsets where the gzip members whose CRC-32 and length verified end
    /// (see [`gzip::GzipDecoder::verified_ends`]); empty for a plain object.
    pub fn verified_ends(&self) -> &[u64] {
        match &self.src {
            Source::Gzip(g) => g.verified_ends(),
            Source::Memory { .. } | Source::Plain(_) => &[],
        }
    }

    /// How many verified members end before `end`.
    fn verified_before(&self, end: u64) -> usize {
        self.verified_ends().partition_point(|&b| b < end)
    }

    /// Whether the object is being decompressed.
    pub fn is_gzip(&self) -> bool {
        matches!(self.src, Source::Gzip(_))
    }

    /// How the gzip stream ended: `None` for a plain object, or before the end.
    pub fn gzip_end(&self) -> Option<&GzipEnd> {
        match &self.src {
            Source::Gzip(g) => g.end(),
            Source::Memory { .. } | Source::Plain(_) => None,
        }
    }

    /// The next line, or `None` at the end. A final line without `\n` is a line; a
    /// file ending in `\n` has no extra empty line. When gzip data turns out corrupt the
    /// lines stop (an unfinished line is dropped): see [`LineReader::gzip_end`]. An error
    /// is always the body's (transport), never the data's.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        let lent = std::mem::take(&mut self.lent);
        self.src.consume(lent);
        self.consumed += lent as u64;
        // A whole line already in the source's buffer (nearly every line) is lent from
        // there rather than copied: it is consumed at the next call.
        let avail = self.src.fill_buf().await?;
        if let Some(i) = memchr::memchr(b'\n', avail).filter(|i| *i <= self.keep) {
            self.lent = i + 1;
            self.line_no += 1;
            self.line_end = self.consumed + self.lent as u64;
            // The same slice again: the streaming sources read only into an empty buffer
            // (the gzip decoder also while a byte-order mark is undecided, which its first
            // call settled), memory is never refilled, and nothing was consumed. Asked twice because a borrow returned
            // from one branch could not be released for the other.
            let verified_before = self.verified_before(self.line_end);
            let avail = self.src.fill_buf().await?;
            return Ok(Some(Line {
                no: self.line_no,
                bytes: &avail[..i],
                too_long: false,
                cut: None,
                verified_before,
            }));
        }
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        let mut terminated = false;
        loop {
            let avail = self.src.fill_buf().await?;
            if avail.is_empty() {
                break;
            }
            any = true;
            let (chunk, used, end) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            let room = self.keep - self.buf.len();
            if chunk.len() > room {
                too_long = true;
            }
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.src.consume(used);
            self.consumed += used as u64;
            if end {
                terminated = true;
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        let cut = match self.gzip_end() {
            _ if terminated => None,
            Some(GzipEnd::Truncated(at)) => Some(*at),
            Some(GzipEnd::Corrupt { .. }) => return Ok(None),
            _ => None,
        };
        self.line_no += 1;
        self.line_end = self.consumed;
        let verified_before = self.verified_before(self.line_end);
        Ok(Some(Line {
            no: self.line_no,
            bytes: &self.buf,
            too_long,
            cut,
            verified_before,
        }))
    }
}

#[cfg(test)]
mod tests;

//! Reads one source object as lines: gzip detected by extension or magic bytes, lines
//! split on `\n`, and no line stored past [`MAX_LINE_BYTES`] + 1 bytes, so one huge line
//! cannot exhaust memory.

use async_compression::tokio::bufread::GzipDecoder;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::clean::MAX_LINE_BYTES;
use crate::store::Body;

const BUF: usize = 256 * 1024;
/// Bytes kept of a line: the limit plus one for a trailing `\r`.
const KEEP: usize = MAX_LINE_BYTES + 1;

/// One line, borrowed from the reader until the next call.
pub struct Line<'a> {
    /// 1-based physical line number.
    pub no: u64,
    /// Without the `\n`; at most [`KEEP`] bytes.
    pub bytes: &'a [u8],
    /// The line was longer than what `bytes` holds.
    pub too_long: bool,
}

/// Streams lines out of one object.
pub struct LineReader {
    inner: Box<dyn AsyncBufRead + Send + Unpin>,
    gzip: bool,
    buf: Vec<u8>,
    line_no: u64,
}

impl LineReader {
    /// Wraps a body, decompressing when the key ends in `.gz` or the bytes start with
    /// the gzip magic number. Concatenated gzip members are read as one stream.
    pub async fn open(body: Body, key: &str) -> std::io::Result<LineReader> {
        let mut raw = BufReader::with_capacity(BUF, body);
        let head = raw.fill_buf().await?;
        let gzip = key.ends_with(".gz") || head.starts_with(&[0x1f, 0x8b]);
        let inner: Box<dyn AsyncBufRead + Send + Unpin> = if gzip {
            let mut dec = GzipDecoder::new(raw);
            dec.multiple_members(true);
            Box::new(BufReader::with_capacity(BUF, dec))
        } else {
            Box::new(raw)
        };
        Ok(LineReader {
            inner,
            gzip,
            buf: Vec::new(),
            line_no: 0,
        })
    }

    /// Whether the object is being decompressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// The next line, or `None` at the end. A final line without `\n` is a line; a
    /// file ending in `\n` has no extra empty line.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, used, end) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            let room = KEEP - self.buf.len();
            if chunk.len() > room {
                too_long = true;
            }
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.inner.consume(used);
            if end {
                break;
            }
        }
        self.line_no += 1;
        Ok(Some(Line {
            no: self.line_no,
            bytes: &self.buf,
            too_long,
        }))
    }
}

/// Whether a read error means the gzip data itself is corrupt (deterministic: retrying
/// will not help) rather than the transport failing.
pub fn is_corrupt_data(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::UnexpectedEof
    )
}

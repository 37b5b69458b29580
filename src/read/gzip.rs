//! A gzip decoder that checks every member it reads: the header, the deflate data, and
//! the trailer's CRC-32 and length. It tells the three ways a stream can end apart
//! ([`GzipEnd`]: verified, cut short, corrupt) and keeps them out of the error channel:
//! the only `io::Error`s it returns come from reading the body itself, so a caller can
//! treat every `Err` as a transport failure and never has to guess from an `ErrorKind`
//! (flate2 reports damage inside the data as `ErrorKind::Other`, like many IO errors).

use flate2::{Crc, Decompress, FlushDecompress, Status};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::Body;

/// Decoded bytes produced per step; also the body's read buffer.
const BUF: usize = 256 * 1024;
/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// A member trailer's size: CRC-32 and length.
const TAIL: usize = 8;

/// Where in the compressed object something was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// 1-based number of the gzip member.
    pub member: u64,
    /// Bytes of the compressed object read when it was noticed.
    pub offset: u64,
}

/// How a gzip stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GzipEnd {
    /// Every member's CRC-32 and length matched its data (`members` is 0 for an empty
    /// object). Zero bytes after the last member are padding and are ignored, as gzip(1)
    /// does.
    Verified { members: u64 },
    /// The object ended inside a member (its header, data or trailer) with no error in
    /// what was read: a file cut short. What was decoded is all there is, unverified.
    Truncated(At),
    /// The data is not valid gzip: a deflate error, a CRC-32 or length mismatch, a bad
    /// header, or bytes after a member that do not start another member.
    Corrupt { at: At, detail: String },
}

enum State {
    Header,
    Data,
    Trailer,
}

/// Streams the decoded bytes of every member of one object, in order.
pub(crate) struct GzipDecoder {
    raw: BufReader<Body>,
    inflate: Decompress,
    crc: Crc,
    state: State,
    out: Vec<u8>,
    pos: usize,
    member: u64,
    offset: u64,
    /// The last decoded byte (after BOM removal), if any.
    last: Option<u8>,
    /// The current member began a line after earlier data: a BOM at its start is dropped.
    bom_pending: bool,
    /// The last 8 bytes of deflate data the current member consumed.
    tail: [u8; TAIL],
    /// Decoded bytes handed out before the current member began.
    before_member: u64,
    /// Decoded bytes the current member handed out (a dropped byte-order mark excluded).
    member_out: u64,
    /// The decoded offset where each member whose CRC-32 and length verified ends.
    verified_ends: Vec<u64>,
    end: Option<GzipEnd>,
}

impl GzipDecoder {
    /// Decodes `raw`, which must be positioned at the start of the object.
    pub(crate) fn new(raw: BufReader<Body>) -> GzipDecoder {
        GzipDecoder {
            raw,
            inflate: Decompress::new(false),
            crc: Crc::new(),
            state: State::Header,
            out: Vec::with_capacity(BUF),
            pos: 0,
            member: 1,
            offset: 0,
            last: None,
            bom_pending: false,
            tail: [0; TAIL],
            before_member: 0,
            member_out: 0,
            verified_ends: Vec::new(),
            end: None,
        }
    }

    /// The decoded offsets (in the bytes [`GzipDecoder::fill_buf`] hands out) where the
    /// members read so far whose CRC-32 and length verified end, in order: what lies
    /// before the last of them is trustworthy whatever follows.
    pub(crate) fn verified_ends(&self) -> &[u64] {
        &self.verified_ends
    }

    /// How the stream ended, once [`GzipDecoder::fill_buf`] has returned an empty slice.
    pub(crate) fn end(&self) -> Option<&GzipEnd> {
        self.end.as_ref()
    }

    /// Decoded bytes not consumed yet; empty at the end of the stream (see
    /// [`GzipDecoder::end`] for how it ended). An error is always the body's.
    pub(crate) async fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while (self.pos == self.out.len() || self.bom_pending) && self.end.is_none() {
            if self.pos == self.out.len() {
                self.out.clear();
                self.pos = 0;
            }
            match self.state {
                State::Header => self.header().await?,
                State::Data => self.data().await?,
                State::Trailer => self.trailer().await?,
            }
        }
        Ok(&self.out[self.pos..])
    }

    /// Marks `n` bytes of [`GzipDecoder::fill_buf`]'s slice as read.
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.out.len());
    }

    fn at(&self) -> At {
        At {
            member: self.member,
            offset: self.offset,
        }
    }

    fn finish(&mut self, end: GzipEnd) {
        if matches!(end, GzipEnd::Corrupt { .. }) {
            // Nothing decoded in the step that found the damage is handed out.
            self.out.truncate(self.pos);
        }
        self.bom_pending = false;
        self.end = Some(end);
    }

    fn corrupt(&mut self, detail: impl Into<String>) {
        let at = self.at();
        self.finish(GzipEnd::Corrupt {
            at,
            detail: detail.into(),
        });
    }

    /// Fills `buf` from the body, hashing it into `crc` when given. Returns how many
    /// bytes it got: fewer than `buf.len()` when the body ends first.
    async fn read_exact(&mut self, buf: &mut [u8], mut crc: Option<&mut Crc>) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let input = self.raw.fill_buf().await?;
            if input.is_empty() {
                break;
            }
            let k = input.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&input[..k]);
            if let Some(c) = crc.as_deref_mut() {
                c.update(&input[..k]);
            }
            self.raw.consume(k);
            self.offset += k as u64;
            n += k;
        }
        Ok(n)
    }

    /// Skips `n` header bytes. `false` when the body ends first.
    async fn skip(&mut self, mut n: usize, crc: &mut Crc) -> std::io::Result<bool> {
        while n > 0 {
            let input = self.raw.fill_buf().await?;
            if input.is_empty() {
                return Ok(false);
            }
            let k = input.len().min(n);
            crc.update(&input[..k]);
            self.raw.consume(k);
            self.offset += k as u64;
            n -= k;
        }
        Ok(true)
    }

    /// Skips a zero-terminated header field of any length. `false` when the body ends first.
    async fn skip_cstr(&mut self, crc: &mut Crc) -> std::io::Result<bool> {
        loop {
            let input = self.raw.fill_buf().await?;
            if input.is_empty() {
                return Ok(false);
            }
            let (k, done) = match memchr::memchr(0, input) {
                Some(i) => (i + 1, true),
                None => (input.len(), false),
            };
            crc.update(&input[..k]);
            self.raw.consume(k);
            self.offset += k as u64;
            if done {
                return Ok(true);
            }
        }
    }

    /// Reads one member header (RFC 1952 section 2.3).
    async fn header(&mut self) -> std::io::Result<()> {
        const FHCRC: u8 = 0x02;
        const FEXTRA: u8 = 0x04;
        const FNAME: u8 = 0x08;
        const FCOMMENT: u8 = 0x10;
        if self.member == 1 && self.raw.fill_buf().await?.is_empty() {
            self.finish(GzipEnd::Verified { members: 0 });
            return Ok(());
        }
        let mut hcrc = Crc::new();
        let mut fixed = [0u8; 10];
        let got = self.read_exact(&mut fixed, Some(&mut hcrc)).await?;
        // Checked on what arrived, so a cut header and bytes that are no header at all
        // are told apart.
        if fixed[..got.min(2)] != [0x1f, 0x8b][..got.min(2)] {
            let detail = match self.member {
                1 => "not gzip data (no gzip magic number)".to_owned(),
                n => format!("the data after member {} is not a gzip member", n - 1),
            };
            self.corrupt(detail);
            return Ok(());
        }
        if got > 2 && fixed[2] != 8 {
            self.corrupt(format!("compression method {} is not deflate", fixed[2]));
            return Ok(());
        }
        let flags = fixed[3];
        if got > 3 && flags & 0xe0 != 0 {
            self.corrupt(format!("reserved header flags are set ({flags:#04x})"));
            return Ok(());
        }
        if got < fixed.len() {
            self.finish(GzipEnd::Truncated(self.at()));
            return Ok(());
        }
        let mut complete = true;
        if flags & FEXTRA != 0 {
            let mut xlen = [0u8; 2];
            complete = self.read_exact(&mut xlen, Some(&mut hcrc)).await? == 2
                && self
                    .skip(usize::from(u16::from_le_bytes(xlen)), &mut hcrc)
                    .await?;
        }
        if complete && flags & FNAME != 0 {
            complete = self.skip_cstr(&mut hcrc).await?;
        }
        if complete && flags & FCOMMENT != 0 {
            complete = self.skip_cstr(&mut hcrc).await?;
        }
        if complete && flags & FHCRC != 0 {
            let mut stored = [0u8; 2];
            complete = self.read_exact(&mut stored, None).await? == 2;
            if complete && u16::from_le_bytes(stored) != (hcrc.sum() & 0xffff) as u16 {
                self.corrupt("header CRC mismatch");
                return Ok(());
            }
        }
        if !complete {
            self.finish(GzipEnd::Truncated(self.at()));
            return Ok(());
        }
        self.inflate.reset(false);
        self.crc.reset();
        self.tail = [0; TAIL];
        self.bom_pending = self.last == Some(b'\n');
        self.member_out = 0;
        self.state = State::Data;
        Ok(())
    }

    /// One step of inflating the current member's deflate data into `out`.
    async fn data(&mut self) -> std::io::Result<()> {
        let input = self.raw.fill_buf().await?;
        if input.is_empty() {
            match self.ends_like_a_member() {
                Some(detail) => self.corrupt(detail),
                None => self.finish(GzipEnd::Truncated(self.at())),
            }
            return Ok(());
        }
        if self.out.capacity() - self.out.len() < BUF / 2 {
            self.out.reserve(BUF);
        }
        let (in0, start) = (self.inflate.total_in(), self.out.len());
        let status = self
            .inflate
            .decompress_vec(input, &mut self.out, FlushDecompress::None);
        let used = (self.inflate.total_in() - in0) as usize;
        if used >= TAIL {
            self.tail.copy_from_slice(&input[used - TAIL..used]);
        } else {
            self.tail.rotate_left(used);
            self.tail[TAIL - used..].copy_from_slice(&input[..used]);
        }
        self.raw.consume(used);
        self.offset += used as u64;
        self.crc.update(&self.out[start..]);
        self.member_out += (self.out.len() - start) as u64;
        let ended = match status {
            Err(e) => {
                self.corrupt(e.to_string());
                return Ok(());
            }
            Ok(Status::StreamEnd) => true,
            Ok(_) if used == 0 && self.out.len() == start => {
                self.corrupt("the deflate decoder made no progress");
                return Ok(());
            }
            Ok(_) => false,
        };
        if self.bom_pending && (self.out.len() >= BOM.len() || ended) {
            self.bom_pending = false;
            if self.out.starts_with(BOM) {
                self.out.drain(..BOM.len());
                self.member_out -= BOM.len() as u64;
            }
        }
        if let Some(&b) = self.out.last() {
            self.last = Some(b);
        }
        if ended {
            self.state = State::Trailer;
        }
        Ok(())
    }

    /// When the object ends inside deflate data, or right at its end: whether its last
    /// 8 bytes read as a trailer for about the data decoded. A file cut short ends in compressed data,
    /// whose last 4 bytes fall this close to the decoded length about once in 30,000
    /// cuts; a complete member whose data was damaged near its end ends in its real
    /// trailer, and the decoder, thrown off by the damage, reads that trailer as more
    /// deflate data and runs out. Telling the two apart keeps garbage decoded after such
    /// damage from passing for the complete lines of a cut file.
    fn ends_like_a_member(&self) -> Option<String> {
        const WINDOW: i64 = 1 << 20;
        if self.inflate.total_in() < TAIL as u64 {
            return None;
        }
        let size = u32::from_le_bytes([self.tail[4], self.tail[5], self.tail[6], self.tail[7]]);
        let decoded = self.crc.amount();
        let gap = i64::from(size.wrapping_sub(decoded) as i32);
        (gap.abs() <= WINDOW).then(|| {
            format!(
                "the object ends in what reads as this member's trailer (a length of {size} bytes; \
                 {decoded} were decoded) but the decoder read it as deflate data: data damaged near its end"
            )
        })
    }

    /// Reads and checks the member trailer, then what follows the member.
    async fn trailer(&mut self) -> std::io::Result<()> {
        let mut t = [0u8; TAIL];
        let got = self.read_exact(&mut t, None).await?;
        if got < TAIL {
            // Cut inside the trailer: check what arrived of it. A cut file's bytes match;
            // after damage that ended the deflate data early they are whatever followed.
            let mut want = [0u8; TAIL];
            want[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
            want[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
            if t[..got] != want[..got] {
                self.corrupt(format!(
                    "the object ends {got} bytes into a member trailer that does not match the data"
                ));
            } else if let Some(detail) = self.ends_like_a_member().filter(|_| got == 0) {
                self.corrupt(detail);
            } else {
                self.finish(GzipEnd::Truncated(self.at()));
            }
            return Ok(());
        }
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        if crc != self.crc.sum() {
            self.corrupt(format!(
                "CRC-32 mismatch: the trailer says {crc:08x}, the data gives {:08x}",
                self.crc.sum()
            ));
            return Ok(());
        }
        if size != self.crc.amount() {
            self.corrupt(format!(
                "length mismatch: the trailer says {size} bytes (mod 2^32), the data has {}",
                self.crc.amount()
            ));
            return Ok(());
        }
        let end = self.before_member + self.member_out;
        self.verified_ends.push(end);
        self.before_member = end;
        let next = self.raw.fill_buf().await?;
        match next.first() {
            None => self.finish(GzipEnd::Verified { members: self.member }),
            Some(0) => self.padding().await?,
            Some(_) => {
                self.member += 1;
                self.state = State::Header;
            }
        }
        Ok(())
    }

    /// Zero bytes after the last member: padding, if nothing else follows.
    async fn padding(&mut self) -> std::io::Result<()> {
        loop {
            let input = self.raw.fill_buf().await?;
            if input.is_empty() {
                self.finish(GzipEnd::Verified { members: self.member });
                return Ok(());
            }
            if let Some(i) = input.iter().position(|&b| b != 0) {
                self.raw.consume(i);
                self.offset += i as u64;
                self.corrupt(format!(
                    "data after the zero padding that follows member {}",
                    self.member
                ));
                return Ok(());
            }
            let n = input.len();
            self.raw.consume(n);
            self.offset += n as u64;
        }
    }
}

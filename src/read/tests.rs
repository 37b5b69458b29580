//! The line reader and the gzip member checks, over bodies in memory.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::*;

fn gz_level(text: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(text).unwrap();
    e.finish().unwrap()
}

fn gz(text: &[u8]) -> Vec<u8> {
    gz_level(text, 6)
}

fn body(bytes: Vec<u8>) -> Body {
    Box::new(std::io::Cursor::new(bytes))
}

/// What a reader yields: each line (bytes, whether cut) and how the gzip data ended.
#[derive(Debug)]
struct Read {
    lines: Vec<(Vec<u8>, Option<At>)>,
    end: Option<GzipEnd>,
}

/// Reads `bytes` as a streamed body and as bytes in memory (read ahead), which must
/// give the same lines and end.
async fn read(bytes: Vec<u8>, key: &str) -> Read {
    let streamed = read_input(body(bytes.clone()).into(), key).await;
    let in_memory = read_input(Input::Bytes(bytes), key).await;
    assert_eq!(
        format!("{streamed:?}"),
        format!("{in_memory:?}"),
        "streamed and in-memory reads differ"
    );
    streamed
}

async fn read_input(input: Input, key: &str) -> Read {
    let mut r = LineReader::open(input, key).await.unwrap();
    let mut lines = Vec::new();
    while let Some(l) = r.next_line().await.unwrap() {
        lines.push((l.bytes.to_vec(), l.cut));
    }
    let end = r.gzip_end().cloned();
    Read { lines, end }
}

fn texts(r: &Read) -> Vec<String> {
    r.lines
        .iter()
        .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
        .collect()
}

fn event_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"{i:08x}-0000-4000-8000-{i:012x}","created_at":"2020-01-01 00:00:{:02}","user_email":"u{i}@x.io","event_name":"e{}","metadata":{{"n":{i}}}}}"#,
                i % 60,
                i % 7
            )
        })
        .collect()
}

fn joined(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

/// A tiny deterministic generator (xorshift64*), so damage is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn plain_lines_are_split_and_counted() {
    let r = read(b"a\r\nb\n\nc".to_vec(), "k.json").await;
    assert_eq!(texts(&r), ["a\r", "b", "", "c"]);
    assert!(r.end.is_none());
    let r = read(b"a\n".to_vec(), "k.json").await;
    assert_eq!(texts(&r), ["a"]);
}

#[tokio::test]
async fn gzip_is_verified_and_read_by_magic_or_extension() {
    let lines = event_lines(5000);
    let r = read(gz(&joined(&lines)), "k.json").await;
    assert_eq!(texts(&r), lines);
    assert_eq!(r.end, Some(GzipEnd::Verified { members: 1 }));
    assert!(r.lines.iter().all(|(_, cut)| cut.is_none()));
    // An empty object named .gz is an empty file.
    let r = read(Vec::new(), "k.json.gz").await;
    assert!(r.lines.is_empty());
    assert_eq!(r.end, Some(GzipEnd::Verified { members: 0 }));
}

#[tokio::test]
async fn concatenated_members_are_one_stream_and_lines_may_span_them() {
    let mut bytes = gz(b"one\ntw");
    bytes.extend(gz(b"o\nthree\n"));
    bytes.extend(gz(b""));
    bytes.extend(gz(b"four"));
    let r = read(bytes, "k.gz").await;
    assert_eq!(texts(&r), ["one", "two", "three", "four"]);
    assert_eq!(r.end, Some(GzipEnd::Verified { members: 4 }));
}

#[tokio::test]
async fn a_bom_starting_a_later_member_at_a_line_start_is_dropped() {
    let mut bytes = gz(b"\xEF\xBB\xBFfirst\n");
    bytes.extend(gz(b"\xEF\xBB\xBFsecond\n"));
    // Split mid-line: the bytes are content, not a file start, and stay.
    bytes.extend(gz(b"thi"));
    bytes.extend(gz(b"\xEF\xBB\xBFrd\n"));
    // A member so short the BOM arrives alone.
    bytes.extend(gz(b"\xEF\xBB\xBF"));
    bytes.extend(gz(b"fourth\n"));
    let r = read(bytes, "k.gz").await;
    // Line 1's BOM is the cleaner's to drop, as in a plain file.
    assert_eq!(texts(&r), ["\u{feff}first", "second", "thi\u{feff}rd", "fourth"]);
    assert_eq!(r.end, Some(GzipEnd::Verified { members: 6 }));
}

#[tokio::test]
async fn header_fields_are_skipped_and_the_header_crc_checked() {
    let mut member = vec![0x1f, 0x8b, 8, 0x02 | 0x04 | 0x08 | 0x10, 0, 0, 0, 0, 0, 3];
    member.extend([3, 0, b'x', b'y', b'z']); // FEXTRA
    member.extend(b"name.json\0comment\0");
    let crc = {
        let mut c = flate2::Crc::new();
        c.update(&member);
        (c.sum() & 0xffff) as u16
    };
    let plain = gz(b"hello\n");
    let tail = &plain[10..]; // deflate data and trailer of a plain member
    let mut good = member.clone();
    good.extend(crc.to_le_bytes());
    good.extend(tail);
    let r = read(good, "k.gz").await;
    assert_eq!(texts(&r), ["hello"]);
    assert_eq!(r.end, Some(GzipEnd::Verified { members: 1 }));

    let mut bad = member;
    bad.extend((crc ^ 1).to_le_bytes());
    bad.extend(tail);
    let r = read(bad, "k.gz").await;
    assert!(
        matches!(r.end, Some(GzipEnd::Corrupt { ref detail, .. }) if detail.contains("header CRC")),
        "{r:?}"
    );
}

#[tokio::test]
async fn zero_padding_after_the_last_member_is_ignored_other_bytes_are_not() {
    let mut padded = gz(b"a\n");
    padded.extend([0u8; 512]);
    let r = read(padded, "k.gz").await;
    assert_eq!(texts(&r), ["a"]);
    assert_eq!(r.end, Some(GzipEnd::Verified { members: 1 }));

    for tail in [&b"garbage"[..], &[0, 0, 7][..], &[0x1f][..]] {
        let mut bytes = gz(b"a\n");
        bytes.extend(tail);
        let r = read(bytes, "k.gz").await;
        match &r.end {
            Some(GzipEnd::Corrupt { .. }) | Some(GzipEnd::Truncated(_)) => {}
            other => panic!("{tail:?}: {other:?}"),
        }
    }
    let mut bytes = gz(b"a\n");
    bytes.extend(b"garbage");
    let r = read(bytes, "k.gz").await;
    assert!(
        matches!(r.end, Some(GzipEnd::Corrupt { at: At { member: 2, .. }, ref detail }) if detail.contains("after member 1")),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_key_ending_in_gz_that_is_not_gzip_is_corrupt() {
    let r = read(b"{\"id\":1}\n".to_vec(), "k.json.gz").await;
    assert!(r.lines.is_empty());
    assert!(
        matches!(r.end, Some(GzipEnd::Corrupt { at: At { member: 1, offset: _ }, ref detail }) if detail.contains("magic")),
        "{r:?}"
    );
}

/// A valid member, then one whose first deflate block has the reserved type 3: flate2
/// reports this as `ErrorKind::Other`, which once passed for a transport error.
#[tokio::test]
async fn a_reserved_block_type_is_corrupt_data_not_an_error() {
    let mut bytes = gz(b"good\n");
    let second_at = bytes.len() as u64;
    let mut second = gz(b"also good\n");
    second[10] = 0b111; // BFINAL = 1, BTYPE = 11
    bytes.extend(second);
    let r = read(bytes, "k.gz").await;
    match r.end {
        Some(GzipEnd::Corrupt { at, detail }) => {
            assert_eq!(at.member, 2);
            assert!(at.offset > second_at, "{at:?}");
            assert!(detail.contains("deflate"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

/// A byte flipped inside a stored block decodes fine; only the CRC-32 finds it.
#[tokio::test]
async fn a_flipped_byte_in_a_stored_block_fails_the_crc() {
    let text = joined(&event_lines(50));
    let mut bytes = gz_level(&text, 0);
    let i = bytes.len() / 2;
    bytes[i] ^= 0x20;
    let r = read(bytes, "k.gz").await;
    assert!(
        matches!(r.end, Some(GzipEnd::Corrupt { ref detail, .. }) if detail.contains("CRC-32 mismatch")),
        "{r:?}"
    );
    // A length that disagrees is caught too.
    let mut bytes = gz(b"a\n");
    let n = bytes.len();
    bytes[n - 4] ^= 1;
    let r = read(bytes, "k.gz").await;
    assert!(
        matches!(r.end, Some(GzipEnd::Corrupt { ref detail, .. }) if detail.contains("length mismatch")),
        "{r:?}"
    );
}

/// Cut anywhere, a file yields a prefix of its lines; the one the data ends inside is
/// marked cut, and nothing is corrupt.
#[tokio::test]
async fn a_file_cut_anywhere_yields_its_complete_lines_and_marks_the_cut_one() {
    let lines = event_lines(300);
    let text = joined(&lines);
    let full = gz(&text);
    for cut in (1..full.len()).step_by(97).chain(full.len() - 9..full.len()) {
        let r = read(full[..cut].to_vec(), "k.gz").await;
        assert!(
            matches!(r.end, Some(GzipEnd::Truncated(_))),
            "cut {cut}: {:?}",
            r.end
        );
        let got = texts(&r);
        for (i, (line, cut_at)) in r.lines.iter().enumerate() {
            if cut_at.is_some() {
                assert_eq!(i, r.lines.len() - 1, "only the last line is cut");
                assert!(lines[i].as_bytes().starts_with(line), "cut {cut}");
            } else {
                assert_eq!(got[i], lines[i], "cut {cut}");
            }
        }
    }
    // Only the trailer missing: every line, none cut.
    let r = read(full[..full.len() - 4].to_vec(), "k.gz").await;
    assert_eq!(texts(&r), lines);
    assert!(r.lines.iter().all(|(_, c)| c.is_none()));
}

/// Random bytes written over the deflate data, anywhere or near its end (where the
/// decoder is most likely to run out of data before it notices): the damage is found,
/// or, rarely, it looks like a cut, and then no line it yields is one the file does
/// not hold (the one it ends inside included). The output is never passed off as
/// verified unless it is the file's.
#[tokio::test]
async fn random_damage_never_yields_a_line_the_file_does_not_hold() {
    let lines = event_lines(1000);
    let text = joined(&lines);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut corrupt, mut truncated) = (0, 0);
    for level in [1, 6, 9] {
        let full = gz_level(&text, level);
        let data = 10..full.len() - 8;
        for trial in 0..400 {
            let mut bytes = full.clone();
            let start = if trial % 2 == 0 {
                data.start + rng.below(data.len() as u64) as usize
            } else {
                data.end - 1 - rng.below(64) as usize
            };
            let len = (1 + rng.below(16) as usize).min(data.end - start);
            for b in bytes.iter_mut().skip(start).take(len) {
                *b = rng.next() as u8;
            }
            if bytes == full {
                continue;
            }
            let r = read(bytes, "k.gz").await;
            match r.end {
                Some(GzipEnd::Corrupt { .. }) => corrupt += 1,
                Some(GzipEnd::Truncated(_)) => {
                    truncated += 1;
                    for (i, (line, cut)) in r.lines.iter().enumerate() {
                        let original = lines.get(i).map(String::as_bytes).unwrap_or_default();
                        let ok = match cut {
                            None => line == original,
                            Some(_) => original.starts_with(line),
                        };
                        assert!(ok, "level {level}, damage at {start}+{len} of {}: line {} of {} is not the file's: {:?} {:?}", full.len(), i + 1, r.lines.len(), String::from_utf8_lossy(line), r.end);
                    }
                }
                // Only bits the decoder never reads changed (padding after the last
                // block): the CRC-32 vouches for the output.
                Some(GzipEnd::Verified { .. }) => {
                    assert_eq!(texts(&r), lines, "level {level}, damage at {start}+{len}")
                }
                None => panic!("not read as gzip"),
            }
        }
    }
    assert!(corrupt > 1000, "corrupt {corrupt}, truncated {truncated}");
}

/// A body that fails after some bytes, as a dropped connection does.
struct Failing {
    data: std::io::Cursor<Vec<u8>>,
    fail_after: u64,
    kind: std::io::ErrorKind,
}

impl AsyncRead for Failing {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.data.position() >= this.fail_after {
            return Poll::Ready(Err(std::io::Error::new(this.kind, "connection reset")));
        }
        let room = (this.fail_after - this.data.position()) as usize;
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room.min(buf.remaining())));
        let r = Pin::new(&mut this.data).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        buf.advance(n);
        r
    }
}

/// Whatever its kind, an error from the body is an error (transport), never damage.
#[tokio::test]
async fn a_body_error_is_an_error_whatever_its_kind() {
    let full = gz(&joined(&event_lines(2000)));
    for kind in [
        std::io::ErrorKind::Other,
        std::io::ErrorKind::InvalidData,
        std::io::ErrorKind::UnexpectedEof,
        std::io::ErrorKind::ConnectionReset,
    ] {
        let b: Body = Box::new(Failing {
            data: std::io::Cursor::new(full.clone()),
            fail_after: full.len() as u64 / 2,
            kind,
        });
        let mut r = LineReader::open(b, "k.gz").await.unwrap();
        let err = loop {
            match r.next_line().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{kind:?}: ended without the error, as {:?}", r.gzip_end()),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), kind);
        assert!(r.gzip_end().is_none(), "{kind:?}");
    }
}

#[tokio::test]
async fn lines_past_the_limit_are_cut_and_flagged() {
    let long = vec![b'x'; 100];
    let mut text = long.clone();
    text.extend(b"\nshort\n");
    for input in [body(text.clone()).into(), Input::Bytes(text)] {
        let mut r = LineReader::with_limit(input, "k.json", 10).await.unwrap();
        let l = r.next_line().await.unwrap().unwrap();
        assert_eq!((l.bytes.len(), l.too_long), (10, true));
        let l = r.next_line().await.unwrap().unwrap();
        assert_eq!((l.bytes, l.too_long), (&b"short"[..], false));
        assert!(r.next_line().await.unwrap().is_none());
    }
}

/// A line of 3 MiB spans many 256 KiB read buffers, plain and gzipped: it is kept to the
/// limit and flagged, nothing of it leaks into the next line, and line numbers hold.
#[tokio::test]
async fn a_line_over_the_limit_across_read_buffers_is_cut_once() {
    let huge = vec![b'y'; 3 * 1024 * 1024 + 17];
    let mut text = b"first\n".to_vec();
    text.extend(&huge);
    text.extend(b"\nlast\n");
    let gzipped = gz(&text);
    let inputs: [(Input, &str); 4] = [
        (body(text.clone()).into(), "k.json"),
        (body(gzipped.clone()).into(), "k.json"),
        (Input::Bytes(text), "k.json"),
        (Input::Bytes(gzipped), "k.json"),
    ];
    for (input, key) in inputs {
        let mut r = LineReader::open(input, key).await.unwrap();
        let l = r.next_line().await.unwrap().unwrap();
        assert_eq!((l.no, l.bytes, l.too_long), (1, &b"first"[..], false));
        let l = r.next_line().await.unwrap().unwrap();
        assert_eq!((l.no, l.bytes.len(), l.too_long), (2, SOURCE_LINE_KEEP, true));
        assert!(l.bytes.iter().all(|&b| b == b'y'));
        let l = r.next_line().await.unwrap().unwrap();
        assert_eq!((l.no, l.bytes, l.too_long), (3, &b"last"[..], false));
        assert!(r.next_line().await.unwrap().is_none());
    }
}

//! PURE: one gzipped JSON-lines part in memory, and the COPY manifest that lists parts.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

/// Level 1: staging is read once and deleted, so speed beats ratio (see NOTES: level 1
/// is several times faster than level 6 for a modestly larger output).
const LEVEL: u32 = 1;

/// Rows are gathered into blocks of this size before compression: the encoder is slow
/// when fed the many small writes that serialising one row makes.
const BLOCK: usize = 64 * 1024;

/// A gzip member being filled. Memory is bounded by the compressed size of one part
/// plus one block.
pub struct GzPart {
    enc: GzEncoder<Vec<u8>>,
    block: Vec<u8>,
    raw_bytes: u64,
    rows: u64,
}

impl Default for GzPart {
    fn default() -> Self {
        GzPart {
            enc: GzEncoder::new(Vec::new(), Compression::new(LEVEL)),
            block: Vec::with_capacity(BLOCK),
            raw_bytes: 0,
            rows: 0,
        }
    }
}

impl GzPart {
    /// Uncompressed bytes written so far: the measure parts are cut by.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Rows written to the part.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends one row: `row` serialises straight into the current block (a plain
    /// `Vec`, the fast path for serde_json); full blocks go to the encoder whole.
    pub fn push_row(&mut self, row: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> std::io::Result<()> {
        let before = self.block.len();
        let result = row(&mut self.block);
        if result.is_err() {
            self.block.truncate(before);
            return result;
        }
        self.raw_bytes += (self.block.len() - before) as u64;
        self.rows += 1;
        if self.block.len() >= BLOCK {
            self.enc.write_all(&self.block)?;
            self.block.clear();
        }
        Ok(())
    }

    /// A part holding the first `rows` rows of a finished part's bytes (`finish`'s
    /// output): how a stream is truncated back to a checkpoint. Reads the old part as a
    /// stream, so memory holds the two compressed parts, not the rows.
    pub fn first_rows_of(bytes: &[u8], rows: u64) -> std::io::Result<GzPart> {
        let mut part = GzPart::default();
        let mut reader = std::io::BufReader::new(flate2::read::GzDecoder::new(bytes));
        let mut row = Vec::new();
        while part.rows < rows {
            row.clear();
            let n = std::io::BufRead::read_until(&mut reader, b'\n', &mut row)?;
            if n == 0 || !row.ends_with(b"\n") {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the part holds {} complete rows, not {rows}", part.rows),
                ));
            }
            part.push_row(|b| {
                b.extend_from_slice(&row);
                Ok(())
            })?;
        }
        Ok(part)
    }

    /// Closes the gzip stream and returns the part's bytes.
    pub fn finish(mut self) -> std::io::Result<Vec<u8>> {
        self.enc.write_all(&self.block)?;
        self.enc.finish()
    }
}

/// A Redshift COPY manifest (`{"entries": [...]}`): the exact list of parts to load, so
/// a COPY never picks up a stray object under the prefix.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    pub url: String,
    /// A missing part must fail the COPY, never load a partial set.
    pub mandatory: bool,
    pub meta: EntryMeta,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryMeta {
    /// Compressed size in bytes.
    pub content_length: u64,
}

impl Manifest {
    /// Lists one part, with its size (COPY checks `meta.content_length`).
    pub fn push(&mut self, url: String, content_length: u64) {
        self.entries.push(ManifestEntry {
            url,
            mandatory: true,
            meta: EntryMeta { content_length },
        });
    }

    /// The manifest as COPY reads it (loading-data-files-using-manifest.html).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn part_round_trips_and_counts_raw_bytes() {
        let mut part = GzPart::default();
        let mut expected = Vec::new();
        for i in 0..20_000u32 {
            let row = format!("{{\"n\":{i}}}\n");
            part.push_row(|b| b.write_all(row.as_bytes())).unwrap();
            expected.extend_from_slice(row.as_bytes());
        }
        // A row whose serialisation fails leaves nothing behind.
        let failed = part.push_row(|b| {
            b.extend_from_slice(b"half a row");
            Err(std::io::Error::other("boom"))
        });
        assert!(failed.is_err());
        assert_eq!(part.rows(), 20_000);
        assert_eq!(part.raw_bytes(), expected.len() as u64);
        let bytes = part.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn first_rows_of_keeps_exactly_the_first_rows() {
        let mut part = GzPart::default();
        let rows: Vec<String> = (0..30_000u32).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        for r in &rows {
            part.push_row(|b| b.write_all(r.as_bytes())).unwrap();
        }
        let bytes = part.finish().unwrap();
        for keep in [0u64, 1, 17_000, 30_000] {
            let cut = GzPart::first_rows_of(&bytes, keep).unwrap();
            assert_eq!(cut.rows(), keep);
            let want: String = rows[..keep as usize].concat();
            assert_eq!(cut.raw_bytes(), want.len() as u64);
            let mut out = String::new();
            flate2::read::GzDecoder::new(&cut.finish().unwrap()[..])
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, want);
        }
        assert!(GzPart::first_rows_of(&bytes, 30_001).is_err());
    }

    #[test]
    fn manifest_is_redshift_shaped() {
        let mut m = Manifest::default();
        m.push("s3://b/k/part-00000.jsonl.gz".into(), 42);
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"entries": [{"url": "s3://b/k/part-00000.jsonl.gz", "mandatory": true,
                "meta": {"content_length": 42}}]})
        );
    }
}

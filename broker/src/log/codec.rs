//! Record-batch codecs: the records section of a batch, decompressed when needed,
//! and compression back into a codec. Shared by produce validation, compaction,
//! keyless-record checks and timestamp lookups; fetch never decompresses.
//!
//! Every decompression is bounded: a stream yields at most [`decompressed_limit`]
//! bytes and fails past it, so a small batch that inflates to gigabytes (a
//! decompression bomb) costs a bounded amount of memory and time wherever it is opened.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read};

use bytes::BytesMut;
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

use super::batch::{RecordBatch, HEADER_LEN};
use super::LogError;

/// How far a batch's records may inflate: a compressed records section decompresses
/// to at most this many times `max(max.message.bytes, 1 MiB)` (16 MiB by default).
pub const DECOMPRESSION_RATIO: u64 = 16;
const LIMIT_FLOOR: u64 = 1024 * 1024;

/// The most bytes a compressed records section may decompress to under a topic whose
/// `max.message.bytes` is `max_message_bytes`.
pub fn decompressed_limit(max_message_bytes: u64) -> u64 {
    max_message_bytes
        .max(LIMIT_FLOOR)
        .saturating_mul(DECOMPRESSION_RATIO)
}

/// Why a compressed records section could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Corrupt(String),
}

impl CodecError {
    /// The log's error for a batch at `base_offset`: an over-limit batch is an invalid
    /// record (it is well formed, only too big), everything else a corrupt message.
    pub fn into_log_error(self, base_offset: i64, codec: u8) -> LogError {
        match self {
            CodecError::TooLarge { .. } => LogError::InvalidRecord {
                message: format!("batch at offset {base_offset} (codec {codec}): {self}"),
                record_errors: Vec::new(),
            },
            _ => LogError::CorruptMessage(format!(
                "cannot decompress batch at offset {base_offset} (codec {codec}): {self}"
            )),
        }
    }

    /// Recovers the codec error carried inside an `io::Error` from a [`Limited`] or
    /// [`SnappyReader`] stream; other i/o errors are corrupt input.
    pub fn from_io(e: io::Error) -> CodecError {
        let text = e.to_string();
        match e.into_inner().map(|inner| inner.downcast::<CodecError>()) {
            Some(Ok(codec)) => *codec,
            _ => CodecError::Corrupt(text),
        }
    }
}

/// A reader that yields at most `left` bytes of `inner` and fails (rather than stops)
/// when `inner` has more: a truncated section must not pass for a complete one.
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(CodecError::TooLarge { limit: self.limit })),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Kafka's snappy framing (snappy-java's `SnappyOutputStream`: a 16-byte magic header,
/// then blocks of a 4-byte big-endian length and a raw snappy block), or one raw
/// snappy block. Decoded a block at a time; no block may claim more than `left`.
struct SnappyReader<'a> {
    input: &'a [u8],
    block: Vec<u8>,
    pos: usize,
    left: u64,
    limit: u64,
    raw: bool,
}

const SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const SNAPPY_HEADER_LEN: usize = 16;

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], limit: u64) -> SnappyReader<'a> {
        let framed = input.len() >= SNAPPY_HEADER_LEN && input.starts_with(SNAPPY_MAGIC);
        SnappyReader {
            input: if framed {
                &input[SNAPPY_HEADER_LEN..]
            } else {
                input
            },
            block: Vec::new(),
            pos: 0,
            left: limit,
            limit,
            raw: !framed,
        }
    }

    /// Decodes the next block into `self.block`; false at the end of the input.
    fn next_block(&mut self) -> Result<bool, CodecError> {
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.raw {
            std::mem::take(&mut self.input)
        } else {
            if self.input.len() < 4 {
                return Err(CodecError::Corrupt("truncated snappy block length".into()));
            }
            let len =
                u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]])
                    as usize;
            let rest = &self.input[4..];
            if len > rest.len() {
                return Err(CodecError::Corrupt(format!(
                    "snappy block of {len} bytes, {} present",
                    rest.len()
                )));
            }
            self.input = &rest[len..];
            &rest[..len]
        };
        let len = snap::raw::decompress_len(compressed)
            .map_err(|e| CodecError::Corrupt(format!("snappy: {e}")))?;
        if len as u64 > self.left {
            return Err(CodecError::TooLarge { limit: self.limit });
        }
        self.left -= len as u64;
        self.block.clear();
        self.block.resize(len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| CodecError::Corrupt(format!("snappy: {e}")))?;
        self.block.truncate(n);
        self.pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block().map_err(io::Error::other)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A buffered stream of the decompressed records section `raw` of a batch compressed
/// with `codec`, failing with [`CodecError::TooLarge`] past `limit` bytes.
pub fn decompressing_reader<'a>(
    codec: u8,
    raw: &'a [u8],
    limit: u64,
) -> Result<Box<dyn BufRead + 'a>, CodecError> {
    let inner: Box<dyn Read + 'a> = match codec {
        1 => Box::new(flate2::read::GzDecoder::new(raw)),
        2 => Box::new(SnappyReader::new(raw, limit)),
        3 => Box::new(lz4::Decoder::new(raw).map_err(|e| CodecError::Corrupt(e.to_string()))?),
        4 => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|e| CodecError::Corrupt(e.to_string()))?,
        ),
        other => return Err(CodecError::UnknownCodec(other)),
    };
    Ok(Box::new(BufReader::with_capacity(
        32 * 1024,
        Limited {
            inner,
            left: limit,
            limit,
        },
    )))
}

/// The batch's records section, decompressed if needed into at most `limit` bytes.
pub fn records_section<'a>(batch: &RecordBatch<'a>, limit: u64) -> Result<Cow<'a, [u8]>, LogError> {
    let raw = &batch.bytes()[HEADER_LEN..];
    let h = batch.header();
    if !h.is_compressed() {
        return Ok(Cow::Borrowed(raw));
    }
    let read = || -> Result<Vec<u8>, CodecError> {
        let mut reader = decompressing_reader(h.compression(), raw, limit)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map_err(CodecError::from_io)?;
        Ok(out)
    };
    read()
        .map(Cow::Owned)
        .map_err(|e| e.into_log_error(h.base_offset, h.compression()))
}

pub fn compress(codec: u8, raw: &[u8]) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::new();
    let fill = |buf: &mut BytesMut| {
        buf.extend_from_slice(raw);
        Ok(())
    };
    let result = match codec {
        1 => <Gzip as Compressor<Vec<u8>>>::compress(&mut out, fill),
        2 => <Snappy as Compressor<Vec<u8>>>::compress(&mut out, fill),
        3 => <Lz4 as Compressor<Vec<u8>>>::compress(&mut out, fill),
        4 => <Zstd as Compressor<Vec<u8>>>::compress(&mut out, fill),
        other => return Err(io::Error::other(format!("unknown compression codec {other}")).into()),
    };
    result.map_err(|e| io::Error::other(format!("cannot recompress a cleaned batch: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(codec: u8, raw: &[u8], limit: u64) -> Result<Vec<u8>, CodecError> {
        let mut r = decompressing_reader(codec, raw, limit)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(CodecError::from_io)?;
        Ok(out)
    }

    #[test]
    fn every_codec_round_trips_within_the_limit() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for codec in 1..=4 {
            let packed = compress(codec, &data).unwrap();
            assert_eq!(
                inflate(codec, &packed, data.len() as u64).unwrap(),
                data,
                "codec {codec}"
            );
        }
    }

    #[test]
    fn every_codec_refuses_output_past_the_limit() {
        let data = vec![0u8; 4 * 1024 * 1024];
        for codec in 1..=4 {
            let packed = compress(codec, &data).unwrap();
            assert!(
                packed.len() < data.len() / 10,
                "codec {codec} compresses zeros"
            );
            let err = inflate(codec, &packed, 1024 * 1024).unwrap_err();
            assert!(
                matches!(err, CodecError::TooLarge { limit: 1048576 }),
                "codec {codec}: {err}"
            );
        }
    }

    #[test]
    fn raw_snappy_block_is_bounded_before_allocation() {
        // A raw snappy block whose header claims 2^32-1 bytes.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let err = inflate(2, &claim, 1 << 20).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn garbage_and_unknown_codecs_are_errors() {
        let garbage = b"this is not compressed at all, in any codec".to_vec();
        for codec in 1..=4 {
            let err = inflate(codec, &garbage, 1 << 20).unwrap_err();
            assert!(
                matches!(err, CodecError::Corrupt(_)),
                "codec {codec}: {err}"
            );
        }
        for codec in 5..=7 {
            assert!(matches!(
                inflate(codec, &garbage, 1 << 20),
                Err(CodecError::UnknownCodec(c)) if c == codec
            ));
        }
    }

    #[test]
    fn limit_scales_with_max_message_bytes() {
        assert_eq!(
            decompressed_limit(1024 * 1024 + 12),
            (1024 * 1024 + 12) * 16
        );
        assert_eq!(decompressed_limit(1000), 16 * 1024 * 1024);
        assert_eq!(decompressed_limit(u64::MAX), u64::MAX);
    }
}

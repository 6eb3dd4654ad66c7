//! Record-batch codecs: the records section of a batch, decompressed when needed,
//! and compression back into a codec. Shared by compaction, keyless-record checks and
//! timestamp lookups; the produce and fetch paths never decompress.

use std::borrow::Cow;
use std::io;

use bytes::BytesMut;
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use super::batch::{RecordBatch, HEADER_LEN};
use super::LogError;

/// The batch's records section, decompressed if needed.
pub fn records_section<'a>(batch: &RecordBatch<'a>) -> Result<Cow<'a, [u8]>, LogError> {
    let raw = &batch.bytes()[HEADER_LEN..];
    let h = batch.header();
    if !h.is_compressed() {
        return Ok(Cow::Borrowed(raw));
    }
    decompress(h.compression(), raw)
        .map(Cow::Owned)
        .map_err(|e| {
            LogError::CorruptMessage(format!(
                "cannot decompress batch at offset {} (codec {}): {e}",
                h.base_offset,
                h.compression()
            ))
        })
}

fn decompress(codec: u8, raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut input = raw;
    let take = |buf: &mut bytes::Bytes| Ok(buf.to_vec());
    let result = match codec {
        1 => <Gzip as Decompressor<&[u8]>>::decompress(&mut input, take),
        2 => <Snappy as Decompressor<&[u8]>>::decompress(&mut input, take),
        3 => <Lz4 as Decompressor<&[u8]>>::decompress(&mut input, take),
        4 => <Zstd as Decompressor<&[u8]>>::decompress(&mut input, take),
        other => return Err(format!("unknown compression codec {other}")),
    };
    result.map_err(|e| e.to_string())
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

//! Encoding responses. Most are a single buffer; a fetch response is a buffer with
//! byte ranges of segment files spliced in, so record data goes file -> socket with
//! sendfile(2) and never through this process's memory.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::log::ReadSlice;

#[derive(Debug, thiserror::Error)]
#[error("cannot encode response: {0}")]
pub struct EncodeError(String);

/// One piece of a response frame on the wire.
pub enum Chunk {
    Bytes(Bytes),
    File(ReadSlice),
}

/// A whole response, size prefix included.
pub struct ResponseFrame {
    pub chunks: Vec<Chunk>,
}

impl ResponseFrame {
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| match c {
                Chunk::Bytes(b) => b.len() as u64,
                Chunk::File(s) => s.len,
            })
            .sum()
    }
}

/// Encodes header and body with the 4-byte size prefix.
pub fn encode<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<ResponseFrame, EncodeError> {
    let buf = encode_buf(correlation_id, version, body)?;
    Ok(ResponseFrame {
        chunks: vec![Chunk::Bytes(buf.freeze())],
    })
}

fn encode_buf<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<BytesMut, EncodeError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(version).map(|b| h + b))
        .map_err(|e| EncodeError(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| EncodeError(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| EncodeError(e.to_string()))?;
    Ok(buf)
}

/// Placeholder record sets: the body is encoded with `marker(i)` standing in for the
/// i-th file range, then each placeholder (and its length prefix) is replaced by the
/// real length prefix and the file range. Markers are 16 bytes with a per-process
/// random prefix, so they cannot be confused with names or numbers in the header.
pub fn marker(i: usize) -> Bytes {
    static PREFIX: OnceLock<[u8; 12]> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let u = uuid::Uuid::new_v4();
        let mut p = [0u8; 12];
        p.copy_from_slice(&u.as_bytes()[..12]);
        p
    });
    let mut m = BytesMut::with_capacity(16);
    m.put_slice(prefix);
    m.put_u32(i as u32);
    m.freeze()
}

const MARKER_LEN: usize = 16;

/// Encodes a body whose records fields hold `marker(0..files.len())` in order.
/// `flexible` says whether the records length is a compact (varint) or an INT32 prefix.
pub fn encode_with_files<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
    files: Vec<ReadSlice>,
    flexible: bool,
) -> Result<ResponseFrame, EncodeError> {
    let mut buf = encode_buf(correlation_id, version, body)?;
    if files.is_empty() {
        return Ok(ResponseFrame {
            chunks: vec![Chunk::Bytes(buf.freeze())],
        });
    }
    let old_prefix_len = if flexible { 1 } else { 4 };
    // Find every marker first: positions index the encoded buffer.
    let mut positions = Vec::with_capacity(files.len());
    let mut from = 4;
    for i in 0..files.len() {
        let m = marker(i);
        let pos = find(&buf[from..], &m)
            .map(|p| p + from)
            .ok_or_else(|| EncodeError(format!("record placeholder {i} not found")))?;
        if pos < from + old_prefix_len {
            return Err(EncodeError(
                "record placeholder without a length prefix".into(),
            ));
        }
        positions.push(pos);
        from = pos + MARKER_LEN;
    }
    let prefixes: Vec<Bytes> = files
        .iter()
        .map(|f| length_prefix(f.len, flexible))
        .collect();
    let removed = files.len() * (MARKER_LEN + old_prefix_len);
    let added: u64 = files
        .iter()
        .zip(&prefixes)
        .map(|(f, p)| f.len + p.len() as u64)
        .sum();
    let total = (buf.len() - 4 - removed) as u64 + added;
    let total =
        i32::try_from(total).map_err(|_| EncodeError("response larger than 2 GiB".into()))?;
    buf[..4].copy_from_slice(&total.to_be_bytes());
    let buf = buf.freeze();
    let mut chunks = Vec::with_capacity(files.len() * 3 + 1);
    let mut cursor = 0;
    for ((pos, file), prefix) in positions.into_iter().zip(files).zip(prefixes) {
        chunks.push(Chunk::Bytes(buf.slice(cursor..pos - old_prefix_len)));
        chunks.push(Chunk::Bytes(prefix));
        chunks.push(Chunk::File(file));
        cursor = pos + MARKER_LEN;
    }
    chunks.push(Chunk::Bytes(buf.slice(cursor..)));
    Ok(ResponseFrame { chunks })
}

fn length_prefix(len: u64, flexible: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    if flexible {
        // COMPACT_RECORDS: unsigned varint of length + 1.
        let mut v = len + 1;
        while v >= 0x80 {
            b.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        b.put_u8(v as u8);
    } else {
        b.put_i32(len as i32);
    }
    b.freeze()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Write;
    use std::sync::Arc;

    /// Splicing files in must give exactly the bytes the crate would have encoded with
    /// the records inline, for a flexible and a non-flexible version.
    #[test]
    fn spliced_fetch_response_equals_inline_encoding() {
        for version in [11i16, 12, 16] {
            let mut file = tempfile::tempfile().unwrap();
            let data: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
            file.write_all(&data).unwrap();
            let file = Arc::new(file);
            let ranges = [(10u64, 200u64), (0, 0), (250, 50)];
            let build = |records: Vec<Option<Bytes>>| {
                FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(
                        records
                            .into_iter()
                            .enumerate()
                            .map(|(i, r)| {
                                PartitionData::default()
                                    .with_partition_index(i as i32)
                                    .with_high_watermark(42)
                                    .with_records(r)
                            })
                            .collect(),
                    )])
            };
            let inline = build(
                ranges
                    .iter()
                    .map(|&(p, l)| {
                        Some(Bytes::copy_from_slice(&data[p as usize..(p + l) as usize]))
                    })
                    .collect(),
            );
            let expected = encode_buf(7, version, &inline).unwrap();
            let with_markers = build((0..ranges.len()).map(|i| Some(marker(i))).collect());
            let files = ranges
                .iter()
                .map(|&(position, len)| ReadSlice {
                    file: file.clone(),
                    position,
                    len,
                    record_count: 0,
                })
                .collect();
            let frame = encode_with_files(7, version, &with_markers, files, version >= 12).unwrap();
            let mut wire = Vec::new();
            for c in &frame.chunks {
                match c {
                    Chunk::Bytes(b) => wire.extend_from_slice(b),
                    Chunk::File(s) => wire.extend_from_slice(
                        &data[s.position as usize..(s.position + s.len) as usize],
                    ),
                }
            }
            assert_eq!(wire, expected.to_vec(), "version {version}");
            assert_eq!(frame.len(), expected.len() as u64);
            // And the crate decodes it back to the inline response.
            let mut body = Bytes::from(wire).slice(4..);
            let _ =
                ResponseHeader::decode(&mut body, FetchResponse::header_version(version)).unwrap();
            let mut expected = inline.clone();
            if version >= 13 {
                // v13+ names topics by id only.
                expected.responses[0].topic = TopicName::default();
            }
            assert_eq!(FetchResponse::decode(&mut body, version).unwrap(), expected);
        }
    }
}

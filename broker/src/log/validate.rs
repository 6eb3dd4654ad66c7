//! What a producer's batch must prove before it is appended, as Kafka's LogValidator
//! checks it: a batch can carry a valid CRC-32C and still lie about its records.
//!
//! One pass over the record headers: every record's length, varints, key, value and
//! header lengths are read and the keys, values and headers skipped, never copied.
//! The record count and `lastOffsetDelta` must match the records present, offset deltas
//! run 0..count-1, nothing may follow the last record, and CreateTime timestamps must
//! lie within `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms` of
//! the broker's clock. Compressed batches are walked the same way over a streaming,
//! bounded decompressor ([`super::codec`]), so their memory cost does not grow with
//! what they inflate to.
//!
//! The same walk answers timestamp lookups on stored batches (no client rules there:
//! compaction leaves gaps in offsets and fewer records than `lastOffsetDelta` says).

use std::io::BufRead;

use super::batch::{BatchHeader, RecordBatch, HEADER_LEN, NO_TIMESTAMP};
use super::codec::{decompressing_reader, CodecError};
use super::config::TimestampType;
use super::{LogError, RecordError};

/// Record errors reported for one batch at most (Kafka lists them all; a compressed
/// batch can hold millions of tiny records, so the list is capped).
const MAX_RECORD_ERRORS: usize = 100;

/// Highest codec id Kafka defines (zstd).
const MAX_CODEC: u8 = 4;

/// The topic settings and the clock a client batch is checked against.
#[derive(Clone, Copy, Debug)]
pub struct ValidationConfig<'a> {
    /// `<topic>-<partition>`, for the messages, as Kafka names the partition.
    pub partition: &'a str,
    pub now_ms: i64,
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`.
    pub timestamp_after_max_ms: i64,
    /// `cleanup.policy` includes compact: every record needs a key.
    pub compacted: bool,
    /// At most this many bytes of records out of a compressed section.
    pub max_decompressed_bytes: u64,
}

/// What validation learnt about a valid batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validated {
    /// The largest record timestamp (-1 when no record has one): Kafka stores it as the
    /// batch's `maxTimestamp` under CreateTime, whatever the producer wrote there.
    pub max_timestamp: i64,
}

fn invalid(message: String) -> LogError {
    LogError::InvalidRecord {
        message,
        record_errors: Vec::new(),
    }
}

fn premature_eof() -> LogError {
    invalid("Incorrect declared batch size, premature EOF reached".to_string())
}

/// Where record bytes come from: the batch itself, or a decompressing stream.
pub(crate) trait Source {
    /// The next byte; `None` at the end of the records section.
    fn byte(&mut self) -> Result<Option<u8>, LogError>;
    /// Skips `n` bytes; `false` if the section ended first.
    fn skip(&mut self, n: usize) -> Result<bool, LogError>;
    /// Bytes known to be left, where that is known without reading them.
    fn remaining(&self) -> Option<usize>;
    fn at_end(&mut self) -> Result<bool, LogError>;
}

pub(crate) struct SliceSource<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Source for SliceSource<'_> {
    #[inline(always)]
    fn byte(&mut self) -> Result<Option<u8>, LogError> {
        let b = self.buf.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        Ok(b)
    }

    #[inline(always)]
    fn skip(&mut self, n: usize) -> Result<bool, LogError> {
        if n > self.buf.len() - self.pos {
            self.pos = self.buf.len();
            return Ok(false);
        }
        self.pos += n;
        Ok(true)
    }

    #[inline(always)]
    fn remaining(&self) -> Option<usize> {
        Some(self.buf.len() - self.pos)
    }

    #[inline(always)]
    fn at_end(&mut self) -> Result<bool, LogError> {
        Ok(self.pos == self.buf.len())
    }
}

pub(crate) struct StreamSource<R> {
    reader: R,
    base_offset: i64,
    codec: u8,
}

impl<R: BufRead> StreamSource<R> {
    fn fill(&mut self) -> Result<&[u8], LogError> {
        let (base_offset, codec) = (self.base_offset, self.codec);
        self.reader
            .fill_buf()
            .map_err(|e| CodecError::from_io(e).into_log_error(base_offset, codec))
    }
}

impl<R: BufRead> Source for StreamSource<R> {
    #[inline(always)]
    fn byte(&mut self) -> Result<Option<u8>, LogError> {
        let b = self.fill()?.first().copied();
        if b.is_some() {
            self.reader.consume(1);
        }
        Ok(b)
    }

    fn skip(&mut self, mut n: usize) -> Result<bool, LogError> {
        while n > 0 {
            let available = self.fill()?.len();
            if available == 0 {
                return Ok(false);
            }
            let step = available.min(n);
            self.reader.consume(step);
            n -= step;
        }
        Ok(true)
    }

    #[inline(always)]
    fn remaining(&self) -> Option<usize> {
        None
    }

    #[inline(always)]
    fn at_end(&mut self) -> Result<bool, LogError> {
        Ok(self.fill()?.is_empty())
    }
}

/// One record's header fields, as the walk saw them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordMeta {
    pub index: i32,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub has_key: bool,
}

/// Reads the fields of one record whose length said `left` bytes.
struct RecordReader<'s, S> {
    src: &'s mut S,
    left: usize,
}

impl<S: Source> RecordReader<'_, S> {
    #[inline(always)]
    fn byte(&mut self) -> Result<u8, LogError> {
        if self.left == 0 {
            return Err(invalid(
                "Found invalid record structure: a field runs past the record's length".to_string(),
            ));
        }
        self.left -= 1;
        self.src.byte()?.ok_or_else(premature_eof)
    }

    #[inline(always)]
    fn skip(&mut self, n: usize) -> Result<(), LogError> {
        if n > self.left {
            return Err(invalid(format!(
                "Found invalid record structure: a field of {n} bytes runs past the record's length"
            )));
        }
        self.left -= n;
        if self.src.skip(n)? {
            Ok(())
        } else {
            Err(premature_eof())
        }
    }

    #[inline(always)]
    fn varlong(&mut self) -> Result<i64, LogError> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(invalid(
            "Found invalid record structure: varlong longer than 10 bytes".to_string(),
        ))
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<i32, LogError> {
        let mut raw: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            raw |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i32 ^ -((raw & 1) as i32));
            }
        }
        Err(invalid(
            "Found invalid record structure: varint longer than 5 bytes".to_string(),
        ))
    }

    /// A length that may be -1 (null) but no other negative value.
    #[inline(always)]
    fn nullable_len(&mut self, what: &str) -> Result<Option<usize>, LogError> {
        let len = self.varint()?;
        match len {
            -1 => Ok(None),
            n if n < -1 => Err(invalid(format!("Invalid negative {what} length {n}"))),
            n => Ok(Some(n as usize)),
        }
    }
}

/// The length prefix of the next record, read straight from the section.
fn record_length<S: Source>(src: &mut S) -> Result<i32, LogError> {
    let mut r = RecordReader {
        src,
        left: usize::MAX,
    };
    r.varint()
}

/// Walks the `h.record_count` records of a records section, checking each record's
/// framing, and calls `visit` for each; `visit` returns false to stop early. A full
/// walk ends with the section: bytes after the last record are an error.
pub(crate) fn walk_records<S: Source>(
    h: &BatchHeader,
    src: &mut S,
    mut visit: impl FnMut(&RecordMeta) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    if h.record_count < 0 {
        return Err(invalid(format!(
            "Found invalid record count {} in magic v2 batch",
            h.record_count
        )));
    }
    for index in 0..h.record_count {
        let length = record_length(src)?;
        if length < 0 {
            return Err(invalid(format!(
                "Invalid record size: negative length {length}"
            )));
        }
        let length = length as usize;
        if let Some(left) = src.remaining().filter(|&left| left < length) {
            return Err(invalid(format!(
                "Invalid record size: expected {length} bytes in record payload, but instead the buffer has only {left} remaining bytes."
            )));
        }
        let mut r = RecordReader { src, left: length };
        let _attributes = r.byte()?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = r.nullable_len("key")?;
        if let Some(n) = key {
            r.skip(n)?;
        }
        if let Some(n) = r.nullable_len("value")? {
            r.skip(n)?;
        }
        let headers = r.varint()?;
        if headers < 0 {
            return Err(invalid(format!(
                "Found invalid number of record headers {headers}"
            )));
        }
        if headers as usize > r.left {
            return Err(invalid(format!(
                "Found invalid number of record headers. {headers} is larger than the remaining size of the buffer"
            )));
        }
        for _ in 0..headers {
            let key_len = r.varint()?;
            if key_len < 0 {
                return Err(invalid(format!(
                    "Invalid negative header key size {key_len}"
                )));
            }
            r.skip(key_len as usize)?;
            if let Some(n) = r.nullable_len("header value")? {
                r.skip(n)?;
            }
        }
        if r.left != 0 {
            return Err(invalid(format!(
                "Invalid record size: expected to read {length} bytes in record payload, but instead read {}",
                length - r.left
            )));
        }
        let meta = RecordMeta {
            index,
            timestamp_delta,
            offset_delta,
            has_key: key.is_some(),
        };
        if !visit(&meta)? {
            return Ok(());
        }
    }
    if !src.at_end()? {
        return Err(invalid(
            "Incorrect declared batch size, records still remaining in file".to_string(),
        ));
    }
    Ok(())
}

/// Walks the records of `batch`, decompressing (bounded by `limit`) if need be.
pub(crate) fn walk_batch(
    batch: &RecordBatch<'_>,
    limit: u64,
    visit: impl FnMut(&RecordMeta) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let h = batch.header();
    let section = &batch.bytes()[HEADER_LEN..];
    if !h.is_compressed() {
        return walk_records(
            h,
            &mut SliceSource {
                buf: section,
                pos: 0,
            },
            visit,
        );
    }
    let reader = decompressing_reader(h.compression(), section, limit)
        .map_err(|e| e.into_log_error(h.base_offset, h.compression()))?;
    let mut src = StreamSource {
        reader,
        base_offset: h.base_offset,
        codec: h.compression(),
    };
    walk_records(h, &mut src, visit)
}

/// A record's timestamp as Kafka reads it: the batch's max timestamp under
/// LogAppendTime, else the base timestamp plus the record's delta.
pub(crate) fn record_timestamp(h: &BatchHeader, m: &RecordMeta) -> i64 {
    if h.is_log_append_time() {
        h.max_timestamp
    } else {
        h.base_timestamp.wrapping_add(m.timestamp_delta)
    }
}

/// Checks a batch a client produced (CRC, length and magic were checked when it was
/// parsed). Errors: [`LogError::InvalidRecord`] for batches that lie about their
/// records or break the rules for client batches, [`LogError::InvalidTimestamp`] for
/// out-of-range timestamps, [`LogError::CorruptMessage`] for an unknown codec or a
/// payload that does not decompress, and for a keyless record on a compacted topic.
pub fn validate_client_batch(
    batch: &RecordBatch<'_>,
    cfg: &ValidationConfig<'_>,
) -> Result<Validated, LogError> {
    let h = *batch.header();
    let p = cfg.partition;
    let last_offset = h.base_offset.wrapping_add(h.last_offset_delta as i64);
    if h.last_offset_delta < 0 {
        return Err(invalid(format!(
            "Batch has an invalid offset range: [{}, {last_offset}] in topic partition {p}",
            h.base_offset
        )));
    }
    if h.record_count <= 0 {
        return Err(invalid(format!(
            "Invalid reported count for record batch: {} in topic partition {p}",
            h.record_count
        )));
    }
    if h.last_offset_delta as i64 + 1 != h.record_count as i64 {
        return Err(invalid(format!(
            "Inconsistent batch offset range [{}, {last_offset}] and count of records {} in topic partition {p}",
            h.base_offset, h.record_count
        )));
    }
    if h.is_control() {
        return Err(invalid(format!(
            "Clients are not allowed to write control records in topic partition {p}"
        )));
    }
    if h.is_transactional() && h.producer_id < 0 {
        return Err(invalid(format!(
            "Transactional records need a producer id, the batch has producerId {} in topic partition {p}",
            h.producer_id
        )));
    }
    if h.producer_id >= 0 && h.base_sequence < 0 {
        return Err(invalid(format!(
            "Invalid sequence number {} in record batch with producerId {} in topic partition {p}",
            h.base_sequence, h.producer_id
        )));
    }
    if h.compression() > MAX_CODEC {
        return Err(LogError::CorruptMessage(format!(
            "Unknown compression type id: {} in topic partition {p}",
            h.compression()
        )));
    }

    let mut record_errors = Vec::new();
    let mut error_count = 0usize;
    let mut max_timestamp = NO_TIMESTAMP;
    walk_batch(batch, cfg.max_decompressed_bytes, |m| {
        if m.offset_delta != m.index {
            return Err(LogError::InvalidRecord {
                message: format!(
                    "Record {} has offset delta {}, expected {} in topic partition {p}",
                    m.index, m.offset_delta, m.index
                ),
                record_errors: vec![RecordError {
                    batch_index: m.index,
                    message: format!("offset delta {} out of sequence", m.offset_delta),
                }],
            });
        }
        if cfg.compacted && !m.has_key {
            return Err(LogError::CorruptMessage(format!(
                "Compacted topic cannot accept message without key in topic partition {p}."
            )));
        }
        let ts = record_timestamp(&h, m);
        let problem = if cfg.timestamp_type == TimestampType::CreateTime && ts != NO_TIMESTAMP {
            out_of_range(ts, cfg).then(|| {
                let offset = h.base_offset.wrapping_add(m.offset_delta as i64);
                format!(
                    "Timestamp {ts} of message with offset {offset} is out of range. The timestamp should be within [{}, {}]",
                    cfg.now_ms.saturating_sub(cfg.timestamp_before_max_ms),
                    cfg.now_ms.saturating_add(cfg.timestamp_after_max_ms)
                )
            })
        } else if h.is_log_append_time() {
            Some("Invalid timestamp type in message. Producer should not set timestamp type to LogAppendTime.".to_string())
        } else {
            None
        };
        if let Some(message) = problem {
            error_count += 1;
            if record_errors.len() < MAX_RECORD_ERRORS {
                record_errors.push(RecordError {
                    batch_index: m.index,
                    message,
                });
            }
        }
        max_timestamp = max_timestamp.max(ts);
        Ok(true)
    })?;
    if error_count > 0 {
        return Err(LogError::InvalidTimestamp {
            message: format!(
                "One or more records have been rejected due to invalid timestamp ({error_count} in topic partition {p})"
            ),
            record_errors,
        });
    }
    Ok(Validated { max_timestamp })
}

/// Kafka's rule: `now - ts > before` or `ts - now > after` (in exact arithmetic).
fn out_of_range(ts: i64, cfg: &ValidationConfig<'_>) -> bool {
    let diff = cfg.now_ms as i128 - ts as i128;
    diff > cfg.timestamp_before_max_ms as i128 || -diff > cfg.timestamp_after_max_ms as i128
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, NewRecord};
    use crate::log::codec::compress;

    const NOW: i64 = 1_700_000_000_000;

    fn cfg() -> ValidationConfig<'static> {
        ValidationConfig {
            partition: "t-0",
            now_ms: NOW,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            compacted: false,
            max_decompressed_bytes: 16 << 20,
        }
    }

    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// A record body exactly as written: fields are given raw so they can lie.
    fn raw_record(
        ts_delta: i64,
        offset_delta: i64,
        key: i64,
        value: &[u8],
        tail: &[u8],
    ) -> Vec<u8> {
        let mut body = vec![0u8];
        varint(&mut body, ts_delta);
        varint(&mut body, offset_delta);
        varint(&mut body, key);
        // A claimed length past 1 KiB is a lie: its bytes are not written.
        if (0..=1024).contains(&key) {
            body.extend(std::iter::repeat_n(b'k', key as usize));
        }
        varint(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        body.extend_from_slice(tail);
        let mut out = Vec::new();
        varint(&mut out, body.len() as i64);
        out.extend(body);
        out
    }

    /// A batch with the given header fields and records section, CRC made valid.
    fn batch_with(
        count: i32,
        last_delta: i32,
        attributes: i16,
        producer_id: i64,
        section: &[u8],
    ) -> Vec<u8> {
        let mut b = build_batch(&[NewRecord {
            key: None,
            value: Some(b"x"),
            timestamp: NOW,
        }]);
        b.truncate(HEADER_LEN);
        b.extend_from_slice(section);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[23..27].copy_from_slice(&last_delta.to_be_bytes());
        b[43..51].copy_from_slice(&producer_id.to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn check(bytes: &[u8]) -> Result<Validated, LogError> {
        validate_client_batch(&RecordBatch::parse(bytes).unwrap(), &cfg())
    }

    fn assert_invalid(bytes: &[u8], needle: &str) {
        match check(bytes) {
            Err(LogError::InvalidRecord { message, .. }) => {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}")
            }
            other => panic!("expected INVALID_RECORD with {needle:?}, got {other:?}"),
        }
    }

    fn one() -> Vec<u8> {
        raw_record(0, 0, 1, b"v", &[0])
    }

    #[test]
    fn valid_batch_passes_and_reports_its_max_timestamp() {
        let bytes = build_batch(&[
            NewRecord {
                key: Some(b"a"),
                value: Some(b"1"),
                timestamp: NOW - 5,
            },
            NewRecord {
                key: None,
                value: None,
                timestamp: NOW + 7,
            },
            NewRecord {
                key: Some(b"c"),
                value: Some(b"3"),
                timestamp: NOW,
            },
        ]);
        assert_eq!(
            check(&bytes).unwrap(),
            Validated {
                max_timestamp: NOW + 7
            }
        );
    }

    #[test]
    fn count_larger_than_records_present_is_invalid() {
        assert_invalid(&batch_with(1000, 999, 0, -1, &one()), "premature EOF");
        assert_invalid(
            &batch_with(i32::MAX, i32::MAX - 1, 0, -1, &one()),
            "premature EOF",
        );
    }

    #[test]
    fn records_beyond_the_count_or_trailing_garbage_are_invalid() {
        let mut three = one();
        three.extend(raw_record(0, 1, 1, b"v", &[0]));
        three.extend(raw_record(0, 2, 1, b"v", &[0]));
        assert_invalid(&batch_with(1, 0, 0, -1, &three), "records still remaining");
        let mut garbage = one();
        garbage.extend_from_slice(b"\xde\xad");
        assert_invalid(
            &batch_with(1, 0, 0, -1, &garbage),
            "records still remaining",
        );
    }

    #[test]
    fn count_and_last_offset_delta_must_agree() {
        let mut two = one();
        two.extend(raw_record(0, 1, 1, b"v", &[0]));
        assert_invalid(
            &batch_with(2, 5, 0, -1, &two),
            "Inconsistent batch offset range",
        );
        assert_invalid(&batch_with(0, 0, 0, -1, &[]), "Invalid reported count");
        assert_invalid(&batch_with(1, -1, 0, -1, &one()), "invalid offset range");
    }

    #[test]
    fn offset_deltas_must_run_from_zero() {
        let mut two = one();
        two.extend(raw_record(0, 5, 1, b"v", &[0]));
        let err = check(&batch_with(2, 1, 0, -1, &two)).unwrap_err();
        match err {
            LogError::InvalidRecord {
                message,
                record_errors,
            } => {
                assert!(message.contains("offset delta 5"), "{message}");
                assert_eq!(record_errors[0].batch_index, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lying_lengths_are_invalid() {
        // Record length 2^31-1, and negative.
        let mut huge = Vec::new();
        varint(&mut huge, i32::MAX as i64);
        huge.extend_from_slice(&one()[1..]);
        assert_invalid(&batch_with(1, 0, 0, -1, &huge), "Invalid record size");
        let mut neg = Vec::new();
        varint(&mut neg, -3);
        neg.extend_from_slice(&one()[1..]);
        assert_invalid(&batch_with(1, 0, 0, -1, &neg), "negative length");
        // Key length 2^31-1 or below -1.
        assert_invalid(
            &batch_with(1, 0, 0, -1, &raw_record(0, 0, i32::MAX as i64, b"", &[0])),
            "runs past",
        );
        assert_invalid(
            &batch_with(1, 0, 0, -1, &raw_record(0, 0, -7, b"v", &[0])),
            "negative key length -7",
        );
        // Header count negative, too large, header key negative or too long.
        let mut tail = Vec::new();
        varint(&mut tail, -2);
        assert_invalid(
            &batch_with(1, 0, 0, -1, &raw_record(0, 0, 1, b"v", &tail)),
            "number of record headers -2",
        );
        let mut tail = Vec::new();
        varint(&mut tail, 1000);
        assert_invalid(
            &batch_with(1, 0, 0, -1, &raw_record(0, 0, 1, b"v", &tail)),
            "larger than the remaining",
        );
        let mut tail = Vec::new();
        varint(&mut tail, 1);
        varint(&mut tail, -4);
        tail.push(0);
        assert_invalid(
            &batch_with(1, 0, 0, -1, &raw_record(0, 0, 1, b"v", &tail)),
            "negative header key size -4",
        );
        let mut tail = Vec::new();
        varint(&mut tail, 1);
        varint(&mut tail, i32::MAX as i64);
        assert_invalid(
            &batch_with(1, 0, 0, -1, &raw_record(0, 0, 1, b"v", &tail)),
            "runs past",
        );
        // A record whose fields end before its length says.
        assert_invalid(
            &batch_with(1, 0, 0, -1, &raw_record(0, 0, 1, b"v", &[0, 9, 9])),
            "but instead read",
        );
        // A varint that never ends.
        let mut endless = Vec::new();
        varint(&mut endless, 20);
        endless.push(0);
        endless.extend_from_slice(&[0xff; 19]);
        assert_invalid(&batch_with(1, 0, 0, -1, &endless), "longer than");
    }

    #[test]
    fn control_and_transactional_bits_without_producer_are_invalid() {
        assert_invalid(&batch_with(1, 0, 0x20, 5, &one()), "control records");
        assert_invalid(&batch_with(1, 0, 0x20, -1, &one()), "control records");
        assert_invalid(&batch_with(1, 0, 0x10, -1, &one()), "need a producer id");
    }

    #[test]
    fn unknown_codec_and_garbage_payloads_are_corrupt() {
        for codec in 5..=7 {
            let err = check(&batch_with(1, 0, codec, -1, &one())).unwrap_err();
            assert!(
                matches!(&err, LogError::CorruptMessage(m) if m.contains("compression type")),
                "{err}"
            );
        }
        for codec in 1..=4 {
            let err = check(&batch_with(1, 0, codec, -1, b"garbage garbage garbage")).unwrap_err();
            assert!(
                matches!(&err, LogError::CorruptMessage(m) if m.contains("decompress")),
                "codec {codec}: {err}"
            );
        }
    }

    #[test]
    fn compressed_records_are_validated_like_plain_ones() {
        let mut good = one();
        good.extend(raw_record(1, 1, 1, b"w", &[0]));
        let mut lying = good.clone();
        lying.extend_from_slice(b"trailing");
        for codec in 1..=4 {
            let packed = compress(codec as u8, &good).unwrap();
            assert_eq!(
                check(&batch_with(2, 1, codec, -1, &packed))
                    .unwrap()
                    .max_timestamp,
                NOW + 1
            );
            let packed = compress(codec as u8, &good).unwrap();
            assert_invalid(&batch_with(3, 2, codec, -1, &packed), "premature EOF");
            let packed = compress(codec as u8, &lying).unwrap();
            assert_invalid(
                &batch_with(2, 1, codec, -1, &packed),
                "records still remaining",
            );
        }
    }

    #[test]
    fn decompression_bomb_is_refused_within_the_limit() {
        // One record whose value is 64 MiB of zeros, in each codec.
        let value = vec![0u8; 64 << 20];
        let section = raw_record(0, 0, 1, &value, &[0]);
        for codec in 1..=4i16 {
            let packed = compress(codec as u8, &section).unwrap();
            assert!(
                packed.len() < 4 << 20,
                "codec {codec}: {} bytes",
                packed.len()
            );
            let bytes = batch_with(1, 0, codec, -1, &packed);
            let err = check(&bytes).unwrap_err();
            assert!(
                matches!(&err, LogError::InvalidRecord { message, .. } if message.contains("more than 16777216 bytes")),
                "codec {codec}: {err}"
            );
        }
    }

    #[test]
    fn timestamps_out_of_range_are_invalid_timestamp() {
        let far = NOW + 100 * 365 * 24 * 3_600_000;
        let bytes = build_batch(&[
            NewRecord {
                key: None,
                value: Some(b"ok"),
                timestamp: NOW,
            },
            NewRecord {
                key: None,
                value: Some(b"future"),
                timestamp: far,
            },
        ]);
        match check(&bytes).unwrap_err() {
            LogError::InvalidTimestamp { record_errors, .. } => {
                assert_eq!(record_errors.len(), 1);
                assert_eq!(record_errors[0].batch_index, 1);
                assert!(record_errors[0].message.contains(&far.to_string()));
            }
            other => panic!("{other:?}"),
        }
        // Just inside the hour is fine; an old one is fine with before = Long.MAX.
        let ok = build_batch(&[
            NewRecord {
                key: None,
                value: None,
                timestamp: NOW + 3_600_000,
            },
            NewRecord {
                key: None,
                value: None,
                timestamp: 0,
            },
            NewRecord {
                key: None,
                value: None,
                timestamp: -1,
            },
        ]);
        assert_eq!(check(&ok).unwrap().max_timestamp, NOW + 3_600_000);
        // With a before bound an old record is refused; under LogAppendTime nothing is.
        let strict = ValidationConfig {
            timestamp_before_max_ms: 1000,
            ..cfg()
        };
        let batch = RecordBatch::parse(&ok).unwrap();
        assert!(matches!(
            validate_client_batch(&batch, &strict),
            Err(LogError::InvalidTimestamp { .. })
        ));
        let append_time = ValidationConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..strict
        };
        assert!(validate_client_batch(&RecordBatch::parse(&bytes).unwrap(), &append_time).is_ok());
    }

    #[test]
    fn producer_set_log_append_time_is_invalid_timestamp() {
        let mut bytes = build_batch(&[NewRecord {
            key: None,
            value: None,
            timestamp: -1,
        }]);
        // LogAppendTime bit with maxTimestamp -1: the record reads as having no timestamp.
        bytes[35..43].copy_from_slice(&(-1i64).to_be_bytes());
        crate::log::batch::set_log_append_time(&mut bytes, -1);
        let append_time = ValidationConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..cfg()
        };
        let batch = RecordBatch::parse(&bytes).unwrap();
        assert!(matches!(
            validate_client_batch(&batch, &append_time),
            Err(LogError::InvalidTimestamp { .. })
        ));
    }

    #[test]
    fn keyless_record_on_compacted_topic_is_refused() {
        let bytes = build_batch(&[NewRecord {
            key: None,
            value: Some(b"v"),
            timestamp: NOW,
        }]);
        let compacted = ValidationConfig {
            compacted: true,
            ..cfg()
        };
        let err =
            validate_client_batch(&RecordBatch::parse(&bytes).unwrap(), &compacted).unwrap_err();
        assert!(
            matches!(&err, LogError::CorruptMessage(m) if m.contains("without key")),
            "{err}"
        );
    }

    /// The cost of validation per MiB of uncompressed batch next to the CRC-32C check
    /// every produce already paid. Timing, not a check: run with
    /// `cargo test -p rill-broker --lib validation_cost -- --ignored --nocapture`
    /// (numbers only mean something with rill-broker optimised, see the report).
    #[test]
    #[ignore]
    fn validation_cost_per_mib() {
        use std::time::Instant;
        for value_len in [10usize, 100, 1000] {
            let value = vec![b'v'; value_len];
            let n = (1 << 20) / (value_len + 20);
            let recs: Vec<NewRecord<'_>> = (0..n)
                .map(|i| NewRecord {
                    key: Some(b"key"),
                    value: Some(&value),
                    timestamp: NOW + (i % 1000) as i64,
                })
                .collect();
            let bytes = build_batch(&recs);
            let mib = bytes.len() as f64 / (1 << 20) as f64;
            let rounds = 200;
            let t = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(RecordBatch::parse(std::hint::black_box(&bytes)).unwrap());
            }
            let crc = t.elapsed().as_secs_f64() / rounds as f64 / mib;
            let batch = RecordBatch::parse(&bytes).unwrap();
            let t = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(
                    validate_client_batch(std::hint::black_box(&batch), &cfg()).unwrap(),
                );
            }
            let walk = t.elapsed().as_secs_f64() / rounds as f64 / mib;
            println!(
                "{n} records of {value_len} B: parse+CRC {:.1} us/MiB, validation {:.1} us/MiB ({:.0}% of CRC)",
                crc * 1e6,
                walk * 1e6,
                100.0 * walk / crc
            );
        }
    }
}

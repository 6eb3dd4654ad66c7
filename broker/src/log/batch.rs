//! Kafka v2 record batches, read in place.
//!
//! The log stores batches exactly as producers sent them; the broker only rewrites the
//! base offset (not covered by the CRC) and, for `LogAppendTime`, the timestamp fields
//! (then the CRC is recomputed). Records are decoded only where a lookup needs them:
//! finding a record by timestamp in an uncompressed batch, and in tests.

use super::LogError;

// Byte positions of the v2 batch header fields.
const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;
const RECORDS: usize = 61;

/// Bytes before `batchLength` counts: baseOffset and batchLength itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the whole v2 header, i.e. of a batch without records.
pub const HEADER_LEN: usize = RECORDS;
/// Smallest valid `batchLength` (a header with no records).
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only message format this log accepts.
pub const MAGIC_V2: i8 = 2;
/// Timestamp of a record that has none.
pub const NO_TIMESTAMP: i64 = -1;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// KIP-534: set by the cleaner when `baseTimestamp` holds the batch's delete horizon.
const DELETE_HORIZON_BIT: i16 = 0x40;

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn corrupt(msg: String) -> LogError {
    LogError::CorruptMessage(msg)
}

/// The fixed-size header of a batch, decoded. Cheap to copy; used when scanning a
/// segment file where only the first [`HEADER_LEN`] bytes of each batch are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes a header and checks what can be checked without the records: the
    /// length and the magic byte. `bytes` must hold at least [`HEADER_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, LogError> {
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "truncated batch header: {} of {HEADER_LEN} bytes",
                bytes.len()
            )));
        }
        let header = BatchHeader {
            base_offset: be_i64(bytes, BASE_OFFSET),
            batch_length: be_i32(bytes, BATCH_LENGTH),
            partition_leader_epoch: be_i32(bytes, PARTITION_LEADER_EPOCH),
            magic: bytes[MAGIC] as i8,
            crc: be_i32(bytes, CRC) as u32,
            attributes: be_i16(bytes, ATTRIBUTES),
            last_offset_delta: be_i32(bytes, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(bytes, BASE_TIMESTAMP),
            max_timestamp: be_i64(bytes, MAX_TIMESTAMP),
            producer_id: be_i64(bytes, PRODUCER_ID),
            producer_epoch: be_i16(bytes, PRODUCER_EPOCH),
            base_sequence: be_i32(bytes, BASE_SEQUENCE),
            record_count: be_i32(bytes, RECORD_COUNT),
        };
        check_length(header.batch_length)?;
        if header.magic != MAGIC_V2 {
            return Err(corrupt(format!(
                "batch at offset {} has magic {}, only magic 2 is supported",
                header.base_offset, header.magic
            )));
        }
        Ok(header)
    }

    /// Whole batch size on disk: [`LOG_OVERHEAD`] plus `batchLength`.
    pub fn size(&self) -> u64 {
        LOG_OVERHEAD as u64 + self.batch_length as u64
    }

    /// Saturates: a header read from the wire or disk may carry any base offset, and
    /// an overflow must not panic (the record_batch fuzzer found one).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    pub fn is_compressed(&self) -> bool {
        self.compression() != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// KIP-534: the cleaner stored a delete horizon in `base_timestamp`; tombstones in
    /// this batch may go once it has passed.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }
}

fn check_length(batch_length: i32) -> Result<(), LogError> {
    if batch_length < MIN_BATCH_LENGTH {
        return Err(corrupt(format!(
            "batch length {batch_length} is below the minimum {MIN_BATCH_LENGTH}"
        )));
    }
    Ok(())
}

/// Reads `batchLength` from the first [`LOG_OVERHEAD`] bytes and returns the whole
/// batch size, validated against the minimum.
pub fn batch_size_from_prefix(prefix: &[u8]) -> Result<u64, LogError> {
    if prefix.len() < LOG_OVERHEAD {
        return Err(corrupt(format!(
            "truncated batch: {} bytes, need {LOG_OVERHEAD} to read its length",
            prefix.len()
        )));
    }
    let len = be_i32(prefix, BATCH_LENGTH);
    check_length(len)?;
    Ok(LOG_OVERHEAD as u64 + len as u64)
}

/// One complete, validated batch inside a byte buffer.
#[derive(Clone, Copy, Debug)]
pub struct RecordBatch<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> RecordBatch<'a> {
    /// Validates one batch that fills `bytes` exactly: length, magic and CRC-32C.
    pub fn parse(bytes: &'a [u8]) -> Result<RecordBatch<'a>, LogError> {
        let size = batch_size_from_prefix(bytes)?;
        if bytes.len() as u64 != size {
            return Err(corrupt(format!(
                "batch of {size} bytes does not fit the {} bytes given",
                bytes.len()
            )));
        }
        let header = BatchHeader::parse(bytes)?;
        let computed = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        if computed != header.crc {
            return Err(corrupt(format!(
                "CRC-32C mismatch in batch at offset {}: stored {:#010x}, computed {computed:#010x}",
                header.base_offset, header.crc
            )));
        }
        Ok(RecordBatch { bytes, header })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The records of an uncompressed batch; `None` for a compressed one (the log
    /// never decompresses).
    pub fn records(&self) -> Option<RecordIter<'a>> {
        if self.header.is_compressed() {
            return None;
        }
        Some(RecordIter {
            header: self.header,
            bytes: &self.bytes[RECORDS..],
            pos: 0,
            remaining: self.header.record_count.max(0),
        })
    }

    /// The first record at or after `min_offset` whose timestamp is >= `timestamp`,
    /// as (offset, timestamp). Compressed batches are opened too, streaming and
    /// bounded by `limit` decompressed bytes, as Kafka does for ListOffsets.
    pub fn find_timestamp(
        &self,
        timestamp: i64,
        min_offset: i64,
        limit: u64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let h = &self.header;
        if h.max_timestamp < timestamp || h.last_offset() < min_offset {
            return Ok(None);
        }
        // With LogAppendTime every record carries the batch's max timestamp.
        if h.is_log_append_time() {
            return Ok(Some((h.base_offset.max(min_offset), h.max_timestamp)));
        }
        // Compressed batches are opened here, as Kafka does for ListOffsets, so the
        // answer is the exact record, not the start of its batch.
        let mut found = None;
        super::validate::walk_batch(self, limit, |m| {
            let offset = h.base_offset.wrapping_add(m.offset_delta as i64);
            let ts = super::validate::record_timestamp(h, m);
            if offset >= min_offset && ts >= timestamp {
                found = Some((offset, ts));
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }
}

/// Iterates the complete batches of a buffer, validating each (length, magic, CRC).
/// Yields `(position, batch)`; after the first error it yields nothing more.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterates and validates the batches of `buf`, e.g. a producer's records for one
/// partition. A trailing partial batch is an error.
pub fn batches(buf: &[u8]) -> BatchIter<'_> {
    BatchIter {
        buf,
        pos: 0,
        failed: false,
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(usize, RecordBatch<'a>), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let result = batch_size_from_prefix(rest).and_then(|size| {
            if size > rest.len() as u64 {
                return Err(corrupt(format!(
                    "truncated batch at byte {}: {size} bytes announced, {} present",
                    self.pos,
                    rest.len()
                )));
            }
            RecordBatch::parse(&rest[..size as usize])
        });
        match result {
            Ok(batch) => {
                let at = self.pos;
                self.pos += batch.bytes.len();
                Some(Ok((at, batch)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Rewrites the base offset of the batch at the start of `batch`. The CRC does not
/// cover it, so nothing else changes.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the leader epoch that appended the batch. `partitionLeaderEpoch` lies
/// before the CRC-covered bytes (they start at `attributes`), so the CRC stays valid.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as `LogAppendTime` stamped with `now_ms`, as Kafka does: sets the
/// timestamp-type attribute and maxTimestamp, then recomputes the CRC they are under.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Sets `maxTimestamp` under CreateTime (clearing the timestamp-type attribute) and
/// recomputes the CRC, as Kafka's validator does with the largest record timestamp.
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp: i64) {
    let attributes = be_i16(batch, ATTRIBUTES) & !TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// One decoded record of an uncompressed batch, borrowing from the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Decodes the varint-encoded records of an uncompressed batch.
pub struct RecordIter<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
    pos: usize,
    remaining: i32,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let result = self.decode_next();
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }
}

impl<'a> RecordIter<'a> {
    fn decode_next(&mut self) -> Result<Record<'a>, LogError> {
        let mut r = Reader {
            buf: self.bytes,
            pos: self.pos,
        };
        let length = r.varint()?;
        let len = usize::try_from(length)
            .map_err(|_| corrupt(format!("negative record length {length}")))?;
        let end = r.pos.checked_add(len).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| corrupt(format!("record of {len} bytes overruns its batch")))?;
        let mut r = Reader {
            buf: &self.bytes[..end],
            pos: r.pos,
        };
        let _attributes = r.take(1)?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = r.nullable_bytes()?;
        let value = r.nullable_bytes()?;
        let header_count = r.varint()?;
        let mut headers = Vec::new();
        for _ in 0..header_count.max(0) {
            let key = r.nullable_bytes()?.unwrap_or(&[]);
            headers.push((key, r.nullable_bytes()?));
        }
        self.pos = end;
        let timestamp = if self.header.is_log_append_time() {
            self.header.max_timestamp
        } else {
            self.header.base_timestamp.wrapping_add(timestamp_delta)
        };
        Ok(Record {
            offset: self.header.base_offset + offset_delta as i64,
            timestamp,
            key,
            value,
            headers,
        })
    }
}

/// Decodes the records section of a batch with header `header`, e.g. one the caller
/// decompressed (the bytes after [`HEADER_LEN`], uncompressed).
pub fn decode_records(header: BatchHeader, records: &[u8]) -> RecordIter<'_> {
    RecordIter {
        header,
        bytes: records,
        pos: 0,
        remaining: header.record_count.max(0),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| corrupt("record field overruns its record".to_string()))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn varlong(&mut self) -> Result<i64, LogError> {
        let mut raw: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            raw |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                // Zigzag: the low bit carries the sign.
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(corrupt("varint longer than 10 bytes".to_string()))
    }

    fn varint(&mut self) -> Result<i32, LogError> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| corrupt(format!("varint {v} out of i32 range")))
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, LogError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize)?))
    }
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_nullable_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

/// Appends one v2 record (length-prefixed) to a records section.
pub(crate) fn put_record(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) {
    let mut body = Vec::new();
    body.push(0); // record attributes: unused in v2
    put_varlong(&mut body, timestamp_delta);
    put_varlong(&mut body, offset_delta as i64);
    put_nullable_bytes(&mut body, key);
    put_nullable_bytes(&mut body, value);
    put_varlong(&mut body, headers.len() as i64);
    for (k, v) in headers {
        put_nullable_bytes(&mut body, Some(k));
        put_nullable_bytes(&mut body, *v);
    }
    put_varlong(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// The header fields of a rebuilt batch that differ from the batch it replaces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RebuiltFields {
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub record_count: i32,
    /// Set the KIP-534 delete-horizon attribute (`base_timestamp` is the horizon).
    pub delete_horizon: bool,
}

/// A batch that keeps `original`'s base offset, leader epoch, producer id, epoch,
/// base sequence and attributes (codec, timestamp type, transactional), with new
/// record fields and the given (possibly compressed) records section; CRC recomputed.
pub(crate) fn rebuild_batch(
    original: &BatchHeader,
    fields: RebuiltFields,
    records: &[u8],
) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out.extend_from_slice(records);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    let mut attributes = original.attributes & !DELETE_HORIZON_BIT;
    if fields.delete_horizon {
        attributes |= DELETE_HORIZON_BIT;
    }
    out[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&original.base_offset.to_be_bytes());
    out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&original.partition_leader_epoch.to_be_bytes());
    out[MAGIC] = MAGIC_V2 as u8;
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    out[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&fields.last_offset_delta.to_be_bytes());
    out[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&fields.base_timestamp.to_be_bytes());
    out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&fields.max_timestamp.to_be_bytes());
    out[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&original.producer_id.to_be_bytes());
    out[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&original.producer_epoch.to_be_bytes());
    out[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&original.base_sequence.to_be_bytes());
    out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&fields.record_count.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A record to put in a batch built by [`build_batch`].
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
}

/// Producer fields of a built batch; the default is a plain, non-idempotent producer.
#[derive(Clone, Copy, Debug)]
pub struct BatchOptions {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
        }
    }
}

/// Builds a valid uncompressed v2 batch (as a producer would send it) with base
/// offset 0 and no producer id.
pub fn build_batch(records: &[NewRecord<'_>]) -> Vec<u8> {
    build_batch_with(BatchOptions::default(), records)
}

/// Builds a valid uncompressed v2 batch with the given producer fields. An empty
/// `records` gives a header-only batch (lastOffsetDelta 0, recordCount 0).
pub fn build_batch_with(options: BatchOptions, records: &[NewRecord<'_>]) -> Vec<u8> {
    let base_timestamp = records.first().map_or(NO_TIMESTAMP, |r| r.timestamp);
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(NO_TIMESTAMP);
    let mut out = vec![0u8; HEADER_LEN];
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        body.clear();
        body.push(0); // record attributes: unused in v2
        put_varlong(&mut body, r.timestamp.wrapping_sub(base_timestamp));
        put_varlong(&mut body, i as i64);
        put_nullable_bytes(&mut body, r.key);
        put_nullable_bytes(&mut body, r.value);
        put_varlong(&mut body, 0); // no headers
        put_varlong(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    let last_offset_delta = records.len().saturating_sub(1) as i32;
    let attributes: i16 = if options.transactional {
        TRANSACTIONAL_BIT
    } else {
        0
    };
    out[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&options.base_offset.to_be_bytes());
    out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&options.partition_leader_epoch.to_be_bytes());
    out[MAGIC] = MAGIC_V2 as u8;
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    out[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&last_offset_delta.to_be_bytes());
    out[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&base_timestamp.to_be_bytes());
    out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    out[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&options.producer_id.to_be_bytes());
    out[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&options.producer_epoch.to_be_bytes());
    out[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&options.base_sequence.to_be_bytes());
    out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&(records.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Test helper: a batch of `values` with no keys, timestamps `first_ts`, `first_ts+1`, ...
pub fn build_values_batch(values: &[&[u8]], first_ts: i64) -> Vec<u8> {
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            key: None,
            value: Some(v),
            timestamp: first_ts + i as i64,
        })
        .collect();
    build_batch(&records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build_batch(&[
            NewRecord {
                key: Some(b"k1"),
                value: Some(b"v1"),
                timestamp: 1000,
            },
            NewRecord {
                key: None,
                value: Some(b"value-two"),
                timestamp: 1500,
            },
            NewRecord {
                key: Some(b"k3"),
                value: None,
                timestamp: 1200,
            },
        ])
    }

    #[test]
    fn last_offset_of_a_header_near_the_top_saturates() {
        let mut h = BatchHeader::parse(&sample()).unwrap();
        h.base_offset = i64::MAX - 1;
        h.last_offset_delta = 2;
        assert_eq!(h.last_offset(), i64::MAX);
    }

    #[test]
    fn built_batch_parses_with_expected_header() {
        let bytes = sample();
        let batch = RecordBatch::parse(&bytes).unwrap();
        let h = batch.header();
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.batch_length as usize, bytes.len() - LOG_OVERHEAD);
        assert_eq!(h.magic, 2);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1500);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.compression(), 0);
        assert!(!h.is_log_append_time() && !h.is_transactional() && !h.is_control());
    }

    #[test]
    fn records_decode_to_what_was_built() {
        let bytes = sample();
        let batch = RecordBatch::parse(&bytes).unwrap();
        let recs: Vec<Record<'_>> = batch.records().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].offset, 0);
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[1].value, Some(&b"value-two"[..]));
        assert_eq!(recs[1].timestamp, 1500);
        assert_eq!(recs[2].offset, 2);
        assert_eq!(recs[2].value, None);
        assert_eq!(recs[2].timestamp, 1200);
    }

    #[test]
    fn negative_timestamp_deltas_round_trip() {
        let bytes = build_values_batch(&[b"a", b"b"], -5);
        let batch = RecordBatch::parse(&bytes).unwrap();
        let ts: Vec<i64> = batch
            .records()
            .unwrap()
            .map(|r| r.unwrap().timestamp)
            .collect();
        assert_eq!(ts, vec![-5, -4]);
    }

    #[test]
    fn crc_mismatch_is_corrupt() {
        let mut bytes = sample();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let err = RecordBatch::parse(&bytes).unwrap_err();
        assert!(
            matches!(&err, LogError::CorruptMessage(m) if m.contains("CRC")),
            "{err}"
        );
    }

    #[test]
    fn bad_magic_short_length_and_truncation_are_corrupt() {
        let mut bad_magic = sample();
        bad_magic[MAGIC] = 1;
        let err = RecordBatch::parse(&bad_magic).unwrap_err();
        assert!(
            matches!(&err, LogError::CorruptMessage(m) if m.contains("magic")),
            "{err}"
        );

        let mut short = sample();
        short[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&10i32.to_be_bytes());
        let err = batches(&short).next().unwrap().unwrap_err();
        assert!(
            matches!(&err, LogError::CorruptMessage(m) if m.contains("minimum")),
            "{err}"
        );

        let full = sample();
        let err = batches(&full[..full.len() - 3])
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&err, LogError::CorruptMessage(m) if m.contains("truncated")),
            "{err}"
        );
        let err = batches(&full[..5]).next().unwrap().unwrap_err();
        assert!(
            matches!(&err, LogError::CorruptMessage(m) if m.contains("truncated")),
            "{err}"
        );
    }

    #[test]
    fn iterator_yields_each_batch_with_its_position() {
        let a = sample();
        let b = build_values_batch(&[b"x"], 7);
        let mut buf = a.clone();
        buf.extend_from_slice(&b);
        let got: Vec<(usize, u64)> = batches(&buf)
            .map(|r| r.map(|(pos, batch)| (pos, batch.size())).unwrap())
            .collect();
        assert_eq!(got, vec![(0, a.len() as u64), (a.len(), b.len() as u64)]);
        // Garbage after a good batch: the good one, then one error, then nothing.
        let mut bad = a.clone();
        bad.extend_from_slice(&[0xff; 20]);
        let mut it = batches(&bad);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    #[test]
    fn set_partition_leader_epoch_keeps_crc_valid() {
        let mut bytes = sample();
        set_partition_leader_epoch(&mut bytes, 7);
        let batch = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(batch.header().partition_leader_epoch, 7);
    }

    #[test]
    fn set_base_offset_keeps_crc_valid() {
        let mut bytes = sample();
        set_base_offset(&mut bytes, 42);
        let batch = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(batch.base_offset(), 42);
        assert_eq!(batch.last_offset(), 44);
        let offsets: Vec<i64> = batch
            .records()
            .unwrap()
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(offsets, vec![42, 43, 44]);
    }

    #[test]
    fn log_append_time_sets_attribute_max_timestamp_and_crc() {
        let mut bytes = sample();
        let old_crc = RecordBatch::parse(&bytes).unwrap().header().crc;
        set_log_append_time(&mut bytes, 99_000);
        let batch = RecordBatch::parse(&bytes).unwrap();
        let h = batch.header();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_000);
        assert_ne!(h.crc, old_crc);
        // Every record now reads as stamped with the append time.
        let ts: Vec<i64> = batch
            .records()
            .unwrap()
            .map(|r| r.unwrap().timestamp)
            .collect();
        assert_eq!(ts, vec![99_000; 3]);
    }

    #[test]
    fn find_timestamp_returns_first_record_at_or_after() {
        let mut bytes = sample(); // timestamps 1000, 1500, 1200
        set_base_offset(&mut bytes, 10);
        assert_sample_timestamp_lookups(&RecordBatch::parse(&bytes).unwrap());
    }

    /// The sample's records (timestamps 1000, 1500, 1200) at offsets 10-12.
    fn assert_sample_timestamp_lookups(batch: &RecordBatch) {
        assert_eq!(
            batch.find_timestamp(900, 0, 1 << 20).unwrap(),
            Some((10, 1000))
        );
        assert_eq!(
            batch.find_timestamp(1100, 0, 1 << 20).unwrap(),
            Some((11, 1500))
        );
        assert_eq!(
            batch.find_timestamp(1500, 0, 1 << 20).unwrap(),
            Some((11, 1500))
        );
        assert_eq!(
            batch.find_timestamp(1200, 12, 1 << 20).unwrap(),
            Some((12, 1200))
        );
        assert_eq!(batch.find_timestamp(1501, 0, 1 << 20).unwrap(), None);
    }

    #[test]
    fn compressed_batch_is_opened_for_the_exact_record() {
        let plain = sample();
        // The same records, gzip-compressed, under the same header.
        let compressed = super::super::codec::compress(1, &plain[HEADER_LEN..]).unwrap();
        let mut bytes = plain[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&compressed);
        let batch_length = (bytes.len() - LOG_OVERHEAD) as i32;
        bytes[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
        bytes[ATTRIBUTES + 1] |= 1;
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        set_base_offset(&mut bytes, 10);
        let batch = RecordBatch::parse(&bytes).unwrap();
        assert!(
            batch.records().is_none(),
            "records() reads only uncompressed batches"
        );
        // Same answers as for the uncompressed batch.
        assert_sample_timestamp_lookups(&batch);
    }
}

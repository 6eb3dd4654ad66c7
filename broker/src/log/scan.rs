//! A read-only walk over the batch headers of a log, for state derived from the log
//! (producer sequences, and leader epochs when their checkpoint is missing) that must be rebuilt after a crash.
//!
//! Only the fixed-size header of each batch is read: the records stay on disk. The walk
//! goes through `Log::read`, so it follows the log's own segment lookup and never sees
//! bytes past the log end.

use std::os::unix::fs::FileExt;

use super::batch::{BatchHeader, HEADER_LEN};
use super::{Log, LogError};

/// How much `Log::read` hands out per step. Bounded so a long log is walked segment
/// piece by segment piece instead of sizing one huge range first.
const CHUNK_BYTES: u64 = 1 << 20;

/// Calls `visit` with the header of every batch from the one holding `from` (clamped to
/// the log start) up to the log end, in offset order.
pub fn scan_batch_headers(
    log: &Log,
    from: i64,
    mut visit: impl FnMut(&BatchHeader),
) -> Result<(), LogError> {
    let mut offset = from.max(log.log_start_offset());
    let end = log.log_end_offset();
    while offset < end {
        let Some(slice) = log.read(offset, CHUNK_BYTES, i64::MAX, true)? else {
            break;
        };
        let mut pos = slice.position;
        let stop = slice.position + slice.len;
        let mut next = offset;
        while pos < stop {
            let mut buf = [0u8; HEADER_LEN];
            slice.file.read_exact_at(&mut buf, pos)?;
            let header = BatchHeader::parse(&buf)?;
            visit(&header);
            next = next.max(header.last_offset() + 1);
            pos += header.size();
        }
        if next <= offset {
            // A slice that does not move forward would loop forever; the log is damaged.
            return Err(LogError::CorruptMessage(format!(
                "scan of {} made no progress at offset {offset}",
                log.dir().display()
            )));
        }
        offset = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::log::batch::build_values_batch;
    use crate::log::LogConfig;

    #[test]
    fn visits_every_batch_header_from_an_offset_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 300,
            retention_ms: -1,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), config, 0).unwrap();
        for i in 0..10 {
            let mut b = BytesMut::from(&build_values_batch(&[&[i as u8; 40], b"x"], 0)[..]);
            log.append(&mut b, 0, 0).unwrap();
        }
        assert!(log.segment_count() > 2);
        let mut bases = Vec::new();
        scan_batch_headers(&log, 0, |h| bases.push(h.base_offset)).unwrap();
        assert_eq!(bases, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        // From inside a batch: that batch first.
        let mut bases = Vec::new();
        scan_batch_headers(&log, 7, |h| bases.push(h.base_offset)).unwrap();
        assert_eq!(bases, vec![6, 8, 10, 12, 14, 16, 18]);
        let mut n = 0;
        scan_batch_headers(&log, 20, |_| n += 1).unwrap();
        assert_eq!(n, 0);
    }
}

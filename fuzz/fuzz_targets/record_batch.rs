//! Record-batch validation on arbitrary bytes: the produce path's checks (framing, CRC,
//! record walk, bounded decompression) and the ListOffsets walk over a stored batch
//! must answer every input with a value or a typed error, never a panic, and stay
//! within bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_broker::log::batch::batches;
use rill_broker::log::{validate_client_batch, TimestampType, ValidationConfig};

fuzz_target!(|data: &[u8]| {
    let now_ms = 1_700_000_000_000;
    // The first byte picks the topic settings, so both timestamp types, compacted
    // topics and tight timestamp bounds are reached.
    let (settings, records) = data.split_first().unwrap_or((&0, data));
    let cfg = ValidationConfig {
        partition: "fuzz-0",
        now_ms,
        timestamp_type: if settings & 1 == 0 {
            TimestampType::CreateTime
        } else {
            TimestampType::LogAppendTime
        },
        timestamp_before_max_ms: if settings & 2 == 0 { i64::MAX } else { 1000 },
        timestamp_after_max_ms: 3_600_000,
        compacted: settings & 4 != 0,
        // Small, so bombs are cheap to find and to refuse.
        max_decompressed_bytes: 1 << 20,
    };
    for item in batches(records).take(16) {
        let Ok((_, batch)) = item else { break };
        let checked = validate_client_batch(&batch, &cfg);
        if checked.is_ok() {
            // A batch that passed says the truth about its offsets.
            let h = batch.header();
            assert!(h.record_count > 0);
            assert_eq!(h.last_offset_delta as i64 + 1, h.record_count as i64);
            assert!(!h.is_control());
        }
        let _ = batch.find_timestamp(i64::MIN, i64::MIN, 1 << 20);
    }
});

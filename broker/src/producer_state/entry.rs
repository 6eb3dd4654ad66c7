//! What a partition remembers about one idempotent producer, and Kafka's sequence
//! rules over it. Pure: no I/O, no locks, so the rules are tested as a table.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::SequenceError;

/// Kafka keeps the last five batches per producer: a client has at most five requests
/// in flight per connection with idempotence, so any retry it sends is among them.
pub const BATCHES_TO_RETAIN: usize = 5;

/// The epoch of a producer this partition has never seen (Kafka's NO_PRODUCER_EPOCH).
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// One appended batch of a producer: its sequence range and where it landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp as stored (the append time under LogAppendTime).
    pub timestamp: i64,
}

/// The state of one producer id in one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`BATCHES_TO_RETAIN`].
    pub batches: VecDeque<BatchMetadata>,
}

impl Default for ProducerEntry {
    /// A producer with no batch yet: the first one sets its epoch.
    fn default() -> Self {
        ProducerEntry {
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
        }
    }
}

/// The sequence-relevant fields of an incoming batch of an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncomingBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_offset_delta: i32,
}

impl IncomingBatch {
    pub fn last_seq(&self) -> i32 {
        increment_sequence(self.first_seq, self.last_offset_delta)
    }
}

/// Sequences wrap from i32::MAX to 0 (Kafka's DefaultRecordBatch.incrementSequence).
pub fn increment_sequence(seq: i32, increment: i32) -> i32 {
    if seq > i32::MAX - increment {
        increment - (i32::MAX - seq) - 1
    } else {
        seq + increment
    }
}

/// Whether `next` directly follows `last`, wrapping at i32::MAX.
pub fn in_sequence(last: i32, next: i32) -> bool {
    next as i64 == last as i64 + 1 || (next == 0 && last == i32::MAX)
}

impl ProducerEntry {
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    pub fn last_timestamp(&self) -> Option<i64> {
        self.batches.back().map(|b| b.timestamp)
    }

    /// The cached batch a retry of `batch` would be, if any: same epoch and exactly
    /// the same sequence range.
    pub fn find_duplicate(&self, batch: &IncomingBatch) -> Option<BatchMetadata> {
        if batch.epoch != self.epoch {
            return None;
        }
        let last_seq = batch.last_seq();
        self.batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == last_seq)
            .copied()
    }

    /// Records an appended batch. A new epoch starts a new sequence history.
    pub fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        self.batches.push_back(batch);
        while self.batches.len() > BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
    }
}

/// Kafka's ProducerAppendInfo.checkProducerEpoch + checkSequence for a client append.
/// `current` is the producer's state including earlier batches of the same request
/// (`None`: unknown here). Duplicates are looked for by the caller first.
///
/// An unknown producer is accepted with any sequence, as Kafka does since KIP-360: its
/// state may be gone because retention or DeleteRecords removed all its batches, or it
/// expired after `producer.id.expiration.ms`, and refusing it would wedge the client.
/// Nothing of a known producer is ever lost here: state is snapshotted and rebuilt
/// from the log after a crash.
pub fn check_sequence(
    current: Option<&ProducerEntry>,
    batch: &IncomingBatch,
) -> Result<(), SequenceError> {
    let Some(current) = current else {
        return Ok(());
    };
    if batch.epoch < current.epoch {
        return Err(SequenceError::InvalidProducerEpoch {
            producer_id: batch.producer_id,
            epoch: batch.epoch,
            current: current.epoch,
        });
    }
    if batch.epoch > current.epoch {
        // A new epoch (the client bumped it after an error) restarts at 0.
        if batch.first_seq != 0 && current.epoch != NO_PRODUCER_EPOCH {
            return Err(SequenceError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                expected: 0,
                got: batch.first_seq,
            });
        }
        return Ok(());
    }
    match current.last_seq() {
        Some(last) if !in_sequence(last, batch.first_seq) => {
            Err(SequenceError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                expected: increment_sequence(last, 1),
                got: batch.first_seq,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMetadata {
        BatchMetadata {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + (last_seq as i64 - first_seq as i64),
            timestamp: 0,
        }
    }

    fn batch(epoch: i16, first_seq: i32, records: i32) -> IncomingBatch {
        IncomingBatch {
            producer_id: 7,
            epoch,
            first_seq,
            last_offset_delta: records - 1,
        }
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert!(in_sequence(i32::MAX, 0));
        assert!(in_sequence(4, 5));
        assert!(!in_sequence(4, 6));
        assert!(!in_sequence(4, 4));
        assert_eq!(batch(0, i32::MAX - 1, 4).last_seq(), 1);
    }

    #[test]
    fn the_sequence_rules_table() {
        let mut entry = ProducerEntry::default();
        entry.add_batch(3, meta(0, 4, 100));
        entry.add_batch(3, meta(5, 9, 105));
        let e = Some(&entry);
        use SequenceError::*;
        // (batch, expected outcome)
        let cases: Vec<(IncomingBatch, Result<(), SequenceError>)> = vec![
            (batch(3, 10, 5), Ok(())),
            // A gap.
            (
                batch(3, 12, 1),
                Err(OutOfOrderSequence {
                    producer_id: 7,
                    epoch: 3,
                    expected: 10,
                    got: 12,
                }),
            ),
            // Behind (not an exact duplicate either).
            (
                batch(3, 6, 2),
                Err(OutOfOrderSequence {
                    producer_id: 7,
                    epoch: 3,
                    expected: 10,
                    got: 6,
                }),
            ),
            // A new epoch must start at 0.
            (batch(4, 0, 3), Ok(())),
            (
                batch(4, 10, 3),
                Err(OutOfOrderSequence {
                    producer_id: 7,
                    epoch: 4,
                    expected: 0,
                    got: 10,
                }),
            ),
            // An old epoch is fenced.
            (
                batch(2, 10, 1),
                Err(InvalidProducerEpoch {
                    producer_id: 7,
                    epoch: 2,
                    current: 3,
                }),
            ),
        ];
        for (b, want) in cases {
            assert_eq!(check_sequence(e, &b), want, "{b:?}");
        }
        // Unknown producers are taken with any sequence (Kafka since KIP-360).
        assert_eq!(check_sequence(None, &batch(0, 42, 1)), Ok(()));
        // Wraparound continues at 0.
        let mut wrap = ProducerEntry::default();
        wrap.add_batch(0, meta(i32::MAX - 1, i32::MAX, 9));
        assert_eq!(check_sequence(Some(&wrap), &batch(0, 0, 1)), Ok(()));
    }

    #[test]
    fn duplicates_are_exact_ranges_of_the_last_five_in_the_same_epoch() {
        let mut entry = ProducerEntry::default();
        for i in 0..7 {
            entry.add_batch(1, meta(i * 2, i * 2 + 1, 50 + i as i64 * 2));
        }
        assert_eq!(entry.batches.len(), BATCHES_TO_RETAIN);
        // Batches 0 and 1 fell out of the window; 2..=6 remain.
        assert_eq!(entry.find_duplicate(&batch(1, 2, 2)), None);
        assert_eq!(entry.find_duplicate(&batch(1, 4, 2)), Some(meta(4, 5, 54)));
        assert_eq!(
            entry.find_duplicate(&batch(1, 12, 2)),
            Some(meta(12, 13, 62))
        );
        // Same start, different length: not a duplicate.
        assert_eq!(entry.find_duplicate(&batch(1, 12, 1)), None);
        // Another epoch: not a duplicate.
        assert_eq!(entry.find_duplicate(&batch(2, 12, 2)), None);
        // A new epoch clears the history.
        entry.add_batch(2, meta(0, 0, 70));
        assert_eq!(entry.batches.len(), 1);
        assert_eq!(entry.epoch, 2);
    }
}

//! Idempotent producers: producer ids, per-partition sequence tracking, snapshots.
//!
//! Kafka semantics, and where Rill chooses:
//! - InitProducerId without a transactional id always gets a fresh producer id with
//!   epoch 0, as Kafka's TransactionCoordinator does for idempotent producers, also when
//!   the request (v3+, KIP-360) names its current id and epoch: the Java client bumps
//!   an idempotent producer's epoch itself, and no single broker knows an idempotent
//!   producer's epoch to validate a bump against.
//! - Transactions are not implemented. InitProducerId with a transactional id answers
//!   UNSUPPORTED_VERSION (fatal and explicit in the Java client and librdkafka, where
//!   NOT_COORDINATOR would make them retry until a timeout); a transactional or control
//!   batch in a produce is refused with INVALID_TXN_STATE, Kafka's answer to a
//!   transactional write outside a transaction.
//! - Per (producer, partition) the last five batches are kept. A retry of one of them
//!   (same epoch, same sequence range) is not written again and is answered with no
//!   error and the original base offset. A gap is OUT_OF_ORDER_SEQUENCE_NUMBER, an
//!   older epoch INVALID_PRODUCER_EPOCH, a newer epoch must start at sequence 0.
//! - An unknown producer is accepted at any sequence (Kafka since KIP-360), so
//!   UNKNOWN_PRODUCER_ID is never returned: its state is only ever missing after its
//!   batches left the log or it expired, and refusing it would wedge the client.
//! - State lives in the partition, not the log (which stays a codec), under a lock
//!   taken after the log's; it is snapshotted to `<offset>.snapshot` files and rebuilt
//!   from the log's batch headers after the newest snapshot at open. Followers apply
//!   the batches they copy with [`ProducerStateManager::apply`]; nothing here assumes
//!   this node leads.

mod entry;
mod manager;
mod producer_id;
pub mod snapshot;

pub use entry::{BatchMetadata, ProducerEntry, BATCHES_TO_RETAIN};
pub use manager::{batch_headers, AppendCheck, ProducerStateManager};
pub use producer_id::{
    LocalBlockSource, ProducerIdBlock, ProducerIdBlockSource, ProducerIdError, ProducerIdManager,
};
pub use snapshot::SnapshotError;

use crate::log::LogError;

/// Kafka's `producer.id.expiration.ms` default: a producer silent for a day is forgotten.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a client's idempotent batch is refused. Each maps to one Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} used epoch {epoch}, older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error(
        "out of order sequence for producer {producer_id} epoch {epoch}: expected {expected}, got {got}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} sent a transactional batch; transactions are not supported")]
    TransactionsUnsupported { producer_id: i64 },
    #[error(
        "producer {producer_id} sent epoch {epoch} and sequence {sequence}; both must be >= 0"
    )]
    InvalidProducerFields {
        producer_id: i64,
        epoch: i16,
        sequence: i32,
    },
    #[error("a produce mixed retried batches with new ones for the same partition")]
    MixedDuplicates,
}

/// Loading or persisting a partition's producer state.
#[derive(Debug, thiserror::Error)]
pub enum ProducerStateError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("rebuilding producer state from the log: {0}")]
    Log(#[from] LogError),
}

//! Our typed errors to the Kafka error codes clients expect.

use kafka_protocol::ResponseError;

use crate::log::LogError;
use crate::partition::PartitionError;
use crate::producer_state::SequenceError;
use crate::replica_manager::TopicError;

pub fn log_error(e: &LogError) -> ResponseError {
    match e {
        LogError::CorruptMessage(_) => ResponseError::CorruptMessage,
        LogError::InvalidRecord { .. } => ResponseError::InvalidRecord,
        LogError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp,
        LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io(_) => ResponseError::KafkaStorageError,
        // Follower appends only; Kafka has no client error code for them either.
        LogError::UnexpectedAppendOffset { .. } | LogError::OffsetOutOfOrder { .. } => {
            ResponseError::UnknownServerError
        }
    }
}

pub fn partition_error(e: &PartitionError) -> ResponseError {
    match e {
        PartitionError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        PartitionError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        PartitionError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
        PartitionError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        PartitionError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        PartitionError::NotAReplica(_) => ResponseError::NotLeaderOrFollower,
        PartitionError::Log(e) => log_error(e),
        PartitionError::ProducerState(e) => sequence_error(e),
    }
}

pub fn sequence_error(e: &SequenceError) -> ResponseError {
    match e {
        SequenceError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        SequenceError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        SequenceError::TransactionsUnsupported { .. } => ResponseError::InvalidTxnState,
        SequenceError::InvalidProducerFields { .. } | SequenceError::MixedDuplicates => {
            ResponseError::InvalidRecord
        }
    }
}

pub fn topic_error(e: &TopicError) -> ResponseError {
    match e {
        TopicError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::InvalidTopic { .. } => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InternalTopic(_) => ResponseError::InvalidRequest,
        TopicError::Storage(e) => log_error(e),
        TopicError::Metadata(_) => ResponseError::KafkaStorageError,
        TopicError::Cluster(e) => code_error(e.code()),
    }
}

/// A Kafka error code from the metadata image (or the quorum) as the crate's error;
/// codes the crate does not know become UNKNOWN_SERVER_ERROR.
pub fn code_error(code: i16) -> ResponseError {
    use kafka_protocol::error::ParseResponseErrorCode;
    code.err().unwrap_or(ResponseError::UnknownServerError)
}

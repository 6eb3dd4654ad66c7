//! ListOffsets: earliest, latest, max-timestamp, and offset-by-timestamp lookups.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::error_codes::log_error;
use super::Context;
use crate::partition::Partition;

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub fn handle(ctx: &Context, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    match ctx
                        .replicas
                        .partition(topic.name.0.as_str(), p.partition_index)
                    {
                        None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                        Some(partition) => match lookup(&partition, p.timestamp) {
                            Ok((offset, timestamp)) => base
                                .with_offset(offset)
                                .with_timestamp(timestamp)
                                // The field exists from v4; the crate refuses it earlier.
                                .with_leader_epoch(if version >= 4 {
                                    partition.leader_epoch()
                                } else {
                                    -1
                                }),
                            Err(code) => base.with_error_code(code.code()),
                        },
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one query; (-1, -1) when no record qualifies, as Kafka does.
fn lookup(partition: &Partition, timestamp: i64) -> Result<(i64, i64), ResponseError> {
    let hw = partition.high_watermark();
    let found = match timestamp {
        LATEST => Some((hw, -1)),
        EARLIEST | EARLIEST_LOCAL => Some((partition.log_start_offset(), -1)),
        LATEST_TIERED => Some((-1, -1)),
        MAX_TIMESTAMP => partition.max_timestamp().map_err(|e| log_error(&e))?,
        t if t < 0 => return Err(ResponseError::InvalidRequest),
        t => partition
            .offset_for_timestamp(t)
            .map_err(|e| log_error(&e))?,
    };
    // Consumers must not learn of offsets above the high watermark.
    Ok(match found {
        Some((offset, ts)) if offset <= hw => (offset, ts),
        _ => (-1, -1),
    })
}

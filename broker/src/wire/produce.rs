//! Produce: append each partition's batches to its log as leader and answer with the
//! base offset. acks=-1 waits for the ISR, which on one node is this broker alone.

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::error_codes::partition_error;
use super::Context;
use crate::replica_manager::now_ms;

/// Returns `None` for acks=0, which gets no response at all.
pub fn handle(ctx: &Context, request: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let acks = request.acks;
    // Runs inside `block_in_place` (see dispatch): appends may fsync.
    let responses = {
        request
            .topic_data
            .into_iter()
            .map(|topic| {
                let (name, unknown) =
                    super::topic_for_partitions(ctx, version >= 13, &topic.name, topic.topic_id);
                let partition_responses = topic
                    .partition_data
                    .into_iter()
                    .map(|p| {
                        let base = PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1);
                        if !matches!(acks, -1..=1) {
                            return base.with_error_code(ResponseError::InvalidRequiredAcks.code());
                        }
                        let Some(partition) = name
                            .as_deref()
                            .and_then(|t| ctx.replicas.partition(t, p.index))
                        else {
                            return base.with_error_code(unknown.code());
                        };
                        let Some(records) = p.records.filter(|r| !r.is_empty()) else {
                            return base
                                .with_error_code(ResponseError::CorruptMessage.code())
                                .with_error_message(Some(StrBytes::from_static_str("no record batches")));
                        };
                        let mut records = BytesMut::from(&records[..]);
                        match partition.append_as_leader(&mut records, acks, now_ms()) {
                            Ok(info) => {
                                let topic_label = [partition.topic.as_str()];
                                ctx.metrics.records_in.with_label_values(&topic_label).inc_by(info.record_count);
                                ctx.metrics.bytes_in.with_label_values(&topic_label).inc_by(info.bytes);
                                base.with_base_offset(info.base_offset)
                                    .with_log_append_time_ms(info.log_append_time)
                                    .with_log_start_offset(partition.log_start_offset())
                            }
                            Err(e) => {
                                tracing::warn!(topic = %partition.topic, partition = p.index, error = %e, "produce rejected");
                                base.with_error_code(partition_error(&e).code())
                                    .with_error_message(Some(StrBytes::from_string(e.to_string())))
                            }
                        }
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(topic.name)
                    .with_topic_id(topic.topic_id)
                    .with_partition_responses(partition_responses)
            })
            .collect::<Vec<_>>()
    };
    ctx.replicas.notify_appended();
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

//! Produce: append each partition's batches to its log as leader and answer with the
//! base offset. acks=-1 answers once the high watermark passes the batch (every ISR
//! member has it), or with an error when leadership moved or the ISR shrank below
//! `min.insync.replicas` meanwhile.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::error_codes::partition_error;
use super::Context;
use crate::log::{batch, LogError};
use crate::partition::{AckStatus, Partition, PartitionError};
use crate::replica_manager::now_ms;

/// An acks=all append waiting for the ISR: where its answer goes in the response and
/// what it waits for.
struct Waiting {
    topic: usize,
    partition: usize,
    partition_ref: Arc<Partition>,
    required: i64,
    leader_epoch: i32,
}

/// Returns `None` for acks=0, which gets no response at all.
pub async fn handle(
    ctx: &Context,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    // Appends may fsync: they run where blocking is allowed.
    let (mut responses, waiting, endpoints) =
        tokio::task::block_in_place(|| append(ctx, request, version));
    if !waiting.is_empty() {
        wait_for_isr(&mut responses, waiting, timeout).await;
    }
    (acks != 0).then(|| {
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints)
    })
}

/// Waits until each acks=all append is acknowledged by the ISR, or the timeout.
async fn wait_for_isr(
    responses: &mut [TopicProduceResponse],
    waiting: Vec<Waiting>,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    for w in waiting {
        let status = w
            .partition_ref
            .wait_for_ack(w.required, w.leader_epoch, deadline)
            .await;
        let error = match status {
            AckStatus::Done => None,
            AckStatus::NotLeader => Some(ResponseError::NotLeaderOrFollower),
            AckStatus::NotEnoughReplicasAfterAppend { .. } => {
                Some(ResponseError::NotEnoughReplicasAfterAppend)
            }
            AckStatus::Pending => Some(ResponseError::RequestTimedOut),
        };
        if let Some(error) = error {
            let r = &mut responses[w.topic].partition_responses[w.partition];
            r.error_code = error.code();
            r.error_message = Some(StrBytes::from_static_str(match error {
                ResponseError::NotLeaderOrFollower => {
                    "leadership moved before the ISR had the records"
                }
                ResponseError::NotEnoughReplicasAfterAppend => {
                    "the ISR shrank below min.insync.replicas"
                }
                _ => "the ISR did not acknowledge the records in time",
            }));
        }
    }
}

fn append(
    ctx: &Context,
    request: ProduceRequest,
    version: i16,
) -> (Vec<TopicProduceResponse>, Vec<Waiting>, Vec<NodeEndpoint>) {
    let acks = request.acks;
    let mut waiting = Vec::new();
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    let responses = {
        request
            .topic_data
            .into_iter()
            .enumerate()
            .map(|(ti, topic)| {
                let (name, unknown) =
                    super::topic_for_partitions(ctx, version >= 13, &topic.name, topic.topic_id);
                let partition_responses = topic
                    .partition_data
                    .into_iter()
                    .enumerate()
                    .map(|(pi, p)| {
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
                            let code = super::not_hosted(ctx, name.as_deref(), p.index, unknown);
                            return with_leader_hint(ctx, name.as_deref(), p.index, code, base, &mut endpoints, version)
                                .with_error_code(code.code());
                        };
                        let Some(records) = p.records.filter(|r| !r.is_empty()) else {
                            return base
                                .with_error_code(ResponseError::CorruptMessage.code())
                                .with_error_message(Some(StrBytes::from_static_str("no record batches")));
                        };
                        if version >= 3 && holds_more_than_one_batch(&records) {
                            return base
                                .with_error_code(ResponseError::InvalidRecord.code())
                                .with_error_message(Some(StrBytes::from_string(format!(
                                    "Produce requests with version {version} are only allowed to contain exactly one record batch per partition"
                                ))));
                        }
                        let mut records = BytesMut::from(&records[..]);
                        match partition.append_as_leader(&mut records, acks, now_ms()) {
                            Ok(info) => {
                                if acks == -1 {
                                    waiting.push(Waiting {
                                        topic: ti,
                                        partition: pi,
                                        partition_ref: partition.clone(),
                                        required: info.last_offset + 1,
                                        leader_epoch: partition.leader_epoch(),
                                    });
                                }
                                let topic_label = [partition.topic.as_str()];
                                ctx.metrics.records_in.with_label_values(&topic_label).inc_by(info.record_count);
                                ctx.metrics.bytes_in.with_label_values(&topic_label).inc_by(info.bytes);
                                base.with_base_offset(info.base_offset)
                                    .with_log_append_time_ms(info.log_append_time)
                                    .with_log_start_offset(partition.log_start_offset())
                            }
                            Err(e) => {
                                tracing::warn!(topic = %partition.topic, partition = p.index, error = %e, "produce rejected");
                                let code = partition_error(&e);
                                with_leader_hint(ctx, name.as_deref(), p.index, code, base, &mut endpoints, version)
                                    .with_error_code(code.code())
                                    .with_error_message(Some(StrBytes::from_string(e.to_string())))
                                    .with_record_errors(record_errors(&e))
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
    (responses, waiting, endpoints)
}

/// Kafka (ProduceRequest v3+) takes exactly one batch per partition. Only the first
/// batch's length is read here; the log checks the batches themselves.
fn holds_more_than_one_batch(records: &[u8]) -> bool {
    batch::batch_size_from_prefix(records).is_ok_and(|size| (records.len() as u64) > size)
}

/// The records a validation error names (v8+ `record_errors`).
fn record_errors(e: &PartitionError) -> Vec<BatchIndexAndErrorMessage> {
    let (PartitionError::Log(LogError::InvalidRecord { record_errors, .. })
    | PartitionError::Log(LogError::InvalidTimestamp { record_errors, .. })) = e
    else {
        return Vec::new();
    };
    record_errors
        .iter()
        .map(|r| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(r.batch_index)
                .with_batch_index_error_message(Some(StrBytes::from_string(r.message.clone())))
        })
        .collect()
}

/// KIP-951 (v10+): a NOT_LEADER_OR_FOLLOWER answer names the current leader, and
/// the response its endpoint, so the client moves without a metadata round trip.
fn with_leader_hint(
    ctx: &Context,
    topic: Option<&str>,
    partition: i32,
    code: ResponseError,
    base: PartitionProduceResponse,
    endpoints: &mut Vec<NodeEndpoint>,
    version: i16,
) -> PartitionProduceResponse {
    let mut named: Vec<i32> = endpoints.iter().map(|e| e.node_id.0).collect();
    let hint = (version >= 10)
        .then(|| super::leader_hint(ctx, topic, partition, code, &mut named))
        .flatten();
    let Some(super::LeaderHint {
        leader,
        epoch,
        endpoint,
    }) = hint
    else {
        return base;
    };
    if let Some((id, host, port)) = endpoint {
        endpoints.push(
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port),
        );
    }
    base.with_current_leader(
        LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(leader))
            .with_leader_epoch(epoch),
    )
}

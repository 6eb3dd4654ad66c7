//! Fetch: long-poll reads of whole batches up to the high watermark. Record bytes are
//! never copied: each partition's data is a file range that `response` splices into
//! the frame and `connection` sends with sendfile(2).
//!
//! Fetch sessions (KIP-227) are declined the way Kafka declines them when its cache is
//! full: we answer with session id 0, and clients keep sending full fetch requests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::error_codes::partition_error;
use super::response::{encode_with_files, marker, EncodeError, ResponseFrame};
use super::Context;
use std::sync::Arc;

use crate::log::ReadSlice;
use crate::partition::Partition;

pub async fn handle(
    ctx: &Context,
    request: FetchRequest,
    version: i16,
    correlation_id: i32,
) -> Result<ResponseFrame, EncodeError> {
    let flexible = version >= 12;
    if request.session_id != 0 {
        let response = FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
        return encode_with_files(correlation_id, version, &response, Vec::new(), flexible);
    }
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    loop {
        // Register for wake-ups before reading, so an append in between is not missed.
        let appended = ctx.replicas.appended().notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let read = read_all(ctx, &request, version);
        let now = Instant::now();
        if read.bytes >= request.min_bytes.max(0) as u64 || read.has_error || now >= deadline {
            for (partition, slice) in &read.files {
                let topic = [partition.topic.as_str()];
                ctx.metrics
                    .bytes_out
                    .with_label_values(&topic)
                    .inc_by(slice.len);
                ctx.metrics
                    .records_out
                    .with_label_values(&topic)
                    .inc_by(slice.record_count);
            }
            let files = read.files.into_iter().map(|(_, slice)| slice).collect();
            return encode_with_files(correlation_id, version, &read.response, files, flexible);
        }
        tokio::select! {
            _ = &mut appended => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

struct Read {
    response: FetchResponse,
    /// The file ranges in response order, with their partition for the metrics, which
    /// count them only once the response is really sent (not on a long-poll retry).
    files: Vec<(Arc<Partition>, ReadSlice)>,
    bytes: u64,
    has_error: bool,
}

fn read_all(ctx: &Context, request: &FetchRequest, version: i16) -> Read {
    let mut files = Vec::new();
    let mut bytes = 0u64;
    let mut has_error = false;
    let mut budget = request.max_bytes.max(0) as u64;
    let read_committed = request.isolation_level == 1;
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    for topic in &request.topics {
        let (name, unknown) =
            super::topic_for_partitions(ctx, version >= 13, &topic.topic, topic.topic_id);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions(read_committed.then(Vec::new))
                .with_records(Some(Bytes::new()));
            let partition = name
                .as_deref()
                .and_then(|t| ctx.replicas.partition(t, p.partition));
            let Some(partition) = partition else {
                has_error = true;
                let code = super::not_hosted(ctx, name.as_deref(), p.partition, unknown);
                let data = with_leader_hint(
                    ctx,
                    name.as_deref(),
                    p.partition,
                    code,
                    data,
                    &mut endpoints,
                    version,
                );
                partitions.push(data.with_error_code(code.code()));
                continue;
            };
            // KIP-320: a consumer that knows a newer or older leader epoch than ours.
            let epoch = partition.leader_epoch();
            if p.current_leader_epoch >= 0 && p.current_leader_epoch != epoch {
                has_error = true;
                let code = if p.current_leader_epoch < epoch {
                    ResponseError::FencedLeaderEpoch
                } else {
                    ResponseError::UnknownLeaderEpoch
                };
                partitions.push(data.with_error_code(code.code()));
                continue;
            }
            // Kafka's rule: the first batch of the first partition with data is sent
            // even when it alone exceeds the limits, so a consumer can always progress.
            let min_one_batch = files.is_empty();
            let max_bytes = (p.partition_max_bytes.max(0) as u64).min(budget);
            match partition.fetch(p.fetch_offset, max_bytes, min_one_batch) {
                Ok(fetched) => {
                    data = data
                        .with_high_watermark(fetched.high_watermark)
                        .with_last_stable_offset(fetched.high_watermark)
                        .with_log_start_offset(fetched.log_start_offset);
                    if let Some(slice) = fetched.slice {
                        bytes += slice.len;
                        budget = budget.saturating_sub(slice.len);
                        data = data.with_records(Some(marker(files.len())));
                        files.push((partition.clone(), slice));
                    }
                }
                Err(e) => {
                    has_error = true;
                    let code = partition_error(&e);
                    data = with_leader_hint(
                        ctx,
                        name.as_deref(),
                        p.partition,
                        code,
                        data,
                        &mut endpoints,
                        version,
                    );
                    data = data
                        .with_error_code(code.code())
                        .with_high_watermark(partition.high_watermark())
                        .with_last_stable_offset(partition.high_watermark())
                        .with_log_start_offset(partition.log_start_offset());
                }
            }
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    Read {
        response: FetchResponse::default()
            .with_session_id(0)
            .with_responses(topics)
            .with_node_endpoints(endpoints),
        files,
        bytes,
        has_error,
    }
}

/// KIP-951 (v16+): a NOT_LEADER_OR_FOLLOWER answer names the current leader, and
/// the response its endpoint, so the client moves without a metadata round trip.
fn with_leader_hint(
    ctx: &Context,
    topic: Option<&str>,
    partition: i32,
    code: ResponseError,
    data: PartitionData,
    endpoints: &mut Vec<NodeEndpoint>,
    version: i16,
) -> PartitionData {
    let mut named: Vec<i32> = endpoints.iter().map(|e| e.node_id.0).collect();
    let hint = (version >= 16)
        .then(|| super::leader_hint(ctx, topic, partition, code, &mut named))
        .flatten();
    let Some(super::LeaderHint {
        leader,
        epoch,
        endpoint,
    }) = hint
    else {
        return data;
    };
    if let Some((id, host, port)) = endpoint {
        endpoints.push(
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port),
        );
    }
    data.with_current_leader(
        LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(leader))
            .with_leader_epoch(epoch),
    )
}

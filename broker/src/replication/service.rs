//! The leader's side of replication: the tonic `Replication` service that answers
//! followers' fetches. Each follower keeps one stream open per leader; a request that
//! finds no new data waits (up to its max wait) for an append, as a Kafka fetch does.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::partition::{FollowerFetch, PartitionError};
use crate::replica_manager::{now_ms, ReplicaManager};
use crate::rpc::proto::replication_server::Replication;
use crate::rpc::proto::{PartitionData, ReplicaFetchRequest, ReplicaFetchResponse};
use crate::wire::error_codes::partition_error;

/// Longest a follower may ask the leader to wait for data.
const MAX_WAIT_CAP: Duration = Duration::from_secs(5);

pub struct ReplicationService {
    replicas: Arc<ReplicaManager>,
}

impl ReplicationService {
    pub fn new(replicas: Arc<ReplicaManager>) -> Self {
        ReplicationService { replicas }
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<ReplicaFetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for ReplicationService {
    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<Streaming<ReplicaFetchRequest>>,
    ) -> Result<Response<FetchStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let replicas = self.replicas.clone();
        tokio::spawn(async move {
            while let Some(next) = inbound.next().await {
                let reply = match next {
                    Ok(request) => Ok(answer(&replicas, request).await),
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One fetch: read every partition; if none had data, wait for an append (or the max
/// wait) and read once more, so followers learn of new records (and of the high
/// watermark) promptly without spinning.
async fn answer(
    replicas: &Arc<ReplicaManager>,
    request: ReplicaFetchRequest,
) -> ReplicaFetchResponse {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = replicas.appended().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let response = {
            let replicas = replicas.clone();
            let request = request.clone();
            tokio::task::spawn_blocking(move || read_all(&replicas, &request))
                .await
                .unwrap_or_default()
        };
        let has_data = response
            .partitions
            .iter()
            .any(|p| !p.records.is_empty() || p.error_code != 0 || p.diverging);
        if has_data || tokio::time::Instant::now() >= deadline {
            return response;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            // One last read: the high watermark may have moved without a wake-up.
            let replicas = replicas.clone();
            return tokio::task::spawn_blocking(move || read_all(&replicas, &request))
                .await
                .unwrap_or_default();
        }
    }
}

fn read_all(replicas: &ReplicaManager, request: &ReplicaFetchRequest) -> ReplicaFetchResponse {
    let now = now_ms();
    let mut budget = request.max_bytes.max(1) as u64;
    let partitions = request
        .partitions
        .iter()
        .map(|p| {
            let mut data = PartitionData {
                topic: p.topic.clone(),
                partition: p.partition,
                high_watermark: -1,
                log_start_offset: -1,
                ..PartitionData::default()
            };
            let Some(partition) = replicas.partition(&p.topic, p.partition) else {
                data.error_code = kafka_protocol::ResponseError::NotLeaderOrFollower.code().into();
                return data;
            };
            let result = partition.fetch_for_follower(
                request.replica_id,
                p.fetch_offset,
                p.last_fetched_epoch,
                p.current_leader_epoch,
                budget,
                now,
            );
            match result {
                Ok(FollowerFetch::Records {
                    records,
                    high_watermark,
                    log_start_offset,
                }) => {
                    budget = budget.saturating_sub(records.len() as u64).max(1);
                    data.records = records;
                    data.high_watermark = high_watermark;
                    data.log_start_offset = log_start_offset;
                }
                Ok(FollowerFetch::Diverging { epoch, end_offset }) => {
                    data.diverging = true;
                    data.diverging_epoch = epoch;
                    data.diverging_end_offset = end_offset;
                    data.high_watermark = partition.high_watermark();
                }
                Ok(FollowerFetch::BelowLogStart { log_start_offset }) => {
                    data.error_code = kafka_protocol::ResponseError::OffsetOutOfRange.code().into();
                    data.log_start_offset = log_start_offset;
                }
                Err(e) => {
                    if !matches!(e, PartitionError::NotLeader { .. }) {
                        tracing::debug!(topic = %p.topic, partition = p.partition, error = %e, "replica fetch refused");
                    }
                    data.error_code = partition_error(&e).code().into();
                }
            }
            data
        })
        .collect();
    ReplicaFetchResponse { partitions }
}

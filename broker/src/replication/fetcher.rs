//! The follower's side: one task per leader broker keeps a fetch stream open to it and
//! replicates every partition this broker follows there. Tasks come and go with
//! leadership (`FetcherManager::sync` after each metadata change).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::partition::Partition;
use crate::replica_manager::{now_ms, ReplicaManager};
use crate::rpc::proto::replication_client::ReplicationClient;
use crate::rpc::proto::{PartitionData, PartitionFetch, ReplicaFetchRequest};

/// Pause after a failed connection or stream before trying again.
const RETRY: Duration = Duration::from_millis(200);

/// Follower partitions (topic, index) by leader, as of the last metadata change.
/// Keys, not the partitions: holding them would keep deleted partitions (and the
/// shutdown's wait for sole ownership) waiting on the fetchers.
type Assignments = Arc<parking_lot::RwLock<HashMap<i32, Vec<(String, i32)>>>>;

pub struct FetcherManager {
    replicas: Arc<ReplicaManager>,
    /// Computed once per metadata change (`sync`), read by every fetch round: the
    /// rounds need not scan every hosted partition.
    assignments: Assignments,
    /// This node's IP: outgoing connections bind to it, so a fault-injecting proxy can
    /// tell the nodes apart on loopback.
    local_ip: Option<IpAddr>,
    tasks: Mutex<HashMap<i32, JoinHandle<()>>>,
    shutdown: watch::Receiver<bool>,
}

impl FetcherManager {
    pub fn new(
        replicas: Arc<ReplicaManager>,
        local_ip: Option<IpAddr>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        FetcherManager {
            replicas,
            assignments: Assignments::default(),
            local_ip,
            tasks: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    /// Starts a fetcher for every leader this broker follows and stops those no
    /// partition needs any more.
    pub fn sync(&self) {
        let by_leader: HashMap<i32, Vec<(String, i32)>> = self
            .replicas
            .followers_by_leader()
            .into_iter()
            .map(|(leader, ps)| {
                let keys = ps.iter().map(|p| (p.topic.clone(), p.index)).collect();
                (leader, keys)
            })
            .collect();
        let leaders: Vec<i32> = by_leader.keys().copied().collect();
        *self.assignments.write() = by_leader;
        let mut tasks = self.tasks.lock();
        tasks.retain(|leader, task| {
            let keep = leaders.contains(leader) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for leader in leaders {
            tasks.entry(leader).or_insert_with(|| {
                tokio::spawn(fetch_from(
                    self.replicas.clone(),
                    self.assignments.clone(),
                    leader,
                    self.local_ip,
                    self.shutdown.clone(),
                ))
            });
        }
    }

    pub fn stop(&self) {
        for (_, task) in self.tasks.lock().drain() {
            task.abort();
        }
    }
}

/// The internal (tonic) address of a broker, from its registration.
fn internal_address(replicas: &ReplicaManager, broker: i32) -> Option<String> {
    let image = replicas.cluster().image();
    image
        .brokers
        .get(&broker)
        .map(|b| b.endpoints.internal.clone())
}

async fn fetch_from(
    replicas: Arc<ReplicaManager>,
    assignments: Assignments,
    leader: i32,
    local_ip: Option<IpAddr>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if assignments.read().get(&leader).is_none_or(Vec::is_empty) {
            return;
        }
        match stream_from(&replicas, &assignments, leader, local_ip).await {
            Ok(()) => {}
            Err(e) => tracing::debug!(leader, error = %e, "replica fetch stream ended"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs one stream to the leader until it breaks or this broker follows nothing there.
async fn stream_from(
    replicas: &Arc<ReplicaManager>,
    assignments: &Assignments,
    leader: i32,
    local_ip: Option<IpAddr>,
) -> Result<(), String> {
    let address = internal_address(replicas, leader).ok_or("leader has no address")?;
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .local_address(local_ip);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut client = ReplicationClient::new(channel)
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(1);
    let config = replicas.config().cluster.clone();
    let replica_id = replicas.config().node_id;
    let mut requests = build_request(replicas, assignments, leader, replica_id, &config);
    let Some((first, mut sent)) = requests.take() else {
        return Ok(());
    };
    tx.send(first).await.map_err(|e| e.to_string())?;
    let mut responses = client
        .fetch(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    loop {
        let response = tokio::time::timeout(
            Duration::from_millis(config.replica_fetch_wait_max_ms as u64)
                + Duration::from_secs(10),
            responses.message(),
        )
        .await
        .map_err(|_| "no answer from the leader".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("leader closed the stream")?;
        let handled = tokio::task::spawn_blocking(move || {
            for data in response.partitions {
                apply(&sent, data);
            }
        })
        .await;
        if handled.is_err() {
            return Err("applying fetched data panicked".into());
        }
        match build_request(replicas, assignments, leader, replica_id, &config) {
            Some((next, positions)) => {
                sent = positions;
                tx.send(next).await.map_err(|e| e.to_string())?;
            }
            None => return Ok(()),
        }
    }
}

/// What each partition's fetch was based on: the partition and the leader epoch.
type Sent = HashMap<(String, i32), (Arc<Partition>, i32)>;

fn build_request(
    replicas: &ReplicaManager,
    assignments: &Assignments,
    leader: i32,
    replica_id: i32,
    config: &crate::config::ClusterConfig,
) -> Option<(ReplicaFetchRequest, Sent)> {
    let keys = assignments.read().get(&leader)?.clone();
    let partitions = keys.iter().filter_map(|(t, i)| replicas.partition(t, *i));
    let mut sent = HashMap::new();
    let fetches = partitions
        .into_iter()
        .filter_map(|p| {
            let (l, fetch_offset, last_fetched_epoch, leader_epoch) = p.follower_position()?;
            if l != leader {
                return None;
            }
            let fetch = PartitionFetch {
                topic: p.topic.clone(),
                partition: p.index,
                fetch_offset,
                last_fetched_epoch,
                current_leader_epoch: leader_epoch,
            };
            sent.insert((p.topic.clone(), p.index), (p, leader_epoch));
            Some(fetch)
        })
        .collect::<Vec<_>>();
    if fetches.is_empty() {
        return None;
    }
    Some((
        ReplicaFetchRequest {
            replica_id,
            broker_epoch: replicas.cluster().broker_epoch(),
            max_wait_ms: config.replica_fetch_wait_max_ms,
            max_bytes: config.replica_fetch_max_bytes,
            partitions: fetches,
        },
        sent,
    ))
}

/// Applies one partition's answer: append, truncate on divergence, or start over
/// at the leader's log start.
fn apply(sent: &Sent, data: PartitionData) {
    let Some((partition, epoch)) = sent.get(&(data.topic.clone(), data.partition)) else {
        return;
    };
    let now = now_ms();
    let result = if data.diverging {
        partition
            .truncate_diverging(*epoch, data.diverging_epoch, data.diverging_end_offset, now)
            .map(|_| ())
    } else if data.error_code == i32::from(kafka_protocol::ResponseError::OffsetOutOfRange.code()) {
        partition.reset_to(*epoch, data.log_start_offset)
    } else if data.error_code != 0 {
        // Not the leader (yet or any more), or epochs differ: the metadata will catch up.
        Ok(())
    } else {
        partition.append_as_follower(
            &data.records,
            data.high_watermark,
            data.log_start_offset,
            *epoch,
            now,
        )
    };
    if let Err(e) = result {
        tracing::warn!(topic = %data.topic, partition = data.partition, error = %e, "applying replica fetch failed");
    }
}

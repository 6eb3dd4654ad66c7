//! The metadata quorum: a Raft group (openraft) of the controller voters that commits
//! metadata [`Command`]s and applies them, in log order, to a shared [`MetadataImage`].
//!
//! - [`Quorum::start`] opens the durable log and snapshot in [`QuorumConfig::dir`], checks
//!   that the stored voter set is the configured one, and forms the quorum on first start.
//! - The node's internal tonic server must carry [`Quorum::raft_service`] and
//!   [`Quorum::controller_service`].
//! - [`Quorum::propose`] commits a command from any node: the leader commits it, any
//!   other node forwards it to the leader over `Controller.Propose`.
//!
//! A node whose id is not among the voters (a broker-only node) starts without forming
//! the quorum; the active controller adds it as a learner once it registers and removes
//! it when it is unregistered ([`Quorum::add_learner`], [`Quorum::remove_learner`]).
//! The voter set cannot be changed.

mod files;
mod log_store;
mod network;
mod service;
mod state_machine;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Code;

pub use service::{ControllerRpc, HeartbeatHandler, NoControllerLogic, RaftRpc};

use self::files::blocking;
use self::log_store::LogStore;
use self::network::{Channels, NetworkFactory, MAX_MESSAGE};
use self::state_machine::StateMachine;
use self::types::NodeId;
use crate::cluster::{Command, CommandResult, MetadataImage};
use crate::rpc::proto::controller_client::ControllerClient;
use crate::rpc::proto::controller_server::ControllerServer;
use crate::rpc::proto::raft_server::RaftServer;
use crate::rpc::proto::Proposal;

// openraft also uses the heartbeat interval as each AppendEntries RPC's timeout: at
// 150 ms a busy 2-core host timed replication out under produce load.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 300;
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 1000;
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 2000;
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1000;

/// How long [`Quorum::propose`] keeps trying (leader elections included) before giving up.
pub const PROPOSE_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(500);
/// Entries kept in the log behind a snapshot, so a follower lagging a little catches up
/// from the log instead of receiving the whole snapshot.
const LOG_KEPT_AFTER_SNAPSHOT: u64 = 50;
/// Snapshot bytes per InstallSnapshot RPC (JSON makes them about 4x bigger on the wire).
const SNAPSHOT_CHUNK: u64 = 1 << 20;
/// Time for a follower to take one snapshot chunk; generous because installing the last
/// chunk writes and fsyncs the snapshot file on a possibly busy disk.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 5000;

#[derive(Clone, Debug)]
pub struct QuorumConfig {
    pub node_id: i32,
    /// Every voter's id and the `host:port` of its internal (tonic) listener.
    pub voters: BTreeMap<i32, String>,
    /// Where the Raft log, vote and snapshot live; one directory per node.
    pub dir: PathBuf,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many applied entries.
    pub snapshot_every: u64,
    /// The IP outgoing connections bind to (this node's CONTROLLER listener IP).
    pub local_ip: Option<std::net::IpAddr>,
}

impl QuorumConfig {
    /// A config with the default timings, suited to a loopback cluster on a busy machine.
    pub fn new(node_id: i32, voters: BTreeMap<i32, String>, dir: PathBuf) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            dir,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            election_timeout_min_ms: DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_TIMEOUT_MAX_MS,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            local_ip: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid metadata quorum config: {0}")]
    Config(String),
    #[error("metadata quorum storage in {}: {source}", dir.display())]
    Storage {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the metadata quorum stored in {} has voters {stored:?} but this node is configured \
         with voters {configured:?}; refusing to start (a voter set is fixed once the quorum \
         has formed)",
        dir.display()
    )]
    VoterSetMismatch {
        dir: PathBuf,
        stored: BTreeSet<u64>,
        configured: BTreeSet<u64>,
    },
    #[error("metadata quorum: {0}")]
    Raft(String),
    #[error("no metadata quorum leader reachable within {0:?}")]
    NoLeader(Duration),
    #[error("metadata command not committed within {0:?} (it may still commit)")]
    Timeout(Duration),
    #[error("the active controller (node {leader}) failed the proposal: {message}")]
    Remote { leader: NodeId, message: String },
    #[error("metadata command does not encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the metadata quorum is shut down")]
    Stopped,
}

/// A committed command: what applying it returned and the log index it committed at
/// (brokers wait to have applied that index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposed {
    pub result: CommandResult,
    pub index: u64,
}

/// Outcome of proposing on this node only.
pub(crate) enum LocalProposeError {
    /// Not the leader; the leader this node knows of, if any.
    NotLeader(Option<NodeId>),
    Timeout,
    Failed(String),
}

enum ForwardError {
    NotLeader(Option<NodeId>),
    Unreachable(String),
    Timeout,
    Failed(String),
}

/// A running quorum member; cheap to clone.
#[derive(Clone)]
pub struct Quorum {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    raft: types::Raft,
    addresses: Arc<BTreeMap<NodeId, String>>,
    channels: Channels,
    applied: watch::Receiver<u64>,
    leader_log: Mutex<Option<JoinHandle<()>>>,
}

fn node_id(id: i32) -> Result<NodeId, QuorumError> {
    NodeId::try_from(id).map_err(|_| QuorumError::Config(format!("node id {id} is negative")))
}

fn raft_config(config: &QuorumConfig) -> Result<openraft::Config, QuorumError> {
    if config.snapshot_every == 0 {
        return Err(QuorumError::Config(
            "snapshot_every must be at least 1".into(),
        ));
    }
    openraft::Config {
        cluster_name: "rill-metadata".to_string(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: LOG_KEPT_AFTER_SNAPSHOT.min(config.snapshot_every),
        snapshot_max_chunk_size: SNAPSHOT_CHUNK,
        ..openraft::Config::default()
    }
    .validate()
    .map_err(|e| QuorumError::Config(e.to_string()))
}

impl Quorum {
    /// Starts this node's quorum member. `image` is replaced by the stored snapshot's image
    /// (or an empty one) and then kept up to date as entries are applied; readers share it.
    ///
    /// Fails when the config is invalid, storage cannot be read, or the stored voter set
    /// differs from `config.voters`.
    pub async fn start(
        config: QuorumConfig,
        image: Arc<RwLock<MetadataImage>>,
    ) -> Result<Quorum, QuorumError> {
        let self_id = node_id(config.node_id)?;
        if config.voters.is_empty() {
            return Err(QuorumError::Config("no voters".into()));
        }
        let mut voters = BTreeMap::new();
        for (&id, addr) in &config.voters {
            // Caught here rather than as a peer that is unreachable forever.
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| QuorumError::Config(format!("voter {id} address {addr:?}: {e}")))?;
            voters.insert(node_id(id)?, BasicNode::new(addr));
        }
        let raft_config = Arc::new(raft_config(&config)?);
        let dir = config.dir.clone();
        let storage_err = |source| QuorumError::Storage {
            dir: dir.clone(),
            source,
        };

        let (applied_tx, applied) = watch::channel(0);
        let (log_store, state_machine) = blocking(|| {
            let log_store = LogStore::open(&dir)?;
            let state_machine = StateMachine::open(&dir, image, applied_tx)?;
            Ok::<_, std::io::Error>((log_store, state_machine))
        })
        .map_err(storage_err)?;

        // A node restarted with another voter set would otherwise campaign in, or vote for,
        // a quorum its peers do not share.
        let stored = log_store
            .last_membership()
            .unwrap_or_else(|| state_machine.membership().clone());
        let stored: BTreeSet<NodeId> = stored.voter_ids().collect();
        let configured: BTreeSet<NodeId> = voters.keys().copied().collect();
        if !stored.is_empty() && stored != configured {
            return Err(QuorumError::VoterSetMismatch {
                dir,
                stored,
                configured,
            });
        }

        let addresses: Arc<BTreeMap<NodeId, String>> = Arc::new(
            voters
                .iter()
                .map(|(&id, node)| (id, node.addr.clone()))
                .collect(),
        );
        let channels = Channels::new(config.local_ip);
        let network = NetworkFactory {
            self_id,
            addresses: addresses.clone(),
            channels: channels.clone(),
        };
        let raft = types::Raft::new(self_id, raft_config, network, log_store, state_machine)
            .await
            .map_err(|e| QuorumError::Raft(format!("start: {e}")))?;

        if configured.contains(&self_id) {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| QuorumError::Raft(e.to_string()))?;
            if !initialized {
                // Every voter forms the quorum with the same membership; a peer that got
                // there first makes this a no-op.
                match raft.initialize(voters).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(e) => {
                        let _ = raft.shutdown().await;
                        return Err(QuorumError::Raft(format!("initialize: {e}")));
                    }
                }
            }
        }

        let leader_log = tokio::spawn(log_leader_changes(self_id, raft.metrics()));
        Ok(Quorum {
            inner: Arc::new(Inner {
                node_id: self_id,
                raft,
                addresses,
                channels,
                applied,
                leader_log: Mutex::new(Some(leader_log)),
            }),
        })
    }

    /// The `Raft` service for this node's internal tonic server.
    pub fn raft_service(&self) -> RaftServer<RaftRpc> {
        RaftServer::new(RaftRpc {
            raft: self.inner.raft.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The `Controller` service for this node's internal tonic server; heartbeats go to
    /// `handler`.
    pub fn controller_service(
        &self,
        handler: Arc<dyn HeartbeatHandler>,
    ) -> ControllerServer<ControllerRpc> {
        ControllerServer::new(ControllerRpc {
            quorum: self.clone(),
            handler,
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }

    pub fn node_id(&self) -> i32 {
        // Checked non-negative i32 at start.
        self.inner.node_id as i32
    }

    /// The leader this node knows of.
    pub fn leader_id(&self) -> Option<i32> {
        let leader = self.inner.raft.metrics().borrow().current_leader;
        leader.and_then(|id| i32::try_from(id).ok())
    }

    /// Adds a node (a broker-only node) as a learner: it receives the metadata log
    /// and follows the image without voting. Only the leader can; elsewhere an error.
    pub async fn add_learner(&self, id: i32, addr: String) -> Result<(), QuorumError> {
        let id = node_id(id)?;
        self.inner
            .raft
            .add_learner(id, BasicNode::new(addr), false)
            .await
            .map_err(|e| QuorumError::Raft(format!("add learner {id}: {e}")))?;
        self.wait_for_membership(move |nodes| nodes.contains(&id), "learner added")
            .await
            .map_err(|e| QuorumError::Raft(format!("add learner {id}: {e}")))
    }

    /// Waits (5 s at most) until the metrics that `members` and `learners` read show a
    /// membership change: the change's answer can come before them, and callers act on
    /// those next.
    async fn wait_for_membership(
        &self,
        done: impl Fn(&BTreeSet<u64>) -> bool + Send + 'static,
        what: &str,
    ) -> Result<(), String> {
        self.inner
            .raft
            .wait(Some(std::time::Duration::from_secs(5)))
            .metrics(
                move |m| {
                    done(
                        &m.membership_config
                            .membership()
                            .nodes()
                            .map(|(n, _)| *n)
                            .collect(),
                    )
                },
                what,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Removes a learner (an unregistered broker-only node): the leader stops sending
    /// it the metadata log. Voters cannot be removed. Only the leader can.
    pub async fn remove_learner(&self, id: i32) -> Result<(), QuorumError> {
        let id = node_id(id)?;
        let remove = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
        self.inner
            .raft
            .change_membership(remove, false)
            .await
            .map_err(|e| QuorumError::Raft(format!("remove learner {id}: {e}")))?;
        self.wait_for_membership(move |nodes| !nodes.contains(&id), "learner removed")
            .await
            .map_err(|e| QuorumError::Raft(format!("remove learner {id}: {e}")))
    }

    /// The learners (broker-only nodes) and the log index of the membership that lists
    /// them: an image that has applied that index knows every learner's registration.
    pub fn learners(&self) -> (BTreeSet<i32>, u64) {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = &metrics.membership_config;
        let learners = membership
            .membership()
            .learner_ids()
            .filter_map(|id| i32::try_from(id).ok())
            .collect();
        let index = membership
            .log_id()
            .as_ref()
            .map_or(0, |log_id| log_id.index);
        (learners, index)
    }

    /// The ids of every member, voters and learners.
    pub fn members(&self) -> BTreeSet<i32> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter_map(|(id, _)| i32::try_from(*id).ok())
            .collect()
    }

    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.inner.node_id)
    }

    /// The index of the last log entry applied to the image; every entry counts (blank and
    /// membership entries included), as does an installed snapshot.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.inner.applied.clone()
    }

    /// Waits until the image has applied `index`; false on timeout or shutdown.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut applied = self.applied();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|&a| a >= index))
            .await
            .is_ok_and(|waited| waited.is_ok());
        reached
    }

    /// Commits `command` through the quorum and returns what applying it produced. On the
    /// leader it commits directly; elsewhere it is forwarded to the leader. Retries while
    /// there is no leader, the contacted node is not the leader, or the leader is
    /// unreachable, for up to [`PROPOSE_DEADLINE`].
    ///
    /// A retry after a connection broke mid-request can commit the command twice; commands
    /// carry epochs (or are idempotent) for that reason.
    pub async fn propose(&self, command: Command) -> Result<Proposed, QuorumError> {
        let deadline = Instant::now() + PROPOSE_DEADLINE;
        let mut backoff = RETRY_MIN;
        let mut hint: Option<NodeId> = None;
        let mut saw_leader = false;
        // A learner knows no leader until the leader adds it, which it asks for with
        // the very proposal it makes (its registration): it asks the voters in turn.
        let voters: Vec<NodeId> = self.inner.addresses.keys().copied().collect();
        let learner = !voters.contains(&self.inner.node_id);
        let mut next_voter = 0usize;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(if saw_leader {
                    QuorumError::Timeout(PROPOSE_DEADLINE)
                } else {
                    QuorumError::NoLeader(PROPOSE_DEADLINE)
                });
            }
            let target = match hint.take().filter(|&id| id != self.inner.node_id) {
                Some(id) => Some(id),
                None => match self.propose_local(command.clone(), remaining).await {
                    Ok(proposed) => return Ok(proposed),
                    Err(LocalProposeError::NotLeader(leader)) => {
                        leader.filter(|&id| id != self.inner.node_id).or_else(|| {
                            learner.then(|| {
                                next_voter += 1;
                                voters[next_voter % voters.len()]
                            })
                        })
                    }
                    Err(LocalProposeError::Timeout) => {
                        return Err(QuorumError::Timeout(PROPOSE_DEADLINE))
                    }
                    Err(LocalProposeError::Failed(message)) => {
                        return Err(
                            if self.inner.raft.metrics().borrow().running_state.is_err() {
                                QuorumError::Stopped
                            } else {
                                QuorumError::Raft(message)
                            },
                        )
                    }
                },
            };
            if let Some(leader) = target {
                saw_leader = true;
                match self.forward(leader, &command, remaining).await {
                    Ok(proposed) => return Ok(proposed),
                    Err(ForwardError::NotLeader(next)) => hint = next,
                    Err(ForwardError::Unreachable(why)) => {
                        tracing::debug!(leader, error = %why, "metadata quorum leader unreachable; retrying");
                    }
                    Err(ForwardError::Timeout) => {
                        return Err(QuorumError::Timeout(PROPOSE_DEADLINE))
                    }
                    Err(ForwardError::Failed(message)) => {
                        return Err(QuorumError::Remote { leader, message })
                    }
                }
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    /// Commits `command` if this node is the leader, waiting at most `timeout`.
    pub(crate) async fn propose_local(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<Proposed, LocalProposeError> {
        match tokio::time::timeout(timeout, self.inner.raft.client_write(command)).await {
            Err(_) => Err(LocalProposeError::Timeout),
            Ok(Ok(response)) => Ok(Proposed {
                result: response.data,
                index: response.log_id.index,
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(LocalProposeError::NotLeader(forward.leader_id))
            }
            Ok(Err(e)) => Err(LocalProposeError::Failed(e.to_string())),
        }
    }

    fn peer_addr(&self, id: NodeId) -> Option<String> {
        if let Some(addr) = self.inner.addresses.get(&id) {
            return Some(addr.clone());
        }
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone())
    }

    async fn forward(
        &self,
        leader: NodeId,
        command: &Command,
        timeout: Duration,
    ) -> Result<Proposed, ForwardError> {
        let addr = self
            .peer_addr(leader)
            .ok_or_else(|| ForwardError::Unreachable(format!("no address for node {leader}")))?;
        let channel = self
            .inner
            .channels
            .get(&addr)
            .map_err(|e| ForwardError::Unreachable(format!("{addr}: {e}")))?;
        let mut client = ControllerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let command_json =
            serde_json::to_vec(command).map_err(|e| ForwardError::Failed(e.to_string()))?;
        let mut request = tonic::Request::new(Proposal { command_json });
        request.set_timeout(timeout);
        let reply = match tokio::time::timeout(timeout, client.propose(request)).await {
            Err(_) => return Err(ForwardError::Timeout),
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    Code::Unavailable => ForwardError::Unreachable(status.to_string()),
                    Code::DeadlineExceeded => ForwardError::Timeout,
                    _ => ForwardError::Failed(status.to_string()),
                })
            }
        };
        if reply.error.is_empty() {
            let result = serde_json::from_slice(&reply.result_json)
                .map_err(|e| ForwardError::Failed(format!("undecodable result: {e}")))?;
            return Ok(Proposed {
                result,
                index: reply.log_index,
            });
        }
        if reply.error == service::NOT_LEADER {
            // 0 is "none known" in the proto (a leader with id 0 is then found through this
            // node's own view on the next try).
            let hint = NodeId::try_from(reply.leader_hint)
                .ok()
                .filter(|&id| id != 0);
            return Err(ForwardError::NotLeader(hint));
        }
        if reply.error.starts_with(service::COMMIT_TIMEOUT) {
            return Err(ForwardError::Timeout);
        }
        Err(ForwardError::Failed(reply.error))
    }

    /// Stops this node's Raft member. The tonic services then answer `Unavailable`.
    pub async fn shutdown(&self) {
        if let Some(task) = self.inner.leader_log.lock().take() {
            task.abort();
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum did not shut down cleanly");
        }
    }
}

/// Leaves a log line whenever the leader this node knows of changes.
async fn log_leader_changes(
    self_id: NodeId,
    mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
) {
    let mut last: Option<Option<NodeId>> = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if last != Some(leader) {
            match leader {
                Some(leader) => tracing::info!(
                    node_id = self_id,
                    leader,
                    term,
                    is_self = leader == self_id,
                    "metadata quorum leader changed"
                ),
                None => tracing::info!(node_id = self_id, term, "metadata quorum has no leader"),
            }
            last = Some(leader);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

//! openraft's outgoing RPCs over tonic: each request and response is openraft's own type
//! as JSON inside `RaftMessage.json`; the reply carries openraft's `Result` so a remote
//! Raft error comes back as a `RemoteError`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::RPCTypes;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::types::{Node, NodeId, TypeConfig};
use crate::rpc::proto::raft_client::RaftClient;
use crate::rpc::proto::RaftMessage;

/// Limit on one encoded RPC in either direction: an AppendEntries batch of large commands
/// or a snapshot chunk (bytes travel as a JSON array, about 4 characters a byte) must fit.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// HTTP/2 pings notice a peer that vanished without closing the connection, so the channel
/// reconnects instead of timing out every RPC on a dead connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before replicating again to a node that was unreachable: short, so a restarted
/// voter catches up quickly, while a dead one costs one failed connect per pause.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error("invalid address {addr:?} of node {node}: {reason}")]
struct BadAddress {
    node: NodeId,
    addr: String,
    reason: String,
}

/// One lazily connected channel per peer address, shared by Raft replication and
/// controller forwarding: a single HTTP/2 connection carries both.
#[derive(Clone, Default)]
pub(crate) struct Channels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
    /// Outgoing connections bind to this node's IP, so peers (and a fault-injecting
    /// proxy) can tell nodes on one loopback host apart.
    local_ip: Option<std::net::IpAddr>,
}

impl Channels {
    pub(crate) fn new(local_ip: Option<std::net::IpAddr>) -> Self {
        Channels {
            by_addr: Arc::default(),
            local_ip,
        }
    }

    /// Must run inside a tokio runtime (the channel spawns its worker there).
    pub(crate) fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        if let Some(channel) = self.by_addr.lock().get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .local_address(self.local_ip)
            .connect_lazy();
        Ok(self
            .by_addr
            .lock()
            .entry(addr.to_string())
            .or_insert(channel)
            .clone())
    }
}

pub struct NetworkFactory {
    pub(crate) self_id: NodeId,
    /// Addresses from this node's configuration; they win over the ones recorded in the
    /// membership, so a voter that moved is reached once its peers' configs say so.
    pub(crate) addresses: Arc<BTreeMap<NodeId, String>>,
    pub(crate) channels: Channels,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        let addr = self
            .addresses
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        let client = self
            .channels
            .get(&addr)
            .map(|channel| {
                RaftClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            })
            .map_err(|e| BadAddress {
                node: target,
                addr,
                reason: e.to_string(),
            });
        PeerClient {
            self_id: self.self_id,
            target,
            client,
        }
    }
}

pub struct PeerClient {
    self_id: NodeId,
    target: NodeId,
    client: Result<RaftClient<Channel>, BadAddress>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<T, E>(
        &mut self,
        kind: RPCTypes,
        body: &impl Serialize,
        option: &RPCOption,
    ) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let (self_id, target) = (self.self_id, self.target);
        let client = match &mut self.client {
            Ok(client) => client,
            Err(bad) => return Err(RPCError::Unreachable(Unreachable::new(bad))),
        };
        let json =
            serde_json::to_vec(body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(RaftMessage { json });
        // The peer stops working on it too once openraft has given up.
        request.set_timeout(ttl);
        let call = async {
            match kind {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let timeout = || {
            RPCError::Timeout(Timeout {
                action: kind,
                id: self_id,
                target,
                timeout: ttl,
            })
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_) => return Err(timeout()),
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    // Connection refused or dropped, or the peer's Raft is not running:
                    // openraft backs off before trying this node again.
                    Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
                    Code::DeadlineExceeded => timeout(),
                    _ => RPCError::Network(NetworkError::new(&status)),
                });
            }
        };
        let result: Result<T, RaftError<NodeId, E>> = serde_json::from_slice(&reply.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}

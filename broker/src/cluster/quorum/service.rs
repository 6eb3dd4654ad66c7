//! The quorum's incoming tonic services: `Raft` hands peers' requests to the local
//! openraft node; `Controller` takes proposals (committing them when this node leads) and
//! passes broker heartbeats to the controller logic.

use std::sync::Arc;

use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::types::{NodeId, Raft, TypeConfig};
use super::{LocalProposeError, Quorum, PROPOSE_DEADLINE};
use crate::cluster::Command;
use crate::rpc::proto::controller_server::Controller;
use crate::rpc::proto::raft_server::Raft as RaftService;
use crate::rpc::proto::{BrokerHeartbeat, HeartbeatReply, Proposal, ProposalReply, RaftMessage};

/// `ProposalReply.error` of a node that is not the leader; `leader_hint` says who is.
pub(crate) const NOT_LEADER: &str = "not the active controller";
/// `ProposalReply.error` prefix when the leader could not commit in time: the command may
/// still commit, so the proposer must not blindly retry it.
pub(crate) const COMMIT_TIMEOUT: &str = "timed out waiting for commit";

/// Controller decisions on broker heartbeats; implemented by the controller logic.
pub trait HeartbeatHandler: Send + Sync + 'static {
    fn heartbeat(&self, request: BrokerHeartbeat) -> HeartbeatReply;
}

/// Answers every heartbeat with an error: for nodes (and tests) without controller logic.
pub struct NoControllerLogic;

impl HeartbeatHandler for NoControllerLogic {
    fn heartbeat(&self, _request: BrokerHeartbeat) -> HeartbeatReply {
        HeartbeatReply {
            error: "no controller logic".to_string(),
            ..HeartbeatReply::default()
        }
    }
}

/// The `Raft` tonic service of one node.
pub struct RaftRpc {
    pub(crate) raft: Raft,
}

fn decode<T: DeserializeOwned>(json: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(json)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn reply<T, E>(result: Result<T, RaftError<NodeId, E>>) -> Result<Response<RaftMessage>, Status>
where
    T: Serialize,
    E: Serialize + std::error::Error,
{
    // A stopped node answers like an absent one, so the sender backs off instead of
    // treating it as a live peer refusing.
    if let Err(RaftError::Fatal(fatal)) = &result {
        return Err(Status::unavailable(format!(
            "metadata quorum not running: {fatal}"
        )));
    }
    let json = serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { json }))
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request.get_ref().json)?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(&request.get_ref().json)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&request.get_ref().json)?;
        reply(self.raft.install_snapshot(rpc).await)
    }
}

/// The `Controller` tonic service of one node.
pub struct ControllerRpc {
    pub(crate) quorum: Quorum,
    pub(crate) handler: Arc<dyn HeartbeatHandler>,
}

#[tonic::async_trait]
impl Controller for ControllerRpc {
    async fn propose(&self, request: Request<Proposal>) -> Result<Response<ProposalReply>, Status> {
        let command: Command = serde_json::from_slice(&request.get_ref().command_json)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        // Bounded: a leader cut off from its followers must not hold the caller forever.
        let reply = match self.quorum.propose_local(command, PROPOSE_DEADLINE).await {
            Ok(proposed) => ProposalReply {
                result_json: serde_json::to_vec(&proposed.result)
                    .map_err(|e| Status::internal(e.to_string()))?,
                log_index: proposed.index,
                ..ProposalReply::default()
            },
            Err(LocalProposeError::NotLeader(leader)) => ProposalReply {
                leader_hint: leader.and_then(|id| i32::try_from(id).ok()).unwrap_or(0),
                error: NOT_LEADER.to_string(),
                ..ProposalReply::default()
            },
            Err(LocalProposeError::Timeout) => ProposalReply {
                error: format!("{COMMIT_TIMEOUT} after {PROPOSE_DEADLINE:?}"),
                ..ProposalReply::default()
            },
            Err(LocalProposeError::Failed(message)) => ProposalReply {
                error: message,
                ..ProposalReply::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn heartbeat(
        &self,
        request: Request<BrokerHeartbeat>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Ok(Response::new(self.handler.heartbeat(request.into_inner())))
    }
}

//! Producer-id blocks from the quorum (Kafka's AllocateProducerIds): the image hands out
//! disjoint blocks, so ids stay unique across brokers and restarts.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::node::ClusterNode;
use super::{Command, CommandResult};
use crate::producer_state::{ProducerIdBlock, ProducerIdBlockSource, ProducerIdError};

pub struct QuorumBlockSource {
    node: Arc<ClusterNode>,
}

impl QuorumBlockSource {
    pub fn new(node: Arc<ClusterNode>) -> Self {
        QuorumBlockSource { node }
    }
}

impl ProducerIdBlockSource for QuorumBlockSource {
    /// Awaits the quorum (Kafka's AllocateProducerIds); InitProducerId waits with it.
    fn next_block(&self) -> BoxFuture<'_, Result<ProducerIdBlock, ProducerIdError>> {
        let command = Command::AllocateProducerIds {
            broker_id: self.node.node_id,
            broker_epoch: self.node.broker_epoch(),
        };
        Box::pin(async move {
            let (result, _) = self
                .node
                .propose_committed(command)
                .await
                .map_err(|e| ProducerIdError::Unavailable(e.to_string()))?;
            match result {
                CommandResult::ProducerIds { first, count } => Ok(ProducerIdBlock {
                    first,
                    size: count as i64,
                }),
                other => Err(ProducerIdError::Unavailable(format!(
                    "unexpected answer {other:?}"
                ))),
            }
        })
    }
}

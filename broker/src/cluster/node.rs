//! This node's handle on the cluster: the metadata image, proposals to the quorum, and
//! its own registration (broker epoch). Brokers-side code goes through it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{RwLock, RwLockReadGuard};
use tokio::sync::watch;
use uuid::Uuid;

use super::quorum::{Quorum, QuorumError};
use super::{Command, CommandResult, MetadataImage};

/// How long a committed change may take to reach this node's partitions.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// The controller refused the change; `code` is the Kafka error code for clients.
    #[error("{message}")]
    Refused { code: i16, message: String },
    #[error("the metadata change committed but this node has not applied it within {0:?}")]
    NotApplied(Duration),
}

impl ClusterError {
    /// The Kafka error code a client should see for this failure.
    pub fn code(&self) -> i16 {
        match self {
            ClusterError::Refused { code, .. } => *code,
            // REQUEST_TIMED_OUT: the change may still happen; clients retry.
            ClusterError::NotApplied(_) | ClusterError::Quorum(QuorumError::Timeout(_)) => 7,
            // NOT_CONTROLLER: retriable, the client looks for the controller again.
            ClusterError::Quorum(_) => 41,
        }
    }
}

pub struct ClusterNode {
    pub node_id: i32,
    /// Identifies this process: a restart registers as a new incarnation.
    pub incarnation_id: Uuid,
    quorum: Quorum,
    image: Arc<RwLock<MetadataImage>>,
    broker_epoch: AtomicI64,
    /// Metadata log index of this process's current registration.
    registered_index: AtomicU64,
    /// The metadata index this node's partitions reflect (the publisher sets it).
    published: watch::Sender<u64>,
}

impl ClusterNode {
    pub fn new(node_id: i32, quorum: Quorum, image: Arc<RwLock<MetadataImage>>) -> Self {
        ClusterNode {
            node_id,
            incarnation_id: Uuid::new_v4(),
            quorum,
            image,
            broker_epoch: AtomicI64::new(-1),
            registered_index: AtomicU64::new(0),
            published: watch::channel(0).0,
        }
    }

    pub fn image(&self) -> RwLockReadGuard<'_, MetadataImage> {
        self.image.read()
    }

    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// -1 until registered.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// The metadata log index this process registered at (0 until registered).
    pub fn registered_index(&self) -> u64 {
        self.registered_index.load(Ordering::Acquire)
    }

    /// Records a registration: its broker epoch and the log index it committed at.
    pub fn set_registration(&self, epoch: i64, index: u64) {
        self.registered_index.store(index, Ordering::Release);
        self.broker_epoch.store(epoch, Ordering::Release);
    }

    pub fn set_published(&self, index: u64) {
        self.published.send_if_modified(|p| {
            let moved = index > *p;
            if moved {
                *p = index;
            }
            moved
        });
    }

    /// Waits until this node's partitions reflect metadata index `index`.
    pub async fn wait_published(&self, index: u64, timeout: Duration) -> bool {
        let mut published = self.published.subscribe();
        let reached = tokio::time::timeout(timeout, published.wait_for(|p| *p >= index)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Commits a metadata change and returns once this node's partitions reflect it,
    /// so a topic created here can be produced to here at once.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ClusterError> {
        let proposed = self.quorum.propose(command).await?;
        if !self.wait_published(proposed.index, PUBLISH_TIMEOUT).await {
            return Err(ClusterError::NotApplied(PUBLISH_TIMEOUT));
        }
        into_result(proposed.result)
    }

    /// Commits a change without waiting for this node's partitions (registration,
    /// controller decisions): returns the result and the log index.
    pub async fn propose_committed(
        &self,
        command: Command,
    ) -> Result<(CommandResult, u64), ClusterError> {
        let proposed = self.quorum.propose(command).await?;
        Ok((into_result(proposed.result)?, proposed.index))
    }
}

fn into_result(result: CommandResult) -> Result<CommandResult, ClusterError> {
    match result {
        CommandResult::Error { code, message } => Err(ClusterError::Refused { code, message }),
        r => Ok(r),
    }
}

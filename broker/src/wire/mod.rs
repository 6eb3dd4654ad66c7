//! The Kafka protocol server. `server` accepts connections, `connection` knows framing
//! only, `dispatch` decodes a request and routes it to the handler module of its API
//! family; `response` encodes answers, splicing log files in for zero-copy fetches.

mod admin;
mod api_versions;
mod cluster;
mod configs;
mod connection;
mod dispatch;
mod error_codes;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod response;
pub mod server;

use std::sync::Arc;

use crate::group::GroupCoordinator;
use crate::metrics::Metrics;
use crate::producer_state::ProducerIdManager;
use crate::replica_manager::ReplicaManager;

/// What every handler may use. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub replicas: Arc<ReplicaManager>,
    pub metrics: Arc<Metrics>,
    pub groups: Arc<GroupCoordinator>,
    pub producer_ids: Arc<ProducerIdManager>,
}

pub use api_versions::supported_versions;

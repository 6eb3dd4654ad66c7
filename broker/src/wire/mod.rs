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
mod list_offsets;
mod metadata;
mod produce;
mod response;
pub mod server;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::replica_manager::ReplicaManager;

/// What every handler may use. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub replicas: Arc<ReplicaManager>,
    pub metrics: Arc<Metrics>,
}

pub use api_versions::supported_versions;

//! Rill operator: reconciles `Cluster` and `Topic` resources (group `rill.dev`).

pub mod cluster;
pub mod crd;
// pub mod kafka_admin; pub mod topic;

//! The `Cluster` reconciler, as a pipeline: validate (pure) -> build every desired object
//! (pure) -> apply in a fixed order -> roll outdated pods one at a time -> status.

pub mod apply;
pub mod build;
pub mod rebalance;
pub mod rolling;
pub mod scaling;
pub mod status;
pub mod validate;

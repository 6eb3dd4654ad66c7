//! The `Cluster` reconciler, as a pipeline: validate (pure) -> build every desired object
//! (pure) -> apply in a fixed order -> roll outdated pods one at a time -> status.
//! Scaling wraps apply: `rebalance.rs` decides the StatefulSet's replicas before it (a
//! scale-down waits for the drain) and moves partitions after it, by the pure plans of
//! `scaling.rs`.

pub mod apply;
pub mod build;
pub mod rebalance;
pub mod rolling;
pub mod scaling;
pub mod status;
pub mod validate;

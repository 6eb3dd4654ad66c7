//! The Topic reconciler over the Kafka admin protocol: `plan` decides (pure),
//! `reconcile` observes, applies and reports what the Topic's status should say,
//! `status` turns that into the Topic's status, `controller` wires it to Kubernetes.

pub mod controller;
pub mod plan;
pub mod reconcile;
pub mod status;

pub use plan::{plan, Action, ObservedTopic, Plan, Refusal, SpecStatus, TopicSpecView};
pub use reconcile::{
    apply_plan, delete, observe, reconcile, reconcile_with, TopicOutcome, TopicProblem,
};

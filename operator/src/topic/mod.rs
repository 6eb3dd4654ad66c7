//! The Topic reconciler over the Kafka admin protocol: `plan` decides (pure),
//! `reconcile` observes, applies and reports what the Topic's status should say.

pub mod plan;
pub mod reconcile;

pub use plan::{plan, Action, ObservedTopic, Plan, Refusal, SpecStatus, TopicSpecView};
pub use reconcile::{
    apply_plan, delete, observe, reconcile, reconcile_with, TopicOutcome, TopicProblem,
};

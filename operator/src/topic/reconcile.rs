//! The I/O half of the Topic reconciler: observe the topic, apply the plan, observe
//! again, and report an outcome that maps onto the Topic's status conditions.
//! Transport trouble and retriable broker errors come back as `Err` (requeue with
//! backoff); a spec the reconciler refuses, or the broker rejects, is a problem in the
//! outcome, as it will not go away until the spec changes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;

use super::plan::{plan, Action, ObservedTopic, Plan, Refusal, SpecStatus, TopicSpecView};
use crate::kafka_admin::{AdminClient, AdminConfig, AdminError, KafkaError, TopicId};

/// How long a reconcile waits for what it applied to show in the metadata of the
/// broker it reads from, and how often it looks.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Why a topic is not as its spec says, for a status condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicProblem {
    /// CamelCase: `PartitionDecreaseRefused`, `InvalidConfig`, ...
    pub reason: String,
    pub message: String,
}

impl From<&Refusal> for TopicProblem {
    fn from(r: &Refusal) -> Self {
        TopicProblem {
            reason: r.reason().to_string(),
            message: r.to_string(),
        }
    }
}

impl From<&KafkaError> for TopicProblem {
    fn from(e: &KafkaError) -> Self {
        let reason = match e.error {
            ResponseError::Unknown(_) => "KafkaError".to_string(),
            known => known.to_string(),
        };
        TopicProblem {
            reason,
            message: e.to_string(),
        }
    }
}

/// What one reconcile did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOutcome {
    /// As observed after applying; `None` when the topic does not exist.
    pub topic_id: Option<TopicId>,
    pub partitions: i32,
    pub replication_factor: i16,
    /// The actions that were applied, in order.
    pub applied: Vec<Action>,
    /// Configs that had been changed out of band and were put back to the spec.
    pub drift_corrected: BTreeSet<String>,
    /// Refused changes and broker rejections; empty when the topic matches its spec.
    pub problems: Vec<TopicProblem>,
}

impl TopicOutcome {
    pub fn ready(&self) -> bool {
        self.problems.is_empty() && self.topic_id.is_some()
    }

    pub fn drift_was_corrected(&self) -> bool {
        !self.drift_corrected.is_empty()
    }

    /// The first problem's reason and every problem's message, joined, for a single
    /// `Ready=False` condition.
    pub fn error_reason(&self) -> Option<TopicProblem> {
        let first = self.problems.first()?;
        Some(TopicProblem {
            reason: first.reason.clone(),
            message: self
                .problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// The topic as the cluster has it; `None` when it does not exist.
pub async fn observe(
    admin: &mut AdminClient,
    topic: &str,
) -> Result<Option<ObservedTopic>, AdminError> {
    let Some(metadata) = admin.describe_topic(topic).await? else {
        return Ok(None);
    };
    let configs = match admin.describe_topic_configs(topic).await {
        Ok(c) => c,
        // Deleted between the two calls.
        Err(e) if e.is(ResponseError::UnknownTopicOrPartition) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(ObservedTopic {
        id: metadata.topic_id,
        partitions: metadata.partitions.len() as i32,
        replication_factor: metadata.replication_factor(),
        configs,
    }))
}

/// Applies the plan's actions in order, stopping at the first failure. Creating a
/// topic that already exists counts as done (a retried create, or a race); the next
/// reconcile sees what is there.
pub async fn apply_plan(admin: &mut AdminClient, plan: &Plan) -> Result<(), AdminError> {
    apply_actions(admin, plan).await.1
}

/// The actions applied before the first failure, and that failure.
async fn apply_actions(
    admin: &mut AdminClient,
    plan: &Plan,
) -> (Vec<Action>, Result<(), AdminError>) {
    let mut applied = Vec::new();
    for action in &plan.actions {
        if let Err(e) = apply(admin, &plan.topic, action).await {
            return (applied, Err(e));
        }
        applied.push(action.clone());
    }
    (applied, Ok(()))
}

async fn apply(admin: &mut AdminClient, topic: &str, action: &Action) -> Result<(), AdminError> {
    match action {
        Action::Create {
            partitions,
            replication_factor,
            configs,
        } => match admin
            .create_topic(topic, *partitions, *replication_factor, configs)
            .await
        {
            Ok(created) => {
                let id = created.topic_id.map(|i| i.to_string());
                tracing::info!(topic, ?id, partitions, "created topic");
                Ok(())
            }
            Err(e) if e.is(ResponseError::TopicAlreadyExists) => {
                tracing::info!(topic, "topic already exists");
                Ok(())
            }
            Err(e) => Err(e),
        },
        Action::CreatePartitions { total } => {
            admin.create_partitions(topic, *total).await?;
            tracing::info!(topic, total, "added partitions");
            Ok(())
        }
        Action::AlterConfigs { set, delete } => {
            admin
                .incremental_alter_topic_configs(topic, set, delete)
                .await?;
            let set: Vec<&String> = set.keys().collect();
            tracing::info!(topic, ?set, ?delete, "altered topic configs");
            Ok(())
        }
    }
}

/// Connects to `bootstrap` and reconciles one topic (see `reconcile_with`).
pub async fn reconcile(
    bootstrap: &[String],
    config: AdminConfig,
    spec: &TopicSpecView,
    status: SpecStatus,
) -> Result<TopicOutcome, AdminError> {
    let mut admin = AdminClient::connect(bootstrap, config).await?;
    reconcile_with(&mut admin, spec, status).await
}

/// Observe, plan, apply, observe again. `Err` is worth a retry later; problems that
/// need a spec change are in the outcome.
pub async fn reconcile_with(
    admin: &mut AdminClient,
    spec: &TopicSpecView,
    status: SpecStatus,
) -> Result<TopicOutcome, AdminError> {
    let before = observe(admin, &spec.name).await?;
    let plan = plan(spec, before.as_ref(), status);
    if !plan.drift.is_empty() {
        tracing::warn!(topic = %spec.name, configs = ?plan.drift, "configs changed out of band; restoring the spec");
    }
    let mut problems: Vec<TopicProblem> = plan.refused.iter().map(TopicProblem::from).collect();
    let (applied, result) = apply_actions(admin, &plan).await;
    match result {
        Ok(()) => {}
        // The broker rejected the spec (INVALID_CONFIG, INVALID_REPLICATION_FACTOR, ...).
        Err(AdminError::Kafka { error, .. }) if !error.is_retriable() => {
            problems.push(TopicProblem::from(&error));
        }
        Err(e) => return Err(e),
    }
    let after = if applied.is_empty() {
        before
    } else {
        let done = Plan {
            actions: applied.clone(),
            ..plan.clone()
        };
        settle(admin, &done).await?
    };
    let drift_corrected = if applied
        .iter()
        .any(|a| matches!(a, Action::AlterConfigs { .. }))
    {
        plan.drift.clone()
    } else {
        BTreeSet::new()
    };
    Ok(TopicOutcome {
        topic_id: after.as_ref().and_then(|t| t.id),
        partitions: after.as_ref().map_or(0, |t| t.partitions),
        replication_factor: after.as_ref().map_or(0, |t| t.replication_factor),
        applied,
        drift_corrected,
        problems,
    })
}

/// Observes until the applied plan shows (bounded by `SETTLE_TIMEOUT`), then reports
/// what is there.
async fn settle(admin: &mut AdminClient, plan: &Plan) -> Result<Option<ObservedTopic>, AdminError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let observed = observe(admin, &plan.topic).await?;
        if plan.is_visible_in(observed.as_ref()) || Instant::now() >= deadline {
            return Ok(observed);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Deletes the topic; one that does not exist counts as deleted.
pub async fn delete(admin: &mut AdminClient, topic: &str) -> Result<(), AdminError> {
    match admin.delete_topic(topic).await {
        Ok(()) => {
            tracing::info!(topic, "deleted topic");
            Ok(())
        }
        Err(e) if e.is(ResponseError::UnknownTopicOrPartition) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_one_condition_with_the_first_reason() {
        let outcome = TopicOutcome {
            topic_id: TopicId::from_bytes([1; 16]),
            partitions: 5,
            replication_factor: 1,
            applied: vec![],
            drift_corrected: BTreeSet::new(),
            problems: vec![
                TopicProblem::from(&Refusal::PartitionsDecrease { from: 5, to: 2 }),
                TopicProblem::from(&KafkaError::from_code(40, Some("bad value")).unwrap()),
            ],
        };
        assert!(!outcome.ready());
        assert_eq!(
            outcome.error_reason(),
            Some(TopicProblem {
                reason: "PartitionDecreaseRefused".into(),
                message: "partitions cannot be reduced from 5 to 2; INVALID_CONFIG (40): bad value"
                    .into(),
            })
        );
        assert_eq!(outcome.problems[1].reason, "InvalidConfig");
    }

    #[test]
    fn an_unknown_error_code_gets_a_generic_reason() {
        let p = TopicProblem::from(&KafkaError::from_code(999, None).unwrap());
        assert_eq!(p.reason, "KafkaError");
        assert_eq!(p.message, "UNKNOWN_ERROR_CODE_999 (999)");
    }
}

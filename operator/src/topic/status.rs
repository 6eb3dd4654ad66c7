//! A Topic's status from what one reconcile found (pure).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::reconcile::TopicOutcome;
use crate::cluster::status::condition;
use crate::crd::{Topic, TopicStatus};

/// Why a Topic could not be reconciled at all, before any Kafka call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The annotation `rill.dev/managed: "false"` is set: the operator leaves the topic alone.
    Unmanaged,
    /// `spec.clusterRef` names no Cluster in the Topic's namespace.
    ClusterNotFound(String),
    /// The Cluster's brokers did not answer (transport trouble, retried with backoff).
    ClusterUnreachable(String),
}

impl Blocked {
    fn reason(&self) -> &'static str {
        match self {
            Blocked::Unmanaged => "Unmanaged",
            Blocked::ClusterNotFound(_) => "ClusterNotFound",
            Blocked::ClusterUnreachable(_) => "ClusterUnreachable",
        }
    }

    fn message(&self) -> String {
        match self {
            Blocked::Unmanaged => {
                "rill.dev/managed is \"false\": the topic is not changed or deleted".into()
            }
            Blocked::ClusterNotFound(name) => format!("no Cluster {name} in this namespace"),
            Blocked::ClusterUnreachable(e) => format!("the Cluster's brokers did not answer: {e}"),
        }
    }
}

/// The status after a reconcile that reached the brokers.
pub fn from_outcome(topic: &Topic, outcome: &TopicOutcome, now: &Time) -> TopicStatus {
    let old = old_conditions(topic);
    let generation = topic.metadata.generation;
    let ready = match outcome.error_reason() {
        Some(problem) => condition(
            old,
            "Ready",
            false,
            &problem.reason,
            problem.message,
            generation,
            now,
        ),
        None if outcome.topic_id.is_none() => condition(
            old,
            "Ready",
            false,
            "NotCreated",
            "the topic does not exist yet".into(),
            generation,
            now,
        ),
        // The spec wins over changes made out of band; say which were put back.
        None if outcome.drift_was_corrected() => {
            let names: Vec<&str> = outcome.drift_corrected.iter().map(String::as_str).collect();
            condition(
                old,
                "Ready",
                true,
                "DriftCorrected",
                format!(
                    "changed outside the spec and put back: {}",
                    names.join(", ")
                ),
                generation,
                now,
            )
        }
        None => condition(
            old,
            "Ready",
            true,
            "Synced",
            "the topic matches its spec".into(),
            generation,
            now,
        ),
    };
    TopicStatus {
        // A refused spec is still this generation's answer; a transport error never gets here.
        observed_generation: generation,
        topic_id: outcome.topic_id.as_ref().map(|id| id.hyphenated()),
        partitions: outcome.topic_id.as_ref().map(|_| outcome.partitions),
        replication_factor: outcome
            .topic_id
            .as_ref()
            .map(|_| outcome.replication_factor),
        conditions: vec![ready],
    }
}

/// The status when the brokers could not be asked; what was last observed is kept.
pub fn blocked(topic: &Topic, why: &Blocked, now: &Time) -> TopicStatus {
    let previous = topic.status.clone().unwrap_or_default();
    let ready = condition(
        old_conditions(topic),
        "Ready",
        false,
        why.reason(),
        why.message(),
        topic.metadata.generation,
        now,
    );
    TopicStatus {
        observed_generation: match why {
            // Unmanaged and a missing Cluster are this generation's answer; an
            // unreachable cluster is not an answer at all.
            Blocked::ClusterUnreachable(_) => previous.observed_generation,
            _ => topic.metadata.generation,
        },
        conditions: vec![ready],
        ..previous
    }
}

fn old_conditions(topic: &Topic) -> &[Condition] {
    topic
        .status
        .as_ref()
        .map_or(&[], |s| s.conditions.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka_admin::TopicId;
    use crate::topic::reconcile::TopicProblem;
    use k8s_openapi::jiff::Timestamp;

    fn topic(status: Option<TopicStatus>) -> Topic {
        let mut t: Topic = serde_yaml::from_str(
            "apiVersion: rill.dev/v1alpha1\nkind: Topic\n\
             metadata: {name: orders, namespace: ns, generation: 4}\n\
             spec: {clusterRef: {name: demo}, partitions: 3, replicationFactor: 3}\n",
        )
        .unwrap();
        t.status = status;
        t
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn outcome() -> TopicOutcome {
        TopicOutcome {
            topic_id: Some(TopicId([7; 16])),
            partitions: 3,
            replication_factor: 3,
            applied: vec![],
            drift_corrected: Default::default(),
            problems: vec![],
        }
    }

    #[test]
    fn a_synced_topic_is_ready_with_its_id_and_shape() {
        let s = from_outcome(&topic(None), &outcome(), &at(10));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(
            s.topic_id.as_deref(),
            Some("07070707-0707-0707-0707-070707070707")
        );
        assert_eq!((s.partitions, s.replication_factor), (Some(3), Some(3)));
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Synced")
        );
        assert_eq!(ready.last_transition_time, at(10));
        // Unchanged on the next reconcile: the transition time stays.
        let again = from_outcome(&topic(Some(s.clone())), &outcome(), &at(99));
        assert_eq!(again.conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn corrected_drift_is_ready_and_names_the_configs() {
        let mut o = outcome();
        o.drift_corrected = ["retention.ms".to_string(), "cleanup.policy".to_string()].into();
        let s = from_outcome(&topic(None), &o, &at(1));
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].reason, "DriftCorrected");
        assert!(
            s.conditions[0]
                .message
                .ends_with("cleanup.policy, retention.ms"),
            "{}",
            s.conditions[0].message
        );
    }

    #[test]
    fn a_refused_change_is_not_ready_with_the_reason() {
        let mut o = outcome();
        o.problems = vec![TopicProblem {
            reason: "PartitionDecreaseRefused".into(),
            message: "partitions cannot be reduced from 5 to 2".into(),
        }];
        let s = from_outcome(&topic(None), &o, &at(1));
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "PartitionDecreaseRefused")
        );
        assert_eq!(ready.message, "partitions cannot be reduced from 5 to 2");
        assert_eq!(s.partitions, Some(3), "what Kafka has is still reported");
    }

    #[test]
    fn an_unreachable_cluster_keeps_what_was_observed_and_the_old_generation() {
        let mut before = from_outcome(&topic(None), &outcome(), &at(1));
        before.observed_generation = Some(3);
        let s = blocked(
            &topic(Some(before)),
            &Blocked::ClusterUnreachable("timeout".into()),
            &at(5),
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.partitions, Some(3));
        assert_eq!(s.conditions[0].reason, "ClusterUnreachable");
        assert_eq!(s.conditions[0].status, "False");
        let missing = blocked(
            &topic(None),
            &Blocked::ClusterNotFound("demo".into()),
            &at(5),
        );
        assert_eq!(missing.observed_generation, Some(4));
        assert_eq!(
            missing.conditions[0].message,
            "no Cluster demo in this namespace"
        );
    }
}

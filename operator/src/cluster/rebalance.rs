//! Scaling, the I/O side: runs the plans of `scaling.rs` against the brokers (Kafka admin
//! protocol) and the apiserver, one bounded step per reconcile, deciding from what it
//! observes each time (nothing is remembered but `status.rebalance`'s progress).
//!
//! Scale-down: refuse (`ScaleRefusal`) or drain the leaving brokers in batches while the
//! StatefulSet keeps them; shrink it only once Metadata shows they hold no replica and
//! lead nothing; once their pods are gone, unregister them and (if asked) delete their
//! volumes. Scale-up: once every broker is registered, move partitions onto the new ones
//! in batches until balanced, then elect the preferred leaders.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::Client;
use tracing::{info, warn};

use super::build::{selector_string, DATA_VOLUME};
use super::rolling::ordinal;
use super::scaling::{self, check_scale_down, held_by, plan_moves, Move, ScaleActivity};
use crate::crd::cluster::RebalanceStatus;
use crate::kafka_admin::{
    AdminClient, AdminConfig, AdminError, ClusterDescription, ClusterMetadata, ElectionResult,
    OngoingReassignment, ReassignmentTarget, Unregistered,
};
use crate::Error;

/// Partitions submitted per AlterPartitionReassignments batch.
pub const MAX_MOVES: usize = 10;
/// Requeue while partitions are moving.
pub const MOVING_REQUEUE: Duration = Duration::from_secs(3);

/// The brokers, as scaling talks to them. Tests script them.
pub(crate) enum Kafka {
    Admin {
        bootstrap: String,
        client: Option<Box<AdminClient>>,
    },
    #[cfg(test)]
    Fake(fake::FakeKafka),
}

impl Kafka {
    /// An admin client on `bootstrap`, connected on first use.
    pub(crate) fn admin(bootstrap: String) -> Self {
        Kafka::Admin {
            bootstrap,
            client: None,
        }
    }

    async fn client<'a>(
        bootstrap: &str,
        client: &'a mut Option<Box<AdminClient>>,
    ) -> Result<&'a mut AdminClient, AdminError> {
        if client.is_none() {
            let config = AdminConfig {
                request_timeout: Duration::from_secs(10),
                max_attempts: 2,
                ..AdminConfig::default()
            };
            *client = Some(Box::new(
                AdminClient::connect(&[bootstrap.to_string()], config).await?,
            ));
        }
        client.as_deref_mut().ok_or(AdminError::NoBrokerReachable {
            tried: vec![bootstrap.to_string()],
            last: "not connected".into(),
        })
    }

    async fn metadata(&mut self) -> Result<ClusterMetadata, AdminError> {
        match self {
            Kafka::Admin { bootstrap, client } => {
                Self::client(bootstrap, client).await?.all_metadata().await
            }
            #[cfg(test)]
            Kafka::Fake(f) => Ok(f.state().metadata.clone()),
        }
    }

    async fn reassignments(&mut self) -> Result<Vec<OngoingReassignment>, AdminError> {
        match self {
            Kafka::Admin { bootstrap, client } => {
                Self::client(bootstrap, client)
                    .await?
                    .list_partition_reassignments(None)
                    .await
            }
            #[cfg(test)]
            Kafka::Fake(f) => Ok(f.state().in_flight.clone()),
        }
    }

    async fn reassign(&mut self, moves: &[Move]) -> Result<(), AdminError> {
        match self {
            Kafka::Admin { bootstrap, client } => {
                let targets: Vec<ReassignmentTarget> = moves
                    .iter()
                    .map(|m| ReassignmentTarget {
                        topic: m.topic.clone(),
                        partition: m.partition,
                        replicas: Some(m.replicas.clone()),
                    })
                    .collect();
                Self::client(bootstrap, client)
                    .await?
                    .alter_partition_reassignments(&targets)
                    .await
            }
            #[cfg(test)]
            Kafka::Fake(f) => {
                f.state().reassigned.extend(moves.iter().cloned());
                Ok(())
            }
        }
    }

    async fn elect_preferred(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<ElectionResult>, AdminError> {
        match self {
            Kafka::Admin { bootstrap, client } => {
                Self::client(bootstrap, client)
                    .await?
                    .elect_leaders(partitions)
                    .await
            }
            #[cfg(test)]
            Kafka::Fake(f) => {
                f.state().elected.extend(partitions.iter().cloned());
                Ok(Vec::new())
            }
        }
    }

    async fn unregister(&mut self, id: i32) -> Result<Unregistered, AdminError> {
        match self {
            Kafka::Admin { bootstrap, client } => {
                Self::client(bootstrap, client)
                    .await?
                    .unregister_broker(id)
                    .await
            }
            #[cfg(test)]
            Kafka::Fake(f) => {
                let mut s = f.state();
                s.unregistered.push(id);
                Ok(s.unregister_answer)
            }
        }
    }
}

/// What scaling needs to know of the Cluster.
pub(crate) struct Scale<'a> {
    /// The Cluster's (and StatefulSet's) name.
    pub name: &'a str,
    pub namespace: &'a str,
    /// `spec.replicas`.
    pub desired: i32,
    pub controllers: i32,
    pub delete_claims: bool,
    /// The progress last written to `status.rebalance`.
    pub previous: Option<&'a RebalanceStatus>,
}

impl Scale<'_> {
    fn targets(&self) -> BTreeSet<i32> {
        (0..self.desired).collect()
    }
}

/// Before the StatefulSet is applied: how many brokers it keeps. `running` is its
/// current `spec.replicas` (`None` before it exists). A scale-down is refused, or holds
/// at `running` while the leaving brokers drain, and goes through only once they are empty.
pub(crate) async fn replicas_to_apply(
    kafka: &mut Kafka,
    scale: &Scale<'_>,
    running: Option<i32>,
) -> (i32, Option<ScaleActivity>) {
    let desired = scale.desired;
    let Some(running) = running.filter(|r| *r > desired) else {
        return (desired, None);
    };
    let leaving: BTreeSet<i32> = (desired..running).collect();
    let names = broker_list(&leaving);
    let hold = |message: String, progress: Option<RebalanceStatus>| {
        (running, Some(ScaleActivity::Draining { message, progress }))
    };
    let metadata = match kafka.metadata().await {
        Ok(m) => m,
        Err(e) => {
            return hold(
                format!("draining brokers {names}: waiting for the brokers to answer: {e}"),
                scale.previous.cloned(),
            )
        }
    };
    let ongoing = match kafka.reassignments().await {
        Ok(o) => o,
        Err(e) => {
            return hold(
                format!("draining brokers {names}: ListPartitionReassignments failed: {e}"),
                scale.previous.cloned(),
            )
        }
    };
    let assignments = metadata.assignments();
    // Judge replication factors as they will be, not as they look mid-move.
    let settled = scaling::after_reassignments(&assignments, &leaving_replicas(&ongoing));
    if let Err(refusal) = check_scale_down(&settled, running, desired, scale.controllers) {
        warn!(cluster = scale.name, %refusal, "scale-down refused");
        let progress = scale.previous.cloned();
        return (running, Some(ScaleActivity::Refused(refusal, progress)));
    }
    let (replicas, led) = held_by(&assignments, &metadata.leaders(), &leaving);
    if replicas == 0 && led == 0 {
        info!(cluster = scale.name, brokers = %names, "drained; shrinking the StatefulSet");
        return (
            desired,
            Some(ScaleActivity::Draining {
                message: format!("brokers {names} drained; removing their pods"),
                progress: scale.previous.cloned(),
            }),
        );
    }
    match step(kafka, scale, &metadata, &ongoing).await {
        Step::Moving { progress, detail } => hold(
            format!("draining brokers {names} ({replicas} replicas, {led} leaders left): {detail}"),
            Some(progress),
        ),
        Step::Done => hold(
            format!("draining brokers {names}: {replicas} replicas, {led} leaders left"),
            scale.previous.cloned(),
        ),
        Step::Failed(detail) => hold(
            format!("draining brokers {names}: {detail}"),
            scale.previous.cloned(),
        ),
    }
}

/// After the StatefulSet is applied (only when it was not held): removed brokers are
/// unregistered and their volumes deleted once their pods are gone, and partitions are
/// rebalanced onto brokers that joined. `grew`: this reconcile raised the replicas.
pub(crate) async fn after_apply(
    kafka: &mut Kafka,
    client: &Client,
    scale: &Scale<'_>,
    pods: &[Pod],
    described: Option<&ClusterDescription>,
    grew: bool,
) -> Result<Option<ScaleActivity>, Error> {
    let desired = scale.desired;
    let carry = |message: String| {
        scale.previous.map(|p| ScaleActivity::Rebalancing {
            message,
            progress: Some(p.clone()),
        })
    };
    let leaving: Vec<String> = pods
        .iter()
        .filter(|p| ordinal(scale.name, p).is_some_and(|o| o >= desired))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    if !leaving.is_empty() {
        return Ok(Some(ScaleActivity::Draining {
            message: format!("waiting for pods {} to go", leaving.join(", ")),
            progress: scale.previous.cloned(),
        }));
    }
    let Some(described) = described else {
        return Ok(carry("waiting for the brokers to answer".into()));
    };

    // Brokers removed by a scale-down: the quorum forgets them, then their volumes go.
    let mut gone: BTreeSet<i32> = BTreeSet::new();
    let listed: BTreeSet<i32> = described.brokers.iter().map(|b| b.node_id).collect();
    for id in listed.iter().copied().filter(|id| *id >= desired) {
        match kafka.unregister(id).await {
            Ok(Unregistered::Done) => {
                info!(cluster = scale.name, broker = id, "unregistered");
                gone.insert(id);
            }
            Ok(Unregistered::NotRegistered) => {
                gone.insert(id);
            }
            Ok(Unregistered::Unsupported) => warn!(
                cluster = scale.name,
                broker = id,
                "the brokers do not serve UnregisterBroker yet; the removed broker stays registered (fenced)"
            ),
            Err(e) => warn!(cluster = scale.name, broker = id, error = %e, "UnregisterBroker failed"),
        }
    }
    if scale.delete_claims {
        delete_claims(client, scale, pods, |ordinal| {
            !listed.contains(&ordinal) || gone.contains(&ordinal)
        })
        .await?;
    }

    // Rebalance once every broker of 0..desired is registered and unfenced.
    let registered: BTreeSet<i32> = described
        .brokers
        .iter()
        .filter(|b| !b.is_fenced)
        .map(|b| b.node_id)
        .collect();
    let missing: BTreeSet<i32> = scale.targets().difference(&registered).copied().collect();
    if !missing.is_empty() {
        return Ok(carry(format!(
            "waiting for brokers {} to register",
            broker_list(&missing)
        )));
    }
    let metadata = match kafka.metadata().await {
        Ok(m) => m,
        Err(e) => return Ok(carry(format!("waiting for the brokers to answer: {e}"))),
    };
    let assignments = metadata.assignments();
    let under_used = under_used(&assignments, &scale.targets());
    if scale.previous.is_none() && !grew && !under_used {
        return Ok(None);
    }
    let ongoing = match kafka.reassignments().await {
        Ok(o) => o,
        Err(e) => return Ok(carry(format!("ListPartitionReassignments failed: {e}"))),
    };
    Ok(match step(kafka, scale, &metadata, &ongoing).await {
        Step::Moving { progress, detail } => Some(ScaleActivity::Rebalancing {
            message: detail,
            progress: Some(progress),
        }),
        Step::Failed(detail) => carry(detail),
        Step::Done => match elect_preferred(kafka, scale, &metadata).await {
            // Preferred replicas not in sync yet: try again shortly.
            Some(pending) if scale.previous.is_some() => carry(format!(
                "electing preferred leaders: {pending} partitions not ready"
            )),
            _ => {
                if scale.previous.is_some() {
                    info!(cluster = scale.name, "rebalanced");
                }
                None
            }
        },
    })
}

/// One step of moving partitions towards `plan_moves`' result over `0..desired`.
enum Step {
    /// Partitions are moving (a batch was submitted now or earlier).
    Moving {
        progress: RebalanceStatus,
        detail: String,
    },
    /// Nothing left to move or reorder.
    Done,
    /// The brokers did not answer or refused; retried next time.
    Failed(String),
}

async fn step(
    kafka: &mut Kafka,
    scale: &Scale<'_>,
    metadata: &ClusterMetadata,
    ongoing: &[OngoingReassignment],
) -> Step {
    let in_flight = ongoing.len();
    if in_flight > 0 {
        // Mid-move, Metadata lists old and new replicas together: no plan from that.
        let progress = scale
            .previous
            .cloned()
            .unwrap_or_else(|| scaling::progress(None, in_flight));
        let detail = format!(
            "{}; {in_flight} reassignments in flight",
            moved_message(&progress)
        );
        return Step::Moving { progress, detail };
    }
    let plan = plan_moves(&metadata.assignments(), &scale.targets(), MAX_MOVES);
    if plan.is_done() {
        return Step::Done;
    }
    if !plan.stuck.is_empty() {
        warn!(cluster = scale.name, stuck = ?plan.stuck, "replicas with no broker to go to");
    }
    let progress = scaling::progress(scale.previous, plan.total_to_move);
    if let Err(e) = kafka.reassign(&plan.batch).await {
        return Step::Failed(format!("AlterPartitionReassignments failed: {e}"));
    }
    info!(
        cluster = scale.name,
        batch = plan.batch.len(),
        to_move = plan.total_to_move,
        to_reorder = plan.total_to_reorder,
        "reassigning partitions"
    );
    let mut detail = moved_message(&progress);
    if plan.total_to_move == 0 {
        detail.push_str(&format!(
            "; reordering {} for preferred leaders",
            plan.total_to_reorder
        ));
    }
    Step::Moving { progress, detail }
}

/// `moved 3 of 12 partitions`: the Progressing message while partitions move.
pub fn moved_message(p: &RebalanceStatus) -> String {
    format!(
        "moved {} of {} partitions",
        p.partitions_moved, p.partitions_to_move
    )
}

/// (topic, partition) -> replicas leaving, of the reassignments in flight.
fn leaving_replicas(ongoing: &[OngoingReassignment]) -> BTreeMap<(String, i32), Vec<i32>> {
    ongoing
        .iter()
        .map(|o| ((o.topic.clone(), o.partition), o.removing_replicas.clone()))
        .collect()
}

/// Preferred leader election for the partitions led by another replica than the first.
/// `Some(n)`: n partitions could not be elected now (the preferred replica not in sync).
async fn elect_preferred(
    kafka: &mut Kafka,
    scale: &Scale<'_>,
    metadata: &ClusterMetadata,
) -> Option<usize> {
    let assignments = metadata.assignments();
    let partitions: Vec<(String, i32)> = metadata
        .leaders()
        .into_iter()
        .filter(|(key, leader)| {
            *leader >= 0 && assignments.get(key).and_then(|r| r.first()) != Some(leader)
        })
        .map(|(key, _)| key)
        .collect();
    if partitions.is_empty() {
        return None;
    }
    match kafka.elect_preferred(&partitions).await {
        Ok(results) => {
            let failed: Vec<String> = results
                .iter()
                .filter_map(|r| {
                    r.error
                        .as_ref()
                        .map(|e| format!("{}-{}: {e}", r.topic, r.partition))
                })
                .collect();
            info!(cluster = scale.name, partitions = partitions.len(), failed = ?failed, "elected preferred leaders");
            (!failed.is_empty()).then_some(failed.len())
        }
        Err(e) => {
            warn!(cluster = scale.name, error = %e, "ElectLeaders failed");
            Some(partitions.len())
        }
    }
}

/// A broker holding less than half the average: it joined and got nothing yet.
fn under_used(assignments: &scaling::Assignments, targets: &BTreeSet<i32>) -> bool {
    let mut counts: BTreeMap<i32, usize> = targets.iter().map(|b| (*b, 0)).collect();
    let mut total = 0;
    for r in assignments.values().flatten() {
        total += 1;
        if let Some(n) = counts.get_mut(r) {
            *n += 1;
        }
    }
    counts.values().any(|n| n * 2 * targets.len() < total)
}

/// Deletes the claims `data-<name>-<N>` for N >= desired whose pod is gone and whose
/// broker `forgotten(N)` says the quorum no longer knows.
async fn delete_claims(
    client: &Client,
    scale: &Scale<'_>,
    pods: &[Pod],
    forgotten: impl Fn(i32) -> bool,
) -> Result<(), Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), scale.namespace);
    let claims = api
        .list(&ListParams::default().labels(&selector_string(scale.name)))
        .await?;
    let prefix = format!("{DATA_VOLUME}-{}-", scale.name);
    let with_pod: BTreeSet<i32> = pods.iter().filter_map(|p| ordinal(scale.name, p)).collect();
    for claim in claims.items {
        let Some(name) = claim.metadata.name.as_deref() else {
            continue;
        };
        let Some(n) = name
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if n < scale.desired || with_pod.contains(&n) || !forgotten(n) {
            continue;
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => info!(
                cluster = scale.name,
                pvc = name,
                "deleted the volume of a removed broker"
            ),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `3, 4`
fn broker_list(ids: &BTreeSet<i32>) -> String {
    ids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod fake {
    //! Scripted brokers for reconcile tests.

    use std::sync::{Arc, Mutex, MutexGuard};

    use super::*;
    use crate::kafka_admin::{BrokerInfo, PartitionMetadata, TopicMetadata};

    #[derive(Debug)]
    pub(crate) struct FakeState {
        pub metadata: ClusterMetadata,
        pub in_flight: Vec<OngoingReassignment>,
        pub reassigned: Vec<Move>,
        pub elected: Vec<(String, i32)>,
        pub unregistered: Vec<i32>,
        pub unregister_answer: Unregistered,
    }

    #[derive(Clone, Debug)]
    pub(crate) struct FakeKafka(Arc<Mutex<FakeState>>);

    impl FakeKafka {
        /// Brokers `brokers` holding `assignments`, each led by its first replica.
        pub(crate) fn new(brokers: i32, assignments: &scaling::Assignments) -> Self {
            let mut topics: BTreeMap<&str, Vec<PartitionMetadata>> = BTreeMap::new();
            for ((topic, partition), replicas) in assignments {
                topics.entry(topic).or_default().push(PartitionMetadata {
                    partition: *partition,
                    leader: replicas[0],
                    leader_epoch: 0,
                    replicas: replicas.clone(),
                    isr: replicas.clone(),
                    offline_replicas: Vec::new(),
                    error: None,
                });
            }
            let metadata = ClusterMetadata {
                cluster_id: Some("c1".into()),
                controller_id: 0,
                brokers: (0..brokers)
                    .map(|node_id| BrokerInfo {
                        node_id,
                        host: format!("x-{node_id}"),
                        port: 9092,
                        rack: None,
                        is_fenced: false,
                    })
                    .collect(),
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| TopicMetadata {
                        name: name.to_string(),
                        topic_id: None,
                        is_internal: name.starts_with("__"),
                        partitions,
                        error: None,
                    })
                    .collect(),
            };
            FakeKafka(Arc::new(Mutex::new(FakeState {
                metadata,
                in_flight: Vec::new(),
                reassigned: Vec::new(),
                elected: Vec::new(),
                unregistered: Vec::new(),
                unregister_answer: Unregistered::Done,
            })))
        }

        pub(crate) fn state(&self) -> MutexGuard<'_, FakeState> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeKafka;
    use super::*;

    fn assignments(list: &[(&str, i32, &[i32])]) -> scaling::Assignments {
        list.iter()
            .map(|(t, p, r)| ((t.to_string(), *p), r.to_vec()))
            .collect()
    }

    fn scale(desired: i32, previous: Option<&RebalanceStatus>) -> Scale<'_> {
        Scale {
            name: "x",
            namespace: "ns",
            desired,
            controllers: 3,
            delete_claims: false,
            previous,
        }
    }

    #[tokio::test]
    async fn a_scale_down_holds_while_draining_and_submits_one_bounded_batch() {
        let mut a = scaling::Assignments::new();
        for p in 0..30 {
            a.insert(("t".into(), p), vec![p % 5, (p + 1) % 5]);
        }
        let fake = FakeKafka::new(5, &a);
        let mut kafka = Kafka::Fake(fake.clone());
        let (replicas, activity) = replicas_to_apply(&mut kafka, &scale(3, None), Some(5)).await;
        assert_eq!(replicas, 5, "the StatefulSet keeps the leaving brokers");
        let Some(ScaleActivity::Draining { message, progress }) = activity else {
            panic!("{activity:?}")
        };
        assert!(message.starts_with("draining brokers 3, 4"), "{message}");
        let progress = progress.unwrap();
        assert_eq!(progress.partitions_moved, 0);
        // Partitions p with p % 5 in {2, 3, 4} have a replica on broker 3 or 4.
        assert_eq!(progress.partitions_to_move, 18, "{progress:?}");
        let s = fake.state();
        assert_eq!(s.reassigned.len(), MAX_MOVES);
        // Drains first: every move of the first batch takes a replica off 3 or 4.
        for m in &s.reassigned {
            let old = &a[&(m.topic.clone(), m.partition)];
            assert!(old.iter().any(|r| *r >= 3), "{m:?}");
            assert!(m.replicas.iter().all(|r| *r < 3), "{m:?}");
        }
    }

    #[tokio::test]
    async fn a_scale_down_waits_for_reassignments_in_flight() {
        // t-0 moves from [3, 0, 2] to [1, 0, 2]: Metadata lists [1, 0, 2, 3] meanwhile,
        // which must not read as replication factor 4 (a refusal on 3 brokers).
        let a = assignments(&[("t", 0, &[1, 0, 2, 3])]);
        let fake = FakeKafka::new(4, &a);
        fake.state().in_flight = vec![OngoingReassignment {
            topic: "t".into(),
            partition: 0,
            replicas: vec![1, 0, 2, 3],
            adding_replicas: vec![1],
            removing_replicas: vec![3],
        }];
        let mut kafka = Kafka::Fake(fake.clone());
        let previous = RebalanceStatus {
            partitions_moved: 2,
            partitions_to_move: 3,
        };
        let (replicas, activity) =
            replicas_to_apply(&mut kafka, &scale(3, Some(&previous)), Some(4)).await;
        assert_eq!(replicas, 4);
        assert!(fake.state().reassigned.is_empty());
        let Some(ScaleActivity::Draining { message, progress }) = activity else {
            panic!("{activity:?}")
        };
        assert_eq!(progress, Some(previous));
        assert!(
            message.ends_with("moved 2 of 3 partitions; 1 reassignments in flight"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn drained_brokers_let_the_stateful_set_shrink() {
        let a = assignments(&[("t", 0, &[0, 1]), ("t", 1, &[1, 2]), ("t", 2, &[2, 0])]);
        let fake = FakeKafka::new(5, &a);
        let mut kafka = Kafka::Fake(fake.clone());
        let (replicas, activity) = replicas_to_apply(&mut kafka, &scale(3, None), Some(5)).await;
        assert_eq!(replicas, 3);
        assert!(matches!(activity, Some(ScaleActivity::Draining { .. })));
        assert!(fake.state().reassigned.is_empty());
    }

    #[tokio::test]
    async fn a_leader_on_a_leaving_broker_keeps_it_until_it_moves() {
        let a = assignments(&[("t", 0, &[0, 1])]);
        let fake = FakeKafka::new(4, &a);
        // Metadata lags: broker 3 still leads although no longer a replica.
        fake.state().metadata.topics[0].partitions[0].leader = 3;
        let mut kafka = Kafka::Fake(fake.clone());
        let (replicas, _) = replicas_to_apply(&mut kafka, &scale(3, None), Some(4)).await;
        assert_eq!(replicas, 4);
    }

    #[tokio::test]
    async fn an_impossible_scale_down_is_refused_and_moves_nothing() {
        let a = assignments(&[("t", 0, &[0, 1, 2, 3])]);
        let fake = FakeKafka::new(5, &a);
        let mut kafka = Kafka::Fake(fake.clone());
        let (replicas, activity) = replicas_to_apply(&mut kafka, &scale(3, None), Some(5)).await;
        assert_eq!(replicas, 5);
        assert_eq!(
            activity,
            Some(ScaleActivity::Refused(
                scaling::ScaleRefusal::ReplicationFactor {
                    topic: "t".into(),
                    replication_factor: 4,
                    desired: 3
                },
                None
            ))
        );
        assert!(fake.state().reassigned.is_empty());
    }

    #[tokio::test]
    async fn no_scale_down_applies_the_desired_replicas_without_asking_kafka() {
        let fake = FakeKafka::new(3, &scaling::Assignments::new());
        fake.state().metadata.topics.clear();
        let mut kafka = Kafka::Fake(fake.clone());
        assert_eq!(
            replicas_to_apply(&mut kafka, &scale(5, None), Some(3)).await,
            (5, None)
        );
        assert_eq!(
            replicas_to_apply(&mut kafka, &scale(3, None), None).await,
            (3, None)
        );
    }

    #[test]
    fn a_broker_with_nothing_is_under_used() {
        let a = assignments(&[("t", 0, &[0, 1]), ("t", 1, &[1, 2]), ("t", 2, &[2, 0])]);
        assert!(!under_used(&a, &(0..3).collect()));
        assert!(under_used(&a, &(0..4).collect()));
        assert!(!under_used(&scaling::Assignments::new(), &(0..4).collect()));
    }
}

//! Scaling plans, pure: which partitions move where when brokers come or go, and whether
//! a scale-down may happen at all. `rebalance.rs` runs these plans against the brokers.
//!
//! A plan moves as little data as it can: replicas on brokers that leave go to the
//! least-loaded broker that stays; then replica counts are evened out, one replica at a
//! time from the most- to the least-loaded broker, until they differ by at most one; then
//! preferred leaders (the first replica) are balanced by reordering replica lists, which
//! moves no data. Iteration is sorted, so the same input always gives the same plan.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::crd::cluster::RebalanceStatus;

/// (topic, partition) -> replicas, the first one the preferred leader.
pub type Assignments = BTreeMap<(String, i32), Vec<i32>>;

/// One partition's new replica list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The next reassignments to submit, at most `max_moves`: partitions leaving draining
    /// brokers first, then other data moves, then reorders.
    pub batch: Vec<Move>,
    /// Partitions whose replica set must change (data moves).
    pub total_to_move: usize,
    /// Partitions whose replica set stays but whose order changes (leader balance only).
    pub total_to_reorder: usize,
    /// Partitions with a replica on a draining broker that no remaining broker can take.
    pub stuck: Vec<(String, i32)>,
}

impl Plan {
    /// Nothing to move or reorder.
    pub fn is_done(&self) -> bool {
        self.total_to_move == 0 && self.total_to_reorder == 0
    }
}

/// Per-broker and per-(topic, broker) replica counts over the target brokers.
struct Load<'a> {
    brokers: BTreeMap<i32, usize>,
    by_topic: BTreeMap<(&'a str, i32), usize>,
}

impl<'a> Load<'a> {
    fn of(assignments: &'a Assignments, targets: &BTreeSet<i32>) -> Self {
        let mut load = Load {
            brokers: targets.iter().map(|b| (*b, 0)).collect(),
            by_topic: BTreeMap::new(),
        };
        for ((topic, _), replicas) in assignments {
            for r in replicas.iter().filter(|r| targets.contains(r)) {
                load.add(topic, *r);
            }
        }
        load
    }

    fn get(&self, broker: i32) -> usize {
        self.brokers.get(&broker).copied().unwrap_or(0)
    }

    fn topic(&self, topic: &str, broker: i32) -> usize {
        self.by_topic.get(&(topic, broker)).copied().unwrap_or(0)
    }

    fn add(&mut self, topic: &'a str, broker: i32) {
        *self.brokers.entry(broker).or_insert(0) += 1;
        *self.by_topic.entry((topic, broker)).or_insert(0) += 1;
    }

    fn remove(&mut self, topic: &'a str, broker: i32) {
        if let Some(n) = self.brokers.get_mut(&broker) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.by_topic.get_mut(&(topic, broker)) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Plans the reassignments that put every replica on `targets`, balanced, with balanced
/// preferred leaders. See the module comment for the rules.
pub fn plan_moves(assignments: &Assignments, targets: &BTreeSet<i32>, max_moves: usize) -> Plan {
    let mut next = assignments.clone();
    let mut load = Load::of(assignments, targets);
    let mut stuck = Vec::new();

    // 1. Drain: each replica on a broker outside `targets` goes to the least-loaded
    // eligible target (fewest replicas, then fewest of this topic, then lowest id).
    for key in assignments.keys() {
        let Some(replicas) = next.get_mut(key) else {
            continue;
        };
        let (topic, partition) = (key.0.as_str(), key.1);
        for i in 0..replicas.len() {
            if targets.contains(&replicas[i]) {
                continue;
            }
            let to = targets
                .iter()
                .copied()
                .filter(|b| !replicas.contains(b))
                .min_by_key(|b| (load.get(*b), load.topic(topic, *b), *b));
            match to {
                Some(b) => {
                    replicas[i] = b;
                    load.add(topic, b);
                }
                None => stuck.push((topic.to_string(), partition)),
            }
        }
    }
    stuck.dedup();

    // 2. Even out replica counts.
    while let Some((key, hi, lo)) = next_even_move(assignments, &next, &load, targets) {
        if let Some(slot) = next
            .get_mut(&key)
            .and_then(|replicas| replicas.iter_mut().find(|r| **r == hi))
        {
            *slot = lo;
        }
        // `load` borrows topic names from `assignments`, which has every key of `next`.
        if let Some(((topic, _), _)) = assignments.get_key_value(&key) {
            load.remove(topic, hi);
            load.add(topic, lo);
        }
    }

    // 3. Balance preferred leaders by reordering.
    balance_leaders(assignments, &mut next, targets);

    // The plan: the difference between the assignments and `next`.
    let mut drains = Vec::new();
    let mut moves = Vec::new();
    let mut reorders = Vec::new();
    for (key, replicas) in &next {
        let old = &assignments[key];
        if old == replicas {
            continue;
        }
        let m = Move {
            topic: key.0.clone(),
            partition: key.1,
            replicas: replicas.clone(),
        };
        let same_set = old.len() == replicas.len() && old.iter().all(|r| replicas.contains(r));
        if same_set {
            reorders.push(m);
        } else if old.iter().any(|r| !targets.contains(r)) {
            drains.push(m);
        } else {
            moves.push(m);
        }
    }
    let total_to_move = drains.len() + moves.len();
    let total_to_reorder = reorders.len();
    let batch = drains
        .into_iter()
        .chain(moves)
        .chain(reorders)
        .take(max_moves)
        .collect();
    Plan {
        batch,
        total_to_move,
        total_to_reorder,
        stuck,
    }
}

/// The next replica to move while two target brokers' counts differ by two or more: from
/// the most-loaded broker to the least-loaded one that can take it. Among candidate
/// partitions it prefers, in order: a replica this plan already added (re-targeting it
/// moves no extra data), a partition already changed (fewer reassignments), the topic
/// most over-represented on `hi` relative to `lo` (topics stay spread), the lowest key.
fn next_even_move(
    original: &Assignments,
    next: &Assignments,
    load: &Load<'_>,
    targets: &BTreeSet<i32>,
) -> Option<((String, i32), i32, i32)> {
    let mut by_load: Vec<i32> = targets.iter().copied().collect();
    by_load.sort_by_key(|b| (load.get(*b), *b));
    for &hi in by_load.iter().rev() {
        for &lo in &by_load {
            if load.get(hi) < load.get(lo) + 2 {
                break;
            }
            let best = next
                .iter()
                .filter(|(_, r)| r.contains(&hi) && !r.contains(&lo))
                .min_by_key(|(key, replicas)| {
                    let old = &original[*key];
                    let added = !old.contains(&hi);
                    let touched = old != *replicas;
                    let spread = load.topic(&key.0, hi) as i64 - load.topic(&key.0, lo) as i64;
                    (!added, !touched, -spread, (*key).clone())
                });
            if let Some((key, _)) = best {
                return Some((key.clone(), hi, lo));
            }
        }
    }
    None
}

/// Reorders replica lists so each target broker is the first replica of about as many
/// partitions as any other. Each step shifts one preferred leadership from a broker with
/// the most to one with at least two fewer, along the shortest chain of partitions
/// (x first, y a replica: x -> y), so only the partitions on that chain change order.
fn balance_leaders(original: &Assignments, next: &mut Assignments, targets: &BTreeSet<i32>) {
    let leaders = |next: &Assignments| {
        let mut n: BTreeMap<i32, usize> = targets.iter().map(|b| (*b, 0)).collect();
        for replicas in next.values() {
            if let Some(first) = replicas.first().filter(|f| targets.contains(f)) {
                *n.entry(*first).or_insert(0) += 1;
            }
        }
        n
    };
    // Each step lowers the sum of squared leader counts, so this ends; the bound is a
    // guard against a bug, not a limit the algorithm reaches.
    for _ in 0..=next.len() * 2 {
        let counts = leaders(next);
        let mut order: Vec<i32> = counts.keys().copied().collect();
        order.sort_by_key(|b| (std::cmp::Reverse(counts[b]), *b));
        let path = order
            .iter()
            .find_map(|&hi| leader_path(original, next, &counts, hi));
        let Some(path) = path else {
            return;
        };
        for (key, to) in path {
            if let Some(replicas) = next.get_mut(&key) {
                if let Some(pos) = replicas.iter().position(|r| *r == to) {
                    let b = replicas.remove(pos);
                    replicas.insert(0, b);
                }
            }
        }
    }
}

/// Breadth-first from `hi` over "x leads a partition that has y": the partitions to
/// reorder (and the replica to put first) to end at the nearest broker with at least two
/// preferred leaderships fewer than `hi`. Partitions this plan already changes are tried
/// first.
fn leader_path(
    original: &Assignments,
    next: &Assignments,
    counts: &BTreeMap<i32, usize>,
    hi: i32,
) -> Option<Vec<((String, i32), i32)>> {
    let goal = counts[&hi].checked_sub(2)?;
    // x -> [(not yet changed by the plan, partition, y)]: changed partitions sort first.
    type Edge<'k> = (bool, &'k (String, i32), i32);
    let mut edges: BTreeMap<i32, Vec<Edge<'_>>> = BTreeMap::new();
    for (key, replicas) in next.iter() {
        let Some(&first) = replicas.first() else {
            continue;
        };
        let touched = original.get(key) != Some(replicas);
        for &y in &replicas[1..] {
            if counts.contains_key(&y) {
                edges.entry(first).or_default().push((!touched, key, y));
            }
        }
    }
    for list in edges.values_mut() {
        list.sort();
    }
    let mut came_from: BTreeMap<i32, (i32, &(String, i32))> = BTreeMap::new();
    let mut queue = VecDeque::from([hi]);
    while let Some(x) = queue.pop_front() {
        for &(_, key, y) in edges.get(&x).map(Vec::as_slice).unwrap_or_default() {
            if y == hi || came_from.contains_key(&y) {
                continue;
            }
            came_from.insert(y, (x, key));
            if counts[&y] <= goal {
                let mut path = Vec::new();
                let mut at = y;
                while at != hi {
                    let (from, key) = came_from[&at];
                    path.push((key.clone(), at));
                    at = from;
                }
                path.reverse();
                return Some(path);
            }
            queue.push_back(y);
        }
    }
    None
}

/// What scaling is doing, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleActivity {
    /// Degraded `ScaleDownRefused`: the StatefulSet keeps its brokers. The progress of a
    /// drain or rebalance under way is kept (a refusal may come while one runs).
    Refused(ScaleRefusal, Option<RebalanceStatus>),
    /// Progressing `Draining`: brokers that leave are being emptied or removed.
    Draining {
        message: String,
        progress: Option<RebalanceStatus>,
    },
    /// Progressing `Rebalancing`: partitions move onto brokers that joined.
    Rebalancing {
        message: String,
        progress: Option<RebalanceStatus>,
    },
}

impl ScaleActivity {
    /// `status.rebalance`.
    pub fn progress(&self) -> Option<&RebalanceStatus> {
        match self {
            ScaleActivity::Refused(_, progress)
            | ScaleActivity::Draining { progress, .. }
            | ScaleActivity::Rebalancing { progress, .. } => progress.as_ref(),
        }
    }

    /// Partitions or pods are moving: worth a quick requeue.
    pub fn is_moving(&self) -> bool {
        !matches!(self, ScaleActivity::Refused(..))
    }
}

/// Why a scale-down is refused. Shown as the Degraded condition's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleRefusal {
    /// The brokers to remove include metadata-quorum voters.
    WouldRemoveVoter { desired: i32, controllers: i32 },
    /// A topic has more replicas than brokers would remain.
    ReplicationFactor {
        topic: String,
        replication_factor: usize,
        desired: i32,
    },
}

impl ScaleRefusal {
    /// The Degraded condition's reason.
    pub const REASON: &'static str = "ScaleDownRefused";
}

impl fmt::Display for ScaleRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleRefusal::WouldRemoveVoter {
                desired,
                controllers,
            } => write!(
                f,
                "scaling down to {desired} brokers would remove metadata-quorum voters \
                 (ordinals 0..{}) without a replacement; keep at least {controllers} brokers",
                controllers - 1
            ),
            ScaleRefusal::ReplicationFactor {
                topic,
                replication_factor,
                desired,
            } => write!(
                f,
                "topic {topic} has replication factor {replication_factor}, more than the \
                 {desired} brokers that would remain; keep at least {replication_factor} brokers"
            ),
        }
    }
}

/// Whether the cluster may go from `current` to `desired` brokers, and if so which
/// brokers leave: the ordinals `desired..current` (empty when not shrinking).
pub fn check_scale_down(
    assignments: &Assignments,
    current: i32,
    desired: i32,
    controllers: i32,
) -> Result<BTreeSet<i32>, ScaleRefusal> {
    if desired >= current {
        return Ok(BTreeSet::new());
    }
    if desired < controllers {
        return Err(ScaleRefusal::WouldRemoveVoter {
            desired,
            controllers,
        });
    }
    // A topic's replication factor: the fewest replicas of any of its partitions (a
    // partition mid-move lists its leaving replicas too). The widest topic is named,
    // the first by name among equals.
    let mut rf: BTreeMap<&str, usize> = BTreeMap::new();
    for ((topic, _), replicas) in assignments {
        let n = rf.entry(topic).or_insert(replicas.len());
        *n = (*n).min(replicas.len());
    }
    let widest = rf.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
    if let Some((topic, &rf)) = widest {
        if rf > desired.max(0) as usize {
            return Err(ScaleRefusal::ReplicationFactor {
                topic: topic.to_string(),
                replication_factor: rf,
                desired,
            });
        }
    }
    Ok((desired..current).collect())
}

/// The assignments as they will be once the reassignments in flight finish. Mid-move,
/// Metadata lists the target replicas and then those leaving (`leaving`, per partition,
/// from ListPartitionReassignments), so a partition looks wider than its replication factor.
pub fn after_reassignments(
    assignments: &Assignments,
    leaving: &BTreeMap<(String, i32), Vec<i32>>,
) -> Assignments {
    let mut settled = assignments.clone();
    for (key, removing) in leaving {
        if let Some(replicas) = settled.get_mut(key) {
            replicas.retain(|r| !removing.contains(r));
        }
    }
    settled
}

/// Replicas and leaderships the `brokers` still hold; (0, 0) means drained.
pub fn held_by(
    assignments: &Assignments,
    leaders: &BTreeMap<(String, i32), i32>,
    brokers: &BTreeSet<i32>,
) -> (usize, usize) {
    let replicas = assignments
        .values()
        .flatten()
        .filter(|r| brokers.contains(r))
        .count();
    let led = leaders.values().filter(|l| brokers.contains(l)).count();
    (replicas, led)
}

/// Progress of a rebalance or drain, from the last reported one and the partitions still
/// to move: the total only grows (new topics), `moved` counts the rest as done.
pub fn progress(previous: Option<&RebalanceStatus>, remaining: usize) -> RebalanceStatus {
    let remaining = i32::try_from(remaining).unwrap_or(i32::MAX);
    let total = match previous {
        Some(p) => p
            .partitions_to_move
            .max(p.partitions_moved.saturating_add(remaining))
            .max(remaining),
        None => remaining,
    };
    RebalanceStatus {
        partitions_moved: total - remaining,
        partitions_to_move: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignments(list: &[(&str, i32, &[i32])]) -> Assignments {
        list.iter()
            .map(|(t, p, r)| ((t.to_string(), *p), r.to_vec()))
            .collect()
    }

    fn brokers(ids: impl IntoIterator<Item = i32>) -> BTreeSet<i32> {
        ids.into_iter().collect()
    }

    /// Applies every move of repeated plans, as the reconcile does batch by batch.
    fn run_to_end(
        mut a: Assignments,
        targets: &BTreeSet<i32>,
        max_moves: usize,
    ) -> (Assignments, usize) {
        let mut rounds = 0;
        loop {
            let plan = plan_moves(&a, targets, max_moves);
            if plan.batch.is_empty() {
                return (a, rounds);
            }
            assert!(plan.batch.len() <= max_moves);
            for m in plan.batch {
                a.insert((m.topic, m.partition), m.replicas);
            }
            rounds += 1;
            assert!(rounds < 1000, "plans do not converge");
        }
    }

    fn replica_counts(a: &Assignments) -> BTreeMap<i32, usize> {
        let mut n = BTreeMap::new();
        for r in a.values().flatten() {
            *n.entry(*r).or_insert(0) += 1;
        }
        n
    }

    fn leader_counts(a: &Assignments) -> BTreeMap<i32, usize> {
        let mut n = BTreeMap::new();
        for r in a.values() {
            *n.entry(r[0]).or_insert(0) += 1;
        }
        n
    }

    fn spread(counts: &BTreeMap<i32, usize>, targets: &BTreeSet<i32>) -> usize {
        let v: Vec<usize> = targets
            .iter()
            .map(|b| counts.get(b).copied().unwrap_or(0))
            .collect();
        v.iter().max().unwrap() - v.iter().min().unwrap()
    }

    /// Replicas that changed broker, summed over partitions.
    fn replicas_moved(before: &Assignments, after: &Assignments) -> usize {
        before
            .iter()
            .map(|(k, old)| after[k].iter().filter(|r| !old.contains(r)).count())
            .sum()
    }

    /// A deterministic pseudo-random cluster: `topics` topics with 1..=12 partitions
    /// each, replicas spread by a xorshift generator over `on`.
    fn random_cluster(seed: u64, topics: usize, rf: usize, on: &[i32]) -> Assignments {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut a = Assignments::new();
        for t in 0..topics {
            let partitions = 1 + next() % 12;
            for p in 0..partitions {
                let mut replicas = Vec::new();
                while replicas.len() < rf {
                    let b = on[(next() % on.len() as u64) as usize];
                    if !replicas.contains(&b) {
                        replicas.push(b);
                    }
                }
                a.insert((format!("t{t:02}"), p as i32), replicas);
            }
        }
        a
    }

    #[test]
    fn a_balanced_cluster_has_nothing_to_do() {
        let a = assignments(&[
            ("t", 0, &[0, 1, 2]),
            ("t", 1, &[1, 2, 0]),
            ("t", 2, &[2, 0, 1]),
        ]);
        let plan = plan_moves(&a, &brokers(0..3), 10);
        assert_eq!(plan, Plan::default());
        assert!(plan.is_done());
    }

    #[test]
    fn draining_moves_each_replica_to_the_least_loaded_broker_and_leads_with_moves() {
        // Broker 2 leaves. Broker 0 holds 2 replicas, broker 1 holds 3.
        let a = assignments(&[
            ("t", 0, &[2, 0]),
            ("t", 1, &[1, 2]),
            ("t", 2, &[1, 0]),
            ("u", 0, &[1]),
        ]);
        let plan = plan_moves(&a, &brokers(0..2), 10);
        // t-0 cannot go to 0 (a replica already): it goes to 1, in 2's place; t-1 then
        // goes to 0, the least loaded. Broker 1 would then lead all four partitions; the
        // two that move anyway put broker 0 first, so no other partition is reordered.
        assert_eq!(
            plan.batch,
            vec![
                Move {
                    topic: "t".into(),
                    partition: 0,
                    replicas: vec![0, 1]
                },
                Move {
                    topic: "t".into(),
                    partition: 1,
                    replicas: vec![0, 1]
                },
            ]
        );
        assert_eq!((plan.total_to_move, plan.total_to_reorder), (2, 0));
        assert!(plan.stuck.is_empty());
    }

    #[test]
    fn scaling_up_three_to_four_moves_the_minimum_onto_the_new_broker() {
        // 4 partitions x RF 3 on brokers 0..3: 4 replicas each. With broker 3, 12 replicas
        // over 4 brokers is 3 each: exactly 3 replicas move, one from each old broker.
        let a = assignments(&[
            ("t", 0, &[0, 1, 2]),
            ("t", 1, &[1, 2, 0]),
            ("t", 2, &[2, 0, 1]),
            ("t", 3, &[0, 1, 2]),
        ]);
        let targets = brokers(0..4);
        let plan = plan_moves(&a, &targets, 10);
        assert_eq!(plan.total_to_move, 3);
        let (after, _) = run_to_end(a.clone(), &targets, 10);
        assert_eq!(replicas_moved(&a, &after), 3);
        assert_eq!(
            replica_counts(&after),
            BTreeMap::from([(0, 3), (1, 3), (2, 3), (3, 3)])
        );
        assert_eq!(
            leader_counts(&after),
            BTreeMap::from([(0, 1), (1, 1), (2, 1), (3, 1)])
        );
    }

    #[test]
    fn scaling_up_spreads_each_topic_rather_than_emptying_the_first() {
        // Two topics of 6 partitions x RF 1 on brokers 0 and 1; broker 2 joins and takes
        // 4 replicas: two of each topic, not four of topic "a".
        let mut list = Vec::new();
        for t in ["a", "b"] {
            for p in 0..6 {
                list.push((t, p, if p % 2 == 0 { &[0][..] } else { &[1][..] }));
            }
        }
        let a = assignments(&list);
        let (after, _) = run_to_end(a.clone(), &brokers(0..3), 100);
        let on_2: Vec<&str> = after
            .iter()
            .filter(|(_, r)| r[0] == 2)
            .map(|(k, _)| k.0.as_str())
            .collect();
        assert_eq!(on_2.len(), 4);
        assert_eq!(on_2.iter().filter(|t| **t == "a").count(), 2, "{on_2:?}");
        assert_eq!(replicas_moved(&a, &after), 4);
    }

    #[test]
    fn batches_are_bounded_and_report_the_total() {
        let on: Vec<i32> = (0..3).collect();
        let a = random_cluster(7, 10, 2, &on);
        let plan = plan_moves(&a, &brokers(0..5), 4);
        assert_eq!(plan.batch.len(), 4);
        assert!(plan.total_to_move > 4, "{}", plan.total_to_move);
        // Every partition of the batch is one whose replica set changes (data first).
        for m in &plan.batch {
            let old = &a[&(m.topic.clone(), m.partition)];
            assert!(m.replicas.iter().any(|r| !old.contains(r)));
        }
    }

    #[test]
    fn random_clusters_end_balanced_with_rf_kept_and_no_duplicates() {
        for (seed, rf, from, to) in [
            (1u64, 3, 3, 5),
            (2, 2, 3, 6),
            (3, 3, 5, 3),
            (4, 1, 4, 7),
            (5, 3, 6, 4),
            (6, 2, 4, 4),
        ] {
            let on: Vec<i32> = (0..from).collect();
            let a = random_cluster(seed, 15, rf, &on);
            let targets = brokers(0..to);
            let first = plan_moves(&a, &targets, usize::MAX);
            let (after, _) = run_to_end(a.clone(), &targets, 10);
            for (k, replicas) in &after {
                assert_eq!(replicas.len(), a[k].len(), "RF of {k:?} kept");
                let set: BTreeSet<_> = replicas.iter().collect();
                assert_eq!(set.len(), replicas.len(), "no duplicates in {k:?}");
                assert!(replicas.iter().all(|r| targets.contains(r)), "{k:?}");
            }
            let counts = replica_counts(&after);
            assert!(spread(&counts, &targets) <= 1, "seed {seed}: {counts:?}");
            let leaders = leader_counts(&after);
            assert!(
                spread(&leaders, &targets) <= 1,
                "seed {seed}: leaders {leaders:?}"
            );
            // Batch by batch moves no more data than the whole plan at once, and a
            // partition's replica set changes only if the first plan changed it.
            let once: Assignments = first
                .batch
                .iter()
                .map(|m| ((m.topic.clone(), m.partition), m.replicas.clone()))
                .collect();
            let mut whole = a.clone();
            whole.extend(once);
            assert_eq!(
                replicas_moved(&a, &after),
                replicas_moved(&a, &whole),
                "seed {seed}"
            );
            assert_eq!(first.total_to_move, {
                a.iter()
                    .filter(|(k, old)| {
                        let new: BTreeSet<_> = whole[*k].iter().collect();
                        new != old.iter().collect()
                    })
                    .count()
            });
            // The minimum: drained replicas plus what the rest must shed to be within one.
            let drained = a
                .values()
                .flatten()
                .filter(|r| !targets.contains(r))
                .count();
            let total: usize = a.values().map(Vec::len).sum();
            let ceil = total.div_ceil(targets.len());
            let before = replica_counts(&a);
            let excess: usize = targets
                .iter()
                .map(|b| before.get(b).copied().unwrap_or(0).saturating_sub(ceil))
                .sum();
            assert!(
                replicas_moved(&a, &after) <= drained + excess + targets.len(),
                "seed {seed}: moved {} drained {drained} excess {excess}",
                replicas_moved(&a, &after)
            );
        }
    }

    #[test]
    fn draining_leaves_nothing_on_the_drained_brokers() {
        let on: Vec<i32> = (0..5).collect();
        let a = random_cluster(11, 20, 3, &on);
        let targets = brokers(0..3);
        let (after, rounds) = run_to_end(a.clone(), &targets, 10);
        assert!(rounds > 1, "bounded batches take several rounds");
        let leaders = after.iter().map(|(k, r)| (k.clone(), r[0])).collect();
        assert_eq!(held_by(&after, &leaders, &brokers(3..5)), (0, 0));
        assert_ne!(
            held_by(&a, &BTreeMap::new(), &brokers(3..5)).0,
            0,
            "the fixture had replicas there"
        );
    }

    #[test]
    fn a_large_cluster_is_planned_and_balanced() {
        // 40 topics (about 260 partitions) x RF 3 from 6 to 9 brokers, 25 at a time.
        let on: Vec<i32> = (0..6).collect();
        let a = random_cluster(99, 40, 3, &on);
        let targets = brokers(0..9);
        let started = std::time::Instant::now();
        let (after, rounds) = run_to_end(a.clone(), &targets, 25);
        assert!(spread(&replica_counts(&after), &targets) <= 1);
        assert!(spread(&leader_counts(&after), &targets) <= 1);
        assert!(rounds >= 4, "{rounds}");
        eprintln!(
            "{} partitions, {rounds} rounds, {:?}",
            a.len(),
            started.elapsed()
        );
    }

    #[test]
    fn plans_are_deterministic() {
        let on: Vec<i32> = (0..3).collect();
        let a = random_cluster(42, 12, 2, &on);
        assert_eq!(
            plan_moves(&a, &brokers(0..5), 7),
            plan_moves(&a, &brokers(0..5), 7)
        );
    }

    #[test]
    fn internal_topics_are_drained_like_any_other() {
        let a = assignments(&[("__consumer_offsets", 0, &[3, 0, 1]), ("t", 0, &[0])]);
        let plan = plan_moves(&a, &brokers(0..3), 10);
        assert_eq!(plan.batch[0].topic, "__consumer_offsets");
        assert_eq!(plan.batch[0].replicas, vec![2, 0, 1]);
    }

    #[test]
    fn a_replica_with_nowhere_to_go_is_reported_stuck() {
        let a = assignments(&[("t", 0, &[0, 1, 2])]);
        let plan = plan_moves(&a, &brokers(0..2), 10);
        assert_eq!(plan.stuck, vec![("t".to_string(), 0)]);
        assert!(plan.batch.is_empty());
    }

    #[test]
    fn leaders_are_balanced_by_reordering_only() {
        // Replica counts are even (3 each) but broker 0 is first everywhere.
        let a = assignments(&[
            ("t", 0, &[0, 1, 2]),
            ("t", 1, &[0, 2, 1]),
            ("t", 2, &[0, 1, 2]),
        ]);
        let plan = plan_moves(&a, &brokers(0..3), 10);
        assert_eq!(plan.total_to_move, 0);
        assert_eq!(plan.total_to_reorder, 2);
        let mut after = a.clone();
        for m in plan.batch {
            after.insert((m.topic, m.partition), m.replicas);
        }
        assert_eq!(
            leader_counts(&after),
            BTreeMap::from([(0, 1), (1, 1), (2, 1)])
        );
        assert_eq!(replicas_moved(&a, &after), 0);
    }

    #[test]
    fn leader_balance_follows_a_chain_when_no_direct_swap_exists() {
        // Preferred leaders: 0 -> 3, 1 -> 2, 2 -> 1, and no partition 0 leads has 2: one
        // leadership goes 0 -> 1 on t-0 and 1 -> 2 on u-0.
        let a = assignments(&[
            ("t", 0, &[0, 1]),
            ("t", 1, &[0, 1]),
            ("t", 2, &[0, 1]),
            ("u", 0, &[1, 2]),
            ("u", 1, &[1, 2]),
            ("w", 0, &[2, 0]),
        ]);
        let mut next = a.clone();
        balance_leaders(&a, &mut next, &brokers(0..3));
        let changed: Vec<_> = next.iter().filter(|(k, r)| a[*k] != **r).collect();
        assert_eq!(
            changed,
            [
                (&("t".to_string(), 0), &vec![1, 0]),
                (&("u".to_string(), 0), &vec![2, 1])
            ]
        );
        assert_eq!(
            leader_counts(&next),
            BTreeMap::from([(0, 2), (1, 2), (2, 2)])
        );
    }

    #[test]
    fn scale_down_below_the_voters_is_refused() {
        let a = assignments(&[("t", 0, &[0])]);
        let refusal = check_scale_down(&a, 5, 2, 3).unwrap_err();
        assert_eq!(
            refusal,
            ScaleRefusal::WouldRemoveVoter {
                desired: 2,
                controllers: 3
            }
        );
        assert!(refusal.to_string().contains("keep at least 3 brokers"));
    }

    #[test]
    fn scale_down_below_a_replication_factor_names_the_topic() {
        let a = assignments(&[
            ("a", 0, &[0, 1, 2]),
            ("b", 0, &[0, 1, 2, 3]),
            ("c", 0, &[0, 1, 2, 3]),
        ]);
        let refusal = check_scale_down(&a, 5, 3, 3).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "topic b has replication factor 4, more than the 3 brokers that would remain; \
             keep at least 4 brokers"
        );
        assert_eq!(check_scale_down(&a, 5, 4, 3), Ok(brokers(4..5)));
    }

    #[test]
    fn scale_down_drains_the_highest_ordinals() {
        let a = assignments(&[("t", 0, &[0, 1, 2])]);
        assert_eq!(check_scale_down(&a, 5, 3, 3), Ok(brokers([3, 4])));
        assert_eq!(check_scale_down(&a, 3, 3, 3), Ok(BTreeSet::new()));
        assert_eq!(check_scale_down(&a, 3, 5, 3), Ok(BTreeSet::new()));
    }

    #[test]
    fn a_partition_mid_move_counts_with_its_target_replication_factor() {
        // 3 -> 4 mid-move: Metadata says [1, 2, 4, 3] with 3 leaving; RF is 3, not 4.
        let a = assignments(&[("t", 0, &[1, 2, 4, 3]), ("t", 1, &[0, 1, 2])]);
        let leaving = BTreeMap::from([(("t".to_string(), 0), vec![3])]);
        let settled = after_reassignments(&a, &leaving);
        assert_eq!(settled[&("t".to_string(), 0)], vec![1, 2, 4]);
        assert_eq!(settled[&("t".to_string(), 1)], vec![0, 1, 2]);
        assert_eq!(check_scale_down(&settled, 5, 3, 3), Ok(brokers([3, 4])));
        // Without the list (Metadata read from a broker that lags the controller), the
        // other partitions still show the topic's replication factor.
        assert_eq!(check_scale_down(&a, 5, 3, 3), Ok(brokers([3, 4])));
        let single = assignments(&[("t", 0, &[1, 2, 4, 3])]);
        assert!(check_scale_down(&single, 5, 3, 3).is_err());
    }

    #[test]
    fn held_by_counts_replicas_and_leaderships() {
        let a = assignments(&[("t", 0, &[3, 0]), ("t", 1, &[0, 4])]);
        let leaders = BTreeMap::from([(("t".to_string(), 0), 3), (("t".to_string(), 1), 0)]);
        assert_eq!(held_by(&a, &leaders, &brokers([3, 4])), (2, 1));
        assert_eq!(held_by(&a, &leaders, &brokers([5])), (0, 0));
    }

    #[test]
    fn progress_counts_down_and_the_total_only_grows() {
        let p = progress(None, 12);
        assert_eq!((p.partitions_moved, p.partitions_to_move), (0, 12));
        let p = progress(Some(&p), 7);
        assert_eq!((p.partitions_moved, p.partitions_to_move), (5, 12));
        // A new topic adds work: the total grows, what was moved stays moved.
        let p = progress(Some(&p), 9);
        assert_eq!((p.partitions_moved, p.partitions_to_move), (5, 14));
        let p = progress(Some(&p), 0);
        assert_eq!((p.partitions_moved, p.partitions_to_move), (14, 14));
    }
}

//! Replica placement for new topics and partitions, as Kafka's AdminUtils does it:
//! leaders spread round-robin over the brokers, followers shifted so that no two
//! partitions share the same replica list by accident, and with racks known, every
//! replica of a partition on a different rack while racks last.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSlot {
    pub broker_id: i32,
    pub rack: Option<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("Replication factor: {replication_factor} larger than available brokers: {brokers}.")]
    NotEnoughBrokers {
        replication_factor: i32,
        brokers: usize,
    },
    #[error("Replication factor must be larger than 0, got {0}.")]
    InvalidReplicationFactor(i32),
}

/// Replica lists for partitions `first_partition..first_partition + count`.
/// `start` picks which broker leads the first partition (callers vary it per topic so
/// that many small topics do not all lead on the same broker).
pub fn assign(
    brokers: &[BrokerSlot],
    first_partition: i32,
    count: i32,
    replication_factor: i32,
    start: usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if replication_factor <= 0 {
        return Err(PlacementError::InvalidReplicationFactor(replication_factor));
    }
    if replication_factor as usize > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers {
            replication_factor,
            brokers: brokers.len(),
        });
    }
    let ordered = rack_alternated(brokers);
    let racks_known = brokers.iter().all(|b| b.rack.is_some());
    let n = ordered.len();
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for p in first_partition..first_partition + count {
        let p = p as usize;
        let first = (p + start) % n;
        // Kafka's shift: grows by one each time the leaders have gone round once.
        let shift = (start + p / n) % n.max(1);
        let mut replicas = vec![ordered[first].broker_id];
        let mut used_racks = vec![ordered[first].rack.clone()];
        let mut j = 0;
        while replicas.len() < replication_factor as usize {
            let candidate = &ordered[replica_index(first, shift, j, n)];
            j += 1;
            let rack_taken = racks_known && used_racks.contains(&candidate.rack);
            let all_racks_used = distinct_racks(brokers) <= used_racks.len();
            if replicas.contains(&candidate.broker_id) || (rack_taken && !all_racks_used) {
                if j > 2 * n {
                    // Every broker was considered: take the next unused one.
                    if let Some(b) = ordered.iter().find(|b| !replicas.contains(&b.broker_id)) {
                        replicas.push(b.broker_id);
                        used_racks.push(b.rack.clone());
                    }
                }
                continue;
            }
            replicas.push(candidate.broker_id);
            used_racks.push(candidate.rack.clone());
        }
        out.push(replicas);
    }
    Ok(out)
}

fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let step = 1 + (shift + j) % (n - 1);
    (first + step) % n
}

fn distinct_racks(brokers: &[BrokerSlot]) -> usize {
    let mut racks: Vec<_> = brokers.iter().map(|b| &b.rack).collect();
    racks.sort();
    racks.dedup();
    racks.len()
}

/// Brokers ordered so that consecutive ones are on different racks: rack a's first,
/// rack b's first, ..., rack a's second, ... (Kafka's getRackAlternatedBrokerList).
fn rack_alternated(brokers: &[BrokerSlot]) -> Vec<BrokerSlot> {
    let mut by_rack: BTreeMap<Option<String>, Vec<BrokerSlot>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.clone()).or_default().push(b.clone());
    }
    for list in by_rack.values_mut() {
        list.sort_by_key(|b| b.broker_id);
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while out.len() < brokers.len() {
        for list in by_rack.values() {
            if let Some(b) = list.get(round) {
                out.push(b.clone());
            }
        }
        round += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(ids: &[(i32, Option<&str>)]) -> Vec<BrokerSlot> {
        ids.iter()
            .map(|(id, rack)| BrokerSlot {
                broker_id: *id,
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn leaders_spread_and_replicas_are_distinct() {
        let brokers = slots(&[(1, None), (2, None), (3, None)]);
        let a = assign(&brokers, 0, 6, 3, 0).unwrap();
        let leaders: Vec<i32> = a.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        for r in &a {
            let mut s = r.clone();
            s.sort();
            assert_eq!(s, vec![1, 2, 3]);
        }
        // Followers are shifted: the second round does not repeat the first's lists.
        assert_ne!(a[0], a[3]);
    }

    #[test]
    fn replication_factor_checks() {
        let brokers = slots(&[(1, None), (2, None)]);
        assert_eq!(
            assign(&brokers, 0, 1, 3, 0),
            Err(PlacementError::NotEnoughBrokers {
                replication_factor: 3,
                brokers: 2
            })
        );
        assert_eq!(
            assign(&brokers, 0, 1, 0, 0),
            Err(PlacementError::InvalidReplicationFactor(0))
        );
        assert_eq!(
            assign(&brokers, 0, 2, 1, 1).unwrap(),
            vec![vec![2], vec![1]]
        );
    }

    #[test]
    fn racks_are_spread() {
        let brokers = slots(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let rack = |id: i32| {
            brokers
                .iter()
                .find(|b| b.broker_id == id)
                .unwrap()
                .rack
                .clone()
        };
        for start in 0..6 {
            for r in assign(&brokers, 0, 12, 3, start).unwrap() {
                let mut racks: Vec<_> = r.iter().map(|id| rack(*id)).collect();
                racks.sort();
                racks.dedup();
                assert_eq!(racks.len(), 3, "{r:?}");
            }
        }
    }
}

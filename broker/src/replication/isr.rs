//! The leader's bookkeeping of its followers, as pure functions: which followers are
//! caught up, what the ISR should become and where the high watermark may move.

use std::collections::BTreeMap;

/// What the leader knows of one follower from its fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log end offset: the offset of its last fetch (-1 before any).
    pub log_end_offset: i64,
    /// When the follower last reached the leader's log end (Kafka's lastCaughtUpTime).
    pub last_caught_up_ms: i64,
    /// The leader's log end at the follower's previous fetch, and when that was: a
    /// follower that has reached it is caught up as of that fetch.
    pub last_fetch_leader_end: i64,
    pub last_fetch_ms: i64,
}

impl FollowerState {
    /// A follower the leader has not heard from yet; ISR members start caught up as of
    /// `now_ms` so a new leader does not evict them before they could fetch.
    pub fn new(now_ms: i64) -> Self {
        FollowerState {
            log_end_offset: -1,
            last_caught_up_ms: now_ms,
            last_fetch_leader_end: -1,
            last_fetch_ms: now_ms,
        }
    }

    /// Records a fetch at `fetch_offset` when the leader's log ends at `leader_end`.
    /// Kafka's rule: caught up now if it fetched from the log end, or caught up as of
    /// the previous fetch if it reached the log end the leader had then.
    pub fn on_fetch(&mut self, fetch_offset: i64, leader_end: i64, now_ms: i64) {
        if fetch_offset >= leader_end {
            self.last_caught_up_ms = now_ms;
        } else if self.last_fetch_leader_end >= 0 && fetch_offset >= self.last_fetch_leader_end {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.log_end_offset = fetch_offset;
        self.last_fetch_leader_end = leader_end;
        self.last_fetch_ms = now_ms;
    }
}

/// The high watermark: the smallest log end among the leader and the ISR members.
/// `isr` should be the maximal ISR (committed plus any pending addition), so that an
/// expansion in flight already holds the watermark back. It never moves back.
pub fn high_watermark(
    current: i64,
    leader_id: i32,
    leader_end: i64,
    isr: &[i32],
    followers: &BTreeMap<i32, FollowerState>,
) -> i64 {
    let mut hw = leader_end;
    for id in isr.iter().filter(|id| **id != leader_id) {
        let end = followers.get(id).map_or(-1, |f| f.log_end_offset);
        hw = hw.min(end);
    }
    hw.max(current)
}

/// ISR members (other than the leader) that have not caught up for longer than
/// `lag_max_ms`.
pub fn out_of_sync(
    leader_id: i32,
    isr: &[i32],
    followers: &BTreeMap<i32, FollowerState>,
    now_ms: i64,
    lag_max_ms: i64,
) -> Vec<i32> {
    isr.iter()
        .copied()
        .filter(|id| *id != leader_id)
        .filter(|id| {
            followers
                .get(id)
                .is_none_or(|f| now_ms - f.last_caught_up_ms > lag_max_ms)
        })
        .collect()
}

/// Whether a replica outside the ISR may join: it has reached the high watermark and
/// the start of the leader's current epoch (so it holds nothing a previous leader
/// wrote that this one truncated away).
pub fn may_join(
    follower: &FollowerState,
    high_watermark: i64,
    epoch_start_offset: i64,
    now_ms: i64,
    lag_max_ms: i64,
) -> bool {
    // Caught up recently, too: a follower that stopped fetching (a dead broker the
    // controller took out of the ISR) keeps its last offsets but must not come back.
    follower.log_end_offset >= high_watermark
        && follower.log_end_offset >= epoch_start_offset
        && now_ms - follower.last_caught_up_ms <= lag_max_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(leo: i64) -> FollowerState {
        FollowerState {
            log_end_offset: leo,
            ..FollowerState::new(0)
        }
    }

    #[test]
    fn high_watermark_is_the_isr_minimum_and_never_moves_back() {
        let followers = BTreeMap::from([(2, at(7)), (3, at(4))]);
        assert_eq!(high_watermark(0, 1, 10, &[1, 2, 3], &followers), 4);
        assert_eq!(high_watermark(0, 1, 10, &[1, 2], &followers), 7);
        assert_eq!(high_watermark(0, 1, 10, &[1], &followers), 10);
        assert_eq!(high_watermark(5, 1, 10, &[1, 2, 3], &followers), 5);
        // A member never heard from holds it where it is.
        assert_eq!(high_watermark(3, 1, 10, &[1, 4], &followers), 3);
    }

    #[test]
    fn caught_up_time_follows_kafkas_rule() {
        let mut f = FollowerState::new(0);
        f.on_fetch(0, 10, 100); // behind
        assert_eq!(f.last_caught_up_ms, 0);
        f.on_fetch(10, 20, 200); // reached the end the leader had at the last fetch
        assert_eq!(f.last_caught_up_ms, 100);
        f.on_fetch(20, 20, 300); // at the end
        assert_eq!(f.last_caught_up_ms, 300);
    }

    #[test]
    fn laggards_leave_and_caught_up_replicas_join() {
        let mut slow = FollowerState::new(0);
        slow.on_fetch(3, 10, 1_000);
        let fast = {
            let mut f = FollowerState::new(0);
            f.on_fetch(10, 10, 40_000);
            f
        };
        let followers = BTreeMap::from([(2, slow), (3, fast)]);
        assert_eq!(
            out_of_sync(1, &[1, 2, 3], &followers, 40_000, 30_000),
            vec![2]
        );
        assert_eq!(
            out_of_sync(1, &[1, 2, 3, 4], &followers, 40_000, 30_000),
            vec![2, 4]
        );
        assert!(may_join(&fast, 10, 5, 40_000, 30_000));
        assert!(!may_join(&slow, 10, 0, 40_000, 30_000));
        assert!(!may_join(&at(10), 10, 11, 0, 30_000));
        // Caught up once, silent since: not again.
        assert!(!may_join(&fast, 10, 5, 80_000, 30_000));
    }
}

//! The broker-wide budget on request bytes held in memory (Kafka's
//! `queued.max.request.bytes`). A connection takes bytes from it as a frame's buffer
//! grows and gives them back when the request has been handled; when it is spent,
//! connections wait before reading more, so a flood of large or slow requests turns
//! into TCP backpressure instead of memory.
//!
//! Frames arrive piece by piece, so waiting for budget while holding some could
//! deadlock: every holder waiting for bytes another holder has. One frame at a time may
//! therefore run past the budget (the overdraft), finish, and give everything back.
//! Memory held for requests thus stays below the budget plus one frame
//! (`socket.request.max.bytes`), the same bound as Kafka's non-strict memory pool.

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct MemoryBudget {
    /// `None`: unbounded, bytes are only counted.
    limit: Option<usize>,
    free: Semaphore,
    overdraft: Arc<Semaphore>,
    in_use: IntGauge,
}

impl MemoryBudget {
    pub fn new(limit: Option<usize>, in_use: IntGauge) -> Arc<Self> {
        let permits = limit.unwrap_or(0).min(Semaphore::MAX_PERMITS);
        Arc::new(MemoryBudget {
            limit: limit.map(|l| l.min(Semaphore::MAX_PERMITS)),
            free: Semaphore::new(permits),
            overdraft: Arc::new(Semaphore::new(1)),
            in_use,
        })
    }

    /// An empty reservation to grow as a frame's bytes arrive.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            from_budget: 0,
            beyond_budget: 0,
            overdraft: None,
        }
    }

    /// Bytes held by all reservations.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        usize::try_from(self.in_use.get()).unwrap_or(0)
    }
}

/// Bytes one request holds; they return to the budget when it is dropped.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    from_budget: usize,
    /// Held while unbounded or under the overdraft.
    beyond_budget: usize,
    overdraft: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Takes `bytes` more, waiting while the budget is spent and another frame holds
    /// the overdraft. Cancel-safe: nothing is taken unless it returns.
    pub async fn grow(&mut self, bytes: usize) {
        let budget = self.budget.clone();
        if budget.limit.is_none() || self.overdraft.is_some() {
            self.beyond_budget += bytes;
        } else {
            // A step is at most one frame, which validation keeps within the budget.
            let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
            tokio::select! {
                biased;
                taken = budget.free.acquire_many(permits) => match taken {
                    Ok(permit) => {
                        permit.forget();
                        self.from_budget += permits as usize;
                        self.beyond_budget += bytes - permits as usize;
                    }
                    Err(_) => self.beyond_budget += bytes,
                },
                overdraft = budget.overdraft.clone().acquire_owned() => {
                    self.overdraft = overdraft.ok();
                    self.beyond_budget += bytes;
                }
            }
        }
        budget.in_use.add(bytes as i64);
    }

    pub fn bytes(&self) -> usize {
        self.from_budget + self.beyond_budget
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.free.add_permits(self.from_budget);
        self.budget.in_use.sub(self.bytes() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(limit: Option<usize>) -> Arc<MemoryBudget> {
        MemoryBudget::new(limit, IntGauge::new("test_budget", "test").unwrap())
    }

    async fn grows_within(r: &mut Reservation, bytes: usize) -> bool {
        tokio::time::timeout(Duration::from_millis(50), r.grow(bytes))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn spent_budget_blocks_until_released() {
        let b = budget(Some(100));
        let mut first = b.reservation();
        first.grow(60).await;
        let mut second = b.reservation();
        second.grow(40).await;
        assert_eq!(b.in_use(), 100);
        // Spent: a third frame takes the overdraft; a fourth must wait.
        let mut third = b.reservation();
        assert!(grows_within(&mut third, 10).await);
        assert!(
            grows_within(&mut third, 500).await,
            "the overdraft holder finishes its frame"
        );
        let mut fourth = b.reservation();
        assert!(!grows_within(&mut fourth, 10).await);
        assert_eq!(b.in_use(), 610);
        drop(first);
        assert!(grows_within(&mut fourth, 10).await);
        assert_eq!(b.in_use(), 560);
        drop((second, third, fourth));
        assert_eq!(b.in_use(), 0);
        // Everything came back: the whole budget can be taken again.
        let mut again = b.reservation();
        assert!(grows_within(&mut again, 100).await);
    }

    #[tokio::test]
    async fn partial_holders_cannot_deadlock() {
        // Two frames of 80 each, interleaved in steps of 20, on a budget of 100: with no
        // overdraft both would wait forever holding 60 and 40.
        let b = budget(Some(100));
        let (mut x, mut y) = (b.reservation(), b.reservation());
        for _ in 0..2 {
            assert!(grows_within(&mut x, 20).await);
            assert!(grows_within(&mut y, 20).await);
        }
        assert!(grows_within(&mut x, 20).await);
        // y now needs more than is left: it finishes on the overdraft.
        assert!(grows_within(&mut y, 20).await);
        assert!(grows_within(&mut y, 20).await);
        // x waits (budget spent, overdraft held) until y's request is done.
        assert!(!grows_within(&mut x, 20).await);
        assert_eq!(x.bytes(), 60);
        drop(y);
        assert!(grows_within(&mut x, 20).await);
        assert_eq!(x.bytes(), 80);
    }

    #[tokio::test]
    async fn unbounded_budget_only_counts() {
        let b = budget(None);
        let mut r = b.reservation();
        r.grow(1 << 40).await;
        assert_eq!(b.in_use(), 1 << 40);
        drop(r);
        assert_eq!(b.in_use(), 0);
    }
}

//! A budget of request-body bytes shared by every connection of a listener.
//!
//! A body is buffered only with bytes reserved from the budget first, so the
//! bodies held at once never exceed it, however many connections and streams
//! a client opens. A request that cannot get its bytes within a short wait is
//! refused (503 with `Retry-After`) instead of queueing without bound.
//!
//! Waiting requests do not queue in a FIFO: a fair semaphore would let one
//! 3 MiB request at the head hold back every small review behind it, which is
//! exactly the attack. Instead each waiter retries when bytes are given back,
//! so a 5 KB review fits in any gap the large ones leave.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    returned: Arc<Notify>,
    total: usize,
}

/// Bytes held from a [`BodyBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    returned: Arc<Notify>,
}

/// The budget had no room within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{wanted} bytes of request body could not be reserved within {waited:?}")]
pub struct Exhausted {
    pub wanted: usize,
    pub waited: Duration,
}

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            returned: Arc::new(Notify::new()),
            total,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes nobody holds right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// An empty reservation, grown with [`Reservation::grow`].
    pub fn empty(&self) -> Reservation {
        Reservation {
            permit: None,
            returned: self.returned.clone(),
        }
    }

    /// Takes `wanted` bytes, waiting at most `wait` for them.
    async fn take(&self, wanted: usize, wait: Duration) -> Result<OwnedSemaphorePermit, Exhausted> {
        let exhausted = Exhausted {
            wanted,
            waited: wait,
        };
        let Ok(n) = u32::try_from(wanted) else {
            return Err(exhausted);
        };
        if wanted > self.total {
            return Err(exhausted);
        }
        let deadline = Instant::now() + wait;
        loop {
            // Registered before trying, so a return between the try and the
            // wait is not missed.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Ok(permit) = self.bytes.clone().try_acquire_many_owned(n) {
                return Ok(permit);
            }
            if tokio::time::timeout_at(deadline, returned).await.is_err() {
                return Err(exhausted);
            }
        }
    }
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Adds `more` bytes to the reservation.
    pub async fn grow(
        &mut self,
        budget: &BodyBudget,
        more: usize,
        wait: Duration,
    ) -> Result<(), Exhausted> {
        if more == 0 {
            return Ok(());
        }
        let permit = budget.take(more, wait).await?;
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.returned.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn reservations_never_exceed_the_budget() {
        let budget = BodyBudget::new(100);
        let mut a = budget.empty();
        a.grow(&budget, 60, WAIT).await.unwrap();
        let mut b = budget.empty();
        assert_eq!(
            b.grow(&budget, 60, WAIT).await,
            Err(Exhausted {
                wanted: 60,
                waited: WAIT
            })
        );
        b.grow(&budget, 40, WAIT).await.unwrap();
        assert_eq!(budget.available(), 0);
        assert_eq!((a.bytes(), b.bytes()), (60, 40));
        drop(a);
        assert_eq!(budget.available(), 60);
        drop(b);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_is_refused_at_once() {
        let budget = BodyBudget::new(10);
        let mut r = budget.empty();
        assert!(
            r.grow(&budget, 11, Duration::from_secs(3600))
                .await
                .is_err()
        );
        assert_eq!(r.bytes(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_bytes_given_back() {
        let budget = BodyBudget::new(10);
        let mut held = budget.empty();
        held.grow(&budget, 10, WAIT).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut r = budget.empty();
                r.grow(&budget, 4, Duration::from_secs(30)).await.map(|_| r)
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        let r = waiter.await.unwrap().unwrap();
        assert_eq!(r.bytes(), 4);
    }

    #[tokio::test]
    async fn a_large_waiter_does_not_hold_back_a_small_request() {
        let budget = BodyBudget::new(10);
        let mut held = budget.empty();
        held.grow(&budget, 8, WAIT).await.unwrap();
        // Wants 9 of the 2 left: waits.
        let large = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut r = budget.empty();
                r.grow(&budget, 9, Duration::from_secs(30)).await
            })
        };
        tokio::task::yield_now().await;
        // A FIFO semaphore would queue this behind the large one.
        let mut small = budget.empty();
        small.grow(&budget, 2, WAIT).await.unwrap();
        drop((held, small));
        large.await.unwrap().unwrap();
    }
}

//! Token-bucket rate limits keyed by developer or client address.
//!
//! Pure: the caller passes the current time. The number of buckets is bounded:
//! when the map is full, buckets that have refilled completely (which hold no
//! information a new bucket would not) are dropped first.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most before full ones are dropped.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A sustained rate and the burst allowed above it, as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// `burst` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`: `Ok` if there was one, otherwise how long
    /// until there will be (for `Retry-After`).
    pub fn try_acquire(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            self.forget_full(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    /// Gives back a token taken by [`RateLimiter::try_acquire`] (the request it
    /// was reserved for turned out not to count).
    pub fn refund(&self, key: &K) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
    }

    fn forget_full(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * self.per_second < self.burst
        });
        // Still full of busy keys (an address-spoofing flood cannot happen
        // over TCP, but be safe): start over rather than grow without bound.
        if buckets.len() >= MAX_BUCKETS {
            buckets.clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses_until_refilled() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.try_acquire(&"alice", t0).is_ok());
        }
        let wait = limiter.try_acquire(&"alice", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_seconds(wait), 1);
        // Others are not affected.
        assert!(limiter.try_acquire(&"bob", t0).is_ok());
        // Half a second later one token is back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.try_acquire(&"alice", t1).is_ok());
        assert!(limiter.try_acquire(&"alice", t1).is_err());
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let limiter = RateLimiter::new(100.0, 2);
        let t0 = Instant::now();
        assert!(limiter.try_acquire(&1, t0).is_ok());
        let later = t0 + Duration::from_secs(3600);
        assert!(limiter.try_acquire(&1, later).is_ok());
        assert!(limiter.try_acquire(&1, later).is_ok());
        assert!(limiter.try_acquire(&1, later).is_err());
    }

    #[test]
    fn refund_gives_a_token_back() {
        let limiter = RateLimiter::new(0.001, 1);
        let t0 = Instant::now();
        assert!(limiter.try_acquire(&"a", t0).is_ok());
        assert!(limiter.try_acquire(&"a", t0).is_err());
        limiter.refund(&"a");
        assert!(limiter.try_acquire(&"a", t0).is_ok());
        // Refunds never push a bucket past its burst.
        limiter.refund(&"a");
        limiter.refund(&"a");
        assert!(limiter.try_acquire(&"a", t0).is_ok());
        assert!(limiter.try_acquire(&"a", t0).is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(120)), 120);
    }

    #[test]
    fn bucket_count_is_bounded() {
        let limiter = RateLimiter::new(1.0, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_BUCKETS + 500) {
            let _ = limiter.try_acquire(&i, t0);
        }
        assert!(limiter.len() <= MAX_BUCKETS);
    }
}

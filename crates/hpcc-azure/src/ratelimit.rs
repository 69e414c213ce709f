//! Client-side token buckets, one pair (reads, writes) per subscription and principal, so the operator stays below
//! ARM's throttling limits instead of discovering them through 429s. ARM partitions its own buckets the same way
//! ("per subscription and principal"): each namespace credential has its own budget, and two clients acting as
//! one principal share theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `capacity` tokens, refilled at `rate` per second. Callers reserve a token and sleep for the
/// returned delay; reservations may drive the balance negative, which queues later callers fairly behind earlier ones.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: f64, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            capacity,
            rate: rate_per_second.max(f64::MIN_POSITIVE),
            state: Mutex::new(BucketState { tokens: capacity, last: Instant::now() }),
        }
    }

    /// Take one token at `now`; returns how long the caller must wait before using it.
    pub fn reserve_at(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(self.capacity);
        s.last = now.max(s.last);
        s.tokens -= 1.0;
        if s.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-s.tokens / self.rate) }
    }

    /// Take one token, sleeping until it is available.
    pub async fn acquire(&self) {
        let wait = self.reserve_at(Instant::now());
        if !wait.is_zero() {
            tracing::debug!(wait_ms = wait.as_millis() as u64, "client-side ARM rate limit");
            tokio::time::sleep(wait).await;
        }
    }

    /// Azure reported how many requests remain in its own bucket (`x-ms-ratelimit-remaining-subscription-*`): never
    /// believe we have more than that.
    pub fn observe_remaining(&self, remaining: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let remaining = remaining as f64;
        if remaining < s.tokens {
            s.tokens = remaining;
        }
    }

    /// Tokens currently available (for tests and diagnostics).
    pub fn available_at(&self, now: Instant) -> f64 {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        (s.tokens + elapsed * self.rate).min(self.capacity)
    }
}

/// Read or write bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// Buckets per (principal, subscription, access), created on first use; shared by every client of one operator.
#[derive(Debug)]
pub struct ArmLimiter {
    read: (f64, u32),
    write: (f64, u32),
    buckets: Mutex<HashMap<(String, String, Access), Arc<TokenBucket>>>,
}

impl ArmLimiter {
    pub fn new(reads_per_second: f64, read_burst: u32, writes_per_second: f64, write_burst: u32) -> Self {
        Self {
            read: (reads_per_second, read_burst),
            write: (writes_per_second, write_burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket for `principal` (a client's [`principal key`](crate::AzureConfig::principal_key)),
    /// `subscription` and `access`, all case-insensitive.
    pub fn bucket(&self, principal: &str, subscription: &str, access: Access) -> Arc<TokenBucket> {
        let mut m = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((principal.to_ascii_lowercase(), subscription.to_ascii_lowercase(), access))
            .or_insert_with(|| {
                let (rate, burst) = match access {
                    Access::Read => self.read,
                    Access::Write => self.write,
                };
                Arc::new(TokenBucket::new(rate, burst))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let b = TokenBucket::new(10.0, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(b.reserve_at(t0), Duration::ZERO);
        }
        // Sixth and seventh wait 100 ms and 200 ms at 10/s.
        assert_eq!(b.reserve_at(t0), Duration::from_millis(100));
        assert_eq!(b.reserve_at(t0), Duration::from_millis(200));
        // After a second the debt (2) is paid and 8 more accrue, capped at capacity 5.
        let t1 = t0 + Duration::from_secs(2);
        assert!((b.available_at(t1) - 5.0).abs() < 1e-9);
        assert_eq!(b.reserve_at(t1), Duration::ZERO);
    }

    #[tokio::test]
    async fn acquire_sleeps() {
        let b = TokenBucket::new(20.0, 1);
        let start = Instant::now();
        b.acquire().await;
        b.acquire().await;
        b.acquire().await;
        // 1 free, then 50 ms each.
        let took = Instant::now() - start;
        assert!(took >= Duration::from_millis(95) && took < Duration::from_millis(600), "{took:?}");
    }

    #[test]
    fn server_remaining_caps_tokens() {
        let b = TokenBucket::new(1.0, 100);
        b.observe_remaining(1);
        let now = Instant::now();
        assert_eq!(b.reserve_at(now), Duration::ZERO);
        let wait = b.reserve_at(now);
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        // A larger remaining count never adds tokens.
        b.observe_remaining(1000);
        assert!(b.available_at(now) < 0.0);
    }

    #[test]
    fn per_subscription_and_kind() {
        let l = ArmLimiter::new(20.0, 3, 8.0, 2);
        let a = l.bucket("t/p", "SUB-A", Access::Read);
        assert!(Arc::ptr_eq(&a, &l.bucket("t/p", "sub-a", Access::Read)));
        assert!(!Arc::ptr_eq(&a, &l.bucket("t/p", "sub-a", Access::Write)));
        assert!(!Arc::ptr_eq(&a, &l.bucket("t/p", "sub-b", Access::Read)));
        let now = Instant::now();
        let w = l.bucket("t/p", "sub-a", Access::Write);
        assert_eq!(w.reserve_at(now), Duration::ZERO);
        assert_eq!(w.reserve_at(now), Duration::ZERO);
        assert!(w.reserve_at(now) > Duration::ZERO);
        // Reads of the same subscription are unaffected.
        assert_eq!(a.reserve_at(now), Duration::ZERO);
    }

    #[test]
    fn per_principal_within_a_subscription() {
        // ARM throttles per subscription and principal: one namespace's principal spending its budget does not
        // hold up another's (or the operator's) in the same subscription; one principal is one budget.
        let l = ArmLimiter::new(20.0, 2, 8.0, 2);
        let ns_a = l.bucket("tenant/CLIENT-A", "sub", Access::Read);
        assert!(Arc::ptr_eq(&ns_a, &l.bucket("TENANT/client-a", "SUB", Access::Read)), "same principal, same bucket");
        let ns_b = l.bucket("tenant/client-b", "sub", Access::Read);
        let operator = l.bucket("tenant/operator", "sub", Access::Read);
        assert!(!Arc::ptr_eq(&ns_a, &ns_b) && !Arc::ptr_eq(&ns_a, &operator));
        let now = Instant::now();
        assert_eq!(ns_a.reserve_at(now), Duration::ZERO);
        assert_eq!(ns_a.reserve_at(now), Duration::ZERO);
        assert!(ns_a.reserve_at(now) > Duration::ZERO, "client-a's burst is spent");
        assert_eq!(ns_b.reserve_at(now), Duration::ZERO, "client-b still has its own");
        assert_eq!(operator.reserve_at(now), Duration::ZERO, "and so has the operator");
        // A client made again for the same principal (a rotated secret) continues its budget.
        assert!(l.bucket("tenant/client-a", "sub", Access::Read).reserve_at(now) > Duration::ZERO);
    }
}

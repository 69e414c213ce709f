//! ARM throttling: token buckets per subscription, principal and operation class, and the 429 they answer with.

use std::collections::HashMap;
use std::time::Instant;

use axum::http::StatusCode;

use super::wire::{OpClass, Out};

impl OpClass {
    /// (bucket size, refill per second): ARM's regional token bucket limits per subscription and principal.
    pub fn limits(self) -> (f64, f64) {
        match self {
            OpClass::Reads => (250.0, 25.0),
            OpClass::Writes => (200.0, 10.0),
            OpClass::Deletes => (200.0, 10.0),
        }
    }
}

/// Token buckets per (subscription, principal, class). They refill at ARM's rate per *simulated* second (`speed`
/// simulated seconds per real second), so a sped-up simulator keeps ARM's budget per simulated second. Retry-After
/// is what ARM would say, in simulated seconds: a client of a sped-up simulator that wants ARM's timing divides it
/// by the speed (one that does not waits longer than ARM would ask, never shorter).
#[derive(Debug, Default)]
pub struct Buckets {
    b: HashMap<(String, String, OpClass), (f64, Instant)>,
}

impl Buckets {
    /// Take one token: `Ok(remaining)` or `Err(retry_after_seconds)`.
    pub fn take(&mut self, sub: &str, principal: &str, class: OpClass, speed: f64) -> Result<u64, u64> {
        let (cap, per_sim_second) = class.limits();
        let rate = per_sim_second * speed.max(f64::MIN_POSITIVE);
        let now = Instant::now();
        let e = self.b.entry((sub.to_ascii_lowercase(), principal.to_ascii_lowercase(), class)).or_insert((cap, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * rate).min(cap);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            Ok(e.0.floor() as u64)
        } else {
            Err(((1.0 - e.0) / per_sim_second).ceil().max(1.0) as u64)
        }
    }
}

/// ARM's 429 when a bucket is empty.
pub fn throttled(sub: &str, principal: &str, class: OpClass, retry: u64) -> Out {
    let verb = match class {
        OpClass::Reads => "read",
        OpClass::Writes => "write",
        OpClass::Deletes => "delete",
    };
    Out::arm_error(
        StatusCode::TOO_MANY_REQUESTS,
        "SubscriptionRequestsThrottled",
        format!("Number of '{verb}' requests for subscription '{sub}' actor '{principal}' exceeded. Please try again after '{retry}' seconds after the first request. The results will be cached for a while."),
    )
    .with_header("retry-after", retry.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_run_dry() {
        let mut b = Buckets::default();
        for i in 0..200 {
            assert_eq!(b.take("s", "p", OpClass::Writes, 1.0), Ok(199 - i));
        }
        assert!(b.take("s", "p", OpClass::Writes, 1.0).is_err());
        assert!(b.take("s", "other", OpClass::Writes, 1.0).is_ok(), "per principal");
        assert!(b.take("s", "p", OpClass::Reads, 1.0).is_ok(), "per class");
    }

    #[test]
    fn a_faster_clock_refills_faster_in_real_time() {
        let mut b = Buckets::default();
        for _ in 0..200 {
            b.take("s", "p", OpClass::Writes, 60.0).unwrap();
        }
        // 10 per simulated second at 60×: 600 per real second, so 20 ms of real time buys about 12.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let refilled = (0..50).take_while(|_| b.take("s", "p", OpClass::Writes, 60.0).is_ok()).count();
        assert!((8..=40).contains(&refilled), "{refilled}");
    }
}

//! Simulated clock: `now = start + real_elapsed * speed + advanced`.
//!
//! Every time-based transition in the simulator is computed from this clock when a resource is read, so
//! [`SimClock::advance`] takes effect immediately and runs are deterministic for a given sequence of calls.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

#[derive(Debug)]
pub struct SimClock {
    start_real: Instant,
    start_sim: Timestamp,
    speed: f64,
    advanced: Mutex<Duration>,
}

impl SimClock {
    /// A clock starting at `start_sim` that runs `speed` simulated seconds per real second.
    pub fn new(start_sim: Timestamp, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed >= 0.0 { speed } else { 1.0 };
        Self { start_real: Instant::now(), start_sim, speed, advanced: Mutex::new(Duration::ZERO) }
    }

    pub fn now(&self) -> Timestamp {
        let real = self.start_real.elapsed().as_secs_f64() * self.speed;
        let advanced = *self.advanced.lock().unwrap_or_else(|e| e.into_inner());
        let total =
            SignedDuration::from_secs_f64(real) + SignedDuration::try_from(advanced).unwrap_or(SignedDuration::MAX);
        self.start_sim.saturating_add(total).unwrap_or(self.start_sim)
    }

    /// Jump ahead by `d` simulated time.
    pub fn advance(&self, d: Duration) {
        let mut a = self.advanced.lock().unwrap_or_else(|e| e.into_inner());
        *a = a.saturating_add(d);
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }
}

/// RFC 7231 IMF-fixdate, as used by the HTTP `Date` header: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::UTC).strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// ISO 8601 with 7 fractional digits and `Z`, the shape ARM uses in `systemData` and operation times.
pub fn arm_time(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y-%m-%dT%H:%M:%S%.7fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_now() {
        let start: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let c = SimClock::new(start, 0.0);
        assert_eq!(c.now(), start);
        c.advance(Duration::from_secs(90 * 60));
        assert_eq!(c.now(), start + SignedDuration::from_mins(90));
    }

    #[test]
    fn date_formats() {
        let t: Timestamp = "1994-11-06T08:49:37Z".parse().unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(arm_time(t), "1994-11-06T08:49:37.0000000Z");
    }
}

//! Simulated clock: `now = base_sim + real_elapsed_since(base_real) * speed`.
//!
//! Every time-based transition in the simulator is computed from this clock when a resource is read, so
//! [`SimClock::advance`] takes effect immediately and runs are deterministic for a given sequence of calls.
//! [`SimClock::set_speed`] changes the rate from now on (the simulated time so far is kept).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

#[derive(Debug)]
pub struct SimClock {
    state: Mutex<State>,
}

/// The simulated time `sim` at the real instant `real`, running `speed` simulated seconds per real second since.
#[derive(Debug, Clone, Copy)]
struct State {
    real: Instant,
    sim: Timestamp,
    speed: f64,
}

impl State {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::from_secs_f64(self.real.elapsed().as_secs_f64() * self.speed);
        self.sim.saturating_add(elapsed).unwrap_or(self.sim)
    }
}

/// A usable speed: finite and not negative (else 1×).
fn sane(speed: f64) -> f64 {
    if speed.is_finite() && speed >= 0.0 { speed } else { 1.0 }
}

impl SimClock {
    /// A clock starting at `start_sim` that runs `speed` simulated seconds per real second.
    pub fn new(start_sim: Timestamp, speed: f64) -> Self {
        Self { state: Mutex::new(State { real: Instant::now(), sim: start_sim, speed: sane(speed) }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now(&self) -> Timestamp {
        self.state().now()
    }

    /// Jump ahead by `d` simulated time.
    pub fn advance(&self, d: Duration) {
        let mut s = self.state();
        let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
        s.sim = s.sim.saturating_add(d).unwrap_or(s.sim);
    }

    pub fn speed(&self) -> f64 {
        self.state().speed
    }

    /// Run `speed` simulated seconds per real second from now on (0 stops the clock; `advance` still moves it).
    /// The simulated time reached so far is kept, so the clock never jumps. Returns the speed in effect.
    pub fn set_speed(&self, speed: f64) -> f64 {
        let mut s = self.state();
        let now = s.now();
        *s = State { real: Instant::now(), sim: now, speed: sane(speed) };
        s.speed
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
    fn a_new_speed_keeps_the_time_reached_and_changes_the_rate() {
        let start: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let c = SimClock::new(start, 1000.0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.set_speed(0.0), 0.0);
        let reached = c.now();
        assert!(reached >= start + SignedDuration::from_secs(20), "{reached}: ran 1000x before the change");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.now(), reached, "stopped: no jump back, no drift");
        c.advance(Duration::from_secs(60));
        assert_eq!(c.now(), reached + SignedDuration::from_secs(60), "advance still works");
        assert_eq!(c.set_speed(f64::NAN), 1.0, "a nonsense speed is 1x");
        assert_eq!(c.speed(), 1.0);
        assert!(c.now() < reached + SignedDuration::from_secs(61), "1x: real time from here");
    }

    #[test]
    fn date_formats() {
        let t: Timestamp = "1994-11-06T08:49:37Z".parse().unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(arm_time(t), "1994-11-06T08:49:37.0000000Z");
    }
}

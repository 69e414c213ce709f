//! Fair, deadline-aware pacing of reconciles (the controller's queue is first-come, first-served):
//!
//! - each reconcile runs as a [`Caller`] whose [`Urgency`] says how much of the ARM budget it may use
//!   (`hpcc_azure::with_caller`): a cache waiting for its key goes first, steady-state resyncs last;
//! - the [`Pacer`] keeps the queue from running late: when reconciles start later than they were asked for
//!   (more polling than the operator can serve), or are deferred for long by the ARM budget (more polling than the
//!   subscription's budget), routine and normal polls are spread out (stretched) until the queue is on time and the
//!   budget has room again, so a new object and a cache near its deadline are reached within seconds whatever the
//!   load. Urgent polls are never stretched.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hpcc_api::v1alpha1::Phase;
use hpcc_azure::{Caller, Urgency};
use hpcc_core::Action;
use kube::Resource;
use kube::ResourceExt;

/// How urgent an object's work is, from what its status said last. `propagating`: the key grant is made and Azure
/// is picking it up, so the polls only report (nothing the window depends on is left to do) and may be spread out.
pub fn urgency(phase: Option<Phase>, settled: bool, propagating: bool) -> Urgency {
    match phase {
        // Azure's 90-minute window runs: the grant and the polls that lead to it.
        Some(Phase::WaitingForKey) => Urgency::Urgent,
        Some(Phase::Authorizing) if !propagating => Urgency::Urgent,
        Some(Phase::Ready | Phase::Failed) if settled => Urgency::Routine,
        _ => Urgency::Normal,
    }
}

/// The caller to perform `action` as, when it is more urgent than the object's last status said: a grant (and the
/// vault protection that precedes it) is what Azure's window waits for, decided in the very reconcile that saw the
/// cache waiting for its key. None: perform it as the reconcile's caller.
pub fn urgent_caller<K: Resource<DynamicType = ()>>(action: &Action, obj: &K) -> Option<Caller> {
    if !matches!(action, Action::Grant(_) | Action::EnableVaultProtection) {
        return None;
    }
    let holder = hpcc_azure::current_caller().map_or_else(|| holder(obj), |c| c.holder);
    Some(Caller { holder, urgency: Urgency::Urgent })
}

/// The caller a reconcile of `obj` runs as.
pub fn caller<K: Resource<DynamicType = ()>>(
    obj: &K,
    phase: Option<Phase>,
    observed_generation: Option<i64>,
    propagating: bool,
) -> Caller {
    let settled = obj.meta().deletion_timestamp.is_none() && observed_generation == obj.meta().generation;
    Caller { holder: holder(obj), urgency: urgency(phase, settled, propagating) }
}

/// `Kind/namespace/name`: one object, across both kinds.
pub fn holder<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// How many of the objects sharing a resource group's list come per poll interval (see [`spread`]).
const LIST_TURNS: f64 = 4.0;

/// The requeue of a poll that waits for Azure's progress on a cache (creating, authorizing, updating, deleting),
/// when `sharing` objects look at the same resource-group list: their caches' progress shows in that list, and a
/// change in it wakes its object at once (see [`changes`](super::changes)), so the objects take turns reading it
/// instead of each polling. Each waits a random time between `after` and `sharing / LIST_TURNS` times `after` (never
/// past `ceiling`): about `2 × LIST_TURNS` of them come per poll interval, so the list stays about as fresh as when
/// every object polled, and N objects cost a few reconciles per poll rather than N. Random, so that objects created
/// together do not come back together and leave the list unread in between.
pub fn spread(after: Duration, sharing: usize, ceiling: Duration) -> Duration {
    let most = after.mul_f64(sharing as f64 / LIST_TURNS).min(ceiling);
    if most <= after {
        return after;
    }
    after + (most - after).mul_f64(fastrand::f64())
}

/// When a reconcile asks to see its object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Only on a change (of the object, or of its cache in a shared list).
    Change,
    /// A poll after this long, as the machine decided: stretched while the queue runs late (unless urgent).
    Poll(Duration),
    /// Soon after the finalizer was added: the object's first action follows (never stretched).
    Start(Duration),
    /// Right after an action: its next step usually follows at once, and Azure may be on the clock (after a create,
    /// the key's 90-minute window runs), so it is never stretched and goes before new work (see
    /// [`Pacer::follows_up`]).
    FollowUp,
}

/// How long after an action a reconcile looks again (see [`Next::FollowUp`]).
pub const FOLLOW_UP: Duration = Duration::from_secs(1);

/// The queue is late when reconciles start this much after they were due (on average).
const LATE: f64 = 1.0;
/// ... and on time again below this.
const ON_TIME: f64 = 0.25;
/// The stretch is adjusted at most this often.
const ADJUST_EVERY: Duration = Duration::from_millis(500);
/// Polls are never stretched more than this.
const MAX_STRETCH: f64 = 32.0;

struct PacerState {
    /// When each object's requeue was due.
    due: HashMap<String, Instant>,
    /// The objects whose requeue follows up an action.
    following_up: HashSet<String>,
    /// Moving average of how late reconciles start, in seconds.
    lateness: f64,
    stretch: f64,
    adjusted: Instant,
}

/// Spreads polls out while the controller's queue runs late (see the module docs).
pub struct Pacer {
    state: Mutex<PacerState>,
    /// No poll is stretched past this (the resync).
    ceiling: Duration,
}

impl Pacer {
    pub fn new(ceiling: Duration) -> Self {
        let state = PacerState {
            due: HashMap::new(),
            following_up: HashSet::new(),
            lateness: 0.0,
            stretch: 1.0,
            adjusted: Instant::now(),
        };
        Self { state: Mutex::new(state), ceiling }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reconcile of `holder` starts at `now`: how late it is (versus its requeue) feeds the stretch. A reconcile
    /// started by a change (a new object, an edit) before its requeue was due counts as on time.
    pub fn started(&self, holder: &str, now: Instant) {
        let mut s = self.lock();
        s.following_up.remove(holder);
        let late = s.due.remove(holder).map_or(0.0, |due| now.saturating_duration_since(due).as_secs_f64());
        self.sample(&mut s, late, now);
    }

    /// A reconcile's read was deferred by the ARM budget for `wait`: the polling asks for more reads than the budget
    /// has, which counts like a late queue (so polls spread out and leave the budget room).
    pub fn deferred(&self, wait: Duration, now: Instant) {
        self.sample(&mut self.lock(), wait.as_secs_f64(), now);
    }

    fn sample(&self, s: &mut PacerState, late: f64, now: Instant) {
        s.lateness = 0.9 * s.lateness + 0.1 * late;
        if now.saturating_duration_since(s.adjusted) >= ADJUST_EVERY {
            s.adjusted = now;
            // A requeue that has not started a resync after it was due belongs to an object that is gone (deleted
            // without our finalizer: the controller drops its requeue without a reconcile to forget it here).
            s.due.retain(|_, due| now.saturating_duration_since(*due) < self.ceiling);
            let PacerState { due, following_up, .. } = s;
            following_up.retain(|holder| due.contains_key(holder));
            if s.lateness > LATE {
                s.stretch = (s.stretch * 1.25).min(MAX_STRETCH);
            } else if s.lateness < ON_TIME {
                s.stretch = (s.stretch * 0.9).max(1.0);
            }
        }
    }

    /// The requeue to ask for (None: wait for a change), given what the reconcile asked: polls are stretched unless
    /// urgent, never past the ceiling (unless the machine itself asked for longer); steps are never stretched.
    pub fn requeue(&self, holder: &str, next: Next, urgency: Urgency, now: Instant) -> Option<Duration> {
        let mut s = self.lock();
        let paced = match next {
            Next::Change => {
                s.due.remove(holder);
                s.following_up.remove(holder);
                return None;
            }
            Next::Start(after) => after,
            Next::FollowUp => {
                s.following_up.insert(holder.to_string());
                FOLLOW_UP
            }
            Next::Poll(after) if urgency == Urgency::Urgent || s.stretch <= 1.0 => after,
            Next::Poll(after) => after.mul_f64(s.stretch).min(self.ceiling.max(after)),
        };
        s.due.insert(holder.to_string(), now + paced);
        Some(paced)
    }

    /// The urgency a reconcile waits for its slot with (see [`slots`](super::slots)): the caller's, raised for an
    /// object never reconciled (`seen`: it has a status), so that it is acknowledged within seconds whatever the load
    /// (that first reconcile only adds the finalizer and says so in the status), and for the follow-up of an action
    /// (work under way finishes before new work starts, which also bounds how many caches are on Azure's clock).
    pub fn slot_urgency(&self, caller: &Caller, seen: bool) -> Urgency {
        if !seen || self.lock().following_up.contains(&caller.holder) { Urgency::Urgent } else { caller.urgency }
    }

    /// The object is gone.
    pub fn forget(&self, holder: &str) {
        let mut s = self.lock();
        s.due.remove(holder);
        s.following_up.remove(holder);
    }

    /// The current stretch of polls (1 = as configured).
    #[cfg(test)]
    fn stretch(&self) -> f64 {
        self.lock().stretch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(15);

    /// A pacer whose reads were deferred 5 s each for 24 s (as in a create storm), and the moment after.
    fn deferred_for_long() -> (Pacer, Instant) {
        let pacer = Pacer::new(Duration::from_secs(600));
        let mut now = Instant::now();
        for _ in 0..40 {
            now += Duration::from_millis(600);
            pacer.deferred(Duration::from_secs(5), now);
        }
        (pacer, now)
    }

    #[test]
    fn work_a_deadline_depends_on_is_urgent_and_steady_state_is_routine() {
        assert_eq!(urgency(Some(Phase::WaitingForKey), true, false), Urgency::Urgent);
        assert_eq!(urgency(Some(Phase::Authorizing), false, false), Urgency::Urgent, "vault protection, then grant");
        assert_eq!(
            urgency(Some(Phase::Authorizing), true, true),
            Urgency::Normal,
            "granted: Azure picks the key up whenever the operator looks"
        );
        assert_eq!(urgency(Some(Phase::Ready), true, false), Urgency::Routine);
        assert_eq!(urgency(Some(Phase::Ready), false, false), Urgency::Normal, "a spec change to apply");
        assert_eq!(urgency(None, true, false), Urgency::Normal, "a new object");
        assert_eq!(urgency(Some(Phase::Creating), true, false), Urgency::Normal);
    }

    #[test]
    fn polls_stretch_while_the_queue_runs_late_and_recover_when_it_is_on_time() {
        let pacer = Pacer::new(Duration::from_secs(600));
        let t0 = Instant::now();
        assert_eq!(pacer.requeue("a", Next::Poll(POLL), Urgency::Normal, t0), Some(POLL), "on time: as decided");
        // Every reconcile starts 10 s after it was due, for a while.
        let mut now = t0;
        for i in 0..40 {
            now += Duration::from_millis(600);
            pacer.requeue(&format!("o{i}"), Next::Poll(Duration::ZERO), Urgency::Normal, now - Duration::from_secs(10));
            pacer.started(&format!("o{i}"), now);
        }
        let stretched = pacer.requeue("a", Next::Poll(POLL), Urgency::Normal, now).unwrap();
        assert!(stretched > POLL * 4, "{stretched:?}");
        assert_eq!(
            pacer.requeue("w", Next::Poll(POLL), Urgency::Urgent, now),
            Some(POLL),
            "a cache near its deadline is not stretched"
        );
        let resync = Duration::from_secs(600);
        assert!(pacer.requeue("r", Next::Poll(resync), Urgency::Routine, now).unwrap() <= resync);
        // New objects (started by the watch, not due) and on-time polls bring it back to 1.
        for i in 0..200 {
            now += Duration::from_millis(600);
            pacer.started(&format!("new{i}"), now);
        }
        assert_eq!(pacer.stretch(), 1.0);
        assert_eq!(pacer.requeue("a", Next::Poll(POLL), Urgency::Normal, now), Some(POLL));
    }

    /// Realistic 1000 (bench, 408068d): a cache's create was followed by its grant up to 70 s (real) later: the look
    /// right after the create was stretched like a poll while the create storm kept the queue late, then waited
    /// behind new objects' work. Azure's window (and the reaction figure) starts at the create.
    #[test]
    fn the_follow_up_of_an_action_is_not_stretched_and_goes_before_new_work() {
        let (pacer, now) = deferred_for_long();
        assert!(pacer.requeue("poll", Next::Poll(POLL), Urgency::Normal, now).unwrap() > POLL * 4);
        let start = Duration::from_millis(100);
        assert_eq!(pacer.requeue("new", Next::Start(start), Urgency::Normal, now), Some(start));
        assert_eq!(pacer.requeue("created", Next::FollowUp, Urgency::Normal, now), Some(FOLLOW_UP));
        let normal = |holder: &str| Caller { holder: holder.into(), urgency: Urgency::Normal };
        assert_eq!(pacer.slot_urgency(&normal("created"), true), Urgency::Urgent);
        assert_eq!(pacer.slot_urgency(&normal("new"), true), Urgency::Normal, "its create waits its turn");
        assert_eq!(pacer.slot_urgency(&normal("unseen"), false), Urgency::Urgent, "acknowledged at once");
        pacer.started("created", now + FOLLOW_UP);
        assert_eq!(pacer.slot_urgency(&normal("created"), true), Urgency::Normal, "once: its next poll is a poll");
        assert_eq!(pacer.requeue("gone", Next::Change, Urgency::Normal, now), None);
    }

    #[test]
    fn objects_sharing_a_list_take_turns_reading_it() {
        let ceiling = Duration::from_secs(600);
        assert_eq!(spread(POLL, 1, ceiling), POLL, "alone: its own poll");
        assert_eq!(spread(POLL, 4, ceiling), POLL, "a few: each still polls");
        let polls: Vec<Duration> = (0..2000).map(|_| spread(POLL, 100, ceiling)).collect();
        assert!(polls.iter().all(|p| *p >= POLL && *p <= POLL * 25), "between the poll and 100/4 polls");
        // Spread out, not bunched: about 2 × LIST_TURNS of the 100 per poll interval.
        let per_poll: f64 = polls.iter().map(|p| POLL.as_secs_f64() / p.as_secs_f64()).sum::<f64>() / 20.0;
        assert!((4.0..16.0).contains(&per_poll), "{per_poll} per poll interval per 100 objects");
        let many: Vec<Duration> = (0..100).map(|_| spread(POLL, 10_000, ceiling)).collect();
        assert!(many.iter().all(|p| *p <= ceiling), "never past the resync");
    }

    #[test]
    fn requeues_of_objects_that_are_gone_are_forgotten() {
        let pacer = Pacer::new(Duration::from_secs(60));
        let t0 = Instant::now();
        pacer.requeue("gone", Next::Poll(POLL), Urgency::Normal, t0);
        pacer.requeue("polled", Next::Poll(POLL), Urgency::Normal, t0 + Duration::from_secs(60));
        pacer.started("other", t0 + Duration::from_secs(90));
        let due = &pacer.lock().due;
        assert!(!due.contains_key("gone") && due.contains_key("polled"), "{:?}", due.keys());
    }

    #[test]
    fn long_waits_for_the_arm_budget_stretch_polls_too() {
        let (pacer, _) = deferred_for_long();
        assert!(pacer.stretch() > 4.0, "{}", pacer.stretch());
    }
}

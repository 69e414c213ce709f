//! Client-side token buckets, one pair (reads, writes) per subscription and principal, so the operator stays below
//! ARM's throttling limits instead of discovering them through 429s. ARM partitions its own buckets the same way
//! ("per subscription and principal"): each namespace credential has its own budget, and two clients acting as
//! one principal share theirs.
//!
//! A call made inside a reconcile ([`with_caller`]) never sleeps for a token: it gets a *ticket*, the time its token
//! will be there (FIFO behind earlier tickets), and returns [`AzureError::Deferred`](crate::AzureError::Deferred)
//! so the reconcile gives its slot back and is requeued for that moment; the ticket is honoured when it returns.
//! Routine work ([`Urgency::Routine`]: steady-state resyncs) leaves a share of the bucket untouched for work that
//! Azure's deadlines depend on, and takes no ticket: it comes back later.

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
    /// How long a ticket is honoured after it is due (see [`TokenBucket::take`]).
    expiry: Duration,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
    /// Reserved tokens by holder: when each becomes usable, and for what urgency.
    tickets: HashMap<String, (Instant, Urgency)>,
}

/// How much a call matters for Azure's deadlines; decides how much of a bucket it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// Steady-state work (resyncs of Ready objects): never uses the last [`ROUTINE_HEADROOM`] of a bucket.
    Routine,
    /// The first look of an object whose cache was never acted on (the GET that confirms it absent): queued behind
    /// the progress of caches already on their way, so thousands of new objects do not hold that progress back.
    Starting,
    /// Progress of a new or changing object (creates, polls while creating).
    Normal,
    /// Work a deadline depends on (a cache waiting for its key: the grant and the polls that lead to it).
    Urgent,
}

/// The share of a bucket routine work leaves for the rest.
pub const ROUTINE_HEADROOM: f64 = 0.3;

/// A ticket not used this long after it became usable is dropped (its holder went away or needed no call); sooner
/// when the bucket holds fewer than this many seconds of tokens.
pub const TICKET_EXPIRY: Duration = Duration::from_secs(60);

/// Who is calling: the object a reconcile is about (holder of its tickets) and how urgent its work is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub holder: String,
    pub urgency: Urgency,
}

tokio::task_local! {
    static CALLER: Caller;
    /// Set inside [`patiently`].
    static PATIENT: ();
}

/// Runs `f` as `caller`: its rate-limited Azure calls defer (return at once) instead of sleeping for tokens.
pub async fn with_caller<F: std::future::Future>(caller: Caller, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// The caller of the current task, if it runs inside [`with_caller`] (and not inside [`patiently`]).
pub fn current_caller() -> Option<Caller> {
    if is_patient() {
        return None;
    }
    CALLER.try_with(Clone::clone).ok()
}

/// Runs `f` waiting for tokens (and 429s) as outside a reconcile, ahead of normal tickets: for the later pages of
/// a list whose first page was read, since deferring would throw the pages already read away.
pub(crate) async fn patiently<F: std::future::Future>(f: F) -> F::Output {
    PATIENT.scope((), f).await
}

/// Whether the current task runs inside [`patiently`].
pub(crate) fn is_patient() -> bool {
    PATIENT.try_with(|_| ()).is_ok()
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: f64, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        let rate = rate_per_second.max(f64::MIN_POSITIVE);
        // A ticket is honoured only while ARM's own bucket could have kept its token: a full bucket's worth of
        // time after it was due. Tickets honoured later than that came back together after a stall and went past
        // ARM's capacity (429 bursts at 10,000 caches).
        let expiry = TICKET_EXPIRY.min(Duration::from_secs_f64(capacity / rate));
        Self {
            capacity,
            rate,
            expiry,
            state: Mutex::new(BucketState { tokens: capacity, last: Instant::now(), tickets: HashMap::new() }),
        }
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, BucketState> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(self.capacity);
        s.last = now.max(s.last);
        s
    }

    /// Take one token at `now`; returns how long the caller must wait before using it.
    pub fn reserve_at(&self, now: Instant) -> Duration {
        let mut s = self.refilled(now);
        s.tokens -= 1.0;
        if s.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-s.tokens / self.rate) }
    }

    /// A token for `caller` at `now`, without waiting: `Ok` to call now, or `Err(wait)` to come back after `wait`.
    /// Starting, normal and urgent callers get a ticket (a reserved token) that a later `take` honours once due:
    /// first come first served within a level, ahead of every less urgent ticket not yet due (which each move back
    /// by one token). Routine callers leave [`ROUTINE_HEADROOM`] of the bucket and take no ticket.
    pub fn take(&self, caller: &Caller, now: Instant) -> Result<(), Duration> {
        let mut s = self.refilled(now);
        let expiry = self.expiry;
        s.tickets.retain(|_, (due, _)| now.saturating_duration_since(*due) < expiry);
        if let Some(&(due, urgency)) = s.tickets.get(&caller.holder) {
            if now >= due {
                s.tickets.remove(&caller.holder);
                return Ok(());
            }
            if urgency >= caller.urgency {
                return Err(due - now);
            }
            // The work became urgent while it waited: give the token back and queue again, ahead.
            s.tickets.remove(&caller.holder);
            s.tokens += 1.0;
        }
        let floor = if caller.urgency == Urgency::Routine { self.capacity * ROUTINE_HEADROOM } else { 0.0 };
        if s.tokens - 1.0 >= floor {
            s.tokens -= 1.0;
            return Ok(());
        }
        let step = Duration::from_secs_f64(1.0 / self.rate);
        if caller.urgency == Urgency::Routine {
            return Err(Duration::from_secs_f64((floor + 1.0 - s.tokens) / self.rate));
        }
        let ahead = Self::go_ahead(&mut s, now, step, caller.urgency);
        if ahead >= 0.0 {
            return Ok(());
        }
        let due = now + Duration::from_secs_f64(-ahead / self.rate);
        s.tickets.insert(caller.holder.clone(), (due, caller.urgency));
        Err(due - now)
    }

    /// Takes a token for work of `level`, ahead of the tickets of less urgent work not yet due (each moves back by
    /// one `step`); returns the tokens left ahead of the caller (negative: it waits that many tokens). Tickets of
    /// work as urgent or more count against it, and a ticket already due keeps its token (its holder may send at
    /// any moment).
    fn go_ahead(s: &mut BucketState, now: Instant, step: Duration, level: Urgency) -> f64 {
        let ahead_of = |due: Instant, urgency: Urgency| urgency < level && due > now;
        let behind = s.tickets.values().filter(|(due, u)| ahead_of(*due, *u)).count() as f64;
        s.tokens -= 1.0;
        for (due, urgency) in s.tickets.values_mut() {
            if ahead_of(*due, *urgency) {
                *due += step;
            }
        }
        s.tokens + behind
    }

    /// Take one token ahead of the normal tickets (as urgent work does), sleeping until it is available: for the
    /// later pages of a list whose first page was read, which would otherwise wait behind every ticket booked
    /// meanwhile (minutes at 10,000 caches, holding the list for everyone).
    pub async fn acquire_ahead(&self) {
        let wait = self.reserve_ahead_at(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The reservation of [`Self::acquire_ahead`] at `now`: how long to wait for the token.
    fn reserve_ahead_at(&self, now: Instant) -> Duration {
        let step = Duration::from_secs_f64(1.0 / self.rate);
        let ahead = Self::go_ahead(&mut self.refilled(now), now, step, Urgency::Urgent);
        if ahead >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-ahead / self.rate) }
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
        // Tokens already promised to tickets are not in Azure's count either.
        let remaining = remaining as f64 - s.tickets.len() as f64;
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

/// The ARM writes a new cache takes before it is Ready: its PUT and the grant of its key (one each).
const WRITES_PER_START: f64 = 2.0;

/// How long a start stays admitted (see [`Starts::take`]): a start whose first read the read budget defers comes
/// back within this, without queueing again.
const ADMITTED_FOR: Duration = Duration::from_secs(60);

/// The line of new caches to their first look at Azure (the GET that confirms a cache absent, then its create),
/// paced to the write budget: one start per [`WRITES_PER_START`] write tokens. Starting faster than the writes can
/// follow only books reads, and holds absences, minutes ahead of creates that cannot go sooner (at 10,000 new
/// objects the absence GETs alone booked the read budget seven minutes ahead). One line per subscription and
/// principal, as the write budget it follows.
#[derive(Debug)]
pub struct Starts {
    bucket: TokenBucket,
    /// Holders admitted lately, and when.
    admitted: Mutex<HashMap<String, Instant>>,
}

impl Starts {
    fn new(writes_per_second: f64, write_burst: u32) -> Self {
        let burst = (f64::from(write_burst) / WRITES_PER_START).ceil() as u32;
        let bucket = TokenBucket::new(writes_per_second / WRITES_PER_START, burst);
        // Not an ARM budget: a start comes back late without harm, so its place is kept as long as any ticket's.
        let bucket = TokenBucket { expiry: TICKET_EXPIRY, ..bucket };
        Self { bucket, admitted: Mutex::new(HashMap::new()) }
    }

    /// Whether `caller` may start now, or `Err(wait)`: its place in line (FIFO, as [`TokenBucket::take`]). An
    /// admitted caller stays admitted for [`ADMITTED_FOR`], so asking again costs no second place.
    pub fn take(&self, caller: &Caller, now: Instant) -> Result<(), Duration> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if admitted.get(&caller.holder).is_some_and(|at| now.saturating_duration_since(*at) < ADMITTED_FOR) {
            return Ok(());
        }
        self.bucket.take(caller, now)?;
        admitted.retain(|_, at| now.saturating_duration_since(*at) < ADMITTED_FOR);
        admitted.insert(caller.holder.clone(), now);
        Ok(())
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
    starts: Mutex<HashMap<(String, String), Arc<Starts>>>,
}

impl ArmLimiter {
    pub fn new(reads_per_second: f64, read_burst: u32, writes_per_second: f64, write_burst: u32) -> Self {
        Self {
            read: (reads_per_second, read_burst),
            write: (writes_per_second, write_burst),
            buckets: Mutex::new(HashMap::new()),
            starts: Mutex::new(HashMap::new()),
        }
    }

    /// The [`Starts`] line of `principal` and `subscription` (case-insensitive), paced to their write bucket.
    pub fn starts(&self, principal: &str, subscription: &str) -> Arc<Starts> {
        let mut m = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        let (rate, burst) = self.write;
        m.entry((principal.to_ascii_lowercase(), subscription.to_ascii_lowercase()))
            .or_insert_with(|| Arc::new(Starts::new(rate, burst)))
            .clone()
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

    fn caller(holder: &str, urgency: Urgency) -> Caller {
        Caller { holder: holder.into(), urgency }
    }

    #[test]
    fn a_caller_without_a_token_gets_a_ticket_in_fifo_order_instead_of_sleeping() {
        let b = TokenBucket::new(10.0, 2);
        let t0 = Instant::now();
        assert_eq!(b.take(&caller("a", Urgency::Normal), t0), Ok(()));
        assert_eq!(b.take(&caller("b", Urgency::Normal), t0), Ok(()));
        // Empty: c and d are told when their reserved tokens will be there, in the order they asked.
        assert_eq!(b.take(&caller("c", Urgency::Normal), t0), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&caller("d", Urgency::Normal), t0), Err(Duration::from_millis(200)));
        // Asking again early does not take a second token; the wait shrinks.
        assert_eq!(
            b.take(&caller("c", Urgency::Normal), t0 + Duration::from_millis(40)),
            Err(Duration::from_millis(60))
        );
        // Once due, the ticket is honoured whatever the balance, exactly once.
        assert_eq!(b.take(&caller("c", Urgency::Normal), t0 + Duration::from_millis(100)), Ok(()));
        assert_eq!(b.take(&caller("d", Urgency::Normal), t0 + Duration::from_millis(200)), Ok(()));
        assert!(
            b.take(&caller("c", Urgency::Normal), t0 + Duration::from_millis(200)).is_err(),
            "a new token is needed"
        );
    }

    #[test]
    fn urgent_work_goes_ahead_of_normal_tickets_which_each_move_back_one_token() {
        let b = TokenBucket::new(10.0, 1);
        let t0 = Instant::now();
        assert_eq!(b.take(&caller("a", Urgency::Normal), t0), Ok(()));
        assert_eq!(b.take(&caller("n1", Urgency::Normal), t0), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&caller("n2", Urgency::Normal), t0), Err(Duration::from_millis(200)));
        // A grant for a cache whose window runs: first in line, the normal tickets one token later each.
        assert_eq!(b.take(&caller("u1", Urgency::Urgent), t0), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&caller("u2", Urgency::Urgent), t0), Err(Duration::from_millis(200)));
        assert_eq!(b.take(&caller("n1", Urgency::Normal), t0), Err(Duration::from_millis(300)));
        assert_eq!(b.take(&caller("n2", Urgency::Normal), t0), Err(Duration::from_millis(400)));
        // Spent exactly once each, in that order: never more than the bucket allows.
        for (holder, at) in [("u1", 100), ("u2", 200), ("n1", 300), ("n2", 400)] {
            assert_eq!(b.take(&caller(holder, Urgency::Normal), t0 + Duration::from_millis(at)), Ok(()), "{holder}");
        }
        assert!(b.available_at(t0 + Duration::from_millis(400)) < 0.5);
    }

    /// `n` normal callers `n0`, `n1`, ... find the bucket empty at `t0`: each books a ticket.
    fn book(b: &TokenBucket, n: usize, t0: Instant) {
        for i in 0..n {
            assert!(b.take(&caller(&format!("n{i}"), Urgency::Normal), t0).is_err(), "n{i}");
        }
    }

    #[test]
    fn urgent_work_does_not_go_ahead_of_tickets_already_due() {
        let b = TokenBucket::new(10.0, 10);
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(b.take(&caller(&format!("a{i}"), Urgency::Normal), t0), Ok(()));
        }
        book(&b, 10, t0);
        // A second later all ten tickets are due and none is used yet: each may be sent at any moment, so their
        // tokens are spoken for. Urgent work queues behind them (at 10,000 caches, hundreds of urgent calls went at
        // once here and were answered 429).
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.take(&caller("u1", Urgency::Urgent), t1), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&caller("u2", Urgency::Urgent), t1), Err(Duration::from_millis(200)));
        for i in 0..10 {
            assert_eq!(b.take(&caller(&format!("n{i}"), Urgency::Normal), t1), Ok(()), "n{i} keeps its token");
        }
    }

    #[test]
    fn later_pages_of_a_list_go_ahead_of_normal_tickets() {
        let b = TokenBucket::new(10.0, 1);
        let t0 = Instant::now();
        assert_eq!(b.take(&caller("a", Urgency::Normal), t0), Ok(()));
        book(&b, 50, t0);
        // Fifty tickets (5 s of tokens) are booked; the next page waits one token, not fifty.
        assert_eq!(b.reserve_ahead_at(t0), Duration::from_millis(100));
        assert_eq!(
            b.take(&caller("n0", Urgency::Normal), t0 + Duration::from_millis(100)),
            Err(Duration::from_millis(100)),
            "the first ticket moved back by the page's token"
        );
    }

    #[test]
    fn tickets_come_back_no_later_than_a_full_bucket_could_have_kept_their_tokens() {
        // 2 tokens, 1 per second: the bucket holds 2 s of tokens.
        let b = TokenBucket::new(1.0, 2);
        let t0 = Instant::now();
        for holder in ["a", "b"] {
            assert_eq!(b.take(&caller(holder, Urgency::Normal), t0), Ok(()));
        }
        for holder in ["late", "later"] {
            assert!(b.take(&caller(holder, Urgency::Normal), t0).is_err());
        }
        // "late" is due at 1 s and comes back at 2.5 s: honoured, no new token taken.
        let at = t0 + Duration::from_millis(2500);
        assert_eq!(b.take(&caller("late", Urgency::Normal), at), Ok(()));
        assert!((b.available_at(at) - 0.5).abs() < 1e-9, "{}", b.available_at(at));
        // "later" (due at 2 s) comes back at 4.5 s: its ticket is gone, so it spends a token of the refilled bucket.
        let at = t0 + Duration::from_millis(4500);
        assert_eq!(b.take(&caller("later", Urgency::Normal), at), Ok(()));
        assert!((b.available_at(at) - 1.0).abs() < 1e-9, "{}", b.available_at(at));
    }

    #[test]
    fn normal_work_goes_ahead_of_starting_tickets() {
        let b = TokenBucket::new(10.0, 1);
        let t0 = Instant::now();
        assert_eq!(b.take(&caller("a", Urgency::Normal), t0), Ok(()));
        assert_eq!(b.take(&caller("s1", Urgency::Starting), t0), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&caller("s2", Urgency::Starting), t0), Err(Duration::from_millis(200)));
        // The progress of a cache on its way goes before new objects' first looks, urgent work before both.
        assert_eq!(b.take(&caller("n", Urgency::Normal), t0), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&caller("u", Urgency::Urgent), t0), Err(Duration::from_millis(100)));
        for (holder, at) in [("u", 100), ("n", 200), ("s1", 300), ("s2", 400)] {
            let c = caller(holder, Urgency::Starting);
            assert!(b.take(&c, t0 + Duration::from_millis(at) - Duration::from_millis(1)).is_err(), "{holder}");
            assert_eq!(b.take(&c, t0 + Duration::from_millis(at)), Ok(()), "{holder}");
        }
    }

    #[test]
    fn work_that_became_urgent_while_waiting_moves_ahead() {
        let b = TokenBucket::new(10.0, 1);
        let t0 = Instant::now();
        assert_eq!(b.take(&caller("a", Urgency::Normal), t0), Ok(()));
        book(&b, 5, t0);
        assert_eq!(b.take(&caller("g", Urgency::Normal), t0), Err(Duration::from_millis(600)));
        // The same object now wants a grant: it goes ahead of the five, without a second token.
        assert_eq!(b.take(&caller("g", Urgency::Urgent), t0), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&caller("g", Urgency::Urgent), t0 + Duration::from_millis(100)), Ok(()));
        assert_eq!(
            b.take(&caller("n4", Urgency::Normal), t0),
            Err(Duration::from_millis(600)),
            "still six tokens in all"
        );
    }

    #[test]
    fn routine_work_leaves_headroom_and_takes_no_ticket() {
        let b = TokenBucket::new(10.0, 10);
        let t0 = Instant::now();
        for i in 0..7 {
            assert_eq!(b.take(&caller(&format!("r{i}"), Urgency::Routine), t0), Ok(()), "{i}");
        }
        // 3 tokens left = the 30% headroom: routine waits, and its wait is when the headroom is restored.
        assert_eq!(b.take(&caller("r7", Urgency::Routine), t0), Err(Duration::from_millis(100)));
        assert_eq!(b.take(&caller("r7", Urgency::Routine), t0), Err(Duration::from_millis(100)), "no ticket taken");
        // Urgent work still has the headroom.
        for i in 0..3 {
            assert_eq!(b.take(&caller(&format!("u{i}"), Urgency::Urgent), t0), Ok(()));
        }
    }

    #[test]
    fn an_unused_ticket_expires() {
        let b = TokenBucket::new(1.0, 1);
        let t0 = Instant::now();
        assert_eq!(b.take(&caller("a", Urgency::Normal), t0), Ok(()));
        assert!(b.take(&caller("gone", Urgency::Normal), t0).is_err());
        let later = t0 + Duration::from_secs(1) + TICKET_EXPIRY + Duration::from_secs(1);
        assert_eq!(b.take(&caller("a", Urgency::Normal), later), Ok(()));
        assert!(b.state.lock().unwrap().tickets.is_empty());
    }

    #[tokio::test]
    async fn the_caller_is_visible_only_inside_with_caller() {
        assert_eq!(current_caller(), None);
        let c = caller("HpcCache/ns/a", Urgency::Urgent);
        assert_eq!(with_caller(c.clone(), async { current_caller() }).await, Some(c));
    }

    #[test]
    fn new_caches_start_at_the_pace_of_their_writes_and_keep_their_place_once_admitted() {
        // 8 writes per second, a burst of 4: two starts at once, then one each quarter second (two writes each).
        let l = ArmLimiter::new(20.0, 3, 8.0, 4);
        let starts = l.starts("t/p", "SUB");
        assert!(Arc::ptr_eq(&starts, &l.starts("T/P", "sub")), "one line per principal and subscription");
        let t0 = Instant::now();
        assert_eq!(starts.take(&caller("a", Urgency::Normal), t0), Ok(()));
        assert_eq!(starts.take(&caller("b", Urgency::Normal), t0), Ok(()));
        assert_eq!(starts.take(&caller("c", Urgency::Normal), t0), Err(Duration::from_millis(250)));
        assert_eq!(starts.take(&caller("d", Urgency::Normal), t0), Err(Duration::from_millis(500)));
        // "a" comes back (its GET was deferred): still admitted, nobody moves back.
        assert_eq!(starts.take(&caller("a", Urgency::Normal), t0 + Duration::from_millis(100)), Ok(()));
        assert_eq!(starts.take(&caller("d", Urgency::Normal), t0), Err(Duration::from_millis(500)));
        // "c" comes back half a minute late: a start is no ARM call, so its place was kept.
        let late = t0 + Duration::from_secs(30);
        assert_eq!(starts.take(&caller("c", Urgency::Normal), late), Ok(()));
        assert!((starts.bucket.available_at(late) - 2.0).abs() < 1e-9, "c spent its ticket, not a new token");
        // Long after, "a" starts again only with a place of its own.
        let much_later = t0 + ADMITTED_FOR + Duration::from_secs(1);
        assert_eq!(starts.take(&caller("a", Urgency::Normal), much_later), Ok(()));
        assert!((starts.bucket.available_at(much_later) - 1.0).abs() < 1e-9, "a took a token");
        // The write bucket itself is untouched.
        assert_eq!(l.bucket("t/p", "sub", Access::Write).available_at(t0), 4.0);
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

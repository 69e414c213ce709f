//! Client-side token buckets, one pair (reads, writes) per subscription and principal, so the operator stays below
//! ARM's throttling limits instead of discovering them through 429s. ARM partitions its own buckets the same way
//! ("per subscription and principal"): each namespace credential has its own budget, and two clients acting as
//! one principal share theirs.
//!
//! A call made inside a reconcile ([`with_caller`]) never sleeps for a token: it gets a *ticket*, the time its token
//! will be there (FIFO behind earlier tickets), and returns [`AzureError::Deferred`](crate::AzureError::Deferred)
//! so the reconcile gives its slot back and is requeued for that moment; the ticket is honoured when it returns.
//! Routine work ([`Urgency::Routine`]: steady-state resyncs) leaves a share of the bucket untouched for work that
//! Azure's deadlines depend on, and takes no ticket: it comes back later. A new cache's start takes the token of its
//! create ahead of the call ([`TokenBucket::prepay`]), behind every other write, so new caches start on the writes
//! left over.

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
    /// Tokens taken ahead of the call they pay for (see [`TokenBucket::prepay`]), by holder: since when.
    prepaid: HashMap<String, Instant>,
}

/// How much a call matters for Azure's deadlines; decides how much of a bucket it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// Steady-state work (resyncs of Ready objects): never uses the last [`ROUTINE_HEADROOM`] of a bucket.
    Routine,
    /// The start of an object whose cache was never acted on: the write token prepaid for its create (its place in
    /// the line of new caches) and the GET that confirms it absent. Queued behind the progress of caches already on
    /// their way, so thousands of new objects do not hold that progress back, and new caches start as fast as the
    /// writes left over allow.
    Starting,
    /// Progress of a new or changing object (creates, polls while creating).
    Normal,
    /// Work a deadline depends on (a cache waiting for its key: the grant and the polls that lead to it).
    Urgent,
}

/// How long a prepaid token waits for its call (see [`TokenBucket::prepay`]) before it is given back.
pub const PREPAID_FOR: Duration = Duration::from_secs(60);

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
            state: Mutex::new(BucketState {
                tokens: capacity,
                last: Instant::now(),
                tickets: HashMap::new(),
                prepaid: HashMap::new(),
            }),
        }
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, BucketState> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(self.capacity);
        s.last = now.max(s.last);
        // A prepaid token whose call never came was never spent at ARM: it goes back.
        let before = s.prepaid.len();
        s.prepaid.retain(|_, at| now.saturating_duration_since(*at) < PREPAID_FOR);
        let unused = (before - s.prepaid.len()) as f64;
        s.tokens = (s.tokens + unused).min(self.capacity);
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
    /// by one token). Routine callers leave [`ROUTINE_HEADROOM`] of the bucket and take no ticket. A token the
    /// caller prepaid is spent first.
    pub fn take(&self, caller: &Caller, now: Instant) -> Result<(), Duration> {
        let mut s = self.refilled(now);
        if s.prepaid.remove(&caller.holder).is_some() {
            return Ok(());
        }
        self.take_from(&mut s, caller, now)
    }

    /// Takes a token for `caller`'s next call, whenever it comes within [`PREPAID_FOR`] (its next [`Self::take`]
    /// spends it): `Ok` once paid, or `Err(wait)` for its place in line, as [`Self::take`]. Asking again while
    /// prepaid costs nothing.
    pub fn prepay(&self, caller: &Caller, now: Instant) -> Result<(), Duration> {
        let mut s = self.refilled(now);
        if s.prepaid.contains_key(&caller.holder) {
            return Ok(());
        }
        self.take_from(&mut s, caller, now)?;
        s.prepaid.insert(caller.holder.clone(), now);
        Ok(())
    }

    /// How long `holder`'s ticket has still to wait, if it holds one not yet due: to send it back to its place
    /// without the reads it would make first.
    pub fn ticket_wait(&self, holder: &str, now: Instant) -> Option<Duration> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.tickets.get(holder).and_then(|(due, _)| due.checked_duration_since(now)).filter(|w| !w.is_zero())
    }

    fn take_from(&self, s: &mut BucketState, caller: &Caller, now: Instant) -> Result<(), Duration> {
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
        let ahead = Self::go_ahead(s, now, step, caller.urgency);
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
        // Tokens already promised to tickets, or prepaid, are not in Azure's count either.
        let remaining = remaining as f64 - s.tickets.len() as f64 - s.prepaid.len() as f64;
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
    fn new_caches_start_with_the_writes_left_over_and_their_create_spends_the_prepaid_token() {
        // 8 writes per second, a burst of 2: two starts at once, then the line.
        let b = TokenBucket::new(8.0, 2);
        let t0 = Instant::now();
        let start = |holder| caller(holder, Urgency::Starting);
        assert_eq!(b.prepay(&start("a"), t0), Ok(()));
        // "a" asks again (its GET was deferred): still paid, no second token.
        assert_eq!(b.prepay(&start("a"), t0), Ok(()));
        assert_eq!(b.prepay(&start("b"), t0), Ok(()));
        assert_eq!(b.prepay(&start("c"), t0), Err(Duration::from_millis(125)));
        assert_eq!(b.prepay(&start("d"), t0), Err(Duration::from_millis(250)));
        // A grant goes ahead of the starts in line, which each move back one token.
        assert_eq!(b.take(&caller("g", Urgency::Urgent), t0), Err(Duration::from_millis(125)));
        assert_eq!(b.prepay(&start("c"), t0 + Duration::from_millis(125)), Err(Duration::from_millis(125)));
        // The create of "a" spends its prepaid token: nothing more is taken, nobody moves.
        let before = b.available_at(t0);
        assert_eq!(b.take(&caller("a", Urgency::Normal), t0), Ok(()));
        assert_eq!(b.available_at(t0), before);
        assert_eq!(b.take(&caller("g", Urgency::Urgent), t0 + Duration::from_millis(125)), Ok(()));
        assert_eq!(b.prepay(&start("c"), t0 + Duration::from_millis(250)), Ok(()));
        // Once spent, the next call of "a" takes a token like any other.
        assert!(b.take(&caller("a", Urgency::Normal), t0 + Duration::from_millis(250)).is_err());
    }

    #[test]
    fn a_prepaid_token_never_spent_goes_back() {
        // One token, refilled once in 1000 s.
        let b = TokenBucket::new(0.001, 1);
        let t0 = Instant::now();
        assert_eq!(b.prepay(&caller("x", Urgency::Starting), t0), Ok(()));
        let later = t0 + PREPAID_FOR + Duration::from_secs(1);
        // "x" never sent its create: the token is there for someone else, and "x" has none left.
        assert_eq!(b.take(&caller("y", Urgency::Normal), later), Ok(()));
        assert!(b.take(&caller("x", Urgency::Normal), later).is_err());
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

//! The read budget: what was read from Azure recently, so that reads are spent where they buy reaction time
//! (ARM throttles per subscription and principal). There is one per principal (the operator's, and each namespace
//! credential's: see [`credentials`](super::credentials)), so nothing read by one principal is shown to another.
//!
//! - What the spec references (vault, key, identity) changes rarely: kept for the facts TTL, keyed by
//!   [`References`](super::observation::References), the very value the reads are made from.
//! - Caches are read as one paged list per resource group, shared by every reconcile within half a poll interval
//!   (so N caches cost about two list reads per poll, not N), also absorbing the watch echo of the operator's own
//!   status writes. A list read before an action on a cache does not speak for that cache (a newer list is read);
//!   a cache missing from a list is confirmed with a GET before anyone believes it is gone. That GET's "absent"
//!   stands as long as a list would, and for a create deferred by the write budget until its turn (see
//!   [`RecentReads::hold_absent`]), unless the cache is acted on or a list shows it first.
//! - Reads many reconciles want at once (a list, what a spec references) are [`SharedRead`]s: one reconcile reads
//!   while the others wait for its answer, also when the read budget defers it (see [`RecentReads::turn`]).
//! - Steady-state resyncs ([`Urgency::Routine`]) accept reads up to half a resync old, so Ready objects cost a few
//!   shared reads per resync, whatever their number.
//! - A vault seen protected stays protected: Azure refuses to turn purge protection off again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hpcc_azure::{Cache, Dated, ResourceId, Urgency};

use super::observation::Referenced;

/// A small map whose entries expire `ttl` after they were written.
struct TtlMap<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlMap<V> {
    fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The value and when it was written, if less than `max_age` ago (and within the map's `ttl`).
    fn get(&self, key: &str, max_age: Duration) -> Option<(Instant, V)> {
        let max_age = max_age.min(self.ttl);
        locked(&self.entries).get(key).filter(|(at, _)| at.elapsed() < max_age).map(|(at, v)| (*at, v.clone()))
    }

    fn put(&self, key: String, value: V) {
        let mut entries = locked(&self.entries);
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(key, (Instant::now(), value));
    }
}

/// How old a read may be: what the spec references (`facts`), a resource group's cache list (`cache_list`), and
/// either for steady-state work (`routine`, at least the other two).
#[derive(Clone, Copy, Debug)]
pub struct Freshness {
    pub facts: Duration,
    pub cache_list: Duration,
    pub routine: Duration,
}

pub struct RecentReads {
    referenced: TtlMap<Referenced>,
    /// Lists by resource group, with the moment their read began and how long it took.
    cache_lists: TtlMap<(Instant, Duration, Arc<CacheList>)>,
    /// When each cache (lower-case id) was last acted on.
    acted: Mutex<HashMap<String, Instant>>,
    /// Caches (lower-case id) a GET found absent: when that GET began, and until when its answer stands.
    absent: Mutex<HashMap<String, (Instant, Instant)>>,
    /// One read at a time of each [`SharedRead`].
    read_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Shared reads the read budget deferred (see [`RecentReads::turn`]).
    turns: Mutex<HashMap<String, Turn>>,
    /// Objects (holders) waiting for another's deferred shared read, and since when: any answer read after that
    /// speaks for them once.
    waiters: Mutex<HashMap<String, Instant>>,
    /// The objects waiting for their caches' progress in each resource group's list (see [`RecentReads::waiting`]).
    waiting: Mutex<HashMap<String, Waiting>>,
    protected_vaults: Mutex<HashSet<String>>,
    facts_ttl: Duration,
    cache_list_ttl: Duration,
    routine_ttl: Duration,
}

impl RecentReads {
    pub fn new(fresh: Freshness) -> Self {
        let (facts_ttl, cache_list_ttl) = (fresh.facts, fresh.cache_list);
        let routine_ttl = fresh.routine.max(facts_ttl).max(cache_list_ttl);
        Self {
            referenced: TtlMap::new(routine_ttl),
            cache_lists: TtlMap::new(routine_ttl),
            acted: Default::default(),
            absent: Default::default(),
            read_locks: Default::default(),
            turns: Default::default(),
            waiters: Default::default(),
            waiting: Default::default(),
            protected_vaults: Default::default(),
            facts_ttl,
            cache_list_ttl,
            routine_ttl,
        }
    }

    /// How old a read the current reconcile accepts: steady-state work (its [`Urgency`], from the task's
    /// [`hpcc_azure::Caller`]) takes reads up to the routine TTL.
    fn max_age(&self, fresh: Duration) -> Duration {
        let routine = hpcc_azure::current_caller().is_some_and(|c| c.urgency == Urgency::Routine);
        if routine { self.routine_ttl } else { fresh }
    }

    /// What a spec references, if read recently enough (or read after the current reconcile was told to wait for
    /// that read, see [`Self::turn`]).
    pub fn referenced(&self, key: &str) -> Option<Referenced> {
        if let Some((_, r)) = self.referenced.get(key, self.max_age(self.facts_ttl)) {
            return Some(r);
        }
        let (written, r) = self.referenced.get(key, self.routine_ttl)?;
        self.waited_for(written).then_some(r)
    }

    /// The reads of what a spec references (`key` as in [`Self::referenced`]), as a [`SharedRead`].
    pub fn referenced_read(key: &str) -> SharedRead {
        SharedRead(format!("referenced|{key}"))
    }

    pub fn remember_referenced(&self, key: String, value: Referenced) {
        self.referenced.put(key, value);
    }

    /// The recent list of a cache's resource group, if it speaks for the cache: young enough for the current
    /// reconcile (or begun after it was told to wait for that read, see [`Self::turn`]), and read after the last
    /// action on the cache.
    pub fn cache_list(&self, cache: &ResourceId) -> Option<Arc<CacheList>> {
        let acted = locked(&self.acted).get(&cache_key(cache)).copied();
        let speaks = |started: Instant| acted.is_none_or(|at| at < started);
        let (read_at, (started, took, list)) = self.cache_lists.get(&list_key(cache), self.routine_ttl)?;
        // A list is fresh at least until the next may begin (see `list_spacing`): otherwise an object sent away
        // until then would find it stale, and each list would serve only the objects that waited during its read.
        let fresh =
            read_at.elapsed() < self.max_age(self.cache_list_ttl) || Instant::now() < self.next_list(started, took);
        if fresh && speaks(started) {
            return Some(list);
        }
        (speaks(started) && self.waited_for(started)).then_some(list)
    }

    /// How long until a cache's resource group may be listed again, if not yet: [`LIST_SPACING`] times as long as
    /// its last list took, after that list began. Small lists take milliseconds and are read as often as polls ask;
    /// a list of many pages (ten 1000-cache pages at 10,000 caches) read back to back kept two cores busy parsing
    /// caches that had not changed.
    pub fn list_spacing(&self, cache: &ResourceId) -> Option<Duration> {
        let (_, (started, took, _)) = self.cache_lists.get(&list_key(cache), self.routine_ttl)?;
        let next = self.next_list(started, took);
        next.checked_duration_since(Instant::now()).filter(|w| !w.is_zero())
    }

    /// When the list after one begun at `started` that took `took` may begin: spaced only when reading it took
    /// longer than it stays fresh (the realistic 1000-cache bench, whose one-page list takes about a tenth of its
    /// freshness, reacted 3.4 times slower with every list spaced).
    fn next_list(&self, started: Instant, took: Duration) -> Instant {
        if took > self.cache_list_ttl { started + took.mul_f64(LIST_SPACING) } else { started }
    }

    /// The read of a cache's resource group list, as a [`SharedRead`].
    pub fn list_read(cache: &ResourceId) -> SharedRead {
        SharedRead(format!("list|{}", list_key(cache)))
    }

    /// The lock a reconcile holds while it makes a shared read, so the others wait for its answer instead of
    /// repeating it.
    pub fn read_lock(&self, read: &SharedRead) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = locked(&self.read_locks);
        locks.entry(read.0.clone()).or_default().clone()
    }

    /// Whether the current reconcile should wait for a shared read the read budget deferred for another object,
    /// instead of booking a read of its own: how long, if so. Each waiter booking its own ticket for the same read
    /// would spend the read budget many times over (at 10,000 caches, nearly all of it) for one answer. Work a
    /// deadline depends on does not wait behind less urgent work: its own ticket goes first.
    pub fn turn(&self, read: &SharedRead) -> Option<Duration> {
        let caller = hpcc_azure::current_caller()?;
        let now = Instant::now();
        let turns = locked(&self.turns);
        let turn = turns.get(&read.0)?;
        let live = now < turn.due + TURN_LIFE;
        if !live || turn.holder == caller.holder || caller.urgency > turn.urgency {
            return None;
        }
        let mut waiters = locked(&self.waiters);
        let horizon = self.routine_ttl * 2;
        waiters.retain(|_, since| now.saturating_duration_since(*since) < horizon);
        waiters.entry(caller.holder).or_insert(now);
        Some(turn.due.saturating_duration_since(now) + TURN_SLACK)
    }

    /// The current reconcile's shared read was deferred for `after`: others wait for it (see [`Self::turn`]).
    pub fn deferred(&self, read: &SharedRead, after: Duration) {
        let Some(caller) = hpcc_azure::current_caller() else { return };
        let due = Instant::now() + after;
        let mut turns = locked(&self.turns);
        if turns.get(&read.0).is_none_or(|t| t.holder == caller.holder || due < t.due) {
            turns.insert(read.0.clone(), Turn { holder: caller.holder, urgency: caller.urgency, due });
        }
    }

    /// The shared read was sent (whatever came back): nobody waits for a turn now.
    pub fn read_done(&self, read: &SharedRead) {
        locked(&self.turns).remove(&read.0);
    }

    /// Whether the current reconcile was told to wait for a shared read and a read begun at `began` is that read
    /// (or later); it is then no longer waiting, so only this answer is taken at any age.
    fn waited_for(&self, began: Instant) -> bool {
        let Some(holder) = hpcc_azure::current_caller().map(|c| c.holder) else { return false };
        let mut waiters = locked(&self.waiters);
        let waited = waiters.get(&holder).is_some_and(|since| *since <= began);
        if waited {
            waiters.remove(&holder);
        }
        waited
    }

    /// Stores a list whose read began at `started`; returns the caches (lower-case ids) that differ from the
    /// previous list of the resource group (changed, appeared or gone).
    pub fn remember_cache_list(&self, cache: &ResourceId, started: Instant, list: Arc<CacheList>) -> Vec<String> {
        let key = list_key(cache);
        let previous = self.cache_lists.get(&key, self.routine_ttl).map(|(_, (_, _, l))| l);
        self.cache_lists.put(key, (started, started.elapsed(), list.clone()));
        let Some(previous) = previous else { return vec![] };
        let (before, after) = (&previous.value, &list.value);
        let mut changed: Vec<String> =
            after.iter().filter(|(id, c)| before.get(*id) != Some(c)).map(|(id, _)| id.clone()).collect();
        changed.extend(before.keys().filter(|id| !after.contains_key(*id)).cloned());
        changed
    }

    /// Whether object `holder` waits for its cache's progress (which shows in its resource group's list); returns
    /// how many objects wait on that list (this principal's: they share its reads, see
    /// [`pacing::spread`](super::pacing::spread)). An object that stops waiting says so at its next reconcile (the
    /// list change that ends its wait wakes it); one that is gone without a word is dropped after a resync.
    pub fn waiting(&self, cache: &ResourceId, holder: &str, waits: bool) -> usize {
        let horizon = self.routine_ttl * 2;
        let now = Instant::now();
        let mut all = locked(&self.waiting);
        let key = list_key(cache);
        if !waits {
            let Some(list) = all.get_mut(&key) else { return 0 };
            list.seen.remove(holder);
            return list.seen.len();
        }
        let list = all.entry(key).or_insert_with(|| Waiting { seen: HashMap::new(), pruned: now });
        match list.seen.get_mut(holder) {
            Some(at) => *at = now,
            None => {
                list.seen.insert(holder.to_string(), now);
            }
        }
        if now.saturating_duration_since(list.pruned) >= Duration::from_secs(1) {
            list.pruned = now;
            list.seen.retain(|_, at| now.saturating_duration_since(*at) < horizon);
        }
        list.seen.len()
    }

    /// The cache was acted on: lists read before now no longer speak for it.
    pub fn forget_cache(&self, cache: &ResourceId) {
        let mut acted = locked(&self.acted);
        let horizon = self.routine_ttl;
        acted.retain(|_, at| at.elapsed() < horizon);
        acted.insert(cache_key(cache), Instant::now());
        drop(acted);
        locked(&self.absent).remove(&cache_key(cache));
    }

    /// Whether the cache was acted on lately (actions are remembered for the routine TTL).
    pub fn acted_on(&self, cache: &ResourceId) -> bool {
        locked(&self.acted).contains_key(&cache_key(cache))
    }

    /// A GET that began at `started` found no cache: that answer stands as long as a list read then would.
    pub fn remember_absent(&self, cache: &ResourceId, started: Instant) {
        let mut absent = locked(&self.absent);
        let now = Instant::now();
        absent.retain(|_, (_, until)| *until > now);
        absent.insert(cache_key(cache), (started, started + self.cache_list_ttl));
    }

    /// The create of a cache known to be absent waits for its write turn until `until`: its absence stands until
    /// then, so the returning create is not read again (at 10,000 caches, re-reading each deferred create spent
    /// the read budget the creates' own turns needed). A list read meanwhile that shows the cache still wins;
    /// without one, a cache someone else made by this name in those minutes would meet the PUT, as it would in
    /// the moment between any GET and PUT.
    pub fn hold_absent(&self, cache: &ResourceId, until: Instant) {
        if let Some((_, stands)) = locked(&self.absent).get_mut(&cache_key(cache)) {
            *stands = (*stands).max(until);
        }
    }

    /// Whether a GET found the cache absent, that answer still stands, and the cache was not acted on since.
    pub fn absent(&self, cache: &ResourceId) -> bool {
        let key = cache_key(cache);
        let Some((started, until)) = locked(&self.absent).get(&key).copied() else { return false };
        let acted = locked(&self.acted).get(&key).copied();
        until > Instant::now() && acted.is_none_or(|at| at < started)
    }

    /// Record that a vault is protected. Azure refuses to turn purge protection (or soft delete) off again, so
    /// this is remembered for good: a stale read or a concurrent reconcile never sends the PATCH twice.
    pub fn mark_vault_protected(&self, vault_id: &str) {
        locked(&self.protected_vaults).insert(vault_id.to_ascii_lowercase());
    }

    /// Whether the vault is known to be protected.
    pub fn vault_protected(&self, vault_id: &str) -> bool {
        locked(&self.protected_vaults).contains(&vault_id.to_ascii_lowercase())
    }
}

/// A lock's guard; a panic elsewhere while it was held leaves maps that are still whole.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A resource group's list is read again no sooner than this many times as long as it took, after it began (see
/// [`RecentReads::list_spacing`]): listing takes at most a quarter of the time.
const LIST_SPACING: f64 = 4.0;

/// A resource group's caches as listed, by lower-case id (looked up by every reconcile of a cache in that group,
/// ten thousand long in the 10,000-cache bench).
pub type CacheList = Dated<HashMap<String, Cache>>;

/// The caches of a list, by lower-case id.
pub fn by_id(list: Dated<Vec<Cache>>) -> CacheList {
    list.map(|caches| caches.into_iter().filter_map(|c| Some((c.id.as_deref()?.to_ascii_lowercase(), c))).collect())
}

fn cache_key(cache: &ResourceId) -> String {
    cache.to_string().to_ascii_lowercase()
}

/// A read many reconciles want at once (a resource group's cache list, what a spec references): one makes it,
/// the others wait for its answer.
pub struct SharedRead(String);

/// A shared read deferred by the read budget: whose ticket, for what urgency, due when.
struct Turn {
    holder: String,
    urgency: Urgency,
    due: Instant,
}

/// How long after a deferred shared read is due its waiters come back: a list's pages take about that.
const TURN_SLACK: Duration = Duration::from_secs(1);

/// A turn whose holder has not read this long after it was due is over (the holder went away, or needed no
/// read): the next reconcile to want the read books it.
const TURN_LIFE: Duration = Duration::from_secs(5);

/// The objects waiting on one list, and when each last said so.
struct Waiting {
    seen: HashMap<String, Instant>,
    pruned: Instant,
}

fn list_key(cache: &ResourceId) -> String {
    format!("{}|{}", cache.subscription(), cache.resource_group().unwrap_or_default()).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_waiting_on_a_list_are_counted_until_they_stop_waiting() {
        let reads = RecentReads::new(Freshness {
            facts: Duration::from_secs(60),
            cache_list: Duration::from_secs(7),
            routine: Duration::from_secs(300),
        });
        let (a, b, other) =
            (ResourceId::cache("s", "rg", "a"), ResourceId::cache("s", "RG", "b"), ResourceId::cache("s", "rg2", "c"));
        assert_eq!(reads.waiting(&a, "HpcCache/ns/a", true), 1);
        assert_eq!(reads.waiting(&b, "HpcCache/ns/b", true), 2, "same resource group, any case");
        assert_eq!(reads.waiting(&a, "HpcCache/ns/a", true), 2, "counted once");
        assert_eq!(reads.waiting(&other, "HpcCache/ns/c", true), 1, "another list");
        assert_eq!(reads.waiting(&a, "HpcCache/ns/a", false), 1, "a is Ready: b still waits");
    }

    #[tokio::test]
    async fn waiters_for_a_deferred_list_read_book_no_ticket_and_take_the_list_begun_after_they_asked() {
        use hpcc_azure::{Caller, with_caller};
        let as_caller = |holder: &str, urgency| Caller { holder: holder.to_string(), urgency };
        let reads = RecentReads::new(Freshness {
            facts: Duration::from_secs(60),
            cache_list: Duration::ZERO,
            routine: Duration::from_secs(300),
        });
        let (a, b) = (ResourceId::cache("s", "rg", "a"), ResourceId::cache("s", "rg", "b"));
        let (normal_a, normal_b) = (as_caller("A", Urgency::Normal), as_caller("B", Urgency::Normal));

        assert_eq!(
            with_caller(normal_b.clone(), async { reads.turn(&RecentReads::list_read(&b)) }).await,
            None,
            "no turn yet"
        );
        with_caller(normal_a.clone(), async { reads.deferred(&RecentReads::list_read(&a), Duration::from_secs(5)) })
            .await;
        let wait = with_caller(normal_b.clone(), async { reads.turn(&RecentReads::list_read(&b)) })
            .await
            .expect("B waits for A's read");
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(5) + TURN_SLACK, "{wait:?}");
        assert_eq!(
            with_caller(normal_a, async { reads.turn(&RecentReads::list_read(&a)) }).await,
            None,
            "A reads on its own ticket"
        );
        let urgent = as_caller("U", Urgency::Urgent);
        assert_eq!(
            with_caller(urgent, async { reads.turn(&RecentReads::list_read(&a)) }).await,
            None,
            "a deadline does not wait"
        );
        let other_group = ResourceId::cache("s", "rg2", "c");
        assert_eq!(
            with_caller(normal_b.clone(), async { reads.turn(&RecentReads::list_read(&other_group)) }).await,
            None
        );

        // A reads the list. The list TTL is zero here, yet B takes that list once: it began after B asked.
        reads.read_done(&RecentReads::list_read(&a));
        let empty = Dated { value: HashMap::new(), date: None, retry_after: None };
        reads.remember_cache_list(&a, Instant::now(), Arc::new(empty));
        with_caller(normal_b.clone(), async {
            assert!(reads.cache_list(&b).is_some(), "the list B waited for");
            assert!(reads.cache_list(&b).is_none(), "only once: later polls want a fresh list");
            assert_eq!(reads.turn(&RecentReads::list_read(&b)), None, "the turn ended with the read");
        })
        .await;
    }

    #[test]
    fn a_list_that_took_long_is_read_again_only_after_four_times_as_long_and_serves_until_then() {
        let reads = RecentReads::new(Freshness {
            facts: Duration::from_secs(60),
            cache_list: Duration::ZERO,
            routine: Duration::from_secs(300),
        });
        let (a, other_group) = (ResourceId::cache("s", "rg", "a"), ResourceId::cache("s", "rg2", "c"));
        assert_eq!(reads.list_spacing(&a), None, "never listed");
        // Begun 500 ms ago, read now: the next may begin 2 s after this one began.
        let began = Instant::now() - Duration::from_millis(500);
        reads.remember_cache_list(&a, began, Arc::new(Dated { value: HashMap::new(), date: None, retry_after: None }));
        let wait = reads.list_spacing(&a).expect("too soon");
        assert!(wait > Duration::from_millis(1400) && wait <= Duration::from_millis(1500), "{wait:?}");
        // Meanwhile that list is fresh (the list TTL is zero here), so those sent away until then find it.
        assert!(reads.cache_list(&a).is_some(), "fresh until the next list may begin");
        assert_eq!(reads.list_spacing(&other_group), None, "another resource group's list is not held back");
    }

    #[tokio::test]
    async fn what_a_spec_references_is_a_shared_read_too() {
        use hpcc_azure::{Caller, with_caller};
        let reads = RecentReads::new(Freshness {
            facts: Duration::ZERO,
            cache_list: Duration::from_secs(7),
            routine: Duration::from_secs(300),
        });
        let read = RecentReads::referenced_read("vault+key");
        let (a, b) = (
            Caller { holder: "A".into(), urgency: Urgency::Normal },
            Caller { holder: "B".into(), urgency: Urgency::Normal },
        );
        with_caller(a, async { reads.deferred(&read, Duration::from_secs(3)) }).await;
        with_caller(b.clone(), async {
            assert!(reads.turn(&read).is_some(), "B waits for A's read of the vault and key");
            assert!(reads.referenced("vault+key").is_none(), "nothing read yet");
        })
        .await;
        reads.read_done(&read);
        reads.remember_referenced("vault+key".into(), Referenced { vault: None, identity: None });
        with_caller(b, async {
            assert!(reads.referenced("vault+key").is_some(), "the answer B waited for, though the facts TTL is zero");
            assert!(reads.referenced("vault+key").is_none(), "once");
        })
        .await;
    }

    #[test]
    fn a_confirmed_absence_stands_for_a_deferred_create_until_the_cache_is_acted_on() {
        let fresh = |cache_list| Freshness { facts: Duration::from_secs(60), cache_list, routine: Duration::ZERO };
        let (a, b) = (ResourceId::cache("s", "rg", "a"), ResourceId::cache("s", "rg", "b"));
        let later = Instant::now() + Duration::from_secs(600);

        let reads = RecentReads::new(fresh(Duration::ZERO));
        reads.remember_absent(&a, Instant::now());
        assert!(!reads.absent(&a), "stands no longer than a list would");
        reads.hold_absent(&a, later);
        assert!(reads.absent(&a), "held for the create's turn");
        assert!(!reads.absent(&b), "only the cache that was read");
        reads.hold_absent(&b, later);
        assert!(!reads.absent(&b), "holding does not make an absence up");
        reads.forget_cache(&a);
        assert!(!reads.absent(&a), "acted on: read again");
        reads.hold_absent(&a, later);
        assert!(!reads.absent(&a), "an absence forgotten stays forgotten");

        let reads = RecentReads::new(fresh(Duration::from_secs(60)));
        let started = Instant::now();
        reads.remember_absent(&a, started);
        assert!(reads.absent(&a));
        reads.forget_cache(&a);
        reads.remember_absent(&a, started);
        assert!(!reads.absent(&a), "a GET begun before the last action does not speak for the cache");
    }
}

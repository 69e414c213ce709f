//! The read budget: what was read from Azure recently, so that reads are spent where they buy reaction time
//! (ARM throttles per subscription and principal). There is one per principal (the operator's, and each namespace
//! credential's: see [`credentials`](super::credentials)), so nothing read by one principal is shown to another.
//!
//! - What the spec references (vault, key, identity) changes rarely: kept for the facts TTL, keyed by
//!   [`References`](super::observation::References), the very value the reads are made from.
//! - Caches are read as one paged list per resource group, shared by every reconcile within half a poll interval
//!   (so N caches cost about two list reads per poll, not N), also absorbing the watch echo of the operator's own
//!   status writes. Any action on a cache drops its resource group's list; a cache missing from a list is confirmed
//!   with a GET before anyone believes it is gone.
//! - A vault seen protected stays protected: Azure refuses to turn purge protection off again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hpcc_azure::{Cache, Dated, ResourceId};

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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<V> {
        self.lock().get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    fn put(&self, key: String, value: V) {
        let mut entries = self.lock();
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(key, (Instant::now(), value));
    }

    fn remove(&self, key: &str) {
        self.lock().remove(key);
    }
}

pub struct RecentReads {
    referenced: TtlMap<Referenced>,
    cache_lists: TtlMap<Dated<Vec<Cache>>>,
    protected_vaults: Mutex<HashSet<String>>,
    /// Bumped by every `forget_cache`, so a list read that started before an action is not stored after it.
    list_epochs: Mutex<HashMap<String, u64>>,
}

impl RecentReads {
    pub fn new(facts_ttl: Duration, cache_list_ttl: Duration) -> Self {
        Self {
            referenced: TtlMap::new(facts_ttl),
            cache_lists: TtlMap::new(cache_list_ttl),
            protected_vaults: Default::default(),
            list_epochs: Default::default(),
        }
    }

    pub fn referenced(&self, key: &str) -> Option<Referenced> {
        self.referenced.get(key)
    }

    pub fn remember_referenced(&self, key: String, value: Referenced) {
        self.referenced.put(key, value);
    }

    /// The recent list of a cache's resource group, if any.
    pub fn cache_list(&self, cache: &ResourceId) -> Option<Dated<Vec<Cache>>> {
        self.cache_lists.get(&list_key(cache))
    }

    /// The current epoch of a cache's resource group; pass it to [`RecentReads::remember_cache_list`].
    pub fn list_epoch(&self, cache: &ResourceId) -> u64 {
        self.epochs().get(&list_key(cache)).copied().unwrap_or_default()
    }

    /// Stores a list read unless an action on one of its caches happened since the read began (`epoch`).
    pub fn remember_cache_list(&self, cache: &ResourceId, epoch: u64, list: Dated<Vec<Cache>>) {
        let key = list_key(cache);
        // Compared and stored under the epochs lock, so a `forget_cache` cannot slip in between.
        let epochs = self.epochs();
        if epochs.get(&key).copied().unwrap_or_default() == epoch {
            self.cache_lists.put(key, list);
        }
    }

    /// Forget what was read about a cache's resource group (after acting on the cache).
    pub fn forget_cache(&self, cache: &ResourceId) {
        let key = list_key(cache);
        let mut epochs = self.epochs();
        *epochs.entry(key.clone()).or_default() += 1;
        self.cache_lists.remove(&key);
    }

    /// Record that a vault is protected. Azure refuses to turn purge protection (or soft delete) off again, so
    /// this is remembered for good: a stale read or a concurrent reconcile never sends the PATCH twice.
    pub fn mark_vault_protected(&self, vault_id: &str) {
        self.protected().insert(vault_id.to_ascii_lowercase());
    }

    /// Whether the vault is known to be protected.
    pub fn vault_protected(&self, vault_id: &str) -> bool {
        self.protected().contains(&vault_id.to_ascii_lowercase())
    }

    fn epochs(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.list_epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn protected(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.protected_vaults.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn list_key(cache: &ResourceId) -> String {
    format!("{}|{}", cache.subscription(), cache.resource_group().unwrap_or_default()).to_ascii_lowercase()
}

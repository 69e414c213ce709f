//! One write at a time per Key Vault (or storage account), in turn, without holding a reconcile slot while waiting.
//! Key Vault refuses overlapping writes with 409 `ConflictError` (Terraform's azurerm provider locks each vault
//! around its access-policy writes for that reason). With one team vault behind many caches, a burst of grants used
//! to queue on a lock, each waiter holding one of the controller's slots, so new objects waited for grants of others.
//! Now a writer that finds the vault busy takes a place in line and is told when its turn is likely
//! ([`AzureError::Deferred`] inside a reconcile, a sleep outside); the next writer to come once the vault is free
//! takes it (waiting for the first in line to come back would leave the vault idle while the controller's queue
//! brings it).
//!
//! Access-policy grants waiting in line ride along, first come first served: the writer whose turn it is sends up
//! to 15 of them with its own in one `accessPolicies/add` (the spec allows 16 identities per update) and records
//! them as served, so each finds its grant made when it comes back. A waiter that comes back with another write (a revoke, once its object
//! is deleted) replaces its grant in line, so nothing is granted for an object that no longer wants it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hpcc_azure::{Access, AzureError};

/// A writer in line that has not come back this long after its expected turn is gone (its object was deleted, or
/// its next reconcile needed no write): the line moves on without it.
const NO_SHOW: Duration = Duration::from_secs(10);
/// What a vault write is assumed to take until one was measured.
const FIRST_GUESS: Duration = Duration::from_millis(200);

/// An access-policy grant a writer waits to make: `(tenant, principal)`.
pub type PolicyGrant = (String, String);

/// A writer in line.
struct Waiter {
    holder: String,
    /// When it was told to come back.
    due: Instant,
    /// The grant it waits to make, if that is its write (another writer may make it).
    grant: Option<PolicyGrant>,
}

#[derive(Default)]
struct Line {
    busy: bool,
    waiting: VecDeque<Waiter>,
    /// Holders whose grant another writer made, and when.
    served: HashMap<String, (PolicyGrant, Instant)>,
    /// Moving average of how long a write held the vault.
    write_time: Option<Duration>,
}

#[derive(Default)]
pub struct VaultTurns {
    lines: Mutex<HashMap<String, Line>>,
}

/// Access-policy grants one update carries (the Key Vault spec allows 16 identities per update).
const GRANTS_PER_WRITE: usize = hpcc_azure::ACCESS_POLICIES_PER_UPDATE;

/// The vault is this writer's until dropped.
pub struct Turn {
    turns: Arc<VaultTurns>,
    vault: String,
    since: Instant,
}

impl Turn {
    /// Takes up to `n` grants waiting in line, to be made with this writer's own; their writers leave the line.
    pub fn riders(&self, n: usize) -> Vec<(String, PolicyGrant)> {
        let mut lines = self.turns.lock();
        let Some(line) = lines.get_mut(&self.vault) else { return vec![] };
        let mut riders = vec![];
        line.waiting.retain_mut(|w| {
            if riders.len() < n
                && let Some(g) = w.grant.take()
            {
                riders.push((std::mem::take(&mut w.holder), g));
                return false;
            }
            true
        });
        riders
    }

    /// The riders' grants were made: each finds it so when it comes back ([`VaultTurns::served`]).
    pub fn served(&self, riders: Vec<(String, PolicyGrant)>) {
        let mut lines = self.turns.lock();
        let Some(line) = lines.get_mut(&self.vault) else { return };
        let now = Instant::now();
        for (holder, grant) in riders {
            line.served.insert(holder, (grant, now));
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut lines = self.turns.lock();
        if let Some(line) = lines.get_mut(&self.vault) {
            line.busy = false;
            let took = self.since.elapsed();
            line.write_time = Some(line.write_time.map_or(took, |t| (t * 3 + took) / 4));
        }
    }
}

impl VaultTurns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Line>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The vault's turn for `holder` now, or how long until it is likely its turn (it keeps its place in line).
    /// `grant`: the access-policy grant it is to make, which another writer may make for it.
    pub fn try_take(
        self: &Arc<Self>,
        vault: &str,
        holder: &str,
        grant: Option<PolicyGrant>,
        now: Instant,
    ) -> Result<Turn, Duration> {
        let key = vault.to_ascii_lowercase();
        let mut lines = self.lock();
        let line = lines.entry(key.clone()).or_default();
        line.waiting.retain(|w| now.saturating_duration_since(w.due) < NO_SHOW);
        line.served.retain(|_, (_, at)| now.saturating_duration_since(*at) < NO_SHOW * 6);
        if !line.busy {
            line.waiting.retain(|w| w.holder != holder);
            line.busy = true;
            return Ok(Turn { turns: self.clone(), vault: key, since: now });
        }
        let write_time = line.write_time.unwrap_or(FIRST_GUESS);
        let place = match line.waiting.iter().position(|w| w.holder == holder) {
            Some(i) => i,
            None => {
                line.waiting.push_back(Waiter { holder: holder.to_string(), due: now, grant: None });
                line.waiting.len() - 1
            }
        };
        // Its turn: after the write under way and those ahead of it (grants ahead ride along with one write).
        let writes_ahead = line.waiting.iter().take(place).filter(|w| w.grant.is_none()).count()
            + line.waiting.iter().take(place).filter(|w| w.grant.is_some()).count() / GRANTS_PER_WRITE;
        let after = write_time * (writes_ahead as u32 + 1);
        let waiter = &mut line.waiting[place];
        waiter.due = now + after;
        waiter.grant = grant;
        Err(after)
    }

    /// Whether another writer made `grant` for `holder` (once: the record is consumed).
    pub fn served(&self, vault: &str, holder: &str, grant: &PolicyGrant) -> bool {
        let mut lines = self.lock();
        let Some(line) = lines.get_mut(&vault.to_ascii_lowercase()) else { return false };
        match line.served.get(holder) {
            Some((made, _)) if made.0.eq_ignore_ascii_case(&grant.0) && made.1.eq_ignore_ascii_case(&grant.1) => {
                line.served.remove(holder);
                // It may have taken a place again while its grant was being made.
                line.waiting.retain(|w| w.holder != holder);
                true
            }
            _ => false,
        }
    }

    /// The vault's turn: inside a reconcile (a [`hpcc_azure::Caller`]) now or [`AzureError::Deferred`] until it is
    /// likely; outside one (CLI), waits in line. `grant`: see [`VaultTurns::try_take`].
    pub async fn take(self: &Arc<Self>, vault: &str, grant: Option<PolicyGrant>) -> Result<Turn, AzureError> {
        match hpcc_azure::current_caller() {
            Some(caller) => self
                .try_take(vault, &caller.holder, grant, Instant::now())
                .map_err(|after| AzureError::Deferred { after, access: Access::Write }),
            None => {
                let holder = format!("waiter/{}", uuid::Uuid::new_v4());
                loop {
                    match self.try_take(vault, &holder, None, Instant::now()) {
                        Ok(turn) => return Ok(turn),
                        Err(after) => tokio::time::sleep(after).await,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";

    #[test]
    fn a_busy_vault_gives_a_place_in_line_not_a_wait() {
        let turns = Arc::new(VaultTurns::default());
        let t0 = Instant::now();
        let a = turns.try_take(V, "a", None, t0).expect("free vault");
        assert_eq!(turns.try_take(V, "b", None, t0).err(), Some(FIRST_GUESS), "b is next");
        assert_eq!(turns.try_take(V, "c", None, t0).err(), Some(FIRST_GUESS * 2), "c after b");
        assert!(turns.try_take(&V.to_uppercase(), "d", None, t0).is_err(), "one vault, any case");
        drop(a);
        let c = turns.try_take(V, "c", None, t0).expect("the free vault goes to whoever comes");
        assert_eq!(turns.try_take(V, "b", None, t0).err(), Some(held_write_time(&turns)), "b is still first in line");
        drop(c);
        assert!(turns.try_take(V, "b", None, t0).is_ok());
        assert!(
            turns
                .try_take("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/other", "e", None, t0)
                .is_ok()
        );
    }

    #[test]
    fn a_writer_that_does_not_come_back_loses_its_place() {
        let turns = Arc::new(VaultTurns::default());
        let t0 = Instant::now();
        let held = turns.try_take(V, "a", None, t0).unwrap();
        assert!(turns.try_take(V, "gone", Some(grant("p")), t0).is_err());
        let later = t0 + FIRST_GUESS + NO_SHOW + Duration::from_secs(1);
        assert_eq!(turns.try_take(V, "c", None, later).err(), Some(held_write_time(&turns)), "gone is out of line");
        drop(held);
    }

    fn held_write_time(turns: &VaultTurns) -> Duration {
        turns.lock().values().next().and_then(|l| l.write_time).unwrap_or(FIRST_GUESS)
    }

    fn grant(p: &str) -> PolicyGrant {
        ("tenant".into(), p.into())
    }

    #[test]
    fn grants_waiting_in_line_ride_along_with_the_writer_whose_turn_it_is() {
        let turns = Arc::new(VaultTurns::default());
        let t0 = Instant::now();
        let a = turns.try_take(V, "a", Some(grant("pa")), t0).unwrap();
        for w in ["b", "c"] {
            assert!(turns.try_take(V, w, Some(grant(&format!("p{w}"))), t0).is_err());
        }
        assert!(turns.try_take(V, "r", None, t0).is_err(), "a revoke waits its own turn");
        assert!(turns.try_take(V, "d", Some(grant("pd")), t0).is_err());
        let riders = a.riders(2);
        assert_eq!(riders.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(), ["b", "c"], "first come, at most 2");
        a.served(riders);
        assert!(turns.try_take(V, "c", Some(grant("pc")), t0).is_err(), "c came back while the write was under way");
        drop(a);
        assert!(turns.served(V, "c", &grant("pc")), "c finds its grant made, and leaves the line");
        assert!(turns.served(V, "b", &grant("pb")), "b finds its grant made");
        assert!(!turns.served(V, "b", &grant("pb")), "once");
        assert!(!turns.served(V, "d", &grant("pd")), "d's was not");
        let d = turns.try_take(V, "d", Some(grant("pd")), t0).expect("the vault is free");
        assert!(turns.try_take(V, "r", None, t0).is_err());
        assert!(d.riders(15).is_empty(), "the revoke does not ride");
        drop(d);
        assert!(turns.try_take(V, "r", None, t0).is_ok());
    }

    #[test]
    fn a_waiter_that_comes_back_with_another_write_no_longer_rides_along() {
        let turns = Arc::new(VaultTurns::default());
        let t0 = Instant::now();
        let a = turns.try_take(V, "a", None, t0).unwrap();
        assert!(turns.try_take(V, "b", Some(grant("pb")), t0).is_err());
        // b's object was deleted meanwhile: it comes back to revoke instead.
        assert!(turns.try_take(V, "b", None, t0).is_err());
        assert!(a.riders(15).is_empty(), "nothing granted for b");
    }
}

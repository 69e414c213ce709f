//! One write at a time per Key Vault (or storage account), in turn, without holding a reconcile slot while waiting.
//! Key Vault refuses overlapping writes with 409 `ConflictError` (Terraform's azurerm provider locks each vault
//! around its access-policy writes for that reason). With one team vault behind many caches, a burst of grants used
//! to queue on a lock, each waiter holding one of the controller's slots, so new objects waited for grants of others.
//! Now a writer that finds the vault busy takes a place in line and is told when its turn is likely
//! ([`AzureError::Deferred`] inside a reconcile, a sleep outside); the line is first come, first served.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hpcc_azure::{Access, AzureError};

/// A writer in line that has not come back this long after its expected turn is gone (its object was deleted, or
/// its next reconcile needed no write): the line moves on without it.
const NO_SHOW: Duration = Duration::from_secs(10);
/// What a vault write is assumed to take until one was measured.
const FIRST_GUESS: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Line {
    busy: bool,
    /// Writers waiting, with the moment each was told to come back.
    waiting: VecDeque<(String, Instant)>,
    /// Moving average of how long a write held the vault.
    write_time: Option<Duration>,
}

#[derive(Default)]
pub struct VaultTurns {
    lines: Mutex<HashMap<String, Line>>,
}

/// The vault is this writer's until dropped.
pub struct Turn {
    turns: Arc<VaultTurns>,
    vault: String,
    since: Instant,
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
    pub fn try_take(self: &Arc<Self>, vault: &str, holder: &str, now: Instant) -> Result<Turn, Duration> {
        let key = vault.to_ascii_lowercase();
        let mut lines = self.lock();
        let line = lines.entry(key.clone()).or_default();
        line.waiting.retain(|(_, due)| now.saturating_duration_since(*due) < NO_SHOW);
        let first = line.waiting.front().is_none_or(|(h, _)| h == holder);
        if !line.busy && first {
            line.waiting.pop_front();
            line.busy = true;
            return Ok(Turn { turns: self.clone(), vault: key, since: now });
        }
        let write_time = line.write_time.unwrap_or(FIRST_GUESS);
        let place = match line.waiting.iter().position(|(h, _)| h == holder) {
            Some(i) => i,
            None => {
                line.waiting.push_back((holder.to_string(), now));
                line.waiting.len() - 1
            }
        };
        // Its turn: after the write under way and those ahead of it.
        let after = write_time * (place as u32 + 1);
        line.waiting[place].1 = now + after;
        Err(after)
    }

    /// The vault's turn: inside a reconcile (a [`hpcc_azure::Caller`]) now or [`AzureError::Deferred`] until it is
    /// likely; outside one (CLI), waits in line.
    pub async fn take(self: &Arc<Self>, vault: &str) -> Result<Turn, AzureError> {
        match hpcc_azure::current_caller() {
            Some(caller) => self
                .try_take(vault, &caller.holder, Instant::now())
                .map_err(|after| AzureError::Deferred { after, access: Access::Write }),
            None => {
                let holder = format!("waiter/{}", uuid::Uuid::new_v4());
                loop {
                    match self.try_take(vault, &holder, Instant::now()) {
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
        let a = turns.try_take(V, "a", t0).expect("free vault");
        assert_eq!(turns.try_take(V, "b", t0).err(), Some(FIRST_GUESS), "b is next");
        assert_eq!(turns.try_take(V, "c", t0).err(), Some(FIRST_GUESS * 2), "c after b");
        assert!(turns.try_take(&V.to_uppercase(), "d", t0).is_err(), "one vault, any case");
        drop(a);
        assert!(turns.try_take(V, "c", t0).is_err(), "first come, first served: b's turn, not c's");
        let b = turns.try_take(V, "b", t0).expect("b's turn");
        drop(b);
        assert!(turns.try_take(V, "c", t0).is_ok());
        assert!(
            turns
                .try_take("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/other", "e", t0)
                .is_ok()
        );
    }

    #[test]
    fn a_writer_that_does_not_come_back_loses_its_place() {
        let turns = Arc::new(VaultTurns::default());
        let t0 = Instant::now();
        drop(turns.try_take(V, "a", t0).unwrap());
        let held = turns.try_take(V, "a", t0).unwrap();
        assert!(turns.try_take(V, "gone", t0).is_err());
        drop(held);
        assert!(turns.try_take(V, "c", t0).is_err(), "gone's turn is still expected");
        let later = t0 + FIRST_GUESS + NO_SHOW + Duration::from_secs(1);
        assert!(turns.try_take(V, "c", later).is_ok(), "the line moved on without it");
    }
}

//! The state machine, one file per situation. [`decide`] picks the situation from what Azure reports (never from
//! a stored phase); each situation returns the one [`Action`] to take and writes the next status into the
//! [`Draft`] (`draft.rs`, which depends on no situation). The diagram: `docs/state-machine.md`.
//!
//! - [`deleting`]: the object is being deleted (or the cache belongs to another object);
//! - [`no_cache`]: Azure has no cache: check the key, vault and identity, then create;
//! - [`existing_cache`]: Azure has the cache: follow its provisioning and health states;
//! - [`waiting_for_key`]: the cache waits for its identity to be granted the key;
//! - [`drift`]: a healthy cache whose key settings or tags differ from the spec;
//! - [`failure`]: a cache that failed before it was ever healthy (re-create or stop);
//! - [`outcome`]: what an action's success records, and how its failure is reported and retried.

mod deleting;
mod draft;
mod drift;
mod existing_cache;
mod failure;
mod no_cache;
mod outcome;
mod waiting_for_key;

use crate::decision::{Decision, Input};
use draft::Draft;

pub use outcome::{action_failed, action_succeeded};

/// Decides the next step. Pure and total: every input gives a decision, never a panic.
pub fn decide(input: &Input) -> Decision {
    let mut d = Draft::new(input);
    let action = if let Some(other) = input.facts.cache.as_ref().and_then(|c| d.owned_elsewhere(c)) {
        d.not_ours(&other)
    } else if input.deleting {
        d.deleting()
    } else {
        match &input.facts.cache {
            None => d.no_cache(),
            Some(cache) => d.cache_exists(cache),
        }
    };
    d.finish(action)
}

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
//! - [`skipped`]: reconcile-policy skip (or an unknown policy): report, write nothing;
//! - [`outcome`]: what an action's success records, and how its failure is reported and retried;
//! - [`credential`]: the namespace's Azure credential cannot be used: report it, touch nothing.

mod accepted;
mod credential;
mod deleting;
mod draft;
mod drift;
mod existing_cache;
mod failure;
mod no_cache;
mod outcome;
mod skipped;
mod waiting_for_key;

use hpcc_api::v1alpha1::ReconcilePolicy;

use crate::decision::{Decision, Input};
use draft::Draft;

pub use accepted::accepted;
pub use credential::{CredentialProblem, credential_recheck, credential_unusable};
pub use outcome::{action_failed, action_succeeded};

/// Decides the next step. Pure and total: every input gives a decision, never a panic.
pub fn decide(input: &Input) -> Decision {
    // An unknown policy value writes nothing until it is fixed, as skip does.
    let policy = input.policy.clone().unwrap_or(ReconcilePolicy::Skip);
    let mut d = Draft::new(input);
    let cache = input.facts.cache.as_ref();
    let action = if let Some(other) = cache.and_then(|c| d.owned_elsewhere(c)) {
        d.not_ours(&other)
    } else if cache.is_some_and(|c| d.not_adopted(c)) {
        d.foreign()
    } else if input.deleting && policy != ReconcilePolicy::Manage {
        d.detached(policy)
    } else if input.deleting {
        d.deleting()
    } else {
        match cache {
            None => d.no_cache(),
            Some(cache) => d.cache_exists(cache),
        }
    };
    if policy == ReconcilePolicy::Skip {
        return skipped::decide(input, d.finish(action));
    }
    d.finish(action)
}

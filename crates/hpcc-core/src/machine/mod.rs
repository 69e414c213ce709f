//! The state machine, one file per situation. [`decide`] picks the situation from what Azure reports (never from
//! a stored phase); each situation returns the one [`Action`] to take and writes the next status into the
//! [`Draft`]. The diagram: `docs/state-machine.md`.
//!
//! - [`deleting`]: the object is being deleted (or the cache belongs to another object);
//! - [`no_cache`]: Azure has no cache: check the key, vault and identity, then create;
//! - [`existing_cache`]: Azure has the cache: follow its provisioning and health states;
//! - [`waiting_for_key`]: the cache waits for its identity to be granted the key;
//! - [`drift`]: a healthy cache whose key settings or tags differ from the spec;
//! - [`failure`]: a cache that failed before it was ever healthy (re-create or stop);
//! - [`outcome`]: what an action's success records, and how its failure is reported and retried.

mod deleting;
mod drift;
mod existing_cache;
mod failure;
mod no_cache;
mod outcome;
mod waiting_for_key;

use std::time::Duration;

use hpcc_api::v1alpha1::{
    ConditionStatus as S, ConditionType as C, GrantKind, GrantRecord, HpcCacheSpec, HpcCacheStatus, IdentityType,
    Phase, set_condition,
};
use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::decision::{Action, Decision, Event, Input};
use crate::facts::{CacheFacts, VaultFacts};
use crate::reason::Reason;

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

/// The next status, built step by step by the situation that applies.
pub(crate) struct Draft<'a> {
    input: &'a Input<'a>,
    status: HpcCacheStatus,
    requeue_after: Duration,
    events: Vec<Event>,
    now: Time,
}

impl<'a> Draft<'a> {
    fn new(input: &'a Input<'a>) -> Self {
        let mut status = input.status.clone();
        status.observed_generation = input.generation;
        Self { input, status, requeue_after: input.timing.poll, events: vec![], now: Time(input.facts.now) }
    }

    fn finish(self, action: Action) -> Decision {
        Decision { status: self.status, action, requeue_after: self.requeue_after, events: self.events }
    }

    fn spec(&self) -> &HpcCacheSpec {
        self.input.spec
    }

    fn cond(&mut self, t: C, s: S, reason: Reason, message: &str) {
        set_condition(&mut self.status.conditions, t, s, reason.as_str(), message, self.input.generation, &self.now);
    }

    /// Moves to `phase`; a change (never a self-transition) is announced by an event.
    fn phase(&mut self, phase: Phase) {
        if self.status.phase != Some(phase) {
            let message = format!("phase {} -> {phase}", self.status.phase.unwrap_or_default());
            self.events.push(Event { warning: phase == Phase::Failed, reason: phase.to_string(), message });
        }
        self.status.phase = Some(phase);
    }

    /// A transitional state: Reconciling=True, Ready=False, Stalled=False.
    fn progressing(&mut self, phase: Phase, reason: Reason, message: &str) {
        self.phase(phase);
        self.cond(C::Ready, S::False, reason, message);
        self.cond(C::Reconciling, S::True, reason, message);
        self.cond(C::Stalled, S::False, reason, message);
    }

    /// Needs a person: Stalled=True, Reconciling=False.
    fn stalled(&mut self, phase: Phase, reason: Reason, message: &str) {
        self.phase(phase);
        self.cond(C::Ready, S::False, reason, message);
        self.cond(C::Reconciling, S::False, reason, message);
        self.cond(C::Stalled, S::True, reason, message);
        self.requeue_after = self.input.timing.resync;
        self.events.push(Event::warning(reason, message));
    }

    fn recorded_sa_grant(&self) -> Option<GrantRecord> {
        self.status.grants.iter().find(|g| g.system_assigned).cloned()
    }

    /// Records the intent to grant (made: false) before the call; replaces an earlier record of the same grant.
    fn record_grant(&mut self, grant: &GrantRecord) {
        self.status.grants.retain(|r| !r.same_as(grant));
        self.status.grants.push(grant.clone());
    }

    /// Records and returns the grant of the key to `principal` (intent first).
    fn grant(&mut self, principal: &str, tenant: Option<String>) -> Action {
        let system_assigned = self.spec().identity.type_ == IdentityType::SystemAssigned;
        let rbac = matches!(self.input.facts.vault, Some(VaultFacts::Usable { rbac: true, .. }));
        let grant = GrantRecord {
            vault_id: self.spec().encryption.as_ref().map(|e| e.key_vault_id.clone()).unwrap_or_default(),
            principal_id: principal.to_string(),
            tenant_id: tenant,
            kind: if rbac { GrantKind::RoleAssignment } else { GrantKind::AccessPolicy },
            system_assigned,
            made: false,
        };
        self.record_grant(&grant);
        Action::Grant(grant)
    }

    /// Whether Azure accepted a grant for `principal` on the spec's vault (a record still marked intended may
    /// never have been sent: the operator could have died in between, so it is sent again).
    fn grant_made_for(&self, principal: &str) -> bool {
        let vault = self.spec().encryption.as_ref().map(|e| e.key_vault_id.as_str()).unwrap_or_default();
        self.status
            .grants
            .iter()
            .any(|g| g.made && g.principal_id.eq_ignore_ascii_case(principal) && g.vault_id.eq_ignore_ascii_case(vault))
    }

    /// The identity that must be trusted: the cache's system-assigned one, or the user-assigned one.
    fn cache_principal(&self, cache: &CacheFacts) -> Option<String> {
        match self.spec().identity.type_ {
            IdentityType::SystemAssigned => cache.principal_id.clone(),
            IdentityType::UserAssigned => {
                self.input.facts.identity.as_ref().and_then(|i| i.principal_id()).map(str::to_string)
            }
        }
    }

    /// The vault cannot be used: report it (KeyValid=False, Stalled) and do nothing.
    fn vault_invalid(&self) -> Option<(Reason, String)> {
        match &self.input.facts.vault {
            Some(VaultFacts::Invalid { reason, message }) => Some((*reason, message.clone())),
            _ => None,
        }
    }

    fn vault_unprotected(&self) -> bool {
        matches!(self.input.facts.vault, Some(VaultFacts::Usable { protected: false, .. }))
    }
}

fn format_left(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    format!("{}m{:02}s", secs / 60, secs % 60)
}

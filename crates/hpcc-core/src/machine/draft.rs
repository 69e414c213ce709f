//! The next status, built step by step: the state every situation writes into and the helpers they share.

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

/// The next status, built step by step by the situation that applies.
pub(super) struct Draft<'a> {
    pub(super) input: &'a Input<'a>,
    pub(super) status: HpcCacheStatus,
    pub(super) requeue_after: Duration,
    pub(super) events: Vec<Event>,
    pub(super) now: Time,
}

impl<'a> Draft<'a> {
    pub(super) fn new(input: &'a Input<'a>) -> Self {
        let mut status = input.status.clone();
        status.observed_generation = input.generation;
        Self { input, status, requeue_after: input.timing.poll, events: vec![], now: Time(input.facts.now) }
    }

    pub(super) fn finish(mut self, action: Action) -> Decision {
        if self.status.authorization_deadline.is_none() {
            self.status.deadline_warning_minutes = None; // a new window warns afresh
        }
        Decision { status: self.status, action, requeue_after: self.requeue_after, events: self.events }
    }

    pub(super) fn spec(&self) -> &HpcCacheSpec {
        self.input.spec
    }

    pub(super) fn cond(&mut self, t: C, s: S, reason: Reason, message: &str) {
        set_condition(&mut self.status.conditions, t, s, reason.as_str(), message, self.input.generation, &self.now);
    }

    /// Moves to `phase`; a change (never a self-transition) is announced by an event.
    pub(super) fn phase(&mut self, phase: Phase) {
        if self.status.phase != Some(phase) {
            let message = match self.status.phase {
                Some(before) => format!("phase {before} -> {phase}"),
                None => format!("phase {phase}"),
            };
            self.events.push(Event { warning: phase == Phase::Failed, reason: phase.to_string(), message });
        }
        self.status.phase = Some(phase);
    }

    /// A transitional state: Reconciling=True, Ready=False, Stalled=False.
    pub(super) fn progressing(&mut self, phase: Phase, reason: Reason, message: &str) {
        self.phase(phase);
        self.cond(C::Ready, S::False, reason, message);
        self.cond(C::Reconciling, S::True, reason, message);
        self.cond(C::Stalled, S::False, reason, message);
    }

    /// Needs a person: Stalled=True, Reconciling=False.
    pub(super) fn stalled(&mut self, phase: Phase, reason: Reason, message: &str) {
        self.phase(phase);
        self.cond(C::Ready, S::False, reason, message);
        self.cond(C::Reconciling, S::False, reason, message);
        self.cond(C::Stalled, S::True, reason, message);
        self.requeue_after = self.input.timing.resync;
        // Announced once: not again on every resync while it stays stalled for the same reason.
        let already = self
            .input
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == C::Stalled.as_str() && c.status == S::True.as_str() && c.reason == reason.as_str());
        if !already {
            self.events.push(Event::warning(reason, message));
        }
    }

    pub(super) fn recorded_sa_grant(&self) -> Option<GrantRecord> {
        self.status.grants.iter().find(|g| g.system_assigned).cloned()
    }

    /// Records the intent to grant (made: false) before the call; replaces an earlier record of the same grant.
    pub(super) fn record_grant(&mut self, grant: &GrantRecord) {
        self.status.grants.retain(|r| !r.same_as(grant));
        self.status.grants.push(grant.clone());
    }

    /// Records and returns the grant of the key to `principal` (intent first).
    pub(super) fn grant(&mut self, principal: &str, tenant: Option<String>) -> Action {
        let system_assigned = self.spec().identity.type_ == IdentityType::SystemAssigned;
        let rbac = matches!(self.input.facts.vault, Some(VaultFacts::Usable { rbac: true, .. }));
        let grant = GrantRecord {
            scope: self.spec().encryption.as_ref().map(|e| e.key_vault_id.clone()).unwrap_or_default(),
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
    pub(super) fn grant_made_for(&self, principal: &str) -> bool {
        let vault = self.spec().encryption.as_ref().map(|e| e.key_vault_id.as_str()).unwrap_or_default();
        self.status
            .grants
            .iter()
            .any(|g| g.made && g.principal_id.eq_ignore_ascii_case(principal) && g.scope.eq_ignore_ascii_case(vault))
    }

    /// The identity that must be trusted: the cache's system-assigned one, or the user-assigned one.
    pub(super) fn cache_principal(&self, cache: &CacheFacts) -> Option<String> {
        match self.spec().identity.type_ {
            IdentityType::SystemAssigned => cache.principal_id.clone(),
            IdentityType::UserAssigned => {
                self.input.facts.identity.as_ref().and_then(|i| i.principal_id()).map(str::to_string)
            }
        }
    }

    /// The vault cannot be used: report it (KeyValid=False, Stalled) and do nothing.
    pub(super) fn vault_invalid(&self) -> Option<(Reason, String)> {
        match &self.input.facts.vault {
            Some(VaultFacts::Invalid { reason, message }) => Some((*reason, message.clone())),
            _ => None,
        }
    }

    pub(super) fn vault_unprotected(&self) -> bool {
        matches!(self.input.facts.vault, Some(VaultFacts::Usable { protected: false, .. }))
    }
}

pub(super) fn format_left(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    format!("{}m{:02}s", secs / 60, secs % 60)
}

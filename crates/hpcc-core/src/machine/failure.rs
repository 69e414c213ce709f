//! Failures: a cache Azure failed (re-created within the limit, or reported), and an action that failed.

use hpcc_api::v1alpha1::{
    AuthorizationTimeoutPolicy, ConditionStatus as S, ConditionType as C, HpcCacheStatus, Phase, set_condition,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Draft;
use crate::decision::{Action, ActionError, Decision, Event, Timing};
use crate::facts::CacheFacts;
use crate::reason::Reason;

/// Why a cache that never became healthy is given up.
#[derive(Clone, Copy, Debug)]
pub(super) enum Failure {
    /// Azure reports provisioningState Failed or Canceled.
    ProvisioningFailed,
    /// The key was not authorized within Azure's window.
    WindowMissed { deadline: Timestamp },
}

impl Failure {
    fn reason(self) -> Reason {
        match self {
            Failure::ProvisioningFailed => Reason::ProvisioningFailed,
            Failure::WindowMissed { .. } => Reason::AuthorizationWindowMissed,
        }
    }

    fn describe(self) -> String {
        match self {
            Failure::ProvisioningFailed => "the cache's provisioningState is Failed".into(),
            Failure::WindowMissed { deadline } => format!("the key was not authorized before the deadline {deadline}"),
        }
    }
}

impl Draft<'_> {
    pub(super) fn failed(&mut self, cache: &CacheFacts, failure: Failure) -> Action {
        let why = failure.describe();
        let detail = cache.status_description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        let recreate = self.spec().on_authorization_timeout == AuthorizationTimeoutPolicy::Recreate;
        if recreate && self.status.recreations < self.spec().max_recreations {
            // Count the re-creation once: the phase is recorded before the DELETE is sent.
            if self.status.phase != Some(Phase::Deleting) {
                self.status.recreations += 1;
                let message = format!(
                    "{why}{detail}; deleting it to create a new one (re-creation {} of at most {})",
                    self.status.recreations,
                    self.spec().max_recreations
                );
                self.events.push(Event::warning(Reason::Recreating, message));
            }
            self.cond(C::KeyAuthorized, S::False, Reason::AuthorizationWindowMissed, &why);
            self.progressing(Phase::Deleting, Reason::Recreating, &format!("{why}; re-creating the cache"));
            return Action::DeleteCache;
        }
        let hint = if recreate {
            format!("; the re-creation limit ({}) is reached", self.spec().max_recreations)
        } else {
            "; onAuthorizationTimeout is Fail: delete and re-create the HpcCache, or set onAuthorizationTimeout: Recreate".to_string()
        };
        let msg = format!("{why}{detail}{hint}");
        let reason = failure.reason();
        if self.spec().encryption.is_some() && reason == Reason::AuthorizationWindowMissed {
            self.cond(C::KeyAuthorized, S::False, reason, &msg);
        }
        self.status.authorization_deadline = None;
        self.stalled(Phase::Failed, reason, &msg);
        Action::None
    }
}

/// The machine's reaction to a failed action: a terminal rejection stalls (no retry loop); anything else is
/// retried after Azure's `Retry-After` or the poll interval.
pub fn action_failed(
    status: &HpcCacheStatus,
    generation: Option<i64>,
    action: &Action,
    error: &ActionError,
    now: Timestamp,
    timing: Timing,
) -> Decision {
    let mut status = status.clone();
    let t = Time(now);
    let mut events = vec![];
    match action {
        // The grant was recorded as intent; it did not happen, so it must not count as made.
        Action::Grant(g) => status.grants.retain(|r| r.made || !r.same_as(g)),
        // A grant Azure refuses for good to revoke must not block deletion forever: forget it and say so. One that
        // may still succeed (throttling, a vault conflict) stays recorded and is tried again.
        Action::RevokeGrant(g) if !error.retryable => {
            status.grants.retain(|r| !r.same_as(g));
            events.push(Event::warning(
                Reason::GrantNotRevoked,
                format!(
                    "could not revoke the key grant of {} on {} ({}); remove it by hand",
                    g.principal_id, g.vault_id, error.code
                ),
            ));
        }
        _ => {}
    }
    // While a grant is outstanding Azure's window is running: look again soon, whatever the error.
    let deadline_running = matches!(action, Action::Grant(_) | Action::EnableVaultProtection);
    let message = format!("{} failed: {} ({})", action_name(action), error.message, error.code);
    let mut cond = |t_: C, s: S, reason: Reason| {
        set_condition(&mut status.conditions, t_, s, reason.as_str(), &message, generation, &t)
    };
    let requeue_after = if error.retryable {
        cond(C::Reconciling, S::True, Reason::AzureRetrying);
        error.retry_after.unwrap_or(timing.poll)
    } else {
        let rejected_create =
            matches!(action, Action::CreateCache { .. }) && error.status.is_some_and(|s| (400..500).contains(&s));
        let reason = if rejected_create { Reason::CreateRejected } else { Reason::AzureRequestRejected };
        cond(C::Stalled, S::True, reason);
        cond(C::Ready, S::False, reason);
        cond(C::Reconciling, S::False, reason);
        if rejected_create && status.phase == Some(Phase::Creating) {
            status.phase = Some(Phase::Failed);
            status.create_requested_at = None;
        }
        if deadline_running { timing.poll } else { timing.resync }
    };
    events.insert(0, Event::warning(Reason::AzureError, message));
    Decision { status, action: Action::None, requeue_after, events }
}

/// Updates the status after an action succeeded (what cannot be recorded as intent beforehand).
pub fn action_succeeded(status: &mut HpcCacheStatus, action: &Action) {
    match action {
        Action::Grant(g) => {
            for r in status.grants.iter_mut().filter(|r| r.same_as(g)) {
                r.made = true;
            }
        }
        Action::RevokeGrant(g) => status.grants.retain(|r| !r.same_as(g)),
        _ => {}
    }
}

fn action_name(a: &Action) -> &'static str {
    match a {
        // `action_failed` with no action: observing Azure failed.
        Action::None => "reading the cache's state from Azure",
        Action::EnableVaultProtection => "enabling vault purge protection",
        Action::Grant(_) => "granting key access",
        Action::CreateCache { .. } => "creating the cache",
        Action::UpdateCache { .. } => "updating the cache",
        Action::DeleteCache => "deleting the cache",
        Action::RevokeGrant(_) => "revoking key access",
        Action::RemoveFinalizer => "removing the finalizer",
    }
}

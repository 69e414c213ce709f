//! The outcome of an action: what a success records (what could not be recorded as intent beforehand) and how a
//! failure is reported and retried. Whether a failure is worth retrying comes with it (`ActionError::retryable`).

use std::time::Duration;

use hpcc_api::v1alpha1::{ConditionStatus as S, ConditionType as C, KindStatus, Phase, set_condition};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::decision::{Action, ActionError, Decision, Event, Timing};
use crate::reason::Reason;

/// The machine's reaction to a failed action: a terminal rejection stalls (no retry loop); anything else is
/// retried after Azure's `Retry-After` or the poll interval.
pub fn action_failed<St: KindStatus>(
    status: &St,
    generation: Option<i64>,
    action: &Action,
    error: &ActionError,
    now: Timestamp,
    timing: Timing,
) -> Decision<St> {
    let mut status = status.clone();
    let t = Time(now);
    let mut events = vec![];
    match action {
        // The grant was recorded as intent; it did not happen, so it must not count as made.
        Action::Grant(g) => status.grants_mut().retain(|r| r.made || !r.same_as(g)),
        // A grant Azure refuses for good to revoke must not block deletion forever: forget it and say so. One that
        // may still succeed (throttling, a vault conflict) stays recorded and is tried again.
        Action::RevokeGrant(g) if !error.retryable => {
            status.grants_mut().retain(|r| !r.same_as(g));
            events.push(Event::warning(
                Reason::GrantNotRevoked,
                format!(
                    "could not revoke the key grant of {} on {} ({}); remove it by hand",
                    g.principal_id, g.scope, error.code
                ),
            ));
        }
        _ => {}
    }
    // While a grant is outstanding Azure's window is running: look again soon, whatever the error.
    let deadline_running = matches!(action, Action::Grant(_) | Action::EnableVaultProtection);
    let message = format!("{} failed: {} ({})", action_name(action), error.message, error.code);
    let mut cond = |t_: C, s: S, reason: Reason| {
        set_condition(status.conditions_mut(), t_, s, reason.as_str(), &message, generation, &t)
    };
    let requeue_after = if error.retryable {
        cond(C::Reconciling, S::True, Reason::AzureRetrying);
        // Azure's Retry-After, within bounds: zero (or a date already past) must not requeue at once, over and
        // over, and an absurdly long one must not keep the object unlooked-at beyond the resync.
        let floor = timing.poll.min(Duration::from_secs(1));
        error.retry_after.unwrap_or(timing.poll).min(timing.resync).max(floor)
    } else {
        let rejected_create =
            matches!(action, Action::Create { .. }) && error.status.is_some_and(|s| (400..500).contains(&s));
        let reason = if rejected_create { Reason::CreateRejected } else { Reason::AzureRequestRejected };
        cond(C::Stalled, S::True, reason);
        cond(C::Ready, S::False, reason);
        cond(C::Reconciling, S::False, reason);
        if rejected_create && *status.phase_mut() == Some(Phase::Creating) {
            *status.phase_mut() = Some(Phase::Failed);
            *status.create_requested_at_mut() = None;
        }
        if deadline_running { timing.poll } else { timing.resync }
    };
    events.insert(0, Event::warning(Reason::AzureError, message));
    Decision { status, action: Action::None, requeue_after, events }
}

/// Updates the status after an action succeeded (what cannot be recorded as intent beforehand).
pub fn action_succeeded<St: KindStatus>(status: &mut St, action: &Action) {
    match action {
        Action::Grant(g) => {
            for r in status.grants_mut().iter_mut().filter(|r| r.same_as(g)) {
                r.made = true;
            }
        }
        Action::RevokeGrant(g) => status.grants_mut().retain(|r| !r.same_as(g)),
        _ => {}
    }
}

pub(super) fn action_name(a: &Action) -> &'static str {
    match a {
        // `action_failed` with no action: observing Azure failed.
        Action::None => "reading the cache's state from Azure",
        Action::EnableVaultProtection => "enabling vault purge protection",
        Action::Grant(_) => "granting key access",
        Action::Create { .. } => "creating the cache",
        Action::Update { .. } => "updating the cache",
        Action::Delete => "deleting the cache",
        Action::RevokeGrant(_) => "revoking key access",
        Action::RemoveFinalizer => "removing the finalizer",
    }
}

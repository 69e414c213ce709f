//! The object's namespace credential cannot be used (missing while required, malformed, or refused by Entra ID):
//! nothing in Azure can be read or written for it, so the machine reports that and waits for a person. The operator's
//! edge finds the problem before observing Azure and asks [`credential_unusable`] for the decision, instead of
//! [`decide`](super::decide).

use std::time::Duration;

use hpcc_api::v1alpha1::{
    ConditionStatus as S, ConditionType as C, DeletionPolicy, HpcCacheSpec, HpcCacheStatus, Phase, ReconcilePolicy,
    set_condition,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::decision::{Action, Decision, Event, Timing};
use crate::reason::Reason;

/// Why the namespace's credential cannot be used: one of the `NamespaceCredential*` reasons and a message for
/// people (naming the Secret, never its values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialProblem {
    pub reason: Reason,
    pub message: String,
}

/// How often a credential problem is looked at again: the Secret is not watched (the operator may only `get` it),
/// so a fix is noticed by looking, every four polls (at most the resync interval).
pub fn credential_recheck(timing: Timing) -> Duration {
    timing.resync.min(timing.poll * 4)
}

/// The decision for an object whose namespace credential cannot be used: `Stalled=True` with the problem's reason,
/// the phase kept (`Pending` when there is none), no Azure action; a Warning event only when the problem is new.
/// A deleted object is let go when nothing in Azure needs it (deletionPolicy `Orphan`, or the status records no
/// cache, create request or grant); otherwise its finalizer waits for a usable credential.
pub fn credential_unusable(
    spec: &HpcCacheSpec,
    status: &HpcCacheStatus,
    generation: Option<i64>,
    // Some(the object's reconcile policy) when the object is being deleted.
    deleting: Option<ReconcilePolicy>,
    problem: &CredentialProblem,
    now: Timestamp,
    timing: Timing,
) -> Decision {
    let mut next = status.clone();
    next.observed_generation = generation;
    let t = Time(now);
    let cond = |status: &mut HpcCacheStatus, type_: C, s: S, reason: Reason, message: &str| {
        set_condition(&mut status.conditions, type_, s, reason.as_str(), message, generation, &t)
    };
    if let Some(policy) = deleting {
        let nothing_in_azure =
            status.azure_resource_id.is_none() && status.create_requested_at.is_none() && status.grants.is_empty();
        let release = match spec.deletion_policy {
            DeletionPolicy::Orphan => Some((Reason::Orphaning, "deletionPolicy is Orphan: the Azure cache is kept")),
            _ if policy != ReconcilePolicy::Manage => {
                Some((Reason::Detaching, "the reconcile policy keeps the Azure cache and its key grants"))
            }
            _ if nothing_in_azure => Some((Reason::Deleted, "nothing was made in Azure for this object")),
            _ => None,
        };
        if let Some((reason, message)) = release {
            next.phase = Some(Phase::Deleting);
            cond(&mut next, C::Ready, S::False, reason, message);
            cond(&mut next, C::Reconciling, S::True, reason, message);
            cond(&mut next, C::Stalled, S::False, reason, message);
            return Decision {
                status: next,
                action: Action::RemoveFinalizer,
                requeue_after: timing.poll,
                events: vec![],
            };
        }
        next.phase = Some(Phase::Deleting);
    } else if next.phase.is_none() {
        next.phase = Some(Phase::Pending);
    }
    let already_reported = status.conditions.iter().any(|c| {
        c.type_ == C::Stalled.as_str()
            && c.status == S::True.as_str()
            && c.reason == problem.reason.as_str()
            && c.message == problem.message
    });
    cond(&mut next, C::Ready, S::False, problem.reason, &problem.message);
    cond(&mut next, C::Reconciling, S::False, problem.reason, &problem.message);
    cond(&mut next, C::Stalled, S::True, problem.reason, &problem.message);
    let events = if already_reported { vec![] } else { vec![Event::warning(problem.reason, problem.message.clone())] };
    Decision { status: next, action: Action::None, requeue_after: credential_recheck(timing), events }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_api::v1alpha1::{GrantKind, GrantRecord};

    fn spec(policy: &str) -> HpcCacheSpec {
        let json = format!(
            r#"{{"azure": {{"subscriptionId": "11111111-2222-3333-4444-555555555555", "resourceGroup": "rg", "location": "eastus"}},
               "sku": "Standard_2G", "cacheSizeGB": 3072, "subnetId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
               "deletionPolicy": "{policy}"}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    fn problem() -> CredentialProblem {
        CredentialProblem {
            reason: Reason::NamespaceCredentialRejected,
            message: "Secret ns/hpccache-credential: Entra ID refused it: invalid_client (AADSTS7000215)".into(),
        }
    }

    fn cond(s: &HpcCacheStatus, t: C) -> (&str, &str) {
        let c = s.conditions.iter().find(|c| c.type_ == t.as_str()).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    const TIMING: Timing = Timing { poll: Duration::from_secs(15), resync: Duration::from_secs(600) };

    #[test]
    fn stalls_with_the_reason_once_and_looks_again_soon() {
        let d = credential_unusable(
            &spec("Delete"),
            &HpcCacheStatus::default(),
            Some(3),
            None,
            &problem(),
            Timestamp::UNIX_EPOCH,
            TIMING,
        );
        assert_eq!(d.action, Action::None);
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(d.status.observed_generation, Some(3));
        assert_eq!(cond(&d.status, C::Stalled), ("True", "NamespaceCredentialRejected"));
        assert_eq!(cond(&d.status, C::Ready), ("False", "NamespaceCredentialRejected"));
        assert_eq!(cond(&d.status, C::Reconciling), ("False", "NamespaceCredentialRejected"));
        assert_eq!(d.events.len(), 1);
        assert!(d.events[0].warning && d.events[0].reason == "NamespaceCredentialRejected");
        assert_eq!(d.requeue_after, Duration::from_secs(60), "the Secret is not watched: look again");
        // The same problem again: no second event.
        let again =
            credential_unusable(&spec("Delete"), &d.status, Some(3), None, &problem(), Timestamp::UNIX_EPOCH, TIMING);
        assert!(again.events.is_empty());
        assert_eq!(again.status, d.status);
    }

    #[test]
    fn keeps_the_phase_of_an_existing_cache() {
        let status = HpcCacheStatus {
            phase: Some(Phase::Ready),
            azure_resource_id: Some("/subscriptions/s/x".into()),
            ..Default::default()
        };
        let d = credential_unusable(&spec("Delete"), &status, Some(1), None, &problem(), Timestamp::UNIX_EPOCH, TIMING);
        assert_eq!(d.status.phase, Some(Phase::Ready));
        assert_eq!(cond(&d.status, C::Ready), ("False", "NamespaceCredentialRejected"));
    }

    #[test]
    fn a_deleted_object_is_let_go_only_when_azure_holds_nothing_of_it() {
        let d = |spec: &HpcCacheSpec, status: &HpcCacheStatus| {
            credential_unusable(
                spec,
                status,
                Some(1),
                Some(ReconcilePolicy::Manage),
                &problem(),
                Timestamp::UNIX_EPOCH,
                TIMING,
            )
        };
        // Never got anywhere in Azure: nothing to clean up.
        assert_eq!(d(&spec("Delete"), &HpcCacheStatus::default()).action, Action::RemoveFinalizer);
        // Orphan keeps the cache anyway.
        let made = HpcCacheStatus { azure_resource_id: Some("/subscriptions/s/x".into()), ..Default::default() };
        assert_eq!(d(&spec("Orphan"), &made).action, Action::RemoveFinalizer);
        // A cache, a create request or a grant may be in Azure: wait for a usable credential.
        let grant = GrantRecord {
            scope: "/subscriptions/s/v".into(),
            principal_id: "p".into(),
            tenant_id: None,
            kind: GrantKind::AccessPolicy,
            system_assigned: true,
            made: false,
        };
        let granted = HpcCacheStatus { grants: vec![grant], ..Default::default() };
        let requested = HpcCacheStatus { create_requested_at: Some(Time(Timestamp::UNIX_EPOCH)), ..Default::default() };
        for status in [made, granted, requested] {
            let held = d(&spec("Delete"), &status);
            assert_eq!(held.action, Action::None);
            assert_eq!(held.status.phase, Some(Phase::Deleting));
            assert_eq!(cond(&held.status, C::Stalled), ("True", "NamespaceCredentialRejected"));
        }
        // Under skip or detach-on-delete the cache and grants stay anyway: the object may go.
        let made = HpcCacheStatus { azure_resource_id: Some("/x".into()), ..Default::default() };
        let detached = credential_unusable(
            &spec("Delete"),
            &made,
            Some(1),
            Some(ReconcilePolicy::DetachOnDelete),
            &problem(),
            Timestamp::UNIX_EPOCH,
            TIMING,
        );
        assert_eq!(detached.action, Action::RemoveFinalizer);
    }
}

//! reconcile-policy `skip` (and an unknown policy value): the operator reports what Azure says and writes nothing
//! to Azure of any kind, for a person fixing something in the portal. The decision of the situation that applies is
//! kept as far as it reports; an Azure write it chose is not made, and no intent for it is recorded.

use hpcc_api::v1alpha1::{ConditionStatus as S, ConditionType as C, set_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::outcome::action_name;
use crate::decision::{Action, Decision, Event, Input};
use crate::reason::Reason;

pub(super) fn decide(input: &Input, mut decision: Decision) -> Decision {
    let now = Time(input.facts.now);
    if decision.action.writes_azure() {
        // Intent recorded for the write that will not happen is dropped again.
        let before = input.status;
        decision.status.grants = before.grants.clone();
        decision.status.create_requested_at = before.create_requested_at.clone();
        decision.status.recreations = before.recreations;
        decision.status.phase = before.phase;
        decision.events.retain(|e| e.warning);
        decision.requeue_after = input.timing.resync;
    }
    let would = match &decision.action {
        a if a.writes_azure() => format!("; it would now be {}", action_name(a)),
        _ => String::new(),
    };
    let conditions = &mut decision.status.conditions;
    let generation = input.generation;
    match &input.policy {
        Err(message) => {
            let reason = Reason::InvalidReconcilePolicy.as_str();
            let message = format!("{message}; nothing is written to Azure until it is fixed{would}");
            set_condition(conditions, C::Stalled, S::True, reason, &message, generation, &now);
            set_condition(conditions, C::Reconciling, S::False, reason, &message, generation, &now);
            if !input.status.conditions.iter().any(|c| c.reason == reason) {
                decision.events.push(Event::warning(Reason::InvalidReconcilePolicy, message));
            }
        }
        Ok(_) => {
            let reason = Reason::ReconcileSkipped.as_str();
            let message = format!(
                "hpccache.io/reconcile-policy is skip: the operator reports what Azure says and writes nothing to it{would}"
            );
            set_condition(conditions, C::Reconciling, S::False, reason, &message, generation, &now);
        }
    }
    if decision.action.writes_azure() {
        decision.action = Action::None;
    }
    decision
}

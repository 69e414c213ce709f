//! The first sight of an object: its status says it was seen (phase `Pending`, `Reconciling=True` reason
//! `Accepted`) before Azure is read for it, so an object waiting its turn in the ARM budget is never without a status.

use hpcc_api::v1alpha1::{ConditionStatus as S, ConditionType as C, HpcCacheStatus, Phase, set_condition};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::reason::Reason;

/// The status of an object seen for the first time; None when it already has a phase (it was reconciled before).
pub fn accepted(status: &HpcCacheStatus, generation: Option<i64>, now: Timestamp) -> Option<HpcCacheStatus> {
    if status.phase.is_some() {
        return None;
    }
    let mut next = status.clone();
    next.phase = Some(Phase::Pending);
    next.observed_generation = generation;
    let t = Time(now);
    let message = "accepted; reading Azure for it";
    for (type_, s) in [(C::Ready, S::False), (C::Reconciling, S::True), (C::Stalled, S::False)] {
        set_condition(&mut next.conditions, type_, s, Reason::Accepted.as_str(), message, generation, &t);
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_object_without_a_phase_is_accepted() {
        let now = Timestamp::UNIX_EPOCH;
        let first = accepted(&HpcCacheStatus::default(), Some(3), now).expect("a new object");
        assert_eq!(first.phase, Some(Phase::Pending));
        assert_eq!(first.observed_generation, Some(3));
        let ready = first.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Accepted"));
        assert_eq!(accepted(&first, Some(3), now), None, "seen before");
    }
}

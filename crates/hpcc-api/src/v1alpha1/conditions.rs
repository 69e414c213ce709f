//! Condition types and the one function that sets a condition while keeping its transition time stable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The conditions an `HpcCache` reports: kstatus' Ready/Reconciling/Stalled plus two domain conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    Ready,
    Reconciling,
    Stalled,
    KeyValid,
    KeyAuthorized,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Reconciling => "Reconciling",
            Self::Stalled => "Stalled",
            Self::KeyValid => "KeyValid",
            Self::KeyAuthorized => "KeyAuthorized",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Sets (or adds) a condition. `lastTransitionTime` only moves when the status changes, as kstatus expects.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let new = Condition {
        type_: type_.as_str().to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: now.clone(),
    };
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let transition =
                if existing.status == new.status { existing.last_transition_time.clone() } else { now.clone() };
            *existing = Condition { last_transition_time: transition, ..new };
        }
        None => conditions.push(new),
    }
}

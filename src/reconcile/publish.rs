//! Publish: a decision's events (Kubernetes Events) and its metrics.

use hpcc_api::v1alpha1::Phase;
use hpcc_core::Decision;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

use super::metrics::Metrics;

/// Emits the decision's events on the object (notes are capped at Kubernetes' 1 kB).
pub async fn events<K: Resource<DynamicType = ()>, S>(recorder: &Recorder, obj: &K, decision: &Decision<S>) {
    let reference = obj.object_ref(&());
    for e in &decision.events {
        let event = Event {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason.clone(),
            note: Some(e.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            warn!(error = %err, "could not publish event");
        }
    }
}

/// The object's phase, whether it is Ready and, while a grant is outstanding, the deadline and the time left (on
/// Azure's clock `now`).
pub fn metrics(metrics: &Metrics, ns: &str, name: &str, decision: &Decision, now: Timestamp) {
    let status = &decision.status;
    let deadline = status.authorization_deadline.as_ref().map(|t| t.0);
    object(metrics, ns, name, status.phase, &status.conditions);
    metrics.set_deadline(ns, name, deadline.map(|d| d.duration_since(now).as_secs()));
    metrics.set_deadline_timestamp(ns, name, deadline.map(|d| d.as_second()));
}

/// The per-object series both kinds have: phase, Ready, Stalled.
pub fn object(metrics: &Metrics, ns: &str, name: &str, phase: Option<Phase>, conditions: &[Condition]) {
    let is_true = |t: &str| conditions.iter().any(|c| c.type_ == t && c.status == "True");
    metrics.set_phase(ns, name, phase);
    metrics.set_object_ready(ns, name, Some(is_true("Ready")));
    metrics.set_object_stalled(ns, name, Some(is_true("Stalled")));
}

pub fn forget(metrics: &Metrics, ns: &str, name: &str) {
    metrics.set_phase(ns, name, None);
    metrics.set_object_ready(ns, name, None);
    metrics.set_object_stalled(ns, name, None);
    metrics.set_deadline(ns, name, None);
    metrics.set_deadline_timestamp(ns, name, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_api::v1alpha1::{HpcCacheStatus, Phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn decision(phase: Phase, ready: &str, deadline: Option<Timestamp>) -> Decision {
        let ready = Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: Some(1),
        };
        Decision {
            status: HpcCacheStatus {
                phase: Some(phase),
                conditions: vec![ready],
                authorization_deadline: deadline.map(Time),
                ..Default::default()
            },
            action: hpcc_core::Action::None,
            requeue_after: std::time::Duration::ZERO,
            events: vec![],
        }
    }

    #[test]
    fn a_waiting_object_exports_its_deadline_then_ready_then_nothing_once_gone() {
        let m = Metrics::new();
        let now: Timestamp = "2026-11-29T03:00:00Z".parse().unwrap();
        let deadline: Timestamp = "2026-11-29T04:30:00Z".parse().unwrap();
        metrics(&m, "ns", "climate", &decision(Phase::WaitingForKey, "False", Some(deadline)), now);
        let text = m.render();
        let series = |metric: &str| format!("{metric}{{namespace=\"ns\",name=\"climate\"}}");
        assert!(text.contains(&format!("{} 5400", series("hpccache_authorization_deadline_seconds"))), "{text}");
        assert!(
            text.contains(&format!(
                "{} {}",
                series("hpccache_authorization_deadline_timestamp_seconds"),
                deadline.as_second()
            )),
            "{text}"
        );
        assert!(text.contains(&format!("{} 0", series("hpccache_ready"))), "{text}");

        metrics(&m, "ns", "climate", &decision(Phase::Ready, "True", None), now);
        let text = m.render();
        assert!(text.contains(&format!("{} 1", series("hpccache_ready"))), "{text}");
        assert!(
            !text.contains("hpccache_authorization_deadline_timestamp_seconds{"),
            "no deadline once granted: {text}"
        );

        forget(&m, "ns", "climate");
        assert!(!m.render().contains("name=\"climate\""), "{}", m.render());
    }
}

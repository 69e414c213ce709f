//! Publish: a decision's events (Kubernetes Events) and its metrics.

use hpcc_api::v1alpha1::HpcCache;
use hpcc_core::Decision;
use jiff::Timestamp;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

use super::metrics::Metrics;

/// Emits the decision's events on the object (notes are capped at Kubernetes' 1 kB).
pub async fn events(recorder: &Recorder, obj: &HpcCache, decision: &Decision) {
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

/// The object's phase and, while a grant is outstanding, the time left (on Azure's clock `now`).
pub fn metrics(metrics: &Metrics, ns: &str, name: &str, decision: &Decision, now: Timestamp) {
    metrics.set_phase(ns, name, decision.status.phase);
    let left = decision.status.authorization_deadline.as_ref().map(|t| t.0.duration_since(now).as_secs());
    metrics.set_deadline(ns, name, left);
}

/// The object is gone: drop its series.
pub fn forget(metrics: &Metrics, ns: &str, name: &str) {
    metrics.set_phase(ns, name, None);
    metrics.set_deadline(ns, name, None);
}

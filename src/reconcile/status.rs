//! Record status: the decision's status is written (server-side apply) before its action is taken. [`Recorded`]
//! makes that order a type: [`act`](super::act) takes only a `Recorded`, and only [`record`] makes one.

use hpcc_api::v1alpha1::HpcCacheStatus;
use hpcc_core::{Action, Decision};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::own_writes::OwnWrites;

/// A kind the operator writes status for (`HpcCache`, `AmlFilesystem`).
pub trait Kind: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug {}
impl<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug> Kind for K {}

/// Field manager for server-side apply of status.
pub const MANAGER: &str = "hpc-cache-operator";

/// A decision whose status (the intent: create time, grant record, re-creation count) is stored.
pub struct Recorded<S = HpcCacheStatus>(Decision<S>);

impl<S> Recorded<S> {
    pub fn decision(&self) -> &Decision<S> {
        &self.0
    }

    pub fn action(&self) -> &Action {
        &self.0.action
    }
}

/// Stores the decision's status (skipped when it did not change) and returns it as recorded; None when the object
/// is gone, so nothing could be recorded and nothing may be done.
pub async fn record<K: Kind, S: Serialize + PartialEq>(
    api: &Api<K>,
    writes: &OwnWrites,
    name: &str,
    old: &S,
    decision: Decision<S>,
) -> Result<Option<Recorded<S>>, kube::Error> {
    Ok(write(api, writes, name, old, &decision.status).await?.then_some(Recorded(decision)))
}

/// Server-side apply of the whole status, skipped when nothing changed. False when the object is gone.
pub async fn write<K: Kind, S: Serialize + PartialEq>(
    api: &Api<K>,
    writes: &OwnWrites,
    name: &str,
    old: &S,
    new: &S,
) -> Result<bool, kube::Error> {
    if stored_alike(old, new) {
        return Ok(true);
    }
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    match api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await {
        Ok(written) => {
            writes.remember(&written);
            Ok(true)
        }
        // The object is gone (finalizer removed meanwhile): nothing to record.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether two statuses are stored alike: compared as the apiserver keeps them (JSON; times to the second), not as
/// decided (a deadline computed from Azure's sub-second `createdAt` differs from its stored copy on every poll).
fn stored_alike<S: Serialize + PartialEq>(old: &S, new: &S) -> bool {
    old == new || serde_json::to_value(old).ok().is_some_and(|o| serde_json::to_value(new).ok() == Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// Azure's `createdAt` has sub-second precision, the apiserver keeps whole seconds: a deadline derived from it
    /// never equalled the stored one, so every poll of a waiting cache wrote its status (264 writes/s at 1000
    /// caches in `make bench`).
    #[test]
    fn a_status_that_differs_only_below_the_second_is_not_written_again() {
        let decided: jiff::Timestamp = "2026-12-02T20:41:29.1757534Z".parse().unwrap();
        let new = HpcCacheStatus { authorization_deadline: Some(Time(decided)), ..Default::default() };
        let stored: HpcCacheStatus = serde_json::from_value(serde_json::to_value(&new).unwrap()).unwrap();
        assert_ne!(stored, new, "the apiserver's copy is truncated to the second");
        assert!(stored_alike(&stored, &new));
        let later =
            HpcCacheStatus { authorization_deadline: Some(Time("2026-12-02T20:41:30Z".parse().unwrap())), ..new };
        assert!(!stored_alike(&stored, &later), "a change of a second is a change");
    }
}

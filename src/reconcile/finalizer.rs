//! The finalizer that keeps an object until its Azure resource is handled by `deletionPolicy`.

use kube::ResourceExt;

use super::own_writes::OwnWrites;
use super::status::Kind;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

pub const FINALIZER: &str = "hpccache.io/finalizer";

/// Where the object stands with the finalizer.
pub enum Finalizer {
    /// Ours is on the object: go on.
    Held,
    /// It was just added: look again once the write is seen.
    Added,
    /// The object is being deleted and ours is gone: nothing left to do.
    Released,
}

/// Adds the finalizer to a live object that lacks it.
pub async fn ensure<K: Kind>(api: &Api<K>, writes: &OwnWrites, obj: &K) -> Result<Finalizer, kube::Error> {
    let held = obj.finalizers().iter().any(|f| f == FINALIZER);
    match (held, obj.meta().deletion_timestamp.is_some()) {
        (true, _) => Ok(Finalizer::Held),
        (false, true) => Ok(Finalizer::Released),
        (false, false) => {
            let mut finalizers = obj.finalizers().to_vec();
            finalizers.push(FINALIZER.to_string());
            patch(api, writes, obj, finalizers).await?;
            Ok(Finalizer::Added)
        }
    }
}

/// Removes the finalizer, letting Kubernetes delete the object.
pub async fn remove<K: Kind>(api: &Api<K>, writes: &OwnWrites, obj: &K) -> Result<(), kube::Error> {
    let finalizers = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    patch(api, writes, obj, finalizers).await
}

/// A merge patch guarded by the resourceVersion the decision was made on, so a concurrent change is never lost.
async fn patch<K: Kind>(api: &Api<K>, writes: &OwnWrites, obj: &K, finalizers: Vec<String>) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    let written = api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    writes.remember(&written);
    Ok(())
}

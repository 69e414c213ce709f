//! Azure changes seen in a shared cache list wake the objects they belong to. A list read by any reconcile is
//! compared with the previous list of its resource group; each object whose cache changed (or appeared, or went)
//! is reconciled at once, so a cache that reports `WaitingForKey` is reached within one list refresh whatever its
//! own poll interval (polls may be spread out under load; see [`pacing`](super::pacing)).

use std::collections::HashMap;
use std::sync::Mutex;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use hpcc_api::v1alpha1::HpcCache;
use hpcc_azure::ResourceId;
use kube::runtime::reflector::ObjectRef;

/// Which object each Azure cache belongs to, and where to send the objects to wake.
#[derive(Default)]
pub struct AzureChanges {
    objects: Mutex<HashMap<String, ObjectRef<HpcCache>>>,
    wake: Mutex<Option<UnboundedSender<ObjectRef<HpcCache>>>>,
}

impl AzureChanges {
    /// The stream of objects to wake, for the controller (`reconcile_on`); replaces any earlier one.
    pub fn connect(&self) -> UnboundedReceiver<ObjectRef<HpcCache>> {
        let (tx, rx) = unbounded();
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// `obj` manages the Azure cache `cache`.
    pub fn belongs(&self, cache: &ResourceId, obj: &HpcCache) {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let key = cache.to_string().to_ascii_lowercase();
        objects.entry(key).or_insert_with(|| ObjectRef::from_obj(obj));
    }

    /// `obj` is gone.
    pub fn forget(&self, cache: &ResourceId) {
        self.objects.lock().unwrap_or_else(|e| e.into_inner()).remove(&cache.to_string().to_ascii_lowercase());
    }

    /// These caches (lower-case ids) changed in a list: wake their objects.
    pub fn changed(&self, caches: &[String]) {
        if caches.is_empty() {
            return;
        }
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        let Some(wake) = wake.as_ref() else { return };
        for obj in caches.iter().filter_map(|c| objects.get(c)) {
            let _ = wake.unbounded_send(obj.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_changed_cache_wakes_its_object_only() {
        let changes = AzureChanges::default();
        let mut woken = changes.connect();
        let mut obj: HpcCache = serde_json::from_value(serde_json::json!({
            "apiVersion": "hpccache.io/v1alpha1", "kind": "HpcCache",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"azure": {"subscriptionId": "s", "resourceGroup": "rg", "location": "eastus"},
                     "sku": "Standard_2G", "cacheSizeGB": 3072, "subnetId": "x"},
        }))
        .unwrap();
        let id = ResourceId::cache("s", "rg", "a");
        changes.belongs(&id, &obj);
        obj.metadata.name = Some("b".into());
        changes.belongs(&ResourceId::cache("s", "rg", "b"), &obj);
        changes.changed(&[id.to_string().to_ascii_lowercase(), "/subscriptions/s/unknown".into()]);
        drop(changes); // closes the stream after what was sent
        let got: Vec<ObjectRef<HpcCache>> = woken.by_ref().collect().await;
        assert_eq!(got.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["a"]);
    }
}

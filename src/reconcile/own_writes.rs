//! The operator's own recent writes to its objects, so a reconcile can decide from the watch's copy instead of
//! reading the object again: the copy is fresh unless it lacks a write this operator made moments ago (the watch
//! lags behind the write; deciding from the older copy and writing the whole status back would undo that write).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// After this long the watch has long shown a write (or a newer change replaced it): the record is dropped.
const WATCH_LAG_BOUND: Duration = Duration::from_secs(30);

/// The resourceVersion each object had after this operator last wrote it, until the watch shows that version.
#[derive(Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<String, (String, Instant)>>,
    /// The resourceVersion of each object's last write by us, until its watch event (the echo) comes.
    echoes: Mutex<HashMap<String, String>>,
}

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the object is now at `resource_version` by our write.
    pub fn remember<K: Resource<DynamicType = ()>>(&self, written: &K) {
        if let Some(rv) = written.resource_version() {
            self.lock().insert(key(written), (rv.clone(), Instant::now()));
            self.echoes.lock().unwrap_or_else(|e| e.into_inner()).insert(key(written), rv);
        }
    }

    /// Whether a watch event is the echo of our own last write to the object: nothing changed that the reconcile
    /// which wrote it did not know (it already asked for its next look), so no reconcile is needed for it. A burst
    /// of new objects makes several writes each; reconciling every echo doubled the queue.
    pub fn is_echo<K: Resource<DynamicType = ()>>(&self, event: &K) -> bool {
        let mut echoes = self.echoes.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(event);
        let echo = echoes.get(&k).is_some_and(|rv| event.resource_version().as_ref() == Some(rv));
        if echo {
            echoes.remove(&k);
        }
        echo
    }

    /// Whether the watch's copy may lack a write of ours: we wrote the object recently and the copy is at another
    /// version. (resourceVersions are compared for equality only, as Kubernetes asks.)
    pub fn stale<K: Resource<DynamicType = ()>>(&self, cached: &K) -> bool {
        let mut written = self.lock();
        let k = key(cached);
        match written.get(&k) {
            Some((rv, at)) if at.elapsed() < WATCH_LAG_BOUND && cached.resource_version().as_ref() != Some(rv) => true,
            Some(_) => {
                written.remove(&k);
                false
            }
            None => false,
        }
    }

    /// The object to decide from: the watch's copy when it is fresh, else the object read now (None: it is gone).
    pub async fn current<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug>(
        &self,
        api: &Api<K>,
        cached: Arc<K>,
    ) -> Result<Option<Arc<K>>, kube::Error> {
        if !self.stale(&*cached) {
            return Ok(Some(cached));
        }
        let read = api.get_opt(&cached.name_any()).await?;
        if read.is_some() {
            self.lock().remove(&key(&*cached));
        }
        Ok(read.map(Arc::new))
    }

    pub fn forget<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        self.lock().remove(&key(obj));
        self.echoes.lock().unwrap_or_else(|e| e.into_inner()).remove(&key(obj));
    }
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn at(rv: &str) -> ConfigMap {
        let mut o = ConfigMap::default();
        o.metadata.name = Some("c".into());
        o.metadata.namespace = Some("ns".into());
        o.metadata.resource_version = Some(rv.into());
        o
    }

    #[test]
    fn the_watch_copy_is_stale_only_until_it_shows_our_write() {
        let writes = OwnWrites::default();
        assert!(!writes.stale(&at("1")), "nothing written: the copy is all there is");
        writes.remember(&at("5"));
        assert!(writes.stale(&at("4")), "the watch has not delivered our write yet");
        assert!(!writes.stale(&at("5")), "it has");
        assert!(!writes.stale(&at("4")), "and the record is gone once seen");
    }

    #[test]
    fn only_the_event_of_our_own_last_write_is_an_echo() {
        let writes = OwnWrites::default();
        assert!(!writes.is_echo(&at("3")), "nothing written");
        writes.remember(&at("5"));
        assert!(!writes.is_echo(&at("4")), "an event from before our write");
        assert!(writes.is_echo(&at("5")), "our write");
        assert!(!writes.is_echo(&at("5")), "once: a re-list delivers it again as the object's state");
        writes.remember(&at("7"));
        assert!(!writes.is_echo(&at("8")), "someone else's change after ours");
    }
}

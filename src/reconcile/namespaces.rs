//! The vault scopes each namespace may use (the Namespace annotation
//! [`hpcc_core::ALLOWED_VAULT_SCOPES_ANNOTATION`]), kept from a watch on Namespaces: a reconcile reads no Namespace,
//! and a change to the annotation re-triggers the namespace's objects (see `reconcile::run`).

use std::collections::HashMap;
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::{Client, ResourceExt};

/// The annotation of every namespace seen by the watch.
#[derive(Default)]
pub struct NamespaceScopes {
    seen: RwLock<HashMap<String, Option<String>>>,
}

impl NamespaceScopes {
    /// Records what the watch delivered; true when the annotation changed (the namespace's objects must be looked
    /// at again).
    pub fn update(&self, ns: &impl ResourceExt) -> bool {
        let scopes = ns.annotations().get(hpcc_core::ALLOWED_VAULT_SCOPES_ANNOTATION).cloned();
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        seen.insert(ns.name_any(), scopes.clone()) != Some(scopes)
    }

    /// The namespace's allowed vault scopes (None: no annotation). A namespace the watch has not delivered yet is
    /// read once: deciding without it could allow a vault the annotation forbids.
    pub async fn allowed_vault_scopes(&self, client: &Client, ns: &str) -> Result<Option<String>, kube::Error> {
        if let Some(known) = self.seen.read().unwrap_or_else(|e| e.into_inner()).get(ns) {
            return Ok(known.clone());
        }
        let namespace = Api::<Namespace>::all(client.clone()).get_metadata(ns).await?;
        let read = namespace.annotations().get(hpcc_core::ALLOWED_VAULT_SCOPES_ANNOTATION).cloned();
        // The watch may have delivered a newer value meanwhile: it wins, and this read only fills a gap.
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        Ok(seen.entry(ns.to_string()).or_insert(read).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn ns(name: &str, scopes: Option<&str>) -> Namespace {
        let annotations =
            scopes.map(|s| [(hpcc_core::ALLOWED_VAULT_SCOPES_ANNOTATION.to_string(), s.to_string())].into());
        Namespace {
            metadata: ObjectMeta { name: Some(name.into()), annotations, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn only_a_changed_annotation_retriggers() {
        let scopes = NamespaceScopes::default();
        assert!(scopes.update(&ns("a", None)), "first sight");
        assert!(!scopes.update(&ns("a", None)), "unchanged");
        assert!(scopes.update(&ns("a", Some("/subscriptions/x"))), "annotation added");
        assert!(!scopes.update(&ns("a", Some("/subscriptions/x"))));
        assert!(scopes.update(&ns("a", None)), "annotation removed");
    }
}

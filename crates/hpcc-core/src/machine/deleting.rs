//! The object is being deleted, or the Azure cache belongs to another object.

use hpcc_api::v1alpha1::{ADOPT_ANNOTATION, DeletionPolicy, Phase, ReconcilePolicy};

use super::draft::Draft;
use crate::azure_state::ProvisioningState;
use crate::decision::{Action, OWNER_TAG};
use crate::facts::CacheFacts;
use crate::reason::Reason;

impl Draft<'_> {
    /// The owner of an existing cache, when it is another object (in this cluster or another).
    pub(super) fn owned_elsewhere(&self, cache: &CacheFacts) -> Option<String> {
        cache
            .tags
            .get(OWNER_TAG)
            .filter(|o| o.as_str() != self.input.owner && o.as_str() != self.input.legacy_owner)
            .cloned()
    }

    /// A cache without an owner tag was made outside the operator: it is adopted only when the object asks.
    pub(super) fn not_adopted(&self, cache: &CacheFacts) -> bool {
        !cache.tags.contains_key(OWNER_TAG) && !self.input.adopt
    }

    /// An Azure cache made outside the operator, not adopted: touch nothing, and let this object go when deleted.
    pub(super) fn foreign(&mut self) -> Action {
        let id = self.input.cache_id;
        if self.input.deleting {
            let msg = format!("the Azure cache {id} was not made by this operator and is left alone");
            self.progressing(Phase::Deleting, Reason::NotOwned, &msg);
            return Action::RemoveFinalizer;
        }
        let msg = format!(
            "an Azure cache {id} already exists without the {OWNER_TAG} tag (made outside this operator); nothing is written to it. To manage it, annotate this object {ADOPT_ANNOTATION}: \"true\"; otherwise pick another spec.azure.name"
        );
        self.stalled(Phase::Pending, Reason::CacheExistsNotOwned, &msg);
        Action::None
    }

    /// The object is deleted under reconcile-policy skip or detach-on-delete: the cache and its grants stay.
    pub(super) fn detached(&mut self, policy: ReconcilePolicy) -> Action {
        let msg = format!("reconcile-policy is {}: the Azure cache and its key grants are kept", policy.as_str());
        self.progressing(Phase::Deleting, Reason::Detaching, &msg);
        Action::RemoveFinalizer
    }

    /// Another `HpcCache` manages this Azure cache: touch nothing, and let this object go when it is deleted.
    pub(super) fn not_ours(&mut self, owner: &str) -> Action {
        let msg =
            format!("the Azure cache {} belongs to HpcCache {owner}; this object leaves it alone", self.input.cache_id);
        if self.input.deleting {
            self.progressing(Phase::Deleting, Reason::NotOwned, &msg);
            return Action::RemoveFinalizer;
        }
        self.stalled(Phase::Failed, Reason::CacheOwnedByAnother, &msg);
        Action::None
    }

    pub(super) fn deleting(&mut self) -> Action {
        if self.spec().deletion_policy == DeletionPolicy::Orphan {
            self.progressing(Phase::Deleting, Reason::Orphaning, "deletionPolicy is Orphan: the Azure cache is kept");
            return Action::RemoveFinalizer;
        }
        match &self.input.facts.cache {
            Some(c) if c.provisioning_state == ProvisioningState::Deleting => {
                self.progressing(Phase::Deleting, Reason::DeletingCache, "waiting for Azure to delete the cache");
                Action::None
            }
            Some(_) => {
                self.progressing(Phase::Deleting, Reason::DeletingCache, "the HpcCache is being deleted");
                Action::Delete
            }
            None => match self.recorded_sa_grant() {
                Some(grant) => {
                    self.progressing(
                        Phase::Deleting,
                        Reason::RevokingGrant,
                        "revoking the key grant made for the cache's system-assigned identity",
                    );
                    Action::RevokeGrant(grant)
                }
                None => {
                    self.progressing(Phase::Deleting, Reason::Deleted, "the Azure cache is gone");
                    Action::RemoveFinalizer
                }
            },
        }
    }
}

//! The object is being deleted, or the Azure cache belongs to another object.

use hpcc_api::v1alpha1::{DeletionPolicy, Phase};

use super::draft::Draft;
use crate::azure_state::ProvisioningState;
use crate::decision::{Action, OWNER_TAG};
use crate::facts::CacheFacts;
use crate::reason::Reason;

impl Draft<'_> {
    /// The owner of an existing cache, when it is another object. A cache without the tag (made outside the
    /// operator) is adopted: the tag is added with the next update.
    pub(super) fn owned_elsewhere(&self, cache: &CacheFacts) -> Option<String> {
        cache.tags.get(OWNER_TAG).filter(|o| o.as_str() != self.input.owner).cloned()
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
                Action::DeleteCache
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

//! Azure has no cache: check the key, the vault and the identity (granting a user-assigned identity first in
//! Automatic mode), then create it.

use std::ops::ControlFlow::{self, Break, Continue};

use hpcc_api::v1alpha1::{ConditionStatus as S, ConditionType as C, IdentityType, KeyAccess, Phase};

use super::draft::Draft;
use crate::decision::Action;
use crate::facts::{IdentityFacts, KeyFacts, VaultFacts};
use crate::reason::Reason;

/// A check before the create: go on, or stop here with this action.
type Gate<T = ()> = ControlFlow<Action, T>;

impl Draft<'_> {
    pub(super) fn no_cache(&mut self) -> Action {
        // Forget the previous cache (deleted for re-creation or out of band); its system principal is gone too.
        if self.status.azure_resource_id.is_some() && self.status.create_requested_at.is_none() {
            self.status.principal_id = None;
            self.status.tenant_id = None;
            self.status.created_at = None;
            self.status.authorization_deadline = None;
            self.status.provisioning_state = None;
            self.status.health_state = None;
            self.status.active_key_url = None;
            self.status.active_key = None;
            self.status.mount_addresses = vec![];
            self.status.authorized_at = None;
        }
        if let Some(grant) = self.recorded_sa_grant() {
            self.progressing(
                Phase::Deleting,
                Reason::RevokingGrant,
                "revoking the key grant of the previous cache's identity",
            );
            return Action::RevokeGrant(grant);
        }
        match self.ready_to_create() {
            Break(action) => action,
            Continue(key_url) => self.create(key_url),
        }
    }

    /// The checks before a create, in order; `Continue(key url)` (None for Microsoft-managed keys) when all pass.
    fn ready_to_create(&mut self) -> Gate<Option<String>> {
        self.create_not_blocked()?;
        if matches!(self.input.facts.vault, Some(VaultFacts::Invalid { .. })) {
            // A vault that is unusable (or not allowed) is reported first: its key was never read.
            self.vault_ready_for_create()?;
        }
        let key_url = self.validated_key()?;
        if self.spec().encryption.is_some() {
            self.vault_ready_for_create()?;
        }
        if self.spec().identity.type_ == IdentityType::UserAssigned {
            self.user_assigned_ready()?;
        }
        Continue(key_url)
    }

    /// A recorded create_requested_at with no cache means the PUT may not have been sent (crash) or Azure does not
    /// show it yet: re-sending is idempotent (same name), so the cache is never duplicated or lost.
    fn create(&mut self, key_url: Option<String>) -> Action {
        if self.status.create_requested_at.is_none() {
            self.status.create_requested_at = Some(self.now.clone());
        }
        self.status.azure_resource_id = Some(self.input.cache_id.to_string());
        let message = if self.status.recreations > 0 {
            format!("creating the cache in Azure (re-creation {})", self.status.recreations)
        } else {
            "creating the cache in Azure".to_string()
        };
        self.progressing(Phase::Creating, Reason::Creating, &message);
        Action::Create { key_url }
    }

    /// A create Azure refused (e.g. product retirement) is not retried until the spec changes.
    fn create_not_blocked(&mut self) -> Gate {
        let blocked = self.input.status.conditions.iter().any(|c| {
            c.type_ == C::Stalled.as_str()
                && c.status == S::True.as_str()
                && c.reason == Reason::CreateRejected.as_str()
                && c.observed_generation == self.input.generation
        });
        if blocked {
            self.requeue_after = self.input.timing.resync;
            return Break(Action::None);
        }
        Continue(())
    }

    /// The key URL when the key is usable (None for Microsoft-managed keys); otherwise says why not.
    fn validated_key(&mut self) -> Gate<Option<String>> {
        if self.spec().encryption.is_none() {
            self.cond(C::KeyValid, S::True, Reason::MicrosoftManagedKey, "the cache uses Microsoft-managed keys");
            return Continue(None);
        }
        match self.input.facts.key.clone() {
            Some(KeyFacts::Valid { kid }) => {
                self.cond(C::KeyValid, S::True, Reason::KeyValid, &format!("{kid} is an enabled 2048-bit RSA key"));
                Continue(Some(kid))
            }
            Some(KeyFacts::Invalid { reason, message }) => {
                self.cond(C::KeyValid, S::False, reason, &message);
                self.stalled(Phase::Pending, reason, &message);
                Break(Action::None)
            }
            None => {
                self.cond(C::KeyValid, S::Unknown, Reason::Checking, "the key has not been checked yet");
                self.progressing(Phase::Pending, Reason::CheckingKey, "checking the key and the vault");
                Break(Action::None)
            }
        }
    }

    /// Vault problems stall; missing purge protection is fixed in Automatic mode and reported in Manual mode.
    fn vault_ready_for_create(&mut self) -> Gate {
        match self.input.facts.vault.clone() {
            Some(VaultFacts::Usable { protected: true, .. }) => Continue(()),
            Some(VaultFacts::Usable { protected: false, .. }) if self.spec().key_access == KeyAccess::Automatic => {
                self.progressing(
                    Phase::Pending,
                    Reason::EnablingPurgeProtection,
                    "turning on soft delete and purge protection on the Key Vault (required for customer-managed keys)",
                );
                Break(Action::EnableVaultProtection)
            }
            Some(VaultFacts::Usable { protected: false, .. }) => {
                self.stalled(
                    Phase::Pending,
                    Reason::VaultPurgeProtectionDisabled,
                    "the Key Vault needs soft delete and purge protection before the cache can be created; keyAccess is Manual, so turn them on (az keyvault update --enable-purge-protection true)",
                );
                Break(Action::None)
            }
            Some(VaultFacts::Invalid { reason, message }) => {
                self.cond(C::KeyValid, S::False, reason, &message);
                self.stalled(Phase::Pending, reason, &message);
                Break(Action::None)
            }
            None => {
                self.progressing(Phase::Pending, Reason::CheckingVault, "checking the Key Vault");
                Break(Action::None)
            }
        }
    }

    /// A user-assigned identity must exist; in Automatic mode it is granted access before the cache exists.
    fn user_assigned_ready(&mut self) -> Gate {
        let (principal, tenant) = match self.input.facts.identity.clone() {
            Some(IdentityFacts::Usable { principal_id, tenant_id, .. }) => (principal_id, tenant_id),
            Some(IdentityFacts::Invalid { reason, message }) => {
                self.stalled(Phase::Pending, reason, &message);
                return Break(Action::None);
            }
            None => {
                self.progressing(Phase::Pending, Reason::CheckingIdentity, "looking up the user-assigned identity");
                return Break(Action::None);
            }
        };
        self.status.principal_id = Some(principal.clone());
        self.status.tenant_id = tenant.clone();
        if self.spec().encryption.is_none() {
            return Continue(());
        }
        let trusted = self.input.facts.identity.as_ref().is_some_and(IdentityFacts::has_key_access);
        if trusted || self.grant_made_for(&principal) {
            self.cond(
                C::KeyAuthorized,
                S::True,
                Reason::IdentityAuthorized,
                "the user-assigned identity can use the key",
            );
            return Continue(());
        }
        if self.spec().key_access == KeyAccess::Manual {
            // Manual: the cache is created and waits for a person (the 90-minute clock starts).
            self.cond(
                C::KeyAuthorized,
                S::False,
                Reason::AwaitingManualGrant,
                "the user-assigned identity has no access to the key yet",
            );
            return Continue(());
        }
        let message = "granting the user-assigned identity access to the key before creating the cache";
        let grant = self.grant(&principal, tenant);
        self.cond(C::KeyAuthorized, S::False, Reason::Granting, message);
        self.progressing(Phase::Authorizing, Reason::Authorizing, message);
        Break(grant)
    }
}

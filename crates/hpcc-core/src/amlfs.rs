//! The machine for an `AmlFilesystem` (Azure Managed Lustre), from the pieces `HpcCache` uses: the key and vault
//! verdicts, grants recorded as intent before they are made, the owner tag, reconcile and deletion policies, and the
//! shared outcome of an action ([`action_failed`](crate::action_failed), [`action_succeeded`](crate::action_succeeded)).
//!
//! What differs from a cache: the identity must be able to use the key before the file system is created (Azure
//! refuses the create otherwise), so every grant comes first and there is no WaitingForKey and no window:
//!
//! ```text
//! Pending ──(vault, key, identity checked; grants made: key access, storage roles)──> Creating ──> Ready
//! Ready ──(key or tags changed)──> Updating ──> Ready                 any ──(deleted)──> Deleting ──> gone
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use hpcc_api::v1alpha1::{
    AmlFilesystemSpec, AmlFilesystemStatus, ConditionStatus as S, ConditionType as C, DeletionPolicy, GrantKind,
    GrantRecord, KeyAccess, Phase, ReconcilePolicy, set_condition,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::azure_state::ProvisioningState as P;
use crate::decision::{Action, ActionError, Decision, Event, OWNER_TAG, Timing};
use crate::facts::{IdentityFacts, KeyFacts, VaultFacts};
use crate::reason::Reason;
use crate::validate::short_key;

/// What Azure reported about the file system.
#[derive(Clone, Debug, PartialEq)]
pub struct FilesystemFacts {
    pub id: String,
    pub provisioning_state: P,
    /// `health.state` (Available, Degraded, Transitioning, Maintenance, Expanding, Unavailable).
    pub health_state: Option<String>,
    pub status_description: Option<String>,
    pub key_url: Option<String>,
    pub key_vault_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub mgs_address: Option<String>,
    pub mount_command: Option<String>,
    pub lustre_version: Option<String>,
}

/// Whether the HPC Cache resource provider holds the two storage roles blob integration needs.
#[derive(Clone, Debug, PartialEq)]
pub struct BlobAccessFacts {
    /// The resource provider's service principal (object id) in the tenant.
    pub provider_principal_id: String,
    pub storage_account_contributor: bool,
    pub storage_blob_data_contributor: bool,
}

/// Everything known for one reconcile of an `AmlFilesystem`.
#[derive(Clone, Debug)]
pub struct AmlFacts {
    /// Azure's clock.
    pub now: Timestamp,
    pub filesystem: Option<FilesystemFacts>,
    pub key: Option<KeyFacts>,
    pub vault: Option<VaultFacts>,
    pub identity: Option<IdentityFacts>,
    /// None without blob integration, or before it was read.
    pub blob: Option<BlobAccessFacts>,
}

/// The inputs of [`decide_amlfs`].
pub struct AmlInput<'a> {
    pub spec: &'a AmlFilesystemSpec,
    pub generation: Option<i64>,
    pub status: &'a AmlFilesystemStatus,
    pub deleting: bool,
    /// The ARM id of the file system.
    pub resource_id: &'a str,
    /// The owner tag's value (`cluster/namespace/name`).
    pub owner: &'a str,
    pub policy: Result<ReconcilePolicy, String>,
    pub adopt: bool,
    pub facts: &'a AmlFacts,
    pub timing: Timing,
}

/// Grants take effect some minutes after Azure accepted them (Key Vault documents up to 10 for RBAC, blob roles
/// up to 5): a create refused within this time after the operator's own grants is retried, not reported as final.
pub const GRANT_PROPAGATION: SignedDuration = SignedDuration::from_mins(15);

/// The tags the file system should carry: the spec's plus the owner tag.
pub fn desired_aml_tags(spec: &AmlFilesystemSpec, owner: &str) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    tags.insert(OWNER_TAG.to_string(), owner.to_string());
    tags
}

/// Decides the next step for an `AmlFilesystem`. Pure and total.
pub fn decide_amlfs(input: &AmlInput) -> Decision<AmlFilesystemStatus> {
    let mut d = AmlDraft::new(input);
    let policy = input.policy.clone().unwrap_or(ReconcilePolicy::Skip);
    let fs = input.facts.filesystem.as_ref();
    let owner_tag = fs.and_then(|f| f.tags.get(OWNER_TAG));
    let action = match (fs, owner_tag) {
        (Some(_), Some(other)) if other != input.owner => d.not_ours(other),
        (Some(_), None) if !input.adopt => d.not_ours("(none: made outside this operator)"),
        _ if input.deleting => d.deleting(policy),
        (None, _) => d.no_filesystem(),
        (Some(f), _) => d.filesystem_exists(f),
    };
    if let Err(message) = &input.policy {
        let message = format!("{message}; nothing is written to Azure until it is fixed");
        d.stalled(d.status.phase.unwrap_or_default(), Reason::InvalidReconcilePolicy, &message);
    }
    if policy == ReconcilePolicy::Skip && action.writes_azure() {
        let message =
            "hpccache.io/reconcile-policy is skip: the operator reports what Azure says and writes nothing to it";
        d.status.grants = input.status.grants.clone();
        d.status.create_requested_at = input.status.create_requested_at.clone();
        d.cond(C::Reconciling, S::False, Reason::ReconcileSkipped, message);
        return d.finish(Action::None);
    }
    d.finish(action)
}

/// A create Azure refused shortly after the operator's own grants is most likely the grant not having propagated
/// yet: retry it rather than report it as final.
pub fn create_refused_while_grants_propagate(
    status: &AmlFilesystemStatus,
    action: &Action,
    error: &ActionError,
    now: Timestamp,
) -> bool {
    let refused = matches!(action, Action::Create { .. }) && error.status.is_some_and(|s| (400..500).contains(&s));
    let granted = status.grants.iter().any(|g| g.made);
    let recent = status.create_requested_at.as_ref().is_some_and(|t| now.duration_since(t.0) < GRANT_PROPAGATION);
    refused && granted && recent
}

struct AmlDraft<'a> {
    input: &'a AmlInput<'a>,
    status: AmlFilesystemStatus,
    requeue_after: Duration,
    events: Vec<Event>,
    now: Time,
}

impl<'a> AmlDraft<'a> {
    fn new(input: &'a AmlInput<'a>) -> Self {
        let mut status = input.status.clone();
        status.observed_generation = input.generation;
        Self { input, status, requeue_after: input.timing.poll, events: vec![], now: Time(input.facts.now) }
    }

    fn finish(self, action: Action) -> Decision<AmlFilesystemStatus> {
        Decision { status: self.status, action, requeue_after: self.requeue_after, events: self.events }
    }

    fn spec(&self) -> &AmlFilesystemSpec {
        self.input.spec
    }

    fn cond(&mut self, t: C, s: S, reason: Reason, message: &str) {
        set_condition(&mut self.status.conditions, t, s, reason.as_str(), message, self.input.generation, &self.now);
    }

    fn phase(&mut self, phase: Phase) {
        if self.status.phase != Some(phase) {
            let message = match self.status.phase {
                Some(before) => format!("phase {before} -> {phase}"),
                None => format!("phase {phase}"),
            };
            self.events.push(Event { warning: phase == Phase::Failed, reason: phase.to_string(), message });
        }
        self.status.phase = Some(phase);
    }

    fn progressing(&mut self, phase: Phase, reason: Reason, message: &str) {
        self.phase(phase);
        self.cond(C::Ready, S::False, reason, message);
        self.cond(C::Reconciling, S::True, reason, message);
        self.cond(C::Stalled, S::False, reason, message);
    }

    fn stalled(&mut self, phase: Phase, reason: Reason, message: &str) {
        self.phase(phase);
        self.cond(C::Ready, S::False, reason, message);
        self.cond(C::Reconciling, S::False, reason, message);
        self.cond(C::Stalled, S::True, reason, message);
        self.requeue_after = self.input.timing.resync;
        let already = self
            .input
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == C::Stalled.as_str() && c.status == S::True.as_str() && c.reason == reason.as_str());
        if !already {
            self.events.push(Event::warning(reason, message));
        }
    }

    /// Records the intent to grant before the call, and returns the action.
    fn grant(&mut self, scope: &str, principal: &str, tenant: Option<String>, kind: GrantKind) -> Action {
        let grant = GrantRecord {
            scope: scope.to_string(),
            principal_id: principal.to_string(),
            tenant_id: tenant,
            kind,
            system_assigned: false,
            made: false,
        };
        self.status.grants.retain(|r| !r.same_as(&grant));
        self.status.grants.push(grant.clone());
        Action::Grant(grant)
    }

    fn made(&self, scope: &str, principal: &str, kind: GrantKind) -> bool {
        let wanted = GrantRecord {
            scope: scope.to_string(),
            principal_id: principal.to_string(),
            tenant_id: None,
            kind,
            system_assigned: false,
            made: true,
        };
        self.status.grants.iter().any(|g| g.made && g.same_as(&wanted))
    }

    fn not_ours(&mut self, owner: &str) -> Action {
        let id = self.input.resource_id;
        if self.input.deleting {
            let msg = format!("the Azure file system {id} is not this object's (owner tag {owner}) and is left alone");
            self.progressing(Phase::Deleting, Reason::NotOwned, &msg);
            return Action::RemoveFinalizer;
        }
        let (reason, msg) = if self.input.facts.filesystem.as_ref().is_some_and(|f| !f.tags.contains_key(OWNER_TAG)) {
            (
                Reason::CacheExistsNotOwned,
                format!(
                    "an Azure file system {id} already exists without the {OWNER_TAG} tag; nothing is written to it. To manage it, annotate this object hpccache.io/adopt: \"true\""
                ),
            )
        } else {
            (
                Reason::CacheOwnedByAnother,
                format!("the Azure file system {id} belongs to {owner}; this object leaves it alone"),
            )
        };
        self.stalled(Phase::Pending, reason, &msg);
        Action::None
    }

    fn deleting(&mut self, policy: ReconcilePolicy) -> Action {
        if policy != ReconcilePolicy::Manage || self.spec().deletion_policy == DeletionPolicy::Orphan {
            let msg = "the Azure file system and the grants made for it are kept (deletionPolicy or reconcile policy)";
            self.progressing(Phase::Deleting, Reason::Orphaning, msg);
            return Action::RemoveFinalizer;
        }
        match &self.input.facts.filesystem {
            Some(f) if f.provisioning_state == P::Deleting => {
                self.progressing(Phase::Deleting, Reason::DeletingCache, "waiting for Azure to delete the file system");
                Action::None
            }
            Some(_) => {
                self.progressing(Phase::Deleting, Reason::DeletingCache, "the AmlFilesystem is being deleted");
                Action::Delete
            }
            None => match self.status.grants.iter().find(|g| g.made).cloned() {
                Some(grant) => {
                    let msg = format!("revoking the grant made for the file system on {}", grant.scope);
                    self.progressing(Phase::Deleting, Reason::RevokingGrant, &msg);
                    Action::RevokeGrant(grant)
                }
                None => {
                    self.progressing(Phase::Deleting, Reason::Deleted, "the Azure file system is gone");
                    Action::RemoveFinalizer
                }
            },
        }
    }

    /// No file system yet: every check and grant first, then the one PUT.
    fn no_filesystem(&mut self) -> Action {
        if self.status.azure_resource_id.is_some() && self.status.create_requested_at.is_none() {
            self.status.mgs_address = None;
            self.status.mount_command = None;
            self.status.provisioning_state = None;
            self.status.health_state = None;
        }
        let key_url = match self.spec().encryption.clone() {
            None => None,
            Some(enc) => match self.key_ready(&enc.key_vault_id) {
                Ok(kid) => Some(kid),
                Err(action) => return action,
            },
        };
        if let Err(action) = self.blob_access_ready() {
            return action;
        }
        if self.status.create_requested_at.is_none() {
            self.status.create_requested_at = Some(self.now.clone());
        }
        self.status.azure_resource_id = Some(self.input.resource_id.to_string());
        self.progressing(Phase::Creating, Reason::Creating, "creating the file system in Azure");
        Action::Create { key_url }
    }

    /// The vault, the key and the identity's access: Ok(key URL), or Err(the action to take first).
    fn key_ready(&mut self, vault_id: &str) -> Result<String, Action> {
        match self.input.facts.vault.clone() {
            Some(VaultFacts::Invalid { reason, message }) => {
                self.cond(C::KeyValid, S::False, reason, &message);
                self.stalled(Phase::Pending, reason, &message);
                return Err(Action::None);
            }
            None => {
                self.progressing(Phase::Pending, Reason::CheckingVault, "checking the Key Vault");
                return Err(Action::None);
            }
            Some(VaultFacts::Usable { protected: false, .. }) if self.spec().key_access == KeyAccess::Manual => {
                let msg = "the Key Vault needs soft delete and purge protection before the file system can be created; keyAccess is Manual, so turn them on (az keyvault update --enable-purge-protection true)";
                self.stalled(Phase::Pending, Reason::VaultPurgeProtectionDisabled, msg);
                return Err(Action::None);
            }
            Some(VaultFacts::Usable { protected: false, .. }) => {
                let msg =
                    "turning on soft delete and purge protection on the Key Vault (required for customer-managed keys)";
                self.progressing(Phase::Pending, Reason::EnablingPurgeProtection, msg);
                return Err(Action::EnableVaultProtection);
            }
            Some(VaultFacts::Usable { .. }) => {}
        }
        let kid = match self.input.facts.key.clone() {
            Some(KeyFacts::Valid { kid }) => {
                self.cond(C::KeyValid, S::True, Reason::KeyValid, &format!("{kid} is an enabled 2048-bit RSA key"));
                kid
            }
            Some(KeyFacts::Invalid { reason, message }) => {
                self.cond(C::KeyValid, S::False, reason, &message);
                self.stalled(Phase::Pending, reason, &message);
                return Err(Action::None);
            }
            None => {
                self.progressing(Phase::Pending, Reason::CheckingKey, "checking the key");
                return Err(Action::None);
            }
        };
        let (principal, tenant, has_access) = match self.input.facts.identity.clone() {
            Some(IdentityFacts::Usable { principal_id, tenant_id, has_key_access }) => {
                (principal_id, tenant_id, has_key_access == Some(true))
            }
            Some(IdentityFacts::Invalid { reason, message }) => {
                self.stalled(Phase::Pending, reason, &message);
                return Err(Action::None);
            }
            None => {
                self.progressing(Phase::Pending, Reason::CheckingIdentity, "looking up the user-assigned identity");
                return Err(Action::None);
            }
        };
        self.status.principal_id = Some(principal.clone());
        let rbac = matches!(self.input.facts.vault, Some(VaultFacts::Usable { rbac: true, .. }));
        let kind = if rbac { GrantKind::RoleAssignment } else { GrantKind::AccessPolicy };
        if has_access || self.made(vault_id, &principal, kind) {
            self.cond(
                C::KeyAuthorized,
                S::True,
                Reason::IdentityAuthorized,
                "the user-assigned identity can use the key",
            );
            return Ok(kid);
        }
        if self.spec().key_access == KeyAccess::Manual {
            let rights = if rbac {
                "the role Key Vault Crypto Service Encryption User".to_string()
            } else {
                "get, wrapKey and unwrapKey on keys".to_string()
            };
            let msg = format!(
                "nothing is created until principal {principal} (the file system's user-assigned identity) has {rights} on Key Vault {vault_id}; keyAccess is Manual, so a person grants it"
            );
            self.cond(C::KeyAuthorized, S::False, Reason::AwaitingManualGrant, &msg);
            self.progressing(Phase::Pending, Reason::AwaitingManualGrant, &msg);
            return Err(Action::None);
        }
        let msg = "granting the user-assigned identity access to the key before creating the file system";
        self.cond(C::KeyAuthorized, S::False, Reason::Granting, msg);
        self.progressing(Phase::Authorizing, Reason::Authorizing, msg);
        Err(self.grant(vault_id, &principal, tenant, kind))
    }

    /// Blob integration: the resource provider holds both storage roles before the create.
    fn blob_access_ready(&mut self) -> Result<(), Action> {
        let Some(blob) = self.spec().blob_integration.clone() else {
            return Ok(());
        };
        let Some(facts) = self.input.facts.blob.clone() else {
            self.progressing(
                Phase::Pending,
                Reason::CheckingBlobAccess,
                "checking the storage account's role assignments",
            );
            return Err(Action::None);
        };
        let account = blob.storage_account_id.as_str();
        let provider = facts.provider_principal_id.as_str();
        let missing = [
            (GrantKind::StorageAccountContributor, facts.storage_account_contributor),
            (GrantKind::StorageBlobDataContributor, facts.storage_blob_data_contributor),
        ]
        .into_iter()
        .find(|(kind, held)| !held && !self.made(account, provider, *kind));
        let Some((kind, _)) = missing else {
            return Ok(());
        };
        if blob.grant_blob_access == KeyAccess::Manual {
            let msg = format!(
                "nothing is created until the HPC Cache resource provider (principal {provider}) has Storage Account Contributor and Storage Blob Data Contributor on {account}; grantBlobAccess is Manual, so a person grants them"
            );
            self.progressing(Phase::Pending, Reason::AwaitingBlobAccess, &msg);
            return Err(Action::None);
        }
        let msg = format!(
            "granting the HPC Cache resource provider {kind:?} on the storage account before creating the file system"
        );
        self.progressing(Phase::Authorizing, Reason::Authorizing, &msg);
        Err(self.grant(account, provider, None, kind))
    }

    fn filesystem_exists(&mut self, f: &FilesystemFacts) -> Action {
        self.status.azure_resource_id = Some(f.id.clone());
        self.status.provisioning_state = Some(f.provisioning_state.to_string());
        self.status.health_state = f.health_state.clone();
        self.status.active_key_url = f.key_url.clone();
        self.status.active_key = f.key_url.as_deref().and_then(short_key);
        self.status.mgs_address = f.mgs_address.clone();
        self.status.mount_command = f.mount_command.clone();
        self.status.lustre_version = f.lustre_version.clone();
        self.status.create_requested_at = None;
        match &f.provisioning_state {
            P::Deleting => {
                self.progressing(Phase::Deleting, Reason::AzureDeleting, "Azure is deleting the file system");
                return Action::None;
            }
            P::Failed | P::Canceled => {
                let detail = f.status_description.as_deref().unwrap_or("no details");
                let msg = format!("Azure reports provisioningState {} ({detail})", f.provisioning_state);
                self.stalled(Phase::Failed, Reason::ProvisioningFailed, &msg);
                return Action::None;
            }
            P::Succeeded => {}
            other => {
                let phase = if self.status.phase == Some(Phase::Ready) || self.status.phase == Some(Phase::Updating) {
                    Phase::Updating
                } else {
                    Phase::Creating
                };
                let msg = format!("Azure reports provisioningState {other}");
                self.progressing(
                    phase,
                    if phase == Phase::Creating { Reason::Creating } else { Reason::Updating },
                    &msg,
                );
                return Action::None;
            }
        }
        // Key and tags: what the spec says now.
        let tags_differ = f.tags != desired_aml_tags(self.spec(), self.input.owner);
        let key_url = match self.spec().encryption.clone() {
            None => None,
            Some(enc) => {
                let kid = match self.input.facts.key.clone() {
                    Some(KeyFacts::Valid { kid }) => kid,
                    Some(KeyFacts::Invalid { reason, message }) => {
                        self.cond(C::KeyValid, S::False, reason, &message);
                        self.stalled(
                            Phase::Ready,
                            reason,
                            &format!("the file system keeps its current key: {message}"),
                        );
                        return Action::None;
                    }
                    None => f.key_url.clone().unwrap_or_default(),
                };
                let same = f
                    .key_url
                    .as_deref()
                    .is_some_and(|k| k.trim_end_matches('/').eq_ignore_ascii_case(kid.trim_end_matches('/')));
                if !same {
                    // A new key or vault must be usable by the identity before the file system points at it.
                    match self.key_ready(&enc.key_vault_id) {
                        Ok(_) => {}
                        Err(action) => return action,
                    }
                    Some(kid)
                } else {
                    None
                }
            }
        };
        if key_url.is_some() || tags_differ {
            self.progressing(Phase::Updating, Reason::Updating, "applying the key and tags from the spec");
            return Action::Update { key_url: key_url.or(f.key_url.clone()) };
        }
        if self.spec().encryption.is_some() {
            self.cond(C::KeyAuthorized, S::True, Reason::KeyAuthorized, "the file system's identity can use the key");
        }
        let health = f.health_state.as_deref().unwrap_or("unknown");
        if health != "Available" {
            let msg = format!("the file system is provisioned but its health is {health}");
            self.progressing(Phase::Creating, Reason::CacheNotHealthy, &msg);
            return Action::None;
        }
        self.phase(Phase::Ready);
        let msg = match &f.mgs_address {
            Some(mgs) => format!("the file system is available at {mgs}"),
            None => "the file system is available".to_string(),
        };
        self.cond(C::Ready, S::True, Reason::Ready, &msg);
        self.cond(C::Reconciling, S::False, Reason::Ready, &msg);
        self.cond(C::Stalled, S::False, Reason::Ready, &msg);
        self.requeue_after = self.input.timing.resync;
        Action::None
    }
}

#[cfg(test)]
mod tests;

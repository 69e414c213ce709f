//! What both kinds share: where a resource lives, who grants key access, deletion and reconcile policies, the
//! phase, the grants the operator records, and the status shape the core's shared steps work on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the cache lives. All fields are create-only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureLocation {
    /// Azure subscription id (a GUID).
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"))]
    #[schemars(length(max = 36))]
    pub subscription_id: String,
    /// Resource group that holds the cache.
    #[schemars(regex(pattern = r"^[-\w._()]{1,90}$"))]
    pub resource_group: String,
    /// Azure region, for example eastus. The Key Vault must be in the same region.
    #[schemars(regex(pattern = r"^[a-z0-9]{2,40}$"))]
    pub location: String,
    /// Name of the cache in Azure; defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-0-9a-zA-Z_]{1,80}$"))]
    pub name: Option<String>,
}

/// Who grants the cache identity access to the key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum KeyAccess {
    /// The operator grants access (access policy, or a role assignment on RBAC vaults).
    #[default]
    Automatic,
    /// A person grants access; the operator never writes to the vault.
    Manual,
}

/// What happens to the Azure cache when the HpcCache object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the Azure cache (and the vault grant the operator made for a system-assigned identity).
    #[default]
    Delete,
    /// Leave the Azure cache in place.
    Orphan,
}

/// Where a cache is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Phase {
    /// Accepted; checking the key, the vault and the identity.
    #[default]
    Pending,
    /// Granting the identity access to the key.
    Authorizing,
    /// Azure is creating the cache.
    Creating,
    /// The cache waits for its identity to be authorized on the key (Azure health WaitingForKey).
    WaitingForKey,
    /// The cache is healthy and uses the desired key.
    Ready,
    /// Applying a key change.
    Updating,
    /// The cache failed (for example the authorization window was missed) or the input cannot work.
    Failed,
    /// Deleting the Azure cache.
    Deleting,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What every kind's status has, so the core's shared steps (recording grants, reporting a failed action) serve
/// both `HpcCache` and `AmlFilesystem`.
pub trait KindStatus: Clone {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn grants_mut(&mut self) -> &mut Vec<GrantRecord>;
    fn phase_mut(&mut self) -> &mut Option<Phase>;
    fn create_requested_at_mut(&mut self) -> &mut Option<Time>;
}

/// A grant the operator made: key access on a Key Vault, or a storage role on a storage account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantRecord {
    /// ARM id of what the grant is on: the vault (key access) or the storage account (storage roles). Records written
    /// before AmlFilesystem existed call it vaultId.
    #[serde(alias = "vaultId")]
    pub scope: String,
    /// Object id of the principal that was granted access.
    pub principal_id: String,
    /// Tenant of the principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// AccessPolicy (access-policy vault) or RoleAssignment (RBAC vault) for key access; StorageAccountContributor or StorageBlobDataContributor for blob integration.
    pub kind: GrantKind,
    /// True when the principal is the cache's system-assigned identity (the grant is revoked on delete).
    pub system_assigned: bool,
    /// False while the grant is only intended (recorded before the call); true once Azure accepted it.
    #[serde(default)]
    pub made: bool,
}

impl GrantRecord {
    /// Whether two records are the same grant: one principal, one scope, and the same access (key access made as
    /// an access policy or a role assignment counts as one).
    pub fn same_as(&self, other: &GrantRecord) -> bool {
        self.scope.eq_ignore_ascii_case(&other.scope)
            && self.principal_id.eq_ignore_ascii_case(&other.principal_id)
            && (self.kind == other.kind || (self.kind.is_key_access() && other.kind.is_key_access()))
    }
}

/// How a vault grant was made.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GrantKind {
    /// get/wrapKey/unwrapKey in the vault's access policies.
    AccessPolicy,
    /// Key Vault Crypto Service Encryption User role at the vault scope.
    RoleAssignment,
    /// Storage Account Contributor on a storage account (blob integration of an AmlFilesystem).
    StorageAccountContributor,
    /// Storage Blob Data Contributor on a storage account (blob integration of an AmlFilesystem).
    StorageBlobDataContributor,
}

impl GrantKind {
    /// Access to a Key Vault key (not a storage role).
    pub fn is_key_access(self) -> bool {
        matches!(self, GrantKind::AccessPolicy | GrantKind::RoleAssignment)
    }
}

/// Annotation on an `HpcCache`: how far the operator may act on it. Values: [`ReconcilePolicy`].
pub const RECONCILE_POLICY_ANNOTATION: &str = "hpccache.io/reconcile-policy";
/// Annotation on an `HpcCache`: `"true"` lets the operator take over an Azure cache that exists without its owner tag.
pub const ADOPT_ANNOTATION: &str = "hpccache.io/adopt";

/// How far the operator may act on one object (annotation `hpccache.io/reconcile-policy`, or the operator's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReconcilePolicy {
    /// Create, update, grant and delete as the spec says.
    #[default]
    Manage,
    /// Observe and report status only: no Azure writes of any kind (deleting the object leaves the cache and its
    /// grants). For a person fixing something in the portal.
    Skip,
    /// Manage, but deleting the object leaves the Azure cache and its grants.
    DetachOnDelete,
}

impl ReconcilePolicy {
    pub const VALUES: [&str; 3] = ["manage", "skip", "detach-on-delete"];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconcilePolicy::Manage => "manage",
            ReconcilePolicy::Skip => "skip",
            ReconcilePolicy::DetachOnDelete => "detach-on-delete",
        }
    }
}

impl std::str::FromStr for ReconcilePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "manage" => Ok(ReconcilePolicy::Manage),
            "skip" => Ok(ReconcilePolicy::Skip),
            "detach-on-delete" => Ok(ReconcilePolicy::DetachOnDelete),
            other => Err(format!(
                "{RECONCILE_POLICY_ANNOTATION}: {other:?} is not one of {}",
                ReconcilePolicy::VALUES.join(", ")
            )),
        }
    }
}

/// The reconcile policy an object's annotations ask for, `default` without one; Err(message) for an unknown value.
pub fn reconcile_policy(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    default: ReconcilePolicy,
) -> Result<ReconcilePolicy, String> {
    match meta.annotations.as_ref().and_then(|a| a.get(RECONCILE_POLICY_ANNOTATION)) {
        None => Ok(default),
        Some(v) => v.parse(),
    }
}

/// Whether an object asks to adopt an Azure resource made outside the operator.
pub fn adopt(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.annotations.as_ref().and_then(|a| a.get(ADOPT_ANNOTATION)).is_some_and(|v| v.trim() == "true")
}

//! The `AmlFilesystem` custom resource: an Azure Managed Lustre file system (`Microsoft.StorageCache/amlFilesystems`)
//! encrypted with a customer-managed key, with the same conventions as `HpcCache` (conditions, finalizer, deletion
//! and reconcile policies, owner tag).
//!
//! What differs (Microsoft Learn, "Use customer-managed encryption keys with Azure Managed Lustre"; Terraform
//! `azurerm_managed_lustre_file_system`): the identity is user-assigned only and must already be able to use the key
//! when the file system is created, so the grant comes before the one PUT and there is no 90-minute window; there is
//! no rotate-to-latest flag; blob integration needs two roles for the HPC Cache resource provider on the storage
//! account before the create.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AzureLocation, DeletionPolicy, GrantRecord, KeyAccess, KindStatus, Phase, ReconcilePolicy};

/// Desired state of an Azure Managed Lustre file system encrypted with a customer-managed key.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hpccache.io",
    version = "v1alpha1",
    kind = "AmlFilesystem",
    plural = "amlfilesystems",
    shortname = "amlfs",
    category = "azure",
    namespaced,
    status = "AmlFilesystemStatus",
    doc = "An Azure Managed Lustre file system (the successor of Azure HPC Cache) encrypted with a customer-managed key from Azure Key Vault. The operator grants the file system's user-assigned identity access to the key (and the storage roles blob integration needs) before it creates the file system, applies key changes and deletes it (or leaves it, by deletionPolicy) when the object is deleted.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Key", type_ = "string", json_path = ".status.activeKey"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "MGS", type_ = "string", json_path = ".status.mgsAddress", priority = "1")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.encryption) == has(oldSelf.encryption)").message("spec.encryption cannot be added or removed after creation: Azure cannot switch a file system between customer-managed and Microsoft-managed keys"))]
#[x_kube(validation = Rule::new("!has(self.encryption) || has(self.identity)").message("spec.identity.userAssignedIdentityId is required with spec.encryption: Azure Managed Lustre reaches the key only through a user-assigned identity"))]
#[x_kube(validation = Rule::new("!has(self.encryption) || self.encryption.keyVaultId.lowerAscii().startsWith('/subscriptions/' + self.azure.subscriptionId.lowerAscii() + '/')").message("spec.encryption.keyVaultId must be a vault in the file system's subscription (spec.azure.subscriptionId)"))]
pub struct AmlFilesystemSpec {
    /// Where the file system lives in Azure. Create-only.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.azure is immutable: a file system cannot move; create a new AmlFilesystem instead"))]
    pub azure: AzureLocation,

    /// SKU: AMLFS-Durable-Premium-40, -125, -250 or -500 (MB/s per TiB). Create-only.
    #[schemars(regex(pattern = r"^AMLFS-Durable-Premium-(40|125|250|500)$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.sku is immutable after creation"))]
    pub sku: String,

    /// Storage capacity in TiB; the SKU sets the minimum and the increment. Create-only.
    #[schemars(range(min = 4, max = 12800))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.storageCapacityTiB is immutable after creation"))]
    #[serde(rename = "storageCapacityTiB")]
    pub storage_capacity_tib: i32,

    /// ARM id of the subnet the file system is placed in. Create-only.
    #[schemars(regex(
        pattern = r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.Network/virtualNetworks/[-\w._]{2,64}/subnets/[-\w._]{1,80}$"
    ))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.subnetId is immutable after creation"))]
    pub subnet_id: String,

    /// Availability zones, e.g. ["1"]. Create-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.zones is immutable after creation"))]
    pub zones: Vec<String>,

    /// When Azure may apply maintenance: a day of the week and a UTC time (HH:MM). Required by Azure.
    pub maintenance_window: MaintenanceWindow,

    /// The user-assigned identity the file system uses to reach its key. Immutable: Azure cannot change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.identity is immutable: Azure cannot change the identity of an existing file system"))]
    pub identity: Option<AmlIdentity>,

    /// Customer-managed key settings. Present = encrypted with your key; absent = Microsoft-managed keys. Whether it is present cannot change after creation; the vault, key and version can (one PATCH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<AmlEncryption>,

    /// Who grants the identity access to the key: Automatic (the operator, before the create) or Manual (a person; nothing is created until the identity can use the key).
    #[serde(default)]
    pub key_access: KeyAccess,

    /// Import from and export to a blob container (Azure calls it hsm.settings). Create-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.blobIntegration is immutable after creation"))]
    pub blob_integration: Option<BlobIntegration>,

    /// Root squash settings for NFS-style root access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_squash: Option<RootSquash>,

    /// What happens to the Azure file system when this object is deleted: Delete it, or Orphan it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Azure resource tags for the file system (at most 50).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub tags: BTreeMap<String, String>,
}

/// Azure's maintenance window (`properties.maintenanceWindow`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Monday … Sunday.
    #[schemars(regex(pattern = r"^(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)$"))]
    pub day_of_week: String,
    /// Start time in UTC, HH:MM (24-hour).
    #[schemars(regex(pattern = r"^([01]\d|2[0-3]):[0-5]\d$"))]
    #[serde(rename = "timeOfDayUTC")]
    pub time_of_day_utc: String,
}

/// The file system's identity: user-assigned only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmlIdentity {
    /// ARM id of the user-assigned identity (/subscriptions/{id}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}).
    #[schemars(regex(
        pattern = r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[-\w._]{3,128}$"
    ))]
    pub user_assigned_identity_id: String,
}

/// Customer-managed key of a file system: always a versioned key (Azure Managed Lustre has no rotate-to-latest).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmlEncryption {
    /// ARM id of the Key Vault holding the key; same subscription and region as the file system, soft delete and purge protection on.
    #[schemars(regex(
        pattern = r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.KeyVault/vaults/[a-zA-Z0-9-]{3,24}$"
    ))]
    pub key_vault_id: String,
    /// Name of the key: an enabled 2048-bit RSA key allowing wrapKey and unwrapKey.
    #[schemars(regex(pattern = r"^[0-9a-zA-Z-]{1,127}$"))]
    pub key_name: String,
    /// Key version (32 hex characters). Changing it moves the file system to that version with one PATCH.
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{32}$"))]
    pub key_version: String,
}

/// Blob integration (Azure's hsm.settings).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobIntegration {
    /// ARM id of the storage account holding the containers.
    #[schemars(regex(
        pattern = r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.Storage/storageAccounts/[a-z0-9]{3,24}$"
    ))]
    pub storage_account_id: String,
    /// Container the file system imports from and exports to.
    #[schemars(regex(pattern = r"^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$"))]
    pub container: String,
    /// Container for import/export logs.
    #[schemars(regex(pattern = r"^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$"))]
    pub logging_container: String,
    /// Only blobs under this prefix are imported (default "/").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_prefix: Option<String>,
    /// Who grants the HPC Cache resource provider Storage Account Contributor and Storage Blob Data Contributor on the storage account (both needed before the create): Automatic (the operator) or Manual.
    #[serde(default)]
    pub grant_blob_access: KeyAccess,
}

/// Root squash (Azure's rootSquashSettings).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RootSquash {
    /// None, RootOnly or All.
    #[schemars(regex(pattern = r"^(None|RootOnly|All)$"))]
    pub mode: String,
    /// Client NIDs that are not squashed, space-separated (Azure's noSquashNidLists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_squash_nid_lists: Option<String>,
    /// UID root is squashed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub squash_uid: Option<i64>,
    /// GID root is squashed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub squash_gid: Option<i64>,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemStatus {
    /// Where the file system is in its life (Pending, Authorizing, Creating, Ready, Updating, Failed, Deleting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled (kstatus) plus KeyValid and KeyAuthorized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// ARM id of the file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_resource_id: Option<String>,
    /// Object id of the user-assigned identity that must be trusted by the Key Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// The key URL (with version) the file system is encrypted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key_url: Option<String>,
    /// The key, short: {key name}/{version}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key: Option<String>,
    /// Azure's provisioningState, as parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Azure's health state, as parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_state: Option<String>,
    /// The Lustre management service address clients mount from (clientInfo.mgsAddress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mgs_address: Option<String>,
    /// The mount command Azure recommends (clientInfo.mountCommand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_command: Option<String>,
    /// Lustre version (clientInfo.lustreVersion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lustre_version: Option<String>,
    /// Grants the operator made (or is making): key access for the identity, storage roles for the resource provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantRecord>,
    /// Set before the create request, so a restart resends it rather than losing track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_requested_at: Option<Time>,
}

impl AmlFilesystem {
    /// The reconcile policy from the annotation (as for an HpcCache).
    pub fn reconcile_policy(&self, default: ReconcilePolicy) -> Result<ReconcilePolicy, String> {
        super::common::reconcile_policy(&self.metadata, default)
    }

    /// Whether the object asks to adopt a file system made outside the operator.
    pub fn adopt(&self) -> bool {
        super::common::adopt(&self.metadata)
    }

    /// The name of the file system in Azure.
    pub fn azure_name(&self) -> &str {
        self.spec.azure.name.as_deref().or(self.metadata.name.as_deref()).unwrap_or_default()
    }
}

impl KindStatus for AmlFilesystemStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn grants_mut(&mut self) -> &mut Vec<GrantRecord> {
        &mut self.grants
    }
    fn phase_mut(&mut self) -> &mut Option<Phase> {
        &mut self.phase
    }
    fn create_requested_at_mut(&mut self) -> &mut Option<Time> {
        &mut self.create_requested_at
    }
}

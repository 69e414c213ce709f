//! Serde types for the ARM and Key Vault bodies the operator reads and writes.
//!
//! Field names follow the REST specs (camelCase for ARM, snake_case `key_ops` etc. for Key Vault JSON web keys).
//! Unknown fields are ignored on input; optional fields are `Option` and omitted on output when `None`, so a body
//! built by the operator carries only what it means to set.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// `provisioningState` values (ARM `ProvisioningStateType`, modelAsString).
pub mod provisioning_state {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const CANCELED: &str = "Canceled";
    pub const CREATING: &str = "Creating";
    pub const DELETING: &str = "Deleting";
    pub const UPDATING: &str = "Updating";
}

/// `properties.health.state` values (`HealthStateType`, modelAsString).
pub mod health_state {
    pub const UNKNOWN: &str = "Unknown";
    pub const HEALTHY: &str = "Healthy";
    pub const DEGRADED: &str = "Degraded";
    pub const DOWN: &str = "Down";
    pub const TRANSITIONING: &str = "Transitioning";
    pub const STOPPING: &str = "Stopping";
    pub const STOPPED: &str = "Stopped";
    pub const UPGRADING: &str = "Upgrading";
    pub const FLUSHING: &str = "Flushing";
    pub const WAITING_FOR_KEY: &str = "WaitingForKey";
    pub const START_FAILED: &str = "StartFailed";
    pub const UPGRADE_FAILED: &str = "UpgradeFailed";
}

/// `identity.type` values (`CacheIdentityType`).
pub mod identity_type {
    pub const SYSTEM_ASSIGNED: &str = "SystemAssigned";
    pub const USER_ASSIGNED: &str = "UserAssigned";
    pub const SYSTEM_AND_USER_ASSIGNED: &str = "SystemAssigned, UserAssigned";
    pub const NONE: &str = "None";
}

/// ARM `systemData`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_by_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_at: Option<jiff::Timestamp>,
}

/// `Microsoft.StorageCache/caches` resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<CacheIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<CacheSku>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_data: Option<SystemData>,
    #[serde(default)]
    pub properties: CacheProperties,
}

impl Cache {
    /// `properties.provisioningState`.
    pub fn provisioning_state(&self) -> Option<&str> {
        self.properties.provisioning_state.as_deref()
    }

    /// `properties.health.state`.
    pub fn health_state(&self) -> Option<&str> {
        self.properties.health.as_ref().and_then(|h| h.state.as_deref())
    }

    /// `systemData.createdAt`.
    pub fn created_at(&self) -> Option<jiff::Timestamp> {
        self.system_data.as_ref().and_then(|s| s.created_at)
    }

    /// `properties.encryptionSettings.keyEncryptionKey`.
    pub fn key_encryption_key(&self) -> Option<&KeyVaultKeyReference> {
        self.properties.encryption_settings.as_ref().and_then(|e| e.key_encryption_key.as_ref())
    }
}

/// `CacheIdentity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheIdentity {
    /// `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned` or `None` (see [`identity_type`]).
    #[serde(rename = "type")]
    pub r#type: String,
    /// Read-only: the system-assigned principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Keys are user-assigned identity ARM ids; send empty values (`{}`) when creating.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_assigned_identities: BTreeMap<String, UserAssignedIdentityValue>,
}

/// Value in `userAssignedIdentities` (read-only fields; serialises as `{}` when empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentityValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// `CacheSku`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheSku {
    #[serde(default)]
    pub name: String,
}

/// `CacheProperties` (the fields the operator uses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheProperties {
    #[serde(default, rename = "cacheSizeGB", skip_serializing_if = "Option::is_none")]
    pub cache_size_gb: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Read-only, see [`provisioning_state`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<CacheHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_settings: Option<CacheEncryptionSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_addresses: Option<Vec<String>>,
}

/// `CacheHealth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheHealth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CacheHealthCondition>,
}

/// `Condition` inside `CacheHealth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheHealthCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `CacheEncryptionSettings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEncryptionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_encryption_key: Option<KeyVaultKeyReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_to_latest_key_version_enabled: Option<bool>,
}

/// `KeyVaultKeyReference` (`keyUrl` = `https://{vault}.vault.azure.net/keys/{name}/{version}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVaultKeyReference {
    pub key_url: String,
    pub source_vault: SourceVault,
}

/// `{ "id": "<vault ARM id>" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceVault {
    pub id: String,
}

/// `properties.health.state` values of an AML file system (`AmlFilesystemHealthStateType`, modelAsString:
/// `Expanding` first appears in 2026-08-01, so treat unknown values as possible).
pub mod aml_health_state {
    pub const UNAVAILABLE: &str = "Unavailable";
    pub const AVAILABLE: &str = "Available";
    pub const DEGRADED: &str = "Degraded";
    pub const TRANSITIONING: &str = "Transitioning";
    pub const MAINTENANCE: &str = "Maintenance";
    pub const EXPANDING: &str = "Expanding";
}

/// `rootSquashSettings.mode` values (`AmlFilesystemSquashMode`, modelAsString).
pub mod root_squash_mode {
    pub const NONE: &str = "None";
    pub const ROOT_ONLY: &str = "RootOnly";
    pub const ALL: &str = "All";
}

/// `maintenanceWindow.dayOfWeek` values (`MaintenanceDayOfWeekType`, a closed enum).
pub mod day_of_week {
    pub const MONDAY: &str = "Monday";
    pub const TUESDAY: &str = "Tuesday";
    pub const WEDNESDAY: &str = "Wednesday";
    pub const THURSDAY: &str = "Thursday";
    pub const FRIDAY: &str = "Friday";
    pub const SATURDAY: &str = "Saturday";
    pub const SUNDAY: &str = "Sunday";
    /// Every value, Monday first.
    pub const ALL: [&str; 7] = [MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY, SUNDAY];
}

/// `Microsoft.StorageCache/amlFilesystems` resource (Azure Managed Lustre), storagecache `AmlFilesystem`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Read-only; ARM reports `Microsoft.StorageCache/amlFilesystem`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<AmlFilesystemIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<AmlFilesystemSku>,
    /// Availability zones (read and create only; one element).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_data: Option<SystemData>,
    #[serde(default)]
    pub properties: AmlFilesystemProperties,
}

impl AmlFilesystem {
    /// `properties.provisioningState` (see [`provisioning_state`]).
    pub fn provisioning_state(&self) -> Option<&str> {
        self.properties.provisioning_state.as_deref()
    }

    /// `properties.health.state` (see [`aml_health_state`]).
    pub fn health_state(&self) -> Option<&str> {
        self.properties.health.as_ref().and_then(|h| h.state.as_deref())
    }

    /// `systemData.createdAt`.
    pub fn created_at(&self) -> Option<jiff::Timestamp> {
        self.system_data.as_ref().and_then(|s| s.created_at)
    }

    /// `properties.encryptionSettings.keyEncryptionKey`.
    pub fn key_encryption_key(&self) -> Option<&KeyVaultKeyReference> {
        self.properties.encryption_settings.as_ref().and_then(|e| e.key_encryption_key.as_ref())
    }

    /// `properties.clientInfo.mgsAddress`: the Lustre MGS address clients mount.
    pub fn mgs_address(&self) -> Option<&str> {
        self.properties.client_info.as_ref().and_then(|c| c.mgs_address.as_deref())
    }

    /// `properties.clientInfo.mountCommand`.
    pub fn mount_command(&self) -> Option<&str> {
        self.properties.client_info.as_ref().and_then(|c| c.mount_command.as_deref())
    }

    /// `properties.hsm.settings` (blob integration), when configured.
    pub fn hsm_settings(&self) -> Option<&AmlFilesystemHsmSettings> {
        self.properties.hsm.as_ref().and_then(|h| h.settings.as_ref())
    }

    /// The user-assigned identity ids of `identity.userAssignedIdentities`.
    pub fn user_assigned_identity_ids(&self) -> impl Iterator<Item = &str> {
        self.identity.iter().flat_map(|i| i.user_assigned_identities.keys().map(String::as_str))
    }
}

/// `AmlFilesystemIdentity`: `type` is `UserAssigned` or `None` (no system-assigned identity for AMLFS).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemIdentity {
    /// [`identity_type::USER_ASSIGNED`] or [`identity_type::NONE`].
    #[serde(rename = "type")]
    pub r#type: String,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Keys are user-assigned identity ARM ids; send empty values (`{}`) when creating.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_assigned_identities: BTreeMap<String, UserAssignedIdentityValue>,
}

/// `SkuName` of an AML file system, e.g. `AMLFS-Durable-Premium-250`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AmlFilesystemSku {
    #[serde(default)]
    pub name: String,
}

/// `AmlFilesystemProperties`. Required on create: `storageCapacityTiB`, `filesystemSubnet`, `maintenanceWindow`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemProperties {
    /// Size in TiB (read and create only; `float` in the spec). Whole numbers are sent as JSON integers.
    #[serde(
        default,
        rename = "storageCapacityTiB",
        serialize_with = "whole_as_integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_capacity_tib: Option<f64>,
    /// Subnet ARM id (read and create only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<AmlFilesystemMaintenanceWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_settings: Option<AmlFilesystemEncryptionSettings>,
    /// Blob integration (`settings` read and create only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm: Option<AmlFilesystemHsm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_squash_settings: Option<AmlFilesystemRootSquashSettings>,
    /// Read-only, see [`provisioning_state`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<AmlFilesystemHealth>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<AmlFilesystemClientInfo>,
    /// Read-only.
    #[serde(default, rename = "throughputProvisionedMBps", skip_serializing_if = "Option::is_none")]
    pub throughput_provisioned_mbps: Option<i32>,
}

/// `maintenanceWindow`: start of a weekly 30-minute window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemMaintenanceWindow {
    /// See [`day_of_week`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_week: Option<String>,
    /// `HH:MM` in UTC (pattern `^([0-9]|0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]$`).
    #[serde(default, rename = "timeOfDayUTC", skip_serializing_if = "Option::is_none")]
    pub time_of_day_utc: Option<String>,
}

/// `AmlFilesystemEncryptionSettings` (no rotation flag, unlike a cache's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemEncryptionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_encryption_key: Option<KeyVaultKeyReference>,
}

/// `properties.hsm`: blob integration settings and (read-only) archive status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemHsm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<AmlFilesystemHsmSettings>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archive_status: Vec<AmlFilesystemArchive>,
}

/// `AmlFilesystemHsmSettings`. The storage account holding both containers must grant the "HPC Cache Resource
/// Provider" principal [`STORAGE_ACCOUNT_CONTRIBUTOR`](crate::STORAGE_ACCOUNT_CONTRIBUTOR) and
/// [`STORAGE_BLOB_DATA_CONTRIBUTOR`](crate::STORAGE_BLOB_DATA_CONTRIBUTOR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemHsmSettings {
    /// Blob container ARM id used for hydration and archive (required).
    #[serde(default)]
    pub container: String,
    /// Blob container ARM id for logs, in the same storage account (required).
    #[serde(default)]
    pub logging_container: String,
    /// Import prefix (every version; default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_prefix: Option<String>,
    /// Import prefixes (2024-03-01 and later; what the 2026-08-01 examples send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_prefixes_initial: Option<Vec<String>>,
}

impl AmlFilesystemHsmSettings {
    /// The storage account of `container` (where the blob-integration roles are granted); `None` when the container
    /// is not a `Microsoft.Storage/storageAccounts/…/containers/…` id.
    pub fn storage_account(&self) -> Option<crate::id::ResourceId> {
        let id: crate::id::ResourceId = self.container.parse().ok()?;
        if !id.is_type("Microsoft.Storage", "storageAccounts/blobServices/containers") {
            return None;
        }
        id.top_level()
    }
}

/// An entry of `hsm.archiveStatus` (read-only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemArchive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AmlFilesystemArchiveStatus>,
}

/// `AmlFilesystemArchiveStatus` (read-only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemArchiveStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completion_time: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_time: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// `AmlFilesystemRootSquashSettings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemRootSquashSettings {
    /// See [`root_squash_mode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Semicolon-separated NID lists of trusted systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_squash_nid_lists: Option<String>,
    #[serde(default, rename = "squashUID", skip_serializing_if = "Option::is_none")]
    pub squash_uid: Option<i64>,
    #[serde(default, rename = "squashGID", skip_serializing_if = "Option::is_none")]
    pub squash_gid: Option<i64>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `AmlFilesystemHealth` (read-only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemHealth {
    /// See [`aml_health_state`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_description: Option<String>,
}

/// `AmlFilesystemClientInfo` (read-only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemClientInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mgs_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lustre_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_storage_interface: Option<AmlFilesystemContainerStorageInterface>,
}

/// `AmlFilesystemContainerStorageInterface`: recommended AKS objects for the Lustre CSI driver, each Base64 YAML.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemContainerStorageInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// `AmlFilesystemUpdate`: the PATCH body (`tags` and the mutable properties only). Serialise it for
/// [`Azure::patch_aml_filesystem`](crate::Azure::patch_aml_filesystem), e.g. with only a new
/// `keyEncryptionKey` via [`AmlFilesystemUpdate::key`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<AmlFilesystemUpdateProperties>,
}

impl AmlFilesystemUpdate {
    /// `{"properties": {"encryptionSettings": {"keyEncryptionKey": …}}}`: a key change and nothing else.
    pub fn key(key_encryption_key: KeyVaultKeyReference) -> Self {
        Self {
            tags: None,
            properties: Some(AmlFilesystemUpdateProperties {
                encryption_settings: Some(AmlFilesystemEncryptionSettings {
                    key_encryption_key: Some(key_encryption_key),
                }),
                ..Default::default()
            }),
        }
    }

    /// As JSON, for [`Azure::patch_aml_filesystem`](crate::Azure::patch_aml_filesystem).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain data serialises")
    }
}

/// `AmlFilesystemUpdateProperties`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystemUpdateProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_settings: Option<AmlFilesystemEncryptionSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<AmlFilesystemMaintenanceWindow>,
    /// 2024-03-01 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_squash_settings: Option<AmlFilesystemRootSquashSettings>,
}

/// A whole `f64` as a JSON integer (`16`, as the spec examples send it), anything else as a float.
fn whole_as_integer<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match *v {
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => s.serialize_i64(f as i64),
        Some(f) => s.serialize_f64(f),
        None => s.serialize_none(),
    }
}

/// `CachesListResult` / any ARM page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default)]
    pub next_link: Option<String>,
}

/// `Microsoft.KeyVault/vaults` resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: VaultProperties,
}

impl Vault {
    /// True when `object_id` (in `tenant_id`, if given) has every permission in `key_permissions` on keys through
    /// access policies (case-insensitive; `all` grants everything). Ignores RBAC: check
    /// `properties.enable_rbac_authorization` first.
    pub fn access_policy_grants(&self, tenant_id: Option<&str>, object_id: &str, key_permissions: &[&str]) -> bool {
        let granted: Vec<&str> = self
            .properties
            .access_policies
            .iter()
            .filter(|p| p.object_id.eq_ignore_ascii_case(object_id))
            .filter(|p| tenant_id.is_none_or(|t| p.tenant_id.eq_ignore_ascii_case(t)))
            .flat_map(|p| p.permissions.keys.iter().map(String::as_str))
            .collect();
        key_permissions
            .iter()
            .all(|want| granted.iter().any(|g| g.eq_ignore_ascii_case(want) || g.eq_ignore_ascii_case("all")))
    }

    /// `enableSoftDelete` (default true when absent, per the spec) and `enablePurgeProtection` are both on.
    pub fn is_protected(&self) -> bool {
        self.properties.enable_soft_delete.unwrap_or(true) && self.properties.enable_purge_protection == Some(true)
    }
}

/// `VaultProperties` (the fields the operator uses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<VaultSku>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_soft_delete: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete_retention_in_days: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_purge_protection: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_rbac_authorization: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_policies: Vec<AccessPolicyEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// Vault `sku`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VaultSku {
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub name: String,
}

/// `AccessPolicyEntry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyEntry {
    pub tenant_id: String,
    pub object_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    #[serde(default)]
    pub permissions: Permissions,
}

/// `Permissions` of an access policy entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<String>,
}

/// `Microsoft.ManagedIdentity/userAssignedIdentities` resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: UserAssignedIdentityProperties,
}

/// Read-only identity properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentityProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

/// `RoleAssignment` (response of PUT/GET roleAssignments).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub properties: RoleAssignmentProperties,
}

/// `RoleAssignmentProperties` / `RoleAssignmentCreateParameters.properties`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentProperties {
    #[serde(default)]
    pub role_definition_id: String,
    #[serde(default)]
    pub principal_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Key Vault `KeyBundle`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyBundle {
    pub key: JsonWebKey,
    #[serde(default)]
    pub attributes: KeyAttributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
}

impl KeyBundle {
    /// RSA modulus size in bits (from `n`), `None` for non-RSA keys or an undecodable modulus.
    pub fn rsa_bits(&self) -> Option<u32> {
        self.key.rsa_bits()
    }

    /// The key version (last path segment of `kid`).
    pub fn version(&self) -> Option<&str> {
        self.key.kid.as_deref().and_then(kid_version)
    }

    /// Enabled, and `now` (unix seconds) within `nbf`/`exp` when those are set.
    pub fn is_usable_at(&self, now_unix: i64) -> bool {
        self.attributes.enabled.unwrap_or(true)
            && self.attributes.nbf.is_none_or(|nbf| nbf <= now_unix)
            && self.attributes.exp.is_none_or(|exp| now_unix < exp)
    }
}

/// Key Vault `JsonWebKey` (public parts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonWebKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `EC`, `EC-HSM`, `RSA`, `RSA-HSM`, `oct`, `oct-HSM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ops: Vec<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
}

impl JsonWebKey {
    /// True for `RSA` and `RSA-HSM`.
    pub fn is_rsa(&self) -> bool {
        matches!(self.kty.as_deref(), Some(k) if k.eq_ignore_ascii_case("RSA") || k.eq_ignore_ascii_case("RSA-HSM"))
    }

    /// RSA modulus size in bits, from the big-endian `n` (leading zero bytes ignored).
    pub fn rsa_bits(&self) -> Option<u32> {
        if !self.is_rsa() {
            return None;
        }
        let n = self.n.as_deref()?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(n.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(n.trim_end_matches('=')))
            .ok()?;
        let first = bytes.iter().position(|b| *b != 0)?;
        let significant = &bytes[first..];
        Some((significant.len() as u32 - 1) * 8 + (8 - significant[0].leading_zeros()))
    }
}

/// Key Vault `KeyAttributes` (times are unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_level: Option<String>,
}

/// Key Vault `KeyItem` (an entry of GetKeyVersions; no key material).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default)]
    pub attributes: KeyAttributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
}

impl KeyItem {
    /// The key version (last path segment of `kid`).
    pub fn version(&self) -> Option<&str> {
        self.kid.as_deref().and_then(kid_version)
    }
}

/// Key Vault list page (`KeyListResult`: `value`, `nextLink`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyListResult {
    #[serde(default)]
    pub value: Vec<KeyItem>,
    #[serde(default)]
    pub next_link: Option<String>,
}

fn kid_version(kid: &str) -> Option<&str> {
    // https://{vault}/keys/{name}/{version}
    let path = kid.split_once("://").map(|(_, r)| r).unwrap_or(kid);
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match segs.as_slice() {
        [_, keys, _, version] if keys.eq_ignore_ascii_case("keys") => Some(version),
        _ => None,
    }
}

/// The parts of a Key Vault key URL: `https://{vault host}/keys/{name}[/{version}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUrl {
    /// `https://{vault host}/` (scheme, host and port).
    pub vault_uri: url::Url,
    pub name: String,
    pub version: Option<String>,
}

impl KeyUrl {
    /// Parse a `keyUrl`/`kid`.
    pub fn parse(s: &str) -> Option<Self> {
        let u = url::Url::parse(s).ok()?;
        if u.scheme() != "https" {
            return None;
        }
        let segs: Vec<&str> = u.path_segments()?.filter(|s| !s.is_empty()).collect();
        let (name, version) = match segs.as_slice() {
            [k, name] if k.eq_ignore_ascii_case("keys") => (name.to_string(), None),
            [k, name, ver] if k.eq_ignore_ascii_case("keys") => (name.to_string(), Some(ver.to_string())),
            _ => return None,
        };
        let mut vault_uri = u.clone();
        vault_uri.set_path("/");
        vault_uri.set_query(None);
        vault_uri.set_fragment(None);
        Some(Self { vault_uri, name, version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(rel: &str) -> serde_json::Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/azure-specs").join(rel);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn body(example: &serde_json::Value, status: &str) -> serde_json::Value {
        example["responses"][status]["body"].clone()
    }

    #[test]
    fn cache_get_example() {
        let ex = fixture("storagecache-2026-08-01/Caches_Get.json");
        let cache: Cache = serde_json::from_value(body(&ex, "200")).unwrap();
        assert_eq!(cache.name.as_deref(), Some("sc1"));
        assert_eq!(cache.location.as_deref(), Some("westus"));
        assert_eq!(cache.properties.cache_size_gb, Some(3072));
        assert_eq!(cache.provisioning_state(), Some("Succeeded"));
        assert_eq!(cache.health_state(), Some("Transitioning"));
        assert_eq!(cache.sku.as_ref().unwrap().name, "Standard_2G");
        let kek = cache.key_encryption_key().unwrap();
        assert_eq!(kek.key_url, "https://keyvault-cmk.vault.azure.net/keys/key2048/test");
        assert!(kek.source_vault.id.ends_with("/providers/Microsoft.KeyVault/vaults/keyvault-cmk"));
        let created = cache.created_at().expect("systemData.createdAt");
        assert!(created > "2000-01-01T00:00:00Z".parse().unwrap());
        // Round trip keeps what we model.
        let again: Cache = serde_json::from_value(serde_json::to_value(&cache).unwrap()).unwrap();
        assert_eq!(again, cache);
    }

    #[test]
    fn cache_create_example_request_and_responses() {
        let ex = fixture("storagecache-2026-08-01/Caches_CreateOrUpdate.json");
        let req: Cache = serde_json::from_value(ex["parameters"]["cache"].clone()).unwrap();
        assert!(req.key_encryption_key().is_some());
        let identity = req.identity.as_ref().unwrap();
        assert_eq!(identity.r#type, identity_type::USER_ASSIGNED);
        assert_eq!(identity.user_assigned_identities.len(), 1);
        for status in ["200", "201"] {
            let c: Cache = serde_json::from_value(body(&ex, status)).unwrap();
            assert!(c.provisioning_state().is_some(), "{status}");
        }
    }

    #[test]
    fn cache_put_body_is_minimal_camel_case() {
        let mut uai = BTreeMap::new();
        uai.insert(
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"
                .to_string(),
            UserAssignedIdentityValue::default(),
        );
        let cache = Cache {
            location: Some("eastus".into()),
            identity: Some(CacheIdentity {
                r#type: identity_type::USER_ASSIGNED.into(),
                user_assigned_identities: uai,
                ..Default::default()
            }),
            sku: Some(CacheSku { name: "Standard_2G".into() }),
            properties: CacheProperties {
                cache_size_gb: Some(3072),
                subnet: Some(
                    "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/v/subnets/s".into(),
                ),
                encryption_settings: Some(CacheEncryptionSettings {
                    key_encryption_key: Some(KeyVaultKeyReference {
                        key_url: "https://kv.vault.azure.net/keys/k/v".into(),
                        source_vault: SourceVault {
                            id: "/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv".into(),
                        },
                    }),
                    rotation_to_latest_key_version_enabled: Some(false),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let v = serde_json::to_value(&cache).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "location": "eastus",
                "identity": {"type": "UserAssigned", "userAssignedIdentities": {"/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i": {}}},
                "sku": {"name": "Standard_2G"},
                "properties": {
                    "cacheSizeGB": 3072,
                    "subnet": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
                    "encryptionSettings": {
                        "keyEncryptionKey": {"keyUrl": "https://kv.vault.azure.net/keys/k/v", "sourceVault": {"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv"}},
                        "rotationToLatestKeyVersionEnabled": false
                    }
                }
            })
        );
    }

    #[test]
    fn vault_examples() {
        let ex = fixture("keyvault-mgmt/getVault.json");
        let v: Vault = serde_json::from_value(body(&ex, "200")).unwrap();
        assert_eq!(v.name.as_deref(), Some("sample-vault"));
        assert_eq!(v.properties.vault_uri.as_deref(), Some("https://sample-vault.vault.azure.net"));
        assert_eq!(v.properties.tenant_id.as_deref(), Some("00000000-0000-0000-0000-000000000000"));
        assert!(v.access_policy_grants(None, "00000000-0000-0000-0000-000000000000", &["get", "wrapkey", "unwrapKey"]));
        assert!(!v.access_policy_grants(None, "11111111-0000-0000-0000-000000000000", &["get"]));
        let ex = fixture("keyvault-mgmt/updateVault.json");
        let _: Vault = serde_json::from_value(body(&ex, "200")).unwrap();
        let ex = fixture("keyvault-mgmt/updateAccessPoliciesAdd.json");
        let entries: Vec<AccessPolicyEntry> =
            serde_json::from_value(ex["parameters"]["parameters"]["properties"]["accessPolicies"].clone()).unwrap();
        assert!(!entries.is_empty());
    }

    #[test]
    fn vault_protection() {
        let mut v = Vault::default();
        assert!(!v.is_protected());
        v.properties.enable_purge_protection = Some(true);
        assert!(v.is_protected());
        v.properties.enable_soft_delete = Some(false);
        assert!(!v.is_protected());
    }

    #[test]
    fn identity_example() {
        let ex = fixture("msi/IdentityGet.json");
        let i: UserAssignedIdentity = serde_json::from_value(body(&ex, "200")).unwrap();
        assert_eq!(i.name.as_deref(), Some("identityName"));
        assert!(i.properties.principal_id.is_some());
        assert!(i.properties.client_id.is_some());
        assert!(i.properties.tenant_id.is_some());
    }

    #[test]
    fn role_assignment_example() {
        let ex = fixture("authorization/RoleAssignments_CreateForResource.json");
        let ra: RoleAssignment = serde_json::from_value(body(&ex, "201")).unwrap();
        assert!(ra.properties.role_definition_id.contains("/roleDefinitions/"));
        assert!(!ra.properties.principal_id.is_empty());
    }

    #[test]
    fn key_examples() {
        let ex = fixture("keyvault-data/GetKey-example.json");
        let k: KeyBundle = serde_json::from_value(body(&ex, "200")).unwrap();
        assert_eq!(k.key.kty.as_deref(), Some("RSA"));
        assert_eq!(k.rsa_bits(), Some(2048));
        assert_eq!(k.version(), Some("78deebed173b48e48f55abf87ed4cf71"));
        assert_eq!(k.attributes.enabled, Some(true));
        assert_eq!(k.attributes.created, Some(1493942451));
        assert!(k.key.key_ops.iter().any(|o| o == "wrapKey"));
        assert!(k.is_usable_at(1493942452));
        let ex = fixture("keyvault-data/GetKeyVersions-example.json");
        let page: KeyListResult = serde_json::from_value(body(&ex, "200")).unwrap();
        assert!(!page.value.is_empty());
        assert!(page.value[0].version().is_some());
    }

    #[test]
    fn rsa_bits_counts_significant_bits() {
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let key = |n: String, kty: &str| JsonWebKey { kty: Some(kty.into()), n: Some(n), ..Default::default() };
        let mut n = vec![0x80u8];
        n.extend(vec![1u8; 255]);
        assert_eq!(key(enc(&n), "RSA").rsa_bits(), Some(2048));
        let mut with_zero = vec![0u8];
        with_zero.extend(&n);
        assert_eq!(key(enc(&with_zero), "RSA-HSM").rsa_bits(), Some(2048));
        let mut small = vec![0x7fu8];
        small.extend(vec![1u8; 255]);
        assert_eq!(key(enc(&small), "RSA").rsa_bits(), Some(2047));
        assert_eq!(key(enc(&vec![0xffu8; 384]), "RSA").rsa_bits(), Some(3072));
        assert_eq!(key(enc(&n), "EC").rsa_bits(), None);
        assert_eq!(key("!!".into(), "RSA").rsa_bits(), None);
    }

    #[test]
    fn key_usable_window() {
        let mut k = KeyBundle::default();
        k.attributes.enabled = Some(true);
        k.attributes.nbf = Some(100);
        k.attributes.exp = Some(200);
        assert!(!k.is_usable_at(99));
        assert!(k.is_usable_at(150));
        assert!(!k.is_usable_at(200));
        k.attributes.enabled = Some(false);
        assert!(!k.is_usable_at(150));
    }

    #[test]
    fn key_url_parsing() {
        let k =
            KeyUrl::parse("https://kv-cmk.vault.azure.net/keys/cache-key/0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(k.vault_uri.as_str(), "https://kv-cmk.vault.azure.net/");
        assert_eq!(k.name, "cache-key");
        assert_eq!(k.version.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        let k = KeyUrl::parse("https://kv.vault.azure.net:8443/keys/k").unwrap();
        assert_eq!(k.vault_uri.as_str(), "https://kv.vault.azure.net:8443/");
        assert_eq!(k.version, None);
        assert!(KeyUrl::parse("http://kv.vault.azure.net/keys/k").is_none());
        assert!(KeyUrl::parse("https://kv.vault.azure.net/secrets/k").is_none());
    }

    #[test]
    fn aml_filesystem_examples() {
        let ex = fixture("storagecache-2026-08-01/amlFilesystems_Get.json");
        let fs: AmlFilesystem = serde_json::from_value(body(&ex, "200")).unwrap();
        assert_eq!(fs.name.as_deref(), Some("fs1"));
        assert_eq!(fs.provisioning_state(), Some(provisioning_state::SUCCEEDED));
        assert_eq!(fs.health_state(), Some(aml_health_state::AVAILABLE));
        assert_eq!(fs.key_encryption_key().unwrap().key_url, "https://keyvault-cmk.vault.azure.net/keys/key2048/test");
        assert_eq!(fs.properties.storage_capacity_tib, Some(16.0));
        assert_eq!(fs.mgs_address(), Some("10.0.0.4"));
        let again: AmlFilesystem = serde_json::from_value(serde_json::to_value(&fs).unwrap()).unwrap();
        assert_eq!(again, fs, "round trip keeps what is modelled");

        // The create request: every field it carries is modelled, so writing the model back gives the request.
        let ex = fixture("storagecache-2026-08-01/amlFilesystems_CreateOrUpdate.json");
        let req = ex["parameters"]["amlFilesystem"].clone();
        let desired: AmlFilesystem = serde_json::from_value(req.clone()).unwrap();
        assert_eq!(serde_json::to_value(&desired).unwrap(), req);
        assert_eq!(desired.identity.as_ref().unwrap().r#type, identity_type::USER_ASSIGNED);
        let squash = desired.properties.root_squash_settings.as_ref().unwrap();
        assert_eq!(squash.mode.as_deref(), Some(root_squash_mode::ALL));
        assert_eq!(squash.no_squash_nid_lists.as_deref(), Some("10.0.0.[5-6]@tcp;10.0.1.2@tcp"));
        for status in ["200", "201"] {
            let fs: AmlFilesystem = serde_json::from_value(body(&ex, status)).unwrap();
            assert_eq!(fs.provisioning_state(), Some("Succeeded"), "{status}");
        }

        let ex = fixture("storagecache-2026-08-01/amlFilesystems_Update.json");
        let req = ex["parameters"]["amlFilesystem"].clone();
        let update: AmlFilesystemUpdate = serde_json::from_value(req.clone()).unwrap();
        assert_eq!(update.to_json(), req);
        let fs: AmlFilesystem = serde_json::from_value(body(&ex, "200")).unwrap();
        assert!(fs.key_encryption_key().is_some());
    }

    #[test]
    fn aml_filesystem_older_and_newer_fields() {
        // 2023-05-01 sends `importPrefix`; 2026-08-01 adds `Expanding` and fields the model ignores.
        let fs: AmlFilesystem = serde_json::from_value(serde_json::json!({
            "properties": {
                "storageCapacityTiB": 8.5, "currentStorageCapacityTiB": 12, "clusterUuid": "00000000-0000-0000-0000-000000000001",
                "health": {"state": "Expanding"},
                "hsm": {"settings": {"container": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/sa/blobServices/default/containers/c",
                                      "loggingContainer": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/sa/blobServices/default/containers/l",
                                      "importPrefix": "/data"}}
            }
        }))
        .unwrap();
        assert_eq!(fs.health_state(), Some(aml_health_state::EXPANDING));
        let hsm = fs.hsm_settings().unwrap();
        assert_eq!(hsm.import_prefix.as_deref(), Some("/data"));
        assert_eq!(
            hsm.storage_account().unwrap().to_string(),
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/sa"
        );
        // A fractional size stays a float; a whole one is an integer.
        assert_eq!(serde_json::to_value(&fs).unwrap()["properties"]["storageCapacityTiB"], serde_json::json!(8.5));
        let whole = AmlFilesystemProperties { storage_capacity_tib: Some(48.0), ..Default::default() };
        assert_eq!(serde_json::to_string(&whole).unwrap(), r#"{"storageCapacityTiB":48}"#);
        assert_eq!(serde_json::to_string(&AmlFilesystemProperties::default()).unwrap(), "{}");
        // A container that is not a blob container names no storage account.
        let odd =
            AmlFilesystemHsmSettings { container: "https://sa.blob.core.windows.net/c".into(), ..Default::default() };
        assert!(odd.storage_account().is_none());
        assert_eq!(day_of_week::ALL.len(), 7);
    }

    #[test]
    fn unknown_fields_ignored() {
        let c: Cache =
            serde_json::from_str(r#"{"properties":{"provisioningState":"Creating","somethingNew":1},"extra":true}"#)
                .unwrap();
        assert_eq!(c.provisioning_state(), Some("Creating"));
    }
}

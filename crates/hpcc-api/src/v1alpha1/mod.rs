//! The `HpcCache` custom resource: the contract users write (spec) and read (status).
//!
//! Field names are fixed by the design brief. What the apiserver can judge is enforced in the schema (OpenAPI
//! patterns and CEL rules, see [`rules`]), so a bad manifest is refused at `kubectl apply` with a readable message.

mod amlfs;
mod common;
mod conditions;
pub mod rules;

pub use amlfs::{
    AmlEncryption, AmlFilesystem, AmlFilesystemSpec, AmlFilesystemStatus, AmlIdentity, BlobIntegration,
    MaintenanceWindow, RootSquash,
};
pub use common::{
    ADOPT_ANNOTATION, AzureLocation, DeletionPolicy, GrantKind, GrantRecord, KeyAccess, KindStatus, Phase,
    RECONCILE_POLICY_ANNOTATION, ReconcilePolicy, adopt, reconcile_policy,
};
pub use conditions::{ConditionStatus, ConditionType, set_condition};

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of an Azure HPC Cache encrypted with a customer-managed key.
// clippy reads the repeated `type_ = "string"` inside separate printcolumn(...) groups as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hpccache.io",
    version = "v1alpha1",
    kind = "HpcCache",
    plural = "hpccaches",
    shortname = "hpcc",
    category = "azure",
    namespaced,
    status = "HpcCacheStatus",
    doc = "An Azure HPC Cache encrypted with a customer-managed key from Azure Key Vault. The operator creates the cache, authorizes its identity on the vault inside Azure's 90-minute window, rotates the key when the spec changes and deletes the cache (or leaves it, by deletionPolicy) when the object is deleted. Progress is reported in status.conditions (Ready, Reconciling, Stalled, KeyValid, KeyAuthorized).",
    // kstatus order: Ready and its reason first; the full key URL and Azure's health under -o wide.
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Key", type_ = "string", json_path = ".status.activeKey"),
    // A deadline lies in the future, which a "date" column prints as <invalid>: show the timestamp.
    printcolumn(name = "Deadline", type_ = "string", json_path = ".status.authorizationDeadline"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.healthState", priority = "1"),
    printcolumn(name = "Key URL", type_ = "string", json_path = ".status.activeKeyUrl", priority = "1")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::ENCRYPTION_PRESENCE_IMMUTABLE).message(rules::ENCRYPTION_PRESENCE_IMMUTABLE_MSG))]
#[x_kube(validation = Rule::new(rules::VAULT_IN_CACHE_SUBSCRIPTION).message(rules::VAULT_IN_CACHE_SUBSCRIPTION_MSG))]
pub struct HpcCacheSpec {
    /// Where the cache lives in Azure. Create-only: changing it is refused.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.azure is immutable: a cache cannot move; create a new HpcCache instead"))]
    pub azure: AzureLocation,

    /// Cache SKU, for example Standard_2G, Standard_4G or Standard_8G. Create-only.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]{1,64}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.sku is immutable after creation"))]
    pub sku: String,

    /// Cache size in GB; must be one of the sizes the SKU offers (for Standard_2G: 3072, 6144 or 12288). Create-only.
    #[schemars(range(min = 1, max = 1048576))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.cacheSizeGB is immutable after creation"))]
    #[serde(rename = "cacheSizeGB")]
    pub cache_size_gb: i32,

    /// ARM id of the subnet the cache is placed in (/subscriptions/{id}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}). Create-only.
    #[schemars(regex(
        pattern = r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.Network/virtualNetworks/[-\w._]{2,64}/subnets/[-\w._]{1,80}$"
    ))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.subnetId is immutable after creation"))]
    pub subnet_id: String,

    /// The managed identity the cache uses to reach its key. Immutable: Azure cannot change a cache's identity.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.identity is immutable: Azure cannot change the identity of an existing cache"))]
    pub identity: CacheIdentity,

    /// Customer-managed key settings. Present = encrypted with your key; absent = Microsoft-managed keys. Whether it is present cannot change after creation; the vault, key and version can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,

    /// Who authorizes the cache's identity on the Key Vault: Automatic (the operator does, inside Azure's 90-minute window) or Manual (a person does; the operator reports the principal id and the deadline).
    #[serde(default)]
    pub key_access: KeyAccess,

    /// What to do when the 90-minute authorization window is missed: Fail (stop and report) or Recreate (delete the failed cache and create a new one, up to maxRecreations times).
    #[serde(default)]
    pub on_authorization_timeout: AuthorizationTimeoutPolicy,

    /// How many times the operator may re-create a cache that missed its authorization window (Recreate policy).
    #[serde(default = "default_max_recreations")]
    #[schemars(range(min = 0, max = 10))]
    pub max_recreations: i32,

    /// What happens to the Azure cache when this object is deleted: Delete it, or Orphan it (keep it in Azure).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Azure resource tags for the cache (at most 50).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub tags: BTreeMap<String, String>,
}

fn default_max_recreations() -> i32 {
    3
}

/// The cache's managed identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::USER_ASSIGNED_NEEDS_ID).message(rules::USER_ASSIGNED_NEEDS_ID_MSG))]
#[x_kube(validation = Rule::new(rules::ID_ONLY_FOR_USER_ASSIGNED).message(rules::ID_ONLY_FOR_USER_ASSIGNED_MSG))]
pub struct CacheIdentity {
    /// SystemAssigned (Azure creates an identity with the cache; it must be authorized within 90 minutes) or UserAssigned (an existing identity; with keyAccess Automatic it is authorized before the cache exists).
    #[serde(default, rename = "type")]
    pub type_: IdentityType,
    /// ARM id of the user-assigned identity; required when type is UserAssigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[-\w]{3,128}$"
    ))]
    pub user_assigned_identity_id: Option<String>,
}

/// Kind of managed identity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum IdentityType {
    /// Created by Azure with the cache, deleted with it.
    #[default]
    SystemAssigned,
    /// An existing identity named by userAssignedIdentityId.
    UserAssigned,
}

/// Customer-managed key settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::VERSION_OR_ROTATION).message(rules::VERSION_OR_ROTATION_MSG))]
pub struct Encryption {
    /// ARM id of the Key Vault holding the key (/subscriptions/{id}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}). The vault must be in the cache's subscription and region, with soft delete and purge protection on (Automatic mode turns them on).
    #[schemars(regex(
        pattern = r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.KeyVault/vaults/[a-zA-Z0-9-]{3,24}$"
    ))]
    #[schemars(length(max = 512))]
    pub key_vault_id: String,
    /// Name of the key in the vault. It must be an enabled 2048-bit RSA key.
    #[schemars(regex(pattern = r"^[0-9a-zA-Z-]{1,127}$"))]
    pub key_name: String,
    /// Key version (32 hex characters). Optional when rotateToLatestKeyVersion is true: the operator then uses the current version. Changing it rotates the cache to that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{32}$"))]
    pub key_version: Option<String>,
    /// Let Azure move the cache to the newest key version automatically (rotationToLatestKeyVersionEnabled).
    #[serde(default)]
    pub rotate_to_latest_key_version: bool,
}

/// What to do when Azure's 90-minute authorization window is missed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AuthorizationTimeoutPolicy {
    /// Stop in phase Failed; a person deletes and re-creates the object.
    #[default]
    Fail,
    /// Delete the failed cache and create a new one (counted in status.recreations).
    Recreate,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpcCacheStatus {
    /// Where the cache is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled (kstatus) plus KeyValid and KeyAuthorized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// ARM id of the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_resource_id: Option<String>,
    /// Object id of the identity that must be trusted by the Key Vault (what a person grants in Manual mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Entra tenant of the cache identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// When Azure created the cache (systemData.createdAt), or when the operator asked it to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// createdAt + 90 minutes, while the key grant is outstanding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_deadline: Option<Time>,
    /// The key URL (with version) the cache is encrypted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key_url: Option<String>,
    /// The key the cache is encrypted with, short: {key name}/{version} (the full URL is activeKeyUrl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key: Option<String>,
    /// Addresses HPC clients mount the cache from (NFS), as Azure reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_addresses: Vec<String>,
    /// Azure's provisioningState, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Azure's health state, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_state: Option<String>,
    /// How many times the cache was re-created after a missed authorization window.
    #[serde(default)]
    pub recreations: i32,
    /// Vault grants the operator made (or is making), so those for a system-assigned identity can be revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantRecord>,
    /// When Azure first reported the cache healthy with its key; from then on the 90-minute window no longer applies
    /// and the cache is never deleted to re-create it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_at: Option<Time>,
    /// Manual mode: the last deadline warning sent as an event (minutes left: 30, 10 or 5), so each warns once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_warning_minutes: Option<i32>,
    /// Set before the first create request (Azure's clock), so a restart never loses the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_requested_at: Option<Time>,
}

impl KindStatus for HpcCacheStatus {
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

impl HpcCache {
    /// The reconcile policy from the annotation, `default` without one; Err(message) for an unknown value.
    pub fn reconcile_policy(&self, default: ReconcilePolicy) -> Result<ReconcilePolicy, String> {
        reconcile_policy(&self.metadata, default)
    }

    /// Whether the object asks to adopt an Azure cache made outside the operator.
    pub fn adopt(&self) -> bool {
        adopt(&self.metadata)
    }

    /// The name of the cache in Azure.
    pub fn azure_name(&self) -> &str {
        self.spec.azure.name.as_deref().or(self.metadata.name.as_deref()).unwrap_or_default()
    }
}

/// The CRD as YAML, as `hpc-cache-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    let hpc = serde_yaml_ng::to_string(&HpcCache::crd()).expect("a CRD always serialises");
    let aml = serde_yaml_ng::to_string(&AmlFilesystem::crd()).expect("a CRD always serialises");
    format!("# Generated by `hpc-cache-operator crd`; do not edit.\n---\n{hpc}---\n{aml}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/hpccache.yaml");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(on_disk == crd_yaml(), "crds/hpccache.yaml is stale: run `make crds`");
    }

    #[test]
    fn every_schema_property_has_a_description() {
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (k, child) in props {
                    let p = format!("{path}.{k}");
                    let top_level = path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str());
                    if child.get("description").is_none() && !top_level && p != ".spec" && p != ".status" {
                        missing.push(p.clone());
                    }
                    walk(&p, child, missing);
                }
            }
            if let Some(items) = v.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let crd = serde_json::to_value(HpcCache::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = vec![];
        walk("", &schema["properties"]["spec"], &mut missing);
        assert!(missing.is_empty(), "fields without description: {missing:?}");
    }

    #[test]
    fn defaults_match_the_contract() {
        let spec: HpcCacheSpec = serde_json::from_value(serde_json::json!({
            "azure": {"subscriptionId": "11111111-2222-3333-4444-555555555555", "resourceGroup": "rg", "location": "eastus"},
            "sku": "Standard_2G", "cacheSizeGB": 3072,
            "subnetId": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
        }))
        .unwrap();
        assert_eq!(spec.identity.type_, IdentityType::SystemAssigned);
        assert_eq!(spec.key_access, KeyAccess::Automatic);
        assert_eq!(spec.on_authorization_timeout, AuthorizationTimeoutPolicy::Fail);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(spec.max_recreations, 3);
    }
}

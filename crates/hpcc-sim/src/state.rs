//! The simulated world and the pure rules over it (who can reach which key, how a cache's state follows the clock).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use rand::RngCore as _;
use serde::Serialize;
use serde_json::Value;

use super::seed::{Seed, SeedKeyVersion};

/// Role "Key Vault Crypto Service Encryption User" (keys/read, wrap, unwrap data actions).
pub const ROLE_CRYPTO_SERVICE_ENCRYPTION_USER: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";
pub const ROLE_CRYPTO_USER: &str = "12338af0-0e69-4776-bea7-57ae8d297424";
pub const ROLE_CRYPTO_OFFICER: &str = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603";
pub const ROLE_KV_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
pub const ROLE_KV_READER: &str = "21090545-7ca7-4776-b22c-e363652d74d2";
pub const ROLE_OWNER: &str = "8e3af657-a8ff-443f-a75c-2fe8c4bcb635";
pub const ROLE_CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
pub const ROLE_READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
pub const ROLE_USER_ACCESS_ADMINISTRATOR: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
/// "Storage Account Contributor" (Microsoft Learn, Azure built-in roles): one of the two roles the HPC Cache Resource
/// Provider needs on the storage account for Azure Managed Lustre blob integration.
pub const ROLE_STORAGE_ACCOUNT_CONTRIBUTOR: &str = "17d1049b-9a84-46fb-8f53-869881c3d3ab";
/// "Storage Blob Data Contributor": the other role blob integration needs.
pub const ROLE_STORAGE_BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
/// "Storage Blob Data Owner": every data action of Storage Blob Data Contributor and more.
pub const ROLE_STORAGE_BLOB_DATA_OWNER: &str = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b";

/// Built-in roles the simulator knows (role assignments with other ids get `RoleDefinitionDoesNotExist`).
pub const KNOWN_ROLES: &[&str] = &[
    ROLE_CRYPTO_SERVICE_ENCRYPTION_USER,
    ROLE_CRYPTO_USER,
    ROLE_CRYPTO_OFFICER,
    ROLE_KV_ADMINISTRATOR,
    ROLE_KV_READER,
    ROLE_OWNER,
    ROLE_CONTRIBUTOR,
    ROLE_READER,
    ROLE_USER_ACCESS_ADMINISTRATOR,
    ROLE_STORAGE_ACCOUNT_CONTRIBUTOR,
    ROLE_STORAGE_BLOB_DATA_CONTRIBUTOR,
    ROLE_STORAGE_BLOB_DATA_OWNER,
];

pub const DEFAULT_TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-4000-8000-000000000000";
pub const DEFAULT_OPERATOR_CLIENT_ID: &str = "0b1e7c2a-0000-4000-8000-0000000000c1";
pub const DEFAULT_OPERATOR_OBJECT_ID: &str = "0b1e7c2a-0000-4000-8000-0000000000d1";
pub const DEFAULT_OPERATOR_SECRET: &str = "sim-operator-secret";
/// Application (client) id of the first-party service principal "HPC Cache Resource Provider", the same in every
/// tenant (microsoft/mcp `tools/Azure.Mcp.Tools.ManagedLustre/tests/test-resources-post.ps1` assigns its blob
/// integration roles with `-ApplicationId 4392ab71-2ce2-4b0d-8770-b352745c73f5`).
pub const HPC_CACHE_RP_APP_ID: &str = "4392ab71-2ce2-4b0d-8770-b352745c73f5";
/// Object id of that service principal in the simulated tenant: the simulator's own (a service principal's object
/// id differs per tenant). A seed principal with client id [`HPC_CACHE_RP_APP_ID`] replaces it.
pub const HPC_CACHE_RP_OBJECT_ID: &str = "4392ab71-0000-4000-8000-0000000000e1";

/// How long a PATCH/PUT update of a running cache keeps `provisioningState: Updating` (simulated).
pub const UPDATE_DURATION: Duration = Duration::from_secs(60);
/// How long a DELETE keeps `provisioningState: Deleting` before the cache disappears (simulated).
pub const DELETE_DURATION: Duration = Duration::from_secs(120);
/// How long after its create request an AML file system whose blob integration the HPC Cache Resource Provider
/// cannot use is reported `Failed` (simulated; the simulator's choice, capped by the create time).
pub const AMLFS_BLOB_FAILURE_AFTER: Duration = Duration::from_secs(5 * 60);

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn new_key_version() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn sdur(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// `true` when `scope` is `id` or an ancestor of it by path (ARM ids, case-insensitive). `/` covers everything.
/// Management-group ancestry is not a path prefix: see [`World::scope_applies`].
pub fn scope_covers(scope: &str, id: &str) -> bool {
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    let i = id.trim_end_matches('/').to_ascii_lowercase();
    s.is_empty() || i == s || i.starts_with(&format!("{s}/"))
}

/// `/providers/Microsoft.Management/managementGroups/{mg}` → `mg` (any case).
pub fn management_group_of(scope: &str) -> Option<&str> {
    let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [p, ns, t, name] | [p, ns, t, name, ..]
            if p.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.Management")
                && t.eq_ignore_ascii_case("managementGroups") =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// `/subscriptions/{s}/…` → `s`.
pub fn subscription_of(id: &str) -> Option<&str> {
    let segs: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [s, sub, ..] if s.eq_ignore_ascii_case("subscriptions") => Some(sub),
        _ => None,
    }
}

/// The vault a scope is at or below (`…/providers/Microsoft.KeyVault/vaults/{v}[/…]`), lower-case.
pub fn vault_of_scope(scope: &str) -> Option<String> {
    let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    segs.windows(3)
        .find(|w| w[0].eq_ignore_ascii_case("Microsoft.KeyVault") && w[1].eq_ignore_ascii_case("vaults"))
        .map(|w| w[2].to_ascii_lowercase())
}

/// The key operations a key version gets when the seed names none: the set (and order) of the official GetKey
/// example (`keyvault-data/GetKey-example.json`) for RSA keys; `sign, verify` for EC keys; wrap/unwrap for `oct`.
pub fn default_key_ops(kty: &str) -> Vec<String> {
    let ops: &[&str] = if kty.starts_with("RSA") {
        &["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
    } else if kty.starts_with("EC") {
        &["sign", "verify"]
    } else {
        &["wrapKey", "unwrapKey"]
    };
    ops.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    pub object_id: String,
    pub client_id: String,
    #[serde(skip_serializing)]
    pub secret: Option<String>,
    pub display_name: String,
    /// `ServicePrincipal` for applications, `ManagedIdentity` for system/user-assigned identities.
    pub kind: String,
    pub arm_scopes: Vec<String>,
    pub federated_credentials: Vec<super::seed::SeedFederatedCredential>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub principal_id: String,
    pub client_id: String,
    pub tenant_id: String,
    pub tags: BTreeMap<String, String>,
    pub created_at: Timestamp,
}

impl UserIdentity {
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub certificates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    pub tenant_id: String,
    pub object_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    pub permissions: Permissions,
}

impl AccessPolicy {
    pub fn has_key_permission(&self, perm: &str) -> bool {
        self.permissions.keys.iter().any(|p| p.eq_ignore_ascii_case(perm) || p.eq_ignore_ascii_case("all"))
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    pub version: String,
    pub kty: String,
    /// Raw RSA modulus (random bytes, first byte non-zero: no cryptography is done) or EC x‖y.
    #[serde(skip_serializing)]
    pub material: Vec<u8>,
    pub size_bits: u32,
    pub enabled: bool,
    pub nbf: Option<Timestamp>,
    pub exp: Option<Timestamp>,
    pub created: Timestamp,
    pub tags: BTreeMap<String, String>,
    /// JsonWebKey `key_ops`: what Key Vault lets callers do with this version (403 `KeyOperationForbidden`
    /// otherwise; Azure SDK for .NET issue 11518 shows the real answer).
    pub key_ops: Vec<String>,
}

impl KeyVersion {
    pub fn from_seed(s: &SeedKeyVersion, created: Timestamp) -> KeyVersion {
        let kty = s.kty.clone();
        let size_bits = if kty.starts_with("EC") { 256 } else { s.size };
        let len = if kty.starts_with("EC") { 64 } else { (s.size as usize).div_ceil(8) };
        let mut material = vec![0u8; len];
        rand::rng().fill_bytes(&mut material);
        if let Some(b) = material.first_mut() {
            *b |= 0x80;
        }
        KeyVersion {
            version: s.version.clone().unwrap_or_else(new_key_version).to_ascii_lowercase(),
            kty,
            material,
            size_bits,
            enabled: s.enabled,
            nbf: s.nbf,
            exp: s.exp,
            created,
            tags: s.tags.clone(),
            key_ops: s.key_ops.clone().unwrap_or_else(|| default_key_ops(&s.kty)),
        }
    }

    /// Does `key_ops` allow `op` (`wrapKey`, `unwrapKey`, …)? Compared without case (the seed may spell them
    /// either way).
    pub fn allows(&self, op: &str) -> bool {
        self.key_ops.iter().any(|o| o.eq_ignore_ascii_case(op))
    }

    /// JsonWebKey: `n`/`e` for RSA, `crv`/`x`/`y` for EC, nothing secret.
    pub fn jwk(&self, kid: &str) -> Value {
        let mut jwk = serde_json::json!({"kid": kid, "kty": self.kty, "key_ops": self.key_ops});
        if self.kty.starts_with("RSA") {
            jwk["n"] = Value::String(URL_SAFE_NO_PAD.encode(&self.material));
            jwk["e"] = Value::String("AQAB".into());
        } else if self.kty.starts_with("EC") {
            jwk["crv"] = Value::String("P-256".into());
            let (x, y) = self.material.split_at(self.material.len() / 2);
            jwk["x"] = Value::String(URL_SAFE_NO_PAD.encode(x));
            jwk["y"] = Value::String(URL_SAFE_NO_PAD.encode(y));
        }
        jwk
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    pub name: String,
    /// Oldest first; the last is the current version.
    pub versions: Vec<KeyVersion>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub tenant_id: String,
    pub sku: String,
    pub enable_rbac_authorization: bool,
    pub enable_soft_delete: bool,
    pub soft_delete_retention_in_days: i64,
    pub enable_purge_protection: Option<bool>,
    pub access_policies: Vec<AccessPolicy>,
    pub enabled_for_deployment: bool,
    pub enabled_for_disk_encryption: bool,
    pub enabled_for_template_deployment: bool,
    pub public_network_access: String,
    pub network_acls: Option<Value>,
    pub tags: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub last_modified_at: Timestamp,
    pub keys: BTreeMap<String, Key>,
    /// `{objectId}|{key permission}` (lower-case) → when that access-policy permission takes effect for a cache's
    /// key access (grant propagation). Kept in step with `access_policies` by [`Vault::restamp_policies`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policy_effective_at: BTreeMap<String, Timestamp>,
}

impl Vault {
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }

    pub fn key(&self, name: &str) -> Option<&Key> {
        self.keys.get(&name.to_ascii_lowercase())
    }

    /// Bring `policy_effective_at` in step with `access_policies`: key permissions that appeared take effect at
    /// `effective_at`, permissions that are gone are forgotten (a later re-grant propagates again).
    pub fn restamp_policies(&mut self, effective_at: Timestamp) {
        let mut present = BTreeSet::new();
        for a in &self.access_policies {
            for p in &a.permissions.keys {
                present.insert(format!("{}|{}", a.object_id.to_ascii_lowercase(), p.to_ascii_lowercase()));
            }
        }
        self.policy_effective_at.retain(|k, _| present.contains(k));
        for k in present {
            self.policy_effective_at.entry(k).or_insert(effective_at);
        }
    }

    /// When an access policy of this vault started to give `principal_id` the key permission `perm` (or `all`).
    pub fn policy_effective_since(&self, principal_id: &str, perm: &str) -> Option<Timestamp> {
        let has = self
            .access_policies
            .iter()
            .filter(|a| a.object_id.eq_ignore_ascii_case(principal_id))
            .any(|a| a.has_key_permission(perm));
        if !has {
            return None;
        }
        let oid = principal_id.to_ascii_lowercase();
        [perm.to_ascii_lowercase(), "all".to_string()]
            .iter()
            .filter_map(|p| self.policy_effective_at.get(&format!("{oid}|{p}")).copied())
            .min()
            // a permission the stamps do not know yet (not restamped): effective now-ish, never earlier
            .or(Some(self.last_modified_at))
    }

    pub fn recovery_level(&self) -> &'static str {
        match (self.enable_soft_delete, self.enable_purge_protection == Some(true)) {
            (true, true) => "Recoverable",
            (true, false) => "Recoverable+Purgeable",
            (false, _) => "Purgeable",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    pub name: String,
    /// With leading `/`, as given (`/` for tenant root).
    pub scope: String,
    pub role_definition_guid: String,
    pub principal_id: String,
    pub principal_type: String,
    pub description: Option<String>,
    pub created_on: Timestamp,
    pub updated_on: Timestamp,
    pub created_by: String,
    /// When the assignment takes effect for a cache's key access (Key Vault RBAC: "up to 10 minutes").
    /// [`Timestamp::MIN`] for assignments that already existed (seed).
    pub effective_at: Timestamp,
}

impl RoleAssignment {
    pub fn id(&self) -> String {
        let scope = self.scope.trim_end_matches('/');
        format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{}", self.name)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEncryption {
    pub key_url: String,
    pub source_vault_id: String,
    pub vault_name: String,
    pub key_name: String,
    pub key_version: Option<String>,
    pub rotation_to_latest_key_version_enabled: Option<bool>,
    /// When `rotationToLatestKeyVersionEnabled` last became true (an update; creates never turn it on).
    pub rotation_enabled_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheIdentity {
    /// `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned` or `None`.
    pub kind: String,
    pub system_principal_id: Option<String>,
    /// Resource id as given → (principalId, clientId).
    pub user_assigned: BTreeMap<String, (String, String)>,
}

impl CacheIdentity {
    /// Principals that act for the cache towards Key Vault.
    pub fn principals(&self) -> Vec<String> {
        let mut v: Vec<String> = self.system_principal_id.iter().cloned().collect();
        v.extend(self.user_assigned.values().map(|(p, _)| p.clone()));
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Stage {
    /// Waiting for the identity to get key access (CMK only).
    WaitingForKey,
    /// Being built; health `Transitioning`.
    Transitioning,
    Healthy,
    Failed,
}

/// Everything the clock-driven state machine of a cache needs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheTimeline {
    pub created_at: Timestamp,
    pub cmk: bool,
    /// First simulated instant at which the cache identity could reach the key.
    pub access_at: Option<Timestamp>,
    pub failed_at: Option<Timestamp>,
    pub updating_until: Option<Timestamp>,
    pub deleting_until: Option<Timestamp>,
}

/// How long the simulated cache takes for each step, in simulated time (from `SimConfig`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Delays {
    pub authorization_window: Duration,
    pub key_ready_delay: Duration,
    pub create_delay: Duration,
    /// From a grant (access policy or role assignment) to it counting for a cache's key access.
    pub grant_propagation: Duration,
    /// With `rotationToLatestKeyVersionEnabled`, from a newer enabled key version appearing to the cache using it.
    pub auto_rotation_delay: Duration,
    /// From an AML file system's create request to `Succeeded`/`Available`.
    pub aml_create_delay: Duration,
}

impl CacheTimeline {
    /// When creation completes, if it can.
    pub fn ready_at(&self, t: &Delays) -> Option<Timestamp> {
        if self.failed_at.is_some() {
            return None;
        }
        if !self.cmk {
            return Some(self.created_at + sdur(t.create_delay));
        }
        let access = self.access_at?;
        if access <= self.created_at {
            Some(self.created_at + sdur(t.create_delay))
        } else {
            Some(access + sdur(t.key_ready_delay))
        }
    }

    pub fn stage(&self, now: Timestamp, t: &Delays) -> Stage {
        if self.failed_at.is_some_and(|f| f <= now) {
            return Stage::Failed;
        }
        match self.ready_at(t) {
            Some(r) if r <= now => Stage::Healthy,
            Some(_) => Stage::Transitioning,
            None => Stage::WaitingForKey,
        }
    }

    /// When the cache's health became `WaitingForKey`: a CMK cache whose identity could not reach the key when it
    /// was created reports `WaitingForKey` from its creation on, so that is the instant; `None` for a cache that
    /// never waited (no CMK, or access in effect at creation). Benchmarks measure reaction time from here.
    pub fn waiting_for_key_at(&self) -> Option<Timestamp> {
        (self.cmk && self.access_at.is_none_or(|a| a > self.created_at)).then_some(self.created_at)
    }

    /// Whether the timeline still waits for the identity's key access (what [`Self::observe`] records).
    pub fn awaits_key_access(&self) -> bool {
        self.cmk && self.access_at.is_none() && self.failed_at.is_none()
    }

    /// Record the effect of the clock reaching `now`, given since when (if at all) the cache identity's key access
    /// has been in effect (grants propagate, so this can lie between two requests; it can also lie before the
    /// cache was created). Call at every request, before and after any mutation.
    pub fn observe(&mut self, now: Timestamp, access_since: Option<Timestamp>, t: &Delays) {
        if !self.awaits_key_access() {
            return;
        }
        let deadline = self.created_at + sdur(t.authorization_window);
        match access_since {
            Some(s) if s <= now && s < deadline => self.access_at = Some(s),
            _ if now >= deadline => self.failed_at = Some(deadline),
            _ => {}
        }
    }

    /// `(provisioningState, health.state, statusDescription)` at `now`.
    pub fn status(&self, now: Timestamp, t: &Delays) -> (&'static str, &'static str, &'static str) {
        if self.deleting_until.is_some() {
            return ("Deleting", "Transitioning", "Cache is being deleted.");
        }
        match self.stage(now, t) {
            Stage::Failed => (
                "Failed",
                "Down",
                "The cache identity was not given access to the encryption key within the authorization window; the cache must be re-created.",
            ),
            Stage::WaitingForKey => (
                "Creating",
                "WaitingForKey",
                "Waiting for the cache identity to be given access to the encryption key.",
            ),
            Stage::Transitioning => ("Creating", "Transitioning", "Cache is being created."),
            Stage::Healthy => {
                if self.updating_until.is_some_and(|u| now < u) {
                    ("Updating", "Healthy", "Cache is healthy.")
                } else {
                    ("Succeeded", "Healthy", "Cache is healthy.")
                }
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cache {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub sku: String,
    pub cache_size_gb: i64,
    pub subnet: String,
    pub tags: BTreeMap<String, String>,
    pub identity: Option<CacheIdentity>,
    pub encryption: Option<CacheEncryption>,
    /// Other request properties kept as sent (networkSettings, securitySettings, directoryServicesSettings,
    /// upgradeSettings, zones).
    pub extra_properties: serde_json::Map<String, Value>,
    pub zones: Option<Value>,
    pub created_by: String,
    pub last_modified_by: String,
    pub last_modified_at: Timestamp,
    pub timeline: CacheTimeline,
}

impl Cache {
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.StorageCache/caches/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

/// A storage account, as far as Azure Managed Lustre blob integration needs one (seed `storageAccounts`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccount {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
}

impl StorageAccount {
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

/// The "HPC Cache Resource Provider" first-party service principal with object id `oid` (no secret: it never asks
/// the simulator for tokens; it only receives role assignments).
pub fn hpc_cache_rp(oid: &str) -> Principal {
    Principal {
        object_id: oid.to_string(),
        client_id: HPC_CACHE_RP_APP_ID.into(),
        secret: None,
        display_name: "HPC Cache Resource Provider".into(),
        kind: "ServicePrincipal".into(),
        arm_scopes: vec![],
        federated_credentials: vec![],
    }
}

/// The clock-driven life of an AML file system. Unlike a cache there is no waiting for key access: the key is
/// checked when the create request arrives.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlTimeline {
    pub created_at: Timestamp,
    /// When creation completes (`created_at + aml_create_delay`), unless it failed first.
    pub ready_at: Timestamp,
    /// When the create is reported failed, and why (`code`, `message`).
    pub failed_at: Option<Timestamp>,
    pub failure: Option<(String, String)>,
    pub updating_until: Option<Timestamp>,
    pub deleting_until: Option<Timestamp>,
}

impl AmlTimeline {
    pub fn failed(&self, now: Timestamp) -> bool {
        self.failed_at.is_some_and(|f| f <= now)
    }

    /// Created and not failed (`Succeeded`, or `Updating` during an update).
    pub fn ready(&self, now: Timestamp) -> bool {
        !self.failed(now) && self.ready_at <= now && self.deleting_until.is_none()
    }

    /// `(provisioningState, health.state, health.statusDescription)` at `now`.
    pub fn status(&self, now: Timestamp) -> (&'static str, &'static str, &str) {
        if self.deleting_until.is_some() {
            return ("Deleting", "Transitioning", "amlFilesystem is being deleted.");
        }
        if self.failed(now) {
            let msg = self.failure.as_ref().map(|(_, m)| m.as_str()).unwrap_or("amlFilesystem creation failed.");
            return ("Failed", "Unavailable", msg);
        }
        if now < self.ready_at {
            return ("Creating", "Transitioning", "amlFilesystem is being created.");
        }
        // "amlFilesystem is ok.": the examples' text for an available file system.
        if self.updating_until.is_some_and(|u| now < u) {
            ("Updating", "Available", "amlFilesystem is ok.")
        } else {
            ("Succeeded", "Available", "amlFilesystem is ok.")
        }
    }
}

/// An Azure Managed Lustre file system (`Microsoft.StorageCache/amlFilesystems`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystem {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub sku: String,
    pub storage_capacity_tib: f64,
    pub filesystem_subnet: String,
    pub zones: Option<Value>,
    pub tags: BTreeMap<String, String>,
    /// `UserAssigned` (the identities that reach the key) or an explicit `None`; absent when not given.
    pub identity: Option<CacheIdentity>,
    pub encryption: Option<CacheEncryption>,
    pub maintenance_day_of_week: String,
    pub maintenance_time_of_day_utc: String,
    /// `hsm.settings` as sent (container, loggingContainer, importPrefix, importPrefixesInitial).
    pub hsm_settings: Option<Value>,
    pub root_squash_settings: Option<Value>,
    pub cluster_uuid: String,
    pub mgs_address: String,
    pub created_by: String,
    pub last_modified_by: String,
    pub last_modified_at: Timestamp,
    pub timeline: AmlTimeline,
}

impl AmlFilesystem {
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.StorageCache/amlFilesystems/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OpKind {
    Create,
    Update,
    Delete,
}

/// The resource kinds whose long-running operations are tracked under `ascOperations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OpTarget {
    Cache,
    AmlFilesystem,
}

/// A long-running operation tracked under `ascOperations`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: String,
    pub subscription_id: String,
    pub location: String,
    pub kind: OpKind,
    /// Which kind of resource the operation works on.
    pub target: OpTarget,
    /// Lower-case id of that resource: a key of [`World::caches`] or [`World::aml_filesystems`].
    pub resource_key: String,
    pub start_time: Timestamp,
    /// `InProgress`, `Succeeded`, `Failed`, `Canceled`.
    pub status: String,
    pub end_time: Option<Timestamp>,
    pub error: Option<(String, String)>,
    /// For updates: when the operation completes.
    pub done_at: Option<Timestamp>,
}

/// The whole simulated Azure.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct World {
    pub tenant_id: String,
    pub operator_object_id: String,
    /// lower-case subscription id → lower-case resource group names.
    pub subscriptions: BTreeMap<String, BTreeSet<String>>,
    /// by object id (lower-case)
    pub principals: BTreeMap<String, Principal>,
    /// by lower-case resource id
    pub identities: BTreeMap<String, UserIdentity>,
    /// by lower-case vault name (vault names are global)
    pub vaults: BTreeMap<String, Vault>,
    /// by lower-case id
    pub role_assignments: BTreeMap<String, RoleAssignment>,
    /// by lower-case id
    pub caches: BTreeMap<String, Cache>,
    /// by lower-case id
    pub aml_filesystems: BTreeMap<String, AmlFilesystem>,
    /// Storage accounts (for AML file system blob integration), by lower-case id.
    pub storage_accounts: BTreeMap<String, StorageAccount>,
    /// by lower-case operation id
    pub operations: BTreeMap<String, Operation>,
    /// Role definition GUIDs known besides [`KNOWN_ROLES`] (lower-case).
    pub extra_roles: BTreeSet<String>,
    /// by lower-case name
    pub management_groups: BTreeMap<String, ManagementGroup>,
    /// Successful cache creates so far (which of them answer 202 is `SimConfig::create_accepted_every`).
    pub creates: u64,
    pub delays: Delays,
}

/// A management group: its parent (absent = the tenant root group) and the subscriptions directly in it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagementGroup {
    pub name: String,
    pub parent: Option<String>,
    pub subscriptions: BTreeSet<String>,
}

impl World {
    pub fn new(delays: Delays) -> World {
        let mut w = World {
            tenant_id: DEFAULT_TENANT.to_string(),
            operator_object_id: String::new(),
            subscriptions: BTreeMap::new(),
            principals: BTreeMap::new(),
            identities: BTreeMap::new(),
            vaults: BTreeMap::new(),
            role_assignments: BTreeMap::new(),
            caches: BTreeMap::new(),
            aml_filesystems: BTreeMap::new(),
            storage_accounts: BTreeMap::new(),
            operations: BTreeMap::new(),
            extra_roles: BTreeSet::new(),
            management_groups: BTreeMap::new(),
            creates: 0,
            delays,
        };
        w.subscriptions.entry(DEFAULT_SUBSCRIPTION.to_string()).or_default().insert("rg".to_string());
        w.principals.insert(HPC_CACHE_RP_OBJECT_ID.to_string(), hpc_cache_rp(HPC_CACHE_RP_OBJECT_ID));
        w
    }

    pub fn ensure_rg(&mut self, sub: &str, rg: &str) {
        self.subscriptions.entry(sub.to_ascii_lowercase()).or_default().insert(rg.to_ascii_lowercase());
    }

    /// Merge a seed into the world. Existing entries with the same names are replaced.
    pub fn apply_seed(&mut self, seed: &Seed, now: Timestamp) -> Result<(), String> {
        if let Some(t) = &seed.tenant_id {
            self.tenant_id = t.clone();
        }
        for s in &seed.subscriptions {
            self.subscriptions.entry(s.id.to_ascii_lowercase()).or_default();
            for rg in &s.resource_groups {
                self.ensure_rg(&s.id, rg);
            }
        }
        for p in &seed.principals {
            if p.client_id.eq_ignore_ascii_case(HPC_CACHE_RP_APP_ID) {
                // The seed names the tenant's HPC Cache Resource Provider principal: it replaces the built-in one.
                self.principals.retain(|oid, x| {
                    !x.client_id.eq_ignore_ascii_case(HPC_CACHE_RP_APP_ID) || oid.eq_ignore_ascii_case(&p.object_id)
                });
            }
            if p.operator || (self.operator_object_id.is_empty() && p.secret.is_some()) {
                self.operator_object_id = p.object_id.to_ascii_lowercase();
            }
            self.principals.insert(
                p.object_id.to_ascii_lowercase(),
                Principal {
                    object_id: p.object_id.clone(),
                    client_id: p.client_id.clone(),
                    secret: p.secret.clone(),
                    display_name: p.display_name.clone().unwrap_or_else(|| p.client_id.clone()),
                    kind: "ServicePrincipal".into(),
                    arm_scopes: p.arm_scopes.clone().unwrap_or_else(|| vec!["/".into()]),
                    federated_credentials: p.federated_credentials.clone(),
                },
            );
        }
        for i in &seed.identities {
            self.ensure_rg(&i.subscription_id, &i.resource_group);
            let ident = UserIdentity {
                subscription_id: i.subscription_id.clone(),
                resource_group: i.resource_group.clone(),
                name: i.name.clone(),
                location: i.location.clone(),
                principal_id: i.principal_id.clone().unwrap_or_else(new_uuid),
                client_id: i.client_id.clone().unwrap_or_else(new_uuid),
                tenant_id: self.tenant_id.clone(),
                tags: i.tags.clone(),
                created_at: now,
            };
            self.principals.insert(
                ident.principal_id.to_ascii_lowercase(),
                Principal {
                    object_id: ident.principal_id.clone(),
                    client_id: ident.client_id.clone(),
                    secret: None,
                    display_name: ident.name.clone(),
                    kind: "ManagedIdentity".into(),
                    arm_scopes: vec![],
                    federated_credentials: vec![],
                },
            );
            self.identities.insert(ident.id().to_ascii_lowercase(), ident);
        }
        for v in &seed.vaults {
            if v.name.len() < 3 || v.name.len() > 24 || !v.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("vault name '{}' must be 3-24 characters of [a-zA-Z0-9-]", v.name));
            }
            if !(7..=90).contains(&v.soft_delete_retention_in_days) {
                return Err(format!("vault '{}': softDeleteRetentionInDays must be 7..90", v.name));
            }
            self.ensure_rg(&v.subscription_id, &v.resource_group);
            let tenant = v.tenant_id.clone().unwrap_or_else(|| self.tenant_id.clone());
            let mut keys = BTreeMap::new();
            for k in &v.keys {
                let versions: Vec<SeedKeyVersion> =
                    if k.versions.is_empty() { vec![SeedKeyVersion::default()] } else { k.versions.clone() };
                let versions = versions
                    .iter()
                    .enumerate()
                    .map(|(i, sv)| {
                        KeyVersion::from_seed(sv, now - SignedDuration::from_secs(((versions_len(k) - i) * 60) as i64))
                    })
                    .collect();
                keys.insert(k.name.to_ascii_lowercase(), Key { name: k.name.clone(), versions });
            }
            let vault = Vault {
                name: v.name.clone(),
                subscription_id: v.subscription_id.clone(),
                resource_group: v.resource_group.clone(),
                location: v.location.clone(),
                tenant_id: tenant.clone(),
                sku: v.sku.clone().unwrap_or_else(|| "standard".into()),
                enable_rbac_authorization: v.enable_rbac_authorization,
                enable_soft_delete: v.enable_soft_delete,
                soft_delete_retention_in_days: v.soft_delete_retention_in_days,
                enable_purge_protection: v.enable_purge_protection,
                access_policies: v
                    .access_policies
                    .iter()
                    .map(|a| AccessPolicy {
                        tenant_id: a.tenant_id.clone().unwrap_or_else(|| tenant.clone()),
                        object_id: a.object_id.clone(),
                        application_id: a.application_id.clone(),
                        permissions: Permissions {
                            keys: a.permissions.keys.clone(),
                            secrets: a.permissions.secrets.clone(),
                            certificates: a.permissions.certificates.clone(),
                            storage: a.permissions.storage.clone(),
                        },
                    })
                    .collect(),
                enabled_for_deployment: false,
                enabled_for_disk_encryption: false,
                enabled_for_template_deployment: false,
                public_network_access: "Enabled".into(),
                network_acls: None,
                tags: v.tags.clone(),
                created_at: now,
                last_modified_at: now,
                keys,
                policy_effective_at: BTreeMap::new(),
            };
            let mut vault = vault;
            // seeded access policies already exist: in effect at once
            vault.restamp_policies(Timestamp::MIN);
            self.vaults.insert(v.name.to_ascii_lowercase(), vault);
        }
        for a in &seed.storage_accounts {
            if a.name.len() < 3
                || a.name.len() > 24
                || !a.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return Err(format!("storage account name '{}' must be 3-24 lower-case letters and digits", a.name));
            }
            self.ensure_rg(&a.subscription_id, &a.resource_group);
            let acct = StorageAccount {
                subscription_id: a.subscription_id.clone(),
                resource_group: a.resource_group.clone(),
                name: a.name.clone(),
                location: a.location.clone(),
            };
            self.storage_accounts.insert(acct.id().to_ascii_lowercase(), acct);
        }
        for r in &seed.role_definitions {
            self.extra_roles.insert(r.to_ascii_lowercase());
        }
        for mg in &seed.management_groups {
            if mg.name.is_empty() || mg.name.len() > 90 {
                return Err(format!("management group name '{}' must be 1-90 characters", mg.name));
            }
            let subs: BTreeSet<String> = mg.subscriptions.iter().map(|s| s.to_ascii_lowercase()).collect();
            for sub in &subs {
                self.subscriptions.entry(sub.clone()).or_default();
            }
            self.management_groups.insert(
                mg.name.to_ascii_lowercase(),
                ManagementGroup { name: mg.name.clone(), parent: mg.parent.clone(), subscriptions: subs },
            );
        }
        for g in &seed.grants {
            self.grant_effective_at(&g.vault, &g.principal_id, now, "seed", Timestamp::MIN)?;
        }
        for ra in &seed.role_assignments {
            let guid = role_guid_of(&ra.role_definition_id)
                .ok_or_else(|| format!("role assignment: '{}' is not a role definition id", ra.role_definition_id))?;
            let scope = if ra.scope.trim_matches('/').is_empty() {
                "/".to_string()
            } else {
                format!("/{}", ra.scope.trim_matches('/'))
            };
            let name = match &ra.name {
                Some(n) => uuid::Uuid::parse_str(n)
                    .map_err(|_| format!("role assignment name '{n}' must be a GUID"))?
                    .to_string(),
                None => uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_URL,
                    format!("{scope}|{guid}|{}", ra.principal_id).to_ascii_lowercase().as_bytes(),
                )
                .to_string(),
            };
            let assignment = RoleAssignment {
                name,
                scope,
                role_definition_guid: guid,
                principal_id: ra.principal_id.clone(),
                principal_type: ra.principal_type.clone().unwrap_or_else(|| "ServicePrincipal".into()),
                description: None,
                created_on: now,
                updated_on: now,
                created_by: "seed".into(),
                effective_at: Timestamp::MIN,
            };
            self.role_assignments.insert(assignment.id().to_ascii_lowercase(), assignment);
        }
        Ok(())
    }

    /// Append a key version (a rotation done in Key Vault, e.g. by its rotation policy or a person), created now.
    /// Returns the new version.
    pub fn add_key_version(
        &mut self,
        vault: &str,
        key: &str,
        version: &SeedKeyVersion,
        now: Timestamp,
    ) -> Result<String, String> {
        let v = self.vault_by_name_or_id(vault).ok_or_else(|| format!("vault '{vault}' not found"))?;
        let vname = v.name.to_ascii_lowercase();
        let v = self.vaults.get_mut(&vname).expect("vault exists");
        let kv = KeyVersion::from_seed(version, now);
        let id = kv.version.clone();
        let k =
            v.keys.entry(key.to_ascii_lowercase()).or_insert_with(|| Key { name: key.to_string(), versions: vec![] });
        if k.versions.iter().any(|x| x.version.eq_ignore_ascii_case(&id)) {
            return Err(format!("key '{key}' already has version '{id}'"));
        }
        k.versions.push(kv);
        Ok(id)
    }

    /// Ensure the default operator principal exists when the seed named none.
    pub fn ensure_operator(&mut self) {
        if self.operator_object_id.is_empty() {
            let oid = DEFAULT_OPERATOR_OBJECT_ID.to_string();
            self.principals.insert(
                oid.clone(),
                Principal {
                    object_id: oid.clone(),
                    client_id: DEFAULT_OPERATOR_CLIENT_ID.into(),
                    secret: Some(DEFAULT_OPERATOR_SECRET.into()),
                    display_name: "hpc-cache-operator".into(),
                    kind: "ServicePrincipal".into(),
                    arm_scopes: vec!["/".into()],
                    federated_credentials: vec![],
                },
            );
            self.operator_object_id = oid;
        }
    }

    pub fn operator(&self) -> Option<&Principal> {
        self.principals.get(&self.operator_object_id)
    }

    pub fn principal_by_client_id(&self, client_id: &str) -> Option<&Principal> {
        self.principals.values().find(|p| p.client_id.eq_ignore_ascii_case(client_id))
    }

    pub fn vault_by_name_or_id(&self, v: &str) -> Option<&Vault> {
        let name = v.trim_end_matches('/').rsplit('/').next().unwrap_or(v);
        self.vaults.get(&name.to_ascii_lowercase())
    }

    /// Give `principal_id` the access a cache needs, the way a person would in the portal: an access policy with
    /// get/wrapKey/unwrapKey on an access-policy vault, or the Crypto Service Encryption User role at the vault
    /// scope on an RBAC vault. It counts for cache key access after the grant propagation delay. Returns a
    /// description of what was added.
    pub fn grant(&mut self, vault: &str, principal_id: &str, now: Timestamp, by: &str) -> Result<String, String> {
        let effective_at = now + sdur(self.delays.grant_propagation);
        self.grant_effective_at(vault, principal_id, now, by, effective_at)
    }

    fn grant_effective_at(
        &mut self,
        vault: &str,
        principal_id: &str,
        now: Timestamp,
        by: &str,
        effective_at: Timestamp,
    ) -> Result<String, String> {
        let tenant = self.tenant_id.clone();
        let v = self.vault_by_name_or_id(vault).ok_or_else(|| format!("vault '{vault}' not found"))?;
        let vname = v.name.to_ascii_lowercase();
        if v.enable_rbac_authorization {
            let scope = v.id();
            let ra = RoleAssignment {
                name: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, format!("{scope}|{principal_id}").as_bytes())
                    .to_string(),
                scope,
                role_definition_guid: ROLE_CRYPTO_SERVICE_ENCRYPTION_USER.into(),
                principal_id: principal_id.to_string(),
                principal_type: "ServicePrincipal".into(),
                description: Some("granted via simulator admin API".into()),
                created_on: now,
                updated_on: now,
                created_by: by.to_string(),
                effective_at,
            };
            let id = ra.id();
            self.role_assignments.insert(id.to_ascii_lowercase(), ra);
            Ok(format!("role assignment {id}"))
        } else {
            let v = self.vaults.get_mut(&vname).expect("vault exists");
            let entry = v.access_policies.iter_mut().find(|a| a.object_id.eq_ignore_ascii_case(principal_id));
            let needed = ["get", "wrapKey", "unwrapKey"];
            match entry {
                Some(a) => {
                    for n in needed {
                        if !a.permissions.keys.iter().any(|p| p.eq_ignore_ascii_case(n)) {
                            a.permissions.keys.push(n.to_string());
                        }
                    }
                }
                None => v.access_policies.push(AccessPolicy {
                    tenant_id: tenant,
                    object_id: principal_id.to_string(),
                    application_id: None,
                    permissions: Permissions {
                        keys: needed.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    },
                }),
            }
            v.last_modified_at = now;
            v.restamp_policies(effective_at);
            Ok(format!("access policy (keys: get, wrapKey, unwrapKey) on vault {}", v.name))
        }
    }

    pub fn role_known(&self, guid: &str) -> bool {
        KNOWN_ROLES.contains(&guid) || self.extra_roles.contains(&guid.to_ascii_lowercase())
    }

    /// Does a role assignment at `scope` apply to `id`? At or above it by path (`/` is the tenant root), or
    /// through management groups: an assignment at `/providers/Microsoft.Management/managementGroups/{mg}`
    /// applies to the group, its descendant groups, their subscriptions and everything in those.
    pub fn scope_applies(&self, scope: &str, id: &str) -> bool {
        if scope_covers(scope, id) {
            return true;
        }
        let Some(mg) = management_group_of(scope) else {
            return false;
        };
        let mg = mg.to_ascii_lowercase();
        if let Some(child) = management_group_of(id) {
            return self.mg_ancestors(child).contains(&mg);
        }
        let Some(sub) = subscription_of(id) else {
            return false;
        };
        let sub = sub.to_ascii_lowercase();
        self.management_groups
            .values()
            .filter(|g| g.subscriptions.contains(&sub))
            .any(|g| self.mg_ancestors(&g.name).contains(&mg))
    }

    /// `mg` and its ancestors (lower-case), nearest first; stops at a cycle.
    fn mg_ancestors(&self, mg: &str) -> Vec<String> {
        let mut out = vec![];
        let mut cur = Some(mg.to_ascii_lowercase());
        while let Some(c) = cur {
            if out.contains(&c) {
                break;
            }
            cur = self.management_groups.get(&c).and_then(|g| g.parent.as_ref()).map(|p| p.to_ascii_lowercase());
            out.push(c);
        }
        out
    }

    /// Role assignments of a principal that apply to `id` (at it, above it, or via a management group).
    pub fn assignments_over<'a>(
        &'a self,
        principal_id: &'a str,
        id: &'a str,
    ) -> impl Iterator<Item = &'a RoleAssignment> {
        self.role_assignments
            .values()
            .filter(move |r| r.principal_id.eq_ignore_ascii_case(principal_id) && self.scope_applies(&r.scope, id))
    }

    /// Roles a principal holds over `id` (role guid list), from role assignments at `id` or above.
    pub fn roles_over(&self, principal_id: &str, id: &str) -> Vec<String> {
        self.assignments_over(principal_id, id).map(|r| r.role_definition_guid.to_ascii_lowercase()).collect()
    }

    /// Data-plane key permission check (`get`, `list`, `wrapKey`, `unwrapKey`), honouring the vault's model.
    /// This is what Key Vault answers a caller with at once (the simulator applies grant propagation only to a
    /// cache's own key access, see [`World::key_permission_since`]).
    pub fn key_permission(&self, vault: &Vault, principal_id: &str, perm: &str) -> bool {
        self.key_permission_since(vault, principal_id, perm).is_some()
    }

    /// Since when `principal_id` holds the key permission `perm` on `vault` for a cache's key access (grants
    /// propagate: Key Vault RBAC "will take up to 10 minutes"), or `None`.
    pub fn key_permission_since(&self, vault: &Vault, principal_id: &str, perm: &str) -> Option<Timestamp> {
        if vault.enable_rbac_authorization {
            let roles: &[&str] = match perm {
                "get" | "list" => &[
                    ROLE_CRYPTO_SERVICE_ENCRYPTION_USER,
                    ROLE_CRYPTO_USER,
                    ROLE_CRYPTO_OFFICER,
                    ROLE_KV_ADMINISTRATOR,
                    ROLE_KV_READER,
                ],
                _ => {
                    &[ROLE_CRYPTO_SERVICE_ENCRYPTION_USER, ROLE_CRYPTO_USER, ROLE_CRYPTO_OFFICER, ROLE_KV_ADMINISTRATOR]
                }
            };
            let id = vault.id();
            self.assignments_over(principal_id, &id)
                .filter(|r| roles.contains(&r.role_definition_guid.to_ascii_lowercase().as_str()))
                .map(|r| r.effective_at)
                .min()
        } else {
            vault.policy_effective_since(principal_id, perm)
        }
    }

    /// Since when `principal_id` has had what encryption at rest needs on `vault` (get + wrapKey + unwrapKey).
    pub fn cmk_access_since(&self, vault: &Vault, principal_id: &str) -> Option<Timestamp> {
        ["get", "wrapKey", "unwrapKey"]
            .iter()
            .map(|p| self.key_permission_since(vault, principal_id, p))
            .try_fold(Timestamp::MIN, |acc, t| t.map(|t| acc.max(t)))
    }

    /// Can `principal_id` use keys of `vault` for encryption at rest at `now` (grants propagated)?
    pub fn cmk_access(&self, vault: &Vault, principal_id: &str, now: Timestamp) -> bool {
        self.cmk_access_since(vault, principal_id).is_some_and(|t| t <= now)
    }

    /// The key version an encryption setting names (the newest one if the URL has no version).
    pub fn key_version_of(&self, enc: &CacheEncryption) -> Option<&KeyVersion> {
        let key = self.vaults.get(&enc.vault_name.to_ascii_lowercase())?.key(&enc.key_name)?;
        match &enc.key_version {
            Some(v) => key.versions.iter().find(|k| k.version.eq_ignore_ascii_case(v)),
            None => key.versions.last(),
        }
    }

    /// Since when `identity` has been able to use the key of `enc` (`None`: not at all). Key Vault enforces the
    /// version's `key_ops`: without `wrapKey` and `unwrapKey` the cache's wrap/unwrap calls get 403
    /// `KeyOperationForbidden`, exactly as if the identity had no access.
    pub fn key_access_since(&self, identity: &CacheIdentity, enc: &CacheEncryption) -> Option<Timestamp> {
        let vault = self.vaults.get(&enc.vault_name.to_ascii_lowercase())?;
        let kv = self.key_version_of(enc)?;
        if !(kv.allows("wrapKey") && kv.allows("unwrapKey")) {
            return None;
        }
        identity.principals().iter().filter_map(|p| self.cmk_access_since(vault, p)).min()
    }

    /// Since when any identity of the cache has had key access (see [`World::key_access_since`]).
    pub fn cache_access_since(&self, cache: &Cache) -> Option<Timestamp> {
        let (Some(enc), Some(ident)) = (&cache.encryption, &cache.identity) else {
            return None;
        };
        self.key_access_since(ident, enc)
    }

    /// When the request that gave the cache's identity its key access was made (simulated time): the access took
    /// effect `grant_propagation` after the grant, so this is that instant minus the propagation. `None` without
    /// access, or when the access was seeded (in effect from the start, no request made it).
    pub fn key_granted_at(&self, cache: &Cache) -> Option<Timestamp> {
        let since = self.cache_access_since(cache).filter(|t| *t > Timestamp::MIN)?;
        since.checked_sub(sdur(self.delays.grant_propagation)).ok()
    }

    /// May `principal` perform ARM `action` on `id`? Seeded `armScopes` allow everything beneath them; otherwise
    /// built-in roles: Owner (all), Contributor (all but role-assignment writes), Reader (reads), User Access
    /// Administrator (role assignments and reads).
    pub fn arm_allowed(&self, principal_id: &str, id: &str, action: &str) -> bool {
        let Some(p) = self.principals.get(&principal_id.to_ascii_lowercase()) else {
            return false;
        };
        if p.arm_scopes.iter().any(|s| scope_covers(s, id)) {
            return true;
        }
        let read = action.ends_with("/read");
        let authz = action.starts_with("Microsoft.Authorization/");
        self.roles_over(principal_id, id).iter().any(|r| {
            r == ROLE_OWNER
                || (r == ROLE_CONTRIBUTOR && (read || !authz))
                || (r == ROLE_READER && read)
                || (r == ROLE_USER_ACCESS_ADMINISTRATOR && (read || authz))
        })
    }

    /// Advance every clock-driven thing to `now`. Deterministic; call before and after each mutation.
    pub fn tick(&mut self, now: Timestamp) {
        let timing = self.delays;
        // Only the caches the clock can change are visited by key: every cache's key access looked up (a scan of
        // its vault's access policies) and every key cloned, at every request, made the simulator quadratic (most
        // of two cores at 10,000 caches).
        let keys_where = |f: fn(&Cache) -> bool| -> Vec<String> {
            self.caches.iter().filter(|(_, c)| f(c)).map(|(k, _)| k.clone()).collect()
        };
        let (waiting, rotating) = (
            keys_where(|c| c.timeline.awaits_key_access()),
            keys_where(|c| {
                c.encryption.as_ref().is_some_and(|e| e.rotation_to_latest_key_version_enabled == Some(true))
            }),
        );
        for k in &waiting {
            let since = self.caches.get(k).and_then(|c| self.cache_access_since(c));
            if let Some(c) = self.caches.get_mut(k) {
                c.timeline.observe(now, since, &timing);
            }
        }
        for k in &rotating {
            self.rotate_to_latest(k, now);
        }
        // Deletions that finished.
        let finished: Vec<String> = self
            .caches
            .iter()
            .filter(|(_, c)| c.timeline.deleting_until.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &finished {
            if let Some(c) = self.caches.remove(k)
                && let Some(sp) = c.identity.as_ref().and_then(|i| i.system_principal_id.clone())
            {
                // A system-assigned identity dies with its resource.
                self.principals.remove(&sp.to_ascii_lowercase());
            }
        }
        // Operations.
        // AML file systems whose deletion finished.
        self.aml_filesystems.retain(|_, f| f.timeline.deleting_until.is_none_or(|d| d > now));
        for op in self.operations.values_mut() {
            if op.status != "InProgress" {
                continue;
            }
            if op.target == OpTarget::AmlFilesystem {
                advance_aml_operation(op, self.aml_filesystems.get(&op.resource_key), now);
                continue;
            }
            let cache = self.caches.get(&op.resource_key);
            match op.kind {
                OpKind::Create => match cache {
                    None => {
                        op.status = "Canceled".into();
                        op.end_time = Some(now);
                        op.error = Some(("Canceled".into(), "The cache was deleted before creation completed.".into()));
                    }
                    Some(c) => match c.timeline.stage(now, &timing) {
                        Stage::Healthy => {
                            op.status = "Succeeded".into();
                            op.end_time = c.timeline.ready_at(&timing);
                        }
                        Stage::Failed => {
                            op.status = "Failed".into();
                            op.end_time = c.timeline.failed_at;
                            op.error = Some((
                                "KeyVaultKeyAccessTimeout".into(),
                                format!(
                                    "Cache '{}' timed out waiting for its identity to be given access to the encryption key. A failed cache has to be deleted and re-created.",
                                    c.name
                                ),
                            ));
                        }
                        _ => {}
                    },
                },
                OpKind::Update => {
                    if cache.is_none() {
                        op.status = "Canceled".into();
                        op.end_time = Some(now);
                        op.error = Some(("Canceled".into(), "The cache was deleted.".into()));
                    } else if op.done_at.is_some_and(|d| d <= now) {
                        op.status = "Succeeded".into();
                        op.end_time = op.done_at;
                    }
                }
                OpKind::Delete => {
                    if cache.is_none() {
                        op.status = "Succeeded".into();
                        op.end_time = op.done_at.or(Some(now));
                    }
                }
            }
        }
    }
}

/// Move an AML file system's operation along: a create succeeds when the file system is ready, fails with its
/// failure, or is canceled when the file system was deleted first; updates finish at `done_at`; a delete succeeds
/// once the file system is gone.
fn advance_aml_operation(op: &mut Operation, fs: Option<&AmlFilesystem>, now: Timestamp) {
    match (op.kind, fs) {
        (OpKind::Create, None) => {
            op.status = "Canceled".into();
            op.end_time = Some(now);
            op.error = Some(("Canceled".into(), "The AML file system was deleted before creation completed.".into()));
        }
        (OpKind::Create, Some(f)) => {
            let t = &f.timeline;
            if let (Some(at), Some(err)) = (t.failed_at.filter(|a| *a <= now), &t.failure) {
                op.status = "Failed".into();
                op.end_time = Some(at);
                op.error = Some(err.clone());
            } else if t.ready_at <= now {
                op.status = "Succeeded".into();
                op.end_time = Some(t.ready_at);
            }
        }
        (OpKind::Update, None) => {
            op.status = "Canceled".into();
            op.end_time = Some(now);
            op.error = Some(("Canceled".into(), "The AML file system was deleted.".into()));
        }
        (OpKind::Update, Some(_)) => {
            if op.done_at.is_some_and(|d| d <= now) {
                op.status = "Succeeded".into();
                op.end_time = op.done_at;
            }
        }
        (OpKind::Delete, None) => {
            op.status = "Succeeded".into();
            op.end_time = op.done_at.or(Some(now));
        }
        (OpKind::Delete, Some(_)) => {}
    }
}

impl World {
    /// The object id of the "HPC Cache Resource Provider" service principal in this tenant.
    pub fn hpc_cache_rp_object_id(&self) -> Option<&str> {
        self.principal_by_client_id(HPC_CACHE_RP_APP_ID).map(|p| p.object_id.as_str())
    }

    /// Since when the HPC Cache Resource Provider has held what Azure Managed Lustre blob integration needs on the
    /// storage account `account_id` ("Storage Account Contributor" and "Storage Blob Data Contributor", Microsoft
    /// Learn `amlfs-prerequisites`; Contributor or Owner also give the former, Terraform azurerm's
    /// `managed_lustre_file_system` doc names Contributor; Storage Blob Data Owner also gives the latter), at the
    /// account or above, propagated (role assignments made after start count `grant_propagation` later).
    pub fn blob_integration_access_since(&self, account_id: &str) -> Option<Timestamp> {
        let rp = self.hpc_cache_rp_object_id()?;
        let since = |roles: &[&str]| {
            self.assignments_over(rp, account_id)
                .filter(|r| roles.contains(&r.role_definition_guid.to_ascii_lowercase().as_str()))
                .map(|r| r.effective_at)
                .min()
        };
        let manage = since(&[ROLE_STORAGE_ACCOUNT_CONTRIBUTOR, ROLE_CONTRIBUTOR, ROLE_OWNER])?;
        let data = since(&[ROLE_STORAGE_BLOB_DATA_CONTRIBUTOR, ROLE_STORAGE_BLOB_DATA_OWNER])?;
        Some(manage.max(data))
    }
}

impl World {
    /// Automatic rotation (`rotationToLatestKeyVersionEnabled: true`): the cache moves to the newest enabled
    /// version of its key by itself, `auto_rotation_delay` after that version appeared (or after rotation was
    /// turned on, if later). Microsoft documents "within one hour" for the automatic key rotation HPC Cache links
    /// to (learn.microsoft.com/azure/virtual-machines/disk-encryption#automatic-key-rotation-of-customer-managed-keys).
    fn rotate_to_latest(&mut self, cache_key: &str, now: Timestamp) {
        let Some(c) = self.caches.get(cache_key) else { return };
        if c.timeline.deleting_until.is_some() || c.timeline.failed_at.is_some() {
            return;
        }
        let Some(enc) = &c.encryption else { return };
        let (Some(true), Some(on_at)) = (enc.rotation_to_latest_key_version_enabled, enc.rotation_enabled_at) else {
            return;
        };
        let Some(key) = self.vaults.get(&enc.vault_name.to_ascii_lowercase()).and_then(|v| v.key(&enc.key_name)) else {
            return;
        };
        let Some(newest) = key.versions.iter().rev().find(|v| v.enabled) else { return };
        if enc.key_version.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(&newest.version)) {
            return;
        }
        let due = newest.created.max(on_at) + sdur(self.delays.auto_rotation_delay);
        if due > now {
            return;
        }
        let version = newest.version.clone();
        let Some(c) = self.caches.get_mut(cache_key) else { return };
        let Some(enc) = c.encryption.as_mut() else { return };
        let base = enc.key_url.trim_end_matches('/');
        let prefix = match &enc.key_version {
            Some(_) => base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base),
            None => base,
        };
        enc.key_url = format!("{prefix}/{version}");
        enc.key_version = Some(version);
        c.last_modified_at = due;
    }
}

/// The role GUID of a bare GUID or a role definition id (`…/providers/Microsoft.Authorization/roleDefinitions/{g}`).
pub fn role_guid_of(def: &str) -> Option<String> {
    let last = def.trim_end_matches('/').rsplit('/').next()?;
    let segs: Vec<&str> = def.split('/').filter(|s| !s.is_empty()).collect();
    if segs.len() > 1
        && !(segs.len() >= 3
            && segs[segs.len() - 2].eq_ignore_ascii_case("roleDefinitions")
            && segs[segs.len() - 3].eq_ignore_ascii_case("Microsoft.Authorization"))
    {
        return None;
    }
    uuid::Uuid::parse_str(last).ok().map(|u| u.to_string())
}

fn versions_len(k: &super::seed::SeedKey) -> usize {
    k.versions.len().max(1)
}

/// Why a key cannot be used as a cache encryption key. Codes are the simulator's (Azure publishes none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    pub code: &'static str,
    pub message: String,
}

/// Create-time key rules from the HPC Cache CMK documentation: RSA (or RSA-HSM), 2048 bits, enabled, within
/// nbf/exp. The size is read from the modulus length, as Azure does (KeyBundle has no size field).
pub fn validate_cmk_key(key_url: &str, k: &KeyVersion, now: Timestamp) -> Result<(), KeyProblem> {
    if k.kty != "RSA" && k.kty != "RSA-HSM" {
        return Err(KeyProblem {
            code: "InvalidKeyType",
            message: format!("The key '{key_url}' has type '{}'. The encryption key must be an RSA key.", k.kty),
        });
    }
    let bits = modulus_bits(&k.material);
    if bits != 2048 {
        return Err(KeyProblem {
            code: "InvalidKeySize",
            message: format!(
                "The key '{key_url}' is a {bits}-bit RSA key. The encryption key must be a 2048-bit RSA key."
            ),
        });
    }
    if !k.enabled {
        return Err(KeyProblem {
            code: "KeyDisabled",
            message: format!("The key '{key_url}' is disabled. The encryption key must be enabled."),
        });
    }
    if let Some(nbf) = k.nbf
        && now < nbf
    {
        return Err(KeyProblem {
            code: "KeyNotYetValid",
            message: format!("The key '{key_url}' is not valid before {nbf}."),
        });
    }
    if let Some(exp) = k.exp
        && now >= exp
    {
        return Err(KeyProblem { code: "KeyExpired", message: format!("The key '{key_url}' expired at {exp}.") });
    }
    Ok(())
}

/// Bits of a big-endian modulus without leading zero bytes: 8 × byte length (how Azure sizes RSA keys).
pub fn modulus_bits(n: &[u8]) -> usize {
    let trimmed = n.iter().position(|b| *b != 0).map(|i| &n[i..]).unwrap_or(&[]);
    trimmed.len() * 8
}

/// A parsed Key Vault key URL `https://{vault}.{suffix}/keys/{name}[/{version}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUrl {
    pub vault: String,
    pub name: String,
    pub version: Option<String>,
}

pub fn parse_key_url(s: &str) -> Option<KeyUrl> {
    let u = url::Url::parse(s).ok()?;
    if u.scheme() != "https" {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    let (vault, suffix) = host.split_once('.')?;
    if !(suffix == "vault.azure.net" || suffix == "vault.localhost" || suffix.starts_with("vault.")) {
        return None;
    }
    let segs: Vec<&str> = u.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["keys", name] => Some(KeyUrl { vault: vault.into(), name: name.to_string(), version: None }),
        ["keys", name, version] => {
            Some(KeyUrl { vault: vault.into(), name: name.to_string(), version: Some(version.to_string()) })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn timing() -> Delays {
        Delays {
            authorization_window: Duration::from_secs(90 * 60),
            key_ready_delay: Duration::from_secs(5 * 60),
            create_delay: Duration::from_secs(10 * 60),
            grant_propagation: Duration::ZERO,
            auto_rotation_delay: Duration::from_secs(60 * 60),
            aml_create_delay: Duration::from_secs(20 * 60),
        }
    }
    fn tl(cmk: bool) -> CacheTimeline {
        CacheTimeline {
            created_at: ts("2025-01-01T00:00:00Z"),
            cmk,
            access_at: None,
            failed_at: None,
            updating_until: None,
            deleting_until: None,
        }
    }

    #[test]
    fn cmk_cache_waits_then_gets_healthy() {
        let t = timing();
        let mut c = tl(true);
        let t10 = ts("2025-01-01T00:10:00Z");
        c.observe(t10, None, &t);
        assert_eq!(c.status(t10, &t).1, "WaitingForKey");
        assert_eq!(c.status(t10, &t).0, "Creating");
        let t20 = ts("2025-01-01T00:20:00Z");
        c.observe(t20, Some(t20), &t);
        assert_eq!(c.status(ts("2025-01-01T00:24:59Z"), &t), ("Creating", "Transitioning", "Cache is being created."));
        assert_eq!(c.status(ts("2025-01-01T00:25:00Z"), &t).0, "Succeeded");
        assert_eq!(c.status(ts("2025-01-01T00:25:00Z"), &t).1, "Healthy");
    }

    #[test]
    fn cmk_cache_fails_after_window_even_if_access_comes_late() {
        let t = timing();
        let mut c = tl(true);
        c.observe(ts("2025-01-01T02:00:00Z"), Some(ts("2025-01-01T01:45:00Z")), &t);
        assert_eq!(c.failed_at, Some(ts("2025-01-01T01:30:00Z")));
        assert_eq!(c.status(ts("2025-01-01T02:00:00Z"), &t).0, "Failed");
        assert_eq!(c.status(ts("2025-01-01T02:00:00Z"), &t).1, "Down");
    }

    #[test]
    fn waiting_for_key_starts_at_creation_unless_access_existed() {
        let t = timing();
        let mut waited = tl(true);
        assert_eq!(waited.waiting_for_key_at(), Some(waited.created_at), "still waiting");
        waited.observe(ts("2025-01-01T00:20:00Z"), Some(ts("2025-01-01T00:20:00Z")), &t);
        assert_eq!(waited.waiting_for_key_at(), Some(waited.created_at), "waited, then got access");
        let mut trusted = tl(true);
        trusted.observe(trusted.created_at, Some(Timestamp::MIN), &t);
        assert_eq!(trusted.waiting_for_key_at(), None, "access existed at creation");
        assert_eq!(tl(false).waiting_for_key_at(), None, "no CMK");
    }

    #[test]
    fn access_at_creation_uses_create_delay() {
        let t = timing();
        let mut c = tl(true);
        c.observe(c.created_at, Some(Timestamp::MIN), &t);
        assert_eq!(c.stage(ts("2025-01-01T00:09:59Z"), &t), Stage::Transitioning);
        assert_eq!(c.stage(ts("2025-01-01T00:10:00Z"), &t), Stage::Healthy);
        let p = tl(false);
        assert_eq!(p.stage(ts("2025-01-01T00:10:00Z"), &t), Stage::Healthy);
    }

    fn kv(kty: &str, size: u32) -> KeyVersion {
        KeyVersion::from_seed(
            &SeedKeyVersion { kty: kty.into(), size, ..Default::default() },
            ts("2024-01-01T00:00:00Z"),
        )
    }

    #[test]
    fn key_validation() {
        let now = ts("2025-01-01T00:00:00Z");
        assert!(validate_cmk_key("u", &kv("RSA", 2048), now).is_ok());
        assert!(validate_cmk_key("u", &kv("RSA-HSM", 2048), now).is_ok());
        assert_eq!(validate_cmk_key("u", &kv("RSA", 4096), now).unwrap_err().code, "InvalidKeySize");
        assert_eq!(validate_cmk_key("u", &kv("RSA", 3072), now).unwrap_err().code, "InvalidKeySize");
        assert_eq!(validate_cmk_key("u", &kv("EC", 256), now).unwrap_err().code, "InvalidKeyType");
        let mut d = kv("RSA", 2048);
        d.enabled = false;
        assert_eq!(validate_cmk_key("u", &d, now).unwrap_err().code, "KeyDisabled");
        let mut e = kv("RSA", 2048);
        e.exp = Some(ts("2024-06-01T00:00:00Z"));
        assert_eq!(validate_cmk_key("u", &e, now).unwrap_err().code, "KeyExpired");
        let mut n = kv("RSA", 2048);
        n.nbf = Some(ts("2026-01-01T00:00:00Z"));
        assert_eq!(validate_cmk_key("u", &n, now).unwrap_err().code, "KeyNotYetValid");
    }

    #[test]
    fn modulus_bits_from_n() {
        assert_eq!(modulus_bits(&[0x80; 256]), 2048);
        assert_eq!(modulus_bits(&[0, 0x80, 1]), 16);
        assert_eq!(kv("RSA", 2048).material.len(), 256);
    }

    #[test]
    fn key_urls() {
        assert_eq!(
            parse_key_url("https://kv1.vault.azure.net/keys/k/0123").unwrap(),
            KeyUrl { vault: "kv1".into(), name: "k".into(), version: Some("0123".into()) }
        );
        assert_eq!(parse_key_url("https://kv1.vault.localhost:8443/keys/k").unwrap().version, None);
        assert!(parse_key_url("http://kv1.vault.azure.net/keys/k/1").is_none());
        assert!(parse_key_url("https://kv1.vault.azure.net/secrets/k/1").is_none());
        assert!(parse_key_url("garbage").is_none());
    }

    #[test]
    fn scopes() {
        assert!(scope_covers("/", "/subscriptions/a"));
        assert!(scope_covers("/subscriptions/A", "/subscriptions/a/resourceGroups/x"));
        assert!(!scope_covers("/subscriptions/a", "/subscriptions/ab"));
    }

    #[test]
    fn access_checks_follow_vault_model() {
        let now = ts("2025-01-01T00:00:00Z");
        let mut w = World::new(timing());
        let seed = Seed::from_yaml(
            "vaults:\n - {name: ap1, subscriptionId: s, resourceGroup: rg, enablePurgeProtection: true}\n - {name: rb1, subscriptionId: s, resourceGroup: rg, enableRbacAuthorization: true, enablePurgeProtection: true}\n",
        )
        .unwrap();
        w.apply_seed(&seed, now).unwrap();
        let p = "11111111-1111-1111-1111-111111111111";
        assert!(!w.cmk_access(w.vault_by_name_or_id("ap1").unwrap(), p, now));
        w.grant("ap1", p, now, "t").unwrap();
        assert!(w.cmk_access(w.vault_by_name_or_id("ap1").unwrap(), p, now));
        // an access policy does nothing on an RBAC vault
        assert!(!w.cmk_access(w.vault_by_name_or_id("rb1").unwrap(), p, now));
        w.grant("rb1", p, now, "t").unwrap();
        assert!(w.cmk_access(w.vault_by_name_or_id("rb1").unwrap(), p, now));
        // a role assignment does nothing on an access-policy vault
        let q = "22222222-2222-2222-2222-222222222222";
        w.role_assignments.insert(
            "x".into(),
            RoleAssignment {
                name: "x".into(),
                scope: "/subscriptions/s".into(),
                role_definition_guid: ROLE_CRYPTO_SERVICE_ENCRYPTION_USER.into(),
                principal_id: q.into(),
                principal_type: "ServicePrincipal".into(),
                description: None,
                created_on: now,
                updated_on: now,
                created_by: "t".into(),
                effective_at: now,
            },
        );
        assert!(!w.cmk_access(w.vault_by_name_or_id("ap1").unwrap(), q, now));
        assert!(
            w.cmk_access(w.vault_by_name_or_id("rb1").unwrap(), q, now),
            "subscription-scope role covers the vault"
        );
    }

    #[test]
    fn access_found_between_requests_counts_from_when_it_took_effect() {
        let t = timing();
        let mut c = tl(true);
        // access took effect at 00:20 but the next request comes at 00:40: ready at 00:25, not 00:45
        c.observe(ts("2025-01-01T00:40:00Z"), Some(ts("2025-01-01T00:20:00Z")), &t);
        assert_eq!(c.access_at, Some(ts("2025-01-01T00:20:00Z")));
        assert_eq!(c.stage(ts("2025-01-01T00:25:00Z"), &t), Stage::Healthy);
        // access that takes effect only after the window does not save the cache
        let mut late = tl(true);
        late.observe(ts("2025-01-01T02:00:00Z"), Some(ts("2025-01-01T01:31:00Z")), &t);
        assert_eq!(late.stage(ts("2025-01-01T02:00:00Z"), &t), Stage::Failed);
        // not yet in effect: still waiting
        let mut soon = tl(true);
        soon.observe(ts("2025-01-01T00:10:00Z"), Some(ts("2025-01-01T00:12:00Z")), &t);
        assert_eq!(soon.stage(ts("2025-01-01T00:10:00Z"), &t), Stage::WaitingForKey);
    }

    fn world_with(seed: &str, propagation: Duration, now: Timestamp) -> World {
        let mut w = World::new(Delays { grant_propagation: propagation, ..timing() });
        w.apply_seed(&Seed::from_yaml(seed).unwrap(), now).unwrap();
        w
    }

    #[test]
    fn grants_propagate_before_they_count_for_key_access() {
        let now = ts("2025-01-01T00:00:00Z");
        let mut w = world_with(
            "vaults:\n - {name: ap1, subscriptionId: s, resourceGroup: rg}\n - {name: rb1, subscriptionId: s, resourceGroup: rg, enableRbacAuthorization: true}\n",
            Duration::from_secs(300),
            now,
        );
        let p = "11111111-1111-1111-1111-111111111111";
        for v in ["ap1", "rb1"] {
            w.grant(v, p, now, "t").unwrap();
            let vault = w.vault_by_name_or_id(v).unwrap();
            assert!(w.key_permission(vault, p, "get"), "{v}: Key Vault's own answer shows the grant at once");
            assert!(!w.cmk_access(vault, p, now + SignedDuration::from_secs(299)), "{v}: not yet for the cache");
            assert!(w.cmk_access(vault, p, now + SignedDuration::from_secs(300)), "{v}");
        }
        // removing and re-adding a permission propagates again
        let v = w.vaults.get_mut("ap1").unwrap();
        let later = now + SignedDuration::from_mins(30);
        v.access_policies.clear();
        v.restamp_policies(later);
        assert!(w.cmk_access_since(w.vault_by_name_or_id("ap1").unwrap(), p).is_none());
        w.grant("ap1", p, later, "t").unwrap();
        assert_eq!(
            w.cmk_access_since(w.vault_by_name_or_id("ap1").unwrap(), p),
            Some(later + SignedDuration::from_mins(5))
        );
        // seeded access already exists: in effect at once
        let w = world_with(
            "vaults:\n - {name: ap2, subscriptionId: s, resourceGroup: rg, accessPolicies: [{objectId: 22222222-2222-2222-2222-222222222222, permissions: {keys: [get, wrapKey, unwrapKey]}}]}\ngrants:\n - {vault: ap2, principalId: 33333333-3333-3333-3333-333333333333}\n",
            Duration::from_secs(300),
            now,
        );
        let v = w.vault_by_name_or_id("ap2").unwrap();
        assert!(w.cmk_access(v, "22222222-2222-2222-2222-222222222222", now));
        assert!(w.cmk_access(v, "33333333-3333-3333-3333-333333333333", now));
    }

    #[test]
    fn key_ops_without_wrap_or_unwrap_mean_no_key_access() {
        let now = ts("2025-01-01T00:00:00Z");
        let p = "11111111-1111-1111-1111-111111111111";
        let w = world_with(
            &format!(
                "vaults:\n - name: ap1\n   subscriptionId: s\n   resourceGroup: rg\n   keys:\n    - {{name: k, versions: [{{version: aa, keyOps: [sign, verify]}}, {{version: bb, keyOps: [wrapKey]}}, {{version: cc}}]}}\ngrants:\n - {{vault: ap1, principalId: {p}}}\n"
            ),
            Duration::ZERO,
            now,
        );
        let ident = CacheIdentity {
            kind: "SystemAssigned".into(),
            system_principal_id: Some(p.into()),
            user_assigned: BTreeMap::new(),
        };
        let enc = |v: &str| CacheEncryption {
            key_url: format!("https://ap1.vault.azure.net/keys/k/{v}"),
            source_vault_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/ap1".into(),
            vault_name: "ap1".into(),
            key_name: "k".into(),
            key_version: Some(v.into()),
            rotation_to_latest_key_version_enabled: None,
            rotation_enabled_at: None,
        };
        assert!(w.key_access_since(&ident, &enc("aa")).is_none(), "sign/verify only");
        assert!(w.key_access_since(&ident, &enc("bb")).is_none(), "wrapKey without unwrapKey");
        assert!(w.key_access_since(&ident, &enc("cc")).is_some(), "default key_ops include both");
        let kv = w.key_version_of(&enc("cc")).unwrap();
        assert_eq!(
            kv.jwk("x")["key_ops"],
            serde_json::json!(["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"])
        );
        assert_eq!(w.key_version_of(&enc("aa")).unwrap().jwk("x")["key_ops"], serde_json::json!(["sign", "verify"]));
    }

    #[test]
    fn aml_timeline_creates_fails_updates_and_deletes() {
        let t0 = ts("2025-01-01T00:00:00Z");
        let mut t = AmlTimeline {
            created_at: t0,
            ready_at: t0 + SignedDuration::from_mins(20),
            failed_at: None,
            failure: None,
            updating_until: None,
            deleting_until: None,
        };
        assert_eq!(t.status(t0 + SignedDuration::from_mins(19)).0, "Creating");
        assert_eq!(t.status(t0 + SignedDuration::from_mins(19)).1, "Transitioning");
        assert_eq!(t.status(t0 + SignedDuration::from_mins(20)), ("Succeeded", "Available", "amlFilesystem is ok."));
        t.updating_until = Some(t0 + SignedDuration::from_mins(21));
        assert_eq!(t.status(t0 + SignedDuration::from_mins(20)).0, "Updating");
        assert!(t.ready(t0 + SignedDuration::from_mins(20)));
        t.failed_at = Some(t0 + SignedDuration::from_mins(5));
        t.failure = Some(("BlobIntegrationAccessDenied".into(), "no roles".into()));
        assert_eq!(t.status(t0 + SignedDuration::from_mins(4)).0, "Creating");
        assert_eq!(t.status(t0 + SignedDuration::from_mins(5)), ("Failed", "Unavailable", "no roles"));
        assert!(!t.ready(t0 + SignedDuration::from_mins(30)), "a failed file system never becomes ready");
        t.deleting_until = Some(t0 + SignedDuration::from_mins(40));
        assert_eq!(t.status(t0 + SignedDuration::from_mins(30)).0, "Deleting");
    }

    #[test]
    fn blob_integration_needs_both_roles_for_the_resource_provider_propagated() {
        let now = ts("2025-01-01T00:00:00Z");
        let acct = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/blob1";
        let mut w = world_with(
            "storageAccounts:\n - {subscriptionId: s, resourceGroup: rg, name: blob1}\n",
            Duration::ZERO,
            now,
        );
        assert_eq!(w.hpc_cache_rp_object_id(), Some(HPC_CACHE_RP_OBJECT_ID), "seeded by default");
        assert!(w.storage_accounts.contains_key(&acct.to_ascii_lowercase()));
        let assign = |w: &mut World, scope: &str, role: &str, at: Timestamp| {
            let ra = RoleAssignment {
                name: new_uuid(),
                scope: scope.into(),
                role_definition_guid: role.into(),
                principal_id: HPC_CACHE_RP_OBJECT_ID.into(),
                principal_type: "ServicePrincipal".into(),
                description: None,
                created_on: now,
                updated_on: now,
                created_by: "t".into(),
                effective_at: at,
            };
            w.role_assignments.insert(ra.id().to_ascii_lowercase(), ra);
        };
        assign(&mut w, acct, ROLE_STORAGE_BLOB_DATA_CONTRIBUTOR, now);
        assert!(w.blob_integration_access_since(acct).is_none(), "the data role alone is not enough");
        let later = now + SignedDuration::from_mins(5);
        assign(&mut w, "/subscriptions/s/resourceGroups/rg", ROLE_CONTRIBUTOR, later);
        assert_eq!(w.blob_integration_access_since(acct), Some(later), "Contributor on the resource group counts");
        // a seed naming the tenant's real object id for the resource provider replaces the built-in one
        let w = world_with(
            &format!(
                "principals:\n - {{clientId: {HPC_CACHE_RP_APP_ID}, objectId: 11111111-0000-4000-8000-000000000001}}\n"
            ),
            Duration::ZERO,
            now,
        );
        assert_eq!(w.hpc_cache_rp_object_id(), Some("11111111-0000-4000-8000-000000000001"));
        assert!(!w.principals.contains_key(HPC_CACHE_RP_OBJECT_ID));
    }

    #[test]
    fn management_group_assignments_apply_to_their_subscriptions() {
        let now = ts("2025-01-01T00:00:00Z");
        let w = world_with(
            "managementGroups:\n - {name: root-mg, subscriptions: []}\n - {name: child, parent: root-mg, subscriptions: [s]}\nvaults:\n - {name: rb1, subscriptionId: s, resourceGroup: rg, enableRbacAuthorization: true}\nroleAssignments:\n - {scope: /providers/Microsoft.Management/managementGroups/root-mg, roleDefinitionId: e147488a-f6f5-4113-8e2d-b22465e65bf6, principalId: 44444444-4444-4444-4444-444444444444}\n",
            Duration::ZERO,
            now,
        );
        let v = w.vault_by_name_or_id("rb1").unwrap();
        assert!(
            w.cmk_access(v, "44444444-4444-4444-4444-444444444444", now),
            "grandparent group's role reaches the vault"
        );
        let mg = "/providers/Microsoft.Management/managementGroups/root-mg";
        assert!(w.scope_applies(mg, "/subscriptions/S/resourceGroups/rg"));
        assert!(w.scope_applies(mg, "/providers/Microsoft.Management/managementGroups/child"));
        assert!(!w.scope_applies("/providers/Microsoft.Management/managementGroups/child", mg));
        assert!(!w.scope_applies(mg, "/subscriptions/other"));
        assert_eq!(
            vault_of_scope("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1/keys/k")
                .as_deref(),
            Some("kv1")
        );
        assert_eq!(
            role_guid_of("E147488A-f6f5-4113-8e2d-b22465e65bf6").as_deref(),
            Some("e147488a-f6f5-4113-8e2d-b22465e65bf6")
        );
        assert!(role_guid_of("/subscriptions/s/foo/e147488a-f6f5-4113-8e2d-b22465e65bf6").is_none());
    }
}

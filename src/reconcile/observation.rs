//! What one reconcile read from Azure, as Azure said it: the output of [`observe`](super::observe) (I/O) and the
//! input of [`facts`](super::facts) (pure). Nothing here is judged yet.

use hpcc_api::v1alpha1::{Encryption, HpcCacheSpec, IdentityType};
use hpcc_azure::{Cache, KeyBundle, UserAssignedIdentity, Vault};
use jiff::Timestamp;

/// Everything read for one object.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Azure's clock: the `Date` of the cache read.
    pub now: Timestamp,
    /// None: Azure has no such cache.
    pub cache: Option<Cache>,
    /// What the spec references; None when it references nothing (system-assigned identity, Microsoft-managed
    /// keys) or the object is being deleted.
    pub referenced: Option<Referenced>,
}

impl Observation {
    /// The vault as Azure reported it, when it was read.
    pub fn vault(&self) -> Option<&Vault> {
        match self.referenced.as_ref()?.vault.as_ref()? {
            VaultRead::Found { vault, .. } => Some(vault),
            _ => None,
        }
    }
}

/// What the reads of the referenced resources depend on, and nothing else: it is also the key under which they are
/// shared (see [`RecentReads`](super::reads::RecentReads)), so a read cannot depend on a field the key lacks.
#[derive(Clone, Debug, PartialEq)]
pub struct References {
    pub subscription_id: String,
    pub encryption: Option<Encryption>,
    pub user_assigned_identity_id: Option<String>,
    /// The namespace's `hpccache.io/allowed-vault-scopes`, if any.
    pub allowed_vault_scopes: Option<String>,
}

impl References {
    /// None when the spec references nothing that must be read. `cache`: the cache as Azure reports it, if any.
    pub fn of(spec: &HpcCacheSpec, allowed_vault_scopes: Option<&str>, cache: Option<&Cache>) -> Option<Self> {
        let user_assigned = spec.identity.type_ == IdentityType::UserAssigned;
        if spec.encryption.is_none() && !user_assigned {
            return None;
        }
        let mut encryption = spec.encryption.clone();
        if let (Some(enc), Some(version)) = (&mut encryption, cache.and_then(|c| rotated_version(spec, c))) {
            enc.key_version = Some(version);
        }
        Some(Self {
            subscription_id: spec.azure.subscription_id.clone(),
            encryption,
            user_assigned_identity_id: spec.identity.user_assigned_identity_id.clone().filter(|_| user_assigned),
            allowed_vault_scopes: allowed_vault_scopes.map(str::to_string),
        })
    }

    pub fn cache_key(&self) -> String {
        format!("{self:?}")
    }
}

/// With `rotateToLatestKeyVersion`, Azure moves an existing cache to new versions of its key by itself, so the
/// version to check is the one the cache uses (a pinned older version may be disabled by now and says nothing
/// about the cache). None without rotation, or when the cache is on another vault or key than the spec's.
fn rotated_version(spec: &HpcCacheSpec, cache: &Cache) -> Option<String> {
    let enc = spec.encryption.as_ref().filter(|e| e.rotate_to_latest_key_version)?;
    let kek = cache.key_encryption_key()?;
    if !kek.source_vault.id.eq_ignore_ascii_case(&enc.key_vault_id) {
        return None;
    }
    // https://{vault}.vault.azure.net/keys/{name}/{version}
    let (_, path) = kek.key_url.trim_end_matches('/').split_once("/keys/")?;
    let (name, version) = path.split_once('/')?;
    (name.eq_ignore_ascii_case(&enc.key_name) && !version.is_empty()).then(|| version.to_string())
}

/// The referenced resources, as read.
#[derive(Clone, Debug)]
pub struct Referenced {
    /// None without `spec.encryption`.
    pub vault: Option<VaultRead>,
    /// None for a system-assigned identity.
    pub identity: Option<IdentityRead>,
}

#[derive(Clone, Debug)]
pub enum VaultRead {
    /// Outside the scopes the namespace may use: never read (the message says why).
    NotAllowed(String),
    /// `keyVaultId` is not an ARM id.
    BadId(String),
    NotFound,
    /// The operator may not read it (Azure's message).
    AccessDenied(String),
    Found {
        vault: Box<Vault>,
        key: KeyRead,
    },
}

#[derive(Clone, Debug)]
pub enum KeyRead {
    /// The vault reports no `vaultUri`: its keys cannot be read.
    NoVaultUri,
    NotFound {
        vault_uri: String,
    },
    /// The operator may not read it (Azure's message).
    AccessDenied {
        vault_uri: String,
        error: String,
    },
    Found(Box<KeyBundle>),
}

#[derive(Clone, Debug)]
pub enum IdentityRead {
    /// `userAssignedIdentityId` is not an ARM id.
    BadId(String),
    NotFound,
    Found {
        identity: UserAssignedIdentity,
        /// On an RBAC vault: whether the identity holds the crypto role there (None on an access-policy vault,
        /// whose policies are in the vault itself).
        role_assigned: Option<bool>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VAULT: &str =
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";

    fn spec(rotate: bool, version: Option<&str>) -> HpcCacheSpec {
        serde_json::from_value(json!({
            "azure": {"subscriptionId": "11111111-2222-3333-4444-555555555555", "resourceGroup": "rg", "location": "eastus"},
            "sku": "Standard_2G", "cacheSizeGB": 3072,
            "subnetId": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
            "encryption": {"keyVaultId": VAULT, "keyName": "k", "keyVersion": version, "rotateToLatestKeyVersion": rotate}
        }))
        .unwrap()
    }

    fn cache(vault: &str, key_url: &str) -> Cache {
        serde_json::from_value(json!({"properties": {"encryptionSettings": {
            "keyEncryptionKey": {"keyUrl": key_url, "sourceVault": {"id": vault}}
        }}}))
        .unwrap()
    }

    fn version_read(spec: &HpcCacheSpec, cache: Option<&Cache>) -> Option<String> {
        References::of(spec, None, cache)?.encryption?.key_version
    }

    #[test]
    fn with_rotation_the_version_the_cache_uses_is_checked() {
        let pinned = Some("aaaa");
        let rotated = cache(VAULT, "https://kv.vault.azure.net/keys/k/bbbb");
        assert_eq!(version_read(&spec(true, pinned), Some(&rotated)).as_deref(), Some("bbbb"));
        assert_eq!(version_read(&spec(true, None), Some(&rotated)).as_deref(), Some("bbbb"));
        // Before the cache exists, and without rotation, the spec's version.
        assert_eq!(version_read(&spec(true, pinned), None).as_deref(), pinned);
        assert_eq!(version_read(&spec(false, pinned), Some(&rotated)).as_deref(), pinned);
        // A cache still on another key or vault (a key change in progress): the spec's.
        let other_key = cache(VAULT, "https://kv.vault.azure.net/keys/other/bbbb");
        assert_eq!(version_read(&spec(true, pinned), Some(&other_key)).as_deref(), pinned);
        let other_vault = cache(&VAULT.replace("/kv", "/kv2"), "https://kv2.vault.azure.net/keys/k/bbbb");
        assert_eq!(version_read(&spec(true, pinned), Some(&other_vault)).as_deref(), pinned);
    }
}

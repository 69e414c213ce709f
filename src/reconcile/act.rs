//! Act: perform the one action the machine chose, against Azure. Every write to one vault (protection, access
//! policies, role assignments) takes the vault's turn (see [`vault_turns`](super::vault_turns)).

use std::sync::Arc;

use serde_json::{Value, json};

use hpcc_api::v1alpha1::{Encryption, GrantKind, GrantRecord, HpcCache, HpcCacheSpec, IdentityType};
use hpcc_azure::{
    ACCESS_POLICIES_PER_UPDATE, Azure, AzureError, CMK_KEY_PERMISSIONS, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER,
    ResourceId, Vault,
};
use hpcc_core::{Action, desired_tags};

use super::observe::cache_id;
use super::reads::RecentReads;
use super::status::Recorded;
use super::vault_turns::{PolicyGrant, Turn, VaultTurns};

/// The ARM body of the cache the spec describes (Caches_CreateOrUpdate); `owner` is the owner tag's value.
pub fn desired_cache(spec: &HpcCacheSpec, owner: &str, key_url: Option<&str>) -> Value {
    let identity = match spec.identity.type_ {
        IdentityType::SystemAssigned => json!({"type": "SystemAssigned"}),
        IdentityType::UserAssigned => json!({
            "type": "UserAssigned",
            "userAssignedIdentities": { spec.identity.user_assigned_identity_id.clone().unwrap_or_default(): {} }
        }),
    };
    let mut properties = json!({ "cacheSizeGB": spec.cache_size_gb, "subnet": spec.subnet_id });
    if let (Some(enc), Some(url)) = (&spec.encryption, key_url) {
        properties["encryptionSettings"] = encryption_settings(enc, url);
    }
    json!({
        "location": spec.azure.location,
        "tags": desired_tags(spec, owner),
        "sku": { "name": spec.sku },
        "identity": identity,
        "properties": properties,
    })
}

fn encryption_settings(enc: &Encryption, key_url: &str) -> Value {
    json!({
        "keyEncryptionKey": { "keyUrl": key_url, "sourceVault": { "id": enc.key_vault_id } },
        "rotationToLatestKeyVersionEnabled": enc.rotate_to_latest_key_version,
    })
}

/// The PATCH body for a key change (and tags, which are the other mutable part).
pub fn key_update(spec: &HpcCacheSpec, owner: &str, key_url: Option<&str>) -> Value {
    let mut patch = json!({ "tags": desired_tags(spec, owner) });
    if let (Some(enc), Some(url)) = (&spec.encryption, key_url) {
        patch["properties"] = json!({ "encryptionSettings": encryption_settings(enc, url) });
    }
    patch
}

/// Performs recorded actions; owns the per-vault write turns.
#[derive(Default)]
pub struct Actor {
    vault_turns: Arc<VaultTurns>,
}

impl Actor {
    /// Performs the recorded action (`RemoveFinalizer` and `None` are Kubernetes-side or nothing). `vault`: the
    /// spec's vault as last read (its tenant is the default tenant of an access policy).
    pub async fn perform(
        &self,
        azure: &Azure,
        reads: &RecentReads,
        obj: &HpcCache,
        owner: &str,
        vault: Option<&Vault>,
        recorded: &Recorded,
    ) -> Result<(), AzureError> {
        let vault_id = obj.spec.encryption.as_ref().map(|e| e.key_vault_id.as_str()).unwrap_or_default();
        if let Some(done) = self.write_access(azure, reads, vault_id, vault, recorded.action()).await {
            return done;
        }
        match recorded.action() {
            Action::None | Action::RemoveFinalizer => Ok(()),
            Action::EnableVaultProtection | Action::Grant(_) | Action::RevokeGrant(_) => Ok(()), // done above
            Action::Create { key_url } => {
                let body = desired_cache(&obj.spec, owner, key_url.as_deref());
                let cache = serde_json::from_value(body).map_err(|e| AzureError::Input(e.to_string()))?;
                azure.put_cache(&cache_id(obj), &cache).await.map(drop)
            }
            Action::Update { key_url } => {
                let patch = key_update(&obj.spec, owner, key_url.as_deref());
                azure.patch_cache(&cache_id(obj), &patch).await.map(drop)
            }
            Action::Delete => azure.delete_cache(&cache_id(obj)).await.map(drop),
        }
    }

    /// The access writes both kinds share: vault protection (of `vault_id`, the spec's vault), grants and revokes,
    /// each serialized per vault or storage account. None for any other action.
    pub async fn write_access(
        &self,
        azure: &Azure,
        reads: &RecentReads,
        vault_id: &str,
        vault: Option<&Vault>,
        action: &Action,
    ) -> Option<Result<(), AzureError>> {
        let result = match action {
            Action::EnableVaultProtection => {
                // The spec's id is the key of the protected-vault memory (observe records it the same way).
                let id = match parse_id(vault_id) {
                    Ok(id) => id,
                    Err(e) => return Some(Err(e)),
                };
                let _turn = match self.vault_turns.take(&id.to_string(), None).await {
                    Ok(turn) => turn,
                    Err(e) => return Some(Err(e)),
                };
                if reads.vault_protected(vault_id) {
                    return Some(Ok(())); // another reconcile protected this vault a moment ago
                }
                let done = azure.enable_vault_protection(&id).await.map(drop);
                if done.is_ok() {
                    reads.mark_vault_protected(vault_id);
                }
                done
            }
            Action::Grant(g) | Action::RevokeGrant(g) => {
                let id = match parse_id(&g.scope) {
                    Ok(id) => id,
                    Err(e) => return Some(Err(e)),
                };
                let vault_key = id.to_string();
                // An access-policy grant may ride along with another writer's (see `vault_turns`).
                let policy = (matches!(action, Action::Grant(_)) && role_of(g.kind).is_none())
                    .then(|| (tenant_of(g, vault), g.principal_id.clone()));
                let holder = hpcc_azure::current_caller().map(|c| c.holder);
                if let (Some(p), Some(h)) = (&policy, &holder)
                    && self.vault_turns.served(&vault_key, h, p)
                {
                    return Some(Ok(()));
                }
                let turn = match self.vault_turns.take(&vault_key, policy.clone()).await {
                    Ok(turn) => turn,
                    Err(e) => return Some(Err(e)),
                };
                match policy {
                    Some(own) => grant_with_riders(azure, &id, &turn, own).await,
                    None if matches!(action, Action::Grant(_)) => grant(azure, &id, g, vault).await,
                    None => revoke(azure, &id, g, vault).await,
                }
            }
            _ => return None,
        };
        Some(result)
    }
}

/// The value of the owner tag for an object of this cluster (either kind): `cluster/namespace/name`.
pub fn owner(cluster: &str, obj: &impl kube::ResourceExt) -> String {
    hpcc_core::owner_tag(cluster, &obj.namespace().unwrap_or_default(), &obj.name_any())
}

/// The owner tag written before the cluster was part of it (`namespace/name`).
pub fn legacy_owner(obj: &HpcCache) -> String {
    format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default()
    )
}

fn parse_id(id: &str) -> Result<ResourceId, AzureError> {
    ResourceId::parse(id).map_err(|e| AzureError::Input(format!("{id}: {e}")))
}

fn tenant_of(g: &GrantRecord, vault: Option<&Vault>) -> String {
    g.tenant_id.clone().or_else(|| vault.and_then(|v| v.properties.tenant_id.clone())).unwrap_or_default()
}

/// The built-in role a role-assignment grant gives (None for an access policy).
fn role_of(kind: GrantKind) -> Option<&'static str> {
    match kind {
        GrantKind::AccessPolicy => None,
        GrantKind::RoleAssignment => Some(KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER),
        GrantKind::StorageAccountContributor => Some(hpcc_azure::STORAGE_ACCOUNT_CONTRIBUTOR),
        GrantKind::StorageBlobDataContributor => Some(hpcc_azure::STORAGE_BLOB_DATA_CONTRIBUTOR),
    }
}

async fn grant(azure: &Azure, id: &ResourceId, g: &GrantRecord, vault: Option<&Vault>) -> Result<(), AzureError> {
    match role_of(g.kind) {
        None => azure.add_access_policy(id, &tenant_of(g, vault), &g.principal_id, &CMK_KEY_PERMISSIONS).await,
        Some(role) => azure.put_role_assignment(id, &g.principal_id, role).await,
    }
}

/// One `accessPolicies/add` for this writer's grant and those waiting in line for the vault (as many as one update
/// takes); the riders find theirs made when they come back. If it fails, they make their own.
async fn grant_with_riders(azure: &Azure, id: &ResourceId, turn: &Turn, own: PolicyGrant) -> Result<(), AzureError> {
    let riders = turn.riders(ACCESS_POLICIES_PER_UPDATE - 1);
    let entries: Vec<(&str, &str)> =
        std::iter::once(&own).chain(riders.iter().map(|(_, g)| g)).map(|(t, p)| (t.as_str(), p.as_str())).collect();
    azure.add_access_policies(id, &entries, &CMK_KEY_PERMISSIONS).await?;
    turn.served(riders);
    Ok(())
}

async fn revoke(azure: &Azure, id: &ResourceId, g: &GrantRecord, vault: Option<&Vault>) -> Result<(), AzureError> {
    let result = match role_of(g.kind) {
        None => azure.remove_access_policy(id, &tenant_of(g, vault), &g.principal_id).await,
        Some(role) => azure.delete_role_assignment(id, &g.principal_id, role).await,
    };
    match result {
        // What the grant was on is gone: nothing left to revoke.
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_api::v1alpha1::CacheIdentity;

    fn spec() -> HpcCacheSpec {
        serde_json::from_value(json!({
            "azure": {"subscriptionId": "11111111-2222-3333-4444-555555555555", "resourceGroup": "rg", "location": "eastus"},
            "sku": "Standard_2G", "cacheSizeGB": 3072, "subnetId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
            "encryption": {"keyVaultId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv", "keyName": "k", "keyVersion": "0123456789abcdef0123456789abcdef"},
            "tags": {"team": "genomics"}
        }))
        .unwrap()
    }

    #[test]
    fn create_body_matches_the_caches_spec() {
        let body = desired_cache(&spec(), "ns/c", Some("https://kv.vault.azure.net/keys/k/v1"));
        assert_eq!(body["location"], "eastus");
        assert_eq!(body["sku"]["name"], "Standard_2G");
        assert_eq!(body["identity"]["type"], "SystemAssigned");
        assert_eq!(body["properties"]["cacheSizeGB"], 3072);
        let kek = &body["properties"]["encryptionSettings"]["keyEncryptionKey"];
        assert_eq!(kek["keyUrl"], "https://kv.vault.azure.net/keys/k/v1");
        assert_eq!(
            kek["sourceVault"]["id"],
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
        );
        assert_eq!(body["properties"]["encryptionSettings"]["rotationToLatestKeyVersionEnabled"], false);
        assert_eq!(body["tags"]["team"], "genomics");
        assert_eq!(body["tags"]["hpccache.io-owner"], "ns/c");
        // and it is a valid Cache model
        let _: hpcc_azure::Cache = serde_json::from_value(body).unwrap();
    }

    #[test]
    fn user_assigned_identity_is_a_dictionary_of_empty_objects() {
        let mut s = spec();
        s.identity =
            CacheIdentity { type_: IdentityType::UserAssigned, user_assigned_identity_id: Some("/x/id".into()) };
        let body = desired_cache(&s, "ns/c", Some("u"));
        assert_eq!(body["identity"], json!({"type": "UserAssigned", "userAssignedIdentities": {"/x/id": {}}}));
    }

    #[test]
    fn microsoft_managed_keys_send_no_encryption_settings() {
        let mut s = spec();
        s.encryption = None;
        assert!(desired_cache(&s, "ns/c", None)["properties"].get("encryptionSettings").is_none());
    }

    #[test]
    fn key_update_patches_only_mutable_settings() {
        let patch = key_update(&spec(), "ns/c", Some("https://kv.vault.azure.net/keys/k/v2"));
        assert_eq!(
            patch["properties"]["encryptionSettings"]["keyEncryptionKey"]["keyUrl"],
            "https://kv.vault.azure.net/keys/k/v2"
        );
        assert!(patch.get("sku").is_none() && patch.get("identity").is_none() && patch.get("location").is_none());
    }
}

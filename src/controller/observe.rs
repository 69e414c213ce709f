//! Observe: read what Azure says about one `HpcCache` and reduce it to the machine's [`Observed`].
//!
//! Reads are budgeted (ARM throttles per subscription): the cache is read every reconcile, while vault, key and
//! identity facts change rarely and are kept for a short time, keyed by what the spec points at.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use url::Url;

use crate::api::{HpcCache, IdentityType};
use crate::azure::{Azure, AzureError, CMK_KEY_PERMISSIONS, Cache, ResourceId, Vault};
use crate::machine::{self, CacheFacts, IdentityFacts, KeyFacts, Observed, VaultFacts};

/// Vault, key and identity facts, kept for `ttl` and dropped when the operator changes the vault.
pub struct FactsCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Facts)>>,
}

#[derive(Clone)]
struct Facts {
    vault: Option<Vault>,
    vault_facts: VaultFacts,
    key: Option<KeyFacts>,
    identity: Option<IdentityFacts>,
    identity_error: Option<(String, String)>,
}

impl FactsCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &str) -> Option<Facts> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, f)| f.clone())
    }

    fn put(&self, key: String, facts: Facts) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(key, (Instant::now(), facts));
    }

    /// Forget everything about a vault (after the operator changed it).
    pub fn invalidate_vault(&self, vault_id: &str) {
        let needle = vault_id.to_ascii_lowercase();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|k, _| !k.starts_with(&needle));
    }
}

/// The ARM id of the cache an object manages.
pub fn cache_id(obj: &HpcCache) -> ResourceId {
    let a = &obj.spec.azure;
    ResourceId::cache(&a.subscription_id, &a.resource_group, obj.azure_name())
}

/// `allowed_vault_scopes`: the namespace's [`machine::ALLOWED_VAULT_SCOPES_ANNOTATION`], if any.
pub async fn observe(
    azure: &Azure,
    facts: &FactsCache,
    obj: &HpcCache,
    allowed_vault_scopes: Option<&str>,
) -> Result<(Observed, Option<Vault>), AzureError> {
    let got = azure.get_cache(&cache_id(obj)).await?;
    let now = got.date.unwrap_or_else(Timestamp::now);
    let cache = got.value.as_ref().map(cache_facts);

    let mut observed = Observed { now, cache, key: None, vault: None, identity: None, identity_error: None };
    let needs_facts = obj.spec.encryption.is_some() || obj.spec.identity.type_ == IdentityType::UserAssigned;
    if !needs_facts || obj.metadata.deletion_timestamp.is_some() {
        return Ok((observed, None));
    }
    let key = format!("{}|{}", facts_key(obj), allowed_vault_scopes.unwrap_or_default());
    let f = match facts.get(&key) {
        Some(f) => f,
        None => {
            let f = read_facts(azure, obj, now, allowed_vault_scopes).await?;
            facts.put(key, f.clone());
            f
        }
    };
    observed.key = f.key;
    observed.vault = obj.spec.encryption.as_ref().map(|_| f.vault_facts);
    observed.identity = f.identity;
    observed.identity_error = f.identity_error;
    Ok((observed, f.vault))
}

fn facts_key(obj: &HpcCache) -> String {
    let enc = obj.spec.encryption.as_ref();
    format!(
        "{}|{}|{}|{}|{}",
        enc.map(|e| e.key_vault_id.to_ascii_lowercase()).unwrap_or_default(),
        enc.map(|e| e.key_name.as_str()).unwrap_or_default(),
        enc.and_then(|e| e.key_version.as_deref()).unwrap_or("latest"),
        obj.spec.identity.user_assigned_identity_id.as_deref().unwrap_or_default().to_ascii_lowercase(),
        obj.spec.azure.location,
    )
}

fn invalid_vault(reason: &str, message: String) -> VaultFacts {
    VaultFacts::Invalid { reason: reason.into(), message }
}

async fn read_facts(
    azure: &Azure,
    obj: &HpcCache,
    now: Timestamp,
    allowed_vault_scopes: Option<&str>,
) -> Result<Facts, AzureError> {
    let mut f = Facts {
        vault: None,
        vault_facts: invalid_vault("VaultNotChecked", String::new()),
        key: None,
        identity: None,
        identity_error: None,
    };
    let policy =
        obj.spec.encryption.as_ref().map(|enc| {
            machine::vault_allowed(&enc.key_vault_id, &obj.spec.azure.subscription_id, allowed_vault_scopes)
        });
    if let Some(Err(message)) = policy {
        // Never touch a vault the namespace may not use, not even to read it.
        f.vault_facts = invalid_vault("VaultNotAllowed", message);
    } else if let Some(enc) = &obj.spec.encryption {
        match ResourceId::parse(&enc.key_vault_id) {
            Err(e) => f.vault_facts = invalid_vault("InvalidVaultId", format!("spec.encryption.keyVaultId: {e}")),
            Ok(vault_id) => match azure.get_vault(&vault_id).await {
                Ok(v) => match v.value {
                    None => {
                        f.vault_facts =
                            invalid_vault("VaultNotFound", format!("Key Vault {} does not exist", enc.key_vault_id))
                    }
                    Some(vault) => {
                        f.vault_facts = machine::check_vault(
                            vault.location.as_deref().unwrap_or_default(),
                            &obj.spec.azure.location,
                            vault.properties.enable_soft_delete.unwrap_or(true),
                            vault.properties.enable_purge_protection == Some(true),
                            vault.properties.enable_rbac_authorization == Some(true),
                        );
                        f.key = Some(read_key(azure, &vault, enc, now).await?);
                        f.vault = Some(vault);
                    }
                },
                Err(e) if e.status() == Some(403) => {
                    f.vault_facts = invalid_vault(
                        "VaultAccessDenied",
                        format!("the operator's identity may not read Key Vault {}: {}", enc.key_vault_id, e),
                    )
                }
                Err(e) => return Err(e),
            },
        }
    }
    if obj.spec.identity.type_ == IdentityType::UserAssigned {
        let id = obj.spec.identity.user_assigned_identity_id.as_deref().unwrap_or_default();
        match ResourceId::parse(id) {
            Err(e) => {
                f.identity_error =
                    Some(("InvalidIdentityId".into(), format!("spec.identity.userAssignedIdentityId: {e}")))
            }
            Ok(rid) => match azure.get_user_assigned_identity(&rid).await? {
                None => {
                    f.identity_error =
                        Some(("IdentityNotFound".into(), format!("user-assigned identity {id} does not exist")))
                }
                Some(identity) => {
                    let principal = identity.properties.principal_id.clone().unwrap_or_default();
                    let tenant = identity.properties.tenant_id.clone();
                    let has_key_access = f.vault.as_ref().and_then(|v| {
                        // RBAC vaults would need a role-assignment listing; report unknown and let Automatic grant.
                        (v.properties.enable_rbac_authorization != Some(true))
                            .then(|| v.access_policy_grants(tenant.as_deref(), &principal, &CMK_KEY_PERMISSIONS))
                    });
                    f.identity = Some(IdentityFacts { principal_id: principal, tenant_id: tenant, has_key_access });
                }
            },
        }
    }
    Ok(f)
}

async fn read_key(
    azure: &Azure,
    vault: &Vault,
    enc: &crate::api::Encryption,
    now: Timestamp,
) -> Result<KeyFacts, AzureError> {
    let invalid = |reason: &str, message: String| KeyFacts::Invalid { reason: reason.into(), message };
    let Some(uri) = vault.properties.vault_uri.as_deref().and_then(|u| Url::parse(u).ok()) else {
        return Ok(invalid("VaultUriMissing", format!("Key Vault {} reports no vaultUri", enc.key_vault_id)));
    };
    match azure.get_key(&uri, &enc.key_name, enc.key_version.as_deref()).await {
        Ok(None) => Ok(invalid(
            "KeyNotFound",
            format!(
                "key {}{} was not found in {}",
                enc.key_name,
                enc.key_version.as_deref().map(|v| format!(" version {v}")).unwrap_or_default(),
                uri
            ),
        )),
        Ok(Some(bundle)) => {
            let kid = bundle.key.kid.clone().unwrap_or_default();
            let a = &bundle.attributes;
            Ok(machine::check_key(
                &kid,
                bundle.key.kty.as_deref().unwrap_or_default(),
                bundle.rsa_bits().map(|b| b as usize),
                a.enabled.unwrap_or(true),
                a.nbf.and_then(|s| Timestamp::from_second(s).ok()),
                a.exp.and_then(|s| Timestamp::from_second(s).ok()),
                now,
            ))
        }
        Err(e) if e.status() == Some(403) || e.status() == Some(401) => Ok(invalid(
            "KeyAccessDenied",
            format!("the operator's identity cannot read key {} in {uri} (it needs keys/get): {e}", enc.key_name),
        )),
        Err(e) => Err(e),
    }
}

/// Reduces Azure's cache to what the machine needs.
pub fn cache_facts(c: &Cache) -> CacheFacts {
    let identity = c.identity.as_ref();
    let ua_principal = identity.and_then(|i| i.user_assigned_identities.values().find_map(|v| v.principal_id.clone()));
    let enc = c.properties.encryption_settings.as_ref();
    CacheFacts {
        id: c.id.clone().unwrap_or_default(),
        provisioning_state: c.provisioning_state().unwrap_or_default().to_string(),
        health_state: c.health_state().map(str::to_string),
        status_description: c.properties.health.as_ref().and_then(|h| h.status_description.clone()),
        principal_id: identity.and_then(|i| i.principal_id.clone()).or(ua_principal),
        tenant_id: identity.and_then(|i| i.tenant_id.clone()),
        created_at: c.created_at(),
        key_url: c.key_encryption_key().map(|k| k.key_url.clone()),
        rotation_enabled: enc.and_then(|e| e.rotation_to_latest_key_version_enabled).unwrap_or(false),
        tags: c.tags.clone().unwrap_or_default(),
    }
}

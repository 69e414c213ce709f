//! Observe: read what Azure says about one `HpcCache` and reduce it to the machine's [`Observed`].
//!
//! Reads are budgeted (ARM throttles per subscription): see [`RecentReads`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use url::Url;

use hpcc_api::v1alpha1::{HpcCache, IdentityType};
use hpcc_azure::{
    Azure, AzureError, CMK_KEY_PERMISSIONS, Cache, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER, ResourceId, Vault,
};
use hpcc_core::{CacheFacts, IdentityFacts, KeyFacts, Observed, VaultFacts};

/// A small map whose entries expire `ttl` after they were written.
struct TtlMap<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlMap<V> {
    fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<V> {
        self.lock().get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    fn put(&self, key: String, value: V) {
        let mut entries = self.lock();
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(key, (Instant::now(), value));
    }
}

/// What was read from Azure recently, so that reads are spent where they buy reaction time:
/// - vault, key and identity facts change rarely: kept for the facts TTL, keyed by what the spec points at;
/// - caches are read as one paged list per resource group, shared by every reconcile within half a poll interval
///   (so N caches cost about two list reads per poll, not N), and also absorbing the watch echo of the operator's
///   own status writes. Any action on a cache drops its resource group's list; a cache missing from a list is
///   confirmed with a GET before anyone believes it is gone.
pub struct RecentReads {
    facts: TtlMap<Facts>,
    cache_lists: TtlMap<hpcc_azure::Observed<Vec<Cache>>>,
    vault_writes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    protected_vaults: Mutex<std::collections::HashSet<String>>,
    /// Bumped by every `forget_cache`, so a list read that started before an action is not stored after it.
    list_epochs: Mutex<HashMap<String, u64>>,
}

#[derive(Clone)]
struct Facts {
    vault: Option<Vault>,
    vault_facts: VaultFacts,
    key: Option<KeyFacts>,
    identity: Option<IdentityFacts>,
    identity_error: Option<(String, String)>,
}

impl RecentReads {
    pub fn new(facts_ttl: Duration, cache_list_ttl: Duration) -> Self {
        Self {
            facts: TtlMap::new(facts_ttl),
            cache_lists: TtlMap::new(cache_list_ttl),
            vault_writes: Default::default(),
            protected_vaults: Default::default(),
            list_epochs: Default::default(),
        }
    }

    /// One lock per vault, held around protecting it, so that concurrent reconciles of caches sharing a vault
    /// send one PATCH and the others see its result.
    pub fn vault_write_lock(&self, vault_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.vault_writes.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(vault_id.to_ascii_lowercase()).or_default().clone()
    }

    /// Forget what was read about a cache's resource group (after acting on the cache).
    pub fn forget_cache(&self, id: &ResourceId) {
        let key = list_key(id);
        *self.list_epochs.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default() += 1;
        self.cache_lists.lock().remove(&key);
    }

    fn list_epoch(&self, key: &str) -> u64 {
        self.list_epochs.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied().unwrap_or_default()
    }

    /// Record that a vault is protected. Azure refuses to turn purge protection (or soft delete) off again, so
    /// this is remembered for good: a stale read or a concurrent reconcile never sends the PATCH twice.
    pub fn mark_vault_protected(&self, vault_id: &str) {
        self.protected_vaults.lock().unwrap_or_else(|e| e.into_inner()).insert(vault_id.to_ascii_lowercase());
    }

    /// Whether the vault is known to be protected.
    pub fn vault_protected(&self, vault_id: &str) -> bool {
        self.protected_vaults.lock().unwrap_or_else(|e| e.into_inner()).contains(&vault_id.to_ascii_lowercase())
    }
}

/// The ARM id of the cache an object manages.
pub fn cache_id(obj: &HpcCache) -> ResourceId {
    let a = &obj.spec.azure;
    ResourceId::cache(&a.subscription_id, &a.resource_group, obj.azure_name())
}

/// `allowed_vault_scopes`: the namespace's [`hpcc_core::ALLOWED_VAULT_SCOPES_ANNOTATION`], if any.
pub async fn observe(
    azure: &Azure,
    reads: &RecentReads,
    obj: &HpcCache,
    allowed_vault_scopes: Option<&str>,
) -> Result<(Observed, Option<Vault>), AzureError> {
    let got = read_cache(azure, reads, &cache_id(obj)).await?;
    let now = got.date.unwrap_or_else(Timestamp::now);
    let cache = got.value.as_ref().map(cache_facts);

    let mut observed = Observed { now, cache, key: None, vault: None, identity: None, identity_error: None };
    let needs_facts = obj.spec.encryption.is_some() || obj.spec.identity.type_ == IdentityType::UserAssigned;
    if !needs_facts || obj.metadata.deletion_timestamp.is_some() {
        return Ok((observed, None));
    }
    let key = format!("{}|{}", facts_key(obj), allowed_vault_scopes.unwrap_or_default());
    let f = match reads.facts.get(&key) {
        Some(f) => f,
        None => {
            let f = read_facts(azure, obj, now, allowed_vault_scopes).await?;
            reads.facts.put(key, f.clone());
            f
        }
    };
    let mut vault_facts = f.vault_facts;
    if let (VaultFacts::Usable { protected, .. }, Some(enc)) = (&mut vault_facts, &obj.spec.encryption) {
        if *protected {
            reads.mark_vault_protected(&enc.key_vault_id);
        }
        *protected |= reads.vault_protected(&enc.key_vault_id);
    }
    observed.key = f.key;
    observed.vault = obj.spec.encryption.as_ref().map(|_| vault_facts);
    observed.identity = f.identity;
    observed.identity_error = f.identity_error;
    Ok((observed, f.vault))
}

fn list_key(cache: &ResourceId) -> String {
    format!("{}|{}", cache.subscription(), cache.resource_group().unwrap_or_default()).to_ascii_lowercase()
}

/// The cache as Azure reports it: from its resource group's recent list, or a GET when the list lacks it.
async fn read_cache(
    azure: &Azure,
    reads: &RecentReads,
    id: &ResourceId,
) -> Result<hpcc_azure::Observed<Option<Cache>>, AzureError> {
    let key = list_key(id);
    let list = match reads.cache_lists.get(&key) {
        Some(list) => list,
        None => {
            let epoch = reads.list_epoch(&key);
            let list = azure.list_caches(id.subscription(), id.resource_group()).await?;
            if reads.list_epoch(&key) == epoch {
                reads.cache_lists.put(key, list.clone());
            }
            list
        }
    };
    let wanted = id.to_string();
    let found = list.value.iter().find(|c| c.id.as_deref().is_some_and(|cid| cid.eq_ignore_ascii_case(&wanted)));
    match found {
        Some(c) => Ok(hpcc_azure::Observed { value: Some(c.clone()), date: list.date, retry_after: list.retry_after }),
        // Lists may lag behind a create; only a GET says a cache does not exist.
        None => azure.get_cache(id).await,
    }
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
            hpcc_core::vault_allowed(&enc.key_vault_id, &obj.spec.azure.subscription_id, allowed_vault_scopes)
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
                        f.vault_facts = hpcc_core::check_vault(
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
                    let has_key_access = match &f.vault {
                        None => None,
                        Some(v) if v.properties.enable_rbac_authorization == Some(true) => {
                            let vault_id = ResourceId::parse(v.id.as_deref().unwrap_or_default()).ok();
                            match vault_id {
                                Some(vid) => Some(
                                    azure
                                        .has_role_assignment(&vid, &principal, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER)
                                        .await?,
                                ),
                                None => None,
                            }
                        }
                        Some(v) => Some(v.access_policy_grants(tenant.as_deref(), &principal, &CMK_KEY_PERMISSIONS)),
                    };
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
    enc: &hpcc_api::v1alpha1::Encryption,
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
            Ok(hpcc_core::check_key(
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
        key_vault_id: c.key_encryption_key().map(|k| k.source_vault.id.clone()),
        rotation_enabled: enc.and_then(|e| e.rotation_to_latest_key_version_enabled).unwrap_or(false),
        tags: c.tags.clone().unwrap_or_default(),
    }
}

//! Facts: what Azure's answers mean for the machine. Pure (no I/O): an [`Observation`] and the spec in,
//! [`hpcc_core::Facts`] out; table-tested below.

use hpcc_api::v1alpha1::HpcCacheSpec;
use hpcc_azure::{CMK_KEY_PERMISSIONS, Cache};
use hpcc_core::{
    CacheFacts, Facts, HealthState, IdentityFacts, KeyFacts, KeyProperties, ProvisioningState, Reason, VaultFacts,
    check_key, check_vault,
};
use jiff::Timestamp;

use super::observation::{IdentityRead, KeyRead, Observation, VaultRead};

/// What a spec points at, by name: the words the facts' messages use. Both kinds fill it from their spec.
#[derive(Clone, Copy, Debug, Default)]
pub struct Names<'a> {
    /// The resource's region (the vault must be in it).
    pub location: &'a str,
    pub vault_id: &'a str,
    pub key_name: &'a str,
    pub key_version: Option<&'a str>,
    pub identity_id: &'a str,
}

impl<'a> Names<'a> {
    fn of(spec: &'a HpcCacheSpec) -> Self {
        let enc = spec.encryption.as_ref();
        Names {
            location: &spec.azure.location,
            vault_id: enc.map(|e| e.key_vault_id.as_str()).unwrap_or_default(),
            key_name: enc.map(|e| e.key_name.as_str()).unwrap_or_default(),
            key_version: enc.and_then(|e| e.key_version.as_deref()),
            identity_id: spec.identity.user_assigned_identity_id.as_deref().unwrap_or_default(),
        }
    }
}

/// The verdicts on what a spec references (key, vault, user-assigned identity), for either kind.
#[derive(Clone, Debug, Default)]
pub struct ReferencedFacts {
    pub key: Option<KeyFacts>,
    pub vault: Option<VaultFacts>,
    pub identity: Option<IdentityFacts>,
}

/// The facts of one reconcile. `vault_known_protected`: this process saw the vault protected before (Azure never
/// turns protection off again, so a stale read cannot undo it).
pub fn facts(spec: &HpcCacheSpec, observation: &Observation, vault_known_protected: bool) -> Facts {
    let referenced = referenced_facts(Names::of(spec), observation, vault_known_protected);
    Facts {
        now: observation.now,
        cache: observation.cache.as_ref().map(cache_facts),
        key: referenced.key,
        vault: referenced.vault,
        identity: referenced.identity,
    }
}

/// The verdicts on the vault, the key and the identity an observation read.
pub fn referenced_facts(names: Names, observation: &Observation, vault_known_protected: bool) -> ReferencedFacts {
    let Some(referenced) = &observation.referenced else {
        return ReferencedFacts::default();
    };
    ReferencedFacts {
        key: match &referenced.vault {
            Some(VaultRead::Found { key, .. }) => Some(key_facts(names, key, observation.now)),
            _ => None,
        },
        vault: referenced.vault.as_ref().map(|v| vault_facts(names, v, vault_known_protected)),
        identity: referenced.identity.as_ref().map(|i| identity_facts(names, i, observation.vault())),
    }
}

fn vault_facts(names: Names, read: &VaultRead, known_protected: bool) -> VaultFacts {
    let vault_id = names.vault_id;
    let invalid = |reason, message: String| VaultFacts::Invalid { reason, message };
    match read {
        VaultRead::NotAllowed(message) => invalid(Reason::VaultNotAllowed, message.clone()),
        VaultRead::BadId(e) => invalid(Reason::InvalidVaultId, format!("spec.encryption.keyVaultId: {e}")),
        VaultRead::NotFound => invalid(Reason::VaultNotFound, format!("Key Vault {vault_id} does not exist")),
        VaultRead::AccessDenied(e) => invalid(
            Reason::VaultAccessDenied,
            format!("the operator's identity may not read Key Vault {vault_id}: {e}"),
        ),
        VaultRead::Found { vault, .. } => {
            let mut facts = check_vault(
                vault.location.as_deref().unwrap_or_default(),
                names.location,
                vault.is_protected(),
                vault.properties.enable_rbac_authorization == Some(true),
            );
            if let VaultFacts::Usable { protected, .. } = &mut facts {
                *protected |= known_protected;
            }
            facts
        }
    }
}

fn key_facts(names: Names, read: &KeyRead, now: Timestamp) -> KeyFacts {
    let (name, version, vault_id) = (names.key_name, names.key_version, names.vault_id);
    let invalid = |reason, message: String| KeyFacts::Invalid { reason, message };
    match read {
        KeyRead::NoVaultUri => invalid(Reason::VaultUriMissing, format!("Key Vault {vault_id} reports no vaultUri")),
        KeyRead::NotFound { vault_uri } => invalid(
            Reason::KeyNotFound,
            format!(
                "key {name}{} was not found in {vault_uri}",
                version.map(|v| format!(" version {v}")).unwrap_or_default()
            ),
        ),
        KeyRead::AccessDenied { vault_uri, error } => invalid(
            Reason::KeyAccessDenied,
            format!("the operator's identity cannot read key {name} in {vault_uri} (it needs keys/get): {error}"),
        ),
        KeyRead::Found(bundle) => {
            let a = &bundle.attributes;
            let key = KeyProperties {
                kid: bundle.key.kid.as_deref().unwrap_or_default(),
                kty: bundle.key.kty.as_deref().unwrap_or_default(),
                rsa_bits: bundle.rsa_bits().map(|b| b as usize),
                key_ops: &bundle.key.key_ops,
                enabled: a.enabled.unwrap_or(true),
                not_before: a.nbf.and_then(|s| Timestamp::from_second(s).ok()),
                expires: a.exp.and_then(|s| Timestamp::from_second(s).ok()),
            };
            check_key(&key, now)
        }
    }
}

fn identity_facts(names: Names, read: &IdentityRead, vault: Option<&hpcc_azure::Vault>) -> IdentityFacts {
    let id = names.identity_id;
    match read {
        IdentityRead::BadId(e) => IdentityFacts::Invalid {
            reason: Reason::InvalidIdentityId,
            message: format!("spec.identity.userAssignedIdentityId: {e}"),
        },
        IdentityRead::NotFound => IdentityFacts::Invalid {
            reason: Reason::IdentityNotFound,
            message: format!("user-assigned identity {id} does not exist"),
        },
        IdentityRead::Found { identity, role_assigned } => {
            let principal_id = identity.properties.principal_id.clone().unwrap_or_default();
            let tenant_id = identity.properties.tenant_id.clone();
            let has_key_access = match vault {
                None => None,
                Some(v) if v.properties.enable_rbac_authorization == Some(true) => *role_assigned,
                Some(v) => Some(v.access_policy_grants(tenant_id.as_deref(), &principal_id, &CMK_KEY_PERMISSIONS)),
            };
            IdentityFacts::Usable { principal_id, tenant_id, has_key_access }
        }
    }
}

/// Reduces Azure's cache to what the machine needs.
pub fn cache_facts(c: &Cache) -> CacheFacts {
    let identity = c.identity.as_ref();
    let ua_principal = identity.and_then(|i| i.user_assigned_identities.values().find_map(|v| v.principal_id.clone()));
    let enc = c.properties.encryption_settings.as_ref();
    CacheFacts {
        id: c.id.clone().unwrap_or_default(),
        provisioning_state: ProvisioningState::parse(c.provisioning_state().unwrap_or_default()),
        health_state: c.health_state().map(HealthState::parse),
        status_description: c.properties.health.as_ref().and_then(|h| h.status_description.clone()),
        principal_id: identity.and_then(|i| i.principal_id.clone()).or(ua_principal),
        tenant_id: identity.and_then(|i| i.tenant_id.clone()),
        created_at: c.created_at(),
        key_url: c.key_encryption_key().map(|k| k.key_url.clone()),
        key_vault_id: c.key_encryption_key().map(|k| k.source_vault.id.clone()),
        rotation_enabled: enc.and_then(|e| e.rotation_to_latest_key_version_enabled).unwrap_or(false),
        tags: c.tags.clone().unwrap_or_default(),
        mount_addresses: c.properties.mount_addresses.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::observation::Referenced;
    use serde_json::json;

    const SUB: &str = "11111111-2222-3333-4444-555555555555";
    const VAULT: &str =
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
    const UAI: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id";
    const KID: &str = "https://kv.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef";

    fn spec(user_assigned: bool) -> HpcCacheSpec {
        let identity = if user_assigned {
            json!({"type": "UserAssigned", "userAssignedIdentityId": UAI})
        } else {
            json!({"type": "SystemAssigned"})
        };
        serde_json::from_value(json!({
            "azure": {"subscriptionId": SUB, "resourceGroup": "rg", "location": "eastus"},
            "sku": "Standard_2G", "cacheSizeGB": 3072,
            "subnetId": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s"),
            "identity": identity,
            "encryption": {"keyVaultId": VAULT, "keyName": "k", "keyVersion": "0123456789abcdef0123456789abcdef"}
        }))
        .unwrap()
    }

    fn vault(
        location: &str,
        purge_protection: bool,
        rbac: bool,
        policies: serde_json::Value,
    ) -> Box<hpcc_azure::Vault> {
        serde_json::from_value(json!({
            "id": VAULT, "name": "kv", "location": location,
            "properties": {
                "tenantId": "tenant", "sku": {"family": "A", "name": "standard"},
                "vaultUri": "https://kv.vault.azure.net/", "enableSoftDelete": true,
                "enablePurgeProtection": purge_protection, "enableRbacAuthorization": rbac,
                "accessPolicies": policies
            }
        }))
        .unwrap()
    }

    /// An RSA key whose modulus `n` has `bytes` bytes with the top bit set (so `bytes * 8` bits).
    fn key(kty: &str, bytes: usize, enabled: bool) -> KeyRead {
        let n = format!("{}w", "_".repeat(bytes / 3 * 4 + 1)); // base64url of `bytes` 0xFF bytes (bytes % 3 == 1)
        KeyRead::Found(Box::new(
            serde_json::from_value(json!({
                "key": {"kid": KID, "kty": kty, "n": n, "e": "AQAB"},
                "attributes": {"enabled": enabled}
            }))
            .unwrap(),
        ))
    }

    fn with_ops(read: KeyRead, ops: &[&str]) -> KeyRead {
        let KeyRead::Found(mut bundle) = read else { unreachable!() };
        bundle.key.key_ops = ops.iter().map(|o| o.to_string()).collect();
        KeyRead::Found(bundle)
    }

    fn observed(vault: Option<VaultRead>, identity: Option<IdentityRead>) -> Observation {
        Observation {
            now: "2026-11-29T10:00:00Z".parse().unwrap(),
            cache: None,
            referenced: Some(Referenced { vault, identity }),
        }
    }

    fn vault_reason(f: &Facts) -> Option<&'static str> {
        match &f.vault {
            Some(VaultFacts::Invalid { reason, .. }) => Some(reason.as_str()),
            _ => None,
        }
    }

    fn key_reason(f: &Facts) -> Option<&'static str> {
        match &f.key {
            Some(KeyFacts::Invalid { reason, .. }) => Some(reason.as_str()),
            Some(KeyFacts::Valid { .. }) => Some("Valid"),
            None => None,
        }
    }

    #[test]
    fn vault_and_key_reads_become_verdicts() {
        let ok_vault = || vault("eastus", true, false, json!([]));
        let cases: Vec<(&str, VaultRead, Option<&str>, Option<&str>)> = vec![
            ("usable", VaultRead::Found { vault: ok_vault(), key: key("RSA", 256, true) }, None, Some("Valid")),
            ("not allowed", VaultRead::NotAllowed("no".into()), Some("VaultNotAllowed"), None),
            ("bad id", VaultRead::BadId("not an ARM id".into()), Some("InvalidVaultId"), None),
            ("missing", VaultRead::NotFound, Some("VaultNotFound"), None),
            ("forbidden", VaultRead::AccessDenied("403".into()), Some("VaultAccessDenied"), None),
            (
                "other region",
                VaultRead::Found { vault: vault("westus", true, false, json!([])), key: key("RSA", 256, true) },
                Some("VaultRegionMismatch"),
                Some("Valid"),
            ),
            ("EC key", VaultRead::Found { vault: ok_vault(), key: key("EC", 256, true) }, None, Some("KeyNotRSA")),
            (
                "3080-bit key",
                VaultRead::Found { vault: ok_vault(), key: key("RSA", 385, true) },
                None,
                Some("KeySizeUnsupported"),
            ),
            (
                "disabled key",
                VaultRead::Found { vault: ok_vault(), key: key("RSA", 256, false) },
                None,
                Some("KeyDisabled"),
            ),
            (
                "no key",
                VaultRead::Found { vault: ok_vault(), key: KeyRead::NotFound { vault_uri: "https://kv/".into() } },
                None,
                Some("KeyNotFound"),
            ),
            (
                "key forbidden",
                VaultRead::Found {
                    vault: ok_vault(),
                    key: KeyRead::AccessDenied { vault_uri: "https://kv/".into(), error: "403".into() },
                },
                None,
                Some("KeyAccessDenied"),
            ),
            (
                "no vaultUri",
                VaultRead::Found { vault: ok_vault(), key: KeyRead::NoVaultUri },
                None,
                Some("VaultUriMissing"),
            ),
            (
                "sign/verify key",
                VaultRead::Found { vault: ok_vault(), key: with_ops(key("RSA", 256, true), &["sign", "verify"]) },
                None,
                Some("KeyOperationsMissing"),
            ),
            (
                "wrap/unwrap key",
                VaultRead::Found { vault: ok_vault(), key: with_ops(key("RSA", 256, true), &["wrapKey", "unwrapKey"]) },
                None,
                Some("Valid"),
            ),
        ];
        for (name, read, vault_want, key_want) in cases {
            let f = facts(&spec(false), &observed(Some(read), None), false);
            assert_eq!(vault_reason(&f), vault_want, "{name}: vault {:?}", f.vault);
            assert_eq!(key_reason(&f), key_want, "{name}: key {:?}", f.key);
        }
    }

    #[test]
    fn messages_name_what_is_missing() {
        let f = facts(&spec(false), &observed(Some(VaultRead::NotFound), None), false);
        let Some(VaultFacts::Invalid { message, .. }) = f.vault else { panic!() };
        assert!(message.contains(VAULT), "{message}");
        let read = VaultRead::Found {
            vault: vault("eastus", true, false, json!([])),
            key: KeyRead::NotFound { vault_uri: "https://kv.vault.azure.net/".into() },
        };
        let f = facts(&spec(false), &observed(Some(read), None), false);
        let Some(KeyFacts::Invalid { message, .. }) = f.key else { panic!() };
        assert!(message.contains("key k version 0123456789abcdef0123456789abcdef"), "{message}");
        let f = facts(&spec(true), &observed(None, Some(IdentityRead::NotFound)), false);
        assert_eq!(
            f.identity,
            Some(IdentityFacts::Invalid {
                reason: Reason::IdentityNotFound,
                message: format!("user-assigned identity {UAI} does not exist")
            })
        );
    }

    #[test]
    fn protection_seen_before_is_kept() {
        let read = || VaultRead::Found { vault: vault("eastus", false, false, json!([])), key: key("RSA", 256, true) };
        let f = facts(&spec(false), &observed(Some(read()), None), false);
        assert_eq!(f.vault, Some(VaultFacts::Usable { protected: false, rbac: false }));
        let f = facts(&spec(false), &observed(Some(read()), None), true);
        assert_eq!(f.vault, Some(VaultFacts::Usable { protected: true, rbac: false }));
    }

    #[test]
    fn identity_access_comes_from_policies_or_the_role_lookup() {
        let identity = |role_assigned| IdentityRead::Found {
            identity: serde_json::from_value(json!({"properties": {"principalId": "ua", "tenantId": "tenant"}}))
                .unwrap(),
            role_assigned,
        };
        let policy =
            json!([{"tenantId": "tenant", "objectId": "ua", "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]}}]);
        let cases = [
            ("policy grants", vault("eastus", true, false, policy.clone()), None, Some(true)),
            ("no policy", vault("eastus", true, false, json!([])), None, Some(false)),
            ("rbac, role held", vault("eastus", true, true, json!([])), Some(true), Some(true)),
            ("rbac, no role", vault("eastus", true, true, json!([])), Some(false), Some(false)),
        ];
        for (name, v, role, want) in cases {
            let read = VaultRead::Found { vault: v, key: key("RSA", 256, true) };
            let f = facts(&spec(true), &observed(Some(read), Some(identity(role))), false);
            let Some(IdentityFacts::Usable { principal_id, has_key_access, .. }) = f.identity else { panic!("{name}") };
            assert_eq!((principal_id.as_str(), has_key_access), ("ua", want), "{name}");
        }
        // Without a readable vault nothing is known about access.
        let f = facts(&spec(true), &observed(Some(VaultRead::NotFound), Some(identity(None))), false);
        assert!(matches!(f.identity, Some(IdentityFacts::Usable { has_key_access: None, .. })));
    }

    #[test]
    fn cache_states_are_typed_and_unknown_ones_kept() {
        let cache: Cache = serde_json::from_value(json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.StorageCache/caches/c",
            "properties": {"provisioningState": "Succeeded", "health": {"state": "Hibernating"}}
        }))
        .unwrap();
        let f = cache_facts(&cache);
        assert_eq!(f.provisioning_state, ProvisioningState::Succeeded);
        assert_eq!(f.health_state, Some(HealthState::Other("Hibernating".into())));
        assert!(!f.is_healthy());
        let observation = Observation { now: jiff::Timestamp::UNIX_EPOCH, cache: Some(cache), referenced: None };
        let f = facts(&spec(false), &observation, false);
        assert!(f.cache.is_some() && f.vault.is_none() && f.key.is_none() && f.identity.is_none());
    }
}

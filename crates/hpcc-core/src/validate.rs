//! The validators: what only Azure can judge about a key and a vault, and which vaults a namespace may use. Pure
//! functions of the facts Azure reported; the operator calls them while turning responses into [`Facts`](crate::Facts).

use jiff::Timestamp;

use crate::facts::{KeyFacts, VaultFacts};
use crate::reason::Reason;

/// A key version as Key Vault reports it (`JsonWebKey` and `KeyAttributes`), reduced to what is checked.
#[derive(Clone, Debug, Default)]
pub struct KeyProperties<'a> {
    /// The versioned key URL.
    pub kid: &'a str,
    pub kty: &'a str,
    pub rsa_bits: Option<usize>,
    /// `key_ops`; empty when Key Vault did not report them.
    pub key_ops: &'a [String],
    pub enabled: bool,
    pub not_before: Option<Timestamp>,
    pub expires: Option<Timestamp>,
}

/// The key operations a cache's identity performs with its key: Key Vault refuses any operation not in the key's
/// `key_ops` (403 Forbidden, inner KeyOperationForbidden), so without these the cache never gets its key.
pub const CMK_KEY_OPERATIONS: [&str; 2] = ["wrapKey", "unwrapKey"];

/// Checks a key as Azure HPC Cache requires it: RSA (or RSA-HSM), 2048 bits, wrapKey and unwrapKey allowed,
/// enabled, within nbf/exp.
pub fn check_key(key: &KeyProperties, now: Timestamp) -> KeyFacts {
    let KeyProperties { kid, kty, rsa_bits, key_ops, enabled, not_before, expires } = key.clone();
    let invalid = |reason: Reason, message: String| KeyFacts::Invalid { reason, message };
    if kty != "RSA" && kty != "RSA-HSM" {
        return invalid(
            Reason::KeyNotRSA,
            format!("key {kid} is of type {kty}; Azure HPC Cache needs a 2048-bit RSA key"),
        );
    }
    if rsa_bits != Some(2048) {
        let bits = rsa_bits.map_or("unknown".to_string(), |b| b.to_string());
        return invalid(
            Reason::KeySizeUnsupported,
            format!("key {kid} is {bits} bits; Azure HPC Cache needs exactly 2048 bits"),
        );
    }
    let missing: Vec<&str> = CMK_KEY_OPERATIONS
        .into_iter()
        .filter(|op| !key_ops.is_empty() && !key_ops.iter().any(|k| k.eq_ignore_ascii_case(op)))
        .collect();
    if !missing.is_empty() {
        return invalid(
            Reason::KeyOperationsMissing,
            format!(
                "key {kid} does not allow {} (its key_ops are {}); Azure HPC Cache needs wrapKey and unwrapKey: add them to the key's permitted operations or use another key",
                missing.join(" and "),
                key_ops.join(", ")
            ),
        );
    }
    if !enabled {
        return invalid(Reason::KeyDisabled, format!("key {kid} is disabled; enable it in the Key Vault"));
    }
    if not_before.is_some_and(|nbf| now < nbf) {
        return invalid(Reason::KeyNotYetValid, format!("key {kid} is not valid before {}", not_before.unwrap_or(now)));
    }
    if let Some(exp) = expires.filter(|exp| now >= *exp) {
        return invalid(Reason::KeyExpired, format!("key {kid} expired at {exp}"));
    }
    KeyFacts::Valid { kid: kid.to_string() }
}

/// Checks a vault against the cache: same subscription and region (Azure refuses others).
/// `protected`: soft delete and purge protection are both on.
pub fn check_vault(vault_location: &str, cache_location: &str, protected: bool, rbac: bool) -> VaultFacts {
    if !normalize_region(vault_location).eq_ignore_ascii_case(&normalize_region(cache_location)) {
        return VaultFacts::Invalid {
            reason: Reason::VaultRegionMismatch,
            message: format!(
                "the Key Vault is in {vault_location} but the cache is in {cache_location}; Azure HPC Cache needs a vault in the same region"
            ),
        };
    }
    VaultFacts::Usable { protected, rbac }
}

fn normalize_region(r: &str) -> String {
    r.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The namespace annotation with which a cluster admin lists the vault scopes (ARM id prefixes, comma-separated,
/// e.g. `/subscriptions/{id}/resourceGroups/keys-rg`) that `HpcCache` objects in the namespace may use. Without it,
/// only vaults in the cache's own subscription are allowed (also enforced by the CRD's CEL rule).
pub const ALLOWED_VAULT_SCOPES_ANNOTATION: &str = "hpccache.io/allowed-vault-scopes";

/// Whether `vault_id` is allowed for a cache in `cache_subscription`, given the namespace's allowed scopes.
/// Scopes match whole ARM path segments, case-insensitively.
pub fn vault_allowed(vault_id: &str, cache_subscription: &str, allowed_scopes: Option<&str>) -> Result<(), String> {
    let vault = vault_id.trim_end_matches('/').to_ascii_lowercase();
    let within = |scope: &str| {
        let scope = scope.trim().trim_end_matches('/').to_ascii_lowercase();
        !scope.is_empty() && (vault == scope || vault.starts_with(&format!("{scope}/")))
    };
    match allowed_scopes {
        None => {
            let own = format!("/subscriptions/{cache_subscription}");
            if within(&own) { Ok(()) } else { Err(format!("Key Vault {vault_id} is outside the cache's subscription")) }
        }
        Some(list) => {
            if list.split(',').any(within) {
                Ok(())
            } else {
                Err(format!(
                    "Key Vault {vault_id} is not in a scope this namespace may use ({ALLOWED_VAULT_SCOPES_ANNOTATION}: {list})"
                ))
            }
        }
    }
}

/// `https://v.vault.azure.net/keys/name/version` → `https://v.vault.azure.net/keys/name`.
/// `https://v.vault.azure.net/keys/name/version` → `name/version` (what `kubectl get` shows).
pub(crate) fn short_key(kid: &str) -> Option<String> {
    let (_, rest) = kid.trim_end_matches('/').split_once("/keys/")?;
    Some(rest.to_string())
}

pub(crate) fn strip_version(kid: &str) -> &str {
    let trimmed = kid.trim_end_matches('/');
    match trimmed.match_indices("/keys/").next() {
        Some((i, _)) => {
            let after = &trimmed[i + 6..];
            match after.find('/') {
                Some(j) => &trimmed[..i + 6 + j],
                None => trimmed,
            }
        }
        None => trimmed,
    }
}

//! A provisioned cache whose key settings or tags differ from the spec: the next step towards the spec.

use hpcc_api::v1alpha1::{ConditionStatus as S, ConditionType as C, KeyAccess, Phase};

use super::draft::Draft;
use crate::decision::{Action, desired_tags};
use crate::facts::{CacheFacts, IdentityFacts, KeyFacts};
use crate::reason::Reason;
use crate::validate::strip_version;

/// How the key settings and tags of an existing cache compare with the spec.
pub(super) enum Drift {
    /// In sync.
    None,
    /// Cannot be applied; already reported as a condition.
    Reported,
    /// The next step towards the spec.
    Do(Action),
}

impl Draft<'_> {
    /// What, if anything, brings the cache's key settings and tags to the spec.
    pub(super) fn drift(&mut self, cache: &CacheFacts) -> Drift {
        let tags_differ = cache.tags != desired_tags(self.spec(), self.input.owner);
        let Some(enc) = self.spec().encryption.clone() else {
            return if tags_differ { Drift::Do(Action::Update { key_url: None }) } else { Drift::None };
        };
        // The spec points at a vault or key that cannot be used: the cache keeps its key, and says why.
        let unusable = match (self.vault_invalid(), self.input.facts.key.clone()) {
            (Some(invalid), _) => Some(invalid),
            (None, Some(KeyFacts::Invalid { reason, message })) => Some((reason, message)),
            _ => None,
        };
        if let Some((reason, message)) = unusable {
            self.cond(C::KeyValid, S::False, reason, &message);
            self.stalled(Phase::Ready, reason, &format!("the cache keeps its current key: {message}"));
            return Drift::Reported;
        }
        let Some(KeyFacts::Valid { kid: desired }) = self.input.facts.key.clone() else {
            return Drift::None;
        };
        self.cond(C::KeyValid, S::True, Reason::KeyValid, &format!("{desired} is an enabled 2048-bit RSA key"));
        let actual = cache.key_url.clone().unwrap_or_default();
        let same_key = strip_version(&actual).eq_ignore_ascii_case(strip_version(&desired));
        let in_sync = if enc.rotate_to_latest_key_version {
            // Azure moves the version itself; only the vault and key name are ours to set.
            same_key
        } else {
            actual.trim_end_matches('/').eq_ignore_ascii_case(desired.trim_end_matches('/'))
        };
        if in_sync && cache.rotation_enabled == enc.rotate_to_latest_key_version && !tags_differ {
            return Drift::None;
        }
        // A new vault must trust the cache's identity before the cache is pointed at it.
        let new_vault = !cache.key_vault_id.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(&enc.key_vault_id));
        if new_vault && self.spec().key_access == KeyAccess::Automatic {
            let ua_trusted = self.input.facts.identity.as_ref().is_some_and(IdentityFacts::has_key_access);
            if let Some(principal) = self.cache_principal(cache).filter(|p| !ua_trusted && !self.grant_made_for(p)) {
                if self.vault_unprotected() {
                    return Drift::Do(Action::EnableVaultProtection);
                }
                return Drift::Do(self.grant(&principal, cache.tenant_id.clone()));
            }
        }
        // With rotation on and the same key, keep the version Azure rotated to rather than rolling it back.
        let key_url = if enc.rotate_to_latest_key_version && same_key && !actual.is_empty() { actual } else { desired };
        Drift::Do(Action::Update { key_url: Some(key_url) })
    }
}

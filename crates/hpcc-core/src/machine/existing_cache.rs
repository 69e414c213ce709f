//! Azure has the cache: follow its provisioning and health states to Ready, through the key window.

use hpcc_api::v1alpha1::{ConditionStatus as S, ConditionType as C, IdentityType, Phase};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::draft::Draft;
use super::drift::Drift;
use super::failure::Failure;
use crate::azure_state::ProvisioningState as P;
use crate::decision::{AUTHORIZATION_WINDOW, Action};
use crate::facts::CacheFacts;
use crate::reason::Reason;
use crate::validate::short_key;

impl Draft<'_> {
    pub(super) fn cache_exists(&mut self, cache: &CacheFacts) -> Action {
        self.status.azure_resource_id = Some(cache.id.clone());
        self.status.provisioning_state = Some(cache.provisioning_state.to_string());
        self.status.health_state = cache.health_state.as_ref().map(ToString::to_string);
        self.status.active_key_url = cache.key_url.clone();
        self.status.active_key = cache.key_url.as_deref().and_then(short_key);
        self.status.mount_addresses = cache.mount_addresses.clone();
        if cache.principal_id.is_some() {
            self.status.principal_id = cache.principal_id.clone();
            self.status.tenant_id = cache.tenant_id.clone();
        }
        let created_at = cache
            .created_at
            .or_else(|| self.status.create_requested_at.as_ref().map(|t| t.0))
            .or_else(|| self.status.created_at.as_ref().map(|t| t.0));
        self.status.created_at = created_at.map(Time);
        self.status.create_requested_at = None;
        if self.spec().encryption.is_none() {
            self.cond(C::KeyValid, S::True, Reason::MicrosoftManagedKey, "the cache uses Microsoft-managed keys");
        }
        // Saturating: Azure's createdAt is text from the wire, and one near the end of time must not panic.
        let deadline = created_at.map(|c| c.checked_add(AUTHORIZATION_WINDOW).unwrap_or(Timestamp::MAX));
        let state = &cache.provisioning_state;

        if *state == P::Deleting {
            let recreating = self.status.phase == Some(Phase::Deleting);
            let reason = if recreating { Reason::Recreating } else { Reason::AzureDeleting };
            self.status.authorization_deadline = None;
            self.progressing(Phase::Deleting, reason, "Azure is deleting the cache");
            return Action::None;
        }
        // Once Azure reported the cache healthy with its key, the 90-minute window is over for good: later
        // trouble (a failed update, lost key access) is reported, never answered by deleting the cache.
        let authorized = self.status.authorized_at.is_some();
        if matches!(state, P::Failed | P::Canceled) {
            // A cache Azure reports healthy is kept too, even when this status never saw it healthy (adopted, or
            // the status was lost): provisioningState Failed then belongs to a failed update, not a failed create.
            if authorized || cache.is_healthy() {
                let detail = cache.status_description.as_deref().unwrap_or("no details");
                let msg = format!("Azure reports provisioningState {state} ({detail}); the cache is kept as it is");
                self.stalled(Phase::Failed, Reason::ProvisioningFailed, &msg);
                return Action::None;
            }
            // Azure fails a CMK cache the moment its window ends without key access: past the deadline, that is
            // what the failure is (whoever looked first, the operator or Azure).
            if let Some(deadline) = deadline.filter(|d| self.spec().encryption.is_some() && self.input.facts.now >= *d)
            {
                return self.failed(cache, Failure::WindowMissed { deadline });
            }
            return self.failed(cache, Failure::ProvisioningFailed);
        }
        if authorized && cache.is_waiting_for_key() {
            return self.key_access_lost(cache);
        }
        if !authorized && (cache.is_waiting_for_key() || (*state != P::Succeeded && self.grant_outstanding(cache))) {
            self.status.authorization_deadline = deadline.map(Time);
            if let Some(deadline) = deadline.filter(|d| self.input.facts.now >= *d) {
                return self.failed(cache, Failure::WindowMissed { deadline });
            }
            if cache.is_waiting_for_key() {
                return self.waiting_for_key(cache, deadline);
            }
        }
        if *state != P::Succeeded {
            let (phase, reason) = match self.status.phase {
                _ if authorized => (Phase::Updating, Reason::Updating),
                Some(Phase::Updating) => (Phase::Updating, Reason::Updating),
                // The grant is made; Azure is picking up the key.
                Some(Phase::Authorizing | Phase::WaitingForKey) => (Phase::Authorizing, Reason::KeyAccessPropagating),
                _ => (Phase::Creating, Reason::Creating),
            };
            let msg = format!("Azure reports provisioningState {state}, health {}", cache.health_text());
            if phase == Phase::Authorizing {
                self.cond(
                    C::KeyAuthorized,
                    S::Unknown,
                    Reason::GrantPropagating,
                    "access is granted; Azure is picking up the key",
                );
            }
            self.progressing(phase, reason, &msg);
            return Action::None;
        }
        // Succeeded.
        self.status.authorization_deadline = None;
        if self.spec().encryption.is_some() {
            self.cond(C::KeyAuthorized, S::True, Reason::KeyAuthorized, "the cache's identity can use the key");
        }
        if cache.is_healthy() && self.status.authorized_at.is_none() {
            self.status.authorized_at = Some(self.now.clone());
        }
        match self.drift(cache) {
            Drift::None => {}
            Drift::Reported => return Action::None,
            Drift::Do(action) => {
                let why = match &action {
                    Action::Update { .. } => "applying the key settings and tags from the spec",
                    Action::EnableVaultProtection => "turning on purge protection on the new Key Vault",
                    _ => "granting the cache's identity access to the new Key Vault",
                };
                self.progressing(Phase::Updating, Reason::Updating, why);
                return action;
            }
        }
        if !cache.is_healthy() {
            let msg = format!("the cache is provisioned but its health is {}", cache.health_text());
            let phase = if authorized { Phase::Ready } else { Phase::Creating };
            self.progressing(phase, Reason::CacheNotHealthy, &msg);
            return Action::None;
        }
        self.phase(Phase::Ready);
        let msg = match &cache.key_url {
            Some(k) => format!("the cache is healthy and encrypted with {k}"),
            None => "the cache is healthy".to_string(),
        };
        self.cond(C::Ready, S::True, Reason::Ready, &msg);
        self.cond(C::Reconciling, S::False, Reason::Ready, &msg);
        self.cond(C::Stalled, S::False, Reason::Ready, &msg);
        self.requeue_after = self.input.timing.resync;
        Action::None
    }

    /// The cache waits for a key grant we have not seen confirmed yet.
    fn grant_outstanding(&self, cache: &CacheFacts) -> bool {
        self.spec().encryption.is_some()
            && self.spec().identity.type_ == IdentityType::SystemAssigned
            && !cache.is_healthy()
    }
}

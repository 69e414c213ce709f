//! The cache waits for its identity to be granted the key: grant it (Automatic) or ask a person (Manual), inside
//! Azure's window; and a healthy cache that lost its key access.

use std::time::Duration;

use hpcc_api::v1alpha1::{ConditionStatus as S, ConditionType as C, KeyAccess, Phase};
use jiff::Timestamp;

use super::draft::{Draft, format_left};
use crate::decision::{Action, DEADLINE_WARNINGS, Event};
use crate::facts::CacheFacts;
use crate::reason::Reason;

impl Draft<'_> {
    pub(super) fn waiting_for_key(&mut self, cache: &CacheFacts, deadline: Option<Timestamp>) -> Action {
        let left = deadline.map(|d| d.duration_since(self.input.facts.now));
        // Messages name the deadline, never the time left: a countdown would change the status on every poll (one
        // apiserver write per poll per waiting cache). The time left is a metric and the Warning events below.
        let deadline_text = deadline.map_or("an unknown deadline".to_string(), |d| d.to_string());
        // Look again well before the deadline: at most a quarter of the time left (floor: a second, or the poll).
        if let Some(left) = left {
            let quarter = Duration::try_from(left / 4).unwrap_or_default();
            let floor = self.input.timing.poll.min(Duration::from_secs(1));
            self.requeue_after = self.input.timing.poll.min(quarter).max(floor);
        }
        if let Some(action) = self.no_key_to_grant() {
            return action;
        }
        let Some(principal) = self.cache_principal(cache) else {
            self.progressing(
                Phase::WaitingForKey,
                Reason::WaitingForIdentity,
                "Azure has not reported the cache's identity yet",
            );
            return Action::None;
        };
        if self.spec().key_access == KeyAccess::Manual {
            let msg = format!(
                "grant principal {principal} get, wrapKey and unwrapKey on key {} in vault {} before {deadline_text}",
                self.spec().encryption.as_ref().map(|e| e.key_name.as_str()).unwrap_or_default(),
                self.spec().encryption.as_ref().map(|e| e.key_vault_id.as_str()).unwrap_or_default(),
            );
            self.cond(C::KeyAuthorized, S::False, Reason::AwaitingManualGrant, &msg);
            self.progressing(Phase::WaitingForKey, Reason::AwaitingManualGrant, &msg);
            // One Warning event as each threshold (30, 10, 5 minutes left) is crossed, not one per poll.
            let crossed =
                left.and_then(|l| DEADLINE_WARNINGS.into_iter().filter(|t| l.as_secs() <= i64::from(*t) * 60).min());
            if let Some(threshold) = crossed
                && self.status.deadline_warning_minutes.is_none_or(|warned| threshold < warned)
            {
                self.status.deadline_warning_minutes = Some(threshold);
                let left = left.map_or(String::new(), format_left);
                self.events
                    .push(Event::warning(Reason::AuthorizationDeadlineApproaching, format!("{msg} ({left} left)")));
            }
            return Action::None;
        }
        if let Some((reason, message)) = self.vault_invalid() {
            self.cond(C::KeyAuthorized, S::False, reason, &message);
            self.stalled(Phase::WaitingForKey, reason, &format!("cannot grant access: {message}"));
            return Action::None;
        }
        if self.grant_made_for(&principal) {
            let msg =
                format!("access granted to {principal}; waiting for Azure to pick up the key before {deadline_text}");
            self.cond(C::KeyAuthorized, S::Unknown, Reason::GrantPropagating, &msg);
            self.progressing(Phase::Authorizing, Reason::KeyAccessPropagating, &msg);
            return Action::None;
        }
        if self.vault_unprotected() {
            self.progressing(
                Phase::Authorizing,
                Reason::EnablingPurgeProtection,
                "turning on soft delete and purge protection on the Key Vault",
            );
            return Action::EnableVaultProtection;
        }
        let msg = format!("granting {principal} access to the key before {deadline_text}");
        let grant = self.grant(&principal, cache.tenant_id.clone());
        self.cond(C::KeyAuthorized, S::False, Reason::Granting, &msg);
        // The phase says what Azure reports until the grant is made; then Authorizing until Azure picks it up.
        self.progressing(Phase::WaitingForKey, Reason::Granting, &msg);
        grant
    }

    /// A cache that was authorized is waiting for its key again (access revoked out of band): grant again in
    /// Automatic mode, ask a person in Manual mode. No deadline applies and the cache is never deleted.
    pub(super) fn key_access_lost(&mut self, cache: &CacheFacts) -> Action {
        self.status.authorization_deadline = None;
        if let Some(action) = self.no_key_to_grant() {
            return action;
        }
        let Some(principal) = self.cache_principal(cache) else {
            self.progressing(
                Phase::WaitingForKey,
                Reason::WaitingForIdentity,
                "Azure has not reported the cache's identity",
            );
            return Action::None;
        };
        let msg = format!("the cache lost access to its key; principal {principal} needs get, wrapKey and unwrapKey");
        self.cond(C::KeyAuthorized, S::False, Reason::KeyAccessLost, &msg);
        if self.spec().key_access == KeyAccess::Manual {
            self.progressing(Phase::WaitingForKey, Reason::KeyAccessLost, &msg);
            self.events.push(Event::warning(Reason::KeyAccessLost, msg));
            return Action::None;
        }
        if let Some((reason, message)) = self.vault_invalid() {
            self.stalled(Phase::WaitingForKey, reason, &format!("cannot grant access again: {message}"));
            return Action::None;
        }
        let grant = self.grant(&principal, cache.tenant_id.clone());
        self.progressing(Phase::WaitingForKey, Reason::KeyAccessLost, &format!("{msg}; granting it again"));
        grant
    }

    /// Azure reports WaitingForKey for a cache the spec gives Microsoft-managed keys: there is no vault and no key
    /// to grant, so nothing is sent (a grant would name no vault); the state is reported as Azure's.
    fn no_key_to_grant(&mut self) -> Option<Action> {
        if self.spec().encryption.is_some() {
            return None;
        }
        self.progressing(
            Phase::WaitingForKey,
            Reason::CacheNotHealthy,
            "Azure reports health WaitingForKey, but the spec has no customer-managed key (spec.encryption): there is no key to grant access to",
        );
        Some(Action::None)
    }
}

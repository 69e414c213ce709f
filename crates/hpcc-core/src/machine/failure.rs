//! A cache Azure failed before it was ever healthy: re-created within the limit, or reported.

use hpcc_api::v1alpha1::{AuthorizationTimeoutPolicy, ConditionStatus as S, ConditionType as C, Phase};
use jiff::Timestamp;

use super::draft::Draft;
use crate::decision::{Action, Event};
use crate::facts::CacheFacts;
use crate::reason::Reason;

/// Why a cache that never became healthy is given up.
#[derive(Clone, Copy, Debug)]
pub(super) enum Failure {
    /// Azure reports provisioningState Failed or Canceled.
    ProvisioningFailed,
    /// The key was not authorized within Azure's window.
    WindowMissed { deadline: Timestamp },
}

impl Failure {
    fn reason(self) -> Reason {
        match self {
            Failure::ProvisioningFailed => Reason::ProvisioningFailed,
            Failure::WindowMissed { .. } => Reason::AuthorizationWindowMissed,
        }
    }

    fn describe(self) -> String {
        match self {
            Failure::ProvisioningFailed => "the cache's provisioningState is Failed".into(),
            Failure::WindowMissed { deadline } => format!("the key was not authorized before the deadline {deadline}"),
        }
    }
}

impl Draft<'_> {
    pub(super) fn failed(&mut self, cache: &CacheFacts, failure: Failure) -> Action {
        let why = failure.describe();
        let detail = cache.status_description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        let recreate = self.spec().on_authorization_timeout == AuthorizationTimeoutPolicy::Recreate;
        // A re-creation under way (its DELETE recorded, then refused or lost) goes on even at the limit: it is
        // already counted.
        let under_way = self.status.phase == Some(Phase::Deleting);
        if recreate && (under_way || self.status.recreations < self.spec().max_recreations) {
            // Count the re-creation once: the phase is recorded before the DELETE is sent.
            if !under_way {
                self.status.recreations += 1;
                let message = format!(
                    "{why}{detail}; deleting it to create a new one (re-creation {} of at most {})",
                    self.status.recreations,
                    self.spec().max_recreations
                );
                self.events.push(Event::warning(Reason::Recreating, message));
            }
            self.cond(C::KeyAuthorized, S::False, Reason::AuthorizationWindowMissed, &why);
            self.progressing(Phase::Deleting, Reason::Recreating, &format!("{why}; re-creating the cache"));
            return Action::Delete;
        }
        let hint = if recreate {
            format!("; the re-creation limit ({}) is reached", self.spec().max_recreations)
        } else {
            "; onAuthorizationTimeout is Fail: delete and re-create the HpcCache, or set onAuthorizationTimeout: Recreate".to_string()
        };
        let msg = format!("{why}{detail}{hint}");
        let reason = failure.reason();
        if self.spec().encryption.is_some() && reason == Reason::AuthorizationWindowMissed {
            self.cond(C::KeyAuthorized, S::False, reason, &msg);
        }
        self.status.authorization_deadline = None;
        self.stalled(Phase::Failed, reason, &msg);
        Action::None
    }
}

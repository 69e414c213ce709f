//! The pure core of hpc-cache-operator: a function from (spec, last status, what Azure reported, Azure's clock) to
//! the next status and at most one action, plus the validators it relies on. No I/O, no async runtime, no
//! Kubernetes client: the operator observes, turns Azure's answers into [`Facts`], calls [`decide`], records the
//! returned status (intent first) and then performs the action.
//!
//! The state diagram lives in one place: `docs/state-machine.md`. [`machine`] holds one file per situation.
//! Modules point one way: `reason`, `azure_state` → `facts` → `validate`, `decision` → `machine`; this file only
//! re-exports.

pub mod amlfs;
pub mod azure_state;
mod decision;
mod facts;
pub mod machine;
mod reason;
mod validate;

pub use azure_state::{HealthState, ProvisioningState};
pub use decision::{
    AUTHORIZATION_WINDOW, Action, ActionError, DEADLINE_WARNINGS, Decision, Event, Input, OWNER_TAG, Timing,
    desired_tags, owner_tag,
};
pub use facts::{CacheFacts, Facts, IdentityFacts, KeyFacts, VaultFacts};
pub use machine::{
    CredentialProblem, accepted, action_failed, action_succeeded, credential_recheck, credential_unusable, decide,
};
pub use reason::Reason;
pub use validate::{
    ALLOWED_VAULT_SCOPES_ANNOTATION, CMK_KEY_OPERATIONS, KeyProperties, check_key, check_vault, vault_allowed,
};

#[cfg(test)]
mod tests;

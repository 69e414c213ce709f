//! What the machine knows about Azure for one reconcile: the inputs of [`decide`](crate::decide), already reduced
//! from Azure's responses (by the operator's `reconcile::facts`) to what a decision needs.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::azure_state::{HealthState, ProvisioningState};
use crate::reason::Reason;

/// Everything known for one reconcile.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Azure's clock (the `Date` header of the latest response), never the pod's.
    pub now: Timestamp,
    /// None: Azure has no such cache.
    pub cache: Option<CacheFacts>,
    /// None when the spec has no encryption, or the key was not looked at.
    pub key: Option<KeyFacts>,
    /// None when the spec has no encryption, or the vault was not looked at.
    pub vault: Option<VaultFacts>,
    /// None for a system-assigned identity, or when the user-assigned one was not looked at.
    pub identity: Option<IdentityFacts>,
}

/// What Azure reported about the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheFacts {
    pub id: String,
    pub provisioning_state: ProvisioningState,
    pub health_state: Option<HealthState>,
    pub status_description: Option<String>,
    pub principal_id: Option<String>,
    pub tenant_id: Option<String>,
    pub created_at: Option<Timestamp>,
    pub key_url: Option<String>,
    /// `encryptionSettings.keyEncryptionKey.sourceVault.id`.
    pub key_vault_id: Option<String>,
    pub rotation_enabled: bool,
    pub tags: BTreeMap<String, String>,
    /// Where HPC clients mount the cache from.
    pub mount_addresses: Vec<String>,
}

impl CacheFacts {
    pub fn is_healthy(&self) -> bool {
        self.health_state == Some(HealthState::Healthy)
    }

    pub fn is_waiting_for_key(&self) -> bool {
        self.health_state == Some(HealthState::WaitingForKey)
    }

    /// `health.state` verbatim, or "unknown".
    pub fn health_text(&self) -> &str {
        match &self.health_state {
            Some(h) if !h.as_str().is_empty() => h.as_str(),
            _ => "unknown",
        }
    }
}

/// The verdict on the configured key (checked before any cache is created and on every key change).
#[derive(Clone, Debug, PartialEq)]
pub enum KeyFacts {
    /// Usable: `kid` is the versioned key URL.
    Valid { kid: String },
    /// Not usable, with a precise reason and message.
    Invalid { reason: Reason, message: String },
}

/// The verdict on the configured vault.
#[derive(Clone, Debug, PartialEq)]
pub enum VaultFacts {
    Usable {
        /// Soft delete and purge protection are both on.
        protected: bool,
        /// The vault uses Azure RBAC instead of access policies.
        rbac: bool,
    },
    Invalid {
        reason: Reason,
        message: String,
    },
}

/// The verdict on the user-assigned identity.
#[derive(Clone, Debug, PartialEq)]
pub enum IdentityFacts {
    /// It exists, as Azure reports it.
    Usable {
        principal_id: String,
        tenant_id: Option<String>,
        /// Whether it can already reach the key (None: not known).
        has_key_access: Option<bool>,
    },
    Invalid {
        reason: Reason,
        message: String,
    },
}

impl IdentityFacts {
    /// The identity's principal, when it is usable.
    pub fn principal_id(&self) -> Option<&str> {
        match self {
            IdentityFacts::Usable { principal_id, .. } => Some(principal_id),
            IdentityFacts::Invalid { .. } => None,
        }
    }

    /// True when Azure says it can already reach the key.
    pub fn has_key_access(&self) -> bool {
        matches!(self, IdentityFacts::Usable { has_key_access: Some(true), .. })
    }
}

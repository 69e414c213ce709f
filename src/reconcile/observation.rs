//! What one reconcile read from Azure, as Azure said it: the output of [`observe`](super::observe) (I/O) and the
//! input of [`facts`](super::facts) (pure). Nothing here is judged yet.

use hpcc_api::v1alpha1::{Encryption, HpcCacheSpec, IdentityType};
use hpcc_azure::{Cache, KeyBundle, UserAssignedIdentity, Vault};
use jiff::Timestamp;

/// Everything read for one object.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Azure's clock: the `Date` of the cache read.
    pub now: Timestamp,
    /// None: Azure has no such cache.
    pub cache: Option<Cache>,
    /// What the spec references; None when it references nothing (system-assigned identity, Microsoft-managed
    /// keys) or the object is being deleted.
    pub referenced: Option<Referenced>,
}

impl Observation {
    /// The vault as Azure reported it, when it was read.
    pub fn vault(&self) -> Option<&Vault> {
        match self.referenced.as_ref()?.vault.as_ref()? {
            VaultRead::Found { vault, .. } => Some(vault),
            _ => None,
        }
    }
}

/// What the reads of the referenced resources depend on, and nothing else: it is also the key under which they are
/// shared (see [`RecentReads`](super::reads::RecentReads)), so a read cannot depend on a field the key lacks.
#[derive(Clone, Debug, PartialEq)]
pub struct References {
    pub subscription_id: String,
    pub encryption: Option<Encryption>,
    pub user_assigned_identity_id: Option<String>,
    /// The namespace's `hpccache.io/allowed-vault-scopes`, if any.
    pub allowed_vault_scopes: Option<String>,
}

impl References {
    /// None when the spec references nothing that must be read.
    pub fn of(spec: &HpcCacheSpec, allowed_vault_scopes: Option<&str>) -> Option<Self> {
        let user_assigned = spec.identity.type_ == IdentityType::UserAssigned;
        if spec.encryption.is_none() && !user_assigned {
            return None;
        }
        Some(Self {
            subscription_id: spec.azure.subscription_id.clone(),
            encryption: spec.encryption.clone(),
            user_assigned_identity_id: spec.identity.user_assigned_identity_id.clone().filter(|_| user_assigned),
            allowed_vault_scopes: allowed_vault_scopes.map(str::to_string),
        })
    }

    pub fn cache_key(&self) -> String {
        format!("{self:?}")
    }
}

/// The referenced resources, as read.
#[derive(Clone, Debug)]
pub struct Referenced {
    /// None without `spec.encryption`.
    pub vault: Option<VaultRead>,
    /// None for a system-assigned identity.
    pub identity: Option<IdentityRead>,
}

#[derive(Clone, Debug)]
pub enum VaultRead {
    /// Outside the scopes the namespace may use: never read (the message says why).
    NotAllowed(String),
    /// `keyVaultId` is not an ARM id.
    BadId(String),
    NotFound,
    /// The operator may not read it (Azure's message).
    AccessDenied(String),
    Found {
        vault: Box<Vault>,
        key: KeyRead,
    },
}

#[derive(Clone, Debug)]
pub enum KeyRead {
    /// The vault reports no `vaultUri`: its keys cannot be read.
    NoVaultUri,
    NotFound {
        vault_uri: String,
    },
    /// The operator may not read it (Azure's message).
    AccessDenied {
        vault_uri: String,
        error: String,
    },
    Found(Box<KeyBundle>),
}

#[derive(Clone, Debug)]
pub enum IdentityRead {
    /// `userAssignedIdentityId` is not an ARM id.
    BadId(String),
    NotFound,
    Found {
        identity: UserAssignedIdentity,
        /// On an RBAC vault: whether the identity holds the crypto role there (None on an access-policy vault,
        /// whose policies are in the vault itself).
        role_assigned: Option<bool>,
    },
}

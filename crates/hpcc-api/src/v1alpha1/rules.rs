//! CEL rules the apiserver enforces on `HpcCache` (`x-kubernetes-validations`). One place, so tests, docs and the
//! schema agree. Immutability of single fields is declared next to each field in `api/mod.rs`.

/// Customer- vs Microsoft-managed keys cannot be switched after creation.
pub const ENCRYPTION_PRESENCE_IMMUTABLE: &str = "has(self.encryption) == has(oldSelf.encryption)";
pub const ENCRYPTION_PRESENCE_IMMUTABLE_MSG: &str = "spec.encryption cannot be added or removed after creation: Azure cannot switch a cache between customer-managed and Microsoft-managed keys";

/// HPC Cache needs the Key Vault in the cache's subscription; this also stops a namespace from pointing the
/// operator's identity at a vault in some other subscription.
pub const VAULT_IN_CACHE_SUBSCRIPTION: &str = "!has(self.encryption) || self.encryption.keyVaultId.lowerAscii().startsWith('/subscriptions/' + self.azure.subscriptionId.lowerAscii() + '/')";
pub const VAULT_IN_CACHE_SUBSCRIPTION_MSG: &str =
    "spec.encryption.keyVaultId must be a vault in the cache's subscription (spec.azure.subscriptionId)";

pub const USER_ASSIGNED_NEEDS_ID: &str = "self.type != 'UserAssigned' || has(self.userAssignedIdentityId)";
pub const USER_ASSIGNED_NEEDS_ID_MSG: &str =
    "spec.identity.userAssignedIdentityId is required when spec.identity.type is UserAssigned";

pub const ID_ONLY_FOR_USER_ASSIGNED: &str = "self.type == 'UserAssigned' || !has(self.userAssignedIdentityId)";
pub const ID_ONLY_FOR_USER_ASSIGNED_MSG: &str =
    "spec.identity.userAssignedIdentityId is only allowed when spec.identity.type is UserAssigned";

pub const VERSION_OR_ROTATION: &str = "has(self.keyVersion) || self.rotateToLatestKeyVersion";
pub const VERSION_OR_ROTATION_MSG: &str =
    "spec.encryption.keyVersion is required unless spec.encryption.rotateToLatestKeyVersion is true";

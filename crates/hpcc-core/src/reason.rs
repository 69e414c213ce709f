//! Every condition reason the operator writes, in one list. `kubectl get hpcc`, `kubectl wait`, alerts and runbooks
//! match on these strings: add a variant here (with a line on when it is used) rather than a string literal.

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// A condition reason (also the reason of the matching Warning event).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in the order they are documented.
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            /// The reason as it appears in `status.conditions[].reason`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            /// The one-line description above (the table in `docs/state-machine.md` is made from it).
            pub fn description(self) -> &'static str {
                match self {
                    $(Reason::$name => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }
    };
}

reasons! {
    // ---- progress (Reconciling=True) ----
    /// Seen for the first time; Azure has not been read for it yet.
    Accepted,
    /// Checking the key: it has not been read yet.
    Checking,
    /// Reading the key before anything is created.
    CheckingKey,
    /// Reading the Key Vault before anything is created.
    CheckingVault,
    /// Looking up the user-assigned identity.
    CheckingIdentity,
    /// Reading the storage account's role assignments (AmlFilesystem blob integration).
    CheckingBlobAccess,
    /// Turning on soft delete and purge protection on the vault (Automatic mode).
    EnablingPurgeProtection,
    /// Granting the cache's identity access to the key before the cache exists (user-assigned identity).
    Authorizing,
    /// Granting the cache's identity access to the key.
    Granting,
    /// The grant is made; Azure is picking up the key.
    GrantPropagating,
    /// The grant is made; the cache is still waiting for Azure to use the key.
    KeyAccessPropagating,
    /// Manual mode: a person must grant the principal access (before the deadline, for a cache).
    AwaitingManualGrant,
    /// grantBlobAccess Manual: a person must give the HPC Cache resource provider the storage roles.
    AwaitingBlobAccess,
    /// Azure has not reported the cache's identity yet.
    WaitingForIdentity,
    /// The cache is being created in Azure.
    Creating,
    /// The cache's key settings or tags are being brought to the spec.
    Updating,
    /// The cache is provisioned but Azure does not report it healthy.
    CacheNotHealthy,
    /// A cache that was healthy lost access to its key (revoked out of band).
    KeyAccessLost,
    /// The failed cache is deleted so that a new one can be created (onAuthorizationTimeout: Recreate).
    Recreating,
    /// Azure is deleting the cache (not at this operator's request).
    AzureDeleting,
    /// The object is being deleted and so is the Azure cache.
    DeletingCache,
    /// Revoking a key grant the operator made for a system-assigned identity.
    RevokingGrant,
    /// The object is being deleted; deletionPolicy is Orphan, so the Azure cache is kept.
    Orphaning,
    /// The object is being deleted; the Azure cache belongs to another object and is left alone.
    NotOwned,
    /// The object is being deleted and the Azure cache is gone.
    Deleted,
    /// The object is being deleted under reconcile-policy skip or detach-on-delete: the cache and grants stay.
    Detaching,
    /// reconcile-policy is skip: the operator reports what Azure says and writes nothing.
    ReconcileSkipped,
    /// An Azure call failed in a way that clears by itself; it is retried.
    AzureRetrying,
    // ---- done (Ready=True, KeyValid=True, KeyAuthorized=True) ----
    /// The cache is healthy and uses the key from the spec.
    Ready,
    /// The key is an enabled 2048-bit RSA key.
    KeyValid,
    /// The cache's identity can use the key.
    KeyAuthorized,
    /// The user-assigned identity can already use the key.
    IdentityAuthorized,
    /// The cache uses Microsoft-managed keys (no spec.encryption).
    MicrosoftManagedKey,
    // ---- needs a person (Stalled=True) ----
    /// The key is not RSA.
    KeyNotRSA,
    /// The key is not 2048 bits.
    KeySizeUnsupported,
    /// The key's permitted operations (key_ops) lack wrapKey or unwrapKey.
    KeyOperationsMissing,
    /// The key is disabled.
    KeyDisabled,
    /// The key's not-before time has not come yet.
    KeyNotYetValid,
    /// The key has expired.
    KeyExpired,
    /// The key or key version does not exist.
    KeyNotFound,
    /// The operator's identity may not read the key.
    KeyAccessDenied,
    /// The vault reports no vaultUri, so its keys cannot be read.
    VaultUriMissing,
    /// The vault does not exist.
    VaultNotFound,
    /// The vault is in another region than the cache.
    VaultRegionMismatch,
    /// The operator's identity may not read the vault.
    VaultAccessDenied,
    /// The vault is outside the scopes the namespace may use.
    VaultNotAllowed,
    /// Manual mode: the vault needs soft delete and purge protection, which a person must turn on.
    VaultPurgeProtectionDisabled,
    /// spec.encryption.keyVaultId is not a valid ARM id.
    InvalidVaultId,
    /// spec.identity.userAssignedIdentityId is not a valid ARM id.
    InvalidIdentityId,
    /// The user-assigned identity does not exist.
    IdentityNotFound,
    /// The key was not authorized within Azure's 90-minute window (also when Azure has already failed the cache for it: a CMK cache that never had key access and is Failed past its deadline).
    AuthorizationWindowMissed,
    /// Azure reports provisioningState Failed or Canceled (for any other reason than a missed window).
    ProvisioningFailed,
    /// Azure refused the create (e.g. the product's retirement); not retried until the spec changes.
    CreateRejected,
    /// Azure refused a request in a way that does not clear by itself.
    AzureRequestRejected,
    /// The Azure cache carries another object's owner tag; this object never touches it.
    CacheOwnedByAnother,
    /// An Azure cache of this name exists without an owner tag; it is adopted only with hpccache.io/adopt: "true".
    CacheExistsNotOwned,
    /// The hpccache.io/reconcile-policy annotation has a value the operator does not know; nothing is written.
    InvalidReconcilePolicy,
    /// --require-namespace-credentials is set and the namespace has no Secret hpccache-credential; Azure is not called.
    NamespaceCredentialMissing,
    /// The namespace's Secret hpccache-credential lacks a key or holds a malformed value; Azure is not called.
    NamespaceCredentialInvalid,
    /// Entra ID refused the credential in the namespace's Secret hpccache-credential (e.g. invalid_client); ARM and
    /// Key Vault are not called.
    NamespaceCredentialRejected,
    // ---- events only ----
    /// Event: an Azure call failed.
    AzureError,
    /// Event: a grant the operator made could not be revoked; remove it by hand.
    GrantNotRevoked,
    /// Event (Manual mode): less than 30 minutes are left to grant access.
    AuthorizationDeadlineApproaching,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of reasons in `docs/state-machine.md` (between its `reasons` markers), generated from [`Reason::ALL`].
    fn markdown_table() -> String {
        let mut out = String::from("| reason | when |\n|---|---|\n");
        for r in Reason::ALL {
            out.push_str(&format!("| `{r}` | {} |\n", r.description()));
        }
        out
    }

    #[test]
    fn the_documented_reason_table_is_current() {
        // HPCC_BLESS=1 cargo test -p hpcc-core rewrites the table; without it, a stale table fails.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/state-machine.md");
        let doc = std::fs::read_to_string(path).expect("docs/state-machine.md");
        let (begin, end) = ("<!-- reasons:begin -->\n", "<!-- reasons:end -->");
        let start = doc.find(begin).expect("reasons:begin marker") + begin.len();
        let stop = doc.find(end).expect("reasons:end marker");
        let want = markdown_table();
        if doc[start..stop] != want {
            if std::env::var_os("HPCC_BLESS").is_some() {
                std::fs::write(path, format!("{}{want}{}", &doc[..start], &doc[stop..])).unwrap();
            } else {
                panic!(
                    "docs/state-machine.md lists other reasons than Reason::ALL; run HPCC_BLESS=1 cargo test -p hpcc-core"
                );
            }
        }
    }

    #[test]
    fn every_reason_is_described() {
        for r in Reason::ALL {
            assert!(!r.description().is_empty(), "{r} has no description");
        }
        assert_eq!(Reason::KeyNotRSA.as_str(), "KeyNotRSA");
    }
}

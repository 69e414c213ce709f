//! The state machine: a pure function from (spec, last status, what Azure reported, Azure's clock) to the next
//! status and at most one action. No I/O here; the controller observes, calls [`decide`], records the returned
//! status (intent first) and then performs the action.
//!
//! ```text
//! Pending ──(valid; UA identity lacks access; Automatic)──> Authorizing ──> Creating
//! Pending ──(valid)──> Creating ──(health WaitingForKey)──> WaitingForKey ──(Automatic)──> Authorizing ──> Ready
//! WaitingForKey/Authorizing ──(deadline passed or provisioningState Failed)──> Failed
//! Failed ──(Recreate, within maxRecreations)──> Deleting old cache ──> Creating
//! Ready ──(key settings changed)──> Updating ──> Ready
//! any ──(object deleted)──> Deleting ──(deletionPolicy)──> gone
//! ```

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use hpcc_api::v1alpha1::{
    AuthorizationTimeoutPolicy, ConditionStatus as S, ConditionType as C, DeletionPolicy, GrantKind, GrantRecord,
    HpcCacheSpec, HpcCacheStatus, IdentityType, KeyAccess, Phase, set_condition,
};

/// Azure fails a CMK cache whose identity is not authorized within this window of its creation.
pub const AUTHORIZATION_WINDOW: SignedDuration = SignedDuration::from_mins(90);
/// Manual mode: Warning events start when less than this is left.
pub const DEADLINE_WARNING: SignedDuration = SignedDuration::from_mins(30);

/// Azure's provisioning and health states the machine reacts to (verbatim ARM strings).
pub mod azure_state {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const CANCELED: &str = "Canceled";
    pub const DELETING: &str = "Deleting";
    pub const WAITING_FOR_KEY: &str = "WaitingForKey";
    pub const HEALTHY: &str = "Healthy";
}

/// What Azure reported about the cache.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CacheFacts {
    pub id: String,
    pub provisioning_state: String,
    pub health_state: Option<String>,
    pub status_description: Option<String>,
    pub principal_id: Option<String>,
    pub tenant_id: Option<String>,
    pub created_at: Option<Timestamp>,
    pub key_url: Option<String>,
    /// `encryptionSettings.keyEncryptionKey.sourceVault.id`.
    pub key_vault_id: Option<String>,
    pub rotation_enabled: bool,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// The verdict on the configured key (checked before any cache is created and on every key change).
#[derive(Clone, Debug, PartialEq)]
pub enum KeyFacts {
    /// Usable: `kid` is the versioned key URL.
    Valid { kid: String },
    /// Not usable, with a precise reason (e.g. `KeyNotRSA`) and message.
    Invalid { reason: String, message: String },
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
        reason: String,
        message: String,
    },
}

/// The user-assigned identity, as Azure reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityFacts {
    pub principal_id: String,
    pub tenant_id: Option<String>,
    /// Whether it can already reach the key (None: unknown, e.g. an RBAC vault).
    pub has_key_access: Option<bool>,
}

/// Everything the controller observed for one reconcile.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Azure's clock (the `Date` header of the latest response), never the pod's.
    pub now: Timestamp,
    pub cache: Option<CacheFacts>,
    /// None when the spec has no encryption, or the key was not looked at.
    pub key: Option<KeyFacts>,
    pub vault: Option<VaultFacts>,
    /// Some for a user-assigned identity that exists; an error otherwise is reported via `identity_error`.
    pub identity: Option<IdentityFacts>,
    pub identity_error: Option<(String, String)>,
}

/// Poll intervals (real time) the controller runs with.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often to look again in transitional phases.
    pub poll: Duration,
    /// How often to look again when nothing is expected to change (Ready, Stalled).
    pub resync: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { poll: Duration::from_secs(15), resync: Duration::from_secs(600) }
    }
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    None,
    /// PATCH the vault: soft delete and purge protection on (Azure requires both for CMK).
    EnableVaultProtection,
    /// Give `principal_id` get/wrapKey/unwrapKey on the key (access policy or role assignment).
    Grant(GrantRecord),
    /// PUT the cache with this key URL (None: Microsoft-managed keys).
    CreateCache {
        key_url: Option<String>,
    },
    /// PATCH the cache's encryption settings (and tags).
    UpdateCache {
        key_url: Option<String>,
    },
    /// DELETE the Azure cache.
    DeleteCache,
    /// Remove a grant the operator made.
    RevokeGrant(GrantRecord),
    /// Let Kubernetes delete the object.
    RemoveFinalizer,
}

/// How the key settings and tags of an existing cache compare with the spec.
enum Drift {
    /// In sync.
    None,
    /// Cannot be applied; already reported as a condition.
    Reported,
    /// The next step towards the spec.
    Do(Action),
}

/// A Kubernetes event to emit.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub status: HpcCacheStatus,
    pub action: Action,
    pub requeue_after: Duration,
    pub events: Vec<Event>,
}

/// The inputs of [`decide`].
pub struct Input<'a> {
    pub spec: &'a HpcCacheSpec,
    pub generation: Option<i64>,
    pub status: &'a HpcCacheStatus,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// The ARM id of the cache.
    pub cache_id: &'a str,
    /// `namespace/name` of the object, written to the cache's [`OWNER_TAG`].
    pub owner: &'a str,
    pub observed: &'a Observed,
    pub timing: Timing,
}

/// Azure tag naming the `HpcCache` (namespace/name) that owns a cache, so two objects never manage one cache.
pub const OWNER_TAG: &str = "hpccache.io-owner";

/// The tags the cache should carry: the spec's plus the owner tag.
pub fn desired_tags(spec: &HpcCacheSpec, owner: &str) -> std::collections::BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    tags.insert(OWNER_TAG.to_string(), owner.to_string());
    tags
}

/// Stalled reason that blocks further create attempts until the spec changes (e.g. Azure's product retirement).
pub const REASON_CREATE_REJECTED: &str = "CreateRejected";

/// Decides the next step. Pure and total: every input gives a decision, never a panic.
pub fn decide(input: &Input) -> Decision {
    let mut d = Draft::new(input);
    if let Some(other) = input.observed.cache.as_ref().and_then(|c| d.owned_elsewhere(c)) {
        d.not_ours(&other);
    } else if input.deleting {
        d.deleting();
    } else {
        match &input.observed.cache {
            None => d.no_cache(),
            Some(cache) => d.cache_exists(cache),
        }
    }
    d.finish()
}

/// The machine's reaction to a failed action: a terminal rejection stalls (no retry loop); anything else is
/// retried after Azure's `Retry-After` or the poll interval.
pub fn action_failed(
    status: &HpcCacheStatus,
    generation: Option<i64>,
    action: &Action,
    error: &ActionError,
    now: Timestamp,
    timing: Timing,
) -> Decision {
    let mut status = status.clone();
    let t = Time(now);
    let what = action_name(action);
    let mut events = vec![];
    match action {
        // The grant was recorded as intent; it did not happen, so it must not count as made.
        Action::Grant(g) => status.grants.retain(|r| r.made || !r.same_as(g)),
        // A grant that cannot be revoked must not block deletion forever: forget it and say so.
        Action::RevokeGrant(g) if !error.retryable => {
            status.grants.retain(|r| !r.same_as(g));
            events.push(Event {
                warning: true,
                reason: "GrantNotRevoked".into(),
                message: format!(
                    "could not revoke the key grant of {} on {} ({}); remove it by hand",
                    g.principal_id, g.vault_id, error.code
                ),
            });
        }
        _ => {}
    }
    // While a grant is outstanding Azure's window is running: look again soon, whatever the error.
    let deadline_running = matches!(action, Action::Grant(_) | Action::EnableVaultProtection);
    let message = format!("{what} failed: {} ({})", error.message, error.code);
    let requeue_after = if error.retryable {
        set_condition(&mut status.conditions, C::Reconciling, S::True, "AzureRetrying", &message, generation, &t);
        error.retry_after.unwrap_or(timing.poll)
    } else {
        let reason = match action {
            Action::CreateCache { .. } if error.status.is_some_and(|s| (400..500).contains(&s)) => {
                REASON_CREATE_REJECTED
            }
            _ => "AzureRequestRejected",
        };
        if reason == REASON_CREATE_REJECTED && status.phase == Some(Phase::Creating) {
            status.phase = Some(Phase::Failed);
            status.create_requested_at = None;
        }
        set_condition(&mut status.conditions, C::Stalled, S::True, reason, &message, generation, &t);
        set_condition(&mut status.conditions, C::Ready, S::False, reason, &message, generation, &t);
        set_condition(&mut status.conditions, C::Reconciling, S::False, reason, &message, generation, &t);
        if deadline_running { timing.poll } else { timing.resync }
    };
    events.insert(0, Event { warning: true, reason: "AzureError".into(), message });
    Decision { status, action: Action::None, requeue_after, events }
}

/// Updates the status after an action succeeded (what cannot be recorded as intent beforehand).
pub fn action_succeeded(status: &mut HpcCacheStatus, action: &Action) {
    match action {
        Action::Grant(g) => {
            for r in status.grants.iter_mut().filter(|r| r.same_as(g)) {
                r.made = true;
            }
        }
        Action::RevokeGrant(g) => status.grants.retain(|r| !r.same_as(g)),
        _ => {}
    }
}

/// An Azure error, reduced to what the machine needs.
#[derive(Clone, Debug)]
pub struct ActionError {
    /// Azure's HTTP status; None when the request never got an answer (transport, token, decoding).
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

fn action_name(a: &Action) -> &'static str {
    match a {
        // `action_failed` with no action: observing Azure failed.
        Action::None => "reading the cache's state from Azure",
        Action::EnableVaultProtection => "enabling vault purge protection",
        Action::Grant(_) => "granting key access",
        Action::CreateCache { .. } => "creating the cache",
        Action::UpdateCache { .. } => "updating the cache",
        Action::DeleteCache => "deleting the cache",
        Action::RevokeGrant(_) => "revoking key access",
        Action::RemoveFinalizer => "removing the finalizer",
    }
}

/// Checks an RSA key as Azure HPC Cache requires it: RSA (or RSA-HSM), 2048 bits, enabled, within nbf/exp.
pub fn check_key(
    kid: &str,
    kty: &str,
    rsa_bits: Option<usize>,
    enabled: bool,
    not_before: Option<Timestamp>,
    expires: Option<Timestamp>,
    now: Timestamp,
) -> KeyFacts {
    let invalid = |reason: &str, message: String| KeyFacts::Invalid { reason: reason.into(), message };
    if kty != "RSA" && kty != "RSA-HSM" {
        return invalid("KeyNotRSA", format!("key {kid} is of type {kty}; Azure HPC Cache needs a 2048-bit RSA key"));
    }
    if rsa_bits != Some(2048) {
        let bits = rsa_bits.map_or("unknown".to_string(), |b| b.to_string());
        return invalid(
            "KeySizeUnsupported",
            format!("key {kid} is {bits} bits; Azure HPC Cache needs exactly 2048 bits"),
        );
    }
    if !enabled {
        return invalid("KeyDisabled", format!("key {kid} is disabled; enable it in the Key Vault"));
    }
    if not_before.is_some_and(|nbf| now < nbf) {
        return invalid("KeyNotYetValid", format!("key {kid} is not valid before {}", not_before.unwrap_or(now)));
    }
    if let Some(exp) = expires.filter(|exp| now >= *exp) {
        return invalid("KeyExpired", format!("key {kid} expired at {exp}"));
    }
    KeyFacts::Valid { kid: kid.to_string() }
}

/// Checks a vault against the cache: same subscription and region (Azure refuses others).
pub fn check_vault(
    vault_location: &str,
    cache_location: &str,
    soft_delete: bool,
    purge_protection: bool,
    rbac: bool,
) -> VaultFacts {
    if !normalize_region(vault_location).eq_ignore_ascii_case(&normalize_region(cache_location)) {
        return VaultFacts::Invalid {
            reason: "VaultRegionMismatch".into(),
            message: format!(
                "the Key Vault is in {vault_location} but the cache is in {cache_location}; Azure HPC Cache needs a vault in the same region"
            ),
        };
    }
    VaultFacts::Usable { protected: soft_delete && purge_protection, rbac }
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

/// Builds the next status step by step.
struct Draft<'a> {
    input: &'a Input<'a>,
    status: HpcCacheStatus,
    action: Action,
    requeue_after: Duration,
    events: Vec<Event>,
    now: Time,
}

impl<'a> Draft<'a> {
    fn new(input: &'a Input<'a>) -> Self {
        let mut status = input.status.clone();
        status.observed_generation = input.generation;
        Self {
            input,
            status,
            action: Action::None,
            requeue_after: input.timing.poll,
            events: vec![],
            now: Time(input.observed.now),
        }
    }

    fn spec(&self) -> &HpcCacheSpec {
        self.input.spec
    }

    fn cond(&mut self, t: C, s: S, reason: &str, message: &str) {
        set_condition(&mut self.status.conditions, t, s, reason, message, self.input.generation, &self.now);
    }

    fn phase(&mut self, phase: Phase) {
        if self.status.phase != Some(phase) {
            let message = format!("phase {} -> {phase}", self.status.phase.unwrap_or_default());
            self.events.push(Event { warning: phase == Phase::Failed, reason: phase.to_string(), message });
        }
        self.status.phase = Some(phase);
    }

    /// A transitional state: Reconciling=True, Ready=False, Stalled=False.
    fn progressing(&mut self, phase: Phase, reason: &str, message: &str) {
        self.phase(phase);
        self.cond(C::Ready, S::False, reason, message);
        self.cond(C::Reconciling, S::True, reason, message);
        self.cond(C::Stalled, S::False, reason, message);
    }

    /// Needs a person: Stalled=True, Reconciling=False.
    fn stalled(&mut self, phase: Phase, reason: &str, message: &str) {
        self.phase(phase);
        self.cond(C::Ready, S::False, reason, message);
        self.cond(C::Reconciling, S::False, reason, message);
        self.cond(C::Stalled, S::True, reason, message);
        self.requeue_after = self.input.timing.resync;
        self.events.push(Event { warning: true, reason: reason.into(), message: message.into() });
    }

    fn finish(self) -> Decision {
        Decision { status: self.status, action: self.action, requeue_after: self.requeue_after, events: self.events }
    }

    /// The owner of an existing cache, when it is another object. A cache without the tag (made outside the
    /// operator) is adopted: the tag is added with the next update.
    fn owned_elsewhere(&self, cache: &CacheFacts) -> Option<String> {
        cache.tags.get(OWNER_TAG).filter(|o| o.as_str() != self.input.owner).cloned()
    }

    /// Another `HpcCache` manages this Azure cache: touch nothing, and let this object go when it is deleted.
    fn not_ours(&mut self, owner: &str) {
        let msg =
            format!("the Azure cache {} belongs to HpcCache {owner}; this object leaves it alone", self.input.cache_id);
        if self.input.deleting {
            self.progressing(Phase::Deleting, "NotOwned", &msg);
            self.action = Action::RemoveFinalizer;
            return;
        }
        self.stalled(Phase::Failed, "CacheOwnedByAnother", &msg);
    }

    fn recorded_sa_grant(&self) -> Option<GrantRecord> {
        self.status.grants.iter().find(|g| g.system_assigned).cloned()
    }

    /// Records the intent to grant (made: false) before the call; replaces an earlier record of the same grant.
    fn record_grant(&mut self, grant: &GrantRecord) {
        self.status.grants.retain(|r| !r.same_as(grant));
        self.status.grants.push(grant.clone());
    }

    // ---- object deletion ----------------------------------------------------------------------------------

    fn deleting(&mut self) {
        let msg = "the HpcCache is being deleted";
        if self.spec().deletion_policy == DeletionPolicy::Orphan {
            self.progressing(Phase::Deleting, "Orphaning", "deletionPolicy is Orphan: the Azure cache is kept");
            self.action = Action::RemoveFinalizer;
            return;
        }
        match &self.input.observed.cache {
            Some(c) if c.provisioning_state == azure_state::DELETING => {
                self.progressing(Phase::Deleting, "DeletingCache", "waiting for Azure to delete the cache");
            }
            Some(_) => {
                self.progressing(Phase::Deleting, "DeletingCache", msg);
                self.action = Action::DeleteCache;
            }
            None => {
                if let Some(grant) = self.recorded_sa_grant() {
                    self.progressing(
                        Phase::Deleting,
                        "RevokingGrant",
                        "revoking the key grant made for the cache's system-assigned identity",
                    );
                    self.action = Action::RevokeGrant(grant);
                } else {
                    self.progressing(Phase::Deleting, "Deleted", "the Azure cache is gone");
                    self.action = Action::RemoveFinalizer;
                }
            }
        }
    }

    // ---- no cache in Azure --------------------------------------------------------------------------------

    fn no_cache(&mut self) {
        // Forget the previous cache (deleted for re-creation or out of band); its system principal is gone too.
        if self.status.azure_resource_id.is_some() && self.status.create_requested_at.is_none() {
            self.status.principal_id = None;
            self.status.tenant_id = None;
            self.status.created_at = None;
            self.status.authorization_deadline = None;
            self.status.provisioning_state = None;
            self.status.health_state = None;
            self.status.active_key_url = None;
            self.status.authorized_at = None;
        }
        if let Some(grant) = self.recorded_sa_grant() {
            self.progressing(
                Phase::Deleting,
                "RevokingGrant",
                "revoking the key grant of the previous cache's identity",
            );
            self.action = Action::RevokeGrant(grant);
            return;
        }
        if self.create_blocked() {
            return;
        }
        // A recorded create_requested_at with no cache means the PUT may not have been sent (crash) or Azure does
        // not show it yet: re-sending is idempotent (same name), so the cache is never duplicated or lost.
        if matches!(self.input.observed.vault, Some(VaultFacts::Invalid { .. })) {
            // A vault that is unusable (or not allowed) is reported first: its key was never read.
            self.vault_ready_for_create();
            return;
        }
        let Some(key_url) = self.validated_key() else {
            return;
        };
        if self.spec().encryption.is_some() && !self.vault_ready_for_create() {
            return;
        }
        if self.spec().identity.type_ == IdentityType::UserAssigned && !self.user_assigned_ready() {
            return;
        }
        let id = self.input.cache_id.to_string();
        if self.status.create_requested_at.is_none() {
            self.status.create_requested_at = Some(self.now.clone());
        }
        self.status.azure_resource_id = Some(id);
        let message = if self.status.recreations > 0 {
            format!("creating the cache in Azure (re-creation {})", self.status.recreations)
        } else {
            "creating the cache in Azure".to_string()
        };
        self.progressing(Phase::Creating, "Creating", &message);
        self.action = Action::CreateCache { key_url };
    }

    /// A create Azure refused (e.g. product retirement) is not retried until the spec changes.
    fn create_blocked(&mut self) -> bool {
        let blocked = self.input.status.conditions.iter().any(|c| {
            c.type_ == "Stalled"
                && c.status == "True"
                && c.reason == REASON_CREATE_REJECTED
                && c.observed_generation == self.input.generation
        });
        if blocked {
            self.requeue_after = self.input.timing.resync;
        }
        blocked
    }

    /// Some(key url) when the key is usable (Some(None) for Microsoft-managed keys); None after reporting why not.
    fn validated_key(&mut self) -> Option<Option<String>> {
        if self.spec().encryption.is_none() {
            self.cond(C::KeyValid, S::True, "MicrosoftManagedKey", "the cache uses Microsoft-managed keys");
            return Some(None);
        }
        match self.input.observed.key.clone() {
            Some(KeyFacts::Valid { kid }) => {
                self.cond(C::KeyValid, S::True, "KeyValid", &format!("{kid} is an enabled 2048-bit RSA key"));
                Some(Some(kid))
            }
            Some(KeyFacts::Invalid { reason, message }) => {
                self.cond(C::KeyValid, S::False, &reason, &message);
                self.stalled(Phase::Pending, &reason, &message);
                None
            }
            None => {
                self.cond(C::KeyValid, S::Unknown, "Checking", "the key has not been checked yet");
                self.progressing(Phase::Pending, "CheckingKey", "checking the key and the vault");
                None
            }
        }
    }

    /// Vault problems stall; missing purge protection is fixed in Automatic mode and reported in Manual mode.
    fn vault_ready_for_create(&mut self) -> bool {
        match self.input.observed.vault.clone() {
            Some(VaultFacts::Usable { protected: true, .. }) => true,
            Some(VaultFacts::Usable { protected: false, .. }) => {
                if self.spec().key_access == KeyAccess::Automatic {
                    self.progressing(
                        Phase::Pending,
                        "EnablingPurgeProtection",
                        "turning on soft delete and purge protection on the Key Vault (required for customer-managed keys)",
                    );
                    self.action = Action::EnableVaultProtection;
                } else {
                    self.stalled(
                        Phase::Pending,
                        "VaultPurgeProtectionDisabled",
                        "the Key Vault needs soft delete and purge protection before the cache can be created; keyAccess is Manual, so turn them on (az keyvault update --enable-purge-protection true)",
                    );
                }
                false
            }
            Some(VaultFacts::Invalid { reason, message }) => {
                self.cond(C::KeyValid, S::False, &reason, &message);
                self.stalled(Phase::Pending, &reason, &message);
                false
            }
            None => {
                self.progressing(Phase::Pending, "CheckingVault", "checking the Key Vault");
                false
            }
        }
    }

    /// A user-assigned identity must exist; in Automatic mode it is granted access before the cache exists.
    fn user_assigned_ready(&mut self) -> bool {
        if let Some((reason, message)) = self.input.observed.identity_error.clone() {
            self.stalled(Phase::Pending, &reason, &message);
            return false;
        }
        let Some(identity) = self.input.observed.identity.clone() else {
            self.progressing(Phase::Pending, "CheckingIdentity", "looking up the user-assigned identity");
            return false;
        };
        self.status.principal_id = Some(identity.principal_id.clone());
        self.status.tenant_id = identity.tenant_id.clone();
        if self.spec().encryption.is_none() {
            return true;
        }
        let already = identity.has_key_access == Some(true) || self.grant_made_for(&identity.principal_id);
        if already {
            self.cond(C::KeyAuthorized, S::True, "IdentityAuthorized", "the user-assigned identity can use the key");
            return true;
        }
        if self.spec().key_access == KeyAccess::Manual {
            // Manual: the cache is created and waits for a person (the 90-minute clock starts).
            self.cond(
                C::KeyAuthorized,
                S::False,
                "AwaitingManualGrant",
                "the user-assigned identity has no access to the key yet",
            );
            return true;
        }
        let grant = self.grant_for(&identity.principal_id, identity.tenant_id.clone(), false);
        self.record_grant(&grant);
        self.cond(
            C::KeyAuthorized,
            S::False,
            "Granting",
            "granting the user-assigned identity access to the key before creating the cache",
        );
        self.progressing(
            Phase::Authorizing,
            "Authorizing",
            "granting the user-assigned identity access to the key before creating the cache",
        );
        self.action = Action::Grant(grant);
        false
    }

    /// Whether Azure accepted a grant for `principal` on the spec's vault (a record still marked intended may
    /// never have been sent: the operator could have died in between, so it is sent again).
    fn grant_made_for(&self, principal: &str) -> bool {
        let vault = self.spec().encryption.as_ref().map(|e| e.key_vault_id.as_str()).unwrap_or_default();
        self.status
            .grants
            .iter()
            .any(|g| g.made && g.principal_id.eq_ignore_ascii_case(principal) && g.vault_id.eq_ignore_ascii_case(vault))
    }

    fn grant_for(&self, principal: &str, tenant: Option<String>, system_assigned: bool) -> GrantRecord {
        let rbac = matches!(self.input.observed.vault, Some(VaultFacts::Usable { rbac: true, .. }));
        GrantRecord {
            vault_id: self.spec().encryption.as_ref().map(|e| e.key_vault_id.clone()).unwrap_or_default(),
            principal_id: principal.to_string(),
            tenant_id: tenant,
            kind: if rbac { GrantKind::RoleAssignment } else { GrantKind::AccessPolicy },
            system_assigned,
            made: false,
        }
    }

    // ---- the cache exists ---------------------------------------------------------------------------------

    fn cache_exists(&mut self, cache: &CacheFacts) {
        self.status.azure_resource_id = Some(cache.id.clone());
        self.status.provisioning_state = Some(cache.provisioning_state.clone());
        self.status.health_state = cache.health_state.clone();
        self.status.active_key_url = cache.key_url.clone();
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
            self.cond(C::KeyValid, S::True, "MicrosoftManagedKey", "the cache uses Microsoft-managed keys");
        }
        let deadline = created_at.map(|c| c + AUTHORIZATION_WINDOW);
        let state = cache.provisioning_state.as_str();
        let health = cache.health_state.as_deref().unwrap_or_default();

        if state == azure_state::DELETING {
            let recreating = self.status.phase == Some(Phase::Deleting);
            let reason = if recreating { "Recreating" } else { "AzureDeleting" };
            self.status.authorization_deadline = None;
            self.progressing(Phase::Deleting, reason, "Azure is deleting the cache");
            return;
        }
        // Once Azure reported the cache healthy with its key, the 90-minute window is over for good: later
        // trouble (a failed update, lost key access) is reported, never answered by deleting the cache.
        let authorized = self.status.authorized_at.is_some();
        if state == azure_state::FAILED || state == azure_state::CANCELED {
            if authorized {
                let detail = cache.status_description.as_deref().unwrap_or("no details");
                let msg = format!("Azure reports provisioningState {state} ({detail}); the cache is kept as it is");
                self.stalled(Phase::Failed, "ProvisioningFailed", &msg);
            } else {
                self.failed(cache, "the cache's provisioningState is Failed");
            }
            return;
        }
        if authorized && health == azure_state::WAITING_FOR_KEY {
            self.key_access_lost(cache);
            return;
        }
        if !authorized
            && (health == azure_state::WAITING_FOR_KEY
                || (state != azure_state::SUCCEEDED && self.grant_outstanding(cache)))
        {
            self.status.authorization_deadline = deadline.map(Time);
            if let Some(deadline) = deadline.filter(|d| self.input.observed.now >= *d) {
                self.failed(cache, &format!("the key was not authorized before the deadline {deadline}"));
                return;
            }
            if health == azure_state::WAITING_FOR_KEY {
                self.waiting_for_key(cache, deadline);
                return;
            }
        }
        if state != azure_state::SUCCEEDED {
            let (phase, reason) = match self.status.phase {
                _ if authorized => (Phase::Updating, "Updating"),
                Some(Phase::Updating) => (Phase::Updating, "Updating"),
                // The grant is made; Azure is picking up the key.
                Some(Phase::Authorizing | Phase::WaitingForKey) => (Phase::Authorizing, "KeyAccessPropagating"),
                _ => (Phase::Creating, "Creating"),
            };
            let msg = format!("Azure reports provisioningState {state}, health {}", or_unknown(health));
            if phase == Phase::Authorizing {
                self.cond(
                    C::KeyAuthorized,
                    S::Unknown,
                    "GrantPropagating",
                    "access is granted; Azure is picking up the key",
                );
            }
            self.progressing(phase, reason, &msg);
            return;
        }
        // Succeeded.
        self.status.authorization_deadline = None;
        if self.spec().encryption.is_some() {
            self.cond(C::KeyAuthorized, S::True, "KeyAuthorized", "the cache's identity can use the key");
        }
        if health == azure_state::HEALTHY && self.status.authorized_at.is_none() {
            self.status.authorized_at = Some(self.now.clone());
        }
        match self.drift(cache) {
            Drift::None => {}
            Drift::Reported => return,
            Drift::Do(action) => {
                let why = match &action {
                    Action::UpdateCache { .. } => "applying the key settings and tags from the spec",
                    Action::EnableVaultProtection => "turning on purge protection on the new Key Vault",
                    _ => "granting the cache's identity access to the new Key Vault",
                };
                self.progressing(Phase::Updating, "Updating", why);
                self.action = action;
                return;
            }
        }
        if health != azure_state::HEALTHY {
            let msg = format!("the cache is provisioned but its health is {}", or_unknown(health));
            let phase = if authorized { Phase::Ready } else { Phase::Creating };
            self.progressing(phase, "CacheNotHealthy", &msg);
            return;
        }
        self.phase(Phase::Ready);
        let msg = match &cache.key_url {
            Some(k) => format!("the cache is healthy and encrypted with {k}"),
            None => "the cache is healthy".to_string(),
        };
        self.cond(C::Ready, S::True, "Ready", &msg);
        self.cond(C::Reconciling, S::False, "Ready", &msg);
        self.cond(C::Stalled, S::False, "Ready", &msg);
        self.requeue_after = self.input.timing.resync;
    }

    /// A cache that was authorized is waiting for its key again (access revoked out of band): grant again in
    /// Automatic mode, ask a person in Manual mode. No deadline applies and the cache is never deleted.
    fn key_access_lost(&mut self, cache: &CacheFacts) {
        self.status.authorization_deadline = None;
        let principal = self.cache_principal(cache);
        let Some(principal) = principal else {
            self.progressing(Phase::WaitingForKey, "WaitingForIdentity", "Azure has not reported the cache's identity");
            return;
        };
        let msg = format!("the cache lost access to its key; principal {principal} needs get, wrapKey and unwrapKey");
        self.cond(C::KeyAuthorized, S::False, "KeyAccessLost", &msg);
        if self.spec().key_access == KeyAccess::Manual {
            self.progressing(Phase::WaitingForKey, "KeyAccessLost", &msg);
            self.events.push(Event { warning: true, reason: "KeyAccessLost".into(), message: msg });
            return;
        }
        if let Some(VaultFacts::Invalid { reason, message }) = self.input.observed.vault.clone() {
            self.stalled(Phase::WaitingForKey, &reason, &format!("cannot grant access again: {message}"));
            return;
        }
        let system_assigned = self.spec().identity.type_ == IdentityType::SystemAssigned;
        let grant = self.grant_for(&principal, cache.tenant_id.clone(), system_assigned);
        self.record_grant(&grant);
        self.progressing(Phase::WaitingForKey, "KeyAccessLost", &format!("{msg}; granting it again"));
        self.action = Action::Grant(grant);
    }

    /// The identity that must be trusted: the cache's system-assigned one, or the user-assigned one.
    fn cache_principal(&self, cache: &CacheFacts) -> Option<String> {
        match self.spec().identity.type_ {
            IdentityType::SystemAssigned => cache.principal_id.clone(),
            IdentityType::UserAssigned => self.input.observed.identity.as_ref().map(|i| i.principal_id.clone()),
        }
    }

    /// The cache waits for a key grant we have not seen confirmed yet.
    fn grant_outstanding(&self, cache: &CacheFacts) -> bool {
        self.spec().encryption.is_some()
            && self.spec().identity.type_ == IdentityType::SystemAssigned
            && cache.health_state.as_deref() != Some(azure_state::HEALTHY)
    }

    fn waiting_for_key(&mut self, cache: &CacheFacts, deadline: Option<Timestamp>) {
        let principal = match self.spec().identity.type_ {
            IdentityType::SystemAssigned => cache.principal_id.clone(),
            IdentityType::UserAssigned => self.input.observed.identity.as_ref().map(|i| i.principal_id.clone()),
        };
        let left = deadline.map(|d| d.duration_since(self.input.observed.now));
        let left_text = left.map_or("unknown time".to_string(), format_left);
        let deadline_text = deadline.map_or("unknown".to_string(), |d| d.to_string());
        // Look again well before the deadline: at most a quarter of the time left (floor: a second, or the poll).
        if let Some(left) = left {
            let quarter = Duration::try_from(left / 4).unwrap_or_default();
            let floor = self.input.timing.poll.min(Duration::from_secs(1));
            self.requeue_after = self.input.timing.poll.min(quarter).max(floor);
        }
        let Some(principal) = principal else {
            self.progressing(
                Phase::WaitingForKey,
                "WaitingForIdentity",
                "Azure has not reported the cache's identity yet",
            );
            return;
        };
        if self.spec().key_access == KeyAccess::Manual {
            let msg = format!(
                "grant principal {principal} get, wrapKey and unwrapKey on key {} in vault {} before {deadline_text} ({left_text} left)",
                self.spec().encryption.as_ref().map(|e| e.key_name.as_str()).unwrap_or_default(),
                self.spec().encryption.as_ref().map(|e| e.key_vault_id.as_str()).unwrap_or_default(),
            );
            self.cond(C::KeyAuthorized, S::False, "AwaitingManualGrant", &msg);
            self.progressing(Phase::WaitingForKey, "AwaitingManualGrant", &msg);
            if left.is_some_and(|l| l <= DEADLINE_WARNING) {
                self.events.push(Event {
                    warning: true,
                    reason: "AuthorizationDeadlineApproaching".into(),
                    message: msg,
                });
            }
            return;
        }
        if let Some(VaultFacts::Invalid { reason, message }) = self.input.observed.vault.clone() {
            self.cond(C::KeyAuthorized, S::False, &reason, &message);
            self.stalled(Phase::WaitingForKey, &reason, &format!("cannot grant access: {message}"));
            return;
        }
        let system_assigned = self.spec().identity.type_ == IdentityType::SystemAssigned;
        if self.grant_made_for(&principal) {
            let msg = format!("access granted to {principal}; waiting for Azure to pick up the key ({left_text} left)");
            self.cond(C::KeyAuthorized, S::Unknown, "GrantPropagating", &msg);
            self.progressing(Phase::Authorizing, "KeyAccessPropagating", &msg);
            return;
        }
        if matches!(self.input.observed.vault, Some(VaultFacts::Usable { protected: false, .. })) {
            self.progressing(
                Phase::Authorizing,
                "EnablingPurgeProtection",
                "turning on soft delete and purge protection on the Key Vault",
            );
            self.action = Action::EnableVaultProtection;
            return;
        }
        let grant = self.grant_for(&principal, cache.tenant_id.clone(), system_assigned);
        let msg = format!("granting {principal} access to the key ({left_text} left before {deadline_text})");
        self.record_grant(&grant);
        self.cond(C::KeyAuthorized, S::False, "Granting", &msg);
        // The phase says what Azure reports until the grant is made; then Authorizing until Azure picks it up.
        self.progressing(Phase::WaitingForKey, "Granting", &msg);
        self.action = Action::Grant(grant);
    }

    fn failed(&mut self, cache: &CacheFacts, why: &str) {
        let detail = cache.status_description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        let recreate = self.spec().on_authorization_timeout == AuthorizationTimeoutPolicy::Recreate;
        if recreate && self.status.recreations < self.spec().max_recreations {
            // Count the re-creation once: the phase is recorded before the DELETE is sent.
            if self.status.phase != Some(Phase::Deleting) {
                self.status.recreations += 1;
                self.events.push(Event {
                    warning: true,
                    reason: "Recreating".into(),
                    message: format!(
                        "{why}{detail}; deleting it to create a new one (re-creation {} of at most {})",
                        self.status.recreations,
                        self.spec().max_recreations
                    ),
                });
            }
            self.cond(C::KeyAuthorized, S::False, "AuthorizationWindowMissed", why);
            self.progressing(Phase::Deleting, "Recreating", &format!("{why}; re-creating the cache"));
            self.action = Action::DeleteCache;
            return;
        }
        let reason = if why.contains("deadline") { "AuthorizationWindowMissed" } else { "ProvisioningFailed" };
        let hint = if recreate {
            format!("; the re-creation limit ({}) is reached", self.spec().max_recreations)
        } else {
            "; onAuthorizationTimeout is Fail: delete and re-create the HpcCache, or set onAuthorizationTimeout: Recreate".to_string()
        };
        let msg = format!("{why}{detail}{hint}");
        if self.spec().encryption.is_some() && reason == "AuthorizationWindowMissed" {
            self.cond(C::KeyAuthorized, S::False, reason, &msg);
        }
        self.status.authorization_deadline = None;
        self.stalled(Phase::Failed, reason, &msg);
    }

    /// What, if anything, brings the cache's key settings and tags to the spec.
    fn drift(&mut self, cache: &CacheFacts) -> Drift {
        let tags_differ = cache.tags != desired_tags(self.spec(), self.input.owner);
        let Some(enc) = self.spec().encryption.clone() else {
            return if tags_differ { Drift::Do(Action::UpdateCache { key_url: None }) } else { Drift::None };
        };
        // The spec points at a vault or key that cannot be used: the cache keeps its key, and says why.
        if let Some(VaultFacts::Invalid { reason, message }) = self.input.observed.vault.clone() {
            self.cond(C::KeyValid, S::False, &reason, &message);
            self.stalled(Phase::Ready, &reason, &format!("the cache keeps its current key: {message}"));
            return Drift::Reported;
        }
        let desired = match self.input.observed.key.clone() {
            Some(KeyFacts::Valid { kid }) => kid,
            Some(KeyFacts::Invalid { reason, message }) => {
                self.cond(C::KeyValid, S::False, &reason, &message);
                self.stalled(Phase::Ready, &reason, &format!("the cache keeps its current key: {message}"));
                return Drift::Reported;
            }
            None => return Drift::None,
        };
        self.cond(C::KeyValid, S::True, "KeyValid", &format!("{desired} is an enabled 2048-bit RSA key"));
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
            let ua_trusted = self.input.observed.identity.as_ref().is_some_and(|i| i.has_key_access == Some(true));
            if let Some(principal) = self.cache_principal(cache).filter(|p| !ua_trusted && !self.grant_made_for(p)) {
                if matches!(self.input.observed.vault, Some(VaultFacts::Usable { protected: false, .. })) {
                    return Drift::Do(Action::EnableVaultProtection);
                }
                let system_assigned = self.spec().identity.type_ == IdentityType::SystemAssigned;
                let grant = self.grant_for(&principal, cache.tenant_id.clone(), system_assigned);
                self.record_grant(&grant);
                return Drift::Do(Action::Grant(grant));
            }
        }
        // With rotation on and the same key, keep the version Azure rotated to rather than rolling it back.
        let key_url = if enc.rotate_to_latest_key_version && same_key && !actual.is_empty() { actual } else { desired };
        Drift::Do(Action::UpdateCache { key_url: Some(key_url) })
    }
}

/// `https://v.vault.azure.net/keys/name/version` → `https://v.vault.azure.net/keys/name`.
fn strip_version(kid: &str) -> &str {
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

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "unknown" } else { s }
}

fn format_left(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    format!("{}m{:02}s", secs / 60, secs % 60)
}

#[cfg(test)]
mod tests;

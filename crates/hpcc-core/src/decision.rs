//! The machine's inputs and outputs: [`Input`] in, a [`Decision`] (next status, at most one [`Action`], when to
//! look again, events) out.

use std::time::Duration;

use hpcc_api::v1alpha1::{GrantRecord, HpcCacheSpec, HpcCacheStatus};
use jiff::SignedDuration;

use crate::facts::Facts;
use crate::reason::Reason;

/// Azure fails a CMK cache whose identity is not authorized within this window of its creation.
pub const AUTHORIZATION_WINDOW: SignedDuration = SignedDuration::from_mins(90);
/// Manual mode: Warning events start when less than this is left.
pub const DEADLINE_WARNING: SignedDuration = SignedDuration::from_mins(30);

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

/// A Kubernetes event to emit.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub warning: bool,
    /// A [`Reason`], or the phase a phase-change event announces.
    pub reason: String,
    pub message: String,
}

impl Event {
    pub fn warning(reason: Reason, message: impl Into<String>) -> Self {
        Self { warning: true, reason: reason.as_str().into(), message: message.into() }
    }
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
    pub facts: &'a Facts,
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

/// An Azure error, reduced to what the machine needs. Whether it is worth retrying was decided by the Azure
/// client's one classifier (`hpcc_azure::AzureError::classify`), never here.
#[derive(Clone, Debug)]
pub struct ActionError {
    /// Azure's HTTP status; None when there is no answer from Azure (transport, token, decoding) or nothing was
    /// sent (the spec's input could not be).
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

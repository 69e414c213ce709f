//! The machine's inputs and outputs: [`Input`] in, a [`Decision`] (next status, at most one [`Action`], when to
//! look again, events) out.

use std::time::Duration;

use hpcc_api::v1alpha1::{GrantRecord, HpcCacheSpec, HpcCacheStatus, ReconcilePolicy};
use jiff::SignedDuration;

use crate::facts::Facts;
use crate::reason::Reason;

/// Azure fails a CMK cache whose identity is not authorized within this window of its creation.
pub const AUTHORIZATION_WINDOW: SignedDuration = SignedDuration::from_mins(90);
/// Manual mode: a Warning event is sent once as each of these is crossed (minutes left before the deadline).
pub const DEADLINE_WARNINGS: [i32; 3] = [30, 10, 5];

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

/// The one thing to do next, for either kind (`HpcCache`: a cache; `AmlFilesystem`: a file system).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    None,
    /// PATCH the vault: soft delete and purge protection on (Azure requires both for CMK).
    EnableVaultProtection,
    /// Give a principal access: the key (get/wrapKey/unwrapKey by access policy or role assignment), or a role on
    /// a storage account (blob integration).
    Grant(GrantRecord),
    /// PUT the Azure resource with this key URL (None: Microsoft-managed keys).
    Create {
        key_url: Option<String>,
    },
    /// PATCH the resource's encryption settings (and tags).
    Update {
        key_url: Option<String>,
    },
    /// DELETE the Azure resource.
    Delete,
    /// Remove a grant the operator made.
    RevokeGrant(GrantRecord),
    /// Let Kubernetes delete the object.
    RemoveFinalizer,
}

impl Action {
    /// Whether the action writes to Azure (everything but `None` and the Kubernetes-side `RemoveFinalizer`).
    pub fn writes_azure(&self) -> bool {
        !matches!(self, Action::None | Action::RemoveFinalizer)
    }
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

/// The machine's answer: the next status (of an `HpcCache`, or `S` of another kind), at most one action, when to
/// look again, and the events to publish.
#[derive(Clone, Debug)]
pub struct Decision<S = HpcCacheStatus> {
    pub status: S,
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
    /// `cluster/namespace/name` of the object, written to the cache's [`OWNER_TAG`] (see [`owner_tag`]).
    pub owner: &'a str,
    /// `namespace/name`: the owner tag written before the cluster was part of it, still accepted as this object's
    /// (and rewritten to `owner` with the next update).
    pub legacy_owner: &'a str,
    /// The object's reconcile policy; Err(message) for an annotation value the operator does not know (then
    /// nothing is written to Azure until it is fixed).
    pub policy: Result<ReconcilePolicy, String>,
    /// The object asks to adopt an Azure cache that exists without an owner tag (annotation `hpccache.io/adopt`).
    pub adopt: bool,
    pub facts: &'a Facts,
    pub timing: Timing,
}

/// Azure tag naming the `HpcCache` that owns a cache (`cluster/namespace/name`), so two objects, in one cluster or
/// in two, never manage one cache.
pub const OWNER_TAG: &str = "hpccache.io-owner";

/// The value of [`OWNER_TAG`] for an object.
pub fn owner_tag(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{cluster}/{namespace}/{name}")
}

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

//! What every reconcile shares, of either kind: settings, the context, the error type, and how an Azure error
//! reaches the machine.

use std::sync::Arc;
use std::time::Duration;

use hpcc_api::v1alpha1::ReconcilePolicy;
use hpcc_azure::{Azure, AzureError, ErrorClass};
use hpcc_core::{ActionError, Timing};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::act::Actor;
use super::changes::AzureChanges;
use super::credentials::Credentials;
use super::metrics::Metrics;
use super::namespaces::NamespaceScopes;
use super::own_writes::OwnWrites;
use super::pacing::Pacer;
use super::reads::{Freshness, RecentReads};
use super::slots::Slots;
use super::status;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace only (None: all namespaces).
    pub namespace: Option<String>,
    /// Only reconcile objects matching this label selector (sharding).
    pub label_selector: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    pub timing: Timing,
    /// How long vault/key/identity facts are reused.
    pub facts_ttl: Duration,
    /// Name reported in events (pod name in a cluster).
    pub instance: Option<String>,
    /// A namespace without the Secret `hpccache-credential` gets no Azure access (instead of the operator's).
    pub require_namespace_credentials: bool,
    /// This cluster's name in the owner tag of every cache (`cluster/namespace/name`).
    pub cluster_name: String,
    /// The reconcile policy of objects without the `hpccache.io/reconcile-policy` annotation.
    pub default_policy: ReconcilePolicy,
    /// Object id of the HPC Cache resource provider's service principal in the tenant (AmlFilesystem blob
    /// integration grants it two storage roles).
    pub storage_cache_provider_principal_id: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            label_selector: None,
            concurrency: 8,
            timing: Timing::default(),
            facts_ttl: Duration::from_secs(60),
            instance: None,
            require_namespace_credentials: false,
            cluster_name: String::new(),
            default_policy: ReconcilePolicy::Manage,
            storage_cache_provider_principal_id: None,
        }
    }
}

/// What every reconcile shares: the clients, the settings and the operator's memory (reads, locks, credentials).
pub struct Context {
    pub client: Client,
    pub azure: Azure,
    pub metrics: Metrics,
    pub settings: Settings,
    pub(super) recorder: Recorder,
    pub(super) reads: RecentReads,
    pub(super) actor: Actor,
    pub(super) namespaces: NamespaceScopes,
    pub(super) credentials: Credentials,
    pub(super) own_writes: OwnWrites,
    pub(super) changes: AzureChanges,
    pub(super) pacer: Pacer,
    pub(super) slots: Slots,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Azure: {0}")]
    Azure(#[from] AzureError),
    /// Azure cannot be reached for the object (e.g. its namespace credential); retried at the poll interval.
    #[error("{0}: {1}")]
    Unusable(hpcc_core::Reason, String),
}

impl Context {
    pub fn new(client: Client, azure: Azure, metrics: Metrics, settings: Settings) -> Arc<Self> {
        let reporter = Reporter { controller: status::MANAGER.into(), instance: settings.instance.clone() };
        let recorder = Recorder::new(client.clone(), reporter);
        // Half a poll: a cache is never seen more than that late, and the caches of a resource group share a list.
        let (settings_resync, concurrency) = (settings.timing.resync, settings.concurrency);
        // Steady-state resyncs accept reads up to half a resync old.
        let fresh = Freshness {
            facts: settings.facts_ttl,
            cache_list: settings.timing.poll / 2,
            routine: settings.timing.resync / 2,
        };
        let reads = RecentReads::new(fresh);
        let credentials = Credentials::new(settings.require_namespace_credentials, fresh);
        Arc::new(Self {
            client,
            azure,
            metrics,
            settings,
            recorder,
            reads,
            actor: Actor::default(),
            namespaces: NamespaceScopes::default(),
            credentials,
            own_writes: OwnWrites::default(),
            changes: AzureChanges::default(),
            pacer: Pacer::new(settings_resync),
            slots: Slots::new(concurrency),
        })
    }
}

/// Azure's `Retry-After`, when the classifier says the call is worth repeating and Azure said when.
pub(super) fn retry_delay(e: &AzureError) -> Option<Duration> {
    match e.classify() {
        ErrorClass::Retryable { after } => after,
        ErrorClass::Fatal => None,
    }
}

/// The Azure error as the machine sees it; retryability is the classifier's answer.
pub(super) fn action_error(e: &AzureError) -> ActionError {
    ActionError {
        status: e.status(),
        code: e.code().unwrap_or("Unknown").to_string(),
        message: e.to_string(),
        retryable: e.is_retryable(),
        retry_after: retry_delay(e),
    }
}

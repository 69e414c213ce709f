//! The reconcile glue: observe Azure, [`decide`](hpcc_core::decide), record status (intent first), act,
//! publish events. Everything here is thin; decisions live in [`hpcc_core`].

pub mod act;
pub mod metrics;
pub mod observe;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use hpcc_api::v1alpha1::{HpcCache, HpcCacheStatus};
use hpcc_azure::{Azure, AzureError};
use hpcc_core::{Action, ActionError, Decision, Input, Timing};

pub use metrics::Metrics;
use observe::RecentReads;

/// The finalizer that keeps an `HpcCache` until its Azure cache is handled by `deletionPolicy`.
pub const FINALIZER: &str = "hpccache.io/finalizer";
/// Field manager for server-side apply of status.
pub const MANAGER: &str = "hpc-cache-operator";
/// After an action, look again soon: the next step usually follows quickly.
const AFTER_ACTION: Duration = Duration::from_secs(1);

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
        }
    }
}

pub struct Context {
    pub client: Client,
    pub azure: Azure,
    pub metrics: Metrics,
    pub settings: Settings,
    recorder: Recorder,
    reads: RecentReads,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Azure: {0}")]
    Azure(#[from] AzureError),
}

impl Context {
    pub fn new(client: Client, azure: Azure, metrics: Metrics, settings: Settings) -> Arc<Self> {
        let reporter = Reporter { controller: MANAGER.into(), instance: settings.instance.clone() };
        let recorder = Recorder::new(client.clone(), reporter);
        // Half a poll: a cache is never seen more than that late, and the caches of a resource group share a list.
        let reads = RecentReads::new(settings.facts_ttl, settings.timing.poll / 2);
        Arc::new(Self { client, azure, metrics, settings, recorder, reads })
    }
}

/// Runs the controller until SIGTERM/SIGINT or `stop` resolves (e.g. leadership lost); in-flight reconciles finish.
pub async fn run(
    ctx: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let api: Api<HpcCache> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    // Fail early and clearly when the CRD is not installed.
    if let Err(e) = api.list(&ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list HpcCache objects (is the CRD installed? `hpc-cache-operator crd | kubectl apply -f -`): {e}"
        );
    }
    let mut wc = watcher::Config::default();
    if let Some(sel) = &ctx.settings.label_selector {
        wc = wc.labels(sel);
    }
    ctx.metrics.set_ready();
    info!(namespace = ?ctx.settings.namespace, selector = ?ctx.settings.label_selector, "controller started");
    Controller::new(api, wc)
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency))
        .shutdown_on_signal()
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

fn error_policy(obj: Arc<HpcCache>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconciled("error");
    warn!(name = %obj.name_any(), namespace = ?obj.namespace(), error = %err, "reconcile error");
    match err {
        Error::Azure(e) => Requeue::requeue(e.retry_after().unwrap_or(ctx.settings.timing.poll)),
        Error::Kube(_) => Requeue::requeue(Duration::from_secs(5)),
    }
}

async fn reconcile(cached: Arc<HpcCache>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let api: Api<HpcCache> = Api::namespaced(ctx.client.clone(), &ns);
    // The watch cache can lag behind our own last status write (which records intent and grants); deciding from
    // it and applying the whole status back would undo that write. Read the object itself.
    let Some(obj) = api.get_opt(&name).await? else {
        return Ok(Requeue::await_change());
    };
    let deleting = obj.metadata.deletion_timestamp.is_some();

    if !deleting && !obj.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = obj.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        return Ok(Requeue::requeue(Duration::from_millis(100)));
    }
    if deleting && !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Requeue::await_change());
    }

    let status = obj.status.clone().unwrap_or_default();
    let namespace = Api::<Namespace>::all(ctx.client.clone()).get_metadata(&ns).await?;
    let allowed = namespace.annotations().get(hpcc_core::ALLOWED_VAULT_SCOPES_ANNOTATION).cloned();
    let (observed, vault) = match observe::observe(&ctx.azure, &ctx.reads, &obj, allowed.as_deref()).await {
        Ok(o) => o,
        Err(e) => {
            // Report why we cannot see Azure, then retry.
            let now = Timestamp::now();
            let failed = hpcc_core::action_failed(
                &status,
                obj.metadata.generation,
                &Action::None,
                &action_error(&e),
                now,
                ctx.settings.timing,
            );
            write_status(&api, &name, &status, &failed.status).await?;
            publish(&ctx, &obj, &failed).await;
            return Err(e.into());
        }
    };
    let input = Input {
        spec: &obj.spec,
        generation: obj.metadata.generation,
        status: &status,
        deleting,
        cache_id: &observe::cache_id(&obj).to_string(),
        owner: &act::owner(&obj),
        observed: &observed,
        timing: ctx.settings.timing,
    };
    let decision = hpcc_core::decide(&input);
    // Intent first: the status (create time, grant record, recreation count) is stored before acting.
    write_status(&api, &name, &status, &decision.status).await?;
    publish(&ctx, &obj, &decision).await;
    record_metrics(&ctx, &ns, &name, &decision, observed.now);

    if decision.action == Action::RemoveFinalizer {
        let finalizers: Vec<String> = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        ctx.metrics.set_phase(&ns, &name, None);
        ctx.metrics.set_deadline(&ns, &name, None);
        ctx.metrics.reconciled("finalized");
        info!(namespace = %ns, name = %name, "finalizer removed");
        return Ok(Requeue::await_change());
    }
    if decision.action == Action::None {
        ctx.metrics.reconciled("ok");
        return Ok(Requeue::requeue(decision.requeue_after));
    }

    info!(namespace = %ns, name = %name, action = ?decision.action, "acting");
    let result = if decision.action == Action::EnableVaultProtection {
        let vault_id = obj.spec.encryption.as_ref().map(|e| e.key_vault_id.as_str()).unwrap_or_default();
        let lock = ctx.reads.vault_write_lock(vault_id);
        let _held = lock.lock().await;
        if ctx.reads.vault_protected(vault_id) {
            Ok(()) // another reconcile protected this vault a moment ago
        } else {
            let r = act::perform(&ctx.azure, &obj, vault.as_ref(), &decision.action).await;
            if r.is_ok() {
                ctx.reads.mark_vault_protected(vault_id);
            }
            r
        }
    } else {
        act::perform(&ctx.azure, &obj, vault.as_ref(), &decision.action).await
    };
    ctx.reads.forget_cache(&observe::cache_id(&obj));
    match result {
        Ok(()) => {
            let mut after = decision.status.clone();
            hpcc_core::action_succeeded(&mut after, &decision.action);
            write_status(&api, &name, &decision.status, &after).await?;
            ctx.metrics.reconciled("ok");
            Ok(Requeue::requeue(AFTER_ACTION))
        }
        Err(e) => {
            let failed = hpcc_core::action_failed(
                &decision.status,
                obj.metadata.generation,
                &decision.action,
                &action_error(&e),
                observed.now,
                ctx.settings.timing,
            );
            write_status(&api, &name, &decision.status, &failed.status).await?;
            publish(&ctx, &obj, &failed).await;
            ctx.metrics.reconciled("azure_error");
            Ok(Requeue::requeue(failed.requeue_after))
        }
    }
}

fn action_error(e: &AzureError) -> ActionError {
    ActionError {
        status: e.status(),
        code: e.code().unwrap_or("Unknown").to_string(),
        message: e.to_string(),
        // Without an answer from Azure (token, transport, decoding) nothing was refused: try again.
        retryable: e.is_retryable() || e.status().is_none(),
        retry_after: e.retry_after(),
    }
}

/// Server-side apply of the whole status, skipped when nothing changed.
async fn write_status(
    api: &Api<HpcCache>,
    name: &str,
    old: &HpcCacheStatus,
    new: &HpcCacheStatus,
) -> Result<(), kube::Error> {
    if old == new {
        return Ok(());
    }
    let body = json!({
        "apiVersion": HpcCache::api_version(&()),
        "kind": HpcCache::kind(&()),
        "status": new,
    });
    match api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await {
        Ok(_) => Ok(()),
        // The object is gone (finalizer removed meanwhile): nothing to record.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn publish(ctx: &Context, obj: &HpcCache, decision: &Decision) {
    let reference = obj.object_ref(&());
    for e in &decision.events {
        let ev = KubeEvent {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason.clone(),
            note: Some(e.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&ev, &reference).await {
            warn!(error = %err, "could not publish event");
        }
    }
}

fn record_metrics(ctx: &Context, ns: &str, name: &str, d: &Decision, now: Timestamp) {
    ctx.metrics.set_phase(ns, name, d.status.phase);
    let left = d.status.authorization_deadline.as_ref().map(|t| t.0.duration_since(now).as_secs());
    ctx.metrics.set_deadline(ns, name, left);
}

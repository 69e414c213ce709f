//! The Kubernetes edge around the pure core: one reconcile is a short driver over named steps.
//!
//! 1. [`finalizer`]: hold the object until its Azure cache is handled;
//! 2. [`observe`]: read Azure (I/O only) into an [`observation::Observation`];
//! 3. [`facts`]: turn it into the core's [`hpcc_core::Facts`] (pure, table-tested);
//! 4. [`hpcc_core::decide`]: the next status and at most one action;
//! 5. [`status`]: record the status (intent first) as a [`status::Recorded`] decision;
//! 6. [`act`]: perform the recorded action (one write per vault at a time: [`vault_turns`]);
//! 7. [`publish`]: events and metrics.
//!
//! [`reads`] budgets Azure reads across reconciles; [`slots`] bounds the reconciles running at once and serves the
//! waiting ones by urgency; [`pacing`] spreads polls out when the queue runs late; [`own_writes`] lets a reconcile
//! trust the watch's copy of its object; [`namespaces`] keeps each namespace's allowed vault scopes from a watch;
//! [`credentials`] picks who acts in Azure for a namespace (its `hpccache-credential` Secret).

pub mod act;
pub mod amlfs;
pub mod changes;
pub mod context;
pub mod credentials;
pub mod facts;
pub mod finalizer;
pub mod metrics;
pub mod namespaces;
pub mod observation;
pub mod observe;
pub mod own_writes;
pub mod pacing;
pub mod publish;
pub mod reads;
pub mod slots;
pub mod status;
pub mod vault_turns;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hpcc_api::v1alpha1::{AmlFilesystem, HpcCache, HpcCacheStatus, Phase};
use hpcc_azure::{AzureError, Caller};
use hpcc_core::{Action, Input};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{debug, info, warn};

pub use context::{Context, Error, Settings};
use context::{action_error, retry_delay};
use finalizer::Finalizer;
pub use metrics::Metrics;
use pacing::Next;

/// Fails early and clearly when HpcCache objects cannot be listed (the CRD is not installed, or no RBAC).
pub async fn check_crd(ctx: &Context) -> anyhow::Result<()> {
    let api: Api<HpcCache> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    if let Err(e) = api.list(&ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list HpcCache objects (is the CRD installed? `hpc-cache-operator crd | kubectl apply -f -`): {e}"
        );
    }
    Ok(())
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
    check_crd(&ctx).await?;
    let mut wc = watcher::Config::default();
    if let Some(sel) = &ctx.settings.label_selector {
        wc = wc.labels(sel);
    }
    let mut namespaces = watcher::Config::default();
    if let Some(ns) = &ctx.settings.namespace {
        namespaces = namespaces.fields(&format!("metadata.name={ns}"));
    }
    ctx.metrics.set_ready();
    info!(namespace = ?ctx.settings.namespace, selector = ?ctx.settings.label_selector, "controller started");
    // Both kinds stop together: on a signal, or when `stop` resolves.
    let stop = futures::FutureExt::shared(stop);
    let closing = tokio::spawn({
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move {
            tokio::select! {
                _ = stop => {}
                _ = shutdown_signal() => {}
            }
            ctx.slots.close();
        }
    });
    // Unbounded here: the reconciles wait for one of the operator's own slots instead (see [`slots`]).
    let config = kube::runtime::controller::Config::default();
    let (objects, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, wc.clone()).modify(strip)).applied_objects();
    let controller = Controller::for_stream(not_echoes(stream, ctx.clone()), objects);
    let objects = controller.store();
    let scopes_ctx = ctx.clone();
    let caches = controller
        .watches(Api::<Namespace>::all(ctx.client.clone()), namespaces, move |ns: Namespace| {
            // A changed vault-scope annotation re-triggers the namespace's objects; other namespace events do not.
            let changed = scopes_ctx.namespaces.update(&ns);
            let name = ns.name_any();
            let refs: Vec<ObjectRef<HpcCache>> = if changed {
                objects
                    .state()
                    .iter()
                    .filter(|o| o.namespace().as_deref() == Some(&name))
                    .map(|o| ObjectRef::from_obj(&**o))
                    .collect()
            } else {
                vec![]
            };
            refs
        })
        .reconcile_on(ctx.changes.connect())
        .with_config(config.clone())
        .shutdown_on_signal()
        .graceful_shutdown_on(stop.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                log_failure("HpcCache", &e);
            }
        });
    let filesystems: Api<AmlFilesystem> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    // Managed Lustre is optional: without its CRD the operator runs for HpcCache alone.
    let lustre = match filesystems.list(&ListParams::default().limit(1)).await {
        Ok(_) => Some({
            let (objects, writer) = reflector::store();
            let stream = reflector::reflector(writer, watcher(filesystems, wc).modify(strip)).applied_objects();
            Controller::for_stream(not_echoes(stream, ctx.clone()), objects)
                .with_config(config)
                .shutdown_on_signal()
                .graceful_shutdown_on(stop)
                .run(reconcile_amlfs, error_policy, ctx)
                .for_each(|res| async move {
                    if let Err(e) = res {
                        log_failure("AmlFilesystem", &e);
                    }
                })
        }),
        Err(e) => {
            warn!(error = %e, "AmlFilesystem objects cannot be listed (is its CRD installed?); managing HpcCache only");
            None
        }
    };
    match lustre {
        Some(lustre) => {
            futures::join!(caches, lustre);
        }
        None => caches.await,
    }
    closing.abort();
    info!("controller stopped");
    Ok(())
}

/// SIGTERM or SIGINT (what the controllers' `shutdown_on_signal` stops on).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The watch events that trigger reconciles, less the echoes of the operator's own writes (the store still takes
/// them; see [`own_writes::OwnWrites::is_echo`]).
fn not_echoes<K: kube::Resource<DynamicType = ()>, E>(
    events: impl futures::Stream<Item = Result<K, E>>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Result<K, E>> {
    events.filter(move |event| {
        let echo = event.as_ref().is_ok_and(|obj| ctx.own_writes.is_echo(obj));
        std::future::ready(!echo)
    })
}

/// A reconcile that did not finish, as the controller reports it. One deferred by the ARM budget is no failure (it
/// comes back for its turn; at 10,000 caches there were hundreds a second): debug level, not a warning.
fn log_failure<E: std::fmt::Display>(kind: &str, e: &kube::runtime::controller::Error<Error, E>) {
    match e {
        kube::runtime::controller::Error::ReconcilerFailed(Error::Azure(AzureError::Deferred { .. }), _) => {
            debug!(kind, error = %e, "reconcile deferred")
        }
        _ => warn!(kind, error = %e, "reconcile failed"),
    }
}

/// What the controller never reads is not kept in its cache: managed fields and kubectl's copy of the last applied
/// manifest are most of a stored object.
fn strip<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Requeue {
    if let Error::Azure(AzureError::Deferred { after, access }) = err {
        // Not an error: the ARM budget has this object's turn at `after` (nothing was sent, nothing is reported).
        ctx.metrics.reconciled("deferred");
        // Reads wait when polling asks for more than the read budget: spread the polls. (Writes wait for their
        // own reasons, e.g. many creates at once; polling less would only slow their progress down.)
        if *access == hpcc_azure::Access::Read {
            ctx.pacer.deferred(*after, Instant::now());
        }
        return Requeue::requeue(*after);
    }
    ctx.metrics.reconciled("error");
    warn!(name = %obj.name_any(), namespace = ?obj.namespace(), error = %err, "reconcile error");
    ctx.pacer.forget(&pacing::holder(&*obj));
    match err {
        Error::Azure(e) => Requeue::requeue(retry_delay(e).unwrap_or(ctx.settings.timing.poll)),
        Error::Kube(_) => Requeue::requeue(Duration::from_secs(5)),
        Error::Unusable(..) => Requeue::requeue(ctx.settings.timing.poll),
    }
}

async fn reconcile(cached: Arc<HpcCache>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let status = cached.status.as_ref();
    let (phase, observed) = (status.and_then(|s| s.phase), status.and_then(|s| s.observed_generation));
    // The grant is made and Azure is picking it up: its polls only report.
    let propagating = status.is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == hpcc_core::Reason::KeyAccessPropagating.as_str())
    });
    let caller = pacing::caller(&*cached, phase, observed, propagating);
    let Some(_slot) = ctx.slots.acquire(ctx.pacer.slot_urgency(&caller, status.is_some())).await else {
        return Ok(Requeue::await_change()); // shutting down
    };
    // Boxed: only reconciles holding a slot take the memory of a whole reconcile (thousands may wait).
    let run = Box::pin(reconcile_object(cached, ctx.clone(), caller, |obj, api, ctx| async move {
        reconcile_current(&obj, &api, &ctx).await
    }));
    ctx.metrics.timed(run).await
}

async fn reconcile_amlfs(cached: Arc<AmlFilesystem>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let status = cached.status.as_ref();
    let (phase, observed) = (status.and_then(|s| s.phase), status.and_then(|s| s.observed_generation));
    let caller = pacing::caller(&*cached, phase, observed, false);
    let Some(_slot) = ctx.slots.acquire(ctx.pacer.slot_urgency(&caller, status.is_some())).await else {
        return Ok(Requeue::await_change()); // shutting down
    };
    ctx.metrics.timed(Box::pin(reconcile_object(cached, ctx.clone(), caller, amlfs::reconcile_current))).await
}

/// The driver both kinds share: pace, take a fresh copy (see [`own_writes`]), run `body` as the object's
/// [`Caller`] (see [`pacing`]), pace its requeue.
async fn reconcile_object<K, F, Fut>(
    cached: Arc<K>,
    ctx: Arc<Context>,
    caller: Caller,
    body: F,
) -> Result<Requeue, Error>
where
    K: status::Kind + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    F: FnOnce(Arc<K>, Api<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Next, Error>>,
{
    let (ns, name) = (cached.namespace().unwrap_or_default(), cached.name_any());
    ctx.pacer.started(&caller.holder, Instant::now());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(obj) = ctx.own_writes.current(&api, cached).await? else {
        publish::forget(&ctx.metrics, &ns, &name); // deleted (e.g. without our finalizer): drop its series
        ctx.pacer.forget(&caller.holder);
        return Ok(Requeue::await_change());
    };
    debug!(urgency = ?caller.urgency, "reconcile started");
    let next = hpcc_azure::with_caller(caller.clone(), body(obj.clone(), api, ctx.clone())).await?;
    let requeue = pace(&ctx, &*obj, &caller, next);
    debug!(?next, ?requeue, "reconcile done");
    Ok(requeue)
}

/// The requeue asked of the controller: the one decided, paced (see [`pacing`]).
fn pace<K: status::Kind>(ctx: &Context, obj: &K, caller: &Caller, next: Next) -> Requeue {
    match ctx.pacer.requeue(&caller.holder, next, caller.urgency, Instant::now()) {
        Some(after) => Requeue::requeue(after),
        None => {
            ctx.own_writes.forget(obj);
            Requeue::await_change()
        }
    }
}

async fn reconcile_current(obj: &HpcCache, api: &Api<HpcCache>, ctx: &Context) -> Result<Next, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let status = obj.status.clone().unwrap_or_default();
    match finalizer::ensure(api, &ctx.own_writes, obj).await? {
        Finalizer::Held => {}
        Finalizer::Added => {
            // Say at once that the object was seen: its Azure reads may have to wait their turn.
            if let Some(accepted) = hpcc_core::accepted(&status, obj.metadata.generation, Timestamp::now()) {
                status::write(api, &ctx.own_writes, &name, &status, &accepted).await?;
            }
            return Ok(Next::Start(Duration::from_millis(100)));
        }
        Finalizer::Released => return Ok(Next::Change),
    }
    let scopes = ctx.namespaces.allowed_vault_scopes(&ctx.client, &ns).await?;
    // Who acts in Azure for this namespace (its `hpccache-credential` Secret, or the operator), with whose reads.
    let credential = match ctx.credentials.resolve(&ctx.client, &ctx.azure, &ns).await? {
        Ok(c) => c,
        Err(p) => {
            return Ok(report_credential_problem(ctx, api, obj, &p).await?);
        }
    };
    let (azure, reads) = credential.pick(&ctx.azure, &ctx.reads);

    let observation = match observe::observe(azure, reads, &ctx.changes, obj, scopes.as_deref()).await {
        Ok(o) => o,
        Err(e) => match credential.rejected(&e) {
            Some(p) => {
                return Ok(report_credential_problem(ctx, api, obj, &p).await?);
            }
            None => return Err(report_unobservable(ctx, api, obj, &status, e).await),
        },
    };
    let known_protected = obj.spec.encryption.as_ref().is_some_and(|e| reads.vault_protected(&e.key_vault_id));
    let facts = facts::facts(&obj.spec, &observation, known_protected);
    let owner = act::owner(&ctx.settings.cluster_name, obj);
    let decision = hpcc_core::decide(&Input {
        spec: &obj.spec,
        generation: obj.metadata.generation,
        status: &status,
        deleting: obj.metadata.deletion_timestamp.is_some(),
        cache_id: &observe::cache_id(obj).to_string(),
        owner: &owner,
        legacy_owner: &act::legacy_owner(obj),
        policy: obj.reconcile_policy(ctx.settings.default_policy),
        adopt: obj.adopt(),
        facts: &facts,
        timing: ctx.settings.timing,
    });
    let Some(recorded) = status::record(api, &ctx.own_writes, &name, &status, decision).await? else {
        return Ok(Next::Change); // the object is gone: nothing was recorded, so nothing is done
    };
    publish::events(&ctx.recorder, obj, recorded.decision()).await;
    publish::metrics(&ctx.metrics, &ns, &name, recorded.decision(), facts.now);

    match recorded.action() {
        Action::RemoveFinalizer => {
            finalizer::remove(api, &ctx.own_writes, obj).await?;
            ctx.changes.forget(&observe::cache_id(obj));
            publish::forget(&ctx.metrics, &ns, &name);
            ctx.metrics.reconciled("finalized");
            info!(namespace = %ns, name = %name, "finalizer removed");
            return Ok(Next::Change);
        }
        Action::None => {
            ctx.metrics.reconciled("ok");
            let mut after = recorded.decision().requeue_after;
            // Waiting for Azure's progress on the cache, which shows in the shared list: take turns reading it.
            let waiting_for_azure = matches!(
                recorded.decision().status.phase,
                Some(Phase::Creating | Phase::Authorizing | Phase::Updating | Phase::Deleting)
            );
            if let Some(caller) = hpcc_azure::current_caller() {
                let waits = waiting_for_azure && caller.urgency == hpcc_azure::Urgency::Normal;
                let sharing = reads.waiting(&observe::cache_id(obj), &caller.holder, waits);
                if waits {
                    after = pacing::spread(after, sharing, ctx.settings.timing.resync);
                }
            }
            return Ok(Next::Poll(after));
        }
        action => info!(namespace = %ns, name = %name, ?action, "acting"),
    }
    let perform = ctx.actor.perform(azure, reads, obj, &owner, observation.vault(), &recorded);
    let result = match pacing::urgent_caller(recorded.action(), obj) {
        Some(caller) => hpcc_azure::with_caller(caller, perform).await,
        None => perform.await,
    };
    // Something may have been sent: lists read before now no longer speak for the cache. (A deferred action sent
    // nothing; forgetting then cost each deferred create of a 10,000-cache run a new list read and a GET.)
    match (&result, recorded.action()) {
        // The create comes back for its turn: the absence it was decided on stands until then (plus the longest a
        // ticket lasts), so coming back costs no reads.
        (Err(AzureError::Deferred { after, .. }), Action::Create { .. }) => {
            let until = Instant::now() + *after + hpcc_azure::TICKET_EXPIRY;
            reads.hold_absent(&observe::cache_id(obj), until);
        }
        (Err(AzureError::Deferred { .. }), _) => {}
        _ => reads.forget_cache(&observe::cache_id(obj)),
    }
    let decided = &recorded.decision().status;
    match result {
        // Its turn in the ARM budget comes later: nothing was sent; the recorded intent stands.
        // (The error policy requeues it for exactly that turn, unpaced.)
        Err(e @ AzureError::Deferred { .. }) => Err(e.into()),
        Ok(()) => {
            let mut after = decided.clone();
            hpcc_core::action_succeeded(&mut after, recorded.action());
            status::write(api, &ctx.own_writes, &name, decided, &after).await?;
            ctx.metrics.reconciled("ok");
            Ok(Next::FollowUp)
        }
        Err(e) => {
            let failed = hpcc_core::action_failed(
                decided,
                obj.metadata.generation,
                recorded.action(),
                &action_error(&e),
                facts.now,
                ctx.settings.timing,
            );
            status::write(api, &ctx.own_writes, &name, decided, &failed.status).await?;
            publish::events(&ctx.recorder, obj, &failed).await;
            ctx.metrics.reconciled("azure_error");
            Ok(Next::Poll(failed.requeue_after))
        }
    }
}

/// Reports a credential problem on the object (the machine's [`hpcc_core::credential_unusable`] decision): status,
/// events, metrics, and the finalizer when the object may go without Azure. Azure is not called.
async fn report_credential_problem(
    ctx: &Context,
    api: &Api<HpcCache>,
    obj: &HpcCache,
    problem: &hpcc_core::CredentialProblem,
) -> Result<Next, kube::Error> {
    let (writes, recorder, metrics) = (&ctx.own_writes, &ctx.recorder, &ctx.metrics);
    let (timing, default_policy) = (ctx.settings.timing, ctx.settings.default_policy);
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let old = &obj.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let decision = hpcc_core::credential_unusable(
        &obj.spec,
        old,
        obj.metadata.generation,
        // An unknown policy value keeps everything, as skip does.
        obj.metadata
            .deletion_timestamp
            .as_ref()
            .map(|_| obj.reconcile_policy(default_policy).unwrap_or(hpcc_api::v1alpha1::ReconcilePolicy::Skip)),
        problem,
        now,
        timing,
    );
    let Some(recorded) = status::record(api, writes, &name, old, decision).await? else {
        return Ok(Next::Change);
    };
    publish::events(recorder, obj, recorded.decision()).await;
    publish::metrics(metrics, &ns, &name, recorded.decision(), now);
    if *recorded.action() == hpcc_core::Action::RemoveFinalizer {
        finalizer::remove(api, writes, obj).await?;
        publish::forget(metrics, &ns, &name);
        metrics.reconciled("finalized");
        return Ok(Next::Change);
    }
    info!(namespace = %ns, name = %name, reason = %problem.reason, "namespace credential unusable");
    metrics.reconciled("ok");
    Ok(Next::Poll(recorded.decision().requeue_after))
}

/// Azure could not be read: say why in the status, then let the error policy retry.
async fn report_unobservable(
    ctx: &Context,
    api: &Api<HpcCache>,
    obj: &HpcCache,
    status: &HpcCacheStatus,
    e: AzureError,
) -> Error {
    if matches!(e, AzureError::Deferred { .. }) {
        return e.into(); // not a failure to report: the error policy requeues it for its turn
    }
    let failed = hpcc_core::action_failed(
        status,
        obj.metadata.generation,
        &Action::None,
        &action_error(&e),
        Timestamp::now(),
        ctx.settings.timing,
    );
    if let Err(k) = status::write(api, &ctx.own_writes, &obj.name_any(), status, &failed.status).await {
        return k.into();
    }
    publish::events(&ctx.recorder, obj, &failed).await;
    e.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_api::v1alpha1::{GrantKind, GrantRecord};
    use hpcc_core::Timing;
    use jiff::Timestamp;

    #[test]
    fn a_revoke_refused_with_key_vault_conflict_error_is_kept_and_retried() {
        // Key Vault's answer when two writes to one vault overlap (Azure/AzureKeyVault#6): the revoke did not
        // happen and must be sent again, never forgotten (which would leak the access).
        let conflict = AzureError::Api {
            status: 409,
            code: "ConflictError".into(),
            message: "the Key Vault changed from the point the operation began".into(),
            retry_after: None,
        };
        let grant = GrantRecord {
            scope: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv".into(),
            principal_id: "p".into(),
            tenant_id: None,
            kind: GrantKind::AccessPolicy,
            system_assigned: true,
            made: true,
        };
        let status = HpcCacheStatus { grants: vec![grant.clone()], ..Default::default() };
        let failed = hpcc_core::action_failed(
            &status,
            Some(1),
            &Action::RevokeGrant(grant),
            &action_error(&conflict),
            Timestamp::UNIX_EPOCH,
            Timing::default(),
        );
        assert_eq!(failed.status.grants, status.grants, "the grant is still recorded, so it is revoked later");
        assert!(!failed.events.iter().any(|e| e.reason == "GrantNotRevoked"));
        let reconciling = failed.status.conditions.iter().find(|c| c.type_ == "Reconciling").unwrap();
        assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("True", "AzureRetrying"));
        assert_eq!(failed.requeue_after, Timing::default().poll);
    }

    #[test]
    fn spec_input_errors_are_not_retried() {
        let e = AzureError::Input("keyVaultId: not an ARM id".into());
        assert!(!action_error(&e).retryable);
    }
}

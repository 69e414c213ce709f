//! The `AmlFilesystem` kind (Azure Managed Lustre): the same named steps as an `HpcCache` reconcile (finalizer,
//! observe, facts, decide, record status, act, publish), with the file system's own reads and bodies. The vault,
//! key and identity reads, the per-vault write serialization, credentials and status recording are shared.

use std::sync::Arc;
use std::time::Duration;

use hpcc_api::v1alpha1::{AmlFilesystem, AmlFilesystemSpec, Encryption};
use hpcc_azure::{
    Azure, AzureError, Dated, HPC_CACHE_RESOURCE_PROVIDER_APP_ID, ResourceId, STORAGE_ACCOUNT_CONTRIBUTOR,
    STORAGE_BLOB_DATA_CONTRIBUTOR,
};
use hpcc_core::amlfs::{
    AmlFacts, AmlInput, BlobAccessFacts, FilesystemFacts, create_refused_while_grants_propagate, decide_amlfs,
    desired_aml_tags,
};
use hpcc_core::{Action, ProvisioningState, Reason};
use jiff::Timestamp;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::info;

use super::act;
use super::context::{Context, Error, action_error};
use super::facts;
use super::finalizer::{self, Finalizer};
use super::observation::{Observation, References};
use super::observe::referenced;
use super::pacing::{self, Next};
use super::reads::RecentReads;
use super::status;

/// The ARM id of the file system an object manages.
pub fn filesystem_id(obj: &AmlFilesystem) -> ResourceId {
    let a = &obj.spec.azure;
    ResourceId::aml_filesystem(&a.subscription_id, &a.resource_group, obj.azure_name())
}

/// The reads of the referenced vault, key and identity, in the shape the `HpcCache` reads share.
fn references(spec: &AmlFilesystemSpec, allowed_vault_scopes: Option<&str>) -> Option<References> {
    if spec.encryption.is_none() && spec.identity.is_none() {
        return None;
    }
    Some(References {
        subscription_id: spec.azure.subscription_id.clone(),
        encryption: spec.encryption.as_ref().map(|e| Encryption {
            key_vault_id: e.key_vault_id.clone(),
            key_name: e.key_name.clone(),
            key_version: Some(e.key_version.clone()),
            rotate_to_latest_key_version: false,
        }),
        user_assigned_identity_id: spec.identity.as_ref().map(|i| i.user_assigned_identity_id.clone()),
        allowed_vault_scopes: allowed_vault_scopes.map(str::to_string),
    })
}

/// The HPC Cache resource provider's object id in the tenant: configured (`--storage-cache-provider-principal-id`),
/// as Azure publishes only its application id.
fn provider_principal(ctx: &Context) -> Option<&str> {
    ctx.settings.storage_cache_provider_principal_id.as_deref()
}

/// Observe (I/O): the file system, what the spec references, and the provider's storage roles.
async fn observe(
    ctx: &Context,
    azure: &Azure,
    reads: &RecentReads,
    obj: &AmlFilesystem,
    scopes: Option<&str>,
) -> Result<(AmlFacts, Observation), AzureError> {
    let got: Dated<Option<hpcc_azure::AmlFilesystem>> = azure.get_aml_filesystem(&filesystem_id(obj)).await?;
    let now = got.date.unwrap_or_else(Timestamp::now);
    let mut observation = Observation { now, cache: None, referenced: None };
    let deleting = obj.metadata.deletion_timestamp.is_some();
    if !deleting && let Some(refs) = references(&obj.spec, scopes) {
        let key = format!("amlfs|{}", refs.cache_key());
        observation.referenced = Some(referenced(azure, reads, key, &refs).await?);
    }
    let blob = match (&obj.spec.blob_integration, provider_principal(ctx)) {
        (Some(b), Some(provider)) if !deleting => {
            let account = ResourceId::parse(&b.storage_account_id).map_err(|e| AzureError::Input(e.to_string()))?;
            Some(BlobAccessFacts {
                provider_principal_id: provider.to_string(),
                storage_account_contributor: azure
                    .has_role_assignment(&account, provider, STORAGE_ACCOUNT_CONTRIBUTOR)
                    .await?,
                storage_blob_data_contributor: azure
                    .has_role_assignment(&account, provider, STORAGE_BLOB_DATA_CONTRIBUTOR)
                    .await?,
            })
        }
        _ => None,
    };
    // The key, vault and identity verdicts are the ones an HpcCache gets (same checks, same reasons).
    let enc = obj.spec.encryption.as_ref();
    let names = facts::Names {
        location: &obj.spec.azure.location,
        vault_id: enc.map(|e| e.key_vault_id.as_str()).unwrap_or_default(),
        key_name: enc.map(|e| e.key_name.as_str()).unwrap_or_default(),
        key_version: enc.map(|e| e.key_version.as_str()),
        identity_id: obj.spec.identity.as_ref().map(|i| i.user_assigned_identity_id.as_str()).unwrap_or_default(),
    };
    let shared = facts::referenced_facts(names, &observation, reads.vault_protected(names.vault_id));
    let facts = AmlFacts {
        now,
        filesystem: got.value.as_ref().map(filesystem_facts),
        key: shared.key,
        vault: shared.vault,
        identity: shared.identity,
        blob,
    };
    Ok((facts, observation))
}

/// Reduces Azure's file system to what the machine needs.
fn filesystem_facts(f: &hpcc_azure::AmlFilesystem) -> FilesystemFacts {
    let kek = f.key_encryption_key();
    FilesystemFacts {
        id: f.id.clone().unwrap_or_default(),
        provisioning_state: ProvisioningState::parse(f.provisioning_state().unwrap_or_default()),
        health_state: f.health_state().map(str::to_string),
        status_description: f.properties.health.as_ref().and_then(|h| h.status_description.clone()),
        key_url: kek.map(|k| k.key_url.clone()),
        key_vault_id: kek.map(|k| k.source_vault.id.clone()),
        tags: f.tags.clone().unwrap_or_default(),
        mgs_address: f.mgs_address().map(str::to_string),
        mount_command: f.mount_command().map(str::to_string),
        lustre_version: f.properties.client_info.as_ref().and_then(|c| c.lustre_version.clone()),
    }
}

/// The ARM body of the file system the spec describes (amlFilesystems_CreateOrUpdate).
pub fn desired_filesystem(spec: &AmlFilesystemSpec, owner: &str, key_url: Option<&str>) -> Value {
    let identity = match &spec.identity {
        Some(i) => {
            json!({"type": "UserAssigned", "userAssignedIdentities": { i.user_assigned_identity_id.clone(): {} }})
        }
        None => json!({"type": "None"}),
    };
    let mut properties = json!({
        "storageCapacityTiB": spec.storage_capacity_tib,
        "filesystemSubnet": spec.subnet_id,
        "maintenanceWindow": {"dayOfWeek": spec.maintenance_window.day_of_week, "timeOfDayUTC": spec.maintenance_window.time_of_day_utc},
    });
    if let (Some(enc), Some(url)) = (&spec.encryption, key_url) {
        properties["encryptionSettings"] =
            json!({"keyEncryptionKey": {"keyUrl": url, "sourceVault": {"id": enc.key_vault_id}}});
    }
    if let Some(b) = &spec.blob_integration {
        // Containers are named by their ARM id (amlFilesystems spec, AmlFilesystemHsmSettings).
        let container = |name: &str| format!("{}/blobServices/default/containers/{name}", b.storage_account_id);
        let mut settings =
            json!({"container": container(&b.container), "loggingContainer": container(&b.logging_container)});
        if let Some(prefix) = &b.import_prefix {
            settings["importPrefix"] = json!(prefix);
        }
        properties["hsm"] = json!({"settings": settings});
    }
    if let Some(r) = &spec.root_squash {
        properties["rootSquashSettings"] = json!({
            "mode": r.mode, "noSquashNidLists": r.no_squash_nid_lists, "squashUID": r.squash_uid, "squashGID": r.squash_gid
        });
    }
    let mut body = json!({
        "location": spec.azure.location,
        "tags": desired_aml_tags(spec, owner),
        "sku": {"name": spec.sku},
        "identity": identity,
        "properties": properties,
    });
    if !spec.zones.is_empty() {
        body["zones"] = json!(spec.zones);
    }
    body
}

/// The PATCH body for a key change (and tags).
pub fn filesystem_update(spec: &AmlFilesystemSpec, owner: &str, key_url: Option<&str>) -> Value {
    let mut patch = json!({"tags": desired_aml_tags(spec, owner)});
    if let (Some(enc), Some(url)) = (&spec.encryption, key_url) {
        patch["properties"] = json!({"encryptionSettings": {"keyEncryptionKey": {"keyUrl": url, "sourceVault": {"id": enc.key_vault_id}}}});
    }
    patch
}

async fn perform(
    ctx: &Context,
    azure: &Azure,
    reads: &RecentReads,
    obj: &AmlFilesystem,
    owner: &str,
    vault: Option<&hpcc_azure::Vault>,
    action: &Action,
) -> Result<(), AzureError> {
    let vault_id = obj.spec.encryption.as_ref().map(|e| e.key_vault_id.as_str()).unwrap_or_default();
    if let Some(done) = ctx.actor.write_access(azure, reads, vault_id, vault, action).await {
        return done;
    }
    let id = filesystem_id(obj);
    match action {
        Action::Create { key_url } => {
            let body = desired_filesystem(&obj.spec, owner, key_url.as_deref());
            let fs = serde_json::from_value(body).map_err(|e| AzureError::Input(e.to_string()))?;
            azure.put_aml_filesystem(&id, &fs).await.map(drop)
        }
        Action::Update { key_url } => {
            azure.patch_aml_filesystem(&id, &filesystem_update(&obj.spec, owner, key_url.as_deref())).await.map(drop)
        }
        Action::Delete => azure.delete_aml_filesystem(&id).await.map(drop),
        _ => Ok(()),
    }
}

/// One reconcile of an `AmlFilesystem`.
/// One reconcile of a fresh copy of the object (see `reconcile::reconcile_object`): the requeue it decided, or None
/// to wait for a change.
pub async fn reconcile_current(
    obj: Arc<AmlFilesystem>,
    api: Api<AmlFilesystem>,
    ctx: Arc<Context>,
) -> Result<Next, Error> {
    let obj = Arc::unwrap_or_clone(obj);
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    match finalizer::ensure(&api, &ctx.own_writes, &obj).await? {
        Finalizer::Held => {}
        Finalizer::Added => return Ok(Next::Start(Duration::from_millis(100))),
        Finalizer::Released => return Ok(Next::Change),
    }
    let status = obj.status.clone().unwrap_or_default();
    let scopes = ctx.namespaces.allowed_vault_scopes(&ctx.client, &ns).await?;
    let credential = match ctx.credentials.resolve(&ctx.client, &ctx.azure, &ns).await? {
        Ok(c) => c,
        Err(problem) => return Err(Error::Unusable(problem.reason, problem.message)),
    };
    let (azure, reads) = credential.pick(&ctx.azure, &ctx.reads);
    if obj.spec.blob_integration.is_some() && provider_principal(&ctx).is_none() {
        let message = format!(
            "blob integration needs the object id of the HPC Cache resource provider's service principal (application {HPC_CACHE_RESOURCE_PROVIDER_APP_ID}) in this tenant: set --storage-cache-provider-principal-id (az ad sp show --id {HPC_CACHE_RESOURCE_PROVIDER_APP_ID} --query id)"
        );
        return Err(Error::Unusable(Reason::CheckingBlobAccess, message));
    }
    let (facts, observation) = observe(&ctx, azure, reads, &obj, scopes.as_deref()).await?;
    let owner = act::owner(&ctx.settings.cluster_name, &obj);
    let decision = decide_amlfs(&AmlInput {
        spec: &obj.spec,
        generation: obj.metadata.generation,
        status: &status,
        deleting: obj.metadata.deletion_timestamp.is_some(),
        resource_id: &filesystem_id(&obj).to_string(),
        owner: &owner,
        policy: obj.reconcile_policy(ctx.settings.default_policy),
        adopt: obj.adopt(),
        facts: &facts,
        timing: ctx.settings.timing,
    });
    let Some(recorded) = status::record(&api, &ctx.own_writes, &name, &status, decision).await? else {
        return Ok(Next::Change);
    };
    super::publish::events(&ctx.recorder, &obj, recorded.decision()).await;
    let st = &recorded.decision().status;
    super::publish::object(&ctx.metrics, &ns, &name, st.phase, &st.conditions);
    match recorded.action() {
        Action::RemoveFinalizer => {
            finalizer::remove(&api, &ctx.own_writes, &obj).await?;
            super::publish::forget(&ctx.metrics, &ns, &name);
            ctx.metrics.reconciled("finalized");
            return Ok(Next::Change);
        }
        Action::None => {
            ctx.metrics.reconciled("ok");
            return Ok(Next::Poll(recorded.decision().requeue_after));
        }
        action => info!(namespace = %ns, name = %name, kind = %AmlFilesystem::kind(&()), ?action, "acting"),
    }
    let perform = perform(&ctx, azure, reads, &obj, &owner, observation.vault(), recorded.action());
    let result = match pacing::urgent_caller(recorded.action(), &obj) {
        Some(caller) => hpcc_azure::with_caller(caller, perform).await,
        None => perform.await,
    };
    let decided = &recorded.decision().status;
    match result {
        Ok(()) => {
            let mut after = decided.clone();
            hpcc_core::action_succeeded(&mut after, recorded.action());
            status::write(&api, &ctx.own_writes, &name, decided, &after).await?;
            ctx.metrics.reconciled("ok");
            Ok(Next::FollowUp)
        }
        // Its turn in the ARM budget comes later: nothing was sent; the recorded intent stands.
        // (The error policy requeues it for exactly that turn, unpaced.)
        Err(e @ AzureError::Deferred { .. }) => Err(e.into()),
        Err(e) => {
            let mut error = action_error(&e);
            // Grants take minutes to take effect: a create refused right after the operator's own grants is retried.
            error.retryable |= create_refused_while_grants_propagate(decided, recorded.action(), &error, facts.now);
            let failed = hpcc_core::action_failed(
                decided,
                obj.metadata.generation,
                recorded.action(),
                &error,
                facts.now,
                ctx.settings.timing,
            );
            status::write(&api, &ctx.own_writes, &name, decided, &failed.status).await?;
            super::publish::events(&ctx.recorder, &obj, &failed).await;
            ctx.metrics.reconciled("azure_error");
            Ok(Next::Poll(failed.requeue_after))
        }
    }
}

//! Azure access: credentials (azure_identity), cloud endpoints, one reqwest client with retries, `Retry-After`,
//! client-side rate limiting per subscription and principal, and thin typed clients for HPC caches, Azure Managed Lustre
//! file systems, Key Vault (management and keys), role assignments and user-assigned identities.
//!
//! Long-running operations are never awaited here: a write returns as soon as Azure accepted it and the caller
//! re-observes the resource with a GET on its next reconcile, so a restart loses nothing.

mod challenge;
mod config;
mod error;
mod http;
pub mod id;
pub mod models;
mod ratelimit;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use url::Url;

pub use azure_core::credentials::Secret;
pub use challenge::Challenge;
pub use config::{AzureConfig, CloudConfig, CredentialChoice, Principal};
pub use error::{AuthError, AzureError, ErrorClass, TokenRejection};
pub use id::ResourceId;
pub use models::{AmlFilesystem, AmlFilesystemUpdate, Cache, KeyBundle, KeyItem, UserAssignedIdentity, Vault};
pub use ratelimit::{Access, ArmLimiter, Caller, TICKET_EXPIRY, TokenBucket, Urgency, current_caller, with_caller};

pub use http::CallObserver;
use http::{Auth, Call, Resp};

/// `Microsoft.StorageCache` api-version (accepted by every version's schema for the fields used).
pub const CACHES_API_VERSION: &str = "2024-03-01";
/// `Microsoft.StorageCache/amlFilesystems` api-version (Azure Managed Lustre). 2024-03-01 is the oldest stable version
/// whose schema carries every field [`AmlFilesystem`] models: `rootSquashSettings` and `hsm.settings.importPrefixesInitial`
/// are absent from 2023-05-01 (the first stable one) and present from 2024-03-01 to 2026-08-01. The older the
/// version, the longer every region and cloud has served it; it is also [`CACHES_API_VERSION`], so the operator speaks
/// one version to the one resource provider. Fields newer versions add (`clusterUuid`, `currentStorageCapacityTiB`,
/// the `Expanding` health state) are read-only and not needed.
pub const AML_FILESYSTEMS_API_VERSION: &str = "2024-03-01";
/// `Microsoft.KeyVault` management api-version.
pub const VAULTS_API_VERSION: &str = "2025-05-01";
/// `Microsoft.Authorization/roleAssignments` api-version.
pub const ROLE_ASSIGNMENTS_API_VERSION: &str = "2022-04-01";
/// `Microsoft.ManagedIdentity` api-version.
pub const IDENTITIES_API_VERSION: &str = "2023-01-31";
/// Key Vault data-plane api-version.
pub const KEYVAULT_API_VERSION: &str = "7.5";

/// Built-in role "Key Vault Crypto Service Encryption User".
pub const KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";
/// Built-in role "Storage Account Contributor": with [`STORAGE_BLOB_DATA_CONTRIBUTOR`], what the "HPC Cache Resource
/// Provider" principal needs on the storage account of an AML file system's blob integration (`hsm.settings`).
/// Source: Microsoft's "Azure built-in roles for Storage" (learn.microsoft.com/azure/role-based-access-control/
/// built-in-roles/storage; MicrosoftDocs/azure-docs `articles/role-based-access-control/built-in-roles/storage.md`
/// at 1b4e136a1da731e1ed16444eb6ce5701bcd8c0f4: `"name": "17d1049b-9a84-46fb-8f53-869881c3d3ab"`).
pub const STORAGE_ACCOUNT_CONTRIBUTOR: &str = "17d1049b-9a84-46fb-8f53-869881c3d3ab";
/// Built-in role "Storage Blob Data Contributor". Source: the same page and commit as
/// [`STORAGE_ACCOUNT_CONTRIBUTOR`] (`"name": "ba92f5b4-2d11-453d-a403-e96b0029c9fe"`).
pub const STORAGE_BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
/// Application (client) id of Microsoft's first-party "HPC Cache Resource Provider" service principal, the principal
/// an AML file system's blob integration acts as. Its object id differs per tenant: look it up (e.g. Microsoft
/// Graph `servicePrincipals(appId='…')`) before granting roles. Sources: Microsoft's own Azure Managed Lustre test
/// setup script (microsoft/mcp `tools/Azure.Mcp.Tools.ManagedLustre/tests/test-resources-post.ps1`, an earlier
/// revision: `$HPCCacheResourceProviderApplicationId = '4392ab71-…'`, granting the two roles above with
/// `New-AzRoleAssignment -ApplicationId`) and a published tenant service-principal export listing "HPC Cache Resource
/// Provider" as a Microsoft application with this app id. No Microsoft documentation page stating it was found.
pub const HPC_CACHE_RESOURCE_PROVIDER_APP_ID: &str = "4392ab71-2ce2-4b0d-8770-b352745c73f5";
/// Key permissions a CMK cache identity needs in an access-policy vault.
pub const CMK_KEY_PERMISSIONS: [&str; 3] = ["get", "wrapKey", "unwrapKey"];

/// Identities one `accessPolicies/{add,remove,replace}` update may carry (Key Vault management spec,
/// `VaultAccessPolicyProperties.accessPolicies`: "An array of 0 to 16 identities").
pub const ACCESS_POLICIES_PER_UPDATE: usize = 16;

/// A value from Azure with what its response said about time (`Date`, `Retry-After`).
#[derive(Debug, Clone)]
pub struct Dated<T> {
    pub value: T,
    /// The response `Date` header: Azure's clock.
    pub date: Option<jiff::Timestamp>,
    /// The response `Retry-After` (e.g. on an accepted long-running operation).
    pub retry_after: Option<Duration>,
}

impl<T> Dated<T> {
    fn from_resp(value: T, resp: &Resp) -> Self {
        Self { value, date: resp.date, retry_after: resp.retry_after }
    }

    /// Keep the timing, change the value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Dated<U> {
        Dated { value: f(self.value), date: self.date, retry_after: self.retry_after }
    }
}

/// Result of [`Azure::delete_cache`] and [`Azure::delete_aml_filesystem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Azure accepted the deletion and is working on it (202): look again later.
    Accepted,
    /// The resource no longer exists (200, 204 or 404).
    Gone,
}

/// The deterministic role-assignment name for (scope, principal, role): UUID v5, case-insensitive in its inputs, so
/// a retried or repeated grant targets the same assignment and can never create a duplicate.
pub fn role_assignment_name(scope: &ResourceId, principal_id: &str, role_definition_guid: &str) -> uuid::Uuid {
    let key = format!(
        "hpc-cache-operator/role-assignment|{}|{}|{}",
        scope.to_string().to_ascii_lowercase(),
        principal_id.trim().to_ascii_lowercase(),
        role_definition_guid.trim().to_ascii_lowercase()
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key.as_bytes())
}

/// The Azure client. Cheap to clone (one shared HTTP client, credential, token cache and rate limiters).
#[derive(Clone)]
pub struct Azure {
    inner: Arc<http::Inner>,
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure")
            .field("arm_endpoint", &self.inner.cfg.cloud.arm_endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl Azure {
    /// Build the HTTP client and the credential. Does not contact Azure.
    pub async fn new(cfg: AzureConfig, observer: Option<Arc<dyn CallObserver>>) -> anyhow::Result<Azure> {
        Ok(Azure { inner: Arc::new(http::Inner::new(cfg, observer)?) })
    }

    /// A client acting as `principal` (e.g. a namespace's credential): the same cloud, HTTP client, observer and
    /// ARM limiter (whose buckets are per subscription and principal), with its own credential, token cache and
    /// Key Vault challenges. Does not contact Azure. Fails when the principal has no client secret and this client
    /// has no federated token file to exchange for it.
    pub fn for_principal(&self, principal: &Principal) -> anyhow::Result<Azure> {
        Ok(Azure { inner: Arc::new(self.inner.for_principal(principal)?) })
    }

    /// The configuration in use.
    pub fn config(&self) -> &AzureConfig {
        &self.inner.cfg
    }

    /// The shared HTTP client (same TLS roots and resolver as every Azure call).
    pub fn http_client(&self) -> &reqwest::Client {
        &self.inner.http
    }

    fn arm_url(&self, path: &str, api_version: &str) -> Url {
        let mut u = self.inner.cfg.cloud.arm_endpoint.clone();
        let base = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base}{path}"));
        u.query_pairs_mut().append_pair("api-version", api_version);
        u
    }

    fn arm(&self, op: &'static str, method: Method, url: Url, subscription: &str) -> Call {
        let access = if method == Method::GET { Access::Read } else { Access::Write };
        let idempotent = method != Method::PATCH && method != Method::POST;
        Call {
            op,
            method,
            url,
            body: None,
            auth: Auth::Arm,
            limit: Some((subscription.to_string(), access)),
            idempotent,
        }
    }

    async fn get_optional<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        id: &ResourceId,
        api_version: &str,
    ) -> Result<Dated<Option<T>>, AzureError> {
        let req = self.arm(op, Method::GET, self.arm_url(&id.to_string(), api_version), id.subscription());
        let resp = self.inner.send(req).await?;
        match resp.status {
            200 => Ok(Dated::from_resp(Some(resp.json()?), &resp)),
            404 if resp.absent() => Ok(Dated::from_resp(None, &resp)),
            _ => Err(resp.error()),
        }
    }

    // ------------------------------------------------------------------------------------------------ caches

    /// A new cache's turn to start (its first look at Azure, then its create): a write token prepaid for its create
    /// at [`Urgency::Starting`], behind every other write of this principal in `subscription`, so new caches start
    /// as fast as the writes left over by caches on their way allow ([`TokenBucket::prepay`]). Now, or
    /// [`AzureError::Deferred`] until its place comes. Outside a reconcile (no [`Caller`]) there is no line.
    pub fn start_turn(&self, subscription: &str) -> Result<(), AzureError> {
        let Some(caller) = current_caller() else { return Ok(()) };
        let now = tokio::time::Instant::now();
        self.inner
            .bucket(subscription, Access::Write)
            .prepay(&Caller { urgency: Urgency::Starting, ..caller }, now)
            .map_err(|after| AzureError::Deferred { after, access: Access::Write })
    }

    /// [`AzureError::Deferred`] while the current caller's start waits for its place ([`Azure::start_turn`]), so it
    /// goes back to its place before reading anything.
    pub fn start_waiting(&self, subscription: &str) -> Result<(), AzureError> {
        let Some(caller) = current_caller() else { return Ok(()) };
        let now = tokio::time::Instant::now();
        match self.inner.bucket(subscription, Access::Write).ticket_wait(&caller.holder, now) {
            Some(after) => Err(AzureError::Deferred { after, access: Access::Write }),
            None => Ok(()),
        }
    }

    /// GET a cache; `None` when it does not exist.
    pub async fn get_cache(&self, id: &ResourceId) -> Result<Dated<Option<Cache>>, AzureError> {
        self.get_optional("caches.get", id, CACHES_API_VERSION).await
    }

    /// List the caches of a subscription or resource group (one paged read), following `nextLink`.
    pub async fn list_caches(
        &self,
        subscription: &str,
        resource_group: Option<&str>,
    ) -> Result<Dated<Vec<Cache>>, AzureError> {
        self.list_arm("caches.list", subscription, resource_group, "Microsoft.StorageCache/caches", CACHES_API_VERSION)
            .await
    }

    /// PUT a cache (create or update). Returns Azure's 200/201 body, or `None` when Azure accepted it without one
    /// (202). Never waits for the long-running operation: re-observe with [`Azure::get_cache`].
    pub async fn put_cache(&self, id: &ResourceId, cache: &Cache) -> Result<Dated<Option<Cache>>, AzureError> {
        self.put_arm("caches.put", id, cache, CACHES_API_VERSION).await
    }

    /// PATCH a cache with a JSON merge body (e.g. a new `encryptionSettings`). Non-blocking; not retried on 5xx
    /// (a PATCH is not guaranteed idempotent), only on 429.
    pub async fn patch_cache(&self, id: &ResourceId, patch: &serde_json::Value) -> Result<Dated<()>, AzureError> {
        self.patch_arm("caches.patch", id, patch, CACHES_API_VERSION).await
    }

    /// DELETE a cache. Non-blocking: `Accepted` while Azure works on it, `Gone` once it no longer exists.
    pub async fn delete_cache(&self, id: &ResourceId) -> Result<Dated<DeleteOutcome>, AzureError> {
        self.delete_arm("caches.delete", id, CACHES_API_VERSION).await
    }

    // ------------------------------------------------------------------------------------------------ AML file systems

    /// GET an Azure Managed Lustre file system (`amlFilesystems_Get`); `None` when it does not exist.
    pub async fn get_aml_filesystem(&self, id: &ResourceId) -> Result<Dated<Option<AmlFilesystem>>, AzureError> {
        self.get_optional("amlFilesystems.get", id, AML_FILESYSTEMS_API_VERSION).await
    }

    /// List the AML file systems of a subscription (`amlFilesystems_List`) or resource group
    /// (`amlFilesystems_ListByResourceGroup`), following same-origin `nextLink`s.
    pub async fn list_aml_filesystems(
        &self,
        subscription: &str,
        resource_group: Option<&str>,
    ) -> Result<Dated<Vec<AmlFilesystem>>, AzureError> {
        self.list_arm(
            "amlFilesystems.list",
            subscription,
            resource_group,
            "Microsoft.StorageCache/amlFilesystems",
            AML_FILESYSTEMS_API_VERSION,
        )
        .await
    }

    /// PUT an AML file system (`amlFilesystems_CreateOrUpdate`). Returns Azure's 200/201 body, or `None` when
    /// Azure accepted it without one (202). Never waits for the long-running operation: re-observe with
    /// [`Azure::get_aml_filesystem`].
    pub async fn put_aml_filesystem(
        &self,
        id: &ResourceId,
        fs: &AmlFilesystem,
    ) -> Result<Dated<Option<AmlFilesystem>>, AzureError> {
        self.put_arm("amlFilesystems.put", id, fs, AML_FILESYSTEMS_API_VERSION).await
    }

    /// PATCH an AML file system (`amlFilesystems_Update`) with a JSON merge body, e.g.
    /// `AmlFilesystemUpdate::key(…).to_json()` for a new `keyEncryptionKey`. 200 or 202; non-blocking; not retried on
    /// 5xx (a PATCH is not guaranteed idempotent), only on 429.
    pub async fn patch_aml_filesystem(
        &self,
        id: &ResourceId,
        patch: &serde_json::Value,
    ) -> Result<Dated<()>, AzureError> {
        self.patch_arm("amlFilesystems.patch", id, patch, AML_FILESYSTEMS_API_VERSION).await
    }

    /// DELETE an AML file system (`amlFilesystems_Delete`). Non-blocking: `Accepted` (202) while Azure works on it,
    /// `Gone` (200, 204, 404) once it no longer exists.
    pub async fn delete_aml_filesystem(&self, id: &ResourceId) -> Result<Dated<DeleteOutcome>, AzureError> {
        self.delete_arm("amlFilesystems.delete", id, AML_FILESYSTEMS_API_VERSION).await
    }

    // ------------------------------------------------------------------------------------------------ ARM CRUD

    /// One paged list of `{scope}/providers/{provider_type}` for a subscription or resource group, following
    /// `nextLink` on the ARM endpoint's origin only.
    async fn list_arm<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        subscription: &str,
        resource_group: Option<&str>,
        provider_type: &str,
        api_version: &str,
    ) -> Result<Dated<Vec<T>>, AzureError> {
        let scope = match resource_group {
            Some(rg) => ResourceId::resource_group_scope(subscription, rg),
            None => ResourceId::subscription_scope(subscription),
        };
        let first = self.arm_url(&format!("{scope}/providers/{provider_type}"), api_version);
        let mut url = Some(first);
        let mut all = Vec::new();
        let mut last: Option<Resp> = None;
        let mut pages = 0;
        while let Some(u) = url.take() {
            pages += 1;
            if pages > 1000 {
                return Err(AzureError::Decode(format!("more than 1000 pages of {provider_type}; nextLink loop?")));
            }
            let call = self.inner.send(self.arm(op, Method::GET, u, subscription));
            // Only the first page may be deferred (see `ratelimit::patiently`).
            let resp = if pages == 1 { call.await? } else { ratelimit::patiently(call).await? };
            if resp.status != 200 {
                return Err(resp.error());
            }
            let page: models::Page<T> = resp.json()?;
            all.extend(page.value);
            if let Some(next) = page.next_link.filter(|n| !n.is_empty()) {
                url = Some(self.inner.same_origin_link(&next, &self.inner.cfg.cloud.arm_endpoint)?);
            }
            last = Some(resp);
        }
        let resp = last.expect("at least one page");
        Ok(Dated::from_resp(all, &resp))
    }

    /// PUT `body` at `id`: the 200/201 body, or `None` after a 202 (or an empty 200/201). Not re-read here: the
    /// caller observes anyway, and a read deferred by the budget after the PUT was sent would have looked as if
    /// nothing had been sent (a create sent twice, at 10,000 caches).
    async fn put_arm<B, T>(
        &self,
        op: &'static str,
        id: &ResourceId,
        body: &B,
        api_version: &str,
    ) -> Result<Dated<Option<T>>, AzureError>
    where
        B: serde::Serialize,
        T: serde::de::DeserializeOwned,
    {
        let mut req = self.arm(op, Method::PUT, self.arm_url(&id.to_string(), api_version), id.subscription());
        req.body = Some(serde_json::to_vec(body).map_err(|e| AzureError::Input(e.to_string()))?);
        let resp = self.inner.send(req).await?;
        match resp.status {
            200 | 201 if !resp.body.is_empty() => Ok(Dated::from_resp(Some(resp.json()?), &resp)),
            200..=202 => Ok(Dated::from_resp(None, &resp)),
            _ => Err(resp.error()),
        }
    }

    /// PATCH `id` with a JSON merge body; 200 to 202 is success.
    async fn patch_arm(
        &self,
        op: &'static str,
        id: &ResourceId,
        patch: &serde_json::Value,
        api_version: &str,
    ) -> Result<Dated<()>, AzureError> {
        let mut req = self.arm(op, Method::PATCH, self.arm_url(&id.to_string(), api_version), id.subscription());
        req.body = Some(serde_json::to_vec(patch).map_err(|e| AzureError::Input(e.to_string()))?);
        let resp = self.inner.send(req).await?;
        match resp.status {
            200..=202 => Ok(Dated::from_resp((), &resp)),
            _ => Err(resp.error()),
        }
    }

    /// DELETE `id`: 202 is `Accepted`; 200, 204 and 404 are `Gone`.
    async fn delete_arm(
        &self,
        op: &'static str,
        id: &ResourceId,
        api_version: &str,
    ) -> Result<Dated<DeleteOutcome>, AzureError> {
        let req = self.arm(op, Method::DELETE, self.arm_url(&id.to_string(), api_version), id.subscription());
        let resp = self.inner.send(req).await?;
        match resp.status {
            202 => Ok(Dated::from_resp(DeleteOutcome::Accepted, &resp)),
            200 | 204 => Ok(Dated::from_resp(DeleteOutcome::Gone, &resp)),
            404 if resp.absent() => Ok(Dated::from_resp(DeleteOutcome::Gone, &resp)),
            _ => Err(resp.error()),
        }
    }

    // ------------------------------------------------------------------------------------------------ vaults

    /// GET a Key Vault (management plane); `None` when it does not exist.
    pub async fn get_vault(&self, id: &ResourceId) -> Result<Dated<Option<Vault>>, AzureError> {
        self.get_optional("vaults.get", id, VAULTS_API_VERSION).await
    }

    /// PATCH `enableSoftDelete: true, enablePurgeProtection: true` (both irreversible; `false` is never sent).
    pub async fn enable_vault_protection(&self, id: &ResourceId) -> Result<Dated<Vault>, AzureError> {
        let mut req = self.arm(
            "vaults.patch",
            Method::PATCH,
            self.arm_url(&id.to_string(), VAULTS_API_VERSION),
            id.subscription(),
        );
        // Setting both flags to true is idempotent, so this PATCH may be retried like a PUT.
        req.idempotent = true;
        let body = json!({"properties": {"enableSoftDelete": true, "enablePurgeProtection": true}});
        req.body = Some(body.to_string().into_bytes());
        let resp = self.inner.send(req).await?;
        match resp.status {
            200 | 201 => Ok(Dated::from_resp(resp.json()?, &resp)),
            _ => Err(resp.error()),
        }
    }

    async fn update_access_policy(
        &self,
        op: &'static str,
        kind: &str,
        vault: &ResourceId,
        entries: &[(&str, &str)],
        key_permissions: &[&str],
    ) -> Result<(), AzureError> {
        let url = self.arm_url(&format!("{vault}/accessPolicies/{kind}"), VAULTS_API_VERSION);
        let mut req = self.arm(op, Method::PUT, url, vault.subscription());
        let entries: Vec<serde_json::Value> = entries
            .iter()
            .map(|(tenant_id, object_id)| {
                json!({"tenantId": tenant_id, "objectId": object_id, "permissions": {"keys": key_permissions}})
            })
            .collect();
        let body = json!({"properties": {"accessPolicies": entries}});
        req.body = Some(body.to_string().into_bytes());
        let resp = self.inner.send(req).await?;
        match resp.status {
            200 | 201 => Ok(()),
            _ => Err(resp.error()),
        }
    }

    /// `PUT …/vaults/{v}/accessPolicies/add`: grant `key_permissions` on keys to `object_id`.
    pub async fn add_access_policy(
        &self,
        vault: &ResourceId,
        tenant_id: &str,
        object_id: &str,
        key_permissions: &[&str],
    ) -> Result<(), AzureError> {
        self.add_access_policies(vault, &[(tenant_id, object_id)], key_permissions).await
    }

    /// `PUT …/vaults/{v}/accessPolicies/add` for several identities at once, each `(tenant_id, object_id)`: at most
    /// [`ACCESS_POLICIES_PER_UPDATE`] (the Key Vault spec's `VaultAccessPolicyProperties`: "an array of 0 to 16
    /// identities").
    pub async fn add_access_policies(
        &self,
        vault: &ResourceId,
        entries: &[(&str, &str)],
        key_permissions: &[&str],
    ) -> Result<(), AzureError> {
        if entries.is_empty() || entries.len() > ACCESS_POLICIES_PER_UPDATE {
            return Err(AzureError::Input(format!(
                "an access-policy update takes 1 to {ACCESS_POLICIES_PER_UPDATE} identities, not {}",
                entries.len()
            )));
        }
        self.update_access_policy("accessPolicies.add", "add", vault, entries, key_permissions).await
    }

    /// `PUT …/vaults/{v}/accessPolicies/remove` for the CMK key permissions of `object_id`.
    pub async fn remove_access_policy(
        &self,
        vault: &ResourceId,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<(), AzureError> {
        match self
            .update_access_policy(
                "accessPolicies.remove",
                "remove",
                vault,
                &[(tenant_id, object_id)],
                &CMK_KEY_PERMISSIONS,
            )
            .await
        {
            // A vault that no longer exists holds no policy.
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    // ------------------------------------------------------------------------------------------------ RBAC

    fn role_assignment_url(&self, scope: &ResourceId, principal_id: &str, role_definition_guid: &str) -> Url {
        let name = role_assignment_name(scope, principal_id, role_definition_guid);
        self.arm_url(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            ROLE_ASSIGNMENTS_API_VERSION,
        )
    }

    /// Whether `principal_id` holds `role_definition_guid` at `scope` or above (one read:
    /// `roleAssignments?$filter=principalId eq '…'` at the scope, which also returns inherited assignments).
    pub async fn has_role_assignment(
        &self,
        scope: &ResourceId,
        principal_id: &str,
        role_definition_guid: &str,
    ) -> Result<bool, AzureError> {
        let mut url = self.arm_url(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments"),
            ROLE_ASSIGNMENTS_API_VERSION,
        );
        url.query_pairs_mut().append_pair("$filter", &format!("principalId eq '{principal_id}'"));
        let scope_lower = scope.to_string().to_ascii_lowercase();
        // With this filter ARM returns the principal's assignments at, above and below the scope; one above may sit
        // on a management group the subscription belongs to (role assignments REST reference, "List role
        // assignments for a scope": `$filter=principalId eq {id}`). One below (e.g. on a single key) does not cover
        // the vault.
        let covers = |ra: &models::RoleAssignment| {
            let role = ra.properties.role_definition_id.rsplit('/').next().unwrap_or_default();
            let at = ra.properties.scope.as_deref().unwrap_or_default().trim_end_matches('/').to_ascii_lowercase();
            role.eq_ignore_ascii_case(role_definition_guid)
                && ra.properties.principal_id.eq_ignore_ascii_case(principal_id)
                && (at.is_empty()
                    || at == "/"
                    || scope_lower == at
                    || scope_lower.starts_with(&format!("{at}/"))
                    || at.starts_with("/providers/microsoft.management/managementgroups/"))
        };
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(u) = next.take() {
            pages += 1;
            if pages > 1000 {
                return Err(AzureError::Decode("more than 1000 pages of role assignments; nextLink loop?".into()));
            }
            let resp = self.inner.send(self.arm("roleAssignments.list", Method::GET, u, scope.subscription())).await?;
            if resp.status != 200 {
                return Err(resp.error());
            }
            let page: models::Page<models::RoleAssignment> = resp.json()?;
            if page.value.iter().any(covers) {
                return Ok(true);
            }
            if let Some(link) = page.next_link.filter(|n| !n.is_empty()) {
                next = Some(self.inner.same_origin_link(&link, &self.inner.cfg.cloud.arm_endpoint)?);
            }
        }
        Ok(false)
    }

    /// Assign a role to a service principal at `scope` under the deterministic name [`role_assignment_name`]. An
    /// existing identical assignment (409 `RoleAssignmentExists`) counts as success.
    pub async fn put_role_assignment(
        &self,
        scope: &ResourceId,
        principal_id: &str,
        role_definition_guid: &str,
    ) -> Result<(), AzureError> {
        let url = self.role_assignment_url(scope, principal_id, role_definition_guid);
        let mut req = self.arm("roleAssignments.put", Method::PUT, url, scope.subscription());
        let body = json!({"properties": {
            "roleDefinitionId": format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{}",
                scope.subscription(),
                role_definition_guid
            ),
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
        }});
        req.body = Some(body.to_string().into_bytes());
        let resp = self.inner.send(req).await?;
        match resp.status {
            200 | 201 => Ok(()),
            409 => {
                let e = resp.error();
                if e.code().is_some_and(|c| c.eq_ignore_ascii_case("RoleAssignmentExists")) { Ok(()) } else { Err(e) }
            }
            _ => Err(resp.error()),
        }
    }

    /// Delete the assignment made by [`Azure::put_role_assignment`]; absent counts as success.
    pub async fn delete_role_assignment(
        &self,
        scope: &ResourceId,
        principal_id: &str,
        role_definition_guid: &str,
    ) -> Result<(), AzureError> {
        let url = self.role_assignment_url(scope, principal_id, role_definition_guid);
        let resp =
            self.inner.send(self.arm("roleAssignments.delete", Method::DELETE, url, scope.subscription())).await?;
        match resp.status {
            200 | 202 | 204 => Ok(()),
            404 if resp.absent() => Ok(()),
            _ => Err(resp.error()),
        }
    }

    // ------------------------------------------------------------------------------------------------ identities

    /// GET a user-assigned managed identity; `None` when it does not exist.
    pub async fn get_user_assigned_identity(
        &self,
        id: &ResourceId,
    ) -> Result<Option<UserAssignedIdentity>, AzureError> {
        Ok(self.get_optional("identities.get", id, IDENTITIES_API_VERSION).await?.value)
    }

    // ------------------------------------------------------------------------------------------------ keys

    fn key_url(vault_uri: &Url, segments: &[&str]) -> Result<Url, AzureError> {
        if vault_uri.scheme() != "https" {
            return Err(AzureError::Auth(format!("refusing non-https Key Vault URI {vault_uri}").into()));
        }
        let mut u = vault_uri.clone();
        u.set_query(None);
        u.set_fragment(None);
        {
            let mut p = u.path_segments_mut().map_err(|_| AzureError::Decode(format!("bad vault URI {vault_uri}")))?;
            p.clear();
            p.push("keys");
            for s in segments {
                p.push(s);
            }
        }
        u.query_pairs_mut().append_pair("api-version", KEYVAULT_API_VERSION);
        Ok(u)
    }

    /// GET a key (latest version when `version` is `None`) from the Key Vault data plane, with the 401 Bearer
    /// challenge flow. `None` when the key (or version) does not exist.
    pub async fn get_key(
        &self,
        vault_uri: &Url,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<KeyBundle>, AzureError> {
        let mut segs = vec![name];
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            segs.push(v);
        }
        let url = Self::key_url(vault_uri, &segs)?;
        let resp = self.inner.send_keyvault("keys.get", url).await?;
        match resp.status {
            200 => Ok(Some(resp.json()?)),
            404 if resp.absent() => Ok(None),
            _ => Err(resp.error()),
        }
    }

    /// List the versions of a key (`GET /keys/{name}/versions`, all pages); `None` when the key does not exist.
    pub async fn list_key_versions(&self, vault_uri: &Url, name: &str) -> Result<Option<Vec<KeyItem>>, AzureError> {
        let mut url = Some(Self::key_url(vault_uri, &[name, "versions"])?);
        let mut all = Vec::new();
        let mut pages = 0;
        while let Some(u) = url.take() {
            pages += 1;
            if pages > 1000 {
                return Err(AzureError::Decode("more than 1000 pages of key versions".into()));
            }
            let resp = self.inner.send_keyvault("keys.versions", u).await?;
            match resp.status {
                200 => {}
                404 if resp.absent() => return Ok(None),
                _ => return Err(resp.error()),
            }
            let page: models::KeyListResult = resp.json()?;
            all.extend(page.value);
            if let Some(next) = page.next_link.filter(|n| !n.is_empty()) {
                url = Some(self.inner.same_origin_link(&next, vault_uri)?);
            }
        }
        Ok(Some(all))
    }
}

#[cfg(test)]
mod tests;

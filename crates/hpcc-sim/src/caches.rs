//! `Microsoft.StorageCache/caches`, and what the resource provider's other handlers share with it: the key
//! reference rules, long-running-operation records and headers (`ascOperations` itself is answered by
//! `operations`).
//!
//! Handlers validate and translate; the clock-driven state machine lives in [`super::state::CacheTimeline`].

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::clock::arm_time;
use super::route::{Ctx, Route};
use super::state::{
    Cache, CacheEncryption, CacheIdentity, CacheTimeline, DELETE_DURATION, OpKind, OpTarget, Operation, Principal,
    Stage, UPDATE_DURATION, World, new_uuid, parse_key_url, sdur, validate_cmk_key,
};
use super::vaults::page;
use super::wire::{Out, Req, method_not_allowed, resource_not_found};

/// SKUs and their allowed cache sizes (GB). Read-write SKUs: the `Skus_List` example (2026-08-01). Read-only
/// SKUs (`Standard_L*`): not in any Azure spec example read; sizes from Terraform azurerm `azurerm_hpc_cache`
/// (website/docs/r/hpc_cache.html.markdown: "`Standard_L4_5G` must be set to `21623`. `Standard_L9G` to `43246`
/// and `Standard_L16G` to `86491`", enforced in `hpc_cache_resource.go`) — unverified against the service.
pub const SKUS: &[(&str, &[i64])] = &[
    ("Standard_2G", &[3072, 6144, 12288]),
    ("Standard_4G", &[6144, 12288, 24576]),
    ("Standard_8G", &[12288, 24576, 49152]),
    ("Standard_L4_5G", &[21623]),
    ("Standard_L9G", &[43246]),
    ("Standard_L16G", &[86491]),
];

/// The retirement answer to every create, verbatim from Terraform azurerm PR 29671 (the acceptance tests' real
/// 409 response: "OperationNotAllowed: Unable to create HPC Cache due to product retirement. Please open a
/// support ticket if you reached this in error.").
pub const RETIREMENT_MESSAGE: &str =
    "Unable to create HPC Cache due to product retirement. Please open a support ticket if you reached this in error.";

/// Seconds clients are asked to wait between polls.
pub const RETRY_AFTER_SECS: u64 = 10;

/// Properties kept as sent and echoed back (secrets removed).
const PASSTHROUGH: &[&str] = &["networkSettings", "securitySettings", "directoryServicesSettings", "upgradeSettings"];

pub fn handle(ctx: &Ctx, w: &mut World, r: &Req, route: &Route) -> Out {
    match (route, &r.method) {
        (Route::Cache { sub, rg, name }, m) => {
            if !valid_cache_name(name) {
                return Out::arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidResourceName",
                    format!("The cache name '{name}' is invalid. It must match the pattern '^[-0-9a-zA-Z_]{{1,80}}$'."),
                );
            }
            let key = cache_key(sub, rg, name);
            match *m {
                Method::GET => match w.caches.get(&key) {
                    Some(c) => Out::json(StatusCode::OK, cache_json(w, c, ctx.now)),
                    None => resource_not_found("Microsoft.StorageCache/caches", name, rg),
                },
                Method::PUT => put(ctx, w, r, sub, rg, name),
                Method::PATCH => patch(ctx, w, r, &key, rg, name),
                Method::DELETE => delete(ctx, w, &key),
                _ => method_not_allowed(&r.method),
            }
        }
        (Route::CachesInRg { sub, rg }, &Method::GET) => {
            let listed: Vec<&Cache> = w
                .caches
                .values()
                .filter(|c| c.subscription_id.eq_ignore_ascii_case(sub) && c.resource_group.eq_ignore_ascii_case(rg))
                .collect();
            page(ctx, r, ctx.cache_page_size, listed.into_iter(), |c| cache_json(w, c, ctx.now))
        }
        (Route::CachesInSub { sub }, &Method::GET) => {
            let listed: Vec<&Cache> =
                w.caches.values().filter(|c| c.subscription_id.eq_ignore_ascii_case(sub)).collect();
            page(ctx, r, ctx.cache_page_size, listed.into_iter(), |c| cache_json(w, c, ctx.now))
        }
        _ => method_not_allowed(&r.method),
    }
}

pub fn valid_cache_name(n: &str) -> bool {
    (1..=80).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn cache_key(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.storagecache/caches/{name}")
        .to_ascii_lowercase()
}

/// Normalised region name (`West US` → `westus`).
pub fn norm_location(l: &str) -> String {
    l.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

pub fn bad(code: &str, msg: impl Into<String>) -> Out {
    Out::arm_error(StatusCode::BAD_REQUEST, code, msg)
}

pub fn invalid_param(target: &str, msg: impl Into<String>) -> Out {
    Out::json(
        StatusCode::BAD_REQUEST,
        json!({"error": {"code": "InvalidParameter", "message": msg.into(), "target": target}}),
    )
}

/// What a PUT/PATCH body says about the cache (absent fields = `None`).
#[derive(Debug, Default)]
struct Spec {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    sku: Option<String>,
    size: Option<i64>,
    subnet: Option<String>,
    identity: Option<(String, Vec<String>)>,
    encryption: Option<(String, String, Option<bool>)>,
    encryption_present: bool,
    passthrough: Map<String, Value>,
    zones: Option<Value>,
}

fn parse_spec(body: &Value) -> Result<Spec, Out> {
    let Some(obj) = body.as_object() else {
        return Err(bad(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'expected a JSON object'.",
        ));
    };
    let mut s = Spec::default();
    if let Some(l) = obj.get("location") {
        s.location =
            Some(l.as_str().ok_or_else(|| invalid_param("location", "location must be a string."))?.to_string());
    }
    if let Some(t) = obj.get("tags").filter(|t| !t.is_null()) {
        let m = t.as_object().ok_or_else(|| invalid_param("tags", "tags must be an object of strings."))?;
        let mut tags = BTreeMap::new();
        for (k, v) in m {
            tags.insert(
                k.clone(),
                v.as_str().ok_or_else(|| invalid_param("tags", "tag values must be strings."))?.to_string(),
            );
        }
        s.tags = Some(tags);
    }
    if let Some(sku) = obj.get("sku").filter(|v| !v.is_null()) {
        s.sku = Some(
            sku["name"].as_str().ok_or_else(|| invalid_param("sku.name", "sku.name must be a string."))?.to_string(),
        );
    }
    if let Some(id) = obj.get("identity").filter(|v| !v.is_null()) {
        let t = id["type"].as_str().ok_or_else(|| invalid_param("identity.type", "identity.type is required."))?;
        let t = ["SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned", "None"]
            .into_iter()
            .find(|k| k.eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                invalid_param(
                    "identity.type",
                    format!("The identity type '{t}' is invalid. Allowed values are 'SystemAssigned', 'UserAssigned', 'SystemAssigned, UserAssigned', 'None'."),
                )
            })?;
        let uai: Vec<String> = match &id["userAssignedIdentities"] {
            Value::Object(m) => m.keys().cloned().collect(),
            Value::Null => vec![],
            _ => {
                return Err(invalid_param(
                    "identity.userAssignedIdentities",
                    "userAssignedIdentities must be an object.",
                ));
            }
        };
        s.identity = Some((t.to_string(), uai));
    }
    let props = match obj.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(invalid_param("properties", "properties must be an object.")),
    };
    if let Some(v) = props.get("cacheSizeGB").filter(|v| !v.is_null()) {
        s.size =
            Some(v.as_i64().ok_or_else(|| invalid_param("properties.cacheSizeGB", "cacheSizeGB must be an integer."))?);
    }
    if let Some(v) = props.get("subnet").filter(|v| !v.is_null()) {
        s.subnet =
            Some(v.as_str().ok_or_else(|| invalid_param("properties.subnet", "subnet must be a string."))?.to_string());
    }
    if let Some(e) = props.get("encryptionSettings").filter(|v| !v.is_null()) {
        s.encryption_present = true;
        let rot = match &e["rotationToLatestKeyVersionEnabled"] {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            _ => {
                return Err(invalid_param(
                    "properties.encryptionSettings.rotationToLatestKeyVersionEnabled",
                    "must be a boolean.",
                ));
            }
        };
        let kek = &e["keyEncryptionKey"];
        if kek.is_null() {
            if rot.is_some() {
                s.encryption = Some((String::new(), String::new(), rot));
            }
        } else {
            let url = kek["keyUrl"].as_str().ok_or_else(|| {
                invalid_param(
                    "properties.encryptionSettings.keyEncryptionKey.keyUrl",
                    "keyEncryptionKey.keyUrl is required.",
                )
            })?;
            let vault = kek["sourceVault"]["id"].as_str().ok_or_else(|| {
                invalid_param(
                    "properties.encryptionSettings.keyEncryptionKey.sourceVault.id",
                    "keyEncryptionKey.sourceVault.id is required.",
                )
            })?;
            s.encryption = Some((url.to_string(), vault.to_string(), rot));
        }
    }
    for k in PASSTHROUGH {
        if let Some(v) = props.get(*k).filter(|v| !v.is_null()) {
            if !v.is_object() {
                return Err(invalid_param(&format!("properties.{k}"), format!("{k} must be an object.")));
            }
            s.passthrough.insert(k.to_string(), v.clone());
        }
    }
    if let Some(z) = props.get("zones").filter(|v| !v.is_null()) {
        if !z.as_array().is_some_and(|a| a.len() <= 1 && a.iter().all(Value::is_string)) {
            return Err(invalid_param("properties.zones", "zones must be an array with at most one zone."));
        }
        s.zones = Some(z.clone());
    }
    Ok(s)
}

/// Validate a key reference for a cache in `sub`/`location`: vault rules, then key rules.
pub fn validate_encryption(
    w: &World,
    sub: &str,
    location: &str,
    key_url: &str,
    source_vault_id: &str,
    rotation: Option<bool>,
    now: Timestamp,
) -> Result<CacheEncryption, Out> {
    validate_key_reference(w, sub, location, key_url, source_vault_id, rotation, "cache", now)
}

/// Validate a key reference for a resource (`what`: "cache", "file system") in `sub`/`location`: vault rules, then
/// key rules.
#[allow(clippy::too_many_arguments)]
pub fn validate_key_reference(
    w: &World,
    sub: &str,
    location: &str,
    key_url: &str,
    source_vault_id: &str,
    rotation: Option<bool>,
    what: &str,
    now: Timestamp,
) -> Result<CacheEncryption, Out> {
    let target = "properties.encryptionSettings.keyEncryptionKey";
    let ku = parse_key_url(key_url).ok_or_else(|| {
        invalid_param(&format!("{target}.keyUrl"), format!("The key URL '{key_url}' is not a valid Key Vault key URL (https://{{vault}}.vault.azure.net/keys/{{name}}/{{version}})."))
    })?;
    let sv_name = source_vault_id.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    let sv_segs: Vec<&str> = source_vault_id.split('/').filter(|s| !s.is_empty()).collect();
    let sv_ok = sv_segs.len() == 8
        && sv_segs[0].eq_ignore_ascii_case("subscriptions")
        && sv_segs[5].eq_ignore_ascii_case("Microsoft.KeyVault")
        && sv_segs[6].eq_ignore_ascii_case("vaults");
    if !sv_ok || !sv_name.eq_ignore_ascii_case(&ku.vault) {
        return Err(invalid_param(
            &format!("{target}.sourceVault.id"),
            format!("The source vault '{source_vault_id}' does not match the vault of key URL '{key_url}'."),
        ));
    }
    let Some(vault) = w.vaults.get(&ku.vault.to_ascii_lowercase()) else {
        return Err(bad("KeyVaultNotFound", format!("The key vault '{source_vault_id}' was not found.")));
    };
    if !vault.id().eq_ignore_ascii_case(&format!("/{}", sv_segs.join("/"))) {
        return Err(bad("KeyVaultNotFound", format!("The key vault '{source_vault_id}' was not found.")));
    }
    if !vault.subscription_id.eq_ignore_ascii_case(sub) {
        return Err(bad(
            "KeyVaultSubscriptionMismatch",
            format!(
                "The key vault '{}' is in subscription '{}'. The key vault must be in the same subscription as the {what} ('{sub}').",
                vault.name, vault.subscription_id
            ),
        ));
    }
    if norm_location(&vault.location) != norm_location(location) {
        return Err(bad(
            "KeyVaultLocationMismatch",
            format!(
                "The key vault '{}' is in region '{}'. The key vault must be in the same region as the {what} ('{location}').",
                vault.name, vault.location
            ),
        ));
    }
    // Soft delete is not a reason to refuse: "Azure HPC Cache will enable soft delete if it is not already
    // configured on the key vault" (MicrosoftDocs/azure-docs articles/hpc-cache/customer-keys.md); the caller
    // turns it on (`enable_soft_delete`).
    if vault.enable_purge_protection != Some(true) {
        return Err(bad(
            "KeyVaultPurgeProtectionNotEnabled",
            format!(
                "The key vault '{}' must have purge protection enabled to be used for {what} encryption.",
                vault.name
            ),
        ));
    }
    let Some(key) = vault.key(&ku.name) else {
        return Err(bad("KeyNotFound", format!("The key '{}' was not found in key vault '{}'.", ku.name, vault.name)));
    };
    // A versioned key URL is required, also with rotationToLatestKeyVersionEnabled: the portal asks for a version
    // ("At cache creation time you must specify a vault, key, and key version", customer-keys.md) and Terraform
    // validates `key_vault_key_id` with `NestedItemId` ("expected a key vault versioned ID but no version
    // information was found in"). Azure's own error body for this is not documented: code and text are the
    // simulator's.
    let Some(version) = &ku.version else {
        return Err(invalid_param(
            &format!("{target}.keyUrl"),
            format!(
                "The key URL '{key_url}' has no key version. Specify a versioned key URL (https://{{vault}}.vault.azure.net/keys/{{name}}/{{version}})."
            ),
        ));
    };
    let kv = key.versions.iter().find(|k| k.version.eq_ignore_ascii_case(version)).ok_or_else(|| {
        bad(
            "KeyVersionNotFound",
            format!("The version '{version}' of key '{}' was not found in key vault '{}'.", ku.name, vault.name),
        )
    })?;
    validate_cmk_key(key_url, kv, now).map_err(|p| bad(p.code, p.message))?;
    Ok(CacheEncryption {
        key_url: key_url.to_string(),
        source_vault_id: source_vault_id.to_string(),
        vault_name: vault.name.clone(),
        key_name: key.name.clone(),
        key_version: ku.version.clone(),
        rotation_to_latest_key_version_enabled: rotation,
        rotation_enabled_at: None,
    })
}

/// "Azure HPC Cache will enable soft delete if it is not already configured on the key vault" (customer-keys.md).
pub fn enable_soft_delete(w: &mut World, vault_name: &str, now: Timestamp) {
    if let Some(v) = w.vaults.get_mut(&vault_name.to_ascii_lowercase())
        && !v.enable_soft_delete
    {
        v.enable_soft_delete = true;
        v.last_modified_at = now;
    }
}

fn put(ctx: &Ctx, w: &mut World, r: &Req, sub: &str, rg: &str, name: &str) -> Out {
    let body = match r.json() {
        Ok(b) => b,
        Err(m) => return bad("InvalidRequestContent", m),
    };
    let spec = match parse_spec(&body) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let key = cache_key(sub, rg, name);
    if w.caches.contains_key(&key) {
        return update(ctx, w, &key, spec, true, rg, name);
    }
    if ctx.retired {
        return Out::arm_error(StatusCode::CONFLICT, "OperationNotAllowed", RETIREMENT_MESSAGE);
    }
    let Some(location) = spec.location.clone() else {
        return bad("LocationRequired", "The location property is required for this definition.");
    };
    let Some(sku) = spec.sku.clone() else {
        return invalid_param("sku.name", "The SKU name is required.");
    };
    let Some((_, sizes)) = SKUS.iter().find(|(s, _)| s.eq_ignore_ascii_case(&sku)) else {
        return invalid_param(
            "sku.name",
            format!(
                "The SKU '{sku}' is not supported. Supported SKUs: {}.",
                SKUS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            ),
        );
    };
    let Some(size) = spec.size else {
        return invalid_param("properties.cacheSizeGB", "cacheSizeGB is required.");
    };
    if !sizes.contains(&size) {
        return invalid_param(
            "properties.cacheSizeGB",
            format!("The cache size {size} GB is not valid for SKU '{sku}'. Valid sizes: {sizes:?}."),
        );
    }
    let Some(subnet) = spec.subnet.clone() else {
        return invalid_param("properties.subnet", "subnet is required.");
    };
    let ss: Vec<&str> = subnet.split('/').filter(|s| !s.is_empty()).collect();
    if ss.len() != 10
        || !ss[0].eq_ignore_ascii_case("subscriptions")
        || !ss[5].eq_ignore_ascii_case("Microsoft.Network")
        || !ss[6].eq_ignore_ascii_case("virtualNetworks")
        || !ss[8].eq_ignore_ascii_case("subnets")
    {
        return invalid_param("properties.subnet", format!("The subnet '{subnet}' is not a valid subnet resource id."));
    }
    // identity. A CMK create without `identity` is not refused: the cache gets a system-assigned identity, as in
    // the original flow where "the cache's identity ... does not exist until the cache is created" and is then
    // authorized on the vault (customer-keys.md, 2020 revision, before identities could be chosen).
    let wants_cmk = spec.encryption.as_ref().is_some_and(|(u, _, _)| !u.is_empty());
    let default_kind = if wants_cmk { "SystemAssigned" } else { "None" };
    let (kind, uai) = spec.identity.clone().unwrap_or_else(|| (default_kind.to_string(), vec![]));
    let wants_user = kind.contains("UserAssigned");
    if wants_user && uai.is_empty() {
        return invalid_param(
            "identity.userAssignedIdentities",
            "At least one user-assigned identity is required for identity type 'UserAssigned'.",
        );
    }
    if !wants_user && !uai.is_empty() {
        return invalid_param(
            "identity.userAssignedIdentities",
            format!(
                "userAssignedIdentities may only be given with identity type including 'UserAssigned', not '{kind}'."
            ),
        );
    }
    let mut user_assigned = BTreeMap::new();
    for id in &uai {
        match w.identities.get(&id.to_ascii_lowercase()) {
            Some(i) => {
                user_assigned.insert(id.clone(), (i.principal_id.clone(), i.client_id.clone()));
            }
            None => {
                return bad(
                    "FailedIdentityOperation",
                    format!(
                        "Identity operation for resource '{}' failed with error 'Failed to perform resource identity operation. Status: 'NotFound'. Response: '{{\"error\":{{\"code\":\"NotFound\",\"message\":\"Resource '{id}' not found.\"}}}}'.'.",
                        cache_key(sub, rg, name)
                    ),
                );
            }
        }
    }
    // encryption
    let encryption = match &spec.encryption {
        Some((url, vault, rot)) if !url.is_empty() => {
            if kind == "None" {
                return invalid_param(
                    "identity",
                    "A managed identity is required to use a customer-managed encryption key.",
                );
            }
            // `rotationToLatestKeyVersionEnabled: true` is not applied on create: "For new created resource
            // `automatically_rotate_key_to_latest_enabled` needs an additional update to set it to true"
            // (Terraform azurerm hpc_cache_resource.go). The cache reports false until an update sets it.
            let rot = rot.map(|_| false);
            match validate_encryption(w, sub, &location, url, vault, rot, ctx.now) {
                Ok(e) => Some(e),
                Err(o) => return o,
            }
        }
        Some(_) => {
            return invalid_param(
                "properties.encryptionSettings.keyEncryptionKey",
                "keyEncryptionKey is required when encryptionSettings is given.",
            );
        }
        None => None,
    };
    let system_principal_id = if kind.starts_with("SystemAssigned") {
        let oid = new_uuid();
        w.principals.insert(
            oid.clone(),
            Principal {
                object_id: oid.clone(),
                client_id: new_uuid(),
                secret: None,
                display_name: name.to_string(),
                kind: "ManagedIdentity".into(),
                arm_scopes: vec![],
                federated_credentials: vec![],
            },
        );
        Some(oid)
    } else {
        None
    };
    let cmk = encryption.is_some();
    if let Some(e) = &encryption {
        enable_soft_delete(w, &e.vault_name, ctx.now);
    }
    let cache = Cache {
        subscription_id: sub.to_string(),
        resource_group: rg.to_string(),
        name: name.to_string(),
        location: location.clone(),
        sku: SKUS.iter().find(|(s, _)| s.eq_ignore_ascii_case(&sku)).map(|s| s.0.to_string()).unwrap_or(sku),
        cache_size_gb: size,
        subnet,
        tags: spec.tags.clone().unwrap_or_default(),
        identity: Some(CacheIdentity { kind, system_principal_id, user_assigned }),
        encryption,
        extra_properties: spec.passthrough.clone(),
        zones: spec.zones.clone(),
        created_by: ctx.principal.to_string(),
        last_modified_by: ctx.principal.to_string(),
        last_modified_at: ctx.now,
        timeline: CacheTimeline {
            created_at: ctx.now,
            cmk,
            access_at: None,
            failed_at: None,
            updating_until: None,
            deleting_until: None,
        },
    };
    w.caches.insert(key.clone(), cache);
    w.tick(ctx.now);
    w.creates += 1;
    let op = new_operation(w, ctx, sub, &location, OpKind::Create, OpTarget::Cache, &key, None);
    // Caches_CreateOrUpdate documents 200, 201 (+ Location, Retry-After) and 202 (Location, Retry-After, no
    // body) — storagecache 2026-08-01 openapi.json; the example's 202 is `{}`. A deterministic share of creates
    // (every `create_accepted_every`-th) answers 202 so clients must handle it.
    if ctx.create_accepted_every > 0 && w.creates.is_multiple_of(u64::from(ctx.create_accepted_every)) {
        return accepted_headers(ctx, Out::empty(StatusCode::ACCEPTED), sub, &location, &op);
    }
    let c = &w.caches[&key];
    let out = Out::json(StatusCode::CREATED, cache_json(w, c, ctx.now));
    lro_headers(ctx, out, sub, &location, &op)
}

/// The 202 of Caches_CreateOrUpdate: `Location` (the operation monitor) and `Retry-After`, as the 2026-08-01 spec
/// declares for it (no `Azure-AsyncOperation`).
fn accepted_headers(ctx: &Ctx, out: Out, sub: &str, location: &str, op: &str) -> Out {
    let base = ctx.endpoints.base_url.as_str().trim_end_matches('/');
    let loc = norm_location(location);
    let v = ctx.api_version;
    out.with_header(
        "location",
        format!("{base}/subscriptions/{sub}/providers/Microsoft.StorageCache/locations/{loc}/ascOperations/{op}?monitor=true&api-version={v}"),
    )
    .with_header("retry-after", RETRY_AFTER_SECS.to_string())
}

/// Record a long-running operation on the resource `key` (of kind `target`) and return its id.
#[allow(clippy::too_many_arguments)]
pub fn new_operation(
    w: &mut World,
    ctx: &Ctx,
    sub: &str,
    location: &str,
    kind: OpKind,
    target: OpTarget,
    key: &str,
    done_at: Option<Timestamp>,
) -> String {
    let id = new_uuid();
    w.operations.insert(
        id.clone(),
        Operation {
            id: id.clone(),
            subscription_id: sub.to_string(),
            location: norm_location(location),
            kind,
            target,
            resource_key: key.to_string(),
            start_time: ctx.now,
            status: "InProgress".into(),
            end_time: None,
            error: None,
            done_at,
        },
    );
    w.tick(ctx.now);
    id
}

/// `Azure-AsyncOperation` (the operation), `Location` (its `monitor=true` form) and `Retry-After`.
pub fn lro_headers(ctx: &Ctx, out: Out, sub: &str, location: &str, op: &str) -> Out {
    let base = ctx.endpoints.base_url.as_str().trim_end_matches('/');
    let loc = norm_location(location);
    let v = ctx.api_version;
    out.with_header(
        "azure-asyncoperation",
        format!("{base}/subscriptions/{sub}/providers/Microsoft.StorageCache/locations/{loc}/ascOperations/{op}?api-version={v}"),
    )
    .with_header(
        "location",
        format!("{base}/subscriptions/{sub}/providers/Microsoft.StorageCache/locations/{loc}/ascOperations/{op}?monitor=true&api-version={v}"),
    )
    .with_header("retry-after", RETRY_AFTER_SECS.to_string())
}

fn patch(ctx: &Ctx, w: &mut World, r: &Req, key: &str, rg: &str, name: &str) -> Out {
    if !w.caches.contains_key(key) {
        return resource_not_found("Microsoft.StorageCache/caches", name, rg);
    }
    let body = if r.body.is_empty() {
        json!({})
    } else {
        match r.json() {
            Ok(b) => b,
            Err(m) => return bad("InvalidRequestContent", m),
        }
    };
    let spec = match parse_spec(&body) {
        Ok(s) => s,
        Err(o) => return o,
    };
    update(ctx, w, key, spec, false, rg, name)
}

/// Apply a PUT (full) or PATCH (partial) to an existing cache.
fn update(ctx: &Ctx, w: &mut World, key: &str, spec: Spec, full_put: bool, rg: &str, name: &str) -> Out {
    let c = w.caches[key].clone();
    if c.timeline.deleting_until.is_some() {
        return Out::arm_error(StatusCode::CONFLICT, "Conflict", format!("The cache '{name}' is being deleted."));
    }
    if let Some(l) = &spec.location
        && norm_location(l) != norm_location(&c.location)
    {
        return bad(
            "InvalidResourceLocation",
            format!(
                "The resource '{name}' already exists in location '{}' in resource group '{rg}'. A resource with the same name cannot be created in location '{l}'. Please select a new resource name.",
                c.location
            ),
        );
    }
    let immutable = |what: &str| -> Out {
        Out::json(
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "PropertyChangeNotAllowed", "message": format!("Changing property '{what}' is not allowed."), "target": what}}),
        )
    };
    if spec.sku.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case(&c.sku)) {
        return immutable("sku.name");
    }
    if spec.size.is_some_and(|s| s != c.cache_size_gb) {
        return immutable("properties.cacheSizeGB");
    }
    if spec.subnet.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case(&c.subnet)) {
        return immutable("properties.subnet");
    }
    if let Some((kind, uai)) = &spec.identity {
        let cur = c.identity.as_ref().map(|i| i.kind.as_str()).unwrap_or("None");
        if kind != cur {
            return immutable("identity.type");
        }
        let cur_ids: Vec<String> = c
            .identity
            .as_ref()
            .map(|i| i.user_assigned.keys().map(|k| k.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let new_ids: Vec<String> = uai.iter().map(|k| k.to_ascii_lowercase()).collect();
        if cur_ids != new_ids {
            return immutable("identity.userAssignedIdentities");
        }
    }
    // CMK <-> Microsoft-managed switch is refused; key changes are allowed.
    let has_cmk = c.encryption.is_some();
    let wants_cmk = spec.encryption.as_ref().is_some_and(|(u, _, _)| !u.is_empty());
    if (full_put && has_cmk && !spec.encryption_present) || (!has_cmk && wants_cmk) {
        return immutable("properties.encryptionSettings");
    }
    let mut new_enc = c.encryption.clone();
    if let Some((url, vault, rot)) = &spec.encryption {
        if url.is_empty() {
            if let Some(e) = new_enc.as_mut() {
                set_rotation(e, *rot, &c.encryption, ctx.now);
            }
        } else {
            let mut enc = match validate_encryption(w, &c.subscription_id, &c.location, url, vault, *rot, ctx.now) {
                Ok(e) => e,
                Err(o) => return o,
            };
            let key_changed = c.encryption.as_ref().is_none_or(|e| !e.key_url.eq_ignore_ascii_case(&enc.key_url));
            if key_changed {
                // "It is by design that `automatically_rotate_key_to_latest_enabled` changes to `false` when
                // `key_vault_key_id` is changed, needs to do an additional update to set it back" (Terraform azurerm
                // hpc_cache_resource.go; PR 16972: "have confirmed with service team that this is by design"). Only
                // a change of the key URL resets it; an update with the same URL sets it as sent.
                let had_flag =
                    c.encryption.as_ref().is_some_and(|e| e.rotation_to_latest_key_version_enabled.is_some());
                enc.rotation_to_latest_key_version_enabled = (rot.is_some() || had_flag).then_some(false);
                enc.rotation_enabled_at = None;
            } else if !full_put && rot.is_none() {
                // a PATCH that leaves the flag out keeps it
                if let Some(cur) = &c.encryption {
                    enc.rotation_to_latest_key_version_enabled = cur.rotation_to_latest_key_version_enabled;
                    enc.rotation_enabled_at = cur.rotation_enabled_at;
                }
            } else {
                set_rotation(&mut enc, *rot, &c.encryption, ctx.now);
            }
            if key_changed && c.timeline.stage(ctx.now, &w.delays) == Stage::Healthy {
                let reach = c.identity.as_ref().and_then(|i| w.key_access_since(i, &enc)).is_some_and(|t| t <= ctx.now);
                if !reach {
                    return bad(
                        "KeyVaultAccessDenied",
                        format!(
                            "The cache identity does not have get, wrapKey and unwrapKey access to key '{}' in key vault '{}'.",
                            enc.key_name, enc.vault_name
                        ),
                    );
                }
            }
            enable_soft_delete(w, &enc.vault_name, ctx.now);
            new_enc = Some(enc);
        }
    }
    let healthy = c.timeline.stage(ctx.now, &w.delays) == Stage::Healthy;
    {
        let m = w.caches.get_mut(key).expect("exists");
        if let Some(t) = spec.tags.clone() {
            m.tags = t;
        } else if full_put {
            m.tags.clear();
        }
        if full_put {
            m.extra_properties = spec.passthrough.clone();
        } else {
            for (k, v) in spec.passthrough.clone() {
                m.extra_properties.insert(k, v);
            }
        }
        m.encryption = new_enc;
        m.last_modified_at = ctx.now;
        m.last_modified_by = ctx.principal.to_string();
        if healthy {
            m.timeline.updating_until = Some(ctx.now + sdur(UPDATE_DURATION));
        }
    }
    let (sub, loc) = (c.subscription_id.clone(), c.location.clone());
    if healthy {
        let done = Some(ctx.now + sdur(UPDATE_DURATION));
        let op = new_operation(w, ctx, &sub, &loc, OpKind::Update, OpTarget::Cache, key, done);
        if full_put {
            let out = Out::json(StatusCode::OK, cache_json(w, &w.caches[key], ctx.now));
            lro_headers(ctx, out, &sub, &loc, &op)
        } else {
            lro_headers(ctx, Out::empty(StatusCode::ACCEPTED), &sub, &loc, &op)
        }
    } else {
        Out::json(StatusCode::OK, cache_json(w, &w.caches[key], ctx.now))
    }
}

/// Set `rotationToLatestKeyVersionEnabled` as an update sent it (same key URL), remembering when it turned on.
fn set_rotation(e: &mut CacheEncryption, rot: Option<bool>, current: &Option<CacheEncryption>, now: Timestamp) {
    let was_on = current
        .as_ref()
        .and_then(|c| c.rotation_enabled_at.filter(|_| c.rotation_to_latest_key_version_enabled == Some(true)));
    e.rotation_to_latest_key_version_enabled = rot;
    e.rotation_enabled_at = match rot {
        Some(true) => was_on.or(Some(now)),
        _ => None,
    };
}

fn delete(ctx: &Ctx, w: &mut World, key: &str) -> Out {
    let Some(c) = w.caches.get(key).cloned() else {
        return Out::empty(StatusCode::NO_CONTENT);
    };
    let until = c.timeline.deleting_until.unwrap_or(ctx.now + sdur(DELETE_DURATION));
    if let Some(m) = w.caches.get_mut(key) {
        m.timeline.deleting_until = Some(until);
    }
    let op = new_operation(w, ctx, &c.subscription_id, &c.location, OpKind::Delete, OpTarget::Cache, key, Some(until));
    lro_headers(ctx, Out::empty(StatusCode::ACCEPTED), &c.subscription_id, &c.location, &op)
}

fn strip_secrets(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("credentials");
        for (_, x) in o.iter_mut() {
            strip_secrets(x);
        }
    }
}

/// The `Cache` resource as ARM returns it.
pub fn cache_json(w: &World, c: &Cache, now: Timestamp) -> Value {
    let (prov, health, desc) = c.timeline.status(now, &w.delays);
    let mut props = Map::new();
    props.insert("cacheSizeGB".into(), json!(c.cache_size_gb));
    props.insert("health".into(), json!({"state": health, "statusDescription": desc, "conditions": []}));
    if health == "Healthy" {
        props.insert("mountAddresses".into(), json!(["10.0.0.21", "10.0.0.22", "10.0.0.23"]));
    } else {
        props.insert("mountAddresses".into(), json!([]));
    }
    props.insert("provisioningState".into(), json!(prov));
    props.insert("subnet".into(), json!(c.subnet));
    props.insert(
        "networkSettings".into(),
        c.extra_properties.get("networkSettings").cloned().unwrap_or_else(|| json!({"mtu": 1500, "utilityAddresses": [], "dnsServers": [], "dnsSearchDomain": "", "ntpServer": "time.windows.com"})),
    );
    props.insert(
        "securitySettings".into(),
        c.extra_properties.get("securitySettings").cloned().unwrap_or_else(|| {
            json!({"accessPolicies": [{"name": "default", "accessRules": [{"scope": "default", "access": "rw", "suid": false, "submountAccess": true, "rootSquash": false}]}]})
        }),
    );
    for k in ["directoryServicesSettings", "upgradeSettings"] {
        if let Some(v) = c.extra_properties.get(k) {
            let mut v = v.clone();
            strip_secrets(&mut v);
            props.insert(k.into(), v);
        }
    }
    if let Some(e) = &c.encryption {
        let mut enc = json!({"keyEncryptionKey": {"keyUrl": e.key_url, "sourceVault": {"id": e.source_vault_id}}});
        if let Some(r) = e.rotation_to_latest_key_version_enabled {
            enc["rotationToLatestKeyVersionEnabled"] = json!(r);
        }
        props.insert("encryptionSettings".into(), enc);
    }
    if let Some(z) = &c.zones {
        props.insert("zones".into(), z.clone());
    }
    props.insert("primingJobs".into(), json!([]));
    props.insert("spaceAllocation".into(), json!([]));
    let mut body = json!({
        "id": c.id(),
        "name": c.name,
        "type": "Microsoft.StorageCache/Cache",
        "location": c.location,
        "tags": c.tags,
        "sku": {"name": c.sku},
        "systemData": {
            "createdBy": c.created_by,
            "createdByType": "Application",
            "createdAt": arm_time(c.timeline.created_at),
            "lastModifiedBy": c.last_modified_by,
            "lastModifiedByType": "Application",
            "lastModifiedAt": arm_time(c.last_modified_at),
        },
        "properties": props,
    });
    if let Some(i) = &c.identity {
        let mut id = json!({"type": i.kind});
        if let Some(p) = &i.system_principal_id {
            id["principalId"] = json!(p);
            id["tenantId"] = json!(w.tenant_id);
        }
        if !i.user_assigned.is_empty() {
            let m: Map<String, Value> = i
                .user_assigned
                .iter()
                .map(|(k, (p, cid))| (k.clone(), json!({"principalId": p, "clientId": cid})))
                .collect();
            id["userAssignedIdentities"] = Value::Object(m);
        }
        body["identity"] = id;
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locations() {
        assert!(valid_cache_name("sc1"));
        assert!(valid_cache_name("a-b_c"));
        assert!(!valid_cache_name("a.b"));
        assert!(!valid_cache_name(""));
        assert_eq!(norm_location("West US"), "westus");
    }

    #[test]
    fn spec_parsing_rejects_wrong_types() {
        assert!(parse_spec(&json!([])).is_err());
        assert!(parse_spec(&json!({"properties": {"cacheSizeGB": "big"}})).is_err());
        assert!(parse_spec(&json!({"identity": {"type": "Bogus"}})).is_err());
        let s = parse_spec(&json!({"identity": {"type": "systemassigned"}, "location": "westus"})).unwrap();
        assert_eq!(s.identity.unwrap().0, "SystemAssigned");
    }
}

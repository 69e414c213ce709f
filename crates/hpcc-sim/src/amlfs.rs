//! `Microsoft.StorageCache/amlFilesystems` (Azure Managed Lustre): PUT/GET/PATCH/DELETE and the lists.
//!
//! What differs from a cache (sources in `docs/simulator.md`): identities are `UserAssigned` or `None`; a
//! customer-managed key must already be usable by the identity when the create request arrives (no waiting for a
//! grant); creation is long (`SimConfig::aml_create_delay`); blob integration needs the HPC Cache Resource Provider
//! to hold two roles on the storage account, and a create without them is accepted and then fails. The clock-driven
//! part is [`super::state::AmlTimeline`].

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::caches::{
    bad, enable_soft_delete, invalid_param, lro_headers, new_operation, norm_location, validate_key_reference,
};
use super::clock::arm_time;
use super::route::{Ctx, Route};
use super::state::{
    AMLFS_BLOB_FAILURE_AFTER, AmlFilesystem, AmlTimeline, CacheEncryption, CacheIdentity, DELETE_DURATION, OpKind,
    OpTarget, UPDATE_DURATION, World, new_uuid, sdur,
};
use super::wire::{Out, Req, method_not_allowed, resource_not_found};

/// An AML file system SKU: throughput per TiB, smallest size and size step (TiB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AmlSku {
    pub name: &'static str,
    pub mbps_per_tib: u32,
    pub min_tib: u32,
    pub increment_tib: u32,
}

/// The SKUs and their sizes: Microsoft Learn "Create an Azure Managed Lustre file system using Azure Resource
/// Manager templates", *File system type and size options* (MicrosoftDocs/azure-stack-docs
/// `azure-managed-lustre/create-file-system-resource-manager.md`): Storage Min / Increment 48/48 TB (40 MB/s per
/// TiB), 16/16 (125), 8/8 (250), 4/4 (500). The listed maxima (768/128 TB) are not enforced: "If you are interested in
/// storage values larger than the listed maximum, please open a support ticket", and Terraform azurerm dropped its
/// maximum check (PR 23428).
pub const AMLFS_SKUS: &[AmlSku] = &[
    AmlSku { name: "AMLFS-Durable-Premium-40", mbps_per_tib: 40, min_tib: 48, increment_tib: 48 },
    AmlSku { name: "AMLFS-Durable-Premium-125", mbps_per_tib: 125, min_tib: 16, increment_tib: 16 },
    AmlSku { name: "AMLFS-Durable-Premium-250", mbps_per_tib: 250, min_tib: 8, increment_tib: 8 },
    AmlSku { name: "AMLFS-Durable-Premium-500", mbps_per_tib: 500, min_tib: 4, increment_tib: 4 },
];

/// The Lustre version the examples report (`clientInfo.lustreVersion`).
pub const LUSTRE_VERSION: &str = "2.15.0";

const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const RP_NAME: &str = "HPC Cache Resource Provider";

pub fn handle(ctx: &Ctx, w: &mut World, r: &Req, route: &Route) -> Out {
    match (route, &r.method) {
        (Route::AmlFilesystem { sub, rg, name }, m) => {
            if !valid_amlfs_name(name) {
                return bad(
                    "InvalidResourceName",
                    format!(
                        "The AML file system name '{name}' is invalid. It must match the pattern '^[0-9a-zA-Z][-0-9a-zA-Z_]{{0,78}}[0-9a-zA-Z]$'."
                    ),
                );
            }
            let key = amlfs_key(sub, rg, name);
            match *m {
                Method::GET => match w.aml_filesystems.get(&key) {
                    Some(f) => Out::json(StatusCode::OK, amlfs_json(f, ctx.now)),
                    None => resource_not_found("Microsoft.StorageCache/amlFilesystems", name, rg),
                },
                Method::PUT => put(ctx, w, r, sub, rg, name),
                Method::PATCH => patch(ctx, w, r, &key, rg, name),
                Method::DELETE => delete(ctx, w, &key),
                _ => method_not_allowed(&r.method),
            }
        }
        (Route::AmlFilesystemsInRg { sub, rg }, &Method::GET) => list(w, ctx.now, |f| {
            f.subscription_id.eq_ignore_ascii_case(sub) && f.resource_group.eq_ignore_ascii_case(rg)
        }),
        (Route::AmlFilesystemsInSub { sub }, &Method::GET) => {
            list(w, ctx.now, |f| f.subscription_id.eq_ignore_ascii_case(sub))
        }
        _ => method_not_allowed(&r.method),
    }
}

fn list(w: &World, now: Timestamp, keep: impl Fn(&AmlFilesystem) -> bool) -> Out {
    let value: Vec<Value> = w.aml_filesystems.values().filter(|f| keep(f)).map(|f| amlfs_json(f, now)).collect();
    Out::json(StatusCode::OK, json!({ "value": value }))
}

/// `^[0-9a-zA-Z][-0-9a-zA-Z_]{0,78}[0-9a-zA-Z]$` (the spec's `amlFilesystemName`).
pub fn valid_amlfs_name(n: &str) -> bool {
    let b = n.as_bytes();
    (2..=80).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

pub fn amlfs_key(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.storagecache/amlfilesystems/{name}")
        .to_ascii_lowercase()
}

pub fn sku(name: &str) -> Option<&'static AmlSku> {
    AMLFS_SKUS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// Why `tib` is not a size of `sku` (the simulator's wording), or `None` when it is one.
pub fn capacity_problem(sku: &AmlSku, tib: f64) -> Option<String> {
    let step = f64::from(sku.increment_tib);
    let ok = tib.is_finite() && tib >= f64::from(sku.min_tib) && (tib / step).fract() == 0.0;
    (!ok).then(|| {
        format!(
            "The storage capacity {tib} TiB is not valid for SKU '{}': it must be at least {} TiB and a multiple of {} TiB.",
            sku.name, sku.min_tib, sku.increment_tib
        )
    })
}

/// What a PUT/PATCH body says about the file system (absent fields = `None`).
#[derive(Debug, Default)]
struct Spec {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    sku: Option<String>,
    capacity: Option<f64>,
    subnet: Option<String>,
    zones: Option<Value>,
    identity: Option<(String, Vec<String>)>,
    /// `Some(Some((keyUrl, sourceVault.id)))`: a key; `Some(None)`: `encryptionSettings` without a key.
    encryption: Option<Option<(String, String)>>,
    maintenance: Option<(Option<String>, Option<String>)>,
    hsm: Option<Value>,
    root_squash: Option<Value>,
}

fn object<'a>(v: &'a Value, target: &str) -> Result<Option<&'a Map<String, Value>>, Out> {
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(o)),
        _ => Err(invalid_param(target, format!("{target} must be an object."))),
    }
}

fn string(v: &Value, target: &str) -> Result<Option<String>, Out> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(invalid_param(target, format!("{target} must be a string."))),
    }
}

fn parse_spec(body: &Value) -> Result<Spec, Out> {
    let Some(obj) = body.as_object() else {
        return Err(bad(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'expected a JSON object'.",
        ));
    };
    let get = |k: &str| obj.get(k).unwrap_or(&Value::Null);
    let mut s = Spec { location: string(get("location"), "location")?, ..Spec::default() };
    if let Some(t) = object(get("tags"), "tags")? {
        let mut tags = BTreeMap::new();
        for (k, v) in t {
            let v = v.as_str().ok_or_else(|| invalid_param("tags", "tag values must be strings."))?;
            tags.insert(k.clone(), v.to_string());
        }
        s.tags = Some(tags);
    }
    if let Some(sku) = object(get("sku"), "sku")? {
        s.sku = string(sku.get("name").unwrap_or(&Value::Null), "sku.name")?;
    }
    if !get("zones").is_null() {
        if !get("zones").as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
            return Err(invalid_param("zones", "zones must be an array of strings."));
        }
        s.zones = Some(get("zones").clone());
    }
    if let Some(id) = object(get("identity"), "identity")? {
        let t = string(id.get("type").unwrap_or(&Value::Null), "identity.type")?
            .ok_or_else(|| invalid_param("identity.type", "identity.type is required."))?;
        // AmlFilesystemIdentityType: UserAssigned | None (modelAsString false) — no system-assigned identity.
        let t = ["UserAssigned", "None"].into_iter().find(|k| k.eq_ignore_ascii_case(&t)).ok_or_else(|| {
            invalid_param(
                "identity.type",
                format!("The identity type '{t}' is invalid. Allowed values are 'UserAssigned', 'None'."),
            )
        })?;
        let uai = match object(
            id.get("userAssignedIdentities").unwrap_or(&Value::Null),
            "identity.userAssignedIdentities",
        )? {
            Some(m) => m.keys().cloned().collect(),
            None => vec![],
        };
        s.identity = Some((t.to_string(), uai));
    }
    let Some(props) = object(get("properties"), "properties")? else {
        return Ok(s);
    };
    let pget = |k: &str| props.get(k).unwrap_or(&Value::Null);
    match pget("storageCapacityTiB") {
        Value::Null => {}
        Value::Number(n) => s.capacity = n.as_f64(),
        _ => {
            return Err(invalid_param("properties.storageCapacityTiB", "storageCapacityTiB must be a number."));
        }
    }
    s.subnet = string(pget("filesystemSubnet"), "properties.filesystemSubnet")?;
    if let Some(e) = object(pget("encryptionSettings"), "properties.encryptionSettings")? {
        let target = "properties.encryptionSettings.keyEncryptionKey";
        s.encryption = Some(match object(e.get("keyEncryptionKey").unwrap_or(&Value::Null), target)? {
            None => None,
            Some(kek) => {
                let url = string(kek.get("keyUrl").unwrap_or(&Value::Null), &format!("{target}.keyUrl"))?.ok_or_else(
                    || invalid_param(&format!("{target}.keyUrl"), "keyEncryptionKey.keyUrl is required."),
                )?;
                let vault = kek.get("sourceVault").and_then(|v| v.get("id")).unwrap_or(&Value::Null);
                let vault = string(vault, &format!("{target}.sourceVault.id"))?.ok_or_else(|| {
                    invalid_param(&format!("{target}.sourceVault.id"), "keyEncryptionKey.sourceVault.id is required.")
                })?;
                Some((url, vault))
            }
        });
    }
    if let Some(m) = object(pget("maintenanceWindow"), "properties.maintenanceWindow")? {
        let day = string(m.get("dayOfWeek").unwrap_or(&Value::Null), "properties.maintenanceWindow.dayOfWeek")?;
        let day = match day {
            None => None,
            Some(d) => {
                Some(DAYS.iter().find(|x| x.eq_ignore_ascii_case(&d)).map(|x| x.to_string()).ok_or_else(|| {
                    invalid_param(
                        "properties.maintenanceWindow.dayOfWeek",
                        format!("The day of week '{d}' is invalid. Allowed values are {}.", DAYS.join(", ")),
                    )
                })?)
            }
        };
        let time = string(m.get("timeOfDayUTC").unwrap_or(&Value::Null), "properties.maintenanceWindow.timeOfDayUTC")?;
        if let Some(t) = &time
            && !valid_time_of_day(t)
        {
            return Err(invalid_param(
                "properties.maintenanceWindow.timeOfDayUTC",
                format!("The time of day '{t}' does not match '^([0-9]|0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]$'."),
            ));
        }
        s.maintenance = Some((day, time));
    }
    if let Some(h) = object(pget("hsm"), "properties.hsm")?
        && let Some(settings) = object(h.get("settings").unwrap_or(&Value::Null), "properties.hsm.settings")?
    {
        s.hsm = Some(Value::Object(parse_hsm_settings(settings)?));
    }
    if let Some(rs) = object(pget("rootSquashSettings"), "properties.rootSquashSettings")? {
        s.root_squash = Some(Value::Object(parse_root_squash(rs)?));
    }
    Ok(s)
}

/// `^([0-9]|0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]$` (`timeOfDayUTC`).
fn valid_time_of_day(t: &str) -> bool {
    let Some((h, m)) = t.split_once(':') else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(h) && h.len() <= 2 && h.parse::<u32>().is_ok_and(|h| h <= 23) && m.len() == 2 && digits(m) && m < "60"
}

/// `hsm.settings`: `container` and `loggingContainer` (required) are container ids in one storage account and differ
/// ("Must be a separate container in the same storage account", AmlFilesystemHsmSettings); the import prefixes are
/// kept as sent.
fn parse_hsm_settings(h: &Map<String, Value>) -> Result<Map<String, Value>, Out> {
    let t = "properties.hsm.settings";
    let mut out = Map::new();
    let mut accounts = vec![];
    for k in ["container", "loggingContainer"] {
        let v = string(h.get(k).unwrap_or(&Value::Null), &format!("{t}.{k}"))?
            .ok_or_else(|| invalid_param(&format!("{t}.{k}"), format!("{k} is required.")))?;
        let Some(acct) = storage_account_of_container(&v) else {
            return Err(invalid_param(
                &format!("{t}.{k}"),
                format!(
                    "'{v}' is not a blob container resource id (/subscriptions/{{s}}/resourceGroups/{{rg}}/providers/Microsoft.Storage/storageAccounts/{{account}}/blobServices/default/containers/{{container}})."
                ),
            ));
        };
        accounts.push(acct);
        out.insert(k.into(), Value::String(v));
    }
    if !accounts[0].eq_ignore_ascii_case(&accounts[1]) {
        return Err(invalid_param(
            &format!("{t}.loggingContainer"),
            "The logging container must be in the same storage account as the container.",
        ));
    }
    if out["container"].as_str().map(str::to_ascii_lowercase)
        == out["loggingContainer"].as_str().map(str::to_ascii_lowercase)
    {
        return Err(invalid_param(
            &format!("{t}.loggingContainer"),
            "The logging container must be a separate container from the container.",
        ));
    }
    if let Some(p) = string(h.get("importPrefix").unwrap_or(&Value::Null), &format!("{t}.importPrefix"))? {
        out.insert("importPrefix".into(), Value::String(p));
    }
    match h.get("importPrefixesInitial").unwrap_or(&Value::Null) {
        Value::Null => {}
        Value::Array(a) if a.iter().all(Value::is_string) => {
            out.insert("importPrefixesInitial".into(), Value::Array(a.clone()));
        }
        _ => {
            return Err(invalid_param(
                &format!("{t}.importPrefixesInitial"),
                "importPrefixesInitial must be an array of strings.",
            ));
        }
    }
    Ok(out)
}

/// The storage account id (`/subscriptions/…/storageAccounts/{a}`) of a blob container id.
pub fn storage_account_of_container(id: &str) -> Option<String> {
    let s: Vec<&str> = id.split('/').filter(|x| !x.is_empty()).collect();
    let ok = s.len() == 12
        && s[0].eq_ignore_ascii_case("subscriptions")
        && s[2].eq_ignore_ascii_case("resourceGroups")
        && s[4].eq_ignore_ascii_case("providers")
        && s[5].eq_ignore_ascii_case("Microsoft.Storage")
        && s[6].eq_ignore_ascii_case("storageAccounts")
        && s[8].eq_ignore_ascii_case("blobServices")
        && s[9].eq_ignore_ascii_case("default")
        && s[10].eq_ignore_ascii_case("containers");
    ok.then(|| format!("/{}", s[..8].join("/")))
}

/// `rootSquashSettings`: `mode` in the AmlFilesystemSquashMode enum, the ids integers; kept as sent.
fn parse_root_squash(rs: &Map<String, Value>) -> Result<Map<String, Value>, Out> {
    let t = "properties.rootSquashSettings";
    let mut out = Map::new();
    if let Some(m) = string(rs.get("mode").unwrap_or(&Value::Null), &format!("{t}.mode"))? {
        let m = ["None", "RootOnly", "All"].into_iter().find(|x| x.eq_ignore_ascii_case(&m)).ok_or_else(|| {
            invalid_param(
                &format!("{t}.mode"),
                format!("The squash mode '{m}' is invalid. Allowed values are 'None', 'RootOnly', 'All'."),
            )
        })?;
        out.insert("mode".into(), json!(m));
    }
    if let Some(n) = string(rs.get("noSquashNidLists").unwrap_or(&Value::Null), &format!("{t}.noSquashNidLists"))? {
        out.insert("noSquashNidLists".into(), json!(n));
    }
    for k in ["squashUID", "squashGID"] {
        match rs.get(k).unwrap_or(&Value::Null) {
            Value::Null => {}
            v if v.as_u64().is_some() => {
                out.insert(k.into(), v.clone());
            }
            _ => return Err(invalid_param(&format!("{t}.{k}"), format!("{k} must be a non-negative integer."))),
        }
    }
    Ok(out)
}

fn subnet_ok(subnet: &str) -> bool {
    let ss: Vec<&str> = subnet.split('/').filter(|s| !s.is_empty()).collect();
    ss.len() == 10
        && ss[0].eq_ignore_ascii_case("subscriptions")
        && ss[5].eq_ignore_ascii_case("Microsoft.Network")
        && ss[6].eq_ignore_ascii_case("virtualNetworks")
        && ss[8].eq_ignore_ascii_case("subnets")
}

fn key_access_denied(enc: &CacheEncryption) -> Out {
    bad(
        "KeyVaultAccessDenied",
        format!(
            "The file system's managed identity does not have get, wrapKey and unwrapKey access to key '{}' in key vault '{}'. Give the identity access before creating the file system or changing its key.",
            enc.key_name, enc.vault_name
        ),
    )
}

/// Can one of `ident`'s identities use `enc`'s key now (grants propagated, the version's `key_ops` allowing wrap and
/// unwrap)?
fn reaches_key(w: &World, ident: &CacheIdentity, enc: &CacheEncryption, now: Timestamp) -> bool {
    w.key_access_since(ident, enc).is_some_and(|t| t <= now)
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
    let key = amlfs_key(sub, rg, name);
    if w.aml_filesystems.contains_key(&key) {
        return update(ctx, w, &key, spec, true, rg, name);
    }
    create(ctx, w, spec, sub, rg, name, &key)
}

#[allow(clippy::too_many_arguments)]
fn create(ctx: &Ctx, w: &mut World, spec: Spec, sub: &str, rg: &str, name: &str, key: &str) -> Out {
    let Some(location) = spec.location.clone() else {
        return bad("LocationRequired", "The location property is required for this definition.");
    };
    let Some(sku_name) = spec.sku.clone() else {
        return invalid_param("sku.name", "The SKU name is required.");
    };
    let Some(sku) = sku(&sku_name) else {
        return invalid_param(
            "sku.name",
            format!(
                "The SKU '{sku_name}' is not supported. Supported SKUs: {}.",
                AMLFS_SKUS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            ),
        );
    };
    let Some(capacity) = spec.capacity else {
        return invalid_param("properties.storageCapacityTiB", "storageCapacityTiB is required.");
    };
    if let Some(problem) = capacity_problem(sku, capacity) {
        return invalid_param("properties.storageCapacityTiB", problem);
    }
    let Some(subnet) = spec.subnet.clone() else {
        return invalid_param("properties.filesystemSubnet", "filesystemSubnet is required.");
    };
    if !subnet_ok(&subnet) {
        return invalid_param(
            "properties.filesystemSubnet",
            format!("The subnet '{subnet}' is not a valid subnet resource id."),
        );
    }
    let (Some(day), Some(time)) = spec.maintenance.clone().unwrap_or_default() else {
        return invalid_param(
            "properties.maintenanceWindow",
            "maintenanceWindow with dayOfWeek and timeOfDayUTC is required.",
        );
    };
    // identity: UserAssigned (existing identities) or None
    let identity = match &spec.identity {
        None => None,
        Some((kind, uai)) => {
            if kind == "UserAssigned" && uai.is_empty() {
                return invalid_param(
                    "identity.userAssignedIdentities",
                    "At least one user-assigned identity is required for identity type 'UserAssigned'.",
                );
            }
            if kind == "None" && !uai.is_empty() {
                return invalid_param(
                    "identity.userAssignedIdentities",
                    "userAssignedIdentities may only be given with identity type 'UserAssigned'.",
                );
            }
            let mut user_assigned = BTreeMap::new();
            for id in uai {
                let Some(i) = w.identities.get(&id.to_ascii_lowercase()) else {
                    return bad(
                        "FailedIdentityOperation",
                        format!(
                            "Identity operation for resource '{key}' failed with error 'Failed to perform resource identity operation. Status: 'NotFound'. Response: '{{\"error\":{{\"code\":\"NotFound\",\"message\":\"Resource '{id}' not found.\"}}}}'.'."
                        ),
                    );
                };
                user_assigned.insert(id.clone(), (i.principal_id.clone(), i.client_id.clone()));
            }
            Some(CacheIdentity { kind: kind.clone(), system_principal_id: None, user_assigned })
        }
    };
    // customer-managed key: a user-assigned identity that can use the key already
    let encryption = match &spec.encryption {
        None => None,
        Some(None) => {
            return invalid_param(
                "properties.encryptionSettings.keyEncryptionKey",
                "keyEncryptionKey is required when encryptionSettings is given.",
            );
        }
        Some(Some((url, vault))) => {
            let Some(ident) = identity.as_ref().filter(|i| !i.user_assigned.is_empty()) else {
                return invalid_param(
                    "identity",
                    "A user-assigned managed identity that can access the key vault is required to use a customer-managed encryption key.",
                );
            };
            let enc = match validate_key_reference(w, sub, &location, url, vault, None, "file system", ctx.now) {
                Ok(e) => e,
                Err(o) => return o,
            };
            if !reaches_key(w, ident, &enc, ctx.now) {
                return key_access_denied(&enc);
            }
            Some(enc)
        }
    };
    // blob integration: checked when the request arrives, reported by the create failing later
    let failure = spec.hsm.as_ref().and_then(|h| blob_failure(w, h, ctx.now));
    if let Some(e) = &encryption {
        // "Azure Managed Lustre enables soft delete if it isn't already configured on the key vault" (Learn,
        // customer-managed-encryption-keys).
        enable_soft_delete(w, &e.vault_name, ctx.now);
    }
    let create_delay = w.delays.aml_create_delay;
    let cluster_uuid = new_uuid();
    let fs = AmlFilesystem {
        subscription_id: sub.to_string(),
        resource_group: rg.to_string(),
        name: name.to_string(),
        location: location.clone(),
        sku: sku.name.to_string(),
        storage_capacity_tib: capacity,
        filesystem_subnet: subnet,
        zones: spec.zones.clone(),
        tags: spec.tags.clone().unwrap_or_default(),
        identity,
        encryption,
        maintenance_day_of_week: day,
        maintenance_time_of_day_utc: time,
        hsm_settings: spec.hsm.clone(),
        root_squash_settings: spec.root_squash.clone(),
        mgs_address: mgs_address(&cluster_uuid),
        cluster_uuid,
        created_by: ctx.principal.to_string(),
        last_modified_by: ctx.principal.to_string(),
        last_modified_at: ctx.now,
        timeline: AmlTimeline {
            created_at: ctx.now,
            ready_at: ctx.now + sdur(create_delay),
            failed_at: failure.as_ref().map(|_| ctx.now + sdur(AMLFS_BLOB_FAILURE_AFTER.min(create_delay))),
            failure,
            updating_until: None,
            deleting_until: None,
        },
    };
    w.aml_filesystems.insert(key.to_string(), fs);
    let op = new_operation(w, ctx, sub, &location, OpKind::Create, OpTarget::AmlFilesystem, key, None);
    let out = Out::json(StatusCode::CREATED, amlfs_json(&w.aml_filesystems[key], ctx.now));
    lro_headers(ctx, out, sub, &location, &op)
}

/// Why blob integration will fail (code, message), judged when the create request arrives: the storage account
/// must exist and the HPC Cache Resource Provider must hold both roles on it, propagated. "Validation performed
/// before the file system is created can't detect container access permission problems" (Learn,
/// amlfs-prerequisites): the create is accepted and fails later. Codes and texts are the simulator's.
fn blob_failure(w: &World, hsm: &Value, now: Timestamp) -> Option<(String, String)> {
    let container = hsm["container"].as_str().unwrap_or_default();
    let account_id = storage_account_of_container(container).unwrap_or_default();
    let Some(account) = w.storage_accounts.get(&account_id.to_ascii_lowercase()) else {
        return Some((
            "StorageAccountNotFound".into(),
            format!("The storage account '{account_id}' of the blob integration container was not found."),
        ));
    };
    if w.blob_integration_access_since(&account.id()).is_some_and(|t| t <= now) {
        return None;
    }
    Some((
        "BlobIntegrationAccessDenied".into(),
        format!(
            "The {RP_NAME} service principal cannot access storage account '{}': it needs the Storage Account Contributor and Storage Blob Data Contributor roles on the account before the file system is created. The file system has to be deleted and created again.",
            account.name
        ),
    ))
}

fn patch(ctx: &Ctx, w: &mut World, r: &Req, key: &str, rg: &str, name: &str) -> Out {
    if !w.aml_filesystems.contains_key(key) {
        return resource_not_found("Microsoft.StorageCache/amlFilesystems", name, rg);
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

/// Apply a PUT (`full`) or a PATCH (AmlFilesystemUpdate: tags, encryptionSettings, maintenanceWindow,
/// rootSquashSettings; other fields of a PATCH body are ignored) to an existing file system.
fn update(ctx: &Ctx, w: &mut World, key: &str, spec: Spec, full: bool, rg: &str, name: &str) -> Out {
    let f = w.aml_filesystems[key].clone();
    if f.timeline.deleting_until.is_some() {
        return Out::arm_error(
            StatusCode::CONFLICT,
            "Conflict",
            format!("The AML file system '{name}' is being deleted."),
        );
    }
    let immutable = |what: &str| -> Out {
        Out::json(
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "PropertyChangeNotAllowed", "message": format!("Changing property '{what}' is not allowed."), "target": what}}),
        )
    };
    if full {
        if let Some(l) = &spec.location
            && norm_location(l) != norm_location(&f.location)
        {
            return bad(
                "InvalidResourceLocation",
                format!(
                    "The resource '{name}' already exists in location '{}' in resource group '{rg}'. A resource with the same name cannot be created in location '{l}'. Please select a new resource name.",
                    f.location
                ),
            );
        }
        if spec.sku.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case(&f.sku)) {
            return immutable("sku.name");
        }
        if spec.capacity.is_some_and(|c| c != f.storage_capacity_tib) {
            return immutable("properties.storageCapacityTiB");
        }
        if spec.subnet.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case(&f.filesystem_subnet)) {
            return immutable("properties.filesystemSubnet");
        }
        if spec.zones.is_some() && spec.zones != f.zones {
            return immutable("zones");
        }
        if spec.hsm.is_some() && spec.hsm != f.hsm_settings {
            return immutable("properties.hsm.settings");
        }
        let cur_kind = f.identity.as_ref().map(|i| i.kind.as_str()).unwrap_or("None");
        let (kind, uai) = spec.identity.clone().unwrap_or_else(|| ("None".into(), vec![]));
        let cur_ids: Vec<String> = f
            .identity
            .as_ref()
            .map(|i| i.user_assigned.keys().map(|k| k.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let new_ids: Vec<String> = uai.iter().map(|k| k.to_ascii_lowercase()).collect();
        if kind != cur_kind {
            return immutable("identity.type");
        }
        if cur_ids != new_ids {
            return immutable("identity.userAssignedIdentities");
        }
    }
    // customer-managed vs Microsoft-managed is fixed at create; the key may change.
    let mut new_enc = f.encryption.clone();
    match (&spec.encryption, &f.encryption) {
        (None, Some(_)) if full => return immutable("properties.encryptionSettings"),
        (None, _) => {}
        (Some(None), Some(_)) | (Some(Some(_)), None) => return immutable("properties.encryptionSettings"),
        (Some(None), None) => {}
        (Some(Some((url, vault))), Some(cur)) => {
            let enc = match validate_key_reference(
                w,
                &f.subscription_id,
                &f.location,
                url,
                vault,
                None,
                "file system",
                ctx.now,
            ) {
                Ok(e) => e,
                Err(o) => return o,
            };
            if !enc.key_url.eq_ignore_ascii_case(&cur.key_url)
                || !enc.source_vault_id.eq_ignore_ascii_case(&cur.source_vault_id)
            {
                let reach = f.identity.as_ref().is_some_and(|i| reaches_key(w, i, &enc, ctx.now));
                if !reach {
                    return key_access_denied(&enc);
                }
                enable_soft_delete(w, &enc.vault_name, ctx.now);
                new_enc = Some(enc);
            }
        }
    }
    let ready = f.timeline.ready(ctx.now);
    {
        let m = w.aml_filesystems.get_mut(key).expect("exists");
        if let Some(t) = spec.tags.clone() {
            m.tags = t;
        } else if full {
            m.tags.clear();
        }
        if let Some((day, time)) = spec.maintenance.clone() {
            if let Some(d) = day {
                m.maintenance_day_of_week = d;
            }
            if let Some(t) = time {
                m.maintenance_time_of_day_utc = t;
            }
        }
        if spec.root_squash.is_some() || full {
            m.root_squash_settings = spec.root_squash.clone();
        }
        m.encryption = new_enc;
        m.last_modified_at = ctx.now;
        m.last_modified_by = ctx.principal.to_string();
        if ready {
            m.timeline.updating_until = Some(ctx.now + sdur(UPDATE_DURATION));
        }
    }
    if !ready {
        return Out::json(StatusCode::OK, amlfs_json(&w.aml_filesystems[key], ctx.now));
    }
    let (sub, loc) = (f.subscription_id.clone(), f.location.clone());
    let done = Some(ctx.now + sdur(UPDATE_DURATION));
    let op = new_operation(w, ctx, &sub, &loc, OpKind::Update, OpTarget::AmlFilesystem, key, done);
    let out = if full {
        Out::json(StatusCode::OK, amlfs_json(&w.aml_filesystems[key], ctx.now))
    } else {
        Out::empty(StatusCode::ACCEPTED)
    };
    lro_headers(ctx, out, &sub, &loc, &op)
}

fn delete(ctx: &Ctx, w: &mut World, key: &str) -> Out {
    let Some(f) = w.aml_filesystems.get(key).cloned() else {
        return Out::empty(StatusCode::NO_CONTENT);
    };
    let until = f.timeline.deleting_until.unwrap_or(ctx.now + sdur(DELETE_DURATION));
    if let Some(m) = w.aml_filesystems.get_mut(key) {
        m.timeline.deleting_until = Some(until);
    }
    let op = new_operation(
        w,
        ctx,
        &f.subscription_id,
        &f.location,
        OpKind::Delete,
        OpTarget::AmlFilesystem,
        key,
        Some(until),
    );
    lro_headers(ctx, Out::empty(StatusCode::ACCEPTED), &f.subscription_id, &f.location, &op)
}

/// An MGS address in the style of the examples' `10.0.0.4`, fixed per cluster.
fn mgs_address(cluster_uuid: &str) -> String {
    let b = uuid::Uuid::parse_str(cluster_uuid).map(|u| *u.as_bytes()).unwrap_or_default();
    format!("10.{}.{}.4", b[0], b[1])
}

/// A JSON number without a fraction when it has none (`16`, not `16.0`).
fn tib(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 1e15 { json!(n as i64) } else { json!(n) }
}

/// `clientInfo`: the MGS address, the mount command of the examples' form, the Lustre version, and Kubernetes
/// objects for the Azure Lustre CSI driver (base64 YAML after kubernetes-sigs/azurelustre-csi-driver's
/// `docs/examples`; the service's exact YAML is not published: the spec examples show `<Base64 encoded YAML>`).
fn client_info(f: &AmlFilesystem) -> Value {
    let mgs = &f.mgs_address;
    let size = tib(f.storage_capacity_tib);
    let storage_class = format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: sc.azurelustre.csi.azure.com\nparameters:\n  mgs-ip-address: {mgs}\nprovisioner: azurelustre.csi.azure.com\nreclaimPolicy: Retain\nvolumeBindingMode: Immediate\nmountOptions:\n  - noatime\n  - flock\n"
    );
    let pvc = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: pvc-lustre\nspec:\n  accessModes:\n    - ReadWriteMany\n  resources:\n    requests:\n      storage: {size}Ti\n  storageClassName: sc.azurelustre.csi.azure.com\n"
    );
    let pv = format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: pv-lustre\nspec:\n  accessModes:\n    - ReadWriteMany\n  capacity:\n    storage: {size}Ti\n  csi:\n    driver: azurelustre.csi.azure.com\n    volumeAttributes:\n      fs-name: lustrefs\n      mgs-ip-address: {mgs}\n    volumeHandle: {}\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: sc.azurelustre.csi.azure.com\n",
        f.cluster_uuid
    );
    json!({
        "mgsAddress": mgs,
        "mountCommand": format!("mount -t lustre {mgs}@tcp:/lustrefs /lustre/lustrefs"),
        "lustreVersion": LUSTRE_VERSION,
        "containerStorageInterface": {
            "persistentVolumeClaim": STANDARD.encode(pvc),
            "persistentVolume": STANDARD.encode(pv),
            "storageClass": STANDARD.encode(storage_class),
        },
    })
}

/// The `AmlFilesystem` resource as ARM returns it.
pub fn amlfs_json(f: &AmlFilesystem, now: Timestamp) -> Value {
    let (prov, health, desc) = f.timeline.status(now);
    let mut props = Map::new();
    props.insert("storageCapacityTiB".into(), tib(f.storage_capacity_tib));
    props.insert("currentStorageCapacityTiB".into(), tib(f.storage_capacity_tib));
    props.insert("clusterUuid".into(), json!(f.cluster_uuid));
    let mut h = json!({"state": health, "statusDescription": desc});
    if prov == "Failed"
        && let Some((code, _)) = &f.timeline.failure
    {
        h["statusCode"] = json!(code);
    }
    props.insert("health".into(), h);
    props.insert("provisioningState".into(), json!(prov));
    props.insert("filesystemSubnet".into(), json!(f.filesystem_subnet));
    if health == "Available" {
        props.insert("clientInfo".into(), client_info(f));
    }
    let mbps = sku(&f.sku).map(|s| f64::from(s.mbps_per_tib)).unwrap_or(0.0);
    props.insert("throughputProvisionedMBps".into(), json!((f.storage_capacity_tib * mbps).round() as i64));
    if let Some(e) = &f.encryption {
        props.insert(
            "encryptionSettings".into(),
            json!({"keyEncryptionKey": {"keyUrl": e.key_url, "sourceVault": {"id": e.source_vault_id}}}),
        );
    }
    props.insert(
        "maintenanceWindow".into(),
        json!({"dayOfWeek": f.maintenance_day_of_week, "timeOfDayUTC": f.maintenance_time_of_day_utc}),
    );
    if let Some(s) = &f.hsm_settings {
        props.insert("hsm".into(), json!({"settings": s}));
    }
    if let Some(rs) = &f.root_squash_settings {
        let mut rs = rs.clone();
        // the examples' status for an active squash
        if rs["mode"].as_str().is_some_and(|m| m != "None") {
            rs["status"] = json!("nodemap.active=1");
        }
        props.insert("rootSquashSettings".into(), rs);
    }
    let mut body = json!({
        "id": f.id(),
        "name": f.name,
        "type": "Microsoft.StorageCache/amlFilesystem",
        "location": f.location,
        "tags": f.tags,
        "sku": {"name": f.sku},
        "systemData": {
            "createdBy": f.created_by,
            "createdByType": "Application",
            "createdAt": arm_time(f.timeline.created_at),
            "lastModifiedBy": f.last_modified_by,
            "lastModifiedByType": "Application",
            "lastModifiedAt": arm_time(f.last_modified_at),
        },
        "properties": props,
    });
    if let Some(z) = &f.zones {
        body["zones"] = z.clone();
    }
    if let Some(i) = &f.identity {
        let mut id = json!({"type": i.kind});
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
    fn names() {
        assert!(valid_amlfs_name("fs1"));
        assert!(valid_amlfs_name("a-b_c9"));
        assert!(!valid_amlfs_name("a"), "at least 2 characters");
        assert!(!valid_amlfs_name("-fs"), "starts alphanumeric");
        assert!(!valid_amlfs_name("fs_"), "ends alphanumeric");
        assert!(!valid_amlfs_name(&"a".repeat(81)));
    }

    #[test]
    fn capacities_follow_the_sku_table() {
        let s250 = sku("amlfs-durable-premium-250").unwrap();
        assert!(capacity_problem(s250, 8.0).is_none());
        assert!(capacity_problem(s250, 16.0).is_none());
        assert!(capacity_problem(s250, 4.0).is_some(), "below the minimum");
        assert!(capacity_problem(s250, 12.0).is_some(), "not a multiple of 8");
        assert!(capacity_problem(s250, 8.5).is_some());
        let s40 = sku("AMLFS-Durable-Premium-40").unwrap();
        assert!(capacity_problem(s40, 48.0).is_none());
        assert!(capacity_problem(s40, 96.0).is_none());
        assert!(capacity_problem(s40, 16.0).is_some());
        assert!(capacity_problem(sku("AMLFS-Durable-Premium-500").unwrap(), 4.0).is_none());
        assert!(capacity_problem(sku("AMLFS-Durable-Premium-125").unwrap(), 1024.0).is_none(), "no maximum");
        assert!(sku("AMLFS-Durable-Premium-1000").is_none());
    }

    #[test]
    fn maintenance_times() {
        for ok in ["0:00", "09:30", "22:00", "23:59"] {
            assert!(valid_time_of_day(ok), "{ok}");
        }
        for bad in ["24:00", "22:60", "22", "1:5", "aa:bb", "123:00"] {
            assert!(!valid_time_of_day(bad), "{bad}");
        }
    }

    #[test]
    fn container_ids() {
        let c = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct/blobServices/default/containers/data";
        assert_eq!(
            storage_account_of_container(c).as_deref(),
            Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct")
        );
        assert!(storage_account_of_container("/subscriptions/s/resourceGroups/rg").is_none());
        let logs = c.replace("/data", "/logs");
        let ok = json!({"container": c, "loggingContainer": logs, "importPrefix": "/"});
        assert!(parse_hsm_settings(ok.as_object().unwrap()).is_ok());
        let same = json!({"container": c, "loggingContainer": c});
        assert!(parse_hsm_settings(same.as_object().unwrap()).is_err(), "separate containers");
        let other = json!({"container": c, "loggingContainer": logs.replace("/acct/", "/other/")});
        assert!(parse_hsm_settings(other.as_object().unwrap()).is_err(), "same storage account");
    }

    #[test]
    fn spec_parsing() {
        assert!(parse_spec(&json!({"identity": {"type": "SystemAssigned"}})).is_err(), "no system-assigned identity");
        assert_eq!(
            parse_spec(&json!({"identity": {"type": "userassigned"}})).unwrap().identity.unwrap().0,
            "UserAssigned"
        );
        assert!(parse_spec(&json!({"properties": {"storageCapacityTiB": "16"}})).is_err());
        assert!(parse_spec(&json!({"properties": {"maintenanceWindow": {"dayOfWeek": "Someday"}}})).is_err());
        assert!(parse_spec(&json!({"properties": {"rootSquashSettings": {"mode": "Some"}}})).is_err());
        let s = parse_spec(&json!({"properties": {"encryptionSettings": {}}})).unwrap();
        assert_eq!(s.encryption, Some(None));
    }

    #[test]
    fn client_info_has_csi_objects() {
        let ci = client_info(&AmlFilesystem {
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            name: "fs".into(),
            location: "westus".into(),
            sku: "AMLFS-Durable-Premium-250".into(),
            storage_capacity_tib: 8.0,
            filesystem_subnet: String::new(),
            zones: None,
            tags: BTreeMap::new(),
            identity: None,
            encryption: None,
            maintenance_day_of_week: "Friday".into(),
            maintenance_time_of_day_utc: "22:00".into(),
            hsm_settings: None,
            root_squash_settings: None,
            cluster_uuid: "00000000-0000-0000-0000-000000000001".into(),
            mgs_address: "10.0.0.4".into(),
            created_by: String::new(),
            last_modified_by: String::new(),
            last_modified_at: Timestamp::UNIX_EPOCH,
            timeline: AmlTimeline {
                created_at: Timestamp::UNIX_EPOCH,
                ready_at: Timestamp::UNIX_EPOCH,
                failed_at: None,
                failure: None,
                updating_until: None,
                deleting_until: None,
            },
        });
        assert_eq!(ci["mountCommand"], "mount -t lustre 10.0.0.4@tcp:/lustrefs /lustre/lustrefs");
        let sc = STANDARD.decode(ci["containerStorageInterface"]["storageClass"].as_str().unwrap()).unwrap();
        assert!(String::from_utf8(sc).unwrap().contains("mgs-ip-address: 10.0.0.4"));
        let pvc = STANDARD.decode(ci["containerStorageInterface"]["persistentVolumeClaim"].as_str().unwrap()).unwrap();
        assert!(String::from_utf8(pvc).unwrap().contains("storage: 8Ti"));
    }
}

//! `Microsoft.KeyVault/vaults` (GET/PATCH, accessPolicies), `Microsoft.Authorization/roleAssignments` and
//! `Microsoft.ManagedIdentity/userAssignedIdentities` (GET).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::clock::arm_time;
use super::route::{Ctx, Route};
use super::state::{AccessPolicy, Permissions, RoleAssignment, Vault, World, sdur};
use super::wire::{Out, Req, method_not_allowed, resource_not_found};

pub const PURGE_PROTECTION_FALSE: &str = "The property \"enablePurgeProtection\" cannot be set to false. Enabling the purge protection for a vault is an irreversible action.";
pub const SOFT_DELETE_FALSE: &str = "The property \"enableSoftDelete\" cannot be set to false. Enabling the soft delete for a vault is an irreversible action.";

pub fn handle(ctx: &Ctx, w: &mut World, r: &Req, route: &Route) -> Out {
    match route {
        Route::Vault { sub, rg, name } => {
            let Some(v) = find_vault(w, sub, rg, name) else {
                return resource_not_found("Microsoft.KeyVault/vaults", name, rg);
            };
            match r.method {
                Method::GET => Out::json(StatusCode::OK, vault_json(ctx, w.vaults.get(&v).expect("vault"))),
                Method::PATCH => {
                    let body = match r.json() {
                        Ok(b) => b,
                        Err(m) => return bad_request(m),
                    };
                    let effective_at = ctx.now + sdur(w.delays.grant_propagation);
                    let vault = w.vaults.get_mut(&v).expect("vault");
                    if let Err(m) = apply_vault_patch(vault, &body) {
                        return bad_request(m);
                    }
                    vault.last_modified_at = ctx.now;
                    vault.restamp_policies(effective_at);
                    Out::json(StatusCode::OK, vault_json(ctx, vault))
                }
                _ => method_not_allowed(&r.method),
            }
        }
        Route::VaultAccessPolicy { sub, rg, name, kind } => {
            if r.method != Method::PUT {
                return method_not_allowed(&r.method);
            }
            let kind = kind.to_ascii_lowercase();
            if !["add", "replace", "remove"].contains(&kind.as_str()) {
                return bad_request(format!(
                    "The operation kind '{kind}' is invalid. Allowed values are 'add', 'replace' and 'remove'."
                ));
            }
            let Some(v) = find_vault(w, sub, rg, name) else {
                return resource_not_found("Microsoft.KeyVault/vaults", name, rg);
            };
            let body = match r.json() {
                Ok(b) => b,
                Err(m) => return bad_request(m),
            };
            let effective_at = ctx.now + sdur(w.delays.grant_propagation);
            let vault = w.vaults.get_mut(&v).expect("vault");
            let entries = match parse_access_policies(&body["properties"]["accessPolicies"]) {
                Ok(e) => e,
                Err(m) => return bad_request(m),
            };
            // `VaultAccessPolicyProperties.accessPolicies`: "An array of 0 to 16 identities" (Key Vault
            // management spec); the code of Azure's refusal is not published, so this is the generic one.
            if entries.len() > 16 {
                return bad_request("An access policy update takes at most 16 identities.");
            }
            let mut updated = vault.access_policies.clone();
            update_access_policies(&mut updated, &kind, &entries);
            if updated.len() > MAX_ACCESS_POLICIES {
                return bad_request(TOO_MANY_ACCESS_POLICIES);
            }
            vault.access_policies = updated;
            vault.last_modified_at = ctx.now;
            // ARM reads show the change at once; it counts for a cache's key access after the propagation delay.
            vault.restamp_policies(effective_at);
            Out::json(
                StatusCode::OK,
                json!({
                    "id": format!("{}/accessPolicies/", vault.id()),
                    "name": kind,
                    "type": "Microsoft.KeyVault/vaults/accessPolicies",
                    "location": vault.location,
                    "properties": {"accessPolicies": entries},
                }),
            )
        }
        Route::Identity { sub, rg, name } => {
            if r.method != Method::GET {
                return method_not_allowed(&r.method);
            }
            let id = format!(
                "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
            );
            let Some(i) = w.identities.get(&id.to_ascii_lowercase()) else {
                return resource_not_found("Microsoft.ManagedIdentity/userAssignedIdentities", name, rg);
            };
            let mut props = json!({"tenantId": i.tenant_id, "principalId": i.principal_id, "clientId": i.client_id});
            if ctx.api_version >= "2024-11-30" {
                props["isolationScope"] = json!("None");
            }
            Out::json(
                StatusCode::OK,
                json!({
                    "id": i.id(),
                    "name": i.name,
                    "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                    "location": i.location,
                    "tags": i.tags,
                    "properties": props,
                }),
            )
        }
        Route::RoleAssignment { scope, name } => role_assignment(ctx, w, r, scope, name),
        Route::RoleAssignments { scope } => {
            if r.method != Method::GET {
                return method_not_allowed(&r.method);
            }
            let filter = r.param("$filter").unwrap_or("").trim().to_string();
            let at_scope = filter.eq_ignore_ascii_case("atScope()");
            let principal = parse_principal_filter(&filter);
            if !filter.is_empty() && !at_scope && principal.is_none() {
                return Out::arm_error(
                    StatusCode::BAD_REQUEST,
                    "UnsupportedQuery",
                    format!("The filter '{filter}' is not supported."),
                );
            }
            // RoleAssignments_ListForScope (authorization-RoleAssignmentsCalls.json, 2022-04-01): "Use
            // $filter=atScope() to return all role assignments at or above the scope. Use $filter=principalId eq
            // {id} to return all role assignments at, above or below the scope for the specified principal."
            // "Above" includes management groups holding the subscription; pageable via `nextLink`.
            let all: Vec<Value> = w
                .role_assignments
                .values()
                .filter(|ra| {
                    let above = w.scope_applies(&ra.scope, scope);
                    let below = w.scope_applies(scope, &ra.scope);
                    if at_scope {
                        above
                    } else if let Some(p) = &principal {
                        ra.principal_id.eq_ignore_ascii_case(p) && (above || below)
                    } else {
                        above || below
                    }
                })
                .map(role_assignment_json)
                .collect();
            page(ctx, r, ctx.role_assignment_page_size, all.into_iter(), |v| v)
        }
        _ => method_not_allowed(&r.method),
    }
}

/// One page of an ARM list: `size` items from `$skipToken` on (only those turned into JSON), and a `nextLink` (the
/// same URL with the next `$skipToken`) while more remain.
pub fn page<T>(
    ctx: &Ctx,
    r: &Req,
    size: usize,
    all: impl ExactSizeIterator<Item = T>,
    to_json: impl Fn(T) -> Value,
) -> Out {
    let size = size.max(1);
    let skip = match r.param("$skipToken").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return Out::arm_error(StatusCode::BAD_REQUEST, "InvalidSkipToken", "The skip token is invalid.");
        }
    };
    let total = all.len();
    let value: Vec<Value> = all.skip(skip).take(size).map(to_json).collect();
    let mut body = json!({ "value": value });
    if skip + size < total {
        // ARM writes `$filter`/`$skipToken` with a literal `$`
        let enc = |x: &str| url::form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>().replace("%24", "$");
        let mut query: Vec<String> = r
            .params
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("$skipToken"))
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        query.push(format!("$skipToken={}", skip + size));
        let mut next = ctx.endpoints.base_url.clone();
        next.set_path(&r.path);
        next.set_query(Some(&query.join("&")));
        body["nextLink"] = Value::String(next.to_string());
    }
    Out::json(StatusCode::OK, body)
}

/// Key Vault's 400: code `BadRequest`, the message says what is wrong.
fn bad_request(message: impl Into<String>) -> Out {
    Out::arm_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// `principalId eq 'x'` → `x`.
pub fn parse_principal_filter(f: &str) -> Option<String> {
    let rest = f.trim();
    let (lhs, rhs) = rest.split_once(" eq ")?;
    if !lhs.trim().eq_ignore_ascii_case("principalId") {
        return None;
    }
    Some(rhs.trim().trim_matches('\'').to_string())
}

fn find_vault(w: &World, sub: &str, rg: &str, name: &str) -> Option<String> {
    let k = name.to_ascii_lowercase();
    let v = w.vaults.get(&k)?;
    (v.subscription_id.eq_ignore_ascii_case(sub) && v.resource_group.eq_ignore_ascii_case(rg)).then_some(k)
}

pub fn vault_json(ctx: &Ctx, v: &Vault) -> Value {
    let mut props = json!({
        "tenantId": v.tenant_id,
        "sku": {"family": "A", "name": v.sku},
        "accessPolicies": v.access_policies,
        "enabledForDeployment": v.enabled_for_deployment,
        "enabledForDiskEncryption": v.enabled_for_disk_encryption,
        "enabledForTemplateDeployment": v.enabled_for_template_deployment,
        "enableSoftDelete": v.enable_soft_delete,
        "softDeleteRetentionInDays": v.soft_delete_retention_in_days,
        "enableRbacAuthorization": v.enable_rbac_authorization,
        "vaultUri": ctx.endpoints.vault_uri(&v.name).to_string(),
        "provisioningState": "Succeeded",
        "publicNetworkAccess": v.public_network_access,
    });
    if let Some(pp) = v.enable_purge_protection {
        props["enablePurgeProtection"] = json!(pp);
    }
    props["networkAcls"] = v.network_acls.clone().unwrap_or_else(
        || json!({"bypass": "AzureServices", "defaultAction": "Allow", "ipRules": [], "virtualNetworkRules": []}),
    );
    props["privateEndpointConnections"] = json!([]);
    json!({
        "id": v.id(),
        "name": v.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": v.location,
        "tags": v.tags,
        "systemData": {
            "createdBy": "seed",
            "createdByType": "User",
            "createdAt": arm_time(v.created_at),
            "lastModifiedBy": "seed",
            "lastModifiedByType": "User",
            "lastModifiedAt": arm_time(v.last_modified_at),
        },
        "properties": props,
    })
}

fn as_bool(v: &Value, name: &str) -> Result<Option<bool>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(format!("Invalid value for property '{name}': expected a boolean.")),
    }
}

/// Apply `VaultPatchParameters` with Key Vault's irreversibility rules. Validates everything before changing
/// anything.
pub fn apply_vault_patch(v: &mut Vault, body: &Value) -> Result<(), String> {
    if !body.is_object() {
        return Err("The request content was invalid and could not be deserialized: 'expected a JSON object'.".into());
    }
    let p = &body["properties"];
    if !(p.is_null() || p.is_object()) {
        return Err("Invalid value for property 'properties'.".into());
    }
    let purge = as_bool(&p["enablePurgeProtection"], "enablePurgeProtection")?;
    if purge == Some(false) {
        return Err(PURGE_PROTECTION_FALSE.into());
    }
    let soft = as_bool(&p["enableSoftDelete"], "enableSoftDelete")?;
    if soft == Some(false) && v.enable_soft_delete {
        return Err(SOFT_DELETE_FALSE.into());
    }
    let retention = match &p["softDeleteRetentionInDays"] {
        Value::Null => None,
        x => match x.as_i64() {
            Some(d) if (7..=90).contains(&d) => Some(d),
            _ => return Err("The property \"softDeleteRetentionInDays\" is invalid. It accepts >=7 and <=90.".into()),
        },
    };
    let rbac = as_bool(&p["enableRbacAuthorization"], "enableRbacAuthorization")?;
    let dep = as_bool(&p["enabledForDeployment"], "enabledForDeployment")?;
    let disk = as_bool(&p["enabledForDiskEncryption"], "enabledForDiskEncryption")?;
    let tmpl = as_bool(&p["enabledForTemplateDeployment"], "enabledForTemplateDeployment")?;
    let sku = match &p["sku"] {
        Value::Null => None,
        s => match s["name"].as_str() {
            Some(n) if n.eq_ignore_ascii_case("standard") || n.eq_ignore_ascii_case("premium") => {
                Some(n.to_ascii_lowercase())
            }
            _ => {
                return Err(
                    "Invalid value for property 'sku.name': allowed values are 'standard' and 'premium'.".into()
                );
            }
        },
    };
    let tenant = match &p["tenantId"] {
        Value::Null => None,
        Value::String(t) if uuid::Uuid::parse_str(t).is_ok() => Some(t.clone()),
        _ => return Err("Invalid value for property 'tenantId': expected a GUID.".into()),
    };
    let pna = match &p["publicNetworkAccess"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err("Invalid value for property 'publicNetworkAccess'.".into()),
    };
    let acls = match &p["networkAcls"] {
        Value::Null => None,
        x if x.is_object() => Some(x.clone()),
        _ => return Err("Invalid value for property 'networkAcls'.".into()),
    };
    let policies = match &p["accessPolicies"] {
        Value::Null => None,
        x => Some(parse_access_policies(x)?),
    };
    let tags = match &body["tags"] {
        Value::Null => None,
        Value::Object(m) => {
            let mut t = std::collections::BTreeMap::new();
            for (k, x) in m {
                t.insert(
                    k.clone(),
                    x.as_str().ok_or("Invalid value for property 'tags': values must be strings.")?.to_string(),
                );
            }
            Some(t)
        }
        _ => return Err("Invalid value for property 'tags'.".into()),
    };
    if purge == Some(true) {
        v.enable_purge_protection = Some(true);
    }
    if soft == Some(true) {
        v.enable_soft_delete = true;
    }
    if let Some(d) = retention {
        v.soft_delete_retention_in_days = d;
    }
    if let Some(b) = rbac {
        v.enable_rbac_authorization = b;
    }
    if let Some(b) = dep {
        v.enabled_for_deployment = b;
    }
    if let Some(b) = disk {
        v.enabled_for_disk_encryption = b;
    }
    if let Some(b) = tmpl {
        v.enabled_for_template_deployment = b;
    }
    if let Some(s) = sku {
        v.sku = s;
    }
    if let Some(t) = tenant {
        v.tenant_id = t;
    }
    if let Some(s) = pna {
        v.public_network_access = s;
    }
    if let Some(a) = acls {
        v.network_acls = Some(a);
    }
    if let Some(p) = policies {
        v.access_policies = p;
    }
    if let Some(t) = tags {
        v.tags = t;
    }
    Ok(())
}

/// Key Vault's resource provider keeps at most this many access policy entries per vault, whichever call adds
/// them (`MaxVaultAccessPolicies = 1024` in its controller, Azure/azure-rest-api-specs issue 5303; "0 to 1024
/// identities" in `VaultProperties.accessPolicies`). The code of Azure's refusal is not published, so this is the
/// generic one.
pub const MAX_ACCESS_POLICIES: usize = 1024;
const TOO_MANY_ACCESS_POLICIES: &str = "A vault may have at most 1024 access policies.";

pub fn parse_access_policies(v: &Value) -> Result<Vec<AccessPolicy>, String> {
    let arr = v.as_array().ok_or("The property 'accessPolicies' is required and must be an array.")?;
    if arr.len() > MAX_ACCESS_POLICIES {
        return Err(TOO_MANY_ACCESS_POLICIES.into());
    }
    arr.iter()
        .map(|e| {
            let tenant_id = e["tenantId"].as_str().ok_or("Access policy entries require 'tenantId'.")?;
            let object_id = e["objectId"].as_str().ok_or("Access policy entries require 'objectId'.")?;
            if !e["permissions"].is_object() {
                return Err("Access policy entries require 'permissions'.".to_string());
            }
            let permissions: Permissions =
                serde_json::from_value(e["permissions"].clone()).map_err(|x| format!("Invalid permissions: {x}"))?;
            Ok(AccessPolicy {
                tenant_id: tenant_id.to_string(),
                object_id: object_id.to_string(),
                application_id: e["applicationId"].as_str().map(str::to_string),
                permissions,
            })
        })
        .collect()
}

fn merge(into: &mut Vec<String>, add: &[String]) {
    for a in add {
        if !into.iter().any(|x| x.eq_ignore_ascii_case(a)) {
            into.push(a.clone());
        }
    }
}

/// `remove` matches permission values case-sensitively: a value sent in another case than stored removes
/// nothing and the call still answers 200 (Azure/azure-rest-api-specs issue 42963: "The accessPolicies/remove
/// endpoint performs case-sensitive matching on permission values ... The response is HTTP 200, but the access
/// policy is not removed"; `add` "accepts permissions regardless of casing").
fn subtract(from: &mut Vec<String>, rm: &[String]) {
    from.retain(|x| !rm.iter().any(|r| r == x));
}

/// `Vaults_UpdateAccessPolicy`: `add` unions permissions into the entry for the same (tenant, object,
/// application), `replace` overwrites that entry's permissions, `remove` takes the listed permissions away and
/// drops entries left with none.
pub fn update_access_policies(list: &mut Vec<AccessPolicy>, kind: &str, entries: &[AccessPolicy]) {
    for e in entries {
        let pos = list.iter().position(|a| {
            a.object_id.eq_ignore_ascii_case(&e.object_id)
                && a.tenant_id.eq_ignore_ascii_case(&e.tenant_id)
                && a.application_id.as_deref().map(str::to_ascii_lowercase)
                    == e.application_id.as_deref().map(str::to_ascii_lowercase)
        });
        match (kind, pos) {
            ("add", Some(i)) => {
                let p = &mut list[i].permissions;
                merge(&mut p.keys, &e.permissions.keys);
                merge(&mut p.secrets, &e.permissions.secrets);
                merge(&mut p.certificates, &e.permissions.certificates);
                merge(&mut p.storage, &e.permissions.storage);
            }
            ("add" | "replace", None) => list.push(e.clone()),
            ("replace", Some(i)) => list[i].permissions = e.permissions.clone(),
            ("remove", Some(i)) => {
                let p = &mut list[i].permissions;
                subtract(&mut p.keys, &e.permissions.keys);
                subtract(&mut p.secrets, &e.permissions.secrets);
                subtract(&mut p.certificates, &e.permissions.certificates);
                subtract(&mut p.storage, &e.permissions.storage);
                if p.keys.is_empty() && p.secrets.is_empty() && p.certificates.is_empty() && p.storage.is_empty() {
                    list.remove(i);
                }
            }
            _ => {}
        }
    }
}

pub fn role_assignment_json(ra: &RoleAssignment) -> Value {
    let mut v = json!({
        "id": ra.id(),
        "name": ra.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{}", ra.role_definition_guid),
            "principalId": ra.principal_id,
            "principalType": ra.principal_type,
            "scope": ra.scope,
            "createdOn": arm_time(ra.created_on),
            "updatedOn": arm_time(ra.updated_on),
            "createdBy": ra.created_by,
            "updatedBy": ra.created_by,
        }
    });
    if let Some(d) = &ra.description {
        v["properties"]["description"] = json!(d);
    }
    v
}

/// The role GUID at the end of a role definition id (subscription-scoped or tenant-level form).
pub fn role_guid(def_id: &str) -> Option<String> {
    let segs: Vec<&str> = def_id.split('/').filter(|s| !s.is_empty()).collect();
    let n = segs.len();
    if n < 4
        || !segs[n - 2].eq_ignore_ascii_case("roleDefinitions")
        || !segs[n - 3].eq_ignore_ascii_case("Microsoft.Authorization")
    {
        return None;
    }
    uuid::Uuid::parse_str(segs[n - 1]).ok().map(|u| u.to_string())
}

fn role_assignment(ctx: &Ctx, w: &mut World, r: &Req, scope: &str, name: &str) -> Out {
    if uuid::Uuid::parse_str(name).is_err() {
        return Out::arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentId",
            format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
        );
    }
    let id = format!("{}/providers/Microsoft.Authorization/roleAssignments/{name}", scope.trim_end_matches('/'));
    let key = id.to_ascii_lowercase();
    match r.method {
        Method::GET => match w.role_assignments.get(&key) {
            Some(ra) => Out::json(StatusCode::OK, role_assignment_json(ra)),
            None => Out::arm_error(
                StatusCode::NOT_FOUND,
                "RoleAssignmentNotFound",
                format!("The role assignment '{name}' is not found."),
            ),
        },
        Method::DELETE => match w.role_assignments.remove(&key) {
            Some(ra) => Out::json(StatusCode::OK, role_assignment_json(&ra)),
            None => Out::empty(StatusCode::NO_CONTENT),
        },
        Method::PUT => {
            let body = match r.json() {
                Ok(b) => b,
                Err(m) => {
                    return Out::arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", m);
                }
            };
            let p = &body["properties"];
            let Some(def) = p["roleDefinitionId"].as_str() else {
                return Out::arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    "The property 'roleDefinitionId' is required.",
                );
            };
            let Some(principal) = p["principalId"].as_str() else {
                return Out::arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    "The property 'principalId' is required.",
                );
            };
            let Some(guid) = role_guid(def) else {
                return Out::arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRoleDefinitionId",
                    format!("The role definition ID '{def}' is not valid."),
                );
            };
            if !w.role_known(&guid) {
                return Out::arm_error(
                    StatusCode::BAD_REQUEST,
                    "RoleDefinitionDoesNotExist",
                    format!("The specified role definition with ID '{guid}' does not exist."),
                );
            }
            if uuid::Uuid::parse_str(principal).is_err() {
                return Out::arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidPrincipalId",
                    format!("A valid principal ID must be provided for role assignment. '{principal}' is not valid."),
                );
            }
            let principal_type = match &p["principalType"] {
                Value::Null => None,
                Value::String(t)
                    if ["User", "Group", "ServicePrincipal", "ForeignGroup", "Device"].contains(&t.as_str()) =>
                {
                    Some(t.clone())
                }
                other => {
                    return Out::arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        format!("The principalType '{other}' is invalid."),
                    );
                }
            };
            if principal_type.is_none() && !w.principals.contains_key(&principal.to_ascii_lowercase()) {
                return Out::arm_error(
                    StatusCode::BAD_REQUEST,
                    "PrincipalNotFound",
                    format!(
                        "Principal {} does not exist in the directory {}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
                        principal.replace('-', ""),
                        w.tenant_id
                    ),
                );
            }
            let principal_type = principal_type.unwrap_or_else(|| "User".into());
            if let Some(existing) = w.role_assignments.get(&key) {
                if !existing.principal_id.eq_ignore_ascii_case(principal) || existing.role_definition_guid != guid {
                    return Out::arm_error(
                        StatusCode::BAD_REQUEST,
                        "RoleAssignmentUpdateNotPermitted",
                        "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                    );
                }
                return Out::json(StatusCode::OK, role_assignment_json(existing));
            }
            if w.role_assignments.values().any(|ra| {
                ra.principal_id.eq_ignore_ascii_case(principal)
                    && ra.role_definition_guid == guid
                    && ra.scope.trim_end_matches('/').eq_ignore_ascii_case(scope.trim_end_matches('/'))
            }) {
                return Out::arm_error(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    "The role assignment already exists.",
                );
            }
            let ra = RoleAssignment {
                name: name.to_ascii_lowercase(),
                scope: if scope.is_empty() { "/".into() } else { scope.to_string() },
                role_definition_guid: guid,
                principal_id: principal.to_string(),
                principal_type,
                description: p["description"].as_str().map(str::to_string),
                created_on: ctx.now,
                updated_on: ctx.now,
                created_by: ctx.principal.to_string(),
                // Key Vault RBAC guide, known limits: "it will take up to 10 minutes (600 seconds) after role
                // assignments is changed for role to be applied" — ARM reads show it at once.
                effective_at: ctx.now + sdur(w.delays.grant_propagation),
            };
            let out = Out::json(StatusCode::CREATED, role_assignment_json(&ra));
            w.role_assignments.insert(key, ra);
            out
        }
        _ => method_not_allowed(&r.method),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        Vault {
            name: "kv".into(),
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            location: "westus".into(),
            tenant_id: "t".into(),
            sku: "standard".into(),
            enable_rbac_authorization: false,
            enable_soft_delete: true,
            soft_delete_retention_in_days: 90,
            enable_purge_protection: None,
            access_policies: vec![],
            enabled_for_deployment: false,
            enabled_for_disk_encryption: false,
            enabled_for_template_deployment: false,
            public_network_access: "Enabled".into(),
            network_acls: None,
            tags: Default::default(),
            created_at: now,
            last_modified_at: now,
            keys: Default::default(),
            policy_effective_at: Default::default(),
        }
    }

    #[test]
    fn purge_protection_cannot_be_false() {
        let mut v = vault();
        assert_eq!(
            apply_vault_patch(&mut v, &json!({"properties": {"enablePurgeProtection": false}})).unwrap_err(),
            PURGE_PROTECTION_FALSE
        );
        apply_vault_patch(&mut v, &json!({"properties": {"enablePurgeProtection": true}})).unwrap();
        assert_eq!(v.enable_purge_protection, Some(true));
        assert!(apply_vault_patch(&mut v, &json!({"properties": {"enablePurgeProtection": false}})).is_err());
    }

    #[test]
    fn soft_delete_and_retention_rules() {
        let mut v = vault();
        assert_eq!(
            apply_vault_patch(&mut v, &json!({"properties": {"enableSoftDelete": false}})).unwrap_err(),
            SOFT_DELETE_FALSE
        );
        assert!(apply_vault_patch(&mut v, &json!({"properties": {"softDeleteRetentionInDays": 6}})).is_err());
        assert!(apply_vault_patch(&mut v, &json!({"properties": {"softDeleteRetentionInDays": 91}})).is_err());
        apply_vault_patch(&mut v, &json!({"properties": {"softDeleteRetentionInDays": 7}})).unwrap();
        assert_eq!(v.soft_delete_retention_in_days, 7);
        // a rejected patch changes nothing
        assert!(
            apply_vault_patch(
                &mut v,
                &json!({"properties": {"enableRbacAuthorization": true, "softDeleteRetentionInDays": 1}})
            )
            .is_err()
        );
        assert!(!v.enable_rbac_authorization);
    }

    #[test]
    fn access_policy_kinds() {
        let e = |keys: &[&str]| AccessPolicy {
            tenant_id: "t".into(),
            object_id: "o".into(),
            application_id: None,
            permissions: Permissions { keys: keys.iter().map(|s| s.to_string()).collect(), ..Default::default() },
        };
        let mut l = vec![];
        update_access_policies(&mut l, "add", &[e(&["get"])]);
        update_access_policies(&mut l, "add", &[e(&["wrapKey", "GET"])]);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].permissions.keys, vec!["get", "wrapKey"]);
        update_access_policies(&mut l, "replace", &[e(&["list"])]);
        assert_eq!(l[0].permissions.keys, vec!["list"]);
        // remove matches permission values case-sensitively (azure-rest-api-specs issue 42963)
        update_access_policies(&mut l, "remove", &[e(&["LIST"])]);
        assert_eq!(l[0].permissions.keys, vec!["list"]);
        update_access_policies(&mut l, "remove", &[e(&["list"])]);
        assert!(l.is_empty());
    }

    #[test]
    fn role_definition_ids() {
        assert_eq!(
            role_guid("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6").as_deref(),
            Some("e147488a-f6f5-4113-8e2d-b22465e65bf6")
        );
        assert!(
            role_guid("/providers/Microsoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6")
                .is_some()
        );
        assert!(role_guid("nonsense").is_none());
        assert_eq!(parse_principal_filter("principalId eq 'abc'").as_deref(), Some("abc"));
    }
}

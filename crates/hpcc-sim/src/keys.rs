//! Key Vault data plane (keys), routed by the Host header `{vault}.vault.localhost`.

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::auth::{AuthFail, Tokens, VAULT_AUDIENCES};
use super::endpoints::Endpoints;
use super::state::{Key, KeyVersion, Vault, World};
use super::wire::{Out, Req};

pub const KEYVAULT_API_VERSIONS: &[&str] = &["7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"];
pub const HOST_SUFFIX: &str = ".vault.localhost";

/// `{vault}.vault.localhost` → `vault`.
pub fn vault_from_host(host: &str) -> Option<String> {
    let v = host.strip_suffix(HOST_SUFFIX)?;
    (!v.is_empty() && !v.contains('.')).then(|| v.to_string())
}

fn kv_error(status: StatusCode, code: &str, message: impl Into<String>, inner: Option<&str>) -> Out {
    let mut e = json!({"error": {"code": code, "message": message.into()}});
    if let Some(i) = inner {
        e["error"]["innererror"] = json!({"code": i});
    }
    Out::json(status, e)
}

fn challenge(endpoints: &Endpoints, tenant: &str, out: Out) -> Out {
    out.with_header(
        "www-authenticate",
        format!(
            "Bearer authorization=\"{}{tenant}\", resource=\"https://vault.azure.net\"",
            endpoints.base_url.as_str()
        ),
    )
}

/// The data plane of `vault_name`, as the caller `r` sees it.
pub fn handle(tokens: &Tokens, endpoints: &Endpoints, w: &World, r: &Req, vault_name: &str) -> Out {
    let claims = match tokens.verify_bearer(r, VAULT_AUDIENCES, &w.tenant_id) {
        Ok(c) => c,
        Err(f) => {
            let msg = match f {
                AuthFail::Missing | AuthFail::Malformed => {
                    "AKV10000: Request is missing a Bearer or PoP token.".to_string()
                }
                AuthFail::Expired => "AKV10022: Invalid audience or token expired.".to_string(),
                AuthFail::WrongAudience(a) => {
                    format!("AKV10022: Invalid audience. Expected https://vault.azure.net, found: {a}.")
                }
                AuthFail::WrongTenant(t) => format!(
                    "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/<tenant>/, found: https://sts.windows.net/{t}/."
                ),
                AuthFail::Invalid => "AKV10002: Invalid token.".to_string(),
            };
            return challenge(endpoints, &w.tenant_id, kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", msg, None));
        }
    };
    let mut out = handle_authenticated(endpoints, w, r, vault_name, &claims.oid);
    out.principal = Some(claims.oid);
    out.with_header("x-ms-keyvault-service-version", "1.9.0.0").with_header("x-ms-keyvault-region", "simulated")
}

fn handle_authenticated(endpoints: &Endpoints, w: &World, r: &Req, vault_name: &str, oid: &str) -> Out {
    match r.param("api-version") {
        Some(v) if KEYVAULT_API_VERSIONS.contains(&v) => {}
        Some(v) => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version ({}).",
                    KEYVAULT_API_VERSIONS.last().copied().unwrap_or("7.6")
                ),
                None,
            );
        }
        None => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The 'api-version' query parameter is required.",
                None,
            );
        }
    }
    if r.method == Method::POST {
        return crypto(endpoints, w, r, vault_name, oid);
    }
    if r.method != Method::GET {
        return kv_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadParameter",
            format!("The method '{}' is not supported by the simulator.", r.method),
            None,
        );
    }
    let Some(vault) = w.vaults.get(&vault_name.to_ascii_lowercase()) else {
        return kv_error(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            format!("The vault '{vault_name}' does not exist."),
            None,
        );
    };
    if !vault.tenant_id.eq_ignore_ascii_case(&w.tenant_id) {
        return kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", "AKV10032: Invalid issuer.", None);
    }
    let base = endpoints.vault_uri(&vault.name).to_string();
    // /keys/{name}, /keys/{name}/, /keys/{name}/{version}, /keys/{name}/versions
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let (name, rest) = match segs.as_slice() {
        [k, name] if k.eq_ignore_ascii_case("keys") => (*name, None),
        [k, name, rest] if k.eq_ignore_ascii_case("keys") => (*name, Some(*rest)),
        _ => {
            return kv_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("The requested path '{}' is not supported by the simulator.", r.path),
                None,
            );
        }
    };
    let perm = if rest.is_some_and(|s| s.eq_ignore_ascii_case("versions")) { "list" } else { "get" };
    if !w.key_permission(vault, oid, perm) {
        return forbidden(vault, oid, perm);
    }
    let Some(key) = vault.key(name) else {
        return kv_error(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!(
                "A key with (name/id) {name} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
            None,
        );
    };
    match rest {
        Some(v) if v.eq_ignore_ascii_case("versions") => versions(r, vault, key, &base),
        Some(v) => match key.versions.iter().find(|k| k.version.eq_ignore_ascii_case(v)) {
            Some(kv) => bundle(vault, key, kv, &base),
            None => kv_error(
                StatusCode::NOT_FOUND,
                "KeyNotFound",
                format!("A key with (name/id) {name}/{v} was not found in this key vault."),
                None,
            ),
        },
        None => match key.versions.last() {
            Some(kv) => bundle(vault, key, kv, &base),
            None => kv_error(
                StatusCode::NOT_FOUND,
                "KeyNotFound",
                format!("A key with (name/id) {name} was not found in this key vault."),
                None,
            ),
        },
    }
}

/// `POST /keys/{name}/{version}/wrapkey|unwrapkey` (keys.json WrapKey/UnwrapKey). Key Vault checks the caller's
/// permission, then the version's `key_ops`: an operation the key does not list is refused with 403, inner
/// `KeyOperationForbidden` ("Operation decrypt is not permitted on this key." — Azure SDK for .NET issue 11518).
/// No cryptography: the "wrapped" value is an opaque, reversible encoding tied to the version.
fn crypto(endpoints: &Endpoints, w: &World, r: &Req, vault_name: &str, oid: &str) -> Out {
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let (name, version, op) = match segs.as_slice() {
        [k, name, version, op] if k.eq_ignore_ascii_case("keys") => (*name, *version, op.to_ascii_lowercase()),
        _ => {
            return kv_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("The requested path '{}' is not supported by the simulator.", r.path),
                None,
            );
        }
    };
    let op = match op.as_str() {
        "wrapkey" => "wrapKey",
        "unwrapkey" => "unwrapKey",
        _ => {
            return kv_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("The operation '{op}' is not supported by the simulator (wrapkey, unwrapkey)."),
                None,
            );
        }
    };
    let Some(vault) = w.vaults.get(&vault_name.to_ascii_lowercase()) else {
        return kv_error(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            format!("The vault '{vault_name}' does not exist."),
            None,
        );
    };
    if !w.key_permission(vault, oid, op) {
        return forbidden(vault, oid, op);
    }
    let Some(kv) = vault.key(name).and_then(|k| k.versions.iter().find(|v| v.version.eq_ignore_ascii_case(version)))
    else {
        return kv_error(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!("A key with (name/id) {name}/{version} was not found in this key vault."),
            None,
        );
    };
    if !kv.allows(op) {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation {op} is not permitted on this key."),
            Some("KeyOperationForbidden"),
        );
    }
    if !kv.enabled {
        // simulator's wording: the real text for a disabled key was not found
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation {op} is not allowed on a disabled key."),
            Some("KeyDisabled"),
        );
    }
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let (Some(_alg), Some(value)) = (body["alg"].as_str(), body["value"].as_str()) else {
        return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "The request requires 'alg' and 'value'.", None);
    };
    let tag = format!("hpcc-sim:{}:", kv.version);
    let out = if op == "wrapKey" {
        URL_SAFE_NO_PAD.encode(format!("{tag}{value}"))
    } else {
        let decoded = URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).ok().and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|d| d.strip_prefix(&tag)) {
            Some(v) => v.to_string(),
            // the real answer to a value this version did not wrap (Azure SDK for .NET issue 36269)
            None => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "Error occurred while decoding OAEP padding.",
                    None,
                );
            }
        }
    };
    let kid = format!("{}keys/{name}/{}", endpoints.vault_uri(&vault.name), kv.version);
    Out::json(StatusCode::OK, json!({"kid": kid, "value": out}))
}

fn forbidden(vault: &Vault, oid: &str, perm: &str) -> Out {
    if vault.enable_rbac_authorization {
        let action = match perm {
            "wrapKey" => "Microsoft.KeyVault/vaults/keys/wrap/action",
            "unwrapKey" => "Microsoft.KeyVault/vaults/keys/unwrap/action",
            _ => "Microsoft.KeyVault/vaults/keys/read",
        };
        kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=;oid={oid};iss=https://sts.windows.net/\r\nAction: '{action}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {};location={}\r\n",
                vault.id().to_ascii_lowercase(),
                vault.name,
                vault.location
            ),
            Some("ForbiddenByRbac"),
        )
    } else {
        kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The user, group or application 'appid=;oid={oid};iss=https://sts.windows.net/' does not have keys {perm} permission on key vault '{};location={}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                vault.name, vault.location
            ),
            Some("AccessDenied"),
        )
    }
}

fn attributes(vault: &Vault, kv: &KeyVersion) -> Value {
    let mut a = json!({
        "enabled": kv.enabled,
        "created": kv.created.as_second(),
        "updated": kv.created.as_second(),
        "recoveryLevel": vault.recovery_level(),
    });
    if vault.enable_soft_delete {
        a["recoverableDays"] = json!(vault.soft_delete_retention_in_days);
    }
    if let Some(n) = kv.nbf {
        a["nbf"] = json!(n.as_second());
    }
    if let Some(e) = kv.exp {
        a["exp"] = json!(e.as_second());
    }
    a
}

fn bundle(vault: &Vault, key: &Key, kv: &KeyVersion, base: &str) -> Out {
    let kid = format!("{base}keys/{}/{}", key.name, kv.version);
    Out::json(StatusCode::OK, json!({"key": kv.jwk(&kid), "attributes": attributes(vault, kv), "tags": kv.tags}))
}

fn versions(r: &Req, vault: &Vault, key: &Key, base: &str) -> Out {
    let max = match r.param("maxresults").map(str::parse::<usize>) {
        None => 25,
        Some(Ok(n)) if (1..=25).contains(&n) => n,
        Some(_) => {
            return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "maxresults must be between 1 and 25.", None);
        }
    };
    let skip = r.param("$skiptoken").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let items: Vec<Value> = key
        .versions
        .iter()
        .skip(skip)
        .take(max)
        .map(|kv| json!({"kid": format!("{base}keys/{}/{}", key.name, kv.version), "attributes": attributes(vault, kv), "tags": kv.tags}))
        .collect();
    let mut body = json!({"value": items});
    if skip + max < key.versions.len() {
        body["nextLink"] = Value::String(format!(
            "{base}keys/{}/versions?api-version={}&$skiptoken={}&maxresults={max}",
            key.name,
            r.param("api-version").unwrap_or("7.5"),
            skip + max
        ));
    }
    Out::json(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_hosts() {
        assert_eq!(vault_from_host("kv1.vault.localhost").as_deref(), Some("kv1"));
        assert_eq!(vault_from_host("127.0.0.1"), None);
        assert_eq!(vault_from_host("a.b.vault.localhost"), None);
        assert_eq!(vault_from_host(".vault.localhost"), None);
    }
}

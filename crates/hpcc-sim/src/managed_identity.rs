//! The managed-identity token endpoint of a host that has the world's user-assigned identities attached, in App
//! Service's form: `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…[&client_id=…]` with the
//! `X-IDENTITY-HEADER` secret, answering `{access_token, expires_on, resource, token_type, client_id}` with
//! `expires_on` a string of Unix seconds (Microsoft's App Service managed-identity documentation, "REST endpoint
//! reference"). azure_identity's `ManagedIdentityCredential` uses this source when `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER` are set; its IMDS source has a fixed `169.254.169.254` URL and cannot be pointed here.
//!
//! The identity is chosen by `client_id`, `principal_id` (IMDS and azure_identity call it `object_id`) or
//! `mi_res_id` (IMDS: `msi_res_id`). The simulated host has no system-assigned identity: a request naming none
//! gets 400, as does one naming an identity that does not exist. Tokens are the Entra endpoint's, for the
//! identity's principal, so ARM and Key Vault authorize them like any other.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::auth::{ARM_AUDIENCES, TOKEN_LIFETIME_SECS, Tokens, VAULT_AUDIENCES};
use super::state::{UserIdentity, World};
use super::wire::{Out, Req};

/// Path of the endpoint on the main listener (`IDENTITY_ENDPOINT` = base URL + this).
pub const PATH: &str = "msi/token";
/// The api-version App Service's endpoint speaks (and azure_identity sends).
pub const API_VERSION: &str = "2019-08-01";
/// The request header carrying `IDENTITY_HEADER`.
pub const SECRET_HEADER: &str = "x-identity-header";

/// Whether `segs` address the endpoint (case-insensitive, trailing slash ignored).
pub fn is_path(segs: &[String]) -> bool {
    let want: Vec<&str> = PATH.split('/').collect();
    segs.len() == want.len() && segs.iter().zip(want).all(|(s, w)| s.eq_ignore_ascii_case(w))
}

fn error(status: StatusCode, message: impl Into<String>) -> Out {
    Out::json(status, json!({"statusCode": status.as_u16(), "message": message.into()}))
}

fn find<'w>(w: &'w World, r: &Req) -> Result<&'w UserIdentity, Out> {
    let by = |names: &[&str]| names.iter().find_map(|n| r.param(n)).map(str::to_string);
    let ids = w.identities.values();
    let found = if let Some(c) = by(&["client_id"]) {
        ids.into_iter().find(|i| i.client_id.eq_ignore_ascii_case(&c))
    } else if let Some(p) = by(&["principal_id", "object_id"]) {
        ids.into_iter().find(|i| i.principal_id.eq_ignore_ascii_case(&p))
    } else if let Some(id) = by(&["mi_res_id", "msi_res_id"]) {
        ids.into_iter().find(|i| i.id().eq_ignore_ascii_case(id.trim_end_matches('/')))
    } else {
        return Err(error(StatusCode::BAD_REQUEST, "No system-assigned managed identity is assigned to this host."));
    };
    found.ok_or_else(|| {
        error(StatusCode::BAD_REQUEST, "The requested user-assigned managed identity is not assigned to this host.")
    })
}

/// Answer one token request; `secret` is the host's `IDENTITY_HEADER`.
pub fn handle(tokens: &Tokens, secret: &str, w: &World, r: &Req) -> Out {
    if r.method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "The endpoint only accepts GET requests.");
    }
    if secret.is_empty() || r.header(SECRET_HEADER) != Some(secret) {
        return error(StatusCode::UNAUTHORIZED, "The X-IDENTITY-HEADER header is missing or wrong.");
    }
    if r.param("api-version") != Some(API_VERSION) {
        return error(StatusCode::BAD_REQUEST, format!("Only api-version {API_VERSION} is supported."));
    }
    let Some(resource) = r.param("resource").map(str::to_string) else {
        return error(StatusCode::BAD_REQUEST, "The resource query parameter is required.");
    };
    if !ARM_AUDIENCES.contains(&resource.as_str()) && !VAULT_AUDIENCES.contains(&resource.as_str()) {
        return error(StatusCode::BAD_REQUEST, format!("Unknown resource '{resource}'."));
    }
    let ident = match find(w, r) {
        Ok(i) => i,
        Err(o) => return o,
    };
    let expires_on = jsonwebtoken::get_current_timestamp() + TOKEN_LIFETIME_SECS;
    let token = tokens.issue(&resource, &w.tenant_id, &ident.principal_id, &ident.client_id);
    let mut out = Out::json(
        StatusCode::OK,
        json!({
            "access_token": token,
            "expires_on": expires_on.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": ident.client_id,
        }),
    );
    out.principal = Some(ident.principal_id.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_matching() {
        let p = |s: &str| s.split('/').filter(|x| !x.is_empty()).map(str::to_string).collect::<Vec<_>>();
        assert!(is_path(&p("/msi/token")));
        assert!(is_path(&p("/MSI/token/")));
        assert!(!is_path(&p("/msi/token/x")));
        assert!(!is_path(&p("/t/oauth2/v2.0/token")));
    }
}

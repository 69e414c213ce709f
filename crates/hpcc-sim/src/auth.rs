//! Entra ID (Microsoft identity platform) stand-in: discovery documents and the v2.0 token endpoint
//! (client credentials with a secret or a client assertion), plus bearer-token verification for ARM and Key Vault.

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::state::World;
use super::wire::{Out, Req};

/// Token lifetime in seconds (real time: clients cache tokens by their own clock).
pub const TOKEN_LIFETIME_SECS: u64 = 3599;

pub const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net",
    "https://management.core.windows.net/",
];
pub const VAULT_AUDIENCES: &[&str] = &["https://vault.azure.net", "https://vault.azure.net/"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub tid: String,
    pub oid: String,
    pub sub: String,
    pub appid: String,
    #[serde(default)]
    pub idtyp: String,
    #[serde(default)]
    pub ver: String,
}

pub fn is_entra_path(segs: &[String]) -> bool {
    match segs {
        [c, d, i]
            if c.eq_ignore_ascii_case("common")
                && d.eq_ignore_ascii_case("discovery")
                && i.eq_ignore_ascii_case("instance") =>
        {
            true
        }
        [_, v, w, o] if v.eq_ignore_ascii_case("v2.0") && w == ".well-known" && o == "openid-configuration" => true,
        [_, o, v, t]
            if o.eq_ignore_ascii_case("oauth2")
                && v.eq_ignore_ascii_case("v2.0")
                && t.eq_ignore_ascii_case("token") =>
        {
            true
        }
        [_, o, t] if o.eq_ignore_ascii_case("oauth2") && t.eq_ignore_ascii_case("token") => true,
        _ => false,
    }
}

fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Out {
    Out::json(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

/// The Entra endpoints; `base_url` is the authority host.
pub fn handle(tokens: &Tokens, base_url: &url::Url, w: &World, r: &Req, segs: &[String]) -> Out {
    let base = base_url.as_str().trim_end_matches('/').to_string();
    let host = base_url.host_str().unwrap_or("127.0.0.1").to_string();
    let tenant_of_world = w.tenant_id.clone();
    if segs[0].eq_ignore_ascii_case("common") && segs.len() == 3 {
        let tenant_discovery = format!("{base}/{tenant_of_world}/v2.0/.well-known/openid-configuration");
        return Out::json(
            StatusCode::OK,
            json!({
                "tenant_discovery_endpoint": tenant_discovery,
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }),
        );
    }
    let tenant = segs[0].clone();
    let known_tenant = tenant.eq_ignore_ascii_case(&tenant_of_world)
        || ["organizations", "common"].contains(&tenant.to_ascii_lowercase().as_str());
    if segs.len() == 4 && segs[1].eq_ignore_ascii_case("v2.0") {
        if !known_tenant {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_tenant",
                90002,
                &format!("Tenant '{tenant}' not found."),
            );
        }
        let t = &tenant_of_world;
        return Out::json(
            StatusCode::OK,
            json!({
                "token_endpoint": format!("{base}/{t}/oauth2/v2.0/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{base}/{t}/discovery/v2.0/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": format!("{base}/{t}/v2.0"),
                "request_uri_parameter_supported": false,
                "authorization_endpoint": format!("{base}/{t}/oauth2/v2.0/authorize"),
                "device_authorization_endpoint": format!("{base}/{t}/oauth2/v2.0/devicecode"),
                "end_session_endpoint": format!("{base}/{t}/oauth2/v2.0/logout"),
                "tenant_region_scope": "NA",
                "cloud_instance_name": "microsoftonline.com",
            }),
        );
    }
    // token endpoint
    if r.method != Method::POST {
        return entra_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    if !known_tenant {
        return entra_error(StatusCode::BAD_REQUEST, "invalid_tenant", 90002, &format!("Tenant '{tenant}' not found."));
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&r.body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let (basic_id, basic_secret) = basic_auth(r);
    match get("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some(g) => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{g}'."),
            );
        }
        None => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
    }
    let Some(client_id) = get("client_id").or(basic_id) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(scope) = get("scope") else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let resource = match scopes.as_slice() {
        [s] if s.ends_with("/.default") => s.trim_end_matches(".default").trim_end_matches('/').to_string(),
        _ => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            );
        }
    };
    // keep the exact form the client asked for (`https://management.azure.com/` when it sent `//.default`)
    let aud = if scopes[0].ends_with("//.default") { format!("{resource}/") } else { resource.clone() };
    if !ARM_AUDIENCES.contains(&aud.as_str()) && !VAULT_AUDIENCES.contains(&aud.as_str()) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant_of_world}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        );
    }
    let principal = w.principal_by_client_id(&client_id).cloned();
    let Some(principal) = principal else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_of_world}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        );
    };
    if let Some(secret) = get("client_secret").or(basic_secret) {
        if principal.secret.as_deref() != Some(secret.as_str()) {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        }
    } else if let Some(assertion) = get("client_assertion") {
        if get("client_assertion_type").as_deref() != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                "Invalid client_assertion_type: must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            );
        }
        if let Err(msg) = check_assertion(&assertion, &principal) {
            return entra_error(StatusCode::UNAUTHORIZED, "invalid_client", 700213, &msg);
        }
    } else {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    let token = tokens.issue(&aud, &tenant_of_world, &principal.object_id, &principal.client_id);
    let mut out = Out::json(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": TOKEN_LIFETIME_SECS, "ext_expires_in": TOKEN_LIFETIME_SECS, "access_token": token}),
    );
    out.principal = Some(principal.object_id.clone());
    out
}

fn basic_auth(r: &Req) -> (Option<String>, Option<String>) {
    let Some(v) = r.header("authorization").and_then(|h| h.strip_prefix("Basic ")) else {
        return (None, None);
    };
    let Ok(raw) = STANDARD.decode(v.trim()) else {
        return (None, None);
    };
    let s = String::from_utf8_lossy(&raw).to_string();
    match s.split_once(':') {
        Some((a, b)) => (Some(decode_form(a)), Some(decode_form(b))),
        None => (None, None),
    }
}

fn decode_form(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Checks a client assertion's claims (the signature is NOT verified: no key material is modelled).
/// With federated credentials, `iss`/`sub`/`aud` must match one; otherwise a certificate-style assertion
/// (`iss` = `sub` = client id) is accepted.
pub fn check_assertion(assertion: &str, p: &super::state::Principal) -> Result<(), String> {
    let payload = assertion.split('.').nth(1).ok_or("Client assertion is not a JWT.")?;
    let raw = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "Client assertion is not a JWT.".to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| "Client assertion is not a JWT.".to_string())?;
    let iss = v["iss"].as_str().unwrap_or_default();
    let sub = v["sub"].as_str().unwrap_or_default();
    let auds: Vec<String> = match &v["aud"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => vec![],
    };
    if let Some(exp) = v["exp"].as_u64()
        && exp < jsonwebtoken::get_current_timestamp()
    {
        return Err("The client assertion has expired.".into());
    }
    if p.federated_credentials.is_empty() {
        if iss == p.client_id && sub == p.client_id {
            return Ok(());
        }
        return Err(format!("Client assertion issuer/subject must be the client id '{}'.", p.client_id));
    }
    let ok = p.federated_credentials.iter().any(|fc| {
        let want_aud: Vec<String> =
            if fc.audiences.is_empty() { vec!["api://AzureADTokenExchange".into()] } else { fc.audiences.clone() };
        fc.issuer == iss && fc.subject == sub && auds.iter().any(|a| want_aud.contains(a))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "No matching federated identity record found for presented assertion subject '{sub}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion."
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFail {
    Missing,
    Malformed,
    Invalid,
    Expired,
    WrongAudience(String),
    WrongTenant(String),
}

/// Signs and checks the access tokens the token endpoint hands out (HS256 with a key made at start).
pub struct Tokens {
    key: Vec<u8>,
}

impl Tokens {
    /// A fresh random signing key, so tokens of another run are refused.
    pub fn generate() -> Tokens {
        let mut key = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        Tokens { key }
    }

    pub fn issue(&self, aud: &str, tid: &str, oid: &str, appid: &str) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            aud: aud.to_string(),
            iss: format!("https://sts.windows.net/{tid}/"),
            iat: now,
            nbf: now.saturating_sub(300),
            exp: now + TOKEN_LIFETIME_SECS,
            tid: tid.to_string(),
            oid: oid.to_string(),
            sub: oid.to_string(),
            appid: appid.to_string(),
            idtyp: "app".into(),
            ver: "1.0".into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.key))
            .unwrap_or_default()
    }

    /// Verify `Authorization: Bearer …` for one of `audiences`, issued in `tenant`.
    pub fn verify_bearer(&self, r: &Req, audiences: &[&str], tenant: &str) -> Result<Claims, AuthFail> {
        let Some(h) = r.header("authorization") else {
            return Err(AuthFail::Missing);
        };
        let Some(tok) = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")) else {
            return Err(AuthFail::Malformed);
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v.validate_exp = true;
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(tok.trim(), &DecodingKey::from_secret(&self.key), &v).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthFail::Expired,
                _ => AuthFail::Invalid,
            },
        )?;
        let c = data.claims;
        if !audiences.contains(&c.aud.as_str()) {
            return Err(AuthFail::WrongAudience(c.aud));
        }
        if !c.tid.eq_ignore_ascii_case(tenant) {
            return Err(AuthFail::WrongTenant(c.tid));
        }
        Ok(c)
    }
}

/// ARM's 401 answers.
pub fn arm_unauthorized(authority: &url::Url, f: &AuthFail) -> Out {
    let authority = authority.as_str().to_string();
    let (code, msg, desc) = match f {
        AuthFail::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_string(),
            "The authentication failed because of missing 'Authorization' header.",
        ),
        AuthFail::Malformed => (
            "AuthenticationFailedInvalidHeader",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.".to_string(),
            "The access token is invalid.",
        ),
        AuthFail::Invalid => {
            ("InvalidAuthenticationToken", "The access token is invalid.".to_string(), "The access token is invalid.")
        }
        AuthFail::Expired => (
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.".to_string(),
            "The access token has expired.",
        ),
        AuthFail::WrongAudience(a) => (
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{a}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'."
            ),
            "The access token has wrong audience.",
        ),
        AuthFail::WrongTenant(t) => (
            "InvalidAuthenticationTokenTenant",
            format!("The access token is from the wrong issuer 'https://sts.windows.net/{t}/'."),
            "The access token is from the wrong issuer.",
        ),
    };
    Out::arm_error(StatusCode::UNAUTHORIZED, code, msg).with_header(
        "www-authenticate",
        format!("Bearer authorization_uri=\"{authority}\", error=\"invalid_token\", error_description=\"{desc}\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_paths() {
        let p = |s: &str| s.split('/').filter(|x| !x.is_empty()).map(str::to_string).collect::<Vec<_>>();
        assert!(is_entra_path(&p("/t/oauth2/v2.0/token")));
        assert!(is_entra_path(&p("/t/v2.0/.well-known/openid-configuration")));
        assert!(is_entra_path(&p("/common/discovery/instance")));
        assert!(!is_entra_path(&p("/subscriptions/x/resourceGroups/y")));
    }

    #[test]
    fn assertion_rules() {
        let mut p = super::super::state::Principal {
            object_id: "o".into(),
            client_id: "c".into(),
            secret: None,
            display_name: "x".into(),
            kind: "ServicePrincipal".into(),
            arm_scopes: vec![],
            federated_credentials: vec![],
        };
        let jwt = |v: serde_json::Value| format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(v.to_string()));
        assert!(check_assertion(&jwt(json!({"iss": "c", "sub": "c"})), &p).is_ok());
        assert!(check_assertion(&jwt(json!({"iss": "x", "sub": "c"})), &p).is_err());
        assert!(check_assertion("garbage", &p).is_err());
        p.federated_credentials.push(super::super::seed::SeedFederatedCredential {
            issuer: "https://k8s".into(),
            subject: "system:serviceaccount:ns:sa".into(),
            audiences: vec![],
        });
        let ok =
            json!({"iss": "https://k8s", "sub": "system:serviceaccount:ns:sa", "aud": ["api://AzureADTokenExchange"]});
        assert!(check_assertion(&jwt(ok), &p).is_ok());
        let bad =
            json!({"iss": "https://k8s", "sub": "system:serviceaccount:ns:other", "aud": "api://AzureADTokenExchange"});
        assert!(check_assertion(&jwt(bad), &p).is_err());
    }
}

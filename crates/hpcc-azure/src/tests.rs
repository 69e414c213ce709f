//! Client behaviour against a scripted local HTTPS stub on 127.0.0.1 (test CA, loopback resolution, the real
//! azure_identity client-secret flow for tokens).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};

use super::*;

const SUB: &str = "00000000-0000-0000-0000-000000000001";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    host: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn auth(&self) -> Option<&str> {
        self.headers.get("authorization").and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

type Responder = Arc<dyn Fn(&Seen, usize) -> Response + Send + Sync>;

/// A scripted HTTPS server. The token endpoint is built in; everything else goes to `responder(request, n)` where
/// `n` counts non-token requests so far.
struct Stub {
    port: u16,
    ca_file: tempfile::NamedTempFile,
    seen: Arc<Mutex<Vec<Seen>>>,
    handle: axum_server::Handle<std::net::SocketAddr>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

impl Stub {
    async fn start(responder: impl Fn(&Seen, usize) -> Response + Send + Sync + 'static) -> Stub {
        let responder: Responder = Arc::new(responder);
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "azure unit-test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec![
            "management.azure.com".to_string(),
            "login.microsoftonline.com".to_string(),
            "*.vault.azure.net".to_string(),
            "evil.example.com".to_string(),
        ])
        .unwrap();
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, ca_cert.pem().as_bytes()).unwrap();

        let chain = vec![
            rustls::pki_types::CertificateDer::from(leaf_cert.der().to_vec()),
            rustls::pki_types::CertificateDer::from(ca_cert.der().to_vec()),
        ];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut server =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server));

        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let counter = Arc::new(AtomicUsize::new(0));
        let app = {
            let seen = seen.clone();
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                let responder = responder.clone();
                let counter = counter.clone();
                async move {
                    let host = headers
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string)
                        .or_else(|| uri.authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    let s = Seen {
                        method,
                        host: host.split(':').next().unwrap_or_default().to_string(),
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or_default().to_string(),
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    seen.lock().unwrap().push(s.clone());
                    if s.path.ends_with("/oauth2/v2.0/token") {
                        let form: HashMap<String, String> =
                            url::form_urlencoded::parse(s.body.as_bytes()).into_owned().collect();
                        let scope = form.get("scope").cloned().unwrap_or_default();
                        if form.get("client_secret").map(String::as_str) != Some("test-secret") {
                            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"})))
                                .into_response();
                        }
                        let tok = if scope.contains("vault") { "tok-kv" } else { "tok-arm" };
                        return axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": tok}))
                            .into_response();
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    responder(&s, n)
                }
            })
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap().handle(handle.clone());
        tokio::spawn(async move { server.serve(app.into_make_service()).await });
        Stub { port, ca_file, seen, handle }
    }

    fn config(&self) -> AzureConfig {
        let port = self.port;
        let vars: HashMap<&str, String> = HashMap::from([
            ("HPCC_ARM_ENDPOINT", format!("https://management.azure.com:{port}")),
            ("AZURE_AUTHORITY_HOST", format!("https://login.microsoftonline.com:{port}")),
            ("HPCC_CA_FILE", self.ca_file.path().display().to_string()),
            ("HPCC_RESOLVE_TO_LOOPBACK", "true".into()),
            ("HPCC_CREDENTIAL", "client-secret".into()),
            ("AZURE_TENANT_ID", TENANT.into()),
            ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111".into()),
            ("AZURE_CLIENT_SECRET", "test-secret".into()),
        ]);
        let mut cfg = AzureConfig::from_vars(|k| vars.get(k).cloned()).unwrap();
        cfg.retry_base_delay = Duration::from_millis(10);
        cfg.max_retry_wait = Duration::from_secs(5);
        cfg
    }

    async fn client(&self) -> Azure {
        Azure::new(self.config(), None).await.unwrap()
    }

    fn vault_uri(&self, name: &str) -> Url {
        Url::parse(&format!("https://{name}.vault.azure.net:{}/", self.port)).unwrap()
    }

    /// Non-token requests.
    fn calls(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| !s.path.ends_with("/oauth2/v2.0/token")).cloned().collect()
    }

    fn token_calls(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.path.ends_with("/oauth2/v2.0/token")).cloned().collect()
    }
}

fn json_resp(status: u16, body: Value) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    r.headers_mut().insert("date", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
    r.headers_mut().insert("x-ms-request-id", "req-1".parse().unwrap());
    r
}

fn with_header(mut r: Response, k: &'static str, v: &str) -> Response {
    r.headers_mut().insert(k, v.parse().unwrap());
    r
}

fn arm_error(status: u16, code: &str) -> Response {
    json_resp(status, json!({"error": {"code": code, "message": format!("{code} happened")}}))
}

fn cache_id() -> ResourceId {
    ResourceId::cache(SUB, "rg", "c1")
}

fn cache_body(state: &str) -> Value {
    json!({
        "id": cache_id().to_string(), "name": "c1", "type": "Microsoft.StorageCache/Cache", "location": "eastus",
        "systemData": {"createdAt": "2024-05-01T10:00:00Z"},
        "identity": {"type": "SystemAssigned", "principalId": "p-1", "tenantId": TENANT},
        "properties": {"provisioningState": state, "health": {"state": "WaitingForKey"}}
    })
}

#[tokio::test]
async fn get_cache_found_and_missing() {
    let stub = Stub::start(|s, _| {
        if s.path.ends_with("/caches/c1") {
            json_resp(200, cache_body("Creating"))
        } else {
            arm_error(404, "ResourceNotFound")
        }
    })
    .await;
    let az = stub.client().await;
    let got = az.get_cache(&cache_id()).await.unwrap();
    let cache = got.value.unwrap();
    assert_eq!(cache.provisioning_state(), Some("Creating"));
    assert_eq!(cache.health_state(), Some("WaitingForKey"));
    assert_eq!(cache.identity.unwrap().principal_id.as_deref(), Some("p-1"));
    assert_eq!(got.date, Some("1994-11-06T08:49:37Z".parse().unwrap()));
    let missing = az.get_cache(&ResourceId::cache(SUB, "rg", "nope")).await.unwrap();
    assert!(missing.value.is_none());

    let calls = stub.calls();
    assert_eq!(calls.len(), 2);
    let c = &calls[0];
    assert_eq!(c.method, Method::GET);
    assert_eq!(c.host, "management.azure.com");
    assert_eq!(c.path, format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/caches/c1"));
    assert_eq!(c.query, format!("api-version={CACHES_API_VERSION}"));
    assert_eq!(c.auth(), Some("Bearer tok-arm"));
    assert!(uuid::Uuid::parse_str(c.headers["x-ms-client-request-id"].to_str().unwrap()).is_ok());
    // One token request for both calls (azure_identity caches it), for the ARM scope.
    let tokens = stub.token_calls();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert!(tokens[0].body.contains("scope=https%3A%2F%2Fmanagement.azure.com%2F.default"));
}

#[tokio::test]
async fn retries_429_honouring_retry_after() {
    let stub = Stub::start(|_, n| {
        if n == 0 {
            with_header(arm_error(429, "SubscriptionRequestsThrottled"), "retry-after", "1")
        } else {
            json_resp(200, cache_body("Succeeded"))
        }
    })
    .await;
    let az = stub.client().await;
    let start = std::time::Instant::now();
    let got = az.get_cache(&cache_id()).await.unwrap();
    assert!(got.value.is_some());
    assert!(start.elapsed() >= Duration::from_secs(1), "waited {:?}", start.elapsed());
    assert_eq!(stub.calls().len(), 2);
}

#[tokio::test]
async fn long_retry_after_is_returned_not_slept() {
    let stub =
        Stub::start(|_, _| with_header(arm_error(429, "SubscriptionRequestsThrottled"), "retry-after", "120")).await;
    let az = stub.client().await;
    let start = std::time::Instant::now();
    let err = az.get_cache(&cache_id()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    match err {
        AzureError::Throttled { retry_after } => assert_eq!(retry_after, Duration::from_secs(120)),
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(stub.calls().len(), 1);
}

#[tokio::test]
async fn persistent_429_becomes_throttled_after_max_retries() {
    let stub = Stub::start(|_, _| arm_error(429, "SubscriptionRequestsThrottled")).await;
    let az = stub.client().await;
    let err = az.get_cache(&cache_id()).await.unwrap_err();
    assert!(matches!(err, AzureError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(stub.calls().len(), 3, "1 try + max_retries (2)");
}

#[tokio::test]
async fn server_errors_retried_for_idempotent_calls_only() {
    let stub = Stub::start(|_, _| arm_error(503, "ServiceUnavailable")).await;
    let az = stub.client().await;
    let err = az.get_cache(&cache_id()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    assert!(err.is_retryable());
    assert_eq!(stub.calls().len(), 3);

    let err = az.patch_cache(&cache_id(), &json!({"tags": {"a": "b"}})).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(stub.calls().len(), 4, "a cache PATCH is not resent after a 5xx");

    // Vault protection PATCH is idempotent and is retried.
    let _ = az.enable_vault_protection(&ResourceId::vault(SUB, "rg", "kv")).await.unwrap_err();
    assert_eq!(stub.calls().len(), 7);
}

#[tokio::test]
async fn transport_errors_are_reported() {
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let stub = Stub::start(|_, _| json_resp(200, json!({}))).await;
    let mut cfg = stub.config();
    cfg.cloud.arm_endpoint = Url::parse(&format!("https://management.azure.com:{port}/")).unwrap();
    let az = Azure::new(cfg, None).await.unwrap();
    let err = az.get_cache(&cache_id()).await.unwrap_err();
    assert!(matches!(err, AzureError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn put_cache_returns_the_body_or_none_after_a_202_without_reading_again() {
    let stub = Stub::start(|s, _| match (s.method.clone(), s.path.ends_with("/c1")) {
        (Method::PUT, true) => with_header(
            json_resp(201, cache_body("Creating")),
            "azure-asyncoperation",
            "https://management.azure.com/op",
        ),
        (Method::PUT, false) => with_header(json_resp(202, json!({})), "retry-after", "10"),
        _ => arm_error(400, "BadRequest"),
    })
    .await;
    let az = stub.client().await;
    let desired = Cache { location: Some("eastus".into()), ..Default::default() };
    let got = az.put_cache(&cache_id(), &desired).await.unwrap().value.expect("the 201 body");
    assert_eq!(got.provisioning_state(), Some("Creating"));
    assert_eq!(got.created_at(), Some("2024-05-01T10:00:00Z".parse().unwrap()));
    let put = &stub.calls()[0];
    assert_eq!(put.json(), json!({"location": "eastus", "properties": {}}));
    assert_eq!(put.headers["content-type"], "application/json");

    let other = ResourceId::cache(SUB, "rg", "c2");
    let got = az.put_cache(&other, &desired).await.unwrap();
    assert!(got.value.is_none(), "accepted: the caller observes the cache itself");
    assert_eq!(got.retry_after, Some(Duration::from_secs(10)));
    assert_eq!(stub.calls().len(), 2, "no read after the PUT");
}

#[tokio::test]
async fn put_cache_surfaces_retirement_conflict() {
    let stub = Stub::start(|_, _| {
        json_resp(409, json!({"error": {"code": "OperationNotAllowed", "message": "Unable to create HPC Cache due to product retirement"}}))
    })
    .await;
    let az = stub.client().await;
    let err = az.put_cache(&cache_id(), &Cache::default()).await.unwrap_err();
    assert_eq!(err.code(), Some("OperationNotAllowed"));
    assert!(!err.is_retryable());
    assert_eq!(stub.calls().len(), 1);
}

#[tokio::test]
async fn delete_outcomes() {
    let stub = Stub::start(|_, n| match n {
        0 => with_header(json_resp(202, json!({})), "location", "https://management.azure.com/op"),
        1 => StatusCode::NO_CONTENT.into_response(),
        2 => arm_error(404, "ResourceNotFound"),
        _ => json_resp(200, json!({})),
    })
    .await;
    let az = stub.client().await;
    assert_eq!(az.delete_cache(&cache_id()).await.unwrap().value, DeleteOutcome::Accepted);
    assert_eq!(az.delete_cache(&cache_id()).await.unwrap().value, DeleteOutcome::Gone);
    assert_eq!(az.delete_cache(&cache_id()).await.unwrap().value, DeleteOutcome::Gone);
    assert_eq!(az.delete_cache(&cache_id()).await.unwrap().value, DeleteOutcome::Gone);
    assert!(stub.calls().iter().all(|c| c.method == Method::DELETE));
}

#[tokio::test]
async fn list_follows_next_link_on_same_origin_only() {
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let stub = Stub::start(move |s, _| {
        let port = *p2.lock().unwrap();
        if s.query.contains("page=2") {
            json_resp(200, json!({"value": [cache_body("Succeeded")]}))
        } else if s.path.contains("/resourceGroups/evil/") {
            json_resp(200, json!({"value": [], "nextLink": format!("https://evil.example.com:{port}/x")}))
        } else {
            let next = format!("https://management.azure.com:{port}{}?api-version={CACHES_API_VERSION}&page=2", s.path);
            json_resp(200, json!({"value": [cache_body("Creating")], "nextLink": next}))
        }
    })
    .await;
    *port.lock().unwrap() = stub.port;
    let az = stub.client().await;
    let all = az.list_caches(SUB, Some("rg")).await.unwrap();
    assert_eq!(all.value.len(), 2);
    let calls = stub.calls();
    assert_eq!(
        calls[0].path,
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/caches")
    );
    assert!(calls[1].query.contains("page=2"));
    let sub_wide = az.list_caches(SUB, None).await.unwrap();
    assert_eq!(sub_wide.value.len(), 2);
    assert_eq!(stub.calls()[2].path, format!("/subscriptions/{SUB}/providers/Microsoft.StorageCache/caches"));
    let err = az.list_caches(SUB, Some("evil")).await.unwrap_err();
    assert!(matches!(err, AzureError::Decode(_)), "{err:?}");
    assert!(!stub.calls().iter().any(|c| c.host == "evil.example.com"));
}

#[tokio::test]
async fn vault_protection_and_access_policies() {
    let stub = Stub::start(|s, _| {
        if s.path.contains("/accessPolicies/") {
            json_resp(200, json!({"properties": s.json()["properties"].clone()}))
        } else {
            json_resp(
                200,
                json!({"name": "kv", "properties": {"enableSoftDelete": true, "enablePurgeProtection": true}}),
            )
        }
    })
    .await;
    let az = stub.client().await;
    let kv = ResourceId::vault(SUB, "rg", "kv");
    let v = az.enable_vault_protection(&kv).await.unwrap();
    assert!(v.value.is_protected());
    az.add_access_policy(&kv, TENANT, "obj-1", &CMK_KEY_PERMISSIONS).await.unwrap();
    az.remove_access_policy(&kv, TENANT, "obj-1").await.unwrap();
    let calls = stub.calls();
    assert_eq!(calls[0].method, Method::PATCH);
    assert_eq!(calls[0].query, format!("api-version={VAULTS_API_VERSION}"));
    assert_eq!(calls[0].json(), json!({"properties": {"enableSoftDelete": true, "enablePurgeProtection": true}}));
    assert!(!calls[0].body.contains("false"));
    assert_eq!(calls[1].method, Method::PUT);
    assert_eq!(calls[1].path, format!("{kv}/accessPolicies/add"));
    assert_eq!(
        calls[1].json(),
        json!({"properties": {"accessPolicies": [{"tenantId": TENANT, "objectId": "obj-1", "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]}}]}})
    );
    assert_eq!(calls[2].path, format!("{kv}/accessPolicies/remove"));
    // Several identities in one update, at most 16 (the spec's VaultAccessPolicyProperties).
    az.add_access_policies(&kv, &[(TENANT, "obj-1"), (TENANT, "obj-2")], &CMK_KEY_PERMISSIONS).await.unwrap();
    let objects: Vec<Value> = stub.calls()[3].json()["properties"]["accessPolicies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["objectId"].clone())
        .collect();
    assert_eq!(objects, [json!("obj-1"), json!("obj-2")]);
    let seventeen: Vec<(&str, &str)> = (0..17).map(|_| (TENANT, "obj")).collect();
    let err = az.add_access_policies(&kv, &seventeen, &CMK_KEY_PERMISSIONS).await.unwrap_err();
    assert!(matches!(err, AzureError::Input(_)), "{err:?}");
    assert_eq!(stub.calls().len(), 4, "refused before sending");
}

/// Key Vault's answer when two writes to one vault overlap (github.com/Azure/AzureKeyVault/issues/6).
fn conflict_error() -> Response {
    json_resp(
        409,
        json!({"error": {"code": "ConflictError", "message": "A conflict occurred that prevented the operation from completing. The operation failed because the Key Vault 'kv' changed from the point the operation began."}}),
    )
}

#[tokio::test]
async fn a_vault_conflict_is_retried_within_the_call_for_puts_and_left_to_the_poll_for_patches() {
    let stub = Stub::start(|s, n| match (s.method.clone(), n) {
        (Method::PUT, 0) => conflict_error(),
        (Method::PUT, _) => json_resp(200, json!({"properties": s.json()["properties"].clone()})),
        _ => conflict_error(),
    })
    .await;
    let az = stub.client().await;
    let kv = ResourceId::vault(SUB, "rg", "kv");
    // accessPolicies/add is a PUT: sending it again is safe, and the second answer is 200.
    az.add_access_policy(&kv, TENANT, "obj-1", &CMK_KEY_PERMISSIONS).await.unwrap();
    assert_eq!(stub.calls().len(), 2);
    // A PATCH is not resent within the call; the error is retryable with no invented delay, so the reconcile
    // comes back at its poll interval.
    let err = az.patch_cache(&cache_id(), &json!({"tags": {}})).await.unwrap_err();
    assert_eq!(err.code(), Some("ConflictError"));
    assert_eq!(err.classify(), ErrorClass::Retryable { after: None });
    assert_eq!(stub.calls().len(), 3);
}

#[tokio::test]
async fn role_assignments_are_deterministic_and_idempotent() {
    let stub = Stub::start(|s, n| match (s.method.clone(), n) {
        (Method::PUT, 0) => json_resp(201, json!({"name": "x", "properties": s.json()["properties"].clone()})),
        (Method::PUT, 1) => arm_error(409, "RoleAssignmentExists"),
        (Method::PUT, _) => arm_error(409, "Conflict"),
        (Method::DELETE, 3) => StatusCode::NO_CONTENT.into_response(),
        (Method::DELETE, _) => arm_error(404, "RoleAssignmentNotFound"),
        _ => arm_error(400, "BadRequest"),
    })
    .await;
    let az = stub.client().await;
    let kv = ResourceId::vault(SUB, "rg", "kv");
    az.put_role_assignment(&kv, "p-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap();
    az.put_role_assignment(&kv, "p-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap();
    let err = az.put_role_assignment(&kv, "p-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap_err();
    assert_eq!(err.code(), Some("Conflict"));
    az.delete_role_assignment(&kv, "p-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap();
    az.delete_role_assignment(&kv, "p-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap();

    let calls = stub.calls();
    let name = role_assignment_name(&kv, "p-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER);
    let path = format!("{kv}/providers/Microsoft.Authorization/roleAssignments/{name}");
    assert!(calls.iter().all(|c| c.path == path), "{:?}", calls.iter().map(|c| &c.path).collect::<Vec<_>>());
    assert_eq!(calls[0].query, format!("api-version={ROLE_ASSIGNMENTS_API_VERSION}"));
    assert_eq!(
        calls[0].json(),
        json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER}"),
            "principalId": "p-1",
            "principalType": "ServicePrincipal"
        }})
    );
}

/// A roleAssignments list entry for `principal` with `role` at `scope`.
fn assignment(principal: &str, role: &str, scope: &str) -> Value {
    json!({"name": "a", "properties": {
        "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}"),
        "principalId": principal, "scope": scope
    }})
}

#[tokio::test]
async fn role_lookup_follows_next_link_and_counts_management_groups() {
    let role = KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER;
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let kv = ResourceId::vault(SUB, "rg", "kv");
    let below = format!("{kv}/keys/k");
    let stub = Stub::start(move |s, _| {
        let port = *p2.lock().unwrap();
        // ARM's nextLink keeps the query (filter, api-version) and adds a skip token.
        let next = format!("https://management.azure.com:{port}{}?{}&page=2", s.path, s.query);
        match (s.query.contains("page=2"), s.query.contains("p-mg"), s.query.contains("p-paged")) {
            // The principal holds the role on a management group above the subscription.
            (_, true, _) => json_resp(200, json!({"value": [assignment("p-mg", role, "/providers/Microsoft.Management/managementGroups/platform")]})),
            // Page 1 has only an assignment below the vault (which does not count); page 2 has the real one.
            (false, _, true) => json_resp(200, json!({"value": [assignment("p-paged", role, &below)], "nextLink": next})),
            (true, _, true) => json_resp(200, json!({"value": [assignment("p-paged", role, &format!("/subscriptions/{SUB}"))]})),
            _ => json_resp(200, json!({"value": [assignment("p-none", role, &below)]})),
        }
    })
    .await;
    *port.lock().unwrap() = stub.port;
    let az = stub.client().await;
    assert!(az.has_role_assignment(&kv, "p-paged", role).await.unwrap(), "found on the second page");
    assert!(az.has_role_assignment(&kv, "p-mg", role).await.unwrap(), "a management-group assignment covers the vault");
    assert!(!az.has_role_assignment(&kv, "p-none", role).await.unwrap(), "one on a key below does not");
    assert_eq!(stub.calls().iter().filter(|c| c.query.contains("page=2")).count(), 1);
}

#[test]
fn role_assignment_name_is_deterministic() {
    let kv = ResourceId::vault(SUB, "rg", "kv");
    let a = role_assignment_name(&kv, "P-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER);
    let upper: ResourceId = kv.to_string().to_uppercase().parse().unwrap();
    assert_eq!(a, role_assignment_name(&upper, "p-1", &KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER.to_uppercase()));
    assert_eq!(a.get_version_num(), 5);
    assert_ne!(a, role_assignment_name(&kv, "p-2", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER));
    assert_ne!(
        a,
        role_assignment_name(&ResourceId::vault(SUB, "rg", "kv2"), "p-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER)
    );
    assert_ne!(a, role_assignment_name(&kv, "p-1", "12338af0-0e69-4776-bea7-57ae8d297424"));
    // Stable across releases: a changed formula would orphan existing assignments.
    assert_eq!(a.to_string(), role_assignment_name(&kv, "p-1", KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).to_string());
}

#[tokio::test]
async fn identity_get() {
    let stub = Stub::start(|s, _| {
        if s.path.ends_with("/id1") {
            json_resp(
                200,
                json!({"name": "id1", "properties": {"principalId": "pp", "clientId": "cc", "tenantId": TENANT}}),
            )
        } else {
            arm_error(404, "ResourceNotFound")
        }
    })
    .await;
    let az = stub.client().await;
    let id =
        az.get_user_assigned_identity(&ResourceId::user_assigned_identity(SUB, "rg", "id1")).await.unwrap().unwrap();
    assert_eq!(id.properties.principal_id.as_deref(), Some("pp"));
    assert!(
        az.get_user_assigned_identity(&ResourceId::user_assigned_identity(SUB, "rg", "x")).await.unwrap().is_none()
    );
    assert_eq!(stub.calls()[0].query, format!("api-version={IDENTITIES_API_VERSION}"));
}

fn kv_challenge(resource: &str) -> Response {
    let mut r = json_resp(
        401,
        json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}}),
    );
    r.headers_mut().insert(
        "www-authenticate",
        format!(r#"Bearer authorization="https://login.windows.net/{TENANT}", resource="{resource}""#).parse().unwrap(),
    );
    r
}

fn key_body() -> Value {
    let n = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [0xc1u8; 256]);
    json!({"key": {"kid": "https://kv.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef", "kty": "RSA", "n": n, "e": "AQAB", "key_ops": ["wrapKey", "unwrapKey"]},
           "attributes": {"enabled": true, "created": 1, "updated": 1}})
}

#[tokio::test]
async fn key_vault_challenge_flow() {
    let stub = Stub::start(|s, _| match s.auth() {
        None => kv_challenge("https://vault.azure.net"),
        Some("Bearer tok-kv") if s.path.ends_with("/missing") => json_resp(
            404,
            json!({"error": {"code": "KeyNotFound", "message": "A key with (name/id) missing was not found"}}),
        ),
        Some("Bearer tok-kv") if s.path.ends_with("/versions") => json_resp(
            200,
            json!({"value": [{"kid": "https://kv.vault.azure.net/keys/k/v1", "attributes": {"enabled": true}}]}),
        ),
        Some("Bearer tok-kv") => json_resp(200, key_body()),
        Some(_) => json_resp(403, json!({"error": {"code": "Forbidden", "message": "wrong audience"}})),
    })
    .await;
    let az = stub.client().await;
    let kv = stub.vault_uri("kv");
    let key = az.get_key(&kv, "k", Some("0123456789abcdef0123456789abcdef")).await.unwrap().unwrap();
    assert_eq!(key.rsa_bits(), Some(2048));
    assert_eq!(key.version(), Some("0123456789abcdef0123456789abcdef"));
    let calls = stub.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].auth(), None, "first call goes without a token");
    assert_eq!(calls[1].auth(), Some("Bearer tok-kv"));
    assert_eq!(calls[1].host, "kv.vault.azure.net");
    assert_eq!(calls[1].path, "/keys/k/0123456789abcdef0123456789abcdef");
    assert_eq!(calls[1].query, format!("api-version={KEYVAULT_API_VERSION}"));
    assert!(stub.token_calls().iter().any(|t| t.body.contains("scope=https%3A%2F%2Fvault.azure.net%2F.default")));

    // The challenge is cached per host: later calls authenticate at once.
    assert!(az.get_key(&kv, "missing", None).await.unwrap().is_none());
    let versions = az.list_key_versions(&kv, "k").await.unwrap().unwrap();
    assert_eq!(versions[0].version(), Some("v1"));
    let calls = stub.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[2].path, "/keys/missing");
    assert!(calls[2..].iter().all(|c| c.auth() == Some("Bearer tok-kv")));
}

#[tokio::test]
async fn key_vault_refuses_foreign_hosts_and_audiences() {
    let stub = Stub::start(|s, _| {
        if s.host.starts_with("other") {
            kv_challenge("https://management.azure.com")
        } else {
            kv_challenge("https://vault.azure.net")
        }
    })
    .await;
    let az = stub.client().await;
    // Not a Key Vault host: refused before any request.
    let evil = Url::parse(&format!("https://evil.example.com:{}/", stub.port)).unwrap();
    let err = az.get_key(&evil, "k", None).await.unwrap_err();
    assert!(matches!(err, AzureError::Auth(_)), "{err:?}");
    assert!(stub.calls().is_empty());
    // A vault host whose challenge asks for another audience gets no token.
    let err = az.get_key(&stub.vault_uri("other"), "k", None).await.unwrap_err();
    assert!(matches!(err, AzureError::Auth(_)), "{err:?}");
    assert_eq!(stub.calls().len(), 1);
    assert!(stub.token_calls().is_empty());
    // http:// is refused.
    let plain = Url::parse("http://kv.vault.azure.net/").unwrap();
    assert!(matches!(az.get_key(&plain, "k", None).await.unwrap_err(), AzureError::Auth(_)));
    // A token that is refused is reported, not retried forever.
    let err = az.get_key(&stub.vault_uri("kv"), "k", None).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(stub.calls().len(), 3);
}

#[tokio::test]
async fn bad_secret_is_an_auth_error() {
    let stub = Stub::start(|_, _| json_resp(200, json!({}))).await;
    let mut cfg = stub.config();
    cfg.client_secret = Some(azure_core::credentials::Secret::new("wrong"));
    let az = Azure::new(cfg, None).await.unwrap();
    let err = az.get_cache(&cache_id()).await.unwrap_err();
    assert!(matches!(err, AzureError::Auth(_)), "{err:?}");
    assert!(!err.to_string().contains("wrong"));
    assert!(stub.calls().is_empty());
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, Option<u16>)>>);

impl CallObserver for Recorder {
    fn observe(&self, operation: &'static str, status: Option<u16>, _elapsed: Duration) {
        self.0.lock().unwrap().push((operation, status));
    }
}

#[tokio::test]
async fn observer_sees_every_attempt() {
    let stub = Stub::start(|_, n| {
        if n == 0 { arm_error(500, "InternalServerError") } else { json_resp(200, cache_body("Succeeded")) }
    })
    .await;
    let rec = Arc::new(Recorder::default());
    let az = Azure::new(stub.config(), Some(rec.clone())).await.unwrap();
    az.get_cache(&cache_id()).await.unwrap();
    let seen = rec.0.lock().unwrap().clone();
    assert_eq!(seen, vec![("token", Some(200)), ("caches.get", Some(500)), ("caches.get", Some(200))]);
}

#[tokio::test]
async fn client_side_rate_limit_spaces_writes() {
    let stub = Stub::start(|_, _| json_resp(200, json!({"name": "kv", "properties": {}}))).await;
    let mut cfg = stub.config();
    cfg.writes_per_second = 10.0;
    cfg.write_burst = 2;
    let az = Azure::new(cfg, None).await.unwrap();
    let kv = ResourceId::vault(SUB, "rg", "kv");
    let start = std::time::Instant::now();
    for _ in 0..5 {
        az.enable_vault_protection(&kv).await.unwrap();
    }
    // 2 free, then 3 at 100 ms each.
    assert!(start.elapsed() >= Duration::from_millis(290), "{:?}", start.elapsed());
    // Reads in another subscription are not held up by that bucket.
    let start = std::time::Instant::now();
    let _ = az.get_vault(&ResourceId::vault("other-sub", "rg", "kv")).await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn inside_a_reconcile_an_empty_bucket_defers_the_call_instead_of_sleeping() {
    let stub = Stub::start(|_, _| json_resp(200, cache_body("Succeeded"))).await;
    let mut cfg = stub.config();
    cfg.reads_per_second = 2.0;
    cfg.read_burst = 1;
    let az = Azure::new(cfg, None).await.unwrap();
    let caller = |h: &str| crate::Caller { holder: h.into(), urgency: crate::Urgency::Normal };
    crate::with_caller(caller("a"), az.get_cache(&cache_id())).await.unwrap();
    let start = std::time::Instant::now();
    let err = crate::with_caller(caller("b"), az.get_cache(&cache_id())).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(100), "no sleep: {:?}", start.elapsed());
    match err {
        AzureError::Deferred { after, access } => {
            assert_eq!(access, crate::Access::Read);
            assert!(after > Duration::from_millis(200) && after <= Duration::from_millis(500), "{after:?}")
        }
        other => panic!("expected Deferred, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(stub.calls().len(), 1, "nothing sent for b");
    // b's ticket is honoured once due, without a further wait.
    tokio::time::sleep(Duration::from_millis(550)).await;
    crate::with_caller(caller("b"), az.get_cache(&cache_id())).await.unwrap();
    assert_eq!(stub.calls().len(), 2);
}

/// Deferring the second page of a list would throw the first away, and under a busy budget a list of many pages
/// would never complete: once a list read has begun, inside a reconcile too, its later pages wait for their tokens.
#[tokio::test]
async fn inside_a_reconcile_a_list_read_that_has_begun_waits_for_its_later_pages() {
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let stub = Stub::start(move |s, _| {
        let port = *p2.lock().unwrap();
        let page: u32 = s.query.split("page=").nth(1).and_then(|p| p.parse().ok()).unwrap_or(1);
        let mut body = json!({"value": [cache_body("Creating")]});
        if page < 3 {
            let next = format!(
                "https://management.azure.com:{port}{}?api-version={CACHES_API_VERSION}&page={}",
                s.path,
                page + 1
            );
            body["nextLink"] = json!(next);
        }
        json_resp(200, body)
    })
    .await;
    *port.lock().unwrap() = stub.port;
    let mut cfg = stub.config();
    cfg.reads_per_second = 10.0;
    cfg.read_burst = 1;
    let az = Azure::new(cfg, None).await.unwrap();
    let caller = crate::Caller { holder: "a".into(), urgency: crate::Urgency::Normal };
    let start = std::time::Instant::now();
    let all = crate::with_caller(caller, az.list_caches(SUB, Some("rg"))).await.unwrap();
    assert_eq!(all.value.len(), 3, "every page");
    assert_eq!(stub.calls().len(), 3);
    assert!(start.elapsed() >= Duration::from_millis(150), "pages 2 and 3 waited for tokens: {:?}", start.elapsed());
}

#[tokio::test]
async fn inside_a_reconcile_a_429_is_returned_at_once_not_slept() {
    let stub =
        Stub::start(|_, _| with_header(arm_error(429, "SubscriptionRequestsThrottled"), "retry-after", "1")).await;
    let az = stub.client().await;
    let caller = crate::Caller { holder: "a".into(), urgency: crate::Urgency::Urgent };
    let start = std::time::Instant::now();
    let err = crate::with_caller(caller, az.get_cache(&cache_id())).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(900), "{:?}", start.elapsed());
    assert!(matches!(err, AzureError::Throttled { retry_after } if retry_after == Duration::from_secs(1)), "{err:?}");
    assert_eq!(stub.calls().len(), 1);
}

fn other_principal(secret: &str) -> Principal {
    Principal {
        tenant_id: TENANT.into(),
        client_id: "22222222-2222-2222-2222-222222222222".into(),
        client_secret: Some(Secret::new(secret.to_string())),
    }
}

#[tokio::test]
async fn a_principal_client_asks_for_its_own_tokens() {
    let stub = Stub::start(|_, _| json_resp(200, cache_body("Succeeded"))).await;
    let op = stub.client().await;
    let ns = op.for_principal(&other_principal("test-secret")).unwrap();
    ns.get_cache(&cache_id()).await.unwrap();
    let tokens = stub.token_calls();
    assert_eq!(tokens.len(), 1, "the namespace client has no token yet and asks for one");
    assert!(tokens[0].body.contains("client_id=22222222-2222-2222-2222-222222222222"), "{}", tokens[0].body);
    op.get_cache(&cache_id()).await.unwrap();
    let tokens = stub.token_calls();
    assert_eq!(tokens.len(), 2, "tokens are cached per credential, never shared");
    assert!(tokens[1].body.contains("client_id=11111111-1111-1111-1111-111111111111"), "{}", tokens[1].body);
}

#[tokio::test]
async fn a_refused_credential_says_how_entra_refused_it() {
    let stub = Stub::start(|_, _| json_resp(200, json!({}))).await;
    let ns = stub.client().await.for_principal(&other_principal("wrong-ns-secret")).unwrap();
    let err = ns.get_cache(&cache_id()).await.unwrap_err();
    let rejection = err.token_rejection().expect("Entra refused the credential");
    assert_eq!((rejection.status, rejection.error.as_str()), (401, "invalid_client"));
    assert_eq!(rejection.code(), "invalid_client");
    assert!(matches!(err, AzureError::Auth(_)) && err.is_retryable(), "still an Auth error: {err:?}");
    assert!(!err.to_string().contains("wrong-ns-secret"));
    assert!(stub.calls().is_empty(), "nothing reaches ARM without a token");
    // A transport failure is no rejection.
    assert!(AzureError::Auth("token endpoint unreachable".into()).token_rejection().is_none());
    let codes = TokenRejection { status: 401, error: "invalid_client".into(), error_codes: Some("7000215".into()) };
    assert_eq!(codes.code(), "invalid_client (AADSTS7000215)");
}

#[tokio::test]
async fn each_principal_has_its_own_arm_budget() {
    let stub = Stub::start(|_, _| json_resp(200, json!({"name": "kv", "properties": {}}))).await;
    let mut cfg = stub.config();
    cfg.writes_per_second = 10.0;
    cfg.write_burst = 2;
    let op = Azure::new(cfg, None).await.unwrap();
    let ns = op.for_principal(&other_principal("test-secret")).unwrap();
    let kv = ResourceId::vault(SUB, "rg", "kv");
    // Warm both token caches so only the limiter is timed.
    op.get_vault(&kv).await.unwrap();
    ns.get_vault(&kv).await.unwrap();
    let start = std::time::Instant::now();
    for _ in 0..2 {
        op.enable_vault_protection(&kv).await.unwrap();
    }
    assert!(start.elapsed() < Duration::from_millis(90), "{:?}", start.elapsed());
    // The operator's write burst is spent; the namespace principal's, in the same subscription, is not.
    let start = std::time::Instant::now();
    for _ in 0..2 {
        ns.enable_vault_protection(&kv).await.unwrap();
    }
    assert!(start.elapsed() < Duration::from_millis(90), "{:?}", start.elapsed());
    // A second client for the operator's own principal shares its (spent) budget.
    let op_again = op.for_principal(&Principal {
        tenant_id: TENANT.into(),
        client_id: "11111111-1111-1111-1111-111111111111".into(),
        client_secret: Some(Secret::new("test-secret".to_string())),
    });
    let op_again = op_again.unwrap();
    op_again.get_vault(&kv).await.unwrap();
    let start = std::time::Instant::now();
    op_again.enable_vault_protection(&kv).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(50), "{:?}", start.elapsed());
}

// ------------------------------------------------------------------------------------------------ AML file systems

fn aml_id() -> ResourceId {
    ResourceId::aml_filesystem(SUB, "rg", "fs1")
}

fn aml_body(name: &str, state: &str, health: &str) -> Value {
    json!({
        "id": ResourceId::aml_filesystem(SUB, "rg", name).to_string(), "name": name,
        "type": "Microsoft.StorageCache/amlFilesystem", "location": "eastus", "zones": ["1"],
        "systemData": {"createdAt": "2024-05-01T10:00:00Z"},
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {
            ResourceId::user_assigned_identity(SUB, "rg", "id1").to_string(): {"principalId": "p-1", "clientId": "c-1"}
        }},
        "sku": {"name": "AMLFS-Durable-Premium-250"},
        "properties": {
            "storageCapacityTiB": 16, "provisioningState": state, "throughputProvisionedMBps": 4000,
            "health": {"state": health, "statusCode": "0", "statusDescription": "amlFilesystem is ok."},
            "clientInfo": {"mgsAddress": "10.0.0.4", "mountCommand": "mount -t lustre 10.0.0.4@tcp:/lustrefs /lustre/lustrefs", "lustreVersion": "2.15.0"},
            "encryptionSettings": {"keyEncryptionKey": {"keyUrl": "https://kv.vault.azure.net/keys/k/v1",
                "sourceVault": {"id": ResourceId::vault(SUB, "rg", "kv").to_string()}}}
        }
    })
}

/// What an operator would PUT: the create-time fields only, nothing read-only.
fn desired_aml() -> AmlFilesystem {
    use models::*;
    let mut uai = std::collections::BTreeMap::new();
    uai.insert(ResourceId::user_assigned_identity(SUB, "rg", "id1").to_string(), UserAssignedIdentityValue::default());
    let container =
        |c: &str| format!("{}/blobServices/default/containers/{c}", ResourceId::storage_account(SUB, "rg", "sa1"));
    AmlFilesystem {
        location: Some("eastus".into()),
        zones: Some(vec!["1".into()]),
        identity: Some(AmlFilesystemIdentity {
            r#type: identity_type::USER_ASSIGNED.into(),
            user_assigned_identities: uai,
            ..Default::default()
        }),
        sku: Some(AmlFilesystemSku { name: "AMLFS-Durable-Premium-250".into() }),
        properties: AmlFilesystemProperties {
            storage_capacity_tib: Some(16.0),
            filesystem_subnet: Some(format!(
                "{}/subnets/fs",
                ResourceId::new(SUB, "rg", "Microsoft.Network", "virtualNetworks", "vnet")
            )),
            maintenance_window: Some(AmlFilesystemMaintenanceWindow {
                day_of_week: Some(day_of_week::FRIDAY.into()),
                time_of_day_utc: Some("22:00".into()),
            }),
            encryption_settings: Some(AmlFilesystemEncryptionSettings {
                key_encryption_key: Some(KeyVaultKeyReference {
                    key_url: "https://kv.vault.azure.net/keys/k/v1".into(),
                    source_vault: SourceVault { id: ResourceId::vault(SUB, "rg", "kv").to_string() },
                }),
            }),
            hsm: Some(AmlFilesystemHsm {
                settings: Some(AmlFilesystemHsmSettings {
                    container: container("data"),
                    logging_container: container("logs"),
                    import_prefixes_initial: Some(vec!["/".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn aml_get_found_and_missing() {
    let stub = Stub::start(|s, _| {
        if s.path.ends_with("/amlFilesystems/fs1") {
            json_resp(200, aml_body("fs1", "Creating", "Transitioning"))
        } else {
            arm_error(404, "ResourceNotFound")
        }
    })
    .await;
    let az = stub.client().await;
    let got = az.get_aml_filesystem(&aml_id()).await.unwrap();
    let fs = got.value.expect("200 is a file system");
    assert_eq!(fs.provisioning_state(), Some(models::provisioning_state::CREATING));
    assert_eq!(fs.health_state(), Some(models::aml_health_state::TRANSITIONING));
    assert_eq!(fs.created_at(), Some("2024-05-01T10:00:00Z".parse().unwrap()));
    assert_eq!(fs.key_encryption_key().unwrap().key_url, "https://kv.vault.azure.net/keys/k/v1");
    assert_eq!(fs.mgs_address(), Some("10.0.0.4"));
    assert_eq!(fs.properties.storage_capacity_tib, Some(16.0));
    assert_eq!(fs.properties.throughput_provisioned_mbps, Some(4000));
    assert_eq!(fs.properties.health.as_ref().unwrap().status_code.as_deref(), Some("0"));
    let uai = fs.identity.as_ref().unwrap().user_assigned_identities.values().next().unwrap();
    assert_eq!(uai.principal_id.as_deref(), Some("p-1"));
    assert_eq!(got.date, Some("1994-11-06T08:49:37Z".parse().unwrap()));
    assert!(az.get_aml_filesystem(&ResourceId::aml_filesystem(SUB, "rg", "nope")).await.unwrap().value.is_none());

    let calls = stub.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].method, Method::GET);
    assert_eq!(calls[0].host, "management.azure.com");
    assert_eq!(
        calls[0].path,
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/amlFilesystems/fs1")
    );
    assert_eq!(calls[0].query, format!("api-version={AML_FILESYSTEMS_API_VERSION}"));
    assert_eq!(calls[0].auth(), Some("Bearer tok-arm"));
}

#[tokio::test]
async fn aml_list_follows_next_link_on_same_origin_only() {
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let stub = Stub::start(move |s, _| {
        let port = *p2.lock().unwrap();
        if s.query.contains("page=2") {
            json_resp(200, json!({"value": [aml_body("fs2", "Succeeded", "Available")]}))
        } else if s.path.contains("/resourceGroups/evil/") {
            json_resp(200, json!({"value": [], "nextLink": format!("https://evil.example.com:{port}/x")}))
        } else {
            let next = format!(
                "https://management.azure.com:{port}{}?api-version={AML_FILESYSTEMS_API_VERSION}&page=2",
                s.path
            );
            json_resp(200, json!({"value": [aml_body("fs1", "Succeeded", "Available")], "nextLink": next}))
        }
    })
    .await;
    *port.lock().unwrap() = stub.port;
    let az = stub.client().await;
    let all = az.list_aml_filesystems(SUB, Some("rg")).await.unwrap();
    let names: Vec<_> = all.value.iter().map(|f| f.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["fs1", "fs2"]);
    let calls = stub.calls();
    assert_eq!(
        calls[0].path,
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/amlFilesystems")
    );
    assert_eq!(calls[0].query, format!("api-version={AML_FILESYSTEMS_API_VERSION}"));
    assert!(calls[1].query.contains("page=2"));
    assert_eq!(az.list_aml_filesystems(SUB, None).await.unwrap().value.len(), 2);
    assert_eq!(stub.calls()[2].path, format!("/subscriptions/{SUB}/providers/Microsoft.StorageCache/amlFilesystems"));
    let err = az.list_aml_filesystems(SUB, Some("evil")).await.unwrap_err();
    assert!(matches!(err, AzureError::Decode(_)), "{err:?}");
    assert!(!stub.calls().iter().any(|c| c.host == "evil.example.com"));
}

#[tokio::test]
async fn aml_put_returns_the_body_or_none_after_a_202_without_reading_again() {
    let stub = Stub::start(|s, _| match (s.method.clone(), s.path.ends_with("/fs1")) {
        (Method::PUT, true) => with_header(
            json_resp(201, aml_body("fs1", "Creating", "Transitioning")),
            "azure-asyncoperation",
            "https://management.azure.com/op",
        ),
        (Method::PUT, false) => with_header(
            with_header(StatusCode::ACCEPTED.into_response(), "retry-after", "15"),
            "location",
            "https://management.azure.com/op",
        ),
        _ => arm_error(400, "BadRequest"),
    })
    .await;
    let az = stub.client().await;
    let desired = desired_aml();
    let got = az.put_aml_filesystem(&aml_id(), &desired).await.unwrap().value.expect("the 201 body");
    assert_eq!(got.provisioning_state(), Some("Creating"));
    assert_eq!(got.name.as_deref(), Some("fs1"));
    let put = &stub.calls()[0];
    assert_eq!(put.method, Method::PUT);
    assert_eq!(put.path, aml_id().to_string());
    assert_eq!(put.query, format!("api-version={AML_FILESYSTEMS_API_VERSION}"));
    assert_eq!(put.headers["content-type"], "application/json");
    let sa = ResourceId::storage_account(SUB, "rg", "sa1");
    assert_eq!(
        put.json(),
        json!({
            "location": "eastus",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {ResourceId::user_assigned_identity(SUB, "rg", "id1").to_string(): {}}},
            "sku": {"name": "AMLFS-Durable-Premium-250"},
            "zones": ["1"],
            "properties": {
                "storageCapacityTiB": 16,
                "filesystemSubnet": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/fs"),
                "maintenanceWindow": {"dayOfWeek": "Friday", "timeOfDayUTC": "22:00"},
                "encryptionSettings": {"keyEncryptionKey": {"keyUrl": "https://kv.vault.azure.net/keys/k/v1", "sourceVault": {"id": ResourceId::vault(SUB, "rg", "kv").to_string()}}},
                "hsm": {"settings": {
                    "container": format!("{sa}/blobServices/default/containers/data"),
                    "loggingContainer": format!("{sa}/blobServices/default/containers/logs"),
                    "importPrefixesInitial": ["/"]
                }}
            }
        })
    );
    assert!(put.body.contains("\"storageCapacityTiB\":16,"), "a whole TiB count is sent as an integer: {}", put.body);

    // 202 without a body: accepted, not a failure on an empty body, and not read again.
    let other = ResourceId::aml_filesystem(SUB, "rg", "fs2");
    let got = az.put_aml_filesystem(&other, &desired).await.unwrap();
    assert!(got.value.is_none());
    assert_eq!(got.retry_after, Some(Duration::from_secs(15)), "the 202's Retry-After is kept");
    assert_eq!(stub.calls().len(), 2);
}

#[tokio::test]
async fn aml_put_accepted_without_a_body_is_sent_once_and_not_read_again() {
    let stub = Stub::start(|s, _| match s.method {
        Method::PUT => StatusCode::ACCEPTED.into_response(),
        _ => arm_error(404, "ResourceNotFound"),
    })
    .await;
    let got = stub.client().await.put_aml_filesystem(&aml_id(), &desired_aml()).await.unwrap();
    assert!(got.value.is_none());
    assert_eq!(stub.calls().len(), 1);
}

#[tokio::test]
async fn aml_put_errors_are_classified_by_the_one_classifier() {
    let stub = Stub::start(|s, n| match (s.path.rsplit('/').next().unwrap(), n) {
        ("bad", _) => arm_error(400, "InvalidParameter"),
        ("forbidden", _) => arm_error(403, "AuthorizationFailed"),
        ("busy", 2) => json_resp(201, aml_body("busy", "Updating", "Available")),
        ("busy", _) => arm_error(409, "AnotherOperationInProgress"),
        _ => arm_error(500, "InternalServerError"),
    })
    .await;
    let az = stub.client().await;
    let rg_fs = |n: &str| ResourceId::aml_filesystem(SUB, "rg", n);

    let bad = az.put_aml_filesystem(&rg_fs("bad"), &desired_aml()).await.unwrap_err();
    assert_eq!((bad.status(), bad.code()), (Some(400), Some("InvalidParameter")));
    assert_eq!(bad.classify(), ErrorClass::Fatal);
    assert_eq!(stub.calls().len(), 1, "a refusal is sent once");

    // A PUT is idempotent: a transient conflict is sent again inside the call (1 + 1 retries here).
    let busy = az.put_aml_filesystem(&rg_fs("busy"), &desired_aml()).await.unwrap();
    assert_eq!(busy.value.expect("the 201 body").provisioning_state(), Some("Updating"));
    assert_eq!(stub.calls().len(), 3);

    let forbidden = az.put_aml_filesystem(&rg_fs("forbidden"), &desired_aml()).await.unwrap_err();
    assert_eq!((forbidden.status(), forbidden.classify()), (Some(403), ErrorClass::Fatal));
    assert_eq!(stub.calls().len(), 4);

    let five = az.put_aml_filesystem(&rg_fs("other"), &desired_aml()).await.unwrap_err();
    assert_eq!(five.status(), Some(500));
    assert!(matches!(five.classify(), ErrorClass::Retryable { after: Some(_) }), "{:?}", five.classify());
    assert_eq!(stub.calls().len(), 7, "a 5xx PUT is retried (max_retries 2)");
}

#[tokio::test]
async fn aml_patch_sends_the_merge_body_and_accepts_200_and_202() {
    let stub = Stub::start(|s, n| match (s.method.clone(), n) {
        (Method::PATCH, 0) => json_resp(200, aml_body("fs1", "Updating", "Available")),
        (Method::PATCH, 1) => with_header(
            with_header(
                StatusCode::ACCEPTED.into_response(),
                "azure-asyncoperation",
                "https://management.azure.com/op",
            ),
            "location",
            "https://management.azure.com/op?monitor=true",
        ),
        (Method::PATCH, 2) => arm_error(409, "AnotherOperationInProgress"),
        (Method::PATCH, _) => arm_error(503, "ServiceUnavailable"),
        _ => arm_error(400, "BadRequest"),
    })
    .await;
    let az = stub.client().await;
    let kek = models::KeyVaultKeyReference {
        key_url: "https://kv.vault.azure.net/keys/k/v2".into(),
        source_vault: models::SourceVault { id: ResourceId::vault(SUB, "rg", "kv").to_string() },
    };
    let body = AmlFilesystemUpdate::key(kek.clone()).to_json();
    assert_eq!(
        body,
        json!({"properties": {"encryptionSettings": {"keyEncryptionKey": {
            "keyUrl": "https://kv.vault.azure.net/keys/k/v2", "sourceVault": {"id": kek.source_vault.id}
        }}}})
    );
    az.patch_aml_filesystem(&aml_id(), &body).await.expect("200");
    az.patch_aml_filesystem(&aml_id(), &body).await.expect("202");
    let calls = stub.calls();
    assert_eq!(calls[0].method, Method::PATCH);
    assert_eq!(calls[0].path, aml_id().to_string());
    assert_eq!(calls[0].query, format!("api-version={AML_FILESYSTEMS_API_VERSION}"));
    assert_eq!(calls[0].json(), body);

    // A PATCH is not resent inside the call; what the classifier says about the answer is handed back.
    let busy = az.patch_aml_filesystem(&aml_id(), &body).await.unwrap_err();
    assert_eq!(busy.code(), Some("AnotherOperationInProgress"));
    assert_eq!(busy.classify(), ErrorClass::Retryable { after: None });
    assert_eq!(stub.calls().len(), 3);
    let down = az.patch_aml_filesystem(&aml_id(), &body).await.unwrap_err();
    assert_eq!(down.status(), Some(503));
    assert!(down.is_retryable());
    assert_eq!(stub.calls().len(), 4, "a PATCH is not resent after a 5xx");
}

#[tokio::test]
async fn aml_delete_outcomes() {
    let stub = Stub::start(|_, n| match n {
        0 => with_header(StatusCode::ACCEPTED.into_response(), "location", "https://management.azure.com/op"),
        1 => StatusCode::NO_CONTENT.into_response(),
        2 => arm_error(404, "ResourceNotFound"),
        3 => StatusCode::OK.into_response(),
        _ => arm_error(409, "Conflict"),
    })
    .await;
    let az = stub.client().await;
    assert_eq!(az.delete_aml_filesystem(&aml_id()).await.unwrap().value, DeleteOutcome::Accepted);
    assert_eq!(az.delete_aml_filesystem(&aml_id()).await.unwrap().value, DeleteOutcome::Gone);
    assert_eq!(az.delete_aml_filesystem(&aml_id()).await.unwrap().value, DeleteOutcome::Gone);
    assert_eq!(az.delete_aml_filesystem(&aml_id()).await.unwrap().value, DeleteOutcome::Gone);
    let err = az.delete_aml_filesystem(&aml_id()).await.unwrap_err();
    assert_eq!((err.status(), err.classify()), (Some(409), ErrorClass::Fatal));
    let calls = stub.calls();
    assert!(calls.iter().all(|c| c.method == Method::DELETE && c.path == aml_id().to_string()));
    assert!(calls.iter().all(|c| c.query == format!("api-version={AML_FILESYSTEMS_API_VERSION}")));
}

#[tokio::test]
async fn aml_throttling_is_throttled() {
    let stub =
        Stub::start(|_, _| with_header(arm_error(429, "SubscriptionRequestsThrottled"), "retry-after", "120")).await;
    let err = stub.client().await.delete_aml_filesystem(&aml_id()).await.unwrap_err();
    assert!(matches!(err, AzureError::Throttled { retry_after } if retry_after == Duration::from_secs(120)));
    assert_eq!(err.classify(), ErrorClass::Retryable { after: Some(Duration::from_secs(120)) });
}

/// The blob-integration grants of an AML file system: the two storage roles for the "HPC Cache Resource Provider"
/// principal on the storage account of `hsm.settings.container`, through the generic role-assignment calls.
#[tokio::test]
async fn storage_account_role_assignments() {
    let sa = ResourceId::storage_account(SUB, "rg", "sa1");
    let container = format!("{sa}/blobServices/default/containers/data");
    let rg = ResourceId::resource_group_scope(SUB, "rg").to_string();
    let below = container.clone();
    let stub = Stub::start(move |s, _| match s.method {
        Method::PUT => json_resp(201, json!({"name": "x", "properties": s.json()["properties"].clone()})),
        Method::DELETE => StatusCode::NO_CONTENT.into_response(),
        // The RP holds Storage Account Contributor on the resource group (covers the account) and Storage Blob Data
        // Contributor only on one container (does not cover the account).
        _ => json_resp(
            200,
            json!({"value": [
                assignment("rp-1", STORAGE_ACCOUNT_CONTRIBUTOR, &rg),
                assignment("rp-1", STORAGE_BLOB_DATA_CONTRIBUTOR, &below),
            ]}),
        ),
    })
    .await;
    let az = stub.client().await;
    let fs = desired_aml();
    let scope = fs.hsm_settings().unwrap().storage_account().expect("the container's storage account");
    assert_eq!(scope, sa);
    for role in [STORAGE_ACCOUNT_CONTRIBUTOR, STORAGE_BLOB_DATA_CONTRIBUTOR] {
        az.put_role_assignment(&scope, "rp-1", role).await.unwrap();
    }
    assert!(az.has_role_assignment(&scope, "rp-1", STORAGE_ACCOUNT_CONTRIBUTOR).await.unwrap());
    assert!(!az.has_role_assignment(&scope, "rp-1", STORAGE_BLOB_DATA_CONTRIBUTOR).await.unwrap());
    for role in [STORAGE_ACCOUNT_CONTRIBUTOR, STORAGE_BLOB_DATA_CONTRIBUTOR] {
        az.delete_role_assignment(&scope, "rp-1", role).await.unwrap();
    }

    let calls = stub.calls();
    let puts: Vec<_> = calls.iter().filter(|c| c.method == Method::PUT).collect();
    assert_eq!(puts.len(), 2);
    for (put, role) in puts.iter().zip([STORAGE_ACCOUNT_CONTRIBUTOR, STORAGE_BLOB_DATA_CONTRIBUTOR]) {
        let name = role_assignment_name(&sa, "rp-1", role);
        assert_eq!(
            put.path,
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa1/providers/Microsoft.Authorization/roleAssignments/{name}"
            )
        );
        assert_eq!(put.query, format!("api-version={ROLE_ASSIGNMENTS_API_VERSION}"));
        assert_eq!(
            put.json(),
            json!({"properties": {
                "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}"),
                "principalId": "rp-1",
                "principalType": "ServicePrincipal"
            }})
        );
    }
    assert_ne!(puts[0].path, puts[1].path, "one assignment per role");
    let list = calls.iter().find(|c| c.method == Method::GET).unwrap();
    assert_eq!(list.path, format!("{sa}/providers/Microsoft.Authorization/roleAssignments"));
    let deletes: Vec<_> = calls.iter().filter(|c| c.method == Method::DELETE).map(|c| c.path.clone()).collect();
    assert_eq!(deletes, puts.iter().map(|p| p.path.clone()).collect::<Vec<_>>(), "deletes what was put");
}

#[test]
fn storage_role_guids_are_the_documented_ones() {
    // Microsoft's "Azure built-in roles for Storage" page (see the constants' docs).
    assert_eq!(STORAGE_ACCOUNT_CONTRIBUTOR, "17d1049b-9a84-46fb-8f53-869881c3d3ab");
    assert_eq!(STORAGE_BLOB_DATA_CONTRIBUTOR, "ba92f5b4-2d11-453d-a403-e96b0029c9fe");
    for g in [STORAGE_ACCOUNT_CONTRIBUTOR, STORAGE_BLOB_DATA_CONTRIBUTOR, HPC_CACHE_RESOURCE_PROVIDER_APP_ID] {
        assert!(uuid::Uuid::parse_str(g).is_ok(), "{g}");
    }
}

// ------------------------------------------------------------------------------------------------ hostile bodies

fn raw(status: u16, content_type: &str, body: impl Into<axum::body::Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", content_type.parse().unwrap());
    r
}

const GARBAGE: &[&[u8]] = &[
    b"\x00\xff\xfe garbage \x80\x81",
    br#"{"id": "/subscriptions/x", "properties": {"provisioningSt"#,
    b"",
    b"null",
    b"[]",
    br#"{"properties": {"provisioningState": 42, "health": "Healthy"}}"#,
    br#"{"tags": {"a": 1}}"#,
    b"<html><body><h1>200 OK</h1>Welcome to nginx!</body></html>",
];

#[tokio::test]
async fn a_200_with_an_unreadable_body_is_a_retryable_decode_error() {
    // A 200 whose body is not the resource (garbage, cut off, empty, of the wrong shape, a proxy's page) says
    // nothing was refused: a decode error, retried by the reconcile, never a panic and never "absent".
    let stub = Stub::start(|_, n| raw(200, "application/json", GARBAGE[n % GARBAGE.len()].to_vec())).await;
    let az = stub.client().await;
    for body in GARBAGE {
        let err = az.get_cache(&cache_id()).await.unwrap_err();
        assert!(matches!(err, AzureError::Decode(_)), "{:?}: {err:?}", String::from_utf8_lossy(body));
        assert!(err.to_string().contains("status 200"), "{err}");
        assert!(err.is_retryable());
    }
    for body in GARBAGE {
        let err = az.get_aml_filesystem(&aml_id()).await.unwrap_err();
        assert!(matches!(err, AzureError::Decode(_)), "{:?}: {err:?}", String::from_utf8_lossy(body));
    }
    for body in GARBAGE {
        let err = az.get_vault(&ResourceId::vault(SUB, "rg", "kv")).await.unwrap_err();
        assert!(matches!(err, AzureError::Decode(_)), "{:?}: {err:?}", String::from_utf8_lossy(body));
    }
    assert_eq!(stub.calls().len(), 3 * GARBAGE.len(), "a 200 is not resent within the call");
}

#[tokio::test]
async fn unknown_enum_values_and_missing_fields_are_kept_not_refused() {
    let bodies = [
        json!({
            "id": cache_id().to_string(), "name": "c1", "someFieldFromTheFuture": {"x": [1, 2]},
            "properties": {"provisioningState": "Hibernating", "health": {"state": "Sleeping\u{1F634}", "conditions": []}}
        }),
        json!({}),
        json!({"properties": {}}),
    ];
    let stub = Stub::start(move |_, n| json_resp(200, bodies[n % 3].clone())).await;
    let az = stub.client().await;
    let cache = az.get_cache(&cache_id()).await.unwrap().value.unwrap();
    assert_eq!(cache.provisioning_state(), Some("Hibernating"), "an unknown state is kept verbatim");
    assert_eq!(cache.health_state(), Some("Sleeping\u{1F634}"));
    for _ in 0..2 {
        let empty = az.get_cache(&cache_id()).await.unwrap().value.unwrap();
        assert_eq!(empty.provisioning_state(), None);
        assert_eq!(empty.health_state(), None);
        assert!(empty.created_at().is_none() && empty.key_encryption_key().is_none());
    }
}

#[tokio::test]
async fn a_proxy_error_page_is_classified_by_its_status() {
    let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let stub = Stub::start(move |s, _| match s.path.rsplit('/').next() {
        Some("c1") => raw(502, "text/html", page),
        Some("c2") => raw(403, "text/html", "<html>Forbidden by corporate proxy</html>"),
        _ => raw(404, "text/html", "<html>404 Not Found</html>"),
    })
    .await;
    let az = stub.client().await;
    // 502 from a proxy: retryable, retried within the call, reported with the page's text.
    let err = az.get_cache(&cache_id()).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(502), Some("BadGateway")));
    assert!(err.is_retryable());
    assert!(err.to_string().contains("502 Bad Gateway"), "{err}");
    assert_eq!(stub.calls().len(), 3);
    // 403 from a proxy: a refusal, not retried.
    let err = az.get_cache(&ResourceId::cache(SUB, "rg", "c2")).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("Forbidden")));
    assert!(!err.is_retryable());
    assert_eq!(stub.calls().len(), 4);
}

#[tokio::test]
async fn a_404_that_azure_did_not_write_is_not_taken_for_absence() {
    // A proxy's (or a wrong route's) 404 says nothing about the cache: read as "no cache", it would make the
    // operator create a second one, or remove its finalizer while the cache still exists.
    let stub = Stub::start(|s, _| match s.path.rsplit('/').next() {
        Some("azure") => arm_error(404, "ResourceNotFound"),
        _ => raw(404, "text/html", "<html><body>404 page not found</body></html>"),
    })
    .await;
    let az = stub.client().await;
    let err = az.get_cache(&cache_id()).await.unwrap_err();
    assert!(matches!(err, AzureError::Decode(_)), "{err:?}");
    assert!(err.to_string().contains("404 page not found"), "{err}");
    assert!(err.is_retryable() && !err.is_not_found());
    let err = az.delete_cache(&cache_id()).await.unwrap_err();
    assert!(matches!(err, AzureError::Decode(_)), "a delete is not 'gone' on a proxy's 404: {err:?}");
    let err = az.get_aml_filesystem(&aml_id()).await.unwrap_err();
    assert!(matches!(err, AzureError::Decode(_)), "{err:?}");
    // Azure's own 404 still means absent.
    let azure = ResourceId::cache(SUB, "rg", "azure");
    assert!(az.get_cache(&azure).await.unwrap().value.is_none());
    assert!(matches!(az.delete_cache(&azure).await.unwrap().value, DeleteOutcome::Gone));
}

#[tokio::test]
async fn an_oversized_body_is_refused_not_buffered() {
    const HUGE: usize = 50 << 20;
    let stub = Stub::start(|s, _| match s.path.rsplit('/').next() {
        // Announced by Content-Length.
        Some("c1") => raw(200, "application/json", vec![b' '; HUGE]),
        // Streamed without a length: refused once the limit is crossed, the rest never read.
        Some("c2") => {
            let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
            let stream = futures::stream::iter((0..50).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            raw(200, "application/json", axum::body::Body::from_stream(stream))
        }
        // A huge error page behind a retryable status.
        _ => raw(502, "text/html", vec![b'<'; HUGE]),
    })
    .await;
    let az = stub.client().await;
    for name in ["c1", "c2", "c3"] {
        let err = az.get_cache(&ResourceId::cache(SUB, "rg", name)).await.unwrap_err();
        assert!(matches!(err, AzureError::Decode(_)), "{name}: {err:?}");
        assert!(err.to_string().contains("larger than the 16 MiB"), "{name}: {err}");
        assert!(err.is_retryable(), "the reconcile tries again later");
    }
    assert_eq!(stub.calls().len(), 3, "an oversized answer is not fetched again within the call");
}

#[tokio::test]
async fn an_oversized_error_message_is_cut_to_fit_a_condition() {
    // The message ends up in status.conditions; megabytes of it would make every status write fail.
    let long = "Zugriff verweigert \u{1F512} ".repeat(100_000);
    let stub = Stub::start(move |_, _| arm_error(400, &long)).await;
    let az = stub.client().await;
    let err = az.get_cache(&cache_id()).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.code().unwrap().len() <= 200 + '…'.len_utf8());
    assert!(err.to_string().len() < 3000, "{} bytes", err.to_string().len());
    assert!(err.to_string().contains("Zugriff verweigert \u{1F512}"));
}

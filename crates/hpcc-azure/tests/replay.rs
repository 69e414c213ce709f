//! Real Azure's contract, replayed: published request/response pairs fed to the real client (`hpcc_azure::Azure`)
//! through a loopback HTTPS server that answers each request with one recorded response.
//!
//! Responses come from two places, and nowhere else:
//! * the official spec examples in `tests/fixtures/azure-specs/` (provenance: its README), and
//! * responses Azure really sent, published in SDK test recordings and public issue threads, in
//!   `tests/fixtures/replay/` (one file per response; its README gives each file's source URL and what, if anything,
//!   was derived rather than copied).
//!
//! The only change made while replaying: absolute `management.azure.com` and `*.vault.azure.net:443` URLs in bodies
//! and headers are pointed at the replay server's port (as any recording is replayed), so a `nextLink` leads back
//! here. Each test says which recorded response answers which request, and the server fails the test when the client
//! sends anything else.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hpcc_azure::models::{KeyListResult, RoleAssignment, aml_health_state, provisioning_state};
use hpcc_azure::{
    AML_FILESYSTEMS_API_VERSION, AmlFilesystem, AmlFilesystemUpdate, Azure, AzureConfig, AzureError,
    CACHES_API_VERSION, CMK_KEY_PERMISSIONS, Cache, DeleteOutcome, ErrorClass, IDENTITIES_API_VERSION,
    KEYVAULT_API_VERSION, ROLE_ASSIGNMENTS_API_VERSION, ResourceId, VAULTS_API_VERSION, role_assignment_name,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};
use url::Url;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
/// The tenant of the SDK recordings (their sanitised placeholder).
const TENANT: &str = "12345678-1234-1234-1234-123456789012";
/// The sanitised client credentials of the SDK recordings.
const CLIENT_ID: &str = "azure_client_id";
const CLIENT_SECRET: &str = "azure_client_secret";
/// The vault host of the data-plane spec examples (`vaultBaseUrl`).
const VAULT: &str = "myvault";

fn read_json(rel: &str) -> Value {
    let path = format!("{FIXTURES}/{rel}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A spec example (`tests/fixtures/azure-specs/{rel}`).
fn example(rel: &str) -> Value {
    read_json(&format!("azure-specs/{rel}"))
}

/// One recorded response.
#[derive(Clone, Debug)]
struct Recorded {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    /// `responses[status]` of a spec example: its `headers` and `body` as given (a body is sent as compact JSON).
    fn spec(rel: &str, status: u16) -> Recorded {
        let ex = example(rel);
        let r = &ex["responses"][status.to_string()];
        assert!(r.is_object(), "{rel} has no {status} response");
        Recorded::from_parts(status, &r["headers"], r.get("body").map(|b| serde_json::to_vec(b).unwrap()))
    }

    /// A response recorded from the real service (`tests/fixtures/replay/{name}`): `status`, `headers` and the body
    /// bytes as sent (`bodyText`). A recorded `Content-Length` must match the body: the copy is exact.
    fn replay(name: &str) -> Recorded {
        let f = read_json(&format!("replay/{name}"));
        let status = f["status"].as_u64().unwrap_or_else(|| panic!("{name}: status")) as u16;
        let body = f["bodyText"].as_str().map(|b| b.as_bytes().to_vec());
        let r = Recorded::from_parts(status, &f["headers"], body);
        if let Some((_, len)) = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            assert_eq!(len.parse::<usize>().unwrap(), r.body.len(), "{name}: body differs from the recorded length");
        }
        r
    }

    /// A response composed from recorded parts (see the test that builds it).
    fn json(status: u16, body: &Value) -> Recorded {
        Recorded::from_parts(status, &Value::Null, Some(serde_json::to_vec(body).unwrap()))
    }

    fn from_parts(status: u16, headers: &Value, body: Option<Vec<u8>>) -> Recorded {
        let headers = headers
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        Recorded { status, headers, body: body.unwrap_or_default() }
    }
}

/// What the client sent.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    host: String,
    path: String,
    query: String,
    auth: Option<String>,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

struct Exchange {
    method: Method,
    path: String,
    response: Recorded,
}

#[derive(Default)]
struct Tape {
    script: VecDeque<Exchange>,
    calls: Vec<Seen>,
    token_calls: Vec<Seen>,
    problems: Vec<String>,
}

/// The loopback HTTPS replay server (test CA; names `management.azure.com`, `login.microsoftonline.com`,
/// `*.vault.azure.net`, all resolved to 127.0.0.1 by the client).
struct Replay {
    port: u16,
    ca_file: tempfile::NamedTempFile,
    tape: Arc<Mutex<Tape>>,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

fn tls_config() -> (axum_server::tls_rustls::RustlsConfig, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "azure replay test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let names = ["management.azure.com", "login.microsoftonline.com", "*.vault.azure.net"];
    let mut leaf = CertificateParams::new(names.map(String::from).to_vec()).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
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
    (axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server)), ca_cert.pem())
}

/// Point absolute Azure URLs at the replay server.
fn localize(text: &str, port: u16) -> String {
    text.replace("://management.azure.com/", &format!("://management.azure.com:{port}/"))
        .replace(".vault.azure.net:443/", &format!(".vault.azure.net:{port}/"))
}

fn respond(r: &Recorded, port: u16) -> Response {
    let body = localize(&String::from_utf8_lossy(&r.body), port);
    let mut resp = (StatusCode::from_u16(r.status).unwrap(), body).into_response();
    let h = resp.headers_mut();
    h.remove("content-type");
    for (k, v) in &r.headers {
        if k.eq_ignore_ascii_case("content-length") {
            continue; // checked against the recorded body when loaded; the server sends the real length
        }
        h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(&localize(v, port)).unwrap());
    }
    resp
}

impl Replay {
    async fn start() -> Replay {
        let (tls, ca_pem) = tls_config();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, ca_pem.as_bytes()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let tape: Arc<Mutex<Tape>> = Arc::default();
        let token = Recorded::replay("entra-token-200.json");
        let app = {
            let tape = tape.clone();
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let tape = tape.clone();
                let token = token.clone();
                async move {
                    let host = headers.get("host").and_then(|h| h.to_str().ok()).map(str::to_string);
                    let host = host.or_else(|| uri.authority().map(|a| a.to_string())).unwrap_or_default();
                    let seen = Seen {
                        method,
                        host: host.split(':').next().unwrap_or_default().to_string(),
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or_default().to_string(),
                        auth: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let mut t = tape.lock().unwrap();
                    if seen.path.ends_with("/oauth2/v2.0/token") {
                        let form: Vec<(String, String)> =
                            url::form_urlencoded::parse(seen.body.as_bytes()).into_owned().collect();
                        let secret_ok = form.contains(&("client_secret".into(), CLIENT_SECRET.into()));
                        t.token_calls.push(seen);
                        if !secret_ok {
                            t.problems.push("token request without the configured client secret".into());
                            return StatusCode::BAD_REQUEST.into_response();
                        }
                        return respond(&token, port);
                    }
                    t.calls.push(seen.clone());
                    match t.script.pop_front() {
                        Some(e) if e.method == seen.method && e.path == seen.path => respond(&e.response, port),
                        next => {
                            let want = next.map(|e| format!("{} {}", e.method, e.path)).unwrap_or("nothing".into());
                            t.problems.push(format!("expected {want}, got {} {}", seen.method, seen.path));
                            // 418: an answer the client neither retries nor mistakes for Azure's.
                            StatusCode::IM_A_TEAPOT.into_response()
                        }
                    }
                }
            })
        };
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap().handle(handle.clone());
        tokio::spawn(async move { server.serve(app.into_make_service()).await });
        Replay { port, ca_file, tape, handle }
    }

    /// The next request must be `method path`; it gets `response`.
    fn expect(&self, method: Method, path: &str, response: Recorded) {
        self.tape.lock().unwrap().script.push_back(Exchange { method, path: path.to_string(), response });
    }

    fn config(&self) -> AzureConfig {
        let port = self.port;
        let vars = [
            ("HPCC_ARM_ENDPOINT", format!("https://management.azure.com:{port}")),
            ("AZURE_AUTHORITY_HOST", format!("https://login.microsoftonline.com:{port}")),
            ("HPCC_CA_FILE", self.ca_file.path().display().to_string()),
            ("HPCC_RESOLVE_TO_LOOPBACK", "true".into()),
            ("HPCC_CREDENTIAL", "client-secret".into()),
            ("AZURE_TENANT_ID", TENANT.into()),
            ("AZURE_CLIENT_ID", CLIENT_ID.into()),
            ("AZURE_CLIENT_SECRET", CLIENT_SECRET.into()),
        ];
        let mut cfg = AzureConfig::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
        cfg.retry_base_delay = Duration::from_millis(10);
        cfg
    }

    async fn client(&self) -> Azure {
        Azure::new(self.config(), None).await.unwrap()
    }

    /// A client that gives up at the first retryable answer, to see what one answer classifies as.
    async fn client_without_retries(&self) -> Azure {
        Azure::new(AzureConfig { max_retries: 0, ..self.config() }, None).await.unwrap()
    }

    fn vault_uri(&self) -> Url {
        Url::parse(&format!("https://{VAULT}.vault.azure.net:{}/", self.port)).unwrap()
    }

    fn calls(&self) -> Vec<Seen> {
        self.tape.lock().unwrap().calls.clone()
    }

    fn token_calls(&self) -> Vec<Seen> {
        self.tape.lock().unwrap().token_calls.clone()
    }

    /// Every scripted response was asked for, and nothing else.
    fn finish(&self) {
        let t = self.tape.lock().unwrap();
        assert!(t.problems.is_empty(), "unexpected requests: {:?}", t.problems);
        let left: Vec<String> = t.script.iter().map(|e| format!("{} {}", e.method, e.path)).collect();
        assert!(left.is_empty(), "the client never asked for: {left:?}");
    }
}

/// `a` has only keys `b` has, recursively (values ignored): the client speaks the spec's field names.
fn same_shape(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_shape(v, w))),
        (Value::Array(x), Value::Array(y)) => x.iter().all(|v| y.first().is_some_and(|w| same_shape(v, w))),
        _ => true,
    }
}

/// Every field of `a` is in `b` with the same value: the client sends what the spec example sends.
fn is_subset(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().all(|(k, v)| y.get(k).is_some_and(|w| is_subset(v, w))),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| is_subset(v, w)),
        _ => a == b,
    }
}

fn cache_id(ex: &Value) -> ResourceId {
    let p = &ex["parameters"];
    ResourceId::cache(
        p["subscriptionId"].as_str().unwrap(),
        p["resourceGroupName"].as_str().unwrap(),
        p["cacheName"].as_str().unwrap(),
    )
}

const CACHES_GET: &str = "storagecache-2026-08-01/Caches_Get.json";
const CACHES_PUT: &str = "storagecache-2026-08-01/Caches_CreateOrUpdate.json";
const CACHES_PATCH: &str = "storagecache-2026-08-01/Caches_Update.json";
const CACHES_DELETE: &str = "storagecache-2026-08-01/Caches_Delete.json";

// ------------------------------------------------------------------------------------------------ caches

#[tokio::test]
async fn caches_get_example() {
    let replay = Replay::start().await;
    let id = cache_id(&example(CACHES_GET));
    replay.expect(Method::GET, &id.to_string(), Recorded::spec(CACHES_GET, 200));
    let cache = replay.client().await.get_cache(&id).await.unwrap().value.expect("200 is a cache");
    assert_eq!(cache.name.as_deref(), Some("sc1"));
    assert_eq!(cache.resource_type.as_deref(), Some("Microsoft.StorageCache/Cache"));
    assert_eq!(cache.location.as_deref(), Some("westus"));
    assert_eq!(cache.sku.as_ref().map(|s| s.name.as_str()), Some("Standard_2G"));
    assert_eq!(cache.properties.cache_size_gb, Some(3072));
    assert_eq!(cache.provisioning_state(), Some("Succeeded"));
    assert_eq!(cache.health_state(), Some("Transitioning"));
    let health = cache.properties.health.as_ref().unwrap();
    assert_eq!(health.status_description.as_deref(), Some("Cache is being created."));
    assert_eq!(health.conditions[0].message.as_deref(), Some("Cannot contact DNS server"));
    assert_eq!(health.conditions[0].timestamp, Some("2021-04-21T18:25:43.511Z".parse().unwrap()));
    assert_eq!(cache.properties.mount_addresses.as_deref(), Some(&["192.168.1.1".into(), "192.168.1.2".into()][..]));
    let kek = cache.key_encryption_key().unwrap();
    assert_eq!(kek.key_url, "https://keyvault-cmk.vault.azure.net/keys/key2048/test");
    assert_eq!(kek.source_vault.id, ResourceId::vault(id.subscription(), "scgroup", "keyvault-cmk").to_string());
    // Seven fractional digits, as ARM writes them.
    assert_eq!(cache.created_at(), Some("2020-01-01T17:18:19.1234567Z".parse().unwrap()));
    assert_eq!(cache.tags.as_ref().and_then(|t| t.get("Dept")).map(String::as_str), Some("Contoso"));
    assert!(cache.identity.is_none(), "the example cache has no identity block");
    let call = &replay.calls()[0];
    assert_eq!(call.host, "management.azure.com");
    assert_eq!(call.query, format!("api-version={CACHES_API_VERSION}"));
    assert_eq!(call.auth.as_deref(), Some("Bearer access_token"));
    let token = &replay.token_calls()[0];
    assert_eq!(token.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert!(token.body.contains("scope=https%3A%2F%2Fmanagement.azure.com%2F.default"), "{}", token.body);
    replay.finish();
}

#[tokio::test]
async fn caches_put_answers_200_201_and_202() {
    let replay = Replay::start().await;
    let ex = example(CACHES_PUT);
    let id = cache_id(&ex);
    let path = id.to_string();
    // The example's request, as the operator's model carries it.
    let desired: Cache = serde_json::from_value(ex["parameters"]["cache"].clone()).unwrap();
    replay.expect(Method::PUT, &path, Recorded::spec(CACHES_PUT, 200));
    replay.expect(Method::PUT, &path, Recorded::spec(CACHES_PUT, 201));
    replay.expect(Method::PUT, &path, Recorded::spec(CACHES_PUT, 202));
    let az = replay.client().await;

    let updated = az.put_cache(&id, &desired).await.unwrap().value.expect("200 body");
    assert_eq!(updated.provisioning_state(), Some("Updating"), "200 carries the cache being updated");
    let created = az.put_cache(&id, &desired).await.unwrap().value.expect("201 body");
    assert_eq!(created.provisioning_state(), Some("Succeeded"), "201 carries the new cache");
    assert_eq!(created.name.as_deref(), Some("sc1"));
    // 202 has no body: accepted, not a failure on an empty body; the operator observes the cache itself.
    assert!(az.put_cache(&id, &desired).await.unwrap().value.is_none());

    let calls = replay.calls();
    assert_eq!(calls.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["PUT", "PUT", "PUT"]);
    // What the client sends is the example's request minus the fields the operator does not model.
    let sent = calls[0].json();
    assert!(is_subset(&sent, &ex["parameters"]["cache"]), "sent {sent}");
    for field in ["location", "identity", "sku", "tags"] {
        assert_eq!(sent[field], ex["parameters"]["cache"][field], "{field}");
    }
    replay.finish();
}

#[tokio::test]
async fn caches_patch_and_delete_examples() {
    let replay = Replay::start().await;
    let patch_ex = example(CACHES_PATCH);
    let id = cache_id(&patch_ex);
    replay.expect(Method::PATCH, &id.to_string(), Recorded::spec(CACHES_PATCH, 200));
    replay.expect(Method::PATCH, &id.to_string(), Recorded::spec(CACHES_PATCH, 202));
    let del = cache_id(&example(CACHES_DELETE));
    for status in [200, 202, 204] {
        replay.expect(Method::DELETE, &del.to_string(), Recorded::spec(CACHES_DELETE, status));
    }
    let az = replay.client().await;
    let body = patch_ex["parameters"]["cache"].clone();
    az.patch_cache(&id, &body).await.expect("200");
    let accepted = az.patch_cache(&id, &body).await.expect("202 with Azure-AsyncOperation and Location");
    assert_eq!(accepted.retry_after, None, "the example's 202 has no Retry-After");
    assert_eq!(replay.calls()[0].json(), body);
    assert_eq!(az.delete_cache(&del).await.unwrap().value, DeleteOutcome::Gone);
    assert_eq!(az.delete_cache(&del).await.unwrap().value, DeleteOutcome::Accepted);
    assert_eq!(az.delete_cache(&del).await.unwrap().value, DeleteOutcome::Gone);
    replay.finish();
}

// ------------------------------------------------------------------------------------------------ AML file systems

const AMLFS_GET: &str = "storagecache-2026-08-01/amlFilesystems_Get.json";
const AMLFS_PUT: &str = "storagecache-2026-08-01/amlFilesystems_CreateOrUpdate.json";
const AMLFS_PATCH: &str = "storagecache-2026-08-01/amlFilesystems_Update.json";
const AMLFS_DELETE: &str = "storagecache-2026-08-01/amlFilesystems_Delete.json";

fn aml_id(ex: &Value) -> ResourceId {
    let p = &ex["parameters"];
    ResourceId::aml_filesystem(
        p["subscriptionId"].as_str().unwrap(),
        p["resourceGroupName"].as_str().unwrap(),
        p["amlFilesystemName"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn aml_filesystems_get_example() {
    let replay = Replay::start().await;
    let id = aml_id(&example(AMLFS_GET));
    replay.expect(Method::GET, &id.to_string(), Recorded::spec(AMLFS_GET, 200));
    let fs = replay.client().await.get_aml_filesystem(&id).await.unwrap().value.expect("200 is a file system");
    assert_eq!(fs.name.as_deref(), Some("fs1"));
    assert_eq!(fs.id.as_deref(), Some(id.to_string().as_str()));
    assert_eq!(fs.resource_type.as_deref(), Some("Microsoft.StorageCache/amlFilesystem"));
    assert_eq!(fs.location.as_deref(), Some("eastus"));
    assert_eq!(fs.zones.as_deref(), Some(&["1".to_string()][..]));
    assert_eq!(fs.sku.as_ref().map(|s| s.name.as_str()), Some("AMLFS-Durable-Premium-250"));
    assert_eq!(fs.tags.as_ref().and_then(|t| t.get("Dept")).map(String::as_str), Some("ContosoAds"));
    let identity = fs.identity.as_ref().unwrap();
    assert_eq!(identity.r#type, "UserAssigned");
    let uai = ResourceId::user_assigned_identity(id.subscription(), "scgroup", "identity1");
    assert_eq!(fs.user_assigned_identity_ids().collect::<Vec<_>>(), [uai.to_string()]);
    assert_eq!(fs.provisioning_state(), Some(provisioning_state::SUCCEEDED));
    assert_eq!(fs.health_state(), Some(aml_health_state::AVAILABLE));
    assert_eq!(fs.properties.health.as_ref().unwrap().status_description.as_deref(), Some("amlFilesystem is ok."));
    assert_eq!(fs.properties.storage_capacity_tib, Some(16.0));
    assert_eq!(fs.properties.throughput_provisioned_mbps, Some(500));
    let subnet: ResourceId = fs.properties.filesystem_subnet.as_deref().unwrap().parse().unwrap();
    assert!(subnet.is_type("Microsoft.Network", "virtualNetworks/subnets"));
    let mw = fs.properties.maintenance_window.as_ref().unwrap();
    assert_eq!((mw.day_of_week.as_deref(), mw.time_of_day_utc.as_deref()), (Some("Friday"), Some("22:00")));
    let kek = fs.key_encryption_key().unwrap();
    assert_eq!(kek.key_url, "https://keyvault-cmk.vault.azure.net/keys/key2048/test");
    assert_eq!(kek.source_vault.id, ResourceId::vault(id.subscription(), "scgroup", "keyvault-cmk").to_string());
    let hsm = fs.hsm_settings().unwrap();
    assert_eq!(hsm.import_prefixes_initial.as_deref(), Some(&["/".to_string()][..]));
    assert_eq!(
        hsm.storage_account(),
        Some(ResourceId::storage_account(id.subscription(), "scgroup", "storageaccountname"))
    );
    let archive = &fs.properties.hsm.as_ref().unwrap().archive_status[0];
    assert_eq!(
        archive.status.as_ref().unwrap().last_completion_time,
        Some("2019-04-21T18:25:43.511Z".parse().unwrap())
    );
    let squash = fs.properties.root_squash_settings.as_ref().unwrap();
    assert_eq!((squash.mode.as_deref(), squash.squash_uid, squash.squash_gid), (Some("All"), Some(99), Some(99)));
    assert_eq!(squash.status.as_deref(), Some("nodemap.active=1"));
    assert_eq!(fs.mgs_address(), Some("10.0.0.4"));
    assert_eq!(fs.mount_command(), Some("mount -t lustre 10.0.0.4@tcp:/lustrefs /lustre/lustrefs"));
    let client = fs.properties.client_info.as_ref().unwrap();
    assert_eq!(client.lustre_version.as_deref(), Some("2.15.0"));
    assert!(client.container_storage_interface.as_ref().unwrap().storage_class.is_some());
    assert_eq!(fs.created_at(), None, "the example has no systemData");
    let call = &replay.calls()[0];
    assert_eq!(call.host, "management.azure.com");
    assert_eq!(call.query, format!("api-version={AML_FILESYSTEMS_API_VERSION}"));
    assert_eq!(call.auth.as_deref(), Some("Bearer access_token"));
    replay.finish();
}

/// PUT answered 200 and 201 as the example gives them. The spec declares no 202 for this PUT (200 and 201 only, both
/// with a body); a 202 without body is composed from the example's request path and the `Azure-AsyncOperation` and
/// `Location` headers of the amlFilesystems_Update 202 (the same resource provider's accepted long-running
/// operation), so the client's handling of an empty accept is exercised with this resource's own headers.
#[tokio::test]
async fn aml_filesystems_put_answers_200_201_and_202() {
    let replay = Replay::start().await;
    let ex = example(AMLFS_PUT);
    let id = aml_id(&ex);
    let path = id.to_string();
    let desired: AmlFilesystem = serde_json::from_value(ex["parameters"]["amlFilesystem"].clone()).unwrap();
    replay.expect(Method::PUT, &path, Recorded::spec(AMLFS_PUT, 200));
    replay.expect(Method::PUT, &path, Recorded::spec(AMLFS_PUT, 201));
    let accepted = example(AMLFS_PATCH)["responses"]["202"]["headers"].clone();
    replay.expect(Method::PUT, &path, Recorded::from_parts(202, &accepted, None));
    let az = replay.client().await;

    let updated = az.put_aml_filesystem(&id, &desired).await.unwrap().value.expect("200 body");
    assert_eq!(updated.provisioning_state(), Some(provisioning_state::SUCCEEDED));
    assert!(updated.key_encryption_key().is_none(), "the example's 200 body carries no encryptionSettings");
    let created = az.put_aml_filesystem(&id, &desired).await.unwrap().value.expect("201 body");
    assert_eq!(created.name.as_deref(), Some("fs1"));
    let kek = created.key_encryption_key().unwrap();
    assert_eq!(kek.key_url, "https://examplekv.vault.azure.net/keys/kvk/3540a47df75541378d3518c6a4bdf5af");
    assert!(az.put_aml_filesystem(&id, &desired).await.unwrap().value.is_none(), "202: accepted, no body");

    let calls = replay.calls();
    assert_eq!(calls.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["PUT", "PUT", "PUT"]);
    assert!(calls.iter().all(|c| c.query == format!("api-version={AML_FILESYSTEMS_API_VERSION}")));
    // The operator's model carries every field of the example's request: what it sends is the request itself.
    assert_eq!(calls[0].json(), ex["parameters"]["amlFilesystem"]);
    replay.finish();
}

#[tokio::test]
async fn aml_filesystems_patch_and_delete_examples() {
    let replay = Replay::start().await;
    let patch_ex = example(AMLFS_PATCH);
    let id = aml_id(&patch_ex);
    replay.expect(Method::PATCH, &id.to_string(), Recorded::spec(AMLFS_PATCH, 200));
    replay.expect(Method::PATCH, &id.to_string(), Recorded::spec(AMLFS_PATCH, 202));
    let del = aml_id(&example(AMLFS_DELETE));
    for status in [200, 202, 204] {
        replay.expect(Method::DELETE, &del.to_string(), Recorded::spec(AMLFS_DELETE, status));
    }
    let az = replay.client().await;
    // The example's body read into the PATCH model and written back is the same body.
    let update: AmlFilesystemUpdate = serde_json::from_value(patch_ex["parameters"]["amlFilesystem"].clone()).unwrap();
    let body = update.to_json();
    assert_eq!(body, patch_ex["parameters"]["amlFilesystem"]);
    az.patch_aml_filesystem(&id, &body).await.expect("200");
    let accepted = az.patch_aml_filesystem(&id, &body).await.expect("202 with Azure-AsyncOperation and Location");
    assert_eq!(accepted.retry_after, None, "the example's 202 has no Retry-After");
    // A key change alone, as the operator sends it, is the example's encryptionSettings and nothing else.
    let kek = update.properties.as_ref().unwrap().encryption_settings.clone().unwrap().key_encryption_key.unwrap();
    let key_only = AmlFilesystemUpdate::key(kek).to_json();
    assert_eq!(
        key_only["properties"]["encryptionSettings"],
        patch_ex["parameters"]["amlFilesystem"]["properties"]["encryptionSettings"]
    );
    assert!(same_shape(&key_only, &patch_ex["parameters"]["amlFilesystem"]));
    let calls = replay.calls();
    assert_eq!(calls[0].json(), patch_ex["parameters"]["amlFilesystem"]);
    assert_eq!(calls[0].query, format!("api-version={AML_FILESYSTEMS_API_VERSION}"));
    assert_eq!(az.delete_aml_filesystem(&del).await.unwrap().value, DeleteOutcome::Gone);
    assert_eq!(az.delete_aml_filesystem(&del).await.unwrap().value, DeleteOutcome::Accepted);
    assert_eq!(az.delete_aml_filesystem(&del).await.unwrap().value, DeleteOutcome::Gone);
    replay.finish();
}

/// AmlFilesystemsListResult is pageable (`x-ms-pageable`, `nextLink`); the published list examples have one page, so
/// page 1 is `{"value": [the Get example's body], "nextLink": …}` and page 2 `{"value": [the CreateOrUpdate 201
/// body]}` (bodies as published, envelope per `AmlFilesystemsListResult`).
#[tokio::test]
async fn aml_filesystems_list_follows_next_link() {
    let replay = Replay::start().await;
    let get = example(AMLFS_GET);
    let id = aml_id(&get);
    let rg = id.resource_group().unwrap();
    let path = format!("{}/providers/Microsoft.StorageCache/amlFilesystems", id.resource_group_id().unwrap());
    let next =
        format!("https://management.azure.com{path}?api-version={AML_FILESYSTEMS_API_VERSION}&%24skiptoken=page2");
    let page1 = json!({"value": [get["responses"]["200"]["body"]], "nextLink": next});
    let page2 = json!({"value": [example(AMLFS_PUT)["responses"]["201"]["body"]]});
    replay.expect(Method::GET, &path, Recorded::json(200, &page1));
    replay.expect(Method::GET, &path, Recorded::json(200, &page2));
    let all = replay.client().await.list_aml_filesystems(id.subscription(), Some(rg)).await.unwrap().value;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|f| f.provisioning_state() == Some("Succeeded")));
    let calls = replay.calls();
    assert_eq!(calls[0].query, format!("api-version={AML_FILESYSTEMS_API_VERSION}"));
    assert_eq!(calls[1].query, Url::parse(&next).unwrap().query().unwrap(), "nextLink is followed as given");
    replay.finish();
}

/// ARM's recorded 429 (the front door throttles every resource provider alike) on an AML file system GET.
#[tokio::test]
async fn aml_filesystems_throttling_honours_retry_after() {
    let replay = Replay::start().await;
    let id = aml_id(&example(AMLFS_GET));
    replay.expect(Method::GET, &id.to_string(), Recorded::replay("arm-429-subscription-requests-throttled.json"));
    replay.expect(Method::GET, &id.to_string(), Recorded::spec(AMLFS_GET, 200));
    replay.expect(Method::DELETE, &id.to_string(), Recorded::replay("arm-429-subscription-requests-throttled.json"));
    let start = Instant::now();
    let got = replay.client().await.get_aml_filesystem(&id).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not honoured ({:?})", start.elapsed());
    assert!(got.value.is_some());
    let err = replay.client_without_retries().await.delete_aml_filesystem(&id).await.unwrap_err();
    assert!(matches!(err, AzureError::Throttled { .. }), "{err:?}");
    assert_eq!(err.classify(), ErrorClass::Retryable { after: Some(Duration::from_secs(1)) });
    replay.finish();
}

// ------------------------------------------------------------------------------------------------ vaults

#[tokio::test]
async fn vault_get_update_and_access_policy_examples() {
    let replay = Replay::start().await;
    let get_ex = example("keyvault-mgmt/getVault.json");
    let p = &get_ex["parameters"];
    let kv = ResourceId::vault(
        p["subscriptionId"].as_str().unwrap(),
        p["resourceGroupName"].as_str().unwrap(),
        p["vaultName"].as_str().unwrap(),
    );
    replay.expect(Method::GET, &kv.to_string(), Recorded::spec("keyvault-mgmt/getVault.json", 200));
    replay.expect(Method::PATCH, &kv.to_string(), Recorded::spec("keyvault-mgmt/updateVault.json", 200));
    let ap_ex = example("keyvault-mgmt/updateAccessPoliciesAdd.json");
    let q = &ap_ex["parameters"];
    let ap_vault = ResourceId::vault(
        q["subscriptionId"].as_str().unwrap(),
        q["resourceGroupName"].as_str().unwrap(),
        q["vaultName"].as_str().unwrap(),
    );
    let add = format!("{ap_vault}/accessPolicies/add");
    replay.expect(Method::PUT, &add, Recorded::spec("keyvault-mgmt/updateAccessPoliciesAdd.json", 200));
    replay.expect(Method::PUT, &add, Recorded::spec("keyvault-mgmt/updateAccessPoliciesAdd.json", 201));
    let az = replay.client().await;

    let vault = az.get_vault(&kv).await.unwrap().value.expect("200 is a vault");
    assert_eq!(vault.name.as_deref(), Some("sample-vault"));
    assert_eq!(vault.properties.vault_uri.as_deref(), Some("https://sample-vault.vault.azure.net"));
    assert_eq!(vault.properties.sku.as_ref().map(|s| (s.family.as_str(), s.name.as_str())), Some(("A", "standard")));
    let zero = "00000000-0000-0000-0000-000000000000";
    assert!(vault.access_policy_grants(Some(zero), zero, &CMK_KEY_PERMISSIONS));
    assert!(!vault.is_protected(), "the example vault has no purge protection");
    assert_eq!(vault.properties.enable_rbac_authorization, None);

    let patched = az.enable_vault_protection(&kv).await.unwrap().value;
    assert_eq!(patched.name.as_deref(), Some("sample-vault"));
    assert_eq!(replay.calls()[1].query, format!("api-version={VAULTS_API_VERSION}"));

    let obj = "11111111-0000-0000-0000-000000000000";
    az.add_access_policy(&ap_vault, zero, obj, &CMK_KEY_PERMISSIONS).await.expect("200");
    az.add_access_policy(&ap_vault, zero, obj, &CMK_KEY_PERMISSIONS).await.expect("201");
    let sent = replay.calls()[2].json();
    assert!(same_shape(&sent, &q["parameters"]), "access-policy body {sent} is not the spec's shape");
    replay.finish();
}

// ------------------------------------------------------------------------------------------------ RBAC

#[tokio::test]
async fn role_assignment_create_examples() {
    let replay = Replay::start().await;
    let rel = "authorization/RoleAssignments_CreateForResource.json";
    let ex = example(rel);
    let scope: ResourceId = format!("/{}", ex["parameters"]["scope"].as_str().unwrap()).parse().unwrap();
    let wanted = &ex["parameters"]["parameters"]["properties"];
    let principal = wanted["principalId"].as_str().unwrap();
    let role = wanted["roleDefinitionId"].as_str().unwrap().rsplit('/').next().unwrap();
    let path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
        role_assignment_name(&scope, principal, role)
    );
    replay.expect(Method::PUT, &path, Recorded::spec(rel, 201));
    replay.expect(Method::PUT, &path, Recorded::spec(rel, 200));
    let az = replay.client().await;
    az.put_role_assignment(&scope, principal, role).await.expect("201 created");
    az.put_role_assignment(&scope, principal, role).await.expect("200 updated");
    let call = &replay.calls()[0];
    assert_eq!(call.query, format!("api-version={ROLE_ASSIGNMENTS_API_VERSION}"));
    let sent = call.json();
    assert!(same_shape(&sent, &ex["parameters"]["parameters"]), "role assignment body {sent}");
    assert_eq!(sent["properties"]["roleDefinitionId"], wanted["roleDefinitionId"]);
    assert_eq!(sent["properties"]["principalId"], wanted["principalId"]);
    replay.finish();
}

/// ARM pages role-assignment lists (`x-ms-pageable`, `nextLink`); with `$filter=principalId eq …` a page holds the
/// principal's assignments at, above and below the scope. Page 1 holds the CreateForResource example's assignment
/// (on a database account inside the group: it does not cover the group), page 2 is the ListForResourceGroup
/// example (an assignment on the group itself).
#[tokio::test]
async fn role_assignment_list_follows_next_link() {
    let replay = Replay::start().await;
    let create = example("authorization/RoleAssignments_CreateForResource.json");
    let list_rel = "authorization/RoleAssignments_ListForResourceGroup.json";
    let list = example(list_rel);
    let rg = ResourceId::resource_group_scope(
        list["parameters"]["subscriptionId"].as_str().unwrap(),
        list["parameters"]["resourceGroupName"].as_str().unwrap(),
    );
    let below: RoleAssignment = serde_json::from_value(create["responses"]["201"]["body"].clone()).unwrap();
    let principal = below.properties.principal_id.clone();
    let role = below.properties.role_definition_id.rsplit('/').next().unwrap().to_string();
    let path = format!("{rg}/providers/Microsoft.Authorization/roleAssignments");
    let next =
        format!("https://management.azure.com{path}?api-version={ROLE_ASSIGNMENTS_API_VERSION}&%24skiptoken=page2");
    let page1 = json!({"value": [create["responses"]["201"]["body"]], "nextLink": next});
    replay.expect(Method::GET, &path, Recorded::json(200, &page1));
    replay.expect(Method::GET, &path, Recorded::spec(list_rel, 200));
    let az = replay.client().await;
    assert!(az.has_role_assignment(&rg, &principal, &role).await.unwrap(), "the group-scope assignment is on page 2");
    let calls = replay.calls();
    let filter: String =
        url::form_urlencoded::parse(calls[0].query.as_bytes()).find(|(k, _)| k == "$filter").unwrap().1.into();
    assert_eq!(filter, format!("principalId eq '{principal}'"));
    assert_eq!(calls[1].query, Url::parse(&next).unwrap().query().unwrap(), "nextLink is followed as given");
    replay.finish();
}

// ------------------------------------------------------------------------------------------------ identities

#[tokio::test]
async fn identity_get_example() {
    let replay = Replay::start().await;
    let ex = example("msi/IdentityGet.json");
    let p = &ex["parameters"];
    let id = ResourceId::user_assigned_identity(
        p["subscriptionId"].as_str().unwrap(),
        p["resourceGroupName"].as_str().unwrap(),
        p["resourceName"].as_str().unwrap(),
    );
    replay.expect(Method::GET, &id.to_string(), Recorded::spec("msi/IdentityGet.json", 200));
    let got = replay.client().await.get_user_assigned_identity(&id).await.unwrap().expect("200 is an identity");
    assert_eq!(got.properties.principal_id.as_deref(), Some("25cc773c-7f05-40fc-a104-32d2300754ad"));
    assert_eq!(got.properties.client_id.as_deref(), Some("4024ab25-56a8-4370-aea6-6389221caf29"));
    assert_eq!(got.properties.tenant_id.as_deref(), Some("b6c948ef-f6b5-4384-8354-da3a15eca969"));
    assert_eq!(replay.calls()[0].query, format!("api-version={IDENTITIES_API_VERSION}"));
    replay.finish();
}

// ------------------------------------------------------------------------------------------------ Key Vault keys

/// The challenge round trip as recorded: an unauthenticated GET, the 401, a token for `resource`'s scope, the GET
/// again with it; later calls to the vault authenticate at once.
#[tokio::test]
async fn key_get_after_recorded_challenge() {
    let replay = Replay::start().await;
    let name = "CRUDKeyName-cangetakey-";
    replay.expect(Method::GET, &format!("/keys/{name}"), Recorded::replay("keyvault-401-challenge-resource.json"));
    replay.expect(Method::GET, &format!("/keys/{name}"), Recorded::replay("keyvault-get-key-200.json"));
    let spec = example("keyvault-data/GetKey-example.json");
    let (spec_name, spec_version) =
        (spec["parameters"]["key-name"].as_str().unwrap(), spec["parameters"]["key-version"].as_str().unwrap());
    let spec_path = format!("/keys/{spec_name}/{spec_version}");
    replay.expect(Method::GET, &spec_path, Recorded::spec("keyvault-data/GetKey-example.json", 200));
    let az = replay.client().await;
    let vault = replay.vault_uri();

    let key = az.get_key(&vault, name, None).await.unwrap().expect("200 is a key");
    assert_eq!(key.rsa_bits(), Some(2048));
    assert_eq!(key.version(), Some("69dfcf43c35944c8b34df938adbc70c9"));
    assert!(key.key.key_ops.iter().any(|o| o == "wrapKey") && key.key.key_ops.iter().any(|o| o == "unwrapKey"));
    assert_eq!(key.attributes.recovery_level.as_deref(), Some("CustomizedRecoverable+Purgeable"));
    assert!(key.is_usable_at(1653692637));
    let again = az.get_key(&vault, spec_name, Some(spec_version)).await.unwrap().unwrap();
    assert_eq!(again.version(), Some(spec_version));
    assert_eq!(again.rsa_bits(), Some(2048));

    let calls = replay.calls();
    assert_eq!(calls[0].auth, None, "the first request goes without a token");
    assert_eq!(calls[0].host, format!("{VAULT}.vault.azure.net"));
    assert_eq!(calls[0].query, format!("api-version={KEYVAULT_API_VERSION}"));
    assert!(calls[1..].iter().all(|c| c.auth.as_deref() == Some("Bearer access_token")));
    let tokens = replay.token_calls();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].body.contains("scope=https%3A%2F%2Fvault.azure.net%2F.default"), "{}", tokens[0].body);
    replay.finish();
}

/// The `scope=` form of the challenge (no `resource=`): the token is asked for that scope.
#[tokio::test]
async fn key_get_after_scope_challenge() {
    let replay = Replay::start().await;
    let spec = example("keyvault-data/GetKey-example.json");
    let name = spec["parameters"]["key-name"].as_str().unwrap();
    let version = spec["parameters"]["key-version"].as_str().unwrap();
    let path = format!("/keys/{name}/{version}");
    replay.expect(Method::GET, &path, Recorded::replay("keyvault-401-challenge-scope.json"));
    replay.expect(Method::GET, &path, Recorded::spec("keyvault-data/GetKey-example.json", 200));
    let key = replay.client().await.get_key(&replay.vault_uri(), name, Some(version)).await.unwrap().unwrap();
    assert_eq!(key.version(), Some(version));
    let calls = replay.calls();
    assert_eq!((calls[0].auth.as_deref(), calls[1].auth.as_deref()), (None, Some("Bearer access_token")));
    let tokens = replay.token_calls();
    assert!(tokens[0].body.contains("scope=https%3A%2F%2Fvault.azure.net%2F.default"), "{}", tokens[0].body);
    assert_eq!(tokens[0].path, format!("/{TENANT}/oauth2/v2.0/token"), "the configured tenant, not the challenge's");
    replay.finish();
}

/// GetKeyVersions' example page carries a `nextLink` (with an explicit `:443`, its own api-version, `$skiptoken`
/// and `maxresults`); the recorded last page has `"nextLink": null`.
#[tokio::test]
async fn key_versions_follow_next_link_to_the_recorded_last_page() {
    let replay = Replay::start().await;
    let rel = "keyvault-data/GetKeyVersions-example.json";
    let ex = example(rel);
    let name = ex["parameters"]["key-name"].as_str().unwrap();
    let path = format!("/keys/{name}/versions");
    replay.expect(Method::GET, &path, Recorded::replay("keyvault-401-challenge-resource.json"));
    replay.expect(Method::GET, &path, Recorded::spec(rel, 200));
    replay.expect(Method::GET, &path, Recorded::replay("keyvault-key-versions-last-page.json"));
    let versions = replay.client().await.list_key_versions(&replay.vault_uri(), name).await.unwrap().unwrap();
    let got: Vec<_> = versions.iter().map(|k| k.version().unwrap()).collect();
    assert_eq!(got, ["7c9dc6775d0e4177827c4f98f482fc12", "6506d3dffeec439689fa0de67ad595bd"]);
    let page: KeyListResult = serde_json::from_value(ex["responses"]["200"]["body"].clone()).unwrap();
    let next = Url::parse(&page.next_link.unwrap()).unwrap();
    assert_eq!(replay.calls()[2].query, next.query().unwrap(), "nextLink is followed as given");
    replay.finish();
}

#[tokio::test]
async fn key_vault_error_bodies() {
    let replay = Replay::start().await;
    let name = "CRUDKeyName-candeleteakey-";
    let path = format!("/keys/{name}");
    replay.expect(Method::GET, &path, Recorded::replay("keyvault-401-challenge-resource.json"));
    replay.expect(Method::GET, &path, Recorded::replay("keyvault-get-key-404.json"));
    replay.expect(Method::GET, &path, Recorded::replay("keyvault-get-key-403-forbidden-by-policy.json"));
    replay.expect(Method::GET, &path, Recorded::replay("keyvault-403-key-operation-forbidden.json"));
    let az = replay.client().await;
    let vault = replay.vault_uri();
    assert!(az.get_key(&vault, name, None).await.unwrap().is_none(), "KeyNotFound is an absent key");

    let by_policy = az.get_key(&vault, name, None).await.unwrap_err();
    assert_eq!((by_policy.status(), by_policy.code()), (Some(403), Some("Forbidden")));
    assert!(by_policy.to_string().contains("ForbiddenByPolicy"), "{by_policy}");
    assert!(by_policy.to_string().contains("Operation: \"get\""), "{by_policy}");
    assert_eq!(by_policy.classify(), ErrorClass::Fatal);

    let op = az.get_key(&vault, name, None).await.unwrap_err();
    assert_eq!((op.status(), op.code()), (Some(403), Some("Forbidden")));
    assert!(op.to_string().contains("KeyOperationForbidden"), "{op}");
    assert_eq!(op.classify(), ErrorClass::Fatal);
    assert_eq!(replay.calls().len(), 4, "a 403 is not resent");
    replay.finish();
}

// ------------------------------------------------------------------------------------------------ errors

/// Key Vault's 409 `ConflictError` (parallel writes to one vault): the write did not happen, so it is retryable, and
/// an idempotent access-policy PUT is sent again inside the call.
#[tokio::test]
async fn key_vault_conflict_error_is_retried() {
    let replay = Replay::start().await;
    let ex = example("keyvault-mgmt/updateAccessPoliciesAdd.json");
    let q = &ex["parameters"];
    let kv = ResourceId::vault(
        q["subscriptionId"].as_str().unwrap(),
        q["resourceGroupName"].as_str().unwrap(),
        q["vaultName"].as_str().unwrap(),
    );
    let add = format!("{kv}/accessPolicies/add");
    replay.expect(Method::PUT, &add, Recorded::replay("keyvault-mgmt-409-conflict-error.json"));
    replay.expect(Method::PUT, &add, Recorded::spec("keyvault-mgmt/updateAccessPoliciesAdd.json", 201));
    replay.expect(Method::PUT, &add, Recorded::replay("keyvault-mgmt-409-conflict-error.json"));
    let zero = "00000000-0000-0000-0000-000000000000";
    replay.client().await.add_access_policy(&kv, zero, zero, &CMK_KEY_PERMISSIONS).await.expect("second try");
    assert_eq!(replay.calls().len(), 2);

    let err = replay.client_without_retries().await.add_access_policy(&kv, zero, zero, &CMK_KEY_PERMISSIONS).await;
    let err = err.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("ConflictError")));
    assert!(err.to_string().contains("serialize the operations"), "{err}");
    assert!(matches!(err.classify(), ErrorClass::Retryable { .. }), "{:?}", err.classify());
    replay.finish();
}

/// HPC Cache's retirement answer to a create: a refusal no retry can change, sent once.
#[tokio::test]
async fn retirement_conflict_is_fatal_and_sent_once() {
    let replay = Replay::start().await;
    let ex = example(CACHES_PUT);
    let id = cache_id(&ex);
    replay.expect(Method::PUT, &id.to_string(), Recorded::replay("storagecache-409-retirement.json"));
    let desired: Cache = serde_json::from_value(ex["parameters"]["cache"].clone()).unwrap();
    let err = replay.client().await.put_cache(&id, &desired).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("OperationNotAllowed")));
    assert!(
        err.to_string().ends_with(
            "Unable to create HPC Cache due to product retirement. Please open a support ticket if you reached this in error."
        ),
        "{err}"
    );
    assert_eq!(err.classify(), ErrorClass::Fatal);
    assert_eq!(replay.calls().len(), 1, "no retry, no read-back");
    replay.finish();
}

/// ARM's 429 `SubscriptionRequestsThrottled` with `Retry-After: 1`: waited out inside the call; handed back as
/// `Throttled` (retryable after 1 s) when the client may not retry.
#[tokio::test]
async fn arm_throttling_honours_retry_after() {
    let replay = Replay::start().await;
    let id = cache_id(&example(CACHES_GET));
    let throttled = || Recorded::replay("arm-429-subscription-requests-throttled.json");
    replay.expect(Method::GET, &id.to_string(), throttled());
    replay.expect(Method::GET, &id.to_string(), Recorded::spec(CACHES_GET, 200));
    replay.expect(Method::GET, &id.to_string(), throttled());
    let start = Instant::now();
    let got = replay.client().await.get_cache(&id).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not honoured ({:?})", start.elapsed());
    assert_eq!(got.value.unwrap().name.as_deref(), Some("sc1"));

    let err = replay.client_without_retries().await.get_cache(&id).await.unwrap_err();
    assert!(matches!(err, AzureError::Throttled { .. }), "{err:?}");
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.classify(), ErrorClass::Retryable { after: Some(Duration::from_secs(1)) });
    assert_eq!(replay.calls().len(), 3);
    replay.finish();
}

// ------------------------------------------------------------------------------------------------ fixture READMEs

/// The first column of every table row of a README (file names), header and separator rows left out.
fn readme_files(readme: &str) -> Vec<String> {
    readme
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| File"))
        .filter_map(|l| l.split('|').nth(1).map(|c| c.trim().trim_matches('`').to_string()))
        .filter(|c| !c.is_empty())
        .collect()
}

fn files_under(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, base, out);
        } else if p.file_name().is_some_and(|n| n != "README.md") {
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Each fixture README names exactly the files next to it: no dangling rows, no file without provenance.
#[test]
fn fixture_readmes_name_exactly_the_files_present() {
    for dir in ["azure-specs", "replay"] {
        let base = std::path::PathBuf::from(FIXTURES).join(dir);
        let named = readme_files(&std::fs::read_to_string(base.join("README.md")).unwrap());
        assert!(!named.is_empty(), "{dir}/README.md names no files");
        let missing: Vec<_> = named.iter().filter(|f| !base.join(f).is_file()).collect();
        assert!(missing.is_empty(), "{dir}/README.md names files that do not exist: {missing:?}");
        let mut present = Vec::new();
        files_under(&base, &base, &mut present);
        let unnamed: Vec<_> = present.iter().filter(|f| !named.contains(f)).collect();
        assert!(unnamed.is_empty(), "files in {dir}/ without a README row: {unnamed:?}");
    }
}

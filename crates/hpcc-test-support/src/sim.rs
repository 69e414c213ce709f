//! The Azure simulator (`hpcc_sim`) in integration tests: the ids the seeds share, the world
//! `azure_client` and `sim_scenarios` start from, an HTTPS client that trusts the simulator's test CA, and tokens
//! from its Entra endpoint.
//!
//! ```ignore
//! use hpcc_test_support::sim::{self, OP_CLIENT, OP_SECRET};
//!
//! let sim = Simulator::start(SimConfig { seed: Some(sim::seed()), ..Default::default() }).await?;
//! let http = sim::https_client(&sim, &["kv-ap"]);
//! let token = sim::token(&http, &sim, OP_CLIENT, OP_SECRET, "https://management.azure.com/.default").await;
//! ```

use base64::Engine as _;
use hpcc_sim::{Seed, Simulator};
use reqwest::{Client, StatusCode};
use serde_json::Value;

pub const TENANT: &str = "11111111-2222-4333-8444-555555555555";
pub const SUB: &str = "00000000-0000-4000-8000-000000000001";
/// The operator's service principal (`operator: true`: the one the env file names).
pub const OP_CLIENT: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub const OP_OID: &str = "aaaaaaaa-0000-4000-8000-0000000000a1";
pub const OP_SECRET: &str = "op-secret";
/// The principal of the user-assigned identity `uai1`.
pub const UAI_PRINCIPAL: &str = "cccccccc-0000-4000-8000-0000000000c1";
/// The version of every seeded key.
pub const V1: &str = "0123456789abcdef0123456789abcdef";

/// Tenant `TENANT` with subscription `SUB` (resource group `rg`), the operator principal, the identity `uai1` and
/// three vaults in `rg` (westus), each with key `k2048` (version `V1`): `kv-ap` (access policies, purge protection,
/// also `k4096`), `kv-rbac` (RBAC, purge protection) and `kv-nopp` (access policies, no purge protection).
pub fn seed() -> Seed {
    Seed::from_yaml(&format!(
        r#"
tenantId: {TENANT}
subscriptions:
  - id: {SUB}
    resourceGroups: [rg]
principals:
  - {{clientId: {OP_CLIENT}, objectId: {OP_OID}, secret: {OP_SECRET}, operator: true}}
identities:
  - {{subscriptionId: {SUB}, resourceGroup: rg, name: uai1, location: westus, principalId: {UAI_PRINCIPAL}}}
vaults:
  - name: kv-ap
    subscriptionId: {SUB}
    resourceGroup: rg
    location: westus
    enablePurgeProtection: true
    keys:
      - {{name: k2048, versions: [{{version: {V1}}}]}}
      - {{name: k4096, versions: [{{version: {V1}, size: 4096}}]}}
  - name: kv-rbac
    subscriptionId: {SUB}
    resourceGroup: rg
    location: westus
    enableRbacAuthorization: true
    enablePurgeProtection: true
    keys: [{{name: k2048, versions: [{{version: {V1}}}]}}]
  - name: kv-nopp
    subscriptionId: {SUB}
    resourceGroup: rg
    location: westus
    keys: [{{name: k2048, versions: [{{version: {V1}}}]}}]
"#
    ))
    .expect("seed parses")
}

/// Adds `extra` (seed YAML without `tenantId`) to `seed`, list by list, after the entries `seed` has.
pub fn extend(seed: &mut Seed, extra: &str) {
    let extra = Seed::from_yaml(extra).expect("seed parses");
    assert!(extra.tenant_id.is_none(), "one world, one tenant");
    seed.subscriptions.extend(extra.subscriptions);
    seed.principals.extend(extra.principals);
    seed.identities.extend(extra.identities);
    seed.vaults.extend(extra.vaults);
    seed.grants.extend(extra.grants);
    seed.role_definitions.extend(extra.role_definitions);
}

/// An HTTPS client that trusts only the simulator's test CA and reaches `{vault}.vault.localhost` on the
/// simulator's port for each of `vaults` (no proxy).
pub fn https_client(sim: &Simulator, vaults: &[&str]) -> Client {
    let cert = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], sim.base_url().port().unwrap()));
    let mut b = Client::builder().tls_certs_only([cert]).no_proxy();
    for v in vaults {
        b = b.resolve(&format!("{v}.vault.localhost"), addr);
    }
    b.build().unwrap()
}

/// A client-credentials token request with a secret to the simulator's Entra endpoint of `TENANT`.
pub async fn request_token(
    http: &Client,
    sim: &Simulator,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> reqwest::Response {
    let url = sim.base_url().join(&format!("{TENANT}/oauth2/v2.0/token")).unwrap();
    http.post(url)
        .form(&[
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
}

/// The access token of a [`request_token`] that must succeed.
pub async fn token(http: &Client, sim: &Simulator, client_id: &str, secret: &str, scope: &str) -> String {
    let r = request_token(http, sim, client_id, secret, scope).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    v["access_token"].as_str().unwrap().to_string()
}

/// A Kubernetes service-account token as the kubelet projects it for workload identity (`AZURE_FEDERATED_TOKEN_FILE`):
/// a JWT with `iss`, `sub` (`system:serviceaccount:{namespace}:{name}`) and `aud` (`api://AzureADTokenExchange`),
/// valid for an hour. The signature is a placeholder: the simulator's Entra matches the claims against the
/// principal's federated credentials and, having no issuer keys, does not verify signatures.
pub fn service_account_token(issuer: &str, subject: &str, audience: &str) -> String {
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = b64(serde_json::json!({"alg": "RS256", "kid": "hpcc-test", "typ": "JWT"}));
    let claims = b64(
        serde_json::json!({"iss": issuer, "sub": subject, "aud": [audience], "iat": now, "nbf": now, "exp": now + 3600}),
    );
    format!("{header}.{claims}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"unsigned"))
}

//! Scenario tests for the Azure simulator over real HTTPS.

use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use hpcc_sim::seed::SeedKey;
use hpcc_sim::{Seed, SimConfig, Simulator};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use hpcc_test_support::sim::{self, OP_CLIENT, OP_OID, OP_SECRET, SUB, TENANT, UAI_PRINCIPAL, V1, token};

const OTHER_SUB: &str = "00000000-0000-4000-8000-000000000002";
const NOBODY_CLIENT: &str = "bbbbbbbb-0000-4000-8000-000000000001";
const NOBODY_OID: &str = "bbbbbbbb-0000-4000-8000-0000000000b1";
const API: &str = "2024-03-01";
const CRYPTO_SEU: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";
const VAULTS: [&str; 6] = ["kv-ap", "kv-rbac", "kv-east", "kv-nopp", "kv-other", "kv-nosd"];
const V2: &str = "22222222222222222222222222222222";
const V3: &str = "33333333333333333333333333333333";

/// The shared world plus: a second subscription, a principal without ARM rights, keys in `kv-ap` that a cache may
/// not use (EC, disabled, expired, key_ops without wrap/unwrap), a vault in another region, one in another
/// subscription and one without soft delete.
fn seed() -> Seed {
    let mut seed = sim::seed();
    sim::extend(
        &mut seed,
        &format!(
            r#"
subscriptions:
  - id: {OTHER_SUB}
    resourceGroups: [rg2]
principals:
  - {{clientId: {NOBODY_CLIENT}, objectId: {NOBODY_OID}, secret: nobody, armScopes: []}}
vaults:
  - name: kv-east
    subscriptionId: {SUB}
    resourceGroup: rg
    location: eastus
    enablePurgeProtection: true
    keys: [{{name: k2048, versions: [{{version: {V1}}}]}}]
  - name: kv-other
    subscriptionId: {OTHER_SUB}
    resourceGroup: rg2
    location: westus
    enablePurgeProtection: true
    keys: [{{name: k2048, versions: [{{version: {V1}}}]}}]
  - name: kv-nosd
    subscriptionId: {SUB}
    resourceGroup: rg
    location: westus
    enableSoftDelete: false
    enablePurgeProtection: true
    keys: [{{name: k2048, versions: [{{version: {V1}}}]}}]
"#
        ),
    );
    let kv_ap = seed.vaults.iter_mut().find(|v| v.name == "kv-ap").expect("kv-ap is seeded");
    let bad_keys: Vec<SeedKey> = serde_yaml_ng::from_str(&format!(
        r#"
- {{name: kec, versions: [{{version: {V1}, kty: EC}}]}}
- {{name: kdis, versions: [{{version: {V1}, enabled: false}}]}}
- {{name: kexp, versions: [{{version: {V1}, exp: "2020-01-01T00:00:00Z"}}]}}
- {{name: ksign, versions: [{{version: {V1}, keyOps: [sign, verify]}}]}}
- {{name: knounwrap, versions: [{{version: {V1}, keyOps: [encrypt, decrypt, wrapKey]}}]}}
"#
    ))
    .expect("keys parse");
    kv_ap.keys.extend(bad_keys);
    seed
}

struct T {
    sim: Simulator,
    http: Client,
    token: String,
}

fn client(sim: &Simulator) -> Client {
    sim::https_client(sim, &VAULTS)
}

async fn start_with(cfg: SimConfig) -> T {
    let sim = Simulator::start(SimConfig { seed: Some(seed()), ..cfg }).await.expect("sim starts");
    let http = client(&sim);
    let token = token(&http, &sim, OP_CLIENT, OP_SECRET, "https://management.azure.com/.default").await;
    T { sim, http, token }
}

/// The default world with grants counting at once (these scenarios are not about propagation; the ones that are
/// use [`start_with`]).
async fn start() -> T {
    start_with(SimConfig { grant_propagation: Duration::ZERO, ..SimConfig::default() }).await
}

struct Resp {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, h: &str) -> Option<&str> {
        self.headers.get(h).and_then(|v| v.to_str().ok())
    }
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

impl T {
    async fn call_with(&self, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Resp {
        let url = self.sim.base_url().join(path.trim_start_matches('/')).unwrap();
        let mut rb = self.http.request(method, url);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Resp { status, headers, body }
    }
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.call_with(Some(&self.token.clone()), method, path, body).await
    }
    async fn get_cache(&self, name: &str) -> Resp {
        self.call(Method::GET, &cache_path(name), None).await
    }
    async fn admin(&self, method: Method, path: &str, body: Value) -> reqwest::Response {
        self.http.request(method, self.sim.admin_url().join(path).unwrap()).json(&body).send().await.unwrap()
    }
    /// PUT cache `name` with a system-assigned identity and key `k2048` of `vault` (in `SUB`/`rg`).
    async fn put_system_cache(&self, name: &str, vault: &str) -> Resp {
        self.call(Method::PUT, &cache_path(name), Some(cache_body(system(), vault, "k2048", SUB, "rg"))).await
    }
    /// `Vaults_UpdateAccessPolicy` `add` on `vault` (in `SUB`/`rg`): key permissions `keys` for `object_id`.
    async fn add_access_policy(&self, vault: &str, api: &str, object_id: &str, keys: &[&str]) -> Resp {
        let ap = json!({"properties": {"accessPolicies": [{"tenantId": TENANT, "objectId": object_id, "permissions": {"keys": keys}}]}});
        self.call(
            Method::PUT,
            &format!("{}/accessPolicies/add?api-version={api}", vault_id(SUB, "rg", vault)),
            Some(ap),
        )
        .await
    }
    /// The admin API's grant: the access a cache needs to `vault`'s keys, for `principal`.
    async fn grant(&self, vault: &str, principal: &str) -> reqwest::Response {
        self.admin(Method::POST, "grants", json!({"vaultName": vault, "principalId": principal})).await
    }
    /// GET `url` (an LRO monitor) with the operator's ARM token.
    async fn get_url(&self, url: &str) -> reqwest::Response {
        self.http.get(url).bearer_auth(&self.token).send().await.unwrap()
    }
    /// GET `path` on `vault`'s Key Vault host with `token`.
    async fn vault_get(&self, vault: &str, path: &str, token: &str) -> reqwest::Response {
        self.http.get(self.sim.vault_uri(vault).join(path).unwrap()).bearer_auth(token).send().await.unwrap()
    }
}

fn cache_path(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/caches/{name}?api-version={API}")
}

fn vault_id(sub: &str, rg: &str, v: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{v}")
}

fn cache_body(identity: Value, vault: &str, key: &str, vault_sub: &str, vault_rg: &str) -> Value {
    json!({
        "location": "westus",
        "sku": {"name": "Standard_2G"},
        "identity": identity,
        "properties": {
            "cacheSizeGB": 3072,
            "subnet": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default"),
            "encryptionSettings": {"keyEncryptionKey": {
                "keyUrl": format!("https://{vault}.vault.azure.net/keys/{key}/{V1}"),
                "sourceVault": {"id": vault_id(vault_sub, vault_rg, vault)}
            }}
        }
    })
}

fn system() -> Value {
    json!({"type": "SystemAssigned"})
}

fn health(r: &Resp) -> (String, String) {
    (
        r.body["properties"]["provisioningState"].as_str().unwrap_or_default().to_string(),
        r.body["properties"]["health"]["state"].as_str().unwrap_or_default().to_string(),
    )
}

async fn poll_async(t: &T, url: &str) -> Value {
    let r = t.get_url(url).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn system_assigned_cmk_cache_waits_for_key_then_access_policy_makes_it_healthy() {
    let t = start().await;
    let r = t.put_system_cache("c1", "kv-ap").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    assert_eq!(r.body["properties"]["health"]["state"], "WaitingForKey");
    assert!(r.header("x-ms-request-id").is_some());
    assert!(r.header("x-ms-ratelimit-remaining-subscription-writes").is_some());
    let async_url = r.header("azure-asyncoperation").expect("Azure-AsyncOperation").to_string();
    let location = r.header("location").expect("Location").to_string();
    let base = t.sim.base_url().to_string();
    assert!(async_url.starts_with(&base) && async_url.contains("/ascOperations/"), "{async_url}");
    assert!(location.starts_with(&base) && location.contains("monitor=true"), "{location}");
    assert_eq!(r.header("retry-after"), Some("10"));
    // systemData.createdAt follows the simulated clock
    let created: jiff::Timestamp = r.body["systemData"]["createdAt"].as_str().unwrap().parse().unwrap();
    assert!((created.as_second() - t.sim.now().as_second()).abs() <= 2);
    let principal = r.body["identity"]["principalId"].as_str().expect("system principal").to_string();
    assert_eq!(r.body["identity"]["tenantId"], TENANT);

    t.sim.advance(Duration::from_secs(30 * 60));
    let g = t.get_cache("c1").await;
    assert_eq!(health(&g), ("Creating".into(), "WaitingForKey".into()));
    assert_eq!(poll_async(&t, &async_url).await["status"], "InProgress");
    let loc = t.get_url(&location).await;
    assert_eq!(loc.status(), StatusCode::ACCEPTED);

    // The Date header follows the simulated clock (30 minutes ahead of the wall clock).
    let date = g.header("date").unwrap();
    let parsed = jiff::fmt::rfc2822::parse(date).unwrap().timestamp();
    assert!(parsed.as_second() - jiff::Timestamp::now().as_second() >= 29 * 60, "{date}");

    // Grant access the way the operator would: add an access policy.
    let r = t.add_access_policy("kv-ap", "2025-05-01", &principal, &["get", "wrapKey", "unwrapKey"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let g = t.get_cache("c1").await;
    assert_eq!(health(&g), ("Creating".into(), "Transitioning".into()));
    t.sim.advance(Duration::from_secs(5 * 60));
    let g = t.get_cache("c1").await;
    assert_eq!(health(&g), ("Succeeded".into(), "Healthy".into()));
    assert_eq!(poll_async(&t, &async_url).await["status"], "Succeeded");
    let loc = t.get_url(&location).await;
    assert_eq!(loc.status(), StatusCode::OK);
    let body: Value = loc.json().await.unwrap();
    assert_eq!(body["name"], "c1");

    // Only the needed permissions count: a policy with just "get" is not enough for another cache.
    let r = t.put_system_cache("c2", "kv-ap").await;
    let p2 = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    t.add_access_policy("kv-ap", "2023-07-01", &p2, &["get"]).await;
    t.sim.advance(Duration::from_secs(10 * 60));
    assert_eq!(health(&t.get_cache("c2").await).1, "WaitingForKey");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_vault_keeps_at_most_1024_access_policies_whichever_call_adds_them() {
    let t = start().await;
    let oid = |i: usize| format!("dddddddd-0000-4000-8000-{i:012}");
    let policies = |ids: std::ops::Range<usize>| -> Vec<Value> {
        ids.map(|i| json!({"tenantId": TENANT, "objectId": oid(i), "permissions": {"keys": ["get"]}})).collect()
    };
    let add_path = format!("{}/accessPolicies/add?api-version=2023-07-01", vault_id(SUB, "rg", "kv-ap"));
    let add = |ids: std::ops::Range<usize>| {
        let body = json!({"properties": {"accessPolicies": policies(ids)}});
        t.call(Method::PUT, &add_path, Some(body))
    };
    // kv-ap is seeded with one policy (the operator's): fill it to 1024 in adds of 16.
    let seeded = t.call(Method::GET, &format!("{}?api-version=2023-07-01", vault_id(SUB, "rg", "kv-ap")), None).await;
    let mut n = seeded.body["properties"]["accessPolicies"].as_array().unwrap().len();
    while n < 1024 {
        let next = (1024 - n).min(16);
        assert_eq!(add(n..n + next).await.status, StatusCode::OK, "{n}");
        n += next;
    }
    // The 1025th identity is refused, and nothing of that call is kept.
    let r = add(5000..5002).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let after = t.call(Method::GET, &format!("{}?api-version=2023-07-01", vault_id(SUB, "rg", "kv-ap")), None).await;
    assert_eq!(after.body["properties"]["accessPolicies"].as_array().unwrap().len(), 1024);
    // More permissions for an identity already there take no new entry.
    assert_eq!(t.add_access_policy("kv-ap", "2023-07-01", &oid(100), &["wrapKey"]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn rbac_vault_role_assignment_makes_cache_healthy_and_role_assignments_behave() {
    let t = start().await;
    let r = t.put_system_cache("r1", "kv-rbac").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let principal = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    // An access policy does nothing on an RBAC vault.
    t.add_access_policy("kv-rbac", "2025-05-01", &principal, &["all"]).await;
    t.sim.advance(Duration::from_secs(20 * 60));
    assert_eq!(health(&t.get_cache("r1").await).1, "WaitingForKey");

    let scope = vault_id(SUB, "rg", "kv-rbac");
    let name = "5a3c1c8e-0000-4000-8000-000000000001";
    let ra_path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version=2022-04-01");
    let body = json!({"properties": {
        "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_SEU}"),
        "principalId": principal, "principalType": "ServicePrincipal"}});
    let r = t.call(Method::PUT, &ra_path, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["type"], "Microsoft.Authorization/roleAssignments");
    assert_eq!(r.body["properties"]["scope"], scope);
    // identical re-PUT: idempotent
    let r = t.call(Method::PUT, &ra_path, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::OK);
    // same principal+role+scope under another name: conflict
    let other = ra_path.replace("000000000001?", "000000000002?");
    let r = t.call(Method::PUT, &other, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "RoleAssignmentExists");
    // list by principal
    let r = t
        .call(
            Method::GET,
            &format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter=principalId%20eq%20'{principal}'"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);

    assert_eq!(health(&t.get_cache("r1").await), ("Creating".into(), "Transitioning".into()));
    t.sim.advance(Duration::from_secs(5 * 60));
    assert_eq!(health(&t.get_cache("r1").await), ("Succeeded".into(), "Healthy".into()));

    // unknown role and non-GUID names are refused
    let bad = json!({"properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/00000000-0000-0000-0000-000000000000", "principalId": principal}});
    let r = t.call(Method::PUT, &ra_path.replace("000000000001?", "000000000003?"), Some(bad)).await;
    assert_eq!(r.code(), "RoleDefinitionDoesNotExist");
    let r = t.call(Method::PUT, &ra_path.replace(name, "not-a-guid"), Some(body)).await;
    assert_eq!(r.code(), "InvalidRoleAssignmentId");
    let r = t.call(Method::DELETE, &ra_path, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = t.call(Method::GET, &ra_path, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "RoleAssignmentNotFound");
}

#[tokio::test]
async fn without_a_grant_the_cache_fails_after_the_authorization_window() {
    let t = start().await;
    let r = t.put_system_cache("f1", "kv-ap").await;
    let async_url = r.header("azure-asyncoperation").unwrap().to_string();
    let principal = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    t.sim.advance(Duration::from_secs(89 * 60));
    assert_eq!(health(&t.get_cache("f1").await).1, "WaitingForKey");
    t.sim.advance(Duration::from_secs(2 * 60));
    assert_eq!(health(&t.get_cache("f1").await), ("Failed".into(), "Down".into()));
    let op = poll_async(&t, &async_url).await;
    assert_eq!(op["status"], "Failed");
    assert!(op["error"]["code"].is_string() && op["error"]["message"].is_string());
    // a late grant does not revive it
    let g = t.grant("kv-ap", &principal).await;
    assert_eq!(g.status(), StatusCode::OK);
    assert_eq!(health(&t.get_cache("f1").await).0, "Failed");
}

#[tokio::test]
async fn user_assigned_identity_with_existing_access_goes_straight_to_transitioning() {
    let t = start().await;
    assert_eq!(t.grant("kv-ap", UAI_PRINCIPAL).await.status(), StatusCode::OK);
    let uai = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uai1"
    );
    let identity = json!({"type": "UserAssigned", "userAssignedIdentities": {uai.clone(): {}}});
    let r = t.call(Method::PUT, &cache_path("u1"), Some(cache_body(identity, "kv-ap", "k2048", SUB, "rg"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["identity"]["userAssignedIdentities"][&uai]["principalId"], UAI_PRINCIPAL);
    assert!(r.body["identity"]["userAssignedIdentities"][&uai]["clientId"].is_string());
    assert_eq!(health(&r), ("Creating".into(), "Transitioning".into()));
    t.sim.advance(Duration::from_secs(10 * 60));
    assert_eq!(health(&t.get_cache("u1").await), ("Succeeded".into(), "Healthy".into()));

    // immutable fields
    let mut b = cache_body(
        json!({"type": "UserAssigned", "userAssignedIdentities": {uai.clone(): {}}}),
        "kv-ap",
        "k2048",
        SUB,
        "rg",
    );
    b["sku"]["name"] = json!("Standard_4G");
    let r = t.call(Method::PUT, &cache_path("u1"), Some(b.clone())).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "PropertyChangeNotAllowed"));
    b["sku"]["name"] = json!("Standard_2G");
    b["location"] = json!("eastus");
    let r = t.call(Method::PUT, &cache_path("u1"), Some(b.clone())).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "InvalidResourceLocation"));
    let r = t
        .call(
            Method::PATCH,
            &cache_path("u1"),
            Some(json!({"properties": {"encryptionSettings": null}, "identity": {"type": "SystemAssigned"}})),
        )
        .await;
    assert_eq!(r.code(), "PropertyChangeNotAllowed");
    // PATCH tags → 202 + LRO headers, Updating until done
    let r = t.call(Method::PATCH, &cache_path("u1"), Some(json!({"tags": {"a": "b"}}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.header("location").is_some() && r.header("azure-asyncoperation").is_some());
    let g = t.get_cache("u1").await;
    assert_eq!(g.body["properties"]["provisioningState"], "Updating");
    assert_eq!(g.body["tags"]["a"], "b");
    t.sim.advance(Duration::from_secs(60));
    assert_eq!(t.get_cache("u1").await.body["properties"]["provisioningState"], "Succeeded");

    // DELETE: 202 + headers, Deleting, then 404
    let r = t.call(Method::DELETE, &cache_path("u1"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let loc = r.header("location").unwrap().to_string();
    assert_eq!(t.get_cache("u1").await.body["properties"]["provisioningState"], "Deleting");
    assert_eq!(t.get_url(&loc).await.status(), StatusCode::ACCEPTED);
    t.sim.advance(Duration::from_secs(3 * 60));
    let g = t.get_cache("u1").await;
    assert_eq!((g.status, g.code()), (StatusCode::NOT_FOUND, "ResourceNotFound"));
    assert_eq!(t.get_url(&loc).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(t.call(Method::DELETE, &cache_path("u1"), None).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn system_assigned_principal_dies_with_its_cache() {
    let t = start().await;
    let r = t.put_system_cache("d1", "kv-ap").await;
    let principal = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    let ra = |n: &str| {
        format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{n}?api-version=2022-04-01")
    };
    let body = json!({"properties": {"roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_SEU}"), "principalId": principal}});
    let r = t.call(Method::PUT, &ra("6a3c1c8e-0000-4000-8000-000000000001"), Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "principal exists while the cache does: {}", r.body);
    t.call(Method::DELETE, &ra("6a3c1c8e-0000-4000-8000-000000000001"), None).await;
    t.call(Method::DELETE, &cache_path("d1"), None).await;
    t.sim.advance(Duration::from_secs(5 * 60));
    let r = t.call(Method::PUT, &ra("6a3c1c8e-0000-4000-8000-000000000002"), Some(body)).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "PrincipalNotFound"));
}

#[tokio::test]
async fn bad_keys_and_vaults_are_refused_at_create() {
    let t = start().await;
    let cases = [
        ("kv-ap", "k4096", SUB, "rg", "InvalidKeySize"),
        ("kv-ap", "kec", SUB, "rg", "InvalidKeyType"),
        ("kv-ap", "kdis", SUB, "rg", "KeyDisabled"),
        ("kv-ap", "kexp", SUB, "rg", "KeyExpired"),
        ("kv-ap", "nope", SUB, "rg", "KeyNotFound"),
        ("kv-east", "k2048", SUB, "rg", "KeyVaultLocationMismatch"),
        ("kv-nopp", "k2048", SUB, "rg", "KeyVaultPurgeProtectionNotEnabled"),
        ("kv-other", "k2048", OTHER_SUB, "rg2", "KeyVaultSubscriptionMismatch"),
    ];
    for (i, (vault, key, vsub, vrg, code)) in cases.iter().enumerate() {
        let r = t
            .call(Method::PUT, &cache_path(&format!("bad{i}")), Some(cache_body(system(), vault, key, vsub, vrg)))
            .await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, *code), "{vault}/{key}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(t.get_cache(&format!("bad{i}")).await.status, StatusCode::NOT_FOUND, "nothing created");
    }
}

#[tokio::test]
async fn retired_mode_refuses_create() {
    let t = start_with(SimConfig { retired: true, ..SimConfig::default() }).await;
    let r = t.put_system_cache("x", "kv-ap").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "OperationNotAllowed");
    assert_eq!(
        r.body["error"]["message"],
        "Unable to create HPC Cache due to product retirement. Please open a support ticket if you reached this in error."
    );
    assert_eq!(t.get_cache("x").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_get_arm_style_4xx() {
    let t = start().await;
    let garbage = t
        .http
        .put(t.sim.base_url().join(cache_path("g").trim_start_matches('/')).unwrap())
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    let v: Value = garbage.json().await.unwrap();
    assert_eq!(v["error"]["code"], "InvalidRequestContent");

    let p = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/caches/c");
    let r = t.call(Method::GET, &p, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "MissingApiVersionParameter"));
    let r = t.call(Method::GET, &format!("{p}?api-version=2099-01-01"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "NoRegisteredProviderFound"));
    let r = t.call(Method::GET, &format!("{p}?api-version=banana"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "InvalidApiVersionParameter"));
    // the vault api-version is not a cache api-version
    let r = t.call(Method::GET, &format!("{p}?api-version=2025-05-01"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = t.call(Method::GET, &cache_path("bad.name"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "InvalidResourceName"));
    let r = t
        .call(
            Method::GET,
            &format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Foo/bars/x?api-version={API}"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "InvalidResourceType"));
    let r = t.call(Method::GET, "/nonsense/path", None).await;
    assert!(r.status.is_client_error());
    let r = t.call(Method::GET, &cache_path("c").replace("/rg/", "/nosuchrg/"), None).await;
    assert_eq!(r.code(), "ResourceGroupNotFound");
    let r = t.call(Method::GET, &cache_path("c").replace(SUB, "99999999-0000-4000-8000-000000000000"), None).await;
    assert_eq!(r.code(), "SubscriptionNotFound");
    // case-insensitive routing
    let r = t
        .call(
            Method::GET,
            &cache_path("c")
                .replace("resourceGroups", "RESOURCEGROUPS")
                .replace("Microsoft.StorageCache", "microsoft.storagecache"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "ResourceNotFound"));
    // PUT without required fields
    let r = t.call(Method::PUT, &cache_path("e"), Some(json!({"sku": {"name": "Standard_2G"}}))).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "LocationRequired"));
    let r = t.call(Method::PUT, &cache_path("e"), Some(json!([1, 2]))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // auth: none, wrong audience, no rights
    let r = t.call_with(None, Method::GET, &cache_path("c"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "AuthenticationFailed"));
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    let r = t.call_with(Some("garbage"), Method::GET, &cache_path("c"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken"));
    let vault_token = token(&t.http, &t.sim, OP_CLIENT, OP_SECRET, "https://vault.azure.net/.default").await;
    let r = t.call_with(Some(&vault_token), Method::GET, &cache_path("c"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "InvalidAuthenticationTokenAudience"));
    let nobody = token(&t.http, &t.sim, NOBODY_CLIENT, "nobody", "https://management.azure.com/.default").await;
    let r = t.call_with(Some(&nobody), Method::GET, &cache_path("c"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "AuthorizationFailed"));

    // token endpoint errors
    let r = sim::request_token(&t.http, &t.sim, OP_CLIENT, "wrong", "https://management.azure.com/.default").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert!(v["error_description"].as_str().unwrap().starts_with("AADSTS"));
    let url = t.sim.base_url().join(&format!("{TENANT}/oauth2/v2.0/token")).unwrap();
    let r = t.http.post(url).body("%%%").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // vault rules
    let vp = format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap"));
    let r = t.call(Method::PATCH, &vp, Some(json!({"properties": {"enablePurgeProtection": false}}))).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "BadRequest"));
    assert_eq!(
        r.body["error"]["message"],
        "The property \"enablePurgeProtection\" cannot be set to false. Enabling the purge protection for a vault is an irreversible action."
    );
    let r = t.call(Method::PATCH, &vp, Some(json!({"properties": {"enableSoftDelete": false}}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = t.call(Method::PATCH, &vp, Some(json!({"properties": {"softDeleteRetentionInDays": 3}}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = t
        .call(
            Method::PATCH,
            &vp,
            Some(json!({"properties": {"enablePurgeProtection": true, "softDeleteRetentionInDays": 30}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["properties"]["softDeleteRetentionInDays"], 30);
    let r = t
        .call(
            Method::PUT,
            &format!("{}/accessPolicies/delete?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap")),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn key_vault_data_plane_challenge_permissions_and_keys() {
    let t = start().await;
    let key_url = t.sim.vault_uri("kv-ap").join(&format!("keys/k2048/{V1}?api-version=7.5")).unwrap();
    // 1. challenge
    let r = t.http.get(key_url.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let chal = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert_eq!(
        chal,
        format!("Bearer authorization=\"{}{TENANT}\", resource=\"https://vault.azure.net\"", t.sim.base_url())
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "Unauthorized");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("AKV10000"));
    // 2. an ARM token is the wrong audience
    let r = t.http.get(key_url.clone()).bearer_auth(&t.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // 3. a vault token without permission → 403
    let vt = token(&t.http, &t.sim, OP_CLIENT, OP_SECRET, "https://vault.azure.net/.default").await;
    let r = t.http.get(key_url.clone()).bearer_auth(&vt).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "Forbidden");
    // 4. grant, then read
    t.grant("kv-ap", OP_OID).await;
    let r = t.http.get(key_url.clone()).bearer_auth(&vt).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["key"]["kid"], format!("{}keys/k2048/{V1}", t.sim.vault_uri("kv-ap")));
    assert_eq!(v["key"]["kty"], "RSA");
    use base64::Engine as _;
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v["key"]["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len(), 256);
    assert_ne!(n[0], 0);
    assert_eq!(v["attributes"]["recoveryLevel"], "Recoverable");
    // latest via /keys/{name} and /keys/{name}/
    for p in ["keys/k2048?api-version=7.5", "keys/k2048/?api-version=7.5"] {
        let r = t.vault_get("kv-ap", p, &vt).await;
        assert_eq!(r.status(), StatusCode::OK, "{p}");
    }
    let r = t.vault_get("kv-ap", "keys/k4096?api-version=7.5", &vt).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v["key"]["n"].as_str().unwrap()).unwrap().len(),
        512
    );
    let r = t.vault_get("kv-ap", "keys/missing?api-version=7.5", &vt).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "KeyNotFound");
    let r = t.vault_get("kv-ap", "keys/k2048", &vt).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "api-version is required");
    // versions needs "list": the grant gave get/wrapKey/unwrapKey only
    let r = t.vault_get("kv-ap", "keys/k2048/versions?api-version=7.5", &vt).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    t.add_access_policy("kv-ap", "2025-05-01", OP_OID, &["list"]).await;
    let r = t.vault_get("kv-ap", "keys/k2048/versions?api-version=7.5", &vt).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["value"][0]["kid"], format!("{}keys/k2048/{V1}", t.sim.vault_uri("kv-ap")));
    // RBAC vault: access policies don't count, the role does
    let r = t.vault_get("kv-rbac", "keys/k2048?api-version=7.5", &vt).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["innererror"]["code"], "ForbiddenByRbac");
}

#[tokio::test]
async fn throttling_and_injected_faults() {
    let t = start_with(SimConfig { throttling: true, ..SimConfig::default() }).await;
    let vp = format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap"));
    let first = t.call(Method::GET, &vp, None).await;
    let remaining: u64 = first.header("x-ms-ratelimit-remaining-subscription-reads").unwrap().parse().unwrap();
    assert!(remaining < 250);
    let mut throttled = None;
    for _ in 0..300 {
        let r = t.call(Method::GET, &vp, None).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(r);
            break;
        }
    }
    let r = throttled.expect("throttled within 300 reads");
    assert_eq!(r.code(), "SubscriptionRequestsThrottled");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // writes have their own bucket
    let w = t.call(Method::PATCH, &vp, Some(json!({"tags": {"x": "y"}}))).await;
    assert_eq!(w.status, StatusCode::OK);

    // injected faults on a fresh simulator without throttling
    let t = start().await;
    let add = t
        .admin(
            Method::POST,
            "faults",
            json!([{"route": "GET /subscriptions/.*/vaults/", "kind": "throttle", "retryAfterSeconds": 7, "count": 1},
                                            {"route": "PATCH", "kind": "error", "status": 503, "count": 1}]),
        )
        .await;
    assert_eq!(add.status(), StatusCode::OK);
    let r = t.call(Method::GET, &vp, None).await;
    assert_eq!((r.status, r.header("retry-after")), (StatusCode::TOO_MANY_REQUESTS, Some("7")));
    assert_eq!(t.call(Method::GET, &vp, None).await.status, StatusCode::OK, "count exhausted");
    assert_eq!(t.call(Method::PATCH, &vp, Some(json!({}))).await.status, StatusCode::SERVICE_UNAVAILABLE);
    t.admin(Method::POST, "faults", json!({"route": "/vaults/kv-ap", "kind": "drop", "count": 1})).await;
    let url = t.sim.base_url().join(vp.trim_start_matches('/')).unwrap();
    let dropped = async { t.http.get(url).bearer_auth(&t.token).send().await?.text().await }.await;
    assert!(dropped.is_err(), "connection dropped");
    t.admin(Method::POST, "faults", json!({"route": "/vaults/kv-ap", "kind": "latency", "latencyMs": 300, "count": 1}))
        .await;
    let start = std::time::Instant::now();
    assert_eq!(t.call(Method::GET, &vp, None).await.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(300));
    let bad = t.admin(Method::POST, "faults", json!({"route": "x", "kind": "explode"})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        t.http.delete(t.sim.admin_url().join("faults").unwrap()).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn refuses_non_loopback_listen_addresses() {
    let cfg = SimConfig { listen: "0.0.0.0:0".parse().unwrap(), ..SimConfig::default() };
    let e = Simulator::start(cfg).await.err().expect("refused");
    assert!(e.to_string().contains("loopback"), "{e}");
    let cfg = SimConfig { admin_listen: "0.0.0.0:0".parse().unwrap(), ..SimConfig::default() };
    assert!(Simulator::start(cfg).await.is_err());
}

#[tokio::test]
async fn admin_api_sets_the_clock_speed_without_a_jump() {
    let t = start_with(SimConfig { speed: 600.0, ..SimConfig::default() }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = t.admin(Method::POST, "clock/speed", json!({"speed": 0})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["speed"], 0.0);
    let stopped: jiff::Timestamp = v["now"].as_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Stopped: the clock stays where it was stopped.
    let v: Value = t.http.get(t.sim.admin_url().join("clock").unwrap()).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["now"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(), stopped);
    let r = t.admin(Method::POST, "clock/speed", json!({"speed": 1})).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["speed"], 1.0);
    let now: jiff::Timestamp = v["now"].as_str().unwrap().parse().unwrap();
    assert!(now >= stopped && now.as_second() - stopped.as_second() <= 1, "no jump: {stopped} -> {now}");
    for bad in [json!({"speed": -1}), json!({"speed": "fast"}), json!({})] {
        assert_eq!(t.admin(Method::POST, "clock/speed", bad).await.status(), StatusCode::BAD_REQUEST);
    }
    assert_eq!(t.sim.set_speed(5.0), 5.0);
}

#[tokio::test]
async fn admin_api_clock_requests_seed_and_env_file() {
    let t = start().await;
    let before = t.sim.now();
    let r = t.admin(Method::POST, "clock/advance", json!({"minutes": 90})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let now: jiff::Timestamp = v["now"].as_str().unwrap().parse().unwrap();
    assert!(now.as_second() - before.as_second() >= 90 * 60);
    let r = t.admin(Method::POST, "clock/advance", json!({"seconds": 30})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(t.admin(Method::POST, "clock/advance", json!({"minutes": "x"})).await.status(), StatusCode::BAD_REQUEST);

    let seed = "vaults:\n  - {name: kv-new, subscriptionId: 00000000-0000-4000-8000-000000000001, resourceGroup: rg, enablePurgeProtection: true}\n";
    let r = t.http.post(t.sim.admin_url().join("seed").unwrap()).body(seed).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = t.call(Method::GET, &format!("{}?api-version=2023-07-01", vault_id(SUB, "rg", "kv-new")), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["properties"]["vaultUri"], t.sim.vault_uri("kv-new").to_string());
    let r = t.http.post(t.sim.admin_url().join("seed").unwrap()).body("vaults: 3").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let log = t.http.get(t.sim.admin_url().join("requests").unwrap()).send().await.unwrap().text().await.unwrap();
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = lines.last().unwrap();
    assert_eq!(last["method"], "GET");
    assert_eq!(last["status"], 200);
    assert_eq!(last["principal"], OP_OID);
    assert!(last["path"].as_str().unwrap().ends_with("/vaults/kv-new"));
    assert_eq!(t.sim.requests().len(), lines.len());
    let st = t.http.get(t.sim.admin_url().join("state").unwrap()).send().await.unwrap();
    assert_eq!(st.status(), StatusCode::OK);

    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("sim.env");
    t.sim.write_env_file(&env).unwrap();
    let text = std::fs::read_to_string(&env).unwrap();
    let kv: std::collections::HashMap<String, String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string())))
        .collect();
    assert_eq!(kv["AZURE_TENANT_ID"], TENANT);
    assert_eq!(kv["AZURE_CLIENT_ID"], OP_CLIENT);
    assert_eq!(kv["AZURE_CLIENT_SECRET"], OP_SECRET);
    assert_eq!(kv["AZURE_AUTHORITY_HOST"], t.sim.base_url().to_string());
    assert_eq!(kv["HPCC_ARM_ENDPOINT"], t.sim.base_url().to_string());
    assert_eq!(kv["HPCC_SIM_ADMIN"], t.sim.admin_url().to_string());
    assert_eq!(kv["HPCC_RESOLVE_TO_LOOPBACK"], "true");
    assert_eq!(kv["HPCC_KEYVAULT_DNS_SUFFIX"], "vault.localhost");
    let ca = std::path::Path::new(&kv["HPCC_CA_FILE"]);
    assert!(ca.is_absolute());
    assert_eq!(std::fs::read_to_string(ca).unwrap(), t.sim.ca_pem());
    assert!(t.sim.env().iter().any(|(k, _)| k == "HPCC_CA_FILE"));
}

#[tokio::test]
async fn plain_http_mode_serves_without_tls() {
    let sim =
        Simulator::start(SimConfig { plain_http: true, seed: Some(seed()), ..SimConfig::default() }).await.unwrap();
    assert_eq!(sim.base_url().scheme(), "http");
    assert!(sim.ca_pem().is_empty());
    let http = Client::new();
    let v: Value = http
        .get(sim.base_url().join(&format!("{TENANT}/v2.0/.well-known/openid-configuration")).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["token_endpoint"].as_str().unwrap().ends_with("/oauth2/v2.0/token"));
    assert!(!sim.env().iter().any(|(k, _)| k == "HPCC_CA_FILE"));
}

/// azure_identity's client-secret credential for the operator's client id with `secret`, against the simulator's
/// token endpoint through [`client`].
fn credential(sim: &Simulator, secret: &str) -> azure_core::Result<Arc<ClientSecretCredential>> {
    let mut custom = CustomConfiguration::default();
    custom.authority_host = sim.base_url().to_string();
    let options = ClientSecretCredentialOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(Arc::new(client(sim)))),
            cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
            ..Default::default()
        },
    };
    ClientSecretCredential::new(TENANT, OP_CLIENT.to_string(), Secret::new(secret.to_string()), Some(options))
}

/// The real azure_identity client-secret credential against the simulator's token endpoint over TLS.
#[tokio::test]
async fn azure_identity_client_secret_credential_gets_a_token_that_arm_accepts() {
    let t = start().await;
    let cred = credential(&t.sim, OP_SECRET).expect("credential");
    let tok = cred.get_token(&["https://management.azure.com/.default"], None).await.expect("token from the simulator");
    let r = t
        .call_with(
            Some(tok.token.secret()),
            Method::GET,
            &format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "kv-ap");
    let last = t.sim.requests().last().cloned().unwrap();
    assert_eq!(last.principal.as_deref(), Some(OP_OID));

    // a wrong secret surfaces as an authentication error through the same code path
    let bad = credential(&t.sim, "nope").unwrap();
    assert!(bad.get_token(&["https://management.azure.com/.default"], None).await.is_err());
}

// ---------------------------------------------------------------------------------------------------------------
// Real Azure's contract (issue 8)

fn plain_cache_body(sku: &str, size: i64) -> Value {
    json!({
        "location": "westus",
        "sku": {"name": sku},
        "properties": {
            "cacheSizeGB": size,
            "subnet": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default"),
        }
    })
}

fn key_ref(vault: &str, key: &str, version: Option<&str>) -> Value {
    let url = match version {
        Some(v) => format!("https://{vault}.vault.azure.net/keys/{key}/{v}"),
        None => format!("https://{vault}.vault.azure.net/keys/{key}"),
    };
    json!({"keyUrl": url, "sourceVault": {"id": vault_id(SUB, "rg", vault)}})
}

fn rotation(r: &Resp) -> Value {
    r.body["properties"]["encryptionSettings"]["rotationToLatestKeyVersionEnabled"].clone()
}

fn key_url_of(r: &Resp) -> String {
    r.body["properties"]["encryptionSettings"]["keyEncryptionKey"]["keyUrl"].as_str().unwrap_or_default().to_string()
}

impl T {
    async fn vault_post(&self, vault: &str, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.sim.vault_uri(vault).join(path).unwrap())
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn key_ops_are_reported_and_enforced() {
    let t = start().await;
    let vt = token(&t.http, &t.sim, OP_CLIENT, OP_SECRET, "https://vault.azure.net/.default").await;
    t.grant("kv-ap", OP_OID).await;
    // GET key answers carry the version's key_ops; the default is the GetKey example's set
    let r = t.vault_get("kv-ap", &format!("keys/ksign/{V1}?api-version=7.5"), &vt).await;
    assert_eq!(r.json::<Value>().await.unwrap()["key"]["key_ops"], json!(["sign", "verify"]));
    let r = t.vault_get("kv-ap", "keys/k2048?api-version=7.5", &vt).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["key"]["key_ops"],
        json!(["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"])
    );

    // Key Vault enforces key_ops: 403 Forbidden, inner KeyOperationForbidden
    let wrap = json!({"alg": "RSA-OAEP", "value": "c2VjcmV0"});
    let (st, b) = t.vault_post("kv-ap", &format!("keys/ksign/{V1}/wrapkey?api-version=7.5"), &vt, wrap.clone()).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        b,
        json!({"error": {"code": "Forbidden", "message": "Operation wrapKey is not permitted on this key.", "innererror": {"code": "KeyOperationForbidden"}}})
    );
    let (st, w) = t.vault_post("kv-ap", &format!("keys/k2048/{V1}/wrapkey?api-version=7.5"), &vt, wrap.clone()).await;
    assert_eq!(st, StatusCode::OK, "{w}");
    let (st, u) = t
        .vault_post(
            "kv-ap",
            &format!("keys/k2048/{V1}/unwrapkey?api-version=7.5"),
            &vt,
            json!({"alg": "RSA-OAEP", "value": w["value"]}),
        )
        .await;
    assert_eq!((st, u["value"].clone()), (StatusCode::OK, json!("c2VjcmV0")));
    let (st, b) = t
        .vault_post(
            "kv-ap",
            &format!("keys/knounwrap/{V1}/unwrapkey?api-version=7.5"),
            &vt,
            json!({"alg": "RSA-OAEP", "value": w["value"]}),
        )
        .await;
    assert_eq!((st, b["error"]["innererror"]["code"].clone()), (StatusCode::FORBIDDEN, json!("KeyOperationForbidden")));

    // a cache whose key version lacks wrapKey or unwrapKey never gets its key, whatever access it is given
    for (name, key) in [("ops1", "ksign"), ("ops2", "knounwrap")] {
        let r = t.call(Method::PUT, &cache_path(name), Some(cache_body(system(), "kv-ap", key, SUB, "rg"))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let principal = r.body["identity"]["principalId"].as_str().unwrap().to_string();
        assert_eq!(t.grant("kv-ap", &principal).await.status(), StatusCode::OK);
    }
    t.sim.advance(Duration::from_secs(30 * 60));
    for name in ["ops1", "ops2"] {
        assert_eq!(health(&t.get_cache(name).await), ("Creating".into(), "WaitingForKey".into()), "{name}");
    }
    t.sim.advance(Duration::from_secs(61 * 60));
    for name in ["ops1", "ops2"] {
        assert_eq!(health(&t.get_cache(name).await), ("Failed".into(), "Down".into()), "{name}");
    }
}

#[tokio::test]
async fn rotation_to_latest_follows_terraforms_documented_behaviour() {
    let t = start_with(SimConfig {
        grant_propagation: Duration::ZERO,
        auto_rotation_delay: Duration::from_secs(10 * 60),
        ..SimConfig::default()
    })
    .await;
    // create with rotation on: not applied, the cache reports false
    let mut body = cache_body(system(), "kv-ap", "k2048", SUB, "rg");
    body["properties"]["encryptionSettings"]["rotationToLatestKeyVersionEnabled"] = json!(true);
    let r = t.call(Method::PUT, &cache_path("rot"), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(rotation(&r), json!(false));
    let principal = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    t.grant("kv-ap", &principal).await;
    t.sim.advance(Duration::from_secs(10 * 60));
    let g = t.get_cache("rot").await;
    assert_eq!((health(&g).1, rotation(&g)), ("Healthy".to_string(), json!(false)));

    // a later update with the same key URL turns it on
    let patch = |v: &str, rot: bool| json!({"properties": {"encryptionSettings": {"keyEncryptionKey": key_ref("kv-ap", "k2048", Some(v)), "rotationToLatestKeyVersionEnabled": rot}}});
    let r = t.call(Method::PATCH, &cache_path("rot"), Some(patch(V1, true))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(rotation(&t.get_cache("rot").await), json!(true));

    // new versions appear: the newest enabled one is used after the configured delay, by the cache itself
    t.sim.add_key_version("kv-ap", "k2048", &serde_yaml_ng::from_str(&format!("{{version: {V2}}}")).unwrap()).unwrap();
    t.sim
        .add_key_version(
            "kv-ap",
            "k2048",
            &serde_yaml_ng::from_str(&format!("{{version: {V3}, enabled: false}}")).unwrap(),
        )
        .unwrap();
    t.sim.advance(Duration::from_secs(9 * 60));
    assert!(key_url_of(&t.get_cache("rot").await).ends_with(V1));
    t.sim.advance(Duration::from_secs(60));
    let g = t.get_cache("rot").await;
    assert_eq!(key_url_of(&g), format!("https://kv-ap.vault.azure.net/keys/k2048/{V2}"), "newest enabled version");
    assert_eq!(rotation(&g), json!(true));

    // changing the key URL resets it to false, even when the same request says true
    t.sim.advance(Duration::from_secs(2 * 60));
    let r = t.call(Method::PATCH, &cache_path("rot"), Some(patch(V1, true))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let g = t.get_cache("rot").await;
    assert_eq!((key_url_of(&g).ends_with(V1), rotation(&g)), (true, json!(false)));
    t.sim.advance(Duration::from_secs(60 * 60));
    assert!(key_url_of(&t.get_cache("rot").await).ends_with(V1), "rotation is off: no move");
    // an update that only sends the flag turns it on again; the version that appeared long ago is taken after the
    // delay counted from then
    t.call(
        Method::PATCH,
        &cache_path("rot"),
        Some(json!({"properties": {"encryptionSettings": {"rotationToLatestKeyVersionEnabled": true}}})),
    )
    .await;
    t.sim.advance(Duration::from_secs(10 * 60));
    assert!(key_url_of(&t.get_cache("rot").await).ends_with(V2));
    assert_eq!(SimConfig::default().auto_rotation_delay, Duration::from_secs(60 * 60), "default: within an hour");
}

#[tokio::test]
async fn overlapping_key_vault_writes_get_conflict_error() {
    let in_flight = Duration::from_millis(400);
    let t = start_with(SimConfig { vault_write_in_flight: in_flight, ..SimConfig::default() }).await;
    let vp = format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap"));
    let ap = |kind: &str| format!("{}/accessPolicies/{kind}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap"));
    let policy = json!({"properties": {"accessPolicies": [{"tenantId": TENANT, "objectId": UAI_PRINCIPAL, "permissions": {"keys": ["get"]}}]}});
    let later = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    let started = std::time::Instant::now();
    let (first, second, read, other) = tokio::join!(
        t.call(Method::PATCH, &vp, Some(json!({"tags": {"a": "b"}}))),
        async {
            later(100).await;
            t.call(Method::PUT, &ap("add"), Some(policy.clone())).await
        },
        async {
            later(100).await;
            let s = std::time::Instant::now();
            let r = t.call(Method::GET, &vp, None).await;
            (r, s.elapsed())
        },
        async {
            later(100).await;
            t.call(
                Method::PATCH,
                &format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-rbac")),
                Some(json!({"tags": {"x": "y"}})),
            )
            .await
        },
    );
    assert_eq!(first.status, StatusCode::OK);
    assert!(started.elapsed() >= in_flight, "a write answers when it is no longer in flight");
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(
        second.body,
        json!({"error": {"code": "ConflictError", "message": "A conflict occurred that prevented the operation from completing. The operation failed because the Key Vault 'kv-ap' changed from the point the operation began. This can happen if parallel operations are being performed on the Key Vault. To prevent this error, serialize the operations so that only one operation is performed on the Key Vault at a time. Follow this link for more information: https://go.microsoft.com/fwlink/?linkid=2147741"}})
    );
    assert_eq!(read.0.status, StatusCode::OK, "reads are not writes");
    assert!(read.1 < in_flight, "no lock is held while a write is in flight: {:?}", read.1);
    assert_eq!(other.status, StatusCode::OK, "another vault is another vault");
    // the losing write changed nothing
    let v = t.call(Method::GET, &vp, None).await;
    assert!(v.body["properties"]["accessPolicies"].as_array().unwrap().iter().all(|p| p["objectId"] != UAI_PRINCIPAL));

    // role assignments at or below the vault are vault writes too; serialized writes never conflict
    let ra = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/7a3c1c8e-0000-4000-8000-000000000001?api-version=2022-04-01",
        vault_id(SUB, "rg", "kv-rbac")
    );
    let ra_body = json!({"properties": {"roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_SEU}"), "principalId": UAI_PRINCIPAL, "principalType": "ServicePrincipal"}});
    let (a, b) = tokio::join!(t.call(Method::PUT, &ra, Some(ra_body.clone())), async {
        later(100).await;
        t.call(Method::PATCH, &format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-rbac")), Some(json!({})))
            .await
    });
    assert_eq!((a.status, b.status), (StatusCode::CREATED, StatusCode::CONFLICT));
    for body in [Some(policy.clone()), Some(policy.clone())] {
        assert_eq!(t.call(Method::PUT, &ap("add"), body).await.status, StatusCode::OK, "one after the other");
    }
    assert_eq!(t.call(Method::DELETE, &ra, None).await.status, StatusCode::OK);

    // zero disables it
    let t = start_with(SimConfig { vault_write_in_flight: Duration::ZERO, ..SimConfig::default() }).await;
    let (a, b) = tokio::join!(t.call(Method::PATCH, &vp, Some(json!({}))), t.call(Method::PATCH, &vp, Some(json!({}))));
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(SimConfig::default().vault_write_in_flight, Duration::from_millis(20));
}

#[tokio::test]
async fn grants_take_effect_for_the_cache_after_propagation() {
    let t = start_with(SimConfig::default()).await;
    assert_eq!(SimConfig::default().grant_propagation, Duration::from_secs(5 * 60));
    // access policy vault
    let r = t.put_system_cache("p1", "kv-ap").await;
    let p1 = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    let before = t.sim.now();
    t.add_access_policy("kv-ap", "2025-05-01", &p1, &["get", "wrapKey", "unwrapKey"]).await;
    let after = t.sim.now();
    let times = t.sim.cache_times().into_iter().find(|c| c.name == "p1").unwrap();
    assert_eq!(times.waiting_for_key_at, Some(times.created_at), "waiting for the key from its creation");
    let granted = times.key_granted_at.expect("the grant request's time, before it propagated");
    assert!(before <= granted && granted <= after, "{before} <= {granted} <= {after}");
    assert_eq!((times.ready_at, times.failed_at), (None, None));
    let v = t.call(Method::GET, &format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap")), None).await;
    assert!(
        v.body["properties"]["accessPolicies"].as_array().unwrap().iter().any(|p| p["objectId"] == p1.as_str()),
        "ARM shows it at once"
    );
    // RBAC vault
    let r = t.put_system_cache("p2", "kv-rbac").await;
    let p2 = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    let ra = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/8a3c1c8e-0000-4000-8000-000000000001?api-version=2022-04-01",
        vault_id(SUB, "rg", "kv-rbac")
    );
    let body = json!({"properties": {"roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_SEU}"), "principalId": p2, "principalType": "ServicePrincipal"}});
    assert_eq!(t.call(Method::PUT, &ra, Some(body)).await.status, StatusCode::CREATED);
    assert_eq!(t.call(Method::GET, &ra, None).await.status, StatusCode::OK, "ARM shows it at once");

    t.sim.advance(Duration::from_secs(4 * 60 + 50));
    for c in ["p1", "p2"] {
        assert_eq!(health(&t.get_cache(c).await).1, "WaitingForKey", "{c}: not yet propagated");
    }
    t.sim.advance(Duration::from_secs(15));
    for c in ["p1", "p2"] {
        assert_eq!(health(&t.get_cache(c).await).1, "Transitioning", "{c}: propagated");
    }
    // ready counts from when the grant took effect, not from when it was seen
    t.sim.advance(Duration::from_secs(5 * 60));
    for c in ["p1", "p2"] {
        assert_eq!(health(&t.get_cache(c).await), ("Succeeded".into(), "Healthy".into()), "{c}");
    }
}

/// The scopes of every role assignment in a paged list answer, sorted, and how many pages it took.
async fn collect_pages(t: &T, first: Resp) -> (Vec<String>, usize) {
    let mut scopes = vec![];
    let mut pages = 0;
    let mut r = first;
    loop {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        pages += 1;
        let items = r.body["value"].as_array().unwrap();
        assert!(items.len() <= 2, "default page size");
        scopes.extend(items.iter().map(|i| i["properties"]["scope"].as_str().unwrap().to_string()));
        let Some(next) = r.body["nextLink"].as_str().map(str::to_string) else { break };
        assert!(
            next.starts_with(&t.sim.base_url().to_string()) && next.contains("$skipToken=") && next.contains("filter"),
            "{next}"
        );
        let g = t.get_url(&next).await;
        let status = g.status();
        r = Resp { status, headers: g.headers().clone(), body: g.json().await.unwrap() };
    }
    scopes.sort();
    (scopes, pages)
}

#[tokio::test]
async fn role_assignments_list_at_above_and_below_with_management_groups_and_paging() {
    let t = start().await;
    let p = "dddddddd-0000-4000-8000-0000000000d1";
    let other = "eeeeeeee-0000-4000-8000-0000000000e1";
    let vault = vault_id(SUB, "rg", "kv-rbac");
    let mg = |n: &str| format!("/providers/Microsoft.Management/managementGroups/{n}");
    let seed = format!(
        r#"
managementGroups:
  - {{name: mg-root}}
  - {{name: mg-child, parent: mg-root, subscriptions: [{SUB}]}}
  - {{name: mg-other, subscriptions: [{OTHER_SUB}]}}
roleAssignments:
  - {{scope: "{mg_root}", roleDefinitionId: {CRYPTO_SEU}, principalId: {p}}}
  - {{scope: "{mg_other}", roleDefinitionId: {CRYPTO_SEU}, principalId: {p}}}
  - {{scope: /subscriptions/{SUB}, roleDefinitionId: {CRYPTO_SEU}, principalId: {p}}}
  - {{scope: /subscriptions/{SUB}/resourceGroups/rg, roleDefinitionId: {CRYPTO_SEU}, principalId: {p}}}
  - {{scope: /subscriptions/{SUB}/resourceGroups/rg-elsewhere, roleDefinitionId: {CRYPTO_SEU}, principalId: {p}}}
  - {{scope: "{vault}", roleDefinitionId: {CRYPTO_SEU}, principalId: {p}}}
  - {{scope: "{vault}/keys/k2048", roleDefinitionId: {CRYPTO_SEU}, principalId: {p}}}
  - {{scope: "{vault}", roleDefinitionId: {CRYPTO_SEU}, principalId: {other}}}
"#,
        mg_root = mg("mg-root"),
        mg_other = mg("mg-other"),
    );
    t.sim.seed(&Seed::from_yaml(&seed).unwrap()).unwrap();

    let list = |filter: &str| {
        format!("{vault}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter={filter}")
    };
    let (scopes, pages) =
        collect_pages(&t, t.call(Method::GET, &list(&format!("principalId%20eq%20'{p}'")), None).await).await;
    let mut want = vec![
        mg("mg-root"),
        format!("/subscriptions/{SUB}"),
        format!("/subscriptions/{SUB}/resourceGroups/rg"),
        vault.clone(),
        format!("{vault}/keys/k2048"),
    ];
    want.sort();
    assert_eq!(scopes, want, "at, above (management group included) and below; nothing beside");
    assert_eq!(pages, 3, "clients must follow nextLink");
    // atScope(): at or above only
    let (scopes, _) = collect_pages(&t, t.call(Method::GET, &list("atScope()"), None).await).await;
    assert!(!scopes.contains(&format!("{vault}/keys/k2048")));
    assert!(scopes.contains(&mg("mg-root")) && scopes.contains(&vault));
    // a page size of our own
    let t2 = start_with(SimConfig { role_assignment_page_size: 100, ..SimConfig::default() }).await;
    t2.sim.seed(&Seed::from_yaml(&seed).unwrap()).unwrap();
    let r = t2.call(Method::GET, &list(&format!("principalId%20eq%20'{p}'")), None).await;
    assert_eq!((r.body["value"].as_array().unwrap().len(), r.body.get("nextLink").is_none()), (5, true));
}

#[tokio::test]
async fn leniencies_are_gone() {
    let t = start().await;
    // version-less key URL: refused on create (even with rotation on) and on update
    let mut body = cache_body(system(), "kv-ap", "k2048", SUB, "rg");
    body["properties"]["encryptionSettings"] =
        json!({"keyEncryptionKey": key_ref("kv-ap", "k2048", None), "rotationToLatestKeyVersionEnabled": true});
    let r = t.call(Method::PUT, &cache_path("nover"), Some(body)).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "InvalidParameter"), "{}", r.body);
    assert_eq!(r.body["error"]["target"], "properties.encryptionSettings.keyEncryptionKey.keyUrl");
    assert_eq!(t.get_cache("nover").await.status, StatusCode::NOT_FOUND);

    // CMK without identity: created with a system-assigned identity
    let mut body = cache_body(system(), "kv-ap", "k2048", SUB, "rg");
    body.as_object_mut().unwrap().remove("identity");
    let r = t.call(Method::PUT, &cache_path("noid"), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["identity"]["type"], "SystemAssigned");
    assert!(r.body["identity"]["principalId"].is_string());
    assert_eq!(health(&r).1, "WaitingForKey");
    let r = t
        .call(
            Method::PATCH,
            &cache_path("noid"),
            Some(json!({"properties": {"encryptionSettings": {"keyEncryptionKey": key_ref("kv-ap", "k2048", None)}}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "InvalidParameter"), "PATCH too");

    // a vault without soft delete: the cache turns it on
    let vp = format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-nosd"));
    assert_eq!(t.call(Method::GET, &vp, None).await.body["properties"]["enableSoftDelete"], false);
    let r = t.put_system_cache("nosd", "kv-nosd").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(t.call(Method::GET, &vp, None).await.body["properties"]["enableSoftDelete"], true);

    // read-only SKUs with their one size
    for (i, (sku, size, ok)) in [
        ("Standard_L4_5G", 21623, true),
        ("Standard_L9G", 43246, true),
        ("Standard_L16G", 86491, true),
        ("Standard_L9G", 3072, false),
        ("Standard_2G", 21623, false),
    ]
    .into_iter()
    .enumerate()
    {
        let r = t.call(Method::PUT, &cache_path(&format!("sku{i}")), Some(plain_cache_body(sku, size))).await;
        assert_eq!(r.status.is_success(), ok, "{sku} {size}: {}", r.body);
    }

    // access-policy remove matches permission values case-sensitively (200 either way)
    let x = "ffffffff-0000-4000-8000-0000000000f1";
    t.add_access_policy("kv-ap", "2025-05-01", x, &["Get", "WrapKey"]).await;
    let rm = |keys: &[&str]| json!({"properties": {"accessPolicies": [{"tenantId": TENANT, "objectId": x, "permissions": {"keys": keys}}]}});
    let path = format!("{}/accessPolicies/remove?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap"));
    assert_eq!(t.call(Method::PUT, &path, Some(rm(&["get", "wrapkey"]))).await.status, StatusCode::OK);
    let keys_of = |v: &Value| {
        v["properties"]["accessPolicies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["objectId"] == x)
            .map(|p| p["permissions"]["keys"].clone())
    };
    assert_eq!(
        keys_of(&t.call(Method::GET, &vp.replace("kv-nosd", "kv-ap"), None).await.body),
        Some(json!(["Get", "WrapKey"]))
    );
    assert_eq!(t.call(Method::PUT, &path, Some(rm(&["Get", "WrapKey"]))).await.status, StatusCode::OK);
    assert_eq!(keys_of(&t.call(Method::GET, &vp.replace("kv-nosd", "kv-ap"), None).await.body), None);
}

#[tokio::test]
async fn every_third_create_is_accepted_without_a_body() {
    let t = start().await;
    for name in ["a1", "a2"] {
        let r = t.call(Method::PUT, &cache_path(name), Some(plain_cache_body("Standard_2G", 3072))).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = t.call(Method::PUT, &cache_path("a3"), Some(plain_cache_body("Standard_2G", 3072))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body, Value::Null, "no body");
    assert_eq!(r.header("retry-after"), Some("10"));
    assert!(r.header("azure-asyncoperation").is_none(), "the spec's 202 has Location and Retry-After only");
    let loc = r.header("location").expect("Location").to_string();
    assert!(loc.starts_with(&t.sim.base_url().to_string()) && loc.contains("monitor=true"), "{loc}");
    assert_eq!(t.get_url(&loc).await.status(), StatusCode::ACCEPTED);
    assert_eq!(health(&t.get_cache("a3").await).0, "Creating", "the cache exists");
    t.sim.advance(Duration::from_secs(10 * 60));
    let done = t.get_url(&loc).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.json::<Value>().await.unwrap()["name"], "a3");
    // a failed create does not count; the sixth successful one is 202 again
    assert_eq!(
        t.call(Method::PUT, &cache_path("bad"), Some(plain_cache_body("Standard_2G", 1))).await.status,
        StatusCode::BAD_REQUEST
    );
    let statuses: Vec<u16> = {
        let mut v = vec![];
        for name in ["a4", "a5", "a6"] {
            v.push(
                t.call(Method::PUT, &cache_path(name), Some(plain_cache_body("Standard_2G", 3072)))
                    .await
                    .status
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(statuses, [201, 201, 202]);
    // 0: always 201
    let t = start_with(SimConfig { create_accepted_every: 0, ..SimConfig::default() }).await;
    for name in ["b1", "b2", "b3"] {
        assert_eq!(
            t.call(Method::PUT, &cache_path(name), Some(plain_cache_body("Standard_2G", 3072))).await.status,
            StatusCode::CREATED
        );
    }
}

#[tokio::test]
async fn fault_rules_take_an_error_code_and_message() {
    let t = start().await;
    let add = t
        .admin(
            Method::POST,
            "faults",
            json!([{"route": "accessPolicies/add", "kind": "error", "status": 409, "code": "ConflictError", "count": 1},
                   {"route": "PATCH .*/vaults/kv-ap", "kind": "error", "status": 400, "code": "BadRequest", "message": "nope", "count": 1}]),
        )
        .await;
    assert_eq!(add.status(), StatusCode::OK);
    let r = t.add_access_policy("kv-ap", "2025-05-01", UAI_PRINCIPAL, &["get"]).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "ConflictError"));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("the Key Vault 'kv-ap' changed"), "{}", r.body);
    let r = t
        .call(Method::PATCH, &format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-ap")), Some(json!({})))
        .await;
    assert_eq!(r.body, json!({"error": {"code": "BadRequest", "message": "nope"}}));
}

#[tokio::test]
async fn admin_api_adds_key_versions() {
    let t = start().await;
    let r = t
        .admin(
            Method::POST,
            "keys",
            json!({"vaultName": "kv-ap", "keyName": "k2048", "version": V2, "keyOps": ["sign"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], V2);
    t.grant("kv-ap", OP_OID).await;
    let vt = token(&t.http, &t.sim, OP_CLIENT, OP_SECRET, "https://vault.azure.net/.default").await;
    let v: Value = t.vault_get("kv-ap", "keys/k2048?api-version=7.5", &vt).await.json().await.unwrap();
    assert!(v["key"]["kid"].as_str().unwrap().ends_with(V2), "the newest version");
    assert_eq!(v["key"]["key_ops"], json!(["sign"]));
    let again = t.admin(Method::POST, "keys", json!({"vaultName": "kv-ap", "keyName": "k2048", "version": V2})).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let nowhere = t.admin(Method::POST, "keys", json!({"vaultName": "nope", "keyName": "k"})).await;
    assert_eq!(nowhere.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn simulate_flags_for_the_new_knobs() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: hpcc_sim::SimulateArgs,
    }
    let d = Cli::parse_from(["x", "--env-file", "e"]).args;
    assert_eq!(
        (
            d.grant_propagation_seconds,
            d.auto_rotation_minutes,
            d.vault_write_in_flight_ms,
            d.create_accepted_every,
            d.role_assignment_page_size
        ),
        (300, 60, 20, 3, 2)
    );
    let a = Cli::parse_from([
        "x",
        "--env-file",
        "e",
        "--grant-propagation-seconds",
        "0",
        "--auto-rotation-minutes",
        "5",
        "--vault-write-in-flight-ms",
        "0",
        "--create-accepted-every",
        "0",
        "--role-assignment-page-size",
        "50",
    ])
    .args;
    assert_eq!(
        (
            a.grant_propagation_seconds,
            a.auto_rotation_minutes,
            a.vault_write_in_flight_ms,
            a.create_accepted_every,
            a.role_assignment_page_size
        ),
        (0, 5, 0, 0, 50)
    );
}

// ------------------------------------------------------------------------------------------ Azure Managed Lustre

const AML_API: &str = "2026-08-01";
const UAI2_PRINCIPAL: &str = "cccccccc-0000-4000-8000-0000000000c2";
const STORAGE_ACCOUNT_CONTRIBUTOR: &str = "17d1049b-9a84-46fb-8f53-869881c3d3ab";
const STORAGE_BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";

/// The scenario world plus: `uai1` may use `kv-ap`'s keys (seeded grant), `uai2` may use none, and two storage
/// accounts for blob integration, `amlblob` and `amlblob2`, without any role for the HPC Cache Resource Provider.
fn aml_seed() -> Seed {
    let mut seed = seed();
    let extra = Seed::from_yaml(&format!(
        r#"
identities:
  - {{subscriptionId: {SUB}, resourceGroup: rg, name: uai2, location: westus, principalId: {UAI2_PRINCIPAL}}}
grants:
  - {{vault: kv-ap, principalId: {UAI_PRINCIPAL}}}
storageAccounts:
  - {{subscriptionId: {SUB}, resourceGroup: rg, name: amlblob, location: westus}}
  - {{subscriptionId: {SUB}, resourceGroup: rg, name: amlblob2, location: westus}}
"#
    ))
    .expect("seed parses");
    seed.identities.extend(extra.identities);
    seed.grants.extend(extra.grants);
    seed.storage_accounts.extend(extra.storage_accounts);
    seed
}

async fn start_aml(cfg: SimConfig) -> T {
    let sim = Simulator::start(SimConfig { seed: Some(aml_seed()), ..cfg }).await.expect("sim starts");
    let http = client(&sim);
    let token = token(&http, &sim, OP_CLIENT, OP_SECRET, "https://management.azure.com/.default").await;
    T { sim, http, token }
}

fn aml_path(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/amlFilesystems/{name}?api-version={AML_API}"
    )
}

fn uai(name: &str) -> Value {
    json!({"type": "UserAssigned", "userAssignedIdentities": {
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"): {}
    }})
}

fn container(account: &str, c: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers/{c}"
    )
}

/// An AML file system body: SKU `AMLFS-Durable-Premium-250`, 8 TiB, a subnet and a maintenance window; add
/// identity, key and blob integration with [`with`].
fn aml_body() -> Value {
    json!({
        "location": "westus",
        "sku": {"name": "AMLFS-Durable-Premium-250"},
        "zones": ["1"],
        "properties": {
            "storageCapacityTiB": 8,
            "filesystemSubnet": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/amlfs"),
            "maintenanceWindow": {"dayOfWeek": "Friday", "timeOfDayUTC": "22:00"}
        }
    })
}

fn with(mut body: Value, pointer: &str, v: Value) -> Value {
    let (parent, leaf) = pointer.rsplit_once('/').unwrap();
    let p = if parent.is_empty() { &mut body } else { body.pointer_mut(parent).unwrap() };
    p[leaf] = v;
    body
}

fn aml_cmk_body(identity: &str, vault: &str, key: &str, version: &str) -> Value {
    let b = with(aml_body(), "/identity", uai(identity));
    with(
        b,
        "/properties/encryptionSettings",
        json!({"keyEncryptionKey": {
            "keyUrl": format!("https://{vault}.vault.azure.net/keys/{key}/{version}"),
            "sourceVault": {"id": vault_id(SUB, "rg", vault)}
        }}),
    )
}

fn aml_hsm_body(account: &str) -> Value {
    with(
        aml_body(),
        "/properties/hsm",
        json!({"settings": {"container": container(account, "data"), "loggingContainer": container(account, "logs"), "importPrefix": "/"}}),
    )
}

impl T {
    async fn put_aml(&self, name: &str, body: Value) -> Resp {
        self.call(Method::PUT, &aml_path(name), Some(body)).await
    }
    async fn get_aml(&self, name: &str) -> Resp {
        self.call(Method::GET, &aml_path(name), None).await
    }
    /// Give the HPC Cache Resource Provider `role` on storage account `account`, by ARM (propagation applies).
    async fn assign_rp_role(&self, account: &str, role: &str) -> Resp {
        let scope =
            format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{account}");
        let body = json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}"),
            "principalId": self.sim.hpc_cache_rp_object_id()
        }});
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
            uuid::Uuid::new_v4()
        );
        self.call(Method::PUT, &path, Some(body)).await
    }
}

#[tokio::test]
async fn amlfs_cmk_create_is_long_then_available_with_client_info() {
    let t = start_aml(SimConfig::default()).await;
    let r = t.put_aml("fs1", aml_cmk_body("uai1", "kv-ap", "k2048", V1)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(health(&r), ("Creating".into(), "Transitioning".into()));
    assert_eq!(r.body["type"], "Microsoft.StorageCache/amlFilesystem");
    assert_eq!(r.body["identity"]["type"], "UserAssigned");
    let uai_id = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uai1"
    );
    assert_eq!(r.body["identity"]["userAssignedIdentities"][&uai_id]["principalId"], UAI_PRINCIPAL);
    assert_eq!(
        r.body["properties"]["encryptionSettings"]["keyEncryptionKey"]["keyUrl"],
        format!("https://kv-ap.vault.azure.net/keys/k2048/{V1}")
    );
    assert_eq!(r.body["properties"]["throughputProvisionedMBps"], 2000, "8 TiB x 250 MB/s");
    assert_eq!(r.body["properties"]["storageCapacityTiB"], 8);
    assert_eq!(r.body["properties"]["maintenanceWindow"], json!({"dayOfWeek": "Friday", "timeOfDayUTC": "22:00"}));
    assert_eq!(r.body["zones"], json!(["1"]));
    assert!(r.body["properties"].get("clientInfo").is_none(), "no client info before the file system is available");
    let base = t.sim.base_url().to_string();
    let async_url = r.header("azure-asyncoperation").expect("Azure-AsyncOperation").to_string();
    let location = r.header("location").expect("Location").to_string();
    assert!(async_url.starts_with(&base) && async_url.contains("/ascOperations/"), "{async_url}");
    assert!(location.contains("monitor=true"), "{location}");
    assert_eq!(r.header("retry-after"), Some("10"));

    // creation is long: 20 simulated minutes by default
    t.sim.advance(Duration::from_secs(19 * 60));
    assert_eq!(health(&t.get_aml("fs1").await), ("Creating".into(), "Transitioning".into()));
    assert_eq!(poll_async(&t, &async_url).await["status"], "InProgress");
    assert_eq!(t.get_url(&location).await.status(), StatusCode::ACCEPTED);
    t.sim.advance(Duration::from_secs(60));
    let g = t.get_aml("fs1").await;
    assert_eq!(health(&g), ("Succeeded".into(), "Available".into()));
    assert_eq!(g.body["properties"]["health"]["statusDescription"], "amlFilesystem is ok.");
    let ci = &g.body["properties"]["clientInfo"];
    let mgs = ci["mgsAddress"].as_str().expect("mgsAddress").to_string();
    assert!(mgs.starts_with("10.") && mgs.ends_with(".4"), "{mgs}");
    assert_eq!(ci["mountCommand"], format!("mount -t lustre {mgs}@tcp:/lustrefs /lustre/lustrefs"));
    assert_eq!(ci["lustreVersion"], "2.15.0");
    assert!(ci["containerStorageInterface"]["storageClass"].is_string());
    let op = poll_async(&t, &async_url).await;
    assert_eq!(op["status"], "Succeeded");
    assert!(op["endTime"].is_string());
    let loc = t.get_url(&location).await;
    assert_eq!(loc.status(), StatusCode::OK);
    assert_eq!(loc.json::<Value>().await.unwrap()["name"], "fs1");
    let env = t.sim.env();
    let rp = env.iter().find(|(k, _)| k == "HPCC_STORAGE_CACHE_PROVIDER_PRINCIPAL_ID").map(|(_, v)| v.as_str());
    assert_eq!(rp, Some(hpcc_sim::state::HPC_CACHE_RP_OBJECT_ID), "the env file names the resource provider");
    let state: Value = t.http.get(t.sim.admin_url().join("state").unwrap()).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["amlFilesystems"][0]["health"], "Available", "{}", state["amlFilesystems"]);

    // lists, per resource group and subscription
    for path in [
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/amlFilesystems?api-version={AML_API}"
        ),
        format!("/subscriptions/{SUB}/providers/Microsoft.StorageCache/amlFilesystems?api-version={AML_API}"),
    ] {
        let l = t.call(Method::GET, &path, None).await;
        assert_eq!(l.status, StatusCode::OK, "{}", l.body);
        assert_eq!(l.body["value"].as_array().unwrap().len(), 1);
    }
    // the request log has the ARM calls, with their callers
    let log = t.sim.requests();
    let put = log.iter().find(|x| x.method == "PUT" && x.path.contains("/amlFilesystems/fs1")).expect("PUT logged");
    assert_eq!((put.status, put.principal.as_deref()), (201, Some(OP_OID)));
}

#[tokio::test]
async fn amlfs_create_is_refused_when_the_identity_cannot_use_the_key() {
    let t = start_aml(SimConfig::default()).await;
    let r = t.put_aml("fs1", aml_cmk_body("uai2", "kv-ap", "k2048", V1)).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "KeyVaultAccessDenied"), "{}", r.body);
    assert_eq!(t.get_aml("fs1").await.status, StatusCode::NOT_FOUND, "nothing was created");
    // a grant counts only once it has propagated (5 simulated minutes by default)
    assert_eq!(t.grant("kv-ap", UAI2_PRINCIPAL).await.status(), StatusCode::OK);
    let r = t.put_aml("fs1", aml_cmk_body("uai2", "kv-ap", "k2048", V1)).await;
    assert_eq!(r.code(), "KeyVaultAccessDenied", "not propagated yet");
    t.sim.advance(Duration::from_secs(5 * 60));
    let r = t.put_aml("fs1", aml_cmk_body("uai2", "kv-ap", "k2048", V1)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // on an RBAC vault the identity needs a key role too
    let r = t.put_aml("fs2", aml_cmk_body("uai1", "kv-rbac", "k2048", V1)).await;
    assert_eq!(r.code(), "KeyVaultAccessDenied");
    // a key version without wrapKey/unwrapKey cannot be used either
    let r = t.put_aml("fs2", aml_cmk_body("uai1", "kv-ap", "ksign", V1)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // identity rules: user-assigned only, and required for a customer-managed key
    let no_identity = with(aml_cmk_body("uai1", "kv-ap", "k2048", V1), "/identity", Value::Null);
    let r = t.put_aml("fs2", no_identity).await;
    assert_eq!((r.code(), r.body["error"]["target"].as_str()), ("InvalidParameter", Some("identity")));
    let none = with(aml_cmk_body("uai1", "kv-ap", "k2048", V1), "/identity", json!({"type": "None"}));
    assert_eq!(t.put_aml("fs2", none).await.code(), "InvalidParameter");
    let system = with(aml_body(), "/identity", json!({"type": "SystemAssigned"}));
    let r = t.put_aml("fs2", system).await;
    assert_eq!((r.code(), r.body["error"]["target"].as_str()), ("InvalidParameter", Some("identity.type")));
    let r = t.put_aml("fs2", with(aml_body(), "/identity", uai("nope"))).await;
    assert_eq!(r.code(), "FailedIdentityOperation");

    // the cache's vault and key rules
    for (vault, key, version, code) in [
        ("kv-nopp", "k2048", V1, "KeyVaultPurgeProtectionNotEnabled"),
        ("kv-east", "k2048", V1, "KeyVaultLocationMismatch"),
        ("kv-other", "k2048", V1, "KeyVaultSubscriptionMismatch"),
        ("kv-ap", "k4096", V1, "InvalidKeySize"),
        ("kv-ap", "kdis", V1, "KeyDisabled"),
        ("kv-ap", "k2048", V2, "KeyVersionNotFound"),
    ] {
        let mut body = aml_cmk_body("uai1", vault, key, version);
        if vault == "kv-other" {
            body["properties"]["encryptionSettings"]["keyEncryptionKey"]["sourceVault"]["id"] =
                json!(vault_id(OTHER_SUB, "rg2", vault));
        }
        let r = t.put_aml("fs2", body).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, code), "{vault}/{key}: {}", r.body);
    }
    let versionless = with(
        aml_cmk_body("uai1", "kv-ap", "k2048", V1),
        "/properties/encryptionSettings/keyEncryptionKey/keyUrl",
        json!("https://kv-ap.vault.azure.net/keys/k2048"),
    );
    assert_eq!(t.put_aml("fs2", versionless).await.code(), "InvalidParameter");
    // soft delete is turned on by the service, as for caches
    let r = t.put_aml("fs3", aml_cmk_body("uai1", "kv-nosd", "k2048", V1)).await;
    assert_eq!(r.code(), "KeyVaultAccessDenied", "uai1 has no access to kv-nosd");
    assert_eq!(t.grant("kv-nosd", UAI_PRINCIPAL).await.status(), StatusCode::OK);
    t.sim.advance(Duration::from_secs(5 * 60));
    assert_eq!(t.put_aml("fs3", aml_cmk_body("uai1", "kv-nosd", "k2048", V1)).await.status, StatusCode::CREATED);
    let v = t.call(Method::GET, &format!("{}?api-version=2025-05-01", vault_id(SUB, "rg", "kv-nosd")), None).await;
    assert_eq!(v.body["properties"]["enableSoftDelete"], true);
}

#[tokio::test]
async fn amlfs_sku_capacity_and_required_settings_are_checked_at_create() {
    let t = start_aml(SimConfig::default()).await;
    let refused = |r: &Resp, target: &str| {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.body["error"]["target"], target, "{}", r.body);
    };
    let sku = |s: &str, tib: f64| {
        let b = with(aml_body(), "/sku", json!({"name": s}));
        with(b, "/properties/storageCapacityTiB", json!(tib))
    };
    refused(&t.put_aml("fs", sku("AMLFS-Durable-Premium-1000", 8.0)).await, "sku.name");
    refused(&t.put_aml("fs", sku("AMLFS-Durable-Premium-250", 4.0)).await, "properties.storageCapacityTiB");
    refused(&t.put_aml("fs", sku("AMLFS-Durable-Premium-250", 12.0)).await, "properties.storageCapacityTiB");
    refused(&t.put_aml("fs", sku("AMLFS-Durable-Premium-40", 16.0)).await, "properties.storageCapacityTiB");
    refused(&t.put_aml("fs", sku("AMLFS-Durable-Premium-125", 24.0)).await, "properties.storageCapacityTiB");
    refused(
        &t.put_aml("fs", with(aml_body(), "/properties/storageCapacityTiB", Value::Null)).await,
        "properties.storageCapacityTiB",
    );
    refused(
        &t.put_aml("fs", with(aml_body(), "/properties/maintenanceWindow", Value::Null)).await,
        "properties.maintenanceWindow",
    );
    refused(
        &t.put_aml("fs", with(aml_body(), "/properties/maintenanceWindow/timeOfDayUTC", json!("25:00"))).await,
        "properties.maintenanceWindow.timeOfDayUTC",
    );
    refused(
        &t.put_aml("fs", with(aml_body(), "/properties/maintenanceWindow/dayOfWeek", json!("Someday"))).await,
        "properties.maintenanceWindow.dayOfWeek",
    );
    refused(
        &t.put_aml("fs", with(aml_body(), "/properties/filesystemSubnet", json!("subnet1"))).await,
        "properties.filesystemSubnet",
    );
    let r = t.put_aml("fs", with(aml_body(), "/location", Value::Null)).await;
    assert_eq!(r.code(), "LocationRequired");
    let r = t.put_aml("-fs", aml_body()).await;
    assert_eq!(r.code(), "InvalidResourceName");
    // every SKU at its minimum (the 40 MB/s one in 48 TiB steps)
    for (i, (s, tib)) in [
        ("AMLFS-Durable-Premium-40", 96.0),
        ("AMLFS-Durable-Premium-125", 16.0),
        ("AMLFS-Durable-Premium-250", 8.0),
        ("AMLFS-Durable-Premium-500", 4.0),
    ]
    .into_iter()
    .enumerate()
    {
        let r = t.put_aml(&format!("ok{i}"), sku(s, tib)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{s} {tib}: {}", r.body);
    }
    // api-versions are amlFilesystems' own: 2021-03-01 serves caches but not AML file systems
    let p = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/amlFilesystems/ok0");
    let r = t.call(Method::GET, &format!("{p}?api-version=2021-03-01"), None).await;
    assert_eq!(r.code(), "NoRegisteredProviderFound");
    for v in ["2023-05-01", "2024-03-01", "2024-07-01", "2025-07-01", "2026-01-01"] {
        assert_eq!(t.call(Method::GET, &format!("{p}?api-version={v}"), None).await.status, StatusCode::OK, "{v}");
    }
    assert_eq!(t.call(Method::GET, &p, None).await.code(), "MissingApiVersionParameter");
}

#[tokio::test]
async fn amlfs_blob_integration_needs_the_resource_provider_roles_before_create() {
    let t = start_aml(SimConfig::default()).await;
    // without the roles the create is accepted, then fails ("Validation performed before the file system is
    // created can't detect container access permission problems")
    let r = t.put_aml("nohsm", aml_hsm_body("amlblob")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["properties"]["hsm"]["settings"]["container"], container("amlblob", "data"));
    let async_url = r.header("azure-asyncoperation").unwrap().to_string();
    let location = r.header("location").unwrap().to_string();
    t.sim.advance(Duration::from_secs(5 * 60));
    let g = t.get_aml("nohsm").await;
    assert_eq!(health(&g), ("Failed".into(), "Unavailable".into()));
    assert_eq!(g.body["properties"]["health"]["statusCode"], "BlobIntegrationAccessDenied");
    let op = poll_async(&t, &async_url).await;
    assert_eq!(
        (op["status"].as_str(), op["error"]["code"].as_str()),
        (Some("Failed"), Some("BlobIntegrationAccessDenied"))
    );
    let loc = t.get_url(&location).await;
    assert_eq!(loc.status(), StatusCode::BAD_REQUEST);

    // one role is not enough; both, propagated, are
    assert_eq!(t.assign_rp_role("amlblob", STORAGE_BLOB_DATA_CONTRIBUTOR).await.status, StatusCode::CREATED);
    t.sim.advance(Duration::from_secs(5 * 60));
    t.put_aml("onerole", aml_hsm_body("amlblob")).await;
    assert_eq!(t.assign_rp_role("amlblob", STORAGE_ACCOUNT_CONTRIBUTOR).await.status, StatusCode::CREATED);
    let r = t.put_aml("early", aml_hsm_body("amlblob")).await;
    assert_eq!(r.status, StatusCode::CREATED, "accepted even though the grant has not propagated");
    t.sim.advance(Duration::from_secs(5 * 60));
    let r = t.put_aml("fs", aml_hsm_body("amlblob")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    t.sim.advance(Duration::from_secs(20 * 60));
    assert_eq!(health(&t.get_aml("onerole").await).0, "Failed");
    assert_eq!(health(&t.get_aml("early").await).0, "Failed", "roles must have propagated when the create arrives");
    assert_eq!(health(&t.get_aml("fs").await), ("Succeeded".into(), "Available".into()));

    // a storage account that does not exist
    t.put_aml("nowhere", aml_hsm_body("nosuchaccount")).await;
    t.sim.advance(Duration::from_secs(5 * 60));
    assert_eq!(t.get_aml("nowhere").await.body["properties"]["health"]["statusCode"], "StorageAccountNotFound");
    // containers: ids, one account, two containers
    let same =
        with(aml_hsm_body("amlblob"), "/properties/hsm/settings/loggingContainer", json!(container("amlblob", "data")));
    assert_eq!(t.put_aml("bad", same).await.code(), "InvalidParameter");
    let other = with(
        aml_hsm_body("amlblob"),
        "/properties/hsm/settings/loggingContainer",
        json!(container("amlblob2", "logs")),
    );
    assert_eq!(t.put_aml("bad", other).await.code(), "InvalidParameter");
    let not_a_container =
        with(aml_hsm_body("amlblob"), "/properties/hsm/settings/container", json!("/subscriptions/x"));
    assert_eq!(t.put_aml("bad", not_a_container).await.code(), "InvalidParameter");
    let missing = with(aml_hsm_body("amlblob"), "/properties/hsm/settings/loggingContainer", Value::Null);
    assert_eq!(t.put_aml("bad", missing).await.code(), "InvalidParameter");
}

#[tokio::test]
async fn amlfs_key_changes_by_patch_and_create_only_settings_stay() {
    let t = start_aml(SimConfig { grant_propagation: Duration::ZERO, ..SimConfig::default() }).await;
    assert_eq!(t.put_aml("fs1", aml_cmk_body("uai1", "kv-ap", "k2048", V1)).await.status, StatusCode::CREATED);
    assert_eq!(t.put_aml("plain", aml_body()).await.status, StatusCode::CREATED);
    t.sim.advance(Duration::from_secs(20 * 60));
    let v2 = t
        .sim
        .add_key_version(
            "kv-ap",
            "k2048",
            &hpcc_sim::seed::SeedKeyVersion { version: Some(V2.into()), ..Default::default() },
        )
        .unwrap();
    let patch = |version: &str, vault: &str| {
        json!({"properties": {"encryptionSettings": {"keyEncryptionKey": {
            "keyUrl": format!("https://{vault}.vault.azure.net/keys/k2048/{version}"),
            "sourceVault": {"id": vault_id(SUB, "rg", vault)}
        }}}})
    };
    let r = t.call(Method::PATCH, &aml_path("fs1"), Some(patch(&v2, "kv-ap"))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let async_url = r.header("azure-asyncoperation").expect("Azure-AsyncOperation").to_string();
    assert!(r.header("location").is_some_and(|l| l.contains("monitor=true")));
    let g = t.get_aml("fs1").await;
    assert_eq!(health(&g), ("Updating".into(), "Available".into()));
    assert_eq!(
        g.body["properties"]["encryptionSettings"]["keyEncryptionKey"]["keyUrl"],
        format!("https://kv-ap.vault.azure.net/keys/k2048/{V2}")
    );
    t.sim.advance(Duration::from_secs(60));
    assert_eq!(health(&t.get_aml("fs1").await).0, "Succeeded");
    assert_eq!(poll_async(&t, &async_url).await["status"], "Succeeded");
    // a key the identity cannot use is refused
    let r = t.call(Method::PATCH, &aml_path("fs1"), Some(patch(V1, "kv-rbac"))).await;
    assert_eq!(r.code(), "KeyVaultAccessDenied", "{}", r.body);
    // customer-managed <-> Microsoft-managed cannot be switched
    let r = t.call(Method::PATCH, &aml_path("fs1"), Some(json!({"properties": {"encryptionSettings": {}}}))).await;
    assert_eq!(r.code(), "PropertyChangeNotAllowed");
    let r = t.call(Method::PATCH, &aml_path("plain"), Some(patch(V1, "kv-ap"))).await;
    assert_eq!(r.code(), "PropertyChangeNotAllowed");
    // maintenance window, root squash and tags can change
    let r = t
        .call(
            Method::PATCH,
            &aml_path("plain"),
            Some(json!({"tags": {"team": "hpc"}, "properties": {"maintenanceWindow": {"dayOfWeek": "Sunday", "timeOfDayUTC": "03:30"},
                "rootSquashSettings": {"mode": "RootOnly", "noSquashNidLists": "10.0.0.4@tcp", "squashUID": 99, "squashGID": 99}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let g = t.get_aml("plain").await;
    assert_eq!(g.body["properties"]["maintenanceWindow"], json!({"dayOfWeek": "Sunday", "timeOfDayUTC": "03:30"}));
    assert_eq!(g.body["properties"]["rootSquashSettings"]["mode"], "RootOnly");
    assert_eq!(g.body["tags"]["team"], "hpc");
    // PUT: create-only settings and the identity cannot change; the key cannot be dropped
    let current = aml_cmk_body("uai1", "kv-ap", "k2048", &v2);
    for (pointer, value, target) in [
        ("/sku", json!({"name": "AMLFS-Durable-Premium-500"}), "sku.name"),
        ("/properties/storageCapacityTiB", json!(16), "properties.storageCapacityTiB"),
        (
            "/properties/filesystemSubnet",
            json!(format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/other"
            )),
            "properties.filesystemSubnet",
        ),
        ("/zones", json!(["2"]), "zones"),
        ("/identity", uai("uai2"), "identity.userAssignedIdentities"),
        ("/properties/encryptionSettings", Value::Null, "properties.encryptionSettings"),
    ] {
        let r = t.put_aml("fs1", with(current.clone(), pointer, value)).await;
        assert_eq!(
            (r.code(), r.body["error"]["target"].as_str()),
            ("PropertyChangeNotAllowed", Some(target)),
            "{pointer}"
        );
    }
    let r = t.put_aml("fs1", with(current.clone(), "/location", json!("eastus"))).await;
    assert_eq!(r.code(), "InvalidResourceLocation");
    // an unchanged PUT is an update: 200 with the body and the operation headers
    let r = t.put_aml("fs1", current).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.header("azure-asyncoperation").is_some());
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
}

#[tokio::test]
async fn amlfs_delete_is_long_running_and_create_time_is_configurable() {
    let t = start_aml(SimConfig { aml_create_delay: Duration::from_secs(60), ..SimConfig::default() }).await;
    assert_eq!(t.put_aml("fs1", aml_body()).await.status, StatusCode::CREATED);
    t.sim.advance(Duration::from_secs(60));
    assert_eq!(health(&t.get_aml("fs1").await).0, "Succeeded", "aml_create_delay shortens the create");
    let r = t.call(Method::DELETE, &aml_path("fs1"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").expect("Location").to_string();
    assert!(location.contains("monitor=true"));
    assert!(r.header("azure-asyncoperation").is_some());
    assert_eq!(health(&t.get_aml("fs1").await), ("Deleting".into(), "Transitioning".into()));
    assert_eq!(t.get_url(&location).await.status(), StatusCode::ACCEPTED);
    let r = t.call(Method::PATCH, &aml_path("fs1"), Some(json!({"tags": {}}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "no updates while deleting");
    t.sim.advance(Duration::from_secs(2 * 60));
    assert_eq!(t.get_aml("fs1").await.code(), "ResourceNotFound");
    assert_eq!(t.get_url(&location).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(t.call(Method::DELETE, &aml_path("fs1"), None).await.status, StatusCode::NO_CONTENT);
    // deleting during creation cancels the create
    let r = t.put_aml("fs2", aml_body()).await;
    let async_url = r.header("azure-asyncoperation").unwrap().to_string();
    assert_eq!(t.call(Method::DELETE, &aml_path("fs2"), None).await.status, StatusCode::ACCEPTED);
    t.sim.advance(Duration::from_secs(2 * 60));
    assert_eq!(poll_async(&t, &async_url).await["status"], "Canceled");
}

#[tokio::test]
async fn amlfs_requests_get_faults_and_authorization_like_caches() {
    let t = start_aml(SimConfig::default()).await;
    let added = t
        .admin(
            Method::POST,
            "faults",
            json!({"route": "PUT .*/amlFilesystems/", "kind": "error", "status": 503, "count": 1}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    assert_eq!(t.put_aml("fs1", aml_body()).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(t.put_aml("fs1", aml_body()).await.status, StatusCode::CREATED);
    let log = t.sim.requests();
    let puts: Vec<u16> =
        log.iter().filter(|x| x.method == "PUT" && x.path.contains("amlFilesystems")).map(|x| x.status).collect();
    assert_eq!(puts, vec![503, 201]);
    let nobody = token(&t.http, &t.sim, NOBODY_CLIENT, "nobody", "https://management.azure.com/.default").await;
    let r = t.call_with(Some(&nobody), Method::GET, &aml_path("fs1"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("Microsoft.StorageCache/amlFilesystems/read"));
}

#[test]
fn simulate_flag_for_the_aml_create_time() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: hpcc_sim::SimulateArgs,
    }
    assert_eq!(Cli::parse_from(["x", "--env-file", "e"]).args.aml_create_minutes, 20);
    assert_eq!(Cli::parse_from(["x", "--env-file", "e", "--aml-create-minutes", "1"]).args.aml_create_minutes, 1);
}

#[tokio::test]
async fn cache_lists_are_paged_with_next_links() {
    let t = start_with(SimConfig { cache_page_size: 2, ..SimConfig::default() }).await;
    for name in ["p1", "p2", "p3"] {
        assert!(t.put_system_cache(name, "kv-ap").await.status.is_success());
    }
    let mut path =
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/caches?api-version={API}");
    let mut names = vec![];
    let mut pages = 0;
    loop {
        let r = t.call(Method::GET, &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        pages += 1;
        let value = r.body["value"].as_array().unwrap();
        assert!(value.len() <= 2, "at most a page");
        names.extend(value.iter().map(|c| c["name"].as_str().unwrap().to_string()));
        match r.body["nextLink"].as_str() {
            Some(next) => {
                let u = url::Url::parse(next).unwrap();
                assert_eq!(u.origin(), t.sim.base_url().origin(), "same origin");
                path = format!("{}?{}", u.path(), u.query().unwrap());
            }
            None => break,
        }
    }
    assert_eq!((pages, names), (2, vec!["p1".to_string(), "p2".into(), "p3".into()]));
}

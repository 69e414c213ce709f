//! The real Azure client (`hpcc_azure`) against the real simulator over HTTPS: azure_identity's
//! client-secret flow through our transport (test CA, loopback resolution), caches, vaults, access policies, role
//! assignments, identities, Key Vault keys with the 401 challenge, and throttling with injected faults.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hpcc_azure::models::{
    CacheEncryptionSettings, CacheIdentity, CacheProperties, CacheSku, KeyVaultKeyReference, SourceVault,
};
use hpcc_azure::{
    Azure, AzureConfig, AzureError, CMK_KEY_PERMISSIONS, Cache, CallObserver, DeleteOutcome,
    KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER, ResourceId, role_assignment_name,
};
use hpcc_sim::{SimConfig, Simulator};
use serde_json::{Value, json};

use hpcc_test_support::sim::{self, OP_OID, SUB, TENANT, UAI_PRINCIPAL, V1};

#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, Option<u16>)>>);

impl CallObserver for Recorder {
    fn observe(&self, operation: &'static str, status: Option<u16>, _elapsed: Duration) {
        self.0.lock().unwrap().push((operation, status));
    }
}

struct Env {
    sim: Simulator,
    az: Azure,
    rec: Arc<Recorder>,
    admin: reqwest::Client,
}

async fn start_with(cfg: SimConfig) -> Env {
    let sim = Simulator::start(SimConfig { seed: Some(sim::seed()), ..cfg }).await.expect("simulator starts");
    let vars = sim.env();
    let mut cfg = AzureConfig::from_vars(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .expect("config from the simulator's env");
    assert!(cfg.resolve_to_loopback, "tests must never leave the machine");
    assert!(cfg.ca_file.is_some(), "the simulator serves https with a test CA");
    cfg.retry_base_delay = Duration::from_millis(20);
    let rec = Arc::new(Recorder::default());
    let az = Azure::new(cfg, Some(rec.clone())).await.expect("client builds");
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    Env { sim, az, rec, admin }
}

async fn start() -> Env {
    start_with(SimConfig::default()).await
}

impl Env {
    fn count(&self, method: &str, path_contains: &str) -> usize {
        let needle = path_contains.to_ascii_lowercase();
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path.to_ascii_lowercase().contains(&needle))
            .count()
    }

    async fn state(&self) -> Value {
        let url = self.sim.admin_url().join("state").unwrap();
        self.admin.get(url).send().await.unwrap().json().await.unwrap()
    }

    async fn add_fault(&self, rule: Value) {
        let url = self.sim.admin_url().join("faults").unwrap();
        let r = self.admin.post(url).json(&json!({"rules": [rule]})).send().await.unwrap();
        assert!(r.status().is_success(), "fault rejected: {}", r.text().await.unwrap_or_default());
    }

    fn key_url(&self, vault: &str, key: &str) -> String {
        format!("{}keys/{key}/{V1}", self.sim.vault_uri(vault))
    }

    fn cmk_cache(&self, vault: &str) -> Cache {
        Cache {
            location: Some("westus".into()),
            identity: Some(CacheIdentity { r#type: "SystemAssigned".into(), ..Default::default() }),
            sku: Some(CacheSku { name: "Standard_2G".into() }),
            properties: CacheProperties {
                cache_size_gb: Some(3072),
                subnet: Some(format!(
                    "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/cache"
                )),
                encryption_settings: Some(CacheEncryptionSettings {
                    key_encryption_key: Some(KeyVaultKeyReference {
                        key_url: self.key_url(vault, "k2048"),
                        source_vault: SourceVault { id: ResourceId::vault(SUB, "rg", vault).to_string() },
                    }),
                    rotation_to_latest_key_version_enabled: Some(false),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

#[tokio::test]
async fn cache_lifecycle_with_access_policy_grant() {
    let env = start().await;
    let id = ResourceId::cache(SUB, "rg", "c1");
    assert!(env.az.get_cache(&id).await.unwrap().value.is_none());

    let created = env.az.put_cache(&id, &env.cmk_cache("kv-ap")).await.expect("create accepted");
    let body = created.value.as_ref().expect("the simulator's first create answers 201 with the cache");
    let principal = body.identity.as_ref().and_then(|i| i.principal_id.clone()).expect("system principal");
    assert!(created.date.is_some(), "Date header = Azure's clock");
    assert_eq!(env.count("PUT", "/caches/c1"), 1);

    // Without access the cache waits for its key.
    let seen = env.az.get_cache(&id).await.unwrap();
    let cache = seen.value.unwrap();
    assert_eq!(cache.health_state(), Some("WaitingForKey"));
    let created_at = cache.created_at().expect("systemData.createdAt");
    let azure_now = seen.date.expect("Date header");
    assert!(azure_now >= created_at.round(jiff::Unit::Second).unwrap() - jiff::SignedDuration::from_secs(1));

    let list = env.az.list_caches(SUB, Some("rg")).await.unwrap();
    assert_eq!(list.value.len(), 1);
    assert_eq!(env.az.list_caches(SUB, None).await.unwrap().value.len(), 1);

    // Grant through the access-policy API.
    let kv = ResourceId::vault(SUB, "rg", "kv-ap");
    env.az.add_access_policy(&kv, TENANT, &principal, &CMK_KEY_PERMISSIONS).await.unwrap();
    let vault = env.az.get_vault(&kv).await.unwrap().value.unwrap();
    assert!(vault.access_policy_grants(Some(TENANT), &principal, &CMK_KEY_PERMISSIONS));
    assert_eq!(env.count("PUT", "/accessPolicies/add"), 1);

    // Past the key-ready delay the cache is healthy.
    env.sim.advance(Duration::from_secs(15 * 60));
    let cache = env.az.get_cache(&id).await.unwrap().value.unwrap();
    assert_eq!(cache.provisioning_state(), Some("Succeeded"));
    assert_eq!(cache.health_state(), Some("Healthy"));

    // Key change by PATCH (non-blocking).
    env.az
        .patch_cache(
            &id,
            &json!({"properties": {"encryptionSettings": {"keyEncryptionKey": {
                "keyUrl": env.key_url("kv-ap", "k2048"),
                "sourceVault": {"id": kv.to_string()}}}}}),
        )
        .await
        .unwrap();

    // Delete: accepted, then gone.
    let first = env.az.delete_cache(&id).await.unwrap().value;
    assert!(matches!(first, DeleteOutcome::Accepted | DeleteOutcome::Gone));
    env.sim.advance(Duration::from_secs(30 * 60));
    for _ in 0..20 {
        if env.az.get_cache(&id).await.unwrap().value.is_none() {
            break;
        }
        env.sim.advance(Duration::from_secs(5 * 60));
    }
    assert!(env.az.get_cache(&id).await.unwrap().value.is_none());
    assert_eq!(env.az.delete_cache(&id).await.unwrap().value, DeleteOutcome::Gone);
    env.az.remove_access_policy(&kv, TENANT, &principal).await.unwrap();
    let vault = env.az.get_vault(&kv).await.unwrap().value.unwrap();
    assert!(!vault.access_policy_grants(Some(TENANT), &principal, &CMK_KEY_PERMISSIONS));

    // Metrics saw real operations and one token per audience.
    let ops = env.rec.0.lock().unwrap().clone();
    assert!(ops.contains(&("caches.put", Some(201))) || ops.contains(&("caches.put", Some(200))), "{ops:?}");
    assert!(ops.iter().filter(|(o, _)| *o == "token").count() <= 2, "{ops:?}");
}

#[tokio::test]
async fn vault_protection_is_enabled_and_never_disabled() {
    let env = start().await;
    let kv = ResourceId::vault(SUB, "rg", "kv-nopp");
    let before = env.az.get_vault(&kv).await.unwrap().value.unwrap();
    assert!(!before.is_protected());
    let after = env.az.enable_vault_protection(&kv).await.unwrap().value;
    assert!(after.is_protected());
    assert_eq!(env.count("PATCH", "/vaults/kv-nopp"), 1);
    // Again: still fine (idempotent).
    assert!(env.az.enable_vault_protection(&kv).await.unwrap().value.is_protected());
    assert!(env.az.get_vault(&ResourceId::vault(SUB, "rg", "missing")).await.unwrap().value.is_none());
}

#[tokio::test]
async fn role_assignment_put_twice_is_one_assignment() {
    let env = start().await;
    let kv = ResourceId::vault(SUB, "rg", "kv-rbac");
    env.az.put_role_assignment(&kv, UAI_PRINCIPAL, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap();
    env.az.put_role_assignment(&kv, UAI_PRINCIPAL, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap();
    assert_eq!(env.count("PUT", "/roleAssignments/"), 2);
    let name = role_assignment_name(&kv, UAI_PRINCIPAL, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).to_string();
    let state = env.state().await.to_string().to_ascii_lowercase();
    assert_eq!(state.matches(&name).count().min(1), 1, "assignment {name} exists");
    let principal_assignments = env.sim.requests().iter().filter(|r| r.path.contains(&name)).count();
    assert_eq!(principal_assignments, 2, "both PUTs targeted the same deterministic name");

    env.az.delete_role_assignment(&kv, UAI_PRINCIPAL, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap();
    env.az.delete_role_assignment(&kv, UAI_PRINCIPAL, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER).await.unwrap();
    let state = env.state().await.to_string().to_ascii_lowercase();
    assert!(!state.contains(&name), "assignment removed");
}

#[tokio::test]
async fn user_assigned_identity() {
    let env = start().await;
    let id = env
        .az
        .get_user_assigned_identity(&ResourceId::user_assigned_identity(SUB, "rg", "uai1"))
        .await
        .unwrap()
        .expect("seeded identity");
    assert_eq!(id.properties.principal_id.as_deref(), Some(UAI_PRINCIPAL));
    assert!(id.properties.client_id.is_some());
    assert!(
        env.az
            .get_user_assigned_identity(&ResourceId::user_assigned_identity(SUB, "rg", "nope"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn key_vault_keys_with_challenge() {
    let env = start().await;
    let vault = env.sim.vault_uri("kv-ap");
    // Like Azure, the vault refuses the operator until it may read keys.
    let err = env.az.get_key(&vault, "k2048", Some(V1)).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    let kv = ResourceId::vault(SUB, "rg", "kv-ap");
    env.az.add_access_policy(&kv, TENANT, OP_OID, &["get", "list"]).await.unwrap();
    let key = env.az.get_key(&vault, "k2048", Some(V1)).await.unwrap().expect("key exists");
    assert_eq!(key.rsa_bits(), Some(2048));
    assert_eq!(key.version(), Some(V1));
    let latest = env.az.get_key(&vault, "k4096", None).await.unwrap().unwrap();
    assert_eq!(latest.rsa_bits(), Some(4096));
    assert!(env.az.get_key(&vault, "nope", None).await.unwrap().is_none());
    let versions = env.az.list_key_versions(&vault, "k2048").await.unwrap().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].version(), Some(V1));
    // Exactly one unauthenticated challenge round trip for this vault host.
    let keys: Vec<_> = env.sim.requests().into_iter().filter(|r| r.path.starts_with("/keys")).collect();
    assert_eq!(keys.iter().filter(|r| r.status == 401).count(), 1, "{keys:?}");
    // A host outside the Key Vault DNS suffix never gets a request, let alone a token.
    let evil = url::Url::parse(&format!("https://evil.localhost:{}/", vault.port().unwrap())).unwrap();
    let before = env.sim.requests().len();
    assert!(matches!(env.az.get_key(&evil, "k2048", None).await.unwrap_err(), AzureError::Auth(_)));
    assert_eq!(env.sim.requests().len(), before);
}

#[tokio::test]
async fn injected_throttling_and_errors() {
    let env = start().await;
    let id = ResourceId::cache(SUB, "rg", "c1");
    // Two short 429s are waited out inside the call.
    env.add_fault(json!({"route": "GET /subscriptions", "kind": "throttle", "retryAfterSeconds": 1, "count": 2})).await;
    let start = std::time::Instant::now();
    assert!(env.az.get_cache(&id).await.unwrap().value.is_none());
    assert!(start.elapsed() >= Duration::from_secs(2));
    // A long Retry-After is handed back, not slept.
    env.add_fault(json!({"route": "GET /subscriptions", "kind": "throttle", "retryAfterSeconds": 300, "count": 1}))
        .await;
    let start = std::time::Instant::now();
    match env.az.get_cache(&id).await.unwrap_err() {
        AzureError::Throttled { retry_after } => assert_eq!(retry_after, Duration::from_secs(300)),
        e => panic!("expected Throttled, got {e:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    // A transient 500 on a GET is retried.
    env.add_fault(json!({"route": "GET /subscriptions", "kind": "error", "status": 500, "count": 1})).await;
    assert!(env.az.get_cache(&id).await.unwrap().value.is_none());
    // A dropped connection on a GET is retried too.
    env.add_fault(json!({"route": "GET /subscriptions", "kind": "drop", "count": 1})).await;
    assert!(env.az.get_cache(&id).await.unwrap().value.is_none());
}

#[tokio::test]
async fn simulator_throttling_is_avoided_by_client_buckets() {
    let env = start_with(SimConfig { throttling: true, ..Default::default() }).await;
    let id = ResourceId::cache(SUB, "rg", "c1");
    for _ in 0..60 {
        env.az.get_cache(&id).await.unwrap();
    }
    assert!(env.sim.requests().iter().all(|r| r.status != 429));
}

#[tokio::test]
async fn retirement_conflict_is_terminal() {
    let env = start_with(SimConfig { retired: true, ..Default::default() }).await;
    let id = ResourceId::cache(SUB, "rg", "c1");
    let err = env.az.put_cache(&id, &env.cmk_cache("kv-ap")).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert_eq!(err.code(), Some("OperationNotAllowed"));
    assert!(!err.is_retryable());
    assert_eq!(env.count("PUT", "/caches/c1"), 1);
}

//! The naive baseline, shaped like Azure Service Operator v2 drives an ARM resource: a controller that knows
//! nothing about ARM's budget. Every cache gets its own loop that GETs it every poll interval forever (no slower
//! resync once Ready), PUTs it when it is absent, grants its identity the vault's key access (`accessPolicies/add`)
//! when it reports `WaitingForKey`, and re-PUTs it every resync period whatever its state. No client-side limiter:
//! a 429 is waited out for its `Retry-After` and the same request is sent again. It lives in the bench process
//! (so it has no RSS or CPU figure of its own) and talks to the simulator over HTTPS with a plain reqwest client and
//! a client-credentials token from the simulator's Entra endpoint, as the operator's service principal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpcc_sim::Simulator;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{RwLock, mpsc};
use tokio::task::JoinHandle;

use crate::{CACHES_PER_VAULT, RG, SUB, cache_name, vault_id, vault_name};

const CACHES_API: &str = "2024-03-01";
const VAULTS_API: &str = "2025-05-01";

/// A settled cache: `(name, when, ready)` (`ready` false: Failed).
type Settled = (String, Instant, bool);

pub struct Naive {
    tasks: Vec<JoinHandle<()>>,
    settled: mpsc::UnboundedReceiver<Settled>,
}

impl Naive {
    /// Starts the baseline for `n` caches: one loop per cache, all at once (as after one `kubectl apply`).
    pub async fn start(sim: &Simulator, speed: f64, n: usize, poll: Duration, resync: Duration) -> Naive {
        let arm = Arc::new(Arm::new(sim, speed).await);
        // What a user of ASO declares on the vault resource; sent once per vault here.
        for k in 0..n.div_ceil(CACHES_PER_VAULT) {
            let vault = format!("{}?api-version={VAULTS_API}", vault_id(&vault_name(k * CACHES_PER_VAULT)));
            let (status, body) = arm.call(Method::GET, &vault, None).await;
            assert!(status.is_success(), "naive: GET vault: {status} {body}");
            if body["properties"]["enablePurgeProtection"] != json!(true) {
                let patch = json!({"properties": {"enablePurgeProtection": true}});
                let (status, body) = arm.call(Method::PATCH, &vault, Some(&patch)).await;
                assert!(status.is_success(), "naive: PATCH vault: {status} {body}");
            }
        }
        let (tx, settled) = mpsc::unbounded_channel();
        let tasks = (0..n).map(|i| tokio::spawn(cache_loop(arm.clone(), n, i, poll, resync, tx.clone()))).collect();
        Naive { tasks, settled }
    }

    /// Waits until every cache is Ready or Failed (as this controller saw it), at most `timeout`. Returns what
    /// settled; fewer than `n` means it did not converge in time (reported, not a panic: a baseline that does
    /// not converge is a finding).
    pub async fn wait_settled(&mut self, n: usize, timeout: Duration) -> HashMap<String, (Instant, bool)> {
        let mut out = HashMap::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.settled.recv()).await {
                Ok(Some((name, at, ready))) => {
                    out.entry(name).or_insert((at, ready));
                }
                Ok(None) | Err(_) => break,
            }
        }
        out
    }

    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn cache_loop(
    arm: Arc<Arm>,
    n: usize,
    i: usize,
    poll: Duration,
    resync: Duration,
    settled: mpsc::UnboundedSender<Settled>,
) {
    let name = cache_name(n, i);
    let path = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.StorageCache/caches/{name}?api-version={CACHES_API}"
    );
    let vault = vault_name(i);
    let grant = format!("{}/accessPolicies/add?api-version={VAULTS_API}", vault_id(&vault));
    let body = cache_body(&vault);
    let mut last_put: Option<Instant> = None;
    let mut granted = false;
    let mut reported = false;
    loop {
        let (status, cache) = arm.call(Method::GET, &path, None).await;
        if status == StatusCode::NOT_FOUND {
            if arm.call(Method::PUT, &path, Some(&body)).await.0.is_success() {
                last_put = Some(Instant::now());
            }
        } else if status.is_success() {
            let props = &cache["properties"];
            let principal = cache["identity"]["principalId"].as_str();
            if props["health"]["state"] == "WaitingForKey"
                && !granted
                && let Some(principal) = principal
            {
                let policy = json!({"properties": {"accessPolicies": [{
                    "tenantId": arm.tenant, "objectId": principal,
                    "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]},
                }]}});
                granted = arm.call(Method::PUT, &grant, Some(&policy)).await.0.is_success();
            }
            let state = props["provisioningState"].as_str().unwrap_or_default();
            if !reported && (state == "Succeeded" || state == "Failed") {
                reported = true;
                let _ = settled.send((name.clone(), Instant::now(), state == "Succeeded"));
            }
            // The desired state is sent again every resync, whether or not anything differs.
            if last_put.is_none_or(|t| t.elapsed() >= resync)
                && arm.call(Method::PUT, &path, Some(&body)).await.0.is_success()
            {
                last_put = Some(Instant::now());
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// The same cache every bench manifest declares (see `manifests` in main.rs), as an ARM body.
fn cache_body(vault: &str) -> Value {
    json!({
        "location": "eastus",
        "sku": {"name": "Standard_2G"},
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "cacheSizeGB": 3072,
            "subnet": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/hpc-vnet/subnets/cache"),
            "encryptionSettings": {"keyEncryptionKey": {
                "keyUrl": format!("https://{vault}.vault.azure.net/keys/cache-key/0123456789abcdef0123456789abcdef"),
                "sourceVault": {"id": vault_id(vault)},
            }},
        },
    })
}

/// A bare ARM client: bearer token, `Retry-After` on 429 (on the simulated clock, as a real client on ARM's), nothing
/// else.
struct Arm {
    http: Client,
    base: url::Url,
    tenant: String,
    client_id: String,
    secret: String,
    token: RwLock<String>,
    /// The simulator's clock speed: its Retry-After is in simulated seconds.
    speed: f64,
}

impl Arm {
    async fn new(sim: &Simulator, speed: f64) -> Arm {
        let env: HashMap<String, String> = sim.env().into_iter().collect();
        let cert = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
        let http = Client::builder().tls_certs_only([cert]).no_proxy().build().unwrap();
        let arm = Arm {
            http,
            base: sim.base_url(),
            tenant: env["AZURE_TENANT_ID"].clone(),
            client_id: env["AZURE_CLIENT_ID"].clone(),
            secret: env["AZURE_CLIENT_SECRET"].clone(),
            token: RwLock::new(String::new()),
            speed,
        };
        arm.refresh_token().await;
        arm
    }

    async fn refresh_token(&self) {
        let url = self.base.join(&format!("{}/oauth2/v2.0/token", self.tenant)).unwrap();
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.as_str()),
            ("scope", "https://management.azure.com/.default"),
            ("grant_type", "client_credentials"),
        ];
        let r = self.http.post(url).form(&form).send().await.expect("naive: token request");
        assert!(r.status().is_success(), "naive: token: {}", r.status());
        let v: Value = r.json().await.unwrap();
        *self.token.write().await = v["access_token"].as_str().unwrap_or_default().to_string();
    }

    /// Sends until the answer is neither a 429 (waits `Retry-After`), a 401 (new token), a vault write conflict
    /// (409 `ConflictError`, another write in flight: retried after 50 ms) nor a transport error.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let url = self.base.join(path.trim_start_matches('/')).unwrap();
        loop {
            let token = self.token.read().await.clone();
            let mut rb = self.http.request(method.clone(), url.clone()).bearer_auth(token);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let r = match rb.send().await {
                Ok(r) => r,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let status = r.status();
            let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let value: Value = r.json().await.unwrap_or(Value::Null);
            match status {
                StatusCode::TOO_MANY_REQUESTS => {
                    tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1)).div_f64(self.speed)).await;
                }
                StatusCode::UNAUTHORIZED => self.refresh_token().await,
                StatusCode::CONFLICT if value["error"]["code"] == "ConflictError" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => return (status, value),
            }
        }
    }
}

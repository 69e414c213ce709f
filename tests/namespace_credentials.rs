//! Per-namespace Azure credentials end to end: the operator binary against a real kube-apiserver and the Azure
//! simulator, whose request log names the principal of every call. A namespace with the Secret
//! `hpccache-credential` is served by that principal alone; without it the operator-wide identity is used, unless
//! `--require-namespace-credentials`; a missing, malformed or refused credential is `Stalled` with a precise reason
//! and no ARM or Key Vault call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hpcc_api::v1alpha1::{HpcCache, Phase};
use hpcc_sim::{RequestRecord, Seed, SimConfig, Simulator};
use hpcc_test_support::TestCluster;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SPEED: f64 = 200.0;
const TIMEOUT: Duration = Duration::from_secs(60);

const SUB: &str = "11111111-2222-3333-4444-555555555555";
/// The operator-wide principal of `examples/seed.yaml` (the env file's `AZURE_CLIENT_ID`).
const OPERATOR_OID: &str = "0b0b0b0b-1111-4222-8333-444444444444";
/// The namespace's service principal.
const TEAM_CLIENT: &str = "7a7a7a7a-1111-4222-8333-444444444444";
const TEAM_OID: &str = "7b7b7b7b-1111-4222-8333-444444444444";
const TEAM_SECRET: &str = "team-only-secret";
const TEAM_KEY_VERSION: &str = "7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c";
/// An application that trusts the operator's service account (workload identity federation), with no secret.
const FEDERATED_CLIENT: &str = "7d7d7d7d-1111-4222-8333-444444444444";
const FEDERATED_OID: &str = "7e7e7e7e-1111-4222-8333-444444444444";
const ISSUER: &str = "https://oidc.hpcc.test/cluster";
const OPERATOR_SA: &str = "system:serviceaccount:hpcc-system:hpcc-hpc-cache-operator";

/// The examples' world plus the team's principal and its own vault `kv-team` (no purge protection yet), which only
/// the team's principal may read; it may also read `kv-cmk`.
fn team_seed() -> Seed {
    Seed::from_yaml(&format!(
        r#"
principals:
  - {{clientId: {TEAM_CLIENT}, objectId: {TEAM_OID}, secret: {TEAM_SECRET}, displayName: team-research,
     armScopes: ["/subscriptions/{SUB}"]}}
  - clientId: {FEDERATED_CLIENT}
    objectId: {FEDERATED_OID}
    federatedCredentials: [{{issuer: "{ISSUER}", subject: "{OPERATOR_SA}", audiences: ["api://AzureADTokenExchange"]}}]
vaults:
  - name: kv-team
    subscriptionId: {SUB}
    resourceGroup: security-rg
    location: eastus
    keys: [{{name: cache-key, versions: [{{version: {TEAM_KEY_VERSION}}}]}}]
grants:
  - {{vault: kv-team, principalId: {TEAM_OID}}}
  - {{vault: kv-cmk, principalId: {TEAM_OID}}}
  - {{vault: kv-cmk, principalId: {FEDERATED_OID}}}
"#
    ))
    .unwrap()
}

struct Scenario {
    ns: String,
    sim: Simulator,
    operator: Child,
    log: PathBuf,
    api: Api<HpcCache>,
    secrets: Api<Secret>,
}

impl Scenario {
    async fn new(prefix: &str, extra_args: &[&str]) -> Scenario {
        Scenario::with_env(prefix, extra_args, &[]).await
    }

    /// A scenario whose operator has extra environment variables.
    async fn with_env(prefix: &str, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Scenario {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cluster = TestCluster::shared();
        cluster.install_crds(format!("{REPO}/crds")).await;
        let ns = cluster.namespace(prefix).await;
        let seed = Seed::from_yaml(&std::fs::read_to_string(format!("{REPO}/examples/seed.yaml")).unwrap()).unwrap();
        let sim = Simulator::start(SimConfig { seed: Some(seed), speed: SPEED, ..SimConfig::default() })
            .await
            .expect("simulator starts");
        sim.seed(&team_seed()).unwrap();
        let client = cluster.client().await;
        let api = Api::namespaced(client.clone(), &ns);
        let secrets = Api::namespaced(client, &ns);
        let log = std::env::temp_dir().join(format!("hpcc-operator-{ns}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let operator = Command::new(env!("CARGO_BIN_EXE_hpc-cache-operator"))
            .args(["run", "--namespace", &ns, "--poll-seconds", "0.3", "--resync-seconds", "2"])
            .args(["--facts-ttl-seconds", "1", "--metrics-addr", "127.0.0.1:0"])
            .args(extra_args)
            .envs(sim.env())
            .envs(extra_env.iter().copied())
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("HPCC_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("operator starts");
        Scenario { ns, sim, operator, log, api, secrets }
    }

    /// Creates or replaces the Secret `hpccache-credential` with exactly these keys.
    async fn put_credential(&self, pairs: &[(&str, &str)]) {
        let data: BTreeMap<String, ByteString> =
            pairs.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect();
        let mut secret = Secret {
            metadata: ObjectMeta { name: Some("hpccache-credential".into()), ..Default::default() },
            data: Some(data),
            ..Default::default()
        };
        match self.secrets.get_opt("hpccache-credential").await.unwrap() {
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version;
                self.secrets.replace("hpccache-credential", &PostParams::default(), &secret).await.unwrap();
            }
            None => {
                self.secrets.create(&PostParams::default(), &secret).await.unwrap();
            }
        }
    }

    /// The team principal's complete credential (client secret).
    async fn put_team_credential(&self, secret: &str) {
        let tenant = self.sim.tenant_id();
        self.put_credential(&[
            ("AZURE_TENANT_ID", &tenant),
            ("AZURE_CLIENT_ID", TEAM_CLIENT),
            ("AZURE_CLIENT_SECRET", secret),
        ])
        .await;
    }

    async fn create(&self, obj: serde_json::Value) -> String {
        let obj: HpcCache = serde_json::from_value(obj).unwrap();
        let name = obj.metadata.name.clone().unwrap();
        self.api.create(&PostParams::default(), &obj).await.unwrap();
        name
    }

    async fn wait(&self, name: &str, what: &str, done: impl Fn(&HpcCache) -> bool) -> HpcCache {
        let start = Instant::now();
        loop {
            if let Ok(Some(obj)) = self.api.get_opt(name).await
                && done(&obj)
            {
                return obj;
            }
            if start.elapsed() > TIMEOUT {
                let status =
                    self.api.get_opt(name).await.ok().flatten().map(|o| serde_json::to_string_pretty(&o.status));
                panic!("{name}: timed out waiting for {what}\nstatus: {status:?}\noperator log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_stalled(&self, name: &str, reason: &str) -> HpcCache {
        self.wait(name, &format!("Stalled {reason}"), |o| {
            condition(o, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == reason)
        })
        .await
    }

    async fn wait_gone(&self, name: &str) {
        let start = Instant::now();
        while self.api.get_opt(name).await.unwrap().is_some() {
            assert!(start.elapsed() < TIMEOUT, "{name} was not deleted\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// ARM and Key Vault requests (not Entra's token endpoint).
    fn azure_requests(&self) -> Vec<RequestRecord> {
        self.sim.requests().into_iter().filter(|r| !is_token_request(r)).collect()
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.operator.kill();
        let _ = self.operator.wait();
    }
}

fn is_token_request(r: &RequestRecord) -> bool {
    r.path.ends_with("/oauth2/v2.0/token")
}

/// A Key Vault challenge: the first request to a vault host goes without a token and is answered 401 (no caller).
fn is_key_vault_challenge(r: &RequestRecord) -> bool {
    r.host.contains(".vault.") && r.status == 401 && r.principal.is_none()
}

fn condition(o: &HpcCache, t: &str) -> Option<(String, String, String)> {
    let c = o.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn cache(name: &str, vault: &str, key_version: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "hpccache.io/v1alpha1", "kind": "HpcCache", "metadata": {"name": name},
        "spec": {
            "azure": {"subscriptionId": SUB, "resourceGroup": "hpc-rg", "location": "eastus"},
            "sku": "Standard_2G", "cacheSizeGB": 3072,
            "subnetId": format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.Network/virtualNetworks/hpc-vnet/subnets/cache"),
            "identity": {"type": "SystemAssigned"},
            "encryption": {
                "keyVaultId": format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/{vault}"),
                "keyName": "cache-key", "keyVersion": key_version,
            },
            "keyAccess": "Automatic",
        }
    })
}

/// Every ARM and Key Vault request was made by the team's principal (a Key Vault challenge carries no token), and
/// none by the operator-wide one.
fn assert_all_by_team(requests: &[RequestRecord]) {
    let by_operator: Vec<_> = requests.iter().filter(|r| r.principal.as_deref() == Some(OPERATOR_OID)).collect();
    assert!(by_operator.is_empty(), "the operator-wide principal made requests: {by_operator:#?}");
    let others: Vec<_> =
        requests.iter().filter(|r| r.principal.as_deref() != Some(TEAM_OID) && !is_key_vault_challenge(r)).collect();
    assert!(others.is_empty(), "requests not made by the namespace's principal: {others:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_azure_request_for_a_namespace_is_made_by_its_principal() {
    let s = Scenario::new("nscred", &[]).await;
    s.put_team_credential(TEAM_SECRET).await;
    // kv-team: only the team's principal may read its key, and its purge protection is off (a vault write).
    let name = s.create(cache("team-cache", "kv-team", TEAM_KEY_VERSION)).await;
    let ready = s.wait(&name, "Ready", |o| o.status.as_ref().and_then(|st| st.phase) == Some(Phase::Ready)).await;
    assert!(ready.status.unwrap().active_key_url.unwrap().ends_with(&format!("/keys/cache-key/{TEAM_KEY_VERSION}")));

    let requests = s.azure_requests();
    assert_all_by_team(&requests);
    // It did the whole job: the cache PUT, the vault's purge protection, the grant and the key reads.
    let made = |method: &str, path: &str| {
        requests.iter().any(|r| r.method == method && r.path.to_ascii_lowercase().contains(path) && r.status < 300)
    };
    assert!(made("PUT", "/caches/team-cache"), "{requests:#?}");
    assert!(made("PATCH", "/vaults/kv-team"), "{requests:#?}");
    assert!(made("PUT", "/vaults/kv-team/accesspolicies/add"), "{requests:#?}");
    assert!(made("GET", "/keys/cache-key"), "{requests:#?}");
    assert!(s.sim.requests().iter().any(is_token_request), "tokens come from Entra");

    // Deleting the object deletes the cache and revokes the grant, also as the team's principal.
    s.api.delete(&name, &DeleteParams::default()).await.unwrap();
    s.wait_gone(&name).await;
    let requests = s.azure_requests();
    assert!(
        requests.iter().any(|r| r.method == "DELETE" && r.path.to_ascii_lowercase().contains("/caches/team-cache"))
    );
    assert_all_by_team(&requests);
    assert!(!s.log_tail().contains(TEAM_SECRET), "the secret is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn required_credentials_stall_a_namespace_without_the_secret_and_call_no_azure() {
    let s = Scenario::new("nscred-req", &["--require-namespace-credentials"]).await;
    let name = s.create(cache("no-credential", "kv-cmk", "0123456789abcdef0123456789abcdef")).await;
    let stalled = s.wait_stalled(&name, "NamespaceCredentialMissing").await;
    let (_, _, message) = condition(&stalled, "Stalled").unwrap();
    assert!(message.contains("hpccache-credential") && message.contains(&s.ns), "{message}");
    assert_eq!(condition(&stalled, "Ready").unwrap().0, "False");
    assert_eq!(stalled.status.as_ref().unwrap().phase, Some(Phase::Pending));
    tokio::time::sleep(Duration::from_secs(2)).await; // a few more looks
    assert!(s.sim.requests().is_empty(), "no Azure call at all: {:#?}", s.sim.requests());

    // Nothing was made in Azure for it, so it can be deleted without a credential.
    s.api.delete(&name, &DeleteParams::default()).await.unwrap();
    s.wait_gone(&name).await;
    assert!(s.sim.requests().is_empty(), "{:#?}", s.sim.requests());

    // With the Secret, the namespace's caches are served by its principal.
    s.put_team_credential(TEAM_SECRET).await;
    let name = s.create(cache("with-credential", "kv-cmk", "0123456789abcdef0123456789abcdef")).await;
    s.wait(&name, "Ready", |o| o.status.as_ref().and_then(|st| st.phase) == Some(Phase::Ready)).await;
    assert_all_by_team(&s.azure_requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_or_refused_credential_stalls_and_a_fixed_secret_takes_effect() {
    let s = Scenario::new("nscred-bad", &[]).await;
    let tenant = s.sim.tenant_id();
    // Malformed: no AZURE_CLIENT_ID. The operator-wide identity is not used instead.
    s.put_credential(&[("AZURE_TENANT_ID", &tenant), ("AZURE_CLIENT_SECRET", TEAM_SECRET)]).await;
    let name = s.create(cache("team-cache", "kv-team", TEAM_KEY_VERSION)).await;
    let invalid = s.wait_stalled(&name, "NamespaceCredentialInvalid").await;
    let message = condition(&invalid, "Stalled").unwrap().2;
    assert!(
        message.contains(&format!("{}/hpccache-credential", s.ns)) && message.contains("AZURE_CLIENT_ID"),
        "{message}"
    );
    assert!(!message.contains(TEAM_SECRET));
    assert!(s.sim.requests().is_empty(), "{:#?}", s.sim.requests());

    // Refused by Entra ID: a wrong client secret.
    s.put_team_credential("not-the-team-secret").await;
    let rejected = s.wait_stalled(&name, "NamespaceCredentialRejected").await;
    let message = condition(&rejected, "Stalled").unwrap().2;
    assert!(message.contains(&format!("{}/hpccache-credential", s.ns)), "{message}");
    assert!(message.contains("invalid_client") && message.contains("AADSTS7000215"), "{message}");
    assert!(message.contains(TEAM_CLIENT) && !message.contains("not-the-team-secret"), "{message}");
    let log = s.sim.requests();
    assert!(!log.is_empty() && log.iter().all(|r| is_token_request(r) && r.status == 401), "{log:#?}");

    // Fixed (a new resourceVersion): a new client with the right secret, and the cache is made by the team.
    s.put_team_credential(TEAM_SECRET).await;
    s.wait(&name, "Ready", |o| o.status.as_ref().and_then(|st| st.phase) == Some(Phase::Ready)).await;
    assert_all_by_team(&s.azure_requests());
    assert!(!s.log_tail().contains("not-the-team-secret") && !s.log_tail().contains(TEAM_SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_secret_the_operator_wide_identity_is_used() {
    let s = Scenario::new("nscred-none", &[]).await;
    let name = s.create(cache("op-cache", "kv-cmk", "0123456789abcdef0123456789abcdef")).await;
    s.wait(&name, "Ready", |o| o.status.as_ref().and_then(|st| st.phase) == Some(Phase::Ready)).await;
    let requests = s.azure_requests();
    assert!(requests.iter().all(|r| r.principal.as_deref() != Some(TEAM_OID)), "{requests:#?}");
    assert!(requests.iter().any(|r| r.principal.as_deref() == Some(OPERATOR_OID)));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_client_secret_the_operators_federated_token_is_exchanged_for_the_namespaces_application() {
    // The operator itself authenticates with its client secret, and has a projected service-account token (as the
    // workload identity webhook mounts it): a namespace Secret without AZURE_CLIENT_SECRET is workload identity.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("azure-identity-token");
    let jwt = hpcc_test_support::sim::service_account_token(ISSUER, OPERATOR_SA, "api://AzureADTokenExchange");
    std::fs::write(&token, jwt).unwrap();
    let token = token.display().to_string();
    let env = [("AZURE_FEDERATED_TOKEN_FILE", token.as_str()), ("HPCC_CREDENTIAL", "client-secret")];
    let s = Scenario::with_env("nscred-wi", &[], &env).await;
    let tenant = s.sim.tenant_id();
    s.put_credential(&[("AZURE_TENANT_ID", &tenant), ("AZURE_CLIENT_ID", FEDERATED_CLIENT)]).await;
    let name = s.create(cache("wi-cache", "kv-cmk", "0123456789abcdef0123456789abcdef")).await;
    s.wait(&name, "Ready", |o| o.status.as_ref().and_then(|st| st.phase) == Some(Phase::Ready)).await;
    let requests = s.azure_requests();
    assert!(requests.iter().all(|r| r.principal.as_deref() != Some(OPERATOR_OID)), "{requests:#?}");
    let others: Vec<_> = requests
        .iter()
        .filter(|r| r.principal.as_deref() != Some(FEDERATED_OID) && !is_key_vault_challenge(r))
        .collect();
    assert!(others.is_empty(), "requests not made by the federated application: {others:#?}");
    assert!(requests.iter().any(|r| r.method == "PUT" && r.path.to_ascii_lowercase().contains("/caches/wi-cache")));
}

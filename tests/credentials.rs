//! Every Azure credential mode the Helm chart offers (`azure.credentials.mode`: `workloadIdentity`, the default,
//! `secret` and `managedIdentity`) against the simulator, not only the client secret.
//!
//! Each test renders the chart for its mode, takes the Deployment's environment, adds what the platform supplies in
//! that mode (the Secret's keys; the workload identity webhook's variables and the projected service-account token;
//! the host's managed-identity endpoint) and where the simulated cloud is, builds the client from that environment
//! the way the operator does (`AzureConfig::from_env`, i.e. `from_vars` over the process environment), and makes real
//! ARM and Key Vault calls. The simulator's request log must show the mode's principal on the token requests and on
//! every call.
//!
//! Managed identity: azure_identity 1.0's `ManagedIdentityCredential` reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`
//! from the process environment (no option for them), and picks App Service's endpoint when both are set; its IMDS
//! source (what an AKS node offers) calls a fixed `http://169.254.169.254/...` and cannot be pointed at loopback. So
//! the managed-identity test runs the client in a child process (this test binary again) whose environment is the
//! pod's plus the simulator's App Service-style endpoint.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use hpcc_azure::{Azure, AzureConfig, AzureError, CredentialChoice, ResourceId};
use hpcc_sim::{RequestRecord, SimConfig, Simulator};
use hpcc_test_support::TestCluster;
use hpcc_test_support::sim::{self, OP_OID, SUB, TENANT, V1};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/hpc-cache-operator");
const RELEASE: &str = "hpcc";
const NAMESPACE: &str = "hpcc-system";
/// The application workload identity federates with (its federated credential names the chart's service account).
const WI_CLIENT: &str = "dddddddd-0000-4000-8000-000000000001";
const WI_OID: &str = "dddddddd-0000-4000-8000-0000000000d1";
/// The cluster's service-account token issuer.
const ISSUER: &str = "https://oidc.hpcc.test/cluster";
const TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The user-assigned identity the operator's pod runs as in managed-identity mode.
const MI_NAME: &str = "hpcc-operator";
const MI_CLIENT: &str = "eeeeeeee-0000-4000-8000-000000000001";
const MI_PRINCIPAL: &str = "eeeeeeee-0000-4000-8000-0000000000e1";
/// Built-in role Reader.
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
/// Set for the child process of the managed-identity test.
const CHILD: &str = "HPCC_TEST_CREDENTIALS_CHILD";

/// A Deployment environment entry.
#[derive(Debug, Clone, PartialEq)]
enum EnvValue {
    Literal(String),
    SecretKey { secret: String, key: String },
    Field(String),
}

/// What the chart renders for one set of values.
struct Rendered {
    env: BTreeMap<String, EnvValue>,
    pod_labels: BTreeMap<String, String>,
    service_account: String,
    service_account_annotations: BTreeMap<String, String>,
}

fn render(sets: &[(&str, &str)]) -> Rendered {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(TestCluster::bin_dir().join("helm"));
    cmd.args(["template", RELEASE, CHART, "--namespace", NAMESPACE]);
    for (k, v) in sets {
        cmd.args(["--set", &format!("{k}={v}")]);
    }
    for var in ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"] {
        cmd.env(var, home.path().join(var));
    }
    let out = cmd.output().expect("helm runs");
    assert!(out.status.success(), "helm template {sets:?}: {}", String::from_utf8_lossy(&out.stderr));
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default()
    };
    let mut rendered = None;
    let mut accounts = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap()) {
        let doc = Value::deserialize(doc).unwrap();
        match doc["kind"].as_str() {
            Some("ServiceAccount") => {
                accounts.insert(
                    doc["metadata"]["name"].as_str().unwrap().to_string(),
                    strings(&doc["metadata"]["annotations"]),
                );
            }
            Some("Deployment") => {
                let pod = &doc["spec"]["template"];
                let env = pod["spec"]["containers"][0]["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        let from = &e["valueFrom"];
                        let value = if let Some(v) = e["value"].as_str() {
                            EnvValue::Literal(v.to_string())
                        } else if from["secretKeyRef"].is_object() {
                            EnvValue::SecretKey {
                                secret: from["secretKeyRef"]["name"].as_str().unwrap().to_string(),
                                key: from["secretKeyRef"]["key"].as_str().unwrap().to_string(),
                            }
                        } else {
                            EnvValue::Field(from["fieldRef"]["fieldPath"].as_str().unwrap().to_string())
                        };
                        (e["name"].as_str().unwrap().to_string(), value)
                    })
                    .collect();
                let sa = pod["spec"]["serviceAccountName"].as_str().unwrap().to_string();
                rendered = Some((env, strings(&pod["metadata"]["labels"]), sa));
            }
            _ => {}
        }
    }
    let (env, pod_labels, service_account) = rendered.expect("the chart renders a Deployment");
    let service_account_annotations = accounts.remove(&service_account).expect("the chart renders its service account");
    Rendered { env, pod_labels, service_account, service_account_annotations }
}

impl Rendered {
    /// The container's environment as the kubelet resolves it (`secret`: the referenced Secret's data).
    fn resolve(&self, secret: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.env
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    EnvValue::Literal(s) => s.clone(),
                    EnvValue::SecretKey { key, .. } => {
                        secret.get(key).unwrap_or_else(|| panic!("Secret key {key}")).clone()
                    }
                    EnvValue::Field(path) if path == "metadata.namespace" => NAMESPACE.to_string(),
                    EnvValue::Field(_) => format!("{RELEASE}-pod"),
                };
                (k.clone(), value)
            })
            .collect()
    }
}

/// Where the simulated cloud is (what a custom-cloud installation sets besides the chart's values): endpoints, the
/// test CA, loopback resolution, the Key Vault host suffix. No credentials.
fn cloud_env(sim: &Simulator) -> Vec<(String, String)> {
    let keep = [
        "HPCC_ARM_ENDPOINT",
        "AZURE_AUTHORITY_HOST",
        "HPCC_CA_FILE",
        "HPCC_RESOLVE_TO_LOOPBACK",
        "HPCC_KEYVAULT_DNS_SUFFIX",
    ];
    sim.env().into_iter().filter(|(k, _)| keep.contains(&k.as_str())).collect()
}

/// The shared world plus the workload identity application (federated with `subject`) and the operator's
/// user-assigned identity.
async fn start_sim(subject: &str) -> Simulator {
    let mut seed = sim::seed();
    sim::extend(
        &mut seed,
        &format!(
            r#"
principals:
  - clientId: {WI_CLIENT}
    objectId: {WI_OID}
    federatedCredentials: [{{issuer: "{ISSUER}", subject: "{subject}", audiences: ["{TOKEN_AUDIENCE}"]}}]
identities:
  - {{subscriptionId: {SUB}, resourceGroup: rg, name: {MI_NAME}, principalId: {MI_PRINCIPAL}, clientId: {MI_CLIENT}}}
"#
        ),
    );
    Simulator::start(SimConfig { seed: Some(seed), ..Default::default() }).await.expect("simulator starts")
}

/// What an administrator grants the operator's principal before installing: `get` on the keys of `kv-ap`, and (for
/// a principal without subscription-wide rights) Reader on the resource group. Then the simulated clock passes the
/// grants' propagation time.
async fn grant(sim: &Simulator, principal: &str, reader: bool) {
    sim.grant("kv-ap", principal).expect("vault access granted");
    if reader {
        let vars = sim.env();
        let admin = AzureConfig::from_vars(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap();
        let admin = Azure::new(admin, None).await.unwrap();
        admin.put_role_assignment(&ResourceId::resource_group_scope(SUB, "rg"), principal, READER).await.unwrap();
    }
    sim.advance(Duration::from_secs(15 * 60));
}

/// The operator's reads in each area: a user-assigned identity and a vault (ARM), a key (Key Vault, with the 401
/// challenge).
async fn call_azure(az: &Azure, vault_uri: &Url) -> Result<(), AzureError> {
    let identity = az.get_user_assigned_identity(&ResourceId::user_assigned_identity(SUB, "rg", "uai1")).await?;
    assert!(identity.is_some(), "uai1 exists");
    assert!(az.get_vault(&ResourceId::vault(SUB, "rg", "kv-ap")).await?.value.is_some(), "kv-ap exists");
    let key = az.get_key(vault_uri, "k2048", Some(V1)).await?.expect("k2048 exists");
    assert_eq!(key.rsa_bits(), Some(2048));
    Ok(())
}

/// In `log` (the simulator's requests since the client was built): the token requests at `token_path` and each
/// call succeeded as `principal`, and no other principal appears.
fn assert_acted_as(log: &[RequestRecord], token_path: &str, principal: &str) {
    let by = |pred: &dyn Fn(&RequestRecord) -> bool| log.iter().filter(|r| pred(r)).cloned().collect::<Vec<_>>();
    let tokens = by(&|r| r.path == token_path);
    assert_eq!(tokens.len(), 2, "one token per audience (ARM, Key Vault): {log:#?}");
    let arm = by(&|r| r.path.contains("/userAssignedIdentities/uai1") || r.path.ends_with("/vaults/kv-ap"));
    assert_eq!(arm.len(), 2, "{log:#?}");
    let key = by(&|r| r.path == format!("/keys/k2048/{V1}") && r.status == 200);
    assert_eq!(key.len(), 1, "{log:#?}");
    for r in tokens.iter().chain(&arm).chain(&key) {
        assert_eq!((r.status, r.principal.as_deref()), (200, Some(principal)), "{r:?}");
    }
    let others: Vec<_> = log.iter().filter(|r| r.principal.as_deref().is_some_and(|p| p != principal)).collect();
    assert!(others.is_empty(), "requests by another principal: {others:#?}");
}

fn config(env: &BTreeMap<String, String>) -> AzureConfig {
    AzureConfig::from_vars(|k| env.get(k).cloned()).expect("the operator accepts the pod's environment")
}

#[tokio::test]
async fn secret_mode_authenticates_with_the_secrets_client_secret() {
    let chart = render(&[("azure.credentials.mode", "secret"), ("azure.credentials.secretName", "azure-sp")]);
    for key in ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"] {
        assert_eq!(chart.env[key], EnvValue::SecretKey { secret: "azure-sp".into(), key: key.into() });
    }
    let sim = start_sim("unused").await;
    grant(&sim, OP_OID, false).await;
    // The Secret holds the operator application's credentials.
    let secret: BTreeMap<_, _> =
        sim.env().into_iter().filter(|(k, _)| k.starts_with("AZURE_") && k != "AZURE_AUTHORITY_HOST").collect();
    let mut env = chart.resolve(&secret);
    env.extend(cloud_env(&sim));
    let cfg = config(&env);
    assert_eq!(cfg.credential, CredentialChoice::ClientSecret);
    let from = sim.requests().len();
    call_azure(&Azure::new(cfg, None).await.unwrap(), &sim.vault_uri("kv-ap")).await.unwrap();
    assert_acted_as(&sim.requests()[from..], &format!("/{TENANT}/oauth2/v2.0/token"), OP_OID);
}

#[tokio::test]
async fn workload_identity_mode_exchanges_the_projected_token() {
    let chart = render(&[("azure.credentials.clientId", WI_CLIENT), ("azure.credentials.tenantId", TENANT)]);
    assert_eq!(chart.env["HPCC_CREDENTIAL"], EnvValue::Literal("workloadIdentity".into()), "the chart's default mode");
    assert_eq!(chart.pod_labels.get("azure.workload.identity/use").map(String::as_str), Some("true"));
    let subject = format!("system:serviceaccount:{NAMESPACE}:{}", chart.service_account);
    let sim = start_sim(&subject).await;
    grant(&sim, WI_OID, false).await;

    // What the workload identity webhook adds to a labelled pod: the service account's client and tenant ids, the
    // authority, and the projected token's path.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, sim::service_account_token(ISSUER, &subject, TOKEN_AUDIENCE)).unwrap();
    let annotations = &chart.service_account_annotations;
    let mut env = chart.resolve(&BTreeMap::new());
    env.extend(cloud_env(&sim));
    env.insert("AZURE_CLIENT_ID".into(), annotations["azure.workload.identity/client-id"].clone());
    env.insert("AZURE_TENANT_ID".into(), annotations["azure.workload.identity/tenant-id"].clone());
    env.insert("AZURE_FEDERATED_TOKEN_FILE".into(), token_file.display().to_string());
    let cfg = config(&env);
    assert_eq!(cfg.credential, CredentialChoice::WorkloadIdentity);
    let from = sim.requests().len();
    call_azure(&Azure::new(cfg.clone(), None).await.unwrap(), &sim.vault_uri("kv-ap")).await.unwrap();
    assert_acted_as(&sim.requests()[from..], &format!("/{TENANT}/oauth2/v2.0/token"), WI_OID);

    // A token of another service account matches no federated credential: no Azure token, no Azure call.
    let other = dir.path().join("other-token");
    std::fs::write(&other, sim::service_account_token(ISSUER, "system:serviceaccount:default:default", TOKEN_AUDIENCE))
        .unwrap();
    let from = sim.requests().len();
    let az = Azure::new(AzureConfig { federated_token_file: Some(other), ..cfg }, None).await.unwrap();
    let err = az.get_vault(&ResourceId::vault(SUB, "rg", "kv-ap")).await.unwrap_err();
    assert!(matches!(err, AzureError::Auth(_)), "{err:?}");
    let log = &sim.requests()[from..];
    assert!(
        !log.is_empty() && log.iter().all(|r| r.path.ends_with("/oauth2/v2.0/token") && r.status == 401),
        "{log:#?}"
    );
}

/// Runs [`the_pods_process`] as a child with `env` only; returns its output.
async fn run_child(env: &BTreeMap<String, String>) -> std::process::Output {
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["the_pods_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env_clear()
        .envs(env)
        .env(CHILD, "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child).await.expect("child finishes").expect("child runs")
}

#[tokio::test]
async fn managed_identity_mode_uses_the_hosts_identity_endpoint() {
    let sim = start_sim("unused").await;
    grant(&sim, MI_PRINCIPAL, true).await;
    let chart = render(&[("azure.credentials.mode", "managedIdentity"), ("azure.credentials.clientId", MI_CLIENT)]);
    assert_eq!(chart.env["AZURE_CLIENT_ID"], EnvValue::Literal(MI_CLIENT.into()));
    let mut env = chart.resolve(&BTreeMap::new());
    env.extend(cloud_env(&sim));
    // The host's managed-identity endpoint (App Service's variables).
    env.extend(sim.managed_identity_env());

    let from = sim.requests().len();
    let out = run_child(&env).await;
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the pod's process failed:\n{output}");
    let log = &sim.requests()[from..];
    assert_acted_as(log, "/msi/token", MI_PRINCIPAL);
    for r in log.iter().filter(|r| r.path == "/msi/token") {
        let q: BTreeMap<String, String> = url::form_urlencoded::parse(r.query.as_bytes()).into_owned().collect();
        assert_eq!(q.get("client_id").map(String::as_str), Some(MI_CLIENT), "{r:?}");
        assert_eq!(q.get("api-version").map(String::as_str), Some("2019-08-01"), "{r:?}");
    }

    // Without a client id the credential asks for the host's system-assigned identity, which the simulated host has
    // not got: refused at the endpoint, nothing reaches ARM.
    let chart = render(&[("azure.credentials.mode", "managedIdentity")]);
    assert!(!chart.env.contains_key("AZURE_CLIENT_ID"));
    let mut env = chart.resolve(&BTreeMap::new());
    env.extend(cloud_env(&sim));
    env.extend(sim.managed_identity_env());
    let from = sim.requests().len();
    let out = run_child(&env).await;
    assert!(!out.status.success(), "no system-assigned identity, yet the calls succeeded");
    let log = &sim.requests()[from..];
    assert!(!log.is_empty() && log.iter().all(|r| r.path == "/msi/token" && r.status == 400), "{log:#?}");
    assert!(log.iter().all(|r| !r.query.contains("client_id")), "{log:#?}");
}

/// The operator process of the managed-identity test: builds the client from its own environment (as `main.rs`
/// does) and makes the calls. Only meaningful as that test's child.
#[tokio::test]
#[ignore = "run by managed_identity_mode_uses_the_hosts_identity_endpoint in a child process with the pod's environment"]
async fn the_pods_process() {
    assert!(std::env::var_os(CHILD).is_some(), "run by managed_identity_mode_uses_the_hosts_identity_endpoint only");
    let cfg = AzureConfig::from_env().expect("the operator accepts the pod's environment");
    assert!(cfg.resolve_to_loopback, "the child must not leave the machine");
    assert_eq!(cfg.credential, CredentialChoice::ManagedIdentity);
    let port = cfg.cloud.arm_endpoint.port().expect("the simulator's port");
    let vault = Url::parse(&format!("https://kv-ap.vault.localhost:{port}/")).unwrap();
    let az = Azure::new(cfg, None).await.unwrap();
    call_azure(&az, &vault).await.expect("calls as the managed identity");
}

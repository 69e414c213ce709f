//! The operator end to end: the real binary against a real kube-apiserver + etcd and the Azure simulator over HTTPS.
//! The simulator runs its clock 200× faster (a 10-minute create takes 3 s) and tests jump it ahead where the
//! scenario needs the 90-minute window to pass.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hpcc_api::v1alpha1::{HpcCache, Phase};
use hpcc_azure::{Azure, AzureConfig, ResourceId};
use hpcc_sim::seed::SeedKeyVersion;
use hpcc_sim::{RequestRecord, Seed, SimConfig, Simulator};
use hpcc_test_support::TestCluster;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SPEED: f64 = 200.0;
const TIMEOUT: Duration = Duration::from_secs(60);

/// One scenario: its own namespace, simulator and operator process.
struct Scenario {
    cluster: &'static TestCluster,
    ns: String,
    sim: Simulator,
    operator: Option<Child>,
    log: PathBuf,
    api: Api<HpcCache>,
    extra_args: Vec<String>,
    /// Environment for the operator beyond the simulator's (e.g. its client-side ARM budget).
    extra_env: Vec<(String, String)>,
}

impl Scenario {
    async fn new(prefix: &str, cfg: SimConfig) -> Scenario {
        Scenario::with_args(prefix, cfg, &[]).await
    }

    /// A scenario whose operator runs with extra command-line arguments.
    async fn with_args(prefix: &str, cfg: SimConfig, extra_args: &[&str]) -> Scenario {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cluster = TestCluster::shared();
        cluster.install_crds(format!("{REPO}/crds")).await;
        let ns = cluster.namespace(prefix).await;
        let seed = Seed::from_yaml(&std::fs::read_to_string(format!("{REPO}/examples/seed.yaml")).unwrap()).unwrap();
        let sim =
            Simulator::start(SimConfig { seed: Some(seed), speed: SPEED, ..cfg }).await.expect("simulator starts");
        let api = Api::namespaced(cluster.client().await, &ns);
        let log = std::env::temp_dir().join(format!("hpcc-operator-{ns}.log"));
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut s = Scenario { cluster, ns, sim, operator: None, log, api, extra_args, extra_env: vec![] };
        s.start_operator();
        s
    }

    fn start_operator(&mut self) {
        self.operator = Some(self.spawn_operator(&self.log));
    }

    /// One more operator process (a replica) for this scenario, logging to `log`.
    fn spawn_operator(&self, log: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        Command::new(env!("CARGO_BIN_EXE_hpc-cache-operator"))
            .args(["run", "--namespace", &self.ns, "--poll-seconds", "0.3", "--resync-seconds", "2"])
            .args(["--facts-ttl-seconds", "1", "--metrics-addr", "127.0.0.1:0"])
            .args(&self.extra_args)
            .envs(self.sim.env())
            .envs(self.extra_env.iter().cloned())
            .env("KUBECONFIG", self.cluster.kubeconfig_path())
            .env("HPCC_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("operator starts")
    }

    /// SIGKILL: no graceful shutdown, as when a node dies.
    fn kill_operator(&mut self) {
        if let Some(mut c) = self.operator.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn apply(&self, example: &str) -> String {
        let out = self
            .cluster
            .kubectl()
            .args(["apply", "-n", &self.ns, "-f", &format!("{REPO}/examples/{example}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl apply {example}: {}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(format!("{REPO}/examples/{example}")).unwrap()).unwrap();
        doc["metadata"]["name"].as_str().unwrap().to_string()
    }

    async fn create(&self, obj: serde_json::Value) -> String {
        let obj: HpcCache = serde_json::from_value(obj).unwrap();
        let name = obj.metadata.name.clone().unwrap();
        self.api.create(&PostParams::default(), &obj).await.unwrap();
        name
    }

    /// Adds a fault rule to the simulator (admin API), e.g. `{"route": "PUT .*/accessPolicies/", "kind": "error",
    /// "status": 409, "code": "ConflictError", "count": 3}`.
    async fn add_fault(&self, rule: serde_json::Value) {
        let url = self.sim.admin_url().join("faults").unwrap();
        let r = reqwest::Client::new().post(url).json(&rule).send().await.unwrap();
        assert!(r.status().is_success(), "fault rejected: {}", r.text().await.unwrap_or_default());
    }

    async fn get(&self, name: &str) -> HpcCache {
        self.api.get(name).await.unwrap()
    }

    /// Polls until `done` holds; on timeout fails with the object's status and the operator's log.
    async fn wait(&self, name: &str, what: &str, done: impl Fn(&HpcCache) -> bool) -> HpcCache {
        let start = Instant::now();
        loop {
            if let Ok(Some(obj)) = self.api.get_opt(name).await
                && done(&obj)
            {
                return obj;
            }
            if start.elapsed() > TIMEOUT {
                let status = self
                    .api
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .map(|o| serde_json::to_string_pretty(&o.status).unwrap());
                panic!("{name}: timed out waiting for {what}\nstatus: {status:?}\noperator log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_phase(&self, name: &str, phase: Phase) -> HpcCache {
        self.wait(name, &format!("phase {phase}"), |o| phase_of(o) == Some(phase)).await
    }

    async fn wait_gone(&self, name: &str) {
        let start = Instant::now();
        while self.api.get_opt(name).await.unwrap().is_some() {
            assert!(start.elapsed() < TIMEOUT, "{name} was not deleted\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_request(&self, method: &str, path: &str) {
        let start = Instant::now();
        while self.requests(method, path).is_empty() {
            assert!(start.elapsed() < TIMEOUT, "no {method} {path}\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Event reasons for one object, oldest first.
    async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let api: Api<Event> = Api::namespaced(self.cluster.client().await, &self.ns);
        let mut evs: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        evs.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        evs.into_iter()
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    fn requests(&self, method: &str, path_contains: &str) -> Vec<RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.to_ascii_lowercase().contains(&path_contains.to_ascii_lowercase()))
            .collect()
    }

    /// A client of our own, to look at Azure the way the operator does.
    async fn azure(&self) -> Azure {
        let env: BTreeMap<String, String> = self.sim.env().into_iter().collect();
        Azure::new(AzureConfig::from_vars(|k| env.get(k).cloned()).unwrap(), None).await.unwrap()
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.kill_operator();
    }
}

fn phase_of(o: &HpcCache) -> Option<Phase> {
    o.status.as_ref().and_then(|s| s.phase)
}

fn condition_is(o: &HpcCache, t: &str, status: &str) -> bool {
    o.status.as_ref().is_some_and(|st| st.conditions.iter().any(|c| c.type_ == t && c.status == status))
}

fn condition(o: &HpcCache, t: &str) -> (String, String, String) {
    let c = o.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

const SUB: &str = "11111111-2222-3333-4444-555555555555";
const CMK_VAULT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/kv-cmk";

fn cache_manifest(name: &str, encryption: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "azure": {"subscriptionId": SUB, "resourceGroup": "hpc-rg", "location": "eastus"},
        "sku": "Standard_2G", "cacheSizeGB": 3072,
        "subnetId": format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.Network/virtualNetworks/hpc-vnet/subnets/cache"),
        "encryption": encryption,
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::json!({"apiVersion": "hpccache.io/v1alpha1", "kind": "HpcCache", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread")]
async fn system_assigned_automatic_reaches_ready_with_one_put_one_patch_one_grant() {
    let s = Scenario::new("sa-auto", SimConfig::default()).await;
    let name = s.apply("system-assigned.yaml");
    let ready = s.wait_phase(&name, Phase::Ready).await;

    let kubectl_wait = s
        .cluster
        .kubectl()
        .args(["wait", "-n", &s.ns, "--for=condition=Ready", "--timeout=5s", &format!("hpccache/{name}")])
        .output()
        .unwrap();
    assert!(kubectl_wait.status.success(), "kubectl wait: {}", String::from_utf8_lossy(&kubectl_wait.stderr));

    let status = ready.status.clone().unwrap();
    let principal = status.principal_id.clone().expect("principalId in status");
    assert!(status.active_key_url.as_deref().unwrap().ends_with("/keys/cache-key/0123456789abcdef0123456789abcdef"));
    assert_eq!(status.provisioning_state.as_deref(), Some("Succeeded"));
    assert_eq!(status.health_state.as_deref(), Some("Healthy"));
    assert!(status.azure_resource_id.as_deref().unwrap().ends_with("/caches/genomics-cache"));
    assert_eq!(condition(&ready, "KeyValid").0, "True");
    assert_eq!(condition(&ready, "KeyAuthorized").0, "True");
    assert_eq!(condition(&ready, "Stalled").0, "False");

    assert_eq!(s.requests("PUT", "/caches/genomics-cache").len(), 1, "exactly one cache PUT");
    let patches = s.requests("PATCH", "/vaults/kv-cmk");
    assert_eq!(patches.len(), 1, "one vault PATCH (purge protection was off)");
    assert_eq!(s.requests("PUT", "/vaults/kv-cmk/accessPolicies/add").len(), 1, "one access-policy add");
    assert!(s.requests("PUT", "/roleAssignments/").is_empty());

    // The grant is for the cache's principal, with exactly the CMK permissions, and purge protection is on.
    let vault = s.azure().await.get_vault(&ResourceId::parse(CMK_VAULT).unwrap()).await.unwrap().value.unwrap();
    assert_eq!(vault.properties.enable_purge_protection, Some(true));
    let policy =
        vault.properties.access_policies.iter().find(|p| p.object_id == principal).expect("policy for the cache");
    let mut perms = policy.permissions.keys.clone();
    perms.sort();
    assert_eq!(perms, ["get", "unwrapKey", "wrapKey"]);

    // Transitions were reported as events, in order.
    let reasons: Vec<String> = s.events(&name).await.into_iter().map(|e| e.1).collect();
    let pos = |r: &str| reasons.iter().position(|x| x == r).unwrap_or_else(|| panic!("no {r} event in {reasons:?}"));
    assert!(
        pos("Creating") < pos("WaitingForKey")
            && pos("WaitingForKey") < pos("Authorizing")
            && pos("Authorizing") < pos("Ready"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_vault_is_granted_by_one_role_assignment() {
    let s = Scenario::new("rbac", SimConfig::default()).await;
    let name = s.apply("rbac-vault.yaml");
    s.wait_phase(&name, Phase::Ready).await;
    assert_eq!(s.requests("PUT", "/roleAssignments/").len(), 1);
    assert!(s.requests("PUT", "/accessPolicies/").is_empty());
    assert!(s.requests("PATCH", "/vaults/").is_empty(), "purge protection was already on");
}

#[tokio::test(flavor = "multi_thread")]
async fn user_assigned_with_access_never_waits_for_the_key() {
    let s = Scenario::new("ua-trusted", SimConfig::default()).await;
    let name = s.apply("user-assigned.yaml");
    let ready = s.wait_phase(&name, Phase::Ready).await;
    let reasons: Vec<String> = s.events(&name).await.into_iter().map(|e| e.1).collect();
    assert!(!reasons.iter().any(|r| r == "WaitingForKey" || r == "Authorizing"), "{reasons:?}");
    assert!(s.requests("PUT", "/accessPolicies/").is_empty() && s.requests("PUT", "/roleAssignments/").is_empty());
    assert_eq!(ready.status.unwrap().principal_id.as_deref(), Some("5c5c5c5c-1111-4222-8333-444444444444"));
}

#[tokio::test(flavor = "multi_thread")]
async fn user_assigned_without_access_is_granted_before_the_cache_is_created() {
    let s = Scenario::new("ua-grant", SimConfig::default()).await;
    let seed = Seed::from_yaml(&format!(
        "identities: [{{subscriptionId: {SUB}, resourceGroup: security-rg, name: fresh-id, location: eastus, principalId: 7e7e7e7e-1111-4222-8333-444444444444}}]"
    ))
    .unwrap();
    s.sim.seed(&seed).unwrap();
    let name = s
        .create(cache_manifest(
            "fresh",
            serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"}),
            serde_json::json!({"identity": {"type": "UserAssigned", "userAssignedIdentityId": format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/fresh-id")}}),
        ))
        .await;
    s.wait_phase(&name, Phase::Ready).await;
    let log = s.sim.requests();
    let grant_at =
        log.iter().position(|r| r.method == "PUT" && r.path.contains("/accessPolicies/add")).expect("a grant");
    let put_at = log.iter().position(|r| r.method == "PUT" && r.path.contains("/caches/fresh")).expect("a cache PUT");
    assert!(grant_at < put_at, "the grant precedes the create");
    let reasons: Vec<String> = s.events(&name).await.into_iter().map(|e| e.1).collect();
    assert!(
        reasons.contains(&"Authorizing".to_string()) && !reasons.contains(&"WaitingForKey".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_waits_with_principal_and_deadline_then_a_human_grant_makes_it_ready() {
    let s = Scenario::new("manual", SimConfig::default()).await;
    let name = s.apply("manual.yaml");
    let waiting = s.wait_phase(&name, Phase::WaitingForKey).await;
    let st = waiting.status.clone().unwrap();
    let principal = st.principal_id.clone().expect("principalId for the human");
    let created = st.created_at.clone().expect("createdAt").0;
    let deadline = st.authorization_deadline.clone().expect("deadline").0;
    assert_eq!(deadline, created + jiff::SignedDuration::from_mins(90));
    assert!(condition(&waiting, "KeyAuthorized").2.contains(&principal));
    // 70 minutes later a Warning event says the deadline is near.
    s.sim.advance(Duration::from_secs(70 * 60));
    let start = Instant::now();
    loop {
        let evs = s.events(&name).await;
        if evs.iter().any(|e| e.0 == "Warning" && e.1 == "AuthorizationDeadlineApproaching" && e.2.contains(&principal))
        {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "no deadline warning: {evs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.requests("PUT", "/accessPolicies/").is_empty() && s.requests("PATCH", "/vaults/").is_empty(),
        "Manual never writes to the vault"
    );
    // The person grants access in the portal.
    s.sim.grant("kv-manual", &principal).unwrap();
    let ready = s.wait_phase(&name, Phase::Ready).await;
    assert_eq!(ready.status.unwrap().created_at.unwrap().0, created, "createdAt is stable");
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_without_grant_fails_at_the_deadline() {
    // Azure's window is made longer than 90 minutes here, so Failed can only come from the operator's own deadline
    // arithmetic (createdAt + 90 min against Azure's clock), not from Azure failing the cache first.
    let cfg = SimConfig { authorization_window: Duration::from_secs(120 * 60), ..SimConfig::default() };
    let s = Scenario::new("manual-fail", cfg).await;
    let name = s.apply("manual.yaml");
    s.wait_phase(&name, Phase::WaitingForKey).await;
    s.sim.advance(Duration::from_secs(91 * 60));
    let failed = s.wait_phase(&name, Phase::Failed).await;
    let (st, reason, msg) = condition(&failed, "Stalled");
    assert_eq!(st, "True");
    assert_eq!(reason, "AuthorizationWindowMissed", "{msg}");
    assert_eq!(
        failed.status.as_ref().unwrap().health_state.as_deref(),
        Some("WaitingForKey"),
        "Azure has not failed it"
    );
    assert_eq!(condition(&failed, "Ready").0, "False");
    assert_eq!(s.requests("PUT", "/caches/").len(), 1, "Fail policy: no re-creation");
}

/// Runs `program` (the operator binary, a link to it, or kubectl) with `args` and `env`, without any Azure
/// settings of the test process; (success, stdout, stderr).
fn run_cli(program: &std::path::Path, args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("HPCC_CREDENTIAL")
        .env_remove("HPCC_ARM_ENDPOINT")
        .env_remove("AZURE_CLOUD")
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_command_prints_the_grant_for_the_live_object_also_as_a_kubectl_plugin() {
    let s = Scenario::new("grantcmd", SimConfig::default()).await;
    let name = s.apply("manual.yaml");
    let waiting = s.wait_phase(&name, Phase::WaitingForKey).await;
    let principal = waiting.status.unwrap().principal_id.unwrap();
    let vault =
        format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/kv-manual");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hpc-cache-operator"));
    let kubeconfig = ("KUBECONFIG".to_string(), s.cluster.kubeconfig_path().display().to_string());
    let set_policy = format!(
        "az keyvault set-policy --name kv-manual --resource-group security-rg --subscription {SUB} --object-id {principal} --key-permissions get wrapKey unwrapKey"
    );
    let role = format!(
        "az role assignment create --assignee-object-id {principal} --assignee-principal-type ServicePrincipal --role 'Key Vault Crypto Service Encryption User' --scope {vault}"
    );

    // From a person's shell (only a kubeconfig): the object does not say how the vault grants, so both forms.
    let (ok, out, err) = run_cli(bin, &["grant-command", "-n", &s.ns, &name], std::slice::from_ref(&kubeconfig));
    assert!(ok, "{err}");
    assert!(out.contains(&format!("principal:        {principal}")), "{out}");
    assert!(out.contains(&format!("vault:            {vault}")), "{out}");
    assert!(out.contains(&set_policy) && out.contains(&role), "{out}");
    assert!(
        out.contains(&format!("PUT https://management.azure.com{vault}/accessPolicies/add?api-version=2025-05-01")),
        "{out}"
    );
    assert!(out.contains("/providers/Microsoft.Authorization/roleAssignments/"), "{out}");
    assert!(out.contains("roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6"), "{out}");
    assert!(out.contains(&format!("\"objectId\": \"{principal}\"")), "{out}");
    assert!(out.contains("left (this machine's clock)"), "{out}");

    // With the operator's Azure settings (here the simulator's): the vault is read, one form, Azure's clock.
    let mut env: Vec<(String, String)> = s.sim.env().into_iter().collect();
    env.push(kubeconfig.clone());
    let (ok, out, err) = run_cli(bin, &["grant-command", "-n", &s.ns, &name], &env);
    assert!(ok, "{err}");
    assert!(out.contains("permission model: vault access policy (read from the vault just now)"), "{out}");
    assert!(out.contains(&set_policy) && !out.contains("az role assignment"), "{out}");
    assert!(out.contains("left (Azure's clock)"), "{out}");
    assert!(out.contains(&format!("{vault}/accessPolicies/add?api-version=2025-05-01")), "{out}");

    // As a kubectl plugin: a link named kubectl-hpcc on PATH; the namespace comes from the kubeconfig's context.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-hpcc");
    std::os::unix::fs::symlink(bin, &plugin).unwrap();
    let context_kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(s.cluster.kubeconfig_path(), &context_kubeconfig).unwrap();
    let kubectl = TestCluster::bin_dir().join("kubectl");
    let in_ns = [("KUBECONFIG".to_string(), context_kubeconfig.display().to_string())];
    let (ok, _, err) = run_cli(&kubectl, &["config", "set-context", "--current", "--namespace", &s.ns], &in_ns);
    assert!(ok, "{err}");
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let plugin_env = [in_ns[0].clone(), ("PATH".to_string(), path)];
    let (ok, out, err) = run_cli(&kubectl, &["hpcc", "grant-command", &name], &plugin_env);
    assert!(ok, "kubectl hpcc grant-command: {err}");
    assert!(out.contains(&format!("HpcCache {}/{name}: keyAccess Manual", s.ns)), "{out}");
    assert!(out.contains(&principal) && out.contains(&set_policy), "{out}");
    // kubectl passes -n through; the link itself takes the same arguments.
    let (ok, out, err) = run_cli(&plugin, &["grant-command", &name, "-n", &s.ns], std::slice::from_ref(&kubeconfig));
    assert!(ok, "{err}");
    assert!(out.contains(&role), "{out}");
    let (ok, _, err) = run_cli(&plugin, &["grant-command", "nope", "-n", &s.ns], std::slice::from_ref(&kubeconfig));
    assert!(!ok && err.contains(&format!("hpccache {}/nope not found", s.ns)), "{err}");
    let (ok, _, err) = run_cli(&plugin, &["grant-command"], std::slice::from_ref(&kubeconfig));
    assert!(!ok && err.contains("kubectl hpcc grant-command"), "usage names the plugin: {err}");

    // Microsoft-managed keys: nothing to grant.
    let mmk = s.create(cache_manifest("no-cmk", serde_json::Value::Null, serde_json::json!({}))).await;
    let (ok, _, err) = run_cli(bin, &["grant-command", "-n", &s.ns, &mmk], std::slice::from_ref(&kubeconfig));
    assert!(
        !ok && err.contains("uses Microsoft-managed keys (no spec.encryption): there is nothing to grant"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_policy_replaces_a_failed_cache_and_counts_it() {
    let s = Scenario::new("recreate", SimConfig::default()).await;
    let name = s
        .create(cache_manifest(
            "retry",
            serde_json::json!({"keyVaultId": format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/kv-manual"), "keyName": "cache-key", "keyVersion": "aabbccddeeff00112233445566778899"}),
            serde_json::json!({"keyAccess": "Manual", "onAuthorizationTimeout": "Recreate", "maxRecreations": 1}),
        ))
        .await;
    let first = s.wait_phase(&name, Phase::WaitingForKey).await.status.unwrap().principal_id.unwrap();
    s.sim.advance(Duration::from_secs(91 * 60));
    let again = s
        .wait(&name, "a new cache waiting for its key", |o| {
            let st = o.status.clone().unwrap_or_default();
            st.recreations == 1
                && phase_of(o) == Some(Phase::WaitingForKey)
                && st.principal_id.as_deref() != Some(first.as_str())
        })
        .await;
    assert_eq!(s.requests("DELETE", "/caches/retry").len(), 1, "the failed cache was deleted");
    assert_eq!(s.requests("PUT", "/caches/retry").len(), 2, "and created again");
    // The limit (1) is reached: the next miss fails for good.
    s.sim.advance(Duration::from_secs(91 * 60));
    let failed = s.wait_phase(&name, Phase::Failed).await;
    assert_eq!(failed.status.unwrap().recreations, 1);
    assert!(condition(&s.get(&name).await, "Stalled").2.contains("re-creation limit"));
    drop(again);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_cache_and_system_grant_orphan_keeps_cache() {
    let s = Scenario::new("delete", SimConfig::default()).await;
    let name = s.apply("system-assigned.yaml");
    let principal = s.wait_phase(&name, Phase::Ready).await.status.unwrap().principal_id.unwrap();
    s.api.delete(&name, &DeleteParams::default()).await.unwrap();
    s.wait_gone(&name).await;
    assert_eq!(s.requests("DELETE", "/caches/genomics-cache").len(), 1);
    let azure = s.azure().await;
    let cache_id = ResourceId::cache(SUB, "hpc-rg", "genomics-cache");
    assert!(azure.get_cache(&cache_id).await.unwrap().value.is_none(), "the Azure cache is gone");
    let vault = azure.get_vault(&ResourceId::parse(CMK_VAULT).unwrap()).await.unwrap().value.unwrap();
    assert!(!vault.properties.access_policies.iter().any(|p| p.object_id == principal), "the grant was revoked");

    // Orphan: the object goes, the cache stays.
    let orphan = s
        .create(cache_manifest(
            "keep",
            serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"}),
            serde_json::json!({"deletionPolicy": "Orphan"}),
        ))
        .await;
    s.wait_phase(&orphan, Phase::Ready).await;
    s.api.delete(&orphan, &DeleteParams::default()).await.unwrap();
    s.wait_gone(&orphan).await;
    assert!(s.requests("DELETE", "/caches/keep").is_empty());
    assert!(azure.get_cache(&ResourceId::cache(SUB, "hpc-rg", "keep")).await.unwrap().value.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn finalizer_does_not_block_when_azure_already_lost_the_cache() {
    let s = Scenario::new("lost", SimConfig::default()).await;
    let name = s.apply("user-assigned.yaml");
    s.wait_phase(&name, Phase::Ready).await;
    // Someone deletes the cache in Azure directly, and the operator is down meanwhile.
    let mut s = s;
    s.kill_operator();
    let id = ResourceId::cache(SUB, "hpc-rg", &name);
    s.azure().await.delete_cache(&id).await.unwrap();
    s.sim.advance(Duration::from_secs(3600));
    s.api.delete(&name, &DeleteParams::default()).await.unwrap();
    s.start_operator();
    s.wait_gone(&name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_while_creating_and_authorizing_resumes_without_a_second_cache() {
    let mut s = Scenario::new("sigkill", SimConfig::default()).await;
    let name = s.apply("system-assigned.yaml");
    // Kill right after the create reached Azure (the cache is Creating there), before the operator saw the result.
    s.wait_for_request("PUT", "/caches/genomics-cache").await;
    s.kill_operator();
    // Usually still Creating; a reconcile queued by the intent write may already have seen WaitingForKey.
    let killed = s.get(&name).await;
    assert!(matches!(phase_of(&killed), Some(Phase::Creating | Phase::WaitingForKey)), "{:?}", phase_of(&killed));
    assert!(killed.status.and_then(|st| st.azure_resource_id).is_some(), "the create was recorded before it was sent");
    s.start_operator();
    // Kill again right after the grant was sent, while Azure has not picked it up yet.
    s.wait_for_request("PUT", "/accessPolicies/add").await;
    s.kill_operator();
    let waiting = s.get(&name).await;
    assert!(matches!(phase_of(&waiting), Some(Phase::WaitingForKey | Phase::Authorizing)), "{:?}", phase_of(&waiting));
    let deadline = waiting.status.clone().unwrap().authorization_deadline.expect("deadline").0;
    s.start_operator();
    let ready = s.wait_phase(&name, Phase::Ready).await;
    let created = ready.status.unwrap().created_at.unwrap().0;
    assert_eq!(created + jiff::SignedDuration::from_mins(90), deadline, "deadline unchanged across restarts");
    assert_eq!(s.requests("PUT", "/caches/genomics-cache").len(), 1, "no second cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_in_the_manifest_updates_the_cache() {
    let s = Scenario::new("rotate", SimConfig::default()).await;
    let name = s.apply("system-assigned.yaml");
    s.wait_phase(&name, Phase::Ready).await;
    let patch = serde_json::json!({"spec": {"encryption": {"keyVersion": "fedcba9876543210fedcba9876543210"}}});
    s.api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let rotated = s
        .wait(&name, "the new key version active", |o| {
            phase_of(o) == Some(Phase::Ready)
                && o.status
                    .as_ref()
                    .and_then(|s| s.active_key_url.as_deref())
                    .is_some_and(|k| k.ends_with("/fedcba9876543210fedcba9876543210"))
        })
        .await;
    assert_eq!(rotated.status.unwrap().observed_generation, rotated.metadata.generation);
    assert_eq!(s.requests("PUT", "/caches/genomics-cache").len(), 1, "rotation is an update, not a new cache");
    assert!(!s.requests("PATCH", "/caches/genomics-cache").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_are_refused_before_any_cache_is_created() {
    let s = Scenario::new("badkey", SimConfig::default()).await;
    let seed = Seed::from_yaml(&format!(
        "vaults:\n- name: kv-bad\n  subscriptionId: {SUB}\n  resourceGroup: security-rg\n  location: eastus\n  enablePurgeProtection: true\n  keys:\n  - {{name: big, versions: [{{version: 11111111111111111111111111111111, size: 4096}}]}}\n  - {{name: ec, versions: [{{version: 22222222222222222222222222222222, kty: EC}}]}}\n  - {{name: off, versions: [{{version: 33333333333333333333333333333333, enabled: false}}]}}\n- name: kv-west\n  subscriptionId: {SUB}\n  resourceGroup: security-rg\n  location: westus\n  enablePurgeProtection: true\n  keys: [{{name: k, versions: [{{version: 44444444444444444444444444444444}}]}}]\ngrants:\n- {{vault: kv-bad, principalId: 0b0b0b0b-1111-4222-8333-444444444444}}\n- {{vault: kv-west, principalId: 0b0b0b0b-1111-4222-8333-444444444444}}\n"
    ))
    .unwrap();
    s.sim.seed(&seed).unwrap();
    let vault =
        |v: &str| format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/{v}");
    let cases = [
        ("big", vault("kv-bad"), "big", "11111111111111111111111111111111", "KeySizeUnsupported"),
        ("ec", vault("kv-bad"), "ec", "22222222222222222222222222222222", "KeyNotRSA"),
        ("off", vault("kv-bad"), "off", "33333333333333333333333333333333", "KeyDisabled"),
        ("missing", vault("kv-bad"), "nope", "55555555555555555555555555555555", "KeyNotFound"),
        ("west", vault("kv-west"), "k", "44444444444444444444444444444444", "VaultRegionMismatch"),
    ];
    for (name, v, key, version, _) in &cases {
        s.create(cache_manifest(
            name,
            serde_json::json!({"keyVaultId": v, "keyName": key, "keyVersion": version}),
            serde_json::json!({}),
        ))
        .await;
    }
    for (name, _, _, _, reason) in &cases {
        let o = s
            .wait(name, &format!("Stalled {reason}"), |o| {
                o.status
                    .as_ref()
                    .is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"))
            })
            .await;
        let (_, got, msg) = condition(&o, "Stalled");
        assert_eq!(&got, reason, "{name}: {msg}");
        assert_eq!(condition(&o, "KeyValid").0, "False");
        assert_eq!(phase_of(&o), Some(Phase::Pending));
    }
    assert!(s.requests("PUT", "/caches/").is_empty(), "no cache was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn product_retirement_is_a_terminal_condition_not_a_retry_loop() {
    let s = Scenario::new("retired", SimConfig { retired: true, ..SimConfig::default() }).await;
    let name = s.apply("user-assigned.yaml");
    let o = s
        .wait(&name, "Stalled", |o| {
            o.status.as_ref().is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"))
        })
        .await;
    let (_, reason, msg) = condition(&o, "Stalled");
    assert_eq!(reason, "CreateRejected");
    assert!(msg.contains("retirement"), "{msg}");
    assert_eq!(phase_of(&o), Some(Phase::Failed));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.requests("PUT", "/caches/").len(), 1, "the refused create is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_may_only_use_the_vaults_its_admin_allows() {
    let s = Scenario::new("policy", SimConfig::default()).await;
    let annotate = s
        .cluster
        .kubectl()
        .args(["annotate", "namespace", &s.ns])
        .arg(format!("hpccache.io/allowed-vault-scopes=/subscriptions/{SUB}/resourceGroups/other-rg"))
        .output()
        .unwrap();
    assert!(annotate.status.success(), "{}", String::from_utf8_lossy(&annotate.stderr));
    let name = s.apply("system-assigned.yaml");
    let o = s
        .wait(&name, "Stalled", |o| {
            o.status.as_ref().is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"))
        })
        .await;
    let (_, reason, msg) = condition(&o, "Stalled");
    assert_eq!(reason, "VaultNotAllowed", "{msg}");
    assert!(msg.contains("other-rg"), "{msg}");
    assert!(
        s.requests("GET", "/vaults/kv-cmk").is_empty() && s.requests("PATCH", "/vaults/").is_empty(),
        "the vault was never touched"
    );
    assert!(s.requests("PUT", "/caches/").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_namespace_annotation_is_applied_without_touching_the_object() {
    // A Stalled object is looked at again only after the resync (10 minutes here): what moves it is the watch on
    // its Namespace, whose vault-scope annotation a cluster admin widens.
    let s = Scenario::with_args("nswatch", SimConfig::default(), &["--resync-seconds", "600"]).await;
    let annotate = |scope: &str| {
        let out = s
            .cluster
            .kubectl()
            .args(["annotate", "--overwrite", "namespace", &s.ns])
            .arg(format!("hpccache.io/allowed-vault-scopes=/subscriptions/{SUB}/resourceGroups/{scope}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    annotate("other-rg");
    let name = s.apply("system-assigned.yaml");
    let stalled = |o: &HpcCache| {
        o.status.as_ref().is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"))
    };
    let o = s.wait(&name, "Stalled", stalled).await;
    assert_eq!(condition(&o, "Stalled").1, "VaultNotAllowed");
    let generation = o.metadata.generation;
    annotate("security-rg");
    s.wait_phase(&name, Phase::Ready).await;
    assert_eq!(s.get(&name).await.metadata.generation, generation, "the object itself was not changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_label_selector_shards_objects_between_operators() {
    let s = Scenario::with_args("shard", SimConfig::default(), &["--selector", "shard=a"]).await;
    let mine = cache_manifest(
        "mine",
        serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"}),
        serde_json::json!({}),
    );
    let mut mine = mine;
    mine["metadata"]["labels"] = serde_json::json!({"shard": "a"});
    let theirs = cache_manifest(
        "theirs",
        serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"}),
        serde_json::json!({}),
    );
    s.create(theirs).await;
    let name = s.create(mine).await;
    s.wait_phase(&name, Phase::Ready).await;
    assert!(s.get("theirs").await.status.is_none(), "another shard's object is left alone");
    assert!(s.requests("GET", "/caches/theirs").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_metrics_and_no_secret_in_the_log() {
    let s = Scenario::with_args("observe", SimConfig::default(), &["--log-format", "json"]).await;
    let name = s.apply("system-assigned.yaml");
    s.wait_phase(&name, Phase::Ready).await;
    let log = std::fs::read_to_string(&s.log).unwrap();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let addr = lines
        .iter()
        .find_map(|l| l["fields"]["addr"].as_str().map(str::to_string))
        .expect("the metrics address is logged");
    let secret = s.sim.env().into_iter().find(|(k, _)| k == "AZURE_CLIENT_SECRET").unwrap().1;
    assert!(!secret.is_empty() && !log.contains(&secret), "the client secret never reaches the log");
    assert!(!log.contains("Bearer "), "no token in the log");

    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        async move {
            let resp = reqwest::get(url).await.unwrap();
            (resp.status().is_success(), resp.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (true, "ok".to_string()));
    assert_eq!(get("/readyz").await, (true, "ready".to_string()));
    let (ok, metrics) = get("/metrics").await;
    assert!(ok);
    assert!(metrics.contains("hpccache_objects{phase=\"Ready\"} 1"), "{metrics}");
    assert!(metrics.contains("hpccache_azure_calls_total{operation=\"caches.put\",status=\"201\"} 1"), "{metrics}");
    assert!(metrics.contains("hpccache_reconciles_total{result=\"ok\"}"), "{metrics}");
    assert!(metrics.contains(&format!("hpccache_ready{{namespace=\"{}\",name=\"{name}\"}} 1", s.ns)), "{metrics}");
    assert!(metrics.contains("hpccache_reconcile_duration_seconds_count{result=\"ok\"}"), "{metrics}");
    assert!(!metrics.contains("hpccache_authorization_deadline_timestamp_seconds{"), "no deadline once Ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_election_lets_one_replica_act_and_hands_over_on_shutdown() {
    let mut s = Scenario::with_args("leader", SimConfig::default(), &["--leader-election"]).await;
    // Restart with the lease in the test namespace, plus a second replica B.
    s.kill_operator();
    let ns = s.ns.clone();
    s.extra_args.extend(["--leader-election-namespace".to_string(), ns.clone()]);
    s.start_operator();
    let b_log = std::env::temp_dir().join(format!("hpcc-operator-{ns}-b.log"));
    let mut b = s.spawn_operator(&b_log);
    let leads = |log: &PathBuf| std::fs::read_to_string(log).unwrap_or_default().contains(" leading");

    let start = Instant::now();
    while !(leads(&s.log) || leads(&b_log)) {
        assert!(start.elapsed() < TIMEOUT, "nobody leads\n{}", s.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(leads(&s.log) != leads(&b_log), "exactly one replica leads");
    // Both replicas are ready, leader and standby, within 15 s: a rolling update never waits on the Lease.
    let readyz = |log: &PathBuf| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let line = text.lines().rev().find(|l| l.contains("serving /metrics")).map(str::to_string);
        line.and_then(|l| l.split("addr=").nth(1).map(|a| a.split_whitespace().next().unwrap_or_default().to_string()))
    };
    for log in [&s.log, &b_log] {
        let start = Instant::now();
        loop {
            let ok = match readyz(log) {
                Some(addr) => reqwest::get(format!("http://{addr}/readyz")).await.is_ok_and(|r| r.status() == 200),
                None => false,
            };
            if ok {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "{} not ready within 15 s", log.display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // SIGTERM the leader: it finishes, releases the lease, and the other replica takes over.
    let (leader, follower_log) =
        if leads(&s.log) { (s.operator.as_mut().unwrap(), b_log.clone()) } else { (&mut b, s.log.clone()) };
    assert!(Command::new("kill").args(["-TERM", &leader.id().to_string()]).status().unwrap().success());
    let status = leader.wait().unwrap();
    assert!(status.success(), "a graceful shutdown exits 0: {status:?}");
    let start = Instant::now();
    while !leads(&follower_log) {
        assert!(start.elapsed() < Duration::from_secs(30), "the other replica did not take over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new leader does the work.
    let name = s.apply("user-assigned.yaml");
    s.wait_phase(&name, Phase::Ready).await;
    let _ = b.kill();
    let _ = b.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn many_caches_on_one_unprotected_vault_patch_it_once() {
    let s = Scenario::new("fanout", SimConfig::default()).await;
    let names: Vec<String> = futures::future::join_all((0..6).map(|i| {
        s.create(cache_manifest(
            &format!("fan-{i}"),
            serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"}),
            serde_json::json!({}),
        ))
    }))
    .await;
    for name in &names {
        s.wait_phase(name, Phase::Ready).await;
    }
    assert_eq!(s.requests("PATCH", "/vaults/kv-cmk").len(), 1, "purge protection is turned on once");
    // Grants waiting for the vault's turn ride along (up to 16 identities per add): at most one add per cache.
    let adds = s.requests("PUT", "/accessPolicies/add").len();
    assert!((1..=names.len()).contains(&adds), "{adds} access-policy adds for {} caches", names.len());
    assert_eq!(s.requests("PUT", "/caches/").len(), names.len(), "one create per cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn user_assigned_with_a_role_on_an_rbac_vault_never_waits() {
    let s = Scenario::new("ua-rbac", SimConfig::default()).await;
    let ua = "5c5c5c5c-1111-4222-8333-444444444444";
    s.sim.seed(&Seed::from_yaml(&format!("grants: [{{vault: kv-rbac, principalId: {ua}}}]")).unwrap()).unwrap();
    let name = s
        .create(cache_manifest(
            "ua-rbac",
            serde_json::json!({"keyVaultId": format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/kv-rbac"), "keyName": "cache-key", "keyVersion": "00112233445566778899aabbccddeeff"}),
            serde_json::json!({"identity": {"type": "UserAssigned", "userAssignedIdentityId": format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cache-id")}}),
        ))
        .await;
    s.wait_phase(&name, Phase::Ready).await;
    let reasons: Vec<String> = s.events(&name).await.into_iter().map(|e| e.1).collect();
    assert!(!reasons.iter().any(|r| r == "WaitingForKey" || r == "Authorizing"), "{reasons:?}");
    assert!(s.requests("PUT", "/roleAssignments/").is_empty(), "the existing role assignment was found, not re-made");
    // Looked up with the vault facts (re-read once per facts TTL, 1 s in these tests).
    assert!(!s.requests("GET", "/roleAssignments").is_empty(), "the operator looked the assignment up");
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_a_ready_cache_to_another_vault_grants_there_first() {
    let s = Scenario::new("move", SimConfig::default()).await;
    let name = s.apply("system-assigned.yaml");
    let principal = s.wait_phase(&name, Phase::Ready).await.status.unwrap().principal_id.unwrap();
    let patch = serde_json::json!({"spec": {"encryption": {
        "keyVaultId": format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/kv-rbac"),
        "keyVersion": "00112233445566778899aabbccddeeff"}}});
    s.api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let moved = s
        .wait(&name, "the key from kv-rbac active", |o| {
            phase_of(o) == Some(Phase::Ready)
                && o.status.as_ref().and_then(|s| s.active_key_url.as_deref()).is_some_and(|k| k.contains("kv-rbac"))
        })
        .await;
    let log = s.sim.requests();
    let grant_at = log.iter().position(|r| {
        r.method == "PUT" && r.path.contains("/vaults/kv-rbac/providers/Microsoft.Authorization/roleAssignments/")
    });
    let patch_at = log.iter().position(|r| r.method == "PATCH" && r.path.contains("/caches/genomics-cache"));
    assert!(
        grant_at.is_some() && patch_at.is_some() && grant_at < patch_at,
        "role assignment on the new vault before the cache PATCH"
    );
    let grants = moved.status.unwrap().grants;
    assert!(grants.iter().any(|g| g.scope.contains("kv-cmk") && g.principal_id == principal && g.made));
    assert!(grants.iter().any(|g| g.scope.contains("kv-rbac") && g.principal_id == principal && g.made));
    // Deleting revokes both.
    s.api.delete(&name, &DeleteParams::default()).await.unwrap();
    s.wait_gone(&name).await;
    assert_eq!(s.requests("DELETE", "/roleAssignments/").len(), 1);
    let vault = s.azure().await.get_vault(&ResourceId::parse(CMK_VAULT).unwrap()).await.unwrap().value.unwrap();
    assert!(!vault.properties.access_policies.iter().any(|p| p.object_id == principal));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_object_for_the_same_azure_cache_touches_nothing() {
    let s = Scenario::new("owner", SimConfig::default()).await;
    let enc = serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"});
    let first = s.create(cache_manifest("first", enc.clone(), serde_json::json!({}))).await;
    s.wait_phase(&first, Phase::Ready).await;
    let mut second = cache_manifest("second", enc, serde_json::json!({}));
    second["spec"]["azure"]["name"] = serde_json::json!("first");
    let second = s.create(second).await;
    let o = s
        .wait(&second, "Stalled", |o| {
            o.status.as_ref().is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"))
        })
        .await;
    assert_eq!(condition(&o, "Stalled").1, "CacheOwnedByAnother");
    s.api.delete(&second, &DeleteParams::default()).await.unwrap();
    s.wait_gone(&second).await;
    assert!(s.requests("DELETE", "/caches/first").is_empty(), "the other object's cache survives");
    assert!(s.requests("PATCH", "/caches/first").is_empty());
    assert_eq!(phase_of(&s.get(&first).await), Some(Phase::Ready));
}

// ---- Azure's contract (issue 8): key operations, vault conflicts, rotation, grant propagation -----------------

#[tokio::test(flavor = "multi_thread")]
async fn a_key_without_wrap_and_unwrap_is_refused_before_any_cache_put() {
    let s = Scenario::new("keyops", SimConfig::default()).await;
    let sign_only = SeedKeyVersion { key_ops: Some(vec!["sign".into(), "verify".into()]), ..SeedKeyVersion::default() };
    let version = s.sim.add_key_version("kv-cmk", "signing-key", &sign_only).unwrap();
    let name = s
        .create(cache_manifest(
            "signing",
            serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "signing-key", "keyVersion": version}),
            serde_json::json!({}),
        ))
        .await;
    let stalled = |o: &HpcCache| condition_is(o, "Stalled", "True");
    let o = s.wait(&name, "Stalled", stalled).await;
    let (status, reason, msg) = condition(&o, "KeyValid");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "KeyOperationsMissing"), "{msg}");
    assert!(msg.contains("wrapKey and unwrapKey"), "the message names the missing operations: {msg}");
    assert_eq!(condition(&o, "Stalled").1, "KeyOperationsMissing");
    assert!(s.requests("PUT", "/caches/").is_empty(), "no cache was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn vault_conflict_errors_neither_stall_a_cache_nor_leak_its_grant() {
    let s = Scenario::new("conflict", SimConfig::default()).await;
    // Key Vault answers three access-policy writes with 409 ConflictError (as when another writer overlaps).
    s.add_fault(serde_json::json!({"route": "PUT .*/accessPolicies/add", "kind": "error", "status": 409, "code": "ConflictError", "count": 3})).await;
    let name = s.apply("system-assigned.yaml");
    let stalled_seen = std::sync::atomic::AtomicBool::new(false);
    let ready = s
        .wait(&name, "Ready, never Stalled", |o| {
            if condition_is(o, "Stalled", "True") {
                stalled_seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            phase_of(o) == Some(Phase::Ready)
        })
        .await;
    assert!(!stalled_seen.load(std::sync::atomic::Ordering::Relaxed), "a conflict is retried, never Stalled");
    assert!(s.requests("PUT", "/accessPolicies/add").iter().filter(|r| r.status == 409).count() >= 3);
    let principal = ready.status.unwrap().principal_id.unwrap();

    // The revoke meets three conflicts too, and still happens.
    s.add_fault(serde_json::json!({"route": "PUT .*/accessPolicies/remove", "kind": "error", "status": 409, "code": "ConflictError", "count": 3})).await;
    s.api.delete(&name, &DeleteParams::default()).await.unwrap();
    s.wait_gone(&name).await;
    let vault = s.azure().await.get_vault(&ResourceId::parse(CMK_VAULT).unwrap()).await.unwrap().value.unwrap();
    assert!(
        !vault.properties.access_policies.iter().any(|p| p.object_id.eq_ignore_ascii_case(&principal)),
        "no access policy is left for the deleted cache's principal"
    );
    assert!(s.requests("PUT", "/accessPolicies/remove").iter().any(|r| r.status == 200));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_to_latest_is_turned_on_once_and_azures_rotations_are_kept() {
    let s = Scenario::new("rotate", SimConfig::default()).await;
    let name = s
        .create(cache_manifest(
            "rotating",
            serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef", "rotateToLatestKeyVersion": true}),
            serde_json::json!({}),
        ))
        .await;
    s.wait_phase(&name, Phase::Ready).await;
    // Azure does not apply the flag on create (Terraform azurerm documents it): exactly one PATCH turns it on.
    let cache_patches = || s.requests("PATCH", "/caches/rotating");
    s.wait(&name, "rotation turned on", |_| !cache_patches().is_empty()).await;
    assert_eq!(cache_patches().len(), 1, "one follow-up PATCH after create");

    // A newer key version appears; Azure moves the cache to it by itself within its rotation time.
    let newest = s.sim.add_key_version("kv-cmk", "cache-key", &SeedKeyVersion::default()).unwrap();
    s.sim.advance(Duration::from_secs(61 * 60));
    let rotated = s
        .wait(&name, "the cache on the newest version", |o| {
            o.status.as_ref().and_then(|st| st.active_key_url.as_deref()).is_some_and(|k| k.ends_with(&newest))
        })
        .await;
    assert_eq!(phase_of(&rotated), Some(Phase::Ready));
    // Several resyncs later (2 s each here): no PATCH rolled it back, and the cache stayed Ready.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = s.get(&name).await;
    assert_eq!(cache_patches().len(), 1, "the operator never undoes Azure's rotation");
    assert_eq!(phase_of(&now), Some(Phase::Ready));
    assert_eq!(condition(&now, "Stalled").0, "False");
    assert!(now.status.unwrap().active_key_url.unwrap().ends_with(&newest));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_realistic_grant_propagation_every_example_is_ready_with_one_put() {
    let cfg = SimConfig::default();
    assert!(cfg.grant_propagation >= Duration::from_secs(60), "the default is a realistic propagation delay");
    let s = Scenario::new("propagation", cfg).await;
    let examples = ["system-assigned.yaml", "user-assigned.yaml", "rbac-vault.yaml", "manual.yaml"];
    let names: Vec<String> = examples.iter().map(|e| s.apply(e)).collect();
    // The Manual example waits for a person: grant as one would, once the principal is known.
    let manual = s
        .wait(&names[3], "a principal to grant", |o| {
            o.status.as_ref().is_some_and(|st| st.principal_id.is_some() && st.phase == Some(Phase::WaitingForKey))
        })
        .await;
    s.sim.grant("kv-manual", &manual.status.unwrap().principal_id.unwrap()).unwrap();
    for name in &names {
        let ready = s.wait_phase(name, Phase::Ready).await;
        let cache = ready.status.unwrap().azure_resource_id.unwrap();
        let cache_name = cache.rsplit('/').next().unwrap().to_string();
        assert_eq!(s.requests("PUT", &format!("/caches/{cache_name}")).len(), 1, "{name}: one cache PUT");
    }
}

// ---- Day-2 control (issue 10): reconcile policy, detach, adoption ----------------------------------------------

/// Requests that change something in Azure (not reads, not token requests).
fn azure_writes(s: &Scenario) -> usize {
    s.sim.requests().iter().filter(|r| matches!(r.method.as_str(), "PUT" | "PATCH" | "DELETE")).count()
}

async fn annotate(s: &Scenario, name: &str, key: &str, value: Option<&str>) {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    s.api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_writes_nothing_to_azure_and_removing_it_applies_the_change() {
    let s = Scenario::new("skip", SimConfig::default()).await;
    let name = s.apply("system-assigned.yaml");
    s.wait_phase(&name, Phase::Ready).await;
    annotate(&s, &name, "hpccache.io/reconcile-policy", Some("skip")).await;
    s.wait(&name, "skip reported", |o| condition(o, "Reconciling").1 == "ReconcileSkipped").await;
    let writes = azure_writes(&s);
    let patch = serde_json::json!({"spec": {"encryption": {"keyVersion": "fedcba9876543210fedcba9876543210"}}});
    s.api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let noted = s
        .wait(&name, "the skipped update reported", |o| {
            condition(o, "Reconciling").2.contains("updating the cache")
                && o.status.as_ref().and_then(|st| st.observed_generation) == o.metadata.generation
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // more than one resync (2 s here)
    assert_eq!(azure_writes(&s), writes, "no Azure write of any kind under skip");
    assert!(noted.status.unwrap().active_key_url.unwrap().ends_with("/0123456789abcdef0123456789abcdef"));

    annotate(&s, &name, "hpccache.io/reconcile-policy", None).await;
    s.wait(&name, "the new key version once skip is removed", |o| {
        o.status
            .as_ref()
            .and_then(|st| st.active_key_url.as_deref())
            .is_some_and(|k| k.ends_with("/fedcba9876543210fedcba9876543210"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn detach_on_delete_leaves_the_azure_cache_and_its_grant() {
    let s = Scenario::new("detach", SimConfig::default()).await;
    let name = s.apply("system-assigned.yaml");
    let ready = s.wait_phase(&name, Phase::Ready).await;
    let principal = ready.status.unwrap().principal_id.unwrap();
    annotate(&s, &name, "hpccache.io/reconcile-policy", Some("detach-on-delete")).await;
    s.api.delete(&name, &DeleteParams::default()).await.unwrap();
    s.wait_gone(&name).await;
    let id = ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.StorageCache/caches/genomics-cache"
    ))
    .unwrap();
    assert!(s.azure().await.get_cache(&id).await.unwrap().value.is_some(), "the Azure cache is still there (GET 200)");
    assert!(s.requests("DELETE", "/caches/").is_empty());
    let vault = s.azure().await.get_vault(&ResourceId::parse(CMK_VAULT).unwrap()).await.unwrap().value.unwrap();
    assert!(vault.properties.access_policies.iter().any(|p| p.object_id == principal), "the grant is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_made_outside_the_operator_is_adopted_only_on_request() {
    let s = Scenario::new("adopt", SimConfig::default()).await;
    let id = ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.StorageCache/caches/legacy-cache"
    ))
    .unwrap();
    let made_by_hand: hpcc_azure::Cache = serde_json::from_value(serde_json::json!({
        "location": "eastus", "sku": {"name": "Standard_2G"}, "identity": {"type": "SystemAssigned"},
        "properties": {"cacheSizeGB": 3072, "subnet": format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.Network/virtualNetworks/hpc-vnet/subnets/cache")}
    }))
    .unwrap();
    s.azure().await.put_cache(&id, &made_by_hand).await.unwrap();
    let writes = azure_writes(&s);

    let name = s
        .create(cache_manifest("legacy-cache", serde_json::Value::Null, serde_json::json!({"tags": {"team": "x"}})))
        .await;
    let o = s.wait(&name, "Stalled", |o| condition_is(o, "Stalled", "True")).await;
    assert_eq!(condition(&o, "Stalled").1, "CacheExistsNotOwned");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(azure_writes(&s), writes, "nothing is written to a cache the operator did not make");

    annotate(&s, &name, "hpccache.io/adopt", Some("true")).await;
    s.wait_phase(&name, Phase::Ready).await;
    let tags = s.azure().await.get_cache(&id).await.unwrap().value.unwrap().tags.unwrap_or_default();
    let owner = tags.get("hpccache.io-owner").expect("owner tag added");
    assert!(owner.ends_with(&format!("/{}/legacy-cache", s.ns)), "cluster/namespace/name: {owner}");
    assert_eq!(tags.get("team").map(String::as_str), Some("x"));
}

// ---- AmlFilesystem (Azure Managed Lustre, issue 13) --------------------------------------------------------------

const FRESH_ID: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/security-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/fresh-id";
const FRESH_PRINCIPAL: &str = "7e7e7e7e-1111-4222-8333-444444444444";

fn seed_fresh_identity_and_storage(s: &Scenario) {
    let seed = Seed::from_yaml(&format!(
        "identities: [{{subscriptionId: {SUB}, resourceGroup: security-rg, name: fresh-id, location: eastus, principalId: {FRESH_PRINCIPAL}}}]\n\
         storageAccounts: [{{subscriptionId: {SUB}, resourceGroup: hpc-rg, name: hpcdata, location: eastus}}]"
    ))
    .unwrap();
    s.sim.seed(&seed).unwrap();
}

fn amlfs_manifest(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "azure": {"subscriptionId": SUB, "resourceGroup": "hpc-rg", "location": "eastus"},
        "sku": "AMLFS-Durable-Premium-250", "storageCapacityTiB": 8,
        "subnetId": format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.Network/virtualNetworks/hpc-vnet/subnets/lustre"),
        "maintenanceWindow": {"dayOfWeek": "Sunday", "timeOfDayUTC": "02:00"},
        "identity": {"userAssignedIdentityId": FRESH_ID},
        "encryption": {"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::json!({"apiVersion": "hpccache.io/v1alpha1", "kind": "AmlFilesystem", "metadata": {"name": name}, "spec": spec})
}

fn amlfs_api(s: &Scenario) -> Api<hpcc_api::v1alpha1::AmlFilesystem> {
    Api::namespaced(s.api.clone().into_client(), &s.ns)
}

async fn wait_amlfs(
    s: &Scenario,
    name: &str,
    what: &str,
    done: impl Fn(&hpcc_api::v1alpha1::AmlFilesystem) -> bool,
) -> hpcc_api::v1alpha1::AmlFilesystem {
    let api = amlfs_api(s);
    let start = Instant::now();
    loop {
        if let Ok(Some(o)) = api.get_opt(name).await
            && done(&o)
        {
            return o;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "{name}: timed out waiting for {what}\n{:?}\n{}",
            api.get_opt(name).await.ok().flatten().and_then(|o| o.status),
            s.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn amlfs_phase(o: &hpcc_api::v1alpha1::AmlFilesystem) -> Option<Phase> {
    o.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread")]
async fn amlfs_is_granted_before_its_one_put_and_a_key_change_is_one_patch() {
    let s = Scenario::new("amlfs", SimConfig { grant_propagation: Duration::ZERO, ..SimConfig::default() }).await;
    seed_fresh_identity_and_storage(&s);
    let obj: hpcc_api::v1alpha1::AmlFilesystem =
        serde_json::from_value(amlfs_manifest("lustre", serde_json::json!({}))).unwrap();
    amlfs_api(&s).create(&PostParams::default(), &obj).await.unwrap();
    let ready = wait_amlfs(&s, "lustre", "Ready", |o| amlfs_phase(o) == Some(Phase::Ready)).await;
    let log = s.sim.requests();
    let grant_at =
        log.iter().position(|r| r.method == "PUT" && r.path.contains("/accessPolicies/add")).expect("a grant");
    let puts: Vec<usize> =
        (0..log.len()).filter(|i| log[*i].method == "PUT" && log[*i].path.contains("/amlFilesystems/lustre")).collect();
    assert_eq!(puts.len(), 1, "one file-system PUT");
    assert!(grant_at < puts[0], "the grant precedes the create");
    let status = ready.status.unwrap();
    assert!(status.mgs_address.is_some() && status.mount_command.is_some(), "client info in status");
    assert_eq!(status.principal_id.as_deref(), Some(FRESH_PRINCIPAL));

    let patch = serde_json::json!({"spec": {"encryption": {"keyVersion": "fedcba9876543210fedcba9876543210"}}});
    amlfs_api(&s).patch("lustre", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    wait_amlfs(&s, "lustre", "the new key", |o| {
        amlfs_phase(o) == Some(Phase::Ready)
            && o.status
                .as_ref()
                .and_then(|st| st.active_key_url.as_deref())
                .is_some_and(|k| k.ends_with("/fedcba9876543210fedcba9876543210"))
    })
    .await;
    assert_eq!(s.requests("PATCH", "/amlFilesystems/lustre").len(), 1, "a key version change is one PATCH");
    assert_eq!(s.requests("PUT", "/amlFilesystems/lustre").len(), 1);

    // Delete removes the file system and the grant the operator made.
    amlfs_api(&s).delete("lustre", &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    while amlfs_api(&s).get_opt("lustre").await.unwrap().is_some() {
        assert!(start.elapsed() < TIMEOUT, "not deleted\n{}", s.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let vault = s.azure().await.get_vault(&ResourceId::parse(CMK_VAULT).unwrap()).await.unwrap().value.unwrap();
    assert!(!vault.properties.access_policies.iter().any(|p| p.object_id == FRESH_PRINCIPAL), "the grant is revoked");
    assert_eq!(s.requests("DELETE", "/amlFilesystems/lustre").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn amlfs_manual_creates_nothing_and_says_who_needs_what() {
    let s = Scenario::new("amlfs-manual", SimConfig::default()).await;
    seed_fresh_identity_and_storage(&s);
    let obj: hpcc_api::v1alpha1::AmlFilesystem =
        // kv-manual has purge protection on, so only the key grant is missing.
        serde_json::from_value(amlfs_manifest(
            "manual",
            serde_json::json!({"keyAccess": "Manual", "encryption": {"keyVaultId": CMK_VAULT.replace("kv-cmk", "kv-manual"), "keyName": "cache-key", "keyVersion": "aabbccddeeff00112233445566778899"}}),
        ))
        .unwrap();
    amlfs_api(&s).create(&PostParams::default(), &obj).await.unwrap();
    let o = wait_amlfs(&s, "manual", "KeyAuthorized=False", |o| {
        o.status
            .as_ref()
            .is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "KeyAuthorized" && c.status == "False"))
    })
    .await;
    let c = o.status.unwrap().conditions.into_iter().find(|c| c.type_ == "KeyAuthorized").unwrap();
    assert_eq!(c.reason, "AwaitingManualGrant");
    assert!(
        c.message.contains(FRESH_PRINCIPAL) && c.message.contains("wrapKey") && c.message.contains("kv-manual"),
        "{}",
        c.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.requests("PUT", "/amlFilesystems/").is_empty(), "nothing is created");
    assert!(s.requests("PUT", "/accessPolicies/").is_empty(), "and nothing is granted");
}

#[tokio::test(flavor = "multi_thread")]
async fn amlfs_blob_integration_roles_exist_before_the_put_and_orphan_keeps_everything() {
    let s = Scenario::new("amlfs-blob", SimConfig { grant_propagation: Duration::ZERO, ..SimConfig::default() }).await;
    seed_fresh_identity_and_storage(&s);
    let account =
        format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.Storage/storageAccounts/hpcdata");
    let blob = serde_json::json!({"blobIntegration": {"storageAccountId": account, "container": "data", "loggingContainer": "logs", "grantBlobAccess": "Automatic"}, "deletionPolicy": "Orphan"});
    let obj: hpcc_api::v1alpha1::AmlFilesystem = serde_json::from_value(amlfs_manifest("blob", blob)).unwrap();
    amlfs_api(&s).create(&PostParams::default(), &obj).await.unwrap();
    wait_amlfs(&s, "blob", "Ready", |o| amlfs_phase(o) == Some(Phase::Ready)).await;
    let log = s.sim.requests();
    let role_puts: Vec<usize> = (0..log.len())
        .filter(|i| {
            log[*i].method == "PUT"
                && log[*i].path.contains("/storageAccounts/hpcdata/providers/Microsoft.Authorization/roleAssignments/")
        })
        .collect();
    let put_at = log.iter().position(|r| r.method == "PUT" && r.path.contains("/amlFilesystems/blob")).expect("a PUT");
    assert_eq!(role_puts.len(), 2, "Storage Account Contributor and Storage Blob Data Contributor");
    assert!(role_puts.iter().all(|i| *i < put_at), "both role assignments precede the create");
    // Orphan: deleting the object keeps the file system and the grants.
    amlfs_api(&s).delete("blob", &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    while amlfs_api(&s).get_opt("blob").await.unwrap().is_some() {
        assert!(start.elapsed() < TIMEOUT, "not released\n{}", s.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        s.requests("DELETE", "/amlFilesystems/").is_empty() && s.requests("DELETE", "/roleAssignments/").is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_arm_write_tokens_never_holds_the_only_reconcile_slot() {
    // One reconcile slot and a client-side write budget of one token every 2 s: five new caches need about eleven
    // writes. An operator that slept for tokens inside a reconcile would make the fifth object wait ~8 s for its
    // first status; it gets it at once because a reconcile without a token gives its slot back (Deferred) and
    // comes back when its reserved token is due.
    let mut s = Scenario::with_args("deferred", SimConfig::default(), &["--concurrency", "1"]).await;
    s.kill_operator();
    s.extra_env =
        vec![("HPCC_ARM_WRITES_PER_SECOND".into(), "0.5".into()), ("HPCC_ARM_WRITE_BURST".into(), "1".into())];
    s.start_operator();
    let mut names = vec![];
    for i in 0..5 {
        let manifest = cache_manifest(
            &format!("slot-{i}"),
            serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"}),
            serde_json::json!({"identity": {"type": "SystemAssigned"}, "keyAccess": "Automatic"}),
        );
        names.push(s.create(manifest).await);
    }
    let applied = Instant::now();
    for name in &names {
        s.wait(name, "a first status", |o| phase_of(o).is_some()).await;
    }
    let first_status = applied.elapsed();
    assert!(first_status < Duration::from_secs(4), "the last object waited {first_status:?} for its first reconcile");
    for name in &names {
        s.wait_phase(name, Phase::Ready).await;
    }
    for name in &names {
        assert_eq!(s.requests("PUT", &format!("/caches/{name}")).len(), 1, "{name}: one PUT");
    }
    // The writes really were spaced by the budget (so the test exercised deferral): 1 burst + 0.5/s.
    let writes: Vec<RequestRecord> =
        s.sim.requests().into_iter().filter(|r| r.method != "GET" && !r.host.contains(".vault.")).collect();
    let writes: Vec<&RequestRecord> = writes.iter().filter(|r| !r.path.contains("/oauth2/")).collect();
    assert!(writes.len() >= 10, "{} writes", writes.len());
    let span = writes.last().unwrap().time.duration_since(writes[0].time).as_secs_f64() / SPEED;
    assert!(span >= (writes.len() - 1) as f64 * 2.0 * 0.9, "{} writes in {span:.1} s", writes.len());
}

#[tokio::test]
async fn a_cache_that_changed_in_a_list_read_for_another_object_is_reconciled_at_once() {
    // Polls every 30 s. Cache B is granted and then becomes healthy in Azure (20 simulated minutes = 6 s here) long
    // before its own next poll. Object A, created later, reads the resource group's list (the last one is older
    // than half a poll); B's change in it must wake B at once (`AzureChanges` wired into the controller with
    // `reconcile_on`), instead of leaving B Authorizing until its poll.
    let cfg = SimConfig { create_delay: Duration::from_secs(20 * 60), ..SimConfig::default() };
    let s = Scenario::with_args("wake", cfg, &["--poll-seconds", "30", "--resync-seconds", "600"]).await;
    let manifest = |name: &str| {
        cache_manifest(
            name,
            serde_json::json!({"keyVaultId": CMK_VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"}),
            serde_json::json!({"identity": {"type": "SystemAssigned"}, "keyAccess": "Automatic"}),
        )
    };
    let b = s.create(manifest("wake-b")).await;
    s.wait_phase(&b, Phase::Authorizing).await;
    let authorizing = Instant::now();
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert!(
        s.sim.cache_times().iter().any(|c| c.name == b && c.ready_at.is_some()),
        "premise: Azure reports B healthy by now"
    );
    assert_eq!(phase_of(&s.get(&b).await), Some(Phase::Authorizing), "premise: B's own poll has not come yet");
    let a_created = Instant::now();
    s.create(manifest("wake-a")).await;
    s.wait_phase(&b, Phase::Ready).await;
    let woken = a_created.elapsed();
    assert!(
        woken < Duration::from_secs(8),
        "B was Ready {woken:?} after A's list read (its own poll was due {:?} after that)\n{}",
        (authorizing + Duration::from_secs(31)).saturating_duration_since(a_created),
        s.log_tail()
    );
}

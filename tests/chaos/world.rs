//! The running world of a campaign: its own control plane (so the apiserver can be restarted), the proxy the
//! operators reach it through, the simulator, two operator replicas under a supervisor that restarts whatever
//! exits (as a Deployment would), and a snapshot of the objects that the drivers read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hpcc_api::v1alpha1::HpcCache;
use hpcc_sim::{Seed, SimConfig, Simulator};
use hpcc_test_support::TestCluster;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

use super::plan::{self, CachePlan, Identity};
use super::proxy::Proxy;

/// Simulated seconds per real second: the 90-minute window lasts 90 s, a grant propagates in 5 s.
pub const SPEED: f64 = 60.0;
pub const LEASE: &str = "hpc-cache-operator";
/// The simulator's default grant propagation.
pub const NORMAL_PROPAGATION: Duration = Duration::from_secs(5 * 60);

pub struct World {
    pub cluster: TestCluster,
    pub proxy: Proxy,
    pub sim: Simulator,
    pub ns: String,
    pub api: Api<HpcCache>,
    pub client: kube::Client,
    pub operators: Operators,
    pub http: reqwest::Client,
    /// name → the object as last listed (absent once deleted and gone).
    pub snapshot: Arc<Mutex<BTreeMap<String, HpcCache>>>,
    /// Principals a person granted by hand (Manual caches): the operator is not expected to revoke those.
    pub person_grants: Mutex<Vec<String>>,
    /// While set, grants propagate slowly; [`World::tick`] restores the normal 5 minutes after it.
    pub slow_propagation_until: Mutex<Option<Instant>>,
    /// When the campaign started (plans and the journal count from here).
    pub t0: Instant,
    /// What happened, in order (also written to `journal.log`).
    pub journal: Mutex<Vec<String>>,
}

/// The seed of the campaign's Azure: the four vaults of [`plan::VAULTS`], the trusted identity and one fresh
/// identity per cache that asks for one.
pub fn seed(population: &[CachePlan]) -> Seed {
    let mut y = format!(
        "tenantId: {t}\nsubscriptions:\n  - id: {s}\n    resourceGroups: [hpc-rg, security-rg]\nprincipals:\n  - {{clientId: {c}, objectId: {o}, secret: {secret}, operator: true}}\nidentities:\n  - {{subscriptionId: {s}, resourceGroup: security-rg, name: {ti}, location: eastus, principalId: {tp}}}\n",
        t = plan::TENANT,
        s = plan::SUB,
        c = plan::OPERATOR_CLIENT,
        o = plan::OPERATOR_OID,
        secret = plan::OPERATOR_SECRET,
        ti = plan::TRUSTED_ID,
        tp = plan::TRUSTED_PRINCIPAL,
    );
    for p in population {
        if let Identity::UserFresh(name, principal) = &p.identity {
            y.push_str(&format!(
                "  - {{subscriptionId: {s}, resourceGroup: security-rg, name: {name}, location: eastus, principalId: {principal}}}\n",
                s = plan::SUB
            ));
        }
    }
    y.push_str("vaults:\n");
    for v in &plan::VAULTS {
        y.push_str(&format!(
            "  - name: {}\n    subscriptionId: {}\n    resourceGroup: security-rg\n    location: eastus\n    enableRbacAuthorization: {}\n    enablePurgeProtection: {}\n    keys:\n      - name: cache-key\n        versions: [{{version: {}}}, {{version: {}}}]\n",
            v.name, plan::SUB, v.rbac, v.purge_protection, v.versions[0], v.versions[1]
        ));
    }
    y.push_str("grants:\n");
    for v in &plan::VAULTS {
        y.push_str(&format!("  - {{vault: {}, principalId: {}}}\n", v.name, plan::OPERATOR_OID));
        y.push_str(&format!("  - {{vault: {}, principalId: {}}}\n", v.name, plan::TRUSTED_PRINCIPAL));
    }
    Seed::from_yaml(&y).expect("the campaign's seed parses")
}

impl World {
    pub async fn start(population: &[CachePlan], out_dir: PathBuf) -> World {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cluster = TestCluster::start();
        cluster.install_crds(format!("{}/crds", env!("CARGO_MANIFEST_DIR"))).await;
        let ns = cluster.namespace("chaos").await;
        let client = cluster.client().await;
        let api = Api::namespaced(client.clone(), &ns);
        let upstream: std::net::SocketAddr =
            cluster.server().trim_start_matches("https://").parse().expect("the apiserver is host:port");
        let proxy = Proxy::start(upstream).await;
        // The operators' kubeconfig: the admin one, through the proxy.
        let kubeconfig = out_dir.join("operator.kubeconfig");
        let text = std::fs::read_to_string(cluster.kubeconfig_path()).unwrap();
        std::fs::write(&kubeconfig, text.replace(cluster.server(), &format!("https://{}", proxy.addr()))).unwrap();

        let sim = Simulator::start(SimConfig { seed: Some(seed(population)), speed: SPEED, ..SimConfig::default() })
            .await
            .expect("simulator starts");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let operators = Operators::new(ns.clone(), kubeconfig, sim.env(), &out_dir);
        World {
            cluster,
            proxy,
            sim,
            ns,
            api,
            client,
            operators,
            http,
            snapshot: Arc::default(),
            person_grants: Mutex::new(Vec::new()),
            slow_propagation_until: Mutex::new(None),
            t0: Instant::now(),
            journal: Mutex::new(Vec::new()),
        }
    }

    /// POSTs `body` to the simulator's admin API at `path`.
    pub async fn admin_post(&self, path: &str, body: Value) {
        let url = self.sim.admin_url().join(path).unwrap();
        let r = self.http.post(url).json(&body).send().await.expect("simulator admin API");
        assert!(r.status().is_success(), "admin {path} refused {body}: {}", r.text().await.unwrap_or_default());
    }

    pub async fn admin_delete(&self, path: &str) {
        let url = self.sim.admin_url().join(path).unwrap();
        self.http.delete(url).send().await.expect("simulator admin API");
    }

    /// The simulator's `/state`: the world and every cache's computed provisioning and health state.
    pub async fn azure_state(&self) -> Value {
        let url = self.sim.admin_url().join("state").unwrap();
        self.http.get(url).send().await.expect("simulator admin API").json().await.expect("state is JSON")
    }

    /// Lists the objects into the snapshot (keeps the old one when the apiserver is away).
    pub async fn refresh(&self) -> bool {
        match self.api.list(&ListParams::default()).await {
            Ok(list) => {
                let map = list.items.into_iter().map(|o| (o.metadata.name.clone().unwrap_or_default(), o)).collect();
                *self.snapshot.lock().unwrap() = map;
                true
            }
            Err(_) => false,
        }
    }

    pub fn object(&self, name: &str) -> Option<HpcCache> {
        self.snapshot.lock().unwrap().get(name).cloned()
    }

    /// Adds a line to the journal and prints it.
    pub fn note(&self, line: &str) {
        let line = format!("[{:7.1}s] {line}", self.t0.elapsed().as_secs_f64());
        println!("{line}");
        self.journal.lock().unwrap().push(line);
    }

    /// The background duties, every few hundred milliseconds: restart exited replicas, end slow propagation.
    pub fn tick(&self) {
        self.operators.supervise();
        let mut slow = self.slow_propagation_until.lock().unwrap();
        if slow.is_some_and(|t| Instant::now() > t) {
            self.sim.set_grant_propagation(NORMAL_PROPAGATION);
            *slow = None;
        }
    }

    /// Who holds the leader-election lease now.
    pub async fn leader(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        api.get_opt(LEASE).await.ok().flatten().and_then(|l| l.spec.and_then(|s| s.holder_identity))
    }
}

/// Retries a Kubernetes call of the harness for up to a minute while the apiserver is away (restarting) or
/// answers 5xx/429; any other answer (404, 409, 422) is returned at once.
pub async fn retry<T, F: std::future::Future<Output = kube::Result<T>>>(
    what: &str,
    mut call: impl FnMut() -> F,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(kube::Error::Api(e)) if e.code < 500 && e.code != 429 => return Err(format!("{what}: {e}")),
            Err(e) if start.elapsed() > Duration::from_secs(60) => return Err(format!("{what}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// One operator replica: a process started again after it exits, with the same identity (a pod's restart).
struct Replica {
    name: String,
    log: PathBuf,
    child: Option<Child>,
    exited_at: Option<Instant>,
    starts: u32,
    /// Exits the campaign did not cause (non-zero status other than its SIGKILL/SIGTERM).
    unexpected_exits: Vec<String>,
    expect_exit: bool,
    /// Not started again before this instant (a node that stays down, a rolling update's new pod).
    hold_until: Option<Instant>,
}

pub struct Operators {
    ns: String,
    kubeconfig: PathBuf,
    env: Vec<(String, String)>,
    replicas: Mutex<Vec<Replica>>,
}

impl Operators {
    fn new(ns: String, kubeconfig: PathBuf, env: Vec<(String, String)>, out_dir: &std::path::Path) -> Operators {
        let replicas = ["chaos-a", "chaos-b"]
            .iter()
            .map(|n| {
                let log = out_dir.join(format!("operator-{n}.log"));
                let _ = std::fs::remove_file(&log);
                Replica {
                    name: n.to_string(),
                    log,
                    child: None,
                    exited_at: None,
                    starts: 0,
                    unexpected_exits: Vec::new(),
                    expect_exit: false,
                    hold_until: None,
                }
            })
            .collect();
        Operators { ns, kubeconfig, env, replicas: Mutex::new(replicas) }
    }

    fn spawn(&self, r: &mut Replica) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&r.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hpc-cache-operator"))
            .args(["run", "--namespace", &self.ns, "--poll-seconds", "0.3", "--resync-seconds", "3"])
            .args(["--facts-ttl-seconds", "1", "--metrics-addr", "127.0.0.1:0", "--cluster-name", "chaos"])
            .args(["--leader-election", "--leader-election-namespace", &self.ns])
            .envs(self.env.iter().cloned())
            .env("POD_NAME", &r.name)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HPCC_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the operator starts");
        r.child = Some(child);
        r.exited_at = None;
        r.expect_exit = false;
        r.starts += 1;
    }

    pub fn start_all(&self) {
        let mut rs = self.replicas.lock().unwrap();
        for r in rs.iter_mut() {
            if r.child.is_none() {
                self.spawn(r);
            }
        }
    }

    /// Reaps exited replicas and starts them again after a second (kubelet's restart, without its back-off).
    pub fn supervise(&self) {
        let mut rs = self.replicas.lock().unwrap();
        for r in rs.iter_mut() {
            if let Some(c) = r.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                if !r.expect_exit && !status.success() {
                    r.unexpected_exits.push(format!("{} exited on its own: {status}", r.name));
                }
                r.child = None;
                r.exited_at = Some(Instant::now());
            }
            let held = r.hold_until.is_some_and(|t| Instant::now() < t);
            if r.child.is_none() && !held && r.exited_at.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                self.spawn(r);
            }
        }
    }

    /// SIGKILLs the replica called `name` (no goodbye, the lease stays held until it expires); it is started
    /// again once `down` has passed (a restart with the same identity takes its own lease back at once, so a long
    /// `down` is what lets the other replica take over).
    pub fn sigkill(&self, name: &str, down: Duration) -> bool {
        let mut rs = self.replicas.lock().unwrap();
        let Some(r) = rs.iter_mut().find(|r| r.name == name) else { return false };
        let Some(c) = r.child.as_mut() else { return false };
        r.expect_exit = true;
        r.hold_until = Some(Instant::now() + down);
        c.kill().is_ok()
    }

    /// SIGTERMs the replica called `name`: it stops and releases the lease, the other one takes over; started
    /// again after `down`.
    pub fn sigterm(&self, name: &str, down: Duration) -> bool {
        let mut rs = self.replicas.lock().unwrap();
        let Some(r) = rs.iter_mut().find(|r| r.name == name) else { return false };
        let Some(c) = r.child.as_ref() else { return false };
        r.expect_exit = true;
        r.hold_until = Some(Instant::now() + down);
        Command::new("kill").args(["-TERM", &c.id().to_string()]).status().is_ok_and(|s| s.success())
    }

    /// How often each replica became the leader (its log's "leading" lines).
    pub fn leaderships(&self) -> BTreeMap<String, usize> {
        let rs = self.replicas.lock().unwrap();
        rs.iter()
            .map(|r| {
                let log = std::fs::read_to_string(&r.log).unwrap_or_default();
                (r.name.clone(), log.lines().filter(|l| l.contains(" leading")).count())
            })
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.replicas.lock().unwrap().iter().map(|r| r.name.clone()).collect()
    }

    pub fn logs(&self) -> Vec<PathBuf> {
        self.replicas.lock().unwrap().iter().map(|r| r.log.clone()).collect()
    }

    /// (process starts, exits the campaign did not cause).
    pub fn history(&self) -> (u32, Vec<String>) {
        let rs = self.replicas.lock().unwrap();
        (rs.iter().map(|r| r.starts).sum(), rs.iter().flat_map(|r| r.unexpected_exits.clone()).collect())
    }

    pub fn stop_all(&self) {
        let mut rs = self.replicas.lock().unwrap();
        for r in rs.iter_mut() {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Operators {
    fn drop(&mut self) {
        self.stop_all();
    }
}

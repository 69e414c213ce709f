//! `make bench`: the operator's speed, Azure-call budget and memory, printed as markdown tables (design §7:
//! performance is measured here, never asserted in timed tests).
//!
//! For each size N (`HPCC_BENCH_SIZES`, default `1,10,50`) the bench starts a fresh Azure simulator and a fresh
//! operator process (release build) watching a fresh namespace of the shared test control plane, applies N
//! system-assigned `keyAccess: Automatic` caches with one `kubectl apply`, and measures:
//!
//! - wall time from the apply until each cache is `Ready` (seen through a watch);
//! - Azure calls per cache to reach `Ready`, by operation, from the simulator's request log (calls on a cache's own
//!   path are counted up to the moment that cache was Ready; shared vault/key/token calls up to the moment all
//!   were, divided by N);
//! - steady-state ARM reads per Ready cache per minute over `HPCC_BENCH_STEADY_SECONDS` (default 30) with
//!   `--resync-seconds HPCC_BENCH_RESYNC_SECONDS` (default 10) and the default facts TTL (60 s), and what that
//!   means against ARM's 25 reads/s per subscription;
//! - reconciles/s from the operator's `/metrics` (`hpccache_reconciles_total`);
//! - the operator's VmRSS/VmHWM (`/proc/PID/status`) before the apply and once all N are Ready.
//!
//! Every cache uses vault `kv-cmk` from `examples/seed.yaml`: one CMK vault per team is the common layout, and it
//! is the contended case for the operator (N grants on one vault, each invalidating the shared vault facts).
//! Everything listens on 127.0.0.1; every wait is bounded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hpcc_api::v1alpha1::{HpcCache, Phase};
use hpcc_sim::{RequestRecord, Seed, SimConfig, Simulator};
use hpcc_test_support::TestCluster;
use jiff::Timestamp;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const OPERATOR: &str = env!("CARGO_BIN_EXE_hpc-cache-operator");
const SUB: &str = "11111111-2222-3333-4444-555555555555";
const VAULT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/kv-cmk";
/// ARM's read budget per subscription (design §3): 25 reads/s sustained.
const ARM_READS_PER_MINUTE: f64 = 25.0 * 60.0;
/// The operator's default `--resync-seconds`, for the projection.
const DEFAULT_RESYNC: f64 = 600.0;

/// What the bench runs; everything but the simulator timing can be overridden from the environment.
struct Settings {
    sizes: Vec<usize>,
    steady: Duration,
    resync_seconds: u64,
    poll_seconds: f64,
    /// Simulated seconds per real second.
    speed: f64,
    /// Simulated time from "the cache identity can reach the key" to Healthy.
    key_ready_delay: Duration,
    /// Simulated creation time when key access exists from the start.
    create_delay: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let sizes = env_or("HPCC_BENCH_SIZES", "1,10,50")
            .split(',')
            .map(|s| s.trim().parse::<usize>().expect("HPCC_BENCH_SIZES: comma-separated cache counts"))
            .filter(|&n| n > 0)
            .collect();
        Settings {
            sizes,
            steady: Duration::from_secs(env_or("HPCC_BENCH_STEADY_SECONDS", "30").parse().expect("seconds")),
            resync_seconds: env_or("HPCC_BENCH_RESYNC_SECONDS", "10").parse().expect("seconds"),
            poll_seconds: 0.3,
            speed: 1.0,
            key_ready_delay: Duration::from_secs(1),
            create_delay: Duration::from_secs(1),
        }
    }

    fn sim_config(&self) -> SimConfig {
        let seed = Seed::from_yaml(&std::fs::read_to_string(format!("{REPO}/examples/seed.yaml")).unwrap()).unwrap();
        SimConfig {
            seed: Some(seed),
            speed: self.speed,
            key_ready_delay: self.key_ready_delay,
            create_delay: self.create_delay,
            // The bench measures the operator; Azure's own waits (grant propagation) are kept out, like the 1 s
            // create and key delays above.
            grant_propagation: std::time::Duration::ZERO,
            ..SimConfig::default()
        }
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

// ---------------------------------------------------------------------------------------------------------------
// The operator process

/// One operator process with its own metrics port and log file; killed on drop.
struct Operator {
    child: Child,
    metrics: String,
    log: PathBuf,
}

impl Operator {
    fn start(cluster: &TestCluster, sim: &Simulator, ns: &str, s: &Settings) -> Operator {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("hpcc-bench-operator-{ns}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(OPERATOR)
            .args(["run", "--namespace", ns, "--poll-seconds", &s.poll_seconds.to_string()])
            .args(["--resync-seconds", &s.resync_seconds.to_string()])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .envs(sim.env())
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("HPCC_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("operator starts");
        Operator { child, metrics: format!("http://127.0.0.1:{port}"), log }
    }

    /// Waits (bounded) until `/readyz` answers 200: the operator listed its objects and started its controller.
    async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.metrics)).await
                && r.status().is_success()
            {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "operator not ready\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sum of `hpccache_reconciles_total` over all results.
    async fn reconciles(&self) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.metrics)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with("hpccache_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Memory { rss_kb: kb("VmRSS:"), hwm_kb: kb("VmHWM:") }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Clone, Copy)]
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
}

// ---------------------------------------------------------------------------------------------------------------
// Caches

fn cache_name(n: usize, i: usize) -> String {
    format!("bench{n}-{i:03}")
}

/// N system-assigned, Automatic caches on kv-cmk as one multi-document manifest.
fn manifests(n: usize) -> String {
    (0..n)
        .map(|i| {
            let doc = serde_json::json!({
                "apiVersion": "hpccache.io/v1alpha1", "kind": "HpcCache",
                "metadata": {"name": cache_name(n, i)},
                "spec": {
                    "azure": {"subscriptionId": SUB, "resourceGroup": "hpc-rg", "location": "eastus"},
                    "sku": "Standard_2G", "cacheSizeGB": 3072,
                    "subnetId": format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.Network/virtualNetworks/hpc-vnet/subnets/cache"),
                    "identity": {"type": "SystemAssigned"},
                    "encryption": {"keyVaultId": VAULT, "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"},
                    "keyAccess": "Automatic",
                },
            });
            serde_yaml_ng::to_string(&doc).unwrap()
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// When a cache was first seen Ready: real time since the apply, and the simulator's clock (to cut its request log).
struct ReadyAt {
    elapsed: Duration,
    sim_time: Timestamp,
}

/// Watches the namespace until every cache is Ready (bounded), recording when each got there.
async fn wait_all_ready(
    api: Api<HpcCache>,
    n: usize,
    t0: Instant,
    sim: &Simulator,
    op: &Operator,
) -> HashMap<String, ReadyAt> {
    let timeout = Duration::from_secs(60 + 2 * n as u64);
    let mut ready = HashMap::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
    let watch = async {
        while ready.len() < n {
            // Errors are transient (the backoff re-lists); only the objects matter.
            let Ok(obj) = events.next().await.expect("watch ended") else { continue };
            let is_ready = obj.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready);
            let name = obj.metadata.name.clone().unwrap_or_default();
            if is_ready && !ready.contains_key(&name) {
                ready.insert(name, ReadyAt { elapsed: t0.elapsed(), sim_time: sim.now() });
            }
        }
    };
    if tokio::time::timeout(timeout, watch).await.is_err() {
        panic!("only {} of {n} caches Ready within {timeout:?}\noperator log:\n{}", ready.len(), op.log_tail());
    }
    ready
}

// ---------------------------------------------------------------------------------------------------------------
// The simulator's request log

/// Which API a request went to. ARM throttles reads and writes per subscription; Key Vault and Entra have their own
/// limits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Plane {
    ArmRead,
    ArmWrite,
    KeyVault,
    Entra,
}

impl Plane {
    fn label(self) -> &'static str {
        match self {
            Plane::ArmRead => "ARM read",
            Plane::ArmWrite => "ARM write",
            Plane::KeyVault => "Key Vault",
            Plane::Entra => "Entra",
        }
    }
}

/// `(plane, "METHOD resource-type")`, e.g. `(ArmWrite, "PUT vaults/accessPolicies")`.
fn classify(r: &RequestRecord) -> (Plane, String) {
    let path = r.path.trim_end_matches('/');
    if r.host.contains(".vault.") {
        let kind = path.split('/').nth(1).unwrap_or("?");
        return (Plane::KeyVault, format!("{} {kind}", r.method));
    }
    if path.contains("/oauth2/") {
        return (Plane::Entra, format!("{} token", r.method));
    }
    let plane = if r.method == "GET" || r.method == "HEAD" { Plane::ArmRead } else { Plane::ArmWrite };
    // Resource types are the odd segments after the provider namespace: providers/NS/type/name/type/name...
    let segments: Vec<&str> = path.split('/').collect();
    let types: Vec<&str> = match segments.iter().rposition(|s| s.eq_ignore_ascii_case("providers")) {
        Some(p) => segments[p + 2..].iter().step_by(2).copied().collect(),
        None => vec![segments.last().copied().unwrap_or("?")],
    };
    (plane, format!("{} {}", r.method, types.join("/")))
}

/// The Azure cache a request is about, if its path names one.
fn cache_of(r: &RequestRecord) -> Option<String> {
    let lower = r.path.to_ascii_lowercase();
    let rest = &lower[lower.find("/caches/")? + "/caches/".len()..];
    rest.split('/').next().filter(|s| !s.is_empty()).map(str::to_string)
}

/// Calls by `(plane, operation)`, as an average per cache.
type CallTable = BTreeMap<(Plane, String), f64>;

/// Calls per cache until Ready: a cache's own calls until it was Ready, shared calls until all were, over N.
fn calls_to_ready(log: &[RequestRecord], ready: &HashMap<String, ReadyAt>) -> CallTable {
    let n = ready.len() as f64;
    let all_ready = ready.values().map(|r| r.sim_time).max().unwrap();
    let mut table = CallTable::new();
    for r in log {
        let counts = match cache_of(r) {
            Some(cache) => ready.get(&cache).is_some_and(|at| r.time <= at.sim_time),
            None => r.time <= all_ready,
        };
        if counts {
            *table.entry(classify(r)).or_default() += 1.0 / n;
        }
    }
    table
}

/// ARM reads per second between two simulated instants: the mean and the busiest 1-second bucket.
fn read_rate(log: &[RequestRecord], from: Timestamp, to: Timestamp) -> (f64, usize) {
    let mut buckets: BTreeMap<i64, usize> = BTreeMap::new();
    for r in log.iter().filter(|r| r.time >= from && r.time <= to && classify(r).0 == Plane::ArmRead) {
        *buckets.entry(r.time.duration_since(from).as_secs()).or_default() += 1;
    }
    let seconds = to.duration_since(from).as_secs_f64().max(1e-3);
    (buckets.values().sum::<usize>() as f64 / seconds, buckets.values().copied().max().unwrap_or(0))
}

fn plane_total(table: &CallTable, plane: Plane) -> f64 {
    table.iter().filter(|((p, _), _)| *p == plane).map(|(_, v)| v).sum()
}

// ---------------------------------------------------------------------------------------------------------------
// One size

struct Run {
    n: usize,
    apply: Duration,
    ready: Vec<Duration>,
    calls: CallTable,
    reconciles_to_ready: f64,
    /// ARM reads per second from the apply until all were Ready: mean and busiest 1-second bucket.
    ramp_reads: (f64, usize),
    /// Steady state: ARM reads per cache per minute, of which on the caches' own paths.
    steady_reads_per_min: f64,
    steady_cache_reads_per_min: f64,
    steady_reconciles_per_s: f64,
    steady_window: Duration,
    idle: Memory,
    loaded: Memory,
}

async fn run_size(cluster: &TestCluster, s: &Settings, n: usize) -> Run {
    eprintln!("bench: N={n}: starting simulator and operator");
    let ns = cluster.namespace(&format!("bench-{n}")).await;
    let sim = Simulator::start(s.sim_config()).await.expect("simulator starts");
    let op = Operator::start(cluster, &sim, &ns, s);
    op.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await; // let startup allocations settle
    let idle = op.memory();
    let api: Api<HpcCache> = Api::namespaced(cluster.client().await, &ns);

    let file = std::env::temp_dir().join(format!("hpcc-bench-{ns}.yaml"));
    std::fs::write(&file, manifests(n)).unwrap();
    let (t0, sim_t0) = (Instant::now(), sim.now());
    let watch = wait_all_ready(api, n, t0, &sim, &op);
    let (ready, apply) = tokio::join!(watch, async {
        kubectl_apply(cluster, &ns, &file).await;
        t0.elapsed()
    });
    let _ = std::fs::remove_file(&file);
    let reconciles_to_ready = op.reconciles().await;
    let log = sim.requests();
    let calls = calls_to_ready(&log, &ready);
    let ramp_reads = read_rate(&log, sim_t0, ready.values().map(|r| r.sim_time).max().unwrap());
    eprintln!("bench: N={n}: all Ready after {:.1?}; steady state for {:?}", t0.elapsed(), s.steady);

    let (before_log, before_reconciles, begin) = (sim.requests().len(), op.reconciles().await, Instant::now());
    tokio::time::sleep(s.steady).await;
    let window = begin.elapsed();
    let log = sim.requests();
    let reconciles = op.reconciles().await - before_reconciles;
    let reads: Vec<&RequestRecord> = log[before_log..].iter().filter(|r| classify(r).0 == Plane::ArmRead).collect();
    let per_cache_per_min = |count: usize| count as f64 / n as f64 / window.as_secs_f64() * 60.0;
    let loaded = op.memory();

    drop(op);
    sim.shutdown().await;
    Run {
        n,
        apply,
        ready: ready.values().map(|r| r.elapsed).collect(),
        calls,
        reconciles_to_ready: reconciles_to_ready / n as f64,
        ramp_reads,
        steady_reads_per_min: per_cache_per_min(reads.len()),
        steady_cache_reads_per_min: per_cache_per_min(reads.iter().filter(|r| cache_of(r).is_some()).count()),
        steady_reconciles_per_s: reconciles / window.as_secs_f64(),
        steady_window: window,
        idle,
        loaded,
    }
}

async fn kubectl_apply(cluster: &TestCluster, ns: &str, file: &Path) {
    let mut cmd = cluster.kubectl();
    cmd.args(["apply", "-n", ns, "-f"]).arg(file);
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------------------------------------------
// Report

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn row(cells: &[String]) {
    println!("| {} |", cells.join(" | "));
}

fn header(cells: &[&str]) {
    row(&cells.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    row(&cells.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
}

fn report(s: &Settings, runs: &[Run]) {
    let resync = s.resync_seconds as f64;
    println!("\n## hpc-cache-operator benchmark\n");
    println!(
        "Simulator: speed {}x, create_delay {:?}, key_ready_delay {:?} (simulated), no throttling. Operator: \
         --poll-seconds {}, --resync-seconds {}, facts TTL 60 s (default), concurrency 8 (default). \
         All caches: SystemAssigned, keyAccess Automatic, vault kv-cmk.\n",
        s.speed, s.key_ready_delay, s.create_delay, s.poll_seconds, s.resync_seconds
    );

    println!("### Apply → Ready (wall time per cache, from the start of `kubectl apply`)\n");
    header(&[
        "N",
        "kubectl apply",
        "p50",
        "p95",
        "max",
        "reconciles/cache",
        "reconciles/s",
        "ARM reads/s mean (peak 1 s)",
    ]);
    for r in runs {
        let mut t = r.ready.clone();
        t.sort();
        let max = *t.last().unwrap();
        row(&[
            r.n.to_string(),
            secs(r.apply),
            secs(percentile(&t, 50.0)),
            secs(percentile(&t, 95.0)),
            secs(max),
            format!("{:.1}", r.reconciles_to_ready),
            format!("{:.1}", r.reconciles_to_ready * r.n as f64 / max.as_secs_f64()),
            format!("{:.1} ({})", r.ramp_reads.0, r.ramp_reads.1),
        ]);
    }

    println!("\n### Azure calls per cache to reach Ready (simulator request log)\n");
    let mut ops: Vec<(Plane, String)> = runs.iter().flat_map(|r| r.calls.keys().cloned()).collect();
    ops.sort();
    ops.dedup();
    let sizes: Vec<String> = runs.iter().map(|r| format!("N={}", r.n)).collect();
    let mut cols = vec!["API", "operation"];
    cols.extend(sizes.iter().map(String::as_str));
    header(&cols);
    for op in &ops {
        let mut cells = vec![op.0.label().to_string(), format!("`{}`", op.1)];
        cells.extend(runs.iter().map(|r| format!("{:.2}", r.calls.get(op).copied().unwrap_or(0.0))));
        row(&cells);
    }
    for plane in [Plane::ArmRead, Plane::ArmWrite] {
        let mut cells = vec![format!("**{} total**", plane.label()), String::new()];
        cells.extend(runs.iter().map(|r| format!("**{:.2}**", plane_total(&r.calls, plane))));
        row(&cells);
    }

    println!("\n### Steady state once Ready (resync {resync} s; ARM budget 25 reads/s = 1500/min per subscription)\n");
    header(&[
        "N",
        "window",
        "ARM reads/cache/min",
        "of which cache GETs",
        "reconciles/s",
        "ARM reads/reconcile",
        "caches per subscription at this resync",
        "projected at resync 600 s",
    ]);
    for r in runs {
        let per_min = r.steady_reads_per_min;
        let reconciles_per_min = r.steady_reconciles_per_s * 60.0 / r.n as f64;
        let per_reconcile = if reconciles_per_min > 0.0 { per_min / reconciles_per_min } else { 0.0 };
        // A Ready cache is reconciled once per resync; each reconcile costs `per_reconcile` reads.
        let projected = per_reconcile * 60.0 / DEFAULT_RESYNC;
        row(&[
            r.n.to_string(),
            secs(r.steady_window),
            format!("{per_min:.2}"),
            format!("{:.2}", r.steady_cache_reads_per_min),
            format!("{:.2}", r.steady_reconciles_per_s),
            format!("{per_reconcile:.2}"),
            capacity(per_min),
            format!("{projected:.3} reads/cache/min → {}", capacity(projected)),
        ]);
    }

    println!("\n### Operator memory and size\n");
    header(&["N", "VmRSS idle (0 caches)", "VmRSS with N Ready", "VmHWM"]);
    for r in runs {
        row(&[r.n.to_string(), mib(r.idle.rss_kb), mib(r.loaded.rss_kb), mib(r.loaded.hwm_kb)]);
    }
    let size = std::fs::metadata(OPERATOR).map(|m| m.len()).unwrap_or(0);
    let profile = Path::new(OPERATOR).parent().and_then(|p| p.file_name()).unwrap_or_default().to_string_lossy();
    println!("\nBinary: `{OPERATOR}` ({profile} profile), {:.1} MiB.", size as f64 / 1024.0 / 1024.0);
}

fn capacity(reads_per_cache_per_min: f64) -> String {
    if reads_per_cache_per_min <= 0.0 {
        "unbounded".into()
    } else {
        format!("{:.0}", ARM_READS_PER_MINUTE / reads_per_cache_per_min)
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; this bench takes its settings from the environment only.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let settings = Settings::from_env();
    let cluster = TestCluster::shared();
    cluster.install_crds(format!("{REPO}/crds")).await;
    let mut runs = Vec::new();
    for &n in &settings.sizes {
        runs.push(run_size(cluster, &settings, n).await);
    }
    report(&settings, &runs);
}

//! `make bench`: the operator's speed, Azure-call budget, reaction time and memory against an ASO-like naive
//! baseline, printed as markdown tables and written to `target/bench/summary.json` (design §7: performance is
//! measured here, never asserted in timed tests).
//!
//! For each mode (`HPCC_BENCH_MODE`: `stress`, `realistic` or `both`, the default), size N (`HPCC_BENCH_SIZES`,
//! default `100,1000`) and policy (`HPCC_BENCH_POLICIES`, default `operator,naive`) the bench starts a fresh Azure
//! simulator with ARM throttling on (so 429s are real) and then either
//!
//! - **operator**: a fresh operator process (release build) watching a fresh namespace of the shared test control
//!   plane, and applies N system-assigned `keyAccess: Automatic` caches with one `kubectl apply`; or
//! - **naive**: the baseline of `naive.rs` for the same N caches (fixed polling, no limiter, re-PUT every resync).
//!
//! It waits (bounded; running out is reported, with the operator's log tail, as "not all Ready" rather than a
//! panic, so a large run still reports where it stood) until every cache is Ready or Failed, watches a
//! steady-state window, and reads the
//! simulator's request log and cache timelines. Modes (`settings.rs`): **stress** is the compressed timing of the
//! old bench (1x clock, 1 s create and key-ready, no grant propagation, poll 0.3 s, resync
//! `HPCC_BENCH_RESYNC_SECONDS`=10, steady window `HPCC_BENCH_STEADY_SECONDS`=30); **realistic** runs Azure's
//! timing (create 10 min, key-ready 5 min, grant propagation 5 min) and the operator's defaults (poll 15 s, resync
//! 600 s, facts TTL 60 s) in simulated time on a clock `HPCC_BENCH_SPEED` (default 60) times faster, with a steady
//! window of one simulated hour. ARM's token buckets refill per simulated second in both modes (the simulator's,
//! and the operator's limiter, whose rates the bench multiplies by SPEED): ARM's budget per simulated second.
//!
//! Caches use vault `kv-cmk` from `examples/seed.yaml`: one CMK vault per team is the common layout, and it is the
//! contended case (N grants on one vault). Past a thousand caches, each thousand has a vault of its own, as Key
//! Vault keeps at most 1024 access policies per vault ([`CACHES_PER_VAULT`]). Everything listens on 127.0.0.1; every wait is bounded.

mod analysis;
mod naive;
mod process;
mod report;
mod settings;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hpcc_api::v1alpha1::HpcCache;
use hpcc_sim::{CacheTimes, RequestRecord, Simulator};
use hpcc_test_support::TestCluster;
use jiff::{SignedDuration, Timestamp};
use kube::Api;

use analysis::{CallTable, Plane};
use settings::{Mode, Policy, Profile, Settings};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const OPERATOR: &str = env!("CARGO_BIN_EXE_hpc-cache-operator");
const SUB: &str = "11111111-2222-3333-4444-555555555555";
const RG: &str = "hpc-rg";
/// Caches per vault. Key Vault keeps at most 1024 access policies per vault (Azure/azure-rest-api-specs issue
/// 5303), one per cache identity here, so each thousand caches has a vault of its own: `kv-cmk` (from
/// `examples/seed.yaml`) for the first thousand, then `kv-cmk-1`, `kv-cmk-2`, ... (seeded by
/// [`Profile::sim_config`]).
const CACHES_PER_VAULT: usize = 1000;
/// ARM's write bucket (design §3): 200 at once, then 10 per second.
const WRITE_BURST: f64 = 200.0;
const WRITES_PER_SECOND: f64 = 10.0;

// ---------------------------------------------------------------------------------------------------------------
// Caches

fn cache_name(n: usize, i: usize) -> String {
    format!("bench{n}-{i:03}")
}

/// The vault of cache `i` (see [`CACHES_PER_VAULT`]).
fn vault_name(i: usize) -> String {
    match i / CACHES_PER_VAULT {
        0 => "kv-cmk".to_string(),
        k => format!("kv-cmk-{k}"),
    }
}

/// The ARM id of vault `name` (all in `security-rg`).
fn vault_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/{name}")
}

/// N system-assigned, Automatic caches (a thousand per vault) as one multi-document manifest.
fn manifests(n: usize) -> String {
    (0..n)
        .map(|i| {
            let doc = serde_json::json!({
                "apiVersion": "hpccache.io/v1alpha1", "kind": "HpcCache",
                "metadata": {"name": cache_name(n, i)},
                "spec": {
                    "azure": {"subscriptionId": SUB, "resourceGroup": RG, "location": "eastus"},
                    "sku": "Standard_2G", "cacheSizeGB": 3072,
                    "subnetId": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/hpc-vnet/subnets/cache"),
                    "identity": {"type": "SystemAssigned"},
                    "encryption": {"keyVaultId": vault_id(&vault_name(i)), "keyName": "cache-key", "keyVersion": "0123456789abcdef0123456789abcdef"},
                    "keyAccess": "Automatic",
                },
            });
            serde_yaml_ng::to_string(&doc).unwrap()
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

async fn kubectl_apply(cluster: &TestCluster, ns: &str, file: &Path) {
    let mut cmd = cluster.kubectl();
    cmd.args(["apply", "-n", ns, "-f"]).arg(file);
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------------------------------------------
// One run: (policy, mode, size)

/// What one run measured; one row of `summary.json`.
pub struct RunResult {
    pub policy: Policy,
    pub mode: Mode,
    pub n: usize,
    pub profile: Profile,
    /// Caches the driver saw Ready / Failed before the wait ended.
    pub ready: usize,
    pub failed: usize,
    /// From the apply (naive: its start) until the last cache was Ready, if all were.
    pub all_ready_wall_s: Option<f64>,
    pub all_ready_sim_s: Option<f64>,
    /// Accepted ARM writes (not 429) from the apply until all were Ready (or the wait ended).
    pub arm_writes_to_ready: usize,
    /// Simulated seconds those writes need at least under ARM's write bucket: max(0, writes - 200) / 10 (the
    /// simulator's buckets refill per simulated second; at speed 1, wall seconds).
    pub write_floor_s: f64,
    /// Wall seconds from the watch first seeing a cache to its first non-empty status (naive: from its start to its
    /// first request for the cache).
    pub first_reconcile_s: Vec<f64>,
    /// Simulated seconds from a cache entering WaitingForKey to the grant request that freed it.
    pub reactions_sim_s: Vec<f64>,
    /// Caches that waited for their key and never got a grant.
    pub not_granted: usize,
    /// Calls per cache until Ready, by operation.
    pub calls: CallTable,
    /// ARM requests per cache over the whole run (to the end of the steady window).
    pub arm_per_cache_total: f64,
    pub steady_window_sim_s: f64,
    pub steady_reads_per_cache_hour: f64,
    pub steady_writes_per_hour: f64,
    pub throttled_429: usize,
    pub steady_429: usize,
    pub missed_windows: usize,
    pub peak_rss_mib: Option<f64>,
    pub cpu_s: Option<f64>,
}

/// What a driver observed, in real instants; turned into simulated time through the clock's fixed speed.
struct Observed {
    t0: Instant,
    sim_t0: Timestamp,
    ready: HashMap<String, Instant>,
    failed: usize,
    settled: Instant,
    first_reconcile_s: Option<Vec<f64>>,
}

async fn run_operator(cluster: &TestCluster, p: &Profile, n: usize) -> RunResult {
    let label = format!("operator/{}/N={n}", p.mode.name());
    eprintln!("bench: {label}: starting simulator and operator");
    let ns = cluster.namespace(&format!("bench-{}-{n}", p.mode.name())).await;
    let sim = Simulator::start(p.sim_config(n)).await.expect("simulator starts");
    let op = process::Operator::start(cluster, &sim, &ns, p);
    op.wait_ready().await;
    let api: Api<HpcCache> = Api::namespaced(cluster.client().await, &ns);
    let file = std::env::temp_dir().join(format!("hpcc-bench-{ns}.yaml"));
    std::fs::write(&file, manifests(n)).unwrap();

    let (t0, sim_t0) = (Instant::now(), sim.now());
    let timeout = p.ready_timeout(n);
    let watch = process::watch_until_settled(api, n, timeout, &op);
    let (seen, ()) = tokio::join!(watch, kubectl_apply(cluster, &ns, &file));
    let _ = std::fs::remove_file(&file);
    let observed = Observed {
        t0,
        sim_t0,
        ready: seen.iter().filter_map(|(k, s)| Some((k.clone(), s.ready?))).collect(),
        failed: seen.values().filter(|s| s.failed.is_some()).count(),
        settled: Instant::now(),
        first_reconcile_s: Some(
            seen.values()
                .filter_map(|s| Some(s.first_status?.saturating_duration_since(s.first_seen?).as_secs_f64()))
                .collect(),
        ),
    };
    eprintln!(
        "bench: {label}: settled after {:.1?} (operator CPU {:.1} s); steady state for {:.1?}",
        t0.elapsed(),
        op.cpu_seconds(),
        p.steady_real
    );
    op.save_metrics("settled").await;
    let (log, times, window) = steady(&sim, p).await;
    op.save_metrics("end").await;
    let (rss, cpu) = (op.peak_rss_mib(), op.cpu_seconds());
    drop(op);
    sim.shutdown().await;
    let mut r = measure(Policy::Operator, p, n, &observed, &log, &times, window);
    (r.peak_rss_mib, r.cpu_s) = (Some(rss), Some(cpu));
    r
}

async fn run_naive(p: &Profile, n: usize) -> RunResult {
    let label = format!("naive/{}/N={n}", p.mode.name());
    eprintln!("bench: {label}: starting simulator and the naive baseline");
    let sim = Simulator::start(p.sim_config(n)).await.expect("simulator starts");
    let (t0, sim_t0) = (Instant::now(), sim.now());
    let poll = Duration::from_secs_f64(p.poll_real);
    let mut naive = naive::Naive::start(&sim, p.speed, n, poll, Duration::from_secs(p.resync_real)).await;
    let settled = naive.wait_settled(n, p.ready_timeout(n)).await;
    if settled.len() < n {
        eprintln!(
            "bench: {label}: only {} of {n} settled within {:?}; reporting as not all Ready",
            settled.len(),
            p.ready_timeout(n)
        );
    }
    let observed = Observed {
        t0,
        sim_t0,
        ready: settled.iter().filter(|(_, (_, ok))| *ok).map(|(k, (at, _))| (k.clone(), *at)).collect(),
        failed: settled.values().filter(|(_, ok)| !ok).count(),
        settled: Instant::now(),
        first_reconcile_s: None,
    };
    eprintln!("bench: {label}: settled after {:.1?}; steady state for {:.1?}", t0.elapsed(), p.steady_real);
    let (log, times, window) = steady(&sim, p).await;
    naive.stop();
    sim.shutdown().await;
    measure(Policy::Naive, p, n, &observed, &log, &times, window)
}

/// Waits out the steady-state window; returns the request log, the caches' timelines and the window (simulated).
async fn steady(sim: &Simulator, p: &Profile) -> (Vec<RequestRecord>, Vec<CacheTimes>, (Timestamp, Timestamp)) {
    let from = sim.now();
    tokio::time::sleep(p.steady_real).await;
    let to = sim.now();
    (sim.requests(), sim.cache_times(), (from, to))
}

fn measure(
    policy: Policy,
    p: &Profile,
    n: usize,
    o: &Observed,
    log: &[RequestRecord],
    times: &[CacheTimes],
    (steady_from, steady_to): (Timestamp, Timestamp),
) -> RunResult {
    let to_sim = |at: Instant| {
        o.sim_t0
            .saturating_add(SignedDuration::from_secs_f64(at.saturating_duration_since(o.t0).as_secs_f64() * p.speed))
            .unwrap()
    };
    let all_ready = (o.ready.len() == n).then(|| *o.ready.values().max().unwrap());
    let settled_sim = to_sim(all_ready.unwrap_or(o.settled));
    let ready_sim: HashMap<String, Timestamp> = o.ready.iter().map(|(k, at)| (k.clone(), to_sim(*at))).collect();
    let arm_writes_to_ready =
        analysis::between(log, o.sim_t0, settled_sim).filter(|r| analysis::is_arm_write(r) && r.status != 429).count();

    let first_reconcile_s = o.first_reconcile_s.clone().unwrap_or_else(|| {
        // The naive baseline: from its start to its first request for each cache.
        let mut first: HashMap<String, Timestamp> = HashMap::new();
        for r in log.iter().filter(|r| r.time >= o.sim_t0) {
            if let Some(c) = analysis::cache_of(r) {
                first.entry(c).or_insert(r.time);
            }
        }
        first.values().map(|t| analysis::sim_secs(o.sim_t0, *t) / p.speed).collect()
    });

    let mut reactions_sim_s = Vec::new();
    let mut not_granted = 0;
    for c in times {
        match (c.waiting_for_key_at, c.key_granted_at) {
            (Some(w), Some(g)) => reactions_sim_s.push(analysis::sim_secs(w, g).max(0.0)),
            (Some(_), None) => not_granted += 1,
            _ => {}
        }
    }
    let sim_failed = times.iter().filter(|c| c.failed_at.is_some()).count();

    let window_h = analysis::sim_secs(steady_from, steady_to) / 3600.0;
    let steady: Vec<&RequestRecord> = analysis::between(log, steady_from, steady_to).collect();
    let steady_reads = steady.iter().filter(|r| analysis::is_arm_read(r)).count();
    let steady_writes = steady.iter().filter(|r| analysis::is_arm_write(r)).count();
    let run: Vec<&RequestRecord> = analysis::between(log, o.sim_t0, steady_to).collect();
    let arm_total = run.iter().filter(|r| classify_plane(r).is_arm()).count();

    RunResult {
        policy,
        mode: p.mode,
        n,
        profile: p.clone(),
        ready: o.ready.len(),
        failed: o.failed,
        all_ready_wall_s: all_ready.map(|at| at.duration_since(o.t0).as_secs_f64()),
        all_ready_sim_s: all_ready.map(|at| analysis::sim_secs(o.sim_t0, to_sim(at))),
        arm_writes_to_ready,
        write_floor_s: (arm_writes_to_ready as f64 - WRITE_BURST).max(0.0) / WRITES_PER_SECOND,
        first_reconcile_s,
        reactions_sim_s,
        not_granted,
        calls: analysis::calls_to_ready(log, &ready_sim, o.sim_t0, settled_sim, n),
        arm_per_cache_total: arm_total as f64 / n as f64,
        steady_window_sim_s: window_h * 3600.0,
        steady_reads_per_cache_hour: steady_reads as f64 / n as f64 / window_h,
        steady_writes_per_hour: steady_writes as f64 / window_h,
        throttled_429: run.iter().filter(|r| r.status == 429).count(),
        steady_429: steady.iter().filter(|r| r.status == 429).count(),
        missed_windows: sim_failed.max(o.failed),
        peak_rss_mib: None,
        cpu_s: None,
    }
}

fn classify_plane(r: &RequestRecord) -> Plane {
    analysis::classify(r).0
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; this bench takes its settings from the environment only.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let settings = Settings::from_env();
    let cluster = TestCluster::shared();
    cluster.install_crds(format!("{REPO}/crds")).await;
    let mut results = Vec::new();
    for &mode in &settings.modes {
        let profile = settings.profile(mode);
        for &n in &settings.sizes {
            for &policy in &settings.policies {
                let r = match policy {
                    Policy::Operator => run_operator(cluster, &profile, n).await,
                    Policy::Naive => run_naive(&profile, n).await,
                };
                results.push(r);
            }
        }
    }
    report::print(&settings, &results);
    let path = report::write_json(&results);
    println!("\nWrote `{}`.", path.display());
}

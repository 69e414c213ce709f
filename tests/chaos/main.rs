//! The seeded fault campaign: a population of caches lives its life on a real kube-apiserver and the Azure
//! simulator while faults are injected at random points, reproducibly from a seed; at the end the invariants are
//! checked, a table is printed and `target/chaos/summary.json` written.
//!
//! `cargo test --test chaos` runs the short version (seed 1, 20 faults, 8 caches); `make chaos SEED=<n> N=<faults>`
//! runs any size (`HPCC_CHAOS_SEED`, `HPCC_CHAOS_N`, optionally `HPCC_CHAOS_CACHES`). A `harness = false` test: the
//! process exits non-zero when an invariant was violated.

mod drive;
mod faults;
mod invariants;
mod plan;
mod proxy;
mod world;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use drive::Progress;
use invariants::DuringRun;
use world::World;

/// Real seconds between faults, on average.
const MEAN_GAP: f64 = 2.5;
/// How long the campaign waits, after the last fault, for everything to come to rest.
const SETTLE: Duration = Duration::from_secs(300);

struct Config {
    seed: u64,
    faults: usize,
    caches: usize,
}

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

impl Config {
    fn from_env() -> Config {
        let seed = env_num("HPCC_CHAOS_SEED").unwrap_or(1);
        let faults = env_num("HPCC_CHAOS_N").unwrap_or(20) as usize;
        let caches = env_num("HPCC_CHAOS_CACHES").map(|c| c as usize).unwrap_or((faults / 6).clamp(8, 40));
        Config { seed, faults, caches }
    }
}

fn main() {
    // `cargo test -- --list` and filters that do not name this test: behave like a libtest binary.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("chaos: test");
        return;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"chaos".contains(filter.as_str())
    {
        return;
    }
    let cfg = Config::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let violations = rt.block_on(campaign(cfg));
    rt.shutdown_timeout(Duration::from_secs(2));
    if violations > 0 {
        eprintln!("chaos: {violations} invariant violation(s); see target/chaos/summary.json");
        std::process::exit(1);
    }
}

async fn campaign(cfg: Config) -> usize {
    let started = Instant::now();
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chaos");
    std::fs::create_dir_all(&out_dir).unwrap();
    let fault_phase = cfg.faults as f64 * MEAN_GAP;
    let plans = plan::population(cfg.seed, cfg.caches, (fault_phase * 0.8).max(10.0));
    let schedule = plan::faults(cfg.seed, cfg.faults, MEAN_GAP);
    println!(
        "chaos: seed {}, {} faults, {} caches (HPCC_CHAOS_SEED, HPCC_CHAOS_N, HPCC_CHAOS_CACHES)",
        cfg.seed, cfg.faults, cfg.caches
    );
    let w = Arc::new(World::start(&plans, out_dir.clone()).await);
    w.operators.start_all();
    w.note(&format!("control plane, simulator (×{}) and two operator replicas up", world::SPEED));
    for p in &plans {
        w.note(&format!("plan {}: {} at +{:.1}s, {:?}", p.name, p.kind(), p.create_at, p.deletion));
    }

    // The background: supervise the replicas, refresh the snapshot, watch for failures that must not happen.
    let during = Arc::new(std::sync::Mutex::new(DuringRun::default()));
    let background = {
        let (w, during, plans) = (w.clone(), during.clone(), plans.clone());
        tokio::spawn(async move {
            loop {
                w.tick();
                if w.refresh().await {
                    let objects = w.snapshot.lock().unwrap().clone();
                    during.lock().unwrap().observe(&plans, &objects);
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    let drivers: Vec<_> =
        plans.iter().cloned().map(|p| (p.name.clone(), tokio::spawn(drive::drive(w.clone(), p)))).collect();

    // The faults, one after the other.
    let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (i, f) in schedule.iter().enumerate() {
        tokio::time::sleep(Duration::from_secs_f64(f.after)).await;
        let live: Vec<String> = w.snapshot.lock().unwrap().keys().cloned().collect();
        let what = faults::inject(&w, f, &live).await;
        *injected.entry(f.kind.key()).or_default() += 1;
        w.note(&format!("fault {}/{} {}: {what}", i + 1, schedule.len(), f.kind.key()));
    }
    w.note("all faults injected: clearing the simulator's fault rules, normal grant propagation");
    w.admin_delete("faults").await;
    *w.slow_propagation_until.lock().unwrap() = None;
    w.sim.set_grant_propagation(world::NORMAL_PROPAGATION);

    // Settle: drivers finish, then everything at rest (or the settle time is up).
    let settle_start = Instant::now();
    let mut progress: BTreeMap<String, Progress> = BTreeMap::new();
    for (name, h) in drivers {
        let left = SETTLE.saturating_sub(settle_start.elapsed());
        match tokio::time::timeout(left, h).await {
            Ok(Ok(p)) => {
                for n in &p.notes {
                    w.note(&format!("{name}: {n}"));
                }
                progress.insert(name, p);
            }
            Ok(Err(e)) => panic!("driver of {name} panicked: {e}"),
            Err(_) => {
                w.note(&format!("{name}: its driver did not finish within the settle time"));
            }
        }
    }
    let at_rest = |objects: &BTreeMap<String, hpcc_api::v1alpha1::HpcCache>| {
        plans.iter().all(|p| {
            let deleted = progress.get(&p.name).is_some_and(|g| g.deleted);
            match objects.get(&p.name) {
                None => deleted,
                Some(o) => {
                    let want = if p.expect_failed() {
                        hpcc_api::v1alpha1::Phase::Failed
                    } else {
                        hpcc_api::v1alpha1::Phase::Ready
                    };
                    !deleted && drive::phase(o) == Some(want) && drive::generation_observed(o)
                }
            }
        })
    };
    loop {
        w.refresh().await; // not the background's snapshot: it may predate the last fault's write
        let objects = w.snapshot.lock().unwrap().clone();
        if at_rest(&objects) {
            w.note(&format!("at rest {:.0?} after the last fault", settle_start.elapsed()));
            break;
        }
        if settle_start.elapsed() > SETTLE {
            w.note("not at rest when the settle time was up");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more resyncs at rest: nothing may drift away from it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    background.abort();
    let during = std::mem::take(&mut *during.lock().unwrap());
    let results = invariants::check(&w, &plans, &progress, &during).await;
    let (starts, self_exits) = w.operators.history();
    let leaderships = w.operators.leaderships();
    w.operators.stop_all();
    let duration = started.elapsed().as_secs_f64();

    // The report.
    let total: usize = injected.values().sum();
    println!("\nFaults injected (seed {}):", cfg.seed);
    println!("| fault | count |\n|---|---:|");
    for k in plan::FaultKind::ALL {
        println!("| {} | {} |", k.key(), injected.get(k.key()).copied().unwrap_or(0));
    }
    println!("| **total** | **{total}** |");
    println!("\nInvariants ({} caches, {duration:.0} s):", plans.len());
    println!("| invariant | result |\n|---|---|");
    let mut violations = Vec::new();
    for r in &results {
        let verdict =
            if r.violations.is_empty() { "held".to_string() } else { format!("VIOLATED ({})", r.violations.len()) };
        println!("| {} | {verdict} |", r.name);
        violations.extend(r.violations.iter().map(|v| format!("{}: {v}", r.name)));
    }
    for v in &violations {
        println!("violation: {v}");
    }
    println!(
        "operator processes started: {starts}; times each replica became the leader: {leaderships:?}; exits the \
         campaign did not cause directly: {}",
        self_exits.len()
    );
    let mut faults_json: serde_json::Map<String, serde_json::Value> = plan::FaultKind::ALL
        .iter()
        .map(|k| (k.key().to_string(), json!(injected.get(k.key()).copied().unwrap_or(0))))
        .collect();
    faults_json.insert("total".into(), json!(total));
    let summary = json!({
        "seed": cfg.seed,
        "faults_requested": cfg.faults,
        "faults_injected": faults_json,
        "caches": plans.len(),
        "violations": violations,
        "duration_s": (duration * 10.0).round() / 10.0,
        "invariants": results.iter().map(|r| json!({"name": r.name, "what": r.what, "held": r.violations.is_empty(), "violations": r.violations})).collect::<Vec<_>>(),
        "caches_deleted": progress.values().filter(|p| p.deleted).count(),
        "operator_process_starts": starts,
        "leaderships": leaderships,
        "operator_exits_on_their_own": self_exits,
        "simulator_requests": w.sim.requests().len(),
    });
    std::fs::write(out_dir.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    std::fs::write(out_dir.join("journal.log"), w.journal.lock().unwrap().join("\n") + "\n").unwrap();
    println!("wrote {}", out_dir.join("summary.json").display());
    violations.len()
}

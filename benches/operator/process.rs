//! The operator process: started per run with its own metrics port and log file (kept in `target/bench`), killed on
//! drop; its memory and CPU time from `/proc`, and the watch that sees its caches become Ready.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hpcc_api::v1alpha1::{HpcCache, Phase};
use hpcc_sim::Simulator;
use hpcc_test_support::TestCluster;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::OPERATOR;
use crate::settings::Profile;

pub struct Operator {
    child: Child,
    metrics: String,
    log: PathBuf,
}

impl Operator {
    pub fn start(cluster: &TestCluster, sim: &Simulator, ns: &str, p: &Profile) -> Operator {
        let port = free_port();
        // Kept after the run (next to summary.json), so a slow figure can be explained from the operator's side.
        let dir = PathBuf::from(crate::REPO).join("target/bench");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("operator-{ns}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(OPERATOR);
        cmd.args(["run", "--namespace", ns, "--poll-seconds", &p.poll_real.to_string()])
            .args(["--resync-seconds", &p.resync_real.to_string()])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        if let Some(ttl) = p.facts_ttl_real {
            cmd.args(["--facts-ttl-seconds", &ttl.to_string()]);
        }
        // The simulator's ARM buckets refill per simulated second; the operator's client-side budget (its defaults:
        // 22.5 reads and 9 writes per second) follows the same clock.
        cmd.env("HPCC_ARM_READS_PER_SECOND", (22.5 * p.speed).to_string())
            .env("HPCC_ARM_WRITES_PER_SECOND", (9.0 * p.speed).to_string());
        let child = cmd
            .envs(sim.env())
            .env("KUBECONFIG", cluster.kubeconfig_path())
            // e.g. HPCC_BENCH_LOG=info,hpc_cache_operator=debug: each reconcile's start and requeue.
            .env("HPCC_LOG", std::env::var("HPCC_BENCH_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("operator starts");
        Operator { child, metrics: format!("http://127.0.0.1:{port}"), log }
    }

    /// Waits (bounded) until `/readyz` answers 200: the operator listed its objects and started its controller.
    pub async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.metrics)).await
                && r.status().is_success()
            {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "operator not ready within 30 s\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Peak resident set size (`VmHWM`), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        kb as f64 / 1024.0
    }

    /// User + system CPU seconds so far (`/proc/PID/stat` fields 14 and 15).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // After the command name (which may hold spaces) come the fields from 3 (state) on.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        (ticks(11) + ticks(12)) as f64 / clock_ticks()
    }

    /// Saves the operator's `/metrics` next to its log (`<log stem>-<when>.prom`): reconcile counts and durations
    /// by result, Azure calls by operation, to explain a figure afterwards.
    pub async fn save_metrics(&self, when: &str) {
        let text = match reqwest::get(format!("{}/metrics", self.metrics)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("# /metrics unreachable: {e}\n"),
        };
        let _ = std::fs::write(self.log.with_extension(format!("{when}.prom")), text);
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "operator log ({}), last lines:\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `getconf CLK_TCK` (100 on Linux unless told otherwise).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What the watch saw of one object (real instants).
#[derive(Default, Clone, Copy)]
pub struct Seen {
    pub first_seen: Option<Instant>,
    /// First event with a non-empty status: the operator's first reconcile reached the apiserver.
    pub first_status: Option<Instant>,
    pub ready: Option<Instant>,
    pub failed: Option<Instant>,
}

/// Watches the namespace until every one of `n` caches is Ready or Failed, or `timeout` passes. A timeout is a
/// result, not a crash: it prints how far the operator got with its log tail and returns what was seen, so the run
/// is reported as not all Ready (a 1000-cache run that does not converge still says where it stood).
pub async fn watch_until_settled(
    api: Api<HpcCache>,
    n: usize,
    timeout: Duration,
    op: &Operator,
) -> HashMap<String, Seen> {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
    let settled =
        |seen: &HashMap<String, Seen>| seen.values().filter(|s| s.ready.is_some() || s.failed.is_some()).count();
    let watch = async {
        while settled(&seen) < n {
            // Errors are transient (the backoff re-lists); only the objects matter.
            let Ok(obj) = events.next().await.expect("watch ended") else { continue };
            let now = Instant::now();
            let s = seen.entry(obj.metadata.name.clone().unwrap_or_default()).or_default();
            s.first_seen.get_or_insert(now);
            if let Some(status) = &obj.status {
                let non_empty =
                    serde_json::to_value(status).is_ok_and(|v| v.as_object().is_some_and(|o| !o.is_empty()));
                if non_empty {
                    s.first_status.get_or_insert(now);
                }
                match status.phase {
                    Some(Phase::Ready) if s.ready.is_none() => s.ready = Some(now),
                    Some(Phase::Failed) if s.failed.is_none() => s.failed = Some(now),
                    _ => {}
                }
            }
        }
    };
    if tokio::time::timeout(timeout, watch).await.is_err() {
        let ready = seen.values().filter(|s| s.ready.is_some()).count();
        let failed = seen.values().filter(|s| s.failed.is_some()).count();
        eprintln!(
            "bench: TIMEOUT: only {ready} of {n} caches Ready ({failed} Failed, {} seen) within {timeout:?}; \
             reporting as not all Ready\n{}",
            seen.len(),
            op.log_tail()
        );
    }
    seen
}

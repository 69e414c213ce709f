//! The markdown tables and `target/bench/summary.json`.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::analysis::{Plane, percentile, plane_total};
use crate::settings::{Mode, Policy, Settings};
use crate::{OPERATOR, REPO, RunResult};

fn row(cells: &[String]) {
    println!("| {} |", cells.join(" | "));
}

fn header(cells: &[&str]) {
    row(&cells.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    row(&cells.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn who(r: &RunResult) -> [String; 3] {
    [r.policy.name().to_string(), r.mode.name().to_string(), r.n.to_string()]
}

fn cells(r: &RunResult, rest: Vec<String>) -> Vec<String> {
    let mut v = who(r).to_vec();
    v.extend(rest);
    v
}

fn arm_per_cache(r: &RunResult) -> f64 {
    plane_total(&r.calls, Plane::ArmRead) + plane_total(&r.calls, Plane::ArmWrite)
}

fn first_reconcile(r: &RunResult, p: f64) -> Option<f64> {
    percentile(&r.first_reconcile_s, p)
}

fn reaction(r: &RunResult, p: f64) -> Option<f64> {
    percentile(&r.reactions_sim_s, p)
}

fn reaction_max(r: &RunResult) -> Option<f64> {
    r.reactions_sim_s.iter().copied().reduce(f64::max)
}

pub fn print(s: &Settings, runs: &[RunResult]) {
    println!("\n## hpc-cache-operator benchmark\n");
    for &mode in &s.modes {
        let p = s.profile(mode);
        println!(
            "- **{}**: simulator at {}x, create {} s, key-ready {} s, grant propagation {} s, authorization window {} s \
             (simulated), ARM throttling on (buckets refill per simulated second); poll {:.2} s and resync {} s real = {:.1} s \
             and {:.0} s simulated; facts TTL {}; steady window {:.0} s simulated.",
            mode.name(),
            p.speed,
            p.create_delay.as_secs(),
            p.key_ready_delay.as_secs(),
            p.grant_propagation.as_secs(),
            p.authorization_window.as_secs(),
            p.poll_real,
            p.resync_real,
            p.poll_sim(),
            p.resync_sim(),
            p.facts_ttl_real.map_or("default (60 s real)".to_string(), |t| format!(
                "{t} s real = {:.0} s simulated",
                t as f64 * p.speed
            )),
            p.steady_real.as_secs_f64() * p.speed,
        );
    }
    println!(
        "- Operator: `--concurrency 8` and client-side limiter at their defaults. Naive: in the bench process (no RSS \
         or CPU of its own), GET every poll, PUT when absent, grant on WaitingForKey, re-PUT every resync, waits \
         out `Retry-After`, no limiter. All caches SystemAssigned, keyAccess Automatic, vault kv-cmk (a vault per thousand caches).\n"
    );

    println!("### All Ready, write floor, first reconcile\n");
    header(&[
        "policy",
        "mode",
        "N",
        "Ready / Failed",
        "all Ready (sim)",
        "all Ready (wall)",
        "ARM writes to Ready",
        "write floor (sim)",
        "sim / floor",
        "first reconcile p50",
        "p99",
    ]);
    for r in runs {
        let ratio = match (r.all_ready_sim_s, r.write_floor_s) {
            (Some(w), f) if f > 0.0 => format!("{:.2}", w / f),
            _ => "—".into(),
        };
        row(&cells(
            r,
            vec![
                format!("{} / {}", r.ready, r.failed),
                opt(r.all_ready_sim_s, 1) + " s",
                opt(r.all_ready_wall_s, 1) + " s",
                r.arm_writes_to_ready.to_string(),
                format!("{:.1} s", r.write_floor_s),
                ratio,
                opt(first_reconcile(r, 50.0), 2) + " s",
                opt(first_reconcile(r, 99.0), 2) + " s",
            ],
        ));
    }

    println!("\n### Reaction: Azure reports WaitingForKey → grant request (simulated seconds)\n");
    header(&["policy", "mode", "N", "caches that waited", "p50", "p99", "max", "never granted", "poll + 5 s"]);
    for r in runs {
        row(&cells(
            r,
            vec![
                (r.reactions_sim_s.len() + r.not_granted).to_string(),
                opt(reaction(r, 50.0), 1),
                opt(reaction(r, 99.0), 1),
                opt(reaction_max(r), 1),
                r.not_granted.to_string(),
                format!("{:.1}", r.profile.poll_sim() + 5.0),
            ],
        ));
    }

    println!("\n### Azure requests per cache to reach Ready, by operation (simulator request log, 429s included)\n");
    let mut ops: Vec<(Plane, String)> = runs.iter().flat_map(|r| r.calls.keys().cloned()).collect();
    ops.sort();
    ops.dedup();
    let labels: Vec<String> = runs.iter().map(|r| format!("{} {} N={}", r.policy.name(), r.mode.name(), r.n)).collect();
    let mut cols = vec!["API", "operation"];
    cols.extend(labels.iter().map(String::as_str));
    header(&cols);
    for op in &ops {
        let mut c = vec![op.0.label().to_string(), format!("`{}`", op.1)];
        c.extend(runs.iter().map(|r| format!("{:.2}", r.calls.get(op).copied().unwrap_or(0.0))));
        row(&c);
    }
    for plane in [Plane::ArmRead, Plane::ArmWrite] {
        let mut c = vec![format!("**{} total**", plane.label()), String::new()];
        c.extend(runs.iter().map(|r| format!("**{:.2}**", plane_total(&r.calls, plane))));
        row(&c);
    }
    let mut c = vec!["**ARM total to Ready**".to_string(), "`arm_requests_per_cache`".to_string()];
    c.extend(runs.iter().map(|r| format!("**{:.2}**", arm_per_cache(r))));
    row(&c);
    let mut c = vec!["ARM, whole run".to_string(), "to the end of the steady window".to_string()];
    c.extend(runs.iter().map(|r| format!("{:.2}", r.arm_per_cache_total)));
    row(&c);

    println!("\n### Steady state once all Ready\n");
    header(&["policy", "mode", "N", "window (sim)", "ARM reads / cache / hour", "ARM writes / hour", "429s in window"]);
    for r in runs {
        row(&cells(
            r,
            vec![
                format!("{:.0} s", r.steady_window_sim_s),
                format!("{:.2}", r.steady_reads_per_cache_hour),
                format!("{:.1}", r.steady_writes_per_hour),
                r.steady_429.to_string(),
            ],
        ));
    }

    println!("\n### Throttling, missed windows, operator resources\n");
    header(&["policy", "mode", "N", "429s (whole run)", "missed windows", "peak RSS (VmHWM)", "CPU (user+sys)"]);
    for r in runs {
        row(&cells(
            r,
            vec![
                r.throttled_429.to_string(),
                r.missed_windows.to_string(),
                opt(r.peak_rss_mib, 1) + " MiB",
                opt(r.cpu_s, 1) + " s",
            ],
        ));
    }

    let pairs: Vec<(&RunResult, &RunResult)> = runs
        .iter()
        .filter(|r| r.policy == Policy::Operator)
        .filter_map(|o| {
            runs.iter().find(|n| n.policy == Policy::Naive && n.mode == o.mode && n.n == o.n).map(|n| (o, n))
        })
        .collect();
    if !pairs.is_empty() {
        println!("\n### Operator vs naive (naive ÷ operator)\n");
        header(&[
            "mode",
            "N",
            "ARM req/cache to Ready (op / naive)",
            "ratio",
            "ARM req/cache whole run (op / naive)",
            "ratio",
            "steady reads/cache/h ratio",
            "429s (op / naive)",
        ]);
        for (o, n) in &pairs {
            let ratio = |a: f64, b: f64| if a > 0.0 { format!("{:.1}x", b / a) } else { "∞".into() };
            row(&[
                o.mode.name().to_string(),
                o.n.to_string(),
                format!("{:.2} / {:.2}", arm_per_cache(o), arm_per_cache(n)),
                ratio(arm_per_cache(o), arm_per_cache(n)),
                format!("{:.2} / {:.2}", o.arm_per_cache_total, n.arm_per_cache_total),
                ratio(o.arm_per_cache_total, n.arm_per_cache_total),
                ratio(o.steady_reads_per_cache_hour, n.steady_reads_per_cache_hour),
                format!("{} / {}", o.throttled_429, n.throttled_429),
            ]);
        }
    }

    println!("\n### The issue's goals (operator runs)\n");
    header(&["mode", "N", "goal", "measured", "met"]);
    for o in runs.iter().filter(|r| r.policy == Policy::Operator) {
        let goal = |what: &str, measured: String, met: Option<bool>| {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            row(&[o.mode.name().into(), o.n.to_string(), what.into(), measured, met.into()]);
        };
        match o.mode {
            Mode::Stress => {
                // Judged where the floor is the bound (it is ~0 below ~100 caches, where Azure's own delays
                // dominate); a run that never got all Ready fails it.
                let met = match o.all_ready_sim_s {
                    None => Some(false),
                    Some(_) if o.write_floor_s < 1.0 => None,
                    Some(w) => Some(w <= 1.5 * o.write_floor_s),
                };
                goal(
                    "all Ready within 1.5x the write floor (judged when the floor ≥ 1 s)",
                    format!("{} s vs floor {:.1} s (simulated)", opt(o.all_ready_sim_s, 1), o.write_floor_s),
                    met,
                );
                let p99 = first_reconcile(o, 99.0);
                goal("first-reconcile p99 < 5 s", opt(p99, 2) + " s", p99.map(|p| p < 5.0));
                goal("0 missed windows", o.missed_windows.to_string(), Some(o.missed_windows == 0));
                goal("0 429s", o.throttled_429.to_string(), Some(o.throttled_429 == 0));
                // The memory goals: 64 MiB at 1000 caches, 256 MiB at 10,000.
                let rss = if o.n > 1000 { 256.0 } else { 64.0 };
                goal(
                    &format!("peak RSS < {rss:.0} MiB"),
                    opt(o.peak_rss_mib, 1) + " MiB",
                    o.peak_rss_mib.map(|m| m < rss),
                );
            }
            Mode::Realistic => {
                let limit = o.profile.poll_sim() + 5.0;
                let p99 = reaction(o, 99.0);
                goal(
                    &format!("reaction p99 < poll + 5 s = {limit:.0} s (sim)"),
                    opt(p99, 1) + " s",
                    p99.map(|p| p < limit && o.not_granted == 0),
                );
                goal(
                    "0 steady-state writes",
                    format!("{:.1}/h", o.steady_writes_per_hour),
                    Some(o.steady_writes_per_hour == 0.0),
                );
                goal(
                    "≤ 1 ARM read per cache per hour",
                    format!("{:.2}", o.steady_reads_per_cache_hour),
                    Some(o.steady_reads_per_cache_hour <= 1.0),
                );
                let naive = runs.iter().find(|n| n.policy == Policy::Naive && n.mode == o.mode && n.n == o.n);
                let ratio = naive.map(|n| arm_per_cache(n) / arm_per_cache(o).max(1e-9));
                goal("≥ 10x fewer ARM requests per cache than naive", opt(ratio, 1) + "x", ratio.map(|r| r >= 10.0));
            }
        }
    }

    let size = std::fs::metadata(OPERATOR).map(|m| m.len()).unwrap_or(0);
    println!("\nBinary: `{OPERATOR}`, {:.1} MiB.", size as f64 / 1024.0 / 1024.0);
}

fn json_row(r: &RunResult) -> Value {
    let by_op: serde_json::Map<String, Value> =
        r.calls.iter().map(|((p, op), v)| (format!("{} {op}", p.label()), json!(round(*v)))).collect();
    json!({
        "policy": r.policy.name(),
        "mode": r.mode.name(),
        "caches": r.n,
        "all_ready_sim_s": r.all_ready_sim_s.map(round),
        "all_ready_wall_s": r.all_ready_wall_s.map(round),
        "write_floor_s": round(r.write_floor_s),
        "arm_writes_to_ready": r.arm_writes_to_ready,
        "first_reconcile_p50_s": first_reconcile(r, 50.0).map(round),
        "first_reconcile_p99_s": first_reconcile(r, 99.0).map(round),
        "reaction_p50_sim_s": reaction(r, 50.0).map(round),
        "reaction_p99_sim_s": reaction(r, 99.0).map(round),
        "reaction_max_sim_s": reaction_max(r).map(round),
        "reaction_never_granted": r.not_granted,
        "arm_requests_per_cache": round(arm_per_cache(r)),
        "arm_reads_per_cache": round(plane_total(&r.calls, Plane::ArmRead)),
        "arm_writes_per_cache": round(plane_total(&r.calls, Plane::ArmWrite)),
        "arm_requests_per_cache_total": round(r.arm_per_cache_total),
        "requests_per_cache_by_operation": by_op,
        "steady_window_sim_s": round(r.steady_window_sim_s),
        "steady_reads_per_cache_hour": round(r.steady_reads_per_cache_hour),
        "steady_writes_per_hour": round(r.steady_writes_per_hour),
        "throttled_429": r.throttled_429,
        "peak_rss_mib": r.peak_rss_mib.map(round),
        "cpu_s": r.cpu_s.map(round),
        "missed_windows": r.missed_windows,
        "ready": r.ready,
        "failed": r.failed,
        "speed": r.profile.speed,
        "poll_sim_s": round(r.profile.poll_sim()),
        "resync_sim_s": round(r.profile.resync_sim()),
    })
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `target/bench/summary.json` of the workspace: one row per (policy, mode, size).
pub fn write_json(runs: &[RunResult]) -> PathBuf {
    let dir = PathBuf::from(REPO).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("summary.json");
    let rows: Vec<Value> = runs.iter().map(json_row).collect();
    std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap() + "\n").unwrap();
    path
}

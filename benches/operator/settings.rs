//! What the bench runs: modes, sizes, policies and the timing profile of each mode, from the environment.

use std::time::Duration;

use hpcc_sim::{Seed, SimConfig};

use crate::{CACHES_PER_VAULT, REPO, vault_name};

/// How time runs in a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Today's compressed timing: the simulator at 1x with 1 s create and key-ready delays and no grant
    /// propagation, the operator polling every 0.3 s: what is left is the operator's own overhead.
    Stress,
    /// Azure's timing (the simulator's defaults: create 10 min, key-ready 5 min, grant propagation 5 min) and the
    /// operator's default poll (15 s) and resync (600 s), all in simulated time on a clock sped up `speed` times.
    Realistic,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stress => "stress",
            Mode::Realistic => "realistic",
        }
    }
}

/// Who drives Azure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Policy {
    /// The operator binary (release build) watching its own namespace.
    Operator,
    /// The ASO-like baseline in `naive.rs`: fixed polling, no client-side limiter, a re-PUT every resync.
    Naive,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Operator => "operator",
            Policy::Naive => "naive",
        }
    }
}

/// The timing of one mode, in real seconds where a process waits and simulated where Azure does.
#[derive(Clone, Debug)]
pub struct Profile {
    pub mode: Mode,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Simulated delays of the simulator.
    pub create_delay: Duration,
    pub key_ready_delay: Duration,
    pub grant_propagation: Duration,
    pub authorization_window: Duration,
    /// Real seconds between looks at a transitional cache (operator `--poll-seconds`, naive poll).
    pub poll_real: f64,
    /// Real seconds between looks at a Ready cache (operator `--resync-seconds`, naive re-PUT period).
    pub resync_real: u64,
    /// Operator `--facts-ttl-seconds` (real), when not its default.
    pub facts_ttl_real: Option<u64>,
    /// Real length of the steady-state window once all caches are Ready.
    pub steady_real: Duration,
}

impl Profile {
    /// Poll interval in simulated seconds.
    pub fn poll_sim(&self) -> f64 {
        self.poll_real * self.speed
    }

    /// Resync interval in simulated seconds.
    pub fn resync_sim(&self) -> f64 {
        self.resync_real as f64 * self.speed
    }

    /// The simulator for `n` caches: `examples/seed.yaml`, plus a copy of `kv-cmk` (trusting the operator as it
    /// does) for each further thousand caches (see [`CACHES_PER_VAULT`]).
    pub fn sim_config(&self, n: usize) -> SimConfig {
        let mut seed =
            Seed::from_yaml(&std::fs::read_to_string(format!("{REPO}/examples/seed.yaml")).unwrap()).unwrap();
        let first = vault_name(0);
        let vault = seed.vaults.iter().find(|v| v.name == first).expect("kv-cmk in the seed").clone();
        let grants: Vec<_> = seed.grants.iter().filter(|g| g.vault == first).cloned().collect();
        for k in 1..n.div_ceil(CACHES_PER_VAULT) {
            let name = vault_name(k * CACHES_PER_VAULT);
            seed.vaults.push(hpcc_sim::seed::SeedVault { name: name.clone(), ..vault.clone() });
            seed.grants.extend(grants.iter().map(|g| hpcc_sim::seed::SeedGrant { vault: name.clone(), ..g.clone() }));
        }
        SimConfig {
            seed: Some(seed),
            speed: self.speed,
            key_ready_delay: self.key_ready_delay,
            create_delay: self.create_delay,
            grant_propagation: self.grant_propagation,
            authorization_window: self.authorization_window,
            // ARM's token buckets (reads 250 + 25/s, writes 200 + 10/s per subscription and principal, refilled
            // in real time), so every 429 in the tables is one the simulator really answered.
            throttling: true,
            ..SimConfig::default()
        }
    }

    /// How long (real time) the bench waits for every cache to be Ready or Failed before it gives up. Generous:
    /// the write floor at 10 writes/s is ~0.2 s per cache (a create and a grant), the rest is margin.
    pub fn ready_timeout(&self, n: usize) -> Duration {
        let azure = match self.mode {
            Mode::Stress => 60.0,
            // Past the authorization window every cache is Ready or Failed.
            Mode::Realistic => (self.authorization_window.as_secs_f64() + 20.0 * 60.0) / self.speed,
        };
        Duration::from_secs_f64(azure + 60.0 + 0.6 * n as f64)
    }
}

pub struct Settings {
    pub modes: Vec<Mode>,
    pub sizes: Vec<usize>,
    pub policies: Vec<Policy>,
    /// Realistic mode's clock speed.
    pub speed: f64,
    /// Stress mode's steady-state window and resync (real seconds).
    pub stress_steady: Duration,
    pub stress_resync: u64,
}

impl Settings {
    pub fn from_env() -> Settings {
        let modes = match env_or("HPCC_BENCH_MODE", "both").as_str() {
            "stress" => vec![Mode::Stress],
            "realistic" => vec![Mode::Realistic],
            "both" | "" => vec![Mode::Stress, Mode::Realistic],
            other => panic!("HPCC_BENCH_MODE (make bench MODE=...): stress, realistic or both, not {other:?}"),
        };
        let sizes = env_or("HPCC_BENCH_SIZES", "100,1000")
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse::<usize>().expect("HPCC_BENCH_SIZES (make bench SIZES=...): comma-separated counts")
            })
            .filter(|&n| n > 0)
            .collect();
        let policies = env_or("HPCC_BENCH_POLICIES", "operator,naive")
            .split(',')
            .map(|p| match p.trim() {
                "operator" => Policy::Operator,
                "naive" => Policy::Naive,
                other => panic!("HPCC_BENCH_POLICIES: operator and/or naive, not {other:?}"),
            })
            .collect();
        // 10×, not faster: on a 2-core machine the apiserver, the simulator and the operator share the CPU, and at 30× a
        // second of CPU contention is half a simulated minute of reaction (make bench SPEED= to change it).
        let speed: f64 = env_or("HPCC_BENCH_SPEED", "10").parse().expect("HPCC_BENCH_SPEED (make bench SPEED=...)");
        assert!(speed.is_finite() && speed >= 1.0, "HPCC_BENCH_SPEED must be at least 1");
        Settings {
            modes,
            sizes,
            policies,
            speed,
            stress_steady: Duration::from_secs(env_or("HPCC_BENCH_STEADY_SECONDS", "30").parse().expect("seconds")),
            stress_resync: env_or("HPCC_BENCH_RESYNC_SECONDS", "10").parse().expect("seconds"),
        }
    }

    pub fn profile(&self, mode: Mode) -> Profile {
        let defaults = SimConfig::default();
        match mode {
            Mode::Stress => Profile {
                mode,
                speed: 1.0,
                create_delay: Duration::from_secs(1),
                key_ready_delay: Duration::from_secs(1),
                grant_propagation: Duration::ZERO,
                authorization_window: defaults.authorization_window,
                poll_real: 0.3,
                resync_real: self.stress_resync,
                facts_ttl_real: None,
                steady_real: self.stress_steady,
            },
            // The operator's defaults (poll 15 s, resync 600 s, facts TTL 60 s) in simulated time. Resync and
            // facts TTL are whole seconds on the command line: exact when SPEED divides 60, rounded otherwise
            // (the report prints the simulated values in effect).
            Mode::Realistic => Profile {
                mode,
                speed: self.speed,
                create_delay: defaults.create_delay,
                key_ready_delay: defaults.key_ready_delay,
                grant_propagation: defaults.grant_propagation,
                authorization_window: defaults.authorization_window,
                poll_real: 15.0 / self.speed,
                resync_real: (600.0 / self.speed).round().max(1.0) as u64,
                facts_ttl_real: Some((60.0 / self.speed).round().max(1.0) as u64),
                // At least one simulated hour.
                steady_real: Duration::from_secs_f64(3600.0 / self.speed),
            },
        }
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_string())
}

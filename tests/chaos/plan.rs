//! What the campaign does, drawn up front from the seed: the population of caches (their identity, vault, who
//! grants, rotations, deletions) and the schedule of faults. Everything random is decided here, with `StdRng`s
//! seeded from the campaign's seed, so one seed always gives the same plan; only timing jitter differs between runs.

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};

pub const SUB: &str = "11111111-2222-3333-4444-555555555555";
pub const TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
pub const OPERATOR_CLIENT: &str = "0a0a0a0a-1111-4222-8333-444444444444";
pub const OPERATOR_OID: &str = "0b0b0b0b-1111-4222-8333-444444444444";
pub const OPERATOR_SECRET: &str = "chaos-operator-secret-7f3a9c";
pub const TRUSTED_ID: &str = "cache-id";
pub const TRUSTED_PRINCIPAL: &str = "5c5c5c5c-1111-4222-8333-444444444444";

/// A vault of the campaign's world: its name, whether it uses RBAC, its two seeded key versions.
pub struct VaultSpec {
    pub name: &'static str,
    pub rbac: bool,
    pub purge_protection: bool,
    pub versions: [&'static str; 2],
}

/// Automatic caches use the first two (kv-auto starts without purge protection: the operator turns it on), Manual
/// caches the last two (the operator never writes to them, so they are protected from the start).
pub const VAULTS: [VaultSpec; 4] = [
    VaultSpec {
        name: "kv-auto",
        rbac: false,
        purge_protection: false,
        versions: ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"],
    },
    VaultSpec {
        name: "kv-auto-rbac",
        rbac: true,
        purge_protection: true,
        versions: ["00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"],
    },
    VaultSpec {
        name: "kv-manual",
        rbac: false,
        purge_protection: true,
        versions: ["aabbccddeeff00112233445566778899", "99887766554433221100ffeeddccbbaa"],
    },
    VaultSpec {
        name: "kv-manual-rbac",
        rbac: true,
        purge_protection: true,
        versions: ["0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f", "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"],
    },
];

pub fn vault(name: &str) -> &'static VaultSpec {
    VAULTS.iter().find(|v| v.name == name).expect("a campaign vault")
}

pub fn vault_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/{name}")
}

pub fn identity_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/security-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

#[derive(Clone, Debug, PartialEq)]
pub enum Identity {
    System,
    /// `cache-id`, trusted by every vault from the start.
    UserTrusted,
    /// A user-assigned identity of its own (name, principal) that no vault trusts yet.
    UserFresh(String, String),
}

/// What the simulated person does for a Manual cache.
#[derive(Clone, Debug, PartialEq)]
pub enum Person {
    /// Grants at `createdAt` + this many (simulated) minutes.
    GrantAt(f64),
    /// Never grants: the window is missed on purpose (Fail policy: Failed is correct).
    Never,
    /// Lets the first cache miss its window (Recreate policy), grants the second at its `createdAt` + minutes.
    AfterRecreate(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Deletion {
    /// Shortly after the create, while the cache is still being made (real seconds after the create).
    Early(f64),
    /// Once Ready (and rotated, if it is rotated), after this many real seconds.
    AfterReady(f64),
}

#[derive(Clone, Debug)]
pub struct CachePlan {
    pub name: String,
    pub identity: Identity,
    pub vault: &'static str,
    /// None = Automatic.
    pub person: Option<Person>,
    pub on_timeout_recreate: bool,
    /// `rotateToLatestKeyVersion: true` (no keyVersion); else pinned to `versions[0]`.
    pub rotate_latest: bool,
    /// Pinned: patch keyVersion to `versions[1]` once Ready. Latest: add a key version to the vault once Ready.
    pub rotate: bool,
    pub deletion: Option<Deletion>,
    pub orphan: bool,
    /// `hpccache.io/reconcile-policy: detach-on-delete`.
    pub detach: bool,
    /// Real seconds after the campaign's start.
    pub create_at: f64,
}

impl CachePlan {
    pub fn automatic(&self) -> bool {
        self.person.is_none()
    }

    /// The phase the object must be in at the end (when it is not deleted).
    pub fn expect_failed(&self) -> bool {
        self.person == Some(Person::Never)
    }

    pub fn expected_recreations(&self) -> i32 {
        matches!(self.person, Some(Person::AfterRecreate(_))) as i32
    }

    /// Whether the Azure cache may outlive the object.
    pub fn azure_kept_on_delete(&self) -> bool {
        self.orphan || self.detach
    }

    /// A short description for the log: `sa/kv-auto/auto`.
    pub fn kind(&self) -> String {
        let id = match self.identity {
            Identity::System => "sa",
            Identity::UserTrusted => "ua-trusted",
            Identity::UserFresh(..) => "ua-fresh",
        };
        let access = match &self.person {
            None => "automatic".to_string(),
            Some(Person::GrantAt(m)) => format!("manual(grant at +{m:.0} min)"),
            Some(Person::Never) => "manual(never granted, Fail)".to_string(),
            Some(Person::AfterRecreate(m)) => format!("manual(missed once, Recreate, grant at +{m:.0} min)"),
        };
        format!("{id}/{}/{access}", self.vault)
    }
}

/// The population: `n` caches, created over `spread` real seconds. The twelve identity × vault model × access
/// combinations come round in a seeded order, with a missed window (Fail) and a missed-then-recreated window in
/// every 14; a third of them is deleted (a third of those early), under both deletion policies and detach.
pub fn population(seed: u64, n: usize, spread: f64) -> Vec<CachePlan> {
    let mut rng = StdRng::seed_from_u64(seed);
    #[derive(Clone, Copy)]
    enum Shape {
        Combo(u8, bool, bool), // identity 0..3, rbac, manual
        MissFail,
        MissRecreate,
    }
    let mut combos = Vec::new();
    for id in 0..3 {
        for rbac in [false, true] {
            for manual in [false, true] {
                combos.push(Shape::Combo(id, rbac, manual));
            }
        }
    }
    // Rounds of 14: the 12 combinations in a seeded order, the two missed windows at seeded places among the
    // round's first five (so even a short campaign has both).
    let mut order = Vec::new();
    while order.len() < n {
        let mut round = combos.clone();
        round.shuffle(&mut rng);
        // Early in their round: a missed window takes the longest to play out (90 s, then a second cache).
        let room = (n - order.len()).min(5);
        for miss in [Shape::MissFail, Shape::MissRecreate] {
            let at = rng.random_range(0..room.saturating_sub(1).max(1));
            round.insert(at, miss);
        }
        order.extend(round);
    }
    order.truncate(n);
    let step = spread / n.max(1) as f64;
    order
        .into_iter()
        .enumerate()
        .map(|(i, shape)| {
            let create_at = i as f64 * step + rng.random_range(0.0..step.max(0.01));
            let (identity, vault, person, missed) = match shape {
                Shape::Combo(id, rbac, manual) => {
                    let identity = match id {
                        0 => Identity::System,
                        1 => Identity::UserTrusted,
                        _ => Identity::UserFresh(format!("fresh-{i:02}"), fresh_principal(i)),
                    };
                    let vault = match (manual, rbac) {
                        (false, false) => "kv-auto",
                        (false, true) => "kv-auto-rbac",
                        (true, false) => "kv-manual",
                        (true, true) => "kv-manual-rbac",
                    };
                    let person = manual.then(|| Person::GrantAt(rng.random_range(5.0..40.0_f64).round()));
                    (identity, vault, person, false)
                }
                Shape::MissFail => {
                    let vault = if rng.random_bool(0.5) { "kv-manual" } else { "kv-manual-rbac" };
                    (Identity::System, vault, Some(Person::Never), true)
                }
                Shape::MissRecreate => {
                    let vault = if rng.random_bool(0.5) { "kv-manual" } else { "kv-manual-rbac" };
                    (
                        Identity::System,
                        vault,
                        Some(Person::AfterRecreate(rng.random_range(5.0..15.0_f64).round())),
                        true,
                    )
                }
            };
            let on_timeout_recreate = match person {
                Some(Person::Never) => false,
                Some(Person::AfterRecreate(_)) => true,
                _ => rng.random_bool(0.5),
            };
            let rotate_latest = !missed && rng.random_bool(0.25);
            let rotate = !missed && rng.random_bool(0.4);
            let deletion = (!missed && rng.random_bool(0.35)).then(|| {
                if rng.random_bool(0.33) {
                    Deletion::Early(rng.random_range(0.5..6.0))
                } else {
                    Deletion::AfterReady(rng.random_range(0.0..8.0))
                }
            });
            let orphan = rng.random_bool(0.3);
            let detach = !orphan && rng.random_bool(0.2);
            let short = match &identity {
                Identity::System => "sa",
                Identity::UserTrusted => "ut",
                Identity::UserFresh(..) => "uf",
            };
            let access = match &person {
                None => "auto",
                Some(Person::GrantAt(_)) => "man",
                Some(Person::Never) => "miss",
                Some(Person::AfterRecreate(_)) => "again",
            };
            let model = if VAULTS.iter().any(|v| v.name == vault && v.rbac) { "rbac" } else { "ap" };
            CachePlan {
                name: format!("c{i:02}-{short}-{model}-{access}"),
                identity,
                vault,
                person,
                on_timeout_recreate,
                rotate_latest,
                rotate,
                deletion,
                orphan,
                detach,
                create_at,
            }
        })
        .collect()
}

pub fn fresh_principal(i: usize) -> String {
    format!("7e7e{i:04x}-1111-4222-8333-444444444444")
}

/// The kinds of fault, in the order of the report's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    OperatorSigkill,
    LeaderHandover,
    ApiserverRestart,
    WatchDisconnect,
    LatencySpike,
    Throttle429,
    ServerError5xx,
    DroppedConnection,
    TokenOutage,
    KeyVaultConflict,
    SlowGrantPropagation,
    ClockJump,
    ConflictingWrite,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::OperatorSigkill,
        FaultKind::LeaderHandover,
        FaultKind::ApiserverRestart,
        FaultKind::WatchDisconnect,
        FaultKind::LatencySpike,
        FaultKind::Throttle429,
        FaultKind::ServerError5xx,
        FaultKind::DroppedConnection,
        FaultKind::TokenOutage,
        FaultKind::KeyVaultConflict,
        FaultKind::SlowGrantPropagation,
        FaultKind::ClockJump,
        FaultKind::ConflictingWrite,
    ];

    /// The key in `summary.json` and the table.
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::OperatorSigkill => "operator_sigkill",
            FaultKind::LeaderHandover => "leader_handover",
            FaultKind::ApiserverRestart => "apiserver_restart",
            FaultKind::WatchDisconnect => "watch_disconnect",
            FaultKind::LatencySpike => "latency_spike",
            FaultKind::Throttle429 => "throttle_429_retry_after",
            FaultKind::ServerError5xx => "server_error_5xx",
            FaultKind::DroppedConnection => "dropped_connection",
            FaultKind::TokenOutage => "token_endpoint_outage",
            FaultKind::KeyVaultConflict => "keyvault_409_conflict",
            FaultKind::SlowGrantPropagation => "slow_grant_propagation",
            FaultKind::ClockJump => "clock_jump",
            FaultKind::ConflictingWrite => "conflicting_write",
        }
    }

    /// Relative frequency: the disruptive ones (restarts) rarer, cheap Azure faults more often.
    fn weight(self) -> u32 {
        match self {
            FaultKind::OperatorSigkill => 6,
            FaultKind::LeaderHandover => 4,
            FaultKind::ApiserverRestart => 3,
            FaultKind::WatchDisconnect => 7,
            FaultKind::LatencySpike => 10,
            FaultKind::Throttle429 => 10,
            FaultKind::ServerError5xx => 10,
            FaultKind::DroppedConnection => 8,
            FaultKind::TokenOutage => 5,
            FaultKind::KeyVaultConflict => 9,
            FaultKind::SlowGrantPropagation => 6,
            FaultKind::ClockJump => 7,
            FaultKind::ConflictingWrite => 10,
        }
    }
}

/// One scheduled fault: wait `after` real seconds (after the previous one), then inject `kind` with `roll`, a number
/// drawn for the fault's own choices (which route, how many, how long, which object).
#[derive(Clone, Debug)]
pub struct Fault {
    pub after: f64,
    pub kind: FaultKind,
    pub roll: u64,
}

/// `n` faults, about `mean_gap` real seconds apart. Every kind comes at least once when `n` allows it.
pub fn faults(seed: u64, n: usize, mean_gap: f64) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17_c4a0_5000);
    let total: u32 = FaultKind::ALL.iter().map(|k| k.weight()).sum();
    let mut kinds: Vec<FaultKind> = FaultKind::ALL.iter().copied().take(n).collect();
    while kinds.len() < n {
        let mut pick = rng.random_range(0..total);
        for k in FaultKind::ALL {
            if pick < k.weight() {
                kinds.push(k);
                break;
            }
            pick -= k.weight();
        }
    }
    kinds.shuffle(&mut rng);
    kinds
        .into_iter()
        .map(|kind| Fault { after: rng.random_range(0.3 * mean_gap..1.7 * mean_gap), kind, roll: rng.random() })
        .collect()
}

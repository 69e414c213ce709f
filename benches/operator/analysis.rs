//! Reading the simulator's request log: which API and operation a request was, which cache it was about, and the
//! counts the report prints.

use std::collections::{BTreeMap, HashMap};

use hpcc_sim::RequestRecord;
use jiff::Timestamp;

/// Which API a request went to. ARM throttles reads and writes per subscription; Key Vault and Entra have their own
/// limits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Plane {
    ArmRead,
    ArmWrite,
    KeyVault,
    Entra,
}

impl Plane {
    pub fn label(self) -> &'static str {
        match self {
            Plane::ArmRead => "ARM read",
            Plane::ArmWrite => "ARM write",
            Plane::KeyVault => "Key Vault",
            Plane::Entra => "Entra",
        }
    }

    pub fn is_arm(self) -> bool {
        matches!(self, Plane::ArmRead | Plane::ArmWrite)
    }
}

/// `(plane, "METHOD resource-type")`, e.g. `(ArmWrite, "PUT vaults/accessPolicies")`.
pub fn classify(r: &RequestRecord) -> (Plane, String) {
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
pub fn cache_of(r: &RequestRecord) -> Option<String> {
    let lower = r.path.to_ascii_lowercase();
    let rest = &lower[lower.find("/caches/")? + "/caches/".len()..];
    rest.split('/').next().filter(|s| !s.is_empty()).map(str::to_string)
}

pub fn is_arm_write(r: &RequestRecord) -> bool {
    classify(r).0 == Plane::ArmWrite
}

pub fn is_arm_read(r: &RequestRecord) -> bool {
    classify(r).0 == Plane::ArmRead
}

/// Calls by `(plane, operation)`, as an average per cache.
pub type CallTable = BTreeMap<(Plane, String), f64>;

/// Calls per cache until Ready: a cache's own calls from `from` until it was Ready (or, if it never was, `until`),
/// shared calls (vault, key, token, lists) until `until`, all over `n`.
pub fn calls_to_ready(
    log: &[RequestRecord],
    ready: &HashMap<String, Timestamp>,
    from: Timestamp,
    until: Timestamp,
    n: usize,
) -> CallTable {
    let mut table = CallTable::new();
    for r in log.iter().filter(|r| r.time >= from) {
        let end = cache_of(r).and_then(|c| ready.get(&c).copied()).unwrap_or(until);
        if r.time <= end {
            *table.entry(classify(r)).or_default() += 1.0 / n as f64;
        }
    }
    table
}

pub fn plane_total(table: &CallTable, plane: Plane) -> f64 {
    table.iter().filter(|((p, _), _)| *p == plane).map(|(_, v)| v).sum()
}

/// Records in `[from, to]` (simulated time).
pub fn between(log: &[RequestRecord], from: Timestamp, to: Timestamp) -> impl Iterator<Item = &RequestRecord> {
    log.iter().filter(move |r| r.time >= from && r.time <= to)
}

/// The `p`th percentile by nearest rank of unsorted `values`; `None` when there are none.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Seconds from `a` to `b` (simulated).
pub fn sim_secs(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}

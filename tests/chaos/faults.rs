//! Injecting one scheduled fault into the running world. Azure faults are simulator fault rules with a `count`,
//! so none lasts forever; the operator has to retry through all of them.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use super::plan::{Fault, FaultKind};
use super::world::{World, retry};

/// Routes (`"METHOD /path"` regexes) the Azure faults pick from: ARM caches, vaults, access policies, role
/// assignments, identities, the Key Vault data plane, anything.
const ROUTES: [&str; 8] = [
    "PUT .*/caches/",
    "GET .*/caches",
    "PATCH .*/caches/",
    "DELETE .*/caches/",
    "GET .*/vaults/",
    ".*/roleAssignments",
    "GET /keys/",
    ".",
];

/// Vault writes, where Key Vault answers 409 ConflictError when two overlap.
const VAULT_WRITES: [&str; 4] =
    ["PUT .*/accessPolicies/", "PATCH .*/vaults/", "PUT .*/vaults/.*/roleAssignments/", "DELETE .*/roleAssignments/"];

/// Injects `fault`; returns a line for the campaign's log. `live` are objects that exist now (for conflicting
/// writes).
pub async fn inject(w: &World, fault: &Fault, live: &[String]) -> String {
    let mut rng = StdRng::seed_from_u64(fault.roll);
    match fault.kind {
        FaultKind::OperatorSigkill => {
            // mostly the leader (the one doing the work), sometimes the standby
            let leader = w.leader().await;
            let names = w.operators.names();
            let victim = match leader {
                Some(l) if rng.random_bool(0.75) => l,
                _ => names.choose(&mut rng).unwrap().clone(),
            };
            // a container restart (back in a second) or a node that stays down (the lease expires, the other
            // replica takes over)
            let down = if rng.random_bool(0.5) { 1.0 } else { rng.random_range(15.0..25.0) };
            let ok = w.operators.sigkill(&victim, Duration::from_secs_f64(down));
            format!("SIGKILL {victim} ({}, down {down:.0} s)", if ok { "killed" } else { "was not running" })
        }
        FaultKind::LeaderHandover => match w.leader().await {
            Some(l) => {
                // back only after the other replica had time to take the released lease
                let ok = w.operators.sigterm(&l, Duration::from_secs(15));
                format!("SIGTERM leader {l} ({})", if ok { "releases the lease" } else { "was not running" })
            }
            None => "no leader to hand over (lease not held)".into(),
        },
        FaultKind::ApiserverRestart => match w.cluster.restart_apiserver() {
            Ok(took) => format!("kube-apiserver restarted (etcd kept), ready again after {took:.1?}"),
            Err(e) => panic!("restarting the apiserver: {e}"),
        },
        FaultKind::WatchDisconnect => {
            let n = w.proxy.disconnect_all();
            format!("closed {n} operator connections to the apiserver (watches included)")
        }
        FaultKind::LatencySpike => {
            let route = *ROUTES.choose(&mut rng).unwrap();
            let ms = rng.random_range(300..3000u64);
            let count = rng.random_range(3..15u32);
            w.admin_post("faults", json!({"route": route, "kind": "latency", "latencyMs": ms, "count": count})).await;
            format!("latency {ms} ms on {count} × `{route}`")
        }
        FaultKind::Throttle429 => {
            let route = *ROUTES.choose(&mut rng).unwrap();
            let retry_after = rng.random_range(1..5u64);
            let count = rng.random_range(1..6u32);
            w.admin_post(
                "faults",
                json!({"route": route, "kind": "throttle", "retryAfterSeconds": retry_after, "count": count}),
            )
            .await;
            format!("429 Retry-After {retry_after}s on {count} × `{route}`")
        }
        FaultKind::ServerError5xx => {
            let route = *ROUTES.choose(&mut rng).unwrap();
            let status = *[500u16, 502, 503, 504].choose(&mut rng).unwrap();
            let count = rng.random_range(1..6u32);
            w.admin_post("faults", json!({"route": route, "kind": "error", "status": status, "count": count})).await;
            format!("{status} on {count} × `{route}`")
        }
        FaultKind::DroppedConnection => {
            let route = *ROUTES.choose(&mut rng).unwrap();
            let count = rng.random_range(1..4u32);
            w.admin_post("faults", json!({"route": route, "kind": "drop", "count": count})).await;
            format!("connection dropped on {count} × `{route}`")
        }
        FaultKind::TokenOutage => {
            // The operator keeps its tokens for their lifetime: restart the leader into the outage so a process
            // with no token has to get through it.
            let count = rng.random_range(3..12u32);
            w.admin_post(
                "faults",
                json!({"route": "POST .*/oauth2/v2.0/token", "kind": "error", "status": 503, "code": "temporarily_unavailable", "count": count}),
            )
            .await;
            let leader = w.leader().await;
            if let Some(l) = &leader {
                w.operators.sigkill(l, Duration::from_secs(1));
            }
            format!("token endpoint answers 503 to the next {count} requests; leader {leader:?} restarted into it")
        }
        FaultKind::KeyVaultConflict => {
            let route = *VAULT_WRITES.choose(&mut rng).unwrap();
            let count = rng.random_range(1..5u32);
            w.admin_post(
                "faults",
                json!({"route": route, "kind": "error", "status": 409, "code": "ConflictError", "count": count}),
            )
            .await;
            format!("Key Vault 409 ConflictError on {count} × `{route}`")
        }
        FaultKind::SlowGrantPropagation => {
            let minutes = rng.random_range(10.0..15.0_f64).round();
            let real = rng.random_range(5.0..15.0_f64);
            w.sim.set_grant_propagation(Duration::from_secs_f64(minutes * 60.0));
            *w.slow_propagation_until.lock().unwrap() = Some(std::time::Instant::now() + Duration::from_secs_f64(real));
            format!("grants made in the next {real:.0} s propagate in {minutes} min (not 5)")
        }
        FaultKind::ClockJump => {
            let minutes = rng.random_range(1.0..8.0_f64).round();
            w.sim.advance(Duration::from_secs_f64(minutes * 60.0));
            format!("Azure's clock jumps {minutes} min ahead")
        }
        FaultKind::ConflictingWrite => {
            let Some(name) = live.choose(&mut rng).cloned() else {
                return "no object to write to".into();
            };
            let n: u32 = rng.random_range(0..1000);
            let merge = PatchParams::default();
            let apply = PatchParams::apply("chaos-writer").force();
            let (what, params, body) = match rng.random_range(0..3) {
                0 => (
                    "server-side apply of a label",
                    &apply,
                    Patch::Apply(json!({"apiVersion": "hpccache.io/v1alpha1", "kind": "HpcCache",
                        "metadata": {"name": name, "labels": {"chaos.example/writer": n.to_string()}}})),
                ),
                1 => (
                    "annotation",
                    &merge,
                    Patch::Merge(json!({"metadata": {"annotations": {"chaos.example/note": n.to_string()}}})),
                ),
                _ => (
                    "spec.tags (a new generation)",
                    &merge,
                    Patch::Merge(json!({"spec": {"tags": {"writer": n.to_string()}}})),
                ),
            };
            let result = retry("conflicting write", || w.api.patch(&name, params, &body)).await;
            match result {
                Ok(_) => format!("a second writer changed {what} of {name}"),
                Err(e) => format!("a second writer could not change {what} of {name}: {e}"),
            }
        }
    }
}

//! The invariants checked once the campaign has settled, each a list of violations (empty when it held).

use std::collections::{BTreeMap, BTreeSet};

use hpcc_api::v1alpha1::{HpcCache, Phase};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

use super::drive::{Progress, generation_observed, phase};
use super::plan::{self, CachePlan, Identity};
use super::world::{World, retry};

pub struct Invariant {
    pub name: &'static str,
    pub what: &'static str,
    pub violations: Vec<String>,
}

/// Things seen while the faults were being injected, for the invariants that also hold during the run.
#[derive(Default)]
pub struct DuringRun {
    /// name → the first time it was seen Failed (reason), for objects that must never fail.
    pub failed: BTreeMap<String, String>,
}

impl DuringRun {
    /// Looks at one snapshot.
    pub fn observe(&mut self, plans: &[CachePlan], objects: &BTreeMap<String, HpcCache>) {
        for p in plans.iter().filter(|p| !p.expect_failed()) {
            let Some(o) = objects.get(&p.name) else { continue };
            let st = o.status.clone().unwrap_or_default();
            let failed = phase(o) == Some(Phase::Failed);
            if (failed || st.recreations > p.expected_recreations()) && !self.failed.contains_key(&p.name) {
                let reason = st
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Stalled" && c.status == "True")
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_else(|| format!("recreations {}", st.recreations));
                self.failed.insert(p.name.clone(), reason);
            }
        }
    }
}

fn jwt_like(text: &str) -> bool {
    // a JWT's header and claims are base64url JSON objects: `eyJ…` `.` `eyJ…`
    text.match_indices("eyJ").any(|(i, _)| {
        let rest = &text[i..];
        let first: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        first.len() >= 10 && rest[first.len()..].starts_with(".eyJ")
    })
}

pub async fn check(
    w: &World,
    plans: &[CachePlan],
    progress: &BTreeMap<String, Progress>,
    during: &DuringRun,
) -> Vec<Invariant> {
    let lp = ListParams::default();
    let objects: BTreeMap<String, HpcCache> = match retry("list", || w.api.list(&lp)).await {
        Ok(l) => l.items.into_iter().map(|o| (o.metadata.name.clone().unwrap_or_default(), o)).collect(),
        Err(e) => panic!("listing the objects for the invariants: {e}"),
    };
    let state = w.azure_state().await;
    let dump = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos/azure-state.json");
    let _ = std::fs::write(dump, serde_json::to_string_pretty(&state).unwrap_or_default());
    let deleted = |p: &CachePlan| progress.get(&p.name).is_some_and(|g| g.deleted);
    let mut out = Vec::new();

    // 1. Every cache Ready, or Failed where the scenario made that correct; every deleted object gone.
    let mut v = Vec::new();
    for p in plans {
        let o = objects.get(&p.name);
        match (deleted(p), o) {
            (true, Some(o)) => v.push(format!(
                "{}: deleted but still there (phase {:?}, finalizers {:?})",
                p.name,
                phase(o),
                o.metadata.finalizers
            )),
            (true, None) => {}
            (false, None) => v.push(format!("{}: the object is missing", p.name)),
            (false, Some(o)) => {
                let want = if p.expect_failed() { Phase::Failed } else { Phase::Ready };
                if phase(o) != Some(want) {
                    let stalled = o
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True"))
                        .map(|c| format!(" (Stalled {}: {})", c.reason, c.message))
                        .unwrap_or_default();
                    v.push(format!("{} [{}]: phase {:?}, want {want}{stalled}", p.name, p.kind(), phase(o)));
                } else if want == Phase::Failed {
                    let reason = o
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
                        .map(|c| c.reason.clone());
                    if reason.as_deref() != Some("AuthorizationWindowMissed") {
                        v.push(format!("{}: Failed, but Stalled reason {reason:?}", p.name));
                    }
                }
            }
        }
    }
    out.push(Invariant {
        name: "ready_or_rightly_failed",
        what: "every cache Ready, or Failed only where the scenario made that correct; deleted objects gone",
        violations: v,
    });

    // 2. No window missed that was achievable (during the run and at the end).
    let mut v: Vec<String> = during
        .failed
        .iter()
        .map(|(n, why)| {
            format!("{n}: Failed, or re-created more often than planned, while its window was achievable ({why})")
        })
        .collect();
    for p in plans.iter().filter(|p| !deleted(p)) {
        if let Some(st) = objects.get(&p.name).and_then(|o| o.status.clone())
            && st.recreations != p.expected_recreations()
            && !during.failed.contains_key(&p.name)
        {
            v.push(format!("{}: {} re-creations, planned {}", p.name, st.recreations, p.expected_recreations()));
        }
    }
    out.push(Invariant {
        name: "no_achievable_window_missed",
        what: "no cache that was (or could be) granted in time failed or was re-created",
        violations: v,
    });

    // 3. Exactly one Azure cache per object; none without an object unless its policy kept it.
    let mut v = Vec::new();
    let suffix = format!("chaos/{}/", w.ns);
    let mut per_object: BTreeMap<String, usize> = BTreeMap::new();
    let caches = state["world"]["caches"].as_object().cloned().unwrap_or_default();
    let mut live_system_principals = BTreeSet::new();
    for (id, c) in &caches {
        if let Some(p) = c["identity"]["systemPrincipalId"].as_str() {
            live_system_principals.insert(p.to_ascii_lowercase());
        }
        match c["tags"]["hpccache.io-owner"].as_str().and_then(|o| o.strip_prefix(&suffix)) {
            Some(name) => *per_object.entry(name.to_string()).or_default() += 1,
            None => v.push(format!("Azure cache {id} has no owner tag of this campaign")),
        }
    }
    let creates = creates_per_cache(w);
    for p in plans {
        let n = per_object.remove(&p.name).unwrap_or(0);
        let created = progress.get(&p.name).is_some_and(|g| g.created);
        if deleted(p) {
            if !p.azure_kept_on_delete() && n != 0 {
                v.push(format!("{}: deleted with deletionPolicy Delete, but {n} Azure cache(s) left", p.name));
            }
            if p.azure_kept_on_delete() && n > 1 {
                v.push(format!("{}: {n} Azure caches kept", p.name));
            }
        } else if created && n != 1 {
            v.push(format!("{}: {n} Azure caches for one object", p.name));
        }
        let made = creates.get(&p.name.to_ascii_lowercase()).copied().unwrap_or(0);
        if made > 1 + p.expected_recreations() as usize {
            v.push(format!("{}: {made} cache creates in Azure, planned {}", p.name, 1 + p.expected_recreations()));
        }
    }
    for (name, n) in per_object {
        v.push(format!("{n} Azure cache(s) owned by {name}, which the campaign never made"));
    }
    out.push(Invariant {
        name: "one_azure_cache_per_object",
        what: "exactly one Azure cache per object; none without an object unless Orphan/detach kept it",
        violations: v,
    });

    // 4. No grant left for a deleted principal or object.
    let mut allowed: BTreeSet<String> = [plan::OPERATOR_OID, plan::TRUSTED_PRINCIPAL].map(str::to_string).into();
    for p in plans {
        if let Identity::UserFresh(_, principal) = &p.identity {
            allowed.insert(principal.clone()); // a user-assigned identity outlives its caches (kept by design)
        }
    }
    allowed.extend(live_system_principals);
    allowed.extend(w.person_grants.lock().unwrap().iter().cloned()); // a person's grants are the person's
    let allowed: BTreeSet<String> = allowed.into_iter().map(|p| p.to_ascii_lowercase()).collect();
    let mut v = Vec::new();
    let vaults = state["world"]["vaults"].as_object().cloned().unwrap_or_default();
    if vaults.len() != plan::VAULTS.len() {
        v.push(format!(
            "the simulator's state shows {} vaults, not {}: cannot check grants",
            vaults.len(),
            plan::VAULTS.len()
        ));
    }
    for (name, vault) in vaults {
        for ap in vault["accessPolicies"].as_array().cloned().unwrap_or_default() {
            let oid = ap["objectId"].as_str().unwrap_or_default().to_ascii_lowercase();
            if !allowed.contains(&oid) {
                v.push(format!("access policy on {name} for {oid}, whose cache is gone"));
            }
        }
    }
    for (id, ra) in state["world"]["roleAssignments"].as_object().cloned().unwrap_or_default() {
        let principal = ra["principalId"].as_str().unwrap_or_default().to_ascii_lowercase();
        if !allowed.contains(&principal) {
            v.push(format!("role assignment {id} for {principal}, whose cache is gone"));
        }
    }
    out.push(Invariant {
        name: "no_leaked_grant",
        what: "no grant left for a deleted system-assigned principal or deleted object (unless Orphan/detach)",
        violations: v,
    });

    // 5 and 6. Logs, Events and status: no panic, no secret or token.
    let logs: Vec<(String, String)> = w
        .operators
        .logs()
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap_or_default()))
        .collect();
    let v = logs
        .iter()
        .flat_map(|(file, text)| {
            text.lines().filter(|l| l.contains("panicked at")).map(move |l| format!("{file}: {l}"))
        })
        .collect();
    out.push(Invariant { name: "no_panic", what: "no operator process panicked", violations: v });

    let events_api = Api::<Event>::namespaced(w.client.clone(), &w.ns);
    let events: Vec<Event> = retry("events", || events_api.list(&lp)).await.map(|l| l.items).unwrap_or_default();
    let apiserver_token = std::fs::read_to_string(w.cluster.dir().join("env"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN=").map(str::to_string))
        .unwrap_or_default();
    let secrets =
        [("the operator's client secret", plan::OPERATOR_SECRET.to_string()), ("the apiserver token", apiserver_token)];
    let mut v = Vec::new();
    // The detector must know the simulator's tokens when it sees one (else this invariant holds vacuously).
    let token = azure_token(w).await;
    if !jwt_like(&format!("Authorization: Bearer {token}")) {
        v.push(format!("the token detector does not recognise a token of the simulator ({} chars)", token.len()));
    }
    if logs.iter().all(|(_, text)| text.is_empty()) {
        v.push("the operators' logs are empty: nothing to check".into());
    }
    let mut places: Vec<(String, String)> = logs;
    places.push(("Events".into(), serde_json::to_string(&events).unwrap()));
    let statuses: Vec<Value> = objects.values().map(|o| serde_json::to_value(&o.status).unwrap()).collect();
    places.push(("status".into(), serde_json::to_string(&statuses).unwrap()));
    for (place, text) in &places {
        for (what, secret) in &secrets {
            if !secret.is_empty() && text.contains(secret.as_str()) {
                v.push(format!("{what} appears in {place}"));
            }
        }
        if jwt_like(text) || text.contains("Bearer ey") {
            v.push(format!("a bearer token (JWT) appears in {place}"));
        }
    }
    out.push(Invariant {
        name: "no_secret_or_token_exposed",
        what: "no client secret, apiserver token or Azure access token in logs, Events or status",
        violations: v,
    });

    // 7. observedGeneration current at rest; pinned keys as specified.
    let v = objects
        .values()
        .filter(|o| !generation_observed(o))
        .map(|o| {
            format!(
                "{}: observedGeneration {:?}, generation {:?}",
                o.metadata.name.clone().unwrap_or_default(),
                o.status.as_ref().and_then(|s| s.observed_generation),
                o.metadata.generation
            )
        })
        .collect();
    out.push(Invariant {
        name: "observed_generation_current",
        what: "status.observedGeneration equals metadata.generation at rest",
        violations: v,
    });
    let mut v = Vec::new();
    for p in plans.iter().filter(|p| !p.rotate_latest && !p.expect_failed()) {
        let Some(o) = objects.get(&p.name) else { continue };
        let want = o.spec.encryption.as_ref().and_then(|e| e.key_version.clone()).unwrap_or_default();
        let active = o.status.as_ref().and_then(|s| s.active_key_url.clone()).unwrap_or_default();
        if !active.ends_with(&format!("/{want}")) {
            v.push(format!("{}: active key {active}, spec keyVersion {want}", p.name));
        }
    }
    out.push(Invariant {
        name: "key_as_specified",
        what: "every Ready cache with a pinned key uses the keyVersion of its spec (rotations landed)",
        violations: v,
    });
    out
}

/// An ARM token for the operator's principal, from the simulator's Entra (client credentials).
async fn azure_token(w: &World) -> String {
    let http = hpcc_test_support::sim::https_client(&w.sim, &[]);
    let url = w.sim.base_url().join(&format!("{}/oauth2/v2.0/token", plan::TENANT)).unwrap();
    let form = [
        ("client_id", plan::OPERATOR_CLIENT),
        ("client_secret", plan::OPERATOR_SECRET),
        ("scope", "https://management.azure.com/.default"),
        ("grant_type", "client_credentials"),
    ];
    match http.post(url).form(&form).send().await {
        Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["access_token"].as_str().map(str::to_string)),
        Err(_) => None,
    }
    .unwrap_or_default()
}

/// Successful cache creates (PUT answered 201 or 202) per lower-case cache name, from the simulator's request log.
fn creates_per_cache(w: &World) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in w.sim.requests() {
        if r.method == "PUT" && (r.status == 201 || r.status == 202) {
            let path = r.path.to_ascii_lowercase();
            if let Some(name) = path.split("/caches/").nth(1).filter(|n| !n.contains('/')) {
                *m.entry(name.to_string()).or_default() += 1;
            }
        }
    }
    m
}

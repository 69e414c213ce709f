//! Each cache's life as its plan says: created at its time, granted by a simulated person (Manual), rotated,
//! deleted. The drivers read the objects from the world's snapshot and write with retries, so a restarting
//! apiserver delays them but never stops them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hpcc_api::v1alpha1::{HpcCache, Phase};
use hpcc_sim::seed::SeedKeyVersion;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::plan::{self, CachePlan, Deletion, Identity, Person};
use super::world::{World, retry};

/// What a driver did.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub created: bool,
    pub deleted: bool,
    pub rotated_to: Option<String>,
    pub notes: Vec<String>,
}

pub fn manifest(p: &CachePlan) -> Value {
    let v = plan::vault(p.vault);
    let mut encryption = json!({"keyVaultId": plan::vault_id(p.vault), "keyName": "cache-key"});
    if p.rotate_latest {
        encryption["rotateToLatestKeyVersion"] = json!(true);
    } else {
        encryption["keyVersion"] = json!(v.versions[0]);
    }
    let identity = match &p.identity {
        Identity::System => json!({"type": "SystemAssigned"}),
        Identity::UserTrusted => {
            json!({"type": "UserAssigned", "userAssignedIdentityId": plan::identity_id(plan::TRUSTED_ID)})
        }
        Identity::UserFresh(name, _) => {
            json!({"type": "UserAssigned", "userAssignedIdentityId": plan::identity_id(name)})
        }
    };
    let mut metadata = json!({"name": p.name});
    if p.detach {
        metadata["annotations"] = json!({"hpccache.io/reconcile-policy": "detach-on-delete"});
    }
    json!({
        "apiVersion": "hpccache.io/v1alpha1", "kind": "HpcCache", "metadata": metadata,
        "spec": {
            "azure": {"subscriptionId": plan::SUB, "resourceGroup": "hpc-rg", "location": "eastus"},
            "sku": "Standard_2G", "cacheSizeGB": 3072,
            "subnetId": format!("/subscriptions/{}/resourceGroups/hpc-rg/providers/Microsoft.Network/virtualNetworks/hpc-vnet/subnets/cache", plan::SUB),
            "identity": identity,
            "encryption": encryption,
            "keyAccess": if p.automatic() { "Automatic" } else { "Manual" },
            "onAuthorizationTimeout": if p.on_timeout_recreate { "Recreate" } else { "Fail" },
            "maxRecreations": 1,
            "deletionPolicy": if p.orphan { "Orphan" } else { "Delete" },
            "tags": {"campaign": "chaos"},
        }
    })
}

pub fn phase(o: &HpcCache) -> Option<Phase> {
    o.status.as_ref().and_then(|s| s.phase)
}

pub fn generation_observed(o: &HpcCache) -> bool {
    o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
}

async fn sleep_s(s: f64) {
    tokio::time::sleep(Duration::from_secs_f64(s.max(0.0))).await;
}

/// Polls the snapshot until `done` holds for the object; false after `timeout` or once the object is gone.
async fn wait_for(w: &World, name: &str, timeout: Duration, done: impl Fn(&HpcCache) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(o) = w.object(name)
            && done(&o)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

async fn delete(w: &World, name: &str) -> Result<(), String> {
    let dp = DeleteParams::default();
    match retry("delete", || w.api.delete(name, &dp)).await {
        Ok(_) => Ok(()),
        Err(e) if e.contains("NotFound") || e.contains("not found") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs one cache's life; `gone` tells its person to stop once it is deleted.
pub async fn drive(w: Arc<World>, p: CachePlan) -> Progress {
    let mut progress = Progress::default();
    let gone = Arc::new(AtomicBool::new(false));
    sleep_s(p.create_at - w.t0.elapsed().as_secs_f64()).await;
    let obj: HpcCache = serde_json::from_value(manifest(&p)).expect("a valid manifest");
    let pp = PostParams::default();
    match retry("create", || w.api.create(&pp, &obj)).await {
        Ok(_) => {}
        Err(e) if e.contains("AlreadyExists") || e.contains("already exists") => {}
        Err(e) => {
            progress.notes.push(format!("create failed: {e}"));
            return progress;
        }
    }
    progress.created = true;
    w.note(&format!("{}: created ({})", p.name, p.kind()));
    let person = p.person.clone().map(|plan| tokio::spawn(person(w.clone(), p.clone(), plan, gone.clone())));

    if let Some(Deletion::Early(d)) = p.deletion {
        sleep_s(d).await;
        finish_delete(&w, &p, &mut progress, &gone).await;
        if let Some(h) = person {
            let _ = h.await;
        }
        return progress;
    }
    if p.expect_failed() {
        // nothing more to do: the campaign checks it is Failed at the end
        if let Some(h) = person {
            let _ = h.await;
        }
        return progress;
    }
    let ready = |o: &HpcCache| phase(o) == Some(Phase::Ready) && generation_observed(o);
    if !wait_for(&w, &p.name, Duration::from_secs(400), ready).await {
        progress.notes.push("not Ready within 400 s".into());
        return progress;
    }
    w.note(&format!("{}: Ready", p.name));
    if p.rotate {
        let v = plan::vault(p.vault);
        if p.rotate_latest {
            match w.sim.add_key_version(p.vault, "cache-key", &SeedKeyVersion::default()) {
                Ok(version) => w.note(&format!("{}: Key Vault rotated {} to {version}", p.name, p.vault)),
                Err(e) => progress.notes.push(format!("adding a key version: {e}")),
            }
        } else {
            let body = Patch::Merge(json!({"spec": {"encryption": {"keyVersion": v.versions[1]}}}));
            let pp = PatchParams::default();
            match retry("rotate", || w.api.patch(&p.name, &pp, &body)).await {
                Ok(_) => {
                    progress.rotated_to = Some(v.versions[1].to_string());
                    w.note(&format!("{}: keyVersion → {}", p.name, v.versions[1]));
                    let target = v.versions[1];
                    let rotated = |o: &HpcCache| {
                        ready(o)
                            && o.status
                                .as_ref()
                                .and_then(|s| s.active_key_url.as_deref())
                                .is_some_and(|k| k.ends_with(target))
                    };
                    if !wait_for(&w, &p.name, Duration::from_secs(300), rotated).await {
                        progress.notes.push("the rotation was not active within 300 s".into());
                    }
                }
                Err(e) => progress.notes.push(format!("rotation patch failed: {e}")),
            }
        }
    }
    if let Some(Deletion::AfterReady(d)) = p.deletion {
        sleep_s(d).await;
        finish_delete(&w, &p, &mut progress, &gone).await;
    }
    if let Some(h) = person {
        let _ = h.await;
    }
    progress
}

async fn finish_delete(w: &World, p: &CachePlan, progress: &mut Progress, gone: &AtomicBool) {
    match delete(w, &p.name).await {
        Ok(()) => {
            progress.deleted = true;
            gone.store(true, Ordering::Relaxed);
            let how = if p.detach {
                "detach-on-delete"
            } else if p.orphan {
                "deletionPolicy Orphan"
            } else {
                "deletionPolicy Delete"
            };
            w.note(&format!("{}: deleted ({how})", p.name));
        }
        Err(e) => progress.notes.push(format!("delete failed: {e}")),
    }
}

/// The person of a Manual cache: grants the cache's principal on the vault at `createdAt` + the planned minutes of
/// Azure's clock (for a cache meant to miss its window once, only the re-created cache's principal).
async fn person(w: Arc<World>, p: CachePlan, plan: Person, gone: Arc<AtomicBool>) {
    let (minutes, after_recreate) = match plan {
        Person::GrantAt(m) => (m, false),
        Person::AfterRecreate(m) => (m, true),
        Person::Never => return,
    };
    let known = match &p.identity {
        Identity::UserFresh(_, principal) => Some(principal.clone()),
        Identity::UserTrusted => Some(plan::TRUSTED_PRINCIPAL.to_string()),
        Identity::System => None,
    };
    let start = Instant::now();
    while !gone.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(o) = w.object(&p.name) else { continue };
        let Some(st) = o.status.as_ref() else { continue };
        if after_recreate && st.recreations < 1 {
            continue;
        }
        let (Some(created), Some(principal)) = (st.created_at.as_ref(), known.clone().or(st.principal_id.clone()))
        else {
            continue;
        };
        if after_recreate && phase(&o) != Some(Phase::WaitingForKey) {
            continue; // the old cache's createdAt until the new one is waiting
        }
        let due = created.0 + jiff::SignedDuration::from_secs_f64(minutes * 60.0);
        if w.sim.now() < due {
            continue;
        }
        match w.sim.grant(p.vault, &principal) {
            Ok(_) => {
                w.person_grants.lock().unwrap().push(principal.clone());
                w.note(&format!("{}: a person granted {principal} on {} (createdAt + {minutes} min)", p.name, p.vault));
            }
            Err(e) => w.note(&format!("{}: the person's grant failed: {e}", p.name)),
        }
        return;
    }
}

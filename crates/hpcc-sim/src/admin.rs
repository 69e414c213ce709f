//! The admin API (plain HTTP on `admin_listen`): clock (advance, speed), request log, seeding, grants, faults,
//! delays (grant propagation at run time), state dump.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::faults::FaultRule;
use super::seed::{Seed, SeedKeyVersion};
use super::server::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/clock/speed", post(speed))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/seed", post(seed))
        .route("/grants", post(grant))
        .route("/keys", post(add_key_version))
        .route("/faults", get(list_faults).post(add_faults).delete(clear_faults))
        .route("/delays", get(delays).post(set_delays))
        .route("/state", get(state))
        .with_state(shared)
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": msg.into()}))).into_response()
}

fn now_json(shared: &Shared) -> Value {
    json!({"now": shared.clock.now().to_string(), "speed": shared.clock.speed()})
}

async fn clock(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(now_json(&shared)).into_response()
}

/// Body `{"minutes": N}` and/or `{"seconds": N}` (numbers, may be fractional).
async fn advance(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let minutes = v.get("minutes").map(|m| m.as_f64());
    let seconds = v.get("seconds").map(|s| s.as_f64());
    if minutes.is_none() && seconds.is_none() {
        return err(StatusCode::BAD_REQUEST, "give {\"minutes\": N} or {\"seconds\": N}");
    }
    let total = match (minutes, seconds) {
        (Some(None), _) | (_, Some(None)) => {
            return err(StatusCode::BAD_REQUEST, "minutes/seconds must be numbers");
        }
        (m, s) => m.flatten().unwrap_or(0.0) * 60.0 + s.flatten().unwrap_or(0.0),
    };
    if !total.is_finite() || total < 0.0 {
        return err(StatusCode::BAD_REQUEST, "the clock only moves forward");
    }
    shared.clock.advance(Duration::from_secs_f64(total));
    let now = shared.clock.now();
    shared.world().tick(now);
    axum::Json(now_json(&shared)).into_response()
}

/// Body `{"speed": N}`: simulated seconds per real second from now on (0 stops the clock; `advance` still moves it).
/// The simulated time reached so far is kept.
async fn speed(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    match v.get("speed").and_then(Value::as_f64) {
        Some(s) if s.is_finite() && s >= 0.0 => {
            shared.clock.set_speed(s);
            axum::Json(now_json(&shared)).into_response()
        }
        _ => err(StatusCode::BAD_REQUEST, "give {\"speed\": N} with N >= 0 (simulated seconds per real second)"),
    }
}

fn delays_json(shared: &Shared) -> Value {
    json!({"grantPropagationSeconds": shared.world().delays.grant_propagation.as_secs_f64()})
}

async fn delays(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(delays_json(&shared)).into_response()
}

/// Body `{"grantPropagationSeconds": N}` (simulated seconds, may be fractional): the grant propagation of grants
/// made from now on (slow propagation on a bad day); grants already made keep the instant they take effect.
async fn set_delays(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    match v.get("grantPropagationSeconds").and_then(Value::as_f64) {
        Some(s) if s.is_finite() && s >= 0.0 => {
            shared.world().delays.grant_propagation = Duration::from_secs_f64(s);
            axum::Json(delays_json(&shared)).into_response()
        }
        _ => err(StatusCode::BAD_REQUEST, "give {\"grantPropagationSeconds\": N} with N >= 0"),
    }
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    let log = shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut out = String::new();
    for r in log {
        out.push_str(&serde_json::to_string(&r).unwrap_or_default());
        out.push('\n');
    }
    ([("content-type", "application/x-ndjson")], out).into_response()
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> Response {
    shared.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn seed(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let seed = match Seed::from_yaml(&text) {
        Ok(s) => s,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid seed: {e}")),
    };
    let now = shared.clock.now();
    let mut w = shared.world();
    w.tick(now);
    if let Err(e) = w.apply_seed(&seed, now) {
        return err(StatusCode::BAD_REQUEST, format!("invalid seed: {e}"));
    }
    w.tick(now);
    axum::Json(json!({"ok": true})).into_response()
}

/// `{"vaultName" | "vaultId": …, "principalId": …}`.
async fn grant(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let vault = v.get("vaultId").or_else(|| v.get("vaultName")).and_then(Value::as_str);
    let principal = v.get("principalId").and_then(Value::as_str);
    let (Some(vault), Some(principal)) = (vault, principal) else {
        return err(StatusCode::BAD_REQUEST, "give vaultName or vaultId, and principalId");
    };
    let now = shared.clock.now();
    let mut w = shared.world();
    w.tick(now);
    match w.grant(vault, principal, now, "admin") {
        Ok(what) => {
            w.tick(now);
            axum::Json(json!({"granted": what})).into_response()
        }
        Err(e) => err(StatusCode::NOT_FOUND, e),
    }
}

/// `{"vaultName" | "vaultId": …, "keyName": …, <key version fields of the seed>}`: a new (newest) key version,
/// as a rotation in Key Vault creates.
async fn add_key_version(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let Some(obj) = v.as_object_mut() else {
        return err(StatusCode::BAD_REQUEST, "expected an object");
    };
    let vault = obj.remove("vaultId").or_else(|| obj.remove("vaultName"));
    obj.remove("vaultName");
    let key = obj.remove("keyName");
    let (Some(Value::String(vault)), Some(Value::String(key))) = (vault, key) else {
        return err(StatusCode::BAD_REQUEST, "give vaultName or vaultId, and keyName");
    };
    let version: SeedKeyVersion = match serde_json::from_value(v) {
        Ok(k) => k,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid key version: {e}")),
    };
    let now = shared.clock.now();
    let mut w = shared.world();
    w.tick(now);
    match w.add_key_version(&vault, &key, &version, now) {
        Ok(id) => {
            w.tick(now);
            axum::Json(json!({"version": id})).into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Response {
    let f = shared.faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
    axum::Json(json!(f)).into_response()
}

/// A rule or a list of rules; appended to the active rules.
async fn add_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let list = match v {
        Value::Array(a) => a,
        Value::Object(ref o) if o.contains_key("rules") => o["rules"].as_array().cloned().unwrap_or_default(),
        o @ Value::Object(_) => vec![o],
        _ => {
            return err(StatusCode::BAD_REQUEST, "expected a rule or a list of rules");
        }
    };
    let mut rules = Vec::new();
    for item in list {
        let rule: FaultRule = match serde_json::from_value(item) {
            Ok(r) => r,
            Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid rule: {e}")),
        };
        match rule.validate() {
            Ok(r) => rules.push(r),
            Err(e) => return err(StatusCode::BAD_REQUEST, e),
        }
    }
    let n = rules.len();
    shared.faults.lock().unwrap_or_else(|e| e.into_inner()).extend(rules);
    axum::Json(json!({"added": n})).into_response()
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    shared.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    let now = shared.clock.now();
    let mut w = shared.world();
    w.tick(now);
    let caches: Vec<Value> = w
        .caches
        .values()
        .map(|c| {
            let (p, h, _) = c.timeline.status(now, &w.delays);
            json!({
                "id": c.id(),
                "provisioningState": p,
                "health": h,
                "waitingForKeyAt": c.timeline.waiting_for_key_at(),
                "keyGrantedAt": w.key_granted_at(c),
                "detail": c,
            })
        })
        .collect();
    let aml: Vec<Value> = w
        .aml_filesystems
        .values()
        .map(|f| {
            let (p, h, _) = f.timeline.status(now);
            json!({"id": f.id(), "provisioningState": p, "health": h})
        })
        .collect();
    axum::Json(json!({
        "now": now.to_string(),
        "tenantId": w.tenant_id,
        "caches": caches,
        "amlFilesystems": aml,
        "world": &*w,
    }))
    .into_response()
}

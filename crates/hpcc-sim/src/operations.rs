//! `Microsoft.StorageCache/locations/{location}/ascOperations/{id}`: the status of a long-running operation on a
//! cache or an AML file system, and its `monitor=true` form (the `Location` header's semantics).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::amlfs::amlfs_json;
use super::caches::{RETRY_AFTER_SECS, cache_json, norm_location};
use super::clock::arm_time;
use super::route::{Ctx, Route};
use super::state::{OpKind, OpTarget, World};
use super::wire::{Out, Req, method_not_allowed};

pub fn handle(ctx: &Ctx, w: &World, r: &Req, route: &Route) -> Out {
    match (route, &r.method) {
        (Route::AscOperation { sub, location, op }, &Method::GET) => asc_operation(ctx, w, r, sub, location, op),
        _ => method_not_allowed(&r.method),
    }
}

fn asc_operation(ctx: &Ctx, w: &World, r: &Req, sub: &str, location: &str, op_id: &str) -> Out {
    let Some(op) = w.operations.get(&op_id.to_ascii_lowercase()).or_else(|| w.operations.get(op_id)) else {
        return Out::arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The operation '{op_id}' was not found."),
        );
    };
    if !op.subscription_id.eq_ignore_ascii_case(sub) || norm_location(location) != op.location {
        return Out::arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The operation '{op_id}' was not found."),
        );
    }
    let monitor = r.param("monitor").is_some_and(|m| m.eq_ignore_ascii_case("true"));
    if monitor {
        // Location-header semantics: 202 while running, then what the synchronous call would have returned.
        return match op.status.as_str() {
            "InProgress" => Out::empty(StatusCode::ACCEPTED)
                .with_header(
                    "location",
                    format!("{}{}", ctx.endpoints.base_url.as_str().trim_end_matches('/'), r_path_query(r)),
                )
                .with_header("retry-after", RETRY_AFTER_SECS.to_string()),
            "Succeeded" => {
                let body = match (op.kind, op.target) {
                    (OpKind::Delete, _) => None,
                    (_, OpTarget::Cache) => w.caches.get(&op.resource_key).map(|c| cache_json(w, c, ctx.now)),
                    (_, OpTarget::AmlFilesystem) => {
                        w.aml_filesystems.get(&op.resource_key).map(|f| amlfs_json(f, ctx.now))
                    }
                };
                match body {
                    Some(b) => Out::json(StatusCode::OK, b),
                    None => Out::empty(StatusCode::NO_CONTENT),
                }
            }
            _ => {
                let (code, msg) = op.error.clone().unwrap_or(("Failed".into(), "The operation failed.".into()));
                Out::arm_error(StatusCode::BAD_REQUEST, &code, msg)
            }
        };
    }
    let base = format!(
        "/subscriptions/{sub}/providers/Microsoft.StorageCache/locations/{}/ascOperations/{}",
        op.location, op.id
    );
    let mut body = json!({
        "id": base,
        "name": op.id,
        "status": op.status,
        "startTime": arm_time(op.start_time),
    });
    if let Some(e) = op.end_time {
        body["endTime"] = Value::String(arm_time(e));
    }
    if let Some((code, message)) = &op.error {
        body["error"] = json!({"code": code, "message": message});
    }
    Out::json(StatusCode::OK, body)
}

fn r_path_query(r: &Req) -> String {
    if r.query.is_empty() { r.path.clone() } else { format!("{}?{}", r.path, r.query) }
}

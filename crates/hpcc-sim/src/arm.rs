//! ARM front: bearer check, throttling, api-version, authorization (403) and subscription / resource-group
//! existence, then the resource handlers (`caches`, `vaults`). Which resource a path names is `route`'s business.

use axum::http::StatusCode;

use super::auth::{self, ARM_AUDIENCES};
use super::caches;
use super::route::{Ctx, Route, check_api_version, parse_route};
use super::server::Shared;
use super::state::World;
use super::throttle::throttled;
use super::vaults;
use super::wire::{OpClass, Out, Req};

pub fn handle(shared: &Shared, r: &Req, segs: &[String]) -> Out {
    let tenant = shared.world().tenant_id.clone();
    let claims = match shared.tokens.verify_bearer(r, ARM_AUDIENCES, &tenant) {
        Ok(c) => c,
        Err(f) => return auth::arm_unauthorized(&shared.endpoints.base_url, &f),
    };
    let principal = claims.oid.clone();
    let mut out = handle_authenticated(shared, r, segs, &principal);
    out.principal = Some(principal);
    out
}

fn handle_authenticated(shared: &Shared, r: &Req, segs: &[String], principal: &str) -> Out {
    let route = match parse_route(segs) {
        Ok(rt) => rt,
        Err(o) => return o,
    };
    let class = OpClass::of(&r.method);
    let sub_for_limits = route.subscription().unwrap_or("tenant").to_string();
    let remaining = {
        let mut b = shared.buckets.lock().unwrap_or_else(|e| e.into_inner());
        b.take(&sub_for_limits, principal, class)
    };
    let remaining = match remaining {
        Ok(n) => n,
        Err(retry) if shared.cfg.throttling => {
            return throttled(&sub_for_limits, principal, class, retry);
        }
        Err(_) => 0,
    };
    let remaining = if shared.cfg.throttling { remaining } else { class.limits().0 as u64 - 1 };
    let header = format!("x-ms-ratelimit-remaining-subscription-{}", class.name());
    let out = handle_route(shared, r, &route, principal, class);
    out.with_header(&header, remaining.to_string())
}

fn handle_route(shared: &Shared, r: &Req, route: &Route, principal: &str, class: OpClass) -> Out {
    let api_version = match check_api_version(r, route) {
        Ok(v) => v,
        Err(o) => return o,
    };
    let now = shared.clock.now();
    let mut w = shared.world();
    w.tick(now);
    let scope = route.scope_id();
    let action = route.action(class);
    if !w.arm_allowed(principal, &scope, &action) {
        return Out::arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{principal}' with object id '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        );
    }
    if let Some(e) = check_container(&w, route) {
        return e;
    }
    let ctx =
        Ctx { api_version: &api_version, now, principal, endpoints: &shared.endpoints, retired: shared.cfg.retired };
    let out = match route {
        Route::Cache { .. } | Route::CachesInRg { .. } | Route::CachesInSub { .. } | Route::AscOperation { .. } => {
            caches::handle(&ctx, &mut w, r, route)
        }
        _ => vaults::handle(&ctx, &mut w, r, route),
    };
    w.tick(now);
    out
}

fn check_container(w: &World, route: &Route) -> Option<Out> {
    if let Some(sub) = route.subscription() {
        let Some(rgs) = w.subscriptions.get(&sub.to_ascii_lowercase()) else {
            return Some(Out::arm_error(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{sub}' could not be found."),
            ));
        };
        if let Some(rg) = route.resource_group()
            && !rgs.contains(&rg.to_ascii_lowercase())
        {
            return Some(Out::arm_error(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{rg}' could not be found."),
            ));
        }
    }
    None
}

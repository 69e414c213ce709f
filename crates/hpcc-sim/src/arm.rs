//! ARM front: bearer check, throttling, api-version, authorization (403) and subscription / resource-group
//! existence, then the resource handlers (`caches`, `amlfs`, `operations`, `vaults`). Which resource a path names is `route`'s business.

use std::time::Instant;

use axum::http::{Method, StatusCode};

use super::amlfs;
use super::auth::{self, ARM_AUDIENCES};
use super::caches;
use super::operations;
use super::route::{Ctx, Route, check_api_version, parse_route};
use super::server::Shared;
use super::state::{World, vault_of_scope};
use super::throttle::throttled;
use super::vaults;
use super::wire::{OpClass, Out, Req, key_vault_conflict};

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
        b.take(&sub_for_limits, principal, class, shared.clock.speed())
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
    let hold = match begin_vault_write(shared, &w, route, &r.method) {
        Ok(h) => h,
        Err(conflict) => return conflict,
    };
    let ctx = Ctx {
        api_version: &api_version,
        now,
        principal,
        endpoints: &shared.endpoints,
        retired: shared.cfg.retired,
        create_accepted_every: shared.cfg.create_accepted_every,
        role_assignment_page_size: shared.cfg.role_assignment_page_size,
        cache_page_size: shared.cfg.cache_page_size,
    };
    let mut out = match route {
        Route::Cache { .. } | Route::CachesInRg { .. } | Route::CachesInSub { .. } => {
            caches::handle(&ctx, &mut w, r, route)
        }
        Route::AmlFilesystem { .. } | Route::AmlFilesystemsInRg { .. } | Route::AmlFilesystemsInSub { .. } => {
            amlfs::handle(&ctx, &mut w, r, route)
        }
        Route::AscOperation { .. } => operations::handle(&ctx, &w, r, route),
        _ => vaults::handle(&ctx, &mut w, r, route),
    };
    w.tick(now);
    // The write stays in flight for a while after the world changed; the world lock is released before the
    // listener waits it out (`Out::hold`).
    out.hold = out.hold.or(hold);
    out
}

/// The vault a request writes to, if it is a Key Vault write: vault PATCH/PUT, `accessPolicies/{kind}` PUT, or a
/// role assignment PUT/DELETE whose scope is the vault or below it.
fn vault_write_target(route: &Route, m: &Method) -> Option<String> {
    match route {
        Route::Vault { name, .. } if *m == Method::PATCH || *m == Method::PUT => Some(name.to_ascii_lowercase()),
        Route::VaultAccessPolicy { name, .. } if *m == Method::PUT => Some(name.to_ascii_lowercase()),
        Route::RoleAssignment { scope, .. } if *m == Method::PUT || *m == Method::DELETE => vault_of_scope(scope),
        _ => None,
    }
}

/// Key Vault write overlap: while one write to a vault is in flight (`SimConfig::vault_write_in_flight`, real
/// time), another write to it gets 409 `ConflictError` (Azure/AzureKeyVault issue 6: "This can happen if parallel
/// operations are being performed on the Key Vault"). `Ok(hold)`: how long this write stays in flight.
fn begin_vault_write(
    shared: &Shared,
    w: &World,
    route: &Route,
    m: &Method,
) -> Result<Option<std::time::Duration>, Out> {
    let d = shared.cfg.vault_write_in_flight;
    if d.is_zero() {
        return Ok(None);
    }
    let Some(vault) = vault_write_target(route, m) else {
        return Ok(None);
    };
    let mut writes = shared.vault_writes.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    writes.retain(|_, until| *until > now);
    if writes.contains_key(&vault) {
        let name = w.vaults.get(&vault).map(|v| v.name.clone()).unwrap_or(vault);
        return Err(key_vault_conflict(&name));
    }
    writes.insert(vault, now + d);
    Ok(Some(d))
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

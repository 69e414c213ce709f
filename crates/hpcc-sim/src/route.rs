//! ARM routes: which resource an ARM path addresses (case-insensitive), its api-versions, and the context its
//! handler gets. The ARM front (`arm`) applies them; the resource handlers (`caches`, `vaults`) read them.

use axum::http::StatusCode;

use super::endpoints::Endpoints;
use super::wire::{OpClass, Out, Req};

pub const CACHE_API_VERSIONS: &[&str] = &[
    "2019-08-01-preview",
    "2019-11-01",
    "2020-03-01",
    "2020-10-01",
    "2021-03-01",
    "2021-05-01",
    "2021-09-01",
    "2022-01-01",
    "2022-05-01",
    "2023-01-01",
    "2023-03-01-preview",
    "2023-05-01",
    "2023-11-01-preview",
    "2024-03-01",
    "2024-07-01",
    "2025-07-01",
    "2026-01-01",
    "2026-08-01",
];
/// `amlFilesystems`: every storagecache version whose input files include `amlfilesystem.json` (the readme's tags
/// 2023-03-01-preview … 2025-07-01) plus the TypeSpec-generated 2026-01-01 and 2026-08-01 `openapi.json`.
pub const AML_API_VERSIONS: &[&str] = &[
    "2023-03-01-preview",
    "2023-05-01",
    "2023-11-01-preview",
    "2024-03-01",
    "2024-07-01",
    "2025-07-01",
    "2026-01-01",
    "2026-08-01",
];
pub const VAULT_API_VERSIONS: &[&str] =
    &["2019-09-01", "2021-10-01", "2022-07-01", "2022-11-01", "2023-02-01", "2023-07-01", "2024-11-01", "2025-05-01"];
pub const ROLE_ASSIGNMENT_API_VERSIONS: &[&str] = &["2022-04-01"];
pub const IDENTITY_API_VERSIONS: &[&str] = &["2018-11-30", "2023-01-31", "2024-11-30"];

/// A recognised ARM route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Cache { sub: String, rg: String, name: String },
    CachesInRg { sub: String, rg: String },
    CachesInSub { sub: String },
    AscOperation { sub: String, location: String, op: String },
    AmlFilesystem { sub: String, rg: String, name: String },
    AmlFilesystemsInRg { sub: String, rg: String },
    AmlFilesystemsInSub { sub: String },
    Vault { sub: String, rg: String, name: String },
    VaultAccessPolicy { sub: String, rg: String, name: String, kind: String },
    Identity { sub: String, rg: String, name: String },
    RoleAssignment { scope: String, name: String },
    RoleAssignments { scope: String },
}

impl Route {
    pub fn resource_type(&self) -> &'static str {
        match self {
            Route::Cache { .. } | Route::CachesInRg { .. } | Route::CachesInSub { .. } => "caches",
            Route::AscOperation { .. } => "locations/ascOperations",
            Route::AmlFilesystem { .. } | Route::AmlFilesystemsInRg { .. } | Route::AmlFilesystemsInSub { .. } => {
                "amlFilesystems"
            }
            Route::Vault { .. } => "vaults",
            Route::VaultAccessPolicy { .. } => "vaults/accessPolicies",
            Route::Identity { .. } => "userAssignedIdentities",
            Route::RoleAssignment { .. } | Route::RoleAssignments { .. } => "roleAssignments",
        }
    }
    pub fn namespace(&self) -> &'static str {
        match self {
            Route::Cache { .. }
            | Route::CachesInRg { .. }
            | Route::CachesInSub { .. }
            | Route::AscOperation { .. }
            | Route::AmlFilesystem { .. }
            | Route::AmlFilesystemsInRg { .. }
            | Route::AmlFilesystemsInSub { .. } => "Microsoft.StorageCache",
            Route::Vault { .. } | Route::VaultAccessPolicy { .. } => "Microsoft.KeyVault",
            Route::Identity { .. } => "Microsoft.ManagedIdentity",
            Route::RoleAssignment { .. } | Route::RoleAssignments { .. } => "Microsoft.Authorization",
        }
    }
    pub fn api_versions(&self) -> &'static [&'static str] {
        if self.resource_type() == "amlFilesystems" {
            return AML_API_VERSIONS;
        }
        match self.namespace() {
            "Microsoft.StorageCache" => CACHE_API_VERSIONS,
            "Microsoft.KeyVault" => VAULT_API_VERSIONS,
            "Microsoft.ManagedIdentity" => IDENTITY_API_VERSIONS,
            _ => ROLE_ASSIGNMENT_API_VERSIONS,
        }
    }
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Route::Cache { sub, .. }
            | Route::CachesInRg { sub, .. }
            | Route::CachesInSub { sub }
            | Route::AscOperation { sub, .. }
            | Route::AmlFilesystem { sub, .. }
            | Route::AmlFilesystemsInRg { sub, .. }
            | Route::AmlFilesystemsInSub { sub }
            | Route::Vault { sub, .. }
            | Route::VaultAccessPolicy { sub, .. }
            | Route::Identity { sub, .. } => Some(sub),
            Route::RoleAssignment { scope, .. } | Route::RoleAssignments { scope } => {
                let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
                match segs.as_slice() {
                    [s, id, ..] if s.eq_ignore_ascii_case("subscriptions") => Some(id),
                    _ => None,
                }
            }
        }
    }
    pub fn resource_group(&self) -> Option<&str> {
        match self {
            Route::Cache { rg, .. }
            | Route::CachesInRg { rg, .. }
            | Route::AmlFilesystem { rg, .. }
            | Route::AmlFilesystemsInRg { rg, .. }
            | Route::Vault { rg, .. }
            | Route::VaultAccessPolicy { rg, .. }
            | Route::Identity { rg, .. } => Some(rg),
            Route::RoleAssignment { scope, .. } | Route::RoleAssignments { scope } => {
                let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
                match segs.as_slice() {
                    [_, _, r, rg, ..] if r.eq_ignore_ascii_case("resourcegroups") => Some(rg),
                    _ => None,
                }
            }
            _ => None,
        }
    }
    /// The ARM id the caller acts on (for authorization).
    pub fn scope_id(&self) -> String {
        match self {
            Route::Cache { sub, rg, name } => {
                format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.StorageCache/caches/{name}")
            }
            Route::AmlFilesystem { sub, rg, name } => format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.StorageCache/amlFilesystems/{name}"
            ),
            Route::CachesInRg { sub, rg } | Route::AmlFilesystemsInRg { sub, rg } => {
                format!("/subscriptions/{sub}/resourceGroups/{rg}")
            }
            Route::CachesInSub { sub } | Route::AscOperation { sub, .. } | Route::AmlFilesystemsInSub { sub } => {
                format!("/subscriptions/{sub}")
            }
            Route::Vault { sub, rg, name } | Route::VaultAccessPolicy { sub, rg, name, .. } => {
                format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}")
            }
            Route::Identity { sub, rg, name } => {
                format!(
                    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
                )
            }
            Route::RoleAssignment { scope, .. } | Route::RoleAssignments { scope } => scope.clone(),
        }
    }
    /// ARM action string for the 403 message.
    pub fn action(&self, class: OpClass) -> String {
        let verb = match class {
            OpClass::Reads => "read",
            OpClass::Writes => "write",
            OpClass::Deletes => "delete",
        };
        let t = match self {
            Route::Cache { .. } | Route::CachesInRg { .. } | Route::CachesInSub { .. } => {
                "Microsoft.StorageCache/caches"
            }
            Route::AscOperation { .. } => "Microsoft.StorageCache/locations/ascoperations",
            Route::AmlFilesystem { .. } | Route::AmlFilesystemsInRg { .. } | Route::AmlFilesystemsInSub { .. } => {
                "Microsoft.StorageCache/amlFilesystems"
            }
            Route::Vault { .. } => "Microsoft.KeyVault/vaults",
            Route::VaultAccessPolicy { .. } => "Microsoft.KeyVault/vaults/accessPolicies",
            Route::Identity { .. } => "Microsoft.ManagedIdentity/userAssignedIdentities",
            Route::RoleAssignment { .. } | Route::RoleAssignments { .. } => "Microsoft.Authorization/roleAssignments",
        };
        format!("{t}/{verb}")
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Parse an ARM path (segments without empty ones) into a route. `Err(out)` is an ARM-style error.
pub fn parse_route(segs: &[String]) -> Result<Route, Out> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    // role assignments at any scope
    if let Some(i) = (0..s.len().saturating_sub(1)).find(|&i| {
        eq(s[i], "providers")
            && eq(s[i + 1], "Microsoft.Authorization")
            && s.get(i + 2).is_some_and(|t| eq(t, "roleAssignments"))
    }) {
        let scope = format!("/{}", s[..i].join("/"));
        return match &s[i + 3..] {
            [] => Ok(Route::RoleAssignments { scope }),
            [name] => Ok(Route::RoleAssignment { scope, name: name.to_string() }),
            _ => Err(not_found_path(segs)),
        };
    }
    let r = match s.as_slice() {
        [su, sub, r, rg, p, ns, t, name]
            if eq(su, "subscriptions") && eq(r, "resourceGroups") && eq(p, "providers") =>
        {
            let (sub, rg, name) = (sub.to_string(), rg.to_string(), name.to_string());
            if eq(ns, "Microsoft.StorageCache") && eq(t, "caches") {
                Route::Cache { sub, rg, name }
            } else if eq(ns, "Microsoft.StorageCache") && eq(t, "amlFilesystems") {
                Route::AmlFilesystem { sub, rg, name }
            } else if eq(ns, "Microsoft.KeyVault") && eq(t, "vaults") {
                Route::Vault { sub, rg, name }
            } else if eq(ns, "Microsoft.ManagedIdentity") && eq(t, "userAssignedIdentities") {
                Route::Identity { sub, rg, name }
            } else {
                return Err(invalid_type(ns, t));
            }
        }
        [su, sub, r, rg, p, ns, t] if eq(su, "subscriptions") && eq(r, "resourceGroups") && eq(p, "providers") => {
            if eq(ns, "Microsoft.StorageCache") && eq(t, "caches") {
                Route::CachesInRg { sub: sub.to_string(), rg: rg.to_string() }
            } else if eq(ns, "Microsoft.StorageCache") && eq(t, "amlFilesystems") {
                Route::AmlFilesystemsInRg { sub: sub.to_string(), rg: rg.to_string() }
            } else {
                return Err(invalid_type(ns, t));
            }
        }
        [su, sub, r, rg, p, ns, t, name, a, kind]
            if eq(su, "subscriptions")
                && eq(r, "resourceGroups")
                && eq(p, "providers")
                && eq(ns, "Microsoft.KeyVault")
                && eq(t, "vaults")
                && eq(a, "accessPolicies") =>
        {
            Route::VaultAccessPolicy {
                sub: sub.to_string(),
                rg: rg.to_string(),
                name: name.to_string(),
                kind: kind.to_string(),
            }
        }
        [su, sub, p, ns, t]
            if eq(su, "subscriptions") && eq(p, "providers") && eq(ns, "Microsoft.StorageCache") && eq(t, "caches") =>
        {
            Route::CachesInSub { sub: sub.to_string() }
        }
        [su, sub, p, ns, t]
            if eq(su, "subscriptions")
                && eq(p, "providers")
                && eq(ns, "Microsoft.StorageCache")
                && eq(t, "amlFilesystems") =>
        {
            Route::AmlFilesystemsInSub { sub: sub.to_string() }
        }
        [su, sub, p, ns, l, loc, a, op]
            if eq(su, "subscriptions")
                && eq(p, "providers")
                && eq(ns, "Microsoft.StorageCache")
                && eq(l, "locations")
                && eq(a, "ascOperations") =>
        {
            Route::AscOperation { sub: sub.to_string(), location: loc.to_string(), op: op.to_string() }
        }
        _ => return Err(not_found_path(segs)),
    };
    Ok(r)
}

fn invalid_type(ns: &str, t: &str) -> Out {
    Out::arm_error(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        format!(
            "The resource type '{t}' could not be found in the namespace '{ns}' (the simulator serves only the resource types the operator uses)."
        ),
    )
}

fn not_found_path(segs: &[String]) -> Out {
    Out::arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("No HTTP resource was found that matches the request URI '/{}'.", segs.join("/")),
    )
}

/// `Ok(())` or the ARM api-version error.
pub fn check_api_version(r: &Req, route: &Route) -> Result<String, Out> {
    let Some(v) = r.param("api-version") else {
        return Err(Out::arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let supported = route.api_versions();
    let well_formed = v.len() >= 10
        && v[..10].chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
    if !well_formed {
        return Err(Out::arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported versions are '{}'.", supported.join(",")),
        ));
    }
    if !supported.contains(&v) {
        return Err(Out::arm_error(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location 'global' and API version '{v}' for type '{}'. The supported api-versions are '{}'.",
                route.resource_type(),
                supported.join(", ")
            ),
        ));
    }
    Ok(v.to_string())
}

/// What resource handlers get besides the world and the request.
pub struct Ctx<'a> {
    pub api_version: &'a str,
    pub now: jiff::Timestamp,
    pub principal: &'a str,
    /// For the URLs handlers answer with (operation monitors, vault URIs).
    pub endpoints: &'a Endpoints,
    /// Product-retirement mode (`SimConfig::retired`).
    pub retired: bool,
    /// Every n-th successful cache create answers 202 without a body (`SimConfig::create_accepted_every`; 0 = never).
    pub create_accepted_every: u32,
    /// Items per page of a role-assignment list (`SimConfig::role_assignment_page_size`).
    pub role_assignment_page_size: usize,
    /// Items per page of a cache list (`SimConfig::cache_page_size`).
    pub cache_page_size: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn routes_are_case_insensitive() {
        assert_eq!(
            parse_route(&segs("/SUBSCRIPTIONS/s/resourcegroups/rg/providers/microsoft.storagecache/CACHES/c")).unwrap(),
            Route::Cache { sub: "s".into(), rg: "rg".into(), name: "c".into() }
        );
        assert_eq!(
            parse_route(&segs("/subscriptions/s/providers/Microsoft.StorageCache/locations/westus/ascOperations/o"))
                .unwrap(),
            Route::AscOperation { sub: "s".into(), location: "westus".into(), op: "o".into() }
        );
        assert_eq!(
            parse_route(&segs("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v/providers/Microsoft.Authorization/roleAssignments/g")).unwrap(),
            Route::RoleAssignment { scope: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v".into(), name: "g".into() }
        );
        assert_eq!(
            parse_route(&segs("/providers/Microsoft.Authorization/roleAssignments")).unwrap(),
            Route::RoleAssignments { scope: "/".into() }
        );
        assert_eq!(
            parse_route(&segs(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.StorageCache/AMLFILESYSTEMS/fs1"
            ))
            .unwrap(),
            Route::AmlFilesystem { sub: "s".into(), rg: "rg".into(), name: "fs1".into() }
        );
        assert_eq!(
            parse_route(&segs("/subscriptions/s/providers/Microsoft.StorageCache/amlFilesystems")).unwrap(),
            Route::AmlFilesystemsInSub { sub: "s".into() }
        );
        assert_eq!(
            Route::AmlFilesystemsInRg { sub: "s".into(), rg: "rg".into() }.api_versions().first(),
            Some(&"2023-03-01-preview"),
            "amlFilesystems have their own api-versions"
        );
        assert!(parse_route(&segs("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Foo/bars/x")).is_err());
        assert!(parse_route(&segs("/nonsense")).is_err());
    }
}

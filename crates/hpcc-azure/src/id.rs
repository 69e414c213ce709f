//! Azure Resource Manager resource ids.
//!
//! ARM treats ids case-insensitively (keywords, namespaces, types and names alike). [`ResourceId`] parses the forms
//! the operator handles:
//!
//! * `/subscriptions/{sub}`
//! * `/subscriptions/{sub}/resourceGroups/{rg}`
//! * `/subscriptions/{sub}[/resourceGroups/{rg}]/providers/{Namespace}/{type}/{name}[/{childType}/{childName}]...`
//!
//! [`Display`](std::fmt::Display) gives the canonical form (`/subscriptions/…/resourceGroups/…/providers/…`, keywords
//! in canonical case, subscription GUID lower-cased, names as written). Equality and hashing ignore case.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Why a string is not an ARM resource id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Azure resource id {id:?}: {reason}")]
pub struct ParseResourceIdError {
    /// The rejected input.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed ARM resource id.
#[derive(Debug, Clone)]
pub struct ResourceId {
    subscription: String,
    resource_group: Option<String>,
    namespace: Option<String>,
    /// `(type, name)` pairs: the first is the top-level resource, the rest are children.
    segments: Vec<(String, String)>,
}

impl ResourceId {
    /// Parse an ARM id (same as [`str::parse`]).
    pub fn parse(id: &str) -> Result<Self, ParseResourceIdError> {
        id.parse()
    }

    /// `/subscriptions/{subscription}`.
    pub fn subscription_scope(subscription: &str) -> Self {
        Self {
            subscription: subscription.to_ascii_lowercase(),
            resource_group: None,
            namespace: None,
            segments: Vec::new(),
        }
    }

    /// `/subscriptions/{subscription}/resourceGroups/{resource_group}`.
    pub fn resource_group_scope(subscription: &str, resource_group: &str) -> Self {
        Self { resource_group: Some(resource_group.to_string()), ..Self::subscription_scope(subscription) }
    }

    /// A top-level resource in a resource group.
    pub fn new(subscription: &str, resource_group: &str, namespace: &str, resource_type: &str, name: &str) -> Self {
        Self {
            namespace: Some(namespace.to_string()),
            segments: vec![(resource_type.to_string(), name.to_string())],
            ..Self::resource_group_scope(subscription, resource_group)
        }
    }

    /// `…/providers/Microsoft.StorageCache/caches/{name}`.
    pub fn cache(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self::new(subscription, resource_group, "Microsoft.StorageCache", "caches", name)
    }

    /// `…/providers/Microsoft.StorageCache/amlFilesystems/{name}` (Azure Managed Lustre).
    pub fn aml_filesystem(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self::new(subscription, resource_group, "Microsoft.StorageCache", "amlFilesystems", name)
    }

    /// `…/providers/Microsoft.Storage/storageAccounts/{name}` (e.g. the scope of the role assignments an AML file
    /// system's blob integration needs).
    pub fn storage_account(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self::new(subscription, resource_group, "Microsoft.Storage", "storageAccounts", name)
    }

    /// `…/providers/Microsoft.KeyVault/vaults/{name}`.
    pub fn vault(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self::new(subscription, resource_group, "Microsoft.KeyVault", "vaults", name)
    }

    /// `…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}`.
    pub fn user_assigned_identity(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self::new(subscription, resource_group, "Microsoft.ManagedIdentity", "userAssignedIdentities", name)
    }

    /// A child of this resource (`{self}/{child_type}/{child_name}`). Panics on a subscription or resource-group
    /// scope, which have no provider namespace.
    pub fn child(&self, child_type: &str, child_name: &str) -> Self {
        assert!(self.namespace.is_some(), "child() needs a provider resource id");
        let mut c = self.clone();
        c.segments.push((child_type.to_string(), child_name.to_string()));
        c
    }

    /// Subscription id (lower case).
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// Resource group name, if the id is inside one.
    pub fn resource_group(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }

    /// Provider namespace, e.g. `Microsoft.StorageCache`.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Top-level resource type, e.g. `caches` or `virtualNetworks`.
    pub fn resource_type(&self) -> Option<&str> {
        self.segments.first().map(|(t, _)| t.as_str())
    }

    /// Top-level resource name, e.g. the cache name or the virtual network name of a subnet id.
    pub fn name(&self) -> Option<&str> {
        self.segments.first().map(|(_, n)| n.as_str())
    }

    /// Child `(type, name)` pairs below the top-level resource (e.g. `[("subnets", "default")]`).
    pub fn children(&self) -> &[(String, String)] {
        self.segments.get(1..).unwrap_or(&[])
    }

    /// The first child `(type, name)` if any.
    pub fn child_segment(&self) -> Option<(&str, &str)> {
        self.children().first().map(|(t, n)| (t.as_str(), n.as_str()))
    }

    /// The name of the deepest resource (subnet name for a subnet id; resource group name for a resource-group
    /// scope; subscription for a subscription scope).
    pub fn leaf_name(&self) -> &str {
        match self.segments.last() {
            Some((_, n)) => n,
            None => self.resource_group.as_deref().unwrap_or(&self.subscription),
        }
    }

    /// Full type as ARM reports it, e.g. `Microsoft.Network/virtualNetworks/subnets`.
    pub fn full_type(&self) -> Option<String> {
        let ns = self.namespace.as_ref()?;
        let mut s = ns.clone();
        for (t, _) in &self.segments {
            s.push('/');
            s.push_str(t);
        }
        Some(s)
    }

    /// Case-insensitive check of namespace and the full type path below it (`"caches"`, `"virtualNetworks/subnets"`).
    pub fn is_type(&self, namespace: &str, type_path: &str) -> bool {
        let Some(ns) = &self.namespace else {
            return false;
        };
        let types: Vec<&str> = self.segments.iter().map(|(t, _)| t.as_str()).collect();
        ns.eq_ignore_ascii_case(namespace) && types.join("/").eq_ignore_ascii_case(type_path)
    }

    /// The id of the enclosing resource group, if any.
    pub fn resource_group_id(&self) -> Option<ResourceId> {
        self.resource_group.as_deref().map(|rg| Self::resource_group_scope(&self.subscription, rg))
    }

    /// The parent resource (drops the last child); `None` for a top-level resource or a scope.
    pub fn parent(&self) -> Option<ResourceId> {
        if self.segments.len() < 2 {
            return None;
        }
        let mut p = self.clone();
        p.segments.pop();
        Some(p)
    }

    /// The top-level resource this id is, or is inside of (drops every child: a blob container id gives its
    /// storage account); `None` for a subscription or resource-group scope.
    pub fn top_level(&self) -> Option<ResourceId> {
        self.namespace.as_ref()?;
        let mut t = self.clone();
        t.segments.truncate(1);
        Some(t)
    }

    fn canonical_lower(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/subscriptions/{}", self.subscription)?;
        if let Some(rg) = &self.resource_group {
            write!(f, "/resourceGroups/{rg}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/providers/{ns}")?;
            for (t, n) in &self.segments {
                write!(f, "/{t}/{n}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for ResourceId {
    type Err = ParseResourceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseResourceIdError { id: s.to_string(), reason };
        let rest = s.strip_prefix('/').ok_or_else(|| err("must start with '/'"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("empty path segment"));
        }
        if parts.iter().any(|p| p.chars().any(|c| c.is_whitespace() || c == '?' || c == '#')) {
            return Err(err("whitespace, '?' or '#' in a segment"));
        }
        let mut it = parts.into_iter();
        match it.next() {
            Some(k) if k.eq_ignore_ascii_case("subscriptions") => {}
            _ => return Err(err("must start with /subscriptions/")),
        }
        let subscription = it.next().ok_or_else(|| err("missing subscription id"))?;
        let mut id = ResourceId::subscription_scope(subscription);
        let mut next = it.next();
        if let Some(k) = next
            && k.eq_ignore_ascii_case("resourceGroups")
        {
            let rg = it.next().ok_or_else(|| err("missing resource group name"))?;
            id.resource_group = Some(rg.to_string());
            next = it.next();
        }
        match next {
            None => return Ok(id),
            Some(k) if k.eq_ignore_ascii_case("providers") => {}
            Some(_) => return Err(err("expected 'resourceGroups' or 'providers'")),
        }
        let ns = it.next().ok_or_else(|| err("missing provider namespace"))?;
        if !ns.contains('.') {
            return Err(err("provider namespace must look like 'Microsoft.Something'"));
        }
        id.namespace = Some(ns.to_string());
        let rest: Vec<&str> = it.collect();
        if rest.is_empty() {
            return Err(err("missing resource type and name"));
        }
        if !rest.len().is_multiple_of(2) {
            return Err(err("resource type without a name"));
        }
        for pair in rest.chunks(2) {
            if pair[0].eq_ignore_ascii_case("providers") {
                return Err(err("extension resources are not supported"));
            }
            id.segments.push((pair[0].to_string(), pair[1].to_string()));
        }
        Ok(id)
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.canonical_lower() == other.canonical_lower()
    }
}

impl Eq for ResourceId {}

impl Hash for ResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical_lower().hash(state);
    }
}

impl serde::Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "11111111-2222-3333-4444-555555555555";

    #[test]
    fn parses_cache_id() {
        let id: ResourceId =
            format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.StorageCache/caches/genomics")
                .parse()
                .unwrap();
        assert_eq!(id.subscription(), SUB);
        assert_eq!(id.resource_group(), Some("hpc-rg"));
        assert_eq!(id.namespace(), Some("Microsoft.StorageCache"));
        assert_eq!(id.resource_type(), Some("caches"));
        assert_eq!(id.name(), Some("genomics"));
        assert!(id.children().is_empty());
        assert!(id.is_type("microsoft.storagecache", "Caches"));
        assert_eq!(id, ResourceId::cache(SUB, "hpc-rg", "genomics"));
    }

    #[test]
    fn case_insensitive_and_canonical_display() {
        let a: ResourceId = format!(
            "/SUBSCRIPTIONS/{}/resourcegroups/HPC-RG/PROVIDERS/microsoft.keyvault/VAULTS/KV-Cmk/",
            SUB.to_uppercase()
        )
        .parse()
        .unwrap();
        let b = ResourceId::vault(SUB, "hpc-rg", "kv-cmk");
        assert_eq!(a, b);
        use std::collections::hash_map::DefaultHasher;
        let h = |x: &ResourceId| {
            let mut s = DefaultHasher::new();
            x.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&a), h(&b));
        assert_eq!(
            a.to_string(),
            format!("/subscriptions/{SUB}/resourceGroups/HPC-RG/providers/microsoft.keyvault/VAULTS/KV-Cmk")
        );
        // Display then parse round-trips.
        assert_eq!(a.to_string().parse::<ResourceId>().unwrap(), a);
    }

    #[test]
    fn subnet_child() {
        let id: ResourceId = format!(
            "/subscriptions/{SUB}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet1/subnets/cache"
        )
        .parse()
        .unwrap();
        assert_eq!(id.name(), Some("vnet1"));
        assert_eq!(id.child_segment(), Some(("subnets", "cache")));
        assert_eq!(id.leaf_name(), "cache");
        assert_eq!(id.full_type().unwrap(), "Microsoft.Network/virtualNetworks/subnets");
        assert!(id.is_type("Microsoft.Network", "virtualNetworks/subnets"));
        assert!(!id.is_type("Microsoft.Network", "virtualNetworks"));
        let parent = id.parent().unwrap();
        assert_eq!(
            parent.to_string(),
            format!("/subscriptions/{SUB}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet1")
        );
        assert_eq!(parent.child("subnets", "cache"), id);
    }

    #[test]
    fn aml_filesystem_and_storage_account_ids() {
        let fs = ResourceId::aml_filesystem(SUB, "hpc-rg", "fs1");
        assert_eq!(
            fs.to_string(),
            format!("/subscriptions/{SUB}/resourceGroups/hpc-rg/providers/Microsoft.StorageCache/amlFilesystems/fs1")
        );
        assert!(fs.is_type("Microsoft.StorageCache", "amlFilesystems"));
        assert_eq!(fs.full_type().unwrap(), "Microsoft.StorageCache/amlFilesystems");
        let parsed: ResourceId =
            format!("/subscriptions/{SUB}/resourcegroups/HPC-RG/providers/microsoft.storagecache/AMLFILESYSTEMS/FS1")
                .parse()
                .unwrap();
        assert_eq!(parsed, fs);
        assert_ne!(fs, ResourceId::cache(SUB, "hpc-rg", "fs1"));

        // An HSM container id (the AML file system's `hsm.settings.container`) lies inside its storage account.
        let container: ResourceId = format!(
            "/subscriptions/{SUB}/resourceGroups/scgroup/providers/Microsoft.Storage/storageAccounts/sa1/blobServices/default/containers/data"
        )
        .parse()
        .unwrap();
        assert!(container.is_type("Microsoft.Storage", "storageAccounts/blobServices/containers"));
        let account = container.top_level().unwrap();
        assert_eq!(account, ResourceId::storage_account(SUB, "scgroup", "sa1"));
        assert_eq!(
            account.to_string(),
            format!("/subscriptions/{SUB}/resourceGroups/scgroup/providers/Microsoft.Storage/storageAccounts/sa1")
        );
        assert_eq!(account.top_level().unwrap(), account);
        assert!(ResourceId::resource_group_scope(SUB, "rg").top_level().is_none());
    }

    #[test]
    fn scopes() {
        let s: ResourceId = format!("/subscriptions/{SUB}").parse().unwrap();
        assert_eq!(s.resource_group(), None);
        assert_eq!(s.name(), None);
        let rg: ResourceId = format!("/subscriptions/{SUB}/resourcegroups/rg1").parse().unwrap();
        assert_eq!(rg.to_string(), format!("/subscriptions/{SUB}/resourceGroups/rg1"));
        assert_eq!(ResourceId::cache(SUB, "rg1", "c").resource_group_id().unwrap(), rg);
        let subscription_level: ResourceId =
            format!("/subscriptions/{SUB}/providers/Microsoft.StorageCache/caches/x").parse().unwrap();
        assert_eq!(subscription_level.resource_group(), None);
        assert_eq!(subscription_level.name(), Some("x"));
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "",
            "/",
            "subscriptions/x/resourceGroups/rg",
            "/subscriptions",
            "/subscriptions//resourceGroups/rg",
            "/subscription/x",
            "/subscriptions/x/resourceGroups",
            "/subscriptions/x/resourceGroups/rg/providers",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults",
            "/subscriptions/x/resourceGroups/rg/providers/NoDot/vaults/v",
            "/subscriptions/x/resourceGroups/rg/foo/bar",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v 1",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v?x=1",
            "/subscriptions/x/resourceGroups/rg/providers/A.B/c/d/providers/E.F/g/h",
        ] {
            assert!(bad.parse::<ResourceId>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn serde_as_string() {
        let id = ResourceId::cache(SUB, "rg", "c");
        let j = serde_json::to_string(&id).unwrap();
        assert_eq!(j, format!("\"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.StorageCache/caches/c\""));
        let back: ResourceId = serde_json::from_str(&j).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<ResourceId>("\"/nope\"").is_err());
    }
}

//! The seed: the initial (or merged-in) world, read from YAML or JSON (`--seed FILE`, `POST /seed`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The initial world. Every list is optional; see `docs/simulator.md` for an example.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    /// The Entra tenant of the simulated world (default `72f988bf-0000-4000-8000-000000000001`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub subscriptions: Vec<SeedSubscription>,
    /// Service principals (applications) that can get tokens with a secret or a client assertion.
    #[serde(default)]
    pub principals: Vec<SeedPrincipal>,
    /// User-assigned managed identities.
    #[serde(default)]
    pub identities: Vec<SeedIdentity>,
    #[serde(default)]
    pub vaults: Vec<SeedVault>,
    /// Access that already exists: one access policy or role assignment per entry, by the vault's model.
    #[serde(default)]
    pub grants: Vec<SeedGrant>,
    /// Extra role definition GUIDs role assignments may use (built-in Key Vault, Owner, Contributor, Reader and
    /// User Access Administrator roles are always known).
    #[serde(default)]
    pub role_definitions: Vec<String>,
    /// Management groups and the subscriptions in them: a role assignment at
    /// `/providers/Microsoft.Management/managementGroups/{name}` applies to everything beneath.
    #[serde(default)]
    pub management_groups: Vec<SeedManagementGroup>,
    /// Role assignments that already exist, at any scope (tenant root `/`, a management group, a subscription, a
    /// resource group or a resource). Effective at once, like `grants`.
    #[serde(default)]
    pub role_assignments: Vec<SeedRoleAssignment>,
    /// Storage accounts an AML file system's blob integration (`hsm.settings`) may name. Their containers are not
    /// modelled: any container name in a seeded account is accepted.
    #[serde(default)]
    pub storage_accounts: Vec<SeedStorageAccount>,
}

/// A storage account (Azure: `Microsoft.Storage/storageAccounts`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedStorageAccount {
    pub subscription_id: String,
    pub resource_group: String,
    /// 3-24 lower-case letters and digits.
    pub name: String,
    #[serde(default = "default_location")]
    pub location: String,
}

/// A management group (Azure: `Microsoft.Management/managementGroups`). Names are unique in the tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedManagementGroup {
    pub name: String,
    /// Parent management group name; absent = directly under the tenant root group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Subscription ids placed in this group (they are created if the seed names them nowhere else).
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

/// A role assignment in the seed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRoleAssignment {
    /// `/`, `/providers/Microsoft.Management/managementGroups/{mg}`, `/subscriptions/{s}[/resourceGroups/…]`.
    pub scope: String,
    /// A role GUID or a role definition id (`…/providers/Microsoft.Authorization/roleDefinitions/{guid}`).
    pub role_definition_id: String,
    pub principal_id: String,
    /// Default `ServicePrincipal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    /// The assignment's GUID name; derived from scope, role and principal when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSubscription {
    pub id: String,
    #[serde(default)]
    pub resource_groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedFederatedCredential {
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedPrincipal {
    /// Application (client) id used in token requests.
    pub client_id: String,
    /// Service principal object id (`oid` in tokens, `principalId` in role assignments).
    pub object_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// ARM scopes on which this principal may call the management plane (prefix match, e.g.
    /// `/subscriptions/0000…`). Default: `["/"]` (everything). Use `[]` for a principal that gets 403s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm_scopes: Option<Vec<String>>,
    /// Federated identity credentials accepted as `client_assertion` (workload identity).
    #[serde(default)]
    pub federated_credentials: Vec<SeedFederatedCredential>,
    /// Marks the principal written to the env file (`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`). Default: the first
    /// principal with a secret.
    #[serde(default)]
    pub operator: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedIdentity {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    #[serde(default = "default_location")]
    pub location: String,
    /// Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_location() -> String {
    "westus".to_string()
}
fn default_true() -> bool {
    true
}
fn default_retention() -> i64 {
    90
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedPermissions {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub certificates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedAccessPolicy {
    pub object_id: String,
    /// Default: the world's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    pub permissions: SeedPermissions,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedVault {
    /// 3–24 characters of `[a-zA-Z0-9-]`; vault names are global, so unique in the world.
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
    #[serde(default = "default_location")]
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// `standard` (default) or `premium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default)]
    pub enable_rbac_authorization: bool,
    #[serde(default = "default_true")]
    pub enable_soft_delete: bool,
    #[serde(default = "default_retention")]
    pub soft_delete_retention_in_days: i64,
    /// `None` = property absent (as Azure shows a vault without purge protection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_purge_protection: Option<bool>,
    #[serde(default)]
    pub access_policies: Vec<SeedAccessPolicy>,
    #[serde(default)]
    pub keys: Vec<SeedKey>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedKey {
    pub name: String,
    /// Oldest first; the last one is the current version. Default: one RSA-2048 enabled version.
    #[serde(default)]
    pub versions: Vec<SeedKeyVersion>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedKeyVersion {
    /// 32 lower-case hex digits; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `RSA` (default), `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    #[serde(default = "default_kty")]
    pub kty: String,
    /// RSA modulus size in bits (default 2048); ignored for EC (`crv` P-256).
    #[serde(default = "default_size")]
    pub size: u32,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<Timestamp>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The version's permitted operations (`key_ops` of its JsonWebKey). Key Vault refuses any other operation
    /// with 403 `KeyOperationForbidden`. Default: `encrypt, decrypt, sign, verify, wrapKey, unwrapKey` for RSA
    /// keys (the set and order of the GetKey example), `sign, verify` for EC keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
}

impl Default for SeedKeyVersion {
    fn default() -> Self {
        Self {
            version: None,
            kty: default_kty(),
            size: default_size(),
            enabled: true,
            nbf: None,
            exp: None,
            tags: BTreeMap::new(),
            key_ops: None,
        }
    }
}

fn default_kty() -> String {
    "RSA".to_string()
}
fn default_size() -> u32 {
    2048
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGrant {
    /// Vault name (vault names are unique) or full ARM id.
    pub vault: String,
    /// Object id of the principal (service principal or managed identity).
    pub principal_id: String,
}

impl Seed {
    /// Parse YAML (JSON is valid YAML, so this reads both).
    pub fn from_yaml(s: &str) -> anyhow::Result<Seed> {
        let seed: Seed = serde_yaml_ng::from_str(s)?;
        Ok(seed)
    }

    pub fn from_json(s: &str) -> anyhow::Result<Seed> {
        Ok(serde_json::from_str(s)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_with_defaults() {
        let s = Seed::from_yaml(
            "subscriptions: [{id: s1, resourceGroups: [rg]}]\nvaults:\n  - name: kv1\n    subscriptionId: s1\n    resourceGroup: rg\n    enablePurgeProtection: true\n    keys: [{name: k, versions: [{}]}]\n",
        )
        .unwrap();
        let v = &s.vaults[0];
        assert!(v.enable_soft_delete);
        assert_eq!(v.soft_delete_retention_in_days, 90);
        assert_eq!(v.location, "westus");
        assert_eq!(v.keys[0].versions[0].kty, "RSA");
        assert_eq!(v.keys[0].versions[0].size, 2048);
    }

    #[test]
    fn parses_key_ops_management_groups_and_role_assignments() {
        let s = Seed::from_yaml(
            "vaults:\n  - {name: kv1, subscriptionId: s1, resourceGroup: rg, keys: [{name: k, versions: [{keyOps: [sign, verify]}]}]}\nmanagementGroups:\n  - {name: mg1, subscriptions: [s1]}\n  - {name: mg2, parent: mg1}\nroleAssignments:\n  - {scope: /providers/Microsoft.Management/managementGroups/mg2, roleDefinitionId: e147488a-f6f5-4113-8e2d-b22465e65bf6, principalId: p}\n",
        )
        .unwrap();
        assert_eq!(
            s.vaults[0].keys[0].versions[0].key_ops.as_deref(),
            Some(&["sign".to_string(), "verify".to_string()][..])
        );
        assert_eq!(s.management_groups[1].parent.as_deref(), Some("mg1"));
        assert_eq!(s.role_assignments[0].principal_id, "p");
    }

    #[test]
    fn parses_storage_accounts() {
        let s =
            Seed::from_yaml("storageAccounts:\n  - {subscriptionId: s1, resourceGroup: rg, name: amlblob}\n").unwrap();
        assert_eq!(s.storage_accounts[0].name, "amlblob");
        assert_eq!(s.storage_accounts[0].location, "westus");
    }

    #[test]
    fn rejects_unknown_fields() {
        assert!(Seed::from_yaml("vaultz: []").is_err());
    }
}

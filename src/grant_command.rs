//! `hpc-cache-operator grant-command NAME` (also the kubectl plugin `kubectl hpcc grant-command NAME`): the exact
//! commands a person with rights on the Key Vault runs to authorize a cache's identity (`keyAccess: Manual`),
//! printed from the live `HpcCache`.
//!
//! The object says who (`status.principalId`), on what (`spec.encryption`) and until when
//! (`status.authorizationDeadline`). Whether the vault uses access policies or Azure RBAC is known only from the
//! grants the operator recorded (Automatic mode) or by reading the vault, which is done only when the operator's
//! Azure settings are in the environment; otherwise both forms are printed, each labelled.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use hpcc_api::v1alpha1::{GrantKind, HpcCache, IdentityType, KeyAccess};
use hpcc_azure::{
    AzureConfig, CMK_KEY_PERMISSIONS, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER, ROLE_ASSIGNMENTS_API_VERSION,
    ResourceId, VAULTS_API_VERSION, role_assignment_name,
};
use jiff::Timestamp;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// The file name under which kubectl finds the binary as its `hpcc` plugin.
pub const PLUGIN_FILE_NAME: &str = "kubectl-hpcc";
/// How the plugin is invoked, for help and usage messages.
pub const PLUGIN_COMMAND: &str = "kubectl hpcc";
/// The role a cache identity needs on an RBAC vault.
pub const ROLE_NAME: &str = "Key Vault Crypto Service Encryption User";
/// How long reading the vault (optional) may take before both forms are printed instead.
const VAULT_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// `grant-command` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Name of the HpcCache.
    pub name: String,
    /// Namespace of the HpcCache (default: the namespace of the kubeconfig context).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Do not read the vault, even when the operator's Azure settings (AZURE_CLIENT_ID, HPCC_CREDENTIAL) are in
    /// the environment.
    #[arg(long)]
    pub offline: bool,
}

/// The command line as clap should parse it: as given, or (invoked as `kubectl-hpcc`) under the plugin's name, so
/// that `kubectl hpcc grant-command NAME -n NS` reads like `hpc-cache-operator grant-command NAME -n NS`.
pub fn parse<T: clap::Parser>() -> T {
    let args: Vec<OsString> = std::env::args_os().collect();
    if !invoked_as_plugin(args.first()) {
        return T::parse_from(args);
    }
    let mut command = T::command().name(PLUGIN_COMMAND).bin_name(PLUGIN_COMMAND);
    let matches = command.try_get_matches_from_mut(args).unwrap_or_else(|e| e.exit());
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// Whether argv[0] names the kubectl plugin (`kubectl-hpcc`, also through a symlink).
pub fn invoked_as_plugin(argv0: Option<&OsString>) -> bool {
    argv0.map(std::path::Path::new).and_then(|p| p.file_stem()).is_some_and(|stem| stem == PLUGIN_FILE_NAME)
}

/// Why no command can be printed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("hpccache {namespace}/{name} not found (`kubectl get hpccaches -n {namespace}` lists the ones there)")]
    NotFound { namespace: String, name: String },
    #[error("hpccache {namespace}/{name} uses Microsoft-managed keys (no spec.encryption): there is nothing to grant")]
    MicrosoftManagedKeys { namespace: String, name: String },
    #[error(
        "hpccache {namespace}/{name} has no status.principalId yet (phase {phase}): Azure reports the cache's identity once the cache is being created; run this again in a minute"
    )]
    NoPrincipalYet { namespace: String, name: String, phase: String },
    #[error("hpccache {namespace}/{name}: spec.encryption.keyVaultId {id:?} is not a Key Vault id: {reason}")]
    BadVaultId { namespace: String, name: String, id: String, reason: String },
}

/// Whether the vault takes access policies or role assignments, and how that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultModel {
    AccessPolicy(Known),
    Rbac(Known),
    /// Not known: both forms are printed. The text says why.
    Unknown(String),
}

/// How the vault model is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// From status.grants (the operator granted on this vault before).
    Grants,
    /// From reading the vault just now.
    VaultRead,
}

/// What reading the vault told (all optional: the read is never required).
#[derive(Debug, Clone, Default)]
pub struct VaultFacts {
    /// `properties.enableRbacAuthorization`.
    pub rbac: Option<bool>,
    /// `properties.tenantId`.
    pub tenant_id: Option<String>,
    /// The vault's access policies already give the principal get, wrapKey and unwrapKey.
    pub policy_already_grants: bool,
    /// Azure's clock (the `Date` of the answer).
    pub azure_now: Option<Timestamp>,
    /// Why the vault was not read, or what went wrong.
    pub not_read: Option<String>,
}

/// Everything the output is made of.
#[derive(Debug, Clone)]
pub struct Plan {
    pub namespace: String,
    pub name: String,
    pub key_access: KeyAccess,
    pub phase: String,
    pub identity: IdentityType,
    pub principal_id: String,
    pub tenant_id: Option<String>,
    pub vault: ResourceId,
    pub vault_name: String,
    pub key_name: String,
    pub key_version: Option<String>,
    pub deadline: Option<Timestamp>,
    pub authorized_at: Option<Timestamp>,
    /// `KeyAuthorized=True`: access is already in place.
    pub key_authorized: bool,
    pub model: VaultModel,
    pub policy_already_grants: bool,
    /// ARM base URL, e.g. `https://management.azure.com/`.
    pub arm_endpoint: url::Url,
    /// The clock the time left is measured on, and its name.
    pub now: Timestamp,
    pub clock: &'static str,
}

impl Plan {
    /// The plan for one object; `vault` is what reading the vault told (default: not read).
    pub fn new(
        obj: &HpcCache,
        namespace: &str,
        vault: &VaultFacts,
        arm_endpoint: url::Url,
        local_now: Timestamp,
    ) -> Result<Plan, Refusal> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let status = obj.status.clone().unwrap_or_default();
        let phase = status.phase.map_or("none yet".to_string(), |p| p.to_string());
        let Some(enc) = obj.spec.encryption.as_ref() else {
            return Err(Refusal::MicrosoftManagedKeys { namespace: namespace.into(), name });
        };
        let Some(principal_id) = status.principal_id.clone().filter(|p| !p.trim().is_empty()) else {
            return Err(Refusal::NoPrincipalYet { namespace: namespace.into(), name, phase });
        };
        let bad_id = |reason: String| Refusal::BadVaultId {
            namespace: namespace.into(),
            name: name.clone(),
            id: enc.key_vault_id.clone(),
            reason,
        };
        let vault_id = ResourceId::parse(&enc.key_vault_id).map_err(|e| bad_id(e.to_string()))?;
        let vault_name = vault_id.name().map(str::to_string).ok_or_else(|| bad_id("no vault name".into()))?;
        if vault_id.resource_group().is_none() {
            return Err(bad_id("no resource group".into()));
        }
        // A key-access grant the operator recorded on this vault says how the vault grants.
        let recorded = status
            .grants
            .iter()
            .find(|g| g.kind.is_key_access() && g.scope.eq_ignore_ascii_case(&enc.key_vault_id))
            .map(|g| g.kind);
        let model = match (recorded, vault.rbac) {
            (Some(GrantKind::AccessPolicy), _) => VaultModel::AccessPolicy(Known::Grants),
            (Some(_), _) => VaultModel::Rbac(Known::Grants),
            (None, Some(false)) => VaultModel::AccessPolicy(Known::VaultRead),
            (None, Some(true)) => VaultModel::Rbac(Known::VaultRead),
            (None, None) => {
                VaultModel::Unknown(vault.not_read.clone().unwrap_or_else(|| "the vault was not read".into()))
            }
        };
        let key_authorized = status.conditions.iter().any(|c| c.type_ == "KeyAuthorized" && c.status == "True");
        let (now, clock) = match vault.azure_now {
            Some(t) => (t, "Azure's clock"),
            None => (local_now, "this machine's clock"),
        };
        Ok(Plan {
            namespace: namespace.into(),
            name,
            key_access: obj.spec.key_access,
            phase,
            identity: obj.spec.identity.type_,
            principal_id,
            tenant_id: status.tenant_id.clone().or_else(|| vault.tenant_id.clone()),
            vault: vault_id,
            vault_name,
            key_name: enc.key_name.clone(),
            key_version: enc.key_version.clone(),
            deadline: status.authorization_deadline.as_ref().map(|t| t.0),
            authorized_at: status.authorized_at.as_ref().map(|t| t.0),
            key_authorized,
            model,
            policy_already_grants: vault.policy_already_grants,
            arm_endpoint,
            now,
            clock,
        })
    }

    /// Says where ARM is when it is not public Azure's (a sovereign cloud, or the simulator).
    fn arm_note(&self) -> String {
        match self.arm_endpoint.host_str() {
            Some("management.azure.com") => String::new(),
            _ => format!(" (ARM at {}, from the environment)", self.arm_endpoint),
        }
    }

    fn arm_url(&self, path: &str, api_version: &str) -> String {
        format!("{}{}?api-version={api_version}", self.arm_endpoint.as_str().trim_end_matches('/'), path)
    }

    /// `az keyvault set-policy …`.
    pub fn access_policy_cli(&self) -> String {
        [
            "az keyvault set-policy --name",
            &sh(&self.vault_name),
            "--resource-group",
            &sh(self.vault.resource_group().unwrap_or_default()),
            "--subscription",
            &sh(self.vault.subscription()),
            "--object-id",
            &sh(&self.principal_id),
            "--key-permissions",
            &CMK_KEY_PERMISSIONS.join(" "),
        ]
        .join(" ")
    }

    /// `PUT …/accessPolicies/add` and its body.
    pub fn access_policy_rest(&self) -> (String, serde_json::Value) {
        let tenant = self.tenant_id.clone().unwrap_or_else(|| {
            format!(
                "<tenant of the vault: az keyvault show --name {} --query properties.tenantId -o tsv>",
                self.vault_name
            )
        });
        let url = self.arm_url(&format!("{}/accessPolicies/add", self.vault), VAULTS_API_VERSION);
        let body = json!({"properties": {"accessPolicies": [{
            "tenantId": tenant,
            "objectId": self.principal_id,
            "permissions": {"keys": CMK_KEY_PERMISSIONS},
        }]}});
        (url, body)
    }

    /// `az role assignment create …`.
    pub fn rbac_cli(&self) -> String {
        [
            "az role assignment create --assignee-object-id",
            &sh(&self.principal_id),
            "--assignee-principal-type ServicePrincipal --role",
            &sh(ROLE_NAME),
            "--scope",
            &sh(&self.vault.to_string()),
        ]
        .join(" ")
    }

    /// `PUT …/roleAssignments/{name}` and its body. The name is the one the operator would use (UUIDv5 of scope,
    /// principal and role), so running it twice, or the operator after it, never makes a second assignment.
    pub fn rbac_rest(&self) -> (String, serde_json::Value) {
        let assignment =
            role_assignment_name(&self.vault, &self.principal_id, KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER);
        let url = self.arm_url(
            &format!("{}/providers/Microsoft.Authorization/roleAssignments/{assignment}", self.vault),
            ROLE_ASSIGNMENTS_API_VERSION,
        );
        let body = json!({"properties": {
            "roleDefinitionId": format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.vault.subscription(),
                KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER
            ),
            "principalId": self.principal_id,
            "principalType": "ServicePrincipal",
        }});
        (url, body)
    }

    /// The whole output.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let ns_name = format!("{}/{}", self.namespace, self.name);
        let _ = writeln!(o, "HpcCache {ns_name}: keyAccess {:?}, phase {}", self.key_access, self.phase);
        let tenant = self.tenant_id.as_deref().map(|t| format!(", tenant {t}")).unwrap_or_default();
        let _ =
            writeln!(o, "  principal:        {} (the cache's {:?} identity{tenant})", self.principal_id, self.identity);
        let version = self.key_version.as_deref().map_or("current version".to_string(), |v| format!("version {v}"));
        let _ = writeln!(o, "  key:              {}, {version}", self.key_name);
        let _ = writeln!(o, "  vault:            {}", self.vault);
        match (self.deadline, self.authorized_at) {
            (Some(deadline), _) => {
                let left = deadline.duration_since(self.now);
                let when = if left.is_negative() {
                    format!("passed {} ago ({})", human(left.unsigned_abs()), self.clock)
                } else {
                    format!("{} left ({})", human(left.unsigned_abs()), self.clock)
                };
                let _ = writeln!(o, "  deadline:         {deadline}, {when}");
                if left.is_negative() {
                    let _ = writeln!(
                        o,
                        "                    Azure fails a cache whose identity cannot reach its key by then; a grant now does not save it."
                    );
                } else {
                    let _ = writeln!(
                        o,
                        "                    Azure fails the cache if its identity cannot reach the key by then."
                    );
                }
            }
            (None, Some(at)) => {
                let _ = writeln!(o, "  deadline:         none: the cache has been authorized since {at}");
            }
            (None, None) => {
                let _ = writeln!(o, "  deadline:         none recorded");
            }
        }
        let model = match &self.model {
            VaultModel::AccessPolicy(how) => format!("vault access policy ({})", how.text()),
            VaultModel::Rbac(how) => format!("Azure RBAC ({})", how.text()),
            VaultModel::Unknown(why) => format!(
                "unknown ({why}).\n                    Both forms follow: run the one that matches the vault (`az keyvault show --name {} --query properties.enableRbacAuthorization` prints true for RBAC).",
                self.vault_name
            ),
        };
        let _ = writeln!(o, "  permission model: {model}");
        if self.key_authorized || self.policy_already_grants {
            let _ = writeln!(o, "\nNote: the identity already has access to the key; there is nothing to run.");
        } else if self.key_access == KeyAccess::Automatic {
            let _ = writeln!(
                o,
                "\nNote: keyAccess is Automatic: the operator makes this grant itself. Run it by hand only if the operator cannot (e.g. Stalled with VaultAccessDenied)."
            );
        }
        let show_policy = !matches!(self.model, VaultModel::Rbac(_));
        let show_rbac = !matches!(self.model, VaultModel::AccessPolicy(_));
        if show_policy {
            let _ = writeln!(o, "\n# Access-policy vault (enableRbacAuthorization: false), with the Azure CLI:");
            let _ = writeln!(o, "{}", self.access_policy_cli());
            let (url, body) = self.access_policy_rest();
            let _ = writeln!(o, "\n# Access-policy vault, the same as one ARM REST call{}:", self.arm_note());
            let _ = writeln!(o, "PUT {url}");
            let _ = writeln!(o, "{}", body_text(&body));
        }
        if show_rbac {
            let _ = writeln!(o, "\n# RBAC vault (enableRbacAuthorization: true), with the Azure CLI:");
            let _ = writeln!(o, "{}", self.rbac_cli());
            let (url, body) = self.rbac_rest();
            let _ = writeln!(o, "\n# RBAC vault, the same as one ARM REST call{}:", self.arm_note());
            let _ = writeln!(o, "PUT {url}");
            let _ = writeln!(o, "{}", body_text(&body));
        }
        let _ = writeln!(
            o,
            "\nAzure takes a few minutes to apply a grant (Key Vault documents up to 10); the operator then marks the cache Ready:"
        );
        let _ = writeln!(
            o,
            "kubectl wait --for=condition=Ready hpccache/{} -n {} --timeout=30m",
            sh(&self.name),
            sh(&self.namespace)
        );
        o
    }
}

impl Known {
    fn text(&self) -> &'static str {
        match self {
            Known::Grants => "from the grants in the object's status",
            Known::VaultRead => "read from the vault just now",
        }
    }
}

/// The subcommand: prints the commands, or one line saying why not (no backtrace: it is meant for a person) and
/// exits with status 1.
pub async fn main(args: Args) {
    if let Err(e) = run(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Reads the live object and prints the commands.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (client, default_namespace) = kube_client(&args).await?;
    let namespace = args.namespace.clone().unwrap_or(default_namespace);
    let api: Api<HpcCache> = Api::namespaced(client, &namespace);
    let obj = match api.get_opt(&args.name).await {
        Ok(Some(obj)) => obj,
        Ok(None) => return Err(Refusal::NotFound { namespace, name: args.name.clone() }.into()),
        Err(e) => anyhow::bail!("cannot read hpccache {namespace}/{}: {e}", args.name),
    };
    let cfg = AzureConfig::from_env().ok();
    let arm_endpoint = cfg
        .as_ref()
        .map(|c| c.cloud.arm_endpoint.clone())
        .unwrap_or_else(|| url::Url::parse("https://management.azure.com/").expect("static URL"));
    // Fail on what the object says before touching Azure.
    Plan::new(&obj, &namespace, &VaultFacts::default(), arm_endpoint.clone(), Timestamp::now())?;
    let facts = match cfg {
        _ if args.offline => VaultFacts { not_read: Some("--offline".into()), ..Default::default() },
        Some(cfg) if azure_settings_present() => read_vault(cfg, &obj).await,
        _ => VaultFacts {
            not_read: Some(
                "the object does not say, and the operator's Azure settings are not in this environment".into(),
            ),
            ..Default::default()
        },
    };
    let plan = Plan::new(&obj, &namespace, &facts, arm_endpoint, Timestamp::now())?;
    print!("{}", plan.render());
    Ok(())
}

/// The operator's Azure settings are in the environment (a credential is configured, so reading the vault will
/// not fall back to probing for a managed identity on a person's laptop).
fn azure_settings_present() -> bool {
    ["AZURE_CLIENT_ID", "HPCC_CREDENTIAL"].iter().any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// Reads the vault with the operator's Azure settings; every failure is reported in `not_read`, never fatal.
async fn read_vault(cfg: AzureConfig, obj: &HpcCache) -> VaultFacts {
    let Some(enc) = obj.spec.encryption.as_ref() else { return VaultFacts::default() };
    let principal = obj.status.as_ref().and_then(|s| s.principal_id.clone()).unwrap_or_default();
    let not_read = |why: String| VaultFacts { not_read: Some(why), ..Default::default() };
    let Ok(id) = ResourceId::parse(&enc.key_vault_id) else { return not_read("not a vault id".into()) };
    let read = async {
        let azure = hpcc_azure::Azure::new(cfg, None).await?;
        Ok::<_, anyhow::Error>(azure.get_vault(&id).await?)
    };
    match tokio::time::timeout(VAULT_READ_TIMEOUT, read).await {
        Err(_) => not_read(format!("reading the vault took longer than {}s", VAULT_READ_TIMEOUT.as_secs())),
        Ok(Err(e)) => not_read(format!("reading the vault failed: {e}")),
        Ok(Ok(dated)) => match dated.value {
            None => not_read("the vault was not found with the operator's Azure settings".into()),
            Some(v) => {
                let rbac = v.properties.enable_rbac_authorization.unwrap_or(false);
                VaultFacts {
                    rbac: Some(rbac),
                    tenant_id: v.properties.tenant_id.clone(),
                    policy_already_grants: !rbac && v.access_policy_grants(None, &principal, &CMK_KEY_PERMISSIONS),
                    azure_now: dated.date,
                    not_read: None,
                }
            }
        },
    }
}

/// A client from the kubeconfig (as `run` finds it) and the context's namespace.
async fn kube_client(args: &Args) -> anyhow::Result<(kube::Client, String)> {
    let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let config = match &args.kubeconfig {
        Some(path) => kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?,
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    let namespace = config.default_namespace.clone();
    Ok((kube::Client::try_from(config)?, namespace))
}

/// `1h 12m`, `14m 5s`, `40s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// A request body as a person reads it: the object that matters one field per line, in the order the REST
/// reference lists them (serde_json would sort the keys and put every array item on a line of its own).
fn body_text(body: &serde_json::Value) -> String {
    let fields = |o: &serde_json::Value, order: &[&str]| -> String {
        let map = o.as_object().cloned().unwrap_or_default();
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(usize::MAX));
        keys.into_iter().map(|k| format!("  {}: {}", json!(k), inline(&map[k]))).collect::<Vec<_>>().join(",\n")
    };
    let props = &body["properties"];
    match props.get("accessPolicies").and_then(|p| p.get(0)) {
        Some(policy) => format!(
            "{{\"properties\": {{\"accessPolicies\": [{{\n{}\n}}]}}}}",
            fields(policy, &["tenantId", "objectId", "permissions"])
        ),
        None => format!(
            "{{\"properties\": {{\n{}\n}}}}",
            fields(props, &["roleDefinitionId", "principalId", "principalType"])
        ),
    }
}

/// JSON on one line with a space after `:` and `,`.
fn inline(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{}: {}", json!(k), inline(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        serde_json::Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        scalar => scalar.to_string(),
    }
}

/// A shell word: as is when it is plain, else single-quoted.
fn sh(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',')
        });
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_api::v1alpha1::{GrantRecord, HpcCacheStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    const VAULT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/security-rg/providers/Microsoft.KeyVault/vaults/kv-manual";
    const PRINCIPAL: &str = "9f0e0000-1111-4222-8333-444444444444";

    fn manual(status: Option<HpcCacheStatus>) -> HpcCache {
        let mut obj: HpcCache = serde_json::from_value(json!({
            "apiVersion": "hpccache.io/v1alpha1", "kind": "HpcCache",
            "metadata": {"name": "climate", "namespace": "research"},
            "spec": {
                "azure": {"subscriptionId": "11111111-2222-3333-4444-555555555555", "resourceGroup": "hpc-rg", "location": "eastus"},
                "sku": "Standard_2G", "cacheSizeGB": 6144,
                "subnetId": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/hpc-rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
                "encryption": {"keyVaultId": VAULT, "keyName": "cache-key", "keyVersion": "aabbccddeeff00112233445566778899"},
                "keyAccess": "Manual"
            }
        }))
        .unwrap();
        obj.status = status;
        obj
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn waiting() -> HpcCacheStatus {
        HpcCacheStatus {
            phase: Some(hpcc_api::v1alpha1::Phase::WaitingForKey),
            principal_id: Some(PRINCIPAL.into()),
            tenant_id: Some("72f988bf-0000-4000-8000-000000000001".into()),
            authorization_deadline: Some(Time(t("2026-11-29T04:30:00Z"))),
            ..Default::default()
        }
    }

    fn public() -> url::Url {
        url::Url::parse("https://management.azure.com/").unwrap()
    }

    fn plan(obj: &HpcCache, facts: &VaultFacts) -> Result<Plan, Refusal> {
        Plan::new(obj, "research", facts, public(), t("2026-11-29T03:17:30Z"))
    }

    #[test]
    fn without_knowing_the_vault_both_forms_are_printed_and_labelled() {
        let out = plan(&manual(Some(waiting())), &VaultFacts::default()).unwrap().render();
        assert!(out.contains(&format!("principal:        {PRINCIPAL}")), "{out}");
        assert!(out.contains("deadline:         2026-11-29T04:30:00Z, 1h 12m left (this machine's clock)"), "{out}");
        assert!(out.contains("permission model: unknown (the vault was not read)"), "{out}");
        assert!(out.contains(&format!(
            "\naz keyvault set-policy --name kv-manual --resource-group security-rg --subscription 11111111-2222-3333-4444-555555555555 --object-id {PRINCIPAL} --key-permissions get wrapKey unwrapKey\n"
        )), "{out}");
        assert!(
            out.contains(&format!(
                "\nPUT https://management.azure.com{VAULT}/accessPolicies/add?api-version=2025-05-01\n"
            )),
            "{out}"
        );
        assert!(out.contains(&format!(
            "\naz role assignment create --assignee-object-id {PRINCIPAL} --assignee-principal-type ServicePrincipal --role 'Key Vault Crypto Service Encryption User' --scope {VAULT}\n"
        )), "{out}");
        let assignment = role_assignment_name(
            &ResourceId::parse(VAULT).unwrap(),
            PRINCIPAL,
            KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER,
        );
        assert!(out.contains(&format!(
            "\nPUT https://management.azure.com{VAULT}/providers/Microsoft.Authorization/roleAssignments/{assignment}?api-version=2022-04-01\n"
        )), "{out}");
        assert!(out.contains("# Access-policy vault (enableRbacAuthorization: false)"), "{out}");
        assert!(out.contains("# RBAC vault (enableRbacAuthorization: true)"), "{out}");
        assert!(out.contains("kubectl wait --for=condition=Ready hpccache/climate -n research"), "{out}");
    }

    #[test]
    fn the_rest_bodies_are_what_azure_takes() {
        let p = plan(&manual(Some(waiting())), &VaultFacts::default()).unwrap();
        let (_, body) = p.access_policy_rest();
        assert_eq!(
            body,
            json!({"properties": {"accessPolicies": [{
                "tenantId": "72f988bf-0000-4000-8000-000000000001",
                "objectId": PRINCIPAL,
                "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]}
            }]}})
        );
        let (_, body) = p.rbac_rest();
        assert_eq!(
            body,
            json!({"properties": {
                "roleDefinitionId": "/subscriptions/11111111-2222-3333-4444-555555555555/providers/Microsoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6",
                "principalId": PRINCIPAL,
                "principalType": "ServicePrincipal"
            }})
        );
    }

    #[test]
    fn the_printed_bodies_are_the_bodies() {
        let p = plan(&manual(Some(waiting())), &VaultFacts::default()).unwrap();
        for (_, body) in [p.access_policy_rest(), p.rbac_rest()] {
            let text = body_text(&body);
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(parsed, body, "{text}");
        }
        let text = body_text(&p.access_policy_rest().1);
        assert!(text.contains("\n  \"tenantId\": \"72f988bf-0000-4000-8000-000000000001\",\n  \"objectId\""), "{text}");
        assert!(text.contains("\"permissions\": {\"keys\": [\"get\", \"wrapKey\", \"unwrapKey\"]}"), "{text}");
        let sim = Plan::new(
            &manual(Some(waiting())),
            "research",
            &VaultFacts::default(),
            url::Url::parse("https://127.0.0.1:8443/").unwrap(),
            t("2026-11-29T03:17:30Z"),
        )
        .unwrap()
        .render();
        assert!(sim.contains("ARM REST call (ARM at https://127.0.0.1:8443/, from the environment):"), "{sim}");
        assert!(sim.contains(&format!("\nPUT https://127.0.0.1:8443{VAULT}/accessPolicies/add?")), "{sim}");
    }

    #[test]
    fn a_read_vault_picks_one_form_and_azures_clock() {
        let facts = VaultFacts {
            rbac: Some(true),
            azure_now: Some(t("2026-11-29T04:20:00Z")),
            tenant_id: Some("vault-tenant".into()),
            ..Default::default()
        };
        let out = plan(&manual(Some(waiting())), &facts).unwrap().render();
        assert!(out.contains("permission model: Azure RBAC (read from the vault just now)"), "{out}");
        assert!(out.contains("10m 0s left (Azure's clock)"), "{out}");
        assert!(out.contains("az role assignment create") && !out.contains("az keyvault set-policy"), "{out}");
        let facts = VaultFacts { rbac: Some(false), ..Default::default() };
        let out = plan(&manual(Some(waiting())), &facts).unwrap().render();
        assert!(out.contains("az keyvault set-policy") && !out.contains("az role assignment"), "{out}");
    }

    #[test]
    fn recorded_grants_tell_the_vault_model() {
        let mut st = waiting();
        st.grants.push(GrantRecord {
            scope: VAULT.to_uppercase(),
            principal_id: PRINCIPAL.into(),
            tenant_id: None,
            kind: GrantKind::RoleAssignment,
            system_assigned: true,
            made: false,
        });
        let mut obj = manual(Some(st));
        obj.spec.key_access = KeyAccess::Automatic;
        let out = plan(&obj, &VaultFacts::default()).unwrap().render();
        assert!(out.contains("permission model: Azure RBAC (from the grants in the object's status)"), "{out}");
        assert!(out.contains("keyAccess is Automatic"), "{out}");
        assert!(!out.contains("set-policy"), "{out}");
    }

    #[test]
    fn a_passed_deadline_and_granted_access_are_said() {
        let mut st = waiting();
        st.authorization_deadline = Some(Time(t("2026-11-29T03:00:00Z")));
        let out = plan(&manual(Some(st)), &VaultFacts::default()).unwrap().render();
        assert!(out.contains("passed 17m 30s ago"), "{out}");
        let mut st = waiting();
        st.authorization_deadline = None;
        st.authorized_at = Some(Time(t("2026-11-29T02:00:00Z")));
        st.conditions.push(Condition {
            type_: "KeyAuthorized".into(),
            status: "True".into(),
            reason: "KeyAccessConfirmed".into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: Some(1),
        });
        let out = plan(&manual(Some(st)), &VaultFacts::default()).unwrap().render();
        assert!(
            out.contains("deadline:         none: the cache has been authorized since 2026-11-29T02:00:00Z"),
            "{out}"
        );
        assert!(out.contains("already has access"), "{out}");
    }

    #[test]
    fn precise_refusals() {
        let mut mmk = manual(Some(waiting()));
        mmk.spec.encryption = None;
        let e = plan(&mmk, &VaultFacts::default()).unwrap_err();
        assert!(
            e.to_string().contains("uses Microsoft-managed keys (no spec.encryption): there is nothing to grant"),
            "{e}"
        );
        let e = plan(&manual(None), &VaultFacts::default()).unwrap_err();
        assert_eq!(
            e,
            Refusal::NoPrincipalYet { namespace: "research".into(), name: "climate".into(), phase: "none yet".into() }
        );
        assert!(e.to_string().contains("has no status.principalId yet"), "{e}");
        let nf = Refusal::NotFound { namespace: "research".into(), name: "nope".into() };
        assert!(nf.to_string().starts_with("hpccache research/nope not found"), "{nf}");
    }

    #[test]
    fn the_plugin_is_recognised_by_file_name() {
        assert!(invoked_as_plugin(Some(&OsString::from("/usr/local/bin/kubectl-hpcc"))));
        assert!(invoked_as_plugin(Some(&OsString::from("kubectl-hpcc"))));
        assert!(!invoked_as_plugin(Some(&OsString::from("/bin/hpc-cache-operator"))));
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(sh("kv-manual"), "kv-manual");
        assert_eq!(sh("/subscriptions/x/resourceGroups/rg(1)"), "'/subscriptions/x/resourceGroups/rg(1)'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(human(Duration::from_secs(4330)), "1h 12m");
        assert_eq!(human(Duration::from_secs(40)), "40s");
    }
}

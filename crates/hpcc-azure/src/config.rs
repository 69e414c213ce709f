//! Cloud endpoints and client configuration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use azure_core::credentials::Secret;
use url::Url;

/// Endpoints and token audiences of one Azure cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// Azure Resource Manager, e.g. `https://management.azure.com/`.
    pub arm_endpoint: Url,
    /// ARM token audience, e.g. `https://management.azure.com` (scope = audience + `/.default`).
    pub arm_audience: String,
    /// Entra authority host, e.g. `https://login.microsoftonline.com/`.
    pub authority_host: Url,
    /// Key Vault DNS suffix, e.g. `vault.azure.net`: vault hosts must end with `.` + this.
    pub keyvault_dns_suffix: String,
    /// Key Vault token audience, e.g. `https://vault.azure.net`.
    pub keyvault_audience: String,
}

fn url(s: &str) -> Url {
    Url::parse(s).expect("static URL")
}

impl CloudConfig {
    /// Azure public cloud.
    pub fn public() -> Self {
        Self {
            arm_endpoint: url("https://management.azure.com/"),
            arm_audience: "https://management.azure.com".into(),
            authority_host: url("https://login.microsoftonline.com/"),
            keyvault_dns_suffix: "vault.azure.net".into(),
            keyvault_audience: "https://vault.azure.net".into(),
        }
    }

    /// Azure US Government.
    pub fn us_government() -> Self {
        Self {
            arm_endpoint: url("https://management.usgovcloudapi.net/"),
            arm_audience: "https://management.usgovcloudapi.net".into(),
            authority_host: url("https://login.microsoftonline.us/"),
            keyvault_dns_suffix: "vault.usgovcloudapi.net".into(),
            keyvault_audience: "https://vault.usgovcloudapi.net".into(),
        }
    }

    /// Azure operated by 21Vianet (China).
    pub fn china() -> Self {
        Self {
            arm_endpoint: url("https://management.chinacloudapi.cn/"),
            arm_audience: "https://management.chinacloudapi.cn".into(),
            authority_host: url("https://login.chinacloudapi.cn/"),
            keyvault_dns_suffix: "vault.azure.cn".into(),
            keyvault_audience: "https://vault.azure.cn".into(),
        }
    }

    /// `{arm_audience}/.default`.
    pub fn arm_scope(&self) -> String {
        scope_for(&self.arm_audience)
    }

    /// `{keyvault_audience}/.default`.
    pub fn keyvault_scope(&self) -> String {
        scope_for(&self.keyvault_audience)
    }
}

pub(crate) fn scope_for(audience: &str) -> String {
    format!("{}/.default", audience.trim_end_matches('/'))
}

/// Which azure_identity credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialChoice {
    /// Workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set, else client secret when `AZURE_CLIENT_SECRET` is
    /// set, else managed identity falling back to developer tools (Azure CLI / azd).
    #[default]
    Auto,
    WorkloadIdentity,
    ManagedIdentity,
    ClientSecret,
    DeveloperTools,
}

impl std::str::FromStr for CredentialChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let norm: String = s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
        Ok(match norm.as_str() {
            "" | "auto" | "default" => Self::Auto,
            "workload" | "workloadidentity" => Self::WorkloadIdentity,
            "managed" | "managedidentity" | "msi" => Self::ManagedIdentity,
            "clientsecret" | "secret" => Self::ClientSecret,
            "developer" | "developertools" | "cli" | "azurecli" => Self::DeveloperTools,
            _ => bail!(
                "unknown credential {s:?}: expected auto, workload-identity, managed-identity, client-secret or developer-tools"
            ),
        })
    }
}

/// Everything the Azure client needs.
#[derive(Clone)]
pub struct AzureConfig {
    pub cloud: CloudConfig,
    pub credential: CredentialChoice,
    /// Extra trusted root certificates (PEM), added to the platform roots.
    pub ca_file: Option<PathBuf>,
    /// Resolve every host name to 127.0.0.1 (port from the URL) and ignore proxies: tests and the demo, so that no
    /// request can leave the machine.
    pub resolve_to_loopback: bool,
    /// Retries after the first attempt for retryable failures (429, 5xx, transport).
    pub max_retries: u32,
    /// Upper bound on the total time one call may spend sleeping between retries; a longer `Retry-After` is
    /// returned to the caller as [`AzureError::Throttled`](super::AzureError::Throttled) instead.
    pub max_retry_wait: Duration,
    /// First backoff step (doubled per retry, with jitter) when the server gives no `Retry-After`.
    pub retry_base_delay: Duration,
    /// Per-subscription client-side token bucket for ARM reads.
    pub reads_per_second: f64,
    pub read_burst: u32,
    /// Per-subscription client-side token bucket for ARM writes and deletes.
    pub writes_per_second: f64,
    pub write_burst: u32,
    /// Entra tenant (`AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Application / managed identity client id (`AZURE_CLIENT_ID`).
    pub client_id: Option<String>,
    /// Client secret (`AZURE_CLIENT_SECRET`); never printed.
    pub client_secret: Option<Secret>,
    /// Projected service-account token for workload identity (`AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<PathBuf>,
    /// Per-attempt HTTP timeout.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("cloud", &self.cloud)
            .field("credential", &self.credential)
            .field("ca_file", &self.ca_file)
            .field("resolve_to_loopback", &self.resolve_to_loopback)
            .field("max_retries", &self.max_retries)
            .field("max_retry_wait", &self.max_retry_wait)
            .field("reads_per_second", &self.reads_per_second)
            .field("read_burst", &self.read_burst)
            .field("writes_per_second", &self.writes_per_second)
            .field("write_burst", &self.write_burst)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("federated_token_file", &self.federated_token_file)
            .finish_non_exhaustive()
    }
}

impl Default for AzureConfig {
    fn default() -> Self {
        Self {
            cloud: CloudConfig::public(),
            credential: CredentialChoice::Auto,
            ca_file: None,
            resolve_to_loopback: false,
            max_retries: 2,
            max_retry_wait: Duration::from_secs(10),
            retry_base_delay: Duration::from_millis(500),
            // ARM: reads 250 burst / 25 per s, writes 200 / 10 per s per subscription and principal. Stay 10% below
            // (the bucket also follows Azure's x-ms-ratelimit-remaining-* counts, which include other clients).
            reads_per_second: 22.5,
            read_burst: 225,
            writes_per_second: 9.0,
            write_burst: 180,
            tenant_id: None,
            client_id: None,
            client_secret: None,
            federated_token_file: None,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A service principal other than the operator's own, e.g. from a namespace's credential Secret (Azure Service
/// Operator's pattern): a client secret, or, without one, workload identity with the operator's own federated token
/// (`AZURE_FEDERATED_TOKEN_FILE`) exchanged for this application. See [`Azure::for_principal`](crate::Azure::for_principal).
#[derive(Clone)]
pub struct Principal {
    /// Entra tenant.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// Client secret; None: workload identity. Never printed.
    pub client_secret: Option<Secret>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AzureConfig {
    /// Who this configuration acts as, for the client-side ARM limiter (`tenant/client`, lowercase): two clients
    /// acting as one principal share its budget, as they do in ARM. The operator's managed identity without a
    /// client id is `/`.
    pub fn principal_key(&self) -> String {
        format!("{}/{}", self.tenant_id.as_deref().unwrap_or_default(), self.client_id.as_deref().unwrap_or_default())
            .to_ascii_lowercase()
    }

    /// This configuration acting as `principal` instead: same cloud, TLS, retries and limits; a client secret, or
    /// workload identity with this configuration's federated token file.
    pub fn for_principal(&self, principal: &Principal) -> anyhow::Result<AzureConfig> {
        let credential = match (&principal.client_secret, &self.federated_token_file) {
            (Some(_), _) => CredentialChoice::ClientSecret,
            (None, Some(_)) => CredentialChoice::WorkloadIdentity,
            (None, None) => bail!(
                "no client secret for {}, and no federated token (AZURE_FEDERATED_TOKEN_FILE) to exchange for it",
                principal.client_id
            ),
        };
        Ok(AzureConfig {
            credential,
            tenant_id: Some(principal.tenant_id.clone()),
            client_id: Some(principal.client_id.clone()),
            client_secret: principal.client_secret.clone(),
            ..self.clone()
        })
    }

    /// Read the configuration from the process environment (see [`AzureConfig::from_vars`]).
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Build the configuration from a variable lookup, so tests need not mutate the process environment.
    ///
    /// Variables: `AZURE_CLOUD` (`AzurePublicCloud` | `AzureUSGovernment` | `AzureChinaCloud` | `custom`),
    /// `HPCC_ARM_ENDPOINT`, `HPCC_ARM_AUDIENCE`, `AZURE_AUTHORITY_HOST`, `HPCC_KEYVAULT_DNS_SUFFIX`,
    /// `HPCC_KEYVAULT_AUDIENCE`, `HPCC_CA_FILE`, `HPCC_RESOLVE_TO_LOOPBACK`, `HPCC_CREDENTIAL`,
    /// `HPCC_AZURE_MAX_RETRIES`, `HPCC_ARM_READS_PER_SECOND`, `HPCC_ARM_READ_BURST`, `HPCC_ARM_WRITES_PER_SECOND`,
    /// `HPCC_ARM_WRITE_BURST`, and `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut cfg = Self::default();
        let cloud_name = var("AZURE_CLOUD").unwrap_or_else(|| "AzurePublicCloud".into());
        let custom;
        cfg.cloud = match cloud_name.to_ascii_lowercase().replace(['-', '_', ' '], "").as_str() {
            "azurepubliccloud" | "azurecloud" | "public" => {
                custom = false;
                CloudConfig::public()
            }
            "azureusgovernment" | "azureusgovernmentcloud" | "usgovernment" | "usgov" => {
                custom = false;
                CloudConfig::us_government()
            }
            "azurechinacloud" | "china" => {
                custom = false;
                CloudConfig::china()
            }
            "custom" => {
                custom = true;
                CloudConfig::public()
            }
            _ => bail!(
                "AZURE_CLOUD={cloud_name:?}: expected AzurePublicCloud, AzureUSGovernment, AzureChinaCloud or custom"
            ),
        };
        match var("HPCC_ARM_ENDPOINT") {
            Some(e) => cfg.cloud.arm_endpoint = parse_https("HPCC_ARM_ENDPOINT", &e)?,
            None if custom => bail!("AZURE_CLOUD=custom needs HPCC_ARM_ENDPOINT"),
            None => {}
        }
        if let Some(a) = var("HPCC_ARM_AUDIENCE") {
            cfg.cloud.arm_audience = a;
        }
        if let Some(a) = var("AZURE_AUTHORITY_HOST") {
            cfg.cloud.authority_host = parse_https("AZURE_AUTHORITY_HOST", &a)?;
        }
        if let Some(s) = var("HPCC_KEYVAULT_DNS_SUFFIX") {
            cfg.cloud.keyvault_dns_suffix = s.trim_start_matches('.').to_ascii_lowercase();
        }
        if let Some(a) = var("HPCC_KEYVAULT_AUDIENCE") {
            cfg.cloud.keyvault_audience = a;
        }
        cfg.ca_file = var("HPCC_CA_FILE").map(PathBuf::from);
        cfg.resolve_to_loopback = match var("HPCC_RESOLVE_TO_LOOPBACK") {
            None => false,
            Some(v) => parse_bool("HPCC_RESOLVE_TO_LOOPBACK", &v)?,
        };
        if let Some(c) = var("HPCC_CREDENTIAL") {
            cfg.credential = c.parse().context("HPCC_CREDENTIAL")?;
        }
        if let Some(v) = var("HPCC_AZURE_MAX_RETRIES") {
            cfg.max_retries = v.parse().context("HPCC_AZURE_MAX_RETRIES")?;
        }
        if let Some(v) = var("HPCC_ARM_READS_PER_SECOND") {
            cfg.reads_per_second = v.parse().context("HPCC_ARM_READS_PER_SECOND")?;
        }
        if let Some(v) = var("HPCC_ARM_READ_BURST") {
            cfg.read_burst = v.parse().context("HPCC_ARM_READ_BURST")?;
        }
        if let Some(v) = var("HPCC_ARM_WRITES_PER_SECOND") {
            cfg.writes_per_second = v.parse().context("HPCC_ARM_WRITES_PER_SECOND")?;
        }
        if let Some(v) = var("HPCC_ARM_WRITE_BURST") {
            cfg.write_burst = v.parse().context("HPCC_ARM_WRITE_BURST")?;
        }
        if !(cfg.reads_per_second > 0.0 && cfg.writes_per_second > 0.0) {
            bail!("ARM rate limits must be positive");
        }
        cfg.tenant_id = var("AZURE_TENANT_ID");
        cfg.client_id = var("AZURE_CLIENT_ID");
        cfg.client_secret = get("AZURE_CLIENT_SECRET").filter(|s| !s.is_empty()).map(Secret::new);
        cfg.federated_token_file = var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from);
        Ok(cfg)
    }
}

fn parse_https(name: &str, v: &str) -> anyhow::Result<Url> {
    let mut u = Url::parse(v).with_context(|| format!("{name}={v:?} is not a URL"))?;
    if u.scheme() != "https" {
        bail!("{name}={v:?} must use https");
    }
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

fn parse_bool(name: &str, v: &str) -> anyhow::Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => bail!("{name}={v:?}: expected true or false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_to_public_cloud() {
        let c = AzureConfig::from_vars(vars(&[])).unwrap();
        assert_eq!(c.cloud, CloudConfig::public());
        assert_eq!(c.cloud.arm_scope(), "https://management.azure.com/.default");
        assert_eq!(c.cloud.keyvault_scope(), "https://vault.azure.net/.default");
        assert_eq!(c.credential, CredentialChoice::Auto);
        assert!(!c.resolve_to_loopback);
        assert!(c.reads_per_second < 25.0 && c.read_burst < 250);
        assert!(c.writes_per_second < 10.0 && c.write_burst < 200);
    }

    #[test]
    fn sovereign_clouds() {
        let c = AzureConfig::from_vars(vars(&[("AZURE_CLOUD", "AzureUSGovernment")])).unwrap();
        assert_eq!(c.cloud.arm_endpoint.as_str(), "https://management.usgovcloudapi.net/");
        assert_eq!(c.cloud.keyvault_dns_suffix, "vault.usgovcloudapi.net");
        let c = AzureConfig::from_vars(vars(&[("AZURE_CLOUD", "AzureChinaCloud")])).unwrap();
        assert_eq!(c.cloud.authority_host.as_str(), "https://login.chinacloudapi.cn/");
        assert_eq!(c.cloud.keyvault_audience, "https://vault.azure.cn");
        assert!(AzureConfig::from_vars(vars(&[("AZURE_CLOUD", "Mars")])).is_err());
        assert!(AzureConfig::from_vars(vars(&[("AZURE_CLOUD", "custom")])).is_err());
    }

    #[test]
    fn custom_overrides() {
        let c = AzureConfig::from_vars(vars(&[
            ("AZURE_CLOUD", "custom"),
            ("HPCC_ARM_ENDPOINT", "https://management.azure.com:8443"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com:8443"),
            ("HPCC_KEYVAULT_DNS_SUFFIX", ".Vault.Azure.Net"),
            ("HPCC_CA_FILE", "/tmp/ca.pem"),
            ("HPCC_RESOLVE_TO_LOOPBACK", "true"),
            ("HPCC_CREDENTIAL", "client-secret"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s3cret"),
        ]))
        .unwrap();
        assert_eq!(c.cloud.arm_endpoint.as_str(), "https://management.azure.com:8443/");
        assert_eq!(c.cloud.authority_host.as_str(), "https://login.microsoftonline.com:8443/");
        assert_eq!(c.cloud.arm_audience, "https://management.azure.com");
        assert_eq!(c.cloud.keyvault_dns_suffix, "vault.azure.net");
        assert_eq!(c.ca_file.as_deref(), Some(std::path::Path::new("/tmp/ca.pem")));
        assert!(c.resolve_to_loopback);
        assert_eq!(c.credential, CredentialChoice::ClientSecret);
        assert_eq!(c.client_secret.as_ref().unwrap().secret(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(AzureConfig::from_vars(vars(&[("HPCC_ARM_ENDPOINT", "http://x")])).is_err());
        assert!(AzureConfig::from_vars(vars(&[("HPCC_RESOLVE_TO_LOOPBACK", "maybe")])).is_err());
        assert!(AzureConfig::from_vars(vars(&[("HPCC_CREDENTIAL", "password")])).is_err());
    }

    #[test]
    fn a_principal_keeps_the_cloud_and_changes_who_acts() {
        let op = AzureConfig::from_vars(vars(&[
            ("HPCC_ARM_ENDPOINT", "https://management.azure.com:8443"),
            ("AZURE_TENANT_ID", "T-op"),
            ("AZURE_CLIENT_ID", "C-op"),
            ("AZURE_CLIENT_SECRET", "op-secret"),
        ]))
        .unwrap();
        assert_eq!(op.principal_key(), "t-op/c-op");
        let ns = Principal {
            tenant_id: "t-ns".into(),
            client_id: "c-ns".into(),
            client_secret: Some(Secret::new("ns-secret")),
        };
        assert!(!format!("{ns:?}").contains("ns-secret"));
        let c = op.for_principal(&ns).unwrap();
        assert_eq!(c.credential, CredentialChoice::ClientSecret);
        assert_eq!(c.cloud, op.cloud);
        assert_eq!(c.principal_key(), "t-ns/c-ns");
        assert_eq!(c.client_secret.as_ref().unwrap().secret(), "ns-secret");
        // Workload identity: the operator's own federated token, exchanged for the namespace's application.
        let wi = Principal { client_secret: None, ..ns };
        assert!(op.for_principal(&wi).is_err(), "the operator has no federated token");
        let op_wi = AzureConfig { federated_token_file: Some("/var/run/token".into()), ..op };
        let c = op_wi.for_principal(&wi).unwrap();
        assert_eq!(c.credential, CredentialChoice::WorkloadIdentity);
        assert_eq!(c.client_id.as_deref(), Some("c-ns"));
        assert!(c.client_secret.is_none());
        assert_eq!(c.federated_token_file.as_deref(), Some(std::path::Path::new("/var/run/token")));
    }

    #[test]
    fn credential_names() {
        for (s, want) in [
            ("WorkloadIdentity", CredentialChoice::WorkloadIdentity),
            ("workload-identity", CredentialChoice::WorkloadIdentity),
            ("managed_identity", CredentialChoice::ManagedIdentity),
            ("ClientSecret", CredentialChoice::ClientSecret),
            ("DeveloperTools", CredentialChoice::DeveloperTools),
            ("auto", CredentialChoice::Auto),
        ] {
            assert_eq!(s.parse::<CredentialChoice>().unwrap(), want, "{s}");
        }
    }
}

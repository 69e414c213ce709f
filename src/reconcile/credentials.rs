//! Per-namespace Azure credentials, Azure Service Operator's pattern: a Secret named [`SECRET_NAME`] in an object's
//! namespace, with `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` (or, for workload identity, no
//! secret: the operator's own federated token is exchanged for the namespace's application), is the principal every
//! Azure request for that namespace's caches is made as. Without the Secret the operator-wide identity is used,
//! unless `--require-namespace-credentials`.
//!
//! - The Secret is read with one GET by name (the operator may `get` only that name: no list, no watch), kept for
//!   [`SECRET_TTL`]; a credential problem is looked at again every few polls
//!   ([`hpcc_core::credential_recheck`]).
//! - One [`Azure`] client per namespace credential, made again when the Secret's `resourceVersion` changes (a
//!   rotated secret takes effect); each has its own token cache, and the ARM limiter is partitioned by principal.
//! - Each principal has its own read budget ([`RecentReads`]): a namespace never sees Azure data through reads
//!   another principal made.
//! - Secret values are never logged nor put in a status, an event or an error.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hpcc_azure::{Azure, AzureError, Principal, Secret as ClientSecret};
use hpcc_core::{CredentialProblem, Reason};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tracing::info;

use super::reads::{Freshness, RecentReads};

/// The name of the namespace's credential Secret.
pub const SECRET_NAME: &str = "hpccache-credential";
pub const TENANT_ID_KEY: &str = "AZURE_TENANT_ID";
pub const CLIENT_ID_KEY: &str = "AZURE_CLIENT_ID";
pub const CLIENT_SECRET_KEY: &str = "AZURE_CLIENT_SECRET";
/// How long a read of a namespace's Secret (or its absence) is reused.
pub const SECRET_TTL: Duration = Duration::from_secs(5);

/// Who one reconcile acts as.
pub enum Credential {
    /// The operator's own identity (the namespace has no Secret).
    OperatorWide,
    /// The namespace's Secret.
    Namespace {
        azure: Azure,
        reads: Arc<RecentReads>,
        /// `namespace/hpccache-credential`.
        secret: String,
        client_id: String,
    },
}

impl Credential {
    /// The client and read budget to use: the namespace's, or the operator-wide ones given.
    pub fn pick<'a>(&'a self, operator: &'a Azure, reads: &'a RecentReads) -> (&'a Azure, &'a RecentReads) {
        match self {
            Credential::OperatorWide => (operator, reads),
            Credential::Namespace { azure, reads, .. } => (azure, reads),
        }
    }

    /// The problem to report when Entra ID refused this namespace credential (never for the operator-wide one,
    /// whose failures are the operator's and are retried).
    pub fn rejected(&self, e: &AzureError) -> Option<CredentialProblem> {
        let Credential::Namespace { secret, client_id, .. } = self else { return None };
        let r = e.token_rejection()?;
        Some(CredentialProblem {
            reason: Reason::NamespaceCredentialRejected,
            message: format!(
                "Entra ID refused the credential in Secret {secret} (AZURE_CLIENT_ID {client_id}): {} {}; fix the \
                 Secret (the operator looks again shortly)",
                r.status,
                r.code()
            ),
        })
    }
}

/// A namespace's Secret as last read.
#[derive(Clone)]
struct SecretRead {
    at: Instant,
    /// None: no Secret. Otherwise its resourceVersion and what it says.
    found: Option<(String, Result<Principal, String>)>,
}

/// The namespace credentials in use, their clients and their read budgets.
pub struct Credentials {
    require: bool,
    fresh: Freshness,
    secrets: Mutex<HashMap<String, SecretRead>>,
    /// Namespace → (the Secret's resourceVersion, the client made from it).
    clients: Mutex<HashMap<String, (String, Azure)>>,
    /// Principal (`tenant/client`) → its read budget.
    reads: Mutex<HashMap<String, Arc<RecentReads>>>,
}

impl Credentials {
    /// `require`: `--require-namespace-credentials`; `fresh` is that of the operator-wide [`RecentReads`].
    pub fn new(require: bool, fresh: Freshness) -> Self {
        Self { require, fresh, secrets: Default::default(), clients: Default::default(), reads: Default::default() }
    }

    /// Who acts for the objects of `ns`, or why nobody can. `operator`: the operator-wide client, from which a
    /// namespace's client takes its cloud, HTTP client and limiter.
    pub async fn resolve(
        &self,
        client: &Client,
        operator: &Azure,
        ns: &str,
    ) -> Result<Result<Credential, CredentialProblem>, kube::Error> {
        let read = self.read_secret(client, operator, ns).await?;
        let Some((version, parsed)) = read.found else {
            lock(&self.clients).remove(ns);
            if self.require {
                return Ok(Err(CredentialProblem {
                    reason: Reason::NamespaceCredentialMissing,
                    message: format!(
                        "--require-namespace-credentials is set and namespace {ns} has no Secret {SECRET_NAME} (keys \
                         {TENANT_ID_KEY}, {CLIENT_ID_KEY} and, unless workload identity, {CLIENT_SECRET_KEY})"
                    ),
                }));
            }
            return Ok(Ok(Credential::OperatorWide));
        };
        let secret = format!("{ns}/{SECRET_NAME}");
        let principal = match parsed {
            Ok(p) => p,
            Err(what) => {
                return Ok(Err(CredentialProblem {
                    reason: Reason::NamespaceCredentialInvalid,
                    message: format!("Secret {secret}: {what}"),
                }));
            }
        };
        let azure = {
            let mut clients = lock(&self.clients);
            match clients.get(ns) {
                Some((v, azure)) if *v == version => azure.clone(),
                _ => {
                    let azure = match operator.for_principal(&principal) {
                        Ok(a) => a,
                        Err(e) => {
                            return Ok(Err(CredentialProblem {
                                reason: Reason::NamespaceCredentialInvalid,
                                message: format!("Secret {secret}: {e:#}"),
                            }));
                        }
                    };
                    info!(
                        namespace = %ns,
                        secret = SECRET_NAME,
                        client_id = %principal.client_id,
                        resource_version = %version,
                        workload_identity = principal.client_secret.is_none(),
                        "using the namespace's Azure credential"
                    );
                    clients.insert(ns.to_string(), (version, azure.clone()));
                    azure
                }
            }
        };
        let reads = lock(&self.reads)
            .entry(azure.config().principal_key())
            .or_insert_with(|| Arc::new(RecentReads::new(self.fresh)))
            .clone();
        Ok(Ok(Credential::Namespace { azure, reads, secret, client_id: principal.client_id }))
    }

    /// The namespace's Secret, from a recent read or one GET by name.
    async fn read_secret(&self, client: &Client, operator: &Azure, ns: &str) -> Result<SecretRead, kube::Error> {
        if let Some(r) = lock(&self.secrets).get(ns).filter(|r| r.at.elapsed() < SECRET_TTL) {
            return Ok(r.clone());
        }
        let got = Api::<Secret>::namespaced(client.clone(), ns).get_opt(SECRET_NAME).await?;
        let workload_identity = operator.config().federated_token_file.is_some();
        let found = got.map(|s| {
            let version = s.resource_version().unwrap_or_default();
            (version, parse(s.data.as_ref().unwrap_or(&BTreeMap::new()), workload_identity))
        });
        let read = SecretRead { at: Instant::now(), found };
        lock(&self.secrets).insert(ns.to_string(), read.clone());
        Ok(read)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a credential Secret says. `workload_identity`: the operator has a federated token to exchange for the
/// namespace's application when there is no client secret. The error names keys, never values of secrets.
pub fn parse(data: &BTreeMap<String, ByteString>, workload_identity: bool) -> Result<Principal, String> {
    let text = |key: &str| -> Result<Option<String>, String> {
        match data.get(key) {
            None => Ok(None),
            Some(v) => String::from_utf8(v.0.clone())
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| format!("{key} is not UTF-8 text")),
        }
    };
    let required = |key: &str| -> Result<String, String> {
        match text(key)? {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => Err(format!("{key} is empty")),
            None => Err(format!("lacks {key}")),
        }
    };
    let tenant_id = required(TENANT_ID_KEY)?;
    if !is_guid(&tenant_id) && !is_domain(&tenant_id) {
        return Err(format!("{TENANT_ID_KEY} {tenant_id:?} is neither a GUID nor a domain name"));
    }
    let client_id = required(CLIENT_ID_KEY)?;
    if !is_guid(&client_id) {
        return Err(format!("{CLIENT_ID_KEY} {client_id:?} is not a GUID"));
    }
    let client_secret = match text(CLIENT_SECRET_KEY)? {
        Some(s) if s.is_empty() => return Err(format!("{CLIENT_SECRET_KEY} is empty")),
        Some(s) => Some(ClientSecret::new(s)),
        None if workload_identity => None,
        None => {
            return Err(format!(
                "lacks {CLIENT_SECRET_KEY}, and the operator has no federated token (AZURE_FEDERATED_TOKEN_FILE) to \
                 use workload identity instead"
            ));
        }
    };
    Ok(Principal { tenant_id, client_id, client_secret })
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hexadecimal.
fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// A tenant's domain name, e.g. `contoso.onmicrosoft.com`.
fn is_domain(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
    const CLIENT: &str = "1c1c1c1c-1111-4222-8333-444444444444";

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn a_client_secret_credential() {
        let p = parse(
            &data(&[(TENANT_ID_KEY, TENANT), (CLIENT_ID_KEY, &format!("{CLIENT}\n")), (CLIENT_SECRET_KEY, "s3cret\n")]),
            false,
        )
        .unwrap();
        assert_eq!((p.tenant_id.as_str(), p.client_id.as_str()), (TENANT, CLIENT), "trailing newlines are trimmed");
        assert_eq!(p.client_secret.as_ref().unwrap().secret(), "s3cret");
        assert!(!format!("{p:?}").contains("s3cret"));
        // A tenant may be named by its domain.
        assert!(parse(&data(&[(TENANT_ID_KEY, "contoso.onmicrosoft.com"), (CLIENT_ID_KEY, CLIENT)]), true).is_ok());
    }

    #[test]
    fn workload_identity_needs_the_operators_federated_token() {
        let wi = data(&[(TENANT_ID_KEY, TENANT), (CLIENT_ID_KEY, CLIENT)]);
        let p = parse(&wi, true).unwrap();
        assert!(p.client_secret.is_none());
        let err = parse(&wi, false).unwrap_err();
        assert!(err.contains("lacks AZURE_CLIENT_SECRET") && err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn malformed_secrets_say_which_key_and_never_the_secret() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(CLIENT_ID_KEY, CLIENT), (CLIENT_SECRET_KEY, "hunter2")], "lacks AZURE_TENANT_ID"),
            (&[(TENANT_ID_KEY, TENANT), (CLIENT_SECRET_KEY, "hunter2")], "lacks AZURE_CLIENT_ID"),
            (
                &[(TENANT_ID_KEY, " "), (CLIENT_ID_KEY, CLIENT), (CLIENT_SECRET_KEY, "hunter2")],
                "AZURE_TENANT_ID is empty",
            ),
            (
                &[(TENANT_ID_KEY, "not a tenant"), (CLIENT_ID_KEY, CLIENT), (CLIENT_SECRET_KEY, "hunter2")],
                "AZURE_TENANT_ID \"not a tenant\" is neither a GUID nor a domain name",
            ),
            (
                &[(TENANT_ID_KEY, TENANT), (CLIENT_ID_KEY, "my-app"), (CLIENT_SECRET_KEY, "hunter2")],
                "AZURE_CLIENT_ID \"my-app\" is not a GUID",
            ),
            (
                &[(TENANT_ID_KEY, TENANT), (CLIENT_ID_KEY, &CLIENT[..35]), (CLIENT_SECRET_KEY, "hunter2")],
                "is not a GUID",
            ),
            (
                &[(TENANT_ID_KEY, TENANT), (CLIENT_ID_KEY, CLIENT), (CLIENT_SECRET_KEY, "")],
                "AZURE_CLIENT_SECRET is empty",
            ),
        ];
        for (pairs, want) in cases {
            let err = parse(&data(pairs), true).unwrap_err();
            assert!(err.contains(want), "{pairs:?}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let mut bad = data(&[(TENANT_ID_KEY, TENANT), (CLIENT_ID_KEY, CLIENT)]);
        bad.insert(CLIENT_SECRET_KEY.into(), ByteString(vec![0xff, 0xfe]));
        assert_eq!(parse(&bad, true).unwrap_err(), "AZURE_CLIENT_SECRET is not UTF-8 text");
    }

    #[test]
    fn guids_and_domains() {
        assert!(is_guid(CLIENT) && is_guid(&CLIENT.to_uppercase()));
        assert!(!is_guid(&CLIENT.replace('-', "")) && !is_guid(&format!("{{{CLIENT}}}")));
        assert!(is_domain("contoso.onmicrosoft.com") && !is_domain("contoso") && !is_domain("-a.b"));
    }
}

//! The one HTTP client: TLS roots, loopback resolution, credentials, retries with backoff and `Retry-After`,
//! client-side rate limiting, observation, and the Key Vault challenge flow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use azure_core::credentials::{Secret, TokenCredential};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use url::Url;

use super::challenge::Challenge;
use super::config::{AzureConfig, CredentialChoice, Principal};
use super::error::{AuthError, AzureError, TokenRejection};
use super::ratelimit::{Access, ArmLimiter, TokenBucket, current_caller};

/// Receives one call per HTTP attempt (and per token request), e.g. for Prometheus metrics.
pub trait CallObserver: Send + Sync {
    /// `operation` like `caches.get`, `vaults.patch`, `keys.get`, `token`; `status` is `None` for transport errors.
    fn observe(&self, operation: &'static str, status: Option<u16>, elapsed: Duration);
}

/// The most of one response body the client reads. ARM and Key Vault answers (a cache, a vault, one page of a list)
/// are kilobytes; anything past this is a misbehaving proxy or server, and is refused rather than buffered.
pub(crate) const MAX_RESPONSE_BODY: usize = 16 << 20;

enum BodyError {
    Read(reqwest::Error),
    /// More than the limit arrived (or was announced by Content-Length): how many bytes were seen.
    TooLarge(u64),
}

/// Reads a response body, at most `limit` bytes: a body announced or found larger is refused without reading on.
async fn read_body(mut r: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = r.content_length()
        && len > limit as u64
    {
        return Err(BodyError::TooLarge(len));
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Longest single backoff step when the server gives no `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

pub(crate) enum Auth {
    /// Bearer token for the ARM audience.
    Arm,
    /// Bearer token for this scope.
    Scope(String),
    /// No Authorization header.
    None,
}

pub(crate) struct Call {
    pub op: &'static str,
    pub method: Method,
    pub url: Url,
    pub body: Option<Vec<u8>>,
    pub auth: Auth,
    pub limit: Option<(String, Access)>,
    /// Safe to resend after a 5xx or a transport error that may have reached the server.
    pub idempotent: bool,
}

pub(crate) struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub date: Option<jiff::Timestamp>,
    pub retry_after: Option<Duration>,
}

impl Resp {
    /// The body as `T`. Every ARM and Key Vault answer is a JSON object: anything else (`[]`, `null`, a number),
    /// which serde would otherwise read as a struct of defaults, is refused like any body that does not parse.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, AzureError> {
        let decode = |e: String| AzureError::Decode(format!("status {}: {e}", self.status));
        // An object is read straight into `T`: going through a `Value` first took several times the body's size
        // (a list page of 1000 caches is about 2 MB of JSON), which set the operator's peak memory.
        if self.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return serde_json::from_slice(&self.body).map_err(|e| decode(e.to_string()));
        }
        let value: serde_json::Value = serde_json::from_slice(&self.body).map_err(|e| decode(e.to_string()))?;
        if !value.is_object() {
            let kind = match value {
                serde_json::Value::Null => "null",
                serde_json::Value::Array(_) => "an array",
                _ => "a scalar",
            };
            return Err(decode(format!("expected a JSON object, got {kind}")));
        }
        serde_json::from_value(value).map_err(|e| decode(e.to_string()))
    }

    /// A 404 that Azure itself sent (its error JSON): the resource does not exist. A 404 without one comes from
    /// something in between (a proxy, a wrong route) and says nothing about the resource; taking it for absence
    /// would create a duplicate or drop a cache that still exists.
    pub fn absent(&self) -> bool {
        self.status == 404 && AzureError::is_azure_error_body(&self.body)
    }

    pub fn error(&self) -> AzureError {
        if self.status == 404 && !self.absent() {
            let text = String::from_utf8_lossy(&self.body);
            let snippet: String = text.trim().chars().take(200).collect();
            return AzureError::Decode(format!(
                "status 404 without an Azure error body (a proxy or a wrong endpoint?): {snippet:?}"
            ));
        }
        AzureError::from_response(self.status, &self.body, self.retry_after)
    }
}

/// Token source: one azure_identity credential, or (Auto without env hints) the first of several that works.
enum Cred {
    One(Arc<dyn TokenCredential>),
    Chain { sources: Vec<(&'static str, Arc<dyn TokenCredential>)>, chosen: AtomicUsize },
}

pub(crate) struct Inner {
    pub cfg: AzureConfig,
    pub http: reqwest::Client,
    cred: Cred,
    observer: Option<Arc<dyn CallObserver>>,
    /// Shared with every client made from this one ([`Inner::for_principal`]).
    limiter: Arc<ArmLimiter>,
    /// Who this client acts as, its partition of the limiter ([`AzureConfig::principal_key`]).
    principal: String,
    /// Key Vault challenges by `host:port`.
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Tokens by scope with their expiry (unix seconds), of this client's credential only. azure_identity caches
    /// too; this layer lets the observer count real token requests only.
    tokens: Mutex<HashMap<String, (Secret, i64)>>,
}

/// Fetch a new token when the cached one expires within this many seconds.
const TOKEN_REFRESH_MARGIN_SECS: i64 = 300;

struct LoopbackResolver;

impl reqwest::dns::Resolve for LoopbackResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        // Port 0 is replaced by the URL's port (or the scheme default).
        let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
        Box::pin(async move { Ok(addrs) })
    }
}

pub(crate) fn build_http_client(cfg: &AzureConfig) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(cfg.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hpc-cache-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing CA file {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "CA file {} holds no certificate", path.display());
        b = b.tls_certs_merge(certs);
    }
    if cfg.resolve_to_loopback {
        b = b.dns_resolver(Arc::new(LoopbackResolver)).no_proxy();
    }
    b.build().context("building the HTTP client")
}

fn build_credential(cfg: &AzureConfig, http: &reqwest::Client) -> anyhow::Result<Cred> {
    let client_options = || {
        let mut custom = azure_core::cloud::CustomConfiguration::default();
        custom.authority_host = cfg.cloud.authority_host.as_str().trim_end_matches('/').to_string();
        azure_core::http::ClientOptions {
            transport: Some(azure_core::http::Transport::new(Arc::new(http.clone()))),
            cloud: Some(Arc::new(custom.into())),
            // Token calls retry a little on their own; the operator requeues anyway.
            retry: azure_core::http::RetryOptions::exponential(azure_core::http::ExponentialRetryOptions {
                max_retries: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let tenant = || cfg.tenant_id.clone().context("AZURE_TENANT_ID is required for this credential");
    let client = || cfg.client_id.clone().context("AZURE_CLIENT_ID is required for this credential");
    let workload = || -> anyhow::Result<Arc<dyn TokenCredential>> {
        let file =
            cfg.federated_token_file.clone().context("AZURE_FEDERATED_TOKEN_FILE is required for workload identity")?;
        Ok(WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options: client_options() },
            client_id: Some(client()?),
            tenant_id: Some(tenant()?),
            token_file_path: Some(file),
        }))?)
    };
    let secret = || -> anyhow::Result<Arc<dyn TokenCredential>> {
        let s: Secret =
            cfg.client_secret.clone().context("AZURE_CLIENT_SECRET is required for the client-secret credential")?;
        Ok(ClientSecretCredential::new(
            &tenant()?,
            client()?,
            s,
            Some(ClientSecretCredentialOptions { client_options: client_options() }),
        )?)
    };
    let managed = || -> anyhow::Result<Arc<dyn TokenCredential>> {
        Ok(ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: cfg.client_id.clone().map(UserAssignedId::ClientId),
            client_options: client_options(),
        }))?)
    };
    let developer = || -> anyhow::Result<Arc<dyn TokenCredential>> { Ok(DeveloperToolsCredential::new(None)?) };
    Ok(match cfg.credential {
        CredentialChoice::WorkloadIdentity => Cred::One(workload()?),
        CredentialChoice::ClientSecret => Cred::One(secret()?),
        CredentialChoice::ManagedIdentity => Cred::One(managed()?),
        CredentialChoice::DeveloperTools => Cred::One(developer()?),
        CredentialChoice::Auto if cfg.federated_token_file.is_some() => Cred::One(workload()?),
        CredentialChoice::Auto if cfg.client_secret.is_some() => Cred::One(secret()?),
        CredentialChoice::Auto => {
            let mut sources = Vec::new();
            match managed() {
                Ok(c) => sources.push(("ManagedIdentityCredential", c)),
                Err(e) => tracing::debug!(error = %e, "managed identity unavailable"),
            }
            sources.push(("DeveloperToolsCredential", developer()?));
            Cred::Chain { sources, chosen: AtomicUsize::new(usize::MAX) }
        }
    })
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// HTTP dates (`Date`, `Retry-After`) are RFC 9110 IMF-fixdate, which RFC 2822 parsing accepts.
pub(crate) fn parse_http_date(s: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(s.trim()).ok()
}

/// `Retry-After` (seconds or HTTP date, relative to `date` or now), or Azure's `retry-after-ms` /
/// `x-ms-retry-after-ms`.
pub(crate) fn parse_retry_after(h: &HeaderMap, date: Option<jiff::Timestamp>) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = header_str(h, name).and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = header_str(h, "retry-after")?;
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs));
    }
    let at = parse_http_date(v)?;
    let now = date.unwrap_or_else(jiff::Timestamp::now);
    let d = at.duration_since(now);
    Some(if d.is_negative() { Duration::ZERO } else { d.unsigned_abs() })
}

/// Exponential backoff with full jitter in the upper half: base·2^attempt·[0.5, 1), capped.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(MAX_BACKOFF);
    let jitter: f64 = 0.5 + rand::random::<f64>() * 0.5;
    exp.mul_f64(jitter)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

/// Entra ID's refusal inside an azure_identity error: the token endpoint's 4xx answer (not 408/429) with its OAuth
/// error, found anywhere in the error's chain (credentials wrap one another, e.g. workload identity around a client
/// assertion).
fn token_rejection(e: &azure_core::Error) -> Option<TokenRejection> {
    use azure_core::error::ErrorKind;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    for _ in 0..16 {
        let err = current?;
        if let Some(ae) = err.downcast_ref::<azure_core::Error>()
            && let ErrorKind::HttpResponse { status, error_code, raw_response } = ae.kind()
        {
            let status = u16::from(*status);
            if !(400..500).contains(&status) || matches!(status, 408 | 429) {
                return None;
            }
            let error = raw_response
                .as_ref()
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(r.body()).ok())
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Some(TokenRejection { status, error, error_codes: error_code.clone() });
        }
        current = err.source();
    }
    None
}

fn origin(u: &Url) -> (String, Option<String>, Option<u16>) {
    (u.scheme().to_string(), u.host_str().map(str::to_ascii_lowercase), u.port_or_known_default())
}

impl Inner {
    pub fn new(cfg: AzureConfig, observer: Option<Arc<dyn CallObserver>>) -> anyhow::Result<Self> {
        let http = build_http_client(&cfg)?;
        let limiter = ArmLimiter::new(cfg.reads_per_second, cfg.read_burst, cfg.writes_per_second, cfg.write_burst);
        Self::with_parts(cfg, http, observer, Arc::new(limiter))
    }

    /// This client's bucket for `access` in `subscription` (shared with clients acting as the same principal).
    pub fn bucket(&self, subscription: &str, access: Access) -> Arc<TokenBucket> {
        self.limiter.bucket(&self.principal, subscription, access)
    }

    /// A client acting as `principal`: this one's HTTP client, observer and limiter (partitioned by principal), its
    /// own credential, tokens and Key Vault challenges.
    pub fn for_principal(&self, principal: &Principal) -> anyhow::Result<Self> {
        let cfg = self.cfg.for_principal(principal)?;
        Self::with_parts(cfg, self.http.clone(), self.observer.clone(), self.limiter.clone())
    }

    fn with_parts(
        cfg: AzureConfig,
        http: reqwest::Client,
        observer: Option<Arc<dyn CallObserver>>,
        limiter: Arc<ArmLimiter>,
    ) -> anyhow::Result<Self> {
        let cred = build_credential(&cfg, &http)?;
        let principal = cfg.principal_key();
        Ok(Self {
            cfg,
            http,
            cred,
            observer,
            limiter,
            principal,
            challenges: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn observe(&self, op: &'static str, status: Option<u16>, elapsed: Duration) {
        if let Some(o) = &self.observer {
            o.observe(op, status, elapsed);
        }
    }

    /// A bearer token for `scope` (cached and refreshed by azure_identity).
    pub async fn token(&self, scope: &str) -> Result<Secret, AzureError> {
        let now = jiff::Timestamp::now().as_second();
        if let Some((t, exp)) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(scope)
            && *exp - now > TOKEN_REFRESH_MARGIN_SECS
        {
            return Ok(t.clone());
        }
        let start = Instant::now();
        let result = match &self.cred {
            Cred::One(c) => c.get_token(&[scope], None).await.map_err(|e| (e.to_string(), token_rejection(&e))),
            Cred::Chain { sources, chosen } => {
                let idx = chosen.load(Ordering::Relaxed);
                if let Some((_, c)) = sources.get(idx) {
                    c.get_token(&[scope], None).await.map_err(|e| (e.to_string(), None))
                } else {
                    let mut errors = Vec::new();
                    let mut found = None;
                    for (i, (name, c)) in sources.iter().enumerate() {
                        match c.get_token(&[scope], None).await {
                            Ok(t) => {
                                tracing::info!(credential = name, "using Azure credential");
                                chosen.store(i, Ordering::Relaxed);
                                found = Some(t);
                                break;
                            }
                            Err(e) => errors.push(format!("{name}: {e}")),
                        }
                    }
                    found.ok_or_else(|| (errors.join("; "), None))
                }
            }
        };
        self.observe("token", result.as_ref().ok().map(|_| 200), start.elapsed());
        let t = result.map_err(|(e, rejection)| {
            let message = format!("token for {scope}: {e}");
            AzureError::Auth(match rejection {
                Some(r) => AuthError::rejected(message, r),
                None => message.into(),
            })
        })?;
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.to_string(), (t.token.clone(), t.expires_on.unix_timestamp()));
        Ok(t.token)
    }

    /// A `nextLink` may only point where the first request went (so tokens never leave for another host).
    pub fn same_origin_link(&self, link: &str, base: &Url) -> Result<Url, AzureError> {
        let u = Url::parse(link).map_err(|e| AzureError::Decode(format!("bad nextLink {link:?}: {e}")))?;
        if origin(&u) != origin(base) {
            return Err(AzureError::Decode(format!("refusing nextLink to another origin: {link}")));
        }
        Ok(u)
    }

    /// Send with rate limiting, retries and observation. Returns every final response (the caller maps statuses),
    /// except a 429 that could not be waited out, which becomes [`AzureError::Throttled`].
    pub async fn send(&self, req: Call) -> Result<Resp, AzureError> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let bucket = req.limit.as_ref().map(|(sub, access)| (self.bucket(sub, *access), *access));
        let body = req.body;
        let mut slept = Duration::ZERO;
        let mut attempt: u32 = 0;
        // Inside a reconcile, waits (for a token, or after a 429) are the controller's to schedule, not ours.
        let caller = current_caller();
        loop {
            if let Some((b, access)) = &bucket {
                match &caller {
                    Some(c) => b
                        .take(c, tokio::time::Instant::now())
                        .map_err(|after| AzureError::Deferred { after, access: *access })?,
                    None if crate::ratelimit::is_patient() => b.acquire_ahead().await,
                    None => b.acquire().await,
                }
            }
            let token = match &req.auth {
                Auth::Arm => Some(self.token(&self.cfg.cloud.arm_scope()).await?),
                Auth::Scope(s) => Some(self.token(s).await?),
                Auth::None => None,
            };
            let mut rb = self
                .http
                .request(req.method.clone(), req.url.clone())
                .header("x-ms-client-request-id", &client_request_id)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(t) = &token {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", t.secret()))
                    .map_err(|_| AzureError::Auth("token is not a valid header value".into()))?;
                v.set_sensitive(true);
                rb = rb.header(reqwest::header::AUTHORIZATION, v);
            }
            if let Some(b) = &body {
                rb = rb.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.clone());
            }
            let start = Instant::now();
            let sent = rb.send().await;
            let resp = match sent {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    match read_body(r, MAX_RESPONSE_BODY).await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(BodyError::Read(e)) => Err((error_chain(&e), false)),
                        Err(BodyError::TooLarge(read)) => {
                            self.observe(req.op, Some(status), start.elapsed());
                            // Not resent: a second copy would be as large. The reconcile tries again later.
                            return Err(AzureError::Decode(format!(
                                "{} {}: status {status}: the response body is larger than the {} MiB this client \
                                 reads ({read} bytes and more); it was not read",
                                req.method,
                                req.url.path(),
                                MAX_RESPONSE_BODY >> 20
                            )));
                        }
                    }
                }
                Err(e) => Err((error_chain(&e), e.is_connect())),
            };
            let elapsed = start.elapsed();
            match resp {
                Ok((status, headers, body)) => {
                    self.observe(req.op, Some(status), elapsed);
                    tracing::debug!(
                        op = req.op,
                        method = %req.method,
                        path = req.url.path(),
                        status,
                        attempt,
                        elapsed_ms = elapsed.as_millis() as u64,
                        client_request_id = %client_request_id,
                        request_id = header_str(&headers, "x-ms-request-id").unwrap_or(""),
                        "azure call"
                    );
                    if let Some((b, access)) = &bucket {
                        let name = match (access, &req.method) {
                            (Access::Read, _) => "x-ms-ratelimit-remaining-subscription-reads",
                            (_, m) if *m == Method::DELETE => "x-ms-ratelimit-remaining-subscription-deletes",
                            _ => "x-ms-ratelimit-remaining-subscription-writes",
                        };
                        if let Some(n) = header_str(&headers, name).and_then(|v| v.parse::<u64>().ok()) {
                            b.observe_remaining(n);
                        }
                    }
                    let date = header_str(&headers, "date").and_then(parse_http_date);
                    let retry_after = parse_retry_after(&headers, date);
                    let resp = Resp { status, headers, body, date, retry_after };
                    // The one classifier decides whether an error answer is worth sending again.
                    if status < 400 || !AzureError::from_response(status, &resp.body, retry_after).is_retryable() {
                        return Ok(resp);
                    }
                    // 429 means the request was not processed: always safe to resend.
                    let may_retry = if status == 429 { caller.is_none() } else { req.idempotent };
                    let delay = retry_after.unwrap_or_else(|| backoff(self.cfg.retry_base_delay, attempt));
                    if !may_retry || attempt >= self.cfg.max_retries || slept + delay > self.cfg.max_retry_wait {
                        tracing::debug!(op = req.op, status, attempt, "giving up on retryable status");
                        if status == 429 {
                            return Err(AzureError::Throttled { retry_after: delay });
                        }
                        // A 408/5xx says nothing about when to come back: suggest the backoff. A transient
                        // conflict (409 ConflictError, AnotherOperationInProgress) keeps only what Azure said, so
                        // the reconcile falls back to its poll interval.
                        let suggested = if status == 408 || status >= 500 { Some(delay) } else { resp.retry_after };
                        return Ok(Resp { retry_after: suggested, ..resp });
                    }
                    tracing::debug!(op = req.op, status, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                    slept += delay;
                }
                Err((msg, not_sent)) => {
                    self.observe(req.op, None, elapsed);
                    tracing::debug!(op = req.op, method = %req.method, path = req.url.path(), attempt, error = %msg, "azure call failed");
                    let delay = backoff(self.cfg.retry_base_delay, attempt);
                    if !(req.idempotent || not_sent)
                        || attempt >= self.cfg.max_retries
                        || slept + delay > self.cfg.max_retry_wait
                    {
                        return Err(AzureError::Transport(format!("{} {}: {msg}", req.method, req.url.path())));
                    }
                    tokio::time::sleep(delay).await;
                    slept += delay;
                }
            }
            attempt += 1;
        }
    }

    fn challenge_key(url: &Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default().to_ascii_lowercase(),
            url.port_or_known_default().unwrap_or(443)
        )
    }

    /// Key Vault data-plane GET with the Bearer challenge flow: the first call to a host goes without a token; the
    /// 401 challenge is verified against the cloud's Key Vault DNS suffix, cached per host, and the call is repeated
    /// with a token for the challenge's resource.
    pub async fn send_keyvault(&self, op: &'static str, url: Url) -> Result<Resp, AzureError> {
        let host = url.host_str().unwrap_or_default().to_string();
        let suffix = format!(".{}", self.cfg.cloud.keyvault_dns_suffix.trim_start_matches('.'));
        if !host.to_ascii_lowercase().ends_with(&suffix.to_ascii_lowercase()) || url.scheme() != "https" {
            return Err(AzureError::Auth(
                format!("refusing to call {host}: Key Vault hosts must be https://*{suffix}").into(),
            ));
        }
        let key = Self::challenge_key(&url);
        let cached = self.challenges.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let req =
            |auth| Call { op, method: Method::GET, url: url.clone(), body: None, auth, limit: None, idempotent: true };
        let first_auth = match cached.as_ref().and_then(Challenge::token_scope) {
            Some(scope) => Auth::Scope(scope),
            None => Auth::None,
        };
        let resp = self.send(req(first_auth)).await?;
        if resp.status != 401 {
            return Ok(resp);
        }
        let Some(challenge) = header_str(&resp.headers, "www-authenticate").and_then(Challenge::parse) else {
            return Ok(resp);
        };
        challenge.verify(&host, &self.cfg.cloud).map_err(|e| AzureError::Auth(e.into()))?;
        if cached.as_ref() == Some(&challenge) {
            // We sent a token for exactly this challenge and it was refused.
            return Ok(resp);
        }
        if let (Some(t), Some(ours)) = (challenge.tenant_id(), &self.cfg.tenant_id)
            && !t.eq_ignore_ascii_case(ours)
        {
            tracing::debug!(challenge_tenant = %t, "Key Vault challenge names another tenant than the credential's");
        }
        let scope = challenge.token_scope().ok_or_else(|| AzureError::Auth("challenge without resource".into()))?;
        self.challenges.lock().unwrap_or_else(|e| e.into_inner()).insert(key, challenge);
        self.send(req(Auth::Scope(scope))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_and_retry_after() {
        let d = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(d.to_string(), "1994-11-06T08:49:37Z");
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("17"));
        assert_eq!(parse_retry_after(&h, None), Some(Duration::from_secs(17)));
        h.insert("retry-after", HeaderValue::from_static("Sun, 06 Nov 1994 08:50:07 GMT"));
        assert_eq!(parse_retry_after(&h, Some(d)), Some(Duration::from_secs(30)));
        h.insert("retry-after", HeaderValue::from_static("Sun, 06 Nov 1994 08:49:07 GMT"));
        assert_eq!(parse_retry_after(&h, Some(d)), Some(Duration::ZERO));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&h, Some(d)), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after(&HeaderMap::new(), None), None);
        let mut bad = HeaderMap::new();
        bad.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&bad, None), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let base = Duration::from_millis(100);
        for attempt in 0..4 {
            let full = base * (1 << attempt);
            for _ in 0..50 {
                let d = backoff(base, attempt);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        assert!(backoff(base, 30) <= MAX_BACKOFF);
    }
}

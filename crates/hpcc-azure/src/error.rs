//! Errors from the Azure layer.

use std::time::Duration;

use super::ratelimit::Access;

/// An Azure call failed.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// Azure answered with an error status (body parsed from ARM `CloudError` or Key Vault `KeyVaultError`).
    #[error("Azure returned {status} {code}: {message}")]
    Api { status: u16, code: String, message: String, retry_after: Option<Duration> },
    /// Throttled (429) beyond what the client will wait for inside one call; try again after `retry_after`.
    #[error("throttled by Azure; retry after {}s", retry_after.as_secs_f64())]
    Throttled { retry_after: Duration },
    /// Not sent: the client-side ARM budget (`access`: reads or writes) has no token for this caller yet (see
    /// [`with_caller`](crate::with_caller)); call again after `after`, when its reserved token is due.
    #[error("deferred by the client-side ARM {access:?} budget for {}s", after.as_secs_f64())]
    Deferred { after: Duration, access: Access },
    /// No token could be obtained, or a Key Vault challenge was refused. When Entra ID itself refused the
    /// credential, [`AzureError::token_rejection`] says how.
    #[error("authentication failed: {0}")]
    Auth(AuthError),
    /// Connection, TLS or timeout failure.
    #[error("transport error: {0}")]
    Transport(String),
    /// The response body was not what the spec says.
    #[error("could not decode Azure response: {0}")]
    Decode(String),
    /// What the spec asks for cannot be sent (e.g. an ARM id that does not parse); nothing was sent to Azure.
    #[error("invalid input: {0}")]
    Input(String),
}

/// Why no token could be had (or a Key Vault challenge was refused): a message, and Entra ID's refusal when it
/// answered the token request with one. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    message: String,
    rejection: Option<TokenRejection>,
}

impl AuthError {
    /// Entra ID refused the credential (`rejection`); `message` says what was asked for.
    pub fn rejected(message: impl Into<String>, rejection: TokenRejection) -> Self {
        Self { message: message.into(), rejection: Some(rejection) }
    }
}

impl From<String> for AuthError {
    fn from(message: String) -> Self {
        Self { message, rejection: None }
    }
}

impl From<&str> for AuthError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Entra ID answered a token request with a refusal: the credential itself is wrong (a bad or expired client
/// secret, an unknown application or tenant, a federated token no federated credential trusts), not the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRejection {
    /// HTTP status of the token endpoint's answer (400 or 401).
    pub status: u16,
    /// The OAuth error: `invalid_client`, `unauthorized_client`, `invalid_tenant`, `invalid_request`, …
    pub error: String,
    /// Entra's AADSTS error codes (`7000215` for an invalid client secret), comma-separated; None when absent.
    pub error_codes: Option<String>,
}

impl TokenRejection {
    /// `invalid_client (AADSTS7000215)`, or the OAuth error alone.
    pub fn code(&self) -> String {
        match &self.error_codes {
            Some(codes) => {
                let aadsts: Vec<String> = codes.split(',').map(|c| format!("AADSTS{}", c.trim())).collect();
                format!("{} ({})", self.error, aadsts.join(", "))
            }
            None => self.error.clone(),
        }
    }
}

/// What to do about a failed call. [`AzureError::classify`] is the one place that decides it; the in-call retries
/// of the HTTP client, the reconcile's requeue and the state machine all use its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The same call may succeed later without any change; wait `after` when Azure said how long.
    Retryable { after: Option<Duration> },
    /// Only a change (of the spec, of Azure's configuration, by a person) can help.
    Fatal,
}

/// Error codes Azure uses for conflicts that clear by themselves.
const TRANSIENT_CODES: &[&str] = &[
    "RetryableErrorDueToAnotherOperation",
    "AnotherOperationInProgress",
    "OperationNotAllowedDueToAnotherOperation",
    // A new principal not yet replicated in Entra (role assignments right after an identity was made).
    "PrincipalNotFound",
    // Key Vault: 409 "... the Key Vault changed from the point the operation began ... serialize the operations"
    // (bodies in Azure/AzureKeyVault#6 and scylladb/scylla-cluster-tests#13184; Key Vault's common error codes:
    // "You're requesting multiple operations on same item"). The write did not happen; sending it again works.
    "ConflictError",
];

impl AzureError {
    /// The Azure error code (`error.code`), for [`AzureError::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            AzureError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Entra ID's refusal of the credential, when no token could be had because of one.
    pub fn token_rejection(&self) -> Option<&TokenRejection> {
        match self {
            AzureError::Auth(a) => a.rejection.as_ref(),
            _ => None,
        }
    }

    /// The HTTP status, for [`AzureError::Api`] (and 429 for [`AzureError::Throttled`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Api { status, .. } => Some(*status),
            AzureError::Throttled { .. } => Some(429),
            _ => None,
        }
    }

    /// Retryable: throttling, 408/5xx, self-clearing conflicts, and every failure without an answer from Azure
    /// (transport, token, an unreadable body: nothing was refused). Fatal: 4xx refusals (bad request, forbidden, not
    /// found, the retirement 409) and input that cannot be sent.
    pub fn classify(&self) -> ErrorClass {
        let retry = |after| ErrorClass::Retryable { after };
        match self {
            AzureError::Throttled { retry_after } => retry(Some(*retry_after)),
            AzureError::Deferred { after, .. } => retry(Some(*after)),
            AzureError::Transport(_) | AzureError::Auth(_) | AzureError::Decode(_) => retry(None),
            AzureError::Api { status, code, retry_after, .. } => {
                if retryable_status(*status) || TRANSIENT_CODES.iter().any(|c| c.eq_ignore_ascii_case(code)) {
                    retry(*retry_after)
                } else {
                    ErrorClass::Fatal
                }
            }
            AzureError::Input(_) => ErrorClass::Fatal,
        }
    }

    /// Shorthand for [`AzureError::classify`] being retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self.classify(), ErrorClass::Retryable { .. })
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Build from an error response: parses `{"error":{"code","message"}}` (ARM and Key Vault); falls back to the
    /// status text when the body is not JSON.
    pub(crate) fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let (code, message) = parse_error_body(body).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let reason = http_reason(status).to_string();
            let message = if text.is_empty() { reason.clone() } else { truncate(text, 500) };
            (reason.replace(' ', ""), message)
        });
        AzureError::Api { status, code, message, retry_after }
    }
}

impl AzureError {
    /// Whether `body` is an error as ARM, Key Vault or Entra ID write it (`{"error": ...}`).
    pub(crate) fn is_azure_error_body(body: &[u8]) -> bool {
        parse_error_body(body).is_some()
    }
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    // Entra token errors are `{"error": "invalid_client", "error_description": ...}`.
    if let Some(code) = err.as_str() {
        let msg = v.get("error_description").and_then(|m| m.as_str()).unwrap_or_default();
        return Some((truncate(code, MAX_CODE), truncate(msg, MAX_MESSAGE)));
    }
    // Cut to a size that fits a condition message: the text ends up in the object's status, which the apiserver
    // refuses beyond its request limit, so an enormous message would block every status write.
    let code = truncate(err.get("code").and_then(|c| c.as_str()).unwrap_or("Unknown"), MAX_CODE);
    let mut message = truncate(err.get("message").and_then(|m| m.as_str()).unwrap_or_default(), MAX_MESSAGE);
    if let Some(inner) = err.get("innererror").and_then(|i| i.get("code")).and_then(|c| c.as_str()) {
        message = format!("{message} (innererror: {})", truncate(inner, MAX_CODE));
    }
    Some((code, message))
}

/// The longest error code and message (in bytes) kept from an error body.
const MAX_CODE: usize = 200;
const MAX_MESSAGE: usize = 2000;

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn http_reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arm_error() {
        let e = AzureError::from_response(
            404,
            br#"{"error":{"code":"ResourceNotFound","message":"The Resource 'x' was not found."}}"#,
            None,
        );
        assert_eq!(e.code(), Some("ResourceNotFound"));
        assert_eq!(e.status(), Some(404));
        assert!(e.is_not_found());
        assert!(!e.is_retryable());
    }

    #[test]
    fn parses_keyvault_error_with_innererror() {
        let e = AzureError::from_response(
            403,
            br#"{"error":{"code":"Forbidden","message":"Caller is not authorized","innererror":{"code":"ForbiddenByRbac"}}}"#,
            None,
        );
        assert_eq!(e.code(), Some("Forbidden"));
        assert!(e.to_string().contains("ForbiddenByRbac"));
    }

    #[test]
    fn non_json_and_entra_bodies() {
        let e = AzureError::from_response(502, b"<html>bad gateway</html>", None);
        assert_eq!(e.code(), Some("BadGateway"));
        assert!(e.is_retryable());
        let e =
            AzureError::from_response(400, br#"{"error":"invalid_client","error_description":"AADSTS7000215"}"#, None);
        assert_eq!(e.code(), Some("invalid_client"));
    }

    #[test]
    fn retryability() {
        let throttled = AzureError::Throttled { retry_after: Duration::from_secs(30) };
        assert!(throttled.is_retryable());
        assert_eq!(throttled.classify(), ErrorClass::Retryable { after: Some(Duration::from_secs(30)) });
        assert_eq!(throttled.status(), Some(429));
        let retired = AzureError::from_response(
            409,
            br#"{"error":{"code":"OperationNotAllowed","message":"Unable to create HPC Cache due to product retirement"}}"#,
            None,
        );
        assert!(!retired.is_retryable());
        let busy = AzureError::from_response(
            409,
            br#"{"error":{"code":"AnotherOperationInProgress","message":"busy"}}"#,
            None,
        );
        assert!(busy.is_retryable());
        assert!(AzureError::Transport("reset".into()).is_retryable());
        assert!(AzureError::Auth("token endpoint down".into()).is_retryable(), "no answer from Azure: nothing refused");
        assert!(AzureError::Decode("truncated".into()).is_retryable());
        assert_eq!(AzureError::Input("bad id".into()).classify(), ErrorClass::Fatal);
        assert_eq!(
            AzureError::from_response(503, b"", Some(Duration::from_secs(7))).classify(),
            ErrorClass::Retryable { after: Some(Duration::from_secs(7)) }
        );
    }

    #[test]
    fn key_vault_conflict_error_is_retryable() {
        // The body Key Vault sends when two writes to one vault overlap (Azure/AzureKeyVault#6).
        let conflict = AzureError::from_response(
            409,
            br#"{"error":{"code":"ConflictError","message":"A conflict occurred that prevented the operation from completing. The operation failed because the Key Vault 'kv' changed from the point the operation began. This can happen if parallel operations are being performed on the Key Vault. To prevent this error, serialize the operations so that only one operation is performed on the Key Vault at a time."}}"#,
            None,
        );
        assert!(conflict.is_retryable());
    }
}

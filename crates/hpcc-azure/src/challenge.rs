//! Key Vault's `WWW-Authenticate: Bearer authorization="…", resource="…"` challenge.
//!
//! Key Vault clients send the first request without a token, read the challenge from the 401, get a token for the
//! resource it names and retry. Before sending a token anywhere the client verifies that the vault host really is a
//! Key Vault host of the configured cloud, so a crafted key URL cannot harvest tokens.

use url::Url;

use super::config::{CloudConfig, scope_for};

/// A parsed Bearer challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `authorization=` / `authorization_uri=`: the authority, e.g. `https://login.windows.net/{tenant}`.
    pub authorization: Option<String>,
    /// `resource=`: the token audience, e.g. `https://vault.azure.net`.
    pub resource: Option<String>,
    /// `scope=`: newer services send the scope directly.
    pub scope: Option<String>,
}

impl Challenge {
    /// Parse a `WWW-Authenticate` value; `None` without a Bearer challenge naming a resource or scope.
    pub fn parse(header: &str) -> Option<Self> {
        let mut rest = header.trim();
        // Find the Bearer scheme (there may be several challenges in one header).
        loop {
            let (scheme, after) = match rest.find(char::is_whitespace) {
                Some(i) => (&rest[..i], rest[i..].trim_start()),
                None => (rest, ""),
            };
            if scheme.eq_ignore_ascii_case("bearer") {
                rest = after;
                break;
            }
            // Skip to the next comma-separated token that could start another scheme.
            let i = after.find(',')?;
            rest = after[i + 1..].trim_start();
        }
        let params = parse_params(rest);
        let get = |names: &[&str]| {
            params.iter().find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n))).map(|(_, v)| v.clone())
        };
        let c = Challenge {
            authorization: get(&["authorization", "authorization_uri"]),
            resource: get(&["resource", "resource_id"]),
            scope: get(&["scope"]),
        };
        (c.resource.is_some() || c.scope.is_some()).then_some(c)
    }

    /// The token scope: `scope=` if given, else `{resource}/.default`.
    pub fn token_scope(&self) -> Option<String> {
        match (&self.scope, &self.resource) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(r)) => Some(scope_for(r)),
            _ => None,
        }
    }

    /// Tenant id from the authority URL (its first path segment).
    pub fn tenant_id(&self) -> Option<String> {
        let u = Url::parse(self.authorization.as_deref()?).ok()?;
        u.path_segments()?.find(|s| !s.is_empty()).map(str::to_string)
    }

    /// Check that a token for this challenge may be sent to `host`: the host must be a Key Vault host of the cloud
    /// (`*.{keyvault_dns_suffix}`), and the requested resource must be the cloud's Key Vault audience or a parent
    /// domain of the host (the rule the Azure SDKs apply).
    pub fn verify(&self, host: &str, cloud: &CloudConfig) -> Result<(), String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let suffix = format!(".{}", cloud.keyvault_dns_suffix.trim_start_matches('.').to_ascii_lowercase());
        if !host.ends_with(&suffix) || host.len() == suffix.len() {
            return Err(format!("refusing to authenticate to {host}: not a Key Vault host (*{suffix})"));
        }
        let scope = self.token_scope().ok_or("challenge names no resource")?;
        let resource = scope.trim_end_matches("/.default");
        let resource_host = Url::parse(resource)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .ok_or_else(|| format!("challenge resource {resource:?} is not a URL"))?;
        let audience_host =
            Url::parse(&cloud.keyvault_audience).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        if audience_host.as_deref() == Some(resource_host.as_str()) || host.ends_with(&format!(".{resource_host}")) {
            Ok(())
        } else {
            Err(format!("challenge resource {resource} does not match the Key Vault host {host}"))
        }
    }
}

/// `key="value", key2=value2` → pairs (quoted values may contain commas; `\"` escapes).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            // A bare token: the start of another scheme. Stop.
            break;
        }
        chars.next();
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &str = r#"Bearer authorization="https://login.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net""#;

    #[test]
    fn parses_recorded_challenge() {
        let c = Challenge::parse(RECORDED).unwrap();
        assert_eq!(c.authorization.as_deref(), Some("https://login.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert_eq!(c.resource.as_deref(), Some("https://vault.azure.net"));
        assert_eq!(c.token_scope().as_deref(), Some("https://vault.azure.net/.default"));
        assert_eq!(c.tenant_id().as_deref(), Some("72f988bf-86f1-41af-91ab-2d7cd011db47"));
    }

    #[test]
    fn parses_variants() {
        let c = Challenge::parse(r#"bearer authorization_uri="https://login.microsoftonline.com/t1",scope="https://vault.azure.net/.default""#)
            .unwrap();
        assert_eq!(c.token_scope().as_deref(), Some("https://vault.azure.net/.default"));
        assert_eq!(c.tenant_id().as_deref(), Some("t1"));
        let c = Challenge::parse(
            r#"PoP nonce="abc", Bearer authorization=https://login.windows.net/t2, resource=https://vault.azure.net/"#,
        )
        .unwrap();
        assert_eq!(c.token_scope().as_deref(), Some("https://vault.azure.net/.default"));
        assert_eq!(c.tenant_id().as_deref(), Some("t2"));
        assert!(Challenge::parse("Basic realm=\"x\"").is_none());
        assert!(Challenge::parse("Bearer authorization=\"https://login.windows.net/t\"").is_none());
        assert!(Challenge::parse("").is_none());
    }

    #[test]
    fn verification() {
        let cloud = CloudConfig::public();
        let c = Challenge::parse(RECORDED).unwrap();
        assert!(c.verify("kv-cmk.vault.azure.net", &cloud).is_ok());
        assert!(c.verify("KV-CMK.Vault.Azure.Net", &cloud).is_ok());
        assert!(c.verify("vault.azure.net", &cloud).is_err());
        assert!(c.verify("evil.example.com", &cloud).is_err());
        assert!(c.verify("kv.vault.azure.net.evil.com", &cloud).is_err());
        assert!(c.verify("kvvault.azure.net", &cloud).is_err());
        // A Key Vault host asking for some other audience is refused.
        let arm = Challenge::parse(
            r#"Bearer authorization="https://login.windows.net/t", resource="https://management.azure.com""#,
        )
        .unwrap();
        assert!(arm.verify("kv.vault.azure.net", &cloud).is_err());
        // Sovereign cloud: the public suffix is not accepted.
        assert!(c.verify("kv.vault.azure.net", &CloudConfig::china()).is_err());
    }
}

//! Fault injection: per-route latency, 429 + `Retry-After`, error statuses and dropped connections.

use std::time::Duration;

use axum::http::StatusCode;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::state::vault_of_scope;
use super::wire::{Out, Req, key_vault_conflict};

/// One rule (admin `POST /faults`). `route` matches `"METHOD /path"` as a substring or, when it compiles, a regex.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    pub route: String,
    /// `latency`, `throttle`, `error` or `drop`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// 0..1, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// How many more times the rule fires (unlimited when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `error`/`throttle`: the error `code` of the ARM / Key Vault body (`{"error": {"code", "message"}}`), e.g.
    /// `ConflictError`, `KeyOperationForbidden`'s outer `Forbidden`. Default: by status (`InternalServerError`, …)
    /// or `SubscriptionRequestsThrottled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The error `message`. Default: `ConflictError` gets Key Vault's real text (with the vault of the path),
    /// anything else "Injected fault.".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Key Vault's `error.innererror.code` (e.g. `KeyOperationForbidden`, `ForbiddenByRbac`); absent by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_code: Option<String>,
    #[serde(skip)]
    pub regex: Option<regex::Regex>,
}

impl FaultRule {
    pub fn validate(mut self) -> Result<FaultRule, String> {
        if !["latency", "throttle", "error", "drop"].contains(&self.kind.as_str()) {
            return Err(format!("unknown fault kind '{}': use latency, throttle, error or drop", self.kind));
        }
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err("probability must be within 0..1".into());
        }
        if let Some(s) = self.status
            && StatusCode::from_u16(s).is_err()
        {
            return Err(format!("invalid status {s}"));
        }
        self.regex = regex::RegexBuilder::new(&self.route).case_insensitive(true).build().ok();
        Ok(self)
    }

    pub fn matches(&self, target: &str) -> bool {
        target.to_ascii_lowercase().contains(&self.route.to_ascii_lowercase())
            || self.regex.as_ref().is_some_and(|r| r.is_match(target))
    }
}

pub enum FaultEffect {
    None,
    Delay(Duration),
    Respond(Out),
}

/// What the fault rules say about this request (first firing rule wins; it uses up one of its `count`).
pub fn check(rules: &mut [FaultRule], r: &Req) -> FaultEffect {
    let target = format!("{} {}", r.method, r.path);
    let mut fired = None;
    for rule in rules.iter_mut() {
        if rule.count == Some(0) || !rule.matches(&target) {
            continue;
        }
        if let Some(p) = rule.probability
            && rand::rng().random::<f64>() >= p
        {
            continue;
        }
        if let Some(c) = rule.count.as_mut() {
            *c -= 1;
        }
        fired = Some(rule.clone());
        break;
    }
    let Some(rule) = fired else {
        return FaultEffect::None;
    };
    match rule.kind.as_str() {
        "latency" => FaultEffect::Delay(Duration::from_millis(rule.latency_ms.unwrap_or(1000))),
        "throttle" => {
            let retry = rule.retry_after_seconds.unwrap_or(10);
            let status = StatusCode::from_u16(rule.status.unwrap_or(429)).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            let message = rule.message.clone().unwrap_or_else(|| {
                format!(
                    "Number of requests exceeded the limit (injected fault). Please try again after '{retry}' seconds."
                )
            });
            let code = rule.code.as_deref().unwrap_or("SubscriptionRequestsThrottled");
            FaultEffect::Respond(
                with_inner(Out::arm_error(status, code, message), &rule).with_header("retry-after", retry.to_string()),
            )
        }
        "drop" => {
            let mut o = Out::empty(StatusCode::OK);
            o.drop = true;
            FaultEffect::Respond(o)
        }
        _ => {
            let status = StatusCode::from_u16(rule.status.unwrap_or(500)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = rule.code.clone().unwrap_or_else(|| {
                match status.as_u16() {
                    500 => "InternalServerError",
                    502 => "BadGateway",
                    503 => "ServiceUnavailable",
                    504 => "GatewayTimeout",
                    409 => "Conflict",
                    _ => "InjectedFault",
                }
                .to_string()
            });
            let mut o = match (&rule.message, code.as_str()) {
                (Some(m), _) => Out::arm_error(status, &code, m.clone()),
                // Key Vault's real ConflictError text, naming the vault the path is about
                (None, "ConflictError") => {
                    let vault = vault_of_scope(&r.path).or_else(|| r.host.split('.').next().map(str::to_string));
                    let mut c = key_vault_conflict(&vault.unwrap_or_default());
                    c.status = status;
                    c
                }
                (None, _) => Out::arm_error(status, &code, "Injected fault."),
            };
            o = with_inner(o, &rule);
            if let Some(s) = rule.retry_after_seconds {
                o = o.with_header("retry-after", s.to_string());
            }
            FaultEffect::Respond(o)
        }
    }
}

/// Adds `innererror.code` (Key Vault's error shape) when the rule names one.
fn with_inner(mut o: Out, rule: &FaultRule) -> Out {
    if let (Some(inner), Some(body)) = (&rule.inner_code, o.body.as_mut()) {
        body["error"]["innererror"] = serde_json::json!({"code": inner});
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_matching() {
        let r: FaultRule = serde_json::from_str::<FaultRule>(r#"{"route": "PUT .*/caches/", "kind": "error"}"#)
            .unwrap()
            .validate()
            .unwrap();
        assert!(r.matches("PUT /subscriptions/s/resourceGroups/rg/providers/Microsoft.StorageCache/caches/c"));
        assert!(!r.matches("GET /subscriptions/s/resourceGroups/rg/providers/Microsoft.StorageCache/caches/c"));
        let s: FaultRule =
            serde_json::from_str::<FaultRule>(r#"{"route": "/caches/", "kind": "drop"}"#).unwrap().validate().unwrap();
        assert!(s.matches("GET /x/caches/c"));
        assert!(serde_json::from_str::<FaultRule>(r#"{"route": "x", "kind": "explode"}"#).unwrap().validate().is_err());
    }

    fn req(method: &str, host: &str, path: &str) -> Req {
        Req {
            method: method.parse().unwrap(),
            host: host.into(),
            host_port: host.into(),
            path: path.into(),
            query: String::new(),
            params: vec![],
            headers: Default::default(),
            body: Default::default(),
        }
    }

    fn respond(rule: &str, r: &Req) -> Out {
        let rule: FaultRule = serde_json::from_str::<FaultRule>(rule).unwrap().validate().unwrap();
        match check(&mut [rule], r) {
            FaultEffect::Respond(o) => o,
            _ => panic!("the rule responds"),
        }
    }

    #[test]
    fn error_rules_take_code_message_and_inner_code() {
        let r = req(
            "PUT",
            "127.0.0.1",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1/accessPolicies/add",
        );
        // ConflictError without a message: Key Vault's real text with the vault's name
        let o = respond(r#"{"route": "accessPolicies", "kind": "error", "status": 409, "code": "ConflictError"}"#, &r);
        assert_eq!(o.status, StatusCode::CONFLICT);
        let b = o.body.unwrap();
        assert_eq!(b["error"]["code"], "ConflictError");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the Key Vault 'kv1' changed from the point the operation began")
        );
        let o = respond(
            r#"{"route": "/keys/", "kind": "error", "status": 403, "code": "Forbidden", "message": "Operation wrapKey is not permitted on this key.", "innerCode": "KeyOperationForbidden"}"#,
            &req("POST", "kv1.vault.localhost", "/keys/k/v/wrapkey"),
        );
        let b = o.body.unwrap();
        assert_eq!(
            b,
            serde_json::json!({"error": {"code": "Forbidden", "message": "Operation wrapKey is not permitted on this key.", "innererror": {"code": "KeyOperationForbidden"}}})
        );
        // the old fields keep working: status → code, default message
        let o = respond(r#"{"route": "PUT", "kind": "error", "status": 503}"#, &r);
        assert_eq!(
            o.body.unwrap()["error"],
            serde_json::json!({"code": "ServiceUnavailable", "message": "Injected fault."})
        );
        let o = respond(r#"{"route": "PUT", "kind": "throttle", "code": "RetryableErrorDueToAnotherOperation"}"#, &r);
        assert_eq!(o.body.unwrap()["error"]["code"], "RetryableErrorDueToAnotherOperation");
    }
}

//! Fault injection: per-route latency, 429 + `Retry-After`, error statuses and dropped connections.

use std::time::Duration;

use axum::http::StatusCode;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::wire::{Out, Req};

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

pub enum Action {
    None,
    Delay(Duration),
    Respond(Out),
}

/// What the fault rules say about this request (first firing rule wins; it uses up one of its `count`).
pub fn check(rules: &mut [FaultRule], r: &Req) -> Action {
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
        return Action::None;
    };
    match rule.kind.as_str() {
        "latency" => Action::Delay(Duration::from_millis(rule.latency_ms.unwrap_or(1000))),
        "throttle" => {
            let retry = rule.retry_after_seconds.unwrap_or(10);
            let status = StatusCode::from_u16(rule.status.unwrap_or(429)).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            Action::Respond(
                Out::arm_error(
                    status,
                    "SubscriptionRequestsThrottled",
                    format!("Number of requests exceeded the limit (injected fault). Please try again after '{retry}' seconds."),
                )
                .with_header("retry-after", retry.to_string()),
            )
        }
        "drop" => {
            let mut o = Out::empty(StatusCode::OK);
            o.drop = true;
            Action::Respond(o)
        }
        _ => {
            let status = StatusCode::from_u16(rule.status.unwrap_or(500)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = match status.as_u16() {
                500 => "InternalServerError",
                502 => "BadGateway",
                503 => "ServiceUnavailable",
                504 => "GatewayTimeout",
                409 => "Conflict",
                _ => "InjectedFault",
            };
            let mut o = Out::arm_error(status, code, "Injected fault.");
            if let Some(s) = rule.retry_after_seconds {
                o = o.with_header("retry-after", s.to_string());
            }
            Action::Respond(o)
        }
    }
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
}

//! The request/response types every front (Entra, ARM, Key Vault) shares, and ARM's common error answers.
//! A leaf: it names nothing else of the crate.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

/// A parsed incoming request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    /// Host without port, lower-case.
    pub host: String,
    pub host_port: String,
    pub path: String,
    pub query: String,
    pub params: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// Query parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Path segments without empty ones (ARM ignores a trailing slash).
    pub fn segments(&self) -> Vec<String> {
        self.path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect()
    }
    pub fn json(&self) -> Result<Value, String> {
        if self.body.is_empty() {
            return Err("The request content was invalid and could not be deserialized: 'empty body'.".into());
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("The request content was invalid and could not be deserialized: '{e}'."))
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// A handler's answer, turned into an HTTP response by the listener (`http::finish`).
#[derive(Debug, Clone)]
pub struct Out {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub principal: Option<String>,
    /// Reset the connection instead of answering (fault injection).
    pub drop: bool,
    /// Answer only after this much real time (an operation that stays in flight, e.g. a Key Vault write).
    pub hold: Option<Duration>,
}

impl Out {
    pub fn json(status: StatusCode, body: Value) -> Out {
        Out { status, headers: vec![], body: Some(body), principal: None, drop: false, hold: None }
    }
    pub fn empty(status: StatusCode) -> Out {
        Out { status, headers: vec![], body: None, principal: None, drop: false, hold: None }
    }
    pub fn with_header(mut self, k: &str, v: impl Into<String>) -> Out {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    /// ARM / CloudError body `{"error": {"code", "message"}}`.
    pub fn arm_error(status: StatusCode, code: &str, message: impl Into<String>) -> Out {
        Out::json(status, serde_json::json!({"error": {"code": code, "message": message.into()}}))
    }
}

/// ARM operation classes: what authorization (the action verb) and throttling (the bucket) count a request as.
/// Their bucket limits are in `throttle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    Reads,
    Writes,
    Deletes,
}

impl OpClass {
    pub fn of(m: &Method) -> OpClass {
        match *m {
            Method::GET | Method::HEAD => OpClass::Reads,
            Method::DELETE => OpClass::Deletes,
            _ => OpClass::Writes,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OpClass::Reads => "reads",
            OpClass::Writes => "writes",
            OpClass::Deletes => "deletes",
        }
    }
}

/// ARM's 405 for a method a resource does not support.
pub fn method_not_allowed(m: &Method) -> Out {
    Out::arm_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{m}'."),
    )
}

/// Key Vault's 409 when two writes to one vault overlap, verbatim (hashicorp/terraform-provider-azurerm issue
/// 15127 and Azure/bicep issue 4364 show it with the vault's name; Azure/AzureKeyVault issue 6 and
/// scylladb/scylla-cluster-tests issue 13184 show the same code and text).
pub fn key_vault_conflict(vault: &str) -> Out {
    Out::arm_error(
        StatusCode::CONFLICT,
        "ConflictError",
        format!(
            "A conflict occurred that prevented the operation from completing. The operation failed because the Key Vault '{vault}' changed from the point the operation began. This can happen if parallel operations are being performed on the Key Vault. To prevent this error, serialize the operations so that only one operation is performed on the Key Vault at a time. Follow this link for more information: https://go.microsoft.com/fwlink/?linkid=2147741"
        ),
    )
}

/// ARM's standard 404 for a missing resource.
pub fn resource_not_found(kind: &str, name: &str, rg: &str) -> Out {
    Out::arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{kind}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

//! Request/response plumbing shared by the Entra, ARM and Key Vault fronts: parsing, common headers, the
//! request log, fault injection hook and ARM token buckets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::{Inner, RequestRecord, arm, auth, faults, keys};

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

/// A handler's answer, turned into an HTTP response by [`finish`].
#[derive(Debug, Clone)]
pub struct Out {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub principal: Option<String>,
    /// Reset the connection instead of answering (fault injection).
    pub drop: bool,
}

impl Out {
    pub fn json(status: StatusCode, body: Value) -> Out {
        Out { status, headers: vec![], body: Some(body), principal: None, drop: false }
    }
    pub fn empty(status: StatusCode) -> Out {
        Out { status, headers: vec![], body: None, principal: None, drop: false }
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

pub fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 8 * 1024 * 1024).await.unwrap_or_default();
    let host_port = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let host = strip_port(&host_port).to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let params = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let r = Req {
        method: parts.method.clone(),
        host,
        host_port,
        path: parts.uri.path().to_string(),
        query,
        params,
        headers: parts.headers,
        body,
    };
    let arrived = inner.clock.now();
    let out = match faults::check(&inner, &r) {
        faults::Action::Respond(o) => o,
        faults::Action::Delay(d) => {
            tokio::time::sleep(d).await;
            dispatch(&inner, &r)
        }
        faults::Action::None => dispatch(&inner, &r),
    };
    {
        let mut log = inner.log.lock().unwrap_or_else(|e| e.into_inner());
        log.push(RequestRecord {
            time: arrived,
            method: r.method.to_string(),
            host: r.host_port.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            status: out.status.as_u16(),
            principal: out.principal.clone(),
        });
    }
    finish(&inner, out)
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split(']').next().map(|s| s.trim_start_matches('[')).unwrap_or(h);
    }
    h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h)
}

fn dispatch(inner: &Inner, r: &Req) -> Out {
    if let Some(vault) = keys::vault_from_host(&r.host) {
        return keys::handle(inner, r, &vault);
    }
    let segs = r.segments();
    if auth::is_entra_path(&segs) {
        return auth::handle(inner, r, &segs);
    }
    arm::handle(inner, r, &segs)
}

pub fn finish(inner: &Inner, out: Out) -> Response {
    if out.drop {
        // Send the status line, then fail the body: the client sees the connection die mid-response.
        let stream = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected drop"))
        });
        let mut resp = Response::new(Body::from_stream(stream));
        *resp.status_mut() = StatusCode::OK;
        return resp;
    }
    let mut resp = match &out.body {
        Some(v) => Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default())),
        None => Response::new(Body::empty()),
    };
    *resp.status_mut() = out.status;
    let h = resp.headers_mut();
    if out.body.is_some() {
        h.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    }
    let rid = uuid::Uuid::new_v4().to_string();
    for (k, v) in [
        ("date", super::clock::http_date(inner.clock.now())),
        ("x-ms-request-id", rid.clone()),
        ("x-ms-correlation-request-id", rid),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    for (k, v) in out.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
            h.insert(k, v);
        }
    }
    resp
}

/// ARM operation classes for throttling.
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
    /// (bucket size, refill per second): ARM's regional token bucket limits per subscription and principal.
    pub fn limits(self) -> (f64, f64) {
        match self {
            OpClass::Reads => (250.0, 25.0),
            OpClass::Writes => (200.0, 10.0),
            OpClass::Deletes => (200.0, 10.0),
        }
    }
}

/// Token buckets per (subscription, principal, class). Refilled in real time (clients wait in real time).
#[derive(Debug, Default)]
pub struct Buckets {
    b: HashMap<(String, String, OpClass), (f64, Instant)>,
}

impl Buckets {
    /// Take one token: `Ok(remaining)` or `Err(retry_after_seconds)`.
    pub fn take(&mut self, sub: &str, principal: &str, class: OpClass) -> Result<u64, u64> {
        let (cap, rate) = class.limits();
        let now = Instant::now();
        let e = self.b.entry((sub.to_ascii_lowercase(), principal.to_ascii_lowercase(), class)).or_insert((cap, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * rate).min(cap);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            Ok(e.0.floor() as u64)
        } else {
            Err(((1.0 - e.0) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_run_dry() {
        let mut b = Buckets::default();
        for i in 0..200 {
            assert_eq!(b.take("s", "p", OpClass::Writes), Ok(199 - i));
        }
        assert!(b.take("s", "p", OpClass::Writes).is_err());
        assert!(b.take("s", "other", OpClass::Writes).is_ok(), "per principal");
        assert!(b.take("s", "p", OpClass::Reads).is_ok(), "per class");
    }

    #[test]
    fn ports_stripped() {
        assert_eq!(strip_port("kv.vault.localhost:8443"), "kv.vault.localhost");
        assert_eq!(strip_port("127.0.0.1"), "127.0.0.1");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}

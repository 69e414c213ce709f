//! The main listener: turns each HTTP request into a [`Req`], applies fault injection, dispatches it to the Entra,
//! Key Vault or ARM front, logs it and writes the answer with the headers Azure always sends.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use super::arm;
use super::auth;
use super::clock::http_date;
use super::faults;
use super::keys;
use super::managed_identity;
use super::request_log::RequestRecord;
use super::server::Shared;
use super::wire::{Out, Req};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
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
    let arrived = shared.clock.now();
    let fault = faults::check(&mut shared.faults.lock().unwrap_or_else(|e| e.into_inner()), &r);
    let out = match fault {
        faults::FaultEffect::Respond(o) => o,
        faults::FaultEffect::Delay(d) => {
            tokio::time::sleep(d).await;
            dispatch(&shared, &r)
        }
        faults::FaultEffect::None => dispatch(&shared, &r),
    };
    if let Some(d) = out.hold {
        // an operation still in flight (Key Vault write overlap); no lock is held here
        tokio::time::sleep(d).await;
    }
    {
        let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
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
    finish(&shared, out)
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split(']').next().map(|s| s.trim_start_matches('[')).unwrap_or(h);
    }
    h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h)
}

fn dispatch(shared: &Shared, r: &Req) -> Out {
    if let Some(vault) = keys::vault_from_host(&r.host) {
        return keys::handle(&shared.tokens, &shared.endpoints, &shared.world(), r, &vault);
    }
    let segs = r.segments();
    if managed_identity::is_path(&segs) {
        return managed_identity::handle(&shared.tokens, &shared.cfg.identity_header, &shared.world(), r);
    }
    if auth::is_entra_path(&segs) {
        return auth::handle(&shared.tokens, &shared.endpoints.base_url, &shared.world(), r, &segs);
    }
    arm::handle(shared, r, &segs)
}

/// The HTTP response for `out`, with the headers every Azure front sends.
pub fn finish(shared: &Shared, out: Out) -> Response {
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
        ("date", http_date(shared.clock.now())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_stripped() {
        assert_eq!(strip_port("kv.vault.localhost:8443"), "kv.vault.localhost");
        assert_eq!(strip_port("127.0.0.1"), "127.0.0.1");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}

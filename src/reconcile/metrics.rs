//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;

use hpcc_api::v1alpha1::Phase;
use hpcc_azure::CallObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

/// All metrics the operator exports. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    azure_calls: Family<CallLabels, Counter>,
    azure_call_seconds: Family<CallLabels, Histogram>,
    objects: Family<PhaseLabels, Gauge>,
    deadline_seconds: Family<ObjectLabels, Gauge>,
    deadline_timestamp: Family<ObjectLabels, Gauge>,
    ready_objects: Family<ObjectLabels, Gauge>,
    stalled_objects: Family<ObjectLabels, Gauge>,
    reconcile_seconds: Family<ResultLabels, Histogram>,
    phases: Arc<Mutex<BTreeMap<(String, String), Phase>>>,
    ready: Arc<AtomicBool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hpccache");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let azure_calls = Family::<CallLabels, Counter>::default();
        let azure_call_seconds = Family::<CallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let objects = Family::<PhaseLabels, Gauge>::default();
        let deadline_seconds = Family::<ObjectLabels, Gauge>::default();
        let deadline_timestamp = Family::<ObjectLabels, Gauge>::default();
        let ready_objects = Family::<ObjectLabels, Gauge>::default();
        let stalled_objects = Family::<ObjectLabels, Gauge>::default();
        let reconcile_seconds = Family::<ResultLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register("azure_calls", "Azure API calls by operation and HTTP status", azure_calls.clone());
        registry.register("azure_call_duration_seconds", "Azure API call latency", azure_call_seconds.clone());
        registry.register("objects", "HpcCache objects by phase", objects.clone());
        registry.register(
            "authorization_deadline_seconds",
            "Seconds left before Azure fails a cache whose key grant is outstanding",
            deadline_seconds.clone(),
        );
        registry.register(
            "authorization_deadline_timestamp_seconds",
            "When Azure fails a cache whose key grant is outstanding (Unix time, Azure's clock)",
            deadline_timestamp.clone(),
        );
        registry.register("ready", "1 when the object's Ready condition is True, else 0", ready_objects.clone());
        registry.register(
            "stalled",
            "1 when the object's Stalled condition is True (it needs a person), else 0",
            stalled_objects.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by result (as in hpccache_reconciles_total)",
            reconcile_seconds.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            azure_calls,
            azure_call_seconds,
            objects,
            deadline_seconds,
            deadline_timestamp,
            ready_objects,
            stalled_objects,
            reconcile_seconds,
            phases: Default::default(),
            ready: Default::default(),
        }
    }

    pub fn reconciled(&self, result: &str) {
        self.reconciles.get_or_create(&ResultLabels { result: result.into() }).inc();
        // Inside [`Metrics::timed`]: the duration is recorded under the same result.
        let _ = RECONCILE_RESULT.try_with(|r| *r.borrow_mut() = Some(result.to_string()));
    }

    /// Runs one reconcile and records how long it took in `hpccache_reconcile_duration_seconds{result}`: the
    /// result the reconcile reported through [`Metrics::reconciled`], `error` when it returned an error (the error
    /// policy counts those), `ok` when it ended without reporting one (e.g. the object was gone).
    pub async fn timed<T, E>(&self, reconcile: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let start = Instant::now();
        let (out, reported) = RECONCILE_RESULT
            .scope(RefCell::new(None), async {
                let out = reconcile.await;
                (out, RECONCILE_RESULT.with(|r| r.borrow_mut().take()))
            })
            .await;
        let result = match (&out, reported) {
            (Err(_), _) => "error".to_string(),
            (Ok(_), Some(r)) => r,
            (Ok(_), None) => "ok".to_string(),
        };
        self.reconcile_seconds.get_or_create(&ResultLabels { result }).observe(start.elapsed().as_secs_f64());
        out
    }

    /// Records the phase of one object (None when it is gone) and recomputes the per-phase gauge.
    pub fn set_phase(&self, namespace: &str, name: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), name.to_string());
        match phase {
            Some(p) => phases.insert(key, p),
            None => phases.remove(&key),
        };
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for p in [
            Phase::Pending,
            Phase::Authorizing,
            Phase::Creating,
            Phase::WaitingForKey,
            Phase::Ready,
            Phase::Updating,
            Phase::Failed,
            Phase::Deleting,
        ] {
            counts.insert(p.to_string(), 0);
        }
        for p in phases.values() {
            *counts.entry(p.to_string()).or_default() += 1;
        }
        for (phase, n) in counts {
            self.objects.get_or_create(&PhaseLabels { phase }).set(n);
        }
    }

    /// Seconds left before the authorization deadline; None removes the series.
    pub fn set_deadline(&self, namespace: &str, name: &str, seconds_left: Option<i64>) {
        set_or_remove(&self.deadline_seconds, namespace, name, seconds_left);
    }

    /// The authorization deadline as Unix seconds; None removes the series.
    pub fn set_deadline_timestamp(&self, namespace: &str, name: &str, unix_seconds: Option<i64>) {
        set_or_remove(&self.deadline_timestamp, namespace, name, unix_seconds);
    }

    /// Whether the object is Ready (1) or not (0); None (the object is gone) removes the series.
    pub fn set_object_ready(&self, namespace: &str, name: &str, ready: Option<bool>) {
        set_or_remove(&self.ready_objects, namespace, name, ready.map(i64::from));
    }

    /// Whether the object's Stalled condition is True; None removes the series.
    pub fn set_object_stalled(&self, namespace: &str, name: &str, stalled: Option<bool>) {
        set_or_remove(&self.stalled_objects, namespace, name, stalled.map(i64::from));
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The answer to one probe or scrape: (status, content type, body).
    fn respond(&self, method: &hyper::Method, path: &str) -> (u16, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        if method != hyper::Method::GET && method != hyper::Method::HEAD {
            return (405, TEXT, "method not allowed".into());
        }
        match path {
            "/metrics" => (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", self.render()),
            "/healthz" => (200, TEXT, "ok".into()),
            "/readyz" if self.ready.load(Ordering::Relaxed) => (200, TEXT, "ready".into()),
            "/readyz" => (503, TEXT, "starting".into()),
            _ => (404, TEXT, "not found".into()),
        }
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` over HTTP/1.1 until the process ends. Three GET routes do not
    /// warrant a web framework: hyper is already in the binary through kube and reqwest.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: retrying at once would spin; wait for some to be freed.
                    tracing::warn!(error = %e, "cannot accept a metrics connection");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            let metrics = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (status, content_type, body) = metrics.respond(req.method(), req.uri().path());
                    let resp = hyper::Response::builder()
                        .status(status)
                        .header("content-type", content_type)
                        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)));
                    async move { resp }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }
}

tokio::task_local! {
    /// The result a reconcile reported, while [`Metrics::timed`] runs it.
    static RECONCILE_RESULT: RefCell<Option<String>>;
}

/// One object's series of a per-object gauge: set to `value`, or removed with None.
fn set_or_remove(family: &Family<ObjectLabels, Gauge>, namespace: &str, name: &str, value: Option<i64>) {
    let labels = ObjectLabels { namespace: namespace.into(), name: name.into() };
    match value {
        Some(v) => {
            family.get_or_create(&labels).set(v);
        }
        None => {
            family.remove(&labels);
        }
    }
}

impl CallObserver for Metrics {
    fn observe(&self, operation: &'static str, status: Option<u16>, elapsed: Duration) {
        let labels =
            CallLabels { operation: operation.into(), status: status.map_or("error".to_string(), |s| s.to_string()) };
        self.azure_calls.get_or_create(&labels).inc();
        self.azure_call_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_counted_and_forgotten() {
        let m = Metrics::new();
        m.set_phase("a", "x", Some(Phase::Ready));
        m.set_phase("a", "y", Some(Phase::Ready));
        m.set_phase("b", "z", Some(Phase::WaitingForKey));
        let text = m.render();
        assert!(text.contains("hpccache_objects{phase=\"Ready\"} 2"), "{text}");
        assert!(text.contains("hpccache_objects{phase=\"WaitingForKey\"} 1"), "{text}");
        m.set_phase("a", "y", None);
        assert!(m.render().contains("hpccache_objects{phase=\"Ready\"} 1"));
    }

    #[test]
    fn probes_and_scrapes_answer_get_only() {
        let m = Metrics::new();
        let get = hyper::Method::GET;
        assert_eq!(m.respond(&get, "/healthz").0, 200);
        assert_eq!(m.respond(&get, "/readyz").0, 503, "not ready before the controller runs");
        m.set_ready();
        assert_eq!(m.respond(&get, "/readyz").0, 200);
        let (status, content_type, body) = m.respond(&get, "/metrics");
        assert_eq!(status, 200);
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert_eq!(m.respond(&get, "/nope").0, 404);
        assert_eq!(m.respond(&hyper::Method::POST, "/metrics").0, 405);
    }

    #[tokio::test]
    async fn the_endpoint_serves_http() {
        let m = Metrics::new();
        m.set_ready();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(m.clone().serve(listener));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ready"), "{answer}");
    }

    #[test]
    fn azure_calls_and_deadlines_are_exported() {
        let m = Metrics::new();
        m.observe("caches.put", Some(201), Duration::from_millis(20));
        m.observe("caches.get", None, Duration::from_millis(1));
        m.set_deadline("ns", "c", Some(4200));
        let text = m.render();
        assert!(text.contains("hpccache_azure_calls_total{operation=\"caches.put\",status=\"201\"} 1"), "{text}");
        assert!(text.contains("status=\"error\""), "{text}");
        assert!(text.contains("hpccache_authorization_deadline_seconds{namespace=\"ns\",name=\"c\"} 4200"), "{text}");
        m.set_deadline("ns", "c", None);
        assert!(!m.render().contains("name=\"c\""));
    }

    #[test]
    fn per_object_gauges_are_set_and_removed() {
        let m = Metrics::new();
        m.set_deadline_timestamp("ns", "c", Some(1_795_000_000));
        m.set_object_ready("ns", "c", Some(false));
        m.set_object_stalled("ns", "c", Some(true));
        m.set_object_ready("ns", "d", Some(true));
        m.set_object_stalled("ns", "c", Some(true));
        assert!(m.render().contains("hpccache_stalled{namespace=\"ns\",name=\"c\"} 1"));
        m.set_object_stalled("ns", "c", None);
        assert!(!m.render().contains("hpccache_stalled{"));
        let text = m.render();
        assert!(
            text.contains("hpccache_authorization_deadline_timestamp_seconds{namespace=\"ns\",name=\"c\"} 1795000000"),
            "{text}"
        );
        assert!(text.contains("# TYPE hpccache_ready gauge"), "{text}");
        assert!(text.contains("hpccache_ready{namespace=\"ns\",name=\"c\"} 0"), "{text}");
        assert!(text.contains("hpccache_ready{namespace=\"ns\",name=\"d\"} 1"), "{text}");
        m.set_object_ready("ns", "c", Some(true));
        assert!(m.render().contains("hpccache_ready{namespace=\"ns\",name=\"c\"} 1"));
        m.set_deadline_timestamp("ns", "c", None);
        m.set_object_ready("ns", "c", None);
        let text = m.render();
        assert!(!text.contains("name=\"c\""), "{text}");
        assert!(text.contains("name=\"d\""), "{text}");
    }

    #[tokio::test]
    async fn reconcile_durations_carry_the_reported_result() {
        let m = Metrics::new();
        let inner = m.clone();
        let ok: Result<(), ()> = m
            .timed(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                inner.reconciled("azure_error");
                Ok(())
            })
            .await;
        assert!(ok.is_ok());
        let failed: Result<(), &str> = m.timed(async { Err("kube") }).await;
        assert!(failed.is_err());
        let silent: Result<(), ()> = m.timed(async { Ok(()) }).await;
        assert!(silent.is_ok());
        m.reconciled("ok"); // outside timed: counted, no duration
        let text = m.render();
        assert!(text.contains("# TYPE hpccache_reconcile_duration_seconds histogram"), "{text}");
        assert!(text.contains("hpccache_reconcile_duration_seconds_count{result=\"azure_error\"} 1"), "{text}");
        assert!(
            text.contains("hpccache_reconcile_duration_seconds_bucket{le=\"0.025\",result=\"azure_error\"} 0"),
            "{text}"
        );
        assert!(text.contains("hpccache_reconcile_duration_seconds_count{result=\"error\"} 1"), "{text}");
        assert!(text.contains("hpccache_reconcile_duration_seconds_count{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("hpccache_reconciles_total{result=\"azure_error\"} 1"), "{text}");
        assert!(text.contains("hpccache_reconciles_total{result=\"ok\"} 1"), "{text}");
    }

    /// The series the operator exports once every metric has seen a value: name -> label -> values.
    async fn exported_series() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        let m = Metrics::new();
        for result in ["ok", "azure_error", "error", "finalized"] {
            let inner = m.clone();
            let _: Result<(), ()> = m
                .timed(async move {
                    inner.reconciled(result);
                    Ok(())
                })
                .await;
        }
        for status in [Some(200), Some(404), Some(429), Some(503), None] {
            m.observe("caches.get", status, Duration::from_millis(5));
        }
        m.set_phase("ns", "c", Some(Phase::Failed));
        m.set_object_ready("ns", "c", Some(false));
        m.set_object_stalled("ns", "c", Some(true));
        m.set_deadline("ns", "c", Some(600));
        m.set_deadline_timestamp("ns", "c", Some(1_795_000_000));
        let mut series: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for line in m.render().lines().filter(|l| !l.starts_with('#')) {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = series.entry(line[..name_end].to_string()).or_default();
            if let Some(set) = line[name_end..].strip_prefix('{').and_then(|l| l.split_once('}')).map(|(set, _)| set) {
                for pair in set.split(',') {
                    let (k, v) = pair.split_once('=').unwrap();
                    labels.entry(k.to_string()).or_default().push(v.trim_matches('"').to_string());
                }
            }
        }
        series
    }

    /// One label matcher of a selector: (label, operator, value).
    type Matcher = (String, String, String);

    /// Each `hpccache_*` selector in a PromQL expression: (name, its matchers).
    fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let mut found = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("hpccache_") {
            let preceded = rest[..at].chars().next_back().is_some_and(ident);
            let tail = &rest[at..];
            let name_len = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
            let (name, after) = tail.split_at(name_len);
            rest = after;
            if preceded {
                continue;
            }
            let mut matchers = Vec::new();
            if let Some(set) = after.trim_start().strip_prefix('{').and_then(|s| s.split_once('}')).map(|(s, _)| s) {
                for m in set.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                    let op_at = m.find(['=', '!']).unwrap_or_else(|| panic!("matcher {m:?} in {expr}"));
                    let (label, op_value) = m.split_at(op_at);
                    let op_len = op_value.find('"').unwrap_or_else(|| panic!("matcher {m:?} in {expr}"));
                    let (op, value) = op_value.split_at(op_len);
                    matchers.push((
                        label.trim().to_string(),
                        op.trim().to_string(),
                        value.trim_matches('"').to_string(),
                    ));
                }
            }
            found.push((name.to_string(), matchers));
        }
        found
    }

    /// The PromQL of the chart's Grafana dashboard: panel queries and template variable queries.
    fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        ("expr" | "definition", Some(q)) => out.push(q.to_string()),
                        _ => dashboard_queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
            _ => {}
        }
    }

    /// The chart's alerts (files/alerts.yaml, embedded by its PrometheusRule) and Grafana dashboard query only
    /// series this operator exports, with labels it sets (and for `label="value"` matchers, values it uses).
    #[tokio::test]
    async fn the_charts_alerts_and_dashboard_query_exported_series() {
        let alerts: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../../charts/hpc-cache-operator/files/alerts.yaml")).unwrap();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../charts/hpc-cache-operator/dashboards/hpc-cache-operator.json"))
                .unwrap();
        let mut rule_exprs = Vec::new();
        for group in alerts["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                rule_exprs.push(rule["expr"].as_str().expect("a rule's expr").to_string());
            }
        }
        let mut panel_exprs = Vec::new();
        dashboard_queries(&dashboard, &mut panel_exprs);
        let exported = exported_series().await;
        for (source, exprs, at_least) in [("files/alerts.yaml", &rule_exprs, 5), ("the dashboard", &panel_exprs, 7)] {
            let mut names = std::collections::BTreeSet::new();
            for expr in exprs.iter() {
                for (name, matchers) in selectors(expr) {
                    let labels = exported
                        .get(&name)
                        .unwrap_or_else(|| panic!("{source} queries {name}, which /metrics does not export: {expr}"));
                    for (label, op, value) in matchers {
                        let values = labels
                            .get(&label)
                            .unwrap_or_else(|| panic!("{source}: {name} has no label {label:?}: {expr}"));
                        if op == "=" && !value.contains('$') {
                            assert!(values.contains(&value), "{source}: {name}{{{label}={value:?}}} is never exported");
                        }
                    }
                    names.insert(name);
                }
            }
            assert!(names.len() >= at_least, "{source} queries only {names:?}");
        }
    }
}

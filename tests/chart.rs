//! The Helm chart against a real kube-apiserver: its rendered manifests pass a server-side dry run, it installs,
//! and the operator's service account gets exactly the access it needs.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use hpcc_azure::{AzureConfig, CredentialChoice};
use hpcc_test_support::TestCluster;
use serde::Deserialize;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The chart directory, exactly as it is in git: no make step between a clone and `helm install`.
fn chart() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/charts/hpc-cache-operator")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn dry_run_apply(cluster: &TestCluster, manifests: &str) -> String {
    let mut child = cluster
        .kubectl()
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(manifests.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "server-side dry run refused:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn rendered_manifests_pass_a_server_side_dry_run() {
    let cluster = TestCluster::shared();
    let ns = cluster.namespace("render").await;
    let watched = cluster.namespace("watched").await;
    let variants: [&[&str]; 3] = [
        &[],
        &["--set", "azure.credentials.mode=secret", "--set", "azure.credentials.secretName=azure-sp"],
        &["--set", &format!("watchNamespace={watched}"), "--set", "azure.credentials.clientId=0000-client"],
    ];
    for extra in variants {
        let rendered = run(cluster.helm().args(["template", "hpcc", chart(), "--namespace", &ns]).args(extra));
        let applied = dry_run_apply(cluster, &rendered);
        for kind in ["deployment.apps/", "serviceaccount/", "role.rbac.authorization.k8s.io/hpcc-"] {
            assert!(applied.contains(kind), "{kind} missing from {extra:?}:\n{applied}");
        }
        // Access to hpccaches is cluster-wide only when all namespaces are watched (namespaces/get always is).
        let cluster_wide = applied.contains("clusterrole.rbac.authorization.k8s.io/hpcc-hpc-cache-operator created");
        assert_eq!(cluster_wide, extra.iter().all(|a| !a.starts_with("watchNamespace")), "{applied}");
    }
}

#[tokio::test]
async fn an_unknown_credentials_mode_is_refused_at_render_time() {
    let cluster = TestCluster::shared();
    let out = cluster
        .helm()
        .args(["template", "hpcc", chart(), "--set", "azure.credentials.mode=password"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // values.schema.json refuses it first, naming the key and the allowed values.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/azure/credentials/mode") && err.contains("workloadIdentity"), "{out:?}");
}

fn can_i(cluster: &TestCluster, sa: &str, args: &[&str]) -> bool {
    let out = cluster.kubectl().args(["auth", "can-i", "--as", sa]).args(args).output().unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {args:?}: {other} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test]
async fn helm_install_deploys_the_operator_with_least_privilege() {
    let cluster = TestCluster::shared();
    let ns = cluster.namespace("install").await;
    let release = format!("hpcc-{}", ns.rsplit('-').next().unwrap());
    run(cluster.helm().args(["install", &release, chart(), "--namespace", &ns]));

    let status = run(cluster.helm().args(["status", &release, "--namespace", &ns, "-o", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["info"]["status"], "deployed", "{status}");

    let name = format!("{release}-hpc-cache-operator");
    run(cluster.kubectl().args(["get", "-n", &ns, "deployment", &name]));
    run(cluster.kubectl().args(["get", "-n", &ns, "serviceaccount", &name]));
    run(cluster.kubectl().args(["get", "clusterrole", &name]));
    // The chart ships the CRDs as templates (generated from the Rust types, committed).
    run(cluster.kubectl().args(["get", "crd", "hpccaches.hpccache.io"]));

    let sa = format!("system:serviceaccount:{ns}:{name}");
    for allowed in [
        &["watch", "hpccaches.hpccache.io", "-A"][..],
        &["patch", "hpccaches.hpccache.io", "--subresource=status", "-n", "anywhere"],
        &["update", "hpccaches.hpccache.io", "--subresource=finalizers", "-n", "anywhere"],
        &["create", "events.events.k8s.io", "-n", "anywhere"],
        &["patch", "leases.coordination.k8s.io", "-n", &ns],
        // the vault policy annotation (hpccache.io/allowed-vault-scopes) is kept from a watch on namespaces
        &["get", "namespaces/anywhere"],
        &["watch", "namespaces"],
        &["list", "namespaces"],
        // a namespace's own Azure credential, by name only
        &["get", "secrets/hpccache-credential", "-n", &ns],
        &["get", "secrets/hpccache-credential", "-n", "anywhere"],
    ] {
        assert!(can_i(cluster, &sa, allowed), "the operator cannot {allowed:?}");
    }
    for denied in [
        // no other Secret, and no listing or watching of Secrets
        &["get", "secrets/other", "-n", &ns][..],
        &["get", "secrets", "-n", &ns],
        &["list", "secrets", "-n", &ns],
        &["list", "secrets", "-A"],
        &["watch", "secrets", "-n", &ns],
        &["update", "secrets/hpccache-credential", "-n", &ns],
        &["delete", "hpccaches.hpccache.io", "-n", "anywhere"],
        &["create", "hpccaches.hpccache.io", "-n", "anywhere"],
        &["patch", "leases.coordination.k8s.io", "-n", "kube-system"],
        &["create", "pods", "-n", &ns],
        &["update", "namespaces/anywhere"],
    ] {
        assert!(!can_i(cluster, &sa, denied), "the operator may {denied:?}, more than it needs");
    }

    run(cluster.helm().args(["uninstall", &release, "--namespace", &ns]));
    let gone = cluster.kubectl().args(["get", "clusterrole", &name]).output().unwrap();
    assert!(!gone.status.success(), "clusterrole {name} left behind by helm uninstall");
}

/// The Deployment's environment, literal values only (`valueFrom` entries map to a placeholder).
fn deployment_env(rendered: &str) -> BTreeMap<String, String> {
    for doc in serde_yaml_ng::Deserializer::from_str(rendered) {
        let doc = serde_json::Value::deserialize(doc).unwrap();
        if doc["kind"] == "Deployment" {
            let env = doc["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
            return env
                .iter()
                .map(|e| {
                    let value = e["value"].as_str().unwrap_or("from-valueFrom");
                    (e["name"].as_str().unwrap().to_string(), value.to_string())
                })
                .collect();
        }
    }
    panic!("no Deployment rendered:\n{rendered}");
}

#[tokio::test]
async fn the_rendered_environment_is_what_the_operator_reads() {
    let cluster = TestCluster::shared();
    let help = run(Command::new(env!("CARGO_BIN_EXE_hpc-cache-operator")).args(["run", "--help"]));
    // Read outside clap: the log filter (main.rs) and the Azure settings (AzureConfig::from_vars).
    let read_elsewhere =
        ["HPCC_LOG", "AZURE_CLOUD", "HPCC_CREDENTIAL", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"];
    let modes: [(&[&str], CredentialChoice); 3] = [
        (&[], CredentialChoice::WorkloadIdentity),
        (
            &["--set", "azure.credentials.mode=secret", "--set", "azure.credentials.secretName=sp"],
            CredentialChoice::ClientSecret,
        ),
        (
            &["--set", "azure.credentials.mode=managedIdentity", "--set", "azure.credentials.clientId=c"],
            CredentialChoice::ManagedIdentity,
        ),
    ];
    for (extra, credential) in modes {
        let rendered = run(cluster
            .helm()
            .args(["template", "hpcc", chart(), "--set", "watchNamespace=research", "--set", "labelSelector=shard=a"])
            .args(extra));
        let env = deployment_env(&rendered);
        for name in env.keys() {
            assert!(
                help.contains(&format!("[env: {name}=")) || read_elsewhere.contains(&name.as_str()),
                "the chart sets {name}, which the operator does not read"
            );
        }
        assert_eq!(env["HPCC_NAMESPACE"], "research");
        assert_eq!(env["HPCC_LEADER_ELECTION"], "true");
        assert_eq!(env["HPCC_REQUIRE_NAMESPACE_CREDENTIALS"], "false", "the operator-wide identity by default");
        env["HPCC_METRICS_ADDR"].parse::<std::net::SocketAddr>().expect("HPCC_METRICS_ADDR is an address");
        let config = AzureConfig::from_vars(|k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("the operator refuses the chart's Azure settings {extra:?}: {e:#}"));
        assert_eq!(config.credential, credential, "{extra:?}");
    }
}

#[tokio::test]
async fn the_chart_from_git_renders_its_crds_and_refuses_unknown_values() {
    let cluster = TestCluster::shared();
    // From a clone, no make step: `helm template --include-crds` carries both CRDs, kept on uninstall.
    let rendered = run(cluster.helm().args(["template", "x", chart(), "--include-crds"]));
    for crd in ["name: hpccaches.hpccache.io", "name: amlfilesystems.hpccache.io"] {
        assert!(rendered.contains(crd), "{crd} missing");
    }
    assert!(rendered.contains("helm.sh/resource-policy: keep"));
    let unkept = run(cluster.helm().args(["template", "x", chart(), "--set", "crds.keep=false"]));
    assert!(unkept.contains("name: hpccaches.hpccache.io") && !unkept.contains("helm.sh/resource-policy"));
    let none = run(cluster.helm().args(["template", "x", chart(), "--set", "crds.enabled=false"]));
    assert!(!none.contains("kind: CustomResourceDefinition"));
    // A mistyped value is refused by values.schema.json instead of rendering silently.
    let out = cluster.helm().args(["template", "x", chart(), "--set", "replicaCuont=3"]).output().unwrap();
    assert!(!out.status.success(), "a mistyped key renders");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replicaCuont"), "{err}");
    let out = cluster.helm().args(["template", "x", chart(), "--set", "replicaCount=many"]).output().unwrap();
    assert!(!out.status.success(), "a wrong type renders");
    run(cluster.helm().args(["lint", "--strict", chart()]));
}

#[tokio::test]
async fn opt_in_pdb_network_policy_and_pod_settings_render_and_pass_a_dry_run() {
    let cluster = TestCluster::shared();
    let ns = cluster.namespace("optin").await;
    let rendered = run(cluster.helm().args([
        "template",
        "hpcc",
        chart(),
        "--namespace",
        &ns,
        "--set",
        "crds.enabled=false",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "extraEnv[0].name=HPCC_ARM_ENDPOINT",
        "--set",
        "extraEnv[0].value=https://management.example",
        "--set",
        "extraArgs[0]=--poll-seconds=30",
        "--set",
        "topologySpreadConstraints[0].maxSkew=1",
        "--set",
        "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
        "--set",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
    ]));
    for expected in [
        "kind: PodDisruptionBudget",
        "kind: NetworkPolicy",
        "name: HPCC_ARM_ENDPOINT",
        "- --poll-seconds=30",
        "topologyKey: kubernetes.io/hostname",
    ] {
        assert!(rendered.contains(expected), "{expected} missing:\n{rendered}");
    }
    let applied = dry_run_apply(cluster, &rendered);
    assert!(applied.contains("poddisruptionbudget.policy/") && applied.contains("networkpolicy.networking.k8s.io/"));
}

/// The README's values table, generated from values.schema.json (one row per leaf key).
fn values_table() -> String {
    fn walk(prefix: &str, schema: &serde_json::Value, rows: &mut Vec<String>) {
        let props = schema.get("properties").and_then(|p| p.as_object());
        match props {
            Some(props) if !props.is_empty() => {
                for (k, v) in props {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, rows);
                }
            }
            _ => {
                let ty = match &schema["type"] {
                    serde_json::Value::Array(a) => a.iter().filter_map(|t| t.as_str()).collect::<Vec<_>>().join(" or "),
                    t => t.as_str().unwrap_or("any").to_string(),
                };
                let choices = schema["enum"]
                    .as_array()
                    .map(|e| format!(" ({})", e.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")))
                    .unwrap_or_default();
                let desc = schema["description"].as_str().unwrap_or_default();
                rows.push(format!("| `{prefix}` | {ty}{choices} | {desc} |"));
            }
        }
    }
    let text = std::fs::read_to_string(format!("{}/values.schema.json", chart())).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut rows = vec!["| value | type | what it does |".to_string(), "|---|---|---|".to_string()];
    walk("", &schema, &mut rows);
    rows.join("\n") + "\n"
}

#[test]
fn the_readme_values_table_matches_the_schema() {
    // HPCC_BLESS=1 cargo test --test chart the_readme rewrites it; a stale table fails.
    let path = format!("{REPO}/README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- values:begin -->\n", "<!-- values:end -->");
    let start = readme.find(begin).expect("values:begin marker in README.md") + begin.len();
    let stop = readme.find(end).expect("values:end marker in README.md");
    let want = values_table();
    if readme[start..stop] != want {
        if std::env::var_os("HPCC_BLESS").is_some() {
            std::fs::write(&path, format!("{}{want}{}", &readme[..start], &readme[stop..])).unwrap();
        } else {
            panic!("README.md's values table is stale: HPCC_BLESS=1 cargo test --test chart the_readme");
        }
    }
}

/// The monitoring values, all on (ServiceMonitor, PrometheusRule, Grafana dashboard ConfigMap).
const MONITORING: [&str; 14] = [
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "serviceMonitor.labels.release=kube-prometheus-stack",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "prometheusRule.labels.release=kube-prometheus-stack",
    "--set",
    "grafanaDashboard.enabled=true",
    "--set",
    "crds.enabled=false",
    "--set",
    "serviceMonitor.interval=15s",
];

/// The rendered documents (a YAML stream) as JSON values, by kind; only kinds rendered once are kept.
fn documents(rendered: &str) -> BTreeMap<String, serde_json::Value> {
    let mut by_kind = BTreeMap::new();
    let mut twice = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(rendered) {
        let doc = serde_json::Value::deserialize(doc).unwrap();
        if let Some(kind) = doc["kind"].as_str()
            && by_kind.insert(kind.to_string(), doc.clone()).is_some()
        {
            twice.push(kind.to_string());
        }
    }
    for kind in twice {
        by_kind.remove(&kind);
    }
    by_kind
}

fn chart_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", chart())).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn monitoring_objects_are_opt_in_and_pass_lint_and_a_dry_run() {
    let cluster = TestCluster::shared();
    let ns = cluster.namespace("monitoring").await;
    // prometheus-operator's CRDs are not part of the test apiserver: stand-ins with group, version and kind only.
    cluster.install_crds(format!("{REPO}/tests/fixtures/monitoring-crds.yaml")).await;

    let plain = run(cluster.helm().args(["template", "hpcc", chart(), "--namespace", &ns]));
    for kind in ["kind: ServiceMonitor", "kind: PrometheusRule", "-dashboard"] {
        assert!(!plain.contains(kind), "{kind} rendered without being asked for");
    }
    for (value, kind) in [
        ("serviceMonitor.enabled=true", "ServiceMonitor"),
        ("prometheusRule.enabled=true", "PrometheusRule"),
        ("grafanaDashboard.enabled=true", "ConfigMap"),
    ] {
        let one = run(cluster.helm().args(["template", "hpcc", chart(), "--namespace", &ns, "--set", value]));
        assert!(documents(&one).contains_key(kind), "{value} renders no {kind}");
    }

    run(cluster.helm().args(["lint", "--strict", chart(), "--namespace", &ns]).args(MONITORING));
    let rendered = run(cluster.helm().args(["template", "hpcc", chart(), "--namespace", &ns]).args(MONITORING));
    let applied = dry_run_apply(cluster, &rendered);
    for object in [
        "servicemonitor.monitoring.coreos.com/hpcc-hpc-cache-operator",
        "prometheusrule.monitoring.coreos.com/hpcc-hpc-cache-operator",
        "configmap/hpcc-hpc-cache-operator-dashboard",
        "deployment.apps/hpcc-hpc-cache-operator",
    ] {
        assert!(applied.contains(object), "{object} missing:\n{applied}");
    }

    // A ServiceMonitor without the Service it scrapes is refused at render time.
    let out = cluster
        .helm()
        .args([
            "template",
            "hpcc",
            chart(),
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "metrics.service.enabled=false",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("metrics.service.enabled"));
}

#[tokio::test]
async fn the_prometheus_rule_ships_the_rules_promtool_tests() {
    let cluster = TestCluster::shared();
    let file = chart_file("files/alerts.yaml");
    let threshold = "- time() < 1800";
    assert_eq!(file.matches(threshold).count(), 1, "files/alerts.yaml: the deadline threshold");
    for (extra, seconds) in [(None, 1800), (Some("prometheusRule.deadlineWarningSeconds=600"), 600)] {
        let mut helm = cluster.helm();
        helm.args(["template", "hpcc", chart(), "--namespace", "hpcc-system"]).args(MONITORING);
        if let Some(value) = extra {
            helm.args(["--set", value]);
        }
        let rule = documents(&run(&mut helm)).remove("PrometheusRule").expect("a PrometheusRule");
        assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus-stack", "prometheusRule.labels");
        // spec is files/alerts.yaml (what `make alerts-test` checks), the threshold aside.
        let expected = file.replace(threshold, &format!("- time() < {seconds}"));
        let expected: serde_json::Value = serde_yaml_ng::from_str(&expected).unwrap();
        assert_eq!(rule["spec"], expected, "{extra:?}");
        let deadline = rule["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == "HpcCacheKeyGrantDeadlineNear")
            .expect("the deadline alert");
        assert!(deadline["expr"].as_str().unwrap().ends_with(&format!("time() < {seconds}")), "{deadline}");
    }
    let mut values = chart_file("values.yaml");
    values.retain(|c| c != ' ');
    assert!(values.contains("deadlineWarningSeconds:1800"), "the chart's default is the file's threshold");
}

#[tokio::test]
async fn the_service_monitor_scrapes_the_metrics_service_as_the_alerts_expect() {
    let cluster = TestCluster::shared();
    let rendered = run(cluster.helm().args(["template", "other-name", chart(), "--namespace", "ops"]).args(MONITORING));
    let docs = documents(&rendered);
    let (monitor, service) = (&docs["ServiceMonitor"], &docs["Service"]);
    assert_eq!(monitor["metadata"]["namespace"], "ops");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack", "serviceMonitor.labels");
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"], serde_json::json!(["ops"]));
    // It selects the metrics Service ...
    let service_labels = service["metadata"]["labels"].as_object().unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(service_labels.get(k), Some(v), "selector {k}={v} does not match the Service");
    }
    // ... by its port name, at the chart's interval, keeping the objects' own `namespace` label.
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["honorLabels"], true);
    // The job is the Service's app.kubernetes.io/name whatever the release is called: what the alerts select.
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    let job = service_labels[job_label].as_str().unwrap();
    assert_eq!(job, "hpc-cache-operator");
    let alerts = chart_file("files/alerts.yaml");
    assert!(alerts.contains(&format!("up{{job=\"{job}\"}}")), "the operator-down alert selects job {job}");
    let dashboard = chart_file("dashboards/hpc-cache-operator.json");
    assert!(dashboard.contains(&format!("up{{job=\\\"{job}\\\"}}")), "the dashboard selects job {job}");
}

#[tokio::test]
async fn the_dashboard_config_map_carries_the_dashboard_and_the_sidecar_label() {
    let cluster = TestCluster::shared();
    let dashboard: serde_json::Value = serde_json::from_str(&chart_file("dashboards/hpc-cache-operator.json")).unwrap();
    let rendered = run(cluster.helm().args(["template", "hpcc", chart()]).args(MONITORING));
    let config_map = documents(&rendered).remove("ConfigMap").expect("the dashboard ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1", "the default sidecar label");
    let shipped: serde_json::Value =
        serde_json::from_str(config_map["data"]["hpc-cache-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
    assert_eq!(dashboard["uid"], "hpc-cache-operator");
    // Every panel queries the data source the user picks.
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        assert!(!panel["targets"].as_array().unwrap().is_empty(), "{} has no query", panel["title"]);
    }
    let relabelled = run(cluster.helm().args(["template", "hpcc", chart()]).args(MONITORING).args([
        "--set",
        "grafanaDashboard.labels.grafana_dashboard=null",
        "--set",
        "grafanaDashboard.labels.team=storage",
    ]));
    let labels = documents(&relabelled)["ConfigMap"]["metadata"]["labels"].clone();
    assert_eq!(labels["team"], "storage");
    assert!(labels.get("grafana_dashboard").is_none(), "{labels}");
}

#[tokio::test]
async fn every_opt_in_together_passes_lint_and_a_server_side_dry_run() {
    let cluster = TestCluster::shared();
    let ns = cluster.namespace("all-opt-ins").await;
    cluster.install_crds(format!("{REPO}/tests/fixtures/monitoring-crds.yaml")).await;
    let all: Vec<&str> = MONITORING
        .iter()
        .copied()
        .chain([
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "extraEnv[0].name=HPCC_POLL_SECONDS",
            "--set-string",
            "extraEnv[0].value=30",
            "--set",
            "extraArgs[0]=--concurrency=4",
            "--set",
            "topologySpreadConstraints[0].maxSkew=1",
            "--set",
            "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
            "--set",
            "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        ])
        .collect();
    run(cluster.helm().args(["lint", "--strict", chart(), "--namespace", &ns]).args(&all));
    let rendered = run(cluster.helm().args(["template", "hpcc", chart(), "--namespace", &ns]).args(&all));
    let applied = dry_run_apply(cluster, &rendered);
    for object in [
        "poddisruptionbudget.policy/",
        "networkpolicy.networking.k8s.io/",
        "servicemonitor.monitoring.coreos.com/",
        "prometheusrule.monitoring.coreos.com/",
        "-dashboard",
        "deployment.apps/",
    ] {
        assert!(applied.contains(object), "{object} missing:\n{applied}");
    }
}

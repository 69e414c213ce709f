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

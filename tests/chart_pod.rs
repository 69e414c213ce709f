//! What the chart renders, run as a pod would run it: the rendered Deployment's command (the image's entrypoint
//! `hpc-cache-operator run`), args, env and port, with a token of the chart's ServiceAccount (so its RBAC is what the
//! operator gets), the probes polled as the kubelet would, through one cache's life. No node runs here, so the
//! process is started by the test; Azure is the simulator, and everything listens on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hpcc_sim::{Seed, SimConfig, Simulator};
use hpcc_test_support::{REPO, TestCluster};
use serde::Deserialize as _;
use serde_json::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/hpc-cache-operator");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The rendered Deployment's operator container.
fn container(rendered: &str) -> Value {
    for doc in serde_yaml_ng::Deserializer::from_str(rendered) {
        let v = Value::deserialize(doc).unwrap_or(Value::Null);
        if v["kind"] == "Deployment" {
            return v["spec"]["template"]["spec"]["containers"][0].clone();
        }
    }
    panic!("no Deployment rendered")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rendered_deployment_runs_one_cache_to_ready_with_the_charts_service_account() {
    let cluster = TestCluster::shared();
    cluster.install_crds(format!("{REPO}/crds")).await;
    let ns = cluster.namespace("pod").await;
    let release = format!("p{}", ns.rsplit('-').next().unwrap());
    // The chart as a platform team installs it (secret mode: the simulator has a client secret); its CRDs are
    // already in place (crds.enabled=false avoids a second owner for them in this shared apiserver).
    let watch = format!("watchNamespace={ns}");
    let values = ["--set", "azure.credentials.mode=secret", "--set", "azure.credentials.secretName=azure-sp"];
    run(cluster
        .helm()
        .args(["install", &release, CHART, "--namespace", &ns, "--set", "crds.enabled=false", "--set", &watch])
        .args(values));
    let rendered = run(cluster.helm().args(["get", "manifest", &release, "--namespace", &ns]));
    let c = container(&rendered);
    let sa = format!("{release}-hpc-cache-operator");

    // A token of the chart's ServiceAccount, in a kubeconfig like the in-cluster one.
    let token = run(cluster.kubectl().args(["create", "token", &sa, "-n", &ns])).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let admin = std::fs::read_to_string(cluster.kubeconfig_path()).unwrap();
    let mut cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(&admin).unwrap();
    for user in cfg["users"].as_sequence_mut().unwrap() {
        user["user"] = serde_yaml_ng::from_str(&format!("token: {token}")).unwrap();
    }
    std::fs::write(&kubeconfig, serde_yaml_ng::to_string(&cfg).unwrap()).unwrap();

    // The simulator stands in for Azure; the Secret the chart names holds its credentials.
    let seed = Seed::from_yaml(&std::fs::read_to_string(format!("{REPO}/examples/seed.yaml")).unwrap()).unwrap();
    let sim = Simulator::start(SimConfig {
        seed: Some(seed),
        speed: 200.0,
        grant_propagation: Duration::ZERO,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let sim_env: BTreeMap<String, String> = sim.env().into_iter().collect();

    // The container's environment, resolved as the kubelet would (valueFrom: field and Secret references).
    let mut env: Vec<(String, String)> = vec![];
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(field) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.name" => "operator-pod-0".to_string(),
                "metadata.namespace" => ns.clone(),
                other => panic!("unexpected fieldRef {other}"),
            }
        } else if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
            sim_env.get(key).cloned().unwrap_or_else(|| panic!("the simulator has no {key}"))
        } else {
            panic!("unexpected env {e}")
        };
        env.push((name, value));
    }
    // Loopback only in tests: the rendered 0.0.0.0:PORT becomes 127.0.0.1 on a free port (the port name stays).
    let port = free_port();
    let rendered_port = c["ports"][0]["containerPort"].as_u64().unwrap();
    for (name, value) in env.iter_mut() {
        if name == "HPCC_METRICS_ADDR" {
            assert_eq!(value, &format!("0.0.0.0:{rendered_port}"), "the chart serves metrics on its container port");
            *value = format!("127.0.0.1:{port}");
        }
    }
    // What a cloud would add (the simulator's endpoints), never overriding the chart's settings.
    let chart_names: Vec<String> = env.iter().map(|(n, _)| n.clone()).collect();
    for (k, v) in &sim_env {
        if !chart_names.contains(k) && !k.starts_with("AZURE_CLIENT") && k != "AZURE_TENANT_ID" {
            env.push((k.clone(), v.clone()));
        }
    }
    let args: Vec<String> =
        c["args"].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect()).unwrap_or_default();
    let log = dir.path().join("operator.log");
    let mut operator = Command::new(env!("CARGO_BIN_EXE_hpc-cache-operator"))
        .arg("run") // the image's ENTRYPOINT ["/hpc-cache-operator", "run"], then the container's args
        .args(&args)
        .env_clear()
        .envs(env.iter().cloned())
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // The kubelet's probes: liveness, then readiness, every second.
    let http = reqwest::Client::new();
    let probe = |path: &'static str| {
        let http = http.clone();
        async move { http.get(format!("http://127.0.0.1:{port}{path}")).send().await.is_ok_and(|r| r.status() == 200) }
    };
    let start = Instant::now();
    while !(probe("/healthz").await && probe("/readyz").await) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "probes never passed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // One cache's life under the chart's RBAC: apply, Ready, delete, gone.
    let mut apply = cluster.kubectl().args(["apply", "-n", &ns, "-f", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(std::fs::read_to_string(format!("{REPO}/examples/user-assigned.yaml")).unwrap().as_bytes())
        .unwrap();
    assert!(apply.wait().unwrap().success());
    let phase = |ns: &str| {
        String::from_utf8(
            cluster
                .kubectl()
                .args(["get", "hpcc", "imaging", "-n", ns, "-o", "jsonpath={.status.phase}"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let start = Instant::now();
    while phase(&ns) != "Ready" {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not Ready:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(probe("/healthz").await, "liveness failed during the cache's life");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    run(cluster.kubectl().args(["delete", "hpcc", "imaging", "-n", &ns, "--timeout=60s"]));
    assert!(!sim.requests().iter().any(|r| r.status == 403 && r.path.contains("/caches/")), "no Azure refusal");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log_text.contains("forbidden"), "the chart's RBAC sufficed:\n{log_text}");
    let _ = operator.kill();
    let _ = operator.wait();
    run(cluster.helm().args(["uninstall", &release, "--namespace", &ns]));
}

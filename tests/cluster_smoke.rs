//! The test control plane itself: the pinned version, discovery through kubectl, RBAC, service-account tokens and
//! teardown.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hpcc_test_support::TestCluster;

fn pinned(key: &str) -> String {
    let versions = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/versions.env")).unwrap();
    versions
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not pinned in scripts/versions.env"))
        .trim()
        .to_string()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn apiserver_reports_the_pinned_version() {
    let cluster = TestCluster::shared();
    let version = cluster.client().await.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, pinned("K8S_VERSION"));
    // k8s-openapi is built for this minor (feature v1_34): keep the two in step.
    assert_eq!(format!("v{}.{}", version.major, version.minor), pinned("K8S_VERSION").rsplit_once('.').unwrap().0);

    let raw = run(cluster.kubectl().args(["get", "--raw", "/version"]));
    assert!(raw.contains(&pinned("K8S_VERSION")), "{raw}");
}

#[tokio::test]
async fn kubectl_discovers_api_resources() {
    let cluster = TestCluster::shared();
    let resources = run(cluster.kubectl().args(["api-resources", "-o", "name"]));
    for expected in ["namespaces", "customresourcedefinitions.apiextensions.k8s.io", "leases.coordination.k8s.io"] {
        assert!(resources.lines().any(|l| l == expected), "{expected} missing from:\n{resources}");
    }
}

#[tokio::test]
async fn rbac_is_enforced_for_non_admins() {
    let cluster = TestCluster::shared();
    let ns = cluster.namespace("rbac").await;
    let out = cluster.kubectl().args(["get", "configmaps", "-n", &ns, "--as", "nobody"]).output().unwrap();
    assert!(!out.status.success(), "an unprivileged user could list configmaps");
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{out:?}");
    // ...while the admin can.
    run(cluster.kubectl().args(["get", "configmaps", "-n", &ns]));
}

#[tokio::test]
async fn service_account_tokens_are_issued() {
    let cluster = TestCluster::shared();
    let ns = cluster.namespace("sa").await;
    run(cluster.kubectl().args(["create", "serviceaccount", "robot", "-n", &ns]));
    let token = run(cluster.kubectl().args(["create", "token", "robot", "-n", &ns]));
    assert_eq!(token.trim().split('.').count(), 3, "not a JWT: {token}");
    // The apiserver accepts the token it signed: the robot is authenticated (and, without a binding, forbidden).
    let out = cluster
        .kubectl()
        .args(["auth", "whoami", "--token", token.trim(), "-o", "jsonpath={.status.userInfo.username}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("system:serviceaccount:{ns}:robot"), "{out:?}");
}

#[tokio::test]
async fn namespaces_are_unique_per_test() {
    let cluster = TestCluster::shared();
    let (a, b) = (cluster.namespace("same").await, cluster.namespace("same").await);
    assert_ne!(a, b);
}

fn listening(server: &str) -> bool {
    TcpStream::connect(server.trim_start_matches("https://")).is_ok()
}

async fn wait_until_closed(server: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !listening(server) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn an_owned_cluster_stops_on_drop() {
    let cluster = TestCluster::start();
    eprintln!("a dedicated control plane started in {:.1?}", cluster.started_in());
    let server = cluster.server().to_string();
    cluster.client().await.apiserver_version().await.unwrap();
    drop(cluster);
    assert!(wait_until_closed(&server, Duration::from_secs(5)).await, "{server} still listening after drop");
}

#[tokio::test]
async fn the_watchdog_stops_a_cluster_whose_owner_died() {
    let dir = tempfile::tempdir().unwrap();
    let mut owner = Command::new("sleep").arg("600").spawn().unwrap();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/control-plane.sh"))
        .arg("start")
        .arg(dir.path())
        .env("HPCC_TEST_BIN_DIR", TestCluster::bin_dir())
        .env("CP_OWNER_PID", owner.id().to_string())
        .env("CP_CLEANUP", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    let server = env.lines().find_map(|l| l.strip_prefix("SERVER=")).unwrap().to_string();
    assert!(listening(&server));

    owner.kill().unwrap();
    owner.wait().unwrap();
    let stopped = wait_until_closed(&server, Duration::from_secs(10)).await;
    if !stopped {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/control-plane.sh"))
            .arg("stop")
            .arg(dir.path())
            .status()
            .unwrap();
    }
    assert!(stopped, "{server} still listening 10s after its owner died");
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.path().exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!dir.path().exists(), "the watchdog left {} behind", dir.path().display());
}

//! A real Kubernetes control plane (etcd + kube-apiserver) for integration tests.
//!
//! The binaries come from `scripts/test-deps.sh` (built from source and cached) or from `HPCC_TEST_BIN_DIR`; the
//! processes are started by `scripts/control-plane.sh`, which owns every flag, so `make dev-cluster` and the tests run
//! the same control plane.
//!
//! ```ignore
//! use hpcc_test_support::TestCluster;
//!
//! #[tokio::test]
//! async fn something() {
//!     let cluster = TestCluster::shared(); // one control plane per test binary
//!     let ns = cluster.namespace("something").await; // isolate the test in its own namespace
//!     let client = cluster.client().await;
//!     // ...
//! }
//! ```
//!
//! Teardown: a cluster from [`TestCluster::start`] stops when dropped (also while unwinding from a panic). The
//! shared cluster lives in a static, which Rust never drops, so the script runs a watchdog that stops the control
//! plane as soon as the test process exits, however it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use serde::Deserialize;

/// The repository root (this crate lives in `crates/hpcc-test-support`).
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const FIELD_MANAGER: &str = "hpcc-test-harness";

/// A running etcd + kube-apiserver on loopback ports, with an admin kubeconfig.
pub struct TestCluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    server: String,
    started_in: Duration,
}

impl TestCluster {
    /// The control plane shared by every test in this test binary, started on first use.
    ///
    /// Tests share it safely by working in their own namespace ([`TestCluster::namespace`]); cluster-scoped
    /// objects (CRDs) are applied idempotently with server-side apply.
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();
        match SHARED.get_or_init(TestCluster::try_start) {
            Ok(cluster) => cluster,
            Err(e) => panic!("the shared test control plane did not start: {e}"),
        }
    }

    /// A control plane of its own, stopped when the value is dropped.
    pub fn start() -> TestCluster {
        TestCluster::try_start().unwrap_or_else(|e| panic!("test control plane did not start: {e}"))
    }

    fn try_start() -> Result<TestCluster, String> {
        let bin = TestCluster::bin_dir();
        let dir =
            tempfile::Builder::new().prefix("hpcc-control-plane-").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let begin = Instant::now();
        let out = Command::new(format!("{REPO}/scripts/control-plane.sh"))
            .arg("start")
            .arg(dir.path())
            .env("HPCC_TEST_BIN_DIR", bin)
            .env("CP_OWNER_PID", std::process::id().to_string())
            // the shared cluster's TempDir is never dropped: the watchdog deletes it after the test process exits
            .env("CP_CLEANUP", if std::env::var_os("HPCC_KEEP_CONTROL_PLANE").is_some() { "0" } else { "1" })
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running scripts/control-plane.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/control-plane.sh start failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let started_in = begin.elapsed();
        let env = std::fs::read_to_string(dir.path().join("env")).map_err(|e| format!("reading env: {e}"))?;
        let server = env
            .lines()
            .find_map(|l| l.strip_prefix("SERVER="))
            .ok_or("no SERVER= in the control plane's env file")?
            .to_string();
        eprintln!("test control plane {server} ready in {started_in:.1?} ({})", dir.path().display());
        Ok(TestCluster { kubeconfig: dir.path().join("kubeconfig"), dir, server, started_in })
    }

    /// The directory holding kube-apiserver, etcd, kubectl and helm: `HPCC_TEST_BIN_DIR`, or what
    /// `scripts/test-deps.sh` prints (it builds the binaries the first time and honours `KUBEBUILDER_ASSETS`).
    pub fn bin_dir() -> &'static Path {
        static BIN: OnceLock<PathBuf> = OnceLock::new();
        BIN.get_or_init(|| {
            if let Some(dir) = std::env::var_os("HPCC_TEST_BIN_DIR") {
                return PathBuf::from(dir);
            }
            let out = Command::new(format!("{REPO}/scripts/test-deps.sh"))
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .expect("running scripts/test-deps.sh");
            assert!(out.status.success(), "scripts/test-deps.sh failed ({})", out.status);
            PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
        })
    }

    /// Path of an admin kubeconfig (bearer token in `system:masters`, CA of the apiserver's serving certificate).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// How long `scripts/control-plane.sh start` took until `/readyz` answered `ok`.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The directory with the control plane's logs (`etcd.log`, `kube-apiserver.log`), certificates and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the kube-apiserver (SIGKILL) and starts it again on the same port, with the same certificates and
    /// admin token, etcd and its data untouched: every connection and watch of every client breaks, objects and
    /// kubeconfigs stay valid. Returns once `/readyz` answers `ok` again (how long that took).
    ///
    /// Only for a cluster of one's own ([`TestCluster::start`]): the shared one serves other tests.
    pub fn restart_apiserver(&self) -> Result<Duration, String> {
        let begin = Instant::now();
        let out = Command::new(format!("{REPO}/scripts/control-plane.sh"))
            .arg("restart-apiserver")
            .arg(self.dir.path())
            .env("HPCC_TEST_BIN_DIR", TestCluster::bin_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running scripts/control-plane.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/control-plane.sh restart-apiserver failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(begin.elapsed())
    }

    /// A new admin client. Make one per test: a client is bound to the tokio runtime it first runs on, and every
    /// `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Client {
        // kube is built with aws-lc-rs; make it the process default so rustls never has to guess.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading the test kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("loading the test kubeconfig");
        Client::try_from(config).expect("building a kube client")
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`, ready for more arguments.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(TestCluster::bin_dir().join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).env("KUBECONFIG", &self.kubeconfig).stdin(Stdio::null());
        cmd
    }

    /// `helm --kubeconfig <admin kubeconfig>`, with helm's cache/config/data kept inside the cluster's directory.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(TestCluster::bin_dir().join("helm"));
        let home = self.dir.path().join("helm");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null());
        cmd
    }

    /// Creates a namespace named `<prefix>-<random suffix>` and returns its name: one per test keeps tests that
    /// share the control plane apart.
    pub async fn namespace(&self, prefix: &str) -> String {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-{}-", COUNT.fetch_add(1, Ordering::Relaxed))),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating a test namespace");
        created.metadata.name.expect("a generated namespace name")
    }

    /// Applies every CustomResourceDefinition in `path` (a directory of `*.yaml`/`*.yml` files or one file) with
    /// server-side apply and waits until each is `Established`. Returns the CRD names.
    pub async fn install_crds(&self, path: impl AsRef<Path>) -> Vec<String> {
        let path = path.as_ref();
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
                .map(|entry| entry.expect("directory entry").path())
                .filter(|p| p.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        let api = Api::<CustomResourceDefinition>::all(self.client().await);
        let mut names = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value = serde_yaml_ng::Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
                if value.is_null() {
                    continue; // an empty document, e.g. after a trailing `---`
                }
                let crd: CustomResourceDefinition = serde_yaml_ng::from_value(value)
                    .unwrap_or_else(|e| panic!("{} holds something other than a CRD: {e}", file.display()));
                let name = crd.metadata.name.clone().expect("a CRD has a name");
                api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd))
                    .await
                    .unwrap_or_else(|e| panic!("applying CRD {name} from {}: {e}", file.display()));
                names.push(name);
            }
        }
        assert!(!names.is_empty(), "no CustomResourceDefinition found in {}", path.display());
        for name in &names {
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(api.clone(), name, conditions::is_crd_established()),
            )
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
            .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
        }
        names
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let stopped = Command::new(format!("{REPO}/scripts/control-plane.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            eprintln!("stopping the test control plane in {} failed: {stopped:?}", self.dir.path().display());
        }
    }
}

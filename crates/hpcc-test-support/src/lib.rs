//! Test-only helpers shared by the integration tests and the benchmark of every crate (a dev-dependency only):
//! [`cluster`] starts a real kube-apiserver + etcd, [`sim`] holds the simulator's shared test world.

pub mod cluster;
pub mod sim;

pub use cluster::{REPO, TestCluster};

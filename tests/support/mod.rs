//! Test support shared by the integration tests: `mod support;` in a test file, then `support::TestCluster`.
#![allow(dead_code)] // every test binary uses a different part of it

pub mod cluster;
pub mod sim;

#[allow(unused_imports)] // the simulator-only test binaries use `support::sim` alone
pub use cluster::TestCluster;

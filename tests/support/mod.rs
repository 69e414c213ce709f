//! Test support shared by the integration tests: `mod support;` in a test file, then `support::TestCluster`.
#![allow(dead_code)] // every test binary uses a different part of it

pub mod cluster;
pub mod sim;

pub use cluster::TestCluster;

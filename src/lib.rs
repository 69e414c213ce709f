//! hpc-cache-operator: a Kubernetes operator for Azure HPC Cache with customer-managed keys.
//!
//! A pure core ([`machine`]) decides; thin edges ([`controller`] for Kubernetes, [`azure`] for ARM and Key Vault)
//! observe and act. [`sim`] is a faithful local stand-in for the Azure APIs used by tests and the demo.

pub mod api;
pub mod azure;
pub mod controller;
pub mod machine;
pub mod sim;

//! hpc-cache-operator: a Kubernetes operator for Azure HPC Cache with customer-managed keys.
//!
//! The pure core ([`hpcc_core`]) decides; this crate is the thin Kubernetes edge around it: [`reconcile`] runs the
//! named steps of one reconcile, [`hpcc_azure`] talks to ARM and Key Vault. The simulator (`hpcc_sim`) is a
//! separate crate, linked only with the `simulator` feature. [`grant_command`] prints what a person runs to
//! authorize a cache's identity by hand (`keyAccess: Manual`).

pub mod grant_command;
pub mod reconcile;

//! The `HpcCache` custom resource, one module per API version. `v1alpha1` is the only version so far; a later
//! version gets a sibling module and a conversion, and the operator keeps using the storage version.

pub mod v1alpha1;

//! How the simulator runs ([`SimConfig`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::seed::Seed;

/// How the simulator runs. All durations are simulated time.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// ARM + Entra + Key Vault listener (must be loopback). Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Plain-HTTP admin API listener (must be loopback). Default `127.0.0.1:0`.
    pub admin_listen: SocketAddr,
    /// Simulated seconds per real second. Default 1.0.
    pub speed: f64,
    pub seed: Option<Seed>,
    /// Time a CMK cache may wait for key access before it fails. Default 90 min.
    pub authorization_window: Duration,
    /// From "the cache identity can reach the key" to `Healthy`/`Succeeded`. Default 5 min.
    pub key_ready_delay: Duration,
    /// Creation time when key access exists from the start (or without CMK). Default 10 min.
    pub create_delay: Duration,
    /// Product-retirement mode: creating a cache answers 409 `OperationNotAllowed`.
    pub retired: bool,
    /// Enforce ARM token buckets (subscription reads 250/25 per s, writes 200/10, deletes 200/10).
    pub throttling: bool,
    /// Serve ARM/Entra/Key Vault over plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// From a grant (access policy permission or role assignment, made after start) to it counting for a cache's
    /// key access. ARM reads show the grant at once. Default 5 min: Key Vault RBAC documents "up to 10 minutes"
    /// for role assignments; half of that is a typical wait that still makes clients cope with the delay.
    /// Seeded access (`grants`, `accessPolicies`, `roleAssignments`) is in effect from the start.
    pub grant_propagation: Duration,
    /// With `rotationToLatestKeyVersionEnabled`, how long after a newer enabled key version appears the cache uses
    /// it. Default 60 min (Microsoft: automatic key rotation updates "within one hour").
    pub auto_rotation_delay: Duration,
    /// Real (wall-clock) time a Key Vault write (vault PATCH, accessPolicies add/replace/remove, role assignment
    /// PUT/DELETE at or below the vault) stays in flight; a second write to the same vault meanwhile gets 409
    /// `ConflictError`. Default 20 ms; zero disables.
    pub vault_write_in_flight: Duration,
    /// Every n-th successful cache create answers 202 without a body (plus `Location`, `Retry-After`) instead of
    /// 201. Default 3; 0 = always 201.
    pub create_accepted_every: u32,
    /// Role assignments per page of a list (`nextLink` for the rest). Default 2.
    pub role_assignment_page_size: usize,
    /// Caches per page of a cache list (`nextLink` for the rest). Default 1000. `Caches_ListByResourceGroup` and
    /// `Caches_List` are pageable (`x-ms-pageable`, `nextLinkName: nextLink`, in the StorageCache spec); the page
    /// size is the provider's and undocumented, so this is a model: large resource groups take several reads.
    pub cache_page_size: usize,
    /// The managed-identity endpoint's `IDENTITY_HEADER` secret (`Simulator::managed_identity_env`). Default: random.
    pub identity_header: String,
    /// From an Azure Managed Lustre file system's create request to `Succeeded`/`Available`. Default 20 min (Terraform
    /// azurerm allows 30 min for `azurerm_managed_lustre_file_system` creates; tests shorten it or advance the clock).
    pub aml_create_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            speed: 1.0,
            seed: None,
            authorization_window: Duration::from_secs(90 * 60),
            key_ready_delay: Duration::from_secs(5 * 60),
            create_delay: Duration::from_secs(10 * 60),
            retired: false,
            throttling: false,
            plain_http: false,
            grant_propagation: Duration::from_secs(5 * 60),
            auto_rotation_delay: Duration::from_secs(60 * 60),
            vault_write_in_flight: Duration::from_millis(20),
            create_accepted_every: 3,
            role_assignment_page_size: 2,
            cache_page_size: 1000,
            identity_header: uuid::Uuid::new_v4().to_string(),
            aml_create_delay: Duration::from_secs(20 * 60),
        }
    }
}

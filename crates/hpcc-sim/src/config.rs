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
        }
    }
}

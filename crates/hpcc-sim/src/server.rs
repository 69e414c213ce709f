//! What the listeners share ([`Shared`]): configuration, clock, world, request log, fault rules, token buckets,
//! the token key and the URLs. The fronts (`http`, `arm`, `admin`) hold it; the handlers below them get only the
//! parts they read.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use super::auth::Tokens;
use super::clock::SimClock;
use super::config::SimConfig;
use super::endpoints::Endpoints;
use super::faults::FaultRule;
use super::request_log::RequestRecord;
use super::state::World;
use super::throttle::Buckets;

pub struct Shared {
    pub cfg: SimConfig,
    pub clock: SimClock,
    pub world: Mutex<World>,
    pub log: Mutex<Vec<RequestRecord>>,
    pub faults: Mutex<Vec<FaultRule>>,
    pub buckets: Mutex<Buckets>,
    /// Key Vault writes in flight: lower-case vault name → real instant the write completes.
    pub vault_writes: Mutex<BTreeMap<String, Instant>>,
    pub tokens: Tokens,
    pub endpoints: Endpoints,
    pub ca_pem: String,
}

impl Shared {
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

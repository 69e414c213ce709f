//! A faithful local stand-in for the Azure APIs the operator uses: Entra token endpoint, ARM
//! (`Microsoft.StorageCache/caches` and `amlFilesystems`, `Microsoft.KeyVault/vaults`, role assignments,
//! user-assigned identities) and
//! the Key Vault keys data plane, with a simulated clock, fault injection, throttling and a request log.
//!
//! See `docs/simulator.md`. Layout, from the bottom up; a module names only modules listed before it (no import
//! circles, checked by the workspace test `module_graph`):
//! - leaves: [`clock`] (simulated time), [`seed`] (the initial world), `config` ([`SimConfig`]), `request_log`
//!   ([`RequestRecord`]), `endpoints` (the simulator's URLs), `wire` (the request/response types every front
//!   shares, ARM's common errors), `tls` (the test CA);
//! - [`state`] (the world and its pure rules);
//! - `throttle` (ARM token buckets), `faults` (fault rules), `route` (which ARM resource a path names, and the
//!   context its handler gets), `auth` (Entra, issuing and checking tokens), `managed_identity` (the host's
//!   managed-identity token endpoint);
//! - the resource handlers, each given only what it reads: `caches` (also the key-reference rules and operation
//!   records the resource provider's handlers share), `amlfs` (Azure Managed Lustre), `operations`
//!   (`ascOperations` of both), `vaults` (vaults, role assignments, identities), `keys` (Key Vault data plane);
//! - `server` (what the listeners share);
//! - the fronts: `arm` (bearer, throttling, authorization, then the ARM handlers), `http` (the main listener:
//!   faults, dispatch, request log), `admin` (the admin listener);
//! - this root: [`Simulator`], [`run_cli`].

mod admin;
mod amlfs;
mod arm;
mod auth;
mod caches;
pub mod clock;
mod config;
mod endpoints;
mod faults;
mod http;
mod keys;
mod managed_identity;
mod operations;
mod request_log;
mod route;
pub mod seed;
mod server;
pub mod state;
mod throttle;
mod tls;
mod vaults;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};

pub use config::SimConfig;
pub use request_log::RequestRecord;
pub use seed::Seed;

use auth::Tokens;
use clock::SimClock;
use endpoints::Endpoints;
use server::Shared;
use state::{Delays, World};
use throttle::Buckets;

/// One cache's moments in simulated time ([`Simulator::cache_times`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheTimes {
    pub id: String,
    pub name: String,
    pub created_at: jiff::Timestamp,
    /// When its health became `WaitingForKey` (its creation, if its identity could not reach the key then).
    pub waiting_for_key_at: Option<jiff::Timestamp>,
    /// When the grant request that gave its identity key access was made (`None`: no access, or seeded access).
    pub key_granted_at: Option<jiff::Timestamp>,
    /// When it became `Succeeded`/`Healthy`, if it has.
    pub ready_at: Option<jiff::Timestamp>,
    /// When it failed (authorization window missed), if it has.
    pub failed_at: Option<jiff::Timestamp>,
}

/// A running simulator. Dropping it (or [`Simulator::shutdown`]) stops its listeners.
pub struct Simulator {
    shared: Arc<Shared>,
    handles: Vec<axum_server::Handle<SocketAddr>>,
    ca_file: Option<PathBuf>,
}

impl Simulator {
    pub async fn start(cfg: SimConfig) -> anyhow::Result<Simulator> {
        for (what, a) in [("listen", cfg.listen), ("admin listen", cfg.admin_listen)] {
            if !a.ip().is_loopback() {
                bail!("refusing to {what} on {a}: the simulator only listens on loopback addresses");
            }
        }
        let listener = std::net::TcpListener::bind(cfg.listen).with_context(|| format!("binding {}", cfg.listen))?;
        let admin_listener =
            std::net::TcpListener::bind(cfg.admin_listen).with_context(|| format!("binding {}", cfg.admin_listen))?;
        let addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let endpoints = Endpoints::new(addr, admin_addr, cfg.plain_http)?;

        let tls = if cfg.plain_http { None } else { Some(tls::generate(addr)?) };
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone()).unwrap_or_default();

        let now = jiff::Timestamp::now();
        let clock = SimClock::new(now, cfg.speed);
        let mut world = World::new(Delays {
            authorization_window: cfg.authorization_window,
            key_ready_delay: cfg.key_ready_delay,
            create_delay: cfg.create_delay,
            grant_propagation: cfg.grant_propagation,
            auto_rotation_delay: cfg.auto_rotation_delay,
            aml_create_delay: cfg.aml_create_delay,
        });
        if let Some(seed) = &cfg.seed {
            world.apply_seed(seed, now).map_err(|e| anyhow::anyhow!("invalid seed: {e}"))?;
        }
        world.ensure_operator();

        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            clock,
            world: Mutex::new(world),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            buckets: Mutex::new(Buckets::default()),
            vault_writes: Mutex::new(Default::default()),
            tokens: Tokens::generate(),
            endpoints,
            ca_pem,
        });

        let ca_file = if shared.ca_pem.is_empty() {
            None
        } else {
            let dir = std::env::temp_dir().join(format!("hpcc-sim-{}-{}", std::process::id(), addr.port()));
            std::fs::create_dir_all(&dir)?;
            let f = dir.join("ca.pem");
            std::fs::write(&f, &shared.ca_pem)?;
            Some(f)
        };

        let main_handle = axum_server::Handle::new();
        let app = http::router(shared.clone());
        match tls {
            Some(t) => {
                let server = axum_server::from_tcp_rustls(listener, t.rustls_config)?.handle(main_handle.clone());
                tokio::spawn(async move {
                    if let Err(e) = server.serve(app.into_make_service()).await {
                        tracing::error!("simulator listener stopped: {e}");
                    }
                });
            }
            None => {
                let server = axum_server::from_tcp(listener)?.handle(main_handle.clone());
                tokio::spawn(async move {
                    if let Err(e) = server.serve(app.into_make_service()).await {
                        tracing::error!("simulator listener stopped: {e}");
                    }
                });
            }
        }
        let admin_handle = axum_server::Handle::new();
        let admin_app = admin::router(shared.clone());
        let admin_server = axum_server::from_tcp(admin_listener)?.handle(admin_handle.clone());
        tokio::spawn(async move {
            if let Err(e) = admin_server.serve(admin_app.into_make_service()).await {
                tracing::error!("simulator admin listener stopped: {e}");
            }
        });
        Ok(Simulator { shared, handles: vec![main_handle, admin_handle], ca_file })
    }

    /// `https://127.0.0.1:PORT/`: the ARM endpoint and the Entra authority host.
    pub fn base_url(&self) -> url::Url {
        self.shared.endpoints.base_url.clone()
    }

    /// `http://127.0.0.1:ADMINPORT/`
    pub fn admin_url(&self) -> url::Url {
        self.shared.endpoints.admin_url.clone()
    }

    /// PEM of the generated test CA; empty with `plain_http`.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca_pem
    }

    /// `https://{vault}.vault.localhost:PORT/` (routed by the Host header; resolve it to 127.0.0.1).
    pub fn vault_uri(&self, vault_name: &str) -> url::Url {
        self.shared.endpoints.vault_uri(vault_name)
    }

    /// Object id of the "HPC Cache Resource Provider" service principal (client id
    /// [`state::HPC_CACHE_RP_APP_ID`]): give it the blob integration roles on a storage account.
    pub fn hpc_cache_rp_object_id(&self) -> String {
        self.shared.world().hpc_cache_rp_object_id().unwrap_or(state::HPC_CACHE_RP_OBJECT_ID).to_string()
    }

    /// Tenant of the simulated world.
    pub fn tenant_id(&self) -> String {
        self.shared.world().tenant_id.clone()
    }

    /// The env-file pairs (see `docs/simulator.md`).
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with_ca(self.ca_file.as_deref())
    }

    fn env_with_ca(&self, ca: Option<&Path>) -> Vec<(String, String)> {
        let w = self.shared.world();
        let op = w.operator().cloned();
        let mut v = vec![
            ("AZURE_TENANT_ID".to_string(), w.tenant_id.clone()),
            ("AZURE_CLIENT_ID".to_string(), op.as_ref().map(|p| p.client_id.clone()).unwrap_or_default()),
            ("AZURE_CLIENT_SECRET".to_string(), op.as_ref().and_then(|p| p.secret.clone()).unwrap_or_default()),
            ("AZURE_AUTHORITY_HOST".to_string(), self.base_url().to_string()),
            ("HPCC_ARM_ENDPOINT".to_string(), self.base_url().to_string()),
        ];
        if let Some(ca) = ca {
            v.push(("HPCC_CA_FILE".to_string(), ca.display().to_string()));
        }
        v.push(("HPCC_SIM_ADMIN".to_string(), self.admin_url().to_string()));
        v.push(("HPCC_RESOLVE_TO_LOOPBACK".to_string(), "true".to_string()));
        v.push(("HPCC_KEYVAULT_DNS_SUFFIX".to_string(), "vault.localhost".to_string()));
        if let Some(rp) = w.hpc_cache_rp_object_id() {
            v.push(("HPCC_STORAGE_CACHE_PROVIDER_PRINCIPAL_ID".to_string(), rp.to_string()));
        }
        v
    }

    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` of the simulated host's managed-identity endpoint (App Service's
    /// form), for azure_identity's `ManagedIdentityCredential`; it issues tokens for the seeded user-assigned
    /// identities. Not part of [`Simulator::env`].
    pub fn managed_identity_env(&self) -> Vec<(String, String)> {
        vec![
            ("IDENTITY_ENDPOINT".to_string(), format!("{}{}", self.base_url(), managed_identity::PATH)),
            ("IDENTITY_HEADER".to_string(), self.shared.cfg.identity_header.clone()),
        ]
    }

    /// Write the env file (`KEY=value` lines, shell-quoted) and the CA PEM next to it (`<file>.ca.pem`).
    pub fn write_env_file(&self, path: &Path) -> anyhow::Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::fs::canonicalize(&dir).with_context(|| format!("env file directory {}", dir.display()))?;
        let fname = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "sim.env".into());
        let ca = if self.shared.ca_pem.is_empty() {
            None
        } else {
            let ca = dir.join(format!("{fname}.ca.pem"));
            std::fs::write(&ca, &self.shared.ca_pem).with_context(|| format!("writing {}", ca.display()))?;
            Some(ca)
        };
        let mut out = String::from("# written by `hpc-cache-operator simulate`\n");
        for (k, v) in self.env_with_ca(ca.as_deref()) {
            out.push_str(&format!("{k}={}\n", shell_quote(&v)));
        }
        std::fs::write(dir.join(&fname), out).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The request log.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What happened to each cache when, in simulated time ([`CacheTimes`]): the moments benchmarks measure
    /// reaction and readiness from. Also in the admin API's `GET /state` (`waitingForKeyAt`, `keyGrantedAt`).
    pub fn cache_times(&self) -> Vec<CacheTimes> {
        let now = self.now();
        let mut w = self.shared.world();
        w.tick(now);
        let delays = w.delays;
        w.caches
            .values()
            .map(|c| CacheTimes {
                id: c.id(),
                name: c.name.clone(),
                created_at: c.timeline.created_at,
                waiting_for_key_at: c.timeline.waiting_for_key_at(),
                key_granted_at: w.key_granted_at(c),
                ready_at: c.timeline.ready_at(&delays).filter(|r| *r <= now),
                failed_at: c.timeline.failed_at.filter(|f| *f <= now),
            })
            .collect()
    }

    /// Jump the simulated clock ahead.
    pub fn advance(&self, d: Duration) {
        self.shared.clock.advance(d);
    }

    /// Run the simulated clock at `speed` from now on (keeps the time reached; returns the speed in effect).
    pub fn set_speed(&self, speed: f64) -> f64 {
        self.shared.clock.set_speed(speed)
    }

    /// The grant propagation of grants made from now on (admin `POST /delays`); grants already made keep theirs.
    pub fn set_grant_propagation(&self, d: Duration) {
        self.shared.world().delays.grant_propagation = d;
    }

    /// Simulated now.
    pub fn now(&self) -> jiff::Timestamp {
        self.shared.clock.now()
    }

    /// Merge a seed into the running world.
    pub fn seed(&self, seed: &Seed) -> anyhow::Result<()> {
        let now = self.now();
        let mut w = self.shared.world();
        w.apply_seed(seed, now).map_err(|e| anyhow::anyhow!(e))?;
        w.tick(now);
        Ok(())
    }

    /// Grant `principal_id` CMK access to a vault, as a person would in the portal.
    pub fn grant(&self, vault: &str, principal_id: &str) -> anyhow::Result<String> {
        let now = self.now();
        let mut w = self.shared.world();
        w.tick(now);
        let r = w.grant(vault, principal_id, now, "admin").map_err(|e| anyhow::anyhow!(e))?;
        w.tick(now);
        Ok(r)
    }

    /// Add a version to a key (created now, so it is the newest): what a rotation in Key Vault does. Returns the
    /// version id.
    pub fn add_key_version(&self, vault: &str, key: &str, version: &seed::SeedKeyVersion) -> anyhow::Result<String> {
        let now = self.now();
        let mut w = self.shared.world();
        w.tick(now);
        let v = w.add_key_version(vault, key, version, now).map_err(|e| anyhow::anyhow!(e))?;
        w.tick(now);
        Ok(v)
    }

    pub async fn shutdown(self) {
        for h in &self.handles {
            h.graceful_shutdown(Some(Duration::from_secs(2)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for h in &self.handles {
            h.shutdown();
        }
    }
}

fn shell_quote(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@,+=".contains(c)) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

/// `hpc-cache-operator simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// ARM/Entra/Key Vault listen address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Admin API listen address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub admin_listen: SocketAddr,
    /// Seed file (YAML or JSON).
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Where to write the env file.
    #[arg(long)]
    pub env_file: PathBuf,
    /// Serve over plain HTTP instead of HTTPS.
    #[arg(long)]
    pub plain_http: bool,
    /// Product-retirement mode: cache creation answers 409.
    #[arg(long)]
    pub retired: bool,
    /// Enforce ARM token-bucket throttling.
    #[arg(long)]
    pub throttling: bool,
    /// CMK authorization window in simulated minutes.
    #[arg(long, default_value_t = 90)]
    pub authorization_window_minutes: u64,
    /// Simulated seconds from a grant to it counting for a cache's key access.
    #[arg(long, default_value_t = 300)]
    pub grant_propagation_seconds: u64,
    /// Simulated minutes from a newer key version to a rotate-to-latest cache using it.
    #[arg(long, default_value_t = 60)]
    pub auto_rotation_minutes: u64,
    /// Real milliseconds a Key Vault write stays in flight (overlapping writes get 409 ConflictError; 0 = off).
    #[arg(long, default_value_t = 20)]
    pub vault_write_in_flight_ms: u64,
    /// Every n-th cache create answers 202 without a body (0 = never).
    #[arg(long, default_value_t = 3)]
    pub create_accepted_every: u32,
    /// Role assignments per list page.
    #[arg(long, default_value_t = 2)]
    pub role_assignment_page_size: usize,
    /// Caches per list page.
    #[arg(long, default_value_t = 1000)]
    pub cache_page_size: usize,
    /// Simulated minutes an Azure Managed Lustre file system takes to create.
    #[arg(long, default_value_t = 20)]
    pub aml_create_minutes: u64,
}

pub async fn run_cli(args: SimulateArgs) -> anyhow::Result<()> {
    let seed = match &args.seed {
        Some(p) => Some(Seed::from_yaml(
            &std::fs::read_to_string(p).with_context(|| format!("reading seed {}", p.display()))?,
        )?),
        None => None,
    };
    let cfg = SimConfig {
        listen: args.listen,
        admin_listen: args.admin_listen,
        speed: args.speed,
        seed,
        authorization_window: Duration::from_secs(args.authorization_window_minutes * 60),
        retired: args.retired,
        throttling: args.throttling,
        plain_http: args.plain_http,
        grant_propagation: Duration::from_secs(args.grant_propagation_seconds),
        auto_rotation_delay: Duration::from_secs(args.auto_rotation_minutes * 60),
        vault_write_in_flight: Duration::from_millis(args.vault_write_in_flight_ms),
        create_accepted_every: args.create_accepted_every,
        role_assignment_page_size: args.role_assignment_page_size,
        cache_page_size: args.cache_page_size,
        aml_create_delay: Duration::from_secs(args.aml_create_minutes * 60),
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg).await?;
    sim.write_env_file(&args.env_file)?;
    println!("simulator: ARM/Entra at {}", sim.base_url());
    println!("simulator: Key Vault at https://{{vault}}.vault.localhost:{}/", sim.base_url().port().unwrap_or(0));
    println!("simulator: admin API at {}", sim.admin_url());
    println!("simulator: env file {}", args.env_file.display());
    wait_for_signal().await;
    println!("simulator: stopping");
    sim.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

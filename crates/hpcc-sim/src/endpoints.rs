//! Where the simulator answers: the ARM/Entra base URL, the admin URL and each vault's data-plane URL.

use std::net::SocketAddr;

/// The simulator's URLs, fixed once its listeners are bound.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `https://127.0.0.1:PORT/`: the ARM endpoint and the Entra authority host.
    pub base_url: url::Url,
    /// `http://127.0.0.1:ADMINPORT/`
    pub admin_url: url::Url,
    /// Port of the main listener; the vault hosts share it.
    pub port: u16,
    plain_http: bool,
}

impl Endpoints {
    /// `addr` serves ARM, Entra and Key Vault; `admin_addr` the admin API (always plain HTTP).
    pub fn new(addr: SocketAddr, admin_addr: SocketAddr, plain_http: bool) -> anyhow::Result<Endpoints> {
        let scheme = if plain_http { "http" } else { "https" };
        let base_url = url::Url::parse(&format!("{scheme}://{addr}/"))?;
        let admin_url = url::Url::parse(&format!("http://{admin_addr}/"))?;
        Ok(Endpoints { base_url, admin_url, port: addr.port(), plain_http })
    }

    /// `https://{vault}.vault.localhost:PORT/` (routed by the Host header).
    pub fn vault_uri(&self, name: &str) -> url::Url {
        let scheme = if self.plain_http { "http" } else { "https" };
        url::Url::parse(&format!("{scheme}://{}.vault.localhost:{}/", name.to_ascii_lowercase(), self.port))
            .expect("valid vault url")
    }
}

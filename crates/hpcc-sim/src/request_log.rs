//! The request log's entries ([`RequestRecord`]), kept for tests and the admin API.

use serde::{Deserialize, Serialize};

/// One entry of the request log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    /// Simulated time the request arrived.
    pub time: jiff::Timestamp,
    pub method: String,
    /// Host the request was sent to (`127.0.0.1:PORT` or `{vault}.vault.localhost:PORT`).
    pub host: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Object id of the caller, when it presented a valid token.
    pub principal: Option<String>,
}

//! `[admin]`: the operator listener (metrics, health, the admin API).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::decode::Section;

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    /// File holding the bearer token of the admin API; without one the API is off.
    pub token_file: Option<PathBuf>,
    /// A listener of its own for the admin API (`/api/`), so that whoever may scrape
    /// `/metrics` cannot reach it; by default the API shares `addr`.
    pub api_addr: Option<SocketAddr>,
}

pub(super) fn read(s: &Section<'_>) -> Option<Admin> {
    let addr = match s.string("addr") {
        Some(v) => s.parse_value::<SocketAddr>("addr", v, "an address such as \"127.0.0.1:9090\""),
        // Loopback by default: the admin listener exposes operational state.
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    let token_file = s.optional_file("token_file");
    let api_addr = s.string("api_addr").map(|v| s.parse_value::<SocketAddr>("api_addr", v, "an address such as \"127.0.0.1:9091\""));
    let api_addr = match api_addr {
        None => None,
        Some(parsed) => Some(parsed?),
    };
    if api_addr.is_some_and(|a| addr.is_some_and(|b| a == b && a.port() != 0)) {
        s.problem("api_addr", super::Problem::Conflict { reason: "the API's own listener needs another address than admin.addr (leave api_addr out to share it)" });
        return None;
    }
    Some(Admin { addr: addr?, token_file: token_file.ok()?, api_addr })
}

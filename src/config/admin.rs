//! `[admin]`: the operator listener (metrics, health, the admin API).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::decode::Section;

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    /// File holding the bearer token of the admin API; without one the API is off.
    pub token_file: Option<PathBuf>,
}

pub(super) fn read(s: &Section<'_>) -> Option<Admin> {
    let addr = match s.string("addr") {
        Some(v) => s.parse_value::<SocketAddr>("addr", v, "an address such as \"127.0.0.1:9090\""),
        // Loopback by default: the admin listener exposes operational state.
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    let token_file = s.optional_file("token_file");
    Some(Admin { addr: addr?, token_file: token_file.ok()? })
}

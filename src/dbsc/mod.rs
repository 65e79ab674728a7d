//! Device Bound Session Credentials (W3C DBSC), server side, for the console behind
//! tether: what the operator chose (`[dbsc]`), and the pure pieces of the protocol —
//! the proof JWT ([`proof`]), challenges and the bound cookie ([`token`]), the header
//! and cookie syntax ([`header`]) and the single-use record of answered challenges
//! ([`spent`]). The HTTP side (offering registration, the two endpoints, enforcement)
//! lives in `http::dbsc`; the binding itself is kept in the session record
//! (`session::device`).
//!
//! A browser that registers proves, from then on, that each bound cookie it presents was
//! minted for the holder of a private key that never leaves the device; the long-lived
//! console cookie alone no longer opens the session.

pub mod header;
pub mod proof;
pub mod spent;
pub mod token;

use crate::session::Secs;

/// The registration endpoint (the `path` of `Secure-Session-Registration`) and the
/// refresh endpoint the session instructions name.
pub use crate::paths::{DBSC_REFRESH, DBSC_REGISTER};

/// How long a challenge may be answered. Browsers sign within a second or two (a TPM
/// takes up to about 600 ms at the 95th percentile); the margin absorbs a slow network
/// and the races the spec warns of (a proof over the previous challenge).
pub const CHALLENGE_TTL: Secs = 300;

/// What a risk signal on a bound session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRisk {
    /// A fresh key proof instead of the OIDC step-up: a proof made from the risky
    /// context re-binds the session there, as a completed step-up would.
    Challenge,
    /// A fresh key proof first, then the OIDC step-up as configured.
    StepUp,
    /// The OIDC step-up alone; the device key plays no part.
    Off,
}

impl OnRisk {
    pub fn parse(s: &str) -> Option<OnRisk> {
        match s {
            "challenge" => Some(OnRisk::Challenge),
            "step_up" => Some(OnRisk::StepUp),
            "off" => Some(OnRisk::Off),
            _ => None,
        }
    }
}

/// `[dbsc]`, as read by `config`.
#[derive(Debug, Clone)]
pub struct DbscConfig {
    pub enabled: bool,
    /// Path prefixes whose responses may offer registration.
    pub routes: Vec<String>,
    /// Case-insensitive substrings of the user agents offered registration. Enforcement
    /// does not depend on them: a bound session stays bound whoever presents it.
    pub user_agents: Vec<String>,
    pub bound_cookie: String,
    /// Lifetime of a bound cookie (seconds): one refresh round trip per lifetime.
    pub bound_lifetime: Secs,
    /// A path whose response setting a session cookie establishes a session.
    pub login_route: Option<String>,
    pub on_risk: OnRisk,
}

impl Default for DbscConfig {
    fn default() -> Self {
        DbscConfig {
            enabled: false,
            routes: vec!["/".to_owned()],
            user_agents: vec!["Chrome/".to_owned()],
            bound_cookie: "__Host-tether-bound".to_owned(),
            bound_lifetime: 600,
            login_route: None,
            on_risk: OnRisk::StepUp,
        }
    }
}

impl DbscConfig {
    /// Whether a response to `path`, for a client calling itself `ua`, may offer
    /// registration.
    pub fn offers(&self, path: &str, ua: &[u8]) -> bool {
        self.enabled && self.routes.iter().any(|r| path.starts_with(r.as_str())) && self.user_agents.iter().any(|s| contains_ignore_case(ua, s.as_bytes()))
    }
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_offered_by_route_and_user_agent() {
        let c = DbscConfig { enabled: true, routes: vec!["/admin".into()], ..DbscConfig::default() };
        let chrome = b"Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/146.0.0.0 Safari/537.36";
        assert!(c.offers("/admin/users", chrome));
        assert!(!c.offers("/public", chrome), "outside the routes");
        assert!(!c.offers("/admin", b"curl/8.5.0"), "a client that was not opted in");
        assert!(c.offers("/admin", b"... chrome/150 ..."), "case does not matter");
        assert!(!DbscConfig { enabled: false, ..c.clone() }.offers("/admin", chrome));
    }
}

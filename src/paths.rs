//! The paths tether answers itself, under one prefix no console route uses.
//!
//! Imports nothing, so every layer (config's `redirect_uri` check, the HTTP service, the
//! step-up flow) can name the same constant without an import circle.

/// The callback path as a literal, for messages built with `concat!` at compile time.
macro_rules! callback {
    () => {
        "/.tether/callback"
    };
}
pub(crate) use callback;

/// Every path under this prefix is tether's own and never reaches the upstream.
pub const OWN_PREFIX: &str = "/.tether/";

/// Where the IdP sends the browser back after a step-up (the registered redirect URI ends
/// with it).
pub const CALLBACK: &str = callback!();

/// Where the IdP posts OpenID back-channel logout tokens.
pub const BACKCHANNEL_LOGOUT: &str = "/.tether/backchannel-logout";

/// Where a browser registers a device-bound session (DBSC) with its proof of a new key.
pub const DBSC_REGISTER: &str = "/.tether/dbsc/register";

/// Where a browser bound to a device key refreshes its short-lived bound cookie.
pub const DBSC_REFRESH: &str = "/.tether/dbsc/refresh";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_sit_under_the_own_prefix() {
        for path in [CALLBACK, BACKCHANNEL_LOGOUT, DBSC_REGISTER, DBSC_REFRESH] {
            assert!(path.starts_with(OWN_PREFIX), "{path}");
        }
    }
}

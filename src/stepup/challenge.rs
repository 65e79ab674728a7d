//! Starting a step-up: the pending challenge tether remembers, the signed `state` that
//! names it, and the two answers a client gets — an OIDC authorization redirect for a
//! browser, an RFC 9470 `401` for anything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::session::{HashKey, Secs, SessionKey};

/// A challenge must be answered within this long (an IdP login, MFA included).
pub const CHALLENGE_TTL: Secs = 600;
/// Pending challenges remembered at once; beyond it expired ones are swept, then the
/// oldest go. A flood of challenges cannot grow memory without bound.
const MAX_PENDING: usize = 100_000;
const STATE_ID: usize = 16;
const STATE_MAC: usize = 16;

/// What tether keeps until the callback.
#[derive(Debug, Clone)]
pub struct Pending {
    pub session: SessionKey,
    pub user: Option<Arc<str>>,
    pub verifier: String,
    pub nonce: String,
    /// Where to send the browser afterwards (GET only; a POST is never replayed).
    pub return_to: Option<String>,
    /// The redirect URI sent to the IdP; the code exchange must repeat it exactly.
    pub redirect_uri: String,
    pub created: Secs,
}

/// The public parts of a new challenge.
#[derive(Debug, Clone)]
pub struct Issued {
    pub state: String,
    pub nonce: String,
    pub code_challenge: String,
}

crate::labels::labels! {
    impl Display elsewhere;
    #[derive(thiserror::Error)]
    pub enum StateError {
        #[error("state is malformed or its signature is wrong")]
        Forged = "state_forged",
        #[error("state is unknown or already used")]
        Unknown = "state_replayed_or_unknown",
        #[error("state has expired")]
        Expired = "state_expired",
    }
}

#[derive(Default)]
pub struct Challenges {
    pending: Mutex<HashMap<[u8; STATE_ID], Pending>>,
}

/// Fresh random bytes; `None` when the host has no randomness to give, in which case no
/// challenge is issued at all (a predictable verifier or state would be worse).
fn random<const N: usize>() -> Option<[u8; N]> {
    let mut b = [0u8; N];
    match getrandom::fill(&mut b) {
        Ok(()) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "system randomness unavailable; no step-up challenge issued");
            None
        }
    }
}

impl Challenges {
    pub fn begin(
        &self,
        key: &HashKey,
        session: SessionKey,
        user: Option<Arc<str>>,
        return_to: Option<String>,
        redirect_uri: String,
        now: Secs,
    ) -> Option<Issued> {
        let id: [u8; STATE_ID] = random()?;
        let verifier = URL_SAFE_NO_PAD.encode(random::<32>()?);
        let nonce = URL_SAFE_NO_PAD.encode(random::<16>()?);
        let code_challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mac = key.mac(b"tether-state", &id);
        let mut state = Vec::with_capacity(STATE_ID + STATE_MAC);
        state.extend_from_slice(&id);
        state.extend_from_slice(&mac[..STATE_MAC]);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| now.saturating_sub(p.created) <= CHALLENGE_TTL);
            if pending.len() >= MAX_PENDING {
                if let Some(oldest) = pending.iter().min_by_key(|(_, p)| p.created).map(|(k, _)| *k) {
                    pending.remove(&oldest);
                }
            }
        }
        pending.insert(id, Pending { session, user, verifier, nonce: nonce.clone(), return_to, redirect_uri, created: now });
        Some(Issued { state: URL_SAFE_NO_PAD.encode(state), nonce, code_challenge })
    }

    /// Checks the state's signature, then takes the challenge (once: a replay finds
    /// nothing).
    pub fn take(&self, key: &HashKey, state: &str, now: Secs) -> Result<Pending, StateError> {
        let raw = URL_SAFE_NO_PAD.decode(state.as_bytes()).map_err(|_| StateError::Forged)?;
        if raw.len() != STATE_ID + STATE_MAC {
            return Err(StateError::Forged);
        }
        let (id, mac) = raw.split_at(STATE_ID);
        let want = key.mac(b"tether-state", id);
        if !constant_time_eq(mac, &want[..STATE_MAC]) {
            return Err(StateError::Forged);
        }
        let mut idb = [0u8; STATE_ID];
        idb.copy_from_slice(id);
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&idb).ok_or(StateError::Unknown)?;
        if now.saturating_sub(pending.created) > CHALLENGE_TTL {
            return Err(StateError::Expired);
        }
        Ok(pending)
    }

    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
}

/// The parameters of an authorization request that a stolen session cannot satisfy.
pub struct AuthorizationRequest<'a> {
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub acr_values: Option<&'a str>,
    pub login_hint: Option<&'a str>,
    pub issued: &'a Issued,
}

impl AuthorizationRequest<'_> {
    pub fn url(&self) -> String {
        let mut u = String::with_capacity(512);
        u.push_str(self.endpoint);
        u.push(if self.endpoint.contains('?') { '&' } else { '?' });
        let mut first = true;
        let mut param = |k: &str, v: &str, u: &mut String| {
            if !first {
                u.push('&');
            }
            first = false;
            u.push_str(k);
            u.push('=');
            encode(v, u);
        };
        param("response_type", "code", &mut u);
        param("client_id", self.client_id, &mut u);
        param("redirect_uri", self.redirect_uri, &mut u);
        param("scope", self.scope, &mut u);
        param("state", &self.issued.state, &mut u);
        param("nonce", &self.issued.nonce, &mut u);
        param("code_challenge", &self.issued.code_challenge, &mut u);
        param("code_challenge_method", "S256", &mut u);
        // A stolen IdP session would satisfy a plain login silently: force a new one.
        param("prompt", "login", &mut u);
        param("max_age", "0", &mut u);
        if let Some(acr) = self.acr_values {
            param("acr_values", acr, &mut u);
        }
        if let Some(hint) = self.login_hint {
            param("login_hint", hint, &mut u);
        }
        u
    }
}

/// The RFC 9470 challenge for non-browser clients.
pub fn www_authenticate(acr_values: Option<&str>) -> String {
    let mut v = String::from(
        "Bearer error=\"insufficient_user_authentication\", error_description=\"A fresh authentication is required\", max_age=\"0\"",
    );
    if let Some(acr) = acr_values {
        // acr_values are operator config; quotes and backslashes would break the syntax.
        let clean: String = acr.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
        v.push_str(", acr_values=\"");
        v.push_str(&clean);
        v.push('"');
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_signed_single_use_and_short_lived() {
        let key = HashKey::new([7; 32], None);
        let c = Challenges::default();
        let s = SessionKey([1; 16]);
        let issued = c.begin(&key, s, None, Some("/x".into()), "https://h/.tether/callback".into(), 1000).unwrap();
        assert_eq!(issued.code_challenge.len(), 43);
        let pending = c.take(&key, &issued.state, 1010).unwrap();
        assert_eq!(pending.session, s);
        assert_eq!(URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes())), issued.code_challenge);
        // Replayed.
        assert_eq!(c.take(&key, &issued.state, 1010).unwrap_err(), StateError::Unknown);
        // Forged: another key's signature, garbage, a flipped byte.
        let other = HashKey::new([8; 32], None);
        let issued = c.begin(&key, s, None, None, "https://h/.tether/callback".into(), 1000).unwrap();
        assert_eq!(c.take(&other, &issued.state, 1000).unwrap_err(), StateError::Forged);
        assert_eq!(c.take(&key, "not-base64!", 1000).unwrap_err(), StateError::Forged);
        let mut raw = URL_SAFE_NO_PAD.decode(&issued.state).unwrap();
        raw[0] ^= 1;
        assert_eq!(c.take(&key, &URL_SAFE_NO_PAD.encode(raw), 1000).unwrap_err(), StateError::Forged);
        // Expired.
        assert_eq!(c.take(&key, &issued.state, 1000 + CHALLENGE_TTL + 1).unwrap_err(), StateError::Expired);
    }

    #[test]
    fn authorization_url_carries_every_parameter() {
        let issued = Issued { state: "st".into(), nonce: "no".into(), code_challenge: "cc".into() };
        let url = AuthorizationRequest {
            endpoint: "https://sso.example/authorize",
            client_id: "tether",
            redirect_uri: "https://admin.example/.tether/callback",
            scope: "openid",
            acr_values: Some("urn:example:mfa"),
            login_hint: Some("alice@example.com"),
            issued: &issued,
        }
        .url();
        assert_eq!(
            url,
            "https://sso.example/authorize?response_type=code&client_id=tether&redirect_uri=https%3A%2F%2Fadmin.example%2F.tether%2Fcallback&scope=openid&state=st&nonce=no&code_challenge=cc&code_challenge_method=S256&prompt=login&max_age=0&acr_values=urn%3Aexample%3Amfa&login_hint=alice%40example.com"
        );
    }

    #[test]
    fn rfc9470_challenge_byte_for_byte() {
        assert_eq!(
            www_authenticate(None),
            r#"Bearer error="insufficient_user_authentication", error_description="A fresh authentication is required", max_age="0""#
        );
        assert_eq!(
            www_authenticate(Some("urn:example:mfa")),
            r#"Bearer error="insufficient_user_authentication", error_description="A fresh authentication is required", max_age="0", acr_values="urn:example:mfa""#
        );
    }
}

//! Starting a step-up: the pending challenge tether remembers, the signed `state` that
//! names it, and the two answers a client gets — an OIDC authorization redirect for a
//! browser, an RFC 9470 `401` for anything else.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Provider;
use crate::session::{HashKey, Secs, SessionKey};

/// A challenge must be answered within this long (an IdP login, MFA included).
pub const CHALLENGE_TTL: Secs = 600;
pub(super) const STATE_ID: usize = 16;
const STATE_MAC: usize = 16;

crate::labels::labels! {
    /// What a challenge asks of the IdP.
    pub enum Kind {
        /// Prove yourself now: a fresh login (`prompt=login`, `max_age=0`), which a
        /// stolen IdP session cannot satisfy.
        StepUp = "step_up",
        /// Only say who you are (`prompt=none`): the IdP answers from its own session
        /// without a login page, or with an error. No fresh authentication is demanded.
        Identify = "identify",
    }
}

/// What tether keeps until the callback.
#[derive(Debug, Clone)]
pub struct Pending {
    pub kind: Kind,
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

/// Fresh random bytes; `None` when the host has no randomness to give, in which case no
/// challenge is issued at all (a predictable verifier or state would be worse).
pub(super) fn random<const N: usize>() -> Option<[u8; N]> {
    let mut b = [0u8; N];
    match getrandom::fill(&mut b) {
        Ok(()) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "system randomness unavailable; no step-up challenge issued");
            None
        }
    }
}

/// A new challenge's secrets and its signed state.
pub(super) fn mint(key: &HashKey) -> Option<([u8; STATE_ID], String, Issued)> {
    let id: [u8; STATE_ID] = random()?;
    let verifier = URL_SAFE_NO_PAD.encode(random::<32>()?);
    let nonce = URL_SAFE_NO_PAD.encode(random::<16>()?);
    let code_challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mac = key.mac(b"tether-state", &id);
    let mut state = Vec::with_capacity(STATE_ID + STATE_MAC);
    state.extend_from_slice(&id);
    state.extend_from_slice(&mac[..STATE_MAC]);
    Some((id, verifier, Issued { state: URL_SAFE_NO_PAD.encode(state), nonce, code_challenge }))
}

/// The challenge id a state names, once its signature checks out.
pub(super) fn verify_state(key: &HashKey, state: &str) -> Result<[u8; STATE_ID], StateError> {
    let raw = URL_SAFE_NO_PAD.decode(state.as_bytes()).map_err(|_| StateError::Forged)?;
    if raw.len() != STATE_ID + STATE_MAC {
        return Err(StateError::Forged);
    }
    let (id, mac) = raw.split_at(STATE_ID);
    let want = key.mac(b"tether-state", id);
    if !bool::from(mac.ct_eq(&want[..STATE_MAC])) {
        return Err(StateError::Forged);
    }
    let mut idb = [0u8; STATE_ID];
    idb.copy_from_slice(id);
    Ok(idb)
}

/// Escaped in a query value: everything but RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn encode(value: &str, out: &mut String) {
    out.extend(utf8_percent_encode(value, QUERY_VALUE));
}

/// The parameters of an authorization request that a stolen session cannot satisfy, as
/// the IdP's preset needs them spelt.
pub struct AuthorizationRequest<'a> {
    pub kind: Kind,
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub acr_values: Option<&'a str>,
    pub login_hint: Option<&'a str>,
    pub issued: &'a Issued,
    pub provider: Provider,
    /// Entra ID authentication contexts, asked for through the `claims` parameter.
    pub acrs: &'a [String],
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
        match self.kind {
            Kind::StepUp => {
                // A stolen IdP session would satisfy a plain login silently: force a new one.
                // Google refuses `prompt=login`; `max_age=0` alone demands the fresh login
                // there, and the callback still checks `auth_time` against the challenge.
                if self.provider != Provider::Google {
                    param("prompt", "login", &mut u);
                }
                param("max_age", "0", &mut u);
                if let Some(acr) = self.acr_values {
                    param("acr_values", acr, &mut u);
                }
                if self.provider == Provider::Entra && !self.acrs.is_empty() {
                    // OpenID Connect Core §5.5: Entra ID asks for authentication contexts
                    // as an essential `acrs` claim of the ID token.
                    let claims = serde_json::json!({ "id_token": { "acrs": { "essential": true, "values": self.acrs } } });
                    param("claims", &claims.to_string(), &mut u);
                }
            }
            // The IdP answers at once from its own session, or with `login_required`.
            Kind::Identify => param("prompt", "none", &mut u),
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
    fn query_values_escape_all_but_unreserved() {
        let mut out = String::new();
        encode("aZ09-._~ +/%é", &mut out);
        assert_eq!(out, "aZ09-._~%20%2B%2F%25%C3%A9");
    }

    #[test]
    fn authorization_url_carries_every_parameter() {
        let issued = Issued { state: "st".into(), nonce: "no".into(), code_challenge: "cc".into() };
        let url = AuthorizationRequest {
            kind: Kind::StepUp,
            endpoint: "https://sso.example/authorize",
            client_id: "tether",
            redirect_uri: "https://admin.example/.tether/callback",
            scope: "openid",
            acr_values: Some("urn:example:mfa"),
            login_hint: Some("alice@example.com"),
            issued: &issued,
            provider: Provider::Generic,
            acrs: &[],
        }
        .url();
        assert_eq!(
            url,
            "https://sso.example/authorize?response_type=code&client_id=tether&redirect_uri=https%3A%2F%2Fadmin.example%2F.tether%2Fcallback&scope=openid&state=st&nonce=no&code_challenge=cc&code_challenge_method=S256&prompt=login&max_age=0&acr_values=urn%3Aexample%3Amfa&login_hint=alice%40example.com"
        );
    }

    /// The step-up parameters each preset sends (`None`: the parameter is absent).
    #[test]
    fn presets_spell_the_step_up_their_way() {
        let issued = Issued { state: "st".into(), nonce: "no".into(), code_challenge: "cc".into() };
        let contexts = ["c1".to_owned(), "c2".to_owned()];
        let claims = r#"{"id_token":{"acrs":{"essential":true,"values":["c1","c2"]}}}"#;
        // kind, provider, acrs, then the prompt, max_age and claims sent.
        type Row<'a> = (Kind, Provider, &'a [String], Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let rows: [Row<'_>; 8] = [
            (Kind::StepUp, Provider::Generic, &[], Some("login"), Some("0"), None),
            (Kind::StepUp, Provider::Okta, &[], Some("login"), Some("0"), None),
            (Kind::StepUp, Provider::Keycloak, &[], Some("login"), Some("0"), None),
            (Kind::StepUp, Provider::Google, &[], None, Some("0"), None),
            (Kind::StepUp, Provider::Entra, &contexts, Some("login"), Some("0"), Some(claims)),
            (Kind::StepUp, Provider::Entra, &[], Some("login"), Some("0"), None),
            (Kind::Identify, Provider::Google, &[], Some("none"), None, None),
            (Kind::Identify, Provider::Entra, &contexts, Some("none"), None, None),
        ];
        for (kind, provider, acrs, prompt, max_age, want_claims) in rows {
            let url = AuthorizationRequest {
                kind,
                endpoint: "https://sso.example/authorize",
                client_id: "tether",
                redirect_uri: "https://admin.example/.tether/callback",
                scope: "openid",
                acr_values: None,
                login_hint: None,
                issued: &issued,
                provider,
                acrs,
            }
            .url();
            let query = url.split_once('?').unwrap().1;
            let get = |k: &str| {
                query.split('&').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('='))).map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
            };
            let name = format!("{kind:?} {provider:?}");
            assert_eq!(get("prompt").as_deref(), prompt, "{name}");
            assert_eq!(get("max_age").as_deref(), max_age, "{name}");
            assert_eq!(get("claims").as_deref(), want_claims, "{name}");
        }
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

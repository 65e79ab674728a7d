//! `[step_up]`: the OpenID provider tether sends a session to for re-authentication,
//! and how tether authenticates itself there. Optional: without it tether blocks where
//! it would step up.

use std::fmt;
use std::path::PathBuf;

use http::Uri;

use crate::paths;

use super::decode::Section;
use super::Problem;

#[derive(Debug, Clone)]
pub enum IdpEndpoints {
    /// `issuer` alone: the endpoints come from its discovery document.
    Discovery { issuer: Uri },
    /// The endpoints given; `issuer` (the expected `iss` of ID tokens) is the configured
    /// one, else the authorization endpoint's origin.
    Explicit { issuer: String, authorization: Uri, token: Uri, jwks: Uri },
}

/// How tether authenticates itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client: PKCE only.
    None,
    SecretBasic,
    SecretPost,
    PrivateKeyJwt,
}

#[derive(Debug, Clone)]
pub struct StepUp {
    pub endpoints: IdpEndpoints,
    pub client_id: String,
    pub client_secret: Option<ClientSecret>,
    pub client_auth: ClientAuth,
    /// PEM private key for `private_key_jwt` (EC P-256 → ES256, RSA → RS256).
    pub client_private_key_file: Option<PathBuf>,
    pub client_key_id: Option<String>,
    pub acr_values: Option<String>,
    /// `amr` values the ID token must all carry (e.g. `["mfa"]`).
    pub required_amr: Vec<String>,
    pub ca_file: Option<PathBuf>,
    /// The callback URL registered at the IdP; derived from the request's host when unset.
    pub redirect_uri: Option<String>,
    /// Hosts a derived redirect URI may name (besides those the listener's certificate
    /// names); lower case, without a port.
    pub public_hosts: Vec<String>,
    /// The ID token claim compared with the challenged session's user.
    pub user_claim: String,
    /// Failed step-ups after which the session is revoked.
    pub max_failures: u8,
    /// Accept `http://` IdP endpoints (tests only: codes and tokens would cross in clear).
    pub allow_insecure_http: bool,
    pub identify: Identify,
    pub unknown_owner: UnknownOwner,
}

crate::labels::labels! {
    /// How tether learns the owner of a session nobody has named yet.
    pub enum Identify {
        /// Only from a verified JWT, a trusted hop's header or the console's response header.
        Off = "off",
        /// Also by sending a new browser session's first navigation to the IdP with
        /// `prompt=none`: the owner's browser comes straight back with an ID token.
        Silent = "silent",
    }
}

crate::labels::labels! {
    /// Whether a step-up may unlock a session whose owner tether does not know.
    pub enum UnknownOwner {
        /// No: the callback refuses, and the user signs in to the console again.
        Refuse = "refuse",
        /// Yes: whoever completes the step-up becomes the session's owner.
        Adopt = "adopt",
    }
}

/// A client secret; `Debug` never shows it.
#[derive(Clone)]
pub enum ClientSecret {
    Inline(String),
    File(PathBuf),
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientSecret::Inline(_) => f.write_str("ClientSecret::Inline(<redacted>)"),
            ClientSecret::File(p) => write!(f, "ClientSecret::File({})", p.display()),
        }
    }
}

pub(super) fn read(s: &Section<'_>) -> Option<Option<StepUp>> {
    if !s.is_present() {
        return Some(None);
    }
    let allow_insecure_http = s.boolean("allow_insecure_http").unwrap_or(false);
    let endpoints = read_endpoints(s, allow_insecure_http);
    let client_id = s.required_string("client_id").map(str::to_owned);
    let inline = s.string("client_secret");
    let file_given = s.has("client_secret_file");
    let file = s.optional_file("client_secret_file");
    let client_secret = match (inline, file_given) {
        (Some(_), true) => {
            s.problem("client_secret", Problem::Conflict { reason: "give client_secret or client_secret_file, not both" });
            None
        }
        (Some(v), false) => Some(ClientSecret::Inline(v.to_owned())),
        // An unreadable file is already reported.
        (None, true) => file.ok().flatten().map(ClientSecret::File),
        (None, false) => None,
    };
    let client_private_key_file = s.optional_file("client_private_key_file");
    let client_key_id = s.string("client_key_id").map(str::to_owned);
    let client_auth = match s.string("client_auth") {
        None if client_private_key_file.as_ref().is_ok_and(Option::is_some) => Some(ClientAuth::PrivateKeyJwt),
        None if client_secret.is_some() => Some(ClientAuth::SecretBasic),
        None => Some(ClientAuth::None),
        Some("none") => Some(ClientAuth::None),
        Some("client_secret_basic") => Some(ClientAuth::SecretBasic),
        Some("client_secret_post") => Some(ClientAuth::SecretPost),
        Some("private_key_jwt") => Some(ClientAuth::PrivateKeyJwt),
        Some(other) => {
            s.problem("client_auth", Problem::Invalid { expected: "none, client_secret_basic, client_secret_post or private_key_jwt", found: other.to_owned() });
            None
        }
    };
    match client_auth {
        Some(ClientAuth::SecretBasic | ClientAuth::SecretPost) if client_secret.is_none() && !file_given => {
            s.problem("client_secret", Problem::Missing);
        }
        Some(ClientAuth::PrivateKeyJwt) if !s.has("client_private_key_file") => {
            s.problem("client_private_key_file", Problem::Missing);
        }
        _ => {}
    }
    let acr_values = s.string("acr_values").map(str::to_owned);
    let required_amr = s.string_array("required_amr").unwrap_or_default().into_iter().map(str::to_owned).collect();
    let user_claim = s.string("user_claim").unwrap_or("sub").to_owned();
    let max_failures = s.integer("max_failures", 1, 100).map_or(3, |n| n as u8);
    let identify = match s.string("identify") {
        None => Some(Identify::Off),
        Some(v) => Identify::parse(v).or_else(|| {
            s.problem("identify", Problem::Invalid { expected: "\"silent\" or \"off\"", found: v.to_owned() });
            None
        }),
    };
    let unknown_owner = match s.string("unknown_owner") {
        None => Some(UnknownOwner::Refuse),
        Some(v) => UnknownOwner::parse(v).or_else(|| {
            s.problem("unknown_owner", Problem::Invalid { expected: "\"refuse\" or \"adopt\"", found: v.to_owned() });
            None
        }),
    };
    let ca_file = s.optional_file("ca_file");
    let redirect_uri = s.string("redirect_uri").map(str::to_owned);
    let public_hosts = s.string_array("public_hosts").unwrap_or_default().into_iter().map(|h| h.to_ascii_lowercase()).collect();
    if let Some(r) = &redirect_uri {
        if !r.ends_with(paths::CALLBACK) || r.parse::<Uri>().ok().and_then(|u| u.authority().cloned()).is_none() {
            s.problem("redirect_uri", Problem::Invalid { expected: concat!("an absolute URL ending in ", paths::callback!()), found: r.clone() });
        }
    }
    Some(Some(StepUp {
        endpoints: endpoints?,
        client_id: client_id?,
        client_secret,
        client_auth: client_auth?,
        client_private_key_file: client_private_key_file.ok()?,
        client_key_id,
        acr_values,
        required_amr,
        ca_file: ca_file.ok()?,
        redirect_uri,
        public_hosts,
        user_claim,
        max_failures,
        allow_insecure_http,
        identify: identify?,
        unknown_owner: unknown_owner?,
    }))
}

/// The IdP's endpoints: an issuer to discover them from, or all three given (with the
/// issuer optional).
fn read_endpoints(s: &Section<'_>, allow_http: bool) -> Option<IdpEndpoints> {
    let https_url = |key: &'static str| -> Option<Uri> {
        let v = s.string(key)?;
        let uri: Uri = s.parse_value(key, v, "an https:// URL")?;
        let scheme_ok = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => allow_http,
            _ => false,
        };
        if !scheme_ok || uri.authority().is_none() {
            s.problem(key, Problem::Invalid { expected: "an https:// URL", found: v.to_owned() });
            return None;
        }
        Some(uri)
    };
    let issuer = https_url("issuer");
    let authorization = https_url("authorization_endpoint");
    let token = https_url("token_endpoint");
    let jwks = https_url("jwks_uri");
    let given = |k| s.has(k);
    let explicit_any = given("authorization_endpoint") || given("token_endpoint") || given("jwks_uri");
    match (issuer, explicit_any) {
        (Some(issuer), false) => Some(IdpEndpoints::Discovery { issuer }),
        (issuer, _) => match (authorization, token, jwks) {
            (Some(authorization), Some(token), Some(jwks)) => {
                let issuer = issuer.map(|i| i.to_string().trim_end_matches('/').to_owned()).unwrap_or_else(|| {
                    format!("{}://{}", authorization.scheme_str().unwrap_or("https"), authorization.authority().map_or("", |a| a.as_str()))
                });
                Some(IdpEndpoints::Explicit { issuer, authorization, token, jwks })
            }
            _ => {
                for k in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
                    if !given(k) && (explicit_any || !given("issuer")) {
                        s.problem(k, Problem::Missing);
                    }
                }
                None
            }
        },
    }
}

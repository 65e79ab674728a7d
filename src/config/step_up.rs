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
    /// Which IdP's habits to expect; `Generic` is plain OpenID Connect.
    pub provider: Provider,
    /// Entra ID authentication contexts (`c1`…) asked for through the `claims` request
    /// parameter; the ID token's `acrs` must name every one.
    pub acrs: Vec<String>,
    /// Entra ID tenants whose users may step up through a multi-tenant issuer
    /// (`common`, `organizations`); a token's `tid` must be one of them.
    pub tenants: Vec<String>,
    /// Keycloak's ACR-to-LoA map, as configured in the realm: a token whose `acr` names
    /// (or is) a level at least that of a requested value satisfies it.
    pub acr_levels: Vec<(String, u32)>,
    /// How tether reaches the IdP.
    pub proxy: EgressProxy,
}

crate::labels::labels! {
    /// The IdP presets: what tether sends and accepts beyond plain OpenID Connect.
    pub enum Provider {
        /// Plain OpenID Connect: `prompt=login`, `max_age=0`, `acr_values`.
        Generic = "generic",
        /// Okta (org or custom authorization server): plain OpenID Connect suffices.
        Okta = "okta",
        /// Microsoft Entra ID: authentication contexts through `claims`/`acrs`, and the
        /// multi-tenant issuer template.
        Entra = "entra",
        /// Google: both issuer spellings, and no `prompt=login` (`max_age=0` alone).
        Google = "google",
        /// Keycloak: ACR-to-LoA levels.
        Keycloak = "keycloak",
    }
}

/// How tether's requests to the IdP leave the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressProxy {
    /// `HTTPS_PROXY`/`https_proxy`, unless `NO_PROXY`/`no_proxy` names the IdP's host;
    /// directly without them.
    Environment,
    /// `step_up.proxy = "direct"`: never through a proxy, whatever the environment says.
    Direct,
    /// `step_up.proxy = "http://[user:pass@]host:port"`: always through it.
    Via(ProxyUrl),
}

/// An HTTP proxy that tether asks to `CONNECT` to the IdP; `Debug` hides credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub host: String,
    pub port: u16,
    /// `user:password`, percent-decoded, for `Proxy-Authorization: Basic`.
    pub credentials: Option<String>,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let creds = if self.credentials.is_some() { "<redacted>@" } else { "" };
        write!(f, "ProxyUrl({creds}{}:{})", self.host, self.port)
    }
}

impl fmt::Display for ProxyUrl {
    /// Host and port only: the credentials never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a proxy URL is refused. Never carries the URL itself: it may hold a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    #[error("only http:// proxies are supported (tether opens a CONNECT tunnel and runs TLS to the IdP itself)")]
    Scheme,
    #[error("the proxy URL names no host")]
    NoHost,
    #[error("the proxy port is not a number from 1 to 65535")]
    Port,
    #[error("a proxy URL is a scheme, credentials, host and port only, without a path")]
    Path,
}

impl ProxyUrl {
    /// `http://[user:pass@]host[:port][/]`, or `host:port` as `HTTPS_PROXY` often holds;
    /// the port defaults to 80 as for any `http://` URL.
    pub fn parse(text: &str) -> Result<ProxyUrl, ProxyUrlError> {
        let text = text.trim();
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(ProxyUrlError::Scheme),
            None => text,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(ProxyUrlError::Path);
        }
        // The last '@' ends the credentials: a password may contain one unescaped.
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                (Some(format!("{}:{}", decode(user), decode(pass))), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(ProxyUrlError::NoHost)?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(ProxyUrlError::NoHost);
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(ProxyUrlError::Port)?,
        };
        Ok(ProxyUrl { host: host.to_ascii_lowercase(), port, credentials })
    }
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
    let provider = match s.string("provider") {
        None => Some(Provider::Generic),
        Some(v) => Provider::parse(v).or_else(|| {
            s.problem("provider", Problem::Invalid { expected: "generic, okta, entra, google or keycloak", found: v.to_owned() });
            None
        }),
    };
    let only_for = |key: &'static str, preset: Provider| {
        if s.has(key) && provider.is_some_and(|p| p != preset) {
            s.problem(key, Problem::Conflict { reason: only_for_reason(preset) });
        }
    };
    only_for("acrs", Provider::Entra);
    only_for("tenants", Provider::Entra);
    only_for("acr_levels", Provider::Keycloak);
    let acrs: Vec<String> = s.string_array("acrs").unwrap_or_default().into_iter().map(str::to_owned).collect();
    let tenants: Vec<String> = s.string_array("tenants").unwrap_or_default().into_iter().map(|t| t.to_ascii_lowercase()).collect();
    let acr_levels = read_acr_levels(s);
    if provider == Some(Provider::Entra) && tenants.is_empty() {
        if let Some(IdpEndpoints::Discovery { issuer }) = &endpoints {
            if entra_multi_tenant(issuer) {
                s.problem("tenants", Problem::Conflict { reason: "a multi-tenant Entra ID issuer (common, organizations) accepts any tenant's users: list the tenants whose users may step up" });
            }
        }
    }
    let proxy = match s.string("proxy") {
        None => Some(EgressProxy::Environment),
        Some("direct") => Some(EgressProxy::Direct),
        Some(v) => match ProxyUrl::parse(v) {
            Ok(url) => Some(EgressProxy::Via(url)),
            Err(e) => {
                // The value may hold a password: the error names the problem, not the URL.
                s.problem("proxy", Problem::Invalid { expected: "\"direct\" or http://[user:password@]host:port", found: e.to_string() });
                None
            }
        },
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
        provider: provider?,
        acrs,
        tenants,
        acr_levels: acr_levels?,
        proxy: proxy?,
    }))
}

fn only_for_reason(preset: Provider) -> &'static str {
    match preset {
        Provider::Entra => "applies to provider = \"entra\" only",
        Provider::Keycloak => "applies to provider = \"keycloak\" only",
        Provider::Generic | Provider::Okta | Provider::Google => "does not apply to this provider",
    }
}

/// Whether an Entra ID issuer names no tenant (`common`, `organizations`): its discovery
/// document names the issuer as a template, `https://login.microsoftonline.com/{tenantid}/v2.0`.
pub fn entra_multi_tenant(issuer: &Uri) -> bool {
    let tenant = issuer.path().trim_start_matches('/').split('/').next().unwrap_or("");
    tenant.eq_ignore_ascii_case("common") || tenant.eq_ignore_ascii_case("organizations")
}

/// `acr_levels = { silver = 1, gold = 2 }`: Keycloak's levels are whole numbers.
fn read_acr_levels(s: &Section<'_>) -> Option<Vec<(String, u32)>> {
    let Some(table) = s.table("acr_levels") else { return Some(Vec::new()) };
    let mut out = Vec::with_capacity(table.len());
    let mut ok = true;
    for (name, value) in table {
        match value.as_integer().and_then(|n| u32::try_from(n).ok()) {
            Some(level) => out.push((name.clone(), level)),
            None => {
                ok = false;
                s.problem(&format!("acr_levels.{name}"), Problem::Invalid { expected: "a level of authentication (a whole number, as in Keycloak's ACR to LoA mapping)", found: value.to_string() });
            }
        }
    }
    ok.then_some(out)
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

//! The operator's TOML file, read into typed values.
//!
//! Every problem is reported at once, each with its key path (`listen.addr`,
//! `limits.max_body_bytes`, `intel.ioc_files[2]`). Unknown keys are errors, so a typo never
//! silently falls back to a default. Relative file paths are resolved against the
//! directory holding the config file.

mod decode;
mod limits;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::header::HeaderName;
use http::Uri;
use ipnet::IpNet;

use decode::{Problems, Section};
use crate::intel::lists::Entry;
use crate::intel::{Category, IntelConfig, IocFile};
use crate::intel::prefix::parse_net;
use crate::policy::{Mode, Policy, Route, Signal};
use crate::session::jwt::JwtConfig;
use crate::session::StoreLimits;
pub use limits::Limits;

/// The sections a config file may hold; anything else at the top level is an error.
const SECTIONS: &[&str] =
    &["listen", "upstream", "admin", "limits", "intel", "session", "policy", "step_up", "audit"];

/// One thing wrong with a config file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ConfigError {
    /// Dotted key path, e.g. `listen.trusted_proxies[1]`.
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("unknown key")]
    UnknownKey,
    #[error("required key is missing")]
    Missing,
    #[error("expected {expected}, found {found}")]
    WrongType { expected: &'static str, found: &'static str },
    #[error("expected {expected}, found {found:?}")]
    Invalid { expected: &'static str, found: String },
    #[error("must be between {min} and {max}, found {found}")]
    OutOfRange { min: i64, max: i64, found: i64 },
    #[error("{reason}")]
    Conflict { reason: &'static str },
    #[error("cannot read {}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("TOML syntax: {0}")]
    Syntax(#[source] Box<toml::de::Error>),
}

/// Every error found in one file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub upstream: Upstream,
    pub admin: Admin,
    pub limits: Limits,
    pub intel: Option<IntelConfig>,
    pub session: Session,
    pub policy: Policy,
    pub step_up: Option<StepUp>,
    pub audit: Audit,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    /// `None`: a plaintext listener (behind a TLS-terminating balancer).
    pub tls: Option<TlsFiles>,
    /// Peers whose `X-Forwarded-For`, `Forwarded`, PROXY header and JA4 header are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Expect a PROXY protocol (v1 or v2) header from trusted peers.
    pub proxy_protocol: bool,
    /// On a plaintext listener, the header in which a trusted balancer passes the JA4.
    pub ja4_header: Option<HeaderName>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// Scheme and authority only (`http://host:port` or `https://host:port`).
    pub url: Uri,
    /// Extra CA to trust for an HTTPS upstream, beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// Send the client's Host to the upstream (default) rather than the upstream's own.
    pub preserve_host: bool,
    /// Pass `X-Tether-Ja4` / `X-Tether-Client-Ip` to the upstream.
    pub forward_fingerprint: bool,
    /// Pass `X-Tether-Decision` / `X-Tether-Score` / `X-Tether-Signals` to the upstream.
    pub forward_decision: bool,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    /// File holding the bearer token of the admin API; without one the API is off.
    pub token_file: Option<PathBuf>,
}


#[derive(Debug, Clone)]
pub struct Session {
    pub cookies: Vec<String>,
    /// Also take the session from `Authorization: Bearer`.
    pub bearer: bool,
    /// Hex key file (current key, optional previous key); generated at start if absent.
    pub hash_key_file: Option<PathBuf>,
    /// A header naming the user, set by a trusted auth layer (believed from trusted hops only).
    pub user_header: Option<HeaderName>,
    pub limits: StoreLimits,
    pub jwt: Option<JwtConfig>,
}

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
    /// The ID token claim compared with the challenged session's user.
    pub user_claim: String,
    /// Failed step-ups after which the session is revoked.
    pub max_failures: u8,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Audit {
    pub sink: AuditSink,
    /// Record allowed decisions too (bindings, new addresses and every non-allow
    /// decision are always recorded).
    pub allowed: bool,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigErrors(vec![ConfigError {
                path: String::from("(file)"),
                problem: Problem::File { path: path.to_path_buf(), source },
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Validates config text; relative paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let root: toml::Table = text.parse().map_err(|e| {
            ConfigErrors(vec![ConfigError { path: String::from("(file)"), problem: Problem::Syntax(Box::new(e)) }])
        })?;
        let problems = Problems::default();
        for key in root.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(key.clone(), Problem::UnknownKey);
            }
        }
        let section = |name| Section::new(&root, name, &problems, base_dir);

        let listen = read_listen(section("listen"));
        let upstream = read_upstream(section("upstream"));
        let admin = read_admin(section("admin"));
        let limits = Limits::read(section("limits"));
        let intel = read_intel(section("intel"));
        let session = read_session(section("session"));
        let policy = read_policy(section("policy"));
        let step_up = read_step_up(section("step_up"));
        let audit = read_audit(section("audit"));

        let problems = problems.into_vec();
        match (listen, upstream, admin, limits, intel, session, policy, step_up, audit) {
            (Some(listen), Some(upstream), Some(admin), Some(limits), Some(intel), Some(session), Some(policy), Some(step_up), Some(audit))
                if problems.is_empty() =>
            {
                Ok(Config { listen, upstream, admin, limits, intel, session, policy, step_up, audit })
            }
            _ => Err(ConfigErrors(problems)),
        }
    }
}

/// Each reader returns `None` when its section had a problem (already recorded).
fn read_listen(s: Section<'_>) -> Option<Listen> {
    if !s.is_present() {
        s.problem("addr", Problem::Missing);
    }
    let addr = s.required_string("addr").and_then(|v| s.parse_value::<SocketAddr>("addr", v, "an address such as \"0.0.0.0:8443\""));
    let cert = s.optional_file("tls_cert");
    let key = s.optional_file("tls_key");
    let cert_given = s.has("tls_cert");
    let key_given = s.has("tls_key");
    let mut ok = cert.is_ok() && key.is_ok();
    if cert_given != key_given {
        s.problem(if cert_given { "tls_key" } else { "tls_cert" }, Problem::Conflict { reason: "tls_cert and tls_key go together: give both or neither" });
        ok = false;
    }
    let trusted_proxies = read_cidrs(&s, "trusted_proxies");
    let proxy_protocol = s.boolean("proxy_protocol").unwrap_or(false);
    let ja4_header = s.parsed::<HeaderName>("ja4_header", "a header name");
    if ja4_header.is_some() && cert_given {
        s.problem("ja4_header", Problem::Conflict { reason: "a JA4 header is only read on a plaintext listener; with TLS tether computes the JA4 itself" });
        ok = false;
    }
    let tls = match (cert, key) {
        (Ok(Some(cert)), Ok(Some(key))) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    s.finish();
    ok.then_some(())?;
    Some(Listen { addr: addr?, tls, trusted_proxies: trusted_proxies?, proxy_protocol, ja4_header })
}

fn read_cidrs(s: &Section<'_>, key: &'static str) -> Option<Vec<IpNet>> {
    let Some(items) = s.string_array(key) else {
        return (!s.has(key)).then(Vec::new);
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match parse_net(item) {
            Some(net) => out.push(net),
            None => {
                s.problem(&format!("{key}[{i}]"), Problem::Invalid { expected: "an IP address or CIDR", found: (*item).to_owned() });
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn read_upstream(s: Section<'_>) -> Option<Upstream> {
    if !s.is_present() {
        s.problem("url", Problem::Missing);
    }
    let url = s.required_string("url").and_then(|v| {
        let uri: Uri = s.parse_value("url", v, "an http:// or https:// URL")?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
        let path_ok = uri.path_and_query().is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
        if !scheme_ok || uri.authority().is_none() || !path_ok {
            s.problem("url", Problem::Invalid { expected: "an http:// or https:// URL with a host and no path", found: v.to_owned() });
            return None;
        }
        Some(uri)
    });
    let ca_file = s.optional_file("ca_file");
    let preserve_host = s.boolean("preserve_host").unwrap_or(true);
    let forward_fingerprint = s.boolean("forward_fingerprint").unwrap_or(false);
    let forward_decision = s.boolean("forward_decision").unwrap_or(false);
    s.finish();
    Some(Upstream { url: url?, ca_file: ca_file.ok()?, preserve_host, forward_fingerprint, forward_decision })
}

fn read_admin(s: Section<'_>) -> Option<Admin> {
    let addr = match s.string("addr") {
        Some(v) => s.parse_value::<SocketAddr>("addr", v, "an address such as \"127.0.0.1:9090\""),
        // Loopback by default: the admin listener exposes operational state.
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    let token_file = s.optional_file("token_file");
    s.finish();
    Some(Admin { addr: addr?, token_file: token_file.ok()? })
}

/// Bound on cached intel lookups: ~100 bytes each, so the default costs a few MiB.
const DEFAULT_INTEL_CACHE: usize = 65_536;

fn read_intel(s: Section<'_>) -> Option<Option<IntelConfig>> {
    if !s.is_present() {
        s.finish();
        return Some(None);
    }
    let asn_db = s.optional_file("asn_db");
    if !s.has("asn_db") {
        s.problem("asn_db", Problem::Missing);
    }
    let city_db = s.optional_file("city_db");
    let anonymous_ip_db = s.optional_file("anonymous_ip_db");
    let mut ok = city_db.is_ok() && anonymous_ip_db.is_ok();
    let mut ioc_files = Vec::new();
    for (i, item) in s.array("ioc_files").map(|a| a.as_slice()).unwrap_or_default().iter().enumerate() {
        let key = format!("ioc_files[{i}]");
        let (path, label) = match item {
            toml::Value::String(p) => (Some(p.as_str()), None),
            toml::Value::Table(t) => {
                let unknown = t.keys().find(|k| *k != "path" && *k != "label");
                if let Some(k) = unknown {
                    s.problem(&format!("{key}.{k}"), Problem::UnknownKey);
                    ok = false;
                }
                (t.get("path").and_then(|v| v.as_str()), t.get("label").and_then(|v| v.as_str()))
            }
            other => {
                s.problem(&key, Problem::WrongType { expected: "a path or { path, label }", found: other.type_str() });
                ok = false;
                continue;
            }
        };
        let Some(path) = path else {
            s.problem(&format!("{key}.path"), Problem::Missing);
            ok = false;
            continue;
        };
        match s.resolve_file(&key, path) {
            Some(p) => {
                let label = label.map(str::to_owned).unwrap_or_else(|| {
                    p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.to_owned())
                });
                ioc_files.push(IocFile { path: p, label });
            }
            None => ok = false,
        }
    }
    if ioc_files.len() > crate::intel::lists::MAX_IOC_FILES {
        s.problem("ioc_files", Problem::Conflict { reason: "at most 64 IoC files" });
        ok = false;
    }
    let catalogue = s.boolean("catalogue").unwrap_or(true);
    let cache_entries = s.integer("cache_entries", 1, 10_000_000).map_or(DEFAULT_INTEL_CACHE, |n| n as usize);

    let networks_section = s.sub("networks");
    let mut networks = Vec::new();
    for cat in [Category::Vpn, Category::Hosting, Category::Tor, Category::Proxy] {
        ok &= read_entries(&networks_section, cat, &mut networks);
    }
    networks_section.finish();

    let allow_section = s.sub("allow");
    let mut allow = Vec::new();
    ok &= read_entries(&allow_section, Category::Corporate, &mut allow);
    ok &= read_entries(&allow_section, Category::PrivacyRelay, &mut allow);
    let mut privacy_relay_files = Vec::new();
    for (i, f) in allow_section.string_array("privacy_relay_files").unwrap_or_default().into_iter().enumerate() {
        match allow_section.resolve_file(&format!("privacy_relay_files[{i}]"), f) {
            Some(p) => privacy_relay_files.push(p),
            None => ok = false,
        }
    }
    allow_section.finish();
    s.finish();
    ok.then_some(())?;
    Some(Some(IntelConfig {
        asn_db: asn_db.ok()??,
        city_db: city_db.ok()?,
        anonymous_ip_db: anonymous_ip_db.ok()?,
        ioc_files,
        catalogue,
        networks,
        allow,
        privacy_relay_files,
        cache_entries,
    }))
}

/// Reads `key = ["AS…", "CIDR", "IP", …]` for one category; false if any entry is bad.
fn read_entries(s: &Section<'_>, category: Category, out: &mut Vec<(Category, Entry)>) -> bool {
    let key = category.as_str();
    let mut ok = true;
    for (i, text) in s.string_array(key).unwrap_or_default().into_iter().enumerate() {
        match Entry::parse(text) {
            Some(e) => out.push((category, e)),
            None => {
                s.problem(&format!("{key}[{i}]"), Problem::Invalid { expected: "an IP address, CIDR or ASN (AS…)", found: text.to_owned() });
                ok = false;
            }
        }
    }
    ok
}

fn read_session(s: Section<'_>) -> Option<Session> {
    let mut ok = true;
    let mut cookies = Vec::new();
    for (i, name) in s.string_array("cookies").unwrap_or_default().into_iter().enumerate() {
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if valid {
            cookies.push(name.to_owned());
        } else {
            s.problem(&format!("cookies[{i}]"), Problem::Invalid { expected: "a cookie name (a token, RFC 6265)", found: name.to_owned() });
            ok = false;
        }
    }
    let bearer = s.boolean("bearer").unwrap_or(true);
    let hash_key_file = s.optional_file("hash_key_file");
    ok &= hash_key_file.is_ok();
    let user_header = s.parsed::<HeaderName>("user_header", "a header name");
    let d = StoreLimits::default();
    let secs = |key, default: u32| s.duration(key, std::time::Duration::from_secs(365 * 86_400)).map_or(default, |v| v.as_secs() as u32);
    let limits = StoreLimits {
        idle_ttl: secs("idle_ttl", d.idle_ttl),
        absolute_ttl: secs("absolute_ttl", d.absolute_ttl),
        max_sessions: s.integer("max_sessions", 1, 100_000_000).map_or(d.max_sessions, |n| n as usize),
        max_users: s.integer("max_users", 1, 10_000_000).map_or(d.max_users, |n| n as usize),
    };
    let jwt_section = s.sub("jwt");
    let jwt = if jwt_section.is_present() { read_jwt(&jwt_section) } else { Some(None) };
    jwt_section.finish();
    s.finish();
    ok.then_some(())?;
    Some(Session { cookies, bearer, hash_key_file: hash_key_file.ok()?, user_header, limits, jwt: jwt? })
}

fn read_jwt(s: &Section<'_>) -> Option<Option<JwtConfig>> {
    let issuer = s.required_string("issuer");
    let audience = s.required_string("audience");
    let jwks_file = s.optional_file("jwks_file");
    if !s.has("jwks_file") {
        s.problem("jwks_file", Problem::Missing);
    }
    let mut algorithms = Vec::new();
    let mut ok = true;
    for (i, a) in s.string_array("algorithms").unwrap_or_else(|| vec!["RS256", "ES256"]).into_iter().enumerate() {
        match a.parse::<jsonwebtoken::Algorithm>() {
            // Symmetric algorithms would let anyone holding the key set forge tokens.
            Ok(alg) if !matches!(alg, jsonwebtoken::Algorithm::HS256 | jsonwebtoken::Algorithm::HS384 | jsonwebtoken::Algorithm::HS512) => {
                algorithms.push(alg)
            }
            _ => {
                s.problem(&format!("algorithms[{i}]"), Problem::Invalid { expected: "an asymmetric JWS algorithm (RS256, PS256, ES256, ES384, EdDSA, ...)", found: a.to_owned() });
                ok = false;
            }
        }
    }
    let user_claim = s.string("user_claim").unwrap_or("sub").to_owned();
    ok.then_some(())?;
    Some(Some(JwtConfig {
        issuer: issuer?.to_owned(),
        audience: audience?.to_owned(),
        algorithms,
        jwks_file: jwks_file.ok()??,
        user_claim,
    }))
}

fn read_policy(s: Section<'_>) -> Option<Policy> {
    let d = Policy::default();
    let mode = match s.string("mode") {
        None => Some(Mode::Enforce),
        Some("enforce") => Some(Mode::Enforce),
        Some("monitor") => Some(Mode::Monitor),
        Some(other) => {
            s.problem("mode", Problem::Invalid { expected: "\"monitor\" or \"enforce\"", found: other.to_owned() });
            None
        }
    };
    let threshold = |key, default: u32| s.integer(key, 1, 100_000).map_or(default, |n| n as u32);
    let step_up_threshold = threshold("step_up_threshold", d.step_up_threshold);
    let block_threshold = threshold("block_threshold", d.block_threshold);
    let revoke_threshold = s.integer("revoke_threshold", 1, 100_000).map(|n| n as u32);
    let mut ok = true;
    if block_threshold < step_up_threshold || revoke_threshold.is_some_and(|r| r < block_threshold) {
        s.problem("block_threshold", Problem::Conflict { reason: "thresholds must rise: step_up <= block <= revoke" });
        ok = false;
    }
    let max_travel_kmh = s.integer("max_travel_kmh", 100, 100_000).map_or(d.max_travel_kmh, |n| n as f32);
    let concurrent_window_secs = s
        .duration("concurrent_window", std::time::Duration::from_secs(86_400))
        .map_or(d.concurrent_window_secs, |w| w.as_secs() as u32);

    let weights_section = s.sub("weights");
    let mut weights = d.weights;
    for signal in Signal::ALL {
        if let Some(w) = weights_section.integer(signal.as_str(), 0, 10_000) {
            weights[signal as usize] = w as u16;
        }
    }
    weights_section.finish();

    let mut routes = Vec::new();
    for r in s.tables("routes") {
        let path_prefix = r.required_string("path_prefix");
        if path_prefix.is_some_and(|p| !p.starts_with('/')) {
            r.problem("path_prefix", Problem::Invalid { expected: "a path starting with /", found: path_prefix.unwrap_or_default().to_owned() });
            ok = false;
        }
        let mut methods = Vec::new();
        for (i, m) in r.string_array("methods").unwrap_or_default().into_iter().enumerate() {
            match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => {
                    r.problem(&format!("methods[{i}]"), Problem::Invalid { expected: "an HTTP method", found: m.to_owned() });
                    ok = false;
                }
            }
        }
        let sensitivity = match r.raw_number("sensitivity") {
            None => 1.0,
            Some(v) if (0.0..=100.0).contains(&v) => v as f32,
            Some(v) => {
                r.problem("sensitivity", Problem::Invalid { expected: "a number between 0 and 100", found: v.to_string() });
                ok = false;
                1.0
            }
        };
        let fresh_auth = r.duration("fresh_auth", std::time::Duration::from_secs(30 * 86_400));
        r.finish();
        if let Some(p) = path_prefix {
            routes.push(Route { path_prefix: p.to_owned(), methods, sensitivity, fresh_auth });
        }
    }
    s.finish();
    ok.then_some(())?;
    Some(Policy {
        mode: mode?,
        weights,
        step_up_threshold,
        block_threshold,
        revoke_threshold,
        routes,
        max_travel_kmh,
        concurrent_window_secs,
    })
}

fn read_step_up(s: Section<'_>) -> Option<Option<StepUp>> {
    if !s.is_present() {
        s.finish();
        return Some(None);
    }
    let https_url = |key: &'static str| -> Option<Uri> {
        let v = s.string(key)?;
        let uri: Uri = s.parse_value(key, v, "an https:// URL")?;
        if !matches!(uri.scheme_str(), Some("https") | Some("http")) || uri.authority().is_none() {
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
    let mut ok = true;
    let endpoints = match (issuer, explicit_any) {
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
    };
    let client_id = s.required_string("client_id").map(str::to_owned);
    let inline = s.string("client_secret");
    let file_given = given("client_secret_file");
    let file = s.optional_file("client_secret_file");
    let client_secret = match (inline, file_given) {
        (Some(_), true) => {
            s.problem("client_secret", Problem::Conflict { reason: "give client_secret or client_secret_file, not both" });
            ok = false;
            None
        }
        (Some(v), false) => Some(ClientSecret::Inline(v.to_owned())),
        (None, true) => {
            ok &= matches!(file, Ok(Some(_)));
            file.ok().flatten().map(ClientSecret::File)
        }
        (None, false) => None,
    };
    let client_private_key_file = s.optional_file("client_private_key_file");
    ok &= client_private_key_file.is_ok();
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
            ok = false;
        }
        Some(ClientAuth::PrivateKeyJwt) if !s.has("client_private_key_file") => {
            s.problem("client_private_key_file", Problem::Missing);
            ok = false;
        }
        _ => {}
    }
    let acr_values = s.string("acr_values").map(str::to_owned);
    let required_amr = s.string_array("required_amr").unwrap_or_default().into_iter().map(str::to_owned).collect();
    let user_claim = s.string("user_claim").unwrap_or("sub").to_owned();
    let max_failures = s.integer("max_failures", 1, 100).map_or(3, |n| n as u8);
    let ca_file = s.optional_file("ca_file");
    let redirect_uri = s.string("redirect_uri").map(str::to_owned);
    if let Some(r) = &redirect_uri {
        if !r.ends_with("/.tether/callback") || r.parse::<Uri>().ok().and_then(|u| u.authority().cloned()).is_none() {
            s.problem("redirect_uri", Problem::Invalid { expected: "an absolute URL ending in /.tether/callback", found: r.clone() });
            ok = false;
        }
    }
    s.finish();
    ok.then_some(())?;
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
        user_claim,
        max_failures,
    }))
}

fn read_audit(s: Section<'_>) -> Option<Audit> {
    let sink = match s.string("path") {
        None | Some("-") => AuditSink::Stdout,
        Some(p) => AuditSink::File(s.resolve(p)),
    };
    let allowed = s.boolean("allowed").unwrap_or(false);
    s.finish();
    Some(Audit { sink, allowed })
}

#[cfg(test)]
mod tests;

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
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
}


#[derive(Debug, Clone)]
pub struct Session {
    pub cookies: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Monitor,
    Enforce,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
}

#[derive(Debug, Clone)]
pub enum IdpEndpoints {
    Discovery { issuer: Uri },
    Explicit { authorization: Uri, token: Uri, jwks: Uri },
}

#[derive(Debug, Clone)]
pub struct StepUp {
    pub endpoints: IdpEndpoints,
    pub client_id: String,
    pub client_secret: Option<ClientSecret>,
    pub acr_values: Option<String>,
    pub ca_file: Option<PathBuf>,
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

#[derive(Debug, Clone)]
pub enum AuditSink {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Audit {
    pub sink: AuditSink,
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

/// A CIDR, or a bare address as a host prefix.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from)).map(|n| n.trunc())
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
    s.finish();
    Some(Upstream { url: url?, ca_file: ca_file.ok()?, preserve_host, forward_fingerprint })
}

fn read_admin(s: Section<'_>) -> Option<Admin> {
    let addr = match s.string("addr") {
        Some(v) => s.parse_value::<SocketAddr>("addr", v, "an address such as \"127.0.0.1:9090\""),
        // Loopback by default: the admin listener exposes operational state.
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    s.finish();
    Some(Admin { addr: addr? })
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
    s.finish();
    ok.then_some(Session { cookies })
}

fn read_policy(s: Section<'_>) -> Option<Policy> {
    let mode = match s.string("mode") {
        None => Some(Mode::Enforce),
        Some("enforce") => Some(Mode::Enforce),
        Some("monitor") => Some(Mode::Monitor),
        Some(other) => {
            s.problem("mode", Problem::Invalid { expected: "\"monitor\" or \"enforce\"", found: other.to_owned() });
            None
        }
    };
    s.finish();
    Some(Policy { mode: mode? })
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
        (Some(_), true) => {
            s.problem("issuer", Problem::Conflict { reason: "give either issuer (discovery) or the explicit endpoints, not both" });
            None
        }
        (Some(issuer), false) => Some(IdpEndpoints::Discovery { issuer }),
        (None, _) => match (authorization, token, jwks) {
            (Some(authorization), Some(token), Some(jwks)) => Some(IdpEndpoints::Explicit { authorization, token, jwks }),
            _ => {
                for k in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
                    if !given(k) && !given("issuer") {
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
    let acr_values = s.string("acr_values").map(str::to_owned);
    let ca_file = s.optional_file("ca_file");
    s.finish();
    ok.then_some(())?;
    Some(Some(StepUp { endpoints: endpoints?, client_id: client_id?, client_secret, acr_values, ca_file: ca_file.ok()? }))
}

fn read_audit(s: Section<'_>) -> Option<Audit> {
    let sink = match s.string("path") {
        None | Some("-") => AuditSink::Stdout,
        Some(p) => AuditSink::File(s.resolve(p)),
    };
    s.finish();
    Some(Audit { sink })
}

#[cfg(test)]
mod tests;

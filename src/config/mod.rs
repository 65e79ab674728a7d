//! The operator's TOML file, read into typed values.
//!
//! Every problem is reported at once, each with its key path (`listen.addr`,
//! `limits.max_body_bytes`, `intel.ioc_files[2]`). Unknown keys are errors, so a typo never
//! silently falls back to a default. Relative file paths are resolved against the
//! directory holding the config file.

mod admin;
mod audit;
mod dbsc;
mod decode;
mod intel;
mod limits;
mod lineage;
mod listen;
mod log;
mod policy;
mod session;
mod step_up;
mod store;
mod upstream;

use std::fmt;
use std::path::{Path, PathBuf};

use decode::{Problems, Section};
use crate::intel::IntelConfig;
use crate::policy::Policy;

pub use admin::Admin;
pub use audit::{Audit, AuditFormat, AuditSink};
pub use limits::Limits;
pub use listen::{Listen, ProxySecret, TlsFiles};
pub use log::{Log, LogFormat};
pub use session::Session;
pub use step_up::{entra_multi_tenant, ClientAuth, ClientSecret, EgressProxy, IdpEndpoints, Identify, Provider, ProxyUrl, ProxyUrlError, StepUp, UnknownOwner};
pub use store::Store;
pub use upstream::Upstream;

/// The sections a config file may hold; anything else at the top level is an error.
const SECTIONS: &[&str] =
    &["listen", "upstream", "admin", "limits", "intel", "session", "policy", "step_up", "store", "audit", "log", "dbsc", "lineage"];

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
    /// An unknown key close to a known one: most unknown keys are typos.
    #[error("unknown key; did you mean `{near}`?")]
    UnknownKeyNear { near: &'static str },
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
    pub store: Store,
    pub audit: Audit,
    pub log: Log,
    /// `[dbsc]`: device-bound sessions (off unless enabled).
    pub dbsc: crate::dbsc::DbscConfig,
    /// `[lineage]`, when enabled.
    pub lineage: Option<crate::session::lineage::LineageConfig>,
}

impl Config {
    /// Settings that are valid but weaker than they look, each with its key path.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(l) = &self.lineage {
            if l.rotate_every < lineage::RECOMMENDED_ROTATE || l.grace < lineage::RECOMMENDED_GRACE {
                out.push(format!(
                    "lineage: rotate_every = {}s, grace = {}s; at least {}s and {}s are recommended (shorter ones are for tests: slow pages and sleeping tabs then read as lost answers or late requests)",
                    l.rotate_every,
                    l.grace,
                    lineage::RECOMMENDED_ROTATE,
                    lineage::RECOMMENDED_GRACE
                ));
            }
        }
        if let Some(su) = &self.step_up {
            if su.redirect_uri.is_none() && su.public_hosts.is_empty() && self.listen.tls.is_none() {
                out.push(
                    "step_up.redirect_uri: neither it nor step_up.public_hosts is set on a plaintext listener, so the step-up callback is built from whatever Host a request names"
                        .to_owned(),
                );
            }
            let owner_source = self.session.jwt.is_some()
                || self.session.user_header.is_some()
                || self.upstream.user_response_header.is_some()
                || su.identify == Identify::Silent;
            if !owner_source && su.unknown_owner == UnknownOwner::Refuse {
                out.push(
                    "step_up: no source names a session's owner (session.jwt, session.user_header, upstream.user_response_header or step_up.identify = \"silent\"), so a step-up can never unlock a session: owners challenged on a VPN cannot prove themselves"
                        .to_owned(),
                );
            }
        }
        out
    }

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
        let unknown = root.keys().filter(|key| !SECTIONS.contains(&key.as_str()));
        let errors = unknown.map(|key| ConfigError { path: key.clone(), problem: decode::unknown_key(key, SECTIONS) }).collect();
        let mut file = FileReader { root: &root, base_dir, errors };

        let listen = file.section("listen", listen::read);
        let upstream = file.section("upstream", upstream::read);
        let admin = file.section("admin", admin::read);
        let limits = file.section("limits", Limits::read);
        let intel = file.section("intel", intel::read);
        let session = file.section("session", session::read);
        let policy = file.section("policy", policy::read);
        let step_up = file.section("step_up", step_up::read);
        let store = file.section("store", store::read);
        let audit = file.section("audit", audit::read);
        let log = file.section("log", log::read);
        let cookies = session.as_ref().map(|s| s.cookies.clone());
        let dbsc = file.section_with("dbsc", |s| dbsc::read(s, cookies.as_deref()));
        let lineage = file.section("lineage", lineage::read);

        let config = || {
            Some(Config {
                listen: listen?,
                upstream: upstream?,
                admin: admin?,
                limits: limits?,
                intel: intel?,
                session: session?,
                policy: policy?,
                step_up: step_up?,
                store: store?,
                audit: audit?,
                log: log?,
                dbsc: dbsc?,
                lineage: lineage?,
            })
        };
        match config() {
            Some(config) if file.errors.is_empty() => {
                // The companion must never be read as the session itself.
                if config.lineage.as_ref().is_some_and(|l| config.session.cookies.iter().any(|c| c.eq_ignore_ascii_case(&l.cookie))) {
                    return Err(ConfigErrors(vec![ConfigError { path: "lineage.cookie".into(), problem: Problem::Conflict { reason: "names one of session.cookies" } }]));
                }
                // A session idle for a rotation is forgotten before its value is due: the
                // next request issues an unarmed lineage, and a copy passes unnoticed.
                if config.lineage.as_ref().is_some_and(|l| l.rotate_every >= config.session.limits.idle_ttl) {
                    return Err(ConfigErrors(vec![ConfigError {
                        path: "lineage.rotate_every".into(),
                        problem: Problem::Conflict { reason: "must be shorter than session.idle_ttl (a session forgotten between rotations loses its lineage)" },
                    }]));
                }
                Ok(config)
            }
            _ => Err(ConfigErrors(file.errors)),
        }
    }
}

/// The parsed file, read section by section; every section's problems are kept, in the
/// order found.
struct FileReader<'t> {
    root: &'t toml::Table,
    base_dir: &'t Path,
    errors: Vec<ConfigError>,
}

impl FileReader<'_> {
    /// Reads one top-level section with `read`, then reports its unknown keys. The
    /// section's value stands only when the section had no problem at all, so a reader
    /// records problems and carries on reading (every key gets its error) without
    /// tracking whether it has failed.
    fn section<T>(&mut self, name: &'static str, read: fn(&Section<'_>) -> Option<T>) -> Option<T> {
        self.section_with(name, read)
    }

    /// [`FileReader::section`] for a reader that also looks at an earlier section.
    fn section_with<T>(&mut self, name: &'static str, read: impl FnOnce(&Section<'_>) -> Option<T>) -> Option<T> {
        let problems = Problems::default();
        let section = Section::new(self.root, name, &problems, self.base_dir);
        let value = read(&section);
        section.finish();
        let problems = problems.into_vec();
        if problems.is_empty() {
            value
        } else {
            self.errors.extend(problems);
            None
        }
    }
}

#[cfg(test)]
mod tests;

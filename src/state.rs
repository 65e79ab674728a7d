//! The one immutable snapshot of everything a request needs (config, TLS, upstream
//! client), swapped atomically as a whole so a request never sees half a reload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use crate::audit::{AuditLog, AuditOpenError};
use crate::config::{Config, Store as StoreConfig};
use crate::detector::{Detector, DetectorError};
use crate::session::{HashKey, Store, StoreError};
use crate::stepup::oidc::{IdpClient, OidcSetupError};
use crate::stepup::Challenges;
use crate::intel::{Intel, IntelCause, IntelErrors};
use crate::metrics::Metrics;
use crate::net::client_addr::TrustedProxies;
use crate::net::tls::{self, TlsError};
use crate::upstream::UpstreamClient;

pub struct Snapshot {
    pub config: Config,
    pub tls: Option<Arc<ServerConfig>>,
    /// The listener's leaf certificate: the hosts it names may be a step-up's redirect.
    pub tls_leaf: Option<rustls::pki_types::CertificateDer<'static>>,
    pub trusted: TrustedProxies,
    pub upstream: UpstreamClient,
    /// `None` without an `[intel]` section.
    pub intel: Option<Arc<Intel>>,
    pub detector: Detector,
    /// The OpenID provider client, with `[step_up]`.
    pub idp: Option<Arc<IdpClient>>,
    /// The admin API's bearer token; `None` keeps the API off.
    pub admin_token: Option<AdminToken>,
    /// Increases by one with every snapshot installed.
    pub generation: u64,
}

/// One file the config names that could not be loaded, named by its key path
/// (`intel.city_db`, `listen.tls_key`), its cause said once.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {cause}")]
pub struct LoadError {
    pub key: String,
    #[source]
    pub cause: LoadCause,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadCause {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Intel(#[from] IntelCause),
    #[error(transparent)]
    Session(#[from] DetectorError),
    #[error(transparent)]
    Idp(#[from] OidcSetupError),
    #[error("{0}")]
    AdminToken(#[source] std::io::Error),
    /// A file tether writes to (`check-config` only: `run` reports its own open error).
    #[error("{0}")]
    Output(#[source] std::io::Error),
}

/// Every part of a snapshot that could not be built: the config is valid TOML but names
/// files tether cannot use. Reported all at once, as config errors are.
#[derive(Debug)]
pub struct SnapshotError(pub Vec<LoadError>);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::report::Joined(&self.0).fmt(f)
    }
}

impl std::error::Error for SnapshotError {}

impl Snapshot {
    /// Loads everything the config names (certificates, keys, databases, lists) without
    /// touching the network, and reports every failure at once. `check-config` builds
    /// one too, so it refuses exactly what `run` and a reload refuse.
    pub fn build(config: Config, generation: u64, metrics: &Metrics, generated_key: &HashKey) -> Result<Snapshot, SnapshotError> {
        let mut errors = Vec::new();
        let mut fail = |key: &str, cause: LoadCause| errors.push(LoadError { key: key.to_owned(), cause });
        let listener = match &config.listen.tls {
            Some(files) => {
                let certs = tls::load_chain(&files.cert).map_err(|e| fail("listen.tls_cert", e.into())).ok();
                let key = tls::load_key(&files.key).map_err(|e| fail("listen.tls_key", e.into())).ok();
                match (certs, key) {
                    (Some(certs), Some(key)) => {
                        let leaf = certs.first().cloned();
                        let clients = tls::Clients { ca: config.listen.client_ca.as_deref(), http2: config.listen.http2 };
                        tls::server_config_from(certs, key, clients)
                            .map_err(|e| match e {
                                // The client CA's own trouble is the client CA's key.
                                e @ (TlsError::Ca { .. } | TlsError::ClientCa(_)) => fail("listen.client_ca", e.into()),
                                e if config.listen.client_ca.as_deref().is_some_and(|ca| matches!(&e, TlsError::Certs { path, .. } | TlsError::NoCerts { path } if path == ca)) => {
                                    fail("listen.client_ca", e.into())
                                }
                                e => fail("listen.tls_key", tls::named_mismatch(e, &files.cert).into()),
                            })
                            .ok()
                            .map(|server| (server, leaf))
                    }
                    _ => None,
                }
            }
            None => None,
        };
        let upstream = UpstreamClient::new(&config.upstream, &config.limits, config.listen.workers).map_err(|e| fail("upstream.ca_file", e.into())).ok();
        let intel = match &config.intel {
            Some(cfg) => match Intel::load(cfg, metrics.intel_lookup_errors.clone()) {
                Ok(intel) => Some(Arc::new(intel)),
                Err(IntelErrors(list)) => {
                    list.into_iter().for_each(|e| fail(&e.key, e.cause.into()));
                    None
                }
            },
            None => None,
        };
        let detector = Detector::build(&config, generated_key).map_err(|e| fail(session_key(&e), e.into())).ok();
        let idp = match config.step_up.as_ref().map(IdpClient::new) {
            Some(Ok(idp)) => Some(Arc::new(idp)),
            Some(Err(e)) => {
                fail(step_up_key(&e), e.into());
                None
            }
            None => None,
        };
        let admin_token = match &config.admin.token_file {
            Some(path) => AdminToken::read(path).map_err(|e| fail("admin.token_file", LoadCause::AdminToken(e))).ok(),
            None => None,
        };
        let (Some(upstream), Some(detector), true) = (upstream, detector, errors.is_empty()) else {
            return Err(SnapshotError(errors));
        };
        let (tls, tls_leaf) = listener.map_or((None, None), |(server, leaf)| (Some(server), leaf));
        let trusted = TrustedProxies::new(config.listen.trusted_proxies.clone());
        Ok(Snapshot { config, tls, tls_leaf, trusted, upstream, intel, detector, idp, admin_token, generation })
    }

    /// Sets the gauges that describe the snapshot in force. State observes into the
    /// metrics, never the other way round.
    fn observe(&self, metrics: &Metrics) {
        metrics.config_generation.set(self.generation as i64);
        metrics.set_listener_certificate(self.tls_leaf.as_ref().and_then(tls::not_after));
        metrics.routes_in_force(&self.detector.policy);
        metrics.intel_db_build.reset();
        if let Some(intel) = &self.intel {
            for db in intel.databases() {
                metrics.intel_db_build.with_label_values(&[db.kind.as_str()]).set(db.build_epoch() as i64);
            }
        }
    }
}

/// The key whose file a session error is about.
fn session_key(e: &DetectorError) -> &'static str {
    match e {
        DetectorError::HashKey(_) => "session.hash_key_file",
        DetectorError::Jwks(_) => "session.jwt.jwks_file",
    }
}

/// The key whose file an IdP client error is about.
fn step_up_key(e: &OidcSetupError) -> &'static str {
    match e {
        OidcSetupError::Tls(_) => "step_up.ca_file",
        OidcSetupError::Secret { .. } => "step_up.client_secret_file",
        OidcSetupError::PrivateKey { .. } => "step_up.client_private_key_file",
        OidcSetupError::Proxy(_) => "step_up.proxy",
    }
}

/// The admin API's bearer token; compared in constant time, never printed.
pub struct AdminToken(Vec<u8>);

/// Tokens shorter than this are refused: the admin API can revoke every session.
const MIN_ADMIN_TOKEN: usize = 16;

impl AdminToken {
    fn read(path: &std::path::Path) -> std::io::Result<AdminToken> {
        let text = std::fs::read_to_string(path)?;
        let token = text.trim();
        if token.len() < MIN_ADMIN_TOKEN {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the token must be at least 16 characters"));
        }
        Ok(AdminToken(token.as_bytes().to_vec()))
    }

    pub fn matches(&self, presented: &[u8]) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.0.as_slice(), presented).into()
    }
}

/// Why the process-wide state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("audit.path: {0}")]
    Audit(#[from] AuditOpenError),
    #[error("store: {0}")]
    Store(#[source] StoreError),
    #[error("session.state_dir {}: {source}", path.display())]
    StateDir { path: std::path::PathBuf, source: std::io::Error },
}

/// The store the config names: Redis; else the embedded store, its revocations kept in
/// `session.state_dir` when set. Redis is connected lazily, so a Redis that is down
/// does not stop the start (requests are judged degraded until it answers).
async fn open_store(config: &Config, now: crate::session::Secs) -> Result<Store, SharedError> {
    let limits = config.session.limits;
    match (&config.store, &config.session.state_dir) {
        (StoreConfig::Redis(cfg), _) => Store::redis((**cfg).clone(), limits).await.map_err(SharedError::Store),
        (StoreConfig::Memory, Some(dir)) => {
            std::fs::create_dir_all(dir).map_err(|source| SharedError::StateDir { path: dir.clone(), source })?;
            Store::memory_persistent(limits, dir, now).map_err(SharedError::Store)
        }
        (StoreConfig::Memory, None) => Ok(Store::memory(limits)),
    }
}

/// State shared by every connection for the life of the process: what must survive a
/// reload (sessions, pending challenges, the generated hash key, the audit writer).
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
    pub metrics: Metrics,
    pub store: Store,
    pub audit: AuditLog,
    pub challenges: Challenges,
    /// The hash key used when the config names no key file.
    pub generated_key: HashKey,
    /// The config file, for reloads asked through the admin API.
    pub config_path: std::sync::OnceLock<std::path::PathBuf>,
    /// Bumped after each reload (and touched when the shared store reports changes it
    /// cannot name), so long-lived tunnels re-check their session.
    pub reloaded: tokio::sync::watch::Sender<u64>,
    /// One reload at a time: two at once (SIGHUP and the file watcher both see a change)
    /// would take the same generation, and the older read could install last.
    pub reloading: std::sync::Mutex<()>,
    /// Open tunnels by session, so a revocation closes them at once.
    pub tunnels: crate::session::tunnels::OpenTunnels,
    /// The clock every lifetime is measured by (tests move it).
    pub clock: crate::session::Clock,
    /// Set when a stop began: `/readyz` answers 503 while in-flight requests finish.
    pub draining: std::sync::atomic::AtomicBool,
    /// Device-key challenges already answered (DBSC), so each is accepted once.
    pub dbsc_spent: crate::dbsc::spent::Spent,
}

impl Shared {
    /// Builds the store the first snapshot's config names (read once: the store is not
    /// swapped by a reload) and the rest of the process-wide state.
    pub async fn new(first: Snapshot, metrics: Metrics, generated_key: HashKey) -> Result<Shared, SharedError> {
        let generation = AtomicU64::new(first.generation);
        first.observe(&metrics);
        let store = open_store(&first.config, crate::session::now()).await?;
        let challenges = match store.as_redis() {
            Some(redis) => Challenges::default().sharing(redis.challenges()),
            None => Challenges::default(),
        };
        let audit = AuditLog::start(&first.config.audit.sink, first.config.audit.format, metrics.audit_dropped.clone(), metrics.audit_write_errors.clone())?;
        Ok(Shared {
            snapshot: ArcSwap::from_pointee(first),
            generation,
            metrics,
            store,
            audit,
            challenges,
            generated_key,
            config_path: std::sync::OnceLock::new(),
            reloaded: tokio::sync::watch::Sender::new(0),
            reloading: std::sync::Mutex::new(()),
            tunnels: Default::default(),
            clock: Default::default(),
            draining: Default::default(),
            dbsc_spent: Default::default(),
        })
    }

    /// Brings the gauges that mirror live state up to date (at each scrape).
    pub fn observe_state(&self) {
        let m = &self.metrics;
        let counts = self.store.counts();
        m.sessions.set(counts.sessions as i64);
        m.store_evictions.inc_by(counts.evictions.saturating_sub(m.store_evictions.get()));
        m.tunnels_open.set(self.tunnels.len() as i64);
        m.challenges_pending.set(self.challenges.len() as i64);
        m.store_revocations.set(counts.revocations as i64);
        if let Some(redis) = self.store.as_redis() {
            let failed = redis.degraded_operations();
            m.store_degraded_operations.inc_by(failed.saturating_sub(m.store_degraded_operations.get()));
        }
    }

    /// Asks every open tunnel to judge its session again (the shared store says sessions
    /// changed elsewhere and it cannot say which), without changing the generation.
    pub fn rejudge_tunnels(&self) {
        self.reloaded.send_modify(|_| {});
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The generation the next snapshot should carry.
    pub fn next_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire) + 1
    }

    pub fn install(&self, next: Snapshot) {
        next.observe(&self.metrics);
        let generation = next.generation;
        self.generation.store(generation, Ordering::Release);
        self.snapshot.store(Arc::new(next));
        self.reloaded.send_replace(generation);
    }
}

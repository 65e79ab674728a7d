//! The shared store: sessions, user baselines, revocations, pending step-up challenges and
//! back-channel logout ids in Redis (or Valkey), so replicas judge a session with one
//! memory and a restart forgets nothing.
//!
//! - One round trip per operation: each is a Lua script (`scripts.rs`), atomic where two
//!   replicas race (a step-up demand set at one is never cleared by a plain request at
//!   another; a binding is never replaced by a replica that did not see it).
//! - A local cache answers most loads without a round trip; steady use re-writes a
//!   session at most every [`WRITE_EVERY`] seconds. A change to a session's security
//!   state, a revocation or a logout is published on `<prefix>inv`; every replica drops
//!   its copy and tells [`RedisStore::subscribe`]rs (open tunnels close on it).
//! - Every call is bounded by `command_timeout`. When Redis cannot answer, what the cache
//!   knows still holds (revocations for their whole lifetime), a load with nothing cached
//!   is [`StoreError::Degraded`] (judge by network-only rules), and such a session is
//!   not written back, so a blind first sight never overwrites real history.
//!   Reconnection is automatic; [`RedisStore::degraded_operations`] counts the failures.
//!
//! Key layout, lifetimes and the required `maxmemory-policy` are in docs/detection.md
//! ("Shared store").

pub mod codec;
mod cache;
mod challenges;
mod invalidate;
mod scripts;

pub use challenges::RedisChallenges;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};
use tokio::sync::broadcast;

use self::cache::{Cache, Entry, Hit};
use super::lineage::{Digest, Lineage};
use super::memory::StoreCounts;
use super::record::USER_SESSIONS;
use super::{Bind, Loaded, Secs, SessionKey, SessionRecord, StoreError, StoreLimits, UserBaseline};

/// A session used steadily is re-written (its idle lifetime slid forward) at most this
/// often; a minute is far below any sensible `idle_ttl` and saves a write per request.
pub const WRITE_EVERY: Secs = 60;
/// How long a user baseline lives without being re-learned. The embedded store keeps
/// baselines until evicted by count; here a lifetime lets `volatile-lru` evict them.
pub const BASELINE_TTL: Secs = 90 * 24 * 3600;
/// Back-channel logout ids are remembered as long as a logout token is accepted
/// (`iat` within ten minutes) plus leeway.
pub const LOGOUT_JTI_TTL: Secs = 660;
/// Longest a replica answers a lineage check from its own copy (see
/// [`RedisStore::lineage`]); `cache_ttl` when shorter.
const LINEAGE_TRUST: Duration = Duration::from_secs(1);
/// Invalidations queued per subscriber before the slowest one misses some (it is then
/// told to drop everything, `RecvError::Lagged`).
const EVENTS: usize = 4096;

/// The store script's answer when it kept the device key already bound in place of the
/// one written (see `scripts::STORE`); 3 when the session is revoked.
const KEPT_DEVICE: i64 = 5;
const REFUSED_REVOKED: i64 = 3;

/// Whether a write may be skipped when it changes nothing but the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Steady,
    Binding,
}

/// What a store call did.
enum Written {
    /// The script ran; its answer.
    Shared(i64),
    /// Nothing changed since the last write: none was needed.
    Skipped,
}

/// What to do when the shared store cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Judge the request as a first sight by network-only rules (anonymizer, IoC,
    /// client class): the owner keeps working, a replay from a VPN is still challenged,
    /// but a thief on a residential network abroad is not caught.
    #[default]
    NetworkOnly,
    /// Refuse the request: nobody works while the store is down.
    Refuse,
}

/// How to reach Redis. Read by the `[store]` config section.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://` (TLS).
    pub url: String,
    /// PEM roots for `rediss://` instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// The password (or ACL user's password), first line of the file.
    pub password_file: Option<PathBuf>,
    /// ACL user name.
    pub username: Option<String>,
    /// Every key and the invalidation channel start with this, so several deployments
    /// can share one Redis.
    pub key_prefix: String,
    pub connect_timeout: Duration,
    /// Bound on every command: a frozen Redis costs a request at most this.
    pub command_timeout: Duration,
    /// Multiplexed connections (each carries many requests at once).
    pub pool_size: usize,
    pub on_error: OnError,
    /// How long a loaded session is trusted without asking Redis again. Invalidations
    /// arrive within milliseconds; this bounds staleness if one is lost.
    pub cache_ttl: Duration,
    /// How long a cached session is still used while Redis cannot be read.
    pub stale_for: Duration,
    pub cache_capacity: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            ca_file: None,
            password_file: None,
            username: None,
            key_prefix: "tether:".into(),
            // A same-zone Redis answers in well under a millisecond; these only bound a
            // sick one, so a request never waits long on it.
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(250),
            pool_size: 2,
            on_error: OnError::NetworkOnly,
            cache_ttl: Duration::from_secs(2),
            stale_for: Duration::from_secs(900),
            cache_capacity: 100_000,
        }
    }
}

/// Why the store could not be set up (nothing here needs Redis to be up).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("store url is not a Redis url")]
    Url(#[source] redis::RedisError),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    EmptyPassword { path: PathBuf },
    #[error("cannot set up the Redis client")]
    Client(#[source] redis::RedisError),
    #[error("store.pool_size must be at least 1")]
    PoolSize,
}

/// What a replica is told when a session's shared state changed elsewhere (or here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The session's security state changed (a step-up demanded or completed).
    Session(SessionKey),
    /// The session was revoked: close its tunnels.
    Revoked(SessionKey),
    /// Every session of this user was revoked: close their tunnels.
    User(Arc<str>),
    /// Messages may have been missed (reconnected): re-judge anything open.
    All,
}

struct Keys {
    prefix: String,
    revoked: String,
    revoked_users: String,
    channel: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            revoked: format!("{prefix}revoked"),
            revoked_users: format!("{prefix}revoked-users"),
            channel: format!("{prefix}inv"),
        }
    }

    fn session(&self, key: &SessionKey) -> String {
        format!("{}s:{}", self.prefix, key.hex().as_str())
    }

    fn index(&self, user: &str) -> String {
        format!("{}x:{user}", self.prefix)
    }

    fn challenge(&self, id: &[u8]) -> String {
        format!("{}c:{}", self.prefix, hex(id))
    }

    fn lineage(&self, key: &SessionKey) -> String {
        format!("{}l:{}", self.prefix, key.hex().as_str())
    }

    fn challenges_of(&self, session: &SessionKey) -> String {
        format!("{}cs:{}", self.prefix, session.hex().as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

struct Scripts {
    load: Script,
    store: Script,
    index: Script,
    revoke: Script,
    revoke_user: Script,
    sessions_of: Script,
    challenge_put: Script,
    challenge_take: Script,
    challenge_clear: Script,
    lineage_swap: Script,
}

struct Inner {
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    keys: Keys,
    scripts: Scripts,
    cache: Cache,
    limits: StoreLimits,
    command_timeout: Duration,
    on_error: OnError,
    events: broadcast::Sender<Invalidation>,
    degraded: AtomicU64,
    /// Milliseconds since the epoch of the last failed and last successful call (0: never).
    last_failure: AtomicU64,
    last_success: AtomicU64,
    revocations: AtomicU64,
    evictions: AtomicU64,
    /// Subscribed to the invalidation channel right now.
    listening: AtomicBool,
}

/// The shared store. Dropping it stops its subscription task.
pub struct RedisStore {
    inner: Arc<Inner>,
    subscriber: tokio::task::AbortHandle,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// Health for `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisHealth {
    /// The most recent call failed (or none succeeded yet and one failed).
    pub degraded: bool,
    pub degraded_operations: u64,
}

impl RedisStore {
    /// Sets up the client, connections (lazily: tether starts while Redis is down) and
    /// the invalidation subscription. Must run inside a Tokio runtime.
    pub async fn connect(cfg: RedisConfig, limits: StoreLimits) -> Result<RedisStore, SetupError> {
        if cfg.pool_size == 0 {
            return Err(SetupError::PoolSize);
        }
        let mut info = cfg.url.as_str().into_connection_info().map_err(SetupError::Url)?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.username {
            settings = settings.set_username(user);
        }
        if let Some(path) = &cfg.password_file {
            let text = tokio::fs::read_to_string(path).await.map_err(|source| SetupError::Read { path: path.clone(), source })?;
            let password = text.lines().next().unwrap_or("").trim_end();
            if password.is_empty() {
                return Err(SetupError::EmptyPassword { path: path.clone() });
            }
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        if cfg.url.starts_with("rediss:") {
            // The TLS client takes the process's default crypto provider; tether's own
            // listeners pass theirs explicitly, so install it here (a no-op if one is).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = match &cfg.ca_file {
            Some(path) => {
                let pem = tokio::fs::read(path).await.map_err(|source| SetupError::Read { path: path.clone(), source })?;
                redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })
            }
            None => redis::Client::open(info),
        }
        .map_err(SetupError::Client)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            // One quick retry inside the command bound; reconnection goes on in the
            // background after that.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conns = (0..cfg.pool_size)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SetupError::Client)?;
        let (events, _) = broadcast::channel(EVENTS);
        let inner = Arc::new(Inner {
            conns,
            next: AtomicUsize::new(0),
            keys: Keys::new(&cfg.key_prefix),
            scripts: Scripts {
                load: Script::new(scripts::LOAD),
                store: Script::new(scripts::STORE),
                index: Script::new(scripts::INDEX),
                revoke: Script::new(scripts::REVOKE),
                revoke_user: Script::new(scripts::REVOKE_USER),
                sessions_of: Script::new(scripts::SESSIONS_OF),
                challenge_put: Script::new(scripts::CHALLENGE_PUT),
                challenge_take: Script::new(scripts::CHALLENGE_TAKE),
                challenge_clear: Script::new(scripts::CHALLENGE_CLEAR),
                lineage_swap: Script::new(scripts::LINEAGE_SWAP),
            },
            cache: Cache::new(cfg.cache_ttl, cfg.stale_for.max(cfg.cache_ttl), cfg.cache_capacity),
            limits,
            command_timeout: cfg.command_timeout,
            on_error: cfg.on_error,
            events,
            degraded: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        });
        let subscriber = tokio::spawn(invalidate::subscribe(client, Arc::downgrade(&inner), cfg.connect_timeout)).abort_handle();
        Ok(RedisStore { inner, subscriber })
    }

    /// Invalidations from every replica (this one included): close the tunnels of a
    /// revoked session or user; on `All` (or a lagged receiver), re-judge every tunnel.
    pub fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.inner.events.subscribe()
    }

    /// Whether this replica currently hears other replicas' invalidations (until it
    /// does, its cache answers nothing without asking Redis).
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    /// Failed or timed-out calls since start.
    pub fn degraded_operations(&self) -> u64 {
        self.inner.degraded.load(Ordering::Relaxed)
    }

    pub fn on_error(&self) -> OnError {
        self.inner.on_error
    }

    pub fn health(&self) -> RedisHealth {
        let failure = self.inner.last_failure.load(Ordering::Relaxed);
        let success = self.inner.last_success.load(Ordering::Relaxed);
        RedisHealth { degraded: failure != 0 && failure >= success, degraded_operations: self.degraded_operations() }
    }

    /// One `PING`, for readiness checks; also how a recovered Redis is noticed when no
    /// request comes.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let mut conn = self.inner.conn();
        self.inner.run(async move { redis::cmd("PING").query_async::<String>(&mut conn).await }).await?;
        Ok(start.elapsed())
    }

    pub async fn load(&self, key: &SessionKey, user: Option<&str>, now: Secs) -> Result<Loaded, StoreError> {
        let inner = &self.inner;
        if inner.cache.revoked(key, now) {
            return Ok(Loaded { revoked: true, ..Loaded::default() });
        }
        let stale = match inner.cache.lookup(key, user) {
            // Deaf to invalidations, a cached copy is trusted only when Redis cannot answer.
            Hit::Fresh(loaded) if inner.listening.load(Ordering::Acquire) => return Ok(inner.unexpired(loaded, now)),
            Hit::Fresh(loaded) | Hit::Stale(loaded) => Some(loaded),
            Hit::Miss => None,
        };
        // Taken before the read: an invalidation racing it leaves the entry stale.
        let epoch = inner.cache.epoch();
        let mut conn = inner.conn();
        let k = &inner.keys;
        let mut call = inner.scripts.load.prepare_invoke();
        call.key(k.session(key)).key(&k.revoked).key(&k.revoked_users);
        call.arg(&k.prefix).arg(key.hex().as_str()).arg(now).arg(user.unwrap_or(""));
        let reply = inner.run(async move { call.invoke_async::<(Option<Vec<u8>>, Option<Vec<u8>>, i64, i64, i64)>(&mut conn).await }).await;
        let (record, baseline, revoked, lost, user_at) = match reply {
            Ok(r) => r,
            Err(e) => {
                // What this replica knows still holds; without it, the caller judges blind
                // and must not write the result back.
                return match stale {
                    Some(loaded) => Ok(inner.unexpired(loaded, now)),
                    None => {
                        inner.cache.mark_blind(*key);
                        Err(e)
                    }
                };
            }
        };
        inner.cache.see(key);
        let record = record.and_then(|v| match codec::decode_record(&v) {
            Ok(r) => Some(r),
            Err(e) => {
                // Another version's value, or damage: the session binds afresh.
                tracing::warn!(session = %key, error = %e, "unreadable session record in the shared store");
                None
            }
        });
        let baseline = baseline.and_then(|v| codec::decode_baseline(&v).ok());
        if revoked != 0 {
            inner.cache.revoke(*key, now.saturating_add(inner.limits.absolute_ttl));
            return Ok(Loaded { revoked: true, ..Loaded::default() });
        }
        let owner: Option<Arc<str>> = user.map(Arc::from).or_else(|| record.as_ref().and_then(|r| r.user.clone()));
        if let Some(r) = &record {
            inner.cache.put(
                *key,
                Entry {
                    record: r.clone(),
                    owner,
                    baseline,
                    fetched: Instant::now(),
                    epoch,
                    written_at: r.last.at,
                },
            );
        }
        let user_revoked_at = u32::try_from(user_at).ok();
        Ok(inner.unexpired(Loaded { record, baseline, revoked: false, history_lost: lost != 0, user_revoked_at }, now))
    }

    pub async fn store(&self, key: SessionKey, record: SessionRecord, learned: Option<(&Arc<str>, &UserBaseline)>) -> Result<(), StoreError> {
        // A write not shared goes on in this replica's cache (and is counted): the
        // request it judged is answered either way.
        let _ = self.write(key, record, learned, Write::Steady).await;
        Ok(())
    }

    /// Writes a record that carries a newly registered device key: unlike
    /// [`RedisStore::store`], a write that did not reach Redis is an error, and a key
    /// another registration bound first is reported, not overwritten (the store script
    /// keeps the first).
    pub async fn bind_device(&self, key: SessionKey, record: SessionRecord, now: Secs) -> Result<Bind, StoreError> {
        if self.inner.cache.revoked(&key, now) {
            return Ok(Bind::Gone);
        }
        match self.write(key, record, None, Write::Binding).await? {
            Written::Shared(0 | 1 | 4) => Ok(Bind::Written),
            Written::Shared(KEPT_DEVICE) => Ok(Bind::Kept),
            Written::Shared(_) => Ok(Bind::Gone),
            Written::Skipped => Ok(Bind::Written),
        }
    }

    /// Runs the store script. `Err` when the write did not reach Redis (the record is
    /// then kept in this replica's cache alone, and counted).
    async fn write(&self, key: SessionKey, record: SessionRecord, learned: Option<(&Arc<str>, &UserBaseline)>, write: Write) -> Result<Written, StoreError> {
        let inner = &self.inner;
        let now = record.last.at;
        if inner.cache.is_blind(&key) {
            // Judged without its history: writing would replace the real one.
            inner.count_degraded();
            return Err(StoreError::Degraded);
        }
        if inner.cache.revoked(&key, now) {
            return Ok(Written::Shared(REFUSED_REVOKED));
        }
        if learned.is_none() && write == Write::Steady {
            if let Some(e) = inner.cache.entry(&key).filter(|e| inner.cache.confirmed(e)) {
                let mut same = e.record.clone();
                same.last.at = record.last.at;
                if same == record && record.last.at.saturating_sub(e.written_at) < WRITE_EVERY {
                    inner.cache.wrote(key, record, None, false);
                    return Ok(Written::Skipped);
                }
            }
        }
        let limits = inner.limits;
        let deadline = record.last.at.saturating_add(limits.idle_ttl).min(record.created.saturating_add(limits.absolute_ttl));
        let ttl = deadline.saturating_sub(now).max(1);
        let value = codec::encode_record(&record).map_err(|e| {
            tracing::warn!(session = %key, error = %e, "session record not encodable; not shared");
            StoreError::Degraded
        });
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                inner.cache.wrote(key, record, learned, false);
                return Err(e);
            }
        };
        let baseline = learned.map(|(_, b)| codec::encode_baseline(b)).unwrap_or_default();
        let mut conn = inner.conn();
        let k = &inner.keys;
        let mut call = inner.scripts.store.prepare_invoke();
        call.key(k.session(&key)).key(&k.revoked);
        call.arg(&k.prefix)
            .arg(key.hex().as_str())
            .arg(now)
            .arg(value)
            .arg(ttl)
            .arg(record.user.as_deref().unwrap_or(""))
            .arg(deadline)
            .arg(baseline)
            .arg(BASELINE_TTL)
            .arg(limits.idle_ttl)
            .arg(limits.absolute_ttl)
            .arg(learned.map_or("", |(u, _)| &**u));
        match inner.run(async move { call.invoke_async::<i64>(&mut conn).await }).await {
            Ok(code @ (0 | 1)) => {
                inner.cache.wrote(key, record, learned, true);
                Ok(Written::Shared(code))
            }
            // Refused or merged: what Redis holds differs from what this replica wrote.
            Ok(code) => {
                inner.cache.forget(&key);
                Ok(Written::Shared(code))
            }
            // Shared later or never; this replica goes on with what it decided.
            Err(e) => {
                inner.cache.wrote(key, record, learned, false);
                Err(e)
            }
        }
    }

    /// The session's lineage: from the cache when what was presented settles the verdict
    /// (see [`Cache::lineage`]), else one `GET`. An unreadable value reads as none
    /// (the session is issued a new lineage).
    pub async fn lineage(&self, key: &SessionKey, presented: Option<Digest>) -> Result<Option<Lineage>, StoreError> {
        let inner = &self.inner;
        // A stale copy may accept a value another replica has just moved past, for at most
        // this long: never longer than the cache is trusted, nor than the grace a value
        // already has after a rotation.
        let trust = inner.cache.ttl.min(LINEAGE_TRUST);
        if inner.listening.load(Ordering::Acquire) {
            if let Some(l) = inner.cache.lineage(key, presented, trust) {
                return Ok(Some(l));
            }
        }
        let mut conn = inner.conn();
        let k = inner.keys.lineage(key);
        let value = inner.run(async move { redis::cmd("GET").arg(k).query_async::<Option<Vec<u8>>>(&mut conn).await }).await?;
        let lineage = value.and_then(|v| match codec::decode_lineage(&v) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(session = %key, error = %e, "unreadable lineage in the shared store");
                None
            }
        });
        inner.cache.put_lineage(*key, lineage);
        Ok(lineage)
    }

    /// [`super::Store::swap_lineage`]: one script, compare and set.
    ///
    /// The key lives until the session's absolute deadline: the record's idle lifetime
    /// slides with every write while the lineage changes only once a rotation, so an
    /// idle deadline set at the last change could drop the lineage of a live session
    /// (re-issued unarmed, a copy would pass). A lineage that outlives its record is
    /// harmless: the browser keeps the cookie as long.
    pub async fn swap_lineage(&self, key: &SessionKey, created: Secs, expected: Option<&Lineage>, next: Lineage, now: Secs) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let deadline = created.saturating_add(inner.limits.absolute_ttl);
        let ttl = deadline.saturating_sub(now).max(1);
        let mut conn = inner.conn();
        let mut call = inner.scripts.lineage_swap.prepare_invoke();
        call.key(inner.keys.lineage(key));
        call.arg(expected.map(codec::encode_lineage).unwrap_or_default()).arg(codec::encode_lineage(&next)).arg(ttl);
        let swapped = match inner.run(async move { call.invoke_async::<i64>(&mut conn).await }).await {
            Ok(n) => n == 1,
            Err(e) => {
                // It may have been applied all the same: the next read asks Redis.
                inner.cache.put_lineage(*key, None);
                return Err(e);
            }
        };
        // Lost the race: what this replica holds is behind; read it afresh next time.
        inner.cache.put_lineage(*key, swapped.then_some(next));
        Ok(swapped)
    }

    pub async fn index_session(&self, user: &Arc<str>, key: SessionKey) -> Result<(), StoreError> {
        let inner = &self.inner;
        let now = super::now();
        let limits = inner.limits;
        let deadline = inner.cache.entry(&key).map_or(now.saturating_add(limits.idle_ttl), |e| {
            e.record.last.at.saturating_add(limits.idle_ttl).min(e.record.created.saturating_add(limits.absolute_ttl))
        });
        let mut conn = inner.conn();
        let mut call = inner.scripts.index.prepare_invoke();
        call.key(inner.keys.index(user));
        call.arg(key.hex().as_str()).arg(deadline).arg(now.min(deadline.saturating_sub(1))).arg(USER_SESSIONS).arg(limits.absolute_ttl);
        // Best effort like `store`: a missed index entry only narrows "revoke the user",
        // which the user mark in Redis still covers.
        let _ = inner.run(async move { call.invoke_async::<i64>(&mut conn).await }).await;
        Ok(())
    }

    /// Revokes a session. The revocation holds at this replica even when Redis cannot be
    /// reached (then the error says it was not shared).
    pub async fn revoke(&self, key: SessionKey, now: Secs) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let until = now.saturating_add(inner.limits.absolute_ttl);
        let cached = inner.cache.entry(&key).is_some();
        inner.cache.revoke(key, until);
        let _ = inner.events.send(Invalidation::Revoked(key));
        let mut conn = inner.conn();
        let k = &inner.keys;
        let mut call = inner.scripts.revoke.prepare_invoke();
        call.key(&k.revoked).key(k.session(&key));
        call.arg(&k.prefix).arg(key.hex().as_str()).arg(until).arg(now).arg(inner.limits.max_sessions);
        let existed = inner.run(async move { call.invoke_async::<i64>(&mut conn).await }).await?;
        Ok(existed != 0 || cached)
    }

    pub async fn revoke_user(&self, user: &str, now: Secs) -> Result<Vec<SessionKey>, StoreError> {
        let inner = &self.inner;
        let limits = inner.limits;
        let until = now.saturating_add(limits.absolute_ttl);
        let mut local = inner.cache.forget_user(user, Some(until));
        let _ = inner.events.send(Invalidation::User(Arc::from(user)));
        let mut conn = inner.conn();
        let k = &inner.keys;
        let mut call = inner.scripts.revoke_user.prepare_invoke();
        call.key(&k.revoked).key(&k.revoked_users).key(k.index(user));
        call.arg(&k.prefix)
            .arg(user)
            .arg(until)
            .arg(now)
            .arg(limits.max_sessions)
            .arg(limits.max_users)
            .arg(now.saturating_sub(limits.absolute_ttl));
        let members = inner.run(async move { call.invoke_async::<Vec<String>>(&mut conn).await }).await?;
        for m in members.iter().filter_map(|m| SessionKey::parse_hex(m)) {
            inner.cache.revoke(m, until);
            local.push(m);
        }
        local.sort();
        local.dedup();
        Ok(local)
    }

    /// The user's indexed sessions (the embedded store also finds unindexed ones by a
    /// scan; here the index, bounded at [`USER_SESSIONS`], is the list).
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        let inner = &self.inner;
        let mut conn = inner.conn();
        let mut call = inner.scripts.sessions_of.prepare_invoke();
        call.key(inner.keys.index(user)).arg(&inner.keys.prefix);
        let pairs = inner.run(async move { call.invoke_async::<Vec<Vec<u8>>>(&mut conn).await }).await?;
        Ok(pairs
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((SessionKey::parse_hex(std::str::from_utf8(k).ok()?)?, codec::decode_record(v).ok()?)),
                _ => None,
            })
            .filter(|(_, r)| r.user.as_deref() == Some(user))
            .collect())
    }

    /// Redis expires sessions itself; this trims the local cache and refreshes the
    /// revocation and eviction counts for metrics (two round trips, once a minute).
    pub async fn sweep(&self, now: Secs) -> usize {
        let inner = &self.inner;
        inner.cache.sweep(now);
        let mut conn = inner.conn();
        let key = inner.keys.revoked.clone();
        if let Ok(n) = inner.run(async move { redis::cmd("ZCARD").arg(key).query_async::<u64>(&mut conn).await }).await {
            inner.revocations.store(n, Ordering::Relaxed);
        }
        let mut conn = inner.conn();
        if let Ok(info) = inner.run(async move { redis::cmd("INFO").arg("stats").query_async::<String>(&mut conn).await }).await {
            // Server-wide (every prefix on this Redis): what `maxmemory` evicted.
            if let Some(n) = info.lines().find_map(|l| l.strip_prefix("evicted_keys:")).and_then(|v| v.trim().parse().ok()) {
                inner.evictions.store(n, Ordering::Relaxed);
            }
        }
        0
    }

    /// Sessions cached at this replica (Redis holds the rest).
    pub fn len(&self) -> usize {
        self.inner.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `sessions` counts this replica's cache; `revocations` the shared set and
    /// `evictions` Redis's `evicted_keys` (server-wide), both as of the last sweep.
    pub fn counts(&self) -> StoreCounts {
        StoreCounts {
            sessions: self.inner.cache.len(),
            users: 0,
            revocations: (self.inner.revocations.load(Ordering::Relaxed) as usize).max(self.inner.cache.revocations()),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64).max(1)
}

impl Inner {
    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        // invariant: `connect` refuses a pool of zero, so `i` is in range.
        self.conns[i].clone()
    }

    fn count_degraded(&self) {
        self.degraded.fetch_add(1, Ordering::Relaxed);
        self.last_failure.store(now_ms(), Ordering::Relaxed);
    }

    /// Runs one call under the command bound; a failure or timeout is `Degraded`.
    async fn run<T>(&self, call: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.command_timeout, call).await {
            Ok(Ok(v)) => {
                self.last_success.store(now_ms(), Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared store call failed");
                self.count_degraded();
                Err(StoreError::Degraded)
            }
            Err(_) => {
                self.count_degraded();
                Err(StoreError::Degraded)
            }
        }
    }

    /// The embedded store's expiry rules on tether's clock (Redis expires on its own,
    /// which tests that move tether's clock would not see).
    fn unexpired(&self, mut loaded: Loaded, now: Secs) -> Loaded {
        let l = self.limits;
        if let Some(r) = loaded.record.as_ref().filter(|r| now.saturating_sub(r.last.at) > l.idle_ttl || now.saturating_sub(r.created) > l.absolute_ttl) {
            // As the store script's `b:` mark says once Redis expires it: a bound session
            // that idled out is lost, not unknown.
            loaded.history_lost |= r.device().is_some() && now.saturating_sub(r.created) <= l.absolute_ttl;
            loaded.record = None;
        }
        loaded
    }
}

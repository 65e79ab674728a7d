//! The per-request security path, shared by the live proxy and `tether replay`:
//! identity → store read → signals → evaluate → store write. Everything it needs comes
//! in as arguments, `now` included.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::audit::{self, Event, EventKind};
use crate::config::{Config, UnknownOwner};
use crate::policy::Mode;
use crate::fingerprint::{classify, Fingerprint, UserAgent};
use crate::intel::NetInfo;
use crate::policy::{self, method, path, Action, Observed, Policy, Signal, Signals, Verdict};
use crate::session::credential::{self, Ambiguity, Credential};
use crate::session::jwt::{JwksError, JwtOutcome, JwtVerifier, VerifiedClaims};
use crate::session::key::HashKeyError;
use crate::session::lineage::{self, Lineage, LineageConfig, Presented, Value};
use crate::session::record::{address_tag, name_owner, Client, Ja4Digest, Moment, OwnerChange, OwnerSource, SessionRecord, Sighting};
use crate::session::redis::OnError;
use crate::session::{Bind, HashKey, Loaded, Secs, SessionKey, Store, StoreError};
use crate::dbsc::token::Bound;
use crate::dbsc::OnRisk;
use crate::session::device::{DeviceBinding, DeviceKey};

/// Everything about one request the detector looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub now: Secs,
    pub ip: IpAddr,
    pub net: &'a NetInfo,
    pub method: &'a Method,
    pub path: &'a str,
    /// The query string, for a `_method` override.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub fingerprint: Option<&'a Fingerprint>,
    /// The peer is a configured trusted hop (its user header is believed).
    pub peer_trusted: bool,
    /// A user named by the input itself (a replayed audit line); `None` on the live path.
    pub asserted_user: Option<&'a str>,
    /// This request may be sent to the IdP for a silent identification (a browser
    /// navigation, with `step_up.identify = "silent"` and an IdP configured).
    pub identify: bool,
    /// A tunnel re-judged mid-stream (after a reload): its device proof (DBSC) was
    /// checked when it opened, and the bound cookie it opened with expires by design.
    pub recheck: bool,
}

/// The detector's answer for a request that carried a session.
#[derive(Debug, Clone)]
pub struct Decision {
    pub session: SessionKey,
    pub user: Option<Arc<str>>,
    pub verdict: Verdict,
    /// First sight of this session.
    pub bound: bool,
    /// Seen from an address it had not used recently.
    pub new_address: bool,
    /// Shown on block pages and logged with the decision, to find one from the other.
    pub reference: Option<u64>,
    /// Judged without the session's history (the shared store could not be read):
    /// network-only rules, nothing written.
    pub degraded: bool,
    /// What the request's user did to the session's owner (a change is audited), and
    /// where the owner it has now was learned.
    pub owner_change: OwnerChange,
    pub owner_source: OwnerSource,
    /// Send this request for a silent identification before anything else: its owner is
    /// unknown and the attempt is now recorded.
    pub identify: bool,
    /// What the session's device binding (DBSC) says of this request.
    pub device: DeviceCheck,
    /// What lineage made of the request (`None`: lineage off, not a cookie session, or a
    /// session that had none yet).
    pub lineage: Option<lineage::Outcome>,
    /// A companion value to set on the response (`Issued` or `Rotated`): the store holds
    /// its digest now, so the response that carries it must be the one answered.
    pub lineage_set: Option<(lineage::Outcome, lineage::Value)>,
}

/// A request's lineage verdict and the state it was judged against.
struct Assessed {
    state: Option<Lineage>,
    /// What the session's key itself holds: `state`, unless that was read under the
    /// previous hash key during a rotation (then `None`, and the lineage is copied over).
    held: Option<Lineage>,
    outcome: Option<lineage::Outcome>,
    change: lineage::Change,
}

/// A request of a session bound to a device key (DBSC), judged by its bound cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCheck {
    /// The session has no device key (or `[dbsc]` is off): nothing to prove.
    Unbound,
    /// A valid bound cookie: the key was proven when it was minted.
    Proven,
    /// No bound cookie at all: a browser that still held its key would have refreshed
    /// first, so this is the long-lived cookie without its device (`dbsc_unproven`).
    Missing,
    /// A bound cookie that is expired, forged or another session's (`dbsc_unproven`);
    /// expiring it makes a DBSC browser refresh.
    Stale,
    /// A risk signal on a bound session (`dbsc.on_risk`): a fresh key proof is demanded
    /// before anything else.
    ProofDemanded,
}

/// What registering a device key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceBound {
    Bound,
    /// The session already has a key: a second registration would let whoever holds the
    /// cookie replace the owner's device.
    AlreadyBound,
    /// The store holds no live record of the session (never seen, forgotten or revoked).
    NoSession,
}

/// What a verified step-up brings to [`Detector::complete_step_up`].
#[derive(Debug, Clone, Copy)]
pub struct Proof<'a> {
    /// The ID token's `auth_time` (seconds).
    pub auth_time: Secs,
    /// The user the ID token names (`step_up.user_claim`).
    pub user: Option<&'a Arc<str>>,
    /// The session's owner when the challenge was issued.
    pub challenged_owner: Option<&'a Arc<str>>,
    pub unknown_owner: UnknownOwner,
}

/// A silent identification that failed is tried again no sooner than this.
pub const IDENTIFY_RETRY: Secs = 3600;

/// What a completed step-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The session is unlocked in this context.
    Completed,
    /// Someone else than the session's owner authenticated (the owner is given): the
    /// session is revoked.
    WrongUser,
    /// The owner is unknown and `step_up.unknown_owner = "refuse"`: nothing unlocked.
    UnknownOwner,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(transparent)]
    HashKey(#[from] HashKeyError),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// Who a request says it is, found once per request by [`Detector::identify`]. Holds
/// keyed hashes and verified claims only, never the raw credential.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The session's key in the store.
    pub key: SessionKey,
    /// The key the same credential had under the previous hash key, during a rotation.
    previous_key: Option<SessionKey>,
    /// Shaped like a JWT but not verifiable: a signal.
    jwt_invalid: bool,
    /// A verified JWT's `auth_time`.
    auth_time: Option<Secs>,
    /// A verified JWT's `iat`: a user revocation after it revokes the token.
    issued_at: Option<Secs>,
    /// From the verified JWT, else a trusted hop's header, else the input itself.
    pub user: Option<Arc<str>>,
    /// Where `user` came from.
    pub user_source: OwnerSource,
    /// Something credential-shaped tether cannot read: judged as a first sight by the
    /// network rules, never stored, audited as `unrecognised_credential`.
    pub unrecognised: bool,
    /// The companion values a cookie session carries, when lineage is on; a bearer
    /// credential carries none by nature ([`Presented::Bearer`]).
    lineage: Option<Presented>,
    /// Signals the input itself asserts and the judgement cannot recompute: a replayed
    /// audit line's lineage verdict (the companion value is never logged).
    carried: Signals,
}

impl Identity {
    /// A session named by its key (an audit line's `session`), with the user the line
    /// names: what `tether replay` judges, so its ids are the audit log's.
    pub fn named(key: SessionKey, user: Option<Arc<str>>) -> Identity {
        let user_source = if user.is_some() { OwnerSource::UserHeader } else { OwnerSource::Unknown };
        Identity { key, previous_key: None, jwt_invalid: false, auth_time: None, issued_at: None, user, user_source, unrecognised: false, lineage: None, carried: Signals::default() }
    }

    /// The same identity without its companion values: a tunnel re-judged mid-stream
    /// holds only the value it opened with, which the lineage has long moved past.
    pub fn without_lineage(mut self) -> Identity {
        self.lineage = None;
        self
    }

    /// The same identity, judged with `signals` the input recorded (see `carried`).
    pub fn carrying(mut self, signals: Signals) -> Identity {
        self.carried = signals;
        self
    }
}

/// The compiled `[session]` and `[policy]`.
pub struct Detector {
    pub hash_key: HashKey,
    pub policy: Policy,
    jwt: Option<JwtVerifier>,
    cookies: Vec<String>,
    bearer: bool,
    user_header: Option<http::HeaderName>,
    dbsc: crate::dbsc::DbscConfig,
    lineage: Option<LineageConfig>,
}

impl Detector {
    /// `generated` is the process's own key, used when the config names no key file, so
    /// a reload never re-keys every session.
    pub fn build(config: &Config, generated: &HashKey) -> Result<Detector, DetectorError> {
        let s = &config.session;
        let hash_key = match &s.hash_key_file {
            Some(path) => HashKey::from_file(path)?,
            None => generated.clone(),
        };
        let jwt = s.jwt.as_ref().map(JwtVerifier::load).transpose()?;
        Ok(Detector {
            hash_key,
            policy: config.policy.clone(),
            jwt,
            cookies: s.cookies.clone(),
            bearer: s.bearer,
            user_header: s.user_header.clone(),
            dbsc: config.dbsc.clone(),
            lineage: config.lineage.clone(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.policy.mode
    }

    /// The configured session cookies (a replayed trace names its session through one).
    pub fn cookies(&self) -> &[String] {
        &self.cookies
    }

    /// Judges one request. `None` when it carries no session (nothing to bind or judge).
    /// The two steps in one call, for callers that do not need the identity on its own.
    pub async fn decide(&self, store: &Store, req: &Request<'_>) -> Result<Option<Decision>, StoreError> {
        let Ok(Some(identity)) = self.identify(req) else {
            return Ok(None);
        };
        self.judge(store, req, &identity).await.map(Some)
    }

    /// The session a request carries and who holds it; `None` without a session. The
    /// one place a request is identified: the proxy reads the result for the step-up
    /// callback and for judging, so a JWT is verified once per request.
    ///
    /// A credential with more than one reading is refused ([`Ambiguity`]); one tether
    /// cannot read at all is judged as a first sight ([`Identity::unrecognised`]).
    pub fn identify(&self, req: &Request<'_>) -> Result<Option<Identity>, Ambiguity> {
        let found = credential::read(req.headers, &self.cookies, self.bearer)?;
        let Some(credential) = found.credential else {
            if !found.unrecognised {
                return Ok(None);
            }
            // Nothing to key history on: a first sight every time, network rules only.
            return Ok(Some(Identity {
                key: SessionKey([0; crate::session::key::SESSION_KEY_LEN]),
                previous_key: None,
                jwt_invalid: false,
                auth_time: None,
                issued_at: None,
                user: None,
                user_source: OwnerSource::Unknown,
                unrecognised: true,
                lineage: None,
                carried: Signals::default(),
            }));
        };
        let (key, claims) = self.session_key(&credential, req.now);
        let jwt_invalid = claims.is_none() && self.jwt.is_some() && crate::session::jwt::looks_like_jwt(credential.secret());
        let mut user = claims.as_ref().and_then(|c| c.user.clone());
        let mut user_source = if user.is_some() { OwnerSource::Jwt } else { OwnerSource::Unknown };
        if user.is_none() && req.peer_trusted {
            user = self.header_user(req.headers);
            user_source = OwnerSource::UserHeader;
        }
        if user.is_none() {
            // A replayed line's user was the owner the live proxy knew.
            user = req.asserted_user.map(Arc::from);
            user_source = OwnerSource::UserHeader;
        }
        if user.is_none() {
            user_source = OwnerSource::Unknown;
        }
        // Computed here because the raw credential is not kept; only during a hash-key
        // rotation, so the usual request pays nothing for it.
        let previous_key = self.hash_key.previous_session_key(credential.domain(), credential.secret());
        let secs = |t: u64| t.min(u64::from(u32::MAX)) as Secs;
        let auth_time = claims.as_ref().and_then(|c| c.auth_time).map(secs);
        let issued_at = claims.as_ref().and_then(|c| c.issued_at.or(c.auth_time)).map(secs);
        // A verified JWT keys the same session whatever header carries it, so a bearer
        // credential is judged too: it can bring no companion.
        let lineage = match (&self.lineage, &credential) {
            (Some(cfg), Credential::Cookie { .. }) => Some(lineage::read(req.headers, &cfg.cookie)),
            (Some(_), Credential::Bearer(_)) => Some(Presented::Bearer),
            (None, _) => None,
        };
        Ok(Some(Identity { key, previous_key, jwt_invalid, auth_time, issued_at, user, user_source, unrecognised: false, lineage, carried: Signals::default() }))
    }

    /// Judges an identified request: store read, signals, evaluation, store write.
    pub async fn judge(&self, store: &Store, req: &Request<'_>, identity: &Identity) -> Result<Decision, StoreError> {
        let Identity { key, previous_key, jwt_invalid, auth_time: jwt_auth, issued_at, ref user, user_source, unrecognised, lineage: presented, carried } = *identity;
        let user = user.clone();
        // With `on_error = "network_only"`, a history the shared store cannot give is
        // judged as a first sight by the network rules and not written back; with
        // `refuse`, the error goes to the caller.
        let blind_ok = store.as_redis().is_some_and(|r| r.on_error() == OnError::NetworkOnly);
        let mut degraded = false;
        let mut loaded = if unrecognised {
            Loaded::default()
        } else {
            match store.load(&key, user.as_deref(), req.now).await {
                Ok(l) => l,
                Err(StoreError::Degraded) if blind_ok => {
                    degraded = true;
                    Loaded::default()
                }
                Err(e) => return Err(e),
            }
        };
        if loaded.record.is_none() && !degraded {
            // During a hash-key rotation the session may still sit under its old key.
            if let Some(old) = previous_key {
                match store.load(&old, user.as_deref(), req.now).await {
                    Ok(previous) => {
                        loaded.record = previous.record;
                        loaded.revoked |= previous.revoked;
                    }
                    Err(StoreError::Degraded) if blind_ok => degraded = true,
                    Err(e) => return Err(e),
                }
            }
        }
        let prior = loaded.record.as_ref();
        let user = user.or_else(|| prior.and_then(|r| r.user.clone()));

        let client = client_of(req);
        let obs = Observed { now: req.now, ip: req.ip, net: req.net, client, jwt_invalid };
        let mut signals = policy::derive(&obs, prior, loaded.baseline.as_ref(), &self.policy);
        // A token issued no later than its user's revocation is revoked with the user,
        // whether or not tether ever saw it.
        let user_revoked = matches!((issued_at, loaded.user_revoked_at), (Some(iat), Some(at)) if iat <= at);
        if loaded.revoked || user_revoked {
            signals.insert(Signal::Revoked);
        }
        if loaded.history_lost {
            signals.insert(Signal::HistoryLost);
        }
        // Once bound to a device key, the session answers only with a bound cookie,
        // whatever client presents it (the downgrade window stays closed).
        let binding = prior.and_then(|r| r.device()).filter(|_| self.dbsc.enabled && !req.recheck);
        let bound_cookie = binding.map(|_| {
            let values = crate::dbsc::header::cookie_values(req.headers, &self.dbsc.bound_cookie);
            crate::dbsc::token::read_bound(&self.hash_key, &key, values, req.now)
        });
        if matches!(bound_cookie, Some(Bound::Absent | Bound::Invalid)) {
            signals.insert(Signal::DbscUnproven);
        }
        let lineage = match (&self.lineage, presented) {
            (Some(cfg), Some(presented)) if !degraded && !loaded.revoked => self.assess_lineage(store, key, previous_key, presented, cfg, req.now).await,
            _ => None,
        };
        if let Some(s) = policy::signals::lineage(lineage.as_ref().and_then(|l| l.outcome)) {
            signals.insert(s);
        }
        for s in carried.iter() {
            signals.insert(s);
        }
        let authenticated_at = prior.and_then(|r| r.authenticated_at.get()).max(jwt_auth);
        // Judged as every method it may act as and every spelling of its path: the
        // strictest matching route wins.
        let route = if self.policy.routes.is_empty() {
            None
        } else {
            let methods = method::judged(req.method, req.headers, req.query).unwrap_or_default();
            let normal = path::normalise(req.path).unwrap_or(std::borrow::Cow::Borrowed(req.path));
            self.policy.strictest_route(std::iter::once(req.method).chain(methods.iter()), &[req.path, &normal])
        };
        let verdict = policy::evaluate(signals, &self.policy, route, authenticated_at, req.now);

        let tag = obs.address_tag();
        let new_address = prior.is_some_and(|r| !r.knows_address(tag));
        let mut record = next_record(prior, &obs, client, authenticated_at, &verdict);
        let device = self.device_check(bound_cookie, binding, &verdict, &mut record, req.now);
        let owner_change = match &user {
            Some(u) => name_owner(&mut record, u, user_source),
            None => OwnerChange::Unchanged,
        };
        let user = record.user.clone();
        let owner_source = record.owner_source;
        // Silent identification: only for a session whose owner nobody has named, at its
        // first sight or from a context the policy allows (a suspicious sighting of a
        // known session must prove itself by a step-up, not by whoever holds the browser),
        // and at most once per IDENTIFY_RETRY.
        let identify = req.identify
            && !unrecognised
            && !degraded
            && user.is_none()
            && (prior.is_none() || verdict.action == Action::Allow)
            && verdict.action < Action::Block
            && (record.identify_at == 0 || req.now.saturating_sub(record.identify_at) >= IDENTIFY_RETRY);
        if identify {
            record.identify_at = req.now;
        }

        let mut lineage_set = None;
        if unrecognised {
            // Nothing is written for a credential that cannot be read.
        } else if verdict.enforced() && verdict.action == Action::Revoke {
            match store.revoke(key, req.now).await {
                // Not shared, but it holds at this replica (the store keeps it and counts
                // the failure); the request is refused either way.
                Ok(_) | Err(StoreError::Degraded) => {}
                Err(e) => return Err(e),
            }
        } else if degraded {
            // Judged blind: writing would replace the real history when Redis is back.
        } else if !loaded.revoked && !user_revoked {
            // Only contexts the policy allowed teach the user's baseline: a thief's
            // network must never become "usual".
            let mut baseline = loaded.baseline.unwrap_or_default();
            let newly_owned = matches!(owner_change, OwnerChange::Learned | OwnerChange::Overrode(_));
            // A newly known owner's baseline learns where the session was proven.
            let taught = newly_owned && baseline.learn_proven(&record.proven(), req.now);
            let allowed = verdict.action == Action::Allow && baseline.learn(&record.last, client);
            let learned = match &user {
                Some(u) if taught || allowed => Some((u, &baseline)),
                _ => None,
            };
            // A request that changes nothing (the same place within the same second, no
            // lesson for the baseline) writes nothing: with one session busy on every
            // core, rewriting its entry was the request path's only contended lock.
            let created = record.created;
            if learned.is_some() || prior != Some(&record) {
                store.store(key, record, learned).await?;
            }
            // Never moved by a request that is not allowed: a challenged thief must not be
            // handed the next value, nor strand the owner's.
            if let Some(l) = lineage.as_ref().filter(|l| verdict.action == Action::Allow && l.outcome.is_none_or(lineage::Outcome::ok)) {
                lineage_set = self.advance_lineage(store, key, created, l, req.now).await;
            }
            if prior.is_none() || newly_owned {
                if let Some(u) = &user {
                    store.index_session(u, key).await?;
                }
            }
        }
        let lineage = lineage.and_then(|l| l.outcome);
        Ok(Decision { session: key, user, verdict, bound: prior.is_none() && !degraded, new_address, reference: None, degraded, owner_change, owner_source, identify, device, lineage, lineage_set })
    }

    /// What the device binding makes of a judged request, and the demand it records: on
    /// a step-up verdict (enforced, `dbsc.on_risk` not `off`) a bound cookie minted
    /// before the demand no longer answers, so the browser must prove its key afresh
    /// (with `challenge` that proof re-binds the session; with `step_up` the OIDC step-up
    /// follows it). An allowed request settles the demand.
    fn device_check(&self, cookie: Option<Bound>, binding: Option<&DeviceBinding>, verdict: &Verdict, record: &mut SessionRecord, now: Secs) -> DeviceCheck {
        let (Some(cookie), Some(binding)) = (cookie, binding) else { return DeviceCheck::Unbound };
        let issued = match cookie {
            Bound::Absent => return DeviceCheck::Missing,
            Bound::Invalid => return DeviceCheck::Stale,
            Bound::Valid { issued } => issued,
        };
        let risky = verdict.enforced() && verdict.action == Action::StepUp && self.dbsc.on_risk != OnRisk::Off;
        let demanded = binding.demanded;
        // The record is the loaded one's clone and shares its binding: it is copied only
        // when the demand changes, not on every request of a bound session.
        let bound = record.device().is_some();
        if bound && risky && (demanded == 0 || issued < demanded) {
            if demanded == 0 {
                if let Some(d) = record.device_mut() {
                    d.demanded = now;
                }
            }
            DeviceCheck::ProofDemanded
        } else {
            if bound && verdict.action == Action::Allow && demanded != 0 {
                if let Some(d) = record.device_mut() {
                    d.demanded = 0;
                }
            }
            DeviceCheck::Proven
        }
    }

    /// Registers a device key for a session tether has seen. A session keeps the first
    /// key it registers; one that is unknown, forgotten or revoked registers nothing.
    pub async fn bind_device(&self, store: &Store, key: SessionKey, device: DeviceKey, now: Secs) -> Result<DeviceBound, StoreError> {
        let loaded = store.load(&key, None, now).await?;
        let Some(record) = loaded.record.filter(|_| !loaded.revoked) else { return Ok(DeviceBound::NoSession) };
        if record.device().is_some() {
            return Ok(DeviceBound::AlreadyBound);
        }
        let binding = DeviceBinding { key: device, registered: now, demanded: 0 };
        Ok(match store.bind_device(key, record, binding, now).await? {
            Bind::Written => DeviceBound::Bound,
            Bind::Kept => DeviceBound::AlreadyBound,
            Bind::Gone => DeviceBound::NoSession,
        })
    }

    /// The device binding of a live session, for a refresh to verify against.
    pub async fn device_of(&self, store: &Store, key: SessionKey, now: Secs) -> Result<Option<DeviceBinding>, StoreError> {
        let loaded = store.load(&key, None, now).await?;
        Ok(loaded.record.filter(|_| !loaded.revoked).and_then(|r| r.device().cloned()))
    }

    /// A fresh key proof answered a demand under `dbsc.on_risk = "challenge"`: the
    /// device holding the session's key is where the proof came from, so the session is
    /// re-bound there (it joins the proven contexts), as a completed step-up would. No
    /// authentication time is recorded: a key proof says which device, not which user.
    /// Returns whether a demand was outstanding.
    pub async fn prove_device(&self, store: &Store, key: SessionKey, req: &Request<'_>) -> Result<bool, StoreError> {
        let loaded = store.load(&key, None, req.now).await?;
        let Some(mut record) = loaded.record.filter(|_| !loaded.revoked) else { return Ok(false) };
        if record.device().is_none_or(|d| d.demanded == 0) {
            return Ok(false);
        }
        let client = client_of(req);
        let place = Observed { now: req.now, ip: req.ip, net: req.net, client, jwt_invalid: false }.place();
        record.bound = place;
        record.client = client;
        record.last = place;
        record.previous = None;
        record.step_up_pending = false;
        record.bound_suspect = false;
        record.remember_address(address_tag(req.ip));
        record.prove(&place, client.tls);
        store.store(key, record, None).await?;
        Ok(true)
    }

    /// The request's lineage verdict, against what the store holds now. A store that
    /// cannot answer leaves the request judged without lineage: a failure to read is
    /// never a fork.
    ///
    /// During a hash-key rotation the lineage may still sit under the session's old key
    /// (the record is read from there too): judged on that one, not issued afresh, which
    /// would disarm it and let a copy pass.
    async fn assess_lineage(&self, store: &Store, key: SessionKey, previous_key: Option<SessionKey>, presented: Presented, cfg: &LineageConfig, now: Secs) -> Option<Assessed> {
        let held = store.lineage(&key, presented.one()).await.ok()?;
        let state = match (held, previous_key) {
            (None, Some(old)) => store.lineage(&old, presented.one()).await.ok()?,
            (held, _) => held,
        };
        let (outcome, change) = lineage::assess(state.as_ref(), presented, now, cfg);
        Some(Assessed { state, held, outcome, change })
    }

    /// Applies an allowed request's lineage change, atomically against the state it was
    /// judged on; the value to set when one was issued. Losing the race to another
    /// request (which then carries the new value) or to the store issues nothing.
    ///
    /// A lineage read under the previous hash key is copied under the session's key, so
    /// it outlives the rotation.
    async fn advance_lineage(&self, store: &Store, key: SessionKey, created: Secs, l: &Assessed, now: Secs) -> Option<(lineage::Outcome, Value)> {
        let migrating = l.held.is_none() && l.state.is_some();
        let fresh = match l.change {
            lineage::Change::None if !migrating => return None,
            lineage::Change::None | lineage::Change::Seen => None,
            lineage::Change::Issue { .. } => match Value::generate() {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(error = %e, "no lineage value issued");
                    return None;
                }
            },
        };
        let digest = fresh.as_ref().map_or([0; lineage::DIGEST_LEN], Value::digest);
        let next = match Lineage::after(l.state.as_ref(), l.change, digest, now) {
            Some(next) => next,
            None => l.state.filter(|_| migrating)?,
        };
        let swapped = match store.swap_lineage(&key, created, l.held.as_ref(), next, now).await {
            Ok(swapped) => swapped,
            // No answer (a timeout, a dropped connection) is not a refusal: the store may
            // have applied it. If it did and this answer sets nothing, the browser keeps a
            // value the lineage moved past. What it holds now says.
            Err(_) => matches!(store.lineage(&key, None).await, Ok(Some(now_held)) if now_held == next),
        };
        if !swapped {
            return None;
        }
        let outcome = if l.state.is_some_and(|s| s.armed) { lineage::Outcome::Rotated } else { lineage::Outcome::Issued };
        fresh.map(|v| (outcome, v))
    }

    /// After a completed step-up: a new lineage, every earlier value void (whoever holds
    /// one). The value to set on the callback's answer, when lineage is on.
    pub async fn restart_lineage(&self, store: &Store, key: SessionKey, now: Secs) -> Option<Value> {
        self.lineage.as_ref()?;
        let state = store.lineage(&key, None).await.ok()?;
        let fresh = Value::generate().ok()?;
        let next = Lineage::restart(state.as_ref(), fresh.digest(), now);
        // The record is fresh from the step-up: its lifetime starts about now.
        store.swap_lineage(&key, now, state.as_ref(), next, now).await.ok()?.then_some(fresh)
    }

    /// `[lineage]`, when on.
    pub fn lineage(&self) -> Option<&LineageConfig> {
        self.lineage.as_ref()
    }

    /// The session key, and the verified claims when the credential is a JWT. A verified
    /// JWT with an IdP session id keys the session by that id, so token refreshes do not
    /// look like new sessions.
    fn session_key(&self, credential: &Credential<'_>, now: Secs) -> (SessionKey, Option<Arc<VerifiedClaims>>) {
        let key = self.hash_key.session_key(credential.domain(), credential.secret());
        let Some(verifier) = &self.jwt else { return (key, None) };
        match verifier.check(credential.secret(), key, u64::from(now)) {
            JwtOutcome::Verified(claims) => {
                // Keyed by what the token says it is, never by its bytes or its header.
                let key = match &claims.sid {
                    Some(sid) => self.hash_key.session_key(b"\0sid", sid.as_bytes()),
                    None => self.hash_key.session_key(b"\0jwt", claims.canonical.as_bytes()),
                };
                (key, Some(claims))
            }
            JwtOutcome::NotJwt | JwtOutcome::Invalid => (key, None),
        }
    }

    /// A step-up whose ID token verified: unlocked only for the session's owner. The
    /// owner is the session's (or, when its record is gone, the one it had when
    /// challenged); an owner-less session is unlocked only under
    /// `step_up.unknown_owner = "adopt"`, and its owner is then whoever authenticated.
    ///
    /// Completed, the session is re-bound to the context it was proved in, which joins
    /// its proven contexts; its pending demand and failure count are cleared, its
    /// authentication time set, and the context taught to the owner's baseline. Another
    /// user authenticating revokes the session.
    pub async fn complete_step_up(&self, store: &Store, key: SessionKey, req: &Request<'_>, proof: &Proof<'_>) -> Result<Completion, StoreError> {
        let loaded = store.load(&key, proof.user.map(|u| &**u), req.now).await?;
        let client = client_of(req);
        let place = Observed { now: req.now, ip: req.ip, net: req.net, client, jwt_invalid: false }.place();
        let mut record = match loaded.record {
            Some(r) => r,
            None => SessionRecord { user: proof.challenged_owner.cloned(), ..SessionRecord::new(place, client) },
        };
        let owner = record.user.clone();
        let newly_owned = match (&owner, proof.user) {
            (Some(o), Some(u)) if o == u => false,
            (Some(_), _) => {
                store.revoke(key, req.now).await?;
                return Ok(Completion::WrongUser);
            }
            (None, Some(u)) if proof.unknown_owner == UnknownOwner::Adopt => {
                name_owner(&mut record, u, OwnerSource::StepUp);
                true
            }
            (None, _) => return Ok(Completion::UnknownOwner),
        };
        let user = record.user.clone();
        record.bound = place;
        record.client = client;
        record.last = place;
        record.previous = None;
        record.authenticated_at = Moment::at(proof.auth_time.max(record.authenticated_at.get().unwrap_or(0)));
        record.step_up_pending = false;
        record.bound_suspect = false;
        record.step_up_failures = 0;
        record.remember_address(address_tag(req.ip));
        record.prove(&place, client.tls);
        let mut baseline = loaded.baseline.unwrap_or_default();
        let taught = baseline.learn_proven(&record.proven(), req.now);
        let learned = match &user {
            Some(u) if baseline.learn(&place, client) || taught => Some((u, &baseline)),
            _ => None,
        };
        store.store(key, record, learned).await?;
        if let (Some(u), true) = (&user, newly_owned || loaded.baseline.is_none()) {
            store.index_session(u, key).await?;
        }
        Ok(Completion::Completed)
    }

    /// Names the owner of a session from a source learned after its judgement (the
    /// console's response header, a silent identification): the rule of
    /// [`name_owner`]; a newly known owner's baseline learns the session's proven
    /// contexts. A session the store no longer holds, or has revoked, learns nothing.
    pub async fn learn_owner(&self, store: &Store, key: SessionKey, user: &Arc<str>, source: OwnerSource, now: Secs) -> Result<OwnerChange, StoreError> {
        let loaded = store.load(&key, Some(user), now).await?;
        let Some(mut record) = loaded.record.filter(|_| !loaded.revoked) else { return Ok(OwnerChange::Unchanged) };
        let source_before = record.owner_source;
        let change = name_owner(&mut record, user, source);
        if let OwnerChange::Learned | OwnerChange::Overrode(_) = change {
            let mut baseline = loaded.baseline.unwrap_or_default();
            let taught = baseline.learn_proven(&record.proven(), now);
            store.store(key, record, taught.then_some((user, &baseline))).await?;
            store.index_session(user, key).await?;
        } else if record.owner_source != source_before {
            // The same owner, now vouched for by a stronger source.
            store.store(key, record, None).await?;
        }
        Ok(change)
    }

    /// A failed step-up; returns true when this failure revoked the session.
    pub async fn fail_step_up(&self, store: &Store, key: SessionKey, now: Secs, max_failures: u8) -> Result<bool, StoreError> {
        let loaded = store.load(&key, None, now).await?;
        let Some(mut record) = loaded.record else { return Ok(false) };
        record.step_up_failures = record.step_up_failures.saturating_add(1);
        if record.step_up_failures >= max_failures {
            store.revoke(key, now).await?;
            return Ok(true);
        }
        store.store(key, record, None).await?;
        Ok(false)
    }

    fn header_user(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let v = headers.get(self.user_header.as_ref()?)?.to_str().ok()?.trim();
        (!v.is_empty() && v.len() <= 256).then(|| Arc::from(v))
    }
}

fn client_of(req: &Request<'_>) -> Client {
    let ua = req.headers.get(http::header::USER_AGENT).map_or(UserAgent::UNKNOWN, |v| UserAgent::parse_memo(v.as_bytes()));
    Client {
        ua,
        ja4: req.fingerprint.map(|f| Ja4Digest::of(&f.ja4_stable)),
        tls: classify(req.fingerprint.map(|f| &f.ja4)),
    }
}

/// The session's memory after this request.
fn next_record(prior: Option<&SessionRecord>, obs: &Observed<'_>, client: Client, authenticated_at: Option<Secs>, verdict: &Verdict) -> SessionRecord {
    let place = obs.place();
    let demanded = verdict.enforced() && verdict.action >= Action::StepUp;
    let tag = obs.address_tag();
    match prior {
        None => {
            let mut record = SessionRecord {
                authenticated_at: authenticated_at.into(),
                step_up_pending: demanded,
                bound_suspect: demanded,
                ..SessionRecord::new(place, client)
            };
            record.recent_addresses[0] = tag;
            // Born in a context the policy (would have) allowed: that context is proven.
            if verdict.action < Action::StepUp {
                record.prove(&place, client.tls);
            }
            record
        }
        Some(p) => {
            let mut r = p.clone();
            // A sighting that was (or, in monitor mode, would have been) refused did not
            // use the session: it does not move "last seen", so the owner carrying on is
            // not mistaken for alternation, and monitor mode's numbers are enforce's.
            if verdict.action < Action::StepUp {
                if !place.same_network(&p.last) {
                    r.previous = Some(Sighting::of(&p.last));
                }
                r.last = place;
            }
            r.authenticated_at = authenticated_at.into();
            r.step_up_pending = p.step_up_pending || demanded;
            // An allowed request re-baselines the client (a browser upgrade), so the
            // change is counted once, not on every request after it.
            if verdict.action == Action::Allow {
                r.client = client;
            }
            r.remember_address(tag);
            r
        }
    }
}

/// The audit events one decision produces: the binding, the decision (every non-allow,
/// and allows when asked), and a new address even when allowed.
pub fn audit_events(d: &Decision, req: &Request<'_>, audit_allowed: bool) -> impl Iterator<Item = Event> {
    // One timestamp for every line a request produces, so readers can tell them apart
    // from separate requests.
    let ts = std::time::SystemTime::now();
    let base = move |kind| {
        let mut e = Event::new(kind, d.verdict.mode);
        e.ts = ts;
        e.session = Some(d.session);
        e.user = d.user.clone();
        e.ip = Some(req.ip);
        e.net = Some(req.net.clone());
        e.ja4 = req.fingerprint.map(|f| f.ja4);
        e.ua = req.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(audit::bounded);
        e.method = Some(req.method.to_string());
        e.path = Some(audit::bounded(req.path));
        e.action = Some(d.verdict.action);
        e.score = Some(d.verdict.score);
        e.reasons = d.verdict.signals;
        e
    };
    let bound = d.bound.then(|| base(EventKind::SessionBound));
    let decision = (d.verdict.action != Action::Allow || audit_allowed).then(|| {
        let mut e = base(EventKind::Decision);
        e.reference = d.reference;
        e
    });
    let new_address = (d.new_address && !d.bound).then(|| base(EventKind::NewAddress));
    let owner = match &d.owner_change {
        OwnerChange::Unchanged => None,
        // At first sight the binding itself names the user.
        OwnerChange::Learned if d.bound => None,
        OwnerChange::Learned => Some(EventKind::OwnerLearned),
        OwnerChange::Overrode(_) | OwnerChange::Refused(_) => Some(EventKind::OwnerConflict),
    }
    .map(|kind| {
        let mut e = base(kind);
        match &d.owner_change {
            OwnerChange::Overrode(previous) => {
                e.claimed_user = Some(previous.clone());
                e.detail = Some("overrode_weaker_owner");
            }
            OwnerChange::Refused(named) => {
                e.claimed_user = Some(named.clone());
                e.detail = Some("refused");
            }
            _ => e.detail = Some(d.owner_source.as_str()),
        }
        e
    });
    bound.into_iter().chain(decision).chain(new_address).chain(owner)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    use super::*;
    use crate::session::StoreLimits;

    const NOW: Secs = 1_800_000_000;

    /// A detector verifying ES256 session JWTs, and a key to sign them with.
    fn jwt_detector(dir: &std::path::Path) -> (Detector, EncodingKey) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        std::fs::write(dir.join("jwks.json"), serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[session]\ncookies = [\"session\"]\n[session.jwt]\nissuer = \"https://sso.example\"\naudience = \"console\"\nalgorithms = [\"ES256\"]\njwks_file = \"{}\"\n",
            dir.join("jwks.json").display()
        );
        std::fs::write(dir.join("tether.toml"), text).unwrap();
        let config = Config::load(&dir.join("tether.toml")).unwrap();
        (Detector::build(&config, &HashKey::new([7; 32], None)).unwrap(), enc)
    }

    fn token(enc: &EncodingKey, jti: &str, iat: Secs) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        let claims = serde_json::json!({"iss": "https://sso.example", "aud": "console", "sub": "alice", "jti": jti, "iat": iat, "exp": NOW + 3600});
        encode(&h, &claims, enc).unwrap()
    }

    fn headers(name: &str, value: String) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        h
    }

    async fn decide(det: &Detector, store: &Store, h: &HeaderMap, now: Secs) -> Decision {
        let net = NetInfo::unknown();
        let req = Request {
            now,
            ip: "192.0.2.10".parse().unwrap(),
            net: &net,
            method: &Method::GET,
            path: "/",
            query: None,
            headers: h,
            fingerprint: None,
            peer_trusted: false,
            asserted_user: None,
            identify: false,
            recheck: false,
        };
        det.decide(store, &req).await.unwrap().expect("a session")
    }

    #[tokio::test]
    async fn a_jwt_is_one_session_in_any_header_and_dies_with_its_user() {
        let dir = tempfile::tempdir().unwrap();
        let (det, enc) = jwt_detector(dir.path());
        let store = Store::memory(StoreLimits::default());
        let t = token(&enc, "a1", NOW - 60);
        let as_cookie = decide(&det, &store, &headers("cookie", format!("session={t}")), NOW).await;
        let as_bearer = decide(&det, &store, &headers("authorization", format!("Bearer {t}")), NOW).await;
        assert_eq!(as_cookie.session, as_bearer.session);
        assert!(!as_bearer.bound, "the same token in another header is no new session");

        store.revoke_user("alice", NOW + 10).await.unwrap();
        // A token of alice's issued before the revocation, never seen by tether: revoked.
        let unseen = token(&enc, "a2", NOW - 30);
        let d = decide(&det, &store, &headers("authorization", format!("Bearer {unseen}")), NOW + 20).await;
        assert!(d.verdict.signals.contains(Signal::Revoked), "{:?}", d.verdict);
        // One issued after it (alice signed in again): not revoked.
        let fresh = token(&enc, "a3", NOW + 15);
        let d = decide(&det, &store, &headers("authorization", format!("Bearer {fresh}")), NOW + 20).await;
        assert!(!d.verdict.signals.contains(Signal::Revoked), "{:?}", d.verdict);
    }

    /// The companion a decision set, as the `Cookie` pair a browser sends back.
    fn companion(d: &Decision) -> String {
        let (_, v) = d.lineage_set.as_ref().expect("a companion value set");
        format!("{}={}", lineage::DEFAULT_COOKIE, v.as_str())
    }

    #[tokio::test]
    async fn a_jwt_as_a_bearer_token_of_an_armed_session_has_no_companion() {
        let dir = tempfile::tempdir().unwrap();
        let (_, enc) = jwt_detector(dir.path());
        let mut config = Config::load(&dir.path().join("tether.toml")).unwrap();
        config.lineage = Some(LineageConfig::default());
        let det = Detector::build(&config, &HashKey::new([7; 32], None)).unwrap();
        let store = Store::memory(StoreLimits::default());
        let t = token(&enc, "b1", NOW - 60);
        let bearer = headers("authorization", format!("Bearer {t}"));
        // Before the session's browser ever returned a value: nothing to compare, and
        // nothing issued to a client with no jar.
        let d = decide(&det, &store, &bearer, NOW).await;
        assert_eq!((d.lineage, d.lineage_set.is_some()), (None, false));
        let issued = decide(&det, &store, &headers("cookie", format!("session={t}")), NOW + 1).await;
        let d = decide(&det, &store, &bearer, NOW + 2).await;
        assert_eq!((d.lineage, d.verdict.action), (Some(lineage::Outcome::Unconfirmed), Action::Allow), "not armed yet");
        let back = decide(&det, &store, &headers("cookie", format!("session={t}; {}", companion(&issued))), NOW + 3).await;
        assert_eq!(back.lineage, Some(lineage::Outcome::Current));
        // Armed: the same token in another header is a copy made without the companion.
        let d = decide(&det, &store, &bearer, NOW + 4).await;
        assert_eq!(d.session, back.session);
        assert_eq!(d.lineage, Some(lineage::Outcome::Missing));
        assert!(d.verdict.signals.contains(Signal::LineageMissing) && d.verdict.action >= Action::StepUp, "{:?}", d.verdict);
    }

    #[tokio::test]
    async fn a_hash_key_rotation_keeps_the_lineage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tether.toml"), "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[session]\ncookies = [\"session\"]\n[lineage]\nenabled = true\n").unwrap();
        let config = Config::load(&dir.path().join("tether.toml")).unwrap();
        let old = Detector::build(&config, &HashKey::new([7; 32], None)).unwrap();
        let store = Store::memory(StoreLimits::default());
        let issued = decide(&old, &store, &headers("cookie", "session=s".into()), NOW).await;
        let cookie = format!("session=s; {}", companion(&issued));
        assert_eq!(decide(&old, &store, &headers("cookie", cookie.clone()), NOW + 1).await.lineage, Some(lineage::Outcome::Current));
        // The key rotates: the session and its lineage still sit under the old key.
        let new = Detector::build(&config, &HashKey::new([8; 32], Some([7; 32]))).unwrap();
        let d = decide(&new, &store, &headers("cookie", cookie.clone()), NOW + 2).await;
        assert_ne!(d.session, issued.session);
        assert_eq!((d.lineage, d.lineage_set.is_some()), (Some(lineage::Outcome::Current), false), "judged on the old key's lineage, not issued afresh");
        assert_eq!(decide(&new, &store, &headers("cookie", "session=s".into()), NOW + 3).await.lineage, Some(lineage::Outcome::Missing));
        assert_eq!(decide(&new, &store, &headers("cookie", cookie), NOW + 4).await.lineage, Some(lineage::Outcome::Current));
    }

    #[tokio::test]
    async fn a_bound_session_answers_only_with_its_bound_cookie_and_a_risk_demands_a_fresh_one() {
        use crate::dbsc::token::bound_cookie;
        use crate::session::device::DeviceAlg;
        let dir = tempfile::tempdir().unwrap();
        let text = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[session]\ncookies = [\"session\"]\n[dbsc]\nenabled = true\non_risk = \"step_up\"\n";
        std::fs::write(dir.path().join("tether.toml"), text).unwrap();
        let config = Config::load(&dir.path().join("tether.toml")).unwrap();
        let det = Detector::build(&config, &HashKey::new([7; 32], None)).unwrap();
        let store = Store::memory(StoreLimits::default());
        let home: &'static NetInfo = Box::leak(Box::new(NetInfo { asn: Some(crate::intel::Asn(64496)), ..NetInfo::unknown() }));
        let vpn: &'static NetInfo = Box::leak(Box::new(NetInfo { asn: Some(crate::intel::Asn(9009)), category: crate::intel::Category::Vpn, ..NetInfo::unknown() }));
        let run = |bound: Option<String>, net: &'static NetInfo, now: Secs| {
            let (det, store) = (&det, &store);
            async move {
                let cookie = match bound {
                    Some(b) => format!("session=s; __Host-tether-bound={b}"),
                    None => "session=s".to_owned(),
                };
                let h = headers("cookie", cookie);
                let req = Request { now, ip: "192.0.2.10".parse().unwrap(), net, method: &Method::GET, path: "/", query: None, headers: &h, fingerprint: None, peer_trusted: false, asserted_user: None, identify: false, recheck: false };
                det.decide(store, &req).await.unwrap().expect("a session")
            }
        };
        let key = run(None, home, NOW).await.session;
        let device = DeviceKey { alg: DeviceAlg::Es256, bytes: vec![1; 64].into(), split: 32 };
        assert_eq!(det.bind_device(&store, key, device.clone(), NOW).await.unwrap(), DeviceBound::Bound);
        assert_eq!(det.bind_device(&store, key, device, NOW).await.unwrap(), DeviceBound::AlreadyBound, "the first key stays");
        let minted = |issued: Secs| Some(bound_cookie(&det.hash_key, &key, issued, issued + 600));
        // (bound cookie, network, time, what the binding makes of it, action, why)
        let rows = [
            (minted(NOW), home, NOW + 1, DeviceCheck::Proven, Action::Allow, "its own cookie, at home"),
            (None, home, NOW + 2, DeviceCheck::Missing, Action::Block, "the console cookie alone"),
            (Some("forged".to_owned()), home, NOW + 3, DeviceCheck::Stale, Action::Block, "a forged cookie"),
            (minted(NOW), home, NOW + 601, DeviceCheck::Stale, Action::Block, "an expired one, whatever the jar did"),
            (minted(NOW), vpn, NOW + 10, DeviceCheck::ProofDemanded, Action::StepUp, "a risk: a fresh proof first"),
            (minted(NOW + 5), vpn, NOW + 11, DeviceCheck::ProofDemanded, Action::StepUp, "a cookie from before the demand still does not answer"),
            (minted(NOW + 12), vpn, NOW + 12, DeviceCheck::Proven, Action::StepUp, "proven afresh: on to the OIDC step-up"),
        ];
        for (bound, net, now, check, action, why) in rows {
            let d = run(bound, net, now).await;
            assert_eq!((d.device, d.verdict.action), (check, action), "{why}");
            assert_eq!(d.verdict.signals.contains(Signal::DbscUnproven), matches!(check, DeviceCheck::Missing | DeviceCheck::Stale), "{why}");
        }
        assert_eq!(det.device_of(&store, key, NOW + 12).await.unwrap().map(|b| b.demanded), Some(NOW + 10), "the demand stands until an allowed request");
        let d = run(minted(NOW + 12), home, NOW + 13).await;
        assert_eq!((d.device, d.verdict.action), (DeviceCheck::Proven, Action::Allow), "the owner at home");
        assert_eq!(det.device_of(&store, key, NOW + 13).await.unwrap().map(|b| b.demanded), Some(0), "an allowed request settles the demand");
    }

    #[tokio::test]
    async fn silent_identification_is_offered_once_and_never_to_a_suspicious_sighting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tether.toml"), "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[session]\ncookies = [\"session\"]\n").unwrap();
        let config = Config::load(&dir.path().join("tether.toml")).unwrap();
        let det = Detector::build(&config, &HashKey::new([7; 32], None)).unwrap();
        let store = Store::memory(StoreLimits::default());
        let home = NetInfo { asn: Some(crate::intel::Asn(64496)), ..NetInfo::unknown() };
        let vpn = NetInfo { asn: Some(crate::intel::Asn(9009)), category: crate::intel::Category::Vpn, ..NetInfo::unknown() };
        let run = |cookie: &'static str, net: &'static NetInfo, now: Secs, identify: bool| {
            let (det, store) = (&det, &store);
            async move {
                let h = headers("cookie", format!("session={cookie}"));
                let req = Request { now, ip: "192.0.2.10".parse().unwrap(), net, method: &Method::GET, path: "/", query: None, headers: &h, fingerprint: None, peer_trusted: false, asserted_user: None, identify, recheck: false };
                det.decide(store, &req).await.unwrap().expect("a session")
            }
        };
        let (home, vpn): (&'static NetInfo, &'static NetInfo) = (Box::leak(Box::new(home)), Box::leak(Box::new(vpn)));
        // (cookie, network, time, a navigation that may be identified, identify?, why)
        let rows = [
            ("a", home, NOW, false, false, "not a navigation (an API call): never"),
            ("a", home, NOW + 1, true, true, "a browser's navigation, owner unknown"),
            ("a", home, NOW + 2, true, false, "tried a moment ago: no loop"),
            ("a", home, NOW + 1 + IDENTIFY_RETRY, true, true, "tried again after the retry interval, from an allowed context"),
            ("a", vpn, NOW + 2 + 2 * IDENTIFY_RETRY, true, false, "a suspicious sighting of a known session proves itself by a step-up"),
            ("b", vpn, NOW, true, true, "a first sight, even on a VPN: nothing is known either way"),
        ];
        for (cookie, net, now, navigation, want, why) in rows {
            assert_eq!(run(cookie, net, now, navigation).await.identify, want, "{why}");
        }
        // Once an owner is known, never.
        let key = run("c", home, NOW, false).await.session;
        det.learn_owner(&store, key, &Arc::from("alice"), OwnerSource::Silent, NOW).await.unwrap();
        let d = run("c", home, NOW + 1, true).await;
        assert_eq!((d.identify, d.user.as_deref()), (false, Some("alice")));
    }
}

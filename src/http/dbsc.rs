//! Device Bound Session Credentials on the request path: offering registration on the
//! response that establishes a session, the registration and refresh endpoints under
//! `/.tether/dbsc/`, and the answer to a request of a bound session that cannot show a
//! valid bound cookie (or that a risk signal sends back for a fresh key proof).
//!
//! The verdict itself is the detector's (`DeviceCheck`, the `dbsc_unproven` signal);
//! this module only turns it into the responses the DBSC browser acts on.

use http::header::{HeaderMap, HeaderValue, SET_COOKIE, USER_AGENT};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::answer;
use super::body::ProxyBody;
use super::service::{judge_identified, Context, Judged};
use crate::audit::{Event, EventKind};
use crate::dbsc::header;
use crate::dbsc::proof::{self, ProofError};
use crate::dbsc::spent::SpendError;
use crate::dbsc::token::{self, Challenge, ChallengeError};
use crate::dbsc::{OnRisk, CHALLENGE_TTL, DBSC_REFRESH, DBSC_REGISTER};
use crate::detector::{Decision, DeviceBound, DeviceCheck};
use crate::metrics::DbscOutcome;
use crate::policy::{Action, Signal};
use crate::session::{Secs, SessionKey};

crate::labels::labels! {
    /// Why a registration or refresh was refused, beyond the proof's own failures (the
    /// audit detail of `dbsc_refused`).
    enum Refusal {
        NoSession = "no_session",
        NotAllowed = "session_not_allowed",
        AlreadyBound = "already_bound",
        NotBound = "not_bound",
        SessionIdMismatch = "session_id_mismatch",
        ChallengeForged = "challenge_forged",
        ChallengeExpired = "challenge_expired",
        ChallengeReplayed = "challenge_replayed",
        ChallengeTableFull = "challenge_table_full",
    }
}

/// Whether a request's response may offer registration, decided before the request is
/// forwarded (its path and user agent go upstream with it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Eligible {
    login_route: bool,
}

pub(super) fn eligible(req: &Request<Incoming>, cx: &Context<'_>) -> Option<Eligible> {
    let cfg = &cx.snap.config.dbsc;
    let ua = req.headers().get(USER_AGENT).map_or(&b""[..], HeaderValue::as_bytes);
    let path = req.uri().path();
    cfg.offers(path, ua).then(|| Eligible { login_route: cfg.login_route.as_deref() == Some(path) })
}

/// The console's response establishes a session when it answers the first sight of one
/// (not a session the store lost), or when the login route's response sets a session
/// cookie; then, and only for the routes and clients opted in, it carries
/// `Secure-Session-Registration` with a challenge bound to that session.
pub(super) fn offer(headers: &mut HeaderMap, cx: &Context<'_>, decision: Option<&Decision>, eligible: Option<Eligible>) {
    let Some(e) = eligible else { return };
    let unrecognised = cx.identity.as_ref().is_some_and(|i| i.unrecognised);
    let session = match (e.login_route.then(|| set_session(headers, cx)).flatten(), decision) {
        (Some(key), _) => key,
        // Not a session whose history is lost: it may be one bound to a device key that
        // idled out, whose long-lived cookie must not register a key of its own.
        (None, Some(d)) if d.bound && !d.degraded && !unrecognised && d.device == DeviceCheck::Unbound && !d.verdict.signals.contains(Signal::HistoryLost) => d.session,
        _ => return,
    };
    let Some(challenge) = token::challenge(&cx.snap.detector.hash_key, &session, cx.now, CHALLENGE_TTL) else { return };
    if let Some(v) = header::registration(DBSC_REGISTER, &challenge) {
        headers.append(header::REGISTRATION, v);
        cx.shared.metrics.dbsc(DbscOutcome::Offered);
    }
}

/// The session key of a session cookie the response sets (the first non-empty one),
/// keyed on its value as `session::credential` reads it back from the browser
/// (unquoted, percent-decoded), so the challenge names the session the registration
/// will come from.
fn set_session(headers: &HeaderMap, cx: &Context<'_>) -> Option<SessionKey> {
    let names = &cx.snap.config.session.cookies;
    headers.get_all(SET_COOKIE).iter().find_map(|line| {
        let pair = line.as_bytes().split(|&b| b == b';').next()?;
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        let configured = names.iter().find(|n| n.as_bytes() == name)?;
        let value = crate::session::credential::canonical_value(value);
        (!value.is_empty()).then(|| cx.snap.detector.hash_key.session_key(configured.as_bytes(), &value))
    })
}

/// Removes the bound cookie from a request on its way upstream: it is tether's alone.
pub(super) fn strip(headers: &mut HeaderMap, cx: &Context<'_>) {
    let cfg = &cx.snap.config.dbsc;
    if cfg.enabled {
        header::strip_cookie(headers, &cfg.bound_cookie);
    }
}

/// The answer for a judged request of a bound session that must prove its key first;
/// `None` to carry on. Enforced only (monitor mode records the decision and forwards),
/// and never for a revoked session, whose block page says more.
pub(super) fn answer(req: &Request<Incoming>, cx: &Context<'_>, d: &Decision) -> Option<Response<ProxyBody>> {
    if !d.verdict.enforced() || d.verdict.signals.contains(Signal::Revoked) {
        return None;
    }
    let metrics = &cx.shared.metrics;
    match d.device {
        DeviceCheck::Unbound | DeviceCheck::Proven => None,
        DeviceCheck::Missing => {
            metrics.dbsc(DbscOutcome::RequestRefused);
            Some(refused(req, cx, d.session))
        }
        DeviceCheck::Stale => {
            metrics.dbsc(DbscOutcome::RequestRefused);
            Some(reprove(req, cx, d.session))
        }
        DeviceCheck::ProofDemanded => {
            metrics.dbsc(DbscOutcome::ProofDemanded);
            Some(reprove(req, cx, d.session))
        }
    }
}

/// The same request again with the bound cookie expired and a challenge pre-seeded: a
/// DBSC browser finds its cookie gone, refreshes with a fresh proof (over this
/// challenge) and only then follows the redirect (the spec's point-in-time re-proof).
/// Longer targets are sent to `/` rather than redirected to.
const MAX_REPROVE_TARGET: usize = 4096;

fn reprove(req: &Request<Incoming>, cx: &Context<'_>, session: SessionKey) -> Response<ProxyBody> {
    // Only a same-site path: `//host/x` or `/\\host` would send the request elsewhere.
    let target = req.uri().path_and_query().and_then(|p| crate::stepup::return_to::validate(p.as_str(), MAX_REPROVE_TARGET));
    let location = target.and_then(|t| HeaderValue::from_str(&t).ok()).unwrap_or(HeaderValue::from_static("/"));
    let mut r = answer::temporary_redirect(location);
    let h = r.headers_mut();
    if let Some(v) = header::expire(&cx.snap.config.dbsc.bound_cookie) {
        h.append(SET_COOKIE, v);
    }
    seed_challenge(h, cx, &session);
    r
}

/// No bound cookie at all: a browser that still held the key would have refreshed
/// before sending this, so whoever sent it has the console cookie without the device.
/// Unless the browser says it skipped a refresh (then reloading tries again), the
/// console cookie is cleared too, so the browser that lost its key signs in afresh
/// instead of being refused until the cookie expires.
///
/// Not for a request another site started: the bound cookie is `SameSite=Lax`, so a
/// cross-site POST (or frame, or fetch) arrives without it even from the browser that
/// holds the key, and clearing the console cookie there would let any page log the
/// owner out. Such a request is refused and nothing is cleared.
fn refused(req: &Request<Incoming>, cx: &Context<'_>, session: SessionKey) -> Response<ProxyBody> {
    let skipped = header::skipped(req.headers());
    let cross_site = header::cross_site(req.headers());
    let text = if cross_site {
        "This session is bound to a device key, and a request started by another site cannot prove it. Open the console directly to carry on."
    } else if skipped {
        "This session is bound to a device key, and the browser could not renew its proof just now. Reload the page to try again."
    } else {
        "This session is bound to a device key that this browser could not prove it holds. Sign in to the console again."
    };
    let title = if cross_site { "Open the console directly" } else { "Sign in again" };
    let mut r = answer::page(StatusCode::FORBIDDEN, title, text);
    let h = r.headers_mut();
    if !skipped && !cross_site {
        let cookies = &cx.snap.config.session.cookies;
        for name in cookies.iter().filter(|n| header::has_cookie(req.headers(), n)) {
            if let Some(v) = header::expire(name) {
                h.append(SET_COOKIE, v);
            }
        }
    }
    seed_challenge(h, cx, &session);
    r
}

fn seed_challenge(h: &mut HeaderMap, cx: &Context<'_>, session: &SessionKey) {
    let key = &cx.snap.detector.hash_key;
    let seeded = token::challenge(key, session, cx.now, CHALLENGE_TTL).and_then(|c| header::challenge(&c, &token::session_id(key, session)));
    if let Some(v) = seeded {
        h.insert(header::CHALLENGE, v);
    }
}

/// `POST /.tether/dbsc/register`: a proof signed by a new device key, over a challenge
/// tether offered this session. The registering request is judged like any other (its
/// sighting is recorded), and only an allowed one binds the session.
pub(super) async fn register(req: Request<Incoming>, cx: &Context<'_>) -> Response<ProxyBody> {
    endpoint(register_inner(req, cx).await, cx)
}

async fn register_inner(req: Request<Incoming>, cx: &Context<'_>) -> Response<ProxyBody> {
    let (snap, shared) = (cx.snap, cx.shared);
    if req.method() != Method::POST {
        return answer::json(StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"invalid_request\"}\n");
    }
    let Some(identity) = cx.identity.as_ref().filter(|i| !i.unrecognised) else {
        return refuse(&req, cx, None, Refusal::NoSession.as_str(), StatusCode::UNAUTHORIZED);
    };
    let key = identity.key;
    let Some(jwt) = header::sf_string(req.headers(), header::RESPONSE) else {
        return refuse(&req, cx, Some(key), ProofError::Malformed.as_str(), StatusCode::BAD_REQUEST);
    };
    let registration = match proof::verify_registration(jwt) {
        Ok(r) => r,
        Err(e) => return refuse(&req, cx, Some(key), e.as_str(), StatusCode::BAD_REQUEST),
    };
    // The challenge is checked first (a MAC, no state), the session judged next, and
    // only an allowed session not yet bound spends it: spending touches the single-use
    // table, which nobody should fill with challenges no binding would follow.
    let challenge = match check(cx, &key, &registration.jti) {
        Ok(c) => c,
        Err(reason) => return refuse(&req, cx, Some(key), reason, StatusCode::BAD_REQUEST),
    };
    match judge_identified(shared, snap, &cx.detector_request(&req), identity, cx.security_started).await {
        Judged::Decided(d) if d.verdict.effective() == Action::Allow && d.device == DeviceCheck::Unbound => {}
        Judged::Decided(d) if d.device != DeviceCheck::Unbound => return refuse(&req, cx, Some(key), Refusal::AlreadyBound.as_str(), StatusCode::FORBIDDEN),
        Judged::Decided(_) => return refuse(&req, cx, Some(key), Refusal::NotAllowed.as_str(), StatusCode::FORBIDDEN),
        Judged::Unjudged | Judged::Refused => return unavailable(shared),
    }
    match spend(cx, &key, challenge).await {
        Ok(()) => {}
        Err(Unspent::Refused(reason)) => return refuse(&req, cx, Some(key), reason, StatusCode::BAD_REQUEST),
        Err(Unspent::Unavailable) => return unavailable(shared),
    }
    match snap.detector.bind_device(&shared.store, key, registration.key, cx.now).await {
        Ok(DeviceBound::Bound) => {}
        Ok(DeviceBound::AlreadyBound) => return refuse(&req, cx, Some(key), Refusal::AlreadyBound.as_str(), StatusCode::FORBIDDEN),
        Ok(DeviceBound::NoSession) => return refuse(&req, cx, Some(key), Refusal::NoSession.as_str(), StatusCode::FORBIDDEN),
        Err(_) => return unavailable(shared),
    }
    shared.metrics.dbsc(DbscOutcome::Registered);
    shared.audit.record(event(&req, cx, EventKind::DbscRegistered, Some(key), None));
    issued(cx, &key, cx.now)
}

/// `POST /.tether/dbsc/refresh` with `Sec-Secure-Session-Id`: without a proof, 403 and a
/// challenge (the browser signs it and comes back); with a proof by the registered key
/// over an unspent challenge, a new bound cookie. A session that is no longer bound (or
/// no longer known) ends the browser's DBSC session with `{"continue": false}`.
pub(super) async fn refresh(req: Request<Incoming>, cx: &Context<'_>) -> Response<ProxyBody> {
    endpoint(refresh_inner(req, cx).await, cx)
}

/// What every answer of the two endpoints carries: no framing and no reading across
/// origins (the spec's advice for an endpoint browsers call with credentials), and a
/// closed HTTP/1 connection when a body was left unread.
fn endpoint(mut r: Response<ProxyBody>, cx: &Context<'_>) -> Response<ProxyBody> {
    let h = r.headers_mut();
    h.insert(http::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    answer::close_if(r, cx.unread_body)
}

async fn refresh_inner(req: Request<Incoming>, cx: &Context<'_>) -> Response<ProxyBody> {
    let (snap, shared) = (cx.snap, cx.shared);
    if req.method() != Method::POST {
        return answer::json(StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"invalid_request\"}\n");
    }
    let Some(key) = cx.identity.as_ref().filter(|i| !i.unrecognised).map(|i| i.key) else {
        return refuse(&req, cx, None, Refusal::NoSession.as_str(), StatusCode::UNAUTHORIZED);
    };
    let hash_key = &snap.detector.hash_key;
    let named = header::sf_string(req.headers(), header::SESSION_ID).is_some_and(|id| token::is_session_id(hash_key, &key, id));
    if !named {
        return refuse(&req, cx, Some(key), Refusal::SessionIdMismatch.as_str(), StatusCode::FORBIDDEN);
    }
    let binding = match snap.detector.device_of(&shared.store, key, cx.now).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            shared.metrics.dbsc(DbscOutcome::ProofRefused);
            shared.audit.record(event(&req, cx, EventKind::DbscRefused, Some(key), Some(Refusal::NotBound.as_str())));
            return answer::json(StatusCode::OK, "{\"continue\":false}\n");
        }
        Err(_) => return unavailable(shared),
    };
    let Some(jwt) = header::sf_string(req.headers(), header::RESPONSE) else {
        shared.metrics.dbsc(DbscOutcome::Challenged);
        return challenge(cx, &key);
    };
    let verified = proof::verify_refresh(jwt, &binding.key).map_err(ProofError::as_str);
    let spent = match verified.and_then(|jti| check(cx, &key, &jti)) {
        Ok(c) => spend(cx, &key, c).await,
        Err(reason) => Err(Unspent::Refused(reason)),
    };
    match spent {
        Ok(()) => {}
        // Redis cannot say whether the challenge was answered before: a 403 would have
        // the browser sign again (and spend its refresh quota) for nothing.
        Err(Unspent::Unavailable) => return unavailable(shared),
        Err(Unspent::Refused(reason)) => {
            shared.metrics.dbsc(DbscOutcome::ProofRefused);
            shared.audit.record(event(&req, cx, EventKind::DbscRefused, Some(key), Some(reason)));
            // A fresh challenge: a proof over a stale one is the race the spec expects,
            // and the browser retries once with a new signature.
            return challenge(cx, &key);
        }
    }
    let reproved = if snap.config.dbsc.on_risk == OnRisk::Challenge && binding.demanded != 0 {
        match snap.detector.prove_device(&shared.store, key, &cx.detector_request(&req)).await {
            Ok(r) => r,
            Err(_) => return unavailable(shared),
        }
    } else {
        false
    };
    shared.metrics.dbsc(DbscOutcome::Refreshed);
    shared.audit.record(event(&req, cx, EventKind::DbscRefreshed, Some(key), reproved.then_some("reproved")));
    // Never older than the demand it answers: a replica whose clock runs behind the one
    // that recorded the demand would otherwise mint a cookie that still predates it, and
    // the browser would be sent round the re-proof again and again.
    issued(cx, &key, cx.now.max(binding.demanded))
}

/// Why a challenge was not spent.
enum Unspent {
    /// The proof does not count (the audit detail says why).
    Refused(&'static str),
    /// The shared store cannot say whether it was answered before.
    Unavailable,
}

/// A proof's challenge: issued for this session and live (nothing is recorded yet).
fn check(cx: &Context<'_>, key: &SessionKey, jti: &str) -> Result<Challenge, &'static str> {
    token::check_challenge(&cx.snap.detector.hash_key, key, jti, cx.now, CHALLENGE_TTL).map_err(|e| match e {
        ChallengeError::Forged => Refusal::ChallengeForged.as_str(),
        ChallengeError::Expired => Refusal::ChallengeExpired.as_str(),
    })
}

/// Spends a checked challenge: never answered before.
async fn spend(cx: &Context<'_>, key: &SessionKey, c: Challenge) -> Result<(), Unspent> {
    cx.shared.dbsc_spent.spend(&cx.shared.store, key, c, cx.now).await.map_err(|e| match e {
        SpendError::Replayed => Unspent::Refused(Refusal::ChallengeReplayed.as_str()),
        SpendError::Full => Unspent::Refused(Refusal::ChallengeTableFull.as_str()),
        SpendError::Store => Unspent::Unavailable,
    })
}

/// 200 with the session instructions and a new bound cookie, minted as of `at`.
fn issued(cx: &Context<'_>, key: &SessionKey, at: Secs) -> Response<ProxyBody> {
    let cfg = &cx.snap.config.dbsc;
    let hash_key = &cx.snap.detector.hash_key;
    let expires = cx.now.saturating_add(cfg.bound_lifetime);
    let value = token::bound_cookie(hash_key, key, at, expires);
    let mut scope = serde_json::json!({ "include_site": false });
    if let Some(host) = cx.host.as_ref().and_then(|h| h.to_str().ok()) {
        scope["origin"] = serde_json::Value::String(format!("https://{host}"));
    }
    let body = serde_json::json!({
        "session_identifier": token::session_id(hash_key, key),
        "refresh_url": DBSC_REFRESH,
        "scope": scope,
        "credentials": [{ "type": "cookie", "name": cfg.bound_cookie, "attributes": header::BOUND_ATTRIBUTES }],
    });
    let mut r = answer::json(StatusCode::OK, format!("{body}\n"));
    if let Some(v) = header::set_bound(&cfg.bound_cookie, &value, cfg.bound_lifetime) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

/// 403 with `Secure-Session-Challenge`: the spec's demand for a (new) proof.
fn challenge(cx: &Context<'_>, key: &SessionKey) -> Response<ProxyBody> {
    let mut r = answer::json(StatusCode::FORBIDDEN, "{\"error\":\"proof_required\"}\n");
    seed_challenge(r.headers_mut(), cx, key);
    r
}

fn refuse(req: &Request<Incoming>, cx: &Context<'_>, key: Option<SessionKey>, reason: &'static str, status: StatusCode) -> Response<ProxyBody> {
    cx.shared.metrics.dbsc(DbscOutcome::ProofRefused);
    cx.shared.audit.record(event(req, cx, EventKind::DbscRefused, key, Some(reason)));
    answer::json(status, format!("{{\"error\":\"dbsc_refused\",\"reason\":\"{reason}\"}}\n"))
}

fn unavailable(shared: &crate::state::Shared) -> Response<ProxyBody> {
    shared.metrics.store_errors.inc();
    answer::json(StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"store_unavailable\"}\n")
}

fn event(req: &Request<Incoming>, cx: &Context<'_>, kind: EventKind, key: Option<SessionKey>, detail: Option<&'static str>) -> Event {
    let mut e = Event::new(kind, cx.snap.detector.mode());
    e.session = key;
    e.ip = Some(cx.client);
    e.net = Some(cx.net.clone().into_owned());
    e.ja4 = cx.fingerprint.map(|f| f.ja4);
    e.ua = req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()).map(crate::audit::bounded);
    e.method = Some(req.method().to_string());
    e.path = Some(req.uri().path().to_owned());
    e.detail = detail;
    e
}

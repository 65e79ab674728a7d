//! tether's own endpoints under `/.tether/`: the step-up callback, OIDC back-channel
//! logout, and (with `[dbsc]`) device-bound session registration and refresh. They are answered here, never forwarded, and never judged by the detector
//! (the callback carries the very session that is being challenged).

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::answer;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::service::Context;
use crate::stepup::return_to;
use crate::audit::{Event, EventKind};
use crate::session::SessionKey;
use crate::state::{Shared, Snapshot};
use crate::config::UnknownOwner;
use crate::detector::{Completion, Proof};
use crate::metrics::RevocationSource;
use crate::session::record::{OwnerChange, OwnerSource};
use crate::stepup::challenge::Kind;
use crate::stepup::oidc::{Expect, Failure, IdClaims};
use crate::stepup::Pending;

/// Everything tether serves itself lives under `OWN_PREFIX` (spelled once, in `paths`).
pub use crate::paths::{BACKCHANNEL_LOGOUT, CALLBACK, DBSC_REFRESH, DBSC_REGISTER, OWN_PREFIX};

/// A logout token is a few kilobytes at most.
const MAX_LOGOUT_BODY: usize = 64 << 10;

/// The alias under which a session is indexed by its IdP session id.
pub fn sid_alias(sid: &str) -> Arc<str> {
    Arc::from(format!("\0sid:{sid}"))
}

/// Why a callback failed, beyond the OIDC verification failures.
#[derive(Debug, Clone, Copy)]
enum CallbackFailure {
    State(crate::stepup::challenge::StateError),
    SessionMismatch,
    NotConfigured,
    Oidc(Failure),
}

impl CallbackFailure {
    fn as_str(self) -> &'static str {
        match self {
            CallbackFailure::State(e) => e.as_str(),
            CallbackFailure::SessionMismatch => "session_mismatch",
            CallbackFailure::NotConfigured => "not_configured",
            CallbackFailure::Oidc(f) => f.as_str(),
        }
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| form_decode(v))
    })
}

/// Decodes `%XX` escapes, as in a path segment, where `+` is itself (RFC 3986 §3.3). An
/// escape that is not two hex digits (`%zz`, `%+5`, a cut `%4`) stays as written; bytes
/// that are not UTF-8 become U+FFFD.
pub fn percent_decode(v: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(v).decode_utf8_lossy()
}

/// Decodes a query or form value (`application/x-www-form-urlencoded`): `+` is a space,
/// then `%XX` escapes as [`percent_decode`] reads them.
pub fn form_decode(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains('+') {
        std::borrow::Cow::Owned(percent_decode(&v.replace('+', " ")).into_owned())
    } else {
        percent_decode(v)
    }
}

/// `/.tether/…`: answered by tether itself, never forwarded.
pub(super) async fn serve(req: Request<Incoming>, cx: &Context<'_>) -> Result<Response<ProxyBody>, ProxyError> {
    match req.uri().path() {
        CALLBACK if req.method() == Method::GET => Ok(callback(&req, cx).await),
        BACKCHANNEL_LOGOUT => Ok(backchannel_logout(req, cx.snap, cx.shared).await),
        DBSC_REGISTER if cx.snap.config.dbsc.enabled => Ok(super::dbsc::register(req, cx).await),
        DBSC_REFRESH if cx.snap.config.dbsc.enabled => Ok(super::dbsc::refresh(req, cx).await),
        _ => Err(ProxyError::OwnPathNotFound),
    }
}

/// `GET /.tether/callback?code=…&state=…`: completes a step-up or an identification.
async fn callback(req: &Request<Incoming>, cx: &Context<'_>) -> Response<ProxyBody> {
    let (snap, shared) = (cx.snap, cx.shared);
    let query = req.uri().query().unwrap_or("");
    let now = cx.now;
    let mut taken: Option<Pending> = None;
    let result = async {
        let idp = snap.idp.as_ref().ok_or(CallbackFailure::NotConfigured)?;
        let state = query_param(query, "state").ok_or(CallbackFailure::State(crate::stepup::challenge::StateError::Forged))?;
        let pending = shared.challenges.redeem(&snap.detector.hash_key, &state, now).await.map_err(CallbackFailure::State)?;
        let pending = taken.insert(pending);
        // The browser finishing the flow must hold the challenged session; it is re-bound
        // to *this* request's context, so luring someone else through the flow gains a
        // thief nothing.
        if cx.identity.as_ref().map(|i| i.key) != Some(pending.session) {
            return Err(CallbackFailure::SessionMismatch);
        }
        if let Some(error) = query_param(query, "error") {
            // The IdP's own trouble (RFC 6749 §4.1.2.1) is no failure of the user's.
            return Err(CallbackFailure::Oidc(match error.as_ref() {
                "server_error" | "temporarily_unavailable" => Failure::IdpUnavailable,
                _ => Failure::IdpError,
            }));
        }
        let code = query_param(query, "code").ok_or(CallbackFailure::Oidc(Failure::IdpError))?;
        let id_token = idp.exchange(&code, &pending.verifier, &pending.redirect_uri).await.map_err(CallbackFailure::Oidc)?;
        // Whose session it is, is judged against the session's record when the step-up
        // completes (the owner may have become known since the challenge).
        let expect = Expect { kind: pending.kind, nonce: &pending.nonce, challenged_at: u64::from(pending.created), user: None, now: u64::from(now) };
        idp.verify_id_token(&id_token, &expect).await.map_err(CallbackFailure::Oidc)
    }
    .await;

    let mut event = Event::new(EventKind::StepUpCompleted, snap.detector.mode());
    event.ip = Some(cx.client);
    event.net = Some(cx.net.clone().into_owned());
    event.ja4 = cx.fingerprint.map(|f| f.ja4);
    // The client that completed it, so `tether replay` re-binds the session to it too.
    event.ua = req.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(crate::audit::bounded);
    event.method = Some(req.method().to_string());
    event.path = Some(CALLBACK.to_owned());
    match (taken, result) {
        (Some(pending), result) if pending.kind == Kind::Identify => identified(cx, query, pending, result, event).await,
        (Some(pending), Ok(claims)) => completed(req, cx, pending, claims, event).await,
        (pending, Err(failure)) => failed(cx, pending.map(|p| p.session), failure, event).await,
        // invariant: a verified token implies a redeemed challenge.
        (None, Ok(_)) => failed(cx, None, CallbackFailure::State(crate::stepup::challenge::StateError::Unknown), event).await,
    }
}

/// Where the browser goes after a callback: the challenge's return path, validated and
/// rebuilt when the challenge began and checked again here so no stored spelling can
/// leave the console's origin.
fn back(pending: &Pending) -> Response<ProxyBody> {
    let target = pending.return_to.as_deref().and_then(|p| return_to::validate(p, usize::MAX)).unwrap_or_else(|| "/".to_owned());
    // The target is rebuilt from plain ASCII, so it is valid header text; "/" is only a
    // fallback that keeps the answer a redirect.
    answer::see_other(HeaderValue::from_str(&target).unwrap_or(HeaderValue::from_static("/")))
}

/// A silent identification came back. With a user, it names the session's owner (weakly:
/// a stronger source overrides it); without one (`login_required` and the like, an
/// unreachable IdP, a token that does not verify) nothing is learned. Either way the
/// browser returns to where it was, and that request is judged by the policy as it
/// stands: an identification never unlocks anything, and never counts as a failure.
async fn identified(cx: &Context<'_>, query: &str, pending: Pending, result: Result<IdClaims, CallbackFailure>, mut event: Event) -> Response<ProxyBody> {
    let (snap, shared) = (cx.snap, cx.shared);
    event.session = Some(pending.session);
    match result.map(|c| c.user) {
        Ok(Some(user)) => {
            let user: Arc<str> = Arc::from(user);
            match snap.detector.learn_owner(&shared.store, pending.session, &user, OwnerSource::Silent, cx.now).await {
                Ok(change) => {
                    shared.metrics.step_ups.with_label_values(&["identify", "completed"]).inc();
                    audit_owner_change(shared, event, &change, &user, OwnerSource::Silent);
                }
                Err(_) => shared.metrics.store_errors.inc(),
            }
        }
        Ok(None) => {}
        Err(failure) => {
            let reason = match failure {
                // The IdP has no session for this browser (or wants an interaction):
                // the usual answer for a user not signed in there.
                CallbackFailure::Oidc(Failure::IdpError) => query_param(query, "error").map_or("idp_error", |e| identify_error(&e)),
                other => other.as_str(),
            };
            shared.metrics.step_ups.with_label_values(&["identify", reason]).inc();
            event.kind = EventKind::IdentifyFailed;
            event.detail = Some(reason);
            shared.audit.record(event);
        }
    }
    back(&pending)
}

/// The OIDC error codes a `prompt=none` request is answered with (OpenID Connect Core
/// §3.1.2.6), as audit details; anything else is `idp_error`.
fn identify_error(error: &str) -> &'static str {
    match error {
        "login_required" => "login_required",
        "interaction_required" => "interaction_required",
        "consent_required" => "consent_required",
        "account_selection_required" => "account_selection_required",
        _ => "idp_error",
    }
}

/// Audits what naming an owner did: learned, refused, or replacing a weaker owner.
pub(super) fn audit_owner_change(shared: &Shared, mut event: Event, change: &OwnerChange, user: &Arc<str>, source: OwnerSource) {
    match change {
        OwnerChange::Unchanged => return,
        OwnerChange::Learned => {
            event.kind = EventKind::OwnerLearned;
            event.user = Some(user.clone());
            event.detail = Some(source.as_str());
        }
        OwnerChange::Overrode(previous) => {
            event.kind = EventKind::OwnerConflict;
            event.user = Some(user.clone());
            event.claimed_user = Some(previous.clone());
            event.detail = Some("overrode_weaker_owner");
        }
        OwnerChange::Refused(named) => {
            event.kind = EventKind::OwnerConflict;
            event.claimed_user = Some(named.clone());
            event.detail = Some("refused");
        }
    }
    shared.audit.record(event);
}

/// A step-up whose token verified: completed for the session's owner; refused for an
/// owner-less session (unless adopted); another user revokes the session.
async fn completed(req: &Request<Incoming>, cx: &Context<'_>, pending: Pending, claims: IdClaims, mut event: Event) -> Response<ProxyBody> {
    let (snap, shared) = (cx.snap, cx.shared);
    let user: Option<Arc<str>> = claims.user.as_deref().map(Arc::from);
    let auth_time = claims.auth_time.min(u64::from(u32::MAX)) as u32;
    let unknown_owner = snap.config.step_up.as_ref().map_or(UnknownOwner::Refuse, |s| s.unknown_owner);
    let proof = Proof { auth_time, user: user.as_ref(), challenged_owner: pending.user.as_ref(), unknown_owner };
    let place = cx.detector_request(req);
    let completion = match snap.detector.complete_step_up(&shared.store, pending.session, &place, &proof).await {
        Ok(c) => c,
        Err(_) => {
            shared.metrics.store_errors.inc();
            // Nothing could be recorded, so nothing is unlocked: the user tries again.
            return answer::page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Re-authentication not recorded",
                "Your sign-in could not be recorded. Go back to the page you were on and try again in a moment.",
            );
        }
    };
    event.session = Some(pending.session);
    match completion {
        Completion::Completed => {
            if let Some(sid) = &claims.sid {
                let _ = shared.store.index_session(&sid_alias(sid), pending.session).await;
            }
            shared.challenges.clear(&pending.session).await;
            shared.metrics.step_ups.with_label_values(&["callback", "completed"]).inc();
            event.user = user;
            shared.audit.record(event);
            let mut resp = back(&pending);
            // The owner proved themselves: a new lineage, and every earlier value (the
            // forked copy's included) void once the new one is back. A tunnel opened with
            // an earlier value may be the other copy's: it goes (the owner's page
            // reconnects with the new value).
            if let (Some(cfg), Some(value)) = (snap.detector.lineage(), snap.detector.restart_lineage(&shared.store, pending.session, cx.now).await) {
                super::lineage::set(resp.headers_mut(), &value, cfg, snap.config.session.limits.absolute_ttl);
                shared.metrics.lineage.with_label_values(&[crate::session::lineage::Outcome::Issued.as_str()]).inc();
                shared.tunnels.close(&pending.session);
            }
            resp
        }
        Completion::UnknownOwner => {
            shared.metrics.step_ups.with_label_values(&["callback", Failure::UnknownOwner.as_str()]).inc();
            event.kind = EventKind::StepUpFailed;
            event.detail = Some(Failure::UnknownOwner.as_str());
            event.claimed_user = user;
            shared.audit.record(event);
            answer::page(
                StatusCode::FORBIDDEN,
                "Sign in to the console again",
                "tether cannot tell whose session this is, so signing in at the identity provider cannot unlock it. Sign out of the console and sign in to it again.",
            )
        }
        Completion::WrongUser => {
            // A theft signal in its own right: the cookie's holder is someone else.
            shared.metrics.step_ups.with_label_values(&["callback", Failure::WrongUser.as_str()]).inc();
            event.kind = EventKind::StepUpFailed;
            event.detail = Some(Failure::WrongUser.as_str());
            event.claimed_user = user;
            event.user = pending.user.clone();
            shared.audit.record(event);
            shared.tunnels.close(&pending.session);
            shared.metrics.revocations.with_label_values(&[RevocationSource::WrongUser.as_str()]).inc();
            let mut e = Event::new(EventKind::SessionRevoked, snap.detector.mode());
            e.session = Some(pending.session);
            e.user = pending.user.clone();
            e.detail = Some(RevocationSource::WrongUser.as_str());
            shared.audit.record(e);
            answer::page(
                StatusCode::FORBIDDEN,
                "Signed in as someone else",
                "The identity provider signed in a different user than this session belongs to, so the session has been ended. Sign in to the console again.",
            )
        }
    }
}

/// A step-up that failed before its token could be judged against the session.
async fn failed(cx: &Context<'_>, session: Option<SessionKey>, failure: CallbackFailure, mut event: Event) -> Response<ProxyBody> {
    let (snap, shared) = (cx.snap, cx.shared);
    shared.metrics.step_ups.with_label_values(&["callback", failure.as_str()]).inc();
    event.kind = EventKind::StepUpFailed;
    event.session = session;
    event.detail = Some(failure.as_str());
    shared.audit.record(event);
    let max = snap.config.step_up.as_ref().map_or(3, |s| s.max_failures);
    // An IdP that cannot be reached (or says it is down) is not the user's failure:
    // it never counts toward `max_failures`, and the user is asked to retry.
    if matches!(failure, CallbackFailure::Oidc(Failure::IdpUnavailable)) {
        return answer::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in service unavailable",
            "The sign-in service could not be reached. Go back to the page you were on and try again in a moment.",
        );
    }
    // Only a failure tied to a real challenge counts against its session: a forged
    // state names no session at all.
    if let Some(key) = session {
        match snap.detector.fail_step_up(&shared.store, key, cx.now, max).await {
            Ok(true) => {
                shared.tunnels.close(&key);
                shared.metrics.revocations.with_label_values(&["step_up_failures"]).inc();
                let mut e = Event::new(EventKind::SessionRevoked, snap.detector.mode());
                e.session = Some(key);
                e.detail = Some("step_up_failures");
                shared.audit.record(e);
            }
            Ok(false) => {}
            Err(_) => shared.metrics.store_errors.inc(),
        }
    }
    answer::page(StatusCode::FORBIDDEN, "Re-authentication failed", "The re-authentication could not be verified. Start again from the page you were on.")
}

/// `POST /.tether/backchannel-logout` with `logout_token`: revokes the sessions it names.
async fn backchannel_logout(req: Request<Incoming>, snap: &Snapshot, shared: &Shared) -> Response<ProxyBody> {
    if req.method() != Method::POST {
        return answer::json(StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"invalid_request\"}\n");
    }
    let Some(idp) = snap.idp.clone() else {
        return answer::json(StatusCode::NOT_FOUND, "{\"error\":\"not_configured\"}\n");
    };
    let body: Bytes = match Limited::new(req.into_body(), MAX_LOGOUT_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer::json(StatusCode::BAD_REQUEST, "{\"error\":\"invalid_request\"}\n"),
    };
    let text = String::from_utf8_lossy(&body);
    let now = shared.clock.now();
    let mode = snap.detector.mode();
    let Some(token) = query_param(&text, "logout_token") else {
        return answer::json(StatusCode::BAD_REQUEST, "{\"error\":\"invalid_request\"}\n");
    };
    let logout = match idp.verify_logout_token(&token, u64::from(now), shared.store.as_redis()).await {
        Ok(l) => l,
        Err(f) => {
            shared.metrics.step_ups.with_label_values(&["logout", f.as_str()]).inc();
            let mut e = Event::new(EventKind::LogoutReceived, mode);
            e.detail = Some(f.as_str());
            shared.audit.record(e);
            return answer::json(StatusCode::BAD_REQUEST, "{\"error\":\"invalid_request\"}\n");
        }
    };
    shared.metrics.step_ups.with_label_values(&["logout", "accepted"]).inc();
    let mut revoked = Vec::new();
    if let Some(sid) = &logout.sid {
        let key = snap.detector.hash_key.session_key(b"\0sid", sid.as_bytes());
        let _ = shared.store.revoke(key, now).await;
        revoked.push(key);
        if let Ok(keys) = shared.store.revoke_user(&sid_alias(sid), now).await {
            revoked.extend(keys);
        }
    }
    if let Some(sub) = &logout.sub {
        // Without a sid the logout covers every session of the user.
        if logout.sid.is_none() {
            if let Ok(keys) = shared.store.revoke_user(sub, now).await {
                revoked.extend(keys);
            }
        }
    }
    let mut e = Event::new(EventKind::LogoutReceived, mode);
    e.user = logout.sub.as_deref().map(Arc::from);
    shared.audit.record(e);
    revoked.sort();
    revoked.dedup();
    for key in revoked {
        shared.tunnels.close(&key);
        shared.metrics.revocations.with_label_values(&["backchannel_logout"]).inc();
        let mut e = Event::new(EventKind::SessionRevoked, mode);
        e.session = Some(key);
        e.user = logout.sub.as_deref().map(Arc::from);
        e.detail = Some("backchannel_logout");
        shared.audit.record(e);
    }
    answer::json(StatusCode::OK, "{}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_decode() {
        let q = "code=a%2Fb%3D&state=xyz&error=&msg=hello+world&bad=%zz&cut=%4";
        assert_eq!(query_param(q, "code").as_deref(), Some("a/b="));
        assert_eq!(query_param(q, "state").as_deref(), Some("xyz"));
        assert_eq!(query_param(q, "error").as_deref(), Some(""));
        assert_eq!(query_param(q, "msg").as_deref(), Some("hello world"));
        assert_eq!(query_param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(q, "cut").as_deref(), Some("%4"));
        assert_eq!(query_param(q, "missing"), None);
    }

    #[test]
    fn spellings_decode() {
        // (written, as a path segment, as a query or form value)
        let rows = [
            ("alice", "alice", "alice"),
            ("a+b@example.com", "a+b@example.com", "a b@example.com"),
            ("a%2Bb%40example.com", "a+b@example.com", "a+b@example.com"),
            ("a%2bb", "a+b", "a+b"),
            ("a%20b", "a b", "a b"),
            ("%41%42", "AB", "AB"),
            ("%C3%A9t%c3%a9", "été", "été"),
            ("%E2%82%AC", "€", "€"),
            // Not two hex digits: kept as written (a sign is not a hex digit).
            ("%+5", "%+5", "% 5"),
            ("%-5", "%-5", "%-5"),
            ("%zz", "%zz", "%zz"),
            ("%4", "%4", "%4"),
            ("%", "%", "%"),
            ("%%41", "%A", "%A"),
            ("100%", "100%", "100%"),
            // Not UTF-8 once decoded.
            ("%FF", "\u{FFFD}", "\u{FFFD}"),
            ("", "", ""),
        ];
        for (written, path, form) in rows {
            assert_eq!(percent_decode(written), path, "path {written:?}");
            assert_eq!(form_decode(written), form, "form {written:?}");
        }
    }
}

//! tether's own endpoints under `/.tether/`: the step-up callback and OIDC back-channel
//! logout. They are answered here, never forwarded, and never judged by the detector
//! (the callback carries the very session that is being challenged).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::body::ProxyBody;
use crate::audit::{Event, EventKind};
use crate::detector::Request as DetectorRequest;
use crate::session::SessionKey;
use crate::state::{Shared, Snapshot};
use crate::stepup::oidc::{Expect, Failure};

pub const CALLBACK: &str = "/.tether/callback";
pub const BACKCHANNEL_LOGOUT: &str = "/.tether/backchannel-logout";
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
        (k == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` and `+`; invalid escapes are kept as they are.
pub fn percent_decode(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<ProxyBody> {
    let body = format!("<!doctype html><title>{title}</title><h1>{title}</h1><p>{text}</p>\n");
    let mut r = Response::new(ProxyBody::local(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /.tether/callback?code=…&state=…`: completes a step-up.
pub async fn callback(req: &Request<Incoming>, ctx: &DetectorRequest<'_>, snap: &Snapshot, shared: &Shared) -> Response<ProxyBody> {
    let mode = snap.detector.mode();
    let query = req.uri().query().unwrap_or("");
    let now = ctx.now;
    let mut failed_session: Option<SessionKey> = None;
    let result = async {
        let idp = snap.idp.as_ref().ok_or(CallbackFailure::NotConfigured)?;
        let state = query_param(query, "state").ok_or(CallbackFailure::State(crate::stepup::challenge::StateError::Forged))?;
        let pending = shared.challenges.take(&snap.detector.hash_key, &state, now).map_err(CallbackFailure::State)?;
        failed_session = Some(pending.session);
        // The browser finishing the flow must hold the challenged session; it is re-bound
        // to *this* request's context, so luring someone else through the flow gains a
        // thief nothing.
        if snap.detector.session_of(req.headers(), now) != Some(pending.session) {
            return Err(CallbackFailure::SessionMismatch);
        }
        if query_param(query, "error").is_some() {
            return Err(CallbackFailure::Oidc(Failure::IdpError));
        }
        let code = query_param(query, "code").ok_or(CallbackFailure::Oidc(Failure::IdpError))?;
        let id_token = idp.exchange(&code, &pending.verifier, &pending.redirect_uri).await.map_err(CallbackFailure::Oidc)?;
        let expect = Expect { nonce: &pending.nonce, challenged_at: u64::from(pending.created), user: pending.user.as_deref(), now: u64::from(now) };
        let claims = idp.verify_id_token(&id_token, &expect).await.map_err(CallbackFailure::Oidc)?;
        Ok((pending, claims))
    }
    .await;

    let mut event = Event::new(EventKind::StepUpCompleted, mode);
    event.ip = Some(ctx.ip);
    event.net = Some(ctx.net.clone());
    event.ja4 = ctx.fingerprint.map(|f| f.ja4);
    event.method = Some(req.method().to_string());
    event.path = Some(CALLBACK.to_owned());
    match result {
        Ok((pending, claims)) => {
            let user: Option<Arc<str>> = pending.user.clone().or_else(|| claims.user.as_deref().map(Arc::from));
            let auth_time = claims.auth_time.min(u64::from(u32::MAX)) as u32;
            if snap.detector.complete_step_up(&shared.store, pending.session, ctx, auth_time, user.clone()).await.is_err() {
                shared.metrics.store_errors.inc();
            }
            if let Some(sid) = &claims.sid {
                let _ = shared.store.index_session(&sid_alias(sid), pending.session).await;
            }
            shared.challenges.clear_session(&pending.session);
            shared.metrics.step_ups.with_label_values(&["callback", "completed"]).inc();
            event.session = Some(pending.session);
            event.user = user;
            shared.audit.record(event);
            let target = pending.return_to.filter(|p| p.starts_with('/') && !p.starts_with("//")).unwrap_or_else(|| "/".to_owned());
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(&target) {
                r.headers_mut().insert(LOCATION, v);
            }
            r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(failure) => {
            shared.metrics.step_ups.with_label_values(&["callback", failure.as_str()]).inc();
            event.kind = EventKind::StepUpFailed;
            event.session = failed_session;
            event.detail = Some(failure.as_str());
            shared.audit.record(event);
            let max = snap.config.step_up.as_ref().map_or(3, |s| s.max_failures);
            // Only a failure tied to a real challenge counts against its session: a forged
            // state names no session at all.
            if let Some(key) = failed_session {
                match snap.detector.fail_step_up(&shared.store, key, now, max).await {
                    Ok(true) => {
                        shared.metrics.revocations.with_label_values(&["step_up_failures"]).inc();
                        let mut e = Event::new(EventKind::SessionRevoked, mode);
                        e.session = Some(key);
                        e.detail = Some("step_up_failures");
                        shared.audit.record(e);
                    }
                    Ok(false) => {}
                    Err(_) => shared.metrics.store_errors.inc(),
                }
            }
            page(StatusCode::FORBIDDEN, "Re-authentication failed", "The re-authentication could not be verified. Start again from the page you were on.")
        }
    }
}

/// `POST /.tether/backchannel-logout` with `logout_token`: revokes the sessions it names.
pub async fn backchannel_logout(req: Request<Incoming>, snap: &Snapshot, shared: &Shared) -> Response<ProxyBody> {
    let json = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(ProxyBody::local(body));
        *r.status_mut() = status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    };
    if req.method() != Method::POST {
        return json(StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"invalid_request\"}\n");
    }
    let Some(idp) = snap.idp.clone() else {
        return json(StatusCode::NOT_FOUND, "{\"error\":\"not_configured\"}\n");
    };
    let body: Bytes = match Limited::new(req.into_body(), MAX_LOGOUT_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return json(StatusCode::BAD_REQUEST, "{\"error\":\"invalid_request\"}\n"),
    };
    let text = String::from_utf8_lossy(&body);
    let now = crate::session::now();
    let mode = snap.detector.mode();
    let Some(token) = query_param(&text, "logout_token") else {
        return json(StatusCode::BAD_REQUEST, "{\"error\":\"invalid_request\"}\n");
    };
    let logout = match idp.verify_logout_token(&token, u64::from(now)).await {
        Ok(l) => l,
        Err(f) => {
            shared.metrics.step_ups.with_label_values(&["logout", f.as_str()]).inc();
            let mut e = Event::new(EventKind::LogoutReceived, mode);
            e.detail = Some(f.as_str());
            shared.audit.record(e);
            return json(StatusCode::BAD_REQUEST, "{\"error\":\"invalid_request\"}\n");
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
        shared.metrics.revocations.with_label_values(&["backchannel_logout"]).inc();
        let mut e = Event::new(EventKind::SessionRevoked, mode);
        e.session = Some(key);
        e.user = logout.sub.as_deref().map(Arc::from);
        e.detail = Some("backchannel_logout");
        shared.audit.record(e);
    }
    json(StatusCode::OK, "{}\n")
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
}

//! The answers for a session the detector did not allow: a step-up challenge (an OIDC
//! redirect for a browser navigation, an RFC 9470 `401` otherwise) or a block page.

use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::ProxyBody;
use crate::detector::Decision;
use crate::net::{ConnFacts, Protocol};
use crate::state::{Shared, Snapshot};
use crate::stepup::challenge::{www_authenticate, AuthorizationRequest};
use crate::stepup::BeginError;

/// The path the IdP sends the browser back to.
pub const CALLBACK_PATH: &str = "/.tether/callback";

/// A random reference for a block page and its audit line.
pub fn reference() -> u64 {
    let mut b = [0u8; 8];
    // Only an identifier for support, not a secret: a failure leaves it zero.
    let _ = getrandom::fill(&mut b);
    u64::from_be_bytes(b)
}

/// A top-level browser navigation: only those can follow a redirect to a login page.
pub fn is_browser_navigation<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && req.headers().get_all(ACCEPT).iter().any(|v| v.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

fn wants_html<B>(req: &Request<B>) -> bool {
    req.headers().get_all(ACCEPT).iter().any(|v| v.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

fn finish(mut resp: Response<ProxyBody>, req: &Request<Incoming>, conn: &ConnFacts) -> Response<ProxyBody> {
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // This answer did not read the request body; on HTTP/1 the connection must not be
    // reused, or those bytes would be parsed as the next request.
    let has_body = req.headers().contains_key(http::header::TRANSFER_ENCODING)
        || req.headers().get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    if has_body && conn.protocol == Protocol::Http1 {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pub async fn answer(
    req: &Request<Incoming>,
    d: &Decision,
    snap: &Snapshot,
    shared: &Shared,
    host: Option<&HeaderValue>,
    conn: &ConnFacts,
    client: std::net::IpAddr,
) -> Response<ProxyBody> {
    let step_up = snap.config.step_up.as_ref();
    let acr = step_up.and_then(|s| s.acr_values.as_deref());
    let host = host.and_then(|h| h.to_str().ok());
    let browser = is_browser_navigation(req);
    let endpoint = match (&snap.idp, browser) {
        // Discovery may need the network; an unreachable IdP means no redirect, and the
        // client gets the 401 challenge instead (fail closed: never "allow").
        (Some(idp), true) => idp.metadata().await.ok().map(|m| m.authorization_endpoint.clone()),
        _ => None,
    };
    let resp = match (browser, step_up, endpoint, host) {
        (true, Some(cfg), Some(endpoint), Some(host)) => {
            // A GET returns to where it was; anything else is never replayed.
            let return_to = (req.method() == Method::GET).then(|| req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned());
            let scheme = if conn.tls.is_some() { "https" } else { "http" };
            let redirect_uri = cfg.redirect_uri.clone().unwrap_or_else(|| format!("{scheme}://{host}{CALLBACK_PATH}"));
            let issued = match shared.challenges.begin(
                &snap.detector.hash_key,
                d.session,
                d.user.clone(),
                return_to,
                redirect_uri.clone(),
                client,
                crate::session::now(),
            ) {
                Ok(issued) => issued,
                Err(BeginError::RateLimited { retry_after }) => {
                    // Over a rate the request is refused, never let through.
                    shared.metrics.step_ups.with_label_values(&["challenge", "rate_limited"]).inc();
                    return finish(too_many(retry_after), req, conn);
                }
                Err(BeginError::NoRandomness) => return finish(challenge_401(acr), req, conn),
            };
            let url = AuthorizationRequest {
                endpoint: &endpoint,
                client_id: &cfg.client_id,
                redirect_uri: &redirect_uri,
                scope: "openid",
                acr_values: acr,
                login_hint: d.user.as_deref(),
                issued: &issued,
            }
            .url();
            shared.metrics.step_ups.with_label_values(&["challenge", "redirect"]).inc();
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = StatusCode::SEE_OTHER;
            match HeaderValue::from_str(&url) {
                Ok(v) => {
                    r.headers_mut().insert(LOCATION, v);
                    r
                }
                Err(_) => challenge_401(acr),
            }
        }
        _ => {
            shared.metrics.step_ups.with_label_values(&["challenge", "401"]).inc();
            challenge_401(acr)
        }
    };
    finish(resp, req, conn)
}

/// 429 with `Retry-After`: too many step-up challenges from this address, or at all.
fn too_many(retry_after: crate::session::Secs) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local("{\"error\":\"too_many_step_up_challenges\"}\n"));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn challenge_401(acr: Option<&str>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local("{\"error\":\"insufficient_user_authentication\"}\n"));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&www_authenticate(acr)) {
        h.insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// 403, as HTML for a browser and JSON otherwise. It names a reference, never the
/// signals: the reasons are for the operator's audit log, not for whoever holds a
/// stolen cookie.
pub fn blocked(req: &Request<Incoming>, d: &Decision) -> Response<ProxyBody> {
    let reference = format!("{:016x}", d.reference.unwrap_or(0));
    let (ct, body) = if wants_html(req) {
        (
            "text/html; charset=utf-8",
            format!("<!doctype html><title>Access blocked</title><h1>Access blocked</h1><p>This session was blocked by the access proxy. If this is unexpected, contact your security team with reference <code>{reference}</code>.</p>\n"),
        )
    } else {
        ("application/json", format!("{{\"error\":\"blocked\",\"reference\":\"{reference}\"}}\n"))
    };
    let mut r = Response::new(ProxyBody::local(body));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

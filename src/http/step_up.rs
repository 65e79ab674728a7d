//! The answers for a session the detector did not allow: a step-up challenge (an OIDC
//! redirect for a browser navigation, an RFC 9470 `401` otherwise) or a block page.

use http::header::{HeaderValue, ACCEPT};
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::answer;
use super::body::ProxyBody;
use super::own::CALLBACK;
use super::service::Context;
use crate::detector::Decision;
use crate::state::Snapshot;
use crate::stepup::{return_to, BeginError, ChallengeRequest};

/// Longest return path kept with a challenge (the challenge table's own bound).
const RETURN_BOUND: usize = 1024;
use crate::stepup::challenge::{www_authenticate, AuthorizationRequest, Kind};

/// A random reference for a block page and its audit line.
pub fn reference() -> u64 {
    let mut b = [0u8; 8];
    // Only an identifier for support, not a secret: a failure leaves it zero.
    let _ = getrandom::fill(&mut b);
    u64::from_be_bytes(b)
}

/// A top-level browser navigation: only those can follow a redirect to a login page.
pub fn is_browser_navigation<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD) && wants_html(req)
}

fn wants_html<B>(req: &Request<B>) -> bool {
    req.headers().get_all(ACCEPT).iter().any(|v| v.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

/// The step-up demand: an OIDC redirect for a browser navigation, the RFC 9470 `401`
/// for anything else or when no redirect can be made.
pub(super) async fn challenge(req: &Request<Incoming>, d: &Decision, cx: &Context<'_>) -> Response<ProxyBody> {
    let (snap, shared) = (cx.snap, cx.shared);
    let step_up = snap.config.step_up.as_ref();
    let acr = step_up.and_then(|s| s.acr_values.as_deref());
    let host = cx.host.as_ref().and_then(|h| h.to_str().ok());
    let browser = is_browser_navigation(req);
    let endpoint = match (&snap.idp, browser) {
        // Discovery may need the network; an unreachable IdP means no redirect, and the
        // client gets the 401 challenge instead (fail closed: never "allow").
        (Some(idp), true) => idp.metadata().await.ok().map(|m| m.authorization_endpoint.clone()),
        _ => None,
    };
    match (browser, step_up, endpoint, host) {
        (true, Some(cfg), Some(endpoint), Some(host)) => {
            // A GET returns to where it was; anything else is never replayed.
            // Rebuilt, not echoed; one too long or unsafe returns to the start page.
            let return_to = (req.method() == Method::GET)
                .then(|| req.uri().path_and_query().map_or("/", |p| p.as_str()))
                .map(|p| return_to::validate(p, RETURN_BOUND).unwrap_or_else(|| "/".to_owned()));
            let scheme = if cx.conn.tls.is_some() { "https" } else { "http" };
            let redirect_uri = match &cfg.redirect_uri {
                Some(uri) => uri.clone(),
                // A derived callback names only a host tether serves for real: one the
                // listener's certificate names or `public_hosts` lists. Any other Host
                // (chosen by the client, SNI and all) gets the 401 challenge instead.
                None if public_host(host, snap, cfg) => format!("{scheme}://{host}{CALLBACK}"),
                None => {
                    shared.metrics.step_ups.with_label_values(&["challenge", "401"]).inc();
                    return answer::challenge(&www_authenticate(acr));
                }
            };
            let request = ChallengeRequest {
                kind: Kind::StepUp,
                key: &snap.detector.hash_key,
                session: d.session,
                user: d.user.clone(),
                return_to,
                redirect_uri: redirect_uri.clone(),
                client: cx.client,
                now: cx.now,
            };
            let issued = match shared.challenges.issue(request).await {
                Ok(issued) => issued,
                Err(BeginError::RateLimited { retry_after }) => {
                    // Over a rate the request is refused, never let through.
                    shared.metrics.step_ups.with_label_values(&["challenge", "rate_limited"]).inc();
                    return answer::too_many(retry_after);
                }
                Err(BeginError::NoRandomness) => return answer::challenge(&www_authenticate(acr)),
            };
            let url = AuthorizationRequest {
                kind: Kind::StepUp,
                endpoint: &endpoint,
                client_id: &cfg.client_id,
                redirect_uri: &redirect_uri,
                scope: "openid",
                acr_values: acr,
                login_hint: d.user.as_deref(),
                issued: &issued,
                provider: cfg.provider,
                acrs: &cfg.acrs,
            }
            .url();
            shared.metrics.step_ups.with_label_values(&["challenge", "redirect"]).inc();
            match HeaderValue::from_str(&url) {
                Ok(v) => answer::see_other(v),
                Err(_) => answer::challenge(&www_authenticate(acr)),
            }
        }
        _ => {
            shared.metrics.step_ups.with_label_values(&["challenge", "401"]).inc();
            answer::challenge(&www_authenticate(acr))
        }
    }
}

/// Whether a derived redirect URI may name `host` (`Host` header, perhaps with a port):
/// it is in `step_up.public_hosts`, or the listener's certificate names it; on a
/// plaintext listener with neither configured, any host (check-config warns).
fn public_host(host: &str, snap: &Snapshot, cfg: &crate::config::StepUp) -> bool {
    let name = strip_port(host);
    if cfg.public_hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return true;
    }
    match &snap.tls_leaf {
        Some(leaf) => crate::net::tls::names_host(leaf, name),
        None => cfg.public_hosts.is_empty(),
    }
}

/// `host` without its `:port` (an IPv6 literal keeps its brackets off).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
}

/// 403, as HTML for a browser and JSON otherwise, naming the decision's reference.
pub(super) fn blocked(req: &Request<Incoming>, d: &Decision) -> Response<ProxyBody> {
    answer::blocked(wants_html(req), d.reference.unwrap_or(0))
}

//! The answers for a session the detector did not allow: a step-up challenge (an OIDC
//! redirect for a browser navigation, an RFC 9470 `401` otherwise) or a block page.

use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE, REFERER};
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

/// A browser form submission (a POST of a form, in a page): it cannot follow a redirect
/// to a login page with its body, but the person behind it can read a page.
fn is_browser_form_post<B>(req: &Request<B>) -> bool {
    let form = req.headers().get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        let starts = |p: &[u8]| v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p);
        starts(b"application/x-www-form-urlencoded") || starts(b"multipart/form-data")
    });
    let document = req.headers().get("sec-fetch-dest").is_none_or(|v| v.as_bytes() == b"document");
    *req.method() == Method::POST && form && document && wants_html(req)
}

/// The step-up demand: an OIDC redirect for a browser navigation, a page offering the
/// same for a browser's form submission, and the RFC 9470 `401` for anything else or
/// when no redirect can be made.
pub(super) async fn challenge(req: &Request<Incoming>, d: &Decision, cx: &Context<'_>) -> Response<ProxyBody> {
    let acr = cx.snap.config.step_up.as_ref().and_then(|s| s.acr_values.as_deref());
    let (metrics, url) = (&cx.shared.metrics, authorization_url(req, d, cx, Kind::StepUp));
    if is_browser_navigation(req) {
        match url.await {
            Ok(url) => {
                metrics.step_ups.with_label_values(&["challenge", "redirect"]).inc();
                return answer::see_other(url);
            }
            Err(Some(refused)) => return refused,
            Err(None) => {}
        }
    } else if is_browser_form_post(req) {
        match url.await {
            Ok(url) => {
                metrics.step_ups.with_label_values(&["challenge", "form_page"]).inc();
                return answer::step_up_page(&url, &www_authenticate(acr));
            }
            Err(Some(refused)) => return refused,
            Err(None) => {}
        }
    }
    metrics.step_ups.with_label_values(&["challenge", "401"]).inc();
    answer::challenge(&www_authenticate(acr))
}

/// A silent identification of the session's owner: a redirect to the IdP with
/// `prompt=none`. `None` when none can be made (no IdP endpoint, a Host tether does not
/// serve, over a rate): the request is then answered as the policy decided.
pub(super) async fn identify(req: &Request<Incoming>, d: &Decision, cx: &Context<'_>) -> Option<Response<ProxyBody>> {
    match authorization_url(req, d, cx, Kind::Identify).await {
        Ok(url) => {
            cx.shared.metrics.step_ups.with_label_values(&["identify", "redirect"]).inc();
            Some(answer::see_other(url))
        }
        Err(_) => None,
    }
}

/// Issues a challenge of `kind` and builds its authorization URL. `Err(None)` when no
/// redirect can be made (the caller answers otherwise), `Err(Some(429))` over a rate.
async fn authorization_url(req: &Request<Incoming>, d: &Decision, cx: &Context<'_>, kind: Kind) -> Result<HeaderValue, Option<Response<ProxyBody>>> {
    let (snap, shared) = (cx.snap, cx.shared);
    let cfg = snap.config.step_up.as_ref().ok_or(None)?;
    let idp = snap.idp.as_ref().ok_or(None)?;
    let host = cx.host.as_ref().and_then(|h| h.to_str().ok()).ok_or(None)?;
    // Discovery may need the network; an unreachable IdP means no redirect, and the
    // client gets the 401 challenge instead (fail closed: never "allow").
    let endpoint = idp.metadata().await.map_err(|_| None)?.authorization_endpoint.clone();
    let scheme = if cx.conn.tls.is_some() { "https" } else { "http" };
    let redirect_uri = match &cfg.redirect_uri {
        Some(uri) => uri.clone(),
        // A derived callback names only a host tether serves for real: one the
        // listener's certificate names or `public_hosts` lists. Any other Host (chosen
        // by the client, SNI and all) gets no redirect.
        None if public_host(host, snap, cfg) => format!("{scheme}://{host}{CALLBACK}"),
        None => return Err(None),
    };
    let request = ChallengeRequest {
        kind,
        key: &snap.detector.hash_key,
        session: d.session,
        user: d.user.clone(),
        return_to: Some(return_path(req, host)),
        redirect_uri: redirect_uri.clone(),
        client: cx.client,
        now: cx.now,
    };
    let issued = match shared.challenges.issue(request).await {
        Ok(issued) => issued,
        Err(BeginError::RateLimited { retry_after }) => {
            // Over a rate the request is refused, never let through.
            shared.metrics.step_ups.with_label_values(&[if kind == Kind::Identify { "identify" } else { "challenge" }, "rate_limited"]).inc();
            return Err(Some(answer::too_many(retry_after)));
        }
        Err(BeginError::NoRandomness) => return Err(None),
    };
    let url = AuthorizationRequest {
        kind,
        endpoint: &endpoint,
        client_id: &cfg.client_id,
        redirect_uri: &redirect_uri,
        scope: "openid",
        acr_values: cfg.acr_values.as_deref(),
        login_hint: d.user.as_deref(),
        issued: &issued,
        provider: cfg.provider,
        acrs: &cfg.acrs,
    }
    .url();
    HeaderValue::from_str(&url).map_err(|_| None)
}

/// Where the browser returns after the IdP: a GET to where it was; a form submission
/// (never replayed) to the page that held the form, when the `Referer` names one on
/// this host; anything else to the start page. Rebuilt, not echoed; one too long or
/// unsafe returns to the start page too.
fn return_path(req: &Request<Incoming>, host: &str) -> String {
    let path = if req.method() == Method::GET {
        req.uri().path_and_query().map(|p| p.as_str().to_owned())
    } else {
        req.headers()
            .get(REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.parse::<http::Uri>().ok())
            .filter(|u| u.authority().is_some_and(|a| a.as_str().eq_ignore_ascii_case(host)))
            .and_then(|u| u.path_and_query().map(|p| p.as_str().to_owned()))
    };
    path.and_then(|p| return_to::validate(&p, RETURN_BOUND)).unwrap_or_else(|| "/".to_owned())
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

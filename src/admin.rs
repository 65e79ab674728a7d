//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and the admin API under
//! `/api/`. Bound to loopback by default. The API needs the bearer token from
//! `[admin] token_file` (compared in constant time); without one it is off. Nothing
//! changes state over GET.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::audit::{Event, EventKind};
use crate::session::redis::OnError;
use crate::session::{SessionKey, SessionRecord, StoreError};
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// Scrapers send small requests; a short header timeout keeps idle sockets from piling up.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const ADMIN_MAX_BUF: usize = 16 << 10;
/// A user name in a path is at most this long.
const MAX_USER: usize = 256;

/// What one admin listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything: health, metrics and the API (the default, one listener).
    All,
    /// Health and metrics only: the API has a listener of its own (`admin.api_addr`).
    Observe,
    /// The API only, on `admin.api_addr`.
    Api,
}

pub async fn run(listener: TcpListener, shared: Arc<Shared>, surface: Surface, mut shutdown: Shutdown) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = shutdown.stopped() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(req, &shared, surface).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .max_buf_size(ADMIN_MAX_BUF)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn route(req: Request<Incoming>, shared: &Arc<Shared>, surface: Surface) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (path.strip_prefix("/api/"), surface) {
        (Some(api), Surface::All | Surface::Api) => return api_route(&req, api, shared).await,
        (Some(_), Surface::Observe) => return json_reply(StatusCode::NOT_FOUND, json!({"error": "the admin API listens on admin.api_addr"})),
        (None, Surface::Api) => return text(StatusCode::NOT_FOUND, "not found (health and metrics are on admin.addr)\n"),
        (None, _) => {}
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // A snapshot exists only once config, certificates, databases and lists loaded:
        // this listener is not up before. While draining, out of the balancer.
        "/readyz" if shared.draining.load(std::sync::atomic::Ordering::Acquire) => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => {
            let mut body = readiness(shared).await.to_owned();
            body.push_str(&idp_readiness(shared));
            body.push_str(&stale_databases(shared));
            owned_text(StatusCode::OK, body)
        }
        "/metrics" => {
            shared.observe_state();
            let mut resp = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/readyz`'s body: still 200 while the shared store is degraded (a store outage must
/// not take every replica out of the balancer at once), but naming it. A degraded store
/// is pinged here, so a recovered Redis is noticed even when no request comes.
async fn readiness(shared: &Shared) -> &'static str {
    let Some(redis) = shared.store.as_redis() else { return "ready\n" };
    if redis.health().degraded {
        let _ = redis.ping().await;
    }
    match (redis.health().degraded, redis.on_error()) {
        (false, _) if redis.is_listening() => "ready\n",
        (false, _) => "ready (degraded: not subscribed to the shared store's invalidations yet)\n",
        (true, OnError::NetworkOnly) => "ready (degraded: shared store unreachable; sessions without a cached copy are judged by network-only rules)\n",
        (true, OnError::Refuse) => "ready (degraded: shared store unreachable; sessions without a cached copy are refused)\n",
    }
}

/// A database older than this is named in `/readyz` (the same bound as the
/// `TetherIntelDatabaseStale` alert: MaxMind publishes weekly).
const STALE_DATABASE_DAYS: u64 = 35;

/// A line per intel database older than [`STALE_DATABASE_DAYS`]: still ready (old data
/// is better than none), but named.
fn stale_databases(shared: &Shared) -> String {
    let snap = shared.snapshot();
    let Some(intel) = snap.intel.as_ref() else { return String::new() };
    let now = u64::from(crate::session::now());
    let mut out = String::new();
    for db in intel.databases() {
        let age_days = now.saturating_sub(db.build_epoch()) / 86_400;
        if age_days > STALE_DATABASE_DAYS {
            out.push_str(&format!("intel: the {} database was built {age_days} days ago\n", db.kind.as_str()));
        }
    }
    out
}

/// A line for `/readyz` while the IdP's discovery is failing. Still 200: an IdP outage
/// must not take the console down, and step-ups answer 401 until it is back.
fn idp_readiness(shared: &Shared) -> String {
    match shared.snapshot().idp.as_ref().map(|idp| idp.readiness()) {
        Some(crate::stepup::oidc::Readiness::Failing(reason)) => format!("idp: discovery failing: {reason}\n"),
        _ => String::new(),
    }
}

fn owned_text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn json_reply(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string() + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The refusal for a request without the admin token; `None` when it may proceed.
fn refusal(req: &Request<Incoming>, shared: &Shared) -> Option<Response<Full<Bytes>>> {
    let snap = shared.snapshot();
    let Some(token) = &snap.admin_token else {
        return Some(json_reply(StatusCode::NOT_FOUND, json!({"error": "the admin API is off: set [admin] token_file"})));
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer ")));
    match presented {
        Some(p) if token.matches(p) => None,
        _ => {
            let mut r = json_reply(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}));
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tether-admin\""));
            Some(r)
        }
    }
}

fn session_json(key: &SessionKey, r: &SessionRecord) -> serde_json::Value {
    let place = |p: &crate::session::record::Place| {
        json!({
            "asn": p.asn().map(|a| a.0),
            "country": p.country().map(|c| c.as_str().to_owned()),
            "category": p.category.as_str(),
            "at": crate::audit::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(u64::from(p.at))),
        })
    };
    json!({
        "session": key.hex().as_str(),
        "user": r.user.as_deref(),
        "bound": place(&r.bound),
        "last": place(&r.last),
        "client": { "ua_family": r.client.ua.family.as_str(), "ua_major": r.client.ua.major, "os": r.client.ua.os.as_str(), "tls": r.client.tls.as_str() },
        "step_up_pending": r.step_up_pending,
        "step_up_failures": r.step_up_failures,
        "authenticated_at": r.authenticated_at.get(),
        "owner_source": r.owner_source.as_str(),
        // When the session was bound to a device key (DBSC), if it is.
        "device_bound_at": r.device().map(|d| crate::audit::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(u64::from(d.registered)))),
        "proven": r.proven().iter().map(|c| json!({
            "asn": c.asn().map(|a| a.0),
            "country": c.country().map(|c| c.as_str().to_owned()),
            "category": c.category.as_str(),
            "tls": c.tls.as_str(),
            "at": crate::audit::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(u64::from(c.at))),
        })).collect::<Vec<_>>(),
    })
}

async fn api_route(req: &Request<Incoming>, api: &str, shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    if let Some(denied) = refusal(req, shared) {
        return denied;
    }
    let now = shared.clock.now();
    let method = req.method().clone();
    let segments: Vec<&str> = api.split('/').collect();
    let write = method == Method::POST;
    match (segments.as_slice(), write) {
        (["sessions"], false) => {
            let query = req.uri().query().unwrap_or("");
            let user = query.split('&').find_map(|kv| kv.strip_prefix("user="));
            let Some(user) = user.map(crate::http::form_decode).filter(|u| !u.is_empty() && u.len() <= MAX_USER) else {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "give ?user=NAME"}));
            };
            match shared.store.sessions_of(&user).await {
                Ok(list) => json_reply(StatusCode::OK, json!({ "user": &*user, "sessions": list.iter().map(|(k, r)| session_json(k, r)).collect::<Vec<_>>() })),
                Err(_) => json_reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "store unavailable"})),
            }
        }
        (["sessions", key, "revoke"], true) => {
            let Some(key) = SessionKey::parse_hex(key) else {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "a session is 32 hex characters"}));
            };
            match shared.store.revoke(key, now).await {
                Ok(known) => {
                    shared.tunnels.close(&key);
                    audit_revocation(shared, key, None);
                    json_reply(StatusCode::OK, json!({"revoked": [key.hex().as_str()], "was_tracked": known}))
                }
                // The shared store holds it at this replica but could not share it: this
                // replica's tunnels close, and the caller is told to retry.
                Err(StoreError::Degraded) => {
                    shared.tunnels.close(&key);
                    json_reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "store unavailable", "revoked_here_only": [key.hex().as_str()]}))
                }
                Err(_) => json_reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "store unavailable"})),
            }
        }
        (["users", user, "revoke"], true) => {
            // A path segment: `+` is a plus sign (`a+b@example.com`), not a space.
            let user = crate::http::percent_decode(user);
            if user.is_empty() || user.len() > MAX_USER {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "bad user"}));
            }
            match shared.store.revoke_user(&user, now).await {
                Ok(keys) => {
                    for k in &keys {
                        shared.tunnels.close(k);
                        audit_revocation(shared, *k, Some(&user));
                    }
                    json_reply(StatusCode::OK, json!({"user": &*user, "revoked": keys.iter().map(|k| k.hex().as_str().to_owned()).collect::<Vec<_>>()}))
                }
                Err(_) => json_reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "store unavailable"})),
            }
        }
        (["policy"], false) => json_reply(StatusCode::OK, policy_json(shared)),
        (["reload"], true) => match shared.config_path.get() {
            Some(path) => match crate::reload::reload_in_background(shared.clone(), path.clone()).await {
                Ok(generation) => json_reply(StatusCode::OK, json!({"generation": generation})),
                Err(e) => json_reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"error": e.to_string(), "generation": shared.snapshot().generation})),
            },
            None => json_reply(StatusCode::CONFLICT, json!({"error": "this instance was not started from a config file"})),
        },
        // The right path with the wrong method: GET never changes state.
        (["sessions", _, "revoke"] | ["users", _, "revoke"] | ["reload"], false) | (["sessions"] | ["policy"], true) => {
            json_reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "method not allowed"}))
        }
        _ => json_reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

fn audit_revocation(shared: &Shared, key: SessionKey, user: Option<&str>) {
    shared.metrics.revocations.with_label_values(&["admin"]).inc();
    let mut e = Event::new(EventKind::SessionRevoked, shared.snapshot().detector.mode());
    e.session = Some(key);
    e.user = user.map(Arc::from);
    e.detail = Some("admin");
    shared.audit.record(e);
}

/// The policy in force, secrets left out.
fn policy_json(shared: &Shared) -> serde_json::Value {
    let snap = shared.snapshot();
    let p = &snap.detector.policy;
    let c = &snap.config;
    json!({
        "generation": snap.generation,
        "mode": p.mode.as_str(),
        "step_up_threshold": p.step_up_threshold,
        "block_threshold": p.block_threshold,
        "revoke_threshold": p.revoke_threshold,
        "max_travel_kmh": p.max_travel_kmh,
        "concurrent_window_secs": p.concurrent_window_secs,
        "weights": crate::policy::Signal::ALL.iter().map(|s| (s.as_str(), p.weight(*s))).collect::<std::collections::BTreeMap<_, _>>(),
        "routes": p.routes.iter().map(|r| json!({
            "path_prefix": r.path_prefix,
            "methods": r.methods.iter().map(|m| m.as_str().to_owned()).collect::<Vec<_>>(),
            "sensitivity": r.sensitivity,
            "fresh_auth_secs": r.fresh_auth.map(|d| d.as_secs()),
        })).collect::<Vec<_>>(),
        "session": { "cookies": c.session.cookies, "bearer": c.session.bearer, "hash_key": if c.session.hash_key_file.is_some() { "file" } else { "generated" } },
        "step_up": c.step_up.as_ref().map(|s| json!({
            "client_id": s.client_id,
            "client_secret": s.client_secret.as_ref().map(|_| "<redacted>"),
            "acr_values": s.acr_values,
            "required_amr": s.required_amr,
        })),
        "intel": c.intel.as_ref().map(|i| json!({
            "ioc_files": i.ioc_files.iter().map(|f| f.label.clone()).collect::<Vec<_>>(),
            "catalogue_version": snap.intel.as_ref().and_then(|x| x.catalogue_version().map(str::to_owned)),
        })),
    })
}

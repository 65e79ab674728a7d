//! The request path: one function from a client request to a response.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::body::{Guarded, ProxyBody};
use super::error::{BadRequest, ProxyError};
use super::hygiene;
use super::own;
use super::step_up;
use crate::detector::{Decision, Request as DetectorRequest};
use crate::fingerprint::{Fingerprint, Ja4};
use crate::intel::NetInfo;
use crate::policy::Action;
use crate::metrics::status_class;
use crate::net::{client_addr, ConnFacts, Protocol};
use crate::state::{Shared, Snapshot};

/// Everything tether serves itself lives under this prefix.
pub const OWN_PREFIX: &str = "/.tether/";

const X_TETHER_JA4: &str = "x-tether-ja4";
const X_TETHER_CLIENT_IP: &str = "x-tether-client-ip";

pub async fn handle(req: Request<Incoming>, conn: &ConnFacts, shared: &Arc<Shared>) -> Response<ProxyBody> {
    let started = Instant::now();
    let snap = shared.snapshot();
    let has_body = request_has_body(&req);
    let resp = match forward(req, conn, &snap, shared).await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(kind) = e.upstream_kind() {
                shared.metrics.upstream_errors.with_label_values(&[kind]).inc();
            }
            // A body we did not read must never be parsed as the next request.
            e.into_response(has_body && conn.protocol == Protocol::Http1)
        }
    };
    let protocol = conn.protocol.as_str();
    shared.metrics.requests.with_label_values(&[protocol, status_class(resp.status())]).inc();
    shared.metrics.request_seconds.with_label_values(&[protocol]).observe(started.elapsed().as_secs_f64());
    resp
}

async fn forward(
    mut req: Request<Incoming>,
    conn: &ConnFacts,
    snap: &Snapshot,
    shared: &Arc<Shared>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let limits = &snap.config.limits;
    let host = request_host(&req)?;
    if let (Some(sni), Some(host)) = (conn.tls.as_ref().and_then(|t| t.sni.as_deref()), host.as_ref()) {
        if !host_matches_sni(host, sni) {
            return Err(ProxyError::Misdirected);
        }
    }
    if declared_length(&req).is_some_and(|n| n > limits.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge);
    }
    let client = client_addr::resolve(conn.source.ip(), req.headers(), &snap.trusted);
    let fingerprint = request_fingerprint(&req, conn, snap);

    // The security path: judge the session before anything reaches the upstream.
    let looked_up;
    let net: &NetInfo = match (&conn.net, &snap.intel) {
        (Some(n), _) if client == conn.source.ip() => n,
        (_, Some(intel)) => {
            looked_up = intel.lookup(client);
            &looked_up
        }
        _ => &UNKNOWN_NET,
    };
    if req.uri().path().starts_with(OWN_PREFIX) {
        return own_endpoint(req, conn, snap, shared, client, net, fingerprint.as_ref()).await;
    }
    let decision = judge(&req, conn, snap, shared, client, net, fingerprint.as_ref()).await;
    if let Some(d) = &decision {
        match d.verdict.effective() {
            Action::Allow => {}
            Action::StepUp => return Ok(step_up::answer(&req, d, snap, shared, host.as_ref(), conn, client).await),
            Action::Block | Action::Revoke => return Ok(step_up::blocked(&req, d)),
        }
    }
    let upgrade = upgrade_requested(&req, conn.protocol);
    let client_upgrade: Option<OnUpgrade> = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    // A tunnel outlives this request; keep what is needed to judge its session again
    // when the policy changes.
    let recheck = match (&upgrade, &decision) {
        (Some(_), Some(_)) => Some(Recheck {
            shared: shared.clone(),
            ip: client,
            net: net.clone(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            headers: req.headers().clone(),
            fingerprint,
            peer_trusted: snap.trusted.contains(conn.source.ip()),
        }),
        _ => None,
    };

    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    hygiene::strip_hop_by_hop(headers);
    hygiene::strip_client_claims(headers);
    hygiene::mark_sensitive(headers);
    if let Some(name) = &snap.config.listen.ja4_header {
        headers.remove(name);
    }
    hygiene::set_forwarded(headers, client, conn.tls.is_some(), host.as_ref());
    if let Some(protocol) = &upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }
    let upstream_host = match (&host, snap.config.upstream.preserve_host) {
        (Some(h), true) => h.clone(),
        // invariant: an Authority is valid header text.
        _ => HeaderValue::from_str(snap.upstream.authority().as_str()).map_err(|_| ProxyError::BadRequest(BadRequest::Target))?,
    };
    headers.insert(HOST, upstream_host);
    if snap.config.upstream.forward_fingerprint {
        set_fingerprint_headers(headers, fingerprint.as_ref(), client);
    }
    if let (true, Some(d)) = (snap.config.upstream.forward_decision, &decision) {
        set_decision_headers(headers, d);
    }
    parts.uri = snap.upstream.target(parts.uri.path_and_query())?;
    parts.version = Version::HTTP_11;
    let body = Guarded::new(body, limits.body_idle_timeout, limits.max_body_bytes);
    let mut resp = snap.upstream.send(Request::from_parts(parts, body)).await?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Only now, with the upstream's 101 in hand, does the connection become a tunnel.
        let Some(client_upgrade) = client_upgrade else {
            return Err(ProxyError::UpstreamProtocol);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        let protocol = parts.headers.get(UPGRADE).cloned();
        hygiene::strip_hop_by_hop(&mut parts.headers);
        let Some(protocol) = protocol else {
            return Err(ProxyError::UpstreamProtocol);
        };
        parts.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol);
        shared.metrics.upgrades.inc();
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, recheck));
        return Ok(Response::from_parts(parts, ProxyBody::empty()));
    }

    let (mut parts, body) = resp.into_parts();
    hygiene::strip_hop_by_hop(&mut parts.headers);
    let body = Guarded::new(body, limits.body_idle_timeout, u64::MAX);
    Ok(Response::from_parts(parts, ProxyBody::Upstream { body }))
}

/// `/.tether/…`: answered by tether itself.
async fn own_endpoint(
    req: Request<Incoming>,
    conn: &ConnFacts,
    snap: &Snapshot,
    shared: &Shared,
    client: IpAddr,
    net: &NetInfo,
    fingerprint: Option<&Fingerprint>,
) -> Result<Response<ProxyBody>, ProxyError> {
    match req.uri().path() {
        own::CALLBACK if req.method() == http::Method::GET => {
            let ctx = detector_request(&req, conn, snap, client, net, fingerprint);
            Ok(own::callback(&req, &ctx, snap, shared).await)
        }
        own::BACKCHANNEL_LOGOUT => Ok(own::backchannel_logout(req, snap, shared).await),
        _ => Err(ProxyError::OwnPathNotFound),
    }
}

/// What the detector looks at, for a live request.
fn detector_request<'a>(
    req: &'a Request<Incoming>,
    conn: &ConnFacts,
    snap: &Snapshot,
    client: IpAddr,
    net: &'a NetInfo,
    fingerprint: Option<&'a Fingerprint>,
) -> DetectorRequest<'a> {
    DetectorRequest {
        now: crate::session::now(),
        ip: client,
        net,
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
        fingerprint,
        peer_trusted: snap.trusted.contains(conn.source.ip()),
        asserted_user: None,
    }
}

static UNKNOWN_NET: std::sync::LazyLock<NetInfo> = std::sync::LazyLock::new(NetInfo::unknown);

/// Runs the detector, then counts and audits what it decided. A store failure is
/// counted and the request judged without history would be a "new context"; instead it
/// is let through unjudged, since tether must never turn "unknown" into "suspicious"
/// for every user at once (the metric alerts).
async fn judge(
    req: &Request<Incoming>,
    conn: &ConnFacts,
    snap: &Snapshot,
    shared: &Shared,
    client: IpAddr,
    net: &NetInfo,
    fingerprint: Option<&Fingerprint>,
) -> Option<Decision> {
    let started = Instant::now();
    let input = detector_request(req, conn, snap, client, net, fingerprint);
    let decision = match snap.detector.decide(&shared.store, &input).await {
        Ok(d) => d?,
        Err(_) => {
            shared.metrics.store_errors.inc();
            return None;
        }
    };
    let m = &shared.metrics;
    m.decision_seconds.observe(started.elapsed().as_secs_f64());
    m.decisions.with_label_values(&[decision.verdict.action.as_str(), decision.verdict.mode.as_str()]).inc();
    for s in decision.verdict.signals.iter() {
        m.signals.with_label_values(&[s.as_str()]).inc();
    }
    if decision.bound {
        m.sessions.set(shared.store.len() as i64);
    }
    if decision.verdict.enforced() && decision.verdict.action == Action::Revoke {
        m.revocations.with_label_values(&["policy"]).inc();
    }
    let mut decision = decision;
    decision.reference = (decision.verdict.action != Action::Allow).then(step_up::reference);
    for event in crate::detector::audit_events(&decision, &input, snap.config.audit.allowed) {
        shared.audit.record(event);
    }
    if decision.verdict.enforced() && decision.verdict.action == Action::Revoke {
        let mut e = crate::audit::Event::new(crate::audit::EventKind::SessionRevoked, decision.verdict.mode);
        e.session = Some(decision.session);
        e.user = decision.user.clone();
        e.ip = Some(client);
        e.reasons = decision.verdict.signals;
        e.detail = Some("policy");
        shared.audit.record(e);
    }
    Some(decision)
}

fn set_decision_headers(headers: &mut http::HeaderMap, d: &Decision) {
    headers.insert("x-tether-decision", HeaderValue::from_static(d.verdict.action.as_str()));
    headers.insert("x-tether-score", HeaderValue::from(d.verdict.score));
    if !d.verdict.signals.is_empty() {
        // invariant: signal names are ASCII identifiers.
        if let Ok(v) = HeaderValue::from_str(&d.verdict.signals.to_string()) {
            headers.insert("x-tether-signals", v);
        }
    }
}

/// What a tunnel keeps to judge its session again after a reload.
struct Recheck {
    shared: Arc<Shared>,
    ip: IpAddr,
    net: NetInfo,
    method: http::Method,
    path: String,
    headers: http::HeaderMap,
    fingerprint: Option<Fingerprint>,
    peer_trusted: bool,
}

impl Recheck {
    /// Whether the session may keep its tunnel under the policy now in force.
    async fn still_allowed(&self) -> bool {
        let snap = self.shared.snapshot();
        // The new snapshot's databases and lists decide what the address is now.
        let net = snap.intel.as_ref().map_or_else(|| self.net.clone(), |i| i.lookup(self.ip));
        let req = DetectorRequest {
            now: crate::session::now(),
            ip: self.ip,
            net: &net,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            fingerprint: self.fingerprint.as_ref(),
            peer_trusted: self.peer_trusted,
            asserted_user: None,
        };
        match snap.detector.decide(&self.shared.store, &req).await {
            Ok(Some(d)) => {
                let allowed = d.verdict.effective() == Action::Allow;
                if !allowed {
                    self.shared.metrics.decisions.with_label_values(&[d.verdict.action.as_str(), d.verdict.mode.as_str()]).inc();
                    for event in crate::detector::audit_events(&d, &req, false) {
                        self.shared.audit.record(event);
                    }
                }
                allowed
            }
            // A store failure is not a reason to cut a working session.
            Ok(None) | Err(_) => true,
        }
    }
}

/// Joins the two upgraded halves once both sides have switched. A tunnel carrying a
/// session is judged again after every reload and closed if the new policy would not
/// allow it.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, recheck: Option<Recheck>) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let Some(recheck) = recheck else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    };
    let mut reloads = recheck.shared.reloaded.subscribe();
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = &mut copy => return,
            changed = reloads.changed() => {
                if changed.is_err() || !recheck.still_allowed().await {
                    tracing::info!(ip = %recheck.ip, "tunnel closed: the session is no longer allowed");
                    return;
                }
            }
        }
    }
}

/// The protocol a client asks to upgrade to, on HTTP/1.1 only (HTTP/2 has no Upgrade).
fn upgrade_requested(req: &Request<Incoming>, protocol: Protocol) -> Option<HeaderValue> {
    if protocol != Protocol::Http1 || req.version() != Version::HTTP_11 {
        return None;
    }
    let value = req.headers().get(UPGRADE)?;
    hygiene::connection_has(req.headers(), "upgrade").then(|| value.clone())
}

fn request_has_body(req: &Request<Incoming>) -> bool {
    req.headers().contains_key(TRANSFER_ENCODING) || declared_length(req).is_some_and(|n| n > 0)
}

fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The request's host: the HTTP/2 `:authority` or absolute-form target, else `Host`.
fn request_host(req: &Request<Incoming>) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest(BadRequest::DuplicateHost));
    }
    let Some(authority) = req.uri().authority() else {
        return Ok(header.cloned());
    };
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(BadRequest::Target));
    }
    match header {
        Some(h) if !h.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()) => {
            Err(ProxyError::BadRequest(BadRequest::AuthorityMismatch))
        }
        Some(h) => Ok(Some(h.clone())),
        None => HeaderValue::from_str(authority.as_str()).map(Some).map_err(|_| ProxyError::BadRequest(BadRequest::Target)),
    }
}

/// Whether the host part of a Host value names the TLS server name.
fn host_matches_sni(host: &HeaderValue, sni: &str) -> bool {
    let host = host.as_bytes();
    let name = if host.first() == Some(&b'[') {
        // An IP literal; clients never send an IP as SNI, so it cannot match.
        return false;
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
            _ => host,
        }
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    name.eq_ignore_ascii_case(sni.as_bytes())
}

/// The connection's own fingerprint over TLS; on a plaintext listener, the JA4 a trusted
/// balancer passed in `listen.ja4_header` (its stable form is the same value, since the
/// hello itself is not visible).
fn request_fingerprint(req: &Request<Incoming>, conn: &ConnFacts, snap: &Snapshot) -> Option<Fingerprint> {
    if let Some(tls) = &conn.tls {
        return tls.fingerprint;
    }
    let name = snap.config.listen.ja4_header.as_ref()?;
    if !snap.trusted.contains(conn.source.ip()) {
        return None;
    }
    let ja4 = Ja4::parse(req.headers().get(name)?.as_bytes())?;
    Some(Fingerprint { ja4, ja4_stable: ja4 })
}

fn set_fingerprint_headers(headers: &mut http::HeaderMap, fingerprint: Option<&Fingerprint>, client: IpAddr) {
    if let Some(fp) = fingerprint {
        // invariant: a JA4 is 36 ASCII characters.
        headers.insert(X_TETHER_JA4, HeaderValue::from_str(fp.ja4.as_str()).expect("JA4 is ASCII"));
    }
    // invariant: a formatted IP is ASCII.
    headers.insert(X_TETHER_CLIENT_IP, HeaderValue::from_str(&client.to_string()).expect("IP is ASCII"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_comparison() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(host_matches_sni(&h("admin.example.com"), "admin.example.com"));
        assert!(host_matches_sni(&h("Admin.Example.com:8443"), "admin.example.com"));
        assert!(host_matches_sni(&h("admin.example.com."), "admin.example.com"));
        assert!(!host_matches_sni(&h("other.example.com"), "admin.example.com"));
        assert!(!host_matches_sni(&h("[::1]:443"), "localhost"));
        assert!(!host_matches_sni(&h("admin.example.com:x"), "admin.example.com"));
    }
}

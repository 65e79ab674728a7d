//! The request path, as phases over one request context:
//!
//! admit → identify → judge → answer or forward → record
//!
//! - **admit**: the checks any request passes (one Host, Host names the TLS server name,
//!   declared body within bounds) and the facts every later phase reads: client address,
//!   its network, the TLS fingerprint.
//! - **identify**: the session the request carries, found once ([`Detector::identify`]).
//!   tether's own endpoints are answered here, after identification (the step-up callback
//!   must hold the challenged session) and before any judgement.
//! - **judge**: the detector's verdict; the decision is recorded (audit, metrics) as soon
//!   as it is made, while the request it describes is still at hand, so a client that
//!   goes away mid-forward cannot lose its audit line.
//! - **answer or forward**: a step-up challenge or block page, or the request forwarded
//!   with header hygiene (and, after the upstream's `101`, a tunnel).
//! - **record**: the request's count and latency, for every answer.
//!
//! [`Detector::identify`]: crate::detector::Detector::identify

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderValue, CONNECTION, HOST, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::access;
use super::answer;
use super::dbsc;
use super::body::{Guarded, ProxyBody};
use super::error::{BadRequest, ProxyError};
use super::hygiene;
use super::lineage;
use super::own;
use super::record;
use super::step_up;
use super::tunnel::{self, Recheck};
use crate::config::Identify;
use crate::session::record::OwnerSource;
use crate::detector::{Decision, Identity, Request as DetectorRequest};
use crate::fingerprint::{Fingerprint, Ja4};
use crate::intel::NetInfo;
use crate::net::{client_addr, ConnFacts, Protocol};
use crate::audit::{Event, EventKind};
use crate::policy::{method, path, Action};
use crate::session::credential::Ambiguity;
use crate::session::{Secs, StoreError};
use crate::state::{Shared, Snapshot};

const X_TETHER_JA4: &str = "x-tether-ja4";
const X_TETHER_CLIENT_IP: &str = "x-tether-client-ip";

/// One request's facts, gathered by [`admit`] and [`identify`] and read by every later
/// phase, so the same arguments do not travel separately from phase to phase.
pub(super) struct Context<'a> {
    pub conn: &'a ConnFacts,
    pub snap: &'a Snapshot,
    pub shared: &'a Arc<Shared>,
    /// The client: the peer, or the address a trusted hop names.
    pub client: IpAddr,
    /// What tether knows about the client's network: the connection's own lookup when
    /// the client is the peer, else a lookup of the forwarded address.
    pub net: Cow<'a, NetInfo>,
    pub fingerprint: Option<Fingerprint>,
    /// The request's host, checked against the TLS server name.
    pub host: Option<HeaderValue>,
    /// The peer is a configured trusted hop.
    pub peer_trusted: bool,
    pub now: Secs,
    /// An HTTP/1 request whose body tether has not read: an answer of tether's own
    /// closes the connection.
    pub unread_body: bool,
    /// The session the request carries.
    pub identity: Option<Identity>,
    /// When the security path (identify, judge) began, for the decision time.
    pub security_started: Instant,
}

impl Context<'_> {
    /// What the detector looks at, for this request.
    pub fn detector_request<'r>(&'r self, req: &'r Request<Incoming>) -> DetectorRequest<'r> {
        DetectorRequest {
            now: self.now,
            ip: self.client,
            net: &self.net,
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            fingerprint: self.fingerprint.as_ref(),
            peer_trusted: self.peer_trusted,
            asserted_user: None,
            identify: self.snap.config.step_up.as_ref().is_some_and(|s| s.identify == Identify::Silent)
                && self.snap.idp.is_some()
                && super::step_up::is_browser_navigation(req),
            recheck: false,
        }
    }
}

/// Answers one request. The service future itself (no wrapping block): hyper moves it
/// whole into its dispatcher, and each async level around it would copy it once more.
pub async fn handle(req: Request<Incoming>, conn: Arc<ConnFacts>, shared: Arc<Shared>) -> Result<Response<ProxyBody>, Infallible> {
    let (conn, shared) = (&*conn, &shared);
    let started = Instant::now();
    let snap = shared.snapshot();
    // Read before the request moves on: any answer tether writes itself leaves the body
    // unread, and on HTTP/1 its bytes must never be parsed as the next request.
    let unread_body = conn.protocol == Protocol::Http1 && answer::has_body(&req);
    let seen = access::Seen::of(&req);
    let mut outcome = access::Outcome::default();
    let resp = match respond(req, conn, &snap, shared, unread_body, &mut outcome).await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(kind) = e.upstream_kind() {
                shared.metrics.upstream_errors.with_label_values(&[kind]).inc();
            }
            access::failed(&seen, &outcome, &e);
            answer::close_if(e.into_response(), unread_body)
        }
    };
    record::request(shared, conn.protocol, resp.status(), started);
    access::answered(&snap, &seen, &outcome, resp.status(), started);
    Ok(resp)
}

/// The phases, in order.
async fn respond(
    req: Request<Incoming>,
    conn: &ConnFacts,
    snap: &Snapshot,
    shared: &Arc<Shared>,
    unread_body: bool,
    outcome: &mut access::Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut cx = admit(&req, conn, snap, shared, unread_body)?;
    if let Err(refusal) = identify(&req, &mut cx) {
        return Ok(refuse(&req, &cx, refusal));
    }
    if req.uri().path().starts_with(own::OWN_PREFIX) {
        // Boxed, like every rare branch below: a request's future is moved whole (into
        // hyper's dispatcher, at every hand-off) and sized by its largest branch, so the
        // IdP and owner paths would otherwise be copied on every forwarded request.
        return Box::pin(own::serve(req, &cx)).await;
    }
    let decision = match &cx.identity {
        None => None,
        Some(identity) => match judge_identified(cx.shared, cx.snap, &cx.detector_request(&req), identity, cx.security_started).await {
            Judged::Decided(d) => Some(d),
            Judged::Unjudged => None,
            Judged::Refused => return Err(ProxyError::StoreUnavailable),
        },
    };
    outcome.decided(decision.as_ref());
    // Whatever answers this request carries a value the store now holds: the answer
    // that does not (an error) is a lost response, which lineage tolerates.
    let lineage_set = decision.as_ref().and_then(|d| d.lineage_set.as_ref()).map(|(_, v)| v.clone());
    let mut resp = match &decision {
        // A bound session proves its device before anything else is asked of it.
        Some(d) => match dbsc::answer(&req, &cx, d) {
            Some(resp) => answer::close_if(resp, cx.unread_body),
            // Boxed: only an identification, a challenge or a block take this branch.
            None if d.identify || d.verdict.effective() != Action::Allow => Box::pin(answer_or_forward(req, &cx, decision)).await?,
            None => forward(req, &cx, decision).await?,
        },
        None => forward(req, &cx, decision).await?,
    };
    if let (Some(value), Some(cfg)) = (lineage_set, snap.detector.lineage()) {
        lineage::set(resp.headers_mut(), &value, cfg, snap.config.session.limits.absolute_ttl);
    }
    Ok(resp)
}

/// Refuses what no phase should see, and gathers the request's facts.
fn admit<'a>(
    req: &Request<Incoming>,
    conn: &'a ConnFacts,
    snap: &'a Snapshot,
    shared: &'a Arc<Shared>,
    unread_body: bool,
) -> Result<Context<'a>, ProxyError> {
    let host = request_host(req)?;
    if let (Some(sni), Some(host)) = (conn.tls.as_ref().and_then(|t| t.sni.as_deref()), host.as_ref()) {
        if !host_matches_sni(host, sni) {
            return Err(ProxyError::Misdirected);
        }
    }
    if answer::declared_length(req).is_some_and(|n| n > snap.config.limits.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge);
    }
    // A trusted hop is believed only with the shared secret, when one is configured.
    let peer_trusted = snap.trusted.contains(conn.source.ip()) && proxy_secret_ok(req, snap);
    let client = client_addr::resolve(conn.source.ip(), peer_trusted, req.headers(), &snap.trusted, snap.config.listen.client_ip_header.as_ref());
    let net = match (&conn.net, &snap.intel) {
        (Some(n), _) if client == conn.source.ip() => Cow::Borrowed(n),
        (_, Some(intel)) => Cow::Owned(intel.lookup(client)),
        _ => Cow::Borrowed(&*UNKNOWN_NET),
    };
    Ok(Context {
        conn,
        snap,
        shared,
        client,
        net,
        fingerprint: request_fingerprint(req, conn, snap, peer_trusted),
        host,
        peer_trusted,
        now: shared.clock.now(),
        unread_body,
        identity: None,
        security_started: Instant::now(),
    })
}

static UNKNOWN_NET: std::sync::LazyLock<NetInfo> = std::sync::LazyLock::new(NetInfo::unknown);

/// Finds the session the request carries, once, for every later phase.
///
/// Refused before anything else: a method that is not an upper-case token, a path
/// encoded beyond any reading, a credential with two readings. The upstream never sees
/// such a request, so it never acts on a reading tether did not judge.
fn identify(req: &Request<Incoming>, cx: &mut Context<'_>) -> Result<(), &'static str> {
    method::judged(req.method(), req.headers(), req.uri().query()).map_err(|_| "method_not_upper_case")?;
    path::normalise(req.uri().path()).map_err(|_| "path_encoded_too_deep")?;
    cx.identity = cx.snap.detector.identify(&cx.detector_request(req)).map_err(Ambiguity::as_str)?;
    if cx.identity.as_ref().is_some_and(|i| i.unrecognised) {
        let mut e = Event::new(EventKind::UnrecognisedCredential, cx.snap.detector.mode());
        e.ip = Some(cx.client);
        e.method = Some(req.method().to_string());
        e.path = Some(req.uri().path().to_owned());
        cx.shared.audit.record(e);
    }
    Ok(())
}

/// 400 for a request with two readings, audited with the reason.
fn refuse(req: &Request<Incoming>, cx: &Context<'_>, reason: &'static str) -> Response<ProxyBody> {
    let mut e = Event::new(EventKind::RequestRefused, cx.snap.detector.mode());
    e.ip = Some(cx.client);
    e.net = Some(cx.net.clone().into_owned());
    e.method = Some(req.method().to_string());
    e.path = Some(req.uri().path().to_owned());
    e.detail = Some(reason);
    cx.shared.audit.record(e);
    answer::close_if(answer::json(StatusCode::BAD_REQUEST, format!("{{\"error\":\"ambiguous_request\",\"reason\":\"{reason}\"}}\n")), cx.unread_body)
}

/// What became of a request the detector was asked to judge.
pub(super) enum Judged {
    Decided(Decision),
    /// The store failed: let through unjudged, counted.
    Unjudged,
    /// The shared store could not be read and `store.on_error = "refuse"`: counted.
    Refused,
}

/// Judges an identified request under `snap` and records the decision; the one path for
/// live requests and re-judged tunnels alike. A store failure is counted and the request
/// let through unjudged: judged without history it would be a "new context", and tether
/// must never turn "unknown" into "suspicious" for every user at once (the metric
/// alerts). A shared store that cannot be read is the exception the operator chose
/// (`store.on_error`): judged by network-only rules, or refused; counted either way.
pub(super) async fn judge_identified(
    shared: &Shared,
    snap: &Snapshot,
    req: &DetectorRequest<'_>,
    identity: &Identity,
    started: Instant,
) -> Judged {
    let mut decision = match snap.detector.judge(&shared.store, req, identity).await {
        Ok(d) => d,
        // The detector returns this only when the operator chose to refuse.
        Err(StoreError::Degraded) => {
            shared.metrics.store_degraded.inc();
            return Judged::Refused;
        }
        Err(_) => {
            shared.metrics.store_errors.inc();
            return Judged::Unjudged;
        }
    };
    if decision.degraded {
        shared.metrics.store_degraded.inc();
    }
    decision.reference = (decision.verdict.action != Action::Allow).then(step_up::reference);
    record::decision(shared, snap, &decision, req, started.elapsed());
    Judged::Decided(decision)
}

/// Acts on a decision tether may answer itself (its device proven): an identification,
/// a challenge or a block; the upstream when the identification is not needed after all
/// and the request is allowed.
async fn answer_or_forward(req: Request<Incoming>, cx: &Context<'_>, decision: Option<Decision>) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(d) = &decision else {
        return forward(req, cx, None).await;
    };
    // A new browser session whose owner nobody has named goes to the IdP first, to be
    // identified silently; it comes back to this same request, judged afresh.
    if d.identify {
        if let Some(resp) = Box::pin(step_up::identify(&req, d, cx)).await {
            return Ok(answer::close_if(resp, cx.unread_body));
        }
    }
    match d.verdict.effective() {
        Action::Allow => forward(req, cx, decision).await,
        Action::StepUp => Ok(answer::close_if(Box::pin(step_up::challenge(&req, d, cx)).await, cx.unread_body)),
        Action::Block | Action::Revoke => Ok(answer::close_if(step_up::blocked(&req, d), cx.unread_body)),
    }
}

/// Sends the request upstream and relays the answer; after the upstream's `101`, joins
/// the two sides into a tunnel.
async fn forward(mut req: Request<Incoming>, cx: &Context<'_>, decision: Option<Decision>) -> Result<Response<ProxyBody>, ProxyError> {
    let (snap, limits) = (cx.snap, &cx.snap.config.limits);
    let upgrade = upgrade_requested(&req, cx.conn.protocol);
    let client_upgrade: Option<OnUpgrade> = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    // A tunnel outlives this request; it keeps what is needed to judge its session
    // again when the policy changes. Boxed: most requests are no upgrade, and this
    // future is copied whole at each level of the request's futures.
    let recheck = match (&upgrade, &decision) {
        (Some(_), Some(d)) => Some(Box::new(Recheck::new(&req, cx, d.session))),
        _ => None,
    };

    let offer = dbsc::eligible(&req, cx);
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    hygiene::strip_hop_by_hop(headers);
    hygiene::strip_client_claims(headers);
    hygiene::join_cookies(headers);
    dbsc::strip(headers, cx);
    lineage::strip(headers, snap.detector.lineage());
    hygiene::mark_sensitive(headers);
    // What only tether's own hops may say, and the secret that proves one, never reach
    // the console.
    let listen = &snap.config.listen;
    for name in [listen.ja4_header.as_ref(), listen.client_ip_header.as_ref(), listen.proxy_secret.as_ref().map(|p| &p.header)].into_iter().flatten() {
        headers.remove(name);
    }
    hygiene::set_forwarded(headers, cx.client, cx.conn.tls.is_some(), cx.host.as_ref());
    if let Some(protocol) = &upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }
    let upstream_host = match (&cx.host, snap.config.upstream.preserve_host) {
        (Some(h), true) => h.clone(),
        // invariant: an Authority is valid header text.
        _ => HeaderValue::from_str(snap.upstream.authority().as_str()).map_err(|_| ProxyError::BadRequest(BadRequest::Target))?,
    };
    headers.insert(HOST, upstream_host);
    if snap.config.upstream.forward_fingerprint {
        set_fingerprint_headers(headers, cx.fingerprint.as_ref(), cx.client);
    }
    if let (true, Some(d)) = (snap.config.upstream.forward_decision, &decision) {
        record::decision_headers(headers, d);
    }
    parts.uri = snap.upstream.target(parts.uri.path_and_query())?;
    parts.version = Version::HTTP_11;
    let body = Guarded::new(body, limits.body_idle_timeout, limits.max_body_bytes);
    let sent = Instant::now();
    let mut resp = snap.upstream.send(Request::from_parts(parts, body)).await?;
    record::upstream_response(cx.shared, sent);

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
        learn_owner_from_response(&mut parts.headers, cx, decision.as_ref()).await;
        parts.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol);
        cx.shared.metrics.upgrades.inc();
        tokio::spawn(tunnel::run(client_upgrade, upstream_upgrade, cx.shared.clone(), recheck.map(|r| *r)));
        return Ok(Response::from_parts(parts, ProxyBody::empty()));
    }

    let (mut parts, body) = resp.into_parts();
    hygiene::strip_hop_by_hop(&mut parts.headers);
    learn_owner_from_response(&mut parts.headers, cx, decision.as_ref()).await;
    dbsc::offer(&mut parts.headers, cx, decision.as_ref(), offer);
    if snap.config.upstream.harden_session_cookies && cx.conn.tls.is_some() {
        hygiene::harden_session_cookies(&mut parts.headers, &snap.config.session.cookies);
    }
    let body = Guarded::new(body, limits.body_idle_timeout, u64::MAX);
    Ok(Response::from_parts(parts, ProxyBody::Upstream { body }))
}

/// `upstream.user_response_header`: the console names the session's user. The header is
/// always removed before the client sees it; its user becomes the session's owner when
/// it has none (or only a silently learned one), and a different name for a session that
/// has a strong owner is refused. Either is audited. Only a single, plain value is
/// believed; a response naming two users names none.
async fn learn_owner_from_response(headers: &mut http::HeaderMap, cx: &Context<'_>, decision: Option<&Decision>) {
    let Some(name) = &cx.snap.config.upstream.user_response_header else { return };
    let named = {
        let mut values = headers.get_all(name).iter();
        let first = values.next().and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty() && v.len() <= 256);
        let second = values.next();
        first.filter(|_| second.is_none()).map(Arc::<str>::from)
    };
    headers.remove(name);
    let (Some(user), Some(d)) = (named, decision) else { return };
    if d.degraded || d.user.as_deref() == Some(&*user) || cx.identity.as_ref().is_some_and(|i| i.unrecognised) {
        return;
    }
    Box::pin(learn_owner(cx, d, user)).await;
}

/// The store's side of [`learn_owner_from_response`], for the rare response that names
/// a new owner.
async fn learn_owner(cx: &Context<'_>, d: &Decision, user: Arc<str>) {
    let shared = cx.shared;
    match cx.snap.detector.learn_owner(&shared.store, d.session, &user, OwnerSource::ResponseHeader, cx.now).await {
        Ok(change) => {
            let mut e = Event::new(EventKind::OwnerLearned, cx.snap.detector.mode());
            e.session = Some(d.session);
            e.user = d.user.clone();
            e.ip = Some(cx.client);
            own::audit_owner_change(shared, e, &change, &user, OwnerSource::ResponseHeader);
        }
        Err(_) => shared.metrics.store_errors.inc(),
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

/// The JA4 a trusted balancer or CDN passed in `listen.ja4_header` (its stable form is
/// the same value, since the client's hello itself is not visible), else the
/// connection's own over TLS. From any other peer the header is ignored.
fn request_fingerprint(req: &Request<Incoming>, conn: &ConnFacts, snap: &Snapshot, peer_trusted: bool) -> Option<Fingerprint> {
    let passed = snap.config.listen.ja4_header.as_ref().filter(|_| peer_trusted).and_then(|name| {
        let mut values = req.headers().get_all(name).iter();
        let (first, second) = (values.next(), values.next());
        // Two values are two claims: believe neither.
        first.filter(|_| second.is_none()).and_then(|v| Ja4::parse(v.as_bytes()))
    });
    if let Some(ja4) = passed {
        return Some(Fingerprint { ja4, ja4_stable: ja4 });
    }
    conn.tls.as_ref().and_then(|t| t.fingerprint)
}

/// Whether the request carries `listen.proxy_secret_header` with the configured secret
/// (exactly once); true when no secret is configured.
fn proxy_secret_ok(req: &Request<Incoming>, snap: &Snapshot) -> bool {
    let Some(p) = &snap.config.listen.proxy_secret else { return true };
    let mut values = req.headers().get_all(&p.header).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => bool::from(subtle::ConstantTimeEq::ct_eq(v.as_bytes(), p.secret.as_slice())),
        _ => false,
    }
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

/// The sizes of the request's futures. Each level of the request path holds the next
/// level's future, and each is copied whole when it is made (and hyper copies the
/// outermost into its dispatcher), so these bytes are `memmove`d on every request; the
/// rare branches are boxed to keep them small. Run by hand, in release:
/// `cargo test --release --lib future_sizes -- --ignored --nocapture`.
#[cfg(test)]
mod future_sizes {
    use std::future::Future;

    use super::*;
    use crate::upstream::{RequestBody, UpstreamClient};

    type Respond = (Request<Incoming>, &'static ConnFacts, &'static Snapshot, &'static Arc<Shared>, &'static mut access::Outcome);

    fn size<A, F: Future>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn handle_((r, c, s): (Request<Incoming>, Arc<ConnFacts>, Arc<Shared>)) -> impl Future {
        handle(r, c, s)
    }
    fn respond_((r, c, s, sh, o): Respond) -> impl Future {
        respond(r, c, s, sh, false, o)
    }
    fn judge_((r, c, i): (&'static DetectorRequest<'static>, &'static Context<'static>, &'static Identity)) -> impl Future {
        judge_identified(c.shared, c.snap, r, i, c.security_started)
    }
    fn forward_((r, c, d): (Request<Incoming>, &'static Context<'static>, Option<Decision>)) -> impl Future {
        forward(r, c, d)
    }
    fn send_((u, r): (&'static UpstreamClient, Request<RequestBody>)) -> impl Future {
        u.send(r)
    }

    #[test]
    #[ignore]
    fn future_sizes() {
        println!(
            "bytes: handle {}, respond {}, judge {}, forward {}, upstream send {}",
            size(handle_),
            size(respond_),
            size(judge_),
            size(forward_),
            size(send_)
        );
    }
}

//! The load: workers playing the population at home, stolen cookies replayed from
//! anonymizers, and floods of fresh cookies and step-up challenges from many addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::setup::Files;
use crate::{Rng, Settings, FRESH_ROUTE, MAX_REQUESTS_PER_WORKER, QUOTED_ERRORS, REQUEST_TIMEOUT, UA};

/// What the workers share: the population, its coverage and the TLS client configs.
pub(crate) struct Shared {
    pub(crate) sessions: u64,
    /// The busiest 1 %: used every few seconds, so they live past their absolute lifetime.
    pub(crate) hot: u64,
    /// The next session of the walk over the whole population.
    pub(crate) walk: AtomicU64,
    /// One bit per population session that was sent at least once.
    pub(crate) seen: Vec<AtomicU64>,
    pub(crate) fresh: AtomicU64,
    pub(crate) hash_key: tether::session::HashKey,
    pub(crate) h1: TlsConnector,
    pub(crate) h2: TlsConnector,
    pub(crate) host: String,
}

impl Shared {
    pub(crate) fn new(s: &Settings, f: &Files) -> Result<Shared, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(f.cert_der.clone()).map_err(|e| format!("root: {e}"))?;
        let config = |alpn: &[u8]| -> Result<TlsConnector, String> {
            let mut cfg = rustls::ClientConfig::builder_with_provider(tether::net::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("tls: {e}"))?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            cfg.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsConnector::from(Arc::new(cfg)))
        };
        Ok(Shared {
            sessions: s.sessions,
            hot: (s.sessions / 100).max(2),
            walk: AtomicU64::new(0),
            seen: (0..s.sessions.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            fresh: AtomicU64::new(0),
            hash_key: tether::session::HashKey::new(f.hash_key, None),
            h1: config(b"http/1.1")?,
            h2: config(b"h2")?,
            host: String::from("localhost"),
        })
    }

    pub(crate) fn population_cookie(&self, i: u64) -> String {
        self.seen[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Relaxed);
        format!("soak-p{i:08}")
    }

    pub(crate) fn fresh_cookie(&self, rng: &mut Rng) -> String {
        self.fresh.fetch_add(1, Ordering::Relaxed);
        format!("soak-f{:016x}{:016x}", rng.next(), rng.next())
    }

    pub(crate) fn distinct(&self) -> u64 {
        self.seen.iter().map(|w| u64::from(w.load(Ordering::Relaxed).count_ones())).sum::<u64>() + self.fresh.load(Ordering::Relaxed)
    }

    /// A population session: the hot set, anyone at random, or the next of the walk
    /// (which brings every session back, most of them after their idle lifetime).
    pub(crate) fn pick(&self, rng: &mut Rng) -> u64 {
        match rng.below(100) {
            0..30 => rng.below(self.hot),
            30..50 => rng.below(self.sessions),
            _ => self.walk.fetch_add(1, Ordering::Relaxed) % self.sessions,
        }
    }
}

/// Who a worker plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The population at home (127.0.0.0/24), over HTTP/1.1 or HTTP/2. Each session
    /// keeps one protocol (the JA4 names the ALPN): even sessions h1, odd ones h2.
    Home { h2: bool },
    /// Stolen cookies and fresh ones replayed from VPN and hosting networks.
    Anonymizer,
    /// Floods from many addresses: fresh cookies, then step-up challenges, in phases.
    Flood,
}

impl Role {
    pub(crate) fn of(i: u64) -> Role {
        match i % 20 {
            0..10 => Role::Home { h2: false },
            10..13 => Role::Home { h2: true },
            13..16 => Role::Anonymizer,
            _ => Role::Flood,
        }
    }

    /// A new source address for the next connection.
    pub(crate) fn source(self, rng: &mut Rng) -> IpAddr {
        let host = 1 + rng.below(254) as u8;
        let ip = match self {
            Role::Home { .. } => Ipv4Addr::new(127, 0, 0, host),
            // Datacamp (hosting), a VPN, M247 (VPN): see GeoLite-fixtures/source.toml.
            Role::Anonymizer => Ipv4Addr::new(127, 0, [1, 2, 7][rng.below(3) as usize], host),
            // Addresses the fixtures do not know, spread wide so the per-address
            // challenge rate lets the flood reach the global rate and the table's bound.
            Role::Flood => Ipv4Addr::new(127, 100 + rng.below(50) as u8, rng.below(256) as u8, host),
        };
        IpAddr::V4(ip)
    }

    /// Requests per connection before reconnecting (a new handshake, a new address).
    pub(crate) fn per_connection(self) -> u64 {
        match self {
            Role::Home { .. } => 1_000,
            Role::Anonymizer => 50,
            Role::Flood => 25,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Normal,
    FreshFlood,
    StepUpFlood,
}

/// The flood phases repeat in cycles of up to 30 s: half normal, then fresh cookies,
/// then step-up challenges.
pub(crate) fn phase(elapsed: Duration, secs: u64) -> Phase {
    let cycle = (secs / 4).clamp(8, 30) as f64;
    let at = elapsed.as_secs_f64() % cycle / cycle;
    if at < 0.5 {
        Phase::Normal
    } else if at < 0.73 {
        Phase::FreshFlood
    } else {
        Phase::StepUpFlood
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An API call: JSON, no redirects possible.
    Api,
    /// A small form POST.
    Form,
    /// A top-level browser navigation (`Accept: text/html`) to `path`.
    Navigate(&'static str),
}

pub(crate) fn request(shared: &Shared, cookie: &str, kind: Kind, rng: &mut Rng) -> Request<Full<Bytes>> {
    let b = Request::builder().header("host", &shared.host).header("user-agent", UA).header("cookie", format!("session={cookie}"));
    let built = match kind {
        Kind::Api => b.uri(format!("/app/items/{}", rng.below(1000))).header("accept", "application/json").body(Full::new(Bytes::new())),
        Kind::Form => b
            .method("POST")
            .uri("/app/form")
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(vec![b'a'; 256]))),
        Kind::Navigate(path) => {
            // Return URLs up to 2 KiB: past the challenge table's bound on stored ones.
            let pad = "x".repeat(rng.below(2048) as usize);
            b.uri(format!("{path}/{}?r={pad}", rng.below(1000))).header("accept", "text/html,application/xhtml+xml").body(Full::new(Bytes::new()))
        }
    };
    // invariant: every header value above is ASCII built here.
    built.expect("valid request")
}

/// What one request is, by role and phase.
pub(crate) fn next_request(role: Role, ph: Phase, shared: &Shared, rng: &mut Rng) -> (String, Kind) {
    let population = |rng: &mut Rng, h2: bool| {
        let mut i = shared.pick(rng);
        i = (i & !1) | u64::from(h2);
        if i >= shared.sessions {
            i -= 2;
        }
        shared.population_cookie(i)
    };
    let normal_kind = |rng: &mut Rng| match rng.below(100) {
        0..4 => Kind::Navigate(FRESH_ROUTE),
        4..6 => Kind::Form,
        _ => Kind::Api,
    };
    match (role, ph) {
        (Role::Home { h2 }, _) => (population(rng, h2), normal_kind(rng)),
        (Role::Anonymizer, _) => {
            let cookie = if rng.percent(50) { population(rng, false) } else { shared.fresh_cookie(rng) };
            let kind = if rng.percent(50) { Kind::Navigate("/app/dashboard") } else { Kind::Api };
            (cookie, kind)
        }
        (Role::Flood, Phase::Normal) => {
            let cookie = if rng.percent(20) { shared.fresh_cookie(rng) } else { population(rng, false) };
            (cookie, normal_kind(rng))
        }
        (Role::Flood, Phase::FreshFlood) => (shared.fresh_cookie(rng), Kind::Api),
        (Role::Flood, Phase::StepUpFlood) => {
            let cookie = if rng.percent(70) { shared.fresh_cookie(rng) } else { population(rng, false) };
            (cookie, Kind::Navigate(FRESH_ROUTE))
        }
    }
}

pub(crate) enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub(crate) async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<StatusCode, String> {
        let resp = match self {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| format!("h1 not ready: {e}"))?;
                s.send_request(req).await.map_err(|e| format!("h1 request: {e}"))?
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| format!("h2 not ready: {e}"))?;
                s.send_request(req).await.map_err(|e| format!("h2 request: {e}"))?
            }
        };
        let status = resp.status();
        resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
        Ok(status)
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

pub(crate) async fn connect(shared: &Shared, proxy: SocketAddr, src: IpAddr, h2: bool) -> Result<Sender, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket.bind(SocketAddr::new(src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
    let tcp: TcpStream = socket.connect(proxy).await.map_err(|e| format!("connect from {src}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let connector = if h2 { &shared.h2 } else { &shared.h1 };
    // invariant: a fixed, valid DNS name.
    let name = ServerName::try_from("localhost").expect("valid name");
    let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS from {src}: {e}"))?;
    let io = TokioIo::new(tls);
    if h2 {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await.map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H2(send))
    } else {
        let (send, conn) = http1::handshake(io).await.map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H1(send))
    }
}

/// Counts kept by each worker and merged at the end.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) errors: u64,
    pub(crate) quoted: Vec<String>,
    pub(crate) connections: u64,
}

impl Tally {
    pub(crate) fn error(&mut self, e: String) {
        self.errors += 1;
        if self.quoted.len() < QUOTED_ERRORS {
            self.quoted.push(e);
        }
    }

    pub(crate) fn merge(&mut self, o: Tally) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.connections += o.connections;
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for q in o.quoted {
            if self.quoted.len() < QUOTED_ERRORS {
                self.quoted.push(q);
            }
        }
    }
}

pub(crate) async fn worker(i: u64, proxy: SocketAddr, shared: Arc<Shared>, start: Instant, deadline: Instant) -> Tally {
    let role = Role::of(i);
    let h2 = matches!(role, Role::Home { h2: true });
    let mut rng = Rng::seeded();
    let mut tally = Tally::default();
    let mut conn: Option<(Sender, u64)> = None;
    let secs = deadline.saturating_duration_since(start).as_secs();
    while Instant::now() < deadline && tally.requests < MAX_REQUESTS_PER_WORKER {
        let (mut sender, used) = match conn.take() {
            Some((s, used)) if used < role.per_connection() && !s.is_closed() => (s, used),
            _ => {
                let src = role.source(&mut rng);
                match tokio::time::timeout(REQUEST_TIMEOUT, connect(&shared, proxy, src, h2)).await {
                    Ok(Ok(s)) => {
                        tally.connections += 1;
                        (s, 0)
                    }
                    Ok(Err(e)) => {
                        tally.requests += 1;
                        tally.error(e);
                        continue;
                    }
                    Err(_) => {
                        tally.requests += 1;
                        tally.error(format!("connect/handshake from {src}: no answer in {REQUEST_TIMEOUT:?}"));
                        continue;
                    }
                }
            }
        };
        let ph = phase(start.elapsed(), secs);
        let (cookie, kind) = next_request(role, ph, &shared, &mut rng);
        let req = request(&shared, &cookie, kind, &mut rng);
        tally.requests += 1;
        match tokio::time::timeout(REQUEST_TIMEOUT, sender.send(req)).await {
            Ok(Ok(status)) => {
                *tally.statuses.entry(status.as_u16()).or_default() += 1;
                conn = Some((sender, used + 1));
            }
            Ok(Err(e)) => tally.error(format!("{role:?}: {e}")),
            Err(_) => tally.error(format!("{role:?}: no answer in {REQUEST_TIMEOUT:?}")),
        }
    }
    tally
}

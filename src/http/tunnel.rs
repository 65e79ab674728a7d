//! Tunnels after an upgrade: the two upgraded halves joined, and a tunnel that carries a
//! session judged again after every reload, through the same judge-and-record path as a
//! live request, and closed if the new policy would not allow it. Every tunnel has an
//! idle lifetime (no byte either way) and an absolute one; a tunnel carrying a session
//! closes at once when that session is revoked, wherever the revocation came from.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::service::{judge_identified, Context as RequestContext, Judged};
use crate::detector::Request as DetectorRequest;
use crate::fingerprint::Fingerprint;
use crate::intel::NetInfo;
use crate::policy::Action;
use crate::state::Shared;

/// What a tunnel keeps to judge its session again after a reload: the request as the
/// detector saw it, owned, since the request itself is gone by then.
pub(super) struct Recheck {
    shared: Arc<Shared>,
    ip: IpAddr,
    net: NetInfo,
    method: http::Method,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    fingerprint: Option<Fingerprint>,
    peer_trusted: bool,
    session: Option<crate::session::SessionKey>,
}

impl Recheck {
    pub fn new(req: &Request<Incoming>, cx: &RequestContext<'_>, session: crate::session::SessionKey) -> Recheck {
        Recheck {
            shared: cx.shared.clone(),
            ip: cx.client,
            net: cx.net.clone().into_owned(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: req.headers().clone(),
            fingerprint: cx.fingerprint,
            peer_trusted: cx.peer_trusted,
            session: Some(session),
        }
    }

    fn session(&self) -> Option<crate::session::SessionKey> {
        self.session
    }

    /// Whether the session may keep its tunnel under the policy now in force. It is
    /// identified again because the new snapshot may carry other keys (hash key, JWT key
    /// set), and judged and recorded like any request.
    async fn still_allowed(&self) -> bool {
        let started = Instant::now();
        let snap = self.shared.snapshot();
        // The new snapshot's databases and lists decide what the address is now.
        let net = snap.intel.as_ref().map_or_else(|| self.net.clone(), |i| i.lookup(self.ip));
        let req = DetectorRequest {
            now: self.shared.clock.now(),
            ip: self.ip,
            net: &net,
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            fingerprint: self.fingerprint.as_ref(),
            peer_trusted: self.peer_trusted,
            asserted_user: None,
            // A tunnel re-judged mid-stream is never redirected.
            identify: false,
            recheck: true,
        };
        let identity = match snap.detector.identify(&req) {
            Ok(Some(identity)) => identity.without_lineage(),
            Ok(None) => return true,
            // The new configuration reads the credential two ways: not allowed.
            Err(_) => return false,
        };
        match judge_identified(&self.shared, &snap, &req, &identity, started).await {
            Judged::Decided(d) => d.verdict.effective() == Action::Allow,
            // A store failure is not a reason to cut a working session.
            Judged::Unjudged | Judged::Refused => true,
        }
    }
}

/// Why tether closed a tunnel (a label of `tether_tunnels_closed_total`).
#[derive(Debug, Clone, Copy)]
enum Closed {
    Idle,
    Lifetime,
    Revoked,
    Policy,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::Lifetime => "lifetime",
            Closed::Revoked => "revoked",
            Closed::Policy => "policy",
        }
    }
}

/// Joins the two upgraded halves once both sides have switched, until one side closes,
/// the tunnel idles or outlives its lifetime, its session is revoked, or a reload's
/// policy no longer allows it.
pub(super) async fn run(client: OnUpgrade, upstream: OnUpgrade, shared: Arc<Shared>, recheck: Option<Recheck>) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let limits = shared.snapshot().config.limits.clone();
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Watched { io: TokioIo::new(client), started, last: last.clone() };
    let mut upstream = Watched { io: TokioIo::new(upstream), started, last: last.clone() };
    let registration = recheck.as_ref().and_then(Recheck::session).map(|k| shared.tunnels.register(k));
    let revoked = async {
        match &registration {
            Some(r) => r.closed().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(revoked);
    let mut reloads = shared.reloaded.subscribe();
    let idle = idle_for(started, &last, limits.tunnel_idle_timeout);
    tokio::pin!(idle);
    let lifetime = tokio::time::sleep_until(started + limits.tunnel_max_lifetime);
    tokio::pin!(lifetime);
    shared.metrics.tunnels_open.inc();
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let closed = loop {
        tokio::select! {
            _ = &mut copy => break None,
            _ = &mut idle => break Some(Closed::Idle),
            _ = &mut lifetime => break Some(Closed::Lifetime),
            _ = &mut revoked => break Some(Closed::Revoked),
            changed = reloads.changed() => {
                let Some(recheck) = &recheck else {
                    if changed.is_err() {
                        break None;
                    }
                    continue;
                };
                if changed.is_err() || !recheck.still_allowed().await {
                    break Some(Closed::Policy);
                }
            }
        }
    };
    shared.metrics.tunnels_open.dec();
    if let Some(reason) = closed {
        shared.metrics.tunnels_closed.with_label_values(&[reason.as_str()]).inc();
        tracing::info!(reason = reason.as_str(), "tunnel closed by tether");
    }
}

/// Completes once no byte has crossed the tunnel for `idle`.
async fn idle_for(started: Instant, last: &AtomicU64, idle: Duration) {
    loop {
        let deadline = started + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// One side of a tunnel, noting when a byte last crossed it.
struct Watched<T> {
    io: T,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Watched<T> {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

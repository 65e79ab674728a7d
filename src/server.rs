//! The accept loop and the life of one client connection: connection cap, PROXY header,
//! ClientHello and fingerprint, TLS handshake, then [`http::serve`]. It sits above both
//! `net` (the pieces it runs) and `http` (where each connection ends up).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsAcceptor;

use crate::http;
use crate::net::client_hello::{self, HelloRead};
use crate::net::peers::{PeerCap, PeerPermit};
use crate::net::prefixed::PrefixedIo;
use crate::net::proxy_protocol::{self, Parsed};
use crate::net::{ConnFacts, Protocol, TlsFacts};
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// Pause after a failed accept (EMFILE and friends) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Room for a PROXY v2 header with TLVs; v1 needs 107 bytes.
const PROXY_READ_CHUNK: usize = 512;

/// Accepts until `shutdown` flips, then waits for open connections to finish (each is
/// told to close once its in-flight requests are answered) for up to the drain timeout.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let max = shared.snapshot().config.limits.max_connections;
    let cap = Arc::new(Semaphore::new(max));
    let per_peer = PeerCap::new(shared.snapshot().config.limits.max_connections_per_peer);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.stopped() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            shared.metrics.connections_rejected.inc();
            drop(tcp);
            continue;
        };
        // A balancer carries everyone's connections: only other peers are capped.
        let peer_permit = if shared.snapshot().trusted.contains(peer.ip()) {
            None
        } else {
            match per_peer.admit(peer.ip()) {
                Some(p) => Some(p),
                None => {
                    shared.metrics.connections_closed.with_label_values(&["peer_cap"]).inc();
                    drop(tcp);
                    continue;
                }
            }
        };
        shared.metrics.connections_accepted.inc();
        let _ = tcp.set_nodelay(true);
        tokio::spawn(handle(tcp, peer, shared.clone(), shutdown.clone(), (permit, peer_permit)));
    }
    drop(listener);
    // Every open connection holds a permit, so holding them all means all have ended.
    let drain = shared.snapshot().config.limits.drain_timeout;
    // invariant: max_connections is validated to at most 1,000,000, which fits in u32.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if timeout(drain, cap.acquire_many(all)).await.is_err() {
        tracing::warn!(?drain, "drain timeout reached; cutting remaining connections");
    }
}

/// Decrements the open-connection gauge however the connection ends.
struct OpenGuard<'a>(&'a prometheus::IntGauge);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn handle(
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    _permits: (OwnedSemaphorePermit, Option<PeerPermit>),
) {
    let metrics = &shared.metrics;
    metrics.connections_open.inc();
    let _open = OpenGuard(&metrics.connections_open);
    let snap = shared.snapshot();
    let limits = &snap.config.limits;
    let mut raw = BytesMut::new();

    let source = if snap.config.listen.proxy_protocol && snap.trusted.contains(peer.ip()) {
        let outcome = timeout(limits.proxy_protocol_timeout, read_proxy_header(&mut tcp, &mut raw)).await;
        let (label, source) = match outcome {
            Err(_) => ("timeout", None),
            Ok(Err(ProxyRead::Closed)) => ("truncated", None),
            Ok(Err(ProxyRead::Invalid)) => ("invalid", None),
            Ok(Ok(Some(addr))) => ("ok", Some(addr)),
            Ok(Ok(None)) => ("local", Some(peer)),
        };
        metrics.proxy_protocol.with_label_values(&[label]).inc();
        match source {
            Some(addr) => addr,
            None => return,
        }
    } else {
        peer
    };

    // Once per connection: every request on it shares the answer.
    let net = snap.intel.as_ref().map(|intel| {
        let info = intel.lookup(source.ip());
        metrics.intel_lookups.with_label_values(&[info.category.as_str()]).inc();
        info
    });

    let Some(tls_config) = snap.tls.clone() else {
        let facts = Arc::new(ConnFacts { peer, source, protocol: Protocol::Http1, net, tls: None });
        let io = PrefixedIo::new(raw.freeze(), tcp);
        http::serve(io, facts, shared.clone(), shutdown).await;
        return;
    };

    let hello = match timeout(limits.client_hello_timeout, client_hello::read(&mut tcp, &mut raw)).await {
        Ok(read) => read,
        Err(_) => {
            metrics.hello(crate::metrics::HelloResult::Timeout);
            return;
        }
    };
    let result = hello.result();
    metrics.hello(result);
    let fingerprint = match hello {
        HelloRead::Fingerprinted(fp) => Some(fp),
        HelloRead::Malformed => None,
        HelloRead::NotTls | HelloRead::TooLarge | HelloRead::Truncated => return,
    };

    let started = Instant::now();
    let accept = TlsAcceptor::from(tls_config).accept(PrefixedIo::new(raw.freeze(), tcp));
    let stream = match timeout(limits.tls_handshake_timeout, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            metrics.tls_handshakes.with_label_values(&["error"]).inc();
            return;
        }
        Err(_) => {
            metrics.tls_handshakes.with_label_values(&["timeout"]).inc();
            return;
        }
    };
    metrics.tls_handshakes.with_label_values(&["ok"]).inc();
    metrics.tls_handshake_seconds.observe(started.elapsed().as_secs_f64());
    let (_, conn) = stream.get_ref();
    let protocol = match conn.alpn_protocol() {
        Some(crate::net::tls::ALPN_H2) => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let sni = conn.server_name().map(Box::from);
    let facts = Arc::new(ConnFacts { peer, source, protocol, net, tls: Some(TlsFacts { sni, fingerprint, hello: result }) });
    http::serve(stream, facts, shared.clone(), shutdown).await;
}

enum ProxyRead {
    Closed,
    Invalid,
}

/// Reads exactly through the PROXY header; anything after it stays in `raw`.
async fn read_proxy_header(tcp: &mut TcpStream, raw: &mut BytesMut) -> Result<Option<SocketAddr>, ProxyRead> {
    let mut chunk = [0u8; PROXY_READ_CHUNK];
    loop {
        match proxy_protocol::parse(raw) {
            Ok(Parsed::Done { consumed, source }) => {
                let _ = raw.split_to(consumed);
                return Ok(source);
            }
            Ok(Parsed::NeedMore) => {}
            Err(_) => return Err(ProxyRead::Invalid),
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(ProxyRead::Closed),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

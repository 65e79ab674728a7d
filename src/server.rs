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

/// Serves the listener until `shutdown` flips, then waits for open connections to finish
/// (each is told to close once its in-flight requests are answered) for up to the drain
/// timeout.
///
/// Connections are served by `listen.workers` threads, each running a single-threaded
/// runtime that polls its own handle on the one listening socket: a connection, its
/// requests, their upstream connection (see [`crate::upstream::enter_worker`]) and their
/// bodies stay on the thread that accepted it, so serving a request never wakes another
/// thread. Under load the work-stealing scheduler spent about a tenth of the CPU waking
/// and switching threads to hand requests between tasks. The socket is shared, not
/// duplicated with `SO_REUSEPORT`, so a second process still cannot bind the port.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let snap = shared.snapshot();
    let max = snap.config.limits.max_connections;
    let gate = Arc::new(Gate { cap: Arc::new(Semaphore::new(max)), per_peer: PeerCap::new(snap.config.limits.max_connections_per_peer) });
    let wanted = snap.config.listen.workers;
    drop(snap);
    let (cut, cutting) = crate::shutdown::channel();
    // Each worker holds a sender until its runtime (and every connection on it) is gone.
    let (alive, mut ended) = tokio::sync::mpsc::channel::<()>(1);
    let started = match listener.into_std() {
        Ok(socket) => (0..wanted).filter(|&index| spawn_worker(index, &socket, &shared, &shutdown, &gate, &cutting, &alive)).count(),
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the listening socket to the workers");
            0
        }
    };
    drop(alive);
    if started == 0 {
        tracing::error!("no proxy worker could start; the proxy accepts nothing");
    }
    shutdown.stopped().await;
    // Every open connection holds a permit, so holding them all means all have ended.
    let drain = shared.snapshot().config.limits.drain_timeout;
    // invariant: max_connections is validated to at most 1,000,000, which fits in u32.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if timeout(drain, gate.cap.acquire_many(all)).await.is_err() {
        tracing::warn!(?drain, "drain timeout reached; cutting remaining connections");
    }
    let _ = cut.send(true);
    while ended.recv().await.is_some() {}
}

/// What every worker shares: the connection cap and the per-peer cap.
struct Gate {
    cap: Arc<Semaphore>,
    per_peer: Arc<PeerCap>,
}

/// Starts worker `index` on a thread of its own; false (logged) when it could not start.
fn spawn_worker(
    index: usize,
    socket: &std::net::TcpListener,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
    gate: &Arc<Gate>,
    cutting: &Shutdown,
    alive: &tokio::sync::mpsc::Sender<()>,
) -> bool {
    let socket = match socket.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot share the listening socket with a worker");
            return false;
        }
    };
    let (shared, shutdown, gate, mut cutting, alive) = (shared.clone(), shutdown.clone(), gate.clone(), cutting.clone(), alive.clone());
    let spawned = std::thread::Builder::new().name(format!("tether-worker-{index}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot build a worker runtime");
                return;
            }
        };
        crate::upstream::enter_worker(index);
        runtime.block_on(async {
            match TcpListener::from_std(socket) {
                Ok(listener) => accept(listener, &shared, shutdown, &gate).await,
                Err(e) => tracing::error!(worker = index, error = %e, "cannot poll the listening socket"),
            }
            // Connections on this thread live until the drain is over.
            cutting.stopped().await;
        });
        // Dropping the runtime cuts what is left; only then is the worker counted gone.
        drop(runtime);
        drop(alive);
    });
    if let Err(e) = spawned {
        tracing::error!(worker = index, error = %e, "cannot start a worker thread");
        return false;
    }
    true
}

/// One worker's accept loop, until `shutdown` flips.
async fn accept(listener: TcpListener, shared: &Arc<Shared>, mut shutdown: Shutdown, gate: &Arc<Gate>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.stopped() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            // Another worker took the connection this wake-up announced.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = gate.cap.clone().try_acquire_owned() else {
            shared.metrics.connections_rejected.inc();
            drop(tcp);
            continue;
        };
        // A balancer carries everyone's connections: only other peers are capped.
        let peer_permit = if shared.snapshot().trusted.contains(peer.ip()) {
            None
        } else {
            match gate.per_peer.admit(peer.ip()) {
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

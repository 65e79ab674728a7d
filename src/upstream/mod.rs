//! The pooled HTTP/1.1 client to the upstream (plain or TLS), and the guarded bodies that
//! stream through it. Below `state` (the snapshot holds a built client) and below `http`
//! (which maps [`UpstreamError`] to a status code).

pub mod body;

use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use self::body::{BodyError, Guarded};
use crate::config::{Limits, Upstream as UpstreamConfig};
use crate::net::tls::{self, TlsError};

/// Idle upstream connections are closed after this; below common server keep-alive
/// timeouts (nginx 75 s) so tether never reuses a connection the upstream is closing.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Upstream connections kept per worker, busy or idle; an admin console rarely needs
/// more in parallel, and a request beyond them gets a connection of its own.
const POOL_MAX: usize = 64;

pub type RequestBody = Guarded<Incoming>;

/// A pooled connection's answer; a request it could not write comes back in the error.
type Answer = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>;

/// Why the upstream gave no usable answer (or the request could not be sent to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to the upstream: {0}")]
    Connect(ConnectFailure),
    #[error("the upstream did not answer in time")]
    Timeout,
    #[error("the upstream answered with something unusable")]
    Protocol,
    #[error("request body larger than the configured maximum")]
    BodyTooLarge,
    #[error("request body stalled")]
    BodyIdle,
    #[error("unusable request target")]
    Target,
}

crate::labels::labels! {
    impl Display elsewhere;
    /// Why a connection to the upstream failed, as far as the error chain says: what an
    /// operator reads first in the log line of a 502.
    #[derive(thiserror::Error)]
    pub enum ConnectFailure {
        #[error("connection refused")]
        Refused = "refused",
        #[error("connection reset or aborted")]
        Reset = "reset",
        #[error("host or network unreachable")]
        Unreachable = "unreachable",
        #[error("TLS handshake failed")]
        Tls = "tls",
        #[error("name resolution failed")]
        Dns = "dns",
        #[error("connect failed")]
        Other = "other",
    }
}

thread_local! {
    /// Which pool this thread's requests use: 0 off the proxy workers, else worker + 1.
    static POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as proxy worker `index`, so its requests take upstream
/// connections from a pool of its own. A connection is driven by a task on the runtime
/// that opened it; a request from another worker's thread would wake that thread for
/// every read and write.
pub fn enter_worker(index: usize) {
    POOL.with(|p| p.set(index + 1));
}

/// One open HTTP/1.1 connection to the upstream. It stays in its pool while a request is
/// on it; [`SendRequest::is_ready`] says when it can take the next one.
struct Conn {
    sender: SendRequest<RequestBody>,
    used: Instant,
}

/// The upstream's HTTP/1.1 client: a small pool of connections per worker thread, each
/// driven by a task on that worker. A request takes a ready connection of its own
/// thread's pool (or opens one) and hands the request to it directly: no shared pool,
/// no hashing of pool keys, no cross-thread hand-off.
pub struct UpstreamClient {
    /// One pool for threads outside the workers, then one per worker. Each lock is taken
    /// only by its own thread, for a moment and never across an await.
    pools: Box<[Mutex<Vec<Conn>>]>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    host: Box<str>,
    port: u16,
    authority: Authority,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(cfg: &UpstreamConfig, limits: &Limits, workers: usize) -> Result<Self, TlsError> {
        // invariant: config validation guarantees a scheme and an authority.
        let authority = cfg.url.authority().cloned().expect("validated upstream URL has an authority");
        let https = cfg.url.scheme() == Some(&Scheme::HTTPS);
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let tls = if https {
            let mut config = tls::client_config(cfg.ca_file.as_deref())?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(UpstreamClient {
            pools: (0..=workers).map(|_| Mutex::new(Vec::new())).collect(),
            tls,
            host: host.into(),
            port,
            authority,
            connect_timeout: limits.upstream_connect_timeout,
            response_timeout: limits.upstream_response_timeout,
        })
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The request target sent upstream (origin form: tether names the upstream in the
    /// connection and the `Host` header, not in the request line).
    pub fn target(&self, path: Option<&PathAndQuery>) -> Result<Uri, UpstreamError> {
        Ok(Uri::from(path.cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))))
    }

    /// Sends the request and waits, bounded, for the response head.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.exchange(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(result) => result,
        }
    }

    async fn exchange(&self, req: Request<RequestBody>) -> Result<Response<Incoming>, UpstreamError> {
        // A pooled connection the upstream closed before the request was written gives
        // it back: it is sent once more, on a new connection.
        let req = match self.send_pooled(req) {
            Ok(answer) => match answer.await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(req) => req,
                    None => return Err(classify(e.error())),
                },
            },
            Err(req) => req,
        };
        // Boxed: opening a connection (a TLS handshake among it) is rare, and its state
        // would otherwise be part of, and copied with, every request's future.
        let mut sender = Box::pin(self.connect()).await?;
        let answer = sender.send_request(req);
        self.keep(sender);
        answer.await.map_err(|e| classify(&e))
    }

    /// Hands the request to a ready connection of this thread's pool (the connection
    /// stays pooled), or gives it back when there is none. Closed and long-idle
    /// connections are dropped on the way.
    #[allow(clippy::result_large_err)]
    fn send_pooled(&self, req: Request<RequestBody>) -> Result<impl std::future::Future<Output = Answer>, Request<RequestBody>> {
        let now = Instant::now();
        let mut pool = self.pool().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = |c: &Conn| c.sender.is_closed() || (c.sender.is_ready() && now.duration_since(c.used) > POOL_IDLE);
        pool.retain(|c| !stale(c));
        // The most recently used ready connection: the others may idle out.
        match pool.iter_mut().rev().find(|c| c.sender.is_ready()) {
            Some(conn) => {
                conn.used = now;
                Ok(conn.sender.try_send_request(req))
            }
            None => Err(req),
        }
    }

    fn pool(&self) -> &Mutex<Vec<Conn>> {
        // A worker count lowered by a reload (it takes effect at restart) wraps around.
        &self.pools[POOL.with(|p| p.get()) % self.pools.len()]
    }

    /// Adds a new connection to this thread's pool, unless the pool is full (then the
    /// connection serves its one request and closes).
    fn keep(&self, sender: SendRequest<RequestBody>) {
        let mut pool = self.pool().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(Conn { sender, used: Instant::now() });
        }
    }

    /// Opens a connection (TCP, then TLS for an `https` upstream) and starts the task
    /// that drives it on this thread's runtime.
    async fn connect(&self) -> Result<SendRequest<RequestBody>, UpstreamError> {
        // Resolved apart from connecting, so that a failed lookup is named as one.
        let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((&*self.host, self.port))).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(_)) => return Err(UpstreamError::Connect(ConnectFailure::Dns)),
            Ok(Ok(addrs)) => addrs.collect(),
        };
        if addrs.is_empty() {
            return Err(UpstreamError::Connect(ConnectFailure::Dns));
        }
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&addrs[..])).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => return Err(UpstreamError::Connect(connect_failure(&e))),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = match tokio::time::timeout(self.connect_timeout, connector.connect(name.clone(), tcp)).await {
                    Err(_) => return Err(UpstreamError::Timeout),
                    Ok(Err(e)) => return Err(UpstreamError::Connect(connect_failure(&e))),
                    Ok(Ok(tls)) => tls,
                };
                handshake(tls).await
            }
        }
    }
}

/// Starts HTTP/1.1 on a new connection; the connection's task keeps upgrades (a `101`
/// becomes a tunnel) and ends when the upstream closes or the last sender is gone.
async fn handshake<IO>(io: IO) -> Result<SendRequest<RequestBody>, UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|_| UpstreamError::Connect(ConnectFailure::Other))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// Why a connect failed, as far as the error says.
fn connect_failure(e: &std::io::Error) -> ConnectFailure {
    io_failure(e).unwrap_or(ConnectFailure::Other)
}

/// What an `io::Error` says, looking through the errors it wraps: those are hidden from
/// `source()`, and the TLS connector wraps a rustls error in two of them.
fn io_failure(io: &std::io::Error) -> Option<ConnectFailure> {
    use std::io::ErrorKind;
    let inner = io.get_ref();
    if inner.is_some_and(|i| i.is::<rustls::Error>()) {
        return Some(ConnectFailure::Tls);
    }
    if let Some(why) = inner.and_then(|i| i.downcast_ref::<std::io::Error>()).and_then(io_failure) {
        return Some(why);
    }
    match io.kind() {
        ErrorKind::ConnectionRefused => Some(ConnectFailure::Refused),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe => {
            Some(ConnectFailure::Reset)
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable | ErrorKind::AddrNotAvailable => Some(ConnectFailure::Unreachable),
        _ => None,
    }
}

/// Turns an exchange's error into the proxy's view: was it the request body, a timeout,
/// or the upstream's answer? (Connect failures are classified where they happen.)
fn classify(e: &hyper::Error) -> UpstreamError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(body) = s.downcast_ref::<BodyError>() {
            return match body {
                BodyError::TooLarge => UpstreamError::BodyTooLarge,
                BodyError::Idle => UpstreamError::BodyIdle,
                BodyError::Stream(_) => UpstreamError::Protocol,
            };
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return UpstreamError::Timeout;
            }
        }
        source = s.source();
    }
    UpstreamError::Protocol
}

#[cfg(test)]
mod connect_failure_tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn wrapped_errors_are_looked_through() {
        let tls = Error::other(Error::new(ErrorKind::InvalidData, rustls::Error::DecryptError));
        assert_eq!(io_failure(&tls), Some(ConnectFailure::Tls));
        assert_eq!(io_failure(&Error::from(ErrorKind::ConnectionRefused)), Some(ConnectFailure::Refused));
        assert_eq!(io_failure(&Error::other(Error::from(ErrorKind::ConnectionReset))), Some(ConnectFailure::Reset));
        assert_eq!(io_failure(&Error::from(ErrorKind::PermissionDenied)), None);
    }
}

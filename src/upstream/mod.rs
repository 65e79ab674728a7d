//! The pooled HTTP/1.1 client to the upstream (plain or TLS), and the guarded bodies that
//! stream through it. Below `state` (the snapshot holds a built client) and below `http`
//! (which maps [`UpstreamError`] to a status code).

pub mod body;

use std::error::Error as _;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use self::body::{BodyError, Guarded};
use crate::config::{Limits, Upstream as UpstreamConfig};
use crate::net::tls::{self, TlsError};

/// Idle upstream connections are closed after this; below common server keep-alive
/// timeouts (nginx 75 s) so tether never reuses a connection the upstream is closing.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle upstream connections kept; an admin console rarely needs more in parallel.
const POOL_MAX_IDLE: usize = 64;

pub type RequestBody = Guarded<Incoming>;

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

pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
    scheme: Scheme,
    authority: Authority,
    response_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(cfg: &UpstreamConfig, limits: &Limits) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(limits.upstream_connect_timeout));
        let tls = tls::client_config(cfg.ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(connector);
        // invariant: config validation guarantees a scheme and an authority.
        let scheme = cfg.url.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = cfg.url.authority().cloned().expect("validated upstream URL has an authority");
        Ok(UpstreamClient { client, scheme, authority, response_timeout: limits.upstream_response_timeout })
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The upstream URI for a request target.
    pub fn target(&self, path: Option<&PathAndQuery>) -> Result<Uri, UpstreamError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path.cloned().unwrap_or_else(|| PathAndQuery::from_static("/")))
            .build()
            .map_err(|_| UpstreamError::Target)
    }

    /// Sends the request and waits, bounded, for the response head.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

/// The first cause in the chain that says why a connect failed.
fn connect_failure(e: &hyper_util::client::legacy::Error) -> ConnectFailure {
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return ConnectFailure::Tls;
        }
        if let Some(why) = s.downcast_ref::<std::io::Error>().and_then(io_failure) {
            return why;
        }
        // hyper-util names a failed lookup only in its message.
        if s.to_string().starts_with("dns error") {
            return ConnectFailure::Dns;
        }
        source = s.source();
    }
    ConnectFailure::Other
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

/// Turns a client error into the proxy's view: was it the request body, the connect,
/// or the upstream's answer?
fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
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
    if e.is_connect() {
        UpstreamError::Connect(connect_failure(e))
    } else {
        UpstreamError::Protocol
    }
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

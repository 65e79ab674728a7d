//! The pieces between `accept()` and hyper: client address, PROXY header parser, the
//! ClientHello read, replayed IO, rustls configurations, and the per-connection facts
//! they produce. The accept loop that runs them in order sits above, in `server`.

pub mod client_addr;
pub mod client_hello;
pub mod peers;
pub mod prefixed;
pub mod proxy_protocol;
pub mod tls;

use std::net::SocketAddr;

use crate::fingerprint::Fingerprint;
use crate::intel::NetInfo;
use crate::metrics::HelloResult;

crate::labels::labels! {
    /// The HTTP version a connection speaks, pinned by ALPN (never sniffed).
    pub enum Protocol {
        Http1 = "http1",
        Http2 = "http2",
    }
}

/// What tether learned about a connection before its first request; computed once and
/// shared by every request on it.
#[derive(Debug)]
pub struct ConnFacts {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client per a trusted PROXY header, else the peer.
    pub source: SocketAddr,
    pub protocol: Protocol,
    /// What intel knows about `source`; `None` without an `[intel]` section.
    pub net: Option<NetInfo>,
    /// `None` on a plaintext listener.
    pub tls: Option<TlsFacts>,
}

#[derive(Debug)]
pub struct TlsFacts {
    /// The SNI the client sent, lower-case as rustls reports it.
    pub sni: Option<Box<str>>,
    /// The fingerprint, when the ClientHello could be parsed.
    pub fingerprint: Option<Fingerprint>,
    pub hello: HelloResult,
}

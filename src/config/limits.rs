//! `[limits]`: every bound on time, size and count that the proxy enforces.
//!
//! Each default says why it is that number. They are sized for admin consoles behind
//! SSO: few clients, large cookies, modest uploads.

use std::time::Duration;

use super::decode::Section;

/// Generous upper bound for any configured wait, so a typo cannot disable a timeout.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct Limits {
    /// Time for a client to send its whole ClientHello. A browser sends it in the first
    /// packet; 5 s leaves room for a lossy mobile link while denying slowloris slots.
    pub client_hello_timeout: Duration,
    /// Time for a trusted balancer to send the PROXY header: it sends it at once.
    pub proxy_protocol_timeout: Duration,
    /// Time for the rest of the TLS handshake (tokio-rustls has none of its own).
    pub tls_handshake_timeout: Duration,
    /// Time to receive a request's headers; on HTTP/1.1 it also bounds keep-alive idle
    /// time between requests. 20 s is above common balancer idle timeouts' floor while
    /// closing slow-header senders.
    pub header_read_timeout: Duration,
    /// Longest gap between two body chunks in either direction (nginx uses 60 s).
    pub body_idle_timeout: Duration,
    /// Time to connect to the upstream.
    pub upstream_connect_timeout: Duration,
    /// Time for the upstream to start answering (status line and headers).
    pub upstream_response_timeout: Duration,
    /// Time given to in-flight requests on SIGTERM before connections are cut.
    pub drain_timeout: Duration,
    /// Largest request body; admin consoles take small forms and the odd upload.
    pub max_body_bytes: u64,
    /// HTTP/1 read buffer, which is the ceiling of one request's header block. SSO
    /// cookies reach 4–8 KiB, so 64 KiB leaves room without inviting memory abuse.
    pub max_header_bytes: usize,
    /// Header count per request (Envoy and hyper use 100).
    pub max_headers: usize,
    /// Simultaneous client connections; beyond it new ones are closed at accept.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection (the edge guidance is 100).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 per-stream receive window: 64 KiB bounds memory per stream.
    pub h2_stream_window: u32,
    /// HTTP/2 per-connection receive window: 1 MiB.
    pub h2_connection_window: u32,
    /// HTTP/2 header list bound (decoded size).
    pub h2_max_header_list_bytes: u32,
    /// HTTP/2 PING interval, so a silent peer is noticed; hyper sends none by default.
    pub h2_keepalive_interval: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed (a GOAWAY). Any
    /// HTTP/2 library answers PINGs, so without it a connection that never sends a
    /// request would hold a slot for ever; HTTP/1.1 has `header_read_timeout` for that.
    pub h2_idle_timeout: Duration,
    /// A tunnel (WebSocket) with no byte either way for this long is closed. Consoles'
    /// live views ping every 30–60 s; 10 minutes of silence is a forgotten tab.
    pub tunnel_idle_timeout: Duration,
    /// A tunnel is closed after this long whatever it carries, so that it is judged
    /// afresh on reconnection (revocations reach open tunnels at once anyway).
    pub tunnel_max_lifetime: Duration,
    /// Simultaneous connections from one peer address (trusted proxies exempt: a
    /// balancer carries everyone's). Generous: an office behind one NAT shares it.
    pub max_connections_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            client_hello_timeout: Duration::from_secs(5),
            proxy_protocol_timeout: Duration::from_secs(2),
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(20),
            body_idle_timeout: Duration::from_secs(60),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            max_body_bytes: 32 << 20,
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_connections: 10_000,
            h2_max_concurrent_streams: 100,
            h2_stream_window: 64 << 10,
            h2_connection_window: 1 << 20,
            h2_max_header_list_bytes: 64 << 10,
            h2_keepalive_interval: Duration::from_secs(30),
            h2_idle_timeout: Duration::from_secs(30),
            tunnel_idle_timeout: Duration::from_secs(600),
            tunnel_max_lifetime: Duration::from_secs(12 * 3600),
            max_connections_per_peer: 512,
        }
    }
}

impl Limits {
    pub(super) fn read(s: &Section<'_>) -> Option<Limits> {
        let d = Limits::default();
        let wait = |key, default| s.duration(key, MAX_WAIT).unwrap_or(default);
        let limits = Limits {
            client_hello_timeout: wait("client_hello_timeout", d.client_hello_timeout),
            proxy_protocol_timeout: wait("proxy_protocol_timeout", d.proxy_protocol_timeout),
            tls_handshake_timeout: wait("tls_handshake_timeout", d.tls_handshake_timeout),
            header_read_timeout: wait("header_read_timeout", d.header_read_timeout),
            body_idle_timeout: wait("body_idle_timeout", d.body_idle_timeout),
            upstream_connect_timeout: wait("upstream_connect_timeout", d.upstream_connect_timeout),
            upstream_response_timeout: wait("upstream_response_timeout", d.upstream_response_timeout),
            drain_timeout: wait("drain_timeout", d.drain_timeout),
            max_body_bytes: s.bytes("max_body_bytes", 0, 1 << 40).unwrap_or(d.max_body_bytes),
            // hyper refuses a read buffer below 8 KiB.
            max_header_bytes: s.bytes("max_header_bytes", 8 << 10, 1 << 20).map_or(d.max_header_bytes, |n| n as usize),
            max_headers: s.integer("max_headers", 1, 1000).map_or(d.max_headers, |n| n as usize),
            max_connections: s.integer("max_connections", 1, 1_000_000).map_or(d.max_connections, |n| n as usize),
            h2_max_concurrent_streams: s.integer("h2_max_concurrent_streams", 1, 1000).map_or(d.h2_max_concurrent_streams, |n| n as u32),
            // RFC 9113 bounds: windows at least the 64 KiB default frame budget, below 2^31.
            h2_stream_window: s.bytes("h2_stream_window", 1 << 10, (1 << 31) - 1).map_or(d.h2_stream_window, |n| n as u32),
            h2_connection_window: s.bytes("h2_connection_window", 64 << 10, (1 << 31) - 1).map_or(d.h2_connection_window, |n| n as u32),
            h2_max_header_list_bytes: s.bytes("h2_max_header_list_bytes", 4 << 10, 1 << 20).map_or(d.h2_max_header_list_bytes, |n| n as u32),
            h2_keepalive_interval: wait("h2_keepalive_interval", d.h2_keepalive_interval),
            h2_idle_timeout: wait("h2_idle_timeout", d.h2_idle_timeout),
            tunnel_idle_timeout: wait("tunnel_idle_timeout", d.tunnel_idle_timeout),
            tunnel_max_lifetime: s.duration("tunnel_max_lifetime", 30 * MAX_WAIT).unwrap_or(d.tunnel_max_lifetime),
            max_connections_per_peer: s.integer("max_connections_per_peer", 1, 1_000_000).map_or(d.max_connections_per_peer, |n| n as usize),
        };
        Some(limits)
    }
}

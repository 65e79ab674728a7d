//! HTTP on an established connection: hyper configured with every limit, the one request
//! handler and its phases, forwarding with header hygiene, tether's own answers, and the
//! error-to-status mapping.

mod access;
mod answer;
// The bodies live beside the upstream client that sends them; `http::body` stays their
// name here, where the service builds its answers.
pub use crate::upstream::body;
mod dbsc;
pub mod error;
pub mod hygiene;
mod lineage;
mod own;
pub use own::{form_decode, percent_decode};
mod record;
mod service;
pub mod step_up;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net::{ConnFacts, Protocol};
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// hyper's own header count bound, parsed without allocating.
const HYPER_STACK_HEADERS: usize = 100;
/// hyper refuses (panics on) a read buffer below 8 KiB.
const MIN_H1_BUF: usize = 8 << 10;

/// How long an HTTP/2 PING may go unanswered before the connection is closed.
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-stream send buffer: bounds memory when a client reads slowly.
const H2_MAX_SEND_BUF: usize = 128 << 10;
/// Streams a client may reset before tether stops accepting them (rapid reset).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams tether may reset for client errors before closing (MadeYouReset).
const H2_MAX_LOCAL_RESETS: usize = 1024;

/// Serves one connection until it closes, or until `shutdown` flips, after which it
/// finishes in-flight requests and closes.
pub async fn serve<IO>(io: IO, conn: Arc<ConnFacts>, shared: Arc<Shared>, mut shutdown: Shutdown)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.snapshot().config.limits.clone();
    let activity = Activity::new();
    let svc = {
        let conn = conn.clone();
        let shared = shared.clone();
        let activity = activity.clone();
        service_fn(move |req| {
            activity.touch();
            service::handle(req, conn.clone(), shared.clone())
        })
    };
    let io = TokioIo::new(io);
    match conn.protocol {
        Protocol::Http1 => {
            let mut builder = http1::Builder::new();
            // Without a timer hyper silently ignores header_read_timeout.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(limits.max_header_bytes)
                .max_buf_size(limits.max_header_bytes.max(MIN_H1_BUF))
                .keep_alive(true);
            // hyper parses up to 100 headers on the stack; any other bound costs a heap
            // allocation per request, so it is set only when the operator asks for one.
            if limits.max_headers != HYPER_STACK_HEADERS {
                builder.max_headers(limits.max_headers);
            }
            let connection = builder.serve_connection(io, svc).with_upgrades();
            until_stopped(connection, &mut shutdown, |c| c.graceful_shutdown()).await;
        }
        Protocol::Http2 => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.h2_max_concurrent_streams)
                .initial_stream_window_size(limits.h2_stream_window)
                .initial_connection_window_size(limits.h2_connection_window)
                .max_header_list_size(limits.h2_max_header_list_bytes)
                .max_send_buf_size(H2_MAX_SEND_BUF)
                .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
                .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
                .keep_alive_interval(limits.h2_keepalive_interval)
                .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
            let connection = builder.serve_connection(io, svc);
            let idle = activity.idle_for(limits.h2_idle_timeout);
            // Counted when decided, before the close the client sees.
            let idle = async {
                idle.await;
                shared.metrics.connections_closed.with_label_values(&["h2_idle"]).inc();
            };
            until_stopped_or(connection, &mut shutdown, idle, |c| c.graceful_shutdown()).await;
        }
    }
}

/// When a connection last started a request, for the HTTP/2 idle timeout.
#[derive(Clone)]
struct Activity {
    start: tokio::time::Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: tokio::time::Instant::now(), last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)) }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last_ms.fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Completes once no request has started for `idle`. Streams still open then are
    /// finished by the graceful close (a GOAWAY), never cut.
    async fn idle_for(self, idle: std::time::Duration) {
        loop {
            let last = self.start + std::time::Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
            let deadline = last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Drives a connection; when `shutdown` flips, asks it to finish what is in flight
/// (HTTP/1: the current exchange; HTTP/2: GOAWAY) and waits for it.
async fn until_stopped<C: std::future::Future>(
    connection: C,
    shutdown: &mut Shutdown,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) {
    until_stopped_or(connection, shutdown, std::future::pending(), graceful).await;
}

/// Like [`until_stopped`], also closing gracefully when `idle` completes; true when it
/// was the idle timeout that closed the connection.
async fn until_stopped_or<C: std::future::Future>(
    connection: C,
    shutdown: &mut Shutdown,
    idle: impl std::future::Future<Output = ()>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) -> bool {
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => false,
        _ = shutdown.stopped() => {
            graceful(connection.as_mut());
            let _ = connection.await;
            false
        }
        _ = idle => {
            graceful(connection.as_mut());
            let _ = connection.await;
            true
        }
    }
}

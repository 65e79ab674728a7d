//! tether's own log lines about requests (stderr, never the audit log): one `warn` line
//! for every 5xx tether answers itself, saying why, and with `[log] access = true` one
//! `info` access line per answered request. Neither ever holds a header, a cookie, a
//! token or a query string: the method, the path cut to a bound, the status, the time,
//! and what was decided.

use http::{Method, Request, StatusCode, Uri};
use tokio::time::Instant;

use super::error::ProxyError;
use crate::detector::Decision;
use crate::policy::{Action, Mode};
use crate::state::Snapshot;
use crate::upstream::ConnectFailure;

/// Paths are cut here: long enough to tell a console's routes apart, short enough that
/// one request cannot fill the log.
const MAX_PATH: usize = 256;

/// The target of access lines, so a filter can keep or drop them alone
/// (`TETHER_LOG=info,tether::access=off`).
const ACCESS: &str = "tether::access";

/// What the log lines say about the request, taken before the request moves on.
pub(super) struct Seen {
    method: Method,
    uri: Uri,
}

impl Seen {
    pub fn of<B>(req: &Request<B>) -> Seen {
        // Both are reference-counted: cloning copies no path bytes.
        Seen { method: req.method().clone(), uri: req.uri().clone() }
    }

    /// The path without its query (which may carry a secret), cut at `MAX_PATH` bytes.
    fn path(&self) -> &str {
        let path = self.uri.path();
        if path.len() <= MAX_PATH {
            return path;
        }
        // A path is ASCII once parsed; the boundary search only keeps the cut safe.
        let end = (0..=MAX_PATH).rev().find(|&i| path.is_char_boundary(i)).unwrap_or(0);
        &path[..end]
    }
}

/// What the request path decided, filled in as it goes.
#[derive(Default)]
pub(super) struct Outcome {
    decision: Option<(Action, Mode)>,
    reference: Option<u64>,
}

impl Outcome {
    pub fn decided(&mut self, d: Option<&Decision>) {
        if let Some(d) = d {
            self.decision = Some((d.verdict.action, d.verdict.mode));
            self.reference = d.reference;
        }
    }

    fn reference(&self) -> Option<String> {
        self.reference.map(|r| format!("{r:016x}"))
    }
}

/// Logs why tether answered a request itself with a server error. Client errors (a
/// malformed request, a body too large) are the client's and are not logged here.
pub(super) fn failed(seen: &Seen, outcome: &Outcome, e: &ProxyError) {
    let status = e.status();
    if !status.is_server_error() {
        return;
    }
    tracing::warn!(
        status = status.as_u16(),
        reason = reason(e),
        method = seen.method.as_str(),
        path = seen.path(),
        reference = outcome.reference().as_deref(),
        "answered {}: {e}",
        status.as_u16()
    );
}

/// The access line, when `[log] access` is on.
pub(super) fn answered(snap: &Snapshot, seen: &Seen, outcome: &Outcome, status: StatusCode, started: Instant) {
    if !snap.config.log.access {
        return;
    }
    let (decision, mode) = match outcome.decision {
        Some((action, mode)) => (Some(action.as_str()), Some(mode.as_str())),
        None => (None, None),
    };
    tracing::info!(
        target: ACCESS,
        method = seen.method.as_str(),
        path = seen.path(),
        status = status.as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        decision,
        mode,
        reference = outcome.reference().as_deref(),
        "access"
    );
}

/// A stable name for each reason tether answers itself with an error; one arm per kind,
/// so a new kind cannot be logged without a name.
fn reason(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::UpstreamConnect(why) => match why {
            ConnectFailure::Refused => "upstream_refused",
            ConnectFailure::Reset => "upstream_reset",
            ConnectFailure::Unreachable => "upstream_unreachable",
            ConnectFailure::Tls => "upstream_tls",
            ConnectFailure::Dns => "upstream_dns",
            ConnectFailure::Other => "upstream_connect",
        },
        ProxyError::UpstreamTimeout => "upstream_timeout",
        ProxyError::UpstreamProtocol => "upstream_protocol",
        ProxyError::StoreUnavailable => "store_unavailable",
        ProxyError::BodyTooLarge => "body_too_large",
        ProxyError::BodyIdle => "body_idle",
        ProxyError::Misdirected => "misdirected",
        ProxyError::BadRequest(_) => "bad_request",
        ProxyError::OwnPathNotFound => "not_found",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(path: &str) -> Seen {
        Seen::of(&Request::get(path).body(()).unwrap())
    }

    #[test]
    fn the_path_is_bounded_and_never_carries_the_query() {
        assert_eq!(seen("/console?token=secret").path(), "/console");
        let long = format!("/{}", "a".repeat(400));
        assert_eq!(seen(&long).path(), &long[..MAX_PATH]);
        assert_eq!(seen("/").path(), "/");
    }

    #[test]
    fn every_server_error_has_a_reason() {
        for e in [
            ProxyError::UpstreamConnect(ConnectFailure::Refused),
            ProxyError::UpstreamTimeout,
            ProxyError::UpstreamProtocol,
            ProxyError::StoreUnavailable,
        ] {
            assert!(e.status().is_server_error());
            assert!(reason(&e).starts_with("upstream_") || reason(&e) == "store_unavailable");
        }
    }
}

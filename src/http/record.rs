//! What tether writes down about a request: the decision's metrics and audit lines (one
//! function for every caller, live requests and re-judged tunnels alike), the headers
//! that tell the upstream what was decided, and the request's count and latency.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::StatusCode;
use tokio::time::Instant;

use crate::audit::{Event, EventKind};
use crate::detector::{audit_events, Decision, Request as DetectorRequest};
use crate::net::Protocol;
use crate::policy::Action;
use crate::state::{Shared, Snapshot};

const X_TETHER_DECISION: &str = "x-tether-decision";
const X_TETHER_SCORE: &str = "x-tether-score";
const X_TETHER_SIGNALS: &str = "x-tether-signals";

/// Counts and audits one decision: its action, signals and time, the session count when
/// it bound a new session, and a policy revocation. `spent` is the time of the whole
/// security path, identification included.
pub fn decision(shared: &Shared, snap: &Snapshot, d: &Decision, req: &DetectorRequest<'_>, spent: Duration) {
    let m = &shared.metrics;
    m.decision_seconds.observe(spent.as_secs_f64());
    // The policy that judged it names the rule (a separate family: the contract's
    // tether_decisions_total keeps its label set).
    m.decision(snap.detector.policy.route_label(&d.verdict), d.verdict.action, d.verdict.mode);
    for s in d.verdict.signals.iter() {
        m.signals.with_label_values(&[s.as_str()]).inc();
    }
    for outcome in d.lineage.into_iter().chain(d.lineage_set.as_ref().map(|(o, _)| *o)) {
        m.lineage.with_label_values(&[outcome.as_str()]).inc();
    }
    if d.bound {
        m.sessions.set(shared.store.len() as i64);
    }
    let revoked = d.verdict.enforced() && d.verdict.action == Action::Revoke;
    if revoked {
        m.revocations.with_label_values(&["policy"]).inc();
        shared.tunnels.close(&d.session);
    } else if forked(d) {
        // A second copy of the session is alive, and a tunnel opened before the verdict
        // may be that copy's: neither side keeps one until the owner has stepped up.
        shared.tunnels.close(&d.session);
    }
    for event in audit_events(d, req, snap.config.audit.allowed) {
        shared.audit.record(event);
    }
    if revoked {
        let mut e = Event::new(EventKind::SessionRevoked, d.verdict.mode);
        e.session = Some(d.session);
        e.user = d.user.clone();
        e.ip = Some(req.ip);
        e.reasons = d.verdict.signals;
        e.detail = Some("policy");
        shared.audit.record(e);
    }
}

/// Whether the decision refuses a request because lineage found another copy of its
/// session (`forked` or `missing`, enforced, not allowed).
fn forked(d: &Decision) -> bool {
    d.verdict.effective() != Action::Allow && d.lineage.is_some_and(|o| !o.ok())
}

/// Tells the upstream what was decided (`upstream.forward_decision`).
pub fn decision_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert(X_TETHER_DECISION, HeaderValue::from_static(d.verdict.action.as_str()));
    headers.insert(X_TETHER_SCORE, HeaderValue::from(d.verdict.score));
    if !d.verdict.signals.is_empty() {
        // Signal names are ASCII identifiers, so this does not fail; if it ever did, the
        // header is left out rather than the request failed.
        if let Ok(v) = HeaderValue::from_str(&d.verdict.signals.to_string()) {
            headers.insert(X_TETHER_SIGNALS, v);
        }
    }
}

/// Times one upstream exchange, from sending the request to the response head.
pub fn upstream_response(shared: &Shared, sent: Instant) {
    shared.metrics.upstream_response_seconds.observe(sent.elapsed().as_secs_f64());
}

/// Counts one answered request and its time from head to response head.
pub fn request(shared: &Shared, protocol: Protocol, status: StatusCode, started: Instant) {
    shared.metrics.request(protocol == Protocol::Http2, status, started.elapsed().as_secs_f64());
}

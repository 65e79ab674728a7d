//! Every metric tether exports, in one place, registered against one app-owned registry.
//!
//! Labels are small closed enums turned into `&'static str`; an address, session, user,
//! path or fingerprint never becomes a label (those belong in the audit log).

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a ClientHello read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloResult {
    /// Parsed and fingerprinted.
    Parsed,
    /// Complete but not parseable by tether; still handed to rustls.
    Malformed,
    /// The first bytes were not a TLS handshake record.
    NotTls,
    /// The client closed before the hello was complete.
    Truncated,
    /// The client did not finish the hello in time.
    Timeout,
    /// The hello exceeded the size cap.
    TooLarge,
}

impl HelloResult {
    pub const ALL: [HelloResult; 6] = [
        HelloResult::Parsed,
        HelloResult::Malformed,
        HelloResult::NotTls,
        HelloResult::Truncated,
        HelloResult::Timeout,
        HelloResult::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HelloResult::Parsed => "parsed",
            HelloResult::Malformed => "malformed",
            HelloResult::NotTls => "not_tls",
            HelloResult::Truncated => "truncated",
            HelloResult::Timeout => "timeout",
            HelloResult::TooLarge => "too_large",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub connections_accepted: IntCounter,
    pub connections_rejected: IntCounter,
    pub connections_open: IntGauge,
    pub client_hello: IntCounterVec,
    pub proxy_protocol: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub tls_handshake_seconds: Histogram,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub upgrades: IntCounter,
    pub intel_lookup_errors: IntCounter,
    pub intel_lookups: IntCounterVec,
    pub intel_db_build: IntGaugeVec,
    pub config_generation: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_last_reload: IntGauge,
    pub decisions: IntCounterVec,
    pub signals: IntCounterVec,
    pub sessions: IntGauge,
    pub decision_seconds: Histogram,
    pub audit_dropped: IntCounter,
    pub audit_write_errors: IntCounter,
    pub store_errors: IntCounter,
    pub step_ups: IntCounterVec,
    pub revocations: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            connections_accepted: IntCounter::new("tether_connections_accepted_total", "Client connections accepted.").expect(VALID),
            connections_rejected: IntCounter::new("tether_connections_rejected_total", "Client connections closed at accept because the connection cap was reached.").expect(VALID),
            connections_open: IntGauge::new("tether_connections_open", "Client connections currently open.").expect(VALID),
            client_hello: IntCounterVec::new(Opts::new("tether_client_hello_total", "ClientHello reads by result."), &["result"]).expect(VALID),
            proxy_protocol: IntCounterVec::new(Opts::new("tether_proxy_protocol_total", "PROXY protocol headers by result."), &["result"]).expect(VALID),
            tls_handshakes: IntCounterVec::new(Opts::new("tether_tls_handshakes_total", "TLS handshakes by result."), &["result"]).expect(VALID),
            tls_handshake_seconds: Histogram::with_opts(
                HistogramOpts::new("tether_tls_handshake_seconds", "Time from the complete ClientHello to the end of the TLS handshake.")
                    .buckets(exponential_buckets(0.0005, 2.0, 14).expect(VALID)),
            ).expect(VALID),
            requests: IntCounterVec::new(Opts::new("tether_requests_total", "Requests answered, by protocol and status class."), &["protocol", "status"]).expect(VALID),
            request_seconds: HistogramVec::new(
                HistogramOpts::new("tether_request_duration_seconds", "Time from request head to response head, by protocol.")
                    .buckets(exponential_buckets(0.0005, 2.0, 16).expect(VALID)),
                &["protocol"],
            ).expect(VALID),
            upstream_errors: IntCounterVec::new(Opts::new("tether_upstream_errors_total", "Upstream failures by kind."), &["kind"]).expect(VALID),
            upgrades: IntCounter::new("tether_upgrades_total", "Connections switched to a tunnel after the upstream's 101.").expect(VALID),
            intel_lookup_errors: IntCounter::new("tether_intel_lookup_errors_total", "Database records that could not be decoded (the address is treated as unknown).").expect(VALID),
            intel_lookups: IntCounterVec::new(Opts::new("tether_intel_lookups_total", "Address lookups by network category."), &["category"]).expect(VALID),
            intel_db_build: IntGaugeVec::new(Opts::new("tether_intel_database_build_timestamp_seconds", "Build time of each loaded MaxMind database, for staleness alerts."), &["database"]).expect(VALID),
            config_reloads: IntCounterVec::new(Opts::new("tether_config_reloads_total", "Reloads by result; a failure keeps the configuration in force."), &["result"]).expect(VALID),
            config_last_reload: IntGauge::new("tether_config_last_reload_success_timestamp_seconds", "When the configuration in force was loaded.").expect(VALID),
            decisions: IntCounterVec::new(Opts::new("tether_decisions_total", "Decisions on requests that carried a session, by action and mode (monitor: would-be action)."), &["action", "mode"]).expect(VALID),
            signals: IntCounterVec::new(Opts::new("tether_signals_total", "Signals fired, by name."), &["signal"]).expect(VALID),
            sessions: IntGauge::new("tether_sessions", "Sessions tracked by the store.").expect(VALID),
            decision_seconds: Histogram::with_opts(
                HistogramOpts::new("tether_decision_duration_seconds", "Time spent in the per-request security path (identity, store, signals, policy).")
                    .buckets(exponential_buckets(0.000_001, 2.0, 16).expect(VALID)),
            ).expect(VALID),
            audit_dropped: IntCounter::new("tether_audit_dropped_total", "Audit events dropped because the writer fell behind.").expect(VALID),
            audit_write_errors: IntCounter::new("tether_audit_write_errors_total", "Audit lines that could not be written.").expect(VALID),
            store_errors: IntCounter::new("tether_store_errors_total", "Session store operations that failed (the request was judged without history).").expect(VALID),
            step_ups: IntCounterVec::new(Opts::new("tether_step_ups_total", "Step-up challenges by stage and result."), &["stage", "result"]).expect(VALID),
            revocations: IntCounterVec::new(Opts::new("tether_revocations_total", "Sessions revoked, by source."), &["source"]).expect(VALID),
            config_generation: IntGauge::new("tether_config_generation", "Generation of the snapshot in force; increases with every successful reload.").expect(VALID),
            registry,
        };
        m.register_all();
        // Pre-create label sets so dashboards see zeros instead of gaps.
        for r in ["success", "failure"] {
            m.config_reloads.with_label_values(&[r]);
        }
        for a in crate::policy::Action::ALL {
            for mode in ["enforce", "monitor"] {
                m.decisions.with_label_values(&[a.as_str(), mode]);
            }
        }
        for sig in crate::policy::Signal::ALL {
            m.signals.with_label_values(&[sig.as_str()]);
        }
        // Series that alerts and dashboards divide by or watch for increases exist from
        // the start, at zero.
        for protocol in ["http1", "http2"] {
            m.request_seconds.with_label_values(&[protocol]);
            for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
                m.requests.with_label_values(&[protocol, class]);
            }
        }
        for kind in ["connect", "timeout", "protocol"] {
            m.upstream_errors.with_label_values(&[kind]);
        }
        for result in ["ok", "error", "timeout"] {
            m.tls_handshakes.with_label_values(&[result]);
        }
        for (stage, result) in [("challenge", "redirect"), ("challenge", "401"), ("callback", "completed"), ("logout", "accepted")] {
            m.step_ups.with_label_values(&[stage, result]);
        }
        for source in ["policy", "admin", "step_up_failures", "backchannel_logout"] {
            m.revocations.with_label_values(&[source]);
        }
        for r in HelloResult::ALL {
            m.client_hello.with_label_values(&[r.as_str()]);
        }
        m
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 26] = [
            Box::new(self.decisions.clone()),
            Box::new(self.signals.clone()),
            Box::new(self.sessions.clone()),
            Box::new(self.decision_seconds.clone()),
            Box::new(self.audit_dropped.clone()),
            Box::new(self.audit_write_errors.clone()),
            Box::new(self.store_errors.clone()),
            Box::new(self.step_ups.clone()),
            Box::new(self.revocations.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.config_last_reload.clone()),
            Box::new(self.intel_lookup_errors.clone()),
            Box::new(self.intel_lookups.clone()),
            Box::new(self.intel_db_build.clone()),
            Box::new(self.config_generation.clone()),
            Box::new(self.connections_accepted.clone()),
            Box::new(self.connections_rejected.clone()),
            Box::new(self.connections_open.clone()),
            Box::new(self.client_hello.clone()),
            Box::new(self.proxy_protocol.clone()),
            Box::new(self.tls_handshakes.clone()),
            Box::new(self.tls_handshake_seconds.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.request_seconds.clone()),
            Box::new(self.upstream_errors.clone()),
            Box::new(self.upgrades.clone()),
        ];
        for c in collectors {
            self.registry.register(c).expect(VALID);
        }
    }

    pub fn hello(&self, result: HelloResult) {
        self.client_hello.with_label_values(&[result.as_str()]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 << 10);
        // invariant: the text encoder only fails on a write error, and a Vec never fails.
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encode to Vec");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// invariant: metric names, help and label names above are static and valid, and each is
/// registered once; a failure here is a programming error caught by every test run.
const VALID: &str = "static metric definition is valid";

/// Status class label for a response status.
pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_with_bounded_labels() {
        let m = Metrics::new();
        m.hello(HelloResult::Parsed);
        m.requests.with_label_values(&["http1", status_class(http::StatusCode::BAD_GATEWAY)]).inc();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("tether_client_hello_total{result=\"parsed\"} 1"));
        assert!(text.contains("tether_client_hello_total{result=\"not_tls\"} 0"));
        assert!(text.contains("tether_requests_total{protocol=\"http1\",status=\"5xx\"} 1"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("tether_"), "{line}");
        }
    }
}

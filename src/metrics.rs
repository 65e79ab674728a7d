//! Every metric tether exports, in one place, registered against one app-owned registry.
//!
//! Labels are small closed enums turned into `&'static str`; an address, session, user,
//! path or fingerprint never becomes a label (those belong in the audit log). The one
//! label taken from the config, a decision's `route`, is a rule's checked `name`, so the
//! set is as small as the config (see [`crate::policy::Policy::route_label`]).
//!
//! Beside the `tether_` families, the registry carries the standard `process_*` ones
//! (resident memory, open file descriptors, start time, CPU) on Linux.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

crate::labels::labels! {
    /// How a ClientHello read ended.
    pub enum HelloResult {
        /// Parsed and fingerprinted.
        Parsed = "parsed",
        /// Complete but not parseable by tether; still handed to rustls.
        Malformed = "malformed",
        /// The first bytes were not a TLS handshake record.
        NotTls = "not_tls",
        /// The client closed before the hello was complete.
        Truncated = "truncated",
        /// The client did not finish the hello in time.
        Timeout = "timeout",
        /// The hello exceeded the size cap.
        TooLarge = "too_large",
    }
}

crate::labels::labels! {
    /// How a configuration reload ended.
    pub enum ReloadResult {
        Success = "success",
        /// The configuration in force stays.
        Failure = "failure",
    }
}

crate::labels::labels! {
    /// How a TLS handshake ended.
    pub enum HandshakeResult {
        Ok = "ok",
        Error = "error",
        Timeout = "timeout",
    }
}

crate::labels::labels! {
    /// What went wrong on the way to the upstream.
    pub enum UpstreamErrorKind {
        Connect = "connect",
        Timeout = "timeout",
        Protocol = "protocol",
    }
}

crate::labels::labels! {
    /// Who revoked a session.
    pub enum RevocationSource {
        /// The policy's revoke threshold.
        Policy = "policy",
        /// The admin API.
        Admin = "admin",
        /// Too many failed step-ups.
        StepUpFailures = "step_up_failures",
        /// An OIDC back-channel logout.
        BackchannelLogout = "backchannel_logout",
        /// A step-up completed as another user than the session's owner.
        WrongUser = "wrong_user",
    }
}

crate::labels::labels! {
    /// What became of a device-bound session (DBSC) step: `tether_dbsc_total{outcome}`.
    pub enum DbscOutcome {
        /// A response that established a session offered registration.
        Offered = "offered",
        /// A device key registered; the session is bound.
        Registered = "registered",
        /// A bound cookie renewed by a fresh key proof.
        Refreshed = "refreshed",
        /// A refresh without a proof, answered with a challenge (the spec's 403).
        Challenged = "challenged",
        /// A registration or refresh refused (the audit line's `detail` says why).
        ProofRefused = "proof_refused",
        /// A request of a bound session refused for want of a valid bound cookie.
        RequestRefused = "request_refused",
        /// A risk signal on a bound session demanded a fresh key proof.
        ProofDemanded = "proof_demanded",
    }
}

crate::labels::labels! {
    /// A response status, by its first digit.
    pub enum StatusClass {
        Informational = "1xx",
        Success = "2xx",
        Redirection = "3xx",
        ClientError = "4xx",
        ServerError = "5xx",
    }
}

impl StatusClass {
    pub fn of(status: http::StatusCode) -> StatusClass {
        match status.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

/// The build's identity for `tether_build_info`: the package version, and the commit when
/// the build was given one (`TETHER_COMMIT` in the environment of `cargo build`; no
/// build script, so no git is needed to build).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = match option_env!("TETHER_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// `not_after` when the listener has no certificate.
const NO_CERTIFICATE: i64 = i64::MIN;

pub struct Metrics {
    registry: Registry,
    hot: Hot,
    pub build_info: IntGaugeVec,
    pub connections_accepted: IntCounter,
    pub connections_rejected: IntCounter,
    pub connections_open: IntGauge,
    pub connections_closed: IntCounterVec,
    pub tunnels_open: IntGauge,
    pub tunnels_closed: IntCounterVec,
    pub store_evictions: IntCounter,
    pub challenges_pending: IntGauge,
    pub client_hello: IntCounterVec,
    pub proxy_protocol: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub tls_handshake_seconds: Histogram,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub upstream_response_seconds: Histogram,
    /// Seconds left on the listener's certificate; no series without one. Computed at
    /// each scrape from `certificate_not_after`, so it never goes stale between reloads.
    tls_certificate_expiry: IntGaugeVec,
    certificate_not_after: AtomicI64,
    pub upstream_errors: IntCounterVec,
    pub upgrades: IntCounter,
    pub intel_lookup_errors: IntCounter,
    pub intel_lookups: IntCounterVec,
    pub intel_db_build: IntGaugeVec,
    pub config_generation: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_last_reload: IntGauge,
    pub decisions: IntCounterVec,
    pub route_decisions: IntCounterVec,
    pub signals: IntCounterVec,
    /// `[lineage]` verdicts and the values issued, by outcome.
    pub lineage: IntCounterVec,
    pub sessions: IntGauge,
    pub decision_seconds: Histogram,
    pub audit_dropped: IntCounter,
    pub audit_write_errors: IntCounter,
    pub store_errors: IntCounter,
    pub store_degraded: IntCounter,
    pub store_degraded_operations: IntCounter,
    pub store_revocations: IntGauge,
    pub step_ups: IntCounterVec,
    pub revocations: IntCounterVec,
    pub idp_discovery_failures: IntCounter,
    pub idp_ready: IntGauge,
    pub dbsc: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(Opts::new("tether_requests_total", "Requests answered, by protocol and status class."), &["protocol", "status"]).expect(VALID);
        let request_seconds = HistogramVec::new(
                HistogramOpts::new("tether_request_duration_seconds", "Time from request head to response head, by protocol.")
                    .buckets(exponential_buckets(0.0005, 2.0, 16).expect(VALID)),
                &["protocol"],
            ).expect(VALID);
        let decisions = IntCounterVec::new(Opts::new("tether_decisions_total", "Decisions on requests that carried a session, by action and mode (monitor: would-be action)."), &["action", "mode"]).expect(VALID);
        let route_decisions = IntCounterVec::new(Opts::new("tether_route_decisions_total", "Decisions by the [[policy.routes]] rule that judged them (its name, \"unnamed\", or \"none\"), action and mode."), &["route", "action", "mode"]).expect(VALID);
        let hot = Hot::resolve(&requests, &request_seconds, &decisions, &route_decisions);
        let m = Metrics {
            hot,
            build_info: IntGaugeVec::new(Opts::new("tether_build_info", "Always 1; the labels name the running build (package version, commit or \"unknown\")."), &["version", "commit"]).expect(VALID),
            upstream_response_seconds: Histogram::with_opts(
                HistogramOpts::new("tether_upstream_response_duration_seconds", "Time from sending a request to the upstream to its response head (responses only; failures are in tether_upstream_errors_total).")
                    .buckets(exponential_buckets(0.0005, 2.0, 16).expect(VALID)),
            ).expect(VALID),
            tls_certificate_expiry: IntGaugeVec::new(Opts::new("tether_tls_certificate_expiry_seconds", "Seconds until the listener certificate in force expires (negative once expired); absent on a plaintext listener."), &[]).expect(VALID),
            certificate_not_after: AtomicI64::new(NO_CERTIFICATE),
            route_decisions,
            connections_accepted: IntCounter::new("tether_connections_accepted_total", "Client connections accepted.").expect(VALID),
            connections_rejected: IntCounter::new("tether_connections_rejected_total", "Client connections closed at accept because the connection cap was reached.").expect(VALID),
            connections_open: IntGauge::new("tether_connections_open", "Client connections currently open.").expect(VALID),
            connections_closed: IntCounterVec::new(Opts::new("tether_connections_closed_total", "Client connections tether closed on its own, by reason (h2_idle, peer_cap)."), &["reason"]).expect(VALID),
            tunnels_open: IntGauge::new("tether_tunnels_open", "Tunnels (WebSocket and other upgrades) currently open.").expect(VALID),
            tunnels_closed: IntCounterVec::new(Opts::new("tether_tunnels_closed_total", "Tunnels tether closed, by reason (idle, lifetime, revoked, policy)."), &["reason"]).expect(VALID),
            store_evictions: IntCounter::new("tether_store_evictions_total", "Sessions evicted because the store was full; each leaves a tombstone (history_lost on return).").expect(VALID),
            challenges_pending: IntGauge::new("tether_step_up_challenges_pending", "Step-up challenges waiting for their callback.").expect(VALID),
            client_hello: IntCounterVec::new(Opts::new("tether_client_hello_total", "ClientHello reads by result."), &["result"]).expect(VALID),
            proxy_protocol: IntCounterVec::new(Opts::new("tether_proxy_protocol_total", "PROXY protocol headers by result."), &["result"]).expect(VALID),
            tls_handshakes: IntCounterVec::new(Opts::new("tether_tls_handshakes_total", "TLS handshakes by result."), &["result"]).expect(VALID),
            tls_handshake_seconds: Histogram::with_opts(
                HistogramOpts::new("tether_tls_handshake_seconds", "Time from the complete ClientHello to the end of the TLS handshake.")
                    .buckets(exponential_buckets(0.0005, 2.0, 14).expect(VALID)),
            ).expect(VALID),
            requests,
            request_seconds,
            upstream_errors: IntCounterVec::new(Opts::new("tether_upstream_errors_total", "Upstream failures by kind."), &["kind"]).expect(VALID),
            upgrades: IntCounter::new("tether_upgrades_total", "Connections switched to a tunnel after the upstream's 101.").expect(VALID),
            intel_lookup_errors: IntCounter::new("tether_intel_lookup_errors_total", "Database records that could not be decoded (the address is treated as unknown).").expect(VALID),
            intel_lookups: IntCounterVec::new(Opts::new("tether_intel_lookups_total", "Address lookups by network category."), &["category"]).expect(VALID),
            intel_db_build: IntGaugeVec::new(Opts::new("tether_intel_database_build_timestamp_seconds", "Build time of each loaded MaxMind database, for staleness alerts."), &["database"]).expect(VALID),
            config_reloads: IntCounterVec::new(Opts::new("tether_config_reloads_total", "Reloads by result; a failure keeps the configuration in force."), &["result"]).expect(VALID),
            config_last_reload: IntGauge::new("tether_config_last_reload_success_timestamp_seconds", "When the configuration in force was loaded.").expect(VALID),
            decisions,
            signals: IntCounterVec::new(Opts::new("tether_signals_total", "Signals fired, by name."), &["signal"]).expect(VALID),
            lineage: IntCounterVec::new(Opts::new("tether_lineage_total", "Companion-cookie lineage: each judged request's verdict (current, previous, unconfirmed, forked, missing) and each value set (issued, rotated)."), &["outcome"]).expect(VALID),
            sessions: IntGauge::new("tether_sessions", "Sessions tracked by the store.").expect(VALID),
            decision_seconds: Histogram::with_opts(
                HistogramOpts::new("tether_decision_duration_seconds", "Time spent in the per-request security path (identity, store, signals, policy).")
                    .buckets(exponential_buckets(0.000_001, 2.0, 16).expect(VALID)),
            ).expect(VALID),
            audit_dropped: IntCounter::new("tether_audit_dropped_total", "Audit events dropped because the writer fell behind.").expect(VALID),
            audit_write_errors: IntCounter::new("tether_audit_write_errors_total", "Audit lines that could not be written.").expect(VALID),
            store_errors: IntCounter::new("tether_store_errors_total", "Requests let through unjudged because the session store failed, and step-up outcomes it could not record.").expect(VALID),
            store_degraded: IntCounter::new("tether_store_degraded_total", "Decisions made without the session's history because the shared store could not be read: judged by network-only rules, or refused (store.on_error).").expect(VALID),
            store_degraded_operations: IntCounter::new("tether_store_degraded_operations_total", "Shared store calls that failed or timed out (the store answered from its cache or not at all).").expect(VALID),
            store_revocations: IntGauge::new("tether_store_revocations", "Revocations in force in the store (the shared set as of its last sweep).").expect(VALID),
            step_ups: IntCounterVec::new(Opts::new("tether_step_ups_total", "Step-up challenges by stage and result."), &["stage", "result"]).expect(VALID),
            revocations: IntCounterVec::new(Opts::new("tether_revocations_total", "Sessions revoked, by source."), &["source"]).expect(VALID),
            idp_discovery_failures: IntCounter::new("tether_idp_discovery_failures_total", "Failed attempts to fetch the IdP's discovery document or key set ahead of need (retried with backoff).").expect(VALID),
            idp_ready: IntGauge::new("tether_idp_ready", "1 once the IdP's discovery document and key set are held (or its endpoints are configured, or there is no [step_up]); 0 while they are being fetched or fetching fails.").expect(VALID),
            dbsc: IntCounterVec::new(Opts::new("tether_dbsc_total", "Device-bound session (DBSC) steps by outcome: registration offered, key registered, cookie refreshed, refresh challenged, proof refused, request refused without a bound cookie, fresh proof demanded on risk."), &["outcome"]).expect(VALID),
            config_generation: IntGauge::new("tether_config_generation", "Generation of the snapshot in force; increases with every successful reload.").expect(VALID),
            registry,
        };
        m.register_all();
        m.build_info.with_label_values(&[VERSION, COMMIT]).set(1);
        // Pre-create label sets so dashboards see zeros instead of gaps.
        for r in ReloadResult::ALL {
            m.config_reloads.with_label_values(&[r.as_str()]);
        }
        for r in ["h2_idle", "peer_cap"] {
            m.connections_closed.with_label_values(&[r]);
        }
        for r in ["idle", "lifetime", "revoked", "policy"] {
            m.tunnels_closed.with_label_values(&[r]);
        }
        for a in crate::policy::Action::ALL {
            for mode in ["enforce", "monitor"] {
                m.decisions.with_label_values(&[a.as_str(), mode]);
            }
        }
        for sig in crate::policy::Signal::ALL {
            m.signals.with_label_values(&[sig.as_str()]);
        }
        for o in crate::session::lineage::Outcome::ALL {
            m.lineage.with_label_values(&[o.as_str()]);
        }
        // Series that alerts and dashboards divide by or watch for increases exist from
        // the start, at zero.
        for protocol in ["http1", "http2"] {
            m.request_seconds.with_label_values(&[protocol]);
            for class in StatusClass::ALL {
                m.requests.with_label_values(&[protocol, class.as_str()]);
            }
        }
        for kind in UpstreamErrorKind::ALL {
            m.upstream_errors.with_label_values(&[kind.as_str()]);
        }
        for result in HandshakeResult::ALL {
            m.tls_handshakes.with_label_values(&[result.as_str()]);
        }
        for (stage, result) in [("challenge", "redirect"), ("challenge", "401"), ("callback", "completed"), ("logout", "accepted")] {
            m.step_ups.with_label_values(&[stage, result]);
        }
        for source in RevocationSource::ALL {
            m.revocations.with_label_values(&[source.as_str()]);
        }
        for r in HelloResult::ALL {
            m.client_hello.with_label_values(&[r.as_str()]);
        }
        for o in DbscOutcome::ALL {
            m.dbsc.with_label_values(&[o.as_str()]);
        }
        m
    }

    /// Counts one device-bound session step.
    pub fn dbsc(&self, outcome: DbscOutcome) {
        self.dbsc.with_label_values(&[outcome.as_str()]).inc();
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 42] = [
            Box::new(self.dbsc.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.upstream_response_seconds.clone()),
            Box::new(self.tls_certificate_expiry.clone()),
            Box::new(self.route_decisions.clone()),
            Box::new(self.idp_discovery_failures.clone()),
            Box::new(self.idp_ready.clone()),
            Box::new(self.connections_closed.clone()),
            Box::new(self.tunnels_open.clone()),
            Box::new(self.tunnels_closed.clone()),
            Box::new(self.store_evictions.clone()),
            Box::new(self.challenges_pending.clone()),
            Box::new(self.decisions.clone()),
            Box::new(self.signals.clone()),
            Box::new(self.lineage.clone()),
            Box::new(self.sessions.clone()),
            Box::new(self.decision_seconds.clone()),
            Box::new(self.audit_dropped.clone()),
            Box::new(self.audit_write_errors.clone()),
            Box::new(self.store_errors.clone()),
            Box::new(self.store_degraded.clone()),
            Box::new(self.store_degraded_operations.clone()),
            Box::new(self.store_revocations.clone()),
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
        // The standard process metrics, read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        self.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect(VALID);
    }

    /// The listener certificate in force (its notAfter, seconds since the epoch), or
    /// `None` for a plaintext listener; set at start and at every reload.
    pub fn set_listener_certificate(&self, not_after: Option<i64>) {
        self.certificate_not_after.store(not_after.unwrap_or(NO_CERTIFICATE), Ordering::Relaxed);
    }

    /// Creates the zero series of every route label `policy` can give, in its mode;
    /// called with each snapshot, so a dashboard sees a new rule before its first
    /// decision. Labels of rules since removed keep their counts until restart.
    pub fn routes_in_force(&self, policy: &crate::policy::Policy) {
        for route in policy.route_labels() {
            for a in crate::policy::Action::ALL {
                self.route_decisions.with_label_values(&[route, a.as_str(), policy.mode.as_str()]);
            }
        }
    }

    pub fn hello(&self, result: HelloResult) {
        self.client_hello.with_label_values(&[result.as_str()]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        self.observe_certificate(unix_now());
        let mut out = Vec::with_capacity(16 << 10);
        // invariant: the text encoder only fails on a write error, and a Vec never fails.
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encode to Vec");
        out
    }
}

impl Metrics {
    fn observe_certificate(&self, now: i64) {
        match self.certificate_not_after.load(Ordering::Relaxed) {
            NO_CERTIFICATE => self.tls_certificate_expiry.reset(),
            not_after => self.tls_certificate_expiry.with_label_values::<&str>(&[]).set(not_after.saturating_sub(now)),
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
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
/// The series every request touches, resolved once. A labelled lookup hashes its label
/// values, takes its family's lock and clones the child: on every request, from every
/// worker, those were shared cache lines passed between the cores.
struct Hot {
    /// By HTTP/2 (0: HTTP/1.1, 1: HTTP/2), then status class.
    requests: [[IntCounter; StatusClass::COUNT]; 2],
    request_seconds: [Histogram; 2],
    /// By action, then mode (0: enforce, 1: monitor).
    decisions: [[IntCounter; 2]; crate::policy::Action::COUNT],
    /// `tether_route_decisions_total` for the label `none` (no route judged), as above.
    no_route: [[IntCounter; 2]; crate::policy::Action::COUNT],
}

const PROTOCOLS: [&str; 2] = ["http1", "http2"];
const MODES: [crate::policy::Mode; 2] = [crate::policy::Mode::Enforce, crate::policy::Mode::Monitor];

fn mode_index(mode: crate::policy::Mode) -> usize {
    usize::from(mode == crate::policy::Mode::Monitor)
}

impl Hot {
    fn resolve(requests: &IntCounterVec, request_seconds: &HistogramVec, decisions: &IntCounterVec, route_decisions: &IntCounterVec) -> Hot {
        use crate::policy::Action;
        let by_mode = |vec: &IntCounterVec, route: Option<&str>, a: Action| {
            MODES.map(|mode| match route {
                Some(r) => vec.with_label_values(&[r, a.as_str(), mode.as_str()]),
                None => vec.with_label_values(&[a.as_str(), mode.as_str()]),
            })
        };
        Hot {
            requests: PROTOCOLS.map(|p| StatusClass::ALL.map(|c| requests.with_label_values(&[p, c.as_str()]))),
            request_seconds: PROTOCOLS.map(|p| request_seconds.with_label_values(&[p])),
            decisions: Action::ALL.map(|a| by_mode(decisions, None, a)),
            no_route: Action::ALL.map(|a| by_mode(route_decisions, Some(crate::policy::ROUTE_NONE), a)),
        }
    }
}

impl Metrics {
    /// Counts one answered request and its time from head to response head.
    pub fn request(&self, http2: bool, status: http::StatusCode, seconds: f64) {
        let p = usize::from(http2);
        self.hot.requests[p][StatusClass::of(status) as usize].inc();
        self.hot.request_seconds[p].observe(seconds);
    }

    /// Counts one decision, under its route's label too.
    pub fn decision(&self, route: &str, action: crate::policy::Action, mode: crate::policy::Mode) {
        let (a, m) = (action as usize, mode_index(mode));
        self.hot.decisions[a][m].inc();
        if route == crate::policy::ROUTE_NONE {
            self.hot.no_route[a][m].inc();
        } else {
            self.route_decisions.with_label_values(&[route, action.as_str(), mode.as_str()]).inc();
        }
    }
}

pub fn status_class(status: http::StatusCode) -> &'static str {
    StatusClass::of(status).as_str()
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
            assert!(line.starts_with("tether_") || line.starts_with("process_"), "{line}");
        }
    }

    #[test]
    fn build_info_and_process_metrics_are_exported() {
        let text = String::from_utf8(Metrics::new().render()).unwrap();
        let info = format!("tether_build_info{{commit=\"{COMMIT}\",version=\"{VERSION}\"}} 1");
        assert!(text.lines().any(|l| l == info), "{info} not in\n{text}");
        if cfg!(target_os = "linux") {
            for family in ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
                assert!(text.lines().any(|l| l.starts_with(family) && !l.ends_with(" 0")), "{family}");
            }
        }
    }

    #[test]
    fn certificate_expiry_is_absent_without_a_certificate_and_counts_down_with_one() {
        let m = Metrics::new();
        let has_series = |m: &Metrics| String::from_utf8(m.render()).unwrap().lines().any(|l| l.starts_with("tether_tls_certificate_expiry_seconds "));
        assert!(!has_series(&m));
        m.set_listener_certificate(Some(10_000));
        m.observe_certificate(9_000);
        let text = TextEncoder::new().encode_to_string(&m.registry.gather()).unwrap();
        assert!(text.lines().any(|l| l == "tether_tls_certificate_expiry_seconds 1000"), "{text}");
        m.observe_certificate(10_500);
        let text = TextEncoder::new().encode_to_string(&m.registry.gather()).unwrap();
        assert!(text.lines().any(|l| l == "tether_tls_certificate_expiry_seconds -500"), "{text}");
        m.set_listener_certificate(None);
        assert!(!has_series(&m));
    }

    #[test]
    fn route_decisions_start_at_zero_for_every_configured_label() {
        use crate::policy::{Action, Mode, Policy, Route};
        let m = Metrics::new();
        let route = |name: Option<&str>| Route { name: name.map(Into::into), path_prefix: "/x".into(), methods: vec![], sensitivity: 1.0, fresh_auth: None, fold_case: false };
        let policy = Policy { routes: vec![route(Some("tokens")), route(None)], ..Policy::default() };
        m.routes_in_force(&policy);
        m.decision("tokens", Action::StepUp, Mode::Enforce);
        m.decision("none", Action::Allow, Mode::Monitor);
        let text = String::from_utf8(m.render()).unwrap();
        for line in [
            r#"tether_route_decisions_total{action="step_up",mode="enforce",route="tokens"} 1"#,
            r#"tether_route_decisions_total{action="allow",mode="enforce",route="none"} 0"#,
            r#"tether_route_decisions_total{action="block",mode="enforce",route="unnamed"} 0"#,
            r#"tether_route_decisions_total{action="allow",mode="monitor",route="none"} 1"#,
            r#"tether_decisions_total{action="step_up",mode="enforce"} 1"#,
            r#"tether_decisions_total{action="allow",mode="monitor"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}");
        }
    }

    #[test]
    fn status_classes_by_first_digit() {
        for (code, class) in [(100, "1xx"), (101, "1xx"), (200, "2xx"), (308, "3xx"), (404, "4xx"), (500, "5xx"), (599, "5xx")] {
            let status = http::StatusCode::from_u16(code).unwrap();
            assert_eq!(status_class(status), class, "{code}");
        }
    }
}

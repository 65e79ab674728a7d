//! `tether replay`: the live pipeline ([`Detector::decide`]) run over JSON-lines traces,
//! with a fresh in-memory store and each line's own timestamp as "now", so an operator
//! sees what a policy would have done to real traffic before reloading it.
//!
//! Input lines are either traces (`ts`, `ip`, `method`, `path`, `headers`, optional
//! `ja4`, optional `session` instead of a cookie) or audit-log lines (`event` plus the
//! audit fields). The lines one request wrote to the audit log (binding, decision, new
//! address) share a timestamp and are replayed once.
//!
//! An audit line's `session` is already the session's keyed hash: it is judged under that
//! key, so the replay's ids are the audit log's. The audit log's state changes are applied
//! as they happened live — a completed step-up re-binds its session, a revocation revokes
//! it, an owner learned after the binding is learned — so what the live proxy allowed
//! after them is not reported as a step-up.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

use crate::audit::parse_rfc3339;
use std::sync::Arc;

use crate::config::UnknownOwner;
use crate::detector::{Detector, Identity, Proof, Request};
use crate::session::record::OwnerSource;
use crate::session::{HashKey, SessionKey};
use crate::fingerprint::{Fingerprint, Ja4};
use crate::intel::{Intel, NetInfo};
use crate::policy::{Action, Signal, Signals};
use crate::session::{Secs, Store, StoreLimits};

/// Longest accepted input line; a trace line is a request, not a body dump.
const MAX_LINE: usize = 64 * 1024;

#[derive(Deserialize)]
struct Line {
    ts: String,
    /// Every trace line has one; audit lines of revocations may not.
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    ja4: Option<String>,
    #[serde(default)]
    ja4_stable: Option<String>,
    #[serde(default)]
    session: Option<String>,
    // Audit-line fields.
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    ua: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    /// A decision line's signals: the lineage ones are carried into the replay (the
    /// companion value they were judged on is never logged).
    #[serde(default)]
    reasons: Vec<String>,
}

/// The key replay hashes raw session values with when the config names no
/// `session.hash_key_file`: fixed, so a trace's session ids are the same on every run.
/// (With the live proxy's key file they are the live ids.)
pub fn replay_key() -> HashKey {
    HashKey::new(*b"tether replay: stable session id", None)
}

/// One output line.
#[derive(Debug, Serialize, PartialEq)]
pub struct Outcome {
    pub line: usize,
    pub ts: String,
    pub session: Option<String>,
    pub user: Option<String>,
    pub ip: Option<String>,
    pub action: &'static str,
    pub score: u32,
    pub reasons: Vec<&'static str>,
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub allow: u64,
    pub step_up: u64,
    pub block: u64,
    pub revoke: u64,
    /// Requests without a session (not judged).
    pub unjudged: u64,
    /// Audit lines that repeat a request already replayed.
    pub duplicates: u64,
    /// Audit lines whose state change was applied (step-ups completed, revocations,
    /// owners learned).
    pub applied: u64,
    pub errors: u64,
}

pub struct Replayer<'a> {
    detector: &'a Detector,
    intel: Option<&'a Intel>,
    store: Store,
    last_key: Option<(String, String, String)>,
    pub summary: Summary,
}

impl<'a> Replayer<'a> {
    pub fn new(detector: &'a Detector, intel: Option<&'a Intel>, limits: StoreLimits) -> Self {
        Replayer { detector, intel, store: Store::memory(limits), last_key: None, summary: Summary::default() }
    }

    /// Replays one input line; `None` for a line that repeats the previous request.
    pub async fn line(&mut self, n: usize, text: &str) -> Option<Outcome> {
        let fail = |ts: String, e: String| Outcome {
            line: n,
            ts,
            session: None,
            user: None,
            ip: None,
            action: "error",
            score: 0,
            reasons: Vec::new(),
            mode: self.detector.mode().as_str(),
            error: Some(e),
        };
        if text.len() > MAX_LINE {
            self.summary.errors += 1;
            return Some(fail(String::new(), format!("line longer than {MAX_LINE} bytes")));
        }
        // Either audit format: an ECS line is read as the flat fields.
        let line: Line = match serde_json::from_str::<serde_json::Value>(text).and_then(|v| serde_json::from_value(crate::audit::from_ecs(v))) {
            Ok(l) => l,
            Err(e) => {
                self.summary.errors += 1;
                return Some(fail(String::new(), format!("not a trace line: {e}")));
            }
        };
        let Some(ts) = parse_rfc3339(&line.ts).and_then(|t| u32::try_from(t).ok()) else {
            self.summary.errors += 1;
            return Some(fail(line.ts.clone(), "ts is not an RFC 3339 time".into()));
        };
        let ip = line.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok());
        if let Some(event) = &line.event {
            if self.apply(event, &line, ts, ip).await {
                self.summary.applied += 1;
                return None;
            }
        }
        let Some(ip) = ip else {
            self.summary.errors += 1;
            return Some(fail(line.ts.clone(), "ip is missing or not an address".into()));
        };
        if let Some(event) = &line.event {
            let key = (line.ts.clone(), line.session.clone().unwrap_or_default(), ip.to_string());
            let repeat = self.last_key.as_ref() == Some(&key);
            self.last_key = Some(key);
            if repeat || !matches!(event.as_str(), "decision" | "session_bound" | "new_address") {
                self.summary.duplicates += 1;
                return None;
            }
        }
        Some(self.judge(n, &line, ts, ip).await)
    }

    /// Applies an audit line that changed a session's state live (a completed step-up, a
    /// revocation, an owner learned later); true when the line was one.
    async fn apply(&mut self, event: &str, line: &Line, now: Secs, ip: Option<IpAddr>) -> bool {
        let Some(key) = line.session.as_deref().and_then(SessionKey::parse_hex) else { return false };
        let user: Option<Arc<str>> = line.user.as_deref().map(Arc::from);
        match (event, ip) {
            ("step_up_completed", Some(ip)) => {
                let headers = self.headers(line);
                let fingerprint = fingerprint(line);
                let net = self.intel.map_or_else(NetInfo::unknown, |i| i.lookup(ip));
                let req = Request {
                    now,
                    ip,
                    net: &net,
                    method: &Method::GET,
                    path: "/",
                    query: None,
                    headers: &headers,
                    fingerprint: fingerprint.as_ref(),
                    peer_trusted: false,
                    asserted_user: None,
                    identify: false,
                    recheck: false,
                };
                // The live proxy already checked the owner: apply it as it was.
                let proof = Proof { auth_time: now, user: user.as_ref(), challenged_owner: user.as_ref(), unknown_owner: UnknownOwner::Adopt };
                let _ = self.detector.complete_step_up(&self.store, key, &req, &proof).await;
                true
            }
            ("session_revoked", _) => {
                let _ = self.store.revoke(key, now).await;
                true
            }
            ("owner_learned", _) => {
                let source = line.detail.as_deref().and_then(OwnerSource::parse).unwrap_or(OwnerSource::UserHeader);
                if let Some(u) = &user {
                    let _ = self.detector.learn_owner(&self.store, key, u, source, now).await;
                }
                true
            }
            _ => false,
        }
    }

    /// A line's headers, its `ua` and its session (a raw value, travelling as the first
    /// configured cookie so it takes the live identity step).
    fn headers(&self, line: &Line) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in &line.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                headers.append(k, v);
            }
        }
        if let Some(ua) = &line.ua {
            if let Ok(v) = HeaderValue::from_str(ua) {
                headers.insert(http::header::USER_AGENT, v);
            }
        }
        if let (Some(session), None) = (&line.session, &line.event) {
            let header = match self.detector.cookies().first() {
                Some(name) => (http::header::COOKIE, format!("{name}={session}")),
                None => (http::header::AUTHORIZATION, format!("Bearer {session}")),
            };
            if let Ok(v) = HeaderValue::from_str(&header.1) {
                headers.insert(header.0, v);
            }
        }
        headers
    }

    async fn judge(&mut self, n: usize, line: &Line, now: Secs, ip: IpAddr) -> Outcome {
        let headers = self.headers(line);
        let fingerprint = fingerprint(line);
        let net = self.intel.map_or_else(NetInfo::unknown, |i| i.lookup(ip));
        let method = line.method.as_deref().and_then(|m| Method::from_bytes(m.as_bytes()).ok()).unwrap_or(Method::GET);
        let path = line.path.as_deref().unwrap_or("/");
        let req = Request {
            now,
            ip,
            net: &net,
            method: &method,
            path,
            query: None,
            headers: &headers,
            fingerprint: fingerprint.as_ref(),
            peer_trusted: false,
            asserted_user: line.user.as_deref(),
            identify: false,
            recheck: false,
        };
        let mode = self.detector.mode().as_str();
        // An audit line names its session by the keyed hash: judged under that very key.
        let named = line.event.as_ref().and(line.session.as_deref()).and_then(SessionKey::parse_hex);
        let decided = match named {
            Some(key) => {
                let identity = Identity::named(key, line.user.as_deref().map(Arc::from)).carrying(carried(line));
                self.detector.judge(&self.store, &req, &identity).await.map(Some)
            }
            None => self.detector.decide(&self.store, &req).await,
        };
        match decided {
            Ok(Some(d)) => {
                match d.verdict.action {
                    Action::Allow => self.summary.allow += 1,
                    Action::StepUp => self.summary.step_up += 1,
                    Action::Block => self.summary.block += 1,
                    Action::Revoke => self.summary.revoke += 1,
                }
                Outcome {
                    line: n,
                    ts: line.ts.clone(),
                    session: Some(d.session.hex().as_str().to_owned()),
                    user: d.user.as_deref().map(str::to_owned),
                    ip: Some(ip.to_string()),
                    action: d.verdict.action.as_str(),
                    score: d.verdict.score,
                    reasons: d.verdict.signals.names(),
                    mode,
                    error: None,
                }
            }
            Ok(None) => {
                self.summary.unjudged += 1;
                Outcome { line: n, ts: line.ts.clone(), session: None, user: None, ip: Some(ip.to_string()), action: "allow", score: 0, reasons: Vec::new(), mode, error: None }
            }
            Err(e) => {
                self.summary.errors += 1;
                Outcome { error: Some(e.to_string()), ..Outcome { line: n, ts: line.ts.clone(), session: None, user: None, ip: Some(ip.to_string()), action: "error", score: 0, reasons: Vec::new(), mode, error: None } }
            }
        }
    }
}

/// The signals of an audit line that a replay cannot derive again: lineage verdicts, made
/// on a companion value that is never logged. Weighed by the policy being replayed.
fn carried(line: &Line) -> Signals {
    let mut s = Signals::default();
    for r in &line.reasons {
        if let Some(sig @ (Signal::SessionForked | Signal::LineageMissing)) = Signal::parse(r) {
            s.insert(sig);
        }
    }
    s
}

/// A line's JA4 (its stable form, when not given, is the same value).
fn fingerprint(line: &Line) -> Option<Fingerprint> {
    let ja4 = line.ja4.as_deref().and_then(|j| Ja4::parse(j.as_bytes()));
    let stable = line.ja4_stable.as_deref().and_then(|j| Ja4::parse(j.as_bytes())).or(ja4);
    ja4.zip(stable).map(|(ja4, ja4_stable)| Fingerprint { ja4, ja4_stable })
}

/// Reads a whole trace and calls `emit` for each outcome, in order.
pub async fn replay_reader<R: BufRead>(replayer: &mut Replayer<'_>, reader: R, mut emit: impl FnMut(&Outcome)) -> std::io::Result<()> {
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(o) = replayer.line(i + 1, &line).await {
            emit(&o);
        }
    }
    Ok(())
}

impl Outcome {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        match &self.error {
            Some(e) => format!("line {:>5}  error: {e}", self.line),
            None => format!(
                "{:<24} {:<16} {:<39} {:<8} {:>4}  {}",
                self.ts,
                self.session.as_deref().map_or("-", |s| &s[..16.min(s.len())]),
                self.ip.as_deref().unwrap_or("-"),
                self.action,
                self.score,
                self.reasons.join(",")
            ),
        }
    }
}

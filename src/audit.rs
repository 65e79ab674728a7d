//! The audit log: one JSON object per line, written off the request path by a
//! dedicated task. Never a raw cookie or token: sessions appear as their keyed hash.
//!
//! The request path hands an event to a bounded queue and moves on; if the writer falls
//! behind (a full disk, a stalled pipe) events are dropped and counted rather than
//! slowing requests down.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde::ser::{SerializeMap, Serializer};
use tokio::sync::mpsc;

use crate::config::{AuditFormat, AuditSink};
use crate::policy::Mode;
use crate::fingerprint::Ja4;
use crate::intel::NetInfo;
use crate::policy::{Action, Signals};
use crate::session::SessionKey;

/// Events queued before the writer; beyond it they are dropped and counted.
const QUEUE: usize = 16_384;
/// Longest user agent and path kept in a record (bounded lines, bounded memory).
const MAX_FIELD: usize = 512;

crate::labels::labels! {
    pub enum EventKind {
        SessionBound = "session_bound",
        Decision = "decision",
        NewAddress = "new_address",
        StepUpCompleted = "step_up_completed",
        StepUpFailed = "step_up_failed",
        SessionRevoked = "session_revoked",
        LogoutReceived = "logout_received",
        /// A request refused (400) because a credential, path or method in it has more
        /// than one reading; `detail` says which.
        RequestRefused = "request_refused",
        /// A request carrying something credential-shaped tether cannot read; judged as a
        /// first sight.
        UnrecognisedCredential = "unrecognised_credential",
        /// A session's owner became known after its first sight (`detail`: the source).
        OwnerLearned = "owner_learned",
        /// A source named another owner than the session's: `detail` says whether the
        /// name was refused or replaced a weakly learned owner, `claimed_user` the name.
        OwnerConflict = "owner_conflict",
        /// A silent identification came back without a user (`detail`: the reason); the
        /// request is judged by the policy as it stands.
        IdentifyFailed = "identify_failed",
        /// A device key registered for the session (DBSC): it is bound from now on.
        DbscRegistered = "dbsc_registered",
        /// A bound session's cookie renewed by a fresh key proof (`detail`:
        /// `reproved` when the proof answered a demand and re-bound the session).
        DbscRefreshed = "dbsc_refreshed",
        /// A registration or refresh refused (`detail`: why). Requests refused for want of
        /// a bound cookie are decision lines with the `dbsc_unproven` reason.
        DbscRefused = "dbsc_refused",
    }
}

/// One audit record. Optional fields are omitted when unknown.
#[derive(Debug, Clone)]
pub struct Event {
    pub ts: SystemTime,
    pub kind: EventKind,
    pub session: Option<SessionKey>,
    pub user: Option<Arc<str>>,
    pub ip: Option<IpAddr>,
    pub net: Option<NetInfo>,
    pub ja4: Option<Ja4>,
    pub ua: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub action: Option<Action>,
    pub score: Option<u32>,
    pub reasons: Signals,
    pub mode: Mode,
    /// A short machine-readable detail (a failure reason, who revoked).
    pub detail: Option<&'static str>,
    /// Another user a source named for the session (an owner conflict).
    pub claimed_user: Option<Arc<str>>,
    /// A reference shown to the client on a block page, to find this line.
    pub reference: Option<u64>,
}

impl Event {
    pub fn new(kind: EventKind, mode: Mode) -> Event {
        Event {
            ts: SystemTime::now(),
            kind,
            session: None,
            user: None,
            ip: None,
            net: None,
            ja4: None,
            ua: None,
            method: None,
            path: None,
            action: None,
            score: None,
            reasons: Signals::default(),
            mode,
            detail: None,
            claimed_user: None,
            reference: None,
        }
    }

    /// Serialises as one line of the Elastic Common Schema (`[audit] format = "ecs"`): the
    /// same facts as [`Event::to_json`], placed where ECS puts them, tether's own under
    /// `tether.*`. [`from_ecs`] reads it back.
    pub fn to_ecs(&self) -> String {
        use serde_json::{json, Map, Value};
        let flat: Value = serde_json::from_str(&self.to_json()).unwrap_or(Value::Null);
        let get = |k: &str| flat.get(k).cloned().filter(|v| !v.is_null());
        let mut root = Map::new();
        let mut put = |path: &str, v: Option<Value>| {
            let Some(v) = v else { return };
            let mut parts = path.split('.').peekable();
            let mut node = &mut root;
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    node.insert(part.to_owned(), v);
                    return;
                }
                let child = node.entry(part.to_owned()).or_insert_with(|| Value::Object(Map::new()));
                match child {
                    Value::Object(m) => node = m,
                    // invariant: the paths below never make a leaf a parent.
                    _ => return,
                }
            }
        };
        let outcome = match (self.kind, self.action) {
            (EventKind::StepUpCompleted | EventKind::DbscRegistered | EventKind::DbscRefreshed, _) => "success",
            (EventKind::StepUpFailed | EventKind::SessionRevoked | EventKind::RequestRefused | EventKind::IdentifyFailed | EventKind::DbscRefused, _) => "failure",
            (_, Some(Action::Allow)) => "success",
            (_, Some(_)) => "failure",
            _ => "unknown",
        };
        put("@timestamp", get("ts"));
        put("ecs.version", Some(json!(ECS_VERSION)));
        put("event.kind", Some(json!("event")));
        put("event.module", Some(json!("tether")));
        put("event.dataset", Some(json!("tether.audit")));
        put("event.category", Some(json!(["authentication", "session"])));
        put("event.action", get("event"));
        put("event.outcome", Some(json!(outcome)));
        put("event.risk_score", get("score"));
        put("event.reason", get("detail"));
        put("source.ip", get("ip"));
        put("source.as.number", get("asn"));
        put("source.as.organization.name", get("asn_org"));
        put("source.geo.country_iso_code", get("country"));
        put("user.name", get("user"));
        put("user_agent.original", get("ua"));
        put("tls.client.ja4", get("ja4"));
        put("http.request.method", get("method"));
        put("url.path", get("path"));
        for k in ["session", "action", "reasons", "mode", "category", "detail", "claimed_user", "ref"] {
            put(&format!("tether.{k}"), get(k));
        }
        Value::Object(root).to_string()
    }

    /// Serialises as one JSON line.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(512);
        let mut ser = serde_json::Serializer::new(&mut out);
        // invariant: serialising into a Vec cannot fail; every value is plain data.
        let _ = self.serialize_into(&mut ser);
        String::from_utf8(out).unwrap_or_default()
    }

    fn serialize_into<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("ts", &rfc3339(self.ts))?;
        m.serialize_entry("event", self.kind.as_str())?;
        if let Some(s) = &self.session {
            m.serialize_entry("session", s.hex().as_str())?;
        }
        if let Some(u) = &self.user {
            m.serialize_entry("user", &**u)?;
        }
        if let Some(ip) = &self.ip {
            m.serialize_entry("ip", &ip.to_string())?;
        }
        if let Some(net) = &self.net {
            if let Some(asn) = net.asn {
                m.serialize_entry("asn", &asn.0)?;
            }
            if let Some(org) = &net.org {
                m.serialize_entry("asn_org", &**org)?;
            }
            if let Some(c) = net.country {
                m.serialize_entry("country", c.as_str())?;
            }
            m.serialize_entry("category", net.category.as_str())?;
        }
        if let Some(j) = &self.ja4 {
            m.serialize_entry("ja4", j.as_str())?;
        }
        if let Some(ua) = &self.ua {
            m.serialize_entry("ua", ua)?;
        }
        if let Some(x) = &self.method {
            m.serialize_entry("method", x)?;
        }
        if let Some(x) = &self.path {
            m.serialize_entry("path", x)?;
        }
        if let Some(a) = self.action {
            m.serialize_entry("action", a.as_str())?;
        }
        if let Some(s) = self.score {
            m.serialize_entry("score", &s)?;
        }
        m.serialize_entry("reasons", &self.reasons.names())?;
        m.serialize_entry("mode", self.mode.as_str())?;
        if let Some(d) = self.detail {
            m.serialize_entry("detail", d)?;
        }
        if let Some(u) = &self.claimed_user {
            m.serialize_entry("claimed_user", &**u)?;
        }
        if let Some(r) = self.reference {
            m.serialize_entry("ref", &format!("{r:016x}"))?;
        }
        m.end()
    }
}

/// Truncates a header-borne string to a bounded, valid UTF-8 prefix.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// RFC 3339 UTC with milliseconds, without a date library.
pub fn rfc3339(ts: SystemTime) -> String {
    let d = ts.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, da) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses RFC 3339 (`2022-12-16T00:00:00Z`, offsets and fractions allowed) to seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') && rest.as_bytes()[3] == b':' => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (inverse of civil_from_days).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// The ECS version `[audit] format = "ecs"` writes.
pub const ECS_VERSION: &str = "8.11.0";

/// An ECS audit line (`@timestamp`, …) as the flat fields of tether's own format, so
/// `hunt` and `replay` read either; any other line is returned as it is.
pub fn from_ecs(v: serde_json::Value) -> serde_json::Value {
    use serde_json::{Map, Value};
    if v.get("@timestamp").is_none() {
        return v;
    }
    let at = |path: &str| {
        let mut node = &v;
        for part in path.split('.') {
            node = node.get(part)?;
        }
        (!node.is_null()).then(|| node.clone())
    };
    let mut flat = Map::new();
    for (field, path) in [
        ("ts", "@timestamp"),
        ("event", "event.action"),
        ("score", "event.risk_score"),
        ("ip", "source.ip"),
        ("asn", "source.as.number"),
        ("asn_org", "source.as.organization.name"),
        ("country", "source.geo.country_iso_code"),
        ("user", "user.name"),
        ("ua", "user_agent.original"),
        ("ja4", "tls.client.ja4"),
        ("method", "http.request.method"),
        ("path", "url.path"),
        ("session", "tether.session"),
        ("action", "tether.action"),
        ("reasons", "tether.reasons"),
        ("mode", "tether.mode"),
        ("category", "tether.category"),
        ("detail", "tether.detail"),
        ("claimed_user", "tether.claimed_user"),
        ("ref", "tether.ref"),
    ] {
        if let Some(x) = at(path) {
            flat.insert(field.to_owned(), x);
        }
    }
    Value::Object(flat)
}

/// The sending side, held by the request path.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Event>,
    dropped: IntCounter,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open audit log {}: {source}", path.display())]
pub struct AuditOpenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl AuditLog {
    /// Opens the sink and starts the writer task.
    pub fn start(sink: &AuditSink, format: AuditFormat, dropped: IntCounter, write_errors: IntCounter) -> Result<AuditLog, AuditOpenError> {
        let out: Box<dyn Write + Send> = match sink {
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditOpenError { path: path.clone(), source })?,
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(rx, out, format, write_errors));
        Ok(AuditLog { tx, dropped })
    }

    pub fn record(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.dropped.inc();
        }
    }
}

async fn write_loop(mut rx: mpsc::Receiver<Event>, out: Box<dyn Write + Send>, format: AuditFormat, errors: IntCounter) {
    let mut out = std::io::BufWriter::new(out);
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for e in batch.drain(..) {
            let mut line = match format {
                AuditFormat::Json => e.to_json(),
                AuditFormat::Ecs => e.to_ecs(),
            };
            line.push('\n');
            if out.write_all(line.as_bytes()).is_err() {
                errors.inc();
            }
        }
        // Flushed per batch: a crash loses at most what was still queued.
        if out.flush().is_err() {
            errors.inc();
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for (secs, text) in [(0, "1970-01-01T00:00:00.000Z"), (1_671_148_800, "2022-12-16T00:00:00.000Z"), (951_782_400, "2000-02-29T00:00:00.000Z")] {
            assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)), text);
            assert_eq!(parse_rfc3339(text), Some(secs as i64));
        }
        assert_eq!(parse_rfc3339("2023-01-05T23:59:59+01:00"), parse_rfc3339("2023-01-05T22:59:59Z"));
        assert_eq!(parse_rfc3339("2023-01-05T10:00:00.123456Z"), parse_rfc3339("2023-01-05T10:00:00Z"));
        for bad in ["2023-13-01T00:00:00Z", "yesterday", "2023-01-05", "2023-01-05T10:00:00", "2023-01-05T10:00:00.Z"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn event_json_has_contract_fields_and_no_secrets() {
        let mut e = Event::new(EventKind::Decision, Mode::Enforce);
        e.session = Some(SessionKey([0xab; 16]));
        e.user = Some(Arc::from("alice"));
        e.ip = Some("127.0.2.9".parse().unwrap());
        e.action = Some(Action::StepUp);
        e.score = Some(85);
        e.method = Some("GET".into());
        e.path = Some("/".into());
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["event"], "decision");
        assert_eq!(v["session"], "ab".repeat(16));
        assert_eq!(v["action"], "step_up");
        assert_eq!(v["mode"], "enforce");
        assert!(v["reasons"].as_array().unwrap().is_empty());
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(bounded(&"é".repeat(400)).len(), 512);
    }

    #[test]
    fn ecs_lines_carry_the_same_facts_and_read_back() {
        let mut e = Event::new(EventKind::StepUpFailed, Mode::Enforce);
        e.session = Some(SessionKey([0xab; 16]));
        e.user = Some(Arc::from("alice"));
        e.claimed_user = Some(Arc::from("mallory"));
        e.ip = Some("127.0.2.9".parse().unwrap());
        e.net = Some(NetInfo { asn: Some(crate::intel::Asn(39351)), country: crate::intel::Country::new("SE"), ..NetInfo::unknown() });
        e.ua = Some("Mozilla/5.0".into());
        e.detail = Some("wrong_user");
        let v: serde_json::Value = serde_json::from_str(&e.to_ecs()).unwrap();
        // (ECS path, value)
        let rows = [
            ("/event/action", serde_json::json!("step_up_failed")),
            ("/event/outcome", serde_json::json!("failure")),
            ("/event/reason", serde_json::json!("wrong_user")),
            ("/source/ip", serde_json::json!("127.0.2.9")),
            ("/source/as/number", serde_json::json!(39351)),
            ("/source/geo/country_iso_code", serde_json::json!("SE")),
            ("/user/name", serde_json::json!("alice")),
            ("/user_agent/original", serde_json::json!("Mozilla/5.0")),
            ("/tether/session", serde_json::json!("ab".repeat(16))),
            ("/tether/claimed_user", serde_json::json!("mallory")),
            ("/ecs/version", serde_json::json!(ECS_VERSION)),
        ];
        for (path, want) in rows {
            assert_eq!(v.pointer(path), Some(&want), "{path} in {v}");
        }
        assert!(v["@timestamp"].as_str().unwrap().ends_with('Z'));
        // Read back, it is the flat line.
        let flat: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(from_ecs(v), flat);
        // A flat line passes through untouched.
        assert_eq!(from_ecs(flat.clone()), flat);
    }
}

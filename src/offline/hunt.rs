//! `tether hunt`: which sessions and users touched an indicator of compromise, and when.
//!
//! IoC lists are published after the fact, so this reads the audit log tether already
//! wrote, which records every new address a session is seen from even when the request
//! was allowed. An indicator matches a line by its address (IP or CIDR) or its ASN; a
//! hunted signal (`--signal session_forked`) by the line's reasons, so a cloned session,
//! which no address gives away, is found too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::audit::parse_rfc3339;
use crate::intel::lists::{IocFile, IocSet, ListError};
use crate::intel::Asn;
use crate::policy::Signal;

/// Distinct routes listed per session; more are counted, not listed.
const MAX_ROUTES: usize = 50;

#[derive(Deserialize)]
struct AuditLine {
    ts: String,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    asn: Option<u32>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    reasons: Vec<String>,
}

/// One session that touched an indicator.
#[derive(Debug, Serialize, PartialEq)]
pub struct SessionHit {
    pub session: String,
    pub users: BTreeSet<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// Addresses the session was seen from that matched an indicator.
    pub addresses: BTreeSet<String>,
    pub asns: BTreeSet<u32>,
    /// The indicators matched, as written in their files, with the file's label.
    pub iocs: BTreeSet<String>,
    /// `METHOD path` from the matching lines.
    pub routes: BTreeSet<String>,
    pub routes_truncated: bool,
    /// What tether did at the time (allow, step_up, block, revoke).
    pub actions: BTreeSet<String>,
    /// The hunted signals its lines raised.
    pub signals: BTreeSet<String>,
    pub lines: u64,
    #[serde(skip)]
    first: i64,
    #[serde(skip)]
    last: i64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct UserHit {
    pub user: String,
    pub sessions: BTreeSet<String>,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub since: Option<String>,
    pub until: Option<String>,
    pub lines_read: u64,
    pub lines_matched: u64,
    pub lines_unreadable: u64,
    pub sessions: Vec<SessionHit>,
    pub users: Vec<UserHit>,
}

#[derive(Debug, thiserror::Error)]
pub enum HuntError {
    #[error(transparent)]
    Ioc(#[from] ListError),
    #[error("{0} is not an RFC 3339 time")]
    Time(String),
}

pub struct Hunt {
    iocs: IocSet,
    signals: Vec<Signal>,
    since: Option<i64>,
    until: Option<i64>,
    since_text: Option<String>,
    until_text: Option<String>,
    sessions: BTreeMap<String, SessionHit>,
    report: Report,
}

impl Hunt {
    /// Lines match an indicator of `ioc_files` or one of `signals` among their reasons.
    pub fn new(ioc_files: &[std::path::PathBuf], signals: &[Signal], since: Option<&str>, until: Option<&str>) -> Result<Hunt, HuntError> {
        let files: Vec<IocFile> = ioc_files
            .iter()
            .map(|p| IocFile { path: p.clone(), label: p.file_stem().map_or_else(|| "ioc".into(), |s| s.to_string_lossy().into_owned()) })
            .collect();
        let parse = |s: Option<&str>| s.map(|t| parse_rfc3339(t).ok_or_else(|| HuntError::Time(t.to_owned()))).transpose();
        Ok(Hunt {
            iocs: IocSet::load(&files)?,
            signals: signals.to_vec(),
            since: parse(since)?,
            until: parse(until)?,
            since_text: since.map(str::to_owned),
            until_text: until.map(str::to_owned),
            sessions: BTreeMap::new(),
            report: Report::default(),
        })
    }

    pub fn read<R: BufRead>(&mut self, reader: R) -> std::io::Result<()> {
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            self.report.lines_read += 1;
            let parsed = serde_json::from_str::<serde_json::Value>(&line).and_then(|v| serde_json::from_value::<AuditLine>(crate::audit::from_ecs(v)));
            match parsed {
                Ok(l) => self.line(l),
                Err(_) => self.report.lines_unreadable += 1,
            }
        }
        Ok(())
    }

    fn line(&mut self, l: AuditLine) {
        let Some(ts) = parse_rfc3339(&l.ts) else {
            self.report.lines_unreadable += 1;
            return;
        };
        if self.since.is_some_and(|s| ts < s) || self.until.is_some_and(|u| ts > u) {
            return;
        }
        let (Some(session), Some(ip)) = (l.session.clone(), l.ip.as_deref().and_then(|i| i.parse::<IpAddr>().ok())) else { return };
        let matches = self.iocs.matches(ip, l.asn.map(Asn));
        let signalled: Vec<&String> = l.reasons.iter().filter(|r| self.signals.iter().any(|s| s.as_str() == r.as_str())).collect();
        if matches.is_empty() && signalled.is_empty() {
            return;
        }
        self.report.lines_matched += 1;
        let hit = self.sessions.entry(session.clone()).or_insert_with(|| SessionHit {
            session,
            users: BTreeSet::new(),
            first_seen: l.ts.clone(),
            last_seen: l.ts.clone(),
            addresses: BTreeSet::new(),
            asns: BTreeSet::new(),
            iocs: BTreeSet::new(),
            routes: BTreeSet::new(),
            routes_truncated: false,
            actions: BTreeSet::new(),
            signals: BTreeSet::new(),
            lines: 0,
            first: ts,
            last: ts,
        });
        if ts < hit.first {
            hit.first = ts;
            hit.first_seen = l.ts.clone();
        }
        if ts > hit.last {
            hit.last = ts;
            hit.last_seen = l.ts.clone();
        }
        hit.lines += 1;
        if let Some(u) = l.user {
            hit.users.insert(u);
        }
        hit.addresses.insert(ip.to_string());
        if let Some(a) = l.asn {
            hit.asns.insert(a);
        }
        for m in matches {
            hit.iocs.insert(format!("{} ({})", m.entry, m.label));
        }
        hit.signals.extend(signalled.into_iter().cloned());
        if let (Some(m), Some(p)) = (l.method, l.path) {
            if hit.routes.len() < MAX_ROUTES {
                hit.routes.insert(format!("{m} {p}"));
            } else {
                hit.routes_truncated = true;
            }
        }
        if let Some(a) = l.action {
            hit.actions.insert(a);
        }
    }

    pub fn finish(mut self) -> Report {
        let mut users: BTreeMap<String, UserHit> = BTreeMap::new();
        let mut firsts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for hit in self.sessions.values() {
            for u in &hit.users {
                let entry = users.entry(u.clone()).or_insert_with(|| UserHit {
                    user: u.clone(),
                    sessions: BTreeSet::new(),
                    first_seen: hit.first_seen.clone(),
                    last_seen: hit.last_seen.clone(),
                });
                entry.sessions.insert(hit.session.clone());
                let span = firsts.entry(u.clone()).or_insert((hit.first, hit.last));
                if hit.first < span.0 {
                    span.0 = hit.first;
                    entry.first_seen = hit.first_seen.clone();
                }
                if hit.last > span.1 {
                    span.1 = hit.last;
                    entry.last_seen = hit.last_seen.clone();
                }
            }
        }
        let mut sessions: Vec<SessionHit> = self.sessions.into_values().collect();
        sessions.sort_by_key(|h| h.first);
        self.report.sessions = sessions;
        self.report.users = users.into_values().collect();
        self.report.since = self.since_text;
        self.report.until = self.until_text;
        self.report
    }
}

impl Report {
    /// The table an incident responder reads.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.sessions.is_empty() {
            out.push_str("no session touched an indicator");
        } else {
            out.push_str(&format!("{} session(s), {} user(s) touched an indicator\n\n", self.sessions.len(), self.users.len()));
            out.push_str(&format!("{:<18} {:<16} {:<24} {:<24} {:<8}  {}\n", "SESSION", "USER", "FIRST SEEN", "LAST SEEN", "ACTIONS", "ADDRESSES"));
            for s in &self.sessions {
                let users: Vec<&str> = s.users.iter().map(String::as_str).collect();
                out.push_str(&format!(
                    "{:<18} {:<16} {:<24} {:<24} {:<8}  {}\n",
                    &s.session[..16.min(s.session.len())],
                    if users.is_empty() { "-".to_owned() } else { users.join(",") },
                    s.first_seen,
                    s.last_seen,
                    s.actions.iter().cloned().collect::<Vec<_>>().join(","),
                    s.addresses.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
                out.push_str(&format!("    iocs:   {}\n", s.iocs.iter().cloned().collect::<Vec<_>>().join(", ")));
                if !s.signals.is_empty() {
                    out.push_str(&format!("    signals: {}\n", s.signals.iter().cloned().collect::<Vec<_>>().join(", ")));
                }
                out.push_str(&format!("    routes: {}{}\n", s.routes.iter().cloned().collect::<Vec<_>>().join(", "), if s.routes_truncated { ", …" } else { "" }));
            }
        }
        out.push_str(&format!("\n({} lines read, {} matched, {} unreadable)\n", self.lines_read, self.lines_matched, self.lines_unreadable));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sessions_by_address_cidr_and_asn_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let ioc = dir.path().join("circleci.txt");
        std::fs::write(&ioc, "178.249.214.10\n89.36.78.0/24\nAS30475\n").unwrap();
        let log = [
            r#"{"ts":"2022-12-15T10:00:00.000Z","event":"session_bound","session":"aaaa","user":"alice","ip":"192.0.2.1","asn":64496}"#,
            r#"{"ts":"2022-12-17T10:00:00.000Z","event":"new_address","session":"aaaa","user":"alice","ip":"178.249.214.10","asn":60068,"method":"GET","path":"/api/v2/me","action":"allow"}"#,
            r#"{"ts":"2022-12-18T11:00:00.000Z","event":"decision","session":"aaaa","user":"alice","ip":"89.36.78.75","asn":9009,"method":"POST","path":"/api/v2/tokens","action":"step_up"}"#,
            r#"{"ts":"2022-12-20T09:00:00.000Z","event":"session_bound","session":"bbbb","ip":"72.18.132.58","asn":30475,"method":"GET","path":"/","action":"allow"}"#,
            r#"{"ts":"2023-02-01T09:00:00.000Z","event":"new_address","session":"cccc","user":"carol","ip":"178.249.214.10","asn":60068}"#,
            "not json",
        ]
        .join("\n");
        let mut hunt = Hunt::new(&[ioc], &[], Some("2022-12-16T00:00:00Z"), Some("2023-01-05T23:59:59Z")).unwrap();
        hunt.read(log.as_bytes()).unwrap();
        let r = hunt.finish();
        assert_eq!(r.lines_read, 6);
        assert_eq!(r.lines_unreadable, 1);
        assert_eq!(r.sessions.len(), 2, "carol is outside the window: {:?}", r.sessions);
        let a = &r.sessions[0];
        assert_eq!(a.session, "aaaa");
        assert_eq!(a.first_seen, "2022-12-17T10:00:00.000Z");
        assert_eq!(a.last_seen, "2022-12-18T11:00:00.000Z");
        assert!(a.iocs.contains("178.249.214.10 (circleci)") && a.iocs.contains("89.36.78.0/24 (circleci)"));
        assert!(a.routes.contains("POST /api/v2/tokens"));
        assert_eq!(a.actions.iter().map(String::as_str).collect::<Vec<_>>(), vec!["allow", "step_up"]);
        assert!(r.sessions[1].iocs.contains("AS30475 (circleci)"));
        assert_eq!(r.users.len(), 1);
        assert_eq!(r.users[0].user, "alice");
        assert!(r.to_text().contains("alice"));
        assert!(Hunt::new(&[], &[], Some("last tuesday"), None).is_err());
    }

    #[test]
    fn finds_forked_sessions_by_their_reasons() {
        let log = [
            r#"{"ts":"2026-03-02T10:00:00.000Z","event":"decision","session":"aaaa","user":"alice","ip":"192.0.2.1","asn":64496,"method":"GET","path":"/admin","action":"allow","reasons":[]}"#,
            r#"{"ts":"2026-03-02T10:05:00.000Z","event":"decision","session":"aaaa","user":"alice","ip":"192.0.2.77","asn":64496,"method":"GET","path":"/admin","action":"step_up","reasons":["session_forked"]}"#,
            r#"{"ts":"2026-03-02T11:00:00.000Z","event":"decision","session":"bbbb","ip":"192.0.2.9","asn":64496,"method":"GET","path":"/","action":"step_up","reasons":["lineage_missing","ja4_change"]}"#,
            r#"{"ts":"2026-03-02T12:00:00.000Z","event":"decision","session":"cccc","ip":"192.0.2.9","asn":64496,"method":"GET","path":"/","action":"step_up","reasons":["ja4_change"]}"#,
        ]
        .join("\n");
        let mut hunt = Hunt::new(&[], &[Signal::SessionForked, Signal::LineageMissing], None, None).unwrap();
        hunt.read(log.as_bytes()).unwrap();
        let r = hunt.finish();
        assert_eq!(r.sessions.iter().map(|s| s.session.as_str()).collect::<Vec<_>>(), ["aaaa", "bbbb"]);
        assert_eq!(r.sessions[0].signals.iter().map(String::as_str).collect::<Vec<_>>(), ["session_forked"]);
        assert_eq!(r.sessions[0].first_seen, "2026-03-02T10:05:00.000Z", "only the lines that raised it");
        assert_eq!(r.sessions[1].signals.iter().map(String::as_str).collect::<Vec<_>>(), ["lineage_missing"]);
        assert!(r.to_text().contains("signals: session_forked"));
    }
}

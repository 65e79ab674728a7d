//! The loops beside the load: admin API calls and revocations, SIGHUP reloads, RSS
//! samples and metric scrapes. Each stops with the run, or at its own count cap.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::load::Shared;
use crate::setup::{signal, write_config, Files};
use crate::{Rng, Settings, QUOTED_ERRORS, REQUEST_TIMEOUT};

#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) addr: SocketAddr,
    pub(crate) token: String,
}

impl Admin {
    pub(crate) async fn call(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        let go = async {
            let tcp = TcpStream::connect(self.addr).await.map_err(|e| format!("admin connect: {e}"))?;
            let (mut send, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("admin handshake: {e}"))?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "admin")
                .header("authorization", format!("Bearer {}", self.token))
                .body(Full::new(Bytes::new()))
                .map_err(|e| format!("admin request: {e}"))?;
            let resp = send.send_request(req).await.map_err(|e| format!("admin: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.map_err(|e| format!("admin body: {e}"))?.to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, go).await.map_err(|_| format!("admin {path}: no answer"))?
    }

    pub(crate) async fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.call("GET", path).await
    }
}

/// Admin revocations: five a second, of hot and random population sessions.
#[derive(Debug, Default, Clone)]
pub(crate) struct Revocations {
    pub(crate) calls: u64,
    pub(crate) tracked: u64,
    pub(crate) failures: u64,
    pub(crate) quoted: Vec<String>,
}

pub(crate) async fn revoke_loop(admin: Admin, shared: Arc<Shared>, stop: Arc<AtomicBool>) -> Revocations {
    let mut rng = Rng::seeded();
    let mut out = Revocations::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !stop.load(Ordering::Relaxed) && out.calls < 1_000_000 {
        tick.tick().await;
        let i = if rng.percent(50) { rng.below(shared.hot) } else { rng.below(shared.sessions) };
        let key = shared.hash_key.session_key(b"session", format!("soak-p{i:08}").as_bytes());
        out.calls += 1;
        let result = admin.call("POST", &format!("/api/sessions/{}/revoke", key.hex().as_str())).await;
        match result {
            Ok((200, body)) => out.tracked += u64::from(body.contains("\"was_tracked\":true")),
            Ok((status, body)) => {
                out.failures += 1;
                if out.quoted.len() < QUOTED_ERRORS {
                    out.quoted.push(format!("revoke: {status} {body}"));
                }
            }
            Err(e) => {
                out.failures += 1;
                if out.quoted.len() < QUOTED_ERRORS {
                    out.quoted.push(e);
                }
            }
        }
        // Now and then the read side of the API too.
        if out.calls % 25 == 0 {
            for path in ["/api/policy", "/api/sessions?user=soak-nobody"] {
                match admin.get(path).await {
                    Ok((200, _)) => {}
                    other => {
                        out.failures += 1;
                        if out.quoted.len() < QUOTED_ERRORS {
                            out.quoted.push(format!("{path}: {other:?}"));
                        }
                    }
                }
            }
        }
    }
    out
}

/// SIGHUP every few seconds, each after writing the other variant of the config.
pub(crate) async fn reload_loop(s: Settings, f: Files, upstream: SocketAddr, pid: u32, stop: Arc<AtomicBool>) -> u64 {
    let mut hups = 0;
    let mut tick = tokio::time::interval(s.reload_every);
    tick.tick().await;
    while !stop.load(Ordering::Relaxed) && hups < 100_000 {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if write_config(&s, &f, upstream, hups + 1).is_ok() && signal(pid, "HUP").is_ok() {
            hups += 1;
        }
    }
    hups
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Memory {
    pub(crate) samples: u64,
    pub(crate) peak_rss_kib: u64,
    pub(crate) hwm_kib: u64,
    /// (seconds into the run, RSS KiB), about one per tenth of the run.
    pub(crate) trace: Vec<(u64, u64)>,
}

pub(crate) fn status_kib(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Samples `/proc/PID/status` twice a second: VmRSS (now) and VmHWM (the kernel's peak).
pub(crate) async fn sample_rss(pid: u32, secs: u64, stop: Arc<AtomicBool>) -> Memory {
    let path = format!("/proc/{pid}/status");
    let start = Instant::now();
    let mut m = Memory::default();
    let mut last_trace = 0;
    while !stop.load(Ordering::Relaxed) && m.samples < 1_000_000 {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let rss = status_kib(&text, "VmRSS:").unwrap_or(0);
            m.peak_rss_kib = m.peak_rss_kib.max(rss);
            m.hwm_kib = m.hwm_kib.max(status_kib(&text, "VmHWM:").unwrap_or(0));
            m.samples += 1;
            let t = start.elapsed().as_secs();
            if t >= last_trace {
                m.trace.push((t, rss));
                last_trace = t + (secs / 10).max(1);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    m
}

/// The store's size and the open connections, sampled from `/metrics` every 2 s.
#[derive(Debug, Default, Clone)]
pub(crate) struct Peaks {
    pub(crate) scrapes: u64,
    pub(crate) failures: u64,
    pub(crate) sessions: f64,
    pub(crate) connections: f64,
}

/// Every non-zero sample of a metric family on one line: `label=value …`.
pub(crate) fn family(text: &str, name: &str) -> String {
    let parts: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            let value: f64 = value.trim().parse().ok()?;
            let labels: Vec<&str> = labels.split(',').filter_map(|kv| kv.split_once('=')).map(|(_, v)| v.trim_matches('"')).collect();
            (value > 0.0).then(|| format!("{}={value:.0}", labels.join("/")))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

pub(crate) fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
}

pub(crate) async fn scrape_metrics(admin: Admin, stop: Arc<AtomicBool>) -> Peaks {
    let mut p = Peaks::default();
    while !stop.load(Ordering::Relaxed) && p.scrapes < 1_000_000 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.scrapes += 1;
        match admin.get("/metrics").await {
            Ok((200, text)) => {
                p.sessions = p.sessions.max(sample(&text, "tether_sessions ").unwrap_or(0.0));
                p.connections = p.connections.max(sample(&text, "tether_connections_open ").unwrap_or(0.0));
            }
            _ => p.failures += 1,
        }
    }
    p
}

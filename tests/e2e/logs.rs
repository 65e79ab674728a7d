//! tether's own log on stderr: JSON lines with stable field names, one line saying why
//! for every 5xx tether answers itself, access lines without credentials.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};

use super::support::HANG_GUARD;

/// A running `tether run` whose stderr lines arrive on a channel.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &str, format_env: Option<&str>) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.args(["run", "--config"]).arg(&path).env_remove("TETHER_LOG").env_remove("TETHER_LOG_FORMAT");
    if let Some(f) = format_env {
        cmd.env("TETHER_LOG_FORMAT", f);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Proc { child, lines, _dir: dir }
}

impl Proc {
    /// The next line, parsed: every line must be one JSON object.
    fn next_json(&self) -> serde_json::Value {
        let line = self.lines.recv_timeout(HANG_GUARD).expect("a log line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
    }

    /// Lines until one matches; every line on the way must parse.
    fn until(&self, what: &str, found: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        loop {
            let line = self.next_json();
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(line.get(key).is_some(), "{key} missing in {line}");
            }
            assert!(line["fields"]["message"].is_string(), "no message in {line}");
            if found(&line) {
                return line;
            }
            assert!(line["level"] != "ERROR", "while waiting for {what}: {line}");
        }
    }

    fn listening(&self) -> SocketAddr {
        let line = self.until("the listening line", |l| l["fields"]["proxy_addr"].is_string());
        line["fields"]["proxy_addr"].as_str().unwrap().parse().unwrap()
    }
}

/// A port nobody listens on: bound, then released.
fn refusing_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(addr: SocketAddr, target: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG_GUARD)).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: console.example\r\nCookie: session=stolen-cookie-value\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn config(format: &str, upstream_port: u16) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:{upstream_port}\"\n[admin]\naddr = \"127.0.0.1:0\"\n[session]\ncookies = [\"session\"]\n[log]\nformat = \"{format}\"\naccess = true\n"
    )
}

#[test]
fn json_logs_parse_line_by_line_and_a_502_says_why() {
    let p = spawn(&config("json", refusing_port()), None);
    let addr = p.listening();
    let answer = get(addr, "/console/settings?token=query-secret");
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");

    let why = p.until("the 502's line", |l| l["fields"]["status"] == 502 && l["level"] == "WARN");
    assert_eq!(why["fields"]["reason"], "upstream_refused", "{why}");
    assert_eq!(why["fields"]["path"], "/console/settings", "{why}");
    assert!(why["fields"]["message"].as_str().unwrap().contains("refused"), "{why}");

    let access = p.until("the access line", |l| l["target"] == "tether::access");
    assert_eq!(access["level"], "INFO");
    let f = &access["fields"];
    assert_eq!((f["method"].as_str(), f["path"].as_str(), f["status"].as_u64()), (Some("GET"), Some("/console/settings"), Some(502)), "{access}");
    assert!(f["duration_ms"].as_f64().is_some(), "{access}");

    // Nothing a client sent as a credential reaches the log.
    for line in [&why, &access] {
        let text = line.to_string();
        for secret in ["stolen-cookie-value", "query-secret"] {
            assert!(!text.contains(secret), "{secret} logged: {text}");
        }
    }
}

#[test]
fn the_environment_wins_over_the_file_and_is_checked() {
    // The file says text; TETHER_LOG_FORMAT says JSON.
    let p = spawn(&config("text", refusing_port()), Some("json"));
    p.listening();
    drop(p);

    let mut p = spawn(&config("text", refusing_port()), Some("yaml"));
    // The channel closes when the process has exited and its stderr is done.
    let mut text = Vec::new();
    while let Ok(line) = p.lines.recv_timeout(HANG_GUARD) {
        text.push(line);
    }
    assert_eq!(p.child.wait().unwrap().code(), Some(2), "a bad TETHER_LOG_FORMAT is a usage error");
    assert!(text.join("\n").contains("TETHER_LOG_FORMAT"), "{text:?}");
}

#[test]
fn a_502_names_a_tls_failure_towards_the_upstream() {
    // An HTTPS upstream whose certificate tether was not told to trust.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let certs = super::support::certs();
    let upstream = runtime.block_on(super::support::spawn_upstream(Some(&certs)));
    let config = config("json", upstream.port()).replace("url = \"http://", "url = \"https://");
    let p = spawn(&config, None);
    let answer = get(p.listening(), "/console");
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let why = p.until("the 502's line", |l| l["fields"]["status"] == 502 && l["level"] == "WARN");
    assert_eq!(why["fields"]["reason"], "upstream_tls", "{why}");
}

#[test]
fn a_502_names_a_failed_lookup_of_the_upstream() {
    // `.invalid` never resolves (RFC 6761): the lookup fails, not the connect.
    let config = config("json", 80).replace("127.0.0.1:80", "tether-upstream.invalid:80");
    let p = spawn(&config, None);
    let answer = get(p.listening(), "/console");
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let why = p.until("the 502's line", |l| l["fields"]["status"] == 502 && l["level"] == "WARN");
    assert_eq!(why["fields"]["reason"], "upstream_dns", "{why}");
}

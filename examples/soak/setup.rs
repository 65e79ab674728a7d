//! What the soak runs against: the work directory (certificate, session hash key, admin
//! token, config), the tether child and its signals, and a minimal upstream.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{Settings, FRESH_ROUTE};

#[derive(Clone)]
pub(crate) struct Files {
    pub(crate) config: PathBuf,
    pub(crate) token: String,
    pub(crate) hash_key: [u8; 32],
    pub(crate) cert_der: rustls::pki_types::CertificateDer<'static>,
    pub(crate) geolite: PathBuf,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Certificate, session hash key and admin token in the work directory. The hash key is
/// the generator's too, so it can name sessions to the admin API.
pub(crate) async fn prepare(s: &Settings) -> Result<Files, String> {
    std::fs::create_dir_all(&s.dir).map_err(|e| format!("{}: {e}", s.dir.display()))?;
    let write = |name: &str, text: &str| std::fs::write(s.dir.join(name), text).map_err(|e| format!("{name}: {e}"));
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).map_err(|e| format!("certificate: {e}"))?;
    write("tls.crt", &ck.cert.pem())?;
    write("tls.key", &ck.signing_key.serialize_pem())?;
    let mut hash_key = [0u8; 32];
    let mut token = [0u8; 24];
    getrandom::fill(&mut hash_key).map_err(|e| format!("randomness: {e}"))?;
    getrandom::fill(&mut token).map_err(|e| format!("randomness: {e}"))?;
    write("session.key", &(hex(&hash_key) + "\n"))?;
    let token = hex(&token);
    write("admin.token", &(token.clone() + "\n"))?;
    let geolite = Path::new(env!("CARGO_MANIFEST_DIR")).join("GeoLite-fixtures");
    Ok(Files { config: s.dir.join("tether.toml"), token, hash_key, cert_der: ck.cert.der().clone(), geolite })
}

/// Writes the config; `variant` alternates a policy value so that every reload installs
/// a config that really differs. Written beside and renamed, as an operator's tool would.
pub(crate) fn write_config(s: &Settings, f: &Files, upstream: SocketAddr, variant: u64) -> Result<(), String> {
    let g = &f.geolite;
    let threshold = if variant.is_multiple_of(2) { 50 } else { 55 };
    let text = format!(
        r#"# Written by the soak generator.
[listen]
addr = "127.0.0.1:0"
tls_cert = "tls.crt"
tls_key = "tls.key"

[upstream]
url = "http://{upstream}"

[admin]
addr = "127.0.0.1:0"
token_file = "admin.token"

[limits]
drain_timeout = "5s"

[intel]
asn_db = "{asn}"
city_db = "{city}"
anonymous_ip_db = "{anon}"

[session]
cookies = ["session"]
hash_key_file = "session.key"
# Short lifetimes so that sessions expire, cross their absolute lifetime while in use,
# and come back within the run.
idle_ttl = "20s"
absolute_ttl = "90s"
max_sessions = {max_sessions}

[policy]
mode = "enforce"
step_up_threshold = {threshold}

[[policy.routes]]
path_prefix = "{FRESH_ROUTE}"
fresh_auth = "5m"

[step_up]
authorization_endpoint = "https://sso.example/authorize"
token_endpoint = "https://sso.example/token"
jwks_uri = "https://sso.example/jwks"
client_id = "tether"

[audit]
path = "audit.jsonl"
"#,
        asn = g.join("GeoLite2-ASN.mmdb").display(),
        city = g.join("GeoLite2-City.mmdb").display(),
        anon = g.join("GeoIP2-Anonymous-IP.mmdb").display(),
        max_sessions = s.max_sessions,
    );
    let tmp = f.config.with_extension("toml.next");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &f.config).map_err(|e| format!("{}: {e}", f.config.display()))
}

pub(crate) struct Addrs {
    pub(crate) proxy: SocketAddr,
    pub(crate) admin: SocketAddr,
}

/// Waits for tether's "listening" line (it binds port 0) and reads both addresses.
pub(crate) async fn wait_listening(log: &Path, child: &mut Child) -> Result<Addrs, String> {
    let until = Instant::now() + Duration::from_secs(60);
    let field = |line: &str, name: &str| -> Option<SocketAddr> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("tether exited at start ({status}):\n{text}"));
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("tether listening")) {
            if let (Some(proxy), Some(admin)) = (field(line, "proxy_addr="), field(line, "admin_addr=")) {
                return Ok(Addrs { proxy, admin });
            }
            return Err(format!("cannot read the addresses from {line:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("tether did not start listening within 60 s".into())
}

/// SIGTERM, then a bounded wait for the drain; SIGKILL past it.
pub(crate) async fn stop_child(child: &mut Child, pid: u32) -> Result<(), String> {
    signal(pid, "TERM")?;
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("tether exited with {status}")),
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(format!("waiting for tether: {e}")),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("tether did not exit within 30 s of SIGTERM".into())
}

pub(crate) fn signal(pid: u32, name: &str) -> Result<(), String> {
    let status = Command::new("kill").arg("-s").arg(name).arg(pid.to_string()).status().map_err(|e| format!("kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -s {name} {pid} failed"))
    }
}


/// The smallest upstream: reads the request, answers 200 "ok".
pub(crate) async fn spawn_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    Ok(addr)
}

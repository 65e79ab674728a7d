//! `tether demo`: tether in front of a small built-in "admin console", with a generated
//! certificate, runnable from a fresh clone with nothing else installed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::app::{self, Running, StartError};
use crate::config::{Config, ConfigErrors};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the demo's files: {0}")]
    Files(#[from] std::io::Error),
    #[error("cannot generate the demo certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("demo config rejected: {0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Where the demo listens.
pub struct DemoAddrs {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts the built-in upstream and tether; `dir` receives the generated certificate.
pub async fn start(dir: &Path, addrs: &DemoAddrs) -> Result<Running, DemoError> {
    let upstream = start_console().await?;
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let cert_path = dir.join("demo.crt");
    let key_path = dir.join("demo.key");
    std::fs::write(&cert_path, key.cert.pem())?;
    std::fs::write(&key_path, key.signing_key.serialize_pem())?;
    let text = format!(
        "[listen]\naddr = \"{}\"\ntls_cert = \"demo.crt\"\ntls_key = \"demo.key\"\n\
         [admin]\naddr = \"{}\"\n[upstream]\nurl = \"http://{upstream}\"\nforward_fingerprint = true\n",
        addrs.proxy, addrs.admin
    );
    let config = Config::parse(&text, dir)?;
    Ok(app::start(config).await?)
}

/// The built-in upstream: an "admin console" that shows what tether told it.
async fn start_console() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(console))
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn console(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let body = format!(
        "admin console (demo upstream)\npath: {}\nclient ip (from tether): {}\nja4 (from tether): {}\n",
        req.uri().path(),
        header("x-tether-client-ip"),
        header("x-tether-ja4"),
    );
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

//! Wiring: build the first snapshot, bind the listeners, run until told to stop, drain.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::state::{Shared, Snapshot, SnapshotError};
use crate::{admin, net};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A started proxy: its bound addresses and the means to stop it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    proxy: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (bounded by the drain timeout),
    /// and returns when the listeners are done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.proxy.await;
        let _ = self.admin.await;
    }
}

/// Binds both listeners (port 0 picks a free port) and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let proxy_bind = config.listen.addr;
    let admin_bind = config.admin.addr;
    let snapshot = Snapshot::build(config, 1)?;
    let shared = Arc::new(Shared::new(snapshot));
    let proxy_listener = TcpListener::bind(proxy_bind).await.map_err(|source| StartError::Bind { addr: proxy_bind, source })?;
    let admin_listener = TcpListener::bind(admin_bind).await.map_err(|source| StartError::Bind { addr: admin_bind, source })?;
    let bound = |l: &TcpListener, addr| l.local_addr().map_err(|source| StartError::Bind { addr, source });
    let proxy_addr = bound(&proxy_listener, proxy_bind)?;
    let admin_addr = bound(&admin_listener, admin_bind)?;
    let (stop, stopped) = watch::channel(false);
    let proxy = tokio::spawn(net::listener::run(proxy_listener, shared.clone(), stopped.clone()));
    let admin = tokio::spawn(admin::run(admin_listener, shared.clone(), stopped));
    tracing::info!(%proxy_addr, %admin_addr, tls = shared.snapshot().tls.is_some(), "tether listening");
    Ok(Running { proxy_addr, admin_addr, shared, stop, proxy, admin })
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped at once so no lock is held across awaits.
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

/// Runs until SIGTERM or SIGINT, then drains.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = start(config).await?;
    wait_for_stop_signal().await;
    tracing::info!("stop signal received; draining");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers, Ctrl-C through tokio is the remaining way to stop.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

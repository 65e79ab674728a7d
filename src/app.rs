//! Wiring: build the first snapshot, bind the listeners, run until told to stop, drain.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigErrors};
use crate::state::{Shared, Snapshot, SnapshotError};
use crate::{admin, net};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditOpenError),
    #[error(transparent)]
    HashKey(#[from] crate::session::key::HashKeyError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("config: {0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the reload was aborted")]
    Aborted,
}

/// A started proxy: its bound addresses and the means to stop it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub stop: watch::Sender<bool>,
    proxy: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl Running {
    /// Builds a whole new snapshot from the file and swaps it in; on any error the
    /// snapshot in force stays, and the error is returned, logged and counted.
    pub fn reload(&self, path: &Path) -> Result<u64, ReloadError> {
        reload(&self.shared, path)
    }

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
    let metrics = crate::metrics::Metrics::new();
    let generated_key = crate::session::HashKey::generate()?;
    let snapshot = Snapshot::build(config, 1, &metrics, &generated_key)?;
    let shared = Arc::new(Shared::new(snapshot, metrics, generated_key)?);
    let proxy_listener = TcpListener::bind(proxy_bind).await.map_err(|source| StartError::Bind { addr: proxy_bind, source })?;
    let admin_listener = TcpListener::bind(admin_bind).await.map_err(|source| StartError::Bind { addr: admin_bind, source })?;
    let bound = |l: &TcpListener, addr| l.local_addr().map_err(|source| StartError::Bind { addr, source });
    let proxy_addr = bound(&proxy_listener, proxy_bind)?;
    let admin_addr = bound(&admin_listener, admin_bind)?;
    let (stop, stopped) = watch::channel(false);
    let proxy = tokio::spawn(net::listener::run(proxy_listener, shared.clone(), stopped.clone()));
    let admin = tokio::spawn(admin::run(admin_listener, shared.clone(), stopped.clone()));
    tokio::spawn(sweep_sessions(shared.clone(), stopped));
    tracing::info!(%proxy_addr, %admin_addr, tls = shared.snapshot().tls.is_some(), "tether listening");
    Ok(Running { proxy_addr, admin_addr, shared, stop, proxy, admin })
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped at once so no lock is held across awaits.
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

/// [`reload`] off the async workers: reading databases and certificates is blocking
/// file IO, and a large City database takes a while.
pub async fn reload_in_background(shared: Arc<Shared>, path: std::path::PathBuf) -> Result<u64, ReloadError> {
    match tokio::task::spawn_blocking(move || reload(&shared, &path)).await {
        Ok(result) => result,
        // The reload panicked: a bug, but the snapshot in force is untouched.
        Err(_) => Err(ReloadError::Aborted),
    }
}

pub fn reload(shared: &Shared, path: &Path) -> Result<u64, ReloadError> {
    let result = build_next(shared, path);
    match &result {
        Ok(generation) => {
            shared.metrics.config_reloads.with_label_values(&["success"]).inc();
            shared.metrics.config_last_reload.set(unix_now());
            tracing::info!(generation, "configuration reloaded");
        }
        Err(e) => {
            shared.metrics.config_reloads.with_label_values(&["failure"]).inc();
            tracing::error!(error = %e, "reload failed; keeping the configuration in force");
        }
    }
    result
}

fn build_next(shared: &Shared, path: &Path) -> Result<u64, ReloadError> {
    let config = Config::load(path)?;
    let current = shared.snapshot();
    warn_restart_only(&current.config, &config);
    let next = Snapshot::build(config, shared.next_generation(), &shared.metrics, &shared.generated_key)?;
    let generation = next.generation;
    shared.install(next);
    Ok(generation)
}

/// Listen addresses and the connection cap are read at start only: say so instead of
/// silently ignoring a change.
fn warn_restart_only(old: &Config, new: &Config) {
    if old.listen.addr != new.listen.addr {
        tracing::warn!(key = "listen.addr", "changed in the file; takes effect only at restart");
    }
    if old.admin.addr != new.admin.addr {
        tracing::warn!(key = "admin.addr", "changed in the file; takes effect only at restart");
    }
    if old.audit.sink != new.audit.sink {
        tracing::warn!(key = "audit.path", "changed in the file; takes effect only at restart");
    }
    if old.session.limits.max_sessions != new.session.limits.max_sessions {
        tracing::warn!(key = "session.max_sessions", "changed in the file; takes effect only at restart");
    }
    if old.limits.max_connections != new.limits.max_connections {
        tracing::warn!(key = "limits.max_connections", "changed in the file; takes effect only at restart");
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How often expired sessions are swept out of the store.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

async fn sweep_sessions(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                shared.store.sweep(shared.clock.now()).await;
                shared.metrics.sessions.set(shared.store.len() as i64);
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Runs until SIGTERM or SIGINT, then drains; SIGHUP reloads the file at `path`.
pub async fn run(path: &Path, config: Config) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let running = start(config).await?;
    let _ = running.shared.config_path.set(path.to_path_buf());
    crate::watch::spawn(running.shared.clone(), path.to_path_buf(), running.stop.subscribe());
    running.shared.metrics.config_last_reload.set(unix_now());
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        // Without signal handlers, Ctrl-C through tokio is the remaining way to stop.
        let _ = tokio::signal::ctrl_c().await;
        running.shutdown().await;
        return Ok(());
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = reload_in_background(running.shared.clone(), path.to_path_buf()).await;
            }
        }
    }
    tracing::info!("stop signal received; draining");
    running.shutdown().await;
    Ok(())
}

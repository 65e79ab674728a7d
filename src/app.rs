//! Wiring: build the first snapshot, bind the listeners, start the watcher and the
//! session sweeper, run until told to stop, drain. It only connects the pieces: shutdown,
//! reload, the accept loop and the admin listener live in modules of their own.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::reload::unix_now;
use crate::session::redis::Invalidation;
pub use crate::reload::ReloadError;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::state::{Shared, Snapshot, SnapshotError};
use crate::{admin, server};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Shared(#[from] crate::state::SharedError),
    #[error(transparent)]
    HashKey(#[from] crate::session::key::HashKeyError),
}

/// A started proxy: its bound addresses and the means to stop it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The admin API's own listener, when `admin.api_addr` gives it one.
    pub api_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    pub stop: Trigger,
    /// Stops the admin listeners, after the proxy has drained: `/readyz` answers 503
    /// meanwhile.
    admin_stop: Trigger,
    proxy: JoinHandle<()>,
    admin: Vec<JoinHandle<()>>,
}

impl Running {
    /// Builds a whole new snapshot from the file and swaps it in; on any error the
    /// snapshot in force stays, and the error is returned, logged and counted.
    pub fn reload(&self, path: &Path) -> Result<u64, ReloadError> {
        crate::reload::reload(&self.shared, path)
    }

    /// Stops accepting, lets in-flight requests finish (bounded by the drain timeout),
    /// and returns when the listeners are done.
    pub async fn shutdown(self) {
        self.shared.draining.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.stop.send(true);
        let _ = self.proxy.await;
        let _ = self.admin_stop.send(true);
        for admin in self.admin {
            let _ = admin.await;
        }
    }
}

/// What `check-config` runs: the first snapshot, built exactly as [`start`] builds it
/// (certificates and keys parsed and paired, databases opened and typed, lists and key
/// files read), without binding a port, opening the store or contacting the IdP.
pub fn check(config: Config) -> Result<Config, SnapshotError> {
    let metrics = crate::metrics::Metrics::new();
    // Never hashes anything: the snapshot is dropped once built.
    let placeholder = crate::session::HashKey::new([0; 32], None);
    let mut problems = Vec::new();
    if let crate::config::AuditSink::File(path) = &config.audit.sink {
        if let Err(cause) = check_output(path) {
            problems.push(crate::state::LoadError { key: "audit.path".to_owned(), cause: crate::state::LoadCause::Output(cause) });
        }
    }
    match Snapshot::build(config, 0, &metrics, &placeholder) {
        Ok(snapshot) if problems.is_empty() => Ok(snapshot.config),
        Ok(_) => Err(SnapshotError(problems)),
        Err(SnapshotError(more)) => Err(SnapshotError(problems.into_iter().chain(more).collect())),
    }
}

/// An output file `run` will create or append to: its directory must exist and it must
/// not be a directory itself. Checked without creating anything.
fn check_output(path: &Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    if path.is_dir() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{} is a directory", path.display())));
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(Error::new(ErrorKind::NotFound, format!("directory {} does not exist", dir.display()))),
        _ => Ok(()),
    }
}

/// Binds both listeners (port 0 picks a free port) and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let proxy_bind = config.listen.addr;
    let admin_bind = config.admin.addr;
    let api_bind = config.admin.api_addr;
    let metrics = crate::metrics::Metrics::new();
    let generated_key = crate::session::HashKey::generate()?;
    let snapshot = Snapshot::build(config, 1, &metrics, &generated_key)?;
    let shared = Arc::new(Shared::new(snapshot, metrics, generated_key).await?);
    crate::reload::warm_up_idp(&shared);
    let proxy_listener = TcpListener::bind(proxy_bind).await.map_err(|source| StartError::Bind { addr: proxy_bind, source })?;
    let admin_listener = TcpListener::bind(admin_bind).await.map_err(|source| StartError::Bind { addr: admin_bind, source })?;
    let bound = |l: &TcpListener, addr| l.local_addr().map_err(|source| StartError::Bind { addr, source });
    let proxy_addr = bound(&proxy_listener, proxy_bind)?;
    let admin_addr = bound(&admin_listener, admin_bind)?;
    let api_listener = match api_bind {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
        None => None,
    };
    let api_addr = match (&api_listener, api_bind) {
        (Some(l), Some(addr)) => Some(bound(l, addr)?),
        _ => None,
    };
    let (stop, stopped) = shutdown::channel();
    let (admin_stop, admin_stopped) = shutdown::channel();
    let proxy = tokio::spawn(server::run(proxy_listener, shared.clone(), stopped.clone()));
    let mut admin = Vec::with_capacity(2);
    match api_listener {
        None => admin.push(tokio::spawn(admin::run(admin_listener, shared.clone(), admin::Surface::All, admin_stopped))),
        Some(api) => {
            admin.push(tokio::spawn(admin::run(admin_listener, shared.clone(), admin::Surface::Observe, admin_stopped.clone())));
            admin.push(tokio::spawn(admin::run(api, shared.clone(), admin::Surface::Api, admin_stopped)));
        }
    }
    tokio::spawn(sweep_sessions(shared.clone(), stopped.clone()));
    if let Some(events) = shared.store.as_redis().map(|r| r.subscribe()) {
        tokio::spawn(follow_invalidations(shared.clone(), events, stopped));
    }
    tracing::info!(%proxy_addr, %admin_addr, tls = shared.snapshot().tls.is_some(), "tether listening");
    Ok(Running { proxy_addr, admin_addr, api_addr, shared, stop, admin_stop, proxy, admin })
}

/// How often expired sessions are swept out of the store.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

async fn sweep_sessions(shared: Arc<Shared>, mut stop: Shutdown) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                shared.store.sweep(shared.clock.now()).await;
                shared.metrics.sessions.set(shared.store.len() as i64);
            }
            _ = stop.stopped() => return,
        }
    }
}

/// Acts on the shared store's invalidations at this replica's open tunnels: a revoked
/// session's close at once; a change tether cannot pin to one tunnel (a user revoked, a
/// session's step-up state, missed messages) has every tunnel judged again, which
/// closes those no longer allowed. Each event may arrive twice (the revoking replica
/// hears its own); closing and re-judging are idempotent.
async fn follow_invalidations(shared: Arc<Shared>, mut events: tokio::sync::broadcast::Receiver<Invalidation>, mut stop: Shutdown) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = stop.stopped() => return,
        };
        match event {
            Ok(Invalidation::Revoked(key)) => {
                shared.tunnels.close(&key);
            }
            Ok(Invalidation::Session(key)) if shared.tunnels.contains(&key) => shared.rejudge_tunnels(),
            Ok(Invalidation::Session(_)) => {}
            Ok(Invalidation::User(_) | Invalidation::All) | Err(RecvError::Lagged(_)) => {
                if !shared.tunnels.is_empty() {
                    shared.rejudge_tunnels();
                }
            }
            Err(RecvError::Closed) => return,
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
                let _ = crate::reload::reload_in_background(running.shared.clone(), path.to_path_buf()).await;
            }
        }
    }
    tracing::info!("stop signal received; draining");
    running.shutdown().await;
    Ok(())
}

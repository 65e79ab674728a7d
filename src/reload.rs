//! Reloading the configuration: build a whole new snapshot from the file and swap it in,
//! or keep the one in force. The one entry point the admin API, the file watcher and
//! SIGHUP all call, so a reload is logged, counted and bounded the same way whoever asks.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, ConfigErrors};
use crate::state::{Shared, Snapshot, SnapshotError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("config: {0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the reload was aborted")]
    Aborted,
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
    // Held from reading the file to installing the snapshot, on a blocking thread (never
    // across an `.await`): reloads are serialised, each reads the file as it is when its
    // turn comes, and the last to run installs the newest file.
    let _turn = shared.reloading.lock().unwrap_or_else(|p| p.into_inner());
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
    if let Some(old) = &current.idp {
        old.retire();
    }
    warm_up_idp(shared);
    Ok(generation)
}

/// Fetches the IdP's discovery document and keys of the snapshot in force, in the
/// background (at start and after each reload).
pub(crate) fn warm_up_idp(shared: &Shared) {
    let meters = crate::stepup::warm_up::Meters { failures: shared.metrics.idp_discovery_failures.clone(), ready: shared.metrics.idp_ready.clone() };
    match &shared.snapshot().idp {
        Some(idp) => crate::stepup::warm_up::spawn(idp, meters),
        // Nothing to wait for.
        None => meters.ready.set(1),
    }
}

/// Listen addresses and the connection cap are read at start only: say so instead of
/// silently ignoring a change.
fn warn_restart_only(old: &Config, new: &Config) {
    if old.listen.addr != new.listen.addr {
        tracing::warn!(key = "listen.addr", "changed in the file; takes effect only at restart");
    }
    if old.listen.workers != new.listen.workers {
        tracing::warn!(key = "listen.workers", "changed in the file; takes effect only at restart");
    }
    if old.admin.addr != new.admin.addr {
        tracing::warn!(key = "admin.addr", "changed in the file; takes effect only at restart");
    }
    if old.audit.sink != new.audit.sink {
        tracing::warn!(key = "audit.path", "changed in the file; takes effect only at restart");
    }
    if old.log.format != new.log.format {
        tracing::warn!(key = "log.format", "changed in the file; takes effect only at restart");
    }
    if old.session.limits.max_sessions != new.session.limits.max_sessions {
        tracing::warn!(key = "session.max_sessions", "changed in the file; takes effect only at restart");
    }
    if old.limits.max_connections != new.limits.max_connections {
        tracing::warn!(key = "limits.max_connections", "changed in the file; takes effect only at restart");
    }
    // The store holds every session: it is never swapped under running requests.
    // (Compared through `Debug`, which is only compared here, never printed.)
    if format!("{:?}", old.store) != format!("{:?}", new.store) {
        tracing::warn!(key = "store", "changed in the file; takes effect only at restart");
    }
    if old.session.state_dir != new.session.state_dir {
        tracing::warn!(key = "session.state_dir", "changed in the file; takes effect only at restart");
    }
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}


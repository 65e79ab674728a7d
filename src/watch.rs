//! Reload on file change: every file the configuration names (the config itself,
//! certificates, databases, lists, keys) is watched through its directory, so a
//! Kubernetes ConfigMap's symlink swap is seen as well as an in-place edit. Changes are
//! debounced, and a reload only happens when one of those files really changed (size,
//! modification time or identity), so unrelated writes in the same directory — the
//! audit log, say — cost a few `stat` calls and nothing more.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// Editors and `kubectl` write in several steps; wait for them to settle.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Every file a configuration depends on.
pub fn watched_files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    if let Some(tls) = &config.listen.tls {
        files.push(tls.cert.clone());
        files.push(tls.key.clone());
    }
    files.extend(config.listen.trusted_proxies_file.clone());
    files.extend(config.listen.client_ca.clone());
    files.extend(config.upstream.ca_file.clone());
    files.extend(config.admin.token_file.clone());
    if let Some(i) = &config.intel {
        files.push(i.asn_db.clone());
        files.extend(i.city_db.clone());
        files.extend(i.anonymous_ip_db.clone());
        files.extend(i.ioc_files.iter().map(|f| f.path.clone()));
        files.extend(i.privacy_relay_files.iter().cloned());
    }
    files.extend(config.session.hash_key_file.clone());
    files.extend(config.session.jwt.as_ref().map(|j| j.jwks_file.clone()));
    if let Some(s) = &config.step_up {
        files.extend(s.ca_file.clone());
        files.extend(s.client_private_key_file.clone());
        if let Some(crate::config::ClientSecret::File(p)) = &s.client_secret {
            files.push(p.clone());
        }
    }
    files
}

/// What identifies a file's content cheaply (through symlinks).
fn stamp(files: &[PathBuf]) -> Vec<Option<(u64, SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            #[cfg(unix)]
            let ino = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let ino = 0;
            Some((m.len(), m.modified().ok()?, ino))
        })
        .collect()
}

/// The directories to watch: each file's own, and the directory its symlinks resolve
/// to, so an edit of the target is seen as well as a swap of the link.
fn directories(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let parent = |f: &Path| f.parent().map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() });
    files
        .iter()
        .flat_map(|f| [parent(f), std::fs::canonicalize(f).ok().as_deref().and_then(parent)])
        .flatten()
        .collect()
}

/// Watches until `stop` flips. Errors setting up the watcher are logged; SIGHUP and the
/// admin API still reload.
pub fn spawn(shared: Arc<Shared>, config_path: PathBuf, stop: impl Into<Shutdown>) {
    let mut stop = stop.into();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher: RecommendedWatcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP");
            return;
        }
    };
    tokio::spawn(async move {
        let mut files = watched_files(&config_path, &shared.snapshot().config);
        let mut dirs = BTreeSet::new();
        let rewatch = |watcher: &mut RecommendedWatcher, files: &[PathBuf], dirs: &mut BTreeSet<PathBuf>| {
            let wanted = directories(files);
            for d in dirs.difference(&wanted) {
                let _ = watcher.unwatch(d);
            }
            for d in wanted.difference(dirs) {
                if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory");
                }
            }
            *dirs = wanted;
        };
        rewatch(&mut watcher, &files, &mut dirs);
        let mut last = stamp(&files);
        tracing::info!(files = files.len(), directories = dirs.len(), "watching configuration files");
        // After a reload the watches move (a swap changes where links resolve), so the
        // files are checked once more without waiting for an event: a change made while
        // the watches were being moved is not lost.
        let mut recheck = false;
        loop {
            if !recheck {
                tokio::select! {
                    got = rx.recv() => if got.is_none() { return },
                    _ = stop.stopped() => return,
                }
            }
            recheck = false;
            // Settle: swallow the burst of events one change makes.
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let now = stamp(&files);
            if now == last {
                continue;
            }
            last = now;
            if crate::reload::reload_in_background(shared.clone(), config_path.clone()).await.is_ok() {
                let next = watched_files(&config_path, &shared.snapshot().config);
                if next != files {
                    files = next;
                    last = stamp(&files);
                }
                rewatch(&mut watcher, &files, &mut dirs);
                recheck = true;
            }
        }
    });
}

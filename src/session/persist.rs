//! The embedded store's revocations on disk (`session.state_dir`), so a restart or a
//! rollout of a single replica forgets none of them.
//!
//! One append-only file, `revocations.log`: an 8-byte magic, then 24-byte entries
//! (session key, revoked-until, a checksum of both). Each revoke appends one entry and
//! syncs it (revocations are rare: an admin, a logout, a failed step-up). The file is
//! compacted — expired and superseded entries dropped, at most `max` kept, soonest to
//! expire dropped first, as in memory — by writing `revocations.log.tmp`, syncing it and
//! renaming it over the log, so a crash leaves either the old file or the new one.
//!
//! Damage: a torn last entry (a crash mid-append) is ignored and the rest loaded; a bad
//! magic or a bad entry before the last is a [`PersistError::Corrupt`] naming the file
//! and offset, and nothing is overwritten (the operator decides: move it aside to start
//! without the old revocations).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Secs, SessionKey};

const MAGIC: &[u8; 8] = b"TTHRREV1";
const ENTRY: usize = 16 + 4 + 4;
const FILE: &str = "revocations.log";
const TMP: &str = "revocations.log.tmp";
/// Appends between compactions at least this many, so a burst of revocations does not
/// rewrite the file each time.
const MIN_COMPACT_EVERY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("state file {path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is damaged at byte {offset}; move it aside to start without it")]
    Corrupt { path: PathBuf, offset: usize },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io { path: path.to_owned(), source }
}

fn check(body: &[u8]) -> u32 {
    // FNV-1a: detects a torn or flipped entry; not a defence against an attacker who can
    // write the state directory (they could delete it).
    body.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

fn entry(key: &SessionKey, until: Secs) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[..16].copy_from_slice(&key.0);
    e[16..20].copy_from_slice(&until.to_be_bytes());
    let c = check(&e[..20]);
    e[20..].copy_from_slice(&c.to_be_bytes());
    e
}

/// Parses a whole log; the latest `until` per key wins.
fn parse(path: &Path, bytes: &[u8]) -> Result<HashMap<SessionKey, Secs>, PersistError> {
    let mut out = HashMap::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(PersistError::Corrupt { path: path.to_owned(), offset: 0 });
    }
    let body = &bytes[MAGIC.len()..];
    let whole = body.len() / ENTRY;
    for (i, e) in body.chunks_exact(ENTRY).enumerate() {
        let stored = u32::from_be_bytes([e[20], e[21], e[22], e[23]]);
        if check(&e[..20]) != stored {
            if i + 1 == whole && body.len().is_multiple_of(ENTRY) {
                // The last entry, torn by a crash mid-append.
                break;
            }
            return Err(PersistError::Corrupt { path: path.to_owned(), offset: MAGIC.len() + i * ENTRY });
        }
        let mut k = [0u8; 16];
        k.copy_from_slice(&e[..16]);
        let until = u32::from_be_bytes([e[16], e[17], e[18], e[19]]);
        let slot = out.entry(SessionKey(k)).or_insert(until);
        *slot = (*slot).max(until);
    }
    Ok(out)
}

/// Live entries, at most `max`, the ones expiring soonest dropped first.
fn live(all: HashMap<SessionKey, Secs>, now: Secs, max: usize) -> Vec<(SessionKey, Secs)> {
    let mut v: Vec<(SessionKey, Secs)> = all.into_iter().filter(|(_, until)| *until > now).collect();
    if v.len() > max {
        v.sort_unstable_by_key(|(k, until)| (std::cmp::Reverse(*until), *k));
        v.truncate(max);
    }
    v
}

pub struct RevocationLog {
    dir: PathBuf,
    inner: Mutex<Log>,
    max: usize,
    /// How long a revocation lasts (the store's `absolute_ttl`).
    lifetime: Secs,
}

struct Log {
    file: File,
    appended: usize,
}

impl RevocationLog {
    /// Opens (or creates) the log in `dir`, keeping at most `max` revocations that last
    /// `lifetime` each; returns it with those still in force at `now`. The file is
    /// compacted on the way.
    pub fn open(dir: &Path, max: usize, lifetime: Secs, now: Secs) -> Result<(RevocationLog, Vec<(SessionKey, Secs)>), PersistError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(FILE);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PersistError::Io { path, source: e }),
        }
        let live = live(parse(&path, &bytes)?, now, max.max(1));
        let file = rewrite(dir, &live)?;
        Ok((RevocationLog { dir: dir.to_owned(), inner: Mutex::new(Log { file, appended: 0 }), max: max.max(1), lifetime }, live))
    }

    /// Records that `key` was revoked at `now`.
    pub fn revoked(&self, key: &SessionKey, now: Secs) -> Result<(), PersistError> {
        self.append(key, now.saturating_add(self.lifetime), now)
    }

    /// Appends one revocation and syncs it; compacts now and then.
    pub fn append(&self, key: &SessionKey, until: Secs, now: Secs) -> Result<(), PersistError> {
        let path = self.dir.join(FILE);
        let mut log = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        log.file.write_all(&entry(key, until)).map_err(io(&path))?;
        log.file.sync_data().map_err(io(&path))?;
        log.appended += 1;
        if log.appended >= self.max.max(MIN_COMPACT_EVERY) {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let live = live(parse(&path, &bytes)?, now, self.max);
            log.file = rewrite(&self.dir, &live)?;
            log.appended = 0;
        }
        Ok(())
    }
}

/// Writes `entries` to a temporary file, syncs, renames it over the log, syncs the
/// directory, and returns the log opened for appending.
fn rewrite(dir: &Path, entries: &[(SessionKey, Secs)]) -> Result<File, PersistError> {
    let tmp = dir.join(TMP);
    let path = dir.join(FILE);
    let mut buf = Vec::with_capacity(MAGIC.len() + entries.len() * ENTRY);
    buf.extend_from_slice(MAGIC);
    for (k, until) in entries {
        buf.extend_from_slice(&entry(k, *until));
    }
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&buf).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    // The rename is durable only once the directory is.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    OpenOptions::new().append(true).open(&path).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SessionKey {
        SessionKey([i; 16])
    }

    #[test]
    fn revocations_survive_reopening_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let (log, live) = RevocationLog::open(dir.path(), 100, 86_400, 1000).unwrap();
        assert!(live.is_empty());
        log.append(&key(1), 5000, 1000).unwrap();
        log.append(&key(2), 1500, 1000).unwrap();
        log.append(&key(1), 6000, 1000).unwrap();
        drop(log);
        let (_, mut live) = RevocationLog::open(dir.path(), 100, 86_400, 1000).unwrap();
        live.sort();
        assert_eq!(live, vec![(key(1), 6000), (key(2), 1500)]);
        let (_, live) = RevocationLog::open(dir.path(), 100, 86_400, 2000).unwrap();
        assert_eq!(live, vec![(key(1), 6000)], "expired ones go");
    }

    #[test]
    fn the_bound_keeps_the_longest_lived_and_compaction_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = RevocationLog::open(dir.path(), 10, 86_400, 0).unwrap();
        for i in 0..(MIN_COMPACT_EVERY as u32 + 50) {
            log.append(&key((i % 200) as u8), 10_000 + i, 1).unwrap();
        }
        let size = std::fs::metadata(dir.path().join(FILE)).unwrap().len() as usize;
        assert!(size < MAGIC.len() + 100 * ENTRY, "compacted: {size} bytes");
        drop(log);
        let (_, live) = RevocationLog::open(dir.path(), 10, 86_400, 1).unwrap();
        assert_eq!(live.len(), 10);
        assert!(live.iter().all(|(_, until)| *until >= 10_000 + MIN_COMPACT_EVERY as u32 + 40));
    }

    #[test]
    fn a_torn_tail_is_ignored_and_damage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = RevocationLog::open(dir.path(), 100, 86_400, 0).unwrap();
        log.append(&key(1), 5000, 0).unwrap();
        log.append(&key(2), 5000, 0).unwrap();
        drop(log);
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).unwrap();
        // Every cut inside the last entry: the first survives.
        for cut in (good.len() - ENTRY + 1)..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            let (_, live) = RevocationLog::open(dir.path(), 100, 86_400, 0).unwrap();
            assert_eq!(live, vec![(key(1), 5000)], "cut at {cut}");
            std::fs::write(&path, &good).unwrap();
        }
        // A garbled last entry (a torn write that kept the length): ignored too.
        let mut torn = good.clone();
        let n = torn.len();
        torn[n - 1] ^= 0xff;
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(RevocationLog::open(dir.path(), 100, 86_400, 0).unwrap().1, vec![(key(1), 5000)]);
        // Damage before the last entry, or a wrong magic: refused, file left alone.
        let mut bad = good.clone();
        bad[MAGIC.len() + 3] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let err = RevocationLog::open(dir.path(), 100, 86_400, 0).err().unwrap();
        assert!(matches!(err, PersistError::Corrupt { offset, .. } if offset == MAGIC.len()), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bad, "a damaged file is not overwritten");
        std::fs::write(&path, b"NOTOURS!and more").unwrap();
        assert!(matches!(RevocationLog::open(dir.path(), 100, 86_400, 0), Err(PersistError::Corrupt { offset: 0, .. })));
        std::fs::write(&path, b"TTH").unwrap();
        assert!(matches!(RevocationLog::open(dir.path(), 100, 86_400, 0), Err(PersistError::Corrupt { offset: 0, .. })));
    }

    #[tokio::test]
    async fn the_embedded_store_revoked_before_a_restart_is_revoked_after() {
        use crate::session::{Store, StoreLimits};
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits { absolute_ttl: 3600, ..StoreLimits::default() };
        let t0 = 1_700_000_000;
        {
            let store = Store::memory_persistent(limits, dir.path(), t0).unwrap();
            store.revoke(key(1), t0).await.unwrap();
            let user: std::sync::Arc<str> = std::sync::Arc::from("alice");
            store.index_session(&user, key(2)).await.unwrap();
            store.revoke_user("alice", t0).await.unwrap();
        }
        // "Restart": a new store from the same directory.
        let store = Store::memory_persistent(limits, dir.path(), t0 + 60).unwrap();
        for k in [key(1), key(2)] {
            assert!(store.load(&k, None, t0 + 60).await.unwrap().revoked, "{k} revoked after the restart");
        }
        assert!(!store.load(&key(3), None, t0 + 60).await.unwrap().revoked);
        // Their lifetime is the one they had: an hour from the revoke, not from the restart.
        let later = Store::memory_persistent(limits, dir.path(), t0 + 3601).unwrap();
        assert!(!later.load(&key(1), None, t0 + 3601).await.unwrap().revoked);
    }
}

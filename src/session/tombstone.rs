//! Tombstones: a compact, bounded memory of sessions the store had to evict, so that an
//! evicted session's next sighting is "history lost", never "first sight".
//!
//! A cuckoo-style filter of 32-bit fingerprints in buckets of four slots: each key has two
//! candidate buckets (the second derived from the first and the fingerprint, so a slot can
//! be found again from its fingerprint alone). Slots are atomics: inserting, testing and
//! clearing take no lock and cost a handful of loads, whatever the number of tombstones.
//!
//! The top bit of a fingerprint marks the tombstone of an *established* session (one seen
//! across more than a minute, or with a known user). When both candidate buckets are full,
//! an established tombstone replaces an ephemeral one first, and an ephemeral tombstone
//! never replaces an established one: a flood of throw-away cookies, which the store evicts
//! first, cannot wash the tombstones of real sessions out of the filter.
//!
//! False positives: a lookup compares eight slots against a 31-bit fingerprint, so a key
//! that was never evicted reads as a tombstone with probability at most 8 / 2^31
//! (about 4 in a billion). Memory: 4 bytes per slot, slots = twice the store's session
//! bound rounded up to a power of two (8 to 16 bytes per session the store can hold).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::SessionKey;

const BUCKET: usize = 4;
const ESTABLISHED: u32 = 1 << 31;
const FINGERPRINT: u32 = ESTABLISHED - 1;

/// How much a tombstone is worth keeping when space runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worth {
    /// Seen once or within a minute, no known user: what a flood of fresh cookies makes.
    Ephemeral,
    /// A session with history: its loss is what a flooder would be after.
    Established,
}

pub struct Tombstones {
    slots: Box<[AtomicU32]>,
    /// Buckets - 1 (a power of two).
    mask: usize,
    /// Rotates the slot replaced in a full bucket.
    victim: AtomicUsize,
}

impl Tombstones {
    /// A filter with room for about `capacity` tombstones: twice as many slots, since a
    /// filter that never relocates fills its buckets unevenly past half load.
    pub fn new(capacity: usize) -> Tombstones {
        let buckets = (capacity.max(BUCKET) * 2 / BUCKET).next_power_of_two();
        Tombstones {
            slots: (0..buckets * BUCKET).map(|_| AtomicU32::new(0)).collect(),
            mask: buckets - 1,
            victim: AtomicUsize::new(0),
        }
    }

    /// Bytes of memory the filter holds.
    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<AtomicU32>()
    }

    /// The key's fingerprint (never 0, which marks an empty slot) and its two buckets.
    /// Session keys are keyed hashes already, so their bytes are uniformly distributed.
    fn locate(&self, key: &SessionKey) -> (u32, usize, usize) {
        let b = &key.0;
        let fp = (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & FINGERPRINT).max(1);
        let h = u64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]);
        let first = (h as usize) & self.mask;
        let second = (first ^ (fp.wrapping_mul(0x5bd1_e995) as usize)) & self.mask;
        (fp, first, second)
    }

    fn bucket(&self, index: usize) -> &[AtomicU32] {
        &self.slots[index * BUCKET..(index + 1) * BUCKET]
    }

    /// Remembers that `key` was evicted.
    pub fn insert(&self, key: &SessionKey, worth: Worth) {
        let (fp, first, second) = self.locate(key);
        let tagged = match worth {
            Worth::Established => fp | ESTABLISHED,
            Worth::Ephemeral => fp,
        };
        let candidates = || self.bucket(first).iter().chain(self.bucket(second));
        // Already there (an established mark is kept): nothing to do.
        if candidates().any(|s| s.load(Ordering::Relaxed) & FINGERPRINT == fp) {
            if worth == Worth::Established {
                for s in candidates() {
                    let _ = s.compare_exchange(fp, tagged, Ordering::Relaxed, Ordering::Relaxed);
                }
            }
            return;
        }
        for s in candidates() {
            if s.compare_exchange(0, tagged, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return;
            }
        }
        // Both buckets full: replace an ephemeral tombstone, rotating which one.
        let start = self.victim.fetch_add(1, Ordering::Relaxed);
        let all: Vec<&AtomicU32> = candidates().collect();
        for i in 0..all.len() {
            let s = all[(start + i) % all.len()];
            let old = s.load(Ordering::Relaxed);
            if old & ESTABLISHED == 0 && s.compare_exchange(old, tagged, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return;
            }
        }
        // Only established tombstones left: an ephemeral one is dropped; an established one
        // replaces the rotating victim (the filter is sized so this takes a flood of real
        // sessions, not of fresh cookies).
        if worth == Worth::Established {
            all[start % all.len()].store(tagged, Ordering::Relaxed);
        }
    }

    /// Whether `key` may have been evicted (false positives: see the module comment).
    pub fn contains(&self, key: &SessionKey) -> bool {
        let (fp, first, second) = self.locate(key);
        self.bucket(first).iter().chain(self.bucket(second)).any(|s| s.load(Ordering::Relaxed) & FINGERPRINT == fp)
    }

    /// Forgets `key`'s tombstone (the session is stored again).
    pub fn remove(&self, key: &SessionKey) {
        let (fp, first, second) = self.locate(key);
        for s in self.bucket(first).iter().chain(self.bucket(second)) {
            let old = s.load(Ordering::Relaxed);
            if old != 0 && old & FINGERPRINT == fp {
                let _ = s.compare_exchange(old, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> SessionKey {
        // Spread like a keyed hash: a cheap mixer over the index.
        let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let y = x ^ (x >> 31);
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&y.to_le_bytes());
        k[8..].copy_from_slice(&y.rotate_left(29).wrapping_mul(31).to_le_bytes());
        SessionKey(k)
    }

    #[test]
    fn inserted_keys_are_found_and_removed() {
        let t = Tombstones::new(1024);
        for i in 0..800 {
            t.insert(&key(i), Worth::Ephemeral);
        }
        let found = (0..800).filter(|i| t.contains(&key(*i))).count();
        assert!(found == 800, "found {found} of 800");
        t.remove(&key(3));
        assert!(!t.contains(&key(3)));
    }

    #[test]
    fn false_positives_are_rare() {
        let t = Tombstones::new(4096);
        for i in 0..4096 {
            t.insert(&key(i), Worth::Ephemeral);
        }
        let fp = (1_000_000..1_200_000).filter(|i| t.contains(&key(*i))).count();
        assert!(fp <= 2, "{fp} false positives in 200 000 lookups");
    }

    #[test]
    fn a_flood_of_ephemeral_tombstones_keeps_the_established_ones() {
        let t = Tombstones::new(1024);
        let victims: Vec<SessionKey> = (0..200).map(key).collect();
        for v in &victims {
            t.insert(v, Worth::Established);
        }
        for i in 10_000..200_000 {
            t.insert(&key(i), Worth::Ephemeral);
        }
        let kept = victims.iter().filter(|v| t.contains(v)).count();
        assert_eq!(kept, victims.len());
    }

    #[test]
    fn an_ephemeral_mark_is_upgraded() {
        let t = Tombstones::new(64);
        let k = key(7);
        t.insert(&k, Worth::Ephemeral);
        t.insert(&k, Worth::Established);
        for i in 100..10_000 {
            t.insert(&key(i), Worth::Ephemeral);
        }
        assert!(t.contains(&k));
    }
}

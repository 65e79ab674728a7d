//! A bounded per-address cache of lookup results.
//!
//! Sixteen independently locked shards keep contention low; a shard that reaches its
//! share of the bound is cleared whole, which bounds memory without per-entry
//! bookkeeping (a miss only costs one uncached lookup, a few microseconds).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;

use super::NetInfo;

const SHARDS: usize = 16;

pub struct LookupCache {
    shards: [Mutex<HashMap<IpAddr, NetInfo>>; SHARDS],
    per_shard: usize,
    hasher: RandomState,
}

impl LookupCache {
    pub fn new(capacity: usize) -> LookupCache {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        LookupCache {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            per_shard,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, NetInfo>> {
        let h = self.hasher.hash_one(ip) as usize;
        &self.shards[h % SHARDS]
    }

    pub fn get(&self, ip: &IpAddr) -> Option<NetInfo> {
        // A poisoned shard only means another thread panicked mid-insert; the map is
        // still a valid map, so keep using it.
        let shard = self.shard(ip).lock().unwrap_or_else(|p| p.into_inner());
        shard.get(ip).cloned()
    }

    pub fn put(&self, ip: IpAddr, info: NetInfo) {
        let mut shard = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            shard.clear();
        }
        shard.insert(ip, info);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! The per-peer connection cap: one address (an IPv6 /64) may hold at most a bounded
//! number of open connections, so a single host cannot take every slot of the global
//! cap. Trusted proxies are exempt: a balancer carries everyone's connections.
//!
//! Lock discipline: admitting and releasing each touch one entry through the `entry` /
//! `remove_if` forms; no guard outlives the call.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

pub struct PeerCap {
    max: usize,
    open: DashMap<u128, usize>,
}

/// One admitted connection; releases its slot when dropped.
pub struct PeerPermit {
    cap: Arc<PeerCap>,
    key: u128,
}

/// The address a cap is kept for: IPv4 /32, IPv6 /64 (one host's allocation).
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
    }
}

impl PeerCap {
    pub fn new(max: usize) -> Arc<PeerCap> {
        Arc::new(PeerCap { max, open: DashMap::new() })
    }

    /// A slot for `ip`, or `None` when it already holds `max` connections.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerPermit> {
        let k = key(ip);
        let mut admitted = false;
        self.open.entry(k).and_modify(|n| {
            if *n < self.max {
                *n += 1;
                admitted = true;
            }
        }).or_insert_with(|| {
            admitted = true;
            1
        });
        admitted.then(|| PeerPermit { cap: self.clone(), key: k })
    }

    /// Addresses holding at least one connection.
    pub fn peers(&self) -> usize {
        self.open.len()
    }
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        if let Some(mut n) = self.cap.open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        self.cap.open.remove_if(&self.key, |_, n| *n == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_slot() {
        let cap = PeerCap::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let permits: Vec<_> = (0..3).map(|_| cap.admit(a).expect("under the cap")).collect();
        assert!(cap.admit(a).is_none());
        assert!(cap.admit("192.0.2.2".parse().unwrap()).is_some(), "another address is not affected");
        // One /64 is one peer.
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let p6: Vec<_> = ["2001:db8::1", "2001:db8::2", "2001:db8::3"].iter().map(|s| cap.admit(v6(s)).unwrap()).collect();
        assert!(cap.admit(v6("2001:db8::ffff")).is_none());
        drop(permits);
        drop(p6);
        let again = cap.admit(a);
        assert!(again.is_some());
        assert_eq!(cap.peers(), 1, "released entries are removed");
        drop(again);
        assert_eq!(cap.peers(), 0);
    }
}

//! Invalidation between replicas: one subscription to `<prefix>inv` per replica, and
//! what each message does to the local cache and to `RedisStore::subscribe`rs.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::{Inner, Invalidation};
use crate::session::SessionKey;

impl Inner {
    pub(super) fn on_message(&self, payload: &[u8]) {
        let Some((&kind, rest)) = payload.split_first() else { return };
        let Ok(rest) = std::str::from_utf8(rest) else { return };
        match kind {
            b's' => {
                if let Some(key) = SessionKey::parse_hex(rest) {
                    self.cache.forget(&key);
                    let _ = self.events.send(Invalidation::Session(key));
                }
            }
            b'r' => {
                let (hex, until) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Some(key) = SessionKey::parse_hex(hex) {
                    let until = until.parse().unwrap_or_else(|_| crate::session::now().saturating_add(self.limits.absolute_ttl));
                    self.cache.revoke(key, until);
                    let _ = self.events.send(Invalidation::Revoked(key));
                }
            }
            b'u' => {
                self.cache.forget_user(rest, None);
                let _ = self.events.send(Invalidation::User(Arc::from(rest)));
            }
            _ => {}
        }
    }
}

/// Keeps one subscription to the invalidation channel, reconnecting with backoff. While
/// not subscribed, and once after every (re)subscription, cached sessions are stale:
/// messages may have been missed.
pub(super) async fn subscribe(client: redis::Client, inner: Weak<Inner>, connect_timeout: Duration) {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(channel) = inner.upgrade().map(|i| i.keys.channel.clone()) else { return };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(connect_timeout, client.get_async_pubsub()).await {
            if let Ok(Ok(())) = tokio::time::timeout(connect_timeout, pubsub.subscribe(&channel)).await {
                let Some(i) = inner.upgrade() else { return };
                i.cache.expire_all();
                i.listening.store(true, Ordering::Release);
                let _ = i.events.send(Invalidation::All);
                drop(i);
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Some(i) = inner.upgrade() else { return };
                    i.on_message(msg.get_payload_bytes());
                }
                if let Some(i) = inner.upgrade() {
                    i.listening.store(false, Ordering::Release);
                    i.cache.expire_all();
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

//! Pending step-up challenges and back-channel logout ids in the shared store, so a
//! callback or a logout may land on any replica.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{hex, Inner, RedisStore, LOGOUT_JTI_TTL};
use crate::session::{Secs, SessionKey, StoreError};

/// Pending step-up challenges in Redis, by challenge id, each living as long as a
/// challenge may be answered (`CHALLENGE_TTL`, passed in). Values are opaque here
/// (the step-up module encodes them); the session they belong to sits at bytes 2..17.
#[derive(Clone)]
pub struct RedisChallenges {
    inner: Arc<Inner>,
}

impl RedisChallenges {
    /// Keeps a challenge; past `per_session` pending ones for that session, its oldest
    /// is dropped.
    pub async fn put(&self, id: &[u8], session: &SessionKey, value: Vec<u8>, ttl: Secs, per_session: usize) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut conn = inner.conn();
        let k = &inner.keys;
        let mut call = inner.scripts.challenge_put.prepare_invoke();
        call.key(k.challenge(id)).key(k.challenges_of(session));
        call.arg(value).arg(ttl.max(1)).arg(hex(id)).arg(per_session.max(1)).arg(&k.prefix);
        inner.run(async move { call.invoke_async::<i64>(&mut conn).await }).await.map(drop)
    }

    /// Takes a challenge once: a second take (here or at another replica) finds nothing.
    pub async fn take(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = &self.inner;
        let mut conn = inner.conn();
        let mut call = inner.scripts.challenge_take.prepare_invoke();
        call.key(inner.keys.challenge(id)).arg(&inner.keys.prefix).arg(hex(id));
        inner.run(async move { call.invoke_async::<Option<Vec<u8>>>(&mut conn).await }).await
    }

    /// A step-up of `session` succeeded: its other pending challenges are void.
    pub async fn clear_session(&self, session: &SessionKey) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut conn = inner.conn();
        let mut call = inner.scripts.challenge_clear.prepare_invoke();
        call.key(inner.keys.challenges_of(session)).arg(&inner.keys.prefix);
        inner.run(async move { call.invoke_async::<i64>(&mut conn).await }).await.map(drop)
    }
}

impl RedisStore {
    /// The shared pending-challenge table (a step-up callback may land on any replica).
    pub fn challenges(&self) -> RedisChallenges {
        RedisChallenges { inner: self.inner.clone() }
    }

    /// Remembers a back-channel logout token's `jti`; `false` when it was seen before
    /// (a replay). Stored hashed: the id is not a secret, but it is not ours to keep.
    pub async fn remember_logout(&self, jti: &str) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let key = format!("{}j:{}", inner.keys.prefix, hex(&Sha256::digest(jti.as_bytes())[..16]));
        let mut conn = inner.conn();
        let set = inner
            .run(async move { redis::cmd("SET").arg(key).arg(1).arg("NX").arg("EX").arg(LOGOUT_JTI_TTL).query_async::<Option<String>>(&mut conn).await })
            .await?;
        Ok(set.is_some())
    }

    /// Spends an answered device-key challenge (DBSC) once across every replica: `false`
    /// when any replica spent it before. `id` is the challenge's MAC tag (not a secret);
    /// the mark lives as long as the challenge could still be answered.
    pub async fn spend_device_challenge(&self, id: &[u8], ttl: Secs) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let key = format!("{}dc:{}", inner.keys.prefix, hex(id));
        let mut conn = inner.conn();
        let set = inner
            .run(async move { redis::cmd("SET").arg(key).arg(1).arg("NX").arg("EX").arg(ttl.max(1)).query_async::<Option<String>>(&mut conn).await })
            .await?;
        Ok(set.is_some())
    }
}

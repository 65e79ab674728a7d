//! `[store]`: where sessions, baselines, revocations and pending step-ups live: this
//! process's memory (the default, one replica) or a shared Redis/Valkey. Reading the
//! section never contacts Redis: `check-config` works offline.

use std::time::Duration;

use crate::session::redis::{OnError, RedisConfig};

use super::decode::Section;
use super::Problem;

#[derive(Debug, Clone, Default)]
pub enum Store {
    /// The embedded store (its revocations on disk with `session.state_dir`).
    #[default]
    Memory,
    // Boxed: read once per config, and it keeps `Config` small.
    Redis(Box<RedisConfig>),
}

/// Upper bounds on the timeouts: a store slower than this is better treated as down.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// A cached copy is trusted without asking Redis at most this long.
const MAX_CACHE_TTL: Duration = Duration::from_secs(300);

pub(super) fn read(s: &Section<'_>) -> Option<Store> {
    let backend = s.string("backend").unwrap_or("memory");
    let keys: [&'static str; 12] = ["url", "ca_file", "password_file", "username", "key_prefix", "connect_timeout", "command_timeout", "pool_size", "on_error", "cache_ttl", "stale_for", "cache_capacity"];
    match backend {
        "memory" => {
            // Redis settings with the memory backend are a mistake worth naming.
            for key in keys.iter().filter(|k| s.has(k)) {
                s.problem(key, Problem::Conflict { reason: "only read with backend = \"redis\"" });
            }
            s.ignore(&keys);
            Some(Store::Memory)
        }
        "redis" => read_redis(s).map(|r| Store::Redis(Box::new(r))),
        other => {
            s.problem("backend", Problem::Invalid { expected: "\"memory\" or \"redis\"", found: other.to_owned() });
            s.ignore(&keys);
            None
        }
    }
}

fn read_redis(s: &Section<'_>) -> Option<RedisConfig> {
    let d = RedisConfig::default();
    let url = s.required_string("url").and_then(|u| {
        if u.starts_with("redis://") || u.starts_with("rediss://") {
            Some(u.to_owned())
        } else {
            s.problem("url", Problem::Invalid { expected: "a redis:// or rediss:// URL", found: u.to_owned() });
            None
        }
    });
    let ca_file = s.optional_file("ca_file");
    if s.has("ca_file") && url.as_deref().is_some_and(|u| u.starts_with("redis://")) {
        s.problem("ca_file", Problem::Conflict { reason: "a CA file needs a rediss:// (TLS) url" });
    }
    let password_file = s.optional_file("password_file");
    let username = s.string("username").map(str::to_owned);
    let key_prefix = s.string("key_prefix").map_or(Some(d.key_prefix.clone()), |p| {
        // Keys and the channel name are built from it: printable, no spaces.
        if !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_graphic()) {
            Some(p.to_owned())
        } else {
            s.problem("key_prefix", Problem::Invalid { expected: "1 to 64 printable characters without spaces", found: p.to_owned() });
            None
        }
    });
    let on_error = match s.string("on_error") {
        None | Some("network_only") => Some(OnError::NetworkOnly),
        Some("refuse") => Some(OnError::Refuse),
        Some(other) => {
            s.problem("on_error", Problem::Invalid { expected: "\"network_only\" or \"refuse\"", found: other.to_owned() });
            None
        }
    };
    let connect_timeout = s.duration("connect_timeout", MAX_TIMEOUT);
    let command_timeout = s.duration("command_timeout", MAX_TIMEOUT);
    let cache_ttl = s.duration("cache_ttl", MAX_CACHE_TTL);
    let stale_for = s.duration("stale_for", Duration::from_secs(7 * 86_400));
    // Each connection multiplexes many requests; a handful is plenty.
    let pool_size = s.integer("pool_size", 1, 64);
    let cache_capacity = s.integer("cache_capacity", 1, 100_000_000);
    // A present key that failed to read leaves its getter `None`; only absence defaults.
    let or = |key: &str, v: Option<Duration>, default: Duration| if s.has(key) { v } else { Some(default) };
    Some(RedisConfig {
        url: url?,
        ca_file: ca_file.ok()?,
        password_file: password_file.ok()?,
        username,
        key_prefix: key_prefix?,
        connect_timeout: or("connect_timeout", connect_timeout, d.connect_timeout)?,
        command_timeout: or("command_timeout", command_timeout, d.command_timeout)?,
        pool_size: if s.has("pool_size") { pool_size? as usize } else { d.pool_size },
        on_error: on_error?,
        cache_ttl: or("cache_ttl", cache_ttl, d.cache_ttl)?,
        stale_for: or("stale_for", stale_for, d.stale_for)?,
        cache_capacity: if s.has("cache_capacity") { cache_capacity? as usize } else { d.cache_capacity },
    })
}

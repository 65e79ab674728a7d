//! `[session]`: how a request's session is found (cookies, bearer, JWT), how its key is
//! hashed, and how long the store remembers it.

use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use jsonwebtoken::Algorithm;

use crate::session::jwt::JwtConfig;
use crate::session::StoreLimits;

use super::decode::Section;
use super::Problem;

#[derive(Debug, Clone)]
pub struct Session {
    pub cookies: Vec<String>,
    /// Also take the session from `Authorization: Bearer`.
    pub bearer: bool,
    /// Hex key file (current key, optional previous key); generated at start if absent.
    pub hash_key_file: Option<PathBuf>,
    /// A header naming the user, set by a trusted auth layer (believed from trusted hops only).
    pub user_header: Option<HeaderName>,
    pub limits: StoreLimits,
    /// Where the embedded store keeps its revocations across restarts (a writable
    /// directory; created at start if missing). Unset: revocations live in memory only.
    pub state_dir: Option<PathBuf>,
    pub jwt: Option<JwtConfig>,
}

pub(super) fn read(s: &Section<'_>) -> Option<Session> {
    let mut cookies = Vec::new();
    for (i, name) in s.string_array("cookies").unwrap_or_default().into_iter().enumerate() {
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if valid {
            cookies.push(name.to_owned());
        } else {
            s.problem(&format!("cookies[{i}]"), Problem::Invalid { expected: "a cookie name (a token, RFC 6265)", found: name.to_owned() });
        }
    }
    let bearer = s.boolean("bearer").unwrap_or(true);
    let hash_key_file = s.optional_file("hash_key_file");
    let user_header = s.parsed::<HeaderName>("user_header", "a header name");
    let d = StoreLimits::default();
    let secs = |key, default: u32| s.duration(key, Duration::from_secs(365 * 86_400)).map_or(default, |v| v.as_secs() as u32);
    let limits = StoreLimits {
        idle_ttl: secs("idle_ttl", d.idle_ttl),
        absolute_ttl: secs("absolute_ttl", d.absolute_ttl),
        max_sessions: s.integer("max_sessions", 1, 100_000_000).map_or(d.max_sessions, |n| n as usize),
        max_users: s.integer("max_users", 1, 10_000_000).map_or(d.max_users, |n| n as usize),
    };
    // An output directory: resolved, not checked here (it may not exist yet, and
    // `check-config` runs where the volume is not mounted).
    let state_dir = s.string("state_dir").map(|d| s.resolve(d));
    let jwt_section = s.sub("jwt");
    let jwt = if jwt_section.is_present() { read_jwt(&jwt_section).map(Some) } else { Some(None) };
    jwt_section.finish();
    Some(Session { cookies, bearer, hash_key_file: hash_key_file.ok()?, user_header, limits, state_dir, jwt: jwt? })
}

/// `[session.jwt]`: sessions carried as JWTs signed by a key set on disk.
fn read_jwt(s: &Section<'_>) -> Option<JwtConfig> {
    let issuer = s.required_string("issuer");
    let audience = s.required_string("audience");
    let jwks_file = s.optional_file("jwks_file");
    if !s.has("jwks_file") {
        s.problem("jwks_file", Problem::Missing);
    }
    let mut algorithms = Vec::new();
    for (i, a) in s.string_array("algorithms").unwrap_or_else(|| vec!["RS256", "ES256"]).into_iter().enumerate() {
        match a.parse::<Algorithm>() {
            // Symmetric algorithms would let anyone holding the key set forge tokens.
            Ok(alg) if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => algorithms.push(alg),
            _ => s.problem(&format!("algorithms[{i}]"), Problem::Invalid { expected: "an asymmetric JWS algorithm (RS256, PS256, ES256, ES384, EdDSA, ...)", found: a.to_owned() }),
        }
    }
    let user_claim = s.string("user_claim").unwrap_or("sub").to_owned();
    Some(JwtConfig { issuer: issuer?.to_owned(), audience: audience?.to_owned(), algorithms, jwks_file: jwks_file.ok()??, user_claim })
}

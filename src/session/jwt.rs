//! JWT sessions: when the cookie or bearer token is a JWT and a key set is configured,
//! it is verified (explicit algorithms, issuer, audience, expiry) and tells tether the
//! user, the IdP session id, when and how the user authenticated.
//!
//! Verification costs tens of microseconds, so a verified token is remembered (by its
//! keyed hash, never its text) until it expires, within a bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::key::SessionKey;

/// Verified tokens remembered; beyond it the memory is cleared and refilled.
const VERIFIED_CACHE: usize = 65_536;

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    pub jwks_file: PathBuf,
    /// The claim naming the user (`sub` by default; `email` or `preferred_username` work).
    pub user_claim: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read key set {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a JWK set: {source}", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{}: key {kid:?} is unusable: {source}", path.display())]
    Key { path: PathBuf, kid: String, source: jsonwebtoken::errors::Error },
}

/// What the token says about its user and their authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    pub user: Option<Arc<str>>,
    pub sid: Option<Arc<str>>,
    pub auth_time: Option<u64>,
    pub acr: Option<Arc<str>>,
    pub amr: Vec<Arc<str>>,
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtOutcome {
    /// Not shaped like a JWT: an opaque session cookie.
    NotJwt,
    Verified(Arc<VerifiedClaims>),
    /// Shaped like a JWT but not verifiable: a signal, never a crash.
    Invalid,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    auth_time: Option<u64>,
    #[serde(default)]
    acr: Option<String>,
    #[serde(default)]
    amr: Option<Vec<String>>,
    exp: u64,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

pub struct JwtVerifier {
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    user_claim: String,
    verified: Mutex<HashMap<SessionKey, Arc<VerifiedClaims>>>,
}

impl JwtVerifier {
    pub fn load(cfg: &JwtConfig) -> Result<JwtVerifier, JwksError> {
        let text = std::fs::read_to_string(&cfg.jwks_file).map_err(|source| JwksError::Read { path: cfg.jwks_file.clone(), source })?;
        JwtVerifier::from_jwks(&text, &cfg.jwks_file, cfg)
    }

    pub fn from_jwks(text: &str, path: &Path, cfg: &JwtConfig) -> Result<JwtVerifier, JwksError> {
        let set: JwkSet = serde_json::from_str(text).map_err(|source| JwksError::Parse { path: path.to_path_buf(), source })?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone();
            let key = DecodingKey::from_jwk(jwk).map_err(|source| JwksError::Key {
                path: path.to_path_buf(),
                kid: kid.clone().unwrap_or_default(),
                source,
            })?;
            keys.push((kid, key));
        }
        let mut validation = Validation::new(cfg.algorithms.first().copied().unwrap_or(Algorithm::RS256));
        validation.algorithms = cfg.algorithms.clone();
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        Ok(JwtVerifier { keys, validation, user_claim: cfg.user_claim.clone(), verified: Mutex::new(HashMap::new()) })
    }

    /// Verifies `token` (already hashed to `key`) at time `now` (seconds).
    pub fn check(&self, token: &[u8], key: SessionKey, now: u64) -> JwtOutcome {
        if !looks_like_jwt(token) {
            return JwtOutcome::NotJwt;
        }
        if let Some(hit) = self.cached(&key, now) {
            return JwtOutcome::Verified(hit);
        }
        match self.verify(token) {
            Some(claims) if claims.exp + self.validation.leeway > now => {
                let claims = Arc::new(claims);
                let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= VERIFIED_CACHE {
                    cache.clear();
                }
                cache.insert(key, claims.clone());
                JwtOutcome::Verified(claims)
            }
            _ => JwtOutcome::Invalid,
        }
    }

    fn cached(&self, key: &SessionKey, now: u64) -> Option<Arc<VerifiedClaims>> {
        let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|c| c.exp + self.validation.leeway > now).cloned()
    }

    fn verify(&self, token: &[u8]) -> Option<VerifiedClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let candidates = self.keys.iter().filter(|(kid, _)| header.kid.is_none() || kid.is_none() || *kid == header.kid);
        for (_, key) in candidates {
            if let Ok(data) = jsonwebtoken::decode::<RawClaims>(token, key, &self.validation) {
                let c = data.claims;
                let user = match self.user_claim.as_str() {
                    "sid" => c.sid.clone(),
                    name => c.rest.get(name).and_then(|v| v.as_str()).map(str::to_owned),
                };
                return Some(VerifiedClaims {
                    user: user.map(Arc::from),
                    sid: c.sid.map(Arc::from),
                    auth_time: c.auth_time,
                    acr: c.acr.map(Arc::from),
                    amr: c.amr.unwrap_or_default().into_iter().map(Arc::from).collect(),
                    exp: c.exp,
                });
            }
        }
        None
    }
}

/// Three base64url segments whose header starts as JSON (`eyJ` is `{"`).
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.starts_with(b"eyJ")
        && token.iter().filter(|&&b| b == b'.').count() == 2
        && token.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn setup() -> (EncodingKey, String, JwtConfig) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let set = serde_json::json!({ "keys": [jwk] }).to_string();
        let cfg = JwtConfig {
            issuer: "https://sso.example".into(),
            audience: "console".into(),
            algorithms: vec![Algorithm::ES256],
            jwks_file: PathBuf::from("jwks.json"),
            user_claim: "sub".into(),
        };
        (enc, set, cfg)
    }

    fn token(enc: &EncodingKey, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        encode(&h, &claims, enc).unwrap()
    }

    #[test]
    fn verifies_claims_and_rejects_everything_else() {
        let (enc, set, cfg) = setup();
        let v = JwtVerifier::from_jwks(&set, Path::new("jwks.json"), &cfg).unwrap();
        let now = 1_800_000_000u64;
        let good = serde_json::json!({"iss": "https://sso.example", "aud": "console", "sub": "alice", "sid": "s-1",
            "exp": now + 600, "auth_time": now - 30, "acr": "mfa", "amr": ["pwd", "otp"]});
        let t = token(&enc, good.clone());
        let k = SessionKey([1; 16]);
        let JwtOutcome::Verified(c) = v.check(t.as_bytes(), k, now) else { panic!("not verified") };
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.sid.as_deref(), Some("s-1"));
        assert_eq!(c.auth_time, Some(now - 30));
        assert_eq!(c.amr.len(), 2);
        // Cached, and the cache honours expiry.
        assert!(matches!(v.check(t.as_bytes(), k, now), JwtOutcome::Verified(_)));
        assert_eq!(v.check(t.as_bytes(), k, now + 3600), JwtOutcome::Invalid);

        let wrong = |field: &str, value: serde_json::Value| {
            let mut c = good.clone();
            c[field] = value;
            v.check(token(&enc, c).as_bytes(), SessionKey([2; 16]), now)
        };
        assert_eq!(wrong("iss", "https://evil".into()), JwtOutcome::Invalid);
        assert_eq!(wrong("aud", "other".into()), JwtOutcome::Invalid);
        assert_eq!(wrong("exp", (now - 3600).into()), JwtOutcome::Invalid);
        // A signature by another key.
        let (other, _, _) = setup();
        assert_eq!(v.check(token(&other, good.clone()).as_bytes(), SessionKey([3; 16]), now), JwtOutcome::Invalid);
        // An HS256 token (algorithm not allowed) and a tampered payload.
        let hs = encode(&Header::new(Algorithm::HS256), &good, &EncodingKey::from_secret(b"k").unwrap()).unwrap();
        assert_eq!(v.check(hs.as_bytes(), SessionKey([4; 16]), now), JwtOutcome::Invalid);
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b"{\"sub\":\"mallory\"}");
        parts[1] = &forged;
        assert_eq!(v.check(parts.join(".").as_bytes(), SessionKey([5; 16]), now), JwtOutcome::Invalid);
        // Opaque cookies are not JWTs.
        assert_eq!(v.check(b"opaque-session-id", SessionKey([6; 16]), now), JwtOutcome::NotJwt);
        assert_eq!(v.check(b"eyJhbGciOi.broken", SessionKey([7; 16]), now), JwtOutcome::NotJwt);
        assert_eq!(v.check(b"eyJhbGciOi.x.y", SessionKey([8; 16]), now), JwtOutcome::Invalid);
    }
}

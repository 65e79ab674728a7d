//! JWT sessions: when the cookie or bearer token is a JWT and a key set is configured,
//! it is verified (explicit algorithms, issuer, audience, expiry) and tells tether the
//! user, the IdP session id, when and how the user authenticated.
//!
//! Verification costs tens of microseconds, so a verified token is remembered (by its
//! keyed hash, never its text) until it expires, within a bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use super::key::SessionKey;
use crate::jwt::{self, Claim, Expiry, KeySet, KeySetError, Rejected, Rules, Unusable};

/// Verified tokens remembered; beyond it the memory is cleared and refilled.
const VERIFIED_CACHE: usize = 65_536;
/// Clock difference tolerated between the IdP that minted the session and tether.
const LEEWAY_SECS: u64 = 30;
/// A session JWT without these is not one tether can place.
const REQUIRED: [Claim; 3] = [Claim::Exp, Claim::Iss, Claim::Aud];

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
    /// What names this token whatever its bytes: its `jti`, else issuer, subject and
    /// issue time. A token sent in another header, or with its ECDSA signature malleated,
    /// is the same session.
    pub canonical: Arc<str>,
    /// `iat`: a user revoked after it revokes this token too.
    pub issued_at: Option<u64>,
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
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
}

/// What a session JWT must show besides its signature.
#[derive(Debug, Clone, Copy)]
pub struct SessionRules<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub user_claim: &'a str,
}

/// The claims of a session JWT whose signature verified, checked at `now`: issuer,
/// audience, expiry (with [`LEEWAY_SECS`]) and the shape of what tether reads.
pub fn check_claims(claims: &Value, rules: &SessionRules<'_>, now: u64) -> Result<VerifiedClaims, Rejected> {
    let registered = Rules { issuers: &[rules.issuer], audience: rules.audience, required: &REQUIRED, expiry: Expiry::Checked, leeway: LEEWAY_SECS };
    let exp = jwt::check_registered(claims, &registered, now)?.exp.ok_or(Rejected::Malformed)?;
    let c = RawClaims::deserialize(claims).map_err(|_| Rejected::Malformed)?;
    let canonical: Arc<str> = match &c.jti {
        Some(jti) => Arc::from(format!("jti\0{jti}")),
        None => Arc::from(format!(
            "iss\0{}\0sub\0{}\0iat\0{}",
            c.iss.as_deref().unwrap_or(""),
            c.sub.as_deref().unwrap_or(""),
            c.iat.map_or(String::new(), |t| t.to_string())
        )),
    };
    Ok(VerifiedClaims {
        canonical,
        issued_at: c.iat,
        user: claims.get(rules.user_claim).and_then(Value::as_str).map(Arc::from),
        sid: c.sid.map(Arc::from),
        auth_time: c.auth_time,
        acr: c.acr.map(Arc::from),
        amr: c.amr.unwrap_or_default().into_iter().map(Arc::from).collect(),
        exp,
    })
}

pub struct JwtVerifier {
    keys: KeySet,
    algorithms: Vec<Algorithm>,
    issuer: String,
    audience: String,
    user_claim: String,
    verified: Mutex<HashMap<SessionKey, Arc<VerifiedClaims>>>,
}

impl JwtVerifier {
    pub fn load(cfg: &JwtConfig) -> Result<JwtVerifier, JwksError> {
        let text = std::fs::read_to_string(&cfg.jwks_file).map_err(|source| JwksError::Read { path: cfg.jwks_file.clone(), source })?;
        JwtVerifier::from_jwks(&text, &cfg.jwks_file, cfg)
    }

    pub fn from_jwks(text: &str, path: &Path, cfg: &JwtConfig) -> Result<JwtVerifier, JwksError> {
        let keys = KeySet::parse(text.as_bytes(), Unusable::Refuse).map_err(|e| match e {
            KeySetError::Parse(source) => JwksError::Parse { path: path.to_path_buf(), source },
            KeySetError::Key { kid, source } => JwksError::Key { path: path.to_path_buf(), kid, source },
        })?;
        Ok(JwtVerifier {
            keys,
            algorithms: cfg.algorithms.clone(),
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            user_claim: cfg.user_claim.clone(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies `token` (already hashed to `key`) at time `now` (seconds).
    pub fn check(&self, token: &[u8], key: SessionKey, now: u64) -> JwtOutcome {
        if !looks_like_jwt(token) {
            return JwtOutcome::NotJwt;
        }
        if let Some(hit) = self.cached(&key, now) {
            return JwtOutcome::Verified(hit);
        }
        match self.verify(token, now) {
            Ok(claims) => {
                let claims = Arc::new(claims);
                let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= VERIFIED_CACHE {
                    cache.clear();
                }
                cache.insert(key, claims.clone());
                JwtOutcome::Verified(claims)
            }
            Err(_) => JwtOutcome::Invalid,
        }
    }

    fn cached(&self, key: &SessionKey, now: u64) -> Option<Arc<VerifiedClaims>> {
        let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|c| c.exp + LEEWAY_SECS > now).cloned()
    }

    fn verify(&self, token: &[u8], now: u64) -> Result<VerifiedClaims, Rejected> {
        // `looks_like_jwt` admitted ASCII only.
        let token = std::str::from_utf8(token).map_err(|_| Rejected::Malformed)?;
        let claims = jwt::verify_signature(token, &self.keys, &self.algorithms)?;
        let rules = SessionRules { issuer: &self.issuer, audience: &self.audience, user_claim: &self.user_claim };
        check_claims(&claims, &rules, now)
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

    #[test]
    fn session_claims_table() {
        let now = 1_800_000_000u64;
        let rules = SessionRules { issuer: "https://sso.example", audience: "console", user_claim: "email" };
        let good = serde_json::json!({"iss": "https://sso.example", "aud": ["console"], "exp": now + 60,
            "sub": "u-1", "email": "alice@example.com", "sid": "s-1", "auth_time": now - 30, "acr": "mfa", "amr": ["pwd"]});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        // What a row shows, the claims, and the user they name or why they do not count.
        type Row = (&'static str, serde_json::Value, Result<Option<&'static str>, Rejected>);
        let rows: Vec<Row> = vec![
            ("good", good.clone(), Ok(Some("alice@example.com"))),
            ("expired, within the leeway", with("exp", (now - 29).into()), Ok(Some("alice@example.com"))),
            ("no user claim: a session without a user", without("email"), Ok(None)),
            ("a user claim that is not text", with("email", 7.into()), Ok(None)),
            ("expired", with("exp", (now - 30).into()), Err(Rejected::Expired)),
            ("another issuer", with("iss", "https://evil".into()), Err(Rejected::WrongIssuerOrAudience)),
            ("another audience", with("aud", "other".into()), Err(Rejected::WrongIssuerOrAudience)),
            ("no exp", without("exp"), Err(Rejected::Malformed)),
            ("no iss", without("iss"), Err(Rejected::Malformed)),
            ("no aud", without("aud"), Err(Rejected::Malformed)),
            ("amr not a list", with("amr", "pwd".into()), Err(Rejected::Malformed)),
            ("auth_time as text", with("auth_time", "yesterday".into()), Err(Rejected::Malformed)),
        ];
        for (name, claims, want) in rows {
            let got = check_claims(&claims, &rules, now);
            assert_eq!(got.as_ref().map(|c| c.user.as_deref()).map_err(|e| *e), want, "{name}");
        }
        let c = check_claims(&good, &SessionRules { user_claim: "sid", ..rules }, now).unwrap();
        assert_eq!((c.user.as_deref(), c.sid.as_deref(), c.acr.as_deref(), c.exp), (Some("s-1"), Some("s-1"), Some("mfa"), now + 60));
    }

    #[test]
    fn a_token_is_named_by_its_claims_not_its_bytes() {
        let now = 1_800_000_000u64;
        let rules = SessionRules { issuer: "https://sso.example", audience: "console", user_claim: "sub" };
        let base = serde_json::json!({"iss": "https://sso.example", "aud": "console", "exp": now + 60, "sub": "u-1", "iat": now - 5});
        let canonical = |c: &serde_json::Value| check_claims(c, &rules, now).unwrap().canonical;
        // Whatever else differs (a refreshed expiry, claim order), the same jti is one token.
        let mut a = base.clone();
        a["jti"] = "t-1".into();
        let mut b = a.clone();
        b["exp"] = (now + 120).into();
        assert_eq!(canonical(&a), canonical(&b));
        // Without a jti: issuer, subject and issue time.
        let mut later = base.clone();
        later["iat"] = (now - 1).into();
        assert_ne!(canonical(&base), canonical(&later));
        let mut other = base.clone();
        other["sub"] = "u-2".into();
        assert_ne!(canonical(&base), canonical(&other));
        assert_ne!(canonical(&base), canonical(&a));
    }

    #[test]
    fn algorithms_of_two_families_verify() {
        let (enc, set, mut cfg) = setup();
        cfg.algorithms = vec![Algorithm::RS256, Algorithm::ES256];
        let v = JwtVerifier::from_jwks(&set, Path::new("jwks.json"), &cfg).unwrap();
        let now = 1_800_000_000u64;
        let t = token(&enc, serde_json::json!({"iss": "https://sso.example", "aud": "console", "sub": "alice", "exp": now + 600}));
        assert!(matches!(v.check(t.as_bytes(), SessionKey([9; 16]), now), JwtOutcome::Verified(_)));
    }
}

//! The JWT toolkit shared by session tokens (a key set from a file) and the IdP's ID and
//! logout tokens (a key set fetched over the network): a key set read from JWK JSON, the
//! choice of key by `kid` and algorithm, signature verification, and the check of the
//! registered claims (`iss`, `aud`, `exp`, presence) as a pure function of `now`.
//!
//! What a token must say beyond that is each caller's own pure check; this module knows
//! nothing of sessions or step-up, so both can stand on it.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("not a JWK set: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("key {kid:?} is unusable: {source}")]
    Key {
        kid: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// Why a token does not count. The step-up side names these in its failure reasons; the
/// session side only needs to know the token is not to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token is expired")]
    Expired,
    #[error("the token's issuer or audience is wrong")]
    WrongIssuerOrAudience,
    #[error("the token is malformed or misses a required claim")]
    Malformed,
}

/// What to do with a key of the set that tether cannot use (an unsupported curve, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// An operator's file: a key that cannot be used is a mistake worth reporting.
    Refuse,
    /// A fetched set: the IdP may publish keys for purposes tether has no part in.
    Skip,
}

struct Key {
    kid: Option<String>,
    /// The algorithm the key declares (`alg`), if any; RFC 8725 §3.1: a key is used with
    /// that algorithm only.
    alg: Option<KeyAlgorithm>,
    key: DecodingKey,
}

/// Verification keys, as read from a JWK set.
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    pub fn empty() -> KeySet {
        KeySet { keys: Vec::new() }
    }

    pub fn parse(json: &[u8], unusable: Unusable) -> Result<KeySet, KeySetError> {
        let set: JwkSet = serde_json::from_slice(json).map_err(KeySetError::Parse)?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone();
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.push(Key { kid, alg: jwk.common.key_algorithm, key }),
                Err(source) if unusable == Unusable::Refuse => return Err(KeySetError::Key { kid: kid.unwrap_or_default(), source }),
                Err(_) => {}
            }
        }
        Ok(KeySet { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a token naming `kid` has a key here to try (any key, when it names none).
    /// A key set that does not know a `kid` is worth fetching again.
    pub fn knows(&self, kid: Option<&str>) -> bool {
        self.keys.iter().any(|k| kid.is_none() || k.kid.as_deref() == kid)
    }

    /// The keys that may have signed a token with this header: the same `kid` (or either
    /// side naming none) and no declared algorithm other than the header's.
    fn candidates<'a>(&'a self, header: &'a Header) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        self.keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .filter(|k| k.alg.is_none_or(|a| a == KeyAlgorithm::from(header.alg)))
            .map(|k| &k.key)
    }
}

/// The token's header, once its algorithm is one of `algorithms`: callers look at the
/// `kid` before they know which keys to hold.
pub fn header(token: &str, algorithms: &[Algorithm]) -> Result<Header, Rejected> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejected::Malformed)?;
    if !algorithms.contains(&header.alg) {
        return Err(Rejected::BadSignature);
    }
    Ok(header)
}

/// The claims of `token` once its signature verifies under a key of `keys` (chosen by
/// `kid` and algorithm) with one of `algorithms`. Nothing in the claims is checked yet:
/// that is [`check_registered`]'s and the caller's work, both pure.
pub fn verify_signature(token: &str, keys: &KeySet, algorithms: &[Algorithm]) -> Result<Value, Rejected> {
    let header = header(token, algorithms)?;
    // One algorithm, the header's: jsonwebtoken refuses a list that spans key families
    // (RS256 and ES256 together), and which one applies is known by now.
    let mut validation = Validation::new(header.alg);
    // Claims are checked by `check_registered` against the caller's `now`, not here
    // against the system clock.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    for key in keys.candidates(&header) {
        match jsonwebtoken::decode::<Value>(token, key, &validation) {
            Ok(data) => return Ok(data.claims),
            // Another key of the set may be the one.
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat) => {}
            Err(_) => return Err(Rejected::Malformed),
        }
    }
    Err(Rejected::BadSignature)
}

/// A registered claim (RFC 7519 §4.1) a kind of token must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Iss,
    Aud,
    Exp,
    Iat,
    Sub,
}

impl Claim {
    fn name(self) -> &'static str {
        match self {
            Claim::Iss => "iss",
            Claim::Aud => "aud",
            Claim::Exp => "exp",
            Claim::Iat => "iat",
            Claim::Sub => "sub",
        }
    }
}

/// Whether `exp` is held against `now`: a logout token, for one, carries none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Checked,
    Unchecked,
}

/// What every token of one kind must show besides a good signature.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Accepted `iss` values (one issuer written with and without a trailing slash, say).
    pub issuers: &'a [&'a str],
    /// tether's own name: the token's `aud` (a string or a list) must hold it.
    pub audience: &'a str,
    pub required: &'a [Claim],
    pub expiry: Expiry,
    /// Clock difference tolerated between the issuer and tether (seconds).
    pub leeway: u64,
}

/// The registered times a caller acts on after [`check_registered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Times {
    pub exp: Option<u64>,
    pub iat: Option<u64>,
}

/// Checks the registered claims in the order jsonwebtoken does (presence, expiry, issuer,
/// audience), so the first failure named is the same whichever side verifies.
pub fn check_registered(claims: &Value, rules: &Rules<'_>, now: u64) -> Result<Times, Rejected> {
    for claim in rules.required {
        if is_absent(claims.get(claim.name())) {
            return Err(Rejected::Malformed);
        }
    }
    let times = Times { exp: numeric_date(claims.get("exp"))?, iat: numeric_date(claims.get("iat"))? };
    if rules.expiry == Expiry::Checked {
        if let Some(exp) = times.exp {
            if exp.saturating_add(rules.leeway) <= now {
                return Err(Rejected::Expired);
            }
        }
    }
    match claims.get("iss") {
        Some(Value::String(iss)) if !rules.issuers.contains(&iss.as_str()) => return Err(Rejected::WrongIssuerOrAudience),
        Some(Value::String(_)) | None | Some(Value::Null) => {}
        Some(_) => return Err(Rejected::Malformed),
    }
    match claims.get("aud") {
        Some(Value::String(aud)) if aud != rules.audience => return Err(Rejected::WrongIssuerOrAudience),
        Some(Value::Array(list)) => {
            if list.iter().any(|a| !a.is_string()) {
                return Err(Rejected::Malformed);
            }
            if !list.iter().any(|a| a.as_str() == Some(rules.audience)) {
                return Err(Rejected::WrongIssuerOrAudience);
            }
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {}
        Some(_) => return Err(Rejected::Malformed),
    }
    Ok(times)
}

fn is_absent(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// A NumericDate (RFC 7519 §2): seconds, possibly with a fraction, which is dropped.
fn numeric_date(v: Option<&Value>) -> Result<Option<u64>, Rejected> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(secs) => Ok(Some(secs)),
            None => match n.as_f64() {
                Some(f) if f.is_finite() && (0.0..u64::MAX as f64).contains(&f) => Ok(Some(f as u64)),
                _ => Err(Rejected::Malformed),
            },
        },
        Some(_) => Err(Rejected::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn es256() -> (EncodingKey, serde_json::Value) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        (enc, serde_json::to_value(jwk).unwrap())
    }

    fn sign(enc: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        encode(&h, &json!({"sub": "alice"}), enc).unwrap()
    }

    fn set(keys: &[(serde_json::Value, Option<&str>, Option<&str>)]) -> KeySet {
        let keys: Vec<_> = keys
            .iter()
            .map(|(jwk, kid, alg)| {
                let mut jwk = jwk.clone();
                let obj = jwk.as_object_mut().unwrap();
                obj.remove("kid");
                obj.remove("alg");
                if let Some(kid) = kid {
                    obj.insert("kid".into(), json!(kid));
                }
                if let Some(alg) = alg {
                    obj.insert("alg".into(), json!(alg));
                }
                jwk
            })
            .collect();
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes(), Unusable::Refuse).unwrap()
    }

    /// What a row shows, its token, the algorithms allowed, and the outcome.
    type Row<'a> = (&'a str, String, &'a [Algorithm], Result<(), Rejected>);

    #[test]
    fn keys_are_chosen_by_kid_and_algorithm() {
        let (a, a_jwk) = es256();
        let (b, b_jwk) = es256();
        let es = [Algorithm::ES256];
        let keys = set(&[(a_jwk.clone(), Some("a"), Some("ES256")), (b_jwk.clone(), Some("b"), None)]);
        let hs = encode(&Header::new(Algorithm::HS256), &json!({}), &EncodingKey::from_secret(b"k").unwrap()).unwrap();
        let rows: [Row<'_>; 8] = [
            ("the named key verifies", sign(&a, Algorithm::ES256, Some("a")), &es, Ok(())),
            ("no kid: every key is tried", sign(&b, Algorithm::ES256, None), &es, Ok(())),
            ("a kid naming another key", sign(&a, Algorithm::ES256, Some("b")), &es, Err(Rejected::BadSignature)),
            ("an unknown kid", sign(&a, Algorithm::ES256, Some("c")), &es, Err(Rejected::BadSignature)),
            ("a key outside the set", sign(&es256().0, Algorithm::ES256, None), &es, Err(Rejected::BadSignature)),
            ("an algorithm not allowed", hs, &es, Err(Rejected::BadSignature)),
            ("an algorithm the caller does not allow", sign(&a, Algorithm::ES256, Some("a")), &[Algorithm::RS256], Err(Rejected::BadSignature)),
            ("not a JWT", "eyJhbGciOi.x.y".to_owned(), &es, Err(Rejected::Malformed)),
        ];
        for (name, token, algs, want) in rows {
            assert_eq!(verify_signature(&token, &keys, algs).map(|_| ()), want, "{name}");
        }
        // A key declaring another algorithm is not used for this one.
        let declared = set(&[(a_jwk, Some("a"), Some("ES384"))]);
        assert_eq!(verify_signature(&sign(&a, Algorithm::ES256, Some("a")), &declared, &es).err(), Some(Rejected::BadSignature));
        // Allowed algorithms of two families (an operator's RS256 and ES256) still verify.
        let both = [Algorithm::RS256, Algorithm::ES256];
        assert!(verify_signature(&sign(&b, Algorithm::ES256, Some("b")), &keys, &both).is_ok());
        assert!(keys.knows(Some("a")) && keys.knows(None) && !keys.knows(Some("c")));
        assert!(!KeySet::empty().knows(None));
    }

    #[test]
    fn unusable_keys_are_refused_or_skipped() {
        let (_, jwk) = es256();
        let mut bad = jwk.clone();
        bad["x"] = json!("not base64!");
        let text = json!({ "keys": [bad, jwk] }).to_string();
        assert!(matches!(KeySet::parse(text.as_bytes(), Unusable::Refuse), Err(KeySetError::Key { .. })));
        assert_eq!(KeySet::parse(text.as_bytes(), Unusable::Skip).unwrap().keys.len(), 1);
        assert!(matches!(KeySet::parse(b"{\"keys\": 3}", Unusable::Skip), Err(KeySetError::Parse(_))));
    }

    #[test]
    fn registered_claims() {
        use Claim::*;
        let rules = Rules { issuers: &["https://sso.example", "https://sso.example/"], audience: "tether", required: &[Iss, Aud, Exp], expiry: Expiry::Checked, leeway: 5 };
        let good = json!({"iss": "https://sso.example", "aud": "tether", "exp": NOW + 60, "iat": NOW});
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        let rows: Vec<(&str, Value, Result<(), Rejected>)> = vec![
            ("all good", good.clone(), Ok(())),
            ("issuer with a trailing slash", with("iss", json!("https://sso.example/")), Ok(())),
            ("audience in a list", with("aud", json!(["other", "tether"])), Ok(())),
            ("expired within the leeway", with("exp", json!(NOW - 4)), Ok(())),
            ("fractional exp", with("exp", json!(NOW as f64 + 60.5)), Ok(())),
            ("expired", with("exp", json!(NOW - 5)), Err(Rejected::Expired)),
            ("expired and from another issuer: expiry first", json!({"iss": "x", "aud": "tether", "exp": NOW - 60}), Err(Rejected::Expired)),
            ("another issuer", with("iss", json!("https://evil.example")), Err(Rejected::WrongIssuerOrAudience)),
            ("another audience", with("aud", json!("console")), Err(Rejected::WrongIssuerOrAudience)),
            ("a list without tether", with("aud", json!(["console"])), Err(Rejected::WrongIssuerOrAudience)),
            ("an empty audience list", with("aud", json!([])), Err(Rejected::WrongIssuerOrAudience)),
            ("no exp", without("exp"), Err(Rejected::Malformed)),
            ("no iss", without("iss"), Err(Rejected::Malformed)),
            ("no aud", without("aud"), Err(Rejected::Malformed)),
            ("a null exp", with("exp", Value::Null), Err(Rejected::Malformed)),
            ("exp as text", with("exp", json!("soon")), Err(Rejected::Malformed)),
            ("a negative exp", with("exp", json!(-1)), Err(Rejected::Malformed)),
            ("iss as a number", with("iss", json!(7)), Err(Rejected::Malformed)),
            ("aud as an object", with("aud", json!({"a": 1})), Err(Rejected::Malformed)),
            ("a list of numbers", with("aud", json!([1])), Err(Rejected::Malformed)),
            ("not an object", json!("text"), Err(Rejected::Malformed)),
        ];
        for (name, claims, want) in rows {
            assert_eq!(check_registered(&claims, &rules, NOW).map(|_| ()), want, "{name}");
        }
        assert_eq!(check_registered(&good, &rules, NOW), Ok(Times { exp: Some(NOW + 60), iat: Some(NOW) }));
        // A kind of token without expiry: an old exp does not matter, the rest still does.
        let unchecked = Rules { expiry: Expiry::Unchecked, required: &[Iss, Aud, Iat], ..rules };
        assert!(check_registered(&with("exp", json!(1)), &unchecked, NOW).is_ok());
        assert_eq!(check_registered(&without("iat"), &unchecked, NOW), Err(Rejected::Malformed));
    }
}

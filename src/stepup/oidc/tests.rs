//! The ID-token and logout-token checks as tables: one row per way a token fails, each
//! named by the failure reason docs/step-up.md lists, run through everything the client does
//! after fetching keys (signature, registered claims, the token's own checks).

use jsonwebtoken::{encode, EncodingKey};
use serde_json::{json, Value};

use super::*;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example/";
const CLIENT: &str = "tether";

/// Who signs a row's token.
#[derive(Clone, Copy)]
enum Signer {
    Idp,
    /// A key the IdP never published.
    Stranger,
    /// A symmetric algorithm, never accepted.
    Hs256,
}

struct Keys {
    idp: EncodingKey,
    stranger: EncodingKey,
    set: KeySet,
}

fn keys() -> Keys {
    let gen = || {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap()
    };
    let (idp, stranger) = (gen(), gen());
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&idp, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("idp-1".into());
    let set = KeySet::parse(json!({ "keys": [jwk] }).to_string().as_bytes(), Unusable::Skip).unwrap();
    Keys { idp, stranger, set }
}

fn sign(keys: &Keys, signer: Signer, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("idp-1".into());
    match signer {
        Signer::Idp => encode(&header, claims, &keys.idp).unwrap(),
        Signer::Stranger => encode(&header, claims, &keys.stranger).unwrap(),
        Signer::Hs256 => encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(b"published").unwrap()).unwrap(),
    }
}

fn edit(base: &Value, changes: &[(&str, Option<Value>)]) -> Value {
    let mut c = base.clone();
    for (k, v) in changes {
        match v {
            Some(v) => c[*k] = v.clone(),
            None => {
                c.as_object_mut().unwrap().remove(*k);
            }
        }
    }
    c
}

/// A row: what it shows, who signs, the claims, and `Ok` or the failure's README name.
type Row = (&'static str, Signer, Value, Result<(), &'static str>);

fn good_id_token() -> Value {
    json!({
        "iss": "https://idp.example", "aud": CLIENT, "azp": CLIENT, "sub": "u-1", "email": "alice@example.com",
        "exp": NOW + 300, "iat": NOW, "nonce": "n-1", "auth_time": NOW - 10,
        "acr": "urn:example:mfa", "amr": ["pwd", "otp"], "sid": "idp-session-1",
    })
}

fn id_token_rows() -> Vec<Row> {
    use Signer::*;
    let g = good_id_token();
    let e = |changes: &[(&str, Option<Value>)]| edit(&g, changes);
    vec![
        ("a good token", Idp, g.clone(), Ok(())),
        ("the issuer as discovery spells it", Idp, e(&[("iss", Some(json!(ISSUER)))]), Ok(())),
        ("tether among several audiences", Idp, e(&[("aud", Some(json!(["console", CLIENT])))]), Ok(())),
        ("no azp", Idp, e(&[("azp", None)]), Ok(())),
        ("the second acr value", Idp, e(&[("acr", Some(json!("urn:example:hwk")))]), Ok(())),
        ("authenticated just before the challenge, within the leeway", Idp, e(&[("auth_time", Some(json!(NOW - 65)))]), Ok(())),
        ("another key", Stranger, g.clone(), Err("bad_signature")),
        ("a symmetric algorithm", Hs256, g.clone(), Err("bad_signature")),
        ("expired", Idp, e(&[("exp", Some(json!(NOW - LEEWAY_SECS)))]), Err("expired")),
        ("another issuer", Idp, e(&[("iss", Some(json!("https://evil.example")))]), Err("wrong_issuer_or_audience")),
        ("another audience", Idp, e(&[("aud", Some(json!("console")))]), Err("wrong_issuer_or_audience")),
        ("issued to another client", Idp, e(&[("azp", Some(json!("console")))]), Err("wrong_issuer_or_audience")),
        ("no sub", Idp, e(&[("sub", None)]), Err("malformed_token")),
        ("no iat", Idp, e(&[("iat", None)]), Err("malformed_token")),
        ("no exp", Idp, e(&[("exp", None)]), Err("malformed_token")),
        ("sub as a number", Idp, e(&[("sub", Some(json!(7)))]), Err("malformed_token")),
        ("amr as text", Idp, e(&[("amr", Some(json!("otp")))]), Err("malformed_token")),
        ("another nonce", Idp, e(&[("nonce", Some(json!("n-2")))]), Err("nonce_mismatch")),
        ("no nonce", Idp, e(&[("nonce", None)]), Err("nonce_mismatch")),
        ("no auth_time", Idp, e(&[("auth_time", None)]), Err("stale_auth_time")),
        ("authenticated before the challenge", Idp, e(&[("auth_time", Some(json!(NOW - 66)))]), Err("stale_auth_time")),
        ("authenticated in the future", Idp, e(&[("auth_time", Some(json!(NOW + LEEWAY_SECS + 1)))]), Err("stale_auth_time")),
        ("no acr", Idp, e(&[("acr", None)]), Err("acr_missing")),
        ("an acr not asked for", Idp, e(&[("acr", Some(json!("urn:example:pwd")))]), Err("acr_missing")),
        ("no amr", Idp, e(&[("amr", None)]), Err("amr_missing")),
        ("without the required method", Idp, e(&[("amr", Some(json!(["pwd"])))]), Err("amr_missing")),
        ("another user", Idp, e(&[("email", Some(json!("mallory@example.com")))]), Err("wrong_user")),
        ("no user claim", Idp, e(&[("email", None)]), Err("malformed_token")),
    ]
}

fn good_logout_token() -> Value {
    json!({
        "iss": "https://idp.example", "aud": CLIENT, "iat": NOW - 10, "jti": "j-1", "sub": "u-1", "sid": "idp-session-1",
        "events": { BACKCHANNEL_EVENT: {} },
    })
}

/// Run in order through one [`SeenLogouts`]: the replay row repeats the first row's `jti`.
fn logout_token_rows() -> Vec<Row> {
    use Signer::*;
    let g = good_logout_token();
    let e = |changes: &[(&str, Option<Value>)]| edit(&g, changes);
    vec![
        ("a good token", Idp, g.clone(), Ok(())),
        ("the same token again", Idp, g.clone(), Err("replayed")),
        ("a sid alone", Idp, e(&[("jti", Some(json!("j-2"))), ("sub", None)]), Ok(())),
        ("a sub alone", Idp, e(&[("jti", Some(json!("j-3"))), ("sid", None)]), Ok(())),
        ("an exp long past does not matter", Idp, e(&[("jti", Some(json!("j-4"))), ("exp", Some(json!(1)))]), Ok(())),
        ("another key", Stranger, e(&[("jti", Some(json!("j-5")))]), Err("bad_signature")),
        ("a symmetric algorithm", Hs256, e(&[("jti", Some(json!("j-6")))]), Err("bad_signature")),
        ("issued too long ago", Idp, e(&[("jti", Some(json!("j-7"))), ("iat", Some(json!(NOW - LOGOUT_MAX_AGE - 1)))]), Err("expired")),
        ("issued in the future", Idp, e(&[("jti", Some(json!("j-8"))), ("iat", Some(json!(NOW + LEEWAY_SECS + 1)))]), Err("expired")),
        ("another issuer", Idp, e(&[("jti", Some(json!("j-9"))), ("iss", Some(json!("https://evil.example")))]), Err("wrong_issuer_or_audience")),
        ("another audience", Idp, e(&[("jti", Some(json!("j-10"))), ("aud", Some(json!("console")))]), Err("wrong_issuer_or_audience")),
        ("no logout event", Idp, e(&[("jti", Some(json!("j-11"))), ("events", Some(json!({"other": {}})))]), Err("malformed_token")),
        ("no events", Idp, e(&[("jti", Some(json!("j-12"))), ("events", None)]), Err("malformed_token")),
        ("a nonce (an ID token passed off as a logout)", Idp, e(&[("jti", Some(json!("j-13"))), ("nonce", Some(json!("n")))]), Err("malformed_token")),
        ("neither sub nor sid", Idp, e(&[("jti", Some(json!("j-14"))), ("sub", None), ("sid", None)]), Err("malformed_token")),
        ("no jti", Idp, e(&[("jti", None)]), Err("malformed_token")),
        ("no iat", Idp, e(&[("jti", Some(json!("j-15"))), ("iat", None)]), Err("malformed_token")),
        ("no aud", Idp, e(&[("jti", Some(json!("j-16"))), ("aud", None)]), Err("malformed_token")),
    ]
}

fn id_rules(amr: &[String]) -> IdTokenRules<'_> {
    IdTokenRules {
        issuer: ISSUER,
        client_id: CLIENT,
        acr_values: Some("urn:example:mfa urn:example:hwk"),
        required_amr: amr,
        user_claim: "email",
        preset: Preset::GENERIC,
    }
}

fn expect() -> Expect<'static> {
    Expect { kind: Kind::StepUp, nonce: "n-1", challenged_at: NOW - 60, user: Some("alice@example.com"), now: NOW }
}

#[test]
fn id_tokens() {
    let keys = keys();
    let amr = vec!["otp".to_owned()];
    for (name, signer, claims, want) in id_token_rows() {
        let token = sign(&keys, signer, &claims);
        let got = jwt::verify_signature(&token, &keys.set, &ALGORITHMS).map_err(Failure::from).and_then(|c| check_id_token(&c, &id_rules(&amr), &expect()));
        assert_eq!(got.as_ref().map(|_| ()).map_err(|f| f.as_str()), want, "{name}");
    }
    let c = check_id_token(&good_id_token(), &id_rules(&amr), &expect()).unwrap();
    assert_eq!((c.sub.as_str(), c.user.as_deref(), c.auth_time, c.sid.as_deref()), ("u-1", Some("alice@example.com"), NOW - 10, Some("idp-session-1")));
    // Without acr_values, required amr or a known user, those checks stand aside.
    let lax = IdTokenRules { acr_values: None, user_claim: "sub", ..id_rules(&[]) };
    let bare = edit(&good_id_token(), &[("acr", None), ("amr", None), ("email", None)]);
    let c = check_id_token(&bare, &lax, &Expect { user: None, ..expect() }).unwrap();
    assert_eq!(c.user.as_deref(), Some("u-1"));
    assert_eq!(check_id_token(&bare, &lax, &Expect { user: Some("u-2"), ..expect() }).unwrap_err(), Failure::WrongUser);
    // A user claim the token does not carry: it cannot say whose session this is.
    let no_email = edit(&good_id_token(), &[("email", None)]);
    assert_eq!(check_id_token(&no_email, &id_rules(&amr), &Expect { user: None, ..expect() }).unwrap_err(), Failure::Malformed);
}

#[test]
fn an_identification_asks_only_who() {
    let amr = vec!["otp".to_owned()];
    let identify = Expect { kind: Kind::Identify, user: None, ..expect() };
    // An old login without acr or amr: fine for saying who holds the browser...
    let old = edit(&good_id_token(), &[("auth_time", Some(json!(NOW - 86_400))), ("acr", None), ("amr", None)]);
    let c = check_id_token(&old, &id_rules(&amr), &identify).unwrap();
    assert_eq!(c.user.as_deref(), Some("alice@example.com"));
    // ...and no auth_time at all too; but never for a step-up.
    let none = edit(&good_id_token(), &[("auth_time", None)]);
    assert!(check_id_token(&none, &id_rules(&amr), &identify).is_ok());
    assert_eq!(check_id_token(&old, &id_rules(&amr), &expect()).unwrap_err(), Failure::StaleAuthTime);
    // The registered claims and the nonce still hold.
    let wrong_nonce = edit(&good_id_token(), &[("nonce", Some(json!("other")))]);
    assert_eq!(check_id_token(&wrong_nonce, &id_rules(&amr), &identify).unwrap_err(), Failure::NonceMismatch);
    let expired = edit(&good_id_token(), &[("exp", Some(json!(NOW - 3600)))]);
    assert_eq!(check_id_token(&expired, &id_rules(&amr), &identify).unwrap_err(), Failure::Expired);
}

#[test]
fn logout_tokens() {
    let keys = keys();
    let mut seen = SeenLogouts::default();
    for (name, signer, claims, want) in logout_token_rows() {
        let token = sign(&keys, signer, &claims);
        let got = jwt::verify_signature(&token, &keys.set, &ALGORITHMS)
            .map_err(Failure::from)
            .and_then(|c| check_logout_token(&c, ISSUER, CLIENT, NOW))
            .and_then(|(logout, jti)| seen.admit(jti, NOW).map(|()| logout));
        assert_eq!(got.as_ref().map(|_| ()).map_err(|f| f.as_str()), want, "{name}");
    }
    let (logout, jti) = check_logout_token(&good_logout_token(), ISSUER, CLIENT, NOW).unwrap();
    assert_eq!((logout.sub.as_deref(), logout.sid.as_deref(), jti.as_str()), (Some("u-1"), Some("idp-session-1"), "j-1"));
}

#[test]
fn seen_logouts_stay_bounded() {
    let mut seen = SeenLogouts::default();
    for i in 0..MAX_SEEN_LOGOUTS {
        seen.admit(format!("old-{i}"), NOW).unwrap();
    }
    // Once full, ids older than a logout token may be are forgotten.
    seen.admit("new".into(), NOW + LOGOUT_MAX_AGE + 1).unwrap();
    assert_eq!(seen.seen.len(), 1);
    assert_eq!(seen.admit("new".into(), NOW + LOGOUT_MAX_AGE + 2), Err(Failure::Replayed));
}

/// Reasons the token checks cannot raise, and where they are tested instead.
const RAISED_ELSEWHERE: [(&str, &str); 8] = [
    ("unknown_owner", "the callback, end to end"),
    ("state_forged", "stepup::challenge tests"),
    ("state_replayed_or_unknown", "stepup::challenge tests"),
    ("state_expired", "stepup::challenge tests"),
    ("session_mismatch", "the callback, end to end"),
    ("idp_error", "the callback: the IdP's redirect carries an error"),
    ("idp_unavailable", "discovery and key fetches"),
    ("token_exchange_failed", "the code exchange"),
];

#[test]
fn every_failure_reason_in_the_readme_has_a_row() {
    let readme = include_str!("../../../docs/step-up.md");
    let start = readme.find("`detail` one of").expect("docs/step-up.md lists the step-up failure reasons");
    let list = &readme[start + "`detail` one of".len()..];
    let list = &list[..list.find("After `step_up.max_failures`").expect("the list ends before max_failures")];
    let reasons: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    assert!(reasons.len() >= 10, "{reasons:?}");
    let rows: Vec<&str> = id_token_rows().into_iter().chain(logout_token_rows()).filter_map(|(_, _, _, want)| want.err()).collect();
    for reason in reasons {
        assert!(
            rows.contains(&reason) || RAISED_ELSEWHERE.iter().any(|(r, _)| *r == reason),
            "docs/step-up.md names {reason:?}: give it a row, or say where it is raised"
        );
    }
}

const TENANT: &str = "9122040d-6c67-4c5b-b112-36a304b66dad";
const OTHER_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const ENTRA_TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

/// The configuration a preset row runs under.
struct PresetCase {
    issuer: &'static str,
    acr_values: Option<&'static str>,
    provider: Provider,
    acrs: Vec<String>,
    tenants: Vec<String>,
    acr_levels: Vec<(String, u32)>,
}

impl PresetCase {
    fn new(provider: Provider, issuer: &'static str) -> PresetCase {
        PresetCase { issuer, acr_values: None, provider, acrs: vec![], tenants: vec![], acr_levels: vec![] }
    }

    fn rules(&self) -> IdTokenRules<'_> {
        IdTokenRules {
            issuer: self.issuer,
            client_id: CLIENT,
            acr_values: self.acr_values,
            required_amr: &[],
            user_claim: "sub",
            preset: Preset { provider: self.provider, acrs: &self.acrs, tenants: &self.tenants, acr_levels: &self.acr_levels },
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// What a preset row shows, its configuration, the claims changed from a good token, and
/// `Ok` or the failure's README name.
type PresetRow = (&'static str, PresetCase, Vec<(&'static str, Option<Value>)>, Result<(), &'static str>);

/// One row per preset option and per way it fails.
fn preset_rows() -> Vec<PresetRow> {
    use Provider::*;
    let google = || PresetCase::new(Google, "https://accounts.google.com");
    let entra_multi = || PresetCase { tenants: strings(&[TENANT]), ..PresetCase::new(Entra, ENTRA_TEMPLATE) };
    let entra_acrs = || PresetCase { acrs: strings(&["c1", "c3"]), ..PresetCase::new(Entra, "https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/v2.0") };
    let keycloak = || PresetCase {
        acr_values: Some("gold"),
        acr_levels: vec![("silver".into(), 1), ("gold".into(), 2), ("platinum".into(), 3)],
        ..PresetCase::new(Keycloak, "https://kc.example/realms/corp")
    };
    let tenant_iss = |t: &str| json!(format!("https://login.microsoftonline.com/{t}/v2.0"));
    vec![
        // Google: both issuer spellings, for this preset only.
        ("google: the https issuer", google(), vec![("iss", Some(json!("https://accounts.google.com")))], Ok(())),
        ("google: the bare issuer", google(), vec![("iss", Some(json!("accounts.google.com")))], Ok(())),
        ("google: another issuer", google(), vec![("iss", Some(json!("https://evil.example")))], Err("wrong_issuer_or_audience")),
        ("generic: no bare issuer", PresetCase::new(Generic, "https://accounts.google.com"), vec![("iss", Some(json!("accounts.google.com")))], Err("wrong_issuer_or_audience")),
        ("google: auth_time still demanded", google(), vec![("iss", Some(json!("accounts.google.com"))), ("auth_time", None)], Err("stale_auth_time")),
        // Entra ID: the multi-tenant template, filled in with a listed tid.
        ("entra: a listed tenant", entra_multi(), vec![("iss", Some(tenant_iss(TENANT))), ("tid", Some(json!(TENANT)))], Ok(())),
        ("entra: a tenant not listed", entra_multi(), vec![("iss", Some(tenant_iss(OTHER_TENANT))), ("tid", Some(json!(OTHER_TENANT)))], Err("wrong_issuer_or_audience")),
        ("entra: iss of another tenant than tid", entra_multi(), vec![("iss", Some(tenant_iss(OTHER_TENANT))), ("tid", Some(json!(TENANT)))], Err("wrong_issuer_or_audience")),
        ("entra: no tid", entra_multi(), vec![("iss", Some(tenant_iss(TENANT)))], Err("wrong_issuer_or_audience")),
        ("entra: the template itself as iss", entra_multi(), vec![("iss", Some(json!(ENTRA_TEMPLATE))), ("tid", Some(json!(TENANT)))], Err("wrong_issuer_or_audience")),
        ("generic: a template is never filled in", PresetCase { tenants: strings(&[TENANT]), ..PresetCase::new(Generic, ENTRA_TEMPLATE) }, vec![("iss", Some(tenant_iss(TENANT))), ("tid", Some(json!(TENANT)))], Err("wrong_issuer_or_audience")),
        ("entra: a template without tenants accepts nobody", PresetCase::new(Entra, ENTRA_TEMPLATE), vec![("iss", Some(tenant_iss(TENANT))), ("tid", Some(json!(TENANT)))], Err("wrong_issuer_or_audience")),
        ("entra: a single-tenant issuer and its tid", PresetCase { tenants: strings(&[TENANT]), ..entra_acrs() }, vec![("iss", Some(tenant_iss(TENANT))), ("tid", Some(json!(TENANT))), ("acrs", Some(json!(["c1", "c3"])))], Ok(())),
        // Entra ID: authentication contexts.
        ("entra: every context", entra_acrs(), vec![("iss", Some(tenant_iss(TENANT))), ("acrs", Some(json!(["c3", "c2", "c1"])))], Ok(())),
        ("entra: a context missing", entra_acrs(), vec![("iss", Some(tenant_iss(TENANT))), ("acrs", Some(json!(["c1"])))], Err("acr_missing")),
        ("entra: no acrs", entra_acrs(), vec![("iss", Some(tenant_iss(TENANT)))], Err("acr_missing")),
        ("entra: acrs as text", entra_acrs(), vec![("iss", Some(tenant_iss(TENANT))), ("acrs", Some(json!("c1 c3")))], Err("acr_missing")),
        // Keycloak: ACR-to-LoA levels.
        ("keycloak: the requested name", keycloak(), vec![("iss", Some(json!("https://kc.example/realms/corp"))), ("acr", Some(json!("gold")))], Ok(())),
        ("keycloak: its level as a number", keycloak(), vec![("iss", Some(json!("https://kc.example/realms/corp"))), ("acr", Some(json!("2")))], Ok(())),
        ("keycloak: a higher level by name", keycloak(), vec![("iss", Some(json!("https://kc.example/realms/corp"))), ("acr", Some(json!("platinum")))], Ok(())),
        ("keycloak: a lower level", keycloak(), vec![("iss", Some(json!("https://kc.example/realms/corp"))), ("acr", Some(json!("silver")))], Err("acr_missing")),
        ("keycloak: a lower number", keycloak(), vec![("iss", Some(json!("https://kc.example/realms/corp"))), ("acr", Some(json!("1")))], Err("acr_missing")),
        ("keycloak: an unmapped name", keycloak(), vec![("iss", Some(json!("https://kc.example/realms/corp"))), ("acr", Some(json!("bronze")))], Err("acr_missing")),
        ("generic: levels mean nothing", PresetCase { acr_values: Some("gold"), ..PresetCase::new(Generic, "https://kc.example/realms/corp") }, vec![("iss", Some(json!("https://kc.example/realms/corp"))), ("acr", Some(json!("2")))], Err("acr_missing")),
        // Okta: plain OpenID Connect, org or custom authorization server issuer.
        ("okta: a custom authorization server", PresetCase { acr_values: Some("urn:okta:loa:2fa:any"), ..PresetCase::new(Okta, "https://corp.okta.com/oauth2/default") }, vec![("iss", Some(json!("https://corp.okta.com/oauth2/default"))), ("acr", Some(json!("urn:okta:loa:2fa:any")))], Ok(())),
        ("okta: the org server's token at a custom server", PresetCase::new(Okta, "https://corp.okta.com/oauth2/default"), vec![("iss", Some(json!("https://corp.okta.com")))], Err("wrong_issuer_or_audience")),
    ]
}

#[test]
fn id_tokens_by_preset() {
    let base = edit(&good_id_token(), &[("acr", None), ("amr", None)]);
    for (name, case, changes, want) in preset_rows() {
        let claims = edit(&base, &changes);
        let got = check_id_token(&claims, &case.rules(), &Expect { user: None, ..expect() });
        assert_eq!(got.as_ref().map(|_| ()).map_err(|f| f.as_str()), want, "{name}");
    }
}

#[test]
fn entra_templates() {
    for (issuer, want) in [
        ("https://login.microsoftonline.com/organizations/v2.0", Some("https://login.microsoftonline.com/{tenantid}/v2.0")),
        ("https://login.microsoftonline.com/common/v2.0", Some("https://login.microsoftonline.com/{tenantid}/v2.0")),
        ("https://login.microsoftonline.us/common", Some("https://login.microsoftonline.us/{tenantid}")),
        ("https://login.microsoftonline.com", None),
    ] {
        assert_eq!(entra_template(issuer).as_deref(), want, "{issuer}");
    }
}

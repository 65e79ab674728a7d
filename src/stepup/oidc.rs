//! tether as an OpenID Connect relying party: discovery, the IdP's key set (cached,
//! refreshed on an unknown `kid` at most every [`JWKS_REFRESH_MIN`]), the code exchange
//! over TLS (through a proxy's tunnel when [`super::egress`] says so), and verification of
//! ID tokens and back-channel logout tokens: the signature through [`crate::jwt`], then
//! [`check_id_token`] and [`check_logout_token`], pure functions of the claims, the
//! configuration (the IdP preset's habits included) and `now`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Error as ClientError;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::challenge::Kind;
use super::egress::{self, Egress, EnvProxyError};
use crate::config::{entra_multi_tenant, ClientAuth, ClientSecret, IdpEndpoints, Provider, StepUp};
use crate::jwt::{self, Claim, Expiry, KeySet, Rejected, Rules, Unusable};
use crate::net::tls::{self, TlsError};
use crate::session::redis::RedisStore;

/// Bound on any IdP response body (discovery, keys, tokens).
const MAX_BODY: usize = 1 << 20;
/// Bound on one IdP exchange, connect (and a proxy's tunnel) included.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// An unknown `kid` refetches the key set at most this often, so forged tokens cannot
/// make tether hammer the IdP.
pub const JWKS_REFRESH_MIN: Duration = Duration::from_secs(30);
/// Clock leeway for `exp`, `iat` and `auth_time`.
pub const LEEWAY_SECS: u64 = 5;
/// Signature algorithms accepted on ID and logout tokens (asymmetric only).
const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Logout token ids remembered against replay.
const MAX_SEEN_LOGOUTS: usize = 10_000;
/// A logout token is acted on promptly; one issued longer ago than this is refused (it
/// may be a replay whose `jti` has been forgotten).
const LOGOUT_MAX_AGE: u64 = 600;
/// What an ID token must carry (OpenID Connect Core §2).
const ID_TOKEN_CLAIMS: [Claim; 5] = [Claim::Exp, Claim::Iat, Claim::Iss, Claim::Aud, Claim::Sub];
/// What a logout token must carry (Back-Channel Logout §2.4); it has no `exp`.
const LOGOUT_TOKEN_CLAIMS: [Claim; 3] = [Claim::Iat, Claim::Iss, Claim::Aud];

#[derive(Debug, thiserror::Error)]
pub enum OidcSetupError {
    #[error("IdP TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot read client secret file {}: {source}", path.display())]
    Secret { path: std::path::PathBuf, source: std::io::Error },
    #[error("client private key {}: {source}", path.display())]
    PrivateKey { path: std::path::PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("proxy from the environment: {0}")]
    Proxy(#[from] EnvProxyError),
}

/// Why discovery or the key set could not be fetched: what `/readyz` and the log say.
/// URLs are the IdP's public endpoints; a proxy is named by host and port only.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no discovery: the endpoints are configured")]
    NotConfigured,
    #[error("{url} is not a URL")]
    BadUrl { url: String },
    #[error("GET {url}: {}", chain(.source))]
    Unreachable { url: String, source: ClientError },
    #[error("GET {url}: no complete answer within {}s", IDP_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("GET {url}: the body is unreadable or larger than {MAX_BODY} bytes")]
    Body { url: String },
    #[error("{url} is not a discovery document: {source}")]
    Document { url: String, source: serde_json::Error },
    #[error("the discovery document names issuer {found}, not {expected}")]
    OtherIssuer { expected: String, found: String },
    #[error("the discovery document names an endpoint that is not https://: {url}")]
    Insecure { url: String },
    #[error("{url} is not a JWK set")]
    KeySet { url: String },
}

/// An error and its sources on one line: hyper's own message ("client error (Connect)")
/// says little without them.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Whether the IdP's discovery document and keys are held, for `/readyz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Not fetched yet (the first attempt is under way).
    Pending,
    /// The document and the key set are held.
    Ready,
    /// The last attempt failed, for this reason; retried in the background.
    Failing(String),
}

crate::labels::labels! {
    impl Display elsewhere;
    /// Why a step-up or a logout token failed: a closed set, used as metric label and audit
    /// detail.
    #[derive(thiserror::Error)]
    pub enum Failure {
        #[error("the IdP could not be reached or answered unusably")]
        IdpUnavailable = "idp_unavailable",
        #[error("the IdP returned an error instead of a code")]
        IdpError = "idp_error",
        #[error("the code exchange was refused")]
        TokenExchange = "token_exchange_failed",
        #[error("the token's signature does not verify")]
        BadSignature = "bad_signature",
        #[error("the token is expired or not yet valid")]
        Expired = "expired",
        #[error("the token's issuer or audience is wrong")]
        WrongIssuerOrAudience = "wrong_issuer_or_audience",
        #[error("the token is malformed or misses a required claim")]
        Malformed = "malformed_token",
        #[error("the nonce does not match the challenge")]
        NonceMismatch = "nonce_mismatch",
        #[error("the authentication is older than the challenge")]
        StaleAuthTime = "stale_auth_time",
        #[error("the required authentication context (acr) is missing")]
        AcrMissing = "acr_missing",
        #[error("a required authentication method (amr) is missing")]
        AmrMissing = "amr_missing",
        #[error("a different user authenticated")]
        WrongUser = "wrong_user",
        #[error("the session's owner is unknown, so no step-up can unlock it")]
        UnknownOwner = "unknown_owner",
        #[error("the logout token was already used")]
        Replayed = "replayed",
    }
}

/// The discovery fields tether uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// What the ID token has to show.
pub struct Expect<'a> {
    /// An identification demands no fresh authentication, `acr` or `amr`: it only asks
    /// who holds the browser.
    pub kind: Kind,
    pub nonce: &'a str,
    /// When the challenge was issued (seconds).
    pub challenged_at: u64,
    /// The challenged session's user, when known.
    pub user: Option<&'a str>,
    /// Seconds; the token's `exp` and `auth_time` are judged against it.
    pub now: u64,
}

/// The claims tether acts on after a successful step-up.
#[derive(Debug, Clone)]
pub struct IdClaims {
    pub sub: String,
    pub user: Option<String>,
    pub auth_time: u64,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub sid: Option<String>,
}

/// A verified back-channel logout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    pub sub: Option<String>,
    pub sid: Option<String>,
}

struct KeyCache {
    keys: Arc<KeySet>,
    fetched: Option<Instant>,
}

enum Credentials {
    None,
    Secret(String),
    Key { key: EncodingKey, alg: Algorithm, kid: Option<String> },
}

pub struct IdpClient {
    http: Client<HttpsConnector<egress::Connector>, Full<Bytes>>,
    cfg: StepUp,
    credentials: Credentials,
    metadata: Mutex<Option<Arc<Metadata>>>,
    keys: Mutex<KeyCache>,
    seen_logouts: std::sync::Mutex<SeenLogouts>,
    readiness: std::sync::Mutex<Readiness>,
    /// Set once a reload has replaced this client: its warm-up then stops reporting.
    retired: std::sync::atomic::AtomicBool,
}

/// Why one request to the IdP got no usable answer.
enum SendError {
    Transport(ClientError),
    Timeout,
    Body,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct RawIdClaims {
    sub: String,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    auth_time: Option<u64>,
    #[serde(default)]
    acr: Option<String>,
    #[serde(default)]
    amr: Option<Vec<String>>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawLogoutClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    nonce: Option<serde_json::Value>,
    #[serde(default)]
    events: Option<HashMap<String, serde_json::Value>>,
    jti: Option<String>,
}

impl IdpClient {
    pub fn new(cfg: &StepUp) -> Result<IdpClient, OidcSetupError> {
        let tls = tls::client_config(cfg.ca_file.as_deref())?;
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(IDP_TIMEOUT));
        let egress = Egress::new(&cfg.proxy, |name| std::env::var(name).ok())?;
        if let Some(proxy) = egress.proxy() {
            tracing::info!(%proxy, "requests to the IdP go through a proxy's CONNECT tunnel");
        }
        let connector = egress::Connector::new(connector, egress, IDP_TIMEOUT);
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new()).timer(TokioTimer::new()).pool_timer(TokioTimer::new()).build(https);
        let credentials = match cfg.client_auth {
            ClientAuth::None => Credentials::None,
            ClientAuth::SecretBasic | ClientAuth::SecretPost => match &cfg.client_secret {
                Some(ClientSecret::Inline(s)) => Credentials::Secret(s.clone()),
                Some(ClientSecret::File(p)) => Credentials::Secret(
                    std::fs::read_to_string(p).map_err(|source| OidcSetupError::Secret { path: p.clone(), source })?.trim().to_owned(),
                ),
                None => Credentials::None,
            },
            ClientAuth::PrivateKeyJwt => {
                let path = cfg.client_private_key_file.clone().unwrap_or_default();
                let pem = std::fs::read(&path).map_err(|e| OidcSetupError::PrivateKey { path: path.clone(), source: Box::new(e) })?;
                let (key, alg) = match EncodingKey::from_ec_pem(&pem) {
                    Ok(k) => (k, Algorithm::ES256),
                    Err(_) => (
                        EncodingKey::from_rsa_pem(&pem).map_err(|e| OidcSetupError::PrivateKey { path: path.clone(), source: Box::new(e) })?,
                        Algorithm::RS256,
                    ),
                };
                Credentials::Key { key, alg, kid: cfg.client_key_id.clone() }
            }
        };
        let metadata = match &cfg.endpoints {
            IdpEndpoints::Explicit { issuer, authorization, token, jwks } => Some(Arc::new(Metadata {
                issuer: issuer.clone(),
                authorization_endpoint: authorization.to_string(),
                token_endpoint: token.to_string(),
                jwks_uri: jwks.to_string(),
            })),
            IdpEndpoints::Discovery { .. } => None,
        };
        let readiness = if metadata.is_some() { Readiness::Ready } else { Readiness::Pending };
        Ok(IdpClient {
            http,
            cfg: cfg.clone(),
            credentials,
            metadata: Mutex::new(metadata),
            keys: Mutex::new(KeyCache { keys: Arc::new(KeySet::empty()), fetched: None }),
            seen_logouts: std::sync::Mutex::new(SeenLogouts::default()),
            readiness: std::sync::Mutex::new(readiness),
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &StepUp {
        &self.cfg
    }

    /// Whether the endpoints come from a discovery document (fetched ahead of need by
    /// [`super::warm_up`]); configured endpoints need none.
    pub fn discovers(&self) -> bool {
        matches!(self.cfg.endpoints, IdpEndpoints::Discovery { .. })
    }

    /// Marks this client as replaced by a reload's: requests in flight may still use it,
    /// but what it finds no longer describes the IdP in force.
    pub fn retire(&self) {
        self.retired.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches the discovery document and the key set unless held, and records the
    /// outcome for `/readyz`.
    pub async fn warm_up(&self) -> Result<(), DiscoveryError> {
        let result = async {
            self.discover().await?;
            let mut cache = self.keys.lock().await;
            if cache.fetched.is_none() {
                cache.keys = self.fetch_keys().await?;
                cache.fetched = Some(Instant::now());
            }
            Ok::<(), DiscoveryError>(())
        }
        .await;
        *self.readiness.lock().unwrap_or_else(|p| p.into_inner()) = match &result {
            Ok(()) => Readiness::Ready,
            Err(e) => Readiness::Failing(e.to_string()),
        };
        result
    }

    /// The endpoints, from config or (once, then cached) from discovery.
    pub async fn metadata(&self) -> Result<Arc<Metadata>, Failure> {
        self.discover().await.map_err(|e| {
            tracing::warn!(error = %e, "IdP discovery failed");
            Failure::IdpUnavailable
        })
    }

    async fn discover(&self) -> Result<Arc<Metadata>, DiscoveryError> {
        let mut slot = self.metadata.lock().await;
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let IdpEndpoints::Discovery { issuer } = &self.cfg.endpoints else { return Err(DiscoveryError::NotConfigured) };
        let issuer_text = issuer.to_string();
        let issuer_text = issuer_text.trim_end_matches('/');
        let url = format!("{issuer_text}/.well-known/openid-configuration");
        let body = self.fetch(&url).await?;
        let m: Metadata = serde_json::from_slice(&body).map_err(|source| DiscoveryError::Document { url, source })?;
        // OpenID Connect Discovery §4.3: the document must name the issuer asked for.
        // Entra ID's multi-tenant issuers name a template instead, whose `{tenantid}` each
        // token fills in (checked against `step_up.tenants` then).
        let templated = self.cfg.provider == Provider::Entra && entra_multi_tenant(issuer) && Some(m.issuer.trim_end_matches('/')) == entra_template(issuer_text).as_deref();
        if m.issuer.trim_end_matches('/') != issuer_text && !templated {
            return Err(DiscoveryError::OtherIssuer { expected: issuer_text.to_owned(), found: m.issuer });
        }
        // Codes and tokens never cross in clear, whatever the document says.
        let insecure = [&m.authorization_endpoint, &m.token_endpoint, &m.jwks_uri].into_iter().find(|u| !u.starts_with("https://"));
        if let Some(url) = insecure.filter(|_| !self.cfg.allow_insecure_http) {
            return Err(DiscoveryError::Insecure { url: url.clone() });
        }
        let m = Arc::new(m);
        *slot = Some(m.clone());
        Ok(m)
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), SendError> {
        let work = async {
            let resp = self.http.request(req).await.map_err(SendError::Transport)?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|_| SendError::Body)?.to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(IDP_TIMEOUT, work).await.map_err(|_| SendError::Timeout)?
    }

    async fn fetch(&self, url: &str) -> Result<Bytes, DiscoveryError> {
        let uri: Uri = url.parse().map_err(|_| DiscoveryError::BadUrl { url: url.to_owned() })?;
        let req = Request::get(uri).header("accept", "application/json").body(Full::new(Bytes::new())).map_err(|_| DiscoveryError::BadUrl { url: url.to_owned() })?;
        match self.send(req).await {
            Ok((s, body)) if s.is_success() => Ok(body),
            Ok((status, _)) => Err(DiscoveryError::Status { url: url.to_owned(), status }),
            Err(SendError::Transport(source)) => Err(DiscoveryError::Unreachable { url: url.to_owned(), source }),
            Err(SendError::Timeout) => Err(DiscoveryError::Timeout { url: url.to_owned() }),
            Err(SendError::Body) => Err(DiscoveryError::Body { url: url.to_owned() }),
        }
    }

    async fn fetch_keys(&self) -> Result<Arc<KeySet>, DiscoveryError> {
        let url = self.discover().await?.jwks_uri.clone();
        let body = self.fetch(&url).await?;
        Ok(Arc::new(KeySet::parse(&body, Unusable::Skip).map_err(|_| DiscoveryError::KeySet { url })?))
    }

    /// Verification keys; refetched when `kid` is unknown (rate-limited) or none are held.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, Failure> {
        let mut cache = self.keys.lock().await;
        let stale = cache.fetched.is_none_or(|t| t.elapsed() >= JWKS_REFRESH_MIN);
        if !cache.keys.knows(kid) && stale {
            cache.keys = self.fetch_keys().await.map_err(|e| {
                tracing::warn!(error = %e, "IdP key set unavailable");
                Failure::IdpUnavailable
            })?;
            cache.fetched = Some(Instant::now());
        }
        Ok(cache.keys.clone())
    }

    /// Exchanges the code for tokens and returns the ID token.
    pub async fn exchange(&self, code: &str, verifier: &str, redirect_uri: &str) -> Result<String, Failure> {
        let meta = self.metadata().await?;
        let mut form = String::new();
        let mut add = |k: &str, v: &str| {
            if !form.is_empty() {
                form.push('&');
            }
            form.push_str(k);
            form.push('=');
            super::challenge::encode(v, &mut form);
        };
        add("grant_type", "authorization_code");
        add("code", code);
        add("redirect_uri", redirect_uri);
        add("code_verifier", verifier);
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(meta.token_endpoint.parse::<Uri>().map_err(|_| Failure::IdpUnavailable)?)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        match (&self.credentials, self.cfg.client_auth) {
            (Credentials::Secret(secret), ClientAuth::SecretBasic) => {
                // RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding.
                let (mut id, mut sec) = (String::new(), String::new());
                super::challenge::encode(&self.cfg.client_id, &mut id);
                super::challenge::encode(secret, &mut sec);
                builder = builder.header("authorization", format!("Basic {}", STANDARD.encode(format!("{id}:{sec}"))));
            }
            (Credentials::Secret(secret), _) => {
                add("client_id", &self.cfg.client_id);
                add("client_secret", secret);
            }
            (Credentials::Key { key, alg, kid }, _) => {
                let assertion = self.client_assertion(key, *alg, kid.clone(), &meta.token_endpoint)?;
                add("client_id", &self.cfg.client_id);
                add("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
                add("client_assertion", &assertion);
            }
            (Credentials::None, _) => add("client_id", &self.cfg.client_id),
        }
        let req = builder.body(Full::new(Bytes::from(form))).map_err(|_| Failure::TokenExchange)?;
        let (status, body) = self.send(req).await.map_err(|e| {
            match e {
                SendError::Transport(e) => tracing::warn!(error = %chain(&e), "code exchange: the IdP could not be reached"),
                SendError::Timeout => tracing::warn!("code exchange: the IdP did not answer in time"),
                SendError::Body => tracing::warn!("code exchange: the IdP's answer is unreadable"),
            }
            Failure::IdpUnavailable
        })?;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            // The IdP's trouble, not the user's: it does not count as a failed step-up.
            tracing::warn!(%status, "code exchange: the IdP is failing");
            return Err(Failure::IdpUnavailable);
        }
        if !status.is_success() {
            let error = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["error"].as_str().map(str::to_owned));
            tracing::warn!(%status, error = error.as_deref().unwrap_or("-"), "code exchange refused");
            return Err(Failure::TokenExchange);
        }
        let tokens: TokenResponse = serde_json::from_slice(&body).map_err(|_| Failure::TokenExchange)?;
        tokens.id_token.ok_or(Failure::TokenExchange)
    }

    fn client_assertion(&self, key: &EncodingKey, alg: Algorithm, kid: Option<String>, audience: &str) -> Result<String, Failure> {
        let now = crate::session::now() as u64;
        let mut jti = [0u8; 16];
        let _ = getrandom::fill(&mut jti);
        let claims = serde_json::json!({
            "iss": self.cfg.client_id, "sub": self.cfg.client_id, "aud": audience,
            "iat": now, "exp": now + 60, "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
        });
        let mut header = Header::new(alg);
        header.kid = kid;
        jsonwebtoken::encode(&header, &claims, key).map_err(|_| Failure::TokenExchange)
    }

    /// The claims of a token signed by one of the IdP's keys; nothing in them checked yet.
    async fn signed_claims(&self, token: &str) -> Result<(Value, Arc<Metadata>), Failure> {
        // Header first: a malformed token or a refused algorithm costs no key fetch.
        let header = jwt::header(token, &ALGORITHMS)?;
        let meta = self.metadata().await?;
        let keys = self.keys_for(header.kid.as_deref()).await?;
        Ok((jwt::verify_signature(token, &keys, &ALGORITHMS)?, meta))
    }

    /// Verifies an ID token from a step-up against the challenge it answers.
    pub async fn verify_id_token(&self, token: &str, expect: &Expect<'_>) -> Result<IdClaims, Failure> {
        let (claims, meta) = self.signed_claims(token).await?;
        let rules = IdTokenRules {
            issuer: &meta.issuer,
            client_id: &self.cfg.client_id,
            acr_values: self.cfg.acr_values.as_deref(),
            required_amr: &self.cfg.required_amr,
            user_claim: &self.cfg.user_claim,
            preset: Preset::of(&self.cfg),
        };
        check_id_token(&claims, &rules, expect)
    }

    /// Verifies an OpenID Connect back-channel logout token; each one is accepted once:
    /// across every replica when they share a store (the IdP may deliver a replay to
    /// another one), else at this replica. While the shared store cannot answer, this
    /// replica's memory still refuses what it has seen.
    pub async fn verify_logout_token(&self, token: &str, now: u64, shared: Option<&RedisStore>) -> Result<Logout, Failure> {
        let (claims, meta) = self.signed_claims(token).await?;
        let (logout, jti) = check_logout_token(&claims, &meta.issuer, &self.cfg.client_id, now)?;
        if let Some(store) = shared {
            match store.remember_logout(&jti).await {
                Ok(true) => return Ok(logout),
                Ok(false) => return Err(Failure::Replayed),
                Err(_) => {}
            }
        }
        self.seen_logouts.lock().unwrap_or_else(|p| p.into_inner()).admit(jti, now)?;
        Ok(logout)
    }
}

impl From<Rejected> for Failure {
    fn from(r: Rejected) -> Failure {
        match r {
            Rejected::BadSignature => Failure::BadSignature,
            Rejected::Expired => Failure::Expired,
            Rejected::WrongIssuerOrAudience => Failure::WrongIssuerOrAudience,
            Rejected::Malformed => Failure::Malformed,
        }
    }
}

/// The issuer as discovery or config spells it, and without a trailing slash: IdPs differ
/// on which one their tokens carry.
fn issuers(issuer: &str) -> [&str; 2] {
    [issuer.trim_end_matches('/'), issuer]
}

/// Where Entra ID's multi-tenant issuer template puts the signed-in user's tenant.
const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// The issuer template an Entra ID multi-tenant issuer's discovery document names:
/// `…/organizations/v2.0` → `…/{tenantid}/v2.0`.
fn entra_template(issuer: &str) -> Option<String> {
    let (origin, path) = issuer.split_once("://").and_then(|(scheme, rest)| rest.split_once('/').map(|(host, path)| (format!("{scheme}://{host}"), path)))?;
    let (_tenant, rest) = path.split_once('/').unwrap_or((path, ""));
    Some(if rest.is_empty() { format!("{origin}/{TENANT_PLACEHOLDER}") } else { format!("{origin}/{TENANT_PLACEHOLDER}/{rest}") })
}

/// What an IdP preset changes in the ID token checks; [`Preset::GENERIC`] changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Preset<'a> {
    pub provider: Provider,
    /// Entra ID: authentication contexts the token's `acrs` must all name.
    pub acrs: &'a [String],
    /// Entra ID: the tenants whose tokens are accepted (required with a templated issuer).
    pub tenants: &'a [String],
    /// Keycloak: ACR names and their levels of authentication.
    pub acr_levels: &'a [(String, u32)],
}

impl Preset<'_> {
    pub const GENERIC: Preset<'static> = Preset { provider: Provider::Generic, acrs: &[], tenants: &[], acr_levels: &[] };

    pub fn of(cfg: &StepUp) -> Preset<'_> {
        Preset { provider: cfg.provider, acrs: &cfg.acrs, tenants: &cfg.tenants, acr_levels: &cfg.acr_levels }
    }

    /// The `iss` values a token may carry, given the issuer discovery or config names and
    /// the token's `tid`.
    fn issuers(&self, issuer: &str, tid: Option<&str>) -> Result<Vec<String>, Failure> {
        let listed = |tid: &str| self.tenants.iter().any(|t| t.eq_ignore_ascii_case(tid));
        if self.provider == Provider::Entra && !self.tenants.is_empty() && !tid.is_some_and(listed) {
            return Err(Failure::WrongIssuerOrAudience);
        }
        if issuer.contains(TENANT_PLACEHOLDER) {
            // Only Entra ID's discovery may name a template, and only with tenants listed
            // (config refuses a multi-tenant issuer without them): never any tenant at all.
            let tid = tid.filter(|_| self.provider == Provider::Entra && !self.tenants.is_empty()).ok_or(Failure::WrongIssuerOrAudience)?;
            let filled = issuer.replace(TENANT_PLACEHOLDER, tid);
            return Ok(vec![filled.trim_end_matches('/').to_owned(), filled]);
        }
        let mut out: Vec<String> = issuers(issuer).iter().map(|s| (*s).to_owned()).collect();
        if self.provider == Provider::Google {
            // Google's tokens carry either spelling: `https://accounts.google.com`, or
            // `accounts.google.com` for older integrations.
            let bare = issuer.trim_end_matches('/');
            out.push(bare.strip_prefix("https://").map_or_else(|| format!("https://{bare}"), str::to_owned));
        }
        Ok(out)
    }

    /// Whether the token's `acr` answers the requested `acr_values`: one of them, or for
    /// Keycloak a level at least the lowest requested one's (Keycloak reports the level
    /// reached, by its mapped name or as a number).
    fn acr_satisfies(&self, acr: &str, wanted: &str) -> bool {
        if wanted.split_whitespace().any(|w| w == acr) {
            return true;
        }
        if self.provider != Provider::Keycloak {
            return false;
        }
        let level = |name: &str| self.acr_levels.iter().find(|(n, _)| n == name).map(|(_, l)| *l).or_else(|| name.parse::<u32>().ok());
        let needed = wanted.split_whitespace().filter_map(level).min();
        matches!((level(acr), needed), (Some(have), Some(need)) if have >= need)
    }

    /// Entra ID: whether the token's `acrs` names every configured authentication context.
    fn acrs_satisfied(&self, claims: &HashMap<String, Value>) -> bool {
        if self.provider != Provider::Entra || self.acrs.is_empty() {
            return true;
        }
        let have: Vec<&str> = claims.get("acrs").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        self.acrs.iter().all(|w| have.contains(&w.as_str()))
    }
}

/// What this relying party demands of every ID token, whatever the challenge.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenRules<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// Space-separated; when set, the token's `acr` must be one of them.
    pub acr_values: Option<&'a str>,
    pub required_amr: &'a [String],
    /// The claim naming the user, compared with the challenged session's.
    pub user_claim: &'a str,
    /// The IdP's habits: issuer spellings and templates, `acrs`, ACR levels.
    pub preset: Preset<'a>,
}

/// The checks of an ID token whose signature verified: registered claims (`iss`, `aud`,
/// `exp`, `iat`, `sub`; `iss` as the preset spells it, `tid` for Entra ID), `azp`, the
/// challenge's `nonce`, an `auth_time` no older than the challenge, `acr` (or Keycloak's
/// level), Entra ID's `acrs`, `amr`, and the same user as the challenged session.
pub fn check_id_token(claims: &Value, rules: &IdTokenRules<'_>, expect: &Expect<'_>) -> Result<IdClaims, Failure> {
    let accepted = rules.preset.issuers(rules.issuer, claims.get("tid").and_then(Value::as_str))?;
    let issuers: Vec<&str> = accepted.iter().map(String::as_str).collect();
    let registered = Rules { issuers: &issuers, audience: rules.client_id, required: &ID_TOKEN_CLAIMS, expiry: Expiry::Checked, leeway: LEEWAY_SECS };
    jwt::check_registered(claims, &registered, expect.now)?;
    let c = RawIdClaims::deserialize(claims).map_err(|_| Failure::Malformed)?;
    if c.azp.as_deref().is_some_and(|azp| azp != rules.client_id) {
        return Err(Failure::WrongIssuerOrAudience);
    }
    if c.nonce.as_deref() != Some(expect.nonce) {
        return Err(Failure::NonceMismatch);
    }
    let amr = c.amr.unwrap_or_default();
    let auth_time = match expect.kind {
        Kind::StepUp => {
            // max_age=0 obliges the IdP to report auth_time; it must not predate the
            // challenge.
            let auth_time = c.auth_time.ok_or(Failure::StaleAuthTime)?;
            if auth_time + LEEWAY_SECS < expect.challenged_at || auth_time > expect.now + LEEWAY_SECS {
                return Err(Failure::StaleAuthTime);
            }
            if let Some(wanted) = rules.acr_values {
                if !c.acr.as_deref().is_some_and(|acr| rules.preset.acr_satisfies(acr, wanted)) {
                    return Err(Failure::AcrMissing);
                }
            }
            if !rules.preset.acrs_satisfied(&c.rest) {
                return Err(Failure::AcrMissing);
            }
            if !rules.required_amr.iter().all(|r| amr.contains(r)) {
                return Err(Failure::AmrMissing);
            }
            auth_time
        }
        // Whenever the IdP's session began: nothing is unlocked by an identification.
        Kind::Identify => c.auth_time.unwrap_or(0),
    };
    // A token that does not name its user cannot say whose session this is.
    let user = match rules.user_claim {
        "sub" => Some(c.sub.clone()),
        name => Some(c.rest.get(name).and_then(|v| v.as_str()).filter(|u| !u.is_empty()).ok_or(Failure::Malformed)?.to_owned()),
    };
    if let Some(expected) = expect.user {
        if user.as_deref() != Some(expected) {
            return Err(Failure::WrongUser);
        }
    }
    Ok(IdClaims { sub: c.sub, user, auth_time, acr: c.acr, amr, sid: c.sid })
}

/// The checks of a back-channel logout token whose signature verified (Back-Channel
/// Logout §2.6): registered claims, the logout event, no `nonce`, a `sub` or `sid`, a
/// recent `iat`, a `jti`. Returns the logout and its `jti`, which [`SeenLogouts`] admits
/// once.
pub fn check_logout_token(claims: &Value, issuer: &str, client_id: &str, now: u64) -> Result<(Logout, String), Failure> {
    let issuers = issuers(issuer);
    let registered = Rules { issuers: &issuers, audience: client_id, required: &LOGOUT_TOKEN_CLAIMS, expiry: Expiry::Unchecked, leeway: LEEWAY_SECS };
    let iat = jwt::check_registered(claims, &registered, now)?.iat.ok_or(Failure::Malformed)?;
    let c = RawLogoutClaims::deserialize(claims).map_err(|_| Failure::Malformed)?;
    let is_logout = c.events.as_ref().is_some_and(|e| e.contains_key(BACKCHANNEL_EVENT));
    if !is_logout || c.nonce.is_some() || (c.sub.is_none() && c.sid.is_none()) {
        return Err(Failure::Malformed);
    }
    if iat + LOGOUT_MAX_AGE < now || iat > now + LEEWAY_SECS {
        return Err(Failure::Expired);
    }
    let jti = c.jti.ok_or(Failure::Malformed)?;
    Ok((Logout { sub: c.sub, sid: c.sid }, jti))
}

/// Logout token ids seen lately, so each token is acted on once.
#[derive(Debug, Default)]
pub struct SeenLogouts {
    seen: HashMap<String, u64>,
}

impl SeenLogouts {
    /// Admits `jti` the first time; a second sighting is a replay. Ids older than
    /// [`LOGOUT_MAX_AGE`] are forgotten once [`MAX_SEEN_LOGOUTS`] are held: their tokens
    /// are refused as too old anyway.
    pub fn admit(&mut self, jti: String, now: u64) -> Result<(), Failure> {
        if self.seen.len() >= MAX_SEEN_LOGOUTS {
            self.seen.retain(|_, at| *at + LOGOUT_MAX_AGE >= now);
        }
        if self.seen.insert(jti, now).is_some() {
            return Err(Failure::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! The development identity provider: a small, real OpenID Connect provider
//! served by `gateway --dev` under `/dev-idp`, so the main job runs with no
//! external service. The gateway's relying-party code talks to it over HTTP
//! exactly as it would to Entra ID, Google or Keycloak: discovery, an
//! authorization endpoint (a page to pick a demo person), a token endpoint
//! with PKCE (S256) and client authentication, and a key set. ID tokens are
//! signed with Ed25519.
//!
//! It only exists in development mode: [`DevIdp::new`] refuses to build one
//! unless told the gateway runs with `--dev`. Never use it with real pupils.
//!
//! [`Faults`] lets tests make it misbehave (wrong issuer, audience, nonce,
//! signature, `iat`; no `kid` with two keys; rotated keys) to prove the
//! relying party refuses each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::web::html::{escape, page};

/// Where the provider is mounted on the gateway.
pub const MOUNT: &str = "/dev-idp";

/// A demo person of the development school.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoPerson {
    /// `sub`.
    pub subject: String,
    /// Display name.
    pub name: String,
    /// What the picker says about them.
    pub description: String,
    /// `groups` claim.
    pub groups: Vec<String>,
    /// `classes` claim.
    pub classes: Vec<String>,
    /// `amr` claim.
    pub amr: Vec<String>,
    /// `email` claim, sent with `email_verified: true` (the demo school
    /// vouches for its people's addresses).
    pub email: Option<String>,
}

fn person(
    subject: &str,
    name: &str,
    description: &str,
    groups: &[&str],
    classes: &[&str],
    mfa: bool,
) -> DemoPerson {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    DemoPerson {
        subject: subject.to_owned(),
        name: name.to_owned(),
        description: description.to_owned(),
        groups: strings(groups),
        classes: strings(classes),
        amr: if mfa {
            vec!["pwd".to_owned(), "mfa".to_owned()]
        } else {
            vec!["pwd".to_owned()]
        },
        email: None,
    }
}

/// The demo school: a teacher, three pupils of 7A, a pupil of 7B, SLT, DSL,
/// an admin and a visitor (group names match the default claim mapping).
pub fn demo_people() -> Vec<DemoPerson> {
    vec![
        person(
            "teacher",
            "Ms Rivera",
            "Teacher of 7A",
            &["teachers"],
            &[],
            true,
        ),
        person(
            "pupil-a",
            "Ali (7A)",
            "Pupil in 7A",
            &["pupils"],
            &["7A"],
            false,
        ),
        person(
            "pupil-b",
            "Bea (7A)",
            "Pupil in 7A",
            &["pupils"],
            &["7A"],
            false,
        ),
        person(
            "pupil-c",
            "Cal (7A)",
            "Pupil in 7A",
            &["pupils"],
            &["7A"],
            false,
        ),
        person(
            "pupil-7b",
            "Dee (7B)",
            "Pupil in 7B",
            &["pupils"],
            &["7B"],
            false,
        ),
        person("slt", "Mr Okafor", "Senior leadership", &["slt"], &[], true),
        person(
            "dsl",
            "Mrs Chen",
            "Designated Safeguarding Lead",
            &["dsl"],
            &[],
            true,
        ),
        person(
            "admin",
            "Sam Admin",
            "Administrator",
            &["admins"],
            &[],
            true,
        ),
        DemoPerson {
            email: Some("hale@inspectorate.example".to_owned()),
            ..person(
                "visitor",
                "Inspector Hale",
                "Visitor (needs a grant; e-mail hale@inspectorate.example)",
                &["visitors"],
                &[],
                true,
            )
        },
    ]
}

/// Ways to make the provider misbehave, for tests of the relying party.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Put this in the ID token's `iss` instead of the real issuer.
    pub token_issuer: Option<String>,
    /// State this issuer in the discovery document.
    pub metadata_issuer: Option<String>,
    /// Put this in `aud` instead of the client id.
    pub audience: Option<String>,
    /// Put this in `nonce` instead of the request's.
    pub nonce: Option<String>,
    /// Corrupt the signature.
    pub bad_signature: bool,
    /// Leave `kid` out of the header (with two keys published).
    pub omit_kid: bool,
    /// Shift `iat` (not `exp`) by this many seconds.
    pub iat_offset_secs: i64,
}

/// How often each endpoint was called (tests check "no further calls").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// Discovery document.
    pub discovery: usize,
    /// Key set.
    pub jwks: usize,
    /// Authorization endpoint (page and choice).
    pub authorize: usize,
    /// Token endpoint.
    pub token: usize,
}

/// Why the provider could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevIdpError {
    /// Not in development mode.
    #[error("the development identity provider only runs with --dev")]
    NotDevMode,
    /// A key could not be encoded.
    #[error("development identity provider key: {0}")]
    Key(String),
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    public: [u8; 32],
}

struct Grant {
    person: DemoPerson,
    redirect_uri: String,
    nonce: String,
    challenge: String,
    expires: u64,
}

struct Inner {
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    people: Vec<DemoPerson>,
    keys: Mutex<Vec<Key>>,
    codes: Mutex<HashMap<String, Grant>>,
    faults: Mutex<Faults>,
    discovery: AtomicUsize,
    jwks: AtomicUsize,
    authorize: AtomicUsize,
    token: AtomicUsize,
}

/// The development provider. Cheap to clone.
#[derive(Clone)]
pub struct DevIdp {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.inner.issuer)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one map or vector operation; a poisoned lock
    // leaves nothing half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn new_key() -> Result<Key, DevIdpError> {
    let signing = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| DevIdpError::Key(e.to_string()))?;
    Ok(Key {
        kid: format!("dev-idp-{:012x}", rand::random::<u64>() >> 16),
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        public: signing.verifying_key().to_bytes(),
    })
}

impl DevIdp {
    /// A provider at `issuer` (`<public_url>/dev-idp`) for one client.
    /// `dev_mode` must be true: it refuses to exist otherwise. `clock`
    /// gives Unix seconds.
    pub fn new(
        dev_mode: bool,
        issuer: String,
        client_id: String,
        client_secret: String,
        redirect_uri: String,
        clock: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<Self, DevIdpError> {
        if !dev_mode {
            return Err(DevIdpError::NotDevMode);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                issuer,
                client_id,
                client_secret,
                redirect_uri,
                clock: Box::new(clock),
                people: demo_people(),
                keys: Mutex::new(vec![new_key()?]),
                codes: Mutex::new(HashMap::new()),
                faults: Mutex::new(Faults::default()),
                discovery: AtomicUsize::new(0),
                jwks: AtomicUsize::new(0),
                authorize: AtomicUsize::new(0),
                token: AtomicUsize::new(0),
            }),
        })
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The demo people.
    pub fn people(&self) -> &[DemoPerson] {
        &self.inner.people
    }

    /// Sets the faults (tests).
    pub fn set_faults(&self, faults: Faults) {
        let two_keys = faults.omit_kid;
        *lock(&self.inner.faults) = faults;
        let mut keys = lock(&self.inner.keys);
        if two_keys
            && keys.len() < 2
            && let Ok(k) = new_key()
        {
            keys.push(k);
        }
    }

    /// Replaces the signing key with a new one (a provider key rotation).
    pub fn rotate_keys(&self) -> Result<(), DevIdpError> {
        *lock(&self.inner.keys) = vec![new_key()?];
        Ok(())
    }

    /// Endpoint call counts so far.
    pub fn calls(&self) -> Calls {
        let i = &self.inner;
        Calls {
            discovery: i.discovery.load(Ordering::Relaxed),
            jwks: i.jwks.load(Ordering::Relaxed),
            authorize: i.authorize.load(Ordering::Relaxed),
            token: i.token.load(Ordering::Relaxed),
        }
    }

    /// The provider's routes, to nest at [`MOUNT`].
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize_page).post(authorize_choice))
            .route("/token", axum::routing::post(token))
            .with_state(self.clone())
    }

    fn sign_id_token(&self, grant: &Grant) -> Result<String, DevIdpError> {
        let faults = lock(&self.inner.faults).clone();
        let now = i64::try_from((self.inner.clock)()).unwrap_or(i64::MAX);
        let iat = now + faults.iat_offset_secs;
        let mut claims = json!({
            "iss": faults.token_issuer.clone().unwrap_or_else(|| self.inner.issuer.clone()),
            "sub": grant.person.subject,
            "aud": faults.audience.clone().unwrap_or_else(|| self.inner.client_id.clone()),
            "iat": iat,
            "exp": now + 300,
            "auth_time": now,
            "nonce": faults.nonce.clone().unwrap_or_else(|| grant.nonce.clone()),
            "name": grant.person.name,
            "groups": grant.person.groups,
            "classes": grant.person.classes,
            "amr": grant.person.amr,
        });
        if let Some(email) = &grant.person.email {
            claims["email"] = json!(email);
            claims["email_verified"] = json!(true);
        }
        let keys = lock(&self.inner.keys);
        let key = keys
            .first()
            .ok_or_else(|| DevIdpError::Key("no key".into()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = (!faults.omit_kid).then(|| key.kid.clone());
        let mut token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| DevIdpError::Key(e.to_string()))?;
        if faults.bad_signature {
            // Flip bits in the signature's first byte.
            if let Some(dot) = token.rfind('.') {
                let sig = &token[dot + 1..];
                if let Ok(mut bytes) = URL_SAFE_NO_PAD.decode(sig) {
                    if let Some(b) = bytes.first_mut() {
                        *b ^= 0xff;
                    }
                    token = format!("{}.{}", &token[..dot], URL_SAFE_NO_PAD.encode(bytes));
                }
            }
        }
        Ok(token)
    }
}

async fn discovery(State(idp): State<DevIdp>) -> Json<serde_json::Value> {
    idp.inner.discovery.fetch_add(1, Ordering::Relaxed);
    let i = &idp.inner;
    let issuer = lock(&i.faults)
        .metadata_issuer
        .clone()
        .unwrap_or_else(|| i.issuer.clone());
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{}/authorize", i.issuer),
        "token_endpoint": format!("{}/token", i.issuer),
        "jwks_uri": format!("{}/jwks", i.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "scopes_supported": ["openid", "profile", "email"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name", "groups", "classes", "amr", "email", "email_verified"],
    }))
}

async fn jwks(State(idp): State<DevIdp>) -> Json<serde_json::Value> {
    idp.inner.jwks.fetch_add(1, Ordering::Relaxed);
    let keys: Vec<_> = lock(&idp.inner.keys)
        .iter()
        .map(|k| {
            json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                   "kid": k.kid, "x": URL_SAFE_NO_PAD.encode(k.public)})
        })
        .collect();
    Json(json!({ "keys": keys }))
}

/// The authorization request's parameters (also echoed through the picker form).
#[derive(Clone, Debug, Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    person: Option<String>,
}

/// Checks an authorization request; `Err` is an error page (never a
/// redirect to an unchecked URI).
fn check_request(idp: &DevIdp, p: &AuthorizeParams) -> Result<(), &'static str> {
    let i = &idp.inner;
    if p.client_id.as_deref() != Some(i.client_id.as_str()) {
        return Err("unknown client_id");
    }
    if p.redirect_uri.as_deref() != Some(i.redirect_uri.as_str()) {
        return Err("redirect_uri is not the registered one");
    }
    if p.response_type.as_deref() != Some("code") {
        return Err("only response_type=code is supported");
    }
    if !p
        .scope
        .as_deref()
        .is_some_and(|s| s.split(' ').any(|s| s == "openid"))
    {
        return Err("scope must include openid");
    }
    if p.code_challenge_method.as_deref() != Some("S256")
        || p.code_challenge.as_deref().is_none_or(str::is_empty)
    {
        return Err("PKCE with S256 is required");
    }
    if p.nonce.as_deref().is_none_or(str::is_empty) || p.state.as_deref().is_none_or(str::is_empty)
    {
        return Err("state and nonce are required");
    }
    Ok(())
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(page(
            "Sign-in error",
            "dev-idp-error",
            &format!("<h1>Sign-in error</h1><p>{}</p>", escape(message)),
        )),
    )
        .into_response()
}

async fn authorize_page(State(idp): State<DevIdp>, Query(p): Query<AuthorizeParams>) -> Response {
    idp.inner.authorize.fetch_add(1, Ordering::Relaxed);
    if let Err(m) = check_request(&idp, &p) {
        return bad_request(m);
    }
    let hidden = |name: &str, value: &Option<String>| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value.as_deref().unwrap_or(""))
        )
    };
    let fields = [
        hidden("response_type", &p.response_type),
        hidden("client_id", &p.client_id),
        hidden("redirect_uri", &p.redirect_uri),
        hidden("scope", &p.scope),
        hidden("state", &p.state),
        hidden("nonce", &p.nonce),
        hidden("code_challenge", &p.code_challenge),
        hidden("code_challenge_method", &p.code_challenge_method),
    ]
    .concat();
    let buttons: String = idp
        .inner
        .people
        .iter()
        .map(|person| {
            format!(
                "<li><button type=\"submit\" name=\"person\" value=\"{}\" data-person=\"{}\">{}</button> <span class=\"muted\">{}</span></li>",
                escape(&person.subject),
                escape(&person.subject),
                escape(&person.name),
                escape(&person.description),
            )
        })
        .collect();
    Html(page(
        "Development sign-in",
        "dev-idp",
        &format!(
            "<h1>Development sign-in</h1>\
             <p class=\"warning\">This is the built-in development identity provider of <code>gateway --dev</code>. \
             It signs anyone in as any demo person. Never use it with real pupils.</p>\
             <p>Sign in as:</p>\
             <form method=\"post\" action=\"{MOUNT}/authorize\">{fields}<ul class=\"people\">{buttons}</ul></form>"
        ),
    ))
    .into_response()
}

async fn authorize_choice(State(idp): State<DevIdp>, Form(p): Form<AuthorizeParams>) -> Response {
    idp.inner.authorize.fetch_add(1, Ordering::Relaxed);
    if let Err(m) = check_request(&idp, &p) {
        return bad_request(m);
    }
    let Some(person) = idp
        .inner
        .people
        .iter()
        .find(|x| Some(x.subject.as_str()) == p.person.as_deref())
        .cloned()
    else {
        return bad_request("pick one of the demo people");
    };
    let code = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let now = (idp.inner.clock)();
    let grant = Grant {
        person,
        redirect_uri: idp.inner.redirect_uri.clone(),
        nonce: p.nonce.clone().unwrap_or_default(),
        challenge: p.code_challenge.clone().unwrap_or_default(),
        expires: now + 60,
    };
    {
        let mut codes = lock(&idp.inner.codes);
        codes.retain(|_, g| g.expires > now);
        codes.insert(code.clone(), grant);
    }
    let mut target = match reqwest::Url::parse(&idp.inner.redirect_uri) {
        Ok(u) => u,
        Err(_) => return bad_request("the registered redirect_uri is invalid"),
    };
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", p.state.as_deref().unwrap_or(""))
        .append_pair("iss", &idp.inner.issuer);
    Redirect::to(target.as_str()).into_response()
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Client credentials from `Authorization: Basic` or the form.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = STANDARD.decode(basic.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let unescape = |s: &str| url_decode(s).unwrap_or_else(|| s.to_owned());
        return Some((unescape(id), unescape(secret)));
    }
    Some((form.client_id.clone()?, form.client_secret.clone()?))
}

/// `application/x-www-form-urlencoded` decoding of one component (RFC 6749 §2.3.1).
fn url_decode(s: &str) -> Option<String> {
    let pairs = format!("v={s}");
    reqwest::Url::parse(&format!("http://x/?{pairs}"))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == "v")
        .map(|(_, v)| v.into_owned())
}

async fn token(
    State(idp): State<DevIdp>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    idp.inner.token.fetch_add(1, Ordering::Relaxed);
    let i = &idp.inner;
    let Some((id, secret)) = client_credentials(&headers, &form) else {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication required",
        );
    };
    let id_ok = id.as_bytes().ct_eq(i.client_id.as_bytes());
    let secret_ok = secret.as_bytes().ct_eq(i.client_secret.as_bytes());
    if !bool::from(id_ok & secret_ok) {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "bad client credentials",
        );
    }
    if form.grant_type.as_deref() != Some("authorization_code") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "authorization_code only",
        );
    }
    let now = (i.clock)();
    // A code is used once: taken out of the map whatever happens next.
    let grant = form
        .code
        .as_deref()
        .and_then(|c| lock(&i.codes).remove(c))
        .filter(|g| g.expires > now);
    let Some(grant) = grant else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown, used or expired code",
        );
    };
    if form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri mismatch",
        );
    }
    let verifier = form.code_verifier.unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if verifier.len() < 43 || !bool::from(challenge.as_bytes().ct_eq(grant.challenge.as_bytes())) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    match idp.sign_id_token(&grant) {
        Ok(id_token) => Json(json!({
            "access_token": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }))
        .into_response(),
        Err(e) => token_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.to_string(),
        ),
    }
}

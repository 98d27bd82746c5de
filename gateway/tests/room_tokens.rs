//! Room and service tokens: the happy path, key rotation, JWKS, and every
//! forgery in docs/security.md (fault and abuse scenarios) refused with the
//! right typed error.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chaperone_gateway::auth::{
    AccountClaims, JoinTokens as _, KeySet, ROOM_TOKEN_TYPE, TokenError, TokenIssuer, Verifier,
};
use chaperone_protocol::{LessonId, UserRef};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const LESSON: LessonId = LessonId::from_bytes([9; 16]);

fn issuer() -> TokenIssuer {
    TokenIssuer {
        issuer: "https://gateway.school.test".into(),
        room_audience: "https://gateway.school.test".into(),
        service_audience: "chaperone-recorder".into(),
        keys: KeySet::from_seed("k1", [1; 32]).unwrap(),
    }
}

fn pupil_account() -> AccountClaims {
    AccountClaims {
        pupil_classes: vec!["7A".to_owned()],
        ..AccountClaims::default()
    }
}

fn pupil() -> UserRef {
    UserRef::new("https://idp.school.test", "pupil-1").unwrap()
}

fn room_token(t: &TokenIssuer) -> String {
    t.issue_room(
        NOW,
        120,
        "jti-1".into(),
        LESSON,
        pupil(),
        "Pat".into(),
        pupil_account(),
    )
    .unwrap()
}

/// Valid room-token claims as JSON, to tamper with.
fn claims(t: &TokenIssuer) -> serde_json::Value {
    json!({
        "iss": t.issuer, "aud": t.room_audience, "sub": pupil().to_string(),
        "exp": NOW + 120, "nbf": NOW, "iat": NOW, "jti": "jti-x", "typ": ROOM_TOKEN_TYPE,
        "lesson": LESSON, "user": pupil(), "name": "Pat",
        "account": {"staff": false, "pupil_classes": ["7A"], "safeguarding_observer": false, "visitor_until": null},
    })
}

/// Signs `claims` with `header` using `key` (EdDSA unless the header says otherwise).
fn sign(header: &Header, claims: &serde_json::Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap()
}

fn eddsa_header(kid: &str) -> Header {
    let mut h = Header::new(Algorithm::EdDSA);
    h.typ = Some(ROOM_TOKEN_TYPE.into());
    h.kid = Some(kid.into());
    h
}

/// Our own key, for tokens that are validly signed but wrong in content.
fn our_key() -> EncodingKey {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = ed25519_dalek::SigningKey::from_bytes(&[1; 32])
        .to_pkcs8_der()
        .unwrap();
    EncodingKey::from_ed_der(der.as_bytes())
}

fn attacker_key() -> EncodingKey {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = ed25519_dalek::SigningKey::from_bytes(&[66; 32])
        .to_pkcs8_der()
        .unwrap();
    EncodingKey::from_ed_der(der.as_bytes())
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[test]
fn issued_room_token_verifies() {
    let t = issuer();
    let c = t.verify_room(NOW + 1, &room_token(&t)).unwrap();
    assert_eq!(
        (c.lesson, c.user, c.name.as_str(), c.account),
        (LESSON, pupil(), "Pat", pupil_account())
    );
    assert_eq!(c.exp - c.iat, 120);
}

#[test]
fn lifetimes_over_five_minutes_are_not_issued_or_accepted() {
    let t = issuer();
    assert_eq!(
        t.issue_room(
            NOW,
            301,
            "j".into(),
            LESSON,
            pupil(),
            "Pat".into(),
            pupil_account()
        ),
        Err(TokenError::LifetimeTooLong)
    );
    let mut c = claims(&t);
    c["exp"] = json!(NOW + 3600);
    let token = sign(&eddsa_header("k1"), &c, &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::LifetimeTooLong));
}

#[test]
fn alg_none_is_refused() {
    let t = issuer();
    let header = json!({"alg": "none", "typ": ROOM_TOKEN_TYPE, "kid": "k1"});
    let token = format!("{}.{}.", b64(&header), b64(&claims(&t)));
    assert_eq!(
        t.verify_room(NOW, &token),
        Err(TokenError::UnsupportedAlgorithm)
    );
}

#[test]
fn hs256_signed_with_our_public_key_is_refused() {
    let t = issuer();
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(ROOM_TOKEN_TYPE.into());
    header.kid = Some("k1".into());
    let token = sign(
        &header,
        &claims(&t),
        &EncodingKey::from_secret(&t.keys.active_public_key()),
    );
    assert_eq!(
        t.verify_room(NOW, &token),
        Err(TokenError::UnsupportedAlgorithm)
    );
}

#[test]
fn unknown_or_missing_kid_is_refused() {
    let t = issuer();
    let token = sign(&eddsa_header("attacker"), &claims(&t), &attacker_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::UnknownKey));
    let mut header = eddsa_header("k1");
    header.kid = None;
    let token = sign(&header, &claims(&t), &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::UnknownKey));
}

#[test]
fn our_kid_with_another_key_is_a_bad_signature() {
    let t = issuer();
    let token = sign(&eddsa_header("k1"), &claims(&t), &attacker_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::BadSignature));
}

#[test]
fn jku_x5u_and_jwk_headers_are_refused() {
    let t = issuer();
    let mut header = eddsa_header("k1");
    header.jku = Some("https://attacker.test/jwks.json".into());
    let token = sign(&header, &claims(&t), &attacker_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::ForbiddenHeader));
    let mut header = eddsa_header("k1");
    header.x5u = Some("https://attacker.test/cert.pem".into());
    let token = sign(&header, &claims(&t), &attacker_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::ForbiddenHeader));
    // An embedded JWK, hand-built so no library helps the attacker.
    let header = json!({"alg": "EdDSA", "typ": ROOM_TOKEN_TYPE, "kid": "k1",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([7u8; 32])}});
    let token = format!(
        "{}.{}.{}",
        b64(&header),
        b64(&claims(&t)),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::ForbiddenHeader));
}

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let t = issuer();
    let token = room_token(&t);
    assert_eq!(
        t.verify_room(NOW + 120 + 31, &token),
        Err(TokenError::Expired)
    );
    let mut c = claims(&t);
    c["nbf"] = json!(NOW + 200);
    c["exp"] = json!(NOW + 250);
    let token = sign(&eddsa_header("k1"), &c, &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::NotYetValid));
    let mut c = claims(&t);
    c["iat"] = json!(NOW + 100);
    let token = sign(&eddsa_header("k1"), &c, &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::IssuedInFuture));
}

#[test]
fn nbf_as_a_string_is_refused() {
    let t = issuer();
    let mut c = claims(&t);
    c["nbf"] = json!(NOW.to_string());
    let token = sign(&eddsa_header("k1"), &c, &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::Malformed));
}

#[test]
fn wrong_audience_and_issuer_are_refused() {
    let t = issuer();
    let mut c = claims(&t);
    c["aud"] = json!("https://another-gateway.test");
    let token = sign(&eddsa_header("k1"), &c, &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::WrongAudience));
    let mut c = claims(&t);
    c["iss"] = json!("https://idp.school.test");
    let token = sign(&eddsa_header("k1"), &c, &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::WrongIssuer));
}

#[test]
fn an_id_token_is_not_a_room_token() {
    let t = issuer();
    // Shaped like an OIDC ID token, even signed with our key.
    let mut header = eddsa_header("k1");
    header.typ = Some("JWT".into());
    let id_token = json!({"iss": "https://idp.school.test", "aud": "chaperone", "sub": "pupil-1",
        "exp": NOW + 60, "iat": NOW, "nonce": "n"});
    let token = sign(&header, &id_token, &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::WrongType));
    // Right header type, ID-token claims: unknown fields, missing ours.
    let token = sign(&eddsa_header("k1"), &id_token, &our_key());
    assert_eq!(t.verify_room(NOW, &token), Err(TokenError::Malformed));
}

#[test]
fn service_and_room_tokens_are_not_interchangeable() {
    let t = issuer();
    let service = t.issue_service(NOW, 60, "s1".into(), LESSON).unwrap();
    assert_eq!(t.verify_room(NOW, &service), Err(TokenError::WrongType));
    assert_eq!(
        t.verify_service(NOW, &room_token(&t)),
        Err(TokenError::WrongType)
    );
    assert_eq!(t.verify_service(NOW, &service).unwrap().lesson, LESSON);
}

#[test]
fn tampered_payload_fails_the_signature() {
    let t = issuer();
    let token = room_token(&t);
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims(&t);
    c["account"]["staff"] = json!(true);
    let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
    assert_eq!(t.verify_room(NOW, &forged), Err(TokenError::BadSignature));
}

#[test]
fn garbage_is_malformed_and_never_panics() {
    let t = issuer();
    for junk in [
        "",
        "a.b",
        "a.b.c",
        "....",
        &"x".repeat(10_000),
        "eyJ9.eyJ9.AA",
    ] {
        assert!(t.verify_room(NOW, junk).is_err(), "{junk:?}");
    }
}

#[test]
fn rotation_keeps_old_tokens_valid_until_the_old_key_is_retired() {
    let mut t = issuer();
    let old = room_token(&t);
    t.keys.rotate("k2", [2; 32]).unwrap();
    let new = room_token(&t);
    assert!(
        t.verify_room(NOW, &old).is_ok(),
        "old key still accepted during the rollover"
    );
    assert!(t.verify_room(NOW, &new).is_ok());
    assert_eq!(t.keys.jwks()["keys"].as_array().unwrap().len(), 2);
    t.keys.retire("k1");
    assert_eq!(t.verify_room(NOW, &old), Err(TokenError::UnknownKey));
    assert!(t.verify_room(NOW, &new).is_ok());
}

#[test]
fn a_jwks_built_verifier_verifies_service_tokens_with_public_keys_only() {
    let t = issuer();
    let jwks = t.keys.jwks();
    let verifier = Verifier::from_jwks(&jwks).unwrap();
    let service = t.issue_service(NOW, 60, "s1".into(), LESSON).unwrap();
    let claims = verifier
        .verify_service(NOW, &service, &t.issuer, &t.service_audience)
        .unwrap();
    assert_eq!(claims.lesson, LESSON);
    assert_eq!(
        verifier.verify_service(NOW, &service, &t.issuer, "someone-else"),
        Err(TokenError::WrongAudience)
    );
    assert!(Verifier::from_jwks(&json!({"keys": []})).is_err());
    assert!(
        Verifier::from_jwks(
            &json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "AAAA"}]})
        )
        .is_err()
    );
}

#[tokio::test]
async fn a_join_token_is_single_use() {
    let t = issuer();
    let store = chaperone_gateway::store::LocalStore::new();
    let token = room_token(&t);
    assert!(t.verify_room_for_join(NOW, &token, &store).await.is_ok());
    assert_eq!(
        t.verify_room_for_join(NOW + 1, &token, &store).await,
        Err(TokenError::Replayed)
    );
    // Another token for the same person is fine.
    let other = t
        .issue_room(
            NOW,
            120,
            "jti-2".into(),
            LESSON,
            pupil(),
            "Pat".into(),
            pupil_account(),
        )
        .unwrap();
    assert!(
        t.verify_room_for_join(NOW + 2, &other, &store)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_unreachable_store_refuses_the_join() {
    let t = issuer();
    // Nothing listens on port 1: the store cannot confirm single use.
    let mut config = chaperone_gateway::store::RedisStoreConfig::new("redis://127.0.0.1:1/");
    config.timeout = std::time::Duration::from_millis(200);
    let store = chaperone_gateway::store::RedisStore::open(config).unwrap();
    assert!(matches!(
        t.verify_room_for_join(NOW, &room_token(&t), &store).await,
        Err(TokenError::Unavailable(_))
    ));
}

#[test]
fn a_previous_key_from_pem_still_verifies_during_a_rollover() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    // The old node signs with "k-old"; the new key set signs with "k-new"
    // and accepts "k-old" from its PEM file.
    let old_seed = [9u8; 32];
    let old = TokenIssuer {
        keys: KeySet::from_seed("k-old", old_seed).unwrap(),
        ..issuer()
    };
    let token = room_token(&old);
    let mut keys = KeySet::from_seed("k-new", [8u8; 32]).unwrap();
    let pem = ed25519_dalek::SigningKey::from_bytes(&old_seed)
        .to_pkcs8_pem(Default::default())
        .unwrap();
    let new = TokenIssuer {
        keys: keys.clone(),
        ..issuer()
    };
    assert_eq!(new.verify_room(NOW, &token), Err(TokenError::UnknownKey));
    keys.accept_also("k-old", &pem).unwrap();
    let new = TokenIssuer { keys, ..issuer() };
    assert!(new.verify_room(NOW, &token).is_ok());
    assert_eq!(new.keys.jwks()["keys"].as_array().unwrap().len(), 2);
    // New tokens are signed with the new key only.
    let fresh = room_token(&new);
    assert_eq!(old.verify_room(NOW, &fresh), Err(TokenError::UnknownKey));
}

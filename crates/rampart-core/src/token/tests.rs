#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Round trips, keys, JWKS and tokens made by PyJWT.
//!
//! The keys in `testdata/` and the `PY_*` constants below come from
//! `testdata/make_vectors.py`, run once with Python 3.11, PyJWT 2.15.1 and
//! cryptography 50.0.2 (`python3 -m venv /tmp/venv-jwt && /tmp/venv-jwt/bin/pip
//! install pyjwt cryptography`, then `cd testdata && /tmp/venv-jwt/bin/python
//! make_vectors.py`). In short, for each key:
//!
//! ```python
//! CLAIMS = {"iss": "https://py.example", "sub": "user-42", "aud": "rampart-api",
//!           "iat": 1700000000, "nbf": 1700000000, "exp": 4102444800, "jti": "py-1",
//!           "roles": ["admin"], "scope": "read write", "tier": "gold", "ver": 3}
//! jwt.encode(CLAIMS, b"pyjwt-interop-secret-0123456789abcdef", algorithm="HS256")
//! jwt.encode(CLAIMS, ed25519_key, algorithm="EdDSA", headers={"kid": "py-ed25519"})
//! jwt.get_algorithm_by_name("EdDSA").to_jwk(ed25519_key.public_key())
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::*;

pub(super) const NOW: u64 = 1_750_000_000;
pub(super) const ISS: &str = "https://auth.example";
pub(super) const AUD: &str = "rampart-api";
pub(super) const HS_SECRET: &[u8] = b"a test secret that is at least 32 bytes long";

pub(super) const ED25519_PEM: &str = include_str!("testdata/ed25519.pem");
pub(super) const ED25519_PUB_PEM: &str = include_str!("testdata/ed25519.pub.pem");
pub(super) const P256_PEM: &str = include_str!("testdata/p256.pem");
pub(super) const P256_PUB_PEM: &str = include_str!("testdata/p256.pub.pem");
pub(super) const RSA2048_PEM: &str = include_str!("testdata/rsa2048.pem");
pub(super) const RSA2048_PUB_PEM: &str = include_str!("testdata/rsa2048.pub.pem");
pub(super) const RSA1024_PUB_PEM: &str = include_str!("testdata/rsa1024.pub.pem");

const PY_ISS: &str = "https://py.example";
const PY_HS_SECRET: &[u8] = b"pyjwt-interop-secret-0123456789abcdef";
const PY_HS256: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL3B5LmV4YW1wbGUiLCJzdWIiOiJ1c2VyLTQyIiwiYXVkIjoicmFtcGFydC1hcGkiLCJpYXQiOjE3MDAwMDAwMDAsIm5iZiI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJqdGkiOiJweS0xIiwicm9sZXMiOlsiYWRtaW4iXSwic2NvcGUiOiJyZWFkIHdyaXRlIiwidGllciI6ImdvbGQiLCJ2ZXIiOjN9.XdOftV29JQ3g7UgWcP42q9MbIMVtyLspZ3PxBvMgWFQ";
/// The same claims with `aud: ["other", "rampart-api"]` and `scp: ["read", "admin:all"]` instead of `scope`.
const PY_HS256_AUD_ARRAY_SCP: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL3B5LmV4YW1wbGUiLCJzdWIiOiJ1c2VyLTQyIiwiYXVkIjpbIm90aGVyIiwicmFtcGFydC1hcGkiXSwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMCwianRpIjoicHktMSIsInJvbGVzIjpbImFkbWluIl0sInRpZXIiOiJnb2xkIiwidmVyIjozLCJzY3AiOlsicmVhZCIsImFkbWluOmFsbCJdfQ.Nih1wTGFZvDpbUzrUstmqxJaDYvfdNPAOhGfI8M0_Gg";
const PY_EDDSA: &str = "eyJhbGciOiJFZERTQSIsImtpZCI6InB5LWVkMjU1MTkiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL3B5LmV4YW1wbGUiLCJzdWIiOiJ1c2VyLTQyIiwiYXVkIjoicmFtcGFydC1hcGkiLCJpYXQiOjE3MDAwMDAwMDAsIm5iZiI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJqdGkiOiJweS0xIiwicm9sZXMiOlsiYWRtaW4iXSwic2NvcGUiOiJyZWFkIHdyaXRlIiwidGllciI6ImdvbGQiLCJ2ZXIiOjN9.6p_zyeVosGaTF3UZV5lKqPLUxWgi5HzlLrxKC3N17x3pk4g9XjUEMprufyg-2BADUeXYaInZx0yywk6opOD0CA";
const PY_ES256: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6InB5LXAyNTYiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL3B5LmV4YW1wbGUiLCJzdWIiOiJ1c2VyLTQyIiwiYXVkIjoicmFtcGFydC1hcGkiLCJpYXQiOjE3MDAwMDAwMDAsIm5iZiI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJqdGkiOiJweS0xIiwicm9sZXMiOlsiYWRtaW4iXSwic2NvcGUiOiJyZWFkIHdyaXRlIiwidGllciI6ImdvbGQiLCJ2ZXIiOjN9.RcKSYKEPpN90vEN3dSAJQ5iYhem1QTiPcRM15-KnzKFGpMUOCTg3pBjscv61C0vAwgvFQkrpAepD6yjv_WxZKg";
const PY_RS256: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InB5LXJzYTIwNDgiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL3B5LmV4YW1wbGUiLCJzdWIiOiJ1c2VyLTQyIiwiYXVkIjoicmFtcGFydC1hcGkiLCJpYXQiOjE3MDAwMDAwMDAsIm5iZiI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJqdGkiOiJweS0xIiwicm9sZXMiOlsiYWRtaW4iXSwic2NvcGUiOiJyZWFkIHdyaXRlIiwidGllciI6ImdvbGQiLCJ2ZXIiOjN9.C_xcdCCqF1ZAUKfZAMcImA4RHuvTzRLz7vc24FrmpOmbZprM_jXlBV9q4z3RND8QBzdvZSt4VhdAx-b2fLV5tC20P_5quc3HlY42M8KMFqrH6yWGVzrc3XOeojIyAPS54ICLlDT-KwDusLrmb-k44W62ezoNO3NTnAIrKRr6p0ubOuSzzXQckbJB9EuRTbmD1aiZhUhtBw7elFYgjruW6RUoD2nSyRH02cCRB_J9DOhFdYO37sLQK2XEw10g_MKXByDc4J40twSHHZuz6_NhBTuWGMd51zWNzc2b_R3eDho16_oeLKklEw764hf03ZidfswB2ihJIuFaW0B1B-Gbwg";
const PY_JWK_ED25519: &str = r#"{"x": "BYU8GwawvhFKKPvgqrtdftgj9tbhMpg5XrWXo9NqYr0"}"#;
const PY_JWK_P256: &str =
    r#"{"x": "eF2A2LaUwUf_T-G0vtjngLJqGtzBvi8B68cyC0TUcsM", "y": "YQJ8FDK-ZFTIBSnEp28gktbWx5y56ml7WW01mab6Pkk"}"#;
const PY_JWK_RSA2048: &str = r#"{"e": "AQAB", "n": "sZGK9ILatytyx4QK4MxpfixIezoAd8RtoollFgEbSAPjgKprL5yBRVwiY8CQkqHyX-xv8sBSWsx0GQBaJz6XbS0rVZFbQjURmcUwqak-i-JgS2pPqOZXOou0H9XQTw5K97ITcTMbHoc4t1uYom1aM7ZhwOy9uDGLjBTa5xN4tVahhN49LhnLaZKUxjIsnFiPYHCeetSkRkXiP8BM6YzBGn67FR2D7T3aABfT4n2HF6QJnzL3H-IQxzLesv49WPy5wtMT-V_IUWvxdAk1FjccqCkPoV8r_gkVTyXKhhINCq2Fi6jolFYTxvWNKmri3Ti1LMSwCzzYqTD171FAkAZqUQ"}"#;

pub(super) const ALL_ALGS: [Alg; 4] = [Alg::EdDSA, Alg::ES256, Alg::RS256, Alg::HS256];

/// A signing key of `alg` from the fixed test keys, with the kid `alg`'s name.
pub(super) fn signing_key(alg: Alg) -> SigningKey {
    let kid = alg.as_str();
    match alg {
        Alg::EdDSA => SigningKey::from_pkcs8_pem(kid, alg, ED25519_PEM).unwrap(),
        Alg::ES256 => SigningKey::from_pkcs8_pem(kid, alg, P256_PEM).unwrap(),
        Alg::RS256 => SigningKey::from_pkcs8_pem(kid, alg, RSA2048_PEM).unwrap(),
        Alg::HS256 => SigningKey::hs256(kid, HS_SECRET).unwrap(),
    }
}

pub(super) fn claims() -> Claims {
    let mut claims = Claims::new(ISS, "user-1", AUD, NOW, 900);
    claims.jti = Some("jti-1".into());
    claims.roles = vec!["admin".into(), "billing".into()];
    claims.scopes = vec!["read".into(), "write:orders".into()];
    claims.tier = Some("gold".into());
    claims.ver = 7;
    claims.auth_time = Some(NOW - 5);
    claims
}

pub(super) fn verifier(keys: &[&SigningKey]) -> Verifier {
    let keys = KeySet::from_keys(keys.iter().map(|k| k.verifying_key().clone())).unwrap();
    Verifier::new(keys, [ISS], [AUD])
}

pub(super) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The decoded JSON of one token segment.
pub(super) fn segment_json(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

#[test]
fn round_trip_for_each_alg() {
    let claims = claims();
    for alg in ALL_ALGS {
        let key = signing_key(alg);
        let token = issue(&key, &claims).unwrap();
        assert_eq!(verifier(&[&key]).verify(&token, NOW), Ok(claims.clone()), "{alg}");
        // Another key of the same algorithm must not verify it.
        let other = match alg {
            Alg::HS256 => SigningKey::hs256(alg.as_str(), &[7; 32]).unwrap(),
            Alg::RS256 => continue,
            _ => SigningKey::generate(alg.as_str(), alg).unwrap().key,
        };
        assert_eq!(verifier(&[&other]).verify(&token, NOW), Err(TokenError::BadSignature), "{alg}");
    }
}

#[test]
fn generated_keys_round_trip_and_reload() {
    for alg in [Alg::EdDSA, Alg::ES256] {
        let generated = SigningKey::generate("gen", alg).unwrap();
        assert!(generated.pkcs8_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(!format!("{generated:?}").contains("BEGIN"), "Debug must not show the private key");
        let reloaded = SigningKey::from_pkcs8_pem("gen", alg, &generated.pkcs8_pem).unwrap();
        assert_eq!(reloaded.verifying_key().to_jwk(), generated.key.verifying_key().to_jwk());
        let token = issue(&reloaded, &claims()).unwrap();
        assert!(verifier(&[&generated.key]).verify(&token, NOW).is_ok());
    }
    assert_eq!(SigningKey::generate("r", Alg::RS256).unwrap_err(), KeyError::GenerationUnsupported(Alg::RS256));
    assert_eq!(SigningKey::generate("h", Alg::HS256).unwrap_err(), KeyError::GenerationUnsupported(Alg::HS256));
}

#[test]
fn issued_token_shape() {
    let key = signing_key(Alg::EdDSA);
    let token = issue(&key, &claims()).unwrap();
    assert_eq!(segment_json(&token, 0), json!({"typ": "JWT", "alg": "EdDSA", "kid": "EdDSA"}));
    assert_eq!(
        segment_json(&token, 1),
        json!({
            "iss": ISS, "sub": "user-1", "aud": AUD, "exp": NOW + 900, "iat": NOW, "nbf": NOW,
            "jti": "jti-1", "roles": ["admin", "billing"], "scope": "read write:orders", "tier": "gold", "ver": 7,
            "auth_time": NOW - 5,
        })
    );
    // Optional claims are left out when empty; several audiences become an array.
    let mut bare = Claims::new(ISS, "svc", AUD, NOW, 60);
    bare.aud.push("second".into());
    let token = issue(&key, &bare).unwrap();
    assert_eq!(
        segment_json(&token, 1),
        json!({"iss": ISS, "sub": "svc", "aud": [AUD, "second"], "exp": NOW + 60, "iat": NOW, "nbf": NOW, "ver": 0})
    );
}

#[test]
fn issue_refuses_bad_claims() {
    let key = signing_key(Alg::HS256);
    let check = |edit: fn(&mut Claims)| {
        let mut claims = claims();
        edit(&mut claims);
        let result = issue(&key, &claims);
        assert!(matches!(result, Err(TokenError::InvalidClaims(_))), "expected InvalidClaims, got {result:?}");
    };
    check(|c| c.iss.clear());
    check(|c| c.sub.clear());
    check(|c| c.aud.clear());
    check(|c| c.aud = vec![String::new()]);
    check(|c| c.exp = NOW);
    check(|c| c.scopes.push("two words".into()));
    check(|c| c.scopes.push(String::new()));
    check(|c| c.scopes.push("quote\"".into()));
    check(|c| c.roles = vec!["r".repeat(100); 100]);
}

#[test]
fn rotation_two_keys_both_verify_and_unknown_kid_is_refused() {
    let old = signing_key(Alg::EdDSA);
    let new = SigningKey::generate("2025-02", Alg::ES256).unwrap().key;
    let mut verifier = verifier(&[&old, &new]);
    let old_token = issue(&old, &claims()).unwrap();
    let new_token = issue(&new, &claims()).unwrap();
    assert!(verifier.verify(&old_token, NOW).is_ok());
    assert!(verifier.verify(&new_token, NOW).is_ok());

    let stranger = SigningKey::generate("2024-12", Alg::EdDSA).unwrap().key;
    assert_eq!(verifier.verify(&issue(&stranger, &claims()).unwrap(), NOW), Err(TokenError::UnknownKid));

    // With two keys a token must say which; PyJWT's HS256 vector names none.
    let hs = SigningKey::hs256("hs", PY_HS_SECRET).unwrap();
    let two = KeySet::from_keys([hs.verifying_key().clone(), old.verifying_key().clone()]).unwrap();
    assert_eq!(Verifier::new(two, [PY_ISS], [AUD]).verify(PY_HS256, NOW), Err(TokenError::MissingKid));

    // Once the rotation is over the old key goes, and so do its tokens.
    assert!(verifier.keys.remove("EdDSA").is_some());
    assert_eq!(verifier.verify(&old_token, NOW), Err(TokenError::UnknownKid));
    assert!(verifier.verify(&new_token, NOW).is_ok());
}

#[test]
fn empty_key_set_verifies_nothing() {
    let key = signing_key(Alg::EdDSA);
    let token = issue(&key, &claims()).unwrap();
    let verifier = Verifier::new(KeySet::new(), [ISS], [AUD]);
    assert_eq!(verifier.verify(&token, NOW), Err(TokenError::UnknownKid));
    assert_eq!(verifier.verify(PY_HS256, NOW), Err(TokenError::UnknownKid));
}

#[test]
fn duplicate_kid_is_refused() {
    let a = signing_key(Alg::EdDSA);
    let b = SigningKey::generate("EdDSA", Alg::EdDSA).unwrap().key;
    let err = KeySet::from_keys([a.verifying_key().clone(), b.verifying_key().clone()]).unwrap_err();
    assert_eq!(err, KeyError::DuplicateKid("EdDSA".into()));
}

#[test]
fn key_sets_are_the_same_only_with_the_same_ids_and_material() {
    let a = SigningKey::generate("a", Alg::EdDSA).unwrap().key;
    let b = SigningKey::generate("b", Alg::ES256).unwrap().key;
    let a_again = SigningKey::generate("a", Alg::EdDSA).unwrap().key;
    let set = |keys: &[&SigningKey]| KeySet::from_keys(keys.iter().map(|k| k.verifying_key().clone())).unwrap();
    assert!(set(&[&a, &b]).same_keys(&set(&[&b, &a])), "order does not matter");
    assert!(!set(&[&a, &b]).same_keys(&set(&[&a])), "a key removed");
    assert!(!set(&[&a]).same_keys(&set(&[&a, &b])), "a key added");
    assert!(!set(&[&a]).same_keys(&set(&[&a_again])), "same kid, other key");
    let hs = VerifyingKey::hs256("h", &[7; 32]).unwrap();
    let with_secret = KeySet::from_keys([hs.clone()]).unwrap();
    assert!(!with_secret.same_keys(&KeySet::from_keys([hs]).unwrap()), "secrets are not compared");
}

fn py_verifier(key: VerifyingKey) -> Verifier {
    Verifier::new(KeySet::from_keys([key]).unwrap(), [PY_ISS], [AUD])
}

fn py_claims() -> Claims {
    Claims {
        iss: PY_ISS.into(),
        sub: "user-42".into(),
        aud: vec![AUD.into()],
        exp: 4_102_444_800,
        iat: Some(1_700_000_000),
        nbf: Some(1_700_000_000),
        jti: Some("py-1".into()),
        roles: vec!["admin".into()],
        scopes: vec!["read".into(), "write".into()],
        tier: Some("gold".into()),
        ver: 3,
        auth_time: None,
        idp: None,
    }
}

#[test]
fn pyjwt_hs256_tokens_verify() {
    let verifier = py_verifier(VerifyingKey::hs256("py-hs", PY_HS_SECRET).unwrap());
    assert_eq!(verifier.verify(PY_HS256, NOW), Ok(py_claims()));
    let claims = verifier.verify(PY_HS256_AUD_ARRAY_SCP, NOW).unwrap();
    assert_eq!(claims.aud, ["other", AUD]);
    assert_eq!(claims.scopes, ["read", "admin:all"]);
    // Only with the right secret.
    let wrong = py_verifier(VerifyingKey::hs256("py-hs", &[b'x'; 37]).unwrap());
    assert_eq!(wrong.verify(PY_HS256, NOW), Err(TokenError::BadSignature));
}

#[test]
fn pyjwt_asymmetric_tokens_verify() {
    for (token, kid, alg, public_pem) in [
        (PY_EDDSA, "py-ed25519", Alg::EdDSA, ED25519_PUB_PEM),
        (PY_ES256, "py-p256", Alg::ES256, P256_PUB_PEM),
        (PY_RS256, "py-rsa2048", Alg::RS256, RSA2048_PUB_PEM),
    ] {
        let key = VerifyingKey::from_public_pem(kid, alg, public_pem).unwrap();
        assert_eq!(py_verifier(key).verify(token, NOW), Ok(py_claims()), "{alg}");
        // The kid must match: the same key under another name is not found.
        let renamed = VerifyingKey::from_public_pem("renamed", alg, public_pem).unwrap();
        assert_eq!(py_verifier(renamed).verify(token, NOW), Err(TokenError::UnknownKid), "{alg}");
    }
}

#[test]
fn our_jwks_matches_pyjwt() {
    let keys = KeySet::from_keys(
        [Alg::EdDSA, Alg::ES256, Alg::RS256, Alg::HS256].map(|alg| signing_key(alg).verifying_key().clone()),
    )
    .unwrap();
    let jwks = keys.jwks();
    let listed = jwks["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "HS256 secrets are never published: {jwks}");
    for (jwk, expected, kty, crv) in [
        (&listed[0], PY_JWK_ED25519, "OKP", Some("Ed25519")),
        (&listed[1], PY_JWK_P256, "EC", Some("P-256")),
        (&listed[2], PY_JWK_RSA2048, "RSA", None),
    ] {
        let expected: Value = serde_json::from_str(expected).unwrap();
        for (name, value) in expected.as_object().unwrap() {
            assert_eq!(&jwk[name], value, "{name} of {jwk}");
        }
        assert_eq!(jwk["kty"], kty);
        assert_eq!(jwk["crv"].as_str(), crv);
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], jwk["alg"], "test keys are named after their alg");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private).is_none(), "{private} leaked in {jwk}");
        }
    }
    assert!(!jwks.to_string().contains(&b64(HS_SECRET)));
}

#[test]
fn jwks_round_trips_into_a_key_set() {
    let signers: Vec<SigningKey> = [Alg::EdDSA, Alg::ES256, Alg::RS256].map(signing_key).into();
    let from_jwks =
        KeySet::from_jwks(&KeySet::from_keys(signers.iter().map(|k| k.verifying_key().clone())).unwrap().jwks())
            .unwrap();
    assert_eq!(from_jwks.len(), 3);
    let verifier = Verifier::new(from_jwks, [ISS], [AUD]);
    for key in &signers {
        assert_eq!(verifier.verify(&issue(key, &claims()).unwrap(), NOW), Ok(claims()), "{}", key.alg());
    }
}

#[test]
fn public_pem_loading() {
    for (alg, pem) in [(Alg::EdDSA, ED25519_PUB_PEM), (Alg::ES256, P256_PUB_PEM), (Alg::RS256, RSA2048_PUB_PEM)] {
        let key = VerifyingKey::from_public_pem("k", alg, pem).unwrap();
        assert_eq!(key.alg(), alg);
        assert_eq!(
            key.to_jwk(),
            signing_key(alg).verifying_key().to_jwk().map(|mut j| {
                j["kid"] = json!("k");
                j
            })
        );
        // A key of one type is never accepted for another algorithm.
        for other in ALL_ALGS.into_iter().filter(|&a| a != alg) {
            assert_eq!(VerifyingKey::from_public_pem("k", other, pem).unwrap_err(), KeyError::WrongKeyType);
        }
        // Private keys do not go where public ones belong, nor the reverse.
        assert!(matches!(
            SigningKey::from_pkcs8_pem("k", alg, pem).unwrap_err(),
            KeyError::PemLabel { expected: "PRIVATE KEY" }
        ));
    }
    assert!(matches!(
        VerifyingKey::from_public_pem("k", Alg::EdDSA, ED25519_PEM).unwrap_err(),
        KeyError::PemLabel { .. }
    ));
    assert_eq!(
        VerifyingKey::from_public_pem("k", Alg::RS256, RSA1024_PUB_PEM).unwrap_err(),
        KeyError::RsaModulusSize { bits: 1024 }
    );
    let two_blocks = format!("{ED25519_PUB_PEM}{ED25519_PUB_PEM}");
    assert_eq!(VerifyingKey::from_public_pem("k", Alg::EdDSA, &two_blocks).unwrap_err(), KeyError::Pem);
    assert_eq!(VerifyingKey::from_public_pem("k", Alg::EdDSA, "not pem").unwrap_err(), KeyError::Pem);
    assert_eq!(VerifyingKey::from_public_pem("", Alg::EdDSA, ED25519_PUB_PEM).unwrap_err(), KeyError::BadKid);
}

#[test]
fn rsa_pkcs1_public_pem_is_accepted() {
    // PKCS#1 is the SubjectPublicKeyInfo's BIT STRING contents: rebuild it.
    let spki = pem::parse(RSA2048_PUB_PEM).unwrap();
    let der = spki.contents();
    let pkcs1 = &der[24..]; // 30 82 01 22 | 30 0d <rsaEncryption, NULL> | 03 82 01 0f 00
    assert_eq!(pkcs1[0], 0x30);
    let pem = pem::encode(&pem::Pem::new("RSA PUBLIC KEY", pkcs1));
    let key = VerifyingKey::from_public_pem("py-rsa2048", Alg::RS256, &pem).unwrap();
    assert!(py_verifier(key).verify(PY_RS256, NOW).is_ok());
}

#[test]
fn private_pem_of_the_wrong_type_is_refused() {
    for (alg, pem) in [(Alg::EdDSA, ED25519_PEM), (Alg::ES256, P256_PEM), (Alg::RS256, RSA2048_PEM)] {
        for other in ALL_ALGS.into_iter().filter(|&a| a != alg) {
            assert_eq!(
                SigningKey::from_pkcs8_pem("k", other, pem).unwrap_err(),
                KeyError::WrongKeyType,
                "{alg} as {other}"
            );
        }
    }
    assert_eq!(SigningKey::from_pkcs8_der("k", Alg::EdDSA, b"\x30\x00").unwrap_err(), KeyError::InvalidKey);
}

#[test]
fn hs256_secret_must_be_long_enough() {
    assert_eq!(SigningKey::hs256("k", &[1; 31]).unwrap_err(), KeyError::SecretTooShort { len: 31 });
    assert_eq!(VerifyingKey::hs256("k", b"").unwrap_err(), KeyError::SecretTooShort { len: 0 });
    assert!(SigningKey::hs256("k", &[1; 32]).is_ok());
    // Debug output names the key but never shows the secret.
    let debug = format!("{:?} {:?}", signing_key(Alg::HS256), signing_key(Alg::HS256).verifying_key());
    assert!(debug.contains("HS256") && !debug.contains("secret that is"), "{debug}");
}

fn jwk_error(jwk: Value) -> KeyError {
    VerifyingKey::from_jwk(&jwk).unwrap_err()
}

#[test]
fn jwk_loading_is_strict() {
    let ed = signing_key(Alg::EdDSA).verifying_key().to_jwk().unwrap();
    let ec = signing_key(Alg::ES256).verifying_key().to_jwk().unwrap();
    let rsa = signing_key(Alg::RS256).verifying_key().to_jwk().unwrap();
    for jwk in [&ed, &ec, &rsa] {
        assert_eq!(VerifyingKey::from_jwk(jwk).unwrap().to_jwk().as_ref(), Some(jwk));
    }
    let with = |jwk: &Value, name: &str, value: Value| {
        let mut jwk = jwk.clone();
        jwk[name] = value;
        jwk
    };
    let without = |jwk: &Value, name: &str| {
        let mut jwk = jwk.clone();
        jwk.as_object_mut().unwrap().remove(name);
        jwk
    };
    // `alg`, `use` and `key_ops` are optional but must fit.
    assert_eq!(VerifyingKey::from_jwk(&without(&without(&ed, "alg"), "use")).unwrap().alg(), Alg::EdDSA);
    assert!(VerifyingKey::from_jwk(&with(&ec, "key_ops", json!(["verify"]))).is_ok());
    assert!(matches!(jwk_error(with(&ed, "alg", json!("ES256"))), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(with(&rsa, "alg", json!("HS256"))), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(with(&rsa, "alg", json!("RS512"))), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(with(&ed, "use", json!("enc"))), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(with(&ed, "key_ops", json!(["sign"]))), KeyError::Jwk(_)));
    // Private parameters, even null ones, and symmetric keys are refused.
    assert_eq!(jwk_error(with(&ed, "d", json!("AAAA"))), KeyError::PrivateJwk);
    assert_eq!(jwk_error(with(&rsa, "p", Value::Null)), KeyError::PrivateJwk);
    assert_eq!(jwk_error(json!({"kty": "oct", "kid": "s", "k": b64(HS_SECRET)})), KeyError::PrivateJwk);
    assert!(matches!(jwk_error(json!({"kty": "oct", "kid": "s"})), KeyError::Jwk(_)));
    // Shape and sizes.
    assert_eq!(jwk_error(without(&ed, "kid")), KeyError::MissingKid);
    assert!(matches!(jwk_error(json!([ed])), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(with(&ed, "crv", json!("Ed448"))), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(with(&ec, "crv", json!("P-384"))), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(without(&ec, "y")), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(with(&ed, "x", json!("AAAA="))), KeyError::Jwk(_)));
    assert!(matches!(jwk_error(with(&ed, "x", json!(42))), KeyError::Jwk(_)));
    assert_eq!(jwk_error(with(&ed, "x", json!(b64([1; 31])))), KeyError::InvalidKey);
    assert_eq!(jwk_error(with(&ec, "y", json!(b64([1; 33])))), KeyError::InvalidKey);
    assert_eq!(jwk_error(with(&rsa, "n", json!(b64([0xff; 128])))), KeyError::RsaModulusSize { bits: 1024 });
    assert_eq!(jwk_error(with(&rsa, "n", json!(b64([0xff; 1025])))), KeyError::RsaModulusSize { bits: 8200 });
    assert_eq!(jwk_error(with(&rsa, "e", json!(b64([1, 0, 0])))), KeyError::RsaExponent);
    assert_eq!(jwk_error(with(&rsa, "e", json!(b64([1])))), KeyError::RsaExponent);
    // Leading zeros on the modulus are tolerated and dropped.
    let mut padded_n = vec![0];
    padded_n.extend(URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap());
    let padded = VerifyingKey::from_jwk(&with(&rsa, "n", json!(b64(padded_n)))).unwrap();
    assert_eq!(padded.to_jwk().unwrap(), rsa);
}

#[test]
fn scopes_and_audiences_are_read_in_every_form() {
    let parse = |payload: Value| serde_json::from_value::<Claims>(payload).map_err(|e| e.to_string());
    let base = json!({"iss": ISS, "sub": "s", "aud": AUD, "exp": NOW});
    let with = |name: &str, value: Value| {
        let mut payload = base.clone();
        payload[name] = value;
        parse(payload)
    };
    assert_eq!(with("scope", json!("a  b a")).unwrap().scopes, ["a", "b"]);
    assert_eq!(with("scp", json!(["a", "b"])).unwrap().scopes, ["a", "b"]);
    assert_eq!(with("scp", json!("a b")).unwrap().scopes, ["a", "b"]);
    assert_eq!(with("scopes", json!(["a", "b"])).unwrap().scopes, ["a", "b"], "FastAPI's tutorial");
    let mut both = base.clone();
    both["scope"] = json!("a b");
    both["scp"] = json!(["b", "c"]);
    assert_eq!(parse(both).unwrap().scopes, ["a", "b", "c"]);
    assert_eq!(with("aud", json!(["x", "y"])).unwrap().aud, ["x", "y"]);
    assert!(with("aud", json!(7)).is_err());
    assert!(with("roles", json!("admin")).is_err());
    let defaults = parse(base.clone()).unwrap();
    assert_eq!((defaults.ver, defaults.roles.len(), defaults.iat), (0, 0, None));
    assert!(parse(json!({"iss": ISS, "sub": "s", "aud": AUD})).unwrap_err().contains("exp"));
    // What we write, we read back unchanged.
    assert_eq!(serde_json::from_value::<Claims>(serde_json::to_value(claims()).unwrap()).unwrap(), claims());
    assert!(claims().has_scope("write:orders") && !claims().has_scope("write"));
    assert!(claims().has_role("billing") && !claims().has_role("root"));
}

#[test]
fn error_reasons_are_distinct() {
    let all = [
        TokenError::TooLarge,
        TokenError::Malformed,
        TokenError::MalformedHeader,
        TokenError::AlgNone,
        TokenError::UnsupportedAlg,
        TokenError::ForbiddenHeader("jku"),
        TokenError::WrongType,
        TokenError::MissingKid,
        TokenError::UnknownKid,
        TokenError::AlgMismatch,
        TokenError::BadSignature,
        TokenError::MalformedClaims,
        TokenError::MissingClaim("exp"),
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::IssuedInFuture,
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
        TokenError::InvalidClaims("x"),
        TokenError::Signing,
    ];
    let mut reasons: Vec<_> = all.iter().map(|e| e.reason()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len());
}

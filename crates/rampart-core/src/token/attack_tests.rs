#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Hostile tokens: each test builds the attack with a real signature where one
//! is possible, so that only the check under test can stop it, and most show
//! first that the same construction passes when that check's condition is
//! absent.

use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};

use super::tests::{b64, claims, signing_key, verifier, AUD, ISS, NOW, P256_PUB_PEM, RSA2048_PUB_PEM};
use super::*;

/// A kid that appears only in hostile tokens, to prove errors never echo it.
const TOKEN_KID: &str = "kid-from-the-token";

/// `header.payload.signature` with a genuine signature by `key` over whatever
/// JSON (or not-JSON) text is given, as an attacker holding that key would make.
fn forge(header: &str, payload: &str, key: &SigningKey) -> String {
    sign_with(header, payload, key.encoding(), key.alg())
}

fn sign_with(header: &str, payload: &str, encoding: &EncodingKey, alg: Alg) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), encoding, alg.jsonwebtoken()).unwrap();
    format!("{message}.{signature}")
}

fn header_json(alg: &str, kid: &str) -> String {
    json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string()
}

fn payload_json() -> String {
    serde_json::to_string(&claims()).unwrap()
}

/// The payload with one claim replaced (or removed, for `Value::Null`).
fn payload_with(name: &str, value: Value) -> String {
    let mut payload = serde_json::to_value(claims()).unwrap();
    match value {
        Value::Null => drop(payload.as_object_mut().unwrap().remove(name)),
        value => payload[name] = value,
    }
    payload.to_string()
}

/// The EdDSA test key and a verifier that trusts only it.
fn ed() -> (SigningKey, Verifier) {
    let key = signing_key(Alg::EdDSA);
    let verifier = verifier(&[&key]);
    (key, verifier)
}

#[track_caller]
fn check(verifier: &Verifier, token: &str, expected: TokenError) {
    assert_eq!(verifier.verify(token, NOW), Err(expected), "token: {token:.200}");
    let message = expected.to_string();
    assert!(!message.contains(TOKEN_KID), "{message}");
    for segment in token.split('.').filter(|s| s.len() >= 4) {
        assert!(!message.contains(segment), "{message}");
    }
}

#[test]
fn forged_baseline_is_accepted() {
    // The helpers make valid tokens; every refusal below is the check's doing.
    let (key, verifier) = ed();
    let token = forge(&header_json("EdDSA", "EdDSA"), &payload_json(), &key);
    assert_eq!(verifier.verify(&token, NOW), Ok(claims()));
}

#[test]
fn alg_none_is_refused_in_every_spelling() {
    let (key, verifier) = ed();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = header_json(alg, "EdDSA");
        let unsigned = format!("{}.{}.", b64(&header), b64(payload_json()));
        check(&verifier, &unsigned, TokenError::AlgNone);
        // With a genuine EdDSA signature over the same bytes.
        check(&verifier, &forge(&header, &payload_json(), &key), TokenError::AlgNone);
        // Without a kid, the form most libraries were fooled by.
        let bare = format!("{}.{}.", b64(json!({"alg": alg}).to_string()), b64(payload_json()));
        check(&verifier, &bare, TokenError::AlgNone);
        check(&verifier, bare.trim_end_matches('.'), TokenError::Malformed);
    }
}

#[test]
fn hmac_keyed_with_a_public_key_is_refused() {
    for (alg, public_pem) in [(Alg::RS256, RSA2048_PUB_PEM), (Alg::ES256, P256_PUB_PEM)] {
        let public = VerifyingKey::from_public_pem("k", alg, public_pem).unwrap();
        let jwk = public.to_jwk().unwrap().to_string();
        let der = pem::parse(public_pem).unwrap().contents().to_vec();
        let verifier = Verifier::new(KeySet::from_keys([public]).unwrap(), [ISS], [AUD]);
        // Everything an attacker could find published and use as the secret.
        for secret in [public_pem.as_bytes(), public_pem.trim_end().as_bytes(), jwk.as_bytes(), &der] {
            for header in [header_json("HS256", "k"), json!({"alg": "HS256"}).to_string()] {
                let token = sign_with(&header, &payload_json(), &EncodingKey::from_secret(secret), Alg::HS256);
                check(&verifier, &token, TokenError::AlgMismatch);
                // A verifier that let the token pick the algorithm would accept it.
                let naive = Verifier::new(
                    KeySet::from_keys([VerifyingKey::hs256("k", secret).unwrap()]).unwrap(),
                    [ISS],
                    [AUD],
                );
                assert_eq!(naive.verify(&token, NOW), Ok(claims()));
            }
        }
    }
}

#[test]
fn kid_naming_a_key_of_another_alg_is_refused() {
    let ed_key = signing_key(Alg::EdDSA);
    let es_key = signing_key(Alg::ES256);
    let hs_key = signing_key(Alg::HS256);
    let verifier = verifier(&[&ed_key, &es_key, &hs_key]);
    // Signed by the ES256 key, claiming the EdDSA key's kid, and the reverse.
    check(&verifier, &forge(&header_json("ES256", "EdDSA"), &payload_json(), &es_key), TokenError::AlgMismatch);
    check(&verifier, &forge(&header_json("EdDSA", "ES256"), &payload_json(), &ed_key), TokenError::AlgMismatch);
    check(&verifier, &forge(&header_json("HS256", "EdDSA"), &payload_json(), &hs_key), TokenError::AlgMismatch);
    // Named correctly, each verifies.
    for key in [&ed_key, &es_key, &hs_key] {
        let token = forge(&header_json(key.alg().as_str(), key.kid()), &payload_json(), key);
        assert!(verifier.verify(&token, NOW).is_ok());
    }
    check(&verifier, &forge(&header_json("EdDSA", TOKEN_KID), &payload_json(), &ed_key), TokenError::UnknownKid);
    let no_kid = forge(&json!({"alg": "EdDSA"}).to_string(), &payload_json(), &ed_key);
    check(&verifier, &no_kid, TokenError::MissingKid);
}

#[test]
fn key_locating_headers_are_refused() {
    let (key, verifier) = ed();
    let jwk = key.verifying_key().to_jwk().unwrap();
    for (name, value) in [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("jwk", jwk),
        ("x5c", json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"])),
        ("crit", json!(["exp"])),
    ] {
        for value in [value, Value::Null] {
            let mut header = json!({"alg": "EdDSA", "kid": "EdDSA"});
            header[name] = value;
            let token = forge(&header.to_string(), &payload_json(), &key);
            check(&verifier, &token, TokenError::ForbiddenHeader(name));
        }
    }
    // Harmless extras are ignored.
    let header = json!({"alg": "EdDSA", "kid": "EdDSA", "x5t": "abc", "cty": "x"}).to_string();
    assert!(verifier.verify(&forge(&header, &payload_json(), &key), NOW).is_ok());
}

#[test]
fn expiry_and_not_before_honour_the_leeway() {
    let (key, mut verifier) = ed();
    let token = issue(&key, &claims()).unwrap(); // exp = NOW + 900
    assert!(verifier.verify(&token, NOW + 929).is_ok());
    assert_eq!(verifier.verify(&token, NOW + 930), Err(TokenError::Expired));
    assert_eq!(verifier.verify(&token, u64::MAX), Err(TokenError::Expired));
    verifier.leeway_secs = 0;
    assert!(verifier.verify(&token, NOW + 899).is_ok());
    assert_eq!(verifier.verify(&token, NOW + 900), Err(TokenError::Expired));
    verifier.leeway_secs = DEFAULT_LEEWAY_SECS;

    let mut later = claims();
    later.nbf = Some(NOW + 100);
    let token = issue(&key, &later).unwrap();
    assert_eq!(verifier.verify(&token, NOW), Err(TokenError::NotYetValid));
    assert_eq!(verifier.verify(&token, NOW + 69), Err(TokenError::NotYetValid));
    assert!(verifier.verify(&token, NOW + 70).is_ok());

    let mut future = claims();
    future.nbf = None;
    future.iat = Some(NOW + 100);
    let token = issue(&key, &future).unwrap();
    assert_eq!(verifier.verify(&token, NOW), Err(TokenError::IssuedInFuture));
    assert!(verifier.verify(&token, NOW + 70).is_ok());

    // Far-future and zero timestamps neither overflow nor pass by accident.
    let forever = forge(&header_json("EdDSA", "EdDSA"), &payload_with("exp", json!(u64::MAX)), &key);
    assert!(verifier.verify(&forever, u64::MAX - 1).is_ok());
    check(&verifier, &forge(&header_json("EdDSA", "EdDSA"), &payload_with("exp", json!(0)), &key), TokenError::Expired);
}

#[test]
fn issuer_and_audience_must_be_ours() {
    let (key, verifier) = ed();
    let header = header_json("EdDSA", "EdDSA");
    let signed = |name: &str, value: Value| forge(&header, &payload_with(name, value), &key);
    for iss in ["https://evil.example", "https://auth.example/", "HTTPS://AUTH.EXAMPLE", ""] {
        check(&verifier, &signed("iss", json!(iss)), TokenError::WrongIssuer);
    }
    check(&verifier, &signed("aud", json!("other-api")), TokenError::WrongAudience);
    check(&verifier, &signed("aud", json!(["a", "b"])), TokenError::WrongAudience);
    check(&verifier, &signed("aud", json!([])), TokenError::WrongAudience);
    assert!(verifier.verify(&signed("aud", json!(["a", AUD])), NOW).is_ok());

    let token = issue(&key, &claims()).unwrap();
    let nobody = Verifier::new(verifier.keys.clone(), Vec::<String>::new(), [AUD]);
    check(&nobody, &token, TokenError::WrongIssuer);
    let nowhere = Verifier::new(verifier.keys.clone(), [ISS], Vec::<String>::new());
    check(&nowhere, &token, TokenError::WrongAudience);
}

#[test]
fn required_claims_must_be_present() {
    let (key, verifier) = ed();
    let header = header_json("EdDSA", "EdDSA");
    for name in ["exp", "iss", "aud", "sub"] {
        check(&verifier, &forge(&header, &payload_with(name, Value::Null), &key), TokenError::MissingClaim(name));
        let explicit_null = payload_json().replacen(&format!("\"{name}\":"), &format!("\"{name}\":null,\"x\":"), 1);
        check(&verifier, &forge(&header, &explicit_null, &key), TokenError::MissingClaim(name));
    }
}

#[test]
fn tampering_breaks_the_signature_for_every_alg() {
    for alg in [Alg::EdDSA, Alg::ES256, Alg::RS256, Alg::HS256] {
        let key = signing_key(alg);
        let verifier = verifier(&[&key]);
        let token = issue(&key, &claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        let evil_payload = b64(payload_with("sub", json!("admin")));
        check(&verifier, &format!("{}.{evil_payload}.{}", parts[0], parts[2]), TokenError::BadSignature);
        let evil_header = b64(json!({"alg": alg.as_str(), "kid": alg.as_str()}).to_string());
        check(&verifier, &format!("{evil_header}.{}.{}", parts[1], parts[2]), TokenError::BadSignature);

        let mut signature = parts[2].as_bytes().to_vec();
        let middle = signature.len() / 2;
        signature[middle] = if signature[middle] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(signature).unwrap();
        check(&verifier, &format!("{}.{}.{flipped}", parts[0], parts[1]), TokenError::BadSignature);
        check(&verifier, &format!("{}.{}.{}AA", parts[0], parts[1], parts[2]), TokenError::BadSignature);
        check(&verifier, &format!("{}.{}.", parts[0], parts[1]), TokenError::BadSignature);

        // A signature from another token of the same key.
        let other = issue(&key, &Claims::new(ISS, "someone-else", AUD, NOW, 60)).unwrap();
        let other_signature = other.rsplit('.').next().unwrap();
        check(&verifier, &format!("{}.{}.{other_signature}", parts[0], parts[1]), TokenError::BadSignature);
    }
}

#[test]
fn a_key_substituted_under_the_same_kid_is_refused() {
    let (_, verifier) = ed();
    let impostor = SigningKey::generate("EdDSA", Alg::EdDSA).unwrap().key;
    check(&verifier, &issue(&impostor, &claims()).unwrap(), TokenError::BadSignature);
}

#[test]
fn every_truncation_is_refused() {
    let (key, verifier) = ed();
    let token = issue(&key, &claims()).unwrap();
    assert!(verifier.verify(&token, NOW).is_ok());
    for end in 0..token.len() {
        assert!(verifier.verify(&token[..end], NOW).is_err(), "prefix of {end} bytes was accepted");
    }
    let first_dot = token.find('.').unwrap();
    check(&verifier, &token[..first_dot], TokenError::Malformed);
    check(&verifier, &token[first_dot..], TokenError::Malformed);
}

#[test]
fn oversized_tokens_and_headers_are_refused_unread() {
    let (key, mut verifier) = ed();
    check(&verifier, &"a".repeat(1 << 20), TokenError::TooLarge);
    let token = issue(&key, &claims()).unwrap();
    check(&verifier, &format!("{token}{}", "A".repeat(1 << 20)), TokenError::TooLarge);
    verifier.max_token_bytes = token.len() - 1;
    check(&verifier, &token, TokenError::TooLarge);
    verifier.max_token_bytes = token.len();
    assert!(verifier.verify(&token, NOW).is_ok());

    let (_, verifier) = ed();
    let padding = "p".repeat(MAX_HEADER_BYTES);
    let header = json!({"alg": "EdDSA", "kid": "EdDSA", "pad": padding}).to_string();
    check(&verifier, &forge(&header, &payload_json(), &key), TokenError::MalformedHeader);
}

#[test]
fn anything_but_unpadded_base64url_is_refused() {
    let (key, verifier) = ed();
    let token = issue(&key, &claims()).unwrap();
    for bad in ["+", "/", "=", "==", " ", "\n", "%2E", "é", "\0", "\u{200b}"] {
        for segment in 0..3 {
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let middle = parts[segment].len() / 2;
            parts[segment].insert_str(middle, bad);
            check(&verifier, &parts.join("."), TokenError::Malformed);
            let mut padded: Vec<String> = token.split('.').map(str::to_owned).collect();
            padded[segment].push_str(bad);
            check(&verifier, &padded.join("."), TokenError::Malformed);
        }
    }
    for shape in ["", ".", "..", "a.b", "a..c", ".b.c", "a.b.c.d", &format!("{token}.")] {
        check(&verifier, shape, TokenError::Malformed);
    }
    // A segment whose unused trailing bits are set decodes to the same bytes in
    // a lax decoder; ours refuses it. The header below is 22 bytes, so its last
    // character carries 2 bits of data and 4 unused ones.
    let header = r#"{"alg":"EdDSA","x":12}"#;
    let encoded = b64(header);
    assert_eq!(encoded.len() % 4, 2);
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.find(encoded.chars().last().unwrap()).unwrap();
    let sloppy = format!("{}{}", &encoded[..encoded.len() - 1], &alphabet[(last | 1)..=(last | 1)]);
    let rest = forge(header, &payload_json(), &key);
    let rest = rest.split_once('.').unwrap().1;
    check(&verifier, &format!("{sloppy}.{rest}"), TokenError::Malformed);
}

#[test]
fn headers_that_are_not_plain_objects_are_refused() {
    let (key, verifier) = ed();
    for header in [
        r#"["EdDSA"]"#,
        r#"["EdDSA", null, "EdDSA"]"#,
        r#"[{"alg":"EdDSA"}]"#,
        "42",
        "1e999",
        r#""EdDSA""#,
        "null",
        "true",
        "{}",
        r#"{"alg":null}"#,
        r#"{"alg":5}"#,
        r#"{"alg":["EdDSA"]}"#,
        r#"{"alg":"EdDSA","kid":5}"#,
        r#"{"alg":"EdDSA","typ":5}"#,
        r#"{"alg":"EdDSA"} {}"#,
        r#"{"alg":"EdDSA",}"#,
        r#"{"alg":"EdDSA""#,
        r#"{"alg":"HS256","alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","kid":"EdDSA","kid":"other"}"#,
        r#"{"alg":"EdDSA","kid":"\ud800"}"#,
        "\u{feff}{\"alg\":\"EdDSA\"}",
    ] {
        check(&verifier, &forge(header, &payload_json(), &key), TokenError::MalformedHeader);
    }
    // Invalid UTF-8 in the header.
    let token = forge("{\"alg\":\"EdDSA\",\"kid\":\"x\"}", &payload_json(), &key);
    let (_, rest) = token.split_once('.').unwrap();
    let bad_utf8 = b64(b"{\"alg\":\"EdDSA\",\"kid\":\"\xff\"}");
    check(&verifier, &format!("{bad_utf8}.{rest}"), TokenError::MalformedHeader);
    // Whitespace around the object is valid JSON and accepted.
    let spaced = forge(" { \"alg\" : \"EdDSA\" }\n", &payload_json(), &key);
    assert!(verifier.verify(&spaced, NOW).is_ok());
}

#[test]
fn unknown_algorithms_and_types_are_refused() {
    let (key, verifier) = ed();
    for alg in ["HS512", "RS384", "PS256", "ES384", "ES256K", "Ed25519", "eddsa", "EdDSA ", "", "HS256\0"] {
        check(&verifier, &forge(&header_json(alg, "EdDSA"), &payload_json(), &key), TokenError::UnsupportedAlg);
    }
    for typ in ["JWE", "secevent+jwt", "JOSE", "", "dpop+jwt"] {
        let header = json!({"alg": "EdDSA", "typ": typ}).to_string();
        check(&verifier, &forge(&header, &payload_json(), &key), TokenError::WrongType);
    }
    for typ in ["JWT", "jwt", "at+jwt", "application/at+jwt", "AT+JWT"] {
        let header = json!({"alg": "EdDSA", "typ": typ}).to_string();
        assert!(verifier.verify(&forge(&header, &payload_json(), &key), NOW).is_ok(), "{typ}");
    }
}

#[test]
fn claims_that_are_not_plain_well_typed_objects_are_refused() {
    let (key, verifier) = ed();
    let header = header_json("EdDSA", "EdDSA");
    let payload = payload_json();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let mut bad: Vec<String> = [
        // The struct's fields in order, as an array: serde would take it.
        format!(r#"["{ISS}","user-1","{AUD}",4102444800]"#),
        "null".to_owned(),
        "42".to_owned(),
        "{}garbage".to_owned(),
        payload.replacen('{', "{\"exp\":1,", 1),
        payload.replacen('{', "{\"sub\":\"admin\",", 1),
        payload.replacen('{', "{\"aud\":\"other\",", 1),
    ]
    .into();
    for (name, value) in [
        ("exp", "1e400"),
        ("exp", "18446744073709551616"),
        ("exp", "-1"),
        ("exp", "1.9e9"),
        ("exp", "4102444800.5"),
        ("exp", "\"4102444800\""),
        ("nbf", "-5"),
        // GHSA-h395-gr6q-cpjc: jsonwebtoken 9's own `decode` treats a mistyped
        // `nbf`/`exp` as absent. We never use that path, and refuse both.
        ("nbf", "\"99999999999\""),
        ("exp", "\"never\""),
        ("iat", "true"),
        ("ver", "4294967296"),
        ("ver", "-1"),
        ("roles", "\"admin\""),
        ("roles", "[1]"),
        ("scope", "[\"read\"]"),
        ("sub", "42"),
        ("iss", "[\"https://auth.example\"]"),
        ("aud", "[[\"rampart-api\"]]"),
        ("jti", "{}"),
    ] {
        bad.push(payload_with(name, json!("PLACEHOLDER")).replace("\"PLACEHOLDER\"", value));
    }
    for payload in bad {
        check(&verifier, &forge(&header, &payload, &key), TokenError::MalformedClaims);
    }
    // Unknown claims are ignored, whatever their type. serde_json skips them
    // without recursion, so deep nesting costs no stack.
    let extra = payload.replacen('{', "{\"https://example.com/claims\":{\"a\":[1,2.5,null]},", 1);
    assert_eq!(verifier.verify(&forge(&header, &extra, &key), NOW), Ok(claims()));
    let deep = payload.replacen('{', &format!("{{\"deep\":{deep},"), 1);
    assert_eq!(verifier.verify(&forge(&header, &deep, &key), NOW), Ok(claims()));
}

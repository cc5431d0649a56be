//! Tokens we issue, verified by PyJWT (what a FastAPI upstream would use).
//!
//! Runs `tests/pyjwt_verify.py` with the interpreter named by
//! `RAMPART_TEST_PYTHON`, which must have PyJWT and cryptography installed
//! (`scripts/test` sets this up). Without the variable the test is skipped
//! with a message; with it, any failure to run Python fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use rampart_core::token::{issue, Alg, Claims, KeySet, SigningKey};
use serde_json::{json, Value};

const RSA2048_PEM: &str = include_str!("../src/token/testdata/rsa2048.pem");
const ISS: &str = "https://auth.example";
const AUD: &str = "rampart-api";
const HS_SECRET: &[u8] = b"interop secret that is longer than 32 bytes";

fn claims() -> Claims {
    // Fixed times far from any clock: PyJWT checks them against its own.
    let mut claims = Claims::new(ISS, "user-7", AUD, 1_700_000_000, 2_402_444_800);
    claims.jti = Some("jti-7".into());
    claims.roles = vec!["admin".into()];
    claims.scopes = vec!["read".into(), "write:orders".into()];
    claims.tier = Some("gold".into());
    claims.ver = 2;
    claims
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn pyjwt_verifies_tokens_we_issue() {
    let Some(python) = std::env::var_os("RAMPART_TEST_PYTHON") else {
        eprintln!("skipped: RAMPART_TEST_PYTHON not set (scripts/test sets it to a python with PyJWT)");
        return;
    };
    let keys = [
        SigningKey::generate("ed-1", Alg::EdDSA).unwrap().key,
        SigningKey::generate("es-1", Alg::ES256).unwrap().key,
        SigningKey::from_pkcs8_pem("rs-1", Alg::RS256, RSA2048_PEM).unwrap(),
        SigningKey::hs256("hs-1", HS_SECRET).unwrap(),
    ];
    let jwks = KeySet::from_keys(keys.iter().map(|k| k.verifying_key().clone())).unwrap().jwks();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 3);

    let mut cases = Vec::new();
    for key in &keys {
        let token = issue(key, &claims()).unwrap();
        let mut case = json!({"name": key.alg().as_str(), "token": token, "issuer": ISS, "audience": AUD});
        if key.alg() == Alg::HS256 {
            case["hs256_secret_hex"] = json!(hex(HS_SECRET));
        }
        cases.push(case);
    }
    // Cases PyJWT must refuse, to show the script really checks.
    let good = cases[0]["token"].as_str().unwrap().to_owned();
    let (signed, _) = good.rsplit_once('.').unwrap();
    let foreign = issue(&SigningKey::generate("ed-1", Alg::EdDSA).unwrap().key, &claims()).unwrap();
    let foreign_signature = foreign.rsplit_once('.').unwrap().1;
    cases.push(json!({"name": "wrong-signature", "token": format!("{signed}.{foreign_signature}"),
                      "issuer": ISS, "audience": AUD}));
    cases.push(json!({"name": "wrong-audience", "token": good, "issuer": ISS, "audience": "other"}));

    let results = run(&python, &json!({"jwks": jwks, "cases": cases}));
    let expected_claims = json!({
        "iss": ISS, "sub": "user-7", "aud": AUD, "iat": 1_700_000_000u64, "nbf": 1_700_000_000u64,
        "exp": 4_102_444_800u64, "jti": "jti-7", "roles": ["admin"], "scope": "read write:orders",
        "tier": "gold", "ver": 2,
    });
    for (key, kid) in keys.iter().zip(["ed-1", "es-1", "rs-1", "hs-1"]) {
        let result = &results[key.alg().as_str()];
        assert_eq!(result["ok"], true, "PyJWT refused our {} token: {result}", key.alg());
        assert_eq!(result["claims"], expected_claims);
        assert_eq!(result["header"], json!({"typ": "JWT", "alg": key.alg().as_str(), "kid": kid}));
    }
    for name in ["wrong-signature", "wrong-audience"] {
        assert_eq!(results[name]["ok"], false, "PyJWT accepted {name}: {}", results[name]);
    }
    assert!(results["wrong-signature"]["error"].as_str().unwrap().starts_with("InvalidSignatureError"));
    assert!(results["wrong-audience"]["error"].as_str().unwrap().starts_with("InvalidAudienceError"));
}

fn run(python: &std::ffi::OsStr, request: &Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyjwt_verify.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the interpreter named by RAMPART_TEST_PYTHON");
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

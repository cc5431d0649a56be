//! Second factors end to end over HTTP, on SQLite and on PostgreSQL: TOTP
//! enrolment and confirmation, the two-step login (password → `mfa_token` →
//! code → tokens), the `mfa_token` refused as an access token, replayed codes
//! and reused backup codes refused, regeneration, disabling, lockout after
//! failed codes, and hostile codes. With `RAMPART_TEST_PYTHON` (pyotp, which
//! `scripts/test` installs), a code pyotp makes from our `otpauth://` URI
//! logs in; a failing script is a test failure. The RFC 6238 vectors are unit
//! tests of `rampart_core::totp`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rampart_core::totp::{code_at, secret_from_base32, STEP_SECS};
use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, register_with_email, token_request, PASSWORD};

const MFA_GRANT: &str = "urn:rampart:params:oauth:grant-type:mfa-otp";

on_both_backends!(sqlite_totp_two_step_login, postgres_totp_two_step_login, totp_flow);
on_both_backends!(sqlite_failed_codes_lock_the_account, postgres_failed_codes_lock_the_account, lockout_flow);

fn config(db: &TestDb, up: std::net::SocketAddr, max_failures: u32) -> String {
    identity_config(up, &db.url)
        .replace("registration = true\n", &format!("registration = true\nmax_failures = {max_failures}\n"))
        // Many refusals come from one address here; bans are tested elsewhere.
        + "[bans]\nenabled = false\n"
}

fn now_step() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / STEP_SECS
}

async fn password_login(gw: &rampart::Gateway, user: &str, password: &str) -> (u16, Value) {
    token_request(gw, &[("grant_type", "password"), ("username", user), ("password", password)]).await
}

async fn second_step(gw: &rampart::Gateway, mfa_token: &str, otp: &str) -> (u16, Value) {
    token_request(gw, &[("grant_type", MFA_GRANT), ("mfa_token", mfa_token), ("otp", otp)]).await
}

async fn post(gw: &rampart::Gateway, path: &str, bearer: &str, body: Value) -> reqwest::Response {
    client().post(url(gw, path)).bearer_auth(bearer).json(&body).send().await.unwrap()
}

async fn api_status(gw: &rampart::Gateway, token: &str) -> u16 {
    client().get(url(gw, "/api/x")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

/// Registers `user`, logs in and enrols TOTP; returns the access token, the
/// secret, the enrolment answer and the backup codes.
async fn enrol(gw: &rampart::Gateway, user: &str) -> (String, Vec<u8>, Value, Vec<String>) {
    assert_eq!(register_with_email(gw, user, None, PASSWORD).await.status(), 201);
    let (status, tokens) = password_login(gw, user, PASSWORD).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    // Turning a second factor on takes the password: a stolen token alone
    // must not enrol the thief's app.
    let r = post(gw, "/auth/mfa/totp", &access, Value::Null).await;
    assert_eq!(r.status(), 400);
    let r = post(gw, "/auth/mfa/totp", &access, serde_json::json!({"password": "not the password"})).await;
    assert_eq!(r.status(), 403);
    let r = post(gw, "/auth/mfa/totp", &access, serde_json::json!({"password": PASSWORD})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let enrolment: Value = r.json().await.unwrap();
    let secret = secret_from_base32(enrolment["secret"].as_str().unwrap()).unwrap();
    assert_eq!(secret.len(), 20);
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with(&format!("otpauth://totp/api.example.test:{user}?secret=")), "{uri}");
    assert!(enrolment["qr_png"].as_str().unwrap().starts_with("data:image/png;base64,iVBORw0KGgo"));
    assert!(enrolment["qr_svg"].as_str().unwrap().contains("<svg"));
    // Not active before it is confirmed: the password alone still logs in.
    assert_eq!(password_login(gw, user, PASSWORD).await.0, 200);
    // A wrong code does not confirm it.
    let wrong = if code_at(&secret, now_step()) == "000000" { "111111" } else { "000000" };
    let r = post(gw, "/auth/mfa/totp/confirm", &access, serde_json::json!({"code": wrong})).await;
    assert_eq!(r.status(), 403);
    let r =
        post(gw, "/auth/mfa/totp/confirm", &access, serde_json::json!({"code": code_at(&secret, now_step())})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let codes: Vec<String> =
        body["backup_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10);
    (access, secret, enrolment, codes)
}

/// The `mfa_token` of a password login that needs a second factor.
async fn mfa_token(gw: &rampart::Gateway, user: &str) -> String {
    let (status, body) = password_login(gw, user, PASSWORD).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "mfa_required");
    assert_eq!(body["mfa_methods"], serde_json::json!(["totp", "backup_code"]));
    assert!(body.get("access_token").is_none());
    body["mfa_token"].as_str().unwrap().to_string()
}

async fn totp_flow(db: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&config(db, up, 100)).await;
    let (access, secret, enrolment, codes) = enrol(&gw, "alice").await;
    // Enrolling again while active is refused.
    assert_eq!(post(&gw, "/auth/mfa/totp", &access, serde_json::json!({"password": PASSWORD})).await.status(), 409);
    let status: Value =
        client().get(url(&gw, "/auth/mfa")).bearer_auth(&access).send().await.unwrap().json().await.unwrap();
    assert_eq!((status["totp"].clone(), status["backup_codes_left"].clone()), (true.into(), 10.into()));

    // Two steps: the mfa_token is no access token.
    let pending = mfa_token(&gw, "alice").await;
    assert_eq!(api_status(&gw, &pending).await, 401);
    let r = client().get(url(&gw, "/auth/me")).bearer_auth(&pending).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The confirmation used the current step; the next one is still in the window.
    let code = code_at(&secret, now_step() + 1);
    let (s, tokens) = second_step(&gw, &pending, &code).await;
    assert_eq!(s, 200, "{tokens}");
    assert!(tokens["refresh_token"].is_string());
    assert_eq!(api_status(&gw, tokens["access_token"].as_str().unwrap()).await, 200);
    // The mfa_token served once; the code cannot serve again, nor an older one.
    assert_eq!(second_step(&gw, &pending, &code).await.0, 400);
    let again = mfa_token(&gw, "alice").await;
    let (s, body) = second_step(&gw, &again, &code).await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(second_step(&gw, &again, &code_at(&secret, now_step().saturating_sub(1))).await.0, 400);

    // Hostile codes are refused cleanly.
    for bad in ["", "1234567", "12345", "abcdef", "12\u{0}456", "１２３４５６", "' OR 1=1 --"] {
        let (s, body) = second_step(&gw, &again, bad).await;
        assert!(
            s == 400 && (body["error"] == "invalid_grant" || body["error"] == "invalid_request"),
            "{bad:?}: {body}"
        );
    }
    let huge = "1".repeat(1 << 20);
    assert_eq!(second_step(&gw, &again, &huge).await.0, 400);
    let r = post(&gw, "/auth/mfa/totp/confirm", &access, serde_json::json!({"code": huge})).await;
    assert_eq!(r.status(), 400);
    // An mfa_token that is not one, or an access token in its place.
    assert_eq!(second_step(&gw, "not.a.token", &code_at(&secret, now_step())).await.0, 400);
    assert_eq!(second_step(&gw, &access, &code_at(&secret, now_step())).await.0, 400);

    // A backup code works once (typed in upper case, without dashes).
    let typed = codes[0].replace('-', "").to_uppercase();
    let pending = mfa_token(&gw, "alice").await;
    assert_eq!(second_step(&gw, &pending, &typed).await.0, 200);
    let pending = mfa_token(&gw, "alice").await;
    assert_eq!(second_step(&gw, &pending, &codes[0]).await.0, 400);

    // Regenerating kills the old codes.
    let r = post(&gw, "/auth/mfa/backup-codes", &access, serde_json::json!({"password": "wrong password!"})).await;
    assert_eq!(r.status(), 403);
    let r = post(&gw, "/auth/mfa/backup-codes", &access, serde_json::json!({"password": PASSWORD})).await;
    assert_eq!(r.status(), 200);
    let fresh: Value = r.json().await.unwrap();
    assert_eq!(fresh["backup_codes"].as_array().unwrap().len(), 10);
    assert_eq!(second_step(&gw, &pending, &codes[1]).await.0, 400);
    let code = fresh["backup_codes"][0].as_str().unwrap();
    assert_eq!(second_step(&gw, &pending, code).await.0, 200);

    // pyotp reads our URI and its code logs in (on a second user, whose
    // steps are unused).
    if let Ok(python) = std::env::var("RAMPART_TEST_PYTHON") {
        let (_, _, enrolment, _) = enrol(&gw, "bob").await;
        let uri = enrolment["otpauth_uri"].as_str().unwrap();
        let script = "import sys, pyotp\n\
                      t = pyotp.parse_uri(sys.argv[1])\n\
                      assert t.issuer == 'api.example.test' and t.name == 'bob', (t.issuer, t.name)\n\
                      print(t.at(int(sys.argv[2])))\n";
        let at = ((now_step() + 1) * STEP_SECS).to_string();
        let out = std::process::Command::new(python).args(["-c", script, uri, &at]).output().unwrap();
        assert!(out.status.success(), "pyotp: {}", String::from_utf8_lossy(&out.stderr));
        let code = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let pending = mfa_token(&gw, "bob").await;
        let (s, body) = second_step(&gw, &pending, &code).await;
        assert_eq!(s, 200, "pyotp's code {code}: {body}");
    } else {
        eprintln!("skipping the pyotp check: RAMPART_TEST_PYTHON is not set");
    }
    let _ = enrolment;

    // Disable with the password: the password alone logs in again.
    let r = post(&gw, "/auth/mfa/totp/disable", &access, serde_json::json!({"code": "000000"})).await;
    assert!(r.status() == 403, "{}", r.status());
    let r = post(&gw, "/auth/mfa/totp/disable", &access, serde_json::json!({"password": PASSWORD})).await;
    assert_eq!(r.status(), 204);
    assert_eq!(password_login(&gw, "alice", PASSWORD).await.0, 200);
    let r = post(&gw, "/auth/mfa/totp/disable", &access, serde_json::json!({"password": PASSWORD})).await;
    assert_eq!(r.status(), 409);
    gw.shutdown();
    gw.wait().await;
}

/// Wrong codes count towards the lockout like wrong passwords: once locked,
/// even the right code gets no tokens.
async fn lockout_flow(db: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&config(db, up, 3)).await;
    let (_, secret, _, _) = enrol(&gw, "carol").await;
    let pending = mfa_token(&gw, "carol").await;
    let wrong = |n: u64| format!("{:06}", (n * 7919 + 13) % 1_000_000);
    // The confirm's wrong code was one failure already.
    for n in 0..4 {
        let w = wrong(n);
        if (0..3).any(|d| code_at(&secret, now_step() + d - 1) == w) {
            continue;
        }
        assert_eq!(second_step(&gw, &pending, &w).await.0, 400);
    }
    let (s, _) = second_step(&gw, &pending, &code_at(&secret, now_step() + 1)).await;
    assert_eq!(s, 400, "a locked account completed a login");
    assert_eq!(password_login(&gw, "carol", PASSWORD).await.0, 400);
    gw.shutdown();
    gw.wait().await;
}

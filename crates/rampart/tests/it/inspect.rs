//! The inspection layer end to end: attacks blocked and look-alikes passed in
//! every location, detect mode, JSON bombs, and PII redaction seen by a real
//! upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;

const BLOCK: &str = "[defaults]\ninspect = 'block'\nredact_pii = true\ninspect_exclude = ['json:snippet', 'query:code']\nbody_limit = '64KiB'\n";

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

const SQLI: &str = "1' UNION SELECT password FROM users --";
const XSS: &str = "<script>alert(document.cookie)</script>";
const CMD: &str = "; cat /etc/passwd";
const TRAVERSAL: &str = "../../../../etc/passwd";

#[tokio::test]
async fn attacks_are_blocked_in_every_location() {
    let (gw, _) = setup(BLOCK).await;
    let c = client();
    let mut cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("query sqli", c.get(url(&gw, &format!("/s?q={}", enc(SQLI))))),
        ("query xss", c.get(url(&gw, &format!("/s?q={}", enc(XSS))))),
        ("query cmd", c.get(url(&gw, &format!("/s?host={}", enc(CMD))))),
        ("query traversal", c.get(url(&gw, &format!("/s?file={}", enc(TRAVERSAL))))),
        ("header", c.get(url(&gw, "/s")).header("user-agent", XSS)),
        ("cookie", c.get(url(&gw, "/s")).header("cookie", format!("pref={}", enc(SQLI)))),
        (
            "form",
            c.post(url(&gw, "/s"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("comment={}", enc(XSS))),
        ),
        ("json", c.post(url(&gw, "/s")).json(&serde_json::json!({"items": [{"name": SQLI}]}))),
        ("json key", c.post(url(&gw, "/s")).json(&serde_json::json!({ XSS: 1 }))),
    ];
    for (what, rb) in cases.drain(..) {
        let resp = rb.send().await.unwrap();
        let v = problem(resp, 403).await;
        assert_eq!(v["type"], "urn:rampart:problem:input-blocked", "{what}");
    }
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_inspection_findings_total{rule=\"sqli\",mode=\"block\"}"), "{m}");
    assert!(m.contains("rampart_rejections_total{layer=\"inspect\",reason=\"xss\"}"), "{m}");
}

#[tokio::test]
async fn benign_look_alikes_pass() {
    let (gw, _) = setup(BLOCK).await;
    let c = client();
    let benign = [
        "O'Brien's café",
        "Tom & Jerry; a | b",
        "SELECT is a keyword in SQL",
        "price: $5.00 (incl. tax)",
        "see ../docs for more",
        "<b>bold</b> is HTML",
        "1 + 1 = 2",
    ];
    for text in benign {
        let q = c.get(url(&gw, &format!("/s?q={}", enc(text)))).send().await.unwrap();
        assert_eq!(q.status(), 200, "query {text:?}");
        let j = c.post(url(&gw, "/s")).json(&serde_json::json!({"comment": text})).send().await.unwrap();
        assert_eq!(j.status(), 200, "json {text:?}");
    }
    // Excluded places carry code legitimately.
    let j = c.post(url(&gw, "/s")).json(&serde_json::json!({"snippet": SQLI})).send().await.unwrap();
    assert_eq!(j.status(), 200);
    let q = c.get(url(&gw, &format!("/s?code={}", enc(XSS)))).send().await.unwrap();
    assert_eq!(q.status(), 200);
}

#[tokio::test]
async fn detect_mode_passes_and_off_streams() {
    let (gw, _) = setup("[[routes]]\npath = '/detect/**'\ninspect = 'detect'\n[[routes]]\npath = '/**'\n").await;
    let c = client();
    assert_eq!(c.get(url(&gw, &format!("/detect/x?q={}", enc(SQLI)))).send().await.unwrap().status(), 200);
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_inspection_findings_total{rule=\"sqli\",mode=\"detect\"} 1"), "{m}");
    // Inspection off: nothing is looked at.
    assert_eq!(c.get(url(&gw, &format!("/other?q={}", enc(SQLI)))).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn json_bombs_and_oversize_bodies_are_refused_cleanly() {
    let (gw, _) = setup(BLOCK).await;
    let c = client();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = c.post(url(&gw, "/s")).header("content-type", "application/json").body(deep).send().await.unwrap();
    let v = problem(r, 400).await;
    assert_eq!(v["type"], "urn:rampart:problem:invalid-body");
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(100_000));
    let r = c.post(url(&gw, "/s")).header("content-type", "application/json").body(big).send().await.unwrap();
    problem(r, 413).await;
    let r = c.post(url(&gw, "/s")).header("content-type", "application/json").body("{\"a\":").send().await.unwrap();
    problem(r, 400).await;
}

#[tokio::test]
async fn pii_is_redacted_before_the_upstream_sees_it() {
    let (gw, _) = setup("[[routes]]\npath = '/**'\nredact_pii = true\n").await;
    let body = serde_json::json!({
        "message": "my card is 4111 1111 1111 1111 and ssn 123-45-6789",
        "contact": {"email": "jane.doe@example.com", "phone": "+1 415 555 2671"},
        "order": 1234,
    });
    let resp = client().post(url(&gw, "/echo-body")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(seen["message"], "my card is [REDACTED:card] and ssn [REDACTED:ssn]");
    assert_eq!(seen["contact"]["email"], "[REDACTED:email]");
    assert_eq!(seen["contact"]["phone"], "[REDACTED:phone]");
    assert_eq!(seen["order"], 1234);
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_pii_redactions_total{kind=\"card\"} 1"), "{m}");
    assert!(m.contains("rampart_pii_redactions_total{kind=\"email\"} 1"), "{m}");
}

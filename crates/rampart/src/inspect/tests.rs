#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use rampart_core::config::compile::Exclusion;
use rampart_core::config::model::InspectRulesConfig;

fn policy(mode: InspectMode, exclude: Vec<Exclusion>, redact_pii: bool) -> InspectPolicy {
    InspectPolicy { mode, rules: InspectRulesConfig::default(), exclude, headers: vec![header::USER_AGENT], redact_pii }
}

fn req(uri: &str, headers: &[(&str, &str)]) -> HttpRequest {
    let mut b = http::Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

#[track_caller]
fn check_head(uri: &str, headers: &[(&str, &str)], location: Option<&str>) {
    let found =
        inspect_head(&req(uri, headers), &policy(InspectMode::Block, vec![Exclusion::Query("code".into())], false));
    assert_eq!(found.as_ref().map(|f| f.location.as_str()), location, "{uri} {headers:?}: {found:?}");
}

#[test]
fn head_locations() {
    check_head("/search?q=hello%20world", &[], None);
    check_head("/search?q=1%27%20OR%20%271%27%3D%271", &[], Some("query:q"));
    check_head("/search?code=1%27%20OR%20%271%27%3D%271", &[], None);
    check_head("/x?msg=%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[], Some("query:msg"));
    check_head("/x", &[("user-agent", "<script>alert(1)</script>")], Some("header:user-agent"));
    check_head("/x", &[("x-other", "<script>alert(1)</script>")], None);
    check_head("/x", &[("cookie", "a=1; b=%3Cscript%3Ealert(1)%3C%2Fscript%3E")], Some("cookie:b"));
    check_head("/x", &[("cookie", "theme=dark; lang=en")], None);
    // Quoted values with octal escapes, as Python's cookie parser reads them.
    check_head("/x", &[("cookie", r#"q="\047 OR \0471\047=\0471""#)], Some("cookie:q"));
    check_head("/x", &[("cookie", r#"q="\074script\076alert(1)\074/script\076""#)], Some("cookie:q"));
    check_head("/x", &[("cookie", r#"q="plain \"quoted\" value""#)], None);
    // JSON cookies, as Express's cookie-parser reads `j:…`: escapes decoded,
    // keys too, at any depth; plain JSON and what is not JSON pass.
    let esc = r#"\u003cscript\u003ealert(1)\u003c/script\u003e"#;
    check_head("/x", &[("cookie", &format!(r#"prefs=j:{{"theme":"{esc}"}}"#))], Some("cookie:prefs"));
    check_head("/x", &[("cookie", &format!(r#"prefs=j:[1,{{"a":["{esc}"]}}]"#))], Some("cookie:prefs"));
    check_head("/x", &[("cookie", &format!(r#"prefs=j:{{"{esc}":1}}"#))], Some("cookie:prefs"));
    check_head("/x", &[("cookie", &format!("prefs=j:%22{}%22", esc.replace('\\', "%5C")))], Some("cookie:prefs"));
    check_head("/x", &[("cookie", r#"prefs=j:{"theme":"dark","sizes":[1,2],"on":true}"#)], None);
    check_head("/x", &[("cookie", r#"prefs=j:{"theme":"\u0064ark""#)], None);
    check_head("/x", &[("cookie", &format!(r#"prefs={{"theme":"{esc}"}}"#))], None);
    // Fields separated by `;`, as python-multipart and old parse_qs read them.
    check_head("/x?code=x;q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[], Some("query:q"));
}

#[test]
fn cookie_unquoting_matches_python() {
    assert_eq!(unquote_cookie(r#""\047x\134\"""#).as_deref(), Some("'x\\\""));
    assert_eq!(unquote_cookie(r#""a\b""#).as_deref(), Some("ab"));
    assert_eq!(unquote_cookie(r#""\777\0""#).as_deref(), Some("7770"));
    assert_eq!(unquote_cookie(r#""\377\303\251""#).as_deref(), Some("\u{ff}\u{c3}\u{a9}"), "code points, as Python");
    assert_eq!(unquote_cookie(r#""ends\""#).as_deref(), Some("ends\\"));
    assert_eq!(unquote_cookie("bare"), None);
    assert_eq!(unquote_cookie("\""), None);
}

#[test]
fn json_strings_everywhere_with_exclusions_and_truncated_evidence() {
    let p = policy(
        InspectMode::Block,
        vec![Exclusion::JsonKey("snippet".into()), Exclusion::JsonPath(vec!["doc".into(), "sql".into()])],
        false,
    );
    let attack = "1' OR '1'='1' -- ".repeat(10);
    let body = serde_json::json!({"user": {"tags": ["ok", attack]}}).to_string();
    let out = inspect_body(body.as_bytes(), true, &p);
    let f = out.finding.unwrap();
    assert_eq!(f.location, "json:user.tags[1]");
    assert!(f.excerpt.chars().count() <= EVIDENCE_CHARS);
    let benign = serde_json::json!({"snippet": attack, "doc": {"sql": attack}, "name": "O'Brien"}).to_string();
    assert!(inspect_body(benign.as_bytes(), true, &p).finding.is_none());
    // An excluded path does not exclude the same key elsewhere.
    let elsewhere = serde_json::json!({"other": {"sql": attack}}).to_string();
    assert!(inspect_body(elsewhere.as_bytes(), true, &p).finding.is_some());
}

#[test]
fn json_bombs_are_unparseable_not_fatal() {
    let p = policy(InspectMode::Block, vec![], false);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(inspect_body(deep.as_bytes(), true, &p).unparseable.is_some());
    let wide = format!("[{}1]", "1,".repeat(MAX_JSON_NODES + 10));
    assert_eq!(inspect_body(wide.as_bytes(), true, &p).unparseable, Some("too many values"));
    assert!(inspect_body(b"{not json", true, &p).unparseable.is_some());
}

/// serde_json (with the `raw_value` feature axum turns on) parses the string
/// of an object whose only key is its RawValue token again, with a fresh
/// nesting limit: nested that way, a 100 KB body recursed thousands of
/// levels deep and overflowed the stack, aborting the process. Run on a 2 MiB
/// stack, as tokio's blocking threads have (on the old parse, this test
/// aborted the test binary).
#[test]
fn nesting_hidden_in_raw_value_strings_does_not_overflow_the_stack() {
    let body = crate::testing::raw_value_bomb(100);
    let outcome = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || inspect_body(body.as_bytes(), true, &policy(InspectMode::Block, vec![], true)))
        .unwrap()
        .join()
        .expect("inspection must not overflow the stack");
    // To the stream reader it is one object holding a string: inspected as such.
    assert_eq!(outcome.unparseable, None);
    assert!(outcome.finding.is_none());
}

/// Every member is inspected and masked, repeated ones included: a map kept
/// only the last, so an attack (or PII) in the first went through.
#[test]
fn repeated_members_are_all_inspected_and_masked() {
    let p = policy(InspectMode::Block, vec![], false);
    let out = inspect_body(br#"{"comment":"<script>alert(1)</script>","comment":"hi"}"#, true, &p);
    assert_eq!(out.finding.map(|f| f.location).as_deref(), Some("json:comment"));
    let p = policy(InspectMode::Off, vec![], true);
    let out = inspect_body(br#"{"mail":"a@b.example","mail":"x"}"#, true, &p);
    let rewritten = String::from_utf8(out.rewritten.unwrap().to_vec()).unwrap();
    assert_eq!(rewritten, r#"{"mail":"[REDACTED:email]","mail":"x"}"#);
}

#[test]
fn pii_is_masked_in_json_values() {
    let p = policy(InspectMode::Off, vec![], true);
    let body = serde_json::json!({"note": "card 4111 1111 1111 1111", "n": 4111111111111111u64, "who": {"mail": "a@b.example"}}).to_string();
    let out = inspect_body(body.as_bytes(), true, &p);
    let v: serde_json::Value = serde_json::from_slice(&out.rewritten.unwrap()).unwrap();
    assert_eq!(v["note"], "card [REDACTED:card]");
    assert_eq!(v["who"]["mail"], "[REDACTED:email]");
    assert_eq!(v["n"], 4111111111111111u64, "numbers are not strings: left alone");
    assert_eq!(out.redacted.len(), 2);
}

/// Redaction changes the masked strings and nothing else: numbers keep
/// their exact text (a 30-digit id is not turned into a float), members
/// their order, duplicates included, and excluded places their values.
#[test]
fn redaction_leaves_everything_else_as_sent() {
    let p = policy(InspectMode::Off, vec![Exclusion::JsonPath(vec!["raw".into(), "mail".into()])], true);
    let body = br#"{"id": 123456789012345678901234567890, "z": 1.10, "e": 1e2, "neg": -0.0,
        "mail": "a@b.example", "raw": {"mail": "c@d.example"}, "list": [1, "e@f.example", null, true],
        "dup": "g@h.example", "dup": "ok", "u": "caf\u00e9 \ud83d\ude00"}"#;
    let out = inspect_body(body, true, &p);
    let text = String::from_utf8(out.rewritten.unwrap().to_vec()).unwrap();
    assert_eq!(
        text,
        "{\"id\":123456789012345678901234567890,\"z\":1.10,\"e\":1e2,\"neg\":-0.0,\"mail\":\"[REDACTED:email]\",\
         \"raw\":{\"mail\":\"c@d.example\"},\"list\":[1,\"[REDACTED:email]\",null,true],\
         \"dup\":\"[REDACTED:email]\",\"dup\":\"ok\",\"u\":\"caf\u{e9} \u{1f600}\"}"
    );
}

#[test]
fn form_fields() {
    let p = policy(InspectMode::Detect, vec![Exclusion::Form("comment".into())], false);
    let out = inspect_body(b"name=bob&q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", false, &p);
    assert_eq!(out.finding.unwrap().location, "form:q");
    assert!(inspect_body(b"comment=%3Cscript%3Ealert(1)%3C%2Fscript%3E", false, &p).finding.is_none());
    // An excluded field cannot hide a field after a `;` (python-multipart
    // reads `comment=x;q=…` as two fields).
    let out = inspect_body(b"comment=x;q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", false, &p);
    assert_eq!(out.finding.unwrap().location, "form:q");
    assert!(inspect_body(b"comment=a;b&name=O%27Brien", false, &p).finding.is_none());
}

#[test]
fn client_chosen_names_are_cut_in_locations() {
    let p = policy(InspectMode::Block, vec![], false);
    let long = "k".repeat(10_000);
    let key_attack = format!("<script>alert(1)</script>{long}");
    let body = serde_json::json!({ long.clone(): { key_attack: 1 } }).to_string();
    let found = inspect_body(body.as_bytes(), true, &p).finding.unwrap();
    assert_eq!(found.location.chars().count(), MAX_LOCATION_CHARS + 1, "{}", found.location);
    assert!(found.location.starts_with("json:kkk") && found.location.ends_with('…'));
    let form = format!("{long}=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_eq!(
        inspect_body(form.as_bytes(), false, &p).finding.unwrap().location.chars().count(),
        MAX_LOCATION_CHARS + 1
    );
    let found = inspect_head(&req(&format!("/x?{long}=%3Cscript%3Ealert(1)%3C%2Fscript%3E"), &[]), &p).unwrap();
    assert!(found.location.starts_with("query:kkk") && found.location.chars().count() == MAX_LOCATION_CHARS + 1);
}

/// A multipart field's name, a file's name and a field's text are each
/// inspected, with the `form:` exclusions; a file's content is not.
#[test]
fn multipart_fields_are_inspected_as_form_fields() {
    let p = policy(InspectMode::Block, vec![], false);
    let found = |name: &str, filename: Option<&str>, text: Option<&str>| {
        let field =
            MultipartField { name: name.into(), filename: filename.map(Into::into), text: text.map(Into::into) };
        inspect_multipart(&[field], &p).finding.map(|f| f.location)
    };
    assert_eq!(found("q", None, Some("<script>alert(1)</script>")).as_deref(), Some("form:q"));
    assert_eq!(found("<script>alert(1)</script>", None, Some("x")).as_deref(), Some("form:<script>alert(1)</script>"));
    assert_eq!(found("f", Some("../../../../etc/passwd"), None).as_deref(), Some("form:f(filename)"));
    assert_eq!(found("f", Some("report.sql"), None), None, "a file's content is never read");
    assert_eq!(found("q", None, Some("O'Reilly's select few")), None);
    let excluded = policy(InspectMode::Block, vec![Exclusion::Form("q".into())], false);
    let field = MultipartField { name: "q".into(), filename: None, text: Some("<script>alert(1)</script>".into()) };
    assert!(inspect_multipart(&[field], &excluded).finding.is_none());
}

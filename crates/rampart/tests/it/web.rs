//! The web pages over plain HTTP (reqwest): their CSP (strict, without
//! `unsafe-inline`) and `no-store`, no inline script or style in any page,
//! cached assets, 404 and 405 pages, a hostile username rendered as text, a
//! page action refused without the CSRF token, the dashboard's 403 for a
//! user without the admin role, buttons for configured external providers,
//! and the config check that pages need sessions. The browser flow is in
//! `browser.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use crate::identity::{identity_config, rampart_cli, register_with_email, PASSWORD};
use serde_json::Value;

const COOKIE: &str = "__Host-rampart_session";

fn pages_config(up: std::net::SocketAddr, db: &str) -> String {
    let base = identity_config(up, db);
    let at = base.find("[upstreams.default]").unwrap();
    let mut text = base;
    text.insert_str(at, "[identity.sessions]\nenabled = true\n[identity.pages]\nenabled = true\n");
    text
}

async fn start(dir: &std::path::Path) -> (rampart::Gateway, String) {
    let db = format!("sqlite://{}?mode=rwc", dir.join("rampart.db").display());
    let up = start_upstream().await;
    let text = pages_config(up, &db);
    let config = dir.join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    (gateway(&text).await, config.to_str().unwrap().to_owned())
}

/// A session for `user`: the session cookie and the CSRF token.
async fn session(gw: &rampart::Gateway, user: &str) -> (String, String) {
    let r = client()
        .post(url(gw, "/auth/session"))
        .form(&[("grant_type", "password"), ("username", user), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find_map(|v| v.strip_prefix(&format!("{COOKIE}=")).map(|v| v.split(';').next().unwrap().to_owned()))
        .unwrap();
    let body: Value = r.json().await.unwrap();
    (format!("{COOKIE}={cookie}"), body["csrf_token"].as_str().unwrap().to_owned())
}

async fn page(gw: &rampart::Gateway, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let no_redirects = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build();
    let mut r = no_redirects.unwrap().get(url(gw, path));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.send().await.unwrap()
}

/// What no page may contain: inline scripts, inline styles, inline handlers;
/// and a form that a native submission would send as a GET (the user's input,
/// passwords included, in the URL), search filters apart.
#[track_caller]
fn assert_no_inline(html: &str) {
    for (i, _) in html.match_indices("<form") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        if tag.contains("id=\"user-search\"") || tag.contains("id=\"audit-form\"") {
            continue;
        }
        assert!(tag.contains("method=\"post\""), "a form without method=post: {tag}");
    }
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
    }
    assert!(!html.contains(" style="), "style attribute");
    assert!(!html.contains("<style"), "style element");
    let lower = html.to_ascii_lowercase();
    for handler in [" onclick=", " onload=", " onsubmit=", " onerror=", "javascript:"] {
        assert!(!lower.contains(handler), "inline handler {handler}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_have_a_strict_csp_and_no_inline_code() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = start(dir.path()).await;
    for path in ["/ui/login", "/ui/register"] {
        let r = page(&gw, path, None).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
        assert_eq!(csp, rampart::web::PAGE_CSP);
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h.get("cache-control").unwrap(), "no-store");
        assert!(h.get("content-type").unwrap().to_str().unwrap().starts_with("text/html"));
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
        let html = r.text().await.unwrap();
        assert_no_inline(&html);
        // Every form field has a label.
        for (i, _) in html.match_indices("<input") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            if tag.contains("type=\"hidden\"") {
                continue;
            }
            let id = tag.split("id=\"").nth(1).unwrap().split('"').next().unwrap();
            assert!(html.contains(&format!("for=\"{id}\"")), "no label for {id}");
        }
        // The assets it names are served, cacheable, with the type they need.
        let css = html.split("href=\"").find(|s| s.contains("/style.css")).unwrap().split('"').next().unwrap();
        let r = page(&gw, css, None).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("cache-control").unwrap().to_str().unwrap().contains("immutable"));
        assert!(r.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/css"));
        let js = html.split("src=\"").find(|s| s.contains("/common.js")).unwrap().split('"').next().unwrap();
        let r = page(&gw, js, None).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/javascript"));
    }
    // An asset of another version, an unknown page: 404 pages; a POST: 405.
    assert_eq!(page(&gw, "/ui/assets/000000000000/common.js", None).await.status(), 404);
    // Password reset is off in this config: its pages are not there.
    assert_eq!(page(&gw, "/ui/forgot", None).await.status(), 404);
    assert_eq!(page(&gw, "/ui/reset?token=x", None).await.status(), 404);
    let r = page(&gw, "/ui/nothing-here", None).await;
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("content-security-policy").unwrap().to_str().unwrap().contains("default-src 'none'"));
    let r = client().post(url(&gw, "/ui/login")).form(&[("a", "b")]).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "GET, HEAD");
    // Account and dashboard without a session: to the login page.
    for path in ["/ui/account", "/ui/admin", "/ui"] {
        let r = page(&gw, path, None).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers().get("location").unwrap(), "/ui/login");
    }
    // The API keeps its own CSP.
    let r = page(&gw, "/.well-known/jwks.json", None).await;
    assert_eq!(r.headers().get("content-security-policy").unwrap(), "default-src 'none'; frame-ancestors 'none'");
    gw.shutdown();
    gw.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_escape_a_hostile_username() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = start(dir.path()).await;
    let evil = "<script>alert(1)</script>\"'&";
    let r = register_with_email(&gw, evil, Some("x\"><img src=x onerror=alert(1)>@example.test"), PASSWORD).await;
    assert_eq!(r.status(), 201);
    let (cookie, _) = session(&gw, evil).await;
    let r = page(&gw, "/ui/account", Some(&cookie)).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"), "{html}");
    assert!(!html.contains("<script>alert(1)"), "{html}");
    assert!(!html.contains("<img src=x"), "{html}");
    assert!(html.contains("x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;@example.test"), "{html}");
    gw.shutdown();
    gw.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_action_without_csrf_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = start(dir.path()).await;
    assert_eq!(register_with_email(&gw, "bea", None, PASSWORD).await.status(), 201);
    let (cookie, csrf) = session(&gw, "bea").await;
    // What the account page's "Create key" sends, without the token: refused.
    let create = || {
        client()
            .post(url(&gw, "/auth/api-keys"))
            .header("cookie", &cookie)
            .header("origin", url(&gw, ""))
            .json(&serde_json::json!({"name": "ci", "password": PASSWORD}))
    };
    let r = create().send().await.unwrap();
    let p = problem(r, 403).await;
    assert_eq!(p["type"], "urn:rampart:problem:csrf");
    // A forged token: refused too; the page's token: made.
    assert_eq!(create().header("x-csrf-token", "forged.token").send().await.unwrap().status(), 403);
    assert_eq!(create().header("x-csrf-token", &csrf).send().await.unwrap().status(), 201);
    gw.shutdown();
    gw.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_admin_dashboard_is_403_for_non_admins() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, cfg) = start(dir.path()).await;
    assert_eq!(register_with_email(&gw, "cy", None, PASSWORD).await.status(), 201);
    let (cookie, _) = session(&gw, "cy").await;
    let r = page(&gw, "/ui/admin", Some(&cookie)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("does not have the admin role"), "{html}");
    assert!(!html.contains("id=\"ban-form\""));
    // The account page works, and offers no dashboard link.
    let r = page(&gw, "/ui/account", Some(&cookie)).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(!html.contains("/ui/admin\""));
    assert!(html.contains("id=\"password-form\"") && html.contains("id=\"delete-form\""));
    // A proof is a password unless its box says it is a code: the page never
    // guesses from the shape (a 16-letter password looks like a backup code).
    for id in ["backup-is-code", "totp-disable-is-code", "delete-is-code"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no {id}");
    }
    let js =
        page(&gw, html.split("src=\"").find(|s| s.contains("/account.js")).unwrap().split('"').next().unwrap(), None)
            .await
            .text()
            .await
            .unwrap();
    assert!(js.contains("isCode.checked") && !js.contains("[a-z2-7]"), "the page guesses codes from their shape");
    assert_no_inline(&html);
    // Given the role, the same session opens the dashboard.
    assert!(rampart_cli(&["user", "set-role", "cy", "admin", "--config", &cfg], "").0);
    let r = page(&gw, "/ui/admin", Some(&cookie)).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"ban-form\"") && html.contains("id=\"rps-chart\""));
    assert_no_inline(&html);
    gw.shutdown();
    gw.wait().await;
}

#[test]
fn web_pages_need_sessions() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let text = identity_config(up, "sqlite::memory:")
        .replace("[upstreams.default]", "[identity.pages]\nenabled = true\n[upstreams.default]");
    let (ok, _, err) = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rampart.toml");
        std::fs::write(&path, &text).unwrap();
        rampart_cli(&["check-config", path.to_str().unwrap()], "")
    };
    assert!(!ok);
    assert!(err.contains("identity.pages.enabled") && err.contains("[identity.sessions]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_login_page_offers_configured_providers() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("rampart.db").display());
    let up = start_upstream().await;
    // The provider is not reached until someone uses it.
    let provider =
        "[identity.oidc.corp]\nissuer = 'http://127.0.0.1:9'\nclient_id = 'gw'\nclient_secret = 'gw-secret'\n\
                    display_name = 'Corp <SSO>'\n";
    let text = pages_config(up, &db).replace("[upstreams.default]", &format!("{provider}[upstreams.default]"));
    let gw = gateway(&text).await;
    let html = page(&gw, "/ui/login", None).await.text().await.unwrap();
    assert!(html.contains("href=\"/auth/oidc/corp/login?return_to=/ui/account\""), "{html}");
    assert!(html.contains("Continue with Corp &lt;SSO&gt;"), "{html}");
    // The account page offers to link it.
    assert_eq!(register_with_email(&gw, "dee", None, PASSWORD).await.status(), 201);
    let (cookie, _) = session(&gw, "dee").await;
    let html = page(&gw, "/ui/account", Some(&cookie)).await.text().await.unwrap();
    assert!(html.contains("data-provider=\"corp\"") && html.contains("id=\"link-list\""), "{html}");
    gw.shutdown();
    gw.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_reset_pages_with_reset_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("rampart.db").display());
    let up = start_upstream().await;
    let reset = format!(
        "[identity.notifier]\nkind = 'log'\npath = '{}'\n[identity.reset]\nlink = 'http://localhost/ui/reset?token={{token}}'\n",
        dir.path().join("notify.log").display()
    );
    let text = pages_config(up, &db).replace("[upstreams.default]", &format!("{reset}[upstreams.default]"));
    let gw = gateway(&text).await;
    let r = page(&gw, "/ui/forgot", None).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("id=\"forgot-form\""));
    // The token from the link lands in the form, escaped.
    let html = page(&gw, "/ui/reset?token=%22%3E%3Cscript%3Ex%3C%2Fscript%3E", None).await.text().await.unwrap();
    assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""), "{html}");
    assert_no_inline(&html);
    // Without a token: a note and a way to ask for one, no form.
    let html = page(&gw, "/ui/reset", None).await.text().await.unwrap();
    assert!(!html.contains("id=\"reset-form\"") && html.contains("/ui/forgot"), "{html}");
    gw.shutdown();
    gw.wait().await;
}

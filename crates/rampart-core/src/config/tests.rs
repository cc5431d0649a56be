#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const BASE: &str = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n";

fn no_files(_: &str) -> Result<String, String> {
    Err("no files in tests".into())
}

#[track_caller]
fn check_err(text: &str, env: &[(&str, &str)], expected: &[&str]) {
    let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let err = load(text, &env, &no_files).expect_err("config should be refused").to_string();
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
}

/// A catch-all `trusted_proxies` entry would let every client spoof its
/// address: refused, naming the entry.
#[test]
fn a_catch_all_trusted_proxy_is_refused() {
    for all in ["0.0.0.0/0", "::/0", "10.0.0.0/0", "::ffff:0:0/96", "::ffff:10.0.0.0/96"] {
        check_err(
            &format!("{BASE}[server]\ntrusted_proxies = ['10.0.0.0/8', '{all}']\n"),
            &[],
            &["server.trusted_proxies[1]", "trusts every address"],
        );
    }
    let text = format!("{BASE}[server]\ntrusted_proxies = ['10.0.0.0/8', '::1']\n");
    assert!(load(&text, &[], &no_files).is_ok());
}

/// With credentials, an origin wildcard over a public suffix (a top-level
/// domain, a registry's second level, a hosting platform's domain) is
/// refused; without them, or over a registrable domain, it is accepted.
#[test]
fn a_credentialed_wildcard_over_a_public_suffix_is_refused() {
    let cors = |origin: &str, credentials: bool| {
        format!(
            "{BASE}[[routes]]\npath = '/**'\n[routes.cors]\nallow_origins = ['https://app.example.com', '{origin}']\nallow_credentials = {credentials}\n"
        )
    };
    for origin in [
        "https://*.com",
        "http://*.dev:*",
        "https://*.co.uk",
        "https://*.CO.UK",
        "https://*.github.io",
        "https://*.internal",
    ] {
        check_err(&cors(origin, true), &[], &["routes[0].cors.allow_origins[1]", "public suffix"]);
        assert!(load(&cors(origin, false), &[], &no_files).is_ok(), "{origin} without credentials");
    }
    for origin in ["https://*.example.com", "http://*.localhost:*", "https://*.example.co.uk", "https://*.me.github.io"]
    {
        assert!(load(&cors(origin, true), &[], &no_files).is_ok(), "{origin}");
    }
}

/// A GET route takes HEAD too: frameworks run the GET handler for it, so
/// HEAD falling through to a looser route would escape the GET's policy.
#[test]
fn a_get_route_takes_head_too() {
    let text = format!(
        "{BASE}[[routes]]\nname = 'strict'\npath = '/s'\nmethods = ['GET']\n[[routes]]\nname = 'rest'\npath = '/**'\n"
    );
    let policy = load(&text, &[], &no_files).unwrap();
    for (method, route) in [(http::Method::GET, "strict"), (http::Method::HEAD, "strict"), (http::Method::POST, "rest")]
    {
        assert_eq!(&*policy.route(None, &method, "/s").unwrap().name, route, "{method}");
    }
}

#[test]
fn minimal_config_gets_a_catch_all_route() {
    let policy = load(BASE, &[], &no_files).unwrap();
    assert_eq!(policy.routes.len(), 1);
    let r = policy.route(Some("x"), &http::Method::GET, "/anything/here").unwrap();
    assert_eq!(&*r.name, "default");
    assert_eq!(r.body_limit, compile::DEFAULT_BODY_LIMIT);
    assert_eq!(policy.upstreams[r.upstream].targets[0].authority.as_str(), "127.0.0.1:8000");
    assert_eq!(policy.metrics_listen.unwrap().port(), 9090);
}

#[test]
fn first_matching_route_wins_and_policy_merges_defaults() {
    let text = format!(
        "{BASE}
[upstreams.other]
url = 'https://api.example.com/base/'
[defaults]
body_limit = '1 KiB'
content_types = ['application/json']
security_headers = {{ frame_options = 'SAMEORIGIN' }}
[[routes]]
name = 'uploads'
path = '/api/upload/**'
methods = ['PUT']
body_limit = '5MiB'
content_types_by_method = {{ PUT = ['application/octet-stream'] }}
upstream = 'other'
security_headers = {{ content_security_policy = '' }}
[[routes]]
name = 'api'
path = '/api/**'
"
    );
    let policy = load(&text, &[], &no_files).unwrap();
    let put = policy.route(None, &http::Method::PUT, "/api/upload/x").unwrap();
    assert_eq!(&*put.name, "uploads");
    assert_eq!(put.body_limit, 5 * 1024 * 1024);
    assert!(put.content_types.allows(&http::Method::PUT, Some("application/octet-stream")));
    assert!(!put.content_types.allows(&http::Method::PUT, Some("application/json")));
    let up = &policy.upstreams[put.upstream].targets[0];
    assert!(up.https);
    assert_eq!(up.base_path, "/base");
    let names: Vec<&str> = put.security_headers.always.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"content-security-policy"));
    let xfo = put.security_headers.always.iter().find(|(n, _)| n == "x-frame-options").unwrap();
    assert_eq!(xfo.1, "SAMEORIGIN");

    let post = policy.route(None, &http::Method::POST, "/api/upload/x").unwrap();
    assert_eq!(&*post.name, "api");
    assert_eq!(post.body_limit, 1024);
    assert!(policy.route(None, &http::Method::GET, "/other").is_none());
}

#[test]
fn unknown_keys_get_suggestions_and_lines() {
    check_err(
        &format!("{BASE}[server]\nlisten = '127.0.0.1:1'\ntrusted_proxy = []\n"),
        &[],
        &["server.trusted_proxy (line 6)", "did you mean `trusted_proxies`?"],
    );
    check_err(
        &format!("{BASE}[[routes]]\npath = '/a'\nbody_limt = '1KiB'\n"),
        &[],
        &["routes[0].body_limt (line 6)", "did you mean `body_limit`?"],
    );
    check_err(&format!("{BASE}[sever]\n"), &[], &["did you mean `server`?"]);
}

#[test]
fn semantic_errors_name_field_and_line_and_are_all_reported() {
    check_err(
        &format!(
            "{BASE}[server]\nlisten = 'nope'\ntrusted_proxies = ['10.0.0.0/8', 'bad']\n[[routes]]\npath = 'api'\nupstream = 'defualt'\n[[routes]]\npath = '/b'\n[routes.cors]\nallow_origins = ['*']\nallow_credentials = true\n"
        ),
        &[],
        &[
            "server.listen (line 5)",
            "server.trusted_proxies[1] (line 6)",
            "routes[0].path (line 8)",
            "did you mean `default`?",
            "routes[1].cors.allow_origins[0] (line 13)",
        ],
    );
}

#[test]
fn type_errors_and_syntax_errors_have_lines() {
    check_err(&format!("{BASE}[server]\nmax_header_count = 'many'\n"), &[], &["server.max_header_count (line 5)"]);
    check_err("version = 1\n[server\n", &[], &["line 2"]);
    check_err(&format!("{BASE}[server]\nheader_read_timeout = '10 parsecs'\n"), &[], &["server.header_read_timeout"]);
}

#[test]
fn ipv6_prefix_is_checked_and_defaults_to_64() {
    use crate::client_ip::ClientGrouping;
    assert_eq!(load(BASE, &[], &no_files).unwrap().server.clients, ClientGrouping::new(64));
    let policy = load(&format!("{BASE}[server]\nipv6_prefix = 56\n"), &[], &no_files).unwrap();
    assert_eq!(policy.server.clients.ipv6_prefix(), 56);
    let policy = load(&format!("{BASE}[server]\nipv6_prefix = 128\n"), &[], &no_files).unwrap();
    assert_eq!(policy.server.clients.ipv6_prefix(), 128);
    for bad in ["0", "129", "4294967295"] {
        check_err(
            &format!("{BASE}[server]\nipv6_prefix = {bad}\n"),
            &[],
            &["server.ipv6_prefix (line 5)", "between 1 and 128"],
        );
    }
    check_err(&format!("{BASE}[server]\nipv6_prefix = -1\n"), &[], &["server.ipv6_prefix (line 5)"]);
    check_err(BASE, &[("RAMPART_SERVER__IPV6_PREFIX", "200")], &["server.ipv6_prefix", "RAMPART_SERVER__IPV6_PREFIX"]);
}

#[test]
fn version_is_required_and_checked() {
    check_err("[upstreams.default]\nurl='http://a'\n", &[], &["version", "add `version = 1`"]);
    check_err("version = 99\n", &[], &["version (line 1)", "newer"]);
    check_err("version = 0\n", &[], &["not a config version"]);
    check_err("version = 'one'\n", &[], &["must be an integer"]);
}

#[test]
fn env_overrides_apply_and_errors_name_the_variable() {
    let env = vec![
        ("RAMPART_SERVER__LISTEN".to_string(), "127.0.0.1:9999".to_string()),
        ("RAMPART_UPSTREAMS__DEFAULT__URL".to_string(), "http://10.1.1.1:81".to_string()),
    ];
    let policy = load(BASE, &env, &no_files).unwrap();
    assert_eq!(policy.server.listen.port(), 9999);
    assert_eq!(policy.upstreams[0].targets[0].authority.as_str(), "10.1.1.1:81");

    check_err(BASE, &[("RAMPART_SERVER__LISTEN", "garbage")], &["server.listen (set by RAMPART_SERVER__LISTEN)"]);
    check_err(BASE, &[("RAMPART_SERVER__LISTN", "x")], &["set by RAMPART_SERVER__LISTN", "did you mean `listen`"]);

    // Names are lowercased, and meet the file's own spelling of a name.
    let text = "version = 1\n[upstreams.Backend]\nurl = 'http://10.0.0.1:80'\n[[routes]]\npath = '/**'\nupstream = 'Backend'\n";
    let env = vec![("RAMPART_UPSTREAMS__BACKEND__URL".to_string(), "http://10.9.9.9:81".to_string())];
    let policy = load(text, &env, &no_files).unwrap();
    assert_eq!(policy.upstreams.len(), 1);
    assert_eq!(policy.upstreams[0].targets[0].authority.as_str(), "10.9.9.9:81");
    // An error in such a value names the variable, not the file's line.
    check_err(text, &[("RAMPART_UPSTREAMS__BACKEND__URL", "not a url")], &["set by RAMPART_UPSTREAMS__BACKEND__URL"]);

    // Applied in path order, whatever the environment's: no gap in an array.
    let env = vec![
        ("RAMPART_ROUTES__1__PATH".to_string(), "/b/**".to_string()),
        ("RAMPART_ROUTES__10__PATH".to_string(), "/k/**".to_string()),
        ("RAMPART_ROUTES__0__PATH".to_string(), "/a/**".to_string()),
    ];
    let mut env = env;
    for i in 2..10 {
        env.push((format!("RAMPART_ROUTES__{i}__PATH"), format!("/r{i}/**")));
    }
    let policy = load(BASE, &env, &no_files).unwrap();
    assert_eq!(policy.routes.len(), 11);
    assert_eq!(&*policy.routes[10].name, "routes[10]");
    // An error past the first element still names its variable.
    check_err(
        BASE,
        &[
            ("RAMPART_ROUTES__1__TIMEOUT", "soon"),
            ("RAMPART_ROUTES__0__PATH", "/a/**"),
            ("RAMPART_ROUTES__1__PATH", "/b"),
        ],
        &["set by RAMPART_ROUTES__1__TIMEOUT"],
    );
}

/// A secret that looks like a number is a string, and no error quotes a
/// secret's value (errors reach logs, the audit log and the reload answer).
#[test]
fn errors_never_quote_secret_values() {
    let env = [("RAMPART_METRICS__ADMIN_TOKEN".to_string(), "80418273645".to_string())];
    let policy = load(&format!("{BASE}[metrics]\n"), &env, &no_files).unwrap();
    assert_eq!(policy.admin_token.as_ref().map(|t| t.expose()), Some("80418273645"));

    let refused = |text: &str| load(text, &[], &no_files).expect_err("refused").to_string();
    let err = refused(&format!("{BASE}[metrics]\nadmin_token = 80418273645\n"));
    assert!(err.contains("metrics.admin_token") && !err.contains("80418273645"), "{err}");
    let err =
        refused(&format!("{BASE}[defaults.request_headers]\nset = {{ authorization = \"Bearer s\\u0001cret\" }}\n"));
    assert!(err.contains("authorization") && !err.contains("cret"), "{err}");
    // Other values are still quoted where that helps.
    let err = refused(&format!("{BASE}[server]\nworkers = 'many'\n"));
    assert!(err.contains("many"), "{err}");
}

#[test]
fn secret_files_feed_values() {
    let text = "version = 1\n[upstreams.default]\nurl_file = '/run/secrets/up'\n";
    let policy = load(text, &[], &|p| {
        assert_eq!(p, "/run/secrets/up");
        Ok("http://127.0.0.2:7000\n".into())
    })
    .unwrap();
    assert_eq!(policy.upstreams[0].targets[0].authority.as_str(), "127.0.0.2:7000");
    check_err(text, &[], &["upstreams.default.url_file (line 3)", "cannot read"]);
}

#[test]
fn defaults_may_not_match_and_upstreams_must_exist() {
    check_err(&format!("{BASE}[defaults]\npath = '/x'\n"), &[], &["defaults.path (line 5)", "[[routes]]"]);
    check_err("version = 1\n", &[], &["no upstreams are defined"]);
    check_err("version = 1\n[upstreams.default]\nurl = 'ftp://x'\n", &[], &["upstreams.default.url (line 3)"]);
    check_err("version = 1\n[upstreams.default]\nurl = 'http://u:p@x'\n", &[], &["credentials"]);
    check_err(
        "version = 1\n[upstreams.default]\nurl = 'http://x'\nhttp2 = true\npreserve_host = true\n",
        &[],
        &["upstreams.default.preserve_host", "http2"],
    );
}

#[test]
fn header_rewrites_refuse_hop_by_hop_and_bad_values() {
    check_err(
        &format!("{BASE}[defaults.request_headers]\nset = {{ connection = 'close', 'x-ok' = \"bad\\u0001\" }}\n"),
        &[],
        &["defaults.request_headers.set.connection", "hop-by-hop", "defaults.request_headers.set.x-ok"],
    );
}

#[test]
fn cors_wildcard_headers_with_credentials_refused() {
    check_err(
        &format!("{BASE}[defaults.cors]\nallow_origins = ['https://a.test']\nallow_headers = ['*']\nallow_credentials = true\n"),
        &[],
        &["defaults.cors.allow_headers[0]"],
    );
    check_err(&format!("{BASE}[defaults.cors]\nallow_origins = ['null']\n"), &[], &["defaults.cors.allow_origins[0]"]);
}

#[test]
fn hostile_config_text_never_panics() {
    let samples = [
        "".to_string(),
        "\0\0\0".to_string(),
        "version = 1\n".repeat(3),
        format!("version = 1\n{}", "[a]\n".repeat(1000)),
        format!("version = 1\nx = {}", "[".repeat(5000)),
        "version = 9223372036854775807".to_string(),
        "version = -1".to_string(),
    ];
    for s in samples {
        let _ = load(&s, &[], &no_files);
    }
}

/// Revocations are kept as long as the longest-lived revocable token: a
/// session's token may outlive an access token.
#[test]
fn revocations_outlast_every_revocable_token() {
    let ident = |extra: &str| {
        format!(
            "{BASE}[identity]\nenabled = true\nissuer = 'https://x.test'\nsecret_key = '0123456789abcdef0123456789abcdef'\n\
             access_ttl = '5m'\n{extra}\n"
        )
    };
    let life = |extra: &str| load(&ident(extra), &[], &no_files).unwrap().identity.unwrap().revocable_token_life();
    assert_eq!(life(""), std::time::Duration::from_secs(300));
    assert_eq!(life("[identity.sessions]\nenabled = true\ntoken_ttl = '30m'"), std::time::Duration::from_secs(1800));
    assert_eq!(life("[identity.sessions]\nenabled = true\ntoken_ttl = '1m'"), std::time::Duration::from_secs(300));
}

/// Two ways to undo [identity]'s guarantees in config are refused: its
/// issuer listed again in [[auth.issuers]] (tokens then verified there,
/// without revocations), and the internal JWT made for its API audience.
#[test]
fn identity_tokens_cannot_be_verified_elsewhere_or_minted_as_access_tokens() {
    let ident = "[identity]\nenabled = true\nissuer = 'https://x.test'\naudience = 'api'\n\
                 secret_key = '0123456789abcdef0123456789abcdef'\n";
    let issuer = "[[auth.issuers]]\nissuer = 'https://x.test/'\naudiences = ['api']\n\
                  secret = 'another-secret-that-is-32-bytes-long'\n";
    check_err(&format!("{BASE}{ident}{issuer}"), &[], &["auth.issuers[0].issuer", "[identity]'s own issuer"]);
    let headers = "[auth.headers]\ninternal_jwt = 'x-rampart-jwt'\ninternal_jwt_audience = 'api'\n";
    check_err(&format!("{BASE}{ident}{headers}"), &[], &["auth.headers.internal_jwt_audience", "access token"]);
    let fine = "[auth.headers]\ninternal_jwt = 'x-rampart-jwt'\n";
    assert!(load(&format!("{BASE}{ident}{fine}"), &[], &no_files).is_ok());
}

#[test]
fn identity_signing_settings_are_checked() {
    let ident = |extra: &str| {
        format!(
            "{BASE}[identity]\nenabled = true\nissuer = 'https://x.test'\nsecret_key = '0123456789abcdef0123456789abcdef'\n{extra}\n"
        )
    };
    let signing = |extra: &str| load(&ident(extra), &[], &no_files).unwrap().identity.unwrap().signing.clone();
    assert!(matches!(signing(""), identity::Signing::Generated(crate::token::Alg::EdDSA)));
    assert!(matches!(signing("algorithm = 'ES256'"), identity::Signing::Generated(crate::token::Alg::ES256)));
    check_err(&ident("algorithm = 'none'"), &[], &["identity.algorithm", "EdDSA"]);
    check_err(&ident("algorithm = 'RS256'"), &[], &["identity.signing_key", "RSA keys are not generated"]);
    check_err(&ident("algorithm = 'HS256'"), &[], &["identity.hs256_secret", "at least 32 bytes"]);
    check_err(&ident("algorithm = 'HS256'\nhs256_secret = 'short'"), &[], &["identity.hs256_secret"]);
    check_err(&ident("hs256_secret = '0123456789abcdef0123456789abcdef'"), &[], &["only with algorithm = \"HS256\""]);
    check_err(&ident("algorithm = 'ES256'\nsigning_key = 'not a pem'"), &[], &["identity.signing_key", "PKCS#8"]);
    check_err(&ident("key_id = 'mine'"), &[], &["identity.key_id"]);
    let pem = include_str!("../token/testdata/rsa2048.pem");
    let s = signing(&format!("algorithm = 'RS256'\nsigning_key = '''{pem}'''\nkey_id = 'rsa-1'"));
    assert!(
        matches!(s, identity::Signing::Pem { alg: crate::token::Alg::RS256, kid: Some(ref k), .. } if k == "rsa-1")
    );
    // An Ed25519 key is not an RS256 key.
    let ed = include_str!("../token/testdata/ed25519.pem");
    check_err(&ident(&format!("algorithm = 'RS256'\nsigning_key = '''{ed}'''")), &[], &["identity.signing_key"]);
    let hs = signing("algorithm = 'HS256'\nhs256_secret = '0123456789abcdef0123456789abcdef'");
    assert!(matches!(hs, identity::Signing::Hs256 { .. }));
    // The secret never shows in a debug print of the settings.
    assert!(!format!("{hs:?}").contains("0123456789abcdef"));
}

#[test]
fn the_internal_jwt_header_needs_identity_and_sane_settings() {
    check_err(
        &format!("{BASE}[auth.headers]\ninternal_jwt = 'x-rampart-jwt'\n"),
        &[],
        &["auth.headers.internal_jwt", "[identity]"],
    );
    let ident =
        "[identity]\nenabled = true\nissuer = 'https://x.test'\nsecret_key = '0123456789abcdef0123456789abcdef'\n";
    check_err(
        &format!("{BASE}{ident}[auth.headers]\ninternal_jwt = 'x-rampart-jwt'\ninternal_jwt_ttl = '2h'\n"),
        &[],
        &["auth.headers.internal_jwt_ttl"],
    );
    check_err(
        &format!("{BASE}{ident}[auth.headers]\ninternal_jwt = 'bad header'\n"),
        &[],
        &["auth.headers.internal_jwt"],
    );
    let p = load(&format!("{BASE}{ident}[auth.headers]\ninternal_jwt = 'X-Rampart-Jwt'\n"), &[], &no_files).unwrap();
    let j = p.auth.headers.internal_jwt.as_ref().unwrap();
    assert_eq!((j.header.as_str(), j.ttl_secs, j.audience.as_str()), ("x-rampart-jwt", 60, "rampart-upstream"));
    assert_eq!(p.auth.headers.all().count(), 7);
    assert_eq!(p.auth.headers.issuer.as_str(), "x-rampart-issuer");
}

#[test]
fn limit_names_cannot_collide() {
    // A named limit spelled like route `api`'s first inline limit.
    check_err(
        &format!(
            "{BASE}[limits.named.\"api#0\"]\nby = 'ip'\nrate = '1/s'\n\
             [[routes]]\nname = 'api'\npath = '/**'\nlimits = [{{ by = 'ip', rate = '1/s' }}]\n"
        ),
        &[],
        &["limits.named.api#0 (line 4)", "cannot contain `#`"],
    );
    // A route name with `#` could forge another route's inline limit names.
    check_err(
        &format!("{BASE}[[routes]]\nname = 'a#1'\npath = '/**'\n"),
        &[],
        &["routes[0].name", "cannot contain `#`"],
    );
    // A route named `defaults` keeps its own inline limits apart from the
    // limits it would otherwise inherit from `[defaults]`.
    let text = format!(
        "{BASE}[defaults]\nlimits = [{{ by = 'ip', rate = '1/s' }}]\n\
         [[routes]]\nname = 'defaults'\npath = '/own/**'\nlimits = [{{ by = 'ip', rate = '2/s' }}]\n\
         [[routes]]\nname = 'other'\npath = '/**'\n"
    );
    let policy = load(&text, &[], &no_files).unwrap();
    let own = &policy.routes[0].limits[0];
    let inherited = &policy.routes[1].limits[0];
    assert_eq!(&*own.name, "defaults#0");
    assert_eq!(&*inherited.name, "#defaults#0");
    let mut names: Vec<&str> = policy.limits.all.iter().map(|l| &*l.name).collect();
    names.sort_unstable();
    assert_eq!(names, ["#defaults#0", "defaults#0"], "two limits, two names");
}

#[test]
fn redis_key_prefix_cannot_hold_a_hash_tag() {
    check_err(
        &format!("{BASE}[redis]\nurl = 'redis://127.0.0.1/'\nkey_prefix = 'app{{x}}:'\n"),
        &[],
        &["redis.key_prefix", "cannot contain `{` or `}`"],
    );
    load(&format!("{BASE}[redis]\nurl = 'redis://127.0.0.1/'\nkey_prefix = 'app:'\n"), &[], &no_files).unwrap();
}

#[test]
fn redis_tls_settings_need_a_rediss_url_and_verification() {
    check_err(
        &format!(
            "{BASE}[redis]\nurl = 'redis://h/'\nca_file = 'ca.pem'\nclient_cert = 'c.pem'\nclient_key = 'k.pem'\n"
        ),
        &[],
        &["redis.ca_file", "redis.client_cert", "redis.client_key", "only with TLS"],
    );
    let insecure = format!("{BASE}[redis]\nurl = 'rediss://:s3cret@h/#insecure'\n");
    check_err(&insecure, &[], &["redis.url", "always verified"]);
    let err = load(&insecure, &[], &no_files).unwrap_err().to_string();
    assert!(!err.contains("s3cret"), "the url's password is never echoed: {err}");
    check_err(
        &format!("{BASE}[redis]\nurl = 'rediss://h/'\nclient_cert = 'c.pem'\n"),
        &[],
        &["redis.client_cert", "give both or neither"],
    );
    check_err(&format!("{BASE}[redis]\nurl = 'rediss://h/'\nca_fil = 'ca.pem'\n"), &[], &["ca_file"]);
    let text = format!(
        "{BASE}[redis]\nurl = 'rediss://h:6380/'\nca_file = 'ca.pem'\nclient_cert = 'c.pem'\nclient_key = 'k.pem'\n"
    );
    let policy = load(&text, &[], &no_files).unwrap();
    let redis = policy.redis.unwrap();
    assert_eq!(redis.ca_file.as_deref(), Some("ca.pem"));
    assert_eq!((redis.client_cert.as_deref(), redis.client_key.as_deref()), (Some("c.pem"), Some("k.pem")));
    let env = [("RAMPART_REDIS__CA_FILE".to_owned(), "/etc/redis-ca.pem".to_owned())];
    let policy = load(&format!("{BASE}[redis]\nurl = 'rediss://h/'\n"), &env, &no_files).unwrap();
    assert_eq!(policy.redis.unwrap().ca_file.as_deref(), Some("/etc/redis-ca.pem"));
}

#[test]
fn redis_sentinels_name_a_master_and_are_host_ports() {
    check_err(
        &format!(
            "{BASE}[redis]\nurl = 'redis://h/'\nsentinels = ['10.0.0.1:26379', 'nope', 'h:0', 'a:b:1', '[zz]:1']\n"
        ),
        &[],
        &[
            "redis.sentinel_master",
            "give both or neither",
            "redis.sentinels[1]",
            "redis.sentinels[2]",
            "redis.sentinels[3]",
            "redis.sentinels[4]",
        ],
    );
    check_err(
        &format!("{BASE}[redis]\nurl = 'redis+unix:///run/r.sock'\nsentinels = ['s:26379']\nsentinel_master = 'm'\n"),
        &[],
        &["redis.url", "with sentinels"],
    );
    let text = format!(
        "{BASE}[redis]\nurl = 'rediss://:pw@primary/2'\nsentinels = ['s1.internal:26379', '[::1]:26380']\nsentinel_master = 'mymaster'\nsentinel_password_file = 'sp'\n"
    );
    let files = |p: &str| if p == "sp" { Ok("sentinel-secret\n".to_owned()) } else { Err("no such file".to_owned()) };
    let redis = load(&text, &[], &files).unwrap().redis.unwrap();
    assert_eq!(redis.sentinel_master, "mymaster");
    assert_eq!(redis.sentinel_password.expose(), "sentinel-secret");
    let addrs: Vec<_> = redis.sentinels.iter().map(|s| compile::host_port(s).unwrap()).collect();
    assert_eq!(addrs, [("s1.internal".to_owned(), 26379), ("::1".to_owned(), 26380)]);
    // TLS to the sentinels alone (a plain primary) may use the TLS files.
    check_err(
        &format!("{BASE}[redis]\nurl = 'redis://h/'\nsentinel_tls = true\n"),
        &[],
        &["redis.sentinel_tls", "only with sentinels"],
    );
    let text = format!(
        "{BASE}[redis]\nurl = 'redis://primary/'\nsentinels = ['s:26379']\nsentinel_master = 'm'\nsentinel_tls = true\nca_file = 'ca.pem'\n"
    );
    assert!(load(&text, &[], &no_files).unwrap().redis.unwrap().sentinel_tls);
}

#[test]
fn redis_cluster_nodes_are_host_ports_with_database_0_and_no_sentinels() {
    check_err(
        &format!("{BASE}[redis]\nurl = 'redis://h/'\ncluster_nodes = ['10.0.0.1:6379', 'nope', '[::1]:0']\n"),
        &[],
        &["redis.cluster_nodes[1]", "redis.cluster_nodes[2]", "host:port"],
    );
    for (url, why) in [
        ("redis://h/3", "only database 0"),
        ("rediss://:pw@h:6380/1?protocol=resp3", "only database 0"),
        ("redis+unix:///run/r.sock", "cluster nodes are TCP addresses"),
    ] {
        check_err(&format!("{BASE}[redis]\nurl = '{url}'\ncluster_nodes = ['n:6379']\n"), &[], &["redis.url", why]);
    }
    check_err(
        &format!("{BASE}[redis]\nurl = 'redis://h/'\ncluster_nodes = ['n:6379']\nsentinels = ['s:26379']\nsentinel_master = 'm'\n"),
        &[],
        &["redis.cluster_nodes", "cannot go with sentinels"],
    );
    // Nodes (or sentinels) without a url would be no Redis at all.
    for section in ["cluster_nodes = ['n:6379']", "sentinels = ['s:26379']\nsentinel_master = 'm'"] {
        check_err(&format!("{BASE}[redis]\n{section}\n"), &[], &["redis.url", "is required with"]);
    }
    let env = [("RAMPART_REDIS__CLUSTER_NODES".to_owned(), "['a:7000', 'b.internal:7001']".to_owned())];
    for url in ["redis://:pw@seed", "rediss://u:pw@seed:6380/0", "redis://seed:6379/"] {
        let redis = load(&format!("{BASE}[redis]\nurl = '{url}'\n"), &env, &no_files).unwrap().redis.unwrap();
        let nodes: Vec<_> = redis.cluster_nodes.iter().map(|s| compile::host_port(s).unwrap()).collect();
        assert_eq!(nodes, [("a".to_owned(), 7000), ("b.internal".to_owned(), 7001)], "{url}");
    }
}

#[test]
fn redis_url_databases_are_read_from_the_path_only() {
    for (url, db) in [
        ("redis://h/3", Some("3")),
        ("redis://h", None),
        ("redis://h/", None),
        ("redis://h:6379/0", Some("0")),
        ("rediss://u:pw@h:6380/1?protocol=resp3", Some("1")),
        ("redis://:p%2F1@h/", None),
        ("redis://:p@h/?db=2", None),
        ("redis://[::1]:6379/12#x", Some("12")),
        ("redis://h/0/extra", Some("0/extra")),
        ("redis://", None),
        ("redis://h\u{0}/5", None),
        ("not a url", None),
        ("", None),
    ] {
        assert_eq!(compile::url_database(url).as_deref(), db, "{url:?}");
    }
}

#[test]
fn abuse_class_floors_name_known_classes() {
    check_err(
        &format!("{BASE}[abuse]\nclass_min_rate = {{ logins = 5.0, auth_failures = -1.0 }}\n"),
        &[],
        &["abuse.class_min_rate.logins", "not a class", "abuse.class_min_rate.auth_failures", "zero or more"],
    );
    let p = load(&format!("{BASE}[abuse]\nclass_min_rate = {{ auth_failures = 5.0 }}\n"), &[], &no_files).unwrap();
    assert_eq!(p.abuse.min_rate("auth_failures"), 5.0);
    assert_eq!(p.abuse.min_rate("requests"), 100.0);
}

#[test]
fn server_workers_default_to_one_per_cpu_and_are_bounded() {
    let policy = load(BASE, &[], &no_files).unwrap();
    assert_eq!(policy.server.workers, 0, "0 asks for one per CPU");
    let text = "version = 1\n[server]\nworkers = 3\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n";
    assert_eq!(load(text, &[], &no_files).unwrap().server.workers, 3);
    let env = [("RAMPART_SERVER__WORKERS", "2")];
    let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(load(BASE, &env, &no_files).unwrap().server.workers, 2);
    check_err(
        "version = 1\n[server]\nworkers = 5000\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n",
        &[],
        &["server.workers", "at most 1024"],
    );
    check_err(
        "version = 1\n[server]\nworkers = -1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n",
        &[],
        &["server.workers"],
    );
}

#[test]
fn routes_an_earlier_route_covers_are_refused() {
    // The classic: a public catch-all above the admin routes.
    check_err(
        &format!(
            "{BASE}[[routes]]\nname = 'api'\npath = '/api/**'\n\
             [[routes]]\nname = 'admin'\npath = '/api/admin/**'\nauth = 'required'\n"
        ),
        &[],
        &["routes[1].path (line 9)", "can never match", "route `api` (`/api/**`)"],
    );
    for (first, second) in [
        ("path = '/**'", "path = '/x'"),
        ("path = '/a/*/c'", "path = '/a/b/c'"),
        ("path = '/a/{id}'", "path = '/a/*'"),
        ("path = '/a/**'", "path = '/a'"),
        ("path = '/x'\nmethods = ['GET', 'POST']", "path = '/x'\nmethods = ['GET']"),
        ("path = '/x'\nhosts = ['*.example.com']", "path = '/x'\nhosts = ['a.example.com', '*.b.example.com']"),
        ("path = '/x'", "path = '/x'\nhosts = ['a.example.com']\nmethods = ['GET']"),
    ] {
        let text = format!("{BASE}[[routes]]\nname = 'one'\n{first}\n[[routes]]\nname = 'two'\n{second}\n");
        check_err(&text, &[], &["routes[1].path", "can never match"]);
    }
    // Overlapping but not covering: both stay reachable.
    for (first, second) in [
        ("path = '/api/admin/**'", "path = '/api/**'"),
        ("path = '/a/*'", "path = '/a/**'"),
        ("path = '/a/*'", "path = '/a/'"),
        ("path = '/a/b'", "path = '/a/*'"),
        ("path = '/x'\nmethods = ['GET']", "path = '/x'"),
        ("path = '/x'\nhosts = ['a.example.com']", "path = '/x'"),
        ("path = '/x'\nhosts = ['*.example.com']", "path = '/x'\nhosts = ['example.com']"),
        ("path = '/**'\nhosts = ['a.example.com']", "path = '/x'\nhosts = ['b.example.com']"),
    ] {
        let text = format!("{BASE}[[routes]]\nname = 'one'\n{first}\n[[routes]]\nname = 'two'\n{second}\n");
        assert!(load(&text, &[], &no_files).is_ok(), "{first} / {second}: {:?}", load(&text, &[], &no_files).err());
    }
}

#[test]
fn limits_keyed_by_the_caller_need_a_caller() {
    check_err(
        &format!(
            "{BASE}[[routes]]\npath = '/public/**'\nauth = 'none'\nlimits = [{{ by = 'user', rate = '10/min' }}]\n"
        ),
        &[],
        &["routes[0].limits[0]", "auth = \"none\""],
    );
    // Inherited from [defaults], they simply do not apply to a public route.
    let text = format!(
        "{BASE}[auth]\naudiences = ['a']\n[[auth.issuers]]\nissuer = 'https://i'\nsecret = '{}'\n\
         [defaults]\nauth = 'required'\nlimits = [{{ by = 'user', rate = '10/min' }}]\n\
         [[routes]]\npath = '/healthz'\nauth = 'none'\n[[routes]]\npath = '/**'\n",
        "s".repeat(32)
    );
    assert!(load(&text, &[], &no_files).is_ok(), "{:?}", load(&text, &[], &no_files).err());
}

/// `case_sensitive_paths = false` and `strict_trailing_slash = false`: every
/// spelling of a path meets the route its folded form matches, wildcards,
/// parameters and letters beyond ASCII included; a route the folded table
/// covers is refused as it would be written folded.
#[test]
fn loose_route_matching_folds_paths_and_patterns_alike() {
    let text = |routes: &str| {
        format!(
            "version = 1\n[server]\ncase_sensitive_paths = false\nstrict_trailing_slash = false\n\
             [upstreams.default]\nurl = 'http://127.0.0.1:9'\n{routes}"
        )
    };
    let routes = "[[routes]]\nname = 'user'\npath = '/Users/{id}/Ǆ'\n\
                  [[routes]]\nname = 'files'\npath = '/Files/*/**'\n\
                  [[routes]]\nname = 'greek'\npath = '/ΟΔΟΣ'\n\
                  [[routes]]\nname = 'rest'\npath = '/**'\n";
    let policy = load(&text(routes), &[], &no_files).unwrap();
    let route = |path: &str| {
        let key = policy.server.route_matching.key(path);
        policy.route(None, &http::Method::GET, &key).map(|r| r.name.to_string())
    };
    for (path, want) in [
        ("/users/7/ǆ", "user"),
        ("/USERS/Abc/ǅ/", "user"),
        ("/files/a/b/C", "files"),
        ("/FILES/x", "files"),
        ("/οδος", "greek"),
        ("/οδοσ/", "greek"),
        ("/ΟΔΟς", "greek"),
        ("/users/7", "rest"),
    ] {
        assert_eq!(route(path).as_deref(), Some(want), "{path}");
    }
    let err = load(&text("[[routes]]\npath = '/api/**'\n[[routes]]\npath = '/API/Admin/**'\n"), &[], &no_files)
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes[1].path") && err.contains("can never match"), "{err}");
    let err = load(&text("[[routes]]\npath = '/api/'\n"), &[], &no_files).unwrap_err().to_string();
    assert!(err.contains("strict_trailing_slash"), "{err}");
}

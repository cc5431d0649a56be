//! The OpenAPI 3.1 document of the identity and admin APIs, served at
//! `GET {prefix}/openapi.json` (with the configured prefix in every path)
//! and checked against the running gateway by schemathesis in
//! `scripts/test`: no 5xx, and every answer matches its schema.
//!
//! Written here rather than derived from handler annotations: the endpoints
//! are dispatched by hand inside one layer, not as framework routes, so a
//! derive crate would only add a second description of the same paths. Only
//! the parts the config turns on are described (registration, reset,
//! sessions, passkeys, API keys, external logins).
//!
//! Every error is an RFC 9457 problem (`application/problem+json`, the
//! `default` response of each operation), except the OAuth2 token endpoint's
//! RFC 6749 errors (`application/json`).

use serde_json::{json, Map, Value};

use super::IdentityService;

fn problem_default() -> Value {
    json!({
        "description": "An RFC 9457 problem (refusals from any layer: authentication, CSRF, limits, guards, …)",
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn no_content(description: &str) -> Value {
    json!({ "description": description })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn optional_body(schema: Value) -> Value {
    json!({ "required": false, "content": { "application/json": { "schema": schema } } })
}

fn form_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/x-www-form-urlencoded": { "schema": schema } } })
}

/// An object with these string (or other) properties, `required` of them required.
fn object(props: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": props, "required": required })
}

fn ip_schema() -> Value {
    json!({ "type": "string", "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }] })
}

fn duration_schema() -> Value {
    json!({ "type": "string", "pattern": "^[1-9][0-9]{0,3}(s|m|h|d)$", "examples": ["30m", "1h", "7d"] })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

/// One operation: `responses` plus the problem default; `extra` merged in.
fn op(summary: &str, tag: &str, responses: Value, extra: Value) -> Value {
    let mut responses = responses.as_object().cloned().unwrap_or_default();
    responses.insert("default".into(), problem_default());
    let mut o = json!({ "summary": summary, "tags": [tag], "responses": responses });
    if let (Some(map), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
    o
}

fn signed_in() -> Value {
    json!({ "security": [{ "bearer": [] }, { "session": [] }] })
}

fn with(mut a: Value, b: Value) -> Value {
    if let (Some(map), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            map.insert(k.clone(), v.clone());
        }
    }
    a
}

fn schemas() -> Value {
    let ts = json!({ "type": "integer", "minimum": 0, "description": "Unix time in milliseconds" });
    let nullable_ts = json!({ "type": ["integer", "null"], "minimum": 0 });
    json!({
        "Problem": object(json!({
            "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
            "detail": { "type": "string" }, "request_id": { "type": "string" }
        }), &["type", "title", "status"]),
        "OAuthError": object(json!({
            "error": { "type": "string" }, "error_description": { "type": "string" }
        }), &["error"]),
        "Tokens": object(json!({
            "access_token": { "type": "string" }, "token_type": { "const": "bearer" },
            "expires_in": { "type": "integer" }, "refresh_token": { "type": "string" }, "scope": { "type": "string" }
        }), &["access_token", "token_type", "expires_in"]),
        "MfaRequired": object(json!({
            "error": { "const": "mfa_required" }, "mfa_token": { "type": "string" },
            "mfa_methods": { "type": "array", "items": { "type": "string" } }
        }), &["error", "mfa_token", "mfa_methods"]),
        "User": object(json!({
            "id": { "type": "string" }, "username": { "type": "string" },
            "email": { "type": ["string", "null"] }, "roles": { "type": "array", "items": { "type": "string" } },
            "tier": { "type": ["string", "null"] }, "locked_until": nullable_ts, "disabled": { "type": "boolean" },
            "created_at": ts, "last_login_at": nullable_ts
        }), &["id", "username", "roles", "disabled", "created_at"]),
        "ApiKey": object(json!({
            "id": { "type": "string" }, "name": { "type": "string" }, "prefix": { "type": "string" },
            "owner": object(json!({ "kind": { "type": "string" }, "id": { "type": "string" } }), &["kind", "id"]),
            "scopes": { "type": "array", "items": { "type": "string" } },
            "cidrs": { "type": "array", "items": { "type": "string" } },
            "expires_at": nullable_ts, "created_at": ts, "revoked_at": nullable_ts, "last_used_at": nullable_ts,
            "use_count": { "type": "integer" },
            "key": { "type": "string", "description": "the key itself: only when created or rotated, shown once" }
        }), &["id", "name", "prefix", "owner", "scopes", "created_at"]),
        "Session": object(json!({
            "id": { "type": "string" }, "created_at": ts, "last_seen_at": ts, "expires_at": ts,
            "user_agent": { "type": ["string", "null"] }, "ip": { "type": ["string", "null"] },
            "current": { "type": "boolean" }
        }), &["id", "created_at", "expires_at", "current"]),
        "Challenge": object(json!({
            "challenge_id": { "type": "string" }, "publicKey": { "type": "object" }
        }), &["challenge_id", "publicKey"]),
        "Passkey": object(json!({
            "id": { "type": "string" }, "name": { "type": "string" }, "created_at": ts, "last_used_at": nullable_ts
        }), &["id", "name", "created_at"]),
        "Ban": object(json!({
            "ip": { "type": "string" },
            "prefix_len": { "type": "integer", "minimum": 1, "maximum": 127, "description": "set when the ban covers the IPv6 network ip/prefix_len" },
            "until_ms": ts, "reason": { "type": "string" }, "source": { "type": "string" }
        }), &["ip", "until_ms", "reason", "source"]),
        "AuditRecord": object(json!({
            "seq": { "type": "integer" }, "ts_ms": ts, "kind": { "type": "string" }, "hash": { "type": "string" }
        }), &["kind"]),
        "Stats": object(json!({
            "requests_total": { "type": "integer" }, "requests_per_second": { "type": "number" },
            "series": { "type": "array", "items": object(json!({ "t": ts, "rps": { "type": "number" } }), &["t", "rps"]) },
            "in_flight": { "type": "integer" },
            "rejections": { "type": "array", "items": object(json!({
                "layer": { "type": "string" }, "reason": { "type": "string" }, "count": { "type": "integer" }
            }), &["layer", "reason", "count"]) },
            "top_talkers": { "type": "array" },
            "upstreams": { "type": "array", "items": object(json!({
                "upstream": { "type": "string" }, "target": { "type": "string" }, "healthy": { "type": "boolean" }
            }), &["upstream", "target", "healthy"]) },
            "bans_active": { "type": "integer" },
            "degraded": { "type": "array", "items": { "type": "string" } }
        }), &["requests_total", "requests_per_second", "series", "in_flight", "rejections", "top_talkers", "upstreams"]),
    })
}

/// The document for `service`'s settings.
pub fn document(service: &IdentityService) -> Value {
    let s = &service.settings;
    let p = s.prefix.as_str();
    let mut paths = Map::new();
    let mut add = |path: String, ops: Value| {
        paths.insert(path, ops);
    };
    let token_responses = json!({
        "200": ok("Tokens", schema("Tokens")),
        "400": ok("An RFC 6749 error (`invalid_grant` for every bad credential alike)", schema("OAuthError")),
        "401": ok("`invalid_client`", schema("OAuthError")),
        "403": ok("A second factor is due: answer with the `mfa-otp` grant or a passkey", schema("MfaRequired")),
    });
    let token_form = object(
        json!({
            "grant_type": { "type": "string", "examples": ["password", "refresh_token", "client_credentials", super::mfa::MFA_OTP_GRANT] },
            "username": { "type": "string" }, "password": { "type": "string" },
            "refresh_token": { "type": "string" }, "scope": { "type": "string" },
            "client_id": { "type": "string" }, "client_secret": { "type": "string" },
            "mfa_token": { "type": "string" }, "otp": { "type": "string" }
        }),
        &["grant_type"],
    );
    add(
        format!("{p}/openapi.json"),
        json!({ "get": op("This document", "meta", json!({ "200": ok("OpenAPI 3.1", json!({ "type": "object" })) }), json!({})) }),
    );
    add(
        "/.well-known/jwks.json".into(),
        json!({ "get": op("The public signing keys", "identity",
        json!({ "200": ok("JWKS", object(json!({ "keys": { "type": "array" } }), &["keys"])) }), json!({})) }),
    );
    add(
        "/.well-known/openid-configuration".into(),
        json!({ "get": op("Discovery document", "identity",
        json!({ "200": ok("Discovery", object(json!({ "issuer": { "type": "string" }, "jwks_uri": { "type": "string" }, "token_endpoint": { "type": "string" } }), &["issuer", "jwks_uri", "token_endpoint"])) }), json!({})) }),
    );
    if s.registration {
        add(
            format!("{p}/register"),
            json!({ "post": op("Create an account", "identity",
            json!({ "201": ok("Created", object(json!({ "id": { "type": "string" }, "username": { "type": "string" } }), &["id", "username"])) }),
            json!({ "requestBody": body(object(json!({ "username": { "type": "string" }, "password": { "type": "string" }, "email": { "type": "string" } }), &["username", "password"])) })) }),
        );
    }
    add(
        format!("{p}/token"),
        json!({ "post": op("OAuth2 token endpoint (RFC 6749)", "identity", token_responses.clone(),
        json!({ "requestBody": form_body(token_form.clone()) })) }),
    );
    add(
        format!("{p}/logout"),
        json!({ "post": op("End this token's session (bearer and/or refresh token, or the session cookie)", "identity",
        json!({ "204": no_content("Logged out"), "400": ok("Nothing to log out", schema("OAuthError")) }),
        json!({ "requestBody": { "required": false, "content": { "application/x-www-form-urlencoded": { "schema": object(json!({ "refresh_token": { "type": "string" } }), &[]) } } } })) }),
    );
    add(
        format!("{p}/logout/all"),
        json!({ "post": op("Log out everywhere", "account", json!({ "204": no_content("Every token and session of the user ended") }), signed_in()) }),
    );
    add(
        format!("{p}/me"),
        json!({
            "get": op("The caller's account", "account", json!({ "200": ok("The account", schema("User")) }), signed_in()),
            "delete": op("Erase the caller's account", "account", json!({ "204": no_content("Erased") }),
                with(signed_in(), json!({ "requestBody": body(object(json!({ "password": { "type": "string" }, "code": { "type": "string" }, "confirm": { "type": "string" } }), &[])) }))),
        }),
    );
    add(
        format!("{p}/me/export"),
        json!({ "get": op("The caller's personal data", "account", json!({ "200": ok("Everything about the caller", json!({ "type": "object" })) }), signed_in()) }),
    );
    add(
        format!("{p}/password"),
        json!({ "post": op("Change the password", "account", json!({ "204": no_content("Changed; other sessions ended") }),
        with(signed_in(), json!({ "requestBody": body(object(json!({ "current_password": { "type": "string" }, "new_password": { "type": "string" } }), &["current_password", "new_password"])) }))) }),
    );
    if service.reset_enabled() {
        add(
            format!("{p}/password/forgot"),
            json!({ "post": op("Ask for a reset token (same answer for every account)", "identity",
            json!({ "202": no_content("Accepted") }),
            json!({ "requestBody": body(object(json!({ "username": { "type": "string" }, "email": { "type": "string" } }), &[])) })) }),
        );
        add(
            format!("{p}/password/reset"),
            json!({ "post": op("Set a new password with a reset token", "identity",
            json!({ "204": no_content("Reset") }),
            json!({ "requestBody": body(object(json!({ "token": { "type": "string" }, "new_password": { "type": "string" } }), &["token", "new_password"])) })) }),
        );
    }
    let code_body = body(object(json!({ "password": { "type": "string" }, "code": { "type": "string" } }), &[]));
    add(
        format!("{p}/mfa"),
        json!({ "get": op("Second-factor status", "mfa",
        json!({ "200": ok("Status", object(json!({ "totp": { "type": "boolean" }, "totp_pending": { "type": "boolean" }, "backup_codes_left": { "type": "integer" }, "methods": { "type": "array", "items": { "type": "string" } } }), &["totp", "methods"])) }), signed_in()) }),
    );
    add(
        format!("{p}/mfa/totp"),
        json!({ "post": op("Start a TOTP enrolment (the password; an account without one: a recent sign-in)", "mfa",
        json!({ "200": ok("The secret, its otpauth URI and QR codes", object(json!({ "secret": { "type": "string" }, "otpauth_uri": { "type": "string" }, "qr_png": { "type": "string" }, "qr_svg": { "type": "string" } }), &["secret", "otpauth_uri"])) }),
        with(signed_in(), json!({ "requestBody": optional_body(object(json!({ "password": { "type": "string" }, "code": { "type": "string" } }), &[])) }))) }),
    );
    add(
        format!("{p}/mfa/totp/confirm"),
        json!({ "post": op("Confirm the enrolment with a code", "mfa",
        json!({ "200": ok("Ten backup codes, shown once", object(json!({ "backup_codes": { "type": "array", "items": { "type": "string" } } }), &["backup_codes"])) }),
        with(signed_in(), json!({ "requestBody": body(object(json!({ "code": { "type": "string" } }), &["code"])) }))) }),
    );
    add(
        format!("{p}/mfa/totp/disable"),
        json!({ "post": op("Turn TOTP off", "mfa", json!({ "204": no_content("Off") }), with(signed_in(), json!({ "requestBody": code_body.clone() }))) }),
    );
    add(
        format!("{p}/mfa/backup-codes"),
        json!({ "post": op("New backup codes", "mfa",
        json!({ "200": ok("Ten backup codes, shown once", object(json!({ "backup_codes": { "type": "array", "items": { "type": "string" } } }), &["backup_codes"])) }),
        with(signed_in(), json!({ "requestBody": code_body }))) }),
    );
    if s.webauthn.is_some() {
        add(
            format!("{p}/mfa/webauthn/start"),
            json!({ "post": op("Passkey as second factor: challenge", "mfa",
            json!({ "200": ok("For navigator.credentials.get()", schema("Challenge")) }),
            json!({ "requestBody": body(object(json!({ "mfa_token": { "type": "string" } }), &["mfa_token"])) })) }),
        );
        add(
            format!("{p}/mfa/webauthn/finish"),
            json!({ "post": op("Passkey as second factor: answer", "mfa", token_responses.clone(),
            json!({ "requestBody": body(object(json!({ "mfa_token": { "type": "string" }, "challenge_id": { "type": "string" }, "credential": { "type": "object" }, "session": { "type": "boolean" } }), &["mfa_token", "challenge_id", "credential"])) })) }),
        );
        add(
            format!("{p}/passkeys"),
            json!({ "get": op("The caller's passkeys", "passkeys",
            json!({ "200": ok("No key material", object(json!({ "passkeys": { "type": "array", "items": schema("Passkey") } }), &["passkeys"])) }), signed_in()) }),
        );
        add(
            format!("{p}/passkeys/{{id}}"),
            json!({ "delete": op("Remove a passkey (with the password or a code, as for turning TOTP off)", "passkeys", json!({ "204": no_content("Removed") }),
            with(signed_in(), json!({ "parameters": [path_param("id", "passkey id")], "requestBody": code_body.clone() }))) }),
        );
        add(
            format!("{p}/passkeys/register/start"),
            json!({ "post": op("Register a passkey: challenge (with the password or a code, as for removing one)", "passkeys",
            json!({ "200": ok("For navigator.credentials.create()", schema("Challenge")) }),
            with(signed_in(), json!({ "requestBody": code_body.clone() }))) }),
        );
        add(
            format!("{p}/passkeys/register/finish"),
            json!({ "post": op("Register a passkey: answer", "passkeys",
            json!({ "201": ok("Registered", schema("Passkey")) }),
            with(signed_in(), json!({ "requestBody": body(object(json!({ "challenge_id": { "type": "string" }, "name": { "type": "string" }, "credential": { "type": "object" } }), &["challenge_id", "credential"])) }))) }),
        );
        add(
            format!("{p}/passkeys/login/start"),
            json!({ "post": op("Passwordless login: challenge", "passkeys",
            json!({ "200": ok("For navigator.credentials.get()", schema("Challenge")) }),
            json!({ "requestBody": body(object(json!({ "username": { "type": "string" } }), &["username"])) })) }),
        );
        add(
            format!("{p}/passkeys/login/finish"),
            json!({ "post": op("Passwordless login: answer", "passkeys", token_responses.clone(),
            json!({ "requestBody": body(object(json!({ "challenge_id": { "type": "string" }, "credential": { "type": "object" }, "session": { "type": "boolean" } }), &["challenge_id", "credential"])) })) }),
        );
    }
    if service.api_keys.is_some() {
        add(
            format!("{p}/api-keys"),
            json!({
                "get": op("The caller's API keys", "api-keys", json!({ "200": ok("Never the keys", object(json!({ "api_keys": { "type": "array", "items": schema("ApiKey") } }), &["api_keys"])) }), signed_in()),
                "post": op("Create an API key (shown once)", "api-keys", json!({ "201": ok("With `key`", schema("ApiKey")) }),
                    with(signed_in(), json!({ "requestBody": body(object(json!({ "name": { "type": "string" }, "scopes": { "type": "array", "items": { "type": "string" } }, "expires_in": { "type": "string", "examples": ["30d"] }, "cidrs": { "type": "array", "items": { "type": "string" } }, "password": { "type": "string" }, "code": { "type": "string" } }), &["name"])) }))),
            }),
        );
        add(
            format!("{p}/api-keys/{{id}}"),
            json!({ "delete": op("Revoke an API key", "api-keys", json!({ "204": no_content("Revoked") }),
            with(signed_in(), json!({ "parameters": [path_param("id", "API key id")] }))) }),
        );
        add(
            format!("{p}/api-keys/{{id}}/rotate"),
            json!({ "post": op("Rotate an API key", "api-keys", json!({ "201": ok("The new key (with `key`) and the old one (`rotated`)", schema("ApiKey")) }),
            with(signed_in(), json!({ "parameters": [path_param("id", "API key id")], "requestBody": optional_body(object(json!({ "grace": { "type": "string", "examples": ["1h"] }, "password": { "type": "string" }, "code": { "type": "string" } }), &[])) }))) }),
        );
    }
    if service.sessions.is_some() {
        let session_answer = object(
            json!({ "user": { "type": "object" }, "session": { "type": "object" }, "csrf_token": { "type": "string" } }),
            &["csrf_token"],
        );
        // A second factor due, or (problem `csrf`) a login from another site.
        let mfa_or_csrf = json!({
            "description": "A second factor is due; or the login came from another site (problem `csrf`)",
            "content": {
                "application/json": { "schema": schema("MfaRequired") },
                "application/problem+json": { "schema": schema("Problem") },
            },
        });
        add(
            format!("{p}/session"),
            json!({
                "post": op("Log in to a browser session (same form as the token endpoint)", "sessions",
                    json!({ "200": ok("Session cookie set", session_answer.clone()), "400": ok("Refused", schema("OAuthError")), "401": ok("Refused", schema("OAuthError")), "403": mfa_or_csrf }),
                    json!({ "requestBody": form_body(token_form) })),
                "get": op("The current session and a fresh CSRF token", "sessions", json!({ "200": ok("The session", session_answer) }), json!({ "security": [{ "session": [] }] })),
                "delete": op("Log out of the session", "sessions", json!({ "204": no_content("Ended; cookies cleared") }), json!({ "security": [{ "session": [] }] })),
            }),
        );
        add(
            format!("{p}/csrf"),
            json!({ "get": op("A CSRF token for the current session", "sessions",
            json!({ "200": ok("The token", object(json!({ "csrf_token": { "type": "string" } }), &["csrf_token"])) }), json!({ "security": [{ "session": [] }] })) }),
        );
        add(
            format!("{p}/session/token"),
            json!({ "post": op("A short-lived access token for the session's user", "sessions",
            json!({ "200": ok("No refresh token", schema("Tokens")) }), json!({ "security": [{ "session": [] }] })) }),
        );
        add(
            format!("{p}/sessions"),
            json!({
                "get": op("The caller's sessions (devices)", "sessions", json!({ "200": ok("Sessions", object(json!({ "sessions": { "type": "array", "items": schema("Session") } }), &["sessions"])) }), signed_in()),
                "delete": op("End all sessions", "sessions", json!({ "204": no_content("Ended") }),
                    with(signed_in(), json!({ "parameters": [query_param("keep_current", "keep the calling session", json!({ "type": "boolean" }))] }))),
            }),
        );
        add(
            format!("{p}/sessions/{{id}}"),
            json!({ "delete": op("End one session", "sessions", json!({ "204": no_content("Ended") }),
            with(signed_in(), json!({ "parameters": [path_param("id", "session id")] }))) }),
        );
    }
    if !s.oidc.is_empty() {
        add(
            format!("{p}/oidc/providers"),
            json!({ "get": op("Configured external login providers", "external-logins",
            json!({ "200": ok("Providers", object(json!({ "providers": { "type": "array", "items": object(json!({ "name": { "type": "string" }, "display_name": { "type": "string" }, "login_url": { "type": "string" } }), &["name", "login_url"]) } }), &["providers"])) }), json!({})) }),
        );
        add(
            format!("{p}/oidc/{{provider}}/login"),
            json!({ "get": op("Start an external login (redirect to the provider)", "external-logins",
            json!({ "302": no_content("To the provider") }),
            json!({ "parameters": [path_param("provider", "provider name"), query_param("return_to", "a path on this site", json!({ "type": "string" }))] })) }),
        );
        add(
            format!("{p}/oidc/links"),
            json!({ "get": op("The caller's linked external accounts", "external-logins",
            json!({ "200": ok("Links", object(json!({ "links": { "type": "array" } }), &["links"])) }), signed_in()) }),
        );
        add(
            format!("{p}/oidc/links/{{provider}}"),
            json!({ "delete": op("Unlink an external account", "external-logins", json!({ "204": no_content("Unlinked") }),
            with(signed_in(), json!({ "parameters": [path_param("provider", "provider name")] }))) }),
        );
    }
    admin_paths(p, &mut add);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Rampart identity and admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accounts, tokens, second factors, passkeys, API keys, browser sessions and external logins; and the admin API. Errors are RFC 9457 problems."
        },
        // Relative: the host the document was fetched from.
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "session": { "type": "apiKey", "in": "cookie", "name": service.sessions.as_ref().map_or("__Host-rampart_session".to_owned(), |s| s.settings.cookie_name.clone()) },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" }
            }
        }
    })
}

fn admin_paths(p: &str, add: &mut impl FnMut(String, Value)) {
    let admin = || json!({ "security": [{ "bearer": [] }, { "session": [] }, { "apiKey": [] }] });
    let user_id = || json!({ "parameters": [path_param("id", "user id")] });
    let user = || ok("The user", schema("User"));
    let int = |min: i64, max: i64| json!({ "type": "integer", "minimum": min, "maximum": max });
    add(
        format!("{p}/admin/users"),
        json!({ "get": op("List and search users", "admin",
        json!({ "200": ok("Users", object(json!({ "users": { "type": "array", "items": schema("User") } }), &["users"])) }),
        with(admin(), json!({ "parameters": [
            query_param("search", "prefix of username or e-mail", json!({ "type": "string", "maxLength": 320 })),
            query_param("limit", "page size (1–500)", int(1, 500)),
            query_param("offset", "rows to skip", json!({ "type": "integer", "minimum": 0 }))
        ] }))) }),
    );
    add(
        format!("{p}/admin/users/{{id}}"),
        json!({
            "get": op("One user, with second factors and API keys", "admin", json!({ "200": user() }), with(admin(), user_id())),
            "delete": op("Erase a user's account", "admin", json!({ "204": no_content("Erased") }), with(admin(), user_id())),
        }),
    );
    add(
        format!("{p}/admin/users/{{id}}/lock"),
        json!({ "post": op("Lock a user (ends sessions and tokens)", "admin", json!({ "200": user() }),
        with(with(admin(), user_id()), json!({ "requestBody": optional_body(object(json!({ "for": duration_schema() }), &[])) }))) }),
    );
    add(
        format!("{p}/admin/users/{{id}}/unlock"),
        json!({ "post": op("Unlock a user", "admin", json!({ "200": user() }), with(admin(), user_id())) }),
    );
    add(
        format!("{p}/admin/users/{{id}}/mfa/reset"),
        json!({ "post": op("Remove a user's second factors and passkeys", "admin", json!({ "204": no_content("Reset") }), with(admin(), user_id())) }),
    );
    add(
        format!("{p}/admin/users/{{id}}/roles"),
        json!({ "put": op("Set a user's roles", "admin", json!({ "200": user() }),
        with(with(admin(), user_id()), json!({ "requestBody": body(object(json!({ "roles": { "type": "array", "items": { "type": "string" }, "maxItems": 64 } }), &["roles"])) }))) }),
    );
    add(
        format!("{p}/admin/users/{{id}}/sessions"),
        json!({ "delete": op("Log a user out everywhere", "admin", json!({ "204": no_content("Ended") }), with(admin(), user_id())) }),
    );
    add(
        format!("{p}/admin/users/{{id}}/export"),
        json!({ "get": op("A user's personal data", "admin", json!({ "200": ok("Everything about the user", json!({ "type": "object" })) }), with(admin(), user_id())) }),
    );
    add(
        format!("{p}/admin/api-keys"),
        json!({ "get": op("API keys (never the keys)", "admin",
        json!({ "200": ok("Keys", object(json!({ "api_keys": { "type": "array", "items": schema("ApiKey") } }), &["api_keys"])) }),
        with(admin(), json!({ "parameters": [query_param("user", "owner user id", json!({ "type": "string" })), query_param("client", "owner client id", json!({ "type": "string" }))] }))) }),
    );
    add(
        format!("{p}/admin/api-keys/{{id}}"),
        json!({ "delete": op("Revoke an API key", "admin", json!({ "204": no_content("Revoked") }), with(admin(), json!({ "parameters": [path_param("id", "API key id")] }))) }),
    );
    add(
        format!("{p}/admin/bans"),
        json!({
            "get": op("Active bans", "admin", json!({ "200": ok("Bans", object(json!({ "bans": { "type": "array", "items": schema("Ban") } }), &["bans"])) }), admin()),
            "post": op("Ban an address", "admin", json!({ "201": ok("The ban", schema("Ban")) }),
                with(admin(), json!({ "requestBody": body(object(json!({ "ip": ip_schema(), "ttl": duration_schema(), "reason": { "type": "string", "maxLength": 200 } }), &["ip"])) }))),
        }),
    );
    add(
        format!("{p}/admin/bans/{{ip}}"),
        json!({ "delete": op("Lift the bans on an address", "admin", json!({ "204": no_content("Lifted") }), with(admin(), json!({ "parameters": [with(path_param("ip", "the banned address, or any address of a banned IPv6 network"), json!({ "schema": ip_schema() }))] }))) }),
    );
    add(
        format!("{p}/admin/access-lists"),
        json!({ "get": op("The allow and deny lists in force", "admin",
        json!({ "200": ok("Lists", object(json!({ "allow": { "type": "array", "items": { "type": "string" } }, "deny": { "type": "array", "items": { "type": "string" } }, "permitted": { "type": "boolean" }, "banned": { "type": "boolean" } }), &["allow", "deny"])) }),
        with(admin(), json!({ "parameters": [query_param("ip", "an address to check", json!({ "type": "string" }))] }))) }),
    );
    add(
        format!("{p}/admin/audit"),
        json!({ "get": op("Search the audit log", "admin",
        json!({ "200": ok("Records, newest matches", object(json!({ "records": { "type": "array", "items": schema("AuditRecord") }, "unreadable_lines": { "type": "integer" } }), &["records"])) }),
        with(admin(), json!({ "parameters": [
            query_param("kind", "event kind, e.g. auth_failure", json!({ "type": "string" })),
            query_param("subject", "user or client id", json!({ "type": "string" })),
            query_param("ip", "client address", json!({ "type": "string" })),
            query_param("since", "a duration like 1h", json!({ "type": "string" })),
            query_param("limit", "at most 1000", int(1, 1000))
        ] }))) }),
    );
    add(
        format!("{p}/admin/stats"),
        json!({ "get": op("Live statistics", "admin", json!({ "200": ok("Statistics", schema("Stats")) }), admin()) }),
    );
    add(
        format!("{p}/admin/config"),
        json!({ "get": op("The running config, secrets redacted", "admin", json!({ "200": ok("The config", json!({ "type": "object" })) }), admin()) }),
    );
    add(
        format!("{p}/admin/reload"),
        json!({ "post": op("Reload the config file (as SIGHUP)", "admin", json!({ "200": ok("Reloaded", object(json!({ "reloaded": { "const": true } }), &["reloaded"])) }), admin()) }),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_reference_resolves_and_every_operation_has_a_problem_default() {
        let components = schemas();
        let mut paths = Map::new();
        admin_paths("/auth", &mut |p, v| {
            paths.insert(p, v);
        });
        let text = Value::Object(paths.clone()).to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(components.get(&name).is_some(), "unresolved schema {name}");
        }
        for (path, item) in &paths {
            for (method, operation) in item.as_object().unwrap() {
                assert!(operation["responses"]["default"].is_object(), "{method} {path}");
                assert!(operation["security"].is_array(), "{method} {path} names its security");
            }
        }
    }
}

//! CSRF protection for requests authenticated by a browser session cookie
//! (`[identity.sessions]`). Bearer-token, API-key and signed requests are
//! exempt: a browser never adds those to a forged request by itself.
//!
//! Safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`) pass. An unsafe one must
//! pass two checks, in order:
//!
//! 1. **Where it comes from**: an `Origin` header must be the gateway's own
//!    origin (the scheme the request arrived with, and its `Host`) or one of
//!    `allowed_origins`; `null` never is. Without `Origin`, the Fetch
//!    Metadata header `Sec-Fetch-Site` must be `same-origin` or `none` (the
//!    user typed it). A request with neither comes from something that is
//!    not a current browser, and is left to check 2.
//! 2. **A token bound to the session** (signed double submit): the header
//!    `X-CSRF-Token` (configurable), or for urlencoded form posts the field
//!    `csrf_token`, must hold a token made for this very session
//!    (`nonce.HMAC(key, session, nonce)`, see
//!    [`crate::identity::sessions::Sessions::csrf_token`]); one from another
//!    session, or forged, fails. Pages get it from `GET {prefix}/csrf`, which
//!    also sets it in a cookie scripts can read.
//!
//! Other credentials a browser sends by itself get check 1 alone (there is
//! no session for a token to be bound to):
//!
//! - a bearer token read from a route's `auth_cookie` (see [`super`]), on
//!   unsafe methods; besides our own origin and the sessions'
//!   `allowed_origins`, the origins of the route's CORS policy when it allows
//!   credentials pass (that policy already lets them make credentialed
//!   requests);
//! - a session login (`POST {prefix}/session`), so that another site cannot
//!   sign the browser in to an account of its choosing (login CSRF);
//! - `POST {prefix}/logout` carrying the session cookie.
//!
//! A failure is a 403 problem (`csrf`) naming which check failed, and an
//! audit event.

use http::{HeaderMap, Method, StatusCode};
use rampart_core::client_ip::ClientInfo;

use crate::edge::request_id::RequestId;
use crate::edge::{ConnInfo, HttpResponse};
use crate::identity::sessions::Sessions;
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::problem::Problem;
use crate::store::identity::TokenHash;

/// Why a cookie-authenticated request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrfFailure {
    /// `Sec-Fetch-Site` says another site made the request.
    CrossSite,
    /// `Origin` is neither ours nor allowed.
    Origin,
    /// No token in the header or the form.
    MissingToken,
    /// A token, but not one made for this session.
    BadToken,
}

impl CsrfFailure {
    pub fn reason(self) -> &'static str {
        match self {
            Self::CrossSite => "csrf_cross_site",
            Self::Origin => "csrf_origin",
            Self::MissingToken => "csrf_token_missing",
            Self::BadToken => "csrf_token_invalid",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Self::CrossSite => "the request was made by another site",
            Self::Origin => "the request's Origin is not allowed to use this sign-in",
            Self::MissingToken => "a CSRF token is required (header or form field); get one from the csrf endpoint",
            Self::BadToken => "the CSRF token is not valid for this session",
        }
    }
}

/// Whether `method` needs no CSRF check.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Whether a cookie-authenticated request's source must be checked (the
/// first check) although its method is safe: a WebSocket handshake. It is a `GET`,
/// but it opens a channel both ways with the cookie's authority, and a
/// browser opens one from any page, cross-site, with the cookie and without
/// CORS (cross-site WebSocket hijacking). Browsers always send `Origin` on
/// it. The token (the second check) cannot be asked for: a page cannot add
/// headers to a handshake.
///
/// Besides a complete HTTP/1.1 upgrade, any request that carries
/// `Sec-WebSocket-Key` or `Upgrade: websocket` counts: a forward-auth check
/// (nginx `auth_request`, Traefik, Caddy) arrives without the hop-by-hop
/// `Connection` and `Upgrade` headers, or over HTTP/2, but with the
/// handshake's end-to-end headers. No page can add a `Sec-` header to an
/// ordinary request, so this catches no ordinary `GET` from a browser.
pub fn is_handshake(req: &crate::edge::HttpRequest) -> bool {
    let headers = req.headers();
    crate::proxy::tunnel::is_websocket_upgrade(req)
        || headers.contains_key(http::header::SEC_WEBSOCKET_KEY)
        || headers
            .get_all(http::header::UPGRADE)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket"))))
}

/// The origin this request was addressed to: its scheme and `Host`.
fn own_origin(headers: &HeaderMap, ext: &http::Extensions, uri: &http::Uri) -> Option<String> {
    let tls =
        ext.get::<ConnInfo>().is_some_and(|c| c.tls) || ext.get::<ClientInfo>().is_some_and(|c| c.forwarded_https);
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))?;
    let scheme = if tls { "https" } else { "http" };
    let host = host.to_ascii_lowercase();
    // The default port is not part of a serialised origin.
    let host = match (scheme, host.strip_suffix(":443"), host.strip_suffix(":80")) {
        ("https", Some(h), _) | ("http", _, Some(h)) => h.to_owned(),
        _ => host,
    };
    Some(format!("{scheme}://{host}"))
}

/// Check 1: where the request comes from, for a session (its
/// `allowed_origins` besides our own).
pub fn check_source(
    sessions: &Sessions,
    headers: &HeaderMap,
    ext: &http::Extensions,
    uri: &http::Uri,
) -> Result<(), CsrfFailure> {
    check_source_with(headers, ext, uri, |origin| sessions.settings.allowed_origins.iter().any(|p| p.matches(origin)))
}

/// Check 1 for any cookie credential: our own origin, or one `allowed` says
/// may use the cookie.
pub fn check_source_with(
    headers: &HeaderMap,
    ext: &http::Extensions,
    uri: &http::Uri,
    allowed: impl Fn(&str) -> bool,
) -> Result<(), CsrfFailure> {
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| CsrfFailure::Origin)?.trim();
        if origin.eq_ignore_ascii_case("null") {
            return Err(CsrfFailure::Origin);
        }
        let ours = own_origin(headers, ext, uri).is_some_and(|o| o.eq_ignore_ascii_case(origin));
        if ours || allowed(origin) {
            return Ok(());
        }
        return Err(CsrfFailure::Origin);
    }
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        None | Some(b"same-origin") | Some(b"none") => Ok(()),
        Some(_) => Err(CsrfFailure::CrossSite),
    }
}

/// Check 2: the token (`header` first, else what a form carried).
pub fn check_token(
    sessions: &Sessions,
    session: &TokenHash,
    headers: &HeaderMap,
    form_token: Option<&str>,
) -> Result<(), CsrfFailure> {
    let presented = headers.get(&sessions.settings.csrf_header).and_then(|v| v.to_str().ok()).or(form_token);
    match presented {
        None => Err(CsrfFailure::MissingToken),
        Some(t) if sessions.csrf_valid(session, t) => Ok(()),
        Some(_) => Err(CsrfFailure::BadToken),
    }
}

/// Whether a request's body is an urlencoded form (whose fields may carry
/// the token).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    })
}

/// The token field of an urlencoded form body.
pub fn form_field(body: &[u8], field: &str) -> Option<String> {
    form_urlencoded::parse(body).find(|(k, _)| k == field).map(|(_, v)| v.into_owned())
}

/// The 403 for `failure`, with its audit event (`subject`: whom the cookie
/// names, when known).
pub fn refusal(
    state: &LimitState,
    ext: &http::Extensions,
    subject: Option<&str>,
    failure: CsrfFailure,
) -> HttpResponse {
    let reason = failure.reason();
    tracing::info!(target: "rampart::auth", reason, "cookie-authenticated request refused (CSRF)");
    let ip = ext.get::<ClientInfo>().map(|c| c.ip);
    // Once per client, reason and subject a minute, as other refusals: a
    // flood of cross-site posts costs nothing and must not crowd real
    // events out of the bounded audit queue.
    let key = format!("csrf|{}|{reason}|{}", ip.map(|ip| ip.to_string()).unwrap_or_default(), subject.unwrap_or(""));
    state.audit_once(&key, || {
        let mut event = AuditEvent::new(AuditKind::CsrfRejected).detail("reason", reason);
        if let Some(subject) = subject {
            event = event.subject(subject.to_owned());
        }
        if let Some(ip) = ip {
            event = event.ip(ip);
        }
        if let Some(id) = ext.get::<RequestId>() {
            event = event.request_id(id.as_str());
        }
        event
    });
    Problem::new(StatusCode::FORBIDDEN, "csrf", "Cross-site request refused")
        .detail(failure.detail())
        .rejected_by("csrf", reason)
        .into_response_for(ext)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use http::HeaderValue;

    #[test]
    fn own_origin_follows_scheme_and_host() {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, HeaderValue::from_static("App.Example.com:443"));
        let mut ext = http::Extensions::new();
        ext.insert(ConnInfo { peer: "127.0.0.1:1".parse().unwrap(), tls: true });
        let uri: http::Uri = "/x".parse().unwrap();
        assert_eq!(own_origin(&h, &ext, &uri).unwrap(), "https://app.example.com");
        let ext = http::Extensions::new();
        h.insert(http::header::HOST, HeaderValue::from_static("localhost:8080"));
        assert_eq!(own_origin(&h, &ext, &uri).unwrap(), "http://localhost:8080");
    }

    #[test]
    fn safe_methods_and_forms() {
        assert!(
            is_safe(&Method::GET) && is_safe(&Method::HEAD) && !is_safe(&Method::POST) && !is_safe(&Method::DELETE)
        );
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
        );
        assert!(is_form(&h));
        assert_eq!(form_field(b"a=1&csrf_token=x%2By&b=2", "csrf_token").as_deref(), Some("x+y"));
        assert_eq!(form_field(b"\xff\xfe=%%%", "csrf_token"), None);
    }
}

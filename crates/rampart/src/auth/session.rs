//! Session-cookie authentication on routes (`[identity.sessions]`, routes
//! with `auth` on and `auth_session` not false): the cookie's session
//! becomes a [`Principal`](rampart_core::principal::Principal) with the same
//! identity headers a token gives (`X-Rampart-Auth-Method: session`), after
//! the CSRF checks of [`super::csrf`] for unsafe methods.
//!
//! A bearer token or API key in the request wins over the cookie. A refused
//! cookie is 401 on `required` routes; on `optional` routes the request goes
//! on anonymous. Either way the response clears the stale cookie. When this
//! request changed the session's token (a privilege change), the response
//! carries the new cookie.

use std::sync::Arc;

use axum::body::Body;
use http::header::SET_COOKIE;
use http_body_util::{BodyExt, Limited};
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::auth::AuthMode;

use super::csrf;
use super::{AuthFailure, Shared, Verified};
use crate::edge::route::MatchedRoute;
use crate::edge::{HttpRequest, HttpResponse, Inner};
use crate::identity::sessions::{SessionRefusal, Sessions};
use crate::problem::Problem;

pub(super) async fn authenticate<S: Inner>(
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    token: String,
    mode: AuthMode,
    mut req: HttpRequest,
    mut inner: S,
) -> Result<HttpResponse, S::Error> {
    let Some((_, identity)) = &shared.own else {
        return inner.call(req).await;
    };
    let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip.to_string());
    let background = req.headers().contains_key(crate::identity::sessions::BACKGROUND_HEADER);
    let may_rotate = req.extensions().get::<crate::edge::forward_auth::ForwardAuthCheck>().is_none();
    let active = match sessions.authenticate(&token, ip, &identity.revocations, background, may_rotate).await {
        Ok(active) => active,
        Err(SessionRefusal::Unavailable) => return Ok(shared.refusal(&req, AuthFailure::SessionsUnavailable)),
        Err(refused) => {
            let mut resp = if mode == AuthMode::Optional {
                inner.call(req).await?
            } else {
                shared.refusal(&req, AuthFailure::Session(refused.reason()))
            };
            for cookie in sessions.clearing_cookies() {
                resp.headers_mut().append(SET_COOKIE, cookie);
            }
            return Ok(resp);
        }
    };
    let subject = active.record.user_id.clone();
    if csrf::is_handshake(&req) {
        if let Err(f) = csrf::check_source(&sessions, req.headers(), req.extensions(), req.uri()) {
            return Ok(csrf::refusal(&shared.state, req.extensions(), Some(&subject), f));
        }
    }
    if !csrf::is_safe(req.method()) {
        if let Err(f) = csrf::check_source(&sessions, req.headers(), req.extensions(), req.uri()) {
            return Ok(csrf::refusal(&shared.state, req.extensions(), Some(&subject), f));
        }
        let mut form_token = None;
        if !req.headers().contains_key(&sessions.settings.csrf_header) && csrf::is_form(req.headers()) {
            // The token may be a form field: read the form (within the
            // route's body limit) and hand the same bytes on.
            let limit = req.extensions().get::<MatchedRoute>().map_or(1 << 20, |r| r.0.body_limit);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, limit).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    let req = HttpRequest::from_parts(parts, Body::empty());
                    return Ok(Problem::new(http::StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Body too large")
                        .detail("the form is larger than this route accepts")
                        .rejected_by("csrf", "body_too_large")
                        .into_response_for(req.extensions()));
                }
            };
            form_token = csrf::form_field(&bytes, &sessions.settings.csrf_field);
            req = HttpRequest::from_parts(parts, Body::from(bytes));
        }
        if let Err(f) = csrf::check_token(&sessions, &active.hash(), req.headers(), form_token.as_deref()) {
            return Ok(csrf::refusal(&shared.state, req.extensions(), Some(&subject), f));
        }
    }
    // The cookie is a credential for the gateway, not for the upstream.
    strip_cookie(req.headers_mut(), &sessions.settings.cookie_name);
    let verified =
        Verified { principal: active.principal(), revocable: None, own_user: true, internal: Default::default() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    shared.sessions_seen.insert(&token, verified.clone(), now + super::SESSION_SEEN_SECS);
    shared.admit(&mut req, verified);
    req.extensions_mut().insert(active.clone());
    let mut resp = inner.call(req).await?;
    if let Some(cookie) = active.new_token.as_deref().and_then(|t| sessions.cookie(t)) {
        resp.headers_mut().append(SET_COOKIE, cookie);
    }
    Ok(resp)
}

/// Removes cookie `name` from the request's `Cookie` headers, keeping the
/// others (and leaving the headers as they are when none names it).
pub(crate) fn strip_cookie(headers: &mut http::HeaderMap, name: &str) {
    let named = headers
        .get_all(http::header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().windows(name.len()).any(|w| w == name.as_bytes()));
    if !named {
        return;
    }
    let values: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k.trim() != name))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    headers.remove(http::header::COOKIE);
    for v in values {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            headers.append(http::header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn only_the_session_cookie_is_stripped() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, http::HeaderValue::from_static("a=1; __Host-s=rs_x; b=2"));
        h.append(http::header::COOKIE, http::HeaderValue::from_static("__Host-s=rs_y"));
        strip_cookie(&mut h, "__Host-s");
        let all: Vec<_> = h.get_all(http::header::COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(all, ["a=1; b=2"]);
        // Untouched when no cookie is named so.
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, http::HeaderValue::from_static("a=1;b=2"));
        strip_cookie(&mut h, "__Host-s");
        assert_eq!(h[http::header::COOKIE], "a=1;b=2");
    }
}

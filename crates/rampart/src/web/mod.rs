//! The web pages Rampart serves itself (`[identity.pages]`, under `prefix`,
//! default `/ui`): login (with the second-factor step, passwordless passkeys
//! and buttons for external OpenID Connect providers), registration,
//! password reset, the account page and the admin dashboard.
//!
//! - `GET {prefix}/login`, `/register`, `/forgot`, `/reset?token=…` — public.
//! - `GET {prefix}/account` — the signed-in user's page; without a session,
//!   303 to the login page.
//! - `GET {prefix}/admin` — the dashboard, for users whose roles include
//!   `admin`; any other signed-in user gets a 403 page.
//! - `GET {prefix}/assets/{version}/{file}` — the embedded CSS and scripts,
//!   cached for a year: `version` is a hash of all of them, so a new binary
//!   has new URLs.
//! - Anything else under the prefix is a 404 page; a method other than
//!   `GET`/`HEAD` is a 405 page.
//!
//! **How they work.** The HTML is rendered on the server with [`maud`]: its
//! `html!` macro is checked at compile time, escapes every interpolated value
//! unless told otherwise (we never do), and needs no template files or
//! runtime — chosen over askama for those reasons and because our pages are
//! small enough to read as Rust. Everything the pages *do* is a call from a
//! small script of ours (`assets/*.js`, no build step, no dependencies) to
//! the identity API (`[identity] prefix`) and the admin API, with the
//! session cookie and the session's CSRF token (`GET {auth}/csrf`, sent in
//! the `X-CSRF-Token` header, see [`crate::auth::csrf`]): there is no second
//! scheme, and a page action is exactly an API call.
//!
//! **Security.** The pages sit in the stack where the identity endpoints do
//! (below bans, guards, limits and authentication), so the same protections
//! apply. Every page carries a strict CSP without `unsafe-inline` or
//! `unsafe-eval` ([`PAGE_CSP`], applied by the security-headers layer through
//! [`OwnCsp`]), `Cache-Control: no-store`, and no inline script, style or
//! event handler; data reaches scripts through `data-` attributes, and
//! scripts write text with `textContent` only.
//!
//! ```
//! assert!(!rampart::web::PAGE_CSP.contains("unsafe-inline"));
//! assert!(rampart::web::PAGE_CSP.contains("script-src 'self'"));
//! ```

mod assets;
mod pages;

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, StatusCode};
use tower::{Layer, Service};

use crate::edge::security_headers::OwnCsp;
use crate::edge::{HttpRequest, HttpResponse, Inner, LayerFuture};
use crate::identity::http::{signed_in, Head, PendingCookies};
use crate::identity::IdentityService;
use crate::limit::LimitState;
use crate::store::identity::User;

use pages::Page;

/// The pages' Content-Security-Policy: our own scripts, styles and images
/// (plus `data:` images, the TOTP QR code), calls to our own origin only,
/// forms posted only here, never framed.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Serves the pages under `[identity.pages] prefix`; everything else passes.
#[derive(Clone)]
pub struct PagesLayer {
    service: Option<Arc<IdentityService>>,
    state: Arc<LimitState>,
}

impl PagesLayer {
    /// `service`: `None` when the identity API is off; the pages are off too
    /// then, as they are when `[identity.pages]` is absent.
    pub fn new(service: Option<Arc<IdentityService>>, state: Arc<LimitState>) -> Self {
        let service = service.filter(|s| s.settings.pages.is_some());
        Self { service, state }
    }
}

impl<S> Layer<S> for PagesLayer {
    type Service = PagesService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PagesService { inner, service: self.service.clone(), state: self.state.clone() }
    }
}

#[derive(Clone)]
pub struct PagesService<S> {
    inner: S,
    service: Option<Arc<IdentityService>>,
    state: Arc<LimitState>,
}

impl<S: Inner> Service<HttpRequest> for PagesService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let Some(service) = self.service.clone() else {
            return Either::Left(self.inner.call(req));
        };
        let Some(prefix) = service.settings.pages.as_ref().map(|p| p.prefix.as_str()) else {
            return Either::Left(self.inner.call(req));
        };
        let Some(rest) = req.uri().path().strip_prefix(prefix) else {
            return Either::Left(self.inner.call(req));
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Either::Left(self.inner.call(req));
        }
        let rest = rest.to_owned();
        let state = self.state.clone();
        Either::Right(Box::pin(async move {
            let pending = PendingCookies::default();
            let mut req = req;
            req.extensions_mut().insert(pending.clone());
            let mut resp = handle(&service, &state, &rest, req).await;
            pending.apply(&mut resp);
            resp.extensions_mut().insert(OwnCsp(HeaderValue::from_static(PAGE_CSP)));
            Ok(resp)
        }))
    }
}

/// What the pages know of the deployment, for rendering.
pub struct Site<'a> {
    pub title: &'a str,
    /// `[identity.pages] prefix`.
    pub ui: &'a str,
    /// `[identity] prefix`.
    pub auth: &'a str,
    pub registration: bool,
    pub reset: bool,
    pub passkeys: bool,
    /// External providers: (name, display name).
    pub providers: Vec<(&'a str, &'a str)>,
    pub csrf_header: &'a str,
    /// The cookie that holds the CSRF token for scripts.
    pub csrf_cookie: &'a str,
}

impl<'a> Site<'a> {
    fn of(service: &'a IdentityService) -> Self {
        let s = &service.settings;
        let pages = s.pages.as_ref();
        Site {
            title: pages.map_or("Rampart", |p| p.title.as_str()),
            ui: pages.map_or("/ui", |p| p.prefix.as_str()),
            auth: &s.prefix,
            registration: s.registration,
            reset: s.reset.is_some(),
            passkeys: s.webauthn.is_some(),
            providers: s.oidc.iter().map(|p| (p.name.as_str(), p.display_name.as_str())).collect(),
            csrf_header: s.sessions.as_ref().map_or("x-csrf-token", |x| x.csrf_header.as_str()),
            csrf_cookie: s.sessions.as_ref().map_or("__Host-rampart_csrf", |x| x.csrf_cookie.as_str()),
        }
    }
}

async fn handle(service: &IdentityService, state: &LimitState, rest: &str, req: HttpRequest) -> HttpResponse {
    let site = Site::of(service);
    if let Some(file) = rest.strip_prefix("/assets/") {
        return asset(&req, file);
    }
    let page = match rest {
        "" | "/" => None,
        "/login" => Some(Page::Login),
        "/register" => Some(Page::Register),
        "/forgot" => Some(Page::Forgot),
        "/reset" => Some(Page::Reset),
        "/account" => Some(Page::Account),
        "/admin" => Some(Page::Admin),
        _ => return html(StatusCode::NOT_FOUND, pages::not_found(&site)),
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = html(StatusCode::METHOD_NOT_ALLOWED, pages::method_not_allowed(&site));
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let user = match current_user(service, state, Head::of(&req)).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    match (page, user) {
        (None, Some(_)) => redirect(&format!("{}/account", site.ui)),
        (None, None) => redirect(&format!("{}/login", site.ui)),
        (Some(Page::Register), _) if !site.registration => html(StatusCode::NOT_FOUND, pages::not_found(&site)),
        (Some(Page::Forgot | Page::Reset), _) if !site.reset => html(StatusCode::NOT_FOUND, pages::not_found(&site)),
        (Some(Page::Account | Page::Admin), None) => redirect(&format!("{}/login", site.ui)),
        (Some(Page::Account), Some(user)) => html(StatusCode::OK, pages::account(&site, &user)),
        (Some(Page::Admin), Some(user)) if !is_admin(&user) => {
            html(StatusCode::FORBIDDEN, pages::forbidden(&site, Some(&user)))
        }
        (Some(Page::Admin), Some(user)) => html(StatusCode::OK, pages::admin(&site, &user)),
        (Some(Page::Login), user) => html(StatusCode::OK, pages::login(&site, user.as_ref())),
        (Some(Page::Register), user) => html(StatusCode::OK, pages::register(&site, user.as_ref())),
        (Some(Page::Forgot), user) => html(StatusCode::OK, pages::forgot(&site, user.as_ref())),
        (Some(Page::Reset), user) => {
            let token = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
            });
            html(StatusCode::OK, pages::reset(&site, user.as_ref(), token.as_deref()))
        }
    }
}

/// Whether a user's current roles open the admin dashboard: those that open
/// the admin API.
pub fn is_admin(user: &User) -> bool {
    crate::identity::admin_http::is_admin(user)
}

/// The user the request's session names: `Ok(None)` when there is none (or
/// it ended), `Err` only when it cannot be checked now (503, 500).
async fn current_user(
    service: &IdentityService,
    state: &LimitState,
    head: Head<'_>,
) -> Result<Option<User>, HttpResponse> {
    match signed_in(service, state, head).await {
        Ok(who) => Ok(Some(who.user)),
        Err(resp) if resp.status().is_server_error() => Err(resp),
        Err(_) => Ok(None),
    }
}

fn html(status: StatusCode, markup: maud::Markup) -> HttpResponse {
    let mut resp = http::Response::new(axum::body::Body::from(markup.into_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn redirect(to: &str) -> HttpResponse {
    let mut resp = http::Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `{prefix}/assets/{version}/{file}`: only the current version exists.
fn asset(req: &HttpRequest, path: &str) -> HttpResponse {
    let found = path
        .split_once('/')
        .filter(|(version, _)| *version == assets::version())
        .and_then(|(_, file)| assets::get(file));
    let Some(a) = found else {
        let mut resp = http::Response::new(axum::body::Body::from("not found\n"));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = http::Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let mut resp = http::Response::new(axum::body::Body::from(a.body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    resp
}

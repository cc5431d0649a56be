//! CORS decisions: which origins, methods and headers a route allows, with the
//! response header values precomputed at config load.
//!
//! ```
//! use rampart_core::cors::CorsPolicy;
//! use rampart_core::origin::OriginPattern;
//! let p = CorsPolicy::new(
//!     vec![OriginPattern::parse("https://*.example.com").unwrap()],
//!     vec![http::Method::GET, http::Method::POST],
//!     vec![http::header::CONTENT_TYPE],
//!     false, vec![], std::time::Duration::from_secs(60), true,
//! );
//! assert!(p.allows_origin("https://app.example.com"));
//! assert!(p.check_preflight("https://app.example.com", b"POST", "content-type").is_ok());
//! assert!(p.check_preflight("https://evil.test", b"POST", "").is_err());
//! assert!(p.check_preflight("https://app.example.com", b"DELETE", "").is_err());
//! ```

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Method;

use crate::origin::OriginPattern;

/// Why a preflight was refused. The message is safe to show to the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error("origin is not allowed")]
    OriginNotAllowed,
    #[error("method is not allowed")]
    MethodNotAllowed,
    #[error("request header `{0}` is not allowed")]
    HeaderNotAllowed(String),
}

/// Request headers a browser may send without asking (the CORS safelist).
const SAFELISTED: &[&str] = &["accept", "accept-language", "content-language", "content-type"];

/// Compiled CORS rules for one route.
#[derive(Clone, Debug)]
pub struct CorsPolicy {
    origins: Vec<OriginPattern>,
    any_origin: bool,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    any_header: bool,
    credentials: bool,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods_value: HeaderValue,
    /// `Access-Control-Allow-Headers`; `None` when any header is allowed (the
    /// request's list is echoed).
    pub allow_headers_value: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`, when any are exposed.
    pub expose_headers_value: Option<HeaderValue>,
    /// `Access-Control-Max-Age` in seconds.
    pub max_age_value: HeaderValue,
}

impl CorsPolicy {
    pub fn new(
        origins: Vec<OriginPattern>,
        methods: Vec<Method>,
        headers: Vec<HeaderName>,
        any_header: bool,
        expose: Vec<HeaderName>,
        max_age: Duration,
        credentials: bool,
    ) -> Self {
        let join = |items: Vec<&str>| HeaderValue::from_str(&items.join(", ")).ok();
        let any_origin = origins.iter().any(OriginPattern::is_any);
        Self {
            allow_methods_value: join(methods.iter().map(Method::as_str).collect())
                .unwrap_or(HeaderValue::from_static("GET")),
            allow_headers_value: if any_header { None } else { join(headers.iter().map(HeaderName::as_str).collect()) },
            expose_headers_value: if expose.is_empty() {
                None
            } else {
                join(expose.iter().map(HeaderName::as_str).collect())
            },
            max_age_value: HeaderValue::from(max_age.as_secs()),
            origins,
            any_origin,
            methods,
            headers,
            any_header,
            credentials,
        }
    }

    pub fn allows_origin(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|p| p.matches(origin))
    }

    pub fn allows_credentials(&self) -> bool {
        self.credentials
    }

    /// True when the response carries `Access-Control-Allow-Origin: *` rather than
    /// the echoed origin (any origin and no credentials).
    pub fn answers_wildcard(&self) -> bool {
        self.any_origin && !self.credentials
    }

    /// Checks a preflight's origin, `Access-Control-Request-Method` and
    /// `Access-Control-Request-Headers` (comma-separated).
    pub fn check_preflight(&self, origin: &str, method: &[u8], request_headers: &str) -> Result<(), PreflightError> {
        if !self.allows_origin(origin) {
            return Err(PreflightError::OriginNotAllowed);
        }
        if !self.methods.iter().any(|m| m.as_str().as_bytes() == method) {
            return Err(PreflightError::MethodNotAllowed);
        }
        if self.any_header {
            return Ok(());
        }
        for name in request_headers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let known = SAFELISTED.iter().any(|s| s.eq_ignore_ascii_case(name))
                || self.headers.iter().any(|h| h.as_str().eq_ignore_ascii_case(name));
            if !known {
                let shown: String = name.chars().take(64).collect();
                return Err(PreflightError::HeaderNotAllowed(shown));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn policy(origins: &[&str], any_header: bool, credentials: bool) -> CorsPolicy {
        CorsPolicy::new(
            origins.iter().map(|o| OriginPattern::parse(o).unwrap()).collect(),
            vec![Method::GET, Method::PUT],
            vec![HeaderName::from_static("x-api-key")],
            any_header,
            vec![HeaderName::from_static("x-request-id")],
            Duration::from_secs(600),
            credentials,
        )
    }

    #[track_caller]
    fn check(p: &CorsPolicy, origin: &str, method: &str, headers: &str, expected: Result<(), PreflightError>) {
        assert_eq!(p.check_preflight(origin, method.as_bytes(), headers), expected);
    }

    #[test]
    fn preflight_decisions() {
        let p = policy(&["https://app.example.com", "http://localhost:*"], false, true);
        check(&p, "https://app.example.com", "PUT", "X-Api-Key, content-type", Ok(()));
        check(&p, "http://localhost:5173", "GET", "", Ok(()));
        check(&p, "https://evil.example", "GET", "", Err(PreflightError::OriginNotAllowed));
        check(&p, "null", "GET", "", Err(PreflightError::OriginNotAllowed));
        check(&p, "https://app.example.com", "DELETE", "", Err(PreflightError::MethodNotAllowed));
        check(&p, "https://app.example.com", "put", "", Err(PreflightError::MethodNotAllowed));
        check(
            &p,
            "https://app.example.com",
            "GET",
            "x-secret",
            Err(PreflightError::HeaderNotAllowed("x-secret".into())),
        );
        let any = policy(&["*"], true, false);
        check(&any, "https://whatever.test", "GET", "x-anything", Ok(()));
        assert!(any.answers_wildcard());
        assert!(!p.answers_wildcard());
    }

    #[test]
    fn header_values_are_precomputed() {
        let p = policy(&["https://a.test"], false, false);
        assert_eq!(p.allow_methods_value, "GET, PUT");
        assert_eq!(p.allow_headers_value.as_ref().unwrap(), "x-api-key");
        assert_eq!(p.expose_headers_value.as_ref().unwrap(), "x-request-id");
        assert_eq!(p.max_age_value, "600");
    }

    #[test]
    fn hostile_header_lists_do_not_panic() {
        let p = policy(&["https://a.test"], false, false);
        let long = "x,".repeat(100_000);
        assert!(p.check_preflight("https://a.test", b"GET", &long).is_err());
        assert!(p.check_preflight(&"a".repeat(100_000), b"GET", "").is_err());
    }
}

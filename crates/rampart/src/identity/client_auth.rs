//! Client authentication at the token endpoint (RFC 6749 §2.3.1): HTTP Basic
//! (`client_secret_basic`) or `client_id` and `client_secret` in the form
//! (`client_secret_post`), exactly one of them.
//!
//! In Basic, the id and the secret are each form-urlencoded before they are
//! joined with `:` and base64-encoded (§2.3.1), so both are decoded here. A
//! header that is not Basic (a `Bearer` token sent by habit) is no client
//! authentication; a Basic header that does not decode is a failed one.
//!
//! ```
//! use rampart::identity::client_auth::{client_credentials, ClientAuth, Method};
//! let mut headers = http::HeaderMap::new();
//! // base64("svc_1:cs%2Bx") — the secret is `cs+x`.
//! headers.insert("authorization", "Basic c3ZjXzE6Y3MlMkJ4".parse().unwrap());
//! let auth = client_credentials(&headers, None, None).unwrap();
//! assert_eq!(auth, ClientAuth { id: "svc_1".into(), secret: "cs+x".into(), method: Method::Basic });
//! ```

use base64::Engine as _;
use http::header::AUTHORIZATION;

/// How the client authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `client_secret_basic`: a 401 must carry `WWW-Authenticate: Basic`.
    Basic,
    /// `client_secret_post`.
    Post,
}

/// Presented client credentials (not yet checked).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub id: String,
    pub secret: String,
    pub method: Method,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("id", &self.id)
            .field("secret", &"***")
            .field("method", &self.method)
            .finish()
    }
}

/// Why no credentials could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthError {
    /// Neither method was used (or the form had only half of the pair):
    /// `invalid_client`.
    Missing,
    /// An `Authorization: Basic` header that does not decode: `invalid_client`.
    MalformedBasic,
    /// Both methods at once, or a form `client_id` that contradicts Basic:
    /// `invalid_request` (§2.3: one method per request).
    Both,
}

/// Reads the client's credentials from the headers and the form fields.
pub fn client_credentials(
    headers: &http::HeaderMap,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<ClientAuth, ClientAuthError> {
    match basic(headers)? {
        Some((id, secret)) => {
            // A form client_id naming the same client is allowed (some
            // libraries always send it); a second secret is not.
            if form_secret.is_some() || form_id.is_some_and(|f| f != id) {
                return Err(ClientAuthError::Both);
            }
            Ok(ClientAuth { id, secret, method: Method::Basic })
        }
        None => match (form_id, form_secret) {
            (Some(id), Some(secret)) if !id.is_empty() => {
                Ok(ClientAuth { id: id.to_owned(), secret: secret.to_owned(), method: Method::Post })
            }
            _ => Err(ClientAuthError::Missing),
        },
    }
}

/// The id and secret of an `Authorization: Basic` header; `None` without a
/// Basic header.
fn basic(headers: &http::HeaderMap) -> Result<Option<(String, String)>, ClientAuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let is_basic = |v: &http::HeaderValue| {
        v.as_bytes().get(..6).is_some_and(|s| s.eq_ignore_ascii_case(b"basic "))
            || v.as_bytes().eq_ignore_ascii_case(b"basic")
    };
    if values.next().is_some() {
        // Two Authorization headers: refuse rather than pick one.
        return if headers.get_all(AUTHORIZATION).iter().any(is_basic) {
            Err(ClientAuthError::MalformedBasic)
        } else {
            Ok(None)
        };
    }
    if !is_basic(value) {
        return Ok(None);
    }
    let encoded = value.as_bytes().get(6..).unwrap_or_default().trim_ascii();
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| ClientAuthError::MalformedBasic)?;
    let colon = decoded.iter().position(|&b| b == b':').ok_or(ClientAuthError::MalformedBasic)?;
    let (id, secret) = (&decoded[..colon], &decoded[colon + 1..]);
    let (id, secret) = (form_decode(id)?, form_decode(secret)?);
    if id.is_empty() {
        return Err(ClientAuthError::MalformedBasic);
    }
    Ok(Some((id, secret)))
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a
/// space, `%XX` a byte; the result must be UTF-8.
fn form_decode(bytes: &[u8]) -> Result<String, ClientAuthError> {
    let plus_as_space: Vec<u8> = bytes.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(decoded).map_err(|_| ClientAuthError::MalformedBasic)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn headers(values: &[&[u8]]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, http::HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[track_caller]
    fn check(
        values: &[&[u8]],
        form: (Option<&str>, Option<&str>),
        expected: Result<(&str, &str, Method), ClientAuthError>,
    ) {
        let got = client_credentials(&headers(values), form.0, form.1);
        let expected = expected.map(|(id, secret, method)| ClientAuth { id: id.into(), secret: secret.into(), method });
        assert_eq!(got, expected);
    }

    #[test]
    fn one_method_per_request() {
        use ClientAuthError::*;
        let basic = format!("Basic {}", b64(b"svc_a:cs_s"));
        let basic = basic.as_bytes();
        check(&[basic], (None, None), Ok(("svc_a", "cs_s", Method::Basic)));
        check(&[b"basic   c3ZjX2E6Y3Nfcw==  "], (None, None), Ok(("svc_a", "cs_s", Method::Basic)));
        check(&[basic], (Some("svc_a"), None), Ok(("svc_a", "cs_s", Method::Basic)));
        check(&[basic], (Some("svc_b"), None), Err(Both));
        check(&[basic], (Some("svc_a"), Some("cs_s")), Err(Both));
        check(&[], (Some("svc_a"), Some("cs_s")), Ok(("svc_a", "cs_s", Method::Post)));
        check(&[b"Bearer abc"], (Some("svc_a"), Some("cs_s")), Ok(("svc_a", "cs_s", Method::Post)));
        check(&[], (Some("svc_a"), None), Err(Missing));
        check(&[], (None, Some("cs_s")), Err(Missing));
        check(&[], (Some(""), Some("cs_s")), Err(Missing));
        check(&[], (None, None), Err(Missing));
    }

    #[test]
    fn basic_values_are_form_decoded() {
        let h = format!("Basic {}", b64(b"svc%3Aa+b:c%26s%2B%3D"));
        check(&[h.as_bytes()], (None, None), Ok(("svc:a b", "c&s+=", Method::Basic)));
        let empty_secret = format!("Basic {}", b64(b"svc_a:"));
        check(&[empty_secret.as_bytes()], (None, None), Ok(("svc_a", "", Method::Basic)));
    }

    #[test]
    fn hostile_basic_headers_are_errors() {
        use ClientAuthError::MalformedBasic;
        let no_colon = format!("Basic {}", b64(b"svc_a"));
        let no_id = format!("Basic {}", b64(b":secret"));
        let not_utf8 = format!("Basic {}", b64(b"svc_\xff:x"));
        let bad_percent = format!("Basic {}", b64(b"svc_%ff:x"));
        let ok = format!("Basic {}", b64(b"svc_a:cs_s"));
        for v in [
            b"Basic" as &[u8],
            b"Basic ",
            b"Basic !!!!",
            b"Basic c3Zj\xff",
            no_colon.as_bytes(),
            no_id.as_bytes(),
            not_utf8.as_bytes(),
            bad_percent.as_bytes(),
        ] {
            check(&[v], (None, None), Err(MalformedBasic));
        }
        check(&[ok.as_bytes(), b"Bearer x"], (None, None), Err(MalformedBasic));
        check(&[b"Bearer x", b"Bearer y"], (Some("a"), Some("b")), Ok(("a", "b", Method::Post)));
    }
}

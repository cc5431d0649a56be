//! Talking to an OpenID provider: its discovery document, its token endpoint
//! and its userinfo endpoint, over one pooled HTTPS client (plain HTTP only to
//! the loopback issuers the config allows, see
//! [`rampart_core::config::oidc::check_provider_url`]).
//!
//! Every request has [`TIMEOUT`] for the answer and its body together, and
//! bodies are read up to a bound, so a slow or hostile provider costs a login
//! attempt, never memory or a stuck task.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart_core::config::oidc::{check_provider_url, ClientAuthMethod, OidcProviderSettings};
use serde::Deserialize;

/// Time for one request to a provider, answer and body together.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document read.
pub const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
/// Largest token or userinfo response read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a request to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No answer, a broken answer, or an answer that breaks the protocol.
    #[error("{0}")]
    Unavailable(String),
    /// The provider answered with an OAuth error (RFC 6749 §5.2), e.g.
    /// `invalid_grant` for a spent or unknown code. The code is kept only
    /// when it is a plain token (it is shown to the client).
    #[error("the provider refused: {error}")]
    Refused { status: u16, error: String },
}

/// The parts of a discovery document (OpenID Connect Discovery 1.0 §3) we use.
#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// RFC 9207: the provider names itself in every authorization response.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

impl Discovery {
    /// Checks the document against the configured provider: the same issuer,
    /// exactly (Discovery §4.3), and endpoints that are https (or loopback
    /// http, as the issuer may be).
    fn check(&self, settings: &OidcProviderSettings) -> Result<(), ProviderError> {
        if self.issuer != settings.issuer {
            return Err(ProviderError::Unavailable(format!(
                "the discovery document names issuer `{}`, not the configured `{}`",
                self.issuer, settings.issuer
            )));
        }
        let endpoints = [
            ("authorization_endpoint", Some(&self.authorization_endpoint)),
            ("token_endpoint", Some(&self.token_endpoint)),
            ("jwks_uri", Some(&self.jwks_uri)),
            ("userinfo_endpoint", self.userinfo_endpoint.as_ref()),
        ];
        for (name, url) in endpoints {
            if let Some(url) = url {
                check_provider_url(url)
                    .map_err(|why| ProviderError::Unavailable(format!("the discovery document's {name} {why}")))?;
            }
        }
        Ok(())
    }

    /// How to authenticate at the token endpoint: as configured, else HTTP
    /// Basic (the default of RFC 6749 and of the discovery document) unless
    /// the provider offers only `client_secret_post`.
    pub fn client_auth(&self, settings: &OidcProviderSettings) -> ClientAuthMethod {
        if let Some(method) = settings.client_auth {
            return method;
        }
        match &self.token_endpoint_auth_methods_supported {
            Some(methods)
                if !methods.iter().any(|m| m == "client_secret_basic")
                    && methods.iter().any(|m| m == "client_secret_post") =>
            {
                ClientAuthMethod::Post
            }
            _ => ClientAuthMethod::Basic,
        }
    }
}

/// A successful token response (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Deserialize)]
pub struct TokenResponse {
    pub id_token: Option<String>,
    pub access_token: Option<String>,
    pub token_type: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenResponse { .. }")
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HTTP client of every provider.
#[derive(Clone)]
pub struct ProviderClient {
    client: HttpsClient,
}

impl ProviderClient {
    pub fn new() -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        // Which URLs may be plain http is decided by the config checks.
        http.enforce_http(false);
        http.set_connect_timeout(Some(TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self { client: Client::builder(TokioExecutor::new()).build(connector) })
    }

    /// Fetches and checks the provider's discovery document.
    pub async fn discover(&self, settings: &OidcProviderSettings) -> Result<Discovery, ProviderError> {
        let req = http::Request::get(&settings.discovery_url)
            .header(ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| ProviderError::Unavailable(format!("discovery URL: {e}")))?;
        let (status, body) = self.send(req, MAX_DISCOVERY_BYTES).await?;
        if status != 200 {
            return Err(ProviderError::Unavailable(format!("discovery answered {status}")));
        }
        let doc: Discovery = crate::untrusted_json::from_slice(&body)
            .map_err(|e| ProviderError::Unavailable(format!("the discovery document is not usable: {e}")))?;
        doc.check(settings)?;
        Ok(doc)
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3, with the PKCE
    /// verifier of RFC 7636 §4.5).
    pub async fn exchange_code(
        &self,
        settings: &OidcProviderSettings,
        doc: &Discovery,
        code: &str,
        verifier: &str,
    ) -> Result<TokenResponse, ProviderError> {
        let method = doc.client_auth(settings);
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &settings.redirect_uri)
                .append_pair("code_verifier", verifier);
            if method == ClientAuthMethod::Post {
                form.append_pair("client_id", &settings.client_id)
                    .append_pair("client_secret", settings.client_secret.expose());
            }
            form.finish()
        };
        let mut req = http::Request::post(&doc.token_endpoint)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if method == ClientAuthMethod::Basic {
            req = req.header(AUTHORIZATION, basic_auth(&settings.client_id, settings.client_secret.expose()));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ProviderError::Unavailable(format!("token request: {e}")))?;
        let (status, body) = self.send(req, MAX_RESPONSE_BYTES).await?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        crate::untrusted_json::from_slice(&body)
            .map_err(|_| ProviderError::Unavailable("the token response is not the expected JSON".into()))
    }

    /// The userinfo claims (OpenID Connect Core §5.3) for an access token.
    pub async fn userinfo(&self, endpoint: &str, access_token: &str) -> Result<serde_json::Value, ProviderError> {
        let req = http::Request::get(endpoint)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, format!("Bearer {access_token}"))
            .body(Full::default())
            .map_err(|e| ProviderError::Unavailable(format!("userinfo request: {e}")))?;
        let (status, body) = self.send(req, MAX_RESPONSE_BYTES).await?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        // A signed (JWT) userinfo answer is not supported: we ask for JSON.
        match crate::untrusted_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v.is_object() => Ok(v),
            _ => Err(ProviderError::Unavailable("the userinfo response is not a JSON object".into())),
        }
    }

    async fn send(&self, req: http::Request<Full<Bytes>>, limit: usize) -> Result<(u16, Bytes), ProviderError> {
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| ProviderError::Unavailable(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| ProviderError::Unavailable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(ProviderError::Unavailable(format!("no answer within {TIMEOUT:?}"))))
    }
}

/// `Authorization: Basic` with the id and secret form-encoded first (RFC 6749 §2.3.1).
fn basic_auth(id: &str, secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// The OAuth error of a refused request, or "unavailable" for answers that
/// are not one (a 5xx, an HTML page).
fn refusal(status: u16, body: &[u8]) -> ProviderError {
    #[derive(Deserialize)]
    struct OauthError {
        error: String,
    }
    match serde_json::from_slice::<OauthError>(body) {
        Ok(e) if (400..500).contains(&status) => {
            let plain = !e.error.is_empty()
                && e.error.len() <= 64
                && e.error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit());
            ProviderError::Refused { status, error: if plain { e.error } else { "unknown_error".into() } }
        }
        _ => ProviderError::Unavailable(format!("the provider answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn basic_auth_form_encodes_first() {
        // RFC 6749 §2.3.1: "a:b" → "a%3Ab"; spaces become `+`.
        let header = basic_auth("my client", "s:e/cret");
        let decoded = base64::engine::general_purpose::STANDARD.decode(header.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "my+client:s%3Ae%2Fcret");
    }

    #[test]
    fn refusals_keep_only_plain_error_codes() {
        let e = refusal(400, br#"{"error":"invalid_grant","error_description":"<script>"}"#);
        assert!(matches!(e, ProviderError::Refused { status: 400, ref error } if error == "invalid_grant"));
        let e = refusal(400, br#"{"error":"<b>x</b>"}"#);
        assert!(matches!(e, ProviderError::Refused { ref error, .. } if error == "unknown_error"));
        assert!(matches!(refusal(502, b"<html>"), ProviderError::Unavailable(_)));
        assert!(matches!(refusal(500, br#"{"error":"server_error"}"#), ProviderError::Unavailable(_)));
    }

    #[test]
    fn the_token_endpoint_method_follows_config_then_discovery() {
        let doc = |methods: Option<&[&str]>| Discovery {
            issuer: "https://op.example".into(),
            authorization_endpoint: "https://op.example/auth".into(),
            token_endpoint: "https://op.example/token".into(),
            jwks_uri: "https://op.example/jwks".into(),
            userinfo_endpoint: None,
            token_endpoint_auth_methods_supported: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            authorization_response_iss_parameter_supported: false,
        };
        let mut settings = test_settings();
        assert_eq!(doc(None).client_auth(&settings), ClientAuthMethod::Basic);
        assert_eq!(doc(Some(&["client_secret_post"])).client_auth(&settings), ClientAuthMethod::Post);
        let both = doc(Some(&["client_secret_post", "client_secret_basic"]));
        assert_eq!(both.client_auth(&settings), ClientAuthMethod::Basic);
        settings.client_auth = Some(ClientAuthMethod::Post);
        assert_eq!(both.client_auth(&settings), ClientAuthMethod::Post);
        assert!(doc(None).check(&settings).is_ok());
        let mut other = doc(None);
        other.issuer = "https://op.example/".into();
        assert!(other.check(&settings).is_err(), "issuers compare exactly");
        let mut plain = doc(None);
        plain.token_endpoint = "http://op.example/token".into();
        assert!(plain.check(&settings).is_err());
    }

    pub(crate) fn test_settings() -> OidcProviderSettings {
        OidcProviderSettings {
            name: "op".into(),
            display_name: "OP".into(),
            issuer: "https://op.example".into(),
            discovery_url: "https://op.example/.well-known/openid-configuration".into(),
            client_id: "rampart".into(),
            client_secret: rampart_core::config::secret::Secret::new("s"),
            scopes: vec!["openid".into()],
            link_by_verified_email: false,
            create_users: false,
            client_auth: None,
            redirect_uri: "https://gw.example/auth/oidc/op/callback".into(),
        }
    }
}

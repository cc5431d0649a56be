//! Who a request is from, once authenticated: the `Principal` that rate limits,
//! authorization and the identity headers sent upstream all read.

/// How the principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    Session,
    Signature,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Session => "session",
            Self::Signature => "signature",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Opaque, stable id of the user or service client (never an e-mail).
    pub subject: String,
    /// The API key's id when one was used.
    pub api_key_id: Option<String>,
    /// The external issuer (`[[auth.issuers]]`, the token's `iss`) that
    /// vouched for `subject`; `None` for the gateway's own users and
    /// clients. Counts keyed by user take it in, so that one issuer's `sub`
    /// never shares another's limits or budget.
    pub issuer: Option<String>,
    /// Plan tier (`free`, `pro`, …) from the token or account.
    pub tier: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub method: AuthMethod,
}

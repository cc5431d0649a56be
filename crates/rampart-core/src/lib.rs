//! Pure policy logic of the Rampart security gateway.
//!
//! **Architecture invariant:** this crate does no I/O, spawns nothing and reads no
//! clock. Everything here is a function of its inputs, so the request path's
//! decisions (which route, which client address, is this path safe, may this
//! origin call us) are cheap to test exhaustively and to fuzz. The service crate
//! `rampart` owns sockets, files, time and state.
//!
//! - [`config`]: the `rampart.toml` model, environment overrides, validation and
//!   compilation into a runtime [`config::Policy`].
//! - [`route`]: host/method/path route matching.
//! - [`gcra`]: exact rate-limit and budget decisions, one timestamp per key.
//! - [`client_ip`]: the client's address from the socket peer and trusted proxies.
//! - [`path`]: request path decoding and rejection of ambiguous forms.
//! - [`origin`] and [`cors`]: CORS origin patterns and preflight decisions.
//! - [`request_id`]: which inbound request ids may be reused.
//! - [`principal`]: the authenticated caller.
//! - [`pii`]: card numbers, SSNs, e-mail addresses and phone numbers redacted from text.
//! - [`abuse`]: heavy hitters and spike detection in bounded memory.
//! - [`inspect`]: SQL injection, XSS, path traversal and command injection in input values.
//! - [`password`]: password hashing, verification of imported hashes, and the NIST password policy.
//! - [`token`]: JWT access tokens: issuing, strict verification, keys, rotation and JWKS.
//! - [`signature`]: HMAC-SHA256 request signatures: the canonical request, its MAC, the headers.

pub mod abuse;
pub mod api_key;
pub mod client_ip;
pub mod config;
pub mod cors;
pub mod gcra;
pub mod inspect;
pub mod origin;
pub mod password;
pub mod path;
pub mod pii;
pub mod principal;
pub mod request_id;
pub mod route;
pub mod signature;
pub mod token;
pub mod totp;

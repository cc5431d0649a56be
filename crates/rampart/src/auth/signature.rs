//! Signed requests on the request path: on routes with `auth = "optional"`
//! or `"required"`, a request carrying `X-Rampart-Signature` is
//! authenticated by its HMAC signature alone (no bearer token needed), as the
//! service client that owns the key. Format: [`rampart_core::signature`];
//! keys and nonces: [`crate::identity::signatures`].
//!
//! Checks, cheapest first:
//! 1. the four headers are present once each and well formed;
//! 2. the key id is known, not revoked or expired, and its client is enabled
//!    (from memory; 503 if the keys have not been read for 30 s);
//! 3. the timestamp is within `[identity.signatures] window` of now;
//! 4. the body is read, up to the route's `body_limit` (more is 413, a stalled
//!    body 408), and hashed as it arrives;
//! 5. the MAC over the canonical request is compared in constant time;
//! 6. only then is the nonce recorded, refusing one seen within the window
//!    (503 if the in-process cache is full of live nonces and Redis cannot
//!    decide instead).
//!
//! Every refusal of the request itself is the bearer layer's one generic 401
//! problem, its reason only in metrics, the log and the audit log, and a
//! strike towards an automatic ban. An accepted request goes upstream with the
//! buffered body, without the signature headers, and with the identity
//! headers of the client (`X-Rampart-Auth-Method: signature`).

use std::sync::Arc;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::HeaderMap;
use http_body_util::BodyExt;
use rampart_core::signature::{self, Presented, SignatureError};
use sha2::{Digest, Sha256};

use super::{AuthFailure, Shared};
use crate::edge::guard::BodyFailure;
use crate::edge::route::MatchedRoute;
use crate::edge::{take_ready, HttpRequest, Inner, LayerFuture};
use crate::identity::service::now_ms;
use crate::identity::signatures::nonces::Seen;
use crate::identity::signatures::{LiveKey, Signatures};
use crate::problem::Problem;

/// What the head of a signed request established, owned so the body can be
/// awaited.
struct Checked {
    key: Arc<LiveKey>,
    timestamp: String,
    unix: u64,
    nonce: String,
    version: signature::Version,
    mac: [u8; 32],
}

impl Shared {
    /// The signature checker, when `[identity.signatures]` is on.
    pub(super) fn signatures(&self) -> Option<&Arc<Signatures>> {
        self.state.identity().and_then(|i| i.signatures.as_ref())
    }

    /// Authenticates a request that carries `X-Rampart-Signature`.
    pub(super) fn signed<S: Inner>(
        self: &Arc<Self>,
        signatures: &Arc<Signatures>,
        req: HttpRequest,
        inner: &mut S,
    ) -> Either<S::Future, LayerFuture> {
        // A forward-auth check comes without the request's body, which the
        // proxy passes on unseen: a signature over it (an empty one) would
        // let any body through. Only methods without one are checked there.
        let checked_only = req.extensions().get::<crate::edge::forward_auth::ForwardAuthCheck>().is_some();
        if checked_only && !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
            return self.refused_now(&req, AuthFailure::Signature("body_not_checkable"));
        }
        let now = now_ms();
        let checked = match check_head(signatures, req.headers(), now) {
            Ok(c) => c,
            Err(failure) => return self.refused_now(&req, failure),
        };
        // A v1 MAC does not cover the order of a repeated name's values;
        // it counts only where that order is the one v1 signed.
        if checked.version == signature::Version::V1 && !signature::v1_order_holds(req.uri().query().unwrap_or("")) {
            return self.refused_now(&req, AuthFailure::Signature(SignatureError::UnorderedQuery.reason()));
        }
        let limit = req.extensions().get::<MatchedRoute>().map_or(u64::MAX, |r| r.0.body_limit);
        let (shared, signatures, mut inner) = (self.clone(), signatures.clone(), take_ready(inner));
        Either::Right(Box::pin(async move {
            let (parts, body) = req.into_parts();
            let (body, digest) = match read_body(body, limit).await {
                Ok(read) => read,
                Err(problem) => return Ok(problem.into_response_for(&parts.extensions)),
            };
            let canonical = signature::canonical_request(
                checked.version,
                parts.method.as_str(),
                parts.uri.path(),
                parts.uri.query(),
                &checked.timestamp,
                &checked.nonce,
                &digest,
            );
            let mut req = HttpRequest::from_parts(parts, Body::from(body));
            if !checked.key.verifies(&canonical, &checked.mac) {
                return Ok(shared.refusal(&req, AuthFailure::Signature(SignatureError::Mismatch.reason())));
            }
            // The body may have taken a while: the window is judged again
            // now, and the nonce checked against now. Judged only when the
            // head arrived, a replay could send its head within the window
            // and its body after the original's nonce was forgotten.
            let now = now_ms();
            if checked.unix.abs_diff(now / 1000) > signatures.settings.window.as_secs() {
                return Ok(shared.refusal(&req, AuthFailure::Signature(SignatureError::OutsideWindow.reason())));
            }
            let redis = shared.state.limiter.redis.as_ref();
            let seen = signatures.check_nonce(redis, &checked.key.key_id, &checked.nonce, checked.unix, now / 1000);
            match seen.await {
                Seen::Fresh => {}
                Seen::Replayed => return Ok(shared.refusal(&req, AuthFailure::Signature("signature_replayed"))),
                Seen::Full => return Ok(shared.refusal(&req, AuthFailure::SignaturesUnavailable("nonce_cache_full"))),
            }
            for name in signature::HEADERS {
                req.headers_mut().remove(name);
            }
            shared.admit(&mut req, checked.key.verified.clone());
            inner.call(req).await
        }))
    }
}

/// Steps 1–3: everything that needs no body.
fn check_head(signatures: &Signatures, headers: &HeaderMap, now_ms: u64) -> Result<Checked, AuthFailure> {
    let presented = match Presented::from_headers(headers) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(AuthFailure::Signature(e.reason())),
        None => return Err(AuthFailure::Signature(SignatureError::Incomplete.reason())),
    };
    if !signatures.is_current(now_ms) {
        return Err(AuthFailure::SignaturesUnavailable("signing_keys_unavailable"));
    }
    let key = signatures.key(presented.key_id).ok_or(AuthFailure::Signature("signing_key_unknown"))?;
    key.usable(now_ms).map_err(AuthFailure::Signature)?;
    if !presented.within_window(now_ms / 1000, signatures.settings.window.as_secs()) {
        return Err(AuthFailure::Signature(SignatureError::OutsideWindow.reason()));
    }
    Ok(Checked {
        key,
        timestamp: presented.timestamp.to_owned(),
        unix: presented.unix,
        nonce: presented.nonce.to_owned(),
        version: presented.version,
        mac: presented.mac,
    })
}

/// Reads the whole body (at most `limit` bytes), hashing it as it arrives.
/// Trailers are dropped.
async fn read_body(body: Body, limit: u64) -> Result<(Bytes, [u8; 32]), Problem> {
    let mut body = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let mut hasher = Sha256::new();
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let err: &(dyn std::error::Error + 'static) = &*e;
            match BodyFailure::of(err) {
                Some(failure) => failure.problem(limit),
                None => Problem::new(http::StatusCode::BAD_REQUEST, "bad-request", "Bad request")
                    .detail("the request body could not be read")
                    .rejected_by("auth", "body_error"),
            }
        })?;
        let Ok(data) = frame.into_data() else { continue };
        hasher.update(&data);
        // One chunk (the usual case) is passed on as it is, without a copy.
        if first.is_none() && more.is_empty() {
            first = Some(data);
        } else {
            if let Some(f) = first.take() {
                more.extend_from_slice(&f);
            }
            more.extend_from_slice(&data);
        }
    }
    let bytes = first.unwrap_or_else(|| more.freeze());
    Ok((bytes, hasher.finalize().into()))
}

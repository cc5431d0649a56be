//! Integration tests: one binary for all of them, so that the suite links the
//! gateway once (17 binaries of it filled the CI disk and cost a link each).

mod common;
// First: its `on_both_backends!` macro is used by the modules after it.
#[macro_use]
mod identity;

mod abuse;
mod admin;
mod alerts;
mod api_keys;
mod audit;
mod audit_layers;
mod auth;
mod authorize;
mod browser;
mod cli;
mod distributed;
mod edge_headers;
mod fastapi;
mod forward_auth;
mod geo;
mod guards;
mod identity_store;
mod inspect;
mod layers;
mod limit_scopes;
mod limit_stages;
mod limits;
mod mfa;
mod migrate_storage;
mod oidc;
mod openapi;
mod passkeys;
mod passlib_import;
mod password_reset;
mod privacy;
mod proxy;
mod redis_limits;
mod resilience;
mod service_clients;
mod sessions;
mod shedding;
mod signatures;
mod tls;
mod upstream_pool;
mod web;

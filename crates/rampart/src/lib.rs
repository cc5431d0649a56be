//! Rampart: a security gateway for HTTP APIs.
//!
//! Use it as a binary (`rampart serve`), or take its protections as tower layers
//! into your own axum/hyper service (see [`edge`] and `examples/axum_layers.rs`).
//!
//! - [`app`]: config to policy to service stack; atomic reload.
//! - [`server`]: listeners, TLS, graceful shutdown.
//! - [`console`]: what the admin API reads from and does to the running gateway.
//! - [`edge`]: the edge layers (request id, client IP, route, security headers,
//!   trusted hosts, request guards, CORS).
//! - [`proxy`]: the upstream client and forwarding.
//! - [`observe`]: access log, metrics, health, the audit log.
//! - [`store`]: the database (SQLite or PostgreSQL) and its migrations.
//! - [`problem`]: RFC 9457 problem documents.

pub mod app;
pub mod auth;
pub mod console;
pub mod echo;
pub mod edge;
pub mod identity;
pub mod inspect;
pub mod limit;
pub mod observe;
pub mod preface;
pub mod problem;
pub mod proxy;
pub mod server;
pub mod store;
pub mod streams;
pub mod tls;
pub mod untrusted_json;
pub mod web;
pub mod workers;

#[cfg(test)]
mod testing;

pub use server::Gateway;

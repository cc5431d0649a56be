//! The gateway's own identity service, as it is built: for now the bounded
//! password-hashing pool ([`hasher`]). Users, logins and token issuing build on
//! it, on the stores in [`crate::store::identity`], and on the pure password and
//! token logic in `rampart_core::{password, token}`.

pub mod hasher;

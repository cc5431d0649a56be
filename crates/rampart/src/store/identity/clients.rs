//! The `service_clients` table: OAuth2 clients that get tokens for
//! themselves with the `client_credentials` grant (RFC 6749 §4.4), each with
//! a hashed secret, the scopes it may ask for and optional roles.
//!
//! Secrets are made by Rampart (see [`crate::identity::clients`]) and stored
//! only as their SHA-256 ([`TokenHash`]): they are 32 random bytes, so a
//! copy of the table gives nothing to guess at and a slow password hash would
//! only cost time at every token request. Rotation replaces the hash in one
//! statement, so the old secret stops working at once.
//!
//! Scopes must be RFC 6749 scope tokens (they travel space-separated in the
//! `scope` parameter and claim); roles follow the users' rules. Both are
//! stored as sorted JSON arrays, like `users.roles`.

use std::future::Future;

use rampart_core::token::is_scope_token;

use super::{
    check_required, from_db, from_db_opt, storable, to_db, with_pool, Result, StoreError, TokenHash, MAX_ID_BYTES,
    MAX_ROLES, MAX_ROLE_BYTES,
};
use crate::store::Database;

/// Longest client name.
pub const MAX_CLIENT_NAME_BYTES: usize = 256;

/// A client to create.
#[derive(Clone, Debug)]
pub struct NewServiceClient {
    pub client_id: String,
    pub name: String,
    pub secret_hash: TokenHash,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
}

/// A stored client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceClient {
    pub client_id: String,
    pub name: String,
    pub secret_hash: TokenHash,
    /// Sorted, without duplicates: every scope the client may be granted.
    pub scopes: Vec<String>,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: u64,
    pub updated_at: u64,
    pub last_used_at: Option<u64>,
}

/// Storage for service clients.
pub trait ServiceClientStore: Send + Sync {
    /// Stores a client; a taken `client_id` is [`StoreError::Conflict`].
    fn create_client(&self, new: &NewServiceClient, now: u64) -> impl Future<Output = Result<ServiceClient>> + Send;

    /// The client, if there is one with this id (an id that could not be
    /// stored answers `None` without a query).
    fn client_by_id(&self, client_id: &str) -> impl Future<Output = Result<Option<ServiceClient>>> + Send;

    /// Every client, by id.
    fn list_clients(&self) -> impl Future<Output = Result<Vec<ServiceClient>>> + Send;

    /// Refuses (or allows again) the client's token requests.
    fn set_client_disabled(&self, client_id: &str, disabled: bool, now: u64)
        -> impl Future<Output = Result<()>> + Send;

    /// Replaces the secret's hash: the old secret stops working at once.
    fn rotate_client_secret(
        &self,
        client_id: &str,
        hash: &TokenHash,
        now: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Notes a token issued to the client (one write per token, not per request).
    fn record_client_use(&self, client_id: &str, now: u64) -> impl Future<Output = Result<()>> + Send;

    /// Deletes the client; returns whether there was one.
    fn delete_client(&self, client_id: &str) -> impl Future<Output = Result<bool>> + Send;
}

macro_rules! select_clients {
    ($rest:literal) => {
        concat!(
            "SELECT client_id, name, secret_hash, scopes, roles, disabled, created_at, updated_at, last_used_at \
             FROM service_clients ",
            $rest
        )
    };
}

const BY_ID: &str = select_clients!("WHERE client_id = $1");
const LIST: &str = select_clients!("ORDER BY client_id");
const INSERT: &str = "INSERT INTO service_clients \
                      (client_id, name, secret_hash, scopes, roles, disabled, created_at, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, FALSE, $6, $6)";
const SET_DISABLED: &str = "UPDATE service_clients SET disabled = $2, updated_at = $3 WHERE client_id = $1";
const ROTATE: &str = "UPDATE service_clients SET secret_hash = $2, updated_at = $3 WHERE client_id = $1";
const RECORD_USE: &str = "UPDATE service_clients SET last_used_at = $2 WHERE client_id = $1";
const DELETE: &str = "DELETE FROM service_clients WHERE client_id = $1";

row! {
    struct Row {
        client_id: String,
        name: String,
        secret_hash: Vec<u8>,
        scopes: String,
        roles: String,
        disabled: bool,
        created_at: i64,
        updated_at: i64,
        last_used_at: Option<i64>,
    }
}

impl Row {
    fn into_client(self) -> Result<ServiceClient> {
        let list = |what: &'static str, text: &str| {
            serde_json::from_str::<Vec<String>>(text).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })
        };
        Ok(ServiceClient {
            secret_hash: TokenHash::from_stored(&self.secret_hash)?,
            scopes: list("client scopes", &self.scopes)?,
            roles: list("client roles", &self.roles)?,
            client_id: self.client_id,
            name: self.name,
            disabled: self.disabled,
            created_at: from_db("created_at", self.created_at)?,
            updated_at: from_db("updated_at", self.updated_at)?,
            last_used_at: from_db_opt("last_used_at", self.last_used_at)?,
        })
    }
}

/// Names as stored: each checked by `valid`, sorted, deduplicated, as JSON.
fn names_json(
    field: &'static str,
    names: &[String],
    valid: impl Fn(&str) -> bool,
    reason: &'static str,
) -> Result<(Vec<String>, String)> {
    if names.len() > MAX_ROLES * 4 {
        return Err(StoreError::Invalid { field, reason: "too many" });
    }
    for name in names {
        check_required(field, name, MAX_ROLE_BYTES)?;
        if !valid(name) {
            return Err(StoreError::Invalid { field, reason });
        }
    }
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() > MAX_ROLES {
        return Err(StoreError::Invalid { field, reason: "too many" });
    }
    let json =
        serde_json::to_string(&sorted).map_err(|e| StoreError::Corrupt { what: field, reason: e.to_string() })?;
    Ok((sorted, json))
}

pub(super) fn scopes_json(scopes: &[String]) -> Result<(Vec<String>, String)> {
    names_json("scope", scopes, is_scope_token, "not an RFC 6749 scope token")
}

pub(super) fn roles_json(roles: &[String]) -> Result<(Vec<String>, String)> {
    names_json("role", roles, |r| !r.chars().any(char::is_control), "contains a control character")
}

/// A client id: printable ASCII without spaces or `:` (which would break
/// HTTP Basic authentication).
fn check_client_id(id: &str) -> Result<()> {
    check_required("client_id", id, MAX_ID_BYTES)?;
    if !id.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(StoreError::Invalid { field: "client_id", reason: "must be printable ASCII without ':'" });
    }
    Ok(())
}

fn changed(rows: u64) -> Result<()> {
    if rows == 0 {
        Err(StoreError::NotFound { what: "client" })
    } else {
        Ok(())
    }
}

impl Database {
    /// Runs an UPDATE of the client `$1` with `$2` (a flag or hash) and `$3` (a time).
    async fn update_client(&self, id: &str, sql: &'static str, value: ClientValue<'_>, now: u64) -> Result<()> {
        let at = to_db("now", now)?;
        if !storable(id, MAX_ID_BYTES) {
            return Err(StoreError::NotFound { what: "client" });
        }
        let rows = with_pool!(self, |pool| {
            let q = sqlx::query(sql).bind(id);
            let q = match value {
                ClientValue::Flag(b) => q.bind(b).bind(at),
                ClientValue::Hash(h) => q.bind(h.as_bytes().as_slice()).bind(at),
                ClientValue::None => q.bind(at),
            };
            q.execute(pool).await?.rows_affected()
        });
        changed(rows)
    }
}

enum ClientValue<'a> {
    Flag(bool),
    Hash(&'a TokenHash),
    None,
}

impl ServiceClientStore for Database {
    #[tracing::instrument(skip_all)]
    async fn create_client(&self, new: &NewServiceClient, now: u64) -> Result<ServiceClient> {
        check_client_id(&new.client_id)?;
        check_required("name", &new.name, MAX_CLIENT_NAME_BYTES)?;
        if new.name.chars().any(char::is_control) {
            return Err(StoreError::Invalid { field: "name", reason: "contains a control character" });
        }
        let (scopes, scopes_json) = scopes_json(&new.scopes)?;
        let (roles, roles_json) = roles_json(&new.roles)?;
        let at = to_db("now", now)?;
        with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(&new.client_id)
                .bind(&new.name)
                .bind(new.secret_hash.as_bytes().as_slice())
                .bind(&scopes_json)
                .bind(&roles_json)
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(ServiceClient {
            client_id: new.client_id.clone(),
            name: new.name.clone(),
            secret_hash: new.secret_hash,
            scopes,
            roles,
            disabled: false,
            created_at: now,
            updated_at: now,
            last_used_at: None,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn client_by_id(&self, client_id: &str) -> Result<Option<ServiceClient>> {
        if !storable(client_id, MAX_ID_BYTES) {
            return Ok(None);
        }
        let row: Option<Row> =
            with_pool!(self, |pool| { sqlx::query_as(BY_ID).bind(client_id).fetch_optional(pool).await? });
        row.map(Row::into_client).transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn list_clients(&self) -> Result<Vec<ServiceClient>> {
        let rows: Vec<Row> = with_pool!(self, |pool| { sqlx::query_as(LIST).fetch_all(pool).await? });
        rows.into_iter().map(Row::into_client).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn set_client_disabled(&self, client_id: &str, disabled: bool, now: u64) -> Result<()> {
        self.update_client(client_id, SET_DISABLED, ClientValue::Flag(disabled), now).await
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_client_secret(&self, client_id: &str, hash: &TokenHash, now: u64) -> Result<()> {
        self.update_client(client_id, ROTATE, ClientValue::Hash(hash), now).await
    }

    #[tracing::instrument(skip_all)]
    async fn record_client_use(&self, client_id: &str, now: u64) -> Result<()> {
        self.update_client(client_id, RECORD_USE, ClientValue::None, now).await
    }

    #[tracing::instrument(skip_all)]
    async fn delete_client(&self, client_id: &str) -> Result<bool> {
        if !storable(client_id, MAX_ID_BYTES) {
            return Ok(false);
        }
        let rows =
            with_pool!(self, |pool| { sqlx::query(DELETE).bind(client_id).execute(pool).await?.rows_affected() });
        Ok(rows > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn scopes_must_be_scope_tokens_and_are_sorted() {
        let (scopes, json) = scopes_json(&["write".into(), "read".into(), "read".into()]).unwrap();
        assert_eq!(scopes, ["read", "write"]);
        assert_eq!(json, r#"["read","write"]"#);
        for bad in ["two words", "quote\"", "back\\slash", ""] {
            assert!(scopes_json(&[bad.into()]).is_err(), "{bad:?}");
        }
        assert!(roles_json(&["a\nb".into()]).is_err());
        assert!(roles_json(&["two words".into()]).is_ok());
    }

    #[test]
    fn client_ids_cannot_break_basic_authentication() {
        assert!(check_client_id("svc_abc-DEF_123").is_ok());
        for bad in ["", "a:b", "a b", "é", "a\0"] {
            assert!(check_client_id(bad).is_err(), "{bad:?}");
        }
    }
}

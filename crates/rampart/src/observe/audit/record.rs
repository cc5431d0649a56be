//! The event a caller hands in, the record that is stored, and the hash that
//! chains each record to the one before it.
//!
//! A record's `hash` is the hex SHA-256 of its canonical serialisation: a JSON
//! object with the fields `seq, ts_ms, kind, subject, ip, request_id, detail,
//! prev_hash` in that order, object keys inside `detail` sorted at every depth,
//! no whitespace. Because `prev_hash` is part of what is hashed, changing,
//! removing, adding or moving any record breaks the chain at that point.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record of a log that was never purged.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest string kept in `subject`, `request_id` and `detail` values, in characters.
pub const MAX_VALUE_CHARS: usize = 200;
/// Longest key kept in `detail`, in characters.
const MAX_KEY_CHARS: usize = 64;
/// Most values (at any depth) kept in one `detail`, so one record stays small:
/// room for a user's 64 roles (`roles_set`) beside the action's own fields.
const MAX_DETAIL_VALUES: usize = 80;
/// Deepest nesting kept in `detail`; deeper values become `"…"`.
const MAX_DETAIL_DEPTH: usize = 4;

/// What happened. The string forms (`as_str`) are what is stored and searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    AuthSuccess,
    AuthFailure,
    Lockout,
    PasswordChanged,
    /// A reset token was asked for (the outcome is in the detail).
    PasswordResetRequested,
    /// A password was set with a reset token.
    PasswordReset,
    MfaChanged,
    KeyChanged,
    SessionChanged,
    BanAdded,
    BanRemoved,
    InputBlocked,
    BudgetExhausted,
    RateLimited,
    AdminAction,
    ConfigReloaded,
    ConfigReloadFailed,
    TrafficSpike,
    UpstreamCircuit,
    /// An account at an external login provider was linked to or unlinked
    /// from a user (the action and provider are in the detail).
    ExternalIdentityChanged,
    /// A cookie-authenticated request refused by the CSRF checks.
    CsrfRejected,
}

impl AuditKind {
    /// Every kind, in declaration order.
    pub const ALL: [AuditKind; 21] = [
        Self::AuthSuccess,
        Self::AuthFailure,
        Self::Lockout,
        Self::PasswordChanged,
        Self::PasswordResetRequested,
        Self::PasswordReset,
        Self::MfaChanged,
        Self::KeyChanged,
        Self::SessionChanged,
        Self::BanAdded,
        Self::BanRemoved,
        Self::InputBlocked,
        Self::BudgetExhausted,
        Self::RateLimited,
        Self::AdminAction,
        Self::ConfigReloaded,
        Self::ConfigReloadFailed,
        Self::TrafficSpike,
        Self::UpstreamCircuit,
        Self::ExternalIdentityChanged,
        Self::CsrfRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthSuccess => "auth_success",
            Self::AuthFailure => "auth_failure",
            Self::Lockout => "lockout",
            Self::PasswordChanged => "password_changed",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::PasswordReset => "password_reset",
            Self::MfaChanged => "mfa_changed",
            Self::KeyChanged => "key_changed",
            Self::SessionChanged => "session_changed",
            Self::BanAdded => "ban_added",
            Self::BanRemoved => "ban_removed",
            Self::InputBlocked => "input_blocked",
            Self::BudgetExhausted => "budget_exhausted",
            Self::RateLimited => "rate_limited",
            Self::AdminAction => "admin_action",
            Self::ConfigReloaded => "config_reloaded",
            Self::ConfigReloadFailed => "config_reload_failed",
            Self::TrafficSpike => "traffic_spike",
            Self::UpstreamCircuit => "upstream_circuit",
            Self::ExternalIdentityChanged => "external_identity_changed",
            Self::CsrfRejected => "csrf_rejected",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown audit kind `{s}` (known: {})", known.join(", "))
        })
    }
}

/// One security-relevant event, as a caller reports it.
///
/// **Invariant:** `subject` is an opaque identifier (a user id, an API key id, a
/// client id), never an e-mail address, a name or anything else that identifies
/// a person by itself. The audit log is kept for months and copied to files;
/// opaque ids keep it useful for investigations without making it a store of
/// personal data. The same holds for `detail`: ids and numbers, not profiles.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub kind: AuditKind,
    /// Opaque id of the user or client concerned (see the invariant above).
    pub subject: Option<String>,
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
    /// Small, caller-typed context. Strings are cut to [`MAX_VALUE_CHARS`] by the sink.
    pub detail: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind) -> Self {
        Self { kind, subject: None, ip: None, request_id: None, detail: Map::new() }
    }

    /// Sets the opaque subject id (never an e-mail address or a name).
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_string(), value.into());
        self
    }

    /// The event with every caller-supplied string bounded: strings cut to
    /// [`MAX_VALUE_CHARS`] (the last kept character becomes `…` when cut), NUL
    /// replaced by U+FFFD (PostgreSQL text cannot hold it), `detail` limited in
    /// size and depth, and the address in canonical form. What the sink stores
    /// and hashes is this, so the stored record verifies.
    pub fn bounded(self) -> Self {
        let mut budget = MAX_DETAIL_VALUES;
        let detail = bound_map(self.detail, 0, &mut budget);
        Self {
            kind: self.kind,
            subject: self.subject.map(|s| clean_str(&s, MAX_VALUE_CHARS)),
            ip: self.ip.map(|ip| ip.to_canonical()),
            request_id: self.request_id.map(|s| clean_str(&s, MAX_VALUE_CHARS)),
            detail,
        }
    }
}

fn clean_str(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(|c| if c == '\0' { '\u{FFFD}' } else { c }).collect();
    if s.chars().nth(max).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

fn bound_map(map: Map<String, Value>, depth: usize, budget: &mut usize) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in map {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        out.insert(clean_str(&k, MAX_KEY_CHARS), bound_value(v, depth + 1, budget));
    }
    out
}

fn bound_value(v: Value, depth: usize, budget: &mut usize) -> Value {
    match v {
        Value::String(s) => Value::String(clean_str(&s, MAX_VALUE_CHARS)),
        Value::Array(_) | Value::Object(_) if depth >= MAX_DETAIL_DEPTH => Value::String("…".into()),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                if *budget == 0 {
                    break;
                }
                *budget -= 1;
                out.push(bound_value(item, depth + 1, budget));
            }
            Value::Array(out)
        }
        Value::Object(map) => Value::Object(bound_map(map, depth, budget)),
        other => other,
    }
}

/// An event and the time it was recorded, waiting for the writer.
#[derive(Clone, Debug, PartialEq)]
pub struct StampedEvent {
    pub ts_ms: u64,
    pub event: AuditEvent,
}

/// Where a chain stands: the seq and hash of its last record (or of the last
/// purged one, for an anchor). Seq 0 with [`GENESIS_HASH`] is the empty chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        Self { seq: 0, hash: GENESIS_HASH.to_string() }
    }
}

/// One stored record of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1, 2, 3… per log, with no gaps.
    pub seq: u64,
    /// Unix time of the event, in milliseconds.
    pub ts_ms: u64,
    pub kind: AuditKind,
    pub subject: Option<String>,
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
    pub detail: Map<String, Value>,
    /// `hash` of the previous record ([`GENESIS_HASH`] or the anchor's for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of the canonical serialisation of every other field.
    pub hash: String,
}

impl AuditRecord {
    /// The record for `event` (already [`AuditEvent::bounded`]) at `ts_ms`,
    /// following `prev`.
    pub fn chained(prev: &ChainHead, ts_ms: u64, event: &AuditEvent) -> Self {
        let mut record = Self {
            seq: prev.seq + 1,
            ts_ms,
            kind: event.kind,
            subject: event.subject.clone(),
            ip: event.ip,
            request_id: event.request_id.clone(),
            detail: event.detail.clone(),
            prev_hash: prev.hash.clone(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }

    /// The hash this record's content calls for (compare with `hash` to check it).
    pub fn compute_hash(&self) -> String {
        #[derive(Serialize)]
        struct Canonical<'a> {
            seq: u64,
            ts_ms: u64,
            kind: &'static str,
            subject: Option<&'a str>,
            ip: Option<String>,
            request_id: Option<&'a str>,
            detail: SortedMap<'a>,
            prev_hash: &'a str,
        }
        let canonical = Canonical {
            seq: self.seq,
            ts_ms: self.ts_ms,
            kind: self.kind.as_str(),
            subject: self.subject.as_deref(),
            ip: self.ip.map(|ip| ip.to_string()),
            request_id: self.request_id.as_deref(),
            detail: SortedMap(&self.detail),
            prev_hash: &self.prev_hash,
        };
        let mut hasher = Sha256::new();
        // Writing JSON into a hasher cannot fail: the writer never errors and
        // every value here is representable.
        let _ = serde_json::to_writer(HashWriter(&mut hasher), &canonical);
        hex::encode(hasher.finalize())
    }

    /// This record as the head of its chain.
    pub fn head(&self) -> ChainHead {
        ChainHead { seq: self.seq, hash: self.hash.clone() }
    }

    /// `detail` serialised with sorted keys: the form stored in the database.
    pub fn detail_json(&self) -> String {
        serde_json::to_string(&SortedMap(&self.detail)).unwrap_or_else(|_| "{}".into())
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serialises a JSON object with its keys sorted at every depth, whatever
/// order the map keeps (serde_json's `preserve_order` may be on in the build).
struct SortedMap<'a>(&'a Map<String, Value>);
struct SortedValue<'a>(&'a Value);

impl Serialize for SortedMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&String, &Value)> = self.0.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(k, &SortedValue(v))?;
        }
        map.end()
    }
}

impl Serialize for SortedValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => SortedMap(m).serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&SortedValue(item))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in AuditKind::ALL {
            assert_eq!(k.as_str().parse::<AuditKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        assert!("nope".parse::<AuditKind>().unwrap_err().contains("ban_added"));
    }

    #[test]
    fn the_hash_ignores_key_order_but_not_content() {
        let mut a = AuditEvent::new(AuditKind::BanAdded);
        a.detail.insert("b".into(), json!({"y": 1, "x": [ {"q": 1, "p": 2} ]}));
        a.detail.insert("a".into(), json!("v"));
        let mut b = AuditEvent::new(AuditKind::BanAdded);
        b.detail.insert("a".into(), json!("v"));
        b.detail.insert("b".into(), json!({"x": [ {"p": 2, "q": 1} ], "y": 1}));
        let ra = AuditRecord::chained(&ChainHead::genesis(), 5, &a);
        let rb = AuditRecord::chained(&ChainHead::genesis(), 5, &b);
        assert_eq!(ra.hash, rb.hash);
        assert_eq!(ra.detail_json(), r#"{"a":"v","b":{"x":[{"p":2,"q":1}],"y":1}}"#);
        let mut edited = ra.clone();
        edited.detail.insert("a".into(), json!("w"));
        assert_ne!(edited.compute_hash(), ra.hash);
        let mut moved = ra.clone();
        moved.seq = 2;
        assert_ne!(moved.compute_hash(), ra.hash);
        let mut relinked = ra.clone();
        relinked.prev_hash = "1".repeat(64);
        assert_ne!(relinked.compute_hash(), ra.hash);
    }

    #[test]
    fn a_record_with_floats_verifies_after_a_round_trip_through_its_text() {
        // 17 significant digits: serde_json's default parser reads the first
        // back one ulp off, which changed the hash of `traffic_spike` records
        // (their `baseline` is an average).
        for f in [231.925_335_450_424_06, 0.1 + 0.2, 1e300, 5e-324, 123_456_789.012_345_68] {
            let event = AuditEvent::new(AuditKind::TrafficSpike).detail("baseline", f);
            let record = AuditRecord::chained(&ChainHead::genesis(), 7, &event.bounded());
            let line = serde_json::to_string(&record).unwrap();
            let read: AuditRecord = serde_json::from_str(&line).unwrap();
            assert_eq!(read.compute_hash(), record.hash, "{line}");
            let detail: Map<String, Value> = serde_json::from_str(&record.detail_json()).unwrap();
            assert_eq!(AuditRecord { detail, ..record.clone() }.compute_hash(), record.hash);
        }
    }

    #[track_caller]
    fn check_bounded(input: Value, expected: Value) {
        let e = AuditEvent { detail: input.as_object().unwrap().clone(), ..AuditEvent::new(AuditKind::AdminAction) };
        assert_eq!(Value::Object(e.bounded().detail), expected);
    }

    #[test]
    fn detail_is_bounded() {
        let long = "x".repeat(500);
        let cut = format!("{}…", "x".repeat(MAX_VALUE_CHARS - 1));
        check_bounded(json!({"a": long}), json!({"a": cut}));
        check_bounded(json!({"a": "n\u{0}l\r\n"}), json!({"a": "n\u{FFFD}l\r\n"}));
        check_bounded(json!({"n": 3, "b": true, "z": null}), json!({"n": 3, "b": true, "z": null}));
        check_bounded(json!({"d": {"d": {"d": {"d": 1}}}}), json!({"d": {"d": {"d": {"d": 1}}}}));
        check_bounded(json!({"d": {"d": {"d": {"d": {"d": 1}}}}}), json!({"d": {"d": {"d": {"d": "…"}}}}));
        let many: Vec<u32> = (0..1000).collect();
        let kept = Value::Object(AuditEvent::new(AuditKind::AdminAction).detail("a", many).bounded().detail);
        assert_eq!(kept["a"].as_array().unwrap().len(), MAX_DETAIL_VALUES - 1);
        let key = "k".repeat(100);
        let e = AuditEvent::new(AuditKind::AdminAction).detail(&key, 1).bounded();
        assert_eq!(e.detail.keys().next().unwrap().chars().count(), MAX_KEY_CHARS);
    }

    #[test]
    fn subject_and_request_id_are_bounded_and_ips_canonical() {
        let e = AuditEvent::new(AuditKind::AuthFailure)
            .subject("u\u{0}".repeat(300))
            .request_id("r")
            .ip("::ffff:192.0.2.1".parse().unwrap())
            .bounded();
        assert_eq!(e.subject.as_ref().unwrap().chars().count(), MAX_VALUE_CHARS);
        assert!(!e.subject.unwrap().contains('\0'));
        assert_eq!(e.ip.unwrap().to_string(), "192.0.2.1");
        assert_eq!(e.request_id.as_deref(), Some("r"));
    }
}

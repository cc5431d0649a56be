//! The inspection layer (WAF): SQL injection, XSS, path traversal, command
//! injection and NUL detection on the decoded path, query values, chosen
//! headers, cookies, form fields (URL-encoded and multipart) and every string
//! value of JSON bodies; and optional PII redaction of JSON bodies before they
//! reach the upstream.
//!
//! Bodies are buffered only when the route inspects or redacts, only for JSON,
//! form and multipart form bodies, and only up to the route's body limit (already enforced while
//! streaming by the guard layer); every other body streams untouched. A JSON body
//! that does not parse, nests deeper than serde_json's limit or holds more than
//! [`MAX_JSON_NODES`] values is refused with 400 in block mode.
//!
//! In `detect` mode a finding is logged and audited and the request goes on; in
//! `block` mode it is refused with a 403 problem. Either way the log names the
//! rule and where it matched, with at most [`EVIDENCE_CHARS`] characters of the
//! value — never the whole value.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::compile::InspectPolicy;
use rampart_core::config::model::InspectMode;
use rampart_core::inspect::{inspect_value, Finding, RuleSet};
use rampart_core::path::{normalize_path, PathOptions};
use tower::{Layer, Service};

use crate::edge::guard::BodyFailure;
use crate::edge::route::MatchedRoute;
use crate::edge::{take_ready, HttpRequest, HttpResponse, Inner, LayerFuture};
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::observe::Metrics;
use crate::problem::Problem;

/// Most JSON values (strings, numbers, keys…) inspected in one body.
pub const MAX_JSON_NODES: usize = 100_000;
/// The deepest JSON nesting inspected (arrays and objects); deeper is unparseable.
pub const MAX_JSON_DEPTH: u32 = crate::untrusted_json::MAX_DEPTH;
/// Characters of a matched value kept in logs and audit events.
pub const EVIDENCE_CHARS: usize = 40;

/// Where a finding was made, for logs and audit events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub finding: Finding,
    /// e.g. `query:q`, `header:user-agent`, `json:items[2].name`, `path`.
    pub location: String,
    /// The start of the value, at most [`EVIDENCE_CHARS`] characters.
    pub excerpt: String,
}

fn excerpt(value: &str) -> String {
    value.chars().take(EVIDENCE_CHARS).collect()
}

/// Characters of a location kept in logs, audit events and the audit
/// repeat-filter's keys: query, form, cookie and JSON key names come from the
/// client, and a 10 MB JSON key must not become a 10 MB log field.
pub const MAX_LOCATION_CHARS: usize = 100;

fn bound_location(mut location: String) -> String {
    if let Some((cut, _)) = location.char_indices().nth(MAX_LOCATION_CHARS) {
        location.truncate(cut);
        location.push('…');
    }
    location
}

fn rules(policy: &InspectPolicy) -> RuleSet {
    let r = policy.rules;
    RuleSet {
        sqli: r.sqli,
        xss: r.xss,
        path_traversal: r.path_traversal,
        command_injection: r.command_injection,
        nul_byte: r.nul_byte,
    }
}

/// Inspects everything but the body; returns the first finding.
pub fn inspect_head(req: &HttpRequest, policy: &InspectPolicy) -> Option<Located> {
    let rules = rules(policy);
    let check = |location: String, value: &str| {
        inspect_value(value, &rules).map(|finding| Located {
            finding,
            location: bound_location(location),
            excerpt: excerpt(value),
        })
    };
    // The path, decoded (the guard already refused undecodable ones).
    let opts = PathOptions { allow_encoded_slash: true };
    if let Ok(path) = normalize_path(req.uri().path(), &opts) {
        if let Some(f) = check("path".into(), &path) {
            return Some(f);
        }
    }
    if let Some(q) = req.uri().query() {
        for (k, v) in form_fields(q.as_bytes()) {
            if policy.skips_query(&k) {
                continue;
            }
            if let Some(f) = check(format!("query:{k}"), &v).or_else(|| check(format!("query-name:{k}"), &k)) {
                return Some(f);
            }
        }
    }
    for name in &policy.headers {
        if policy.skips_header(name) {
            continue;
        }
        for v in req.headers().get_all(name) {
            if let Some(f) = check(format!("header:{name}"), &String::from_utf8_lossy(v.as_bytes())) {
                return Some(f);
            }
        }
    }
    for v in req.headers().get_all(header::COOKIE) {
        for pair in String::from_utf8_lossy(v.as_bytes()).split(';') {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, val) = (k.trim(), val.trim());
            if policy.skips_cookie(k) {
                continue;
            }
            let decoded = percent_encoding::percent_decode_str(val).decode_utf8_lossy();
            if let Some(f) = check(format!("cookie:{k}"), &decoded) {
                return Some(f);
            }
            // Python's cookie parser (Starlette, Django) unquotes a quoted
            // value, `\047` octal escapes included: what the app reads.
            if let Some(f) = unquote_cookie(val).and_then(|u| check(format!("cookie:{k}"), &u)) {
                return Some(f);
            }
            if let Some(json) = decoded.strip_prefix("j:") {
                if let Some((finding, text)) = json_cookie_finding(json, &rules) {
                    let location = bound_location(format!("cookie:{k}"));
                    return Some(Located { finding, location, excerpt: excerpt(&text) });
                }
            }
        }
    }
    None
}

/// The fields of a URL-encoded form or query, as every common parser reads
/// them: split on `&` and, when there is a `;`, also on `;`.
///
/// python-multipart (Starlette's and so FastAPI's form parser) and older
/// `parse_qs` separate fields on `;` too, so `note=x;comment=<script>` is two
/// fields to the app. Reading it only as one field `note` would let an
/// exclusion of `note` hide `comment`. Both readings are inspected.
fn form_fields(raw: &[u8]) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    let semicolons = raw.contains(&b';').then(|| {
        let split: Vec<u8> = raw.iter().map(|&b| if b == b';' { b'&' } else { b }).collect();
        form_urlencoded::parse(&split).map(|(k, v)| (k.into_owned().into(), v.into_owned().into())).collect::<Vec<_>>()
    });
    form_urlencoded::parse(raw).chain(semicolons.into_iter().flatten())
}

/// The first finding in the strings (values and object keys) of a JSON
/// cookie, with the string it was found in. Express's cookie-parser reads a
/// value `j:…` as JSON, so `j:{"q":"\u003cscript\u003e"}` reaches the app as
/// `<script>` though its text shows none. What the reader cannot read is
/// left as text (as cookie-parser leaves it), which was inspected already;
/// a finding before the reader fails still counts. At most
/// [`MAX_JSON_NODES`] values.
fn json_cookie_finding(json: &str, rules: &RuleSet) -> Option<(Finding, String)> {
    let found = crate::untrusted_json::each_string(json.as_bytes(), MAX_JSON_NODES, |text, _| {
        match inspect_value(text, rules) {
            Some(finding) => std::ops::ControlFlow::Break((finding, text.to_owned())),
            None => std::ops::ControlFlow::Continue(()),
        }
    });
    found.ok().flatten()
}

/// A double-quoted cookie value as Python's `http.cookies._unquote` reads it:
/// quotes dropped, `\ooo` (three octal digits, the first 0–3) as the character
/// of that code point, `\c` as `c`. `None` for a value that is not quoted.
fn unquote_cookie(val: &str) -> Option<String> {
    let inner = val.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(inner.to_owned());
    }
    let c: Vec<char> = inner.chars().collect();
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '\\' {
            let octal = c.get(i + 1..i + 4).and_then(|d| match *d {
                [a @ '0'..='3', m @ '0'..='7', l @ '0'..='7'] => {
                    let n = (u32::from(a) - 48) * 64 + (u32::from(m) - 48) * 8 + (u32::from(l) - 48);
                    char::from_u32(n)
                }
                _ => None,
            });
            if let Some(ch) = octal {
                out.push(ch);
                i += 4;
                continue;
            }
            if let Some(&next) = c.get(i + 1) {
                out.push(next);
                i += 2;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    Some(out)
}

/// What a body inspection found and changed.
#[derive(Debug, Default)]
pub struct BodyOutcome {
    pub finding: Option<Located>,
    /// The body to forward when PII was redacted.
    pub rewritten: Option<Bytes>,
    /// PII kinds masked, one entry per value changed.
    pub redacted: Vec<rampart_core::pii::PiiKind>,
    /// The JSON could not be inspected (malformed, too deep, too many values).
    pub unparseable: Option<&'static str>,
}

/// Walks a JSON body token by token: inspects every string (and object key)
/// outside the exclusions, and notes whether PII would be masked.
///
/// Not through `serde_json::Value`: a map keeps only the last of repeated
/// members (so `{"q":"<attack>","q":"hi"}` went uninspected, and a repeated
/// PII member unmasked), and with serde_json's `raw_value` feature (which axum
/// turns on) an object whose only key is its magic RawValue name is parsed
/// again as a new document with a fresh nesting limit: a small body nested
/// that way overflowed the stack and aborted the process. The stream reader
/// sees every member and caps the nesting itself.
struct JsonWalk<'a> {
    policy: &'a InspectPolicy,
    rules: RuleSet,
    nodes: usize,
    path: Vec<String>,
    outcome: BodyOutcome,
    changed: bool,
}

/// Why a JSON walk stopped.
type WalkError = &'static str;
const MALFORMED: WalkError = "malformed or too deeply nested JSON";

impl JsonWalk<'_> {
    fn location(&self) -> String {
        let mut s = String::from("json:");
        for (i, p) in self.path.iter().enumerate() {
            if !p.starts_with('[') && i > 0 {
                s.push('.');
            }
            s.push_str(p);
        }
        s
    }

    fn keys(&self) -> Vec<&str> {
        path_keys(&self.path)
    }

    fn string(&mut self, s: &str) {
        if self.policy.skips_json(&self.keys()) {
            return;
        }
        if self.policy.mode != InspectMode::Off && self.outcome.finding.is_none() {
            if let Some(finding) = inspect_value(s, &self.rules) {
                self.outcome.finding =
                    Some(Located { finding, location: bound_location(self.location()), excerpt: excerpt(s) });
            }
        }
        if self.policy.redact_pii {
            if let Some((_, kinds)) = rampart_core::pii::redact(s) {
                self.outcome.redacted.extend(kinds);
                self.changed = true;
            }
        }
    }

    fn key(&mut self, k: &str) {
        if self.policy.mode != InspectMode::Off && self.outcome.finding.is_none() {
            if let Some(finding) = inspect_value(k, &self.rules) {
                self.outcome.finding = Some(Located {
                    finding,
                    location: bound_location(format!("{}(key)", self.location())),
                    excerpt: excerpt(k),
                });
            }
        }
    }

    /// One value and everything in it (recursion as deep as the reader's
    /// nesting limit allows).
    fn value(&mut self, r: &mut struson::reader::JsonStreamReader<&[u8]>) -> Result<(), WalkError> {
        use struson::reader::{JsonReader, ValueType};
        self.nodes += 1;
        if self.nodes > MAX_JSON_NODES {
            return Err("too many values");
        }
        match r.peek().map_err(|_| MALFORMED)? {
            ValueType::Object => {
                r.begin_object().map_err(|_| MALFORMED)?;
                while r.has_next().map_err(|_| MALFORMED)? {
                    let name = r.next_name_owned().map_err(|_| MALFORMED)?;
                    self.key(&name);
                    self.path.push(name);
                    self.value(r)?;
                    self.path.pop();
                }
                r.end_object().map_err(|_| MALFORMED)?;
            }
            ValueType::Array => {
                r.begin_array().map_err(|_| MALFORMED)?;
                let mut i = 0usize;
                while r.has_next().map_err(|_| MALFORMED)? {
                    self.path.push(format!("[{i}]"));
                    self.value(r)?;
                    self.path.pop();
                    i += 1;
                }
                r.end_array().map_err(|_| MALFORMED)?;
            }
            ValueType::String => {
                let s = r.next_str().map_err(|_| MALFORMED)?;
                self.string(s);
            }
            ValueType::Number => {
                r.next_number_as_str().map_err(|_| MALFORMED)?;
            }
            ValueType::Boolean => {
                r.next_bool().map_err(|_| MALFORMED)?;
            }
            ValueType::Null => r.next_null().map_err(|_| MALFORMED)?,
        }
        Ok(())
    }
}

/// The object keys of a JSON path (array indexes, `[i]`, are transparent).
fn path_keys(path: &[String]) -> Vec<&str> {
    path.iter().filter(|p| !p.starts_with('[')).map(String::as_str).collect()
}

/// `body` with PII masked in its string values (outside the exclusions),
/// everything else copied token by token: numbers keep their exact text
/// (`12345678901234567890123` stays that, never a float), and members keep
/// their order, duplicates included. Re-serialising the parsed value would
/// change all of these. `None` when the body does not read as JSON here.
fn redacted_json(body: &[u8], policy: &InspectPolicy) -> Option<Vec<u8>> {
    use struson::reader::{JsonReader, JsonStreamReader, ValueType};
    use struson::writer::{JsonStreamWriter, JsonWriter};

    type Fail = Box<dyn std::error::Error>;
    fn copy(
        r: &mut JsonStreamReader<&[u8]>,
        w: &mut JsonStreamWriter<&mut Vec<u8>>,
        path: &mut Vec<String>,
        policy: &InspectPolicy,
    ) -> Result<(), Fail> {
        match r.peek()? {
            ValueType::Object => {
                r.begin_object()?;
                w.begin_object()?;
                while r.has_next()? {
                    let name = r.next_name_owned()?;
                    w.name(&name)?;
                    path.push(name);
                    copy(r, w, path, policy)?;
                    path.pop();
                }
                r.end_object()?;
                w.end_object()?;
            }
            ValueType::Array => {
                r.begin_array()?;
                w.begin_array()?;
                let mut i = 0usize;
                while r.has_next()? {
                    path.push(format!("[{i}]"));
                    copy(r, w, path, policy)?;
                    path.pop();
                    i += 1;
                }
                r.end_array()?;
                w.end_array()?;
            }
            ValueType::String => {
                let s = r.next_string()?;
                let masked = if policy.skips_json(&path_keys(path)) { None } else { rampart_core::pii::redact(&s) };
                w.string_value(masked.as_ref().map_or(&s, |(m, _)| m))?;
            }
            ValueType::Number => w.number_value_from_string(r.next_number_as_str()?)?,
            ValueType::Boolean => w.bool_value(r.next_bool()?)?,
            ValueType::Null => {
                r.next_null()?;
                w.null_value()?;
            }
        }
        Ok(())
    }

    let mut out = Vec::with_capacity(body.len());
    let mut reader = crate::untrusted_json::stream_reader(body);
    let mut writer = JsonStreamWriter::new(&mut out);
    copy(&mut reader, &mut writer, &mut Vec::new(), policy).ok()?;
    reader.consume_trailing_whitespace().ok()?;
    writer.finish_document().ok()?;
    Some(out)
}

/// Inspects (and possibly redacts) a buffered JSON or form body.
pub fn inspect_body(body: &[u8], json: bool, policy: &InspectPolicy) -> BodyOutcome {
    let rules = rules(policy);
    if json {
        use struson::reader::JsonReader;
        let mut walk =
            JsonWalk { policy, rules, nodes: 0, path: Vec::new(), outcome: BodyOutcome::default(), changed: false };
        let mut reader = crate::untrusted_json::stream_reader(body);
        let walked = walk.value(&mut reader).and_then(|()| reader.consume_trailing_whitespace().map_err(|_| MALFORMED));
        if let Err(why) = walked {
            return BodyOutcome { unparseable: Some(why), ..Default::default() };
        }
        let mut outcome = walk.outcome;
        if walk.changed {
            // The same reader read it whole just now, so the copy succeeds;
            // if it did not, the body would go unmasked: refuse it instead.
            match redacted_json(body, policy) {
                Some(rewritten) => outcome.rewritten = Some(Bytes::from(rewritten)),
                None => outcome.unparseable = Some("the JSON could not be rewritten"),
            }
        }
        return outcome;
    }
    let mut outcome = BodyOutcome::default();
    if policy.mode == InspectMode::Off {
        return outcome;
    }
    for (k, v) in form_fields(body) {
        if policy.skips_form(&k) {
            continue;
        }
        if let Some(finding) = inspect_value(&v, &rules).or_else(|| inspect_value(&k, &rules)) {
            let location = bound_location(format!("form:{k}"));
            outcome.finding = Some(Located { finding, location, excerpt: excerpt(&v) });
            break;
        }
    }
    outcome
}

/// Runs `f` on the blocking pool when `large` (inspection costs CPU in
/// proportion to the text), else here.
async fn off_the_workers<T: Send + 'static>(
    large: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if large {
        tokio::task::spawn_blocking(f).await
    } else {
        Ok(f())
    }
}

pub use multipart::{MultipartField, MAX_PARTS as MAX_MULTIPART_PARTS};

/// Inspects the parts of a multipart body as form fields (the same
/// `form:NAME` exclusions): every field's name, every file's name, and the
/// text of every part that is not a file.
pub fn inspect_multipart(fields: &[MultipartField], policy: &InspectPolicy) -> BodyOutcome {
    let rules = rules(policy);
    let mut outcome = BodyOutcome::default();
    if policy.mode == InspectMode::Off {
        return outcome;
    }
    for f in fields {
        if policy.skips_form(&f.name) {
            continue;
        }
        let found = [(f.text.as_deref(), ""), (Some(f.name.as_str()), ""), (f.filename.as_deref(), "(filename)")]
            .into_iter()
            .find_map(|(value, suffix)| {
                let value = value?;
                inspect_value(value, &rules).map(|finding| Located {
                    finding,
                    location: bound_location(format!("form:{}{suffix}", f.name)),
                    excerpt: excerpt(value),
                })
            });
        if found.is_some() {
            outcome.finding = found;
            break;
        }
    }
    outcome
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    /// `multipart/form-data`: its fields are read like a form's.
    Multipart,
    Other,
}

/// The refusal of a body the route would inspect or mask but cannot read:
/// one in a `Content-Encoding` (gzip, …; frameworks that decompress, such as
/// Express's body parsers, would read what Rampart never saw), or one
/// without a usable `Content-Type` (FastAPI reads such a body as JSON), or
/// a JSON or form body in a charset other than UTF-8 (see
/// [`foreign_charset`]). In `block` mode, and wherever PII is masked; `None`
/// otherwise.
fn uninspectable(req: &HttpRequest, kind: BodyKind, policy: &InspectPolicy) -> Option<HttpResponse> {
    let strict = policy.mode == InspectMode::Block || policy.redact_pii;
    if !strict {
        return None;
    }
    let headers = req.headers();
    // The bodies this route reads: JSON (inspected or masked), forms only
    // when inspected.
    let read = match kind {
        BodyKind::Json => true,
        BodyKind::Form | BodyKind::Multipart => policy.mode == InspectMode::Block,
        BodyKind::Other => false,
    };
    let encoded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| v.split(',').any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity")))
    });
    if encoded && read {
        return Some(
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-encoding",
                "Unsupported content encoding",
            )
            .detail("this route inspects request bodies, which must not be compressed (no Content-Encoding)")
            .rejected_by("inspect", "content_encoding")
            .into_response_for(req.extensions()),
        );
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if read && matches!(kind, BodyKind::Json | BodyKind::Form) && content_type.is_some_and(foreign_charset) {
        return Some(
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-charset", "Unsupported charset")
                .detail("this route inspects request bodies, which must be UTF-8 (charset=utf-8, or none)")
                .rejected_by("inspect", "charset")
                .into_response_for(req.extensions()),
        );
    }
    let typed = content_type.is_some_and(|v| !v.trim().is_empty());
    if !typed {
        return Some(
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "missing-content-type", "Content-Type required")
                .detail("this route inspects request bodies: a body needs a Content-Type")
                .rejected_by("inspect", "content_type_missing")
                .into_response_for(req.extensions()),
        );
    }
    None
}

/// Whether a JSON or form `Content-Type` names a charset other than UTF-8
/// (or US-ASCII, a subset): Express's body parsers decode JSON in any
/// `utf-*` charset iconv knows, so `charset=utf-7` turns
/// `+ADw-script+AD4-`, which Rampart reads as harmless UTF-8, into
/// `<script>`. Any `charset` parameter counts, however it is spelt (quoted,
/// repeated): what cannot be read plainly is refused.
fn foreign_charset(content_type: &str) -> bool {
    content_type.split(';').skip(1).any(|param| {
        let Some((key, value)) = param.split_once('=') else { return false };
        let value = value.trim().trim_matches('"');
        key.trim().eq_ignore_ascii_case("charset")
            && !(value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("us-ascii"))
    })
}

/// The media types JSON parsers read as JSON: `application/json` and any
/// `+json` type everywhere; `text/json` in ASP.NET Core; `text/x-json` and
/// `application/jsonrequest` in Rails; `application/x-json` in others.
fn is_json_type(essence: &str) -> bool {
    matches!(
        essence,
        "application/json" | "text/json" | "text/x-json" | "application/x-json" | "application/jsonrequest"
    ) || essence.ends_with("+json")
}

fn body_kind(req: &HttpRequest) -> BodyKind {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if is_json_type(&essence) {
        BodyKind::Json
    } else if essence == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if essence == "multipart/form-data" {
        BodyKind::Multipart
    } else {
        BodyKind::Other
    }
}

#[derive(Clone)]
pub struct InspectLayer {
    state: Arc<LimitState>,
    metrics: Arc<Metrics>,
}

impl InspectLayer {
    pub fn new(state: Arc<LimitState>, metrics: Arc<Metrics>) -> Self {
        Self { state, metrics }
    }
}

impl<S> Layer<S> for InspectLayer {
    type Service = InspectService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InspectService { inner, state: self.state.clone(), metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct InspectService<S> {
    inner: S,
    state: Arc<LimitState>,
    metrics: Arc<Metrics>,
}

impl<S> InspectService<S> {
    /// Logs (and, in block mode, refuses) a finding. Returns the refusal.
    fn handle(&self, req: &HttpRequest, policy: &InspectPolicy, found: &Located) -> Option<crate::edge::HttpResponse> {
        let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
        let rule: &'static str = found.finding.rule.as_str();
        let block = policy.mode == InspectMode::Block;
        self.metrics.inspection_finding(rule, if block { "block" } else { "detect" });
        tracing::warn!(
            target: "rampart::audit",
            event = "input_blocked",
            blocked = block,
            rule,
            location = %found.location,
            evidence = %found.finding.evidence,
            excerpt = %found.excerpt,
            ip = %ip.map(|i| i.to_string()).unwrap_or_default(),
            "suspicious input"
        );
        let key = format!("inspect|{}|{rule}|{}", ip.map(|i| i.to_string()).unwrap_or_default(), found.location);
        self.state.audit_once(&key, || {
            let mut event = AuditEvent::new(AuditKind::InputBlocked)
                .detail("blocked", block)
                .detail("rule", rule)
                .detail("location", found.location.clone())
                .detail("excerpt", found.excerpt.clone());
            if let Some(ip) = ip {
                event = event.ip(ip);
            }
            if let Some(p) = req.extensions().get::<rampart_core::principal::Principal>() {
                event = event.subject(p.subject.clone());
            }
            if let Some(id) = req.extensions().get::<crate::edge::request_id::RequestId>() {
                event = event.request_id(id.as_str());
            }
            event
        });
        if !block {
            return None;
        }
        if let Some(ip) = ip {
            self.state.strike(ip, crate::limit::bans::Strike::BlockedInput);
        }
        Some(
            Problem::new(StatusCode::FORBIDDEN, "input-blocked", "Request blocked")
                .detail(format!("the request was refused by the `{rule}` rule"))
                .rejected_by("inspect", rule)
                .into_response_for(req.extensions()),
        )
    }
}

impl<S: Inner> Service<HttpRequest> for InspectService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let Some(policy) = req.extensions().get::<MatchedRoute>().and_then(|r| r.0.inspect.clone()) else {
            return futures_util::future::Either::Left(self.inner.call(req));
        };
        if policy.mode != InspectMode::Off {
            if let Some(found) = inspect_head(&req, &policy) {
                if let Some(resp) = self.handle(&req, &policy, &found) {
                    return futures_util::future::Either::Right(Box::pin(async move { Ok(resp) }));
                }
            }
        }
        let kind = body_kind(&req);
        let wants_body = match kind {
            BodyKind::Json => true,
            BodyKind::Form | BodyKind::Multipart => policy.mode != InspectMode::Off,
            BodyKind::Other => false,
        };
        if !req.body().is_end_stream() {
            if let Some(resp) = uninspectable(&req, kind, &policy) {
                return futures_util::future::Either::Right(Box::pin(async move { Ok(resp) }));
            }
        }
        if !wants_body || req.body().is_end_stream() {
            return futures_util::future::Either::Left(self.inner.call(req));
        }
        let this = self.clone();
        let mut inner = take_ready(&mut self.inner);
        futures_util::future::Either::Right(Box::pin(async move {
            let (parts, body) = req.into_parts();
            // The guard's wrapper already caps the size and the pace of the body.
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    let limit = parts.extensions.get::<MatchedRoute>().map_or(0, |r| r.0.body_limit);
                    let problem = match BodyFailure::of(&e) {
                        Some(f) => f.problem(limit),
                        None => Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request")
                            .detail("the request body could not be read")
                            .rejected_by("inspect", "body_error"),
                    };
                    return Ok(problem.into_response_for(&parts.extensions));
                }
            };
            // Large bodies are inspected off the async workers.
            let json = kind == BodyKind::Json;
            let large = bytes.len() > 64 * 1024;
            let inspected = if kind == BodyKind::Multipart {
                let content_type =
                    parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let (p, b) = (policy.clone(), bytes.clone());
                off_the_workers(large, move || match multipart::parse(&content_type, &b) {
                    Ok(fields) => inspect_multipart(&fields, &p),
                    Err(why) => BodyOutcome { unparseable: Some(why), ..Default::default() },
                })
                .await
            } else {
                let (p, b) = (policy.clone(), bytes.clone());
                off_the_workers(large, move || inspect_body(&b, json, &p)).await
            };
            let Ok(outcome) = inspected else {
                let resp = Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
                    .into_response_for(&parts.extensions);
                return Ok(resp);
            };
            let head_req = http::Request::from_parts(parts, Body::empty());
            // Unparseable JSON cannot be masked either: with redaction on it
            // is refused whatever the mode (Python's json.loads reads some of
            // what a strict parser refuses, `NaN` or a byte-order mark).
            let refuse_unparseable = policy.mode == InspectMode::Block || (json && policy.redact_pii);
            if let Some(why) = outcome.unparseable.filter(|_| refuse_unparseable) {
                let resp = Problem::new(StatusCode::BAD_REQUEST, "invalid-body", "Invalid request body")
                    .detail(format!("the body cannot be inspected: {why}"))
                    .rejected_by("inspect", "unparseable")
                    .into_response_for(head_req.extensions());
                return Ok(resp);
            }
            if let Some(found) = &outcome.finding {
                if let Some(resp) = this.handle(&head_req, &policy, found) {
                    return Ok(resp);
                }
            }
            for kind in &outcome.redacted {
                this.metrics.pii_redacted(kind.as_str());
            }
            let (mut parts, _) = head_req.into_parts();
            let body = match outcome.rewritten {
                Some(new) => {
                    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(new.len()));
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    new
                }
                None => bytes,
            };
            inner.call(http::Request::from_parts(parts, Body::from(body))).await
        }))
    }
}

mod multipart;

#[cfg(test)]
mod tests;

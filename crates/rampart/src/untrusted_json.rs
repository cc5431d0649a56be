//! Parsing JSON that others wrote (clients, identity providers, JWKS hosts)
//! with serde_json, safely.
//!
//! sqlx and axum turn on serde_json's `raw_value` feature, and with it
//! `serde_json::Value` treats an object whose only key is serde_json's
//! private RawValue token specially: it parses that member's string as a new
//! document, whose nesting limit starts again at 128. Nested that way, a body
//! of a few tens of kilobytes recurses thousands of levels deep and overflows
//! the thread's stack, which aborts the whole process. So before serde_json
//! reads untrusted text into anything that holds a `Value`, [`from_slice`]
//! refuses a document that uses the token as a key. No legitimate document
//! does: the name is serde_json's own, spelt to be unguessable.

use std::ops::ControlFlow;

use serde::de::DeserializeOwned;
use struson::reader::{JsonReader, JsonStreamReader, ReaderSettings, ValueType};

/// serde_json's private name for a raw value in a map key.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the JSON uses serde_json's private RawValue name as a key")]
    RawValueKey,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// `serde_json::from_slice`, refusing documents that name the RawValue
/// token as a key (see the module docs).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refused> {
    if names_raw_value(bytes) {
        return Err(Refused::RawValueKey);
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// The deepest nesting read (arrays and objects): serde_json's own limit.
pub const MAX_DEPTH: u32 = 128;

/// A stream reader for JSON others wrote: the specification's syntax, at
/// most [`MAX_DEPTH`] levels, any number (read as text, never parsed), no
/// path tracking. Walking it needs no recursion deeper than that.
pub fn stream_reader(bytes: &[u8]) -> JsonStreamReader<&[u8]> {
    let settings = ReaderSettings {
        track_path: false,
        max_nesting_depth: Some(MAX_DEPTH),
        restrict_number_values: false,
        ..Default::default()
    };
    JsonStreamReader::new_custom(bytes, settings)
}

/// Whether some object key in `bytes` is the RawValue token. A key can
/// spell it with `\u` escapes, so only text without a backslash or the
/// token itself is passed without reading it; anything a stream reader
/// cannot read counts as naming it (serde_json would refuse it anyway, or
/// read it differently).
fn names_raw_value(bytes: &[u8]) -> bool {
    let token = RAW_VALUE_TOKEN.as_bytes();
    if !bytes.contains(&b'\\') && !bytes.windows(token.len()).any(|w| w == token) {
        return false;
    }
    let found = each_string(bytes, usize::MAX, |text, is_key| {
        if is_key && text == RAW_VALUE_TOKEN {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    !matches!(found, Ok(None))
}

/// Why [`each_string`] could not read a document to its end.
#[derive(Debug)]
pub struct Unreadable;

/// Calls `visit` with every object key (`is_key` true) and string value of
/// the JSON document `bytes`, in order, escapes decoded, until it returns
/// `Break` (whose value is returned). Without recursion: at most
/// [`MAX_DEPTH`] containers are open at once. `Err` for what the stream
/// reader cannot read, or a document of more than `max_values` values.
pub fn each_string<B>(
    bytes: &[u8],
    max_values: usize,
    mut visit: impl FnMut(&str, bool) -> ControlFlow<B>,
) -> Result<Option<B>, Unreadable> {
    let mut reader = stream_reader(bytes);
    let e = |_| Unreadable;
    // The open containers (true: an object).
    let mut open: Vec<bool> = Vec::new();
    let mut values = 0usize;
    loop {
        if let Some(&object) = open.last() {
            if !reader.has_next().map_err(e)? {
                if object {
                    reader.end_object().map_err(e)?;
                } else {
                    reader.end_array().map_err(e)?;
                }
                open.pop();
                if open.is_empty() {
                    break;
                }
                continue;
            }
            if object {
                if let ControlFlow::Break(b) = visit(reader.next_name().map_err(e)?, true) {
                    return Ok(Some(b));
                }
            }
        }
        values += 1;
        if values > max_values {
            return Err(Unreadable);
        }
        match reader.peek().map_err(e)? {
            ValueType::Object => {
                reader.begin_object().map_err(e)?;
                open.push(true);
            }
            ValueType::Array => {
                reader.begin_array().map_err(e)?;
                open.push(false);
            }
            ValueType::String => {
                if let ControlFlow::Break(b) = visit(reader.next_str().map_err(e)?, false) {
                    return Ok(Some(b));
                }
                if open.is_empty() {
                    break;
                }
            }
            _ => {
                reader.skip_value().map_err(e)?;
                if open.is_empty() {
                    break;
                }
            }
        }
    }
    reader.consume_trailing_whitespace().map_err(e)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_raw_value_token_as_a_key_is_refused_however_spelt() {
        for refused in [
            r#"{"$serde_json::private::RawValue":"[1]"}"#,
            r#"[1,{"a":{"\u0024serde_json::private::RawValue":"1"}}]"#,
            r#"{"x":[{"$serde_json::private::Raw\u0056alue":"1"}]}"#,
        ] {
            assert!(names_raw_value(refused.as_bytes()), "{refused}");
            assert!(matches!(from_slice::<serde_json::Value>(refused.as_bytes()), Err(Refused::RawValueKey)));
        }
        for fine in [
            r#"{"a":"\u0041","b":[1,2,{"c":null}]}"#,
            r#""\"""#,
            "[]",
            "1",
            r#"{"v":"$serde_json::private::RawValue"}"#,
        ] {
            assert!(!names_raw_value(fine.as_bytes()), "{fine}");
        }
        assert_eq!(from_slice::<serde_json::Value>(br#"{"a":[1]}"#).unwrap(), serde_json::json!({"a": [1]}));
    }

    #[test]
    fn each_string_visits_keys_and_values_in_order() {
        let seen = |doc: &str, max: usize| {
            let mut out = Vec::new();
            let r = each_string(doc.as_bytes(), max, |s, key| {
                out.push(format!("{}{s}", if key { "k:" } else { "" }));
                ControlFlow::<()>::Continue(())
            });
            r.map(|_| out)
        };
        let doc = r#"{"a":"\u0041","b":[1,"x",{"c":null}],"d":true} "#;
        assert_eq!(seen(doc, 100).unwrap(), ["k:a", "A", "k:b", "x", "k:c", "k:d"]);
        assert_eq!(seen(r#""top""#, 1).unwrap(), ["top"]);
        assert!(seen(doc, 5).is_err(), "more values than allowed");
        assert!(seen(r#"{"a":1} x"#, 100).is_err(), "trailing garbage");
        assert!(seen(r#"{"a":"#, 100).is_err(), "cut short");
        // Stopped at the first match, whatever follows.
        let first = each_string(br#"["a","b",}"#, 100, |s, _| {
            if s == "b" {
                ControlFlow::Break(s.to_owned())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(first.unwrap().as_deref(), Some("b"));
    }

    /// A document nested through the token thousands of levels deep: refused
    /// before serde_json recurses into it (which overflowed the stack).
    #[test]
    fn deep_raw_value_nesting_is_refused_without_recursing() {
        let inner = crate::testing::raw_value_bomb(100);
        let out = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || matches!(from_slice::<serde_json::Value>(inner.as_bytes()), Err(Refused::RawValueKey)))
            .unwrap()
            .join()
            .unwrap();
        assert!(out);
    }
}

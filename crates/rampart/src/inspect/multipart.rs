//! A strict reader of `multipart/form-data` bodies (RFC 7578) for the
//! inspection layer.
//!
//! Hand-written, though good general parsers exist (multer, axum's): those
//! are made to read what clients send, leniently, and each reads some
//! malformed bodies differently from the app's own parser (python-multipart
//! under Starlette, Werkzeug, busboy). For a WAF every such difference is a
//! way to hide a field: a `filename` found by a substring search inside
//! another parameter's quoted value, a second `boundary` parameter, a
//! delimiter followed by transport padding, a bare-LF delimiter that one
//! parser sees and another does not. This reader therefore accepts only the
//! one unambiguous shape browsers and HTTP clients send, and refuses
//! everything else, so that what it inspects is what any parser reads:
//!
//! - the request's `Content-Type` has one `boundary` (an RFC 2046 boundary,
//!   1–70 characters), no parameter twice, and no `charset` but UTF-8 or
//!   US-ASCII (Starlette decodes fields with it: UTF-7 would turn
//!   `+ADw-script+AD4-` into `<script>`);
//! - the body starts with the first delimiter (no preamble), every
//!   occurrence of `--boundary` is preceded by CRLF (but the first) and
//!   followed by CRLF or, once, by the closing `--`, and after that only
//!   white space;
//! - each part has CRLF-separated headers without folding: exactly one
//!   `Content-Disposition: form-data; name="…"` with at most a `filename`
//!   besides (no other or `*` parameters, no backslash in quoted values),
//!   at most one `Content-Type` (not a nested multipart) and at most one
//!   `Content-Transfer-Encoding` of `7bit`, `8bit` or `binary`; nothing else.

/// Most parts read (Starlette allows 1000 fields and 1000 files).
pub const MAX_PARTS: usize = 2_000;

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub struct MultipartField {
    pub name: String,
    /// The `filename` of a file part: such a part is a file to the app
    /// (Starlette, Werkzeug), whose content is not inspected (unless the
    /// filename is empty, see `text`).
    pub filename: Option<String>,
    /// The content of a field that is not a file, as text; also of a part
    /// whose filename is empty, which some frameworks read as a field.
    pub text: Option<String>,
}

/// Why a body was not read.
pub type Refusal = &'static str;

/// The parts of `body`, sent with the `Content-Type` `content_type`; a
/// [`Refusal`] for anything but the strict shape above.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<MultipartField>, Refusal> {
    let boundary = boundary(content_type)?;
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary.as_bytes());
    let finder = memchr::memmem::Finder::new(&delimiter);
    let at: Vec<usize> = finder.find_iter(body).collect();
    if at.first() != Some(&0) {
        return Err("a multipart body must start with its boundary");
    }
    let mut fields = Vec::new();
    for (i, &start) in at.iter().enumerate() {
        let before = start.checked_sub(2).and_then(|s| body.get(s..start));
        if start != 0 && before != Some(b"\r\n".as_slice()) {
            return Err("the multipart boundary appears other than after a line break (CRLF)");
        }
        let after = start + delimiter.len();
        match body.get(after..after + 2) {
            Some(b"--") => {
                if i + 1 != at.len() || !body[after + 2..].iter().all(|b| b" \t\r\n".contains(b)) {
                    return Err("data after the closing multipart boundary");
                }
                return Ok(fields);
            }
            Some(b"\r\n") => {}
            _ => return Err("a multipart boundary not followed by a line break (CRLF)"),
        }
        let Some(&next) = at.get(i + 1) else { break };
        if fields.len() >= MAX_PARTS {
            return Err("too many multipart parts");
        }
        // The CRLF before the next delimiter belongs to it (checked there).
        let part = body.get(after + 2..next.saturating_sub(2)).ok_or("an empty multipart part")?;
        fields.push(read_part(part)?);
    }
    Err("a multipart body without its closing boundary")
}

/// The `boundary` of a `multipart/form-data` `Content-Type`, which may
/// carry a `charset` besides and nothing else.
fn boundary(content_type: &str) -> Result<String, Refusal> {
    let (_, params) = split_params(content_type)?;
    no_repeats(&params)?;
    utf8_charset(&params)?;
    let mut boundary = None;
    for (key, value) in params {
        if value.contains([';', '=']) {
            return Err("a Content-Type parameter with `;` or `=` in its value");
        }
        match key.as_str() {
            "boundary" => boundary = Some(value),
            "charset" => {}
            _ => return Err("an unexpected multipart Content-Type parameter"),
        }
    }
    let b = boundary.ok_or("a multipart body without a boundary")?;
    let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    if b.is_empty() || b.len() > 70 || b.ends_with(' ') || !b.chars().all(bchar) {
        return Err("not an RFC 2046 multipart boundary");
    }
    Ok(b)
}

/// An RFC 9110 token character.
fn tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A header value with parameters (`form-data; name="q"`), split at `;`
/// outside quotes: the first item lower-cased, then each parameter as
/// (lower-cased key, unquoted value). Only the plainest form is accepted,
/// since parsers disagree about everything else: a key is a token, `=`
/// follows it with no space on either side, a value is a non-empty token or
/// a quoted string without backslashes; no empty items (`;;`, a trailing
/// `;`). `="; charset=utf-7"`, say, is an empty key to one parser and a
/// `charset` to python-multipart, which starts over inside the quotes.
fn split_params(value: &str) -> Result<(String, Vec<(String, String)>), Refusal> {
    let mut items = Vec::new();
    let mut rest = value;
    loop {
        let mut quoted = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '\\' if quoted => return Err("a backslash in a quoted header parameter"),
                ';' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        if quoted {
            return Err("an unclosed quote in a header parameter");
        }
        items.push(rest[..end].trim());
        if end == rest.len() {
            break;
        }
        rest = &rest[end + 1..];
    }
    let mut items = items.into_iter();
    let first = items.next().filter(|f| !f.is_empty()).ok_or("an empty header value")?.to_ascii_lowercase();
    let mut params = Vec::new();
    for item in items {
        let (key, value) = item.split_once('=').ok_or("a header parameter without a value")?;
        if key.is_empty() || !key.chars().all(tchar) {
            return Err("a header parameter whose name is not a token");
        }
        let value = match value.strip_prefix('"') {
            Some(inner) => inner.strip_suffix('"').filter(|v| !v.contains('"')),
            None => Some(value).filter(|v| !v.is_empty() && v.chars().all(tchar)),
        };
        let value = value.ok_or("a header parameter value that is neither a token nor a quoted string")?;
        params.push((key.to_ascii_lowercase(), value.to_owned()));
    }
    Ok((first, params))
}

/// Refuses a parameter given twice (parsers keep the first, or the last).
fn no_repeats(params: &[(String, String)]) -> Result<(), Refusal> {
    for (i, (key, _)) in params.iter().enumerate() {
        if params[..i].iter().any(|(k, _)| k == key) {
            return Err("a header parameter given twice");
        }
    }
    Ok(())
}

/// Refuses a `charset` other than UTF-8 or US-ASCII: parsers decode with it
/// (UTF-7 turns `+ADw-script+AD4-` into `<script>`), and this reader does not.
fn utf8_charset(params: &[(String, String)]) -> Result<(), Refusal> {
    let other =
        |(k, v): &(String, String)| k == "charset" && !["utf-8", "us-ascii"].contains(&v.to_ascii_lowercase().as_str());
    match params.iter().any(other) {
        true => Err("a multipart charset other than UTF-8"),
        false => Ok(()),
    }
}

fn read_part(part: &[u8]) -> Result<MultipartField, Refusal> {
    let split =
        memchr::memmem::find(part, b"\r\n\r\n").ok_or("a multipart part without a blank line after its headers")?;
    let (head, data) = (&part[..split], &part[split + 4..]);
    let head = std::str::from_utf8(head).map_err(|_| "a multipart part header that is not UTF-8")?;
    let (mut disposition, mut content_type, mut encoding) = (None, None, None);
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) || line.contains(['\r', '\n']) {
            return Err("a folded or broken multipart part header");
        }
        let (name, value) = line.split_once(':').ok_or("a multipart part header without a colon")?;
        let slot = match name.to_ascii_lowercase().as_str() {
            "content-disposition" => &mut disposition,
            "content-type" => &mut content_type,
            "content-transfer-encoding" => &mut encoding,
            _ => return Err("an unexpected multipart part header"),
        };
        if slot.replace(value.trim()).is_some() {
            return Err("a multipart part header given twice");
        }
    }
    if encoding.is_some_and(|e| !["7bit", "8bit", "binary"].iter().any(|ok| e.eq_ignore_ascii_case(ok))) {
        return Err("a multipart part in a Content-Transfer-Encoding");
    }
    if let Some(content_type) = content_type {
        let (media, params) = split_params(content_type)?;
        no_repeats(&params)?;
        // busboy decodes a field in its part's charset.
        utf8_charset(&params)?;
        if media.starts_with("multipart/") {
            return Err("a nested multipart part");
        }
    }
    let (kind, params) = split_params(disposition.ok_or("a multipart part without a Content-Disposition")?)?;
    if kind != "form-data" {
        return Err("a multipart part that is not form-data");
    }
    no_repeats(&params)?;
    let (mut name, mut filename) = (None, None);
    for (key, value) in params {
        match key.as_str() {
            "name" => name = Some(value),
            "filename" => filename = Some(value),
            _ => return Err("an unexpected Content-Disposition parameter"),
        }
    }
    let name = name.ok_or("a multipart part without a name")?;
    // A part with an empty filename is a file to Starlette and Werkzeug but a
    // text field to Django (`params.get("filename")`) and busboy ≥ 1
    // (multer, @fastify/multipart): its content is inspected as a field's.
    // Browsers send one for an empty file input, with no content.
    let is_file = filename.as_deref().is_some_and(|f| !f.is_empty());
    let text = (!is_file).then(|| String::from_utf8_lossy(data).into_owned());
    Ok(MultipartField { name, filename, text })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn part(disposition: &str, extra: &str, data: &str) -> String {
        format!("--XyZ\r\nContent-Disposition: {disposition}\r\n{extra}\r\n{data}\r\n")
    }

    fn body(parts: &[String]) -> String {
        parts.concat() + "--XyZ--\r\n"
    }

    #[test]
    fn reads_fields_and_files() {
        let b = body(&[
            part("form-data; name=\"q\"", "", "hello\r\nworld"),
            part("form-data; name=\"f\"; filename=\"a;b.txt\"", "Content-Type: text/plain\r\n", "1' OR 1=1"),
            part(
                "FORM-DATA; NAME=plain",
                "content-transfer-encoding: binary\r\nContent-Type: text/plain; charset=UTF-8\r\n",
                "",
            ),
        ]);
        let fields = parse(CT, b.as_bytes()).unwrap();
        assert_eq!(fields.len(), 3);
        assert_eq!((fields[0].name.as_str(), fields[0].text.as_deref()), ("q", Some("hello\r\nworld")));
        assert_eq!((fields[1].filename.as_deref(), fields[1].text.as_deref()), (Some("a;b.txt"), None));
        assert_eq!((fields[2].name.as_str(), fields[2].text.as_deref()), ("plain", Some("")));
        // An empty filename: a field to Django and busboy, so read as text.
        let empty = body(&[part("form-data; name=\"q\"; filename=\"\"", "", "x")]);
        let fields = parse(CT, empty.as_bytes()).unwrap();
        assert_eq!((fields[0].filename.as_deref(), fields[0].text.as_deref()), (Some(""), Some("x")));
        let quoted = "multipart/form-data; charset=UTF-8; boundary=\"XyZ\"";
        assert_eq!(parse(quoted, b.as_bytes()).unwrap().len(), 3);
        assert_eq!(parse(CT, b"--XyZ--\r\n").unwrap(), vec![]);
    }

    /// Each shape some parser reads differently from another is refused.
    #[test]
    fn ambiguous_shapes_are_refused() {
        let ok = part("form-data; name=\"q\"", "", "x");
        let with_ok = || body(std::slice::from_ref(&ok));
        let refused = |ct: &str, b: String| {
            assert!(parse(ct, b.as_bytes()).is_err(), "read: {ct} {b:?}");
        };
        refused("multipart/form-data; boundary=AAA; boundary=XyZ", with_ok());
        refused("multipart/form-data; boundary=XyZ; BOUNDARY=AAA", with_ok());
        refused("multipart/form-data", with_ok());
        refused("multipart/form-data; boundary=XyZ; charset=utf-7", with_ok());
        refused("multipart/form-data; boundary=\"Xy\\Z\"", with_ok());
        refused(CT, format!("preamble\r\n{}", with_ok()));
        refused(CT, ok.clone());
        refused(CT, with_ok() + "epilogue");
        refused(CT, format!("{ok}--XyZ \r\n--XyZ--\r\n"));
        refused(CT, format!("{ok}--XyZ--\r\n--XyZ--\r\n"));
        refused(CT, body(&[part("form-data; name=\"q\"", "", "a\n--XyZ\nx")]));
        refused(CT, body(&[part("form-data; name=\"q\"", "", "a--XyZ")]));
        refused(CT, body(&[part("form-data; name=\"q\"; x=\"; filename=y\"", "", "z")]));
        refused(CT, body(&[part("form-data; name=\"pw\"; NAME=\"q\"", "", "z")]));
        refused(CT, body(&[part("form-data; name*=UTF-8''q", "", "z")]));
        refused(CT, body(&[part("form-data; filename=\"a\"", "", "z")]));
        refused(CT, body(&[part("attachment; name=\"q\"", "", "z")]));
        refused(CT, body(&[part("form-data; name=\"q", "", "z")]));
        refused(CT, body(&[part("form-data; name=\"q\"", "Content-Disposition: form-data; name=\"r\"\r\n", "z")]));
        refused(CT, body(&[part("form-data; name=\"q\"", "Content-Transfer-Encoding: base64\r\n", "PHNjcmlwdD4=")]));
        refused(CT, body(&[part("form-data; name=\"q\"", "Content-Type: multipart/mixed; boundary=b\r\n", "z")]));
        refused(CT, body(&[part("form-data; name=\"q\"", "X-Other: 1\r\n", "z")]));
        refused(CT, body(&[part("form-data;\r\n name=\"q\"", "", "z")]));
        refused(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"q\"\r\nz\r\n--XyZ--".into());
        // Parameters python-multipart, Werkzeug or busboy read otherwise
        // (helper-50): a quoted value after an empty key, which they scan
        // again; an empty or non-token value; spaces around `=`; a part in
        // another charset; parameters the reader has no use for.
        refused("multipart/form-data; boundary=XyZ; =\"; charset=utf-7\"", with_ok());
        refused("multipart/form-data; boundary=XyZ; =\"; boundary=AAA\"", with_ok());
        refused("multipart/form-data; boundary=XyZ; x/y=1", with_ok());
        refused("multipart/form-data; boundary=XyZ; version=1", with_ok());
        refused("multipart/form-data; boundary=XyZ;", with_ok());
        refused("multipart/form-data; boundary = XyZ", with_ok());
        refused("multipart/form-data; boundary=\"Xy=Z\"", with_ok());
        refused(CT, body(&[part("form-data; name=\"q\"; filename=", "", "z")]));
        refused(CT, body(&[part("form-data; name=\"q\"; filename=/x", "", "z")]));
        refused(CT, body(&[part("form-data; name=\"q\"; filename==a", "", "z")]));
        refused(CT, body(&[part("form-data; name=\"q\"; filename = \"x\"", "", "z")]));
        refused(CT, body(&[part("form-data; name=\"pw\"; =\"; name=q\"", "", "z")]));
        refused(CT, body(&[part("form-data;; name=\"q\"", "", "z")]));
        refused(CT, body(&[part("form-data; name=\"q\"", "Content-Type: text/plain; charset=utf-16le\r\n", "z")]));
        refused(CT, body(&[part("form-data; name=\"q\"", "Content-Type: text/plain; charset=a; charset=b\r\n", "z")]));
    }

    /// Truncations and byte flips of a valid body end in fields or a
    /// refusal, never a panic.
    #[test]
    fn hostile_bodies_never_panic() {
        let valid = body(&[
            part("form-data; name=\"q\"", "", "hello"),
            part("form-data; name=\"f\"; filename=\"x.txt\"", "Content-Type: text/plain\r\n", "data"),
        ]);
        let bytes = valid.as_bytes();
        for cut in 0..bytes.len() {
            let _ = parse(CT, &bytes[..cut]);
        }
        let mut state = 0x2545_f491_u32;
        for _ in 0..5_000 {
            let mut mutated = bytes.to_vec();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let i = usize::try_from(state).unwrap() % mutated.len();
                mutated[i] = state.to_le_bytes()[1];
            }
            let _ = parse(CT, &mutated);
        }
        let flood: String = (0..=MAX_PARTS).map(|i| part(&format!("form-data; name=\"f{i}\""), "", "x")).collect();
        assert_eq!(parse(CT, (flood + "--XyZ--\r\n").as_bytes()), Err("too many multipart parts"));
    }
}

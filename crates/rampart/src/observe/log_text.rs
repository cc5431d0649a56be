//! One event, one line, in the text log format (`[log] format = "text"`).
//!
//! Fields carry client data (a query key a WAF rule matched, an excerpt of
//! the input, a username). The JSON format escapes it; tracing-subscriber's
//! text format escapes ANSI sequences but writes `\n` and `\r` as they are,
//! so a value with a newline could forge a log line of its own. [`OneLine`]
//! sits between the formatter and stdout: tracing-subscriber formats each
//! event into a buffer and writes it with one `write_all`, and every line
//! break or other control character inside that buffer (all but its final
//! newline) is written as an escape (`\n`, `\r`, `\u{85}`…).

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// A [`MakeWriter`] whose writers escape line breaks inside an event.
#[derive(Clone, Copy, Debug)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

/// See [`OneLine`].
#[derive(Debug)]
pub struct OneLineWriter<W>(W);

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `buf` with every control character but tab, ESC (the formatter's own
/// colours; it escapes those in values) and a final newline escaped, and the
/// Unicode line and paragraph separators with them.
pub fn escape(buf: &[u8]) -> Vec<u8> {
    let (body, end) = match buf.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (buf, &b""[..]),
    };
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '\t' | '\u{1b}' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(end);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn line_breaks_inside_an_event_are_escaped() {
        assert_eq!(escape(b"a\nb\r\n"), b"a\\nb\\r\n");
        assert_eq!(escape(b"plain\n"), b"plain\n");
        assert_eq!(escape(b"no newline"), b"no newline");
        assert_eq!(escape("x\u{85}y\u{2028}z\u{0}\t\u{1b}[1m\n".as_bytes()), b"x\\u{85}y\\u{2028}z\\u{0}\t\x1b[1m\n");
        assert_eq!(escape(b"\xff\n"), "\u{FFFD}\n".as_bytes());
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Through tracing-subscriber's own text formatter: a value with a
    /// newline cannot start a line of its own.
    #[test]
    fn a_field_cannot_forge_a_line_of_the_text_log() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(OneLine(move || sink.clone())).finish();
        tracing::subscriber::with_default(subscriber, || {
            let location = "query:x\n2026-12-04T00:00:00Z  INFO rampart: admin logged in";
            tracing::warn!(location = %location, "suspicious input");
            tracing::info!("next");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("query:x\\n2026-12-04T00:00:00Z  INFO rampart: admin logged in"), "{text}");
        assert!(lines[1].contains("next"));
    }
}

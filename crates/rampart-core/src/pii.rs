//! PII redaction: card numbers (Luhn-checked), US social security numbers,
//! e-mail addresses and phone numbers in text are replaced by a marker naming
//! what was there (`[REDACTED:card]`), before the text reaches an upstream that
//! has no business storing it.
//!
//! Matching uses the `regex` crate (linear time: no input makes it backtrack),
//! then a check that cuts false positives: the Luhn checksum for cards, the
//! issuing rules for SSNs. Cards are matched first, so their digits are never
//! taken for a phone number.
//!
//! ```
//! use rampart_core::pii::{redact, PiiKind};
//! let (text, found) = redact("card 4111 1111 1111 1111, mail ann@example.com").unwrap();
//! assert_eq!(text, "card [REDACTED:card], mail [REDACTED:email]");
//! assert_eq!(found, vec![PiiKind::Card, PiiKind::Email]);
//! assert!(redact("order 1234 5678 shipped").is_none());
//! ```

use std::sync::OnceLock;

use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PiiKind {
    Card,
    Ssn,
    Email,
    Phone,
}

impl PiiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Ssn => "ssn",
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }
}

struct Patterns {
    card: Regex,
    ssn: Regex,
    email: Regex,
    phone: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // 13–19 digits in one run, or in the groupings printed on cards
        // (4-4-4-4…, Amex 4-6-5) with one kind of separator throughout.
        card: compile(r"\b(?:\d{13,19}|\d{4}(?: \d{4}){2} \d{1,7}|\d{4}(?:-\d{4}){2}-\d{1,7}|\d{4} \d{6} \d{5}|\d{4}-\d{6}-\d{5})\b"),
        ssn: compile(r"\b\d{3}-\d{2}-\d{4}\b"),
        email: compile(r"(?i)\b[a-z0-9._%+\-]{1,64}@[a-z0-9\-]{1,63}(?:\.[a-z0-9\-]{1,63})*\.[a-z]{2,24}\b"),
        // International (+CC …) or North American formats with separators.
        phone: compile(r"(?:\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]?\d{2,4}){1,3}|\(\d{3}\) ?\d{3}[ .\-]\d{4}|\b\d{3}[.\-]\d{3}[.\-]\d{4})\b"),
    })
}

#[allow(clippy::expect_used)] // Constant patterns, compiled by every test run.
fn compile(re: &str) -> Regex {
    Regex::new(re).expect("constant pattern compiles")
}

/// The Luhn checksum used by payment cards.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn is_card(m: &str) -> bool {
    let digits: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    (13..=19).contains(&digits.len()) && luhn_valid(&digits) && digits.iter().any(|d| *d != digits[0])
}

fn is_ssn(m: &str) -> bool {
    let parts: Vec<&str> = m.split('-').collect();
    let [area, group, serial] = parts[..] else { return false };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// One redaction pass: a pattern, what it finds, and a check on each match.
type Pass<'a> = (&'a Regex, PiiKind, fn(&str) -> bool);

/// Redacts `text`; `None` when nothing was found (so callers can skip copying).
pub fn redact(text: &str) -> Option<(String, Vec<PiiKind>)> {
    // Cheap pre-filter: every pattern needs a digit or an '@'.
    if !text.bytes().any(|b| b.is_ascii_digit() || b == b'@') {
        return None;
    }
    let p = patterns();
    let mut found = Vec::new();
    let mut out = std::borrow::Cow::Borrowed(text);
    let passes: [Pass<'_>; 4] = [
        (&p.card, PiiKind::Card, is_card),
        (&p.ssn, PiiKind::Ssn, is_ssn),
        (&p.email, PiiKind::Email, |_| true),
        (&p.phone, PiiKind::Phone, |m| m.bytes().filter(u8::is_ascii_digit).count() >= 8),
    ];
    for (re, kind, valid) in passes {
        let mut hit = false;
        let replaced = re.replace_all(&out, |c: &regex::Captures<'_>| {
            let m = c.get(0).map_or("", |m| m.as_str());
            if valid(m) {
                hit = true;
                format!("[REDACTED:{}]", kind.as_str())
            } else {
                m.to_string()
            }
        });
        if hit {
            found.push(kind);
            out = std::borrow::Cow::Owned(replaced.into_owned());
        }
    }
    if found.is_empty() {
        None
    } else {
        Some((out.into_owned(), found))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Option<&str>) {
        assert_eq!(redact(input).map(|(s, _)| s).as_deref(), expected, "{input}");
    }

    #[test]
    fn redacts_what_it_should() {
        check("4111111111111111", Some("[REDACTED:card]"));
        check("pay with 5500-0000-0000-0004 now", Some("pay with [REDACTED:card] now"));
        check("amex 3782 822463 10005", Some("amex [REDACTED:card]"));
        check("ssn 123-45-6789.", Some("ssn [REDACTED:ssn]."));
        check("Write to Jane.Doe+tag@mail.example.co.uk!", Some("Write to [REDACTED:email]!"));
        check("call +1 415 555 2671 or (415) 555-2671", Some("call [REDACTED:phone] or [REDACTED:phone]"));
        check("+44 20 7946 0958", Some("[REDACTED:phone]"));
        check("415-555-2671", Some("[REDACTED:phone]"));
    }

    #[test]
    fn leaves_look_alikes_alone() {
        check("4111111111111112", None); // fails Luhn
        check("0000000000000000", None); // one repeated digit
        check("order 1234 5678 shipped", None);
        check("000-12-3456 666-12-3456 912-12-3456 123-00-4567", None); // never-issued SSNs
        check("version 2024-01-15 at 10:30", None);
        check("user@localhost and @handle", None);
        check("ISBN 978-3-16-148410-0", None);
        check("price 1,299.00 for 3 items", None);
        check("", None);
        check("no digits here at all", None);
    }

    #[test]
    fn hostile_inputs_stay_linear() {
        let long = "1 ".repeat(50_000);
        let _ = redact(&long);
        let at = "a@".repeat(50_000);
        let _ = redact(&at);
        let started = std::time::Instant::now();
        let _ = redact(&"9".repeat(200_000));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

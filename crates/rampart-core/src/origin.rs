//! CORS origin patterns: which `Origin` header values a route trusts.
//!
//! A pattern is `*` (any origin), an exact origin (`https://app.example.com`,
//! `http://localhost:8080`), or an exact origin with a wildcard in one of two
//! places: the first host label (`https://*.example.com`, one or more
//! subdomains, default port) or the port (`http://localhost:*`, any port or
//! none). Both may be combined (`https://*.example.com:*`). Anything looser,
//! such as `https://ex*.com`, is refused at config load rather than guessed
//! at, and so is the `null` origin.
//!
//! ```
//! use rampart_core::origin::{OriginPattern, OriginPatternError};
//!
//! let pattern = OriginPattern::parse("https://*.example.com").unwrap();
//! assert!(pattern.matches("https://app.example.com"));
//! assert!(!pattern.matches("https://example.com"));
//! assert!(!pattern.matches("https://app.example.com.evil.net"));
//! assert!(!pattern.matches("http://app.example.com"));
//!
//! assert_eq!(OriginPattern::parse("null"), Err(OriginPatternError::NullOrigin));
//! ```

use std::net::Ipv6Addr;

/// Why an origin pattern was refused at config load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginPatternError {
    /// The pattern is empty.
    #[error("origin pattern must not be empty")]
    Empty,
    /// The literal `null` origin.
    #[error(
        "the 'null' origin must never be trusted: browsers send it from sandboxed iframes, \
         file: pages and redirects, so any site can produce it"
    )]
    NullOrigin,
    /// No `scheme://`.
    #[error("origin pattern {pattern:?} must start with 'http://' or 'https://'")]
    MissingScheme {
        /// The pattern as written.
        pattern: String,
    },
    /// A scheme other than http or https.
    #[error("origin pattern {pattern:?}: the scheme must be http or https")]
    UnsupportedScheme {
        /// The pattern as written.
        pattern: String,
    },
    /// A path, query or fragment, including a lone trailing `/`.
    #[error("origin pattern {pattern:?} must not have a path, query or fragment (not even a trailing '/'): an origin is scheme://host[:port]")]
    HasPath {
        /// The pattern as written.
        pattern: String,
    },
    /// `user@` before the host.
    #[error("origin pattern {pattern:?} must not contain user info ('user@')")]
    HasUserinfo {
        /// The pattern as written.
        pattern: String,
    },
    /// A `*` somewhere other than the whole first host label or the port.
    #[error("origin pattern {pattern:?}: '*' is only allowed alone, as the first host label ('https://*.example.com') or as the port ('http://localhost:*')")]
    MisplacedWildcard {
        /// The pattern as written.
        pattern: String,
    },
    /// The host is not a name of ASCII labels or a bracketed IPv6 address.
    #[error(
        "origin pattern {pattern:?} has an invalid host (international names must be written in punycode, 'xn--...')"
    )]
    InvalidHost {
        /// The pattern as written.
        pattern: String,
    },
    /// The port is not a number from 1 to 65535 or `*`.
    #[error("origin pattern {pattern:?} has an invalid port (1-65535 or '*')")]
    InvalidPort {
        /// The pattern as written.
        pattern: String,
    },
}

/// Which ports a [`OriginPattern::Wildcard`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginPort {
    /// No port in the origin: the scheme's default.
    Default,
    /// Exactly this (non-default) port.
    Fixed(u16),
    /// Any port, or none.
    Any,
}

/// A compiled CORS origin pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin. Never combine with credentials.
    Any,
    /// One origin, lowercase, as browsers serialise it (`https://a.example:8443`).
    Exact(String),
    /// An origin with a wildcard subdomain and/or port.
    Wildcard {
        /// `http` or `https`.
        scheme: String,
        /// Lowercase host; with `subdomains`, the parent domain (`example.com`).
        host: String,
        /// `*.` before `host`: one or more labels must precede it.
        subdomains: bool,
        /// Accepted ports.
        port: OriginPort,
    },
}

impl OriginPattern {
    /// Parses and validates a pattern, normalising it to lowercase. An
    /// explicit default port (`https://a.example:443`) is dropped, because
    /// browsers never send it.
    pub fn parse(s: &str) -> Result<Self, OriginPatternError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if s.is_empty() {
            return Err(OriginPatternError::Empty);
        }
        if s.eq_ignore_ascii_case("null") {
            return Err(OriginPatternError::NullOrigin);
        }
        let pattern = || s.to_owned();
        let (scheme, authority) =
            s.split_once("://").ok_or_else(|| OriginPatternError::MissingScheme { pattern: pattern() })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.contains('*') {
            return Err(OriginPatternError::MisplacedWildcard { pattern: pattern() });
        }
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(OriginPatternError::UnsupportedScheme { pattern: pattern() }),
        };
        if authority.contains(['/', '?', '#']) {
            return Err(OriginPatternError::HasPath { pattern: pattern() });
        }
        if authority.contains('@') {
            return Err(OriginPatternError::HasUserinfo { pattern: pattern() });
        }
        let (host, port) =
            split_authority(authority).ok_or_else(|| OriginPatternError::InvalidHost { pattern: pattern() })?;

        let host = host.to_ascii_lowercase();
        let (subdomains, base) = match host.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, host.as_str()),
        };
        if base.contains('*') {
            return Err(OriginPatternError::MisplacedWildcard { pattern: pattern() });
        }
        let valid = if base.starts_with('[') { !subdomains && is_ipv6_literal(base) } else { is_host_name(base) };
        if !valid {
            return Err(OriginPatternError::InvalidHost { pattern: pattern() });
        }

        let port = match port {
            None => OriginPort::Default,
            Some("*") => OriginPort::Any,
            Some(p) if p.contains('*') => return Err(OriginPatternError::MisplacedWildcard { pattern: pattern() }),
            Some(p) => match parse_port(p) {
                Some(n) if n == default_port => OriginPort::Default,
                Some(n) if n != 0 => OriginPort::Fixed(n),
                _ => return Err(OriginPatternError::InvalidPort { pattern: pattern() }),
            },
        };

        Ok(match (subdomains, port) {
            (false, OriginPort::Default) => Self::Exact(format!("{scheme}://{base}")),
            (false, OriginPort::Fixed(n)) => Self::Exact(format!("{scheme}://{base}:{n}")),
            _ => Self::Wildcard { scheme, host: base.to_owned(), subdomains, port },
        })
    }

    /// True when the request's `Origin` header value is allowed. Never
    /// panics, whatever `origin` contains.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            Self::Wildcard { scheme, host, subdomains, port } => {
                let Some((their_scheme, authority)) = origin.split_once("://") else {
                    return false;
                };
                let Some((their_host, their_port)) = split_authority(authority) else {
                    return false;
                };
                their_scheme.eq_ignore_ascii_case(scheme)
                    && port_matches(*port, their_port)
                    && if *subdomains {
                        is_subdomain_of(their_host, host)
                    } else {
                        their_host.eq_ignore_ascii_case(host)
                    }
            }
        }
    }

    /// True for `*`, which the CORS layer must not combine with credentials.
    pub fn is_any(&self) -> bool {
        matches!(self, Self::Any)
    }

    /// True for a wildcard over the subdomains of a public suffix, where
    /// anyone can register a site: a top-level domain (`https://*.com`), a
    /// registry's second level (`https://*.co.uk`) or a hosting platform's
    /// domain (`https://*.github.io`), per the Public Suffix List compiled
    /// into the `psl` crate (its ICANN and private sections). A single label
    /// the list does not know counts as a top-level domain; `*.localhost`
    /// names only the local machine and is not counted.
    pub fn covers_a_public_suffix(&self) -> bool {
        match self {
            Self::Wildcard { host, subdomains: true, .. } => {
                host != "localhost"
                    && psl::suffix(host.as_bytes()).is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(host.as_bytes()))
            }
            _ => false,
        }
    }
}

/// Splits `host[:port]` or `[v6][:port]`. `None` when brackets are unbalanced
/// or something other than `:` follows the closing bracket.
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?))),
        }
    } else {
        Some(match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        })
    }
}

/// Digits only (`u16::from_str` alone would accept a leading `+`).
fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

fn port_matches(pattern: OriginPort, port: Option<&str>) -> bool {
    match (pattern, port) {
        (OriginPort::Default, None) | (OriginPort::Any, None) => true,
        (OriginPort::Default, Some(_)) | (OriginPort::Fixed(_), None) => false,
        (OriginPort::Fixed(n), Some(p)) => parse_port(p) == Some(n),
        (OriginPort::Any, Some(p)) => parse_port(p).is_some(),
    }
}

/// True when `host` is `parent` preceded by one or more valid labels.
fn is_subdomain_of(host: &str, parent: &str) -> bool {
    // `host` must be at least "x." + parent.
    let Some(split) = host.len().checked_sub(parent.len() + 1).filter(|&n| n > 0) else {
        return false;
    };
    match (host.get(..split), host.get(split..)) {
        (Some(labels), Some(rest)) => {
            rest.strip_prefix('.').is_some_and(|suffix| suffix.eq_ignore_ascii_case(parent)) && is_host_name(labels)
        }
        _ => false,
    }
}

/// Dot-separated non-empty labels of ASCII letters, digits, `-` and `_`.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_ipv6_literal(s: &str) -> bool {
    s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).is_some_and(|inner| inner.parse::<Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// `expected` is `Err` for a refused pattern, else origins with whether
    /// each matches.
    #[track_caller]
    fn check(pattern: &str, expected: Result<&[(&str, bool)], OriginPatternError>) {
        match (OriginPattern::parse(pattern), expected) {
            (Ok(p), Ok(cases)) => {
                for &(origin, want) in cases {
                    assert_eq!(p.matches(origin), want, "pattern {pattern:?} = {p:?}, origin {origin:?}");
                }
            }
            (Err(got), Err(want)) => assert_eq!(got, want, "pattern {pattern:?}"),
            (got, want) => panic!("pattern {pattern:?}: got {got:?}, want {want:?}"),
        }
    }

    fn err(
        kind: fn(String) -> OriginPatternError,
        pattern: &str,
    ) -> Result<&'static [(&'static str, bool)], OriginPatternError> {
        Err(kind(pattern.to_owned()))
    }

    #[test]
    fn any() {
        check("*", Ok(&[("https://a.example", true), ("null", true), ("", true)]));
        assert!(OriginPattern::parse("*").unwrap().is_any());
        assert!(!OriginPattern::parse("https://a.example").unwrap().is_any());
    }

    #[test]
    fn exact() {
        check(
            "https://App.Example.com",
            Ok(&[
                ("https://app.example.com", true),
                ("HTTPS://APP.EXAMPLE.COM", true),
                ("http://app.example.com", false),
                ("https://app.example.com:443", false),
                ("https://app.example.com/", false),
                ("https://app.example.com.evil.net", false),
                ("https://evil.app.example.com", false),
                ("null", false),
                ("", false),
            ]),
        );
        check(
            "http://localhost:8080",
            Ok(&[("http://localhost:8080", true), ("http://localhost", false), ("http://localhost:80", false)]),
        );
        check("https://a.example:443", Ok(&[("https://a.example", true)]));
        check("http://a.example:80", Ok(&[("http://a.example", true)]));
        check("http://[::1]:3000", Ok(&[("http://[::1]:3000", true), ("http://[::1]", false)]));
        check("http://127.0.0.1", Ok(&[("http://127.0.0.1", true)]));
        assert_eq!(
            OriginPattern::parse("HTTPS://App.Example.COM:08443"),
            Ok(OriginPattern::Exact("https://app.example.com:8443".into()))
        );
    }

    #[test]
    fn wildcard_subdomain() {
        check(
            "https://*.example.com",
            Ok(&[
                ("https://a.example.com", true),
                ("https://a.b.example.com", true),
                ("https://A.EXAMPLE.COM", true),
                ("https://example.com", false),
                ("https://.example.com", false),
                ("https://a..example.com", false),
                ("https://aexample.com", false),
                ("https://a.example.com:443", false),
                ("https://a.example.com:8443", false),
                ("http://a.example.com", false),
                ("https://a.example.com.evil.net", false),
                ("https://evil.net#.example.com", false),
                ("https://evil.net/.example.com", false),
                ("https://user@a.example.com", false),
                ("https://\u{e9}.example.com", false),
                ("https://a.example.com/", false),
                ("https://a.example.com.", false),
                ("a.example.com", false),
                ("", false),
            ]),
        );
    }

    #[test]
    fn wildcard_port() {
        check(
            "http://localhost:*",
            Ok(&[
                ("http://localhost", true),
                ("http://localhost:3000", true),
                ("http://LOCALHOST:65535", true),
                ("http://localhost:65536", false),
                ("http://localhost:", false),
                ("http://localhost:+80", false),
                ("http://localhost:80:80", false),
                ("http://localhost.evil.net:80", false),
                ("https://localhost:3000", false),
            ]),
        );
        check(
            "http://[::1]:*",
            Ok(&[
                ("http://[::1]:5173", true),
                ("http://[::1]", true),
                ("http://[::2]:1", false),
                ("http://[::1]x", false),
            ]),
        );
        check(
            "https://*.example.com:*",
            Ok(&[
                ("https://a.example.com:8443", true),
                ("https://a.example.com", true),
                ("https://example.com:8443", false),
            ]),
        );
        check(
            "https://*.example.com:8443",
            Ok(&[("https://a.example.com:8443", true), ("https://a.example.com", false)]),
        );
        assert_eq!(
            OriginPattern::parse("https://*.Example.com:443"),
            Ok(OriginPattern::Wildcard {
                scheme: "https".into(),
                host: "example.com".into(),
                subdomains: true,
                port: OriginPort::Default,
            })
        );
    }

    #[test]
    fn refused() {
        check("", Err(OriginPatternError::Empty));
        check("null", Err(OriginPatternError::NullOrigin));
        check("NULL", Err(OriginPatternError::NullOrigin));
        use OriginPatternError as E;
        let missing = |pattern| E::MissingScheme { pattern };
        let scheme = |pattern| E::UnsupportedScheme { pattern };
        let path = |pattern| E::HasPath { pattern };
        let userinfo = |pattern| E::HasUserinfo { pattern };
        let wildcard = |pattern| E::MisplacedWildcard { pattern };
        let host = |pattern| E::InvalidHost { pattern };
        let port = |pattern| E::InvalidPort { pattern };
        for p in ["*.example.com", "example.com", "https:/example.com", "//example.com", "**"] {
            check(p, err(missing, p));
        }
        for p in ["ftp://example.com", "file://x", "javascript://x", "https ://x"] {
            check(p, err(scheme, p));
        }
        for p in [
            "https://example.com/",
            "https://example.com/app",
            "https://example.com?x",
            "https://example.com#x",
            "https://*.example.com/",
        ] {
            check(p, err(path, p));
        }
        for p in ["https://user@example.com", "https://user:pw@example.com"] {
            check(p, err(userinfo, p));
        }
        for p in [
            "https://ex*.com",
            "https://*example.com",
            "https://a.*.com",
            "https://*",
            "https://*.*.com",
            "*://example.com",
            "https://example.com:8*",
            "http*://x.com",
            "https://**.example.com",
        ] {
            check(p, err(wildcard, p));
        }
        for p in [
            "https://",
            "https://exa mple.com",
            "https://example..com",
            "https://example.com.",
            "https://caf\u{e9}.com",
            "https://[::1",
            "https://[nope]",
            "https://*.[::1]",
            "https://:80",
            "https://a.com\n",
        ] {
            check(p, err(host, p));
        }
        for p in [
            "http://localhost:",
            "http://localhost:0",
            "http://localhost:65536",
            "http://localhost:+80",
            "http://localhost:80:80",
            "http://[::1]:x",
        ] {
            check(p, err(port, p));
        }
    }

    #[test]
    fn null_message_explains_why() {
        let message = OriginPattern::parse("null").unwrap_err().to_string();
        assert!(message.contains("never be trusted") && message.contains("sandboxed"), "{message}");
    }

    /// Deterministic stand-in for the fuzz target.
    #[test]
    fn hostile_origins_never_panic() {
        let patterns: Vec<OriginPattern> = [
            "https://*.example.com",
            "http://localhost:*",
            "https://*.example.com:*",
            "https://*.example.com:8443",
            "http://[::1]:*",
            "https://app.example.com",
        ]
        .iter()
        .map(|p| OriginPattern::parse(p).unwrap())
        .collect();
        let alphabet = [
            "https://", "http://", "*", ".", "example", "com", ":", "8443", "[", "]", "::1", "a", "/", "@", "\u{e9}",
            "\0", "null",
        ];
        let mut rng = XorShift(0xda94_2042_e4dd_58b5);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = rng.below(8);
            let s: String = (0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize]).collect();
            for p in &patterns {
                let _ = p.matches(&s);
            }
            if let Ok(p) = OriginPattern::parse(&s) {
                parsed += 1;
                match &p {
                    OriginPattern::Exact(e) => {
                        assert!(p.matches(e) && p.matches(&e.to_ascii_uppercase()), "{s:?}");
                        assert_eq!(OriginPattern::parse(e).as_ref(), Ok(&p), "{s:?}");
                        assert_eq!(*e, e.to_ascii_lowercase());
                    }
                    OriginPattern::Any => assert_eq!(s, "*"),
                    OriginPattern::Wildcard { .. } => assert!(s.contains('*'), "{s:?}"),
                }
                assert!(!p.matches("null") || p.is_any(), "{s:?}");
            }
        }
        assert!(parsed > 100, "generator too hostile: {parsed}");
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Uniform enough in `0..n` for a test generator.
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }
}

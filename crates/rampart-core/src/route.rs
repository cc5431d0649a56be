//! Matching requests to configured routes by host, method and path.
//!
//! Patterns are compiled once at config load; [`RouteMatcher::find`] then
//! scans the table in order without allocating, and the first route whose
//! host, method and path all match wins. Paths given to it are expected to
//! have been through [`normalize_path`](crate::path::normalize_path).
//!
//! Path patterns are `/`-separated segments, each a literal, `*` or `{name}`
//! (exactly one non-empty segment) or, as the last segment only, `**` (zero
//! or more segments). Host patterns are an exact name or `*.suffix`.
//!
//! ```
//! use http::Method;
//! use rampart_core::route::{HostPattern, PathPattern, RouteMatcher, RouteSpec};
//!
//! let health = PathPattern::parse("/healthz").unwrap();
//! let api = PathPattern::parse("/api/**").unwrap();
//! let hosts = [HostPattern::parse("*.example.com").unwrap()];
//! let matcher = RouteMatcher::new([
//!     RouteSpec { hosts: &[], methods: &[Method::GET], path: &health },
//!     RouteSpec { hosts: &hosts, methods: &[], path: &api },
//! ]);
//!
//! assert_eq!(matcher.find(None, &Method::GET, "/healthz"), Some(0));
//! assert_eq!(matcher.find(Some("eu.example.com:443"), &Method::POST, "/api/users"), Some(1));
//! assert_eq!(matcher.find(Some("example.com"), &Method::POST, "/api/users"), None);
//! assert_eq!(matcher.find(None, &Method::GET, "/apix"), None);
//! ```

use std::net::Ipv6Addr;

use http::Method;

/// Why a path or host pattern was refused at config load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The path pattern does not start with `/`.
    #[error("path pattern must start with '/'")]
    PathNotAbsolute,
    /// `**` somewhere other than the last segment.
    #[error("'**' may only be the last segment")]
    DoubleStarNotLast,
    /// `//` in the middle of a path pattern.
    #[error("path pattern must not contain an empty segment ('//')")]
    EmptySegment,
    /// A `.` or `..` segment, which no normalised request path contains.
    #[error("path pattern must not contain '.' or '..' segments (such request paths are rejected before matching)")]
    DotSegment,
    /// `*`, `{` or `}` mixed with other characters in one segment.
    #[error("'*' and '{{name}}' must be a whole segment, found {segment:?}")]
    PartialWildcard {
        /// The offending segment.
        segment: String,
    },
    /// `{}` or a name with characters other than letters, digits and `_`.
    #[error("invalid parameter {segment:?}: use '{{name}}' with letters, digits and '_'")]
    InvalidParameter {
        /// The offending segment.
        segment: String,
    },
    /// A `?` or `#`.
    #[error("path pattern must not contain a query or fragment ('?' or '#')")]
    QueryOrFragment,
    /// A `%XX` escape.
    #[error(
        "path pattern contains the escape {escape:?}; patterns match the decoded path, so write the character itself"
    )]
    PercentEscape {
        /// The escape as written.
        escape: String,
    },
    /// A control character or backslash, which no accepted request path has.
    #[error("path pattern must not contain control characters or backslashes")]
    ForbiddenCharacter,
    /// The host pattern is empty.
    #[error("host pattern must not be empty")]
    EmptyHost,
    /// A `*` other than a whole first label followed by a suffix.
    #[error("host pattern {pattern:?}: '*' is only allowed as the whole first label, as in '*.example.com'")]
    HostWildcard {
        /// The host pattern as written.
        pattern: String,
    },
    /// Anything else wrong with a host pattern.
    #[error("host pattern {pattern:?} is not a host name or bracketed IPv6 address (no port, path or empty label)")]
    InvalidHost {
        /// The host pattern as written.
        pattern: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*` or `{name}`: exactly one non-empty segment.
    Any,
}

/// A compiled path pattern such as `/api/v1/users/{id}` or `/static/**`.
#[derive(Clone, Debug)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
    /// Ends in `**`.
    tail: bool,
    /// No wildcards at all: matching is a string comparison with `source`.
    exact: bool,
    /// Every matching path starts with this: the leading literal segments,
    /// plus the `/` that must follow them when a wildcard segment comes next.
    prefix: String,
    /// How many leading segments `prefix` covers.
    prefix_segments: usize,
    /// The first 16 bytes of `prefix` and a mask of the valid ones, so most
    /// non-matching routes are rejected with one integer comparison.
    head: u128,
    head_mask: u128,
}

impl PathPattern {
    /// Parses and validates a pattern.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let rest = s.strip_prefix('/').ok_or(PatternError::PathNotAbsolute)?;
        check_path_characters(s)?;
        let mut segments = Vec::new();
        let mut tail = false;
        let mut parts = rest.split('/').peekable();
        while let Some(part) = parts.next() {
            let last = parts.peek().is_none();
            let segment = match part {
                "**" if last => {
                    tail = true;
                    continue;
                }
                "**" => return Err(PatternError::DoubleStarNotLast),
                "*" => Segment::Any,
                // A trailing slash is a literal empty last segment, so `/a/`
                // matches `/a/` only, as it would in the upstream.
                "" if last => Segment::Literal("".into()),
                "" => return Err(PatternError::EmptySegment),
                "." | ".." => return Err(PatternError::DotSegment),
                p if p.starts_with('{') => {
                    let name = p.strip_prefix('{').and_then(|p| p.strip_suffix('}'));
                    match name {
                        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                            Segment::Any
                        }
                        _ => return Err(PatternError::InvalidParameter { segment: p.to_owned() }),
                    }
                }
                p if p.contains(['*', '{', '}']) => {
                    return Err(PatternError::PartialWildcard { segment: p.to_owned() })
                }
                p => Segment::Literal(p.into()),
            };
            segments.push(segment);
        }
        let exact = !tail && segments.iter().all(|s| matches!(s, Segment::Literal(_)));
        let (prefix, prefix_segments) = literal_prefix(&segments);
        Ok(Self {
            source: s.to_owned(),
            tail,
            exact,
            head: head_of(prefix.as_bytes()),
            head_mask: head_mask(prefix.len()),
            prefix,
            prefix_segments,
            segments,
        })
    }

    /// True when every path `other` matches, this pattern matches too
    /// (so a route with this pattern, listed first, leaves `other` none).
    pub fn covers(&self, other: &PathPattern) -> bool {
        let segment_covers = |a: &Segment, b: &Segment| match (a, b) {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            (Segment::Any, Segment::Any) => true,
            (Segment::Any, Segment::Literal(l)) => !l.is_empty(),
            (Segment::Literal(_), Segment::Any) => false,
        };
        let lengths_fit = if self.tail {
            other.segments.len() >= self.segments.len()
        } else {
            !other.tail && other.segments.len() == self.segments.len()
        };
        lengths_fit && self.segments.iter().zip(&other.segments).all(|(a, b)| segment_covers(a, b))
    }

    /// True when `path` (already normalised) matches.
    pub fn matches(&self, path: &str) -> bool {
        self.matches_with_head(path, head_of(path.as_bytes()))
    }

    /// [`matches`](Self::matches) with the path's head computed once per
    /// request rather than once per route.
    fn matches_with_head(&self, path: &str, path_head: u128) -> bool {
        if path_head & self.head_mask != self.head {
            return false;
        }
        if self.exact {
            return path == self.source;
        }
        let Some(rest) = path.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        let remaining = self.segments.get(self.prefix_segments..).unwrap_or_default();
        if remaining.is_empty() {
            // Only `**` follows the literals (without it the pattern would be
            // exact). The literals must end at a segment boundary: `/api/**`
            // matches `/api` and `/api/x` but not `/apix`.
            return self.prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/');
        }
        // Here `prefix` ends with the `/` before a wildcard segment.
        let mut parts = rest.split('/');
        for segment in remaining {
            let Some(part) = parts.next() else {
                return false;
            };
            let ok = match segment {
                Segment::Literal(literal) => **literal == *part,
                Segment::Any => !part.is_empty(),
            };
            if !ok {
                return false;
            }
        }
        self.tail || parts.next().is_none()
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

fn check_path_characters(s: &str) -> Result<(), PatternError> {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'?' | b'#' => return Err(PatternError::QueryOrFragment),
            b'\\' | 0..=0x1f | 0x7f => return Err(PatternError::ForbiddenCharacter),
            b'%' => {
                let escape = bytes.get(i..i + 3).filter(|e| e.iter().skip(1).all(u8::is_ascii_hexdigit));
                if let Some(escape) = escape {
                    return Err(PatternError::PercentEscape { escape: String::from_utf8_lossy(escape).into_owned() });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The text every matching path starts with, and how many segments it covers.
fn literal_prefix(segments: &[Segment]) -> (String, usize) {
    let mut prefix = String::from("/");
    let mut count = 0;
    for (i, segment) in segments.iter().enumerate() {
        let Segment::Literal(literal) = segment else {
            break;
        };
        prefix.push_str(literal);
        count += 1;
        if i + 1 < segments.len() {
            prefix.push('/');
        }
    }
    (prefix, count)
}

/// The first 16 bytes of `bytes`, zero-padded, as one integer.
fn head_of(bytes: &[u8]) -> u128 {
    let mut buf = [0; 16];
    let n = bytes.len().min(buf.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
    u128::from_le_bytes(buf)
}

/// Selects the first `len` bytes (at most 16) of a [`head_of`] value.
fn head_mask(len: usize) -> u128 {
    match len {
        0 => 0,
        1..=15 => (1u128 << (8 * len)) - 1,
        _ => u128::MAX,
    }
}

/// A compiled host pattern: `api.example.com` or `*.example.com`.
#[derive(Clone, Debug)]
pub struct HostPattern {
    /// Lowercase, without trailing dot. For a wildcard, the suffix including
    /// its leading dot (`.example.com`).
    name: String,
    wildcard: bool,
}

impl HostPattern {
    /// Parses and validates a pattern. Names are case-insensitive and a
    /// trailing dot is ignored; ports are not part of a host pattern.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(PatternError::EmptyHost);
        }
        let lower = s.to_ascii_lowercase();
        if let Some(inner) = lower.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            if inner.parse::<Ipv6Addr>().is_err() {
                return Err(PatternError::InvalidHost { pattern: s.to_owned() });
            }
            return Ok(Self { name: lower, wildcard: false });
        }
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, base) = match name.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, name),
        };
        if base.contains('*') {
            return Err(PatternError::HostWildcard { pattern: s.to_owned() });
        }
        if !is_host_name(base) {
            return Err(PatternError::InvalidHost { pattern: s.to_owned() });
        }
        let name = if wildcard { format!(".{base}") } else { base.to_owned() };
        Ok(Self { name, wildcard })
    }

    /// True when every host `other` matches, this pattern matches too.
    pub fn covers(&self, other: &HostPattern) -> bool {
        if self.wildcard {
            // `.example.com` covers `a.example.com`, `.a.example.com` and itself.
            other.name.ends_with(&self.name)
        } else {
            !other.wildcard && other.name == self.name
        }
    }

    /// True when the request host (from `Host` or the URI authority) matches.
    /// A `:port` and a trailing dot on `host` are ignored.
    pub fn matches(&self, host: &str) -> bool {
        self.matches_bare(bare_host(host))
    }

    fn matches_bare(&self, host: &str) -> bool {
        if !self.wildcard {
            return host.eq_ignore_ascii_case(&self.name);
        }
        // At least one whole label must precede the suffix.
        let Some(split) = host.len().checked_sub(self.name.len()).filter(|&n| n > 0) else {
            return false;
        };
        match (host.get(..split), host.get(split..)) {
            (Some(labels), Some(suffix)) => suffix.eq_ignore_ascii_case(&self.name) && is_host_name(labels),
            _ => false,
        }
    }
}

/// Dot-separated non-empty labels of letters, digits, `-` and `_`.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Strips a `:port` and one trailing dot from a request host.
fn bare_host(host: &str) -> &str {
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        }
    } else {
        host.split_once(':').map_or(host, |(name, _port)| name)
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// One route as the config describes it, borrowed for [`RouteMatcher::new`].
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec<'a> {
    /// Hosts the route applies to; empty means any host.
    pub hosts: &'a [HostPattern],
    /// Methods the route applies to; empty means any method.
    pub methods: &'a [Method],
    /// The path pattern.
    pub path: &'a PathPattern,
}

#[derive(Clone, Debug)]
struct CompiledRoute {
    hosts: Box<[HostPattern]>,
    methods: Box<[Method]>,
    path: PathPattern,
}

/// An ordered route table; the first matching route wins.
#[derive(Clone, Debug, Default)]
pub struct RouteMatcher {
    routes: Vec<CompiledRoute>,
}

impl RouteMatcher {
    /// Builds the table, cloning what it needs from the specs.
    pub fn new<'a>(routes: impl IntoIterator<Item = RouteSpec<'a>>) -> Self {
        let routes = routes
            .into_iter()
            .map(|spec| CompiledRoute {
                hosts: spec.hosts.into(),
                methods: spec.methods.into(),
                path: spec.path.clone(),
            })
            .collect();
        Self { routes }
    }

    /// Index of the first route whose host, method and path all match. Empty
    /// hosts/methods = any. A route with hosts never matches a request
    /// without one.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<usize> {
        let host = host.map(bare_host);
        let head = head_of(path.as_bytes());
        self.routes.iter().position(|route| {
            route.path.matches_with_head(path, head)
                && (route.methods.is_empty() || route.methods.contains(method))
                && (route.hosts.is_empty() || host.is_some_and(|h| route.hosts.iter().any(|p| p.matches_bare(h))))
        })
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests;

//! Working out who the client is when requests may arrive through proxies.
//!
//! The socket peer is the only address nobody can forge. Forwarding headers
//! (`Forwarded`, `X-Forwarded-For`, `X-Forwarded-Proto`) are believed only
//! when that peer is one of the configured [`TrustedProxies`]; otherwise they
//! are ignored entirely, because any client can send them.
//!
//! When the peer is trusted, the forwarding chain is walked from the nearest
//! hop (rightmost) outwards, skipping hops that are themselves trusted
//! proxies. The first untrusted hop is the client: everything to its left was
//! written by the client itself and may be a lie. An entry that cannot be
//! parsed (`unknown`, an obfuscated `_name`, garbage) ends the walk at the
//! nearest address already known, so a malformed chain never lets a value
//! further left be believed.
//!
//! ```
//! use std::net::IpAddr;
//! use http::{HeaderMap, HeaderValue};
//! use rampart_core::client_ip::{resolve_client, TrustedProxies};
//!
//! let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
//! let mut headers = HeaderMap::new();
//! // The client claims to be 1.1.1.1; our proxy 10.0.0.2 saw 203.0.113.7.
//! headers.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1, 203.0.113.7"));
//! headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
//!
//! let peer: IpAddr = "10.0.0.2".parse().unwrap();
//! let info = resolve_client(peer, &proxies, &headers);
//! assert_eq!(info.ip, "203.0.113.7".parse::<IpAddr>().unwrap());
//! assert!(info.forwarded_https && info.via_trusted_proxy);
//!
//! // The same headers from an untrusted peer change nothing.
//! let stranger: IpAddr = "198.51.100.1".parse().unwrap();
//! let info = resolve_client(stranger, &proxies, &headers);
//! assert_eq!(info.ip, stranger);
//! assert!(!info.forwarded_https);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{GetAll, HeaderMap, HeaderName, HeaderValue, FORWARDED};
use ipnet::{IpNet, Ipv4Net};

/// How many list entries of a forwarding header are examined, counting from
/// the right. Anything further left is ignored, so a huge header costs no
/// more than a short one.
pub const MAX_FORWARDED_HOPS: usize = 64;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Which forwarding header the trusted proxies write (`[server] client_ip_header`).
///
/// Only that one is read. A proxy passes the client's copy of the other one on
/// untouched (nginx's `proxy_set_header X-Forwarded-For` leaves a client's
/// `Forwarded` as it came), so reading both, or preferring one when present,
/// would let the client choose its own address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardingHeader {
    /// `X-Forwarded-For`, with `X-Forwarded-Proto` for the scheme (nginx,
    /// Caddy, Traefik, HAProxy, Envoy, cloud load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, `for=` and `proto=`.
    Forwarded,
}

/// The networks whose forwarding headers are believed, and which header that is.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardingHeader,
}

impl TrustedProxies {
    /// Builds the set, reading `X-Forwarded-For` (see [`Self::reading`]).
    /// IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are stored as their
    /// IPv4 equivalent, because addresses are canonicalised to IPv4 before lookup.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets: nets.into_iter().map(canonical_net).collect(), header: ForwardingHeader::default() }
    }

    /// The same proxies, writing `header` instead.
    pub fn reading(mut self, header: ForwardingHeader) -> Self {
        self.header = header;
        self
    }

    /// The forwarding header these proxies write.
    pub fn header(&self) -> ForwardingHeader {
        self.header
    }

    /// True when `ip` lies in one of the trusted networks. An IPv4-mapped IPv6
    /// address is looked up as the IPv4 address it carries, so a dual-stack
    /// listener cannot be used to dodge an IPv4 rule.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The networks, as given (IPv4-mapped ones as IPv4).
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// True when no proxy is trusted, i.e. forwarding headers are never used.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// `net` as addresses are matched against it: an IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) as the IPv4 network it holds (`10.0.0.0/8`).
pub fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        let mapped = v6.addr().to_ipv4_mapped();
        let prefix = v6.prefix_len().checked_sub(96);
        if let (Some(addr), Some(prefix)) = (mapped, prefix) {
            if let Ok(v4) = Ipv4Net::new(addr, prefix) {
                return IpNet::V4(v4);
            }
        }
    }
    net
}

/// How client addresses are counted by the protections that count per client:
/// rate limits keyed `by = "ip"`, strikes and automatic bans, the per-address
/// connection and request caps, and the heavy-hitter list (`[server]
/// ipv6_prefix`).
///
/// An IPv4 address is one client. An IPv6 client is typically given a whole
/// network (a /64 at least, often a /56 or /48) and may send from any address
/// in it, so counting per address would hand it a fresh allowance with every
/// address it picks: an IPv6 address counts as its network of the first
/// `ipv6_prefix` bits. IPv4-mapped IPv6 addresses are their IPv4 address.
///
/// ```
/// use std::net::IpAddr;
/// use rampart_core::client_ip::ClientGrouping;
///
/// let clients = ClientGrouping::new(64);
/// let ip = |s: &str| s.parse::<IpAddr>().unwrap();
/// // Two addresses of one /64 are one client...
/// assert_eq!(clients.key(ip("2001:db8:1:2::1")), ip("2001:db8:1:2::"));
/// assert_eq!(clients.key(ip("2001:db8:1:2:ffff::7")), ip("2001:db8:1:2::"));
/// assert_eq!(clients.network_len(ip("2001:db8:1:2::1")), Some(64));
/// // ... while IPv4 addresses stay themselves.
/// assert_eq!(clients.key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
/// assert_eq!(clients.network_len(ip("203.0.113.7")), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientGrouping {
    ipv6_prefix: u8,
    /// The first `ipv6_prefix` bits set: the key is one `and` away.
    mask: u128,
}

impl ClientGrouping {
    /// The default `[server] ipv6_prefix`: the smallest network an IPv6 client
    /// is normally given.
    pub const DEFAULT_IPV6_PREFIX: u8 = 64;

    /// Counts IPv6 clients by their first `ipv6_prefix` bits (clamped to
    /// 1..=128; 128 counts each address alone).
    pub fn new(ipv6_prefix: u8) -> Self {
        let ipv6_prefix = ipv6_prefix.clamp(1, 128);
        // The shift is 0..=127, so it never overflows.
        let mask = u128::MAX << (128 - u32::from(ipv6_prefix));
        Self { ipv6_prefix, mask }
    }

    pub fn ipv6_prefix(self) -> u8 {
        self.ipv6_prefix
    }

    /// The address that stands for `ip`'s client: `ip` itself (canonical)
    /// for IPv4, its network address for IPv6.
    pub fn key(self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & self.mask)),
            v4 => v4,
        }
    }

    /// The prefix length of the network [`ClientGrouping::key`] stands for,
    /// when it stands for more than one address (IPv6 with a prefix under 128).
    pub fn network_len(self, ip: IpAddr) -> Option<u8> {
        (ip.to_canonical().is_ipv6() && self.ipv6_prefix < 128).then_some(self.ipv6_prefix)
    }
}

impl Default for ClientGrouping {
    fn default() -> Self {
        Self::new(Self::DEFAULT_IPV6_PREFIX)
    }
}

/// What is known about the client of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The resolved client address, canonical (`::ffff:a.b.c.d` becomes `a.b.c.d`).
    pub ip: IpAddr,
    /// A trusted proxy said the original request was https.
    pub forwarded_https: bool,
    /// The socket peer is a trusted proxy.
    pub via_trusted_proxy: bool,
}

/// Resolves the client address of a request received from `peer`.
///
/// Only the header the proxies write ([`ForwardingHeader`]) is read. With
/// `X-Forwarded-For`, the scheme is the rightmost `X-Forwarded-Proto` value;
/// with `Forwarded`, it is the `proto=` of the rightmost element, written by
/// the proxy that connected to us (none readable: not https).
pub fn resolve_client(peer: IpAddr, trusted: &TrustedProxies, headers: &HeaderMap) -> ClientInfo {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return ClientInfo { ip: peer, forwarded_https: false, via_trusted_proxy: false };
    }
    let (ip, forwarded_https) = match trusted.header {
        ForwardingHeader::XForwardedFor => {
            (from_x_forwarded_for(peer, trusted, headers), x_forwarded_proto_is_https(headers))
        }
        ForwardingHeader::Forwarded => {
            let (ip, https) = from_forwarded(peer, trusted, headers.get_all(FORWARDED));
            (ip, https.unwrap_or(false))
        }
    };
    ClientInfo { ip, forwarded_https, via_trusted_proxy: true }
}

/// Walks hops from nearest to farthest. `None` is a hop that could not be
/// parsed. Starting from the peer, the nearest address stays the answer until
/// an untrusted hop is found.
fn pick_client(peer: IpAddr, trusted: &TrustedProxies, hops: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
    let mut nearest = peer;
    for hop in hops {
        match hop {
            Some(ip) if trusted.contains(ip) => nearest = ip,
            Some(ip) => return ip,
            None => return nearest,
        }
    }
    nearest
}

fn from_x_forwarded_for(peer: IpAddr, trusted: &TrustedProxies, headers: &HeaderMap) -> IpAddr {
    // `take` comes before the empty-entry filter so that a header made of
    // thousands of commas is bounded too.
    let hops = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
        .take(MAX_FORWARDED_HOPS)
        .map(<[u8]>::trim_ascii)
        .filter(|entry| !entry.is_empty())
        .map(parse_node);
    pick_client(peer, trusted, hops)
}

fn x_forwarded_proto_is_https(headers: &HeaderMap) -> bool {
    headers
        .get_all(X_FORWARDED_PROTO)
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
        .take(MAX_FORWARDED_HOPS)
        .map(<[u8]>::trim_ascii)
        .find(|value| !value.is_empty())
        .is_some_and(|value| value.eq_ignore_ascii_case(b"https"))
}

/// Returns the client and, when the rightmost element states one, whether its
/// `proto` is https.
fn from_forwarded(
    peer: IpAddr,
    trusted: &TrustedProxies,
    forwarded: GetAll<'_, HeaderValue>,
) -> (IpAddr, Option<bool>) {
    let mut elements = forwarded
        .iter()
        .rev()
        .flat_map(|line| RevElements::new(line.as_bytes()))
        .take(MAX_FORWARDED_HOPS)
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
        .map(parse_element);
    // The rightmost element was written by the proxy that connected to us, so
    // its `proto` is the one to believe.
    let nearest = elements.next();
    let https = nearest.flatten().and_then(|element| element.https);
    let hops = nearest.into_iter().chain(elements).map(|element| element.and_then(|e| e.for_ip));
    (pick_client(peer, trusted, hops), https)
}

/// Splits one `Forwarded` header line into elements from right to left,
/// treating commas inside quoted strings as data.
///
/// Walking from the right is deliberate: the rightmost elements were written
/// by our own proxies and are well formed, while an unbalanced quote planted
/// by the client on the left can only swallow the client's own entries.
struct RevElements<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> RevElements<'a> {
    fn new(line: &'a [u8]) -> Self {
        Self { rest: Some(line) }
    }
}

impl<'a> Iterator for RevElements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let bytes = self.rest?;
        let mut in_quotes = false;
        let comma = bytes.iter().enumerate().rev().find_map(|(i, &b)| match b {
            b'"' => {
                // Inside a quoted string, a quote preceded by an odd run of
                // backslashes is an escaped character, not the opening quote.
                // Each run is counted once, by the quote right after it, so
                // the scan stays linear.
                if !(in_quotes && odd_backslashes_before(bytes, i)) {
                    in_quotes = !in_quotes;
                }
                None
            }
            b',' if !in_quotes => Some(i),
            _ => None,
        });
        match comma {
            Some(i) => {
                let (left, right) = bytes.split_at(i);
                self.rest = Some(left);
                right.get(1..)
            }
            None => {
                self.rest = None;
                Some(bytes)
            }
        }
    }
}

fn odd_backslashes_before(bytes: &[u8], i: usize) -> bool {
    let run = bytes.get(..i).unwrap_or_default().iter().rev().take_while(|&&b| b == b'\\').count();
    run % 2 == 1
}

/// The parts of one `Forwarded` element that matter here.
#[derive(Clone, Copy, Debug)]
struct ForwardedElement {
    /// `None` when `for=` is missing, `unknown`, obfuscated or unparseable.
    for_ip: Option<IpAddr>,
    /// `Some(true)` for `proto=https`, `None` without a `proto`.
    https: Option<bool>,
}

/// Parses `name=value;name=value`. Returns `None` for a malformed element,
/// including one that repeats `for` or `proto` (RFC 7239 §4 forbids it, and
/// a repeat would make it ambiguous which value to believe).
fn parse_element(element: &[u8]) -> Option<ForwardedElement> {
    let mut for_ip = None;
    let mut seen_for = false;
    let mut https = None;
    let mut rest = element;
    loop {
        rest = rest.trim_ascii_start();
        if rest.is_empty() {
            break;
        }
        let eq = rest.iter().position(|&b| b == b'=')?;
        let (name, after) = rest.split_at(eq);
        let name = name.trim_ascii();
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        let (value, after) = take_value(after.get(1..)?.trim_ascii_start())?;
        if name.eq_ignore_ascii_case(b"for") {
            if seen_for {
                return None;
            }
            seen_for = true;
            for_ip = parse_for_value(value);
        } else if name.eq_ignore_ascii_case(b"proto") {
            if https.is_some() {
                return None;
            }
            let mut buf = [0; UNESCAPE_BUF];
            https = Some(unescape(value, &mut buf).is_some_and(|v| v.eq_ignore_ascii_case(b"https")));
        }
        match after.trim_ascii_start().split_first() {
            None => break,
            Some((b';', tail)) => rest = tail,
            Some(_) => return None,
        }
    }
    Some(ForwardedElement { for_ip, https })
}

/// A parameter value as written: the inside of a quoted string (escapes
/// still in place) or a bare token.
#[derive(Clone, Copy, Debug)]
struct Value<'a> {
    raw: &'a [u8],
    quoted: bool,
}

/// Splits a value off the front of `input`, returning it and what follows.
fn take_value(input: &[u8]) -> Option<(Value<'_>, &[u8])> {
    if let Some(body) = input.strip_prefix(b"\"") {
        let mut escaped = false;
        let end = body.iter().position(|&b| {
            let closes = !escaped && b == b'"';
            escaped = !escaped && b == b'\\';
            closes
        })?;
        let (raw, after) = body.split_at(end);
        Some((Value { raw, quoted: true }, after.get(1..)?))
    } else {
        // Bare values are accepted leniently (RFC 7239 would require IPv6 and
        // ports to be quoted); the address parser is the real gate.
        let end = input.iter().position(|&b| b == b';').unwrap_or(input.len());
        let (raw, after) = input.split_at(end);
        Some((Value { raw: raw.trim_ascii_end(), quoted: false }, after))
    }
}

/// Long enough for any real node (`"[ffff:...:255.255.255.255]:65535"`).
const UNESCAPE_BUF: usize = 64;

/// Removes quoted-pair escapes into `buf` without allocating. `None` when the
/// value does not fit, which no genuine address or scheme would do.
fn unescape<'b>(value: Value<'b>, buf: &'b mut [u8; UNESCAPE_BUF]) -> Option<&'b [u8]> {
    if !value.quoted || !value.raw.contains(&b'\\') {
        return Some(value.raw);
    }
    let mut len = 0;
    let mut escaped = false;
    for &b in value.raw {
        if !escaped && b == b'\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        *buf.get_mut(len)? = b;
        len += 1;
    }
    buf.get(..len)
}

fn parse_for_value(value: Value<'_>) -> Option<IpAddr> {
    let mut buf = [0; UNESCAPE_BUF];
    let node = unescape(value, &mut buf)?;
    // `unknown` and obfuscated identifiers (`_hidden`) are legitimate but say
    // nothing about the address; the caller stops the walk on them.
    if node.eq_ignore_ascii_case(b"unknown") || node.first() == Some(&b'_') {
        return None;
    }
    parse_node(node)
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` and
/// `[2001:db8::1]:443` (the port may be an RFC 7239 obfuscated `_port`).
fn parse_node(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?;
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        IpAddr::V6(inner.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else {
        let (host, port) = s.split_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(host.parse::<Ipv4Addr>().ok()?)
    };
    Some(ip.to_canonical())
}

fn is_port(port: &str) -> bool {
    match port.as_bytes().split_first() {
        Some((b'_', rest)) => {
            !rest.is_empty() && rest.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        // `u16::from_str` alone would accept a leading `+`.
        _ => port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok(),
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

#[cfg(test)]
mod tests;

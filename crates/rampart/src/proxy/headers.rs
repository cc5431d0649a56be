//! Header handling between client and upstream: hop-by-hop removal (RFC 9110
//! §7.6.1, including headers named in `Connection`) and the forwarding headers
//! `X-Forwarded-For/Proto/Host`, `Forwarded` (RFC 7239) and `X-Real-IP` (the
//! client Rampart resolved).
//!
//! Forwarding headers from the client are kept only when the peer is a trusted
//! proxy, and then only the one those proxies write (`[server]
//! client_ip_header`); otherwise they are replaced, so the upstream never sees
//! a chain the client made up.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rampart_core::client_ip::{ClientInfo, ForwardingHeader};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Other headers through which proxies tell upstreams about the client or
/// the original request, and which frameworks believe: Werkzeug's `ProxyFix`
/// (`X-Forwarded-Port`/`-Prefix`), Symfony and IIS (`X-Original-URL`,
/// `X-Rewrite-URL`), nginx `auth_request` setups (`X-Original-URI`), CDN-style
/// client addresses. From a client that is not a trusted proxy they are its
/// own inventions, and go, as does every other `X-Forwarded-*` header (see
/// [`remove_forwarded_family`]).
const FORWARDING_LIKE: [HeaderName; 14] = [
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-original-host"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
];
/// Headers that turn a request into another method for frameworks that read
/// them (Express's `method-override`, Laravel, Symfony): a `POST` Rampart
/// routed and authorised as such would run as a `DELETE`. A request that
/// carries one is refused (see [`has_method_override`]), not passed on
/// without it, so a client that relies on one learns why.
const METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers of RFC 9110 §7.6.1, and the old ones still seen.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes request headers that spell, with `_` for `-`, a header the
/// gateway vouches for: the identity headers, the forwarding ones and the
/// request id. CGI-style servers (WSGI, Rack: gunicorn before 22, Puma before
/// 6.4.3) read `X_Rampart_User` and `X-Rampart-User` as the same variable, so
/// a client's underscored copy would pass for the gateway's own.
pub fn strip_underscore_aliases(headers: &mut HeaderMap, identity: &rampart_core::config::auth::IdentityHeaders) {
    let aliases: Vec<HeaderName> = headers.keys().filter(|n| is_underscore_alias(n, identity)).cloned().collect();
    for name in aliases {
        headers.remove(name);
    }
}

/// Whether `headers` ask for another method than the request's (see
/// [`METHOD_OVERRIDES`]).
pub fn has_method_override(headers: &HeaderMap) -> bool {
    METHOD_OVERRIDES.iter().any(|n| headers.contains_key(n))
}

/// Whether `headers` hold an underscored copy of a vouched header (see
/// [`strip_underscore_aliases`]).
pub fn has_underscore_alias(headers: &HeaderMap, identity: &rampart_core::config::auth::IdentityHeaders) -> bool {
    headers.keys().any(|n| is_underscore_alias(n, identity))
}

fn is_underscore_alias(name: &HeaderName, identity: &rampart_core::config::auth::IdentityHeaders) -> bool {
    if !name.as_str().contains('_') {
        return false;
    }
    let dashed = name.as_str().replace('_', "-");
    dashed.starts_with("x-forwarded-")
        || ["forwarded", "x-real-ip", "x-request-id"].contains(&dashed.as_str())
        || FORWARDING_LIKE.iter().chain(&METHOD_OVERRIDES).chain(identity.all()).any(|v| v.as_str() == dashed)
}

/// Whether the `Transfer-Encoding` of `headers` is `chunked` alone (the
/// only coding hyper undoes).
pub fn is_chunked_only(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    codings.next().is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) && codings.next().is_none()
}

/// Removes hop-by-hop headers, and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Every header the `Connection` header names goes too, so look there
    // first; without one, only the fixed list remains to remove.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    crate::edge::remove_headers(headers, &HOP_BY_HOP);
}

/// Takes the client's `Connection` header apart as a request arrives, before
/// any layer adds headers: the headers it names go now, and what is left of it
/// is `Connection: upgrade` when the client asked for one (for the proxy's
/// WebSocket check), else nothing.
///
/// Done later, at the proxy, `Connection: x-rampart-user, x-request-id` would
/// remove headers the gateway itself added on the way (identity, request id,
/// country), and the layers would have judged headers the upstream never gets.
pub fn take_connection_header(headers: &mut HeaderMap) {
    let mut upgrade = false;
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            let is_upgrade = t.eq_ignore_ascii_case("upgrade");
            upgrade |= is_upgrade;
            !is_upgrade
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
    }
}

/// What the forwarding headers say about one hop.
pub struct Hop<'a> {
    pub client: &'a ClientInfo,
    pub peer: std::net::IpAddr,
    /// The scheme the client used to reach us (or the trusted proxy in front).
    pub https: bool,
    /// The `Host` the client asked for.
    pub host: Option<&'a HeaderValue>,
    /// The forwarding header the trusted proxies write (`[server] client_ip_header`).
    pub header: ForwardingHeader,
}

/// Sets `X-Forwarded-For/Proto/Host` and `Forwarded` for the upstream.
///
/// Behind a trusted proxy, its `X-Forwarded-Host`, `-Prefix` and the like
/// are kept (a proxy that rewrites `Host` or strips a path prefix tells the
/// app so there), so the proxy must overwrite what clients send; from an
/// untrusted peer they are the client's inventions and go.
pub fn set_forwarded(headers: &mut HeaderMap, hop: &Hop<'_>) {
    let proto = proto_static(hop.https);
    let peer = ip_text(hop.peer);
    if hop.client.via_trusted_proxy {
        // Keep the chain of the header the trusted proxies write and add the
        // hop we saw. The other header came from the client (the proxies pass
        // it on untouched): it is replaced by the client Rampart resolved.
        let client = ip_text(hop.client.ip);
        if let Ok(v) = HeaderValue::try_from(client.as_str()) {
            headers.insert(X_REAL_IP, v);
        }
        match hop.header {
            ForwardingHeader::XForwardedFor => {
                append_list(headers, X_FORWARDED_FOR, &peer);
                if let Ok(v) = HeaderValue::try_from(forwarded_element(&client, proto, hop.host)) {
                    headers.insert(header::FORWARDED, v);
                }
                if !headers.contains_key(X_FORWARDED_PROTO) {
                    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
                }
            }
            ForwardingHeader::Forwarded => {
                append_list(headers, header::FORWARDED, &forwarded_element(&peer, proto, hop.host));
                // The X-Forwarded-* family is the client's here (the proxies
                // pass it on untouched), all of it: `-Prefix`, `-Ssl` and
                // the like too. Its Host is the one the trusted proxy
                // forwarded and Rampart judged.
                remove_forwarded_family(headers);
                if let Ok(v) = HeaderValue::try_from(client.as_str()) {
                    headers.insert(X_FORWARDED_FOR, v);
                }
                headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
                match hop.host {
                    Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
                    None => headers.remove(X_FORWARDED_HOST),
                };
            }
        }
        if !headers.contains_key(X_FORWARDED_HOST) {
            if let Some(h) = hop.host {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
        }
    } else {
        remove_client_forwarding(headers);
        if let Ok(v) = HeaderValue::try_from(peer.as_str()) {
            headers.insert(X_REAL_IP, v.clone());
            headers.insert(X_FORWARDED_FOR, v);
        }
        if let Ok(v) = HeaderValue::try_from(forwarded_element(&peer, proto, hop.host)) {
            headers.insert(header::FORWARDED, v);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        match hop.host {
            Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
}

/// Joins the `Cookie` fields of an HTTP/2 request into one (RFC 9113
/// §8.2.3: browsers send each cookie as a field of its own, and they must be
/// joined with `"; "` before the request goes on over HTTP/1.1, where apps
/// read one `Cookie` line: Starlette the first, gunicorn joins with `,`).
pub fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    if crumbs.nth(1).is_none() {
        return;
    }
    let joined = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect::<Vec<_>>().join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Removes every `X-Forwarded-*` header (`-Uri`, `-Method`, `-Client-Cert`,
/// `-Prefix`…): frameworks and apps believe more of the family than any
/// fixed list names, and where the client wrote them they are its own.
fn remove_forwarded_family(headers: &mut HeaderMap) {
    remove_where(headers, |n| n.starts_with("x-forwarded-"));
}

/// Removes the `X-Forwarded-*` family and [`FORWARDING_LIKE`]: what only a
/// trusted proxy may tell the upstream. One pass over the names present
/// (a hash lookup per listed name cost more, for the few headers a request
/// has).
fn remove_client_forwarding(headers: &mut HeaderMap) {
    remove_where(headers, |n| {
        matches!(n.as_bytes().first(), Some(b'x' | b't' | b'c'))
            && (n.starts_with("x-forwarded-") || FORWARDING_LIKE.iter().any(|f| f.as_str() == n))
    });
}

/// Removes every header whose name `doomed` picks, after one pass that
/// finds none in the common case.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    if !headers.keys().any(|n| doomed(n.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n.as_str())).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// An address as text, as `Display` writes it. IPv4 addresses are written
/// here: the standard formatter pads and measures first, and took more
/// instructions than everything else the forwarding headers need together.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if octet >= 100 {
                    s.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    s.push(char::from(b'0' + octet / 10 % 10));
                }
                s.push(char::from(b'0' + octet % 10));
            }
            s
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

fn proto_static(https: bool) -> &'static str {
    if https {
        "https"
    } else {
        "http"
    }
}

fn forwarded_element(ip: &str, proto: &str, host: Option<&HeaderValue>) -> String {
    let host = host.and_then(|h| h.to_str().ok());
    let mut s = String::with_capacity(ip.len() + proto.len() + host.map_or(0, |h| h.len() + 8) + 20);
    // RFC 7239: IPv6 addresses are quoted and bracketed.
    if ip.contains(':') {
        s.push_str("for=\"[");
        s.push_str(ip);
        s.push_str("]\"");
    } else {
        s.push_str("for=");
        s.push_str(ip);
    }
    s.push_str(";proto=");
    s.push_str(proto);
    if let Some(h) = host {
        // A token (RFC 7239 §4: `value = token / quoted-string`) only when
        // it is a plain name: `:` (a port) and `[]` (IPv6) are not token
        // characters, and a strict parser refuses the whole header for them.
        let (mut token, mut clean) = (true, true);
        for b in h.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {}
                b'"' | b'\\' => (token, clean) = (false, false),
                _ => token = false,
            }
        }
        if token {
            s.push_str(";host=");
            s.push_str(h);
        } else {
            s.push_str(";host=\"");
            if clean {
                s.push_str(h);
            } else {
                s.extend(h.chars().filter(|c| !matches!(c, '"' | '\\')));
            }
            s.push('"');
        }
    }
    s
}

fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let joined = {
        let existing: Vec<&str> = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).collect();
        if existing.is_empty() {
            item.to_string()
        } else {
            format!("{}, {item}", existing.join(", "))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_chunked_alone_is_a_coding_hyper_undoes() {
        let te = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            is_chunked_only(&h)
        };
        assert!(te(&["chunked"]) && te(&["Chunked"]) && te(&[" chunked , "]));
        assert!(!te(&["gzip, chunked"]) && !te(&["gzip", "chunked"]) && !te(&["chunked, chunked"]));
        assert!(!te(&["identity"]) && !te(&[""]) && !te(&[]));
    }

    #[test]
    fn underscored_copies_of_vouched_headers_are_removed() {
        let identity = rampart_core::config::auth::IdentityHeadersConfig::default();
        let identity = rampart_core::config::auth::IdentityHeaders {
            user: HeaderName::from_bytes(identity.user.as_bytes()).unwrap(),
            roles: HeaderName::from_bytes(identity.roles.as_bytes()).unwrap(),
            scopes: HeaderName::from_bytes(identity.scopes.as_bytes()).unwrap(),
            tier: HeaderName::from_bytes(identity.tier.as_bytes()).unwrap(),
            auth_method: HeaderName::from_bytes(identity.auth_method.as_bytes()).unwrap(),
            issuer: HeaderName::from_bytes(identity.issuer.as_bytes()).unwrap(),
            internal_jwt: None,
        };
        let mut h = HeaderMap::new();
        for name in [
            "x_rampart_user",
            "x-rampart_roles",
            "x_forwarded_for",
            "x_real_ip",
            "x_request_id",
            "x_original_url",
            "x_my_header",
            "x-rampart-tier",
        ] {
            h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("v"));
        }
        strip_underscore_aliases(&mut h, &identity);
        let mut left: Vec<_> = h.keys().map(|n| n.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(
            left,
            ["x-rampart-tier", "x_my_header"],
            "the real name is the identity layer's to strip; others stay"
        );
    }

    fn info(ip: &str, trusted: bool) -> ClientInfo {
        ClientInfo { ip: ip.parse().unwrap(), forwarded_https: false, via_trusted_proxy: trusted }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn the_connection_header_is_taken_apart_on_arrival() {
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("keep-alive, X-Secret-Hop"));
        h.append("connection", HeaderValue::from_static("Upgrade"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        take_connection_header(&mut h);
        assert_eq!(h.len(), 3, "{h:?}");
        assert_eq!(h["connection"], "upgrade");
        assert!(h.contains_key("upgrade") && h.contains_key("x-keep"));
        // A header added afterwards survives the proxy's own strip.
        h.insert("x-rampart-user", HeaderValue::from_static("u-1"));
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("x-rampart-user") && h.contains_key("x-keep"));
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close"));
        take_connection_header(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn untrusted_peer_chain_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let host = HeaderValue::from_static("api.example.com");
        let client = info("203.0.113.5", false);
        set_forwarded(&mut h, &Hop { client: &client, peer: client.ip, https: false, host: Some(&host), header: XFF });
        assert_eq!(h["x-forwarded-for"], "203.0.113.5");
        assert_eq!(h["forwarded"], "for=203.0.113.5;proto=http;host=api.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-real-ip"], "203.0.113.5");

        // The other headers frameworks take the client or the original
        // request from are the client's inventions too.
        let mut h = HeaderMap::new();
        for name in FORWARDING_LIKE.iter().chain([&X_REAL_IP]) {
            h.insert(name.clone(), HeaderValue::from_static("127.0.0.1"));
        }
        h.insert("x-keep", HeaderValue::from_static("1"));
        set_forwarded(&mut h, &Hop { client: &client, peer: client.ip, https: false, host: None, header: XFF });
        for name in &FORWARDING_LIKE {
            assert!(!h.contains_key(name), "{name} kept");
        }
        assert_eq!(h["x-real-ip"], "203.0.113.5");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "100.200.255.9",
            "255.255.255.255",
            "::1",
            "2001:db8::5",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn forwarded_host_is_quoted_when_it_must_be() {
        let host = HeaderValue::from_static("a b\"c\\d");
        assert_eq!(forwarded_element("1.2.3.4", "https", Some(&host)), "for=1.2.3.4;proto=https;host=\"a bcd\"");
        assert_eq!(forwarded_element("::1", "http", None), "for=\"[::1]\";proto=http");
        // A port or an IPv6 literal is no token: quoted.
        for (host, written) in [
            ("a.example:8443", "host=\"a.example:8443\""),
            ("[::1]:8080", "host=\"[::1]:8080\""),
            ("a-b.example", "host=a-b.example"),
        ] {
            let host = HeaderValue::from_static(host);
            assert!(forwarded_element("1.2.3.4", "http", Some(&host)).ends_with(written), "{host:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_without_a_connection_header_too() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let client = info("1.1.1.1", true);
        // The client's own Forwarded (passed on by a proxy that writes
        // X-Forwarded-For) is replaced by the client Rampart resolved.
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6;proto=https"));
        let peer = "::1".parse().unwrap();
        set_forwarded(&mut h, &Hop { client: &client, peer, https: false, host: None, header: XFF });
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, ::1");
        assert_eq!(h["forwarded"], "for=1.1.1.1;proto=http");
        assert_eq!(h["x-real-ip"], "1.1.1.1");
        assert_eq!(h["x-forwarded-proto"], "https");

        // The trusted proxy's X-Forwarded-Host and -Prefix are its to set
        // (a proxy that rewrites Host or strips a prefix says so there).
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_static("public.example"));
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/app"));
        let host = HeaderValue::from_static("rampart:8080");
        set_forwarded(&mut h, &Hop { client: &client, peer, https: false, host: Some(&host), header: XFF });
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(h["x-forwarded-prefix"], "/app");

        // Behind proxies that write Forwarded, the reverse.
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=1.1.1.1;proto=https"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let client = ClientInfo { forwarded_https: true, ..client };
        let fwd = ForwardingHeader::Forwarded;
        set_forwarded(&mut h, &Hop { client: &client, peer, https: true, host: None, header: fwd });
        assert_eq!(h["forwarded"], "for=1.1.1.1;proto=https, for=\"[::1]\";proto=https");
        assert_eq!(h["x-forwarded-for"], "1.1.1.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    const XFF: ForwardingHeader = ForwardingHeader::XForwardedFor;
}

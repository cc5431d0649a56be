//! The first byte picks the peer (and, by its high bit, which forwarding
//! header the proxies write); the rest, split on `\n`, becomes header
//! lines of X-Forwarded-For, Forwarded and X-Forwarded-Proto in turn.
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rampart_core::client_ip::{resolve_client, ForwardingHeader, TrustedProxies};

const NAMES: [&str; 3] = ["x-forwarded-for", "forwarded", "x-forwarded-proto"];
const PEERS: [&str; 4] = [
    "10.0.0.1",
    "::ffff:10.0.0.1",
    "2001:db8:ffff::1",
    "203.0.113.9",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let trusted = TrustedProxies::new(vec![
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8:ffff::/48".parse().unwrap(),
    ])
    .reading(if selector & 0x80 == 0 { ForwardingHeader::XForwardedFor } else { ForwardingHeader::Forwarded });
    let peer: IpAddr = PEERS[usize::from(selector) % PEERS.len()].parse().unwrap();
    let mut headers = HeaderMap::new();
    for (i, line) in rest.split(|&b| b == b'\n').enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(HeaderName::from_static(NAMES[i % NAMES.len()]), value);
        }
    }

    let info = resolve_client(peer, &trusted, &headers);

    assert_eq!(info.ip, info.ip.to_canonical());
    assert_eq!(info.via_trusted_proxy, trusted.contains(peer));
    if !info.via_trusted_proxy {
        // Headers from strangers change nothing.
        assert_eq!(info.ip, peer.to_canonical());
        assert!(!info.forwarded_https);
    }
    if headers.is_empty() {
        assert_eq!(info.ip, peer.to_canonical());
        assert!(!info.forwarded_https);
    }
});

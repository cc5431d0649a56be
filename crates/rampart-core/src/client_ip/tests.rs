#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use http::HeaderValue;

fn trusted() -> TrustedProxies {
    TrustedProxies::new(
        ["10.0.0.0/8", "127.0.0.1/32", "2001:db8:ffff::/48", "::ffff:192.168.0.0/112"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect(),
    )
}

/// Resolves with proxies that write `X-Forwarded-For` (the default).
#[track_caller]
fn check(peer: &str, headers: &[(&str, &[u8])], ip: &str, https: bool, via: bool) {
    check_with(&trusted(), peer, headers, ip, https, via);
}

/// Resolves with proxies that write `Forwarded`.
#[track_caller]
fn check_fwd(peer: &str, headers: &[(&str, &[u8])], ip: &str, https: bool, via: bool) {
    check_with(&trusted().reading(ForwardingHeader::Forwarded), peer, headers, ip, https, via);
}

#[track_caller]
fn check_with(set: &TrustedProxies, peer: &str, headers: &[(&str, &[u8])], ip: &str, https: bool, via: bool) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        map.append(name, HeaderValue::from_bytes(value).unwrap());
    }
    let got = resolve_client(peer.parse().unwrap(), set, &map);
    let want = ClientInfo { ip: ip.parse().unwrap(), forwarded_https: https, via_trusted_proxy: via };
    assert_eq!(got, want, "peer {peer}, headers {headers:?}, reading {:?}", set.header());
}

const XFF: &str = "x-forwarded-for";
const XFP: &str = "x-forwarded-proto";
const FWD: &str = "forwarded";

#[test]
#[rustfmt::skip]
fn untrusted_peer_ignores_headers() {
    check("203.0.113.1", &[], "203.0.113.1", false, false);
    check("203.0.113.1", &[(XFF, b"1.1.1.1")], "203.0.113.1", false, false);
    check("203.0.113.1", &[(XFP, b"https")], "203.0.113.1", false, false);
    check("203.0.113.1", &[(FWD, b"for=1.1.1.1;proto=https")], "203.0.113.1", false, false);
    check("2001:db8::5", &[(XFF, b"10.0.0.1")], "2001:db8::5", false, false);
    // A mapped peer is reported canonically even when untrusted.
    check("::ffff:203.0.113.1", &[(XFF, b"1.1.1.1")], "203.0.113.1", false, false);
}

#[test]
#[rustfmt::skip]
fn trusted_peer_without_headers() {
    check("10.1.2.3", &[], "10.1.2.3", false, true);
    check("::ffff:10.1.2.3", &[], "10.1.2.3", false, true);
    check("::ffff:192.168.7.7", &[], "192.168.7.7", false, true);
    check("192.168.7.7", &[], "192.168.7.7", false, true);
    check("2001:db8:ffff::1", &[], "2001:db8:ffff::1", false, true);
    check("127.0.0.1", &[(XFP, b"https")], "127.0.0.1", true, true);
}

#[test]
#[rustfmt::skip]
fn x_forwarded_for_chains() {
    check("10.0.0.1", &[(XFF, b"203.0.113.7")], "203.0.113.7", false, true);
    // A spoofed entry on the left is skipped: the first untrusted hop wins.
    check("10.0.0.1", &[(XFF, b"6.6.6.6, 203.0.113.7")], "203.0.113.7", false, true);
    check("10.0.0.1", &[(XFF, b"6.6.6.6, 203.0.113.7, 10.0.0.9, 10.3.3.3")], "203.0.113.7", false, true);
    // Every hop trusted: the leftmost is the client.
    check("10.0.0.1", &[(XFF, b"10.0.0.5, 10.0.0.9")], "10.0.0.5", false, true);
    // Several header lines are one list, in order.
    check("10.0.0.1", &[(XFF, b"6.6.6.6"), (XFF, b"203.0.113.7, 10.0.0.2")], "203.0.113.7", false, true);
    check("10.0.0.1", &[(XFF, b"203.0.113.7"), (XFF, b"10.0.0.2")], "203.0.113.7", false, true);
    // Ports, brackets, IPv6 and mapped addresses.
    check("10.0.0.1", &[(XFF, b"203.0.113.7:5678")], "203.0.113.7", false, true);
    check("10.0.0.1", &[(XFF, b"[2001:db8::1]:4711")], "2001:db8::1", false, true);
    check("10.0.0.1", &[(XFF, b"[2001:db8::1]")], "2001:db8::1", false, true);
    check("10.0.0.1", &[(XFF, b"2001:db8::1")], "2001:db8::1", false, true);
    check("10.0.0.1", &[(XFF, b"::ffff:203.0.113.7")], "203.0.113.7", false, true);
    check("10.0.0.1", &[(XFF, b"6.6.6.6, ::ffff:10.9.9.9")], "6.6.6.6", false, true);
    check("10.0.0.1", &[(XFF, b"6.6.6.6, [2001:db8:ffff::9]:80")], "6.6.6.6", false, true);
    // Whitespace and empty list entries are tolerated.
    check("10.0.0.1", &[(XFF, b"  203.0.113.7 ,\t, ")], "203.0.113.7", false, true);
    check("10.0.0.1", &[(XFF, b"")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, b",,,")], "10.0.0.1", false, true);
}

#[test]
#[rustfmt::skip]
fn x_forwarded_for_stops_at_garbage() {
    // Garbage on the nearest hop: the peer is all we know.
    check("10.0.0.1", &[(XFF, b"6.6.6.6, garbage")], "10.0.0.1", false, true);
    // Garbage after a trusted hop: that hop is the answer, never 6.6.6.6.
    check("10.0.0.1", &[(XFF, b"6.6.6.6, unknown, 10.0.0.7")], "10.0.0.7", false, true);
    check("10.0.0.1", &[(XFF, b"6.6.6.6, 1.2.3.4.5, 10.0.0.7")], "10.0.0.7", false, true);
    check("10.0.0.1", &[(XFF, b"6.6.6.6 7.7.7.7")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, b"01.2.3.4")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, b"1.2.3.4:+80")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, b"1.2.3.4:65536")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, b"[1.2.3.4]")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, b"[2001:db8::1]x")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, b"fe80::1%eth0")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, b"\xff\xfe1.2.3.4")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFF, "\u{ff11}.2.3.4".as_bytes())], "10.0.0.1", false, true);
}

#[test]
#[rustfmt::skip]
fn forwarded_header() {
    check_fwd("10.0.0.1", &[(FWD, b"for=203.0.113.7")], "203.0.113.7", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"For=203.0.113.7;Proto=HTTPS")], "203.0.113.7", true, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=\"203.0.113.7:80\"")], "203.0.113.7", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=\"[2001:db8::1]:4711\"")], "2001:db8::1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=\"[2001:db8::1]:_p0rt\"")], "2001:db8::1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=\"\\2\\03.0.113.7\"")], "203.0.113.7", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6;proto=http, for=203.0.113.7;by=10.0.0.1;host=a.example, for=10.2.2.2;proto=https")], "203.0.113.7", true, true);
    // Only the header the proxies write is read: X-Forwarded-For and
    // X-Forwarded-Proto are the client's own here...
    check_fwd("10.0.0.1", &[(FWD, b"for=203.0.113.7"), (XFF, b"198.51.100.1"), (XFP, b"https")], "203.0.113.7", false, true);
    check_fwd("10.0.0.1", &[(XFF, b"198.51.100.1"), (XFP, b"https")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=203.0.113.7;proto=http"), (XFP, b"https")], "203.0.113.7", false, true);
    // ...and Forwarded is the client's own behind proxies that write
    // X-Forwarded-For (nginx passes a client's Forwarded on untouched).
    check("10.0.0.1", &[(FWD, b"for=6.6.6.6;proto=https"), (XFF, b"203.0.113.7")], "203.0.113.7", false, true);
    check("10.0.0.1", &[(FWD, b"for=6.6.6.6;proto=https")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6"), (FWD, b"for=203.0.113.7")], "203.0.113.7", false, true);
    // Quoted commas and semicolons are data, not separators.
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6;host=\"a,b;c\", for=203.0.113.7;ext=\"x\\\",y\"")], "203.0.113.7", false, true);
    // An unbalanced quote planted on the left cannot swallow our proxy's entry.
    check_fwd("10.0.0.1", &[(FWD, b"for=\"6.6.6.6, for=203.0.113.7")], "203.0.113.7", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=10.0.0.3, for=10.0.0.4;proto=https")], "10.0.0.3", true, true);
}

#[test]
#[rustfmt::skip]
fn forwarded_stops_at_unknown_and_malformed() {
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6, for=unknown")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6, for=_hidden, for=10.0.0.7")], "10.0.0.7", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6, for=\"_hidden\"")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6, proto=https")], "10.0.0.1", true, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6, for=1.1.1.1;for=10.0.0.9")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=6.6.6.6;proto=https;proto=http")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=\"203.0.113.7")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=\"203.0.113.7\"x")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"f r=1.2.3.4")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"=1.2.3.4")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=\xff")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b" , ,")], "10.0.0.1", false, true);
    let long = format!("for=\"{}1.2.3.4\"", "\\0".repeat(70));
    check_fwd("10.0.0.1", &[(FWD, long.as_bytes())], "10.0.0.1", false, true);
    // A trailing semicolon is tolerated.
    check_fwd("10.0.0.1", &[(FWD, b"for=203.0.113.7;")], "203.0.113.7", false, true);
}

#[test]
#[rustfmt::skip]
fn forwarded_proto() {
    check("10.0.0.1", &[(XFP, b"https")], "10.0.0.1", true, true);
    check("10.0.0.1", &[(XFP, b"HTTPS")], "10.0.0.1", true, true);
    check("10.0.0.1", &[(XFP, b"https, http")], "10.0.0.1", false, true);
    check("10.0.0.1", &[(XFP, b"http, https")], "10.0.0.1", true, true);
    check("10.0.0.1", &[(XFP, b"http"), (XFP, b" https ,")], "10.0.0.1", true, true);
    check("10.0.0.1", &[(XFP, b"httpsx")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=1.2.3.4;proto=http, for=10.0.0.8;proto=\"https\"")], "1.2.3.4", true, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=1.2.3.4;proto=https, for=10.0.0.8")], "1.2.3.4", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=1.2.3.4;proto=https, for=10.0.0.8"), (XFP, b"https")], "1.2.3.4", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"for=\"broken"), (XFP, b"https")], "10.0.0.1", false, true);
    check_fwd("10.0.0.1", &[(FWD, b"proto=\"ht\\tps\"")], "10.0.0.1", true, true);
    check("10.0.0.1", &[(FWD, b"proto=https")], "10.0.0.1", false, true);
}

#[test]
fn huge_headers_are_bounded() {
    // 10,000 trusted hops and a spoofed address at the far left: only the
    // nearest 64 are walked, so the spoof is never reached.
    let mut chain = String::from("6.6.6.6");
    for i in 0..10_000 {
        chain.push_str(&format!(", 10.0.{}.{}", i / 250, i % 250));
    }
    let nearest_64th = format!("10.0.{}.{}", (10_000 - 64) / 250, (10_000 - 64) % 250);
    check("10.0.0.1", &[(XFF, chain.as_bytes())], &nearest_64th, false, true);
    let commas = ",".repeat(100_000) + "6.6.6.6";
    check("10.0.0.1", &[(XFF, commas.as_bytes())], "6.6.6.6", false, true);
    let commas = "6.6.6.6".to_string() + &",".repeat(100_000);
    check("10.0.0.1", &[(XFF, commas.as_bytes())], "10.0.0.1", false, true);
    let quotes = "for=\"".repeat(50_000);
    check_fwd("10.0.0.1", &[(FWD, quotes.as_bytes())], "10.0.0.1", false, true);
    let slashes = format!("for=6.6.6.6, for=\"{}\"", "\\".repeat(100_001));
    check_fwd("10.0.0.1", &[(FWD, slashes.as_bytes())], "10.0.0.1", false, true);
}

#[test]
fn mapped_networks_are_canonicalised() {
    let set = trusted();
    assert!(set.contains("192.168.1.1".parse().unwrap()));
    assert!(set.contains("::ffff:10.0.0.1".parse().unwrap()));
    assert!(!set.contains("::10.0.0.1".parse().unwrap()));
    assert!(!set.contains("11.0.0.1".parse().unwrap()));
    assert!(!set.is_empty());
    assert!(TrustedProxies::default().is_empty());
    assert!(!TrustedProxies::default().contains("127.0.0.1".parse().unwrap()));
}

/// Deterministic stand-in for the fuzz target: random bytes split into
/// header values, checked for panics and basic invariants.
#[test]
fn hostile_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let sets = [trusted(), trusted().reading(ForwardingHeader::Forwarded)];
    let alphabet = b"0123456789abcdef.:[]_,;=\" \t\\forFOR-xyz\xff";
    for _ in 0..20_000 {
        let mut map = HeaderMap::new();
        for name in [XFF, FWD, XFP, XFF] {
            let len = rng.below(48) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(5) == 0 {
                        rng.next() as u8
                    } else {
                        alphabet[rng.below(alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            if rng.below(3) != 0 {
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    map.append(name, value);
                }
            }
        }
        let peer: IpAddr = match rng.below(3) {
            0 => "10.0.0.1".parse().unwrap(),
            1 => "::ffff:10.0.0.1".parse().unwrap(),
            _ => "203.0.113.1".parse().unwrap(),
        };
        let set = &sets[(rng.below(2)) as usize];
        let info = resolve_client(peer, set, &map);
        assert_eq!(info.ip, info.ip.to_canonical(), "{map:?}");
        assert_eq!(info.via_trusted_proxy, set.contains(peer));
        if !info.via_trusted_proxy {
            assert_eq!(info.ip, peer.to_canonical());
            assert!(!info.forwarded_https);
        }
    }
}

#[track_caller]
fn grouped(prefix: u8, ip: &str, key: &str, network_len: Option<u8>) {
    let clients = ClientGrouping::new(prefix);
    let ip: IpAddr = ip.parse().unwrap();
    assert_eq!(clients.key(ip), key.parse::<IpAddr>().unwrap(), "/{prefix} of {ip}");
    assert_eq!(clients.network_len(ip), network_len, "/{prefix} of {ip}");
}

#[test]
#[rustfmt::skip]
fn ipv6_clients_are_counted_by_their_network() {
    grouped(64, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::", Some(64));
    grouped(64, "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::", Some(64));
    grouped(64, "2001:db8:1:3::1", "2001:db8:1:3::", Some(64));
    grouped(56, "2001:db8:1:2ff::1", "2001:db8:1:200::", Some(56));
    grouped(48, "2001:db8:1:2::1", "2001:db8:1::", Some(48));
    grouped(1, "ffff::1", "8000::", Some(1));
    grouped(127, "2001:db8::3", "2001:db8::2", Some(127));
    // 128: each address alone.
    grouped(128, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6", None);
    grouped(64, "::1", "::", Some(64));
    // IPv4, mapped or not, is never grouped.
    grouped(64, "203.0.113.7", "203.0.113.7", None);
    grouped(1, "203.0.113.7", "203.0.113.7", None);
    grouped(64, "::ffff:203.0.113.7", "203.0.113.7", None);
    // Out of range is clamped, not a panic.
    grouped(0, "ffff::1", "8000::", Some(1));
    grouped(200, "2001:db8::3", "2001:db8::3", None);
}

#[test]
fn the_default_groups_by_64() {
    assert_eq!(ClientGrouping::default(), ClientGrouping::new(64));
    assert_eq!(ClientGrouping::default().ipv6_prefix(), ClientGrouping::DEFAULT_IPV6_PREFIX);
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

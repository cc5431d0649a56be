//! The ban list's table: bans by what they cover (an address, or an IPv6
//! network), looked up without allocating.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv6Net};

use super::Ban;

/// What a ban of `ip` with `prefix_len` covers (see [`Ban::net`]).
/// Only IPv6 networks are ever banned, and never all of IPv6 (/0).
pub(super) fn target_net(ip: IpAddr, prefix_len: Option<u8>) -> Option<IpNet> {
    match (ip.to_canonical(), prefix_len) {
        (ip, None) => Some(IpNet::from(ip)),
        (IpAddr::V4(v4), Some(32)) => Some(IpNet::from(IpAddr::V4(v4))),
        (IpAddr::V6(v6), Some(len @ 1..=128)) => Ipv6Net::new(v6, len).ok().map(|n| n.trunc().into()),
        _ => None,
    }
}

/// `net` as a ban's `ip` and `prefix_len`: the address, or for a network
/// (`net` shorter than an address) its first address and prefix length.
pub(super) fn ban_target(net: IpNet) -> (IpAddr, Option<u8>) {
    (net.addr(), (net.prefix_len() < net.max_prefix_len()).then_some(net.prefix_len()))
}

/// A ban in this instance's list.
pub(super) struct Held {
    pub(super) ban: Ban,
    /// Made here and not (yet) written to Redis, which was unreachable: a
    /// re-read that does not find it in Redis writes it there, instead of
    /// dropping it as lifted elsewhere.
    pub(super) unshared: bool,
}

/// The bans in force, by what they cover.
#[derive(Default)]
pub(super) struct Table {
    /// Changed only through [`Table`]'s methods (except `unshared`), which
    /// keep the indexes below in step.
    pub(super) map: HashMap<IpNet, Held>,
    /// The prefix lengths of the IPv6 network bans in `map`, each with how
    /// many there are: the networks an IPv6 address is looked up as.
    v6_lens: Vec<(u8, usize)>,
    /// The automatic and the manual bans by when they end, so that expiry
    /// and "the one ending soonest" cost a lookup, not a scan of a full
    /// list under the lock every request's ban check waits for.
    automatic_by_end: BTreeSet<(u64, IpNet)>,
    manual_by_end: BTreeSet<(u64, IpNet)>,
}

impl Table {
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn get(&self, net: &IpNet) -> Option<&Held> {
        self.map.get(net)
    }

    pub(super) fn insert(&mut self, net: IpNet, held: Held) {
        self.remove(&net);
        self.by_end(&held.ban).insert((held.ban.until_ms, net));
        count_len(&mut self.v6_lens, net, true);
        self.map.insert(net, held);
    }

    pub(super) fn remove(&mut self, net: &IpNet) -> Option<Held> {
        let removed = self.map.remove(net);
        if let Some(held) = &removed {
            count_len(&mut self.v6_lens, *net, false);
            self.by_end(&held.ban).remove(&(held.ban.until_ms, *net));
        }
        removed
    }

    /// Drops every ban that has ended by `now`.
    pub(super) fn expire(&mut self, now: u64) {
        for manual in [false, true] {
            loop {
                let set = if manual { &mut self.manual_by_end } else { &mut self.automatic_by_end };
                if set.first().is_none_or(|&(until, _)| until > now) {
                    break;
                }
                // Taken off the index first, so that the loop ends even if
                // the index and the map disagreed.
                let Some((_, net)) = set.pop_first() else { break };
                let removed = self.remove(&net);
                debug_assert!(removed.is_some(), "the end-time index named a ban the table does not hold");
            }
        }
    }

    /// What the automatic (or manual) ban ending soonest covers.
    pub(super) fn soonest(&self, automatic: bool) -> Option<IpNet> {
        let set = if automatic { &self.automatic_by_end } else { &self.manual_by_end };
        set.first().map(|&(_, net)| net)
    }

    fn by_end(&mut self, ban: &Ban) -> &mut BTreeSet<(u64, IpNet)> {
        if ban.is_automatic() {
            &mut self.automatic_by_end
        } else {
            &mut self.manual_by_end
        }
    }

    /// The live ban that applies to `ip`: on the address itself first, then
    /// on a network of it. No allocation; one lookup for IPv4, one more per
    /// prefix length in use for IPv6.
    pub(super) fn find(&self, ip: IpAddr, now: u64) -> Option<&Held> {
        let live = |net: IpNet| self.map.get(&net).filter(|h| h.ban.until_ms > now);
        if let Some(held) = live(IpNet::from(ip)) {
            return Some(held);
        }
        let IpAddr::V6(v6) = ip else { return None };
        self.v6_lens.iter().find_map(|&(len, _)| Ipv6Net::new(v6, len).ok().and_then(|n| live(n.trunc().into())))
    }

    /// The targets of every ban, live or not, that applies to `ip`.
    pub(super) fn covering(&self, ip: IpAddr) -> Vec<IpNet> {
        let mut nets = vec![IpNet::from(ip)];
        if let IpAddr::V6(v6) = ip {
            nets.extend(
                self.v6_lens.iter().filter_map(|&(len, _)| Ipv6Net::new(v6, len).ok().map(|n| IpNet::V6(n.trunc()))),
            );
        }
        nets.retain(|n| self.map.contains_key(n));
        nets
    }
}

/// Counts `net` in or out of `lens` when it is an IPv6 network.
fn count_len(lens: &mut Vec<(u8, usize)>, net: IpNet, added: bool) {
    let IpNet::V6(v6) = net else { return };
    let len = v6.prefix_len();
    if len == 128 {
        return;
    }
    match lens.iter_mut().find(|(l, _)| *l == len) {
        Some((_, n)) if added => *n += 1,
        None if added => lens.push((len, 1)),
        Some((_, n)) => {
            *n = n.saturating_sub(1);
            lens.retain(|(_, n)| *n > 0);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ban(target: &str, until_ms: u64) -> (IpNet, Held) {
        let net: IpNet = target.parse().unwrap_or_else(|_| IpNet::from(target.parse::<IpAddr>().unwrap()));
        let (ip, prefix_len) = ban_target(net);
        let ban = Ban { ip, prefix_len, until_ms, reason: "test".into(), source: "manual".into() };
        (net, Held { ban, unshared: false })
    }

    fn found(table: &Table, ip: &str) -> Option<String> {
        table.find(ip.parse().unwrap(), 1000).map(|h| h.ban.target())
    }

    #[test]
    fn an_address_is_found_under_itself_and_under_each_banned_network_length() {
        let mut t = Table::default();
        for (target, until) in [("2001:db8:1:2::/64", 2000), ("2001:db8:9::/48", 2000), ("2001:db8:1:3::5", 2000)] {
            let (net, held) = ban(target, until);
            t.insert(net, held);
        }
        let (net, held) = ban("2001:db8:7::/48", 500);
        t.insert(net, held);
        assert_eq!(found(&t, "2001:db8:1:2:ffff::1").as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(found(&t, "2001:db8:9:abcd::1").as_deref(), Some("2001:db8:9::/48"), "another length");
        assert_eq!(found(&t, "2001:db8:1:3::5").as_deref(), Some("2001:db8:1:3::5"), "one address");
        assert_eq!(found(&t, "2001:db8:1:3::6"), None, "not its neighbour");
        assert_eq!(found(&t, "2001:db8:7::1"), None, "expired");
        assert_eq!(found(&t, "203.0.113.1"), None);
        assert_eq!(t.covering("2001:db8:1:2::1".parse().unwrap()), ["2001:db8:1:2::/64".parse::<IpNet>().unwrap()]);

        // The lengths looked up follow what is in the table.
        assert_eq!(t.v6_lens.len(), 2);
        t.expire(1000);
        assert_eq!(t.v6_lens, [(64, 1), (48, 1)]);
        assert!(t.remove(&"2001:db8:9::/48".parse().unwrap()).is_some());
        assert!(t.remove(&"2001:db8:9::/48".parse().unwrap()).is_none());
        assert_eq!(t.v6_lens, [(64, 1)]);
        let (net, held) = ban("2001:db8:1:2::/64", 3000);
        t.insert(net, held);
        assert_eq!(t.v6_lens, [(64, 1)], "a replaced ban is not counted twice");
        t.remove(&net);
        assert!(t.v6_lens.is_empty());
        assert_eq!(found(&t, "2001:db8:1:2::1"), None);
    }

    /// The end-time indexes follow every insert, replacement, removal and
    /// expiry: `soonest` and `expire` agree with a scan of the whole table.
    #[test]
    fn the_end_time_indexes_agree_with_the_table() {
        let mut t = Table::default();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = 0;
        for _ in 0..5000 {
            let net = IpNet::from(IpAddr::from([192, 0, 2, next(64) as u8]));
            match next(10) {
                0..=5 => {
                    let (_, mut held) = ban(&net.addr().to_string(), now + 1 + next(1000));
                    if next(2) == 0 {
                        held.ban.source = "auto:rate_limited".into();
                    }
                    t.insert(net, held);
                }
                6 | 7 => {
                    t.remove(&net);
                }
                8 => {
                    now += next(200);
                    t.expire(now);
                    assert!(t.map.values().all(|h| h.ban.until_ms > now));
                }
                _ => {}
            }
            for automatic in [true, false] {
                let soonest_by_scan =
                    t.map.values().filter(|h| h.ban.is_automatic() == automatic).map(|h| h.ban.until_ms).min();
                let soonest = t.soonest(automatic).map(|n| t.map[&n].ban.until_ms);
                assert_eq!(soonest, soonest_by_scan);
            }
            assert_eq!(t.automatic_by_end.len() + t.manual_by_end.len(), t.map.len());
        }
    }

    #[test]
    fn only_addresses_and_ipv6_networks_are_ban_targets() {
        let net = |ip: &str, len: Option<u8>| target_net(ip.parse().unwrap(), len).map(|n| n.to_string());
        assert_eq!(net("203.0.113.1", None).as_deref(), Some("203.0.113.1/32"));
        assert_eq!(net("::ffff:203.0.113.1", None).as_deref(), Some("203.0.113.1/32"), "canonical");
        assert_eq!(net("203.0.113.1", Some(32)).as_deref(), Some("203.0.113.1/32"));
        assert_eq!(net("203.0.113.0", Some(24)), None, "no IPv4 networks");
        assert_eq!(net("2001:db8:1:2::7", Some(64)).as_deref(), Some("2001:db8:1:2::/64"), "truncated");
        assert_eq!(net("2001:db8::", Some(0)), None, "not all of IPv6");
        assert_eq!(net("2001:db8::", Some(129)), None);
        assert_eq!(ban_target("2001:db8::1/128".parse().unwrap()), ("2001:db8::1".parse().unwrap(), None));
        assert_eq!(ban_target("2001:db8::/64".parse().unwrap()), ("2001:db8::".parse().unwrap(), Some(64)));
    }
}

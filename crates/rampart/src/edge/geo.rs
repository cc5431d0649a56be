//! Geo rules: the client's country from a MaxMind database (GeoIP2/GeoLite2
//! Country or City), allow/deny lists per route (403), and the country code sent
//! upstream in a header.
//!
//! The database is read into memory when the policy is built (start and every
//! reload, so a refreshed file is picked up by SIGHUP). A missing or corrupt
//! file is a config error when anything needs it: Rampart never silently runs
//! without rules it was told to enforce. A client-sent header with the country
//! header's name is always removed, so the upstream can trust it.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderName, HeaderValue, StatusCode};
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::compile::GeoSettings;
use tower::{Layer, Service};

use super::route::MatchedRoute;
use super::{HttpRequest, Inner, LayerFuture};
use crate::problem::Problem;

/// An opened country database.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb").field("type", &self.reader.metadata.database_type).finish()
    }
}

impl GeoDb {
    /// Opens and checks a database: it must parse, its search tree must be
    /// sound, every record it leads to must decode as a country record, and
    /// some must name a country. Checking every record (a fraction of a second
    /// for GeoLite2-Country) is what catches a corrupt data section, which a
    /// few sample lookups would miss; the last check refuses a database of
    /// another kind (ASN, ISP…), whose records decode as empty country records
    /// and would leave every rule unenforced.
    pub fn open(path: &str) -> anyhow::Result<Self> {
        // The maxminddb crate can panic on some malformed files (an index out
        // of bounds in its decoder); a bad file must be a config error, never a
        // crash, so a panic here counts as corruption.
        std::panic::catch_unwind(|| Self::open_checked(path))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{path}: corrupt database (the reader failed on it)")))
    }

    fn open_checked(path: &str) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let mut placed = false;
        {
            let view = maxminddb::Reader::from_source(bytes.as_slice()).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
            let leaves =
                leaf_addresses(&bytes, &view.metadata).map_err(|e| anyhow::anyhow!("{path}: corrupt database: {e}"))?;
            for ip in leaves {
                let rec = view
                    .lookup::<maxminddb::geoip2::Country>(ip)
                    .map_err(|e| anyhow::anyhow!("{path}: corrupt database: {e}"))?;
                placed |= rec.is_some_and(|r| {
                    r.country.and_then(|c| c.iso_code).is_some()
                        || r.registered_country.and_then(|c| c.iso_code).is_some()
                });
            }
            if !placed {
                anyhow::bail!(
                    "{path}: no network in it names a country (database type `{}`): use a Country or City database",
                    view.metadata.database_type
                );
            }
        }
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        Ok(Self { reader })
    }

    /// The ISO country code of `ip`, if the database places it.
    pub fn country(&self, ip: std::net::IpAddr) -> Option<[u8; 2]> {
        // Every record decoded cleanly when the file was opened; the guard is
        // for the reader's own bugs, which must not take a request down.
        let rec =
            std::panic::catch_unwind(|| self.reader.lookup::<maxminddb::geoip2::Country>(ip).ok().flatten()).ok()??;
        let code = rec.country.and_then(|c| c.iso_code).or_else(|| rec.registered_country.and_then(|c| c.iso_code))?;
        <[u8; 2]>::try_from(code.as_bytes()).ok()
    }
}

/// One address leading to each distinct record of a MaxMind database, from a
/// walk of its search tree (`bytes` is the whole file).
///
/// The walk visits each node at most once, so a corrupt tree (cycles, shared
/// subtrees, a wrong node count) cannot make it loop or blow up, as it can
/// the crate's own `within` iterator; and it refuses a tree larger than the
/// file or deeper than an address is long. Lookups themselves stop after 32
/// or 128 steps whatever the tree holds.
fn leaf_addresses(bytes: &[u8], metadata: &maxminddb::Metadata) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let node_count = usize::try_from(metadata.node_count)?;
    let record_bits = usize::from(metadata.record_size);
    anyhow::ensure!(matches!(record_bits, 24 | 28 | 32), "unknown record size {record_bits}");
    // Two records per node, then a 16-byte separator before the data.
    let tree_bytes = node_count.checked_mul(record_bits).map(|bits| bits / 4);
    let tree = tree_bytes
        .filter(|&n| n.saturating_add(16) <= bytes.len())
        .and_then(|n| bytes.get(..n))
        .ok_or_else(|| anyhow::anyhow!("a search tree of {node_count} nodes does not fit in the file"))?;
    let record = |node: usize, right: bool| -> Option<usize> {
        let at = node * record_bits / 4;
        let be = |b: &[u8]| b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        Some(match (record_bits, right) {
            (24, false) => be(tree.get(at..at + 3)?),
            (24, true) => be(tree.get(at + 3..at + 6)?),
            (28, false) => (usize::from(*tree.get(at + 3)? >> 4) << 24) | be(tree.get(at..at + 3)?),
            (28, true) => (usize::from(*tree.get(at + 3)? & 0x0f) << 24) | be(tree.get(at + 4..at + 7)?),
            (_, false) => be(tree.get(at..at + 4)?),
            (_, true) => be(tree.get(at + 4..at + 8)?),
        })
    };
    let bits: u32 = if metadata.ip_version == 6 { 128 } else { 32 };
    let mut seen = vec![false; node_count];
    let mut leaves: std::collections::HashMap<usize, u128> = std::collections::HashMap::new();
    let mut stack: Vec<(usize, u128, u32)> = vec![(0, 0, 0)];
    while let Some((node, address, depth)) = stack.pop() {
        if node > node_count {
            leaves.entry(node).or_insert(address);
            continue;
        }
        // `node_count` itself means "no data"; a node seen before was walked.
        if node == node_count || std::mem::replace(&mut seen[node], true) {
            continue;
        }
        anyhow::ensure!(depth < bits, "its search tree is deeper than an address is long");
        for right in [false, true] {
            let child = record(node, right).ok_or_else(|| anyhow::anyhow!("a node lies outside the search tree"))?;
            let bit = u128::from(right) << (bits - 1 - depth);
            stack.push((child, address | bit, depth + 1));
        }
    }
    Ok(leaves
        .into_values()
        .map(|a| match bits {
            128 => std::net::IpAddr::V6(a.into()),
            _ => std::net::IpAddr::V4(u32::try_from(a).unwrap_or_default().into()),
        })
        .collect())
}

#[derive(Clone)]
pub struct GeoLayer {
    db: Option<Arc<GeoDb>>,
    header: Option<HeaderName>,
    unknown_allowed: bool,
}

impl GeoLayer {
    /// Opens the database named in `settings`, if any.
    pub fn new(settings: &GeoSettings) -> anyhow::Result<Self> {
        let db = settings.database.as_deref().map(GeoDb::open).transpose()?.map(Arc::new);
        Ok(Self { db, header: settings.header.clone(), unknown_allowed: settings.unknown_allowed })
    }
}

impl<S> Layer<S> for GeoLayer {
    type Service = GeoService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GeoService { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct GeoService<S> {
    inner: S,
    layer: GeoLayer,
}

/// Removes `name` and every spelling of it with `_` for `-`
/// (`X_Client_Country`): CGI-style servers (gunicorn before 22, Puma before
/// 6.4.3) read both as the one variable the app trusts.
fn remove_with_aliases(headers: &mut http::HeaderMap, name: &http::HeaderName) {
    headers.remove(name);
    let aliases: Vec<http::HeaderName> = headers
        .keys()
        .filter(|n| {
            let (n, want) = (n.as_str().as_bytes(), name.as_str().as_bytes());
            n.len() == want.len()
                && n.contains(&b'_')
                && n.iter().zip(want).all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
        })
        .cloned()
        .collect();
    for alias in aliases {
        headers.remove(alias);
    }
}

impl<S: Inner> Service<HttpRequest> for GeoService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let l = &self.layer;
        if let Some(h) = &l.header {
            remove_with_aliases(req.headers_mut(), h);
        }
        let (Some(db), Some(ip)) = (&l.db, req.extensions().get::<ClientInfo>().map(|c| c.ip)) else {
            return Either::Left(self.inner.call(req));
        };
        let country = db.country(ip);
        let code = country.as_ref().and_then(|c| std::str::from_utf8(c).ok());
        if let Some(rule) = req.extensions().get::<MatchedRoute>().and_then(|r| r.0.geo.clone()) {
            if !rule.permits(code, l.unknown_allowed) {
                let resp = Problem::new(StatusCode::FORBIDDEN, "geo-blocked", "Forbidden")
                    .detail("this service is not available from your location")
                    .rejected_by("geo", "country")
                    .into_response_for(req.extensions());
                return Either::Right(Box::pin(async move { Ok(resp) }));
            }
        }
        if let (Some(h), Some(c)) = (&l.header, code) {
            if let Ok(v) = HeaderValue::from_str(c) {
                req.headers_mut().insert(h.clone(), v);
            }
        }
        Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn metadata(node_count: u32, ip_version: u16) -> maxminddb::Metadata {
        maxminddb::Metadata {
            binary_format_major_version: 2,
            binary_format_minor_version: 0,
            build_epoch: 0,
            database_type: "test".into(),
            description: Default::default(),
            ip_version,
            languages: Vec::new(),
            node_count,
            record_size: 24,
        }
    }

    /// A file of 24-bit nodes, `(left, right)` each, and the separator.
    fn tree(nodes: &[(u32, u32)]) -> Vec<u8> {
        let mut bytes: Vec<u8> =
            nodes.iter().flat_map(|&(l, r)| [&l.to_be_bytes()[1..], &r.to_be_bytes()[1..]].concat()).collect();
        bytes.extend([0; 16]);
        bytes
    }

    #[test]
    fn the_walk_ends_on_cycles_and_finds_each_record_once() {
        // Node 1 points back to the root; records 3 and 4 are data.
        let bytes = tree(&[(1, 3), (0, 4)]);
        let mut leaves = leaf_addresses(&bytes, &metadata(2, 4)).unwrap();
        leaves.sort();
        assert_eq!(leaves, ["64.0.0.0".parse::<std::net::IpAddr>().unwrap(), "128.0.0.0".parse().unwrap()]);
    }

    #[test]
    fn trees_deeper_than_an_address_or_larger_than_the_file_are_refused() {
        // A chain of 40 nodes: an IPv4 lookup can only take 32 steps.
        let chain: Vec<(u32, u32)> = (1..=40).map(|i| (i, 40)).collect();
        let err = leaf_addresses(&tree(&chain), &metadata(40, 4)).unwrap_err().to_string();
        assert!(err.contains("deeper"), "{err}");
        let err = leaf_addresses(&tree(&[(1, 1)]), &metadata(1000, 4)).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}

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
use super::{take_ready, HttpRequest, Inner, LayerFuture};
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
    /// Opens and checks a database: it must parse, and every network in it must
    /// decode as a country record. The full walk (a fraction of a second for
    /// GeoLite2-Country) is what catches a corrupt search tree or data section,
    /// which a few sample lookups would miss.
    pub fn open(path: &str) -> anyhow::Result<Self> {
        // The maxminddb crate can panic on some malformed files (an index out
        // of bounds in its decoder); a bad file must be a config error, never a
        // crash, so a panic here counts as corruption.
        std::panic::catch_unwind(|| Self::open_checked(path))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{path}: corrupt database (the reader failed on it)")))
    }

    fn open_checked(path: &str) -> anyhow::Result<Self> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        for net in ["0.0.0.0/0", "::/0"] {
            let Ok(net) = net.parse::<ipnetwork::IpNetwork>() else { continue };
            if net.is_ipv6() && reader.metadata.ip_version != 6 {
                continue;
            }
            let walk = reader
                .within::<maxminddb::geoip2::Country>(net)
                .map_err(|e| anyhow::anyhow!("{path}: unreadable database: {e}"))?;
            for item in walk {
                item.map_err(|e| anyhow::anyhow!("{path}: corrupt database: {e}"))?;
            }
        }
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
            req.headers_mut().remove(h);
        }
        let (Some(db), Some(ip)) = (&l.db, req.extensions().get::<ClientInfo>().map(|c| c.ip)) else {
            return Either::Left(take_ready(&mut self.inner).call(req));
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
        Either::Left(take_ready(&mut self.inner).call(req))
    }
}

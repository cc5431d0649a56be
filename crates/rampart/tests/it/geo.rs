//! Geo rules and the country header, on MaxMind's public test databases
//! (`scripts/test` fetches them and sets RAMPART_TEST_MAXMIND_DIR).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;

fn maxmind_dir() -> Option<std::path::PathBuf> {
    match std::env::var("RAMPART_TEST_MAXMIND_DIR") {
        Ok(d) if !d.is_empty() => Some(d.into()),
        _ => {
            eprintln!("skipped: RAMPART_TEST_MAXMIND_DIR not set (scripts/test sets it)");
            None
        }
    }
}

fn geo_config(db: &str, unknown: &str) -> String {
    format!(
        "[geo]\ndatabase = '{db}'\nheader = 'x-client-country'\nunknown = '{unknown}'\n\
         [[routes]]\npath = '/eu/**'\ngeo = {{ allow = ['GB', 'SE'] }}\n\
         [[routes]]\npath = '/no-us/**'\ngeo = {{ deny = ['US'] }}\n\
         [[routes]]\npath = '/**'\n"
    )
}

async fn get(gw: &rampart::Gateway, path: &str, client_ip: &str) -> reqwest::Response {
    client()
        .get(url(gw, path))
        .header("x-forwarded-for", client_ip)
        .header("x-client-country", "ZZ")
        // What gunicorn and Puma would read as the same variable.
        .header("x_client_country", "ZZ")
        .header("X_Client-Country", "ZZ")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn country_rules_and_header() {
    let Some(dir) = maxmind_dir() else { return };
    // Country and City databases both place addresses.
    for name in ["GeoIP2-Country-Test", "GeoLite2-Country-Test", "GeoIP2-City-Test", "GeoLite2-City-Test"] {
        let db = dir.join(format!("test-data/{name}.mmdb"));
        let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1']", &geo_config(db.to_str().unwrap(), "allow")).await;
        // GB and SE may use /eu; the US may not.
        let r = get(&gw, "/eu/x", "81.2.69.160").await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["headers"]["x-client-country"], "GB", "country sent upstream, client's value replaced");
        assert_eq!(get(&gw, "/eu/x", "89.160.20.112").await.status(), 200);
        let v = problem(get(&gw, "/eu/x", "216.160.83.56").await, 403).await;
        assert_eq!(v["type"], "urn:rampart:problem:geo-blocked");
        // Deny lists; IPv6 too.
        assert_eq!(get(&gw, "/no-us/x", "216.160.83.56").await.status(), 403);
        assert_eq!(get(&gw, "/no-us/x", "2001:218::1").await.status(), 200);
        // Addresses the database does not place: allowed here, with no header.
        let r = get(&gw, "/eu/x", "10.1.2.3").await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["headers"].get("x-client-country").is_none(), "spoofed header must not survive");
        for alias in ["x_client_country", "x_client-country"] {
            assert!(v["headers"].get(alias).is_none(), "{alias} must not survive: {v}");
        }
    }
}

#[tokio::test]
async fn unknown_addresses_can_be_denied() {
    let Some(dir) = maxmind_dir() else { return };
    let db = dir.join("test-data/GeoIP2-Country-Test.mmdb");
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1']", &geo_config(db.to_str().unwrap(), "deny")).await;
    assert_eq!(get(&gw, "/eu/x", "10.1.2.3").await.status(), 403);
    assert_eq!(get(&gw, "/anything", "10.1.2.3").await.status(), 200, "routes without rules are open");
}

#[tokio::test]
async fn missing_or_corrupt_database_refuses_to_start() {
    let Some(dir) = maxmind_dir() else { return };
    let err = rampart::app::load_policy_text(&config("http://127.0.0.1:1", &geo_config("/nonexistent.mmdb", "allow")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("geo.database"), "{err}");
    for bad in [
        "libmaxminddb/libmaxminddb-metadata-marker-only.mmdb",
        "libmaxminddb/libmaxminddb-offset-integer-overflow.mmdb",
        "libmaxminddb/libmaxminddb-separator-record-min-left.mmdb",
        "maxminddb-golang/invalid-data-record-offset.mmdb",
        "maxminddb-golang/cyclic-data-structure.mmdb",
        "maxminddb-golang/invalid-string-length.mmdb",
        "maxminddb-python/bad-unicode-in-map-key.mmdb",
    ] {
        let corrupt = dir.join("bad-data").join(bad);
        assert!(corrupt.is_file(), "{}", corrupt.display());
        let err = rampart::app::load_policy_text(&config(
            "http://127.0.0.1:1",
            &geo_config(corrupt.to_str().unwrap(), "allow"),
        ))
        .expect_err(bad)
        .to_string();
        assert!(err.contains("geo.database"), "{err}");
    }
    for bad in [
        "GeoIP2-City-Test-Broken-Double-Format.mmdb",
        "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
        "MaxMind-DB-test-broken-pointers-24.mmdb",
        "MaxMind-DB-test-broken-search-tree-24.mmdb",
    ] {
        let corrupt = dir.join("test-data").join(bad);
        let text = config("http://127.0.0.1:1", &geo_config(corrupt.to_str().unwrap(), "allow"));
        let err = rampart::app::load_policy_text(&text).expect_err(bad).to_string();
        assert!(err.contains("geo.database"), "{bad}: {err}");
    }
    // A valid database of another kind places no one: every rule would be moot.
    let asn = dir.join("test-data/GeoLite2-ASN-Test.mmdb");
    let err =
        rampart::app::load_policy_text(&config("http://127.0.0.1:1", &geo_config(asn.to_str().unwrap(), "allow")))
            .unwrap_err()
            .to_string();
    assert!(err.contains("geo.database") && err.contains("names a country") && err.contains("GeoLite2-ASN"), "{err}");
    // Rules without a database are a config error, not silently ignored.
    let err = rampart::app::load_policy_text(&config(
        "http://127.0.0.1:1",
        "[[routes]]\npath = '/**'\ngeo = { allow = ['US'] }\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("geo.database") && err.contains("needed by the geo rules"), "{err}");
    let err = rampart::app::load_policy_text(&config("http://127.0.0.1:1", "[defaults]\ngeo = { allow = ['usa'] }\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("alpha-2"), "{err}");
}

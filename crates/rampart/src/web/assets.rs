//! The pages' CSS and scripts, embedded in the binary, and the version in
//! their URLs (a hash of all of them, so browsers may cache them for good).

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

pub(super) struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("assets/style.css") },
    Asset { name: "common.js", content_type: JS, body: include_bytes!("assets/common.js") },
    Asset { name: "login.js", content_type: JS, body: include_bytes!("assets/login.js") },
    Asset { name: "account.js", content_type: JS, body: include_bytes!("assets/account.js") },
    Asset { name: "admin.js", content_type: JS, body: include_bytes!("assets/admin.js") },
];

pub(super) fn get(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The first 12 hex digits of SHA-256 over every asset.
pub(super) fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut h = Sha256::new();
        for a in ASSETS {
            h.update(a.name.as_bytes());
            h.update([0]);
            h.update(a.body);
        }
        hex::encode(h.finalize()).chars().take(12).collect()
    })
}

/// The URL of an asset under the pages' prefix.
pub(super) fn url(ui: &str, name: &str) -> String {
    format!("{ui}/assets/{}/{name}", version())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn assets_have_no_inline_handlers_or_eval() {
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            for bad in ["eval(", "new Function", "innerHTML", "alert(", "document.write"] {
                assert!(!text.contains(bad), "{} uses {bad}", a.name);
            }
        }
        assert_eq!(version().len(), 12);
        assert!(get("common.js").is_some() && get("../common.js").is_none());
    }
}

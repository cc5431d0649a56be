//! Compiles the vendored libinjection C sources (see `vendor/README.md`).
//!
//! The sources live in the repository rather than being fetched at build time,
//! so builds work offline and always compile exactly the code that was reviewed.

fn main() {
    const SOURCES: [&str; 3] =
        ["vendor/libinjection_sqli.c", "vendor/libinjection_xss.c", "vendor/libinjection_html5.c"];
    const HEADERS: [&str; 5] = [
        "vendor/libinjection.h",
        "vendor/libinjection_sqli.h",
        "vendor/libinjection_sqli_data.h",
        "vendor/libinjection_xss.h",
        "vendor/libinjection_html5.h",
    ];
    for path in SOURCES.iter().chain(HEADERS.iter()) {
        println!("cargo:rerun-if-changed={path}");
    }
    // `libinjection_sqli.c` defines LIBINJECTION_VERSION itself ("3.9.2"), so
    // no define is passed; passing one would only cause a redefinition warning.
    // Assertions stay enabled (no NDEBUG): the few `assert`s guard index
    // arithmetic, and aborting is better than reading out of bounds.
    cc::Build::new().files(SOURCES).include("vendor").warnings(true).compile("injection");
}

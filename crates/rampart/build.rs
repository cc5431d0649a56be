//! `sqlx::migrate!` embeds `migrations/` at compile time; this makes cargo
//! rebuild the crate when a migration is added or changed, not only when Rust
//! code changes.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

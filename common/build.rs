//! `sqlx::migrate!` reads `migrations/` at compile time, but cargo does not know that:
//! without this, a new migration file would not be built into the binaries.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

//! `loadtest` binary (placeholder, being written).
fn main() {}

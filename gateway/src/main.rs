//! `gateway` binary (placeholder, being written).
fn main() {}

//! `recorder` binary (placeholder, being written).
fn main() {}

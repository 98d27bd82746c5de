//! The Chaperone recorder (being written).
#![forbid(unsafe_code)]

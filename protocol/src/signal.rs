//! Signaling messages (placeholder, being written).

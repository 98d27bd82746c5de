//! Recorder feed frames (placeholder, being written).

//! Lesson events (placeholder, being written).

//! Test fixtures placeholder.

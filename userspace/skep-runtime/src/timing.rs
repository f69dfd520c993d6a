//! Pod start-up timing: one debug event per phase (target [`TARGET`]), with
//! how long it took and when it ended on the wall clock, so `cargo xtask
//! bench pod-startup` can line the agent's phases up with its own create
//! and watch times (`SKEP_LOG=info,skep_startup=debug`). The pod comes from
//! the span the event is in (the pod worker's `pod_uid`) or a field.

use std::time::{Instant, SystemTime};

/// The tracing target of start-up timing events.
pub const TARGET: &str = "skep_startup";

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// Records that start-up phase `phase` ran from `started` until now.
pub fn phase(phase: &'static str, started: Instant) {
    let elapsed_us = started.elapsed().as_micros();
    tracing::debug!(target: "skep_startup", phase, elapsed_us, end_us = now_us());
}

/// Records that start-up phase `phase` took `elapsed_us`, ending now (a
/// phase timed elsewhere: the shim's `runc`).
pub fn phase_us(phase: &'static str, elapsed_us: u128) {
    tracing::debug!(target: "skep_startup", phase, elapsed_us, end_us = now_us());
}

//! Waiting for a condition: poll until it holds or a generous deadline
//! passes. Tests assert on states, never on how long they took.

use std::time::{Duration, Instant};

use anyhow::bail;

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(200);

/// Polls `check` until it returns `Some`, or fails after `timeout` with
/// `what`, the last error `check` returned (errors are retried: the state
/// may simply not be there yet) and whatever `diagnose` tells.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
    diagnose: impl FnOnce() -> String,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last_error = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(err) => Some(err),
        };
        if Instant::now() > deadline {
            let last = last_error.map_or_else(String::new, |e| format!(" (last error: {e:#})"));
            bail!(
                "timed out after {}s waiting for {what}{last}\n{}",
                timeout.as_secs(),
                diagnose()
            );
        }
        std::thread::sleep(POLL);
    }
}

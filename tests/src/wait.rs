//! Bounded polling: every wait in the suite has a deadline and says what it was waiting for.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is re-checked.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `probe` until it returns `Some`, or panics after `timeout` naming `what` was awaited.
pub fn wait_for<T>(
    what: impl Display,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `probe` until it returns `Some` or `timeout` passes; `None` on timeout (for "never happens" checks).
pub fn poll_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

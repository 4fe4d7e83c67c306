//! Where scanning plugs into the message path.
//!
//! The inbound session calls [`ScanStage::inspect_within`] after the message is durable and
//! before it answers `250`, so a later verdict of "reject" can still be said inside the SMTP
//! session instead of as a bounce. If scanning takes longer than `queue.scan_budget`, the
//! session answers `250` anyway and the message is scanned after queueing. No scanner is
//! installed yet (antivirus, content and spam checks arrive with their own issues), so today
//! every message is accepted here at once.

use std::time::Duration;

use portcullis_queue::QueueEntry;

/// What the scanning stage decided within its time budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing objects: deliver.
    Accept,
    /// The budget ran out before a verdict; the message is handled after queueing.
    Deferred,
}

/// The scanning stage: an ordered list of scanners (empty until the scanner issues land).
#[derive(Debug, Default)]
pub struct ScanStage {}

impl ScanStage {
    /// Runs the scanners on a committed message, giving up after `budget`.
    pub async fn inspect_within(&self, budget: Duration, entry: &QueueEntry) -> Verdict {
        match tokio::time::timeout(budget, self.inspect(entry)).await {
            Ok(v) => v,
            Err(_) => Verdict::Deferred,
        }
    }

    async fn inspect(&self, _entry: &QueueEntry) -> Verdict {
        Verdict::Accept
    }
}

//! Fault injection for the end-to-end tests of supervision: a way to make one message's
//! processing panic or hang, or to stall the delivery scheduler, on a real running gateway.
//!
//! It does nothing unless the process was started with `PORTCULLIS_FAULT_INJECTION=1` in its
//! environment (never set on the appliance); then a message whose Subject contains
//! `[fault:KIND]` triggers KIND when it is processed.

use std::sync::OnceLock;

/// A fault the tests can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panic while delivering this message.
    PanicInDelivery,
    /// Hang while delivering this message (until `queue.attempt_timeout`).
    HangInDelivery,
    /// Stall the whole delivery scheduler loop, so the part is reported stuck.
    HangScheduler,
    /// Panic in the delivery scheduler loop itself (once per process), so the part is restarted.
    PanicScheduler,
}

impl Fault {
    fn tag(self) -> &'static str {
        match self {
            Fault::PanicInDelivery => "[fault:panic-in-delivery]",
            Fault::HangInDelivery => "[fault:hang-in-delivery]",
            Fault::HangScheduler => "[fault:hang-scheduler]",
            Fault::PanicScheduler => "[fault:panic-scheduler]",
        }
    }
}

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let on = std::env::var("PORTCULLIS_FAULT_INJECTION").is_ok_and(|v| v == "1");
        if on {
            tracing::warn!(
                "fault injection is enabled (PORTCULLIS_FAULT_INJECTION=1): for tests only"
            );
        }
        on
    })
}

/// Whether `fault` is requested for a message with this subject.
pub fn requested(fault: Fault, subject: Option<&str>) -> bool {
    enabled() && subject.is_some_and(|s| s.contains(fault.tag()))
}

/// Like [`requested`], but true only the first time it would be in this process, so a fault in
/// a restarted part does not repeat forever.
pub fn requested_once(fault: Fault, subject: Option<&str>) -> bool {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    requested(fault, subject) && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst)
}

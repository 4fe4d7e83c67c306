//! Board support: the parts of the appliance that differ per box.
//!
//! Kept small and free of tokio so it can be used from the supervisor's plain threads and from
//! early boot code alike.

pub mod watchdog;

pub use watchdog::{Watchdog, WatchdogError};

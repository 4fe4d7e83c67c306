//! State shared by the running parts: the config snapshot, the queue and the admin switches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use portcullis_queue::Queue;
use tokio::sync::watch;

use crate::config::Config;
use crate::relay::RelayPolicy;
use crate::scan::ScanStage;

/// One consistent view of the configuration and what is derived from it.
///
/// A reload builds a whole new snapshot and swaps it in; readers take an `Arc` and never see a
/// mix of old and new values.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated configuration.
    pub config: Config,
    /// The relay policy built from it.
    pub relay: RelayPolicy,
}

impl Snapshot {
    /// Derives the runtime pieces from a validated configuration.
    pub fn new(config: Config) -> Snapshot {
        let relay = RelayPolicy::new(
            &config.relay.local_domains,
            &config.relay.relay_networks,
            &config.smtp.reject_address_chars,
        );
        Snapshot { config, relay }
    }
}

/// The admin's switches (`portcullis ctl …`). They are runtime state, not configuration: a
/// restart starts with mail flowing.
#[derive(Debug, Default)]
pub struct Switches {
    delivery_paused: AtomicBool,
    rejecting_incoming: AtomicBool,
}

impl Switches {
    /// Whether outbound delivery is paused.
    pub fn delivery_paused(&self) -> bool {
        self.delivery_paused.load(Ordering::Relaxed)
    }

    /// Pauses or resumes outbound delivery.
    pub fn set_delivery_paused(&self, paused: bool) {
        self.delivery_paused.store(paused, Ordering::Relaxed);
    }

    /// Whether new mail is refused with 450.
    pub fn rejecting_incoming(&self) -> bool {
        self.rejecting_incoming.load(Ordering::Relaxed)
    }

    /// Refuses or accepts new mail.
    pub fn set_rejecting_incoming(&self, rejecting: bool) {
        self.rejecting_incoming.store(rejecting, Ordering::Relaxed);
    }
}

/// Everything the inbound, delivery and control parts share.
pub struct Shared {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    /// The durable queue.
    pub queue: Queue,
    /// Admin switches.
    pub switches: Switches,
    /// The scanning stage.
    pub scan: ScanStage,
    /// When the process started.
    pub started: std::time::Instant,
}

impl Shared {
    /// Bundles the shared parts.
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, queue: Queue) -> Shared {
        Shared {
            snapshot,
            queue,
            switches: Switches::default(),
            scan: ScanStage::default(),
            started: std::time::Instant::now(),
        }
    }

    /// The current configuration snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}

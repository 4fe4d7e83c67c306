//! State shared by the running parts: the config snapshot, the queue and the admin switches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use portcullis_queue::Queue;
use tokio::sync::watch;

use crate::alerts::{Alert, Alerter, Delivery, compose_mail};
use crate::config::{Config, ConfigError};
use crate::relay::RelayPolicy;
use crate::scan::ScanStage;
use portcullis_av::Engine;
use portcullis_scan::{CompiledNotifications, CompiledPolicy, Disclaimer};

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
    /// The content policy, compiled once per configuration.
    pub policy: Arc<CompiledPolicy>,
    /// The antivirus engine. Loaded once at start-up and carried over by reloads; a definitions
    /// update swaps in a new `Arc`, so no scan sees half old, half new signatures.
    pub engine: Arc<Engine>,
    /// The notification settings, checked once per configuration; `None` without a
    /// `[notifications]` section (nobody is notified).
    pub notifications: Option<Arc<CompiledNotifications>>,
    /// The disclaimer for outbound mail, `None` when `disclaimer.text` is empty.
    pub disclaimer: Option<Arc<Disclaimer>>,
}

impl Snapshot {
    /// Derives the runtime pieces from a validated configuration and the current engine.
    pub fn new(config: Config, engine: Arc<Engine>) -> Result<Snapshot, ConfigError> {
        let relay = RelayPolicy::new(
            &config.relay.local_domains,
            &config.relay.relay_networks,
            &config.smtp.reject_address_chars,
        );
        let policy = Arc::new(config.compile_policy("configuration")?);
        let notifications = config.compile_notifications("configuration")?.map(Arc::new);
        let disclaimer = config.compile_disclaimer("configuration")?.map(Arc::new);
        Ok(Snapshot {
            config,
            relay,
            policy,
            engine,
            notifications,
            disclaimer,
        })
    }

    /// The same configuration with another antivirus engine (a definitions update).
    pub fn with_engine(&self, engine: Arc<Engine>) -> Snapshot {
        Snapshot {
            config: self.config.clone(),
            relay: self.relay.clone(),
            policy: self.policy.clone(),
            engine,
            notifications: self.notifications.clone(),
            disclaimer: self.disclaimer.clone(),
        }
    }
}

/// The admin's switches (`portcullis ctl …`). They are runtime state, not configuration: a
/// restart starts with mail flowing.
#[derive(Debug, Default)]
pub struct Switches {
    delivery_paused: AtomicBool,
    rejecting_incoming: AtomicBool,
    disk_floor: AtomicBool,
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

    /// Whether free disk space is below the hard floor (new mail gets 452 4.3.1).
    pub fn disk_floor(&self) -> bool {
        self.disk_floor.load(Ordering::Relaxed)
    }

    /// Set by housekeeping when free space crosses the floor.
    pub fn set_disk_floor(&self, below: bool) {
        self.disk_floor.store(below, Ordering::Relaxed);
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
    /// Recent infected messages, for the outbreak alert.
    pub outbreak: crate::outbreak::OutbreakWatch,
    /// When the process started.
    pub started: std::time::Instant,
    /// Alert rate limiting and the alert log.
    pub alerter: Alerter,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Logging, when the binary set it up (level changes at run time, file retention).
    pub log: Option<Arc<portcullis_logging::LogHandle>>,
    /// The definitions updater, once the running gateway has started it.
    pub definitions: std::sync::OnceLock<Arc<crate::definitions::Updater>>,
}

impl Shared {
    /// Bundles the shared parts.
    pub fn new(
        snapshot: watch::Receiver<Arc<Snapshot>>,
        queue: Queue,
        log: Option<Arc<portcullis_logging::LogHandle>>,
    ) -> Shared {
        let alerter = Alerter::new(&snapshot.borrow().config.server.data_dir);
        Shared {
            alerter,
            metrics: crate::metrics::Metrics::new(),
            log,
            snapshot,
            queue,
            switches: Switches::default(),
            scan: ScanStage::default(),
            outbreak: crate::outbreak::OutbreakWatch::default(),
            started: std::time::Instant::now(),
            definitions: std::sync::OnceLock::new(),
        }
    }

    /// The current configuration snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Raises an alert: logged, recorded in the alert log, and (rate-limited) mailed to the
    /// admins through our own queue. Never blocks the caller.
    pub fn alert(self: &Arc<Self>, alert: Alert) {
        let snap = self.snapshot();
        let Delivery::Mail { suppressed } = self.alerter.decide(&snap.config.alerts, &alert) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let config = &snap.config;
            let from = config.alert_from();
            let text = compose_mail(
                &config.server.hostname,
                &from,
                &config.alerts.to,
                &alert,
                suppressed,
            );
            let envelope = portcullis_queue::Envelope {
                sender: String::new(),
                recipients: config.alerts.to.clone(),
                smtputf8: false,
                eight_bit: true,
                received_at: chrono::Utc::now(),
                client: None,
            };
            match crate::disposition::queue_scanned(&me, envelope, &text).await {
                Ok(entry) => {
                    tracing::info!(queue_id = %entry.id, kind = ?alert.kind, "alert mail queued");
                    me.queue.notify_new().notify_one();
                }
                Err(e) => {
                    tracing::error!(kind = ?alert.kind, error = %e, "cannot queue the alert mail")
                }
            }
        });
    }
}

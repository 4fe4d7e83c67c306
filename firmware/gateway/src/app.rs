//! Start-up, signals, reload and orderly shutdown of the appliance.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_queue::{Queue, QueueConfig};
use portcullis_smtp::{Server, ServerConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::alerts::{Alert, AlertKind};
use crate::config::{Config, ConfigError, ConfigSource, Overrides};
use crate::control::Control;
use crate::inbound::Inbound;
use crate::scheduler::{Scheduler, build_router};
use crate::state::{Shared, Snapshot};
use crate::supervise::{SupervisionEvent, Supervisor};

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another instance already uses this data directory.
    #[error(
        "another portcullis is already running with data directory {0} (its control socket answers)"
    )]
    AlreadyRunning(String),
    /// The queue could not be opened.
    #[error("cannot open the queue: {0}")]
    Queue(#[from] portcullis_queue::QueueError),
    /// STARTTLS material is unusable.
    #[error("STARTTLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Delivery routing could not be set up.
    #[error(transparent)]
    Routing(#[from] crate::scheduler::SchedulerError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Builds the SMTP server settings from a configuration.
pub fn server_config(config: &Config) -> Result<ServerConfig, crate::tls::TlsError> {
    let s = &config.smtp;
    let tls = if s.tls.enabled {
        Some(crate::tls::server_config(
            &s.tls.cert_file,
            &s.tls.key_file,
            &config.server.data_dir,
            &config.server.hostname,
        )?)
    } else {
        None
    };
    Ok(ServerConfig {
        hostname: config.server.hostname.clone(),
        max_message_size: s.max_message_size,
        max_recipients: s.max_recipients,
        max_line_length: s.max_line_length,
        command_timeout: s.command_timeout,
        data_timeout: s.data_timeout,
        max_sessions: s.max_sessions,
        max_sessions_per_ip: s.max_sessions_per_ip,
        max_errors: s.max_errors,
        banner_delay: s.banner_delay,
        tls,
        chunking: s.chunking,
        transcript: s.transcript,
        transcript_data: s.transcript_data,
    })
}

/// The file whose presence at start-up means the previous run did not shut down cleanly.
const RUNNING_MARKER: &str = "portcullis.running";

/// Runs the appliance until SIGTERM or SIGINT. Returns after an orderly shutdown.
///
/// `log` is the logging set up by the binary (for run-time level changes and file retention).
pub async fn run(
    source: ConfigSource,
    overrides: Overrides,
    log: Option<Arc<portcullis_logging::LogHandle>>,
) -> Result<(), StartError> {
    let config = source.load(&overrides)?;
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    // sled allows one process per database; say so plainly instead of failing obscurely.
    let socket = config.control_socket();
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        return Err(StartError::AlreadyRunning(data_dir.display().to_string()));
    }
    let marker = data_dir.join(RUNNING_MARKER);
    let previous_run = std::fs::read_to_string(&marker).ok();
    std::fs::write(
        &marker,
        format!(
            "pid {} started {}\n",
            std::process::id(),
            chrono::Utc::now().to_rfc3339()
        ),
    )
    .map_err(|source| StartError::DataDir {
        path: marker.display().to_string(),
        source,
    })?;

    let (queue, recovery) = Queue::open(
        &data_dir.join("queue"),
        QueueConfig {
            fsync: config.queue.fsync,
            suspect_after_crashes: config.queue.suspect_after_crashes,
            message_cache_bytes: config.queue.message_cache_bytes,
            log_segment_bytes: config.queue.log_segment_mib * 1024 * 1024,
        },
    )?;
    if !config.queue.fsync {
        tracing::warn!(
            "queue.fsync is off: a power cut can lose acknowledged mail (benchmarks only)"
        );
    }

    let (server_tx, server_rx) = watch::channel(Arc::new(server_config(&config)?));
    let mut listeners = Vec::new();
    for addr in &config.smtp.listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: *addr,
                source,
            })?;
        listeners.push((*addr, l));
    }
    let metrics_listener = if config.metrics.enabled {
        let addr = config.metrics.listen;
        Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?,
        )
    } else {
        None
    };
    let metrics_addr = config.metrics.listen;
    let router = build_router(&config)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;

    let grace = config.smtp.shutdown_grace;
    let smtp_addrs: Vec<String> = config.smtp.listen.iter().map(|a| a.to_string()).collect();
    let console = config.console.listen;
    let watchdog_config = config.watchdog.clone();
    let stuck_after = config.watchdog.stuck_after;
    let engine = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || crate::scan::load_engine(&config))
            .await
            .unwrap_or_else(|_| portcullis_av::Engine::builtin())
    };
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::new(config, Arc::new(engine))?));
    let snap_tx = Arc::new(snap_tx);
    let shared = Arc::new(Shared::new(snap_rx, queue, log));
    let updater = Arc::new(crate::definitions::Updater::new(
        shared.clone(),
        crate::definitions::EngineSwitch::new(snap_tx.clone()),
    ));
    let _ = shared.definitions.set(updater.clone());
    let shutdown = CancellationToken::new();
    let (supervisor, mut supervision_events) = Supervisor::new(shutdown.clone());

    let server = Arc::new(Server::new(
        server_rx,
        Arc::new(Inbound::new(shared.clone())),
    ));
    for (addr, listener) in listeners {
        let slot = ListenerSlot::new(addr, listener);
        let server = server.clone();
        supervisor.spawn(format!("smtp {addr}"), None, move |_hb, token| {
            let (server, slot) = (server.clone(), slot.clone());
            async move {
                let listener = slot.take_or_bind().await?;
                server.serve(listener, token, grace).await;
                Ok(())
            }
        });
    }
    let scheduler = Arc::new(Scheduler::new(shared.clone(), router));
    {
        let scheduler = scheduler.clone();
        supervisor.spawn("delivery", Some(stuck_after), move |hb, token| {
            let scheduler = scheduler.clone();
            async move {
                scheduler.run(hb, token, grace).await;
                Ok(())
            }
        });
    }
    let control = Arc::new(Control::new(shared.clone(), supervisor.clone()));
    {
        let socket = socket.clone();
        supervisor.spawn("control", None, move |_hb, token| {
            let (control, socket) = (control.clone(), socket.clone());
            async move {
                control
                    .serve(socket.clone(), token)
                    .await
                    .map_err(|e| format!("control socket {}: {e}", socket.display()))
            }
        });
    }
    {
        let shared = shared.clone();
        supervisor.spawn("housekeeping", Some(stuck_after), move |hb, token| {
            crate::housekeeping::run(shared.clone(), hb, token)
        });
    }

    supervisor.spawn("definitions", None, move |_hb, token| {
        updater.clone().run(token)
    });

    if let Some(listener) = metrics_listener {
        let slot = ListenerSlot::new(metrics_addr, listener);
        let shared = shared.clone();
        supervisor.spawn(
            format!("metrics {metrics_addr}"),
            None,
            move |_hb, token| {
                let (slot, shared) = (slot.clone(), shared.clone());
                async move {
                    let listener = slot.take_or_bind().await?;
                    crate::metrics::serve(listener, shared, token)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        );
    }
    let mut watchdog = open_hardware_watchdog(&shared, &watchdog_config);
    let systemd_watchdog = systemd_watchdog_interval();
    let pet_interval = match systemd_watchdog {
        Some(half) => half.min(watchdog_config.pet_interval),
        None => watchdog_config.pet_interval,
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(smtp = %smtp_addrs.join(","), console = %console, data_dir = %data_dir.display(), "portcullis ready");
    shared.alert(Alert::new(
        AlertKind::ServiceStart,
        "",
        "Portcullis started",
        format!("SMTP on {}", smtp_addrs.join(", ")),
    ));
    if let Some(previous) = previous_run {
        shared.alert(Alert::new(
            AlertKind::ImproperShutdown,
            "",
            "the previous run ended without an orderly shutdown (crash, kill or power cut)",
            format!(
                "Previous run: {}Recovery: {} message(s) in the queue, {} rebuilt, {} possibly delivered twice, {} corrupt file(s) set aside, {} partial transfer(s) removed.",
                previous, recovery.messages, recovery.rebuilt_entries, recovery.possibly_duplicated, recovery.corrupt, recovery.tmp_deleted
            ),
        ));
    }
    for id in &recovery.suspects_held {
        shared.alert(Alert::new(
            AlertKind::SuspectMessageHeld,
            id.to_string(),
            format!("message {id} held as suspect at start-up"),
            "It was being processed during repeated crashes.",
        ));
    }

    // Check health at least twice per pet interval, and pet when the interval is due within half
    // a tick, so tick jitter never stretches the time between pets to two intervals.
    let tick = (pet_interval / 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut health_tick = tokio::time::interval(tick);
    let mut last_pet = tokio::time::Instant::now() - pet_interval;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => reload(&source, &overrides, &snap_tx, &server_tx, &scheduler, &shared),
            Some(event) = supervision_events.recv() => report_supervision_event(&shared, event),
            _ = health_tick.tick() => {
                // Pet only while every part is healthy: a stuck or crash-looping gateway must
                // end in a restart (systemd) or a reboot (hardware), not limp on unnoticed.
                if supervisor.check() && last_pet.elapsed() + tick / 2 >= pet_interval {
                    last_pet = tokio::time::Instant::now();
                    if systemd_watchdog.is_some() {
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    }
                    if let Some(w) = watchdog.as_mut() {
                        if let Err(e) = w.pet() {
                            tracing::error!(error = %e, "cannot pet the hardware watchdog");
                        }
                    }
                }
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shared.alert(Alert::new(
        AlertKind::ServiceStop,
        "",
        "Portcullis stopped on request",
        String::new(),
    ));
    // Give the stop alert a moment to be committed before the queue closes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    supervisor.stopped().await;
    // The tracking log writes behind; what it still buffers goes to the state database now.
    shared.queue.tracking().flush();
    if let Some(w) = watchdog.take() {
        if let Err(e) = w.close() {
            tracing::error!(error = %e, "cannot disarm the hardware watchdog; the box may reboot");
        }
    }
    let _ = std::fs::remove_file(&marker);
    tracing::info!("portcullis stopped");
    Ok(())
}

/// A supervised listener's socket: the first run uses the one bound at start-up (so a bad
/// address stops start-up with a clear error); a restart binds the address again.
#[derive(Clone)]
struct ListenerSlot {
    addr: SocketAddr,
    first: Arc<std::sync::Mutex<Option<tokio::net::TcpListener>>>,
}

impl ListenerSlot {
    fn new(addr: SocketAddr, listener: tokio::net::TcpListener) -> ListenerSlot {
        ListenerSlot {
            addr,
            first: Arc::new(std::sync::Mutex::new(Some(listener))),
        }
    }

    async fn take_or_bind(&self) -> Result<tokio::net::TcpListener, String> {
        let taken = self.first.lock().expect("listener slot").take();
        match taken {
            Some(l) => Ok(l),
            None => tokio::net::TcpListener::bind(self.addr)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", self.addr)),
        }
    }
}

/// Opens the configured hardware watchdog. A watchdog that cannot be opened is an alert, not a
/// reason to stop accepting mail.
fn open_hardware_watchdog(
    shared: &Arc<Shared>,
    config: &crate::config::WatchdogSection,
) -> Option<portcullis_board::Watchdog> {
    if config.device.as_os_str().is_empty() {
        return None;
    }
    match portcullis_board::Watchdog::open(&config.device, config.timeout) {
        Ok(w) => Some(w),
        Err(e) => {
            shared.alert(Alert::new(
                AlertKind::ComponentFailure,
                "watchdog",
                "hardware watchdog unavailable",
                e.to_string(),
            ));
            None
        }
    }
}

/// Half of systemd's `WatchdogSec`, if systemd asked us for watchdog pings.
fn systemd_watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}

fn report_supervision_event(shared: &Arc<Shared>, event: SupervisionEvent) {
    let alert = match event {
        SupervisionEvent::PartFailed { name, reason } => Alert::new(
            AlertKind::ComponentFailure,
            name.clone(),
            format!("{name} failed and is being restarted"),
            reason,
        ),
        SupervisionEvent::PartStuck { name, silent_for } => Alert::new(
            AlertKind::ComponentFailure,
            name.clone(),
            format!(
                "{name} is stuck (no progress for {}s)",
                silent_for.as_secs()
            ),
            "The watchdogs are no longer petted while it is stuck.",
        ),
        SupervisionEvent::PartRecovered { name } => {
            tracing::info!(part = %name, "part recovered");
            return;
        }
    };
    shared.alert(alert);
}

/// SIGHUP: read the configuration again and swap it in whole, or keep the old one if the new
/// one is bad. Open sessions keep the settings they started with.
fn reload(
    source: &ConfigSource,
    overrides: &Overrides,
    snap_tx: &watch::Sender<Arc<Snapshot>>,
    server_tx: &watch::Sender<Arc<ServerConfig>>,
    scheduler: &Scheduler,
    shared: &Arc<Shared>,
) {
    let new = match source.load(overrides) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: keeping the running configuration");
            return;
        }
    };
    let old = snap_tx.borrow().config.clone();
    let server = match server_config(&new) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: keeping the running configuration");
            return;
        }
    };
    let router = match build_router(&new) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: keeping the running configuration");
            return;
        }
    };
    for (changed, key) in [
        (old.smtp.listen != new.smtp.listen, "smtp.listen"),
        (
            old.server.data_dir != new.server.data_dir,
            "server.data_dir",
        ),
        (old.console.listen != new.console.listen, "console.listen"),
        (
            old.metrics.listen != new.metrics.listen || old.metrics.enabled != new.metrics.enabled,
            "metrics",
        ),
        (
            old.watchdog.device != new.watchdog.device,
            "watchdog.device",
        ),
        (
            format!("{:?}", old.log) != format!("{:?}", new.log),
            "log (use `portcullis ctl log-level` for levels)",
        ),
        (old.queue.fsync != new.queue.fsync, "queue.fsync"),
        (
            old.definitions_dir() != new.definitions_dir()
                || old.antivirus.enabled != new.antivirus.enabled,
            "antivirus.definitions_dir / antivirus.enabled",
        ),
        (
            old.delivery.max_connections != new.delivery.max_connections,
            "delivery.max_connections",
        ),
    ] {
        if changed {
            tracing::warn!(
                key,
                "changed in the configuration but takes effect only after a restart"
            );
        }
    }
    let changed = changed_sections(&old, &new);
    server_tx.send_replace(Arc::new(server));
    scheduler.replace_router(router);
    let engine = snap_tx.borrow().engine.clone();
    let mut snapshot = match Snapshot::new(new, engine) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: keeping the running configuration");
            return;
        }
    };
    // Take the engine in use at the moment of the swap, under the channel's lock, so a
    // definitions update that landed meanwhile is not undone.
    snap_tx.send_modify(|current| {
        snapshot.engine = current.engine.clone();
        *current = Arc::new(snapshot);
    });
    tracing::info!(source = %source.name(), changed = %changed.join(","), "configuration reloaded");
    if !changed.is_empty() {
        shared.alert(Alert::new(
            AlertKind::ConfigChanged,
            changed.join(","),
            format!(
                "configuration reloaded (SIGHUP): changed {}",
                changed.join(", ")
            ),
            format!(
                "Source: {}\nChanged by: SIGHUP to process {}",
                source.name(),
                std::process::id()
            ),
        ));
    }
}

/// The top-level sections whose values differ, for the config-changed alert.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let d = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut out = Vec::new();
    for (name, changed) in [
        ("server", d(&old.server, &new.server)),
        ("smtp", d(&old.smtp, &new.smtp)),
        ("relay", d(&old.relay, &new.relay)),
        ("queue", d(&old.queue, &new.queue)),
        ("delivery", d(&old.delivery, &new.delivery)),
        ("dns", d(&old.dns, &new.dns)),
        ("bounces", d(&old.bounces, &new.bounces)),
        ("console", d(&old.console, &new.console)),
        ("alerts", d(&old.alerts, &new.alerts)),
        ("watchdog", d(&old.watchdog, &new.watchdog)),
        ("metrics", d(&old.metrics, &new.metrics)),
        ("log", d(&old.log, &new.log)),
        ("scan", d(&old.scan, &new.scan)),
        ("antivirus", d(&old.antivirus, &new.antivirus)),
        ("definitions", d(&old.definitions, &new.definitions)),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

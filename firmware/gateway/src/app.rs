//! Start-up, signals, reload and orderly shutdown of the appliance.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_queue::{Queue, QueueConfig};
use portcullis_smtp::{Server, ServerConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ConfigSource, Overrides};
use crate::control::Control;
use crate::inbound::Inbound;
use crate::scheduler::{Scheduler, build_router};
use crate::state::{Shared, Snapshot};

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
    #[error("another portcullis is already running with data directory {0} (its control socket answers)")]
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
    })
}

/// Runs the appliance until SIGTERM or SIGINT. Returns after an orderly shutdown.
pub async fn run(source: ConfigSource, overrides: Overrides) -> Result<(), StartError> {
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

    let (queue, recovery) = Queue::open(
        &data_dir.join("queue"),
        QueueConfig {
            fsync: config.queue.fsync,
            suspect_after_crashes: config.queue.suspect_after_crashes,
        },
    )?;
    if !recovery.suspects_held.is_empty() {
        tracing::warn!(count = recovery.suspects_held.len(), "suspect messages moved to hold at start-up");
    }
    if !config.queue.fsync {
        tracing::warn!("queue.fsync is off: a power cut can lose acknowledged mail (benchmarks only)");
    }

    let (server_tx, server_rx) = watch::channel(Arc::new(server_config(&config)?));
    let mut listeners = Vec::new();
    for addr in &config.smtp.listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr: *addr, source })?;
        listeners.push(l);
    }
    let router = build_router(&config)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;

    let grace = config.smtp.shutdown_grace;
    let smtp_addrs: Vec<String> = config.smtp.listen.iter().map(|a| a.to_string()).collect();
    let console = config.console.listen;
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::new(config)));
    let shared = Arc::new(Shared::new(snap_rx, queue));
    let shutdown = CancellationToken::new();

    let server = Arc::new(Server::new(server_rx, Arc::new(Inbound::new(shared.clone()))));
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let (server, token) = (server.clone(), shutdown.clone());
        tasks.spawn(async move { server.serve(l, token, grace).await });
    }
    let scheduler = Arc::new(Scheduler::new(shared.clone(), router));
    tasks.spawn(scheduler.clone().run(shutdown.clone(), grace));
    let control = Arc::new(Control::new(shared.clone()));
    {
        let token = shutdown.clone();
        let socket = socket.clone();
        tasks.spawn(async move {
            if let Err(e) = control.serve(socket.clone(), token).await {
                tracing::error!(socket = %socket.display(), error = %e, "control socket failed; queue commands will not work");
            }
        });
    }
    tracing::info!(smtp = %smtp_addrs.join(","), console = %console, data_dir = %data_dir.display(), "portcullis ready");

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => reload(&source, &overrides, &snap_tx, &server_tx, &scheduler),
        }
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!("portcullis stopped");
    Ok(())
}

/// SIGHUP: read the configuration again and swap it in whole, or keep the old one if the new
/// one is bad. Open sessions keep the settings they started with.
fn reload(
    source: &ConfigSource,
    overrides: &Overrides,
    snap_tx: &watch::Sender<Arc<Snapshot>>,
    server_tx: &watch::Sender<Arc<ServerConfig>>,
    scheduler: &Scheduler,
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
        (old.server.data_dir != new.server.data_dir, "server.data_dir"),
        (old.console.listen != new.console.listen, "console.listen"),
        (old.queue.fsync != new.queue.fsync, "queue.fsync"),
        (old.delivery.max_connections != new.delivery.max_connections, "delivery.max_connections"),
    ] {
        if changed {
            tracing::warn!(key, "changed in the configuration but takes effect only after a restart");
        }
    }
    server_tx.send_replace(Arc::new(server));
    scheduler.replace_router(router);
    snap_tx.send_replace(Arc::new(Snapshot::new(new)));
    tracing::info!(source = %source.name(), "configuration reloaded");
}

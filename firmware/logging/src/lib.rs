//! Logging for the Portcullis appliance: `tracing` events to standard error (journald), to daily log files with
//! a retention in days, and to a remote syslog server (RFC 5424 over UDP, TCP or TLS), with a level per component
//! that can be changed while the gateway runs.
//!
//! The binary calls [`init`] once with the `[log]` configuration and keeps the returned [`LogHandle`] for as long
//! as it runs: dropping it flushes the files and the syslog queue.

#![warn(missing_docs)]

pub mod config;
pub mod filter;

mod batch;
mod files;
mod syslog;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tracing::{Subscriber, warn};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

pub use config::{Facility, LogConfig, SyslogConfig, SyslogTransport};
pub use filter::{Component, LogLevel};

/// The environment variable that, when set and not empty, replaces the configured levels at start-up.
pub const ENV_VAR: &str = "PORTCULLIS_LOG";

/// How long dropping the [`LogHandle`] waits for queued syslog records to be sent.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A level directive (from the configuration, `PORTCULLIS_LOG` or `set_levels`) is not understood.
    #[error("invalid log level setting {directive:?}: {reason}")]
    BadDirective {
        /// The offending directive.
        directive: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The log directory cannot be created or the log file cannot be opened.
    #[error("cannot write log files in {}: {reason}", dir.display())]
    LogDir {
        /// The configured `dir`.
        dir: PathBuf,
        /// The underlying problem.
        reason: String,
    },
    /// Old log files could not be listed or deleted.
    #[error("cannot delete old log files in {}: {source}", dir.display())]
    Prune {
        /// The configured `dir`.
        dir: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The remote syslog settings are unusable.
    #[error("remote syslog server {address:?}: {reason}")]
    Syslog {
        /// The configured `address`.
        address: String,
        /// What is wrong.
        reason: String,
    },
    /// The CA file for the syslog TLS connection cannot be used.
    #[error("cannot load the syslog CA certificates from {}: {reason}", path.display())]
    CaFile {
        /// The configured `ca_file`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS library refused the client settings.
    #[error("TLS setup for remote syslog failed: {0}")]
    Tls(String),
    /// The thread that writes log lines could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Another logger was installed earlier in this process.
    #[error("logging was already set up in this process")]
    AlreadyInitialized,
    /// The logging system is gone (the process is shutting down), so levels can no longer change.
    #[error("cannot change log levels: logging has been shut down")]
    Reload,
}

/// Sets up logging for the process as `config` says and installs it as the global `tracing` subscriber.
///
/// `hostname` is the HOSTNAME of remote syslog records. If [`ENV_VAR`] is set, its directives replace `level`
/// and `components` (unnamed targets then log at `info`). Old log files are pruned once here. Call once, early in
/// `main`, and keep the handle alive until exit.
pub fn init(config: &LogConfig, hostname: &str) -> Result<LogHandle, LoggingError> {
    let env = std::env::var(ENV_VAR)
        .ok()
        .filter(|value| !value.trim().is_empty());
    let ansi = std::io::stderr().is_terminal();
    // Lines go to standard error from a thread of their own, in batches (one write for the lines
    // of about 10 ms) instead of one write per line on the thread that logs, and without waking
    // that thread for every line: at a few thousand messages a second both were a noticeable
    // part of the CPU. Not lossy: a logging thread that falls behind slows the loggers rather
    // than dropping lines (see batch.rs).
    let (stderr, stderr_guard) =
        batch::start("log-stderr", std::io::stderr()).map_err(LoggingError::Thread)?;
    let (subscriber, mut handle) = assemble(config, hostname, env.as_deref(), stderr, ansi)?;
    handle._stderr_guard = Some(stderr_guard);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| LoggingError::AlreadyInitialized)?;
    if let Err(e) = handle.prune_old_files(SystemTime::now()) {
        warn!(error = %e, "pruning old log files failed");
    }
    Ok(handle)
}

/// Builds the subscriber without installing it; `stderr` is where the standard error output goes (tests capture
/// it), `ansi` whether it gets colours.
fn assemble<W>(
    config: &LogConfig,
    hostname: &str,
    env: Option<&str>,
    stderr: W,
    ansi: bool,
) -> Result<(impl Subscriber + Send + Sync + 'static, LogHandle), LoggingError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let configured = filter::Directives::from_config(config.level, &config.components);
    let initial = match env {
        Some(text) => {
            let mut directives = filter::Directives::from_config(LogLevel::Info, &BTreeMap::new());
            directives.apply(text)?;
            directives
        }
        None => configured,
    };
    let (filter_layer, filter) = reload::Layer::new(initial.to_filter()?);
    let stderr_layer = config
        .stderr
        .then(|| fmt::layer().with_writer(stderr).with_ansi(ansi));
    let (file_layer, files) = if config.dir.as_os_str().is_empty() {
        (None, None)
    } else {
        let (writer, guard) = files::open(&config.dir)?;
        let files = LogFiles {
            dir: config.dir.clone(),
            retention_days: config.retention_days,
            _guard: guard,
        };
        (
            Some(fmt::layer().with_writer(writer).with_ansi(false)),
            Some(files),
        )
    };
    let (syslog_layer, syslog) = match &config.syslog {
        Some(syslog) => {
            let (layer, handle) = syslog::start(syslog, hostname)?;
            (Some(layer), Some(handle))
        }
        None => (None, None),
    };
    let subscriber = Registry::default()
        .with(filter_layer)
        .with(stderr_layer)
        .with(file_layer)
        .with(syslog_layer);
    let handle = LogHandle {
        filter,
        current: Mutex::new(initial.clone()),
        initial,
        files,
        syslog,
        _stderr_guard: None,
    };
    Ok((subscriber, handle))
}

/// The log files' directory, its retention and the guard that flushes the file writer when dropped.
struct LogFiles {
    dir: PathBuf,
    retention_days: u32,
    _guard: WorkerGuard,
}

/// The running logging system: change levels, prune old files, read the syslog drop counter.
///
/// Keep it alive until the process exits; dropping it sends what is still queued for syslog (waiting at most
/// two seconds) and flushes the log file.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    initial: filter::Directives,
    current: Mutex<filter::Directives>,
    files: Option<LogFiles>,
    syslog: Option<syslog::SyslogHandle>,
    /// Flushes standard error's writer when the handle is dropped.
    _stderr_guard: Option<batch::BatchGuard>,
}

impl LogHandle {
    /// Changes log levels now, without a restart, on top of the levels in force.
    ///
    /// `directives` is comma-separated: component names (`smtp=debug,queue=trace`), a bare level for everything
    /// else (`debug`), tracing targets (`portcullis_gateway::scheduler=trace`) or any other EnvFilter directive.
    /// A setting for a component replaces its earlier one. Nothing changes if any directive is invalid.
    pub fn set_levels(&self, directives: &str) -> Result<(), LoggingError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = current.clone();
        next.apply(directives)?;
        self.install(&next)?;
        *current = next;
        Ok(())
    }

    /// Returns to the levels the process started with (configuration or `PORTCULLIS_LOG`).
    pub fn reset_levels(&self) -> Result<(), LoggingError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        self.install(&self.initial)?;
        *current = self.initial.clone();
        Ok(())
    }

    /// The levels in force as an EnvFilter string, e.g. `info,portcullis_smtp=debug`, for `portcullis status`.
    pub fn levels(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_string()
    }

    fn install(&self, directives: &filter::Directives) -> Result<(), LoggingError> {
        let filter = directives.to_filter()?;
        self.filter.reload(filter).map_err(|_| LoggingError::Reload)
    }

    /// Deletes log files whose day ended more than `retention_days` before `now`; returns how many were deleted.
    /// Does nothing when logging to files is off. Call it daily from housekeeping.
    pub fn prune_old_files(&self, now: SystemTime) -> Result<usize, LoggingError> {
        let Some(files) = &self.files else {
            return Ok(0);
        };
        let deleted = files::prune(&files.dir, files.retention_days, now)?;
        for path in &deleted {
            tracing::info!(path = %path.display(), retention_days = files.retention_days, "deleted old log file");
        }
        Ok(deleted.len())
    }

    /// Remote syslog records lost since start because the queue was full or the server unreachable (0 without
    /// syslog), for metrics and alerts.
    pub fn syslog_dropped(&self) -> u64 {
        self.syslog
            .as_ref()
            .map_or(0, syslog::SyslogHandle::dropped)
    }

    /// Waits up to `limit` until the records queued for remote syslog so far have been handed to the network.
    /// Returns false if that did not happen in time (or there is no syslog).
    pub fn flush_syslog(&self, limit: Duration) -> bool {
        self.syslog
            .as_ref()
            .is_some_and(|syslog| syslog.flush(limit))
    }
}

impl Drop for LogHandle {
    fn drop(&mut self) {
        if let Some(syslog) = &self.syslog {
            syslog.flush(SHUTDOWN_FLUSH);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing::{debug, info, trace};

    use super::*;

    /// Collects everything the stderr layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn the_handle_can_be_shared_with_housekeeping_and_the_control_socket() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<LogHandle>();
    }

    #[test]
    fn set_levels_changes_what_is_emitted_without_restart() {
        let captured = Captured::default();
        let (subscriber, handle) =
            assemble(&LogConfig::default(), "mx", None, captured.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            debug!(target: "portcullis_smtp::session", "hidden-before");
            handle.set_levels("smtp=debug").unwrap();
            debug!(target: "portcullis_smtp::session", "smtp-debug-shown");
            debug!(target: "portcullis_queue", "queue-debug-hidden");
            handle.set_levels("queue=trace").unwrap();
            trace!(target: "portcullis_queue::spool", "queue-trace-shown");
            debug!(target: "portcullis_smtp", "smtp-still-debug");
            handle.reset_levels().unwrap();
            debug!(target: "portcullis_smtp", "hidden-after-reset");
            info!(target: "portcullis_smtp", "info-always");
        });
        let text = captured.text();
        for shown in [
            "smtp-debug-shown",
            "queue-trace-shown",
            "smtp-still-debug",
            "info-always",
        ] {
            assert!(text.contains(shown), "{shown} missing in {text}");
        }
        for hidden in ["hidden-before", "queue-debug-hidden", "hidden-after-reset"] {
            assert!(!text.contains(hidden), "{hidden} present in {text}");
        }
        assert_eq!(handle.levels(), "info");
    }

    #[test]
    fn raw_directives_and_global_level_are_accepted_by_set_levels() {
        let captured = Captured::default();
        let (subscriber, handle) =
            assemble(&LogConfig::default(), "mx", None, captured.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            handle
                .set_levels("warn,portcullis_gateway::scheduler=trace")
                .unwrap();
            info!(target: "portcullis_queue", "info-now-hidden");
            trace!(target: "portcullis_gateway::scheduler", "scheduler-trace-shown");
        });
        let text = captured.text();
        assert!(!text.contains("info-now-hidden"), "{text}");
        assert!(text.contains("scheduler-trace-shown"), "{text}");
        assert_eq!(handle.levels(), "warn,portcullis_gateway::scheduler=trace");
    }

    #[test]
    fn invalid_set_levels_is_refused_and_keeps_the_old_levels() {
        let (_subscriber, handle) = assemble(
            &LogConfig::default(),
            "mx",
            None,
            Captured::default(),
            false,
        )
        .unwrap();
        handle.set_levels("smtp=debug").unwrap();
        let error = handle.set_levels("queue=chatty").unwrap_err();
        assert!(
            matches!(error, LoggingError::BadDirective { .. }),
            "{error}"
        );
        assert_eq!(handle.levels(), "info,portcullis_smtp=debug");
    }

    #[test]
    fn environment_directives_replace_the_configured_levels() {
        let config = LogConfig {
            level: LogLevel::Error,
            components: BTreeMap::from([(Component::Queue, LogLevel::Trace)]),
            ..LogConfig::default()
        };
        let captured = Captured::default();
        let (subscriber, handle) =
            assemble(&config, "mx", Some("smtp=debug"), captured.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            debug!(target: "portcullis_smtp", "smtp-debug-shown");
            info!(target: "portcullis_delivery", "delivery-info-shown");
            debug!(target: "portcullis_queue", "queue-debug-hidden");
        });
        let text = captured.text();
        assert!(text.contains("smtp-debug-shown"), "{text}");
        assert!(text.contains("delivery-info-shown"), "{text}");
        assert!(!text.contains("queue-debug-hidden"), "{text}");
        assert_eq!(handle.levels(), "info,portcullis_smtp=debug");
    }

    #[test]
    fn configured_component_levels_apply_from_the_start() {
        let config = LogConfig {
            level: LogLevel::Warn,
            components: BTreeMap::from([(Component::Control, LogLevel::Debug)]),
            ..LogConfig::default()
        };
        let captured = Captured::default();
        let (subscriber, _handle) = assemble(&config, "mx", None, captured.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            debug!(target: "portcullis_gateway::control", "control-debug-shown");
            info!(target: "portcullis_gateway::app", "gateway-info-hidden");
        });
        let text = captured.text();
        assert!(text.contains("control-debug-shown"), "{text}");
        assert!(!text.contains("gateway-info-hidden"), "{text}");
    }

    #[test]
    fn stderr_output_has_no_colour_codes_when_not_a_terminal() {
        let captured = Captured::default();
        let (subscriber, _handle) =
            assemble(&LogConfig::default(), "mx", None, captured.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            info!(target: "portcullis_smtp", session_id = 7, "plain line");
        });
        let text = captured.text();
        assert!(text.contains("plain line session_id=7"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }

    #[test]
    fn events_reach_the_daily_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            dir: dir.path().join("logs"),
            stderr: false,
            ..LogConfig::default()
        };
        let (subscriber, handle) =
            assemble(&config, "mx", None, Captured::default(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            info!(target: "portcullis_queue", queue_id = "Q1", "message committed");
        });
        assert_eq!(handle.prune_old_files(SystemTime::now()).unwrap(), 0);
        drop(handle);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.contains("message committed queue_id=\"Q1\""), "{text}");
    }

    #[test]
    fn an_unusable_log_directory_is_reported_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let config = LogConfig {
            dir: blocker.join("logs"),
            ..LogConfig::default()
        };
        let error = assemble(&config, "mx", None, Captured::default(), false)
            .err()
            .unwrap();
        assert!(matches!(error, LoggingError::LogDir { .. }), "{error}");
    }
}

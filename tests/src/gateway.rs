//! The gateway under test: a TOML config written into a temporary directory and a guarded `portcullis run`.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use toml::{Table, Value};

use crate::cli::{CliOutput, QueueEntry, binary, portcullis, queue_entries};
use crate::process::{die_with_parent, read_lossy, send_signal, tail, wait_timeout};
use crate::sink::Sink;
use crate::wait::poll_for;

/// How long a starting daemon may take to answer its first banner (debug build, TLS key generation, recovery).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The host name every test gateway uses, so Received headers and DSNs can be checked for it.
pub const GATEWAY_HOSTNAME: &str = "gw.test";

/// A gateway configuration, built key by key on top of test defaults and rendered as TOML.
///
/// The listen addresses and data directory are filled in by [`Daemon::start`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    document: Table,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayConfig {
    /// Test defaults: fast scheduler polling and retries, short connect time-outs, a fixed host name.
    pub fn new() -> GatewayConfig {
        GatewayConfig {
            document: Table::new(),
        }
        .set("server.hostname", GATEWAY_HOSTNAME)
        .set("queue.poll_interval", "200ms")
        .set("queue.retry_schedule", vec!["2s"])
        .set("delivery.connect_timeout", "5s")
        .set("delivery.command_timeout", "30s")
        .set("delivery.data_timeout", "30s")
        .set("smtp.shutdown_grace", "5s")
    }

    /// Sets a dotted key (`"queue.retry_schedule"`), creating the tables on the way.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> GatewayConfig {
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts.pop().expect("non-empty key");
        let mut table = &mut self.document;
        for part in parts {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("config key {key}: {part} is not a table"));
        }
        table.insert(leaf.to_string(), value.into());
        self
    }

    /// Sends all mail that no route matches to `sink` (`delivery.default_route`).
    pub fn relay_to(self, sink: &Sink) -> GatewayConfig {
        self.set("delivery.default_route", vec![sink.addr()])
    }

    /// Appends a `[[delivery.routes]]` entry.
    pub fn route(mut self, domain: &str, hosts: &[String]) -> GatewayConfig {
        let mut entry = Table::new();
        entry.insert("domain".into(), domain.into());
        entry.insert(
            "hosts".into(),
            Value::Array(hosts.iter().map(|h| Value::from(h.as_str())).collect()),
        );
        let delivery = self
            .document
            .entry("delivery")
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("delivery is a table");
        let routes = delivery
            .entry("routes")
            .or_insert_with(|| Value::Array(Vec::new()));
        routes
            .as_array_mut()
            .expect("delivery.routes is an array")
            .push(Value::Table(entry));
        self
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.document).expect("config renders as TOML")
    }
}

/// How to launch the daemon, beyond its config.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Extra environment variables (e.g. `PORTCULLIS_FAULT_INJECTION=1`).
    pub env: Vec<(String, String)>,
    /// Put the queue directory on a tmpfs of this many MiB, mounted in a private mount namespace
    /// of the daemon's own (needs root and `unshare`): a small file system the test can fill.
    pub queue_tmpfs_mib: Option<u64>,
}

/// A running `portcullis run`, its config, data directory and log; killed (SIGKILL) when dropped.
///
/// If the test is panicking when the guard drops, the tail of the daemon's log is printed so the
/// failure report shows what the gateway said.
pub struct Daemon {
    dir: TempDir,
    config: GatewayConfig,
    config_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    smtp_port: u16,
    console_port: u16,
    metrics_port: u16,
    child: Option<Child>,
    starts: u32,
    run_args: Vec<String>,
    launch: Launch,
}

impl Daemon {
    /// Writes `config` (plus fresh listen ports and a data directory) and starts the daemon;
    /// returns once its SMTP port answers with a 220 banner.
    pub fn start(config: GatewayConfig) -> Daemon {
        Daemon::start_with_args(config, &[])
    }

    /// Like [`Daemon::start`], with extra `portcullis run` arguments (e.g. `--relay HOST:PORT`).
    pub fn start_with_args(config: GatewayConfig, run_args: &[&str]) -> Daemon {
        Daemon::start_with_launch(config, run_args, Launch::default())
    }

    /// Like [`Daemon::start`], with extra environment variables for the daemon.
    pub fn start_with_env(config: GatewayConfig, env: &[(&str, &str)]) -> Daemon {
        let launch = Launch {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Launch::default()
        };
        Daemon::start_with_launch(config, &[], launch)
    }

    /// The general form: extra `run` arguments and launch options.
    pub fn start_with_launch(config: GatewayConfig, run_args: &[&str], launch: Launch) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-e2e-")
            .tempdir()
            .expect("tempdir");
        let smtp_port = crate::free_port();
        let console_port = crate::free_port();
        let metrics_port = crate::free_port();
        let mut daemon = Daemon {
            config_path: dir.path().join("portcullis.toml"),
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("portcullis.log"),
            dir,
            config: GatewayConfig::new(),
            smtp_port,
            console_port,
            metrics_port,
            child: None,
            starts: 0,
            run_args: run_args.iter().map(|a| a.to_string()).collect(),
            launch,
        };
        daemon.write_config(config);
        daemon.spawn();
        daemon
    }

    /// Rewrites the config file (listen addresses and data directory forced to this daemon's own).
    pub fn write_config(&mut self, config: GatewayConfig) {
        let config = config
            .set("server.data_dir", self.data_dir.display().to_string())
            .set("smtp.listen", vec![format!("127.0.0.1:{}", self.smtp_port)])
            .set("console.listen", format!("127.0.0.1:{}", self.console_port))
            // Every listener gets its own port: tests run several daemons side by side.
            .set("metrics.listen", format!("127.0.0.1:{}", self.metrics_port));
        std::fs::write(&self.config_path, config.to_toml()).expect("write config");
        self.config = config;
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        writeln!(
            log,
            "===== e2e: start #{} of portcullis run --config {} {}",
            self.starts,
            self.config_path.display(),
            self.run_args.join(" ")
        )
        .expect("write log");
        let mut command = match self.launch.queue_tmpfs_mib {
            None => Command::new(binary()),
            Some(mib) => {
                // A private mount namespace keeps the tmpfs invisible to (and harmless for) the
                // host; `exec` makes portcullis itself the child we signal and kill.
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(format!(
                        "mkdir -p \"$1\" && mount -t tmpfs -o size={mib}m portcullis-e2e \"$1\" && shift && exec \"$@\""
                    ))
                    .arg("sh")
                    .arg(self.data_dir.join("queue"))
                    .arg(binary());
                c
            }
        };
        let child = die_with_parent(
            command
                .envs(
                    self.launch
                        .env
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .arg("run")
                .arg("--config")
                .arg(&self.config_path)
                .args(&self.run_args)
                .env(
                    "PORTCULLIS_LOG",
                    std::env::var("PORTCULLIS_E2E_LOG").unwrap_or_else(|_| "info".into()),
                )
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log),
        )
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary().display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits for a 220 banner on the SMTP port; panics with the log if the daemon exits or stays silent.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                self.child = None;
                panic!(
                    "portcullis run exited with {status} before it was ready; log:\n{}",
                    tail(&self.log(), 80)
                );
            }
            if let Some(banner) = banner(self.smtp_port) {
                assert!(
                    banner.starts_with("220"),
                    "daemon greeted with {banner:?} instead of 220"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready after {START_TIMEOUT:?}; log:\n{}",
                tail(&self.log(), 80)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The inbound SMTP port on 127.0.0.1.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// The data directory (queue, control socket).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The config file path.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temporary directory holding config, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config currently written.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    /// Everything the daemon has logged so far (all starts).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// kill -9: the crash the queue must survive.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same config, ports and data directory.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Sends a signal to the running daemon.
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.pid(), signal);
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("daemon is running");
        match wait_timeout(&mut child, timeout) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "portcullis did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    tail(&self.log(), 80)
                );
            }
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Rewrites the config and sends SIGHUP.
    pub fn reload(&mut self, config: GatewayConfig) {
        self.write_config(config);
        self.signal(libc::SIGHUP);
    }

    /// `portcullis queue ARGS… --data-dir DIR`.
    pub fn queue(&self, args: &[&str]) -> CliOutput {
        self.cli("queue", args)
    }

    /// `portcullis ctl ARGS… --data-dir DIR`.
    pub fn ctl(&self, args: &[&str]) -> CliOutput {
        self.cli("ctl", args)
    }

    /// `portcullis ARGS… --data-dir DIR` for any command that talks to this daemon
    /// (`status`, `alerts`, …).
    pub fn cli_raw(&self, args: &[&str]) -> CliOutput {
        let data_dir = self.data_dir.display().to_string();
        let mut full = args.to_vec();
        full.extend_from_slice(&["--data-dir", &data_dir]);
        portcullis(&full)
    }

    fn cli(&self, group: &str, args: &[&str]) -> CliOutput {
        let data_dir = self.data_dir.display().to_string();
        let mut full = vec![group];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--data-dir", &data_dir]);
        portcullis(&full)
    }

    /// `queue list --json`, parsed.
    pub fn queue_list(&self) -> Vec<QueueEntry> {
        queue_entries(&self.queue(&["list", "--json"]))
    }

    /// Waits until `queue list --json` shows an empty queue; on time-out, says what is left.
    pub fn wait_queue_empty(&self, timeout: Duration) {
        if poll_for(timeout, || self.queue_list().is_empty().then_some(())).is_none() {
            let left = self.queue_list();
            let sample: Vec<String> = left.iter().take(5).map(|e| e.0.to_string()).collect();
            panic!(
                "queue not empty after {timeout:?}: {} message(s) left, e.g.\n{}",
                left.len(),
                sample.join("\n")
            );
        }
    }

    /// Peak resident memory of the running daemon in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // Keep config, data directory and full log of a failed test for a post-mortem.
            self.dir.disable_cleanup(true);
            eprintln!(
                "----- portcullis log, last 150 lines (kept in {}) -----\n{}\n----- config -----\n{}",
                self.dir.path().display(),
                tail(&self.log(), 150),
                self.config.to_toml()
            );
        } else if std::env::var_os("PORTCULLIS_E2E_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("portcullis e2e: kept {}", self.dir.path().display());
        }
    }
}

/// The first line a server on `port` sends, or `None` if nothing answers (yet).
pub fn banner(port: u16) -> Option<String> {
    let stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if line.is_empty() {
        return None;
    }
    let _ = (&stream).write_all(b"QUIT\r\n");
    Some(line.trim_end().to_string())
}

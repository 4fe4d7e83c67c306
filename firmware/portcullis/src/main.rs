//! `portcullis`: the mail-security appliance in one binary.
//!
//! This file only parses the command line and hands over to the gateway library.

use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, not glibc's malloc: the gateway's threads pass messages to each other (SMTP session,
/// spool writer, delivery, tracking), so much memory is freed on another thread than the one that
/// allocated it. glibc's per-thread cache takes only chunks up to 1 KiB, seven of a size; every
/// other such free takes the lock of the arena the chunk came from, and under load those locks
/// collided at 1.7 futex calls per message. jemalloc's thread caches hold chunks up to 32 KiB
/// and give them back to their arena in batches.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};
use portcullis_av::{ScanOptions, scan_paths_with};
use portcullis_gateway::config::{ConfigSource, Overrides, control_socket_path};
use portcullis_gateway::control::{self, ClientError, QueueView, Request, Response};
use portcullis_gateway::scan::{FileResult, MailDecomposer, check_files};

/// Exit code when the daemon refused an action (unknown queue id…).
const EXIT_REFUSED: u8 = 1;
/// Exit code when no daemon is running on the data directory.
const EXIT_NOT_RUNNING: u8 = 3;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Portcullis mail-security appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance (SMTP gateway, queues, delivery, control socket).
    Run {
        /// TOML configuration file (default: the embedded default configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (queues, tracking log, TLS material, control socket).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// SMTP listen address, replacing smtp.listen.
        #[arg(long)]
        smtp_listen: Option<std::net::SocketAddr>,
        /// Web console listen address.
        #[arg(long)]
        console_listen: Option<std::net::SocketAddr>,
        /// Default route for all mail (HOST:PORT), e.g. the internal mail server.
        #[arg(long)]
        relay: Option<String>,
    },
    /// Check a configuration file and exit (0 valid, 1 invalid).
    CheckConfig {
        /// TOML configuration file (default: the embedded default configuration).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Inspect and act on the queues of the running instance.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        /// Data directory of the running instance (its control socket lives there).
        #[arg(long, global = true, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// Switch mail flow of the running instance.
    Ctl {
        #[command(subcommand)]
        action: CtlAction,
        /// Data directory of the running instance.
        #[arg(long, global = true, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// Run the whole scanning pipeline (decomposition, content policy, antivirus) offline on
    /// saved messages and print each verdict. Exit 0 when every message would be delivered
    /// unchanged (deliver or log), 1 when any verdict is something else, 2 on error.
    Check {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// TOML configuration file whose [scan] and [antivirus] sections apply (default: the
        /// embedded default configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Messages (RFC 5322 files, e.g. .eml).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Scan files like clamscan: `PATH: NAME FOUND` or `PATH: OK`, descending into archives
    /// and mail. Exit 0 clean, 1 found, 2 error.
    Scan {
        /// Descend into subdirectories.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Signature file or directory (default: the installed definitions in --data-dir, else
        /// the built-in EICAR test signature only).
        #[arg(long)]
        defs: Option<PathBuf>,
        /// Data directory whose definitions store is used without --defs.
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        /// Report files whose unpacking stopped at a limit (nesting, files, size, ratio, time) as
        /// Heuristics.Limits.Exceeded.* FOUND, like clamscan's option of the same name.
        #[arg(long)]
        alert_exceeds_max: bool,
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List, show, release or delete quarantined messages of the running instance.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
        /// Data directory of the running instance.
        #[arg(long, global = true, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// Show the newest alerts from the alert log.
    Alerts {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Data directory of the running instance.
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// Antivirus definitions: publisher tools (keygen, build, serve) and the running
    /// instance's updater (update-now, status, rollback).
    Defs {
        #[command(subcommand)]
        action: DefsAction,
    },
    /// The serial console: the first-boot setup wizard while the appliance is not set up, the
    /// admin menu afterwards. Reads standard input, writes standard output (the serial TTY).
    /// Exit 0 when the input ends, 1 when the setup was cancelled (nothing written).
    Console {
        /// The appliance data root (config/, system/, data/).
        #[arg(long, default_value = portcullis_console::DEFAULT_ROOT)]
        root: PathBuf,
        /// Print the system commands (systemctl, ping, ip, journalctl) instead of running them.
        #[arg(long)]
        dry_run: bool,
        /// Time zone database the time zone answer is checked against.
        #[arg(long, default_value = portcullis_console::DEFAULT_ZONEINFO)]
        zoneinfo: PathBuf,
    },
    /// Show the running instance's status: parts, queues, switches.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Data directory of the running instance.
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DefsAction {
    /// Generate a publisher key pair: the secret key at OUT (mode 0600) and the public key at
    /// OUT.pub, to pin in `definitions.pinned_keys`.
    Keygen {
        /// Secret key file to create (never overwritten).
        out: PathBuf,
    },
    /// Build and sign a definitions package from the signature files in a directory.
    Build {
        /// Directory with .hdb/.hsb/.mdb/.msb/.ndb files.
        #[arg(long)]
        from: PathBuf,
        /// Secret key file (from `defs keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Package version; must exceed every version published before.
        #[arg(long)]
        version: u64,
        /// Days until appliances refuse the package as expired.
        #[arg(long, default_value_t = 7)]
        expires: u32,
        /// Output directory (new or empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve a package directory over HTTP, or HTTPS with --tls-cert and --tls-key.
    Serve {
        /// The package directory (what `defs build --out` wrote).
        dir: PathBuf,
        /// Address to listen on, e.g. 0.0.0.0:8080.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// PEM certificate chain for HTTPS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for HTTPS.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Ask the running instance to try an update now and wait for the outcome.
    UpdateNow {
        /// Data directory of the running instance.
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// The running instance's definitions: installed version, last attempt and result, next attempt.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Data directory of the running instance.
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// Switch the running instance back to the previous definitions version.
    Rollback {
        /// Data directory of the running instance.
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// List queued messages.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one message and its tracking record.
    Show {
        /// Queue id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a message on hold.
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held message for delivery.
    Release {
        /// Queue id.
        id: String,
    },
    /// Delete a message without bouncing it.
    Delete {
        /// Queue id.
        id: String,
    },
    /// Retry every deferred message now.
    Flush,
}

#[derive(Subcommand)]
enum QuarantineAction {
    /// List quarantined messages.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one quarantined message: envelope, verdict, reasons and headers.
    Show {
        /// Quarantine id.
        id: String,
    },
    /// Queue a quarantined message for delivery (it is not scanned again).
    Release {
        /// Quarantine id.
        id: String,
    },
    /// Delete a quarantined message.
    Delete {
        /// Quarantine id.
        id: String,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Stop delivering (mail is still accepted and queued).
    PauseDelivery,
    /// Resume delivering.
    ResumeDelivery,
    /// Refuse new mail with 450 4.3.2 (senders retry later).
    RejectIncoming,
    /// Accept new mail again.
    AcceptIncoming,
    /// Show or change log levels without a restart, e.g. `smtp=debug,queue=trace`.
    LogLevel {
        /// Level directives: a level, or component=level pairs (smtp, queue, delivery, scan, defs,
        /// console, control, supervise, gateway, av, transcript).
        directives: Option<String>,
        /// Back to the configured levels.
        #[arg(long, conflicts_with = "directives")]
        reset: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            data_dir,
            smtp_listen,
            console_listen,
            relay,
        } => {
            let source = config
                .map(ConfigSource::File)
                .unwrap_or(ConfigSource::Embedded);
            let overrides = Overrides {
                data_dir,
                smtp_listen,
                console_listen,
                relay,
            };
            // Read the configuration once here for the logging settings; `run` reads it again
            // (and on every SIGHUP) as its own.
            let settings = match source.load(&overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let log = match portcullis_logging::init(&settings.log, &settings.server.hostname) {
                Ok(l) => std::sync::Arc::new(l),
                Err(e) => {
                    eprintln!("portcullis: logging: {e}");
                    return ExitCode::FAILURE;
                }
            };
            install_panic_logger();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("portcullis: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(portcullis_gateway::app::run(source, overrides, Some(log))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "portcullis cannot start");
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => {
            let source = config
                .map(ConfigSource::File)
                .unwrap_or(ConfigSource::Embedded);
            match source.load(&Overrides::default()) {
                Ok(_) => {
                    println!("{}: ok", source.name());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Queue { action, data_dir } => {
            let (request, json) = match action {
                QueueAction::List { json } => (Request::QueueList, json),
                QueueAction::Show { id, json } => (Request::QueueShow { id }, json),
                QueueAction::Hold { id } => (Request::QueueHold { id }, false),
                QueueAction::Release { id } => (Request::QueueRelease { id }, false),
                QueueAction::Delete { id } => (Request::QueueDelete { id }, false),
                QueueAction::Flush => (Request::QueueFlush, false),
            };
            talk(&data_dir, request, json)
        }
        Command::Ctl { action, data_dir } => {
            let request = match action {
                CtlAction::PauseDelivery => Request::PauseDelivery,
                CtlAction::ResumeDelivery => Request::ResumeDelivery,
                CtlAction::RejectIncoming => Request::RejectIncoming,
                CtlAction::AcceptIncoming => Request::AcceptIncoming,
                CtlAction::LogLevel { directives, reset } => {
                    Request::LogLevel { directives, reset }
                }
            };
            talk(&data_dir, request, false)
        }
        Command::Check {
            json,
            config,
            files,
        } => check(config, json, &files),
        Command::Scan {
            recursive,
            defs,
            data_dir,
            alert_exceeds_max,
            paths,
        } => {
            let engine = match portcullis_gateway::scan::engine_for_cli(defs.as_deref(), &data_dir)
            {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    return ExitCode::from(2);
                }
            };
            let options = ScanOptions {
                recursive,
                alert_exceeds_max,
                ..Default::default()
            };
            let decomposer = MailDecomposer {
                limits: Default::default(),
            };
            let summary = scan_paths_with(
                &engine,
                &paths,
                &options,
                &decomposer,
                &mut std::io::stdout().lock(),
            );
            ExitCode::from(summary.exit_code() as u8)
        }
        Command::Quarantine { action, data_dir } => {
            let (request, json) = match action {
                QuarantineAction::List { json } => (Request::QuarantineList, json),
                QuarantineAction::Show { id } => (Request::QuarantineShow { id }, true),
                QuarantineAction::Release { id } => (Request::QuarantineRelease { id }, false),
                QuarantineAction::Delete { id } => (Request::QuarantineDelete { id }, false),
            };
            talk(&data_dir, request, json)
        }
        Command::Defs { action } => defs(action),
        Command::Status { json, data_dir } => talk(&data_dir, Request::Status, json),
        Command::Console {
            root,
            dry_run,
            zoneinfo,
        } => console(root, zoneinfo, dry_run),
        Command::Alerts {
            limit,
            json,
            data_dir,
        } => talk(&data_dir, Request::Alerts { limit: Some(limit) }, json),
    }
}

/// `portcullis defs …`: publisher tools run here; updater actions go to the running instance.
fn defs(action: DefsAction) -> ExitCode {
    match action {
        DefsAction::Keygen { out } => match portcullis_defs::keygen(&out) {
            Ok(generated) => {
                println!(
                    "secret key: {} (keep it off the appliances)",
                    generated.secret_path.display()
                );
                println!("public key: {}", generated.public_path.display());
                println!("key id:     {}", generated.public.key_id());
                println!(
                    "pin it with: pinned_keys = [\"{}\"]",
                    generated.public.to_hex()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        },
        DefsAction::Build {
            from,
            key,
            version,
            expires,
            out,
        } => {
            let built = portcullis_defs::PublisherKey::load(&key).and_then(|key| {
                let expires = chrono::Utc::now() + chrono::Duration::days(i64::from(expires));
                portcullis_defs::build(&from, &key, version, expires, &out)
            });
            match built {
                Ok(manifest) => {
                    println!(
                        "built definitions version {} in {}",
                        manifest.version,
                        out.display()
                    );
                    for f in &manifest.files {
                        println!("  {} {} bytes sha256 {}", f.name, f.size, f.sha256);
                    }
                    println!(
                        "signatures loaded: {}; expires {}",
                        manifest.self_test.min_signatures,
                        manifest.expires.to_rfc3339()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        DefsAction::Serve {
            dir,
            listen,
            tls_cert,
            tls_key,
        } => {
            let log = portcullis_logging::LogConfig::default();
            // Kept until the server stops: dropping it stops the logging thread.
            let _log = match portcullis_logging::init(&log, "localhost") {
                Ok(handle) => handle,
                Err(e) => {
                    eprintln!("portcullis: logging: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("portcullis: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let tls = tls_cert.as_deref().zip(tls_key.as_deref());
            match runtime.block_on(portcullis_gateway::definitions::serve::run(
                &dir, listen, tls,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        DefsAction::UpdateNow { data_dir } => talk(&data_dir, Request::DefinitionsUpdateNow, false),
        DefsAction::Status { json, data_dir } => talk(&data_dir, Request::DefinitionsStatus, json),
        DefsAction::Rollback { data_dir } => talk(&data_dir, Request::DefinitionsRollback, false),
    }
}

/// `portcullis console`: the serial console on stdin/stdout.
fn console(root: PathBuf, zoneinfo: PathBuf, dry_run: bool) -> ExitCode {
    // Log to the journal (stderr under systemd), never onto the admin's screen.
    let _log = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        None
    } else {
        portcullis_logging::init(&portcullis_logging::LogConfig::default(), "localhost").ok()
    };
    let options = portcullis_console::ConsoleOptions { root, zoneinfo };
    match portcullis_console::run_on_stdio(options, dry_run) {
        Ok(portcullis_console::SessionEnd::InputClosed) => ExitCode::SUCCESS,
        Ok(portcullis_console::SessionEnd::SetupCancelled) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("portcullis: console: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `portcullis check`: exit 0 all deliverable unchanged, 1 any other verdict, 2 error.
fn check(config: Option<PathBuf>, json: bool, files: &[PathBuf]) -> ExitCode {
    let source = config
        .map(ConfigSource::File)
        .unwrap_or(ConfigSource::Embedded);
    let config = match source.load(&Overrides::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(2);
        }
    };
    let engine = match portcullis_gateway::scan::engine_for_cli(None, &config.server.data_dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("portcullis: antivirus definitions: {e}");
            return ExitCode::from(2);
        }
    };
    let verdicts = match check_files(&config, &engine, files) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut error, mut objection) = (false, false);
    for v in &verdicts {
        match &v.result {
            FileResult::Error(e) => {
                error = true;
                if !json {
                    eprintln!("{}: ERROR {e}", v.file.display());
                }
            }
            FileResult::Verdict(verdict) => {
                objection |= !matches!(
                    verdict.action,
                    portcullis_scan::Action::Deliver | portcullis_scan::Action::Log
                );
                if !json {
                    println!("{}: {}", v.file.display(), verdict.action);
                    for line in verdict.explain() {
                        println!("  {line}");
                    }
                }
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdicts).unwrap_or_default()
        );
    }
    ExitCode::from(if error {
        2
    } else if objection {
        1
    } else {
        0
    })
}

fn install_panic_logger() {
    // A panic is contained by the supervisor; log it as one greppable line, not a backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-text panic".into());
        tracing::error!(location = %location, "panic: {message}");
    }));
}

/// Sends one request to the running daemon and prints its answer.
fn talk(data_dir: &std::path::Path, request: Request, json: bool) -> ExitCode {
    let socket = control_socket_path(data_dir);
    let is_list = matches!(request, Request::QueueList);
    let is_show = matches!(request, Request::QueueShow { .. });
    let is_status = matches!(request, Request::Status);
    let is_alerts = matches!(request, Request::Alerts { .. });
    let is_quarantine_list = matches!(request, Request::QuarantineList);
    let is_defs_status = matches!(request, Request::DefinitionsStatus);
    let is_defs_update = matches!(request, Request::DefinitionsUpdateNow);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(control::request(&socket, &request)) {
        Ok(Response::Ok { message, data }) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&data).unwrap_or_default()
                );
            } else if is_list {
                print_list(&data);
            } else if is_status {
                print_status(&data);
            } else if is_alerts {
                print_alerts(&data);
            } else if is_quarantine_list {
                print_quarantine(&data);
            } else if is_defs_status {
                print_definitions(&data);
            } else if is_defs_update {
                println!("{message}");
            } else if is_show || !data.is_null() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&data).unwrap_or_default()
                );
            } else {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Refused { message }) => {
            eprintln!("portcullis: {message}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(e @ ClientError::NotRunning(_)) => {
            eprintln!("portcullis: {e}");
            ExitCode::from(EXIT_NOT_RUNNING)
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A `mailq`-like listing.
fn print_list(data: &serde_json::Value) {
    let views: Vec<QueueView> = serde_json::from_value(data.clone()).unwrap_or_default();
    if views.is_empty() {
        println!("queue is empty");
        return;
    }
    println!(
        "{:<18} {:<9} {:>9} {:<25} {:<30} recipients",
        "queue id", "queue", "size", "arrived", "sender"
    );
    for v in &views {
        let sender = if v.sender.is_empty() {
            "<>"
        } else {
            v.sender.as_str()
        };
        let arrived: String = v.arrived.chars().take(19).collect();
        println!(
            "{:<18} {:<9} {:>9} {:<25} {:<30} {}",
            v.id,
            v.queue,
            v.size,
            arrived,
            sender,
            v.recipients
                .iter()
                .map(|r| format!("{} ({})", r.address, r.status))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(e) = &v.last_error {
            println!("{:<18} last error: {e}", "");
        }
        if let Some(h) = &v.hold_reason {
            println!("{:<18} held: {h}", "");
        }
    }
    println!("-- {} message(s)", views.len());
}

/// A human status page.
fn print_status(data: &serde_json::Value) {
    let get = |k: &str| data.get(k).cloned().unwrap_or_default();
    let healthy = get("healthy").as_bool().unwrap_or(false);
    println!(
        "portcullis {}  {}  up {}s",
        get("version").as_str().unwrap_or("?"),
        if healthy { "HEALTHY" } else { "UNHEALTHY" },
        get("uptime_seconds")
    );
    let q = get("queues");
    println!(
        "queues: incoming {}  deferred {}  hold {}",
        q["incoming"], q["deferred"], q["hold"]
    );
    println!(
        "delivery paused: {}  rejecting incoming: {}  disk below floor: {}",
        get("delivery_paused"),
        get("rejecting_incoming"),
        get("disk_floor")
    );
    let defs = get("definitions");
    if defs.is_null() {
        println!("definitions: none installed (built-in EICAR test signature only)");
    } else {
        println!(
            "definitions: version {}  created {}  expires {}  signatures {}  updates {}",
            defs["version"],
            defs["created"].as_str().unwrap_or("?"),
            defs["expires"].as_str().unwrap_or("?"),
            defs["signatures"],
            defs["updates"].as_str().unwrap_or("?")
        );
    }
    println!("parts:");
    for p in get("parts").as_array().cloned().unwrap_or_default() {
        println!(
            "  {:<28} {:<11} up {:>7}s  restarts {:>3}  {}",
            p["name"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["uptime_s"],
            p["restarts"],
            p["last_error"]
                .as_str()
                .map(|e| format!("last error: {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(a) = get("last_alert").as_object() {
        println!(
            "last alert: {} {}: {}",
            a.get("at").and_then(|v| v.as_str()).unwrap_or(""),
            a.get("kind").and_then(|v| v.as_str()).unwrap_or(""),
            a.get("summary").and_then(|v| v.as_str()).unwrap_or("")
        );
    }
}

/// `portcullis defs status`.
fn print_definitions(data: &serde_json::Value) {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
    let version = |v: &serde_json::Value| {
        if v.is_null() {
            "none".to_string()
        } else {
            format!(
                "{} (created {}, expires {})",
                v["version"],
                text(&v["created"]),
                text(&v["expires"])
            )
        }
    };
    let enabled = data["enabled"].as_bool().unwrap_or(false);
    println!(
        "updates:        {}",
        if enabled {
            "enabled".to_string()
        } else {
            format!("disabled: {}", text(&data["disabled_reason"]))
        }
    );
    println!("installed:      {}", version(&data["installed"]));
    println!("previous:       {}", version(&data["previous"]));
    println!("highest ever:   {}", data["highest_version"]);
    println!("signatures:     {}", data["signatures"]);
    println!("last attempt:   {}", text(&data["last_attempt"]));
    println!("last result:    {}", text(&data["last_result"]));
    println!("last success:   {}", text(&data["last_success"]));
    println!("last error:     {}", text(&data["last_error"]));
    println!("next attempt:   {}", text(&data["next_attempt"]));
    if !data["probation_until"].is_null() {
        println!("probation until {}", text(&data["probation_until"]));
    }
}

/// The quarantine, oldest first: one line per message, then its reasons.
fn print_quarantine(data: &serde_json::Value) {
    let records = data.as_array().cloned().unwrap_or_default();
    if records.is_empty() {
        println!("quarantine is empty");
        return;
    }
    for r in &records {
        let env = &r["envelope"];
        let sender = env["sender"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("<>");
        let rcpts: Vec<&str> = env["recipients"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        println!(
            "{:<18} {:<19} {:<30} {}  [{}]",
            r["id"].as_str().unwrap_or("?"),
            env["received_at"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(19)
                .collect::<String>(),
            sender,
            rcpts.join(", "),
            r["subject"].as_str().unwrap_or("")
        );
        for reason in r["verdict"]["reasons"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            println!("{:<18} {}", "", reason["text"].as_str().unwrap_or(""));
        }
    }
    println!("-- {} message(s)", records.len());
}

/// The alert log, newest first.
fn print_alerts(data: &serde_json::Value) {
    let alerts = data.as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        println!("no alerts");
    }
    for a in alerts {
        println!(
            "{}  {:<28} {}{}",
            a["at"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(19)
                .collect::<String>(),
            a["kind"].as_str().unwrap_or(""),
            a["summary"].as_str().unwrap_or(""),
            if a["mailed"].as_bool().unwrap_or(false) {
                "  (mailed)"
            } else {
                ""
            }
        );
    }
}

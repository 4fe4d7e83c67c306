//! The configuration tree: one typed TOML file, every key optional, unknown keys rejected.
//!
//! The defaults live here and only here; `docs/configuration.md` lists every key. A config is
//! loaded, validated into [`Config`] and then shared as an `Arc` snapshot; a reload swaps the
//! whole snapshot so no part of the gateway ever sees half of an old and half of a new config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// The embedded default configuration: what `portcullis run` uses without `--config`.
///
/// It listens on loopback only and trusts only loopback clients to relay, so a newcomer can try
/// it with swaks on the same machine while it is still not an open relay to anyone else.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Why a configuration could not be used. Each message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        /// The file that was asked for.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, a key is unknown, or a value has the wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// The file (or "embedded default").
        file: String,
        /// The parser's explanation, with line, column and key.
        message: String,
    },
    /// A value parsed but makes no sense (for example a zero limit).
    #[error("{file}: {key}: {problem}")]
    Invalid {
        /// The file (or "embedded default").
        file: String,
        /// The dotted key, e.g. `smtp.max_sessions`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// The whole configuration, after validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity and storage.
    pub server: ServerSection,
    /// The inbound SMTP service.
    pub smtp: SmtpSection,
    /// Who may relay and which domains are ours.
    pub relay: RelaySection,
    /// Queue behaviour: durability, retries, notices.
    pub queue: QueueSection,
    /// Outbound delivery.
    pub delivery: DeliverySection,
    /// DNS resolution for MX lookups.
    pub dns: DnsSection,
    /// Bounces and delay notices.
    pub bounces: BouncesSection,
    /// The web console.
    pub console: ConsoleSection,
    /// Alerts to the admin.
    pub alerts: crate::alerts::AlertsSection,
    /// The hardware and systemd watchdogs.
    pub watchdog: WatchdogSection,
    /// The Prometheus endpoint.
    pub metrics: MetricsSection,
    /// Logging: levels per component, files, remote syslog.
    pub log: portcullis_logging::LogConfig,
    /// Message decomposition limits and the content policy.
    pub scan: ScanSection,
    /// The antivirus engine and what happens to infected messages.
    pub antivirus: AntivirusSection,
    /// The quarantine store.
    pub quarantine: QuarantineSection,
    /// Automatic antivirus definitions updates over HTTP(S).
    pub definitions: DefinitionsSection,
    /// Who is told when the policy or the antivirus objects to a message, and with which
    /// templates. Opt-in: without a `[notifications]` section nobody is told; with one, every
    /// key missing from it takes `portcullis-scan`'s default (its own type, so its defaults live
    /// in that crate).
    pub notifications: Option<portcullis_scan::NotificationsConfig>,
    /// The disclaimer added to outbound mail (`portcullis-scan`'s own type; empty text: none).
    pub disclaimer: portcullis_scan::DisclaimerConfig,
}

/// `[scan]`: how messages are taken apart (`[scan.limits]`) and what the content policy says
/// about them (`[scan.policy]`, `[scan.policy.file_names]`, `[[scan.policy.content_rules]]`…).
/// Both reuse `portcullis-scan`'s own types, so their defaults live in that crate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanSection {
    /// Decomposition limits (depth, files, bytes, ratio, time…).
    pub limits: portcullis_scan::Limits,
    /// The content policy.
    pub policy: portcullis_scan::Policy,
    /// The text that replaces an attachment removed by a `strip` action (content rule or
    /// antivirus): `%FILENAME%` and `%REASONS%` are filled in; empty leaves an empty part.
    pub removal_note: String,
}

/// The default `scan.removal_note`.
pub const DEFAULT_REMOVAL_NOTE: &str =
    "Portcullis removed the attachment %FILENAME% from this message:\n%REASONS%";

impl Default for ScanSection {
    fn default() -> Self {
        ScanSection {
            limits: portcullis_scan::Limits::default(),
            policy: portcullis_scan::Policy::default(),
            removal_note: DEFAULT_REMOVAL_NOTE.to_owned(),
        }
    }
}

/// What happens to a message in which the antivirus engine found something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirusAction {
    /// `5xx` inside the SMTP session when known before the `250`; dropped (never bounced) when
    /// found only after queueing.
    #[default]
    Reject,
    /// Remove the infected attachments and add a text note; drop when the infection is not in
    /// an attachment that can be removed.
    Strip,
    /// Move the message to the quarantine store.
    Quarantine,
    /// Accept and discard.
    Drop,
    /// Deliver, recording the detection.
    Log,
}

/// What happens to an infected message whose infection cannot be removed (with
/// `action = "strip"`: it is not in an attachment that can be taken out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unrepairable {
    /// Accept and discard the whole message.
    #[default]
    Drop,
    /// Deliver it as it is, recording the detection.
    Log,
}

/// Which infected messages also leave a copy of the original in the quarantine store, whatever
/// their action did with them (the classic "quarantine nothing / unrepaired / all infected").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineCopy {
    /// No copies (`action = "quarantine"` still quarantines).
    #[default]
    None,
    /// Infected messages that were not repaired (refused, dropped, delivered as they are).
    Unrepaired,
    /// Every infected message, repaired ones included.
    All,
}

/// Virus names of mass-mailing worms (wildcards, any case): mail they sent is the worm's own
/// product, so repairing it makes no sense.
pub fn default_mass_mailers() -> Vec<String> {
    [
        "*@mm",
        "*.mm",
        "*massmail*",
        "*mass-mail*",
        "*.mailer*",
        "Email-Worm.*",
        "I-Worm.*",
        "*Worm.Mydoom*",
        "*Worm.Netsky*",
        "*Worm.Bagle*",
        "*Worm.Sober*",
        "*Worm.Mytob*",
        "*Worm.Klez*",
        "*Worm.Sobig*",
        "*Worm.Zafi*",
        "*Worm.Mimail*",
        "*Worm.Lovgate*",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// `[antivirus]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntivirusSection {
    /// Scan messages with the antivirus engine.
    pub enabled: bool,
    /// The definitions store; empty means `<data_dir>/definitions`. *restart*
    pub definitions_dir: PathBuf,
    /// What to do with an infected message.
    pub action: VirusAction,
    /// With `action = "strip"`: what an infection that cannot be removed gets.
    pub unrepairable: Unrepairable,
    /// Which infected messages leave a copy of the original in the quarantine.
    pub quarantine_copy: QuarantineCopy,
    /// Virus names (wildcards) of mass-mailing worms: a message carrying one is deleted whole
    /// when the action would repair it or deliver it (`strip`, `log`).
    pub mass_mailers: Vec<String>,
    /// An outbreak alert is raised when this many infected messages arrive within
    /// `outbreak_window`; 0 switches it off.
    pub outbreak_messages: usize,
    /// The window of the outbreak alert.
    #[serde(with = "humantime_serde")]
    pub outbreak_window: Duration,
}

impl Default for AntivirusSection {
    fn default() -> Self {
        AntivirusSection {
            enabled: true,
            definitions_dir: PathBuf::new(),
            action: VirusAction::Reject,
            unrepairable: Unrepairable::Drop,
            quarantine_copy: QuarantineCopy::None,
            mass_mailers: default_mass_mailers(),
            outbreak_messages: 10,
            outbreak_window: Duration::from_secs(10 * 60),
        }
    }
}

/// `[quarantine]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineSection {
    /// Quarantined messages older than this are deleted by housekeeping; `"0s"` keeps them.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for QuarantineSection {
    fn default() -> Self {
        QuarantineSection {
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A day of the week in `definitions.days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// The same day as chrono names it.
    pub fn to_chrono(self) -> chrono::Weekday {
        match self {
            Weekday::Mon => chrono::Weekday::Mon,
            Weekday::Tue => chrono::Weekday::Tue,
            Weekday::Wed => chrono::Weekday::Wed,
            Weekday::Thu => chrono::Weekday::Thu,
            Weekday::Fri => chrono::Weekday::Fri,
            Weekday::Sat => chrono::Weekday::Sat,
            Weekday::Sun => chrono::Weekday::Sun,
        }
    }
}

/// `[definitions]`: where antivirus definitions updates come from, whom to trust, and when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefinitionsSection {
    /// Package base URLs (`http://` or `https://`), tried in order.
    pub urls: Vec<String>,
    /// PEM file with the CA certificates to trust for `https://` URLs; empty means the public
    /// web PKI roots.
    pub ca_file: PathBuf,
    /// Trusted publisher keys: 64 hex digits or the path of a public key file. Empty: updates
    /// are disabled (with a warning).
    pub pinned_keys: Vec<String>,
    /// HTTP proxy, `http://[user:pass@]host:port`; empty means direct connections.
    pub proxy: String,
    /// Days of the week on which updates are attempted.
    pub days: Vec<Weekday>,
    /// First attempt of each allowed day, local time, `"HH:MM"`.
    pub first_attempt: String,
    /// Time between attempts on an allowed day.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Further tries of one URL after a network failure, before moving to the next URL.
    pub retries: u32,
    /// Wait before each retry.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Random extra wait, up to this long, before each scheduled attempt and retry, so many
    /// appliances do not hit the server at the same second.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// TCP (and proxy) connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest silence while receiving (slow-retrieval protection).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Longest download of one file.
    #[serde(with = "humantime_serde")]
    pub download_timeout: Duration,
    /// Largest single file of a package.
    pub max_file_bytes: u64,
    /// Largest package (all files together).
    pub max_total_bytes: u64,
    /// Installed definitions older than this raise the definitions-stale alert.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// After a swap, how long the new definitions are watched for misbehaviour.
    #[serde(with = "humantime_serde")]
    pub probation: Duration,
    /// Scan errors during `probation` that make the gateway roll back automatically.
    pub probation_max_scan_errors: u64,
}

impl Default for DefinitionsSection {
    fn default() -> Self {
        let limits = portcullis_defs::Limits::default();
        DefinitionsSection {
            urls: Vec::new(),
            ca_file: PathBuf::new(),
            pinned_keys: Vec::new(),
            proxy: String::new(),
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ],
            first_attempt: "00:15".into(),
            interval: Duration::from_secs(2 * 3600),
            retries: 2,
            retry_delay: Duration::from_secs(60),
            jitter: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            download_timeout: Duration::from_secs(30 * 60),
            max_file_bytes: limits.max_file_bytes,
            max_total_bytes: limits.max_total_bytes,
            stale_after: Duration::from_secs(2 * 24 * 3600),
            probation: Duration::from_secs(10 * 60),
            probation_max_scan_errors: 5,
        }
    }
}

impl DefinitionsSection {
    /// `first_attempt` as a time of day (validated at load).
    pub fn first_attempt_time(&self) -> Option<chrono::NaiveTime> {
        chrono::NaiveTime::parse_from_str(&self.first_attempt, "%H:%M").ok()
    }

    /// The package limits, from `max_file_bytes` and `max_total_bytes`.
    pub fn limits(&self) -> portcullis_defs::Limits {
        portcullis_defs::Limits {
            max_file_bytes: self.max_file_bytes,
            max_total_bytes: self.max_total_bytes,
            ..portcullis_defs::Limits::default()
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Where; keep it off the public interface.
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9025)),
        }
    }
}

/// `[watchdog]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogSection {
    /// Hardware watchdog device, e.g. `/dev/watchdog`; empty means none.
    pub device: PathBuf,
    /// Timeout asked of the hardware watchdog: the box reboots this long after the last pet.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the watchdogs are petted while every part is healthy.
    #[serde(with = "humantime_serde")]
    pub pet_interval: Duration,
    /// A part with a progress deadline (delivery, housekeeping) that makes no progress for this
    /// long is reported stuck, and the watchdogs stop being petted.
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
}

impl Default for WatchdogSection {
    fn default() -> Self {
        WatchdogSection {
            device: PathBuf::new(),
            timeout: Duration::from_secs(60),
            pet_interval: Duration::from_secs(10),
            stuck_after: Duration::from_secs(60),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Host name used in the banner, EHLO, Received headers and bounces (default: the system's).
    pub hostname: String,
    /// Where queues, tracking, TLS material and the control socket live.
    pub data_dir: PathBuf,
}

/// `[smtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSection {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Largest message accepted, in bytes.
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Longest line in message data, in bytes including CRLF.
    pub max_line_length: usize,
    /// How long to wait for a command.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long to wait for more message data.
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Most concurrent inbound sessions.
    pub max_sessions: usize,
    /// Most concurrent sessions from one client IP address.
    pub max_sessions_per_ip: usize,
    /// Errors in one session before it is disconnected.
    pub max_errors: u32,
    /// Delay before the banner; a client that talks first is dropped.
    #[serde(with = "humantime_serde")]
    pub banner_delay: Duration,
    /// Characters refused in envelope addresses (old-style routing tricks).
    pub reject_address_chars: String,
    /// How long sessions may take to finish at shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Offer CHUNKING (BDAT).
    pub chunking: bool,
    /// SMTP conversation logging: `off`, `on-error` or `all`.
    pub transcript: portcullis_smtp::TranscriptMode,
    /// What transcripts show of message data: `ignore`, `summarize` or `echo`.
    pub transcript_data: portcullis_smtp::DataLogging,
    /// STARTTLS.
    pub tls: TlsSection,
}

/// `[smtp.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Offer STARTTLS.
    pub enabled: bool,
    /// PEM certificate chain; empty means a self-signed one generated in the data directory.
    pub cert_file: PathBuf,
    /// PEM private key matching `cert_file`.
    pub key_file: PathBuf,
}

/// `[relay]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// Domains we accept mail for from anyone: `example.com` or `*.example.com`.
    pub local_domains: Vec<String>,
    /// Client networks allowed to send to any domain.
    pub relay_networks: Vec<IpNet>,
}

/// `[queue]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// fsync before acknowledging mail; turning it off risks losing mail on a power cut.
    pub fsync: bool,
    /// Waits between delivery attempts; the last repeats.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// After this long undelivered, the sender gets a delay notice (once).
    #[serde(with = "humantime_serde")]
    pub delay_notice_after: Duration,
    /// After this long undelivered, the message bounces.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Processing crashes or time-outs after which a message is held as suspect.
    pub suspect_after_crashes: u32,
    /// Time the inbound session waits for scanning before answering 250 anyway.
    #[serde(with = "humantime_serde")]
    pub scan_budget: Duration,
    /// How often the scheduler looks for due messages when nothing wakes it.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Longest a single delivery attempt of one message may take before it counts as a crash.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// Bytes of recently received messages kept in memory for scanning and delivery (the spool
    /// file stays the truth; a message not in memory is read from it).
    pub message_cache_bytes: usize,
    /// Size of a message log segment in MiB.
    pub log_segment_mib: u64,
}

/// `[delivery]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySection {
    /// Most concurrent outbound connections.
    pub max_connections: usize,
    /// Most concurrent connections to one destination.
    pub max_per_destination: usize,
    /// TCP connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout for each reply from the next hop.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Timeout for the reply after the message data.
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Hosts that take all mail not matched by `routes` (`host:port`); empty means MX lookup.
    pub default_route: Vec<String>,
    /// Port for hosts found by MX/A lookup.
    pub smtp_port: u16,
    /// `opportunistic` or `disabled`.
    pub tls: String,
    /// Name sent in EHLO; empty means `server.hostname`.
    pub helo_name: String,
    /// The routing list.
    pub routes: Vec<RouteSection>,
    /// An SMTP session to a next hop is kept open this long after a message for the next one
    /// to the same host; zero closes every session after its message. *restart*
    #[serde(with = "humantime_serde")]
    pub session_cache_time: Duration,
    /// Messages one kept session carries before it is closed. *restart*
    pub session_reuse_limit: u32,
}

/// One `[[delivery.routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// `example.com` or `*.example.com`.
    pub domain: String,
    /// `host:port` in preference order.
    pub hosts: Vec<String>,
}

/// `[dns]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// Name servers (`ip:port`); empty means the system's resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// Timeout of one query.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries per query.
    pub attempts: usize,
}

/// `[bounces]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BouncesSection {
    /// From header of bounces and delay notices; empty means `MAILER-DAEMON@<hostname>`.
    pub from: String,
    /// If set, a copy of each bounce goes here too.
    pub postmaster: String,
}

/// `[console]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Where the web console listens.
    pub listen: SocketAddr,
    /// The web console admin's password as an argon2id PHC string (set by the serial console's
    /// setup); never the password itself.
    pub admin_password_hash: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSection::default(),
            smtp: SmtpSection::default(),
            relay: RelaySection::default(),
            queue: QueueSection::default(),
            delivery: DeliverySection::default(),
            dns: DnsSection::default(),
            bounces: BouncesSection::default(),
            console: ConsoleSection::default(),
            alerts: crate::alerts::AlertsSection::default(),
            watchdog: WatchdogSection::default(),
            metrics: MetricsSection::default(),
            log: portcullis_logging::LogConfig::default(),
            scan: ScanSection::default(),
            antivirus: AntivirusSection::default(),
            quarantine: QuarantineSection::default(),
            definitions: DefinitionsSection::default(),
            notifications: None,
            disclaimer: portcullis_scan::DisclaimerConfig::default(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            hostname: String::new(),
            data_dir: PathBuf::from("./var"),
        }
    }
}

impl Default for SmtpSection {
    fn default() -> Self {
        SmtpSection {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 4096,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_sessions: 15,
            max_sessions_per_ip: 5,
            max_errors: 10,
            banner_delay: Duration::ZERO,
            reject_address_chars: "!%".into(),
            shutdown_grace: Duration::from_secs(30),
            chunking: true,
            transcript: portcullis_smtp::TranscriptMode::Off,
            transcript_data: portcullis_smtp::DataLogging::Summarize,
            tls: TlsSection::default(),
        }
    }
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            enabled: true,
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
        }
    }
}

impl Default for RelaySection {
    fn default() -> Self {
        RelaySection {
            local_domains: Vec::new(),
            relay_networks: vec![
                "127.0.0.0/8".parse().expect("literal network"),
                "::1/128".parse().expect("literal network"),
            ],
        }
    }
}

impl Default for QueueSection {
    fn default() -> Self {
        let m = |mins: u64| Duration::from_secs(mins * 60);
        QueueSection {
            fsync: true,
            retry_schedule: vec![m(1), m(5), m(15), m(30), m(60), m(120), m(240)],
            delay_notice_after: m(4 * 60),
            max_lifetime: m(5 * 24 * 60),
            suspect_after_crashes: 3,
            scan_budget: Duration::from_secs(20),
            poll_interval: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(30 * 60),
            message_cache_bytes: 64 * 1024 * 1024,
            log_segment_mib: 32,
        }
    }
}

impl Default for DeliverySection {
    fn default() -> Self {
        DeliverySection {
            max_connections: 30,
            max_per_destination: 10,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            default_route: Vec::new(),
            smtp_port: 25,
            tls: "opportunistic".into(),
            helo_name: String::new(),
            routes: Vec::new(),
            session_cache_time: Duration::from_secs(2),
            session_reuse_limit: 100,
        }
    }
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

impl Default for BouncesSection {
    fn default() -> Self {
        BouncesSection {
            from: String::new(),
            postmaster: String::new(),
        }
    }
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8003)),
            admin_password_hash: None,
        }
    }
}

/// Reads a list of human-readable durations (`["1m", "5m"]`).
fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let items: Vec<humantime_serde::Serde<Duration>> = Vec::deserialize(d)?;
    Ok(items.into_iter().map(|s| s.into_inner()).collect())
}

/// Overrides from the command line, applied on top of the file (and on every reload).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--smtp-listen`
    pub smtp_listen: Option<SocketAddr>,
    /// `--console-listen`
    pub console_listen: Option<SocketAddr>,
    /// `--relay`
    pub relay: Option<String>,
}

/// Where a configuration comes from, so a reload reads the same place again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// The built-in default.
    Embedded,
    /// A TOML file.
    File(PathBuf),
}

impl ConfigSource {
    /// The name used in error messages.
    pub fn name(&self) -> String {
        match self {
            ConfigSource::Embedded => "embedded default configuration".into(),
            ConfigSource::File(p) => p.display().to_string(),
        }
    }

    /// Reads, parses, applies overrides and validates.
    pub fn load(&self, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = match self {
            ConfigSource::Embedded => EMBEDDED_DEFAULT.to_string(),
            ConfigSource::File(p) => {
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: p.display().to_string(),
                    source,
                })?
            }
        };
        Config::parse(&text, &self.name(), overrides)
    }
}

impl Config {
    /// Parses TOML text, applies the overrides, fills derived defaults and validates.
    pub fn parse(text: &str, file: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        if let Some(d) = &overrides.data_dir {
            config.server.data_dir = d.clone();
        }
        if let Some(a) = overrides.smtp_listen {
            config.smtp.listen = vec![a];
        }
        if let Some(a) = overrides.console_listen {
            config.console.listen = a;
        }
        if let Some(r) = &overrides.relay {
            config.delivery.default_route = vec![r.clone()];
        }
        if config.server.hostname.is_empty() {
            config.server.hostname = system_hostname();
        }
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            problem,
        };
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(bad(key, "must be greater than 0".into()))
            } else {
                Ok(())
            }
        };
        if !is_hostname(&self.server.hostname) {
            return Err(bad(
                "server.hostname",
                format!("{:?} is not a valid host name", self.server.hostname),
            ));
        }
        if self.smtp.listen.is_empty() {
            return Err(bad("smtp.listen", "needs at least one address".into()));
        }
        positive("smtp.max_message_size", self.smtp.max_message_size)?;
        positive("smtp.max_recipients", self.smtp.max_recipients as u64)?;
        positive("smtp.max_sessions", self.smtp.max_sessions as u64)?;
        positive(
            "smtp.max_sessions_per_ip",
            self.smtp.max_sessions_per_ip as u64,
        )?;
        positive("smtp.max_errors", self.smtp.max_errors as u64)?;
        if self.smtp.max_line_length < 1000 {
            return Err(bad(
                "smtp.max_line_length",
                "must be at least 1000 (RFC 5321 allows 1000-byte lines)".into(),
            ));
        }
        if self.smtp.command_timeout.is_zero() || self.smtp.data_timeout.is_zero() {
            return Err(bad(
                "smtp.command_timeout",
                "timeouts must be greater than 0".into(),
            ));
        }
        let tls = &self.smtp.tls;
        if tls.cert_file.as_os_str().is_empty() != tls.key_file.as_os_str().is_empty() {
            return Err(bad(
                "smtp.tls.cert_file",
                "cert_file and key_file must be set together (or both left empty for a self-signed certificate)".into(),
            ));
        }
        for (i, d) in self.relay.local_domains.iter().enumerate() {
            if crate::relay::DomainMatcher::parse(d).is_none() {
                return Err(bad(
                    &format!("relay.local_domains[{i}]"),
                    format!("{d:?} is not a domain or *.domain"),
                ));
            }
        }
        if self.queue.retry_schedule.is_empty() {
            return Err(bad(
                "queue.retry_schedule",
                "needs at least one interval".into(),
            ));
        }
        if self.queue.retry_schedule.iter().any(|d| d.is_zero()) {
            return Err(bad(
                "queue.retry_schedule",
                "intervals must be greater than 0".into(),
            ));
        }
        positive(
            "queue.suspect_after_crashes",
            self.queue.suspect_after_crashes as u64,
        )?;
        if !(1..=1024).contains(&self.queue.log_segment_mib) {
            return Err(bad(
                "queue.log_segment_mib",
                format!("must be 1 to 1024, not {}", self.queue.log_segment_mib),
            ));
        }
        if self.queue.poll_interval.is_zero() {
            return Err(bad("queue.poll_interval", "must be greater than 0".into()));
        }
        if self.queue.max_lifetime < self.queue.retry_schedule[0] {
            return Err(bad(
                "queue.max_lifetime",
                "is shorter than the first retry interval".into(),
            ));
        }
        positive(
            "delivery.max_connections",
            self.delivery.max_connections as u64,
        )?;
        positive(
            "delivery.max_per_destination",
            self.delivery.max_per_destination as u64,
        )?;
        positive("delivery.smtp_port", self.delivery.smtp_port as u64)?;
        if !matches!(self.delivery.tls.as_str(), "opportunistic" | "disabled") {
            return Err(bad(
                "delivery.tls",
                format!(
                    "{:?}: expected \"opportunistic\" or \"disabled\"",
                    self.delivery.tls
                ),
            ));
        }
        for (i, h) in self.delivery.default_route.iter().enumerate() {
            h.parse::<portcullis_delivery::HostPort>().map_err(|e| {
                bad(
                    &format!("delivery.default_route[{i}]"),
                    format!("{h:?}: {e}"),
                )
            })?;
        }
        for (i, r) in self.delivery.routes.iter().enumerate() {
            r.domain
                .parse::<portcullis_delivery::DomainPattern>()
                .map_err(|e| {
                    bad(
                        &format!("delivery.routes[{i}].domain"),
                        format!("{:?}: {e}", r.domain),
                    )
                })?;
            if r.hosts.is_empty() {
                return Err(bad(
                    &format!("delivery.routes[{i}].hosts"),
                    "needs at least one host".into(),
                ));
            }
            for h in &r.hosts {
                h.parse::<portcullis_delivery::HostPort>().map_err(|e| {
                    bad(
                        &format!("delivery.routes[{i}].hosts"),
                        format!("{h:?}: {e}"),
                    )
                })?;
            }
        }
        positive("dns.attempts", self.dns.attempts as u64)?;
        if !self.bounces.from.is_empty() && !self.bounces.from.contains('@') {
            return Err(bad("bounces.from", "must be an email address".into()));
        }
        if !self.bounces.postmaster.is_empty() && !self.bounces.postmaster.contains('@') {
            return Err(bad("bounces.postmaster", "must be an email address".into()));
        }
        let a = &self.alerts;
        if let Some(bad_to) = a.to.iter().find(|t| !t.contains('@')) {
            return Err(bad(
                "alerts.to",
                format!("{bad_to:?} is not an email address"),
            ));
        }
        if !a.from.is_empty() && !a.from.contains('@') {
            return Err(bad("alerts.from", "must be an email address".into()));
        }
        for (key, v) in [
            ("alerts.low_disk_percent", a.low_disk_percent),
            ("alerts.disk_floor_percent", a.disk_floor_percent),
            ("alerts.low_memory_percent", a.low_memory_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(bad(
                    key,
                    format!("{v} is not a percentage between 0 and 100"),
                ));
            }
        }
        if self.watchdog.stuck_after < self.queue.poll_interval * 2
            || self.watchdog.stuck_after < a.check_interval * 2
        {
            return Err(bad(
                "watchdog.stuck_after",
                "must be at least twice queue.poll_interval and alerts.check_interval".into(),
            ));
        }
        if a.check_interval.is_zero() {
            return Err(bad(
                "alerts.check_interval",
                "must be greater than 0".into(),
            ));
        }
        let w = &self.watchdog;
        if w.pet_interval.is_zero()
            || (!w.device.as_os_str().is_empty() && w.pet_interval >= w.timeout)
        {
            return Err(bad(
                "watchdog.pet_interval",
                "must be greater than 0 and shorter than watchdog.timeout".into(),
            ));
        }
        self.validate_scan(file)?;
        self.validate_definitions(file)
    }

    /// `[definitions]`: URLs, the schedule and the limits must make sense; keys are parsed when
    /// used (a key file may be installed after the configuration).
    fn validate_definitions(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            problem,
        };
        let d = &self.definitions;
        for (i, url) in d.urls.iter().enumerate() {
            crate::definitions::fetch::PackageUrl::parse(url)
                .map_err(|e| bad(&format!("definitions.urls[{i}]"), e.to_string()))?;
        }
        if !d.proxy.is_empty() {
            crate::definitions::fetch::Proxy::parse(&d.proxy)
                .map_err(|e| bad("definitions.proxy", e.to_string()))?;
        }
        if d.first_attempt_time().is_none() {
            return Err(bad(
                "definitions.first_attempt",
                format!("{:?} is not a time \"HH:MM\"", d.first_attempt),
            ));
        }
        if d.days.is_empty() {
            return Err(bad(
                "definitions.days",
                "needs at least one day (to switch updates off, leave pinned_keys or urls empty)"
                    .into(),
            ));
        }
        for (key, v) in [
            ("definitions.interval", d.interval),
            ("definitions.connect_timeout", d.connect_timeout),
            ("definitions.stall_timeout", d.stall_timeout),
            ("definitions.download_timeout", d.download_timeout),
            ("definitions.stale_after", d.stale_after),
        ] {
            if v.is_zero() {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        if d.max_file_bytes == 0 || d.max_total_bytes == 0 {
            return Err(bad(
                "definitions.max_file_bytes",
                "size limits must be greater than 0".into(),
            ));
        }
        Ok(())
    }

    /// `[scan]` and `[antivirus]`: a policy that does not compile is a configuration error,
    /// reported with the key of the offending list.
    fn validate_scan(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            problem,
        };
        let l = &self.scan.limits;
        for (key, v) in [
            ("scan.limits.max_depth", l.max_depth as u64),
            ("scan.limits.max_files", l.max_files as u64),
            ("scan.limits.max_total_bytes", l.max_total_bytes),
            ("scan.limits.max_compression_ratio", l.max_compression_ratio),
            ("scan.limits.max_text_bytes", l.max_text_bytes as u64),
            ("scan.limits.max_decoder_memory", l.max_decoder_memory),
        ] {
            if v == 0 {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        if l.max_time.is_zero() {
            return Err(bad("scan.limits.max_time", "must be greater than 0".into()));
        }
        let p = &self.scan.policy;
        let mut actions: Vec<(String, &portcullis_scan::Action)> = vec![
            (
                "scan.policy.attachment_size.action".into(),
                &p.attachment_size.action,
            ),
            ("scan.policy.subjects.action".into(), &p.subjects.action),
            ("scan.policy.file_names.action".into(), &p.file_names.action),
        ];
        for (i, rule) in p.content_rules.iter().enumerate() {
            actions.push((
                format!("scan.policy.content_rules[{i}].action"),
                &rule.action,
            ));
        }
        for (key, action) in actions {
            check_action(action).map_err(|problem| bad(&key, problem))?;
        }
        if let portcullis_scan::EncryptedAction::Forward { to } = &p.encrypted.action
            && !to.contains('@')
        {
            return Err(bad(
                "scan.policy.encrypted.action",
                format!("forward: {to:?} is not an email address"),
            ));
        }
        self.compile_policy(file)?;
        self.compile_notifications(file)?;
        self.compile_disclaimer(file)?;
        Ok(())
    }

    /// Compiles `[notifications]` (`None` without the section): an unknown template tag, a bad
    /// address or admin notices without an admin address are configuration errors naming the
    /// file and the key.
    pub fn compile_notifications(
        &self,
        file: &str,
    ) -> Result<Option<portcullis_scan::CompiledNotifications>, ConfigError> {
        let Some(config) = &self.notifications else {
            return Ok(None);
        };
        portcullis_scan::CompiledNotifications::compile(config.clone(), &self.server.hostname)
            .map(Some)
            .map_err(|e| {
                let key = match &e {
                    portcullis_scan::NotifyError::BadAddress { key, .. } => {
                        format!("notifications.{key}")
                    }
                    portcullis_scan::NotifyError::NoAdminAddress { violation } => {
                        format!("notifications.{violation}.admin")
                    }
                    portcullis_scan::NotifyError::UnknownTag { template, .. } => {
                        format!("notifications.{template}")
                    }
                };
                // The crate's messages start with the key already; say it once.
                let text = e.to_string();
                let problem = text
                    .strip_prefix(&format!("{key}: "))
                    .unwrap_or(&text)
                    .to_string();
                ConfigError::Invalid {
                    file: file.to_string(),
                    key,
                    problem,
                }
            })
    }

    /// Compiles `[disclaimer]`: `None` when no text is set; a text over 1,000 characters or with
    /// control characters is a configuration error.
    pub fn compile_disclaimer(
        &self,
        file: &str,
    ) -> Result<Option<portcullis_scan::Disclaimer>, ConfigError> {
        self.disclaimer.compile().map_err(|e| {
            // The crate's messages start with the key already; say it once.
            let text = e.to_string();
            let problem = text
                .strip_prefix("disclaimer.text ")
                .unwrap_or(&text)
                .to_string();
            ConfigError::Invalid {
                file: file.to_string(),
                key: "disclaimer.text".into(),
                problem,
            }
        })
    }

    /// Compiles `[scan.policy]`; an error names the file and the offending list.
    pub fn compile_policy(
        &self,
        file: &str,
    ) -> Result<portcullis_scan::CompiledPolicy, ConfigError> {
        portcullis_scan::CompiledPolicy::compile(self.scan.policy.clone()).map_err(|e| {
            let key = match e {
                portcullis_scan::PolicyError::EmptyPattern { what: "subject" } => {
                    "scan.policy.subjects.patterns"
                }
                portcullis_scan::PolicyError::EmptyPattern { .. } => {
                    "scan.policy.file_names.patterns"
                }
                _ => "scan.policy.content_rules",
            };
            ConfigError::Invalid {
                file: file.to_string(),
                key: key.to_string(),
                problem: e.to_string(),
            }
        })
    }

    /// The definitions store directory: `antivirus.definitions_dir`, or `<data_dir>/definitions`.
    pub fn definitions_dir(&self) -> PathBuf {
        if self.antivirus.definitions_dir.as_os_str().is_empty() {
            self.server.data_dir.join("definitions")
        } else {
            self.antivirus.definitions_dir.clone()
        }
    }

    /// The quarantine store directory.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.server.data_dir.join("quarantine")
    }

    /// The address bounces claim to come from.
    pub fn bounce_from(&self) -> String {
        if self.bounces.from.is_empty() {
            format!("MAILER-DAEMON@{}", self.server.hostname)
        } else {
            self.bounces.from.clone()
        }
    }

    /// The address alert mail comes from.
    pub fn alert_from(&self) -> String {
        if self.alerts.from.is_empty() {
            format!("portcullis@{}", self.server.hostname)
        } else {
            self.alerts.from.clone()
        }
    }

    /// The name we give in EHLO to next hops.
    pub fn helo_name(&self) -> &str {
        if self.delivery.helo_name.is_empty() {
            &self.server.hostname
        } else {
            &self.delivery.helo_name
        }
    }

    /// The control socket of the instance using this data directory.
    pub fn control_socket(&self) -> PathBuf {
        control_socket_path(&self.server.data_dir)
    }
}

/// Checks the parameters of a policy action: forward needs an address, a tag header must be
/// one `Name: value` line.
fn check_action(action: &portcullis_scan::Action) -> Result<(), String> {
    match action {
        portcullis_scan::Action::Forward { to } if !to.contains('@') => {
            Err(format!("forward: {to:?} is not an email address"))
        }
        portcullis_scan::Action::Tag {
            header: Some(h), ..
        } => {
            let valid = h.split_once(':').is_some_and(|(name, _)| {
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            }) && !h.contains(['\r', '\n']);
            if valid {
                Ok(())
            } else {
                Err(format!(
                    "tag: header {h:?} must be one \"Name: value\" line"
                ))
            }
        }
        portcullis_scan::Action::Tag {
            subject_prefix: Some(p),
            ..
        } if p.contains(['\r', '\n']) => Err("tag: subject_prefix must be one line".into()),
        _ => Ok(()),
    }
}

/// The control socket path for a data directory; `run` and the CLI agree on it.
pub fn control_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

fn system_hostname() -> String {
    let name = gethostname::gethostname().to_string_lossy().to_string();
    if is_hostname(&name) {
        name
    } else {
        "localhost".into()
    }
}

fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &Overrides::default())
    }

    #[test]
    fn embedded_default_is_valid_and_only_trusts_loopback() {
        let c = ConfigSource::Embedded.load(&Overrides::default()).unwrap();
        assert_eq!(c.smtp.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(c.console.listen, "127.0.0.1:8003".parse().unwrap());
        assert_eq!(c.server.data_dir, PathBuf::from("./var"));
        assert!(
            c.relay
                .relay_networks
                .iter()
                .all(|n| n.addr().is_loopback())
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_file_and_key() {
        let e = parse("[smtp]\nmax_sesions = 3\n").unwrap_err().to_string();
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("max_sesions"), "{e}");
    }

    #[test]
    fn zero_limit_is_rejected_with_its_key() {
        let e = parse("[smtp]\nmax_sessions = 0\n").unwrap_err().to_string();
        assert!(e.contains("smtp.max_sessions"), "{e}");
    }

    #[test]
    fn log_segment_size_outside_1_to_1024_mib_is_rejected_with_its_key() {
        for bad in ["0", "1025"] {
            let e = parse(&format!("[queue]\nlog_segment_mib = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("queue.log_segment_mib"), "{e}");
        }
        assert_eq!(
            parse("[queue]\nlog_segment_mib = 1\n")
                .unwrap()
                .queue
                .log_segment_mib,
            1
        );
    }

    #[test]
    fn bad_cidr_and_bad_duration_are_rejected() {
        assert!(parse("[relay]\nrelay_networks = [\"10.0.0.0/33\"]\n").is_err());
        assert!(parse("[queue]\nretry_schedule = [\"soon\"]\n").is_err());
        assert!(parse("[delivery]\ntls = \"sometimes\"\n").is_err());
        assert!(parse("[delivery]\ndefault_route = [\"nohostport\"]\n").is_err());
    }

    #[test]
    fn scan_and_antivirus_sections_have_defaults_and_parse_nested_policy() {
        let c = parse("").unwrap();
        assert!(c.antivirus.enabled);
        assert_eq!(c.antivirus.action, VirusAction::Reject);
        assert_eq!(c.scan.limits, portcullis_scan::Limits::default());
        let c = parse(
            "[antivirus]\naction = \"quarantine\"\n[scan.limits]\nmax_depth = 3\n[scan.policy.subjects]\npatterns = [\"*lottery*\"]\naction = \"reject\"\n",
        )
        .unwrap();
        assert_eq!(c.antivirus.action, VirusAction::Quarantine);
        assert_eq!(c.scan.limits.max_depth, 3);
        assert_eq!(
            c.scan.policy.subjects.action,
            portcullis_scan::Action::Reject
        );
    }

    #[test]
    fn policy_that_does_not_compile_is_a_config_error_naming_the_key() {
        let e = parse(
            "[[scan.policy.content_rules]]\nname = \"x\"\nterms = [\"*\"]\naction = \"drop\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("test.toml") && e.contains("scan.policy.content_rules"),
            "{e}"
        );
        let e = parse("[scan.policy.subjects]\npatterns = [\"x\"]\naction = { forward = { to = \"nobody\" } }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scan.policy.subjects.action"), "{e}");
        let e = parse("[antivirus]\naction = \"repair\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("repair"), "{e}");
        let e = parse("[scan.limits]\nmax_files = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scan.limits.max_files"), "{e}");
    }

    #[test]
    fn notifications_template_with_an_unknown_tag_is_a_config_error_naming_file_and_key() {
        let e = parse("[notifications.templates.admin]\nbody = \"Found: ${VIRUSNAME}\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.toml")
                && e.contains("notifications.templates.admin.body")
                && e.contains("${VIRUSNAME}"),
            "{e}"
        );
        let e = parse("[notifications]\nvirus = { admin = true }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("notifications.virus.admin"), "{e}");
        let e = parse("[notifications]\nfrom = \"not an address\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.toml: notifications.from:"), "{e}");
        let e = parse("[notifications]\nvirsu = { admin = true }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("virsu"), "{e}");
        let c = parse("[notifications]\nadmin = \"sec@example.com\"\nvirus = { sender = false, recipients = false, admin = true }\n").unwrap();
        let n = c.notifications.unwrap();
        assert!(n.virus.admin && !n.virus.recipients);
        assert!(
            parse("").unwrap().notifications.is_none(),
            "without the section nobody is notified"
        );
        let n = parse("[notifications]\n").unwrap().notifications.unwrap();
        assert_eq!(
            n,
            portcullis_scan::NotificationsConfig::default(),
            "an empty section takes every default"
        );
    }

    #[test]
    fn disclaimer_over_1000_characters_is_a_config_error_and_1000_are_fine() {
        let e = parse(&format!("[disclaimer]\ntext = \"{}\"\n", "x".repeat(1001)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.toml") && e.contains("disclaimer.text") && e.contains("1001"),
            "{e}"
        );
        let c = parse(&format!("[disclaimer]\ntext = \"{}\"\n", "x".repeat(1000))).unwrap();
        assert!(c.compile_disclaimer("test.toml").unwrap().is_some());
        assert!(
            parse("")
                .unwrap()
                .compile_disclaimer("test.toml")
                .unwrap()
                .is_none(),
            "no text, no disclaimer"
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            data_dir: Some("/tmp/x".into()),
            smtp_listen: Some("127.0.0.1:2626".parse().unwrap()),
            console_listen: None,
            relay: Some("127.0.0.1:2727".into()),
        };
        let c = Config::parse("[smtp]\nlisten = [\"127.0.0.1:25\"]\n", "t", &o).unwrap();
        assert_eq!(c.smtp.listen, vec!["127.0.0.1:2626".parse().unwrap()]);
        assert_eq!(c.delivery.default_route, vec!["127.0.0.1:2727".to_string()]);
        assert_eq!(c.server.data_dir, PathBuf::from("/tmp/x"));
    }
}

//! The `[log]` section of the configuration, with every default in one place.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::filter::{Component, LogLevel};

/// Default retention of rotated log files, in days.
pub const DEFAULT_RETENTION_DAYS: u32 = 14;
/// Default syslog facility: the appliance is a mail system.
pub const DEFAULT_FACILITY: Facility = Facility::Mail;
/// Default RFC 5424 APP-NAME.
pub const DEFAULT_APP_NAME: &str = "portcullis";

/// Where and how much Portcullis logs (`[log]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The level for everything not named in `components`. Default `info`.
    pub level: LogLevel,
    /// Per-component levels, e.g. `smtp = "debug"`; they take precedence over `level`.
    pub components: BTreeMap<Component, LogLevel>,
    /// Directory for daily log files; empty means no log files. Default empty.
    pub dir: PathBuf,
    /// Log files whose day ended more than this many days ago are deleted; 0 keeps them forever. Default 14.
    pub retention_days: u32,
    /// Write log lines to standard error (journald picks them up under systemd). Default true.
    pub stderr: bool,
    /// Ship every log event to a remote syslog server (a SIEM). Default none.
    pub syslog: Option<SyslogConfig>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LogLevel::Info,
            components: BTreeMap::new(),
            dir: PathBuf::new(),
            retention_days: DEFAULT_RETENTION_DAYS,
            stderr: true,
            syslog: None,
        }
    }
}

/// A remote syslog server (`[log.syslog]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// How messages travel: `udp` (RFC 5426), `tcp` (RFC 6587 octet counting) or `tls` (RFC 5425).
    pub transport: SyslogTransport,
    /// `host:port` of the server; resolved again at every reconnect so a changed DNS entry is followed.
    pub address: String,
    /// The facility of every message. Default `mail`.
    #[serde(default = "default_facility")]
    pub facility: Facility,
    /// The RFC 5424 APP-NAME. Default `portcullis`.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// PEM file with the CA certificates that may sign the server's certificate (TLS only); empty means the
    /// public Web PKI roots compiled into the binary.
    #[serde(default)]
    pub ca_file: PathBuf,
}

fn default_facility() -> Facility {
    DEFAULT_FACILITY
}

fn default_app_name() -> String {
    DEFAULT_APP_NAME.to_string()
}

/// The transport to the remote syslog server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyslogTransport {
    /// One datagram per message, at most 2048 bytes (RFC 5426); lost silently if the network drops it.
    Udp,
    /// A TCP stream with octet-counting framing (RFC 6587 §3.4.1).
    Tcp,
    /// TCP with TLS, octet-counting framing (RFC 5425). The only choice that protects log content in transit.
    Tls,
}

/// The syslog facility (RFC 5424 §6.2.1), the part of PRI that says which subsystem logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum Facility {
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Authpriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The numerical code from RFC 5424 Table 1.
    pub fn code(self) -> u8 {
        match self {
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Authpriv => 10,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_the_documented_defaults() {
        let config: LogConfig = toml::from_str("").unwrap();
        assert_eq!(config, LogConfig::default());
        assert_eq!(config.level, LogLevel::Info);
        assert_eq!(config.retention_days, 14);
        assert!(config.stderr);
        assert!(config.syslog.is_none());
        assert_eq!(config.dir, PathBuf::new());
    }

    #[test]
    fn full_section_deserializes_from_toml() {
        let config: LogConfig = toml::from_str(
            r#"
            level = "warn"
            dir = "/var/log/portcullis"
            retention_days = 30
            stderr = false
            [components]
            smtp = "debug"
            queue = "trace"
            [syslog]
            transport = "tls"
            address = "siem.example.net:6514"
            facility = "local3"
            app_name = "mx1"
            ca_file = "/etc/portcullis/siem-ca.pem"
            "#,
        )
        .unwrap();
        assert_eq!(config.level, LogLevel::Warn);
        assert_eq!(config.components[&Component::Smtp], LogLevel::Debug);
        assert_eq!(config.components[&Component::Queue], LogLevel::Trace);
        let syslog = config.syslog.unwrap();
        assert_eq!(syslog.transport, SyslogTransport::Tls);
        assert_eq!(syslog.facility.code(), 19);
        assert_eq!(syslog.app_name, "mx1");
    }

    #[test]
    fn syslog_defaults_to_mail_facility_and_portcullis_app_name() {
        let config: LogConfig =
            toml::from_str("[syslog]\ntransport = \"udp\"\naddress = \"127.0.0.1:514\"").unwrap();
        let syslog = config.syslog.unwrap();
        assert_eq!(syslog.facility, Facility::Mail);
        assert_eq!(syslog.app_name, "portcullis");
        assert_eq!(syslog.ca_file, PathBuf::new());
    }

    #[test]
    fn unknown_keys_and_components_are_rejected() {
        assert!(toml::from_str::<LogConfig>("colour = true").is_err());
        assert!(toml::from_str::<LogConfig>("[components]\nsmpt = \"debug\"").is_err());
        assert!(toml::from_str::<LogConfig>("level = \"loud\"").is_err());
    }
}

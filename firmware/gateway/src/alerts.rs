//! Alerts: telling the admin that something needs attention.
//!
//! Every alert is logged and appended to the alert log (`<data_dir>/alerts.jsonl`, which the
//! console and `portcullis alerts` show). If admin addresses are configured it is also mailed
//! through our own queue, with the null envelope sender so an undeliverable alert can never
//! bounce back into a loop. The same alert (kind and key) is mailed at most once per
//! `alerts.min_interval`; repeats in between are counted and reported with the next mail.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kinds of alert, named as in the config's `alerts.disabled` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// The appliance started.
    ServiceStart,
    /// The appliance stopped on request.
    ServiceStop,
    /// The previous run ended without an orderly shutdown (crash, kill, power cut).
    ImproperShutdown,
    /// Free disk space is below `alerts.low_disk_percent`.
    LowDisk,
    /// Free disk space is below the hard floor: new mail is being refused with 452.
    DiskFloor,
    /// Available memory is below `alerts.low_memory_percent`.
    LowMemory,
    /// New definitions were installed.
    DefinitionsUpdated,
    /// A definitions update failed.
    DefinitionsUpdateFailed,
    /// The installed definitions are older than allowed.
    DefinitionsStale,
    /// The configuration was changed.
    ConfigChanged,
    /// A message could not be scanned or decomposed.
    ScanError,
    /// A client broke the SMTP protocol.
    SmtpProtocolViolation,
    /// A client broke the HTTP protocol at the console.
    HttpProtocolViolation,
    /// Three failed logons at the console.
    ConsoleLogonFailures,
    /// The internal mail server (a route or the default route) could not be reached.
    InternalServerUnreachable,
    /// A client tried to use us as a relay.
    UnauthorizedAccess,
    /// A message was held as suspect.
    SuspectMessageHeld,
    /// Many infected messages in a short time.
    Outbreak,
    /// A part of the appliance failed or got stuck.
    ComponentFailure,
}

impl AlertKind {
    /// A short title for subjects and logs.
    pub fn title(self) -> &'static str {
        match self {
            AlertKind::ServiceStart => "service started",
            AlertKind::ServiceStop => "service stopped",
            AlertKind::ImproperShutdown => "improper shutdown detected",
            AlertKind::LowDisk => "low disk space",
            AlertKind::DiskFloor => "disk almost full: refusing new mail",
            AlertKind::LowMemory => "low memory",
            AlertKind::DefinitionsUpdated => "definitions updated",
            AlertKind::DefinitionsUpdateFailed => "definitions update failed",
            AlertKind::DefinitionsStale => "definitions are stale",
            AlertKind::ConfigChanged => "configuration changed",
            AlertKind::ScanError => "scan or decomposition error",
            AlertKind::SmtpProtocolViolation => "SMTP protocol violation",
            AlertKind::HttpProtocolViolation => "HTTP protocol violation",
            AlertKind::ConsoleLogonFailures => "failed console logons",
            AlertKind::InternalServerUnreachable => "cannot reach the internal mail server",
            AlertKind::UnauthorizedAccess => "unauthorized relay attempt",
            AlertKind::SuspectMessageHeld => "suspect message held",
            AlertKind::Outbreak => "virus outbreak",
            AlertKind::ComponentFailure => "component failure",
        }
    }
}

/// `[alerts]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Admin addresses alerts are mailed to; empty means log and alert log only.
    pub to: Vec<String>,
    /// `From:` of alert mail; empty means `portcullis@<hostname>`.
    pub from: String,
    /// The same alert is mailed at most once per this interval.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Alert kinds that are neither logged as alerts nor mailed.
    pub disabled: Vec<AlertKind>,
    /// Low-disk alert below this percentage of free space.
    pub low_disk_percent: f64,
    /// Below this percentage of free space new mail gets `452 4.3.1`.
    pub disk_floor_percent: f64,
    /// Low-memory alert below this percentage of available memory.
    pub low_memory_percent: f64,
    /// How often disk and memory are checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            to: Vec::new(),
            from: String::new(),
            min_interval: Duration::from_secs(15 * 60),
            disabled: Vec::new(),
            low_disk_percent: 10.0,
            disk_floor_percent: 2.0,
            low_memory_percent: 10.0,
            check_interval: Duration::from_secs(10),
        }
    }
}

/// One alert as kept in the alert log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertRecord {
    /// When it was raised.
    pub at: DateTime<Utc>,
    /// What kind.
    pub kind: AlertKind,
    /// What it is about (a client IP, a part name, a path…), for de-duplication.
    pub key: String,
    /// One line for a human.
    pub summary: String,
    /// Details.
    pub detail: String,
    /// Whether it was mailed (false when rate-limited or no addresses are configured).
    pub mailed: bool,
}

/// An alert to raise.
#[derive(Debug, Clone)]
pub struct Alert {
    /// What kind.
    pub kind: AlertKind,
    /// What it is about, for de-duplication.
    pub key: String,
    /// One line for a human.
    pub summary: String,
    /// Details.
    pub detail: String,
}

impl Alert {
    /// A new alert.
    pub fn new(
        kind: AlertKind,
        key: impl Into<String>,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) -> Alert {
        Alert {
            kind,
            key: key.into(),
            summary: summary.into(),
            detail: detail.into(),
        }
    }
}

/// What the alerter decided to do with an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Disabled by config: nothing done.
    Disabled,
    /// Logged only: no addresses, or repeated within `min_interval`.
    LogOnly,
    /// Mail it; `suppressed` repeats since the last mail.
    Mail {
        /// Repeats since the last mailed one.
        suppressed: u32,
    },
}

/// Rate limiting, de-duplication and the alert log.
pub struct Alerter {
    log_path: PathBuf,
    last: Mutex<HashMap<(AlertKind, String), (Instant, u32)>>,
}

/// Alert log size at which it is rotated to `alerts.jsonl.1`.
const ALERT_LOG_MAX: u64 = 4 * 1024 * 1024;

impl Alerter {
    /// An alerter keeping its log in `data_dir`.
    pub fn new(data_dir: &Path) -> Alerter {
        Alerter {
            log_path: data_dir.join("alerts.jsonl"),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Decides what to do with `alert`, logs it, and records it in the alert log.
    pub fn decide(&self, config: &AlertsSection, alert: &Alert) -> Delivery {
        if config.disabled.contains(&alert.kind) {
            return Delivery::Disabled;
        }
        let now = Instant::now();
        let decision = {
            let mut last = self.last.lock().expect("alert lock");
            let slot = last.entry((alert.kind, alert.key.clone()));
            match slot {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let (sent, suppressed) = e.get_mut();
                    if now.duration_since(*sent) < config.min_interval {
                        *suppressed += 1;
                        Delivery::LogOnly
                    } else {
                        let n = *suppressed;
                        *sent = now;
                        *suppressed = 0;
                        Delivery::Mail { suppressed: n }
                    }
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((now, 0));
                    Delivery::Mail { suppressed: 0 }
                }
            }
        };
        let decision = match decision {
            Delivery::Mail { .. } if config.to.is_empty() => Delivery::LogOnly,
            d => d,
        };
        tracing::warn!(
            target: "portcullis_gateway::alerts",
            kind = ?alert.kind,
            key = %alert.key,
            mailed = matches!(decision, Delivery::Mail { .. }),
            "ALERT {}: {}",
            alert.kind.title(),
            alert.summary
        );
        self.append(&AlertRecord {
            at: Utc::now(),
            kind: alert.kind,
            key: alert.key.clone(),
            summary: alert.summary.clone(),
            detail: alert.detail.clone(),
            mailed: matches!(decision, Delivery::Mail { .. }),
        });
        decision
    }

    fn append(&self, record: &AlertRecord) {
        if std::fs::metadata(&self.log_path)
            .map(|m| m.len() > ALERT_LOG_MAX)
            .unwrap_or(false)
        {
            let _ = std::fs::rename(&self.log_path, self.log_path.with_extension("jsonl.1"));
        }
        let line = match serde_json::to_string(record) {
            Ok(l) => l,
            Err(_) => return,
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::error!(path = %self.log_path.display(), error = %e, "cannot write the alert log");
        }
    }

    /// The newest `limit` alerts, newest first.
    pub fn recent(&self, limit: usize) -> Vec<AlertRecord> {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut out: Vec<AlertRecord> = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(limit)
            .collect();
        out.truncate(limit);
        out
    }
}

/// The alert e-mail.
pub fn compose_mail(
    hostname: &str,
    from: &str,
    to: &[String],
    alert: &Alert,
    suppressed: u32,
) -> Vec<u8> {
    let now = Utc::now();
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
    };
    let mut body = format!(
        "Portcullis on {hostname} raised an alert.\r\n\r\nAlert:   {}\r\nSummary: {}\r\nTime:    {}\r\n",
        alert.kind.title(),
        clean(&alert.summary),
        now.to_rfc2822()
    );
    if !alert.detail.is_empty() {
        body.push_str("\r\n");
        for line in alert.detail.lines() {
            body.push_str(line.trim_end_matches('\r'));
            body.push_str("\r\n");
        }
    }
    if suppressed > 0 {
        body.push_str(&format!("\r\n{suppressed} similar alert(s) were not mailed since the previous one (see the alert log).\r\n"));
    }
    format!(
        "From: Portcullis <{from}>\r\n\
         To: {to}\r\n\
         Subject: [portcullis {hostname}] {title}: {summary}\r\n\
         Date: {date}\r\n\
         Message-ID: <alert.{micros}@{hostname}>\r\n\
         Auto-Submitted: auto-generated\r\n\
         X-Portcullis-Alert: {kind}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         {body}",
        to = to
            .iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", "),
        title = alert.kind.title(),
        summary = clean(&alert.summary),
        date = now.to_rfc2822(),
        micros = now.timestamp_micros(),
        kind = serde_json::to_value(alert.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(to: &[&str]) -> AlertsSection {
        AlertsSection {
            to: to.iter().map(|s| s.to_string()).collect(),
            ..AlertsSection::default()
        }
    }

    #[test]
    fn repeated_alert_is_mailed_once_per_interval_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let a = Alerter::new(dir.path());
        let c = config(&["admin@example.com"]);
        let alert = Alert::new(
            AlertKind::UnauthorizedAccess,
            "192.0.2.7",
            "relay attempt",
            "",
        );
        assert_eq!(a.decide(&c, &alert), Delivery::Mail { suppressed: 0 });
        assert_eq!(a.decide(&c, &alert), Delivery::LogOnly);
        assert_eq!(a.decide(&c, &alert), Delivery::LogOnly);
        let other = Alert::new(
            AlertKind::UnauthorizedAccess,
            "192.0.2.8",
            "relay attempt",
            "",
        );
        assert_eq!(
            a.decide(&c, &other),
            Delivery::Mail { suppressed: 0 },
            "another key is another alert"
        );
        let short = AlertsSection {
            min_interval: Duration::ZERO,
            ..c
        };
        assert_eq!(a.decide(&short, &alert), Delivery::Mail { suppressed: 2 });
        let log = a.recent(10);
        assert_eq!(log.len(), 5);
        assert!(log[0].mailed && !log[2].mailed);
    }

    #[test]
    fn disabled_kind_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Alerter::new(dir.path());
        let c = AlertsSection {
            disabled: vec![AlertKind::ServiceStart],
            ..config(&["a@b.c"])
        };
        assert_eq!(
            a.decide(&c, &Alert::new(AlertKind::ServiceStart, "", "started", "")),
            Delivery::Disabled
        );
        assert!(a.recent(10).is_empty());
    }

    #[test]
    fn without_addresses_alerts_are_logged_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = Alerter::new(dir.path());
        assert_eq!(
            a.decide(
                &config(&[]),
                &Alert::new(AlertKind::LowDisk, "/", "5% free", "")
            ),
            Delivery::LogOnly
        );
        assert_eq!(a.recent(1)[0].kind, AlertKind::LowDisk);
    }

    #[test]
    fn alert_mail_cannot_be_header_injected_by_the_summary() {
        let mail = compose_mail(
            "mx",
            "p@mx",
            &["a@b.c".into()],
            &Alert::new(AlertKind::ScanError, "", "x\r\nBcc: evil@x", "d"),
            0,
        );
        let text = String::from_utf8(mail).unwrap();
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-generated"));
    }
}

//! The next hop: `fixtures/sink.py` (aiosmtpd) run as a guarded child, and the messages it stored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::process::{LineWatcher, die_with_parent, read_lossy, tail};
use crate::wait::{poll_for, wait_for};

/// How the sink behaves; see `fixtures/sink.py`.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Accept every recipient, ignoring the `defer*` / `reject*` rules.
    pub accept_all: bool,
    /// Answer every connection with 421 and close it.
    pub refuse_connect: bool,
    /// Offer STARTTLS with a self-signed certificate.
    pub starttls: bool,
}

/// A running aiosmtpd sink on 127.0.0.1, killed when dropped.
pub struct Sink {
    dir: TempDir,
    port: u16,
    options: SinkOptions,
    child: Option<Child>,
}

impl Sink {
    /// A sink with the default rules: `defer*` → 451 4.3.0, `reject*` → 550 5.1.1, else 250.
    pub fn start() -> Sink {
        Sink::start_with(SinkOptions::default())
    }

    /// A sink with the given behaviour on a port of its own choosing.
    pub fn start_with(options: SinkOptions) -> Sink {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-sink-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("messages")).expect("messages dir");
        let mut sink = Sink {
            dir,
            port: 0,
            options,
            child: None,
        };
        sink.spawn();
        sink
    }

    fn spawn(&mut self) {
        let mut command = Command::new(crate::python());
        command
            .arg(crate::fixture("sink.py"))
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.messages_dir())
            .arg("--events")
            .arg(self.events_path());
        if self.options.accept_all {
            command.arg("--accept-all");
        }
        if self.options.refuse_connect {
            command.arg("--refuse-connect");
        }
        if self.options.starttls {
            let (cert, key) = self.certificate();
            command
                .arg("--starttls")
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sink.log"))
            .expect("sink log");
        let mut child = die_with_parent(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr),
        )
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot start the aiosmtpd sink with {}: {error}",
                crate::python()
            )
        });
        let watcher = LineWatcher::new(child.stdout.take().expect("piped stdout"));
        let Some(ready) = watcher.wait_line("READY ", Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sink.py did not print READY; its log:\n{}",
                read_lossy(&self.dir.path().join("sink.log"))
            );
        };
        self.port = ready["READY ".len()..]
            .trim()
            .parse()
            .expect("READY <port>");
        self.child = Some(child);
    }

    /// A self-signed certificate and key for STARTTLS, made once per sink with rcgen.
    fn certificate(&self) -> (PathBuf, PathBuf) {
        let cert_path = self.dir.path().join("sink-cert.pem");
        let key_path = self.dir.path().join("sink-key.pem");
        if !cert_path.exists() {
            let certified =
                rcgen::generate_simple_self_signed(vec!["sink.test".to_string()]).expect("rcgen");
            std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
            std::fs::write(&key_path, certified.key_pair.serialize_pem()).expect("write key");
        }
        (cert_path, key_path)
    }

    /// Stops the sink and starts it again on the same port with new behaviour; stored messages stay.
    pub fn restart_with(&mut self, options: SinkOptions) {
        self.stop();
        self.options = options;
        self.spawn();
    }

    /// Stops the sink (the port then refuses connections) until [`Sink::restart_with`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:PORT", as a route or default route entry.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the stored messages are.
    pub fn messages_dir(&self) -> PathBuf {
        self.dir.path().join("messages")
    }

    fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// Every message stored so far, in arrival order.
    pub fn messages(&self) -> Vec<SinkMessage> {
        let mut names: Vec<String> = std::fs::read_dir(self.messages_dir())
            .expect("read sink dir")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".msg") && !name.starts_with('.'))
            .collect();
        names.sort_by_key(|name| arrival_key(name));
        names
            .iter()
            .map(|name| SinkMessage::read(&self.messages_dir().join(name)))
            .collect()
    }

    /// Messages stored whose file names are not in `seen` (adds them), for incremental scans of big runs.
    pub fn new_messages(&self, seen: &mut BTreeSet<String>) -> Vec<SinkMessage> {
        let mut fresh = Vec::new();
        for entry in std::fs::read_dir(self.messages_dir())
            .expect("read sink dir")
            .flatten()
        {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.ends_with(".msg") && !name.starts_with('.') && seen.insert(name.clone()) {
                fresh.push(SinkMessage::read(&entry.path()));
            }
        }
        fresh
    }

    /// Waits until at least `count` messages are stored and returns them all.
    #[track_caller]
    pub fn wait_for_messages(&self, count: usize, timeout: Duration) -> Vec<SinkMessage> {
        let found = poll_for(timeout, || {
            let messages = self.messages();
            (messages.len() >= count).then_some(messages)
        });
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {count} message(s) at the sink on port {}: only {} arrived",
                self.port,
                self.messages().len()
            )
        })
    }

    /// Waits for the first stored message that satisfies `predicate`.
    #[track_caller]
    pub fn wait_for_message(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&SinkMessage) -> bool,
    ) -> SinkMessage {
        wait_for(
            format!("{what} at the sink on port {}", self.port),
            timeout,
            || self.messages().into_iter().find(|m| predicate(m)),
        )
    }

    /// The events the sink logged (`rcpt` verdicts, `message`, `refused` connections).
    pub fn events(&self) -> Vec<Value> {
        read_lossy(&self.events_path())
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until the sink has answered RCPT for `recipient` with a reply starting with `code`.
    #[track_caller]
    pub fn wait_for_rcpt_verdict(&self, recipient: &str, code: &str, timeout: Duration) {
        wait_for(
            format!("RCPT {recipient} answered {code} by the sink"),
            timeout,
            || {
                self.events()
                    .iter()
                    .any(|e| {
                        e["event"] == "rcpt"
                            && e["rcpt"] == recipient
                            && e["reply"].as_str().is_some_and(|r| r.starts_with(code))
                    })
                    .then_some(())
            },
        )
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = read_lossy(&self.dir.path().join("sink.log"));
            if !log.trim().is_empty() {
                eprintln!(
                    "----- sink on port {} stderr -----\n{}",
                    self.port,
                    tail(&log, 60)
                );
            }
            eprintln!(
                "----- sink on port {} events -----\n{}",
                self.port,
                tail(&read_lossy(&self.events_path()), 60)
            );
        }
    }
}

/// Sorts "<nanoseconds>-<n>.msg" numerically, so arrival order survives a change in digit count.
fn arrival_key(name: &str) -> (u128, u64) {
    let stem = name.trim_end_matches(".msg");
    let (ns, n) = stem.split_once('-').unwrap_or((stem, "0"));
    (ns.parse().unwrap_or(0), n.parse().unwrap_or(0))
}

/// One message as the next hop received it.
#[derive(Debug, Clone)]
pub struct SinkMessage {
    /// The file it was stored in.
    pub file: String,
    /// MAIL FROM ("" for the null sender).
    pub mail_from: String,
    /// The accepted RCPT TO addresses.
    pub rcpt_to: Vec<String>,
    /// True if the session had switched to TLS (STARTTLS) before the message.
    pub tls: bool,
    /// The message bytes (CRLF line endings, dot-unstuffed).
    pub data: Vec<u8>,
}

impl SinkMessage {
    fn read(path: &Path) -> SinkMessage {
        let raw =
            std::fs::read(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        let newline = raw.iter().position(|&b| b == b'\n').expect("envelope line");
        let meta: Value = serde_json::from_slice(&raw[..newline]).expect("envelope JSON");
        SinkMessage {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            mail_from: meta["mail_from"].as_str().unwrap_or_default().to_string(),
            rcpt_to: meta["rcpt_to"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            tls: meta["tls"].as_bool().unwrap_or(false),
            data: raw[newline + 1..].to_vec(),
        }
    }

    /// The message as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The header block (up to the first empty line), without the separating empty line.
    pub fn header_block(&self) -> String {
        let text = self.text();
        match text.find("\r\n\r\n") {
            Some(end) => text[..end + 2].to_string(),
            None => text,
        }
    }

    /// The body bytes after the first empty line.
    pub fn body(&self) -> &[u8] {
        match self.data.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => &self.data[end + 4..],
            None => &[],
        }
    }

    /// Every value of header `name` (case-insensitive), unfolded, in order of appearance.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in self.header_block().split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(value) = current.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if let Some(value) = current.take() {
                values.push(value);
            }
            if let Some((field, value)) = line.split_once(':')
                && field.eq_ignore_ascii_case(name)
            {
                current = Some(value.trim().to_string());
            }
        }
        values.extend(current);
        values
    }

    /// The first value of header `name`, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// True if this is a delivery status notification (RFC 3464 multipart/report; report-type=delivery-status).
    pub fn is_dsn(&self) -> bool {
        self.header("Content-Type").is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("multipart/report") && ct.contains("delivery-status")
        })
    }
}

//! Remote syslog (RFC 5424 messages over UDP, TCP or TLS) as a tracing layer.
//!
//! The layer formats each event on the thread that logged it and hands the finished line to a bounded channel.
//! One background thread (the shipper) owns the connection. Logging must never wait for the network, so a full
//! channel drops the line and counts it; the shipper reconnects with backoff while lines wait in its backlog.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::fs;
use std::io::{self, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, warn};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use crate::LoggingError;
use crate::config::{Facility, SyslogConfig, SyslogTransport};
use crate::filter::Component;

/// Lines waiting for the shipper. Enough to ride out a reconnect during a burst, small enough that a dead
/// server costs at most a few megabytes.
pub(crate) const CHANNEL_CAPACITY: usize = 1024;

/// Largest UDP datagram we send: every receiver must accept 2048 bytes (RFC 5426 §3.2), and larger datagrams
/// risk fragmentation and silent loss.
pub(crate) const MAX_UDP_RECORD: usize = 2048;

/// Largest record over TCP or TLS (RFC 5425 §4.3.1 asks receivers to support 8192 octets).
pub(crate) const MAX_STREAM_RECORD: usize = 8192;

/// Reconnect delays double from the first to the last, so a dead server is not hammered.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LAST_BACKOFF: Duration = Duration::from_secs(60);

/// A stuck server must not hold the shipper forever; after this the connection is dropped and reopened.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Drops are reported to the local log at most this often.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// The `origin` SD element software name (RFC 5424 §7.2.3).
const SOFTWARE: &str = "portcullis";

/// The parts of the RFC 5424 header that are the same for every message of this process.
#[derive(Debug, Clone)]
pub(crate) struct RecordFormat {
    facility: Facility,
    hostname: String,
    app_name: String,
    procid: String,
}

impl RecordFormat {
    /// The header fields, cut to their RFC 5424 lengths and to printable ASCII.
    pub(crate) fn new(facility: Facility, hostname: &str, app_name: &str, pid: u32) -> Self {
        RecordFormat {
            facility,
            hostname: header_field(hostname, 255),
            app_name: header_field(app_name, 48),
            procid: header_field(&pid.to_string(), 128),
        }
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] BOM MSG`, without any framing.
    ///
    /// MSGID is the component the event came from (`smtp`, `queue`, …) so a SIEM can route on it.
    pub(crate) fn format(
        &self,
        level: Level,
        target: &str,
        message: &str,
        time: SystemTime,
    ) -> String {
        let msgid = match Component::of_target(target) {
            Some(component) => component.name().to_string(),
            None => header_field(target.split("::").next().unwrap_or(target), 32),
        };
        let timestamp = DateTime::<Utc>::from(time).format("%Y-%m-%dT%H:%M:%S%.6fZ");
        format!(
            "<{pri}>1 {timestamp} {host} {app} {procid} {msgid} [origin software=\"{software}\" swVersion=\"{version}\"] \u{feff}{message}",
            pri = pri(self.facility, level),
            host = self.hostname,
            app = self.app_name,
            procid = self.procid,
            software = sd_param_value(SOFTWARE),
            version = sd_param_value(env!("CARGO_PKG_VERSION")),
        )
    }
}

/// PRI = facility × 8 + severity (RFC 5424 §6.2.1). Tracing has no notice, critical or worse.
pub(crate) fn pri(facility: Facility, level: Level) -> u8 {
    let severity = match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    };
    facility.code() * 8 + severity
}

/// A header field: PRINTUSASCII only, at most `max` characters, `-` (NILVALUE) when empty.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() {
        "-".to_string()
    } else {
        field
    }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped by a backslash (RFC 5424 §6.3.3).
pub(crate) fn sd_param_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Cuts a record to at most `max` bytes without splitting a UTF-8 character, so the receiver still gets valid
/// UTF-8 in MSG.
pub(crate) fn truncate_record(record: &mut String, max: usize) {
    if record.len() <= max {
        return;
    }
    let mut end = max;
    while !record.is_char_boundary(end) {
        end -= 1;
    }
    record.truncate(end);
}

/// Collects an event's message and fields as `message key=value key=value`.
#[derive(Default)]
struct MessageText {
    message: String,
    fields: String,
}

impl MessageText {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let _ = write!(self.fields, " {}={}", field.name(), value);
    }

    /// The finished MSG: control characters are escaped so one event stays one line in any SIEM.
    fn finish(self) -> String {
        let fields = if self.message.is_empty() {
            self.fields.trim_start()
        } else {
            self.fields.as_str()
        };
        let mut out = String::with_capacity(self.message.len() + fields.len());
        for c in self.message.chars().chain(fields.chars()) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        out
    }
}

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if value.is_empty() || value.contains([' ', '"', '=', '\\']) {
            self.field(field, format_args!("{value:?}"));
        } else {
            self.field(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

/// What the layer sends to the shipper.
pub(crate) enum Outgoing {
    /// A formatted record, without framing.
    Record(String),
    /// Send everything queued before this, then acknowledge.
    Flush(SyncSender<()>),
}

/// The tracing layer that formats events as RFC 5424 records and queues them for the shipper.
pub(crate) struct SyslogLayer {
    format: RecordFormat,
    queue: SyncSender<Outgoing>,
    dropped: Arc<AtomicU64>,
}

impl<S: Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        // The shipper's own complaints about the connection would otherwise feed back into it.
        if metadata.target().starts_with(module_path!()) {
            return;
        }
        let mut text = MessageText::default();
        event.record(&mut text);
        let record = self.format.format(
            *metadata.level(),
            metadata.target(),
            &text.finish(),
            SystemTime::now(),
        );
        match self.queue.try_send(Outgoing::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The LogHandle's side of remote syslog: the drop counter and a way to flush at shutdown.
pub(crate) struct SyslogHandle {
    queue: SyncSender<Outgoing>,
    dropped: Arc<AtomicU64>,
}

impl SyslogHandle {
    /// Records that could not be queued or sent since start.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits up to `limit` for the shipper to send what is queued.
    pub(crate) fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (ack, acked) = mpsc::sync_channel(1);
        let mut request = Outgoing::Flush(ack);
        loop {
            match self.queue.try_send(request) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    request = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        acked
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// Builds the layer and starts the shipper thread. TLS settings and the CA file are checked here, so a bad
/// configuration is reported at start-up rather than as endless reconnects.
pub(crate) fn start(
    config: &SyslogConfig,
    hostname: &str,
) -> Result<(SyslogLayer, SyslogHandle), LoggingError> {
    start_with_capacity(config, hostname, CHANNEL_CAPACITY)
}

pub(crate) fn start_with_capacity(
    config: &SyslogConfig,
    hostname: &str,
    capacity: usize,
) -> Result<(SyslogLayer, SyslogHandle), LoggingError> {
    let destination = Destination::new(config)?;
    let (queue, incoming) = mpsc::sync_channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let shipper = Shipper {
        destination,
        link: None,
        backlog: VecDeque::new(),
        capacity,
        dropped: dropped.clone(),
        backoff: FIRST_BACKOFF,
        next_attempt: Instant::now(),
        reported_drops: 0,
        last_report: None,
    };
    std::thread::Builder::new()
        .name("syslog-shipper".into())
        .spawn(move || shipper.run(incoming))
        .map_err(|e| LoggingError::Syslog {
            address: config.address.clone(),
            reason: format!("cannot start the sender thread: {e}"),
        })?;
    let layer = SyslogLayer {
        format: RecordFormat::new(
            config.facility,
            hostname,
            &config.app_name,
            std::process::id(),
        ),
        queue: queue.clone(),
        dropped: dropped.clone(),
    };
    Ok((layer, SyslogHandle { queue, dropped }))
}

/// Where records go and how.
struct Destination {
    address: String,
    transport: Transport,
}

enum Transport {
    Udp,
    Tcp,
    Tls {
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    },
}

impl Destination {
    fn new(config: &SyslogConfig) -> Result<Self, LoggingError> {
        let bad = |reason: String| LoggingError::Syslog {
            address: config.address.clone(),
            reason,
        };
        let (host, port) = config
            .address
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port".into()))?;
        port.parse::<u16>()
            .map_err(|_| bad(format!("{port:?} is not a port number")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the host is missing".into()));
        }
        let transport = match config.transport {
            SyslogTransport::Udp => Transport::Udp,
            SyslogTransport::Tcp => Transport::Tcp,
            SyslogTransport::Tls => {
                let name = ServerName::try_from(host.to_string()).map_err(|e| {
                    bad(format!(
                        "{host:?} cannot be checked against a certificate: {e}"
                    ))
                })?;
                Transport::Tls {
                    config: Arc::new(tls_config(&config.ca_file)?),
                    name,
                }
            }
        };
        Ok(Destination {
            address: config.address.clone(),
            transport,
        })
    }

    fn max_record(&self) -> usize {
        match self.transport {
            Transport::Udp => MAX_UDP_RECORD,
            Transport::Tcp | Transport::Tls { .. } => MAX_STREAM_RECORD,
        }
    }

    /// Resolves the address afresh (the server may have moved) and connects to the first address that answers.
    fn connect(&self) -> io::Result<Link> {
        let addresses: Vec<SocketAddr> = self.address.to_socket_addrs()?.collect();
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the name has no addresses");
        for address in addresses {
            let opened = match &self.transport {
                Transport::Udp => open_udp(address).map(Link::Udp),
                Transport::Tcp => open_tcp(address).map(Link::Tcp),
                Transport::Tls { config, name } => open_tcp(address).and_then(|tcp| {
                    let session = ClientConnection::new(config.clone(), name.clone())
                        .map_err(io::Error::other)?;
                    let mut stream = StreamOwned::new(session, tcp);
                    // Handshake now, so a certificate problem shows up as a failed connect, not a failed send.
                    while stream.conn.is_handshaking() {
                        stream.conn.complete_io(&mut stream.sock)?;
                    }
                    Ok(Link::Tls(Box::new(stream)))
                }),
            };
            match opened {
                Ok(link) => return Ok(link),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }
}

fn open_udp(address: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if address.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(address)?;
    Ok(socket)
}

fn open_tcp(address: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// TLS client settings: the ring provider, and as trust anchors either the CA file or the Web PKI roots.
fn tls_config(ca_file: &Path) -> Result<ClientConfig, LoggingError> {
    let mut roots = RootCertStore::empty();
    if ca_file.as_os_str().is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        let bad = |reason: String| LoggingError::CaFile {
            path: ca_file.to_path_buf(),
            reason,
        };
        let file = fs::File::open(ca_file).map_err(|e| bad(e.to_string()))?;
        for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no PEM certificates in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoggingError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// An open connection to the syslog server.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Link {
    /// Sends one record: a datagram, or `LEN SP MSG` octet counting on streams (RFC 6587 §3.4.1, RFC 5425 §4.3).
    fn send(&mut self, record: &str) -> io::Result<()> {
        match self {
            Link::Udp(socket) => socket.send(record.as_bytes()).map(drop),
            Link::Tcp(stream) => stream.write_all(framed(record).as_bytes()),
            Link::Tls(stream) => {
                stream.write_all(framed(record).as_bytes())?;
                stream.flush()
            }
        }
    }

    /// Loss of a datagram is normal for UDP and no reason to reconnect.
    fn is_datagram(&self) -> bool {
        matches!(self, Link::Udp(_))
    }
}

fn framed(record: &str) -> String {
    format!("{} {record}", record.len())
}

/// The background sender: owns the connection and a bounded backlog of records waiting for it.
struct Shipper {
    destination: Destination,
    link: Option<Link>,
    backlog: VecDeque<String>,
    capacity: usize,
    dropped: Arc<AtomicU64>,
    backoff: Duration,
    next_attempt: Instant,
    reported_drops: u64,
    last_report: Option<Instant>,
}

impl Shipper {
    fn run(mut self, incoming: Receiver<Outgoing>) {
        loop {
            self.ship_when_due();
            let item = if self.backlog.is_empty() {
                incoming.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                incoming.recv_timeout(self.next_attempt.saturating_duration_since(Instant::now()))
            };
            match item {
                Ok(Outgoing::Record(mut record)) => {
                    truncate_record(&mut record, self.destination.max_record());
                    if self.backlog.len() < self.capacity {
                        self.backlog.push_back(record);
                    } else {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Outgoing::Flush(ack)) => {
                    self.ship_when_due();
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.ship_when_due();
                    return;
                }
            }
        }
    }

    /// Sends the backlog unless we are waiting out a reconnect delay.
    fn ship_when_due(&mut self) {
        if self.backlog.is_empty() || Instant::now() < self.next_attempt {
            return;
        }
        if self.link.is_none() {
            match self.destination.connect() {
                Ok(link) => self.link = Some(link),
                Err(e) => {
                    warn!(address = %self.destination.address, error = %e, retry_in = ?self.backoff, "cannot connect to the remote syslog server");
                    self.wait_before_retry();
                    return;
                }
            }
        }
        while let (Some(record), Some(link)) = (self.backlog.front(), self.link.as_mut()) {
            match link.send(record) {
                Ok(()) => {
                    self.backlog.pop_front();
                    self.backoff = FIRST_BACKOFF;
                }
                Err(_) if link.is_datagram() => {
                    self.backlog.pop_front();
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(address = %self.destination.address, error = %e, "lost the connection to the remote syslog server");
                    self.link = None;
                    self.wait_before_retry();
                }
            }
        }
        self.report_drops();
    }

    fn wait_before_retry(&mut self) {
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(LAST_BACKOFF);
    }

    /// Tells the local log (never the remote one) that records were lost, at most once a minute.
    fn report_drops(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let due = self
            .last_report
            .is_none_or(|at| at.elapsed() >= DROP_REPORT_INTERVAL);
        if dropped > self.reported_drops && due {
            warn!(
                address = %self.destination.address,
                dropped = dropped - self.reported_drops,
                dropped_total = dropped,
                "remote syslog records were dropped (queue full or server unreachable)"
            );
            self.reported_drops = dropped;
            self.last_report = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::thread;

    use tracing::{error, info};
    use tracing_subscriber::Registry;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn config(transport: SyslogTransport, address: String) -> SyslogConfig {
        SyslogConfig {
            transport,
            address,
            facility: Facility::Mail,
            app_name: "portcullis".into(),
            ca_file: PathBuf::new(),
        }
    }

    /// Runs `emit` with only the syslog layer installed, then waits until the queue is sent.
    fn with_syslog(config: &SyslogConfig, emit: impl FnOnce()) -> SyslogHandle {
        let (layer, handle) = start(config, "mx1.example.net").unwrap();
        let subscriber = Registry::default().with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        assert!(
            handle.flush(Duration::from_secs(5)),
            "syslog queue was not sent"
        );
        handle
    }

    /// Reads one octet-counted frame (`LEN SP MSG`).
    fn read_frame(stream: &mut impl Read) -> String {
        let mut length = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            stream.read_exact(&mut byte).unwrap();
            if byte[0] == b' ' {
                break;
            }
            assert!(byte[0].is_ascii_digit(), "bad frame length byte {byte:?}");
            length.push(byte[0]);
        }
        let length: usize = String::from_utf8(length).unwrap().parse().unwrap();
        let mut record = vec![0u8; length];
        stream.read_exact(&mut record).unwrap();
        String::from_utf8(record).unwrap()
    }

    /// Splits a record into its six header fields, SD and MSG.
    fn parts(record: &str) -> (Vec<&str>, &str) {
        let (header, msg) = record.split_once(" \u{feff}").expect("BOM before MSG");
        (header.splitn(7, ' ').collect(), msg)
    }

    #[test]
    fn pri_is_facility_times_eight_plus_severity() {
        assert_eq!(pri(Facility::Mail, Level::INFO), 22);
        assert_eq!(pri(Facility::Mail, Level::ERROR), 19);
        assert_eq!(pri(Facility::Mail, Level::WARN), 20);
        assert_eq!(pri(Facility::Local7, Level::DEBUG), 191);
        assert_eq!(pri(Facility::User, Level::TRACE), 15);
        assert_eq!(pri(Facility::Local0, Level::ERROR), 131);
    }

    #[test]
    fn record_has_the_rfc5424_header_sd_and_bom_before_utf8_msg() {
        let format = RecordFormat::new(Facility::Mail, "mx1.example.net", "portcullis", 4242);
        let time = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let record = format.format(Level::WARN, "portcullis_gateway::control", "grüße ok", time);
        assert_eq!(
            record,
            format!(
                "<20>1 2023-11-14T22:13:20.123456Z mx1.example.net portcullis 4242 control [origin software=\"portcullis\" swVersion=\"{}\"] \u{feff}grüße ok",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn header_fields_are_printable_ascii_bounded_or_nil() {
        let format = RecordFormat::new(Facility::Mail, "", &"a b".repeat(40), 1);
        let record = format.format(Level::INFO, "some_crate::x", "m", SystemTime::now());
        let (fields, _) = parts(&record);
        assert_eq!(fields[2], "-");
        assert_eq!(fields[3], "ab".repeat(24));
        assert_eq!(fields[5], "some_crate");
    }

    #[test]
    fn sd_param_values_escape_quote_backslash_and_bracket() {
        assert_eq!(sd_param_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(sd_param_value("plain [ok"), "plain [ok");
    }

    #[test]
    fn truncation_never_splits_a_utf8_character() {
        let mut record = format!("{}é", "a".repeat(2047));
        truncate_record(&mut record, MAX_UDP_RECORD);
        assert_eq!(record.len(), 2047);
        let mut short = "short".to_string();
        truncate_record(&mut short, MAX_UDP_RECORD);
        assert_eq!(short, "short");
    }

    #[test]
    fn udp_receiver_gets_one_datagram_per_event_with_fields_in_msg() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let config = config(
            SyslogTransport::Udp,
            receiver.local_addr().unwrap().to_string(),
        );
        let handle = with_syslog(&config, || {
            info!(target: "portcullis_smtp::session", session_id = 5, client_ip = %"192.0.2.7", helo = "a b", "session ended");
            error!(target: "portcullis_queue", "disk\nfull");
            info!(target: "portcullis_smtp", "{}", "ü".repeat(3000));
        });
        let mut datagram = [0u8; 65536];
        let mut next = || {
            let n = receiver.recv(&mut datagram).unwrap();
            String::from_utf8(datagram[..n].to_vec()).expect("valid UTF-8")
        };
        let first = next();
        let (fields, msg) = parts(&first);
        assert_eq!(fields[0], "<22>1");
        assert_eq!(fields[2], "mx1.example.net");
        assert_eq!(fields[3], "portcullis");
        assert_eq!(fields[4], std::process::id().to_string());
        assert_eq!(fields[5], "smtp");
        assert_eq!(
            msg,
            r#"session ended session_id=5 client_ip=192.0.2.7 helo="a b""#
        );
        let second = next();
        assert!(second.starts_with("<19>1 "), "{second}");
        assert!(second.ends_with("disk\\nfull"), "{second}");
        let long = next();
        assert!(long.len() <= MAX_UDP_RECORD, "{}", long.len());
        assert!(long.len() > MAX_UDP_RECORD - 4);
        assert_eq!(handle.dropped(), 0);
    }

    #[test]
    fn tcp_receiver_gets_octet_counted_frames() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let config = config(
            SyslogTransport::Tcp,
            listener.local_addr().unwrap().to_string(),
        );
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            (0..3).map(|_| read_frame(&mut stream)).collect::<Vec<_>>()
        });
        with_syslog(&config, || {
            info!(target: "portcullis_delivery", next_hop = "mx.example.org", "first");
            info!(target: "portcullis_delivery", "second\r\nline");
            info!(target: "portcullis_delivery", "{}", "x".repeat(10_000));
        });
        let frames = server.join().unwrap();
        assert!(
            frames[0].ends_with("\u{feff}first next_hop=mx.example.org"),
            "{}",
            frames[0]
        );
        assert!(frames[0].starts_with("<22>1 "));
        assert!(frames[1].ends_with("second\\r\\nline"), "{}", frames[1]);
        assert_eq!(frames[2].len(), MAX_STREAM_RECORD);
    }

    #[test]
    fn tls_receiver_trusted_through_ca_file_gets_framed_records() {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        fs::write(&ca_file, certified.cert.pem()).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = config(
            SyslogTransport::Tls,
            listener.local_addr().unwrap().to_string(),
        );
        config.ca_file = ca_file;
        let server = thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let session = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
            let mut stream = StreamOwned::new(session, tcp);
            (0..2).map(|_| read_frame(&mut stream)).collect::<Vec<_>>()
        });
        with_syslog(&config, || {
            info!(target: "portcullis_scan", verdict = "clean", "scanned");
            error!(target: "portcullis_defs", "update failed");
        });
        let frames = server.join().unwrap();
        assert!(
            frames[0].ends_with("\u{feff}scanned verdict=clean"),
            "{}",
            frames[0]
        );
        assert!(frames[1].starts_with("<19>1 "), "{}", frames[1]);
        assert_eq!(parts(&frames[1]).0[5], "defs");
    }

    #[test]
    fn tls_refuses_a_server_not_signed_by_the_ca_file() {
        let trusted = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let served = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        fs::write(&ca_file, trusted.cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(served.key_pair.serialize_der().into());
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![served.cert.der().clone()], key)
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = config(
            SyslogTransport::Tls,
            listener.local_addr().unwrap().to_string(),
        );
        config.ca_file = ca_file;
        let server = thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let session = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
            let mut stream = StreamOwned::new(session, tcp);
            let mut buf = [0u8; 64];
            stream.read(&mut buf).map(|n| n > 0).unwrap_or(false)
        });
        let destination = Destination::new(&config).unwrap();
        assert!(destination.connect().is_err());
        assert!(!server.join().unwrap(), "the server must not receive data");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        for ca_file in [dir.path().join("missing.pem"), empty] {
            let mut config = config(SyslogTransport::Tls, "127.0.0.1:6514".into());
            config.ca_file = ca_file;
            assert!(matches!(
                Destination::new(&config),
                Err(LoggingError::CaFile { .. })
            ));
        }
        assert!(Destination::new(&config(SyslogTransport::Udp, "no-port".into())).is_err());
    }

    #[test]
    fn a_full_queue_drops_records_instead_of_blocking() {
        // Nobody listens on this port, so the shipper sits in reconnect backoff and nothing drains.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = config(SyslogTransport::Tcp, format!("127.0.0.1:{port}"));
        let (layer, handle) = start_with_capacity(&config, "mx", 4).unwrap();
        let subscriber = Registry::default().with(layer);
        let started = Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..20_000 {
                info!(target: "portcullis_smtp", n, "burst");
            }
        });
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "logging was slowed down: {:?}",
            started.elapsed()
        );
        assert!(handle.dropped() >= 20_000 - 8, "{}", handle.dropped());
    }

    #[test]
    fn shipper_reconnects_after_the_server_drops_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let config = config(
            SyslogTransport::Tcp,
            listener.local_addr().unwrap().to_string(),
        );
        let server = thread::spawn(move || {
            let (mut first, _) = listener.accept().unwrap();
            let greeting = read_frame(&mut first);
            drop(first);
            let (mut second, _) = listener.accept().unwrap();
            (greeting, read_frame(&mut second))
        });
        let (layer, _handle) = start(&config, "mx").unwrap();
        let subscriber = Registry::default().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            info!(target: "portcullis_smtp", "before");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !server.is_finished() && Instant::now() < deadline {
                info!(target: "portcullis_smtp", "after");
                thread::sleep(Duration::from_millis(50));
            }
        });
        let (first, second) = server.join().unwrap();
        assert!(first.ends_with("before"), "{first}");
        assert!(second.ends_with("after"), "{second}");
    }
}

//! The SMTP client: one connection, one transaction, a result per recipient.
//!
//! A delivery walks through the candidates of a [`NextHop`] until one gives us a session (greeting and
//! EHLO/HELO accepted). From the moment MAIL FROM is sent the transaction belongs to that host: whatever
//! happens next is reported per recipient and the scheduler decides about retries.

use bytes::Bytes;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::data::DotStuffer;
use crate::reply::{MAX_LINE, RemoteReply, ReplyParser};
use crate::{Candidate, NextHop, tls};

use cache::Session;
pub use cache::{SessionCache, SessionCacheLimits};

/// Whether the client uses STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS whenever the server offers it, without certificate verification (like Postfix "may");
    /// if the handshake fails, the same host is retried once in plaintext.
    #[default]
    Opportunistic,
    /// Never use STARTTLS.
    Disabled,
}

/// How the client talks to remote servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO; should resolve back to the gateway's public address.
    pub helo_name: String,
    /// Longest wait for a TCP connection (default 30 s).
    pub connect_timeout: Duration,
    /// Longest wait for the greeting, each command's reply and the TLS handshake (default 5 min).
    pub command_timeout: Duration,
    /// Longest wait for each write of the message body and for the reply to the final "." (default 10 min).
    pub data_timeout: Duration,
    /// STARTTLS policy.
    pub tls: TlsMode,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            helo_name: "localhost".into(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            tls: TlsMode::Opportunistic,
        }
    }
}

/// Where the message bytes (headers and body, CRLF line endings) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSource {
    /// A spool file from `offset` to its end (the message after the spool header).
    Spool {
        /// The spool file.
        path: PathBuf,
        /// Byte offset where the message starts.
        offset: u64,
    },
    /// The message in memory: the queue keeps recently committed messages, so the common case
    /// of delivering a message right after it arrived costs no file read.
    Memory(Bytes),
}

/// The open message during an attempt: a file handle, or the bytes themselves.
enum Body {
    File { file: File, offset: u64 },
    Memory(Bytes),
}

/// The envelope of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transaction<'a> {
    /// The reverse path; `""` for the null sender `<>` (bounces).
    pub sender: &'a str,
    /// Recipients for this next hop, in the order results are reported.
    pub recipients: &'a [String],
    /// The message needs SMTPUTF8 (non-ASCII addresses or headers).
    pub smtputf8: bool,
    /// The message has 8-bit content (sent with BODY=8BITMIME when offered).
    pub eight_bit: bool,
    /// Message size in bytes, announced with SIZE=.
    pub size: u64,
}

/// The outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The remote server took responsibility; `reply` is its answer to the final ".".
    Delivered {
        /// The remote reply, e.g. "250 2.0.0 Ok: queued as 12345".
        reply: String,
    },
    /// Try again later; `reply` says why (remote 4xx, connection trouble, timeouts).
    Deferred {
        /// What happened, prefixed with the host when it came from the remote side.
        reply: String,
    },
    /// Permanent failure (remote 5xx or a local rule): the recipient should bounce.
    Failed {
        /// What happened, prefixed with the host when it came from the remote side.
        reply: String,
    },
}

impl RcptResult {
    /// The reply text, whatever the outcome.
    pub fn reply(&self) -> &str {
        match self {
            RcptResult::Delivered { reply }
            | RcptResult::Deferred { reply }
            | RcptResult::Failed { reply } => reply,
        }
    }
}

/// What one call to [`deliver`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The host name of the candidate that held the transaction; `None` if no candidate got that far.
    pub host: Option<String>,
    /// Its address.
    pub addr: Option<SocketAddr>,
    /// `"TLSv1.3 TLS13_AES_256_GCM_SHA384"` when the transaction ran over TLS.
    pub tls: Option<String>,
    /// One result per recipient, in the order of [`Transaction::recipients`].
    pub results: Vec<(String, RcptResult)>,
}

/// RCPT commands per write when pipelining. Bounded so that neither side can fill both socket
/// buffers and deadlock (RFC 2920 §3.1) with very long recipient lists.
const PIPELINE_BATCH: usize = 100;
/// Bytes read from the spool file per chunk while streaming DATA.
const BODY_CHUNK: usize = 64 * 1024;
/// QUIT is a courtesy; never wait long for its answer.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Tries candidates in order: connection refused/timeout, 4xx/5xx greeting, or 4xx at EHLO move to the next candidate;
/// once a MAIL FROM has been sent the transaction stays on that host. 5xx to MAIL → all recipients Failed; per-RCPT 4xx/5xx →
/// that recipient Deferred/Failed; DATA end-of-data 4xx → accepted ones Deferred, 5xx → Failed. All candidates unreachable →
/// all Deferred with the last error. STARTTLS opportunistic: offered → upgrade; a failed TLS handshake retries the same host
/// once without TLS, like Postfix's smtp_tls_fallback. Sends SIZE=, BODY=8BITMIME and SMTPUTF8 when the server offers them;
/// a SMTPUTF8 message to a server without SMTPUTF8 → Failed 5.6.7 per recipient. PIPELINING used when offered (MAIL+RCPTs in
/// one write). Dot-stuffing on the fly while streaming the file. QUIT at the end.
///
/// Events are logged with the `next_hop` and `host` fields; the caller's span should carry `queue_id`.
pub async fn deliver(
    config: &ClientConfig,
    hop: &NextHop,
    tx: &Transaction<'_>,
    source: &MessageSource,
) -> DeliveryReport {
    deliver_reusing(config, None, hop, tx, source).await
}

/// [`deliver`], taking an open session from `sessions` when one to the host is parked there, and
/// parking the session afterwards instead of closing it.
pub async fn deliver_reusing(
    config: &ClientConfig,
    sessions: Option<&SessionCache>,
    hop: &NextHop,
    tx: &Transaction<'_>,
    source: &MessageSource,
) -> DeliveryReport {
    let mut report = DeliveryReport {
        host: None,
        addr: None,
        tls: None,
        results: Vec::new(),
    };
    if tx.recipients.is_empty() {
        return report;
    }
    // Open the spool file before touching the network: a missing file is our problem, not the peer's.
    let mut body = match source {
        MessageSource::Memory(bytes) => Body::Memory(bytes.clone()),
        MessageSource::Spool { path, offset } => match File::open(path).await {
            Ok(file) => Body::File {
                file,
                offset: *offset,
            },
            Err(e) => {
                let why = format!(
                    "local error: cannot read queue file {}: {e}",
                    path.display()
                );
                warn!(next_hop = %hop.key, error = %why, "delivery not attempted");
                report.results = all(tx, |_| RcptResult::Deferred { reply: why.clone() });
                return report;
            }
        },
    };
    let mut last_error = format!("no addresses to deliver to for {}", hop.key);
    for candidate in &hop.candidates {
        let mut use_tls = config.tls == TlsMode::Opportunistic;
        loop {
            let attempt = attempt(config, sessions, candidate, tx, &mut body, use_tls).await;
            match attempt {
                Attempt::Finished { results, tls } => {
                    // The caller logs the outcome per recipient (one line per message at info).
                    debug!(next_hop = %hop.key, host = %candidate, tls = tls.as_deref().unwrap_or("none"), "transaction finished");
                    report.host = Some(candidate.host.clone());
                    report.addr = Some(candidate.addr);
                    report.tls = tls;
                    report.results = tx.recipients.iter().cloned().zip(results).collect();
                    return report;
                }
                Attempt::RetryWithoutTls { why } if use_tls => {
                    warn!(next_hop = %hop.key, host = %candidate, error = %why, "TLS failed, retrying the same host in plaintext");
                    use_tls = false;
                }
                Attempt::RetryWithoutTls { why } | Attempt::NextCandidate { why } => {
                    info!(next_hop = %hop.key, host = %candidate, error = %why, "candidate unusable, trying the next one");
                    last_error = why;
                    break;
                }
            }
        }
    }
    warn!(next_hop = %hop.key, error = %last_error, "no candidate accepted a session");
    report.results = all(tx, |_| RcptResult::Deferred {
        reply: last_error.clone(),
    });
    report
}

fn all(tx: &Transaction<'_>, result: impl Fn(&str) -> RcptResult) -> Vec<(String, RcptResult)> {
    tx.recipients
        .iter()
        .map(|r| (r.clone(), result(r)))
        .collect()
}

/// How one connection attempt to one candidate ended.
enum Attempt {
    /// Nothing was committed on this host: try the next candidate.
    NextCandidate { why: String },
    /// The TLS handshake failed after STARTTLS: the same host again without TLS.
    RetryWithoutTls { why: String },
    /// The transaction reached this host (or was decided before MAIL); results are final for this call.
    Finished {
        results: Vec<RcptResult>,
        tls: Option<String>,
    },
}

/// Where in the dialogue something happened, for reply texts and log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    Ehlo,
    Helo,
    Starttls,
    TlsHandshake,
    MailFrom,
    RcptTo,
    Data,
    Body,
    EndOfData,
}

impl Step {
    /// The name in "(in reply to X command)".
    fn command(self) -> &'static str {
        match self {
            Step::Greeting => "initial greeting",
            Step::Ehlo => "EHLO",
            Step::Helo => "HELO",
            Step::Starttls | Step::TlsHandshake => "STARTTLS",
            Step::MailFrom => "MAIL FROM",
            Step::RcptTo => "RCPT TO",
            Step::Data => "DATA",
            Step::Body | Step::EndOfData => "end of DATA",
        }
    }

    /// What we were doing, for "lost connection with X while Y".
    fn activity(self) -> &'static str {
        match self {
            Step::Greeting => "receiving the initial server greeting",
            Step::Ehlo => "performing the EHLO handshake",
            Step::Helo => "performing the HELO handshake",
            Step::Starttls => "sending STARTTLS",
            Step::TlsHandshake => "performing the TLS handshake",
            Step::MailFrom => "sending MAIL FROM",
            Step::RcptTo => "sending RCPT TO",
            Step::Data => "sending DATA command",
            Step::Body => "sending message body",
            Step::EndOfData => "sending end of data -- message may be sent more than once",
        }
    }
}

/// `mx.example.com[192.0.2.1]`, the way Postfix names a peer.
struct Peer<'a>(&'a Candidate);

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.0.host, self.0.addr.ip())
    }
}

/// "host mx.example.com[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO command)".
fn said(peer: &Peer<'_>, reply: &RemoteReply, step: Step) -> String {
    format!(
        "host {peer} said: {reply} (in reply to {} command)",
        step.command()
    )
}

/// What went wrong on the wire.
#[derive(Debug)]
enum Failure {
    Timeout,
    Closed,
    Io(io::Error),
    BadReply(String),
    Local(String),
}

impl Failure {
    fn describe(&self, peer: &Peer<'_>, step: Step) -> String {
        let activity = step.activity();
        match self {
            Failure::Timeout => format!("conversation with {peer} timed out while {activity}"),
            Failure::Closed => format!("lost connection with {peer} while {activity}"),
            Failure::Io(e) => format!("lost connection with {peer} while {activity}: {e}"),
            Failure::BadReply(why) => {
                format!("host {peer} sent a malformed reply while {activity}: {why}")
            }
            Failure::Local(why) => format!("local error while {activity} with {peer}: {why}"),
        }
    }
}

/// The byte stream under the SMTP dialogue: plaintext until STARTTLS, TLS after it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One SMTP connection with its read buffer.
struct Connection {
    stream: Stream,
    /// Bytes received but not yet consumed as reply lines.
    rbuf: Vec<u8>,
}

impl Connection {
    fn new(stream: TcpStream) -> Connection {
        Connection {
            stream: Stream::Plain(stream),
            rbuf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8], limit: Duration) -> Result<(), Failure> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(e)) => Err(Failure::Io(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, Failure> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(pos) = self.rbuf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.rbuf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.rbuf.len() > MAX_LINE {
                return Err(Failure::BadReply(format!(
                    "reply line longer than {MAX_LINE} bytes"
                )));
            }
            let n = self.stream.read(&mut chunk).await.map_err(Failure::Io)?;
            if n == 0 {
                return Err(Failure::Closed);
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn read_reply(&mut self, limit: Duration) -> Result<RemoteReply, Failure> {
        let read = async {
            let mut parser = ReplyParser::default();
            loop {
                let line = self.read_line().await?;
                if let Some(reply) = parser.push(&line).map_err(Failure::BadReply)? {
                    return Ok(reply);
                }
            }
        };
        tokio::time::timeout(limit, read)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    async fn command(&mut self, line: &str, limit: Duration) -> Result<RemoteReply, Failure> {
        self.send(line.as_bytes(), limit).await?;
        self.read_reply(limit).await
    }

    /// Consumes the plaintext connection and returns it wrapped in TLS, with a description of the session.
    async fn starttls(
        self,
        candidate: &Candidate,
        limit: Duration,
    ) -> Result<(Connection, String), Failure> {
        // Anything the server sent after "220" arrived before encryption and must not be trusted; a
        // well-behaved server sends nothing, so treat it as a failed handshake.
        if !self.rbuf.is_empty() {
            return Err(Failure::BadReply(
                "data received after the 220 reply to STARTTLS".into(),
            ));
        }
        let Stream::Plain(tcp) = self.stream else {
            return Err(Failure::Local(
                "STARTTLS on a connection that is already encrypted".into(),
            ));
        };
        let config = tls::opportunistic_config().map_err(Failure::Local)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = tls::server_name(&candidate.host, candidate.addr.ip());
        let stream = match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(Failure::Io(e)),
            Ok(Ok(stream)) => stream,
        };
        let description = tls::describe(stream.get_ref().1);
        Ok((
            Connection {
                stream: Stream::Tls(Box::new(stream)),
                rbuf: Vec::new(),
            },
            description,
        ))
    }

    /// Says goodbye politely but briefly; the outcome no longer matters.
    async fn quit(mut self) {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, async {
            if self.send(b"QUIT\r\n", QUIT_TIMEOUT).await.is_ok() {
                let _ = self.read_reply(QUIT_TIMEOUT).await;
            }
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// What the server announced in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Capabilities {
    pipelining: bool,
    /// `Some(0)`: SIZE offered without a limit; `Some(n)`: messages over n bytes are refused.
    size: Option<u64>,
    eight_bit_mime: bool,
    smtputf8: bool,
    starttls: bool,
}

impl Capabilities {
    fn from_ehlo(reply: &RemoteReply) -> Capabilities {
        let mut caps = Capabilities::default();
        // The first line is the server's greeting text, not an extension.
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                _ => {}
            }
        }
        caps
    }
}

/// EHLO, falling back to HELO when the server does not know EHLO (5xx). Err: try the next candidate.
async fn hello(
    conn: &mut Connection,
    config: &ClientConfig,
    peer: &Peer<'_>,
) -> Result<Capabilities, String> {
    let limit = config.command_timeout;
    let ehlo = conn
        .command(&format!("EHLO {}\r\n", config.helo_name), limit)
        .await
        .map_err(|f| f.describe(peer, Step::Ehlo))?;
    if ehlo.is_positive() {
        return Ok(Capabilities::from_ehlo(&ehlo));
    }
    if !ehlo.is_permanent() {
        return Err(said(peer, &ehlo, Step::Ehlo));
    }
    debug!(host = %peer, reply = %ehlo, "EHLO refused, trying HELO");
    let helo = conn
        .command(&format!("HELO {}\r\n", config.helo_name), limit)
        .await
        .map_err(|f| f.describe(peer, Step::Helo))?;
    if helo.is_positive() {
        Ok(Capabilities::default())
    } else {
        Err(said(peer, &helo, Step::Helo))
    }
}

/// One connection to one candidate: greeting, EHLO, maybe STARTTLS, then the transaction.
async fn attempt(
    config: &ClientConfig,
    sessions: Option<&SessionCache>,
    candidate: &Candidate,
    tx: &Transaction<'_>,
    body: &mut Body,
    use_tls: bool,
) -> Attempt {
    let peer = Peer(candidate);
    let port = candidate.addr.port();
    if let Some(cache) = sessions
        && let Some(mut session) = cache.take(candidate.addr, use_tls)
    {
        let results = transaction(&mut session.conn, config, &peer, tx, &session.caps, body).await;
        if results.connection_usable || results.mail_accepted {
            debug!(host = %candidate, uses = session.uses + 1, "transaction on a reused session");
            let tls = session.tls.clone();
            if results.connection_usable {
                session.uses += 1;
                cache
                    .put(
                        candidate.addr,
                        use_tls,
                        session,
                        config.command_timeout,
                        !results.ended,
                    )
                    .await;
            }
            return Attempt::Finished {
                results: results.recipients,
                tls,
            };
        }
        // Nothing was committed on it: the server had closed the parked session.
        debug!(host = %candidate, "parked session was closed by the server; connecting afresh");
    }
    let tcp = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(candidate.addr))
        .await
    {
        Err(_) => {
            return Attempt::NextCandidate {
                why: format!("connect to {peer}:{port}: connection timed out"),
            };
        }
        Ok(Err(e)) => {
            return Attempt::NextCandidate {
                why: format!("connect to {peer}:{port}: {e}"),
            };
        }
        Ok(Ok(tcp)) => tcp,
    };
    // Commands are small and answered one round trip at a time; Nagle would only add latency.
    let _ = tcp.set_nodelay(true);
    let mut conn = Connection::new(tcp);
    debug!(host = %candidate, "connected");

    let greeting = match conn.read_reply(config.command_timeout).await {
        Ok(reply) => reply,
        Err(f) => {
            return Attempt::NextCandidate {
                why: f.describe(&peer, Step::Greeting),
            };
        }
    };
    if !greeting.is_positive() {
        conn.quit().await;
        return Attempt::NextCandidate {
            why: format!("host {peer} refused to talk to me: {greeting}"),
        };
    }
    let mut caps = match hello(&mut conn, config, &peer).await {
        Ok(caps) => caps,
        Err(why) => {
            conn.quit().await;
            return Attempt::NextCandidate { why };
        }
    };

    let mut tls = None;
    if use_tls && caps.starttls {
        let reply = match conn.command("STARTTLS\r\n", config.command_timeout).await {
            Ok(reply) => reply,
            Err(f) => {
                return Attempt::RetryWithoutTls {
                    why: f.describe(&peer, Step::Starttls),
                };
            }
        };
        if reply.code == 220 {
            let (secured, description) =
                match conn.starttls(candidate, config.command_timeout).await {
                    Ok(done) => done,
                    Err(f) => {
                        return Attempt::RetryWithoutTls {
                            why: f.describe(&peer, Step::TlsHandshake),
                        };
                    }
                };
            conn = secured;
            debug!(host = %candidate, tls = %description, "TLS established");
            // RFC 3207 §4.2: everything learnt before TLS is void; ask again.
            caps = match hello(&mut conn, config, &peer).await {
                Ok(caps) => caps,
                Err(why) => {
                    conn.quit().await;
                    return Attempt::NextCandidate { why };
                }
            };
            tls = Some(description);
        } else {
            info!(host = %candidate, reply = %reply, "STARTTLS refused, continuing in plaintext");
        }
    }

    let results = transaction(&mut conn, config, &peer, tx, &caps, body).await;
    if results.connection_usable {
        match sessions {
            Some(cache) => {
                let session = Session {
                    conn,
                    caps,
                    tls: tls.clone(),
                    uses: 1,
                };
                cache
                    .put(
                        candidate.addr,
                        use_tls,
                        session,
                        config.command_timeout,
                        !results.ended,
                    )
                    .await;
            }
            None => conn.quit().await,
        }
    }
    Attempt::Finished {
        results: results.recipients,
        tls,
    }
}

/// Where one recipient stands during the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RcptState {
    /// RCPT TO not answered yet.
    Waiting,
    /// RCPT TO accepted; the outcome depends on DATA.
    Accepted,
    /// Decided.
    Done(RcptResult),
}

/// The transaction's outcome, whether the connection can still carry a QUIT (or the next
/// transaction), and whether the server accepted MAIL FROM (so something was committed there).
struct TransactionOutcome {
    recipients: Vec<RcptResult>,
    connection_usable: bool,
    mail_accepted: bool,
    /// The server answered the end of the data: no transaction is open on the session, so it
    /// needs no RSET before the next one.
    ended: bool,
}

/// The recipients' states, and whether MAIL FROM was accepted.
struct Recipients(Vec<RcptState>, bool);

impl Recipients {
    /// Every recipient that is not decided yet gets `result`.
    fn settle_open(&mut self, result: impl Fn() -> RcptResult) {
        for state in &mut self.0 {
            if !matches!(state, RcptState::Done(_)) {
                *state = RcptState::Done(result());
            }
        }
    }

    /// Only recipients accepted at RCPT TO get `result`.
    fn settle_accepted(&mut self, result: impl Fn() -> RcptResult) {
        for state in &mut self.0 {
            if *state == RcptState::Accepted {
                *state = RcptState::Done(result());
            }
        }
    }

    fn any_accepted(&self) -> bool {
        self.0.contains(&RcptState::Accepted)
    }

    fn finish(self, connection_usable: bool) -> TransactionOutcome {
        let recipients = self
            .0
            .into_iter()
            .map(|state| match state {
                RcptState::Done(result) => result,
                // Unreachable by construction; deferring is the safe answer if it ever happens.
                RcptState::Waiting | RcptState::Accepted => RcptResult::Deferred {
                    reply: "delivery status unknown, will retry".into(),
                },
            })
            .collect();
        TransactionOutcome {
            recipients,
            connection_usable,
            mail_accepted: self.1,
            ended: false,
        }
    }
}

/// Classifies a remote reply for the recipients it concerns.
fn outcome_of(peer: &Peer<'_>, reply: &RemoteReply, step: Step) -> RcptResult {
    if reply.is_permanent() {
        RcptResult::Failed {
            reply: said(peer, reply, step),
        }
    } else {
        RcptResult::Deferred {
            reply: said(peer, reply, step),
        }
    }
}

/// A CR, LF or other control character in an address would let it smuggle extra SMTP commands.
fn safe_address(address: &str) -> bool {
    !address.chars().any(char::is_control)
}

async fn transaction(
    conn: &mut Connection,
    config: &ClientConfig,
    peer: &Peer<'_>,
    tx: &Transaction<'_>,
    caps: &Capabilities,
    body: &mut Body,
) -> TransactionOutcome {
    let limit = config.command_timeout;
    let mut rcpts = Recipients(vec![RcptState::Waiting; tx.recipients.len()], false);

    if tx.smtputf8 && !caps.smtputf8 {
        let reply = format!("550 5.6.7 SMTPUTF8 is required, but was not offered by host {peer}");
        rcpts.settle_open(|| RcptResult::Failed {
            reply: reply.clone(),
        });
        return rcpts.finish(true);
    }
    if let Some(max) = caps.size.filter(|&max| max > 0 && tx.size > max) {
        let reply = format!(
            "552 5.3.4 message size {} exceeds size limit {max} of server {peer}",
            tx.size
        );
        rcpts.settle_open(|| RcptResult::Failed {
            reply: reply.clone(),
        });
        return rcpts.finish(true);
    }
    if !safe_address(tx.sender) {
        let reply = "550 5.1.7 sender address contains control characters".to_string();
        rcpts.settle_open(|| RcptResult::Failed {
            reply: reply.clone(),
        });
        return rcpts.finish(true);
    }
    for (state, address) in rcpts.0.iter_mut().zip(tx.recipients) {
        if !safe_address(address) {
            *state = RcptState::Done(RcptResult::Failed {
                reply: "550 5.1.3 recipient address contains control characters".into(),
            });
        }
    }

    let mut mail = format!("MAIL FROM:<{}>", tx.sender);
    if caps.size.is_some() {
        mail.push_str(&format!(" SIZE={}", tx.size));
    }
    if tx.eight_bit && caps.eight_bit_mime {
        mail.push_str(" BODY=8BITMIME");
    }
    if tx.smtputf8 && caps.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str("\r\n");

    let to_send: Vec<usize> = (0..tx.recipients.len())
        .filter(|&i| rcpts.0[i] == RcptState::Waiting)
        .collect();
    let batch = if caps.pipelining { PIPELINE_BATCH } else { 1 };
    let mut batches = to_send.chunks(batch);
    // With PIPELINING the first batch of RCPTs travels in the same write as MAIL, and DATA too
    // when every recipient is in that batch (RFC 2920: DATA may end a group), as Postfix does:
    // one write and one round trip fewer per message.
    let first: &[usize] = if caps.pipelining {
        batches.next().unwrap_or(&[])
    } else {
        &[]
    };
    let data_pipelined = caps.pipelining && !first.is_empty() && batches.len() == 0;

    let mut out = mail.into_bytes();
    for &i in first {
        out.extend_from_slice(format!("RCPT TO:<{}>\r\n", tx.recipients[i]).as_bytes());
    }
    if data_pipelined {
        out.extend_from_slice(b"DATA\r\n");
    }
    if let Err(f) = conn.send(&out, limit).await {
        let why = f.describe(peer, Step::MailFrom);
        rcpts.settle_open(|| RcptResult::Deferred { reply: why.clone() });
        return rcpts.finish(false);
    }
    match conn.read_reply(limit).await {
        Ok(reply) if reply.is_positive() => {
            rcpts.1 = true;
            debug!(host = %peer, reply = %reply, "sender accepted")
        }
        Ok(reply) => {
            let result = outcome_of(peer, &reply, Step::MailFrom);
            rcpts.settle_open(|| result.clone());
            // The pipelined commands are answered too (with 503s): read those answers, so the
            // session stays in step for its next transaction.
            let usable = drain_pipelined(conn, first.len(), data_pipelined, limit).await;
            return rcpts.finish(usable);
        }
        Err(f) => {
            let why = f.describe(peer, Step::MailFrom);
            rcpts.settle_open(|| RcptResult::Deferred { reply: why.clone() });
            return rcpts.finish(false);
        }
    }

    let mut pending: Vec<usize> = first.to_vec();
    loop {
        for &i in &pending {
            match conn.read_reply(limit).await {
                Ok(reply) if reply.is_positive() => rcpts.0[i] = RcptState::Accepted,
                Ok(reply) => {
                    debug!(host = %peer, recipient = %tx.recipients[i], reply = %reply, "recipient refused");
                    rcpts.0[i] = RcptState::Done(outcome_of(peer, &reply, Step::RcptTo));
                }
                Err(f) => {
                    let why = f.describe(peer, Step::RcptTo);
                    rcpts.settle_open(|| RcptResult::Deferred { reply: why.clone() });
                    return rcpts.finish(false);
                }
            }
        }
        let Some(next) = batches.next() else { break };
        let mut out = Vec::new();
        for &i in next {
            out.extend_from_slice(format!("RCPT TO:<{}>\r\n", tx.recipients[i]).as_bytes());
        }
        if let Err(f) = conn.send(&out, limit).await {
            let why = f.describe(peer, Step::RcptTo);
            rcpts.settle_open(|| RcptResult::Deferred { reply: why.clone() });
            return rcpts.finish(false);
        }
        pending = next.to_vec();
    }

    let data_reply = if data_pipelined {
        let reply = conn.read_reply(limit).await;
        if !rcpts.any_accepted() {
            // Every recipient was refused, so the server should refuse DATA as well.
            return match end_unwanted_data(conn, reply, config.data_timeout).await {
                UnwantedData::Refused => rcpts.finish(true),
                UnwantedData::Ended => TransactionOutcome {
                    ended: true,
                    ..rcpts.finish(true)
                },
                UnwantedData::Broken => rcpts.finish(false),
            };
        }
        reply
    } else {
        if !rcpts.any_accepted() {
            return rcpts.finish(true);
        }
        conn.command("DATA\r\n", limit).await
    };
    match data_reply {
        Ok(reply) if reply.code == 354 => {}
        Ok(reply) if reply.is_positive() => {
            let why = format!("host {peer} answered DATA with {reply} instead of 354");
            rcpts.settle_open(|| RcptResult::Deferred { reply: why.clone() });
            return rcpts.finish(false);
        }
        Ok(reply) => {
            let result = outcome_of(peer, &reply, Step::Data);
            rcpts.settle_accepted(|| result.clone());
            return rcpts.finish(true);
        }
        Err(f) => {
            let why = f.describe(peer, Step::Data);
            rcpts.settle_open(|| RcptResult::Deferred { reply: why.clone() });
            return rcpts.finish(false);
        }
    }

    if let Err(why) = send_body(conn, body, config.data_timeout, peer).await {
        // The "." was never sent, so the server discards the partial message when we hang up.
        rcpts.settle_open(|| RcptResult::Deferred { reply: why.clone() });
        return rcpts.finish(false);
    }
    match conn.read_reply(config.data_timeout).await {
        Ok(reply) if reply.is_positive() => {
            debug!(host = %peer, reply = %reply, "message accepted");
            let text = reply.to_string();
            rcpts.settle_accepted(|| RcptResult::Delivered {
                reply: text.clone(),
            });
            TransactionOutcome {
                ended: true,
                ..rcpts.finish(true)
            }
        }
        Ok(reply) => {
            let result = outcome_of(peer, &reply, Step::EndOfData);
            rcpts.settle_accepted(|| result.clone());
            TransactionOutcome {
                ended: true,
                ..rcpts.finish(true)
            }
        }
        Err(f) => {
            let why = f.describe(peer, Step::EndOfData);
            rcpts.settle_open(|| RcptResult::Deferred { reply: why.clone() });
            rcpts.finish(false)
        }
    }
}

/// After MAIL FROM was refused: reads the answers to the `rcpts` RCPT commands (and DATA, if
/// it was sent, see [`end_unwanted_data`]) that travelled in the same pipelined write. Returns
/// whether the session is still in step.
async fn drain_pipelined(conn: &mut Connection, rcpts: usize, data: bool, limit: Duration) -> bool {
    for _ in 0..rcpts {
        if conn.read_reply(limit).await.is_err() {
            return false;
        }
    }
    if !data {
        return true;
    }
    let reply = conn.read_reply(limit).await;
    !matches!(
        end_unwanted_data(conn, reply, limit).await,
        UnwantedData::Broken
    )
}

/// What became of a DATA sent pipelined for a transaction that cannot go on.
enum UnwantedData {
    /// The server refused it, as it should: the session is in step.
    Refused,
    /// The server accepted it all the same and got a lone ".": the transaction is over.
    Ended,
    /// No usable answer: the session is out of step.
    Broken,
}

/// Deals with `reply`, the answer to a DATA sent pipelined for a transaction whose MAIL or
/// every RCPT was refused: a server that accepted it all the same gets a lone "." (RFC 2920,
/// 3.1), whose answer is ignored.
async fn end_unwanted_data(
    conn: &mut Connection,
    reply: Result<RemoteReply, Failure>,
    dot_limit: Duration,
) -> UnwantedData {
    match reply {
        Ok(reply) if reply.code == 354 => match conn.command(".\r\n", dot_limit).await {
            Ok(_) => UnwantedData::Ended,
            Err(_) => UnwantedData::Broken,
        },
        Ok(_) => UnwantedData::Refused,
        Err(_) => UnwantedData::Broken,
    }
}

/// Streams the message in chunks, dot-stuffed, followed by the "." line. Memory use stays at
/// about two chunks whatever the size of a message read from its file.
async fn send_body(
    conn: &mut Connection,
    body: &mut Body,
    limit: Duration,
    peer: &Peer<'_>,
) -> Result<(), String> {
    let local =
        |e: io::Error| format!("local error: cannot read queue file while sending to {peer}: {e}");
    let mut stuffer = DotStuffer::new();
    let mut out = Vec::new();
    match body {
        Body::Memory(bytes) => {
            // Sized to the message (most mail is far smaller than a chunk).
            let first = bytes.len().min(BODY_CHUNK);
            out.reserve(first + first / 8 + 8);
            // The last chunk and the "." line go out in one write.
            let mut chunks = bytes.chunks(BODY_CHUNK).peekable();
            while let Some(chunk) = chunks.next() {
                out.clear();
                stuffer.encode(chunk, &mut out);
                if chunks.peek().is_none() {
                    stuffer.finish(&mut out);
                    return conn
                        .send(&out, limit)
                        .await
                        .map_err(|f| f.describe(peer, Step::EndOfData));
                }
                conn.send(&out, limit)
                    .await
                    .map_err(|f| f.describe(peer, Step::Body))?;
            }
        }
        Body::File { file, offset } => {
            out.reserve(BODY_CHUNK + BODY_CHUNK / 8);
            file.seek(io::SeekFrom::Start(*offset))
                .await
                .map_err(local)?;
            let mut chunk = vec![0u8; BODY_CHUNK];
            loop {
                let n = file.read(&mut chunk).await.map_err(local)?;
                if n == 0 {
                    break;
                }
                out.clear();
                stuffer.encode(&chunk[..n], &mut out);
                conn.send(&out, limit)
                    .await
                    .map_err(|f| f.describe(peer, Step::Body))?;
            }
        }
    }
    out.clear();
    stuffer.finish(&mut out);
    conn.send(&out, limit)
        .await
        .map_err(|f| f.describe(peer, Step::EndOfData))
}

mod cache;
#[cfg(test)]
mod tests;

//! The inbound SMTP server: accepts connections, enforces connection limits, runs one task per session and
//! shuts down gracefully.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::command::{MailParams, Path};
use crate::connection::Connection;
use crate::reply::Reply;
use crate::session;
use crate::transcript::{DataLogging, TranscriptMode};

/// What the client has said so far in this transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse-path from MAIL FROM (`""` for the null sender).
    pub mail_from: Path,
    /// The accepted recipients, in the order given.
    pub rcpt_to: Vec<Path>,
    /// The MAIL FROM parameters.
    pub params: MailParams,
}

/// The TLS parameters of a session after STARTTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version, e.g. `"TLSv1.3"`.
    pub protocol: String,
    /// The cipher suite, e.g. `"TLS13_AES_256_GCM_SHA384"`.
    pub cipher: String,
}

/// Who is connected and what they have told us; passed to every handler hook.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Unique per process and increasing, for correlating log lines.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
    /// The name given in the last EHLO/HELO (cleared by STARTTLS).
    pub helo: Option<String>,
    /// The client greeted with EHLO.
    pub esmtp: bool,
    /// Set once STARTTLS has succeeded.
    pub tls: Option<TlsInfo>,
    /// When the connection was accepted.
    pub started: SystemTime,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client said QUIT.
    Quit,
    /// The client closed the connection without QUIT.
    ClientClosed,
    /// The client was silent longer than the command or data timeout.
    Timeout,
    /// The client made more protocol errors than `max_errors`.
    TooManyErrors,
    /// The server shut down.
    Shutdown,
    /// The client broke the protocol (bare LF in data, talking before the banner, …) and was disconnected.
    ProtocolViolation(String),
    /// A socket or TLS error.
    IoError(String),
    /// Refused before the banner: connection limits or the handler's `connect` hook.
    RefusedAtConnect,
}

impl fmt::Display for SessionEnd {
    /// A short phrase for logs and the tracking log, e.g. `quit` or `protocol violation: pregreet`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::Quit => f.write_str("quit"),
            SessionEnd::ClientClosed => f.write_str("client closed connection"),
            SessionEnd::Timeout => f.write_str("timeout"),
            SessionEnd::TooManyErrors => f.write_str("too many errors"),
            SessionEnd::Shutdown => f.write_str("server shutdown"),
            SessionEnd::ProtocolViolation(what) => write!(f, "protocol violation: {what}"),
            SessionEnd::IoError(what) => write!(f, "I/O error: {what}"),
            SessionEnd::RefusedAtConnect => f.write_str("refused at connect"),
        }
    }
}

/// Counters of one session, reported when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// Messages for which the handler answered positively at end of data.
    pub messages_accepted: u32,
    /// Messages refused at DATA/BDAT or at end of data (by the handler or by size/line limits).
    pub messages_rejected: u32,
    /// RCPT TO commands that were refused.
    pub recipients_rejected: u32,
    /// Protocol errors counted against `max_errors`.
    pub errors: u32,
    /// Message content bytes received with DATA and BDAT, as sent on the wire.
    pub bytes_received: u64,
    /// How the session ended.
    pub end: SessionEnd,
}

/// The gateway side of a session. All hooks are async so that later checks (DNS RBLs, scanners) fit.
pub trait MailHandler: Send + Sync + 'static {
    /// Where the message body is streamed while DATA/BDAT is received.
    type Body: tokio::io::AsyncWrite + Unpin + Send + 'static;

    /// A client connected. Err(reply) refuses the connection with that reply (e.g. 421 4.3.2) and closes it.
    fn connect(&self, session: &SessionInfo) -> impl Future<Output = Result<(), Reply>> + Send;

    /// MAIL FROM passed the syntax, size and SMTPUTF8 checks; Err(reply) refuses the sender.
    fn mail_from(
        &self,
        session: &SessionInfo,
        from: &Path,
        params: &MailParams,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// RCPT TO passed the syntax and recipient-count checks; Err(reply) refuses this recipient.
    fn rcpt_to(
        &self,
        session: &SessionInfo,
        envelope: &Envelope,
        rcpt: &Path,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// Called at DATA (or the first BDAT) with the final envelope; the server writes the body bytes
    /// (dot-unstuffed, CRLF line endings, exactly as received) into the returned Body.
    fn begin_body(
        &self,
        session: &SessionInfo,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<Self::Body, Reply>> + Send;

    /// End of data with a well-formed body: make it durable and answer (250 with the queue id, or 4xx/5xx).
    /// The server sends exactly this reply. This is where the gateway commits and (later) scans.
    fn end_body(
        &self,
        session: &SessionInfo,
        envelope: &Envelope,
        body: Self::Body,
    ) -> impl Future<Output = Reply> + Send;

    /// The body will not be accepted (size exceeded, bare LF, client vanished, timeout, shutdown): discard it.
    fn abort_body(
        &self,
        session: &SessionInfo,
        body: Self::Body,
    ) -> impl Future<Output = ()> + Send;

    /// The session ended (any way). For the tracking log.
    fn session_closed(
        &self,
        session: &SessionInfo,
        stats: &SessionStats,
    ) -> impl Future<Output = ()> + Send;
}

/// Settings of the inbound server. A new session takes the current snapshot, so a reload affects new sessions only.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Our name in the banner `220 {hostname} ESMTP Portcullis` and the EHLO greeting.
    pub hostname: String,
    /// Largest message in bytes (after dot-unstuffing); advertised with SIZE. Default 50 MiB.
    pub max_message_size: u64,
    /// Recipients per transaction; more get 452 4.5.3. Default 1000.
    pub max_recipients: usize,
    /// Longest message line in bytes including CRLF; longer lines make the message fail with 554 5.6.0. Default 4096.
    pub max_line_length: usize,
    /// How long to wait for a command before 421 4.4.2. Default 5 minutes.
    pub command_timeout: Duration,
    /// How long to wait between reads of message data before 421 4.4.2. Default 10 minutes.
    pub data_timeout: Duration,
    /// Concurrent sessions; more get 421 4.7.0. Default 15.
    pub max_sessions: usize,
    /// Concurrent sessions from one IP address; more get 421 4.7.0. Default 5.
    pub max_sessions_per_ip: usize,
    /// Protocol errors before 421 4.7.0 and disconnect; 0 means no limit. Default 10.
    pub max_errors: u32,
    /// Wait this long before the banner and drop clients that talk first (pregreet, 554 5.5.0). Default 0 (off).
    pub banner_delay: Duration,
    /// TLS settings; `Some` advertises STARTTLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Advertise CHUNKING and accept BDAT. Default true.
    pub chunking: bool,
    /// Which sessions have their conversation logged at target `smtp_transcript` when they end. Default off.
    pub transcript: TranscriptMode,
    /// What transcripts show of message content. Default a one-line summary; `Echo` logs personal data.
    pub transcript_data: DataLogging,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".to_string(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 4096,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            max_sessions: 15,
            max_sessions_per_ip: 5,
            max_errors: 10,
            banner_delay: Duration::ZERO,
            tls: None,
            chunking: true,
            transcript: TranscriptMode::Off,
            transcript_data: DataLogging::Summarize,
        }
    }
}

/// Session ids are unique per process, so log lines of concurrent listeners never collide.
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// The inbound SMTP server: one tokio task per session, limits shared across all listeners served by it.
pub struct Server<H: MailHandler> {
    config: watch::Receiver<Arc<ServerConfig>>,
    handler: Arc<H>,
    admission: Arc<Admission>,
}

impl<H: MailHandler> Server<H> {
    /// A server whose sessions each snapshot the current config (SIGHUP reload).
    pub fn new(config: watch::Receiver<Arc<ServerConfig>>, handler: Arc<H>) -> Self {
        Server {
            config,
            handler,
            admission: Arc::new(Admission::default()),
        }
    }

    /// Sessions currently running (refused connections are not counted).
    pub fn active_sessions(&self) -> usize {
        self.admission
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total
    }

    /// Accept until `shutdown` is cancelled; then stop accepting, tell idle sessions 421 4.3.2 at their next command
    /// (a session in DATA finishes its message first), wait up to `grace` for sessions to end, abort the rest. Returns when done.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken, grace: Duration) {
        let abort = CancellationToken::new();
        let mut sessions = JoinSet::new();
        let listen = listener.local_addr().ok();
        let nodelay_inherited = set_nodelay_on_listener(&listener);
        info!(listen = ?listen, "SMTP server accepting connections");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if !nodelay_inherited {
                            let _ = stream.set_nodelay(true);
                        }
                        self.admit(stream, peer, listen, &mut sessions, &shutdown, &abort)
                    }
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning on the error.
                        warn!(error = %e, "accepting an SMTP connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(joined) = sessions.join_next(), if !sessions.is_empty() => report_task_end(joined),
            }
        }
        drop(listener);
        info!(listen = ?listen, sessions = sessions.len(), "SMTP server stopped accepting; waiting for sessions");
        let drain = async {
            while let Some(joined) = sessions.join_next().await {
                report_task_end(joined);
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            warn!(listen = ?listen, sessions = sessions.len(), "shutdown grace period over; aborting SMTP sessions");
            abort.cancel();
            // Sessions blocked on the client notice the abort at once and clean up; give them a moment to do so.
            let drain = async { while sessions.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            sessions.shutdown().await;
        }
        info!(listen = ?listen, "SMTP server stopped");
    }

    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        listen: Option<SocketAddr>,
        sessions: &mut JoinSet<()>,
        shutdown: &CancellationToken,
        abort: &CancellationToken,
    ) {
        let config = self.config.borrow().clone();
        // A listener bound to one address accepts only on it: no need to ask the socket.
        let local = match listen {
            Some(addr) if !addr.ip().is_unspecified() => addr,
            _ => stream.local_addr().unwrap_or(peer),
        };
        let info = SessionInfo {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            local,
            helo: None,
            esmtp: false,
            tls: None,
            started: SystemTime::now(),
        };
        let handler = self.handler.clone();
        match Admission::admit(&self.admission, peer.ip(), &config) {
            Ok(slot) => {
                let (shutdown, abort) = (shutdown.clone(), abort.clone());
                sessions.spawn(async move {
                    session::run(stream, info, config, handler, shutdown, abort).await;
                    drop(slot);
                });
            }
            Err(reply) => {
                sessions.spawn(refuse(stream, info, reply, handler));
            }
        }
    }
}

/// Sets `TCP_NODELAY` on the listening socket, so that every accepted connection starts with it
/// (Linux copies it at accept) and no session pays a `setsockopt` of its own. Replies are whole
/// lines written at once: Nagle's algorithm would only hold them back. Returns whether it worked;
/// if not, each accepted connection gets it instead.
fn set_nodelay_on_listener(listener: &TcpListener) -> bool {
    socket2::SockRef::from(listener)
        .set_tcp_nodelay(true)
        .is_ok()
}

fn report_task_end(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        error!(error = %e, "an SMTP session task panicked; other sessions are unaffected");
    }
}

/// Answers a connection over the limits with 421 and closes it, without reading anything from the client.
async fn refuse<H: MailHandler>(
    stream: TcpStream,
    info: SessionInfo,
    reply: Reply,
    handler: Arc<H>,
) {
    info!(session_id = info.id, client_ip = %info.peer.ip(), reply = %reply, "connection refused");
    let mut connection = Connection::new(stream);
    connection.queue(&reply);
    connection.close(Duration::from_secs(5)).await;
    let stats = SessionStats {
        messages_accepted: 0,
        messages_rejected: 0,
        recipients_rejected: 0,
        errors: 0,
        bytes_received: 0,
        end: SessionEnd::RefusedAtConnect,
    };
    handler.session_closed(&info, &stats).await;
}

/// Counts running sessions in total and per client address. A counter rather than a semaphore, because the limits
/// come from the reloadable config and may change while sessions run.
#[derive(Default)]
struct Admission {
    table: Mutex<AdmissionTable>,
}

#[derive(Default)]
struct AdmissionTable {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    fn admit(
        admission: &Arc<Admission>,
        ip: IpAddr,
        config: &ServerConfig,
    ) -> Result<SessionSlot, Reply> {
        let mut table = admission.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.total >= config.max_sessions {
            return Err(Reply::new(
                421,
                "4.7.0",
                format!("{} too many connections, try again later", config.hostname),
            ));
        }
        let from_ip = table.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= config.max_sessions_per_ip {
            return Err(Reply::new(
                421,
                "4.7.0",
                format!(
                    "{} too many connections from your address, try again later",
                    config.hostname
                ),
            ));
        }
        table.total += 1;
        table.per_ip.insert(ip, from_ip + 1);
        Ok(SessionSlot {
            admission: admission.clone(),
            ip,
        })
    }
}

/// A place in the session limits, given back when the session task ends (also if it panics).
struct SessionSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut table = self
            .admission
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        table.total = table.total.saturating_sub(1);
        if let Some(count) = table.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (before, _) = listener.accept().await.unwrap();
        assert!(!before.nodelay().unwrap(), "off unless asked for");

        assert!(set_nodelay_on_listener(&listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (after, _) = listener.accept().await.unwrap();
        assert!(after.nodelay().unwrap());
    }
}

//! End-to-end tests of the inbound server: a real TCP client on 127.0.0.1 against a `Server` with an in-memory
//! `MailHandler`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use portcullis_smtp::{
    DataLogging, Envelope, MailHandler, MailParams, Path, Reply, Server, ServerConfig, SessionEnd,
    SessionInfo, SessionStats, TranscriptMode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------------------------
// The in-memory handler

#[derive(Debug, Clone)]
struct StoredMessage {
    envelope: Envelope,
    body: Vec<u8>,
    writes: usize,
    tls: bool,
}

#[derive(Default)]
struct MemoryHandler {
    messages: Mutex<Vec<StoredMessage>>,
    senders: Mutex<Vec<String>>,
    aborted: AtomicUsize,
    closed: Mutex<Vec<SessionStats>>,
    refuse_connections: AtomicBool,
}

/// A Body that keeps the message in memory and counts write calls.
#[derive(Default)]
struct MemoryBody {
    data: Vec<u8>,
    writes: usize,
}

impl AsyncWrite for MemoryBody {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.data.extend_from_slice(buf);
        this.writes += 1;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl MailHandler for MemoryHandler {
    type Body = MemoryBody;

    async fn connect(&self, _: &SessionInfo) -> Result<(), Reply> {
        if self.refuse_connections.load(Ordering::SeqCst) {
            return Err(Reply::new(421, "4.3.2", "not accepting connections"));
        }
        Ok(())
    }

    async fn mail_from(&self, _: &SessionInfo, from: &Path, _: &MailParams) -> Result<(), Reply> {
        self.senders.lock().unwrap().push(from.address.clone());
        if from.address.starts_with("blocked") {
            return Err(Reply::new(550, "5.7.1", "sender blocked"));
        }
        Ok(())
    }

    async fn rcpt_to(&self, _: &SessionInfo, _: &Envelope, rcpt: &Path) -> Result<(), Reply> {
        if rcpt.address.starts_with("unknown") {
            return Err(Reply::new(550, "5.1.1", "no such user"));
        }
        Ok(())
    }

    async fn begin_body(&self, _: &SessionInfo, _: &Envelope) -> Result<MemoryBody, Reply> {
        Ok(MemoryBody::default())
    }

    async fn end_body(
        &self,
        session: &SessionInfo,
        envelope: &Envelope,
        body: MemoryBody,
    ) -> Reply {
        let mut messages = self.messages.lock().unwrap();
        messages.push(StoredMessage {
            envelope: envelope.clone(),
            body: body.data,
            writes: body.writes,
            tls: session.tls.is_some(),
        });
        Reply::new(250, "2.0.0", format!("ok queued as MSG{}", messages.len()))
    }

    async fn abort_body(&self, _: &SessionInfo, _: MemoryBody) {
        self.aborted.fetch_add(1, Ordering::SeqCst);
    }

    async fn session_closed(&self, _: &SessionInfo, stats: &SessionStats) {
        self.closed.lock().unwrap().push(stats.clone());
    }
}

impl MemoryHandler {
    fn messages(&self) -> Vec<StoredMessage> {
        self.messages.lock().unwrap().clone()
    }
    fn aborted(&self) -> usize {
        self.aborted.load(Ordering::SeqCst)
    }
    fn closed(&self) -> Vec<SessionStats> {
        self.closed.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Harness

struct Harness {
    addr: SocketAddr,
    handler: Arc<MemoryHandler>,
    server: Arc<Server<MemoryHandler>>,
    shutdown: CancellationToken,
    serving: JoinHandle<()>,
    config: watch::Sender<Arc<ServerConfig>>,
}

fn test_config() -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        ..ServerConfig::default()
    }
}

async fn start(config: ServerConfig) -> Harness {
    start_with_grace(config, Duration::from_secs(5)).await
}

async fn start_with_grace(config: ServerConfig, grace: Duration) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (config, receiver) = watch::channel(Arc::new(config));
    let handler = Arc::new(MemoryHandler::default());
    let server = Arc::new(Server::new(receiver, handler.clone()));
    let shutdown = CancellationToken::new();
    let serving = {
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tokio::spawn(async move { server.serve(listener, shutdown, grace).await })
    };
    Harness {
        addr,
        handler,
        server,
        shutdown,
        serving,
        config,
    }
}

/// Polls until `condition` holds; session_closed runs after the socket is closed, so tests wait for it.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Client<S> {
    stream: S,
    buffer: Vec<u8>,
}

impl Client<TcpStream> {
    async fn connect(addr: SocketAddr) -> Client<TcpStream> {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buffer: Vec::new(),
        }
    }

    /// Connects and reads the banner.
    async fn greeted(addr: SocketAddr) -> Client<TcpStream> {
        let mut client = Client::connect(addr).await;
        let banner = client.reply().await;
        assert!(banner.starts_with("220 "), "{banner}");
        client
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next complete reply, lines joined with "\n"; None when the server closed the connection first.
    async fn try_reply(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buffer.drain(..end + 2).collect()).unwrap();
                let line = line.trim_end().to_string();
                let last = line.as_bytes().get(3) == Some(&b' ') || line.len() == 3;
                lines.push(line);
                if last {
                    return Some(lines.join("\n"));
                }
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
                .await
                .expect("no reply in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn reply(&mut self) -> String {
        self.try_reply()
            .await
            .expect("connection closed while waiting for a reply")
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// True when the server has closed the connection (no further reply arrives).
    async fn is_closed(&mut self) -> bool {
        self.try_reply().await.is_none()
    }

    async fn ehlo(&mut self) -> String {
        let reply = self.command("EHLO client.test").await;
        assert!(reply.starts_with("250"), "{reply}");
        reply
    }

    /// EHLO, MAIL, RCPT and DATA up to the 354.
    async fn open_data(&mut self) {
        self.ehlo().await;
        assert!(
            self.command("MAIL FROM:<sender@client.test>")
                .await
                .starts_with("250 2.1.0")
        );
        assert!(
            self.command("RCPT TO:<rcpt@mx.test>")
                .await
                .starts_with("250 2.1.5")
        );
        let go_ahead = self.command("DATA").await;
        assert!(go_ahead.starts_with("354 "), "{go_ahead}");
    }

    fn into_stream(self) -> S {
        assert!(self.buffer.is_empty(), "unread server data before TLS");
        self.stream
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Greeting and EHLO

#[tokio::test]
async fn banner_names_the_host_and_ehlo_advertises_the_extensions() {
    let h = start(ServerConfig {
        max_message_size: 12345,
        ..test_config()
    })
    .await;
    let mut c = Client::connect(h.addr).await;
    assert_eq!(c.reply().await, "220 mx.test ESMTP Portcullis");
    let ehlo = c.command("EHLO client.test").await;
    let keywords: Vec<&str> = ehlo.lines().map(|l| &l[4..]).collect();
    assert_eq!(
        keywords,
        [
            "mx.test",
            "PIPELINING",
            "SIZE 12345",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "CHUNKING"
        ]
    );
    assert!(
        !ehlo.contains("STARTTLS"),
        "STARTTLS must not be offered without TLS configured"
    );
    assert!(!ehlo.contains("AUTH"));
    assert_eq!(
        c.command("QUIT").await,
        "221 2.0.0 mx.test closing connection"
    );
    assert!(c.is_closed().await);
    eventually("session_closed", || {
        h.handler.closed().iter().any(|s| s.end == SessionEnd::Quit)
    })
    .await;
}

#[tokio::test]
async fn chunking_is_not_advertised_when_disabled() {
    let h = start(ServerConfig {
        chunking: false,
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    assert!(!c.ehlo().await.contains("CHUNKING"));
    c.command("MAIL FROM:<a@client.test>").await;
    c.command("RCPT TO:<b@mx.test>").await;
    // The chunk is consumed even though BDAT is refused, so its content is never run as commands.
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await, "502 5.5.1 BDAT not supported");
    assert!(c.command("NOOP").await.starts_with("250"));
}

#[tokio::test]
async fn helo_gets_a_plain_greeting_and_mail_without_helo_is_a_sequence_error() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    assert_eq!(
        c.command("MAIL FROM:<a@client.test>").await,
        "503 5.5.1 send EHLO or HELO first"
    );
    assert_eq!(c.command("HELO client.test").await, "250 mx.test");
    assert_eq!(
        c.command("MAIL FROM:<a@client.test> SIZE=10").await,
        "555 5.5.4 MAIL parameters require EHLO"
    );
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .await
            .starts_with("250")
    );
}

#[tokio::test]
async fn utility_commands_answer_without_disclosing_anything() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    assert!(c.command("VRFY root").await.starts_with("252 2.1.5"));
    assert!(c.command("EXPN staff").await.starts_with("502 5.5.1"));
    assert!(
        c.command("AUTH PLAIN AGFhAGI=")
            .await
            .starts_with("502 5.5.1")
    );
    assert!(c.command("HELP").await.starts_with("214-2.0.0"));
    assert_eq!(c.command("NOOP").await, "250 2.0.0 ok");
    assert_eq!(c.command("RSET").await, "250 2.0.0 reset ok");
    assert!(c.command("STARTTLS").await.starts_with("502 5.5.1"));
    assert_eq!(c.command("FOO").await, "500 5.5.2 command not recognized");
    assert_eq!(
        c.command("RCPT TO:<a@mx.test>").await,
        "503 5.5.1 need MAIL command first"
    );
    assert_eq!(c.command("DATA").await, "503 5.5.1 need MAIL command first");
}

#[tokio::test]
async fn web_requests_are_answered_521_and_disconnected() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    assert!(c.command("GET / HTTP/1.1").await.starts_with("521 5.7.0"));
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn refusal_by_the_connect_hook_sends_its_reply_and_closes() {
    let h = start(test_config()).await;
    h.handler.refuse_connections.store(true, Ordering::SeqCst);
    let mut c = Client::connect(h.addr).await;
    assert_eq!(c.reply().await, "421 4.3.2 not accepting connections");
    assert!(c.is_closed().await);
    eventually("refused session", || {
        h.handler
            .closed()
            .iter()
            .any(|s| s.end == SessionEnd::RefusedAtConnect)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------------
// Transactions, pipelining, DATA

#[tokio::test]
async fn pipelined_transaction_in_one_write_gets_all_replies_in_order() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<sender@client.test> BODY=8BITMIME SIZE=100\r\n\
          RCPT TO:<one@mx.test>\r\nRCPT TO:<unknown@mx.test>\r\nRCPT TO:<two@mx.test>\r\nDATA\r\n",
    )
    .await;
    assert!(c.reply().await.starts_with("250-mx.test"));
    assert_eq!(c.reply().await, "250 2.1.0 sender ok");
    assert_eq!(c.reply().await, "250 2.1.5 recipient ok");
    assert_eq!(c.reply().await, "550 5.1.1 no such user");
    assert_eq!(c.reply().await, "250 2.1.5 recipient ok");
    assert!(c.reply().await.starts_with("354 "));
    c.send(b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 ok queued as MSG1");
    assert!(c.reply().await.starts_with("221 2.0.0"));
    let messages = h.handler.messages();
    assert_eq!(messages.len(), 1);
    let envelope = &messages[0].envelope;
    assert_eq!(envelope.mail_from.address, "sender@client.test");
    let rcpts: Vec<&str> = envelope
        .rcpt_to
        .iter()
        .map(|p| p.address.as_str())
        .collect();
    assert_eq!(rcpts, ["one@mx.test", "two@mx.test"]);
    assert_eq!(envelope.params.size, Some(100));
    assert_eq!(messages[0].body, b"Subject: hi\r\n\r\nhello\r\n");
    eventually("stats", || {
        h.handler.closed().iter().any(|s| {
            s.messages_accepted == 1 && s.recipients_rejected == 1 && s.end == SessionEnd::Quit
        })
    })
    .await;
}

#[tokio::test]
async fn body_is_dot_unstuffed_and_kept_byte_exact() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(
        b"Subject: dots\r\n\r\n..leading dot\r\n...\r\n. \r\n\xc3\xa9 8bit\t\x00nul\r\n\r\n.\r\n",
    )
    .await;
    assert!(c.reply().await.starts_with("250 2.0.0"));
    assert_eq!(
        h.handler.messages()[0].body,
        b"Subject: dots\r\n\r\n.leading dot\r\n..\r\n \r\n\xc3\xa9 8bit\t\x00nul\r\n\r\n"
    );
}

#[tokio::test]
async fn two_messages_in_one_session_are_both_accepted() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(b"one\r\n.\r\n").await;
    assert!(c.reply().await.ends_with("MSG1"));
    assert!(c.command("MAIL FROM:<>").await.starts_with("250"));
    assert!(c.command("RCPT TO:<postmaster>").await.starts_with("250"));
    assert!(c.command("DATA").await.starts_with("354"));
    c.send(b"two\r\n.\r\n").await;
    assert!(c.reply().await.ends_with("MSG2"));
    let messages = h.handler.messages();
    assert!(messages[1].envelope.mail_from.is_null());
    assert_eq!(messages[1].body, b"two\r\n");
}

#[tokio::test]
async fn large_body_is_written_in_large_pieces() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    let line = format!("{}\r\n", "x".repeat(998));
    let body = line.repeat(1000);
    c.send(body.as_bytes()).await;
    c.send(b".\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    let message = &h.handler.messages()[0];
    assert_eq!(message.body, body.as_bytes());
    assert!(message.writes <= 20, "{} writes for 1 MB", message.writes);
}

#[tokio::test]
async fn data_without_recipients_and_nested_mail_are_refused() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.command("MAIL FROM:<a@client.test>").await;
    assert_eq!(
        c.command("MAIL FROM:<a@client.test>").await,
        "503 5.5.1 nested MAIL command"
    );
    assert_eq!(
        c.command("RCPT TO:<unknown@mx.test>").await,
        "550 5.1.1 no such user"
    );
    assert_eq!(c.command("DATA").await, "554 5.5.1 no valid recipients");
    assert_eq!(c.command("RSET").await, "250 2.0.0 reset ok");
    assert_eq!(c.command("DATA").await, "503 5.5.1 need MAIL command first");
}

#[tokio::test]
async fn handler_refusal_of_the_sender_leaves_no_transaction() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    assert_eq!(
        c.command("MAIL FROM:<blocked@client.test>").await,
        "550 5.7.1 sender blocked"
    );
    assert_eq!(
        c.command("RCPT TO:<a@mx.test>").await,
        "503 5.5.1 need MAIL command first"
    );
}

#[tokio::test]
async fn non_ascii_address_needs_smtputf8() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    assert!(
        c.command("MAIL FROM:<jösé@client.test>")
            .await
            .starts_with("553 5.6.7")
    );
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .await
            .starts_with("250")
    );
    assert!(
        c.command("RCPT TO:<ünï@mx.test>")
            .await
            .starts_with("553 5.6.7")
    );
    c.command("RSET").await;
    assert!(
        c.command("MAIL FROM:<jösé@client.test> SMTPUTF8")
            .await
            .starts_with("250")
    );
    assert!(c.command("RCPT TO:<ünï@mx.test>").await.starts_with("250"));
}

#[tokio::test]
async fn bad_syntax_gets_501_and_unknown_parameters_555() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    assert_eq!(
        c.command("MAIL FROM:<a@>").await,
        "501 5.1.7 bad sender address syntax"
    );
    assert_eq!(
        c.command("MAIL TO:<a@b.test>").await,
        "501 5.5.4 syntax: MAIL FROM:<address> [parameters]"
    );
    assert_eq!(
        c.command("MAIL FROM:<a@b.test> ENVID=x").await,
        "555 5.5.4 unsupported parameter ENVID"
    );
    assert!(c.command("MAIL FROM:<a@b.test>").await.starts_with("250"));
    assert_eq!(
        c.command("RCPT TO:<>").await,
        "501 5.1.3 bad recipient address syntax"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// SMTP smuggling

/// Sends a message whose body contains `terminator` followed by a complete second transaction, then a real end.
async fn smuggle(terminator: &[u8]) -> (Harness, Client<TcpStream>, Option<String>) {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    let mut payload = b"Subject: first\r\n\r\nfirst body".to_vec();
    payload.extend_from_slice(terminator);
    payload.extend_from_slice(
        b"MAIL FROM:<admin@bank.test>\r\nRCPT TO:<victim@mx.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n",
    );
    c.send(&payload).await;
    let first = c.try_reply().await;
    (h, c, first)
}

#[tokio::test]
async fn smuggling_with_bare_line_breaks_is_refused_with_521_and_closed() {
    for terminator in [
        &b"\n.\n"[..],
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\n.\r",
        b"\r.\r\n",
        b"\r\n.\r\0\n",
        b"\r\0\n.\r\n",
    ] {
        let shown = String::from_utf8_lossy(terminator)
            .escape_debug()
            .to_string();
        let (h, mut c, reply) = smuggle(terminator).await;
        assert_eq!(
            reply.as_deref(),
            Some("521 5.5.2 bare LF or CR in message data is not allowed"),
            "{shown}"
        );
        assert!(
            c.is_closed().await,
            "connection must be closed after {shown}"
        );
        drop(c);
        assert!(
            h.handler.messages().is_empty(),
            "no message may be accepted for {shown}"
        );
        assert!(
            !h.handler
                .senders
                .lock()
                .unwrap()
                .contains(&"admin@bank.test".to_string()),
            "{shown}"
        );
        eventually("abort_body", || h.handler.aborted() == 1).await;
        eventually("session end", || {
            h.handler
                .closed()
                .iter()
                .any(|s| matches!(s.end, SessionEnd::ProtocolViolation(_)))
        })
        .await;
    }
}

#[tokio::test]
async fn smuggling_with_nul_tricks_yields_one_message_containing_the_payload() {
    for terminator in [
        &b"\r\n\0.\r\n"[..],
        b"\r\n.\0\r\n",
        b"\r\n\x00\r\n.\x00\r\n",
    ] {
        let shown = String::from_utf8_lossy(terminator)
            .escape_debug()
            .to_string();
        let (h, mut c, reply) = smuggle(terminator).await;
        // The fake terminator is content; the real end of data comes after the "smuggled" message.
        assert!(
            reply.as_deref().is_some_and(|r| r.starts_with("250 2.0.0")),
            "{shown}: {reply:?}"
        );
        assert_eq!(
            c.command("QUIT").await,
            "221 2.0.0 mx.test closing connection",
            "{shown}"
        );
        let messages = h.handler.messages();
        assert_eq!(messages.len(), 1, "{shown}");
        assert!(
            messages[0].body.windows(8).any(|w| w == b"smuggled"),
            "{shown}"
        );
        assert!(
            !h.handler
                .senders
                .lock()
                .unwrap()
                .contains(&"admin@bank.test".to_string()),
            "{shown}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Size and line limits

#[tokio::test]
async fn size_parameter_over_the_limit_is_refused_at_mail() {
    let h = start(ServerConfig {
        max_message_size: 1000,
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    assert_eq!(
        c.command("MAIL FROM:<a@client.test> SIZE=1001").await,
        "552 5.3.4 message size exceeds fixed maximum message size"
    );
    assert!(
        c.command("MAIL FROM:<a@client.test> SIZE=1000")
            .await
            .starts_with("250")
    );
}

#[tokio::test]
async fn body_over_the_limit_is_read_to_the_end_then_refused_with_552() {
    let h = start(ServerConfig {
        max_message_size: 1000,
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(format!("{}\r\n", "y".repeat(500)).repeat(5).as_bytes())
        .await;
    c.send(b".\r\n").await;
    assert_eq!(
        c.reply().await,
        "552 5.3.4 message size exceeds fixed maximum message size"
    );
    eventually("abort_body", || h.handler.aborted() == 1).await;
    assert!(h.handler.messages().is_empty());
    // The session is still in step: a following small message goes through.
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .await
            .starts_with("250")
    );
    assert!(c.command("RCPT TO:<b@mx.test>").await.starts_with("250"));
    assert!(c.command("DATA").await.starts_with("354"));
    c.send(b"small\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0"));
}

#[tokio::test]
async fn overlong_data_line_is_read_to_the_end_then_refused_with_554() {
    let h = start(ServerConfig {
        max_line_length: 100,
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(format!("short\r\n{}\r\nmore\r\n.\r\n", "z".repeat(99)).as_bytes())
        .await;
    assert_eq!(
        c.reply().await,
        "554 5.6.0 message has lines longer than 100 bytes"
    );
    eventually("abort_body", || h.handler.aborted() == 1).await;
    assert!(c.command("NOOP").await.starts_with("250"));
}

#[tokio::test]
async fn overlong_command_line_gets_500_and_the_session_continues() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.send(format!("NOOP {}\r\n", "a".repeat(5000)).as_bytes())
        .await;
    assert_eq!(c.reply().await, "500 5.5.2 line too long");
    assert_eq!(c.command("NOOP").await, "250 2.0.0 ok");
    c.send(format!("NOOP {}\r\n", "a".repeat(2100)).as_bytes())
        .await;
    assert_eq!(c.reply().await, "500 5.5.2 line too long");
    assert_eq!(
        c.command("QUIT").await,
        "221 2.0.0 mx.test closing connection"
    );
    eventually("stats", || h.handler.closed().iter().any(|s| s.errors == 2)).await;
}

// ---------------------------------------------------------------------------------------------------------------
// CHUNKING / BDAT

#[tokio::test]
async fn bdat_chunks_are_joined_without_dot_handling() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.test>\r\nBDAT 14\r\nSubject: x\r\n\r\nBDAT 9 LAST\r\n.\r\n..\r\n\r\n").await;
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert_eq!(c.reply().await, "250 2.0.0 14 octets received");
    assert_eq!(c.reply().await, "250 2.0.0 ok queued as MSG1");
    assert_eq!(
        h.handler.messages()[0].body,
        b"Subject: x\r\n\r\n.\r\n..\r\n\r\n"
    );
}

#[tokio::test]
async fn bdat_zero_last_ends_the_message_and_unterminated_last_line_gets_crlf() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.command("MAIL FROM:<a@client.test>").await;
    c.command("RCPT TO:<b@mx.test>").await;
    c.send(b"BDAT 9\r\nno ending").await;
    assert!(c.reply().await.starts_with("250 2.0.0 9 octets"));
    assert!(
        c.command("BDAT 0 LAST")
            .await
            .starts_with("250 2.0.0 ok queued")
    );
    assert_eq!(h.handler.messages()[0].body, b"no ending\r\n");
}

#[tokio::test]
async fn data_after_bdat_in_one_transaction_is_refused() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.command("MAIL FROM:<a@client.test>").await;
    c.command("RCPT TO:<b@mx.test>").await;
    c.send(b"BDAT 5\r\nhi\r\n\r").await;
    assert!(c.reply().await.starts_with("250 2.0.0 5 octets"));
    assert_eq!(
        c.command("DATA").await,
        "503 5.5.1 DATA cannot be mixed with BDAT in one transaction"
    );
    c.send(b"BDAT 1 LAST\r\n\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 ok queued"));
    assert_eq!(h.handler.messages()[0].body, b"hi\r\n\r\n");
}

#[tokio::test]
async fn bdat_without_a_transaction_is_refused_and_its_chunk_is_not_run_as_commands() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 need MAIL command first");
    assert_eq!(c.command("NOOP").await, "250 2.0.0 ok");
    c.command("MAIL FROM:<a@client.test>").await;
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await, "554 5.5.1 no valid recipients");
    assert_eq!(c.command("NOOP").await, "250 2.0.0 ok");
}

#[tokio::test]
async fn malformed_bdat_size_closes_the_session() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    assert!(c.command("BDAT lots").await.starts_with("501 5.5.4"));
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn bdat_over_the_size_limit_consumes_exactly_the_chunk_and_refuses_pipelined_chunks() {
    let h = start(ServerConfig {
        max_message_size: 100,
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.command("MAIL FROM:<a@client.test>").await;
    c.command("RCPT TO:<b@mx.test>").await;
    let mut pipeline = b"BDAT 80\r\n".to_vec();
    pipeline.extend(format!("{}\r\n", "a".repeat(78)).bytes());
    pipeline.extend(b"BDAT 60\r\n");
    pipeline.extend(format!("{}\r\n", "b".repeat(58)).bytes());
    pipeline.extend(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    c.send(&pipeline).await;
    assert_eq!(c.reply().await, "250 2.0.0 80 octets received");
    assert_eq!(
        c.reply().await,
        "552 5.3.4 message size exceeds fixed maximum message size"
    );
    assert_eq!(
        c.reply().await,
        "552 5.3.4 message size exceeds fixed maximum message size"
    );
    assert_eq!(c.reply().await, "250 2.0.0 ok");
    eventually("abort_body", || h.handler.aborted() == 1).await;
    assert!(h.handler.messages().is_empty());
}

#[tokio::test]
async fn bare_lf_in_bdat_content_is_refused_with_521_and_closed() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.command("MAIL FROM:<a@client.test>").await;
    c.command("RCPT TO:<b@mx.test>").await;
    c.send(b"BDAT 10 LAST\r\nab\ncd\r\nef").await;
    assert_eq!(
        c.reply().await,
        "521 5.5.2 bare LF or CR in message data is not allowed"
    );
    assert!(c.is_closed().await);
    eventually("abort_body", || h.handler.aborted() == 1).await;
    assert!(h.handler.messages().is_empty());
}

#[tokio::test]
async fn bare_cr_at_the_end_of_the_last_chunk_is_refused() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.command("MAIL FROM:<a@client.test>").await;
    c.command("RCPT TO:<b@mx.test>").await;
    c.send(b"BDAT 3 LAST\r\nab\r").await;
    assert!(c.reply().await.starts_with("521 5.5.2"));
    assert!(c.is_closed().await);
}

// ---------------------------------------------------------------------------------------------------------------
// STARTTLS

mod tls {
    use super::*;
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{
        CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
    };
    use tokio_rustls::TlsConnector;

    /// Trusts exactly the test certificate.
    #[derive(Debug)]
    struct TrustTestCertificate {
        certificate: CertificateDer<'static>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    }

    impl ServerCertVerifier for TrustTestCertificate {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if end_entity.as_ref() == self.certificate.as_ref() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General("not the test certificate".into()))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    fn tls_configs() -> (Arc<rustls::ServerConfig>, TlsConnector) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let certificate: CertificateDer<'static> = generated.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key)
            .unwrap();
        let verifier = Arc::new(TrustTestCertificate {
            certificate,
            provider: provider.clone(),
        });
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        (Arc::new(server), TlsConnector::from(Arc::new(client)))
    }

    async fn upgrade(
        client: Client<TcpStream>,
        connector: &TlsConnector,
    ) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
        let stream = client.into_stream();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = connector
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        Client {
            stream,
            buffer: Vec::new(),
        }
    }

    #[tokio::test]
    async fn starttls_upgrades_resets_the_session_and_is_not_offered_twice() {
        let (server_tls, connector) = tls_configs();
        let h = start(ServerConfig {
            tls: Some(server_tls),
            ..test_config()
        })
        .await;
        let mut c = Client::greeted(h.addr).await;
        assert!(c.ehlo().await.contains("STARTTLS"));
        assert_eq!(c.command("STARTTLS").await, "220 2.0.0 ready to start TLS");
        let mut c = upgrade(c, &connector).await;
        assert_eq!(
            c.command("MAIL FROM:<a@client.test>").await,
            "503 5.5.1 send EHLO or HELO first"
        );
        let ehlo = c.ehlo().await;
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert_eq!(c.command("STARTTLS").await, "503 5.5.1 TLS already active");
        assert!(
            c.command("MAIL FROM:<a@client.test>")
                .await
                .starts_with("250")
        );
        assert!(c.command("RCPT TO:<b@mx.test>").await.starts_with("250"));
        assert!(c.command("DATA").await.starts_with("354"));
        c.send(b"secret\r\n.\r\n").await;
        assert!(c.reply().await.starts_with("250 2.0.0"));
        let messages = h.handler.messages();
        assert!(messages[0].tls);
        assert_eq!(messages[0].body, b"secret\r\n");
        assert!(c.command("QUIT").await.starts_with("221"));
    }

    #[tokio::test]
    async fn commands_pipelined_after_starttls_are_discarded() {
        let (server_tls, connector) = tls_configs();
        let h = start(ServerConfig {
            tls: Some(server_tls),
            ..test_config()
        })
        .await;
        let mut c = Client::greeted(h.addr).await;
        c.ehlo().await;
        c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\nRCPT TO:<victim@mx.test>\r\n")
            .await;
        assert_eq!(c.reply().await, "220 2.0.0 ready to start TLS");
        let mut c = upgrade(c, &connector).await;
        c.ehlo().await;
        // Had the plaintext MAIL survived the upgrade, this RCPT would be accepted.
        assert_eq!(
            c.command("RCPT TO:<victim@mx.test>").await,
            "503 5.5.1 need MAIL command first"
        );
        assert!(h.handler.senders.lock().unwrap().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn recipients_over_the_limit_get_452() {
    let h = start(ServerConfig {
        max_recipients: 2,
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.command("MAIL FROM:<a@client.test>").await;
    assert!(c.command("RCPT TO:<one@mx.test>").await.starts_with("250"));
    assert!(c.command("RCPT TO:<two@mx.test>").await.starts_with("250"));
    assert_eq!(
        c.command("RCPT TO:<three@mx.test>").await,
        "452 4.5.3 too many recipients"
    );
    assert!(c.command("DATA").await.starts_with("354"));
    c.send(b"x\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    assert_eq!(h.handler.messages()[0].envelope.rcpt_to.len(), 2);
}

#[tokio::test]
async fn too_many_errors_get_421_and_disconnect() {
    let h = start(ServerConfig {
        max_errors: 3,
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    assert!(c.command("BOGUS").await.starts_with("500"));
    assert!(c.command("RCPT TO:<a@mx.test>").await.starts_with("503"));
    c.send(b"XYZZY\r\n").await;
    assert!(c.reply().await.starts_with("500"));
    assert_eq!(
        c.reply().await,
        "421 4.7.0 mx.test too many errors, closing connection"
    );
    assert!(c.is_closed().await);
    eventually("stats", || {
        h.handler
            .closed()
            .iter()
            .any(|s| s.end == SessionEnd::TooManyErrors && s.errors == 3)
    })
    .await;
}

#[tokio::test]
async fn silent_client_times_out_with_421() {
    let h = start(ServerConfig {
        command_timeout: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    assert_eq!(
        c.reply().await,
        "421 4.4.2 mx.test timeout exceeded, closing connection"
    );
    assert!(c.is_closed().await);
    eventually("stats", || {
        h.handler
            .closed()
            .iter()
            .any(|s| s.end == SessionEnd::Timeout)
    })
    .await;
}

#[tokio::test]
async fn stalled_data_times_out_with_421_and_the_body_is_aborted() {
    let h = start(ServerConfig {
        data_timeout: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(b"partial line\r\n").await;
    assert!(c.reply().await.starts_with("421 4.4.2"));
    assert!(c.is_closed().await);
    eventually("abort_body", || h.handler.aborted() == 1).await;
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_get_421() {
    let h = start(ServerConfig {
        max_sessions_per_ip: 2,
        ..test_config()
    })
    .await;
    let _first = Client::greeted(h.addr).await;
    let _second = Client::greeted(h.addr).await;
    let mut third = Client::connect(h.addr).await;
    assert_eq!(
        third.reply().await,
        "421 4.7.0 mx.test too many connections from your address, try again later"
    );
    assert!(third.is_closed().await);
    assert_eq!(h.server.active_sessions(), 2);
    drop(_first);
    eventually("slot released", || h.server.active_sessions() == 1).await;
    let _again = Client::greeted(h.addr).await;
}

#[tokio::test]
async fn connections_over_the_session_limit_get_421() {
    let h = start(ServerConfig {
        max_sessions: 1,
        ..test_config()
    })
    .await;
    let _first = Client::greeted(h.addr).await;
    let mut second = Client::connect(h.addr).await;
    assert_eq!(
        second.reply().await,
        "421 4.7.0 mx.test too many connections, try again later"
    );
}

#[tokio::test]
async fn client_talking_before_the_banner_is_dropped_as_pregreet() {
    let h = start(ServerConfig {
        banner_delay: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let mut eager = Client::connect(h.addr).await;
    eager.send(b"EHLO spambot\r\n").await;
    assert_eq!(
        eager.reply().await,
        "554 5.5.0 protocol error: talking before the greeting"
    );
    assert!(eager.is_closed().await);
    let mut patient = Client::connect(h.addr).await;
    assert_eq!(patient.reply().await, "220 mx.test ESMTP Portcullis");
}

#[tokio::test]
async fn new_sessions_use_the_reloaded_config() {
    let h = start(test_config()).await;
    let mut old = Client::greeted(h.addr).await;
    h.config.send_replace(Arc::new(ServerConfig {
        hostname: "reloaded.test".into(),
        ..test_config()
    }));
    let mut new = Client::connect(h.addr).await;
    assert_eq!(new.reply().await, "220 reloaded.test ESMTP Portcullis");
    assert!(old.command("EHLO x").await.starts_with("250-mx.test"));
}

// ---------------------------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn shutdown_tells_idle_sessions_421_and_stops_accepting() {
    let h = start(test_config()).await;
    let mut idle = Client::greeted(h.addr).await;
    idle.ehlo().await;
    h.shutdown.cancel();
    assert_eq!(
        idle.reply().await,
        "421 4.3.2 mx.test service shutting down, try again later"
    );
    assert!(idle.is_closed().await);
    tokio::time::timeout(PATIENCE, h.serving)
        .await
        .expect("serve returns")
        .unwrap();
    assert!(
        TcpStream::connect(h.addr).await.is_err(),
        "listener must be closed"
    );
    assert!(
        h.handler
            .closed()
            .iter()
            .any(|s| s.end == SessionEnd::Shutdown)
    );
}

#[tokio::test]
async fn shutdown_lets_a_message_in_data_finish_then_says_421() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(b"second half\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0"));
    assert_eq!(
        c.command("MAIL FROM:<a@client.test>").await,
        "421 4.3.2 mx.test service shutting down, try again later"
    );
    tokio::time::timeout(PATIENCE, h.serving)
        .await
        .expect("serve returns")
        .unwrap();
    assert_eq!(
        h.handler.messages()[0].body,
        b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
    );
}

#[tokio::test]
async fn shutdown_aborts_sessions_still_running_after_the_grace_period() {
    let h = start_with_grace(test_config(), Duration::from_millis(300)).await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(b"never finished\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.shutdown.cancel();
    tokio::time::timeout(PATIENCE, h.serving)
        .await
        .expect("serve returns after grace")
        .unwrap();
    assert_eq!(h.handler.aborted(), 1);
    assert!(h.handler.messages().is_empty());
    assert!(
        h.handler
            .closed()
            .iter()
            .any(|s| s.end == SessionEnd::Shutdown)
    );
    assert_eq!(h.server.active_sessions(), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Conversation transcripts

/// One transcript event: session id, direction and text.
type TranscriptLine = (u64, String, String);

/// Collects the events at the transcript target. The tests run on a current-thread runtime, so a thread-local
/// default subscriber sees the session tasks' events.
#[derive(Clone, Default)]
struct TranscriptLog(Arc<Mutex<Vec<TranscriptLine>>>);

#[derive(Default)]
struct TranscriptFields {
    session_id: u64,
    direction: String,
    text: String,
}

impl tracing::field::Visit for TranscriptFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "session_id" {
            self.session_id = value;
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "direction" {
            self.direction = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TranscriptLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != portcullis_smtp::TRANSCRIPT_TARGET {
            return;
        }
        let mut fields = TranscriptFields::default();
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((fields.session_id, fields.direction, fields.text));
    }
}

impl TranscriptLog {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    /// The lines as `"< text"` / `"> text"` / `"* text"`.
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, direction, text)| format!("{direction} {text}"))
            .collect()
    }

    fn sessions(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.0.lock().unwrap().iter().map(|l| l.0).collect();
        ids.dedup();
        ids
    }
}

fn transcript_config(mode: TranscriptMode, data: DataLogging) -> ServerConfig {
    ServerConfig {
        transcript: mode,
        transcript_data: data,
        ..test_config()
    }
}

/// Sends one message with DATA and quits; waits until the session has been reported closed.
async fn send_one_message(h: &Harness, body: &[u8]) {
    let sessions_before = h.handler.closed().len();
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(body).await;
    c.send(b".\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0"));
    assert!(c.command("QUIT").await.starts_with("221"));
    eventually("session end", || h.handler.closed().len() > sessions_before).await;
}

#[test]
fn transcript_settings_default_to_off_and_summarize() {
    let config = ServerConfig::default();
    assert_eq!(config.transcript, TranscriptMode::Off);
    assert_eq!(config.transcript_data, DataLogging::Summarize);
}

#[tokio::test]
async fn transcript_off_logs_no_conversation() {
    let log = TranscriptLog::default();
    let _guard = log.install();
    let h = start(test_config()).await;
    send_one_message(&h, b"Subject: x\r\n\r\nhi\r\n").await;
    assert!(log.lines().is_empty(), "{:?}", log.lines());
}

#[tokio::test]
async fn transcript_all_logs_commands_replies_and_a_data_summary_in_order() {
    let log = TranscriptLog::default();
    let _guard = log.install();
    let h = start(transcript_config(
        TranscriptMode::All,
        DataLogging::Summarize,
    ))
    .await;
    send_one_message(&h, b"Subject: x\r\n\r\nhi\r\n").await;
    let lines = log.lines();
    assert_eq!(log.sessions().len(), 1, "{lines:?}");
    assert_eq!(lines[0], "> 220 mx.test ESMTP Portcullis");
    assert_eq!(lines[1], "< EHLO client.test");
    assert_eq!(lines[2], "> 250-mx.test");
    let data = lines.iter().position(|l| l == "< DATA").unwrap();
    assert_eq!(
        lines[data..],
        [
            "< DATA",
            "> 354 end data with <CR><LF>.<CR><LF>",
            "< <message data: 18 bytes, 3 lines>",
            "> 250 2.0.0 ok queued as MSG1",
            "< QUIT",
            "> 221 2.0.0 mx.test closing connection",
            "* session ended: quit",
        ]
    );
}

#[tokio::test]
async fn transcript_on_error_logs_only_the_session_that_was_refused_something() {
    let log = TranscriptLog::default();
    let _guard = log.install();
    let h = start(transcript_config(
        TranscriptMode::OnError,
        DataLogging::Summarize,
    ))
    .await;
    send_one_message(&h, b"Subject: fine\r\n\r\nfine\r\n").await;
    assert!(log.lines().is_empty(), "{:?}", log.lines());

    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.command("MAIL FROM:<a@client.test>").await;
    assert!(
        c.command("RCPT TO:<unknown@mx.test>")
            .await
            .starts_with("550")
    );
    c.command("QUIT").await;
    eventually("refused session transcript", || {
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("* session ended"))
    })
    .await;
    let lines = log.lines();
    assert_eq!(log.sessions().len(), 1, "{lines:?}");
    assert!(
        lines.contains(&"< RCPT TO:<unknown@mx.test>".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"> 550 5.1.1 no such user".to_string()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn transcript_on_error_logs_a_client_that_vanishes_mid_message() {
    let log = TranscriptLog::default();
    let _guard = log.install();
    let h = start(transcript_config(
        TranscriptMode::OnError,
        DataLogging::Summarize,
    ))
    .await;
    let mut c = Client::greeted(h.addr).await;
    c.open_data().await;
    c.send(b"Subject: half\r\n").await;
    drop(c);
    eventually("transcript", || {
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("* session ended"))
    })
    .await;
    let lines = log.lines();
    assert!(
        lines.contains(&"< <message data: 15 bytes, 1 lines>".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"* message data interrupted".to_string()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn transcript_echo_logs_the_unstuffed_message_lines() {
    let log = TranscriptLog::default();
    let _guard = log.install();
    let h = start(transcript_config(TranscriptMode::All, DataLogging::Echo)).await;
    send_one_message(&h, b"Subject: echo\r\n\r\n..dotted\r\n").await;
    let lines = log.lines();
    let start = lines.iter().position(|l| l == "< Subject: echo").unwrap();
    assert_eq!(
        lines[start..start + 5],
        [
            "< Subject: echo",
            "< ",
            "< .dotted",
            "< <message data: 26 bytes, 3 lines>",
            "> 250 2.0.0 ok queued as MSG1",
        ]
    );
}

#[tokio::test]
async fn transcript_ignore_leaves_out_message_content_even_with_bdat() {
    let log = TranscriptLog::default();
    let _guard = log.install();
    let h = start(transcript_config(TranscriptMode::All, DataLogging::Ignore)).await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.send(
        b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.test>\r\nBDAT 17 LAST\r\nSubject: secret\r\n",
    )
    .await;
    for _ in 0..3 {
        assert!(c.reply().await.starts_with("250"));
    }
    c.command("QUIT").await;
    eventually("transcript", || {
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("* session ended"))
    })
    .await;
    let lines = log.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("secret") || l.contains("message data")),
        "{lines:?}"
    );
    let bdat = lines.iter().position(|l| l == "< BDAT 17 LAST").unwrap();
    assert_eq!(lines[bdat + 1], "> 250 2.0.0 ok queued as MSG1");
}

#[tokio::test]
async fn transcript_summarizes_each_bdat_chunk() {
    let log = TranscriptLog::default();
    let _guard = log.install();
    let h = start(transcript_config(
        TranscriptMode::All,
        DataLogging::Summarize,
    ))
    .await;
    let mut c = Client::greeted(h.addr).await;
    c.ehlo().await;
    c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.test>\r\nBDAT 14\r\nSubject: x\r\n\r\nBDAT 4 LAST\r\nhi\r\n")
        .await;
    for _ in 0..4 {
        assert!(c.reply().await.starts_with("250"));
    }
    c.command("QUIT").await;
    eventually("transcript", || {
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("* session ended"))
    })
    .await;
    let lines = log.lines();
    let bdat = lines.iter().position(|l| l == "< BDAT 14").unwrap();
    assert_eq!(
        lines[bdat..bdat + 6],
        [
            "< BDAT 14",
            "< <message data: 14 bytes, 2 lines>",
            "> 250 2.0.0 14 octets received",
            "< BDAT 4 LAST",
            "< <message data: 4 bytes, 1 lines>",
            "> 250 2.0.0 ok queued as MSG1",
        ]
    );
}

#[tokio::test]
async fn after_quit_with_nothing_unread_the_session_ends_without_waiting_for_the_client() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    assert_eq!(
        c.command("QUIT").await,
        "221 2.0.0 mx.test closing connection"
    );
    assert!(c.is_closed().await);
    // The client keeps its side open. Waiting for its FIN would hold the session for the
    // linger time (1 s); nothing was unread, so the server closes and the session ends at once.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while !h.handler.closed().iter().any(|s| s.end == SessionEnd::Quit) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session waited for the client to close"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(c);
}

#[tokio::test]
async fn input_after_quit_does_not_turn_the_221_into_a_reset() {
    let h = start(test_config()).await;
    let mut c = Client::greeted(h.addr).await;
    // A client that keeps talking after QUIT: closing with its input unread would make the
    // kernel send a reset, which can destroy the 221 before the client reads it.
    c.send(b"QUIT\r\nNOOP\r\nNOOP\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.reply().await, "221 2.0.0 mx.test closing connection");
    assert!(c.is_closed().await);
}

//! A deliberately plain SMTP client on std's TcpStream: it sends exactly the bytes a test gives it,
//! which is what protocol-abuse tests (smuggling, source routes, oversize data) need.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// How long the client waits for any reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A server reply: the code and each line's text (after "NNN-" / "NNN ").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text of every line, code stripped.
    pub lines: Vec<String>,
}

impl Reply {
    /// The enhanced status code ("5.7.1") of the first line, if it has one.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let parts: Vec<&str> = first.split('.').collect();
        (parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then_some(first)
    }

    /// "NNN text" of all lines joined, for assertions on wording.
    pub fn text(&self) -> String {
        self.lines.join(" / ")
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// One SMTP connection to 127.0.0.1.
pub struct SmtpClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl SmtpClient {
    /// Connects and reads the greeting.
    pub fn connect(port: u16) -> io::Result<(SmtpClient, Reply)> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let mut client = SmtpClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = client.read_reply()?;
        Ok((client, greeting))
    }

    /// Connects, expects 220, says EHLO and expects 250; panics otherwise (set-up, not the behaviour under test).
    #[track_caller]
    pub fn greeted(port: u16) -> SmtpClient {
        let (mut client, greeting) = SmtpClient::connect(port).expect("connect to the gateway");
        assert_eq!(greeting.code, 220, "greeting: {greeting}");
        let ehlo = client.command("EHLO client.test").expect("EHLO");
        assert_eq!(ehlo.code, 250, "EHLO: {ehlo}");
        client
    }

    /// Sends one command line (CRLF appended) and reads its reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.send_raw(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Writes bytes exactly as given.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Reads one (possibly multi-line) reply; an error if the server closed the connection first.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = self.reader.read_until(b'\n', &mut raw)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                ));
            }
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("not an SMTP reply: {line:?}"),
                    )
                })?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// DATA, then `message` dot-stuffed and terminated with CRLF.CRLF; the reply to the end of data
    /// (or the refusal of DATA itself).
    pub fn data(&mut self, message: &[u8]) -> io::Result<Reply> {
        let go_ahead = self.command("DATA")?;
        if go_ahead.code != 354 {
            return Ok(go_ahead);
        }
        let mut wire = dot_stuff(message);
        if !wire.ends_with(b"\r\n") {
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        self.send_raw(&wire)?;
        self.read_reply()
    }

    /// A whole transaction: MAIL, RCPT for each recipient, DATA. Returns the first reply that is
    /// not positive, or the end-of-data reply.
    pub fn send_message(
        &mut self,
        from: &str,
        recipients: &[&str],
        message: &[u8],
    ) -> io::Result<Reply> {
        let mail = self.command(&format!("MAIL FROM:<{from}>"))?;
        if !mail.is_positive() {
            return Ok(mail);
        }
        for rcpt in recipients {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>"))?;
            if !reply.is_positive() {
                return Ok(reply);
            }
        }
        self.data(message)
    }

    /// True if the server has closed the connection (reads EOF or a reset within `within`).
    pub fn is_closed(&mut self, within: Duration) -> bool {
        let _ = self.writer.set_read_timeout(Some(within));
        let mut byte = [0u8; 1];
        let closed = match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self.writer.set_read_timeout(Some(REPLY_TIMEOUT));
        closed
    }

    /// QUIT, ignoring whatever happens (clean-up).
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
        let _ = self.writer.shutdown(Shutdown::Both);
    }
}

/// RFC 5321 4.5.2 transparency: a line starting with "." gets another ".".
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &byte in message {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
    }
    out
}

/// A small RFC 5322 message with CRLF line endings and a unique Message-ID.
pub fn simple_message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    let id = format!(
        "<{}.{}@e2e.test>",
        std::process::id(),
        rand::random::<u64>()
    );
    let mut text = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: {id}\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
    );
    for line in body.lines() {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.into_bytes()
}

/// A next hop that accepts TCP connections and never says a word (a tarpit), to prove that a
/// silent peer cannot wedge the gateway. Connections are held until the guard drops.
pub struct SilentServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> SilentServer {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind tarpit");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let (stop_flag, counter) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop_flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        held.push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        SilentServer {
            port,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many connections it has swallowed.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

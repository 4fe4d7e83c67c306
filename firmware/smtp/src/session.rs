//! One SMTP session: the RFC 5321 state machine from the banner to QUIT.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::body::{BodyDecoder, Framing, Scan};
use crate::command::{Command, Path, parse};
use crate::connection::{Connection, ReadError};
use crate::reply::Reply;
use crate::server::{Envelope, MailHandler, ServerConfig, SessionEnd, SessionInfo, SessionStats};
use crate::transcript::Transcript;

/// Longest command line in bytes including CRLF. RFC 5321 asks for 512; we allow more for long addresses
/// and parameters but keep a bound so a client cannot grow our buffer.
const MAX_COMMAND_LINE: usize = 2048;

/// Message bytes are collected and handed to the handler's Body in pieces of about this size.
const BODY_WRITE_CHUNK: usize = 64 * 1024;

/// The closing flush never waits longer than this, so a stalled client cannot hold a finished session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the session is in the SMTP dialogue (RFC 5321 §4.1.4 command order).
enum State<B> {
    /// The banner was sent (or TLS just started); the client must say EHLO or HELO.
    AwaitingHelo,
    /// Greeted, no mail transaction open.
    Ready,
    /// MAIL FROM accepted; recipients are being collected.
    MailTransaction(Envelope),
    /// At least one BDAT chunk of the message has been received.
    Chunking {
        envelope: Envelope,
        body: BodyReceiver<B>,
    },
    /// A BDAT chunk was refused; chunks the client had already pipelined get the same reply until LAST.
    ChunkingFailed(Reply),
}

/// Whether the command reader is inside an over-long line that is being thrown away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LineReader {
    Normal,
    DiscardingOverlong,
}

/// What the dispatcher tells the command loop.
enum Flow {
    Continue,
    Close(SessionEnd),
}

/// Counters that end up in [`SessionStats`].
#[derive(Default)]
struct Tally {
    messages_accepted: u32,
    messages_rejected: u32,
    recipients_rejected: u32,
    errors: u32,
    bytes_received: u64,
}

/// Runs a session to its end and reports it to the handler.
pub(crate) async fn run<H: MailHandler>(
    stream: TcpStream,
    info: SessionInfo,
    config: Arc<ServerConfig>,
    handler: Arc<H>,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    info!(session_id = info.id, client_ip = %info.peer.ip(), local = %info.local, "session started");
    let transcript = Transcript::new(config.transcript, config.transcript_data);
    let mut session = Session {
        info,
        config,
        handler,
        connection: Connection::new(stream),
        state: State::AwaitingHelo,
        line_reader: LineReader::Normal,
        tally: Tally::default(),
        transcript,
        shutdown,
        abort,
    };
    let end = session.converse().await;
    session.finish(end).await;
}

struct Session<H: MailHandler> {
    info: SessionInfo,
    config: Arc<ServerConfig>,
    handler: Arc<H>,
    connection: Connection,
    state: State<H::Body>,
    line_reader: LineReader,
    tally: Tally,
    transcript: Transcript,
    shutdown: CancellationToken,
    abort: CancellationToken,
}

impl<H: MailHandler> Session<H> {
    async fn converse(&mut self) -> SessionEnd {
        if let Err(reply) = self.handler.connect(&self.info).await {
            self.respond("CONNECT", reply);
            return SessionEnd::RefusedAtConnect;
        }
        if !self.config.banner_delay.is_zero() {
            match self
                .connection
                .read_more(self.config.banner_delay, &self.abort, Some(&self.shutdown))
                .await
            {
                Err(ReadError::Timeout) => {}
                Ok(_) => {
                    self.respond(
                        "PREGREET",
                        Reply::new(554, "5.5.0", "protocol error: talking before the greeting"),
                    );
                    return SessionEnd::ProtocolViolation(
                        "pregreet: client talked before the banner".into(),
                    );
                }
                Err(e) => return self.read_failed(e),
            }
        }
        let banner = format!("{} ESMTP Portcullis", self.config.hostname);
        self.send(&Reply::without_enhanced(220, vec![banner]));
        loop {
            let line = match self.next_line().await {
                Ok(line) => line,
                Err(end) => return end,
            };
            if let Flow::Close(end) = self.dispatch(line).await {
                return end;
            }
        }
    }

    /// Aborts an unfinished BDAT body, sends the last replies, closes and reports the session.
    async fn finish(mut self, end: SessionEnd) {
        if let State::Chunking { body, .. } = std::mem::replace(&mut self.state, State::Ready) {
            body.abort(&*self.handler, &self.info).await;
        }
        self.connection
            .close(self.config.command_timeout.min(CLOSE_TIMEOUT))
            .await;
        let stats = SessionStats {
            messages_accepted: self.tally.messages_accepted,
            messages_rejected: self.tally.messages_rejected,
            recipients_rejected: self.tally.recipients_rejected,
            errors: self.tally.errors,
            bytes_received: self.tally.bytes_received,
            end,
        };
        self.transcript.emit(&self.info, &stats.end);
        info!(
            session_id = self.info.id,
            client_ip = %self.info.peer.ip(),
            helo = self.info.helo.as_deref().unwrap_or(""),
            tls = self.info.tls.is_some(),
            messages_accepted = stats.messages_accepted,
            messages_rejected = stats.messages_rejected,
            recipients_rejected = stats.recipients_rejected,
            errors = stats.errors,
            bytes_received = stats.bytes_received,
            end = %stats.end,
            "session ended"
        );
        self.handler.session_closed(&self.info, &stats).await;
    }

    /// Queues a reply and logs it if it refuses the command.
    fn respond(&mut self, command: &str, reply: Reply) {
        if !reply.is_positive() {
            info!(session_id = self.info.id, client_ip = %self.info.peer.ip(), command, reply = %reply, "command rejected");
        }
        self.send(&reply);
    }

    /// Queues a reply for the client and records it in the transcript; every reply goes through here.
    fn send(&mut self, reply: &Reply) {
        self.transcript.reply(reply);
        self.connection.queue(reply);
    }

    /// A reply to a bad command: counts against `max_errors`, which ends the session when reached.
    fn protocol_error(&mut self, command: &str, reply: Reply) -> Flow {
        self.respond(command, reply);
        self.tally.errors += 1;
        if self.config.max_errors > 0 && self.tally.errors >= self.config.max_errors {
            let reply = Reply::new(
                421,
                "4.7.0",
                format!(
                    "{} too many errors, closing connection",
                    self.config.hostname
                ),
            );
            self.respond(command, reply);
            return Flow::Close(SessionEnd::TooManyErrors);
        }
        Flow::Continue
    }

    /// Turns a failed read into the session's end, telling the client why when it is still listening.
    fn read_failed(&mut self, error: ReadError) -> SessionEnd {
        match error {
            ReadError::Timeout => {
                let text = format!(
                    "{} timeout exceeded, closing connection",
                    self.config.hostname
                );
                self.respond("TIMEOUT", Reply::new(421, "4.4.2", text));
                SessionEnd::Timeout
            }
            ReadError::Closed => SessionEnd::ClientClosed,
            ReadError::Io(e) => SessionEnd::IoError(e.to_string()),
            ReadError::Shutdown | ReadError::Aborted => {
                self.respond("SHUTDOWN", self.shutdown_reply());
                SessionEnd::Shutdown
            }
        }
    }

    fn shutdown_reply(&self) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!(
                "{} service shutting down, try again later",
                self.config.hostname
            ),
        )
    }

    /// The next command line (with its line ending), reading more input only when none is buffered.
    async fn next_line(&mut self) -> Result<Bytes, SessionEnd> {
        loop {
            let input = &self.connection.input;
            if let Some(end) = input.iter().position(|&b| b == b'\n') {
                if self.line_reader == LineReader::DiscardingOverlong {
                    self.connection.input.advance(end + 1);
                    self.line_reader = LineReader::Normal;
                    continue;
                }
                if end + 1 > MAX_COMMAND_LINE {
                    self.connection.input.advance(end + 1);
                    if let Flow::Close(end) = self.line_too_long() {
                        return Err(end);
                    }
                    continue;
                }
                return Ok(self.connection.input.split_to(end + 1).freeze());
            }
            if self.line_reader == LineReader::DiscardingOverlong {
                self.connection.input.clear();
            } else if input.len() >= MAX_COMMAND_LINE {
                self.connection.input.clear();
                self.line_reader = LineReader::DiscardingOverlong;
                if let Flow::Close(end) = self.line_too_long() {
                    return Err(end);
                }
            }
            // A message sent in BDAT chunks is in progress: like DATA, it may finish despite a shutdown.
            let idle = !matches!(self.state, State::Chunking { .. });
            if idle && self.shutdown.is_cancelled() {
                self.respond("SHUTDOWN", self.shutdown_reply());
                return Err(SessionEnd::Shutdown);
            }
            let watch_shutdown = idle.then_some(&self.shutdown);
            if let Err(e) = self
                .connection
                .read_more(self.config.command_timeout, &self.abort, watch_shutdown)
                .await
            {
                return Err(self.read_failed(e));
            }
        }
    }

    fn line_too_long(&mut self) -> Flow {
        self.protocol_error("?", Reply::new(500, "5.5.2", "line too long"))
    }

    async fn dispatch(&mut self, line: Bytes) -> Flow {
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.transcript.command(line);
        let verb = verb_of(line);
        let Ok(text) = std::str::from_utf8(line) else {
            return self.protocol_error(
                &verb,
                Reply::new(500, "5.5.2", "invalid characters in command"),
            );
        };
        let continues_chunking = matches!(self.state, State::Chunking { .. }) && verb == "BDAT";
        if self.shutdown.is_cancelled() && !continues_chunking {
            self.respond(&verb, self.shutdown_reply());
            return Flow::Close(SessionEnd::Shutdown);
        }
        let command = match parse(text) {
            Ok(command) => command,
            Err(e) if e.closes_session() => {
                self.respond(&verb, e.reply());
                return Flow::Close(SessionEnd::ProtocolViolation(e.to_string()));
            }
            Err(e) => return self.protocol_error(&verb, e.reply()),
        };
        match command {
            Command::Ehlo(name) => self.hello(name, true).await,
            Command::Helo(name) => self.hello(name, false).await,
            Command::Mail { from, params } => self.mail(from, params).await,
            Command::Rcpt { to } => self.rcpt(to).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => {
                self.reset_transaction().await;
                self.respond(&verb, Reply::new(250, "2.0.0", "reset ok"));
                Flow::Continue
            }
            Command::Noop => {
                self.respond(&verb, Reply::new(250, "2.0.0", "ok"));
                Flow::Continue
            }
            Command::Quit => {
                self.respond(
                    &verb,
                    Reply::new(
                        221,
                        "2.0.0",
                        format!("{} closing connection", self.config.hostname),
                    ),
                );
                Flow::Close(SessionEnd::Quit)
            }
            Command::Help(_) => {
                let reply = Reply::new(
                    214,
                    "2.0.0",
                    "commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS",
                )
                .with_line("see RFC 5321");
                self.respond(&verb, reply);
                Flow::Continue
            }
            Command::Vrfy(_) => {
                // Answering truthfully would let anyone harvest valid addresses (RFC 5321 §7.3).
                self.respond(
                    &verb,
                    Reply::new(
                        252,
                        "2.1.5",
                        "cannot verify users; send mail and RCPT will tell",
                    ),
                );
                Flow::Continue
            }
            Command::Expn(_) => {
                self.respond(&verb, Reply::new(502, "5.5.1", "EXPN not supported"));
                Flow::Continue
            }
            Command::Auth => {
                self.protocol_error(&verb, Reply::new(502, "5.5.1", "AUTH not supported"))
            }
            Command::StartTls => self.start_tls().await,
        }
    }

    /// Ends the open transaction, if any: RSET, EHLO and STARTTLS all start from a clean state (RFC 5321 §4.1.1.5).
    async fn reset_transaction(&mut self) {
        let next = match self.state {
            State::AwaitingHelo => State::AwaitingHelo,
            _ => State::Ready,
        };
        if let State::Chunking { body, .. } = std::mem::replace(&mut self.state, next) {
            body.abort(&*self.handler, &self.info).await;
        }
    }

    async fn hello(&mut self, name: String, esmtp: bool) -> Flow {
        self.reset_transaction().await;
        self.state = State::Ready;
        self.info.helo = Some(name);
        self.info.esmtp = esmtp;
        let mut lines = vec![self.config.hostname.clone()];
        if esmtp {
            lines.extend(
                [
                    "PIPELINING",
                    &format!("SIZE {}", self.config.max_message_size),
                    "8BITMIME",
                    "ENHANCEDSTATUSCODES",
                    "SMTPUTF8",
                ]
                .map(String::from),
            );
            if self.config.tls.is_some() && self.info.tls.is_none() {
                lines.push("STARTTLS".into());
            }
            if self.config.chunking {
                lines.push("CHUNKING".into());
            }
        }
        self.send(&Reply::without_enhanced(250, lines));
        Flow::Continue
    }

    async fn mail(&mut self, from: Path, params: crate::command::MailParams) -> Flow {
        match self.state {
            State::AwaitingHelo => return self.protocol_error("MAIL", need_helo()),
            State::MailTransaction(_) | State::Chunking { .. } => {
                return self
                    .protocol_error("MAIL", Reply::new(503, "5.5.1", "nested MAIL command"));
            }
            State::Ready | State::ChunkingFailed(_) => {}
        }
        let has_params = params.size.is_some() || params.body.is_some() || params.smtputf8;
        if has_params && !self.info.esmtp {
            return self.protocol_error(
                "MAIL",
                Reply::new(555, "5.5.4", "MAIL parameters require EHLO"),
            );
        }
        if params
            .size
            .is_some_and(|size| size > self.config.max_message_size)
        {
            self.respond("MAIL", too_big());
            return Flow::Continue;
        }
        if !from.is_ascii() && !params.smtputf8 {
            self.respond("MAIL", needs_smtputf8());
            return Flow::Continue;
        }
        match self.handler.mail_from(&self.info, &from, &params).await {
            Ok(()) => {
                self.respond("MAIL", Reply::new(250, "2.1.0", "sender ok"));
                self.state = State::MailTransaction(Envelope {
                    mail_from: from,
                    rcpt_to: Vec::new(),
                    params,
                });
            }
            Err(reply) => self.respond("MAIL", reply),
        }
        Flow::Continue
    }

    async fn rcpt(&mut self, to: Path) -> Flow {
        let envelope = match &mut self.state {
            State::MailTransaction(envelope) => envelope,
            State::AwaitingHelo => return self.protocol_error("RCPT", need_helo()),
            State::Chunking { .. } => {
                return self.protocol_error(
                    "RCPT",
                    Reply::new(503, "5.5.1", "RCPT not allowed during BDAT transfer"),
                );
            }
            State::Ready | State::ChunkingFailed(_) => {
                return self.protocol_error("RCPT", need_mail());
            }
        };
        let verdict = if envelope.rcpt_to.len() >= self.config.max_recipients {
            Err(Reply::new(452, "4.5.3", "too many recipients"))
        } else if !to.is_ascii() && !envelope.params.smtputf8 {
            Err(needs_smtputf8())
        } else {
            self.handler.rcpt_to(&self.info, envelope, &to).await
        };
        match verdict {
            Ok(()) => {
                envelope.rcpt_to.push(to);
                self.respond("RCPT", Reply::new(250, "2.1.5", "recipient ok"));
            }
            Err(reply) => {
                self.tally.recipients_rejected += 1;
                self.respond("RCPT", reply);
            }
        }
        Flow::Continue
    }

    async fn data(&mut self) -> Flow {
        match &self.state {
            State::AwaitingHelo => return self.protocol_error("DATA", need_helo()),
            State::Ready | State::ChunkingFailed(_) => {
                return self.protocol_error("DATA", need_mail());
            }
            State::Chunking { .. } => {
                let reply = Reply::new(
                    503,
                    "5.5.1",
                    "DATA cannot be mixed with BDAT in one transaction",
                );
                return self.protocol_error("DATA", reply);
            }
            State::MailTransaction(envelope) if envelope.rcpt_to.is_empty() => {
                self.respond("DATA", no_recipients());
                return Flow::Continue;
            }
            State::MailTransaction(_) => {}
        }
        let State::MailTransaction(envelope) = std::mem::replace(&mut self.state, State::Ready)
        else {
            unreachable!("checked above")
        };
        let body = match self.handler.begin_body(&self.info, &envelope).await {
            Ok(body) => body,
            Err(reply) => {
                self.tally.messages_rejected += 1;
                self.respond("DATA", reply);
                return Flow::Continue;
            }
        };
        self.transcript.start_message();
        let mut receiver = BodyReceiver::new(body, Framing::DotTerminated, &self.config);
        self.send(&Reply::without_enhanced(
            354,
            vec!["end data with <CR><LF>.<CR><LF>".into()],
        ));
        if let Err(e) = self.connection.flush(self.config.command_timeout).await {
            receiver.abort(&*self.handler, &self.info).await;
            return Flow::Close(self.read_failed(e));
        }
        match self.pump(&mut receiver, None).await {
            Ok(Scan::EndOfData) => {
                self.complete_message(envelope, receiver).await;
                Flow::Continue
            }
            Ok(_) => self.bare_line_break(receiver).await,
            Err(e) => {
                receiver.abort(&*self.handler, &self.info).await;
                Flow::Close(self.read_failed(e))
            }
        }
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        if !self.config.chunking {
            // The chunk is read and dropped even so: interpreting its bytes as commands would be an injection.
            return self
                .discard_chunk(size, Reply::new(502, "5.5.1", "BDAT not supported"), true)
                .await;
        }
        match std::mem::replace(&mut self.state, State::Ready) {
            State::Chunking { envelope, body } => {
                self.receive_chunk(envelope, body, size, last).await
            }
            State::MailTransaction(envelope) if !envelope.rcpt_to.is_empty() => {
                match self.handler.begin_body(&self.info, &envelope).await {
                    Ok(body) => {
                        self.transcript.start_message();
                        let receiver = BodyReceiver::new(body, Framing::Chunked, &self.config);
                        self.receive_chunk(envelope, receiver, size, last).await
                    }
                    Err(reply) => {
                        self.tally.messages_rejected += 1;
                        if !last {
                            self.state = State::ChunkingFailed(reply.clone());
                        }
                        self.discard_chunk(size, reply, false).await
                    }
                }
            }
            State::MailTransaction(envelope) => {
                self.state = State::MailTransaction(envelope);
                self.discard_chunk(size, no_recipients(), false).await
            }
            State::ChunkingFailed(reply) => {
                if !last {
                    self.state = State::ChunkingFailed(reply.clone());
                }
                self.discard_chunk(size, reply, false).await
            }
            State::AwaitingHelo => {
                self.state = State::AwaitingHelo;
                self.discard_chunk(size, need_helo(), true).await
            }
            State::Ready => self.discard_chunk(size, need_mail(), true).await,
        }
    }

    /// Receives one BDAT chunk of an accepted transaction.
    async fn receive_chunk(
        &mut self,
        envelope: Envelope,
        mut receiver: BodyReceiver<H::Body>,
        size: u64,
        last: bool,
    ) -> Flow {
        match self.pump(&mut receiver, Some(size)).await {
            Ok(Scan::NeedMore) => {}
            Ok(_) => return self.bare_line_break(receiver).await,
            Err(e) => {
                receiver.abort(&*self.handler, &self.info).await;
                return Flow::Close(self.read_failed(e));
            }
        }
        if last {
            if receiver.finish_chunked().is_err() {
                return self.bare_line_break(receiver).await;
            }
            receiver.settle(&*self.handler, &self.info).await;
            self.complete_message(envelope, receiver).await;
        } else if let Some(reply) = receiver.refusal() {
            // Tell the client now so it stops sending chunks (RFC 3030 §2); the body is already discarded.
            self.tally.messages_rejected += 1;
            self.respond("BDAT", reply.clone());
            self.state = State::ChunkingFailed(reply);
        } else {
            self.respond(
                "BDAT",
                Reply::new(250, "2.0.0", format!("{size} octets received")),
            );
            self.state = State::Chunking {
                envelope,
                body: receiver,
            };
        }
        Flow::Continue
    }

    /// Reads and drops a BDAT chunk that cannot be accepted, then answers it.
    async fn discard_chunk(&mut self, size: u64, reply: Reply, counts_as_error: bool) -> Flow {
        self.transcript.discarded_content(size);
        let mut remaining = size;
        loop {
            let take = remaining.min(self.connection.input.len() as u64) as usize;
            self.connection.input.advance(take);
            remaining -= take as u64;
            self.tally.bytes_received += take as u64;
            if remaining == 0 {
                break;
            }
            if let Err(e) = self
                .connection
                .read_more(self.config.data_timeout, &self.abort, None)
                .await
            {
                return Flow::Close(self.read_failed(e));
            }
        }
        if counts_as_error {
            self.protocol_error("BDAT", reply)
        } else {
            self.respond("BDAT", reply);
            Flow::Continue
        }
    }

    /// Feeds received bytes through the decoder into the body until the end of data (DATA) or the end of the
    /// chunk (`chunk` = Some(size), BDAT; answers `Scan::NeedMore` when the chunk is complete).
    async fn pump(
        &mut self,
        receiver: &mut BodyReceiver<H::Body>,
        chunk: Option<u64>,
    ) -> Result<Scan, ReadError> {
        let mut remaining = chunk;
        loop {
            let buffered = self.connection.input.len();
            let take = match remaining {
                Some(left) => left.min(buffered as u64) as usize,
                None => buffered,
            };
            if take > 0 {
                let decoded_from = receiver.pending.len();
                let (used, scan) = receiver
                    .decoder
                    .decode(&self.connection.input[..take], &mut receiver.pending);
                self.transcript.content(&receiver.pending[decoded_from..]);
                self.connection.input.advance(used);
                self.tally.bytes_received += used as u64;
                if let Some(left) = remaining.as_mut() {
                    *left -= used as u64;
                }
                receiver.settle(&*self.handler, &self.info).await;
                if scan != Scan::NeedMore {
                    return Ok(scan);
                }
            }
            if remaining == Some(0) {
                return Ok(Scan::NeedMore);
            }
            self.connection
                .read_more(self.config.data_timeout, &self.abort, None)
                .await?;
        }
    }

    /// Smuggling defence: the message is dropped and the connection closed, so nothing after the ambiguous
    /// line break can be taken as a command or a second message.
    async fn bare_line_break(&mut self, receiver: BodyReceiver<H::Body>) -> Flow {
        receiver.abort(&*self.handler, &self.info).await;
        self.tally.messages_rejected += 1;
        warn!(session_id = self.info.id, client_ip = %self.info.peer.ip(), "bare LF or CR in message data; closing");
        self.respond(
            "DATA",
            Reply::new(521, "5.5.2", "bare LF or CR in message data is not allowed"),
        );
        Flow::Close(SessionEnd::ProtocolViolation(
            "bare LF or CR in message data".into(),
        ))
    }

    /// The message content is complete: hand it to the handler, or tell the client why it was refused.
    async fn complete_message(&mut self, envelope: Envelope, receiver: BodyReceiver<H::Body>) {
        let reply = match receiver.finish(&*self.handler, &self.info).await {
            Ok(body) => self.handler.end_body(&self.info, &envelope, body).await,
            Err(reply) => reply,
        };
        if reply.is_positive() {
            self.tally.messages_accepted += 1;
            info!(
                session_id = self.info.id,
                client_ip = %self.info.peer.ip(),
                from = %envelope.mail_from,
                recipients = envelope.rcpt_to.len(),
                reply = %reply,
                "message accepted"
            );
        } else {
            self.tally.messages_rejected += 1;
        }
        self.respond("DATA", reply);
    }

    async fn start_tls(&mut self) -> Flow {
        let Some(tls) = self.config.tls.clone() else {
            return self.protocol_error(
                "STARTTLS",
                Reply::new(502, "5.5.1", "STARTTLS not available"),
            );
        };
        if self.info.tls.is_some() {
            return self.protocol_error("STARTTLS", Reply::new(503, "5.5.1", "TLS already active"));
        }
        self.reset_transaction().await;
        self.send(&Reply::new(220, "2.0.0", "ready to start TLS"));
        if let Err(e) = self.connection.flush(self.config.command_timeout).await {
            return Flow::Close(self.read_failed(e));
        }
        match self
            .connection
            .start_tls(tls, self.config.command_timeout, &self.abort)
            .await
        {
            Ok((discarded, tls)) => {
                if discarded > 0 {
                    warn!(
                        session_id = self.info.id,
                        client_ip = %self.info.peer.ip(),
                        bytes = discarded,
                        "discarded data pipelined after STARTTLS"
                    );
                }
                info!(
                    session_id = self.info.id,
                    client_ip = %self.info.peer.ip(),
                    protocol = %tls.protocol,
                    cipher = %tls.cipher,
                    "TLS established"
                );
                // RFC 3207 §4.2: everything learned before TLS is forgotten; the client must EHLO again.
                self.info.tls = Some(tls);
                self.info.helo = None;
                self.info.esmtp = false;
                self.state = State::AwaitingHelo;
                Flow::Continue
            }
            Err(ReadError::Io(e)) => {
                Flow::Close(SessionEnd::IoError(format!("TLS handshake failed: {e}")))
            }
            Err(ReadError::Timeout) => Flow::Close(SessionEnd::Timeout),
            Err(e) => Flow::Close(self.read_failed(e)),
        }
    }
}

/// The first word of a command line, for logs (bounded and printable, whatever the client sent).
fn verb_of(line: &[u8]) -> String {
    let word = line.split(|&b| b == b' ').next().unwrap_or(b"");
    let verb: String = word
        .iter()
        .take(12)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    verb.to_ascii_uppercase()
}

fn need_helo() -> Reply {
    Reply::new(503, "5.5.1", "send EHLO or HELO first")
}

fn need_mail() -> Reply {
    Reply::new(503, "5.5.1", "need MAIL command first")
}

fn no_recipients() -> Reply {
    Reply::new(554, "5.5.1", "no valid recipients")
}

fn too_big() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "message size exceeds fixed maximum message size",
    )
}

fn needs_smtputf8() -> Reply {
    Reply::new(
        553,
        "5.6.7",
        "non-ASCII address requires the SMTPUTF8 parameter",
    )
}

/// Where the message content goes: the handler's Body while it is acceptable, nowhere once it has been refused.
enum BodySink<B> {
    Open(B),
    Refused(Reply),
}

/// Message content being received: the decoder, a write buffer and the handler's Body.
struct BodyReceiver<B> {
    decoder: BodyDecoder,
    /// Decoded bytes not yet written to the Body; written in large pieces, never per byte.
    pending: Vec<u8>,
    written: u64,
    max_size: u64,
    max_line_length: usize,
    sink: BodySink<B>,
}

impl<B: tokio::io::AsyncWrite + Unpin + Send + 'static> BodyReceiver<B> {
    fn new(body: B, framing: Framing, config: &ServerConfig) -> BodyReceiver<B> {
        BodyReceiver {
            decoder: BodyDecoder::new(framing, config.max_line_length),
            // Grows with the message up to BODY_WRITE_CHUNK (most mail is far smaller).
            pending: Vec::new(),
            written: 0,
            max_size: config.max_message_size,
            max_line_length: config.max_line_length,
            sink: BodySink::Open(body),
        }
    }

    fn refusal(&self) -> Option<Reply> {
        match &self.sink {
            BodySink::Open(_) => None,
            BodySink::Refused(reply) => Some(reply.clone()),
        }
    }

    fn finish_chunked(&mut self) -> Result<(), Scan> {
        self.decoder.finish_chunked(&mut self.pending)
    }

    /// Applies the limits to newly decoded bytes and writes them out when enough have gathered. After a refusal
    /// the content is still read (the client is sending it anyway) but goes nowhere.
    async fn settle<H: MailHandler<Body = B>>(&mut self, handler: &H, session: &SessionInfo) {
        if matches!(self.sink, BodySink::Refused(_)) {
            self.pending.clear();
            return;
        }
        let refusal = if self.decoder.overlong() {
            Some(Reply::new(
                554,
                "5.6.0",
                format!(
                    "message has lines longer than {} bytes",
                    self.max_line_length
                ),
            ))
        } else if self.written + self.pending.len() as u64 > self.max_size {
            Some(too_big())
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.refuse(reply, handler, session).await;
        } else if self.pending.len() >= BODY_WRITE_CHUNK {
            self.write_pending(handler, session).await;
        }
    }

    async fn write_pending<H: MailHandler<Body = B>>(
        &mut self,
        handler: &H,
        session: &SessionInfo,
    ) {
        let BodySink::Open(body) = &mut self.sink else {
            return;
        };
        match body.write_all(&self.pending).await {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                self.pending.clear();
            }
            Err(e) => {
                warn!(session_id = session.id, client_ip = %session.peer.ip(), error = %e, "writing the message failed");
                self.refuse(
                    Reply::new(
                        451,
                        "4.3.0",
                        "local error writing the message, try again later",
                    ),
                    handler,
                    session,
                )
                .await;
            }
        }
    }

    async fn refuse<H: MailHandler<Body = B>>(
        &mut self,
        reply: Reply,
        handler: &H,
        session: &SessionInfo,
    ) {
        self.pending.clear();
        if let BodySink::Open(body) = std::mem::replace(&mut self.sink, BodySink::Refused(reply)) {
            handler.abort_body(session, body).await;
        }
    }

    /// Writes the rest and returns the Body for `end_body`, or the reply explaining why the message was refused.
    async fn finish<H: MailHandler<Body = B>>(
        mut self,
        handler: &H,
        session: &SessionInfo,
    ) -> Result<B, Reply> {
        if !self.pending.is_empty() {
            self.write_pending(handler, session).await;
        }
        match self.sink {
            BodySink::Refused(reply) => Err(reply),
            BodySink::Open(mut body) => match body.flush().await {
                Ok(()) => Ok(body),
                Err(e) => {
                    warn!(session_id = session.id, client_ip = %session.peer.ip(), error = %e, "writing the message failed");
                    handler.abort_body(session, body).await;
                    Err(Reply::new(
                        451,
                        "4.3.0",
                        "local error writing the message, try again later",
                    ))
                }
            },
        }
    }

    async fn abort<H: MailHandler<Body = B>>(self, handler: &H, session: &SessionInfo) {
        if let BodySink::Open(body) = self.sink {
            handler.abort_body(session, body).await;
        }
    }
}

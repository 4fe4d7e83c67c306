//! SMTP conversation transcripts: what the client said and what we answered, logged when the session ends.
//!
//! A transcript is kept only when [`TranscriptMode`] asks for it, and always within [`TRANSCRIPT_LIMIT`] bytes,
//! so a client cannot grow our memory by talking. Message content is recorded as [`DataLogging`] says; echoing
//! it puts personal data into the logs, which is why it is never the default.

use std::fmt::{self, Write as _};

use serde::Deserialize;
use tracing::info;

use crate::reply::Reply;
use crate::server::{SessionEnd, SessionInfo};

/// The tracing target of transcript events, so they can be filtered and routed apart from other SMTP logs.
pub const TRANSCRIPT_TARGET: &str = "smtp_transcript";

/// Most bytes of transcript text kept per session; further lines are counted and reported, not kept.
pub const TRANSCRIPT_LIMIT: usize = 256 * 1024;

/// Most bytes of message content echoed per message with [`DataLogging::Echo`]; the rest is only counted.
pub const ECHO_LIMIT: usize = 64 * 1024;

/// Which sessions have their SMTP conversation logged (`[smtp] transcript`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TranscriptMode {
    /// No transcripts (`off`, the default).
    #[default]
    Off,
    /// Only sessions that got a 4xx/5xx reply or ended other than by QUIT or a clean close (`on-error`).
    OnError,
    /// Every session (`all`).
    All,
}

/// What a transcript shows of message content sent with DATA or BDAT (`[smtp] transcript_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataLogging {
    /// Nothing; only the commands and replies around it (`ignore`).
    Ignore,
    /// One line with its size: `<message data: N bytes, M lines>` (`summarize`, the default).
    #[default]
    Summarize,
    /// The content lines themselves, up to [`ECHO_LIMIT`] bytes per message (`echo`). Puts message content,
    /// which is personal data, into the local logs and any remote syslog server.
    Echo,
}

/// Who a transcript line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The client: commands and message content (`<`).
    Client,
    /// Our replies (`>`).
    Server,
    /// Remarks of the transcript itself: truncation and how the session ended (`*`).
    Note,
}

impl Direction {
    fn symbol(self) -> &'static str {
        match self {
            Direction::Client => "<",
            Direction::Server => ">",
            Direction::Note => "*",
        }
    }
}

/// Message content seen since the last reply: one DATA body or one BDAT chunk.
#[derive(Default)]
struct ContentBlock {
    bytes: u64,
    lines: u64,
    echo: Vec<u8>,
    echo_cut: bool,
}

/// The recorded conversation of one session.
pub(crate) struct Transcript {
    mode: TranscriptMode,
    data: DataLogging,
    lines: Vec<(Direction, String)>,
    size: usize,
    omitted: usize,
    refusals: usize,
    block: Option<ContentBlock>,
    /// Bytes still allowed to be echoed for the current message (BDAT spreads one message over many blocks).
    echo_budget: usize,
}

impl Transcript {
    pub(crate) fn new(mode: TranscriptMode, data: DataLogging) -> Transcript {
        Transcript {
            mode,
            data,
            lines: Vec::new(),
            size: 0,
            omitted: 0,
            refusals: 0,
            block: None,
            echo_budget: ECHO_LIMIT,
        }
    }

    fn active(&self) -> bool {
        self.mode != TranscriptMode::Off
    }

    /// A command line as received, without its CRLF. AUTH arguments are replaced, in case a client sends
    /// credentials although we never offer AUTH.
    pub(crate) fn command(&mut self, line: &[u8]) {
        if !self.active() {
            return;
        }
        let mut words = line.splitn(3, |&b| b == b' ');
        let verb = words.next().unwrap_or_default();
        if verb.eq_ignore_ascii_case(b"AUTH") {
            let mut text = printable(verb);
            if let Some(mechanism) = words.next() {
                text.push(' ');
                text.push_str(&printable(mechanism));
            }
            if words.next().is_some() {
                text.push_str(" <credentials not logged>");
            }
            self.push(Direction::Client, text);
        } else {
            self.push(Direction::Client, printable(line));
        }
    }

    /// A reply as sent, one transcript line per reply line; ends the content block it answers.
    pub(crate) fn reply(&mut self, reply: &Reply) {
        if !self.active() {
            return;
        }
        self.end_block();
        if !reply.is_positive() {
            self.refusals += 1;
        }
        for line in reply.to_wire().split_terminator("\r\n") {
            self.push(Direction::Server, line.to_string());
        }
    }

    /// A new message begins (DATA, or the first BDAT chunk): the echo allowance starts afresh.
    pub(crate) fn start_message(&mut self) {
        self.echo_budget = ECHO_LIMIT;
    }

    /// Message content as decoded (dot-unstuffed, CRLF line endings).
    pub(crate) fn content(&mut self, decoded: &[u8]) {
        if !self.active() {
            return;
        }
        let echo = self.data == DataLogging::Echo;
        let budget = &mut self.echo_budget;
        let block = self.block.get_or_insert_with(ContentBlock::default);
        block.bytes += decoded.len() as u64;
        block.lines += decoded.iter().filter(|&&b| b == b'\n').count() as u64;
        if echo {
            let take = decoded.len().min(*budget);
            block.echo.extend_from_slice(&decoded[..take]);
            *budget -= take;
            block.echo_cut |= take < decoded.len();
        }
    }

    /// Content that was read but thrown away unseen (a refused BDAT chunk).
    pub(crate) fn discarded_content(&mut self, bytes: u64) {
        if self.active() {
            self.push(
                Direction::Client,
                format!("<message data discarded: {bytes} bytes>"),
            );
        }
    }

    /// Writes the pending content block into the transcript as the data setting says.
    fn end_block(&mut self) {
        let Some(block) = self.block.take() else {
            return;
        };
        let summary = format!(
            "<message data: {} bytes, {} lines>",
            block.bytes, block.lines
        );
        match self.data {
            DataLogging::Ignore => {}
            DataLogging::Summarize => self.push(Direction::Client, summary),
            DataLogging::Echo => {
                let text = block.echo.strip_suffix(b"\r\n").unwrap_or(&block.echo);
                if !block.echo.is_empty() {
                    for line in text.split(|&b| b == b'\n') {
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        self.push(Direction::Client, printable(line));
                    }
                }
                if block.echo_cut {
                    self.push(
                        Direction::Note,
                        format!("message data echo truncated at {ECHO_LIMIT} bytes per message"),
                    );
                }
                self.push(Direction::Client, summary);
            }
        }
    }

    fn push(&mut self, direction: Direction, text: String) {
        if self.size + text.len() > TRANSCRIPT_LIMIT {
            self.omitted += 1;
            return;
        }
        self.size += text.len();
        self.lines.push((direction, text));
    }

    /// The lines to log when the session ended with `end`, or None when the mode says this session is not logged.
    pub(crate) fn conclude(mut self, end: &SessionEnd) -> Option<Vec<(Direction, String)>> {
        if !self.active() {
            return None;
        }
        // Content without a reply means the client vanished or timed out in the middle of a message.
        let interrupted = self.block.is_some();
        self.end_block();
        let clean_end = matches!(end, SessionEnd::Quit | SessionEnd::ClientClosed);
        let troubled = self.refusals > 0 || interrupted || !clean_end;
        if self.mode == TranscriptMode::OnError && !troubled {
            return None;
        }
        if interrupted {
            self.lines
                .push((Direction::Note, "message data interrupted".into()));
        }
        if self.omitted > 0 {
            let note = format!(
                "transcript truncated at {TRANSCRIPT_LIMIT} bytes: {} more lines not recorded",
                self.omitted
            );
            self.lines.push((Direction::Note, note));
        }
        self.lines
            .push((Direction::Note, format!("session ended: {end}")));
        Some(self.lines)
    }

    /// Logs the transcript (one event per line, target [`TRANSCRIPT_TARGET`]) if the mode asks for it.
    pub(crate) fn emit(self, session: &SessionInfo, end: &SessionEnd) {
        let Some(lines) = self.conclude(end) else {
            return;
        };
        for (direction, text) in lines {
            info!(
                target: TRANSCRIPT_TARGET,
                session_id = session.id,
                client_ip = %session.peer.ip(),
                direction = direction.symbol(),
                "{text}"
            );
        }
    }
}

impl fmt::Display for TranscriptMode {
    /// The configuration spelling: `off`, `on-error` or `all`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TranscriptMode::Off => "off",
            TranscriptMode::OnError => "on-error",
            TranscriptMode::All => "all",
        })
    }
}

impl fmt::Display for DataLogging {
    /// The configuration spelling: `ignore`, `summarize` or `echo`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataLogging::Ignore => "ignore",
            DataLogging::Summarize => "summarize",
            DataLogging::Echo => "echo",
        })
    }
}

/// Client bytes as one printable log line: invalid UTF-8 replaced, control characters escaped, so a client
/// cannot forge log lines or send terminal escapes to whoever reads them.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[(Direction, String)]) -> Vec<String> {
        lines
            .iter()
            .map(|(d, t)| format!("{} {t}", d.symbol()))
            .collect()
    }

    /// A session that sends one small message and quits.
    fn converse(transcript: &mut Transcript, content: &[u8]) {
        transcript.reply(&Reply::without_enhanced(220, vec!["mx ESMTP".into()]));
        transcript.command(b"DATA");
        transcript.reply(&Reply::without_enhanced(354, vec!["go ahead".into()]));
        transcript.start_message();
        transcript.content(content);
        transcript.reply(&Reply::new(250, "2.0.0", "queued"));
        transcript.command(b"QUIT");
        transcript.reply(&Reply::new(221, "2.0.0", "bye"));
    }

    #[test]
    fn settings_deserialize_from_their_configuration_spellings() {
        use serde::de::IntoDeserializer;
        fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde::de::value::Error> {
            T::deserialize(text.into_deserializer())
        }
        assert_eq!(parse::<TranscriptMode>("off"), Ok(TranscriptMode::Off));
        assert_eq!(
            parse::<TranscriptMode>("on-error"),
            Ok(TranscriptMode::OnError)
        );
        assert_eq!(parse::<TranscriptMode>("all"), Ok(TranscriptMode::All));
        assert_eq!(parse::<DataLogging>("ignore"), Ok(DataLogging::Ignore));
        assert_eq!(
            parse::<DataLogging>("summarize"),
            Ok(DataLogging::Summarize)
        );
        assert_eq!(parse::<DataLogging>("echo"), Ok(DataLogging::Echo));
        assert!(parse::<TranscriptMode>("OnError").is_err());
        for mode in [
            TranscriptMode::Off,
            TranscriptMode::OnError,
            TranscriptMode::All,
        ] {
            assert_eq!(parse::<TranscriptMode>(&mode.to_string()), Ok(mode));
        }
    }

    #[test]
    fn off_records_nothing() {
        let mut transcript = Transcript::new(TranscriptMode::Off, DataLogging::Echo);
        converse(&mut transcript, b"secret\r\n");
        assert!(transcript.lines.is_empty());
        assert!(transcript.conclude(&SessionEnd::Timeout).is_none());
    }

    #[test]
    fn all_logs_a_clean_session_with_a_data_summary() {
        let mut transcript = Transcript::new(TranscriptMode::All, DataLogging::Summarize);
        converse(&mut transcript, b"Subject: hi\r\n\r\nbody\r\n");
        let lines = transcript.conclude(&SessionEnd::Quit).unwrap();
        assert_eq!(
            texts(&lines),
            [
                "> 220 mx ESMTP",
                "< DATA",
                "> 354 go ahead",
                "< <message data: 21 bytes, 3 lines>",
                "> 250 2.0.0 queued",
                "< QUIT",
                "> 221 2.0.0 bye",
                "* session ended: quit",
            ]
        );
    }

    #[test]
    fn on_error_skips_a_clean_session() {
        let mut transcript = Transcript::new(TranscriptMode::OnError, DataLogging::Summarize);
        converse(&mut transcript, b"x\r\n");
        assert!(transcript.conclude(&SessionEnd::Quit).is_none());
    }

    #[test]
    fn on_error_logs_a_session_with_a_refusal() {
        let mut transcript = Transcript::new(TranscriptMode::OnError, DataLogging::Summarize);
        transcript.command(b"RCPT TO:<x@elsewhere>");
        transcript.reply(&Reply::new(554, "5.7.1", "relay access denied"));
        let lines = transcript.conclude(&SessionEnd::Quit).unwrap();
        assert_eq!(lines[1].1, "554 5.7.1 relay access denied");
    }

    #[test]
    fn on_error_logs_an_abnormal_end_and_an_interrupted_message() {
        let mut transcript = Transcript::new(TranscriptMode::OnError, DataLogging::Summarize);
        transcript.command(b"NOOP");
        transcript.reply(&Reply::new(250, "2.0.0", "ok"));
        assert!(
            transcript
                .conclude(&SessionEnd::IoError("reset".into()))
                .is_some()
        );

        let mut transcript = Transcript::new(TranscriptMode::OnError, DataLogging::Ignore);
        transcript.command(b"DATA");
        transcript.reply(&Reply::without_enhanced(354, vec!["go".into()]));
        transcript.content(b"half a mess");
        let lines = transcript.conclude(&SessionEnd::ClientClosed).unwrap();
        assert_eq!(
            texts(&lines),
            [
                "< DATA",
                "> 354 go",
                "* message data interrupted",
                "* session ended: client closed connection"
            ]
        );
    }

    #[test]
    fn ignore_leaves_out_message_content() {
        let mut transcript = Transcript::new(TranscriptMode::All, DataLogging::Ignore);
        converse(&mut transcript, b"private\r\n");
        let lines = texts(&transcript.conclude(&SessionEnd::Quit).unwrap());
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("message data") || l.contains("private"))
        );
        assert!(lines.contains(&"> 250 2.0.0 queued".to_string()));
    }

    #[test]
    fn echo_shows_the_content_lines_before_the_reply() {
        let mut transcript = Transcript::new(TranscriptMode::All, DataLogging::Echo);
        converse(&mut transcript, b"Subject: hi\r\n\r\n.leading dot\r\n");
        let lines = texts(&transcript.conclude(&SessionEnd::Quit).unwrap());
        assert_eq!(
            lines[3..8],
            [
                "< Subject: hi",
                "< ",
                "< .leading dot",
                "< <message data: 29 bytes, 3 lines>",
                "> 250 2.0.0 queued",
            ]
        );
    }

    #[test]
    fn echo_is_capped_per_message_and_says_so() {
        let mut transcript = Transcript::new(TranscriptMode::All, DataLogging::Echo);
        transcript.start_message();
        let line = [b'a'; 998];
        let mut content = Vec::new();
        for _ in 0..100 {
            content.extend_from_slice(&line);
            content.extend_from_slice(b"\r\n");
        }
        transcript.content(&content);
        transcript.reply(&Reply::new(250, "2.0.0", "chunk ok"));
        transcript.content(&content);
        transcript.reply(&Reply::new(250, "2.0.0", "queued"));
        let lines = transcript.conclude(&SessionEnd::Quit).unwrap();
        let echoed: usize = lines
            .iter()
            .filter(|(_, t)| t.starts_with('a'))
            .map(|(_, t)| t.len())
            .sum();
        assert!(echoed <= ECHO_LIMIT, "{echoed}");
        assert!(echoed > ECHO_LIMIT - 1000, "{echoed}");
        assert_eq!(
            lines
                .iter()
                .filter(|(d, t)| *d == Direction::Note && t.contains("echo truncated"))
                .count(),
            2
        );
        assert!(
            lines
                .iter()
                .any(|(_, t)| t == "<message data: 100000 bytes, 100 lines>")
        );
    }

    #[test]
    fn transcript_memory_is_bounded_and_truncation_noted() {
        let mut transcript = Transcript::new(TranscriptMode::All, DataLogging::Summarize);
        let noop = vec![b'N'; 2000];
        for _ in 0..1000 {
            transcript.command(&noop);
        }
        assert!(transcript.size <= TRANSCRIPT_LIMIT);
        let lines = transcript.conclude(&SessionEnd::Quit).unwrap();
        let note = &lines[lines.len() - 2].1;
        assert!(note.starts_with("transcript truncated"), "{note}");
        assert!(note.contains("869 more lines"), "{note}");
    }

    #[test]
    fn auth_arguments_and_control_characters_never_reach_the_log() {
        let mut transcript = Transcript::new(TranscriptMode::All, DataLogging::Summarize);
        transcript.command(b"AUTH PLAIN dXNlcgB1c2VyAHBhc3M=");
        transcript.command(b"auth login");
        transcript.command(b"NOOP \x1b[31mred\x00 \xff");
        let lines = texts(&transcript.conclude(&SessionEnd::Quit).unwrap());
        assert_eq!(lines[0], "< AUTH PLAIN <credentials not logged>");
        assert_eq!(lines[1], "< auth login");
        assert_eq!(lines[2], "< NOOP \\x1b[31mred\\x00 \u{fffd}");
    }

    #[test]
    fn multi_line_replies_become_one_line_each() {
        let mut transcript = Transcript::new(TranscriptMode::All, DataLogging::Summarize);
        transcript.reply(&Reply::without_enhanced(
            250,
            vec!["mx".into(), "PIPELINING".into(), "CHUNKING".into()],
        ));
        let lines = texts(&transcript.conclude(&SessionEnd::Quit).unwrap());
        assert_eq!(
            lines[..3],
            ["> 250-mx", "> 250-PIPELINING", "> 250 CHUNKING"]
        );
    }
}

//! A mail server that accepts everything and records it: the internal mail server behind the
//! box (and the "outside" server an open relay would reach). Each message is handed to the
//! caller *before* its `250` is written, so anything the box believes delivered is on record.

use super::{LineBuffer, path_argument};

/// One message as the sink received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    /// Envelope sender.
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_to: Vec<String>,
    /// The data with dot-stuffing undone, CRLF line endings.
    pub data: Vec<u8>,
}

impl ReceivedMessage {
    /// The value of the first header named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.data);
        let mut value: Option<String> = None;
        for line in text.split("\r\n") {
            if line.is_empty() {
                break;
            }
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }

    /// The harness' message id (`X-HIL-Id:`), if the message is one the harness sent.
    pub fn hil_id(&self) -> Option<String> {
        self.header("X-HIL-Id")
    }
}

/// The transaction a session is in; data lines go to the message only in `Data`.
#[derive(Debug)]
enum Phase {
    Commands,
    Data(ReceivedMessage),
    Closing,
}

/// One SMTP server session of the sink.
#[derive(Debug)]
pub struct SinkSession {
    name: String,
    lines: LineBuffer,
    helo: String,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    phase: Phase,
    transcript: Vec<String>,
    accepted: u64,
}

impl SinkSession {
    /// A session of the server called `name` (used in its greeting and replies).
    pub fn new(name: &str) -> SinkSession {
        SinkSession {
            name: name.to_string(),
            lines: LineBuffer::default(),
            helo: String::new(),
            mail_from: None,
            rcpt_to: Vec::new(),
            phase: Phase::Commands,
            transcript: Vec::new(),
            accepted: 0,
        }
    }

    /// The greeting, sent when the connection opens.
    pub fn greeting(&mut self, out: &mut Vec<u8>) {
        let line = format!("220 {} ESMTP HIL sink", self.name);
        self.reply(&line, out);
    }

    /// Whether the session has said goodbye (close once `out` is flushed).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Closing)
    }

    /// Takes the commands read and replies sent since the last call, for the LAN log.
    pub fn drain_transcript(&mut self) -> Vec<String> {
        std::mem::take(&mut self.transcript)
    }

    /// Feeds bytes from the client; appends replies to `out` and returns the messages
    /// completed (record them before sending `out`).
    pub fn on_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) -> Vec<ReceivedMessage> {
        let mut done = Vec::new();
        for line in self.lines.push(input) {
            match &mut self.phase {
                Phase::Closing => {}
                Phase::Data(msg) => {
                    if line == b"." {
                        let msg = std::mem::take(msg);
                        self.phase = Phase::Commands;
                        self.accepted += 1;
                        self.transcript
                            .push(format!("< ({} bytes of message data)", msg.data.len()));
                        let reply =
                            format!("250 2.0.0 Ok: queued as {}-{}", self.name, self.accepted);
                        self.reply(&reply, out);
                        self.mail_from = None;
                        self.rcpt_to.clear();
                        done.push(msg);
                    } else {
                        let line = line.strip_prefix(b".").unwrap_or(&line);
                        msg.data.extend_from_slice(line);
                        msg.data.extend_from_slice(b"\r\n");
                    }
                }
                Phase::Commands => {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    self.transcript.push(format!("< {text}"));
                    self.command(&text, out);
                }
            }
        }
        done
    }

    fn reply(&mut self, line: &str, out: &mut Vec<u8>) {
        self.transcript.push(format!("> {line}"));
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn command(&mut self, line: &str, out: &mut Vec<u8>) {
        let (verb, arg) = match line.find([' ', ':']) {
            Some(i) => (&line[..i], &line[i..]),
            None => (line, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                self.helo = arg.trim().to_string();
                let lines = [
                    format!("250-{}", self.name),
                    "250-PIPELINING".to_string(),
                    "250-8BITMIME".to_string(),
                    "250 SIZE 104857600".to_string(),
                ];
                for l in lines {
                    self.reply(&l, out);
                }
            }
            "HELO" => {
                self.helo = arg.trim().to_string();
                let l = format!("250 {}", self.name);
                self.reply(&l, out);
            }
            "MAIL" => match strip_keyword(arg, "FROM:").and_then(path_argument) {
                Some(from) if self.mail_from.is_none() => {
                    self.mail_from = Some(from);
                    self.reply("250 2.1.0 Ok", out);
                }
                Some(_) => self.reply("503 5.5.1 nested MAIL command", out),
                None => self.reply("501 5.5.4 syntax: MAIL FROM:<address>", out),
            },
            "RCPT" => match strip_keyword(arg, "TO:").and_then(path_argument) {
                Some(_) if self.mail_from.is_none() => self.reply("503 5.5.1 need MAIL first", out),
                Some(to) => {
                    self.rcpt_to.push(to);
                    self.reply("250 2.1.5 Ok", out);
                }
                None => self.reply("501 5.5.4 syntax: RCPT TO:<address>", out),
            },
            "DATA" => match &self.mail_from {
                Some(from) if !self.rcpt_to.is_empty() => {
                    self.phase = Phase::Data(ReceivedMessage {
                        helo: self.helo.clone(),
                        mail_from: from.clone(),
                        rcpt_to: self.rcpt_to.clone(),
                        data: Vec::new(),
                    });
                    self.reply("354 End data with <CR><LF>.<CR><LF>", out);
                }
                _ => self.reply("503 5.5.1 need MAIL and RCPT first", out),
            },
            "RSET" => {
                self.mail_from = None;
                self.rcpt_to.clear();
                self.reply("250 2.0.0 Ok", out);
            }
            "NOOP" => self.reply("250 2.0.0 Ok", out),
            "QUIT" => {
                self.reply("221 2.0.0 Bye", out);
                self.phase = Phase::Closing;
            }
            _ => self.reply("502 5.5.2 command not implemented", out),
        }
    }
}

/// `arg` without a leading case-insensitive `keyword` (after optional spaces).
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let arg = arg.trim_start();
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &arg[keyword.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut SinkSession, input: &str) -> (String, Vec<ReceivedMessage>) {
        let mut out = Vec::new();
        let msgs = s.on_bytes(input.as_bytes(), &mut out);
        (String::from_utf8(out).unwrap(), msgs)
    }

    #[test]
    fn a_pipelined_transaction_is_recorded_with_envelope_and_unstuffed_body() {
        let mut s = SinkSession::new("mail.example.org");
        let mut out = Vec::new();
        s.greeting(&mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("220 mail.example.org")
        );
        let (replies, msgs) = feed(
            &mut s,
            "EHLO gw1\r\nMAIL FROM:<a@example.net> SIZE=20\r\nRCPT TO:<b@example.org>\r\nrcpt to:<c@example.org>\r\nDATA\r\nX-HIL-Id: m1\r\nSubject: x\r\n\r\n..dot\r\nline\r\n.\r\nQUIT\r\n",
        );
        assert!(replies.starts_with("250-mail.example.org\r\n250-PIPELINING\r\n"));
        assert!(replies.contains("354 "));
        assert!(replies.contains("250 2.0.0 Ok: queued as mail.example.org-1\r\n"));
        assert!(replies.ends_with("221 2.0.0 Bye\r\n"));
        assert!(s.is_done());
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!(m.helo, "gw1");
        assert_eq!(m.mail_from, "a@example.net");
        assert_eq!(m.rcpt_to, ["b@example.org", "c@example.org"]);
        assert_eq!(
            m.data,
            b"X-HIL-Id: m1\r\nSubject: x\r\n\r\n.dot\r\nline\r\n"
        );
        assert_eq!(m.hil_id().as_deref(), Some("m1"));
        assert_eq!(m.header("subject").as_deref(), Some("x"));
    }

    #[test]
    fn data_split_across_reads_is_reassembled() {
        let mut s = SinkSession::new("sink");
        feed(
            &mut s,
            "HELO gw1\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubj",
        );
        let (_, msgs) = feed(&mut s, "ect: y\r\n\r\nbody\r");
        assert!(msgs.is_empty());
        let (replies, msgs) = feed(&mut s, "\n.\r\n");
        assert!(replies.starts_with("250 "));
        assert_eq!(msgs[0].mail_from, "");
        assert_eq!(msgs[0].data, b"Subject: y\r\n\r\nbody\r\n");
    }

    #[test]
    fn commands_out_of_sequence_are_refused() {
        let mut s = SinkSession::new("sink");
        let (r, _) = feed(
            &mut s,
            "DATA\r\nRCPT TO:<x@y>\r\nBDAT 10\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n",
        );
        let codes: Vec<&str> = r.lines().map(|l| &l[..3]).collect();
        assert_eq!(codes, ["503", "503", "502", "250", "503"]);
    }

    #[test]
    fn folded_headers_are_unfolded() {
        let m = ReceivedMessage {
            data: b"Subject: a\r\n b\r\nX: y\r\n\r\nSubject: no".to_vec(),
            ..Default::default()
        };
        assert_eq!(m.header("Subject").as_deref(), Some("a b"));
        assert_eq!(m.hil_id(), None);
    }
}

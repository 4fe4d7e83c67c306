//! An "internet" sender: one SMTP session that submits a list of messages, one command at a
//! time (no pipelining), and records for each message whether the server acknowledged it with
//! a 2xx after the data. Those acknowledged messages are what the power-cut scenario holds the
//! box to: every one of them must reach the internal mail server.

use super::{MalformedReply, Reply, ReplyReader, dot_stuff};

/// A message a sender submits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The harness' own id for the message; also in its `X-HIL-Id:` header, so the sink can
    /// match what arrives to what was sent.
    pub id: String,
    /// Envelope sender.
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_to: Vec<String>,
    /// The whole message (headers and body), any line endings.
    pub data: Vec<u8>,
}

impl OutgoingMessage {
    /// A small text message with `From`, `To`, `Subject`, `Message-ID` and `X-HIL-Id` headers.
    pub fn text(id: &str, from: &str, to: &str, subject: &str, body: &str) -> OutgoingMessage {
        let data = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{id}@hil.example.net>\r\nX-HIL-Id: {id}\r\n\r\n{body}"
        );
        OutgoingMessage {
            id: id.to_string(),
            mail_from: from.to_string(),
            rcpt_to: vec![to.to_string()],
            data: data.into_bytes(),
        }
    }
}

/// The step of a session a reply or failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The server's greeting.
    Greeting,
    /// `EHLO`.
    Ehlo,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO` (every recipient refused).
    Rcpt,
    /// `DATA` (before the data).
    Data,
    /// The end of the data: the reply that acknowledges the message, or not.
    EndOfData,
}

/// What became of one submitted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// 2xx after the data: the server took responsibility for the message.
    Acknowledged(Reply),
    /// The server refused it; `stage` says at which command.
    Refused {
        /// Where it was refused.
        stage: Stage,
        /// The refusing reply.
        reply: Reply,
    },
    /// The session ended before the server answered the data (connection lost, malformed
    /// reply, power cut). Not acknowledged: the box owes nothing for it.
    Unfinished {
        /// How far it got.
        stage: Stage,
        /// Why it ended.
        reason: String,
    },
}

impl Submission {
    /// Whether the server acknowledged the message.
    pub fn is_acknowledged(&self) -> bool {
        matches!(self, Submission::Acknowledged(_))
    }
}

/// What the session is waiting for. Each variant is one reply the server owes us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Greeting,
    Ehlo,
    Mail,
    Rcpt { index: usize, accepted: usize },
    Data,
    EndOfData,
    Rset,
    Quit,
    Nothing,
}

/// One SMTP client session (see the module docs).
#[derive(Debug)]
pub struct ClientSession {
    helo: String,
    messages: Vec<OutgoingMessage>,
    current: usize,
    awaiting: Awaiting,
    replies: ReplyReader,
    greeting: Option<Reply>,
    outcomes: Vec<(String, Submission)>,
    transcript: Vec<String>,
}

impl ClientSession {
    /// A session that says `EHLO helo` and submits `messages` in order. With no messages it
    /// reads the greeting and quits (the readiness probe).
    pub fn new(helo: &str, messages: Vec<OutgoingMessage>) -> ClientSession {
        ClientSession {
            helo: helo.to_string(),
            messages,
            current: 0,
            awaiting: Awaiting::Greeting,
            replies: ReplyReader::default(),
            greeting: None,
            outcomes: Vec::new(),
            transcript: Vec::new(),
        }
    }

    /// The server's greeting, once read.
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// The outcome of every message decided so far, by message id.
    pub fn outcomes(&self) -> &[(String, Submission)] {
        &self.outcomes
    }

    /// Whether the session has nothing more to say or hear (QUIT answered, or given up).
    pub fn is_done(&self) -> bool {
        self.awaiting == Awaiting::Nothing
    }

    /// Takes the commands sent and replies read since the last call (not the message data),
    /// for the LAN log.
    pub fn drain_transcript(&mut self) -> Vec<String> {
        std::mem::take(&mut self.transcript)
    }

    /// Feeds bytes from the server; appends what to send next to `out`.
    pub fn on_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self.replies.push(input) {
            Ok(replies) => {
                for reply in replies {
                    self.transcript.push(format!("< {reply}"));
                    self.on_reply(reply, out);
                }
            }
            Err(MalformedReply { line }) => {
                self.give_up(&format!("malformed reply {line:?}"));
            }
        }
    }

    /// The connection ended (closed, reset or timed out): every message not yet decided is
    /// [`Submission::Unfinished`].
    pub fn connection_lost(&mut self, reason: &str) {
        if self.awaiting != Awaiting::Quit {
            self.give_up(reason);
        }
        self.awaiting = Awaiting::Nothing;
    }

    /// Consumes the session, returning the greeting and every message's outcome (undecided
    /// ones as unfinished).
    pub fn finish(mut self) -> (Option<Reply>, Vec<(String, Submission)>) {
        if !self.is_done() {
            self.connection_lost("session abandoned");
        }
        (self.greeting, self.outcomes)
    }

    fn stage(&self) -> Stage {
        match self.awaiting {
            Awaiting::Greeting => Stage::Greeting,
            Awaiting::Ehlo => Stage::Ehlo,
            Awaiting::Mail | Awaiting::Rset | Awaiting::Quit | Awaiting::Nothing => Stage::Mail,
            Awaiting::Rcpt { .. } => Stage::Rcpt,
            Awaiting::Data => Stage::Data,
            Awaiting::EndOfData => Stage::EndOfData,
        }
    }

    fn give_up(&mut self, reason: &str) {
        let stage = self.stage();
        for m in &self.messages[self.current.min(self.messages.len())..] {
            self.outcomes.push((
                m.id.clone(),
                Submission::Unfinished {
                    stage,
                    reason: reason.to_string(),
                },
            ));
        }
        self.current = self.messages.len();
        self.awaiting = Awaiting::Nothing;
    }

    fn command(&mut self, line: String, out: &mut Vec<u8>) {
        self.transcript.push(format!("> {line}"));
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Decides the current message and moves on: RSET after a refusal, else the next MAIL.
    fn decide(&mut self, outcome: Submission, out: &mut Vec<u8>) {
        let refused = !outcome.is_acknowledged();
        let id = self.messages[self.current].id.clone();
        self.outcomes.push((id, outcome));
        self.current += 1;
        if refused {
            self.awaiting = Awaiting::Rset;
            self.command("RSET".into(), out);
        } else {
            self.next_message(out);
        }
    }

    fn next_message(&mut self, out: &mut Vec<u8>) {
        match self.messages.get(self.current) {
            Some(m) => {
                let line = format!("MAIL FROM:<{}>", m.mail_from);
                self.awaiting = Awaiting::Mail;
                self.command(line, out);
            }
            None => {
                self.awaiting = Awaiting::Quit;
                self.command("QUIT".into(), out);
            }
        }
    }

    fn on_reply(&mut self, reply: Reply, out: &mut Vec<u8>) {
        match self.awaiting {
            Awaiting::Greeting => {
                self.greeting = Some(reply.clone());
                if reply.code == 220 {
                    self.awaiting = Awaiting::Ehlo;
                    let line = format!("EHLO {}", self.helo);
                    self.command(line, out);
                } else {
                    self.refuse_all(Stage::Greeting, &reply);
                    self.awaiting = Awaiting::Quit;
                    self.command("QUIT".into(), out);
                }
            }
            Awaiting::Ehlo => {
                if reply.is_positive() {
                    self.next_message(out);
                } else {
                    self.refuse_all(Stage::Ehlo, &reply);
                    self.awaiting = Awaiting::Quit;
                    self.command("QUIT".into(), out);
                }
            }
            Awaiting::Mail => {
                if reply.is_positive() {
                    self.awaiting = Awaiting::Rcpt {
                        index: 0,
                        accepted: 0,
                    };
                    let line = format!("RCPT TO:<{}>", self.messages[self.current].rcpt_to[0]);
                    self.command(line, out);
                } else {
                    self.decide(
                        Submission::Refused {
                            stage: Stage::Mail,
                            reply,
                        },
                        out,
                    );
                }
            }
            Awaiting::Rcpt { index, accepted } => {
                let accepted = accepted + usize::from(reply.is_positive());
                let next = index + 1;
                let rcpts = &self.messages[self.current].rcpt_to;
                if let Some(rcpt) = rcpts.get(next) {
                    let line = format!("RCPT TO:<{rcpt}>");
                    self.awaiting = Awaiting::Rcpt {
                        index: next,
                        accepted,
                    };
                    self.command(line, out);
                } else if accepted > 0 {
                    self.awaiting = Awaiting::Data;
                    self.command("DATA".into(), out);
                } else {
                    self.decide(
                        Submission::Refused {
                            stage: Stage::Rcpt,
                            reply,
                        },
                        out,
                    );
                }
            }
            Awaiting::Data => {
                if reply.code == 354 {
                    self.awaiting = Awaiting::EndOfData;
                    let data = dot_stuff(&self.messages[self.current].data);
                    self.transcript
                        .push(format!("> ({} bytes of message data)", data.len()));
                    out.extend_from_slice(&data);
                } else {
                    self.decide(
                        Submission::Refused {
                            stage: Stage::Data,
                            reply,
                        },
                        out,
                    );
                }
            }
            Awaiting::EndOfData => {
                let outcome = if reply.is_positive() {
                    Submission::Acknowledged(reply)
                } else {
                    Submission::Refused {
                        stage: Stage::EndOfData,
                        reply,
                    }
                };
                self.decide(outcome, out);
            }
            Awaiting::Rset => self.next_message(out),
            Awaiting::Quit | Awaiting::Nothing => self.awaiting = Awaiting::Nothing,
        }
    }

    fn refuse_all(&mut self, stage: Stage, reply: &Reply) {
        for m in &self.messages[self.current..] {
            self.outcomes.push((
                m.id.clone(),
                Submission::Refused {
                    stage,
                    reply: reply.clone(),
                },
            ));
        }
        self.current = self.messages.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, to: &[&str]) -> OutgoingMessage {
        OutgoingMessage {
            id: id.into(),
            mail_from: "s@example.net".into(),
            rcpt_to: to.iter().map(|s| s.to_string()).collect(),
            data: b"Subject: t\r\n\r\n.hidden dot\r\n".to_vec(),
        }
    }

    /// Plays the server: feeds each reply and returns what the client sent in answer.
    fn exchange(s: &mut ClientSession, reply: &str) -> String {
        let mut out = Vec::new();
        s.on_bytes(reply.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_message_acknowledged_after_data_is_recorded_as_acknowledged() {
        let mut s = ClientSession::new("sender1.example.net", vec![msg("m1", &["a@example.org"])]);
        assert_eq!(
            exchange(&mut s, "220-gw1 ESMTP\r\n220 hi\r\n"),
            "EHLO sender1.example.net\r\n"
        );
        assert_eq!(
            exchange(&mut s, "250-gw1\r\n250 PIPELINING\r\n"),
            "MAIL FROM:<s@example.net>\r\n"
        );
        assert_eq!(
            exchange(&mut s, "250 ok\r\n"),
            "RCPT TO:<a@example.org>\r\n"
        );
        assert_eq!(exchange(&mut s, "250 ok\r\n"), "DATA\r\n");
        assert_eq!(
            exchange(&mut s, "354 go\r\n"),
            "Subject: t\r\n\r\n..hidden dot\r\n.\r\n"
        );
        assert_eq!(exchange(&mut s, "250 2.0.0 queued as X\r\n"), "QUIT\r\n");
        assert!(!s.is_done());
        exchange(&mut s, "221 bye\r\n");
        assert!(s.is_done());
        let (greeting, outcomes) = s.finish();
        assert_eq!(greeting.unwrap().lines, ["gw1 ESMTP", "hi"]);
        assert!(outcomes[0].1.is_acknowledged());
    }

    #[test]
    fn a_refused_recipient_refuses_the_message_and_the_next_one_is_sent_after_rset() {
        let mut s = ClientSession::new(
            "h",
            vec![
                msg("relay", &["x@example.net"]),
                msg("ok", &["a@example.org"]),
            ],
        );
        exchange(&mut s, "220 hi\r\n");
        exchange(&mut s, "250 gw1\r\n");
        exchange(&mut s, "250 ok\r\n");
        assert_eq!(
            exchange(&mut s, "554 5.7.1 relay access denied\r\n"),
            "RSET\r\n"
        );
        assert_eq!(
            exchange(&mut s, "250 reset\r\n"),
            "MAIL FROM:<s@example.net>\r\n"
        );
        let (_, outcomes) = s.finish();
        match &outcomes[0].1 {
            Submission::Refused { stage, reply } => {
                assert_eq!(*stage, Stage::Rcpt);
                assert_eq!(reply.code, 554);
                assert!(reply.first_line().starts_with("5.7.1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcomes[1].1,
            Submission::Unfinished {
                stage: Stage::Mail,
                ..
            }
        ));
    }

    #[test]
    fn data_is_sent_when_at_least_one_of_several_recipients_is_accepted() {
        let mut s = ClientSession::new("h", vec![msg("m", &["x@example.net", "a@example.org"])]);
        exchange(&mut s, "220 hi\r\n");
        exchange(&mut s, "250 gw1\r\n");
        exchange(&mut s, "250 ok\r\n");
        assert_eq!(
            exchange(&mut s, "554 5.7.1 no\r\n"),
            "RCPT TO:<a@example.org>\r\n"
        );
        assert_eq!(exchange(&mut s, "250 ok\r\n"), "DATA\r\n");
    }

    #[test]
    fn a_connection_lost_before_the_final_reply_leaves_the_message_unacknowledged() {
        let mut s = ClientSession::new(
            "h",
            vec![msg("m1", &["a@example.org"]), msg("m2", &["a@example.org"])],
        );
        exchange(
            &mut s,
            "220 hi\r\n250 gw1\r\n250 ok\r\n250 ok\r\n354 go\r\n",
        );
        s.connection_lost("reset by peer");
        assert!(s.is_done());
        let (_, outcomes) = s.finish();
        assert_eq!(outcomes.len(), 2);
        assert!(matches!(
            &outcomes[0].1,
            Submission::Unfinished { stage: Stage::EndOfData, reason } if reason == "reset by peer"
        ));
        assert!(!outcomes[1].1.is_acknowledged());
    }

    #[test]
    fn a_refusing_greeting_refuses_every_message_and_quits() {
        let mut s = ClientSession::new("h", vec![msg("m1", &["a@example.org"])]);
        assert_eq!(
            exchange(&mut s, "421 4.7.0 too many sessions\r\n"),
            "QUIT\r\n"
        );
        let (_, outcomes) = s.finish();
        assert!(matches!(
            outcomes[0].1,
            Submission::Refused {
                stage: Stage::Greeting,
                ..
            }
        ));
    }

    #[test]
    fn a_probe_without_messages_reads_the_banner_and_quits() {
        let mut s = ClientSession::new("h", vec![]);
        assert_eq!(exchange(&mut s, "220 gw1 ESMTP\r\n"), "EHLO h\r\n");
        assert_eq!(exchange(&mut s, "250 gw1\r\n"), "QUIT\r\n");
        assert_eq!(s.greeting().unwrap().code, 220);
        let t = s.drain_transcript();
        assert_eq!(t.first().unwrap(), "< 220 gw1 ESMTP");
    }

    #[test]
    fn quit_unanswered_does_not_undo_acknowledged_messages() {
        let mut s = ClientSession::new("h", vec![msg("m1", &["a@example.org"])]);
        exchange(
            &mut s,
            "220 hi\r\n250 gw1\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n",
        );
        s.connection_lost("closed");
        let (_, outcomes) = s.finish();
        assert!(outcomes[0].1.is_acknowledged());
    }
}

//! swaks, the SMTP Swiss army knife, as the well-behaved client of the tests; and its transcript.

use std::process::Command;
use std::time::Duration;

use crate::process::{Finished, run_bounded_merged};
use crate::smtp::Reply;

/// A swaks invocation against 127.0.0.1:<port>.
#[derive(Debug, Clone)]
pub struct Swaks {
    args: Vec<String>,
}

impl Swaks {
    /// `swaks --server 127.0.0.1:PORT --helo client.test --timeout 30`.
    pub fn new(port: u16) -> Swaks {
        Swaks {
            args: vec![
                "--server".into(),
                format!("127.0.0.1:{port}"),
                "--helo".into(),
                "client.test".into(),
                "--timeout".into(),
                "30".into(),
            ],
        }
    }

    /// `--to` (comma-separated for several recipients).
    pub fn to(self, to: &str) -> Swaks {
        self.arg("--to").arg(to)
    }

    /// `--from` (`<>` for the null sender).
    pub fn from(self, from: &str) -> Swaks {
        self.arg("--from").arg(from)
    }

    /// `--body`.
    pub fn body(self, body: &str) -> Swaks {
        self.arg("--body").arg(body)
    }

    /// `--header "Name: value"`.
    pub fn header(self, header: &str) -> Swaks {
        self.arg("--header").arg(header)
    }

    /// `--quit-after STAGE` (e.g. `RCPT`).
    pub fn quit_after(self, stage: &str) -> Swaks {
        self.arg("--quit-after").arg(stage)
    }

    /// Any other argument.
    pub fn arg(mut self, arg: &str) -> Swaks {
        self.args.push(arg.to_string());
        self
    }

    /// Runs swaks (bounded to two minutes) and returns its transcript.
    pub fn run(&self) -> SwaksRun {
        let Finished {
            status,
            stdout,
            timed_out,
            ..
        } = run_bounded_merged(
            Command::new("swaks").args(&self.args),
            Duration::from_secs(120),
        );
        assert!(
            !timed_out,
            "swaks {} hung; transcript so far:\n{stdout}",
            self.args.join(" ")
        );
        SwaksRun {
            args: self.args.clone(),
            status,
            transcript: stdout,
        }
    }
}

/// What swaks did: its exit code and its transcript (`->` sent, `<-` received, `~>`/`<~` under TLS).
#[derive(Debug, Clone)]
pub struct SwaksRun {
    /// The arguments it ran with.
    pub args: Vec<String>,
    /// swaks' exit code (0: the whole transaction succeeded).
    pub status: Option<i32>,
    /// stdout and stderr, interleaved.
    pub transcript: String,
}

/// A transcript line: who spoke and what.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Sent(String),
    Received(String),
}

impl SwaksRun {
    fn lines(&self) -> Vec<Line> {
        self.transcript
            .lines()
            .filter_map(|raw| {
                let line = raw.trim_start();
                let (marker, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                match marker {
                    "->" | "~>" => Some(Line::Sent(rest.to_string())),
                    "<-" | "<~" | "<-*" | "<~*" | "<**" => {
                        Some(Line::Received(rest.trim_start().to_string()))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Every reply the server sent, paired with the last line swaks had sent before it.
    pub fn replies(&self) -> Vec<(String, Reply)> {
        let mut out = Vec::new();
        let mut last_sent = String::from("(connect)");
        let mut pending: Vec<String> = Vec::new();
        for line in self.lines() {
            match line {
                Line::Sent(text) => last_sent = text,
                Line::Received(text) => {
                    let Some(code) = text.get(..3).and_then(|c| c.parse::<u16>().ok()) else {
                        continue;
                    };
                    let more = text.as_bytes().get(3) == Some(&b'-');
                    pending.push(text.get(4..).unwrap_or("").to_string());
                    if !more {
                        out.push((
                            last_sent.clone(),
                            Reply {
                                code,
                                lines: std::mem::take(&mut pending),
                            },
                        ));
                    }
                }
            }
        }
        out
    }

    /// The reply to the first command that starts with `command` (e.g. "MAIL FROM", "RCPT TO:<x@y>", ".").
    pub fn reply_to(&self, command: &str) -> Option<Reply> {
        self.replies()
            .into_iter()
            .find(|(sent, _)| {
                sent.to_ascii_uppercase()
                    .starts_with(&command.to_ascii_uppercase())
            })
            .map(|(_, reply)| reply)
    }

    /// The reply to the end of message data (the line ".").
    pub fn data_reply(&self) -> Option<Reply> {
        self.replies()
            .into_iter()
            .find(|(sent, _)| sent == ".")
            .map(|(_, reply)| reply)
    }

    /// True if the server's EHLO reply advertised `keyword` (e.g. "PIPELINING", "STARTTLS").
    pub fn advertised(&self, keyword: &str) -> bool {
        self.replies().iter().any(|(sent, reply)| {
            sent.to_ascii_uppercase().starts_with("EHLO")
                && reply.lines.iter().any(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
                })
        })
    }

    /// Panics with the transcript unless swaks reported success (exit 0).
    #[track_caller]
    pub fn success(&self) -> &SwaksRun {
        assert_eq!(
            self.status,
            Some(0),
            "swaks {} failed:\n{}",
            self.args.join(" "),
            self.transcript
        );
        self
    }
}

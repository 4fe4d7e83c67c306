//! SMTP as the virtual LAN speaks it: the "internet" senders ([`client`]) and the mail servers
//! behind and beyond the box ([`server`]). Both are pure state machines over bytes, so they are
//! tested here without a network; `lan::tcp` runs them over smoltcp sockets.

pub mod client;
pub mod server;

use std::fmt;

/// A complete SMTP reply: its code and the text of every line (without the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, e.g. 250.
    pub code: u16,
    /// The text of each line, in order, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx: the command worked.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The first line's text, which carries the enhanced status code if there is one.
    pub fn first_line(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or("")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// Splits a byte stream into lines ending in LF (a CR before it is dropped), keeping the
/// unfinished tail for the next call.
#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Appends `input` and returns every line it completed, without the line ending.
    pub fn push(&mut self, input: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &b in input {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                lines.push(line);
            } else {
                self.partial.push(b);
            }
        }
        lines
    }
}

/// A reply the peer sent that is not SMTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SMTP reply line {line:?}")]
pub struct MalformedReply {
    /// The offending line, lossily decoded.
    pub line: String,
}

/// Collects reply lines (`250-…` continuation, `250 …` final) into whole [`Reply`]s.
#[derive(Debug, Default)]
pub struct ReplyReader {
    lines: LineBuffer,
    pending: Option<Reply>,
}

impl ReplyReader {
    /// Feeds bytes from the server; returns every reply they completed, in order.
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<Reply>, MalformedReply> {
        let mut done = Vec::new();
        for raw in self.lines.push(input) {
            let line = String::from_utf8_lossy(&raw).into_owned();
            let bad = || MalformedReply { line: line.clone() };
            let code: u16 = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse().ok())
                .ok_or_else(bad)?;
            let (last, text) = match line.as_bytes().get(3) {
                None => (true, ""),
                Some(b' ') => (true, &line[4..]),
                Some(b'-') => (false, &line[4..]),
                Some(_) => return Err(bad()),
            };
            let reply = self.pending.get_or_insert_with(|| Reply {
                code,
                lines: Vec::new(),
            });
            if reply.code != code {
                return Err(bad());
            }
            reply.lines.push(text.to_string());
            if last {
                done.extend(self.pending.take());
            }
        }
        Ok(done)
    }
}

/// Message data as it goes on the wire after `DATA`: CRLF line endings, a leading dot doubled
/// (RFC 5321 4.5.2), a final CRLF if missing, then the `.` line.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut at_line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        match b {
            b'\r' if message.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
                at_line_start = true;
            }
            b'\n' | b'\r' => {
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The envelope address inside `MAIL FROM:<…>` / `RCPT TO:<…>` (parameters after it ignored).
pub fn path_argument(arg: &str) -> Option<String> {
    let arg = arg.trim_start();
    let rest = arg.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_are_joined_and_pipelined_replies_split() {
        let mut r = ReplyReader::default();
        assert!(r.push(b"250-gw1 hello\r\n250-PIPELIN").unwrap().is_empty());
        let replies = r.push(b"ING\r\n250 8BITMIME\r\n354 go on\r\n").unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].code, 250);
        assert_eq!(replies[0].lines, ["gw1 hello", "PIPELINING", "8BITMIME"]);
        assert_eq!(replies[1].code, 354);
        assert_eq!(replies[1].first_line(), "go on");
    }

    #[test]
    fn a_bare_code_line_is_a_complete_reply() {
        let mut r = ReplyReader::default();
        let replies = r.push(b"221\n").unwrap();
        assert_eq!(replies[0].code, 221);
        assert!(replies[0].lines == [""]);
    }

    #[test]
    fn lines_that_are_not_smtp_replies_are_errors() {
        assert!(ReplyReader::default().push(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(ReplyReader::default().push(b"250-a\r\n251 b\r\n").is_err());
        assert!(ReplyReader::default().push(b"250x\r\n").is_err());
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_normalises_line_endings() {
        assert_eq!(
            dot_stuff(b"a\n.b\r\n..c\rd"),
            b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"x.y\r\n"), b"x.y\r\n.\r\n");
    }

    #[test]
    fn path_arguments_are_taken_from_the_angle_brackets() {
        assert_eq!(
            path_argument("<a@b.org> SIZE=10").as_deref(),
            Some("a@b.org")
        );
        assert_eq!(path_argument("<>").as_deref(), Some(""));
        assert_eq!(path_argument("a@b.org"), None);
    }

    #[test]
    fn line_buffer_keeps_the_unfinished_tail() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"ab\r\ncd"), vec![b"ab".to_vec()]);
        assert_eq!(b.push(b"\n"), vec![b"cd".to_vec()]);
    }
}

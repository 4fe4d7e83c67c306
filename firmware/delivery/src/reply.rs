//! Reading SMTP replies from the remote server.
//!
//! Remote servers are untrusted: a reply may be malformed, endless or mixed-up, and every such case
//! must end as an error value (and thus a deferral), never as a panic or unbounded memory use.

use std::fmt;

/// Longest reply line we accept. RFC 5321 allows 512 octets; real servers sometimes send more.
pub(crate) const MAX_LINE: usize = 8192;
/// Most lines in one reply; an EHLO reply has maybe 15.
pub(crate) const MAX_LINES: usize = 256;

/// A complete (possibly multi-line) reply from the remote server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteReply {
    pub(crate) code: u16,
    /// The text of each line, without the code and separator.
    pub(crate) lines: Vec<String>,
}

impl RemoteReply {
    pub(crate) fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub(crate) fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

impl fmt::Display for RemoteReply {
    /// `"550 5.1.1 no such user / try again"`: one line for logs and DSNs. Continuation lines lose a
    /// repeated enhanced code, which only adds noise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        let enhanced = self
            .lines
            .first()
            .and_then(|l| l.split(' ').next())
            .filter(|w| looks_enhanced(w));
        for (i, line) in self.lines.iter().enumerate() {
            let mut text = line.as_str();
            if i > 0 {
                f.write_str(" /")?;
                if let Some(code) = enhanced {
                    text = text.strip_prefix(code).map(str::trim_start).unwrap_or(text);
                }
            }
            if !text.is_empty() {
                write!(f, " {text}")?;
            }
        }
        Ok(())
    }
}

fn looks_enhanced(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Assembles a reply from lines as they arrive.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Feeds one line (without its line ending). Returns the reply once its last line arrived.
    pub(crate) fn push(&mut self, raw: &[u8]) -> Result<Option<RemoteReply>, String> {
        let line = String::from_utf8_lossy(raw);
        let shown = || printable(&line).chars().take(80).collect::<String>();
        if raw.len() < 3 || !raw[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!("malformed reply line \"{}\"", shown()));
        }
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| format!("malformed reply line \"{}\"", shown()))?;
        if !(200..600).contains(&code) {
            return Err(format!(
                "reply code {code} is out of range in \"{}\"",
                shown()
            ));
        }
        if let Some(first) = self.code
            && first != code
        {
            return Err(format!(
                "reply lines disagree on the code ({first} then {code})"
            ));
        }
        let last = match raw.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(format!("malformed reply line \"{}\"", shown())),
        };
        if self.lines.len() >= MAX_LINES {
            return Err(format!("reply has more than {MAX_LINES} lines"));
        }
        self.code = Some(code);
        self.lines.push(
            printable(line.get(4..).unwrap_or(""))
                .trim_end()
                .to_string(),
        );
        if last {
            Ok(Some(RemoteReply {
                code,
                lines: std::mem::take(&mut self.lines),
            }))
        } else {
            Ok(None)
        }
    }
}

/// Control characters from the remote side would corrupt our logs; show them as '?'.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Option<RemoteReply>, String> {
        let mut parser = ReplyParser::default();
        let mut out = None;
        for line in lines {
            out = parser.push(line.as_bytes())?;
        }
        Ok(out)
    }

    #[test]
    fn single_line_reply_is_complete() {
        let reply = parse(&["250 2.0.0 Ok: queued as 12345"]).unwrap().unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as 12345");
    }

    #[test]
    fn multi_line_reply_joins_lines_with_slash_and_drops_repeated_enhanced_code() {
        let mut parser = ReplyParser::default();
        assert_eq!(parser.push(b"550-5.1.1 no such user").unwrap(), None);
        let reply = parser
            .push(b"550 5.1.1 see https://example.com")
            .unwrap()
            .unwrap();
        assert_eq!(
            reply.to_string(),
            "550 5.1.1 no such user / see https://example.com"
        );
    }

    #[test]
    fn bare_code_without_text_is_a_complete_reply() {
        let reply = parse(&["250"]).unwrap().unwrap();
        assert_eq!(reply.to_string(), "250");
        assert!(reply.is_positive());
    }

    #[test]
    fn garbage_line_is_an_error_not_a_panic() {
        assert!(parse(&["hello"]).is_err());
        assert!(parse(&["25"]).is_err());
        assert!(parse(&["250x"]).is_err());
        assert!(parse(&["999 too high"]).is_err());
        assert!(parse(&["\u{e9}\u{e9}\u{e9}"]).is_err());
    }

    #[test]
    fn continuation_lines_with_a_different_code_are_an_error() {
        assert!(parse(&["250-first", "550 second"]).is_err());
    }

    #[test]
    fn control_characters_in_reply_text_are_masked() {
        let reply = parse(&["421 bye\u{1b}[31m"]).unwrap().unwrap();
        assert_eq!(reply.to_string(), "421 bye?[31m");
    }

    #[test]
    fn endless_multi_line_reply_is_cut_off() {
        let mut parser = ReplyParser::default();
        let mut result = Ok(None);
        for _ in 0..=MAX_LINES {
            result = parser.push(b"250-again");
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }
}

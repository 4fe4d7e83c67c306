//! SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes (RFC 2034).

use std::fmt;
use std::str::FromStr;

use crate::SmtpError;

/// An RFC 3463 enhanced status code such as `5.7.1`: class, subject and detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject, e.g. 1 for addressing, 7 for security or policy.
    pub subject: u16,
    /// The detail within the subject.
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds a code from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedCode {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedCode {
    type Err = SmtpError;

    /// Parses `class.subject.detail`; the class must be 2, 4 or 5 and the other parts at most three digits (RFC 3463 §2).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SmtpError::BadEnhancedCode(s.to_string());
        let mut parts = s.split('.');
        let (Some(class), Some(subject), Some(detail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let number = |p: &str| -> Result<u16, SmtpError> {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return Err(bad()),
        };
        Ok(EnhancedCode {
            class,
            subject: number(subject)?,
            detail: number(detail)?,
        })
    }
}

/// An SMTP reply: basic code, RFC 3463 enhanced code, one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit basic reply code (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code sent on every line; `None` only for the greeting and the EHLO/HELO answer,
    /// which RFC 2034 exempts, and for the 354 go-ahead.
    pub enhanced: Option<EnhancedCode>,
    /// The text lines; a reply always has at least one (possibly empty) line on the wire.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply, e.g. `Reply::new(550, "5.7.1", "relay access denied")`.
    ///
    /// Panics if `enhanced` is not a well-formed code: replies are written as literals, so that is a programming error.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        let enhanced = enhanced
            .parse::<EnhancedCode>()
            .unwrap_or_else(|_| panic!("malformed enhanced status code literal {enhanced:?}"));
        assert!(
            (200..600).contains(&code),
            "SMTP reply code {code} out of range"
        );
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code, for the greeting, the EHLO/HELO answer and 354.
    pub fn without_enhanced(code: u16, lines: Vec<String>) -> Reply {
        assert!(
            (200..600).contains(&code),
            "SMTP reply code {code} out of range"
        );
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// Adds another text line (multi-line replies such as HELP).
    pub fn with_line(mut self, text: impl Into<String>) -> Reply {
        self.lines.push(text.into());
        self
    }

    /// 2xx or 3xx: the command was accepted or the server waits for more.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// 4xx: a temporary failure, the client should try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: a permanent failure.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as sent on the wire, e.g. `"250-first\r\n250 2.0.0 last\r\n"`, with the enhanced code on every line.
    ///
    /// Control characters in the text (a handler's text could contain CR or LF) become spaces, so a reply can never
    /// inject extra lines into the protocol stream.
    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_wire(&mut out);
        String::from_utf8(out).expect("replies are written as UTF-8")
    }

    /// Appends the reply as it goes on the wire (see [`Reply::to_wire`]) to `out`, without
    /// building it in a string of its own first.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let separator = if i + 1 == lines.len() { ' ' } else { '-' };
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{}{separator}", self.code);
            if let Some(enhanced) = self.enhanced {
                let _ = write!(out, "{enhanced}");
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            let mut utf8 = [0; 4];
            for c in line.chars() {
                let c = if c.is_control() { ' ' } else { c };
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    /// `550 5.7.1 relay access denied`, several lines joined with `"; "`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        let text = self.lines.join("; ");
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_reply_carries_code_and_enhanced_code() {
        let reply = Reply::new(550, "5.7.1", "relay access denied");
        assert_eq!(reply.to_wire(), "550 5.7.1 relay access denied\r\n");
        assert_eq!(reply.to_string(), "550 5.7.1 relay access denied");
        assert!(reply.is_permanent() && !reply.is_transient() && !reply.is_positive());
    }

    #[test]
    fn multi_line_reply_repeats_enhanced_code_on_every_line() {
        let reply = Reply::new(250, "2.0.0", "first").with_line("last");
        assert_eq!(reply.to_wire(), "250-2.0.0 first\r\n250 2.0.0 last\r\n");
        assert_eq!(reply.to_string(), "250 2.0.0 first; last");
    }

    #[test]
    fn reply_text_cannot_inject_protocol_lines() {
        let reply = Reply::new(451, "4.3.0", "oops\r\n250 ok");
        assert_eq!(reply.to_wire(), "451 4.3.0 oops  250 ok\r\n");
        assert!(reply.is_transient());
    }

    #[test]
    fn greeting_style_reply_has_no_enhanced_code() {
        let reply = Reply::without_enhanced(220, vec!["mx.example ESMTP".into()]);
        assert_eq!(reply.to_wire(), "220 mx.example ESMTP\r\n");
    }

    #[test]
    fn enhanced_code_parses_and_displays() {
        let code: EnhancedCode = "4.7.0".parse().unwrap();
        assert_eq!(code, EnhancedCode::new(4, 7, 0));
        assert_eq!(code.to_string(), "4.7.0");
        assert!("3.1.1".parse::<EnhancedCode>().is_err());
        assert!("5.1".parse::<EnhancedCode>().is_err());
        assert!("5.1.1.1".parse::<EnhancedCode>().is_err());
        assert!("5.1000.1".parse::<EnhancedCode>().is_err());
    }

    #[test]
    #[should_panic(expected = "malformed enhanced status code")]
    fn malformed_enhanced_literal_panics() {
        let _ = Reply::new(550, "5.x.1", "nope");
    }
}

//! Small pieces of MIME writing shared by notifications and disclaimers: one-line header values, RFC 2047
//! encoded words, folding, and line-ending helpers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// RFC 5322 recommends lines of at most 78 characters; we fold there.
const FOLD_AT: usize = 78;
/// RFC 2047: an encoded word is at most 75 characters. With `=?UTF-8?B?` and `?=` around it, 60 base64
/// characters (45 bytes) fit.
const ENCODED_WORD_BYTES: usize = 45;
/// A word longer than this cannot be folded safely under the 998-octet line limit, so it is encoded instead.
const LONGEST_PLAIN_WORD: usize = 900;

/// Makes text safe for a header field: every run of control characters and Unicode line separators (CR, LF,
/// NEL, U+2028, U+2029, …) becomes one space, so a value taken from a message can never start a new field.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_break = false;
    for c in text.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            if !in_break {
                out.push(' ');
            }
            in_break = true;
        } else {
            out.push(c);
            in_break = false;
        }
    }
    out.trim().to_owned()
}

/// True when `value` must be written as encoded words: non-ASCII, text that a reader would mistake for an
/// encoded word, or a word too long to fold.
fn needs_encoding(value: &str) -> bool {
    !value.is_ascii()
        || value.contains("=?")
        || value.split(' ').any(|w| w.len() > LONGEST_PLAIN_WORD)
}

/// Splits UTF-8 text into RFC 2047 `B` encoded words, cutting only on character boundaries.
fn encoded_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut start = 0;
    while start < value.len() {
        let mut end = (start + ENCODED_WORD_BYTES).min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!(
            "=?UTF-8?B?{}?=",
            BASE64.encode(&value.as_bytes()[start..end])
        ));
        start = end;
    }
    words
}

/// One complete header field, `Name: value` folded and ending in CRLF. The value is made one line first;
/// non-ASCII text becomes RFC 2047 encoded words.
pub(crate) fn header_field(name: &str, value: &str) -> String {
    let value = one_line(value);
    let words: Vec<String> = if needs_encoding(&value) {
        encoded_words(&value)
    } else {
        value.split(' ').map(str::to_owned).collect()
    };
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    for word in words.iter().filter(|w| !w.is_empty()) {
        if line_len + 1 + word.len() > FOLD_AT && line_len > name.len() + 1 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
    out
}

/// A display name as a quoted string, or as encoded words when it is not ASCII.
pub(crate) fn display_name(name: &str) -> String {
    let name = one_line(name);
    if needs_encoding(&name) {
        encoded_words(&name).join(" ")
    } else {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

/// Turns every line break (CRLF, lone LF, lone CR) into CRLF.
pub(crate) fn to_crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_replaces_line_breaks_so_no_field_can_be_injected() {
        assert_eq!(
            one_line("Hello\r\nBcc: victim@example.com"),
            "Hello Bcc: victim@example.com"
        );
        assert_eq!(one_line("a\n\n\rb\u{2028}c\u{85}d"), "a b c d");
    }

    #[test]
    fn ascii_header_is_folded_at_spaces() {
        let field = header_field("Subject", &"word ".repeat(40));
        assert!(field.lines().all(|l| l.len() <= FOLD_AT), "{field}");
        assert!(field.ends_with("\r\n"));
        assert_eq!(field.matches("\r\n").count(), field.lines().count());
    }

    #[test]
    fn non_ascii_header_becomes_utf8_encoded_words_of_at_most_75_characters() {
        let field = header_field("Subject", &"Grüße aus Köln — ".repeat(6));
        assert!(field.is_ascii());
        for line in field.split("\r\n").filter(|l| !l.is_empty()) {
            for word in line.split(' ').filter(|w| w.starts_with("=?")) {
                assert!(word.len() <= 75, "{word}");
            }
        }
        let raw = format!("{field}\r\nbody");
        let parsed = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Grüße aus Köln — ".repeat(6).trim_end())
        );
    }

    #[test]
    fn text_that_looks_like_an_encoded_word_is_encoded() {
        assert!(
            header_field("Subject", "=?UTF-8?B?SGk=?=")
                .contains("=?UTF-8?B?PT9VVEYtOD9CP1NHaz0/PQ==?=")
        );
    }

    #[test]
    fn display_name_is_quoted_with_escapes() {
        assert_eq!(
            display_name(r#"Mail "Security" \ Team"#),
            r#""Mail \"Security\" \\ Team""#
        );
    }

    #[test]
    fn to_crlf_normalises_every_line_break() {
        assert_eq!(to_crlf("a\nb\r\nc\rd"), "a\r\nb\r\nc\r\nd");
    }
}

//! Rewriting a message's content for a verdict: tags (a header, a subject prefix) and stripped
//! attachments (replaced by a short text/plain note).
//!
//! Pure functions on bytes. Everything not touched is kept byte for byte, so signatures over
//! untouched parts and the rest of the MIME structure survive. Top-level parts are found with the
//! same numbering `portcullis-scan` uses for carriers (`body[N]` for inline text, `attachment[N]`
//! for every other leaf, in message order), so a verdict's carrier names the part removed here.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// What to change in a message before it is delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Header lines to add (`Name: value`, no CRLF).
    pub headers: Vec<String>,
    /// Prefixes for the Subject, applied in order.
    pub subject_prefixes: Vec<String>,
    /// Top-level parts to replace by a note: (carrier path, the note's text).
    pub strip: Vec<(String, String)>,
}

impl Changes {
    /// Whether the message stays as it is.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.subject_prefixes.is_empty() && self.strip.is_empty()
    }
}

/// Applies `changes` to a raw message (as spooled: CRLF line ends, our Received first).
pub fn apply(raw: &[u8], changes: &Changes) -> Vec<u8> {
    let stripped = if changes.strip.is_empty() {
        raw.to_vec()
    } else {
        strip_parts(raw, &changes.strip)
    };
    tag(&stripped, &changes.headers, &changes.subject_prefixes)
}

/// Makes a value safe for one header line: no CR/LF or other control characters, bounded.
pub fn header_value(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > 900 {
        clean.chars().take(897).chain("...".chars()).collect()
    } else {
        clean
    }
}

/// Whether the message's own header section has a field called `name` (case-insensitive).
pub fn has_header(raw: &[u8], name: &str) -> bool {
    let end = header_end(raw);
    header_fields(raw, end)
        .iter()
        .any(|&(a, b)| starts_with_name(&raw[a..b], name))
}

/// End of the header section: the index just after the empty line (or the message's length).
fn header_end(raw: &[u8]) -> usize {
    if raw.starts_with(b"\r\n") {
        return 2;
    }
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(raw.len())
}

/// The header section split into fields, each with its continuation lines (byte ranges).
fn header_fields(raw: &[u8], end: usize) -> Vec<(usize, usize)> {
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < end {
        let line_end = raw[pos..end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| pos + p + 2)
            .unwrap_or(end);
        if line_end - pos <= 2
            && raw[pos..line_end]
                .iter()
                .all(|b| *b == b'\r' || *b == b'\n')
        {
            break;
        }
        match (raw[pos], fields.last_mut()) {
            (b' ' | b'\t', Some(last)) => last.1 = line_end,
            _ => fields.push((pos, line_end)),
        }
        pos = line_end;
    }
    fields
}

fn tag(raw: &[u8], headers: &[String], prefixes: &[String]) -> Vec<u8> {
    if headers.is_empty() && prefixes.is_empty() {
        return raw.to_vec();
    }
    let end = header_end(raw);
    let fields = header_fields(raw, end);
    // New fields go after our own Received (the first field), keeping it the topmost trace.
    let insert_at = fields
        .first()
        .filter(|f| starts_with_name(&raw[f.0..f.1], "received"))
        .map(|f| f.1)
        .unwrap_or(0);
    let subject = fields
        .iter()
        .find(|f| starts_with_name(&raw[f.0..f.1], "subject"))
        .copied();
    let mut out = Vec::with_capacity(raw.len() + 256);
    let mut added = String::new();
    for h in headers {
        added.push_str(h);
        added.push_str("\r\n");
    }
    let prefix: String = prefixes
        .iter()
        .map(|p| format!("{} ", header_value(p)))
        .collect();
    if subject.is_none() && !prefix.is_empty() {
        added.push_str(&format!("Subject: {}\r\n", prefix.trim_end()));
    }
    let mut pos = 0;
    let mut edits: Vec<(usize, usize, Vec<u8>)> = vec![(insert_at, insert_at, added.into_bytes())];
    if let Some((start, _)) = subject
        && !prefix.is_empty()
    {
        let colon = raw[start..]
            .iter()
            .position(|b| *b == b':')
            .map(|p| start + p + 1)
            .unwrap_or(start);
        let value_start = colon
            + raw[colon..]
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count();
        edits.push((value_start, value_start, prefix.into_bytes()));
    }
    edits.sort_by_key(|e| e.0);
    for (from, to, bytes) in edits {
        out.extend_from_slice(&raw[pos..from]);
        out.extend_from_slice(&bytes);
        pos = to;
    }
    out.extend_from_slice(&raw[pos..]);
    out
}

fn starts_with_name(field: &[u8], name: &str) -> bool {
    field.len() > name.len()
        && field[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && field[name.len()..].trim_ascii_start().starts_with(b":")
}

/// Which top-level leaf a carrier path names: (is it a body, its number).
fn carrier_slot(carrier: &str) -> Option<(bool, u32)> {
    let segment = carrier.strip_prefix("message/")?;
    let (kind, rest) = segment.split_once('[')?;
    let n: u32 = rest.split_once(']')?.0.parse().ok()?;
    match kind {
        "body" => Some((true, n)),
        "attachment" => Some((false, n)),
        _ => None,
    }
}

/// The note that replaces a removed part.
fn note_part(note: &str) -> String {
    format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: inline\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        note.replace('\r', "").replace('\n', "\r\n")
    )
}

fn strip_parts(raw: &[u8], strip: &[(String, String)]) -> Vec<u8> {
    let wanted: Vec<((bool, u32), &str)> = strip
        .iter()
        .filter_map(|(c, note)| carrier_slot(c).map(|s| (s, note.as_str())))
        .collect();
    let Some(message) = MessageParser::new()
        .with_mime_headers()
        .with_address_headers()
        .with_date_headers()
        .with_message_ids()
        .default_header_text()
        .parse(raw)
    else {
        return raw.to_vec();
    };
    let (mut bodies, mut attachments) = (0u32, 0u32);
    // (start, end, replacement) of each part to replace, in message order.
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for (id, part) in message.parts.iter().enumerate() {
        if matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let id32 = id as u32;
        let is_body = message.text_body.contains(&id32) || message.html_body.contains(&id32);
        let slot = if is_body && part.attachment_name().is_none() {
            bodies += 1;
            (true, bodies)
        } else {
            attachments += 1;
            (false, attachments)
        };
        let Some((_, note)) = wanted.iter().find(|(s, _)| *s == slot) else {
            continue;
        };
        if id == 0 {
            // The message is this one part: keep its headers except the Content-* ones.
            let end = header_end(raw);
            let mut out = Vec::new();
            for (a, b) in header_fields(raw, end) {
                if !raw[a..b].to_ascii_lowercase().starts_with(b"content-") {
                    out.extend_from_slice(&raw[a..b]);
                }
            }
            out.extend_from_slice(note_part(note).as_bytes());
            out.extend_from_slice(b"\r\n");
            return out;
        }
        edits.push((
            part.offset_header as usize,
            part.offset_end as usize,
            note_part(note).into_bytes(),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut pos = 0;
    for (from, to, bytes) in edits {
        if from < pos || to > raw.len() || from > to {
            continue;
        }
        out.extend_from_slice(&raw[pos..from]);
        out.extend_from_slice(&bytes);
        pos = to;
    }
    out.extend_from_slice(&raw[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &str = "Received: from x\r\n\tby y; now\r\nFrom: a@example.com\r\nSubject: Hello\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nkeep me\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"bad.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b1--\r\n";

    #[test]
    fn tag_adds_header_after_received_and_prefixes_subject() {
        let out = apply(
            MAIL.as_bytes(),
            &Changes {
                headers: vec!["X-Portcullis-Verdict: tag".into()],
                subject_prefixes: vec!["[SPAM]".into()],
                strip: vec![],
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "Received: from x\r\n\tby y; now\r\nX-Portcullis-Verdict: tag\r\nFrom:"
            ),
            "{text}"
        );
        assert!(text.contains("\r\nSubject: [SPAM] Hello\r\n"), "{text}");
        assert!(text.ends_with("--b1--\r\n"));
    }

    #[test]
    fn has_header_looks_only_at_the_message_header() {
        assert!(has_header(MAIL.as_bytes(), "subject"));
        assert!(!has_header(MAIL.as_bytes(), "Content-Disposition"));
        assert!(!has_header(
            b"From: a@b\r\n\r\nX-Marker: in the body\r\n",
            "X-Marker"
        ));
    }

    #[test]
    fn subject_prefix_without_subject_adds_one() {
        let out = apply(
            b"From: a@b\r\n\r\nbody\r\n",
            &Changes {
                subject_prefixes: vec!["[X]".into()],
                ..Default::default()
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Subject: [X]\r\nFrom: a@b\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn strip_replaces_the_named_attachment_by_a_note_and_keeps_the_rest() {
        let out = apply(
            MAIL.as_bytes(),
            &Changes {
                strip: vec![(
                    "message/attachment[1] \"bad.exe\"".into(),
                    "removed: bad.exe".into(),
                )],
                ..Default::default()
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("TVqQ") && !text.contains("bad.exe\""),
            "{text}"
        );
        assert!(
            text.contains("keep me") && text.contains("removed: bad.exe"),
            "{text}"
        );
        assert!(text.contains("\r\n--b1--\r\n"), "{text}");
        let parsed = portcullis_scan::decompose(text.as_bytes(), &Default::default());
        assert_eq!(
            parsed.parts.len(),
            2,
            "{:?}",
            parsed
                .parts
                .iter()
                .map(|p| p.path.to_string())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn strip_of_a_single_part_message_keeps_its_other_headers() {
        let raw = b"From: a@b\r\nSubject: s\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=x.exe\r\n\r\nMZ....\r\n";
        let out = apply(
            raw,
            &Changes {
                strip: vec![("message/attachment[1] \"x.exe\"".into(), "gone".into())],
                ..Default::default()
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("From: a@b\r\nSubject: s\r\nContent-Type: text/plain"),
            "{text}"
        );
        assert!(!text.contains("MZ...."), "{text}");
    }
}

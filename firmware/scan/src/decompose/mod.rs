//! One pass over a message: MIME parts, attached messages and containers, all under [`Limits`].

pub(crate) mod arj;
pub(crate) mod binhex;
pub(crate) mod chm;
mod containers;
pub(crate) mod cpio;
mod datauri;
mod installer;
mod ole;
mod pdf;
mod rtf;
pub(crate) mod sis;
pub(crate) mod szdd;
pub(crate) mod tnef;
mod uu;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use bytes::Bytes;
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::html::html_to_text;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{
    Encoding, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use crate::filetype::FileType;
use crate::finding::{Finding, LimitHit};
use crate::limits::Limits;
use crate::part::{Decomposition, Part, PartPath, PartRole};

use containers::Budget;

/// Takes a raw RFC 5322 message apart. Never fails and never panics: what cannot be inspected is reported in
/// [`Decomposition::findings`], and a message without headers becomes a single body part.
pub fn decompose(raw: &[u8], limits: &Limits) -> Decomposition {
    let started = Instant::now();
    let mut walker = Walker {
        limits,
        budget: Budget::new(limits, started),
        out: Decomposition::default(),
        halted: false,
    };
    // mail-parser can panic on crafted structures (found by fuzzing: a multipart nested in
    // itself with a garbled boundary). A parser panic must cost only the inspection of this
    // message: it becomes one damaged body part, never a crashed scan.
    // Text that follows the header fields without the blank line (RFC 5322 requires one) is
    // the body, as Python's email package and most mail readers take it; mail-parser would drop
    // it from every part, and nothing in it would be scanned.
    let separated = with_header_separator(raw);
    let raw: &[u8] = separated.as_deref().unwrap_or(raw);
    let parsed = catch_unwind(AssertUnwindSafe(|| message_parser().parse(raw)));
    match parsed {
        Ok(Some(message)) => {
            let walked = catch_unwind(AssertUnwindSafe(|| {
                walker.out.subject = message
                    .subject()
                    .map(|s| cap_text(s.to_owned(), limits.max_text_bytes));
                walker.out.header_text = cap_text(header_text(&message), limits.max_text_bytes);
                walker.walk_message(&message, &PartPath::message(), 0, None, true);
                drop_flat(message);
            }));
            if walked.is_err() {
                walker.out.findings.push(Finding::Damaged {
                    path: PartPath::message(),
                    reason: "the MIME parser failed on this message's structure".into(),
                });
            }
        }
        Ok(None) => walker.add_part(raw_body_part(raw)),
        Err(_) => {
            walker.out.findings.push(Finding::Damaged {
                path: PartPath::message(),
                reason: "the MIME parser failed on this message's structure".into(),
            });
            walker.add_part(raw_body_part(raw));
        }
    }
    let out = walker.out;
    tracing::debug!(
        parts = out.parts.len(),
        findings = out.findings.len(),
        unscannable = out.is_unscannable(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "message decomposed"
    );
    out
}

/// The whole raw message as one body part, for messages the MIME parser cannot take apart.
fn raw_body_part(raw: &[u8]) -> PartSpec {
    let path = PartPath::message().child("body[1]");
    PartSpec {
        carrier: path.clone(),
        path,
        file_name: None,
        declared_type: None,
        bytes: Bytes::copy_from_slice(raw),
        depth: 0,
        role: PartRole::Body,
        text: None,
    }
}

/// The message with a blank line put in front of the first line of the header section that is
/// neither a header field nor its continuation, or `None` when the header section is well formed.
/// A message whose first line is no header field is all body (a leading mbox `From ` line aside).
fn with_header_separator(raw: &[u8]) -> Option<Vec<u8>> {
    let mut offset = 0;
    let mut first = true;
    while offset < raw.len() {
        let end = raw[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| offset + i + 1);
        let line = &raw[offset..end];
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if content.is_empty() {
            return None;
        }
        let continuation = matches!(content[0], b' ' | b'\t') && !first;
        let unix_from = first && content.starts_with(b"From ");
        if !continuation && !unix_from && !is_header_field(content) {
            let newline: &[u8] = if line.ends_with(b"\r\n") {
                b"\r\n"
            } else {
                b"\n"
            };
            let mut fixed = Vec::with_capacity(raw.len() + 2);
            fixed.extend_from_slice(&raw[..offset]);
            fixed.extend_from_slice(newline);
            fixed.extend_from_slice(&raw[offset..]);
            return Some(fixed);
        }
        first = false;
        offset = end;
    }
    None
}

/// Whether `bytes` starts like an RFC 5322 message: header fields (an mbox `From ` line may
/// come first) up to a blank line, among them at least two that every mail has.
fn looks_like_mail(bytes: &[u8]) -> bool {
    const MAIL_FIELDS: &[&str] = &[
        "from",
        "to",
        "subject",
        "date",
        "received",
        "return-path",
        "message-id",
        "mime-version",
        "content-type",
    ];
    let mut known = 0;
    for (n, line) in bytes.split(|&b| b == b'\n').take(500).enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return n > 0 && known >= 2;
        }
        if n == 0 && line.starts_with(b"From ") {
            continue;
        }
        if n > 0 && matches!(line[0], b' ' | b'\t') {
            continue;
        }
        if !is_header_field(line) {
            return false;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        let name = String::from_utf8_lossy(name.trim_ascii()).to_ascii_lowercase();
        if MAIL_FIELDS.contains(&name.as_str()) {
            known += 1;
        }
    }
    false
}

/// `name:` with a field name of printable ASCII (RFC 5322 section 3.6.8), optionally followed
/// by white space before the colon, as lenient parsers accept.
fn is_header_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = line[..colon].trim_ascii_end();
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))
}

/// The parser with every header field we read decoded (RFC 2047 words, addresses, MIME parameters).
fn message_parser() -> MessageParser {
    MessageParser::new()
        .with_mime_headers()
        .with_address_headers()
        .with_date_headers()
        .with_message_ids()
        .default_header_text()
}

/// Why a file format parser gave up on its input: a fixed description for the finding.
#[derive(Debug, PartialEq, Eq)]
struct Malformed(&'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Everything about a part except what is detected from its bytes.
struct PartSpec {
    path: PartPath,
    carrier: PartPath,
    file_name: Option<String>,
    declared_type: Option<String>,
    bytes: Bytes,
    depth: u32,
    role: PartRole,
    text: Option<String>,
}

/// The state of one decomposition: the output so far and what is left of the budget.
struct Walker<'l> {
    limits: &'l Limits,
    budget: Budget<'l>,
    out: Decomposition,
    /// Set once a message-wide limit (files, bytes, time) is hit: nothing more is added after that.
    halted: bool,
}

impl Walker<'_> {
    fn walk_message(
        &mut self,
        message: &Message<'_>,
        base: &PartPath,
        depth: u32,
        carrier: Option<&PartPath>,
        top: bool,
    ) {
        let raw = message.raw_message();
        let (mut bodies, mut attachments) = (0u32, 0u32);
        for (id, part) in message.parts.iter().enumerate() {
            if self.halted {
                return;
            }
            if matches!(part.body, PartType::Multipart(_)) {
                continue;
            }
            let id = id as u32;
            let is_body = message.text_body.contains(&id) || message.html_body.contains(&id);
            let file_name = part.attachment_name().map(sanitize_name);
            let segment = if is_body && file_name.is_none() {
                bodies += 1;
                format!("body[{bodies}]")
            } else {
                attachments += 1;
                match &file_name {
                    Some(name) => format!("attachment[{attachments}] \"{name}\""),
                    None => format!("attachment[{attachments}]"),
                }
            };
            let path = base.child(&segment);
            let carrier = carrier.cloned().unwrap_or_else(|| path.clone());
            let role = if top && is_body && file_name.is_none() {
                PartRole::Body
            } else {
                PartRole::Attachment
            };
            let declared_type = part.content_type().map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
                None => ct.ctype().to_ascii_lowercase(),
            });
            let bytes = transfer_decoded(part, raw);
            let text = match &part.body {
                PartType::Text(text) => Some(text.to_string()),
                PartType::Html(html) => Some(html_to_text(html)),
                _ => None,
            };
            let is_message = declared_type
                .as_deref()
                .is_some_and(|t| t.starts_with("message/rfc822") || t == "message/global");
            let spec = PartSpec {
                path: path.clone(),
                carrier: carrier.clone(),
                file_name,
                declared_type,
                bytes: bytes.clone(),
                depth,
                role,
                text: if is_message { None } else { text },
            };
            if !self.add_part_inner(
                spec,
                !is_message && !matches!(part.body, PartType::Message(_)),
            ) {
                continue;
            }
            // An attached message is a container: its own parts follow it one level deeper. mail-parser stops
            // parsing encoded attached messages after a few levels, so those are parsed here under our own limit.
            let parsed_here = match &part.body {
                PartType::Message(_) => None,
                _ if is_message => message_parser().parse(&bytes[..]),
                _ => None,
            };
            let nested = match &part.body {
                PartType::Message(nested) => Some(nested),
                _ => parsed_here.as_ref(),
            };
            if let Some(nested) = nested
                && !self.too_deep(depth, &path)
            {
                self.walk_message(nested, &path, depth + 1, Some(&carrier), false);
            }
            if let Some(parsed) = parsed_here {
                drop_flat(parsed);
            }
        }
    }

    /// Whether opening what sits at `path` (at `depth`) would nest deeper than `max_depth`; if so
    /// the limit is reported for `path`.
    fn too_deep(&mut self, depth: u32, path: &PartPath) -> bool {
        let deeper = depth + 1 > self.limits.max_depth;
        if deeper {
            self.finding(Finding::LimitExceeded {
                limit: LimitHit::Depth {
                    limit: self.limits.max_depth,
                },
                path: path.clone(),
            });
        }
        deeper
    }

    fn add_part(&mut self, spec: PartSpec) {
        self.add_part_inner(spec, true);
    }

    /// Adds the part and, if `open` and it is a container, its members. Returns false if nothing was added
    /// because a message-wide limit stopped the walk.
    fn add_part_inner(&mut self, spec: PartSpec, open: bool) -> bool {
        if self.halted {
            return false;
        }
        if let Some(limit) = self.budget.count_file() {
            self.halt(limit, spec.path);
            return false;
        }
        let true_type = FileType::detect(&spec.bytes);
        let text = spec
            .text
            .or_else(|| text_of(true_type, &spec.bytes))
            .map(|t| cap_text(t, self.limits.max_text_bytes));
        let part = Part {
            path: spec.path,
            carrier: spec.carrier,
            file_name: spec.file_name,
            declared_type: spec.declared_type,
            true_type,
            bytes: spec.bytes,
            depth: spec.depth,
            role: spec.role,
            text,
        };
        tracing::trace!(path = %part.path, true_type = %part.true_type, size = part.size(), "part");
        let (path, carrier, bytes, depth, name) = (
            part.path.clone(),
            part.carrier.clone(),
            part.bytes.clone(),
            part.depth,
            part.file_name.clone(),
        );
        self.out.parts.push(part);
        if !open {
            return true;
        }
        // uuencoded files (x-uuencode parts, or inline in a text body) are members of the part.
        let uuencoded = matches!(true_type, FileType::Text)
            && memchr::memmem::find(&bytes, b"begin ").is_some();
        if uuencoded {
            if self.too_deep(depth, &path) {
                return true;
            }
            for file in uu::find(&bytes, self.limits.max_files as usize) {
                if self.halted {
                    break;
                }
                let name = sanitize_name(&file.name);
                self.add_part_inner(
                    PartSpec {
                        path: path.child(&format!("uuencoded \"{name}\"")),
                        carrier: carrier.clone(),
                        file_name: Some(name),
                        declared_type: None,
                        bytes: Bytes::from(file.bytes),
                        depth: depth + 1,
                        role: PartRole::Member,
                        text: None,
                    },
                    true,
                );
            }
        }
        // A message that is not declared as one (an archive member, an octet-stream attachment, a
        // saved .eml): recognised by its header fields and walked like an attached message.
        if !uuencoded && matches!(true_type, FileType::Text) && looks_like_mail(&bytes) {
            if self.too_deep(depth, &path) {
                return true;
            }
            let input = with_header_separator(&bytes);
            let input: &[u8] = input.as_deref().unwrap_or(&bytes);
            // As at the top: a parser panic costs only this part's inner structure.
            let walked = catch_unwind(AssertUnwindSafe(|| {
                if let Some(nested) = message_parser().parse(input) {
                    self.walk_message(&nested, &path, depth + 1, Some(&carrier), false);
                    drop_flat(nested);
                }
            }));
            if walked.is_err() {
                self.finding(Finding::Damaged {
                    path,
                    reason: "the MIME parser failed on this message's structure".into(),
                });
            }
            return true;
        }
        // Files in base64 data: URIs (HTML links and images, or text) are members of the part.
        if matches!(true_type, FileType::Text | FileType::Html) && datauri::may_contain(&bytes) {
            if self.too_deep(depth, &path) {
                return true;
            }
            let opened = containers::open_data_uris(&bytes, &path, &mut self.budget);
            self.add_members(opened, &path, &carrier, depth);
            return true;
        }
        if true_type.is_unopened_container() {
            self.finding(Finding::NotOpened {
                path,
                format: true_type,
            });
        } else if true_type.is_opened_container() && containers::worth_opening(true_type, &bytes) {
            if self.too_deep(depth, &path) {
                return true;
            }
            let opened =
                containers::open(true_type, &bytes, &path, name.as_deref(), &mut self.budget);
            self.add_members(opened, &path, &carrier, depth);
        }
        true
    }

    /// Adds what opening the container at `path` (at `depth`) produced: its findings, then its
    /// members one level deeper, each opened in turn.
    fn add_members(
        &mut self,
        opened: containers::Opened,
        path: &PartPath,
        carrier: &PartPath,
        depth: u32,
    ) {
        for finding in opened.findings {
            self.finding(finding);
        }
        for member in opened.members {
            if self.halted {
                break;
            }
            let file_name = member_file_name(&member.name);
            self.add_part_inner(
                PartSpec {
                    path: path.child(&member.name),
                    carrier: carrier.clone(),
                    file_name,
                    declared_type: None,
                    bytes: member.bytes,
                    depth: depth + 1,
                    role: PartRole::Member,
                    text: None,
                },
                true,
            );
        }
        if let Some((limit, at)) = opened.halt {
            self.halt(limit, at);
        }
    }

    fn finding(&mut self, finding: Finding) {
        tracing::info!(path = %finding.path(), finding = %finding, "decomposition finding");
        self.out.findings.push(finding);
    }

    fn halt(&mut self, limit: LimitHit, path: PartPath) {
        if !self.halted {
            self.halted = true;
            self.finding(Finding::LimitExceeded { limit, path });
        }
    }
}

/// Drops a parsed message without recursion. A hostile message can nest hundreds of thousands of attached
/// messages; mail-parser parses them iteratively, but the default (recursive) drop would overflow the stack.
fn drop_flat(message: Message<'_>) {
    let mut pending = vec![message];
    while let Some(mut message) = pending.pop() {
        for part in &mut message.parts {
            if matches!(part.body, PartType::Message(_))
                && let PartType::Message(nested) = std::mem::take(&mut part.body)
            {
                pending.push(nested);
            }
        }
    }
}

/// The part's bytes with only the transfer encoding removed (no charset conversion), so that an executable
/// declared as text/plain keeps its real bytes. Falls back to what mail-parser decoded.
fn transfer_decoded(part: &MessagePart<'_>, raw: &[u8]) -> Bytes {
    let encoded = raw.get(part.offset_body as usize..part.offset_end as usize);
    let decoded = match (part.encoding, encoded, &part.body) {
        (_, _, PartType::Binary(b) | PartType::InlineBinary(b)) => {
            return Bytes::copy_from_slice(b);
        }
        (Encoding::Base64, Some(encoded), _) => base64_decode(encoded),
        (Encoding::QuotedPrintable, Some(encoded), _) => quoted_printable_decode(encoded),
        (Encoding::None, Some(encoded), PartType::Text(_) | PartType::Html(_)) => {
            Some(encoded.to_vec())
        }
        _ => None,
    };
    match decoded {
        Some(bytes) => Bytes::from(bytes),
        None => Bytes::copy_from_slice(part.contents()),
    }
}

/// Text of a part that mail-parser did not treat as text (archive members, octet-stream attachments).
fn text_of(true_type: FileType, bytes: &[u8]) -> Option<String> {
    match true_type {
        FileType::Text | FileType::Script | FileType::Rtf => {
            Some(String::from_utf8_lossy(bytes).into_owned())
        }
        FileType::Html => Some(html_to_text(&String::from_utf8_lossy(bytes))),
        _ => None,
    }
}

/// Cuts text to at most `max` bytes on a character boundary.
fn cap_text(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Makes a name from a message or an archive safe to show and log: no control characters, bounded length.
fn sanitize_name(name: &str) -> String {
    name.chars()
        .take(255)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The last component of a member path (archives use `/`, some Windows tools `\`).
fn member_file_name(member: &str) -> Option<String> {
    member
        .rsplit(['/', '\\'])
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The top-level header fields as `Name: value` lines, decoded, for content rules on headers.
fn header_text(message: &Message<'_>) -> String {
    let raw = message.raw_message();
    let mut out = String::new();
    for header in message.headers() {
        out.push_str(header.name());
        out.push_str(": ");
        match header.value() {
            HeaderValue::Text(text) => out.push_str(text),
            HeaderValue::TextList(list) => out.push_str(&list.join(", ")),
            HeaderValue::Address(address) => {
                let rendered: Vec<String> = address
                    .iter()
                    .map(|a| match (a.name(), a.address()) {
                        (Some(name), Some(addr)) => format!("{name} <{addr}>"),
                        (None, Some(addr)) => addr.to_owned(),
                        (Some(name), None) => name.to_owned(),
                        (None, None) => String::new(),
                    })
                    .collect();
                out.push_str(&rendered.join(", "));
            }
            HeaderValue::DateTime(date) => out.push_str(&date.to_rfc822()),
            _ => {
                let value = raw
                    .get(header.offset_start as usize..header.offset_end as usize)
                    .unwrap_or_default();
                out.push_str(String::from_utf8_lossy(value).trim());
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;

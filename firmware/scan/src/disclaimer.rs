//! Disclaimers on outbound mail: a short text added to the readable body of messages that internal senders
//! send to other domains.
//!
//! [`Disclaimer::apply`] is pure: raw message and envelope in, a [`DisclaimerOutcome`] out. It changes only the
//! text parts it adds to (their body and, when needed, their `Content-Type` charset or
//! `Content-Transfer-Encoding`); every other byte of the message stays as it was. Signed and encrypted messages
//! are never touched, since any change would break them.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use encoding_rs::Encoding;
use mail_parser::{MessageParser, MessagePart, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};

use crate::error::DisclaimerError;

/// The longest disclaimer accepted, in characters.
pub const MAX_DISCLAIMER_CHARS: usize = 1000;

/// RFC 5322: lines are at most 998 octets; 7bit and 8bit bodies must respect it.
const MAX_LINE_OCTETS: usize = 998;
/// Base64 bodies are written in lines of 76 characters (RFC 2045).
const BASE64_LINE: usize = 76;

/// Disclaimer settings as configured. An empty text means no disclaimer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DisclaimerConfig {
    /// The text (plain, at most 1,000 characters, line breaks allowed); added as is to text parts and
    /// HTML-escaped to HTML parts.
    pub text: String,
}

impl DisclaimerConfig {
    /// Checks the text for config load; `None` when no disclaimer is configured.
    pub fn compile(&self) -> Result<Option<Disclaimer>, DisclaimerError> {
        if self.text.trim().is_empty() {
            Ok(None)
        } else {
            Disclaimer::new(&self.text).map(Some)
        }
    }
}

/// A checked disclaimer text, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclaimer {
    /// Lines without trailing blanks (a trailing blank would join lines in `format=flowed` text).
    lines: Vec<String>,
}

/// A list of the domains that count as internal (case-insensitive, exact match, trailing dot ignored).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InternalDomains(Vec<String>);

impl InternalDomains {
    /// The list.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(domains: I) -> InternalDomains {
        InternalDomains(
            domains
                .into_iter()
                .map(|d| normalise_domain(d.as_ref()))
                .collect(),
        )
    }

    /// True when `domain` is on the list.
    pub fn contains(&self, domain: &str) -> bool {
        let domain = normalise_domain(domain);
        self.0.contains(&domain)
    }
}

fn normalise_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Which kind of text part was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    /// text/plain.
    Plain,
    /// text/html.
    Html,
}

/// One text part that got the disclaimer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclaimerEdit {
    /// The MIME section (IMAP numbering: `1`, `1.2`).
    pub section: String,
    /// Plain or HTML.
    pub kind: TextKind,
    /// The charset of the part after the change.
    pub charset: String,
    /// Set when the charset could not represent the disclaimer and the part was converted (from this charset) to
    /// UTF-8.
    pub charset_was: Option<String>,
    /// The Content-Transfer-Encoding after the change.
    pub encoding: String,
    /// Set when the encoding had to change (7bit cannot carry 8-bit text; no 7bit or 8bit line may exceed 998
    /// octets): the encoding before.
    pub encoding_was: Option<String>,
}

/// A text part that would have got the disclaimer but could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPart {
    /// The MIME section.
    pub section: String,
    /// Why, for the tracking record.
    pub reason: String,
}

/// Why a message was left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdded {
    /// The envelope sender is null: bounces and notifications get no disclaimer.
    #[error("the envelope sender is null")]
    NullSender,
    /// The sender is not in an internal domain: the message is inbound (or relayed for someone else).
    #[error("the sender's domain is not internal (inbound mail)")]
    Inbound,
    /// Every recipient is internal.
    #[error("no recipient is outside the internal domains")]
    NoExternalRecipient,
    /// The message is signed (S/MIME, PGP/MIME or inline PGP); changing it would break the signature.
    #[error("the message is signed ({0}); a disclaimer would break the signature")]
    Signed(String),
    /// The message is encrypted; its text cannot be reached.
    #[error("the message is encrypted ({0})")]
    Encrypted(String),
    /// The message carries a DKIM signature over its body, which a change would break.
    #[error("the message is DKIM-signed; a disclaimer would break the signature")]
    DkimSigned,
    /// The message could not be parsed as MIME.
    #[error("the message could not be parsed")]
    Unparseable,
    /// The message has no inline text/plain or text/html body (only attachments, or an attached message).
    #[error("the message has no text body")]
    NoTextBody,
    /// Every candidate text part had to be skipped.
    #[error("no text part could take the disclaimer: {}", describe_skipped(.0))]
    NoUsablePart(Vec<SkippedPart>),
}

fn describe_skipped(skipped: &[SkippedPart]) -> String {
    skipped
        .iter()
        .map(|s| format!("part {}: {}", s.section, s.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What [`Disclaimer::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisclaimerOutcome {
    /// The disclaimer was added.
    Added {
        /// The new message.
        message: Vec<u8>,
        /// The parts that got it.
        edits: Vec<DisclaimerEdit>,
        /// Candidate parts that were left alone, with why.
        skipped: Vec<SkippedPart>,
    },
    /// The message is unchanged, and why.
    Untouched(NotAdded),
}

/// The message with the disclaimer, what was changed, and the parts left alone.
type Applied = (Vec<u8>, Vec<DisclaimerEdit>, Vec<SkippedPart>);

impl Disclaimer {
    /// Checks the text: at most [`MAX_DISCLAIMER_CHARS`] characters, no control characters but line breaks and
    /// tabs.
    pub fn new(text: &str) -> Result<Disclaimer, DisclaimerError> {
        let chars = text.chars().count();
        if chars > MAX_DISCLAIMER_CHARS {
            return Err(DisclaimerError::TooLong {
                chars,
                max: MAX_DISCLAIMER_CHARS,
            });
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t'))
        {
            return Err(DisclaimerError::ControlCharacter { code: u32::from(c) });
        }
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let lines = text
            .trim_matches('\n')
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect();
        Ok(Disclaimer { lines })
    }

    /// The text, lines joined with LF.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Adds the disclaimer when the message goes out: the sender's domain is internal and at least one recipient's
    /// is not (`is_internal` answers for a domain). Text goes at the end of text/plain bodies and inside the
    /// `<body>` of text/html ones, in the body of a single-part message, both alternatives of
    /// multipart/alternative, and the first part of multipart/mixed or related, at any depth; attachments and
    /// attached messages are never changed.
    pub fn apply(
        &self,
        raw: &[u8],
        envelope_sender: &str,
        envelope_recipients: &[String],
        is_internal: &dyn Fn(&str) -> bool,
    ) -> DisclaimerOutcome {
        match self.try_apply(raw, envelope_sender, envelope_recipients, is_internal) {
            Ok((message, edits, skipped)) => DisclaimerOutcome::Added {
                message,
                edits,
                skipped,
            },
            Err(why) => DisclaimerOutcome::Untouched(why),
        }
    }

    fn try_apply(
        &self,
        raw: &[u8],
        sender: &str,
        recipients: &[String],
        is_internal: &dyn Fn(&str) -> bool,
    ) -> Result<Applied, NotAdded> {
        let sender_domain = domain_of(sender).ok_or(NotAdded::NullSender)?;
        if !is_internal(&sender_domain) {
            return Err(NotAdded::Inbound);
        }
        if !recipients
            .iter()
            .any(|r| domain_of(r).is_some_and(|d| !is_internal(&d)))
        {
            return Err(NotAdded::NoExternalRecipient);
        }
        let message = MessageParser::default()
            .parse(raw)
            .ok_or(NotAdded::Unparseable)?;
        if message
            .headers_raw()
            .any(|(name, _)| name.eq_ignore_ascii_case("DKIM-Signature"))
        {
            return Err(NotAdded::DkimSigned);
        }
        for part in &message.parts {
            refuse_if_protected(part)?;
        }
        let mut targets = Vec::new();
        collect_targets(&message.parts, 0, String::new(), &mut targets);
        if targets.is_empty() {
            return Err(NotAdded::NoTextBody);
        }
        let line_end: &[u8] = if raw.windows(2).any(|w| w == b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };
        let mut replacements: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
        let mut edits = Vec::new();
        let mut skipped = Vec::new();
        for (id, section) in targets {
            let part = &message.parts[id];
            match self.rewrite_part(raw, part, id == 0, line_end) {
                Ok((range, bytes, mut edit)) => {
                    edit.section = section;
                    replacements.push((range, bytes));
                    edits.push(edit);
                }
                Err(PartProblem::Protected(why)) => return Err(why),
                Err(PartProblem::Skip(reason)) => skipped.push(SkippedPart { section, reason }),
            }
        }
        if edits.is_empty() {
            return Err(NotAdded::NoUsablePart(skipped));
        }
        replacements.sort_by_key(|(range, _)| range.start);
        let mut out = Vec::with_capacity(raw.len() + 4096);
        let mut at = 0;
        for (range, bytes) in replacements {
            out.extend_from_slice(&raw[at..range.start]);
            out.extend_from_slice(&bytes);
            at = range.end;
        }
        out.extend_from_slice(&raw[at..]);
        Ok((out, edits, skipped))
    }

    /// The new header and body of one text part, replacing `offset_header..offset_end`.
    fn rewrite_part(
        &self,
        raw: &[u8],
        part: &MessagePart<'_>,
        is_root: bool,
        message_line_end: &[u8],
    ) -> Result<(Range<usize>, Vec<u8>, DisclaimerEdit), PartProblem> {
        let (header_start, body_start, body_end) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        if part.is_encoding_problem
            || header_start > body_start
            || body_start > body_end
            || body_end > raw.len()
        {
            return Err(PartProblem::Skip("the part is damaged".to_owned()));
        }
        let header = &raw[header_start..body_start];
        let body = &raw[body_start..body_end];
        let kind = match part.content_type().and_then(|c| c.subtype()) {
            Some(s) if s.eq_ignore_ascii_case("html") => TextKind::Html,
            _ => TextKind::Plain,
        };
        let encoding_label = part
            .content_transfer_encoding()
            .map(|e| e.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "7bit".to_owned());
        let transfer = TransferEncoding::from_label(&encoding_label).ok_or_else(|| {
            PartProblem::Skip(format!(
                "unknown Content-Transfer-Encoding \"{encoding_label}\""
            ))
        })?;
        let decoded = transfer.decode(body)?;
        if kind == TextKind::Plain && is_inline_pgp(&decoded) {
            return Err(PartProblem::Protected(NotAdded::Signed(
                "inline PGP".to_owned(),
            )));
        }
        let charset_label = part
            .content_type()
            .and_then(|c| c.attribute("charset"))
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "us-ascii".to_owned());
        let charset = Charset::from_label(&charset_label)?;
        // The text keeps its own line breaks; the encoded body keeps the ones it is stored with.
        let line_end_of = |bytes: &[u8]| -> &'static [u8] {
            if bytes.windows(2).any(|w| w == b"\r\n") {
                b"\r\n"
            } else if bytes.contains(&b'\n') || message_line_end == b"\n" {
                b"\n"
            } else {
                b"\r\n"
            }
        };
        let le = if line_end_of(&decoded) == b"\n" {
            "\n"
        } else {
            "\r\n"
        };
        let wire_line_end = line_end_of(body);

        let mut charset_was = None;
        let (new_text, added) = match kind {
            TextKind::Plain => {
                let mut addition = String::new();
                if !decoded.is_empty() && !decoded.ends_with(b"\n") {
                    addition.push_str(le);
                }
                addition.push_str(le);
                addition.push_str(&self.lines.join(le));
                addition.push_str(le);
                match charset.encode_exact(&addition) {
                    Some(bytes) => ([&decoded[..], &bytes[..]].concat(), bytes),
                    None => {
                        let original = charset.decode_exact(&decoded).ok_or_else(|| {
                            PartProblem::Skip(format!(
                                "the disclaimer cannot be written in {charset_label} and the text is not valid {charset_label}"
                            ))
                        })?;
                        charset_was = Some(charset_label.clone());
                        (
                            format!("{original}{addition}").into_bytes(),
                            addition.into_bytes(),
                        )
                    }
                }
            }
            TextKind::Html => {
                let escaped: Vec<String> = self.lines.iter().map(|l| html_escape(l)).collect();
                let snippet = format!(
                    "{le}<p class=\"disclaimer\">{}</p>{le}",
                    escaped.join(&format!("<br>{le}"))
                );
                let bytes = charset.encode_html(&snippet);
                let at = html_insertion_point(&decoded);
                ([&decoded[..at], &bytes[..], &decoded[at..]].concat(), bytes)
            }
        };
        let charset_now = if charset_was.is_some() {
            "utf-8".to_owned()
        } else {
            charset_label.clone()
        };

        // 7bit cannot carry 8-bit bytes, and no 7bit or 8bit line may pass 998 octets: switch to quoted-printable.
        // The added lines stand alone (they start after a line break and end with one), so checking them is enough.
        let mut transfer_now = transfer;
        let added_long_line = added
            .split(|b| *b == b'\n')
            .any(|l| l.len() > MAX_LINE_OCTETS);
        match transfer {
            TransferEncoding::SevenBit if !new_text.is_ascii() || added_long_line => {
                transfer_now = TransferEncoding::QuotedPrintable
            }
            TransferEncoding::EightBit | TransferEncoding::Binary if added_long_line => {
                transfer_now = TransferEncoding::QuotedPrintable
            }
            _ => {}
        }
        let ends_with_line_end = body.ends_with(b"\n");
        let new_body = transfer_now.encode(&new_text, wire_line_end, ends_with_line_end);

        let mut new_header = header.to_vec();
        let mut added_field = false;
        if charset_was.is_some() {
            let value = content_type_with_charset(part, "utf-8");
            added_field |= set_field(&mut new_header, "Content-Type", &value, message_line_end);
        }
        if transfer_now != transfer {
            added_field |= set_field(
                &mut new_header,
                "Content-Transfer-Encoding",
                transfer_now.label(),
                message_line_end,
            );
        }
        if is_root
            && added_field
            && !part
                .headers
                .iter()
                .any(|h| h.name.as_str().eq_ignore_ascii_case("MIME-Version"))
        {
            set_field(&mut new_header, "MIME-Version", "1.0", message_line_end);
        }
        let mut replacement = new_header;
        replacement.extend_from_slice(&new_body);
        let edit = DisclaimerEdit {
            section: String::new(),
            kind,
            charset: charset_now,
            charset_was,
            encoding: transfer_now.label().to_owned(),
            encoding_was: (transfer_now != transfer).then(|| transfer.label().to_owned()),
        };
        Ok((header_start..body_end, replacement, edit))
    }
}

/// Why one part was not changed: skip it, or leave the whole message alone.
enum PartProblem {
    Skip(String),
    Protected(NotAdded),
}

/// The domain of an address, lower case; `None` for the null sender or a bare local part.
fn domain_of(address: &str) -> Option<String> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (_, domain) = address.rsplit_once('@')?;
    let domain = normalise_domain(domain);
    (!domain.is_empty()).then_some(domain)
}

fn content_type_of(part: &MessagePart<'_>) -> (String, String) {
    match part.content_type() {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase(),
        ),
        None => ("text".to_owned(), "plain".to_owned()),
    }
}

/// Signed or encrypted structures make the whole message off limits.
fn refuse_if_protected(part: &MessagePart<'_>) -> Result<(), NotAdded> {
    let (ctype, subtype) = content_type_of(part);
    let name = format!("{ctype}/{subtype}");
    match (ctype.as_str(), subtype.as_str()) {
        ("multipart", "signed") => Err(NotAdded::Signed(name)),
        ("multipart", "encrypted") | ("application", "pgp-encrypted") => {
            Err(NotAdded::Encrypted(name))
        }
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => {
            let smime = part
                .content_type()
                .and_then(|c| c.attribute("smime-type"))
                .unwrap_or("")
                .to_ascii_lowercase();
            if smime == "signed-data" {
                Err(NotAdded::Signed(name))
            } else {
                Err(NotAdded::Encrypted(name))
            }
        }
        _ => Ok(()),
    }
}

/// The inline text parts that make up the readable body: a leaf text part, every alternative of
/// multipart/alternative, and the first part of any other multipart.
fn collect_targets(
    parts: &[MessagePart<'_>],
    id: usize,
    section: String,
    out: &mut Vec<(usize, String)>,
) {
    let Some(part) = parts.get(id) else { return };
    let child_section = |n: usize| {
        if section.is_empty() {
            n.to_string()
        } else {
            format!("{section}.{n}")
        }
    };
    match &part.body {
        PartType::Multipart(children) => {
            let (_, subtype) = content_type_of(part);
            let take = if subtype == "alternative" {
                children.len()
            } else {
                1
            };
            for (n, child) in children.iter().enumerate().take(take) {
                collect_targets(parts, *child as usize, child_section(n + 1), out);
            }
        }
        PartType::Message(_) => {}
        _ => {
            let (ctype, subtype) = content_type_of(part);
            let attachment = part
                .content_disposition()
                .is_some_and(|d| d.is_attachment());
            if ctype == "text" && (subtype == "plain" || subtype == "html") && !attachment {
                out.push((
                    id,
                    if section.is_empty() {
                        "1".to_owned()
                    } else {
                        section
                    },
                ));
            }
        }
    }
}

fn is_inline_pgp(decoded: &[u8]) -> bool {
    decoded
        .windows(27)
        .any(|w| w == b"-----BEGIN PGP SIGNED MESSA" || w == b"-----BEGIN PGP MESSAGE-----")
}

/// Where the HTML snippet goes: before the last `</body`, else before the last `</html`, else at the end.
fn html_insertion_point(html: &[u8]) -> usize {
    let find_last = |tag: &[u8]| {
        html.windows(tag.len())
            .rposition(|w| w.eq_ignore_ascii_case(tag))
    };
    find_last(b"</body")
        .or_else(|| find_last(b"</html"))
        .unwrap_or(html.len())
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The charset of a text part, as far as the disclaimer is concerned.
enum Charset {
    /// US-ASCII (encoding_rs would read it as windows-1252, which is wrong for writing).
    Ascii,
    /// Any charset encoding_rs can both read and write.
    Other(&'static Encoding),
}

impl Charset {
    fn from_label(label: &str) -> Result<Charset, PartProblem> {
        if matches!(label, "us-ascii" | "ascii" | "ansi_x3.4-1968" | "") {
            return Ok(Charset::Ascii);
        }
        match Encoding::for_label(label.as_bytes()) {
            Some(e) if e.output_encoding() == e && e != encoding_rs::REPLACEMENT => {
                Ok(Charset::Other(e))
            }
            _ => Err(PartProblem::Skip(format!(
                "charset \"{label}\" is not supported"
            ))),
        }
    }

    /// The text in this charset, or `None` when some character cannot be written in it.
    fn encode_exact(&self, text: &str) -> Option<Vec<u8>> {
        match self {
            Charset::Ascii => text.is_ascii().then(|| text.as_bytes().to_vec()),
            Charset::Other(e) => {
                let (bytes, _, unmappable) = e.encode(text);
                (!unmappable).then(|| bytes.into_owned())
            }
        }
    }

    /// HTML in this charset; characters it cannot write become numeric character references.
    fn encode_html(&self, text: &str) -> Vec<u8> {
        match self {
            Charset::Ascii => {
                let mut out = String::with_capacity(text.len());
                for c in text.chars() {
                    if c.is_ascii() {
                        out.push(c)
                    } else {
                        out.push_str(&format!("&#{};", u32::from(c)))
                    }
                }
                out.into_bytes()
            }
            Charset::Other(e) => e.encode(text).0.into_owned(),
        }
    }

    /// Bytes in this charset as text, or `None` when they are not valid in it.
    fn decode_exact(&self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Ascii => std::str::from_utf8(bytes)
                .ok()
                .filter(|t| t.is_ascii())
                .map(str::to_owned),
            Charset::Other(e) => e
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|t| t.into_owned()),
        }
    }
}

/// The Content-Transfer-Encodings a text part can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferEncoding {
    SevenBit,
    EightBit,
    Binary,
    QuotedPrintable,
    Base64,
}

impl TransferEncoding {
    fn from_label(label: &str) -> Option<TransferEncoding> {
        match label {
            "7bit" | "" => Some(TransferEncoding::SevenBit),
            "8bit" => Some(TransferEncoding::EightBit),
            "binary" => Some(TransferEncoding::Binary),
            "quoted-printable" => Some(TransferEncoding::QuotedPrintable),
            "base64" => Some(TransferEncoding::Base64),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            TransferEncoding::SevenBit => "7bit",
            TransferEncoding::EightBit => "8bit",
            TransferEncoding::Binary => "binary",
            TransferEncoding::QuotedPrintable => "quoted-printable",
            TransferEncoding::Base64 => "base64",
        }
    }

    fn decode(self, body: &[u8]) -> Result<Vec<u8>, PartProblem> {
        match self {
            TransferEncoding::SevenBit | TransferEncoding::EightBit | TransferEncoding::Binary => {
                Ok(body.to_vec())
            }
            TransferEncoding::QuotedPrintable => {
                quoted_printable::decode(body, quoted_printable::ParseMode::Robust)
                    .map_err(|e| PartProblem::Skip(format!("damaged quoted-printable: {e}")))
            }
            TransferEncoding::Base64 => {
                let compact: Vec<u8> = body
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                BASE64
                    .decode(&compact)
                    .map_err(|e| PartProblem::Skip(format!("damaged base64: {e}")))
            }
        }
    }

    /// The body in this encoding, with the message's line ending; `trailing` keeps a final line ending.
    fn encode(self, text: &[u8], line_end: &[u8], trailing: bool) -> Vec<u8> {
        match self {
            TransferEncoding::SevenBit | TransferEncoding::EightBit | TransferEncoding::Binary => {
                text.to_vec()
            }
            TransferEncoding::QuotedPrintable => {
                if line_end == b"\r\n" {
                    quoted_printable::encode(text)
                } else {
                    // The encoder writes CRLF line breaks; a message stored with LF keeps LF.
                    crlf_to_lf(&quoted_printable::encode(lf_to_crlf(text)))
                }
            }
            TransferEncoding::Base64 => {
                let encoded = BASE64.encode(text);
                let mut out =
                    Vec::with_capacity(encoded.len() + encoded.len() / BASE64_LINE * 2 + 2);
                for (n, line) in encoded.as_bytes().chunks(BASE64_LINE).enumerate() {
                    if n > 0 {
                        out.extend_from_slice(line_end);
                    }
                    out.extend_from_slice(line);
                }
                if trailing {
                    out.extend_from_slice(line_end);
                }
                out
            }
        }
    }
}

fn lf_to_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    out
}

fn crlf_to_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(*b);
    }
    out
}

/// Content-Type of `part` with the charset parameter set to `charset`; other parameters are kept.
fn content_type_with_charset(part: &MessagePart<'_>, charset: &str) -> String {
    let (ctype, subtype) = content_type_of(part);
    let mut value = format!("{ctype}/{subtype}; charset={charset}");
    if let Some(attributes) = part.content_type().and_then(|c| c.attributes()) {
        for attribute in attributes
            .iter()
            .filter(|a| !a.name.eq_ignore_ascii_case("charset"))
        {
            let token = !attribute.value.is_empty()
                && attribute
                    .value
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c));
            if token {
                value.push_str(&format!("; {}={}", attribute.name, attribute.value));
            } else {
                let quoted = attribute.value.replace('\\', "\\\\").replace('"', "\\\"");
                value.push_str(&format!("; {}=\"{quoted}\"", attribute.name));
            }
        }
    }
    value
}

/// Replaces the first field `name` in a raw header block (with its continuation lines) by `name: value`, or adds
/// it before the blank line that ends the block. Returns true when the field was added.
fn set_field(header: &mut Vec<u8>, name: &str, value: &str, line_end: &[u8]) -> bool {
    let mut line = format!("{name}: {value}").into_bytes();
    line.extend_from_slice(line_end);
    // Split into lines, each with its ending.
    let mut lines: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    for (i, b) in header.iter().enumerate() {
        if *b == b'\n' {
            lines.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < header.len() {
        lines.push(start..header.len());
    }
    let is_blank = |r: &Range<usize>| header[r.clone()].iter().all(|b| *b == b'\r' || *b == b'\n');
    let starts_field = |r: &Range<usize>| {
        let l = &header[r.clone()];
        let Some(colon) = l.iter().position(|b| *b == b':') else {
            return false;
        };
        l[..colon]
            .trim_ascii_end()
            .eq_ignore_ascii_case(name.as_bytes())
    };
    if let Some(first) = lines.iter().position(starts_field) {
        let mut last = first;
        while last + 1 < lines.len()
            && matches!(header[lines[last + 1].start], b' ' | b'\t')
            && !is_blank(&lines[last + 1])
        {
            last += 1;
        }
        let range = lines[first].start..lines[last].end;
        header.splice(range, line);
        false
    } else {
        let at = lines
            .iter()
            .rposition(|r| !is_blank(r))
            .map(|i| lines[i].end)
            .unwrap_or(0);
        header.splice(at..at, line);
        true
    }
}

#[cfg(test)]
#[path = "disclaimer_tests.rs"]
mod tests;

//! The Part model: what decomposition hands to every scanner.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::filetype::FileType;
use crate::finding::Finding;

/// Where a part sits in the message, readable by an admin:
/// `message/attachment[2] "invoice.zip"/docs/a.exe`.
///
/// MIME parts are `body[N]` (inline text of a message) or `attachment[N] "name"`, numbered from 1 in message
/// order; archive members follow their container as `/member/path`; decompressed streams as `/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartPath(String);

impl PartPath {
    /// The path of the message itself.
    pub fn message() -> PartPath {
        PartPath("message".to_owned())
    }

    /// The path of a child of this part (`segment` is appended after a `/`).
    pub fn child(&self, segment: &str) -> PartPath {
        PartPath(format!("{}/{}", self.0, segment))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PartPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What role a part plays in the message; content rules choose their scope by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartRole {
    /// Inline text (plain or HTML) of the top-level message: what the recipient reads.
    Body,
    /// A MIME part that is not the top-level body: attachments, and every part of an attached message.
    Attachment,
    /// A file taken out of a container (archive member or decompressed stream).
    Member,
}

/// One piece of a message, decoded.
#[derive(Debug, Clone)]
pub struct Part {
    /// Where the part sits (see [`PartPath`]).
    pub path: PartPath,
    /// The top-level MIME part that carries this part: itself for a MIME part of the message, the attachment
    /// for members of archives or attached messages. Stripping a part removes its carrier.
    pub carrier: PartPath,
    /// The file name: the MIME attachment name, or the member name inside an archive (last path component).
    pub file_name: Option<String>,
    /// The Content-Type as declared in the MIME headers (`application/pdf`), lower-case; None for members.
    pub declared_type: Option<String>,
    /// The type found from the content.
    pub true_type: FileType,
    /// The decoded bytes (transfer encoding removed, decompressed for members).
    pub bytes: Bytes,
    /// How many containers (attached messages, archives) enclose the part; 0 for the message's own parts.
    pub depth: u32,
    /// Body, attachment or container member.
    pub role: PartRole,
    /// Extracted text for text parts: text/plain as is, HTML rendered to text, charsets converted to UTF-8.
    /// Cut at [`crate::Limits::max_text_bytes`]. None for binary parts.
    pub text: Option<String>,
}

impl Part {
    /// Whether text was extracted from the part.
    pub fn is_text(&self) -> bool {
        self.text.is_some()
    }

    /// The size of the decoded content in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The result of taking a message apart: every part once, and everything that stopped full inspection.
#[derive(Debug, Clone, Default)]
pub struct Decomposition {
    /// The subject of the top-level message, decoded (RFC 2047), if any.
    pub subject: Option<String>,
    /// The top-level header fields, one per line as `Name: decoded value` (for content rules on headers).
    pub header_text: String,
    /// All parts in message order (containers before their members).
    pub parts: Vec<Part>,
    /// Limits hit, encrypted containers, damaged containers.
    pub findings: Vec<Finding>,
}

impl Decomposition {
    /// Whether some content could not be inspected because a limit was hit or a container is damaged.
    pub fn is_unscannable(&self) -> bool {
        self.findings.iter().any(Finding::is_unscannable)
    }

    /// The part at `path`, if any.
    pub fn part(&self, path: &PartPath) -> Option<&Part> {
        self.parts.iter().find(|p| &p.path == path)
    }
}

//! The spool: directory layout and the spool file format.
//!
//! A spool file is `PORTCULLIS-SPOOL 1\n`, one line of JSON (the envelope), `\n`, then the raw
//! message bytes. The directories are the truth about which messages exist; sled is a cache.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use mail_parser::{HeaderName, MessageParser};

use crate::envelope::Envelope;
use crate::error::QueueError;
use crate::id::QueueId;

/// First line of every spool file; the number is the format version.
pub(crate) const MAGIC: &[u8] = b"PORTCULLIS-SPOOL 1\n";
/// How much of the message start is kept for the Message-ID/Subject parse.
pub(crate) const HEAD_BYTES: usize = 64 * 1024;
/// Longest envelope line we accept when reading a spool file back (guards against reading a
/// garbage file without newlines into memory).
const MAX_ENVELOPE_LINE: u64 = 64 * 1024 * 1024;

/// A directory of the spool. Committed messages live in `Active` or `Hold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SpoolDir {
    /// Messages being received; deleted at start-up.
    Tmp,
    /// Committed messages to be delivered.
    Active,
    /// Committed messages on hold.
    Hold,
    /// Files that could not be read at start-up, kept for the admin.
    Corrupt,
}

impl SpoolDir {
    /// The directory name under the queue dir.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SpoolDir::Tmp => "tmp",
            SpoolDir::Active => "active",
            SpoolDir::Hold => "hold",
            SpoolDir::Corrupt => "corrupt",
        }
    }
}

/// The paths of one queue directory.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root` (`<data_dir>/queue`).
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// Creates the directories that do not exist yet.
    pub(crate) fn create(&self) -> Result<(), QueueError> {
        for dir in [
            SpoolDir::Tmp,
            SpoolDir::Active,
            SpoolDir::Hold,
            SpoolDir::Corrupt,
        ] {
            let path = self.dir(dir);
            fs::create_dir_all(&path).map_err(|e| QueueError::io("create directory", &path, e))?;
        }
        for path in [self.state_dir(), self.log_dir()] {
            fs::create_dir_all(&path).map_err(|e| QueueError::io("create directory", &path, e))?;
        }
        Ok(())
    }

    /// The message log's directory (segment files).
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// A spool directory.
    pub(crate) fn dir(&self, dir: SpoolDir) -> PathBuf {
        self.root.join(dir.name())
    }

    /// The file of message `id` in `dir`.
    pub(crate) fn file(&self, dir: SpoolDir, id: &QueueId) -> PathBuf {
        self.root.join(dir.name()).join(id.as_str())
    }

    /// The sled database directory.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
}

/// The bytes that precede the message in a spool file.
pub(crate) fn encode_header(envelope: &Envelope) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    // serde_json escapes control characters inside strings, so the envelope is one line.
    serde_json::to_writer(&mut header, envelope).expect("an envelope always serializes");
    header.push(b'\n');
    header
}

/// What the header of a spool file says.
#[derive(Debug)]
pub(crate) struct SpoolHeader {
    /// The envelope line.
    pub(crate) envelope: Envelope,
    /// Offset of the first message byte.
    pub(crate) offset: u64,
}

/// Reads and checks the header of a spool file. `Err(Corrupt)` means the file is unusable;
/// other errors are I/O problems.
pub(crate) fn read_header(path: &Path) -> Result<SpoolHeader, QueueError> {
    let file = File::open(path).map_err(|e| QueueError::io("open spool file", path, e))?;
    read_header_from(BufReader::new(file), path)
}

/// Parses the header from any reader (the file, or the bytes of a whole spool file).
pub(crate) fn read_header_from(
    reader: impl BufRead,
    path: &Path,
) -> Result<SpoolHeader, QueueError> {
    let corrupt = |reason: String| QueueError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = reader.take(MAX_ENVELOPE_LINE);
    let mut magic = Vec::with_capacity(MAGIC.len());
    (&mut reader)
        .take(MAGIC.len() as u64)
        .read_to_end(&mut magic)
        .map_err(|e| QueueError::io("read spool file", path, e))?;
    if magic != MAGIC {
        return Err(corrupt(
            "bad magic line (not a Portcullis spool file, or truncated)".to_owned(),
        ));
    }
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| QueueError::io("read spool file", path, e))?;
    if line.pop() != Some(b'\n') {
        return Err(corrupt("envelope line is not terminated".to_owned()));
    }
    let envelope: Envelope = serde_json::from_slice(&line)
        .map_err(|e| corrupt(format!("envelope line is not valid JSON: {e}")))?;
    Ok(SpoolHeader {
        envelope,
        offset: (MAGIC.len() + line.len() + 1) as u64,
    })
}

/// Reads up to `HEAD_BYTES` of the message, starting at `offset`.
pub(crate) fn read_head(path: &Path, offset: u64) -> Result<Vec<u8>, QueueError> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| QueueError::io("open spool file", path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| QueueError::io("read spool file", path, e))?;
    let mut head = Vec::new();
    file.take(HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| QueueError::io("read spool file", path, e))?;
    Ok(head)
}

/// Message-ID (without angle brackets) and decoded Subject from the start of a message.
pub(crate) fn parse_identity(head: &[u8]) -> (Option<String>, Option<String>) {
    let parser = MessageParser::new()
        .header_id(HeaderName::MessageId)
        .header_text(HeaderName::Subject);
    match parser.parse_headers(head) {
        Some(message) => (
            message.message_id().map(str::to_owned),
            message.subject().map(str::to_owned),
        ),
        None => (None, None),
    }
}

/// Makes the directory entries of `dir` durable (new, renamed and removed names).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn envelope() -> Envelope {
        Envelope {
            sender: "a@example.org".into(),
            recipients: vec!["b@example.com".into(), "line\nbreak@example.com".into()],
            smtputf8: false,
            eight_bit: true,
            received_at: Utc::now(),
            client: None,
        }
    }

    #[test]
    fn header_round_trips_and_offset_points_at_the_message() {
        let mut file = encode_header(&envelope());
        let offset = file.len() as u64;
        file.extend_from_slice(b"Subject: hi\r\n\r\nbody\r\n");
        let header = read_header_from(&file[..], Path::new("x")).unwrap();
        assert_eq!(header.envelope, envelope_with(header.envelope.received_at));
        assert_eq!(header.offset, offset);
    }

    fn envelope_with(at: chrono::DateTime<Utc>) -> Envelope {
        Envelope {
            received_at: at,
            ..envelope()
        }
    }

    #[test]
    fn bad_magic_and_bad_json_are_reported_as_corrupt() {
        let bad_magic = read_header_from(&b"HELLO\n{}\n"[..], Path::new("x"));
        assert!(matches!(bad_magic, Err(QueueError::Corrupt { .. })));
        let bad_json =
            read_header_from(&b"PORTCULLIS-SPOOL 1\n{not json\nbody"[..], Path::new("x"));
        assert!(matches!(bad_json, Err(QueueError::Corrupt { .. })));
        let empty = read_header_from(&b""[..], Path::new("x"));
        assert!(matches!(empty, Err(QueueError::Corrupt { .. })));
    }

    #[test]
    fn message_id_and_subject_are_parsed_from_the_head() {
        let head =
            b"Message-ID: <abc@example.org>\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n\r\nbody\r\n";
        let (id, subject) = parse_identity(head);
        assert_eq!(id.as_deref(), Some("abc@example.org"));
        assert_eq!(subject.as_deref(), Some("café"));
        assert_eq!(parse_identity(b"no headers here"), (None, None));
    }
}

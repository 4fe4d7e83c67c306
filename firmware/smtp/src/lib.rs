//! Portcullis SMTP: replies with enhanced status codes, the command parser, and the inbound session server.
//!
//! The server speaks RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING and
//! STARTTLS, and hands every decision about a message to a [`MailHandler`]. It refuses message data that
//! contains a bare CR or LF, so that no end-of-data ambiguity can be used for SMTP smuggling.

#![warn(missing_docs)]

pub mod command;
pub mod reply;
pub mod server;
pub mod transcript;

mod body;
mod connection;
mod session;

pub use command::{BodyType, Command, MailParams, ParseError, Path, parse};
pub use reply::{EnhancedCode, Reply};
pub use server::{
    Envelope, MailHandler, Server, ServerConfig, SessionEnd, SessionInfo, SessionStats, TlsInfo,
};
pub use transcript::{DataLogging, TRANSCRIPT_TARGET, TranscriptMode};

/// Errors from parsing protocol elements outside a session (status codes and paths given as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpError {
    /// Not of the form `class.subject.detail` with class 2, 4 or 5 (RFC 3463).
    #[error("{0:?} is not an enhanced status code (expected e.g. 5.7.1)")]
    BadEnhancedCode(String),
    /// Not a valid `<mailbox>` path.
    #[error("{0:?} is not a valid mail address path (expected e.g. <user@example.com>)")]
    BadPath(String),
}

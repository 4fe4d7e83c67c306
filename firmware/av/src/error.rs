//! Errors of the antivirus engine, worded for the mail admin who reads them in the log.
//!
//! A malformed or unsupported *line* in a signature file is never an error: it is skipped and
//! counted in the [`LoadReport`](crate::LoadReport). Errors are reserved for things that stop a
//! whole signature set from loading (an unreadable file, an automaton too large to build).

use std::io;
use std::path::PathBuf;

/// What stopped signatures from loading.
#[derive(Debug, thiserror::Error)]
pub enum AvError {
    /// A signature file or directory could not be read.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What the engine was doing, e.g. "read signature file".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// A file was named explicitly but its extension is not a signature format we read.
    #[error(
        "{} is not a supported signature file (expected .hdb, .hsb, .mdb, .msb or .ndb; see the portcullis-av README)",
        path.display()
    )]
    UnsupportedFile {
        /// The file concerned.
        path: PathBuf,
    },
    /// The multi-pattern automaton could not be built (the pattern set is too large).
    #[error("cannot build the pattern matcher for {patterns} patterns: {reason}")]
    Automaton {
        /// How many distinct literal fragments were given to the automaton.
        patterns: usize,
        /// Why the automaton library refused.
        reason: String,
    },
    /// More signature names than the engine can index (over 4 GiB of names).
    #[error("the signature set is too large: more than 4 GiB of signature names")]
    TooManySignatures,
}

//! The harness' errors: each says what the harness was doing and what a person can check.

use std::path::PathBuf;
use std::time::Duration;

/// Why the harness could not do something (as opposed to a scenario failing its assertions).
#[derive(Debug, thiserror::Error)]
pub enum HilError {
    /// A file, socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The expected text did not appear on the serial line in time.
    #[error("no {what} on the serial line within {}s; the last output was:\n{tail}", waited.as_secs())]
    SerialTimeout {
        /// The pattern waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The end of what was received, for the report.
        tail: String,
    },
    /// The rig file is missing a value or has a wrong one.
    #[error("rig file {}: {reason}", path.display())]
    Rig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An external tool (qemu-img, debugfs, a power hook) failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The command.
        tool: String,
        /// Its exit status and error output.
        detail: String,
    },
    /// The disk image is not what the harness expects (no GPT, no data partition, …).
    #[error("disk image {}: {reason}", path.display())]
    Disk {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A required program or firmware file is not installed.
    #[error("{what} not found ({hint})")]
    Missing {
        /// What is missing.
        what: String,
        /// How to get it.
        hint: String,
    },
}

impl HilError {
    /// An [`HilError::Io`] saying what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> HilError {
        HilError::Io {
            what: what.into(),
            source,
        }
    }
}

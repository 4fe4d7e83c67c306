//! Errors of the queue, worded for the mail admin who reads them in the log.

use std::io;
use std::path::{Path, PathBuf};

use crate::id::QueueId;

/// What went wrong in the queue. `DiskFull` maps to SMTP 452 4.3.1, everything else during a
/// commit to 451 4.3.0; in both cases nothing was stored and the client must retry.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The file system holding the queue is full (or over quota).
    #[error("queue disk is full: cannot {action} {}: {error}", path.display())]
    DiskFull {
        /// What the queue was doing, e.g. "write spool file".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// Any other file system error.
    #[error("queue I/O error: cannot {action} {}: {error}", path.display())]
    Io {
        /// What the queue was doing, e.g. "sync directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The sled state database failed.
    #[error("queue state database failed: {0}")]
    State(String),
    /// No message with that id is in the queue.
    #[error("no message with queue id {0}")]
    NotFound(QueueId),
    /// The message is on hold and cannot be delivered until released.
    #[error("message {0} is on hold; release it first")]
    Held(QueueId),
    /// Release was asked for a message that is not on hold.
    #[error("message {0} is not on hold")]
    NotHeld(QueueId),
    /// A delivery attempt for the message is already running.
    #[error("a delivery attempt for message {0} is already running")]
    InFlight(QueueId),
    /// A spool file does not have the expected format.
    #[error("spool file {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The spool file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A write into the draft failed earlier, so the message is incomplete and must not be committed.
    #[error("message was not stored: writing it to the spool failed earlier: {0}")]
    IncompleteDraft(Box<QueueError>),
    /// The spool writer is gone (the queue is shutting down); nothing was stored.
    #[error("the queue is shutting down; message not stored")]
    ShuttingDown,
}

impl QueueError {
    /// Wraps an I/O error, recognising a full disk or exceeded quota so it can be answered with 452.
    pub(crate) fn io(action: &'static str, path: &Path, error: io::Error) -> QueueError {
        let path = path.to_path_buf();
        if is_disk_full(&error) {
            QueueError::DiskFull {
                action,
                path,
                error,
            }
        } else {
            QueueError::Io {
                action,
                path,
                error,
            }
        }
    }

    /// Wraps a sled error; sled's own I/O errors on a full disk count as a full disk.
    pub(crate) fn state(error: sled::Error, state_dir: &Path) -> QueueError {
        match error {
            sled::Error::Io(io) if is_disk_full(&io) => QueueError::DiskFull {
                action: "update queue state in",
                path: state_dir.to_path_buf(),
                error: io,
            },
            other => QueueError::State(other.to_string()),
        }
    }

    /// The queue's disk is full: the SMTP answer is 452 4.3.1 rather than 451 4.3.0.
    pub fn is_disk_full(&self) -> bool {
        match self {
            QueueError::DiskFull { .. } => true,
            QueueError::IncompleteDraft(inner) => inner.is_disk_full(),
            _ => false,
        }
    }
}

/// ENOSPC or EDQUOT: the admin must free space, not look for a bug.
pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

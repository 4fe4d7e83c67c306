//! Findings: what decomposition could not fully inspect, and why.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::filetype::FileType;
use crate::part::PartPath;

/// A limit from [`crate::Limits`] that was exceeded, with the numbers an admin needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LimitHit {
    /// Containers nested deeper than `max_depth`.
    Depth {
        /// The configured maximum.
        limit: u32,
    },
    /// More parts than `max_files`.
    Files {
        /// The configured maximum.
        limit: u32,
    },
    /// More extracted bytes than `max_total_bytes`.
    TotalBytes {
        /// The configured maximum.
        limit: u64,
    },
    /// A member expanded more than `max_compression_ratio` times its compressed size.
    CompressionRatio {
        /// The ratio seen (at least this much; extraction stops as soon as the limit is passed).
        ratio: u64,
        /// The configured maximum.
        limit: u64,
    },
    /// Decomposition took longer than `max_time`.
    Time {
        /// The configured maximum.
        #[serde(with = "humantime_serde")]
        limit: Duration,
    },
    /// A decoder needed more memory than `max_decoder_memory`.
    DecoderMemory {
        /// The configured maximum in bytes.
        limit: u64,
    },
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Depth { limit } => write!(f, "nesting depth exceeds limit {limit}"),
            LimitHit::Files { limit } => write!(f, "number of files exceeds limit {limit}"),
            LimitHit::TotalBytes { limit } => {
                write!(f, "extracted size exceeds limit {limit} bytes")
            }
            LimitHit::CompressionRatio { ratio, limit } => {
                write!(f, "compression ratio {ratio}:1 exceeds limit {limit}:1")
            }
            LimitHit::Time { limit } => {
                write!(
                    f,
                    "decomposition time exceeds limit {}",
                    humantime::format_duration(*limit)
                )
            }
            LimitHit::DecoderMemory { limit } => {
                write!(f, "decoder memory exceeds limit {limit} bytes")
            }
        }
    }
}

/// Something decomposition could not fully inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "finding")]
pub enum Finding {
    /// A limit was hit at `path`; what lies beyond it was not inspected. Makes the message unscannable.
    LimitExceeded {
        /// Which limit, with numbers.
        limit: LimitHit,
        /// The part being opened when it was hit.
        path: PartPath,
    },
    /// A password-protected container (or member) at `path`; its content could not be inspected.
    Encrypted {
        /// The encrypted member, or the container when its directory itself is encrypted.
        path: PartPath,
    },
    /// A container whose content says zip/gzip/… but which could not be read to the end. What could be read is
    /// kept as parts. Makes the message unscannable.
    Damaged {
        /// The container.
        path: PartPath,
        /// What the decoder reported.
        reason: String,
    },
    /// A recognised container format that is not opened (RAR). Unscannable only if the policy says so.
    NotOpened {
        /// The container.
        path: PartPath,
        /// Its format.
        format: FileType,
    },
}

impl Finding {
    /// Whether this finding makes the message unscannable (limits and damaged containers).
    pub fn is_unscannable(&self) -> bool {
        matches!(
            self,
            Finding::LimitExceeded { .. } | Finding::Damaged { .. }
        )
    }

    /// The part the finding is about.
    pub fn path(&self) -> &PartPath {
        match self {
            Finding::LimitExceeded { path, .. }
            | Finding::Encrypted { path }
            | Finding::Damaged { path, .. }
            | Finding::NotOpened { path, .. } => path,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::LimitExceeded { limit, path } => write!(f, "{limit} in {path}"),
            Finding::Encrypted { path } => write!(f, "encrypted content in {path}"),
            Finding::Damaged { path, reason } => write!(f, "damaged container {path}: {reason}"),
            Finding::NotOpened { path, format } => {
                write!(f, "{format} {path} is not opened by the scanner")
            }
        }
    }
}

//! Decomposition limits: the one place where their defaults live.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bounds on the work and memory spent taking one message apart.
///
/// Every limit exists because a hostile message can otherwise cost unbounded resources: a zip bomb (42.zip)
/// expands a few kilobytes into petabytes, deep nesting exhausts the stack, millions of tiny members exhaust
/// memory and time. Exceeding any of them makes the message "unscannable" with a finding naming the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// How many containers (attached messages, archives, compressed files, documents and installers that
    /// carry files) may be nested.
    pub max_depth: u32,
    /// How many parts (MIME parts plus archive members) one message may yield.
    pub max_files: u32,
    /// How many bytes may be extracted from containers in total for one message.
    pub max_total_bytes: u64,
    /// Largest allowed ratio of extracted to compressed size for one member or stream (N means N:1).
    pub max_compression_ratio: u64,
    /// The ratio is only enforced once a member has expanded beyond this many bytes, so that small, highly
    /// compressible files (a page of blanks) are not flagged.
    pub ratio_check_min_bytes: u64,
    /// Wall-clock time allowed to decompose one message.
    #[serde(with = "humantime_serde")]
    pub max_time: Duration,
    /// Text kept per part for content rules; longer text is cut (not an error: the bytes are still scanned
    /// by antivirus).
    pub max_text_bytes: usize,
    /// Memory a decoder may use for its dictionary or window (7z, xz, CAB and CHM LZX, NSIS LZMA), in bytes;
    /// archives needing more are unscannable.
    pub max_decoder_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // ClamAV's default --max-recursion: an archive it reaches, we reach.
            max_depth: 17,
            max_files: 10_000,
            max_total_bytes: 256 * 1024 * 1024,
            max_compression_ratio: 100,
            ratio_check_min_bytes: 1024 * 1024,
            max_time: Duration::from_secs(30),
            max_text_bytes: 4 * 1024 * 1024,
            max_decoder_memory: 128 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_from_toml_with_defaults_for_missing_fields() {
        let limits: Limits = toml::from_str("max_depth = 3\nmax_time = \"2s\"").unwrap();
        assert_eq!(limits.max_depth, 3);
        assert_eq!(limits.max_time, Duration::from_secs(2));
        assert_eq!(limits.max_files, Limits::default().max_files);
    }

    #[test]
    fn limits_reject_unknown_fields() {
        assert!(toml::from_str::<Limits>("max_deph = 3").is_err());
    }
}

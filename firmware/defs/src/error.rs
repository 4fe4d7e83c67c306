//! Errors of definitions packages and the definitions store, worded for the mail admin.

use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

/// Why a definitions package was refused, or a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DefsError {
    /// A file or directory could not be read or written.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What we were doing, e.g. "read manifest".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// No pinned publisher key is configured, so nothing can be trusted.
    #[error("no publisher key is pinned; configure at least one trusted definitions key")]
    NoPinnedKeys,
    /// The package has no signature file or no signature in it.
    #[error("definitions package {} is not signed (no valid manifest.sig)", path.display())]
    NotSigned {
        /// The package directory.
        path: PathBuf,
    },
    /// The package is signed only by keys that are not pinned.
    #[error("definitions package is signed by unknown key(s) {key_ids}; none of them is pinned")]
    UnknownSigner {
        /// The key ids found in the signature file, comma separated.
        key_ids: String,
    },
    /// A signature by a pinned key does not verify: the manifest was altered or forged.
    #[error(
        "signature by pinned key {key_id} does not match the manifest: package forged or corrupted"
    )]
    SignatureInvalid {
        /// The pinned key whose signature failed.
        key_id: String,
    },
    /// The manifest is larger than the configured limit.
    #[error("manifest is larger than the limit of {limit} bytes")]
    ManifestTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The manifest is signed but its content is not valid.
    #[error("manifest is invalid: {reason}")]
    ManifestInvalid {
        /// What is wrong.
        reason: String,
    },
    /// The package is not newer than what is (or was) installed: a rollback attack or a replay.
    #[error(
        "definitions version {offered} is not newer than installed version {installed}; refusing rollback"
    )]
    Rollback {
        /// The version the package offers.
        offered: u64,
        /// The highest version ever installed.
        installed: u64,
    },
    /// The package has expired: a mirror may be freezing us on old definitions.
    #[error("definitions package expired at {expires} (now {now}); refusing stale definitions")]
    Expired {
        /// When the package stopped being valid.
        expires: DateTime<Utc>,
        /// The current time used for the check.
        now: DateTime<Utc>,
    },
    /// The manifest lists more files than allowed.
    #[error("manifest lists {count} files; the limit is {limit}")]
    TooManyFiles {
        /// Files listed.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A file is larger than allowed (declared or actual).
    #[error("file {name} is {size} bytes; the limit is {limit}")]
    FileTooLarge {
        /// File name.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// All files together are larger than allowed.
    #[error("package files total {total} bytes; the limit is {limit}")]
    PackageTooLarge {
        /// Sum of declared sizes.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// A file listed in the manifest is missing.
    #[error("file {name} listed in the manifest is missing")]
    FileMissing {
        /// File name.
        name: String,
    },
    /// A file's size differs from the manifest (truncated, or extended with endless data).
    #[error("file {name} has size {actual}, the manifest says {expected}: truncated or padded")]
    FileSizeMismatch {
        /// File name.
        name: String,
        /// Size in the manifest.
        expected: u64,
        /// Size found (or "more than expected").
        actual: String,
    },
    /// A file's SHA-256 differs from the manifest (mix-and-match or tampering).
    #[error(
        "file {name} does not match its SHA-256 in the manifest: tampered or from another package"
    )]
    FileHashMismatch {
        /// File name.
        name: String,
    },
    /// The new definitions failed the self-test and were not installed.
    #[error("definitions self-test failed: {reason}")]
    SelfTestFailed {
        /// What the self-test saw.
        reason: String,
    },
    /// The signatures could not be loaded into the engine.
    #[error("definitions cannot be loaded: {0}")]
    Engine(#[from] portcullis_av::AvError),
    /// A key file is malformed.
    #[error("key file {} is invalid: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key string (e.g. from the configuration) is malformed.
    #[error("publisher key {text:?} is invalid: {reason}")]
    KeyText {
        /// The text given.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// The publisher directory has no signature file to package.
    #[error("{} contains no signature files (.hdb, .hsb, .mdb, .msb, .ndb)", path.display())]
    EmptyPackage {
        /// The source directory.
        path: PathBuf,
    },
    /// The output directory already has content.
    #[error("{} already exists and is not empty; refusing to overwrite", path.display())]
    OutputExists {
        /// The directory or file.
        path: PathBuf,
    },
    /// Rollback asked for but no previous version is kept.
    #[error("no previous definitions version to roll back to")]
    NoPreviousVersion,
    /// Another install or rollback is running on this store.
    #[error("another definitions install or rollback is in progress")]
    StoreBusy,
}

impl DefsError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> DefsError {
        let path = path.into();
        move |error| DefsError::Io {
            action,
            path,
            error,
        }
    }
}

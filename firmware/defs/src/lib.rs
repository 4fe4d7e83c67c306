//! Signed antivirus definitions for Portcullis.
//!
//! Publishers build packages ([`keygen`], [`build`], [`add_signature`]); appliances check them
//! ([`verify`]) against pinned ed25519 keys and install them into a [`DefinitionsStore`] with an
//! atomic switch, a self-test, and rollback. The threat model follows TUF's; see the README.

mod error;
mod keys;
mod package;
mod selftest;
mod store;

use std::io::Read;
use std::path::Path;

pub use error::DefsError;
pub use keys::{GeneratedKey, KeyId, PinnedKey, PublisherKey, keygen};
pub use package::{
    BuildOptions, FileEntry, Limits, MANIFEST_FILE, MANIFEST_FORMAT, MAX_SIGNATURE_BYTES, Manifest,
    SIGNATURE_FILE, VerifiedPackage, add_signature, build, build_with, check_file, verify,
    verify_manifest,
};
pub use selftest::{KnownSample, SelfTestSpec, self_test};
pub use store::{DefinitionsStore, Installed, InstalledVersion, StoreStatus};

/// Reads a whole file if it is at most `limit` bytes; `Ok(None)` if it is larger.
pub(crate) fn read_bounded(
    path: &Path,
    limit: u64,
    action: &'static str,
) -> Result<Option<Vec<u8>>, DefsError> {
    let file = std::fs::File::open(path).map_err(DefsError::io(action, path))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(DefsError::io(action, path))?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

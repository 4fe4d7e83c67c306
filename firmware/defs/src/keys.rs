//! Publisher keys: ed25519 key pairs as small text files, and the pinned public keys.
//!
//! Secret key file (mode 0600, never leaves the publisher's machine):
//! ```text
//! -----BEGIN PORTCULLIS DEFS SECRET KEY-----
//! <64 hex digits: the 32-byte ed25519 seed>
//! -----END PORTCULLIS DEFS SECRET KEY-----
//! ```
//! Public key file: the same with `PUBLIC KEY` and the 32-byte public key. A bare line of 64 hex
//! digits is accepted everywhere a public key is read, so keys can be pinned in the config.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::DefsError;

const SECRET_LABEL: &str = "PORTCULLIS DEFS SECRET KEY";
const PUBLIC_LABEL: &str = "PORTCULLIS DEFS PUBLIC KEY";

/// Key files are tiny; anything bigger is not a key.
const MAX_KEY_FILE: u64 = 4096;

/// A short identifier of a public key: the first 8 bytes of its SHA-256, in hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub String);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn key_id_of(key: &VerifyingKey) -> KeyId {
    KeyId(hex::encode(&Sha256::digest(key.as_bytes())[..8]))
}

/// A publisher's signing key (secret).
pub struct PublisherKey {
    key: SigningKey,
}

impl std::fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "PublisherKey({})", self.key_id())
    }
}

impl PublisherKey {
    /// Generates a new random key from the operating system's random source.
    pub fn generate() -> PublisherKey {
        PublisherKey {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<PublisherKey, DefsError> {
        let bytes = read_key_bytes(path, SECRET_LABEL)?;
        Ok(PublisherKey {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The matching public key, to pin on appliances.
    pub fn public(&self) -> PinnedKey {
        PinnedKey {
            key: self.key.verifying_key(),
        }
    }

    /// The key id of the public key.
    pub fn key_id(&self) -> KeyId {
        key_id_of(&self.key.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }

    fn to_file_text(&self) -> String {
        armor(SECRET_LABEL, &hex::encode(self.key.to_bytes()))
    }
}

/// A trusted (pinned) publisher public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedKey {
    key: VerifyingKey,
}

impl PinnedKey {
    /// Parses 64 hex digits (the form used in the configuration) or a public key file's text.
    pub fn from_text(text: &str) -> Result<PinnedKey, DefsError> {
        let bytes = decode_key_text(text, PUBLIC_LABEL).map_err(|reason| DefsError::KeyText {
            text: text.chars().take(80).collect(),
            reason,
        })?;
        VerifyingKey::from_bytes(&bytes)
            .map(|key| PinnedKey { key })
            .map_err(|_| DefsError::KeyText {
                text: text.chars().take(80).collect(),
                reason: "not an ed25519 public key".into(),
            })
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<PinnedKey, DefsError> {
        let bytes = read_key_bytes(path, PUBLIC_LABEL)?;
        VerifyingKey::from_bytes(&bytes)
            .map(|key| PinnedKey { key })
            .map_err(|_| DefsError::Key {
                path: path.to_path_buf(),
                reason: "not an ed25519 public key".into(),
            })
    }

    /// The key as 64 hex digits, as pinned in the configuration.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// The key id (first 8 bytes of the SHA-256 of the key).
    pub fn key_id(&self) -> KeyId {
        key_id_of(&self.key)
    }

    /// Verifies a signature strictly (rejecting malleable and small-order forms).
    pub(crate) fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.key.verify_strict(message, signature).is_ok()
    }
}

/// Files written by [`keygen`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The secret key file (mode 0600).
    pub secret_path: PathBuf,
    /// The public key file (`<secret>.pub`).
    pub public_path: PathBuf,
    /// The public key, for pinning.
    pub public: PinnedKey,
}

/// Generates a publisher key pair: the secret at `out` (created new, mode 0600; an existing
/// file is never overwritten) and the public key at `out.pub`.
pub fn keygen(out: &Path) -> Result<GeneratedKey, DefsError> {
    let key = PublisherKey::generate();
    let mut public_path = out.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    for path in [out, public_path.as_path()] {
        if path.exists() {
            return Err(DefsError::OutputExists {
                path: path.to_path_buf(),
            });
        }
    }
    write_new(out, key.to_file_text().as_bytes(), 0o600)?;
    write_new(
        &public_path,
        armor(PUBLIC_LABEL, &key.public().to_hex()).as_bytes(),
        0o644,
    )?;
    tracing::info!(key_id = %key.key_id(), path = %out.display(), "definitions publisher key generated");
    Ok(GeneratedKey {
        secret_path: out.to_path_buf(),
        public_path,
        public: key.public(),
    })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), DefsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(DefsError::io("create key file", path))?;
    file.write_all(contents)
        .and_then(|_| file.sync_all())
        .map_err(DefsError::io("write key file", path))
}

fn armor(label: &str, hex: &str) -> String {
    format!("-----BEGIN {label}-----\n{hex}\n-----END {label}-----\n")
}

fn read_key_bytes(path: &Path, label: &str) -> Result<[u8; 32], DefsError> {
    let text = crate::read_bounded(path, MAX_KEY_FILE, "read key file")?.ok_or_else(|| {
        DefsError::Key {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_KEY_FILE} bytes"),
        }
    })?;
    let text = String::from_utf8(text).map_err(|_| DefsError::Key {
        path: path.to_path_buf(),
        reason: "not text".into(),
    })?;
    decode_key_text(&text, label).map_err(|reason| DefsError::Key {
        path: path.to_path_buf(),
        reason,
    })
}

/// Accepts the armored form with the expected label, or bare hex.
fn decode_key_text(text: &str, label: &str) -> Result<[u8; 32], String> {
    let mut body = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line
            .strip_prefix("-----BEGIN ")
            .or_else(|| line.strip_prefix("-----END "))
        {
            if rest.trim_end_matches('-') != label {
                return Err(format!("expected a {label}, found {line}"));
            }
            continue;
        }
        body.push_str(line);
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&body, &mut bytes)
        .map_err(|_| "expected 64 hexadecimal digits".to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_pair_that_loads_back_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("publisher.key");
        let generated = keygen(&out).unwrap();
        let secret = PublisherKey::load(&out).unwrap();
        let public = PinnedKey::load(&generated.public_path).unwrap();
        assert_eq!(secret.public(), public);
        assert_eq!(PinnedKey::from_text(&public.to_hex()).unwrap(), public);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(keygen(&out), Err(DefsError::OutputExists { .. })));
    }

    #[test]
    fn a_public_key_file_is_not_accepted_as_a_secret_key() {
        let dir = tempfile::tempdir().unwrap();
        let generated = keygen(&dir.path().join("k")).unwrap();
        assert!(matches!(
            PublisherKey::load(&generated.public_path),
            Err(DefsError::Key { .. })
        ));
        assert!(PinnedKey::from_text("abcd").is_err());
    }
}

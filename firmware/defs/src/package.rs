//! The package format: a directory of signature files plus `manifest.json` and `manifest.sig`.
//!
//! The signature covers the exact bytes of `manifest.json` (prefixed by a domain string), so no
//! JSON canonicalisation is involved; the manifest then pins every file by size and SHA-256.
//! Verification checks the signature before parsing the JSON, and reads every file with a
//! byte limit, so a hostile mirror can neither confuse the parser nor feed endless data.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{KeyId, PinnedKey, PublisherKey};
use crate::selftest::{KnownSample, SelfTestSpec, self_test};
use crate::{DefsError, read_bounded};
use portcullis_av::{EngineBuilder, SignatureFormat};

/// The manifest file name inside a package.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature file name inside a package.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Prepended to the manifest bytes before signing, so a definitions key's signature can never
/// be mistaken for a signature over anything else.
const SIGNING_CONTEXT: &[u8] = b"portcullis-defs manifest v1\n";

/// Signature files hold a few lines; anything larger is refused unread (updaters use the same
/// limit while downloading `manifest.sig`).
pub const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;
const MAX_SIGNATURE_FILE: u64 = MAX_SIGNATURE_BYTES;

/// The signed description of a definitions package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format; must be [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Package version; each published package must have a higher one.
    pub version: u64,
    /// When the publisher built the package.
    pub created: DateTime<Utc>,
    /// After this instant appliances refuse the package (freeze protection).
    pub expires: DateTime<Utc>,
    /// The signature files, each pinned by size and hash.
    pub files: Vec<FileEntry>,
    /// What the appliance's self-test must see after loading the package.
    #[serde(default)]
    pub self_test: SelfTestSpec,
}

/// One file of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Plain file name (no directories), e.g. `main.hdb`.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

/// Resource limits applied while verifying (and downloading) a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `manifest.json`.
    pub max_manifest_bytes: u64,
    /// Most files in one package.
    pub max_files: usize,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Largest sum of all files.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    /// 1 MiB manifest, 256 files, 512 MiB per file, 1 GiB in total: well above real ClamAV-sized
    /// sets (a few hundred MB), well below what would fill an appliance's disk.
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 1024 * 1024,
            max_files: 256,
            max_file_bytes: 512 * 1024 * 1024,
            max_total_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// A package that passed [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPackage {
    /// The package directory.
    pub dir: PathBuf,
    /// The verified manifest.
    pub manifest: Manifest,
    /// The pinned keys whose signatures verified.
    pub signed_by: Vec<KeyId>,
}

impl VerifiedPackage {
    /// Paths of the signature files, in manifest order (the only files to load).
    pub fn signature_files(&self) -> Vec<PathBuf> {
        self.manifest
            .files
            .iter()
            .map(|f| self.dir.join(&f.name))
            .collect()
    }
}

/// What [`build`] needs besides the files and keys.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The version; must exceed every version published before.
    pub version: u64,
    /// Creation time (normally now).
    pub created: DateTime<Utc>,
    /// Expiry; appliances refuse the package afterwards.
    pub expires: DateTime<Utc>,
    /// Samples the appliance must detect with the given names after loading.
    pub known_samples: Vec<KnownSample>,
}

/// Builds and signs a package from the signature files directly in `from_dir` (files with other
/// extensions are ignored) into the new or empty directory `out_dir`. Equivalent to
/// [`build_with`] with one key and no known samples.
pub fn build(
    from_dir: &Path,
    key: &PublisherKey,
    version: u64,
    expires: DateTime<Utc>,
    out_dir: &Path,
) -> Result<Manifest, DefsError> {
    let options = BuildOptions {
        version,
        created: Utc::now(),
        expires,
        known_samples: Vec::new(),
    };
    build_with(from_dir, &[key], &options, out_dir)
}

/// Builds a package signed by every key in `keys` (several during a key rotation). The set is
/// loaded and self-tested first, so a publisher cannot ship definitions that would fail on the
/// appliances.
pub fn build_with(
    from_dir: &Path,
    keys: &[&PublisherKey],
    options: &BuildOptions,
    out_dir: &Path,
) -> Result<Manifest, DefsError> {
    if keys.is_empty() {
        return Err(DefsError::NoPinnedKeys);
    }
    if options.expires <= options.created {
        return Err(DefsError::ManifestInvalid {
            reason: "expiry must be after creation".into(),
        });
    }
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(from_dir).map_err(DefsError::io("list", from_dir))? {
        let path = entry.map_err(DefsError::io("list", from_dir))?.path();
        if path.is_file() && SignatureFormat::from_path(&path).is_some() {
            sources.push(path);
        }
    }
    sources.sort();
    if sources.is_empty() {
        return Err(DefsError::EmptyPackage {
            path: from_dir.to_path_buf(),
        });
    }
    prepare_empty_dir(out_dir)?;

    let mut files = Vec::new();
    for source in &sources {
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        validate_file_name(&name)?;
        let target = out_dir.join(&name);
        let mut input = std::fs::File::open(source).map_err(DefsError::io("open", source))?;
        let mut output =
            std::fs::File::create(&target).map_err(DefsError::io("create", &target))?;
        let mut hasher = HashingWriter {
            inner: &mut output,
            hasher: Sha256::new(),
            written: 0,
        };
        std::io::copy(&mut input, &mut hasher).map_err(DefsError::io("copy", &target))?;
        let (size, sha256) = (hasher.written, hex::encode(hasher.hasher.finalize()));
        output.sync_all().map_err(DefsError::io("sync", &target))?;
        files.push(FileEntry { name, size, sha256 });
    }

    let mut builder = EngineBuilder::new();
    for file in &files {
        builder.load_file(&out_dir.join(&file.name))?;
    }
    let (engine, report) = builder.build()?;
    let self_test_spec = SelfTestSpec {
        min_signatures: report.loaded(),
        samples: options.known_samples.clone(),
    };
    self_test(&engine, &report, &self_test_spec)?;

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        version: options.version,
        created: options.created,
        expires: options.expires,
        files,
        self_test: self_test_spec,
    };
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| DefsError::ManifestInvalid {
            reason: e.to_string(),
        })?;
    let manifest_path = out_dir.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, &manifest_bytes)
        .map_err(DefsError::io("write", &manifest_path))?;
    let mut signatures = String::new();
    for key in keys {
        signatures.push_str(&signature_line(key, &manifest_bytes));
    }
    let signature_path = out_dir.join(SIGNATURE_FILE);
    std::fs::write(&signature_path, signatures).map_err(DefsError::io("write", &signature_path))?;
    tracing::info!(version = manifest.version, files = manifest.files.len(), signatures = report.loaded(), out = %out_dir.display(), "definitions package built");
    Ok(manifest)
}

/// Adds one more signature to an existing package (co-signing with a new key during rotation).
pub fn add_signature(package_dir: &Path, key: &PublisherKey) -> Result<(), DefsError> {
    let manifest_path = package_dir.join(MANIFEST_FILE);
    let manifest_bytes = read_bounded(
        &manifest_path,
        Limits::default().max_manifest_bytes,
        "read manifest",
    )?
    .ok_or(DefsError::ManifestTooLarge {
        limit: Limits::default().max_manifest_bytes,
    })?;
    let signature_path = package_dir.join(SIGNATURE_FILE);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&signature_path)
        .map_err(DefsError::io("open", &signature_path))?;
    file.write_all(signature_line(key, &manifest_bytes).as_bytes())
        .map_err(DefsError::io("write", &signature_path))
}

fn signature_line(key: &PublisherKey, manifest_bytes: &[u8]) -> String {
    let signature = key.sign(&signed_message(manifest_bytes));
    format!(
        "ed25519 {} {}\n",
        key.key_id(),
        hex::encode(signature.to_bytes())
    )
}

fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest_bytes.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(manifest_bytes);
    message
}

/// Verifies a package directory against the pinned keys: signature, then manifest content,
/// then version (must exceed `installed_version`), expiry (against `now`), then every file's
/// size and SHA-256 within `limits`. Files not listed in the manifest are ignored (never loaded).
pub fn verify(
    package_dir: &Path,
    pinned_keys: &[PinnedKey],
    installed_version: Option<u64>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<VerifiedPackage, DefsError> {
    let (manifest, signed_by) =
        verify_manifest(package_dir, pinned_keys, installed_version, now, limits)?;
    for entry in &manifest.files {
        let path = package_dir.join(&entry.name);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DefsError::FileMissing {
                    name: entry.name.clone(),
                });
            }
            Err(e) => return Err(DefsError::io("open", &path)(e)),
        };
        check_file(entry, file, std::io::sink())?;
    }
    tracing::info!(version = manifest.version, dir = %package_dir.display(), signed_by = ?signed_by, "definitions package verified");
    Ok(VerifiedPackage {
        dir: package_dir.to_path_buf(),
        manifest,
        signed_by,
    })
}

/// Checks the signature and the manifest only (not the files): what an updater does before it
/// downloads the files the manifest lists.
pub fn verify_manifest(
    package_dir: &Path,
    pinned_keys: &[PinnedKey],
    installed_version: Option<u64>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(Manifest, Vec<KeyId>), DefsError> {
    if pinned_keys.is_empty() {
        return Err(DefsError::NoPinnedKeys);
    }
    let signature_path = package_dir.join(SIGNATURE_FILE);
    let signatures = match read_bounded(&signature_path, MAX_SIGNATURE_FILE, "read signature file")
    {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return Err(DefsError::NotSigned {
                path: package_dir.to_path_buf(),
            });
        }
        Err(DefsError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(DefsError::NotSigned {
                path: package_dir.to_path_buf(),
            });
        }
        Err(e) => return Err(e),
    };
    let manifest_path = package_dir.join(MANIFEST_FILE);
    let manifest_bytes = read_bounded(&manifest_path, limits.max_manifest_bytes, "read manifest")?
        .ok_or(DefsError::ManifestTooLarge {
            limit: limits.max_manifest_bytes,
        })?;
    let signed_by = check_signatures(package_dir, &signatures, &manifest_bytes, pinned_keys)?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| DefsError::ManifestInvalid {
            reason: e.to_string(),
        })?;
    check_manifest(&manifest, installed_version, now, limits)?;
    Ok((manifest, signed_by))
}

fn check_signatures(
    package_dir: &Path,
    signatures: &[u8],
    manifest_bytes: &[u8],
    pinned_keys: &[PinnedKey],
) -> Result<Vec<KeyId>, DefsError> {
    let text = String::from_utf8_lossy(signatures);
    let message = signed_message(manifest_bytes);
    let mut valid = Vec::new();
    let mut invalid = None;
    let mut unknown = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [algorithm, key_id, signature_hex] = fields[..] else {
            continue;
        };
        if algorithm != "ed25519" {
            continue;
        }
        let Some(key) = pinned_keys.iter().find(|k| k.key_id().0 == key_id) else {
            unknown.push(key_id.to_string());
            continue;
        };
        let mut bytes = [0u8; 64];
        let good = hex::decode_to_slice(signature_hex, &mut bytes).is_ok()
            && key.verify(&message, &Signature::from_bytes(&bytes));
        if good {
            if !valid.contains(&key.key_id()) {
                valid.push(key.key_id());
            }
        } else {
            invalid.get_or_insert_with(|| key.key_id());
        }
    }
    if !valid.is_empty() {
        return Ok(valid);
    }
    if let Some(key_id) = invalid {
        return Err(DefsError::SignatureInvalid { key_id: key_id.0 });
    }
    if !unknown.is_empty() {
        return Err(DefsError::UnknownSigner {
            key_ids: unknown.join(", "),
        });
    }
    Err(DefsError::NotSigned {
        path: package_dir.to_path_buf(),
    })
}

fn check_manifest(
    manifest: &Manifest,
    installed_version: Option<u64>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(), DefsError> {
    let invalid = |reason: String| Err(DefsError::ManifestInvalid { reason });
    if manifest.format != MANIFEST_FORMAT {
        return invalid(format!(
            "format {} is not supported (expected {MANIFEST_FORMAT})",
            manifest.format
        ));
    }
    if manifest.expires <= manifest.created {
        return invalid("expires before it was created".into());
    }
    if manifest.files.is_empty() {
        return invalid("lists no files".into());
    }
    if let Some(installed) = installed_version
        && manifest.version <= installed
    {
        return Err(DefsError::Rollback {
            offered: manifest.version,
            installed,
        });
    }
    if now >= manifest.expires {
        return Err(DefsError::Expired {
            expires: manifest.expires,
            now,
        });
    }
    if manifest.files.len() > limits.max_files {
        return Err(DefsError::TooManyFiles {
            count: manifest.files.len(),
            limit: limits.max_files,
        });
    }
    let mut total = 0u64;
    for (index, entry) in manifest.files.iter().enumerate() {
        validate_file_name(&entry.name)?;
        if manifest.files[..index]
            .iter()
            .any(|other| other.name == entry.name)
        {
            return invalid(format!("file {} is listed twice", entry.name));
        }
        if entry.size > limits.max_file_bytes {
            return Err(DefsError::FileTooLarge {
                name: entry.name.clone(),
                size: entry.size,
                limit: limits.max_file_bytes,
            });
        }
        if entry.sha256.len() != 64 || hex::decode(&entry.sha256).is_err() {
            return invalid(format!("file {} has a malformed sha256", entry.name));
        }
        total = total.saturating_add(entry.size);
    }
    if total > limits.max_total_bytes {
        return Err(DefsError::PackageTooLarge {
            total,
            limit: limits.max_total_bytes,
        });
    }
    Ok(())
}

/// File names must be plain signature file names: no directories, no hidden files, and not the
/// package's own metadata, so a manifest can never point outside the package.
fn validate_file_name(name: &str) -> Result<(), DefsError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != MANIFEST_FILE
        && name != SIGNATURE_FILE
        && SignatureFormat::from_path(Path::new(name)).is_some();
    if ok {
        Ok(())
    } else {
        Err(DefsError::ManifestInvalid {
            reason: format!("file name {name:?} is not a plain signature file name"),
        })
    }
}

/// Streams one file into `sink` while checking it against its manifest entry. Reads at most one
/// byte more than the declared size, so endless data is cut off; usable while downloading.
pub fn check_file(entry: &FileEntry, reader: impl Read, sink: impl Write) -> Result<(), DefsError> {
    let mut writer = HashingWriter {
        inner: sink,
        hasher: Sha256::new(),
        written: 0,
    };
    let copied = std::io::copy(&mut reader.take(entry.size.saturating_add(1)), &mut writer)
        .map_err(DefsError::io("read", PathBuf::from(&entry.name)))?;
    if copied != entry.size {
        let actual = if copied > entry.size {
            format!("more than {}", entry.size)
        } else {
            copied.to_string()
        };
        return Err(DefsError::FileSizeMismatch {
            name: entry.name.clone(),
            expected: entry.size,
            actual,
        });
    }
    if hex::encode(writer.hasher.finalize()) != entry.sha256.to_ascii_lowercase() {
        return Err(DefsError::FileHashMismatch {
            name: entry.name.clone(),
        });
    }
    Ok(())
}

/// A writer that hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn prepare_empty_dir(dir: &Path) -> Result<(), DefsError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(DefsError::OutputExists {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(DefsError::io("create", dir))
        }
        Err(e) => Err(DefsError::io("open", dir)(e)),
    }
}

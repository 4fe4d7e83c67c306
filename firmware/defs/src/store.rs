//! The definitions store on the appliance: verified versions on disk, one of them current.
//!
//! ```text
//! <root>/versions/<version, 20 digits>/   a verified package (manifest, signature, files)
//! <root>/current  -> versions/<N>          symlink, switched by rename (atomic)
//! <root>/previous -> versions/<M>          the version kept for rollback
//! <root>/state.json                        {"highest_version": N}: the rollback-protection mark
//! <root>/staging/                          installs in progress; emptied on open
//! <root>/lock                              held during install and rollback
//! ```
//! Crash safety: a new version is complete and fsynced in `versions/` before `current` moves,
//! and the symlink switch is a single rename, so `current` always names a whole, verified set.

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use portcullis_av::{Engine, EngineBuilder, LoadReport};

use crate::keys::PinnedKey;
use crate::package::{
    Limits, MANIFEST_FILE, Manifest, SIGNATURE_FILE, check_file, verify, verify_manifest,
};
use crate::selftest::self_test;
use crate::{DefsError, read_bounded};

const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";
const VERSIONS: &str = "versions";
const STAGING: &str = "staging";
const STATE: &str = "state.json";
const LOCK: &str = "lock";

/// The persisted rollback-protection mark.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct StoreState {
    highest_version: u64,
}

/// One installed version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledVersion {
    /// The package version.
    pub version: u64,
    /// When the publisher built it.
    pub created: DateTime<Utc>,
    /// When it expires (the updater alerts on staleness).
    pub expires: DateTime<Utc>,
    /// Its directory.
    pub dir: PathBuf,
    /// The signature files to load, in manifest order.
    pub files: Vec<PathBuf>,
}

/// What is installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    /// The version in use, if any.
    pub current: Option<InstalledVersion>,
    /// The version kept for rollback, if any.
    pub previous: Option<InstalledVersion>,
    /// The highest version ever installed; packages must be newer than this.
    pub highest_version: u64,
}

/// A successful install: the new engine is already loaded and self-tested, ready to swap in.
#[derive(Debug)]
pub struct Installed {
    /// The installed version.
    pub version: InstalledVersion,
    /// The engine built from it.
    pub engine: Engine,
    /// How its files loaded.
    pub report: LoadReport,
}

/// The definitions store rooted at one directory.
#[derive(Clone, Debug)]
pub struct DefinitionsStore {
    root: PathBuf,
}

impl DefinitionsStore {
    /// Opens (creating if needed) the store and removes leftovers of interrupted installs.
    pub fn open(root: &Path) -> Result<DefinitionsStore, DefsError> {
        std::fs::create_dir_all(root.join(VERSIONS))
            .map_err(DefsError::io("create", root.join(VERSIONS)))?;
        let staging = root.join(STAGING);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(DefsError::io("clean", &staging))?;
        }
        Ok(DefinitionsStore {
            root: root.to_path_buf(),
        })
    }

    /// The directory of the current version (what `--defs` should point at), if any.
    pub fn current_dir(&self) -> Option<PathBuf> {
        self.link_version(CURRENT).map(|v| self.version_dir(v))
    }

    /// What is installed.
    pub fn status(&self) -> Result<StoreStatus, DefsError> {
        Ok(StoreStatus {
            current: self
                .link_version(CURRENT)
                .map(|v| self.installed(v))
                .transpose()?,
            previous: self
                .link_version(PREVIOUS)
                .map(|v| self.installed(v))
                .transpose()?,
            highest_version: self.state()?.highest_version,
        })
    }

    /// Loads the current version into a new engine (at start-up); `None` when nothing is installed.
    pub fn load_current(&self) -> Result<Option<(Engine, LoadReport)>, DefsError> {
        let Some(version) = self.link_version(CURRENT) else {
            return Ok(None);
        };
        let installed = self.installed(version)?;
        load_files(&installed.files).map(Some)
    }

    /// Installs a package: copy into staging, verify the copy (signature, version above the
    /// highest ever installed, expiry, sizes and hashes within `limits`), load and self-test it,
    /// then move it into place and switch `current` atomically, keeping the old one as `previous`.
    /// On any failure nothing changes.
    pub fn install(
        &self,
        package_dir: &Path,
        pinned_keys: &[PinnedKey],
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<Installed, DefsError> {
        let _lock = self.lock()?;
        let highest = self
            .state()?
            .highest_version
            .max(self.link_version(CURRENT).unwrap_or(0));
        let installed_version = if highest == 0 && self.link_version(CURRENT).is_none() {
            None
        } else {
            Some(highest)
        };
        let staging = self
            .root
            .join(STAGING)
            .join(format!("install-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(DefsError::io("clean", &staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(DefsError::io("create", &staging))?;
        let result = self.install_from_staging(
            package_dir,
            &staging,
            pinned_keys,
            installed_version,
            now,
            limits,
        );
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        match &result {
            Ok(installed) => {
                tracing::info!(version = installed.version.version, "definitions installed")
            }
            Err(error) => {
                tracing::warn!(package = %package_dir.display(), %error, "definitions update refused")
            }
        }
        result
    }

    fn install_from_staging(
        &self,
        package_dir: &Path,
        staging: &Path,
        pinned_keys: &[PinnedKey],
        installed_version: Option<u64>,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<Installed, DefsError> {
        // Trust the source's manifest only after its signature checks out; then copy exactly
        // the listed files with their declared sizes, and verify our own copy in full.
        let (manifest, _) =
            verify_manifest(package_dir, pinned_keys, installed_version, now, limits)?;
        for name in [MANIFEST_FILE, SIGNATURE_FILE] {
            std::fs::copy(package_dir.join(name), staging.join(name))
                .map_err(DefsError::io("copy", package_dir.join(name)))?;
        }
        for entry in &manifest.files {
            let source = package_dir.join(&entry.name);
            let input = File::open(&source).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => DefsError::FileMissing {
                    name: entry.name.clone(),
                },
                _ => DefsError::io("open", &source)(e),
            })?;
            let target = staging.join(&entry.name);
            let output = File::create(&target).map_err(DefsError::io("create", &target))?;
            check_file(entry, input, &output)?;
            output.sync_all().map_err(DefsError::io("sync", &target))?;
        }
        let verified = verify(staging, pinned_keys, installed_version, now, limits)?;
        let (engine, report) = load_files(&verified.signature_files())?;
        self_test(&engine, &report, &verified.manifest.self_test)?;

        let version = verified.manifest.version;
        let final_dir = self.version_dir(version);
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(DefsError::io("replace", &final_dir))?;
        }
        sync_dir(staging)?;
        std::fs::rename(staging, &final_dir)
            .map_err(DefsError::io("move into place", &final_dir))?;
        sync_dir(&self.root.join(VERSIONS))?;
        self.write_state(StoreState {
            highest_version: version,
        })?;
        if let Some(old) = self.link_version(CURRENT) {
            self.point(PREVIOUS, old)?;
        }
        self.point(CURRENT, version)?;
        self.prune();
        Ok(Installed {
            version: self.installed(version)?,
            engine,
            report,
        })
    }

    /// Switches back to the previous version (after a failed self-test in service or a
    /// misbehaving set). The rolled-back version is deleted; the rollback-protection mark stays,
    /// so the publisher must publish a higher version to fix it.
    pub fn rollback(&self) -> Result<InstalledVersion, DefsError> {
        let _lock = self.lock()?;
        let previous = self
            .link_version(PREVIOUS)
            .ok_or(DefsError::NoPreviousVersion)?;
        let from = self.link_version(CURRENT);
        self.point(CURRENT, previous)?;
        let link = self.root.join(PREVIOUS);
        std::fs::remove_file(&link).map_err(DefsError::io("remove", &link))?;
        sync_dir(&self.root)?;
        self.prune();
        tracing::warn!(from = ?from, to = previous, "definitions rolled back");
        self.installed(previous)
    }

    fn lock(&self) -> Result<File, DefsError> {
        let path = self.root.join(LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(DefsError::io("open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(DefsError::StoreBusy),
            Err(std::fs::TryLockError::Error(e)) => Err(DefsError::io("lock", &path)(e)),
        }
    }

    fn version_dir(&self, version: u64) -> PathBuf {
        self.root.join(VERSIONS).join(format!("{version:020}"))
    }

    fn link_version(&self, link: &str) -> Option<u64> {
        let target = std::fs::read_link(self.root.join(link)).ok()?;
        target.file_name()?.to_str()?.parse().ok()
    }

    /// Points `link` at a version: a new symlink renamed over the old one (atomic).
    fn point(&self, link: &str, version: u64) -> Result<(), DefsError> {
        let temporary = self.root.join(format!(".{link}.new"));
        let _ = std::fs::remove_file(&temporary);
        let target = Path::new(VERSIONS).join(format!("{version:020}"));
        std::os::unix::fs::symlink(&target, &temporary)
            .map_err(DefsError::io("create link", &temporary))?;
        let path = self.root.join(link);
        std::fs::rename(&temporary, &path).map_err(DefsError::io("switch link", &path))?;
        sync_dir(&self.root)
    }

    fn installed(&self, version: u64) -> Result<InstalledVersion, DefsError> {
        let dir = self.version_dir(version);
        let path = dir.join(MANIFEST_FILE);
        let bytes = read_bounded(&path, Limits::default().max_manifest_bytes, "read manifest")?
            .ok_or(DefsError::ManifestTooLarge {
                limit: Limits::default().max_manifest_bytes,
            })?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| DefsError::ManifestInvalid {
                reason: e.to_string(),
            })?;
        let files = manifest.files.iter().map(|f| dir.join(&f.name)).collect();
        Ok(InstalledVersion {
            version: manifest.version,
            created: manifest.created,
            expires: manifest.expires,
            dir,
            files,
        })
    }

    fn state(&self) -> Result<StoreState, DefsError> {
        let path = self.root.join(STATE);
        match read_bounded(&path, 4096, "read store state") {
            Ok(Some(bytes)) => {
                serde_json::from_slice(&bytes).map_err(|e| DefsError::ManifestInvalid {
                    reason: format!("{}: {e}", path.display()),
                })
            }
            Ok(None) => Err(DefsError::ManifestInvalid {
                reason: format!("{} is too large", path.display()),
            }),
            Err(DefsError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(StoreState::default())
            }
            Err(e) => Err(e),
        }
    }

    fn write_state(&self, state: StoreState) -> Result<(), DefsError> {
        let path = self.root.join(STATE);
        let temporary = self.root.join(".state.json.new");
        let bytes = serde_json::to_vec(&state).map_err(|e| DefsError::ManifestInvalid {
            reason: e.to_string(),
        })?;
        let file = File::create(&temporary).map_err(DefsError::io("create", &temporary))?;
        std::io::Write::write_all(&mut &file, &bytes)
            .and_then(|_| file.sync_all())
            .map_err(DefsError::io("write", &temporary))?;
        std::fs::rename(&temporary, &path).map_err(DefsError::io("replace", &path))?;
        sync_dir(&self.root)
    }

    /// Deletes versions that are neither current nor previous. Failures only cost disk space.
    fn prune(&self) {
        let keep = [self.link_version(CURRENT), self.link_version(PREVIOUS)];
        let Ok(entries) = std::fs::read_dir(self.root.join(VERSIONS)) else {
            return;
        };
        for entry in entries.flatten() {
            let version = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            if version.is_none() || !keep.contains(&version) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn load_files(files: &[PathBuf]) -> Result<(Engine, LoadReport), DefsError> {
    let mut builder = EngineBuilder::new();
    for file in files {
        builder.load_file(file)?;
    }
    Ok(builder.build()?)
}

fn sync_dir(dir: &Path) -> Result<(), DefsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DefsError::io("sync directory", dir))
}

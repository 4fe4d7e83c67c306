//! The appliance data root and crash-safe writes into it.
//!
//! Layout (the contract with the disk image): `config/portcullis.toml` (the gateway config),
//! `system/` (hostname, timezone, ntp, network/10-portcullis.network, resolv.conf,
//! setup-complete) and `data/` (the gateway's queues and control socket).
//!
//! Every change is a [`Changes`] set: each new file is first written beside its target under a
//! temporary name and fsynced; only when all of them are on disk are they renamed into place,
//! one by one in the order given, and the directories fsynced. A failure while staging leaves
//! every target as it was. The first-boot setup puts `setup-complete` last, so a power cut during
//! the renames leaves the box without it and the wizard simply runs again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use portcullis_gateway::config::control_socket_path;

/// The data root on the appliance (the data partition's mount point).
pub const DEFAULT_ROOT: &str = "/var/lib/portcullis";
/// Name of the systemd-networkd file for the first Ethernet NIC.
pub const NETWORK_FILE: &str = "10-portcullis.network";

/// Mode of files other programs must read (networkd, the resolver, the boot-time applier).
pub const MODE_PUBLIC: u32 = 0o644;
/// Mode of files only root may read (the gateway config holds the password hash).
pub const MODE_PRIVATE: u32 = 0o600;

/// A file operation failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct StoreError {
    /// The file or directory.
    pub path: PathBuf,
    /// What went wrong.
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError {
        path: path.to_path_buf(),
        source,
    }
}

/// The appliance data root and the paths the console reads and writes in it.
#[derive(Debug, Clone)]
pub struct DataRoot {
    root: PathBuf,
}

impl DataRoot {
    /// The data root at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataRoot {
        DataRoot { root: root.into() }
    }

    /// The root directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `config/portcullis.toml`: the gateway configuration.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config").join("portcullis.toml")
    }

    /// `data/`: the gateway's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The gateway's control socket in `data/`.
    pub fn control_socket(&self) -> PathBuf {
        control_socket_path(&self.data_dir())
    }

    /// `system/`: OS settings applied by the image.
    pub fn system_dir(&self) -> PathBuf {
        self.root.join("system")
    }

    /// `system/hostname`
    pub fn hostname_file(&self) -> PathBuf {
        self.system_dir().join("hostname")
    }

    /// `system/timezone`
    pub fn timezone_file(&self) -> PathBuf {
        self.system_dir().join("timezone")
    }

    /// `system/ntp`
    pub fn ntp_file(&self) -> PathBuf {
        self.system_dir().join("ntp")
    }

    /// `system/network/10-portcullis.network`
    pub fn network_file(&self) -> PathBuf {
        self.system_dir().join("network").join(NETWORK_FILE)
    }

    /// `system/resolv.conf` (static addressing only).
    pub fn resolv_conf(&self) -> PathBuf {
        self.system_dir().join("resolv.conf")
    }

    /// `system/setup-complete`: present once the first-boot setup has been applied.
    pub fn setup_complete_file(&self) -> PathBuf {
        self.system_dir().join("setup-complete")
    }

    /// Whether the first-boot setup has been applied.
    pub fn is_setup_complete(&self) -> bool {
        self.setup_complete_file().is_file()
    }

    /// A one-line setting file (`hostname`, `timezone`…), trimmed; `None` if absent or empty.
    pub fn read_setting(&self, path: &Path) -> Option<String> {
        let text = fs::read_to_string(path).ok()?;
        let line = text.lines().next()?.trim();
        (!line.is_empty()).then(|| line.to_string())
    }

    /// Erases everything the appliance keeps: config, OS settings and gateway data (queues,
    /// quarantine, logs). `setup-complete` goes first, so an interrupted erase still ends in
    /// the first-boot wizard. `lost+found` (the file system's own) stays.
    pub fn erase_everything(&self) -> Result<(), StoreError> {
        let marker = self.setup_complete_file();
        match fs::remove_file(&marker) {
            Ok(()) => sync_dir(&self.system_dir())?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(&marker)(e)),
        }
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(at(&self.root)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(at(&self.root))?;
            if entry.file_name() == "lost+found" {
                continue;
            }
            let path = entry.path();
            // file_type() does not follow symlinks: a link is removed, never what it points to.
            let is_dir = entry.file_type().map_err(at(&path))?.is_dir();
            let removed = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(at(&path))?;
        }
        sync_dir(&self.root)
    }
}

/// One step of a [`Changes`] set.
#[derive(Debug)]
enum Change {
    /// A file staged at `temp`, to be renamed to `target`.
    Replace { temp: PathBuf, target: PathBuf },
    /// A file to delete (missing is fine).
    Remove { target: PathBuf },
}

/// A set of file changes applied together: staged first, then committed in order.
///
/// Dropping a set that was not committed deletes its staged temporary files, so an error or an
/// abort between staging and commit leaves nothing behind.
#[derive(Debug, Default)]
pub struct Changes {
    steps: Vec<Change>,
}

impl Changes {
    /// An empty set.
    pub fn new() -> Changes {
        Changes::default()
    }

    /// Writes `contents` beside `target` under a temporary name (mode `mode`) and fsyncs it;
    /// missing parent directories are created (mode 0755, or 0700 for private files).
    pub fn write(&mut self, target: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let dir_mode = if mode & 0o044 == 0 { 0o700 } else { 0o755 };
        create_dirs(dir, dir_mode)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.new-{}", std::process::id()));
        let _ = fs::remove_file(&temp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(at(&temp))?;
        // Recorded before writing, so a failed write still gets its temp file cleaned up.
        self.steps.push(Change::Replace {
            temp: temp.clone(),
            target: target.to_path_buf(),
        });
        file.write_all(contents).map_err(at(&temp))?;
        // The umask may have narrowed the mode given to open().
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(at(&temp))?;
        file.sync_all().map_err(at(&temp))?;
        Ok(())
    }

    /// Deletes `target` at commit time (in order with the other steps).
    pub fn remove(&mut self, target: &Path) {
        self.steps.push(Change::Remove {
            target: target.to_path_buf(),
        });
    }

    /// The files this set changes, in commit order.
    pub fn targets(&self) -> Vec<&Path> {
        self.steps
            .iter()
            .map(|step| match step {
                Change::Replace { target, .. } | Change::Remove { target } => target.as_path(),
            })
            .collect()
    }

    /// Renames every staged file into place and deletes the files to delete, in the order they
    /// were added, fsyncing each directory touched.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let mut steps = std::mem::take(&mut self.steps);
        for i in 0..steps.len() {
            let done = match &steps[i] {
                Change::Replace { temp, target } => fs::rename(temp, target)
                    .map_err(at(target))
                    .and_then(|()| sync_parent(target)),
                Change::Remove { target } => match fs::remove_file(target) {
                    Ok(()) => sync_parent(target),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(at(target)(e)),
                },
            };
            if let Err(e) = done {
                // The temp files not yet renamed are deleted when `self` drops.
                self.steps = steps.split_off(i);
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        for step in &self.steps {
            if let Change::Replace { temp, .. } = step {
                let _ = fs::remove_file(temp);
            }
        }
    }
}

/// Creates `dir` and its missing parents with `mode`.
fn create_dirs(dir: &Path, mode: u32) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(at(dir))
}

/// Makes a rename or delete of `path` durable.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a rename or delete in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    found.push(p.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn staged_files_appear_only_at_commit_and_in_place_of_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        fs::create_dir_all(root.system_dir()).unwrap();
        fs::write(root.hostname_file(), "old\n").unwrap();
        let mut changes = Changes::new();
        changes
            .write(&root.hostname_file(), b"gw1\n", MODE_PUBLIC)
            .unwrap();
        changes
            .write(&root.config_file(), b"[smtp]\n", MODE_PRIVATE)
            .unwrap();
        assert_eq!(fs::read_to_string(root.hostname_file()).unwrap(), "old\n");
        assert!(!root.config_file().exists());
        changes.commit().unwrap();
        assert_eq!(fs::read_to_string(root.hostname_file()).unwrap(), "gw1\n");
        assert_eq!(
            files_under(dir.path()),
            ["config/portcullis.toml", "system/hostname"],
            "no temporary files left"
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.config_file()), 0o600);
        assert_eq!(mode(root.config_file().parent().unwrap()), 0o700);
        assert_eq!(mode(&root.hostname_file()), 0o644);
    }

    #[test]
    fn dropping_uncommitted_changes_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        let mut changes = Changes::new();
        changes
            .write(&root.network_file(), b"[Match]\n", MODE_PUBLIC)
            .unwrap();
        changes.remove(&root.resolv_conf());
        assert_eq!(files_under(dir.path()).len(), 1, "the staged temp file");
        drop(changes);
        assert!(files_under(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_stage_keeps_the_targets_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        fs::create_dir_all(root.system_dir()).unwrap();
        fs::write(root.hostname_file(), "old\n").unwrap();
        // A regular file where a directory is needed makes the second stage fail.
        fs::write(dir.path().join("config"), "not a directory").unwrap();
        let mut changes = Changes::new();
        changes
            .write(&root.hostname_file(), b"gw1\n", MODE_PUBLIC)
            .unwrap();
        let err = changes
            .write(&root.config_file(), b"x", MODE_PRIVATE)
            .unwrap_err();
        assert!(err.to_string().contains("config"), "{err}");
        drop(changes);
        assert_eq!(fs::read_to_string(root.hostname_file()).unwrap(), "old\n");
        assert_eq!(files_under(dir.path()), ["config", "system/hostname"]);
    }

    #[test]
    fn commit_removes_files_marked_for_removal_and_tolerates_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        fs::create_dir_all(root.system_dir()).unwrap();
        fs::write(root.resolv_conf(), "nameserver 192.0.2.1\n").unwrap();
        let mut changes = Changes::new();
        changes.remove(&root.resolv_conf());
        changes.remove(&root.ntp_file());
        changes.commit().unwrap();
        assert!(!root.resolv_conf().exists());
    }

    #[test]
    fn erase_everything_removes_all_but_lost_and_found_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), "x").unwrap();
        let root = DataRoot::new(dir.path());
        for p in [
            root.config_file(),
            root.setup_complete_file(),
            root.data_dir().join("queue/incoming/1"),
        ] {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "x").unwrap();
        }
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        root.erase_everything().unwrap();
        assert!(!root.is_setup_complete());
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["lost+found"]);
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn read_setting_takes_the_first_line_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        assert_eq!(root.read_setting(&root.hostname_file()), None);
        fs::create_dir_all(root.system_dir()).unwrap();
        fs::write(root.hostname_file(), " gw1 \nignored\n").unwrap();
        assert_eq!(
            root.read_setting(&root.hostname_file()).as_deref(),
            Some("gw1")
        );
        fs::write(root.ntp_file(), "\n").unwrap();
        assert_eq!(root.read_setting(&root.ntp_file()), None);
    }
}

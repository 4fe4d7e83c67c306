//! The box's disk as the harness handles it between boots: a fresh working copy of the image
//! for each run (the image itself is never written), and the few files the harness reads or
//! changes on the data partition while the box is off (the gateway config, for the
//! `[watchdog]` timeouts a rig may shorten). Files are read and written with e2fsprogs'
//! `debugfs` on the partition found by its GPT label, so no root, loop device or mount is
//! needed. The box must have been shut down cleanly first (the ext4 journal must be empty).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HilError;

/// Sector size of the appliance image (GPT written for 512-byte sectors).
const SECTOR: u64 = 512;

/// One GPT partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its label (`esp`, `root-a`, `root-b`, `data`).
    pub label: String,
    /// Byte offset in the disk image.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Reads the GPT of a raw disk image.
pub fn partitions(image: &Path) -> Result<Vec<Partition>, HilError> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |reason: &str| HilError::Disk {
        path: image.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut f = std::fs::File::open(image)
        .map_err(|e| HilError::io(format!("opening {}", image.display()), e))?;
    let mut header = [0u8; 92];
    f.seek(SeekFrom::Start(SECTOR))
        .and_then(|_| f.read_exact(&mut header))
        .map_err(|e| HilError::io(format!("reading the GPT header of {}", image.display()), e))?;
    if &header[..8] != b"EFI PART" {
        return Err(bad("no GPT header at sector 1"));
    }
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let entries_lba = u64_at(&header, 72);
    let count = u32_at(&header, 80) as usize;
    let size = u32_at(&header, 84) as usize;
    if !(128..=4096).contains(&size) || count > 1024 {
        return Err(bad("implausible GPT partition table"));
    }
    let mut table = vec![0u8; count * size];
    f.seek(SeekFrom::Start(entries_lba * SECTOR))
        .and_then(|_| f.read_exact(&mut table))
        .map_err(|e| HilError::io(format!("reading the GPT entries of {}", image.display()), e))?;
    Ok(table
        .chunks(size)
        .filter(|e| e[..16].iter().any(|&b| b != 0))
        .map(|e| {
            let units: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            let (first, last) = (u64_at(e, 32), u64_at(e, 40));
            Partition {
                label: String::from_utf16_lossy(&units),
                offset: first * SECTOR,
                size: (last + 1 - first) * SECTOR,
            }
        })
        .collect())
}

/// The partition labelled `label`.
pub fn partition(image: &Path, label: &str) -> Result<Partition, HilError> {
    partitions(image)?
        .into_iter()
        .find(|p| p.label == label)
        .ok_or_else(|| HilError::Disk {
            path: image.to_path_buf(),
            reason: format!("no partition labelled {label:?}"),
        })
}

/// Makes `to`, a sparse raw copy of `image` (raw or qcow2) for one run.
pub fn working_copy(image: &Path, to: &Path) -> Result<(), HilError> {
    let _ = std::fs::remove_file(to);
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(to))?;
    Ok(())
}

/// Appends `extra` to the `options` line of every systemd-boot entry on the ESP of `image`
/// (raw), e.g. `systemd.journald.forward_to_console=1` to see the box's journal on the serial
/// line. Uses mtools on the FAT file system in place.
pub fn append_kernel_options(image: &Path, extra: &str) -> Result<Vec<String>, HilError> {
    let esp = partition(image, "esp")?;
    let fat = format!("{}@@{}", image.display(), esp.offset);
    let mtools = |tool: &str| {
        let mut c = Command::new(tool);
        c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(&fat);
        c
    };
    let listing = run(mtools("mdir").args(["-b", "::/loader/entries"]))?;
    let dir = tempfile_dir()?;
    let mut changed = Vec::new();
    for entry in listing
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(".conf"))
    {
        let name = entry.rsplit('/').next().unwrap_or(entry).to_string();
        let text = run(mtools("mtype").arg(format!("::/loader/entries/{name}")))?;
        let edited: String = text
            .lines()
            .map(|l| {
                if l.starts_with("options") && !l.contains(extra) {
                    format!("{l} {extra}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let local = dir.join(&name);
        std::fs::write(&local, &edited)
            .map_err(|e| HilError::io(format!("writing {}", local.display()), e))?;
        run(mtools("mcopy")
            .arg("-o")
            .arg(&local)
            .arg(format!("::/loader/entries/{name}")))?;
        changed.push(name);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if changed.is_empty() {
        return Err(HilError::Disk {
            path: image.to_path_buf(),
            reason: "no systemd-boot entries in /loader/entries on the ESP".into(),
        });
    }
    Ok(changed)
}

/// An ext4 file system inside a raw disk image, edited with `debugfs`.
#[derive(Debug, Clone)]
pub struct Ext4Partition {
    spec: String,
    image: PathBuf,
}

impl Ext4Partition {
    /// The file system on the partition labelled `label` of `image`.
    pub fn open(image: &Path, label: &str) -> Result<Ext4Partition, HilError> {
        let p = partition(image, label)?;
        Ok(Ext4Partition {
            spec: format!("{}?offset={}", image.display(), p.offset),
            image: image.to_path_buf(),
        })
    }

    /// Refuses to go on when the file system was not unmounted cleanly: writing past an
    /// unreplayed journal would be undone (or corrupted) at the next mount.
    pub fn require_clean(&self) -> Result<(), HilError> {
        let features = debugfs(&self.spec, false, &["features"])?;
        if features.contains("needs_recovery") {
            return Err(HilError::Disk {
                path: self.image.clone(),
                reason:
                    "the data partition's journal needs recovery: the box was not shut down cleanly"
                        .into(),
            });
        }
        Ok(())
    }

    /// The contents of `path` (absolute inside the file system).
    pub fn read(&self, path: &str) -> Result<Vec<u8>, HilError> {
        let dir = tempfile_dir()?;
        let local = dir.join("read");
        debugfs(
            &self.spec,
            false,
            &[&format!("dump {path} {}", local.display())],
        )?;
        let bytes = std::fs::read(&local).map_err(|_| HilError::Disk {
            path: self.image.clone(),
            reason: format!("no file {path} on the data partition"),
        });
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    }

    /// Replaces `path` with `contents`, owned by root with `mode` (e.g. 0o600).
    pub fn write(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), HilError> {
        let dir = tempfile_dir()?;
        let local = dir.join("write");
        std::fs::write(&local, contents)
            .map_err(|e| HilError::io(format!("writing {}", local.display()), e))?;
        let result = debugfs(
            &self.spec,
            true,
            &[
                &format!("rm {path}"),
                &format!("write {} {path}", local.display()),
                &format!("sif {path} mode 0{:o}", 0o100000 | mode),
                &format!("sif {path} uid 0"),
                &format!("sif {path} gid 0"),
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);
        let out = result?;
        let back = self.read(path)?;
        if back != contents {
            return Err(HilError::Disk {
                path: self.image.clone(),
                reason: format!("writing {path} with debugfs did not stick: {out}"),
            });
        }
        Ok(())
    }
}

fn tempfile_dir() -> Result<PathBuf, HilError> {
    let dir = std::env::temp_dir().join(format!("hil-debugfs-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| HilError::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs debugfs requests on `spec` (`image?offset=N`), in one process; its output. debugfs
/// reports most failures on stderr with exit 0, so callers check the result themselves.
fn debugfs(spec: &str, write: bool, requests: &[&str]) -> Result<String, HilError> {
    let dir = tempfile_dir()?;
    let script = dir.join("requests");
    std::fs::write(&script, requests.join("\n") + "\n")
        .map_err(|e| HilError::io(format!("writing {}", script.display()), e))?;
    let mut cmd = Command::new(debugfs_binary());
    if write {
        cmd.arg("-w");
    }
    cmd.arg("-f").arg(&script).arg(spec);
    let out = run(&mut cmd);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn debugfs_binary() -> &'static str {
    if Path::new("/usr/sbin/debugfs").exists() {
        "/usr/sbin/debugfs"
    } else {
        "debugfs"
    }
}

fn run(cmd: &mut Command) -> Result<String, HilError> {
    let tool = format!("{:?}", cmd);
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            HilError::Missing {
                what: tool.clone(),
                hint: "apt-get install qemu-utils e2fsprogs".into(),
            }
        } else {
            HilError::io(format!("running {tool}"), e)
        }
    })?;
    if !out.status.success() {
        return Err(HilError::Tool {
            tool,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Merges `overrides` (a TOML table: `[watchdog] timeout = "15s"`) into the TOML document
/// `config`, keeping everything else as it was (comments and order included).
pub fn merge_toml(config: &str, overrides: &toml::Table) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = config
        .parse()
        .map_err(|e| format!("the box's config is not TOML: {e}"))?;
    fn merge(into: &mut toml_edit::Table, from: &toml::Table) -> Result<(), String> {
        for (key, value) in from {
            match value {
                toml::Value::Table(sub) => {
                    let entry = into
                        .entry(key)
                        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
                    let table = entry
                        .as_table_mut()
                        .ok_or_else(|| format!("{key} is not a table in the box's config"))?;
                    merge(table, sub)?;
                }
                other => {
                    let text = format!("v = {other}");
                    let parsed: toml_edit::DocumentMut =
                        text.parse().map_err(|e| format!("{key}: {e}"))?;
                    into.insert(key, parsed["v"].clone());
                }
            }
        }
        Ok(())
    }
    merge(doc.as_table_mut(), overrides)?;
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 8 MiB disk image with a GPT (header and entries only: what `partitions` reads) and
    /// the appliance's labels: esp and root-a 2 MiB each from 1 MiB, data to the end.
    fn gpt_image(dir: &Path) -> PathBuf {
        let img = dir.join("disk.img");
        let sectors: u64 = 8 * 1024 * 1024 / SECTOR;
        let mut disk = vec![0u8; (sectors * SECTOR) as usize];
        let header = &mut disk[SECTOR as usize..2 * SECTOR as usize];
        header[..8].copy_from_slice(b"EFI PART");
        header[72..80].copy_from_slice(&2u64.to_le_bytes());
        header[80..84].copy_from_slice(&128u32.to_le_bytes());
        header[84..88].copy_from_slice(&128u32.to_le_bytes());
        let parts = [
            ("esp", 2048u64, 6143u64),
            ("root-a", 6144, 10239),
            ("data", 10240, sectors - 34),
        ];
        for (i, (name, first, last)) in parts.iter().enumerate() {
            let e = 2 * SECTOR as usize + i * 128;
            disk[e..e + 16].copy_from_slice(&[0xAF; 16]);
            disk[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
            disk[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
            for (j, unit) in name.encode_utf16().enumerate() {
                disk[e + 56 + 2 * j..e + 58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        std::fs::write(&img, disk).unwrap();
        img
    }

    #[test]
    fn gpt_partitions_are_found_by_label_with_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let img = gpt_image(dir.path());
        let parts = partitions(&img).unwrap();
        let labels: Vec<&str> = parts.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["esp", "root-a", "data"]);
        assert_eq!(parts[0].offset, 1024 * 1024);
        assert_eq!(parts[0].size, 2 * 1024 * 1024);
        assert_eq!(partition(&img, "data").unwrap().offset, 5 * 1024 * 1024);
        assert_eq!(parts[2].size, 3 * 1024 * 1024 - 33 * 512);
        assert!(
            partition(&img, "root-b")
                .unwrap_err()
                .to_string()
                .contains("root-b")
        );
    }

    #[test]
    fn an_image_without_gpt_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("blank.img");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        assert!(partitions(&img).unwrap_err().to_string().contains("no GPT"));
    }

    #[test]
    fn files_on_the_data_partition_are_read_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let img = gpt_image(dir.path());
        let data = partition(&img, "data").unwrap();
        let status = Command::new("/usr/sbin/mkfs.ext4")
            .args(["-q", "-F", "-E", &format!("offset={}", data.offset)])
            .arg(&img)
            .arg(format!("{}k", data.size / 1024))
            .status()
            .unwrap();
        assert!(status.success());
        let fs = Ext4Partition::open(&img, "data").unwrap();
        fs.require_clean().unwrap();
        debugfs(&fs.spec, true, &["mkdir /config"]).unwrap();
        fs.write(
            "/config/portcullis.toml",
            b"[smtp]\nlisten = [\"0.0.0.0:25\"]\n",
            0o600,
        )
        .unwrap();
        fs.write(
            "/config/portcullis.toml",
            b"[watchdog]\ntimeout = \"15s\"\n",
            0o600,
        )
        .unwrap();
        assert_eq!(
            fs.read("/config/portcullis.toml").unwrap(),
            b"[watchdog]\ntimeout = \"15s\"\n"
        );
        let stat = debugfs(&fs.spec, false, &["stat /config/portcullis.toml"]).unwrap();
        assert!(stat.contains("Mode:  0600"), "{stat}");
        assert!(fs.read("/config/missing.toml").is_err());
    }

    #[test]
    fn kernel_options_are_appended_to_every_boot_entry_once() {
        if Command::new("mformat").arg("--version").output().is_err() {
            // A fresh CI machine has no mtools until hil/run or image/build installs them.
            eprintln!("SKIPPED: mtools is not installed (apt-get install mtools)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = gpt_image(dir.path());
        let esp = partition(&img, "esp").unwrap();
        let fat = format!("{}@@{}", img.display(), esp.offset);
        let sh = |cmd: &str| {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("MTOOLS_SKIP_CHECK", "1")
                .status()
                .unwrap()
                .success();
            assert!(ok, "{cmd}");
        };
        sh(&format!("mformat -i '{fat}' -T 4096 ::"));
        sh(&format!("mmd -i '{fat}' ::/loader ::/loader/entries"));
        let entry = dir.path().join("portcullis-a.conf");
        std::fs::write(
            &entry,
            "title Portcullis\nlinux /vmlinuz\noptions root=PARTLABEL=root-a ro console=ttyS0\n",
        )
        .unwrap();
        sh(&format!(
            "mcopy -i '{fat}' '{}' ::/loader/entries/",
            entry.display()
        ));
        let extra = "systemd.journald.forward_to_console=1";
        assert_eq!(
            append_kernel_options(&img, extra).unwrap(),
            ["portcullis-a.conf"]
        );
        append_kernel_options(&img, extra).unwrap();
        let out = Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &fat, "::/loader/entries/portcullis-a.conf"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("options root=PARTLABEL=root-a ro console=ttyS0 systemd.journald.forward_to_console=1\n"), "{text}");
        assert_eq!(text.matches(extra).count(), 1);
    }

    #[test]
    fn overrides_merge_into_the_config_and_keep_the_rest() {
        let config = "# written by the wizard\n[smtp]\nlisten = [\"0.0.0.0:25\"]\n\n[watchdog]\ndevice = \"/dev/watchdog0\"\ntimeout = \"60s\"\n";
        let overrides: toml::Table = toml::from_str("[watchdog]\ntimeout = \"15s\"\nstuck_after = \"20s\"\n[queue]\npoll_interval = \"1s\"\n").unwrap();
        let merged = merge_toml(config, &overrides).unwrap();
        assert!(
            merged.starts_with("# written by the wizard\n[smtp]\n"),
            "{merged}"
        );
        let parsed: toml::Table = toml::from_str(&merged).unwrap();
        assert_eq!(
            parsed["watchdog"]["device"].as_str(),
            Some("/dev/watchdog0")
        );
        assert_eq!(parsed["watchdog"]["timeout"].as_str(), Some("15s"));
        assert_eq!(parsed["watchdog"]["stuck_after"].as_str(), Some("20s"));
        assert_eq!(parsed["queue"]["poll_interval"].as_str(), Some("1s"));
        assert!(merge_toml("smtp = 1\n", &toml::from_str("[smtp]\nx = 1\n").unwrap()).is_err());
    }
}

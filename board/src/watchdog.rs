//! The Linux hardware watchdog (`/dev/watchdog`, e.g. QEMU's i6300esb).
//!
//! Once opened, the device reboots the box unless it is written to ("petted") within its
//! timeout. The supervisor pets it only while every part of the appliance is healthy, so a hung
//! process ends in a reboot. On a deliberate stop we write the magic character `V` before
//! closing, which tells drivers that support "magic close" to disarm instead of rebooting.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the watchdog could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The device could not be opened (missing driver, or another process holds it).
    #[error("cannot open watchdog device {path}: {source}")]
    Open {
        /// The device path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Writing to the device failed.
    #[error("watchdog device {path}: {source}")]
    Io {
        /// The device path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

// From <linux/watchdog.h>: _IOWR('W', 6, int) and _IOR('W', 7, int).
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
const WDIOC_GETTIMEOUT: libc::c_ulong = 0x8004_5707;

/// An open, armed watchdog device.
#[derive(Debug)]
pub struct Watchdog {
    path: PathBuf,
    file: Option<File>,
    timeout: Option<Duration>,
}

impl Watchdog {
    /// Opens (and thereby arms) the device and asks for `timeout`. A path that is not a real
    /// watchdog (a plain file or FIFO in tests) is accepted: the timeout request is then skipped.
    pub fn open(path: &Path, timeout: Duration) -> Result<Watchdog, WatchdogError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| WatchdogError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let mut secs = timeout.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
        // SAFETY: the ioctl reads and writes one int through a valid pointer on an open fd.
        let set = unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_SETTIMEOUT as _, &mut secs) };
        let effective = if set == 0 {
            let mut got: libc::c_int = 0;
            // SAFETY: as above.
            let r = unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_GETTIMEOUT as _, &mut got) };
            Some(Duration::from_secs(if r == 0 {
                got.max(1) as u64
            } else {
                secs as u64
            }))
        } else {
            tracing::warn!(device = %path.display(), "watchdog device did not accept a timeout (not a hardware watchdog?)");
            None
        };
        tracing::info!(device = %path.display(), timeout_s = effective.map(|d| d.as_secs()), "hardware watchdog armed");
        Ok(Watchdog {
            path: path.to_path_buf(),
            file: Some(file),
            timeout: effective,
        })
    }

    /// The timeout the device runs with, if it reported one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Resets the device's countdown. Call only while the appliance is healthy.
    pub fn pet(&mut self) -> Result<(), WatchdogError> {
        self.write(b"\0")
    }

    /// Disarms the device on a deliberate stop ("magic close"): writes `V`, then closes.
    pub fn close(mut self) -> Result<(), WatchdogError> {
        self.write(b"V")?;
        self.file.take();
        tracing::info!(device = %self.path.display(), "hardware watchdog disarmed (magic close)");
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), WatchdogError> {
        let path = self.path.clone();
        let file = self
            .file
            .as_mut()
            .expect("watchdog file is open until close");
        file.write_all(bytes)
            .and_then(|_| file.flush())
            .map_err(|source| WatchdogError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pets_write_to_the_device_and_close_writes_the_magic_v() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("watchdog");
        std::fs::write(&dev, b"").unwrap();
        let mut wd = Watchdog::open(&dev, Duration::from_secs(30)).unwrap();
        assert_eq!(wd.timeout(), None, "a plain file takes no timeout");
        wd.pet().unwrap();
        wd.pet().unwrap();
        wd.close().unwrap();
        assert_eq!(std::fs::read(&dev).unwrap(), b"\0\0V");
    }

    #[test]
    fn missing_device_is_an_error_naming_the_path() {
        let e = Watchdog::open(Path::new("/nonexistent/watchdog0"), Duration::from_secs(5))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/watchdog0"), "{e}");
    }
}

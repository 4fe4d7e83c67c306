//! Housekeeping: watching disk and memory, and keeping the disk from filling up with mail.
//!
//! Below `alerts.disk_floor_percent` free space the gateway answers new mail with
//! `452 4.3.1`: senders keep their messages and retry, instead of us running the file system
//! full and failing in the middle of writing somebody's acknowledged mail.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::alerts::{Alert, AlertKind};
use crate::state::Shared;
use crate::supervise::Heartbeat;

/// How often log files and quarantined messages past their retention are deleted.
const LOG_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Free and total space of the file system holding `path`.
#[derive(Debug, Clone, Copy)]
pub struct DiskSpace {
    /// Bytes available to unprivileged writers.
    pub available: u64,
    /// Size of the file system.
    pub total: u64,
}

impl DiskSpace {
    /// Free space in percent.
    pub fn free_percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.available as f64 * 100.0 / self.total as f64
        }
    }
}

/// Reads the file system's space with `statvfs`.
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = s.f_frsize as u64;
    Ok(DiskSpace {
        available: s.f_bavail as u64 * frsize,
        total: s.f_blocks as u64 * frsize,
    })
}

/// Available memory in percent of total, from `/proc/meminfo`.
pub fn memory_available_percent() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| available * 100.0 / total)
}

/// The housekeeping part: runs until `shutdown`.
pub async fn run(
    shared: Arc<Shared>,
    hb: Heartbeat,
    shutdown: CancellationToken,
) -> Result<(), String> {
    // The first round runs at start-up, then hourly.
    let mut last_prune = tokio::time::Instant::now() - LOG_PRUNE_INTERVAL;
    loop {
        hb.beat();
        check_once(&shared);
        if last_prune.elapsed() >= LOG_PRUNE_INTERVAL {
            last_prune = tokio::time::Instant::now();
            expire_quarantine(&shared).await;
            if let Some(log) = &shared.log {
                match log.prune_old_files(std::time::SystemTime::now()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(files = n, "deleted log files past their retention"),
                    Err(e) => tracing::error!(error = %e, "cannot prune old log files"),
                }
            }
        }
        let interval = shared.snapshot().config.alerts.check_interval;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Deletes quarantined messages past `quarantine.retention`.
async fn expire_quarantine(shared: &Arc<Shared>) {
    let config = &shared.snapshot().config;
    let retention = config.quarantine.retention;
    if retention.is_zero() {
        return;
    }
    let store = crate::quarantine::QuarantineStore::new(&config.quarantine_dir());
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(36500));
    match tokio::task::spawn_blocking(move || store.expire(cutoff)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            expired = n,
            "quarantined messages past their retention deleted"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "cannot expire quarantined messages"),
        Err(e) => tracing::error!(error = %e, "quarantine expiry task failed"),
    }
}

/// One round of checks.
pub fn check_once(shared: &Arc<Shared>) {
    let snap = shared.snapshot();
    let config = &snap.config;
    // The queue's file system is where acknowledged mail goes; on the appliance it is the data
    // partition itself.
    let queue_dir = config.server.data_dir.join("queue");
    let data_dir = &queue_dir;
    match disk_space(data_dir) {
        Ok(space) => {
            let free = space.free_percent();
            let floor = config.alerts.disk_floor_percent;
            let was_refusing = shared.switches.disk_floor();
            // A little hysteresis so mail does not flap between accepted and refused.
            let refusing = if was_refusing {
                free < floor + 0.5
            } else {
                free < floor
            };
            if refusing != was_refusing {
                shared.switches.set_disk_floor(refusing);
                if refusing {
                    shared.alert(Alert::new(
                        AlertKind::DiskFloor,
                        data_dir.display().to_string(),
                        format!("{free:.1}% free on the data file system; new mail is refused with 452 4.3.1"),
                        format!("Data directory: {}\nAvailable: {} bytes of {}\nFloor: {floor}%", data_dir.display(), space.available, space.total),
                    ));
                } else {
                    tracing::warn!(
                        free_percent = free,
                        "disk space recovered; accepting new mail again"
                    );
                }
            }
            if free < config.alerts.low_disk_percent {
                shared.alert(Alert::new(
                    AlertKind::LowDisk,
                    data_dir.display().to_string(),
                    format!("{free:.1}% free on the data file system"),
                    format!(
                        "Data directory: {}\nAvailable: {} bytes of {}",
                        data_dir.display(),
                        space.available,
                        space.total
                    ),
                ));
            }
        }
        Err(e) => tracing::error!(path = %data_dir.display(), error = %e, "cannot read disk space"),
    }
    if let Some(mem) = memory_available_percent() {
        if mem < config.alerts.low_memory_percent {
            shared.alert(Alert::new(
                AlertKind::LowMemory,
                "memory",
                format!("{mem:.1}% of memory available"),
                String::new(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_of_a_directory_is_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let s = disk_space(dir.path()).unwrap();
        assert!(s.total > 0 && s.available <= s.total);
        let p = s.free_percent();
        assert!((0.0..=100.0).contains(&p));
    }

    #[test]
    fn memory_percentage_is_read_from_proc() {
        let m = memory_available_percent().expect("/proc/meminfo on Linux");
        assert!(m > 0.0 && m <= 100.0);
    }
}

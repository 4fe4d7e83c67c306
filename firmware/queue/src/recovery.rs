//! Start-up reconciliation: the spool directories are the truth, sled is brought in line.
//!
//! sled's flush is not a power-cut guarantee, so after a crash its entries may be older than the
//! directories (or gone). Every rule below only ever adds, fixes or removes *state*; no committed
//! spool file is deleted here (unreadable ones are moved to `corrupt/`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use chrono::Utc;

use crate::entry::{QueueEntry, QueueKind};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::queue::{QueueConfig, Recovery};
use crate::spool::{self, Layout, SpoolDir, SpoolHeader};
use crate::tracking::{TrackEvent, Tracking, record_for};

/// A committed spool file found at start-up.
struct Found {
    dir: SpoolDir,
    header: SpoolHeader,
    file_len: u64,
}

/// Reconciles `entries` with the spool directories; see the crate README for the rules.
pub(crate) fn recover(
    layout: &Layout,
    config: &QueueConfig,
    entries: &sled::Tree,
    tracking: &Tracking,
) -> Result<Recovery, QueueError> {
    let mut recovery = Recovery {
        tmp_deleted: clean_tmp(layout)?,
        ..Recovery::default()
    };
    let files = scan_spool(layout, config, &mut recovery)?;
    let state_dir = layout.state_dir();
    let state_err = |e| QueueError::state(e, &state_dir);

    let mut known: HashMap<QueueId, QueueEntry> = HashMap::new();
    for item in entries.iter() {
        let (key, value) = item.map_err(state_err)?;
        let id = std::str::from_utf8(&key)
            .ok()
            .and_then(|k| k.parse::<QueueId>().ok());
        let entry = serde_json::from_slice::<QueueEntry>(&value).ok();
        match (id, entry) {
            (Some(id), Some(entry)) if files.contains_key(&id) => {
                known.insert(id, entry);
            }
            (Some(id), Some(_)) => {
                // The message was finished (file unlinked and synced) but the entry removal was lost.
                tracing::info!(queue_id = %id, "removing queue entry without spool file");
                entries.remove(&key).map_err(state_err)?;
                recovery.removed_orphans += 1;
            }
            (id, _) => {
                // Unreadable entry: drop it; if its file exists the entry is rebuilt below.
                tracing::warn!(key = %String::from_utf8_lossy(&key), queue_id = ?id, "removing unreadable queue entry");
                entries.remove(&key).map_err(state_err)?;
            }
        }
    }

    for (id, found) in files {
        let path = layout.file(found.dir, &id);
        let mut entry = match known.remove(&id) {
            Some(entry) => entry,
            None => {
                recovery.rebuilt_entries += 1;
                rebuild(&id, &found, &path, tracking)
            }
        };
        match (found.dir, entry.kind) {
            (SpoolDir::Hold, QueueKind::Incoming | QueueKind::Deferred) => {
                // A hold whose entry update was lost: the directory decides.
                entry.kind = QueueKind::Hold;
                entry
                    .hold_reason
                    .get_or_insert_with(|| "found in hold/ at start-up".to_owned());
            }
            (SpoolDir::Active, QueueKind::Hold) => {
                // A release whose entry update was lost: finish it.
                entry.kind = QueueKind::Incoming;
                entry.hold_reason = None;
                entry.next_attempt = Utc::now();
                entry.crashes = 0;
            }
            _ => {}
        }
        if entry.in_flight {
            entry.in_flight = false;
            entry.crashes += 1;
            recovery.possibly_duplicated += 1;
            tracing::warn!(queue_id = %id, crashes = entry.crashes, "delivery attempt was interrupted by a crash; some recipients may receive the message twice");
            tracking.event(
                &id,
                TrackEvent::now(
                    "recovered",
                    None,
                    "delivery attempt interrupted by a crash; possible duplicate",
                ),
            );
            let suspect =
                config.suspect_after_crashes > 0 && entry.crashes >= config.suspect_after_crashes;
            if suspect && entry.kind != QueueKind::Hold {
                hold_suspect(layout, config, &mut entry, &mut recovery);
                if let Some(reason) = entry
                    .hold_reason
                    .as_deref()
                    .filter(|_| entry.kind == QueueKind::Hold)
                {
                    tracking.event(&id, TrackEvent::now("held", None, reason));
                }
            }
        }
        let value = serde_json::to_vec(&entry).map_err(|e| QueueError::State(e.to_string()))?;
        entries.insert(id.as_str(), value).map_err(state_err)?;
        recovery.messages += 1;
    }
    Ok(recovery)
}

/// Deletes every draft left in `tmp/`: none of them was acknowledged.
fn clean_tmp(layout: &Layout) -> Result<usize, QueueError> {
    let dir = layout.dir(SpoolDir::Tmp);
    let mut deleted = 0;
    for item in fs::read_dir(&dir).map_err(|e| QueueError::io("list directory", &dir, e))? {
        let item = item.map_err(|e| QueueError::io("list directory", &dir, e))?;
        let path = item.path();
        match fs::remove_file(&path) {
            Ok(()) => deleted += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not delete unfinished draft")
            }
        }
    }
    Ok(deleted)
}

/// Reads the header of every file in `hold/` and `active/`; unreadable files go to `corrupt/`.
fn scan_spool(
    layout: &Layout,
    config: &QueueConfig,
    recovery: &mut Recovery,
) -> Result<BTreeMap<QueueId, Found>, QueueError> {
    let mut files = BTreeMap::new();
    for dir in [SpoolDir::Hold, SpoolDir::Active] {
        let dir_path = layout.dir(dir);
        for item in
            fs::read_dir(&dir_path).map_err(|e| QueueError::io("list directory", &dir_path, e))?
        {
            let item = item.map_err(|e| QueueError::io("list directory", &dir_path, e))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            let Ok(id) = name.parse::<QueueId>() else {
                quarantine(
                    layout,
                    config,
                    dir,
                    &path,
                    "file name is not a queue id",
                    recovery,
                );
                continue;
            };
            if files.contains_key(&id) {
                // Cannot come from a rename; someone copied files by hand. Keep the held copy.
                quarantine(
                    layout,
                    config,
                    dir,
                    &path,
                    "the same queue id is also in hold/",
                    recovery,
                );
                continue;
            }
            match spool::read_header(&path) {
                Ok(header) => {
                    let file_len = item.metadata().map(|m| m.len()).unwrap_or(header.offset);
                    files.insert(
                        id,
                        Found {
                            dir,
                            header,
                            file_len,
                        },
                    );
                }
                Err(QueueError::Corrupt { reason, .. }) => {
                    quarantine(layout, config, dir, &path, &reason, recovery)
                }
                Err(other) => quarantine(layout, config, dir, &path, &other.to_string(), recovery),
            }
        }
    }
    Ok(files)
}

/// Moves an unusable file to `corrupt/` (never deletes it) so start-up can go on.
fn quarantine(
    layout: &Layout,
    config: &QueueConfig,
    from: SpoolDir,
    path: &Path,
    reason: &str,
    recovery: &mut Recovery,
) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let corrupt_dir = layout.dir(SpoolDir::Corrupt);
    let mut target = corrupt_dir.join(&name);
    let mut n = 1;
    while target.exists() {
        target = corrupt_dir.join(format!("{name}.{n}"));
        n += 1;
    }
    match fs::rename(path, &target) {
        Ok(()) => {
            if config.fsync {
                for dir in [&corrupt_dir, &layout.dir(from)] {
                    if let Err(e) = spool::sync_dir(dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not sync directory");
                    }
                }
            }
            recovery.corrupt += 1;
            tracing::error!(file = %path.display(), moved_to = %target.display(), reason, "corrupt spool file moved to corrupt/");
        }
        Err(e) => {
            tracing::error!(file = %path.display(), reason, error = %e, "corrupt spool file could not be moved; skipping it");
        }
    }
}

/// A fresh entry from the spool file alone (the state database lost it).
fn rebuild(id: &QueueId, found: &Found, path: &Path, tracking: &Tracking) -> QueueEntry {
    let head = spool::read_head(path, found.header.offset).unwrap_or_default();
    let (message_id, subject) = spool::parse_identity(&head);
    let size = found.file_len.saturating_sub(found.header.offset);
    let mut entry = QueueEntry::new(
        id.clone(),
        found.header.envelope.clone(),
        size,
        message_id,
        subject,
    );
    if found.dir == SpoolDir::Hold {
        entry.kind = QueueKind::Hold;
        entry.hold_reason = Some("found in hold/ at start-up".to_owned());
    }
    tracing::warn!(queue_id = %id, "queue entry rebuilt from spool file; all recipients pending");
    if tracking.get(id).is_none() {
        tracking.record_message(&record_for(&entry, Vec::new()));
    }
    tracking.event(
        id,
        TrackEvent::now("recovered", None, "queue entry rebuilt from the spool file"),
    );
    entry
}

/// Moves a message that keeps crashing us to `hold/`, so the rest of the mail flows.
fn hold_suspect(
    layout: &Layout,
    config: &QueueConfig,
    entry: &mut QueueEntry,
    recovery: &mut Recovery,
) {
    let (src, dst) = (
        layout.file(SpoolDir::Active, &entry.id),
        layout.file(SpoolDir::Hold, &entry.id),
    );
    if let Err(e) = fs::rename(&src, &dst) {
        tracing::error!(queue_id = %entry.id, error = %e, "could not move suspect message to hold/");
        return;
    }
    if config.fsync {
        for dir in [SpoolDir::Hold, SpoolDir::Active] {
            if let Err(e) = spool::sync_dir(&layout.dir(dir)) {
                tracing::warn!(dir = %layout.dir(dir).display(), error = %e, "could not sync directory");
            }
        }
    }
    let reason = format!(
        "suspect: the process died {} times while delivering this message",
        entry.crashes
    );
    tracing::error!(queue_id = %entry.id, crashes = entry.crashes, "message put on hold as a suspect");
    entry.kind = QueueKind::Hold;
    entry.hold_reason = Some(reason);
    recovery.suspects_held.push(entry.id.clone());
}

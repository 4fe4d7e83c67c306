//! Start-up reconciliation: the spool directories are the truth, sled is brought in line.
//!
//! sled's flush is not a power-cut guarantee, so after a crash its entries may be older than the
//! directories (or gone). Every rule below only ever adds, fixes or removes *state*; no committed
//! spool file is deleted here (unreadable ones are moved to `corrupt/`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use crate::entry::{QueueEntry, QueueKind};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::log::{self, LogIndex, LogPos};
use crate::queue::{QueueConfig, Recovery};
use crate::spool::{self, Layout, SpoolDir, SpoolHeader};
use crate::tracking::{TrackEvent, Tracking, record_for};

/// A committed message found at start-up: a spool file, or a record in the message log.
struct Found {
    dir: SpoolDir,
    header: SpoolHeader,
    file_len: u64,
    /// Where it is in the log; `None` for a spool file.
    log: Option<Logged>,
}

/// A message found in the log, with the payload read (the content of a spool file).
struct Logged {
    pos: LogPos,
    payload: Vec<u8>,
}

/// What start-up hands the message log: which messages live in it, their entries (kept in
/// memory, not in the state database), and the next segment number.
pub(crate) struct LogState {
    pub(crate) index: Arc<LogIndex>,
    pub(crate) next_segment: u64,
    pub(crate) entries: Vec<QueueEntry>,
    attempts: HashMap<QueueId, u32>,
    scanned: std::collections::HashSet<QueueId>,
}

/// Reconciles `entries` with the spool directories and the message log; see the crate README
/// for the rules.
pub(crate) fn recover(
    layout: &Layout,
    config: &QueueConfig,
    entries: &sled::Tree,
    tracking: &Tracking,
) -> Result<(Recovery, LogState), QueueError> {
    let mut recovery = Recovery {
        tmp_deleted: clean_tmp(layout)?,
        ..Recovery::default()
    };
    let mut files = scan_spool(layout, config, &mut recovery)?;
    let mut log_state = scan_log(layout, config, &mut files, &mut recovery)?;
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

    for (id, mut found) in files {
        let path = layout.file(found.dir, &id);
        let mut entry = match known.remove(&id) {
            Some(entry) => {
                if let Some(logged) = &found.log {
                    // A logged message whose entry is in the state database: an attempt result
                    // was recorded and the message was moving out of the log. Finish the move.
                    match write_spool_file(layout, config, &id, &logged.payload, &path) {
                        Ok(()) => found.log = None,
                        Err(e) => {
                            tracing::error!(queue_id = %id, error = %e, "cannot move a message out of the log; it stays there");
                            entries.remove(id.as_str()).map_err(state_err)?;
                        }
                    }
                }
                entry
            }
            None if found.log.is_some() => {
                // The usual case: the entry of a logged message lives in memory only, and the
                // log records say what is needed: the envelope, and attempts that never ended.
                let logged = found.log.as_ref().expect("checked");
                let head = message_head(&found, &logged.payload);
                let mut entry = fresh_entry(&id, &found, &head);
                if tracking.get(&id).is_none() {
                    tracking.record_message(&record_for(&entry, Vec::new()));
                }
                entry.scanned = log_state.scanned.contains(&id);
                if let Some(&attempts) = log_state.attempts.get(&id) {
                    entry.in_flight = true;
                    entry.attempts = attempts - 1;
                    entry.crashes = attempts - 1;
                }
                entry
            }
            None => {
                recovery.rebuilt_entries += 1;
                let head = spool::read_head(&path, found.header.offset).unwrap_or_default();
                rebuild(&id, &found, &head, tracking)
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
                let payload = found.log.as_ref().map(|l| &l.payload[..]);
                hold_suspect(layout, config, &mut entry, payload, &mut recovery);
                if entry.kind == QueueKind::Hold {
                    found.log = None;
                }
                if let Some(reason) = entry
                    .hold_reason
                    .as_deref()
                    .filter(|_| entry.kind == QueueKind::Hold)
                {
                    tracking.event(&id, TrackEvent::now("held", None, reason));
                }
            }
        }
        recovery.messages += 1;
        if let Some(logged) = &found.log {
            log_state.index.insert(id.clone(), logged.pos);
            log_state.entries.push(entry);
            continue;
        }
        let value = serde_json::to_vec(&entry).map_err(|e| QueueError::State(e.to_string()))?;
        entries.insert(id.as_str(), value).map_err(state_err)?;
    }
    Ok((recovery, log_state))
}

/// Reads the message log and adds its live messages to `files` (a spool file with the same id
/// wins: the message was moving out of the log when the process stopped). Damaged segments are
/// copied to `corrupt/` for the admin; what could be read from them is kept.
fn scan_log(
    layout: &Layout,
    config: &QueueConfig,
    files: &mut BTreeMap<QueueId, Found>,
    recovery: &mut Recovery,
) -> Result<LogState, QueueError> {
    let dir = layout.log_dir();
    let scanned = log::scan(&dir).map_err(|e| QueueError::io("read the message log", &dir, e))?;
    let index = Arc::new(LogIndex::default());
    for segment in &scanned.segments {
        index.add_segment(*segment);
    }
    // An unreadable segment may hold live mail, and the segments after it their done records:
    // none of them is deleted by this process. It counts as corrupt so the admin hears of it.
    for segment in &scanned.unreadable {
        index.pin_segment(*segment);
    }
    recovery.corrupt += scanned.unreadable.len();
    for segment in &scanned.damaged {
        let path = log::segment_path(&dir, *segment);
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let target = layout
            .dir(SpoolDir::Corrupt)
            .join(format!("{name}.damaged"));
        match fs::copy(&path, &target) {
            Ok(_) => {
                tracing::error!(segment = %path.display(), copy = %target.display(), "damaged log segment copied to corrupt/")
            }
            Err(e) => {
                tracing::error!(segment = %path.display(), error = %e, "damaged log segment could not be copied to corrupt/")
            }
        }
        recovery.corrupt += 1;
    }
    for (id, pos) in scanned.messages {
        if files.contains_key(&id) {
            tracing::debug!(queue_id = %id, "message has a spool file and a log record; the file wins");
            continue;
        }
        let path = log::segment_path(&dir, pos.segment);
        let payload = match log::read_payload(&dir, pos) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(queue_id = %id, segment = %path.display(), error = %e, "cannot read a message from the log");
                continue;
            }
        };
        match spool::read_header_from(&payload[..], &path) {
            Ok(header) => {
                files.insert(
                    id,
                    Found {
                        dir: SpoolDir::Active,
                        header,
                        file_len: u64::from(pos.len),
                        log: Some(Logged { pos, payload }),
                    },
                );
            }
            Err(e) => {
                // A record that checks out but does not parse: keep its bytes for the admin.
                let target = layout
                    .dir(SpoolDir::Corrupt)
                    .join(format!("{id}.log-record"));
                let _ = fs::write(&target, &payload);
                if config.fsync {
                    let _ = spool::sync_dir(&layout.dir(SpoolDir::Corrupt));
                }
                tracing::error!(queue_id = %id, error = %e, copy = %target.display(), "unreadable message in the log copied to corrupt/");
                recovery.corrupt += 1;
            }
        }
    }
    Ok(LogState {
        index,
        next_segment: scanned.next_segment,
        entries: Vec::new(),
        attempts: scanned.attempts,
        scanned: scanned.scanned,
    })
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
                            log: None,
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

/// The start of a logged message (for its Message-ID and Subject).
fn message_head(found: &Found, payload: &[u8]) -> Vec<u8> {
    let start = (found.header.offset as usize).min(payload.len());
    let end = (start + spool::HEAD_BYTES).min(payload.len());
    payload[start..end].to_vec()
}

/// A fresh entry from the spool file (or log record) alone (the state database lost it); `head`
/// is the start of the message.
fn rebuild(id: &QueueId, found: &Found, head: &[u8], tracking: &Tracking) -> QueueEntry {
    let entry = fresh_entry(id, found, head);
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

/// The entry of a message nothing is known of but its spool file content: incoming (or held,
/// from `hold/`), every recipient pending.
fn fresh_entry(id: &QueueId, found: &Found, head: &[u8]) -> QueueEntry {
    let (message_id, subject) = spool::parse_identity(head);
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
    entry
}

/// Moves a message that keeps crashing us to `hold/`, so the rest of the mail flows.
/// `logged` is the spool file content when the message lives in the message log.
fn hold_suspect(
    layout: &Layout,
    config: &QueueConfig,
    entry: &mut QueueEntry,
    logged: Option<&[u8]>,
    recovery: &mut Recovery,
) {
    let (src, dst) = (
        layout.file(SpoolDir::Active, &entry.id),
        layout.file(SpoolDir::Hold, &entry.id),
    );
    let moved = match logged {
        Some(payload) => write_spool_file(layout, config, &entry.id, payload, &dst),
        None => fs::rename(&src, &dst),
    };
    if let Err(e) = moved {
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

/// Writes a logged message out as the spool file `dst` (through `tmp/`, synced, then renamed).
fn write_spool_file(
    layout: &Layout,
    config: &QueueConfig,
    id: &QueueId,
    payload: &[u8],
    dst: &Path,
) -> std::io::Result<()> {
    let tmp = layout.file(SpoolDir::Tmp, id);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(payload)?;
    if config.fsync {
        file.sync_data()?;
    }
    drop(file);
    fs::rename(&tmp, dst)?;
    if config.fsync
        && let Some(dir) = dst.parent()
    {
        spool::sync_dir(dir)?;
    }
    Ok(())
}

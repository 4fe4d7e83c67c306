//! The quarantine store: messages kept out of delivery by a verdict, for an admin to look at,
//! release or delete. One store serves every reason (content, virus, later spam).
//!
//! ```text
//! <data_dir>/quarantine/<queue id>.eml    the message exactly as queued
//! <data_dir>/quarantine/<queue id>.json   QuarantineRecord: envelope, verdict, reasons, arrival
//! ```
//!
//! Durable like the spool: each file is written to a `.tmp` name, fsynced, renamed into place,
//! and the directory fsynced, message first and record second. A message is listed only once
//! its record exists, so a crash mid-way leaves at worst an unlisted `.eml` (removed by the next
//! `put` of the same id or by `delete`), never a record without its message. The queue entry is
//! deleted only after `put` returns, so a crash in between leaves the message in both places,
//! never in neither.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use portcullis_queue::{Envelope, QueueId};
use serde::{Deserialize, Serialize};

use crate::scan::MessageVerdict;

/// Why the quarantine store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// A file operation failed.
    #[error("quarantine: cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// No quarantined message has this id.
    #[error("no quarantined message with id {0}")]
    NotFound(String),
    /// A record cannot be read.
    #[error("quarantine record {path} is unreadable: {problem}")]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// The parser's explanation.
        problem: String,
    },
}

/// Everything kept about a quarantined message besides its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The queue id it had (and its id in the store).
    pub id: String,
    /// When it was quarantined.
    pub quarantined_at: DateTime<Utc>,
    /// The envelope as received: sender, recipients, arrival time, client.
    pub envelope: Envelope,
    /// The Subject header, if any.
    pub subject: Option<String>,
    /// The Message-ID header, if any.
    pub message_id: Option<String>,
    /// Size of the message in bytes.
    pub size: u64,
    /// The verdict, with every reason.
    pub verdict: MessageVerdict,
}

/// The quarantine directory.
#[derive(Debug, Clone)]
pub struct QuarantineStore {
    dir: PathBuf,
}

impl QuarantineStore {
    /// The store in `dir` (created on the first `put`).
    pub fn new(dir: &Path) -> QuarantineStore {
        QuarantineStore {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }

    /// Stores a message and its record durably. Storing the same id again replaces both.
    pub fn put(&self, record: &QuarantineRecord, message: &[u8]) -> Result<(), QuarantineError> {
        valid_id(&record.id)?;
        std::fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let json = serde_json::to_vec_pretty(record).map_err(|e| QuarantineError::Corrupt {
            path: self.path(&record.id, "json"),
            problem: e.to_string(),
        })?;
        write_durably(&self.path(&record.id, "eml"), message)?;
        write_durably(&self.path(&record.id, "json"), &json)?;
        sync_dir(&self.dir)
    }

    /// Every quarantined message, oldest first.
    pub fn list(&self) -> Result<Vec<QuarantineRecord>, QuarantineError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(QuarantineError::Io {
                    action: "read",
                    path: self.dir.clone(),
                    source: e,
                });
            }
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            match self.get(id) {
                Ok(r) => records.push(r),
                Err(e) => tracing::warn!(error = %e, "quarantine record skipped"),
            }
        }
        records.sort_by(|a, b| (a.quarantined_at, &a.id).cmp(&(b.quarantined_at, &b.id)));
        Ok(records)
    }

    /// The record of one message.
    pub fn get(&self, id: &str) -> Result<QuarantineRecord, QuarantineError> {
        valid_id(id)?;
        let path = self.path(id, "json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(QuarantineError::NotFound(id.to_string()));
            }
            Err(e) => {
                return Err(QuarantineError::Io {
                    action: "read",
                    path,
                    source: e,
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| QuarantineError::Corrupt {
            path,
            problem: e.to_string(),
        })
    }

    /// The content of one message.
    pub fn read_message(&self, id: &str) -> Result<Vec<u8>, QuarantineError> {
        self.get(id)?;
        let path = self.path(id, "eml");
        std::fs::read(&path).map_err(io_err("read", &path))
    }

    /// Deletes every message quarantined before `cutoff`; returns how many. The retention
    /// period is the admin's promise of how long evidence is kept, and the bound on the disk
    /// the quarantine can take.
    pub fn expire(&self, cutoff: DateTime<Utc>) -> Result<usize, QuarantineError> {
        let mut removed = 0;
        for record in self.list()? {
            if record.quarantined_at < cutoff {
                self.delete(&record.id)?;
                tracing::info!(quarantine_id = %record.id, quarantined_at = %record.quarantined_at, "quarantined message expired");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes a message: record first (so it is no longer listed), then content, then the
    /// directory is synced.
    pub fn delete(&self, id: &str) -> Result<(), QuarantineError> {
        self.get(id)?;
        for ext in ["json", "eml"] {
            let path = self.path(id, ext);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(QuarantineError::Io {
                        action: "remove",
                        path,
                        source: e,
                    });
                }
            }
        }
        sync_dir(&self.dir)
    }
}

/// Ids are queue ids: plain names that cannot point outside the directory.
fn valid_id(id: &str) -> Result<(), QuarantineError> {
    if id.parse::<QueueId>().is_ok() {
        Ok(())
    } else {
        Err(QuarantineError::NotFound(id.to_string()))
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> QuarantineError {
    let path = path.to_path_buf();
    move |source| QuarantineError::Io {
        action,
        path,
        source,
    }
}

/// Write to `<path>.tmp`, fsync, rename over `path`.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), QuarantineError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err("rename into place", path))
}

fn sync_dir(dir: &Path) -> Result<(), QuarantineError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_scan::Action;

    fn record(id: &str) -> QuarantineRecord {
        QuarantineRecord {
            id: id.to_string(),
            quarantined_at: Utc::now(),
            envelope: Envelope {
                sender: "a@example.com".into(),
                recipients: vec!["b@example.com".into()],
                smtputf8: false,
                eight_bit: false,
                received_at: Utc::now(),
                client: None,
            },
            subject: Some("hi".into()),
            message_id: None,
            size: 5,
            verdict: MessageVerdict {
                action: Action::Quarantine,
                reasons: vec![crate::scan::VerdictReason {
                    text: "virus X found in the raw message".into(),
                    action: Action::Quarantine,
                    carrier: None,
                    virus: Some("X".into()),
                    violation: None,
                }],
            },
        }
    }

    #[test]
    fn put_then_list_show_read_and_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = QuarantineStore::new(&dir.path().join("quarantine"));
        assert!(store.list().unwrap().is_empty());
        let id = QueueId::generate().to_string();
        store.put(&record(&id), b"hello").unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0], record_with_time(&id, &listed[0]));
        assert_eq!(store.read_message(&id).unwrap(), b"hello");
        store.delete(&id).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(store.get(&id), Err(QuarantineError::NotFound(_))));
        assert!(
            !dir.path()
                .join("quarantine")
                .join(format!("{id}.eml"))
                .exists()
        );
    }

    fn record_with_time(id: &str, got: &QuarantineRecord) -> QuarantineRecord {
        let mut r = record(id);
        r.quarantined_at = got.quarantined_at;
        r.envelope.received_at = got.envelope.received_at;
        r
    }

    #[test]
    fn ids_that_are_not_queue_ids_are_refused_without_touching_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = QuarantineStore::new(dir.path());
        assert!(matches!(
            store.get("../etc/passwd"),
            Err(QuarantineError::NotFound(_))
        ));
        assert!(store.put(&record("../x"), b"x").is_err());
    }

    #[test]
    fn a_message_without_its_record_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = QuarantineStore::new(dir.path());
        let id = QueueId::generate().to_string();
        std::fs::write(dir.path().join(format!("{id}.eml")), b"half-written").unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn expire_deletes_only_messages_quarantined_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = QuarantineStore::new(dir.path());
        let old_id = QueueId::generate().to_string();
        let new_id = QueueId::generate().to_string();
        let mut old = record(&old_id);
        old.quarantined_at = Utc::now() - chrono::Duration::days(40);
        store.put(&old, b"old").unwrap();
        store.put(&record(&new_id), b"new").unwrap();
        let removed = store
            .expire(Utc::now() - chrono::Duration::days(30))
            .unwrap();
        assert_eq!(removed, 1);
        let left: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(left, vec![new_id]);
        assert!(!dir.path().join(format!("{old_id}.eml")).exists());
    }
}

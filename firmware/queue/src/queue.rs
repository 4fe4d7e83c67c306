//! The queue: the commit point, the per-message state and every move of a spool file.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::draft::Draft;
use crate::entry::{QueueEntry, QueueKind, RecipientStatus};
use crate::envelope::Envelope;
use crate::error::QueueError;
use crate::group_commit::DirSyncer;
use crate::id::QueueId;
use crate::recovery;
use crate::spool::{self, Layout, SpoolDir};
use crate::tracking::{Outcome, TrackEvent, Tracking, record_for};

/// Per-message locks are striped: enough stripes that unrelated messages rarely wait for each other.
const LOCK_STRIPES: usize = 64;

/// How the queue behaves; the gateway fills it from the `[queue]` config section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// Sync files and directories at the commit point. `false` is for benchmarks only: a crash
    /// can then lose acknowledged mail.
    pub fsync: bool,
    /// A message during whose delivery the process died this many times is put on hold as a
    /// suspect (it may be what crashes us). 0 disables the check.
    pub suspect_after_crashes: u32,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            fsync: true,
            suspect_after_crashes: 3,
        }
    }
}

/// What start-up found and repaired (logged by the gateway, shown by `portcullis queue`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// Messages in the queue after recovery.
    pub messages: usize,
    /// Spool files that had no state entry (the state database lost it); entry rebuilt from the file.
    pub rebuilt_entries: usize,
    /// State entries without a spool file (the message was finished just before a crash); removed.
    pub removed_orphans: usize,
    /// Unfinished drafts deleted from `tmp/` (never acknowledged, so the client retries them).
    pub tmp_deleted: usize,
    /// Messages whose delivery attempt was cut short by the crash; some recipients may get them twice.
    pub possibly_duplicated: usize,
    /// Messages moved to hold because the process died too often while delivering them.
    pub suspects_held: Vec<QueueId>,
    /// Unreadable files moved to `corrupt/` for the admin to look at.
    pub corrupt: usize,
}

/// How many messages each queue holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Committed, not tried yet.
    pub incoming: usize,
    /// Waiting for a retry.
    pub deferred: usize,
    /// On hold.
    pub hold: usize,
}

/// The mail queue. Cheap to clone; all clones share one spool, one state database and one committer.
#[derive(Clone, Debug)]
pub struct Queue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    config: QueueConfig,
    db: sled::Db,
    entries: sled::Tree,
    tracking: Tracking,
    syncer: DirSyncer,
    notify: Arc<Notify>,
    /// Serialise the steps of one message (attempt results, hold, delete) that move or remove its file.
    locks: Vec<Mutex<()>>,
}

impl Queue {
    /// Opens (creating if needed) the queue in `dir` (`<data_dir>/queue`), reconciles the state
    /// database with the spool directories, and starts the committer task, so it must be called
    /// inside a tokio runtime. Fails if another process has the queue open.
    pub fn open(dir: &Path, config: QueueConfig) -> Result<(Queue, Recovery), QueueError> {
        let layout = Layout::new(dir);
        layout.create()?;
        let syncer = DirSyncer::start(&layout, config.fsync)?;
        let state_dir = layout.state_dir();
        // sled takes an exclusive lock on its files: open it before touching tmp/, so a second
        // process cannot delete the drafts of a running one.
        let db = sled::Config::new()
            .path(&state_dir)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if !crate::error::is_disk_full(&io) => {
                    QueueError::State(format!(
                        "cannot open {}: {io} (is another portcullis using this data directory?)",
                        state_dir.display()
                    ))
                }
                other => QueueError::state(other, &state_dir),
            })?;
        let entries = db
            .open_tree("entries")
            .map_err(|e| QueueError::state(e, &state_dir))?;
        let tracking = Tracking::open(&db).map_err(|e| QueueError::state(e, &state_dir))?;
        let recovery = recovery::recover(&layout, &config, &entries, &tracking)?;
        db.flush().map_err(|e| QueueError::state(e, &state_dir))?;
        tracing::info!(
            messages = recovery.messages,
            rebuilt_entries = recovery.rebuilt_entries,
            removed_orphans = recovery.removed_orphans,
            tmp_deleted = recovery.tmp_deleted,
            possibly_duplicated = recovery.possibly_duplicated,
            suspects_held = recovery.suspects_held.len(),
            corrupt = recovery.corrupt,
            dir = %dir.display(),
            "queue opened"
        );
        let inner = Inner {
            layout,
            config,
            db,
            entries,
            tracking,
            syncer,
            notify: Arc::new(Notify::new()),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        };
        Ok((
            Queue {
                inner: Arc::new(inner),
            },
            recovery,
        ))
    }

    /// Starts receiving a message: creates `tmp/<id>` and writes the spool header. Write the
    /// message into the returned draft, then [`Queue::commit`] or [`Queue::discard`] it.
    pub fn draft(&self, envelope: Envelope) -> Result<Draft, QueueError> {
        let header = spool::encode_header(&envelope);
        loop {
            let id = QueueId::generate();
            // Ids are unique within a process; this guards against a clock that stepped back
            // across a restart and happened to draw the same random suffix.
            if self
                .inner
                .entries
                .contains_key(id.as_str())
                .unwrap_or(false)
            {
                continue;
            }
            let path = self.inner.layout.file(SpoolDir::Tmp, &id);
            let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(QueueError::io("create spool file", &path, e)),
            };
            if let Err(e) = file.write_all(&header) {
                let _ = std::fs::remove_file(&path);
                return Err(QueueError::io("write spool file", &path, e));
            }
            tracing::debug!(queue_id = %id, "draft started");
            return Ok(Draft::new(
                id,
                envelope,
                path,
                tokio::fs::File::from_std(file),
            ));
        }
    }

    /// The commit point. Returns Ok only once the message is durable: data synced, file renamed
    /// into `active/`, `active/` synced (batched with concurrent commits). Only then may the SMTP
    /// session answer 250. On error nothing is left behind and the client must be told to retry.
    ///
    /// Runs to completion even if the caller's future is dropped, so a vanished client cannot
    /// leave a half-committed message.
    pub async fn commit(&self, draft: Draft) -> Result<QueueEntry, QueueError> {
        let queue = self.clone();
        tokio::spawn(async move { queue.commit_detached(draft).await })
            .await
            .unwrap_or_else(|e| Err(task_failed(e)))
    }

    async fn commit_detached(&self, mut draft: Draft) -> Result<QueueEntry, QueueError> {
        let id = draft.id.clone();
        let tmp = draft.tmp_path.clone();
        if let Some(error) = draft.write_error.take() {
            // Dropping the draft removes the tmp file.
            return Err(QueueError::IncompleteDraft(Box::new(QueueError::io(
                "write spool file",
                &tmp,
                error,
            ))));
        }
        let Some(writer) = draft.writer.take() else {
            return Err(QueueError::io(
                "commit",
                &tmp,
                io::Error::other("draft already committed or discarded"),
            ));
        };
        let active = self.inner.layout.file(SpoolDir::Active, &id);
        if let Err(e) = self.sync_and_rename(writer, &tmp, &active).await {
            remove_quietly(&tmp).await;
            tracing::error!(queue_id = %id, error = %e, "commit failed; message not accepted");
            return Err(e);
        }
        let durable = self.inner.syncer.sync(SpoolDir::Active).await;
        let (message_id, subject) = spool::parse_identity(&draft.head);
        let entry = QueueEntry::new(
            id.clone(),
            draft.envelope.clone(),
            draft.size,
            message_id,
            subject,
        );
        let stored = durable.and_then(|()| self.put(&entry));
        if let Err(e) = stored {
            // Not durable or not recorded: undo, so the client's retry is the only copy.
            remove_quietly(&active).await;
            let _ = self.inner.syncer.sync(SpoolDir::Active).await;
            tracing::error!(queue_id = %id, error = %e, "commit failed; message not accepted");
            return Err(e);
        }
        self.inner.tracking.record_message(&record_for(
            &entry,
            vec![TrackEvent::now("received", None, "committed to the queue")],
        ));
        tracing::info!(
            queue_id = %id,
            from = %entry.envelope.sender,
            nrcpt = entry.recipients.len(),
            size = entry.size,
            message_id = entry.message_id.as_deref().unwrap_or(""),
            "message queued"
        );
        self.inner.notify.notify_one();
        Ok(entry)
    }

    /// Flushes the draft, syncs its data on the blocking pool and renames it into `active/`.
    async fn sync_and_rename(
        &self,
        mut writer: tokio::io::BufWriter<tokio::fs::File>,
        tmp: &Path,
        active: &Path,
    ) -> Result<(), QueueError> {
        writer
            .flush()
            .await
            .map_err(|e| QueueError::io("write spool file", tmp, e))?;
        let file = writer.into_inner().into_std().await;
        let fsync = self.inner.config.fsync;
        let (tmp, active) = (tmp.to_path_buf(), active.to_path_buf());
        tokio::task::spawn_blocking(move || {
            if fsync {
                file.sync_data()
                    .map_err(|e| QueueError::io("sync spool file", &tmp, e))?;
            }
            drop(file);
            std::fs::rename(&tmp, &active)
                .map_err(|e| QueueError::io("move spool file to", &active, e))
        })
        .await
        .unwrap_or_else(|e| Err(task_failed(e)))
    }

    /// Abandons a draft (the client gave up or the message was rejected) and removes its tmp file.
    pub async fn discard(&self, mut draft: Draft) {
        if draft.writer.take().is_some() {
            remove_quietly(&draft.tmp_path).await;
            tracing::debug!(queue_id = %draft.id, "draft discarded");
        }
    }

    /// The entry of a message, if it is in the queue.
    pub fn get(&self, id: &QueueId) -> Option<QueueEntry> {
        let bytes = self.inner.entries.get(id.as_str()).ok()??;
        decode(id.as_str().as_bytes(), &bytes)
    }

    /// Every queued message, oldest first.
    pub fn list(&self) -> Vec<QueueEntry> {
        self.entries().collect()
    }

    /// How many messages each queue holds.
    pub fn counts(&self) -> QueueCounts {
        let mut counts = QueueCounts::default();
        for entry in self.entries() {
            match entry.kind {
                QueueKind::Incoming => counts.incoming += 1,
                QueueKind::Deferred => counts.deferred += 1,
                QueueKind::Hold => counts.hold += 1,
            }
        }
        counts
    }

    /// Up to `limit` messages due for delivery at `now` (incoming or deferred, no attempt running,
    /// `next_attempt <= now`), oldest first.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<QueueEntry> {
        self.entries()
            .filter(|e| e.kind != QueueKind::Hold && !e.in_flight && e.next_attempt <= now)
            .take(limit)
            .collect()
    }

    /// Marks a delivery attempt as running (flushed, so a crash during it is noticed at start-up).
    /// Fails if the message is gone, on hold or already being delivered.
    pub async fn begin_attempt(&self, id: &QueueId) -> Result<QueueEntry, QueueError> {
        let _guard = self.lock(id).await;
        let mut entry = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        match (entry.kind, entry.in_flight) {
            (QueueKind::Hold, _) => return Err(QueueError::Held(id.clone())),
            (_, true) => return Err(QueueError::InFlight(id.clone())),
            _ => {}
        }
        entry.in_flight = true;
        self.put(&entry)?;
        self.flush().await?;
        tracing::debug!(queue_id = %id, attempt = entry.attempts + 1, "delivery attempt started");
        Ok(entry)
    }

    /// Stores the result of a delivery attempt (recipient statuses, attempts, next attempt, kind,
    /// last error, delay notice, crash count) and clears `in_flight`. When every recipient is delivered or
    /// bounced the message leaves the queue: file removed, directory synced, then entry removed.
    pub async fn end_attempt(&self, entry: QueueEntry) -> Result<(), QueueError> {
        let queue = self.clone();
        tokio::spawn(async move { queue.end_attempt_detached(entry).await })
            .await
            .unwrap_or_else(|e| Err(task_failed(e)))
    }

    async fn end_attempt_detached(&self, result: QueueEntry) -> Result<(), QueueError> {
        let id = result.id.clone();
        let _guard = self.lock(&id).await;
        let Some(stored) = self.get(&id) else {
            tracing::info!(queue_id = %id, "message left the queue during its delivery attempt (deleted)");
            return Ok(());
        };
        let kind = match (stored.kind, result.kind) {
            // An admin hold during the attempt wins; holding is done by `hold`, not by a result.
            (QueueKind::Hold, _) => QueueKind::Hold,
            (kind, QueueKind::Hold) => kind,
            (_, kind) => kind,
        };
        let updated = QueueEntry {
            kind,
            recipients: result.recipients,
            attempts: result.attempts,
            next_attempt: result.next_attempt,
            last_error: result.last_error,
            delay_notice_sent: result.delay_notice_sent,
            // The gateway counts a panicked or timed-out attempt towards the suspect rule.
            crashes: result.crashes.max(stored.crashes),
            in_flight: false,
            ..stored
        };
        if !updated.is_done() {
            self.put(&updated)?;
            self.flush().await?;
            tracing::debug!(queue_id = %id, queue = kind.as_str(), next_attempt = %updated.next_attempt, "delivery attempt recorded");
            return Ok(());
        }
        self.remove_message(dir_of(kind), &id).await?;
        let delivered = updated
            .recipients
            .iter()
            .filter(|r| matches!(r.status, RecipientStatus::Delivered { .. }))
            .count();
        let outcome = match delivered {
            n if n == updated.recipients.len() => Outcome::Delivered,
            0 => Outcome::Bounced,
            _ => Outcome::PartiallyDelivered,
        };
        self.inner.tracking.outcome(&id, outcome);
        tracing::info!(queue_id = %id, ?outcome, attempts = updated.attempts, "message removed from the queue (all recipients final)");
        Ok(())
    }

    /// Where the message's spool file is and the offset of the message bytes in it.
    pub fn message_path(&self, id: &QueueId) -> Option<(PathBuf, u64)> {
        let entry = self.get(id)?;
        let path = self.inner.layout.file(dir_of(entry.kind), id);
        match spool::read_header(&path) {
            Ok(header) => Some((path, header.offset)),
            Err(error) => {
                tracing::warn!(queue_id = %id, %error, "cannot read spool file header");
                None
            }
        }
    }

    /// The message bytes (without the spool header).
    pub async fn read_message(&self, id: &QueueId) -> Result<Vec<u8>, QueueError> {
        let entry = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        let path = self.inner.layout.file(dir_of(entry.kind), id);
        let mut bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| QueueError::io("read spool file", &path, e))?;
        let header = spool::read_header_from(&bytes[..], &path)?;
        bytes.drain(..header.offset as usize);
        Ok(bytes)
    }

    /// Puts a message on hold: its file moves to `hold/` (both directories synced) and it is not
    /// delivered until released. Holding a held message updates the reason.
    pub async fn hold(&self, id: &QueueId, reason: &str) -> Result<(), QueueError> {
        let queue = self.clone();
        let (id, reason) = (id.clone(), reason.to_owned());
        tokio::spawn(async move { queue.hold_detached(&id, &reason).await })
            .await
            .unwrap_or_else(|e| Err(task_failed(e)))
    }

    async fn hold_detached(&self, id: &QueueId, reason: &str) -> Result<(), QueueError> {
        let _guard = self.lock(id).await;
        let mut entry = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        let moved = if entry.kind == QueueKind::Hold {
            Ok(())
        } else {
            self.move_file(id, SpoolDir::Active, SpoolDir::Hold).await
        };
        if moved.is_err() && !self.inner.layout.file(SpoolDir::Hold, id).exists() {
            return moved;
        }
        // The entry follows wherever the file now is, even if the sync reported an error.
        entry.kind = QueueKind::Hold;
        entry.hold_reason = Some(reason.to_owned());
        self.put(&entry)?;
        self.flush().await?;
        moved?;
        self.inner
            .tracking
            .event(id, TrackEvent::now("held", None, reason));
        tracing::info!(queue_id = %id, reason, "message put on hold");
        Ok(())
    }

    /// Releases a held message: back to `active/` as incoming, due now, crash counter reset.
    pub async fn release(&self, id: &QueueId) -> Result<(), QueueError> {
        let queue = self.clone();
        let id = id.clone();
        tokio::spawn(async move { queue.release_detached(&id).await })
            .await
            .unwrap_or_else(|e| Err(task_failed(e)))
    }

    async fn release_detached(&self, id: &QueueId) -> Result<(), QueueError> {
        let _guard = self.lock(id).await;
        let mut entry = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        if entry.kind != QueueKind::Hold {
            return Err(QueueError::NotHeld(id.clone()));
        }
        let moved = self.move_file(id, SpoolDir::Hold, SpoolDir::Active).await;
        if moved.is_err() && !self.inner.layout.file(SpoolDir::Active, id).exists() {
            return moved;
        }
        entry.kind = QueueKind::Incoming;
        entry.hold_reason = None;
        entry.next_attempt = Utc::now();
        entry.crashes = 0;
        self.put(&entry)?;
        self.flush().await?;
        moved?;
        self.inner
            .tracking
            .event(id, TrackEvent::now("released", None, "released from hold"));
        tracing::info!(queue_id = %id, "message released from hold");
        self.inner.notify.notify_one();
        Ok(())
    }

    /// Removes a message from the queue for good (admin action): file, then entry.
    pub async fn delete(&self, id: &QueueId) -> Result<(), QueueError> {
        let queue = self.clone();
        let id = id.clone();
        tokio::spawn(async move { queue.delete_detached(&id).await })
            .await
            .unwrap_or_else(|e| Err(task_failed(e)))
    }

    async fn delete_detached(&self, id: &QueueId) -> Result<(), QueueError> {
        let _guard = self.lock(id).await;
        let entry = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        self.remove_message(dir_of(entry.kind), id).await?;
        self.inner.tracking.event(
            id,
            TrackEvent::now("deleted", None, "deleted by an administrator"),
        );
        self.inner.tracking.outcome(id, Outcome::Deleted);
        tracing::info!(queue_id = %id, "message deleted from the queue");
        Ok(())
    }

    /// Records that the scanning stage has decided about a message, so the scheduler delivers
    /// it without scanning it again. Flushed: a crash after this call never rescans it.
    pub async fn mark_scanned(&self, id: &QueueId) -> Result<(), QueueError> {
        let _guard = self.lock(id).await;
        let mut entry = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        if entry.scanned {
            return Ok(());
        }
        entry.scanned = true;
        // Not flushed: if the mark is lost in a crash the message is scanned again before
        // delivery, which costs time, not mail; a sled flush per message would cost throughput.
        self.put(&entry)?;
        tracing::debug!(queue_id = %id, "message marked scanned");
        Ok(())
    }

    /// Removes a message from the queue because of a decision other than an admin's (a scan
    /// verdict: dropped, rejected, quarantined or replaced by a rewritten copy). Like
    /// [`Queue::delete`], but the tracking record says `reason` instead of "deleted by an
    /// administrator".
    pub async fn delete_with_reason(&self, id: &QueueId, reason: &str) -> Result<(), QueueError> {
        let queue = self.clone();
        let (id, reason) = (id.clone(), reason.to_owned());
        tokio::spawn(async move {
            let _guard = queue.lock(&id).await;
            let entry = queue
                .get(&id)
                .ok_or_else(|| QueueError::NotFound(id.clone()))?;
            queue.remove_message(dir_of(entry.kind), &id).await?;
            queue
                .inner
                .tracking
                .event(&id, TrackEvent::now("deleted", None, reason.as_str()));
            queue.inner.tracking.outcome(&id, Outcome::Deleted);
            tracing::info!(queue_id = %id, reason = %reason, "message removed from the queue");
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(task_failed(e)))
    }

    /// Makes every deferred message due now (`queue flush`); returns how many.
    pub fn retry_all_now(&self) -> usize {
        let now = Utc::now();
        let mut count = 0;
        for (key, value) in self.inner.entries.iter().filter_map(|item| item.ok()) {
            let Some(mut entry) = decode(&key, &value) else {
                continue;
            };
            if entry.kind != QueueKind::Deferred || entry.in_flight {
                continue;
            }
            entry.next_attempt = now;
            let Ok(new) = serde_json::to_vec(&entry) else {
                continue;
            };
            // Compare-and-swap: if a delivery result landed meanwhile, that one is newer and wins.
            if let Ok(Ok(())) = self
                .inner
                .entries
                .compare_and_swap(&key, Some(&value), Some(new))
            {
                count += 1;
            }
        }
        if count > 0 {
            tracing::info!(
                messages = count,
                "deferred messages scheduled for immediate retry"
            );
            self.inner.notify.notify_one();
        }
        count
    }

    /// The message-tracking log.
    pub fn tracking(&self) -> &Tracking {
        &self.inner.tracking
    }

    /// Notified (one permit, so a wake-up is never lost) on every commit, release and flush, so
    /// the scheduler wakes without polling.
    pub fn notify_new(&self) -> Arc<Notify> {
        self.inner.notify.clone()
    }

    async fn lock(&self, id: &QueueId) -> MutexGuard<'_, ()> {
        self.inner.locks[id.shard(LOCK_STRIPES)].lock().await
    }

    fn entries(&self) -> impl Iterator<Item = QueueEntry> + '_ {
        // Keys are queue ids, which sort by arrival: sled's key order is oldest first.
        self.inner
            .entries
            .iter()
            .filter_map(|item| item.ok())
            .filter_map(|(key, value)| decode(&key, &value))
    }

    fn put(&self, entry: &QueueEntry) -> Result<(), QueueError> {
        let value = serde_json::to_vec(entry).map_err(|e| QueueError::State(e.to_string()))?;
        self.inner
            .entries
            .insert(entry.id.as_str(), value)
            .map_err(|e| self.state_error(e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), QueueError> {
        // sled's own flush_async can stall when many tasks flush at once (seen here with 20
        // concurrent delivery attempts after a restart: every one waited forever), so the
        // blocking flush runs on tokio's blocking pool instead.
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| QueueError::State(format!("flush task failed: {e}")))?
            .map_err(|e| self.state_error(e))?;
        Ok(())
    }

    fn state_error(&self, error: sled::Error) -> QueueError {
        QueueError::state(error, &self.inner.layout.state_dir())
    }

    /// Renames a spool file between directories and syncs both (the new name and the removal).
    async fn move_file(
        &self,
        id: &QueueId,
        from: SpoolDir,
        to: SpoolDir,
    ) -> Result<(), QueueError> {
        let (src, dst) = (
            self.inner.layout.file(from, id),
            self.inner.layout.file(to, id),
        );
        tokio::fs::rename(&src, &dst)
            .await
            .map_err(|e| QueueError::io("move spool file to", &dst, e))?;
        self.inner.syncer.sync_both(to, from).await
    }

    /// The end of a message: unlink, sync the directory, then remove the entry. A crash in
    /// between leaves an entry without a file, which start-up removes.
    async fn remove_message(&self, dir: SpoolDir, id: &QueueId) -> Result<(), QueueError> {
        let path = self.inner.layout.file(dir, id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(QueueError::io("remove spool file", &path, e)),
        }
        self.inner.syncer.sync(dir).await?;
        // No sled flush: the file is gone for good, and an entry that outlives it in a crash is
        // removed as an orphan at the next start.
        self.inner
            .entries
            .remove(id.as_str())
            .map_err(|e| self.state_error(e))?;
        Ok(())
    }

    /// Directory fsyncs performed by the committer (for the group-commit test).
    #[cfg(test)]
    pub(crate) fn dir_fsyncs(&self) -> u64 {
        self.inner.syncer.fsync_count()
    }

    /// The queue directory layout (for tests).
    #[cfg(test)]
    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }
}

/// The directory a message of this kind lives in.
fn dir_of(kind: QueueKind) -> SpoolDir {
    match kind {
        QueueKind::Hold => SpoolDir::Hold,
        QueueKind::Incoming | QueueKind::Deferred => SpoolDir::Active,
    }
}

/// Decodes a stored entry; a bad one is logged and skipped (start-up rebuilds it from the file).
fn decode(key: &[u8], value: &[u8]) -> Option<QueueEntry> {
    match serde_json::from_slice(value) {
        Ok(entry) => Some(entry),
        Err(error) => {
            tracing::warn!(queue_id = %String::from_utf8_lossy(key), %error, "unreadable queue entry skipped");
            None
        }
    }
}

/// Removes a file we no longer want, ignoring "already gone".
async fn remove_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove file");
    }
}

/// A queue task panicked or was cancelled by runtime shutdown.
fn task_failed(error: tokio::task::JoinError) -> QueueError {
    if error.is_cancelled() {
        QueueError::ShuttingDown
    } else {
        QueueError::State(format!("internal error in a queue task: {error}"))
    }
}

#[cfg(test)]
mod tests;

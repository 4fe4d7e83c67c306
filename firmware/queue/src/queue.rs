//! The queue: the commit point, the per-message state and every move of a spool file.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::cache::MessageCache;
use crate::draft::{Draft, DraftBody};
use crate::entry::{QueueEntry, QueueKind, RecipientStatus};
use crate::envelope::Envelope;
use crate::error::QueueError;
use crate::id::QueueId;
use crate::log::{self, LogIndex, LogWriter};
use crate::recovery;
use crate::schedule::Schedule;
use crate::spool::{self, Layout, SpoolDir};
use crate::tracking::{Outcome, TrackEvent, Tracking, record_for};
use crate::writer::{CommitBody, Continuation, Job, SpoolWriter};

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
    /// Bytes of recently committed messages kept in memory for scanning and delivery.
    pub message_cache_bytes: usize,
    /// Size of a message log segment (see `log.rs`): the log takes up to two of them on disk
    /// while mail flows.
    pub log_segment_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            fsync: true,
            suspect_after_crashes: 3,
            message_cache_bytes: 64 * 1024 * 1024,
            log_segment_bytes: crate::log::SEGMENT_BYTES,
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
    entries: sled::Tree,
    tracking: Tracking,
    writer: SpoolWriter,
    /// Runs the flushes of the state database (`begin_attempt`, hold, release), batched.
    state_flusher: SpoolWriter,
    /// Which messages live in the message log, and where.
    log: Arc<LogIndex>,
    /// The entries of the messages that live in the message log. They are kept in memory only:
    /// after a crash the log records say all that matters (the envelope; attempts that never
    /// ended). Every other message's entry is in sled.
    logged: Arc<std::sync::Mutex<HashMap<QueueId, QueueEntry>>>,
    cache: Arc<MessageCache>,
    schedule: Arc<Schedule>,
    notify: Arc<Notify>,
    /// Serialise the steps of one message (attempt results, hold, delete) that move or remove its file.
    locks: Vec<Mutex<()>>,
}

impl Drop for Inner {
    /// The tracking log's writer thread is stopped and joined before the state database closes,
    /// so a reopen in the same process finds it unlocked.
    fn drop(&mut self) {
        self.tracking.close();
    }
}

impl Queue {
    /// Opens (creating if needed) the queue in `dir` (`<data_dir>/queue`), reconciles the state
    /// database with the spool directories, and starts the spool writer thread. Fails if another
    /// process has the queue open.
    pub fn open(dir: &Path, config: QueueConfig) -> Result<(Queue, Recovery), QueueError> {
        let layout = Layout::new(dir);
        layout.create()?;
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
        let (recovery, log_state) = recovery::recover(&layout, &config, &entries, &tracking)?;
        db.flush().map_err(|e| QueueError::state(e, &state_dir))?;
        let log_index = log_state.index.clone();
        let logged: HashMap<QueueId, QueueEntry> = log_state
            .entries
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let mut log = LogWriter::new(
            &layout.log_dir(),
            log_state.index,
            log_state.next_segment,
            config.fsync,
        )
        .with_segment_bytes(config.log_segment_bytes);
        let segments_deleted = log.collect_garbage();
        let writer =
            SpoolWriter::start("spool-writer", &layout, db.clone(), config.fsync, Some(log))?;
        // sled flushes get a thread of their own: a commit never waits behind one.
        let state_flusher =
            SpoolWriter::start("state-flusher", &layout, db.clone(), config.fsync, None)?;
        tracing::info!(
            messages = recovery.messages,
            rebuilt_entries = recovery.rebuilt_entries,
            removed_orphans = recovery.removed_orphans,
            tmp_deleted = recovery.tmp_deleted,
            possibly_duplicated = recovery.possibly_duplicated,
            suspects_held = recovery.suspects_held.len(),
            corrupt = recovery.corrupt,
            logged = log_index.len(),
            log_segments_deleted = segments_deleted,
            dir = %dir.display(),
            "queue opened"
        );
        let schedule = Arc::new(Schedule::default());
        for (key, value) in entries.iter().filter_map(|item| item.ok()) {
            if let Some(entry) = decode(&key, &value) {
                schedule.update(&entry);
            }
        }
        for entry in logged.values() {
            schedule.update(entry);
        }
        let inner = Inner {
            cache: Arc::new(MessageCache::new(config.message_cache_bytes)),
            schedule,
            layout,
            config,
            entries,
            tracking,
            writer,
            state_flusher,
            log: log_index,
            logged: Arc::new(std::sync::Mutex::new(logged)),
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

    /// Starts receiving a message. Write the message into the returned draft, then
    /// [`Queue::commit`] or [`Queue::discard`] it. Small messages stay in memory until the commit;
    /// large ones spill to `tmp/<id>` while they arrive.
    pub fn draft(&self, envelope: Envelope) -> Result<Draft, QueueError> {
        loop {
            let id = QueueId::generate();
            // Ids are unique within a process; this guards against a clock that stepped back
            // across a restart and happened to draw the same random suffix.
            if self.logged().contains_key(&id)
                || self
                    .inner
                    .entries
                    .contains_key(id.as_str())
                    .unwrap_or(false)
            {
                continue;
            }
            let path = self.inner.layout.file(SpoolDir::Tmp, &id);
            tracing::debug!(queue_id = %id, "draft started");
            return Ok(Draft::new(id, envelope, path));
        }
    }

    /// The commit point. Returns Ok only once the message is durable: data synced, file renamed
    /// into `active/`, `active/` synced (batched with concurrent commits by the spool writer), and
    /// its queue entry recorded. Only then may the SMTP session answer 250. On error nothing is
    /// left behind and the client must be told to retry.
    ///
    /// Once the draft is handed to the spool writer the commit runs to completion even if the
    /// caller's future is dropped, so a vanished client cannot leave a half-committed message.
    pub async fn commit(&self, mut draft: Draft) -> Result<QueueEntry, QueueError> {
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
        let (message_id, subject) = spool::parse_identity(&draft.head);
        let entry = QueueEntry::new(
            id.clone(),
            draft.envelope.clone(),
            draft.size,
            message_id,
            subject,
        );
        let (body, cached) = match std::mem::replace(&mut draft.body, DraftBody::Done) {
            DraftBody::Memory(message) => {
                let message = Bytes::from(message);
                let header = spool::encode_header(&draft.envelope);
                (
                    CommitBody::Memory {
                        header,
                        message: message.clone(),
                    },
                    Some(message),
                )
            }
            spilled @ DraftBody::Spilled { .. } => {
                // Put the body back so that dropping the draft on failure removes the tmp file.
                draft.body = spilled;
                self.finish_spilled(&mut draft).await?;
                draft.body = DraftBody::Done;
                (CommitBody::Spilled, None)
            }
            DraftBody::Done | DraftBody::OnDisk => {
                return Err(QueueError::io(
                    "commit",
                    &tmp,
                    io::Error::other("draft already committed or discarded"),
                ));
            }
        };
        let record = record_for(
            &entry,
            vec![TrackEvent::now("received", None, "committed to the queue")],
        );
        let (entries, tracking, cache, schedule, log, logged) = (
            self.inner.entries.clone(),
            self.inner.tracking.clone(),
            self.inner.cache.clone(),
            self.inner.schedule.clone(),
            self.inner.log.clone(),
            self.inner.logged.clone(),
        );
        let scheduled = entry.clone();
        let active = self.inner.layout.file(SpoolDir::Active, &id);
        let recorded_id = id.clone();
        let record_entry: Continuation = Box::new(move || {
            if log.contains(&recorded_id) {
                lock_logged(&logged).insert(recorded_id.clone(), scheduled.clone());
            } else {
                let value =
                    serde_json::to_vec(&scheduled).map_err(|e| QueueError::State(e.to_string()))?;
                if let Err(e) = entries.insert(recorded_id.as_str(), value) {
                    // Not recorded: undo, so the client's retry is the only copy.
                    let _ = std::fs::remove_file(&active);
                    if let Some(dir) = active.parent() {
                        let _ = spool::sync_dir(dir);
                    }
                    return Err(QueueError::State(e.to_string()));
                }
            }
            if let Some(message) = cached {
                cache.insert(&recorded_id, message);
            }
            schedule.update(&scheduled);
            tracking.record_message(&record);
            Ok(())
        });
        if let Err(e) = self
            .inner
            .writer
            .submit(
                Job::Commit {
                    id: id.clone(),
                    body,
                },
                Some(record_entry),
            )
            .await
        {
            tracing::error!(queue_id = %id, error = %e, "commit failed; message not accepted");
            return Err(e);
        }
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

    /// Writes out what a spilled draft still holds and syncs its data on the blocking pool, so the
    /// spool writer only renames it (a large sync does not hold up the small commits of a round).
    async fn finish_spilled(&self, draft: &mut Draft) -> Result<(), QueueError> {
        let tmp = draft.tmp_path.clone();
        draft
            .flush()
            .await
            .map_err(|e| QueueError::io("write spool file", &tmp, e))?;
        let DraftBody::Spilled { writer, .. } =
            std::mem::replace(&mut draft.body, DraftBody::OnDisk)
        else {
            unreachable!("finish_spilled is called on spilled drafts");
        };
        let file = writer.into_inner().into_std().await;
        if !self.inner.config.fsync {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || {
            file.sync_data()
                .map_err(|e| QueueError::io("sync spool file", &tmp, e))
        })
        .await
        .unwrap_or_else(|e| Err(task_failed(e)))
    }

    /// Abandons a draft (the client gave up or the message was rejected) and removes its tmp file.
    pub async fn discard(&self, mut draft: Draft) {
        if let DraftBody::Spilled { .. } | DraftBody::OnDisk =
            std::mem::replace(&mut draft.body, DraftBody::Done)
        {
            remove_quietly(&draft.tmp_path).await;
        }
        tracing::debug!(queue_id = %draft.id, "draft discarded");
    }

    /// The entry of a message, if it is in the queue.
    pub fn get(&self, id: &QueueId) -> Option<QueueEntry> {
        if let Some(entry) = self.logged().get(id) {
            return Some(entry.clone());
        }
        let bytes = self.inner.entries.get(id.as_str()).ok()??;
        decode(id.as_str().as_bytes(), &bytes)
    }

    /// Every queued message, oldest first.
    pub fn list(&self) -> Vec<QueueEntry> {
        self.entries().collect()
    }

    /// How many messages each queue holds.
    pub fn counts(&self) -> QueueCounts {
        self.inner.schedule.counts()
    }

    /// Up to `limit` messages due for delivery at `now` (incoming or deferred, no attempt running,
    /// `next_attempt <= now`), earliest first.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<QueueEntry> {
        self.due_except(now, limit, |_| false)
    }

    /// Like [`Queue::due`], passing over the messages `skip` says (for example those an SMTP
    /// session is still scanning) before they count towards `limit` or are read. `skip` runs
    /// under the schedule's lock, so it must not call into the queue.
    pub fn due_except(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        skip: impl Fn(&QueueId) -> bool,
    ) -> Vec<QueueEntry> {
        let mut due = Vec::new();
        for id in self.inner.schedule.due(now, limit, skip) {
            match self.get(&id) {
                Some(e) if e.kind != QueueKind::Hold && !e.in_flight && e.next_attempt <= now => {
                    due.push(e)
                }
                // The index lagged behind a concurrent change; set it right.
                Some(e) => self.inner.schedule.update(&e),
                None => self.inner.schedule.forget(&id),
            }
        }
        due
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
        if self.inner.log.contains(id) {
            // One attempt record in the log, handed over without waking the writer: it rides
            // with the next commit's round and sync (or gets a round of its own after 1 ms).
            self.inner
                .writer
                .submit_riding(Job::Attempt { id: id.clone() })
                .await?;
            self.put(&entry)?;
        } else {
            self.put(&entry)?;
            self.flush().await?;
        }
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

    /// [`Queue::end_attempt`] in the caller's task rather than one of its own, which saves a task
    /// per message. For a caller that always lets it run to the end: not under a timeout or in a
    /// `select!`, where a store dropped half-way would leave the message marked in flight.
    pub async fn end_attempt_here(&self, entry: QueueEntry) -> Result<(), QueueError> {
        self.end_attempt_detached(entry).await
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
            if self.inner.log.contains(&id) {
                // It stays for another attempt: out of the log, so the segments it sits in can go.
                self.move_out_of_log(&updated).await?;
            } else {
                self.put(&updated)?;
                self.flush().await?;
            }
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
        // The scheduler logs the message's end at info ("message done"); this is the queue's side.
        tracing::debug!(queue_id = %id, ?outcome, attempts = updated.attempts, "message removed from the queue (all recipients final)");
        Ok(())
    }

    /// Where the message's spool file is and the offset of the message bytes in it. `None` for
    /// a message that is not in a spool file of its own: it lives in the message log (read it
    /// with [`Queue::small_message`]) or is gone.
    pub fn message_path(&self, id: &QueueId) -> Option<(PathBuf, u64)> {
        if self.inner.log.contains(id) {
            return None;
        }
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
        Ok(self.message_bytes(id).await?.to_vec())
    }

    /// The message bytes (without the spool header), from memory when the message arrived
    /// recently, else read from its spool file on the blocking pool.
    pub async fn message_bytes(&self, id: &QueueId) -> Result<Bytes, QueueError> {
        if let Some(message) = self.inner.cache.get(id) {
            return Ok(message);
        }
        if let Some(message) = self.logged_message(id).await? {
            return Ok(message);
        }
        let entry = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        let path = self.inner.layout.file(dir_of(entry.kind), id);
        tokio::task::spawn_blocking(move || {
            let mut bytes =
                std::fs::read(&path).map_err(|e| QueueError::io("read spool file", &path, e))?;
            let header = spool::read_header_from(&bytes[..], &path)?;
            bytes.drain(..header.offset as usize);
            Ok(Bytes::from(bytes))
        })
        .await
        .unwrap_or_else(|e| Err(task_failed(e)))
    }

    /// The message bytes if they are in memory (see [`Queue::message_bytes`]); `None` means
    /// read the spool file (see [`Queue::message_path`]).
    pub fn cached_message(&self, id: &QueueId) -> Option<Bytes> {
        self.inner.cache.get(id)
    }

    /// The message bytes if the message is small enough to be read whole: in memory, or in the
    /// message log (which holds messages of up to a few MiB). `None` means read its spool file
    /// (see [`Queue::message_path`]).
    pub async fn small_message(&self, id: &QueueId) -> Option<Bytes> {
        if let Some(message) = self.inner.cache.get(id) {
            return Some(message);
        }
        match self.logged_message(id).await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(queue_id = %id, %error, "cannot read a message from the message log");
                None
            }
        }
    }

    /// The message bytes from the message log, if the message lives there.
    async fn logged_message(&self, id: &QueueId) -> Result<Option<Bytes>, QueueError> {
        // Its entry says whether it is still queued (the index lags behind a removal until the
        // writer takes the done record).
        if !self.logged().contains_key(id) {
            return Ok(None);
        }
        let Some(pos) = self.inner.log.get(id) else {
            return Ok(None);
        };
        let dir = self.inner.layout.log_dir();
        tokio::task::spawn_blocking(move || {
            let path = log::segment_path(&dir, pos.segment);
            let mut bytes = log::read_payload(&dir, pos)
                .map_err(|e| QueueError::io("read the message log", &path, e))?;
            let header = spool::read_header_from(&bytes[..], &path)?;
            bytes.drain(..header.offset as usize);
            Ok(Some(Bytes::from(bytes)))
        })
        .await
        .unwrap_or_else(|e| Err(task_failed(e)))
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
        // A held message may wait for days: no reason to keep it in memory.
        self.inner.cache.remove(id);
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
    /// it without scanning it again. Not flushed: a crash soon after this call may rescan it.
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
        // delivery, which costs time, not mail; a sync per message would cost throughput.
        // A logged message's mark is a record in the log, written with the next round.
        if self.inner.log.contains(id) {
            self.inner.writer.send(Job::MarkScanned { id: id.clone() });
        }
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
                self.inner.schedule.update(&entry);
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
        // One snapshot of the logged entries; sled's are the rest (an entry found in both is
        // a logged message whose move out of the log is under way: the logged one is current).
        let logged: HashMap<QueueId, QueueEntry> = self.logged().clone();
        let mut all: Vec<QueueEntry> = self
            .inner
            .entries
            .iter()
            .filter_map(|item| item.ok())
            .filter_map(|(key, value)| decode(&key, &value))
            .filter(|e| !logged.contains_key(&e.id))
            .collect();
        all.extend(logged.into_values());
        // Queue ids sort by arrival: oldest first.
        all.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        all.into_iter()
    }

    /// Stores an entry where it lives: in memory for a message in the message log, else in sled
    /// (and then no longer in memory).
    fn put(&self, entry: &QueueEntry) -> Result<(), QueueError> {
        if self.inner.log.contains(&entry.id) {
            self.logged().insert(entry.id.clone(), entry.clone());
            self.inner.schedule.update(entry);
            return Ok(());
        }
        self.put_state(entry)?;
        self.logged().remove(&entry.id);
        Ok(())
    }

    /// Moves a logged message into a spool file of its own in `active/`, with `entry` as its
    /// state. The entry goes to sled first (a crash before the move finds it there, and start-up
    /// finishes the move), then the file is made durable, then the log forgets the message.
    async fn move_out_of_log(&self, entry: &QueueEntry) -> Result<(), QueueError> {
        self.put_state(entry)?;
        self.flush().await?;
        self.inner
            .writer
            .submit(
                Job::Persist {
                    id: entry.id.clone(),
                },
                None,
            )
            .await?;
        self.logged().remove(&entry.id);
        Ok(())
    }

    /// Stores an entry in sled.
    fn put_state(&self, entry: &QueueEntry) -> Result<(), QueueError> {
        let value = serde_json::to_vec(entry).map_err(|e| QueueError::State(e.to_string()))?;
        self.inner
            .entries
            .insert(entry.id.as_str(), value)
            .map_err(|e| self.state_error(e))?;
        self.inner.schedule.update(entry);
        Ok(())
    }

    fn logged(&self) -> std::sync::MutexGuard<'_, HashMap<QueueId, QueueEntry>> {
        lock_logged(&self.inner.logged)
    }

    /// Makes the state database durable. The spool writer runs one flush for all who asked during
    /// a round. (sled's own `flush_async` stalls when many tasks flush at once, seen with 20
    /// concurrent delivery attempts after a restart; the writer thread calls the blocking one.)
    async fn flush(&self) -> Result<(), QueueError> {
        self.inner.state_flusher.submit(Job::FlushState, None).await
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
        self.inner
            .writer
            .submit(
                Job::Move {
                    id: id.clone(),
                    from,
                    to,
                },
                None,
            )
            .await
    }

    /// The end of a message: unlink, sync the directory, then remove the entry. A crash in
    /// between leaves an entry without a file, which start-up removes.
    async fn remove_message(&self, dir: SpoolDir, id: &QueueId) -> Result<(), QueueError> {
        if dir == SpoolDir::Active && self.inner.log.contains(id) {
            // A logged message: gone from memory now; its done record is handed to the
            // writer without a wait or a wake-up (written with the next round, synced like
            // every done record with a later one). Lost in a crash, it brings the message
            // back with its attempt record: delivered again and counted as a possible duplicate.
            forget_in_memory(
                &self.inner.cache,
                &self.inner.schedule,
                &self.inner.logged,
                id,
            );
            self.inner.writer.send(Job::Remove {
                dir,
                id: id.clone(),
            });
            return Ok(());
        }
        let (entries, cache, schedule, logged, gone) = (
            self.inner.entries.clone(),
            self.inner.cache.clone(),
            self.inner.schedule.clone(),
            self.inner.logged.clone(),
            id.clone(),
        );
        // No sled flush: the file is gone for good, and an entry that outlives it in a crash is
        // removed as an orphan at the next start.
        let forget: Continuation = Box::new(move || {
            if forget_in_memory(&cache, &schedule, &logged, &gone) {
                return Ok(());
            }
            entries
                .remove(gone.as_str())
                .map(|_| ())
                .map_err(|e| QueueError::State(e.to_string()))
        });
        self.inner
            .writer
            .submit(
                Job::Remove {
                    dir,
                    id: id.clone(),
                },
                Some(forget),
            )
            .await
    }

    /// Directory fsyncs performed by the spool writer (for the group-commit test).
    #[cfg(test)]
    pub(crate) fn dir_fsyncs(&self) -> u64 {
        self.inner.writer.dir_fsyncs()
    }

    /// Syncs of the message log (for the group-commit test).
    #[cfg(test)]
    pub(crate) fn log_syncs(&self) -> u64 {
        self.inner.log.syncs()
    }

    /// The message log index once the spool writer has taken every job handed to it so far,
    /// including those handed over without a wait (for tests).
    #[cfg(test)]
    pub(crate) async fn log_index(&self) -> &LogIndex {
        let _ = self.inner.writer.submit(Job::FlushState, None).await;
        &self.inner.log
    }

    /// Moves a message out of the message log into a spool file of its own (for tests that
    /// work on spool files).
    #[cfg(test)]
    pub(crate) async fn persist(&self, id: &QueueId) {
        let entry = self.get(id).unwrap();
        self.move_out_of_log(&entry).await.unwrap();
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

/// Drops a message that left the queue from the in-memory cache, schedule and logged entries;
/// returns whether it was a logged message (then it has no entry in sled).
fn forget_in_memory(
    cache: &MessageCache,
    schedule: &Schedule,
    logged: &std::sync::Mutex<HashMap<QueueId, QueueEntry>>,
    id: &QueueId,
) -> bool {
    cache.remove(id);
    schedule.forget(id);
    lock_logged(logged).remove(id).is_some()
}

/// The map of logged entries, locked (plain data: a panic elsewhere cannot leave it half done).
fn lock_logged(
    logged: &std::sync::Mutex<HashMap<QueueId, QueueEntry>>,
) -> std::sync::MutexGuard<'_, HashMap<QueueId, QueueEntry>> {
    logged.lock().unwrap_or_else(|e| e.into_inner())
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

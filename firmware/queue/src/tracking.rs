//! The message-tracking log: what happened to each message and each SMTP session.
//!
//! Best effort by design: a failure is logged, never returned, because losing a log line must
//! never refuse or delay mail. Values are JSON so they stay readable and can gain fields later.
//!
//! Trees: `tracking` (queue id → MessageRecord), `tracking_events` (queue id + time + sequence →
//! TrackEvent), `tracking_outcomes` (queue id → Outcome), `tracking_by_time` (received time + id →
//! ()), `sessions` (end time of the newest + sequence → up to [`SESSIONS_PER_ROW`] SessionRecords,
//! oldest first; rows written before there were several per row are keyed by end time + session
//! id and hold one SessionRecord).
//!
//! **Written behind.** Recording only updates an in-memory buffer; a thread of the log's own
//! writes it to sled every [`FLUSH_INTERVAL`]. A message stays in the buffer until it has an
//! outcome or for [`MAX_PENDING_AGE`], so that a message received, scanned and delivered within
//! that time is one record with its events and outcome embedded (two inserts: the record and the
//! time index) instead of a row per event, an outcome row and a read before each. Events and
//! outcomes that come after the record was written are rows of their own, so recording them is
//! a single insert rather than a read-modify-write of a record that grows with every event.
//! Every read writes the buffer out first, so readers see everything recorded so far; dropping
//! the last handle (or [`Tracking::flush`]) writes what is left. A crash loses at most the last
//! second of tracking, like sled's own flush interval; never mail.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{ID_LEN, QueueId};

/// Everything known about one message, for search and reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The queue id.
    pub queue_id: QueueId,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The SMTP client's address.
    pub client_ip: Option<IpAddr>,
    /// The client's HELO/EHLO name.
    pub helo: Option<String>,
    /// TLS protocol and cipher of the inbound session.
    pub tls: Option<String>,
    /// The envelope sender ("" = null sender).
    pub sender: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// Message size in bytes.
    pub size: u64,
    /// The Message-ID header.
    pub message_id: Option<String>,
    /// The Subject header.
    pub subject: Option<String>,
    /// What happened, oldest first.
    #[serde(default)]
    pub events: Vec<TrackEvent>,
    /// How it ended, once it has.
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

/// One step in a message's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// "received", "delivered", "deferred", "bounced", "held", "released", "deleted", "dsn_sent",
    /// "delay_notice_sent" or "recovered".
    pub kind: String,
    /// The recipient concerned, for per-recipient events.
    pub recipient: Option<String>,
    /// Free text: the remote reply, the hold reason, …
    pub detail: String,
}

impl TrackEvent {
    /// An event happening now.
    pub fn now(kind: &str, recipient: Option<&str>, detail: impl Into<String>) -> TrackEvent {
        TrackEvent {
            at: Utc::now(),
            kind: kind.to_owned(),
            recipient: recipient.map(str::to_owned),
            detail: detail.into(),
        }
    }
}

/// How a message left the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every recipient delivered.
    Delivered,
    /// Every recipient bounced.
    Bounced,
    /// Removed by an admin.
    Deleted,
    /// Some recipients delivered, some bounced.
    PartiallyDelivered,
}

/// One inbound SMTP session, recorded when it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session number (the `session_id` log field).
    pub session_id: u64,
    /// When the client connected.
    pub started: DateTime<Utc>,
    /// When the session ended.
    pub ended: DateTime<Utc>,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The client's HELO/EHLO name.
    pub helo: Option<String>,
    /// TLS protocol and cipher, if used.
    pub tls: Option<String>,
    /// Messages accepted (250 after DATA/BDAT).
    pub messages: u32,
    /// Commands rejected.
    pub rejected: u32,
    /// How it ended: "quit", "timeout", "too many errors", "shutdown", …
    pub end: String,
}

/// How often the buffer is written to sled.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// How long a message without an outcome stays in the buffer at most.
pub const MAX_PENDING_AGE: Duration = Duration::from_secs(1);

/// Sessions stored in one row of the `sessions` tree: a session costs no insert of its own (a
/// busy gateway ends as many sessions as it receives messages), and a row stays small.
pub const SESSIONS_PER_ROW: usize = 32;

/// Buffered messages beyond which the next write takes all of them, outcome or not.
const MAX_PENDING_MESSAGES: usize = 20_000;

/// The tracking log, shared by the queue and the gateway (get it with [`crate::Queue::tracking`]).
#[derive(Clone)]
pub struct Tracking {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking").finish_non_exhaustive()
    }
}

struct Shared {
    messages: sled::Tree,
    events: sled::Tree,
    outcomes: sled::Tree,
    by_time: sled::Tree,
    sessions: sled::Tree,
    /// Tells apart events of one message recorded in the same microsecond.
    sequence: AtomicU32,
    /// What was recorded and is not in sled yet.
    pending: Mutex<Pending>,
    /// Held while buffered entries are written, so a reader that writes the buffer out first
    /// also waits for a write the background thread has under way.
    writing: Mutex<()>,
    /// The background writer, stopped and joined by [`Tracking::close`].
    writer: Mutex<Option<(Arc<Stop>, std::thread::JoinHandle<()>)>>,
}

/// Tells the background writer to stop.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct Pending {
    messages: HashMap<QueueId, PendingMessage>,
    sessions: Vec<SessionRecord>,
}

/// A message's tracking since the buffer was last written.
struct PendingMessage {
    /// Its record, if recorded since (else it is in sled already, or never was).
    record: Option<MessageRecord>,
    /// Events not yet written.
    events: Vec<TrackEvent>,
    outcome: Option<Outcome>,
    since: Instant,
}

impl Pending {
    /// The buffered tracking of message `id`, started empty if there is none.
    fn message(&mut self, id: &QueueId) -> &mut PendingMessage {
        self.messages
            .entry(id.clone())
            .or_insert_with(PendingMessage::new)
    }
}

impl PendingMessage {
    fn new() -> PendingMessage {
        PendingMessage {
            record: None,
            events: Vec::new(),
            outcome: None,
            since: Instant::now(),
        }
    }
}

/// A time as a key that sorts like the time (big-endian, sign bit flipped).
fn time_key(at: DateTime<Utc>) -> [u8; 8] {
    ((at.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

fn by_time_key(at: DateTime<Utc>, id: &QueueId) -> Vec<u8> {
    let mut key = time_key(at).to_vec();
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

impl Tracking {
    pub(crate) fn open(db: &sled::Db) -> Result<Tracking, sled::Error> {
        let shared = Arc::new(Shared {
            messages: db.open_tree("tracking")?,
            events: db.open_tree("tracking_events")?,
            outcomes: db.open_tree("tracking_outcomes")?,
            by_time: db.open_tree("tracking_by_time")?,
            sessions: db.open_tree("sessions")?,
            sequence: AtomicU32::new(0),
            pending: Mutex::new(Pending::default()),
            writing: Mutex::new(()),
            writer: Mutex::new(None),
        });
        let stop = Arc::new(Stop::default());
        let started = std::thread::Builder::new().name("tracking".into()).spawn({
            let (weak, stop) = (Arc::downgrade(&shared), stop.clone());
            move || write_behind(weak, &stop)
        });
        match started {
            Ok(thread) => *shared.writer.lock().expect("tracking writer") = Some((stop, thread)),
            // Still correct: everything is written by the next read or when the log is closed.
            Err(e) => tracing::warn!(error = %e, "cannot start the tracking log's writer thread"),
        }
        Ok(Tracking { shared })
    }

    /// Stops the background writer and writes what is left. The queue calls it when it closes,
    /// so that no thread holds the state database open after the queue is gone.
    pub(crate) fn close(&self) {
        let writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((stop, thread)) = writer {
            *stop.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
            stop.wake.notify_all();
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        self.flush();
    }

    /// Stores what is known about a message. Calling it again for the same id updates the
    /// fields and adds the new record's events that are not there yet (same kind, recipient and
    /// detail), so the queue and the gateway may both record a message without doubling it.
    pub fn record_message(&self, rec: &MessageRecord) {
        let mut pending = self.shared.pending();
        let message = pending.message(&rec.queue_id);
        message.record = Some(match message.record.take() {
            Some(old) => merged(old, rec),
            None => rec.clone(),
        });
    }

    /// Adds an event to a message's record (creating a bare record if there is none).
    pub fn event(&self, id: &QueueId, ev: TrackEvent) {
        self.shared.pending().message(id).events.push(ev);
    }

    /// Sets how a message ended.
    pub fn outcome(&self, id: &QueueId, outcome: Outcome) {
        self.shared.pending().message(id).outcome = Some(outcome);
    }

    /// Stores a finished SMTP session.
    pub fn record_session(&self, rec: &SessionRecord) {
        self.shared.pending().sessions.push(rec.clone());
    }

    /// Writes everything recorded so far to the state database (reads do this themselves; the
    /// gateway calls it at shutdown).
    pub fn flush(&self) {
        self.shared.write_out(|_| true);
    }

    /// The record of a message, if it is (still) in the log: its fields, every event oldest
    /// first, and its outcome.
    pub fn get(&self, id: &QueueId) -> Option<MessageRecord> {
        self.flush();
        self.shared.get(id)
    }

    /// The most recently received messages, newest first.
    pub fn recent(&self, limit: usize) -> Vec<MessageRecord> {
        self.flush();
        self.shared.records(self.shared.by_time.iter().rev(), limit)
    }

    /// Messages received in `[from, to)`, oldest first, at most `limit`.
    pub fn received_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<MessageRecord> {
        self.flush();
        self.shared.records(
            self.shared.by_time.range(time_key(from)..time_key(to)),
            limit,
        )
    }

    /// The most recently ended sessions, newest first.
    pub fn recent_sessions(&self, limit: usize) -> Vec<SessionRecord> {
        self.flush();
        let mut sessions = Vec::new();
        for (_, value) in self
            .shared
            .sessions
            .iter()
            .rev()
            .filter_map(|item| item.ok())
        {
            // Rows are ordered by their newest session, and the rows of two writes may overlap
            // in time: one row past the limit is enough to sort the limit right.
            let enough = sessions.len() >= limit;
            sessions.extend(session_row(&value));
            if enough {
                break;
            }
        }
        sessions.sort_by_key(|s: &SessionRecord| std::cmp::Reverse(s.ended));
        sessions.truncate(limit);
        sessions
    }

    /// Drops message records received and sessions ended before `cutoff` (sessions by the row:
    /// a row goes once its newest session ended before `cutoff`); returns how many records went.
    /// The log has no size limit of its own, so the gateway calls this periodically.
    pub fn prune_before(&self, cutoff: DateTime<Utc>) -> usize {
        self.flush();
        self.shared.prune_before(cutoff)
    }
}

/// The background writer: every [`FLUSH_INTERVAL`], the messages that are done or old enough
/// and every session. Stops when the log is closed.
fn write_behind(shared: Weak<Shared>, stop: &Stop) {
    loop {
        {
            let stopped = stop.stopped.lock().unwrap_or_else(|e| e.into_inner());
            let (stopped, _) = stop
                .wake
                .wait_timeout_while(stopped, FLUSH_INTERVAL, |stopped| !*stopped)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let crowded = shared.pending().messages.len() > MAX_PENDING_MESSAGES;
        shared.write_out(|m| {
            crowded || m.outcome.is_some() || now.duration_since(m.since) >= MAX_PENDING_AGE
        });
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.write_out(|_| true);
    }
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the buffered messages `due` picks, and every buffered session, to sled.
    fn write_out(&self, due: impl Fn(&PendingMessage) -> bool) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let (messages, sessions) = {
            let mut pending = self.pending();
            if pending.messages.is_empty() && pending.sessions.is_empty() {
                return;
            }
            let messages: Vec<(QueueId, PendingMessage)> =
                pending.messages.extract_if(|_, m| due(m)).collect();
            (messages, std::mem::take(&mut pending.sessions))
        };
        for (id, message) in messages {
            self.write_message(&id, message);
        }
        self.store_sessions(sessions);
    }

    fn write_message(&self, id: &QueueId, message: PendingMessage) {
        match message.record {
            // Recorded while buffered: one record with its events and outcome.
            Some(mut rec) => {
                rec.events.extend(message.events);
                if message.outcome.is_some() {
                    rec.outcome = message.outcome;
                }
                self.store_message(&rec);
            }
            // The record was written earlier (or never): events and outcome as rows.
            None => {
                for ev in message.events {
                    self.store_event(id, ev);
                }
                if let Some(outcome) = message.outcome {
                    self.store_outcome(id, outcome);
                }
            }
        }
    }

    fn store_message(&self, rec: &MessageRecord) {
        let key = rec.queue_id.as_str().as_bytes();
        // The usual case, a message seen for the first time, is one insert.
        if let Ok(value) = serde_json::to_vec(rec)
            && let Ok(Ok(())) = self
                .messages
                .compare_and_swap(key, None::<&[u8]>, Some(value))
        {
            self.index(rec.received_at, &rec.queue_id);
            return;
        }
        let result = self.messages.update_and_fetch(key, |old| {
            let merged =
                match old.and_then(|bytes| serde_json::from_slice::<MessageRecord>(bytes).ok()) {
                    Some(old) => merged(old, rec),
                    None => rec.clone(),
                };
            serde_json::to_vec(&merged).ok()
        });
        self.log_failure(result.map(drop), &rec.queue_id, "record message");
        self.index(rec.received_at, &rec.queue_id);
    }

    fn store_event(&self, id: &QueueId, ev: TrackEvent) {
        self.ensure_record(id, ev.at);
        let mut key = id.as_str().as_bytes().to_vec();
        key.extend_from_slice(&time_key(ev.at));
        key.extend_from_slice(&self.sequence.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let result = serde_json::to_vec(&ev)
            .map_err(|e| sled::Error::Unsupported(e.to_string()))
            .and_then(|value| self.events.insert(key, value));
        self.log_failure(result.map(drop), id, "record event");
    }

    fn store_outcome(&self, id: &QueueId, outcome: Outcome) {
        self.ensure_record(id, Utc::now());
        let result = serde_json::to_vec(&outcome)
            .map_err(|e| sled::Error::Unsupported(e.to_string()))
            .and_then(|value| self.outcomes.insert(id.as_str().as_bytes(), value));
        self.log_failure(result.map(drop), id, "record outcome");
    }

    /// Stores sessions [`SESSIONS_PER_ROW`] to a row, oldest first, each row keyed by the end
    /// time of its newest session.
    fn store_sessions(&self, mut sessions: Vec<SessionRecord>) {
        sessions.sort_by_key(|s| s.ended);
        for row in sessions.chunks(SESSIONS_PER_ROW) {
            let newest = row.last().expect("chunks are not empty");
            let mut key = time_key(newest.ended).to_vec();
            key.extend_from_slice(&self.sequence.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            let result = serde_json::to_vec(row)
                .map_err(|e| e.to_string())
                .and_then(|value| {
                    self.sessions
                        .insert(key, value)
                        .map(drop)
                        .map_err(|e| e.to_string())
                });
            if let Err(error) = result {
                tracing::warn!(sessions = row.len(), %error, "could not write sessions to the tracking log");
            }
        }
    }

    /// Makes sure a message has a record, so that its events can be found by time.
    fn ensure_record(&self, id: &QueueId, at: DateTime<Utc>) {
        let key = id.as_str().as_bytes();
        if self.messages.contains_key(key).unwrap_or(true) {
            return;
        }
        if let Ok(value) = serde_json::to_vec(&bare_record(id, at))
            && let Ok(Ok(())) = self
                .messages
                .compare_and_swap(key, None::<&[u8]>, Some(value))
        {
            self.index(at, id);
        }
    }

    fn get(&self, id: &QueueId) -> Option<MessageRecord> {
        let bytes = self.messages.get(id.as_str().as_bytes()).ok()??;
        let mut rec: MessageRecord = serde_json::from_slice(&bytes).ok()?;
        let events = self
            .events
            .scan_prefix(id.as_str().as_bytes())
            .values()
            .filter_map(|value| value.ok())
            .filter_map(|value| serde_json::from_slice::<TrackEvent>(&value).ok());
        rec.events.extend(events);
        rec.events.sort_by_key(|e| e.at);
        if let Some(outcome) = self
            .outcomes
            .get(id.as_str().as_bytes())
            .ok()
            .flatten()
            .and_then(|value| serde_json::from_slice::<Outcome>(&value).ok())
        {
            rec.outcome = Some(outcome);
        }
        Some(rec)
    }

    fn records(
        &self,
        keys: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        limit: usize,
    ) -> Vec<MessageRecord> {
        keys.filter_map(|item| item.ok())
            .filter_map(|(key, _)| {
                std::str::from_utf8(key.get(8..8 + ID_LEN)?)
                    .ok()?
                    .parse::<QueueId>()
                    .ok()
            })
            .filter_map(|id| self.get(&id))
            .take(limit)
            .collect()
    }

    fn prune_before(&self, cutoff: DateTime<Utc>) -> usize {
        let mut removed = 0;
        let old: Vec<sled::IVec> = self
            .by_time
            .range(..time_key(cutoff))
            .keys()
            .filter_map(|k| k.ok())
            .collect();
        for key in old {
            if let Some(id) = key.get(8..).and_then(|id| std::str::from_utf8(id).ok()) {
                let _ = self.messages.remove(id.as_bytes());
                let _ = self.outcomes.remove(id.as_bytes());
                let events: Vec<sled::IVec> = self
                    .events
                    .scan_prefix(id.as_bytes())
                    .keys()
                    .filter_map(|k| k.ok())
                    .collect();
                for event in events {
                    let _ = self.events.remove(event);
                }
            }
            let _ = self.by_time.remove(&key);
            removed += 1;
        }
        let old: Vec<sled::IVec> = self
            .sessions
            .range(..time_key(cutoff))
            .keys()
            .filter_map(|k| k.ok())
            .collect();
        for key in old {
            if let Ok(Some(row)) = self.sessions.remove(&key) {
                removed += session_row(&row).len();
            }
        }
        removed
    }

    fn index(&self, at: DateTime<Utc>, id: &QueueId) {
        let result = self.by_time.insert(by_time_key(at, id), &[]);
        self.log_failure(result.map(drop), id, "index message");
    }

    fn log_failure(&self, result: sled::Result<()>, id: &QueueId, what: &str) {
        if let Err(error) = result {
            tracing::warn!(queue_id = %id, %error, "tracking log: could not {what}");
        }
    }
}

/// The sessions of one row of the `sessions` tree, as stored (oldest first): a list, or a single
/// session in a row written before rows held several.
fn session_row(value: &[u8]) -> Vec<SessionRecord> {
    serde_json::from_slice::<Vec<SessionRecord>>(value)
        .or_else(|_| serde_json::from_slice::<SessionRecord>(value).map(|one| vec![one]))
        .unwrap_or_default()
}

/// `new`'s fields, with `old`'s events followed by those of `new` that are not there yet (same
/// kind, recipient and detail), and `new`'s outcome or else `old`'s.
fn merged(old: MessageRecord, new: &MessageRecord) -> MessageRecord {
    let mut events = old.events;
    for ev in &new.events {
        if !events
            .iter()
            .any(|e| e.kind == ev.kind && e.recipient == ev.recipient && e.detail == ev.detail)
        {
            events.push(ev.clone());
        }
    }
    MessageRecord {
        events,
        outcome: new.outcome.or(old.outcome),
        ..new.clone()
    }
}

/// A record for a message the log has not seen (e.g. rebuilt after the state database was lost).
fn bare_record(id: &QueueId, at: DateTime<Utc>) -> MessageRecord {
    MessageRecord {
        queue_id: id.clone(),
        received_at: at,
        client_ip: None,
        helo: None,
        tls: None,
        sender: String::new(),
        recipients: Vec::new(),
        size: 0,
        message_id: None,
        subject: None,
        events: Vec::new(),
        outcome: None,
    }
}

/// The tracking record of a queued message, with the given events.
pub(crate) fn record_for(
    entry: &crate::entry::QueueEntry,
    events: Vec<TrackEvent>,
) -> MessageRecord {
    let client = entry.envelope.client.as_ref();
    MessageRecord {
        queue_id: entry.id.clone(),
        received_at: entry.envelope.received_at,
        client_ip: client.map(|c| c.ip),
        helo: client.and_then(|c| c.helo.clone()),
        tls: client.and_then(|c| c.tls.clone()),
        sender: entry.envelope.sender.clone(),
        recipients: entry.envelope.recipients.clone(),
        size: entry.size,
        message_id: entry.message_id.clone(),
        subject: entry.subject.clone(),
        events,
        outcome: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn tracking() -> (tempfile::TempDir, Tracking) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tracking = Tracking::open(&db).unwrap();
        (dir, tracking)
    }

    fn record(id: &QueueId, at: DateTime<Utc>) -> MessageRecord {
        MessageRecord {
            sender: "a@example.org".into(),
            recipients: vec!["b@example.com".into()],
            size: 10,
            ..bare_record(id, at)
        }
    }

    /// Records a new message received at `at`, with its "received" event.
    fn received(tracking: &Tracking, at: DateTime<Utc>) -> (QueueId, MessageRecord) {
        let id = QueueId::generate();
        let mut rec = record(&id, at);
        rec.events
            .push(TrackEvent::now("received", None, "committed"));
        tracking.record_message(&rec);
        (id, rec)
    }

    #[test]
    fn recording_a_message_twice_merges_events_instead_of_doubling_them() {
        let (_dir, tracking) = tracking();
        let (id, mut rec) = received(&tracking, Utc::now());
        tracking.event(
            &id,
            TrackEvent::now("delivered", Some("b@example.com"), "250 ok"),
        );
        rec.subject = Some("hello".into());
        tracking.record_message(&rec);
        tracking.outcome(&id, Outcome::Delivered);
        let stored = tracking.get(&id).unwrap();
        let kinds: Vec<&str> = stored.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["received", "delivered"]);
        assert_eq!(stored.subject.as_deref(), Some("hello"));
        assert_eq!(stored.outcome, Some(Outcome::Delivered));
        assert_eq!(tracking.recent(10).len(), 1);
    }

    #[test]
    fn recent_is_newest_first_and_time_ranges_select_by_received_time() {
        let (_dir, tracking) = tracking();
        let base = Utc::now() - chrono::Duration::hours(3);
        let ids: Vec<QueueId> = (0..3).map(|_| QueueId::generate()).collect();
        for (n, id) in ids.iter().enumerate() {
            tracking.record_message(&record(id, base + chrono::Duration::hours(n as i64)));
        }
        let recent: Vec<QueueId> = tracking.recent(2).into_iter().map(|r| r.queue_id).collect();
        assert_eq!(recent, [ids[2].clone(), ids[1].clone()]);
        let middle = tracking.received_between(
            base + chrono::Duration::minutes(30),
            base + chrono::Duration::minutes(90),
            10,
        );
        assert_eq!(middle.len(), 1);
        assert_eq!(middle[0].queue_id, ids[1]);
        assert_eq!(
            tracking.prune_before(base + chrono::Duration::minutes(30)),
            1
        );
        assert!(tracking.get(&ids[0]).is_none());
        assert_eq!(tracking.recent(10).len(), 2);
    }

    #[test]
    fn events_are_rows_of_their_own_and_pruned_with_their_message() {
        let (_dir, tracking) = tracking();
        let (id, _) = received(&tracking, Utc::now() - chrono::Duration::hours(2));
        tracking.flush();
        for n in 0..3 {
            tracking.event(&id, TrackEvent::now("deferred", None, format!("try {n}")));
        }
        tracking.outcome(&id, Outcome::Bounced);
        // The record was written before the events came: they are rows, not part of it.
        tracking.flush();
        let raw = tracking.shared.messages.get(id.as_str()).unwrap().unwrap();
        let stored: MessageRecord = serde_json::from_slice(&raw).unwrap();
        assert_eq!(stored.events.len(), 1);
        let got = tracking.get(&id).unwrap();
        let details: Vec<&str> = got.events.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, ["committed", "try 0", "try 1", "try 2"]);
        assert_eq!(got.outcome, Some(Outcome::Bounced));
        assert_eq!(
            tracking.prune_before(Utc::now() - chrono::Duration::hours(1)),
            1
        );
        assert!(tracking.get(&id).is_none());
        assert_eq!(tracking.shared.events.len(), 0);
        assert_eq!(tracking.shared.outcomes.len(), 0);
    }

    #[test]
    fn a_record_written_with_embedded_events_still_reads_with_them() {
        let (_dir, tracking) = tracking();
        let id = QueueId::generate();
        let mut old = record(&id, Utc::now());
        old.events
            .push(TrackEvent::now("received", None, "old style"));
        old.outcome = Some(Outcome::Delivered);
        tracking
            .shared
            .messages
            .insert(id.as_str(), serde_json::to_vec(&old).unwrap())
            .unwrap();
        let got = tracking.get(&id).unwrap();
        assert_eq!(got.events.len(), 1);
        assert_eq!(got.outcome, Some(Outcome::Delivered));
    }

    #[test]
    fn sessions_are_listed_newest_first_and_stored_as_json() {
        let (_dir, tracking) = tracking();
        for n in 0..3u64 {
            tracking.record_session(&session(
                n,
                Utc::now() + chrono::Duration::seconds(n as i64),
            ));
        }
        let ids: Vec<u64> = tracking
            .recent_sessions(2)
            .iter()
            .map(|s| s.session_id)
            .collect();
        assert_eq!(ids, [2, 1]);
        let raw = tracking.shared.sessions.iter().next().unwrap().unwrap().1;
        assert!(serde_json::from_slice::<serde_json::Value>(&raw).is_ok());
    }

    fn session(id: u64, ended: DateTime<Utc>) -> SessionRecord {
        SessionRecord {
            session_id: id,
            started: ended,
            ended,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: None,
            tls: None,
            messages: 1,
            rejected: 0,
            end: "quit".into(),
        }
    }

    #[test]
    fn many_sessions_share_a_row_and_read_back_newest_first_across_rows_and_old_rows() {
        let (_dir, tracking) = tracking();
        let base = Utc::now() - chrono::Duration::hours(2);
        // A row of the old format: one session, keyed by end time + session id.
        let old = session(1000, base - chrono::Duration::minutes(1));
        let mut key = time_key(old.ended).to_vec();
        key.extend_from_slice(&old.session_id.to_be_bytes());
        tracking
            .shared
            .sessions
            .insert(key, serde_json::to_vec(&old).unwrap())
            .unwrap();
        // Two writes whose sessions interleave in time, recorded out of order within a write.
        let n = SESSIONS_PER_ROW as u64 + 5;
        for id in (0..n).rev() {
            tracking.record_session(&session(
                id,
                base + chrono::Duration::seconds(2 * id as i64),
            ));
        }
        tracking.flush();
        tracking.record_session(&session(500, base + chrono::Duration::seconds(3)));
        tracking.flush();
        // 1 old row, 2 rows for the first write (32 + 5), 1 for the second.
        assert_eq!(tracking.shared.sessions.len(), 4);

        let all = tracking.recent_sessions(1000);
        assert_eq!(all.len() as u64, n + 2);
        assert!(all.windows(2).all(|w| w[0].ended >= w[1].ended));
        assert_eq!(all.last().unwrap().session_id, 1000);
        let newest: Vec<u64> = tracking
            .recent_sessions(3)
            .iter()
            .map(|s| s.session_id)
            .collect();
        assert_eq!(newest, [n - 1, n - 2, n - 3]);

        // Pruning goes by row: the old row, the second write's row (newest at 3 s) and the
        // first write's first row (newest at 62 s) are before 70 s; the last row (64 to 72 s)
        // stays whole.
        let pruned = tracking.prune_before(base + chrono::Duration::seconds(70));
        assert_eq!(pruned, 1 + 1 + SESSIONS_PER_ROW);
        assert_eq!(tracking.recent_sessions(1000).len(), 5);
    }

    #[test]
    fn events_for_an_unknown_message_create_a_searchable_record() {
        let (_dir, tracking) = tracking();
        let id = QueueId::generate();
        tracking.event(&id, TrackEvent::now("recovered", None, "rebuilt"));
        assert_eq!(tracking.get(&id).unwrap().events.len(), 1);
        assert_eq!(tracking.recent(1)[0].queue_id, id);
    }

    #[test]
    fn a_message_done_within_the_buffer_time_is_one_record_with_its_events_and_outcome() {
        let (_dir, tracking) = tracking();
        let (id, _) = received(&tracking, Utc::now());
        tracking.event(&id, TrackEvent::now("scanned", None, "clean"));
        tracking.event(
            &id,
            TrackEvent::now("delivered", Some("b@example.com"), "250 ok"),
        );
        tracking.outcome(&id, Outcome::Delivered);
        // The background writer takes a message with an outcome at its next turn, unasked.
        let started = Instant::now();
        while tracking.shared.messages.is_empty() {
            assert!(started.elapsed() < Duration::from_secs(10), "never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(tracking.shared.events.len(), 0, "no event rows");
        assert_eq!(tracking.shared.outcomes.len(), 0, "no outcome row");
        let raw = tracking.shared.messages.get(id.as_str()).unwrap().unwrap();
        let stored: MessageRecord = serde_json::from_slice(&raw).unwrap();
        let kinds: Vec<&str> = stored.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["received", "scanned", "delivered"]);
        assert_eq!(stored.outcome, Some(Outcome::Delivered));
        assert_eq!(tracking.get(&id).unwrap(), stored);
        assert_eq!(tracking.recent(10).len(), 1);
    }

    #[test]
    fn what_is_buffered_is_written_when_the_log_closes() {
        let dir = tempfile::tempdir().unwrap();
        let id = QueueId::generate();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let tracking = Tracking::open(&db).unwrap();
            tracking.record_message(&record(&id, Utc::now()));
            tracking.event(&id, TrackEvent::now("deferred", None, "451 later"));
            tracking.close();
            db.flush().unwrap();
        }
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tracking = Tracking::open(&db).unwrap();
        let got = tracking.get(&id).expect("written at close");
        assert_eq!(got.events.len(), 1);
        assert_eq!(got.sender, "a@example.org");
    }
}

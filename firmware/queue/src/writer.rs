//! The spool writer: one thread that makes every change to the spool durable, in groups.
//!
//! Every commit, removal and move of a spool file must reach the disk (file data, the new name,
//! the directory) before it counts, and each of those syncs is a disk round trip. Doing them per
//! message from the async tasks cost a hand-off to the blocking pool per step and a journal
//! commit per file. Instead every change is a [`Job`] sent to this one thread: while it works on
//! a round, new jobs wait in its channel, and the next round takes all of them: files written,
//! their data synced (the first sync commits the journal for all of them), renamed, each
//! directory concerned synced once, the state database flushed once if anyone asked, and only
//! then is every job of the round answered. Under load one round answers dozens of messages.
//!
//! A job carries an optional continuation that runs on this thread once the job is durable (for
//! example recording the queue entry), so the step after the sync happens even if the task that
//! asked has gone away meanwhile (a client that hung up during the commit).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::QueueError;
use crate::id::QueueId;
use crate::log::{self, LogWriter};
use crate::spool::{Layout, SpoolDir};

/// How many jobs one round may take; bounds the latency of the first job of a round.
const MAX_ROUND: usize = 1024;
/// The longest a log record nobody waits for stays unsynced when no other work comes, and the
/// longest a job handed over with [`SpoolWriter::send`] waits for a round.
const LAZY_SYNC: std::time::Duration = std::time::Duration::from_millis(50);

/// How long an attempt record waits for a commit's sync to share: handed over without a wake-up
/// ([`SpoolWriter::submit_riding`]), or appended in a round without a commit. An attempt-only
/// round would otherwise cost a wake-up and a sync of its own.
const ATTEMPT_HOLD: std::time::Duration = std::time::Duration::from_millis(1);

/// What runs on the writer thread once a job is durable; its error becomes the job's answer.
pub(crate) type Continuation = Box<dyn FnOnce() -> Result<(), QueueError> + Send>;

/// The message bytes of a commit.
pub(crate) enum CommitBody {
    /// The whole spool file content in memory (header, then message); the writer creates
    /// `tmp/<id>`, writes it and syncs it.
    Memory { header: Vec<u8>, message: Bytes },
    /// Already complete in `tmp/<id>` with its data synced (large messages spill to disk while
    /// they arrive, and their session syncs them before asking for the commit).
    Spilled,
}

/// One change to the spool.
pub(crate) enum Job {
    /// Makes `tmp/<id>` durable as `active/<id>`.
    Commit { id: QueueId, body: CommitBody },
    /// Removes `<dir>/<id>` (already gone counts as done).
    Remove { dir: SpoolDir, id: QueueId },
    /// Renames `<from>/<id>` to `<to>/<id>`; both directories are synced.
    Move {
        id: QueueId,
        from: SpoolDir,
        to: SpoolDir,
    },
    /// Records in the message log that a delivery attempt of a logged message starts (nothing
    /// for a message with a spool file: its entry in the state database says so).
    Attempt { id: QueueId },
    /// Records in the message log that the scan stage has decided about a logged message. Not
    /// waited for: if the record is lost in a crash the message is scanned again.
    MarkScanned { id: QueueId },
    /// Gives a message that lives in the message log a spool file of its own in `active/`
    /// (it is staying longer than one attempt); nothing for a message that has one already.
    Persist { id: QueueId },
    /// Flushes the state database.
    FlushState,
    /// Syncs the message log now: wakes the writer for records handed over without a wake-up
    /// that someone waits for ([`SpoolWriter::submit_riding`]).
    SyncLog,
}

struct Request {
    job: Job,
    then: Option<Continuation>,
    done: oneshot::Sender<Result<(), QueueError>>,
}

/// The handle through which the queue hands changes to the writer thread.
pub(crate) struct SpoolWriter {
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    /// Jobs nobody waits for, taken by the next round without waking the writer for them.
    unasked: Arc<Mutex<Vec<Request>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Directory fsyncs performed (for tests and metrics).
    dir_fsyncs: Arc<AtomicU64>,
}

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter").finish_non_exhaustive()
    }
}

impl SpoolWriter {
    /// Starts the writer thread, named `name`. With `fsync` false (benchmarks only) nothing is
    /// synced.
    pub(crate) fn start(
        name: &str,
        layout: &Layout,
        db: sled::Db,
        fsync: bool,
        log: Option<LogWriter>,
    ) -> Result<SpoolWriter, QueueError> {
        let dirs = DirHandles::open(layout)?;
        let dir_fsyncs = Arc::new(AtomicU64::new(0));
        let (requests, rx) = mpsc::channel();
        let unasked = Arc::new(Mutex::new(Vec::new()));
        let round = Round {
            layout: layout.clone(),
            dirs,
            db,
            fsync,
            dir_fsyncs: dir_fsyncs.clone(),
            log,
            unsynced: false,
            buf: Vec::new(),
            unasked: unasked.clone(),
            held: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || round.run(rx))
            .map_err(|e| {
                QueueError::io(
                    "start the spool writer for",
                    &layout.dir(SpoolDir::Active),
                    e,
                )
            })?;
        Ok(SpoolWriter {
            requests: Some(requests),
            unasked,
            thread: Some(thread),
            dir_fsyncs,
        })
    }

    /// Hands `job` to the writer and waits until it is durable and `then` has run. Dropping the
    /// returned future does not stop the job.
    pub(crate) async fn submit(
        &self,
        job: Job,
        then: Option<Continuation>,
    ) -> Result<(), QueueError> {
        let (done, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or(QueueError::ShuttingDown)?
            .send(Request { job, then, done })
            .map_err(|_| QueueError::ShuttingDown)?;
        answer.await.unwrap_or(Err(QueueError::ShuttingDown))
    }

    /// Hands `job` to the writer without waking it, to ride along with the next round (under
    /// load a commit comes within a fraction of a millisecond), and waits until it is durable.
    /// If no round takes it within [`ATTEMPT_HOLD`], wakes the writer for it. Dropping the
    /// returned future does not stop the job.
    pub(crate) async fn submit_riding(&self, job: Job) -> Result<(), QueueError> {
        let requests = self.requests.as_ref().ok_or(QueueError::ShuttingDown)?;
        let (done, mut answer) = oneshot::channel();
        lock_unasked(&self.unasked).push(Request {
            job,
            then: None,
            done,
        });
        if let Ok(answered) = tokio::time::timeout(ATTEMPT_HOLD, &mut answer).await {
            return answered.unwrap_or(Err(QueueError::ShuttingDown));
        }
        // No round came along: wake the writer for one (a writer that is gone cannot answer).
        requests
            .send(Request {
                job: Job::SyncLog,
                then: None,
                done: oneshot::channel().0,
            })
            .map_err(|_| QueueError::ShuttingDown)?;
        answer.await.unwrap_or(Err(QueueError::ShuttingDown))
    }

    /// Hands `job` to the writer without waiting for it and without waking it: the next round
    /// takes it, at the latest after [`LAZY_SYNC`]. For records whose loss in a crash costs a
    /// repeated step, never mail (scanned and done records of logged messages); their outcome
    /// is only logged.
    pub(crate) fn send(&self, job: Job) {
        let (done, _) = oneshot::channel();
        lock_unasked(&self.unasked).push(Request {
            job,
            then: None,
            done,
        });
    }

    /// How many directory fsyncs the writer has performed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn dir_fsyncs(&self) -> u64 {
        self.dir_fsyncs.load(Ordering::Relaxed)
    }
}

impl Drop for SpoolWriter {
    /// Lets the writer finish the jobs it has and waits for it, so that the state database it
    /// holds is closed when the queue is (a reopen in the same process finds it unlocked).
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// Open handles of the directories the writer syncs, kept for the life of the queue.
struct DirHandles {
    active: File,
    hold: File,
    corrupt: File,
}

impl DirHandles {
    fn open(layout: &Layout) -> Result<DirHandles, QueueError> {
        let open = |dir: SpoolDir| -> Result<File, QueueError> {
            let path = layout.dir(dir);
            File::open(&path).map_err(|e| QueueError::io("open directory", &path, e))
        };
        Ok(DirHandles {
            active: open(SpoolDir::Active)?,
            hold: open(SpoolDir::Hold)?,
            corrupt: open(SpoolDir::Corrupt)?,
        })
    }

    fn get(&self, dir: SpoolDir) -> Option<&File> {
        match dir {
            SpoolDir::Active => Some(&self.active),
            SpoolDir::Hold => Some(&self.hold),
            SpoolDir::Corrupt => Some(&self.corrupt),
            // Nothing durable lives in tmp/, so it is never synced.
            SpoolDir::Tmp => None,
        }
    }
}

/// The writer thread's state.
struct Round {
    layout: Layout,
    dirs: DirHandles,
    db: sled::Db,
    fsync: bool,
    dir_fsyncs: Arc<AtomicU64>,
    /// The message log (the spool writer's; the state flusher has none).
    log: Option<LogWriter>,
    /// The log has records appended since its last sync.
    unsynced: bool,
    /// The records of a round, kept between rounds so that its memory is reused.
    buf: Vec<u8>,
    /// Jobs handed over with [`SpoolWriter::send`].
    unasked: Arc<Mutex<Vec<Request>>>,
    /// Answers to attempt records appended but not synced yet, given after the next sync.
    held: Vec<oneshot::Sender<Result<(), QueueError>>>,
}

fn lock_unasked(unasked: &Mutex<Vec<Request>>) -> std::sync::MutexGuard<'_, Vec<Request>> {
    unasked.lock().unwrap_or_else(|e| e.into_inner())
}

/// A round's record buffer grown beyond this is given back after the round.
const KEEP_BUF: usize = 8 * 1024 * 1024;

/// One request during a round: its job's outcome so far.
struct Pending {
    request: Request,
    result: Result<(), QueueError>,
    /// The open file of a commit (or a move out of the log) written this round, to be synced.
    file: Option<File>,
    via: Via,
}

/// How a job is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// With spool files (or, for `FlushState`, no file at all).
    File,
    /// A message record in the log; `at` is the payload's offset in the round's buffer.
    LogCommit { at: usize, len: u32 },
    /// A done record in the log.
    LogDone,
    /// An attempt record in the log: no change to the index.
    LogAttempt,
    /// A scanned record in the log: nobody waits for it to be synced.
    LogLazy,
    /// A logged message gets a spool file in `to`.
    Migrate { to: SpoolDir },
    /// Nothing to do.
    Nothing,
}

impl Pending {
    /// The directories this job changes (and so must sync).
    fn dirs(&self) -> Vec<SpoolDir> {
        match self.via {
            Via::File => dirs_of(&self.request.job),
            Via::Migrate { to } => vec![to],
            Via::LogCommit { .. }
            | Via::LogDone
            | Via::LogAttempt
            | Via::LogLazy
            | Via::Nothing => Vec::new(),
        }
    }
}

/// The message a job is about (never asked of `FlushState` or `SyncLog`, which concern no message).
fn job_id(job: &Job) -> &QueueId {
    match job {
        Job::Commit { id, .. }
        | Job::Remove { id, .. }
        | Job::Move { id, .. }
        | Job::Attempt { id }
        | Job::MarkScanned { id }
        | Job::Persist { id } => id,
        Job::FlushState | Job::SyncLog => unreachable!("this job concerns no message"),
    }
}

impl Round {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            // Never asleep for longer than LAZY_SYNC: records nobody waits for (done, scanned)
            // are synced with the next round that needs a sync or after LAZY_SYNC, and jobs
            // handed over without a wake-up are taken within LAZY_SYNC.
            let wait = if self.held.is_empty() {
                LAZY_SYNC
            } else {
                ATTEMPT_HOLD
            };
            let mut round = match rx.recv_timeout(wait) {
                Ok(request) => vec![request],
                Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            while round.len() < MAX_ROUND {
                match rx.try_recv() {
                    Ok(request) => round.push(request),
                    Err(_) => break,
                }
            }
            round.append(&mut lock_unasked(&self.unasked));
            if round.is_empty() {
                if self.unsynced {
                    self.sync_lazy();
                }
                self.answer_held();
                continue;
            }
            self.process(round);
        }
        let last = std::mem::take(&mut *lock_unasked(&self.unasked));
        if !last.is_empty() {
            self.process(last);
        }
        self.sync_lazy();
        self.answer_held();
        tracing::debug!("spool writer stopped");
    }

    /// Answers the attempts whose records a sync since covered (or that failed: an attempt
    /// record only counts duplicates, so its failure never stops delivery).
    fn answer_held(&mut self) {
        for done in self.held.drain(..) {
            let _ = done.send(Ok(()));
        }
    }

    /// Syncs log records appended without a sync.
    fn sync_lazy(&mut self) {
        self.unsynced = false;
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.sync()
        {
            tracing::error!(segment = %e.path.display(), error = %e.error, "cannot sync the message log");
        }
    }

    fn process(&mut self, requests: Vec<Request>) {
        let count = requests.len();
        let mut round: Vec<Pending> = requests
            .into_iter()
            .map(|request| Pending {
                request,
                result: Ok(()),
                file: None,
                via: Via::File,
            })
            .collect();
        // 1. Records of in-memory commits and ends of logged messages go into one buffer for the
        //    message log; other commits and messages moving out of the log are written to tmp/
        //    with their writeback started, so the data of the whole round goes to the disk together.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for p in &mut round {
            match &p.request.job {
                Job::Commit {
                    id,
                    body: CommitBody::Memory { header, message },
                } => {
                    let len = header.len() + message.len();
                    if self.log.is_some() && len <= log::MAX_PAYLOAD {
                        let at = log::encode_message(&mut buf, id, &[header, message]);
                        p.via = Via::LogCommit {
                            at,
                            len: len as u32,
                        };
                    } else {
                        match self.write_tmp(id, &[header, message]) {
                            Ok(file) => p.file = Some(file),
                            Err(e) => p.result = Err(e),
                        }
                    }
                }
                Job::Remove {
                    dir: SpoolDir::Active,
                    id,
                } if self.in_log(id) => {
                    log::encode_done(&mut buf, id);
                    p.via = Via::LogDone;
                }
                Job::Move {
                    id,
                    from: SpoolDir::Active,
                    to,
                } if self.in_log(id) => {
                    let to = *to;
                    p.via = Via::Migrate { to };
                    match self.migrate_out(id) {
                        Ok(file) => p.file = Some(file),
                        Err(e) => p.result = Err(e),
                    }
                }
                Job::Attempt { id } => {
                    if self.in_log(id) {
                        log::encode_attempt(&mut buf, id);
                        p.via = Via::LogAttempt;
                    } else {
                        p.via = Via::Nothing;
                    }
                }
                Job::MarkScanned { id } => {
                    if self.in_log(id) {
                        log::encode_scanned(&mut buf, id);
                        p.via = Via::LogLazy;
                    } else {
                        p.via = Via::Nothing;
                    }
                }
                Job::Persist { id } => {
                    if self.in_log(id) {
                        p.via = Via::Migrate {
                            to: SpoolDir::Active,
                        };
                        match self.migrate_out(id) {
                            Ok(file) => p.file = Some(file),
                            Err(e) => p.result = Err(e),
                        }
                    } else {
                        p.via = Via::Nothing;
                    }
                }
                _ => {}
            }
        }
        let mut log_failure: Option<(io::ErrorKind, String, std::path::PathBuf)> = None;
        let mut appended_at = None;
        if !buf.is_empty()
            && let Some(log) = self.log.as_mut()
        {
            match log.append(&buf) {
                Ok(at) => appended_at = Some(at),
                Err(e) => {
                    tracing::error!(segment = %e.path.display(), error = %e.error, "cannot append to the message log");
                    log_failure = Some((e.error.kind(), e.error.to_string(), e.path));
                }
            }
        }
        // 2. Sync the data of every file written and of the log (all before any rename: a
        //    rename in between would start a new journal transaction and cost the next sync a
        //    commit of its own).
        if self.fsync {
            for p in &mut round {
                if let (Some(file), Ok(())) = (&p.file, &p.result) {
                    let id = job_id(&p.request.job);
                    p.result = file.sync_data().map_err(|e| {
                        QueueError::io("sync spool file", &self.layout.file(SpoolDir::Tmp, id), e)
                    });
                }
            }
            // Commits and attempts wait for the sync; done and scanned records do not (a done
            // record lost in a crash brings back a message whose attempt record says it may
            // have been delivered: it is delivered again and counted as a possible duplicate).
            // An attempt record in a round without a commit waits (at most ATTEMPT_HOLD) for
            // the sync of a round that has one: under load that saves a sync per attempt.
            let needs_sync = round.iter().any(|p| {
                matches!(p.via, Via::LogCommit { .. }) || matches!(p.request.job, Job::SyncLog)
            });
            if appended_at.is_some() {
                self.unsynced = true;
            }
            if needs_sync
                && self.unsynced
                && let Some(log) = self.log.as_mut()
            {
                self.unsynced = false;
                if let Err(e) = log.sync() {
                    tracing::error!(segment = %e.path.display(), error = %e.error, "cannot sync the message log");
                    log_failure = Some((e.error.kind(), e.error.to_string(), e.path));
                }
            }
            // Attempts held from earlier rounds are covered by this sync.
            if !self.unsynced {
                self.answer_held();
            }
        }
        if let Some((kind, message, path)) = &log_failure {
            for p in &mut round {
                match p.via {
                    // Not acknowledged: the client is told to retry (452 on a full disk).
                    Via::LogCommit { .. } => {
                        p.result = Err(QueueError::io(
                            "write the message log",
                            path,
                            io::Error::new(*kind, message.clone()),
                        ));
                    }
                    // Done, attempt and scanned records only spare or count duplicates after a
                    // crash; no mail depends on them. Failing them on a full disk would stop
                    // delivery, and with it the only thing that frees the disk, so the queue
                    // goes on without them: the message may be delivered again after a
                    // restart, and its attempt then goes uncounted.
                    Via::LogDone | Via::LogAttempt | Via::LogLazy => {
                        tracing::warn!(queue_id = %job_id(&p.request.job), segment = %path.display(), error = %message, "log record not written; going on without it (the message may be delivered again after a restart)");
                    }
                    _ => {}
                }
            }
        }
        // 3. Give each file its name in active/ (or, moving out of the log, its directory).
        for p in &mut round {
            let target = match (&p.request.job, p.via) {
                (Job::Commit { .. }, Via::File) => SpoolDir::Active,
                (_, Via::Migrate { to }) => to,
                _ => continue,
            };
            let id = job_id(&p.request.job);
            drop(p.file.take());
            let tmp = self.layout.file(SpoolDir::Tmp, id);
            if p.result.is_ok() {
                let dst = self.layout.file(target, id);
                p.result = std::fs::rename(&tmp, &dst)
                    .map_err(|e| QueueError::io("move spool file to", &dst, e));
            }
            if p.result.is_err()
                && let Err(e) = std::fs::remove_file(&tmp)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(queue_id = %id, error = %e, "cannot remove the spool file of a failed commit");
            }
        }
        // 4. Removals and moves of spool files.
        for p in &mut round {
            if p.via != Via::File {
                continue;
            }
            p.result = match &p.request.job {
                Job::Remove { dir, id } => {
                    let path = self.layout.file(*dir, id);
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            Err(QueueError::io("remove spool file", &path, e))
                        }
                        _ => Ok(()),
                    }
                }
                Job::Move { id, from, to } => {
                    let dst = self.layout.file(*to, id);
                    std::fs::rename(self.layout.file(*from, id), &dst)
                        .map_err(|e| QueueError::io("move spool file to", &dst, e))
                }
                _ => std::mem::replace(&mut p.result, Ok(())),
            };
        }
        // 5. Each directory that changed, synced once for the whole round.
        let mut synced: Vec<(SpoolDir, Result<(), Arc<io::Error>>)> = Vec::new();
        for p in &round {
            for dir in p.dirs() {
                if !synced.iter().any(|(d, _)| *d == dir) {
                    synced.push((dir, self.sync_dir(dir)));
                }
            }
        }
        for p in &mut round {
            if p.result.is_err() {
                continue;
            }
            for dir in p.dirs() {
                if let Some((_, Err(e))) = synced.iter().find(|(d, _)| *d == dir) {
                    p.result = Err(QueueError::io(
                        "sync directory",
                        &self.layout.dir(dir),
                        io::Error::new(e.kind(), e.to_string()),
                    ));
                }
            }
        }
        // 5b. The log index follows what is now durable. A message that moved out of the log gets
        //     a done record, written now (its file is durable) and synced with a later round: if
        //     that record is lost, start-up finds the file and the record both, and the file wins.
        if let Some(log) = self.log.as_mut() {
            let mut done = Vec::new();
            for p in &round {
                if p.result.is_err()
                    || matches!(
                        p.via,
                        Via::File | Via::Nothing | Via::LogAttempt | Via::LogLazy
                    )
                {
                    continue;
                }
                let id = job_id(&p.request.job);
                match p.via {
                    Via::LogCommit { at, len } => {
                        let (segment, base) = appended_at.expect("a logged commit was appended");
                        log.index().insert(
                            id.clone(),
                            log::LogPos {
                                segment,
                                payload: base + at as u64,
                                len,
                            },
                        );
                    }
                    Via::LogDone => {
                        log.index().remove(id);
                    }
                    Via::Migrate { .. } => {
                        log::encode_done(&mut done, id);
                        log.index().remove(id);
                    }
                    Via::File | Via::Nothing | Via::LogAttempt | Via::LogLazy => {}
                }
            }
            if !done.is_empty()
                && let Err(e) = log.append(&done)
            {
                tracing::warn!(error = %e.error, "cannot record in the message log that messages moved to spool files (harmless: the files win at start-up)");
            }
            if !done.is_empty() {
                self.unsynced = true;
            }
        }
        // 6. One flush of the state database for everyone who asked.
        if round
            .iter()
            .any(|p| matches!(p.request.job, Job::FlushState))
        {
            let flushed = self
                .db
                .flush()
                .map_err(|e| QueueError::State(e.to_string()));
            for p in &mut round {
                if matches!(p.request.job, Job::FlushState) {
                    p.result = flushed
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| QueueError::State(e.to_string()));
                }
            }
        }
        // 7. Log segments nothing lives in any more (before the answers, so an asker sees them gone).
        let segments_deleted = self.log.as_mut().map_or(0, |log| log.collect_garbage());
        // 8. Continuations of the jobs that succeeded, then every answer.
        for mut p in round {
            if p.result.is_ok()
                && let Some(then) = p.request.then.take()
            {
                p.result = then();
                if p.result.is_err()
                    && let Via::LogCommit { .. } = p.via
                {
                    // The commit is undone (the client is told to retry): end the record now.
                    self.end_logged(job_id(&p.request.job));
                }
            }
            // An attempt record not synced yet is answered after the next sync (this round's
            // attempts when no commit came with them).
            if p.via == Via::LogAttempt && p.result.is_ok() && self.unsynced {
                self.held.push(p.request.done);
                continue;
            }
            // The asker may be gone (its client hung up); the job is done all the same.
            let _ = p.request.done.send(p.result);
        }
        tracing::trace!(
            jobs = count,
            dir_syncs = synced.len(),
            log_bytes = buf.len(),
            segments_deleted,
            "spool writer round"
        );
        if buf.capacity() <= KEEP_BUF {
            self.buf = buf;
        }
    }

    /// Ends a logged message at once (a done record, appended and synced).
    fn end_logged(&mut self, id: &QueueId) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let mut done = Vec::new();
        log::encode_done(&mut done, id);
        if let Err(e) = log.append(&done).and_then(|_| log.sync()) {
            tracing::error!(queue_id = %id, error = %e.error, "cannot end an undone commit in the message log; it may be delivered after a restart");
        }
        log.index().remove(id);
    }

    fn in_log(&self, id: &QueueId) -> bool {
        self.log.as_ref().is_some_and(|l| l.index().contains(id))
    }

    /// Starts moving a logged message to a spool file of its own: writes `tmp/<id>`.
    fn migrate_out(&self, id: &QueueId) -> Result<File, QueueError> {
        let log = self.log.as_ref().expect("only logged messages migrate");
        let pos = log
            .index()
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.clone()))?;
        let path = log::segment_path(log.dir(), pos.segment);
        let payload = log::read_payload(log.dir(), pos)
            .map_err(|e| QueueError::io("read the message log", &path, e))?;
        self.write_tmp(id, &[&payload])
    }

    fn write_tmp(&self, id: &QueueId, parts: &[&[u8]]) -> Result<File, QueueError> {
        let path = self.layout.file(SpoolDir::Tmp, id);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| QueueError::io("create spool file", &path, e))?;
        let written = parts
            .iter()
            .try_for_each(|part| file.write_all(part))
            .map_err(|e| QueueError::io("write spool file", &path, e));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        if self.fsync {
            // Start the writeback now; the sync in step 2 then mostly waits for I/O already under way.
            // SAFETY: a plain syscall on a file descriptor we own; no memory is passed.
            unsafe {
                libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        Ok(file)
    }

    fn sync_dir(&self, dir: SpoolDir) -> Result<(), Arc<io::Error>> {
        if !self.fsync {
            return Ok(());
        }
        let Some(handle) = self.dirs.get(dir) else {
            return Ok(());
        };
        self.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
        handle.sync_all().map_err(|e| {
            tracing::error!(dir = %self.layout.dir(dir).display(), error = %e, "queue directory fsync failed");
            Arc::new(e)
        })
    }
}

/// The directories a job changes (and so must sync).
fn dirs_of(job: &Job) -> Vec<SpoolDir> {
    match job {
        Job::Commit { .. } => vec![SpoolDir::Active],
        Job::Remove { dir, .. } => vec![*dir],
        Job::Move { from, to, .. } => vec![*to, *from],
        Job::Attempt { .. }
        | Job::MarkScanned { .. }
        | Job::Persist { .. }
        | Job::FlushState
        | Job::SyncLog => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &std::path::Path) -> (Layout, SpoolWriter) {
        let layout = Layout::new(dir);
        layout.create().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let writer = SpoolWriter::start("spool-writer", &layout, db, true, None).unwrap();
        (layout, writer)
    }

    fn memory(text: &str) -> CommitBody {
        CommitBody::Memory {
            header: b"H\n".to_vec(),
            message: Bytes::from(text.to_owned()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_queued_while_a_round_runs_share_its_directory_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, writer) = writer(dir.path());
        let writer = Arc::new(writer);
        let ids: Vec<QueueId> = (0..200).map(|_| QueueId::generate()).collect();
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (writer, id) = (writer.clone(), id.clone());
                tokio::spawn(async move {
                    let job = Job::Commit {
                        id: id.clone(),
                        body: memory(id.as_str()),
                    };
                    writer.submit(job, None).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        for id in &ids {
            let bytes = std::fs::read(layout.file(SpoolDir::Active, id)).unwrap();
            assert_eq!(bytes, format!("H\n{id}").as_bytes());
            assert!(!layout.file(SpoolDir::Tmp, id).exists());
        }
        assert!(
            writer.dir_fsyncs() * 4 <= 200,
            "{} directory fsyncs",
            writer.dir_fsyncs()
        );
    }

    #[tokio::test]
    async fn a_continuation_runs_after_the_job_and_its_error_is_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, writer) = writer(dir.path());
        let id = QueueId::generate();
        let seen = Arc::new(std::sync::Mutex::new(false));
        let flag = seen.clone();
        let active = layout.file(SpoolDir::Active, &id);
        let then: Continuation = Box::new(move || {
            *flag.lock().unwrap() = active.exists();
            Err(QueueError::State("recording failed".into()))
        });
        let result = writer
            .submit(
                Job::Commit {
                    id: id.clone(),
                    body: memory("x"),
                },
                Some(then),
            )
            .await;
        assert!(matches!(result, Err(QueueError::State(_))));
        assert!(
            *seen.lock().unwrap(),
            "the continuation ran before the file was in active/"
        );
    }

    #[tokio::test]
    async fn moving_and_removing_files_syncs_the_directories_concerned() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, writer) = writer(dir.path());
        let id = QueueId::generate();
        writer
            .submit(
                Job::Commit {
                    id: id.clone(),
                    body: memory("x"),
                },
                None,
            )
            .await
            .unwrap();
        let before = writer.dir_fsyncs();
        writer
            .submit(
                Job::Move {
                    id: id.clone(),
                    from: SpoolDir::Active,
                    to: SpoolDir::Hold,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(writer.dir_fsyncs() - before, 2);
        assert!(layout.file(SpoolDir::Hold, &id).exists());
        writer
            .submit(
                Job::Remove {
                    dir: SpoolDir::Hold,
                    id: id.clone(),
                },
                None,
            )
            .await
            .unwrap();
        assert!(!layout.file(SpoolDir::Hold, &id).exists());
        // Removing what is already gone is not an error (a crash may have come in between).
        writer
            .submit(
                Job::Remove {
                    dir: SpoolDir::Hold,
                    id,
                },
                None,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_commit_that_cannot_create_its_file_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, writer) = writer(dir.path());
        let id = QueueId::generate();
        std::fs::write(layout.file(SpoolDir::Tmp, &id), b"someone else's").unwrap();
        let result = writer
            .submit(
                Job::Commit {
                    id: id.clone(),
                    body: memory("x"),
                },
                None,
            )
            .await;
        assert!(matches!(result, Err(QueueError::Io { .. })), "{result:?}");
        assert!(!layout.file(SpoolDir::Active, &id).exists());
    }
}

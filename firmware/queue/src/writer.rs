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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::QueueError;
use crate::id::QueueId;
use crate::spool::{Layout, SpoolDir};

/// How many jobs one round may take; bounds the latency of the first job of a round.
const MAX_ROUND: usize = 1024;

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
    /// Flushes the state database.
    FlushState,
}

struct Request {
    job: Job,
    then: Option<Continuation>,
    done: oneshot::Sender<Result<(), QueueError>>,
}

/// The handle through which the queue hands changes to the writer thread.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Directory fsyncs performed (for tests and metrics).
    dir_fsyncs: Arc<AtomicU64>,
}

impl SpoolWriter {
    /// Starts the writer thread, named `name`. With `fsync` false (benchmarks only) nothing is
    /// synced.
    pub(crate) fn start(
        name: &str,
        layout: &Layout,
        db: sled::Db,
        fsync: bool,
    ) -> Result<SpoolWriter, QueueError> {
        let dirs = DirHandles::open(layout)?;
        let dir_fsyncs = Arc::new(AtomicU64::new(0));
        let (requests, rx) = mpsc::channel();
        let round = Round {
            layout: layout.clone(),
            dirs,
            db,
            fsync,
            dir_fsyncs: dir_fsyncs.clone(),
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
}

/// One request during a round: its job's outcome so far.
struct Pending {
    request: Request,
    result: Result<(), QueueError>,
    /// The open file of a commit written this round, to be synced.
    file: Option<File>,
}

impl Round {
    fn run(self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut round = vec![first];
            while round.len() < MAX_ROUND {
                match rx.try_recv() {
                    Ok(request) => round.push(request),
                    Err(_) => break,
                }
            }
            self.process(round);
        }
        tracing::debug!("spool writer stopped");
    }

    fn process(&self, requests: Vec<Request>) {
        let count = requests.len();
        let mut round: Vec<Pending> = requests
            .into_iter()
            .map(|request| Pending {
                request,
                result: Ok(()),
                file: None,
            })
            .collect();
        // 1. Write the files of in-memory commits and start their writeback, so the data of the
        //    whole round goes to the disk together and the first sync commits the journal for all.
        for p in &mut round {
            if let Job::Commit {
                id,
                body: CommitBody::Memory { header, message },
            } = &p.request.job
            {
                match self.write_tmp(id, header, message) {
                    Ok(file) => p.file = Some(file),
                    Err(e) => p.result = Err(e),
                }
            }
        }
        // 2. Sync the data of every file written (all before any rename: a rename in between
        //    would start a new journal transaction and cost the next sync a commit of its own).
        if self.fsync {
            for p in &mut round {
                if let (Job::Commit { id, .. }, Some(file), Ok(())) =
                    (&p.request.job, &p.file, &p.result)
                {
                    p.result = file.sync_data().map_err(|e| {
                        QueueError::io("sync spool file", &self.layout.file(SpoolDir::Tmp, id), e)
                    });
                }
            }
        }
        // 3. Give each file its name in active/.
        for p in &mut round {
            let Job::Commit { id, .. } = &p.request.job else {
                continue;
            };
            drop(p.file.take());
            let tmp = self.layout.file(SpoolDir::Tmp, id);
            if p.result.is_ok() {
                let active = self.layout.file(SpoolDir::Active, id);
                p.result = std::fs::rename(&tmp, &active)
                    .map_err(|e| QueueError::io("move spool file to", &active, e));
            }
            if p.result.is_err()
                && let Err(e) = std::fs::remove_file(&tmp)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(queue_id = %id, error = %e, "cannot remove the spool file of a failed commit");
            }
        }
        // 4. Removals and moves.
        for p in &mut round {
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
            for dir in dirs_of(&p.request.job) {
                if !synced.iter().any(|(d, _)| *d == dir) {
                    synced.push((dir, self.sync_dir(dir)));
                }
            }
        }
        for p in &mut round {
            if p.result.is_err() {
                continue;
            }
            for dir in dirs_of(&p.request.job) {
                if let Some((_, Err(e))) = synced.iter().find(|(d, _)| *d == dir) {
                    p.result = Err(QueueError::io(
                        "sync directory",
                        &self.layout.dir(dir),
                        io::Error::new(e.kind(), e.to_string()),
                    ));
                }
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
        // 7. Continuations of the jobs that succeeded, then every answer.
        for mut p in round {
            if p.result.is_ok()
                && let Some(then) = p.request.then.take()
            {
                p.result = then();
            }
            // The asker may be gone (its client hung up); the job is done all the same.
            let _ = p.request.done.send(p.result);
        }
        tracing::trace!(jobs = count, dir_syncs = synced.len(), "spool writer round");
    }

    fn write_tmp(&self, id: &QueueId, header: &[u8], message: &[u8]) -> Result<File, QueueError> {
        let path = self.layout.file(SpoolDir::Tmp, id);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| QueueError::io("create spool file", &path, e))?;
        let written = file
            .write_all(header)
            .and_then(|()| file.write_all(message))
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
        Job::FlushState => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &std::path::Path) -> (Layout, SpoolWriter) {
        let layout = Layout::new(dir);
        layout.create().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let writer = SpoolWriter::start("spool-writer", &layout, db, true).unwrap();
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

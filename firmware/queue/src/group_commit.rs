//! Group commit of directory fsyncs.
//!
//! Every commit (and every removal or move of a spool file) must fsync its directory before it
//! counts. One fsync makes *all* earlier renames in that directory durable, so a single committer
//! task runs them: while one fsync is running, new requests wait in the channel, and the next
//! fsync answers all of them at once. Under load that turns N fsyncs into a handful.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::error::QueueError;
use crate::spool::{Layout, SpoolDir};

/// How many requests one round may answer; bounds the memory of a round, not its usefulness.
const MAX_BATCH: usize = 4096;

/// The outcome of one directory fsync, shared by every request it answered.
type SyncResult = Result<(), Arc<io::Error>>;

/// One caller waiting for a directory to be durable.
struct SyncRequest {
    dir: SpoolDir,
    done: oneshot::Sender<SyncResult>,
}

/// The handle through which the queue asks for durable directories.
#[derive(Debug)]
pub(crate) struct DirSyncer {
    /// `None` when fsync is off (benchmarks only): every request succeeds at once.
    requests: Option<mpsc::UnboundedSender<SyncRequest>>,
    layout: Layout,
    /// Number of directory fsyncs actually performed (for tests and metrics).
    fsyncs: Arc<AtomicU64>,
}

impl DirSyncer {
    /// Starts the committer task on the current tokio runtime (or none if `fsync` is false).
    pub(crate) fn start(layout: &Layout, fsync: bool) -> Result<DirSyncer, QueueError> {
        let fsyncs = Arc::new(AtomicU64::new(0));
        let requests = if fsync {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| QueueError::NoRuntime)?;
            let dirs = Arc::new(DirHandles::open(layout)?);
            let (tx, rx) = mpsc::unbounded_channel();
            runtime.spawn(run_committer(rx, dirs, fsyncs.clone()));
            Some(tx)
        } else {
            None
        };
        Ok(DirSyncer {
            requests,
            layout: layout.clone(),
            fsyncs,
        })
    }

    /// Returns once `dir` has been fsynced after this call was made.
    pub(crate) async fn sync(&self, dir: SpoolDir) -> Result<(), QueueError> {
        let Some(requests) = &self.requests else {
            return Ok(());
        };
        let (done, answer) = oneshot::channel();
        requests
            .send(SyncRequest { dir, done })
            .map_err(|_| QueueError::ShuttingDown)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(QueueError::io(
                "sync directory",
                &self.layout.dir(dir),
                io::Error::new(error.kind(), error.to_string()),
            )),
            Err(_) => Err(QueueError::ShuttingDown),
        }
    }

    /// Both directories of a move, fsynced in the same round where possible.
    pub(crate) async fn sync_both(&self, a: SpoolDir, b: SpoolDir) -> Result<(), QueueError> {
        let (ra, rb) = tokio::join!(self.sync(a), self.sync(b));
        ra.and(rb)
    }

    /// How many directory fsyncs the committer has performed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

/// Open handles of the directories the committer syncs, kept for the life of the queue.
struct DirHandles {
    active: (PathBuf, File),
    hold: (PathBuf, File),
    corrupt: (PathBuf, File),
}

impl DirHandles {
    fn open(layout: &Layout) -> Result<DirHandles, QueueError> {
        let open = |dir: SpoolDir| -> Result<(PathBuf, File), QueueError> {
            let path = layout.dir(dir);
            let file = File::open(&path).map_err(|e| QueueError::io("open directory", &path, e))?;
            Ok((path, file))
        };
        Ok(DirHandles {
            active: open(SpoolDir::Active)?,
            hold: open(SpoolDir::Hold)?,
            corrupt: open(SpoolDir::Corrupt)?,
        })
    }

    fn get(&self, dir: SpoolDir) -> Option<&(PathBuf, File)> {
        match dir {
            SpoolDir::Active => Some(&self.active),
            SpoolDir::Hold => Some(&self.hold),
            SpoolDir::Corrupt => Some(&self.corrupt),
            // Nothing durable lives in tmp/, so it is never synced.
            SpoolDir::Tmp => None,
        }
    }
}

/// The committer: takes everything queued up, fsyncs each directory concerned once, answers all.
async fn run_committer(
    mut rx: mpsc::UnboundedReceiver<SyncRequest>,
    dirs: Arc<DirHandles>,
    fsyncs: Arc<AtomicU64>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut wanted: Vec<SpoolDir> = batch.iter().map(|r| r.dir).collect();
        wanted.sort_by_key(|d| d.name());
        wanted.dedup();
        let handles = dirs.clone();
        let counter = fsyncs.clone();
        let results = tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .map(|dir| {
                    let result = match handles.get(dir) {
                        Some((path, file)) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                            file.sync_all().map_err(|e| {
                                tracing::error!(dir = %path.display(), error = %e, "queue directory fsync failed");
                                Arc::new(e)
                            })
                        }
                        None => Ok(()),
                    };
                    (dir, result)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let results = match results {
            Ok(results) => results,
            Err(join) => {
                let error = Arc::new(io::Error::other(format!(
                    "directory fsync task failed: {join}"
                )));
                batch.iter().map(|r| (r.dir, Err(error.clone()))).collect()
            }
        };
        tracing::trace!(
            requests = batch.len(),
            fsyncs = results.len(),
            "queue group commit round"
        );
        for request in batch.drain(..) {
            let result = results
                .iter()
                .find(|(dir, _)| *dir == request.dir)
                .map(|(_, r)| r.clone())
                .unwrap_or(Ok(()));
            // The caller may have given up (its task was cancelled); nothing to do then.
            let _ = request.done.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_queued_while_the_committer_is_busy_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let syncer = Arc::new(DirSyncer::start(&layout, true).unwrap());
        // On this single-threaded runtime all 100 requests are queued before the committer runs.
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let syncer = syncer.clone();
                tokio::spawn(async move { syncer.sync(SpoolDir::Active).await })
            })
            .collect();
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert!(
            syncer.fsync_count() <= 2,
            "{} fsyncs for 100 requests",
            syncer.fsync_count()
        );
    }

    #[tokio::test]
    async fn a_move_syncs_both_directories() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let syncer = DirSyncer::start(&layout, true).unwrap();
        syncer
            .sync_both(SpoolDir::Hold, SpoolDir::Active)
            .await
            .unwrap();
        assert_eq!(syncer.fsync_count(), 2);
    }
}

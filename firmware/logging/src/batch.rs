//! A writer that gathers log lines in memory and writes them out from a thread of its own, a batch
//! at a time.
//!
//! Loggers only append a formatted line to a shared buffer under a short lock. The writing
//! thread is woken once when the buffer goes from empty to non-empty, then waits [`INTERVAL`] so
//! that the lines logged meanwhile go out in the same `write`. Under load that is one wake-up and
//! one `write` per interval, not per line: with a channel (tracing-appender's `non_blocking`)
//! every line could wake the thread, and each wake-up cost a context switch on both sides.
//!
//! Nothing is dropped: a logger that finds [`MAX_PENDING`] bytes waiting blocks until the thread
//! has taken them. Lines are written at most [`INTERVAL`] after they were logged, and what is
//! pending when the [`BatchGuard`] is dropped is written before the drop returns.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writing thread gathers lines after the first one of a batch arrived.
pub(crate) const INTERVAL: Duration = Duration::from_millis(10);

/// Bytes waiting to be written beyond which loggers wait for the writing thread.
pub(crate) const MAX_PENDING: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// The guard was dropped: write what is left and stop.
    closing: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// The writing thread waits here for a first line (or for closing).
    arrived: Condvar,
    /// Loggers over [`MAX_PENDING`] wait here for the writing thread to take the lines.
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A logger that panicked while appending leaves at worst a partial line.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` handed to the fmt layer: each line is appended to the shared buffer.
#[derive(Clone)]
pub(crate) struct BatchWriter {
    shared: Arc<Shared>,
}

/// Writes what is pending and stops the writing thread when dropped.
pub(crate) struct BatchGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writing thread, named `name`, writing to `out`.
pub(crate) fn start<W: Write + Send + 'static>(
    name: &str,
    out: W,
) -> io::Result<(BatchWriter, BatchGuard)> {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new().name(name.to_owned()).spawn({
        let shared = shared.clone();
        move || write_batches(&shared, out)
    })?;
    Ok((
        BatchWriter {
            shared: shared.clone(),
        },
        BatchGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.lines.is_empty() && !pending.closing {
            pending = shared
                .arrived
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        if !pending.closing {
            // Let the lines of the next few milliseconds join this one.
            drop(pending);
            std::thread::sleep(INTERVAL);
            pending = shared.lock();
        }
        let closing = pending.closing;
        std::mem::swap(&mut pending.lines, &mut batch);
        drop(pending);
        shared.taken.notify_all();
        if !batch.is_empty() {
            // Nowhere to report a failure to write the log; the lines are lost, not retried.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
        if closing {
            return;
        }
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.arrived.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line being written (the fmt layer writes a whole formatted line in one call).
pub(crate) struct BatchLine<'a> {
    shared: &'a Shared,
}

impl Write for BatchLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.lines.len() >= MAX_PENDING && !pending.closing {
            pending = self
                .shared
                .taken
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(buf);
        drop(pending);
        if was_empty {
            self.shared.arrived.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchLine<'a>;

    fn make_writer(&'a self) -> BatchLine<'a> {
        BatchLine {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = start("test-log", sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        // Like the fmt layer: a whole formatted line in one write.
                        let line = format!("thread {t} line {i}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let mine: Vec<_> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<_> = (0..1000).map(|i| format!("thread {t} line {i}")).collect();
            assert!(
                mine == expected,
                "thread {t}'s lines are not whole and in order"
            );
        }
        let writes = *sink.writes.lock().unwrap();
        assert!(writes < 400, "{writes} writes for 4000 lines");
    }

    #[test]
    fn a_lone_line_is_written_within_the_interval_without_a_drop() {
        let sink = Sink::default();
        let (writer, _guard) = start("test-log", sink.clone()).unwrap();
        writer.make_writer().write_all(b"hello\n").unwrap();
        let started = Instant::now();
        while sink.bytes.lock().unwrap().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the line was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&sink.bytes.lock().unwrap()[..], b"hello\n");
    }

    #[test]
    fn loggers_wait_rather_than_lose_lines_when_the_output_is_slow() {
        struct Slow(Sink);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                self.0.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (writer, guard) = start("test-log", Slow(sink.clone())).unwrap();
        let line = vec![b'x'; 64 * 1024];
        for _ in 0..(3 * MAX_PENDING / line.len()) {
            writer.make_writer().write_all(&line).unwrap();
        }
        drop(guard);
        assert_eq!(sink.bytes.lock().unwrap().len(), 3 * MAX_PENDING);
    }
}

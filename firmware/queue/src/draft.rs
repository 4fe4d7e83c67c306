//! A message being received: the tmp file the SMTP session streams into.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, BufWriter};

use crate::envelope::Envelope;
use crate::id::QueueId;
use crate::spool::HEAD_BYTES;

/// Write buffer of a draft: large enough that a typical message needs few write syscalls.
const WRITE_BUFFER: usize = 64 * 1024;

/// A message being received into `tmp/<id>`. Write the message bytes (CRLF, not dot-stuffed) into
/// it with `AsyncWriteExt`, then hand it to [`crate::Queue::commit`] or [`crate::Queue::discard`].
///
/// A draft dropped without either is removed from `tmp/` on drop (and would be at start-up anyway).
#[derive(Debug)]
pub struct Draft {
    pub(crate) id: QueueId,
    pub(crate) envelope: Envelope,
    pub(crate) tmp_path: PathBuf,
    /// `None` once committed or discarded.
    pub(crate) writer: Option<BufWriter<tokio::fs::File>>,
    /// The first `HEAD_BYTES` of the message, for the Message-ID/Subject parse.
    pub(crate) head: Vec<u8>,
    /// Message bytes written so far.
    pub(crate) size: u64,
    /// The first write error: a draft that lost bytes must never be committed.
    pub(crate) write_error: Option<io::Error>,
}

impl Draft {
    pub(crate) fn new(
        id: QueueId,
        envelope: Envelope,
        tmp_path: PathBuf,
        file: tokio::fs::File,
    ) -> Draft {
        Draft {
            id,
            envelope,
            tmp_path,
            writer: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            head: Vec::new(),
            size: 0,
            write_error: None,
        }
    }

    /// The queue id the message will have once committed.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Message bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Remembers the first error so `commit` refuses the draft even if the caller ignored it.
    fn note<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result
            && self.write_error.is_none()
        {
            self.write_error = Some(io::Error::new(e.kind(), e.to_string()));
        }
        result
    }

    fn writer(&mut self) -> io::Result<Pin<&mut BufWriter<tokio::fs::File>>> {
        match self.writer.as_mut() {
            Some(writer) => Ok(Pin::new(writer)),
            None => Err(io::Error::other("draft already committed or discarded")),
        }
    }
}

impl AsyncWrite for Draft {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = match this.writer() {
            Ok(writer) => writer.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        };
        if let Poll::Ready(Ok(n)) = result {
            let keep = n.min(HEAD_BYTES.saturating_sub(this.head.len()));
            this.head.extend_from_slice(&buf[..keep]);
            this.size += n as u64;
        }
        this.note(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = match this.writer() {
            Ok(writer) => writer.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        };
        this.note(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutting down a draft only flushes it: the file stays open until commit or discard.
        self.poll_flush(cx)
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            // Neither committed nor discarded (the session died): the tmp file is garbage.
            if let Err(e) = std::fs::remove_file(&self.tmp_path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(queue_id = %self.id, error = %e, "could not remove abandoned draft");
            }
        }
    }
}

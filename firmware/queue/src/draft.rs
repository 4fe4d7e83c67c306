//! A message being received, kept in memory and spilled to `tmp/` only when it grows large.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, BufWriter};

use crate::envelope::Envelope;
use crate::id::QueueId;
use crate::spool::{self, HEAD_BYTES};

/// A message that grows past this size is moved to its `tmp/` file while it arrives, so that
/// the memory of many concurrent large messages stays bounded; smaller ones (nearly all mail)
/// are written by the spool writer in one go at the commit.
pub(crate) const SPILL_AT: usize = 1024 * 1024;
/// Write buffer of a spilled draft.
const WRITE_BUFFER: usize = 256 * 1024;

/// Where the bytes of a draft are.
#[derive(Debug)]
pub(crate) enum DraftBody {
    /// All in memory (the message only; the spool header is written at the commit).
    Memory(Vec<u8>),
    /// In `tmp/<id>` (header and message so far), plus `carry`: bytes accepted from the session
    /// but not yet handed to the file.
    Spilled {
        writer: BufWriter<tokio::fs::File>,
        carry: Vec<u8>,
    },
    /// Complete in `tmp/<id>` and being committed: removed on drop unless the commit took it.
    OnDisk,
    /// Committed or discarded.
    Done,
}

/// A message being received. Write the message bytes (CRLF, not dot-stuffed) into it with
/// `AsyncWriteExt`, then hand it to [`crate::Queue::commit`] or [`crate::Queue::discard`].
///
/// A spilled draft dropped without either is removed from `tmp/` on drop (and would be at start-up
/// anyway).
#[derive(Debug)]
pub struct Draft {
    pub(crate) id: QueueId,
    pub(crate) envelope: Envelope,
    pub(crate) tmp_path: PathBuf,
    pub(crate) body: DraftBody,
    /// The first `HEAD_BYTES` of the message, for the Message-ID/Subject parse.
    pub(crate) head: Vec<u8>,
    /// Message bytes written so far.
    pub(crate) size: u64,
    /// The first write error: a draft that lost bytes must never be committed.
    pub(crate) write_error: Option<io::Error>,
}

impl Draft {
    pub(crate) fn new(id: QueueId, envelope: Envelope, tmp_path: PathBuf) -> Draft {
        Draft {
            id,
            envelope,
            tmp_path,
            body: DraftBody::Memory(Vec::new()),
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

    /// Moves an in-memory draft that has grown too large into its `tmp/` file. The file is
    /// created here (a quick metadata operation); the bytes go through the async writer.
    fn spill(&mut self) -> io::Result<()> {
        let DraftBody::Memory(message) = &mut self.body else {
            return Ok(());
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.tmp_path)?;
        let header = spool::encode_header(&self.envelope);
        if let Err(e) = file.write_all(&header) {
            let _ = std::fs::remove_file(&self.tmp_path);
            return Err(e);
        }
        tracing::debug!(queue_id = %self.id, size = message.len(), "large message spilled to the spool");
        let carry = std::mem::take(message);
        self.body = DraftBody::Spilled {
            writer: BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file)),
            carry,
        };
        Ok(())
    }

    /// Hands the carried bytes of a spilled draft to its file writer.
    fn poll_carry(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let DraftBody::Spilled { writer, carry } = &mut self.body else {
            return Poll::Ready(Ok(()));
        };
        while !carry.is_empty() {
            let n = std::task::ready!(Pin::new(&mut *writer).poll_write(cx, carry))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            carry.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.body {
            DraftBody::Done | DraftBody::OnDisk => Poll::Ready(Err(io::Error::other(
                "draft already committed or discarded",
            ))),
            DraftBody::Memory(message) => {
                message.extend_from_slice(buf);
                if message.len() > SPILL_AT {
                    self.spill()?;
                }
                Poll::Ready(Ok(buf.len()))
            }
            DraftBody::Spilled { .. } => {
                std::task::ready!(self.poll_carry(cx))?;
                let DraftBody::Spilled { writer, .. } = &mut self.body else {
                    unreachable!("poll_carry keeps the draft spilled");
                };
                Pin::new(writer).poll_write(cx, buf)
            }
        }
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_carry(cx))?;
        match &mut self.body {
            DraftBody::Spilled { writer, .. } => Pin::new(writer).poll_flush(cx),
            DraftBody::Memory(_) => Poll::Ready(Ok(())),
            DraftBody::Done | DraftBody::OnDisk => Poll::Ready(Err(io::Error::other(
                "draft already committed or discarded",
            ))),
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
        let result = this.poll_write_inner(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            let keep = n.min(HEAD_BYTES.saturating_sub(this.head.len()));
            this.head.extend_from_slice(&buf[..keep]);
            this.size += n as u64;
        }
        this.note(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = this.poll_flush_inner(cx);
        this.note(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutting down a draft only flushes it: the file stays open until commit or discard.
        self.poll_flush(cx)
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if let DraftBody::Spilled { .. } | DraftBody::OnDisk =
            std::mem::replace(&mut self.body, DraftBody::Done)
        {
            // Neither committed nor discarded (the session died): the tmp file is garbage.
            if let Err(e) = std::fs::remove_file(&self.tmp_path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(queue_id = %self.id, error = %e, "could not remove abandoned draft");
            }
        }
    }
}

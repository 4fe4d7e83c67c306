//! The byte stream of one session: plain TCP or TLS, an input buffer for pipelined commands and an output
//! buffer for replies that are sent when the session would otherwise wait for the client.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::reply::Reply;
use crate::server::TlsInfo;

/// How much we ask the socket for at a time; message data arrives in large reads, commands in small ones.
const READ_CHUNK: usize = 16 * 1024;

/// How long and how much to keep reading after closing, so our final reply is not lost to a TCP reset.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// The transport under the session; `Upgrading` only exists for the moment of the TLS handshake.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Upgrading,
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(not_connected())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Upgrading => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost during TLS handshake",
    )
}

/// Why a read from the client did not deliver bytes.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Nothing arrived (or our replies could not be sent) within the timeout.
    Timeout,
    /// The client closed the connection.
    Closed,
    /// A socket or TLS error.
    Io(io::Error),
    /// The server is shutting down and the session was idle.
    Shutdown,
    /// The shutdown grace period is over.
    Aborted,
}

/// One client connection with its buffers.
pub(crate) struct Connection {
    transport: Transport,
    /// Bytes received but not yet processed (pipelined commands, message data).
    pub(crate) input: BytesMut,
    output: Vec<u8>,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Connection {
        Connection {
            transport: Transport::Plain(stream),
            input: BytesMut::with_capacity(READ_CHUNK),
            output: Vec::new(),
        }
    }

    /// Queues a reply; it is sent with the next flush.
    pub(crate) fn queue(&mut self, reply: &Reply) {
        reply.write_wire(&mut self.output);
    }

    /// Sends all queued replies.
    pub(crate) async fn flush(&mut self, limit: Duration) -> Result<(), ReadError> {
        if self.output.is_empty() {
            return Ok(());
        }
        let send = async {
            self.transport.write_all(&self.output).await?;
            self.transport.flush().await
        };
        match tokio::time::timeout(limit, send).await {
            Ok(Ok(())) => {
                self.output.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Err(_) => Err(ReadError::Timeout),
        }
    }

    /// Flushes the queued replies (the client may be waiting for them before it sends more: this is the
    /// PIPELINING rule "reply when there is no more input"), then waits for more input.
    ///
    /// `shutdown` is watched only while the session is idle, so that an idle client hears 421 at once.
    pub(crate) async fn read_more(
        &mut self,
        limit: Duration,
        abort: &CancellationToken,
        shutdown: Option<&CancellationToken>,
    ) -> Result<usize, ReadError> {
        self.flush(limit).await?;
        self.input.reserve(READ_CHUNK);
        let idle_shutdown = async {
            match shutdown {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = abort.cancelled() => Err(ReadError::Aborted),
            _ = idle_shutdown => Err(ReadError::Shutdown),
            read = tokio::time::timeout(limit, self.transport.read_buf(&mut self.input)) => match read {
                Err(_) => Err(ReadError::Timeout),
                Ok(Ok(0)) => Err(ReadError::Closed),
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(ReadError::Io(e)),
            },
        }
    }

    /// Discards whatever the client sent after STARTTLS and runs the TLS handshake.
    ///
    /// Bytes pipelined behind STARTTLS arrived in plaintext; executing them after the handshake would let a
    /// man in the middle inject commands into the protected session (CVE-2011-0411 and its relatives).
    /// Returns the number of discarded bytes with the negotiated parameters.
    pub(crate) async fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        limit: Duration,
        abort: &CancellationToken,
    ) -> Result<(usize, TlsInfo), ReadError> {
        let discarded = self.input.len();
        self.input.clear();
        let Transport::Plain(tcp) = std::mem::replace(&mut self.transport, Transport::Upgrading)
        else {
            return Err(ReadError::Io(io::Error::other(
                "STARTTLS on a connection that is not plain TCP",
            )));
        };
        let handshake = TlsAcceptor::from(config).accept(tcp);
        let stream = tokio::select! {
            biased;
            _ = abort.cancelled() => return Err(ReadError::Aborted),
            done = tokio::time::timeout(limit, handshake) => match done {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Err(e)) => return Err(ReadError::Io(e)),
                Ok(Ok(stream)) => stream,
            },
        };
        let session = stream.get_ref().1;
        let protocol = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_string(),
        };
        let cipher = session
            .negotiated_cipher_suite()
            .map(|suite| format!("{:?}", suite.suite()))
            .unwrap_or_else(|| "unknown".to_string());
        self.transport = Transport::Tls(Box::new(stream));
        Ok((discarded, TlsInfo { protocol, cipher }))
    }

    /// Sends what is queued (best effort, bounded by `limit`) and closes the connection.
    ///
    /// After our FIN, input the client already sent is read and dropped for a moment: closing a socket with unread
    /// input makes the kernel send a reset, which can destroy our last reply (say, the 521) before the client reads it.
    pub(crate) async fn close(&mut self, limit: Duration) {
        if self.flush(limit).await.is_err() {
            return;
        }
        if let Transport::Plain(stream) = &self.transport
            && nothing_unread(stream)
        {
            // Nothing for a reset to be about: dropping the socket sends a plain FIN, and
            // there is no need to wait for the client's (as Postfix's smtpd does after QUIT).
            return;
        }
        if tokio::time::timeout(limit, self.transport.shutdown())
            .await
            .is_err()
        {
            return;
        }
        let drain = async {
            let mut drained = 0;
            let mut scratch = [0u8; 4096];
            while drained < LINGER_BYTES {
                match self.transport.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME.min(limit), drain).await;
    }
}

/// Whether the kernel holds no unread input for `stream` (or the client has closed its side), so
/// that closing it now cannot make the kernel answer with a reset. Asks the socket itself (a
/// non-blocking peek), not tokio's idea of its readiness, which may lag behind.
fn nothing_unread(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    match socket2::SockRef::from(stream).peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

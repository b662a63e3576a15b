//! [`Lingering`]: an accepted connection that, when the server closes it, reads and
//! drops what the client still sends for a moment before it is really closed.
//!
//! Why: the agent answers 413 (or 401) without reading a body it refuses. Closing a
//! socket with unread bytes in it makes the kernel send a reset, and the client, still
//! writing its body, loses the answer (`Broken pipe` instead of the 413). Like a web
//! server's lingering close, the write side is shut first (the client sees the answer
//! and the end), and the rest of the body is drained within [`LINGER`] and
//! [`LINGER_BYTES`] so a stranger cannot use it to hold the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The longest a closing connection is drained.
pub const LINGER: Duration = Duration::from_secs(2);

/// The most bytes a closing connection is drained of.
pub const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// A TCP connection whose shutdown lingers (see the module).
#[derive(Debug)]
pub struct Lingering {
    stream: TcpStream,
    drain: Option<Drain>,
}

#[derive(Debug)]
struct Drain {
    deadline: Pin<Box<tokio::time::Sleep>>,
    left: usize,
}

impl Lingering {
    pub fn new(stream: TcpStream) -> Self {
        Self { stream, drain: None }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Shuts the write side, then drains the read side until the client's end, a read
    /// error, [`LINGER`] or [`LINGER_BYTES`], whichever comes first.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.drain.is_none() {
            std::task::ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.drain = Some(Drain { deadline: Box::pin(tokio::time::sleep(LINGER)), left: LINGER_BYTES });
        }
        let Some(drain) = this.drain.as_mut() else { return Poll::Ready(Ok(())) };
        let mut scratch = [0u8; 8192];
        loop {
            if drain.left == 0 || drain.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                // The client's end, or it is gone: nothing left to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => drain.left = drain.left.saturating_sub(buf.filled().len()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A server that answers before reading a large upload: the client still gets the
    /// answer, because the rest of the upload is drained instead of reset.
    #[tokio::test]
    async fn an_early_answer_reaches_a_client_still_sending() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Lingering::new(stream);
            let mut head = [0u8; 16];
            conn.read_exact(&mut head).await.unwrap();
            conn.write_all(b"refused").await.unwrap();
            conn.shutdown().await.unwrap();
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Far more than the socket buffers hold: without the drain, this write fails.
        client.write_all(&vec![b'x'; 8 * 1024 * 1024]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"refused");
        server.await.unwrap();
    }
}

//! What a connection runs over: plain TCP, TLS, or WebSocket on either. The driver reads
//! application bytes from a [`Transport`] and writes its coalesced output to it; it never sees
//! which one it has.

use std::io::ErrorKind;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::CloseReason;

/// A byte stream as the connection driver sees it. Errors are already the reason to close.
pub(crate) trait Transport: Unpin + Send + 'static {
    /// Reads what is available and appends the application bytes to `buf`. `Ready(Ok(0))`: the
    /// peer closed. `Pending`: nothing now, and the task is woken when there is.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<Result<usize, CloseReason>>;

    /// Writes some of `data`; returns how much was taken (never 0 when `data` is not empty).
    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8])
        -> Poll<Result<usize, CloseReason>>;

    /// Pushes out anything the transport buffered itself (TLS records, WebSocket frames).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>>;

    /// Last words before the connection is dropped (a WebSocket close frame, a TLS
    /// close_notify). Best effort: never waits.
    fn farewell(&mut self, _cx: &mut Context<'_>, _reason: CloseReason) {}
}

/// A byte stream used as it is: TCP, or TLS over TCP.
pub(crate) struct Plain<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Plain<S> {
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<Result<usize, CloseReason>> {
        read_into(&mut self.0, cx, buf)
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, CloseReason>> {
        loop {
            return match Pin::new(&mut self.0).poll_write(cx, data) {
                Poll::Ready(Ok(0)) if !data.is_empty() => Poll::Ready(Err(CloseReason::WriteError)),
                Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
                Poll::Ready(Err(e)) if e.kind() == ErrorKind::Interrupted => continue,
                Poll::Ready(Err(_)) => Poll::Ready(Err(CloseReason::WriteError)),
                Poll::Pending => Poll::Pending,
            };
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>> {
        Pin::new(&mut self.0)
            .poll_flush(cx)
            .map_err(|_| CloseReason::WriteError)
    }

    fn farewell(&mut self, cx: &mut Context<'_>, _reason: CloseReason) {
        // TLS sends its close_notify here; TCP half-closes, as dropping it would anyway.
        let _ = Pin::new(&mut self.0).poll_shutdown(cx);
    }
}

/// Reads from `io` into the spare room of `buf` (which the caller reserved).
pub(crate) fn read_into<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<Result<usize, CloseReason>> {
    loop {
        return match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) if e.kind() == ErrorKind::Interrupted => continue,
            Poll::Ready(Err(_)) => Poll::Ready(Err(CloseReason::ReadError)),
            Poll::Pending => Poll::Pending,
        };
    }
}

//! WebSocket as a [`Transport`]: the frames of a byte stream (TCP or TLS) in, application bytes
//! out, and each coalesced write of the driver out as one binary frame.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{self, status, Control, Decoder, Deflater};
use crate::transport::{read_into, Transport};
use crate::CloseReason;

/// Unwritten output past which a client's pings are not answered.
const MAX_PONG_BACKLOG_BYTES: usize = 64 * 1024;
/// Room kept free in the raw read buffer before a read.
const READ_CHUNK: usize = 16 * 1024;
/// A write buffer kept between writes while busy is at most this large.
const KEEP_WRITE_BUFFER: usize = 256 * 1024;

/// A WebSocket connection over the byte stream `S`.
pub(crate) struct Ws<S> {
    io: S,
    /// Bytes read from `io`, not decoded yet.
    raw: BytesMut,
    decoder: Decoder,
    controls: Vec<Control>,
    /// Encoded frames not written to `io` yet, from `out_pos` on.
    out: BytesMut,
    out_pos: usize,
    deflate: Option<Box<Deflater>>,
    /// The close status to send, when the server decided it (a refused frame).
    close_status: Option<u16>,
    close_sent: bool,
    /// The client sent a close frame: nothing more will be read.
    closed_by_client: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Ws<S> {
    /// A connection whose handshake is done; `early` holds bytes the client sent right after its
    /// request.
    pub(crate) fn new(io: S, early: BytesMut, max_message: usize, compress: bool) -> Self {
        Self {
            io,
            raw: early,
            decoder: Decoder::new(max_message, compress),
            controls: Vec::new(),
            out: BytesMut::new(),
            out_pos: 0,
            deflate: compress.then(Box::default),
            close_status: None,
            close_sent: false,
            closed_by_client: false,
        }
    }

    /// Writes the queued frames; `Ready(Ok)` once they are all out.
    fn flush_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>> {
        while self.out_pos < self.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(CloseReason::WriteError)),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Err(CloseReason::WriteError)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out_pos = 0;
        if self.out.capacity() > KEEP_WRITE_BUFFER {
            self.out = BytesMut::new();
        } else {
            self.out.clear();
        }
        Pin::new(&mut self.io)
            .poll_flush(cx)
            .map_err(|_| CloseReason::WriteError)
    }

    /// Answers the control frames the last decode found.
    fn answer_controls(&mut self) {
        for c in std::mem::take(&mut self.controls) {
            match c {
                Control::Ping(payload) => {
                    // A client that pings and never reads would grow the answers without
                    // bound: past a backlog, pings go unanswered (RFC 6455 §5.5.3 lets a pong
                    // answer only the latest ping).
                    let backlog = self.out.len() - self.out_pos;
                    if !self.close_sent && backlog < MAX_PONG_BACKLOG_BYTES {
                        frame::put_header(&mut self.out, frame::OP_PONG, false, payload.len());
                        self.out.extend_from_slice(&payload);
                    }
                }
                Control::Pong => {}
                Control::Close(code) => {
                    if !self.close_sent {
                        // Echo the client's status, as RFC 6455 §5.5.1 asks.
                        let code = code.unwrap_or(status::NORMAL);
                        frame::put_close(&mut self.out, code, "");
                        self.close_sent = true;
                    }
                    self.closed_by_client = true;
                }
            }
        }
    }
}

/// The close status that tells a browser why the server closed.
fn close_status(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::ServerShutdown => status::GOING_AWAY,
        CloseReason::ProtocolViolation => status::PROTOCOL_ERROR,
        CloseReason::MaxPayloadExceeded => status::MESSAGE_TOO_BIG,
        CloseReason::AuthenticationViolation
        | CloseReason::MaxConnectionsExceeded
        | CloseReason::MaxControlLineExceeded => status::POLICY_VIOLATION,
        CloseReason::SlowConsumerPendingBytes | CloseReason::SlowConsumerWriteDeadline => {
            status::POLICY_VIOLATION
        }
        _ => status::NORMAL,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Ws<S> {
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<Result<usize, CloseReason>> {
        loop {
            if self.closed_by_client {
                return Poll::Ready(Ok(0));
            }
            if !self.raw.is_empty() {
                let before = buf.len();
                if let Err(e) = self.decoder.decode(&mut self.raw, buf, &mut self.controls) {
                    tracing::debug!(error = %e, "refusing a websocket frame");
                    self.close_status = Some(e.status());
                    return Poll::Ready(Err(match e {
                        frame::FrameError::TooBig(_) => CloseReason::MaxPayloadExceeded,
                        _ => CloseReason::ProtocolViolation,
                    }));
                }
                if !self.controls.is_empty() {
                    self.answer_controls();
                    // Best effort now; the driver flushes the rest when it writes next.
                    if let Poll::Ready(Err(reason)) = self.flush_out(cx) {
                        return Poll::Ready(Err(reason));
                    }
                }
                if buf.len() > before {
                    return Poll::Ready(Ok(buf.len() - before));
                }
                if self.closed_by_client {
                    return Poll::Ready(Ok(0));
                }
            }
            if self.raw.capacity() - self.raw.len() < READ_CHUNK / 2 {
                self.raw.reserve(READ_CHUNK);
            }
            match read_into(&mut self.io, cx, &mut self.raw) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(reason)) => return Poll::Ready(Err(reason)),
                Poll::Pending => {
                    if self.raw.is_empty() {
                        // Idle: keep no buffers.
                        self.raw = BytesMut::new();
                        if self.out.is_empty() {
                            self.out = BytesMut::new();
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, CloseReason>> {
        if self.out_pos < self.out.len() {
            match self.flush_out(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(reason)) => return Poll::Ready(Err(reason)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.close_sent {
            // Nothing may follow a close frame; the connection is ending anyway.
            return Poll::Ready(Ok(data.len()));
        }
        match self.deflate.as_mut() {
            Some(d) if data.len() > frame::COMPRESS_THRESHOLD => d.put_frame(&mut self.out, data),
            _ if self.out.is_empty() && self.io.is_write_vectored() => {
                // Header and payload go out in one vectored write, without copying the
                // payload; only what the socket did not take is kept.
                let (h, n) = frame::header(frame::OP_BINARY, false, data.len());
                let bufs = [IoSlice::new(&h[..n]), IoSlice::new(data)];
                let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &bufs) {
                    Poll::Ready(Ok(w)) => w,
                    Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(CloseReason::WriteError)),
                    Poll::Pending => return Poll::Pending,
                };
                if written < n {
                    self.out.extend_from_slice(&h[written..n]);
                    self.out.extend_from_slice(data);
                } else {
                    self.out.extend_from_slice(&data[written - n..]);
                }
            }
            _ => {
                frame::put_header(&mut self.out, frame::OP_BINARY, false, data.len());
                self.out.extend_from_slice(data);
            }
        }
        if let Poll::Ready(Err(reason)) = self.flush_out(cx) {
            return Poll::Ready(Err(reason));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>> {
        self.flush_out(cx)
    }

    fn farewell(&mut self, cx: &mut Context<'_>, reason: CloseReason) {
        if !self.close_sent && !matches!(reason, CloseReason::ReadError | CloseReason::WriteError) {
            let code = self.close_status.unwrap_or_else(|| close_status(reason));
            frame::put_close(&mut self.out, code, reason.as_str());
            self.close_sent = true;
        }
        if let Poll::Ready(Ok(())) = self.flush_out(cx) {
            let _ = Pin::new(&mut self.io).poll_shutdown(cx);
        }
    }
}

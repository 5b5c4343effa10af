//! WebSocket framing (RFC 6455) with permessage-deflate (RFC 7692), pure and resumable.
//!
//! The [`Decoder`] turns the bytes a client sent into the application bytes it carried: data
//! frames of any size are streamed out as they arrive (unmasked, inflated when compressed), so a
//! NATS op or MQTT packet may span frames and a frame may hold many of them. Control frames come
//! out as [`Control`] events. Limits are checked on the frame header, before anything is buffered.
//!
//! The encoder side writes server frames: unmasked, one binary frame per coalesced write,
//! compressed when negotiated and worth it.

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Opcodes.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV23: u8 = 0x30;
const MASK: u8 = 0x80;
/// Control frames carry at most this many payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The tail a sync flush leaves, which permessage-deflate strips from each message.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Payloads this small are sent uncompressed even when compression was negotiated.
pub const COMPRESS_THRESHOLD: usize = 64;

/// Close status codes.
pub mod status {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const NO_STATUS: u16 = 1005;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// A control frame the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// A pong (unsolicited or not): nothing to do.
    Pong,
    /// The client is closing, with a status code when it gave one.
    Close(Option<u16>),
}

/// Why a client's frames were refused; the close status the server answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("websocket message larger than {0} bytes")]
    TooBig(usize),
    #[error("websocket payload invalid: {0}")]
    InvalidPayload(&'static str),
}

impl FrameError {
    /// The close status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => status::PROTOCOL_ERROR,
            FrameError::TooBig(_) => status::MESSAGE_TOO_BIG,
            FrameError::InvalidPayload(_) => status::INVALID_PAYLOAD,
        }
    }
}

/// Where the decoder is inside the current frame.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Waiting for a frame header.
    Header,
    /// Inside a data frame's payload: `remaining` bytes to go.
    Data {
        remaining: u64,
        mask: [u8; 4],
        offset: usize,
        fin: bool,
    },
    /// A control frame's header was read; its payload (at most 125 bytes) is awaited whole.
    Control {
        opcode: u8,
        len: usize,
        mask: [u8; 4],
    },
}

/// Decodes client frames. See the module documentation.
pub struct Decoder {
    max_message: usize,
    state: State,
    /// A data message is open (its final frame has not come yet).
    in_message: bool,
    /// The open message is compressed.
    compressed: bool,
    /// Application bytes of the open message so far.
    message_len: usize,
    /// Present when permessage-deflate was negotiated.
    inflate: Option<Box<Decompress>>,
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes; `deflate` when permessage-deflate
    /// was negotiated.
    pub fn new(max_message: usize, deflate: bool) -> Self {
        Self {
            max_message,
            state: State::Header,
            in_message: false,
            compressed: false,
            message_len: 0,
            inflate: deflate.then(|| Box::new(Decompress::new(false))),
            scratch: Vec::new(),
        }
    }

    /// Decodes everything complete in `raw` (removing it): application bytes are appended to
    /// `out`, control frames to `controls`. Partial frames stay in `raw` (a data frame's payload
    /// is streamed out as far as it arrived).
    pub fn decode(
        &mut self,
        raw: &mut BytesMut,
        out: &mut BytesMut,
        controls: &mut Vec<Control>,
    ) -> Result<(), FrameError> {
        loop {
            match self.state {
                State::Header => {
                    if !self.header(raw)? {
                        return Ok(());
                    }
                }
                State::Data {
                    remaining,
                    mask,
                    offset,
                    fin,
                } => {
                    if remaining > 0 && raw.is_empty() {
                        return Ok(());
                    }
                    let take = remaining.min(raw.len() as u64) as usize;
                    let mut chunk = raw.split_to(take);
                    apply_mask(&mut chunk, mask, offset);
                    self.data(&chunk, out)?;
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.state = State::Data {
                            remaining,
                            mask,
                            offset: (offset + take) % 4,
                            fin,
                        };
                        return Ok(());
                    }
                    if fin {
                        self.end_message(out)?;
                    }
                    self.state = State::Header;
                }
                State::Control { opcode, len, mask } => {
                    if raw.len() < len {
                        return Ok(());
                    }
                    let mut payload = raw.split_to(len);
                    apply_mask(&mut payload, mask, 0);
                    controls.push(control(opcode, &payload)?);
                    self.state = State::Header;
                }
            }
        }
    }

    /// Reads one frame header if it is all there; `Ok(false)`: wait for more bytes.
    fn header(&mut self, raw: &mut BytesMut) -> Result<bool, FrameError> {
        if raw.len() < 2 {
            return Ok(false);
        }
        let (b0, b1) = (raw[0], raw[1]);
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + ext + 4;
        if b0 & RSV23 != 0 {
            return Err(FrameError::Protocol(
                "reserved bits RSV2 and RSV3 must be clear",
            ));
        }
        if b1 & MASK == 0 {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        let opcode = b0 & 0x0f;
        let fin = b0 & FIN != 0;
        let rsv1 = b0 & RSV1 != 0;
        let is_control = opcode >= 0x8;
        if is_control {
            if !matches!(opcode, OP_CLOSE | OP_PING | OP_PONG) {
                return Err(FrameError::Protocol("unknown opcode"));
            }
            if !fin {
                return Err(FrameError::Protocol(
                    "control frames must not be fragmented",
                ));
            }
            if rsv1 {
                return Err(FrameError::Protocol(
                    "control frames must not be compressed",
                ));
            }
            if ext != 0 {
                return Err(FrameError::Protocol("control frame longer than 125 bytes"));
            }
        } else {
            match opcode {
                OP_TEXT | OP_BINARY => {
                    if self.in_message {
                        return Err(FrameError::Protocol(
                            "new message started before the previous one ended",
                        ));
                    }
                    if rsv1 && self.inflate.is_none() {
                        return Err(FrameError::Protocol(
                            "compressed frame without negotiated permessage-deflate",
                        ));
                    }
                }
                OP_CONTINUATION => {
                    if !self.in_message {
                        return Err(FrameError::Protocol("continuation frame outside a message"));
                    }
                    if rsv1 {
                        return Err(FrameError::Protocol(
                            "continuation frames must not set RSV1",
                        ));
                    }
                }
                _ => return Err(FrameError::Protocol("unknown opcode")),
            }
        }
        if raw.len() < header_len {
            return Ok(false);
        }
        let len: u64 = match ext {
            2 => u16::from_be_bytes([raw[2], raw[3]]) as u64,
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(FrameError::Protocol("frame length has its high bit set"));
                }
                len
            }
            _ => (b1 & 0x7f) as u64,
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&raw[2 + ext..header_len]);
        raw.advance(header_len);
        if is_control {
            self.state = State::Control {
                opcode,
                len: len as usize,
                mask,
            };
            return Ok(true);
        }
        if opcode != OP_CONTINUATION {
            self.in_message = true;
            self.compressed = rsv1;
            self.message_len = 0;
        }
        // Refuse on the header what would take the message over the limit, before buffering
        // it. A compressed message is checked again as it inflates.
        if (self.message_len as u64).saturating_add(len) > self.max_message as u64 {
            return Err(FrameError::TooBig(self.max_message));
        }
        if !self.compressed {
            self.message_len += len as usize;
        }
        self.state = State::Data {
            remaining: len,
            mask,
            offset: 0,
            fin,
        };
        Ok(true)
    }

    /// Hands unmasked payload bytes of the open message on.
    fn data(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
        if !self.compressed {
            out.extend_from_slice(chunk);
            return Ok(());
        }
        self.inflate(chunk, FlushDecompress::None, out)
    }

    /// The open message's final frame ended.
    fn end_message(&mut self, out: &mut BytesMut) -> Result<(), FrameError> {
        if self.compressed {
            self.inflate(&DEFLATE_TAIL, FlushDecompress::Sync, out)?;
            // The client was told not to keep its context between messages.
            if let Some(d) = self.inflate.as_mut() {
                d.reset(false);
            }
        }
        self.in_message = false;
        self.compressed = false;
        self.message_len = 0;
        Ok(())
    }

    fn inflate(
        &mut self,
        mut input: &[u8],
        flush: FlushDecompress,
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let d = self.inflate.as_mut().expect("compressed implies deflate");
        loop {
            // Never inflate more than one byte past the limit in a call: how far a message
            // inflates before it is refused, and so which error refuses it, must not depend on
            // how its bytes were split across reads.
            let allowed = self.max_message.saturating_sub(self.message_len) + 1;
            let room = (input.len() * 4).clamp(4096, 256 * 1024).min(allowed);
            if self.scratch.len() < room {
                self.scratch.resize(room, 0);
            }
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress(input, &mut self.scratch[..room], flush)
                .map_err(|_| FrameError::InvalidPayload("bad deflate data"))?;
            let used = (d.total_in() - in0) as usize;
            let made = (d.total_out() - out0) as usize;
            input = &input[used..];
            self.message_len += made;
            if self.message_len > self.max_message {
                return Err(FrameError::TooBig(self.max_message));
            }
            out.extend_from_slice(&self.scratch[..made]);
            let full = made == room;
            if status == Status::StreamEnd {
                if !input.is_empty() {
                    return Err(FrameError::InvalidPayload(
                        "data after the end of the deflate stream",
                    ));
                }
                return Ok(());
            }
            if input.is_empty() && !full {
                return Ok(());
            }
            if used == 0 && made == 0 {
                return Err(FrameError::InvalidPayload("bad deflate data"));
            }
        }
    }
}

/// Checks and turns a control frame's payload into its event.
fn control(opcode: u8, payload: &[u8]) -> Result<Control, FrameError> {
    match opcode {
        OP_PING => Ok(Control::Ping(payload.to_vec())),
        OP_PONG => Ok(Control::Pong),
        _ => match payload.len() {
            0 => Ok(Control::Close(None)),
            1 => Err(FrameError::Protocol("close frame with a one-byte payload")),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if std::str::from_utf8(&payload[2..]).is_err() {
                    return Err(FrameError::InvalidPayload("close reason is not UTF-8"));
                }
                if !valid_close_code(code) {
                    return Err(FrameError::Protocol("invalid close status code"));
                }
                Ok(Control::Close(Some(code)))
            }
        },
    }
}

/// Whether a client may send `code` in a close frame (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// XORs `buf` with the 4-byte `mask`, starting `offset` bytes into the mask.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = [0u8; 4];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(m) as u64;
    let word = word | (word << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// Appends a server frame header (unmasked) for a payload of `len` bytes.
pub fn put_header(out: &mut BytesMut, opcode: u8, compressed: bool, len: usize) {
    let (bytes, n) = header(opcode, compressed, len);
    out.extend_from_slice(&bytes[..n]);
}

/// A server frame header (unmasked) for a payload of `len` bytes, and its length.
pub fn header(opcode: u8, compressed: bool, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = FIN | opcode | if compressed { RSV1 } else { 0 };
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// Compresses messages for one connection (server_no_context_takeover: each message alone).
pub struct Deflater {
    compress: Compress,
    scratch: Vec<u8>,
}

impl Default for Deflater {
    fn default() -> Self {
        Self {
            compress: Compress::new(Compression::fast(), false),
            scratch: Vec::new(),
        }
    }
}

impl Deflater {
    /// Appends `payload` as one compressed binary frame.
    pub fn put_frame(&mut self, out: &mut BytesMut, payload: &[u8]) {
        self.scratch.clear();
        let mut input = payload;
        loop {
            self.scratch.reserve((input.len() / 2).max(64) + 64);
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut self.scratch, FlushCompress::Sync)
                .expect("deflate into a vector cannot fail");
            input = &input[(self.compress.total_in() - before) as usize..];
            if input.is_empty() && self.scratch.len() < self.scratch.capacity() {
                break;
            }
        }
        let body = self
            .scratch
            .strip_suffix(&DEFLATE_TAIL)
            .unwrap_or(&self.scratch);
        put_header(out, OP_BINARY, true, body.len());
        out.extend_from_slice(body);
        self.compress.reset();
    }
}

/// Appends a close frame with `code` and a short reason.
pub fn put_close(out: &mut BytesMut, code: u16, reason: &str) {
    let mut reason = reason;
    while reason.len() > MAX_CONTROL_PAYLOAD - 2 {
        let mut cut = MAX_CONTROL_PAYLOAD - 2;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    put_header(out, OP_CLOSE, false, 2 + reason.len());
    out.put_u16(code);
    out.extend_from_slice(reason.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compress;

    /// A client frame, masked with `mask`.
    fn client_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![b0];
        let len = payload.len();
        if len < 126 {
            f.push(MASK | len as u8);
        } else if len <= 65535 {
            f.push(MASK | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(MASK | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        apply_mask(&mut p, mask, 0);
        f.extend_from_slice(&p);
        f
    }

    fn decode_all(d: &mut Decoder, input: &[u8]) -> Result<(Vec<u8>, Vec<Control>), FrameError> {
        let mut raw = BytesMut::from(input);
        let mut out = BytesMut::new();
        let mut ctl = Vec::new();
        d.decode(&mut raw, &mut out, &mut ctl)?;
        Ok((out.to_vec(), ctl))
    }

    /// Feeds `input` split at every point (and byte by byte); the output must not change.
    fn decode_split(input: &[u8], deflate: bool) -> (Vec<u8>, Vec<Control>) {
        let whole = decode_all(&mut Decoder::new(1 << 20, deflate), input).unwrap();
        for cut in 0..=input.len() {
            let mut d = Decoder::new(1 << 20, deflate);
            let mut raw = BytesMut::new();
            let mut out = BytesMut::new();
            let mut ctl = Vec::new();
            raw.extend_from_slice(&input[..cut]);
            d.decode(&mut raw, &mut out, &mut ctl).unwrap();
            raw.extend_from_slice(&input[cut..]);
            d.decode(&mut raw, &mut out, &mut ctl).unwrap();
            assert!(raw.is_empty(), "cut at {cut}");
            assert_eq!((out.to_vec(), ctl), whole, "cut at {cut}");
        }
        let mut d = Decoder::new(1 << 20, deflate);
        let mut raw = BytesMut::new();
        let mut out = BytesMut::new();
        let mut ctl = Vec::new();
        for b in input {
            raw.put_u8(*b);
            d.decode(&mut raw, &mut out, &mut ctl).unwrap();
        }
        assert_eq!((out.to_vec(), ctl), whole, "byte by byte");
        whole
    }

    fn deflate_message(payload: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut v = Vec::with_capacity(payload.len() + 64);
        c.compress_vec(payload, &mut v, FlushCompress::Sync)
            .unwrap();
        assert!(v.ends_with(&DEFLATE_TAIL));
        v.truncate(v.len() - 4);
        v
    }

    #[test]
    fn one_frame_many_ops_and_ops_across_frames() {
        let m = [1, 2, 3, 4];
        let mut input = client_frame(FIN | OP_BINARY, b"PUB a 1\r\nx\r\nPING\r\nSU", m);
        input.extend(client_frame(FIN | OP_BINARY, b"B a 1\r\n", [9, 8, 7, 6]));
        input.extend(client_frame(FIN | OP_TEXT, b"PING\r\n", m));
        let (out, ctl) = decode_split(&input, false);
        assert_eq!(out, b"PUB a 1\r\nx\r\nPING\r\nSUB a 1\r\nPING\r\n");
        assert!(ctl.is_empty());
    }

    #[test]
    fn fragments_and_interleaved_controls() {
        let m = [0xde, 0xad, 0xbe, 0xef];
        let mut input = client_frame(OP_BINARY, b"hello ", m);
        input.extend(client_frame(FIN | OP_PING, b"p1", m));
        input.extend(client_frame(OP_CONTINUATION, b"wide ", m));
        input.extend(client_frame(FIN | OP_CONTINUATION, b"world", m));
        input.extend(client_frame(FIN | OP_PONG, b"", m));
        input.extend(client_frame(
            FIN | OP_CLOSE,
            &[0x03, 0xe8, b'b', b'y', b'e'],
            m,
        ));
        let (out, ctl) = decode_split(&input, false);
        assert_eq!(out, b"hello wide world");
        assert_eq!(
            ctl,
            vec![
                Control::Ping(b"p1".to_vec()),
                Control::Pong,
                Control::Close(Some(1000))
            ]
        );
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths() {
        for len in [125usize, 126, 127, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let input = client_frame(FIN | OP_BINARY, &payload, [5, 6, 7, 8]);
            let (out, _) = decode_all(&mut Decoder::new(1 << 20, false), &input).unwrap();
            assert_eq!(out, payload, "len {len}");
        }
        // A 16-bit length, split at every point.
        let payload = vec![7u8; 300];
        let input = client_frame(FIN | OP_BINARY, &payload, [1, 0, 1, 0]);
        assert_eq!(decode_split(&input[..], false).0, payload);
    }

    #[test]
    fn compressed_messages_across_frames() {
        let text = b"PUB demo 11\r\nhello world\r\n".repeat(20);
        let z = deflate_message(&text);
        let (a, b) = z.split_at(z.len() / 2);
        let mut input = client_frame(OP_BINARY | RSV1, a, [1, 2, 3, 4]);
        input.extend(client_frame(FIN | OP_CONTINUATION, b, [4, 3, 2, 1]));
        // The next message is alone (no context kept), and one uncompressed after it.
        input.extend(client_frame(
            FIN | OP_BINARY | RSV1,
            &deflate_message(b"PING\r\n"),
            [0; 4],
        ));
        input.extend(client_frame(FIN | OP_BINARY, b"PONG\r\n", [3; 4]));
        let (out, _) = decode_split(&input, true);
        let mut want = text.clone();
        want.extend_from_slice(b"PING\r\nPONG\r\n");
        assert_eq!(out, want);
    }

    #[test]
    fn server_frames_round_trip_through_a_client_view() {
        let mut out = BytesMut::new();
        let payload = b"MSG a 1 5\r\nhello\r\n".repeat(10);
        Deflater::default().put_frame(&mut out, &payload);
        assert_eq!(out[0], FIN | RSV1 | OP_BINARY);
        let len = out[1] as usize;
        let mut d = Decompress::new(false);
        let mut body = out[2..2 + len].to_vec();
        body.extend_from_slice(&DEFLATE_TAIL);
        let mut plain = Vec::with_capacity(4096);
        d.decompress_vec(&body, &mut plain, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(plain, payload);

        let mut out = BytesMut::new();
        put_header(&mut out, OP_BINARY, false, 70_000);
        assert_eq!(&out[..2], &[FIN | OP_BINARY, 127]);
        assert_eq!(u64::from_be_bytes(out[2..10].try_into().unwrap()), 70_000);
        let mut out = BytesMut::new();
        put_close(&mut out, status::MESSAGE_TOO_BIG, &"x".repeat(300));
        assert_eq!(out[1] as usize, MAX_CONTROL_PAYLOAD);
        assert_eq!(&out[2..4], &1009u16.to_be_bytes());
    }

    #[test]
    fn malformed_frames_are_refused_with_their_status() {
        let m = [1, 2, 3, 4];
        let cases: Vec<(Vec<u8>, u16)> = vec![
            // Not masked.
            (vec![FIN | OP_BINARY, 1, b'x'], status::PROTOCOL_ERROR),
            // RSV2 set.
            (
                client_frame(FIN | 0x20 | OP_BINARY, b"x", m),
                status::PROTOCOL_ERROR,
            ),
            // RSV1 without negotiated compression.
            (
                client_frame(FIN | RSV1 | OP_BINARY, b"x", m),
                status::PROTOCOL_ERROR,
            ),
            // Unknown opcodes.
            (client_frame(FIN | 0x3, b"x", m), status::PROTOCOL_ERROR),
            (client_frame(FIN | 0xB, b"x", m), status::PROTOCOL_ERROR),
            // Fragmented ping, long ping.
            (client_frame(OP_PING, b"x", m), status::PROTOCOL_ERROR),
            (
                client_frame(FIN | OP_PING, &[0; 126], m),
                status::PROTOCOL_ERROR,
            ),
            // Continuation with no message open; a new message inside an open one.
            (
                client_frame(FIN | OP_CONTINUATION, b"x", m),
                status::PROTOCOL_ERROR,
            ),
            (
                [
                    client_frame(OP_BINARY, b"x", m),
                    client_frame(FIN | OP_BINARY, b"y", m),
                ]
                .concat(),
                status::PROTOCOL_ERROR,
            ),
            // Close with one byte, with a reserved code, with a bad UTF-8 reason.
            (
                client_frame(FIN | OP_CLOSE, &[3], m),
                status::PROTOCOL_ERROR,
            ),
            (
                client_frame(FIN | OP_CLOSE, &[0x03, 0xed], m),
                status::PROTOCOL_ERROR,
            ),
            (
                client_frame(FIN | OP_CLOSE, &[0x03, 0xe8, 0xff], m),
                status::INVALID_PAYLOAD,
            ),
            // 64-bit length with the high bit set.
            (
                vec![
                    FIN | OP_BINARY,
                    MASK | 127,
                    0x80,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    1,
                    2,
                    3,
                    4,
                ],
                status::PROTOCOL_ERROR,
            ),
        ];
        for (input, want) in cases {
            let got = decode_all(&mut Decoder::new(1024, false), &input).unwrap_err();
            assert_eq!(got.status(), want, "{input:?}: {got}");
        }
    }

    #[test]
    fn oversized_messages_are_refused_on_the_header() {
        // Only the header has arrived: refused before the payload is buffered.
        let input = client_frame(FIN | OP_BINARY, &[0; 2000], [1, 2, 3, 4]);
        let err = decode_all(&mut Decoder::new(1024, false), &input[..8]).unwrap_err();
        assert_eq!(err, FrameError::TooBig(1024));
        // Fragments that add up past the limit.
        let mut input = client_frame(OP_BINARY, &[0; 600], [1; 4]);
        input.extend(client_frame(FIN | OP_CONTINUATION, &[0; 600], [1; 4]));
        let err = decode_all(&mut Decoder::new(1024, false), &input).unwrap_err();
        assert_eq!(err.status(), status::MESSAGE_TOO_BIG);
        // A small compressed message that inflates past the limit.
        let z = deflate_message(&[b'a'; 100_000]);
        assert!(z.len() < 1024);
        let input = client_frame(FIN | RSV1 | OP_BINARY, &z, [1; 4]);
        let err = decode_all(&mut Decoder::new(1024, true), &input).unwrap_err();
        assert_eq!(err.status(), status::MESSAGE_TOO_BIG);
        // Garbage that is not deflate.
        let input = client_frame(FIN | RSV1 | OP_BINARY, &[0xff; 40], [1; 4]);
        let err = decode_all(&mut Decoder::new(1024, true), &input).unwrap_err();
        assert_eq!(err.status(), status::INVALID_PAYLOAD);
    }

    #[test]
    fn mask_offsets_compose() {
        let data: Vec<u8> = (0..=255u8).collect();
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        for cut in 0..data.len() {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut % 4);
            assert_eq!(parts, whole, "cut {cut}");
        }
    }
}

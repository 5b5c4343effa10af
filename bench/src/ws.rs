//! The client side of WebSocket (RFC 6455) as NATS clients over WebSocket
//! (nats.ws) use it: an HTTP/1.1 upgrade without subprotocol or extensions,
//! then binary frames carrying the NATS protocol byte stream. Client frames
//! are masked; server frames are not.
//!
//! Everything here is written from the RFC: a base64 encoder and SHA-1 for
//! the `Sec-WebSocket-Key`/`Sec-WebSocket-Accept` pair, a frame encoder that
//! masks a whole buffer in one pass over 64-bit words, and a streaming frame
//! decoder that copies data payloads straight into the caller's buffer
//! whatever way the frames were cut into reads.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The GUID RFC 6455 appends to the key before hashing it into the accept value.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Longest HTTP response head accepted in the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// A small non-cryptographic PRNG (splitmix64) for handshake keys and mask
/// keys, seeded from std's random hash keys, the clock and a counter.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut h = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
        Rng(h.finish())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A fresh 4-byte masking key.
    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

/// Standard base64 (RFC 4648, with `=` padding).
pub fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-1 (FIPS 180-4), only for checking `Sec-WebSocket-Accept`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    let mut w = [0u32; 80];
    for block in msg.chunks_exact(64) {
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (s, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (o, v) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// The `Sec-WebSocket-Accept` value a server must answer `key` with.
pub fn accept_key(key: &str) -> String {
    base64_encode(&sha1(format!("{key}{ACCEPT_GUID}").as_bytes()))
}

/// XORs `data` with `mask`, where `data[0]` is byte `offset` of the frame
/// payload. Works on 64-bit words; only the tail is done byte by byte.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let k: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// Appends one final (FIN) frame with `opcode` and `payload` to `out`,
/// masked with `mask` when given (clients must mask, servers must not).
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    out.reserve(len + 14);
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
    let at = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[at..], m, 0);
    }
}

/// A control frame the decoder met, in arrival order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer's close frame: status code (if any) and reason.
    Close(Option<u16>, String),
}

/// Streaming decoder of a WebSocket frame sequence. Data frames (binary,
/// text and their continuations) have their payloads appended to the
/// caller's buffer as bytes arrive; control frames become [`Event`]s.
#[derive(Default)]
pub struct Decoder {
    /// Header bytes gathered so far (a header is at most 14 bytes).
    hdr: [u8; 14],
    hdr_len: usize,
    /// Inside a frame's payload: its opcode, the bytes still to come, the
    /// mask key (server frames have none) and the payload offset.
    in_payload: bool,
    opcode: u8,
    remaining: u64,
    mask: Option<[u8; 4]>,
    offset: u64,
    /// A fragmented data message is in progress.
    in_message: bool,
    /// The payload of the current control frame.
    ctrl: Vec<u8>,
    /// A close frame was decoded; nothing after it is read.
    closed: bool,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.into())
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes `input`, appending data payload bytes to `data` and control
    /// frames to `events`. Any cut of the stream into `input`s gives the same
    /// result. Input after a close frame is ignored.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        data: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> io::Result<()> {
        while !input.is_empty() && !self.closed {
            if !self.in_payload {
                let used = self.header(input)?;
                input = &input[used..];
                if !self.in_payload {
                    break; // header incomplete: all input consumed
                }
                if self.remaining == 0 {
                    self.end_frame(events);
                }
                continue;
            }
            let take = self.remaining.min(input.len() as u64) as usize;
            let (chunk, rest) = input.split_at(take);
            input = rest;
            let dst = if self.opcode >= OP_CLOSE {
                &mut self.ctrl
            } else {
                &mut *data
            };
            let at = dst.len();
            dst.extend_from_slice(chunk);
            if let Some(m) = self.mask {
                apply_mask(&mut dst[at..], m, (self.offset % 4) as usize);
            }
            self.offset += take as u64;
            self.remaining -= take as u64;
            if self.remaining == 0 {
                self.end_frame(events);
            }
        }
        Ok(())
    }

    /// Gathers header bytes from `input`; once the header is whole, starts
    /// the frame. Returns how many bytes of `input` it used.
    fn header(&mut self, input: &[u8]) -> io::Result<usize> {
        let mut used = 0;
        loop {
            // Two bytes first: they tell how long the whole header is.
            let need = if self.hdr_len < 2 {
                2
            } else {
                let b1 = self.hdr[1];
                let ext = match b1 & 0x7F {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
            };
            if self.hdr_len == need {
                break;
            }
            let take = (need - self.hdr_len).min(input.len() - used);
            self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&input[used..used + take]);
            self.hdr_len += take;
            used += take;
            if self.hdr_len < need {
                return Ok(used);
            }
        }
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            return Err(bad(
                "WebSocket frame with RSV bits set (no extension was negotiated)",
            ));
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => (u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.hdr[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(bad("WebSocket frame length has its top bit set"));
        }
        self.mask = None;
        if b1 & 0x80 != 0 {
            self.mask = Some([
                self.hdr[at],
                self.hdr[at + 1],
                self.hdr[at + 2],
                self.hdr[at + 3],
            ]);
            at += 4;
        }
        debug_assert_eq!(at, self.hdr_len);
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin || len > 125 {
                    return Err(bad("fragmented or oversized WebSocket control frame"));
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.in_message {
                    return Err(bad("new WebSocket data frame inside a fragmented message"));
                }
                self.in_message = !fin;
            }
            OP_CONT => {
                if !self.in_message {
                    return Err(bad("WebSocket continuation frame without a message"));
                }
                self.in_message = !fin;
            }
            op => return Err(bad(format!("unknown WebSocket opcode {op:#x}"))),
        }
        self.hdr_len = 0;
        self.in_payload = true;
        self.opcode = opcode;
        self.remaining = len;
        self.offset = 0;
        self.ctrl.clear();
        Ok(used)
    }

    fn end_frame(&mut self, events: &mut Vec<Event>) {
        self.in_payload = false;
        match self.opcode {
            OP_PING => events.push(Event::Ping(std::mem::take(&mut self.ctrl))),
            OP_PONG => events.push(Event::Pong(std::mem::take(&mut self.ctrl))),
            OP_CLOSE => {
                let code = (self.ctrl.len() >= 2)
                    .then(|| u16::from_be_bytes([self.ctrl[0], self.ctrl[1]]));
                let reason =
                    String::from_utf8_lossy(self.ctrl.get(2..).unwrap_or_default()).into_owned();
                events.push(Event::Close(code, reason));
                self.closed = true;
            }
            _ => {}
        }
    }
}

/// Runs the HTTP upgrade on a fresh connection: sends the GET with a random
/// key, requires `101` and the matching `Sec-WebSocket-Accept`, and returns
/// whatever the server sent after the response head (the start of the frame
/// stream, typically the frame carrying `INFO`).
pub fn client_handshake(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    rng: &mut Rng,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    nonce[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let key = base64_encode(&nonce);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request.as_bytes())?;
    let deadline = Instant::now() + timeout;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(bad("WebSocket upgrade: response head too long"));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "WebSocket upgrade timed out",
            ));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "closed during the WebSocket upgrade{}",
                        if head.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", String::from_utf8_lossy(&head).trim_end())
                        }
                    ),
                ))
            }
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if crate::proto::is_timeout(&e) => {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "WebSocket upgrade timed out",
                ))
            }
            Err(e) => return Err(e),
        }
    };
    let text = String::from_utf8_lossy(&head[..head_end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(io::Error::other(format!(
            "WebSocket upgrade refused: {}",
            text.trim_end().replace("\r\n", " | ")
        )));
    }
    let accept = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim().to_string())
    });
    let want = accept_key(&key);
    match accept {
        Some(a) if a == want => {}
        Some(a) => {
            return Err(bad(format!(
                "WebSocket upgrade: Sec-WebSocket-Accept is {a}, expected {want}"
            )))
        }
        None => return Err(bad("WebSocket upgrade: no Sec-WebSocket-Accept header")),
    }
    Ok(head[head_end..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_accept_key() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(&[0xFB, 0xFF, 0xBF]), "+/+/");
        assert_eq!(
            base64_encode(b"the sample nonce"),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let hex = |d: [u8; 20]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(hex(sha1(long)), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    }

    #[test]
    fn mask_matches_bytewise_xor_at_any_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for offset in 0..4 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 1000] {
                let mut got = data[..len].to_vec();
                apply_mask(&mut got, mask, offset);
                let want: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(offset + i) % 4])
                    .collect();
                assert_eq!(got, want, "offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn encodes_7_16_and_64_bit_lengths() {
        let mask = [1, 2, 3, 4];
        for (len, hdr) in [
            (0, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (200_000, 10),
        ] {
            let payload = vec![0xAB; len];
            let mut out = Vec::new();
            encode_frame(&mut out, OP_BINARY, &payload, Some(mask));
            assert_eq!(out.len(), hdr + 4 + len, "len {len}");
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0x80);
            match hdr {
                2 => assert_eq!(usize::from(out[1] & 0x7F), len),
                4 => {
                    assert_eq!(out[1] & 0x7F, 126);
                    assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), len);
                }
                _ => {
                    assert_eq!(out[1] & 0x7F, 127);
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&out[2..10]);
                    assert_eq!(u64::from_be_bytes(b), len as u64);
                }
            }
            assert_eq!(&out[hdr..hdr + 4], &mask);
            assert!(out[hdr + 4..]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == 0xAB ^ mask[i % 4]));
            // Unmasked (server) framing.
            let mut out = Vec::new();
            encode_frame(&mut out, OP_BINARY, &payload, None);
            assert_eq!(out.len(), hdr + len);
            assert_eq!(out[1] & 0x80, 0);
            assert!(out[hdr..].iter().all(|&b| b == 0xAB));
        }
    }

    fn decode_all(chunks: &[&[u8]]) -> io::Result<(Vec<u8>, Vec<Event>)> {
        let mut dec = Decoder::new();
        let (mut data, mut events) = (Vec::new(), Vec::new());
        for c in chunks {
            dec.feed(c, &mut data, &mut events)?;
        }
        Ok((data, events))
    }

    /// A stream of server and client frames of every length class, a ping,
    /// a pong and an empty frame, ending with a close.
    fn sample_stream() -> (Vec<u8>, Vec<u8>, Vec<Event>) {
        let mut rng = Rng::new();
        let mut wire = Vec::new();
        let mut data = Vec::new();
        let payloads: Vec<Vec<u8>> = [3usize, 0, 125, 126, 1000, 65535, 65536, 70_000]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        for (i, p) in payloads.iter().enumerate() {
            let mask = (i % 2 == 1).then(|| rng.mask());
            encode_frame(&mut wire, OP_BINARY, p, mask);
            data.extend_from_slice(p);
            if i == 2 {
                encode_frame(&mut wire, OP_PING, b"hi", Some(rng.mask()));
            }
            if i == 4 {
                encode_frame(&mut wire, OP_PONG, b"", None);
            }
        }
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        encode_frame(&mut wire, OP_CLOSE, &close, None);
        encode_frame(&mut wire, OP_BINARY, b"after close", None);
        let events = vec![
            Event::Ping(b"hi".to_vec()),
            Event::Pong(Vec::new()),
            Event::Close(Some(1000), "bye".into()),
        ];
        (wire, data, events)
    }

    #[test]
    fn decodes_several_frames_in_one_buffer() {
        let (wire, data, events) = sample_stream();
        let (got, ev) = decode_all(&[&wire]).unwrap();
        assert_eq!(got, data);
        assert_eq!(ev, events);
    }

    #[test]
    fn decodes_frames_split_at_every_byte() {
        // Small frames (7-bit and 16-bit lengths plus control frames), cut in two at every offset.
        let mut rng = Rng::new();
        let mut wire = Vec::new();
        let mut data = Vec::new();
        for (i, n) in [5usize, 126, 300, 0, 125].into_iter().enumerate() {
            let p: Vec<u8> = (0..n).map(|j| (j + i) as u8).collect();
            encode_frame(&mut wire, OP_BINARY, &p, (i % 2 == 0).then(|| rng.mask()));
            data.extend_from_slice(&p);
            encode_frame(&mut wire, OP_PING, &[i as u8; 3], None);
        }
        let pings: Vec<Event> = (0..5u8).map(|i| Event::Ping(vec![i; 3])).collect();
        for cut in 0..=wire.len() {
            let (got, ev) = decode_all(&[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!(got, data, "cut at {cut}");
            assert_eq!(ev, pings, "cut at {cut}");
        }
        // Every byte on its own, and the large sample in odd-sized pieces.
        let one_by_one: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&one_by_one).unwrap(), (data, pings));
        let (wire, data, events) = sample_stream();
        for size in [1, 2, 3, 13, 4096, 65_537] {
            let pieces: Vec<&[u8]> = wire.chunks(size).collect();
            let (got, ev) = decode_all(&pieces).unwrap();
            assert_eq!(got, data, "pieces of {size}");
            assert_eq!(ev, events, "pieces of {size}");
        }
        // A 64-bit length header cut at every byte.
        let p = vec![7u8; 70_000];
        let mut wire = Vec::new();
        encode_frame(&mut wire, OP_BINARY, &p, Some([9, 8, 7, 6]));
        for cut in 0..16 {
            let (got, _) = decode_all(&[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!(got, p, "cut at {cut}");
        }
    }

    #[test]
    fn decodes_fragmented_messages_and_rejects_bad_frames() {
        // Binary "ab" + continuation "cd" (FIN) + text "e".
        let wire = [0x02, 2, b'a', b'b', 0x80, 2, b'c', b'd', 0x81, 1, b'e'];
        assert_eq!(decode_all(&[&wire]).unwrap().0, b"abcde");
        for bad in [
            &[0xC2, 0][..],       // RSV1 (compression) set
            &[0x83, 0],           // reserved opcode
            &[0x80, 0],           // continuation without a message
            &[0x09, 0],           // fragmented ping
            &[0x89, 126, 0, 126], // ping longer than 125
            &[0x02, 0, 0x82, 0],  // new message inside a fragmented one
        ] {
            assert!(decode_all(&[bad]).is_err(), "{bad:?}");
        }
    }
}

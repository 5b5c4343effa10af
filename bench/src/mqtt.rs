//! Minimal blocking MQTT client plumbing (3.1.1, optionally 5.0): the few
//! packets the bench needs (CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH,
//! PUBACK, PINGREQ/PINGRESP, DISCONNECT), an allocation-free packet scanner
//! over a reusable read buffer, and a connection type that answers QoS 1
//! deliveries with PUBACKs.

use crate::proto::{dial, fill_buf, is_timeout, write_until, Fill, POLL_TICK};
use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Protocol level of MQTT 3.1.1.
pub const V311: u8 = 4;
/// Protocol level of MQTT 5.0.
pub const V5: u8 = 5;

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// DISCONNECT; in 5.0 a zero remaining length means reason 0x00 (normal).
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// Largest packet the scanner accepts before judging the peer broken.
const MAX_PACKET: usize = 64 << 20;

/// How long CONNECT/CONNACK and SUBSCRIBE/SUBACK may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A decoded server packet, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    ConnAck {
        code: u8,
        /// 5.0 Receive Maximum: how many QoS 1/2 PUBLISHes we may have unacknowledged.
        receive_max: Option<u16>,
        /// 5.0 Server Keep Alive, overriding the one we asked for.
        server_keepalive: Option<u16>,
    },
    Publish {
        qos: u8,
        dup: bool,
        packet_id: u16,
        topic: &'a [u8],
        payload: &'a [u8],
    },
    PubAck {
        packet_id: u16,
        reason: u8,
    },
    SubAck {
        packet_id: u16,
        codes: &'a [u8],
    },
    PingResp,
    Disconnect {
        reason: u8,
    },
    /// Anything else (its packet type, the high nibble of the first byte).
    Other(u8),
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.into())
}

/// Appends an MQTT variable byte integer.
pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Decodes a variable byte integer: `Ok(None)` if `b` ends before it does,
/// else the value and its length in bytes.
pub fn get_varint(b: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let mut n = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        n |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((n, i + 1)));
        }
    }
    Err(bad("variable byte integer longer than 4 bytes"))
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Appends a packet: first byte, remaining length, then `body`.
fn put_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    put_varint(out, body.len());
    out.extend_from_slice(body);
}

/// The session a CONNECT asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// 3.1.1 clean session; 5.0 clean start with session expiry 0: the
    /// server forgets the session when the connection ends.
    Clean,
    /// A session that outlives the connection: 3.1.1 `clean_session=0`
    /// (resuming whatever the server kept for this client id); 5.0 clean
    /// start (any old session is discarded) with Session Expiry Interval
    /// `expiry` seconds, which must be above 0.
    Persistent { expiry: u32 },
}

/// Appends a CONNECT (no will, no user name/password) asking for `session`.
pub fn connect(out: &mut Vec<u8>, version: u8, client_id: &str, keepalive: u16, session: Session) {
    let mut body = Vec::with_capacity(24 + client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(version);
    // Connect flags: bit 1 is clean session (3.1.1) / clean start (5.0).
    let persistent_v311 = version < V5 && matches!(session, Session::Persistent { .. });
    body.push(if persistent_v311 { 0x00 } else { 0x02 });
    body.extend_from_slice(&keepalive.to_be_bytes());
    if version >= V5 {
        // Receive Maximum stays at its default, 65535.
        match session {
            Session::Clean => body.push(0), // no properties: session expiry 0
            Session::Persistent { expiry } => {
                body.push(5);
                body.push(0x11); // Session Expiry Interval
                body.extend_from_slice(&expiry.to_be_bytes());
            }
        }
    }
    put_str(&mut body, client_id.as_bytes());
    put_packet(out, 0x10, &body);
}

/// Appends a SUBSCRIBE for one topic filter.
pub fn subscribe(out: &mut Vec<u8>, version: u8, packet_id: u16, filter: &str, qos: u8) {
    let mut body = Vec::with_capacity(8 + filter.len());
    body.extend_from_slice(&packet_id.to_be_bytes());
    if version >= V5 {
        body.push(0); // no properties
    }
    put_str(&mut body, filter.as_bytes());
    body.push(qos & 0x03); // 5.0: no-local, retain-as-published, retain handling all 0
    put_packet(out, 0x82, &body);
}

/// Appends a PUBLISH (no DUP, no RETAIN). For QoS > 0 returns the offset of
/// the 2-byte packet id inside `out`, so that a template can be re-stamped.
pub fn publish(
    out: &mut Vec<u8>,
    version: u8,
    topic: &str,
    qos: u8,
    packet_id: u16,
    payload: &[u8],
) -> Option<usize> {
    let props = usize::from(version >= V5);
    let id_len = if qos > 0 { 2 } else { 0 };
    let remaining = 2 + topic.len() + id_len + props + payload.len();
    out.push(0x30 | (qos & 0x03) << 1);
    put_varint(out, remaining);
    put_str(out, topic.as_bytes());
    let id_at = (qos > 0).then(|| {
        let at = out.len();
        out.extend_from_slice(&packet_id.to_be_bytes());
        at
    });
    if props > 0 {
        out.push(0);
    }
    out.extend_from_slice(payload);
    id_at
}

/// Appends a PUBACK (success; in 5.0 the reason code may be omitted).
pub fn puback(out: &mut Vec<u8>, packet_id: u16) {
    out.extend_from_slice(&[0x40, 0x02]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

fn get_u16(b: &[u8], at: usize) -> io::Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| bad("packet too short"))
}

/// Splits a 5.0 property block off the front of `b`: (properties, rest).
fn split_props(b: &[u8]) -> io::Result<(&[u8], &[u8])> {
    let (len, n) = get_varint(b)?.ok_or_else(|| bad("truncated properties"))?;
    let end = n + len;
    if end > b.len() {
        return Err(bad("properties longer than the packet"));
    }
    Ok((&b[n..end], &b[end..]))
}

/// Finds the 2-byte property `id` in a 5.0 property block (None if absent
/// or behind a property this scanner does not know).
fn prop_u16(mut props: &[u8], want: u8) -> Option<u16> {
    while let Some((&id, rest)) = props.split_first() {
        let str_len = |at: usize| -> Option<usize> {
            rest.get(at..at + 2)
                .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])) + 2)
        };
        let width = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => str_len(0)?,
            0x26 => {
                let k = str_len(0)?;
                k + str_len(k)?
            }
            0x0B => get_varint(rest).ok()??.1,
            _ => return None,
        };
        if id == want && width == 2 {
            return get_u16(rest, 0).ok();
        }
        props = rest.get(width..)?;
    }
    None
}

/// Decodes the packet at the front of `b`: `Ok(None)` if it is not complete
/// yet, else the packet and the number of bytes it occupies.
pub fn parse(b: &[u8], version: u8) -> io::Result<Option<(Packet<'_>, usize)>> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    let Some((len, n)) = get_varint(&b[1..])? else {
        return Ok(None);
    };
    if len > MAX_PACKET {
        return Err(bad(format!("packet of {len} bytes")));
    }
    let total = 1 + n + len;
    if b.len() < total {
        return Ok(None);
    }
    let body = &b[1 + n..total];
    let v5 = version >= V5;
    let packet = match first >> 4 {
        2 => {
            let code = *body.get(1).ok_or_else(|| bad("short CONNACK"))?;
            let (mut receive_max, mut server_keepalive) = (None, None);
            if v5 && body.len() > 2 {
                let (props, _) = split_props(&body[2..])?;
                receive_max = prop_u16(props, 0x21);
                server_keepalive = prop_u16(props, 0x13);
            }
            Packet::ConnAck {
                code,
                receive_max,
                server_keepalive,
            }
        }
        3 => {
            let qos = (first >> 1) & 0x03;
            let tlen = usize::from(get_u16(body, 0)?);
            let topic = body
                .get(2..2 + tlen)
                .ok_or_else(|| bad("PUBLISH topic longer than the packet"))?;
            let mut rest = &body[2 + tlen..];
            let mut packet_id = 0;
            if qos > 0 {
                packet_id = get_u16(rest, 0)?;
                rest = &rest[2..];
            }
            if v5 {
                rest = split_props(rest)?.1;
            }
            Packet::Publish {
                qos,
                dup: first & 0x08 != 0,
                packet_id,
                topic,
                payload: rest,
            }
        }
        4 => Packet::PubAck {
            packet_id: get_u16(body, 0)?,
            reason: body.get(2).copied().unwrap_or(0),
        },
        9 => {
            let packet_id = get_u16(body, 0)?;
            let mut codes = &body[2..];
            if v5 {
                codes = split_props(codes)?.1;
            }
            Packet::SubAck { packet_id, codes }
        }
        13 => Packet::PingResp,
        14 => Packet::Disconnect {
            reason: body.first().copied().unwrap_or(0),
        },
        t => Packet::Other(t),
    };
    Ok(Some((packet, total)))
}

/// What the server granted in its CONNACK.
#[derive(Debug, Clone, Copy)]
pub struct Granted {
    /// Unacknowledged QoS 1 PUBLISHes the server accepts (65535 unless 5.0 says otherwise).
    pub receive_max: u16,
    pub server_keepalive: Option<u16>,
}

/// Sends the prepared CONNECT packet on a fresh stream and waits for the
/// CONNACK. `scratch` is caller-owned so that opening thousands of
/// connections allocates nothing per connection; on success it holds any
/// bytes the server sent after the CONNACK.
pub fn handshake(
    stream: &mut TcpStream,
    scratch: &mut Vec<u8>,
    connect: &[u8],
    version: u8,
    timeout: Duration,
) -> io::Result<Granted> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    io::Write::write_all(stream, connect)?;
    scratch.clear();
    let mut chunk = [0u8; 512];
    loop {
        if let Some((p, used)) = parse(scratch, version)? {
            let granted = match p {
                Packet::ConnAck {
                    code: 0,
                    receive_max,
                    server_keepalive,
                } => Granted {
                    receive_max: receive_max.unwrap_or(u16::MAX).max(1),
                    server_keepalive,
                },
                Packet::ConnAck { code, .. } => {
                    return Err(io::Error::other(format!(
                        "CONNACK refused the connection: code 0x{code:02x}"
                    )))
                }
                Packet::Disconnect { reason } => {
                    return Err(io::Error::other(format!(
                        "server sent DISCONNECT 0x{reason:02x} instead of CONNACK"
                    )))
                }
                other => {
                    return Err(bad(format!("expected CONNACK, got {other:?}")));
                }
            };
            scratch.drain(..used);
            return Ok(granted);
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "closed before CONNACK",
                ))
            }
            Ok(n) => scratch.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {
                return Err(io::Error::new(ErrorKind::TimedOut, "no CONNACK in time"))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A client connection with its own read buffer and packet scanner. QoS 1
/// deliveries are acknowledged: [`MqttConn::process`] queues a PUBACK for
/// each and [`MqttConn::flush`] sends them.
pub struct MqttConn {
    pub stream: TcpStream,
    pub version: u8,
    pub granted: Granted,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes waiting to be written (PUBACKs, PINGREQ).
    out: Vec<u8>,
    /// PUBACKs received for our QoS 1 PUBLISHes.
    pub pubacks: u64,
    /// PUBACKs with a failure reason code (5.0 only: >= 0x80).
    pub puback_failures: u64,
    pub pingresps: u64,
    /// Codes of the last SUBACK.
    pub suback: Option<Vec<u8>>,
    /// Why the server hung up, if it said so (DISCONNECT).
    pub disconnect: Option<String>,
    keepalive: u16,
    last_write: Instant,
}

impl MqttConn {
    /// Connects and waits for the CONNACK; `buf_size` is the initial read buffer.
    pub fn open(
        addr: &SocketAddr,
        version: u8,
        client_id: &str,
        keepalive: u16,
        session: Session,
        buf_size: usize,
    ) -> io::Result<MqttConn> {
        let mut stream = dial(addr)?;
        let mut packet = Vec::with_capacity(64);
        connect(&mut packet, version, client_id, keepalive, session);
        let mut scratch = Vec::with_capacity(1024);
        let granted = handshake(
            &mut stream,
            &mut scratch,
            &packet,
            version,
            HANDSHAKE_TIMEOUT,
        )?;
        stream.set_read_timeout(Some(POLL_TICK))?;
        stream.set_write_timeout(Some(POLL_TICK))?;
        let mut buf = vec![0; buf_size.max(4096).max(scratch.len())];
        buf[..scratch.len()].copy_from_slice(&scratch);
        Ok(MqttConn {
            stream,
            version,
            keepalive: granted.server_keepalive.unwrap_or(keepalive),
            granted,
            end: scratch.len(),
            buf,
            start: 0,
            out: Vec::with_capacity(16 * 1024),
            pubacks: 0,
            puback_failures: 0,
            pingresps: 0,
            suback: None,
            disconnect: None,
            last_write: Instant::now(),
        })
    }

    /// Reads once into the buffer (waiting at most [`POLL_TICK`], or not at
    /// all on a non-blocking socket).
    pub fn fill(&mut self) -> io::Result<Fill> {
        fill_buf(
            &mut self.stream,
            &mut self.buf,
            &mut self.start,
            &mut self.end,
        )
    }

    /// Reads whatever has already arrived without waiting.
    pub fn fill_now(&mut self) -> io::Result<Fill> {
        self.stream.set_nonblocking(true)?;
        let r = self.fill();
        self.stream.set_nonblocking(false)?;
        r
    }

    /// Consumes every complete packet in the buffer, calling `on_publish`
    /// with (QoS, payload) for each PUBLISH and queueing PUBACKs for QoS 1.
    /// Returns the number of PUBLISHes. A server DISCONNECT is an error.
    pub fn process<F: FnMut(u8, &[u8])>(&mut self, mut on_publish: F) -> io::Result<u64> {
        let mut n = 0;
        while let Some((p, used)) = parse(&self.buf[self.start..self.end], self.version)? {
            match p {
                Packet::Publish {
                    qos,
                    packet_id,
                    payload,
                    ..
                } => {
                    n += 1;
                    on_publish(qos, payload);
                    if qos == 1 {
                        puback(&mut self.out, packet_id);
                    } else if qos > 1 {
                        return Err(bad("QoS 2 PUBLISH: the bench never subscribes at QoS 2"));
                    }
                }
                Packet::PubAck { reason, .. } => {
                    self.pubacks += 1;
                    if reason >= 0x80 {
                        self.puback_failures += 1;
                    }
                }
                Packet::PingResp => self.pingresps += 1,
                Packet::SubAck { codes, .. } => self.suback = Some(codes.to_vec()),
                Packet::Disconnect { reason } => {
                    let why = format!("server sent DISCONNECT, reason 0x{reason:02x}");
                    self.disconnect = Some(why.clone());
                    return Err(io::Error::new(ErrorKind::ConnectionAborted, why));
                }
                Packet::ConnAck { .. } => return Err(bad("unexpected second CONNACK")),
                Packet::Other(t) => return Err(bad(format!("unexpected packet type {t}"))),
            }
            self.start += used;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(n)
    }

    /// Writes the queued PUBACKs (and a PINGREQ when the keep alive needs one).
    pub fn flush(&mut self, deadline: Instant) -> io::Result<()> {
        if self.keepalive > 0
            && self.last_write.elapsed() >= Duration::from_secs(u64::from(self.keepalive)) / 2
        {
            self.out.extend_from_slice(&PINGREQ);
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let r = write_until(&mut self.stream, &self.out, deadline);
        self.out.clear();
        self.last_write = Instant::now();
        r
    }

    /// Writes `data` (e.g. PUBLISHes) until done or `deadline`.
    pub fn send(&mut self, data: &[u8], deadline: Instant) -> io::Result<()> {
        self.last_write = Instant::now();
        write_until(&mut self.stream, data, deadline)
    }

    /// Reads and processes until `done(self)` holds, handing PUBLISHes to
    /// `on_publish`. Fails on `deadline` or when the server hangs up.
    pub fn wait_for<D, F>(
        &mut self,
        deadline: Instant,
        what: &str,
        done: D,
        mut on_publish: F,
    ) -> io::Result<()>
    where
        D: Fn(&MqttConn) -> bool,
        F: FnMut(u8, &[u8]),
    {
        while !done(self) {
            match self.fill()? {
                Fill::Eof => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("server closed the connection while waiting for {what}"),
                    ))
                }
                Fill::Idle if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        format!("no {what} before the deadline"),
                    ))
                }
                _ => {}
            }
            self.process(&mut on_publish)?;
            self.flush(deadline)?;
        }
        Ok(())
    }

    /// Subscribes to one filter and waits for the SUBACK; returns the granted QoS.
    pub fn subscribe(&mut self, filter: &str, qos: u8, deadline: Instant) -> io::Result<u8> {
        let mut packet = Vec::with_capacity(16 + filter.len());
        subscribe(&mut packet, self.version, 1, filter, qos);
        self.suback = None;
        self.send(&packet, deadline)?;
        let deadline = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
        self.wait_for(deadline, "SUBACK", |c| c.suback.is_some(), |_, _| {})?;
        match self.suback.as_deref() {
            Some([code]) if *code < 0x80 => Ok(*code),
            Some(codes) => Err(io::Error::other(format!(
                "SUBSCRIBE {filter} refused: SUBACK codes {codes:02x?}"
            ))),
            None => unreachable!("wait_for returned without a SUBACK"),
        }
    }

    /// PINGREQ, then reads (discarding PUBLISHes) until the PINGRESP.
    pub fn ping(&mut self, deadline: Instant) -> io::Result<()> {
        let want = self.pingresps + 1;
        self.send(&PINGREQ, deadline)?;
        self.wait_for(deadline, "PINGRESP", |c| c.pingresps >= want, |_, _| {})
    }

    /// Sends DISCONNECT, ignoring errors (the connection is being dropped).
    pub fn disconnect(&mut self) {
        let _ = self.flush(Instant::now() + POLL_TICK);
        let _ = write_until(&mut self.stream, &DISCONNECT, Instant::now() + POLL_TICK);
    }
}

/// Parses `--mqtt-version`: 3.1.1 (level 4) or 5.
pub fn parse_version(s: &str) -> Option<u8> {
    match s {
        "3.1.1" | "311" | "4" => Some(V311),
        "5" | "5.0" => Some(V5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, n);
            assert_eq!(get_varint(&b).unwrap(), Some((n, b.len())));
            assert_eq!(get_varint(&b[..b.len() - 1]).unwrap(), None);
        }
        assert!(get_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
    }

    #[test]
    fn connect_bytes() {
        let mut b = Vec::new();
        connect(&mut b, V311, "ab", 30, Session::Clean);
        assert_eq!(
            b,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'a', b'b']
        );
        b.clear();
        connect(&mut b, V5, "", 0, Session::Clean);
        assert_eq!(
            b,
            [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn connect_persistent_bytes() {
        let persistent = Session::Persistent { expiry: 3600 };
        // 3.1.1: clean session flag cleared, nothing else changes.
        let mut b = Vec::new();
        connect(&mut b, V311, "ab", 30, persistent);
        assert_eq!(
            b,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 30, 0, 2, b'a', b'b']
        );
        // 5.0: clean start stays set, Session Expiry Interval (0x11) = 3600.
        b.clear();
        connect(&mut b, V5, "ab", 0, persistent);
        assert_eq!(
            b,
            [
                0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 5, 0x11, 0, 0, 0x0E, 0x10,
                0, 2, b'a', b'b'
            ]
        );
        // The flags byte is the 10th byte in both; the remaining length is exact.
        for version in [V311, V5] {
            b.clear();
            connect(&mut b, version, "bench-sub-0", 0, persistent);
            let (len, n) = get_varint(&b[1..]).unwrap().unwrap();
            assert_eq!(1 + n + len, b.len());
            assert_eq!(b[9] & 0x02 != 0, version == V5);
        }
    }

    #[test]
    fn publish_round_trip() {
        for version in [V311, V5] {
            for qos in [0, 1] {
                let mut b = Vec::new();
                let at = publish(&mut b, version, "a/b", qos, 7, b"hello");
                assert_eq!(at.is_some(), qos == 1);
                if let Some(at) = at {
                    b[at..at + 2].copy_from_slice(&9u16.to_be_bytes());
                }
                let (p, used) = parse(&b, version).unwrap().unwrap();
                assert_eq!(used, b.len());
                assert_eq!(
                    p,
                    Packet::Publish {
                        qos,
                        dup: false,
                        packet_id: if qos == 1 { 9 } else { 0 },
                        topic: b"a/b",
                        payload: b"hello"
                    }
                );
                assert_eq!(parse(&b[..b.len() - 1], version).unwrap(), None);
            }
        }
    }

    #[test]
    fn server_packets() {
        assert_eq!(
            parse(&[0x20, 2, 0, 0], V311).unwrap().unwrap().0,
            Packet::ConnAck {
                code: 0,
                receive_max: None,
                server_keepalive: None
            }
        );
        // 5.0 CONNACK: Topic Alias Maximum 10, Receive Maximum 20, Server Keep Alive 60.
        let connack = [0x20, 12, 0, 0, 9, 0x22, 0, 10, 0x21, 0, 20, 0x13, 0, 60];
        assert_eq!(
            parse(&connack, V5).unwrap().unwrap(),
            (
                Packet::ConnAck {
                    code: 0,
                    receive_max: Some(20),
                    server_keepalive: Some(60)
                },
                14
            )
        );
        assert_eq!(
            parse(&[0x90, 3, 0, 1, 1], V311).unwrap().unwrap().0,
            Packet::SubAck {
                packet_id: 1,
                codes: &[1]
            }
        );
        assert_eq!(
            parse(&[0x90, 4, 0, 1, 0, 0x80], V5).unwrap().unwrap().0,
            Packet::SubAck {
                packet_id: 1,
                codes: &[0x80]
            }
        );
        assert_eq!(
            parse(&[0x40, 2, 1, 2], V311).unwrap().unwrap().0,
            Packet::PubAck {
                packet_id: 0x102,
                reason: 0
            }
        );
        assert_eq!(
            parse(&[0xD0, 0], V311).unwrap().unwrap().0,
            Packet::PingResp
        );
        assert_eq!(
            parse(&[0xE0, 1, 0x8E], V5).unwrap().unwrap().0,
            Packet::Disconnect { reason: 0x8E }
        );
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("3.1.1"), Some(V311));
        assert_eq!(parse_version("5"), Some(V5));
        assert_eq!(parse_version("3"), None);
    }
}

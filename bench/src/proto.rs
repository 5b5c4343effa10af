//! Minimal blocking NATS client-protocol plumbing: handshake, a reusable
//! read buffer with an allocation-free frame scanner, and deadline-aware
//! writes, over plain TCP or over WebSocket (see [`crate::ws`]).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::ws;

/// Longest control line (INFO included) accepted before the peer is judged broken.
const MAX_CONTROL_LINE: usize = 1 << 20;

/// How long one blocking read or write may wait before the caller gets a
/// chance to look at its deadline.
pub const POLL_TICK: Duration = Duration::from_millis(100);

/// A delivered message, borrowed from the connection's read buffer.
pub struct Msg<'a> {
    /// `MSG` arguments between the verb and the CRLF: `<subject> <sid> [reply] <len>`.
    pub args: &'a [u8],
    /// The payload (for `HMSG`, headers and payload together).
    pub payload: &'a [u8],
    /// True for `HMSG` frames.
    pub hmsg: bool,
}

impl Msg<'_> {
    /// Subject and reply subject (if any) of a plain `MSG`.
    pub fn subject_reply(&self) -> (&[u8], Option<&[u8]>) {
        let mut toks = self.args.split(|&b| b == b' ').filter(|t| !t.is_empty());
        let subject = toks.next().unwrap_or_default();
        let _sid = toks.next();
        let third = toks.next();
        let fourth = toks.next();
        let fifth = toks.next();
        // MSG: subject sid [reply] len; HMSG: subject sid [reply] hdr_len total_len.
        let reply = if self.hmsg {
            fifth.and(third)
        } else {
            fourth.and(third)
        };
        (subject, reply)
    }
}

/// Outcome of one read attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// Bytes arrived.
    Data,
    /// The read timed out ([`POLL_TICK`]); nothing arrived.
    Idle,
    /// The server closed the connection.
    Eof,
}

/// How a [`Conn`] carries the NATS protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The NATS protocol straight on TCP.
    Tcp,
    /// NATS over WebSocket as nats.ws speaks it: an HTTP upgrade on `/`
    /// without subprotocol, then binary frames; every write is one frame.
    Ws,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }

    /// Tag for the human-readable line: empty for TCP, " over WebSocket" otherwise.
    pub fn suffix(self) -> &'static str {
        match self {
            Transport::Tcp => "",
            Transport::Ws => " over WebSocket",
        }
    }
}

/// The user and password every connection presents (`--user`, `--pass`), if any.
pub static CREDENTIALS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// The `CONNECT` line every connection of the bench sends.
pub fn connect_line(name: &str) -> String {
    let creds = match CREDENTIALS.get() {
        Some((u, p)) => format!(",\"user\":{},\"pass\":{}", json_string(u), json_string(p)),
        None => String::new(),
    };
    format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\
         \"echo\":true,\"protocol\":1,\"tls_required\":false,\"lang\":\"rust\",\
         \"version\":\"{}\",\"name\":\"{}\"{creds}}}\r\n",
        env!("CARGO_PKG_VERSION"),
        name
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Opens a TCP connection with `TCP_NODELAY` set.
pub fn dial(addr: &SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs the client handshake on a fresh stream: waits for `INFO`, sends
/// `CONNECT` and `PING`, and returns once the matching `PONG` arrived.
///
/// `scratch` is a caller-owned buffer reused across connections so that a
/// thread opening thousands of connections allocates nothing per connection.
pub fn handshake(
    stream: &mut TcpStream,
    scratch: &mut Vec<u8>,
    connect: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    scratch.clear();
    let mut sent_connect = false;
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "closed in handshake",
                ))
            }
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                return Err(io::Error::new(ErrorKind::TimedOut, "handshake timed out"))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        scratch.extend_from_slice(&chunk[..n]);
        while let Some(nl) = find_nl(scratch) {
            let line = trim_cr(&scratch[..nl]);
            if starts_with_ci(line, b"INFO") {
                if !sent_connect {
                    sent_connect = true;
                    let mut out = Vec::with_capacity(connect.len() + 6);
                    out.extend_from_slice(connect);
                    out.extend_from_slice(b"PING\r\n");
                    stream.write_all(&out)?;
                }
            } else if starts_with_ci(line, b"PONG") {
                if sent_connect {
                    scratch.clear();
                    return Ok(());
                }
            } else if starts_with_ci(line, b"PING") {
                stream.write_all(b"PONG\r\n")?;
            } else if starts_with_ci(line, b"-ERR") {
                return Err(io::Error::other(format!(
                    "server error in handshake: {}",
                    String::from_utf8_lossy(line)
                )));
            }
            scratch.drain(..=nl);
        }
        if scratch.len() > MAX_CONTROL_LINE {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "control line too long",
            ));
        }
    }
}

/// A client connection with its own read buffer and protocol scanner.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pongs: u64,
    /// Last `-ERR` the server sent, if any.
    pub last_err: Option<String>,
    /// WebSocket framing state; `None` on plain TCP.
    ws: Option<Box<WsState>>,
}

/// The WebSocket side of a [`Conn`]: raw frames are read into `raw` and
/// their payloads decoded into the connection's NATS buffer.
struct WsState {
    decoder: ws::Decoder,
    raw: Vec<u8>,
    out: Vec<u8>,
    rng: ws::Rng,
    events: Vec<ws::Event>,
    closed: bool,
}

impl Conn {
    /// Connects and completes the handshake; `buf_size` is the initial read buffer.
    pub fn open(
        addr: &SocketAddr,
        transport: Transport,
        name: &str,
        buf_size: usize,
    ) -> io::Result<Conn> {
        let mut stream = dial(addr)?;
        let connect = connect_line(name);
        let timeout = Duration::from_secs(10);
        if transport == Transport::Ws {
            let mut rng = ws::Rng::new();
            let early =
                ws::client_handshake(&mut stream, &addr.to_string(), "/", &mut rng, timeout)?;
            stream.set_read_timeout(Some(POLL_TICK))?;
            stream.set_write_timeout(Some(POLL_TICK))?;
            let size = buf_size.max(4096);
            let mut conn = Conn {
                stream,
                buf: Vec::with_capacity(size),
                start: 0,
                end: 0,
                pongs: 0,
                last_err: None,
                ws: Some(Box::new(WsState {
                    decoder: ws::Decoder::new(),
                    raw: vec![0; size],
                    out: Vec::with_capacity(size),
                    rng,
                    events: Vec::new(),
                    closed: false,
                })),
            };
            let deadline = Instant::now() + timeout;
            conn.absorb(&early)?;
            conn.wait_info(deadline)?;
            conn.send(connect.as_bytes(), deadline)?;
            conn.ping_pong(deadline)?;
            return Ok(conn);
        }
        let mut scratch = Vec::with_capacity(1024);
        handshake(&mut stream, &mut scratch, connect.as_bytes(), timeout)?;
        stream.set_read_timeout(Some(POLL_TICK))?;
        stream.set_write_timeout(Some(POLL_TICK))?;
        Ok(Conn {
            stream,
            buf: vec![0; buf_size.max(4096)],
            start: 0,
            end: 0,
            pongs: 0,
            last_err: None,
            ws: None,
        })
    }

    /// Waits for the server's `INFO` line (WebSocket handshake) and consumes it.
    fn wait_info(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some(nl) = find_nl(avail) {
                let line = trim_cr(&avail[..nl]);
                if starts_with_ci(line, b"INFO") {
                    self.start += nl + 1;
                    return Ok(());
                }
                return Err(io::Error::other(format!(
                    "expected INFO, got: {}",
                    String::from_utf8_lossy(line)
                )));
            }
            if avail.len() > MAX_CONTROL_LINE {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "control line too long",
                ));
            }
            match self.fill()? {
                Fill::Eof => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "closed before INFO",
                    ))
                }
                Fill::Idle if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "no INFO before deadline",
                    ))
                }
                _ => {}
            }
        }
    }

    /// Writes `data` (any number of whole or partial protocol operations)
    /// until done or `deadline`; over WebSocket as one masked binary frame.
    pub fn send(&mut self, data: &[u8], deadline: Instant) -> io::Result<()> {
        match &mut self.ws {
            None => write_until(&mut self.stream, data, deadline),
            Some(w) => {
                w.out.clear();
                let mask = w.rng.mask();
                ws::encode_frame(&mut w.out, ws::OP_BINARY, data, Some(mask));
                write_until(&mut self.stream, &w.out, deadline)
            }
        }
    }

    /// Reads once into the buffer (waiting at most [`POLL_TICK`]).
    pub fn fill(&mut self) -> io::Result<Fill> {
        if self.ws.is_none() {
            return fill_buf(
                &mut self.stream,
                &mut self.buf,
                &mut self.start,
                &mut self.end,
            );
        }
        let w = self.ws.as_mut().expect("WebSocket state");
        if w.closed {
            return Ok(Fill::Eof);
        }
        let n = loop {
            match self.stream.read(&mut w.raw) {
                Ok(0) => return Ok(Fill::Eof),
                Ok(n) => break n,
                Err(e) if is_timeout(&e) => return Ok(Fill::Idle),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if is_disconnect(&e) => return Ok(Fill::Eof),
                Err(e) => return Err(e),
            }
        };
        let mut raw = std::mem::take(&mut w.raw);
        let pending = self.end - self.start;
        let r = self.absorb(&raw[..n]);
        let w = self.ws.as_mut().expect("WebSocket state");
        std::mem::swap(&mut w.raw, &mut raw);
        r?;
        // Data that came just before a close frame is still handed over; the
        // next fill reports the end.
        let got_data = self.end - self.start > pending;
        Ok(if w.closed && !got_data {
            Fill::Eof
        } else {
            Fill::Data
        })
    }

    /// Decodes raw WebSocket bytes into the NATS buffer and answers control
    /// frames: a ping with its pong, a close with a close.
    fn absorb(&mut self, raw: &[u8]) -> io::Result<()> {
        let w = self.ws.as_mut().expect("WebSocket state");
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.truncate(self.end);
        w.decoder.feed(raw, &mut self.buf, &mut w.events)?;
        self.end = self.buf.len();
        if w.events.is_empty() {
            return Ok(());
        }
        let mut events = std::mem::take(&mut w.events);
        let deadline = Instant::now() + Duration::from_secs(5);
        for ev in events.drain(..) {
            let w = self.ws.as_mut().expect("WebSocket state");
            w.out.clear();
            let mask = Some(w.rng.mask());
            match ev {
                ws::Event::Ping(p) => ws::encode_frame(&mut w.out, ws::OP_PONG, &p, mask),
                ws::Event::Pong(_) => continue,
                ws::Event::Close(code, reason) => {
                    w.closed = true;
                    self.last_err.get_or_insert_with(|| {
                        format!("WebSocket close {} {reason}", code.unwrap_or(1005))
                    });
                    let bytes = code.unwrap_or_default().to_be_bytes();
                    let echo: &[u8] = if code.is_some() { &bytes } else { &[] };
                    ws::encode_frame(&mut w.out, ws::OP_CLOSE, echo, mask);
                    let _ = write_until(&mut self.stream, &w.out, deadline);
                    break;
                }
            }
            write_until(&mut self.stream, &w.out, deadline)?;
        }
        self.ws.as_mut().expect("WebSocket state").events = events;
        Ok(())
    }

    /// Consumes every complete frame in the buffer, calling `on_msg` for each
    /// `MSG`/`HMSG`; answers server `PING`s. Returns the number of messages.
    pub fn process<F: FnMut(Msg<'_>)>(&mut self, mut on_msg: F) -> io::Result<usize> {
        let mut msgs = 0;
        let mut pings = 0;
        loop {
            let avail = &self.buf[self.start..self.end];
            let Some(nl) = find_nl(avail) else {
                if avail.len() > MAX_CONTROL_LINE {
                    return Err(io::Error::new(ErrorKind::InvalidData, "line too long"));
                }
                break;
            };
            let line = trim_cr(&avail[..nl]);
            let hmsg = line.starts_with(b"HMSG ");
            if hmsg || line.starts_with(b"MSG ") {
                let len = last_number(line).ok_or_else(|| {
                    io::Error::new(
                        ErrorKind::InvalidData,
                        format!("bad MSG line: {}", String::from_utf8_lossy(line)),
                    )
                })?;
                let body = nl + 1;
                let total = body + len + 2;
                if avail.len() < total {
                    break; // wait for the rest of the payload
                }
                on_msg(Msg {
                    args: &line[if hmsg { 5 } else { 4 }..],
                    payload: &avail[body..body + len],
                    hmsg,
                });
                msgs += 1;
                self.start += total;
                continue;
            }
            if starts_with_ci(line, b"PING") {
                pings += 1;
            } else if starts_with_ci(line, b"PONG") {
                self.pongs += 1;
            } else if starts_with_ci(line, b"-ERR") {
                let text = String::from_utf8_lossy(line).into_owned();
                eprintln!("junction-bench: server says {text}");
                self.last_err = Some(text);
            } else if !(starts_with_ci(line, b"+OK")
                || starts_with_ci(line, b"INFO")
                || line.is_empty())
            {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("unexpected line: {}", String::from_utf8_lossy(line)),
                ));
            }
            self.start += nl + 1;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if pings > 0 {
            let pong = b"PONG\r\n".repeat(pings);
            self.send(&pong, Instant::now() + Duration::from_secs(5))?;
        }
        Ok(msgs)
    }

    /// Sends `PING` and reads until the matching `PONG`, discarding any
    /// messages. Fails if `deadline` passes or the server hangs up.
    pub fn ping_pong(&mut self, deadline: Instant) -> io::Result<()> {
        let want = self.pongs + 1;
        self.send(b"PING\r\n", deadline)?;
        while self.pongs < want {
            match self.fill()? {
                Fill::Eof => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        self.last_err
                            .clone()
                            .unwrap_or_else(|| "server closed".into()),
                    ))
                }
                Fill::Idle if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "no PONG before deadline",
                    ))
                }
                _ => {}
            }
            self.process(|_| {})?;
        }
        Ok(())
    }
}

/// Writes all of `data`, retrying on write timeouts until `deadline`.
pub fn write_until(stream: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "socket closed")),
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(ErrorKind::TimedOut, "write deadline passed"));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Reads once from `stream` into `buf[end..]`: first moves the partial frame left at
/// `start..end` to the front, and grows a buffer that one frame fills. Shared by the NATS and
/// MQTT connections of the load generator.
pub fn fill_buf(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: &mut usize,
    end: &mut usize,
) -> io::Result<Fill> {
    if *start > 0 {
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
    }
    if *end == buf.len() {
        // A single frame larger than the buffer: grow (rare, amortised).
        let len = buf.len() * 2;
        buf.resize(len, 0);
    }
    loop {
        match stream.read(&mut buf[*end..]) {
            Ok(0) => return Ok(Fill::Eof),
            Ok(n) => {
                *end += n;
                return Ok(Fill::Data);
            }
            Err(e) if is_timeout(&e) => return Ok(Fill::Idle),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if is_disconnect(&e) => return Ok(Fill::Eof),
            Err(e) => return Err(e),
        }
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

fn find_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn starts_with_ci(line: &[u8], verb: &[u8]) -> bool {
    line.len() >= verb.len() && line[..verb.len()].eq_ignore_ascii_case(verb)
}

/// Parses the last space-separated token of `line` as a decimal number.
fn last_number(line: &[u8]) -> Option<usize> {
    let line = line.trim_ascii_end();
    let start = line.iter().rposition(|&b| b == b' ' || b == b'\t')? + 1;
    let digits = &line[start..];
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let mut n = 0usize;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(d - b'0');
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A scripted WebSocket NATS server: upgrade answered together with the
    /// INFO frame, a WebSocket ping that must come back as a pong, a PONG
    /// split across two writes, a message and a close in one write.
    #[test]
    fn websocket_conn_against_scripted_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("Upgrade: websocket\r\n"));
            assert!(head.contains("Sec-WebSocket-Version: 13\r\n"));
            assert!(!head.to_ascii_lowercase().contains("sec-websocket-protocol"));
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                ws::accept_key(key)
            )
            .into_bytes();
            ws::encode_frame(
                &mut out,
                ws::OP_BINARY,
                b"INFO {\"max_payload\":1048576}\r\n",
                None,
            );
            s.write_all(&out).unwrap();

            let mut dec = ws::Decoder::new();
            let (mut data, mut events) = (Vec::new(), Vec::new());
            let mut read_until =
                |s: &mut TcpStream,
                 data: &mut Vec<u8>,
                 events: &mut Vec<ws::Event>,
                 done: &dyn Fn(&[u8], &[ws::Event]) -> bool| {
                    let mut chunk = [0u8; 4096];
                    while !done(data, events) {
                        let n = s.read(&mut chunk).unwrap();
                        assert!(n > 0, "client closed early");
                        // Client frames arrive masked; the decoder unmasks them.
                        dec.feed(&chunk[..n], data, events).unwrap();
                    }
                };
            read_until(&mut s, &mut data, &mut events, &|d, _| {
                d.ends_with(b"PING\r\n")
            });
            assert!(data.starts_with(b"CONNECT {"));
            data.clear();
            let mut out = Vec::new();
            ws::encode_frame(&mut out, ws::OP_PING, b"hey", None);
            ws::encode_frame(&mut out, ws::OP_BINARY, b"PONG\r\n", None);
            s.write_all(&out[..8]).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(&out[8..]).unwrap();
            read_until(&mut s, &mut data, &mut events, &|_, e| !e.is_empty());
            assert_eq!(events.remove(0), ws::Event::Pong(b"hey".to_vec()));
            read_until(&mut s, &mut data, &mut events, &|d, _| {
                d.ends_with(b"x\r\n")
            });
            assert_eq!(data, b"PUB a 1\r\nx\r\n");
            let mut out = Vec::new();
            ws::encode_frame(&mut out, ws::OP_BINARY, b"MSG a 1 1\r\nx\r\n", None);
            ws::encode_frame(&mut out, ws::OP_CLOSE, &1001u16.to_be_bytes(), None);
            s.write_all(&out).unwrap();
            read_until(&mut s, &mut data, &mut events, &|_, e| !e.is_empty());
            assert_eq!(events, vec![ws::Event::Close(Some(1001), String::new())]);
        });
        let mut conn = Conn::open(&addr, Transport::Ws, "t", 4096).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        conn.send(b"PUB a 1\r\nx\r\n", deadline).unwrap();
        let mut got = Vec::new();
        loop {
            match conn.fill().unwrap() {
                Fill::Eof => break,
                Fill::Idle => assert!(Instant::now() < deadline),
                Fill::Data => {
                    conn.process(|m| got.push((m.args.to_vec(), m.payload.to_vec())))
                        .unwrap();
                }
            }
        }
        assert_eq!(got, vec![(b"a 1 1".to_vec(), b"x".to_vec())]);
        assert_eq!(conn.last_err.as_deref(), Some("WebSocket close 1001 "));
        server.join().unwrap();
    }

    #[test]
    fn last_number_parses_len() {
        assert_eq!(last_number(b"MSG foo 1 128"), Some(128));
        assert_eq!(last_number(b"MSG foo 1 _INBOX.x.7 0"), Some(0));
        assert_eq!(last_number(b"MSG foo 1 x"), None);
        assert_eq!(last_number(b"MSG"), None);
    }

    #[test]
    fn subject_and_reply() {
        let m = Msg {
            args: b"svc 1 _INBOX.a.3 5",
            payload: b"hello",
            hmsg: false,
        };
        assert_eq!(m.subject_reply(), (&b"svc"[..], Some(&b"_INBOX.a.3"[..])));
        let m = Msg {
            args: b"svc 1 5",
            payload: b"hello",
            hmsg: false,
        };
        assert_eq!(m.subject_reply(), (&b"svc"[..], None));
        let m = Msg {
            args: b"svc 1 _INBOX.a.3 12 17",
            payload: b"",
            hmsg: true,
        };
        assert_eq!(m.subject_reply().1, Some(&b"_INBOX.a.3"[..]));
    }
}

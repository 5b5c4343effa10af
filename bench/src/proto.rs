//! Minimal blocking NATS client-protocol plumbing: handshake, a reusable
//! read buffer with an allocation-free frame scanner, and deadline-aware
//! writes.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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

/// The `CONNECT` line every connection of the bench sends.
pub fn connect_line(name: &str) -> String {
    format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\
         \"echo\":true,\"protocol\":1,\"tls_required\":false,\"lang\":\"rust\",\
         \"version\":\"{}\",\"name\":\"{}\"}}\r\n",
        env!("CARGO_PKG_VERSION"),
        name
    )
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
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pongs: u64,
    /// Last `-ERR` the server sent, if any.
    pub last_err: Option<String>,
}

impl Conn {
    /// Connects and completes the handshake; `buf_size` is the initial read buffer.
    pub fn open(addr: &SocketAddr, name: &str, buf_size: usize) -> io::Result<Conn> {
        let mut stream = dial(addr)?;
        let mut scratch = Vec::with_capacity(1024);
        handshake(
            &mut stream,
            &mut scratch,
            connect_line(name).as_bytes(),
            Duration::from_secs(10),
        )?;
        stream.set_read_timeout(Some(POLL_TICK))?;
        stream.set_write_timeout(Some(POLL_TICK))?;
        Ok(Conn {
            stream,
            buf: vec![0; buf_size.max(4096)],
            start: 0,
            end: 0,
            pongs: 0,
            last_err: None,
        })
    }

    /// Reads once into the buffer (waiting at most [`POLL_TICK`]).
    pub fn fill(&mut self) -> io::Result<Fill> {
        fill_buf(
            &mut self.stream,
            &mut self.buf,
            &mut self.start,
            &mut self.end,
        )
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
        for _ in 0..pings {
            self.stream.write_all(b"PONG\r\n")?;
        }
        Ok(msgs)
    }

    /// Sends `PING` and reads until the matching `PONG`, discarding any
    /// messages. Fails if `deadline` passes or the server hangs up.
    pub fn ping_pong(&mut self, deadline: Instant) -> io::Result<()> {
        let want = self.pongs + 1;
        write_until(&mut self.stream, b"PING\r\n", deadline)?;
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

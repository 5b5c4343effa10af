//! The NATS client protocol parser: a pure, resumable function over a byte buffer.
//!
//! [`Decoder::decode`] takes complete frames off the front of a `BytesMut` and returns
//! `Ok(None)` when it needs more bytes. Limits are checked before anything is buffered: a control
//! line longer than `max_control_line` or a payload over `max_payload` is an error as soon as it
//! is seen. Payloads are `split_to(n).freeze()` slices of the read buffer, never copied.

use bytes::{Buf, Bytes, BytesMut};

/// Longest control line (after the operation name) nats-server accepts by default.
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// Largest payload nats-server accepts by default (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// One operation sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `CONNECT {json}`: the JSON options.
    Connect(Bytes),
    /// `PUB` or `HPUB`.
    Pub {
        /// Subject published to.
        subject: Bytes,
        /// Reply subject, when given.
        reply: Option<Bytes>,
        /// Header block (`HPUB` only).
        headers: Option<Bytes>,
        /// Payload.
        payload: Bytes,
    },
    /// `SUB subject [queue] sid`.
    Sub {
        /// Subject filter.
        subject: Bytes,
        /// Queue group, when given.
        queue: Option<Bytes>,
        /// Client's subscription id.
        sid: Bytes,
    },
    /// `UNSUB sid [max]`.
    Unsub {
        /// Client's subscription id.
        sid: Bytes,
        /// Unsubscribe after this many messages in all.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `INFO` sent by a client (ignored, as nats-server ignores it from clients).
    Info,
    /// `+OK` sent by a client.
    Ok,
    /// `-ERR '...'` sent by a client.
    Err(Bytes),
}

/// Why the input cannot be parsed. Each maps to nats-server's reply and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not an operation of the client protocol, or a malformed frame.
    #[error("unknown protocol operation")]
    UnknownOperation,
    /// An operation's arguments are malformed.
    #[error("malformed arguments for {op}")]
    BadArguments {
        /// The operation.
        op: &'static str,
    },
    /// A control line longer than the limit.
    #[error("maximum control line exceeded")]
    MaxControlLine,
    /// A payload larger than the limit.
    #[error("maximum payload exceeded: {size} > {max}")]
    MaxPayload {
        /// The announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Limits the parser enforces before buffering.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest control line arguments, in bytes.
    pub max_control_line: usize,
    /// Largest message (headers and payload), in bytes.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// A publish whose control line was read but whose payload has not fully arrived.
#[derive(Debug)]
struct PendingPub {
    subject: Bytes,
    reply: Option<Bytes>,
    header_len: Option<usize>,
    total_len: usize,
}

/// The resumable parser state of one connection.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    pending: Option<PendingPub>,
}

/// Up to this many arguments are split out of a control line.
const MAX_ARGS: usize = 5;

/// Byte ranges of the arguments in a control line.
struct Args {
    ranges: [(usize, usize); MAX_ARGS],
    len: usize,
}

impl Args {
    fn split(line: &[u8], from: usize) -> Option<Args> {
        let mut args = Args {
            ranges: [(0, 0); MAX_ARGS],
            len: 0,
        };
        let mut start = None;
        for (i, &b) in line.iter().enumerate().skip(from) {
            if b == b' ' || b == b'\t' {
                if let Some(s) = start.take() {
                    args.push(s, i)?;
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            args.push(s, line.len())?;
        }
        Some(args)
    }

    fn push(&mut self, start: usize, end: usize) -> Option<()> {
        if self.len == MAX_ARGS {
            return None;
        }
        self.ranges[self.len] = (start, end);
        self.len += 1;
        Some(())
    }

    fn get(&self, i: usize) -> (usize, usize) {
        self.ranges[i]
    }
}

/// Parses a decimal size; `None` for anything but digits, or on overflow.
fn parse_size(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    let mut n: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
    }
    Some(n)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Pub,
    HPub,
    Sub,
    Unsub,
    Ping,
    Pong,
    Connect,
    Info,
    Ok,
    Err,
}

/// The operation named by `name`, in any case. Dispatches on the first byte, so the hot `PUB`
/// costs one comparison.
fn op_of(name: &[u8]) -> Option<Op> {
    let (op, want): (Op, &[u8]) = match name.first()?.to_ascii_uppercase() {
        b'P' => match name.len() {
            3 => (Op::Pub, b"PUB"),
            _ if name.get(1).is_some_and(|b| b.eq_ignore_ascii_case(&b'I')) => (Op::Ping, b"PING"),
            _ => (Op::Pong, b"PONG"),
        },
        b'H' => (Op::HPub, b"HPUB"),
        b'S' => (Op::Sub, b"SUB"),
        b'U' => (Op::Unsub, b"UNSUB"),
        b'C' => (Op::Connect, b"CONNECT"),
        b'I' => (Op::Info, b"INFO"),
        b'+' => (Op::Ok, b"+OK"),
        b'-' => (Op::Err, b"-ERR"),
        _ => return None,
    };
    want.eq_ignore_ascii_case(name).then_some(op)
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `PUB` arguments, `subject [reply] size`, split without a general tokenizer: the size is read
/// backwards from the end, the subject forwards from the start. Ranges are relative to `line`.
#[allow(clippy::type_complexity)]
fn split_pub_args(
    line: &[u8],
    from: usize,
) -> Option<((usize, usize), Option<(usize, usize)>, usize)> {
    let mut end = line.len();
    while end > from && is_space(line[end - 1]) {
        end -= 1;
    }
    let mut p = end;
    while p > from && line[p - 1].is_ascii_digit() {
        p -= 1;
    }
    if p == end || p == from || !is_space(line[p - 1]) {
        return None;
    }
    let size = parse_size(&line[p..end])?;
    let mut q = p;
    while q > from && is_space(line[q - 1]) {
        q -= 1;
    }
    let subject_end = line[from..q]
        .iter()
        .position(|&b| is_space(b))
        .map_or(q, |i| from + i);
    if subject_end == q {
        return Some(((from, q), None, size));
    }
    let mut r = subject_end;
    while is_space(line[r]) {
        r += 1;
    }
    if line[r..q].iter().any(|&b| is_space(b)) {
        return None;
    }
    Some(((from, subject_end), Some((r, q)), size))
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pending: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes the next complete frame off `buf`. `Ok(None)`: more bytes are needed (nothing of
    /// an incomplete frame is lost: the decoder or `buf` keeps it).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ParseError> {
        if let Some(p) = &self.pending {
            if buf.len() < p.total_len + 2 {
                return Ok(None);
            }
            let p = self.pending.take().expect("checked above");
            let body = buf.split_to(p.total_len).freeze();
            return finish_pub(p.subject, p.reply, p.header_len, body, buf).map(Some);
        }
        // The op name is at most 7 bytes; allow for spaces before the arguments.
        let window = buf.len().min(self.limits.max_control_line + 64);
        let Some(nl) = memchr::memchr(b'\n', &buf[..window]) else {
            if buf.len() > self.limits.max_control_line + 64 {
                return Err(ParseError::MaxControlLine);
            }
            return Ok(None);
        };
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let line = &buf[..line_end];
        let name_end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(line.len());
        let op = op_of(&line[..name_end]).ok_or(ParseError::UnknownOperation)?;
        let arg_start = line[name_end..]
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .map_or(line.len(), |p| name_end + p);
        if line_end - arg_start > self.limits.max_control_line {
            return Err(ParseError::MaxControlLine);
        }
        match op {
            Op::Pub | Op::HPub => self.decode_pub(op, buf, nl, line_end, arg_start),
            Op::Sub => {
                let args =
                    Args::split(line, arg_start).ok_or(ParseError::BadArguments { op: "SUB" })?;
                let (subject, queue, sid) = match args.len {
                    2 => (args.get(0), None, args.get(1)),
                    3 => (args.get(0), Some(args.get(1)), args.get(2)),
                    _ => return Err(ParseError::BadArguments { op: "SUB" }),
                };
                let line = buf.split_to(nl + 1).freeze();
                Ok(Some(Frame::Sub {
                    subject: line.slice(subject.0..subject.1),
                    queue: queue.map(|q| line.slice(q.0..q.1)),
                    sid: line.slice(sid.0..sid.1),
                }))
            }
            Op::Unsub => {
                let args =
                    Args::split(line, arg_start).ok_or(ParseError::BadArguments { op: "UNSUB" })?;
                let max = match args.len {
                    1 => None,
                    2 => {
                        let (s, e) = args.get(1);
                        Some(
                            parse_size(&line[s..e])
                                .ok_or(ParseError::BadArguments { op: "UNSUB" })?
                                as u64,
                        )
                    }
                    _ => return Err(ParseError::BadArguments { op: "UNSUB" }),
                };
                let sid = args.get(0);
                let line = buf.split_to(nl + 1).freeze();
                Ok(Some(Frame::Unsub {
                    sid: line.slice(sid.0..sid.1),
                    max,
                }))
            }
            Op::Connect | Op::Err => {
                let line = buf.split_to(nl + 1).freeze();
                let arg = line.slice(arg_start..line_end);
                Ok(Some(if op == Op::Connect {
                    Frame::Connect(arg)
                } else {
                    Frame::Err(arg)
                }))
            }
            Op::Ping | Op::Pong | Op::Info | Op::Ok => {
                buf.advance(nl + 1);
                Ok(Some(match op {
                    Op::Ping => Frame::Ping,
                    Op::Pong => Frame::Pong,
                    Op::Info => Frame::Info,
                    _ => Frame::Ok,
                }))
            }
        }
    }

    fn decode_pub(
        &mut self,
        op: Op,
        buf: &mut BytesMut,
        nl: usize,
        line_end: usize,
        arg_start: usize,
    ) -> Result<Option<Frame>, ParseError> {
        let name = if op == Op::Pub { "PUB" } else { "HPUB" };
        let bad = ParseError::BadArguments { op: name };
        let line = &buf[..line_end];
        // (subject, reply, header length, total length)
        let (subject, reply, header_len, total_len) = if op == Op::Pub {
            let (subject, reply, size) = split_pub_args(line, arg_start).ok_or(bad.clone())?;
            (subject, reply, None, size)
        } else {
            let args = Args::split(line, arg_start).ok_or(bad.clone())?;
            let size_of = |i: usize| {
                let (s, e) = args.get(i);
                parse_size(&line[s..e]).ok_or(bad.clone())
            };
            match args.len {
                3 => (args.get(0), None, Some(size_of(1)?), size_of(2)?),
                4 => (
                    args.get(0),
                    Some(args.get(1)),
                    Some(size_of(2)?),
                    size_of(3)?,
                ),
                _ => return Err(bad),
            }
        };
        if header_len.is_some_and(|h| h > total_len) {
            return Err(bad);
        }
        if total_len > self.limits.max_payload {
            return Err(ParseError::MaxPayload {
                size: total_len,
                max: self.limits.max_payload,
            });
        }
        let body_start = nl + 1;
        if buf.len() >= body_start + total_len + 2 {
            // The whole frame is here: one split, every field a slice of it.
            let frame = buf.split_to(body_start + total_len).freeze();
            let subject = frame.slice(subject.0..subject.1);
            let reply = reply.map(|r| frame.slice(r.0..r.1));
            let body = frame.slice(body_start..);
            return finish_pub(subject, reply, header_len, body, buf).map(Some);
        }
        let line = buf.split_to(body_start).freeze();
        self.pending = Some(PendingPub {
            subject: line.slice(subject.0..subject.1),
            reply: reply.map(|r| line.slice(r.0..r.1)),
            header_len,
            total_len,
        });
        Ok(None)
    }
}

/// Checks the `\r\n` after a payload and builds the frame.
fn finish_pub(
    subject: Bytes,
    reply: Option<Bytes>,
    header_len: Option<usize>,
    mut body: Bytes,
    buf: &mut BytesMut,
) -> Result<Frame, ParseError> {
    if &buf[..2] != b"\r\n" {
        return Err(ParseError::UnknownOperation);
    }
    buf.advance(2);
    let headers = header_len.map(|h| body.split_to(h));
    Ok(Frame::Pub {
        subject,
        reply,
        headers,
        payload: body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pub_frame(
        subject: &str,
        reply: Option<&str>,
        headers: Option<&str>,
        payload: &str,
    ) -> Frame {
        Frame::Pub {
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            reply: reply.map(|r| Bytes::copy_from_slice(r.as_bytes())),
            headers: headers.map(|h| Bytes::copy_from_slice(h.as_bytes())),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Fixtures: input bytes and the frames they must give.
    fn fixtures() -> Vec<(&'static str, Vec<Frame>)> {
        vec![
            ("PING\r\n", vec![Frame::Ping]),
            ("ping\r\npong\r\n", vec![Frame::Ping, Frame::Pong]),
            ("PONG\n", vec![Frame::Pong]),
            (
                "CONNECT {\"verbose\":false,\"name\":\"a b\"}\r\n",
                vec![Frame::Connect(b("{\"verbose\":false,\"name\":\"a b\"}"))],
            ),
            (
                "PUB foo 5\r\nhello\r\n",
                vec![pub_frame("foo", None, None, "hello")],
            ),
            ("pub foo 0\r\n\r\n", vec![pub_frame("foo", None, None, "")]),
            (
                "PUB\tfoo\t r\t 1 \r\nx\r\n",
                vec![pub_frame("foo", Some("r"), None, "x")],
            ),
            (
                "PUB foo.bar  INBOX.1\t3\r\na\r\n\r\n",
                vec![pub_frame("foo.bar", Some("INBOX.1"), None, "a\r\n")],
            ),
            (
                "HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
                vec![pub_frame("foo", None, Some("NATS/1.0\r\n\r\n"), "hi")],
            ),
            (
                "HPUB foo r 12 12\r\nNATS/1.0\r\n\r\n\r\n",
                vec![pub_frame("foo", Some("r"), Some("NATS/1.0\r\n\r\n"), "")],
            ),
            (
                "SUB foo 1\r\nSUB foo.* workers 22\r\n",
                vec![
                    Frame::Sub {
                        subject: b("foo"),
                        queue: None,
                        sid: b("1"),
                    },
                    Frame::Sub {
                        subject: b("foo.*"),
                        queue: Some(b("workers")),
                        sid: b("22"),
                    },
                ],
            ),
            (
                "UNSUB 1\r\nUNSUB 22 5\r\n",
                vec![
                    Frame::Unsub {
                        sid: b("1"),
                        max: None,
                    },
                    Frame::Unsub {
                        sid: b("22"),
                        max: Some(5),
                    },
                ],
            ),
            ("+OK\r\n", vec![Frame::Ok]),
            ("-ERR 'oops'\r\n", vec![Frame::Err(b("'oops'"))]),
            ("INFO {}\r\n", vec![Frame::Info]),
            (
                "PUB a 1\r\nx\r\nPING\r\nSUB a 1\r\n",
                vec![
                    pub_frame("a", None, None, "x"),
                    Frame::Ping,
                    Frame::Sub {
                        subject: b("a"),
                        queue: None,
                        sid: b("1"),
                    },
                ],
            ),
        ]
    }

    fn decode_all(
        d: &mut Decoder,
        buf: &mut BytesMut,
        out: &mut Vec<Frame>,
    ) -> Result<(), ParseError> {
        while let Some(f) = d.decode(buf)? {
            out.push(f);
        }
        Ok(())
    }

    #[test]
    fn every_fixture_at_every_split_point() {
        for (input, want) in fixtures() {
            let bytes = input.as_bytes();
            for split in 0..=bytes.len() {
                let mut d = Decoder::default();
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                buf.extend_from_slice(&bytes[..split]);
                decode_all(&mut d, &mut buf, &mut got).unwrap();
                buf.extend_from_slice(&bytes[split..]);
                decode_all(&mut d, &mut buf, &mut got).unwrap();
                assert_eq!(got, want, "input {input:?} split at {split}");
                assert!(buf.is_empty(), "leftover for {input:?} split at {split}");
            }
        }
    }

    #[test]
    fn every_fixture_one_byte_at_a_time() {
        for (input, want) in fixtures() {
            let mut d = Decoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for byte in input.as_bytes() {
                buf.extend_from_slice(&[*byte]);
                decode_all(&mut d, &mut buf, &mut got).unwrap();
            }
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn malformed_inputs() {
        let limits = Limits {
            max_control_line: 32,
            max_payload: 10,
        };
        let long_line = format!("SUB {} 1\r\n", "a".repeat(40));
        let unterminated = "SUB ".to_string() + &"a".repeat(200);
        let cases: Vec<(&str, ParseError)> = vec![
            ("FOO\r\n", ParseError::UnknownOperation),
            ("PUBX foo 1\r\n", ParseError::UnknownOperation),
            ("\r\n", ParseError::UnknownOperation),
            ("PUB foo\r\n", ParseError::BadArguments { op: "PUB" }),
            ("PUB foo bar\r\n", ParseError::BadArguments { op: "PUB" }),
            ("PUB foo -1\r\n", ParseError::BadArguments { op: "PUB" }),
            ("PUB a b c 1\r\n", ParseError::BadArguments { op: "PUB" }),
            ("PUB 5\r\n", ParseError::BadArguments { op: "PUB" }),
            ("PUB foo5\r\n", ParseError::BadArguments { op: "PUB" }),
            ("PUB foo 5x\r\n", ParseError::BadArguments { op: "PUB" }),
            ("PUB \r\n", ParseError::BadArguments { op: "PUB" }),
            ("PINGX\r\n", ParseError::UnknownOperation),
            ("P\r\n", ParseError::UnknownOperation),
            (
                "PUB foo 99999999999999999999999\r\n",
                ParseError::BadArguments { op: "PUB" },
            ),
            ("HPUB foo 5 2\r\n", ParseError::BadArguments { op: "HPUB" }),
            ("HPUB foo 5\r\n", ParseError::BadArguments { op: "HPUB" }),
            ("SUB foo\r\n", ParseError::BadArguments { op: "SUB" }),
            ("SUB a b c d\r\n", ParseError::BadArguments { op: "SUB" }),
            ("UNSUB\r\n", ParseError::BadArguments { op: "UNSUB" }),
            ("UNSUB 1 x\r\n", ParseError::BadArguments { op: "UNSUB" }),
            (
                "PUB foo 11\r\n",
                ParseError::MaxPayload { size: 11, max: 10 },
            ),
            ("PUB foo 2\r\nabc\r\n", ParseError::UnknownOperation),
            (&long_line, ParseError::MaxControlLine),
            (&unterminated, ParseError::MaxControlLine),
        ];
        for (input, want) in cases {
            // Whole, and byte by byte: the error must be the same either way.
            let mut d = Decoder::new(limits);
            let mut buf = BytesMut::from(input.as_bytes());
            let mut got = Vec::new();
            assert_eq!(
                decode_all(&mut d, &mut buf, &mut got),
                Err(want.clone()),
                "{input:?}"
            );
            let mut d = Decoder::new(limits);
            let mut buf = BytesMut::new();
            let mut result = Ok(());
            for byte in input.as_bytes() {
                buf.extend_from_slice(&[*byte]);
                result = decode_all(&mut d, &mut buf, &mut got);
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result, Err(want), "{input:?} byte by byte");
        }
    }

    #[test]
    fn payload_is_not_copied() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&b"PUB foo 5\r\nhello\r\n"[..]);
        let start = buf.as_ptr() as usize;
        let Some(Frame::Pub { payload, .. }) = d.decode(&mut buf).unwrap() else {
            panic!("expected a publish");
        };
        assert_eq!(payload.as_ptr() as usize, start + 11);
    }
}

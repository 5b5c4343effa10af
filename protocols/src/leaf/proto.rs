//! The leaf node protocol's operations, as nats-server speaks them on a leaf node connection:
//! `INFO`, `CONNECT`, `PING`/`PONG`, `+OK`/`-ERR`, interest (`LS+ subject [queue weight]`,
//! `LS- subject [queue]`) and messages (`LMSG subject [reply | + reply queues... | | queues...]
//! size` and `HMSG` with a header size before the total).
//!
//! [`parse`] takes one operation off the front of a buffer once it is complete (a message with
//! its payload), so the bytes may arrive split anywhere. Sizes and the control line are bounded
//! by the caller's limits; a violation is an error that ends the link, never a panic.

use bytes::{Buf, Bytes, BytesMut};

/// One operation received from the far side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Info(Bytes),
    Connect(Bytes),
    Ping,
    Pong,
    Ok,
    Err(String),
    /// Interest: a subject, and for a queue group its name and weight (members on that side).
    Sub {
        subject: Bytes,
        queue: Option<(Bytes, u32)>,
    },
    Unsub {
        subject: Bytes,
        queue: Option<Bytes>,
    },
    Msg {
        subject: Bytes,
        reply: Option<Bytes>,
        /// The queue groups the far side chose this server for.
        queues: Vec<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
    },
}

/// Why the far side's bytes are not the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("Maximum Control Line Exceeded")]
    ControlLine,
    #[error("Maximum Payload Exceeded")]
    Payload,
    #[error("Unknown Protocol Operation")]
    Unknown,
    #[error("Bad Protocol Arguments: {0}")]
    Args(&'static str),
}

/// The limits a parse enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_control_line: usize,
    pub max_payload: usize,
}

/// Takes the next complete operation off `buf`; `Ok(None)`: more bytes are needed.
pub fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<Op>, ProtoError> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        if buf.len() > limits.max_control_line {
            return Err(ProtoError::ControlLine);
        }
        return Ok(None);
    };
    if end > limits.max_control_line {
        return Err(ProtoError::ControlLine);
    }
    let line_len = if end > 0 && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    let (verb, rest) = split_verb(&buf[..line_len]);
    let verb = verb.to_ascii_uppercase();
    match verb.as_slice() {
        b"LMSG" | b"HMSG" => {
            let header = verb[0] == b'H';
            let m = msg_args(rest, header)?;
            if m.total > limits.max_payload {
                return Err(ProtoError::Payload);
            }
            let need = end + 1 + m.total + 2;
            if buf.len() < need {
                return Ok(None);
            }
            let rest_at = line_len - rest.len();
            let line = buf.split_to(end + 1).freeze();
            let args = line.slice(rest_at..line_len);
            let mut body = buf.split_to(m.total).freeze();
            if &buf[..2] != b"\r\n" {
                return Err(ProtoError::Args("message not followed by CRLF"));
            }
            buf.advance(2);
            let headers = if header {
                let h = body.split_to(m.header_len);
                Some(h)
            } else {
                None
            };
            let words: Vec<Bytes> = split_words(&args);
            Ok(Some(Op::Msg {
                subject: words[0].clone(),
                reply: m.reply.map(|i| words[i].clone()),
                queues: m.queues.map(|r| words[r].to_vec()).unwrap_or_default(),
                headers,
                payload: body,
            }))
        }
        _ => {
            let rest_at = line_len - rest.len();
            let line = buf.split_to(end + 1).freeze();
            let args = line.slice(rest_at..line_len);
            let op = match verb.as_slice() {
                b"PING" => Op::Ping,
                b"PONG" => Op::Pong,
                b"+OK" => Op::Ok,
                b"-ERR" => Op::Err(
                    String::from_utf8_lossy(&args)
                        .trim()
                        .trim_matches('\'')
                        .to_string(),
                ),
                b"INFO" => Op::Info(trim(args)),
                b"CONNECT" => Op::Connect(trim(args)),
                b"LS+" => {
                    let w = split_words(&args);
                    match w.len() {
                        1 => Op::Sub {
                            subject: w[0].clone(),
                            queue: None,
                        },
                        2 | 3 => {
                            let weight = match w.get(2) {
                                Some(n) => parse_u32(n).ok_or(ProtoError::Args("LS+ weight"))?,
                                None => 1,
                            };
                            Op::Sub {
                                subject: w[0].clone(),
                                queue: Some((w[1].clone(), weight)),
                            }
                        }
                        _ => return Err(ProtoError::Args("LS+")),
                    }
                }
                b"LS-" => {
                    let w = split_words(&args);
                    match w.len() {
                        1 | 2 => Op::Unsub {
                            subject: w[0].clone(),
                            queue: w.get(1).cloned(),
                        },
                        _ => return Err(ProtoError::Args("LS-")),
                    }
                }
                _ => return Err(ProtoError::Unknown),
            };
            Ok(Some(op))
        }
    }
}

/// A message line's shape: which words are the reply and the queues, and the sizes.
struct MsgArgs {
    reply: Option<usize>,
    queues: Option<std::ops::Range<usize>>,
    header_len: usize,
    total: usize,
}

fn msg_args(rest: &[u8], header: bool) -> Result<MsgArgs, ProtoError> {
    let words: Vec<&[u8]> = rest
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty())
        .collect();
    let sizes = if header { 2 } else { 1 };
    if words.len() < 1 + sizes {
        return Err(ProtoError::Args("LMSG"));
    }
    let n = words.len() - sizes;
    let total = parse_size(words[words.len() - 1]).ok_or(ProtoError::Args("LMSG size"))?;
    let header_len = if header {
        let h = parse_size(words[words.len() - 2]).ok_or(ProtoError::Args("HMSG header size"))?;
        if h > total {
            return Err(ProtoError::Args("HMSG header size"));
        }
        h
    } else {
        0
    };
    let (reply, queues) = match n {
        1 => (None, None),
        2 => (Some(1), None),
        _ => match words[1] {
            b"+" if n >= 3 => (Some(2), Some(3..n)),
            b"|" => (None, Some(2..n)),
            _ => return Err(ProtoError::Args("LMSG reply indicator")),
        },
    };
    Ok(MsgArgs {
        reply,
        queues,
        header_len,
        total,
    })
}

fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    let line = line.trim_ascii_start();
    match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, &[]),
    }
}

fn split_words(args: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, b) in args.iter().enumerate() {
        if *b == b' ' || *b == b'\t' {
            if let Some(s) = start.take() {
                out.push(args.slice(s..i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(args.slice(s..));
    }
    out
}

fn trim(b: Bytes) -> Bytes {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    b.slice(start..end.max(start))
}

fn parse_size(w: &[u8]) -> Option<usize> {
    if w.is_empty() || w.len() > 12 || !w.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(w).ok()?.parse().ok()
}

fn parse_u32(w: &[u8]) -> Option<u32> {
    u32::try_from(parse_size(w)?).ok()
}

/// Appends `LS+ subject [queue weight]`.
pub fn encode_sub(out: &mut BytesMut, subject: &[u8], queue: Option<(&[u8], u32)>) {
    out.extend_from_slice(b"LS+ ");
    out.extend_from_slice(subject);
    if let Some((q, w)) = queue {
        out.extend_from_slice(b" ");
        out.extend_from_slice(q);
        out.extend_from_slice(format!(" {w}").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `LS- subject [queue]`.
pub fn encode_unsub(out: &mut BytesMut, subject: &[u8], queue: Option<&[u8]>) {
    out.extend_from_slice(b"LS- ");
    out.extend_from_slice(subject);
    if let Some(q) = queue {
        out.extend_from_slice(b" ");
        out.extend_from_slice(q);
    }
    out.extend_from_slice(b"\r\n");
}

/// A message to send: `LMSG`, or `HMSG` with headers.
pub struct OutMsg<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    pub queues: &'a [Bytes],
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl OutMsg<'_> {
    /// Bytes [`OutMsg::encode`] appends (an upper bound for the sizes' digits).
    pub fn encoded_len(&self) -> usize {
        let q: usize = self.queues.iter().map(|q| q.len() + 1).sum();
        let h = self.headers.map_or(0, <[u8]>::len);
        5 + self.subject.len()
            + self.reply.map_or(0, |r| r.len() + 3)
            + q
            + 2
            + 2 * 21
            + 2
            + h
            + self.payload.len()
            + 2
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let h = self.headers.map_or(0, <[u8]>::len);
        out.extend_from_slice(if self.headers.is_some() {
            b"HMSG "
        } else {
            b"LMSG "
        });
        out.extend_from_slice(self.subject);
        out.extend_from_slice(b" ");
        if !self.queues.is_empty() {
            match self.reply {
                Some(r) => {
                    out.extend_from_slice(b"+ ");
                    out.extend_from_slice(r);
                    out.extend_from_slice(b" ");
                }
                None => out.extend_from_slice(b"| "),
            }
            for q in self.queues {
                out.extend_from_slice(q);
                out.extend_from_slice(b" ");
            }
        } else if let Some(r) = self.reply {
            out.extend_from_slice(r);
            out.extend_from_slice(b" ");
        }
        if self.headers.is_some() {
            out.extend_from_slice(format!("{h} ").as_bytes());
        }
        out.extend_from_slice(format!("{}\r\n", h + self.payload.len()).as_bytes());
        if let Some(hd) = self.headers {
            out.extend_from_slice(hd);
        }
        out.extend_from_slice(self.payload);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_control_line: 4096,
        max_payload: 1 << 20,
    };

    fn all(bytes: &[u8]) -> Result<Vec<Op>, ProtoError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(op) = parse(&mut buf, LIMITS)? {
            out.push(op);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    const STREAM: &[u8] = b"INFO {\"server_id\":\"X\"}\r\nPING\r\nLS+ foo.*\r\nLS+ bar q 3\r\n\
LS- foo.*\r\nLS- bar q\r\nLMSG a.b 5\r\nhello\r\nLMSG a.b r.1 2\r\nhi\r\n\
LMSG a.b + r.2 q1 q2 0\r\n\r\nLMSG a.b | q1 1\r\nx\r\nHMSG h 12 14\r\nNATS/1.0\r\n\r\nok\r\n\
-ERR 'Authorization Violation'\r\n+OK\r\npong\r\n";

    fn expected() -> Vec<Op> {
        vec![
            Op::Info(b("{\"server_id\":\"X\"}")),
            Op::Ping,
            Op::Sub {
                subject: b("foo.*"),
                queue: None,
            },
            Op::Sub {
                subject: b("bar"),
                queue: Some((b("q"), 3)),
            },
            Op::Unsub {
                subject: b("foo.*"),
                queue: None,
            },
            Op::Unsub {
                subject: b("bar"),
                queue: Some(b("q")),
            },
            Op::Msg {
                subject: b("a.b"),
                reply: None,
                queues: vec![],
                headers: None,
                payload: b("hello"),
            },
            Op::Msg {
                subject: b("a.b"),
                reply: Some(b("r.1")),
                queues: vec![],
                headers: None,
                payload: b("hi"),
            },
            Op::Msg {
                subject: b("a.b"),
                reply: Some(b("r.2")),
                queues: vec![b("q1"), b("q2")],
                headers: None,
                payload: b(""),
            },
            Op::Msg {
                subject: b("a.b"),
                reply: None,
                queues: vec![b("q1")],
                headers: None,
                payload: b("x"),
            },
            Op::Msg {
                subject: b("h"),
                reply: None,
                queues: vec![],
                headers: Some(b("NATS/1.0\r\n\r\n")),
                payload: b("ok"),
            },
            Op::Err("Authorization Violation".into()),
            Op::Ok,
            Op::Pong,
        ]
    }

    #[test]
    fn every_operation_parses() {
        assert_eq!(all(STREAM).unwrap(), expected());
    }

    #[test]
    fn any_split_point_gives_the_same_operations() {
        for cut in 0..=STREAM.len() {
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for part in [&STREAM[..cut], &STREAM[cut..]] {
                buf.extend_from_slice(part);
                while let Some(op) = parse(&mut buf, LIMITS).unwrap() {
                    out.push(op);
                }
            }
            assert_eq!(out, expected(), "split at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let small = Limits {
            max_control_line: 16,
            max_payload: 4,
        };
        let mut buf = BytesMut::from(&b"LMSG a 5\r\nhello\r\n"[..]);
        assert_eq!(parse(&mut buf, small), Err(ProtoError::Payload));
        let mut buf = BytesMut::from(&b"LS+ aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[..]);
        assert_eq!(parse(&mut buf, small), Err(ProtoError::ControlLine));
        for bad in [
            &b"NOPE\r\n"[..],
            b"LMSG a\r\n",
            b"LMSG a x\r\n",
            b"LMSG a ? r q 1\r\n",
            b"HMSG a 5 2\r\nhello\r\n",
            b"LMSG a 1\r\nxyz\r\n",
            b"LS+ a q notanumber\r\n",
            b"LS+ a b c d\r\n",
            b"LS- a b c\r\n",
            b"LMSG a 99999999999999999999\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                parse(&mut buf, LIMITS).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn encodings_parse_back() {
        let mut out = BytesMut::new();
        encode_sub(&mut out, b"foo.>", None);
        encode_sub(&mut out, b"bar", Some((b"q", 2)));
        encode_unsub(&mut out, b"bar", Some(b"q"));
        let qs = [b("q1"), b("q2")];
        for (reply, queues, headers) in [
            (None, &qs[..0], None),
            (Some(&b"r"[..]), &qs[..0], None),
            (
                Some(&b"r"[..]),
                &qs[..],
                Some(&b"NATS/1.0\r\nA: b\r\n\r\n"[..]),
            ),
            (None, &qs[..1], None),
        ] {
            let m = OutMsg {
                subject: b"s.t",
                reply,
                queues,
                headers,
                payload: b"data",
            };
            let before = out.len();
            m.encode(&mut out);
            assert!(out.len() - before <= m.encoded_len());
        }
        let ops = all(&out).unwrap();
        assert_eq!(ops.len(), 7);
        assert_eq!(
            ops[5],
            Op::Msg {
                subject: b("s.t"),
                reply: Some(b("r")),
                queues: qs.to_vec(),
                headers: Some(b("NATS/1.0\r\nA: b\r\n\r\n")),
                payload: b("data"),
            }
        );
    }
}

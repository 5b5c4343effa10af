//! Encoding of what the server sends to NATS clients: MSG, HMSG and the fixed replies.

use bytes::{BufMut, BytesMut};

/// `PING\r\n`.
pub const PING: &[u8] = b"PING\r\n";
/// `PONG\r\n`.
pub const PONG: &[u8] = b"PONG\r\n";
/// `+OK\r\n`.
pub const OK: &[u8] = b"+OK\r\n";

/// The status line of a no-responders reply.
pub const NO_RESPONDERS_STATUS: &[u8] = b"NATS/1.0 503\r\n";

/// Decimal digits of `n`.
fn digits(n: usize) -> usize {
    let mut d = 1;
    let mut n = n / 10;
    while n > 0 {
        d += 1;
        n /= 10;
    }
    d
}

/// Appends `n` in decimal.
pub fn put_usize(buf: &mut BytesMut, n: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&tmp[i..]);
}

/// One message as a client receives it.
pub struct Msg<'a> {
    /// Subject it was published to.
    pub subject: &'a [u8],
    /// The subscription's id.
    pub sid: &'a [u8],
    /// Reply subject, if any.
    pub reply: Option<&'a [u8]>,
    /// Header block, sent only to clients that support headers.
    pub headers: Option<&'a [u8]>,
    /// Payload.
    pub payload: &'a [u8],
}

impl Msg<'_> {
    /// Exact encoded length, so the buffer grows once.
    pub fn encoded_len(&self) -> usize {
        let reply = self.reply.map_or(0, |r| r.len() + 1);
        let total = self.payload.len() + self.headers.map_or(0, <[u8]>::len);
        let sizes = match self.headers {
            Some(h) => digits(h.len()) + 1 + digits(total),
            None => digits(total),
        };
        // "HMSG " or "MSG ", three separators, the sizes, "\r\n" twice, headers, payload.
        let op = if self.headers.is_some() { 5 } else { 4 };
        op + self.subject.len() + 1 + self.sid.len() + 1 + reply + sizes + 2 + total + 2
    }

    /// Appends `MSG subject sid [reply] len\r\npayload\r\n`, or the `HMSG` form with headers.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        buf.put_slice(if self.headers.is_some() {
            b"HMSG "
        } else {
            b"MSG "
        });
        buf.put_slice(self.subject);
        buf.put_u8(b' ');
        buf.put_slice(self.sid);
        buf.put_u8(b' ');
        if let Some(r) = self.reply {
            buf.put_slice(r);
            buf.put_u8(b' ');
        }
        let total = self.payload.len() + self.headers.map_or(0, <[u8]>::len);
        if let Some(h) = self.headers {
            put_usize(buf, h.len());
            buf.put_u8(b' ');
        }
        put_usize(buf, total);
        buf.put_slice(b"\r\n");
        if let Some(h) = self.headers {
            buf.put_slice(h);
        }
        buf.put_slice(self.payload);
        buf.put_slice(b"\r\n");
    }
}

/// `-ERR 'text'\r\n`.
pub fn err(text: &str) -> Vec<u8> {
    format!("-ERR '{text}'\r\n").into_bytes()
}

/// The header block of a no-responders status message for a request to `subject`.
pub fn no_responders_headers(subject: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(NO_RESPONDERS_STATUS.len() + subject.len() + 18);
    h.extend_from_slice(NO_RESPONDERS_STATUS);
    h.extend_from_slice(b"Nats-Subject: ");
    h.extend_from_slice(subject);
    h.extend_from_slice(b"\r\n\r\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_and_hmsg() {
        let cases = [
            (
                Msg {
                    subject: b"foo",
                    sid: b"1",
                    reply: None,
                    headers: None,
                    payload: b"hello",
                },
                &b"MSG foo 1 5\r\nhello\r\n"[..],
            ),
            (
                Msg {
                    subject: b"foo.bar",
                    sid: b"22",
                    reply: Some(b"_INBOX.x"),
                    headers: None,
                    payload: b"",
                },
                b"MSG foo.bar 22 _INBOX.x 0\r\n\r\n",
            ),
            (
                Msg {
                    subject: b"a",
                    sid: b"9",
                    reply: Some(b"r"),
                    headers: Some(b"NATS/1.0\r\nA: b\r\n\r\n"),
                    payload: b"0123456789",
                },
                b"HMSG a 9 r 18 28\r\nNATS/1.0\r\nA: b\r\n\r\n0123456789\r\n",
            ),
        ];
        for (msg, want) in cases {
            let mut buf = BytesMut::new();
            msg.encode(&mut buf);
            assert_eq!(&buf[..], want);
            assert_eq!(msg.encoded_len(), want.len());
        }
    }

    #[test]
    fn numbers() {
        for n in [0usize, 7, 10, 99, 100, 12345, usize::MAX] {
            let mut buf = BytesMut::new();
            put_usize(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes());
            assert_eq!(digits(n), n.to_string().len());
        }
    }
}

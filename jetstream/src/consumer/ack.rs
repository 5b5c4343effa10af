//! What a client's acknowledgement says, and the parts of the subject it is sent to.

use std::time::Duration;

use bytes::Bytes;

/// What a client's acknowledgement says.
#[derive(Debug, PartialEq)]
pub enum AckKind {
    Ack,
    Nak(Option<Duration>),
    Progress,
    Term,
    Next(Bytes),
}

impl AckKind {
    pub fn parse(payload: &[u8]) -> Option<AckKind> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        if text.is_empty() || text == "+ACK" {
            return Some(AckKind::Ack);
        }
        if let Some(rest) = text.strip_prefix("-NAK") {
            let rest = rest.trim();
            let delay = if rest.is_empty() {
                None
            } else {
                let v: serde_json::Value = serde_json::from_str(rest).ok()?;
                v.get("delay")
                    .and_then(|d| d.as_i64())
                    .filter(|d| *d > 0)
                    .map(|d| Duration::from_nanos(d as u64))
            };
            return Some(AckKind::Nak(delay));
        }
        if text == "+WPI" {
            return Some(AckKind::Progress);
        }
        if text.starts_with("+TERM") {
            return Some(AckKind::Term);
        }
        if let Some(rest) = text.strip_prefix("+NXT") {
            return Some(AckKind::Next(Bytes::copy_from_slice(
                rest.trim().as_bytes(),
            )));
        }
        None
    }
}

/// The parts of an acknowledgement subject
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (and the longer form
/// with domain and account hash).
pub struct AckSubject<'a> {
    pub stream: &'a str,
    pub consumer: &'a str,
    pub sseq: u64,
}

impl<'a> AckSubject<'a> {
    pub fn parse(subject: &'a str) -> Option<Self> {
        let rest = subject.strip_prefix("$JS.ACK.")?;
        // Without a fixed-size token array: 7 tokens after the prefix, or 10 and more in the
        // long form (domain and account hash first).
        let mut t = [""; 10];
        let mut n = 0;
        for tok in rest.split('.') {
            if n < t.len() {
                t[n] = tok;
            }
            n += 1;
        }
        let off = match n {
            7 => 0,
            10.. => 2,
            _ => return None,
        };
        Some(AckSubject {
            stream: t[off],
            consumer: t[off + 1],
            sseq: t[off + 3].parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_acknowledgements() {
        assert_eq!(AckKind::parse(b"+ACK"), Some(AckKind::Ack));
        assert_eq!(AckKind::parse(b""), Some(AckKind::Ack));
        assert_eq!(AckKind::parse(b"-NAK"), Some(AckKind::Nak(None)));
        assert_eq!(
            AckKind::parse(br#"-NAK {"delay": 2000000000}"#),
            Some(AckKind::Nak(Some(Duration::from_secs(2))))
        );
        assert_eq!(AckKind::parse(b"+WPI"), Some(AckKind::Progress));
        assert_eq!(AckKind::parse(b"+TERM"), Some(AckKind::Term));
        assert_eq!(
            AckKind::parse(br#"+NXT {"batch":2}"#),
            Some(AckKind::Next(Bytes::from_static(br#"{"batch":2}"#)))
        );
        assert_eq!(AckKind::parse(b"bogus"), None);
        let a = AckSubject::parse("$JS.ACK.S.C.1.5.3.1700000000.2").unwrap();
        assert_eq!((a.stream, a.consumer, a.sseq), ("S", "C", 5));
        let b = AckSubject::parse("$JS.ACK.dom.hash.S.C.1.9.3.17.2.tok").unwrap();
        assert_eq!((b.stream, b.consumer, b.sseq), ("S", "C", 9));
        assert!(AckSubject::parse("$JS.ACK.S.C").is_none());
    }
}

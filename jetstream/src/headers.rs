//! NATS header blocks (`NATS/1.0[ status text]\r\nKey: value\r\n...\r\n\r\n`): reading the
//! headers JetStream acts on, and writing status messages and the headers it adds.

use bytes::{BufMut, Bytes, BytesMut};

pub const MSG_ID: &str = "Nats-Msg-Id";
pub const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
pub const EXPECTED_LAST_SEQ: &str = "Nats-Expected-Last-Sequence";
pub const EXPECTED_LAST_SUBJ_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
pub const EXPECTED_LAST_MSG_ID: &str = "Nats-Expected-Last-Msg-Id";
pub const ROLLUP: &str = "Nats-Rollup";
pub const STREAM_SOURCE: &str = "Nats-Stream-Source";

/// The first value of header `name` in `block` (names compare case-insensitively, as MIME
/// headers do; nats-server writes and clients send the canonical spelling).
/// Other headers may hold any bytes; the value asked for must be UTF-8.
pub fn get<'a>(block: &'a [u8], name: &str) -> Option<&'a str> {
    for line in fields(block) {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        if line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
        {
            return std::str::from_utf8(line[colon + 1..].trim_ascii()).ok();
        }
    }
    None
}

/// A status message's header block: `NATS/1.0 <code> <text>` and `extra` headers.
pub fn status(code: u16, text: &str, extra: &[(&str, String)]) -> Bytes {
    let mut b = BytesMut::with_capacity(32 + text.len());
    b.put_slice(format!("NATS/1.0 {code} {text}\r\n").as_bytes());
    for (k, v) in extra {
        b.put_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    b.put_slice(b"\r\n");
    b.freeze()
}

/// A header block of `fields` followed by the headers of `existing` (if any).
pub fn with(fields: &[(&str, &str)], existing: Option<&[u8]>) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_slice(b"NATS/1.0\r\n");
    for (k, v) in fields {
        b.put_slice(k.as_bytes());
        b.put_slice(b": ");
        b.put_slice(v.as_bytes());
        b.put_slice(b"\r\n");
    }
    if let Some(e) = existing {
        // Skip the existing block's first line and keep its headers and final blank line.
        match e.windows(2).position(|w| w == b"\r\n") {
            Some(i) => b.put_slice(&e[i + 2..]),
            None => b.put_slice(b"\r\n"),
        }
    } else {
        b.put_slice(b"\r\n");
    }
    b.freeze()
}

/// The lines of a header block without their line ends: the first (`NATS/1.0...`), then its
/// headers up to the blank line that ends it.
fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The header lines of a block (after its first line, up to the blank line).
fn fields(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    lines(block).skip(1).take_while(|l| !l.is_empty())
}

/// `existing`'s block (its first line, and its headers but those `dropped` names) with
/// `name: value` added last, written straight into the new block.
pub fn replaced(
    existing: Option<&[u8]>,
    dropped: impl Fn(&[u8]) -> bool,
    name: &str,
    value: std::fmt::Arguments<'_>,
) -> Bytes {
    use std::fmt::Write as _;
    let existing = existing.unwrap_or_default();
    let mut b = BytesMut::with_capacity(existing.len() + name.len() + 64);
    match lines(existing)
        .next()
        .filter(|l| l.starts_with(b"NATS/1.0"))
    {
        Some(first) => b.put_slice(first),
        None => b.put_slice(b"NATS/1.0"),
    }
    b.put_slice(b"\r\n");
    for line in fields(existing) {
        let key = line.split(|&c| c == b':').next().unwrap_or_default();
        if !dropped(key.trim_ascii()) {
            b.put_slice(line);
            b.put_slice(b"\r\n");
        }
    }
    b.put_slice(name.as_bytes());
    b.put_slice(b": ");
    let _ = b.write_fmt(value);
    b.put_slice(b"\r\n\r\n");
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_blocks() {
        let block = b"NATS/1.0\r\nNats-Msg-Id: abc\r\nX: y \r\n\r\n";
        assert_eq!(get(block, MSG_ID), Some("abc"));
        assert_eq!(get(block, "x"), Some("y"));
        assert_eq!(get(block, "Z"), None);
        assert_eq!(
            &status(404, "No Messages", &[])[..],
            b"NATS/1.0 404 No Messages\r\n\r\n"
        );
        let w = with(&[("A", "1")], Some(block));
        assert_eq!(
            &w[..],
            b"NATS/1.0\r\nA: 1\r\nNats-Msg-Id: abc\r\nX: y \r\n\r\n"
        );
        assert_eq!(&with(&[("A", "1")], None)[..], b"NATS/1.0\r\nA: 1\r\n\r\n");
    }

    #[test]
    fn replaces_headers_by_name() {
        let block = b"NATS/1.0\r\nNats-Msg-Id: abc\r\nNats-Expected-Stream: A\r\nX: y\r\n\r\n";
        let drop_expected = |k: &[u8]| k.starts_with(b"Nats-Expected-");
        assert_eq!(
            &replaced(
                Some(block),
                drop_expected,
                STREAM_SOURCE,
                format_args!("A 1 > >")
            )[..],
            b"NATS/1.0\r\nNats-Msg-Id: abc\r\nX: y\r\nNats-Stream-Source: A 1 > >\r\n\r\n"
        );
        assert_eq!(
            &replaced(None, drop_expected, "K", format_args!("v"))[..],
            b"NATS/1.0\r\nK: v\r\n\r\n"
        );
        // Whatever the block holds, the result is one block that ends where it should.
        for junk in [
            &b""[..],
            b"garbage",
            b"NATS/1.0\r\n",
            b"NATS/1.0\r\nno colon\r\n",
        ] {
            let r = replaced(Some(junk), |_| false, "K", format_args!("v"));
            assert!(
                r.starts_with(b"NATS/1.0") && r.ends_with(b"K: v\r\n\r\n"),
                "{r:?}"
            );
            assert_eq!(get(&r, "K"), Some("v"));
        }
    }
}

//! The primitives of the wire format, shared by [`super::decode`], [`super::encode`] and
//! [`super::properties`]: reading fields of a packet body ([`Reader`], variable byte integers),
//! writing them ([`Out`], [`put_var_int`], [`put_binary`]), and the checks every string of a
//! given kind gets (control characters, topic names).

use bytes::{Buf, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::packet::Utf8Bytes;
use super::{topic, MAX_REMAINING_LENGTH};

/// Checks a topic name that must not be empty (will topic, response topic) or may be (PUBLISH
/// with a topic alias).
pub(crate) fn check_topic_name(t: &Utf8Bytes, may_be_empty: bool) -> Result<(), DecodeError> {
    if !topic::is_valid_topic_name(t.as_bytes()) {
        return Err(DecodeError::WildcardInTopicName);
    }
    check_controls(t.as_bytes(), "topic name")?;
    if t.is_empty() && !may_be_empty {
        return Err(DecodeError::EmptyTopicName);
    }
    Ok(())
}

/// Refuses the control characters U+0001..U+001F and U+007F..U+009F in a valid UTF-8 string
/// (U+0000 is refused for every string already). In UTF-8 the second range is `C2 80`..`C2 9F`.
pub(crate) fn check_controls(s: &[u8], field: &'static str) -> Result<(), DecodeError> {
    let mut prev = 0u8;
    for &b in s {
        if b < 0x20 || b == 0x7F || (prev == 0xC2 && (0x80..=0x9F).contains(&b)) {
            return Err(DecodeError::ControlCharacter(field));
        }
        prev = b;
    }
    Ok(())
}

/// Parses a variable byte integer at the start of `b`: `Ok(None)` when `b` ends before it does.
/// At most 4 bytes, and in its shortest form ([MQTT-1.5.5-1]).
pub(crate) fn parse_var_int(b: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::BadVarInt);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::BadVarInt)
}

/// Reads the fields of one packet body.
pub(crate) struct Reader {
    /// What is left of the body (or of a property block).
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        let (value, n) = parse_var_int(&self.buf)?.ok_or(DecodeError::UnexpectedEnd)?;
        self.buf.advance(n);
        Ok(value)
    }

    /// The next `n` bytes, as a reader of their own.
    pub(crate) fn take(&mut self, n: usize) -> Result<Reader, DecodeError> {
        self.need(n)?;
        Ok(Reader::new(self.buf.split_to(n)))
    }

    /// Binary data: a two-byte length, then the bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = usize::from(self.u16()?);
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// A UTF-8 string: a two-byte length, then valid UTF-8 without U+0000.
    pub(crate) fn string(&mut self) -> Result<Utf8Bytes, DecodeError> {
        Ok(Utf8Bytes::try_from_bytes(self.binary()?)?)
    }

    /// Everything left (a payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Checks that nothing is left.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if !self.buf.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(())
    }
}

/// Where encoded bytes go: the output buffer, or a [`Counter`].
pub(crate) trait Out {
    /// Appends bytes.
    fn put(&mut self, bytes: &[u8]);
}

impl Out for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// An [`Out`] that only counts.
#[derive(Debug, Default)]
pub(crate) struct Counter(usize);

impl Counter {
    pub(crate) fn len(&self) -> usize {
        self.0
    }
}

impl Out for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Bytes a variable byte integer takes.
pub(crate) fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer (at most 268,435,455).
pub(crate) fn put_var_int<S: Out>(s: &mut S, mut v: usize) -> Result<(), EncodeError> {
    if v > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLarge);
    }
    let mut out = [0u8; 4];
    let mut n = 0;
    loop {
        // `v % 128` fits in 7 bits.
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        out[n] = byte;
        n += 1;
        if v == 0 {
            break;
        }
    }
    s.put(&out[..n]);
    Ok(())
}

/// Writes binary data: a two-byte length, then the bytes.
pub(crate) fn put_binary<S: Out>(s: &mut S, b: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong)?;
    s.put(&len.to_be_bytes());
    s.put(b);
    Ok(())
}

/// Writes a UTF-8 string (already checked when the [`Utf8Bytes`] was built).
pub(crate) fn put_string<S: Out>(s: &mut S, b: &[u8]) -> Result<(), EncodeError> {
    put_binary(s, b)
}

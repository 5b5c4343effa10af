//! Topic names and topic filters: the rules of the MQTT specifications, and the mapping between
//! MQTT topics and NATS subjects, rule for rule as nats-server maps them (server/mqtt.go), so a
//! NATS client sees MQTT traffic on the same subjects as it would with nats-server.
//!
//! MQTT to NATS ([`topic_to_subject`], [`filter_to_subjects`]):
//! - `/` separates levels and becomes `.`. Empty levels survive: a `/` that starts the topic, or
//!   follows a `/` written that way, becomes `/.`; a `/` that ends the topic or precedes another
//!   `/` becomes `./`; and a subject left ending in `.` gets a `/`. So `/` -> `/./`,
//!   `/foo` -> `/.foo`, `foo/` -> `foo./`, `foo//bar` -> `foo./.bar`.
//! - `.` inside a level becomes `//`: `spBv1.0/plant1` -> `spBv1//0.plant1`.
//! - In filters `+` becomes `*` and `#` becomes `>`; in topic names both are refused.
//! - Whitespace (space, tab, CR, LF, FF) and DEL are refused: they would corrupt NATS protocol
//!   lines.
//! - `*` and `>` are passed as they are: in a filter, a level made of one of them acts as a NATS
//!   wildcard, as with nats-server.
//! - A filter ending in `/#` also matches its parent topic (`a/#` matches `a`): the broker
//!   subscribes to a second subject, the filter's subject without its trailing `.>`.
//!
//! NATS to MQTT ([`subject_to_topic`]): `.` -> `/`, `/.` -> `/`, `//` -> `.`, and any other `/`
//! is dropped.

use bytes::Bytes;

use super::packet::Utf8Bytes;

/// The prefix of an MQTT 5.0 shared subscription: `$share/{group}/{filter}`.
pub const SHARED_PREFIX: &[u8] = b"$share/";

/// Whether `topic` may be a topic name as far as wildcards go: no `+`, no `#`
/// ([MQTT-3.3.2-2], [MQTT-4.7.1-1]). Emptiness is the caller's rule (a 5.0 PUBLISH with a topic
/// alias may have an empty topic name).
pub fn is_valid_topic_name(topic: &[u8]) -> bool {
    memchr::memchr2(b'+', b'#', topic).is_none()
}

/// Whether `filter` is a valid topic filter: not empty, `#` only as the whole last level, `+`
/// only as a whole level ([MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1]).
pub fn is_valid_topic_filter(filter: &[u8]) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split(|&b| b == b'/').peekable();
    while let Some(level) = levels.next() {
        if level.contains(&b'#') && (level != b"#" || levels.peek().is_some()) {
            return false;
        }
        if level.contains(&b'+') && level != b"+" {
            return false;
        }
    }
    true
}

/// Splits an MQTT 5.0 shared subscription `$share/{group}/{filter}` into its group and filter;
/// `None` when `filter` is not one or is malformed (empty group, `+` or `#` in the group, no
/// filter, invalid filter).
pub fn shared_subscription(filter: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = filter.strip_prefix(SHARED_PREFIX)?;
    let slash = memchr::memchr(b'/', rest)?;
    let (group, inner) = (&rest[..slash], &rest[slash + 1..]);
    if group.is_empty() || memchr::memchr2(b'+', b'#', group).is_some() {
        return None;
    }
    if !is_valid_topic_filter(inner) {
        return None;
    }
    Some((group, inner))
}

/// Why a topic or subject cannot be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// A wildcard (`+` or `#`) in a topic name.
    #[error("wildcards not allowed in a topic name")]
    Wildcard,
    /// Whitespace or DEL, which NATS subjects cannot carry.
    #[error("characters not supported in a subject")]
    UnsupportedCharacter,
    /// A NATS subject that is not an MQTT string (invalid UTF-8, or U+0000).
    #[error("subject is not a valid mqtt string")]
    NotAString,
}

/// The NATS subject an MQTT topic name is published on.
pub fn topic_to_subject(topic: &Bytes) -> Result<Bytes, TopicError> {
    to_subject(topic, false)
}

/// The NATS subjects an MQTT topic filter subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSubjects {
    /// The filter's subject.
    pub subject: Bytes,
    /// For a filter ending in `/#` (subject `x.>`): the parent subject `x`, which the broker
    /// subscribes to as well so that `a/#` also matches `a`.
    pub parent: Option<Bytes>,
}

/// The NATS subject (and, for `.../#`, the parent subject) of an MQTT topic filter. Wildcard
/// placement is not checked here (the decoder did, with [`is_valid_topic_filter`]); a shared
/// subscription's `$share/{group}/` prefix must be removed first ([`shared_subscription`]).
pub fn filter_to_subjects(filter: &Bytes) -> Result<FilterSubjects, TopicError> {
    let subject = to_subject(filter, true)?;
    // nats-server adds the parent subscription when the subject has more than one token and
    // ends with `.>`.
    let parent = (subject.len() >= 3 && subject.ends_with(b".>"))
        .then(|| subject.slice(..subject.len() - 2));
    Ok(FilterSubjects { subject, parent })
}

/// The MQTT topic name a message published on a NATS `subject` is delivered with.
pub fn subject_to_topic(subject: &Bytes) -> Result<Utf8Bytes, TopicError> {
    let topic = if memchr::memchr2(b'.', b'/', subject).is_none() {
        subject.clone()
    } else {
        let mut out = Vec::with_capacity(subject.len());
        let mut i = 0;
        while i < subject.len() {
            match subject[i] {
                // An escape and the character it escapes.
                b'/' => match subject.get(i + 1) {
                    Some(b'.') => {
                        out.push(b'/');
                        i += 1;
                    }
                    Some(b'/') => {
                        out.push(b'.');
                        i += 1;
                    }
                    // A lone `/` escapes nothing: dropped.
                    _ => {}
                },
                b'.' => out.push(b'/'),
                b => out.push(b),
            }
            i += 1;
        }
        Bytes::from(out)
    };
    Utf8Bytes::try_from_bytes(topic).map_err(|_| TopicError::NotAString)
}

/// Whether a byte is refused in topics and filters because NATS subjects cannot carry it.
fn unsupported(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0C | 0x7F)
}

/// Maps a topic name (`wildcards` false) or a topic filter (`wildcards` true) to a subject.
/// When nothing needs rewriting the input is returned as it is, without copying.
fn to_subject(mt: &Bytes, wildcards: bool) -> Result<Bytes, TopicError> {
    let plain = mt
        .iter()
        .all(|&b| !matches!(b, b'/' | b'.' | b'+' | b'#') && !unsupported(b));
    if plain {
        return Ok(mt.clone());
    }
    let mut out: Vec<u8> = Vec::with_capacity(mt.len() + 8);
    for (i, &b) in mt.iter().enumerate() {
        match b {
            b'/' => {
                if i == 0 || out.last() == Some(&b'.') {
                    // An empty level before this separator.
                    out.extend_from_slice(b"/.");
                } else if i + 1 == mt.len() || mt[i + 1] == b'/' {
                    // An empty level after it.
                    out.extend_from_slice(b"./");
                } else {
                    out.push(b'.');
                }
            }
            b'.' => out.extend_from_slice(b"//"),
            b'+' | b'#' if !wildcards => return Err(TopicError::Wildcard),
            b'+' => out.push(b'*'),
            b'#' => out.push(b'>'),
            b if unsupported(b) => return Err(TopicError::UnsupportedCharacter),
            b => out.push(b),
        }
    }
    if out.last() == Some(&b'.') {
        out.push(b'/');
    }
    Ok(Bytes::from(out))
}

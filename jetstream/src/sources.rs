//! Mirrors and sources between streams of one account: each round, a stream copies what its
//! sources gained since its recorded position.

use std::sync::Arc;

use bytes::Bytes;
use junction_core::sync::Lock;

use serde_json::{json, Value};

use crate::config::StreamSource;
use crate::headers;
use crate::service::{StreamEntry, Task};
use crate::stream::{Stream, StreamState};

impl Task {
    /// Mirrors and sourcing streams copy what their sources gained (within the account), for
    /// every touched source; a copy touches the copying stream, so chains follow (bounded).
    pub(crate) fn copy_sources(&mut self) {
        for _ in 0..8 {
            let mut more = Vec::new();
            for (acc, a) in &self.accounts {
                for (name, e) in &a.streams {
                    let (mirror, sources) = {
                        let st = e.stream.state.locked();
                        (st.config.mirror.clone(), st.config.sources.clone())
                    };
                    let list: Vec<(crate::config::StreamSource, bool)> = mirror
                        .into_iter()
                        .map(|m| (m, true))
                        .chain(sources.into_iter().map(|s| (s, false)))
                        .collect();
                    for (src, is_mirror) in list {
                        // Another JetStream's stream is copied by `crate::external`.
                        if crate::external::api_of(&src).is_some() {
                            continue;
                        }
                        if !self.touched.contains(&(acc.clone(), src.name.clone())) {
                            continue;
                        }
                        let Some(from) = a.streams.get(&src.name) else {
                            continue;
                        };
                        if copy_from(&from.stream, &e.stream, &src, is_mirror) {
                            more.push((acc.clone(), name.clone()));
                        }
                    }
                }
            }
            let mut grew = false;
            for t in more {
                grew |= self.touched.insert(t);
            }
            if !grew {
                break;
            }
        }
    }
}

impl Task {
    /// The stream's `mirror` and `sources` in its info, as nats-server reports them: each
    /// origin, how many of its messages are not copied yet (`lag`), and nanoseconds since it
    /// was last heard from (`active`: 0 for a stream of this account, -1 before an external
    /// origin answered).
    pub(crate) fn source_info(&self, acc: &str, e: &StreamEntry, info: &mut Value) {
        let (mirror, sources, sourced, last) = {
            let st = e.stream.state.locked();
            (
                st.config.mirror.clone(),
                st.config.sources.clone(),
                st.sourced.clone(),
                st.last_seq,
            )
        };
        let one = |src: &StreamSource, is_mirror: bool| -> Value {
            let mut v = json!({"name": src.name, "lag": 0, "active": 0});
            if !src.filter_subject.is_empty() {
                v["filter_subject"] = json!(src.filter_subject);
            }
            if !src.subject_transforms.is_empty() {
                v["subject_transforms"] = json!(src.subject_transforms);
            }
            if let Some(x) = src.other.get("external") {
                v["external"] = x.clone();
                let key = (
                    acc.to_string(),
                    e.stream.name.clone(),
                    crate::external::iname(src),
                );
                match self.externals.get(&key) {
                    Some(x) => x.report(&mut v),
                    None => v["active"] = json!(-1),
                }
                return v;
            }
            let Some(origin) = self
                .accounts
                .get(acc)
                .and_then(|a| a.streams.get(&src.name))
            else {
                return v;
            };
            let from = sourced
                .get(&position_key(&sources, src, is_mirror))
                .copied()
                .unwrap_or(if is_mirror {
                    last + 1
                } else {
                    src.opt_start_seq.max(1) as u64
                });
            let filters = src.filters();
            v["lag"] = json!(origin
                .stream
                .state
                .locked()
                .count_from(from, &filters, false));
            v
        };
        if let Some(m) = &mirror {
            info["mirror"] = one(m, true);
        }
        if !sources.is_empty() {
            info["sources"] = Value::Array(sources.iter().map(|s| one(s, false)).collect());
        }
    }
}

/// Copies what `from` holds past `to`'s position for it (at most 10,000 messages a round);
/// returns whether anything was copied.
fn copy_from(
    from: &Arc<Stream>,
    to: &Arc<Stream>,
    src: &crate::config::StreamSource,
    is_mirror: bool,
) -> bool {
    let (key, start) = {
        let st = to.state.locked();
        let key = position_key(&st.config.sources, src, is_mirror);
        let start = st.sourced.get(&key).copied();
        (
            key,
            start.unwrap_or_else(|| (src.opt_start_seq.max(1)) as u64),
        )
    };
    // With subject transforms, what their sources match is copied, renamed by the first that
    // matches; otherwise what the filter matches, as it is.
    let filters = src.filters();
    let (msgs, next) = {
        let st = from.state.locked();
        let mut msgs = Vec::new();
        let mut seq = start;
        while msgs.len() < 10_000 {
            let Some(s) = st.next_matching(seq, &filters) else {
                break;
            };
            if let Some(m) = st.load(s) {
                msgs.push(m);
            }
            seq = s + 1;
        }
        let next = if msgs.len() < 10_000 {
            st.last_seq + 1
        } else {
            seq
        };
        (msgs, next.max(start))
    };
    if next == start {
        return false;
    }
    let tag = (!is_mirror).then(|| SourceTag::of(src));
    for m in &msgs {
        let renamed = src.rename(&m.subject);
        match (&tag, renamed) {
            (Some(tag), renamed) => {
                // The copy and the position past it change together (the position first: the
                // publication may save the stream's metadata), so that whenever the metadata
                // is saved, the positions saved with it cover every copy it counts.
                let subject = renamed.unwrap_or_else(|| m.subject.clone());
                let headers = tag.header(m.seq, m.headers.as_deref());
                let mut st = to.state.locked();
                set_position(&mut st, &key, m.seq + 1);
                let _ =
                    to.publish_locked(&mut st, &subject, Some(&headers), m.payload.clone(), m.ts);
            }
            (None, Some(subject)) => to.mirror_append(&crate::stream::StoredMsg {
                seq: m.seq,
                subject,
                headers: m.headers.clone(),
                payload: m.payload.clone(),
                ts: m.ts,
                on_disk: None,
            }),
            (None, None) => to.mirror_append(m),
        }
    }
    let mut st = to.state.locked();
    set_position(&mut st, &key, next);
    to.save_meta(&mut st);
    !msgs.is_empty()
}

/// What nats-server 2.10 writes in the `Nats-Stream-Source` header of every message a stream
/// copies from one of its sources (a mirror's copies carry none): `<origin> <sequence>
/// <filter> <destination>`. The origin is the stream's name, with `:<hash of the API prefix>`
/// for another JetStream's; filter and destination are those of the source's index name.
/// The header tells a reader where a message came from, and tells the copying stream after a
/// restart how far each source had been copied.
pub(crate) struct SourceTag {
    origin: String,
    rest: String,
}

impl SourceTag {
    pub(crate) fn of(src: &StreamSource) -> SourceTag {
        let mut origin = src.name.clone();
        let api = src.other.get("external").and_then(|e| e.get("api"));
        if let Some(api) = api.and_then(Value::as_str).filter(|a| !a.is_empty()) {
            origin.push(':');
            origin.push_str(&name_hash(api));
        }
        SourceTag {
            origin,
            rest: crate::external::index_rest(src),
        }
    }

    /// The copy of origin message `seq`'s headers: without `Nats-Stream-Source` (in a chain
    /// of sources, only the last one is named) and `Nats-Expected-*` (the origin's checks,
    /// made when it stored the message), and with this source's header.
    pub(crate) fn header(&self, seq: u64, existing: Option<&[u8]>) -> Bytes {
        let dropped = |k: &[u8]| {
            k.eq_ignore_ascii_case(headers::STREAM_SOURCE.as_bytes())
                || k.get(..EXPECTED.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(EXPECTED.as_bytes()))
        };
        let value = format_args!("{} {seq} {}", self.origin, self.rest);
        headers::replaced(existing, dropped, headers::STREAM_SOURCE, value)
    }

    /// The origin sequence a `Nats-Stream-Source` value names, when it names this source.
    pub(crate) fn seq_in(&self, value: &str) -> Option<u64> {
        let (origin, rest) = value.split_once(' ')?;
        let (seq, rest) = rest.split_once(' ')?;
        (origin == self.origin && rest == self.rest)
            .then(|| seq.parse().ok())
            .flatten()
    }
}

const EXPECTED: &str = "Nats-Expected-";

/// Sets the copying stream's position for the source kept under `key`.
pub(crate) fn set_position(st: &mut StreamState, key: &str, next: u64) {
    match st.sourced.get_mut(key) {
        Some(n) => *n = next,
        None => {
            st.sourced.insert(key.to_string(), next);
        }
    }
}

/// nats-server's 8-character hash of a name (of an external source's API prefix, in the
/// header): SHA-256, each of the first 8 bytes mapped to one of 62 letters and digits.
fn name_hash(name: &str) -> String {
    use sha2::Digest;
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    sha2::Sha256::digest(name.as_bytes())[..8]
        .iter()
        .map(|b| DIGITS[(*b % 62) as usize] as char)
        .collect()
}

/// Where a copying stream keeps its position for `src` in [`StreamState::sourced`]: another
/// JetStream's source under its index name; a local one under its stream's name, or under its
/// index name when the stream takes that stream more than once (with other filters).
pub(crate) fn position_key(
    sources: &[StreamSource],
    src: &StreamSource,
    is_mirror: bool,
) -> String {
    let local = |s: &StreamSource| crate::external::api_of(s).is_none();
    let repeated = || {
        sources
            .iter()
            .filter(|s| s.name == src.name && local(s))
            .count()
            > 1
    };
    if !local(src) || (!is_mirror && repeated()) {
        crate::external::iname(src)
    } else {
        src.name.clone()
    }
}

/// The most messages [`recover_positions`] reads back, newest first.
const RECOVER_SCAN: u64 = 100_000;

/// After a restart: each source's saved position (saved with the stream's metadata, which
/// held `saved_last` as the stream's last sequence) moved past the copies stored after that
/// save, as the newest of their headers tells. A crash between storing copies and saving the
/// position then copies nothing twice. The copies of a round come right before the crash, so
/// the last [`RECOVER_SCAN`] messages are read at most.
pub(crate) fn recover_positions(st: &mut StreamState, saved_last: u64) {
    if st.config.sources.is_empty() || saved_last >= st.last_seq {
        return;
    }
    let sources = &st.config.sources;
    let mut tags: Vec<(String, SourceTag)> = sources
        .iter()
        .map(|src| (position_key(sources, src, false), SourceTag::of(src)))
        .collect();
    let lowest = (saved_last + 1).max(st.last_seq.saturating_sub(RECOVER_SCAN - 1));
    let mut seq = st.last_seq;
    while seq >= lowest && !tags.is_empty() {
        if let Some(value) = st.load(seq).and_then(|m| {
            let h = m.headers.as_deref()?;
            headers::get(h, headers::STREAM_SOURCE).map(str::to_string)
        }) {
            // The newest copy of each source says how far it got; older ones (or a client's
            // message that only looks like one) say nothing more.
            let named = tags
                .iter()
                .enumerate()
                .find_map(|(i, (_, t))| Some((i, t.seq_in(&value)?)));
            if let Some((i, from)) = named {
                let (key, _) = tags.swap_remove(i);
                let from = from.min(i64::MAX as u64);
                let next = st.sourced.entry(key).or_insert(0);
                *next = (*next).max(from + 1);
            }
        }
        seq -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(v: Value) -> StreamSource {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_source_header_is_nats_servers() {
        let tag = SourceTag::of(&src(json!({"name": "ORDERS"})));
        let h = tag.header(
            7,
            Some(b"NATS/1.0\r\nNats-Msg-Id: 1\r\nNats-Expected-Stream: ORDERS\r\nNats-Stream-Source: X 1 > >\r\n\r\n"),
        );
        assert_eq!(
            &h[..],
            b"NATS/1.0\r\nNats-Msg-Id: 1\r\nNats-Stream-Source: ORDERS 7 > >\r\n\r\n"
        );
        assert_eq!(tag.seq_in("ORDERS 7 > >"), Some(7));
        assert_eq!(tag.seq_in("ORDERS 7 orders.eu >"), None);
        assert_eq!(tag.seq_in("OTHER 7 > >"), None);
        assert_eq!(tag.seq_in("ORDERS x > >"), None);
        let filtered = SourceTag::of(&src(json!({"name": "O", "filter_subject": "o.eu"})));
        assert_eq!(get_value(&filtered.header(2, None)), "O 2 o.eu >");
        let moved = SourceTag::of(&src(json!({"name": "O", "subject_transforms": [
            {"src": "a.*", "dest": "b.{{wildcard(1)}}"}, {"src": "c", "dest": ""}]})));
        assert_eq!(
            get_value(&moved.header(3, None)),
            "O 3 a.*\u{c}c b.{{wildcard(1)}}\u{c}>"
        );
        // Another JetStream's stream: its name and the hash of the API prefix, as nats-server
        // computes it (sha256, 62 digits).
        let far = SourceTag::of(&src(
            json!({"name": "O", "external": {"api": "$JS.hub.API"}}),
        ));
        let v = get_value(&far.header(4, None));
        let (origin, rest) = v.split_once(' ').unwrap();
        assert_eq!(rest, "4 > >");
        assert_eq!(origin, format!("O:{}", name_hash("$JS.hub.API")));
        assert_eq!(origin.len(), "O:".len() + 8);
        assert!(origin[2..].chars().all(|c| c.is_ascii_alphanumeric()));
    }

    fn get_value(block: &[u8]) -> String {
        headers::get(block, headers::STREAM_SOURCE)
            .unwrap()
            .to_string()
    }
}

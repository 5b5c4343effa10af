//! Mirrors and sources between streams of one account: each round, a stream copies what its
//! sources gained since its recorded position.

use std::sync::Arc;

use junction_core::sync::Lock;

use serde_json::{json, Value};

use crate::config::StreamSource;
use crate::service::{StreamEntry, Task};
use crate::stream::Stream;

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
            let from = sourced.get(&src.name).copied().unwrap_or(if is_mirror {
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
    let start = to
        .state
        .locked()
        .sourced
        .get(&src.name)
        .copied()
        .unwrap_or_else(|| (src.opt_start_seq.max(1)) as u64);
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
    for m in &msgs {
        let renamed = src.rename(&m.subject);
        if is_mirror {
            match renamed {
                Some(subject) => to.mirror_append(&crate::stream::StoredMsg {
                    seq: m.seq,
                    subject,
                    headers: m.headers.clone(),
                    payload: m.payload.clone(),
                    ts: m.ts,
                    on_disk: None,
                }),
                None => to.mirror_append(m),
            }
        } else {
            let subject = renamed.unwrap_or_else(|| m.subject.clone());
            let _ = to.publish(&subject, m.headers.as_ref(), m.payload.clone(), m.ts);
        }
    }
    let mut st = to.state.locked();
    st.sourced.insert(src.name.clone(), next);
    to.save_meta(&mut st);
    !msgs.is_empty()
}

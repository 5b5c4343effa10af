//! Drives the subject index with inserts, removals and matches chosen by the input (subjects up
//! to thousands of tokens deep), and checks every match against the naive matcher
//! (`subject::matches`), and that removing everything leaves no node behind. Nothing may panic
//! or recurse: the target runs on a thread with a small stack.

#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use junction_core::{
    subject, ConnId, Delivery, FlushBatch, MatchCache, Message, Sink, Sublist, Subscription,
};
use libfuzzer_sys::fuzz_target;

struct Nothing;

impl Sink for Nothing {
    fn deliver(&self, _: &Subscription, _: &Message, _: &mut FlushBatch) -> Delivery {
        Delivery::Queued
    }
    fn flush(&self) {}
}

/// A subject from a few input bytes: each byte is a token (`*`, `>`, a short literal, or a
/// run of many identical tokens, so that deep subjects are cheap to express).
fn subject_of(bytes: &[u8]) -> String {
    let mut tokens: Vec<String> = Vec::new();
    for &b in bytes {
        match b % 8 {
            0 => tokens.push("*".into()),
            1 => tokens.push(">".into()),
            2 => tokens.extend(std::iter::repeat("d".to_string()).take(usize::from(b) * 16)),
            3 => tokens.push(String::new()),
            _ => tokens.push(((b'a' + b % 3) as char).to_string()),
        }
    }
    tokens.join(".")
}

fn run(data: &[u8]) {
    let list = Sublist::new();
    let mut cache = MatchCache::default();
    let sink: Arc<dyn Sink> = Arc::new(Nothing);
    let mut live: Vec<Arc<Subscription>> = Vec::new();
    for op in data.chunks(6) {
        let (&kind, rest) = match op.split_first() {
            Some(x) => x,
            None => continue,
        };
        let s = subject_of(rest);
        match kind % 4 {
            0 | 1 => {
                let queue = (kind & 0x10 != 0).then(|| Bytes::from_static(b"q"));
                let sub = Arc::new(Subscription::new(
                    ConnId(1),
                    Bytes::from(s.clone()),
                    queue,
                    Bytes::new(),
                    false,
                    sink.clone(),
                ));
                let valid = subject::is_valid_subject(s.as_bytes());
                assert_eq!(list.insert(sub.clone()).is_ok(), valid);
                if valid {
                    live.push(sub);
                }
            }
            2 if !live.is_empty() => {
                let sub = live.swap_remove(usize::from(kind) % live.len());
                assert!(list.remove(&sub));
            }
            _ => {
                let got = cache.lookup(&list, &Bytes::from(s.clone()));
                let n = got.psubs.len() + got.qsubs.iter().map(|g| g.members.len()).sum::<usize>();
                if subject::is_valid_literal_subject(s.as_bytes()) {
                    let want = live
                        .iter()
                        .filter(|x| subject::matches(&x.subject, s.as_bytes()))
                        .count();
                    assert_eq!(n, want, "{s:?}");
                } else if s.split('.').any(str::is_empty) {
                    assert_eq!(n, 0, "a subject with an empty token matched: {s:?}");
                }
            }
        }
    }
    assert_eq!(list.count(), live.len());
    for sub in live.drain(..) {
        assert!(list.remove(&sub));
    }
    assert_eq!(list.nodes(), 0);
}

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || run(&data))
        .expect("a thread")
        .join()
        .expect("no panic");
});

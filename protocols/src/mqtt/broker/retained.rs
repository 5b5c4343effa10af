//! Retained messages in a topic index: a trie per account, one level per subject token, so a
//! SUBSCRIBE finds the retained messages its filter matches by walking the levels the filter
//! names (all of them only under a wildcard), not by scanning every retained message. Every
//! walk is iterative: topics are as deep as their publishers like.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use junction_core::sync::ReadWrite;
use junction_core::Message;

/// A retained message, as it was published.
#[derive(Clone)]
pub(crate) struct Retained {
    pub(crate) msg: Message,
    pub(crate) qos: u8,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<[u8]>, Node>,
    value: Option<Retained>,
}

impl Drop for Node {
    /// Takes the levels below apart one at a time (the default drop recurses once per level).
    fn drop(&mut self) {
        let mut below: Vec<Node> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut n) = below.pop() {
            below.extend(n.children.drain().map(|(_, n)| n));
        }
    }
}

/// The retained messages of every account.
#[derive(Default)]
pub(crate) struct RetainedIndex {
    accounts: RwLock<HashMap<String, Node>>,
}

fn tokens(subject: &[u8]) -> impl Iterator<Item = &[u8]> {
    subject.split(|b| *b == b'.')
}

impl RetainedIndex {
    /// Keeps `msg` as the retained message of its subject in `account` (its subject and payload
    /// copied, so a publisher's read buffer is not kept alive), or clears it when its payload
    /// is empty.
    pub(crate) fn set(&self, account: &str, msg: &Message, qos: u8) {
        let mut accounts = self.accounts.write_locked();
        if msg.payload.is_empty() {
            if let Some(root) = accounts.get_mut(account) {
                remove(root, &msg.subject);
            }
            return;
        }
        let mut node = accounts.entry(account.to_string()).or_default();
        for t in tokens(&msg.subject) {
            node = node.children.entry(t.into()).or_default();
        }
        let mut kept = msg.clone();
        kept.subject = Bytes::copy_from_slice(&msg.subject);
        kept.payload = Bytes::copy_from_slice(&msg.payload);
        node.value = Some(Retained { msg: kept, qos });
    }

    /// Puts back a retained message read from the store (its bytes are its own already).
    pub(crate) fn restore(&self, account: &str, subject: &Bytes, retained: Retained) {
        let mut accounts = self.accounts.write_locked();
        let mut node = accounts.entry(account.to_string()).or_default();
        for t in tokens(subject) {
            node = node.children.entry(t.into()).or_default();
        }
        node.value = Some(retained);
    }

    /// The retained messages of `account` whose subjects `filter` (a subject with `*` and `>`)
    /// matches, with the MQTT rule that a leading wildcard does not match a topic that starts
    /// with `$`.
    pub(crate) fn matching(&self, account: &str, filter: &[u8]) -> Vec<Retained> {
        let accounts = self.accounts.read_locked();
        let Some(root) = accounts.get(account) else {
            return Vec::new();
        };
        let filter: Vec<&[u8]> = tokens(filter).collect();
        let mut out = Vec::new();
        let mut stack: Vec<(&Node, usize)> = vec![(root, 0)];
        while let Some((node, depth)) = stack.pop() {
            let Some(token) = filter.get(depth) else {
                if let Some(v) = &node.value {
                    out.push(v.clone());
                }
                continue;
            };
            let visible = |name: &[u8]| depth > 0 || name.first() != Some(&b'$');
            match *token {
                b">" => {
                    // One or more levels: everything below this node.
                    let mut below: Vec<&Node> = node
                        .children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, n)| n)
                        .collect();
                    while let Some(n) = below.pop() {
                        if let Some(v) = &n.value {
                            out.push(v.clone());
                        }
                        below.extend(n.children.values());
                    }
                }
                b"*" => stack.extend(
                    node.children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, n)| (n, depth + 1)),
                ),
                literal => {
                    if let Some(n) = node.children.get(literal) {
                        stack.push((n, depth + 1));
                    }
                }
            }
        }
        out
    }

    /// How many retained messages there are.
    #[cfg(test)]
    fn len(&self) -> usize {
        let accounts = self.accounts.read_locked();
        let mut n = 0;
        let mut stack: Vec<&Node> = accounts.values().collect();
        while let Some(node) = stack.pop() {
            n += usize::from(node.value.is_some());
            stack.extend(node.children.values());
        }
        n
    }
}

/// Clears the retained message of `subject` under `root` and prunes the nodes left empty.
fn remove(root: &mut Node, subject: &[u8]) {
    let path: Vec<&[u8]> = tokens(subject).collect();
    // The shallowest depth from which the path holds nothing else: the branch from there goes.
    let mut cut: Option<usize> = None;
    {
        let mut node = &*root;
        for (d, t) in path.iter().enumerate() {
            let Some(child) = node.children.get(*t) else {
                return;
            };
            let last = d + 1 == path.len();
            let sole = if last {
                child.children.is_empty()
            } else {
                child.value.is_none() && child.children.len() == 1
            };
            if !sole {
                cut = None;
            } else if cut.is_none() {
                cut = Some(d);
            }
            node = child;
        }
    }
    let stop = cut.unwrap_or(path.len() - 1);
    let mut node = root;
    for t in &path[..stop] {
        match node.children.get_mut(*t) {
            Some(n) => node = n,
            None => return,
        }
    }
    if cut.is_some() {
        node.children.remove(path[stop]);
    } else if let Some(n) = node.children.get_mut(path[stop]) {
        n.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_core::ConnId;

    fn msg(subject: &str, payload: &str) -> Message {
        Message::new(
            Bytes::copy_from_slice(subject.as_bytes()),
            None,
            Bytes::copy_from_slice(payload.as_bytes()),
            ConnId(1),
        )
    }

    fn subjects(idx: &RetainedIndex, filter: &str) -> Vec<String> {
        let mut v: Vec<String> = idx
            .matching("A", filter.as_bytes())
            .iter()
            .map(|r| String::from_utf8(r.msg.subject.to_vec()).unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn filters_find_what_they_match_and_dollar_topics_hide_from_leading_wildcards() {
        let idx = RetainedIndex::default();
        for s in ["a", "a.b", "a.b.c", "a.x.c", "$SYS.up", "b"] {
            idx.set("A", &msg(s, "v"), 1);
        }
        idx.set("B", &msg("a.b", "other account"), 1);
        assert_eq!(subjects(&idx, "a.b"), ["a.b"]);
        assert_eq!(subjects(&idx, "a.*"), ["a.b"]);
        assert_eq!(subjects(&idx, "a.*.c"), ["a.b.c", "a.x.c"]);
        assert_eq!(subjects(&idx, "a.>"), ["a.b", "a.b.c", "a.x.c"]);
        assert_eq!(subjects(&idx, ">"), ["a", "a.b", "a.b.c", "a.x.c", "b"]);
        assert_eq!(subjects(&idx, "*"), ["a", "b"]);
        assert_eq!(subjects(&idx, "$SYS.>"), ["$SYS.up"]);
        assert_eq!(idx.len(), 7);
        idx.set("A", &msg("a.b", ""), 1);
        assert_eq!(subjects(&idx, "a.>"), ["a.b.c", "a.x.c"]);
        idx.set("A", &msg("a.b.c", ""), 1);
        idx.set("A", &msg("a.x.c", ""), 1);
        idx.set("A", &msg("nothing.here", ""), 1);
        assert_eq!(subjects(&idx, "a.>"), Vec::<String>::new());
        assert_eq!(subjects(&idx, "a"), ["a"]);
        assert_eq!(idx.len(), 4);
    }

    #[test]
    fn deep_topics_are_kept_matched_and_cleared_without_recursion() {
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(|| {
                let deep = vec!["d"; 50_000].join(".");
                let idx = RetainedIndex::default();
                idx.set("A", &msg(&deep, "v"), 0);
                assert_eq!(idx.matching("A", deep.as_bytes()).len(), 1);
                assert_eq!(idx.matching("A", b">").len(), 1);
                idx.set("A", &msg(&deep, ""), 0);
                assert_eq!(idx.len(), 0);
                idx.set("A", &msg(&deep, "again"), 0);
                drop(idx);
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
    }
}

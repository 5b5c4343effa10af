//! Subject index tests: fixed cases with the caches on and off, and a property test against the
//! naive matcher in `subject::matches`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use junction_core::subject;
use junction_core::{
    Account, ConnId, Delivery, DeliveryFacts, FlushBatch, MatchCache, Message, Sink, Sublist,
    Subscription,
};
use proptest::prelude::*;

/// Records what it was given, so tests can see where messages went.
#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<(Bytes, Bytes)>>,
}

impl Sink for Recorder {
    fn deliver(&self, sub: &Subscription, msg: &Message, _: &mut FlushBatch) -> Delivery {
        self.got
            .lock()
            .unwrap()
            .push((sub.sid.clone(), msg.subject.clone()));
        Delivery::Queued
    }
    fn flush(&self) {}
}

fn sub(sink: &Arc<Recorder>, subject: &str, queue: Option<&str>, sid: &str) -> Arc<Subscription> {
    Arc::new(Subscription::new(
        ConnId(1),
        Bytes::copy_from_slice(subject.as_bytes()),
        queue.map(|q| Bytes::copy_from_slice(q.as_bytes())),
        Bytes::copy_from_slice(sid.as_bytes()),
        false,
        sink.clone(),
    ))
}

fn sids(list: &Sublist, cache: &mut MatchCache, subject: &str) -> BTreeSet<String> {
    let r = cache.lookup(list, &Bytes::copy_from_slice(subject.as_bytes()));
    let mut out: BTreeSet<String> = r
        .psubs
        .iter()
        .map(|s| String::from_utf8(s.sid.to_vec()).unwrap())
        .collect();
    for g in &r.qsubs {
        for s in &g.members {
            out.insert(String::from_utf8(s.sid.to_vec()).unwrap());
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn fixed_cases(shared_cache: bool, local_cache: bool) {
    let list = Sublist::with_cache(shared_cache);
    let mut cache = MatchCache::new(local_cache);
    let rec = Arc::new(Recorder::default());
    let subs = [
        sub(&rec, "foo.bar", None, "1"),
        sub(&rec, "foo.*", None, "2"),
        sub(&rec, "foo.>", None, "3"),
        sub(&rec, ">", None, "4"),
        sub(&rec, "*.bar", Some("q"), "5"),
        sub(&rec, "foo.bar.baz", None, "6"),
    ];
    for s in &subs {
        list.insert(s.clone()).unwrap();
    }
    assert_eq!(list.count(), 6);
    assert_eq!(
        sids(&list, &mut cache, "foo.bar"),
        set(&["1", "2", "3", "4", "5"])
    );
    assert_eq!(sids(&list, &mut cache, "foo"), set(&["4"]));
    assert_eq!(
        sids(&list, &mut cache, "foo.bar.baz"),
        set(&["3", "4", "6"])
    );
    assert_eq!(sids(&list, &mut cache, "x.bar"), set(&["4", "5"]));
    // A removal must be seen through both caches at once.
    assert!(list.remove(&subs[3]));
    assert!(!list.remove(&subs[3]));
    assert_eq!(sids(&list, &mut cache, "foo"), set(&[]));
    assert_eq!(
        sids(&list, &mut cache, "foo.bar"),
        set(&["1", "2", "3", "5"])
    );
    // So must an insertion.
    list.insert(sub(&rec, "foo", None, "7")).unwrap();
    assert_eq!(sids(&list, &mut cache, "foo"), set(&["7"]));
    for s in &subs {
        list.remove(s);
    }
    assert_eq!(list.count(), 1);
    assert_eq!(sids(&list, &mut cache, "foo.bar"), set(&[]));
}

#[test]
fn fixed_cases_with_caches_on() {
    fixed_cases(true, true);
}

#[test]
fn fixed_cases_with_caches_off() {
    fixed_cases(false, false);
    fixed_cases(true, false);
    fixed_cases(false, true);
}

#[test]
fn invalid_subjects_are_refused() {
    let list = Sublist::new();
    let rec = Arc::new(Recorder::default());
    for bad in ["", "foo.", "foo..bar", "foo.>.bar", "a b"] {
        assert!(list.insert(sub(&rec, bad, None, "1")).is_err(), "{bad:?}");
    }
    assert_eq!(list.count(), 0);
}

#[test]
fn queue_groups_spread_evenly_and_deliver_once() {
    let account = Account::new("A");
    let recs: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::new(Recorder::default())).collect();
    for (i, r) in recs.iter().enumerate() {
        account
            .subscribe(sub(r, "jobs", Some("workers"), &i.to_string()))
            .unwrap();
    }
    let plain = Arc::new(Recorder::default());
    account.subscribe(sub(&plain, "jobs", None, "p")).unwrap();
    let mut cache = MatchCache::default();
    let mut batch = FlushBatch::default();
    for _ in 0..300 {
        let msg = Message {
            subject: Bytes::from_static(b"jobs"),
            reply: None,
            headers: None,
            payload: Bytes::from_static(b"x"),
            facts: DeliveryFacts::from_origin(ConnId(9)),
            extra: None,
        };
        assert_eq!(account.publish(&mut cache, &msg, &mut batch), 2);
    }
    for r in &recs {
        assert_eq!(r.got.lock().unwrap().len(), 100);
    }
    assert_eq!(plain.got.lock().unwrap().len(), 300);
}

#[test]
fn max_msgs_removes_the_subscription() {
    let account = Account::new("A");
    let rec = Arc::new(Recorder::default());
    let s = sub(&rec, "a.*", None, "1");
    account.subscribe(s.clone()).unwrap();
    assert!(!s.set_max_msgs(2));
    let mut cache = MatchCache::default();
    let mut batch = FlushBatch::default();
    let msg = Message {
        subject: Bytes::from_static(b"a.b"),
        reply: None,
        headers: None,
        payload: Bytes::new(),
        facts: DeliveryFacts::from_origin(ConnId(9)),
        extra: None,
    };
    let delivered: usize = (0..5)
        .map(|_| account.publish(&mut cache, &msg, &mut batch))
        .sum();
    assert_eq!(delivered, 2);
    assert_eq!(account.sublist().count(), 0);
}

#[test]
fn no_local_skips_the_publishing_connection() {
    let account = Account::new("A");
    let rec = Arc::new(Recorder::default());
    let s = Arc::new(Subscription::new(
        ConnId(7),
        Bytes::from_static(b"x"),
        None,
        Bytes::from_static(b"1"),
        true,
        rec.clone(),
    ));
    account.subscribe(s).unwrap();
    let mut cache = MatchCache::default();
    let mut batch = FlushBatch::default();
    let mut msg = Message {
        subject: Bytes::from_static(b"x"),
        reply: None,
        headers: None,
        payload: Bytes::new(),
        facts: DeliveryFacts::from_origin(ConnId(7)),
        extra: None,
    };
    assert_eq!(account.publish(&mut cache, &msg, &mut batch), 0);
    msg.facts.origin = ConnId(8);
    assert_eq!(account.publish(&mut cache, &msg, &mut batch), 1);
}

/// A link's sink: records each copy with the queue groups it was handed for.
#[derive(Default)]
struct LinkRecorder {
    got: Mutex<Vec<(Bytes, Vec<Bytes>)>>,
}

impl Sink for LinkRecorder {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        self.got
            .lock()
            .unwrap()
            .push((msg.payload.clone(), batch.link_queues.clone()));
        Delivery::Queued
    }
    fn flush(&self) {}
}

fn proxy(
    link: &Arc<LinkRecorder>,
    conn: u64,
    subject: &str,
    queue: Option<&str>,
) -> Arc<Subscription> {
    Arc::new(
        Subscription::new(
            ConnId(conn),
            Bytes::copy_from_slice(subject.as_bytes()),
            queue.map(|q| Bytes::copy_from_slice(q.as_bytes())),
            Bytes::new(),
            true,
            link.clone(),
        )
        .into_remote(),
    )
}

fn msg_from(origin: u64, payload: &'static str) -> Message {
    Message {
        subject: Bytes::from_static(b"jobs.1"),
        reply: None,
        headers: None,
        payload: Bytes::from_static(payload.as_bytes()),
        facts: DeliveryFacts::from_origin(ConnId(origin)),
        extra: None,
    }
}

#[test]
fn links_get_one_copy_naming_their_queue_groups_and_local_members_come_first() {
    let account = Account::new("A");
    let link = Arc::new(LinkRecorder::default());
    let other = Arc::new(LinkRecorder::default());
    // Link 100's hub has two overlapping plain interests and two queue groups; link 200's one
    // member of group "w".
    for s in [
        proxy(&link, 100, "jobs.*", None),
        proxy(&link, 100, "jobs.>", None),
        proxy(&link, 100, "jobs.1", Some("w")),
        proxy(&link, 100, "jobs.*", Some("v")),
        proxy(&other, 200, "jobs.1", Some("w")),
    ] {
        account.subscribe(s).unwrap();
    }
    let local = Arc::new(Recorder::default());
    let mut cache = MatchCache::default();
    let mut batch = FlushBatch::default();

    // No local member of "w": one copy to link 100 (it has "v" too; "w" goes to one of the two
    // links), and none to link 200 unless it took "w".
    account.publish(&mut cache, &msg_from(9, "a"), &mut batch);
    let got = link.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let w_to_other = other.got.lock().unwrap().len();
    let mut queues = got[0].1.clone();
    queues.sort();
    if w_to_other == 1 {
        assert_eq!(queues, vec![Bytes::from_static(b"v")]);
    } else {
        assert_eq!(
            queues,
            vec![Bytes::from_static(b"v"), Bytes::from_static(b"w")]
        );
    }

    // A local member of "w" takes every "w" message from now on.
    account
        .subscribe(sub(&local, "jobs.1", Some("w"), "L"))
        .unwrap();
    link.got.lock().unwrap().clear();
    other.got.lock().unwrap().clear();
    for _ in 0..20 {
        account.publish(&mut cache, &msg_from(9, "b"), &mut batch);
    }
    assert_eq!(local.got.lock().unwrap().len(), 20);
    assert!(other.got.lock().unwrap().is_empty());
    let got = link.got.lock().unwrap().clone();
    assert_eq!(got.len(), 20);
    assert!(
        got.iter()
            .all(|(_, q)| q == &vec![Bytes::from_static(b"v")]),
        "{got:?}"
    );

    // A message that came over link 100 naming group "w": the local member takes it, nothing
    // goes back to link 100, and group "v" (not named) gets nothing.
    link.got.lock().unwrap().clear();
    local.got.lock().unwrap().clear();
    batch.routed_queues = Some(vec![Bytes::from_static(b"w")]);
    account.publish(&mut cache, &msg_from(100, "c"), &mut batch);
    batch.routed_queues = None;
    assert_eq!(local.got.lock().unwrap().len(), 1);
    assert!(link.got.lock().unwrap().is_empty());
    assert!(other.got.lock().unwrap().is_empty());
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("dd")].prop_map(str::to_string)
}

fn filter() -> impl Strategy<Value = String> {
    let tok = prop_oneof![4 => token(), 1 => Just("*".to_string())];
    (prop::collection::vec(tok, 1..4), any::<bool>()).prop_map(|(mut toks, fwc)| {
        if fwc {
            toks.push(">".to_string());
        }
        toks.join(".")
    })
}

fn literal() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String),
    Remove(usize),
    Match(String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => filter().prop_map(Op::Insert),
        1 => any::<usize>().prop_map(Op::Remove),
        4 => literal().prop_map(Op::Match),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Any sequence of inserts, removes and matches gives the naive matcher's answer, with the
    /// caches on and off.
    #[test]
    fn index_agrees_with_naive_matcher(ops in prop::collection::vec(op(), 1..60), caches in any::<bool>()) {
        let list = Sublist::with_cache(caches);
        let mut cache = MatchCache::new(caches);
        let rec = Arc::new(Recorder::default());
        let mut live: Vec<Arc<Subscription>> = Vec::new();
        let mut next = 0;
        for op in ops {
            match op {
                Op::Insert(f) => {
                    next += 1;
                    let s = sub(&rec, &f, None, &next.to_string());
                    list.insert(s.clone()).unwrap();
                    live.push(s);
                }
                Op::Remove(i) if !live.is_empty() => {
                    let s = live.remove(i % live.len());
                    prop_assert!(list.remove(&s));
                }
                Op::Remove(_) => {}
                Op::Match(subj) => {
                    let want: BTreeSet<String> = live
                        .iter()
                        .filter(|s| subject::matches(&s.subject, subj.as_bytes()))
                        .map(|s| String::from_utf8(s.sid.to_vec()).unwrap())
                        .collect();
                    prop_assert_eq!(sids(&list, &mut cache, &subj), want);
                }
            }
        }
        prop_assert_eq!(list.count(), live.len());
    }
}

/// Runs `f` on a thread with a small stack: anything that recursed once per subject token
/// would overflow it at the depths below.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the index recursed past a small stack");
}

#[test]
fn subjects_deeper_than_any_stack_are_inserted_matched_and_removed() {
    on_small_stack(|| {
        let depth = 100_000;
        let deep = vec!["a"; depth].join(".");
        let sibling = format!("{}.b", vec!["a"; depth - 1].join("."));
        let wild = format!("{}.*", vec!["a"; depth - 1].join("."));
        let list = Sublist::new();
        let rec = Arc::new(Recorder::default());
        let s1 = sub(&rec, &deep, None, "1");
        let s2 = sub(&rec, &sibling, None, "2");
        let s3 = sub(&rec, &wild, Some("q"), "3");
        for s in [&s1, &s2, &s3] {
            list.insert(s.clone()).unwrap();
        }
        let mut cache = MatchCache::new(false);
        assert_eq!(sids(&list, &mut cache, &deep), set(&["1", "3"]));
        assert_eq!(sids(&list, &mut cache, &sibling), set(&["2", "3"]));
        assert!(list.remove(&s1));
        assert!(!list.remove(&s1), "removed twice");
        assert_eq!(sids(&list, &mut cache, &deep), set(&["3"]));
        assert!(list.remove(&s3));
        assert_eq!(sids(&list, &mut cache, &sibling), set(&["2"]));
        // The last one prunes the whole branch; dropping it must not recurse either.
        assert!(list.remove(&s2));
        assert_eq!(list.count(), 0);
        assert_eq!(list.nodes(), 0);
        assert!(sids(&list, &mut cache, &sibling).is_empty());
        // An index dropped while it still holds a deep branch.
        let other = Sublist::new();
        other.insert(sub(&rec, &deep, None, "4")).unwrap();
        drop(other);
    });
}

#[test]
fn removal_keeps_what_shares_the_path() {
    let list = Sublist::new();
    let rec = Arc::new(Recorder::default());
    let subs = [
        sub(&rec, "a.b.c", None, "1"),
        sub(&rec, "a.b", None, "2"),
        sub(&rec, "a.b.c.d", None, "3"),
        sub(&rec, "a.*.c", Some("q"), "4"),
        sub(&rec, "a.*.c", Some("q"), "5"),
        sub(&rec, "a.>", None, "6"),
    ];
    for s in &subs {
        list.insert(s.clone()).unwrap();
    }
    let mut cache = MatchCache::new(false);
    assert!(list.remove(&subs[2]));
    assert_eq!(sids(&list, &mut cache, "a.b.c"), set(&["1", "4", "5", "6"]));
    assert!(list.remove(&subs[0]));
    assert_eq!(sids(&list, &mut cache, "a.b"), set(&["2", "6"]));
    assert_eq!(sids(&list, &mut cache, "a.b.c"), set(&["4", "5", "6"]));
    assert!(list.remove(&subs[3]));
    assert_eq!(sids(&list, &mut cache, "a.x.c"), set(&["5", "6"]));
    assert!(list.remove(&subs[4]));
    assert!(list.remove(&subs[5]));
    assert_eq!(sids(&list, &mut cache, "a.b"), set(&["2"]));
    assert!(sids(&list, &mut cache, "a.x.c").is_empty());
    assert!(list.remove(&subs[1]));
    assert_eq!(list.count(), 0);
    assert_eq!(list.nodes(), 0, "removal left nodes behind");
}

#[test]
fn removal_prunes_below_a_node_that_keeps_its_own_subscription() {
    let list = Sublist::new();
    let rec = Arc::new(Recorder::default());
    let a = sub(&rec, "a", None, "1");
    let ab = sub(&rec, "a.b.c", None, "2");
    list.insert(a.clone()).unwrap();
    list.insert(ab.clone()).unwrap();
    assert_eq!(list.nodes(), 3);
    assert!(list.remove(&ab));
    assert_eq!(list.nodes(), 1);
    assert!(list.remove(&a));
    assert_eq!(list.nodes(), 0);
    // Churning subjects leaves nothing behind.
    for i in 0..100 {
        let s = sub(&rec, &format!("x.{i}.y.{i}"), Some("q"), "3");
        list.insert(s.clone()).unwrap();
        assert!(list.remove(&s));
    }
    assert_eq!(list.nodes(), 0);
}

#[test]
fn subjects_with_empty_tokens_match_nothing() {
    let list = Sublist::new();
    let rec = Arc::new(Recorder::default());
    for (i, s) in [">", "*.secret.x", "secret.>", "*.*.x"].iter().enumerate() {
        list.insert(sub(&rec, s, None, &i.to_string())).unwrap();
    }
    let mut cache = MatchCache::default();
    for bad in [".secret.x", "secret..x", "secret.x.", "."] {
        assert!(sids(&list, &mut cache, bad).is_empty(), "{bad} matched");
    }
    assert_eq!(sids(&list, &mut cache, "a.secret.x"), set(&["0", "1", "3"]));
}

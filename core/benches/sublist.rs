//! Criterion benchmark of subject matching: the trie alone, the shared cache, and a publisher's
//! local cache.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use junction_core::{
    ConnId, Delivery, FlushBatch, MatchCache, Message, Sink, Sublist, Subscription,
};

struct Null;

impl Sink for Null {
    fn deliver(&self, _: &Subscription, _: &Message, _: &mut FlushBatch) -> Delivery {
        Delivery::Queued
    }
    fn flush(&self) {}
}

fn populate(list: &Sublist) {
    let sink: Arc<dyn Sink> = Arc::new(Null);
    let mut n = 0;
    for a in 0..10 {
        for b in 0..10 {
            for filter in [
                format!("svc.{a}.{b}.req"),
                format!("svc.{a}.*.req"),
                format!("svc.{a}.>"),
            ] {
                n += 1;
                let sub = Subscription::new(
                    ConnId(1),
                    Bytes::from(filter),
                    None,
                    Bytes::from(n.to_string()),
                    false,
                    sink.clone(),
                );
                list.insert(Arc::new(sub)).unwrap();
            }
        }
    }
}

fn bench_match(c: &mut Criterion) {
    let subject = Bytes::from_static(b"svc.3.7.req");
    let uncached = Sublist::with_cache(false);
    populate(&uncached);
    c.bench_function("match/trie", |b| {
        b.iter(|| black_box(uncached.match_subject(black_box(&subject))))
    });
    let cached = Sublist::new();
    populate(&cached);
    c.bench_function("match/shared-cache", |b| {
        b.iter(|| black_box(cached.match_subject(black_box(&subject))))
    });
    let mut local = MatchCache::default();
    c.bench_function("match/local-cache", |b| {
        b.iter(|| black_box(local.lookup(&cached, black_box(&subject)).psubs.len()))
    });
}

criterion_group!(benches, bench_match);
criterion_main!(benches);

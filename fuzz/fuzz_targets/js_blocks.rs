//! Feeds arbitrary bytes to the reader of JetStream's message blocks (what a damaged store
//! could hold): nothing may panic, and every message read back must write into a new block
//! that reads back the same.

#![no_main]

use bytes::Bytes;
use junction_jetstream::persist::{append_to_block, decode_entry, decode_shared, read_block};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, block)) = data.split_first_chunk::<8>() else {
        return;
    };
    let first = u64::from_le_bytes(*first) >> 16;
    let shared = Bytes::copy_from_slice(block);
    let mut msgs = Vec::new();
    let _ = read_block(first, block, &mut |seq, at| {
        let _ = decode_entry(&block[at.clone()]);
        if let Some(m) = decode_shared(seq, &shared.slice(at)) {
            msgs.push(m);
        }
        true
    });
    let mut again = Vec::new();
    for m in &msgs {
        append_to_block(&mut again, first, m);
    }
    let copy = Bytes::from(again.clone());
    let mut back = Vec::new();
    read_block(first, &again, &mut |seq, at| {
        back.push(decode_shared(seq, &copy.slice(at)).expect("a record we wrote reads back"));
        true
    })
    .expect("a block we wrote reads back");
    assert_eq!(back.len(), msgs.len());
    for (a, b) in back.iter().zip(&msgs) {
        assert_eq!(
            (a.seq, &a.subject, &a.headers, &a.payload, a.ts),
            (b.seq, &b.subject, &b.headers, &b.payload, b.ts)
        );
    }
});

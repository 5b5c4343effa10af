//! Feeds arbitrary data to the reader of stream snapshots (what a client uploads to a
//! restore): as it comes, and wrapped in valid Snappy framing after the snapshot's magic, so
//! that the records themselves are reached past the checksums. Nothing may panic, and a
//! message written by the snapshot writer reads back as it was.

#![no_main]

use std::io::Write;

use bytes::Bytes;
use junction_jetstream::api::backup::format::{read, Record, Writer, MAGIC};
use junction_jetstream::stream::StoredMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read(data, &mut |_| Ok(()));
    let mut framed = snap::write::FrameEncoder::new(Vec::new());
    framed.write_all(MAGIC).unwrap();
    framed.write_all(data).unwrap();
    let framed = framed.into_inner().unwrap();
    let _ = read(&framed[..], &mut |_| Ok(()));

    // What the writer writes reads back, whatever the subject, headers and payload hold.
    let (a, b) = data.split_at(data.len() / 2);
    let m = StoredMsg {
        seq: 1 + data.len() as u64,
        subject: Bytes::from(if a.is_empty() { b"s".to_vec() } else { a.to_vec() }),
        headers: (!b.is_empty()).then(|| Bytes::copy_from_slice(b)),
        payload: Bytes::copy_from_slice(data),
        ts: data.len() as i64,
        on_disk: None,
    };
    let mut w = Writer::default();
    w.meta(&serde_json::json!({"first_seq": 1}));
    w.msg(&m);
    w.end();
    let out = w.take(usize::MAX);
    let mut seen = 0;
    let n = read(&out[..], &mut |rec| {
        if let Record::Msg(got) = rec {
            assert_eq!((got.seq, got.ts), (m.seq, m.ts));
            assert_eq!((&got.subject, &got.headers, &got.payload), (&m.subject, &m.headers, &m.payload));
            seen += 1;
        }
        Ok(())
    })
    .expect("a written snapshot reads back");
    assert_eq!((n, seen), (1, 1));
});

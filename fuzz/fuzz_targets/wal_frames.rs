//! Feeds arbitrary bytes to the store's write-ahead log replay (what a torn or damaged log
//! could hold), as the log of a strict and of a relaxed epoch (`sync_interval`): nothing may
//! panic, whatever replays must write back as one frame that replays to the same operations,
//! and what a strict replay accepts a relaxed one replays the same.

#![no_main]

use junction_store::wal::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((epoch, log)) = data.split_first_chunk::<8>() else {
        return;
    };
    // Small epochs, so that generated frames match the one asked for now and then.
    let epoch = u64::from_le_bytes(*epoch) % 4;
    let strict = decode(log, epoch, false);
    let relaxed = decode(log, epoch, true);
    if let Ok(ops) = &strict {
        assert_eq!(relaxed.as_ref(), Ok(ops), "a relaxed replay stops where a strict one does");
    }
    for ops in [strict, relaxed].into_iter().flatten() {
        let again = decode(&encode(epoch, 1, &ops), epoch, false).expect("a frame we wrote replays");
        assert_eq!(again, ops);
    }
});

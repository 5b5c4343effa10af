//! Feeds arbitrary bytes to the store's write-ahead log replay (what a torn or damaged log
//! could hold): nothing may panic, and whatever replays must write back as one frame that
//! replays to the same operations.

#![no_main]

use junction_store::wal::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((epoch, log)) = data.split_first_chunk::<8>() else {
        return;
    };
    // Small epochs, so that generated frames match the one asked for now and then.
    let epoch = u64::from_le_bytes(*epoch) % 4;
    if let Ok(ops) = decode(log, epoch) {
        let again = decode(&encode(epoch, 1, &ops), epoch).expect("a frame we wrote replays");
        assert_eq!(again, ops);
    }
});

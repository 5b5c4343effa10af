//! Feeds arbitrary header blocks (what a client may publish, and a stream then copies) to
//! JetStream's header reader and to the rewrite a source's copy goes through: nothing may
//! panic, the rewritten block is one block that ends where it should, holds the added header
//! (read back by the same reader), and keeps no header that was to be dropped.

#![no_main]

use junction_jetstream::headers::{get, replaced, STREAM_SOURCE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = get(data, "Nats-Msg-Id");
    let _ = get(data, STREAM_SOURCE);
    let dropped = |k: &[u8]| {
        k.eq_ignore_ascii_case(STREAM_SOURCE.as_bytes())
            || k.get(..14).is_some_and(|p| p.eq_ignore_ascii_case(b"Nats-Expected-"))
    };
    let out = replaced(Some(data), dropped, STREAM_SOURCE, format_args!("S 1 > >"));
    assert!(out.starts_with(b"NATS/1.0"));
    assert!(out.ends_with(b"\r\n\r\n"));
    // The block ends at its first blank line: nothing of the input follows it.
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a blank line");
    assert_eq!(end + 4, out.len(), "{out:?}");
    // Whatever the other headers hold, the reader finds ours.
    assert_eq!(get(&out, STREAM_SOURCE), Some("S 1 > >"));
    if let Ok(text) = std::str::from_utf8(&out) {
        // Every header line but the first was kept or added; none to be dropped stays but ours.
        let mut lines = text.split("\r\n").skip(1).take_while(|l| !l.is_empty());
        assert!(lines.all(|l| {
            // Only ASCII whitespace pads a name, for the reader as for nats-server: a name
            // behind U+0085 (which `str::trim` would strip) is another name.
            let key = l.split(':').next().unwrap_or_default().as_bytes().trim_ascii();
            !dropped(key) || l == "Nats-Stream-Source: S 1 > >"
        }));
    }
});

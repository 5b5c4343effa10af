//! Feeds arbitrary bytes to the WebSocket frame decoder (with and without permessage-deflate),
//! whole and split at a point chosen by the input, and checks that both ways give the same
//! application bytes, the same control frames and the same error, and that nothing panics.
//! The same input is also offered to the handshake negotiation, whole and split.

#![no_main]

use bytes::BytesMut;
use junction_protocols::ws::frame::{Control, Decoder, FrameError};
use junction_protocols::ws::handshake::{negotiate, Origin, Policy};
use libfuzzer_sys::fuzz_target;

/// Small, so that the fuzzer also reaches the "message too big" path.
const MAX_MESSAGE: usize = 4096;

fn run(deflate: bool, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Control>, Option<FrameError>) {
    let mut d = Decoder::new(MAX_MESSAGE, deflate);
    let mut raw = BytesMut::new();
    let mut out = BytesMut::new();
    let mut controls = Vec::new();
    for chunk in chunks {
        raw.extend_from_slice(chunk);
        if let Err(e) = d.decode(&mut raw, &mut out, &mut controls) {
            return (out.to_vec(), controls, Some(e));
        }
    }
    (out.to_vec(), controls, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let deflate = first & 0x80 != 0;
    let split = usize::from(first & 0x7f) % (input.len() + 1);
    let whole = run(deflate, &[input]);
    let parts = run(deflate, &[&input[..split], &input[split..]]);
    // Without an error both ways agree on everything. With one, the error and the control
    // frames agree, and the application bytes handed on before it may differ only in how far a
    // streamed inflate got (one is a prefix of the other): the connection is closed either way.
    // One exception: a compressed message that is both corrupt and too big. The inflater
    // decodes ahead into its own window and reports corrupt data without handing on what it
    // decoded before it, so which of the two faults is seen first depends on how much input one
    // call had. Either refusal closes the connection.
    let corrupt_and_big = |a: &Option<FrameError>, b: &Option<FrameError>| {
        matches!(
            (a, b),
            (
                Some(FrameError::InvalidPayload("bad deflate data")),
                Some(FrameError::TooBig(_))
            )
        )
    };
    if !(deflate && (corrupt_and_big(&whole.2, &parts.2) || corrupt_and_big(&parts.2, &whole.2))) {
        assert_eq!(whole.2, parts.2);
    }
    assert_eq!(whole.1, parts.1);
    if whole.2.is_none() {
        assert_eq!(whole.0, parts.0);
    } else {
        let n = whole.0.len().min(parts.0.len());
        assert_eq!(whole.0[..n], parts.0[..n]);
    }

    let policy = Policy {
        same_origin: first & 1 != 0,
        compression: first & 2 != 0,
        mqtt: first & 4 != 0,
        allowed_origins: if first & 8 != 0 {
            vec![Origin::parse("http://127.0.0.1:8080").unwrap()]
        } else {
            Vec::new()
        },
        ..Policy::default()
    };
    let whole = negotiate(input, &policy);
    if let Ok(Some((_, used))) = &whole {
        assert!(*used <= input.len());
    }
    // A prefix is either incomplete or decided the same way as the whole.
    match negotiate(&input[..split], &policy) {
        Ok(None) => {}
        Ok(Some(prefix)) => assert_eq!(whole, Ok(Some(prefix))),
        Err(e) => assert_eq!(whole.map_err(|w| w.status), Err(e.status)),
    }
});

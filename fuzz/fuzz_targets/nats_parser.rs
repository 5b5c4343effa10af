//! Feeds arbitrary bytes to the NATS parser, whole and split at a point chosen by the input, and
//! checks that both ways give the same frames or the same error, and that nothing panics.

#![no_main]

use bytes::BytesMut;
use junction_protocols::nats::parser::{Decoder, Frame, Limits, ParseError};
use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]]) -> (Vec<Frame>, Option<ParseError>) {
    let mut d = Decoder::new(Limits {
        max_control_line: 64,
        max_payload: 256,
    });
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = usize::from(data[0]) % data.len();
    let input = &data[1..];
    let split = split.min(input.len());
    let whole = run(&[input]);
    let parts = run(&[&input[..split], &input[split..]]);
    assert_eq!(whole, parts);
});

//! Feeds arbitrary bytes to the leaf node protocol parser, whole and split at a point chosen by
//! the input: both ways give the same operations or the same error, nothing panics, and every
//! message's parts stay within the limits.

#![no_main]

use bytes::BytesMut;
use junction_protocols::leaf::proto::{parse, Limits, Op, ProtoError};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_control_line: 128,
    max_payload: 256,
};

fn run(chunks: &[&[u8]]) -> (Vec<Op>, Option<ProtoError>) {
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse(&mut buf, LIMITS) {
                Ok(Some(op)) => {
                    if let Op::Msg {
                        headers, payload, ..
                    } = &op
                    {
                        assert!(payload.len() + headers.as_ref().map_or(0, |h| h.len()) <= 256);
                    }
                    ops.push(op)
                }
                Ok(None) => break,
                Err(e) => return (ops, Some(e)),
            }
        }
    }
    (ops, None)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let input = &data[1..];
    let split = (usize::from(data[0]) % data.len()).min(input.len());
    let whole = run(&[input]);
    let parts = run(&[&input[..split], &input[split..]]);
    assert_eq!(whole, parts);
});

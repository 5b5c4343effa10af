//! Feeds arbitrary bytes to the MQTT decoder (server side), whole and split at a point chosen by
//! the input, and checks that both ways give the same packets or the same error, that nothing
//! panics, and that every decoded packet re-encodes and decodes to the same packet.

#![no_main]

use bytes::BytesMut;
use junction_protocols::mqtt::{encode, DecodeError, Decoder, Packet, Version};
use libfuzzer_sys::fuzz_target;

/// Small, so that the fuzzer also reaches the "packet too large" path.
const MAX_PACKET_SIZE: usize = 2048;

fn run(max: usize, chunks: &[&[u8]]) -> (Vec<Packet>, Option<DecodeError>, Option<Version>) {
    let mut d = Decoder::new(max);
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => return (packets, Some(e), d.protocol()),
            }
        }
    }
    (packets, None, d.protocol())
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let split = usize::from(first) % (input.len() + 1);
    let whole = run(MAX_PACKET_SIZE, &[input]);
    let parts = run(MAX_PACKET_SIZE, &[&input[..split], &input[split..]]);
    assert_eq!(whole, parts);

    // Without a CONNECT nothing was decoded.
    let (packets, _, Some(protocol)) = whole else {
        return;
    };
    let mut out = BytesMut::new();
    for p in &packets {
        encode(p, protocol, &mut out).expect("a decoded packet encodes");
    }
    let (again, err, _) = run(usize::MAX, &[&out]);
    assert_eq!(err, None);
    assert_eq!(again, packets);
});

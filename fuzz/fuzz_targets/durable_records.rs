//! Feeds arbitrary bytes to the decoders of the durable store's records (what a damaged or
//! foreign file could hold): none may panic, and whatever decodes must encode back to bytes
//! that decode to the same record.

#![no_main]

use junction_core::ConnId;
use junction_protocols::mqtt::durable::{
    decode_retained, decode_will, encode_retained, encode_will, split_retained_key,
    split_session_key, MessageRecord, SessionRecord,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(r) = MessageRecord::decode(data) {
        assert_eq!(MessageRecord::decode(&r.encode()), Some(r));
    }
    if let Some((msg, qos)) = decode_retained(data, ConnId(1)) {
        let (again, q2) = decode_retained(&encode_retained(&msg, qos), ConnId(1)).unwrap();
        assert_eq!(
            (again.subject, again.payload, q2),
            (msg.subject, msg.payload, qos)
        );
    }
    if let Some(w) = decode_will(data) {
        assert_eq!(decode_will(&encode_will(&w)), Some(w));
    }
    if let Some(s) = SessionRecord::decode(data) {
        assert_eq!(SessionRecord::decode(&s.encode()), Some(s));
    }
    let _ = split_session_key(data);
    let _ = split_retained_key(data);
});

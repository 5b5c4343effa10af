//! Drives JetStream's API with arbitrary requests (through the synchronous harness): the first
//! byte of each request picks an API subject (or a stream subject, or the last delivery's ack
//! subject), the rest is its body. Nothing may panic, every API answer must be JSON, and an
//! error must carry exactly nats-server's three fields.

#![no_main]

use junction_jetstream::harness::Harness;
use libfuzzer_sys::fuzz_target;

const SUBJECTS: &[&str] = &[
    "$JS.API.INFO",
    "$JS.API.STREAM.CREATE.S",
    "$JS.API.STREAM.UPDATE.S",
    "$JS.API.STREAM.INFO.S",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.PURGE.S",
    "$JS.API.STREAM.MSG.GET.S",
    "$JS.API.STREAM.MSG.DELETE.S",
    "$JS.API.STREAM.DELETE.S",
    "$JS.API.CONSUMER.CREATE.S",
    "$JS.API.CONSUMER.CREATE.S.C",
    "$JS.API.CONSUMER.DURABLE.CREATE.S.C",
    "$JS.API.CONSUMER.INFO.S.C",
    "$JS.API.CONSUMER.LIST.S",
    "$JS.API.CONSUMER.DELETE.S.C",
];

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    // A stream and a consumer to act on, so most requests reach deep.
    h.publish(b"$JS.API.STREAM.CREATE.S", Some(b"_INBOX.x"), br#"{"name":"S","subjects":["s.>"],"max_msgs":50}"#);
    let mut last_ack: Option<bytes::Bytes> = None;
    for req in data.split(|b| *b == 0xff).take(64) {
        let Some((&pick, body)) = req.split_first() else { continue };
        let n = pick as usize;
        let (subject, api): (Vec<u8>, bool) = match n % 24 {
            i if i < SUBJECTS.len() => (SUBJECTS[i].as_bytes().to_vec(), true),
            16 | 17 => (b"s.a".to_vec(), false),
            18 => (b"$JS.API.CONSUMER.MSG.NEXT.S.C".to_vec(), false),
            19 => (b"$JS.API.DIRECT.GET.S".to_vec(), false),
            20 => (b"$JS.API.DIRECT.GET.S.s.a".to_vec(), false),
            21 => {
                h.tick();
                continue;
            }
            _ => match &last_ack {
                Some(a) => (a.to_vec(), false),
                None => continue,
            },
        };
        let out = h.publish(&subject, Some(b"_INBOX.r"), body);
        for m in &out {
            if let Some(r) = &m.reply {
                if r.starts_with(b"$JS.ACK.") {
                    last_ack = Some(r.clone());
                }
            }
            if api && &m.subject[..] == b"_INBOX.r" {
                let v: serde_json::Value =
                    serde_json::from_slice(&m.payload).expect("an API answer is JSON");
                if let Some(e) = v.get("error") {
                    let keys: Vec<&String> = e.as_object().expect("an object").keys().collect();
                    assert_eq!(keys.len(), 3, "{e}");
                }
            }
        }
    }
});

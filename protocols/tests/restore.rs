//! Restoring durable MQTT state never turns one bad record into a broker that cannot start:
//! records that cannot be read (or restored) are logged, left out and counted, and everything
//! else comes back.

use std::sync::Arc;

use junction_core::Bus;
use junction_protocols::mqtt::broker::{MqttServer, Options};
use junction_protocols::mqtt::durable::{self, SessionRecord, SubRecord};
use junction_store::{Engine, MemoryEngine, Op, Table};

fn session(filter: &str) -> Vec<u8> {
    SessionRecord {
        level: 5,
        expiry_secs: 3600,
        expires_at_ms: None,
        subscriptions: vec![SubRecord {
            filter: filter.into(),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            subscription_id: None,
        }],
        will: None,
        will_due_ms: None,
    }
    .encode()
}

fn put(table: Table, key: Vec<u8>, value: Vec<u8>) -> Op {
    Op::Put { table, key, value }
}

#[test]
fn damaged_records_are_skipped_and_counted() {
    let deep = vec!["a"; 20_000].join("/");
    let mut engine = MemoryEngine::default();
    engine
        .commit(&[
            // Two good sessions (one with a filter 20,000 levels deep) and their messages.
            put(
                durable::SESSIONS,
                durable::session_key("$G", "good"),
                session("x/+"),
            ),
            put(
                durable::SESSIONS,
                durable::session_key("$G", "deep"),
                session(&deep),
            ),
            // A session whose record is not a record, one whose key is not a key.
            put(
                durable::SESSIONS,
                durable::session_key("$G", "bad"),
                b"{not json".to_vec(),
            ),
            put(durable::SESSIONS, vec![0xff, 0xff, 1], session("y")),
            // A retained message that does not decode, and one whose key is cut short.
            put(
                durable::RETAINED,
                durable::retained_key("$G", b"t"),
                vec![1, 2, 3],
            ),
            put(durable::RETAINED, vec![0], vec![]),
            // A message for a good session that does not decode, and one whose key is short.
            put(
                durable::MESSAGES,
                durable::message_key(&durable::session_key("$G", "good"), 1),
                vec![9; 5],
            ),
            put(durable::MESSAGES, vec![1, 2], vec![]),
            // A message of a session that is gone: an orphan, removed later, not "damaged".
            put(
                durable::MESSAGES,
                durable::message_key(&durable::session_key("$G", "bad"), 1),
                vec![9; 5],
            ),
        ])
        .unwrap();
    let bus = Arc::new(Bus::new());
    let fe = Arc::new(MqttServer::new(
        bus.clone(),
        Arc::new(junction_auth::Open {
            account: "$G".into(),
        }),
        Options::default(),
    ));
    let restored = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || fe.restore(&engine).map(|r| (r, fe)))
        .unwrap()
        .join()
        .expect("restoring did not crash")
        .expect("restoring did not fail");
    let (r, _fe) = restored;
    assert_eq!(r.sessions, 2, "{r:?}");
    assert_eq!(r.retained, 0, "{r:?}");
    assert_eq!(r.messages, 0, "{r:?}");
    assert_eq!(r.skipped, 6, "{r:?}");
    // Both good sessions' subscriptions are in the index, one core subscription each.
    assert_eq!(bus.default_account().sublist().count(), 2);
}

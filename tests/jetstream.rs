//! End-to-end tests of JetStream with the unmodified async-nats client (`jetstream::new`):
//! streams, publish acknowledgements and duplicates, pull, push and ordered consumers,
//! key-value and object store, errors, and a store that survives SIGKILL.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use bytes::Bytes;
use common::Server;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

fn js_server() -> Server {
    Server::start(&["-js"])
}

async fn connect(server: &Server) -> (async_nats::Client, jetstream::Context) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    (client, js)
}

#[tokio::test]
async fn streams_publish_acks_and_duplicates() {
    let server = js_server();
    let (_c, js) = connect(&server).await;
    let mut s = js
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            max_messages_per_subject: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 1..=5u64 {
        let ack = js
            .publish(format!("orders.{}", i % 2), Bytes::from(format!("o{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            (ack.stream.as_str(), ack.sequence, ack.duplicate),
            ("ORDERS", i, false)
        );
    }
    // Two per subject are kept: 2, 3 (orders.1: 1, 3, 5 -> 3, 5; orders.0: 2, 4).
    let info = s.info().await.unwrap();
    assert_eq!(info.state.messages, 4);
    assert_eq!(info.state.first_sequence, 2);
    assert_eq!(info.state.last_sequence, 5);
    assert_eq!(info.config.max_messages_per_subject, 2);

    // A message id seen within the window is a duplicate with the first one's sequence.
    let first = js
        .send_publish(
            "orders.x",
            jetstream::context::Publish::build()
                .message_id("m-1")
                .payload("a".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let again = js
        .send_publish(
            "orders.x",
            jetstream::context::Publish::build()
                .message_id("m-1")
                .payload("b".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.sequence, again.sequence);

    // A wrong expected last sequence is refused with nats-server's code.
    let err = js
        .send_publish(
            "orders.x",
            jetstream::context::Publish::build()
                .expected_last_sequence(1)
                .payload("c".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wrong last sequence: 6"), "{err}");

    let msg = s.get_raw_message(6).await.unwrap();
    assert_eq!(msg.subject.as_str(), "orders.x");
    assert_eq!(msg.payload, Bytes::from_static(b"a"));

    // Unknown streams are 404 / 10059.
    let err = js.get_stream("NOPE").await.unwrap_err();
    assert!(err.to_string().contains("stream not found"), "{err}");
    let names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    assert_eq!(names, vec!["ORDERS".to_string()]);
    assert!(js.delete_stream("ORDERS").await.unwrap().success);
}

#[tokio::test]
async fn pull_consumers_fetch_ack_and_report_positions() {
    let server = js_server();
    let (_c, js) = connect(&server).await;
    let s = js
        .create_stream(stream::Config {
            name: "WORK".into(),
            subjects: vec!["work".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 1..=10 {
        js.publish("work", Bytes::from(format!("{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut c: consumer::Consumer<consumer::pull::Config> = s
        .create_consumer(consumer::pull::Config {
            durable_name: Some("w".into()),
            ack_wait: Duration::from_millis(500),
            max_deliver: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = c.fetch().max_messages(4).messages().await.unwrap();
    let mut seen = Vec::new();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        let info = m.info().unwrap();
        seen.push((info.stream_sequence, info.pending));
        if info.stream_sequence != 2 {
            m.double_ack().await.unwrap();
        }
    }
    assert_eq!(seen, vec![(1, 9), (2, 8), (3, 7), (4, 6)]);
    let info = c.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 1);
    assert_eq!(info.num_pending, 6);
    assert_eq!(info.ack_floor.stream_sequence, 1);
    assert_eq!(info.delivered.stream_sequence, 4);

    // Message 2 was not acknowledged: it comes back after ack_wait, counted as delivered twice.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut again = c
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(3))
        .messages()
        .await
        .unwrap();
    let m = timeout(WAIT, again.next()).await.unwrap().unwrap().unwrap();
    let info = m.info().unwrap();
    assert_eq!((info.stream_sequence, info.delivered), (2, 2));
    m.double_ack().await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 4);
    assert_eq!(info.num_redelivered, 1);
}

#[tokio::test]
async fn push_and_ordered_consumers_deliver_in_order() {
    let server = js_server();
    let (client, js) = connect(&server).await;
    let s = js
        .create_stream(stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["ev.*".into()],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..50 {
        js.publish(format!("ev.{}", i % 3), Bytes::from(format!("{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let push: consumer::PushConsumer = s
        .create_consumer(consumer::push::Config {
            durable_name: Some("p".into()),
            deliver_subject: client.new_inbox(),
            filter_subject: "ev.1".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = push.messages().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 17 {
        let m = timeout(WAIT, msgs.next()).await.unwrap().unwrap().unwrap();
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
        m.ack().await.unwrap();
    }
    let want: Vec<String> = (0..50)
        .filter(|i| i % 3 == 1)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(got, want);

    let ordered = s
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = ordered.messages().await.unwrap();
    for i in 0..50 {
        let m = timeout(WAIT, msgs.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(m.payload, Bytes::from(format!("{i}")));
    }
}

#[tokio::test]
async fn key_value_buckets() {
    let server = js_server();
    let (_c, js) = connect(&server).await;
    let kv = js
        .create_key_value(kv::Config {
            bucket: "config".into(),
            history: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let r1 = kv.put("db.url", "postgres://a".into()).await.unwrap();
    let r2 = kv.put("db.url", "postgres://b".into()).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(
        kv.get("db.url").await.unwrap(),
        Some(Bytes::from_static(b"postgres://b"))
    );
    assert!(
        kv.update("db.url", "x".into(), r1).await.is_err(),
        "stale revision accepted"
    );
    let r3 = kv
        .update("db.url", "postgres://c".into(), r2)
        .await
        .unwrap();
    assert!(
        kv.create("db.url", "y".into()).await.is_err(),
        "create over a live key"
    );
    let history: Vec<kv::Entry> = kv
        .history("db.url")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![r1, r2, r3]
    );
    kv.put("other", "1".into()).await.unwrap();
    let mut keys: Vec<String> = kv.keys().await.unwrap().try_collect().await.unwrap();
    keys.sort();
    assert_eq!(keys, vec!["db.url".to_string(), "other".to_string()]);

    let mut watch = kv.watch("db.url").await.unwrap();
    kv.put("db.url", "postgres://d".into()).await.unwrap();
    let e = timeout(WAIT, watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(e.value, Bytes::from_static(b"postgres://d"));

    kv.delete("db.url").await.unwrap();
    assert_eq!(kv.get("db.url").await.unwrap(), None);
    let mut keys: Vec<String> = kv.keys().await.unwrap().try_collect().await.unwrap();
    keys.sort();
    assert_eq!(keys, vec!["other".to_string()]);
    let status = kv.status().await.unwrap();
    assert_eq!(status.history(), 3);
}

#[tokio::test]
async fn object_store_round_trips_a_large_object() {
    let server = js_server();
    let (_c, js) = connect(&server).await;
    let bucket = js
        .create_object_store(object_store::Config {
            bucket: "files".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let info = bucket.put("blob.bin", &mut data.as_slice()).await.unwrap();
    assert_eq!(info.size, data.len());
    let mut obj = bucket.get("blob.bin").await.unwrap();
    let mut back = Vec::new();
    obj.read_to_end(&mut back).await.unwrap();
    assert!(back == data, "object differs");
    let listed: Vec<object_store::ObjectInfo> =
        bucket.list().await.unwrap().try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "blob.bin");
    bucket.delete("blob.bin").await.unwrap();
    assert!(bucket.get("blob.bin").await.is_err());
}

#[tokio::test]
async fn file_streams_and_consumers_survive_sigkill() {
    let dir = std::env::temp_dir().join(format!("junction-js-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap().to_string();
    let mut server = Server::start(&["-js", "-sd", &d]);
    {
        let (_c, js) = connect(&server).await;
        let s = js
            .create_stream(stream::Config {
                name: "DUR".into(),
                subjects: vec!["dur".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 1..=300u64 {
            let ack = js
                .publish("dur", Bytes::from(format!("{i}")))
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(ack.sequence, i);
        }
        let c: consumer::Consumer<consumer::pull::Config> = s
            .create_consumer(consumer::pull::Config {
                durable_name: Some("r".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = c.fetch().max_messages(50).messages().await.unwrap();
        while let Some(m) = batch.next().await {
            m.unwrap().double_ack().await.unwrap();
        }
    }
    // Acknowledged means on the disk: nothing waits for a timer before the kill.
    server.kill();
    let server = Server::start(&["-js", "-sd", &d]);
    let (_c, js) = connect(&server).await;
    let mut s = js.get_stream("DUR").await.unwrap();
    let info = s.info().await.unwrap();
    assert_eq!((info.state.messages, info.state.last_sequence), (300, 300));
    let mut c: consumer::Consumer<consumer::pull::Config> = s.get_consumer("r").await.unwrap();
    let ci = c.info().await.unwrap();
    assert_eq!(ci.ack_floor.stream_sequence, 50);
    let mut batch = c.fetch().max_messages(1).messages().await.unwrap();
    let m = timeout(WAIT, batch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(m.info().unwrap().stream_sequence, 51);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

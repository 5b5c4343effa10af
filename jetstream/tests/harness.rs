//! The API driven through the synchronous harness: the rules a client relies on, without
//! sockets (the end-to-end suites run the same ground through real clients).

use junction_jetstream::harness::Harness;
use serde_json::Value;

fn json(h: &mut Harness, subject: &str, body: &str) -> Value {
    let out = h.publish(subject.as_bytes(), Some(b"_INBOX.api"), body.as_bytes());
    let reply = out
        .iter()
        .find(|m| &m.subject[..] == b"_INBOX.api")
        .unwrap_or_else(|| panic!("no reply to {subject}"));
    serde_json::from_slice(&reply.payload).expect("JSON reply")
}

#[test]
fn streams_consumers_and_acks() {
    let mut h = Harness::new();
    let v = json(
        &mut h,
        "$JS.API.STREAM.CREATE.S",
        r#"{"name":"S","subjects":["s.*"],"max_msgs_per_subject":2}"#,
    );
    assert_eq!(v["config"]["max_msgs_per_subject"], 2);
    for i in 1..=4 {
        let v = json(&mut h, "s.a", &format!("m{i}"));
        assert_eq!(v["seq"], i);
    }
    let v = json(&mut h, "$JS.API.STREAM.INFO.S", "");
    assert_eq!(
        (
            v["state"]["messages"].as_u64(),
            v["state"]["first_seq"].as_u64()
        ),
        (Some(2), Some(3))
    );

    let v = json(
        &mut h,
        "$JS.API.CONSUMER.CREATE.S.C",
        r#"{"stream_name":"S","config":{"name":"C","ack_policy":"explicit"}}"#,
    );
    assert_eq!(v["num_pending"], 2);
    let out = h.publish(
        b"$JS.API.CONSUMER.MSG.NEXT.S.C",
        Some(b"_INBOX.pull"),
        br#"{"batch":5,"no_wait":true}"#,
    );
    let msgs: Vec<_> = out.iter().filter(|m| &m.subject[..] == b"s.a").collect();
    assert_eq!(
        msgs.iter().map(|m| &m.payload[..]).collect::<Vec<_>>(),
        vec![&b"m3"[..], b"m4"]
    );
    // The request ends with 404 once the stream is exhausted.
    let status = out
        .iter()
        .find(|m| &m.subject[..] == b"_INBOX.pull")
        .expect("a status");
    assert!(status
        .headers
        .as_ref()
        .unwrap()
        .starts_with(b"NATS/1.0 404 No Messages"));
    let ack = msgs[0].reply.clone().unwrap();
    h.publish(&ack, None, b"+ACK");
    let v = json(&mut h, "$JS.API.CONSUMER.INFO.S.C", "");
    assert_eq!(
        (
            v["ack_floor"]["stream_seq"].as_u64(),
            v["num_ack_pending"].as_u64()
        ),
        (Some(3), Some(1))
    );

    // Errors carry nats-server's codes.
    let v = json(&mut h, "$JS.API.STREAM.INFO.NOPE", "");
    assert_eq!(v["error"]["err_code"], 10059);
    let v = json(
        &mut h,
        "$JS.API.STREAM.CREATE.T",
        r#"{"name":"T","subjects":["s.b"]}"#,
    );
    assert_eq!(v["error"]["err_code"], 10065);
    let v = json(&mut h, "$JS.API.STREAM.CREATE.T", "{");
    assert_eq!(v["error"]["err_code"], 10025);
}

#[test]
fn file_streams_keep_only_their_newest_messages_in_memory() {
    // 64 KiB hot: 400 messages of about 1 KiB mostly go cold and are read back from the store.
    let mut h = Harness::with_store(64 * 1024);
    json(
        &mut h,
        "$JS.API.STREAM.CREATE.F",
        r#"{"name":"F","subjects":["f.>"],"storage":"file"}"#,
    );
    json(
        &mut h,
        "$JS.API.STREAM.CREATE.M",
        r#"{"name":"M","subjects":["m.>"],"storage":"memory"}"#,
    );
    let body = |i: usize| format!("{i:04}-{}", "x".repeat(1000));
    for i in 1..=400 {
        let subj = format!("f.{}", i % 7);
        let v = json(&mut h, &subj, &body(i));
        assert_eq!(v["seq"], i);
        h.publish(format!("m.{i}").as_bytes(), None, body(i).as_bytes());
    }
    // One more publication lets the last committed ones go cold too.
    json(&mut h, "f.0", "last");
    let (hot, msgs) = h.stream_memory("F").unwrap();
    assert_eq!(msgs, 401);
    assert!(hot <= 64 * 1024 + 2048, "{hot} bytes hot");
    // A memory stream has nowhere else to keep them.
    let (hot, msgs) = h.stream_memory("M").unwrap();
    assert_eq!(msgs, 400);
    assert!(hot > 400 * 1000, "{hot}");

    // Gets of cold messages: by sequence, last by subject, next by subject.
    let v = json(&mut h, "$JS.API.STREAM.MSG.GET.F", r#"{"seq":3}"#);
    let data = v["message"]["data"].as_str().unwrap().to_string();
    assert_eq!(v["message"]["subject"], "f.3");
    assert!(!data.is_empty());
    let v = json(
        &mut h,
        "$JS.API.STREAM.MSG.GET.F",
        r#"{"last_by_subj":"f.5"}"#,
    );
    assert_eq!(v["message"]["seq"], 397);
    let v = json(
        &mut h,
        "$JS.API.STREAM.MSG.GET.F",
        r#"{"seq":10,"next_by_subj":"f.2"}"#,
    );
    assert_eq!(v["message"]["seq"], 16);

    // A deleted cold message stays deleted, its neighbours stay readable.
    let v = json(&mut h, "$JS.API.STREAM.MSG.DELETE.F", r#"{"seq":4}"#);
    assert_eq!(v["success"], true);
    let v = json(&mut h, "$JS.API.STREAM.MSG.GET.F", r#"{"seq":4}"#);
    assert_eq!(v["error"]["err_code"], 10037);

    // A consumer from the start reads every message in order, cold then hot.
    json(
        &mut h,
        "$JS.API.CONSUMER.CREATE.F.C",
        r#"{"stream_name":"F","config":{"name":"C","ack_policy":"none"}}"#,
    );
    let mut got = Vec::new();
    for _ in 0..10 {
        let out = h.publish(
            b"$JS.API.CONSUMER.MSG.NEXT.F.C",
            Some(b"_INBOX.pull"),
            br#"{"batch":100,"no_wait":true}"#,
        );
        let batch: Vec<_> = out
            .iter()
            .filter(|m| m.subject.starts_with(b"f."))
            .map(|m| String::from_utf8_lossy(&m.payload[..m.payload.len().min(4)]).to_string())
            .collect();
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    let mut want: Vec<String> = (1..=400)
        .filter(|&i| i != 4)
        .map(|i| format!("{i:04}"))
        .collect();
    want.push("last".into());
    assert_eq!(got, want);

    // Limits act on cold messages (sizes and subjects kept in memory): keep 10 per subject.
    let v = json(
        &mut h,
        "$JS.API.STREAM.PURGE.F",
        r#"{"filter":"f.1","keep":10}"#,
    );
    assert_eq!(v["purged"], 48); // 58 on f.1 (i % 7 == 1), 10 kept
    let v = json(&mut h, "$JS.API.STREAM.INFO.F", "");
    assert_eq!(v["state"]["messages"], 401 - 1 - 48);
}

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

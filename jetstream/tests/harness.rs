//! The API driven through the synchronous harness: the rules a client relies on, without
//! sockets (the end-to-end suites run the same ground through real clients).

use junction_jetstream::harness::{Harness, Publication};
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
    // The request ends once the stream is exhausted, with 408 and what it still asked for
    // (nats-server's end of a no-wait request that got something).
    let status = out
        .iter()
        .find(|m| &m.subject[..] == b"_INBOX.pull")
        .expect("a status");
    let headers = String::from_utf8_lossy(status.headers.as_ref().unwrap()).into_owned();
    assert!(
        headers.starts_with("NATS/1.0 408 Request Timeout\r\n")
            && headers.contains("Nats-Pending-Messages: 3\r\n"),
        "{headers}"
    );
    // With nothing left, a no-wait request is refused at once.
    let out = h.publish(
        b"$JS.API.CONSUMER.MSG.NEXT.S.C",
        Some(b"_INBOX.pull"),
        br#"{"batch":5,"no_wait":true}"#,
    );
    assert_eq!(out.len(), 1);
    assert!(out[0]
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

/// A message's sequence from a PubAck, or the error's code.
fn acked_seqs(out: &[junction_core::Message]) -> Vec<u64> {
    out.iter()
        .filter(|m| m.subject.starts_with(b"_INBOX.ack"))
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            v["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("not stored: {v}"))
        })
        .collect()
}

fn pull_all(h: &mut Harness, stream: &str, consumer: &str) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    for _ in 0..50 {
        let out = h.publish(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}").as_bytes(),
            Some(b"_INBOX.pull"),
            br#"{"batch":100,"no_wait":true}"#,
        );
        let batch: Vec<_> = out
            .iter()
            .filter(|m| m.subject.starts_with(b"f."))
            .map(|m| {
                let reply =
                    String::from_utf8_lossy(m.reply.as_deref().unwrap_or_default()).to_string();
                // $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                let sseq = reply.split('.').nth(5).unwrap().parse().unwrap();
                (sseq, String::from_utf8_lossy(&m.payload).to_string())
            })
            .collect();
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    got
}

#[test]
fn messages_of_one_batch_share_a_record_and_removals_survive_a_restart() {
    use junction_jetstream::persist::{BLOCKS, LEGACY_MSGS, TOMBS};
    // 16 KiB hot: most messages are cold and read back from their blocks.
    let mut h = Harness::with_store(16 * 1024);
    json(
        &mut h,
        "$JS.API.STREAM.CREATE.F",
        r#"{"name":"F","subjects":["f.>"],"storage":"file"}"#,
    );
    let body = |i: u64| format!("{i:05}-{}", "y".repeat(200));
    let mut seqs = Vec::new();
    for b in 0..20u64 {
        let subjects: Vec<String> = (1..=50)
            .map(|i| format!("f.{}", (b * 50 + i) % 3))
            .collect();
        let bodies: Vec<String> = (1..=50).map(|i| body(b * 50 + i)).collect();
        let msgs: Vec<Publication<'_>> = subjects
            .iter()
            .zip(&bodies)
            .map(|(s, p)| (s.as_bytes(), Some(&b"_INBOX.ack"[..]), p.as_bytes()))
            .collect();
        seqs.extend(acked_seqs(&h.publish_batch(&msgs)));
    }
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    // One record per batch of 50.
    assert_eq!(h.stored_keys(BLOCKS).len(), 20);

    // A message inside a block: a tombstone. Everything below 121: the first two blocks go
    // whole (with no tombstone left), the third keeps 121..=150.
    let v = json(&mut h, "$JS.API.STREAM.MSG.DELETE.F", r#"{"seq":150}"#);
    assert_eq!(v["success"], true);
    let v = json(&mut h, "$JS.API.STREAM.MSG.DELETE.F", r#"{"seq":50}"#);
    assert_eq!(v["success"], true);
    assert_eq!(h.stored_keys(TOMBS).len(), 2);
    let v = json(&mut h, "$JS.API.STREAM.PURGE.F", r#"{"seq":121}"#);
    assert_eq!(v["purged"], 119);
    assert_eq!(h.stored_keys(BLOCKS).len(), 18);
    // The first block's tombstone went with it; the third has 101..=120 and 150.
    assert_eq!(h.stored_keys(TOMBS).len(), 21);

    let mut h = h.restarted();
    let v = json(&mut h, "$JS.API.STREAM.INFO.F", "");
    assert_eq!(v["state"]["messages"], 1000 - 120 - 1);
    assert_eq!(v["state"]["first_seq"], 121);
    assert_eq!(v["state"]["last_seq"], 1000);
    let v = json(&mut h, "$JS.API.STREAM.MSG.GET.F", r#"{"seq":150}"#);
    assert_eq!(
        v["error"]["err_code"], 10037,
        "a removed message stays removed"
    );
    let v = json(&mut h, "$JS.API.STREAM.MSG.GET.F", r#"{"seq":151}"#);
    assert_eq!(v["message"]["subject"], format!("f.{}", 151 % 3));
    let data = v["message"]["data"].as_str().unwrap();
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert_eq!(data, body(151).as_bytes());

    // Every message comes back in order, from the blocks, after the restart.
    json(
        &mut h,
        "$JS.API.CONSUMER.CREATE.F.C",
        r#"{"stream_name":"F","config":{"name":"C","ack_policy":"none"}}"#,
    );
    let got = pull_all(&mut h, "F", "C");
    let want: Vec<(u64, String)> = (121..=1000u64)
        .filter(|s| *s != 150)
        .map(|s| (s, body(s)))
        .collect();
    assert_eq!(got, want);

    // The rest of the third block and the fourth: they go, and the tombstones with them.
    // Publishing goes on after the last sequence.
    let v = json(&mut h, "$JS.API.STREAM.PURGE.F", r#"{"seq":201}"#);
    assert_eq!(v["purged"], 79);
    assert_eq!(h.stored_keys(BLOCKS).len(), 16);
    assert!(h.stored_keys(TOMBS).is_empty());
    let v = json(&mut h, "f.x", "after");
    assert_eq!(v["seq"], 1001);
    // A full purge leaves nothing of the stream's messages.
    json(&mut h, "$JS.API.STREAM.PURGE.F", "");
    assert!(h.stored_keys(BLOCKS).is_empty());
    assert!(h.stored_keys(LEGACY_MSGS).is_empty());
    let mut h = h.restarted();
    let v = json(&mut h, "$JS.API.STREAM.INFO.F", "");
    assert_eq!(v["state"]["messages"], 0);
    assert_eq!(v["state"]["last_seq"], 1001);
}

#[test]
fn a_long_batch_of_acknowledged_publications_commits_in_parts() {
    use junction_jetstream::persist::BLOCKS;
    let mut h = Harness::with_store(1024 * 1024);
    json(
        &mut h,
        "$JS.API.STREAM.CREATE.P",
        r#"{"name":"P","subjects":["p"],"storage":"file"}"#,
    );
    let bodies: Vec<String> = (1..=200).map(|i| i.to_string()).collect();
    let msgs: Vec<Publication<'_>> = bodies
        .iter()
        .map(|p| (&b"p"[..], Some(&b"_INBOX.ack"[..]), p.as_bytes()))
        .collect();
    assert_eq!(
        acked_seqs(&h.publish_batch(&msgs)),
        (1..=200).collect::<Vec<u64>>()
    );
    // Handed to the store every 64 PubAcks, so that their commits overlap: 64, 64, 64, 8.
    assert_eq!(h.stored_keys(BLOCKS).len(), 4);
    // Without replies nothing waits for the commit: one record for the batch.
    let msgs: Vec<Publication<'_>> = bodies
        .iter()
        .map(|p| (&b"p"[..], None, p.as_bytes()))
        .collect();
    h.publish_batch(&msgs);
    assert_eq!(h.stored_keys(BLOCKS).len(), 5);
    let mut h = h.restarted();
    let v = json(&mut h, "$JS.API.STREAM.INFO.P", "");
    assert_eq!(v["state"]["messages"], 400);
}

#[test]
fn limits_remove_whole_blocks_and_leave_no_orphans() {
    use junction_jetstream::persist::{BLOCKS, TOMBS};
    let mut h = Harness::with_store(8 * 1024);
    json(
        &mut h,
        "$JS.API.STREAM.CREATE.L",
        r#"{"name":"L","subjects":["f.>"],"storage":"file","max_msgs":150}"#,
    );
    for b in 0..6u64 {
        let bodies: Vec<String> = (1..=100).map(|i| format!("{}", b * 100 + i)).collect();
        let msgs: Vec<Publication<'_>> = bodies
            .iter()
            .map(|p| (&b"f.a"[..], None, p.as_bytes()))
            .collect();
        h.publish_batch(&msgs);
    }
    // 600 published, the newest 150 kept: 451..=600, in the last two blocks.
    let v = json(&mut h, "$JS.API.STREAM.INFO.L", "");
    assert_eq!(v["state"]["messages"], 150);
    assert_eq!(v["state"]["first_seq"], 451);
    assert_eq!(h.stored_keys(BLOCKS).len(), 2);
    assert_eq!(
        h.stored_keys(TOMBS).len(),
        50,
        "401..=450 of the fifth block"
    );
    let mut h = h.restarted();
    json(
        &mut h,
        "$JS.API.CONSUMER.CREATE.L.C",
        r#"{"stream_name":"L","config":{"name":"C","ack_policy":"none"}}"#,
    );
    let got: Vec<u64> = pull_all(&mut h, "L", "C")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(got, (451..=600).collect::<Vec<u64>>());
    // Deleting the stream leaves nothing behind.
    json(&mut h, "$JS.API.STREAM.DELETE.L", "");
    assert!(h.stored_keys(BLOCKS).is_empty());
    assert!(h.stored_keys(TOMBS).is_empty());
}

/// What a publisher's batch still being routed holds (its group open, its blocks not yet
/// handed to the writer) must not come back after a removal that overtook it: a purge, a
/// message delete, a stream delete.
#[test]
fn a_removal_that_overtakes_an_open_batch_does_not_bring_messages_back() {
    use junction_jetstream::persist::{BLOCKS, TOMBS};
    let mut h = Harness::with_store(1 << 20);
    for name in ["P", "D", "X"] {
        json(
            &mut h,
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &format!(
                r#"{{"name":"{name}","subjects":["{}.>"],"storage":"file"}}"#,
                name.to_lowercase()
            ),
        );
    }
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let batch_of = |prefix: &'static [u8]| -> Vec<Publication<'_>> {
        bodies
            .iter()
            .map(|b| (prefix, Some(&b"_INBOX.ack"[..]), b.as_bytes()))
            .collect()
    };

    // A purge while the batch is open, then the batch ends.
    let open = h.publish_unfinished(&batch_of(b"p.a"));
    let v = json(&mut h, "$JS.API.STREAM.PURGE.P", "");
    assert_eq!(v["purged"], 10);
    assert_eq!(
        acked_seqs(&h.finish(open)).len(),
        10,
        "PubAcks follow the commit"
    );
    // Deletes of every message of the open batch.
    let open = h.publish_unfinished(&batch_of(b"d.a"));
    for seq in 1..=10 {
        let v = json(
            &mut h,
            "$JS.API.STREAM.MSG.DELETE.D",
            &format!(r#"{{"seq":{seq}}}"#),
        );
        assert_eq!(v["success"], true);
    }
    h.finish(open);
    // The stream deleted under an open batch.
    let open = h.publish_unfinished(&batch_of(b"x.a"));
    let v = json(&mut h, "$JS.API.STREAM.DELETE.X", "");
    assert_eq!(v["success"], true);
    h.finish(open);

    // The next publication sweeps what is committed now and was left without messages.
    let v = json(&mut h, "p.b", "after");
    assert_eq!(v["seq"], 11);
    let v = json(&mut h, "d.b", "after");
    assert_eq!(v["seq"], 11);

    let mut h = h.restarted();
    for (name, want) in [("P", 1), ("D", 1)] {
        let v = json(&mut h, &format!("$JS.API.STREAM.INFO.{name}"), "");
        assert_eq!(v["state"]["messages"], want, "{name}: {v}");
        assert_eq!(v["state"]["first_seq"], 11, "{name}: {v}");
    }
    let v = json(&mut h, "$JS.API.STREAM.INFO.X", "");
    assert_eq!(
        v["error"]["err_code"], 10059,
        "the deleted stream stays deleted"
    );
    // One block each for the two messages left; no tombstone, nothing of X.
    let h = h.restarted();
    assert_eq!(h.stored_keys(BLOCKS).len(), 2);
    assert!(h.stored_keys(TOMBS).is_empty());
}

/// `max_file_store` and `max_memory_store`: streams reserve their `max_bytes` against them
/// (10047, 10028), and once the server holds more than its limit every publication of that
/// storage type is refused (10023), as nats-server does.
#[test]
fn the_servers_storage_limits_hold_across_streams() {
    let mut h = Harness::with_server_limits(3_000, 10_000);
    let create = |h: &mut Harness, name: &str, storage: &str, max_bytes: i64| {
        json(
            h,
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &format!(
                r#"{{"name":"{name}","subjects":["{}.>"],"storage":"{storage}","max_bytes":{max_bytes}}}"#,
                name.to_lowercase()
            ),
        )
    };
    assert_eq!(
        create(&mut h, "A", "file", 6_000)["config"]["max_bytes"],
        6_000
    );
    let v = create(&mut h, "B", "file", 6_000);
    assert_eq!(v["error"]["err_code"], 10047, "{v}");
    assert_eq!(v["error"]["code"], 500);
    assert_eq!(
        v["error"]["description"],
        "insufficient storage resources available"
    );
    assert!(create(&mut h, "B", "file", 3_999)["error"].is_null());
    // An update does not count the stream's own reservation twice (3,999 + 6,002 > 10,000).
    assert!(create(&mut h, "A", "file", 6_000)["error"].is_null());
    let v = json(
        &mut h,
        "$JS.API.STREAM.UPDATE.A",
        r#"{"name":"A","subjects":["a.>"],"storage":"file","max_bytes":6002}"#,
    );
    assert_eq!(v["error"]["err_code"], 10047, "{v}");
    // The account reports what its streams reserve.
    let v = json(&mut h, "$JS.API.INFO", "");
    assert_eq!(v["reserved_storage"], 6_000 + 3_999, "{v}");
    assert_eq!(v["reserved_memory"], 0);
    // Memory has its own limit.
    let v = create(&mut h, "M", "memory", 3_001);
    assert_eq!(v["error"]["err_code"], 10028, "{v}");
    assert!(create(&mut h, "M", "memory", -1)["error"].is_null());

    // Publishing: refused once the server holds more than its limit (the publication that
    // crosses it is stored).
    let body = "x".repeat(1_000);
    let mut codes = Vec::new();
    for _ in 0..5 {
        let v = json(&mut h, "m.x", &body);
        codes.push(v["error"]["err_code"].as_u64().unwrap_or(0));
        if !v["error"].is_null() {
            assert_eq!(v["error"]["code"], 503);
            assert_eq!(v["error"]["description"], "insufficient resources");
        }
    }
    assert_eq!(codes, vec![0, 0, 0, 10023, 10023]);
    // File streams are counted apart.
    assert!(json(&mut h, "a.x", "small")["error"].is_null());
    // Room again once messages go.
    json(&mut h, "$JS.API.STREAM.PURGE.M", "");
    assert!(json(&mut h, "m.x", &body)["error"].is_null());
}

/// `subject_transform` renames what a stream captures before it is stored (and `republish`
/// maps with the same functions); bad transforms are refused with nats-server's codes.
#[test]
fn streams_store_under_their_subject_transform() {
    let mut h = Harness::new();
    let v = json(
        &mut h,
        "$JS.API.STREAM.CREATE.T",
        r#"{"name":"T","subjects":["in.>"],"storage":"memory",
            "subject_transform":{"src":"in.*.*","dest":"out.$2.{{wildcard(1)}}"},
            "republish":{"src":"out.*.*","dest":"_INBOX.rp.{{wildcard(2)}}"}}"#,
    );
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(
        v["config"]["subject_transform"]["dest"],
        "out.$2.{{wildcard(1)}}"
    );
    let out = h.publish(b"in.a.b", Some(b"_INBOX.api"), b"1");
    assert_eq!(
        acked_seqs(&out),
        Vec::<u64>::new(),
        "the PubAck goes to _INBOX.api"
    );
    let copy = out
        .iter()
        .find(|m| m.subject.starts_with(b"_INBOX.rp."))
        .expect("a republished copy");
    // Republished from the stored subject, which the headers name.
    assert_eq!(&copy.subject[..], b"_INBOX.rp.a");
    let hdr = String::from_utf8_lossy(copy.headers.as_deref().unwrap_or_default()).to_string();
    assert!(hdr.contains("Nats-Subject: out.b.a"), "{hdr}");
    // What the source does not match is stored as it came.
    assert_eq!(json(&mut h, "in.x", "2")["seq"], 2);
    let v = json(&mut h, "$JS.API.STREAM.MSG.GET.T", r#"{"seq":1}"#);
    assert_eq!(v["message"]["subject"], "out.b.a");
    let v = json(&mut h, "$JS.API.STREAM.MSG.GET.T", r#"{"seq":2}"#);
    assert_eq!(v["message"]["subject"], "in.x");
    let v = json(
        &mut h,
        "$JS.API.STREAM.MSG.GET.T",
        r#"{"last_by_subj":"out.b.a"}"#,
    );
    assert_eq!(v["message"]["seq"], 1);

    let bad = |h: &mut Harness, t: &str| {
        json(
            h,
            "$JS.API.STREAM.CREATE.B",
            &format!(r#"{{"name":"B","subjects":["b.>"],"subject_transform":{t}}}"#),
        )["error"]
            .clone()
    };
    let e = bad(&mut h, r#"{"src":"b..x","dest":"c"}"#);
    assert_eq!(e["err_code"], 10155, "{e}");
    assert_eq!(
        e["description"],
        "stream transform source: invalid subject b..x"
    );
    let e = bad(&mut h, r#"{"src":"b.*","dest":"c.{{nope(1)}}"}"#);
    assert_eq!(e["err_code"], 10156, "{e}");
    assert_eq!(
        e["description"],
        "stream transform: invalid mapping destination: unknown function in {{nope(1)}}"
    );
    let e = bad(&mut h, r#"{"src":"b.*","dest":"c.$3"}"#);
    assert_eq!(
        e["description"],
        "stream transform: invalid mapping destination: wildcard index out of range in $3: [3]"
    );
}

/// A source's `subject_transforms` pick what is copied and rename it; bad ones are refused.
#[test]
fn sources_copy_what_their_transforms_match_renamed() {
    let mut h = Harness::new();
    json(
        &mut h,
        "$JS.API.STREAM.CREATE.S",
        r#"{"name":"S","subjects":["s.>"],"storage":"memory"}"#,
    );
    let v = json(
        &mut h,
        "$JS.API.STREAM.CREATE.AGG",
        r#"{"name":"AGG","storage":"memory","sources":[{"name":"S",
            "subject_transforms":[{"src":"s.*","dest":"agg.$1"},{"src":"s.keep.>","dest":""}]}]}"#,
    );
    assert!(v["error"].is_null(), "{v}");
    for s in ["s.a", "s.b.c", "s.keep.x"] {
        json(&mut h, s, "m");
    }
    let v = json(&mut h, "$JS.API.STREAM.INFO.AGG", "");
    assert_eq!(v["state"]["messages"], 2, "{v}");
    let v = json(&mut h, "$JS.API.STREAM.MSG.GET.AGG", r#"{"seq":1}"#);
    assert_eq!(v["message"]["subject"], "agg.a");
    let v = json(&mut h, "$JS.API.STREAM.MSG.GET.AGG", r#"{"seq":2}"#);
    assert_eq!(
        v["message"]["subject"], "s.keep.x",
        "an empty destination copies as it is"
    );

    let err = |h: &mut Harness, src: &str| {
        json(
            h,
            "$JS.API.STREAM.CREATE.BAD",
            &format!(r#"{{"name":"BAD","storage":"memory","sources":[{src}]}}"#),
        )["error"]
            .clone()
    };
    let e = err(
        &mut h,
        r#"{"name":"S","filter_subject":"s.a","subject_transforms":[{"src":"s.*","dest":"x.$1"}]}"#,
    );
    assert_eq!(e["err_code"], 10144, "{e}");
    let e = err(
        &mut h,
        r#"{"name":"S","subject_transforms":[{"src":"s.*","dest":"x.$2"}]}"#,
    );
    assert_eq!(e["err_code"], 10146, "{e}");
    assert_eq!(e["description"], "source transform destination is invalid");
    let e = err(
        &mut h,
        r#"{"name":"S","subject_transforms":[{"src":"s.a","dest":""},{"src":"s.*","dest":""}]}"#,
    );
    assert_eq!(e["err_code"], 10147, "{e}");
}

//! End-to-end tests of the NATS frontend: the real binary, driven by the unmodified async-nats
//! client and by raw sockets where the exact wire bytes matter.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, Server};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// A raw protocol connection for checking exact bytes.
struct Raw {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Raw {
    async fn connect(server: &Server) -> Raw {
        let stream = TcpStream::connect(server.addr()).await.unwrap();
        let (r, w) = stream.into_split();
        let mut raw = Raw {
            reader: BufReader::new(r),
            writer: w,
        };
        let info = raw.line().await;
        assert!(info.starts_with("INFO {"), "{info}");
        raw
    }

    /// Connects and sends CONNECT with the given JSON, then makes sure the server processed it.
    async fn connected(server: &Server, connect: &str) -> Raw {
        let mut raw = Raw::connect(server).await;
        raw.send(&format!("CONNECT {connect}\r\nPING\r\n")).await;
        loop {
            let l = raw.line().await;
            if l == "PONG" {
                break;
            }
            assert_eq!(l, "+OK");
        }
        raw
    }

    async fn send(&mut self, s: &str) {
        self.writer.write_all(s.as_bytes()).await.unwrap();
    }

    /// The next line, without its CRLF.
    async fn line(&mut self) -> String {
        let mut l = String::new();
        let n = timeout(WAIT, self.reader.read_line(&mut l))
            .await
            .expect("a line in time")
            .unwrap();
        assert!(n > 0, "connection closed while a line was expected");
        l.trim_end_matches("\r\n").to_string()
    }

    /// The next line that is not a server PING (answered).
    async fn line_skipping_pings(&mut self) -> String {
        loop {
            let l = self.line().await;
            if l != "PING" {
                return l;
            }
            self.send("PONG\r\n").await;
        }
    }

    /// Reads until the server closes the connection; returns what came before.
    async fn until_closed(&mut self) -> String {
        let mut rest = Vec::new();
        timeout(WAIT, self.reader.read_to_end(&mut rest))
            .await
            .expect("server closes the connection")
            .ok();
        String::from_utf8_lossy(&rest).into_owned()
    }
}

async fn client(server: &Server) -> async_nats::Client {
    async_nats::connect(server.url()).await.unwrap()
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(WAIT, sub.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
}

#[tokio::test]
async fn pub_sub_and_wildcards() {
    let server = Server::start(&[]);
    let nc = client(&server).await;
    let mut star = nc.subscribe("sensors.*.temp").await.unwrap();
    let mut full = nc.subscribe("sensors.>").await.unwrap();
    let mut exact = nc.subscribe("sensors.k1.temp").await.unwrap();
    nc.flush().await.unwrap();
    let publisher = client(&server).await;
    for subject in [
        "sensors.k1.temp",
        "sensors.k2.temp",
        "sensors.k2.hum.x",
        "sensors",
    ] {
        publisher
            .publish(subject, Bytes::from(subject))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    assert_eq!(next(&mut star).await.subject.as_str(), "sensors.k1.temp");
    assert_eq!(next(&mut star).await.subject.as_str(), "sensors.k2.temp");
    assert_eq!(next(&mut exact).await.payload, "sensors.k1.temp");
    let got: Vec<String> = vec![
        next(&mut full).await.subject.to_string(),
        next(&mut full).await.subject.to_string(),
        next(&mut full).await.subject.to_string(),
    ];
    assert_eq!(
        got,
        ["sensors.k1.temp", "sensors.k2.temp", "sensors.k2.hum.x"]
    );
    // Nothing else arrives: `>` does not match its parent, `*` matches exactly one token.
    publisher
        .publish("sensors.k3.temp.extra", "x".into())
        .await
        .unwrap();
    publisher.publish("done", "x".into()).await.unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(
        next(&mut full).await.subject.as_str(),
        "sensors.k3.temp.extra"
    );
    assert!(timeout(Duration::from_millis(200), star.next())
        .await
        .is_err());
}

#[tokio::test]
async fn queue_group_spreads_and_delivers_once() {
    let server = Server::start(&[]);
    let nc = client(&server).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(nc.queue_subscribe("jobs", "workers".into()).await.unwrap());
    }
    let mut plain = nc.subscribe("jobs").await.unwrap();
    nc.flush().await.unwrap();
    let publisher = client(&server).await;
    for i in 0..300 {
        publisher
            .publish("jobs", i.to_string().into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for _ in 0..300 {
        next(&mut plain).await;
    }
    let mut seen = HashSet::new();
    for m in members.iter_mut() {
        let mut n = 0;
        while let Ok(Some(msg)) = timeout(Duration::from_millis(300), m.next()).await {
            assert!(seen.insert(msg.payload.clone()), "delivered twice");
            n += 1;
        }
        assert!(n >= 60, "uneven spread: a member got {n} of 300");
    }
    assert_eq!(seen.len(), 300);
}

#[tokio::test]
async fn request_reply_headers_and_no_responders() {
    let server = Server::start(&[]);
    let service = client(&server).await;
    let mut requests = service.subscribe("svc.echo").await.unwrap();
    service.flush().await.unwrap();
    let responder = service.clone();
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(h) = &req.headers {
                if let Some(v) = h.get("X-Trace") {
                    headers.insert("X-Trace", v.as_str());
                }
            }
            responder
                .publish_with_headers(req.reply.unwrap(), headers, req.payload)
                .await
                .unwrap();
        }
    });
    let nc = client(&server).await;
    for i in 0..50 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-Trace", format!("t{i}").as_str());
        let reply = timeout(
            WAIT,
            nc.request_with_headers("svc.echo", headers, format!("req {i}").into()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply.payload, format!("req {i}"));
        let trace = reply.headers.unwrap();
        assert_eq!(trace.get("X-Trace").unwrap().as_str(), format!("t{i}"));
    }
    let started = std::time::Instant::now();
    let err = nc.request("nobody.home", "x".into()).await.unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn echo_false_is_honoured() {
    let server = Server::start(&[]);
    let quiet = async_nats::ConnectOptions::new()
        .no_echo()
        .connect(server.url())
        .await
        .unwrap();
    let mut sub = quiet.subscribe("chat").await.unwrap();
    quiet.flush().await.unwrap();
    quiet.publish("chat", "mine".into()).await.unwrap();
    quiet.flush().await.unwrap();
    let other = client(&server).await;
    other.publish("chat", "theirs".into()).await.unwrap();
    other.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.payload, "theirs");
    assert!(timeout(Duration::from_millis(200), sub.next())
        .await
        .is_err());
}

#[tokio::test]
async fn unsub_with_max_stops_at_max() {
    let server = Server::start(&[]);
    // The system account's own request subscriptions are counted too, as in nats-server.
    let base = server.varz("subscriptions");
    let mut raw = Raw::connected(&server, r#"{"verbose":false,"pedantic":false}"#).await;
    raw.send("SUB limited 7\r\nUNSUB 7 2\r\nPING\r\n").await;
    assert_eq!(raw.line().await, "PONG");
    // A raw publisher: its PONG proves the server routed all five before we look.
    let mut publisher = Raw::connected(&server, r#"{"verbose":false}"#).await;
    for i in 0..5 {
        publisher.send(&format!("PUB limited 2\r\nm{i}\r\n")).await;
    }
    publisher.send("PING\r\n").await;
    assert_eq!(publisher.line().await, "PONG");
    raw.send("PING\r\n").await;
    assert_eq!(raw.line().await, "MSG limited 7 2");
    assert_eq!(raw.line().await, "m0");
    assert_eq!(raw.line().await, "MSG limited 7 2");
    assert_eq!(raw.line().await, "m1");
    assert_eq!(raw.line().await, "PONG");
    // The server removed the subscription once it reached its limit.
    assert_eq!(server.varz("subscriptions"), base);
}

#[tokio::test]
async fn verbose_and_pedantic() {
    let server = Server::start(&[]);
    let mut raw = Raw::connect(&server).await;
    raw.send("CONNECT {\"verbose\":true,\"pedantic\":true}\r\n")
        .await;
    assert_eq!(raw.line().await, "+OK");
    raw.send("SUB foo 1\r\n").await;
    assert_eq!(raw.line().await, "+OK");
    raw.send("PUB foo 2\r\nhi\r\n").await;
    assert_eq!(raw.line().await, "+OK");
    assert_eq!(raw.line().await, "MSG foo 1 2");
    assert_eq!(raw.line().await, "hi");
    raw.send("PUB foo.* 1\r\nx\r\n").await;
    assert_eq!(raw.line().await, "-ERR 'Invalid Publish Subject'");
    raw.send("SUB foo..bar 2\r\n").await;
    assert_eq!(raw.line_skipping_pings().await, "+OK");
    assert_eq!(raw.line().await, "-ERR 'Invalid Subject'");
    raw.send("UNSUB 1\r\nPING\r\n").await;
    assert_eq!(raw.line().await, "+OK");
    assert_eq!(raw.line().await, "PONG");
}

#[tokio::test]
async fn headers_are_stripped_for_clients_without_header_support() {
    let server = Server::start(&[]);
    let mut old = Raw::connected(&server, r#"{"verbose":false,"headers":false}"#).await;
    old.send("SUB h 1\r\nPING\r\n").await;
    assert_eq!(old.line().await, "PONG");
    let mut new = Raw::connected(&server, r#"{"verbose":false,"headers":true}"#).await;
    new.send("SUB h 2\r\nPING\r\n").await;
    assert_eq!(new.line().await, "PONG");
    let nc = client(&server).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("A", "1");
    nc.publish_with_headers("h", headers, "body".into())
        .await
        .unwrap();
    nc.flush().await.unwrap();
    assert_eq!(old.line().await, "MSG h 1 4");
    assert_eq!(old.line().await, "body");
    assert_eq!(new.line().await, "HMSG h 2 18 22");
    assert_eq!(new.line().await, "NATS/1.0");
    assert_eq!(new.line().await, "A: 1");
    assert_eq!(new.line().await, "");
    assert_eq!(new.line().await, "body");
}

#[tokio::test]
async fn protocol_errors_close_only_the_offender() {
    let server = Server::with_config("max_payload: 1KB\nmax_control_line: 256\n");
    let nc = client(&server).await;
    let mut sub = nc.subscribe("alive").await.unwrap();
    nc.flush().await.unwrap();
    let long_subject = "a".repeat(300);
    let cases = [
        (
            "FOO bar\r\n".to_string(),
            "-ERR 'Unknown Protocol Operation'",
        ),
        (
            "PUB x 1025\r\n".to_string(),
            "-ERR 'Maximum Payload Violation'",
        ),
        (
            format!("SUB {long_subject} 1\r\n"),
            "-ERR 'maximum control line exceeded'",
        ),
        (
            "PUB x 2\r\nabc\r\n".to_string(),
            "-ERR 'Unknown Protocol Operation'",
        ),
        (
            "CONNECT {nope\r\n".to_string(),
            "-ERR 'Unknown Protocol Operation'",
        ),
    ];
    for (bad, want) in cases {
        let mut raw = Raw::connect(&server).await;
        raw.send(&bad).await;
        assert_eq!(raw.line().await, want, "for {bad:?}");
        raw.until_closed().await;
        nc.publish("alive", "yes".into()).await.unwrap();
        assert_eq!(next(&mut sub).await.payload, "yes");
    }
    // Raw garbage that is not UTF-8 or protocol at all.
    let mut raw = Raw::connect(&server).await;
    raw.writer
        .write_all(&[0xff, 0x00, 0x13, b'\n'])
        .await
        .unwrap();
    assert_eq!(raw.line().await, "-ERR 'Unknown Protocol Operation'");
    raw.until_closed().await;
}

#[tokio::test]
async fn info_has_the_fields_clients_read() {
    let server = Server::start(&[]);
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    timeout(WAIT, reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let info: serde_json::Value =
        serde_json::from_str(line.strip_prefix("INFO ").unwrap().trim()).unwrap();
    assert_eq!(info["proto"], 1);
    assert_eq!(info["headers"], true);
    assert_eq!(info["max_payload"], 1024 * 1024);
    assert_eq!(info["port"], server.port);
    assert_eq!(info["host"], "127.0.0.1");
    assert_eq!(info["client_ip"], "127.0.0.1");
    assert!(info["client_id"].as_u64().unwrap() > 0);
    assert_eq!(info["server_id"].as_str().unwrap().len(), 56);
    assert!(info["version"].is_string());
    assert!(info.get("auth_required").is_none());
}

#[tokio::test]
async fn slow_consumer_is_cut_off_and_others_get_everything() {
    let server =
        Server::with_config("max_pending: 2MB\nmax_payload: 64KB\nwrite_deadline: \"30s\"\n");
    // A subscriber that never reads, with a tiny receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(server.addr().parse().unwrap())
        .await
        .unwrap();
    let (r, w) = stream.into_split();
    let mut stuck = Raw {
        reader: BufReader::with_capacity(64, r),
        writer: w,
    };
    stuck.line().await;
    stuck
        .send("CONNECT {\"verbose\":false}\r\nSUB firehose 1\r\nPING\r\n")
        .await;
    assert_eq!(stuck.line().await, "PONG");

    let reader = client(&server).await;
    let mut sub = reader.subscribe("firehose").await.unwrap();
    reader.flush().await.unwrap();
    let publisher = client(&server).await;
    let payload = Bytes::from(vec![b'x'; 1024]);
    const N: usize = 20_000;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = received.clone();
    let counting = tokio::spawn(async move {
        while count.load(std::sync::atomic::Ordering::Relaxed) < N {
            match timeout(Duration::from_secs(10), sub.next()).await {
                Ok(Some(_)) => count.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                _ => break,
            };
        }
    });
    for i in 0..N {
        publisher
            .publish("firehose", payload.clone())
            .await
            .unwrap();
        if i % 500 == 499 {
            // Pace the publisher by the reading subscriber (a debug-build client is slow); the
            // stuck subscriber falls behind regardless.
            publisher.flush().await.unwrap();
            let caught_up = eventually(WAIT, || {
                received.load(std::sync::atomic::Ordering::Relaxed) + 1000 > i
            });
            assert!(caught_up.await, "the reading subscriber stalled at {i}");
        }
    }
    publisher.flush().await.unwrap();
    counting.await.unwrap();
    assert_eq!(
        received.load(std::sync::atomic::Ordering::Relaxed),
        N,
        "the reading subscriber got every message"
    );
    assert!(eventually(WAIT, || server.varz("slow_consumers") >= 1).await);
    // The stuck subscriber's connection was closed by the server.
    let mut sink = Vec::new();
    let closed = timeout(WAIT, stuck.reader.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "slow consumer connection closed");
    assert!(server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("slow consumer")));
}

#[tokio::test]
async fn a_thousand_connections() {
    let server = Server::start(&[]);
    let base = server.varz("subscriptions");
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut raw = Raw::connect(&server).await;
        raw.send("CONNECT {\"verbose\":false}\r\nSUB all 1\r\n")
            .await;
        conns.push(raw);
    }
    for raw in conns.iter_mut() {
        raw.send("PING\r\n").await;
        assert_eq!(raw.line().await, "PONG");
    }
    assert_eq!(server.varz("connections"), 1000);
    let nc = client(&server).await;
    nc.publish("all", "hi".into()).await.unwrap();
    nc.flush().await.unwrap();
    for raw in conns.iter_mut() {
        assert_eq!(raw.line().await, "MSG all 1 2");
        assert_eq!(raw.line().await, "hi");
    }
    drop(conns);
    assert!(eventually(WAIT, || server.varz("connections") == 1).await);
    assert_eq!(server.varz("subscriptions"), base);
}

#[tokio::test]
async fn server_pings_close_stale_clients() {
    let server = Server::with_config("ping_interval: \"300ms\"\nping_max: 2\n");
    let mut live = Raw::connected(&server, "{\"verbose\":false}").await;
    // The live client answers every PING while the stale one stays silent.
    let live_task = tokio::spawn(async move {
        for _ in 0..5 {
            assert_eq!(live.line().await, "PING");
            live.send("PONG\r\n").await;
        }
        live.send("PING\r\n").await;
        assert_eq!(live.line_skipping_pings().await, "PONG");
    });
    let mut stale = Raw::connected(&server, "{\"verbose\":false}").await;
    assert_eq!(stale.line().await, "PING");
    assert_eq!(stale.line().await, "PING");
    assert_eq!(stale.line().await, "-ERR 'Stale Connection'");
    stale.until_closed().await;
    live_task.await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm() {
    let mut server = Server::start(&[]);
    let nc = client(&server).await;
    let sub = nc.subscribe("x").await.unwrap();
    nc.flush().await.unwrap();
    let mut raw = Raw::connected(&server, "{\"verbose\":false}").await;
    let status = server
        .terminate(Duration::from_secs(10))
        .expect("exits in time");
    assert!(status.success(), "{status}");
    raw.until_closed().await;
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("Server Exiting"), "{log}");
    drop((nc, sub));
}

#[test]
fn malformed_config_does_not_start() {
    let path = common::temp_file("conf", "port: 4222\nhttp_port {\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:", path.display())), "{err}");
    assert!(
        err.contains(":2:") || err.contains(":3:"),
        "line number in: {err}"
    );
}

#[tokio::test]
async fn unknown_config_key_is_an_error_and_later_keys_a_warning() {
    // As nats-server: a key nobody knows stops the server, naming the key and its place.
    let dir = std::env::temp_dir().join(format!("junction-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("typo.conf");
    std::fs::write(&path, "server_name: edge\nno_such_key: 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args([
            "-c",
            path.to_str().unwrap(),
            "-p",
            "-1",
            "-m",
            "0",
            "--in-memory",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2:1: unknown field \"no_such_key\"",
            path.display()
        )),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
    // A nats-server key Junction does not implement yet is a warning; the server runs.
    let server = Server::with_config("server_name: edge\ngateway { name: g }\n");
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("'gateway' is not supported yet"), "{log}");
    assert_eq!(server.http_json("/varz")["server_name"], "edge");
    assert_eq!(server.http_json("/healthz")["status"], "ok");
}

#[tokio::test]
async fn varz_counts_messages() {
    let server = Server::start(&[]);
    let nc = client(&server).await;
    let mut sub = nc.subscribe("count").await.unwrap();
    nc.flush().await.unwrap();
    for _ in 0..10 {
        nc.publish("count", "12345".into()).await.unwrap();
    }
    nc.flush().await.unwrap();
    for _ in 0..10 {
        next(&mut sub).await;
    }
    assert!(
        eventually(WAIT, || server.varz("in_msgs") == 10
            && server.varz("out_msgs") == 10)
        .await
    );
    assert_eq!(server.varz("in_bytes"), 50);
    assert_eq!(server.varz("out_bytes"), 50);
    assert_eq!(server.varz("connections"), 1);
}

#[tokio::test]
async fn connz_shows_connections_and_close_reasons() {
    let server = Server::start(&[]);
    let nc = async_nats::ConnectOptions::new()
        .name("inventory-service")
        .connect(server.url())
        .await
        .unwrap();
    let _a = nc.subscribe("a").await.unwrap();
    let _b = nc.subscribe("b.>").await.unwrap();
    nc.publish("a", "x".into()).await.unwrap();
    nc.flush().await.unwrap();
    // async-nats' flush does not wait for the server: wait until it saw both SUBs.
    assert!(
        eventually(WAIT, || server.http_json("/connz")["connections"][0]
            ["subscriptions"]
            == 2)
        .await
    );
    let open = server.http_json("/connz");
    assert_eq!(open["num_connections"], 1);
    let c = &open["connections"][0];
    assert_eq!(c["name"], "inventory-service");
    assert_eq!(c["lang"], "rust");
    assert_eq!(c["subscriptions"], 2);
    assert_eq!(c["ip"], "127.0.0.1");
    assert_eq!(c["account"], "$G");
    assert!(
        eventually(WAIT, || server.http_json("/connz")["connections"][0]
            ["in_msgs"]
            == 1)
        .await
    );

    let mut raw = Raw::connect(&server).await;
    raw.send("BOGUS\r\n").await;
    raw.until_closed().await;
    let mut quiet = Raw::connected(&server, "{\"verbose\":false}").await;
    quiet.send("PING\r\n").await;
    assert_eq!(quiet.line().await, "PONG");
    drop(quiet);
    assert!(
        eventually(WAIT, || server.http_json("/connz?state=closed")["total"]
            == 2)
        .await
    );
    let closed = server.http_json("/connz?state=closed");
    assert_eq!(closed["connections"][0]["reason"], "Protocol Violation");
    assert_eq!(closed["connections"][1]["reason"], "Client Closed");
    assert!(closed["connections"][1]["stop"].is_string());
    assert_eq!(server.http_json("/connz?state=all")["total"], 3);
}

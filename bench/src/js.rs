//! JetStream modes, over the plain NATS protocol (the same requests the clients send):
//!
//! - `js-pub`: publish `--msgs` messages of `--size` bytes to a fresh stream (`--storage file`
//!   or `memory`), keeping at most `--inflight` unacknowledged (256: asynchronous publishing,
//!   1: synchronous); the rate counts PubAcks.
//! - `js-consume`: fill a stream with `--msgs` messages, then drain it through a durable pull
//!   consumer with requests of `--batch` messages, acknowledging each; the rate counts messages
//!   received.
//! - `kv-latency`: `--count` puts and `--count` direct gets of a key-value bucket (100 keys,
//!   history 1), one at a time; p50/p90/p99 of each.

use std::io::{self, ErrorKind, Write};
use std::time::{Duration, Instant};

use crate::proto::{Conn, Fill};
use crate::reqrep::quantile;
use crate::{human_rate, Opts};

const STREAM: &str = "JSBENCH";

/// What one read pass delivered: (subject, reply, payload, had headers).
type Got = Vec<(Vec<u8>, Option<Vec<u8>>, Vec<u8>, bool)>;

fn read_some(conn: &mut Conn, deadline: Instant) -> io::Result<Got> {
    loop {
        match conn.fill()? {
            Fill::Data => break,
            Fill::Idle if Instant::now() < deadline => continue,
            Fill::Idle => return Err(io::Error::new(ErrorKind::TimedOut, "timeout")),
            Fill::Eof => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    conn.last_err.clone().unwrap_or_else(|| "closed".into()),
                ))
            }
        }
    }
    let mut got = Vec::new();
    conn.process(|m| {
        let (s, r) = m.subject_reply();
        got.push((
            s.to_vec(),
            r.map(<[u8]>::to_vec),
            m.payload.to_vec(),
            m.hmsg,
        ));
    })?;
    Ok(got)
}

fn inbox() -> String {
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ std::process::id())
        .unwrap_or(0);
    format!("_INBOX.jsb{id:x}")
}

fn publish(out: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(r) = reply {
        out.push(b' ');
        out.extend_from_slice(r.as_bytes());
    }
    let _ = write!(out, " {}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// One API request and its JSON answer.
fn request(
    conn: &mut Conn,
    inbox: &str,
    subject: &str,
    body: &str,
    deadline: Instant,
) -> io::Result<String> {
    let reply = format!("{inbox}.api");
    let mut out = Vec::new();
    publish(&mut out, subject, Some(&reply), body.as_bytes());
    conn.send(&out, deadline)?;
    loop {
        for (s, _, p, _) in read_some(conn, deadline)? {
            if s == reply.as_bytes() {
                return Ok(String::from_utf8_lossy(&p).into_owned());
            }
        }
    }
}

fn open(o: &Opts, name: &str, deadline: Instant) -> io::Result<(Conn, String)> {
    let mut conn = Conn::open(&o.addr, o.transport, name, 1 << 20)?;
    let inbox = inbox();
    conn.send(format!("SUB {inbox}.> 1\r\n").as_bytes(), deadline)?;
    conn.ping_pong(deadline)?;
    Ok((conn, inbox))
}

fn storage(o: &Opts) -> &str {
    &o.storage
}

/// A fresh stream `JSBENCH` on `jsbench.>`.
fn fresh_stream(conn: &mut Conn, inbox: &str, o: &Opts, deadline: Instant) -> io::Result<()> {
    let _ = request(
        conn,
        inbox,
        &format!("$JS.API.STREAM.DELETE.{STREAM}"),
        "",
        deadline,
    )?;
    let cfg = format!(
        r#"{{"name":"{STREAM}","subjects":["jsbench.>"],"storage":"{}","retention":"limits"}}"#,
        storage(o)
    );
    let answer = request(
        conn,
        inbox,
        &format!("$JS.API.STREAM.CREATE.{STREAM}"),
        &cfg,
        deadline,
    )?;
    if answer.contains("\"error\"") {
        return Err(io::Error::other(format!("stream create: {answer}")));
    }
    Ok(())
}

/// Publishes `n` messages with at most `window` unacknowledged; returns (acks, errors, elapsed).
fn publish_n(
    conn: &mut Conn,
    inbox: &str,
    o: &Opts,
    n: u64,
    window: u64,
    deadline: Instant,
) -> io::Result<(u64, u64, Duration)> {
    let payload: Vec<u8> = (0..o.size).map(|i| b'a' + (i % 26) as u8).collect();
    let reply = format!("{inbox}.ack");
    let (mut sent, mut acked, mut errors) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut out = Vec::with_capacity(64 * 1024);
    while acked + errors < n {
        out.clear();
        while sent < n && sent - acked - errors < window {
            publish(&mut out, "jsbench.data", Some(&reply), &payload);
            sent += 1;
        }
        if !out.is_empty() {
            conn.send(&out, deadline)?;
        }
        for (s, _, p, _) in read_some(conn, deadline)? {
            if s == reply.as_bytes() {
                if p.windows(7).any(|w| w == b"\"error\"") || p.is_empty() {
                    errors += 1;
                } else {
                    acked += 1;
                }
            }
        }
    }
    Ok((acked, errors, started.elapsed()))
}

pub fn run_pub(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let (mut conn, inbox) = open(o, "bench-js-pub", deadline)?;
    fresh_stream(&mut conn, &inbox, o, deadline)?;
    let window = u64::from(o.inflight);
    let (acked, errors, elapsed) = publish_n(&mut conn, &inbox, o, o.msgs, window, deadline)?;
    let rate = acked as f64 / elapsed.as_secs_f64();
    println!(
        "RESULT mode=js-pub storage={} window={window} size={} msgs={acked} errors={errors} rate={rate:.0} complete={}",
        storage(o),
        o.size,
        u8::from(errors == 0 && acked == o.msgs)
    );
    println!(
        "js-pub: {acked} PubAcks from a {} stream in {:.2}s = {} msgs/s (window {window}, {} B)",
        storage(o),
        elapsed.as_secs_f64(),
        human_rate(rate),
        o.size
    );
    Ok(())
}

pub fn run_consume(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let (mut conn, inbox) = open(o, "bench-js-consume", deadline)?;
    fresh_stream(&mut conn, &inbox, o, deadline)?;
    publish_n(&mut conn, &inbox, o, o.msgs, 256, deadline)?;
    let cfg = format!(
        r#"{{"stream_name":"{STREAM}","config":{{"durable_name":"C","ack_policy":"explicit","max_ack_pending":-1,"deliver_policy":"all"}}}}"#
    );
    let answer = request(
        &mut conn,
        &inbox,
        &format!("$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.C"),
        &cfg,
        deadline,
    )?;
    if answer.contains("\"error\"") {
        return Err(io::Error::other(format!("consumer create: {answer}")));
    }
    let batch = o.batch.min(100_000) as u64;
    let pull_reply = format!("{inbox}.pull");
    let next = format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.C");
    let req = format!(r#"{{"batch":{batch},"expires":5000000000}}"#);
    let started = Instant::now();
    let (mut got, mut asked) = (0u64, 0u64);
    let mut out = Vec::with_capacity(64 * 1024);
    while got < o.msgs {
        out.clear();
        // Two requests in flight, so the server never waits for the client.
        while asked < got + 2 * batch && asked < o.msgs {
            publish(&mut out, &next, Some(&pull_reply), req.as_bytes());
            asked += batch;
        }
        if !out.is_empty() {
            conn.send(&out, deadline)?;
            out.clear();
        }
        for (s, r, _, hmsg) in read_some(&mut conn, deadline)? {
            if s == b"jsbench.data" {
                got += 1;
                if let Some(r) = r {
                    publish(
                        &mut out,
                        std::str::from_utf8(&r).unwrap_or_default(),
                        None,
                        b"+ACK",
                    );
                }
            } else if hmsg && s == pull_reply.as_bytes() {
                // A status (408 at expiry): ask again.
                asked = got;
            }
        }
        if !out.is_empty() {
            conn.send(&out, deadline)?;
        }
    }
    let elapsed = started.elapsed();
    conn.ping_pong(deadline)?;
    let rate = got as f64 / elapsed.as_secs_f64();
    println!(
        "RESULT mode=js-consume storage={} batch={batch} size={} msgs={got} rate={rate:.0} complete=1",
        storage(o),
        o.size
    );
    println!(
        "js-consume: {got} messages pulled and acknowledged from a {} stream in {:.2}s = {} msgs/s (batch {batch})",
        storage(o),
        elapsed.as_secs_f64(),
        human_rate(rate)
    );
    Ok(())
}

pub fn run_kv(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let (mut conn, inbox) = open(o, "bench-kv", deadline)?;
    let _ = request(
        &mut conn,
        &inbox,
        "$JS.API.STREAM.DELETE.KV_BENCH",
        "",
        deadline,
    )?;
    let cfg = format!(
        r#"{{"name":"KV_BENCH","subjects":["$KV.BENCH.>"],"storage":"{}","max_msgs_per_subject":1,"allow_rollup_hdrs":true,"deny_delete":true,"allow_direct":true,"discard":"new"}}"#,
        storage(o)
    );
    let answer = request(
        &mut conn,
        &inbox,
        "$JS.API.STREAM.CREATE.KV_BENCH",
        &cfg,
        deadline,
    )?;
    if answer.contains("\"error\"") {
        return Err(io::Error::other(format!("bucket create: {answer}")));
    }
    let payload: Vec<u8> = (0..o.size).map(|i| b'a' + (i % 26) as u8).collect();
    let reply = format!("{inbox}.kv");
    let mut put = Vec::with_capacity(o.count);
    let mut get = Vec::with_capacity(o.count);
    let mut out = Vec::new();
    let mut roundtrip = |conn: &mut Conn, subject: &str, body: &[u8]| -> io::Result<(u64, bool)> {
        out.clear();
        publish(&mut out, subject, Some(&reply), body);
        let t0 = Instant::now();
        conn.send(&out, deadline)?;
        loop {
            for (s, _, p, _) in read_some(conn, deadline)? {
                if s == reply.as_bytes() {
                    let ok = !p.windows(7).any(|w| w == b"\"error\"");
                    return Ok((t0.elapsed().as_nanos() as u64, ok));
                }
            }
        }
    };
    for i in 0..o.warmup + o.count {
        let key = format!("$KV.BENCH.k{}", i % 100);
        let (ns, ok) = roundtrip(&mut conn, &key, &payload)?;
        if !ok {
            return Err(io::Error::other("a put was refused"));
        }
        if i >= o.warmup {
            put.push(ns);
        }
    }
    for i in 0..o.warmup + o.count {
        let subject = format!("$JS.API.DIRECT.GET.KV_BENCH.$KV.BENCH.k{}", i % 100);
        let (ns, _) = roundtrip(&mut conn, &subject, b"")?;
        if i >= o.warmup {
            get.push(ns);
        }
    }
    put.sort_unstable();
    get.sort_unstable();
    let us = |v: &[u64], q: f64| quantile(v, q) as f64 / 1000.0;
    println!(
        "RESULT mode=kv-latency storage={} count={} put_p50_us={:.1} put_p90_us={:.1} put_p99_us={:.1} get_p50_us={:.1} get_p90_us={:.1} get_p99_us={:.1} complete=1",
        storage(o),
        o.count,
        us(&put, 0.5),
        us(&put, 0.9),
        us(&put, 0.99),
        us(&get, 0.5),
        us(&get, 0.9),
        us(&get, 0.99)
    );
    println!(
        "kv-latency ({}): put p50 {:.0} us p99 {:.0} us; get p50 {:.0} us p99 {:.0} us",
        storage(o),
        us(&put, 0.5),
        us(&put, 0.99),
        us(&get, 0.5),
        us(&get, 0.99)
    );
    Ok(())
}

//! `mqtt-pubsub` (P publishers -> N subscribers on one topic, throughput) and
//! `mqtt-latency` (publish-to-delivery latency at a fixed rate) modes.
//!
//! Subscribers subscribe at `--qos` and PUBACK every QoS 1 delivery (one
//! write per read, however many PUBLISHes it carried). At QoS 1 the
//! publisher keeps at most `--inflight` PUBLISHes unacknowledged (5.0: also
//! at most the server's Receive Maximum); at QoS 0 it ends with a
//! PINGREQ/PINGRESP round trip so that the server has read everything.
//!
//! With `--persistent` the subscribers hold persistent sessions under stable
//! client ids (see [`sub_session`]); each id is connected once with a clean
//! session before subscribing and again after the results are printed, so
//! that no session is left on the server and the cleanup is not measured.

use crate::mqtt::{MqttConn, Session};
use crate::procfs::CpuProbe;
use crate::proto::Fill;
use crate::reqrep::quantile;
use crate::{human_rate, Opts};
use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Once the publisher is done, a subscriber that has seen nothing for this
/// long assumes the rest was dropped by the server.
const IDLE_GRACE: Duration = Duration::from_secs(2);

/// Latency payloads start with the sequence number and the send time.
const STAMP: usize = 16;

/// A client id unique to this process and role.
fn client_id(role: &str) -> String {
    format!("jbench-{}-{role}", std::process::id())
}

/// Session expiry (5.0) of `--persistent` subscribers, in seconds.
const PERSISTENT_EXPIRY: u32 = 3600;

fn open(o: &Opts, role: &str, buf: usize) -> io::Result<MqttConn> {
    let id = client_id(role);
    MqttConn::open(
        &o.addr,
        o.mqtt_version,
        &id,
        o.keepalive,
        Session::Clean,
        buf,
    )
}

/// Client id and session of subscriber `idx`: with `--persistent` a stable
/// id (the same in every run, so that the broker's store sees one session
/// per subscriber) and a persistent session, else a per-process id and a
/// clean session.
fn sub_session(o: &Opts, idx: usize) -> (String, Session) {
    if o.persistent {
        (
            format!("jbench-sub-{idx}"),
            Session::Persistent {
                expiry: PERSISTENT_EXPIRY,
            },
        )
    } else {
        (client_id(&format!("sub-{idx}")), Session::Clean)
    }
}

/// Connects as `id` with a clean session and disconnects: the server
/// discards whatever session (subscriptions, queued messages) it kept for
/// `id`, and keeps none.
fn forget_session(o: &Opts, id: &str) -> io::Result<()> {
    let mut conn = MqttConn::open(&o.sub_addr, o.mqtt_version, id, 0, Session::Clean, 4096)?;
    conn.disconnect();
    Ok(())
}

/// After a `--persistent` run: drops the sessions of subscribers `0..subs`.
fn forget_sessions(o: &Opts, subs: usize) {
    if !o.persistent {
        return;
    }
    for idx in 0..subs {
        let (id, _) = sub_session(o, idx);
        if let Err(e) = forget_session(o, &id) {
            eprintln!("junction-bench: could not clear the persistent session {id}: {e}");
        }
    }
}

/// What the publisher managed to do.
struct Published {
    sent: u64,
    /// Until the last PUBACK (QoS 1) or the closing PINGRESP (QoS 0).
    elapsed: Duration,
    /// The in-flight window actually used (QoS 1).
    window: u64,
    error: Option<io::Error>,
}

/// Reads what has arrived on the publisher's connection (PUBACKs) and, if
/// `wait`, blocks up to one poll tick for it.
fn read_acks(conn: &mut MqttConn, wait: bool) -> io::Result<()> {
    let got = if wait { conn.fill()? } else { conn.fill_now()? };
    if got == Fill::Eof {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            conn.disconnect
                .clone()
                .unwrap_or_else(|| "server closed the publisher's connection".into()),
        ));
    }
    conn.process(|_, _| {})?;
    Ok(())
}

fn window(o: &Opts, conn: &MqttConn) -> u64 {
    u64::from(o.inflight.min(conn.granted.receive_max).max(1))
}

/// Publishes `--msgs` messages (or for `--secs`) as fast as the window
/// allows, in batches of about `--batch` bytes.
fn publish_burst(conn: &mut MqttConn, o: &Opts, deadline: Instant) -> Published {
    let payload: Vec<u8> = (0..o.size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut frame = Vec::with_capacity(o.size + o.subject.len() + 16);
    let id_at = crate::mqtt::publish(&mut frame, conn.version, &o.subject, o.qos, 1, &payload);
    let window = if o.qos > 0 { window(o, conn) } else { u64::MAX };
    let per_batch = (o.batch / frame.len()).max(1).min(window as usize);
    let mut batch = frame.repeat(per_batch);
    let flen = frame.len();

    let start = Instant::now();
    let mut sent = 0u64;
    let mut target = if o.secs.is_some() { u64::MAX } else { o.msgs };
    let mut next_id: u16 = 0;
    let mut step = || -> io::Result<bool> {
        if o.secs
            .is_some_and(|d| target == u64::MAX && start.elapsed() >= d)
        {
            target = sent;
        }
        let unacked = sent - conn.pubacks.min(sent);
        if sent == target && (unacked == 0 || o.qos == 0) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("timeout while publishing ({sent} sent, {unacked} unacknowledged)"),
            ));
        }
        let n = (target - sent)
            .min(per_batch as u64)
            .min(window.saturating_sub(unacked)) as usize;
        if n == 0 {
            // Window full, or only PUBACKs left to wait for.
            read_acks(conn, true)?;
            return Ok(false);
        }
        if let Some(at) = id_at {
            for i in 0..n {
                next_id = next_id.checked_add(1).unwrap_or(1);
                let at = i * flen + at;
                batch[at..at + 2].copy_from_slice(&next_id.to_be_bytes());
            }
        }
        conn.send(&batch[..n * flen], deadline)?;
        sent += n as u64;
        if o.qos > 0 {
            read_acks(conn, false)?;
        }
        Ok(false)
    };
    let error = loop {
        match step() {
            Ok(true) => break None,
            Ok(false) => {}
            Err(e) => break Some(e),
        }
    };
    let error = match error {
        None if o.qos == 0 => conn.ping(deadline).err(),
        e => e,
    };
    if conn.puback_failures > 0 && error.is_none() {
        eprintln!(
            "junction-bench: {} PUBACKs carried a failure reason code",
            conn.puback_failures
        );
    }
    Published {
        sent,
        elapsed: start.elapsed(),
        window: if o.qos > 0 { window } else { 0 },
        error,
    }
}

/// What one subscriber received.
#[derive(Default)]
struct SubStats {
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Delivery latencies in ns (`mqtt-latency` only).
    lat_ns: Vec<u64>,
    /// Deliveries at a QoS other than the one subscribed to.
    other_qos: u64,
    ended_by: Option<String>,
}

struct Shared {
    /// Messages each subscriber should receive (u64::MAX while unknown).
    expected: AtomicU64,
    publisher_done: AtomicBool,
    abort: AtomicBool,
    /// Common time base of publisher timestamps and subscriber clocks.
    epoch: Instant,
}

/// Subscribes, reports readiness, then receives until it has everything,
/// the publisher is done and the stream dried up, or the deadline.
fn subscriber(
    o: &Opts,
    idx: usize,
    shared: &Shared,
    ready: mpsc::Sender<Result<(), String>>,
    deadline: Instant,
    latency: bool,
) -> SubStats {
    let setup = || -> io::Result<MqttConn> {
        let (id, session) = sub_session(o, idx);
        if o.persistent {
            // 3.1.1 would resume a session a crashed earlier run left behind.
            forget_session(o, &id)?;
        }
        let mut conn = MqttConn::open(
            &o.sub_addr,
            o.mqtt_version,
            &id,
            o.keepalive,
            session,
            256 * 1024,
        )?;
        let granted = conn.subscribe(&o.subject, o.qos, deadline)?;
        if granted != o.qos {
            eprintln!(
                "junction-bench: subscriber {idx} asked for QoS {} and was granted QoS {granted}",
                o.qos
            );
        }
        Ok(conn)
    };
    let mut conn = match setup() {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("subscriber {idx}: {e}")));
            return SubStats::default();
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);

    let mut st = SubStats::default();
    if latency {
        st.lat_ns.reserve(o.count);
    }
    let mut last_activity = Instant::now();
    loop {
        match conn.fill() {
            Ok(Fill::Data) => {
                let now = Instant::now();
                let now_ns = now.duration_since(shared.epoch).as_nanos() as u64;
                let (mut other_qos, lat) = (0, &mut st.lat_ns);
                let warmup = o.warmup as u64;
                let r = conn.process(|qos, payload| {
                    other_qos += u64::from(qos != o.qos);
                    if latency && payload.len() >= STAMP {
                        let seq = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
                        let sent =
                            u64::from_be_bytes(payload[8..16].try_into().unwrap_or_default());
                        if seq >= warmup {
                            lat.push(now_ns.saturating_sub(sent));
                        }
                    }
                });
                st.other_qos += other_qos;
                last_activity = now;
                match r {
                    Ok(n) if n > 0 => {
                        st.count += n;
                        st.first.get_or_insert(now);
                        st.last = Some(now);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        st.ended_by = Some(format!("protocol error: {e}"));
                        break;
                    }
                }
            }
            Ok(Fill::Idle) => {}
            Ok(Fill::Eof) => {
                let why = conn.disconnect.clone().unwrap_or_default();
                st.ended_by = Some(format!("server closed the connection {why}"));
                break;
            }
            Err(e) => {
                st.ended_by = Some(format!("read error: {e}"));
                break;
            }
        }
        if let Err(e) = conn.flush(deadline) {
            st.ended_by = Some(format!("write error (PUBACK): {e}"));
            break;
        }
        if st.count >= shared.expected.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            st.ended_by = Some("timeout".into());
            break;
        }
        if shared.abort.load(Ordering::Relaxed) {
            st.ended_by = Some("aborted".into());
            break;
        }
        if shared.publisher_done.load(Ordering::Acquire)
            && now.duration_since(last_activity) >= IDLE_GRACE
        {
            st.ended_by = Some("no more messages after the publisher finished".into());
            break;
        }
    }
    conn.disconnect();
    st
}

/// Starts `subs` subscriber threads, waits until all are subscribed, runs
/// `publish` on a fresh publisher connection, and collects the subscribers.
fn run_with_subscribers<P>(
    o: &Opts,
    subs: usize,
    latency: bool,
    deadline: Instant,
    publish: P,
) -> io::Result<(Published, CpuProbe, Vec<SubStats>)>
where
    P: FnOnce(&mut MqttConn, &Shared) -> Published,
{
    let shared = Arc::new(Shared {
        expected: AtomicU64::new(u64::MAX),
        publisher_done: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        epoch: Instant::now(),
    });
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(subs);
    for idx in 0..subs {
        let (o, shared, tx) = (o.clone(), shared.clone(), tx.clone());
        handles.push(
            thread::Builder::new()
                .name(format!("mqtt-sub-{idx}"))
                .spawn(move || subscriber(&o, idx, &shared, tx, deadline, latency))?,
        );
    }
    drop(tx);
    let mut setup_error = None;
    for _ in 0..subs {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => setup_error = Some(e),
            Err(_) => setup_error = Some("subscriber thread died".into()),
        }
    }
    if setup_error.is_none() && o.sub_addr != o.addr {
        // Subscribers on another broker: their interest crosses the leaf node links first.
        thread::sleep(Duration::from_secs(1));
    }
    let outcome = match setup_error {
        Some(e) => Err(io::Error::other(e)),
        None => open(o, "pub", 64 * 1024).map(|mut conn| {
            let cpu = CpuProbe::start(o.pid);
            let published = publish(&mut conn, &shared);
            conn.disconnect();
            (published, cpu)
        }),
    };
    match &outcome {
        Ok((p, _)) if p.error.is_none() => shared.expected.store(p.sent, Ordering::Release),
        Ok(_) => {}
        Err(_) => shared.abort.store(true, Ordering::Relaxed),
    }
    shared.publisher_done.store(true, Ordering::Release);
    let stats: Vec<SubStats> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    let (published, cpu) = outcome?;
    Ok((published, cpu, stats))
}

fn report_problems(mode: &str, published: &Published, stats: &[SubStats], complete: bool) {
    if let Some(e) = &published.error {
        eprintln!("junction-bench {mode}: publisher stopped early: {e}");
    }
    for (i, s) in stats.iter().enumerate() {
        if s.other_qos > 0 {
            eprintln!(
                "junction-bench {mode}: subscriber {i} got {} deliveries at another QoS",
                s.other_qos
            );
        }
        if let (Some(why), false) = (&s.ended_by, complete) {
            eprintln!(
                "junction-bench {mode}: subscriber {i} got {} msgs, ended: {why}",
                s.count
            );
        }
    }
}

/// Runs `publish_burst` on `conn` and on `--pubs` - 1 more publisher connections at once,
/// each in its own thread; adds up what they sent.
fn publish_all(conn: &mut MqttConn, o: &Opts, deadline: Instant) -> Published {
    let others: Vec<_> = (1..o.pubs)
        .map(|i| {
            let o = o.clone();
            thread::spawn(move || match open(&o, &format!("pub-{i}"), 64 * 1024) {
                Ok(mut c) => {
                    let p = publish_burst(&mut c, &o, deadline);
                    c.disconnect();
                    p
                }
                Err(e) => Published {
                    sent: 0,
                    elapsed: Duration::ZERO,
                    window: 0,
                    error: Some(e),
                },
            })
        })
        .collect();
    let mut total = publish_burst(conn, o, deadline);
    for h in others {
        let p = h.join().unwrap_or_else(|_| Published {
            sent: 0,
            elapsed: Duration::ZERO,
            window: 0,
            error: Some(io::Error::other("publisher thread died")),
        });
        total.sent += p.sent;
        total.elapsed = total.elapsed.max(p.elapsed);
        if total.error.is_none() {
            total.error = p.error;
        }
    }
    total
}

/// `mqtt-pubsub`: `--pubs` publishers, `--subs` subscribers, rate at the subscribers.
pub fn run_pubsub(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let (published, cpu, stats) = run_with_subscribers(o, o.subs, false, deadline, |conn, _| {
        publish_all(conn, o, deadline)
    })?;

    let received: u64 = stats.iter().map(|s| s.count).sum();
    let first = stats.iter().filter_map(|s| s.first).min();
    let last = stats.iter().filter_map(|s| s.last).max();
    let span = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f),
        _ => Duration::ZERO,
    };
    let secs = span.as_secs_f64();
    let rate = if secs > 0.0 {
        received as f64 / secs
    } else {
        0.0
    };
    let expected = published.sent * o.subs as u64;
    let complete = published.error.is_none()
        && (o.secs.is_some() || published.sent == o.msgs * o.pubs as u64)
        && received >= expected;
    let pub_rate = published.sent as f64 / published.elapsed.as_secs_f64().max(1e-9);
    println!(
        "RESULT mode=mqtt-pubsub version={} qos={} persistent={} pubs={} subs={} size={} inflight={} published={} \
         pub_secs={:.4} pub_rate={:.0} msgs={} expected={} lost={} secs={:.4} rate={:.0} \
         mbps={:.2} complete={}{}",
        o.mqtt_version,
        o.qos,
        u8::from(o.persistent),
        o.pubs,
        o.subs,
        o.size,
        published.window,
        published.sent,
        published.elapsed.as_secs_f64(),
        pub_rate,
        received,
        expected,
        expected.saturating_sub(received),
        secs,
        rate,
        rate * o.size as f64 / 1e6,
        u8::from(complete),
        cpu.fields(received),
    );
    println!(
        "mqtt-pubsub QoS {}{} {}->{} {} B: {} of {} msgs received in {:.3} s = {} msgs/s ({:.1} MB/s \
         payload) at the subscribers; publisher {} msgs/s",
        o.qos,
        if o.persistent { " persistent" } else { "" },
        o.pubs,
        o.subs,
        o.size,
        received,
        expected,
        secs,
        human_rate(rate),
        rate * o.size as f64 / 1e6,
        human_rate(pub_rate),
    );
    report_problems("mqtt-pubsub", &published, &stats, complete);
    forget_sessions(o, o.subs);
    Ok(())
}

/// Publishes `--warmup` + `--count` timestamped messages at `--rate` per
/// second (on a fixed schedule: a late message doesn't delay the next ones).
fn publish_paced(conn: &mut MqttConn, o: &Opts, shared: &Shared, deadline: Instant) -> Published {
    let size = o.size.max(STAMP);
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut frame = Vec::with_capacity(size + o.subject.len() + 16);
    let id_at = crate::mqtt::publish(&mut frame, conn.version, &o.subject, o.qos, 1, &payload);
    let stamp_at = frame.len() - size;
    let window = if o.qos > 0 { window(o, conn) } else { u64::MAX };
    let total = (o.warmup + o.count) as u64;
    let interval = Duration::from_secs_f64(1.0 / o.rate);

    let start = Instant::now();
    let mut sent = 0u64;
    let mut next_id: u16 = 0;
    let mut step = || -> io::Result<bool> {
        let unacked = sent - conn.pubacks.min(sent);
        if sent == total && (unacked == 0 || o.qos == 0) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("timeout while publishing ({sent} sent, {unacked} unacknowledged)"),
            ));
        }
        if sent == total || unacked >= window {
            read_acks(conn, true)?;
            return Ok(false);
        }
        let due = start + interval.mul_f64(sent as f64);
        if due > now {
            thread::sleep(due - now);
        }
        if let Some(at) = id_at {
            next_id = next_id.checked_add(1).unwrap_or(1);
            frame[at..at + 2].copy_from_slice(&next_id.to_be_bytes());
        }
        frame[stamp_at..stamp_at + 8].copy_from_slice(&sent.to_be_bytes());
        let t = Instant::now().duration_since(shared.epoch).as_nanos() as u64;
        frame[stamp_at + 8..stamp_at + 16].copy_from_slice(&t.to_be_bytes());
        conn.send(&frame, deadline)?;
        sent += 1;
        if o.qos > 0 {
            read_acks(conn, false)?;
        }
        Ok(false)
    };
    let error = loop {
        match step() {
            Ok(true) => break None,
            Ok(false) => {}
            Err(e) => break Some(e),
        }
    };
    let error = match error {
        None if o.qos == 0 => conn.ping(deadline).err(),
        e => e,
    };
    Published {
        sent,
        elapsed: start.elapsed(),
        window: if o.qos > 0 { window } else { 0 },
        error,
    }
}

/// `mqtt-latency`: one publisher at a fixed rate, one subscriber; latency
/// from the send timestamp in the payload to the subscriber's read.
pub fn run_latency(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let (published, cpu, mut stats) =
        run_with_subscribers(o, 1, true, deadline, |conn, shared| {
            publish_paced(conn, o, shared, deadline)
        })?;
    let st = &mut stats[0];
    let lat_ns = &mut st.lat_ns;
    lat_ns.sort_unstable();
    let total = (o.warmup + o.count) as u64;
    let done = lat_ns.len();
    let us = |ns: u64| ns as f64 / 1e3;
    let avg = if lat_ns.is_empty() {
        0.0
    } else {
        lat_ns.iter().sum::<u64>() as f64 / done as f64 / 1e3
    };
    let (p50, p90, p99) = (
        us(quantile(lat_ns, 0.50)),
        us(quantile(lat_ns, 0.90)),
        us(quantile(lat_ns, 0.99)),
    );
    let max = us(lat_ns.last().copied().unwrap_or(0));
    let complete = published.error.is_none() && published.sent == total && st.count >= total;
    let actual_rate = published.sent as f64 / published.elapsed.as_secs_f64().max(1e-9);
    println!(
        "RESULT mode=mqtt-latency version={} qos={} persistent={} size={} target_rate={:.0} \
         pub_rate={:.0} count={} warmup={} sent={} received={} lost={} measured={done} \
         p50_us={p50:.1} \
         p90_us={p90:.1} p99_us={p99:.1} max_us={max:.1} avg_us={avg:.1} complete={}{}",
        o.mqtt_version,
        o.qos,
        u8::from(o.persistent),
        o.size.max(STAMP),
        o.rate,
        actual_rate,
        o.count,
        o.warmup,
        published.sent,
        st.count,
        published.sent.saturating_sub(st.count),
        u8::from(complete),
        cpu.fields(st.count),
    );
    println!(
        "mqtt-latency QoS {}{} {} B at {} msgs/s: {done} deliveries measured: p50 {p50:.1} us, \
         p90 {p90:.1} us, p99 {p99:.1} us, max {max:.1} us, avg {avg:.1} us",
        o.qos,
        if o.persistent { " persistent" } else { "" },
        o.size.max(STAMP),
        human_rate(o.rate),
    );
    report_problems("mqtt-latency", &published, &stats, complete);
    forget_sessions(o, 1);
    Ok(())
}

//! `pubsub` (1 publisher -> N subscribers) and `pub` (publish only) modes.

use crate::procfs::CpuProbe;
use crate::proto::{Conn, Fill};
use crate::{human_rate, Opts};
use std::io::{self, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Once the publisher is done, a subscriber that has seen nothing for this
/// long assumes the rest was dropped (e.g. cut off as a slow consumer).
const IDLE_GRACE: Duration = Duration::from_secs(2);

/// What the publisher managed to do.
struct Published {
    sent: u64,
    /// From the first write until the final PONG (or the failure).
    elapsed: Duration,
    error: Option<io::Error>,
}

/// Publishes `--msgs` messages (or for `--secs`) in large batches, then
/// waits for a PING/PONG round trip so the server has read everything.
fn publish(conn: &mut Conn, o: &Opts, deadline: Instant) -> Published {
    let payload: Vec<u8> = (0..o.size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut frame = Vec::with_capacity(o.size + o.subject.len() + 32);
    // Writing into a Vec cannot fail.
    let _ = write!(frame, "PUB {} {}\r\n", o.subject, o.size);
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(b"\r\n");
    let per_batch = (o.batch / frame.len()).max(1);
    let batch = frame.repeat(per_batch);

    let start = Instant::now();
    let mut sent = 0u64;
    let mut error = None;
    loop {
        let n = match o.secs {
            Some(d) if start.elapsed() >= d => 0,
            Some(_) => per_batch,
            None => (o.msgs - sent).min(per_batch as u64) as usize,
        };
        if n == 0 {
            break;
        }
        if Instant::now() >= deadline {
            error = Some(io::Error::new(
                ErrorKind::TimedOut,
                "timeout while publishing",
            ));
            break;
        }
        if let Err(e) = conn.send(&batch[..n * frame.len()], deadline) {
            error = Some(e);
            break;
        }
        sent += n as u64;
    }
    if error.is_none() {
        error = conn.ping_pong(deadline).err();
    }
    Published {
        sent,
        elapsed: start.elapsed(),
        error,
    }
}

/// What one subscriber received.
#[derive(Default)]
struct SubStats {
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    ended_by: Option<String>,
}

struct Shared {
    /// Messages each subscriber should receive (u64::MAX while unknown).
    expected: AtomicU64,
    publisher_done: AtomicBool,
    abort: AtomicBool,
}

fn subscriber(
    o: &Opts,
    idx: usize,
    shared: &Shared,
    ready: mpsc::Sender<Result<(), String>>,
    deadline: Instant,
) -> SubStats {
    let setup = || -> io::Result<Conn> {
        let mut conn = Conn::open(
            &o.addr,
            o.transport,
            &format!("bench-sub-{idx}"),
            256 * 1024,
        )?;
        conn.send(format!("SUB {} 1\r\n", o.subject).as_bytes(), deadline)?;
        conn.ping_pong(deadline)?;
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
    let mut last_activity = Instant::now();
    loop {
        match conn.fill() {
            Ok(Fill::Data) => {
                let mut n = 0u64;
                match conn.process(|_| n += 1) {
                    Ok(_) => {}
                    Err(e) => st.ended_by = Some(format!("protocol error: {e}")),
                }
                let now = Instant::now();
                last_activity = now;
                if n > 0 {
                    st.count += n;
                    st.first.get_or_insert(now);
                    st.last = Some(now);
                }
                if st.ended_by.is_some() {
                    break;
                }
            }
            Ok(Fill::Idle) => {}
            Ok(Fill::Eof) => {
                let why = conn.last_err.clone().unwrap_or_default();
                st.ended_by = Some(format!("server closed the connection {why}"));
                break;
            }
            Err(e) => {
                st.ended_by = Some(format!("read error: {e}"));
                break;
            }
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
    st
}

/// `pubsub`: one publisher, `--subs` subscribers, rate at the subscribers.
pub fn run_pubsub(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let shared = Arc::new(Shared {
        expected: AtomicU64::new(if o.secs.is_some() { u64::MAX } else { o.msgs }),
        publisher_done: AtomicBool::new(false),
        abort: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(o.subs);
    for idx in 0..o.subs {
        let (o, shared, tx) = (o.clone(), shared.clone(), tx.clone());
        handles.push(
            thread::Builder::new()
                .name(format!("sub-{idx}"))
                .spawn(move || subscriber(&o, idx, &shared, tx, deadline))?,
        );
    }
    drop(tx);
    let mut setup_error = None;
    for _ in 0..o.subs {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => setup_error = Some(e),
            Err(_) => setup_error = Some("subscriber thread died".into()),
        }
    }
    let outcome = match setup_error {
        Some(e) => Err(io::Error::other(e)),
        None => Conn::open(&o.addr, o.transport, "bench-pub", 4096).map(|mut conn| {
            let cpu = CpuProbe::start(o.pid);
            let published = publish(&mut conn, o, deadline);
            (published, cpu, conn)
        }),
    };
    match &outcome {
        Ok((p, _, _)) if p.error.is_none() => {
            let cap = shared.expected.load(Ordering::Acquire);
            shared.expected.store(p.sent.min(cap), Ordering::Release);
        }
        Ok(_) => {}
        Err(_) => shared.abort.store(true, Ordering::Relaxed),
    }
    shared.publisher_done.store(true, Ordering::Release);
    let stats: Vec<SubStats> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    let (published, cpu, _publisher) = outcome?;

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
    let complete = published.error.is_none() && received >= expected;
    let pub_rate = published.sent as f64 / published.elapsed.as_secs_f64().max(1e-9);
    println!(
        "RESULT mode=pubsub transport={} subs={} size={} published={} pub_secs={:.4} pub_rate={:.0} \
         msgs={} expected={} secs={:.4} rate={:.0} mbps={:.2} complete={}{}",
        o.transport.name(),
        o.subs,
        o.size,
        published.sent,
        published.elapsed.as_secs_f64(),
        pub_rate,
        received,
        expected,
        secs,
        rate,
        rate * o.size as f64 / 1e6,
        u8::from(complete),
        cpu.fields(received),
    );
    println!(
        "pubsub 1->{} {} B{}: {} of {} msgs received in {:.3} s = {} msgs/s ({:.1} MB/s payload) at the \
         subscribers; publisher {} msgs/s",
        o.subs,
        o.size,
        o.transport.suffix(),
        received,
        expected,
        secs,
        human_rate(rate),
        rate * o.size as f64 / 1e6,
        human_rate(pub_rate),
    );
    if let Some(e) = &published.error {
        eprintln!("junction-bench pubsub: publisher stopped early: {e}");
    }
    for (i, s) in stats.iter().enumerate() {
        if let (Some(why), false) = (&s.ended_by, complete) {
            eprintln!(
                "junction-bench pubsub: subscriber {i} got {} msgs, ended: {why}",
                s.count
            );
        }
    }
    Ok(())
}

/// `pub`: publish only; rate at the publisher until the final PONG.
pub fn run_pub(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let mut conn = Conn::open(&o.addr, o.transport, "bench-pub", 4096)?;
    let cpu = CpuProbe::start(o.pid);
    let p = publish(&mut conn, o, deadline);
    let secs = p.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        p.sent as f64 / secs
    } else {
        0.0
    };
    let complete = p.error.is_none() && (o.secs.is_some() || p.sent == o.msgs);
    println!(
        "RESULT mode=pub transport={} size={} msgs={} secs={:.4} rate={:.0} mbps={:.2} complete={}{}",
        o.transport.name(),
        o.size,
        p.sent,
        secs,
        rate,
        rate * o.size as f64 / 1e6,
        u8::from(complete),
        cpu.fields(p.sent),
    );
    println!(
        "pub {} B{}: {} msgs published and flushed in {:.3} s = {} msgs/s ({:.1} MB/s payload)",
        o.size,
        o.transport.suffix(),
        p.sent,
        secs,
        human_rate(rate),
        rate * o.size as f64 / 1e6,
    );
    if let Some(e) = p.error {
        eprintln!("junction-bench pub: publisher stopped early: {e}");
    }
    Ok(())
}

//! `reqrep` mode: sequential request/reply latency.
//!
//! A responder connection subscribes to `--subject` and answers every request
//! by publishing the payload back to its reply subject. The requester
//! subscribes to `_INBOX.<id>.*`, then sends one `PUB <subject>
//! _INBOX.<id>.<n> <size>` at a time and waits for the reply with subject
//! `_INBOX.<id>.<n>` before sending the next.

use crate::procfs::CpuProbe;
use crate::proto::{Conn, Fill};
use crate::{human_rate, Opts};
use std::io::{self, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn responder(
    o: &Opts,
    stop: &AtomicBool,
    ready: mpsc::Sender<io::Result<()>>,
    deadline: Instant,
) -> io::Result<()> {
    let setup = || -> io::Result<Conn> {
        let mut conn = Conn::open(&o.addr, o.transport, "bench-responder", 64 * 1024)?;
        conn.send(format!("SUB {} 1\r\n", o.subject).as_bytes(), deadline)?;
        conn.ping_pong(deadline)?;
        Ok(conn)
    };
    let mut conn = match setup() {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            let _ = ready.send(Err(e));
            return Err(io::Error::other(msg));
        }
    };
    let _ = ready.send(Ok(()));
    let mut out = Vec::with_capacity(64 * 1024);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match conn.fill()? {
            Fill::Eof => break,
            Fill::Idle => continue,
            Fill::Data => {}
        }
        out.clear();
        conn.process(|m| {
            if let (_, Some(reply)) = m.subject_reply() {
                out.extend_from_slice(b"PUB ");
                out.extend_from_slice(reply);
                // Writing into a Vec cannot fail.
                let _ = write!(out, " {}\r\n", m.payload.len());
                out.extend_from_slice(m.payload);
                out.extend_from_slice(b"\r\n");
            }
        })?;
        if !out.is_empty() {
            conn.send(&out, deadline)?;
        }
    }
    Ok(())
}

/// Value at quantile `q` (0..=1) of an ascending-sorted slice.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let handle = {
        let (o, stop) = (o.clone(), stop.clone());
        thread::Builder::new()
            .name("responder".into())
            .spawn(move || responder(&o, &stop, tx, deadline))?
    };
    match rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(io::Error::other("responder thread died")),
    }

    let id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ std::process::id())
        .unwrap_or(0);
    let inbox = format!("_INBOX.{id:x}.");
    let mut conn = Conn::open(&o.addr, o.transport, "bench-requester", 64 * 1024)?;
    conn.send(format!("SUB {inbox}* 1\r\n").as_bytes(), deadline)?;
    conn.ping_pong(deadline)?;

    let payload: Vec<u8> = (0..o.size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req = Vec::with_capacity(o.size + 64);
    let mut want = Vec::with_capacity(64);
    let mut lat_ns = Vec::with_capacity(o.count);
    let total = o.warmup + o.count;
    let mut error = None;
    let mut cpu = CpuProbe::start(None);
    let mut started = Instant::now();
    'requests: for n in 0..total {
        if n == o.warmup {
            cpu = CpuProbe::start(o.pid);
            started = Instant::now();
        }
        want.clear();
        want.extend_from_slice(inbox.as_bytes());
        let _ = write!(want, "{n}");
        req.clear();
        req.extend_from_slice(b"PUB ");
        req.extend_from_slice(o.subject.as_bytes());
        req.push(b' ');
        req.extend_from_slice(&want);
        let _ = write!(req, " {}\r\n", o.size);
        req.extend_from_slice(&payload);
        req.extend_from_slice(b"\r\n");

        let t0 = Instant::now();
        if let Err(e) = conn.send(&req, deadline) {
            error = Some(e);
            break;
        }
        let mut got = false;
        while !got {
            match conn.fill() {
                Ok(Fill::Data) => {}
                Ok(Fill::Idle) if Instant::now() < deadline => continue,
                Ok(Fill::Idle) => {
                    error = Some(io::Error::new(ErrorKind::TimedOut, "timeout"));
                    break 'requests;
                }
                Ok(Fill::Eof) => {
                    let why = conn
                        .last_err
                        .clone()
                        .unwrap_or_else(|| "server closed".into());
                    error = Some(io::Error::new(ErrorKind::UnexpectedEof, why));
                    break 'requests;
                }
                Err(e) => {
                    error = Some(e);
                    break 'requests;
                }
            }
            if let Err(e) = conn.process(|m| got |= m.subject_reply().0 == want.as_slice()) {
                error = Some(e);
                break 'requests;
            }
        }
        if n >= o.warmup {
            lat_ns.push(t0.elapsed().as_nanos() as u64);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let done = lat_ns.len() as u64;
    let cpu_fields = cpu.fields(done);
    stop.store(true, Ordering::Relaxed);
    if let Ok(Err(e)) = handle.join() {
        eprintln!("junction-bench reqrep: responder: {e}");
    }

    lat_ns.sort_unstable();
    let us = |ns: u64| ns as f64 / 1e3;
    let avg = if lat_ns.is_empty() {
        0.0
    } else {
        lat_ns.iter().sum::<u64>() as f64 / lat_ns.len() as f64 / 1e3
    };
    let rate = if wall > 0.0 { done as f64 / wall } else { 0.0 };
    let (p50, p90, p99) = (
        us(quantile(&lat_ns, 0.50)),
        us(quantile(&lat_ns, 0.90)),
        us(quantile(&lat_ns, 0.99)),
    );
    let max = us(lat_ns.last().copied().unwrap_or(0));
    println!(
        "RESULT mode=reqrep transport={} size={} count={} done={} p50_us={p50:.1} p90_us={p90:.1} \
         p99_us={p99:.1} max_us={max:.1} avg_us={avg:.1} rate={rate:.0} complete={}{}",
        o.transport.name(),
        o.size,
        o.count,
        done,
        u8::from(error.is_none() && done == o.count as u64),
        cpu_fields,
    );
    println!(
        "reqrep {} B{}: {done} round trips ({} req/s): p50 {p50:.1} us, p90 {p90:.1} us, \
         p99 {p99:.1} us, max {max:.1} us, avg {avg:.1} us",
        o.size,
        o.transport.suffix(),
        human_rate(rate),
    );
    if let Some(e) = error {
        eprintln!("junction-bench reqrep: stopped early: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}

//! `idle` mode: open `--conns` connections that each complete the handshake
//! (INFO, CONNECT, PING/PONG) and then stay silent; with `--pid`, report how
//! much the server's resident memory grew per connection.
//!
//! Client-side cost is one file descriptor per connection: handshakes share a
//! per-thread scratch buffer and an open connection keeps no buffer at all.

use crate::procfs::rss_bytes;
use crate::proto::{connect_line, dial, handshake};
use crate::Opts;
use std::io;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// Connections one thread managed to open, and why it stopped early, if it did.
pub(crate) type Opened = (Vec<TcpStream>, Option<String>);

fn open_some(o: &Opts, thread_idx: usize, n: usize, deadline: Instant) -> Opened {
    let connect = connect_line(&format!("bench-idle-{thread_idx}"));
    let mut scratch = Vec::with_capacity(2048);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        if Instant::now() >= deadline {
            return (conns, Some("timeout".into()));
        }
        let opened = dial(&o.addr).and_then(|mut s| {
            handshake(
                &mut s,
                &mut scratch,
                connect.as_bytes(),
                Duration::from_secs(10),
            )?;
            Ok(s)
        });
        match opened {
            Ok(s) => conns.push(s),
            Err(e) => return (conns, Some(e.to_string())),
        }
    }
    (conns, None)
}

/// Opens `o.conns` connections on `o.threads` threads, each running `open_some(o, thread
/// index, how many, deadline)`; returns the open connections and what went wrong. Shared by
/// the NATS and MQTT idle modes.
pub fn open_in_threads(
    o: &Opts,
    name: &str,
    deadline: Instant,
    open_some: fn(&Opts, usize, usize, Instant) -> Opened,
) -> io::Result<(Vec<TcpStream>, Vec<String>)> {
    let threads = o.threads.min(o.conns.max(1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let n = o.conns / threads + usize::from(t < o.conns % threads);
        let o = o.clone();
        handles.push(
            thread::Builder::new()
                .name(format!("{name}-{t}"))
                .stack_size(256 * 1024)
                .spawn(move || open_some(&o, t, n, deadline))?,
        );
    }
    let mut conns: Vec<TcpStream> = Vec::with_capacity(o.conns);
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok((mut c, err)) => {
                conns.append(&mut c);
                errors.extend(err);
            }
            Err(_) => errors.push("opener thread panicked".into()),
        }
    }
    Ok((conns, errors))
}

pub fn run(o: &Opts) -> io::Result<()> {
    let deadline = Instant::now() + o.timeout;
    let before = o.pid.and_then(rss_bytes);
    if o.pid.is_some() && before.is_none() {
        return Err(io::Error::other(format!(
            "cannot read /proc/{}/status",
            o.pid.unwrap_or_default()
        )));
    }
    let started = Instant::now();
    let (conns, errors) = open_in_threads(o, "idle", deadline, open_some)?;
    let open_secs = started.elapsed().as_secs_f64();
    let opened = conns.len();

    thread::sleep(o.settle);
    let after = o.pid.and_then(rss_bytes);
    let mut rss_fields = String::new();
    let mut rss_human = String::new();
    if let (Some(b), Some(a)) = (before, after) {
        let per = (a as f64 - b as f64) / opened.max(1) as f64;
        rss_fields = format!(" rss_before={b} rss_after={a} rss_per_conn={per:.0}");
        rss_human = format!(
            "; server RSS {:.1} MiB -> {:.1} MiB = {:.1} KiB per connection",
            b as f64 / 1048576.0,
            a as f64 / 1048576.0,
            per / 1024.0
        );
    }
    println!(
        "RESULT mode=idle conns={} opened={opened} open_secs={open_secs:.3} complete={}{rss_fields}",
        o.conns,
        u8::from(opened == o.conns),
    );
    println!(
        "idle: {opened} of {} connections open after {open_secs:.2} s ({:.0} conn/s){rss_human}",
        o.conns,
        opened as f64 / open_secs.max(1e-9),
    );
    if let Some(e) = errors.first() {
        eprintln!(
            "junction-bench idle: {} opener thread(s) stopped early, first: {e}",
            errors.len()
        );
    }
    thread::sleep(o.hold);
    drop(conns);
    Ok(())
}

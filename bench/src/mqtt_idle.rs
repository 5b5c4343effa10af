//! `mqtt-idle` mode: open `--conns` MQTT connections that each complete
//! CONNECT/CONNACK (keep alive `--keepalive`, 0 = none, by default) and then
//! stay silent; with `--pid`, report how much the server's resident memory
//! grew per connection. Each connection is closed with a DISCONNECT.
//!
//! Client-side cost is one file descriptor per connection: handshakes share a
//! per-thread scratch buffer and an open connection keeps no buffer at all.

use crate::mqtt::{connect, handshake, Session, DISCONNECT, HANDSHAKE_TIMEOUT};
use crate::procfs::rss_bytes;
use crate::proto::dial;
use crate::Opts;
use std::io::{self, Write};
use std::thread;
use std::time::{Duration, Instant};

/// Connections one thread managed to open, and why it stopped early, if it did.
use crate::idle::Opened;

fn open_some(o: &Opts, thread_idx: usize, n: usize, deadline: Instant) -> Opened {
    let mut scratch = Vec::with_capacity(1024);
    let mut packet = Vec::with_capacity(64);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        if Instant::now() >= deadline {
            return (conns, Some("timeout".into()));
        }
        packet.clear();
        let id = format!("jbench-{}-idle-{thread_idx}-{i}", std::process::id());
        connect(
            &mut packet,
            o.mqtt_version,
            &id,
            o.keepalive,
            Session::Clean,
        );
        let opened = dial(&o.addr).and_then(|mut s| {
            handshake(
                &mut s,
                &mut scratch,
                &packet,
                o.mqtt_version,
                HANDSHAKE_TIMEOUT,
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
    let (conns, errors) = crate::idle::open_in_threads(o, "mqtt-idle", deadline, open_some)?;
    let open_secs = started.elapsed().as_secs_f64();
    let opened = conns.len();

    thread::sleep(o.settle);
    let after = o.pid.and_then(rss_bytes);
    // Still connected? A server that dropped them would make the RSS figure meaningless.
    let mut alive = 0usize;
    for s in &conns {
        if s.set_nonblocking(true).is_ok() {
            let mut b = [0u8; 1];
            match s.peek(&mut b) {
                Ok(0) => {}
                Ok(_) => alive += 1, // unexpected data, but still open
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => alive += 1,
                Err(_) => {}
            }
        }
    }
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
        "RESULT mode=mqtt-idle version={} conns={} opened={opened} alive={alive} open_secs={open_secs:.3} \
         complete={}{rss_fields}",
        o.mqtt_version,
        o.conns,
        u8::from(opened == o.conns && alive == opened),
    );
    println!(
        "mqtt-idle: {opened} of {} connections open after {open_secs:.2} s ({:.0} conn/s), {alive} \
         still open after {:.1} s{rss_human}",
        o.conns,
        opened as f64 / open_secs.max(1e-9),
        o.settle.as_secs_f64(),
    );
    if let Some(e) = errors.first() {
        eprintln!(
            "junction-bench mqtt-idle: {} opener thread(s) stopped early, first: {e}",
            errors.len()
        );
    }
    thread::sleep(o.hold);
    for mut s in conns {
        let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = s.write_all(&DISCONNECT);
    }
    Ok(())
}

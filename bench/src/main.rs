//! `junction-bench`: a dependency-free load generator for brokers that speak
//! the NATS client protocol (Junction, nats-server, ...) or MQTT 3.1.1/5.0
//! (Junction, mosquitto, ...).
//!
//! It uses only std: one blocking TCP socket per client connection and one
//! OS thread per active connection. Every mode prints exactly one
//! machine-readable line starting with `RESULT ` (space-separated `key=value`
//! pairs) followed by one human-readable line.
//!
//! ```text
//! junction-bench <mode> [--host 127.0.0.1] [--port 4222] [--timeout 60] [--pid PID] [options]
//!
//!   pubsub  1 publisher -> N subscribers on one subject; rate counted at the subscribers
//!           --subs 1 --size 128 --msgs 2000000 | --secs S  --subject bench.data --batch 65536
//!   pub     publish only, rate at the publisher up to a final PING/PONG
//!           --size 128 --msgs 2000000 | --secs S  --subject bench.data --batch 65536
//!   reqrep  sequential request/reply latency through a responder connection
//!           --count 20000 --warmup 1000 --size 128 --subject svc
//!   idle    hold many idle connections; with --pid, server RSS per connection
//!           --conns 10000 --threads 8 --settle 2 --hold 0
//!
//!   pubsub, pub and reqrep run over TCP, or with --ws (or --url ws://HOST:PORT)
//!   over WebSocket as nats.ws speaks it (--port is then the WebSocket port):
//!   an HTTP upgrade on `/` without subprotocol, then masked binary frames,
//!   one frame per write (the publisher's --batch buffer is one frame).
//!
//!   MQTT modes (--port is the MQTT port; --mqtt-version 3.1.1|5, --keepalive 0):
//!   mqtt-pubsub   P publishers -> N subscribers on one topic; rate at the subscribers
//!                 --qos 0|1 --pubs 1 --subs 1 --size 128 --msgs 1000000 | --secs S --inflight 1000
//!                 --subject bench/data --batch 65536
//!   mqtt-latency  publish-to-delivery latency, 1 publisher -> 1 subscriber at a fixed rate
//!                 --qos 0|1 --rate 2000 --count 20000 --warmup 1000 --size 128
//!   (both: --persistent = subscribers keep a persistent session, see below)
//!   mqtt-idle     hold many idle MQTT connections; with --pid, server RSS per connection
//!                 --conns 10000 --threads 8 --settle 2 --hold 0
//! ```
//!
//! MQTT subscribers subscribe at `--qos` and PUBACK every QoS 1 delivery; at
//! QoS 1 the publisher keeps at most `--inflight` PUBLISHes unacknowledged
//! (with 5.0, also at most the server's Receive Maximum). `mqtt-latency`
//! stamps each payload with the send time on a clock shared by publisher and
//! subscriber (same process), so latency is publish call to subscriber read.
//!
//! With `--persistent` the subscribers of `mqtt-pubsub` and `mqtt-latency`
//! hold persistent sessions under the stable client ids `jbench-sub-<n>`:
//! 3.1.1 `clean_session=0`, 5.0 clean start with Session Expiry Interval 3600
//! (so a broker with a durable store keeps their QoS 1 messages in it). The
//! publisher stays a clean session. Before subscribing and after the
//! measurement each subscriber id connects once with a clean session and
//! disconnects, so no session (nor queued message) is left on the broker.
//! Two benches with `--persistent` against one broker at once would share ids.
//!
//! Main `RESULT` keys: `rate` (msgs/s; for `pubsub` counted across all
//! subscribers from the first to the last message received), `mbps` (payload
//! megabytes, 10^6 bytes, per second), `p50_us`/`p90_us`/`p99_us`/`max_us`
//! (`reqrep`, `mqtt-latency`), `rss_per_conn` (bytes, `idle`, `mqtt-idle`),
//! `complete` (1 when everything expected was sent and received before the
//! timeout), `lost` (MQTT: messages published but not delivered).
//!
//! `--pid` names the server process: `pubsub`, `pub`, `reqrep`, `mqtt-pubsub`
//! and `mqtt-latency` then add its CPU time per message delivered
//! (`srv_cpu_ns_per_msg`), `idle` and `mqtt-idle` its `VmRSS` growth.
//! `--timeout` bounds every mode: on expiry it reports what it measured so far
//! (`complete=0`). `idle` needs a file-descriptor limit above `--conns` for
//! both the bench and the server (`ulimit -n`); `scripts/bench` raises it.
//!
//! Example, against a local nats-server:
//!
//! ```text
//! nats-server -a 127.0.0.1 -p 14222 &
//! cargo build --release -p junction-bench
//! target/release/junction-bench pubsub --port 14222 --subs 4 --pid $!
//! ```
//!
//! and over its WebSocket listener (`websocket { port: 14223, no_tls: true }`
//! in its configuration file):
//!
//! ```text
//! target/release/junction-bench pubsub --url ws://127.0.0.1:14223
//! ```

mod idle;
mod js;
mod mqtt;
mod mqtt_idle;
mod mqtt_pubsub;
mod procfs;
mod proto;
mod pubsub;
mod reqrep;
mod ws;

use proto::Transport;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str =
    "usage: junction-bench <pubsub|pub|reqrep|idle|mqtt-pubsub|mqtt-latency|mqtt-idle|js-pub|js-consume|kv-latency> [options]

common:  --host 127.0.0.1  --port 4222  --timeout SECS (60)  --pid SERVER_PID
         --user U --pass P (NATS modes: CONNECT with these credentials)
         --ws | --url ws://HOST:PORT (pubsub, pub, reqrep over WebSocket; --port is the WS port)
pubsub:  --subs 1  --size 128  --msgs 2000000 | --secs S  --subject bench.data  --batch 65536
pub:     --size 128  --msgs 2000000 | --secs S  --subject bench.data  --batch 65536
reqrep:  --count 20000  --warmup 1000  --size 128  --subject svc
idle:    --conns 10000  --threads 8  --settle 2  --hold 0

MQTT (--port is the MQTT port; all modes: --mqtt-version 3.1.1|5  --keepalive 0):
mqtt-pubsub:   --qos 0|1  --pubs 1  --subs 1  --size 128  --msgs 1000000 | --secs S
               --inflight 1000  --subject bench/data  --batch 65536
               (each publisher sends --msgs or for --secs; every subscriber gets them all)
mqtt-latency:  --qos 0|1  --rate 2000  --count 20000  --warmup 1000  --size 128
               (mqtt-pubsub, mqtt-latency: --sub-port N = subscribers on another broker,
               e.g. a device on leaf node A to a device on leaf node B)
               (mqtt-pubsub, mqtt-latency: --persistent = subscribers hold persistent
               sessions, ids jbench-sub-<n>; 5.0: session expiry 3600)
mqtt-idle:     --conns 10000  --threads 8  --settle 2  --hold 0

JetStream (NATS port; --storage file|memory):
js-pub:        --msgs N  --size 128  --inflight 256 (unacknowledged publications; 1 = synchronous)
js-consume:    --msgs N  --size 128  --batch 256 (pull request size; every message acknowledged)
kv-latency:    --count 20000  --warmup 1000  --size 128 (puts, then direct gets, one at a time)

Each run prints one `RESULT mode=... key=value ...` line and one human line.";

/// Parsed command line.
#[derive(Debug, Clone)]
pub struct Opts {
    pub mode: String,
    pub addr: SocketAddr,
    /// Where MQTT subscribers connect (`--sub-port`: another broker, e.g. the far leaf node);
    /// `addr` otherwise.
    pub sub_addr: SocketAddr,
    /// TCP, or NATS over WebSocket (`--ws`, `--url ws://...`).
    pub transport: Transport,
    pub timeout: Duration,
    pub pid: Option<u32>,
    pub subs: usize,
    /// Publishers (`mqtt-pubsub`), each on its own connection.
    pub pubs: usize,
    pub size: usize,
    pub msgs: u64,
    pub secs: Option<Duration>,
    pub subject: String,
    pub batch: usize,
    pub count: usize,
    pub warmup: usize,
    pub conns: usize,
    pub threads: usize,
    pub settle: Duration,
    pub hold: Duration,
    /// MQTT QoS of PUBLISHes and subscriptions (0 or 1).
    pub qos: u8,
    /// MQTT QoS 1 PUBLISHes the publisher keeps unacknowledged at most.
    pub inflight: u16,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    pub mqtt_version: u8,
    /// MQTT keep alive in seconds (0 = none).
    pub keepalive: u16,
    /// `mqtt-latency` publish rate, msgs/s.
    pub rate: f64,
    /// MQTT subscribers hold persistent sessions (`--persistent`).
    pub persistent: bool,
    /// NATS user and password every connection presents (`--user`, `--pass`).
    pub user: Option<String>,
    pub pass: Option<String>,
    /// JetStream modes: `file` or `memory` streams (`--storage`).
    pub storage: String,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut mode = None;
    let mut host = "127.0.0.1".to_string();
    let mut port: u16 = 4222;
    let mut sub_port: Option<u16> = None;
    let mut subject = None;
    let mut msgs = None;
    let mut o = Opts {
        mode: String::new(),
        addr: SocketAddr::from(([127, 0, 0, 1], 4222)),
        sub_addr: SocketAddr::from(([127, 0, 0, 1], 4222)),
        transport: Transport::Tcp,
        timeout: Duration::from_secs(60),
        pid: None,
        subs: 1,
        pubs: 1,
        size: 128,
        msgs: 2_000_000,
        secs: None,
        subject: String::new(),
        batch: 64 * 1024,
        count: 20_000,
        warmup: 1_000,
        conns: 10_000,
        threads: 8,
        settle: Duration::from_secs(2),
        hold: Duration::ZERO,
        qos: 0,
        inflight: 1000,
        mqtt_version: mqtt::V311,
        keepalive: 0,
        rate: 2000.0,
        persistent: false,
        user: None,
        pass: None,
        storage: "file".into(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if mode.is_some() {
                return Err(format!("unexpected argument `{arg}`"));
            }
            mode = Some(arg.clone());
            continue;
        };
        if flag == "ws" {
            o.transport = Transport::Ws;
            continue;
        }
        if flag == "persistent" {
            o.persistent = true;
            continue;
        }
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k, v.to_string()),
            None => (
                flag,
                it.next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?
                    .clone(),
            ),
        };
        let bad = |what: &str| format!("--{key}: bad {what} `{value}`");
        let num = || value.parse::<u64>().map_err(|_| bad("number"));
        let secs = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| bad("duration"))
        };
        match key {
            "mode" => mode = Some(value.clone()),
            "user" => o.user = Some(value.clone()),
            "storage" => {
                o.storage = match value.as_str() {
                    "file" | "memory" => value.clone(),
                    _ => return Err(bad("storage (file or memory)")),
                }
            }
            "pass" => o.pass = Some(value.clone()),
            "host" => host = value.clone(),
            "port" => port = value.parse().map_err(|_| bad("port"))?,
            "sub-port" => sub_port = Some(value.parse().map_err(|_| bad("sub-port"))?),
            "url" => {
                let (transport, rest) = if let Some(r) = value.strip_prefix("ws://") {
                    (Transport::Ws, r)
                } else if let Some(r) = value.strip_prefix("nats://") {
                    (Transport::Tcp, r)
                } else {
                    return Err(bad("URL (ws://HOST:PORT or nats://HOST:PORT)"));
                };
                let hostport = rest.strip_suffix('/').unwrap_or(rest);
                let (h, p) = hostport
                    .rsplit_once(':')
                    .ok_or_else(|| bad("URL (no :PORT)"))?;
                port = p.parse().map_err(|_| bad("URL port"))?;
                host = h.trim_start_matches('[').trim_end_matches(']').to_string();
                o.transport = transport;
            }
            "timeout" => o.timeout = secs()?,
            "pid" => o.pid = Some(value.parse().map_err(|_| bad("pid"))?),
            "subs" => o.subs = num()?.max(1) as usize,
            "pubs" => o.pubs = num()?.max(1) as usize,
            "size" => o.size = num()? as usize,
            "msgs" => msgs = Some(num()?),
            "secs" => o.secs = Some(secs()?),
            "subject" => subject = Some(value.clone()),
            "batch" => o.batch = num()?.max(1) as usize,
            "count" => o.count = num()?.max(1) as usize,
            "warmup" => o.warmup = num()? as usize,
            "conns" => o.conns = num()? as usize,
            "threads" => o.threads = num()?.max(1) as usize,
            "settle" => o.settle = secs()?,
            "hold" => o.hold = secs()?,
            "qos" => {
                o.qos = match value.as_str() {
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(bad("QoS (0 or 1)")),
                }
            }
            "inflight" => {
                o.inflight = num()?.clamp(1, u64::from(u16::MAX)) as u16;
            }
            "mqtt-version" => {
                o.mqtt_version =
                    mqtt::parse_version(&value).ok_or_else(|| bad("version (3.1.1 or 5)"))?;
            }
            "keepalive" => {
                o.keepalive = value.parse().map_err(|_| bad("keep alive (0..65535 s)"))?;
            }
            "rate" => {
                o.rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| bad("rate"))?;
            }
            _ => return Err(format!("unknown option --{key}")),
        }
    }
    o.mode = mode.ok_or("missing mode")?;
    if o.transport == Transport::Ws && !matches!(o.mode.as_str(), "pubsub" | "pub" | "reqrep") {
        return Err(format!(
            "--ws: mode {} runs over TCP only (WebSocket: pubsub, pub, reqrep)",
            o.mode
        ));
    }
    if o.persistent && !matches!(o.mode.as_str(), "mqtt-pubsub" | "mqtt-latency") {
        return Err(format!(
            "--persistent: only for mqtt-pubsub and mqtt-latency, not {}",
            o.mode
        ));
    }
    let is_mqtt = o.mode.starts_with("mqtt-");
    o.subject = subject.unwrap_or_else(|| {
        if o.mode == "reqrep" {
            "svc"
        } else if is_mqtt {
            "bench/data"
        } else {
            "bench.data"
        }
        .to_string()
    });
    o.msgs = msgs.unwrap_or(if is_mqtt { 1_000_000 } else { 2_000_000 });
    if o.secs.is_some() && o.mode == "mqtt-latency" {
        return Err("--secs: mqtt-latency sends --warmup + --count messages at --rate".into());
    }
    o.addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))?;
    o.sub_addr = o.addr;
    if let Some(p) = sub_port {
        if !matches!(o.mode.as_str(), "mqtt-pubsub" | "mqtt-latency") {
            return Err("--sub-port: only for mqtt-pubsub and mqtt-latency".into());
        }
        o.sub_addr.set_port(p);
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("junction-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let (Some(u), Some(p)) = (&opts.user, &opts.pass) {
        let _ = proto::CREDENTIALS.set((u.clone(), p.clone()));
    }
    let result = match opts.mode.as_str() {
        "pubsub" => pubsub::run_pubsub(&opts),
        "pub" => pubsub::run_pub(&opts),
        "reqrep" => reqrep::run(&opts),
        "idle" => idle::run(&opts),
        "mqtt-pubsub" => mqtt_pubsub::run_pubsub(&opts),
        "mqtt-latency" => mqtt_pubsub::run_latency(&opts),
        "mqtt-idle" => mqtt_idle::run(&opts),
        "js-pub" => js::run_pub(&opts),
        "js-consume" => js::run_consume(&opts),
        "kv-latency" => js::run_kv(&opts),
        other => {
            eprintln!("junction-bench: unknown mode `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("junction-bench {} ({}): {e}", opts.mode, opts.addr);
            ExitCode::FAILURE
        }
    }
}

/// Formats a rate with an SI suffix for the human-readable line.
pub fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Opts, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_args(&v)
    }

    #[test]
    fn parses_mode_and_flags() {
        let o = parse("pubsub --port 14222 --subs=4 --secs 1.5").unwrap();
        assert_eq!(o.mode, "pubsub");
        assert_eq!(o.addr.port(), 14222);
        assert_eq!(o.subs, 4);
        assert_eq!(o.secs, Some(Duration::from_millis(1500)));
        assert_eq!(o.subject, "bench.data");
        let o = parse("--mode reqrep").unwrap();
        assert_eq!(o.subject, "svc");
        assert!(parse("pubsub --bogus 1").is_err());
        assert!(parse("pubsub --subs").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn parses_websocket_flags() {
        let o = parse("pubsub --ws --port 8080 --subs 2").unwrap();
        assert_eq!(
            (o.transport, o.addr.port(), o.subs),
            (Transport::Ws, 8080, 2)
        );
        assert_eq!(parse("pubsub").unwrap().transport, Transport::Tcp);
        let o = parse("pub --url ws://127.0.0.1:9001/").unwrap();
        assert_eq!((o.transport, o.addr.port()), (Transport::Ws, 9001));
        let o = parse("reqrep --url nats://[::1]:4222").unwrap();
        assert_eq!((o.transport, o.addr.port()), (Transport::Tcp, 4222));
        assert!(o.addr.is_ipv6());
        assert!(parse("pub --url http://x:1").is_err());
        assert!(parse("pub --url ws://x").is_err());
        assert!(parse("idle --ws").is_err());
        assert!(parse("mqtt-pubsub --ws").is_err());
    }

    #[test]
    fn parses_mqtt_flags() {
        let o = parse("mqtt-pubsub --qos 1 --inflight 500 --mqtt-version 5 --subs 8").unwrap();
        assert_eq!((o.qos, o.inflight, o.mqtt_version, o.subs), (1, 500, 5, 8));
        assert_eq!(o.subject, "bench/data");
        assert_eq!(o.msgs, 1_000_000);
        let o = parse("mqtt-latency --rate 500 --mqtt-version 3.1.1 --msgs 7").unwrap();
        assert_eq!((o.rate, o.mqtt_version, o.msgs, o.qos), (500.0, 4, 7, 0));
        assert!(parse("mqtt-pubsub --qos 2").is_err());
        assert!(parse("mqtt-pubsub --mqtt-version 3").is_err());
        assert!(parse("mqtt-latency --secs 1").is_err());
        assert!(parse("mqtt-pubsub --secs 1").is_ok());
        assert_eq!(parse("pubsub").unwrap().msgs, 2_000_000);
    }

    #[test]
    fn parses_persistent() {
        let o = parse("mqtt-pubsub --qos 1 --persistent --mqtt-version 5").unwrap();
        assert!(o.persistent);
        assert_eq!((o.qos, o.mqtt_version), (1, 5));
        assert!(parse("mqtt-latency --persistent").unwrap().persistent);
        assert!(!parse("mqtt-pubsub").unwrap().persistent);
        assert!(parse("mqtt-idle --persistent").is_err());
        assert!(parse("pubsub --persistent").is_err());
    }
}

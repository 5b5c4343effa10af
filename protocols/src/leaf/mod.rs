//! Leaf node links: Junction attached to a NATS server (a cluster member, or another Junction)
//! as nats-server's leaf nodes attach, so one bus spans the machines.
//!
//! Each configured remote ([`Remote`]) is a task that dials the hub's leaf node port, sends
//! `CONNECT` with the leaf fields and the remote's credentials, and then keeps two things in
//! step for the account the remote is bound to:
//! - the hub's interest (`LS+`/`LS-`) becomes *proxy* subscriptions in the local account, marked
//!   [`Subscription::remote`]: a local publication that matches one is sent over the link once
//!   (`LMSG`/`HMSG`, naming the hub's queue groups it is for), and a queue group prefers its
//!   local members;
//! - the local interest (every subscription of the account, from any protocol, except the
//!   link's own proxies and JetStream's own API) goes to the hub as `LS+`/`LS-`, with queue
//!   weights.
//!
//! A message from the hub is published locally with the link as its origin, so it never goes
//! back over the same link, and only to the queue groups the hub named. `deny_imports` and
//! `deny_exports` filter both directions. The task moves to the next URL (including those the
//! hub announces in `leafnode_urls`) when a link drops, and backs off when every URL failed.
//! A loop (the link's own `$LDS` subject coming back) stops the link for 30 s, as nats-server
//! does.

pub mod proto;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use junction_core::subject;
use junction_core::sync::Lock;
use junction_core::{
    Account, Bus, ConnId, Delivery, FlushBatch, InterestWatch, MatchCache, Message, Sink,
    Subscription,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::outbound::{Outbound, Push};
use crate::CloseReason;
use proto::{Limits, Op, OutMsg};

/// One `leafnodes { remotes: [...] }` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// `nats://[user:pass@]host:port` (or `nats-leaf://`), tried in turn.
    pub urls: Vec<String>,
    /// The local account the link is bound to.
    pub account: String,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    /// An NKey seed (`SU...`) that signs the hub's nonce.
    pub nkey_seed: Option<String>,
    /// A credentials file (user JWT and seed).
    pub credentials: Option<PathBuf>,
    /// Subjects not taken from the hub.
    pub deny_imports: Vec<String>,
    /// Subjects not sent to the hub.
    pub deny_exports: Vec<String>,
}

/// What every link of this server says and obeys.
#[derive(Debug, Clone)]
pub struct Options {
    pub server_id: String,
    pub server_name: String,
    /// The nats-server version spoken.
    pub version: String,
    pub max_payload: usize,
    pub max_control_line: usize,
    pub max_pending: usize,
    pub ping_interval: Duration,
    pub ping_max: u32,
    /// Wait after every URL of a remote failed (doubled on each round, up to 30 s).
    pub reconnect: Duration,
    /// JetStream in the bound accounts, and its domain.
    pub jetstream: bool,
    pub jetstream_domain: Option<String>,
}

/// Longest wait between rounds of attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a link stays down after a loop was detected.
const LOOP_PAUSE: Duration = Duration::from_secs(30);
/// Dial and handshake timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The links of this server, for monitoring.
#[derive(Default)]
pub struct Leafs {
    links: Mutex<Vec<Arc<Link>>>,
}

/// One remote's link: its state now and its counters.
pub struct Link {
    pub remote: Remote,
    status: Mutex<Status>,
    in_msgs: AtomicU64,
    in_bytes: AtomicU64,
    out_msgs: AtomicU64,
    out_bytes: AtomicU64,
    /// Proxy subscriptions (the hub's interest) now.
    subs: AtomicU64,
    /// Times the link was (re)established.
    connects: AtomicU64,
}

#[derive(Default)]
struct Status {
    /// The URL connected to (without credentials), while connected.
    url: Option<String>,
    addr: Option<std::net::SocketAddr>,
    hub_id: String,
    hub_name: String,
    since: Option<SystemTime>,
    rtt: Option<Duration>,
    last_error: Option<String>,
}

impl Leafs {
    /// Every link as nats-server's `/leafz` shows one (connected links only), and the count.
    pub fn leafz(&self) -> (usize, Vec<Value>) {
        let links = self.links.locked();
        let mut out = Vec::new();
        for l in links.iter() {
            let s = l.status.locked();
            let Some(addr) = s.addr else { continue };
            out.push(json!({
                "name": s.hub_name,
                "server_id": s.hub_id,
                "is_spoke": true,
                "account": l.remote.account,
                "ip": addr.ip().to_string(),
                "port": addr.port(),
                "url": s.url,
                "rtt": s.rtt.map(format_rtt).unwrap_or_default(),
                "in_msgs": l.in_msgs.load(Ordering::Relaxed),
                "out_msgs": l.out_msgs.load(Ordering::Relaxed),
                "in_bytes": l.in_bytes.load(Ordering::Relaxed),
                "out_bytes": l.out_bytes.load(Ordering::Relaxed),
                "subscriptions": l.subs.load(Ordering::Relaxed),
                "connects": l.connects.load(Ordering::Relaxed),
                "connected_since": s.since.map(|t| {
                    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
                }),
            }));
        }
        (out.len(), out)
    }

    /// How many remotes are configured, and the last error of each one that is down.
    pub fn down(&self) -> Vec<(Vec<String>, Option<String>)> {
        self.links
            .locked()
            .iter()
            .filter_map(|l| {
                let s = l.status.locked();
                s.addr.is_none().then(|| {
                    (
                        l.remote.urls.iter().map(|u| redact(u)).collect(),
                        s.last_error.clone(),
                    )
                })
            })
            .collect()
    }

    /// Totals of all links: connected, messages and bytes in and out.
    pub fn totals(&self) -> [u64; 5] {
        let links = self.links.locked();
        let mut t = [0u64; 5];
        for l in links.iter() {
            t[0] += u64::from(l.status.locked().addr.is_some());
            t[1] += l.in_msgs.load(Ordering::Relaxed);
            t[2] += l.in_bytes.load(Ordering::Relaxed);
            t[3] += l.out_msgs.load(Ordering::Relaxed);
            t[4] += l.out_bytes.load(Ordering::Relaxed);
        }
        t
    }
}

fn format_rtt(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}[REDACTED]{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Starts one task per remote; they run until `shutdown`.
pub fn start(
    bus: Arc<Bus>,
    opts: Options,
    remotes: Vec<Remote>,
    shutdown: CancellationToken,
) -> (Arc<Leafs>, Vec<tokio::task::JoinHandle<()>>) {
    let leafs = Arc::new(Leafs::default());
    let opts = Arc::new(opts);
    let mut tasks = Vec::new();
    for remote in remotes {
        let link = Arc::new(Link {
            remote,
            status: Mutex::new(Status::default()),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            out_msgs: AtomicU64::new(0),
            out_bytes: AtomicU64::new(0),
            subs: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        });
        leafs.links.locked().push(link.clone());
        tasks.push(tokio::spawn(run(
            bus.clone(),
            opts.clone(),
            link,
            shutdown.clone(),
        )));
    }
    (leafs, tasks)
}

/// How a session ended.
enum Ended {
    /// The link was up and dropped: try the next URL at once.
    Dropped(String),
    /// It never came up.
    Failed(String),
    /// The hub sent back this link's own loop-detection subject.
    Loop,
    Shutdown,
}

async fn run(bus: Arc<Bus>, opts: Arc<Options>, link: Arc<Link>, shutdown: CancellationToken) {
    let mut urls: Vec<String> = link.remote.urls.clone();
    let mut next = 0usize;
    let mut failures_in_round = 0usize;
    let mut backoff = opts.reconnect;
    loop {
        if shutdown.is_cancelled() || urls.is_empty() {
            return;
        }
        let url = urls[next % urls.len()].clone();
        next += 1;
        let ended = session(&bus, &opts, &link, &url, &mut urls, &shutdown).await;
        {
            let mut s = link.status.locked();
            s.addr = None;
            s.url = None;
            s.since = None;
        }
        let pause = match ended {
            Ended::Shutdown => return,
            Ended::Loop => {
                tracing::error!(
                    account = %link.remote.account,
                    "Leafnode loop detected on {}: the link stays down for {}s",
                    redact(&url),
                    LOOP_PAUSE.as_secs()
                );
                link.status.locked().last_error = Some("Loop detected".into());
                LOOP_PAUSE
            }
            Ended::Dropped(why) => {
                tracing::warn!(
                    account = %link.remote.account,
                    "Leafnode connection to {} closed: {why}; trying the next URL",
                    redact(&url)
                );
                link.status.locked().last_error = Some(why);
                failures_in_round = 0;
                backoff = opts.reconnect;
                Duration::ZERO
            }
            Ended::Failed(why) => {
                tracing::error!(
                    account = %link.remote.account,
                    "Error trying to connect as leafnode to remote server {}: {why}",
                    redact(&url)
                );
                link.status.locked().last_error = Some(why);
                failures_in_round += 1;
                if failures_in_round >= urls.len() {
                    failures_in_round = 0;
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                } else {
                    Duration::ZERO
                }
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// `host:port`, user and password of a remote URL.
fn parse_url(url: &str) -> Result<(String, Option<(String, String)>), String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
    match scheme.to_ascii_lowercase().as_str() {
        "nats" | "nats-leaf" | "leafnode" => {}
        "tls" | "wss" | "ws" => {
            return Err(format!(
                "{scheme}:// remotes are not supported yet (plain nats:// only)"
            ))
        }
        other => return Err(format!("unknown URL scheme {other:?}")),
    }
    let rest = rest.trim_end_matches('/');
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let host = if host.contains(':') && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:7422")
    };
    let auth = auth.map(|a| match a.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => (a.to_string(), String::new()),
    });
    Ok((host, auth))
}

/// Reads the user JWT and the seed out of a credentials file.
fn read_creds(path: &PathBuf) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?;
    let mut jwt = None;
    let mut seed = None;
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("-----BEGIN") {
            let value = lines.by_ref().find(|l| !l.is_empty()).unwrap_or_default();
            if line.contains("JWT") && jwt.is_none() {
                jwt = Some(value.to_string());
            } else if line.contains("SEED") && seed.is_none() {
                seed = Some(value.to_string());
            }
        }
    }
    match (jwt, seed) {
        (Some(j), Some(s)) => Ok((j, s)),
        _ => Err(format!(
            "the credentials file {} has no user JWT and seed",
            path.display()
        )),
    }
}

/// The `CONNECT` a link sends, with the credentials for `nonce`.
fn connect_json(
    opts: &Options,
    remote: &Remote,
    url_auth: Option<(String, String)>,
    nonce: &str,
) -> Result<String, String> {
    let mut c = json!({
        "version": opts.version,
        "server_id": opts.server_id,
        "name": opts.server_name,
        "headers": true,
        "jetstream": opts.jetstream,
        "remote_account": remote.account,
        "protocol": 1,
    });
    if let Some(d) = &opts.jetstream_domain {
        c["domain"] = json!(d);
    }
    if !remote.deny_imports.is_empty() {
        c["deny_pub"] = json!(remote.deny_imports);
    }
    if let Some(path) = &remote.credentials {
        let (jwt, seed) = read_creds(path)?;
        let (_, sig) = junction_auth::nkey::sign_with_seed(&seed, nonce.as_bytes())
            .ok_or("the credentials file's seed is not an NKey seed")?;
        c["jwt"] = json!(jwt);
        c["sig"] = json!(sig);
    } else if let Some(seed) = &remote.nkey_seed {
        let (public, sig) = junction_auth::nkey::sign_with_seed(seed, nonce.as_bytes())
            .ok_or("the remote's nkey is not an NKey seed")?;
        c["nkey"] = json!(public);
        c["sig"] = json!(sig);
    } else if let Some((u, p)) = url_auth {
        if p.is_empty() {
            c["auth_token"] = json!(u);
        } else {
            c["user"] = json!(u);
            c["pass"] = json!(p);
        }
    } else if let Some(u) = &remote.user {
        c["user"] = json!(u);
        c["pass"] = json!(remote.pass.clone().unwrap_or_default());
    } else if let Some(t) = &remote.token {
        c["auth_token"] = json!(t);
    }
    Ok(c.to_string())
}

/// Whether a local subscription is interest the hub should learn.
fn exported_interest(sub: &Subscription, link_conn: ConnId) -> bool {
    if sub.conn == link_conn || sub.remote {
        return false;
    }
    // JetStream's own API and acknowledgement subjects stay on this server (the hub has its
    // own JetStream); a domain's `$JS.<domain>.API` is exported, so the hub's clients reach it.
    let s = &sub.subject[..];
    !(s.starts_with(b"$JS.API.") || s.starts_with(b"$JS.ACK.") || s.starts_with(b"$JS.FC."))
}

/// Keeps the hub told of the local interest of the link's account.
struct Interest {
    out: Arc<Outbound>,
    conn: ConnId,
    deny_imports: Vec<String>,
    state: Mutex<InterestState>,
}

#[derive(Default)]
struct InterestState {
    /// Subscriptions counted (by address), so a change reported twice counts once.
    counted: HashSet<usize>,
    /// Members per subject and queue.
    counts: HashMap<(Bytes, Option<Bytes>), u32>,
}

impl Interest {
    fn denied(&self, subject: &[u8]) -> bool {
        let s = String::from_utf8_lossy(subject);
        self.deny_imports.iter().any(|d| subject::covers(d, &s))
    }

    /// Counts `sub` in or out; returns the bytes to send (`LS+`/`LS-`).
    fn apply(&self, sub: &Arc<Subscription>, added: bool, out: &mut BytesMut) {
        if !exported_interest(sub, self.conn) || self.denied(&sub.subject) {
            return;
        }
        let mut st = self.state.locked();
        let id = Arc::as_ptr(sub) as usize;
        let key = (sub.subject.clone(), sub.queue.clone());
        if added {
            if !st.counted.insert(id) {
                return;
            }
            let n = st.counts.entry(key).or_default();
            *n += 1;
            // A plain subject is announced once; a queue group again with each new weight.
            if *n == 1 || sub.queue.is_some() {
                proto::encode_sub(out, &sub.subject, sub.queue.as_deref().map(|q| (q, *n)));
            }
        } else {
            if !st.counted.remove(&id) {
                return;
            }
            let Some(n) = st.counts.get_mut(&key) else {
                return;
            };
            *n -= 1;
            if *n == 0 {
                st.counts.remove(&key);
                proto::encode_unsub(out, &sub.subject, sub.queue.as_deref());
            } else if let Some(q) = sub.queue.as_deref() {
                proto::encode_sub(out, &sub.subject, Some((q, *n)));
            }
        }
    }
}

impl InterestWatch for Interest {
    fn changed(&self, sub: &Arc<Subscription>, added: bool) {
        let mut out = BytesMut::new();
        self.apply(sub, added, &mut out);
        if !out.is_empty() {
            self.out.push_own(&out);
            self.out.wake();
        }
    }
}

/// The sink of the hub's interest: a local publication that reaches it goes over the link.
struct LinkSink {
    out: Arc<Outbound>,
    link: Arc<Link>,
    deny_exports: Vec<String>,
    headers: bool,
}

impl Sink for LinkSink {
    fn deliver(&self, sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        if !self.deny_exports.is_empty() {
            let s = String::from_utf8_lossy(&msg.subject);
            if self.deny_exports.iter().any(|d| subject::covers(d, &s)) {
                return Delivery::Dropped;
            }
        }
        let m = OutMsg {
            subject: &msg.subject,
            reply: msg.reply.as_deref(),
            queues: &batch.link_queues,
            headers: if self.headers {
                msg.header_block().map(|h| &h[..])
            } else {
                None
            },
            payload: &msg.payload,
        };
        match self
            .out
            .push(m.encoded_len(), msg.size() as u64, |b| m.encode(b))
        {
            Push::Queued { was_empty, .. } => {
                self.link.out_msgs.fetch_add(1, Ordering::Relaxed);
                self.link
                    .out_bytes
                    .fetch_add(msg.size() as u64, Ordering::Relaxed);
                if was_empty {
                    batch.touch(sub.sink.clone());
                }
                Delivery::Queued
            }
            Push::SlowConsumer => {
                tracing::warn!(
                    account = %self.link.remote.account,
                    "leafnode link is a slow consumer: pending bytes over the limit, closing it"
                );
                Delivery::Dropped
            }
            Push::Closed => Delivery::Dropped,
        }
    }

    fn flush(&self) {
        self.out.wake();
    }
}

/// One connection to one URL, from the dial to its end.
async fn session(
    bus: &Arc<Bus>,
    opts: &Options,
    link: &Arc<Link>,
    url: &str,
    urls: &mut Vec<String>,
    shutdown: &CancellationToken,
) -> Ended {
    let (host, url_auth) = match parse_url(url) {
        Ok(x) => x,
        Err(e) => return Ended::Failed(e),
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&host)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Ended::Failed(e.to_string()),
        Err(_) => return Ended::Failed("connection timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    let addr = stream.peer_addr().ok();
    let (mut rd, mut wr) = stream.into_split();
    let limits = Limits {
        max_control_line: opts.max_control_line.max(4096),
        max_payload: opts.max_payload.max(1 << 20) + 64 * 1024,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);

    // The hub speaks first: INFO.
    let info = match tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            if let Some(op) = proto::parse(&mut buf, limits).map_err(|e| e.to_string())? {
                return Ok::<Op, String>(op);
            }
            if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed before INFO".into());
            }
        }
    })
    .await
    {
        Ok(Ok(Op::Info(j))) => j,
        Ok(Ok(other)) => return Ended::Failed(format!("expected INFO, got {other:?}")),
        Ok(Err(e)) => return Ended::Failed(e),
        Err(_) => return Ended::Failed("no INFO from the hub".into()),
    };
    let info: Value = serde_json::from_slice(&info).unwrap_or_default();
    if info["tls_required"].as_bool() == Some(true) {
        return Ended::Failed("the hub requires TLS, which remotes do not support yet".into());
    }
    learn_urls(&info, urls);
    let nonce = info["nonce"].as_str().unwrap_or_default().to_string();
    let connect = match connect_json(opts, &link.remote, url_auth, &nonce) {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e),
    };
    let loop_subject = format!("$LDS.{}", loop_id());
    let hello = format!("CONNECT {connect}\r\nPING\r\n");
    if let Err(e) = wr.write_all(hello.as_bytes()).await {
        return Ended::Failed(e.to_string());
    }
    // The PONG to that PING says the hub took the CONNECT (a refusal is -ERR, then a close).
    let mut early = Vec::new();
    let ping_sent = Instant::now();
    let accepted = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            while let Some(op) = proto::parse(&mut buf, limits).map_err(|e| e.to_string())? {
                match op {
                    Op::Pong => return Ok::<(), String>(()),
                    Op::Err(e) => return Err(format!("Leafnode Error '{e}'")),
                    other => early.push(other),
                }
            }
            if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("the hub closed the connection".into());
            }
        }
    })
    .await;
    match accepted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Ended::Failed(e),
        Err(_) => return Ended::Failed("the hub did not answer CONNECT".into()),
    }
    let account = bus.account_or_create(&link.remote.account);
    let conn = bus.next_conn_id();
    let out = Arc::new(Outbound::new(opts.max_pending.max(64 * 1024 * 1024)));
    let interest = Arc::new(Interest {
        out: out.clone(),
        conn,
        deny_imports: link.remote.deny_imports.clone(),
        state: Mutex::new(InterestState::default()),
    });
    let sink: Arc<dyn Sink> = Arc::new(LinkSink {
        out: out.clone(),
        link: link.clone(),
        deny_exports: link.remote.deny_exports.clone(),
        headers: info["headers"].as_bool().unwrap_or(true),
    });
    let watch: Arc<dyn InterestWatch> = interest.clone();
    {
        let mut first = BytesMut::new();
        proto::encode_sub(&mut first, loop_subject.as_bytes(), None);
        for sub in account.watch(watch.clone()) {
            interest.apply(&sub, true, &mut first);
        }
        out.push_own(&first);
    }
    {
        let mut s = link.status.locked();
        s.url = Some(redact(url));
        s.addr = addr;
        s.hub_id = info["server_id"].as_str().unwrap_or_default().to_string();
        s.hub_name = info["server_name"]
            .as_str()
            .or(info["name"].as_str())
            .unwrap_or_default()
            .to_string();
        s.since = Some(SystemTime::now());
        s.rtt = Some(ping_sent.elapsed());
        s.last_error = None;
    }
    link.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        account = %link.remote.account,
        hub = %link.status.locked().hub_name,
        "Leafnode connection created for account: {} to {}",
        link.remote.account,
        redact(url)
    );

    let mut conn_state = Conn {
        link,
        account: &account,
        conn,
        sink: &sink,
        out: &out,
        proxies: HashMap::new(),
        loop_subject: loop_subject.as_bytes(),
        cache: MatchCache::new(true),
        pings_out: 0,
        ping_sent: None,
    };
    let mut ended = None;
    for op in early {
        if let Err(e) = conn_state.handle(op, urls) {
            ended = Some(e);
            break;
        }
    }
    let ended = match ended {
        Some(e) => e,
        None => {
            let writer = write_loop(out.clone(), wr);
            tokio::pin!(writer);
            let mut ping = tokio::time::interval(opts.ping_interval);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break Ended::Shutdown,
                    r = &mut writer => break Ended::Dropped(r),
                    _ = ping.tick() => {
                        if conn_state.pings_out >= opts.ping_max.max(1) {
                            break Ended::Dropped(CloseReason::StaleConnection.as_str().into());
                        }
                        conn_state.pings_out += 1;
                        conn_state.ping_sent = Some(Instant::now());
                        out.push_own(b"PING\r\n");
                        out.wake();
                    }
                    n = rd.read_buf(&mut buf) => {
                        match n {
                            Ok(0) => break Ended::Dropped("the hub closed the connection".into()),
                            Err(e) => break Ended::Dropped(e.to_string()),
                            Ok(_) => {}
                        }
                        if let Some(e) = conn_state.drain(&mut buf, limits, urls) {
                            break e;
                        }
                    }
                }
            }
        }
    };
    // Tear down: the hub's interest and the watch go with the link.
    account.unwatch(&watch);
    for (_, sub) in conn_state.proxies.drain() {
        sub.close();
        account.unsubscribe(&sub);
    }
    link.subs.store(0, Ordering::Relaxed);
    out.close(CloseReason::ClientClosed);
    ended
}

/// 22 random letters and digits: the link's loop-detection subject.
fn loop_id() -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 22];
    getrandom::getrandom(&mut raw).expect("the system's random source");
    raw.iter()
        .map(|b| ABC[*b as usize % ABC.len()] as char)
        .collect()
}

/// Adds the leaf node URLs the hub announces (its cluster's other members) to the rotation.
fn learn_urls(info: &Value, urls: &mut Vec<String>) {
    if let Some(list) = info["leafnode_urls"].as_array() {
        for u in list.iter().filter_map(Value::as_str) {
            let u = if u.contains("://") {
                u.to_string()
            } else {
                format!("nats-leaf://{u}")
            };
            let known = urls
                .iter()
                .any(|x| parse_url(x).map(|(h, _)| h).ok() == parse_url(&u).map(|(h, _)| h).ok());
            if !known {
                urls.push(u);
            }
        }
    }
}

/// Writes what the link queues until it closes or the socket fails.
async fn write_loop(out: Arc<Outbound>, mut wr: tokio::net::tcp::OwnedWriteHalf) -> String {
    loop {
        std::future::poll_fn(|cx| {
            if out.register(cx.waker(), true) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        if let Some(reason) = out.closed() {
            return reason.as_str().to_string();
        }
        let chunk = out.take();
        if chunk.is_empty() {
            continue;
        }
        if let Err(e) = wr.write_all(&chunk).await {
            return e.to_string();
        }
        out.written(chunk);
    }
}

/// A live link's state on its task.
struct Conn<'a> {
    link: &'a Arc<Link>,
    account: &'a Arc<Account>,
    conn: ConnId,
    sink: &'a Arc<dyn Sink>,
    out: &'a Arc<Outbound>,
    /// The hub's interest: one proxy subscription per subject and queue.
    proxies: HashMap<(Bytes, Option<Bytes>), Arc<Subscription>>,
    loop_subject: &'a [u8],
    cache: MatchCache,
    pings_out: u32,
    ping_sent: Option<Instant>,
}

impl Conn<'_> {
    /// Handles every complete operation in `buf`.
    fn drain(
        &mut self,
        buf: &mut BytesMut,
        limits: Limits,
        urls: &mut Vec<String>,
    ) -> Option<Ended> {
        let mut batch = FlushBatch::default();
        let mut ended = None;
        loop {
            match proto::parse(buf, limits) {
                Ok(Some(Op::Msg {
                    subject,
                    reply,
                    queues,
                    headers,
                    payload,
                })) => self.inbound(subject, reply, queues, headers, payload, &mut batch),
                Ok(Some(op)) => {
                    if let Err(e) = self.handle(op, urls) {
                        ended = Some(e);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.out.push_own(format!("-ERR '{e}'\r\n").as_bytes());
                    ended = Some(Ended::Dropped(format!("protocol error from the hub: {e}")));
                    break;
                }
            }
        }
        batch.wake_all();
        self.out.wake();
        ended
    }

    fn inbound(
        &mut self,
        subject: Bytes,
        reply: Option<Bytes>,
        queues: Vec<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
        batch: &mut FlushBatch,
    ) {
        let size = payload.len() + headers.as_ref().map_or(0, Bytes::len);
        self.link.in_msgs.fetch_add(1, Ordering::Relaxed);
        self.link.in_bytes.fetch_add(size as u64, Ordering::Relaxed);
        if !subject::is_valid_literal_subject(&subject) {
            return;
        }
        if !self.link.remote.deny_imports.is_empty() {
            let s = String::from_utf8_lossy(&subject);
            if self
                .link
                .remote
                .deny_imports
                .iter()
                .any(|d| subject::covers(d, &s))
            {
                return;
            }
        }
        let mut msg = Message::new(subject, reply, payload, self.conn);
        msg.headers = headers;
        batch.routed_queues = Some(queues);
        self.account.publish(&mut self.cache, &msg, batch);
        batch.routed_queues = None;
    }

    fn handle(&mut self, op: Op, urls: &mut Vec<String>) -> Result<(), Ended> {
        match op {
            Op::Ping => self.out.push_own(b"PONG\r\n"),
            Op::Pong => {
                self.pings_out = 0;
                if let Some(t) = self.ping_sent.take() {
                    self.link.status.locked().rtt = Some(t.elapsed());
                }
            }
            Op::Ok => {}
            Op::Info(j) => {
                let info: Value = serde_json::from_slice(&j).unwrap_or_default();
                learn_urls(&info, urls);
            }
            Op::Err(e) => {
                let lower = e.to_ascii_lowercase();
                if lower.contains("loop detected") {
                    return Err(Ended::Loop);
                }
                tracing::warn!(account = %self.link.remote.account, "Leafnode Error '{e}'");
                if lower.contains("authorization") || lower.contains("permissions violation") {
                    // Permission errors keep the link; an authorization failure ends it.
                    if lower.contains("authorization violation") {
                        return Err(Ended::Dropped(format!("Leafnode Error '{e}'")));
                    }
                }
            }
            Op::Connect(_) => {
                return Err(Ended::Dropped("the hub sent CONNECT".into()));
            }
            Op::Sub { subject, queue } => {
                if subject[..] == *self.loop_subject {
                    self.out.push_own(b"-ERR 'Loop detected'\r\n");
                    return Err(Ended::Loop);
                }
                if !self.imported(&subject) {
                    return Ok(());
                }
                let key = (subject.clone(), queue.map(|(q, _)| q));
                if self.proxies.contains_key(&key) {
                    return Ok(()); // a queue group's new weight
                }
                let sub = Arc::new(
                    Subscription::new(
                        self.conn,
                        subject,
                        key.1.clone(),
                        Bytes::new(),
                        true,
                        self.sink.clone(),
                    )
                    .into_remote(),
                );
                if self.account.subscribe(sub.clone()).is_ok() {
                    self.proxies.insert(key, sub);
                    self.link
                        .subs
                        .store(self.proxies.len() as u64, Ordering::Relaxed);
                }
            }
            Op::Unsub { subject, queue } => {
                if let Some(sub) = self.proxies.remove(&(subject, queue)) {
                    sub.close();
                    self.account.unsubscribe(&sub);
                    self.link
                        .subs
                        .store(self.proxies.len() as u64, Ordering::Relaxed);
                }
            }
            Op::Msg { .. } => unreachable!("messages are handled by drain"),
        }
        Ok(())
    }

    /// Whether the hub's interest in `subject` becomes a proxy here: not the hub's own
    /// JetStream API (this server answers its clients' `$JS.API` itself), and not what the
    /// remote does not export.
    fn imported(&self, subject: &[u8]) -> bool {
        if !subject::is_valid_subject(subject)
            || subject.starts_with(b"$JS.API.")
            || subject == b"$JS.API.>"
        {
            return false;
        }
        let s = String::from_utf8_lossy(subject);
        !self
            .link
            .remote
            .deny_exports
            .iter()
            .any(|d| subject::covers(d, &s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_credentials() {
        assert_eq!(
            parse_url("nats://a:b@127.0.0.1:7422").unwrap(),
            ("127.0.0.1:7422".into(), Some(("a".into(), "b".into())))
        );
        assert_eq!(parse_url("nats-leaf://host").unwrap().0, "host:7422");
        assert_eq!(parse_url("127.0.0.1:9").unwrap().0, "127.0.0.1:9");
        assert!(parse_url("tls://h:1").is_err());
        assert!(parse_url("http://h:1").is_err());
        assert_eq!(redact("nats://u:secret@h:1"), "nats://[REDACTED]@h:1");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
        let mut urls = vec!["nats://127.0.0.1:7422".to_string()];
        learn_urls(
            &json!({"leafnode_urls": ["127.0.0.1:7422", "127.0.0.1:7423"]}),
            &mut urls,
        );
        assert_eq!(
            urls,
            vec!["nats://127.0.0.1:7422", "nats-leaf://127.0.0.1:7423"]
        );
    }
}

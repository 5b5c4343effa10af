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

mod accept;
mod link;
pub mod proto;

pub use accept::{listen, Accept, LeafUser};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use junction_core::sync::Lock;
use junction_core::Bus;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use proto::{Limits, Op};

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
    /// `tls { ca_file, cert_file, key_file }`: TLS to the hub (also with `tls://` URLs, or when
    /// the hub requires it).
    pub tls: Option<RemoteTls>,
}

/// A remote's `tls` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteTls {
    /// The authority the hub's certificate must be signed by.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key, for hubs that verify them.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
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
    /// The far side dialled this server (this server is its hub).
    accepted: bool,
    /// What an accepted leaf node's user may publish and subscribe to (`None`: everything in
    /// its account).
    perms: Option<Arc<junction_auth::Permissions>>,
}

impl Link {
    fn new(remote: Remote, accepted: bool) -> Link {
        Self::with_permissions(remote, accepted, None)
    }

    fn with_permissions(
        remote: Remote,
        accepted: bool,
        perms: Option<Arc<junction_auth::Permissions>>,
    ) -> Link {
        Link {
            remote,
            status: Mutex::new(Status::default()),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            out_msgs: AtomicU64::new(0),
            out_bytes: AtomicU64::new(0),
            subs: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            accepted,
            perms,
        }
    }
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
                "is_spoke": !l.accepted,
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
    start_with(
        Arc::new(Leafs::default()),
        bus,
        Arc::new(opts),
        remotes,
        shutdown,
    )
}

/// [`start`] into an existing set of links (the accepting listener shares it).
pub fn start_with(
    leafs: Arc<Leafs>,
    bus: Arc<Bus>,
    opts: Arc<Options>,
    remotes: Vec<Remote>,
    shutdown: CancellationToken,
) -> (Arc<Leafs>, Vec<tokio::task::JoinHandle<()>>) {
    let mut tasks = Vec::new();
    for remote in remotes {
        let link = Arc::new(Link::new(remote, false));
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

/// The reader and writer of a link, over TCP or TLS.
pub(crate) type ReadHalf = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
pub(crate) type WriteHalf = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// `host:port`, user and password of a remote URL.
fn parse_url(url: &str) -> Result<Target, String> {
    Ok(parse_url_tls(url)?.0)
}

/// A remote URL's `host:port` and credentials.
type Target = (String, Option<(String, String)>);

/// [`parse_url`], and whether the scheme asks for TLS (`tls://`).
fn parse_url_tls(url: &str) -> Result<(Target, bool), String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "nats" | "nats-leaf" | "leafnode" => false,
        "tls" => true,
        "wss" | "ws" => {
            return Err(format!(
                "{scheme}:// remotes are not supported yet (nats:// and tls:// only)"
            ))
        }
        other => return Err(format!("unknown URL scheme {other:?}")),
    };
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
    Ok(((host, auth), tls))
}

/// Upgrades a dialled connection to TLS (after the hub's plain INFO, as nats-server does).
async fn upgrade(
    remote: &Remote,
    host: &str,
    stream: TcpStream,
) -> Result<(ReadHalf, WriteHalf), String> {
    let tls = remote
        .tls
        .as_ref()
        .and_then(|t| t.ca_file.as_ref().map(|ca| (t, ca)))
        .ok_or("the hub wants TLS: the remote needs tls { ca_file } (the authority that signed the hub's certificate)")?;
    let (t, ca) = tls;
    let client = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => None,
    };
    let connector = crate::tls::connector(ca, client).map_err(|e| e.to_string())?;
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let server = rustls_pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name}: {e}"))?;
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server, stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (r, w) = tokio::io::split(tls);
    Ok((Box::new(r), Box::new(w)))
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

/// One connection to one URL, from the dial to its end.
async fn session(
    bus: &Arc<Bus>,
    opts: &Options,
    link: &Arc<Link>,
    url: &str,
    urls: &mut Vec<String>,
    shutdown: &CancellationToken,
) -> Ended {
    let ((host, url_auth), tls_scheme) = match parse_url_tls(url) {
        Ok(x) => x,
        Err(e) => return Ended::Failed(e),
    };
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&host)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Ended::Failed(e.to_string()),
        Err(_) => return Ended::Failed("connection timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    let addr = stream.peer_addr().ok();
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
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
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
    let (mut rd, mut wr): (ReadHalf, WriteHalf) = if tls_scheme
        || link.remote.tls.is_some()
        || info["tls_required"].as_bool() == Some(true)
    {
        match upgrade(&link.remote, &host, stream).await {
            Ok(halves) => halves,
            Err(e) => return Ended::Failed(e),
        }
    } else {
        let (r, w) = stream.into_split();
        (Box::new(r), Box::new(w))
    };
    learn_urls(&info, urls);
    let nonce = info["nonce"].as_str().unwrap_or_default().to_string();
    let connect = match connect_json(opts, &link.remote, url_auth, &nonce) {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e),
    };
    let loop_subject = format!("$LDS.{}", loop_id());
    let hello = format!("CONNECT {connect}\r\nPING\r\n");
    if let Err(e) = async {
        wr.write_all(hello.as_bytes()).await?;
        wr.flush().await
    }
    .await
    {
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
    let hs = link::Handshaken {
        rd,
        wr,
        buf,
        limits,
        early,
        info,
        addr,
        url: url.to_string(),
        loop_subject: Some(loop_subject),
        rtt: Some(ping_sent.elapsed()),
    };
    link::serve(bus, opts, link, hs, urls, shutdown).await
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
        assert_eq!(
            parse_url_tls("tls://h:1").unwrap(),
            (("h:1".into(), None), true)
        );
        assert!(parse_url("wss://h:1").is_err());
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

//! The system account as nats-server runs it, so `nats server ...` tooling works: requests on
//! `$SYS.REQ.SERVER.PING[.<KIND>]` and `$SYS.REQ.SERVER.<id>.<KIND>` (STATSZ, IDZ, VARZ, CONNZ,
//! SUBSZ, ROUTEZ, GATEWAYZ, LEAFZ, ACCOUNTZ, HEALTHZ, JSZ) answered with the monitoring
//! endpoints' JSON, `$SYS.SERVER.<id>.STATSZ` published every 10 s, and `$SYS.ACCOUNT.<acc>.CONNECT` /
//! `.DISCONNECT` advisories. Only users of the system account reach these subjects.
//!
//! Requests are taken off the publisher's path through a bounded queue (a full queue drops the
//! request, as a busy nats-server would time it out) and answered by one task.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use junction_core::{Account, ConnSnapshot, Delivery, FlushBatch, Message, Sink, Subscription};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::endpoints::{self, go_duration};
use crate::{rfc3339, varz_value, Monitor};

/// Requests waiting to be answered; more are dropped.
const QUEUE: usize = 256;
/// How often STATSZ is published and connections are compared for advisories.
const STATSZ_EVERY: Duration = Duration::from_secs(10);
const EVENTS_EVERY: Duration = Duration::from_millis(500);
/// The subscriptions the system account's request answers take.
const REQUEST_SUBSCRIPTIONS: usize = 3;

struct Request {
    subject: Bytes,
    reply: Bytes,
    payload: Bytes,
}

/// The sink of the request subscriptions: hands requests to the answering task.
struct Requests(mpsc::Sender<Request>);

impl Sink for Requests {
    fn deliver(&self, _sub: &Subscription, msg: &Message, _batch: &mut FlushBatch) -> Delivery {
        let Some(reply) = msg.reply.clone() else {
            return Delivery::Dropped;
        };
        let request = Request {
            subject: msg.subject.clone(),
            reply,
            payload: Bytes::copy_from_slice(&msg.payload),
        };
        match self.0.try_send(request) {
            Ok(()) => Delivery::Queued,
            Err(_) => Delivery::Dropped,
        }
    }

    fn flush(&self) {}
}

/// Starts the system account's services; `None` without a system account.
pub(crate) fn start(
    monitor: Arc<Monitor>,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let name = monitor.info.system_account.clone();
    if name.is_empty() {
        return None;
    }
    let account = monitor.bus.account_or_create(&name);
    let (tx, rx) = mpsc::channel(QUEUE);
    let sink: Arc<dyn Sink> = Arc::new(Requests(tx));
    let id = monitor.info.server_id.clone();
    let conn = monitor.bus.next_conn_id();
    let subjects = [
        "$SYS.REQ.SERVER.PING".to_string(),
        "$SYS.REQ.SERVER.PING.*".to_string(),
        format!("$SYS.REQ.SERVER.{id}.*"),
    ];
    let subs = account.subscribe_service(conn, subjects.map(Bytes::from), &sink);
    Some(tokio::spawn(run(
        monitor, account, conn, rx, subs, shutdown,
    )))
}

async fn run(
    m: Arc<Monitor>,
    account: Arc<Account>,
    origin: junction_core::ConnId,
    mut rx: mpsc::Receiver<Request>,
    subs: Vec<Arc<Subscription>>,
    shutdown: CancellationToken,
) {
    let seq = AtomicU64::new(0);
    let mut statsz = tokio::time::interval(STATSZ_EVERY);
    let mut events = tokio::time::interval(EVENTS_EVERY);
    let mut known: HashSet<u64> = HashSet::new();
    let mut closed_seen: HashSet<u64> = m
        .bus
        .conns()
        .closed_snapshots()
        .iter()
        .map(|c| c.cid.0)
        .collect();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(req) = rx.recv() => {
                let answer = match jsz_request(&m, &req) {
                    // JetStream answers from its own task.
                    Some((doc, only)) => {
                        let mut d = match doc {
                            Some(f) => f.await,
                            None => json!({ "disabled": true }),
                        };
                        if let (Some(acc), Some(Value::Array(list))) =
                            (only, d.get_mut("account_details"))
                        {
                            list.retain(|a| a["name"] == json!(acc));
                        }
                        d["server_id"] = json!(m.info.server_id);
                        d["now"] = json!(rfc3339(SystemTime::now()));
                        Some(json!({ "server": server_info(&m, &seq), "data": d }))
                    }
                    None => answer(&m, &seq, &req),
                };
                if let Some(answer) = answer {
                    publish(&account, origin, req.reply, answer);
                }
            }
            _ = statsz.tick() => {
                let subject = format!("$SYS.SERVER.{}.STATSZ", m.info.server_id);
                if listened(&account, &subject) {
                    let body = json!({ "server": server_info(&m, &seq), "statsz": statsz_value(&m) });
                    publish(&account, origin, Bytes::from(subject), body);
                }
            }
            _ = events.tick() => {
                advisories(&m, &account, origin, &seq, &mut known, &mut closed_seen)
            }
        }
    }
    for sub in subs {
        account.unsubscribe(&sub);
    }
}

fn listened(account: &Account, subject: &str) -> bool {
    !account
        .sublist()
        .match_subject(subject.as_bytes())
        .is_empty()
}

/// Publishes an advisory when someone listens to its subject.
fn send(account: &Account, origin: junction_core::ConnId, subject: String, body: Value) {
    if listened(account, &subject) {
        publish(account, origin, Bytes::from(subject), body);
    }
}

fn publish(account: &Account, origin: junction_core::ConnId, subject: Bytes, body: Value) {
    let payload = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    account.publish_one(&Message::new(subject, None, payload, origin));
}

/// The `server` part of every answer and event.
fn server_info(m: &Monitor, seq: &AtomicU64) -> Value {
    json!({
        "name": m.info.server_name,
        "host": m.info.host,
        "id": m.info.server_id,
        "ver": m.info.version,
        "jetstream": m.info.extra_metrics.0.as_ref().and_then(|e| e.jsz(false)).is_some(),
        "flags": 0,
        "seq": seq.fetch_add(1, Ordering::Relaxed) + 1,
        "time": rfc3339(SystemTime::now()),
    })
}

fn statsz_value(m: &Monitor) -> Value {
    let v = varz_value(m);
    let accounts: HashSet<String> = m
        .bus
        .conns()
        .open_snapshots()
        .into_iter()
        .map(|c| c.account)
        .filter(|a| !a.is_empty())
        .collect();
    json!({
        "start": v["start"],
        "mem": v["mem"],
        "cores": v["cores"],
        "cpu": v["cpu"],
        "connections": v["connections"],
        "total_connections": v["total_connections"],
        "active_accounts": accounts.len(),
        "subscriptions": v["subscriptions"],
        "sent": { "msgs": v["out_msgs"], "bytes": v["out_bytes"] },
        "received": { "msgs": v["in_msgs"], "bytes": v["in_bytes"] },
        "slow_consumers": v["slow_consumers"],
    })
}

/// The request's options (JSON, as `nats` sends them) as the endpoints' query parameters.
fn options_query(payload: &[u8]) -> Option<String> {
    let Ok(Value::Object(opts)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    let mut q = Vec::new();
    for (k, v) in opts {
        let key = match k.as_str() {
            "subscriptions" => "subs",
            "subscriptions_detail" if v == json!(true) => {
                q.push("subs=detail".to_string());
                continue;
            }
            "username" => "auth",
            "account" => "acc",
            "user" | "acc" | "sort" | "state" | "offset" | "limit" | "cid" | "auth" | "test"
            | "mqtt_client" | "accounts" | "unused" => k.as_str(),
            _ => continue,
        };
        let value = match &v {
            Value::Bool(true) => "1".to_string(),
            Value::Bool(false) => continue,
            Value::String(s) if s.is_empty() => continue,
            Value::String(s) => s.clone(),
            Value::Number(n) if n.as_u64() == Some(0) && key != "cid" => continue,
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        q.push(format!("{key}={value}"));
    }
    Some(q.join("&"))
}

type JszFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Value> + Send>>;

/// A `JSZ` request: JetStream's document to come (`None`: JetStream is off), with the detail
/// the options ask for (`accounts`, `streams`, `consumer`), and the one account they name
/// (`account`), if any.
fn jsz_request(m: &Monitor, req: &Request) -> Option<(Option<JszFuture>, Option<String>)> {
    let subject = std::str::from_utf8(&req.subject).ok()?;
    let rest = subject.strip_prefix("$SYS.REQ.SERVER.")?;
    if rest.rsplit('.').next()? != "JSZ" {
        return None;
    }
    let opts = match serde_json::from_slice::<Value>(&req.payload) {
        Ok(Value::Object(o)) => o,
        _ => Default::default(),
    };
    let only = opts
        .get("account")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    let detail = only.is_some()
        || ["accounts", "streams", "consumer", "consumers"]
            .iter()
            .any(|k| opts.get(*k) == Some(&json!(true)));
    let doc = m.info.extra_metrics.0.as_ref().and_then(|e| e.jsz(detail));
    Some((doc, only))
}

fn answer(m: &Monitor, seq: &AtomicU64, req: &Request) -> Option<Value> {
    let subject = std::str::from_utf8(&req.subject).ok()?;
    let kind = match subject.strip_prefix("$SYS.REQ.SERVER.")? {
        "PING" => "STATSZ",
        rest => rest.rsplit('.').next()?,
    };
    let query = options_query(&req.payload);
    let data: Result<Value, String> = match kind {
        "STATSZ" => {
            return Some(json!({ "server": server_info(m, seq), "statsz": statsz_value(m) }));
        }
        "IDZ" => {
            Ok(json!({ "name": m.info.server_name, "host": m.info.host, "id": m.info.server_id }))
        }
        "VARZ" => Ok(varz_value(m)),
        "CONNZ" => endpoints::connz_value(m, &query),
        "SUBSZ" => endpoints::subsz_value(m, &query),
        "ACCOUNTZ" => endpoints::accountz_value(m, &query),
        "ROUTEZ" | "GATEWAYZ" | "LEAFZ" => Ok(endpoints::cluster_value(m, kind)),
        "HEALTHZ" => Ok(json!({ "status": "ok" })),
        _ => Err(format!("unknown request {kind}")),
    };
    Some(match data {
        Ok(d) => json!({ "server": server_info(m, seq), "data": d }),
        Err(e) => {
            json!({ "server": server_info(m, seq), "error": { "code": 400, "description": e } })
        }
    })
}

fn client_info(c: &ConnSnapshot, server: &str) -> Value {
    let mut v = json!({
        "start": rfc3339(c.start),
        "host": c.ip,
        "id": c.cid.0,
        "acc": c.account,
        "name": c.name,
        "lang": c.lang,
        "ver": c.version,
        "server": server,
        "kind": "Client",
        "client_type": c.kind,
    });
    if !c.user.is_empty() {
        v["user"] = json!(c.user);
    }
    if let Some(rtt) = c.rtt {
        v["rtt"] = json!(rtt.as_nanos() as u64);
        v["rtt_text"] = json!(go_duration(rtt));
    }
    if let Some(stop) = c.stop {
        v["stop"] = json!(rfc3339(stop));
    }
    v
}

fn event_id(m: &Monitor, seq: &AtomicU64) -> String {
    format!(
        "{}{}",
        &m.info.server_id[..8.min(m.info.server_id.len())],
        seq.load(Ordering::Relaxed)
    )
}

/// The CONNECT advisory of one connection.
fn connected(
    m: &Monitor,
    account: &Account,
    origin: junction_core::ConnId,
    seq: &AtomicU64,
    c: &ConnSnapshot,
) {
    let body = json!({
        "type": "io.nats.server.advisory.v1.client_connect",
        "id": event_id(m, seq),
        "timestamp": rfc3339(SystemTime::now()),
        "server": server_info(m, seq),
        "client": client_info(c, &m.info.server_name),
    });
    send(
        account,
        origin,
        format!("$SYS.ACCOUNT.{}.CONNECT", c.account),
        body,
    );
}

/// CONNECT and DISCONNECT advisories for connections that appeared or closed since the last
/// look, when someone listens.
fn advisories(
    m: &Monitor,
    account: &Account,
    origin: junction_core::ConnId,
    seq: &AtomicU64,
    known: &mut HashSet<u64>,
    closed_seen: &mut HashSet<u64>,
) {
    // Nobody but the request subscriptions themselves in the system account: nothing to send.
    if account.sublist().count() <= REQUEST_SUBSCRIPTIONS {
        known.clear();
        closed_seen.extend(m.bus.conns().closed_snapshots().iter().map(|c| c.cid.0));
        return;
    }
    let server = m.info.server_name.clone();
    let open = m.bus.conns().open_snapshots();
    let mut now_open = HashSet::new();
    for c in &open {
        if c.account.is_empty() {
            continue; // not authenticated yet
        }
        now_open.insert(c.cid.0);
        if known.insert(c.cid.0) {
            connected(m, account, origin, seq, c);
        }
    }
    let closed = m.bus.conns().closed_snapshots();
    for c in &closed {
        if !closed_seen.insert(c.cid.0) || c.account.is_empty() {
            continue;
        }
        if !known.remove(&c.cid.0) {
            // Opened and closed between two looks: its CONNECT comes first.
            connected(m, account, origin, seq, c);
        }
        let body = json!({
            "type": "io.nats.server.advisory.v1.client_disconnect",
            "id": event_id(m, seq),
            "timestamp": rfc3339(SystemTime::now()),
            "server": server_info(m, seq),
            "client": client_info(c, &server),
            "sent": { "msgs": c.out_msgs, "bytes": c.out_bytes },
            "received": { "msgs": c.in_msgs, "bytes": c.in_bytes },
            "reason": c.reason.unwrap_or_default(),
        });
        send(
            account,
            origin,
            format!("$SYS.ACCOUNT.{}.DISCONNECT", c.account),
            body,
        );
    }
    known.retain(|cid| now_open.contains(cid));
    let still: HashSet<u64> = closed.iter().map(|c| c.cid.0).collect();
    closed_seen.retain(|cid| still.contains(cid));
}

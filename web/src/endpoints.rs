//! The monitoring endpoints beyond `/varz`, in nats-server's JSON: `/connz` with its query
//! parameters, `/subsz`, `/accountz`, `/accstatz`, and the cluster endpoints (`/routez`,
//! `/gatewayz`, `/leafz`), which a single server without routes, gateways or leaf nodes answers
//! well-formed and empty.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use junction_core::{ConnSnapshot, Subscription};
use serde_json::{json, Value};

use crate::{format_uptime, param, rfc3339, Monitor};
pub(crate) use junction_core::time::go_duration;

/// Every subscription of every account, by connection.
fn subscriptions_by_conn(m: &Monitor) -> HashMap<u64, Vec<(String, Arc<Subscription>)>> {
    let mut by: HashMap<u64, Vec<(String, Arc<Subscription>)>> = HashMap::new();
    for acc in m.bus.accounts() {
        for sub in acc.sublist().all() {
            by.entry(sub.conn.0)
                .or_default()
                .push((acc.name().to_string(), sub));
        }
    }
    by
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sub_detail(account: &str, s: &Subscription) -> Value {
    let mut v = json!({
        "account": account,
        "subject": text(&s.subject),
        "sid": text(&s.sid),
        "msgs": s.delivered(),
        "cid": s.conn.0,
    });
    if let Some(q) = &s.queue {
        v["qgroup"] = json!(text(q));
    }
    v
}

fn respond(result: Result<Value, String>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => bad_request(e),
    }
}

fn bad_request(error: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response()
}

/// `/connz`: `state`, `sort`, `subs` (`1` or `detail`), `auth`, `cid`, `user`, `acc`,
/// `mqtt_client`, `offset`, `limit`, as nats-server takes them.
pub(crate) async fn connz(State(m): State<Arc<Monitor>>, RawQuery(query): RawQuery) -> Response {
    respond(connz_value(&m, &query))
}

pub(crate) fn connz_value(m: &Monitor, query: &Option<String>) -> Result<Value, String> {
    let query = query.clone();
    let registry = m.bus.conns();
    let state = param(&query, "state").unwrap_or("open");
    let mut conns: Vec<ConnSnapshot> = match state {
        "open" => registry.open_snapshots(),
        "closed" => registry.closed_snapshots(),
        "all" | "any" => {
            let mut all = registry.open_snapshots();
            all.extend(registry.closed_snapshots());
            all
        }
        other => return Err(format!("invalid connection state {other:?}")),
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        match param(&query, key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid {key} {v:?}")),
        }
    };
    let (offset, limit, cid) = match (number("offset"), number("limit"), number("cid")) {
        (Ok(o), Ok(l), Ok(c)) => (o.unwrap_or(0) as usize, l.unwrap_or(1024) as usize, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(e),
    };
    let subs = param(&query, "subs").unwrap_or("");
    let (subs_list, subs_detail) = match subs {
        "detail" => (false, true),
        "1" | "true" => (true, false),
        _ => (false, false),
    };
    let auth = matches!(param(&query, "auth"), Some("1" | "true"));
    if let Some(c) = cid {
        conns.retain(|s| s.cid.0 == c);
    }
    if let Some(u) = param(&query, "user").filter(|u| !u.is_empty()) {
        conns.retain(|s| s.user == u);
    }
    if let Some(a) = param(&query, "acc").filter(|a| !a.is_empty()) {
        conns.retain(|s| s.account == a);
    }
    if let Some(c) = param(&query, "mqtt_client").filter(|c| !c.is_empty()) {
        conns.retain(|s| s.mqtt_client == c);
    }
    let now = SystemTime::now();
    let sort = param(&query, "sort").unwrap_or("cid");
    let since = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    match sort {
        "cid" | "" => conns.sort_by_key(|c| c.cid.0),
        "start" => conns.sort_by_key(|c| c.start),
        "subs" => conns.sort_by_key(|c| std::cmp::Reverse(c.subscriptions)),
        "pending" => conns.sort_by_key(|c| std::cmp::Reverse(c.pending_bytes)),
        "msgs_to" => conns.sort_by_key(|c| std::cmp::Reverse(c.out_msgs)),
        "msgs_from" => conns.sort_by_key(|c| std::cmp::Reverse(c.in_msgs)),
        "bytes_to" => conns.sort_by_key(|c| std::cmp::Reverse(c.out_bytes)),
        "bytes_from" => conns.sort_by_key(|c| std::cmp::Reverse(c.in_bytes)),
        "last" => conns.sort_by_key(|c| std::cmp::Reverse(c.last_activity)),
        "idle" => conns.sort_by_key(|c| std::cmp::Reverse(since(c.last_activity))),
        "uptime" => conns.sort_by_key(|c| std::cmp::Reverse(since(c.start))),
        "rtt" => conns.sort_by_key(|c| std::cmp::Reverse(c.rtt)),
        "stop" | "reason" if state == "open" => {
            return Err(format!(
                "sort by {sort} is only valid for closed connections (state=closed)"
            ))
        }
        "stop" => conns.sort_by_key(|c| std::cmp::Reverse(c.stop)),
        "reason" => conns.sort_by(|a, b| a.reason.cmp(&b.reason)),
        other => return Err(format!("invalid sorting option {other:?}")),
    }
    let by_conn = if subs_list || subs_detail {
        subscriptions_by_conn(m)
    } else {
        HashMap::new()
    };
    // Connections that list their own subscriptions (MQTT sessions own theirs).
    let own: HashMap<u64, Vec<(String, Arc<Subscription>)>> = if subs_list || subs_detail {
        registry
            .open_views()
            .iter()
            .filter_map(|v| {
                let snap = v.snapshot();
                let subs = v.subscriptions()?;
                Some((
                    snap.cid.0,
                    subs.into_iter()
                        .map(|s| (snap.account.clone(), s))
                        .collect(),
                ))
            })
            .collect()
    } else {
        HashMap::new()
    };
    let page: Vec<Value> = conns
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| {
            let mut v = conn_json(c, now, auth);
            let subs = own.get(&c.cid.0).or_else(|| by_conn.get(&c.cid.0));
            if subs_list {
                let list: Vec<String> = subs
                    .map(|l| l.iter().map(|(_, s)| text(&s.subject)).collect())
                    .unwrap_or_default();
                v["subscriptions_list"] = json!(list);
            }
            if subs_detail {
                let list: Vec<Value> = subs
                    .map(|l| l.iter().map(|(a, s)| sub_detail(a, s)).collect())
                    .unwrap_or_default();
                v["subscriptions_list_detail"] = json!(list);
            }
            v
        })
        .collect();
    Ok(json!({
        "server_id": m.info.server_id,
        "now": rfc3339(now),
        "num_connections": page.len(),
        "total": conns.len(),
        "offset": offset,
        "limit": limit,
        "connections": page,
    }))
}

/// One connection as `/connz` shows it.
pub(crate) fn conn_json(c: &ConnSnapshot, now: SystemTime, auth: bool) -> Value {
    let end = c.stop.unwrap_or(now);
    let uptime = end.duration_since(c.start).unwrap_or_default();
    let idle = end.duration_since(c.last_activity).unwrap_or_default();
    let mut v = json!({
        "cid": c.cid.0,
        "kind": "Client",
        "type": c.kind,
        "ip": c.ip,
        "port": c.port,
        "start": rfc3339(c.start),
        "last_activity": rfc3339(c.last_activity),
        "uptime": format_uptime(uptime),
        "idle": format_uptime(idle),
        "pending_bytes": c.pending_bytes,
        "in_msgs": c.in_msgs,
        "out_msgs": c.out_msgs,
        "in_bytes": c.in_bytes,
        "out_bytes": c.out_bytes,
        "subscriptions": c.subscriptions,
    });
    for (key, value) in [
        ("name", &c.name),
        ("lang", &c.lang),
        ("version", &c.version),
    ] {
        if !value.is_empty() {
            v[key] = json!(value);
        }
    }
    if let Some(rtt) = c.rtt {
        v["rtt"] = json!(go_duration(rtt));
    }
    if !c.account.is_empty() {
        v["account"] = json!(c.account);
    }
    if auth && !c.user.is_empty() {
        v["authorized_user"] = json!(c.user);
    }
    if c.kind == "mqtt" {
        v["mqtt_client"] = json!(c.mqtt_client);
        v["mqtt_dropped_msgs"] = json!(c.dropped_msgs);
    }
    if let (Some(stop), Some(reason)) = (c.stop, c.reason) {
        v["stop"] = json!(rfc3339(stop));
        v["reason"] = json!(reason);
    }
    v
}

/// `/subsz`: the subscription index's figures; `subs=1` lists subscriptions (`test=SUBJECT`:
/// only those a message on SUBJECT reaches; `acc=NAME`: one account's).
pub(crate) async fn subsz(State(m): State<Arc<Monitor>>, RawQuery(query): RawQuery) -> Response {
    respond(subsz_value(&m, &query))
}

pub(crate) fn subsz_value(m: &Monitor, query: &Option<String>) -> Result<Value, String> {
    let query = query.clone();
    let list = matches!(param(&query, "subs"), Some("1" | "true" | "detail"));
    let offset: usize = param(&query, "offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = param(&query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let test = param(&query, "test").filter(|t| !t.is_empty());
    if let Some(t) = test {
        if t.contains(['*', '>']) || t.split('.').any(str::is_empty) {
            return Err(format!(
                "invalid test subject, must be valid publish subject: {t}"
            ));
        }
    }
    let acc = param(&query, "acc").filter(|a| !a.is_empty());
    let accounts: Vec<_> = m
        .bus
        .accounts()
        .into_iter()
        .filter(|a| acc.is_none_or(|n| a.name() == n))
        .collect();
    let total: usize = accounts.iter().map(|a| a.sublist().count()).sum();
    let mut body = json!({
        "server_id": m.info.server_id,
        "now": rfc3339(SystemTime::now()),
        "num_subscriptions": total,
        "num_cache": 0,
        "num_inserts": 0,
        "num_removes": 0,
        "num_matches": 0,
        "cache_hit_rate": 0.0,
        "max_fanout": 0,
        "avg_fanout": 0.0,
    });
    if list {
        let mut found: Vec<Value> = Vec::new();
        for a in &accounts {
            let subs: Vec<Arc<Subscription>> = match test {
                Some(t) => {
                    let r = a.sublist().match_subject(t.as_bytes());
                    let mut v: Vec<Arc<Subscription>> = r.psubs.to_vec();
                    for group in &r.qsubs {
                        v.extend(group.members.iter().cloned());
                    }
                    v
                }
                None => a.sublist().all(),
            };
            found.extend(subs.iter().map(|s| sub_detail(a.name(), s)));
        }
        body["total"] = json!(found.len());
        body["offset"] = json!(offset);
        body["limit"] = json!(limit);
        let page: Vec<Value> = found.into_iter().skip(offset).take(limit).collect();
        body["subscriptions_list"] = json!(page);
    }
    Ok(body)
}

/// `/accountz`: the accounts (`acc=NAME`: one account's details).
pub(crate) async fn accountz(State(m): State<Arc<Monitor>>, RawQuery(query): RawQuery) -> Response {
    respond(accountz_value(&m, &query))
}

pub(crate) fn accountz_value(m: &Monitor, query: &Option<String>) -> Result<Value, String> {
    let query = query.clone();
    let now = rfc3339(SystemTime::now());
    let system = m.info.system_account.clone();
    match param(&query, "acc").filter(|a| !a.is_empty()) {
        None => {
            let names: Vec<String> = m
                .bus
                .accounts()
                .iter()
                .map(|a| a.name().to_string())
                .collect();
            Ok(json!({
                "server_id": m.info.server_id,
                "now": now,
                "system_account": system,
                "accounts": names,
            }))
        }
        Some(name) => {
            let Some(acc) = m.bus.account(name) else {
                return Err(format!("Account {name} does not exist"));
            };
            let conns = m
                .bus
                .conns()
                .open_snapshots()
                .into_iter()
                .filter(|c| c.account == name)
                .count();
            Ok(json!({
                "server_id": m.info.server_id,
                "now": now,
                "system_account": system,
                "account_detail": {
                    "account_name": name,
                    "update_time": rfc3339(SystemTime::now()),
                    "is_system": system == name,
                    "expired": false,
                    "complete": true,
                    "jetstream_enabled": false,
                    "leafnode_connections": 0,
                    "client_connections": conns,
                    "subscriptions": acc.sublist().count(),
                },
            }))
        }
    }
}

/// `/accstatz`: per account, open connections, subscriptions and the messages its open
/// connections sent and received (`accounts=NAME,...` to choose; `unused=1` to include
/// accounts without connections).
pub(crate) async fn accstatz(State(m): State<Arc<Monitor>>, RawQuery(query): RawQuery) -> Response {
    respond(accstatz_value(&m, &query))
}

pub(crate) fn accstatz_value(m: &Monitor, query: &Option<String>) -> Result<Value, String> {
    let query = query.clone();
    let wanted: Option<Vec<&str>> = param(&query, "accounts")
        .filter(|a| !a.is_empty())
        .map(|a| a.split(',').collect());
    let unused = matches!(param(&query, "unused"), Some("1" | "true"));
    let open = m.bus.conns().open_snapshots();
    let mut stats = Vec::new();
    for acc in m.bus.accounts() {
        let name = acc.name();
        if wanted.as_ref().is_some_and(|w| !w.contains(&name)) {
            continue;
        }
        let mine: Vec<&ConnSnapshot> = open.iter().filter(|c| c.account == name).collect();
        if mine.is_empty() && !unused {
            continue;
        }
        let sum = |f: fn(&ConnSnapshot) -> u64| mine.iter().map(|c| f(c)).sum::<u64>();
        stats.push(json!({
            "acc": name,
            "conns": mine.len(),
            "leafnodes": 0,
            "total_conns": mine.len(),
            "num_subscriptions": acc.sublist().count(),
            "sent": { "msgs": sum(|c| c.out_msgs), "bytes": sum(|c| c.out_bytes) },
            "received": { "msgs": sum(|c| c.in_msgs), "bytes": sum(|c| c.in_bytes) },
            "slow_consumers": 0,
        }));
    }
    Ok(json!({
        "server_id": m.info.server_id,
        "now": rfc3339(SystemTime::now()),
        "account_statz": stats,
    }))
}

/// `/routez`, `/gatewayz`, `/leafz`: Junction has no routes or gateways; `/leafz` lists the
/// leaf node links it dialled that are up.
pub(crate) fn cluster_value(m: &Monitor, kind: &str) -> Value {
    let now = rfc3339(SystemTime::now());
    match kind {
        "ROUTEZ" => json!({
            "server_id": m.info.server_id,
            "server_name": m.info.server_name,
            "now": now,
            "num_routes": 0,
            "routes": [],
        }),
        "GATEWAYZ" => json!({
            "server_id": m.info.server_id,
            "now": now,
            "name": "",
            "host": "",
            "port": 0,
            "outbound_gateways": {},
            "inbound_gateways": {},
        }),
        _ => {
            let leafs = m
                .info
                .extra_metrics
                .0
                .as_ref()
                .map(|e| e.leafz())
                .unwrap_or_default();
            json!({
                "server_id": m.info.server_id,
                "now": now,
                "leafnodes": leafs.len(),
                "leafs": leafs,
            })
        }
    }
}

pub(crate) async fn routez(State(m): State<Arc<Monitor>>) -> Json<Value> {
    Json(cluster_value(&m, "ROUTEZ"))
}

pub(crate) async fn gatewayz(State(m): State<Arc<Monitor>>) -> Json<Value> {
    Json(cluster_value(&m, "GATEWAYZ"))
}

pub(crate) async fn leafz(State(m): State<Arc<Monitor>>) -> Json<Value> {
    Json(cluster_value(&m, "LEAFZ"))
}

/// `/healthz`: ok; `js-enabled=true` also asks that JetStream runs.
pub(crate) async fn healthz(State(m): State<Arc<Monitor>>, RawQuery(query): RawQuery) -> Response {
    let js = m
        .info
        .extra_metrics
        .0
        .as_ref()
        .and_then(|e| e.jsz(false))
        .is_some();
    if matches!(param(&query, "js-enabled"), Some("true" | "1")) && !js {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "status_code": 503,
                "error": "JetStream not enabled",
            })),
        )
            .into_response();
    }
    Json(json!({ "status": "ok" })).into_response()
}

/// `/jsz`: JetStream's usage; `accounts`, `streams` or `consumers` add the per-account and
/// per-stream detail.
pub(crate) async fn jsz(State(m): State<Arc<Monitor>>, RawQuery(query): RawQuery) -> Json<Value> {
    let detail = ["accounts", "streams", "consumers"]
        .iter()
        .any(|k| matches!(param(&query, k), Some("true" | "1")));
    let future = m.info.extra_metrics.0.as_ref().and_then(|e| e.jsz(detail));
    let mut v = match future {
        Some(f) => f.await,
        None => json!({ "disabled": true }),
    };
    v["server_id"] = json!(m.info.server_id);
    v["now"] = json!(crate::rfc3339(std::time::SystemTime::now()));
    Json(v)
}

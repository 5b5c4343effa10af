//! The dashboard at `/` on the monitoring port: one HTML page served from the binary (no build
//! step, no CDN), drawing its charts on canvases from `/api/dashboard`, which it polls once a
//! second, and a small tester that subscribes and publishes over the WebSocket listener with
//! the NATS protocol.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::response::Html;
use axum::Json;
use junction_core::Stats;
use serde_json::{json, Value};

use crate::{rfc3339, Monitor};

const PAGE: &str = include_str!("dashboard.html");

pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The browser demo of `examples/ws-demo` (nats.ws and mqtt.js over the WebSocket listener),
/// served from the binary at `/demo/`. The page finds the WebSocket listener through
/// `/api/dashboard` and loads the two client libraries from their pinned CDN addresses.
const DEMO_PAGE: &str = include_str!("../../examples/ws-demo/index.html");
const DEMO_SCRIPT: &str = include_str!("../../examples/ws-demo/demo.js");

pub(crate) async fn demo_page() -> Html<&'static str> {
    Html(DEMO_PAGE)
}

pub(crate) async fn demo_script() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        DEMO_SCRIPT,
    )
}

pub(crate) async fn demo_redirect() -> axum::response::Redirect {
    axum::response::Redirect::permanent("/demo/")
}

/// What the page draws: totals by protocol (it turns them into rates), connections by protocol
/// and account, the busiest subjects, slow consumers, recent closes with their reasons, MQTT
/// sessions, and where the WebSocket listener is.
pub(crate) async fn data(State(m): State<Arc<Monitor>>) -> Json<Value> {
    let s = m.bus.stats();
    let open = m.bus.conns().open_snapshots();
    let mut protocols: BTreeMap<&str, [u64; 5]> = BTreeMap::new();
    for p in ["nats", "mqtt"] {
        protocols.insert(p, [0; 5]);
    }
    for (kind, t) in m.bus.conns().closed_totals() {
        let e = protocols.entry(kind).or_default();
        for i in 0..4 {
            e[i] += t[i];
        }
    }
    let mut accounts: BTreeMap<String, u64> = BTreeMap::new();
    for c in &open {
        let e = protocols.entry(c.kind).or_default();
        e[0] += c.in_msgs;
        e[1] += c.in_bytes;
        e[2] += c.out_msgs;
        e[3] += c.out_bytes;
        e[4] += 1;
        if !c.account.is_empty() {
            *accounts.entry(c.account.clone()).or_default() += 1;
        }
    }
    let by_protocol: serde_json::Map<String, Value> = protocols
        .iter()
        .map(|(k, t)| {
            (
                k.to_string(),
                json!({
                    "in_msgs": t[0], "in_bytes": t[1], "out_msgs": t[2], "out_bytes": t[3],
                    "connections": t[4],
                }),
            )
        })
        .collect();
    let mut busiest: Vec<(String, String, u64)> = m
        .bus
        .accounts()
        .iter()
        .flat_map(|a| {
            let name = a.name().to_string();
            a.busiest(10)
                .into_iter()
                .map(move |(subj, n)| (name.clone(), subj, n))
        })
        .collect();
    busiest.sort_by_key(|b| std::cmp::Reverse(b.2));
    busiest.truncate(10);
    let closed: Vec<Value> = m
        .bus
        .conns()
        .closed_snapshots()
        .iter()
        .rev()
        .take(15)
        .map(|c| {
            json!({
                "cid": c.cid.0,
                "type": c.kind,
                "name": if c.kind == "mqtt" { &c.mqtt_client } else { &c.name },
                "account": c.account,
                "stop": c.stop.map(rfc3339),
                "reason": c.reason,
            })
        })
        .collect();
    let mut body = json!({
        "server_name": m.info.server_name,
        "version": m.info.version,
        "junction_version": m.info.junction_version,
        "now": rfc3339(SystemTime::now()),
        "uptime_secs": m.started.elapsed().as_secs(),
        "connections": Stats::get(&s.connections),
        "slow_consumers": Stats::get(&s.slow_consumers),
        "auth_failures": Stats::get(&s.auth_failures),
        "subscriptions": m.bus.subscription_count(),
        "protocols": by_protocol,
        "accounts": accounts,
        "busiest": busiest
            .into_iter()
            .map(|(a, s, n)| json!({ "account": a, "subject": s, "msgs": n }))
            .collect::<Vec<_>>(),
        "closed": closed,
    });
    if let Some(extra) = &m.info.extra_metrics.0 {
        if let (Value::Object(more), Value::Object(b)) = (extra.dashboard(), &mut body) {
            b.extend(more);
        }
    }
    Json(body)
}

//! The `$JS.API` requests: JSON in, JSON out, with nats-server's response types, field names
//! and error codes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use junction_core::sync::Lock;
use junction_core::{Account, Message};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::advisories::Action;
use crate::config::{ConsumerConfig, DeliverPolicy, Retention, StreamConfig};
use crate::consumer::{Consumer, PullRequest};
use crate::errors::ApiError;
use crate::headers;
use crate::persist;
use crate::service::{StreamEntry, Task};
use crate::stream::{now_ns, Stream, StreamState};
use crate::time::rfc3339;

const PREFIX: &str = "io.nats.jetstream.api.v1.";
/// Page sizes of the list and names requests.
const LIST_LIMIT: usize = 256;
const NAMES_LIMIT: usize = 1024;

type ApiResult = Result<Value, ApiError>;

pub mod backup;
mod consumers;
mod streams;

pub(crate) use consumers::pull_request;
use consumers::*;
pub(crate) use streams::direct_reply;
pub(crate) use streams::remove_consumer;
use streams::*;

/// Whether an API request may create, change or remove a stream or a consumer (what the
/// task's view of who reads each stream depends on); reads and pull requests do not.
pub(crate) fn may_add_or_remove(subject: &[u8]) -> bool {
    let Some(at) = subject.windows(5).position(|w| w == b".API.") else {
        return false;
    };
    let op = &subject[at + 5..];
    [
        &b"STREAM.CREATE."[..],
        b"STREAM.UPDATE.",
        b"STREAM.DELETE.",
        b"STREAM.RESTORE.",
        b"CONSUMER.CREATE.",
        b"CONSUMER.DURABLE.CREATE.",
        b"CONSUMER.DELETE.",
        b"ACCOUNT.PURGE.",
    ]
    .iter()
    .any(|p| op.starts_with(p))
}

/// Answers one request.
pub(crate) fn handle(
    task: &mut Task,
    account: &Arc<Account>,
    subject: &[u8],
    reply: Option<Bytes>,
    payload: &[u8],
    origin: junction_core::ConnId,
) {
    let Ok(subject) = std::str::from_utf8(subject) else {
        return;
    };
    let domain_prefix = task
        .shared
        .opts
        .domain
        .as_ref()
        .map(|d| format!("$JS.{d}.API."));
    let Some(rest) = subject
        .strip_prefix("$JS.API.")
        .or_else(|| subject.strip_prefix(domain_prefix.as_deref()?))
    else {
        return;
    };
    let t: Vec<&str> = rest.split('.').collect();
    let acc = account.name().to_string();
    if !acc.is_empty() && acc == task.shared.opts.system_account {
        // Its one request (it has no JetStream of its own, and subscribes nothing else), from
        // one of its own connections only: a request another account's import brings in (an
        // internal origin) is not the system account's, as nats-server reads its client info.
        let own = task.client_info(account, origin).is_some();
        if let (["ACCOUNT", "PURGE", target], true) = (t.as_slice(), own) {
            let result = account_purge(task, target);
            answer(
                task,
                account,
                subject,
                payload,
                reply,
                origin,
                "account_purge_response",
                result,
            );
        }
        return;
    }
    // An account without JetStream is told so, as nats-server tells it; the subjects streams
    // and consumers serve themselves (direct get, pull requests) and unknown ones get no answer.
    let enabled = task.accounts.contains_key(&acc);
    let (kind, result) = match t.as_slice() {
        ["INFO"] => ("account_info_response", account_info(task, &acc)),
        ["STREAM", "CREATE", name] => (
            "stream_create_response",
            stream_create(task, &acc, name, payload),
        ),
        ["STREAM", "UPDATE", name] => (
            "stream_update_response",
            stream_update(task, &acc, name, payload),
        ),
        ["STREAM", "DELETE", name] => ("stream_delete_response", stream_delete(task, &acc, name)),
        ["STREAM", "INFO", name] => (
            "stream_info_response",
            stream_info_req(task, &acc, name, payload),
        ),
        ["STREAM", "LIST"] => (
            "stream_list_response",
            stream_list(task, &acc, payload, false),
        ),
        ["STREAM", "NAMES"] => (
            "stream_names_response",
            stream_list(task, &acc, payload, true),
        ),
        ["STREAM", "PURGE", name] => (
            "stream_purge_response",
            stream_purge(task, &acc, name, payload),
        ),
        ["STREAM", "MSG", "GET", name] => (
            "stream_msg_get_response",
            msg_get(task, &acc, name, payload),
        ),
        ["STREAM", "SNAPSHOT", name] => (
            "stream_snapshot_response",
            backup::snapshot_request(task, account, name, payload, origin),
        ),
        ["STREAM", "RESTORE", name] => (
            "stream_restore_response",
            backup::restore_request(task, account, name, payload, origin),
        ),
        ["STREAM", "MSG", "DELETE", name] => (
            "stream_msg_delete_response",
            msg_delete(task, &acc, name, payload),
        ),
        // Direct gets are the streams' own ([`crate::sinks::DirectSink`]).
        ["DIRECT", "GET", ..] => return,
        ["CONSUMER", "MSG", "NEXT", ..] if !enabled => return,
        // The system's own directives (meta leader step-down, server removal, account purge
        // and stream moves) are not an account's to ask: nats-server's account API ignores
        // them, and so the requester hears nothing (an account purge is the system account's,
        // above).
        ["META", "LEADER", "STEPDOWN"] | ["SERVER", "REMOVE"] | ["ACCOUNT", ..] if enabled => {
            return
        }
        ["CONSUMER", "CREATE", stream] => (
            "consumer_create_response",
            consumer_create(task, &acc, stream, Create::Ephemeral, payload),
        ),
        ["CONSUMER", "CREATE", stream, name, filter @ ..] => (
            "consumer_create_response",
            consumer_create(
                task,
                &acc,
                stream,
                Create::Named(name, filter.join(".")),
                payload,
            ),
        ),
        ["CONSUMER", "DURABLE", "CREATE", stream, name] => (
            "consumer_create_response",
            consumer_create(task, &acc, stream, Create::Durable(name), payload),
        ),
        ["CONSUMER", "DURABLE", "CREATE", ..] => (
            "consumer_create_response",
            Err(ApiError::new(
                400,
                10016,
                "consumer expected to be durable but no durable name set in subject",
            )),
        ),
        ["CONSUMER", "INFO", stream, name] => (
            "consumer_info_response",
            consumer_info_req(task, &acc, stream, name),
        ),
        ["CONSUMER", "DELETE", stream, name] => (
            "consumer_delete_response",
            consumer_delete(task, &acc, stream, name),
        ),
        ["CONSUMER", "LIST", stream] => (
            "consumer_list_response",
            consumer_list(task, &acc, stream, payload, false),
        ),
        ["CONSUMER", "NAMES", stream] => (
            "consumer_names_response",
            consumer_list(task, &acc, stream, payload, true),
        ),
        // A cluster's operations: one server has no leader to step down and no peers, as
        // nats-server answers when it runs without a cluster (for any stream, existing or not).
        ["STREAM", "LEADER", "STEPDOWN", _] => (
            "stream_leader_stepdown_response",
            Err(ApiError::cluster_required()),
        ),
        ["STREAM", "PEER", "REMOVE", _] => (
            "stream_remove_peer_response",
            Err(ApiError::cluster_required()),
        ),
        ["CONSUMER", "LEADER", "STEPDOWN", _, _] => (
            "consumer_leader_stepdown_response",
            Err(ApiError::cluster_required()),
        ),
        ["CONSUMER", "MSG", "NEXT", stream, name] => {
            next_request(task, account, stream, name, reply, payload);
            return;
        }
        _ if !enabled => return,
        _ => (
            "error_response",
            Err(ApiError::new(400, 10003, "bad request")),
        ),
    };
    let result = if enabled {
        result
    } else {
        Err(ApiError::not_enabled_for_account())
    };
    // Counted for the accounts with JetStream only (as nats-server counts them).
    if let Some(a) = task.accounts.get_mut(&acc) {
        a.api_total += 1;
        a.api_errors += u64::from(result.is_err());
        let counters = &task.shared.counters;
        counters.api_total.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            counters.api_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    answer(task, account, subject, payload, reply, origin, kind, result);
}

/// Sends the answer of type `kind` to a request, after its audit advisory.
#[allow(clippy::too_many_arguments)]
fn answer(
    task: &mut Task,
    account: &Arc<Account>,
    subject: &str,
    payload: &[u8],
    reply: Option<Bytes>,
    origin: junction_core::ConnId,
    kind: &str,
    result: ApiResult,
) {
    let body = response_body(kind, result);
    task.api_audit(account, subject, payload, &body, origin);
    if let Some(r) = reply {
        let origin = task.shared.origin;
        task.send_msg(account, Message::new(r, None, body, origin));
    }
}

/// An answer of type `kind` (`stream_create_response`, ...): the result with its `type`, or the
/// error.
fn response_body(kind: &str, result: ApiResult) -> Bytes {
    let body = match result {
        Ok(mut v) => {
            v["type"] = json!(format!("{PREFIX}{kind}"));
            v
        }
        Err(e) => json!({"type": format!("{PREFIX}{kind}"), "error": e}),
    };
    Bytes::from(body.to_string())
}

/// Refuses a request without a body (where nats-server requires one).
fn required(payload: &[u8]) -> Result<(), ApiError> {
    if payload.trim_ascii().is_empty() {
        return Err(ApiError::bad_request());
    }
    Ok(())
}

fn parse<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(payload).map_err(ApiError::invalid_json)
}

/// An optional JSON body: empty means all defaults.
fn parse_opt<T: for<'de> Deserialize<'de> + Default>(payload: &[u8]) -> Result<T, ApiError> {
    // async-nats sends `null` where there is nothing to ask.
    let text = payload.trim_ascii();
    if text.is_empty() || text == b"null" {
        return Ok(T::default());
    }
    parse(payload)
}

fn entry<'a>(task: &'a mut Task, acc: &str, name: &str) -> Result<&'a mut StreamEntry, ApiError> {
    task.accounts
        .get_mut(acc)
        .ok_or_else(ApiError::not_enabled_for_account)?
        .streams
        .get_mut(name)
        .ok_or_else(ApiError::stream_not_found)
}

// ---------------------------------------------------------------------------------------------
// Account
// ---------------------------------------------------------------------------------------------

/// What one account's JetStream holds.
#[derive(Default)]
struct Usage {
    mem: u64,
    file: u64,
    streams: usize,
    consumers: usize,
    /// The `max_bytes` its streams reserve, by storage type.
    reserved_mem: u64,
    reserved_file: u64,
}

fn usage(task: &Task, acc: &str) -> Usage {
    let mut u = Usage::default();
    if let Some(a) = task.accounts.get(acc) {
        for e in a.streams.values() {
            let st = e.stream.state.locked();
            let reserved = st.config.max_bytes.max(0) as u64;
            match st.config.storage {
                crate::config::Storage::Memory => {
                    u.mem += st.bytes;
                    u.reserved_mem += reserved;
                }
                crate::config::Storage::File => {
                    u.file += st.bytes;
                    u.reserved_file += reserved;
                }
            }
            u.streams += 1;
            u.consumers += e.consumers.len();
        }
    }
    u
}

fn account_info(task: &Task, acc: &str) -> ApiResult {
    let Some(a) = task.accounts.get(acc) else {
        return Err(ApiError::not_enabled_for_account());
    };
    let l = a.limits;
    let u = usage(task, acc);
    let o = &task.shared.opts;
    let limits = json!({
        "max_memory": l.max_memory,
        "max_storage": l.max_store,
        "max_streams": l.max_streams,
        "max_consumers": l.max_consumers,
        "max_ack_pending": l.max_ack_pending,
        "memory_max_stream_bytes": l.memory_max_stream_bytes,
        "storage_max_stream_bytes": l.storage_max_stream_bytes,
        "max_bytes_required": l.max_bytes_required,
    });
    let mut v = json!({
        "memory": u.mem,
        "storage": u.file,
        "reserved_memory": u.reserved_mem,
        "reserved_storage": u.reserved_file,
        "streams": u.streams,
        "consumers": u.consumers,
        "limits": limits,
        "api": {"total": a.api_total, "errors": a.api_errors},
    });
    match l.tier {
        crate::Tier::Flat => {}
        // Tiered limits: the totals carry no limits and the tier its own (as nats-server).
        crate::Tier::R1 | crate::Tier::Missing => {
            v["limits"] = json!({
                "max_memory": 0, "max_storage": 0, "max_streams": 0, "max_consumers": 0,
                "max_ack_pending": 0, "memory_max_stream_bytes": 0,
                "storage_max_stream_bytes": 0, "max_bytes_required": false,
            });
            if l.tier == crate::Tier::R1 {
                v["tiers"] = json!({"R1": {
                    "memory": u.mem,
                    "storage": u.file,
                    "streams": u.streams,
                    "consumers": u.consumers,
                    "limits": limits,
                }});
            }
        }
    }
    if let Some(d) = &o.domain {
        v["domain"] = json!(d);
    }
    Ok(v)
}

#[derive(Deserialize, Default)]
struct ListRequest {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    subject: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------------------------

/// The `/jsz` document.
pub(crate) fn jsz(task: &Task, detail: bool) -> Value {
    let o = &task.shared.opts;
    let (mut mem, mut file, mut streams, mut consumers, mut messages, mut bytes) =
        (0, 0, 0, 0, 0u64, 0u64);
    let (mut reserved_mem, mut reserved_file) = (0u64, 0u64);
    let mut details = Vec::new();
    let mut names: Vec<&String> = task.accounts.keys().collect();
    names.sort();
    for acc in names {
        let u = usage(task, acc);
        let (m, f, s, c) = (u.mem, u.file, u.streams, u.consumers);
        mem += m;
        file += f;
        streams += s;
        consumers += c;
        reserved_mem += u.reserved_mem;
        reserved_file += u.reserved_file;
        let a = &task.accounts[acc];
        let mut stream_details = Vec::new();
        for e in a.streams.values() {
            let st = e.stream.state.locked();
            messages += st.msgs;
            bytes += st.bytes;
            if detail {
                let consumer_details: Vec<Value> = e
                    .consumers
                    .values()
                    .map(|c| json!({"name": c.name, "stream_name": e.stream.name}))
                    .collect();
                stream_details.push(json!({
                    "name": e.stream.name,
                    "created": rfc3339(st.created),
                    "config": st.config,
                    "state": stream_state(e, &st, false),
                    "consumer_detail": consumer_details,
                }));
            }
        }
        if detail {
            details.push(json!({
                "name": acc,
                "id": acc,
                "memory": m,
                "storage": f,
                "reserved_memory": u.reserved_mem,
                "reserved_storage": u.reserved_file,
                "accounts": 1,
                "api": {"total": a.api_total, "errors": a.api_errors},
                "streams": s,
                "consumers": c,
                "stream_detail": stream_details,
            }));
        }
    }
    let mut v = json!({
        "config": {
            "max_memory": o.max_memory,
            "max_storage": o.max_store,
            "store_dir": o.store_dir,
        },
        "memory": mem,
        "storage": file,
        "reserved_memory": reserved_mem,
        "reserved_storage": reserved_file,
        "accounts": task.accounts.len(),
        "ha_assets": 0,
        "api": {
            "total": task.shared.counters.api_total.load(std::sync::atomic::Ordering::Relaxed),
            "errors": task.shared.counters.api_errors.load(std::sync::atomic::Ordering::Relaxed),
        },
        "streams": streams,
        "consumers": consumers,
        "messages": messages,
        "bytes": bytes,
        "disabled": false,
    });
    if let Some(d) = &o.domain {
        v["config"]["domain"] = json!(d);
    }
    if detail {
        v["account_details"] = json!(details);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_requests_parse() {
        let now = Instant::now();
        let r = pull_request(Bytes::from_static(b"r"), b"", now).unwrap();
        assert_eq!((r.batch, r.no_wait, r.expires.is_none()), (1, false, true));
        let r = pull_request(Bytes::from_static(b"r"), b"5", now).unwrap();
        assert_eq!(r.batch, 5);
        let r = pull_request(
            Bytes::from_static(b"r"),
            br#"{"batch":10,"expires":1000000000,"no_wait":true}"#,
            now,
        )
        .unwrap();
        assert_eq!((r.batch, r.no_wait), (10, true));
        assert_eq!(r.expires, Some(now + Duration::from_secs(1)));
        assert!(pull_request(Bytes::from_static(b"r"), b"{", now).is_err());
    }
}

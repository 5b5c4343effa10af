//! The `$JS.API` requests: JSON in, JSON out, with nats-server's response types, field names
//! and error codes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use junction_core::sync::Lock;
use junction_core::{Account, Message};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{ConsumerConfig, DeliverPolicy, Retention, StreamConfig};
use crate::consumer::{Consumer, PullRequest};
use crate::errors::ApiError;
use crate::headers;
use crate::persist;
use crate::service::{StreamEntry, Task};
use crate::stream::{now_ns, StreamState};
use crate::subjects;
use crate::time::rfc3339;

const PREFIX: &str = "io.nats.jetstream.api.v1.";
/// Page sizes of the list and names requests.
const LIST_LIMIT: usize = 256;
const NAMES_LIMIT: usize = 1024;

type ApiResult = Result<Value, ApiError>;

/// Answers one request.
pub(crate) fn handle(
    task: &mut Task,
    account: &Arc<Account>,
    subject: &[u8],
    reply: Option<Bytes>,
    payload: &[u8],
) {
    let Ok(subject) = std::str::from_utf8(subject) else {
        return;
    };
    let Some(rest) = subject.strip_prefix("$JS.API.") else {
        return;
    };
    task.shared
        .counters
        .api_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t: Vec<&str> = rest.split('.').collect();
    let acc = account.name().to_string();
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
        ["STREAM", "MSG", "DELETE", name] => (
            "stream_msg_delete_response",
            msg_delete(task, &acc, name, payload),
        ),
        ["DIRECT", "GET", name, subj @ ..] => {
            direct_get(task, account, name, &subj.join("."), reply, payload);
            return;
        }
        ["CONSUMER", "CREATE", stream] => (
            "consumer_create_response",
            consumer_create(task, &acc, stream, None, None, payload),
        ),
        ["CONSUMER", "CREATE", stream, name, filter @ ..] => (
            "consumer_create_response",
            consumer_create(
                task,
                &acc,
                stream,
                Some(name),
                Some(filter.join(".")),
                payload,
            ),
        ),
        ["CONSUMER", "DURABLE", "CREATE", stream, name] => (
            "consumer_create_response",
            consumer_create(task, &acc, stream, Some(name), None, payload),
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
        ["CONSUMER", "MSG", "NEXT", stream, name] => {
            next_request(task, account, stream, name, reply, payload);
            return;
        }
        _ => (
            "error_response",
            Err(ApiError::new(400, 10003, "bad request")),
        ),
    };
    let body = match result {
        Ok(mut v) => {
            v["type"] = json!(format!("{PREFIX}{kind}"));
            v
        }
        Err(e) => {
            task.shared
                .counters
                .api_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            json!({"type": format!("{PREFIX}{kind}"), "error": e})
        }
    };
    task.reply(account, &reply, body);
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

/// Memory and file bytes, streams and consumers of one account.
fn usage(task: &Task, acc: &str) -> (u64, u64, usize, usize) {
    let (mut mem, mut file, mut streams, mut consumers) = (0, 0, 0, 0);
    if let Some(a) = task.accounts.get(acc) {
        for e in a.streams.values() {
            let st = e.stream.state.locked();
            match st.config.storage {
                crate::config::Storage::Memory => mem += st.bytes,
                crate::config::Storage::File => file += st.bytes,
            }
            streams += 1;
            consumers += e.consumers.len();
        }
    }
    (mem, file, streams, consumers)
}

fn account_info(task: &Task, acc: &str) -> ApiResult {
    if !task.accounts.contains_key(acc) {
        return Err(ApiError::not_enabled_for_account());
    }
    let (mem, file, streams, consumers) = usage(task, acc);
    let o = &task.shared.opts;
    let mut v = json!({
        "memory": mem,
        "storage": file,
        "reserved_memory": 0,
        "reserved_storage": 0,
        "streams": streams,
        "consumers": consumers,
        "limits": {
            "max_memory": -1,
            "max_storage": -1,
            "max_streams": -1,
            "max_consumers": -1,
            "max_ack_pending": -1,
            "memory_max_stream_bytes": -1,
            "storage_max_stream_bytes": -1,
            "max_bytes_required": false,
        },
        "api": {
            "total": task.shared.counters.api_total.load(std::sync::atomic::Ordering::Relaxed),
            "errors": task.shared.counters.api_errors.load(std::sync::atomic::Ordering::Relaxed),
        },
    });
    if let Some(d) = &o.domain {
        v["domain"] = json!(d);
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

fn stream_config(name: &str, payload: &[u8]) -> Result<StreamConfig, ApiError> {
    let mut cfg: StreamConfig = parse(payload)?;
    if cfg.name.is_empty() {
        cfg.name = name.to_string();
    }
    if cfg.name != name {
        return Err(ApiError::stream_mismatch());
    }
    cfg.normalize()?;
    Ok(cfg)
}

/// Refuses subjects another stream of the account captures.
fn check_overlap(task: &Task, acc: &str, cfg: &StreamConfig) -> Result<(), ApiError> {
    if let Some(a) = task.accounts.get(acc) {
        for (name, e) in &a.streams {
            if *name == cfg.name {
                continue;
            }
            let st = e.stream.state.locked();
            if st
                .config
                .subjects
                .iter()
                .any(|s| cfg.subjects.iter().any(|n| subjects::overlap(s, n)))
            {
                return Err(ApiError::subject_overlap());
            }
        }
    }
    Ok(())
}

/// Refuses what would pass the server's storage limits.
fn check_resources(task: &Task, cfg: &StreamConfig) -> Result<(), ApiError> {
    let o = &task.shared.opts;
    let limit = match cfg.storage {
        crate::config::Storage::Memory => o.max_memory,
        crate::config::Storage::File => o.max_store,
    };
    if limit >= 0 && cfg.max_bytes > limit {
        return Err(ApiError::insufficient_resources());
    }
    Ok(())
}

fn stream_create(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let cfg = stream_config(name, payload)?;
    let a = task
        .accounts
        .get(acc)
        .ok_or_else(ApiError::not_enabled_for_account)?;
    if let Some(e) = a.streams.get(name) {
        let st = e.stream.state.locked();
        if st.config == cfg {
            drop(st);
            return Ok(stream_info(e, None, false));
        }
        return Err(ApiError::stream_name_exists());
    }
    check_overlap(task, acc, &cfg)?;
    check_resources(task, &cfg)?;
    for src in cfg.mirror.iter().chain(cfg.sources.iter()) {
        if !a.streams.contains_key(&src.name) {
            return Err(ApiError::invalid_config(format!(
                "stream source {} does not exist",
                src.name
            )));
        }
    }
    let account = a.account.clone();
    let uid = task.shared.new_uid();
    let now = now_ns();
    let st = StreamState::new(cfg.clone(), now, 0, 0);
    let stream = task.make_stream(&account, uid, st);
    {
        let st = stream.state.locked();
        stream.save_meta(&st);
    }
    let e = StreamEntry {
        stream,
        consumers: BTreeMap::new(),
    };
    let mut info = stream_info(&e, None, false);
    info["did_create"] = json!(true);
    task.accounts
        .get_mut(acc)
        .expect("account exists")
        .streams
        .insert(name.to_string(), e);
    sync_sources(task, acc, name);
    Ok(info)
}

fn stream_update(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let cfg = stream_config(name, payload)?;
    check_overlap(task, acc, &cfg)?;
    check_resources(task, &cfg)?;
    let e = entry(task, acc, name)?;
    let stream = e.stream.clone();
    let subjects_changed = {
        let st = stream.state.locked();
        st.config.check_update(&cfg)?;
        st.config.subjects != cfg.subjects
    };
    {
        let mut st = stream.state.locked();
        st.config = cfg.clone();
        stream.save_meta(&st);
    }
    // Tighter limits apply at once.
    stream.expire(now_ns());
    enforce_now(&stream);
    if subjects_changed {
        task.subscribe_stream(&stream, &cfg.subjects);
    }
    let e = entry(task, acc, name)?;
    Ok(stream_info(e, None, false))
}

/// Applies the count, size and per-subject limits after an update.
fn enforce_now(stream: &Arc<crate::stream::Stream>) {
    let mut st = stream.state.locked();
    let (max_msgs, max_bytes, per) = (
        st.config.max_msgs,
        st.config.max_bytes,
        st.config.max_msgs_per_subject,
    );
    let mut drop = Vec::new();
    if per > 0 {
        for q in st.subjects.values() {
            let over = q.len().saturating_sub(per as usize);
            drop.extend(q.iter().take(over).copied());
        }
    }
    stream.remove_many(&mut st, drop);
    let mut old = Vec::new();
    let (mut msgs, mut bytes) = (st.msgs, st.bytes);
    for seq in st.seqs() {
        let over =
            (max_msgs > 0 && msgs > max_msgs as u64) || (max_bytes > 0 && bytes > max_bytes as u64);
        if !over {
            break;
        }
        msgs -= 1;
        bytes -= st.get(seq).map_or(0, |m| m.stored_size());
        old.push(seq);
    }
    stream.remove_many(&mut st, old);
}

pub(crate) fn remove_consumer(task: &mut Task, acc: &str, stream: &str, name: &str) -> bool {
    let Ok(e) = entry(task, acc, stream) else {
        return false;
    };
    let Some(mut c) = e.consumers.remove(name) else {
        return false;
    };
    let mut out = Vec::new();
    c.close(&mut out);
    if let Some(s) = e.stream.durable() {
        s.submit(junction_store::Op::Delete {
            table: persist::CONSUMERS,
            key: persist::consumer_key(e.stream.uid, name),
        });
    }
    let account = e.stream.account.clone();
    for o in out {
        task.reply_status(&account, o);
    }
    task.refresh_interest(acc, stream);
    release_interest(task, acc, stream);
    true
}

/// Interest retention: removes what every remaining consumer has acknowledged (everything,
/// when none remains).
fn release_interest(task: &mut Task, acc: &str, stream: &str) {
    let Ok(e) = entry(task, acc, stream) else {
        return;
    };
    let s = e.stream.clone();
    let mut st = s.state.locked();
    if st.config.retention != Retention::Interest {
        return;
    }
    let done: Vec<u64> = st
        .seqs()
        .filter(|seq| {
            st.get(*seq)
                .is_some_and(|m| e.consumers.values().all(|c| c.has_acked(*seq, &m.subject)))
        })
        .collect();
    s.remove_many(&mut st, done);
}

fn stream_delete(task: &mut Task, acc: &str, name: &str) -> ApiResult {
    let e = entry(task, acc, name)?;
    let names: Vec<String> = e.consumers.keys().cloned().collect();
    for c in names {
        remove_consumer(task, acc, name, &c);
    }
    let a = task.accounts.get_mut(acc).expect("account exists");
    let e = a.streams.remove(name).expect("stream exists");
    for sub in e.stream.subs.locked().drain(..) {
        sub.close();
        e.stream.account.unsubscribe(&sub);
    }
    if let Some(s) = e.stream.durable() {
        for op in persist::delete_stream_ops(e.stream.uid) {
            s.submit(op);
        }
    }
    Ok(json!({"success": true}))
}

#[derive(Deserialize, Default)]
struct InfoRequest {
    #[serde(default)]
    subjects_filter: Option<String>,
    #[serde(default)]
    deleted_details: bool,
}

fn stream_info_req(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let req: InfoRequest = parse_opt(payload)?;
    let e = entry(task, acc, name)?;
    Ok(stream_info(
        e,
        req.subjects_filter.as_deref(),
        req.deleted_details,
    ))
}

fn stream_state(e: &StreamEntry, st: &StreamState, filter: Option<&str>, deleted: bool) -> Value {
    let mut state = json!({
        "messages": st.msgs,
        "bytes": st.bytes,
        // A stream that never held a message says 0, as nats-server does.
        "first_seq": if st.last_seq == 0 { 0 } else { st.first_seq() },
        "first_ts": rfc3339(st.first_ts()),
        "last_seq": st.last_seq,
        "last_ts": rfc3339(st.last_ts),
        "num_subjects": st.subjects.len(),
        "consumer_count": e.consumers.len(),
    });
    if !st.holes().is_empty() {
        state["num_deleted"] = json!(st.holes().len());
        if deleted {
            state["deleted"] = json!(st.holes().iter().collect::<Vec<_>>());
        }
    }
    if let Some(f) = filter.filter(|f| !f.is_empty()) {
        let subjects: serde_json::Map<String, Value> = st
            .subjects
            .iter()
            .filter(|(s, _)| junction_core::subject::matches(f.as_bytes(), s))
            .map(|(s, q)| (String::from_utf8_lossy(s).to_string(), json!(q.len())))
            .collect();
        state["subjects"] = Value::Object(subjects);
    }
    state
}

fn stream_info(e: &StreamEntry, filter: Option<&str>, deleted: bool) -> Value {
    let st = e.stream.state.locked();
    json!({
        "config": st.config,
        "created": rfc3339(st.created),
        "state": stream_state(e, &st, filter, deleted),
        "ts": rfc3339(now_ns()),
    })
}

#[derive(Deserialize, Default)]
struct ListRequest {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    subject: Option<String>,
}

fn stream_list(task: &mut Task, acc: &str, payload: &[u8], names: bool) -> ApiResult {
    let req: ListRequest = parse_opt(payload)?;
    let a = task
        .accounts
        .get(acc)
        .ok_or_else(ApiError::not_enabled_for_account)?;
    let matching: Vec<&StreamEntry> = a
        .streams
        .values()
        .filter(|e| match req.subject.as_deref().filter(|s| !s.is_empty()) {
            None => true,
            Some(f) => e
                .stream
                .state
                .locked()
                .config
                .subjects
                .iter()
                .any(|s| subjects::overlap(s, f)),
        })
        .collect();
    let limit = if names { NAMES_LIMIT } else { LIST_LIMIT };
    let page: Vec<&&StreamEntry> = matching.iter().skip(req.offset).take(limit).collect();
    let items: Vec<Value> = page
        .iter()
        .map(|e| {
            if names {
                json!(e.stream.name)
            } else {
                stream_info(e, None, false)
            }
        })
        .collect();
    Ok(json!({
        "total": matching.len(),
        "offset": req.offset,
        "limit": limit,
        "streams": items,
    }))
}

#[derive(Deserialize, Default)]
struct PurgeRequest {
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    keep: Option<u64>,
}

fn stream_purge(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let req: PurgeRequest = parse_opt(payload)?;
    let e = entry(task, acc, name)?;
    {
        let st = e.stream.state.locked();
        if st.config.sealed {
            return Err(ApiError::sealed());
        }
        if st.config.deny_purge {
            return Err(ApiError::deny_purge());
        }
    }
    if req.seq.is_some() && req.keep.is_some() {
        return Err(ApiError::bad_request());
    }
    let filter = req.filter.as_deref().filter(|f| !f.is_empty() && *f != ">");
    let purged = e.stream.purge(
        filter,
        req.seq.filter(|s| *s > 0),
        req.keep.filter(|k| *k > 0).or(
            // keep 0 with a filter still purges all that match.
            None,
        ),
    );
    Ok(json!({"success": true, "purged": purged}))
}

#[derive(Deserialize, Default)]
struct MsgGetRequest {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    last_by_subj: Option<String>,
    #[serde(default)]
    next_by_subj: Option<String>,
}

/// The message a get request names.
fn find(st: &StreamState, req: &MsgGetRequest) -> Option<Arc<crate::stream::StoredMsg>> {
    if let Some(subj) = req.last_by_subj.as_deref().filter(|s| !s.is_empty()) {
        return st.last_by_subject(subj).cloned();
    }
    if let Some(subj) = req.next_by_subj.as_deref().filter(|s| !s.is_empty()) {
        let seq = st.next_matching(req.seq.unwrap_or(0).max(1), &[subj.to_string()])?;
        return st.get(seq).cloned();
    }
    st.get(req.seq?).cloned()
}

fn msg_get(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let req: MsgGetRequest = parse(payload)?;
    let e = entry(task, acc, name)?;
    let st = e.stream.state.locked();
    let m = find(&st, &req).ok_or_else(ApiError::no_message_found)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut message = json!({
        "subject": String::from_utf8_lossy(&m.subject),
        "seq": m.seq,
        "time": rfc3339(m.ts),
    });
    if let Some(h) = &m.headers {
        message["hdrs"] = json!(b64.encode(h));
    }
    if !m.payload.is_empty() {
        message["data"] = json!(b64.encode(&m.payload));
    }
    Ok(json!({ "message": message }))
}

#[derive(Deserialize)]
struct MsgDeleteRequest {
    seq: u64,
}

fn msg_delete(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let req: MsgDeleteRequest = parse(payload)?;
    let e = entry(task, acc, name)?;
    let stream = e.stream.clone();
    let mut st = stream.state.locked();
    if st.config.sealed {
        return Err(ApiError::sealed());
    }
    if st.config.deny_delete {
        return Err(ApiError::deny_delete());
    }
    if stream.remove_many(&mut st, [req.seq]) == 0 {
        return Err(ApiError::sequence_not_found(req.seq));
    }
    Ok(json!({"success": true}))
}

/// `$JS.API.DIRECT.GET.<stream>[.<subject>]`: the message itself, with headers saying where it
/// came from, or a 404 status.
fn direct_get(
    task: &mut Task,
    account: &Arc<Account>,
    name: &str,
    subject: &str,
    reply: Option<Bytes>,
    payload: &[u8],
) {
    let Some(reply) = reply else { return };
    let acc = account.name().to_string();
    let req = if subject.is_empty() {
        match parse::<MsgGetRequest>(payload) {
            Ok(r) => r,
            Err(e) => {
                let msg = status_msg(&reply, 408, &e.description);
                task.send_msg(account, msg);
                return;
            }
        }
    } else {
        MsgGetRequest {
            seq: None,
            last_by_subj: Some(subject.to_string()),
            next_by_subj: None,
        }
    };
    let found = match entry(task, &acc, name) {
        Ok(e) => {
            let st = e.stream.state.locked();
            if st.config.allow_direct {
                find(&st, &req)
            } else {
                None
            }
        }
        Err(_) => None,
    };
    let msg = match found {
        None => status_msg(&reply, 404, "Message Not Found"),
        Some(m) => {
            let seq = m.seq.to_string();
            let ts = rfc3339(m.ts);
            let subj = String::from_utf8_lossy(&m.subject).to_string();
            let h = headers::with(
                &[
                    ("Nats-Stream", name),
                    ("Nats-Subject", &subj),
                    ("Nats-Sequence", &seq),
                    ("Nats-Time-Stamp", &ts),
                ],
                m.headers.as_deref(),
            );
            let mut msg = Message::new(reply.clone(), None, m.payload.clone(), task.shared.origin);
            msg.headers = Some(h);
            msg
        }
    };
    task.send_msg(account, msg);
}

fn status_msg(reply: &Bytes, code: u16, text: &str) -> Message {
    let mut msg = Message::new(reply.clone(), None, Bytes::new(), junction_core::ConnId(0));
    msg.headers = Some(headers::status(code, text, &[]));
    msg
}

/// Copies what a new mirror or source stream should start with (the sources' current
/// messages); later messages arrive through [`crate::service`]'s republish of the sources.
fn sync_sources(_task: &mut Task, _acc: &str, _name: &str) {}

// ---------------------------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct CreateConsumerRequest {
    #[serde(default)]
    stream_name: String,
    config: Option<ConsumerConfig>,
    #[serde(default)]
    action: String,
}

fn consumer_create(
    task: &mut Task,
    acc: &str,
    stream: &str,
    subject_name: Option<&str>,
    subject_filter: Option<String>,
    payload: &[u8],
) -> ApiResult {
    let req: CreateConsumerRequest = parse(payload)?;
    let mut cfg = req.config.ok_or_else(ApiError::consumer_config_required)?;
    if !req.stream_name.is_empty() && req.stream_name != stream {
        return Err(ApiError::stream_mismatch());
    }
    if cfg.filter_subject.is_some() && !cfg.filter_subjects.is_empty() {
        return Err(ApiError::new(
            400,
            10136,
            "consumer cannot have both FilterSubject and FilterSubjects specified",
        ));
    }
    if let Some(f) = subject_filter.as_deref().filter(|f| !f.is_empty()) {
        if cfg.filter_subject.as_deref() != Some(f) {
            return Err(ApiError::consumer_create_name_mismatch());
        }
    }
    if let Some(n) = subject_name {
        match (&cfg.durable_name, &cfg.name) {
            (Some(d), _) if d != n => {
                return Err(ApiError::new(
                    400,
                    10017,
                    "consumer name in subject does not match durable name in request",
                ))
            }
            (_, Some(x)) if x != n => {
                return Err(ApiError::new(
                    400,
                    10017,
                    "consumer name in subject does not match durable name in request",
                ))
            }
            (None, None) => cfg.name = Some(n.to_string()),
            _ => {}
        }
    }
    cfg.normalize()?;
    let e = entry(task, acc, stream)?;
    let name = cfg
        .durable_name
        .clone()
        .or_else(|| cfg.name.clone())
        .unwrap_or_else(|| crate::random_token()[..8].to_string());
    let stream_arc = e.stream.clone();
    {
        let st = stream_arc.state.locked();
        let filters = cfg.filters();
        if !filters.is_empty()
            && !filters
                .iter()
                .all(|f| st.config.subjects.iter().any(|s| subjects::overlap(s, f)))
            && st.config.mirror.is_none()
            && st.config.sources.is_empty()
        {
            return Err(ApiError::filter_not_subset());
        }
        if let Some(ds) = &cfg.deliver_subject {
            if st.config.subjects.iter().any(|s| subjects::overlap(s, ds)) {
                return Err(ApiError::new(
                    400,
                    10081,
                    "consumer deliver subject forms a cycle",
                ));
            }
        }
        if st.config.retention == Retention::WorkQueue {
            if cfg.ack_policy != crate::config::AckPolicy::Explicit {
                return Err(ApiError::wq_requires_explicit_ack());
            }
            if cfg.deliver_policy != DeliverPolicy::All {
                return Err(ApiError::wq_not_deliver_all());
            }
            let others = e.consumers.iter().filter(|(n, _)| **n != name);
            for (_, other) in others {
                let of = other.filters();
                if filters.is_empty() {
                    return Err(ApiError::new(
                        400,
                        10099,
                        "multiple non-filtered consumers not allowed on workqueue stream",
                    ));
                }
                if of.is_empty()
                    || of
                        .iter()
                        .any(|a| filters.iter().any(|b| subjects::overlap(a, b)))
                {
                    return Err(ApiError::wq_not_unique());
                }
            }
        }
        if st.config.max_consumers > 0
            && e.consumers.len() as i64 >= st.config.max_consumers
            && !e.consumers.contains_key(&name)
        {
            return Err(ApiError::max_consumers());
        }
    }
    if let Some(existing) = e.consumers.get_mut(&name) {
        if existing.config == cfg {
            // The same configuration again: nothing changes.
            return Ok(consumer_info(stream, existing));
        }
        if req.action == "create" {
            return Err(ApiError::consumer_exists());
        }
        let old = &existing.config;
        if old.deliver_policy != cfg.deliver_policy
            || old.opt_start_seq != cfg.opt_start_seq
            || old.opt_start_time != cfg.opt_start_time
        {
            return Err(ApiError::new(
                500,
                10012,
                "deliver policy can not be updated",
            ));
        }
        if old.ack_policy != cfg.ack_policy {
            return Err(ApiError::new(500, 10012, "ack policy can not be updated"));
        }
        if old.is_push() != cfg.is_push() {
            return Err(ApiError::new(
                500,
                10012,
                "can not update push consumer to pull based",
            ));
        }
        existing.update(cfg);
        let info = consumer_info(stream, existing);
        task.refresh_interest(acc, stream);
        task.touched.insert((acc.to_string(), stream.to_string()));
        return Ok(info);
    }
    if req.action == "update" {
        return Err(ApiError::consumer_not_found());
    }
    let c = {
        let st = stream_arc.state.locked();
        Consumer::new(name.clone(), stream_arc.clone(), cfg, now_ns(), &st)
    };
    let info = consumer_info(stream, &c);
    let e = entry(task, acc, stream)?;
    e.consumers.insert(name, c);
    task.refresh_interest(acc, stream);
    task.touched.insert((acc.to_string(), stream.to_string()));
    Ok(info)
}

fn seq_info(cseq: u64, sseq: u64, last: Option<i64>) -> Value {
    let mut v = json!({"consumer_seq": cseq, "stream_seq": sseq});
    if let Some(ts) = last.filter(|t| *t > 0) {
        v["last_active"] = json!(rfc3339(ts));
    }
    v
}

fn consumer_info(stream: &str, c: &Consumer) -> Value {
    let st = c.stream.state.locked();
    let (d, f) = (c.delivered(), c.ack_floor());
    let mut v = json!({
        "stream_name": stream,
        "name": c.name,
        "created": rfc3339(c.created),
        "config": c.config,
        "delivered": seq_info(d.0, d.1, Some(c.last_active)),
        "ack_floor": seq_info(f.0, f.1, None),
        "num_ack_pending": c.num_ack_pending(),
        "num_redelivered": c.num_redelivered,
        "num_waiting": c.waiting.len(),
        "num_pending": c.num_pending(&st),
        "ts": rfc3339(now_ns()),
    });
    if c.push_bound {
        v["push_bound"] = json!(true);
    }
    v
}

fn consumer_info_req(task: &mut Task, acc: &str, stream: &str, name: &str) -> ApiResult {
    let e = entry(task, acc, stream)?;
    let c = e
        .consumers
        .get(name)
        .ok_or_else(ApiError::consumer_not_found)?;
    Ok(consumer_info(stream, c))
}

fn consumer_delete(task: &mut Task, acc: &str, stream: &str, name: &str) -> ApiResult {
    entry(task, acc, stream)?;
    if !remove_consumer(task, acc, stream, name) {
        return Err(ApiError::consumer_not_found());
    }
    Ok(json!({"success": true}))
}

fn consumer_list(
    task: &mut Task,
    acc: &str,
    stream: &str,
    payload: &[u8],
    names: bool,
) -> ApiResult {
    let req: ListRequest = parse_opt(payload)?;
    let e = entry(task, acc, stream)?;
    let limit = if names { NAMES_LIMIT } else { LIST_LIMIT };
    let items: Vec<Value> = e
        .consumers
        .values()
        .skip(req.offset)
        .take(limit)
        .map(|c| {
            if names {
                json!(c.name)
            } else {
                consumer_info(stream, c)
            }
        })
        .collect();
    Ok(json!({
        "total": e.consumers.len(),
        "offset": req.offset,
        "limit": limit,
        "consumers": items,
    }))
}

#[derive(Deserialize, Default)]
struct NextRequest {
    #[serde(default)]
    batch: i64,
    #[serde(default)]
    expires: i64,
    #[serde(default)]
    no_wait: bool,
    #[serde(default)]
    max_bytes: i64,
    #[serde(default)]
    idle_heartbeat: i64,
}

/// A pull request from its payload: empty (one message), a number, or JSON.
pub(crate) fn pull_request(
    reply: Bytes,
    payload: &[u8],
    now: Instant,
) -> Result<PullRequest, String> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| e.to_string())?
        .trim();
    let req = if text.is_empty() {
        NextRequest {
            batch: 1,
            ..NextRequest::default()
        }
    } else if let Ok(n) = text.parse::<i64>() {
        NextRequest {
            batch: n,
            ..NextRequest::default()
        }
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    Ok(PullRequest {
        reply,
        batch: req.batch.max(1),
        max_bytes: req.max_bytes.max(0),
        expires: (req.expires > 0).then(|| now + Duration::from_nanos(req.expires as u64)),
        no_wait: req.no_wait,
        heartbeat: (req.idle_heartbeat > 0)
            .then(|| Duration::from_nanos(req.idle_heartbeat as u64)),
        last_sent: now,
        sent: 0,
    })
}

fn next_request(
    task: &mut Task,
    account: &Arc<Account>,
    stream: &str,
    name: &str,
    reply: Option<Bytes>,
    payload: &[u8],
) {
    let Some(reply) = reply else { return };
    let acc = account.name().to_string();
    let status = |code, text: &str| status_msg(&reply, code, text);
    let e = match entry(task, &acc, stream) {
        Ok(e) => e,
        Err(_) => {
            let m = status(404, "No Messages");
            task.send_msg(account, m);
            return;
        }
    };
    let Some(c) = e.consumers.get_mut(name) else {
        let m = status(404, "No Messages");
        task.send_msg(account, m);
        return;
    };
    if c.config.is_push() {
        let m = status(409, "Consumer is push based");
        task.send_msg(account, m);
        return;
    }
    let req = match pull_request(reply.clone(), payload, Instant::now()) {
        Ok(r) => r,
        Err(_) => {
            let m = status(400, "Bad Request");
            task.send_msg(account, m);
            return;
        }
    };
    if c.config.max_batch > 0 && req.batch > c.config.max_batch {
        let text = format!("Exceeded MaxRequestBatch of {}", c.config.max_batch);
        let m = status(409, &text);
        task.send_msg(account, m);
        return;
    }
    if c.config.max_bytes > 0 && req.max_bytes > c.config.max_bytes {
        let text = format!("Exceeded MaxRequestMaxBytes of {}", c.config.max_bytes);
        let m = status(409, &text);
        task.send_msg(account, m);
        return;
    }
    if c.config.max_waiting > 0 && c.waiting.len() as i64 >= c.config.max_waiting {
        let m = status(409, "Exceeded MaxWaiting");
        task.send_msg(account, m);
        return;
    }
    c.last_active = now_ns();
    c.idle_since = None;
    c.waiting.push_back(req);
    task.touched.insert((acc, stream.to_string()));
}

// ---------------------------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------------------------

/// The `/jsz` document.
pub(crate) fn jsz(task: &Task, detail: bool) -> Value {
    let o = &task.shared.opts;
    let (mut mem, mut file, mut streams, mut consumers, mut messages, mut bytes) =
        (0, 0, 0, 0, 0u64, 0u64);
    let mut details = Vec::new();
    let mut names: Vec<&String> = task.accounts.keys().collect();
    names.sort();
    for acc in names {
        let (m, f, s, c) = usage(task, acc);
        mem += m;
        file += f;
        streams += s;
        consumers += c;
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
                    "state": stream_state(e, &st, None, false),
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
                "reserved_memory": 0,
                "reserved_storage": 0,
                "accounts": 1,
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
        "reserved_memory": 0,
        "reserved_storage": 0,
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

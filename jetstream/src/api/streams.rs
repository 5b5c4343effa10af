//! Stream requests: create, update, delete, info, list and names, purge, message get and
//! delete, direct get.

use super::*;

/// The most deleted sequences a stream info request lists (`deleted_details`).
const DELETED_DETAILS: usize = 100_000;

/// A mirror serves direct gets when its origin here does (nats-server takes the origin's
/// `allow_direct` as the mirror's `mirror_direct`, on create and update alike).
fn inherit_mirror_direct(task: &Task, acc: &str, cfg: &mut StreamConfig) {
    let Some(m) = &cfg.mirror else { return };
    if crate::external::api_of(m).is_some() {
        return;
    }
    if let Some(o) = task.accounts.get(acc).and_then(|a| a.streams.get(&m.name)) {
        cfg.mirror_direct = o.stream.state.locked().config.allow_direct;
    }
}

/// A stream's configuration from a create or update request: the name must be the subject's.
pub(super) fn stream_config(name: &str, payload: &[u8]) -> Result<StreamConfig, ApiError> {
    let cfg: StreamConfig = parse(payload)?;
    if cfg.name != name {
        return Err(ApiError::stream_mismatch());
    }
    Ok(cfg)
}

/// The checks of a configuration on its own (nats-server's `checkStreamCfg`), then the one
/// a single server adds: no replicas.
pub(super) fn checked(mut cfg: StreamConfig) -> Result<StreamConfig, ApiError> {
    cfg.normalize()?;
    if cfg.num_replicas > 1 {
        return Err(ApiError::replicas_not_supported());
    }
    Ok(cfg)
}

/// Refuses subjects another stream of the account captures.
pub(super) fn check_overlap(task: &Task, acc: &str, cfg: &StreamConfig) -> Result<(), ApiError> {
    if let Some(a) = task.accounts.get(acc) {
        for (name, e) in &a.streams {
            if *name == cfg.name {
                continue;
            }
            let st = e.stream.state.locked();
            if st.config.subjects.iter().any(|s| {
                cfg.subjects
                    .iter()
                    .any(|n| junction_core::subject::overlaps(s, n))
            }) {
                return Err(ApiError::subject_overlap());
            }
        }
    }
    Ok(())
}

/// Refuses a stream the account's limits forbid: without `max_bytes` where the account
/// requires it, or with more than the account allows one stream of its storage type.
pub(super) fn check_stream_bytes(
    task: &Task,
    acc: &str,
    cfg: &StreamConfig,
) -> Result<(), ApiError> {
    let Some(a) = task.accounts.get(acc) else {
        return Ok(());
    };
    let l = &a.limits;
    if l.tier == crate::Tier::Missing {
        return Ok(());
    }
    let most = match cfg.storage {
        crate::config::Storage::Memory => l.memory_max_stream_bytes,
        crate::config::Storage::File => l.storage_max_stream_bytes,
    };
    if l.max_bytes_required && cfg.max_bytes <= 0 {
        return Err(ApiError::new(
            400,
            10113,
            "account requires a stream config to have max bytes set",
        ));
    }
    if most > 0 && cfg.max_bytes > most {
        return Err(ApiError::new(
            400,
            10122,
            "stream max bytes exceeds account limit max stream bytes",
        ));
    }
    Ok(())
}

/// Refuses a stream in an account whose tiered limits have none for a single server's
/// streams (`R1`).
pub(super) fn check_tier(task: &Task, acc: &str) -> Result<(), ApiError> {
    match task.accounts.get(acc) {
        Some(a) if a.limits.tier == crate::Tier::Missing => Err(ApiError::new(
            400,
            10120,
            "no JetStream default or applicable tiered limit present",
        )),
        _ => Ok(()),
    }
}

/// Refuses a stream whose `max_bytes` the account's or the server's limit cannot reserve,
/// with what the other streams of that storage type reserve (a stream without `max_bytes`
/// reserves one byte), as nats-server does. `replacing`: the stream being updated, whose own
/// reservation does not count.
pub(super) fn check_resources(
    task: &Task,
    acc: &str,
    cfg: &StreamConfig,
    replacing: Option<&str>,
) -> Result<(), ApiError> {
    use crate::config::Storage;
    let o = &task.shared.opts;
    let (server_limit, exceeded) = match cfg.storage {
        Storage::Memory => (
            o.max_memory,
            ApiError::new(500, 10028, "insufficient memory resources available"),
        ),
        Storage::File => (
            o.max_store,
            ApiError::new(500, 10047, "insufficient storage resources available"),
        ),
    };
    let add = if cfg.max_bytes < 0 { 1 } else { cfg.max_bytes };
    let (mut account_reserved, mut server_reserved) = (0i64, 0i64);
    for (name, a) in &task.accounts {
        for (sname, e) in &a.streams {
            if name == acc && replacing == Some(sname.as_str()) {
                continue;
            }
            let st = e.stream.state.locked();
            if st.config.storage == cfg.storage && st.config.max_bytes > 0 {
                server_reserved = server_reserved.saturating_add(st.config.max_bytes);
                if name == acc {
                    account_reserved = account_reserved.saturating_add(st.config.max_bytes);
                }
            }
        }
    }
    let account_limit = task.accounts.get(acc).map_or(-1, |a| match cfg.storage {
        Storage::Memory => a.memory.limit(),
        Storage::File => a.storage.limit(),
    });
    if account_limit >= 0 && account_reserved.saturating_add(add) > account_limit {
        return Err(exceeded);
    }
    if server_limit >= 0 && server_reserved.saturating_add(add) > server_limit {
        return Err(exceeded);
    }
    Ok(())
}

/// Refuses a stream name with a path separator (nats-server names a directory after it).
pub(super) fn check_path(name: &str) -> Result<(), ApiError> {
    if name.contains(['/', '\\']) {
        return Err(ApiError::new(
            400,
            10128,
            "Stream name can not contain path separators",
        ));
    }
    Ok(())
}

/// Creates a stream, with nats-server 2.10's checks in its order: the request, the account's
/// limits, the configuration, then an existing stream of that name and the other streams'
/// subjects.
pub(super) fn stream_create(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let cfg = stream_config(name, payload)?;
    check_path(name)?;
    if cfg.sealed {
        return Err(ApiError::invalid_config(
            "stream configuration for create can not be sealed",
        ));
    }
    if cfg.mirror_direct && cfg.mirror.is_none() {
        return Err(ApiError::invalid_config(
            "stream has no mirror but does have mirror direct",
        ));
    }
    check_tier(task, acc)?;
    let a = task
        .accounts
        .get(acc)
        .ok_or_else(ApiError::not_enabled_for_account)?;
    // 0 (as a JWT without the claim says) and -1 are no limit, as in nats-server.
    let others = a.streams.len() - usize::from(a.streams.contains_key(name));
    if a.limits.max_streams > 0 && others as i64 >= a.limits.max_streams {
        return Err(ApiError::max_streams());
    }
    let acc_max = a.limits.max_consumers;
    if cfg.max_consumers > 0 && acc_max > 0 && cfg.max_consumers > acc_max {
        return Err(ApiError::max_consumers());
    }
    // nats-server reserves the bytes before it checks the configuration, for the storage the
    // request names: one that names none has not got one yet, and passes (the checks after
    // it then speak first).
    let named_storage = serde_json::from_slice::<Value>(payload)
        .ok()
        .is_some_and(|v| v.get("storage").is_some());
    let new = !a.streams.contains_key(name);
    if named_storage && new {
        check_resources(task, acc, &cfg, None)?;
    }
    let mut cfg = checked(cfg)?;
    inherit_mirror_direct(task, acc, &mut cfg);
    check_stream_bytes(task, acc, &cfg)?;
    // Checked again with the defaults filled in, as nats-server checks again once it adds the
    // stream (an explicit `max_bytes: 0` reserves nothing above and one byte here).
    if new {
        check_resources(task, acc, &cfg, None)?;
    }
    let a = &task.accounts[acc];
    if let Some(e) = a.streams.get(name) {
        let st = e.stream.state.locked();
        if st.config == cfg {
            drop(st);
            // An idempotent create says it created, as nats-server's single server does.
            let mut info = stream_info(e, false);
            info["did_create"] = json!(true);
            return Ok(info);
        }
        return Err(ApiError::stream_name_exists());
    }
    check_overlap(task, acc, &cfg)?;
    let account = a.account.clone();
    let uid = task.shared.new_uid();
    let now = now_ns();
    // A stream set to start at `first_seq` begins as if emptied after the sequence before it.
    let st = StreamState::new(cfg.clone(), now, cfg.first_seq.saturating_sub(1), 0);
    let stream = task.make_stream(&account, uid, st);
    {
        let mut st = stream.state.locked();
        stream.save_meta(&mut st);
    }
    let e = StreamEntry {
        stream,
        consumers: BTreeMap::new(),
    };
    let mut info = stream_info(&e, false);
    info["did_create"] = json!(true);
    task.accounts
        .get_mut(acc)
        .expect("account exists")
        .streams
        .insert(name.to_string(), e);
    sync_sources(task, acc, name);
    let e = task.accounts[acc]
        .streams
        .get(name)
        .expect("inserted above");
    task.source_info(acc, e, &mut info);
    task.stream_advisory(&account, name, Action::Create);
    Ok(info)
}

/// Updates a stream, with nats-server 2.10's checks in its order: the configuration, the
/// name, the stream, what an update may change, the limits, the consumers, the subjects.
pub(super) fn stream_update(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let cfg: StreamConfig = parse(payload)?;
    let mut cfg = checked(cfg)?;
    inherit_mirror_direct(task, acc, &mut cfg);
    if cfg.name != name {
        return Err(ApiError::stream_mismatch());
    }
    let e = entry(task, acc, name)?;
    let stream = e.stream.clone();
    let subjects_changed = {
        let st = stream.state.locked();
        st.config.check_update(&mut cfg)?;
        st.config.subjects != cfg.subjects
    };
    check_tier(task, acc)?;
    check_stream_bytes(task, acc, &cfg)?;
    check_resources(task, acc, &cfg, Some(name))?;
    let e = entry(task, acc, name)?;
    check_consumer_limits(e, &cfg)?;
    check_overlap(task, acc, &cfg)?;
    {
        let mut st = stream.state.locked();
        st.config = cfg.clone();
        stream.save_meta(&mut st);
    }
    // Tighter limits apply at once.
    stream.expire(now_ns());
    enforce_now(&stream);
    if subjects_changed {
        task.subscribe_stream(&stream, &cfg.subjects);
    }
    task.stream_advisory(&stream.account, name, Action::Modify);
    let e = entry(task, acc, name)?;
    let mut info = stream_info(e, false);
    let e = task.accounts[acc].streams.get(name).expect("found above");
    task.source_info(acc, e, &mut info);
    Ok(info)
}

/// Refuses new consumer limits that consumers of the stream already exceed (as nats-server
/// does; a limit of 0, no limit, is never exceeded).
fn check_consumer_limits(e: &StreamEntry, cfg: &StreamConfig) -> Result<(), ApiError> {
    let old = e.stream.state.locked().config.consumer_limits;
    let new = cfg.consumer_limits;
    let changed = (new.inactive_threshold > 0 && new.inactive_threshold != old.inactive_threshold)
        || (new.max_ack_pending > 0 && new.max_ack_pending != old.max_ack_pending);
    if !changed {
        return Ok(());
    }
    let over: Vec<&str> = e
        .consumers
        .iter()
        .filter(|(_, c)| {
            (new.inactive_threshold > 0 && c.config.inactive_threshold > new.inactive_threshold)
                || (new.max_ack_pending > 0 && c.config.max_ack_pending > new.max_ack_pending)
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if over.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        500,
        10069,
        format!("change to limits violates consumers: {}", over.join(", ")),
    ))
}

/// Applies the count, size and per-subject limits after an update.
pub(super) fn enforce_now(stream: &Arc<crate::stream::Stream>) {
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
        bytes -= st.entry(seq).map_or(0, |m| m.stored_size());
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
    task.consumer_advisory(&account, stream, name, Action::Delete);
    task.refresh_interest(acc, stream);
    release_interest(task, acc, stream);
    true
}

/// Interest retention: removes what every remaining consumer has acknowledged (everything,
/// when none remains).
pub(super) fn release_interest(task: &mut Task, acc: &str, stream: &str) {
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
            st.entry(*seq)
                .is_some_and(|m| e.consumers.values().all(|c| c.has_acked(*seq, &m.subject)))
        })
        .collect();
    s.remove_many(&mut st, done);
}

pub(super) fn stream_delete(task: &mut Task, acc: &str, name: &str) -> ApiResult {
    let e = entry(task, acc, name)?;
    let names: Vec<String> = e.consumers.keys().cloned().collect();
    for c in names {
        remove_consumer(task, acc, name, &c);
    }
    let a = task.accounts.get_mut(acc).expect("account exists");
    let e = a.streams.remove(name).expect("stream exists");
    e.stream.state.locked().release_budget();
    for sub in e.stream.subs.locked().drain(..) {
        sub.close();
        e.stream.account.unsubscribe(&sub);
    }
    if let Some(s) = e.stream.durable() {
        for op in persist::delete_stream_ops(e.stream.uid) {
            s.submit(op);
        }
    }
    task.stream_advisory(&e.stream.account, name, Action::Delete);
    Ok(json!({"success": true}))
}

/// `$JS.API.ACCOUNT.PURGE.<name>` from the system account: every stream of `name` is deleted
/// with its consumers, as by stream deletes (advisories included), whether the account has
/// JetStream now or lost it while running. As from nats-server, the answer says `initiated`,
/// for an account without streams or unknown too.
pub(crate) fn account_purge(task: &mut Task, name: &str) -> ApiResult {
    // A disabled account's streams are deleted where stream deletes find them, then it goes
    // back to being disabled.
    let disabled = task.disabled.remove(name);
    let was_disabled = disabled.is_some();
    if let Some(a) = disabled {
        task.accounts.insert(name.to_string(), a);
    }
    let streams: Vec<String> = task
        .accounts
        .get(name)
        .map(|a| a.streams.keys().cloned().collect())
        .unwrap_or_default();
    tracing::info!(
        account = %name,
        streams = streams.len(),
        has_account = task.accounts.contains_key(name),
        "Purge request for account"
    );
    let mut result = Ok(json!({"initiated": true}));
    for stream in &streams {
        if let Err(e) = stream_delete(task, name, stream) {
            result = Err(e);
            break;
        }
    }
    if was_disabled {
        if let Some(a) = task.accounts.remove(name) {
            task.disabled.insert(name.to_string(), a);
        }
    }
    result
}

#[derive(Deserialize, Default)]
struct InfoRequest {
    #[serde(default)]
    subjects_filter: Option<String>,
    #[serde(default)]
    deleted_details: bool,
    #[serde(default)]
    offset: usize,
}

/// The most subjects one stream info lists (`subjects_filter`), as nats-server pages them.
const SUBJECT_DETAILS: usize = 100_000;

pub(super) fn stream_info_req(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    let req: InfoRequest = parse_opt(payload)?;
    let e = entry(task, acc, name)?;
    let mut info = stream_info(e, req.deleted_details);
    // The subjects and their counts, a page of at most SUBJECT_DETAILS (sorted when there is
    // more than one page), with the paging fields every info answer has (0 without subjects).
    let (mut total, mut offset, mut limit) = (0, 0, 0);
    if let Some(f) = req.subjects_filter.as_deref().filter(|f| !f.is_empty()) {
        let st = e.stream.state.locked();
        let mut subjects: Vec<(&Bytes, usize)> = st
            .subjects
            .iter()
            .filter(|(s, _)| junction_core::subject::matches(f.as_bytes(), s))
            .map(|(s, q)| (s, q.len()))
            .collect();
        if !subjects.is_empty() {
            (total, offset, limit) = (subjects.len(), req.offset, SUBJECT_DETAILS);
            if offset > 0 || total > SUBJECT_DETAILS {
                subjects.sort_unstable();
                subjects.drain(..offset.min(total));
                subjects.truncate(SUBJECT_DETAILS);
            }
            let page: serde_json::Map<String, Value> = subjects
                .into_iter()
                .map(|(s, n)| (String::from_utf8_lossy(s).into_owned(), json!(n)))
                .collect();
            if !page.is_empty() {
                info["state"]["subjects"] = Value::Object(page);
            }
        }
    }
    info["total"] = json!(total);
    info["offset"] = json!(offset);
    info["limit"] = json!(limit);
    let e = task.accounts[acc].streams.get(name).expect("found above");
    task.source_info(acc, e, &mut info);
    Ok(info)
}

pub(super) fn stream_state(e: &StreamEntry, st: &StreamState, deleted: bool) -> Value {
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
            // The first DELETED_DETAILS of them (`num_deleted` counts all): the stream keeps its
            // gaps as ranges, and one request must not make a list of millions from them.
            state["deleted"] = json!(st.holes().iter().take(DELETED_DETAILS).collect::<Vec<_>>());
        }
    }
    state
}

pub(super) fn stream_info(e: &StreamEntry, deleted: bool) -> Value {
    let st = e.stream.state.locked();
    json!({
        "config": st.config,
        "created": rfc3339(st.created),
        "state": stream_state(e, &st, deleted),
        "ts": rfc3339(now_ns()),
    })
}

pub(super) fn stream_list(task: &mut Task, acc: &str, payload: &[u8], names: bool) -> ApiResult {
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
                .any(|s| junction_core::subject::overlaps(s, f)),
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
                let mut info = stream_info(e, false);
                task.source_info(acc, e, &mut info);
                info
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

pub(super) fn stream_purge(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
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
    // Sequences stay within i64's range (as `first_seq` does): a compaction past the end
    // moves the stream's next sequence there.
    if (req.seq.is_some() && req.keep.is_some()) || req.seq.is_some_and(|s| s > i64::MAX as u64) {
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
    let st = e.stream.state.locked();
    crate::consumer::take_purge(e.consumers.values_mut(), &st, filter);
    drop(st);
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

impl MsgGetRequest {
    /// What nats-server refuses in a get request: nothing asked (`Some(true)`, "empty"), or a
    /// sequence with a last subject, or a last and a next subject (`Some(false)`, "bad").
    fn refused(&self) -> Option<bool> {
        let seq = self.seq.unwrap_or(0) > 0;
        let last = self.last_by_subj.as_deref().is_some_and(|s| !s.is_empty());
        let next = self.next_by_subj.as_deref().is_some_and(|s| !s.is_empty());
        if !seq && !last && !next {
            Some(true)
        } else if last && (seq || next) {
            Some(false)
        } else {
            None
        }
    }
}

/// The message a get request names.
fn find(st: &StreamState, req: &MsgGetRequest) -> Option<Arc<crate::stream::StoredMsg>> {
    if let Some(subj) = req.last_by_subj.as_deref().filter(|s| !s.is_empty()) {
        return st.last_by_subject(subj);
    }
    if let Some(subj) = req.next_by_subj.as_deref().filter(|s| !s.is_empty()) {
        let seq = st.next_matching(req.seq.unwrap_or(0).max(1), &[subj.to_string()])?;
        return st.load(seq);
    }
    st.load(req.seq?)
}

pub(super) fn msg_get(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
    if payload.trim_ascii().is_empty() {
        return Err(ApiError::bad_request());
    }
    let req: MsgGetRequest = parse(payload)?;
    if req.refused().is_some() {
        return Err(ApiError::bad_request());
    }
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

pub(super) fn msg_delete(task: &mut Task, acc: &str, name: &str, payload: &[u8]) -> ApiResult {
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
        // nats-server's file store fails a sequence it holds no block for (500, with the
        // store's error); its memory store and a gap inside the stream say "not found".
        if st.config.storage == crate::config::Storage::File {
            if req.seq > st.last_seq {
                return Err(ApiError::delete_failed("stream store EOF"));
            }
            if req.seq < st.first_seq() {
                return Err(ApiError::delete_failed("no message found"));
            }
        }
        return Err(ApiError::sequence_not_found(req.seq));
    }
    Ok(json!({"success": true}))
}

/// `$JS.API.DIRECT.GET.<stream>[.<subject>]`: the message itself, with headers saying where it
/// came from, or a 404 status. Served by the stream's own subscription on the requester's task
/// ([`crate::sinks::DirectSink`]); `None` when the stream does not allow direct gets (nats-server
/// does not answer then).
pub(crate) fn direct_reply(
    stream: &Stream,
    subject: &str,
    reply: &Bytes,
    payload: &[u8],
    origin: junction_core::ConnId,
) -> Option<Message> {
    // nats-server's answers to requests it cannot serve (made before the lock is taken, and
    // given only by a stream that serves direct gets).
    let asked = if subject.is_empty() {
        match serde_json::from_slice::<MsgGetRequest>(payload) {
            _ if payload.is_empty() => Err("Empty Request"),
            Err(_) => Err("Malformed Request"),
            Ok(r) => match r.refused() {
                Some(true) => Err("Empty Request"),
                Some(false) => Err("Bad Request"),
                None => Ok(r),
            },
        }
    } else if !payload.is_empty() {
        // The subject-in-token form takes no payload.
        Err("Bad Request")
    } else {
        Ok(MsgGetRequest {
            seq: None,
            last_by_subj: Some(subject.to_string()),
            next_by_subj: None,
        })
    };
    let found = {
        let st = stream.state.locked();
        if !st.config.allow_direct {
            return None;
        }
        match asked {
            Ok(req) => find(&st, &req),
            Err(why) => return Some(status_msg(reply, 408, why)),
        }
    };
    Some(match found {
        None => status_msg(reply, 404, "Message Not Found"),
        Some(m) => {
            let seq = m.seq.to_string();
            let ts = rfc3339(m.ts);
            let subj = String::from_utf8_lossy(&m.subject);
            let h = headers::with(
                &[
                    ("Nats-Stream", stream.name.as_str()),
                    ("Nats-Subject", &subj),
                    ("Nats-Sequence", &seq),
                    ("Nats-Time-Stamp", &ts),
                ],
                m.headers.as_deref(),
            );
            let mut msg = Message::new(reply.clone(), None, m.payload.clone(), origin);
            msg.headers = Some(h);
            msg
        }
    })
}

pub(super) fn status_msg(reply: &Bytes, code: u16, text: &str) -> Message {
    let mut msg = Message::new(reply.clone(), None, Bytes::new(), junction_core::ConnId(0));
    msg.headers = Some(headers::status(code, text, &[]));
    msg
}

/// A new mirror or sourcing stream starts copying what its sources already hold.
pub(super) fn sync_sources(task: &mut Task, acc: &str, name: &str) {
    let Ok(e) = entry(task, acc, name) else {
        return;
    };
    let sources: Vec<String> = {
        let st = e.stream.state.locked();
        st.config
            .mirror
            .iter()
            .chain(st.config.sources.iter())
            .map(|s| s.name.clone())
            .collect()
    };
    for s in sources {
        task.touched.insert((acc.to_string(), s));
    }
}

//! Stream snapshots and restores (`$JS.API.STREAM.SNAPSHOT.<stream>`,
//! `$JS.API.STREAM.RESTORE.<stream>`), with nats-server's exchange, so that the `nats` CLI's
//! `stream backup` and `stream restore` drive them:
//!
//! - A snapshot request names a `deliver_subject`. The answer carries the stream's config and
//!   state; then chunks of the snapshot go to the deliver subject, each with a reply subject
//!   `$JS.SNAPSHOT.ACK.<stream>.<id>.<chunk size>.<chunk number>` the client answers to let
//!   more go (at most `window_size`, by default 8 MiB, unanswered). An empty message with
//!   status 204 ends it; 408 `No Flow Response` (2 s without an answer while the window is
//!   full) or `No Interest` (nobody listens on the deliver subject) ends it early.
//! - A restore request carries the config (and the snapshot's state); the answer names a
//!   `deliver_subject` `$JS.SNAPSHOT.RESTORE.<stream>.<id>` to send the chunks to, each as a
//!   request answered with an empty message. An empty chunk ends the upload; its answer is a
//!   stream create response (the restored stream's info, or 500 10062 `restore failed: ...`).
//!   A restore that hears nothing for 5 s is dropped.
//!
//! What the chunks hold is [`format`]'s. The upload is staged in a file beside the store and
//! read twice: once to check all of it, then to build the stream, so that a damaged snapshot
//! leaves nothing behind. The stream takes its subscriptions only once its messages are in.

use std::collections::HashMap;
use std::io::Write;

use junction_core::Subscription;

use super::*;
use crate::sinks::{Kind, ServiceSink};

pub mod format;

use format::{Record, Writer};

/// Unanswered snapshot bytes, unless the request asks for another window.
const WINDOW: usize = 8 * 1024 * 1024;
/// Snapshot chunks, unless the request asks for another size; at most [`MAX_CHUNK`].
const CHUNK: usize = 128 * 1024;
const MAX_CHUNK: usize = 1024 * 1024;
/// How long a full window waits for an answer, and a snapshot for its listener.
const FLOW_WAIT: Duration = Duration::from_secs(2);
/// How long a restore waits for its next chunk.
const RESTORE_IDLE: Duration = Duration::from_secs(5);
/// The Snappy framing's block: the encoder gives out nothing before it holds this much.
const BLOCK: usize = 64 * 1024;
/// Snapshot bytes made per snapshot per round of the task (more: another round).
const ROUND_BYTES: usize = 1024 * 1024;

/// Restores staged at once (each holds a file open), in all and by one account; more are
/// refused.
const MAX_RESTORES: usize = 64;
const MAX_ACCOUNT_RESTORES: usize = 8;
/// How the restores' staged uploads are named (then an id and `.partial`).
const STAGED: &str = "junction-restore-";
const ACK_PREFIX: &str = "$JS.SNAPSHOT.ACK.";
const RESTORE_PREFIX: &str = "$JS.SNAPSHOT.RESTORE.";

/// The snapshots being sent and the restores being received.
#[derive(Default)]
pub(crate) struct Backups {
    snapshots: Vec<Snapshot>,
    restores: HashMap<String, Restore>,
    /// The restores being built beside the task: account and stream names.
    building: Vec<(String, String)>,
}

impl Backups {
    /// Restores of `account` staged or being built, and whether one of them is of `stream`.
    fn of(&self, account: &str, stream: &str) -> (usize, bool) {
        let staged = self
            .restores
            .values()
            .map(|r| (r.account.name(), r.config.name.as_str()));
        let building = self.building.iter().map(|(a, s)| (a.as_str(), s.as_str()));
        let mine: Vec<&str> = staged
            .chain(building)
            .filter(|(a, _)| *a == account)
            .map(|(_, s)| s)
            .collect();
        (mine.len(), mine.contains(&stream))
    }
}

struct Snapshot {
    account: Arc<Account>,
    stream: Arc<Stream>,
    deliver: Bytes,
    /// `$JS.SNAPSHOT.ACK.<stream>.<id>`, before the chunk's size and number.
    ack: String,
    subs: Vec<Arc<Subscription>>,
    chunk: usize,
    window: usize,
    /// Bytes sent and not answered.
    out: usize,
    sent: u64,
    /// The next stream sequence to write, and the last one the snapshot holds.
    next: u64,
    last: u64,
    w: Writer,
    ended: bool,
    /// A message could not be read: the snapshot ends with an error.
    failed: bool,
    started: Instant,
    /// For the advisories: when it started (RFC 3339) and who asked.
    start: String,
    client: Option<Value>,
    /// When an answer last came (or the window last had room).
    heard: Instant,
    listened: bool,
}

struct Restore {
    account: Arc<Account>,
    /// For the advisories: when it started (RFC 3339) and who asked.
    start: String,
    client: Option<Value>,
    config: StreamConfig,
    subs: Vec<Arc<Subscription>>,
    path: std::path::PathBuf,
    file: std::fs::File,
    bytes: u64,
    heard: Instant,
}

impl Drop for Restore {
    fn drop(&mut self) {
        for s in self.subs.drain(..) {
            self.account.unsubscribe(&s);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for s in self.subs.drain(..) {
            self.account.unsubscribe(&s);
        }
    }
}

#[derive(Deserialize)]
struct SnapshotRequest {
    #[serde(default)]
    deliver_subject: String,
    #[serde(default)]
    no_consumers: bool,
    #[serde(default)]
    chunk_size: i64,
    #[serde(default)]
    window_size: i64,
}

#[derive(Deserialize)]
struct RestoreRequest {
    config: Value,
}

fn subscribe(task: &Task, account: &Arc<Account>, subject: String) -> Vec<Arc<Subscription>> {
    let sink: Arc<dyn junction_core::Sink> = Arc::new(ServiceSink {
        shared: task.shared.clone(),
        account: account.clone(),
        kind: Kind::Backup,
    });
    account.subscribe_service(task.shared.origin, [Bytes::from(subject)], &sink)
}

/// Removes the restores' staged uploads a stop left behind (a restore does not outlive its
/// server: its client must start it again).
pub(crate) fn clear_staging(dir: &str) {
    if dir.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(staging_dir(dir)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(STAGED) && name.ends_with(".partial") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Where restores stage their uploads: the store's directory, or the system's temporary one.
fn staging_dir(store_dir: &str) -> std::path::PathBuf {
    match store_dir {
        "" => std::env::temp_dir(),
        d => std::path::PathBuf::from(d),
    }
}

/// `$JS.API.STREAM.SNAPSHOT.<name>`: answers with the stream's config and state, then sends the
/// snapshot as the task's rounds go.
pub(super) fn snapshot_request(
    task: &mut Task,
    account: &Arc<Account>,
    name: &str,
    payload: &[u8],
    origin: junction_core::ConnId,
) -> ApiResult {
    required(payload)?;
    let acc = account.name();
    let e = entry(task, acc, name)?;
    let req: SnapshotRequest = parse(payload)?;
    let deliver = req.deliver_subject;
    if !junction_core::subject::is_valid_subject(deliver.as_bytes()) {
        return Err(ApiError::new(400, 10015, "deliver subject not valid"));
    }
    let stream = e.stream.clone();
    let mut w = Writer::default();
    let (answer, next, last) = {
        let st = stream.state.locked();
        w.meta(&json!({
            "config": st.config,
            "created": st.created,
            "first_seq": st.first_seq(),
            "last_seq": st.last_seq,
            "last_ts": st.last_ts,
        }));
        let answer = json!({"config": st.config, "state": stream_state(e, &st, false)});
        (answer, st.first_seq(), st.last_seq)
    };
    if !req.no_consumers {
        for (cname, c) in &e.consumers {
            if c.is_durable() {
                w.consumer(cname, &c.record());
            }
        }
    }
    let id = crate::random_token();
    let ack = format!("{ACK_PREFIX}{name}.{id}");
    let subs = subscribe(task, account, format!("{ack}.>"));
    let chunk = match req.chunk_size {
        n if n <= 0 => CHUNK,
        n => (n as usize).min(MAX_CHUNK),
    };
    let window = match req.window_size {
        n if n <= 0 => WINDOW,
        n => (n as usize).max(chunk),
    };
    let now = Instant::now();
    let client = task.client_info(account, origin);
    let start = rfc3339(now_ns());
    let created = json!({"state": answer["state"], "client": client});
    task.backup_advisory(account, "SNAPSHOT_CREATE", name, created);
    task.backups.snapshots.push(Snapshot {
        account: account.clone(),
        stream,
        deliver: Bytes::from(deliver),
        ack,
        subs,
        chunk,
        window,
        out: 0,
        sent: 0,
        next,
        last,
        w,
        ended: false,
        failed: false,
        started: now,
        start,
        client,
        heard: now,
        listened: false,
    });
    // The first chunks go after the answer, in the next round.
    task.shared.notify.notify_one();
    Ok(answer)
}

/// `$JS.API.STREAM.RESTORE.<name>`: checks the config as a create would and names the subject
/// the snapshot's chunks go to.
pub(super) fn restore_request(
    task: &mut Task,
    account: &Arc<Account>,
    name: &str,
    payload: &[u8],
    origin: junction_core::ConnId,
) -> ApiResult {
    required(payload)?;
    let acc = account.name();
    let req: RestoreRequest = parse(payload)?;
    let mut config = req.config;
    if config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        config["name"] = json!(name);
    }
    let cfg: StreamConfig = serde_json::from_value(config).map_err(ApiError::invalid_json)?;
    check_path(&cfg.name)?;
    let cfg = checked(cfg)?;
    check_tier(task, acc)?;
    check_stream_bytes(task, acc, &cfg)?;
    check_resources(task, acc, &cfg, None)?;
    let (here, restoring) = task.backups.of(acc, &cfg.name);
    if task
        .accounts
        .get(acc)
        .is_some_and(|a| a.streams.contains_key(&cfg.name))
        || restoring
    {
        return Err(ApiError::new(
            400,
            10130,
            "stream name already in use, cannot restore",
        ));
    }
    let all = task.backups.restores.len() + task.backups.building.len();
    if all >= MAX_RESTORES || here >= MAX_ACCOUNT_RESTORES {
        tracing::warn!(
            account = %acc,
            "JetStream: {all} restores are under way ({here} of this account); another is refused"
        );
        return Err(ApiError::new(
            500,
            10072,
            "JetStream unable to open temp storage for restore",
        ));
    }
    let id = crate::random_token();
    let dir = staging_dir(&task.shared.opts.store_dir);
    let path = dir.join(format!("{STAGED}{id}.partial"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "JetStream: no room to stage a restore");
            ApiError::new(500, 10072, "JetStream unable to open temp storage for restore")
        })?;
    let deliver = format!("{RESTORE_PREFIX}{}.{id}", cfg.name);
    let subs = subscribe(task, account, deliver.clone());
    tracing::info!(account = %acc, stream = %cfg.name, "JetStream: starting a restore");
    let client = task.client_info(account, origin);
    let created = json!({"client": client});
    task.backup_advisory(account, "RESTORE_CREATE", &cfg.name, created);
    task.backups.restores.insert(
        deliver.clone(),
        Restore {
            account: account.clone(),
            start: rfc3339(now_ns()),
            client,
            config: cfg,
            subs,
            path,
            file,
            bytes: 0,
            heard: Instant::now(),
        },
    );
    Ok(json!({"deliver_subject": deliver}))
}

/// A message on a snapshot's answer subject or a restore's chunk subject.
pub(crate) fn input(
    task: &mut Task,
    account: &Arc<Account>,
    subject: &[u8],
    reply: Option<Bytes>,
    payload: Bytes,
) {
    let Ok(subject) = std::str::from_utf8(subject) else {
        return;
    };
    if subject.starts_with(ACK_PREFIX) {
        // `<ack>.<size>.<number>`: the chunk's bytes are answered.
        let mut t = subject.rsplitn(3, '.');
        let (_, size, ack) = (t.next(), t.next(), t.next());
        let size: usize = size.and_then(|s| s.parse().ok()).unwrap_or(0);
        if let Some(s) = task
            .backups
            .snapshots
            .iter_mut()
            .find(|s| Some(s.ack.as_str()) == ack && s.account.name() == account.name())
        {
            s.out = s.out.saturating_sub(size);
            s.heard = Instant::now();
        }
        pump(task);
        return;
    }
    let budgets = match task.backups.restores.get(subject) {
        Some(r) => restore_budgets(task, r),
        None => return,
    };
    let r = task.backups.restores.get_mut(subject).expect("found above");
    if r.account.name() != account.name() {
        return;
    }
    let Some(reply) = reply else {
        tracing::warn!(stream = %r.config.name, "JetStream: a restore chunk came without a reply subject; the restore is dropped");
        if let Some(r) = task.backups.restores.remove(subject) {
            restore_complete(task, &r);
        }
        return;
    };
    r.heard = Instant::now();
    if payload.is_empty() {
        let r = task.backups.restores.remove(subject).expect("found above");
        finish_restore(task, r, reply);
        return;
    }
    r.bytes += payload.len() as u64;
    // The upload may not pass what the account, or the server, may still hold.
    let over = budgets.iter().any(|b| b.would_exceed(r.bytes));
    let failed = if over {
        Some(ApiError::new(
            500,
            10062,
            "restore failed: insufficient resources",
        ))
    } else if let Err(e) = r.file.write_all(&payload) {
        tracing::warn!(stream = %r.config.name, error = %e, "JetStream: staging a restore failed");
        Some(ApiError::new(500, 10062, format!("restore failed: {e}")))
    } else {
        None
    };
    let origin = task.shared.origin;
    let body = match failed {
        Some(e) => {
            if let Some(r) = task.backups.restores.remove(subject) {
                restore_complete(task, &r);
            }
            create_response(Err(e))
        }
        None => Bytes::new(),
    };
    task.send_msg(account, Message::new(reply, None, body, origin));
}

/// Tells that a restore ended (built, or failed: as nats-server, not when it is dropped for
/// hearing nothing).
fn restore_complete(task: &mut Task, r: &Restore) {
    let body = json!({
        "start": r.start,
        "end": rfc3339(now_ns()),
        "bytes": r.bytes,
        "client": r.client,
    });
    task.backup_advisory(&r.account, "RESTORE_COMPLETE", &r.config.name, body);
}

/// What a restore's stream may take from: the account's bytes of its storage type, and the
/// server's.
fn restore_budgets(task: &Task, r: &Restore) -> Vec<Arc<crate::stream::Budget>> {
    use crate::config::Storage;
    let a = task.accounts.get(r.account.name());
    let (account, server) = match r.config.storage {
        Storage::File => (a.map(|a| a.storage.clone()), &task.shared.server_storage),
        Storage::Memory => (a.map(|a| a.memory.clone()), &task.shared.server_memory),
    };
    account.into_iter().chain([server.clone()]).collect()
}

/// What a staged snapshot said about its stream.
#[derive(Default)]
struct Meta {
    created: i64,
    first: u64,
    last: u64,
    last_ts: i64,
    msgs: u64,
}

/// A restore whose stream was built beside the task, back for the task to serve it.
pub(crate) struct Rebuilt {
    restore: Restore,
    reply: Bytes,
    stream: Arc<Stream>,
    result: Result<(Meta, Vec<(String, persist::ConsumerRecord)>), String>,
}

fn create_response(result: ApiResult) -> Bytes {
    response_body("stream_create_response", result)
}

/// Builds the stream of an uploaded snapshot on a thread of its own (reading and storing a
/// large stream takes long, and the task serves every stream meanwhile); the stream is the
/// task's once [`restored`] takes it back.
fn finish_restore(task: &mut Task, restore: Restore, reply: Bytes) {
    let uid = task.shared.new_uid();
    let mut st = StreamState::new(restore.config.clone(), now_ns(), 0, 0);
    st.building = true;
    let stream = task.build_stream(&restore.account, uid, st);
    let names = (
        restore.account.name().to_string(),
        restore.config.name.clone(),
    );
    task.backups.building.push(names.clone());
    let shared = task.shared.clone();
    let account = restore.account.clone();
    let answer_to = reply.clone();
    let budgets = restore_budgets(task, &restore);
    let spawned = std::thread::Builder::new()
        .name("junction-restore".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rebuild(&restore.file, &stream, &budgets)
            }))
            .unwrap_or_else(|_| Err("the restore thread failed".into()));
            let done = Rebuilt {
                restore,
                reply,
                stream,
                result,
            };
            shared.push(crate::service::Input::Restored(Box::new(done)));
        });
    if let Err(e) = spawned {
        // The restore went with the closure: its staged file is gone, its stream never held
        // anything.
        tracing::warn!(error = %e, "JetStream: no thread for a restore");
        task.backups.building.retain(|b| *b != names);
        let failed = ApiError::new(500, 10062, format!("restore failed: {e}"));
        let origin = task.shared.origin;
        let body = create_response(Err(failed));
        task.send_msg(&account, Message::new(answer_to, None, body, origin));
    }
}

/// The widest span of sequences a restore takes: its gaps cost the stream 8 bytes per 64
/// sequences (128 MiB at this span), as they cost the stream it was taken from. They are
/// counted with the bytes that must fit the account's and server's limits.
const MAX_SPAN: u64 = 1 << 30;

/// Whether a consumer's record fits a stream whose sequences end at `last`.
fn record_fits(name: &str, rec: &persist::ConsumerRecord, last: u64) -> bool {
    let named = rec
        .config
        .as_ref()
        .is_some_and(|c| c.durable_name.as_deref().or(c.name.as_deref()) == Some(name));
    let (dc, ds) = rec.delivered;
    let (ac, as_) = rec.ack_floor;
    named
        && rec.redelivered <= u32::MAX as u64
        && ds <= last
        && as_ <= ds
        && ac <= dc
        && dc <= i64::MAX as u64
        && rec.next <= last.saturating_add(1)
        && rec.lps.iter().all(|&s| s <= last)
        && rec
            .pending
            .iter()
            .all(|&(s, n)| s <= last && n <= u32::MAX as u64)
}

/// Reads the staged snapshot twice: once to check all of it (the meta first, sequences rising
/// within its range, subjects and headers a client could publish, consumers that fit, the
/// bytes within what the account and server may still hold), then to store its messages in
/// `stream`. The stream's metadata is written by the task once it takes the stream.
fn rebuild(
    file: &std::fs::File,
    stream: &Stream,
    budgets: &[Arc<crate::stream::Budget>],
) -> Result<(Meta, Vec<(String, persist::ConsumerRecord)>), String> {
    use std::io::{Seek, SeekFrom};
    let read = |each: &mut dyn FnMut(Record) -> Result<(), String>| {
        let mut f = file;
        f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        format::read(std::io::BufReader::new(f), each)
    };
    let storage = stream.storage();
    let mut meta: Option<Meta> = None;
    let mut prev = 0u64;
    let mut bytes = 0u64;
    let mut names = std::collections::HashSet::new();
    read(&mut |rec| {
        match rec {
            Record::Meta(v) if meta.is_none() => {
                let m = Meta {
                    created: v["created"].as_i64().unwrap_or_else(now_ns),
                    first: v["first_seq"].as_u64().unwrap_or(1).max(1),
                    last: v["last_seq"].as_u64().unwrap_or(0),
                    last_ts: v["last_ts"].as_i64().unwrap_or(0).max(0),
                    msgs: 0,
                };
                if m.last >= i64::MAX as u64 || m.first > m.last.saturating_add(1) {
                    return Err("the snapshot's first and last sequences are not valid".into());
                }
                if m.last - (m.first - 1) > MAX_SPAN {
                    return Err(format!("the snapshot spans more than {MAX_SPAN} sequences"));
                }
                prev = m.first - 1;
                meta = Some(m);
            }
            Record::Msg(m) => {
                let Some(meta) = meta.as_mut().filter(|x| m.seq > prev && m.seq <= x.last) else {
                    return Err(format!("message {} is out of order", m.seq));
                };
                // (The store keeps a subject's length in 16 bits.)
                let subject_ok = m.subject.len() <= u16::MAX as usize
                    && junction_core::subject::is_valid_literal_subject(&m.subject);
                let headers_ok = m
                    .headers
                    .as_ref()
                    .is_none_or(|h| h.starts_with(b"NATS/1.0") && h.ends_with(b"\r\n\r\n"));
                if !subject_ok || !headers_ok || m.ts < 0 {
                    return Err(format!("message {} is not valid", m.seq));
                }
                bytes += m.size_in(storage);
                prev = m.seq;
                meta.msgs += 1;
            }
            Record::Consumer(name, rec) if meta.is_some() => {
                let last = meta.as_ref().map_or(0, |m| m.last);
                if ConsumerConfig::check_name(&name, true).is_err()
                    || !record_fits(&name, &rec, last)
                    || !names.insert(name.clone())
                {
                    return Err(format!("consumer {name:?} is not valid"));
                }
            }
            _ => return Err("the snapshot's records are out of order".into()),
        }
        Ok(())
    })?;
    let meta = meta.ok_or("the snapshot is empty")?;
    bytes += (meta.last - (meta.first - 1)) / 64 * 8;
    // Checked on what it holds, not on the compressed upload alone.
    if budgets.iter().any(|b| b.would_exceed(bytes)) {
        return Err("insufficient resources".into());
    }
    {
        let mut st = stream.state.locked();
        st.created = meta.created;
        st.last_seq = meta.first - 1;
        st.pad_to_last();
    }
    let mut consumers = Vec::new();
    read(&mut |rec| {
        match rec {
            Record::Msg(m) => stream.restore_append(&m),
            Record::Consumer(name, rec) => consumers.push((name, *rec)),
            Record::Meta(_) => {}
        }
        Ok(())
    })?;
    let mut st = stream.state.locked();
    if st.last_seq < meta.last {
        st.last_seq = meta.last;
        st.pad_to_last();
    }
    st.last_ts = st.last_ts.max(meta.last_ts);
    // Where each source had got to, from the copies' headers (the snapshot's own record of
    // it was the origin server's).
    crate::sources::recover_positions(&mut st, 0);
    st.rebuild_dedup(now_ns());
    Ok((meta, consumers))
}

/// Takes a rebuilt stream into the task and answers the restore's last chunk.
pub(crate) fn restored(task: &mut Task, done: Rebuilt) {
    let Rebuilt {
        restore,
        reply,
        stream,
        result,
    } = done;
    let account = restore.account.clone();
    let names = (account.name().to_string(), restore.config.name.clone());
    task.backups.building.retain(|b| *b != names);
    let answer = serve_restored(task, &restore, &stream, result);
    if answer.is_err() {
        // Nothing of it stays: its records go, and so do its bytes from the account's count.
        if let Some(s) = stream.durable() {
            for op in persist::delete_stream_ops(stream.uid) {
                s.submit(op);
            }
        }
        stream.state.locked().release_budget();
    }
    restore_complete(task, &restore);
    let origin = task.shared.origin;
    task.send_msg(
        &account,
        Message::new(reply, None, create_response(answer), origin),
    );
}

fn serve_restored(
    task: &mut Task,
    r: &Restore,
    stream: &Arc<Stream>,
    result: Result<(Meta, Vec<(String, persist::ConsumerRecord)>), String>,
) -> ApiResult {
    let (meta, consumers) =
        result.map_err(|e| ApiError::new(500, 10062, format!("restore failed: {e}")))?;
    let acc = r.account.name().to_string();
    let name = r.config.name.clone();
    let a = task
        .accounts
        .get(&acc)
        .ok_or_else(ApiError::not_enabled_for_account)?;
    // Made while this one was uploaded or built.
    if a.streams.contains_key(&name) {
        return Err(ApiError::new(
            400,
            10130,
            "stream name already in use, cannot restore",
        ));
    }
    // The account's and server's limits, again: other streams may have come meanwhile.
    if a.limits.max_streams > 0 && a.streams.len() as i64 >= a.limits.max_streams {
        return Err(ApiError::max_streams());
    }
    let (acc_most, acc_max_consumers) = (a.limits.max_ack_pending, a.limits.max_consumers);
    let account = a.account.clone();
    check_resources(task, &acc, &r.config, None)?;
    // What it holds is counted already: other restores built meanwhile may have taken room.
    if restore_budgets(task, r).iter().any(|b| b.would_exceed(0)) {
        return Err(ApiError::new(
            500,
            10062,
            "restore failed: insufficient resources",
        ));
    }
    check_overlap(task, &acc, &r.config)?;
    // Its consumers as a create would take them (a deliver subject the stream captures, say,
    // would loop), within the stream's and the account's consumer limits.
    let mut most = r.config.max_consumers;
    if most <= 0 || (acc_max_consumers > 0 && acc_max_consumers < most) {
        most = acc_max_consumers;
    }
    if most > 0 && consumers.len() as i64 > most {
        return Err(ApiError::new(
            500,
            10062,
            "restore failed: more consumers than the stream may have",
        ));
    }
    for (cname, rec) in &consumers {
        if let Some(cfg) = &rec.config {
            cfg.check(&r.config, acc_most).map_err(|e| {
                ApiError::new(
                    500,
                    10062,
                    format!("restore failed: consumer {cname}: {}", e.description),
                )
            })?;
        }
    }
    {
        let mut st = stream.state.locked();
        st.building = false;
        stream.save_meta(&mut st);
    }
    task.subscribe_stream(stream, &r.config.subjects);
    let mut entry = StreamEntry {
        stream: stream.clone(),
        consumers: BTreeMap::new(),
    };
    for (cname, rec) in consumers {
        if let Some(s) = stream.durable() {
            s.submit(persist::consumer_op(stream.uid, &cname, &rec));
        }
        entry.adopt_consumer(&task.shared, cname, rec);
    }
    let mut info = stream_info(&entry, false);
    task.accounts
        .get_mut(&acc)
        .expect("account checked above")
        .streams
        .insert(name.clone(), entry);
    task.watch_dirty = true;
    task.refresh_interest(&acc, &name);
    task.touched.insert((acc.clone(), name.clone()));
    sync_sources(task, &acc, &name);
    if let Some(e) = task.accounts[&acc].streams.get(&name) {
        task.source_info(&acc, e, &mut info);
    }
    task.stream_advisory(&account, &name, Action::Create);
    tracing::info!(account = %acc, stream = %name, messages = meta.msgs, bytes = r.bytes, "JetStream: restored a stream");
    Ok(info)
}

/// Sends what the snapshots' windows have room for, ends those that are done or stalled, and
/// drops the restores nobody feeds.
pub(crate) fn pump(task: &mut Task) {
    if task.backups.snapshots.is_empty() && task.backups.restores.is_empty() {
        return;
    }
    let now = Instant::now();
    task.backups.restores.retain(|_, r| {
        let live = now.duration_since(r.heard) < RESTORE_IDLE;
        if !live {
            tracing::warn!(stream = %r.config.name, "JetStream: a restore heard nothing for 5 s and is dropped");
        }
        live
    });
    let mut more = false;
    let mut sends = Vec::new();
    let mut ended = Vec::new();
    let origin = task.shared.origin;
    task.backups.snapshots.retain_mut(|s| {
        let (more_here, end) = s.step(now, origin, &mut sends);
        more |= more_here;
        if let Some(status) = end {
            let mut eof = Message::new(s.deliver.clone(), None, Bytes::new(), origin);
            eof.headers = Some(Bytes::from(format!("NATS/1.0 {status}\r\n\r\n")));
            sends.push((s.account.clone(), eof));
            let body = json!({"start": s.start, "end": rfc3339(now_ns()), "client": s.client});
            ended.push((s.account.clone(), s.stream.name.clone(), body));
            return false;
        }
        true
    });
    for (account, msg) in sends {
        task.send_msg(&account, msg);
    }
    for (account, stream, body) in ended {
        task.backup_advisory(&account, "SNAPSHOT_COMPLETE", &stream, body);
    }
    if more {
        task.shared.notify.notify_one();
    }
}

impl Snapshot {
    /// Sends what the window has room for (up to [`ROUND_BYTES`]); returns whether there is
    /// more to send now, and the status that ends the snapshot, if it ends.
    fn step(
        &mut self,
        now: Instant,
        origin: junction_core::ConnId,
        sends: &mut Vec<(Arc<Account>, Message)>,
    ) -> (bool, Option<&'static str>) {
        let listening = self.account.has_interest(&self.deliver);
        if !listening {
            if self.listened || now.duration_since(self.started) >= FLOW_WAIT {
                return (false, Some("408 No Interest"));
            }
            return (false, None);
        }
        self.listened = true;
        if self.failed {
            return (false, Some("500 Snapshot Failed"));
        }
        let mut made = 0;
        while self.out < self.window && made < ROUND_BYTES {
            if self.w.ready() < self.chunk && !self.ended {
                self.fill();
                if self.failed {
                    return (false, Some("500 Snapshot Failed"));
                }
            }
            if self.w.ready() == 0 {
                return (false, self.ended.then_some("204"));
            }
            let data = self.w.take(self.chunk);
            self.sent += 1;
            let reply = format!("{}.{}.{}", self.ack, data.len(), self.sent);
            self.out += data.len();
            made += data.len();
            self.heard = now;
            let chunk = Message::new(
                self.deliver.clone(),
                Some(Bytes::from(reply)),
                Bytes::from(data),
                origin,
            );
            sends.push((self.account.clone(), chunk));
        }
        if self.out >= self.window && now.duration_since(self.heard) >= FLOW_WAIT {
            return (false, Some("408 No Flow Response"));
        }
        (self.out < self.window, None)
    }

    /// Writes messages until a chunk's worth is ready or the snapshot's last one is written.
    fn fill(&mut self) {
        while self.w.ready() < self.chunk && !self.ended && !self.failed {
            self.fill_some();
        }
    }

    /// Writes the next messages: a compressed block's worth at least (the encoder gives out
    /// nothing before), or a chunk's. They are taken under the stream's lock and compressed
    /// after it, so that publishers do not wait for the compression.
    fn fill_some(&mut self) {
        let want = self.chunk.max(BLOCK);
        let mut taken = Vec::new();
        let mut bytes = 0;
        let mut last = false;
        {
            let st = self.stream.state.locked();
            while bytes < want {
                let next = st.next_matching(self.next, &[]).filter(|&s| s <= self.last);
                let Some(seq) = next else {
                    last = true;
                    break;
                };
                self.next = seq + 1;
                match st.load(seq) {
                    Some(m) => {
                        bytes += m.stored_size() as usize;
                        taken.push(m);
                    }
                    // A message the store could not read back: the snapshot would lack it.
                    None => {
                        self.failed = true;
                        return;
                    }
                }
            }
        }
        for m in &taken {
            self.w.msg(m);
        }
        if last {
            self.w.end();
            self.ended = true;
        }
    }
}

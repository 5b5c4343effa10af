//! Consumer requests: create (named, durable, ephemeral), info, delete, list and names, and
//! the pull requests (`CONSUMER.MSG.NEXT`).

use super::*;
use crate::sinks::ConsumerSubs;

#[derive(Deserialize)]
struct CreateConsumerRequest {
    #[serde(default)]
    stream_name: String,
    /// Left out: all defaults (a legacy ephemeral), as nats-server reads it.
    #[serde(default = "no_config")]
    config: ConsumerConfig,
    #[serde(default)]
    action: CreateAction,
}

fn no_config() -> ConsumerConfig {
    serde_json::from_str("{}").expect("an empty consumer config")
}

/// What a create request asks for; anything else is invalid JSON, as nats-server reads it.
#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum CreateAction {
    #[default]
    #[serde(rename = "")]
    CreateOrUpdate,
    Create,
    Update,
}

/// Which create subject a request came on, as nats-server tells them apart.
pub(super) enum Create<'a> {
    /// `CONSUMER.CREATE.<stream>`: an ephemeral whose name the server draws.
    Ephemeral,
    /// `CONSUMER.DURABLE.CREATE.<stream>.<name>`.
    Durable(&'a str),
    /// `CONSUMER.CREATE.<stream>.<name>[.<filter>]`.
    Named(&'a str, String),
}

/// Creates or updates a consumer, with nats-server 2.10's checks in its order: the request
/// against its subject, the stream, the configuration's defaults and rules, then an existing
/// consumer's update rules or the stream's rules for a new one.
pub(super) fn consumer_create(
    task: &mut Task,
    acc: &str,
    stream: &str,
    kind: Create<'_>,
    payload: &[u8],
) -> ApiResult {
    let req: CreateConsumerRequest = parse(payload)?;
    let mut cfg = req.config;
    cfg.tidy();
    if req.stream_name != stream {
        return Err(ApiError::stream_mismatch());
    }
    let mismatch = || {
        ApiError::new(
            400,
            10017,
            "consumer name in subject does not match durable name in request",
        )
    };
    match &kind {
        Create::Durable(n) | Create::Named(n, _) if n.contains(['/', '\\']) => {
            return Err(ApiError::invalid_consumer_name());
        }
        Create::Durable(n) => match cfg.durable_name.as_deref() {
            None => {
                return Err(ApiError::new(
                    400,
                    10018,
                    "consumer expected to be durable but a durable name was not set",
                ))
            }
            Some(d) if d != *n => return Err(mismatch()),
            Some(_) => {}
        },
        Create::Named(n, _) => {
            if cfg.durable_name.as_deref().is_some_and(|d| d != *n) {
                return Err(mismatch());
            }
            cfg.name = Some(n.to_string());
        }
        Create::Ephemeral if cfg.durable_name.is_some() => {
            return Err(ApiError::new(
                400,
                10020,
                "consumer expected to be ephemeral but a durable name was set in request",
            ));
        }
        Create::Ephemeral => {}
    }
    if let Create::Named(_, filter) = &kind {
        if !filter.is_empty() {
            if !cfg.filter_subjects.is_empty() {
                return Err(ApiError::new(
                    400,
                    10137,
                    "consumer with multiple subject filters cannot use subject based API",
                ));
            }
            if cfg.filter_subject.as_deref() != Some(filter.as_str()) {
                return Err(ApiError::consumer_create_name_mismatch());
            }
        }
    }
    if cfg.num_replicas > 1 {
        return Err(ApiError::replicas_not_supported());
    }
    let (acc_most, acc_max_consumers) = {
        let a = task
            .accounts
            .get(acc)
            .ok_or_else(ApiError::not_enabled_for_account)?;
        (a.limits.max_ack_pending, a.limits.max_consumers)
    };
    let e = entry(task, acc, stream)?;
    let scfg = e.stream.state.locked().config.clone();
    check_tier(task, acc)?;
    cfg.set_defaults(&scfg.consumer_limits, acc_most);
    cfg.check(&scfg, acc_most)?;
    let filters = cfg.filters();
    let e = entry(task, acc, stream)?;
    let wq = scfg.retention == Retention::WorkQueue;
    // Another consumer of a work-queue stream that takes what this one would.
    let shared_partition = |e: &StreamEntry, name: &str| {
        !filters.is_empty()
            && e.consumers.iter().any(|(n, other)| {
                let of = other.filters();
                n != name
                    && (of.is_empty()
                        || filters
                            .iter()
                            .any(|f| of.iter().any(|o| junction_core::subject::overlaps(f, o))))
            })
    };
    let name = cfg.durable_name.clone().or_else(|| cfg.name.clone());
    if let Some(name) = &name {
        if let Some(existing) = e.consumers.get(name) {
            if req.action == CreateAction::Create && !existing.shown_config().same_as_asked(&cfg) {
                return Err(ApiError::consumer_exists());
            }
            if existing.config.same_as_asked(&cfg) {
                // The same configuration again: nothing changes.
                return Ok(consumer_info(stream, existing));
            }
            if wq && shared_partition(e, name) {
                return Err(ApiError::wq_not_unique());
            }
            let bound = existing
                .config
                .deliver_subject
                .as_ref()
                .is_some_and(|ds| existing.stream.account.has_interest(ds.as_bytes()));
            existing.config.check_update(&cfg, bound)?;
            let existing = e.consumers.get_mut(name).expect("it exists");
            let stream_arc = existing.stream.clone();
            existing.update(cfg, &stream_arc.state.locked());
            let info = consumer_info(stream, existing);
            task.refresh_interest(acc, stream);
            task.touched.insert((acc.to_string(), stream.to_string()));
            return Ok(info);
        }
    }
    if req.action == CreateAction::Update {
        return Err(ApiError::new(400, 10149, "consumer does not exist"));
    }
    // The stream's limit, or the account's when that is smaller: both count the stream's
    // consumers (as nats-server counts them).
    // Direct consumers (another server's mirror or source of this stream) are not counted,
    // and a work-queue stream's rules do not apply to them, as in nats-server.
    let mut max = scfg.max_consumers;
    if max <= 0 || (acc_max_consumers > 0 && acc_max_consumers < max) {
        max = acc_max_consumers;
    }
    let public = e
        .consumers
        .values()
        .filter(|c| !c.config.is_direct())
        .count();
    if max > 0 && public as i64 >= max {
        return Err(ApiError::max_consumers());
    }
    if wq && !cfg.is_direct() {
        if cfg.ack_policy != crate::config::AckPolicy::Explicit {
            return Err(ApiError::wq_requires_explicit_ack());
        }
        if !e.consumers.is_empty() {
            if filters.is_empty() {
                return Err(ApiError::new(
                    400,
                    10099,
                    "multiple non-filtered consumers not allowed on workqueue stream",
                ));
            }
            if shared_partition(e, name.as_deref().unwrap_or_default()) {
                return Err(ApiError::wq_not_unique());
            }
        }
        if cfg.deliver_policy != DeliverPolicy::All {
            return Err(ApiError::wq_not_deliver_all());
        }
    }
    let name = match (&cfg.durable_name, name) {
        (Some(d), _) => {
            ConsumerConfig::check_name(d, true)?;
            d.clone()
        }
        (None, Some(n)) => {
            ConsumerConfig::check_name(&n, false)?;
            n
        }
        (None, None) => loop {
            // A legacy ephemeral: the server draws its name, and its config says it.
            let n = crate::random_token()[..8].to_string();
            if !e.consumers.contains_key(&n) {
                cfg.name = Some(n.clone());
                break n;
            }
        },
    };
    let stream_arc = e.stream.clone();
    let mut c = {
        let st = stream_arc.state.locked();
        Consumer::new(name.clone(), stream_arc.clone(), cfg, now_ns(), &st)
    };
    c.subs = Some(ConsumerSubs::new(
        &task.shared,
        &stream_arc.account,
        stream,
        &name,
    ));
    let info = consumer_info(stream, &c);
    task.consumer_advisory(&stream_arc.account, stream, &name, Action::Create);
    let e = entry(task, acc, stream)?;
    e.consumers.insert(name, c);
    task.refresh_interest(acc, stream);
    task.touched.insert((acc.to_string(), stream.to_string()));
    Ok(info)
}

pub(super) fn seq_info(cseq: u64, sseq: u64, last: Option<i64>) -> Value {
    let mut v = json!({"consumer_seq": cseq, "stream_seq": sseq});
    if let Some(ts) = last.filter(|t| *t > 0) {
        v["last_active"] = json!(rfc3339(ts));
    }
    v
}

pub(super) fn consumer_info(stream: &str, c: &Consumer) -> Value {
    let st = c.stream.state.locked();
    let (d, f) = (c.delivered(), c.ack_floor());
    let mut v = json!({
        "stream_name": stream,
        "name": c.name,
        "created": rfc3339(c.created),
        "config": c.shown_config(),
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

pub(super) fn consumer_info_req(task: &mut Task, acc: &str, stream: &str, name: &str) -> ApiResult {
    let e = entry(task, acc, stream)?;
    let c = e
        .consumers
        .get(name)
        .ok_or_else(ApiError::consumer_not_found)?;
    Ok(consumer_info(stream, c))
}

pub(super) fn consumer_delete(task: &mut Task, acc: &str, stream: &str, name: &str) -> ApiResult {
    entry(task, acc, stream)?;
    if !remove_consumer(task, acc, stream, name) {
        return Err(ApiError::consumer_not_found());
    }
    Ok(json!({"success": true}))
}

pub(super) fn consumer_list(
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
        received: now,
        sent: 0,
    })
}

pub(super) fn next_request(
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
    if let Some((code, text)) = c.refuses_no_wait(&req) {
        let m = status(code, text);
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

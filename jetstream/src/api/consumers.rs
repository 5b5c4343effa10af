//! Consumer requests: create (named, durable, ephemeral), info, delete, list and names, and
//! the pull requests (`CONSUMER.MSG.NEXT`).

use super::*;
use crate::sinks::ConsumerSubs;

#[derive(Deserialize)]
struct CreateConsumerRequest {
    #[serde(default)]
    stream_name: String,
    config: Option<ConsumerConfig>,
    #[serde(default)]
    action: String,
}

pub(super) fn consumer_create(
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
    // The stream's `consumer_limits` are a consumer's defaults and its most; the account's
    // `max_ack_pending` is its default when below the usual one, and its most.
    let limits = task
        .accounts
        .get(acc)
        .and_then(|a| a.streams.get(stream))
        .map(|e| e.stream.state.locked().config.consumer_limits)
        .unwrap_or_default();
    if cfg.max_ack_pending == 0 {
        cfg.max_ack_pending = limits.max_ack_pending;
    }
    if cfg.inactive_threshold == 0 {
        cfg.inactive_threshold = limits.inactive_threshold;
    }
    let (most, acc_max_consumers) = task.accounts.get(acc).map_or((-1, -1), |a| {
        (a.limits.max_ack_pending, a.limits.max_consumers)
    });
    if cfg.max_ack_pending == 0 && most > 0 {
        cfg.max_ack_pending = most.min(crate::config::DEFAULT_MAX_ACK_PENDING);
    }
    cfg.normalize()?;
    for most in [most, limits.max_ack_pending] {
        if most > 0 && cfg.max_ack_pending > most {
            return Err(ApiError::new(
                400,
                10121,
                format!("consumer max ack pending exceeds system limit of {most}"),
            ));
        }
    }
    let most = limits.inactive_threshold;
    if most > 0 && cfg.inactive_threshold > most {
        let most = junction_core::time::go_duration(std::time::Duration::from_nanos(most as u64));
        return Err(ApiError::new(
            400,
            10153,
            format!("consumer inactive threshold exceeds system limit of {most}"),
        ));
    }
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
            && !filters.iter().all(|f| {
                st.config
                    .subjects
                    .iter()
                    .any(|s| junction_core::subject::overlaps(s, f))
            })
            && st.config.mirror.is_none()
            && st.config.sources.is_empty()
        {
            return Err(ApiError::filter_not_subset());
        }
        if let Some(ds) = &cfg.deliver_subject {
            if st
                .config
                .subjects
                .iter()
                .any(|s| junction_core::subject::overlaps(s, ds))
            {
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
                    || of.iter().any(|a| {
                        filters
                            .iter()
                            .any(|b| junction_core::subject::overlaps(a, b))
                    })
                {
                    return Err(ApiError::wq_not_unique());
                }
            }
        }
        // The stream's limit, or the account's when that is smaller: both count the stream's
        // consumers (as nats-server counts them).
        let mut max = st.config.max_consumers;
        if max <= 0 || (acc_max_consumers > 0 && acc_max_consumers < max) {
            max = acc_max_consumers;
        }
        if max > 0 && e.consumers.len() as i64 >= max && !e.consumers.contains_key(&name) {
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

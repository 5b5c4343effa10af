//! JetStream's advisories and metrics, published in the account as nats-server publishes them
//! (`$JS.EVENT.ADVISORY.*`, `$JS.EVENT.METRIC.*`): streams and consumers created, updated and
//! deleted; a message that reached `max_deliver` (what dead-letter handling listens to), one
//! terminated (`+TERM`) or refused (`-NAK`); sampled acknowledgements (`sample_freq`); the audit
//! of each API request. Each is built only when someone in the account listens to its subject.

use std::sync::Arc;

use bytes::Bytes;
use junction_core::Account;
use serde_json::{json, Value};

use crate::consumer::{Consumer, Event, Out};
use crate::service::Task;

const ADVISORY: &str = "$JS.EVENT.ADVISORY";

/// What an advisory says about a stream or a consumer.
#[derive(Clone, Copy)]
pub(crate) enum Action {
    Create,
    Modify,
    Delete,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Modify => "modify",
            Action::Delete => "delete",
        }
    }

    fn subject_word(self) -> &'static str {
        match self {
            Action::Create => "CREATED",
            Action::Modify => "UPDATED",
            Action::Delete => "DELETED",
        }
    }
}

/// `body` with the event's `type`, `id` and `timestamp` (and the domain, if any), addressed to
/// `subject` in `account`; `None` when nobody there listens.
fn event(
    account: &Account,
    domain: Option<&str>,
    subject: String,
    kind: &str,
    mut body: Value,
) -> Option<Out> {
    if !account.has_interest(subject.as_bytes()) {
        return None;
    }
    body["type"] = json!(kind);
    body["id"] = json!(crate::random_token());
    body["timestamp"] = json!(crate::time::rfc3339(crate::stream::now_ns()));
    if let Some(d) = domain {
        body["domain"] = json!(d);
    }
    let subject = Bytes::from(subject);
    Some(Out {
        to: subject.clone(),
        subject,
        reply: None,
        headers: None,
        payload: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    })
}

/// Takes what `c` (of `stream`) has to report and queues it on `out`.
pub(crate) fn consumer_events(
    domain: Option<&str>,
    account: &Arc<Account>,
    stream: &str,
    c: &mut Consumer,
    out: &mut Vec<(Arc<Account>, Out)>,
) {
    if c.events.is_empty() {
        return;
    }
    let name = c.name.clone();
    for e in std::mem::take(&mut c.events) {
        let (prefix, kind, body) = match e {
            Event::MaxDeliveries { sseq, deliveries } => (
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES",
                "io.nats.jetstream.advisory.v1.max_deliver",
                json!({"stream": stream, "consumer": name, "stream_seq": sseq,
                       "deliveries": deliveries}),
            ),
            Event::Terminated {
                cseq,
                sseq,
                deliveries,
            }
            | Event::Naked {
                cseq,
                sseq,
                deliveries,
            } => {
                let (prefix, kind) = match e {
                    Event::Terminated { .. } => (
                        "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED",
                        "io.nats.jetstream.advisory.v1.terminated",
                    ),
                    _ => (
                        "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED",
                        "io.nats.jetstream.advisory.v1.nak",
                    ),
                };
                let body = json!({"stream": stream, "consumer": name, "consumer_seq": cseq,
                                  "stream_seq": sseq, "deliveries": deliveries});
                (prefix, kind, body)
            }
            Event::Acked {
                cseq,
                sseq,
                deliveries,
                ack_time,
            } => (
                "$JS.EVENT.METRIC.CONSUMER.ACK",
                "io.nats.jetstream.metric.v1.consumer_ack",
                json!({"stream": stream, "consumer": name, "consumer_seq": cseq,
                       "stream_seq": sseq, "ack_time": ack_time, "deliveries": deliveries}),
            ),
        };
        let subject = format!("{prefix}.{stream}.{name}");
        if let Some(o) = event(account, domain, subject, kind, body) {
            out.push((account.clone(), o));
        }
    }
}

impl Task {
    /// nats-server's audit of an API request and its response (`$JS.EVENT.ADVISORY.API`).
    pub(crate) fn api_audit(
        &mut self,
        account: &Arc<Account>,
        subject: &str,
        request: &[u8],
        response: &[u8],
        origin: junction_core::ConnId,
    ) {
        const TO: &str = "$JS.EVENT.ADVISORY.API";
        if !account.has_interest(TO.as_bytes()) {
            return;
        }
        let server = &self.shared.opts.server_name;
        let client = self.client_info(account, origin);
        let mut body = json!({
            "server": server,
            "client": client,
            "subject": subject,
            "response": String::from_utf8_lossy(response),
        });
        if !request.is_empty() {
            body["request"] = json!(String::from_utf8_lossy(request));
        }
        let kind = "io.nats.jetstream.advisory.v1.api_audit";
        let domain = self.shared.opts.domain.as_deref();
        if let Some(o) = event(account, domain, TO.to_string(), kind, body) {
            self.out.push((account.clone(), o));
        }
    }

    /// What nats-server tells of a requester without the account's opt-in to share more: its
    /// account, round trip and server (`None` for a request an import forwarded). Only a
    /// client of this account: one of another account could be reached through a stream
    /// import of the API subjects.
    pub(crate) fn client_info(
        &self,
        account: &Account,
        origin: junction_core::ConnId,
    ) -> Option<Value> {
        let server = &self.shared.opts.server_name;
        self.shared
            .bus
            .conns()
            .snapshot(origin)
            .filter(|c| c.account == account.name())
            .map(|c| {
                let mut v = json!({"acc": c.account, "server": server});
                if let Some(rtt) = c.rtt.filter(|r| !r.is_zero()) {
                    v["rtt"] = json!(rtt.as_nanos() as u64);
                }
                v
            })
    }

    /// A snapshot or restore of `stream` began or ended (`what`: `SNAPSHOT_CREATE`,
    /// `SNAPSHOT_COMPLETE`, `RESTORE_CREATE`, `RESTORE_COMPLETE`); `body` says more.
    pub(crate) fn backup_advisory(
        &mut self,
        account: &Arc<Account>,
        what: &str,
        stream: &str,
        mut body: Value,
    ) {
        let subject = format!("{ADVISORY}.STREAM.{what}.{stream}");
        let kind = format!(
            "io.nats.jetstream.advisory.v1.{}",
            what.to_ascii_lowercase()
        );
        body["stream"] = json!(stream);
        let domain = self.shared.opts.domain.as_deref();
        if let Some(o) = event(account, domain, subject, &kind, body) {
            self.out.push((account.clone(), o));
        }
    }

    /// A stream of `account` was created, updated or deleted.
    pub(crate) fn stream_advisory(&mut self, account: &Arc<Account>, stream: &str, a: Action) {
        let subject = format!("{ADVISORY}.STREAM.{}.{stream}", a.subject_word());
        let body = json!({"stream": stream, "action": a.word()});
        let kind = "io.nats.jetstream.advisory.v1.stream_action";
        let domain = self.shared.opts.domain.as_deref();
        if let Some(o) = event(account, domain, subject, kind, body) {
            self.out.push((account.clone(), o));
        }
    }

    /// A consumer of `stream` was created or deleted.
    pub(crate) fn consumer_advisory(
        &mut self,
        account: &Arc<Account>,
        stream: &str,
        consumer: &str,
        a: Action,
    ) {
        let subject = format!(
            "{ADVISORY}.CONSUMER.{}.{stream}.{consumer}",
            a.subject_word()
        );
        let body = json!({"stream": stream, "consumer": consumer, "action": a.word()});
        let kind = "io.nats.jetstream.advisory.v1.consumer_action";
        let domain = self.shared.opts.domain.as_deref();
        if let Some(o) = event(account, domain, subject, kind, body) {
            self.out.push((account.clone(), o));
        }
    }
}

//! MQTT on the NATS bus: how an MQTT 5 publication's properties travel, and how MQTT 5
//! request/response meets NATS request/reply.
//!
//! - Properties travel typed ([`MqttExtra`] on the message): an MQTT subscriber reads them as
//!   they are, and a NATS subscriber gets them as headers, rendered once, only when one
//!   receives the message: user properties as headers, and correlation data (hex), content type
//!   and payload format as `Mqtt-*` headers. A message from NATS carries headers, which become
//!   properties again for an MQTT subscriber ([`properties_of`]).
//! - A request with a response topic and correlation data goes out with a reply subject of the
//!   session's [`Bridge`]; the answer to that subject (a NATS `msg.respond`) is published on the
//!   response topic with the correlation data, with the requester's rights.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use junction_auth::Permissions;
use junction_core::sync::Lock;
use junction_core::{
    subject, Account, Delivery, Extra, FlushBatch, MatchCache, Message, Sink, Subscription,
};

use crate::mqtt::codec::topic;
use crate::mqtt::{PublishProperties, UserProperty, Utf8Bytes};

/// Header carrying MQTT 5 correlation data (hex) across NATS.
const CORRELATION_HEADER: &str = "Mqtt-Correlation-Data";
/// Header carrying the MQTT 5 content type across NATS.
const CONTENT_TYPE_HEADER: &str = "Mqtt-Content-Type";
/// Header carrying the MQTT 5 payload format indicator across NATS.
const PAYLOAD_FORMAT_HEADER: &str = "Mqtt-Payload-Format";
/// Header carrying an MQTT 5 response topic when the reply subject is the bridge's.
const RESPONSE_TOPIC_HEADER: &str = "Mqtt-Response-Topic";

/// An MQTT 5 publication's properties, as they travel on a message.
#[derive(Debug)]
pub(crate) struct MqttExtra {
    /// User properties, correlation data, content type, payload format and the response topic
    /// as the publisher sent them (in memory of their own, not slices of its read buffer).
    pub(crate) props: PublishProperties,
    /// The reply subject is the bridge's: NATS receivers also see the response topic.
    bridged: bool,
    headers: OnceLock<Option<Bytes>>,
}

impl Extra for MqttExtra {
    fn headers(&self) -> Option<&Bytes> {
        self.headers
            .get_or_init(|| render_headers(&self.props, self.bridged))
            .as_ref()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The extra a publication's properties make (`None` when it has none that travel).
pub(crate) fn extra_of(props: &PublishProperties, bridged: bool) -> Option<Arc<dyn Extra>> {
    let travels = !props.user_properties.is_empty()
        || props.correlation_data.is_some()
        || props.content_type.is_some()
        || props.payload_format_indicator.is_some()
        || props.response_topic.is_some();
    if !travels {
        return None;
    }
    let props = PublishProperties {
        payload_format_indicator: props.payload_format_indicator,
        response_topic: props.response_topic.as_ref().map(Utf8Bytes::detached),
        correlation_data: props
            .correlation_data
            .as_ref()
            .map(|c| Bytes::copy_from_slice(c)),
        user_properties: props
            .user_properties
            .iter()
            .map(|p| UserProperty {
                name: p.name.detached(),
                value: p.value.detached(),
            })
            .collect(),
        content_type: props.content_type.as_ref().map(Utf8Bytes::detached),
        ..PublishProperties::default()
    };
    Some(Arc::new(MqttExtra {
        props,
        bridged,
        headers: OnceLock::new(),
    }))
}

/// The MQTT 5 properties of a message from the bus for an MQTT subscriber: those it carries
/// typed, or its NATS headers read back; the reply subject is the response topic.
pub(crate) fn properties_of(msg: &Message) -> PublishProperties {
    let mut props = match msg
        .extra
        .as_ref()
        .and_then(|e| e.as_any().downcast_ref::<MqttExtra>())
    {
        Some(e) => {
            let mut p = e.props.clone();
            if !e.bridged {
                p.response_topic = None;
            }
            p
        }
        None => properties_from_headers(msg.headers.as_ref()),
    };
    props.message_expiry_interval = msg.facts.expiry_secs;
    if props.response_topic.is_none() {
        if let Some(reply) = &msg.reply {
            props.response_topic = topic::subject_to_topic(reply).ok();
        }
    }
    props
}

/// Hex text of binary data, for a header value.
fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Bytes> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

/// The NATS header block for a publication's properties (None when there are none).
fn render_headers(props: &PublishProperties, bridged: bool) -> Option<Bytes> {
    let mut lines: Vec<(&str, String)> = props
        .user_properties
        .iter()
        .filter(|p| {
            !p.name.as_str().contains([':', '\r', '\n']) && !p.value.as_str().contains(['\r', '\n'])
        })
        .map(|p| (p.name.as_str(), p.value.as_str().to_string()))
        .collect();
    if let Some(c) = &props.correlation_data {
        lines.push((CORRELATION_HEADER, hex(c)));
    }
    if let Some(t) = &props.content_type {
        if !t.as_str().contains(['\r', '\n']) {
            lines.push((CONTENT_TYPE_HEADER, t.as_str().to_string()));
        }
    }
    if let Some(f) = props.payload_format_indicator {
        lines.push((PAYLOAD_FORMAT_HEADER, u8::from(f).to_string()));
    }
    if let (true, Some(t)) = (bridged, &props.response_topic) {
        lines.push((RESPONSE_TOPIC_HEADER, t.as_str().to_string()));
    }
    if lines.is_empty() {
        return None;
    }
    let mut block = BytesMut::from(&b"NATS/1.0\r\n"[..]);
    for (k, v) in lines {
        block.put_slice(k.as_bytes());
        block.put_slice(b": ");
        block.put_slice(v.as_bytes());
        block.put_slice(b"\r\n");
    }
    block.put_slice(b"\r\n");
    Some(block.freeze())
}

/// MQTT 5 properties from a NATS header block: headers become user properties (the `Mqtt-*`
/// ones become their properties again).
fn properties_from_headers(headers: Option<&Bytes>) -> PublishProperties {
    let mut props = PublishProperties::default();
    let Some(text) = headers.and_then(|h| std::str::from_utf8(h).ok()) else {
        return props;
    };
    for line in text.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case(RESPONSE_TOPIC_HEADER) {
            props.response_topic = Some(utf8(v));
        } else if k.eq_ignore_ascii_case(CORRELATION_HEADER) {
            props.correlation_data = unhex(v);
        } else if k.eq_ignore_ascii_case(CONTENT_TYPE_HEADER) {
            props.content_type = Some(utf8(v));
        } else if k.eq_ignore_ascii_case(PAYLOAD_FORMAT_HEADER) {
            props.payload_format_indicator = Some(v == "1");
        } else {
            props.user_properties.push(UserProperty {
                name: utf8(k),
                value: utf8(v),
            });
        }
    }
    props
}

/// A string as an MQTT UTF-8 string (empty if it cannot be one).
pub(crate) fn utf8(s: &str) -> Utf8Bytes {
    Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(s.as_bytes())).unwrap_or_default()
}

/// Requests a bridge remembers at most (the oldest are forgotten first).
const BRIDGE_ENTRIES: usize = 10_000;

/// Carries one session's MQTT 5 requests over NATS (see the module documentation).
///
/// The reply subjects live under [`subject::BRIDGE_PREFIX`], a space no client can subscribe
/// to or receive from except through its bridge, and each carries two random tokens (one per
/// session, one per request): only who received the request can answer it. The answer is
/// published with the requester's rights: the response topic was checked against its publish
/// permission when the request was made, and is checked again when the answer comes.
pub(crate) struct Bridge {
    /// `$MQTT.rr.<session token>`.
    pub(crate) prefix: String,
    account: Arc<Account>,
    /// The requester's permissions (`None`: everything allowed).
    perms: Option<Arc<Permissions>>,
    /// Keys the per-request tokens (a keyed hash of a counter cannot be predicted from the
    /// tokens seen before it).
    keys: std::collections::hash_map::RandomState,
    pending: Mutex<BridgePending>,
}

/// The bridge's open requests.
#[derive(Default)]
struct BridgePending {
    /// Requests made so far.
    count: u64,
    /// Request token -> (request number, response subject, correlation data).
    open: HashMap<Bytes, (u64, Bytes, Bytes)>,
    /// Request number -> token, to forget the oldest first.
    order: BTreeMap<u64, Bytes>,
}

/// A random token of base62 characters, from the system's random source.
fn random_token(chars: usize) -> String {
    let mut raw = vec![0u8; chars];
    getrandom::getrandom(&mut raw).expect("the system's random source");
    raw.iter().map(|b| base62_digit(u64::from(*b))).collect()
}

fn base62_digit(n: u64) -> char {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    DIGITS[(n % 62) as usize] as char
}

impl Bridge {
    pub(crate) fn new(account: Arc<Account>, perms: Option<Arc<Permissions>>) -> Self {
        Self {
            prefix: format!(
                "{}{}",
                String::from_utf8_lossy(subject::BRIDGE_PREFIX),
                random_token(22)
            ),
            account,
            perms,
            keys: std::collections::hash_map::RandomState::new(),
            pending: Mutex::new(BridgePending::default()),
        }
    }

    /// A fresh reply subject for a request answered on `response` with `correlation`.
    pub(crate) fn reply_subject(&self, response: Bytes, correlation: Bytes) -> Bytes {
        use std::hash::BuildHasher;
        let mut pending = self.pending.locked();
        pending.count += 1;
        let n = pending.count;
        let (mut a, mut b) = (self.keys.hash_one((n, 0u8)), self.keys.hash_one((n, 1u8)));
        let mut token = String::with_capacity(22);
        for _ in 0..11 {
            token.push(base62_digit(a));
            token.push(base62_digit(b));
            a /= 62;
            b /= 62;
        }
        let token = Bytes::from(token);
        if pending.open.len() >= BRIDGE_ENTRIES {
            if let Some((_, old)) = pending.order.pop_first() {
                pending.open.remove(&old);
            }
        }
        pending.order.insert(n, token.clone());
        pending
            .open
            .insert(token.clone(), (n, response, correlation));
        let mut subject = BytesMut::with_capacity(self.prefix.len() + 1 + token.len());
        subject.put_slice(self.prefix.as_bytes());
        subject.put_u8(b'.');
        subject.put_slice(&token);
        subject.freeze()
    }
}

impl Sink for Bridge {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        let Some(token) = msg.subject.rsplit(|b| *b == b'.').next() else {
            return Delivery::Dropped;
        };
        let found = {
            let mut pending = self.pending.locked();
            let found = pending.open.remove(token);
            if let Some((n, _, _)) = &found {
                pending.order.remove(n);
            }
            found
        };
        let Some((_, response, correlation)) = found else {
            return Delivery::Dropped;
        };
        if let Some(perms) = &self.perms {
            if !perms.may_publish(&String::from_utf8_lossy(&response)) {
                tracing::info!(
                    subject = %String::from_utf8_lossy(&response),
                    "response to an MQTT request dropped: the requester may not publish there"
                );
                return Delivery::Dropped;
            }
        }
        let mut props = properties_of(msg);
        props.response_topic = None;
        props.message_expiry_interval = None;
        props.correlation_data = Some(correlation);
        let answer = Message {
            subject: response,
            reply: None,
            headers: None,
            payload: msg.payload.clone(),
            facts: msg.facts,
            extra: extra_of(&props, false),
        };
        self.account
            .publish(&mut MatchCache::new(false), &answer, batch);
        Delivery::Queued
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_core::{ConnId, DeliveryFacts};

    #[test]
    fn properties_round_trip_through_nats_headers() {
        let props = PublishProperties {
            user_properties: vec![UserProperty {
                name: utf8("unit"),
                value: utf8("celsius"),
            }],
            correlation_data: Some(Bytes::from_static(&[0, 1, 0xfe])),
            content_type: Some(utf8("application/json")),
            payload_format_indicator: Some(true),
            ..PublishProperties::default()
        };
        let extra = extra_of(&props, false).unwrap();
        let headers = extra.headers().unwrap().clone();
        assert!(headers.starts_with(b"NATS/1.0\r\nunit: celsius\r\n"));
        // From NATS (headers only) and typed (MQTT to MQTT): the same properties.
        for (headers, extra) in [(Some(headers), None), (None, Some(extra))] {
            let msg = Message {
                subject: Bytes::from_static(b"a"),
                reply: Some(Bytes::from_static(b"reply.to")),
                headers,
                payload: Bytes::new(),
                facts: DeliveryFacts::from_origin(ConnId(1)),
                extra,
            };
            let back = properties_of(&msg);
            assert_eq!(back.user_properties, props.user_properties);
            assert_eq!(back.correlation_data, props.correlation_data);
            assert_eq!(back.content_type, props.content_type);
            assert_eq!(back.payload_format_indicator, Some(true));
            assert_eq!(back.response_topic.unwrap().as_str(), "reply/to");
        }
    }

    #[test]
    fn a_bridged_request_shows_its_response_topic_to_both_protocols() {
        let props = PublishProperties {
            response_topic: Some(utf8("replies/me")),
            correlation_data: Some(Bytes::from_static(b"c")),
            ..PublishProperties::default()
        };
        let extra = extra_of(&props, true).unwrap();
        let text = String::from_utf8(extra.headers().unwrap().to_vec()).unwrap();
        assert!(
            text.contains("Mqtt-Response-Topic: replies/me\r\n"),
            "{text}"
        );
        let msg = Message {
            subject: Bytes::from_static(b"svc"),
            reply: Some(Bytes::from_static(b"$MQTT.rr.x.y")),
            headers: None,
            payload: Bytes::new(),
            facts: DeliveryFacts::from_origin(ConnId(1)),
            extra: Some(extra),
        };
        assert_eq!(
            properties_of(&msg).response_topic.unwrap().as_str(),
            "replies/me"
        );
    }
}

//! One MQTT connection's own task: the packets its client sends, handled in order. CONNECT and
//! AUTH are in `connect.rs`; publishing, acknowledging, subscribing and leaving are here.
//!
//! Acknowledgements that promise what is not on the disk yet (a PUBACK of a stored message, a
//! SUBACK of a persistent session) go out behind the read batch's [`Gate`], which the store
//! opens at the commit that holds what the batch submitted (or earlier, see [`Gate`]); later
//! replies queue behind them, in order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use junction_auth::{Checker, Exchange};
use junction_core::mapping::Mapped;
use junction_core::sync::Lock;
use junction_core::{
    subject, Account, AckWait, DeliveryFacts, FlushBatch, MatchCache, Message, Sink, Stats,
    Subscription,
};

use super::bridge::{self, utf8, Bridge};
use super::delivery::SessionCell;
use super::link::Link;
use super::server::{publish_will, MqttServer};
use super::session::{Ack, Acked, Io, RECEIVE_MAXIMUM};
use crate::auth_pool;
use crate::conn_stats::{BatchIn, ConnStats};
use crate::driver::{Conn, Protocol};
use crate::listener::Guard;
use crate::mqtt::codec::{encode, encoded_len, reason, topic};
use crate::mqtt::{
    AckProperties, Connect, DecodeError, Decoder, Packet, PubResp, Publish, QoS, Utf8Bytes,
    Version, Will,
};
use crate::outbound::{Gate, GateOwner, Lane, Outbound};
use crate::transport::Transport;
use crate::CloseReason;

/// Topic aliases a client may set up towards us.
pub(crate) const TOPIC_ALIAS_MAXIMUM: u16 = 64;

/// What a connection needs once it publishes: boxed, so a connection that only subscribes
/// (most devices' downlinks) does not carry it.
#[derive(Default)]
struct Publishing {
    cache: MatchCache,
    batch: FlushBatch,
    /// What the current read batch received.
    received: BatchIn,
}

/// What only the connection's own task touches.
pub(crate) struct Connection {
    pub(super) link: Arc<Link>,
    pub(super) decoder: Decoder,
    pub(super) session: Option<Arc<SessionCell>>,
    pub(super) account: Arc<Account>,
    /// Made on the first publication.
    publishing: Option<Box<Publishing>>,
    pub(super) version: Version,
    /// Boxed: large, and most connections have none.
    pub(super) will: Option<Box<Will>>,
    /// Topic aliases the client set up (5.0), by alias (boxed, as most clients set up none).
    #[allow(clippy::box_collection)] // one word per connection instead of six: most use none
    aliases: Option<Box<HashMap<u16, Utf8Bytes>>>,
    /// The enhanced authentication method the connection authenticated with (5.0).
    pub(super) auth_method: Option<Box<Utf8Bytes>>,
    /// Reason strings may go in acknowledgements (5.0 Request Problem Information).
    pub(super) problem_info: bool,
    /// The largest packet the client takes (5.0 Maximum Packet Size).
    pub(super) client_max_packet: Option<u32>,
    /// An enhanced authentication exchange waiting for the client's next AUTH.
    pub(super) pending_auth: Option<Box<PendingAuth>>,
    /// The gate this read batch's waiting replies are held behind (see the module docs).
    held: Option<Arc<Gate>>,
    /// A gate made for a publication that needed none, untouched, for the next one.
    spare_gate: Option<Arc<Gate>>,
    /// The user's permissions (`None`: everything allowed). Boxed, like the certificate: most
    /// connections have neither, and idle connections should stay small.
    pub(super) perms: Option<Box<Checker>>,
    /// The names in the TLS client certificate, if one was presented.
    pub(super) cert: Option<Box<junction_auth::CertIdentity>>,
    /// The connection is counted in its account's connections.
    pub(super) joined: bool,
    /// The listener takes users from certificates (`verify_and_map`).
    pub(super) map_cert: bool,
    /// Subscriptions the user's JWT allows (its own or its account's `subs`).
    pub(super) sub_limit: Option<u64>,
    /// A CONNECT whose credentials are being checked off the reactor.
    pub(super) waiting: Option<Box<Waiting>>,
    /// The credentials of the CONNECT being checked (`None` for an enhanced authentication
    /// exchange).
    pub(super) presented: Option<Box<junction_auth::Credentials>>,
}

/// A CONNECT waiting for its authentication.
pub(super) struct Waiting {
    pub(super) connect: Connect,
    pub(super) answer: auth_pool::Pending,
}

/// An enhanced authentication exchange in progress.
pub(super) struct PendingAuth {
    pub(super) exchange: Box<dyn Exchange>,
    /// The CONNECT that started it; `None` for a re-authentication of a connected client.
    pub(super) connect: Option<Connect>,
}

impl Connection {
    pub(super) fn server(&self) -> &Arc<MqttServer> {
        &self.link.server
    }

    /// Sends a reply in the order of the connection's replies.
    pub(super) fn send(&self, packet: Packet) {
        let mut buf = BytesMut::new();
        self.encode_for_client(packet, &mut buf);
        self.link.out.push_own(&buf);
    }

    /// Encodes a packet the connection itself sends into `buf`, within the client's Maximum
    /// Packet Size (5.0): a reason string and user properties are left out of one that would be
    /// larger [MQTT-3.4.2-2 and alike]; one that is still larger is not sent.
    fn encode_for_client(&self, mut packet: Packet, buf: &mut BytesMut) {
        if let Some(max) = self.client_max_packet {
            let fits = |p: &Packet| encoded_len(p, self.version).is_ok_and(|n| n <= max as usize);
            if !fits(&packet) {
                strip_optional(&mut packet);
                if !fits(&packet) {
                    tracing::debug!(cid = %self.link.id, packet = packet.name(), max, "packet over the client's maximum size not sent");
                    return;
                }
            }
        }
        let _ = encode(&packet, self.version, buf);
    }

    /// Ends the connection with an MQTT 5 DISCONNECT carrying `code` (3.1.1 just closes).
    pub(super) fn refuse(&self, code: u8, why: CloseReason) -> Result<(), CloseReason> {
        if self.session.is_some() {
            self.link.disconnect(code);
        }
        Err(why)
    }

    fn handle(&mut self, packet: Packet) -> Result<(), CloseReason> {
        tracing::trace!(cid = %self.link.id, packet = ?packet, "<<-");
        if self.session.is_none() {
            return match packet {
                Packet::Connect(c) if self.pending_auth.is_none() => self.connect(*c),
                Packet::Auth(a) if self.pending_auth.is_some() => self.auth(a),
                _ => Err(CloseReason::ProtocolViolation),
            };
        }
        match packet {
            Packet::Connect(_) => {
                self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation)
            }
            Packet::Publish(p) => self.publish(p),
            Packet::PubAck(r) => self.acked(Ack::Puback, &r),
            Packet::PubRec(r) => self.acked(Ack::Pubrec, &r),
            Packet::PubComp(r) => self.acked(Ack::Pubcomp, &r),
            Packet::PubRel(r) => {
                let cell = self.session.clone().expect("connected");
                let durable = {
                    let mut st = cell.state.locked();
                    st.with_io(self.server(), None, |s, io| s.release_qos2(r.packet_id, io))
                };
                // PUBCOMP frees the id for reuse: only once the store forgot it.
                self.send_ordered(
                    Packet::PubComp(PubResp {
                        packet_id: r.packet_id,
                        ..PubResp::default()
                    }),
                    durable,
                );
                Ok(())
            }
            Packet::Subscribe(s) => {
                self.subscribe(s);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                self.unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                let mut buf = BytesMut::new();
                self.encode_for_client(Packet::PingResp, &mut buf);
                self.link.out.push_own_in(Lane::Urgent, &buf);
                Ok(())
            }
            Packet::Disconnect(d) => {
                if d.reason != reason::DISCONNECT_WITH_WILL_MESSAGE {
                    self.will = None;
                }
                if let (Some(cell), Some(expiry)) =
                    (&self.session, d.properties.session_expiry_interval)
                {
                    let mut st = cell.state.locked();
                    if st.session.expiry_secs() == 0 && expiry != 0 {
                        // [MQTT-3.14.2-2]: a session that ends with its connection stays so.
                        drop(st);
                        self.will = None;
                        return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
                    }
                    st.session.set_expiry(expiry);
                }
                Err(CloseReason::ClientClosed)
            }
            // AUTH from a client that named no method is a protocol error [MQTT-4.12.0-6].
            Packet::Auth(a) if self.auth_method.is_some() => self.auth(a),
            Packet::Auth(_) => self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation)
            }
        }
    }

    fn publish(&mut self, mut p: Publish) -> Result<(), CloseReason> {
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
                return self.refuse(reason::TOPIC_ALIAS_INVALID, CloseReason::ProtocolViolation);
            }
            if p.topic.is_empty() {
                match self.aliases.as_ref().and_then(|a| a.get(&alias)) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation)
                    }
                }
            } else {
                self.aliases
                    .get_or_insert_with(Box::default)
                    .insert(alias, p.topic.detached());
            }
        } else if p.topic.is_empty() {
            return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
        }
        let cell = self.session.clone().expect("connected");
        if p.qos == QoS::ExactlyOnce {
            let pending = cell.state.locked().session.inbound_pending();
            // 5.0 clients were told the Receive Maximum; 3.1.1 has none, and a reconnecting
            // client may resend every message it had pending.
            if self.version == Version::V5 && pending >= usize::from(RECEIVE_MAXIMUM) {
                return self.refuse(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    CloseReason::ProtocolViolation,
                );
            }
        }
        let Ok(subject) = topic::topic_to_subject(p.topic.as_bytes()) else {
            return self.refuse(reason::TOPIC_NAME_INVALID, CloseReason::ProtocolViolation);
        };
        if subject.starts_with(subject::BRIDGE_PREFIX) {
            // The bridge's own reply subjects: MQTT responders answer the response topic.
            self.refused_publish(&p, reason::NOT_AUTHORIZED, "topic reserved for the server");
            return Ok(());
        }
        // The account's subject mappings apply to MQTT publications too, before the permission
        // check (as nats-server maps them); a dropped share is acknowledged and goes nowhere.
        let (subject, dropped) = match self.account.map_subject(&subject) {
            Mapped::Same => (subject, false),
            Mapped::To(s) => (Bytes::from(s), false),
            Mapped::Dropped => (subject, true),
        };
        if let Some(perms) = self.perms.as_mut() {
            if !perms.may_publish_bytes(&subject) {
                self.refused_publish(&p, reason::NOT_AUTHORIZED, "publish not permitted");
                return Ok(());
            }
        }
        let mut reply = None;
        if let Some(t) = &p.properties.response_topic {
            // The response topic is where answers will be published on the requester's behalf:
            // it must be a subject the requester may publish to itself.
            let refusal = match topic::topic_to_subject(t.as_bytes()) {
                Err(_) => Some((
                    reason::TOPIC_NAME_INVALID,
                    "response topic cannot be mapped to a subject",
                )),
                Ok(r) if subject::is_reserved_reply(&r) => Some((
                    reason::NOT_AUTHORIZED,
                    "response topic maps to a subject reserved for the server's replies",
                )),
                Ok(r)
                    if self
                        .perms
                        .as_mut()
                        .is_some_and(|c| !c.may_publish_bytes(&r)) =>
                {
                    Some((reason::NOT_AUTHORIZED, "response topic not permitted"))
                }
                Ok(r) => {
                    reply = Some(r);
                    None
                }
            };
            if let Some((code, why)) = refusal {
                self.refused_publish(&p, code, why);
                return Ok(());
            }
        }
        // What this message makes durable (the packet id that marks it received, its copies
        // queued for persistent sessions, the retained copy) commits together, in one group,
        // and the acknowledgement waits for that commit: a QoS 2 id must never be on the disk
        // without the copies (a retry after a crash would be taken for a duplicate and lost).
        // The server and its store are borrowed through this connection's link, not cloned:
        // every connection publishes through them, so a reference count on them would be a
        // cache line all the cores fight over.
        let link = self.link.clone();
        let server = &link.server;
        let store = server.store();
        let submitted = store.as_ref().map(|s| s.submitted());
        // The group travels in the publishing batch, where the sinks that store find it.
        let publishing = self.publishing.get_or_insert_with(Box::default);
        if let Some(s) = store.as_ref().filter(|_| p.qos != QoS::AtMostOnce) {
            s.open_group_in(&mut publishing.batch.group);
        }
        let mut bridged = false;
        if p.qos == QoS::ExactlyOnce {
            let fresh = {
                let mut st = cell.state.locked();
                st.with_io(server, Some(&mut publishing.batch), |s, io| {
                    s.receive_qos2(p.packet_id, io)
                })
            };
            if !fresh {
                // A retry of a message we already have: acknowledge, do not deliver again.
                if let Some(s) = &store {
                    s.close_group_in(&mut publishing.batch.group);
                }
                self.send_ordered(
                    Packet::PubRec(PubResp {
                        packet_id: p.packet_id,
                        ..PubResp::default()
                    }),
                    false,
                );
                return Ok(());
            }
        }
        if let (Some(response), Some(correlation)) = (&reply, &p.properties.correlation_data) {
            // NATS answers the bridge's reply subject; MQTT receivers still see the response
            // topic itself and answer it directly.
            reply = Some(
                self.bridge(&cell)
                    .reply_subject(response.clone(), Bytes::copy_from_slice(correlation)),
            );
            bridged = true;
        }
        let msg = Message {
            subject,
            reply,
            headers: None,
            payload: p.payload.clone(),
            facts: DeliveryFacts {
                origin: cell.conn_id,
                qos: Some(p.qos as u8),
                retain: p.retain,
                expiry_secs: p.properties.message_expiry_interval,
            },
            extra: bridge::extra_of(&p.properties, bridged),
        };
        // QoS 1 copies sent at once to online persistent subscribers are counted into the
        // batch's gate (their acknowledgements can open it before the commit).
        let fresh = self.held.is_none();
        let ack_wait: Option<Arc<dyn AckWait>> =
            (store.is_some() && p.qos == QoS::AtLeastOnce).then(|| self.gate() as Arc<dyn AckWait>);
        let publishing = self.publishing.get_or_insert_with(Box::default);
        if p.retain && !dropped {
            server.retain(
                self.account.name(),
                &msg,
                p.qos as u8,
                &mut publishing.batch,
            );
        }
        publishing.received.msgs += 1;
        publishing.received.bytes += msg.payload.len() as u64;
        publishing.batch.refused = false;
        publishing.batch.early_copies = 0;
        publishing.batch.ack_wait = ack_wait;
        if !dropped {
            self.account
                .publish(&mut publishing.cache, &msg, &mut publishing.batch);
        }
        publishing.batch.ack_wait = None;
        let early = publishing.batch.early_copies;
        // A subscriber's full queue refused it (`queue_full: refuse`): a 5.0 publisher hears
        // 0x97 instead of a success; a QoS 2 flow ends there.
        let quota = publishing.batch.refused && self.version == Version::V5;
        if quota && p.qos == QoS::ExactlyOnce {
            let mut st = cell.state.locked();
            st.with_io(server, Some(&mut publishing.batch), |s, io| {
                s.abandon_qos2(p.packet_id, io)
            });
        }
        if fresh && early == 0 && p.qos == QoS::AtLeastOnce {
            // Not used (no copy counted in, nothing held yet): kept untouched for the next
            // publication, so a QoS 1 stream to clean sessions allocates none per message.
            self.spare_gate = self.held.take();
        }
        if let Some(s) = &store {
            s.close_group_in(&mut publishing.batch.group);
        }
        let submitted_now = match (&store, submitted) {
            (Some(s), Some(before)) => s.submitted() - before,
            _ => 0,
        };
        let durable = submitted_now > 0;
        // Only early-sent copies went to the store (no retained message, no queued copy).
        let early_only = durable && submitted_now == early as u64 && !p.retain;
        let code = if quota {
            reason::QUOTA_EXCEEDED
        } else {
            reason::SUCCESS
        };
        let ack = PubResp {
            packet_id: p.packet_id,
            reason: code,
            ..PubResp::default()
        };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_held(Packet::PubAck(ack), durable, early_only),
            QoS::ExactlyOnce => self.send_ordered(Packet::PubRec(ack), durable),
        }
        Ok(())
    }

    /// A publication the server does not make: dropped; 5.0 hears `code` (and `why`, unless
    /// the client asked for no problem information) in its PUBACK or PUBREC, 3.1.1 (which has
    /// no way to say it) gets the usual acknowledgement.
    fn refused_publish(&mut self, p: &Publish, code: u8, why: &str) {
        tracing::debug!(cid = %self.link.id, topic = %p.topic.as_str(), why, "publish refused");
        let v5 = self.version == Version::V5;
        let ack = PubResp {
            packet_id: p.packet_id,
            reason: if v5 { code } else { 0 },
            properties: AckProperties {
                reason_string: (v5 && self.problem_info).then(|| utf8(why)),
                ..Default::default()
            },
        };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_ordered(Packet::PubAck(ack), false),
            // A refused QoS 2 message ends at PUBREC (5.0: a reason code >= 0x80 ends the
            // flow); 3.1.1's PUBREL is answered with PUBCOMP as for any unknown id.
            QoS::ExactlyOnce => self.send_ordered(Packet::PubRec(ack), false),
        }
    }

    /// The session's request/response bridge, made on first use.
    fn bridge(&self, cell: &Arc<SessionCell>) -> Arc<Bridge> {
        let mut st = cell.state.locked();
        if let Some(b) = &st.bridge {
            return b.0.clone();
        }
        let perms = self.perms.as_ref().map(|c| c.shared());
        let bridge = Arc::new(Bridge::new(self.account.clone(), perms));
        let sink: Arc<dyn Sink> = bridge.clone();
        let sub = Arc::new(Subscription::new(
            cell.conn_id,
            Bytes::from(format!("{}.*", bridge.prefix)),
            None,
            Bytes::new(),
            false,
            sink,
        ));
        if self.account.subscribe(sub.clone()).is_ok() {
            st.bridge = Some(Box::new((bridge.clone(), sub)));
        }
        bridge
    }

    /// The client acknowledged one of our QoS 1/2 messages (see [`super::session::Session::acked`]).
    fn acked(&mut self, kind: Ack, r: &PubResp) -> Result<(), CloseReason> {
        let Some(cell) = self.session.as_deref() else {
            return Ok(());
        };
        let answer = {
            let mut st = cell.state.locked();
            let answer = st.with_io(self.server(), None, |s, io| s.acked(kind, r, io));
            if st.session.queued() <= super::session::QUEUE_LOW_WATERMARK {
                st.drained();
            }
            answer
        };
        match answer {
            Ok(Acked::Done) => Ok(()),
            Ok(Acked::PubRel { packet, durable }) => {
                self.send_ordered(*packet, durable);
                Ok(())
            }
            Err(_) => {
                tracing::debug!(cid = %self.link.id, packet_id = r.packet_id, ?kind, "acknowledgement of the wrong kind");
                self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation)
            }
        }
    }

    /// This read batch's gate, made on first use.
    fn gate(&mut self) -> Arc<Gate> {
        if self.held.is_none() {
            let gate = self.spare_gate.take().unwrap_or_else(|| {
                let owner: std::sync::Weak<dyn GateOwner> = Arc::downgrade(&self.link) as _;
                Gate::new(owner)
            });
            self.held = Some(gate);
        }
        self.held.clone().expect("just set")
    }

    /// Sends a reply in order with the connection's other replies: held behind the batch's
    /// gate when `durable` (what it acknowledges was just submitted to the store).
    pub(super) fn send_ordered(&mut self, packet: Packet, durable: bool) {
        self.send_held(packet, durable, false)
    }

    /// [`Connection::send_ordered`]; `early_only`: what it acknowledges went to the store only
    /// as QoS 1 copies already sent to online subscribers, whose acknowledgements can open
    /// the gate before the commit.
    fn send_held(&mut self, packet: Packet, durable: bool, early_only: bool) {
        if !durable || self.server().store().is_none() {
            return self.send(packet);
        }
        let gate = self.gate();
        if !early_only {
            gate.require_commit();
        }
        let mut buf = BytesMut::new();
        self.encode_for_client(packet, &mut buf);
        self.link.out.push_gated(Lane::Replies, &gate, &buf);
    }

    /// Closes this read batch's gate to additions and asks the store to open it at the commit
    /// that holds everything submitted so far (it may open earlier, see [`Gate`]).
    fn seal_gate(&mut self) {
        let Some(gate) = self.held.take() else {
            return;
        };
        gate.seal();
        if gate.is_open() {
            return;
        }
        if let Some(store) = self.server().store() {
            store.then(Box::new(move |_| gate.committed()));
        }
    }

    /// The connection ended without a normal DISCONNECT: publish the will now, or after its
    /// delay (5.0) unless the client comes back to its session first.
    fn will_on_close(&mut self) {
        let delay = self
            .will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval)
            .unwrap_or(0);
        let Some(cell) = self.session.clone() else {
            return;
        };
        let (expiry, taken_over) = {
            let st = cell.state.locked();
            let taken_over = st
                .link
                .as_ref()
                .is_some_and(|l| !Arc::ptr_eq(l, &self.link));
            (st.session.expiry_secs(), taken_over)
        };
        if taken_over && delay > 0 {
            // The client is already back within the will delay: no will.
            self.will = None;
            return;
        }
        // The will goes at the earlier of the delay and the session's end.
        let wait = delay.min(expiry);
        if wait == 0 {
            if let Some(will) = self.will.take() {
                publish_will(self.server(), &self.account, cell.conn_id, will);
            }
            return;
        }
        // The sweep publishes it when due, unless the client comes back first; a persistent
        // session keeps it in the store, so it is due across a restart too.
        if let Some(will) = self.will.take() {
            let mut st = cell.state.locked();
            st.with_io(self.server(), None, |s, io| {
                let due = io.now().at + Duration::from_secs(u64::from(wait));
                s.defer_will(will, due, io)
            });
        }
    }

    fn decode_failed(&mut self, e: &DecodeError) -> Result<(), CloseReason> {
        tracing::debug!(cid = %self.link.id, error = %e, "MQTT protocol error");
        let code = e.reason_code();
        if self.session.is_none() {
            // Before CONNECT was accepted: refuse with a CONNACK where the client's level has
            // a code for it (5.0: every reason; 3.1.1: bad version, bad client id), else close.
            let level5 = self.decoder.protocol() == Some(Version::V5);
            if level5
                || code == reason::UNSUPPORTED_PROTOCOL_VERSION
                || code == reason::CLIENT_IDENTIFIER_NOT_VALID
            {
                let packet = Packet::ConnAck(Box::new(crate::mqtt::ConnAck {
                    code,
                    ..Default::default()
                }));
                let mut buf = BytesMut::new();
                let version = if level5 { Version::V5 } else { Version::V311 };
                if encode(&packet, version, &mut buf).is_ok() {
                    self.link.out.push_own(&buf);
                }
            }
            return Err(CloseReason::ProtocolViolation);
        }
        let why = if code == reason::PACKET_TOO_LARGE {
            CloseReason::MaxPayloadExceeded
        } else {
            CloseReason::ProtocolViolation
        };
        self.refuse(code, why)
    }
}

/// Leaves out the reason string and user properties of a packet the server sends (what the
/// specification lets a server omit to respect the client's Maximum Packet Size).
pub(super) fn strip_optional(packet: &mut Packet) {
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            r.properties = Default::default()
        }
        Packet::SubAck(a) => a.properties = Default::default(),
        Packet::UnsubAck(a) => a.properties = Default::default(),
        Packet::Disconnect(d) => {
            d.properties.reason_string = None;
            d.properties.user_properties.clear();
        }
        Packet::Auth(a) => {
            a.properties.reason_string = None;
            a.properties.user_properties.clear();
        }
        _ => {}
    }
}

impl Protocol for Connection {
    fn outbound(&self) -> &Outbound {
        &self.link.out
    }

    fn process(&mut self, rbuf: &mut BytesMut) -> Result<(), CloseReason> {
        self.link
            .last_read_ms
            .store(self.server().now_ms(), Ordering::Relaxed);
        loop {
            match self.decoder.decode(rbuf) {
                Ok(Some(packet)) => {
                    self.handle(packet)?;
                    if self.waiting.is_some() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return self.decode_failed(&e),
            }
        }
    }

    fn poll_resume(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, CloseReason>> {
        let Some(waiting) = self.waiting.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        let answer = std::task::ready!(waiting.answer.as_mut().poll(cx));
        let Waiting { connect, .. } = *self.waiting.take().expect("checked above");
        Poll::Ready(self.authenticated(connect, answer).map(|()| true))
    }

    fn end_batch(&mut self) -> Vec<Arc<dyn Sink>> {
        self.seal_gate();
        let Some(p) = self.publishing.as_deref_mut() else {
            return Vec::new();
        };
        p.batch.wake_all();
        self.link
            .stats
            .end_batch(self.link.server.bus.stats(), &mut p.received, &mut p.batch);
        p.batch.take_backlogged()
    }

    fn write_deadline(&self) -> Duration {
        self.link.opts.write_deadline
    }

    fn write_deadline_exceeded(&self) {
        Stats::add(&self.server().bus.stats().slow_consumers, 1);
        tracing::info!(
            "{} - cid:{} - Slow Consumer Detected: WriteDeadline of {:?} exceeded",
            self.link.stats.peer,
            self.link.id.0,
            self.link.opts.write_deadline
        );
    }

    fn end(&mut self, reason: CloseReason) {
        let server = self.server().clone();
        if self.joined {
            self.account.leave();
        }
        if self.will.is_some() {
            self.will_on_close();
        }
        if let Some(cell) = self.session.take() {
            let keep = {
                let mut st = cell.state.locked();
                let ours = st.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, &self.link));
                if ours {
                    st.with_io(&server, None, |s, io| s.detach(io));
                    st.link = None;
                    st.drained();
                }
                !ours || st.session.expiry_secs() > 0
            };
            if !keep {
                cell.unsubscribe_all();
                let key = (cell.account.name().to_string(), cell.client_id.clone());
                let mut sessions = server.sessions.locked();
                if sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, &cell)) {
                    sessions.remove(&key);
                }
            }
        }
        self.link.out.close(reason);
        server.bus.conns().close(self.link.id, reason.as_str());
        if reason == CloseReason::SlowConsumerPendingBytes {
            tracing::info!(
                "{} - cid:{} - Slow Consumer Detected: MaxPending of {} Exceeded",
                self.link.stats.peer,
                self.link.id.0,
                self.link.opts.max_pending
            );
        }
        tracing::debug!(cid = %self.link.id, reason = %reason, "MQTT connection closed");
    }
}

/// Starts serving one accepted MQTT connection.
pub(crate) fn start<T: Transport>(
    io: T,
    peer: SocketAddr,
    server: Arc<MqttServer>,
    cert: Option<junction_auth::CertIdentity>,
    map_cert: bool,
    guard: Guard,
) -> Conn<Connection, T> {
    let id = server.bus.next_conn_id();
    let link = Arc::new(Link::new(id, server.clone(), ConnStats::new(peer)));
    server.bus.conns().open(id, link.clone());
    tracing::debug!(cid = %id, peer = %peer, "accepted MQTT connection");
    let conn = Connection {
        link: link.clone(),
        decoder: Decoder::new(link.opts.max_packet_size),
        session: None,
        account: server.bus.default_account(),
        publishing: None,
        version: Version::V311,
        will: None,
        aliases: None,
        auth_method: None,
        problem_info: true,
        client_max_packet: None,
        pending_auth: None,
        held: None,
        spare_gate: None,
        perms: None,
        cert: cert.map(Box::new),
        joined: false,
        map_cert,
        sub_limit: None,
        waiting: None,
        presented: None,
    };
    Conn::new(io, conn, guard)
}

//! A session on the bus: the [`Session`] state machine behind its lock, with what the bus and
//! the store need around it ([`SessionCell`]), the sink of its subscriptions that offers it
//! messages ([`SessionSink`]), and the [`Io`] that carries out what it asks for on its current
//! connection ([`LinkIo`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use junction_auth::Checker;
use junction_core::sync::Lock;
use junction_core::{
    subject, Account, AckWait, ConnId, Delivery, FlushBatch, Message, Sink, Stats, Subscription,
};
use junction_store::{Op, Store};

use super::bridge::{self, Bridge};
use super::durable::SubRecord;
use super::link::Link;
use super::server::MqttServer;
use super::session::{Io, Now, Offered, Session};
use crate::mqtt::codec::{encode, topic};
use crate::mqtt::{Packet, Publish, QoS, Utf8Bytes, Version, Will};
use crate::outbound::{Gate, GateOwner, Lane, Push};

/// One session and everything around it; shared by the session's connection (while it has
/// one) and the sinks of its subscriptions.
pub(crate) struct SessionCell {
    pub(crate) client_id: Arc<str>,
    /// Stable across reconnects: the origin of the session's publications (no local).
    pub(crate) conn_id: ConnId,
    pub(crate) account: Arc<Account>,
    pub(crate) server: Arc<MqttServer>,
    /// Messages dropped from the session's full queue (shown with its connection in /connz).
    pub(crate) dropped: AtomicU64,
    /// Subscriptions of the session (shown with its connection in /connz).
    pub(crate) subscription_count: AtomicU64,
    pub(crate) state: Mutex<CellState>,
}

/// What the lock of a [`SessionCell`] guards.
pub(crate) struct CellState {
    pub(crate) session: Session,
    /// The connection the session is attached to.
    pub(crate) link: Option<Arc<Link>>,
    /// The core subscriptions of each MQTT subscription (a filter `a/#` is two: `a.>` and `a`).
    pub(crate) core: BTreeMap<Bytes, Vec<Arc<Subscription>>>,
    /// The session's request/response bridge, made on its first request with correlation data.
    pub(crate) bridge: Option<Box<(Arc<Bridge>, Arc<Subscription>)>>,
    /// Publishers waiting for the queue to drain.
    pub(crate) drain_wakers: Vec<Waker>,
    /// The connected user's delivery filter (a deny its wildcard subscriptions overlap).
    pub(crate) receive: Option<Box<Checker>>,
}

impl CellState {
    /// Runs `f` on the session with an [`Io`] for its current connection.
    pub(crate) fn with_io<R>(
        &mut self,
        server: &MqttServer,
        batch: Option<&mut FlushBatch>,
        f: impl FnOnce(&mut Session, &mut LinkIo<'_>) -> R,
    ) -> R {
        let CellState { session, link, .. } = self;
        let mut io = LinkIo {
            link: link.as_deref(),
            link_arc: link.as_ref(),
            store: server.store(),
            batch,
            now: None,
        };
        f(session, &mut io)
    }

    /// Wakes the publishers waiting for the queue to drain.
    pub(crate) fn drained(&mut self) {
        for w in self.drain_wakers.drain(..) {
            w.wake();
        }
    }
}

/// What installing a subscription made.
pub(crate) struct Installed {
    pub(crate) sink: Arc<SessionSink>,
    pub(crate) dyn_sink: Arc<dyn Sink>,
    /// The core subjects it listens on (retained messages are matched against them).
    pub(crate) subjects: Vec<Bytes>,
    /// One existed on the same filter before.
    pub(crate) existed: bool,
    /// A shared subscription (no retained messages).
    pub(crate) shared: bool,
}

impl SessionCell {
    pub(crate) fn new(
        client_id: Arc<str>,
        account: Arc<Account>,
        server: Arc<MqttServer>,
        session: Session,
    ) -> Self {
        SessionCell {
            client_id,
            conn_id: server.bus.next_conn_id(),
            account,
            server,
            dropped: AtomicU64::new(0),
            subscription_count: AtomicU64::new(0),
            state: Mutex::new(CellState {
                session,
                link: None,
                core: BTreeMap::new(),
                bridge: None,
                drain_wakers: Vec::new(),
                receive: None,
            }),
        }
    }

    /// Installs one subscription (replacing one on the same filter). `None`: the filter cannot
    /// be mapped to subjects.
    pub(crate) fn install(self: &Arc<Self>, record: SubRecord) -> Option<Installed> {
        let text = Bytes::from(record.filter.clone().into_bytes());
        let (queue, inner) = match topic::shared_subscription(&text) {
            Some((g, inner)) => (Some(Bytes::copy_from_slice(g)), text.slice_ref(inner)),
            None => (None, text.clone()),
        };
        let subjects = topic::filter_to_subjects(&inner).ok()?;
        let concrete = Arc::new(SessionSink {
            cell: self.clone(),
            qos: QoS::from_bits(record.qos).unwrap_or_default(),
            retain_as_published: record.retain_as_published,
            subscription_id: record.subscription_id,
        });
        let sink: Arc<dyn Sink> = concrete.clone();
        let mut core = Vec::new();
        let all: Vec<Bytes> = std::iter::once(subjects.subject.clone())
            .chain(subjects.parent.clone())
            .collect();
        for subj in &all {
            let sub = Arc::new(Subscription::new(
                self.conn_id,
                subj.clone(),
                queue.clone(),
                Bytes::new(),
                record.no_local,
                sink.clone(),
            ));
            if self.account.subscribe(sub.clone()).is_ok() {
                core.push(sub);
            }
        }
        let replaced = {
            let mut st = self.state.locked();
            let existed = st.session.subscribe(text.clone(), record);
            let old = st.core.insert(text, core);
            self.subscription_count
                .store(st.session.subscriptions() as u64, Ordering::Relaxed);
            (existed, old)
        };
        let (existed, old) = replaced;
        for sub in old.unwrap_or_default() {
            self.account.unsubscribe(&sub);
        }
        Some(Installed {
            sink: concrete,
            dyn_sink: sink,
            subjects: all,
            existed,
            shared: queue.is_some(),
        })
    }

    /// Removes the subscription on `filter`; whether there was one.
    pub(crate) fn uninstall(&self, filter: &[u8]) -> bool {
        let core = {
            let mut st = self.state.locked();
            let existed = st.session.unsubscribe(filter);
            self.subscription_count
                .store(st.session.subscriptions() as u64, Ordering::Relaxed);
            st.core.remove(filter).filter(|_| existed)
        };
        match core {
            Some(subs) => {
                for sub in subs {
                    self.account.unsubscribe(&sub);
                }
                true
            }
            None => false,
        }
    }

    /// Removes every subscription of the session (and its bridge's) from the bus.
    pub(crate) fn unsubscribe_all(&self) {
        let subs: Vec<Arc<Subscription>> = {
            let mut st = self.state.locked();
            let bridge = st.bridge.take().map(|b| b.1);
            std::mem::take(&mut st.core)
                .into_values()
                .flatten()
                .chain(bridge)
                .collect()
        };
        for sub in subs {
            self.account.unsubscribe(&sub);
        }
    }

    /// Ends a session taken out of the server's map: its subscriptions and stored state go;
    /// returns its pending will, which is due now, for the caller to publish outside its locks.
    pub(crate) fn end(&self) -> Option<Box<Will>> {
        let will = {
            let mut st = self.state.locked();
            st.with_io(&self.server, None, |s, io| s.end(io))
        };
        self.unsubscribe_all();
        will
    }

    /// Whether the session is detached and its expiry passed.
    pub(crate) fn expired(&self, now: std::time::Instant) -> bool {
        self.state.locked().session.expired(now)
    }
}

/// Carries out what a session asks for on its current connection (if it has one) and in the
/// store (if the server has one).
pub(crate) struct LinkIo<'a> {
    link: Option<&'a Link>,
    link_arc: Option<&'a Arc<Link>>,
    store: Option<&'a Arc<Store>>,
    /// The publisher's batch, while a publication is offered.
    batch: Option<&'a mut FlushBatch>,
    /// The time, read once per input, when a rule needs it.
    now: Option<Now>,
}

impl Io for LinkIo<'_> {
    fn send(
        &mut self,
        packet: &Packet,
        version: Version,
        len: usize,
        msg_bytes: u64,
        gated: bool,
    ) -> Push {
        let Some(link) = self.link else {
            return Push::Closed;
        };
        if gated {
            // Held until the store committed what the session submitted so far (a QoS 2
            // message's record and packet id).
            let mut buf = BytesMut::with_capacity(len);
            if encode(packet, version, &mut buf).is_err() {
                return Push::Closed;
            }
            let Some(l) = self.link_arc else {
                return Push::Closed;
            };
            let owner: std::sync::Weak<dyn GateOwner> = Arc::downgrade(l) as _;
            let gate = Gate::commit(owner);
            link.out.push_gated(Lane::Deliveries, &gate, &buf);
            match (self.store, self.batch.as_deref_mut()) {
                (Some(store), Some(batch)) => {
                    store.then_in(&mut batch.group, Box::new(move |_| gate.committed()))
                }
                (Some(store), None) => store.then(Box::new(move |_| gate.committed())),
                (None, _) => gate.committed(),
            }
            return Push::Queued {
                was_empty: false,
                backlogged: false,
            };
        }
        if matches!(packet, Packet::Publish(_)) {
            return link.out.push(len, msg_bytes, |b| {
                let _ = encode(packet, version, b);
            });
        }
        let mut buf = BytesMut::with_capacity(len);
        if encode(packet, version, &mut buf).is_ok() {
            link.out.push_own_in(Lane::Deliveries, &buf);
        }
        Push::Queued {
            was_empty: false,
            backlogged: false,
        }
    }

    fn store(&mut self, op: Op) {
        match (self.store, self.batch.as_deref_mut()) {
            (Some(store), Some(batch)) => store.submit_in(&mut batch.group, op),
            (Some(store), None) => store.submit(op),
            (None, _) => {}
        }
    }

    fn ack_wait(&mut self) -> Option<Arc<dyn AckWait>> {
        self.batch.as_ref().and_then(|b| b.ack_wait.clone())
    }

    fn now(&mut self) -> Now {
        *self.now.get_or_insert_with(Now::current)
    }

    fn keep(&mut self, payload: &Bytes) -> Bytes {
        match self.batch.as_deref_mut() {
            Some(batch) => batch.kept_payload(payload),
            None => Bytes::copy_from_slice(payload),
        }
    }
}

/// Whether a subject matches an MQTT-derived filter, with the MQTT rule that a leading
/// wildcard does not match topics starting with `$`.
pub(crate) fn matches_filter(filter: &[u8], subj: &[u8]) -> bool {
    if subj.first() == Some(&b'$') && matches!(filter.first(), Some(b'*' | b'>')) {
        return false;
    }
    subject::matches(filter, subj)
}

/// The receiving end of one MQTT subscription: offers each message to its session.
pub(crate) struct SessionSink {
    pub(crate) cell: Arc<SessionCell>,
    qos: QoS,
    retain_as_published: bool,
    subscription_id: Option<u32>,
}

impl SessionSink {
    /// The PUBLISH for a message from the bus; its topic is filled in by the session.
    pub(crate) fn publish_for(&self, msg: &Message, retained: bool) -> Publish {
        let qos = match msg.facts.qos {
            Some(q) => q.min(self.qos as u8),
            None => self
                .cell
                .server
                .nats_qos
                .load(Ordering::Relaxed)
                .min(self.qos as u8),
        };
        let mut properties = bridge::properties_of(msg);
        if let Some(id) = self.subscription_id {
            properties.subscription_identifiers.push(id);
        }
        Publish {
            dup: false,
            qos: QoS::from_bits(qos).unwrap_or_default(),
            retain: retained || (self.retain_as_published && msg.facts.retain),
            topic: Utf8Bytes::default(),
            packet_id: 0,
            properties,
            payload: msg.payload.clone(),
        }
    }

    /// Offers one message to the session; `batch` is the publisher's (`None` for a retained
    /// message sent after a SUBSCRIBE).
    pub(crate) fn offer(
        &self,
        publish: Publish,
        subject: &Bytes,
        batch: Option<&mut FlushBatch>,
        me: &Arc<dyn Sink>,
    ) -> Delivery {
        let cell = &self.cell;
        let server = &cell.server;
        let mut st = cell.state.locked();
        if let Some(r) = st.receive.as_mut() {
            if !r.may_receive(&String::from_utf8_lossy(subject)) {
                return Delivery::Dropped;
            }
        }
        let mut batch = batch;
        let (offered, early) = st.with_io(server, batch.as_deref_mut(), |s, io| {
            let qos = publish.qos;
            let before_early = io.batch.as_ref().is_some_and(|b| b.ack_wait.is_some())
                && qos == QoS::AtLeastOnce
                && s.durable();
            let offered = s.offer(publish, subject, io);
            let early = before_early && matches!(offered, Offered::Sent { .. });
            (offered, early)
        });
        // Without a publisher's batch (a retained message after SUBACK) nobody else wakes the
        // writer.
        let link = if batch.is_none() {
            st.link.clone()
        } else {
            None
        };
        drop(st);
        match offered {
            Offered::Sent { wake } => {
                if let Some(batch) = batch {
                    if early {
                        batch.early_copies += 1;
                    }
                    if wake {
                        batch.touch(me.clone());
                    }
                } else if let Some(link) = link {
                    link.out.wake();
                }
                Delivery::Queued
            }
            Offered::Queued { backlog, overflow } => {
                if overflow {
                    self.overflowed(false);
                }
                if let (true, Some(batch)) = (backlog, batch) {
                    batch.backlog(me);
                }
                Delivery::Queued
            }
            Offered::Refused => {
                self.overflowed(true);
                if let Some(batch) = batch {
                    batch.refused = true;
                }
                Delivery::Dropped
            }
            Offered::SlowConsumer => {
                Stats::add(&server.bus.stats().slow_consumers, 1);
                Delivery::Dropped
            }
            Offered::Dropped => Delivery::Dropped,
        }
    }

    /// The session's queue was full: counted, and said loudly the first time.
    fn overflowed(&self, refused: bool) {
        let cell = &self.cell;
        Stats::add(&cell.server.bus.stats().queue_dropped, 1);
        if cell.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                client_id = %cell.client_id,
                max_queued = cell.server.opts.get().max_queued,
                "an MQTT session's queue is full: {}",
                if refused {
                    "new messages for it are refused (MQTT 5 publishers hear 0x97)"
                } else {
                    "its oldest messages, already acknowledged to their publishers, are dropped"
                }
            );
        }
    }
}

impl Sink for SessionSink {
    fn deliver(&self, sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        if !matches_filter(&sub.subject, &msg.subject) {
            // A leading wildcard does not match a `$` topic in MQTT.
            return Delivery::Dropped;
        }
        let publish = self.publish_for(msg, false);
        self.offer(publish, &msg.subject, Some(batch), &sub.sink)
    }

    fn flush(&self) {
        let link = self.cell.state.locked().link.clone();
        if let Some(link) = link {
            link.out.wake();
        }
    }

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let link = {
            let mut st = self.cell.state.locked();
            if st.session.should_wait() {
                if !st.drain_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    st.drain_wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            st.link.clone()
        };
        match link {
            Some(link) => link.out.poll_drained(cx),
            None => Poll::Ready(()),
        }
    }

    fn stall_timed_out(&self) {
        let link = {
            let mut st = self.cell.state.locked();
            st.session.set_stuck();
            st.link.clone()
        };
        if let Some(link) = link {
            link.out.stall_timed_out();
        }
    }
}

//! CONNECT and AUTH: authenticating a client (off the reactor when that is costly, with an
//! enhanced authentication exchange when it names a method), then admitting it: its account,
//! its permissions, its session taken over or started, and the CONNACK, which for a persistent
//! session goes out only once the session is on the disk.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use junction_auth::{AuthError, AuthStep, Checker, Credentials, Exchange, Identity};
use junction_core::sync::Lock;
use junction_core::Stats;

use super::bridge::utf8;
use super::connection::{Connection, PendingAuth, Waiting, TOPIC_ALIAS_MAXIMUM};
use super::delivery::SessionCell;
use super::durable;
use super::server::publish_will;
use super::session::{Attach, Session, RECEIVE_MAXIMUM};
use crate::auth_pool;
use crate::mqtt::codec::{encode, encoded_len, reason, topic};
use crate::mqtt::{Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, Packet, Version};
use crate::outbound::{Gate, GateOwner, Lane};
use crate::CloseReason;

fn connack(code: u8) -> Packet {
    Packet::ConnAck(Box::new(ConnAck {
        session_present: false,
        code,
        properties: ConnAckProperties::default(),
    }))
}

impl Connection {
    pub(super) fn connect(&mut self, c: Connect) -> Result<(), CloseReason> {
        self.link.connect_seen.store(true, Ordering::Relaxed);
        let server = self.server().clone();
        self.version = self.decoder.protocol().unwrap_or(Version::V311);
        let limit = self.link.opts.max_connections;
        if limit > 0 && server.open.get() > limit {
            tracing::warn!(cid = %self.link.id, "maximum MQTT connections exceeded");
            self.send(connack(match self.version {
                Version::V5 => reason::QUOTA_EXCEEDED,
                Version::V311 => reason::SERVER_UNAVAILABLE,
            }));
            return Err(CloseReason::MaxConnectionsExceeded);
        }
        let creds = Credentials {
            user: c.username.as_ref().map(|u| u.as_str().to_string()),
            pass: c
                .password
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            cert: self.cert.as_deref().cloned(),
            map_cert: self.map_cert,
            mqtt: true,
            ..Credentials::default()
        };
        if let Some(method) = c.properties.authentication_method.clone() {
            // Enhanced authentication (5.0 only: the decoder refuses the property in 3.1.1).
            let Some(mut exchange) = server.auth.exchange(method.as_str(), &creds) else {
                self.send(connack(reason::BAD_AUTHENTICATION_METHOD));
                return Err(CloseReason::AuthenticationViolation);
            };
            let step = exchange.step(c.properties.authentication_data.as_deref());
            self.auth_method = Some(Box::new(method));
            return self.auth_step(step, exchange, Some(c));
        }
        self.presented = Some(Box::new(creds.clone()));
        match auth_pool::authenticate(&server.auth, creds) {
            Ok(answer) => self.authenticated(c, answer),
            Err(answer) => {
                // Nothing more is read until the answer comes (see `poll_resume`).
                self.waiting = Some(Box::new(Waiting { connect: c, answer }));
                Ok(())
            }
        }
    }

    /// Admits a client whose credentials were checked, or refuses it.
    pub(super) fn authenticated(
        &mut self,
        c: Connect,
        answer: Result<Identity, AuthError>,
    ) -> Result<(), CloseReason> {
        let identity = match answer {
            Ok(id) => id,
            Err(e) => {
                Stats::add(&self.server().bus.stats().auth_failures, 1);
                tracing::error!(
                    "{} - cid:{} - MQTT authentication error: {e}",
                    self.link.stats.peer,
                    self.link.id.0
                );
                // 5.0: 0x86 for wrong credentials, 0x87 otherwise; 3.1.1 gets return code 5
                // for both, as nats-server sends.
                let code = match (&e, self.version) {
                    (AuthError::BadCredentials(_), Version::V5) => {
                        reason::BAD_USER_NAME_OR_PASSWORD
                    }
                    _ => reason::NOT_AUTHORIZED,
                };
                self.send(connack(code));
                return Err(CloseReason::AuthenticationViolation);
            }
        };
        self.admit(c, identity, None)
    }

    /// An AUTH packet: the next step of an exchange, or the start of a re-authentication.
    pub(super) fn auth(&mut self, a: Auth) -> Result<(), CloseReason> {
        let connected = self.session.is_some();
        if a.properties.authentication_method.as_ref() != self.auth_method.as_deref() {
            // [MQTT-4.12.0-5] and [MQTT-4.12.1-1]: the method cannot change.
            return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
        }
        let data = a.properties.authentication_data.as_deref();
        match a.reason {
            reason::CONTINUE_AUTHENTICATION => {
                let Some(pending) = self.pending_auth.take() else {
                    return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
                };
                let PendingAuth {
                    mut exchange,
                    connect,
                } = *pending;
                let step = exchange.step(data);
                self.auth_step(step, exchange, connect)
            }
            reason::RE_AUTHENTICATE if connected && self.pending_auth.is_none() => {
                let method = self.auth_method.as_deref().cloned().expect("checked above");
                let creds = Credentials::default();
                let Some(mut exchange) = self.server().auth.exchange(method.as_str(), &creds)
                else {
                    return self.refuse(
                        reason::BAD_AUTHENTICATION_METHOD,
                        CloseReason::AuthenticationViolation,
                    );
                };
                let step = exchange.step(data);
                self.auth_step(step, exchange, None)
            }
            _ => self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation),
        }
    }

    /// Acts on one step of an exchange: challenge the client again, admit it, or refuse it.
    fn auth_step(
        &mut self,
        step: AuthStep,
        exchange: Box<dyn Exchange>,
        connect: Option<Connect>,
    ) -> Result<(), CloseReason> {
        let method = self.auth_method.as_deref().cloned();
        match (step, connect) {
            (AuthStep::Continue(data), connect) => {
                self.send(Packet::Auth(Auth {
                    reason: reason::CONTINUE_AUTHENTICATION,
                    properties: AuthProperties {
                        authentication_method: method,
                        authentication_data: Some(Bytes::from(data)),
                        ..AuthProperties::default()
                    },
                }));
                self.pending_auth = Some(Box::new(PendingAuth { exchange, connect }));
                Ok(())
            }
            (AuthStep::Done { identity, data }, Some(c)) => self.admit(c, identity, data),
            (AuthStep::Done { identity, data }, None) => {
                // A re-authentication cannot move the connection to another account.
                if identity.account != self.account.name() {
                    return self
                        .refuse(reason::NOT_AUTHORIZED, CloseReason::AuthenticationViolation);
                }
                self.send(Packet::Auth(Auth {
                    reason: reason::SUCCESS,
                    properties: AuthProperties {
                        authentication_method: method,
                        authentication_data: data.map(Bytes::from),
                        ..AuthProperties::default()
                    },
                }));
                Ok(())
            }
            (AuthStep::Refused, Some(_)) => {
                self.send(connack(reason::NOT_AUTHORIZED));
                Err(CloseReason::AuthenticationViolation)
            }
            (AuthStep::Refused, None) => {
                self.refuse(reason::NOT_AUTHORIZED, CloseReason::AuthenticationViolation)
            }
        }
    }

    /// Admits an authenticated client: takes over or starts its session and sends CONNACK
    /// (with the final enhanced authentication data, when there was an exchange).
    fn admit(
        &mut self,
        c: Connect,
        identity: Identity,
        auth_data: Option<Vec<u8>>,
    ) -> Result<(), CloseReason> {
        let server = self.server().clone();
        let admitted = match self.presented.take() {
            Some(creds) => crate::recheck::Admitted::of(*creds, &identity),
            None => crate::recheck::Admitted::Exchange,
        };
        let v5 = self.version == Version::V5;
        let mut assigned = None;
        let client_id = if c.client_id.is_empty() {
            if !v5 && !c.clean_start {
                // 3.1.1: a persistent session needs a client identifier (return code 2).
                self.send(connack(reason::CLIENT_IDENTIFIER_NOT_VALID));
                return Err(CloseReason::ProtocolViolation);
            }
            let id = format!("junction-{}", self.link.id.0);
            assigned = Some(id.clone());
            id
        } else {
            c.client_id.as_str().to_string()
        };
        let client_id: Arc<str> = client_id.into();
        let checker = identity
            .permissions
            .clone()
            .filter(|p| !p.is_open())
            .map(|p| Box::new(Checker::new(p)));
        if let (Some(perms), Some(will)) = (&checker, &c.will) {
            let subject = topic::topic_to_subject(will.topic.as_bytes()).unwrap_or_default();
            if !perms
                .permissions()
                .may_publish(&String::from_utf8_lossy(&subject))
            {
                tracing::info!(cid = %self.link.id, topic = %will.topic.as_str(), "will topic not permitted");
                self.send(connack(reason::NOT_AUTHORIZED));
                return Err(CloseReason::AuthenticationViolation);
            }
        }
        self.perms = checker;
        self.sub_limit = identity.limits.subs;
        if let Some(exp) = identity.expires {
            self.link
                .expires
                .store(u64::try_from(exp).unwrap_or(1).max(1), Ordering::Relaxed);
        }
        self.account = server.bus.account_or_create(&identity.account);
        if !self.joined {
            if !self.account.join(identity.limits.account_connections) {
                tracing::info!(cid = %self.link.id, account = %identity.account, "maximum account connections exceeded");
                self.send(connack(if v5 {
                    reason::QUOTA_EXCEEDED
                } else {
                    reason::SERVER_UNAVAILABLE
                }));
                return Err(CloseReason::MaxConnectionsExceeded);
            }
            self.joined = true;
        }
        let expiry = if v5 {
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        let keep_alive = match self.link.opts.max_keep_alive {
            Some(max) if c.keep_alive == 0 || c.keep_alive > max => max,
            _ => c.keep_alive,
        };
        let mut props = ConnAckProperties::default();
        if v5 {
            if keep_alive != c.keep_alive {
                props.server_keep_alive = Some(keep_alive);
            }
            props.assigned_client_identifier = assigned.as_deref().map(utf8);
            props.receive_maximum = Some(RECEIVE_MAXIMUM);
            props.topic_alias_maximum = Some(TOPIC_ALIAS_MAXIMUM);
            props.retain_available = Some(true);
            props.shared_subscription_available = Some(true);
            props.subscription_identifiers_available = Some(true);
            props.wildcard_subscription_available = Some(true);
            props.maximum_packet_size = u32::try_from(self.link.opts.max_packet_size).ok();
            props.authentication_method = self.auth_method.as_deref().cloned();
            props.authentication_data = auth_data.map(Bytes::from);
        }
        let mut ack = ConnAck {
            session_present: false,
            code: reason::SUCCESS,
            properties: props,
        };
        if let Some(max) = c.properties.maximum_packet_size {
            // The client takes nothing larger [MQTT-3.1.2-24]: optional properties go, then
            // the connection if even the rest is too large.
            if !fit_connack(&mut ack, max as usize) {
                tracing::info!(cid = %self.link.id, max, "CONNACK cannot fit the client's maximum packet size");
                return Err(CloseReason::ProtocolViolation);
            }
        }
        self.link
            .keep_alive_ms
            .store(u64::from(keep_alive) * 1000, Ordering::Relaxed);
        self.problem_info = c.properties.request_problem_information != Some(false);
        self.client_max_packet = c.properties.maximum_packet_size;
        self.link
            .client_max_packet
            .store(self.client_max_packet.unwrap_or(0), Ordering::Relaxed);
        // Take over an existing session: disconnect its link; keep it unless clean start.
        let key = (identity.account.clone(), client_id.clone());
        let mut due_will = None;
        let (cell, present) = {
            let mut sessions = server.sessions.locked();
            let mut existing = sessions.get(&key).cloned();
            if existing
                .as_ref()
                .is_some_and(|old| old.expired(std::time::Instant::now()))
            {
                // Its expiry passed (the sweep had not come to it yet): it is gone.
                if let Some(old) = existing.take() {
                    sessions.remove(&key);
                    due_will = old.end().map(|w| (old.clone(), w));
                }
            }
            if let Some(old) = &existing {
                let old_link = old.state.locked().link.take();
                if let Some(l) = old_link {
                    l.disconnect(reason::SESSION_TAKEN_OVER);
                    l.out.finish(CloseReason::SessionTakenOver);
                }
            }
            match existing {
                Some(old) if !c.clean_start => (old, true),
                other => {
                    if let Some(old) = other {
                        // The client is back: its will is not sent [MQTT-3.1.3-9].
                        let _ = old.end();
                    }
                    let session = Session::new(
                        durable::session_key(self.account.name(), &client_id),
                        server.durable(),
                        server.limits(),
                    );
                    let cell = Arc::new(SessionCell::new(
                        client_id.clone(),
                        self.account.clone(),
                        server.clone(),
                        session,
                    ));
                    sessions.insert(key, cell.clone());
                    (cell, false)
                }
            }
        };
        if let Some((old, will)) = due_will {
            publish_will(&server, &old.account, old.conn_id, will);
        }
        {
            let mut about = self.link.about.locked();
            about.client_id = client_id.clone();
            about.account = Some(self.account.clone());
            about.version = Some(self.version);
            about.session = Arc::downgrade(&cell);
            about.admitted = Some(admitted);
        }
        self.will = c.will.map(Box::new);
        ack.session_present = present;
        let mut buf = BytesMut::new();
        let _ = encode(&Packet::ConnAck(Box::new(ack)), self.version, &mut buf);
        // A persistent session is durable before its CONNACK (and whatever follows it) is
        // written: the CONNACK is a barrier in the output until the commit.
        let store = server.store().filter(|_| expiry > 0 || present).cloned();
        let barrier = store.as_ref().map(|_| {
            let owner: std::sync::Weak<dyn GateOwner> = Arc::downgrade(&self.link) as _;
            Gate::commit(owner)
        });
        match &barrier {
            Some(gate) => self.link.out.push_gated(Lane::All, gate, &buf),
            None => self.link.out.push_own(&buf),
        }
        {
            let mut st = cell.state.locked();
            st.link = Some(self.link.clone());
            st.receive = identity
                .permissions
                .clone()
                .filter(|p| !p.subscribe.deny.is_empty())
                .map(|p| Box::new(Checker::new(p)));
            let attach = Attach {
                version: self.version,
                expiry_secs: expiry,
                will: self.will.clone(),
                receive_maximum: c.properties.receive_maximum.unwrap_or(RECEIVE_MAXIMUM),
                max_packet_size: c.properties.maximum_packet_size,
                alias_max: c.properties.topic_alias_maximum.unwrap_or(0),
                present,
            };
            st.with_io(&server, None, |s, io| s.attach(attach, io));
        }
        if let (Some(store), Some(gate)) = (store, barrier) {
            // After the session's record was submitted: the commit that runs this holds it.
            store.then(Box::new(move |_| gate.committed()));
        }
        tracing::debug!(cid = %self.link.id, client_id = %client_id, present, "MQTT client connected");
        self.session = Some(cell);
        Ok(())
    }
}

/// Leaves out of a 5.0 CONNACK the properties a client can do without, in this order, until it
/// fits `max` bytes: the reason string and user properties, then those whose absence means
/// what they say anyway (retain, wildcard, subscription identifier and shared subscription
/// available), then Topic Alias Maximum (absent: no aliases), Maximum Packet Size and Receive
/// Maximum (the broker still enforces its limits). What the client must hear (an assigned
/// client identifier, Server Keep Alive, authentication) stays. Whether it fits.
pub(super) fn fit_connack(ack: &mut ConnAck, max: usize) -> bool {
    type Leave = fn(&mut ConnAckProperties);
    const STEPS: [Leave; 9] = [
        |p| p.reason_string = None,
        |p| p.user_properties.clear(),
        |p| p.retain_available = None,
        |p| p.wildcard_subscription_available = None,
        |p| p.subscription_identifiers_available = None,
        |p| p.shared_subscription_available = None,
        |p| p.topic_alias_maximum = None,
        |p| p.maximum_packet_size = None,
        |p| p.receive_maximum = None,
    ];
    let size = |ack: &ConnAck| {
        encoded_len(&Packet::ConnAck(Box::new(ack.clone())), Version::V5).unwrap_or(usize::MAX)
    };
    for step in STEPS {
        if size(ack) <= max {
            return true;
        }
        step(&mut ack.properties);
    }
    size(ack) <= max
}

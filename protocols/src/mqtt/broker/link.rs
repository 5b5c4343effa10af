//! One network connection as others see it: its outbound buffer (publishers append to it), what
//! monitoring shows of it, and the deadlines the sweep enforces (CONNECT timeout, keep alive,
//! credentials expiry).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::BytesMut;
use junction_core::sync::Lock;
use junction_core::{Account, ConnId, ConnSnapshot, ConnView};

use super::bridge::utf8;
use super::delivery::SessionCell;
use super::server::MqttServer;
use crate::conn_stats::ConnStats;
use crate::mqtt::codec::{encode, encoded_len, reason};
use crate::mqtt::{Disconnect, DisconnectProperties, Packet, Version};
use crate::outbound::{GateOwner, Lane, Outbound};
use crate::CloseReason;

/// One network connection, as others see it.
pub(crate) struct Link {
    pub(crate) id: ConnId,
    pub(crate) out: Outbound,
    pub(crate) server: Arc<MqttServer>,
    /// Address, start and counters, for monitoring.
    pub(crate) stats: ConnStats,
    pub(crate) about: Mutex<About>,
    /// When the client last sent anything (ms since the server started).
    pub(crate) last_read_ms: AtomicU64,
    /// Keep alive in ms (0: none).
    pub(crate) keep_alive_ms: AtomicU64,
    /// When the connection was accepted (ms since the server started).
    pub(crate) opened_ms: u64,
    /// The client sent its CONNECT.
    pub(crate) connect_seen: AtomicBool,
    /// When the client's credentials expire (unix seconds; 0: never), as a user JWT's `exp`.
    pub(crate) expires: AtomicU64,
    /// The largest packet the client takes (5.0 Maximum Packet Size; 0: no limit).
    pub(crate) client_max_packet: AtomicU32,
    /// The server's settings when the connection was accepted.
    pub(crate) opts: Arc<super::Options>,
}

/// What monitoring shows of a connection, once its CONNECT is accepted.
#[derive(Default)]
pub(crate) struct About {
    pub(crate) client_id: Arc<str>,
    pub(crate) account: Option<Arc<Account>>,
    pub(crate) version: Option<Version>,
    /// The session (for its counts of subscriptions and dropped messages).
    pub(crate) session: Weak<SessionCell>,
    /// How CONNECT was admitted, for a configuration reload to check again (and the user).
    pub(crate) admitted: Option<crate::recheck::Admitted>,
}

impl Link {
    pub(crate) fn new(id: ConnId, server: Arc<MqttServer>, stats: ConnStats) -> Self {
        let now = server.now_ms();
        let opts = server.opts.get();
        Link {
            id,
            out: Outbound::new(opts.max_pending),
            server,
            stats,
            about: Mutex::new(About::default()),
            last_read_ms: AtomicU64::new(now),
            keep_alive_ms: AtomicU64::new(0),
            opened_ms: now,
            connect_seen: AtomicBool::new(false),
            expires: AtomicU64::new(0),
            client_max_packet: AtomicU32::new(0),
            opts,
        }
    }

    fn version(&self) -> Option<Version> {
        self.about.locked().version
    }

    /// Sends a DISCONNECT of the server (5.0 only; 3.1.1 has none), ahead of any held output's
    /// lane but behind a held CONNACK.
    pub(crate) fn disconnect(&self, code: u8) {
        if self.version() != Some(Version::V5) {
            return;
        }
        let mut packet = disconnect(code);
        let max = self.client_max_packet.load(Ordering::Relaxed);
        if max > 0 && encoded_len(&packet, Version::V5).is_ok_and(|n| n > max as usize) {
            if let Packet::Disconnect(d) = &mut packet {
                d.properties = DisconnectProperties::default();
            }
        }
        let mut buf = BytesMut::new();
        if encode(&packet, Version::V5, &mut buf).is_ok() {
            self.out.push_own_in(Lane::Urgent, &buf);
            self.out.wake();
        }
    }
}

impl GateOwner for Link {
    fn gate_opened(&self) {
        self.out.release();
    }
}

impl junction_store::Wake for Link {
    fn wake(&self) {
        self.out.wake();
    }
}

impl ConnView for Link {
    fn snapshot(&self) -> ConnSnapshot {
        let about = self.about.locked();
        let session = about.session.upgrade();
        let count = |c: fn(&SessionCell) -> &AtomicU64| {
            session.as_ref().map_or(0, |s| c(s).load(Ordering::Relaxed))
        };
        ConnSnapshot {
            name: about.client_id.to_string(),
            lang: match about.version {
                Some(Version::V5) => "mqtt 5.0".into(),
                Some(Version::V311) => "mqtt 3.1.1".into(),
                None => String::new(),
            },
            account: about
                .account
                .as_ref()
                .map(|a| a.name().to_string())
                .unwrap_or_default(),
            mqtt_client: about.client_id.to_string(),
            user: about
                .admitted
                .as_ref()
                .map(|a| a.user().to_string())
                .unwrap_or_default(),
            subscriptions: count(|s| &s.subscription_count) as usize,
            dropped_msgs: count(|s| &s.dropped),
            ..self.stats.snapshot(self.id, "mqtt", &self.out)
        }
    }

    fn kind(&self) -> &'static str {
        "mqtt"
    }

    /// Closes the connection when it sent no CONNECT in time, when its credentials expired, or
    /// when the client was silent for 1.5 times its keep alive.
    fn tick(&self) {
        let now = self.server.now_ms();
        if !self.connect_seen.load(Ordering::Relaxed) {
            // No CONNECT within the timeout: a socket held open for nothing.
            let waited = now.saturating_sub(self.opened_ms);
            if waited > self.opts.connect_timeout.as_millis() as u64 {
                tracing::debug!(cid = %self.id, "no CONNECT within the timeout");
                self.out.finish(CloseReason::AuthenticationTimeout);
            }
            return;
        }
        let expires = self.expires.load(Ordering::Relaxed);
        if expires > 0 && junction_auth::server::unix_now() >= expires as i64 {
            // As NATS clients are: closed when the user's JWT expires.
            tracing::info!(cid = %self.id, "MQTT client's credentials expired");
            self.disconnect(reason::MAXIMUM_CONNECT_TIME);
            self.out.finish(CloseReason::AuthenticationExpired);
            return;
        }
        let keep_alive = self.keep_alive_ms.load(Ordering::Relaxed);
        if keep_alive == 0 {
            return;
        }
        let silent = now.saturating_sub(self.last_read_ms.load(Ordering::Relaxed));
        if silent > keep_alive * 3 / 2 {
            self.disconnect(reason::KEEP_ALIVE_TIMEOUT);
            self.out.finish(CloseReason::KeepAliveTimeout);
        }
    }

    fn shutdown(&self) {
        self.disconnect(reason::SERVER_SHUTTING_DOWN);
        self.out.finish(CloseReason::ServerShutdown);
    }

    fn login(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let about = self.about.locked();
        let account = about.account.as_ref()?.name().to_string();
        about.admitted.as_ref()?.login(&account)
    }

    fn subscriptions(&self) -> Option<Vec<Arc<junction_core::Subscription>>> {
        let session = self.about.locked().session.upgrade()?;
        let st = session.state.locked();
        Some(
            st.core
                .values()
                .filter_map(|subs| subs.first().cloned())
                .collect(),
        )
    }

    fn revoke(&self) {
        self.disconnect(reason::NOT_AUTHORIZED);
        self.out.finish(CloseReason::AuthenticationViolation);
    }
}

/// A DISCONNECT from the server, with a reason string saying why in words.
pub(crate) fn disconnect(code: u8) -> Packet {
    let words = match code {
        reason::KEEP_ALIVE_TIMEOUT => Some("keep alive timeout"),
        reason::SESSION_TAKEN_OVER => Some("session taken over by another connection"),
        reason::SERVER_SHUTTING_DOWN => Some("server shutting down"),
        reason::NOT_AUTHORIZED => Some("not authorized by the reloaded configuration"),
        reason::PACKET_TOO_LARGE => Some("packet larger than the maximum packet size"),
        reason::TOPIC_ALIAS_INVALID => Some("topic alias out of range"),
        reason::RECEIVE_MAXIMUM_EXCEEDED => Some("too many QoS 2 messages in flight"),
        reason::TOPIC_NAME_INVALID => Some("topic name cannot be mapped to a subject"),
        reason::MALFORMED_PACKET => Some("malformed packet"),
        reason::PROTOCOL_ERROR => Some("protocol error"),
        reason::MAXIMUM_CONNECT_TIME => Some("user authentication expired"),
        _ => None,
    };
    Packet::Disconnect(Disconnect {
        reason: code,
        properties: DisconnectProperties {
            reason_string: words.map(utf8),
            ..Default::default()
        },
    })
}

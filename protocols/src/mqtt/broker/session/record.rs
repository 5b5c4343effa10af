//! A session and the store: saving it as a [`SessionRecord`], and making it again from one
//! (and from its stored messages and QoS 2 ids) at startup.

use std::time::Instant;

use junction_store::Op;

use super::{Io, Limits, Now, Outgoing, Queued, Session};
use crate::mqtt::broker::durable::{self, MessageRecord, SessionRecord, SubRecord};
use crate::mqtt::{QoS, Version};

impl Session {
    /// Stores the session as it is now (a persistent one), or removes it with everything it
    /// had (one whose expiry became 0).
    pub(crate) fn save(&mut self, io: &mut dyn Io) {
        if !self.has_store {
            return;
        }
        if self.expiry_secs > 0 {
            let value = self.record(io.now()).encode();
            io.store(Op::Put {
                table: durable::SESSIONS,
                key: self.key.clone(),
                value,
            });
            self.stored = true;
        } else if self.stored {
            self.erase(io);
            self.stored = false;
        }
    }

    /// The session as stored.
    pub(crate) fn record(&self, now: Now) -> SessionRecord {
        let ms_until = |t: Instant| {
            now.unix_ms
                .saturating_add(t.saturating_duration_since(now.at).as_millis() as u64)
        };
        SessionRecord {
            level: if self.version == Version::V5 { 5 } else { 4 },
            expiry_secs: self.expiry_secs,
            expires_at_ms: self.expires_at.map(ms_until),
            subscriptions: self.subs.values().cloned().collect(),
            will: self
                .flows
                .as_ref()
                .and_then(|f| f.pending_will.as_ref())
                .map(|(w, _)| w)
                .or(self.will.as_ref())
                .map(|w| durable::encode_will(w)),
            will_due_ms: self
                .flows
                .as_ref()
                .and_then(|f| f.pending_will.as_ref())
                .map(|(_, due)| ms_until(*due)),
        }
    }

    /// A session as the store kept it; `alive_ms` is when the server was last known alive (a
    /// client connected then lost its connection about then). Its subscriptions are returned
    /// for the caller to install (which records them here again). Messages and QoS 2 ids follow with
    /// [`Session::restore_message`] and [`Session::restore_inbound`].
    pub(crate) fn restored(
        key: Vec<u8>,
        record: SessionRecord,
        alive_ms: u64,
        limits: Limits,
        now: Now,
    ) -> Result<(Session, Vec<SubRecord>), &'static str> {
        let will = match &record.will {
            Some(bytes) => Some(Box::new(
                durable::decode_will(bytes).ok_or("malformed will")?,
            )),
            None => None,
        };
        let mut s = Session::new(key, true, limits);
        s.version = if record.level == 5 {
            Version::V5
        } else {
            Version::V311
        };
        s.expiry_secs = record.expiry_secs;
        s.stored = true;
        // A session whose client was connected when the server stopped was cut off then.
        s.expires_at = match record.expires_at_ms {
            Some(ms) => Some(now.instant_of(ms)),
            None => (record.expiry_secs != u32::MAX).then(|| {
                now.instant_of(alive_ms.saturating_add(u64::from(record.expiry_secs) * 1000))
            }),
        };
        s.f().pending_will = match (will, record.will_due_ms) {
            (Some(w), Some(due)) => Some((w, now.instant_of(due))),
            (Some(w), None) => {
                // Its connection was lost with the server: the will is due after its delay (or
                // the session's end), counted from when the server was last alive.
                let delay = w.properties.will_delay_interval.unwrap_or(0);
                let wait = delay.min(record.expiry_secs);
                Some((
                    w,
                    now.instant_of(alive_ms.saturating_add(u64::from(wait) * 1000)),
                ))
            }
            (None, _) => None,
        };
        Ok((s, record.subscriptions))
    }

    /// A stored message of the session, `seq` its sequence number.
    pub(crate) fn restore_message(
        &mut self,
        seq: u64,
        r: MessageRecord,
        now: Now,
    ) -> Result<(), &'static str> {
        let next = seq.checked_add(1).ok_or("sequence number out of range")?;
        self.f().next_seq = self.f().next_seq.max(next);
        let mut publish = r.publish;
        if r.packet_id != 0 && !self.f().inflight.contains_key(&r.packet_id) {
            // In flight when the server stopped: redelivered with DUP on reconnect.
            publish.dup = true;
            publish.packet_id = r.packet_id;
            self.f().inflight.insert(
                r.packet_id,
                Outgoing {
                    publish,
                    released: r.released,
                    seq,
                    queued_ms: r.queued_at_ms,
                    held: None,
                    own: true,
                },
            );
        } else {
            // It may have been sent before the server stopped (a QoS 1 message's packet id is
            // not stored: a redelivery at QoS 1 may take a new one).
            publish.dup = r.qos != QoS::AtMostOnce;
            publish.packet_id = 0;
            self.f().queue.push_back(Queued {
                publish,
                queued_at: now.instant_of(r.queued_at_ms),
                queued_ms: r.queued_at_ms,
                seq,
                own: true,
            });
        }
        Ok(())
    }

    /// A stored QoS 2 packet id the client sent and had not released.
    pub(crate) fn restore_inbound(&mut self, packet_id: u16) {
        self.f().inbound_qos2.insert(packet_id);
    }
}

//! SUBSCRIBE and UNSUBSCRIBE: permissions and limits per filter, the core subscriptions a
//! filter makes, the SUBACK (held for the store when the session is persistent), and the
//! retained messages that follow it.

use bytes::Bytes;
use junction_core::subject;
use junction_core::sync::Lock;

use super::connection::Connection;
use super::delivery::SessionCell;
use super::durable::SubRecord;
use crate::mqtt::codec::{reason, topic};
use crate::mqtt::{Packet, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe, Version};

impl Connection {
    pub(super) fn subscribe(&mut self, s: Subscribe) {
        let cell = self.session.clone().expect("connected");
        let server = self.server().clone();
        let v5 = self.version == Version::V5;
        let failure = |code: u8| if v5 { code } else { 0x80 };
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained_out = Vec::new();
        for f in &s.filters {
            let record = SubRecord {
                filter: f.filter.as_str().to_string(),
                qos: f.qos as u8,
                no_local: f.no_local,
                retain_as_published: f.retain_as_published,
                subscription_id: s.properties.subscription_identifier,
            };
            if !self.may_subscribe(f.filter.as_bytes()) {
                codes.push(failure(reason::NOT_AUTHORIZED));
                continue;
            }
            if self.subscriptions_full(&cell, f.filter.as_bytes()) {
                codes.push(failure(reason::QUOTA_EXCEEDED));
                continue;
            }
            let Some(installed) = cell.install(record) else {
                codes.push(failure(reason::TOPIC_FILTER_INVALID));
                continue;
            };
            codes.push(f.qos as u8);
            let send_retained = !installed.shared
                && match f.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscribe => !installed.existed,
                    RetainHandling::Never => false,
                };
            if send_retained {
                for filter_subject in &installed.subjects {
                    for r in server
                        .retained
                        .matching(self.account.name(), filter_subject)
                    {
                        retained_out.push((installed.sink.clone(), installed.dyn_sink.clone(), r));
                    }
                }
            }
        }
        let durable = self.save_session(&cell);
        self.send_ordered(
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                reason_codes: codes,
                ..SubAck::default()
            }),
            durable,
        );
        // Retained messages go after the SUBACK, with the retain flag set.
        for (concrete, sink, r) in retained_out {
            let mut msg = r.msg;
            msg.facts.qos = Some(r.qos);
            let publish = concrete.publish_for(&msg, true);
            concrete.offer(publish, &msg.subject, None, &sink);
        }
    }

    /// Stores the session as it is now; whether that went to the store (the reply must wait
    /// for it).
    fn save_session(&self, cell: &SessionCell) -> bool {
        let mut st = cell.state.locked();
        st.with_io(self.server(), None, |s, io| {
            s.save(io);
            s.durable()
        })
    }

    /// Whether a new filter would pass the subscription limit of the user's JWT (counted in
    /// the session's filters).
    fn subscriptions_full(&self, cell: &SessionCell, filter: &[u8]) -> bool {
        let Some(max) = self.sub_limit else {
            return false;
        };
        let st = cell.state.locked();
        // A filter subscribed again replaces the old one: not a new subscription.
        !st.session.has_subscription(filter) && st.session.subscriptions() as u64 >= max
    }

    /// Whether the user may subscribe to every subject `filter` maps to (in its share group).
    fn may_subscribe(&self, filter: &[u8]) -> bool {
        let (queue, inner) = match topic::shared_subscription(filter) {
            Some((g, inner)) => (Some(String::from_utf8_lossy(g).into_owned()), inner),
            None => (None, filter),
        };
        let Ok(subjects) = topic::filter_to_subjects(&Bytes::copy_from_slice(inner)) else {
            return true; // refused as an invalid filter anyway
        };
        if subject::is_bridge(&subjects.subject) {
            return false;
        }
        let Some(perms) = &self.perms else {
            return true;
        };
        std::iter::once(&subjects.subject)
            .chain(subjects.parent.as_ref())
            .all(|s| {
                perms
                    .permissions()
                    .may_subscribe(&String::from_utf8_lossy(s), queue.as_deref())
            })
    }

    pub(super) fn unsubscribe(&mut self, u: Unsubscribe) {
        let cell = self.session.clone().expect("connected");
        let codes: Vec<u8> = u
            .filters
            .iter()
            .map(|f| {
                if cell.uninstall(f.as_bytes()) {
                    reason::SUCCESS
                } else {
                    reason::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        let durable = self.save_session(&cell);
        self.send_ordered(
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reason_codes: if self.version == Version::V5 {
                    codes
                } else {
                    Vec::new()
                },
                ..UnsubAck::default()
            }),
            durable,
        );
    }
}

//! Loading what the store kept, once at startup before any client connects: retained
//! messages, persistent sessions (their subscriptions, expiry and will), the messages queued
//! for them or in flight, and the QoS 2 packet ids they had received. A record that cannot be
//! read (or restored) is logged, left out and counted: one bad record never keeps the broker
//! from starting.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use junction_core::sync::Lock;
use junction_core::ConnId;
use junction_store::{Engine, StoreError};

use super::delivery::SessionCell;
use super::durable::{self, MessageRecord, SessionRecord};
use super::retained::Retained;
use super::server::{MqttServer, ALIVE_KEY};
use super::session::{Now, Session};

/// What [`MqttServer::restore`] found in the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub sessions: usize,
    pub messages: usize,
    pub retained: usize,
    /// Records that could not be restored: logged and left out.
    pub skipped: usize,
}

/// Logs a record `restore` leaves out, and counts it.
fn skip(skipped: &mut usize, what: &str, key: &[u8], why: &str) {
    *skipped += 1;
    let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
    tracing::warn!(
        record = what,
        key = %key,
        why,
        "skipped a record of the durable store that cannot be restored"
    );
}

impl MqttServer {
    /// Loads what the store kept (see the module documentation). Only the engine failing to
    /// read is an error.
    pub fn restore(self: &Arc<Self>, engine: &dyn Engine) -> Result<Restored, StoreError> {
        self.has_store.store(true, Ordering::Relaxed);
        let mut restored = Restored::default();
        let mut skipped = 0;
        engine.scan(durable::RETAINED, &mut |k, v| {
            let Some((account, subject)) = durable::split_retained_key(k) else {
                skip(&mut skipped, "retained", k, "malformed key");
                return Ok(());
            };
            let Some((msg, qos)) = durable::decode_retained(v, ConnId(0)) else {
                skip(&mut skipped, "retained", k, "malformed value");
                return Ok(());
            };
            self.retained
                .restore(&account, &subject, Retained { msg, qos });
            restored.retained += 1;
            Ok(())
        })?;

        let now = Now::current();
        // When the server was last known alive: a client connected then lost its connection
        // about then, and its session's expiry and will delay count from it.
        let mut alive_ms = now.unix_ms;
        engine.scan(durable::META, &mut |k, v| {
            if k == ALIVE_KEY {
                match <[u8; 8]>::try_from(v) {
                    Ok(b) => alive_ms = u64::from_be_bytes(b).min(now.unix_ms),
                    Err(_) => skip(&mut skipped, "meta", k, "malformed value"),
                }
            }
            Ok(())
        })?;
        let mut records = Vec::new();
        engine.scan(durable::SESSIONS, &mut |k, v| {
            let parts = durable::split_session_key(k).filter(|(_, _, rest)| rest.is_empty());
            let Some((account, client_id, _)) = parts else {
                skip(&mut skipped, "session", k, "malformed key");
                return Ok(());
            };
            let Some(record) = SessionRecord::decode(v) else {
                skip(&mut skipped, "session", k, "malformed value");
                return Ok(());
            };
            records.push((k.to_vec(), account, client_id, record));
            Ok(())
        })?;
        let mut by_key: HashMap<Vec<u8>, Arc<SessionCell>> = HashMap::new();
        for (key, account, client_id, record) in records {
            // Restoring one session is the broker's own code over data from the disk: should
            // it fail, that session is left out, not the broker.
            let one = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.restore_session(key.clone(), account, client_id, record, alive_ms, now)
            }));
            match one {
                Ok(Ok(cell)) => {
                    by_key.insert(key, cell);
                    restored.sessions += 1;
                }
                Ok(Err(why)) => skip(&mut skipped, "session", &key, why),
                Err(_) => skip(&mut skipped, "session", &key, "restoring it panicked"),
            }
        }

        let mut orphans = Vec::new();
        engine.scan(durable::MESSAGES, &mut |k, v| {
            if k.len() < 8 {
                skip(&mut skipped, "message", k, "malformed key");
                return Ok(());
            }
            let (skey, seq) = k.split_at(k.len() - 8);
            let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
            let Some(cell) = by_key.get(skey) else {
                orphans.push((durable::MESSAGES, k.to_vec()));
                return Ok(());
            };
            let Some(r) = MessageRecord::decode(v) else {
                skip(&mut skipped, "message", k, "malformed value");
                return Ok(());
            };
            match cell.state.locked().session.restore_message(seq, r, now) {
                Ok(()) => restored.messages += 1,
                Err(why) => skip(&mut skipped, "message", k, why),
            }
            Ok(())
        })?;
        engine.scan(durable::INBOUND, &mut |k, _| {
            if k.len() < 2 {
                skip(&mut skipped, "inbound", k, "malformed key");
                return Ok(());
            }
            let (skey, id) = k.split_at(k.len() - 2);
            match by_key.get(skey) {
                Some(cell) => cell
                    .state
                    .locked()
                    .session
                    .restore_inbound(u16::from_be_bytes([id[0], id[1]])),
                None => orphans.push((durable::INBOUND, k.to_vec())),
            }
            Ok(())
        })?;
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                "the store held records of no session; they will be removed"
            );
        }
        *self.orphans.locked() = orphans;
        restored.skipped = skipped;
        Ok(restored)
    }

    /// Makes one persistent session from its record and installs its subscriptions.
    fn restore_session(
        self: &Arc<Self>,
        key: Vec<u8>,
        account: String,
        client_id: String,
        record: SessionRecord,
        alive_ms: u64,
        now: Now,
    ) -> Result<Arc<SessionCell>, &'static str> {
        let (session, subs) = Session::restored(key, record, alive_ms, self.limits(), now)?;
        let account = self.bus.account_or_create(&account);
        let client_id: Arc<str> = client_id.into();
        let cell = Arc::new(SessionCell::new(
            client_id.clone(),
            account.clone(),
            self.clone(),
            session,
        ));
        for sub in subs {
            cell.install(sub);
        }
        self.sessions
            .locked()
            .insert((account.name().to_string(), client_id), cell.clone());
        Ok(cell)
    }
}

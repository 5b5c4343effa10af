//! Which accounts have JetStream, and their limits: enabled, refused (told "JetStream not
//! enabled for account"), disabled while running with their streams kept stopped, and
//! enabled again (an account JWT update), as nats-server decides it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use junction_core::sync::Lock;
use junction_core::{Account, Sink, Subscription};

use crate::service::{AccountJs, Task};
use crate::sinks::{ConsumerSubs, Kind, ServiceSink};
use crate::stream::Budget;

/// One account's JetStream limits (-1: none), as its `jetstream {}` block or its JWT sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLimits {
    pub max_memory: i64,
    pub max_store: i64,
    pub max_streams: i64,
    pub max_consumers: i64,
    /// The most unacknowledged messages a consumer may allow (its default when it sets none).
    pub max_ack_pending: i64,
    /// The largest `max_bytes` a memory (file) stream may have.
    pub memory_max_stream_bytes: i64,
    pub storage_max_stream_bytes: i64,
    /// A stream must set `max_bytes`.
    pub max_bytes_required: bool,
    /// Where the limits come from: one set, or the `R1` tier of a JWT's tiered limits.
    pub tier: Tier,
}

/// How an account's limits are given (a JWT may give them per replica count, by tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    /// One set of limits for every stream.
    #[default]
    Flat,
    /// Tiered limits; these are the `R1` tier's (a single server's streams have one replica).
    R1,
    /// Tiered limits without an `R1` tier: no stream can be made.
    Missing,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            max_memory: -1,
            max_store: -1,
            max_streams: -1,
            max_consumers: -1,
            max_ack_pending: -1,
            memory_max_stream_bytes: -1,
            storage_max_stream_bytes: -1,
            max_bytes_required: false,
            tier: Tier::Flat,
        }
    }
}

impl AccountJs {
    /// Takes the account's service subscriptions and its streams' subjects away.
    pub(crate) fn stop(&mut self) {
        for sub in self.subs.drain(..) {
            self.account.unsubscribe(&sub);
        }
        for e in self.streams.values_mut() {
            for sub in e.stream.subs.locked().drain(..) {
                sub.close();
                self.account.unsubscribe(&sub);
            }
            for c in e.consumers.values_mut() {
                c.subs = None;
            }
        }
    }

    pub(crate) fn set_limits(&mut self, limits: AccountLimits) {
        self.limits = limits;
        self.memory.set_limit(limits.max_memory);
        self.storage.set_limit(limits.max_store);
    }
}

impl Task {
    /// Subscribes the API subjects in `name` (each consumer subscribes its own
    /// acknowledgement and flow control subjects: [`ConsumerSubs`]).
    fn subscribe(&self, name: &str) -> (Arc<Account>, Vec<Arc<Subscription>>) {
        let mut subjects = vec![Bytes::from_static(b"$JS.API.>")];
        // With a domain, clients that name it (`domain` option) use `$JS.<domain>.API`.
        if let Some(d) = &self.shared.opts.domain {
            subjects.push(Bytes::from(format!("$JS.{d}.API.>")));
        }
        self.subscribe_api(name, subjects)
    }

    /// Subscribes `subjects` in `name` to the API's one service sink.
    fn subscribe_api(
        &self,
        name: &str,
        subjects: Vec<Bytes>,
    ) -> (Arc<Account>, Vec<Arc<Subscription>>) {
        let account = self.shared.bus.account_or_create(name);
        let sink: Arc<dyn Sink> = Arc::new(ServiceSink {
            shared: self.shared.clone(),
            account: account.clone(),
            kind: Kind::Api,
        });
        let subs = account.subscribe_service(self.shared.origin, subjects, &sink);
        (account, subs)
    }

    /// Subscribes the system account (when there is one) to `$JS.API.ACCOUNT.PURGE.*`, the one
    /// request of the API it makes, where nats-server serves it alone
    /// (`account_purge` in the API's streams module).
    pub(crate) fn serve_system(&mut self) {
        let name = self.shared.opts.system_account.clone();
        if name.is_empty() {
            return;
        }
        let purge = Bytes::from_static(b"$JS.API.ACCOUNT.PURGE.*");
        let served = self.subscribe_api(&name, vec![purge]);
        self.refusing.push(served);
    }

    /// Answers the API of `name`, an account without JetStream, with "JetStream not enabled
    /// for account" (as nats-server does).
    pub(crate) fn refuse(&mut self, name: &str) {
        let (account, subs) = self.subscribe(name);
        self.refusing.push((account, subs));
    }

    /// The accounts `enabled` names (`None`: every account but the system account; the system
    /// account never).
    fn enabled_names(&self, enabled: Option<Vec<String>>) -> Vec<String> {
        let system = &self.shared.opts.system_account;
        let mut names = match enabled {
            Some(list) => list,
            None => {
                let mut v: Vec<String> = self
                    .shared
                    .bus
                    .accounts()
                    .iter()
                    .map(|a| a.name().to_string())
                    .collect();
                v.retain(|n| n != system);
                if v.is_empty() {
                    v.push(junction_core::DEFAULT_ACCOUNT.to_string());
                }
                v
            }
        };
        if names.contains(system) {
            tracing::warn!(account = %system, "JetStream is not enabled in the system account");
            names.retain(|n| n != system);
        }
        names
    }

    /// Enables, updates and disables accounts' JetStream to match `enabled` and `limits`, and
    /// tells the other accounts (but the system account) that they have none.
    pub(crate) fn set_accounts(
        &mut self,
        enabled: Option<Vec<String>>,
        limits: HashMap<String, AccountLimits>,
    ) {
        let names = self.enabled_names(enabled);
        let gone: Vec<String> = self
            .accounts
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        for name in gone {
            self.disable(&name);
        }
        for name in &names {
            let l = limits.get(name).copied().unwrap_or_default();
            if let Some(a) = self.accounts.get_mut(name) {
                if a.limits != l {
                    tracing::info!(account = %name, "JetStream limits updated");
                }
                a.set_limits(l);
                continue;
            }
            self.stop_refusing(name);
            match self.disabled.remove(name) {
                Some(a) => self.reenable(name, a, l),
                None => self.enable(name, l),
            }
        }
        for a in self.shared.bus.accounts() {
            let name = a.name();
            if !self.accounts.contains_key(name)
                && name != self.shared.opts.system_account
                && !self.refusing.iter().any(|(r, _)| r.name() == name)
            {
                self.refuse(name);
            }
        }
    }

    pub(crate) fn stop_refusing(&mut self, name: &str) {
        self.refusing.retain(|(account, subs)| {
            if account.name() != name {
                return true;
            }
            for sub in subs {
                account.unsubscribe(sub);
            }
            false
        });
    }

    /// Takes JetStream from `name`: its service subscriptions and its streams' subjects go; the
    /// streams and consumers are kept, stopped, for when it gains JetStream again.
    pub(crate) fn disable(&mut self, name: &str) {
        let Some(mut a) = self.accounts.remove(name) else {
            return;
        };
        a.stop();
        tracing::info!(account = %name, streams = a.streams.len(), "JetStream disabled for the account");
        self.disabled.insert(name.to_string(), a);
    }

    /// Gives JetStream back to `name`, with the streams it had when it lost it.
    fn reenable(&mut self, name: &str, mut a: AccountJs, limits: AccountLimits) {
        a.subs = self.subscribe(name).1;
        a.set_limits(limits);
        for (sname, e) in &mut a.streams {
            let subjects = e.stream.state.locked().config.subjects.clone();
            self.subscribe_stream(&e.stream, &subjects);
            for (cname, c) in &mut e.consumers {
                c.subs = Some(ConsumerSubs::new(&self.shared, &a.account, sname, cname));
            }
            self.touched.insert((name.to_string(), sname.clone()));
        }
        tracing::info!(account = %name, streams = a.streams.len(), "JetStream enabled again for the account");
        self.accounts.insert(name.to_string(), a);
    }

    /// Gives `name` its JetStream: the API, acknowledgement and flow control subscriptions.
    pub(crate) fn enable(&mut self, name: &str, limits: AccountLimits) {
        let (account, subs) = self.subscribe(name);
        self.accounts.insert(
            name.to_string(),
            AccountJs {
                account,
                streams: BTreeMap::new(),
                subs,
                limits,
                memory: Budget::within(limits.max_memory, self.shared.server_memory.clone()),
                storage: Budget::within(limits.max_store, self.shared.server_storage.clone()),
                api_total: 0,
                api_errors: 0,
            },
        );
    }
}

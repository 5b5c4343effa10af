//! SIGHUP: the configuration file read again and applied, or refused as a whole.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use junction_core::Bus;
use junction_protocols::{mqtt, nats, ws};

use crate::settings::{Cli, Settings};
use crate::{auth_config, logging};

/// What a configuration reload (SIGHUP) needs.
pub(crate) struct Reloader {
    pub(crate) bus: Arc<Bus>,
    pub(crate) system_account: Option<String>,
    pub(crate) mqtt: Option<Arc<mqtt::MqttServer>>,
    pub(crate) ws: Option<Arc<ws::WsGateway>>,
    pub(crate) live: Arc<std::sync::RwLock<junction_web::Live>>,
    pub(crate) nats: Arc<nats::NatsServer>,
    pub(crate) cli: Cli,
    pub(crate) settings: Settings,
    pub(crate) wiring: String,
    pub(crate) auth: Arc<auth_config::Swappable>,
    pub(crate) logger: logging::Logger,
    /// TLS listeners whose certificates a reload reads again.
    pub(crate) tls: Vec<(&'static str, junction_protocols::tls::Tls)>,
    pub(crate) jetstream: Option<Arc<junction_jetstream::JetStream>>,
}

impl Reloader {
    /// Reads the configuration file again and applies it, or changes nothing and says why.
    pub(crate) fn reload(&mut self) -> Result<()> {
        let (new, warnings) = Settings::load(&self.cli, self.settings.nats_server_mode)?;
        let fixed = self.settings.unchangeable(&new);
        if !fixed.is_empty() {
            bail!(
                "config reload not supported for {}: restart the server to change them",
                fixed.join(", ")
            );
        }
        let auth = match &new.file {
            Some(map) => auth_config::load(map)?,
            None => auth_config::Auth::default(),
        };
        let rewire = auth.wiring() != self.wiring;
        if rewire && auth.system_account != self.system_account {
            bail!(
                "config reload not supported for the system account: restart the server to \
                 change it"
            );
        }
        if rewire {
            // Wired first on a scratch bus: an import no export allows fails the reload here,
            // before anything changed.
            auth.wire(&Bus::new())?;
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        if new.log != self.settings.log {
            self.logger.apply(&new.log)?;
            tracing::info!("Reloaded: logging");
        }
        // Limits of the NATS frontend, for connections made from now on.
        let old_opts = self.nats.opts.get();
        let opts = nats::Options {
            limits: nats::Limits {
                max_control_line: new.max_control_line,
                max_payload: new.max_payload,
            },
            max_connections: new.max_connections,
            max_pending: new.max_pending,
            ping_interval: new.ping_interval,
            ping_max: new.ping_max,
            write_deadline: new.write_deadline,
            auth_timeout: auth.timeout.unwrap_or_else(|| match &self.nats.tls {
                Some(t) => t.timeout + Duration::from_secs(1),
                None => Duration::from_secs(2),
            }),
            ..(*old_opts).clone()
        };
        for (name, changed) in [
            (
                "max_payload",
                opts.limits.max_payload != old_opts.limits.max_payload,
            ),
            (
                "max_control_line",
                opts.limits.max_control_line != old_opts.limits.max_control_line,
            ),
            (
                "max_connections",
                opts.max_connections != old_opts.max_connections,
            ),
            ("ping_max", opts.ping_max != old_opts.ping_max),
            ("max_pending", opts.max_pending != old_opts.max_pending),
            (
                "ping_interval",
                opts.ping_interval != old_opts.ping_interval,
            ),
            (
                "write_deadline",
                opts.write_deadline != old_opts.write_deadline,
            ),
            (
                "authorization timeout",
                opts.auth_timeout != old_opts.auth_timeout,
            ),
        ] {
            if changed {
                tracing::info!("Reloaded: {name} (connections made from now on)");
            }
        }
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = junction_web::Live {
            max_payload: opts.limits.max_payload,
            max_pending: opts.max_pending,
            write_deadline: opts.write_deadline,
            ping_interval: opts.ping_interval,
            max_control_line: opts.limits.max_control_line,
            max_connections: opts.max_connections,
            ping_max: opts.ping_max,
        };
        self.nats.opts.set(opts);
        if rewire {
            self.rewire(&auth)?;
        }
        if let Some(fe) = &self.mqtt {
            let opts = mqtt_options(&new, &auth, fe.tls.as_ref());
            if format!("{:?}", opts) != format!("{:?}", *fe.opts.get()) {
                tracing::info!("Reloaded: mqtt (connections and sessions made from now on)");
            }
            fe.reconfigure(opts);
        }
        if let Some(gw) = &self.ws {
            if format!("{:?}", new.ws) != format!("{:?}", *gw.opts.get()) {
                tracing::info!("Reloaded: websocket (handshakes from now on)");
            }
            gw.opts.set(new.ws.clone());
        }
        let _ = self.authorize(&auth);
        for (name, t) in &self.tls {
            match t.reload() {
                Ok(()) => tracing::info!("Reloaded: tls (reloaded the {name} TLS certificate)"),
                Err(e) => {
                    tracing::error!(error = %e, "reloading the {name} TLS certificate failed; keeping the current one")
                }
            }
        }
        self.settings = new;
        tracing::info!("Reloaded server configuration");
        Ok(())
    }
}

impl Reloader {
    /// Applies the accounts the JWT directory now holds (an account JWT was updated or deleted
    /// through the system account): imports, exports and mappings, the users' checks, and
    /// JetStream. The configuration file is not read again. Returns what hears when
    /// JetStream has applied the change.
    pub(crate) fn refresh_accounts(&mut self) -> Result<Option<JetStreamApplied>> {
        let Some(map) = &self.settings.file else {
            return Ok(None);
        };
        let auth = auth_config::load(map)?;
        if auth.wiring() != self.wiring {
            auth.wire(&Bus::new())?;
            self.rewire(&auth)?;
        }
        Ok(self.authorize(&auth))
    }

    /// Imports and exports: the old ones go, the new ones are wired as at startup.
    fn rewire(&mut self, auth: &auth_config::Auth) -> Result<()> {
        let removed = junction_core::import::remove_all(&self.bus);
        for w in auth.wire(&self.bus)? {
            tracing::warn!("{w}");
        }
        tracing::info!(
            "Reloaded: accounts (imports and exports; {removed} import subscriptions replaced)"
        );
        self.wiring = auth.wiring();
        Ok(())
    }

    /// New users and permissions, and the accounts' JetStream; every open connection is
    /// checked against them, off the reactor (a check may be a bcrypt comparison).
    fn authorize(&self, auth: &auth_config::Auth) -> Option<JetStreamApplied> {
        self.auth.swap(auth.authenticator.clone());
        tracing::info!("Reloaded: authorization");
        let applied = self
            .jetstream
            .as_ref()
            .map(|js| js.set_accounts(auth.jetstream_accounts(), auth.jetstream_limits()));
        let (bus, checker) = (self.bus.clone(), self.auth.clone());
        tokio::task::spawn_blocking(move || {
            let (checked, closed) = junction_protocols::recheck(&bus, &*checker);
            tracing::info!(
                "Reload checked {checked} connections again: closed {closed} no longer authorized as they were"
            );
        });
        applied
    }
}

/// Hears when JetStream has applied a change of accounts.
pub(crate) type JetStreamApplied = tokio::sync::oneshot::Receiver<()>;

/// The MQTT frontend's settings.
pub(crate) fn mqtt_options(
    settings: &Settings,
    auth: &auth_config::Auth,
    tls: Option<&junction_protocols::tls::Tls>,
) -> mqtt::broker::Options {
    mqtt::broker::Options {
        max_packet_size: settings.mqtt_max_packet_size,
        max_pending: settings.max_pending,
        max_queued: settings.mqtt_max_queued,
        queue_full: settings.mqtt_queue_full,
        max_connections: settings.mqtt_max_connections,
        nats_qos: settings.mqtt_nats_qos,
        write_deadline: settings.write_deadline,
        max_keep_alive: settings.mqtt_max_keep_alive,
        // As nats-server: the auth timeout (2 s), or the TLS timeout + 1 s with TLS.
        connect_timeout: auth.timeout.unwrap_or_else(|| match tls {
            Some(t) => t.timeout + Duration::from_secs(1),
            None => Duration::from_secs(2),
        }),
    }
}

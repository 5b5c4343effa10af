//! Settings: built-in defaults, then the configuration file (nats-server format), then flags.
//!
//! `cli` is the command line (nats-server's flags), `file` reads the configuration file,
//! and this module puts them together and says what a reload may change.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use junction_config::{Item, Map};

mod cli;
mod file;
#[cfg(test)]
mod tests;

pub use cli::{normalize_args, Cli};
pub(crate) use file::{at, bool_of, duration_of, strings_of};
use file::{http_port, listen_port, read_config};

/// Everything the binary needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub http_port: Option<u16>,
    /// HTTPS monitoring port (`None`: off).
    pub https_port: Option<u16>,
    pub server_name: Option<String>,
    pub max_payload: usize,
    pub max_pending: usize,
    pub max_control_line: usize,
    pub max_connections: usize,
    pub ping_interval: Duration,
    pub ping_max: u32,
    pub write_deadline: Duration,
    /// Where and how to log.
    pub log: crate::logging::LogOptions,
    /// `-P`, `pid_file`.
    pub pid_file: Option<PathBuf>,
    /// `--ports_file_dir`, `ports_file_dir`.
    pub ports_file_dir: Option<PathBuf>,
    /// Lame duck mode: how long closing every connection is spread over.
    pub lame_duck_duration: Duration,
    /// Lame duck mode: how long to wait before closing the first connection.
    pub lame_duck_grace_period: Duration,
    /// Started under the name `nats-server`: nats-server's defaults.
    pub nats_server_mode: bool,
    /// The data directory was chosen (flag or file), not defaulted.
    pub data_dir_chosen: bool,
    /// MQTT listener port (`None`: off).
    pub mqtt_port: Option<u16>,
    /// Largest MQTT packet accepted from a client.
    pub mqtt_max_packet_size: usize,
    /// QoS 1/2 messages kept per MQTT session while the client is away.
    pub mqtt_max_queued: usize,
    /// `mqtt { max_connections }` (0: only the server-wide `max_connections` applies).
    pub mqtt_max_connections: usize,
    /// `mqtt { queue_full: drop_oldest | refuse }`.
    pub mqtt_queue_full: junction_protocols::mqtt::broker::QueueFull,
    /// Highest QoS a NATS publication reaches an MQTT subscriber with.
    pub mqtt_nats_qos: u8,
    /// Longest MQTT keep alive a client may ask for.
    pub mqtt_max_keep_alive: Option<u16>,
    /// WebSocket listener port (`None`: off).
    pub ws_port: Option<u16>,
    /// WebSocket listener host (`None`: the client host).
    pub ws_host: Option<String>,
    /// The `websocket { tls { ... } }` block, unless `no_tls: true`.
    pub ws_tls: Option<junction_protocols::tls::Files>,
    /// Everything else of the `websocket { ... }` block.
    pub ws: junction_protocols::ws::Options,
    /// Directory of the durable store.
    pub data_dir: PathBuf,
    /// No durable store.
    pub in_memory: bool,
    /// `jetstream { sync_interval }`: when the store's log is synced (every commit by default).
    pub store_sync: junction_store::SyncPolicy,
    /// The top-level `tls { ... }` block: TLS on the NATS listener.
    pub tls: Option<junction_protocols::tls::Files>,
    /// The `mqtt { tls { ... } }` block.
    pub mqtt_tls: Option<junction_protocols::tls::Files>,
    /// The configuration file as read (the auth keys are read from it by `auth_config`).
    pub file: Option<Map>,
    /// JetStream (`-js`, `jetstream {}`); `None`: off.
    pub jetstream: Option<JetStreamSettings>,
    /// `leafnodes { remotes: [...] }`: the NATS servers this one attaches to as a leaf node.
    pub leaf_remotes: Vec<junction_protocols::leaf::Remote>,
    /// `leafnodes { reconnect }`: the wait after every URL of a remote failed (it doubles).
    pub leaf_reconnect: Duration,
    /// `leafnodes { port, authorization }`: accept leaf node connections.
    pub leaf_accept: Option<junction_protocols::leaf::Accept>,
}

/// The `jetstream { ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamSettings {
    /// Bytes of memory streams in all.
    pub max_memory: i64,
    /// Bytes of file streams in all.
    pub max_store: i64,
    pub domain: Option<String>,
}

impl Default for JetStreamSettings {
    fn default() -> Self {
        // nats-server's defaults: three quarters of the memory, and 1 TiB of disk.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let mem = if pages > 0 && page > 0 {
            (pages as i64).saturating_mul(page as i64) / 4 * 3
        } else {
            -1
        };
        JetStreamSettings {
            max_memory: mem,
            max_store: 1 << 40,
            domain: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 4222,
            http_port: Some(8222),
            https_port: None,
            server_name: None,
            max_payload: junction_protocols::nats::parser::DEFAULT_MAX_PAYLOAD,
            max_pending: junction_protocols::nats::DEFAULT_MAX_PENDING,
            max_control_line: junction_protocols::nats::parser::DEFAULT_MAX_CONTROL_LINE,
            max_connections: junction_protocols::nats::DEFAULT_MAX_CONNECTIONS,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            log: crate::logging::LogOptions::default(),
            pid_file: None,
            ports_file_dir: None,
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
            nats_server_mode: false,
            data_dir_chosen: false,
            mqtt_port: Some(1883),
            mqtt_max_packet_size: junction_protocols::mqtt::broker::Options::default()
                .max_packet_size,
            mqtt_max_queued: junction_protocols::mqtt::broker::Options::default().max_queued,
            mqtt_queue_full: Default::default(),
            mqtt_max_connections: 0,
            mqtt_nats_qos: 1,
            mqtt_max_keep_alive: None,
            ws_port: Some(8080),
            ws_host: None,
            ws_tls: None,
            ws: junction_protocols::ws::Options::default(),
            data_dir: PathBuf::from("junction-data"),
            in_memory: false,
            store_sync: junction_store::SyncPolicy::Always,
            tls: None,
            mqtt_tls: None,
            file: None,
            jetstream: None,
            leaf_remotes: Vec::new(),
            leaf_reconnect: Duration::from_secs(1),
            leaf_accept: None,
        }
    }
}

impl Settings {
    /// Applies command-line flags, which win over the file.
    pub fn apply_cli(&mut self, cli: &Cli) -> Result<()> {
        if cli.routes.is_some()
            || cli.cluster.is_some()
            || cli.cluster_name.is_some()
            || cli.cluster_advertise.is_some()
            || cli.connect_retries.is_some()
        {
            bail!(
                "--routes and --cluster are not supported: Junction does not form nats-server \
                 clusters with routes; it joins a NATS cluster as a leaf node (see the README)"
            );
        }
        if let Some(a) = &cli.addr {
            self.host = a.clone();
        }
        if let Some(p) = cli.port {
            self.port = listen_port(p);
        }
        if let Some(p) = cli.http_port {
            self.http_port = http_port(p);
        }
        if let Some(p) = cli.https_port {
            self.https_port = http_port(p);
        }
        if let Some(n) = &cli.server_name {
            self.server_name = Some(n.clone());
        }
        self.log.debug |= cli.debug;
        self.log.trace |= cli.trace;
        if let Some(t) = cli.logtime {
            self.log.time = t;
        }
        if let Some(f) = &cli.log_file {
            self.log.file = Some(f.clone());
        }
        if let Some(n) = cli.log_size_limit {
            self.log.size_limit = n;
        }
        self.log.syslog |= cli.syslog;
        if let Some(r) = &cli.remote_syslog {
            self.log.remote_syslog = Some(r.clone());
        }
        if let Some(p) = &cli.pid_file {
            self.pid_file = Some(p.clone());
        }
        if let Some(d) = &cli.ports_file_dir {
            self.ports_file_dir = Some(d.clone());
        }
        if let Some(p) = cli.mqtt_port {
            self.mqtt_port = http_port(p);
        }
        if let Some(p) = cli.ws_port {
            self.ws_port = http_port(p);
        }
        if let Some(d) = cli.data_dir.as_ref().or(cli.store_dir.as_ref()) {
            self.data_dir = d.clone();
            self.data_dir_chosen = true;
        }
        self.in_memory |= cli.in_memory;
        // TLS flags, as nats-server combines them: --tls=false turns TLS off; any other TLS
        // flag turns it on with the file's settings as the base.
        if cli.tls == Some(false) {
            self.tls = None;
        } else if cli.tls == Some(true)
            || cli.tlsverify.is_some()
            || cli.tlscert.is_some()
            || cli.tlskey.is_some()
            || cli.tlscacert.is_some()
        {
            let mut files = self.tls.clone().unwrap_or_default();
            if let Some(c) = &cli.tlscert {
                files.cert_file = c.clone();
            }
            if let Some(k) = &cli.tlskey {
                files.key_file = k.clone();
            }
            if let Some(ca) = &cli.tlscacert {
                files.ca_file = Some(ca.clone());
            }
            if let Some(v) = cli.tlsverify {
                files.verify = v;
            }
            if files.cert_file.as_os_str().is_empty() || files.key_file.as_os_str().is_empty() {
                bail!("TLS needs a certificate and a key: --tlscert FILE --tlskey FILE");
            }
            self.tls = Some(files);
        }
        Ok(())
    }

    /// Defaults, then the file, then the flags. Returns the settings and the warnings to log.
    pub fn load(cli: &Cli, nats_server_mode: bool) -> Result<(Settings, Vec<String>)> {
        let mut settings = Settings::default();
        if nats_server_mode {
            // nats-server's defaults: the NATS listener only.
            settings.nats_server_mode = true;
            settings.mqtt_port = None;
            settings.ws_port = None;
            settings.http_port = None;
            settings.data_dir = std::env::temp_dir().join("nats").join("junction");
        }
        let mut warnings = Vec::new();
        if let Some(path) = &cli.config {
            let map = read_config(path)?;
            warnings = settings.apply_file(&map)?;
            settings.file = Some(map);
        } else if cli.test_config {
            bail!("must specify [-c, --config] option to check configuration file syntax");
        }
        settings.apply_cli(cli)?;
        settings.apply_cli_auth(cli)?;
        if cli.jetstream && settings.jetstream.is_none() {
            settings.jetstream = Some(JetStreamSettings::default());
        }
        if cli.profile.is_some() {
            warnings.push("--profile is not supported: no profiling port is opened".into());
        }
        if settings.max_payload == 0 || settings.max_control_line == 0 {
            bail!("max_payload and max_control_line must be greater than zero");
        }
        if settings.https_port.is_some() && settings.tls.is_none() {
            bail!("https_port needs a top-level 'tls' block with the certificate to serve");
        }
        if settings.max_payload > settings.max_pending {
            bail!(
                "max_payload ({}) cannot exceed max_pending ({})",
                settings.max_payload,
                settings.max_pending
            );
        }
        Ok((settings, warnings))
    }

    /// The settings a reload cannot change while running (listeners, limits the frontends were
    /// built with, the store), named as in the configuration file, that differ in `new`.
    pub fn unchangeable(&self, new: &Settings) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name: &'static str, a: String, b: String| {
            if a != b {
                out.push(name);
            }
        };
        macro_rules! same {
            ($($field:ident => $name:literal),* $(,)?) => {
                $(check($name, format!("{:?}", self.$field), format!("{:?}", new.$field));)*
            };
        }
        same!(
            host => "host",
            port => "port",
            http_port => "http_port",
            https_port => "https_port",
            server_name => "server_name",
            // max_payload, max_pending, max_control_line, max_connections, ping_max,
            // write_deadline and ping_interval apply on reload.
            pid_file => "pid_file",
            ports_file_dir => "ports_file_dir",
            // The other mqtt and websocket settings apply on reload.
            mqtt_port => "mqtt.port",
            ws_port => "websocket.port",
            ws_host => "websocket.host",
            ws_tls => "websocket.tls",
            data_dir => "store_dir",
            in_memory => "in-memory",
            store_sync => "jetstream.sync_interval",
            tls => "tls",
            mqtt_tls => "mqtt.tls",
            jetstream => "jetstream",
            leaf_remotes => "leafnodes.remotes",
            leaf_reconnect => "leafnodes.reconnect",
            leaf_accept => "leafnodes.port",
        );
        out
    }

    /// `--user`/`--pass` and `--auth` replace the file's single user or token (the rest of its
    /// `authorization` block stays).
    fn apply_cli_auth(&mut self, cli: &Cli) -> Result<()> {
        if cli.user.is_none() && cli.pass.is_none() && cli.auth.is_none() {
            return Ok(());
        }
        if cli.user.is_some() != cli.pass.is_some() {
            bail!("--user and --pass go together");
        }
        if cli.user.is_some() && cli.auth.is_some() {
            bail!("--user/--pass and --auth cannot be used together");
        }
        let mut file = self.file.take().unwrap_or_default();
        let mut block = file
            .get("authorization")
            .and_then(|i| i.as_map())
            .cloned()
            .unwrap_or_default();
        let text = |s: &str| Item::new(junction_config::Value::String(s.to_string()), 0, 0);
        let mut kept = Map::new();
        for (k, v) in block.iter() {
            if !matches!(
                k.to_ascii_lowercase().as_str(),
                "user" | "username" | "password" | "pass" | "token"
            ) {
                kept.insert(k, v.clone());
            }
        }
        block = kept;
        if let (Some(u), Some(p)) = (&cli.user, &cli.pass) {
            block.insert("user", text(u));
            block.insert("password", text(p));
        }
        if let Some(t) = &cli.auth {
            block.insert("token", text(t));
        }
        file.insert(
            "authorization",
            Item::new(junction_config::Value::Map(block), 0, 0),
        );
        self.file = Some(file);
        Ok(())
    }
}

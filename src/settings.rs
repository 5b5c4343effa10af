//! Settings: built-in defaults, then the configuration file (nats-server format), then flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use junction_config::{Item, Map};

/// Junction: NATS services, MQTT devices and browsers on one message bus.
///
/// Runs a broker that unmodified NATS clients use exactly as they use nats-server, and takes
/// nats-server's flags with the same meaning (`-p`, `-c`, `-js`, `-DV`, `--signal reload`, ...;
/// Go's single-dash long form `-port` works too). Flags override the configuration file, which
/// uses the nats-server format (an existing nats-server.conf works for the keys Junction
/// supports; an unknown key is an error, a nats-server key Junction does not implement yet is a
/// warning). Users, accounts, permissions and TLS are configured there, with nats-server's
/// blocks: `authorization`, `accounts`, `no_auth_user`, `operator` with `resolver`, `tls`,
/// `mqtt { tls }`, `websocket { tls }`, and Junction's `external_jwt` (see the README).
///
/// Signals: SIGHUP reloads the configuration, SIGUSR1 reopens the log file, SIGUSR2 enters lame
/// duck mode, SIGTERM and SIGINT stop.
///
/// Invoked as `nats-server` (a symlink or copy), Junction takes nats-server's defaults: only the
/// NATS listener unless the configuration or flags ask for MQTT, WebSocket or monitoring.
#[derive(Debug, Parser)]
#[command(
    name = "junction",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Cli {
    /// Host to listen on for clients [default: every IPv4 and IPv6 address].
    #[arg(short = 'a', long = "addr", visible_alias = "net", value_name = "HOST")]
    pub addr: Option<String>,
    /// NATS client port (-1: a random free port) [default: 4222].
    #[arg(short = 'p', long = "port", value_name = "N", allow_negative_numbers = true,
          value_parser = port_arg)]
    pub port: Option<i32>,
    /// Server name [default: junction- and the start of the server id].
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "server_name",
        value_name = "NAME"
    )]
    pub server_name: Option<String>,
    /// File to store the process id in (removed at exit).
    #[arg(short = 'P', long = "pid", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// HTTP monitoring port (0: off; -1: a random free port) [default: 8222; as nats-server:
    /// off].
    #[arg(short = 'm', long = "http_port", visible_alias = "http-port", value_name = "N",
          allow_negative_numbers = true, value_parser = port_arg)]
    pub http_port: Option<i32>,
    /// HTTPS monitoring port, with the top-level `tls` block's certificate (-1: a random free
    /// port; `-ms` works too) [default: off].
    #[arg(long = "https_port", visible_alias = "https-port", value_name = "N",
          allow_negative_numbers = true, value_parser = port_arg)]
    pub https_port: Option<i32>,
    /// Configuration file (nats-server format).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration file and exit.
    #[arg(short = 't')]
    pub test_config: bool,
    /// Send a signal to a running server and exit: ldm, stop, quit, term, reopen or reload,
    /// optionally `=PID` or `=PIDFILE` (`-sl` works too).
    #[arg(long = "signal", value_name = "SIGNAL[=PID]")]
    pub signal: Option<String>,
    /// Client URL to advertise (Junction has no cluster routes, so there is nothing to advertise
    /// it to; accepted for compatibility).
    #[arg(long = "client_advertise", value_name = "URL")]
    pub client_advertise: Option<String>,
    /// Write `<executable>_<pid>.ports` (JSON: the URLs of every listener) into this directory.
    #[arg(long = "ports_file_dir", value_name = "DIR")]
    pub ports_file_dir: Option<PathBuf>,
    /// Log to this file instead of stderr (SIGUSR1 reopens it).
    #[arg(
        short = 'l',
        long = "log",
        visible_alias = "log_file",
        value_name = "FILE"
    )]
    pub log_file: Option<PathBuf>,
    /// Timestamp log lines (`-T=false`: without) [default: true].
    #[arg(short = 'T', long = "logtime", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub logtime: Option<bool>,
    /// Log to the local syslog.
    #[arg(short = 's', long = "syslog")]
    pub syslog: bool,
    /// Log to a remote syslog: udp://host:port.
    #[arg(short = 'r', long = "remote_syslog", value_name = "ADDR")]
    pub remote_syslog: Option<String>,
    /// Log debug messages (`-DV`: debug and trace).
    #[arg(short = 'D', long = "debug")]
    pub debug: bool,
    /// Log protocol traces (`-VV` and `-DVV` work too).
    #[arg(short = 'V', long = "trace")]
    pub trace: bool,
    /// Rotate the log file past this size (bytes, or 10MB and the like).
    #[arg(long = "log_size_limit", value_name = "SIZE", value_parser = size_arg)]
    pub log_size_limit: Option<u64>,
    /// Accepted for compatibility: Junction's traces do not print message payloads.
    #[arg(long = "max_traced_msg_len", value_name = "N")]
    pub max_traced_msg_len: Option<i64>,
    /// Enable JetStream (not available in this build yet: a warning says so; `-js` works too).
    #[arg(long = "jetstream")]
    pub jetstream: bool,
    /// Storage directory (`-sd` works too): the durable store lives here.
    #[arg(long = "store_dir", value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
    /// User required for connections (with --pass).
    #[arg(long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Password required for connections (with --user).
    #[arg(long = "pass", value_name = "PASSWORD")]
    pub pass: Option<String>,
    /// Token required for connections.
    #[arg(long = "auth", value_name = "TOKEN")]
    pub auth: Option<String>,
    /// TLS on the NATS listener without client certificates (`--tls=false` turns off the
    /// configuration file's).
    #[arg(long = "tls", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub tls: Option<bool>,
    /// Server certificate file.
    #[arg(long = "tlscert", value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Private key of the server certificate.
    #[arg(long = "tlskey", value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// TLS, and clients must present a certificate the CA signed.
    #[arg(long = "tlsverify", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub tlsverify: Option<bool>,
    /// CA certificate that client certificates must be signed by.
    #[arg(long = "tlscacert", value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// nats-server cluster routes: refused, Junction joins a cluster as a leaf node.
    #[arg(long = "routes", value_name = "URLS", hide = true)]
    pub routes: Option<String>,
    /// See --routes.
    #[arg(
        long = "cluster",
        visible_alias = "cluster_listen",
        value_name = "URL",
        hide = true
    )]
    pub cluster: Option<String>,
    /// See --routes.
    #[arg(long = "cluster_name", value_name = "NAME", hide = true)]
    pub cluster_name: Option<String>,
    /// See --routes.
    #[arg(long = "cluster_advertise", value_name = "URL", hide = true)]
    pub cluster_advertise: Option<String>,
    /// See --routes.
    #[arg(long = "connect_retries", value_name = "N", hide = true)]
    pub connect_retries: Option<i64>,
    /// Do not advertise cluster URLs to clients (Junction never does; accepted for
    /// compatibility).
    #[arg(long = "no_advertise", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub no_advertise: Option<bool>,
    /// Profiling port: not available (a warning says so).
    #[arg(long = "profile", value_name = "PORT", hide = true)]
    pub profile: Option<i64>,
    /// MQTT port (0: off; -1: a random free port) [default: 1883; as nats-server: off].
    #[arg(long = "mqtt-port", visible_alias = "mqtt_port", value_name = "N",
          allow_negative_numbers = true, value_parser = port_arg)]
    pub mqtt_port: Option<i32>,
    /// WebSocket port for browsers, NATS and MQTT on one listener (0: off; -1: a random free
    /// port) [default: 8080; as nats-server: off].
    #[arg(long = "ws-port", visible_alias = "ws_port", value_name = "N",
          allow_negative_numbers = true, value_parser = port_arg)]
    pub ws_port: Option<i32>,
    /// Directory of the durable store: persistent MQTT sessions, their queued messages and
    /// retained messages survive a crash or restart [default: ./junction-data when the working
    /// directory is writable, else $XDG_STATE_HOME/junction or ~/.local/state/junction].
    #[arg(long = "data-dir", visible_alias = "data_dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep MQTT state in memory only: nothing survives a restart.
    #[arg(long = "in-memory")]
    pub in_memory: bool,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
}

/// A port flag: -1 to 65535.
fn port_arg(s: &str) -> Result<i32, String> {
    let n: i32 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a port number"))?;
    if (-1..=65535).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not a port (use -1 to 65535; -1 picks a free one)"
        ))
    }
}

/// A size flag: bytes, or a number with KB, MB, GB (as the configuration file takes them).
fn size_arg(s: &str) -> Result<u64, String> {
    let map = junction_config::parse_str(&format!("v: {s}\n")).map_err(|e| e.to_string())?;
    map.get("v")
        .and_then(|i| i.as_i64())
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("'{s}' is not a size"))
}

/// nats-server's flag spellings clap does not take as they are: multi-letter single-dash flags
/// (`-js`, `-sd`, `-ms`, `-sl`, `-DV`, `-VV`, `-DVV`) and Go's single-dash long form (`-port 4222`,
/// `-config=x.conf`). Everything after `--` is left alone.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    const LONG: &[&str] = &[
        "addr",
        "net",
        "port",
        "name",
        "server_name",
        "pid",
        "http_port",
        "https_port",
        "config",
        "signal",
        "client_advertise",
        "ports_file_dir",
        "log",
        "log_file",
        "logtime",
        "syslog",
        "remote_syslog",
        "debug",
        "trace",
        "log_size_limit",
        "max_traced_msg_len",
        "jetstream",
        "store_dir",
        "user",
        "pass",
        "auth",
        "tls",
        "tlscert",
        "tlskey",
        "tlsverify",
        "tlscacert",
        "routes",
        "cluster",
        "cluster_listen",
        "cluster_name",
        "cluster_advertise",
        "connect_retries",
        "no_advertise",
        "profile",
        "help",
        "version",
        "mqtt_port",
        "ws_port",
        "data_dir",
    ];
    let mut out = Vec::new();
    let mut rest = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || rest || !arg.starts_with('-') || arg.starts_with("--") || arg.len() < 3 {
            rest |= arg == "--";
            out.push(arg);
            continue;
        }
        let (name, value) = match arg[1..].split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg[1..].to_string(), None),
        };
        let with = |flag: &str| match &value {
            Some(v) => format!("{flag}={v}"),
            None => flag.to_string(),
        };
        match name.as_str() {
            "js" => out.push(with("--jetstream")),
            "sd" => out.push(with("--store_dir")),
            "ms" => out.push(with("--https_port")),
            "sl" => out.push(with("--signal")),
            "DV" | "DVV" => out.extend(["-D".to_string(), "-V".to_string()]),
            "VV" => out.push("-V".to_string()),
            n if LONG.contains(&n) => out.push(with(&format!("--{n}"))),
            _ => out.push(arg),
        }
    }
    out
}

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
    /// The top-level `tls { ... }` block: TLS on the NATS listener.
    pub tls: Option<junction_protocols::tls::Files>,
    /// The `mqtt { tls { ... } }` block.
    pub mqtt_tls: Option<junction_protocols::tls::Files>,
    /// The configuration file as read (the auth keys are read from it by `auth_config`).
    pub file: Option<Map>,
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
            tls: None,
            mqtt_tls: None,
            file: None,
        }
    }
}

/// Top-level keys of nats-server's configuration that Junction does not implement yet: a warning
/// names each and says it is ignored (any other unknown key is an error, as in nats-server).
const LATER_KEYS: &[&str] = &[
    "leafnodes",
    "leaf",
    "jetstream",
    "gateway",
    "trace_verbose",
    "trace_headers",
    "mappings",
    "maps",
    "disable_sublist_cache",
    "no_sublist_cache",
    "default_sentinel",
    "http_base_path",
    "prof_port",
    "prof_block_rate",
    "proxy_protocol",
    "max_traced_msg_len",
    "max_subscriptions",
    "max_subs",
    "max_sub_tokens",
    "max_subscription_tokens",
    "ocsp",
    "ocsp_cache",
    "write_timeout",
    "resolver_tls",
    "resolver_pinned_accounts",
    "no_header_support",
    "connect_error_reports",
    "reconnect_error_reports",
    "server_tags",
    "server_metadata",
    "feature_flags",
    "default_js_domain",
    "no_fast_producer_stall",
    "max_closed_clients",
    "proxies",
    "client_advertise",
];

/// Keys of nats-server's `mqtt` block that Junction does not implement (most configure the
/// JetStream streams nats-server keeps MQTT state in).
const MQTT_LATER_KEYS: &[&str] = &[
    "authorization",
    "no_auth_user",
    "ack_wait",
    "max_ack_pending",
    "js_domain",
    "stream_replicas",
    "consumer_replicas",
    "consumer_memory_storage",
    "consumer_inactive_threshold",
    "js_api_timeout",
    "reject_qos2_publish",
    "downgrade_qos2_subscribe",
];

/// Keys of nats-server's `websocket` block that Junction does not implement yet.
const WS_LATER_KEYS: &[&str] = &[
    "advertise",
    "authorization",
    "jwt_cookie",
    "username_cookie",
    "password_cookie",
    "token_cookie",
    "no_auth_user",
    "headers",
];

/// Keys of nats-server's `tls` blocks that Junction does not implement yet.
const TLS_LATER_KEYS: &[&str] = &[
    "insecure",
    "cert_store",
    "cert_match_by",
    "cert_match",
    "cert_match_skip_invalid",
    "ca_certs_match",
    "ocsp_peer",
    "certs",
    "min_version",
    "connection_rate_limit",
    "verify_cert_and_check_known_urls",
];

/// A warning about the configuration, with where it was found.
pub(crate) fn at(item: &Item) -> String {
    match &item.file {
        Some(f) => format!("{}:{}:{}", f.display(), item.line, item.column),
        None => format!("{}:{}", item.line, item.column),
    }
}

fn port_of(item: &Item, key: &str) -> Result<i32> {
    let n = item
        .as_i64()
        .ok_or_else(|| anyhow!("{}: '{key}' must be a number", at(item)))?;
    i32::try_from(n)
        .ok()
        .filter(|p| (-1..=65535).contains(p))
        .ok_or_else(|| anyhow!("{}: '{key}' is not a port: {n}", at(item)))
}

fn size_of(item: &Item, key: &str) -> Result<usize> {
    item.as_i64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| anyhow!("{}: '{key}' must be a non-negative size", at(item)))
}

/// Longest duration a setting takes: anything longer means "never" in practice, and a clock
/// cannot add an unbounded duration to now.
const MAX_SETTING_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(crate) fn duration_of(item: &Item, key: &str) -> Result<Duration> {
    item.as_duration()
        .map(|d| d.min(MAX_SETTING_DURATION))
        .map_err(|e| anyhow!("{}: '{key}': {e}", at(item)))
}

/// A duration that must not be zero (a period, a deadline).
fn positive_duration_of(item: &Item, key: &str) -> Result<Duration> {
    let d = duration_of(item, key)?;
    if d.is_zero() {
        return Err(anyhow!("{}: '{key}' must be more than zero", at(item)));
    }
    Ok(d)
}

pub(crate) fn bool_of(item: &Item, key: &str) -> Result<bool> {
    item.as_bool()
        .ok_or_else(|| anyhow!("{}: '{key}' must be true or false", at(item)))
}

/// `-1` and `0` ask for a random free port, as nats-server's `-p -1` does.
fn listen_port(p: i32) -> u16 {
    u16::try_from(p).unwrap_or(0)
}

/// `0` turns the monitor off; `-1` asks for a random free port.
fn http_port(p: i32) -> Option<u16> {
    match p {
        0 => None,
        -1 => Some(0),
        p => u16::try_from(p).ok(),
    }
}

/// The text of a `listen`-like value: `host:port`, a host, or a bare port number.
fn listen_text(item: &Item, key: &str) -> Result<String> {
    match &item.value {
        junction_config::Value::Integer(n) => Ok(n.to_string()),
        _ => item
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: '{key}' must be host:port", at(item))),
    }
}

/// Splits `host:port` (as in `listen: 127.0.0.1:4222`); a bare host or port is also accepted.
fn split_listen(s: &str) -> (Option<String>, Option<i32>) {
    if let Ok(p) = s.parse::<i32>() {
        return (None, Some(p));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if p.parse::<i32>().is_ok() => (
            Some(h.trim_matches(|c| c == '[' || c == ']').to_string()),
            p.parse().ok(),
        ),
        _ => (Some(s.to_string()), None),
    }
}

impl Settings {
    /// Applies a parsed configuration file. Returns the warnings to log.
    pub fn apply_file(&mut self, map: &Map) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        for (key, item) in map.iter() {
            let k = key.to_ascii_lowercase();
            match k.as_str() {
                "host" | "net" => {
                    self.host = item
                        .as_str()
                        .ok_or_else(|| anyhow!("{}: '{key}' must be a string", at(item)))?
                        .to_string()
                }
                "listen" => {
                    let (h, p) = split_listen(&listen_text(item, "listen")?);
                    if let Some(h) = h {
                        self.host = h;
                    }
                    if let Some(p) = p {
                        self.port = listen_port(p);
                    }
                }
                "port" => self.port = listen_port(port_of(item, key)?),
                "http_port" | "monitor_port" => self.http_port = http_port(port_of(item, key)?),
                "https_port" => self.https_port = http_port(port_of(item, key)?),
                "https" => match split_listen(&listen_text(item, key)?) {
                    (_, Some(p)) => self.https_port = http_port(p),
                    _ => bail!("{}: 'https' must be host:port or a port", at(item)),
                },
                "http" => {
                    let text = match &item.value {
                        junction_config::Value::Integer(n) => n.to_string(),
                        _ => item.as_str().unwrap_or_default().to_string(),
                    };
                    match split_listen(&text) {
                        (_, Some(p)) => self.http_port = http_port(p),
                        _ => bail!("{}: 'http' must be host:port or a port", at(item)),
                    }
                }
                "server_name" => {
                    self.server_name = Some(
                        item.as_str()
                            .ok_or_else(|| anyhow!("{}: '{key}' must be a string", at(item)))?
                            .to_string(),
                    )
                }
                "max_payload" => self.max_payload = size_of(item, key)?,
                "max_pending" => self.max_pending = size_of(item, key)?,
                "max_control_line" => self.max_control_line = size_of(item, key)?,
                "max_connections" | "max_conn" => self.max_connections = size_of(item, key)?,
                "ping_interval" => self.ping_interval = positive_duration_of(item, key)?,
                "ping_max" => {
                    self.ping_max = u32::try_from(size_of(item, key)?)
                        .map_err(|_| anyhow!("{}: 'ping_max' is too large", at(item)))?
                }
                "write_deadline" => self.write_deadline = positive_duration_of(item, key)?,
                "mqtt" => self.apply_mqtt(item, &mut warnings)?,
                "websocket" | "ws" => self.apply_websocket(item, &mut warnings)?,
                "data_dir" | "store_dir" | "storedir" => {
                    self.data_dir = PathBuf::from(
                        item.as_str()
                            .ok_or_else(|| anyhow!("{}: '{key}' must be a directory", at(item)))?,
                    );
                    self.data_dir_chosen = true;
                }
                "jetstream" => {
                    // JetStream itself is not served yet; its store directory is the store's.
                    if let Some(dir) = item
                        .as_map()
                        .and_then(|m| m.get("store_dir").or_else(|| m.get("storedir")))
                    {
                        if !self.data_dir_chosen {
                            self.data_dir = PathBuf::from(dir.as_str().ok_or_else(|| {
                                anyhow!("{}: 'jetstream.store_dir' must be a directory", at(dir))
                            })?);
                            self.data_dir_chosen = true;
                        }
                    }
                    let enabled = match &item.value {
                        junction_config::Value::Bool(b) => *b,
                        junction_config::Value::String(s) => {
                            !matches!(s.to_ascii_lowercase().as_str(), "disabled" | "false")
                        }
                        _ => true,
                    };
                    if enabled {
                        warnings.push(format!(
                            "{}: JetStream is not available in this build yet: 'jetstream' is ignored",
                            at(item)
                        ));
                    }
                }
                "cluster" => bail!(
                    "{}: 'cluster': Junction does not form nats-server clusters with routes; it \
                     joins a NATS cluster as a leaf node (see the README)",
                    at(item)
                ),
                "log_file" | "logfile" => {
                    self.log.file =
                        Some(PathBuf::from(item.as_str().ok_or_else(|| {
                            anyhow!("{}: '{key}' must be a file name", at(item))
                        })?))
                }
                "logfile_size_limit" | "log_size_limit" => {
                    self.log.size_limit = size_of(item, key)? as u64
                }
                "logfile_max_num" | "log_max_num" => self.log.max_files = size_of(item, key)?,
                "logtime" => self.log.time = bool_of(item, key)?,
                // Junction's log times are always UTC.
                "logtime_utc" => {
                    bool_of(item, key)?;
                }
                "syslog" => self.log.syslog = bool_of(item, key)?,
                "remote_syslog" => {
                    self.log.remote_syslog = Some(
                        item.as_str()
                            .ok_or_else(|| {
                                anyhow!("{}: '{key}' must be udp://host:port", at(item))
                            })?
                            .to_string(),
                    )
                }
                "pid_file" | "pidfile" => {
                    self.pid_file =
                        Some(PathBuf::from(item.as_str().ok_or_else(|| {
                            anyhow!("{}: '{key}' must be a file name", at(item))
                        })?))
                }
                "ports_file_dir" => {
                    self.ports_file_dir =
                        Some(PathBuf::from(item.as_str().ok_or_else(|| {
                            anyhow!("{}: '{key}' must be a directory", at(item))
                        })?))
                }
                "lame_duck_duration" => self.lame_duck_duration = positive_duration_of(item, key)?,
                "lame_duck_grace_period" => self.lame_duck_grace_period = duration_of(item, key)?,
                "tls" => self.tls = Some(tls_files(item, "tls", &mut warnings)?),
                _ if crate::auth_config::KEYS.contains(&k.as_str()) => {}
                "debug" => self.log.debug = bool_of(item, key)?,
                "trace" => self.log.trace = bool_of(item, key)?,
                _ if item.used_as_variable => {}
                _ if LATER_KEYS.contains(&k.as_str()) => warnings.push(format!(
                    "{}: '{key}' is not supported yet and is ignored",
                    at(item)
                )),
                _ => bail!("{}: unknown field \"{key}\"", at(item)),
            }
        }
        Ok(warnings)
    }

    /// Applies the `mqtt { ... }` block.
    fn apply_mqtt(&mut self, block: &Item, warnings: &mut Vec<String>) -> Result<()> {
        let map = block
            .as_map()
            .ok_or_else(|| anyhow!("{}: 'mqtt' must be a block", at(block)))?;
        for (key, item) in map.iter() {
            match key.to_ascii_lowercase().as_str() {
                "port" => self.mqtt_port = http_port(port_of(item, key)?),
                "host" | "listen" => warnings.push(format!(
                    "{}: 'mqtt.{key}' is not supported yet; MQTT listens on the client host",
                    at(item)
                )),
                "max_packet_size" => self.mqtt_max_packet_size = size_of(item, key)?,
                "max_connections" | "max_conn" => self.mqtt_max_connections = size_of(item, key)?,
                "queue_full" => {
                    use junction_protocols::mqtt::broker::QueueFull;
                    self.mqtt_queue_full = match item.as_str() {
                        Some("drop_oldest") => QueueFull::DropOldest,
                        Some("refuse") => QueueFull::Refuse,
                        _ => {
                            return Err(anyhow!(
                                "{}: 'queue_full' must be drop_oldest or refuse",
                                at(item)
                            ))
                        }
                    }
                }
                "max_queued_messages" | "max_pending_messages" => {
                    self.mqtt_max_queued = size_of(item, key)?
                }
                "max_keep_alive" | "max_keepalive" => {
                    self.mqtt_max_keep_alive = Some(
                        u16::try_from(size_of(item, key)?)
                            .ok()
                            .filter(|k| *k > 0)
                            .ok_or_else(|| {
                                anyhow!("{}: 'mqtt.{key}' must be 1 to 65535 seconds", at(item))
                            })?,
                    )
                }
                "tls" => self.mqtt_tls = Some(tls_files(item, "mqtt.tls", warnings)?),
                "nats_qos" => {
                    self.mqtt_nats_qos = u8::try_from(size_of(item, key)?)
                        .ok()
                        .filter(|q| *q <= 2)
                        .ok_or_else(|| anyhow!("{}: 'mqtt.nats_qos' must be 0, 1 or 2", at(item)))?
                }
                _ if item.used_as_variable => {}
                k if MQTT_LATER_KEYS.contains(&k) => warnings.push(format!(
                    "{}: 'mqtt.{key}' is not supported yet and is ignored",
                    at(item)
                )),
                _ => bail!("{}: unknown field \"mqtt.{key}\"", at(item)),
            }
        }
        Ok(())
    }

    /// Applies the `websocket { ... }` block (nats-server's keys, plus `max_message_size`).
    fn apply_websocket(&mut self, block: &Item, warnings: &mut Vec<String>) -> Result<()> {
        let map = block
            .as_map()
            .ok_or_else(|| anyhow!("{}: 'websocket' must be a block", at(block)))?;
        let mut no_tls = false;
        let mut tls = None;
        for (key, item) in map.iter() {
            match key.to_ascii_lowercase().as_str() {
                "port" => self.ws_port = http_port(port_of(item, key)?),
                "host" | "listen" => {
                    let (h, p) = split_listen(&listen_text(item, &format!("websocket.{key}"))?);
                    if let Some(h) = h {
                        self.ws_host = Some(h);
                    }
                    if let Some(p) = p {
                        self.ws_port = http_port(p);
                    }
                }
                "no_tls" => no_tls = bool_of(item, key)?,
                "tls" => tls = Some(tls_files(item, "websocket.tls", warnings)?),
                "same_origin" => self.ws.same_origin = bool_of(item, key)?,
                "allowed_origins" => {
                    let list = item.as_array().ok_or_else(|| {
                        anyhow!("{}: 'websocket.allowed_origins' must be a list", at(item))
                    })?;
                    self.ws.allowed_origins = list
                        .iter()
                        .map(|o| {
                            o.as_str()
                                .and_then(junction_protocols::ws::Origin::parse)
                                .ok_or_else(|| {
                                    anyhow!(
                                        "{}: an allowed origin must look like http://host[:port]",
                                        at(o)
                                    )
                                })
                        })
                        .collect::<Result<_>>()?;
                }
                "compression" => self.ws.compression = bool_of(item, key)?,
                "handshake_timeout" => self.ws.handshake_timeout = duration_of(item, key)?,
                "max_message_size" => self.ws.max_message = size_of(item, key)?,
                _ if item.used_as_variable => {}
                k if WS_LATER_KEYS.contains(&k) => warnings.push(format!(
                    "{}: 'websocket.{key}' is not supported yet and is ignored",
                    at(item)
                )),
                _ => bail!("{}: unknown field \"websocket.{key}\"", at(item)),
            }
        }
        self.ws_tls = if no_tls { None } else { tls };
        Ok(())
    }

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
        if cli.jetstream {
            warnings.push("JetStream is not available in this build yet: -js is ignored".into());
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
            tls => "tls",
            mqtt_tls => "mqtt.tls",
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

/// Reads a `tls { ... }` block.
fn tls_files(
    block: &Item,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<junction_protocols::tls::Files> {
    let map = block
        .as_map()
        .ok_or_else(|| anyhow!("{}: '{name}' must be a block", at(block)))?;
    let mut files = junction_protocols::tls::Files::default();
    let path_of = |item: &Item, key: &str| -> Result<PathBuf> {
        item.as_str()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("{}: '{name}.{key}' must be a file name", at(item)))
    };
    let (mut cert, mut key_file) = (None, None);
    for (key, item) in map.iter() {
        match key.to_ascii_lowercase().as_str() {
            "cert_file" => cert = Some(path_of(item, key)?),
            "key_file" => key_file = Some(path_of(item, key)?),
            "ca_file" => files.ca_file = Some(path_of(item, key)?),
            "verify" => files.verify = bool_of(item, key)?,
            "verify_and_map" => files.verify_and_map = bool_of(item, key)?,
            "timeout" => files.timeout = Some(duration_of(item, key)?),
            "handshake_first" | "first" | "immediate" => match &item.value {
                junction_config::Value::Bool(b) => files.handshake_first = *b,
                junction_config::Value::String(s) => match s.to_ascii_lowercase().as_str() {
                    "true" | "on" => files.handshake_first = true,
                    "false" | "off" => files.handshake_first = false,
                    // nats-server's default fallback delay.
                    "auto" | "auto_fallback" => {
                        files.handshake_first = true;
                        files.handshake_first_fallback = Some(std::time::Duration::from_millis(50));
                    }
                    _ => {
                        files.handshake_first = true;
                        files.handshake_first_fallback =
                            Some(duration_of(item, key).map_err(|_| {
                                anyhow!(
                                    "{}: '{name}.{key}' must be true, false, auto or a duration",
                                    at(item)
                                )
                            })?);
                    }
                },
                _ => bail!(
                    "{}: '{name}.{key}' must be true, false, auto or a duration",
                    at(item)
                ),
            },
            "cipher_suites" => files.cipher_suites = string_list(item, name, key)?,
            "curve_preferences" => files.curve_preferences = string_list(item, name, key)?,
            "pinned_certs" => files.pinned_certs = string_list(item, name, key)?,
            _ if item.used_as_variable => {}
            k if TLS_LATER_KEYS.contains(&k) => warnings.push(format!(
                "{}: '{name}.{key}' is not supported yet and is ignored",
                at(item)
            )),
            _ => bail!("{}: unknown field \"{name}.{key}\"", at(item)),
        }
    }
    match (cert, key_file) {
        (Some(c), Some(k)) => {
            files.cert_file = c;
            files.key_file = k;
            Ok(files)
        }
        _ => bail!(
            "{}: '{name}' needs both 'cert_file' and 'key_file'",
            at(block)
        ),
    }
}

/// A list of strings (a single string is a list of one).
fn string_list(item: &Item, block: &str, key: &str) -> Result<Vec<String>> {
    let one = |i: &Item| {
        i.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: '{block}.{key}' must be a list of strings", at(i)))
    };
    match item.as_array() {
        Some(list) => list.iter().map(one).collect(),
        None => Ok(vec![one(item)?]),
    }
}

fn read_config(path: &Path) -> Result<Map> {
    junction_config::parse_file(path)
        .with_context(|| format!("configuration file '{}' is not valid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["junction".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        Cli::parse_from(normalize_args(all))
    }

    #[test]
    fn file_then_flags() {
        let map = junction_config::parse_str(
            "listen: 127.0.0.1:4333\nhttp_port: 8333\nmax_payload: 2MB\nping_interval: \"30s\"\nping_max: 3\nserver_name: edge-1\nwrite_deadline: 2s\nmax_connections: 100\njetstream: enabled\nmqtt { port: 1883 }\n",
        )
        .unwrap();
        let mut s = Settings::default();
        let warnings = s.apply_file(&map).unwrap();
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!(s.port, 4333);
        assert_eq!(s.http_port, Some(8333));
        assert_eq!(s.max_payload, 2 * 1024 * 1024);
        assert_eq!(s.ping_interval, Duration::from_secs(30));
        assert_eq!(s.ping_max, 3);
        assert_eq!(s.write_deadline, Duration::from_secs(2));
        assert_eq!(s.max_connections, 100);
        assert_eq!(s.server_name.as_deref(), Some("edge-1"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("JetStream") && warnings[0].starts_with("9:"));
        assert_eq!(s.mqtt_port, Some(1883));
        s.apply_cli(&cli(&["-p", "5000", "-a", "::1", "-m", "0", "-D"]))
            .unwrap();
        assert_eq!(s.port, 5000);
        assert_eq!(s.host, "::1");
        assert_eq!(s.http_port, None);
        assert!(s.log.debug);
    }

    #[test]
    fn bad_values_name_their_place() {
        let map = junction_config::parse_str("port: 4222\nmax_payload: lots\n").unwrap();
        let err = Settings::default()
            .apply_file(&map)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("2:1:"), "{err}");
        let map = junction_config::parse_str("port: 70000\n").unwrap();
        assert!(Settings::default().apply_file(&map).is_err());
    }

    #[test]
    fn flags_parse() {
        let c = cli(&[
            "--addr",
            "127.0.0.1",
            "--port",
            "-1",
            "--http-port",
            "8000",
            "--mqtt-port",
            "1883",
            "--ws-port",
            "8080",
            "--data-dir",
            "/tmp/x",
            "--config",
            "a.conf",
            "--trace",
        ]);
        assert_eq!(c.port, Some(-1));
        assert_eq!(c.mqtt_port, Some(1883));
        let mut s = Settings::default();
        s.apply_cli(&cli(&["--mqtt-port", "0"])).unwrap();
        assert_eq!(s.mqtt_port, None);
        assert!(c.trace);
        assert_eq!(c.config.as_deref(), Some(Path::new("a.conf")));
    }

    #[test]
    fn unknown_keys_are_errors_and_later_keys_warnings() {
        let map = junction_config::parse_str("port: 4222\nmax_paylod: 1MB\n").unwrap();
        let err = Settings::default()
            .apply_file(&map)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "2:1: unknown field \"max_paylod\"");
        let map = junction_config::parse_str("mqtt { port: 1883, prot: 1 }\n").unwrap();
        let err = Settings::default()
            .apply_file(&map)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field \"mqtt.prot\""), "{err}");
        let map = junction_config::parse_str(
            "gateway { name: x }\nmqtt { ack_wait: 1m }\ntls { cert_file: a, key_file: b, insecure: true }\n",
        )
        .unwrap();
        let warnings = Settings::default().apply_file(&map).unwrap();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("'gateway' is not supported yet"));
        assert!(warnings[1].contains("'mqtt.ack_wait' is not supported yet"));
        assert!(warnings[2].contains("'tls.insecure' is not supported yet"));
        let map = junction_config::parse_str("cluster { port: 6222 }\n").unwrap();
        let err = Settings::default()
            .apply_file(&map)
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaf node"), "{err}");
    }

    #[test]
    fn nats_server_spellings() {
        let c = cli(&[
            "-js",
            "-sd",
            "/tmp/js",
            "-DV",
            "-ms",
            "8443",
            "-port=4333",
            "-T=false",
            "-sl",
            "reload=42",
            "--http_port",
            "-1",
            "-l",
            "/tmp/x.log",
            "--log_size_limit",
            "10MB",
        ]);
        assert!(c.jetstream && c.debug && c.trace);
        assert_eq!(c.store_dir.as_deref(), Some(Path::new("/tmp/js")));
        assert_eq!(c.https_port, Some(8443));
        assert_eq!(c.port, Some(4333));
        assert_eq!(c.logtime, Some(false));
        assert_eq!(c.signal.as_deref(), Some("reload=42"));
        assert_eq!(c.http_port, Some(-1));
        assert_eq!(c.log_size_limit, Some(10 * 1024 * 1024));
        let c = cli(&["-VV", "-T"]);
        assert!(c.trace && !c.debug);
        assert_eq!(c.logtime, Some(true));
        for bad in [["-p", "99999"], ["-p", "-2"], ["-m", "x"]] {
            let mut all = vec!["junction".to_string()];
            all.extend(bad.iter().map(|a| a.to_string()));
            assert!(Cli::try_parse_from(normalize_args(all)).is_err(), "{bad:?}");
        }
        let mut s = Settings::default();
        s.apply_cli(&cli(&["-sd", "/tmp/js", "-l", "/tmp/x.log"]))
            .unwrap();
        assert_eq!(s.data_dir, Path::new("/tmp/js"));
        assert!(s.data_dir_chosen);
        assert_eq!(s.log.file.as_deref(), Some(Path::new("/tmp/x.log")));
        assert!(Settings::default()
            .apply_cli(&cli(&["--cluster", "nats://0.0.0.0:6222"]))
            .is_err());
        let mut s = Settings::default();
        s.apply_cli(&cli(&[
            "--tls",
            "--tlscert",
            "c.pem",
            "--tlskey",
            "k.pem",
            "--tlsverify",
        ]))
        .unwrap();
        let tls = s.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("c.pem"));
        assert!(tls.verify);
        assert!(Settings::default().apply_cli(&cli(&["--tls"])).is_err());
    }

    #[test]
    fn nats_server_defaults_and_flag_auth() {
        let (s, _) = Settings::load(&cli(&[]), true).unwrap();
        assert_eq!((s.mqtt_port, s.ws_port, s.http_port), (None, None, None));
        let (s, _) = Settings::load(&cli(&["-m", "8222"]), true).unwrap();
        assert_eq!(s.http_port, Some(8222));
        let (s, _) = Settings::load(&cli(&[]), false).unwrap();
        assert_eq!((s.mqtt_port, s.ws_port), (Some(1883), Some(8080)));
        let (s, _) = Settings::load(&cli(&["--user", "a", "--pass", "b"]), false).unwrap();
        let block = s.file.unwrap();
        let auth = block.get("authorization").unwrap().as_map().unwrap();
        assert_eq!(auth.get("user").unwrap().as_str(), Some("a"));
        assert_eq!(auth.get("password").unwrap().as_str(), Some("b"));
        assert!(Settings::load(&cli(&["--user", "a"]), false).is_err());
        assert!(Settings::load(&cli(&["-t"]), false).is_err());
    }

    #[test]
    fn reload_refuses_what_cannot_change() {
        let a = Settings::default();
        let mut b = a.clone();
        b.log.debug = true;
        assert!(a.unchangeable(&b).is_empty());
        b.max_payload = 1;
        assert!(a.unchangeable(&b).is_empty());
        b.ping_interval = Duration::from_secs(1);
        assert!(a.unchangeable(&b).is_empty());
        b.port = 5000;
        b.data_dir = "elsewhere".into();
        assert_eq!(a.unchangeable(&b), vec!["port", "store_dir"]);
    }
}

//! Settings: built-in defaults, then the configuration file (nats-server format), then flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use junction_config::{Item, Map};

/// Junction: NATS services, MQTT devices and browsers on one message bus.
///
/// Runs a broker that unmodified NATS clients use exactly as they use nats-server. Flags override
/// the configuration file, which uses the nats-server format (an existing nats-server.conf works
/// for the keys Junction supports). Users, accounts, permissions and TLS are configured there,
/// with nats-server's blocks: `authorization`, `accounts`, `no_auth_user`, `operator` with
/// `resolver`, `tls`, `mqtt { tls }`, `websocket { tls }`, and Junction's `external_jwt` (see the
/// README). `kill -HUP` reloads TLS certificates.
#[derive(Debug, Parser)]
#[command(
    name = "junction",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Cli {
    /// Host to listen on for clients [default: 0.0.0.0].
    #[arg(short = 'a', long = "addr", visible_alias = "net", value_name = "HOST")]
    pub addr: Option<String>,
    /// NATS client port (-1 or 0: a random free port) [default: 4222].
    #[arg(
        short = 'p',
        long = "port",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub port: Option<i32>,
    /// HTTP monitoring port (0: off; -1: a random free port) [default: 8222].
    #[arg(
        short = 'm',
        long = "http-port",
        visible_alias = "http_port",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub http_port: Option<i32>,
    /// HTTPS monitoring port, with the top-level `tls` block's certificate (-1: a random free
    /// port) [default: off].
    #[arg(
        long = "https-port",
        visible_alias = "https_port",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub https_port: Option<i32>,
    /// MQTT port (0: off; -1: a random free port) [default: 1883].
    #[arg(long = "mqtt-port", value_name = "N", allow_negative_numbers = true)]
    pub mqtt_port: Option<i32>,
    /// WebSocket port for browsers, NATS and MQTT on one listener (0: off; -1: a random free
    /// port) [default: 8080].
    #[arg(long = "ws-port", value_name = "N", allow_negative_numbers = true)]
    pub ws_port: Option<i32>,
    /// Directory of the durable store: persistent MQTT sessions, their queued messages and
    /// retained messages survive a crash or restart [default: ./junction-data].
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep MQTT state in memory only: nothing survives a restart.
    #[arg(long = "in-memory")]
    pub in_memory: bool,
    /// Configuration file (nats-server format).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Server name [default: the server id].
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "server_name",
        value_name = "NAME"
    )]
    pub server_name: Option<String>,
    /// Log debug messages.
    #[arg(short = 'D', long = "debug")]
    pub debug: bool,
    /// Log protocol traces.
    #[arg(short = 'V', long = "trace")]
    pub trace: bool,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
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
    pub debug: bool,
    pub trace: bool,
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
            debug: false,
            trace: false,
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

/// Keys of nats-server's configuration that Junction does not serve yet: named in a warning
/// that says so, rather than called unknown.
const LATER_KEYS: &[&str] = &[
    "leafnodes",
    "jetstream",
    "cluster",
    "gateway",
    "logtime",
    "log_file",
    "pid_file",
    "store_dir",
    "lame_duck_duration",
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
                "data_dir" => {
                    self.data_dir =
                        PathBuf::from(item.as_str().ok_or_else(|| {
                            anyhow!("{}: 'data_dir' must be a directory", at(item))
                        })?)
                }
                "tls" => self.tls = Some(tls_files(item, "tls", &mut warnings)?),
                _ if crate::auth_config::KEYS.contains(&k.as_str()) => {}
                "debug" => self.debug = bool_of(item, key)?,
                "trace" => self.trace = bool_of(item, key)?,
                _ if item.used_as_variable => {}
                _ if LATER_KEYS.contains(&k.as_str()) => warnings.push(format!(
                    "{}: '{key}' is not supported yet and is ignored",
                    at(item)
                )),
                _ => warnings.push(format!("{}: unknown key '{key}' is ignored", at(item))),
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
                _ => warnings.push(format!("{}: unknown key 'mqtt.{key}' is ignored", at(item))),
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
                _ => warnings.push(format!(
                    "{}: 'websocket.{key}' is not supported and is ignored",
                    at(item)
                )),
            }
        }
        self.ws_tls = if no_tls { None } else { tls };
        Ok(())
    }

    /// Applies command-line flags, which win over the file.
    pub fn apply_cli(&mut self, cli: &Cli) {
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
        self.debug |= cli.debug;
        self.trace |= cli.trace;
        if let Some(p) = cli.mqtt_port {
            self.mqtt_port = http_port(p);
        }
        if let Some(p) = cli.ws_port {
            self.ws_port = http_port(p);
        }
        if let Some(d) = &cli.data_dir {
            self.data_dir = d.clone();
        }
        self.in_memory |= cli.in_memory;
    }

    /// Defaults, then the file, then the flags. Returns the settings and the warnings to log.
    pub fn load(cli: &Cli) -> Result<(Settings, Vec<String>)> {
        let mut settings = Settings::default();
        let mut warnings = Vec::new();
        if let Some(path) = &cli.config {
            let map = read_config(path)?;
            warnings = settings.apply_file(&map)?;
            settings.file = Some(map);
        }
        settings.apply_cli(cli);
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
            "handshake_first" | "first" => {
                files.handshake_first = match &item.value {
                    junction_config::Value::Bool(b) => *b,
                    junction_config::Value::String(s) => !s.eq_ignore_ascii_case("false"),
                    _ => bail!("{}: '{name}.{key}' must be true or false", at(item)),
                }
            }
            _ if item.used_as_variable => {}
            _ => warnings.push(format!(
                "{}: '{name}.{key}' is not supported and is ignored",
                at(item)
            )),
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

fn read_config(path: &Path) -> Result<Map> {
    junction_config::parse_file(path)
        .with_context(|| format!("configuration file '{}' is not valid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["junction"];
        all.extend_from_slice(args);
        Cli::parse_from(all)
    }

    #[test]
    fn file_then_flags() {
        let map = junction_config::parse_str(
            "listen: 127.0.0.1:4333\nhttp_port: 8333\nmax_payload: 2MB\nping_interval: \"30s\"\nping_max: 3\nserver_name: edge-1\nwrite_deadline: 2s\nmax_connections: 100\nfoo: bar\nmqtt { port: 1883 }\n",
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
        assert!(warnings[0].contains("unknown key 'foo'") && warnings[0].starts_with("9:"));
        assert_eq!(s.mqtt_port, Some(1883));
        s.apply_cli(&cli(&["-p", "5000", "-a", "::1", "-m", "0", "-D"]));
        assert_eq!(s.port, 5000);
        assert_eq!(s.host, "::1");
        assert_eq!(s.http_port, None);
        assert!(s.debug);
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
        s.apply_cli(&cli(&["--mqtt-port", "0"]));
        assert_eq!(s.mqtt_port, None);
        assert!(c.trace);
        assert_eq!(c.config.as_deref(), Some(Path::new("a.conf")));
    }
}

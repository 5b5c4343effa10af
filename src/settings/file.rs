//! The configuration file: nats-server's keys, what Junction does with each, and the errors
//! and warnings that name a key and its place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use junction_config::{Item, Map};

use super::Settings;

/// Top-level keys of nats-server's configuration that Junction does not implement yet: a warning
/// names each and says it is ignored (any other unknown key is an error, as in nats-server).
const LATER_KEYS: &[&str] = &[
    "jetstream",
    "gateway",
    "trace_verbose",
    "trace_headers",
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

/// `sync_interval: always` (every commit synced before it is acknowledged, Junction's default)
/// or a duration (acknowledged once written, synced at least that often, as nats-server does;
/// 0 is nats-server's default of 2 minutes). A number is seconds, with nats-server's warning:
/// unquoted, `2m` is the number 2,000,000.
fn sync_policy_of(
    item: &Item,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<junction_store::SyncPolicy> {
    if let Some(n) = item.as_i64() {
        warnings.push(format!(
            "{}: 'jetstream.{key}' is the number {n}, taken as seconds: write a duration such as \"2m\" (quoted)",
            at(item)
        ));
    }
    if item
        .as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("always"))
    {
        return Ok(junction_store::SyncPolicy::Always);
    }
    let d = duration_of(item, key)?;
    Ok(junction_store::SyncPolicy::Every(if d.is_zero() {
        Duration::from_secs(120)
    } else {
        d
    }))
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
pub(super) fn listen_port(p: i32) -> u16 {
    u16::try_from(p).unwrap_or(0)
}

/// `0` turns the monitor off; `-1` asks for a random free port.
pub(super) fn http_port(p: i32) -> Option<u16> {
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
                "jetstream" => self.apply_jetstream(item, &mut warnings)?,
                "leafnodes" | "leaf" => self.apply_leafnodes(item, &mut warnings)?,
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
    /// `jetstream: enabled | disabled | true | false` or `jetstream { store_dir, max_memory_store,
    /// max_file_store, domain, sync_interval }`.
    fn apply_jetstream(&mut self, item: &Item, warnings: &mut Vec<String>) -> Result<()> {
        let mut js = self.jetstream.clone().unwrap_or_default();
        let enabled = match &item.value {
            junction_config::Value::Bool(b) => *b,
            junction_config::Value::String(s) => {
                !matches!(s.to_ascii_lowercase().as_str(), "disabled" | "false")
            }
            _ => true,
        };
        if let Some(m) = item.as_map() {
            let mut on = true;
            for (k, v) in m.iter() {
                match k.to_ascii_lowercase().as_str() {
                    "store_dir" | "storedir" => {
                        if !self.data_dir_chosen {
                            self.data_dir = PathBuf::from(v.as_str().ok_or_else(|| {
                                anyhow!("{}: 'jetstream.store_dir' must be a directory", at(v))
                            })?);
                            self.data_dir_chosen = true;
                        }
                    }
                    "max_memory_store" | "max_mem_store" | "max_mem" => {
                        js.max_memory = size_of(v, k)? as i64
                    }
                    "max_file_store" | "max_file" => js.max_store = size_of(v, k)? as i64,
                    "domain" => {
                        js.domain = Some(
                            v.as_str()
                                .ok_or_else(|| anyhow!("{}: 'domain' must be a string", at(v)))?
                                .to_string(),
                        )
                    }
                    "enabled" | "enable" => on = bool_of(v, k)?,
                    "sync_interval" | "sync" => self.store_sync = sync_policy_of(v, k, warnings)?,
                    "max_buffered_msgs"
                    | "max_buffered_size"
                    | "unique_tag"
                    | "strict"
                    | "max_outstanding_catchup"
                    | "cipher"
                    | "key"
                    | "prev_key"
                    | "extension_hint"
                    | "compress_ok"
                    | "request_queue_limit"
                    | "tpm"
                    | "limits"
                    | "max_ha_assets" => warnings.push(format!(
                        "{}: 'jetstream.{k}' is not supported and is ignored",
                        at(v)
                    )),
                    _ => bail!("{}: unknown field \"{k}\"", at(v)),
                }
            }
            self.jetstream = on.then_some(js);
            return Ok(());
        }
        self.jetstream = enabled.then_some(js);
        Ok(())
    }

    /// `leafnodes { remotes: [ { url(s), account, credentials, nkey, user, password, token,
    /// deny_imports, deny_exports } ], reconnect }`. Accepting leaf connections (`port`,
    /// `listen`) is not implemented yet: a warning says so.
    fn apply_leafnodes(&mut self, block: &Item, warnings: &mut Vec<String>) -> Result<()> {
        let map = block
            .as_map()
            .ok_or_else(|| anyhow!("{}: 'leafnodes' must be a block", at(block)))?;
        for (key, item) in map.iter() {
            match key.to_ascii_lowercase().as_str() {
                "remotes" => {
                    let list = item.as_array().ok_or_else(|| {
                        anyhow!("{}: 'leafnodes.remotes' must be a list", at(item))
                    })?;
                    for r in list {
                        self.leaf_remotes.push(remote_of(r, warnings)?);
                    }
                }
                "reconnect" | "reconnect_delay" => {
                    self.leaf_reconnect = positive_duration_of(item, key)?
                }
                "port" => {
                    let p = port_of(item, key)?;
                    self.leaf_accept.get_or_insert_with(Default::default).port =
                        if p < 0 { 0 } else { p as u16 };
                }
                "host" | "net" => {
                    self.leaf_accept.get_or_insert_with(Default::default).host = item
                        .as_str()
                        .ok_or_else(|| anyhow!("{}: 'leafnodes.{key}' must be a host", at(item)))?
                        .to_string()
                }
                "listen" => {
                    let a = self.leaf_accept.get_or_insert_with(Default::default);
                    match (item.as_str(), item.as_i64()) {
                        (Some(s), _) => {
                            let (h, p) = s.rsplit_once(':').unwrap_or(("", s));
                            a.port = p.parse().map_err(|_| {
                                anyhow!("{}: 'leafnodes.listen' must be HOST:PORT", at(item))
                            })?;
                            if !h.is_empty() {
                                a.host = h.to_string();
                            }
                        }
                        (None, Some(p)) => a.port = u16::try_from(p).unwrap_or(0),
                        _ => bail!("{}: 'leafnodes.listen' must be HOST:PORT", at(item)),
                    }
                }
                "authorization" => {
                    leaf_authorization(item, self.leaf_accept.get_or_insert_with(Default::default))?
                }
                "tls" => {
                    self.leaf_accept.get_or_insert_with(Default::default).tls =
                        Some(tls_files(item, "leafnodes.tls", warnings)?)
                }
                "advertise"
                | "no_advertise"
                | "compression"
                | "min_version"
                | "isolate_leafnode_interest" => warnings.push(format!(
                    "{}: 'leafnodes.{key}' is not supported yet and is ignored",
                    at(item)
                )),
                _ => bail!("{}: unknown field \"{key}\"", at(item)),
            }
        }
        Ok(())
    }

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
            "cipher_suites" => files.cipher_suites = strings_of(item, key, "a suite name")?,
            "curve_preferences" => files.curve_preferences = strings_of(item, key, "a curve")?,
            "pinned_certs" => files.pinned_certs = strings_of(item, key, "a key's SHA-256")?,
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

/// A string or a list of strings (a single string is a list of one); `what` names one in the
/// error ("a subject").
/// `leafnodes { authorization { user, password, account, token, users: [...] } }`.
fn leaf_authorization(item: &Item, a: &mut junction_protocols::leaf::Accept) -> Result<()> {
    use junction_protocols::leaf::LeafUser;
    let map = item
        .as_map()
        .ok_or_else(|| anyhow!("{}: 'leafnodes.authorization' must be a block", at(item)))?;
    let text = |v: &Item, k: &str| -> Result<String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: '{k}' must be a string", at(v)))
    };
    let mut single = LeafUser::default();
    for (k, v) in map.iter() {
        match k.to_ascii_lowercase().as_str() {
            "user" | "username" => single.user = text(v, k)?,
            "password" | "pass" => single.password = text(v, k)?,
            "account" => single.account = Some(text(v, k)?),
            "token" => a.token = Some(text(v, k)?),
            "timeout" => {}
            "users" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| anyhow!("{}: 'users' must be a list", at(v)))?;
                for u in list {
                    let m = u
                        .as_map()
                        .ok_or_else(|| anyhow!("{}: a user must be a block", at(u)))?;
                    let mut lu = LeafUser::default();
                    for (uk, uv) in m.iter() {
                        match uk.to_ascii_lowercase().as_str() {
                            "user" | "username" => lu.user = text(uv, uk)?,
                            "password" | "pass" => lu.password = text(uv, uk)?,
                            "account" => lu.account = Some(text(uv, uk)?),
                            _ => bail!("{}: unknown field \"{uk}\"", at(uv)),
                        }
                    }
                    a.users.push(lu);
                }
            }
            _ => bail!("{}: unknown field \"{k}\"", at(v)),
        }
    }
    if !single.user.is_empty() {
        a.users.push(single);
    }
    Ok(())
}

/// A remote's `tls { ca_file, cert_file, key_file }`.
fn remote_tls(item: &Item) -> Result<junction_protocols::leaf::RemoteTls> {
    let map = item
        .as_map()
        .ok_or_else(|| anyhow!("{}: a remote's 'tls' must be a block", at(item)))?;
    let mut t = junction_protocols::leaf::RemoteTls::default();
    for (k, v) in map.iter() {
        let path = || -> Result<PathBuf> {
            let p = PathBuf::from(
                v.as_str()
                    .ok_or_else(|| anyhow!("{}: '{k}' must be a file name", at(v)))?,
            );
            if std::fs::metadata(&p).is_err() {
                bail!("{}: '{k}': {} cannot be read", at(v), p.display());
            }
            Ok(p)
        };
        match k.to_ascii_lowercase().as_str() {
            "ca_file" => t.ca_file = Some(path()?),
            "cert_file" => t.cert_file = Some(path()?),
            "key_file" => t.key_file = Some(path()?),
            _ => bail!(
                "{}: remote tls option '{k}' is not supported (ca_file, cert_file, key_file)",
                at(v)
            ),
        }
    }
    if t.cert_file.is_some() != t.key_file.is_some() {
        bail!(
            "{}: a remote's tls needs both cert_file and key_file, or neither",
            at(item)
        );
    }
    if t.ca_file.is_none() {
        bail!("{}: a remote's tls needs ca_file", at(item));
    }
    Ok(t)
}

/// One entry of `leafnodes { remotes }`.
fn remote_of(item: &Item, warnings: &mut Vec<String>) -> Result<junction_protocols::leaf::Remote> {
    let map = item
        .as_map()
        .ok_or_else(|| anyhow!("{}: a leaf node remote must be a block", at(item)))?;
    let mut r = junction_protocols::leaf::Remote {
        account: junction_core::DEFAULT_ACCOUNT.to_string(),
        ..Default::default()
    };
    let text = |v: &Item, k: &str| -> Result<String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: '{k}' must be a string", at(v)))
    };
    for (k, v) in map.iter() {
        match k.to_ascii_lowercase().as_str() {
            "url" | "urls" => r.urls.extend(strings_of(v, k, "a URL")?),
            "account" | "local" => r.account = text(v, k)?,
            "credentials" | "creds" => r.credentials = Some(PathBuf::from(text(v, k)?)),
            "nkey" | "seed" => r.nkey_seed = Some(text(v, k)?),
            "user" | "username" => r.user = Some(text(v, k)?),
            "password" | "pass" => r.pass = Some(text(v, k)?),
            "token" | "auth_token" => r.token = Some(text(v, k)?),
            "deny_imports" | "deny_import" => r.deny_imports = strings_of(v, k, "a subject")?,
            "deny_exports" | "deny_export" => r.deny_exports = strings_of(v, k, "a subject")?,
            "tls" => r.tls = Some(remote_tls(v)?),
            "ws_compression"
            | "ws_no_masking"
            | "compression"
            | "hub"
            | "first_info_timeout"
            | "disabled"
            | "request_isolation"
            | "signature_cb"
            | "jetstream_cluster_migrate"
            | "local_is_hub" => warnings.push(format!(
                "{}: leaf node remote option '{k}' is not supported yet and is ignored",
                at(v)
            )),
            _ => bail!("{}: unknown field \"{k}\"", at(v)),
        }
    }
    if r.urls.is_empty() {
        bail!("{}: a leaf node remote needs 'url' or 'urls'", at(item));
    }
    for u in &r.urls {
        let scheme = u.split_once("://").map_or("nats", |(s, _)| s);
        if !matches!(scheme, "nats" | "nats-leaf" | "leafnode" | "tls") {
            bail!(
                "{}: leaf node remote URL {u:?}: only nats:// and tls:// are supported (no WebSocket remotes yet)",
                at(item)
            );
        }
        if scheme == "tls" && r.tls.as_ref().is_none_or(|t| t.ca_file.is_none()) {
            bail!(
                "{}: leaf node remote URL {u:?} needs tls {{ ca_file }} (the authority that signed the hub's certificate)",
                at(item)
            );
        }
    }
    if let Some(c) = &r.credentials {
        if std::fs::metadata(c).is_err() {
            bail!(
                "{}: leaf node remote credentials file {} cannot be read",
                at(item),
                c.display()
            );
        }
    }
    Ok(r)
}

pub(crate) fn strings_of(item: &Item, key: &str, what: &str) -> Result<Vec<String>> {
    let one = |i: &Item| {
        i.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: '{key}' must be {what} or a list of them", at(i)))
    };
    match item.as_array() {
        Some(list) => list.iter().map(one).collect(),
        None => Ok(vec![one(item)?]),
    }
}

pub(super) fn read_config(path: &Path) -> Result<Map> {
    junction_config::parse_file(path)
        .with_context(|| format!("configuration file '{}' is not valid", path.display()))
}

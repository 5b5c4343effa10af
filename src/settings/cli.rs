//! The command line: nats-server's flags with their meaning, and Junction's own.

use std::path::PathBuf;

use clap::Parser;

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
/// Past one machine Junction attaches to a NATS cluster as a leaf node: `leafnodes { remotes: [
/// { urls: [...], account } ] }` in the configuration file, and `leafnodes { port }` to accept
/// leaf nodes itself (`--cluster`/`--routes` are refused: Junction forms no routes).
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
    /// Enable JetStream: streams, consumers, key-value and object stores (`-js` works too).
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

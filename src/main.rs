//! The `junction` binary: command line, configuration and wiring only.

mod auth_config;
mod logging;
mod process;
mod settings;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use junction_core::Bus;
use junction_protocols::{mqtt, nats, ws};
use settings::{Cli, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for connections to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The nats-server version whose client protocol Junction speaks: INFO and `/varz` carry it,
/// because clients and tools enable features by it. Junction's own version is in the log
/// banner, `--version` and `/varz` (`junction_version`).
const NATS_VERSION: &str = "2.10.0";

/// A 56-character server id in the alphabet nats-server uses (base32, starting with `N`).
fn server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut id = String::from("N");
    let state = std::collections::hash_map::RandomState::new();
    let mut word = 0u64;
    for i in 0..55 {
        if i % 12 == 0 {
            let mut h = state.build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            word = h.finish();
        }
        id.push(ALPHABET[(word & 31) as usize] as char);
        word >>= 5;
    }
    id
}

/// The signals a running server acts on, listened for from the moment they are installed, so a
/// signal that comes right after "Server is ready" is not lost.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    usr1: tokio::signal::unix::Signal,
    #[cfg(unix)]
    usr2: tokio::signal::unix::Signal,
}

/// What a signal asks for.
enum Asked {
    Stop(&'static str),
    Reload,
    Reopen,
    LameDuck,
}

impl Signals {
    fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let on = |k: SignalKind, name: &str| {
                signal(k).with_context(|| format!("installing the {name} handler"))
            };
            Ok(Self {
                term: on(SignalKind::terminate(), "SIGTERM")?,
                int: on(SignalKind::interrupt(), "SIGINT")?,
                hup: on(SignalKind::hangup(), "SIGHUP")?,
                usr1: on(SignalKind::user_defined1(), "SIGUSR1")?,
                usr2: on(SignalKind::user_defined2(), "SIGUSR2")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) -> Asked {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => Asked::Stop("terminated"),
            _ = self.int.recv() => Asked::Stop("interrupt"),
            _ = self.hup.recv() => Asked::Reload,
            _ = self.usr1.recv() => Asked::Reopen,
            _ = self.usr2.recv() => Asked::LameDuck,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Asked::Stop("interrupt")
        }
    }
}

/// What a configuration reload (SIGHUP) needs.
struct Reloader {
    bus: Arc<Bus>,
    system_account: Option<String>,
    mqtt: Option<Arc<mqtt::MqttServer>>,
    ws: Option<Arc<ws::WsGateway>>,
    live: Arc<std::sync::RwLock<junction_web::Live>>,
    nats: Arc<nats::NatsServer>,
    cli: Cli,
    settings: Settings,
    wiring: String,
    auth: Arc<auth_config::Swappable>,
    logger: logging::Logger,
    /// TLS listeners whose certificates a reload reads again.
    tls: Vec<(&'static str, junction_protocols::tls::Tls)>,
}

impl Reloader {
    /// Reads the configuration file again and applies it, or changes nothing and says why.
    fn reload(&mut self) -> Result<()> {
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
            // Imports and exports: the old ones go, the new ones are wired as at startup.
            let removed = junction_core::import::remove_all(&self.bus);
            for w in auth.wire(&self.bus)? {
                tracing::warn!("{w}");
            }
            tracing::info!(
                "Reloaded: accounts (imports and exports; {removed} import subscriptions replaced)"
            );
            self.wiring = auth.wiring();
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
        self.auth.swap(auth.authenticator.clone());
        tracing::info!("Reloaded: authorization");
        // Every open connection is checked against the new users and permissions, off the
        // reactor (a check may be a bcrypt comparison).
        let (bus, checker) = (self.bus.clone(), self.auth.clone());
        tokio::task::spawn_blocking(move || {
            let (checked, closed) = junction_protocols::recheck(&bus, &*checker);
            tracing::info!(
                "Reload checked {checked} connections again: closed {closed} no longer authorized as they were"
            );
        });
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

/// The MQTT frontend's settings.
fn mqtt_options(
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

/// The parts of the server `/metrics` and the dashboard report beyond the bus's counters.
struct MetricSources {
    mqtt: Option<Arc<mqtt::MqttServer>>,
    store: Option<Arc<junction_store::Store>>,
    store_file: Option<std::path::PathBuf>,
    /// The WebSocket listener's scheme and port (the dashboard's tester connects there).
    websocket: Option<(String, u16)>,
}

/// [`MetricSources`] once the listeners exist (the monitor starts before them).
struct LateSources(Arc<std::sync::OnceLock<MetricSources>>);

impl junction_web::Extra for LateSources {
    fn prometheus(&self) -> String {
        self.0.get().map(MetricSources::render).unwrap_or_default()
    }

    fn dashboard(&self) -> serde_json::Value {
        let Some(s) = self.0.get() else {
            return serde_json::json!({});
        };
        let mut v = serde_json::json!({});
        if let Some(fe) = &s.mqtt {
            let (held, connected, queued) = fe.session_counts();
            v["mqtt_sessions"] =
                serde_json::json!({ "held": held, "connected": connected, "queued": queued });
        }
        if let Some((scheme, port)) = &s.websocket {
            v["websocket"] = serde_json::json!({ "scheme": scheme, "port": port });
        }
        v
    }
}

impl MetricSources {
    /// Prometheus text: MQTT sessions and queued messages, the store's size, commits and
    /// commit-duration histogram.
    fn render(&self) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        if let Some(fe) = &self.mqtt {
            let (sessions, connected, queued) = fe.session_counts();
            let _ = writeln!(
                out,
                "# HELP junction_mqtt_sessions MQTT sessions held, by whether a client is connected.
                 # TYPE junction_mqtt_sessions gauge
                 junction_mqtt_sessions{{state=\"connected\"}} {connected}
                 junction_mqtt_sessions{{state=\"detached\"}} {}
                 # HELP junction_mqtt_queued_messages QoS 1/2 messages queued in MQTT sessions.
                 # TYPE junction_mqtt_queued_messages gauge
                 junction_mqtt_queued_messages {queued}",
                sessions - connected
            );
        }
        if let Some(store) = &self.store {
            let st = store.stats();
            if let Some(size) = self
                .store_file
                .as_ref()
                .and_then(|f| std::fs::metadata(f).ok())
            {
                let _ = writeln!(
                    out,
                    "# HELP junction_store_size_bytes Size of the durable store's file.
                     # TYPE junction_store_size_bytes gauge
junction_store_size_bytes {}",
                    size.len()
                );
            }
            let _ = writeln!(
                out,
                "# HELP junction_store_operations_total Operations committed to the durable store.
                 # TYPE junction_store_operations_total counter
junction_store_operations_total {}",
                st.ops.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "# HELP junction_store_commit_seconds Time each group commit of the durable store took.
                 # TYPE junction_store_commit_seconds histogram"
            );
            let mut cumulative = 0;
            for (bound, bucket) in junction_store::COMMIT_BUCKETS_MICROS
                .iter()
                .zip(&st.commit_buckets)
            {
                cumulative += bucket.load(Relaxed);
                let _ = writeln!(
                    out,
                    "junction_store_commit_seconds_bucket{{le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let commits = st.commits.load(Relaxed);
            let _ = writeln!(
                out,
                "junction_store_commit_seconds_bucket{{le=\"+Inf\"}} {commits}
                 junction_store_commit_seconds_sum {}
junction_store_commit_seconds_count {commits}",
                st.commit_micros.load(Relaxed) as f64 / 1e6
            );
        }
        out
    }
}

/// Binds a listener. The host `0.0.0.0` means every address, IPv6 as well as IPv4, as it does
/// for nats-server: one dual-stack socket where the system has IPv6, else IPv4 only.
async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    if host == "0.0.0.0" {
        match bind_dual_stack(port) {
            Ok(l) => return Ok(l),
            Err(e) => tracing::debug!("no IPv6 listener ({e}); listening on IPv4 only"),
        }
    }
    TcpListener::bind((host, port)).await
}

fn bind_dual_stack(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v6()?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let off: libc::c_int = 0;
        // SAFETY: setsockopt on a socket this function owns, with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                &off as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from((
        std::net::Ipv6Addr::UNSPECIFIED,
        port,
    )))?;
    socket.listen(1024)
}

/// How a bound listener is shown: `host:port` as configured (`0.0.0.0:4222` for every address,
/// as nats-server logs it), with the port it got.
fn shown(host: &str, addr: std::net::SocketAddr) -> String {
    if host == "0.0.0.0" {
        format!("0.0.0.0:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The durable store's directory: the one configured, else `./junction-data` when the working
/// directory lets us make it, else the user's state directory, else the temporary directory.
fn data_dir(settings: &Settings) -> std::path::PathBuf {
    if settings.data_dir_chosen || settings.nats_server_mode {
        return settings.data_dir.clone();
    }
    let mut candidates = vec![settings.data_dir.clone()];
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        candidates.push(std::path::PathBuf::from(state).join("junction"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        candidates.push(std::path::PathBuf::from(home).join(".local/state/junction"));
    }
    candidates.push(std::env::temp_dir().join(format!("junction-{}", unsafe_uid())));
    for dir in &candidates {
        if std::fs::create_dir_all(dir).is_ok() && writable(dir) {
            if dir != &settings.data_dir {
                tracing::warn!(
                    "cannot create the data directory {} here; using {} (set --data-dir to choose)",
                    settings.data_dir.display(),
                    dir.display()
                );
            }
            return dir.clone();
        }
    }
    settings.data_dir.clone()
}

fn writable(dir: &std::path::Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn unsafe_uid() -> u32 {
    #[cfg(unix)]
    {
        // SAFETY: getuid cannot fail and touches no memory.
        unsafe { libc::getuid() }
    }
    #[cfg(not(unix))]
    0
}

fn main() -> std::process::ExitCode {
    let exe = process::exe_name();
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{exe}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start() -> Result<()> {
    let cli = Cli::parse_from(settings::normalize_args(std::env::args()));
    let exe = process::exe_name();
    if cli.version {
        if exe == "nats-server" {
            println!(
                "nats-server: v{NATS_VERSION} (junction {})",
                env!("CARGO_PKG_VERSION")
            );
        } else {
            println!(
                "junction version {} (nats-server protocol v{NATS_VERSION})",
                env!("CARGO_PKG_VERSION")
            );
        }
        return Ok(());
    }
    if let Some(sig) = &cli.signal {
        return process::send_signal(sig, cli.pid_file.as_deref());
    }
    let (settings, warnings) = Settings::load(&cli, exe == "nats-server")?;
    if cli.test_config {
        for w in &warnings {
            eprintln!("{exe}: {w}");
        }
        // Everything a start would check before listening: the auth blocks and the TLS files.
        if let Some(map) = &settings.file {
            auth_config::load(map)?;
        }
        for files in [&settings.tls, &settings.mqtt_tls, &settings.ws_tls]
            .into_iter()
            .flatten()
        {
            junction_protocols::tls::Tls::new(files).context("TLS configuration")?;
        }
        let path = cli.config.as_deref().unwrap_or(std::path::Path::new(""));
        eprintln!("{exe}: configuration file {} is valid", path.display());
        return Ok(());
    }
    let logger = logging::Logger::install(&settings.log)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(cli, settings, logger))
}

async fn run(cli: Cli, settings: Settings, logger: logging::Logger) -> Result<()> {
    let server_id = server_id();
    let server_name = settings.server_name.clone().unwrap_or_else(|| {
        // nats-server names itself by its id; under its own name Junction says what it is.
        if settings.nats_server_mode {
            server_id.clone()
        } else {
            format!("junction-{}", &server_id[..8])
        }
    });
    tracing::info!(
        "Starting {}",
        if settings.nats_server_mode {
            "nats-server (junction)"
        } else {
            "junction"
        }
    );
    tracing::info!(
        "  Version:  {NATS_VERSION} (junction {})",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!("  Name:     {server_name}");
    tracing::info!("  ID:       {server_id}");
    if let Some(path) = &cli.config {
        let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        tracing::info!("Using configuration file: {}", shown.display());
    }
    let _pid_file = match &settings.pid_file {
        Some(path) => Some(process::OwnedFile::write(
            path.clone(),
            &std::process::id().to_string(),
        )?),
        None => None,
    };

    // The store first: a locked or damaged one stops startup before anything listens.
    let mqtt_on = settings.mqtt_port.is_some() || settings.ws_port.is_some();
    let engine = if mqtt_on && !settings.in_memory {
        Some(junction_store::open(&data_dir(&settings))?)
    } else {
        None
    };

    let auth = match &settings.file {
        Some(map) => auth_config::load(map)?,
        None => auth_config::Auth::default(),
    };
    let authenticator = Arc::new(auth_config::Swappable::new(auth.authenticator.clone()));
    let nats_tls = match &settings.tls {
        Some(files) => Some(junction_protocols::tls::Tls::new(files).context("TLS configuration")?),
        None => None,
    };
    let mqtt_tls = match &settings.mqtt_tls {
        Some(files) => {
            Some(junction_protocols::tls::Tls::new(files).context("MQTT TLS configuration")?)
        }
        None => None,
    };

    let bus = Arc::new(Bus::new());
    for w in auth.wire(&bus)? {
        tracing::warn!("{w}");
    }
    // `listening` stops the accept loops (lame duck mode and shutdown), `shutdown` the rest.
    let listening = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut ports = process::Ports::default();

    let listener = bind(&settings.host, settings.port)
        .await
        .with_context(|| format!("listening on {}:{}", settings.host, settings.port))?;
    let nats_addr = listener.local_addr()?;
    tracing::info!(
        "Listening for client connections on {}",
        shown(&settings.host, nats_addr)
    );
    ports.nats.push(process::url(
        if nats_tls.is_some() { "tls" } else { "nats" },
        nats_addr,
    ));

    let opts = nats::Options {
        server_id: server_id.clone(),
        server_name: server_name.clone(),
        version: NATS_VERSION.to_string(),
        host: settings.host.clone(),
        port: nats_addr.port(),
        limits: nats::Limits {
            max_control_line: settings.max_control_line,
            max_payload: settings.max_payload,
        },
        max_pending: settings.max_pending,
        max_connections: settings.max_connections,
        ping_interval: settings.ping_interval,
        ping_max: settings.ping_max,
        write_deadline: settings.write_deadline,
        // nats-server: 2 s, or the TLS timeout plus one second with TLS.
        auth_timeout: auth.timeout.unwrap_or_else(|| match &nats_tls {
            Some(t) => t.timeout + Duration::from_secs(1),
            None => Duration::from_secs(2),
        }),
    };
    let https_tls = nats_tls.clone();
    // TLS listeners whose certificates a reload reads again.
    let mut reloadable: Vec<(&str, junction_protocols::tls::Tls)> = Vec::new();
    reloadable.extend(nats_tls.iter().map(|t| ("client", t.clone())));
    reloadable.extend(mqtt_tls.iter().map(|t| ("mqtt", t.clone())));
    let mut frontend = nats::NatsServer::new(bus.clone(), authenticator.clone(), opts);
    if let Some(tls) = nats_tls {
        frontend = frontend.with_tls(tls);
    }
    let frontend = Arc::new(frontend);

    let mut http_tasks = Vec::new();
    let mut tasks = Vec::new();
    // What /metrics reports of the MQTT sessions and the store, made further down.
    let metric_sources: Arc<std::sync::OnceLock<MetricSources>> = Default::default();
    let extra_metrics =
        junction_web::ExtraMetrics(Some(Arc::new(LateSources(metric_sources.clone()))));
    let live = Arc::new(std::sync::RwLock::new(junction_web::Live {
        max_payload: settings.max_payload,
        max_pending: settings.max_pending,
        write_deadline: settings.write_deadline,
        ping_interval: settings.ping_interval,
        max_control_line: settings.max_control_line,
        max_connections: settings.max_connections,
        ping_max: settings.ping_max,
    }));
    let monitor_info = |http_port: u16| junction_web::ServerInfo {
        server_id: server_id.clone(),
        server_name: server_name.clone(),
        version: NATS_VERSION.to_string(),
        junction_version: env!("CARGO_PKG_VERSION").to_string(),
        host: settings.host.clone(),
        port: nats_addr.port(),
        http_port,
        max_payload: settings.max_payload,
        max_connections: settings.max_connections,
        max_control_line: settings.max_control_line,
        max_pending: settings.max_pending,
        ping_interval: settings.ping_interval,
        ping_max: settings.ping_max,
        write_deadline: settings.write_deadline,
        auth_required: auth.authenticator.auth_required(),
        tls_required: settings.tls.is_some(),
        tls_verify: settings.tls.as_ref().is_some_and(|t| t.verify),
        auth_timeout: auth.timeout.unwrap_or(Duration::from_secs(2)),
        tls_timeout: settings
            .tls
            .as_ref()
            .and_then(|t| t.timeout)
            .unwrap_or(Duration::from_secs(2)),
        http_host: settings.host.clone(),
        https_port: settings.https_port.unwrap_or(0),
        system_account: auth.system_account.clone().unwrap_or_default(),
        config_load_time: std::time::SystemTime::now(),
        extra_metrics: extra_metrics.clone(),
        live: live.clone(),
        mqtt: match settings.mqtt_port {
            Some(port) => serde_json::json!({
                "host": settings.host,
                "port": port,
                "tls_timeout": settings.mqtt_tls.as_ref().and_then(|t| t.timeout)
                    .unwrap_or(Duration::from_secs(2)).as_secs_f64(),
                "max_packet_size": settings.mqtt_max_packet_size,
                "max_queued_messages": settings.mqtt_max_queued,
            }),
            None => serde_json::json!({}),
        },
        websocket: match settings.ws_port {
            Some(port) => serde_json::json!({
                "host": settings.ws_host.as_deref().unwrap_or(&settings.host),
                "port": port,
                "no_tls": settings.ws_tls.is_none(),
                "handshake_timeout": settings.ws.handshake_timeout.as_nanos() as u64,
                "compression": settings.ws.compression,
                "same_origin": settings.ws.same_origin,
            }),
            None => serde_json::json!({}),
        },
    };
    // The system account answers `nats server` requests and sends advisories.
    if let Some(task) = junction_web::start_system(
        bus.clone(),
        monitor_info(settings.http_port.unwrap_or(0)),
        shutdown.clone(),
    ) {
        tasks.push(task);
    }
    if let Some(port) = settings.http_port {
        let http = bind(&settings.host, port)
            .await
            .with_context(|| format!("listening for HTTP on {}:{port}", settings.host))?;
        let http_addr = http.local_addr()?;
        tracing::info!(
            "Starting http monitor on {}",
            shown(&settings.host, http_addr)
        );
        ports.monitoring.push(process::url("http", http_addr));
        http_tasks.push(tokio::spawn(junction_web::serve(
            http,
            bus.clone(),
            monitor_info(http_addr.port()),
            shutdown.clone(),
        )));
    }
    if let (Some(port), Some(tls)) = (settings.https_port, https_tls) {
        let https = bind(&settings.host, port)
            .await
            .with_context(|| format!("listening for HTTPS on {}:{port}", settings.host))?;
        let https_addr = https.local_addr()?;
        tracing::info!(
            "Starting https monitor on https://{}",
            shown(&settings.host, https_addr)
        );
        ports.monitoring.push(process::url("https", https_addr));
        http_tasks.push(tokio::spawn(junction_web::serve(
            junction_web::TlsListener::new(
                https,
                Box::new({
                    let tls = tls.clone();
                    move || tls.acceptor()
                }),
                tls.timeout,
            ),
            bus.clone(),
            monitor_info(https_addr.port()),
            shutdown.clone(),
        )));
    }

    // The MQTT frontend serves the MQTT port and MQTT over WebSocket.
    let mqtt_fe = mqtt_on.then(|| {
        let fe = mqtt::MqttServer::new(
            bus.clone(),
            authenticator.clone(),
            mqtt_options(&settings, &auth, mqtt_tls.as_ref()),
        );
        Arc::new(match mqtt_tls {
            Some(tls) => fe.with_tls(tls),
            None => fe,
        })
    });
    // Durable MQTT state: restored before any client connects.
    let mut store = None;
    if let (Some(fe), Some(engine)) = (&mqtt_fe, engine) {
        let started = std::time::Instant::now();
        let restored = fe
            .restore(&engine)
            .with_context(|| format!("restoring from {}", engine.path().display()))?;
        tracing::info!(
            sessions = restored.sessions,
            messages = restored.messages,
            retained = restored.retained,
            skipped = restored.skipped,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Using the durable store {}",
            engine.path().display()
        );
        if restored.skipped > 0 {
            tracing::warn!(
                skipped = restored.skipped,
                "some records of the durable store could not be restored (see above); the broker runs without them"
            );
        }
        junction_core::Stats::add(&bus.stats().store_records_skipped, restored.skipped as u64);
        let s = junction_store::Store::start(Box::new(engine));
        fe.use_store(s.clone());
        store = Some(s);
    } else if mqtt_fe.is_some() {
        tracing::info!("MQTT state is kept in memory only (--in-memory)");
    }
    let mut accepting = Vec::new();
    let mut ws_gateway: Option<Arc<ws::WsGateway>> = None;
    if let (Some(port), Some(fe)) = (settings.mqtt_port, &mqtt_fe) {
        let mqtt_listener = bind(&settings.host, port)
            .await
            .with_context(|| format!("listening for MQTT on {}:{port}", settings.host))?;
        let addr = mqtt_listener.local_addr()?;
        tracing::info!(
            "Listening for MQTT clients on {}",
            shown(&settings.host, addr)
        );
        ports.mqtt.push(process::url(
            if fe.tls.is_some() { "mqtts" } else { "mqtt" },
            addr,
        ));
        accepting.push(tokio::spawn(mqtt::broker::serve(
            mqtt_listener,
            fe.clone(),
            listening.clone(),
            tracker.clone(),
        )));
    }
    if let Some(port) = settings.ws_port {
        let host = settings
            .ws_host
            .as_deref()
            .unwrap_or(settings.host.as_str());
        let tls = match &settings.ws_tls {
            Some(files) => Some(
                junction_protocols::tls::Tls::new(files).context("websocket TLS configuration")?,
            ),
            None => None,
        };
        reloadable.extend(tls.iter().map(|t| ("websocket", t.clone())));
        let ws_listener = bind(host, port)
            .await
            .with_context(|| format!("listening for WebSocket on {host}:{port}"))?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let addr = ws_listener.local_addr()?;
        tracing::info!(
            "Listening for websocket clients on {scheme}://{}",
            shown(host, addr)
        );
        ports.websocket.push(process::url(scheme, addr));
        let ws_fe = Arc::new(ws::WsGateway {
            nats: frontend.clone(),
            mqtt: mqtt_fe.clone(),
            tls,
            opts: junction_protocols::Current::new(settings.ws.clone()),
        });
        ws_gateway = Some(ws_fe.clone());
        accepting.push(tokio::spawn(ws::serve(
            ws_listener,
            ws_fe,
            listening.clone(),
            tracker.clone(),
        )));
    }
    if let Some(fe) = &mqtt_fe {
        tasks.push(tokio::spawn(mqtt::broker::sweep(
            fe.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(nats::sweep(
        frontend.clone(),
        shutdown.clone(),
    )));
    let nats_frontend = frontend.clone();
    accepting.push(tokio::spawn(nats::serve(
        listener,
        frontend,
        listening.clone(),
        tracker.clone(),
    )));
    let _ = metric_sources.set(MetricSources {
        mqtt: mqtt_fe.clone(),
        store: store.clone(),
        store_file: store
            .as_ref()
            .map(|_| data_dir(&settings).join(junction_store::FILE_NAME)),
        websocket: ports.websocket.first().and_then(|u| {
            let (scheme, rest) = u.split_once("://")?;
            Some((scheme.to_string(), rest.rsplit(':').next()?.parse().ok()?))
        }),
    });
    let _ports_file = match &settings.ports_file_dir {
        Some(dir) => Some(process::OwnedFile::write(
            process::ports_file_path(dir),
            &serde_json::to_string(&ports)?,
        )?),
        None => None,
    };
    let mut signals = Signals::install()?;
    let mut reloader = Reloader {
        bus: bus.clone(),
        system_account: auth.system_account.clone(),
        mqtt: mqtt_fe.clone(),
        ws: ws_gateway,
        live: live.clone(),
        nats: nats_frontend.clone(),
        cli,
        wiring: auth.wiring(),
        settings,
        auth: authenticator,
        logger,
        tls: reloadable,
    };
    tracing::info!("Server is ready");

    loop {
        match signals.next().await {
            Asked::Stop(why) => {
                tracing::info!("Trapped \"{why}\" signal");
                break;
            }
            Asked::Reload => {
                tracing::info!("Trapped \"hangup\" signal");
                if let Err(e) = reloader.reload() {
                    tracing::error!("Failed to reload server configuration: {e:#}");
                }
            }
            Asked::Reopen => {
                tracing::info!("Trapped \"user defined signal 1\" signal");
                reloader.logger.reopen();
            }
            Asked::LameDuck => {
                tracing::info!("Trapped \"user defined signal 2\" signal");
                let s = &reloader.settings;
                let (duration, grace) = (s.lame_duck_duration, s.lame_duck_grace_period);
                lame_duck(
                    &bus,
                    &listening,
                    &mut accepting,
                    duration,
                    grace,
                    &mut signals,
                )
                .await;
                break;
            }
        }
    }
    tracing::info!("shutting down: closing listeners and draining connections");
    listening.cancel();
    shutdown.cancel();
    for t in accepting.into_iter().chain(tasks) {
        let _ = t.await;
    }
    // The listeners stopped accepting: ask every connection to flush and close.
    junction_protocols::close_all(&bus);
    for t in http_tasks {
        let _ = t.await;
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not drain in time");
    }
    if let Some(store) = store {
        // Everything submitted is durable before the process ends.
        store.close();
        let st = store.stats();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            commits = get(&st.commits),
            ops = get(&st.ops),
            cancelled = get(&st.cancelled),
            commit_ms = get(&st.commit_micros) / 1000,
            "durable store closed"
        );
    }
    tracing::info!("Server Exiting..");
    Ok(())
}

/// Lame duck mode, as nats-server runs it: stop accepting, tell NATS clients (INFO `ldm`), wait
/// the grace period, then close the connections spread over the lame duck duration (MQTT 5
/// clients get DISCONNECT 0x8B). SIGINT or SIGTERM cut it short.
async fn lame_duck(
    bus: &Arc<Bus>,
    listening: &CancellationToken,
    accepting: &mut Vec<tokio::task::JoinHandle<()>>,
    duration: Duration,
    grace: Duration,
    signals: &mut Signals,
) {
    tracing::info!("Entering lame duck mode, stop accepting new clients");
    listening.cancel();
    for t in accepting.drain(..) {
        let _ = t.await;
    }
    let conns = bus.conns().open_views();
    for c in &conns {
        c.lame_duck();
    }
    if conns.is_empty() {
        return;
    }
    let work = async {
        {
            tracing::info!(
                "Closing {} existing clients over {:?} after a grace period of {:?}",
                conns.len(),
                duration,
                grace
            );
        }
        tokio::time::sleep(grace).await;
        // Spread the closes over what is left of the duration.
        let spread = duration.saturating_sub(grace);
        let pause = spread / (conns.len().max(1) as u32);
        for c in &conns {
            c.shutdown();
            tokio::time::sleep(pause.min(Duration::from_secs(1))).await;
        }
    };
    tokio::select! {
        _ = work => {}
        asked = async {
            loop {
                if let Asked::Stop(why) = signals.next().await {
                    break why;
                }
            }
        } => tracing::info!("Trapped \"{asked}\" signal: leaving lame duck mode at once"),
    }
}

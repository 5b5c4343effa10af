//! The `junction` binary: command line, configuration and wiring only.

mod auth_config;
mod settings;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use junction_core::Bus;
use junction_protocols::{mqtt, nats, ws};
use settings::{Cli, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for connections to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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

fn init_logging(settings: &Settings) {
    let level = if settings.trace {
        tracing::Level::TRACE
    } else if settings.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Listens for SIGINT and SIGTERM from the moment it is made, so a signal that comes right after
/// "Server is ready" shuts down gracefully instead of killing the process.
struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// On SIGHUP, reads every TLS listener's certificate and key files again: connections made
/// afterwards get the new certificates, open ones keep theirs. A file that fails to load keeps
/// the old certificate and logs why.
fn reload_certificates_on_hangup(
    tls: Vec<(&'static str, junction_protocols::tls::Tls)>,
) -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                for (name, t) in &tls {
                    match t.reload() {
                        Ok(()) => tracing::info!("reloaded the {name} TLS certificate"),
                        Err(e) => {
                            tracing::error!(error = %e, "reloading the {name} TLS certificate failed; keeping the current one")
                        }
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = tls;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.version {
        println!("junction version {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let (settings, warnings) = Settings::load(&cli)?;
    init_logging(&settings);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(settings))
}

async fn run(settings: Settings) -> Result<()> {
    let server_id = server_id();
    let server_name = settings
        .server_name
        .clone()
        .unwrap_or_else(|| server_id.clone());
    tracing::info!(version = env!("CARGO_PKG_VERSION"), server_id = %server_id, server_name = %server_name, "starting junction");

    // The store first: a locked or damaged one stops startup before anything listens.
    let mqtt_on = settings.mqtt_port.is_some() || settings.ws_port.is_some();
    let engine = if mqtt_on && !settings.in_memory {
        Some(junction_store::open(&settings.data_dir)?)
    } else {
        None
    };

    let auth = match &settings.file {
        Some(map) => auth_config::load(map)?,
        None => auth_config::Auth::default(),
    };
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
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .with_context(|| format!("listening on {}:{}", settings.host, settings.port))?;
    let nats_addr = listener.local_addr()?;
    tracing::info!("Listening for client connections on {nats_addr}");

    let opts = nats::Options {
        server_id: server_id.clone(),
        server_name: server_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
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
    // TLS listeners whose certificates SIGHUP reloads.
    let mut reloadable: Vec<(&str, junction_protocols::tls::Tls)> = Vec::new();
    reloadable.extend(nats_tls.iter().map(|t| ("client", t.clone())));
    reloadable.extend(mqtt_tls.iter().map(|t| ("mqtt", t.clone())));
    let mut frontend = nats::NatsServer::new(bus.clone(), auth.authenticator.clone(), opts);
    if let Some(tls) = nats_tls {
        frontend = frontend.with_tls(tls);
    }
    let frontend = Arc::new(frontend);

    let mut http_tasks = Vec::new();
    let monitor_info = |http_port: u16| junction_web::ServerInfo {
        server_id: server_id.clone(),
        server_name: server_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
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
    };
    if let Some(port) = settings.http_port {
        let http = TcpListener::bind((settings.host.as_str(), port))
            .await
            .with_context(|| format!("listening for HTTP on {}:{port}", settings.host))?;
        let http_addr = http.local_addr()?;
        tracing::info!("Starting http monitor on {http_addr}");
        http_tasks.push(tokio::spawn(junction_web::serve(
            http,
            bus.clone(),
            monitor_info(http_addr.port()),
            shutdown.clone(),
        )));
    }
    if let (Some(port), Some(tls)) = (settings.https_port, https_tls) {
        let https = TcpListener::bind((settings.host.as_str(), port))
            .await
            .with_context(|| format!("listening for HTTPS on {}:{port}", settings.host))?;
        let https_addr = https.local_addr()?;
        tracing::info!("Starting https monitor on https://{https_addr}");
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
            auth.authenticator.clone(),
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
                connect_timeout: auth.timeout.unwrap_or_else(|| match &mqtt_tls {
                    Some(t) => t.timeout + Duration::from_secs(1),
                    None => Duration::from_secs(2),
                }),
            },
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
    let mut tasks = Vec::new();
    if let (Some(port), Some(fe)) = (settings.mqtt_port, &mqtt_fe) {
        let mqtt_listener = TcpListener::bind((settings.host.as_str(), port))
            .await
            .with_context(|| format!("listening for MQTT on {}:{port}", settings.host))?;
        tracing::info!(
            "Listening for MQTT clients on {}",
            mqtt_listener.local_addr()?
        );
        tasks.push(tokio::spawn(mqtt::broker::serve(
            mqtt_listener,
            fe.clone(),
            shutdown.clone(),
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
        let ws_listener = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("listening for WebSocket on {host}:{port}"))?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        tracing::info!(
            "Listening for websocket clients on {scheme}://{}",
            ws_listener.local_addr()?
        );
        let ws_fe = Arc::new(ws::WsGateway {
            nats: frontend.clone(),
            mqtt: mqtt_fe.clone(),
            tls,
            opts: settings.ws.clone(),
        });
        tasks.push(tokio::spawn(ws::serve(
            ws_listener,
            ws_fe,
            shutdown.clone(),
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
    tasks.push(tokio::spawn(nats::serve(
        listener,
        frontend,
        shutdown.clone(),
        tracker.clone(),
    )));
    if !reloadable.is_empty() {
        reload_certificates_on_hangup(reloadable)?;
    }
    let signal = ShutdownSignal::install()?;
    tracing::info!("Server is ready");

    signal.recv().await;
    tracing::info!("shutting down: closing listeners and draining connections");
    shutdown.cancel();
    for t in tasks {
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

//! The `junction` binary: command line, configuration and wiring only.

mod auth_config;
mod claims;
mod js_limits;
mod logging;
mod mapping_config;
mod metrics;
mod net;
mod process;
mod reload;
mod settings;
mod signals;

use std::hash::{BuildHasher, Hasher};

/// mimalloc instead of glibc's allocator: messages are allocated on the reactor threads and
/// freed on the store's writer thread, and glibc serialises those cross-thread frees on its
/// arena locks (measured: `scripts/bench-js`, file streams).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use junction_core::Bus;
use junction_protocols::{mqtt, nats, ws};
use metrics::{LateSources, MetricSources};
use net::{bind, shown};
use process::data_dir;
use reload::{mqtt_options, Reloader};
use settings::{Cli, Settings};
use signals::{lame_duck, Asked, Signals};
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
    let engine = if (mqtt_on || settings.jetstream.is_some()) && !settings.in_memory {
        Some(junction_store::open_synced(
            &data_dir(&settings),
            settings.store_sync,
        )?)
    } else {
        None
    };
    // When the store acknowledges (MQTT's and JetStream's alike), as the store was opened.
    let store_sync_interval = match engine.as_ref().map(|e| e.policy()) {
        Some(junction_store::SyncPolicy::Every(d)) => {
            tracing::info!(
                "durable store: writes are acknowledged once written, synced every {d:?} (sync_interval)"
            );
            Some(d)
        }
        _ => None,
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
    // Durable MQTT and JetStream state: restored before any client connects.
    let mut store = None;
    let mut js_restored = junction_jetstream::Restored::default();
    if let Some(engine) = engine {
        if let Some(fe) = &mqtt_fe {
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
        }
        if settings.jetstream.is_some() {
            let started = std::time::Instant::now();
            js_restored = junction_jetstream::restore(&engine)
                .with_context(|| format!("restoring JetStream from {}", engine.path().display()))?;
            let messages: usize = js_restored.streams.values().map(|s| s.msgs.len()).sum();
            tracing::info!(
                streams = js_restored.streams.len(),
                consumers = js_restored.consumers.len(),
                messages,
                skipped = js_restored.skipped,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "JetStream state restored from {}",
                engine.path().display()
            );
            junction_core::Stats::add(
                &bus.stats().store_records_skipped,
                js_restored.skipped as u64,
            );
        }
        let s = junction_store::Store::start(Box::new(engine));
        if let Some(fe) = &mqtt_fe {
            fe.use_store(s.clone());
        }
        store = Some(s);
    } else if mqtt_fe.is_some() || settings.jetstream.is_some() {
        tracing::info!("MQTT and JetStream state is kept in memory only (--in-memory)");
    }
    let jetstream = settings.jetstream.as_ref().map(|js| {
        let opts = junction_jetstream::Options {
            max_memory: js.max_memory,
            max_store: js.max_store,
            store_dir: data_dir(&settings).display().to_string(),
            domain: js.domain.clone(),
            accounts: auth.jetstream_accounts(),
            limits: auth.jetstream_limits(),
            system_account: auth.system_account.clone().unwrap_or_default(),
            hot_bytes: junction_jetstream::HOT_BYTES,
            server_name: server_name.clone(),
            sync_interval: store_sync_interval,
        };
        tracing::info!("Starting JetStream");
        tracing::info!("    Max Memory:      {}", js.max_memory);
        tracing::info!("    Max Storage:     {}", js.max_store);
        tracing::info!("    Store Directory: \"{}\"", opts.store_dir);
        if let Some(d) = opts.sync_interval {
            tracing::info!("    Sync Interval:   {d:?}");
        }
        if let Some(d) = &js.domain {
            tracing::info!("    Domain:          {d}");
        }
        junction_jetstream::JetStream::start(
            bus.clone(),
            store.clone(),
            std::mem::take(&mut js_restored),
            opts,
            shutdown.clone(),
        )
    });
    let jetstream = jetstream.map(|(js, handle)| {
        tasks.push(handle);
        js
    });
    // Leaf node links: to the configured remotes (the hubs this server attaches to), and from
    // the leaf nodes that attach to this one (`leafnodes { port }`).
    let leafs = if settings.leaf_remotes.is_empty() && settings.leaf_accept.is_none() {
        None
    } else {
        let opts = Arc::new(junction_protocols::leaf::Options {
            server_id: server_id.clone(),
            server_name: server_name.clone(),
            version: NATS_VERSION.to_string(),
            max_payload: settings.max_payload,
            max_control_line: settings.max_control_line,
            max_pending: settings.max_pending,
            ping_interval: settings.ping_interval,
            ping_max: settings.ping_max,
            reconnect: settings.leaf_reconnect,
            jetstream: settings.jetstream.is_some(),
            jetstream_domain: settings.jetstream.as_ref().and_then(|j| j.domain.clone()),
        });
        let (leafs, handles) = junction_protocols::leaf::start_with(
            Arc::default(),
            bus.clone(),
            opts.clone(),
            settings.leaf_remotes.clone(),
            shutdown.clone(),
        );
        tasks.extend(handles);
        if let Some(accept) = &settings.leaf_accept {
            let mut accept = accept.clone();
            if accept.host.is_empty() {
                accept.host = settings.host.clone();
            }
            let (_, handle) = junction_protocols::leaf::listen(
                bus.clone(),
                opts,
                accept.clone(),
                authenticator.clone(),
                leafs.clone(),
                shutdown.clone(),
            )
            .await
            .with_context(|| {
                format!(
                    "cannot listen for leafnode connections on {}:{}",
                    accept.host, accept.port
                )
            })?;
            tasks.push(handle);
        }
        Some(leafs)
    };
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
        jetstream: jetstream.clone(),
        leafs: leafs.clone(),
    });
    let _ports_file = match &settings.ports_file_dir {
        Some(dir) => Some(process::OwnedFile::write(
            process::ports_file_path(dir),
            &serde_json::to_string(&ports)?,
        )?),
        None => None,
    };
    // Account JWT updates through the system account (`nsc push`), with a full resolver.
    let (claims_tx, mut claims_rx) = tokio::sync::mpsc::unbounded_channel();
    if let (Some(dir), Some(sys)) = (auth.jwt_dir.clone(), auth.system_account.clone()) {
        let ident = claims::ServerIdent {
            name: server_name.clone(),
            id: server_id.clone(),
            host: settings.host.clone(),
            version: NATS_VERSION.to_string(),
            jetstream: jetstream.is_some(),
        };
        let keys = auth.operator_keys.clone();
        let task = claims::start(&bus, &sys, dir, keys, ident, claims_tx, shutdown.clone());
        tasks.push(task);
    }
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
        jetstream: jetstream.clone(),
    };
    // Restoring the store allocated and freed much on this thread: give it back to the OS.
    // SAFETY: mi_collect only walks mimalloc's own heaps.
    unsafe { libmimalloc_sys::mi_collect(true) };
    tracing::info!("Server is ready");

    loop {
        let asked = tokio::select! {
            asked = signals.next() => asked,
            Some(done) = claims_rx.recv() => {
                // Updates that came together are applied once.
                let mut waiting = vec![done];
                while let Ok(more) = claims_rx.try_recv() {
                    waiting.push(more);
                }
                match reloader.refresh_accounts() {
                    Err(e) => tracing::error!("Failed to apply the updated accounts: {e:#}"),
                    // Answered once JetStream, too, has the change.
                    Ok(Some(applied)) => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), applied).await;
                    }
                    Ok(None) => {}
                }
                for done in waiting {
                    let _ = done.send(());
                }
                continue;
            }
        };
        match asked {
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

use super::*;
use clap::Parser;
use std::path::Path;

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
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(
        s.jetstream.is_some(),
        "jetstream: enabled turns JetStream on"
    );
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

#[test]
fn jetstream_blocks() {
    let map = junction_config::parse_str(
        "jetstream { store_dir: \"/tmp/js-x\", max_memory_store: 1GB, max_file_store: 10GB, domain: edge, sync_interval: 2m }\n",
    )
    .unwrap();
    let mut s = Settings::default();
    let warnings = s.apply_file(&map).unwrap();
    let js = s.jetstream.clone().expect("on");
    assert_eq!((js.max_memory, js.max_store), (1 << 30, 10 << 30));
    assert_eq!(js.domain.as_deref(), Some("edge"));
    assert_eq!(s.data_dir, std::path::PathBuf::from("/tmp/js-x"));
    // Unquoted, `2m` is the number 2,000,000, which nats-server takes as seconds (and warns).
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("2000000, taken as seconds"),
        "{warnings:?}"
    );
    assert_eq!(
        s.store_sync,
        junction_store::SyncPolicy::Every(std::time::Duration::from_secs(2_000_000))
    );
    for (text, want) in [
        ("sync_interval: always", junction_store::SyncPolicy::Always),
        ("sync: ALWAYS", junction_store::SyncPolicy::Always),
        (
            "sync: \"100ms\"",
            junction_store::SyncPolicy::Every(std::time::Duration::from_millis(100)),
        ),
        (
            "sync_interval: 0",
            junction_store::SyncPolicy::Every(std::time::Duration::from_secs(120)),
        ),
    ] {
        let mut s = Settings::default();
        let map = junction_config::parse_str(&format!("jetstream {{ {text} }}\n")).unwrap();
        let warnings = s.apply_file(&map).unwrap();
        // A bare number is taken, with a warning.
        assert_eq!(
            warnings.len(),
            usize::from(text.ends_with(": 0")),
            "{text}: {warnings:?}"
        );
        assert_eq!(s.store_sync, want, "{text}");
    }
    let mut s = Settings::default();
    let map = junction_config::parse_str("jetstream { sync_interval: sometimes }\n").unwrap();
    let err = s.apply_file(&map).unwrap_err().to_string();
    assert!(err.contains("sync_interval"), "{err}");
    assert_eq!(
        Settings::default().store_sync,
        junction_store::SyncPolicy::Always
    );
    for off in ["jetstream: disabled\n", "jetstream { enabled: false }\n"] {
        let mut s = Settings::default();
        s.apply_file(&junction_config::parse_str(off).unwrap())
            .unwrap();
        assert!(s.jetstream.is_none(), "{off}");
    }
    let mut s = Settings::default();
    let bad = junction_config::parse_str("jetstream { max_memry_store: 1GB }\n").unwrap();
    assert!(s
        .apply_file(&bad)
        .unwrap_err()
        .to_string()
        .contains("unknown field"));
}

//! A realistic nats-server.conf (with an included accounts file) parses
//! into the expected tree.

mod common;

use std::time::Duration;

use common::fixtures;
use junction_config::{parse_file, Item, Map};

fn map<'a>(parent: &'a Map, key: &str) -> &'a Map {
    parent
        .get(key)
        .and_then(Item::as_map)
        .unwrap_or_else(|| panic!("'{key}' should be a map"))
}

fn int(parent: &Map, key: &str) -> i64 {
    parent
        .get(key)
        .and_then(Item::as_i64)
        .unwrap_or_else(|| panic!("'{key}' should be an integer"))
}

fn string<'a>(parent: &'a Map, key: &str) -> &'a str {
    parent
        .get(key)
        .and_then(Item::as_str)
        .unwrap_or_else(|| panic!("'{key}' should be a string"))
}

fn boolean(parent: &Map, key: &str) -> bool {
    parent
        .get(key)
        .and_then(Item::as_bool)
        .unwrap_or_else(|| panic!("'{key}' should be a boolean"))
}

fn duration(parent: &Map, key: &str) -> Duration {
    parent.get(key).unwrap().as_duration().unwrap()
}

#[test]
fn realistic_server_config() {
    let path = fixtures().join("nats-server.conf");
    let conf = parse_file(&path).unwrap();

    // Top level.
    assert_eq!(string(&conf, "server_name"), "junction-1");
    assert_eq!(string(&conf, "listen"), "0.0.0.0:4222");
    assert_eq!(int(&conf, "port"), 4222);
    assert_eq!(int(&conf, "http_port"), 8222);
    assert_eq!(string(&conf, "host"), "0.0.0.0");
    assert_eq!(int(&conf, "max_payload"), 1 << 20);
    assert_eq!(int(&conf, "max_pending"), 64 << 20);
    assert_eq!(int(&conf, "max_connections"), 64_000);
    assert_eq!(int(&conf, "max_control_line"), 4096);
    assert_eq!(int(&conf, "logfile_size_limit"), 1 << 30);
    assert_eq!(duration(&conf, "ping_interval"), Duration::from_secs(120));
    assert_eq!(duration(&conf, "write_deadline"), Duration::from_secs(10));
    assert_eq!(
        duration(&conf, "lame_duck_duration"),
        Duration::from_secs(150)
    );
    assert_eq!(int(&conf, "ping_max"), 2);
    assert!(!boolean(&conf, "debug"));
    assert!(!boolean(&conf, "trace"));
    assert!(boolean(&conf, "logtime"));
    assert_eq!(string(&conf, "pid_file"), "/var/run/junction.pid");
    assert_eq!(
        string(&conf, "banner"),
        "\nWelcome to Junction.\n  Behave.\n"
    );

    // Blocks.
    let auth = map(&conf, "authorization");
    assert_eq!(string(auth, "token"), "s3cr3t-token");
    assert!(conf.get("TOKEN").unwrap().used_as_variable);

    let tls = map(&conf, "tls");
    assert_eq!(string(tls, "cert_file"), "./certs/server-cert.pem");
    assert!(boolean(tls, "verify"));
    assert_eq!(tls.get("timeout").and_then(Item::as_f64), Some(0.75));
    assert_eq!(
        tls.get("cipher_suites").unwrap().as_array().unwrap().len(),
        2
    );

    let cluster = map(&conf, "cluster");
    assert_eq!(string(cluster, "listen"), "0.0.0.0:6222");
    assert_eq!(string(map(cluster, "authorization"), "user"), "route_user");
    let routes = cluster.get("routes").unwrap().as_array().unwrap();
    assert_eq!(
        routes[1].as_str(),
        Some("nats-route://route_user:T0pS3cr3t@10.0.0.3:6222")
    );

    let js = map(&conf, "jetstream");
    assert_eq!(int(js, "max_memory_store"), 1_000_000_000);
    assert_eq!(int(js, "max_file_store"), 10 << 30);

    let mqtt = map(&conf, "mqtt");
    assert_eq!(int(mqtt, "port"), 1883);
    assert_eq!(duration(mqtt, "ack_wait"), Duration::from_secs(60));
    assert_eq!(string(map(mqtt, "tls"), "key_file"), "./certs/mqtt-key.pem");
    assert_eq!(
        map(mqtt, "authorization").get("timeout").unwrap().as_f64(),
        Some(2.5)
    );

    let ws = map(&conf, "websocket");
    assert_eq!(int(ws, "port"), 8080);
    assert!(boolean(ws, "no_tls"));
    assert_eq!(
        ws.get("allowed_origins").unwrap().as_array().unwrap().len(),
        2
    );
    assert_eq!(duration(ws, "handshake_timeout"), Duration::from_secs(5));

    let remotes = map(&conf, "leafnodes")
        .get("remotes")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(string(remotes[0].as_map().unwrap(), "account"), "APP");

    // From the included accounts file.
    assert_eq!(string(&conf, "system_account"), "SYS");
    let accounts = map(&conf, "accounts");
    let keys: Vec<&str> = accounts.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["SYS", "APP", "MQTT"]);
    let sys_users = map(accounts, "SYS")
        .get("users")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(
        string(sys_users[0].as_map().unwrap(), "password"),
        "$2a$11$QWRtaW5QYXNzd29yZEhhc2hGb3JUZXN0c09ubHlOb3RSZWFsWFhYWA"
    );
    let app = map(accounts, "APP");
    assert_eq!(string(app, "jetstream"), "enabled");
    assert_eq!(int(map(app, "limits"), "max_payload"), 512 * 1024);
    let app_users = app.get("users").unwrap().as_array().unwrap();
    let perms = map(app_users[0].as_map().unwrap(), "permissions");
    let allow = map(perms, "publish")
        .get("allow")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(allow[1].as_str(), Some("$JS.API.>"));
    assert_eq!(
        string(app_users[1].as_map().unwrap(), "nkey"),
        "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
    );
    let imports = map(accounts, "MQTT")
        .get("imports")
        .unwrap()
        .as_array()
        .unwrap();
    let import = imports[0].as_map().unwrap();
    assert_eq!(string(map(import, "stream"), "subject"), "events.>");

    // Positions point into the right file.
    let port = conf.get("port").unwrap();
    assert_eq!((port.line, port.column), (6, 1));
    assert_eq!(port.file.as_deref(), Some(path.as_path()));
    let system_account = conf.get("system_account").unwrap();
    assert!(system_account
        .file
        .as_deref()
        .unwrap()
        .ends_with("accounts.conf"));
    let mqtt_item = conf.get("mqtt").unwrap();
    let mqtt_port = mqtt_item.as_map().unwrap().get("port").unwrap();
    assert_eq!(mqtt_port.column, 3);
    assert_eq!(mqtt_port.line, mqtt_item.line + 1);
}

#[test]
fn unknown_keys_can_be_reported_with_positions() {
    // What the broker does with the tree: walk it and point at keys it
    // does not know, skipping keys that only served as variables.
    let conf = parse_file(&fixtures().join("nats-server.conf")).unwrap();
    let known = [
        "server_name",
        "listen",
        "port",
        "http_port",
        "host",
        "max_payload",
        "max_pending",
        "max_connections",
        "max_control_line",
        "write_deadline",
        "ping_interval",
        "ping_max",
        "lame_duck_duration",
        "debug",
        "trace",
        "logtime",
        "log_file",
        "logfile_size_limit",
        "pid_file",
        "authorization",
        "tls",
        "cluster",
        "jetstream",
        "mqtt",
        "websocket",
        "leafnodes",
        "accounts",
        "system_account",
    ];
    let unknown: Vec<String> = conf
        .iter()
        .filter(|(key, item)| {
            !item.used_as_variable && !known.iter().any(|k| k.eq_ignore_ascii_case(key))
        })
        .map(|(key, item)| {
            format!(
                "unknown key '{key}' at line {} column {}",
                item.line, item.column
            )
        })
        .collect();
    assert_eq!(unknown, ["unknown key 'banner' at line 103 column 1"]);
}

//! Starts the real `junction` binary on random loopback ports for end-to-end tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub http_port: u16,
    /// Every line the server logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

fn port_after(line: &str, marker: &str) -> Option<u16> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.trim().rsplit(':').next()?.parse().ok()
}

impl Server {
    /// Starts the server with extra arguments; waits until it is ready.
    pub fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_junction"))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                "-1",
                "-m",
                "-1",
                "--mqtt-port",
                "-1",
                "--ws-port",
                "-1",
            ])
            // A test that names a store directory gets a durable store; the rest run in memory.
            .args(
                (!extra
                    .iter()
                    .any(|a| matches!(*a, "-sd" | "--store_dir" | "--data-dir")))
                .then_some("--in-memory"),
            )
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting junction");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (mut port, mut http_port) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "junction exited early ({status}): {:?}",
                        log.lock().unwrap()
                    );
                }
                continue;
            };
            if let Some(p) = port_after(&line, "Listening for client connections on") {
                port = Some(p);
            }
            if let Some(p) = port_after(&line, "Starting http monitor on") {
                http_port = Some(p);
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        Server {
            child,
            port: port.expect("client port logged"),
            http_port: http_port.unwrap_or(0),
            log,
        }
    }

    /// Starts the server with a configuration file holding `config`.
    pub fn with_config(config: &str) -> Server {
        let path = temp_file("conf", config);
        Server::start(&["-c", path.to_str().unwrap()])
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// GETs a monitoring endpoint and parses its JSON.
    pub fn http_json(&self, path: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        let json = &body[body.find("\r\n\r\n").expect("http response") + 4..];
        serde_json::from_str(json).expect("json body")
    }

    pub fn varz(&self, key: &str) -> u64 {
        self.http_json("/varz")[key]
            .as_u64()
            .expect("numeric varz field")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// Writes `contents` to a fresh file in the temp directory.
pub fn temp_file(ext: &str, contents: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "junction-test-{}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).unwrap();
    path
}

/// Polls `f` until it is true or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

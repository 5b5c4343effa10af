//! The process as nats-server runs it: the pid file, the ports file, and `--signal` sent to a
//! running server.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// The executable's name as invoked (`nats-server` through a symlink or copy, or `junction`).
pub fn exe_name() -> String {
    std::env::args()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "junction".into())
}

/// A file removed when dropped (the pid file, the ports file).
pub struct OwnedFile(PathBuf);

impl OwnedFile {
    /// Writes `text` to `path` (replacing it) and owns it.
    pub fn write(path: PathBuf, text: &str) -> Result<OwnedFile> {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(OwnedFile(path))
    }
}

impl Drop for OwnedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The ports file's content, as nats-server writes it: the URLs of each listener.
#[derive(Default, serde::Serialize)]
pub struct Ports {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nats: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub monitoring: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub websocket: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mqtt: Vec<String>,
}

/// `scheme://host:port` for a bound listener; an unspecified address (every interface) is
/// reported as the loopback address of its family, which is where a local client reaches it.
pub fn url(scheme: &str, addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("{scheme}://{ip}:{}", addr.port())
}

/// `<dir>/<executable>_<pid>.ports`.
pub fn ports_file_path(dir: &Path) -> PathBuf {
    dir.join(format!("{}_{}.ports", exe_name(), std::process::id()))
}

/// `--signal CMD[=PID|=PIDFILE]`: sends CMD's signal to the server and returns.
pub fn send_signal(arg: &str, pid_file: Option<&Path>) -> Result<()> {
    let (command, target) = match arg.split_once('=') {
        Some((c, t)) => (c, Some(t)),
        None => (arg, None),
    };
    let signal = match command {
        "stop" => libc::SIGKILL,
        "quit" => libc::SIGINT,
        "term" => libc::SIGTERM,
        "reopen" => libc::SIGUSR1,
        "reload" => libc::SIGHUP,
        "ldm" => libc::SIGUSR2,
        other => bail!("unknown signal {other:?} (use ldm, stop, quit, term, reopen or reload)"),
    };
    let pids = match target {
        Some(t) if !t.is_empty() => vec![pid_of(t)?],
        _ => match pid_file {
            Some(f) => vec![pid_of(&f.to_string_lossy())?],
            None => running_pids()?,
        },
    };
    match pids.as_slice() {
        [] => bail!("no {} processes running", exe_name()),
        [pid] => {
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            if unsafe { libc::kill(*pid, signal) } != 0 {
                bail!(
                    "signal {command:?} {pid}: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(())
        }
        many => {
            let list: Vec<String> = many.iter().map(|p| p.to_string()).collect();
            bail!(
                "multiple {} processes running:\n{}",
                exe_name(),
                list.join("\n")
            )
        }
    }
}

/// A pid, or the pid read from a pid file.
fn pid_of(text: &str) -> Result<i32> {
    if let Ok(pid) = text.trim().parse::<i32>() {
        return Ok(pid);
    }
    let content =
        std::fs::read_to_string(text).with_context(|| format!("reading the pid file {text}"))?;
    content
        .trim()
        .parse::<i32>()
        .map_err(|_| anyhow!("the pid file {text} does not hold a pid"))
}

/// Processes running this executable (by name), other than this one.
fn running_pids() -> Result<Vec<i32>> {
    let me = std::process::id() as i32;
    let name = exe_name();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let base = Path::new(std::str::from_utf8(argv0).unwrap_or_default())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if base.as_deref() == Some(name.as_str()) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// The durable store's directory: the one configured, else `./junction-data` when the working
/// directory lets us make it, else the user's state directory, else the temporary directory.
pub(crate) fn data_dir(settings: &crate::settings::Settings) -> std::path::PathBuf {
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

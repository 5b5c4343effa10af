//! Logging as nats-server writes it: `[pid] 2026/12/06 17:10:29.123456 [INF] message`, to
//! stderr, a file (`-l`, `log_file`, reopened on SIGUSR1 and rotated past `logfile_size_limit`)
//! or syslog (`-s` for the local one, `-r udp://host:port` for a remote one). Events come from
//! `tracing`; their fields follow the message as `key=value`. Times are UTC.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use junction_core::sync::Lock as _;
use std::sync::Mutex;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

use junction_core::time::Civil;

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// `-l`, `log_file`: append to this file instead of stderr.
    pub file: Option<PathBuf>,
    /// `logfile_size_limit`: rotate the file when it grows past this many bytes (0: never).
    pub size_limit: u64,
    /// `logfile_max_num`: rotated files kept (0: all of them).
    pub max_files: usize,
    /// `-T`, `logtime`: a date and time on every line.
    pub time: bool,
    /// `-s`, `syslog`: the local syslog (`/dev/log`).
    pub syslog: bool,
    /// `-r`, `remote_syslog`: `udp://host:port` (or `unix:///path`).
    pub remote_syslog: Option<String>,
    pub debug: bool,
    pub trace: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            file: None,
            size_limit: 0,
            max_files: 0,
            time: true,
            syslog: false,
            remote_syslog: None,
            debug: false,
            trace: false,
        }
    }
}

impl LogOptions {
    fn level(&self) -> LevelFilter {
        if self.trace {
            LevelFilter::TRACE
        } else if self.debug {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        }
    }
}

/// The installed logger: what a configuration reload and SIGUSR1 change.
pub struct Logger {
    sink: Arc<Mutex<Sink>>,
    level: reload::Handle<LevelFilter, Registry>,
    options: Mutex<LogOptions>,
}

impl Logger {
    /// Installs the global logger.
    pub fn install(options: &LogOptions) -> Result<Logger> {
        let sink = Arc::new(Mutex::new(Sink::open(options)?));
        let (filter, level) = reload::Layer::new(options.level());
        let syslog = matches!(*sink.locked(), Sink::Syslog { .. });
        let layer = tracing_subscriber::fmt::layer()
            .event_format(NatsFormat {
                time: options.time && !syslog,
                pid: !syslog,
            })
            .with_writer(SinkWriter(sink.clone()));
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .try_init()
            .context("installing the logger")?;
        Ok(Logger {
            sink,
            level,
            options: Mutex::new(options.clone()),
        })
    }

    /// SIGUSR1: opens the log file again under its name (after logrotate moved it away).
    pub fn reopen(&self) {
        let result = self.sink.locked().reopen();
        match result {
            Ok(true) => tracing::info!("File log re-opened"),
            Ok(false) => tracing::info!("Reopening the log has no effect: not logging to a file"),
            Err(e) => tracing::error!("Reopening the log file failed: {e}"),
        }
    }

    /// A configuration reload: the level changes at once; where the log goes changes too
    /// (a failure to open the new place keeps the old one and is returned).
    pub fn apply(&self, options: &LogOptions) -> Result<()> {
        let mut current = self.options.locked();
        if current.level() != options.level() {
            self.level
                .modify(|l| *l = options.level())
                .context("changing the log level")?;
        }
        let place = |o: &LogOptions| {
            (
                o.file.clone(),
                o.syslog,
                o.remote_syslog.clone(),
                o.size_limit,
                o.max_files,
            )
        };
        if place(&current) != place(options) {
            let sink = Sink::open(options)?;
            *self.sink.locked() = sink;
        }
        *current = options.clone();
        Ok(())
    }
}

/// Where log lines go.
enum Sink {
    Stderr,
    File(LogFile),
    Syslog { socket: SyslogSocket, tag: String },
}

enum SyslogSocket {
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixDatagram),
    Udp(std::net::UdpSocket),
}

struct LogFile {
    path: PathBuf,
    file: File,
    written: u64,
    limit: u64,
    max_files: usize,
}

impl Sink {
    fn open(options: &LogOptions) -> Result<Sink> {
        let tag = std::env::args()
            .next()
            .map(PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "junction".into());
        if let Some(remote) = &options.remote_syslog {
            return Ok(Sink::Syslog {
                socket: remote_syslog(remote)?,
                tag,
            });
        }
        if options.syslog {
            #[cfg(unix)]
            {
                let socket = std::os::unix::net::UnixDatagram::unbound()?;
                socket
                    .connect("/dev/log")
                    .context("connecting to the local syslog (/dev/log)")?;
                return Ok(Sink::Syslog {
                    socket: SyslogSocket::Unix(socket),
                    tag,
                });
            }
            #[cfg(not(unix))]
            bail!("syslog is only supported on Unix");
        }
        match &options.file {
            Some(path) => {
                let file = open_append(path)?;
                let written = file.metadata().map(|m| m.len()).unwrap_or(0);
                Ok(Sink::File(LogFile {
                    path: path.clone(),
                    file,
                    written,
                    limit: options.size_limit,
                    max_files: options.max_files,
                }))
            }
            None => Ok(Sink::Stderr),
        }
    }

    /// Opens the log file again; `Ok(false)` when not logging to a file.
    fn reopen(&mut self) -> io::Result<bool> {
        let Sink::File(f) = self else {
            return Ok(false);
        };
        f.file = OpenOptions::new().create(true).append(true).open(&f.path)?;
        f.written = f.file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(true)
    }

    fn write_line(&mut self, level: Level, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stderr => io::stderr().lock().write_all(line),
            Sink::File(f) => {
                f.file.write_all(line)?;
                f.written += line.len() as u64;
                if f.limit > 0 && f.written >= f.limit {
                    f.rotate()?;
                }
                Ok(())
            }
            Sink::Syslog { socket, tag } => {
                // RFC 3164 without the timestamp (syslog adds it): facility daemon (3).
                let severity = match level {
                    Level::ERROR => 3,
                    Level::WARN => 4,
                    Level::INFO => 6,
                    _ => 7,
                };
                let text = String::from_utf8_lossy(line);
                let msg = format!(
                    "<{}>{tag}[{}]: {}",
                    3 * 8 + severity,
                    std::process::id(),
                    text.trim_end()
                );
                let sent = match socket {
                    #[cfg(unix)]
                    SyslogSocket::Unix(s) => s.send(msg.as_bytes()),
                    SyslogSocket::Udp(s) => s.send(msg.as_bytes()),
                };
                // A syslog that is down must not stop the broker.
                let _ = sent;
                Ok(())
            }
        }
    }
}

impl LogFile {
    /// Renames the file to `<name>.YYYY.MM.DD.HH.MM.SS.nnnnnnnnn` and starts a new one, keeping
    /// at most `max_files` rotated files.
    fn rotate(&mut self) -> io::Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let c = Civil::from_unix(now.as_secs() as i64);
        let name = format!(
            "{}.{:04}.{:02}.{:02}.{:02}.{:02}.{:02}.{:09}",
            self.path.display(),
            c.year,
            c.month,
            c.day,
            c.hour,
            c.minute,
            c.second,
            now.subsec_nanos()
        );
        std::fs::rename(&self.path, &name)?;
        self.file = open_append(&self.path).map_err(io::Error::other)?;
        self.written = 0;
        if self.max_files > 0 {
            self.prune();
        }
        Ok(())
    }

    /// Removes the oldest rotated files beyond `max_files`.
    fn prune(&self) {
        let (Some(dir), Some(base)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        let prefix = format!("{}.", base.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut rotated: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.strip_prefix(&prefix).is_some_and(|s| {
                    s.len() == 29 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                })
            })
            .collect();
        rotated.sort();
        while rotated.len() > self.max_files {
            let _ = std::fs::remove_file(dir.join(rotated.remove(0)));
        }
    }
}

fn open_append(path: &PathBuf) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))
}

fn remote_syslog(url: &str) -> Result<SyslogSocket> {
    if let Some(path) = url.strip_prefix("unix://") {
        #[cfg(unix)]
        {
            let socket = std::os::unix::net::UnixDatagram::unbound()?;
            socket
                .connect(path)
                .with_context(|| format!("connecting to syslog at {url}"))?;
            return Ok(SyslogSocket::Unix(socket));
        }
        #[cfg(not(unix))]
        bail!("unix syslog sockets are only supported on Unix: {path}");
    }
    let addr = match url.strip_prefix("udp://") {
        Some(a) => a,
        None if !url.contains("://") => url,
        None => bail!("remote_syslog '{url}': only udp:// and unix:// are supported"),
    };
    let socket = std::net::UdpSocket::bind(if addr.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })?;
    socket
        .connect(addr)
        .with_context(|| format!("remote_syslog '{url}' is not host:port"))?;
    Ok(SyslogSocket::Udp(socket))
}

/// Writes each formatted event to the sink in one piece.
struct SinkWriter(Arc<Mutex<Sink>>);

struct LineWriter<'a> {
    sink: &'a Mutex<Sink>,
    level: Level,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sink.locked().write_line(self.level, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            sink: &self.0,
            level: Level::INFO,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            sink: &self.0,
            level: *meta.level(),
        }
    }
}

/// nats-server's line: `[pid] date time.micros [LVL] message key=value ...`.
struct NatsFormat {
    time: bool,
    pid: bool,
}

impl<S, N> FormatEvent<S, N> for NatsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.pid {
            write!(writer, "[{}] ", std::process::id())?;
        }
        if self.time {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let c = Civil::from_unix(now.as_secs() as i64);
            write!(
                writer,
                "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06} ",
                c.year,
                c.month,
                c.day,
                c.hour,
                c.minute,
                c.second,
                now.subsec_micros()
            )?;
        }
        let label = match *event.metadata().level() {
            Level::ERROR => "[ERR] ",
            Level::WARN => "[WRN] ",
            Level::INFO => "[INF] ",
            Level::DEBUG => "[DBG] ",
            Level::TRACE => "[TRC] ",
        };
        writer.write_str(label)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

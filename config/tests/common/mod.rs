//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use junction_config::{parse_str, Map, Value};

/// Parses `text`, panicking with the error message on failure.
pub fn parse(text: &str) -> Map {
    parse_str(text).unwrap_or_else(|e| panic!("unexpected error: {e}\n--- input ---\n{text}"))
}

/// Parses `text` and renders it with [`render`].
pub fn parsed(text: &str) -> String {
    render(&parse(text))
}

/// The error message for `text`, panicking if it parses.
pub fn error(text: &str) -> String {
    match parse_str(text) {
        Ok(map) => panic!(
            "expected an error, got {}\n--- input ---\n{text}",
            render(&map)
        ),
        Err(e) => e.to_string(),
    }
}

/// A compact, position-free rendering of a map, in file order:
/// `{a: 1, b: "x", c: [true, 2.5], d: {}}`.
pub fn render(map: &Map) -> String {
    let mut out = String::new();
    render_map(map, &mut out);
    out
}

fn render_map(map: &Map, out: &mut String) {
    out.push('{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(key);
        out.push_str(": ");
        render_value(&item.value, out);
    }
    out.push('}');
}

fn render_value(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => write!(out, "{s:?}").unwrap(),
        Value::Integer(n) => write!(out, "{n}").unwrap(),
        Value::Float(f) => write!(out, "{f:?}").unwrap(),
        Value::Bool(b) => write!(out, "{b}").unwrap(),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_value(&item.value, out);
            }
            out.push(']');
        }
        Value::Map(map) => render_map(map, out),
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "junction-config-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            name
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` (which may contain subdirectories) and
    /// returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Directory of the checked-in fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

//! Parser for the nats-server configuration file format.
//!
//! Junction reads the same configuration files as nats-server. This crate
//! turns such a file into a tree of [`Value`]s in which every entry remembers
//! where it was defined, so callers can report problems such as
//! "unknown key 'x' at line L column C". It does not know what any key
//! means; interpreting options is left to the broker.
//!
//! ```
//! let config = junction_config::parse_str("
//!     port: 4222
//!     max_payload: 1MB
//!     authorization { user: alice, password: 'secret' }
//! ").unwrap();
//! assert_eq!(config.get("port").and_then(|i| i.as_i64()), Some(4222));
//! assert_eq!(config.get("MAX_PAYLOAD").and_then(|i| i.as_i64()), Some(1024 * 1024));
//! let auth = config.get("authorization").and_then(|i| i.as_map()).unwrap();
//! assert_eq!(auth.get("user").and_then(|i| i.as_str()), Some("alice"));
//! ```
//!
//! # The format
//!
//! * Entries are `key = value`, `key: value` or `key value`, separated by
//!   new lines, `;` or `,`. Keys may be quoted. The top level is an
//!   implicit map; it may also be wrapped in `{ }` as in JSON.
//! * Comments start with `#` or `//` where a key or the end of a value is
//!   expected.
//! * Values: maps `{ }`, arrays `[ ]` (elements separated by `,` or new
//!   lines), `"double quoted"` strings with the escapes `\t \n \r \" \\
//!   \xXX \uXXXX`, `'single quoted'` raw strings, block strings between `(`
//!   and a `)` alone on a line, and unquoted text. Unquoted text is a
//!   boolean (`true`/`false`/`yes`/`no`/`on`/`off`, any case), a `$variable`,
//!   an integer, an integer with a size suffix (`k`, `m`, `g`, `t`, `p`, `e`
//!   are powers of 1000; with `b`, `i` or `ib` appended, powers of 1024), a
//!   float, or else a string (`0.0.0.0`, `127.0.0.1:4222`, `nats://host`).
//! * Durations such as `"2m"` stay strings; see [`parse_duration`] and
//!   [`Value::as_duration`].
//! * `include path` (quoted or not) parses another file, relative to the
//!   including file's directory, and merges its top-level keys into the
//!   current map.
//! * `$name` copies the value of the key `name` defined earlier in the
//!   current map or an enclosing one of the same file (innermost first,
//!   exact spelling; keys merged in by an earlier `include` count), falling
//!   back to the environment variable `name`, whose text is parsed as a
//!   value. Anything else is an error naming the variable. Unquoted values
//!   starting with `$2a$`, `$2b$`, `$2x$` or `$2y$` are bcrypt hashes, not
//!   variables.
//!
//! Nesting (maps, arrays, includes) is limited to 128 levels, and parsing
//! never panics on malformed input; errors carry the file, line and column.
//!
//! # Layout
//!
//! * `value.rs`: [`Value`], [`Item`] (a value with its position) and
//!   [`Map`] (ordered, case-insensitive lookup).
//! * `parser.rs`: the scanner and recursive-descent parser, includes and
//!   variables.
//! * `duration.rs`: [`parse_duration`].
//! * `error.rs`: [`ConfigError`] and [`Location`].

#![warn(missing_docs)]

mod duration;
mod error;
mod parser;
mod value;

use std::path::Path;

pub use duration::parse_duration;
pub use error::{ConfigError, Location};
pub use value::{Item, Map, Value};

/// Parses configuration text. Errors have no file name in their location,
/// and `include` paths are resolved against the current directory.
pub fn parse_str(text: &str) -> Result<Map, ConfigError> {
    parser::parse(text, None)
}

/// Reads and parses a configuration file. Items and errors carry the path
/// (as given, or joined with include paths), and `include` paths are
/// resolved against the file's directory.
pub fn parse_file(path: &Path) -> Result<Map, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parser::parse(&text, Some(path))
}

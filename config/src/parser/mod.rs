//! Scanner and recursive-descent parser for the nats-server format.
//!
//! The parser works directly on characters (there is no separate token
//! stream): the format is context sensitive (what ends an unquoted string
//! depends on where it appears), so reading character by character in each
//! grammar rule keeps the rules in one place.
//!
//! Grammar, informally:
//!
//! ```text
//! document := { blank | '{' | '}' | entry value-end }        top-level braces are transparent
//! entry    := key [ blank ] [ '=' | ':' ] value  |  "include" path
//! key      := '"' text '"' | "'" text "'" | run of chars except whitespace, '=' and ':'
//! value    := map | array | "double quoted" | 'single quoted' | ( block ) | unquoted
//! map      := '{' { blank | entry (',' | ';' | newline | comment | before '}') } '}'
//! array    := '[' { blank | value (',' | newline | comment | before ']') } ']'
//! ```
//!
//! Unquoted values are classified after reading: booleans, `$variables`,
//! integers (optionally with a size suffix), floats, and otherwise strings.
//!
//! Layout: this file holds the document, entries, keys, maps and arrays; `cursor` reads
//! characters and tracks positions; `scalars` reads strings, escapes and unquoted values;
//! `include` resolves `$variables`, environment variables and `include` files.

mod cursor;
mod include;
mod scalars;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ConfigError, Location};
use crate::value::{Item, Map, Value};

use cursor::{Cursor, Pos};
use include::{identity, parent_dir};

/// Deepest allowed nesting of maps and arrays (includes and environment
/// variable values count as one level each).
pub(crate) const MAX_DEPTH: usize = 128;

/// How much may be copied through `$variable` references in one parse,
/// in units of one value plus one unit per 64 bytes of string. Stops
/// exponential blow-up from variables that reference each other.
const COPY_BUDGET: usize = 1 << 20;

type Result<T> = std::result::Result<T, ConfigError>;

/// Parses a whole document. `file` names the text for positions and for
/// resolving includes; without it includes are relative to the current
/// directory.
pub(crate) fn parse(text: &str, file: Option<&Path>) -> Result<Map> {
    let mut shared = Shared {
        include_stack: Vec::new(),
        env_stack: Vec::new(),
        copy_budget: COPY_BUDGET,
    };
    if let Some(file) = file {
        shared.include_stack.push(identity(file));
    }
    let base_dir = file.map_or_else(PathBuf::new, parent_dir);
    Parser::new(text, file, base_dir, 0, &mut shared).document()
}

/// State shared by a parser and the parsers it starts for included files
/// and environment variable values.
struct Shared {
    /// Canonical paths of the files being parsed, outermost first.
    include_stack: Vec<PathBuf>,
    /// Environment variables whose values are being parsed.
    env_stack: Vec<String>,
    /// Remaining allowance for copies made by variable references.
    copy_budget: usize,
}

struct Parser<'a, 's> {
    cur: Cursor<'a>,
    /// The file being parsed, recorded in items and error locations.
    file: Option<Arc<Path>>,
    /// Directory that relative include paths are resolved against.
    base_dir: PathBuf,
    /// Maps under construction, outermost first; `$name` looks here.
    scopes: Vec<Map>,
    /// Number of maps/arrays (plus includes) enclosing the current value.
    depth: usize,
    shared: &'s mut Shared,
}

impl<'a, 's> Parser<'a, 's> {
    fn new(
        text: &'a str,
        file: Option<&Path>,
        base_dir: PathBuf,
        depth: usize,
        shared: &'s mut Shared,
    ) -> Self {
        Parser {
            cur: Cursor::new(text),
            file: file.map(Arc::from),
            base_dir,
            scopes: Vec::new(),
            depth,
            shared,
        }
    }

    fn location(&self, pos: Pos) -> Location {
        Location::new(self.file.as_deref(), pos.line, pos.column)
    }

    fn error(&self, pos: Pos, message: impl Into<String>) -> ConfigError {
        ConfigError::Syntax {
            location: self.location(pos),
            message: message.into(),
        }
    }

    fn fail<T>(&self, pos: Pos, message: impl Into<String>) -> Result<T> {
        Err(self.error(pos, message))
    }

    fn item(&self, value: Value, pos: Pos) -> Item {
        Item {
            value,
            line: pos.line,
            column: pos.column,
            file: self.file.clone(),
            used_as_variable: false,
        }
    }

    fn insert(&mut self, key: String, item: Item) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(key, item);
        }
    }

    /// Enters a map or array opened at `pos`.
    fn enter(&mut self, pos: Pos) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return self.fail(pos, format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// The whole text as the top-level map.
    fn document(mut self) -> Result<Map> {
        if self.cur.peek() == Some('\u{feff}') {
            self.cur.bump();
        }
        self.scopes.push(Map::new());
        // Top-level braces (JSON style) only group; their keys land in the
        // top-level map. This remembers where each open one is.
        let mut open_braces: Vec<Pos> = Vec::new();
        loop {
            self.cur.skip_blank();
            let pos = self.cur.pos();
            match self.cur.peek() {
                None => {
                    if let Some(open) = open_braces.last() {
                        return self.fail(*open, "unclosed '{': expected '}' before end of file");
                    }
                    break;
                }
                Some('{') => {
                    self.cur.bump();
                    open_braces.push(pos);
                }
                Some('}') => {
                    self.cur.bump();
                    if open_braces.pop().is_none() {
                        self.trailing_braces(pos)?;
                    }
                }
                Some(_) => {
                    let key = self.entry(false)?;
                    self.top_value_end(&key)?;
                }
            }
        }
        Ok(self.scopes.pop().unwrap_or_default())
    }

    /// nats-server tolerates stray `}` at the very end of a file (left over
    /// from JSON-like files); anything else after one is an error.
    fn trailing_braces(&mut self, first: Pos) -> Result<()> {
        loop {
            self.cur.skip_blank();
            match self.cur.peek() {
                None => return Ok(()),
                Some('}') => {
                    self.cur.bump();
                }
                Some(_) => return self.fail(first, "unexpected '}' without a matching '{'"),
            }
        }
    }

    /// After a top-level value: a new line, `;`, `,`, a comment, a closing
    /// top-level brace or the end of the text.
    fn top_value_end(&mut self, key: &str) -> Result<()> {
        self.cur.skip_spaces();
        match self.cur.peek() {
            None | Some('}') => Ok(()),
            Some('\n' | '\r' | ';' | ',') => {
                self.cur.bump();
                Ok(())
            }
            Some(_) if self.cur.at_comment() => Ok(()),
            Some(c) => self.fail(
                self.cur.pos(),
                format!(
                    "expected a new line or ';' after the value of '{key}', found {}",
                    describe(c)
                ),
            ),
        }
    }

    /// One `key value` entry (or an include) into the innermost map.
    /// Returns the key, for messages. Inside a map, the value may start on
    /// a new line after the separator; at the top level it may not.
    fn entry(&mut self, in_map: bool) -> Result<String> {
        let key_pos = self.cur.pos();
        let (key, quoted) = self.key()?;
        if !quoted
            && key.eq_ignore_ascii_case("include")
            && self.cur.peek().is_some_and(char::is_whitespace)
        {
            self.include(key_pos)?;
            return Ok(key);
        }

        self.cur.skip_whitespace();
        let separated = matches!(self.cur.peek(), Some('=' | ':'));
        if separated {
            self.cur.bump();
        }
        if separated && in_map {
            self.cur.skip_whitespace();
        } else {
            self.cur.skip_spaces();
        }

        let value_pos = self.cur.pos();
        if matches!(
            self.cur.peek(),
            None | Some('\n' | '\r' | ';' | ',' | '}' | ']')
        ) {
            return self.fail(value_pos, format!("expected a value after '{key}'"));
        }
        let value = self.value(value_pos)?;
        let item = self.item(value, key_pos);
        self.insert(key.clone(), item);
        Ok(key)
    }

    /// A key: quoted (no escapes) or a run of characters up to whitespace,
    /// `=` or `:`. Returns the key and whether it was quoted.
    fn key(&mut self) -> Result<(String, bool)> {
        let pos = self.cur.pos();
        match self.cur.peek() {
            None => self.fail(pos, "expected a key, found end of file"),
            Some(quote @ ('"' | '\'')) => {
                self.cur.bump();
                let start = self.cur.offset;
                loop {
                    match self.cur.peek() {
                        None => return self.fail(pos, "unterminated quoted key"),
                        Some(c) if c == quote => {
                            let key = self.cur.since(start).to_string();
                            self.cur.bump();
                            return Ok((key, true));
                        }
                        Some(_) => {
                            self.cur.bump();
                        }
                    }
                }
            }
            Some(c @ ('=' | ':' | ',' | ';' | '[' | ']' | '{' | '}')) => {
                self.fail(pos, format!("expected a key, found '{c}'"))
            }
            Some(_) => {
                let start = self.cur.offset;
                while self
                    .cur
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && c != '=' && c != ':')
                {
                    self.cur.bump();
                }
                Ok((self.cur.since(start).to_string(), false))
            }
        }
    }

    /// A value starting at the cursor (which is at `pos`).
    fn value(&mut self, pos: Pos) -> Result<Value> {
        match self.cur.peek() {
            Some('{') => {
                self.cur.bump();
                self.map(pos)
            }
            Some('[') => {
                self.cur.bump();
                self.array(pos)
            }
            Some('"') => {
                self.cur.bump();
                self.double_quoted(pos).map(Value::String)
            }
            Some('\'') => {
                self.cur.bump();
                self.single_quoted(pos).map(Value::String)
            }
            Some('(') => {
                self.cur.bump();
                self.block(pos).map(Value::String)
            }
            _ => self.unquoted(pos),
        }
    }

    /// The rest of a map whose `{` (at `open`) was consumed.
    fn map(&mut self, open: Pos) -> Result<Value> {
        const UNCLOSED: &str = "unclosed '{': expected '}' before end of file";
        self.enter(open)?;
        self.scopes.push(Map::new());
        loop {
            self.cur.skip_blank();
            match self.cur.peek() {
                None => return self.fail(open, UNCLOSED),
                Some('}') => {
                    self.cur.bump();
                    break;
                }
                Some(_) => {}
            }
            let key = self.entry(true)?;
            self.cur.skip_spaces();
            match self.cur.peek() {
                None => return self.fail(open, UNCLOSED),
                Some('}') => {}
                Some('\n' | '\r' | ';' | ',') => {
                    self.cur.bump();
                }
                Some(_) if self.cur.at_comment() => {}
                Some(c) => {
                    return self.fail(
                        self.cur.pos(),
                        format!(
                            "expected ',' or '}}' after the value of '{key}', found {}",
                            describe(c)
                        ),
                    )
                }
            }
        }
        let map = self.scopes.pop().unwrap_or_default();
        self.leave();
        Ok(Value::Map(map))
    }

    /// The rest of an array whose `[` (at `open`) was consumed.
    fn array(&mut self, open: Pos) -> Result<Value> {
        const UNCLOSED: &str = "unclosed '[': expected ']' before end of file";
        self.enter(open)?;
        let mut items = Vec::new();
        loop {
            self.cur.skip_blank();
            let pos = self.cur.pos();
            match self.cur.peek() {
                None => return self.fail(open, UNCLOSED),
                Some(']') => {
                    self.cur.bump();
                    break;
                }
                Some(c @ (',' | ';' | '}')) => {
                    return self.fail(
                        pos,
                        format!("expected a value or ']' in array, found '{c}'"),
                    )
                }
                Some(_) => {}
            }
            let value = self.value(pos)?;
            items.push(self.item(value, pos));
            self.cur.skip_spaces();
            match self.cur.peek() {
                None => return self.fail(open, UNCLOSED),
                Some(']') => {}
                Some('\n' | '\r' | ',') => {
                    self.cur.bump();
                }
                Some(_) if self.cur.at_comment() => {}
                Some(c) => {
                    return self.fail(
                        self.cur.pos(),
                        format!(
                            "expected ',' or ']' after an array value, found {}",
                            describe(c)
                        ),
                    )
                }
            }
        }
        self.leave();
        Ok(Value::Array(items))
    }
}

/// A character for an error message.
fn describe(c: char) -> String {
    match c {
        '\n' | '\r' => "a new line".to_string(),
        c => format!("'{}'", c.escape_debug()),
    }
}

#[cfg(test)]
mod tests {
    use super::include::measure;
    use super::scalars::size_multiplier;
    use super::*;

    #[test]
    fn size_multipliers() {
        assert_eq!(size_multiplier("k"), Some(1000));
        assert_eq!(size_multiplier("kb"), Some(1024));
        assert_eq!(size_multiplier("ki"), Some(1024));
        assert_eq!(size_multiplier("kib"), Some(1024));
        assert_eq!(size_multiplier("m"), Some(1_000_000));
        assert_eq!(size_multiplier("mb"), Some(1 << 20));
        assert_eq!(size_multiplier("g"), Some(1_000_000_000));
        assert_eq!(size_multiplier("gib"), Some(1 << 30));
        assert_eq!(size_multiplier("t"), Some(1_000_000_000_000));
        assert_eq!(size_multiplier("tb"), Some(1 << 40));
        assert_eq!(size_multiplier("p"), Some(1_000_000_000_000_000));
        assert_eq!(size_multiplier("pi"), Some(1 << 50));
        assert_eq!(size_multiplier("e"), Some(1_000_000_000_000_000_000));
        assert_eq!(size_multiplier("eb"), Some(1 << 60));
        assert_eq!(size_multiplier("kbb"), None);
        assert_eq!(size_multiplier("bi"), None);
        assert_eq!(size_multiplier(""), None);
    }

    #[test]
    fn cursor_tracks_lines_and_columns() {
        let mut cur = Cursor::new("aé\nb");
        cur.bump();
        cur.bump();
        assert_eq!((cur.line, cur.column), (1, 3));
        cur.bump();
        assert_eq!((cur.line, cur.column), (2, 1));
        assert_eq!(cur.peek(), Some('b'));
        cur.bump();
        assert_eq!(cur.bump(), None);
    }

    #[test]
    fn measure_counts_nodes_and_depth() {
        let doc = parse("a = [1, {b = [2]}, 'x']", None).unwrap();
        let (cost, depth) = measure(&doc.get("a").unwrap().value);
        assert_eq!(depth, 3);
        assert_eq!(cost, 6);
    }
}

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

use std::env::{self, VarError};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ConfigError, Location};
use crate::value::{Item, Map, Value};

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

#[derive(Debug, Clone, Copy)]
struct Pos {
    line: usize,
    column: usize,
}

/// A position in the text, tracking line and column.
struct Cursor<'a> {
    src: &'a str,
    offset: usize,
    line: usize,
    column: usize,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a str) -> Self {
        Cursor {
            src,
            offset: 0,
            line: 1,
            column: 1,
        }
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.offset..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.rest().chars();
        chars.next();
        chars.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    /// The text between an earlier offset and here.
    fn since(&self, start: usize) -> &'a str {
        self.src.get(start..self.offset).unwrap_or("")
    }

    fn at_comment(&self) -> bool {
        match self.peek() {
            Some('#') => true,
            Some('/') => self.peek_second() == Some('/'),
            _ => false,
        }
    }

    /// Skips to the end of the line, leaving the newline.
    fn skip_line(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    /// Skips spaces and tabs.
    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    /// Skips all whitespace, including new lines.
    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Skips whitespace, new lines and comments.
    fn skip_blank(&mut self) {
        loop {
            if self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            } else if self.at_comment() {
                self.skip_line();
            } else {
                break;
            }
        }
    }
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

    /// The rest of a `"..."` string opened at `open`.
    fn double_quoted(&mut self, open: Pos) -> Result<String> {
        let mut bytes = Vec::new();
        loop {
            match self.cur.peek() {
                None => return self.fail(open, "unterminated string: missing closing '\"'"),
                Some('"') => {
                    self.cur.bump();
                    break;
                }
                Some('\\') => {
                    let at = self.cur.pos();
                    self.cur.bump();
                    self.escape(at, &mut bytes)?;
                }
                Some(c) => {
                    self.cur.bump();
                    push_char(&mut bytes, c);
                }
            }
        }
        self.utf8(bytes, open)
    }

    /// The rest of a `'...'` string opened at `open`; no escapes.
    fn single_quoted(&mut self, open: Pos) -> Result<String> {
        let start = self.cur.offset;
        loop {
            match self.cur.peek() {
                None => return self.fail(open, "unterminated string: missing closing \"'\""),
                Some('\'') => {
                    let text = self.cur.since(start).to_string();
                    self.cur.bump();
                    return Ok(text);
                }
                Some(_) => {
                    self.cur.bump();
                }
            }
        }
    }

    /// The rest of a `( ... )` block string opened at `open`. It ends at a
    /// `)` alone at the start of a line; the text keeps the new lines after
    /// `(` and before `)`.
    fn block(&mut self, open: Pos) -> Result<String> {
        let start = self.cur.offset;
        loop {
            match self.cur.bump() {
                None => {
                    return self.fail(
                        open,
                        "unterminated block string: expected ')' alone on a line",
                    )
                }
                Some('\n') if self.cur.peek() == Some(')') => {
                    let after = self.cur.rest().get(1..).unwrap_or("");
                    if after.is_empty() || after.starts_with('\n') || after.starts_with("\r\n") {
                        let text = self.cur.since(start).to_string();
                        self.cur.bump();
                        return Ok(text);
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// One escape sequence; the backslash (at `at`) was consumed.
    fn escape(&mut self, at: Pos, bytes: &mut Vec<u8>) -> Result<()> {
        match self.cur.bump() {
            Some('t') => bytes.push(b'\t'),
            Some('n') => bytes.push(b'\n'),
            Some('r') => bytes.push(b'\r'),
            Some('"') => bytes.push(b'"'),
            Some('\\') => bytes.push(b'\\'),
            Some('x') => {
                // Only two hex digits, so this always fits in a byte.
                let byte = self.hex(at, 'x', 2)?;
                bytes.push(byte as u8);
            }
            Some('u') => {
                let code = self.hex(at, 'u', 4)?;
                match char::from_u32(code) {
                    Some(c) => push_char(bytes, c),
                    None => {
                        return self.fail(at, format!("invalid unicode escape '\\u{code:04x}'"))
                    }
                }
            }
            None => return self.fail(at, "incomplete escape sequence at end of file"),
            Some(c) => {
                const ALLOWED: &str = r#"\t, \n, \r, \", \\, \xXX and \uXXXX"#;
                let message = format!(
                    "invalid escape {}: allowed are {ALLOWED}",
                    describe_escape(c)
                );
                return self.fail(at, message);
            }
        }
        Ok(())
    }

    /// `count` hexadecimal digits after `\x` or `\u`.
    fn hex(&mut self, at: Pos, letter: char, count: usize) -> Result<u32> {
        let mut code = 0u32;
        for _ in 0..count {
            match self.cur.peek().and_then(|c| c.to_digit(16)) {
                Some(digit) => {
                    self.cur.bump();
                    code = code * 16 + digit;
                }
                None => {
                    return self.fail(
                        at,
                        format!("expected {count} hexadecimal digits after '\\{letter}'"),
                    )
                }
            }
        }
        Ok(code)
    }

    fn utf8(&self, bytes: Vec<u8>, pos: Pos) -> Result<String> {
        String::from_utf8(bytes)
            .or_else(|_| self.fail(pos, "string is not valid utf-8 after applying \\x escapes"))
    }

    /// An unquoted value, read up to a space, tab, new line, `,`, `;`, `]`
    /// or `}` (a `'` also ends it and is dropped, as in nats-server), then
    /// classified.
    fn unquoted(&mut self, pos: Pos) -> Result<Value> {
        let start = self.cur.offset;
        // Only allocated once an escape shows up.
        let mut unescaped: Option<Vec<u8>> = None;
        let end;
        loop {
            match self.cur.peek() {
                None | Some('\n' | '\r' | ' ' | '\t' | ';' | ',' | ']' | '}') => {
                    end = self.cur.offset;
                    break;
                }
                Some('\'') => {
                    end = self.cur.offset;
                    self.cur.bump();
                    break;
                }
                Some('\\') => {
                    let at = self.cur.pos();
                    let bytes =
                        unescaped.get_or_insert_with(|| self.cur.since(start).as_bytes().to_vec());
                    self.cur.bump();
                    self.escape(at, bytes)?;
                }
                Some(c) => {
                    self.cur.bump();
                    if let Some(bytes) = unescaped.as_mut() {
                        push_char(bytes, c);
                    }
                }
            }
        }
        if let Some(bytes) = unescaped {
            return self.utf8(bytes, pos).map(Value::String);
        }

        let text = self.cur.src.get(start..end).unwrap_or("");
        if text.is_empty() {
            return self.fail(pos, "expected a value");
        }
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => return Ok(Value::Bool(true)),
            "false" | "no" | "off" => return Ok(Value::Bool(false)),
            _ => {}
        }
        if let Some(name) = text.strip_prefix('$') {
            if is_bcrypt_hash(name) {
                return Ok(Value::String(text.to_string()));
            }
            return self.variable(name, pos);
        }
        if let Some(number) = self.number(text, pos)? {
            return Ok(number);
        }
        Ok(Value::String(text.to_string()))
    }

    /// Integers (`-12`), sizes (`4k`, `1MB`) and floats (`0.5`); `None` for
    /// anything else, which then stays a string (`127.0.0.1:4222`, `3xyz`).
    fn number(&self, text: &str, pos: Pos) -> Result<Option<Value>> {
        let unsigned = text.strip_prefix('-').unwrap_or(text);
        let int_len = unsigned.bytes().take_while(u8::is_ascii_digit).count();
        if int_len == 0 {
            let after_dot = unsigned.strip_prefix('.').unwrap_or("");
            if !after_dot.is_empty() && after_dot.bytes().all(|b| b.is_ascii_digit()) {
                return self.fail(
                    pos,
                    format!("floats must start with a digit, write '0{unsigned}'"),
                );
            }
            return Ok(None);
        }
        let (sign_and_digits, suffix) = text.split_at(text.len() - unsigned.len() + int_len);
        let out_of_range = || self.error(pos, format!("integer '{text}' is out of range"));

        if suffix.is_empty() {
            return sign_and_digits
                .parse::<i64>()
                .map(|n| Some(Value::Integer(n)))
                .map_err(|_| out_of_range());
        }
        if let Some(fraction) = suffix.strip_prefix('.') {
            if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(None);
            }
            return match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Some(Value::Float(f))),
                _ => self.fail(pos, format!("float '{text}' is out of range")),
            };
        }

        let mut suffix_chars = suffix.chars();
        let looks_like_size = suffix_chars
            .next()
            .is_some_and(|c| "kKmMgGtTpPeE".contains(c))
            && suffix_chars.all(|c| "bBiI".contains(c));
        if !looks_like_size {
            return Ok(None);
        }
        let Some(multiplier) = size_multiplier(&suffix.to_ascii_lowercase()) else {
            return self.fail(
                pos,
                format!("invalid size suffix '{suffix}' in '{text}', use k, kb, m, mb, g, gb, ..."),
            );
        };
        let base: i64 = sign_and_digits.parse().map_err(|_| out_of_range())?;
        base.checked_mul(multiplier)
            .map(|n| Some(Value::Integer(n)))
            .ok_or_else(out_of_range)
    }

    /// Resolves `$name` at `pos`: an earlier key in the innermost enclosing
    /// map that has it, else the environment.
    fn variable(&mut self, name: &str, pos: Pos) -> Result<Value> {
        let mut copy: Option<std::result::Result<Value, String>> = None;
        for scope in self.scopes.iter_mut().rev() {
            if let Some(item) = scope.get_exact_mut(name) {
                item.used_as_variable = true;
                let (cost, depth) = measure(&item.value);
                copy = Some(if self.depth + depth > MAX_DEPTH {
                    Err(format!(
                        "variable '${name}' would nest values deeper than {MAX_DEPTH} levels"
                    ))
                } else if cost > self.shared.copy_budget {
                    Err("variables expand to too much data".to_string())
                } else {
                    self.shared.copy_budget -= cost;
                    Ok(item.value.clone())
                });
                break;
            }
        }
        match copy {
            Some(Ok(value)) => Ok(value),
            Some(Err(message)) => self.fail(pos, message),
            None => self.environment_variable(name, pos),
        }
    }

    fn environment_variable(&mut self, name: &str, pos: Pos) -> Result<Value> {
        let undefined = || ConfigError::UndefinedVariable {
            location: self.location(pos),
            name: name.to_string(),
        };
        // Names the platform cannot look up cannot be defined.
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(undefined());
        }
        if self.shared.env_stack.iter().any(|n| n == name) {
            return self.fail(
                pos,
                format!("environment variable '{name}' refers to itself"),
            );
        }
        let text = match env::var(name) {
            Ok(text) => text,
            Err(VarError::NotPresent) => return Err(undefined()),
            Err(VarError::NotUnicode(_)) => {
                return self.fail(
                    pos,
                    format!("environment variable '{name}' is not valid unicode"),
                )
            }
        };
        if text.is_empty() {
            return Ok(Value::String(String::new()));
        }

        // The value is parsed like the right-hand side of an assignment,
        // in a scope of its own, so "22" is an integer and "'22'" a string.
        self.shared.env_stack.push(name.to_string());
        let result = {
            let mut sub = Parser::new(
                &text,
                None,
                self.base_dir.clone(),
                self.depth + 1,
                &mut *self.shared,
            );
            sub.scopes.push(Map::new());
            sub.lone_value()
        };
        self.shared.env_stack.pop();
        result.map_err(|error| {
            self.error(
                pos,
                format!("environment variable '{name}' does not hold a valid value: {error}"),
            )
        })
    }

    /// The text as a single value (used for environment variables).
    fn lone_value(&mut self) -> Result<Value> {
        self.cur.skip_spaces();
        let pos = self.cur.pos();
        if matches!(
            self.cur.peek(),
            None | Some('\n' | '\r' | ';' | ',' | '}' | ']')
        ) {
            return self.fail(pos, "expected a value");
        }
        let value = self.value(pos)?;
        self.cur.skip_spaces();
        if matches!(self.cur.peek(), Some(';' | ',')) {
            self.cur.bump();
        }
        self.cur.skip_blank();
        if self.cur.peek().is_some() {
            return self.fail(self.cur.pos(), "unexpected text after the value");
        }
        Ok(value)
    }

    /// `include path`: the keyword (at `key_pos`) was consumed.
    fn include(&mut self, key_pos: Pos) -> Result<()> {
        self.cur.skip_spaces();
        let pos = self.cur.pos();
        let name = match self.cur.peek() {
            None | Some('\n' | '\r') => {
                return self.fail(pos, "expected a file name after 'include'")
            }
            Some(c @ ('[' | '{' | '(' | '\\')) => {
                return self.fail(
                    pos,
                    format!("expected a file name after 'include', found '{c}'"),
                )
            }
            Some(quote @ ('"' | '\'')) => {
                self.cur.bump();
                let start = self.cur.offset;
                loop {
                    match self.cur.peek() {
                        None => return self.fail(pos, "unterminated include file name"),
                        Some(c) if c == quote => {
                            let name = self.cur.since(start).to_string();
                            self.cur.bump();
                            break name;
                        }
                        Some(_) => {
                            self.cur.bump();
                        }
                    }
                }
            }
            Some(_) => {
                let start = self.cur.offset;
                loop {
                    match self.cur.peek() {
                        None | Some('\n' | '\r' | ' ' | '\t' | ';' | ',' | '}') => {
                            break self.cur.since(start).to_string()
                        }
                        Some('\'') => {
                            let name = self.cur.since(start).to_string();
                            self.cur.bump();
                            break name;
                        }
                        Some(_) => {
                            self.cur.bump();
                        }
                    }
                }
            }
        };
        if name.is_empty() {
            return self.fail(pos, "empty file name after 'include'");
        }
        self.include_file(&name, key_pos)
    }

    /// Parses the file `name` and merges its top-level keys into the
    /// innermost map.
    fn include_file(&mut self, name: &str, key_pos: Pos) -> Result<()> {
        let written = Path::new(name);
        let location = self.location(key_pos);
        let wrap = |error: ConfigError| ConfigError::Include {
            location: location.clone(),
            path: written.to_path_buf(),
            error: Box::new(error),
        };
        if self.depth >= MAX_DEPTH {
            return self.fail(
                key_pos,
                format!("includes nested deeper than {MAX_DEPTH} levels"),
            );
        }
        let full = if written.is_absolute() {
            written.to_path_buf()
        } else {
            self.base_dir.join(written)
        };
        let id = identity(&full);
        if self.shared.include_stack.contains(&id) {
            return self.fail(
                key_pos,
                format!("include cycle: '{name}' is already being parsed"),
            );
        }
        let text = read_regular_file(&full).map_err(|error| {
            wrap(ConfigError::Io {
                path: full.clone(),
                error,
            })
        })?;

        self.shared.include_stack.push(id);
        let result = Parser::new(
            &text,
            Some(&full),
            parent_dir(&full),
            self.depth + 1,
            &mut *self.shared,
        )
        .document();
        self.shared.include_stack.pop();

        for (key, item) in result.map_err(wrap)?.into_entries() {
            self.insert(key, item);
        }
        Ok(())
    }
}

/// `1k` style multipliers, keyed by the lowercased suffix: a bare letter
/// is a power of 1000, with `b`, `i` or `ib` a power of 1024.
fn size_multiplier(suffix: &str) -> Option<i64> {
    let (letter, rest) = suffix.split_at(suffix.len().min(1));
    let power = match letter {
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        "e" => 6,
        _ => return None,
    };
    let base: i64 = match rest {
        "" => 1000,
        "b" | "i" | "ib" => 1024,
        _ => return None,
    };
    Some(base.pow(power))
}

/// `$2a$...` and friends are bcrypt hashes used as passwords, not variables.
fn is_bcrypt_hash(name: &str) -> bool {
    ["2a$", "2b$", "2x$", "2y$"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Cost (for the copy budget) and nesting depth of a value.
fn measure(value: &Value) -> (usize, usize) {
    let children: Box<dyn Iterator<Item = &Item>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Map(map) => Box::new(map.iter().map(|(_, item)| item)),
        Value::String(s) => return (1 + s.len() / 64, 0),
        _ => return (1, 0),
    };
    let (mut cost, mut depth) = (1usize, 0usize);
    for item in children {
        let (c, d) = measure(&item.value);
        cost = cost.saturating_add(c);
        depth = depth.max(d);
    }
    (cost, depth + 1)
}

fn push_char(bytes: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// A character for an error message.
fn describe(c: char) -> String {
    match c {
        '\n' | '\r' => "a new line".to_string(),
        c => format!("'{}'", c.escape_debug()),
    }
}

fn describe_escape(c: char) -> String {
    match c {
        '\n' | '\r' => "'\\' before a new line".to_string(),
        c => format!("'\\{}'", c.escape_debug()),
    }
}

/// Reads an included file. Devices, pipes and directories are refused so
/// that an include can neither block nor read forever (`/dev/zero`).
fn read_regular_file(path: &Path) -> std::io::Result<String> {
    if !fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    fs::read_to_string(path)
}

/// The directory relative includes of `file` are resolved against.
fn parent_dir(file: &Path) -> PathBuf {
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A stable identity for include-cycle detection.
fn identity(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
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

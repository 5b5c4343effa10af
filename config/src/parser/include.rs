//! References to other text: `$variables` (earlier keys, else the environment, whose values
//! are parsed in turn) and `include` files, with the limits that keep them finite.

use std::env::{self, VarError};
use std::fs;
use std::path::{Path, PathBuf};

use super::{Parser, Pos, Result, MAX_DEPTH};
use crate::error::ConfigError;
use crate::value::{Item, Map, Value};

impl Parser<'_, '_> {
    /// Resolves `$name` at `pos`: an earlier key in the innermost enclosing
    /// map that has it, else the environment.
    pub(super) fn variable(&mut self, name: &str, pos: Pos) -> Result<Value> {
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

    pub(super) fn environment_variable(&mut self, name: &str, pos: Pos) -> Result<Value> {
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
    pub(super) fn lone_value(&mut self) -> Result<Value> {
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
    pub(super) fn include(&mut self, key_pos: Pos) -> Result<()> {
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
    pub(super) fn include_file(&mut self, name: &str, key_pos: Pos) -> Result<()> {
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

/// Cost (for the copy budget) and nesting depth of a value.
pub(super) fn measure(value: &Value) -> (usize, usize) {
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

/// Reads an included file. Devices, pipes and directories are refused so
/// that an include can neither block nor read forever (`/dev/zero`).
pub(super) fn read_regular_file(path: &Path) -> std::io::Result<String> {
    if !fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    fs::read_to_string(path)
}

/// The directory relative includes of `file` are resolved against.
pub(super) fn parent_dir(file: &Path) -> PathBuf {
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A stable identity for include-cycle detection.
pub(super) fn identity(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

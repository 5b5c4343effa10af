//! The value tree produced by the parser: [`Value`], [`Item`] and [`Map`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::duration::{duration_from_secs_f64, parse_duration};
use crate::ConfigError;

/// A configuration value.
///
/// Sizes such as `1MB` are already multiplied out into [`Value::Integer`];
/// durations such as `"2m"` stay strings (see [`Value::as_duration`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted, unquoted or block string.
    String(String),
    /// A whole number, possibly written with a size suffix (`4k`, `1MB`).
    Integer(i64),
    /// A number with a fractional part, like `0.5`.
    Float(f64),
    /// `true`/`false`, `yes`/`no`, `on`/`off` (any case), unquoted.
    Bool(bool),
    /// `[ ... ]`; each element keeps its own position.
    Array(Vec<Item>),
    /// `{ ... }`.
    Map(Map),
}

impl Value {
    /// The string, if this is a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a [`Value::Integer`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The number, if this is a [`Value::Float`] or a [`Value::Integer`]
    /// (converted).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Integer(n) => Some(*n as f64),
            _ => None,
        }
    }

    /// The flag, if this is a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if this is a [`Value::Array`].
    pub fn as_array(&self) -> Option<&[Item]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The map, if this is a [`Value::Map`].
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }

    /// Interprets the value as a duration the way nats-server does: a string
    /// goes through [`parse_duration`], an integer or float is a number of
    /// seconds. Negative numbers and other kinds of value are rejected.
    pub fn as_duration(&self) -> Result<Duration, ConfigError> {
        let invalid = |input: String, reason: &str| ConfigError::InvalidDuration {
            input,
            reason: reason.to_string(),
        };
        match self {
            Value::String(s) => parse_duration(s),
            Value::Integer(n) => u64::try_from(*n)
                .map(Duration::from_secs)
                .map_err(|_| invalid(n.to_string(), "negative durations are not supported")),
            Value::Float(f) => duration_from_secs_f64(*f).ok_or_else(|| {
                invalid(
                    f.to_string(),
                    "expected a non-negative number of seconds in range",
                )
            }),
            other => Err(invalid(
                other.type_name().to_string(),
                "expected a string like \"2m\" or a number of seconds",
            )),
        }
    }

    /// A lowercase name for the kind of value (`"string"`, `"integer"`,
    /// `"float"`, `"boolean"`, `"array"` or `"map"`), handy for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }
}

/// A value together with where it was defined.
///
/// For a map entry the position is that of its key; for an array element
/// it is that of the element itself. Lines and columns are 1-based and
/// columns count characters.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The value.
    pub value: Value,
    /// 1-based line of the key (map entry) or of the value (array element).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The file the item was read from: `None` for text given to
    /// [`crate::parse_str`], otherwise the parsed file or the included file
    /// that defined it.
    pub file: Option<Arc<Path>>,
    /// Whether a later `$name` reference used this map entry as a
    /// variable. nats-server does not report such entries as unknown keys.
    pub used_as_variable: bool,
}

impl Item {
    /// An item at `line`/`column`, with no file and not used as a variable.
    pub fn new(value: Value, line: usize, column: usize) -> Self {
        Item {
            value,
            line,
            column,
            file: None,
            used_as_variable: false,
        }
    }

    /// See [`Value::as_str`].
    pub fn as_str(&self) -> Option<&str> {
        self.value.as_str()
    }

    /// See [`Value::as_i64`].
    pub fn as_i64(&self) -> Option<i64> {
        self.value.as_i64()
    }

    /// See [`Value::as_f64`].
    pub fn as_f64(&self) -> Option<f64> {
        self.value.as_f64()
    }

    /// See [`Value::as_bool`].
    pub fn as_bool(&self) -> Option<bool> {
        self.value.as_bool()
    }

    /// See [`Value::as_array`].
    pub fn as_array(&self) -> Option<&[Item]> {
        self.value.as_array()
    }

    /// See [`Value::as_map`].
    pub fn as_map(&self) -> Option<&Map> {
        self.value.as_map()
    }

    /// See [`Value::as_duration`].
    pub fn as_duration(&self) -> Result<Duration, ConfigError> {
        self.value.as_duration()
    }
}

/// An ordered map from keys to [`Item`]s.
///
/// Keys are stored as written. When the same key (exact spelling) is
/// defined twice, the later definition replaces the earlier one and moves to
/// the later position, as the last assignment wins in nats-server.
#[derive(Debug, Clone, Default)]
pub struct Map {
    /// Entries in definition order; `None` marks a replaced entry.
    slots: Vec<Option<(String, Item)>>,
    /// Exact key to its index in `slots`.
    index: HashMap<String, usize>,
}

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Map::default()
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Looks a key up ignoring case, the way nats-server matches option
    /// names. If several spellings exist (`Port` and `port`), the one
    /// defined last wins.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.slots
            .iter()
            .rev()
            .flatten()
            .find(|(k, _)| eq_ignore_case(k, key))
            .map(|(_, item)| item)
    }

    /// Looks a key up with its exact spelling, as `$variable` references do.
    pub fn get_exact(&self, key: &str) -> Option<&Item> {
        let at = *self.index.get(key)?;
        self.slots[at].as_ref().map(|(_, item)| item)
    }

    pub(crate) fn get_exact_mut(&mut self, key: &str) -> Option<&mut Item> {
        let at = *self.index.get(key)?;
        self.slots[at].as_mut().map(|(_, item)| item)
    }

    /// Adds an entry at the end, replacing (and returning) any entry with
    /// exactly the same key.
    pub fn insert(&mut self, key: impl Into<String>, item: Item) -> Option<Item> {
        let key = key.into();
        let previous = match self.index.get(&key) {
            Some(&at) => self.slots[at].take().map(|(_, old)| old),
            None => None,
        };
        self.index.insert(key.clone(), self.slots.len());
        self.slots.push(Some((key, item)));
        previous
    }

    /// Entries in file order (the position of each key's last definition).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Item)> + '_ {
        self.slots
            .iter()
            .flatten()
            .map(|(key, item)| (key.as_str(), item))
    }

    /// Entries in file order, by value.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (String, Item)> {
        self.slots.into_iter().flatten()
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a str, &'a Item);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a Item)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i64) -> Item {
        Item::new(Value::Integer(n), 1, 1)
    }

    #[test]
    fn later_definition_replaces_and_moves() {
        let mut map = Map::new();
        map.insert("a", int(1));
        map.insert("b", int(2));
        assert_eq!(
            map.insert("a", int(3)).map(|i| i.value),
            Some(Value::Integer(1))
        );
        let keys: Vec<_> = map.iter().map(|(k, i)| (k, i.as_i64().unwrap())).collect();
        assert_eq!(keys, vec![("b", 2), ("a", 3)]);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn get_ignores_case_and_prefers_last_spelling() {
        let mut map = Map::new();
        map.insert("port", int(1));
        map.insert("Port", int(2));
        assert_eq!(map.get("PORT").and_then(Item::as_i64), Some(2));
        assert_eq!(map.get("port").and_then(Item::as_i64), Some(2));
        assert_eq!(map.get_exact("port").and_then(Item::as_i64), Some(1));
        map.insert("port", int(3));
        assert_eq!(map.get("port").and_then(Item::as_i64), Some(3));
        assert!(map.get("missing").is_none());
    }

    #[test]
    fn maps_compare_by_entries_in_order() {
        let mut a = Map::new();
        a.insert("x", int(1));
        a.insert("x", int(2));
        let mut b = Map::new();
        b.insert("x", int(2));
        assert_eq!(a, b);
        b.insert("y", int(2));
        assert_ne!(a, b);
    }

    #[test]
    fn durations_from_values() {
        assert_eq!(
            Value::String("2m".into()).as_duration().unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            Value::Integer(30).as_duration().unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            Value::Float(0.5).as_duration().unwrap(),
            Duration::from_millis(500)
        );
        assert!(Value::Integer(-1).as_duration().is_err());
        assert!(Value::Float(f64::NAN).as_duration().is_err());
        assert!(Value::Bool(true).as_duration().is_err());
    }
}

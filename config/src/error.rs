//! Error type returned by the parser and by [`crate::parse_duration`].

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a configuration file: the file (when known), a 1-based line
/// and a 1-based column counted in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file the position refers to; `None` when parsing a string.
    pub file: Option<PathBuf>,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number, counted in characters (a tab counts as one).
    pub column: usize,
}

impl Location {
    pub(crate) fn new(file: Option<&Path>, line: usize, column: usize) -> Self {
        Location {
            file: file.map(Path::to_path_buf),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    /// Formats as `file:line:column`, or `line:column` without a file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{}:{}", file.display(), self.line, self.column),
            None => write!(f, "{}:{}", self.line, self.column),
        }
    }
}

/// Everything that can go wrong while reading a configuration.
///
/// Messages are lowercase and, except for [`ConfigError::InvalidDuration`]
/// and [`ConfigError::Io`], start with the [`Location`] of the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file (the main one or an included one) could not be read.
    #[error("cannot read '{}': {error}", path.display())]
    Io {
        /// The path that was opened.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },

    /// The text does not follow the configuration syntax, a number is out of
    /// range, nesting is too deep, or an environment variable holds a value
    /// that cannot be parsed.
    #[error("{location}: {message}")]
    Syntax {
        /// Where the problem was found.
        location: Location,
        /// Short lowercase description.
        message: String,
    },

    /// A `$name` reference matches neither an earlier key in an enclosing
    /// map nor an environment variable.
    #[error("{location}: undefined variable '${name}'")]
    UndefinedVariable {
        /// Where the reference appears.
        location: Location,
        /// The variable name, without the `$`.
        name: String,
    },

    /// An `include` directive failed: the file is missing, unreadable, part
    /// of an include cycle, or contains an error itself.
    #[error("{location}: cannot include '{}': {error}", path.display())]
    Include {
        /// Where the `include` directive appears.
        location: Location,
        /// The path as written after `include`.
        path: PathBuf,
        /// What went wrong with the included file.
        error: Box<ConfigError>,
    },

    /// A duration string is not valid Go duration syntax (see
    /// [`crate::parse_duration`]).
    #[error("invalid duration '{input}': {reason}")]
    InvalidDuration {
        /// The text that was rejected.
        input: String,
        /// Short lowercase explanation.
        reason: String,
    },
}

impl ConfigError {
    /// Where the error was detected, if it refers to a place in a file.
    ///
    /// For [`ConfigError::Include`] this is the location of the `include`
    /// directive; the nested error carries the location inside the included
    /// file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { location, .. }
            | ConfigError::UndefinedVariable { location, .. }
            | ConfigError::Include { location, .. } => Some(location),
            ConfigError::Io { .. } | ConfigError::InvalidDuration { .. } => None,
        }
    }
}

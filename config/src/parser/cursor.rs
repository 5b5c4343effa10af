//! Reading characters, with line and column positions.

#[derive(Debug, Clone, Copy)]
pub(super) struct Pos {
    pub(super) line: usize,
    pub(super) column: usize,
}

/// A position in the text, tracking line and column.
pub(super) struct Cursor<'a> {
    pub(super) src: &'a str,
    pub(super) offset: usize,
    pub(super) line: usize,
    pub(super) column: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Cursor {
            src,
            offset: 0,
            line: 1,
            column: 1,
        }
    }

    pub(super) fn rest(&self) -> &'a str {
        self.src.get(self.offset..).unwrap_or("")
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(super) fn peek_second(&self) -> Option<char> {
        let mut chars = self.rest().chars();
        chars.next();
        chars.next()
    }

    pub(super) fn bump(&mut self) -> Option<char> {
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

    pub(super) fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    /// The text between an earlier offset and here.
    pub(super) fn since(&self, start: usize) -> &'a str {
        self.src.get(start..self.offset).unwrap_or("")
    }

    pub(super) fn at_comment(&self) -> bool {
        match self.peek() {
            Some('#') => true,
            Some('/') => self.peek_second() == Some('/'),
            _ => false,
        }
    }

    /// Skips to the end of the line, leaving the newline.
    pub(super) fn skip_line(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    /// Skips spaces and tabs.
    pub(super) fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    /// Skips all whitespace, including new lines.
    pub(super) fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Skips whitespace, new lines and comments.
    pub(super) fn skip_blank(&mut self) {
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

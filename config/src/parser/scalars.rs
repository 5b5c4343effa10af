//! Scalars: quoted and block strings with their escapes, and unquoted values classified
//! after reading (booleans, variables, numbers with size suffixes, strings).

use super::{Parser, Pos, Result};
use crate::value::Value;

impl Parser<'_, '_> {
    /// The rest of a `"..."` string opened at `open`.
    pub(super) fn double_quoted(&mut self, open: Pos) -> Result<String> {
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
    pub(super) fn single_quoted(&mut self, open: Pos) -> Result<String> {
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
    pub(super) fn block(&mut self, open: Pos) -> Result<String> {
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
    pub(super) fn escape(&mut self, at: Pos, bytes: &mut Vec<u8>) -> Result<()> {
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
    pub(super) fn hex(&mut self, at: Pos, letter: char, count: usize) -> Result<u32> {
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

    pub(super) fn utf8(&self, bytes: Vec<u8>, pos: Pos) -> Result<String> {
        String::from_utf8(bytes)
            .or_else(|_| self.fail(pos, "string is not valid utf-8 after applying \\x escapes"))
    }

    /// An unquoted value, read up to a space, tab, new line, `,`, `;`, `]`
    /// or `}` (a `'` also ends it and is dropped, as in nats-server), then
    /// classified.
    pub(super) fn unquoted(&mut self, pos: Pos) -> Result<Value> {
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
    pub(super) fn number(&self, text: &str, pos: Pos) -> Result<Option<Value>> {
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
}

/// `1k` style multipliers, keyed by the lowercased suffix: a bare letter
/// is a power of 1000, with `b`, `i` or `ib` a power of 1024.
pub(super) fn size_multiplier(suffix: &str) -> Option<i64> {
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
pub(super) fn is_bcrypt_hash(name: &str) -> bool {
    ["2a$", "2b$", "2x$", "2y$"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

pub(super) fn push_char(bytes: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

pub(super) fn describe_escape(c: char) -> String {
    match c {
        '\n' | '\r' => "'\\' before a new line".to_string(),
        c => format!("'\\{}'", c.escape_debug()),
    }
}

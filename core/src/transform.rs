//! Subject transforms, as nats-server defines them for subject mappings, a stream's
//! `subject_transform` and its `republish`: a source subject (its `*` and `>` wildcards are
//! numbered from 1, left to right) and a destination whose tokens are literals, `$n` (the
//! `n`th wildcard's token), a trailing `>`, or a mapping function in double braces:
//!
//! | function | token |
//! |---|---|
//! | `{{wildcard(n)}}` | the `n`th wildcard's token |
//! | `{{partition(p, n...)}}` | FNV-1a of the named wildcards' tokens (of the whole subject when none) modulo `p` |
//! | `{{splitFromLeft(n, i)}}`, `{{splitFromRight(n, i)}}` | the token cut in two `i` bytes from an end |
//! | `{{sliceFromLeft(n, s)}}`, `{{sliceFromRight(n, s)}}` | the token cut in pieces of `s` bytes |
//! | `{{split(n, d)}}` | the token split at every `d` (empty pieces dropped) |
//! | `{{left(n, s)}}`, `{{right(n, s)}}` | the first or last `s` bytes of the token |
//! | `{{random(p)}}` | a random number below `p` |
//!
//! Errors read as nats-server's (`invalid mapping destination: ... in <token>`).

use std::fmt;

/// Why a transform cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformError {
    /// The source or destination is not a valid subject, the destination has a `*`, or only
    /// one of them ends in `>`.
    BadSubject,
    /// A destination token is wrong: what is wrong, and the token.
    Destination(&'static str, String),
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformError::BadSubject => f.write_str("invalid subject"),
            TransformError::Destination(what, token) if token.is_empty() => {
                write!(f, "invalid mapping destination: {what}")
            }
            TransformError::Destination(what, token) => {
                write!(f, "invalid mapping destination: {what} in {token}")
            }
        }
    }
}

impl std::error::Error for TransformError {}

const UNKNOWN: &str = "unknown function";
const OUT_OF_RANGE: &str = "wildcard index out of range";
const NOT_ENOUGH: &str = "not enough arguments passed to the function";
const TOO_MANY: &str = "too many arguments passed to the function";
const INVALID_ARG: &str = "function argument is invalid or in the wrong format";
const INVALID: &str = "invalid transform";

/// One destination token. Token positions are indexes into the subject's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The trailing `>`: the subject's tokens from the source's `>` on.
    Rest,
    Token(usize),
    /// Bucket count, and the tokens hashed (none: the whole subject).
    Partition(u32, Vec<usize>),
    SplitFromLeft(usize, i32),
    SplitFromRight(usize, i32),
    SliceFromLeft(usize, i32),
    SliceFromRight(usize, i32),
    Split(usize, String),
    Left(usize, i32),
    Right(usize, i32),
    Random(u32),
}

/// A parsed destination token before its wildcard numbers are resolved to positions.
enum Parsed {
    Literal,
    /// Function, wildcard numbers, integer argument, string argument.
    Func(Func, Vec<usize>, i64, String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Func {
    Wildcard,
    Partition,
    SplitFromLeft,
    SplitFromRight,
    SliceFromLeft,
    SliceFromRight,
    Split,
    Left,
    Right,
    Random,
}

/// A subject transform. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    src: String,
    src_tokens: usize,
    parts: Vec<Part>,
    identity: bool,
}

fn subject_info(s: &str) -> Option<(Vec<&str>, usize, bool)> {
    if s.is_empty() {
        return None;
    }
    let tokens: Vec<&str> = s.split('.').collect();
    let (mut pwcs, mut fwc) = (0, false);
    for t in &tokens {
        if t.is_empty() || fwc {
            return None;
        }
        match *t {
            ">" => fwc = true,
            "*" => pwcs += 1,
            _ => {}
        }
    }
    Some((tokens, pwcs, fwc))
}

/// The arguments of `{{name(args)}}` when `token` calls `name` (case-insensitive, spaces
/// allowed around the name and the parentheses).
fn call_args<'t>(token: &'t str, name: &str) -> Option<Vec<&'t str>> {
    let inner = token.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let open = inner.find('(')?;
    if !inner[..open].trim_end().eq_ignore_ascii_case(name) {
        return None;
    }
    let args = inner[open + 1..].trim_end().strip_suffix(')')?;
    Some(args.split(',').map(str::trim).collect())
}

fn int_arg(token: &str, a: &str) -> Result<i64, TransformError> {
    a.parse::<i64>()
        .map_err(|_| TransformError::Destination(INVALID_ARG, token.to_string()))
}

/// Reads one destination token.
fn parse_token(token: &str) -> Result<Parsed, TransformError> {
    let bad = |what| Err(TransformError::Destination(what, token.to_string()));
    if token.len() > 1 && token.starts_with('$') {
        // `$n`; other tokens that start with `$` are literals.
        return Ok(match token[1..].parse::<usize>() {
            Ok(n) => Parsed::Func(Func::Wildcard, vec![n], -1, String::new()),
            Err(_) => Parsed::Literal,
        });
    }
    if !(token.len() > 4 && token.starts_with("{{") && token.ends_with("}}")) {
        return Ok(Parsed::Literal);
    }
    if let Some(args) = call_args(token, "wildcard") {
        return match args.as_slice() {
            [""] => bad(NOT_ENOUGH),
            [n] => Ok(Parsed::Func(
                Func::Wildcard,
                vec![int_arg(token, n)? as usize],
                -1,
                String::new(),
            )),
            _ => bad(TOO_MANY),
        };
    }
    if let Some(args) = call_args(token, "partition") {
        let n = int_arg(token, args[0])?;
        if !(0..=i32::MAX as i64).contains(&n) {
            return bad(INVALID_ARG);
        }
        let mut which = Vec::new();
        for a in &args[1..] {
            which.push(int_arg(token, a)? as usize);
        }
        return Ok(Parsed::Func(Func::Partition, which, n, String::new()));
    }
    for (name, f) in [
        ("splitFromLeft", Func::SplitFromLeft),
        ("splitFromRight", Func::SplitFromRight),
        ("sliceFromLeft", Func::SliceFromLeft),
        ("sliceFromRight", Func::SliceFromRight),
        ("right", Func::Right),
        ("left", Func::Left),
    ] {
        if let Some(args) = call_args(token, name) {
            return match args.as_slice() {
                [_] | [] => bad(NOT_ENOUGH),
                [n, i] => {
                    let n = int_arg(token, n)?;
                    let i = int_arg(token, i)?;
                    if i32::try_from(i).is_err() {
                        return bad(INVALID_ARG);
                    }
                    Ok(Parsed::Func(f, vec![n as usize], i, String::new()))
                }
                _ => bad(TOO_MANY),
            };
        }
    }
    if let Some(args) = call_args(token, "split") {
        return match args.as_slice() {
            [_] | [] => bad(NOT_ENOUGH),
            [n, d] => {
                let n = int_arg(token, n)?;
                if d.contains([' ', '.']) {
                    return bad(INVALID_ARG);
                }
                Ok(Parsed::Func(
                    Func::Split,
                    vec![n as usize],
                    -1,
                    d.to_string(),
                ))
            }
            _ => bad(TOO_MANY),
        };
    }
    if let Some(args) = call_args(token, "random") {
        return match args.as_slice() {
            [n] => {
                let n = int_arg(token, n)?;
                if !(0..=i32::MAX as i64).contains(&n) {
                    return bad(INVALID_ARG);
                }
                Ok(Parsed::Func(Func::Random, Vec::new(), n, String::new()))
            }
            _ => bad(NOT_ENOUGH),
        };
    }
    bad(UNKNOWN)
}

impl Transform {
    /// The transform from `src` (empty: `>`) to `dest`; `None` when `dest` is empty (no
    /// transform).
    pub fn new(src: &str, dest: &str) -> Result<Option<Transform>, TransformError> {
        if dest.is_empty() {
            return Ok(None);
        }
        let src = if src.is_empty() { ">" } else { src };
        let (stokens, npwcs, sfwc) = subject_info(src).ok_or(TransformError::BadSubject)?;
        let (dtokens, dpwcs, dfwc) = subject_info(dest).ok_or(TransformError::BadSubject)?;
        if dpwcs > 0 || sfwc != dfwc {
            return Err(TransformError::BadSubject);
        }
        for t in &dtokens {
            if t.contains(['\t', '\n', '\x0c', '\r', ' ']) && !t.starts_with("{{") {
                return Err(TransformError::Destination(INVALID, String::new()));
            }
        }
        // Wildcard number (from 1) -> the position of its token in the source.
        let positions: Vec<usize> = stokens
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == "*")
            .map(|(i, _)| i)
            .collect();
        let position = |n: usize| {
            // nats-server looks wildcard 0 up in a map that has no 0: the first token.
            n.checked_sub(1)
                .and_then(|i| positions.get(i))
                .copied()
                .unwrap_or(0)
        };
        let wild = npwcs > 0 || sfwc;
        let mut parts = Vec::with_capacity(dtokens.len());
        for t in &dtokens {
            let part = match parse_token(t)? {
                Parsed::Literal if *t == ">" => Part::Rest,
                Parsed::Literal => Part::Literal(t.to_string()),
                Parsed::Func(Func::Random, _, n, _) => Part::Random(n as u32),
                Parsed::Func(Func::Partition, which, n, _) if !wild => {
                    let _ = which;
                    Part::Partition(n as u32, Vec::new())
                }
                Parsed::Func(_, _, _, _) if !wild => {
                    return Err(TransformError::Destination(OUT_OF_RANGE, t.to_string()));
                }
                Parsed::Func(f, which, n, s) => {
                    if let Some(k) = which.iter().find(|k| **k > npwcs) {
                        return Err(TransformError::Destination(
                            OUT_OF_RANGE,
                            format!("{t}: [{k}]"),
                        ));
                    }
                    let at: Vec<usize> = which.iter().map(|k| position(*k)).collect();
                    let first = at.first().copied().unwrap_or(0);
                    let i = n as i32;
                    match f {
                        Func::Wildcard => Part::Token(first),
                        Func::Partition => Part::Partition(n as u32, at),
                        Func::SplitFromLeft => Part::SplitFromLeft(first, i),
                        Func::SplitFromRight => Part::SplitFromRight(first, i),
                        Func::SliceFromLeft => Part::SliceFromLeft(first, i),
                        Func::SliceFromRight => Part::SliceFromRight(first, i),
                        Func::Split => Part::Split(first, s),
                        Func::Left => Part::Left(first, i),
                        Func::Right => Part::Right(first, i),
                        Func::Random => Part::Random(n as u32),
                    }
                }
            };
            parts.push(part);
        }
        Ok(Some(Transform {
            src: src.to_string(),
            src_tokens: stokens.len(),
            identity: src == ">" && dest == ">",
            parts,
        }))
    }

    /// `subject` transformed, when it matches the source (`None`: it does not, and stays as
    /// it is).
    pub fn apply(&self, subject: &str) -> Option<String> {
        if self.identity {
            return Some(subject.to_string());
        }
        if !crate::subject::is_valid_literal_subject(subject.as_bytes())
            || !crate::subject::matches(self.src.as_bytes(), subject.as_bytes())
        {
            return None;
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut out = String::with_capacity(subject.len() + 16);
        let tok = |i: usize| tokens.get(i).copied().unwrap_or_default();
        let last = self.parts.len() - 1;
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Rest => {
                    let from = self.src_tokens.saturating_sub(1);
                    out.push_str(&tokens[from.min(tokens.len())..].join("."));
                    break;
                }
                Part::Literal(s) => out.push_str(s),
                Part::Token(at) => out.push_str(tok(*at)),
                Part::Partition(n, which) => {
                    let key = if which.is_empty() {
                        subject.to_string()
                    } else {
                        which.iter().map(|w| tok(*w)).collect::<String>()
                    };
                    out.push_str(&partition(key.as_bytes(), *n).to_string());
                }
                Part::SplitFromLeft(at, p) => {
                    let s = tok(*at);
                    let p = *p as usize;
                    if p > 0 && p < s.len() && s.is_char_boundary(p) {
                        out.push_str(&s[..p]);
                        out.push('.');
                        out.push_str(&s[p..]);
                    } else {
                        out.push_str(s);
                    }
                }
                Part::SplitFromRight(at, p) => {
                    let s = tok(*at);
                    let p = *p as usize;
                    if p > 0 && p < s.len() && s.is_char_boundary(s.len() - p) {
                        out.push_str(&s[..s.len() - p]);
                        out.push('.');
                        out.push_str(&s[s.len() - p..]);
                    } else {
                        out.push_str(s);
                    }
                }
                Part::SliceFromLeft(at, size) => {
                    let s = tok(*at).as_bytes();
                    let size = *size as usize;
                    if size > 0 && size < s.len() {
                        let pieces: Vec<String> = s
                            .chunks(size)
                            .map(|c| String::from_utf8_lossy(c).into_owned())
                            .collect();
                        out.push_str(&pieces.join("."));
                    } else {
                        out.push_str(tok(*at));
                    }
                }
                Part::SliceFromRight(at, size) => {
                    let s = tok(*at).as_bytes();
                    let size = *size as usize;
                    if size > 0 && size < s.len() {
                        let head = s.len() % size;
                        let mut pieces: Vec<String> = Vec::new();
                        if head > 0 {
                            pieces.push(String::from_utf8_lossy(&s[..head]).into_owned());
                        }
                        pieces.extend(
                            s[head..]
                                .chunks(size)
                                .map(|c| String::from_utf8_lossy(c).into_owned()),
                        );
                        out.push_str(&pieces.join("."));
                    } else {
                        out.push_str(tok(*at));
                    }
                }
                Part::Split(at, d) => {
                    let pieces: Vec<&str> = tok(*at)
                        .split(d.as_str())
                        .filter(|p| !p.is_empty())
                        .collect();
                    out.push_str(&pieces.join("."));
                }
                Part::Left(at, size) => {
                    let s = tok(*at);
                    let n = *size as usize;
                    out.push_str(if n > 0 && n < s.len() && s.is_char_boundary(n) {
                        &s[..n]
                    } else {
                        s
                    });
                }
                Part::Right(at, size) => {
                    let s = tok(*at);
                    let n = *size as usize;
                    out.push_str(if n > 0 && n < s.len() && s.is_char_boundary(s.len() - n) {
                        &s[s.len() - n..]
                    } else {
                        s
                    });
                }
                Part::Random(n) => {
                    let r = if *n == 0 { 0 } else { random_u32() % *n };
                    out.push_str(&r.to_string());
                }
            }
            if i < last {
                out.push('.');
            }
        }
        Some(out)
    }
}

/// FNV-1a (32 bits) of `key` modulo `buckets`, as nats-server partitions.
fn partition(key: &[u8], buckets: u32) -> u32 {
    if buckets == 0 {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % buckets
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() >> 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(src: &str, dest: &str, subject: &str) -> Option<String> {
        Transform::new(src, dest).unwrap().unwrap().apply(subject)
    }

    #[test]
    fn wildcards_literals_and_the_rest() {
        assert_eq!(
            t("foo.*.*", "bar.$2.$1", "foo.a.b").as_deref(),
            Some("bar.b.a")
        );
        assert_eq!(
            t(
                "foo.*.*",
                "bar.{{wildcard(2)}}.{{ Wildcard( 1 ) }}",
                "foo.a.b"
            )
            .as_deref(),
            Some("bar.b.a")
        );
        assert_eq!(t("foo.>", "bar.>", "foo.a.b").as_deref(), Some("bar.a.b"));
        assert_eq!(
            t("foo.*.>", "x.$1.>", "foo.a.b.c").as_deref(),
            Some("x.a.b.c")
        );
        assert_eq!(t("", "pre.>", "a.b").as_deref(), Some("pre.a.b"));
        assert_eq!(t("foo.*", "bar.$1", "other.a"), None);
        assert_eq!(t("foo", "bar", "foo").as_deref(), Some("bar"));
        assert_eq!(t(">", ">", "a.b").as_deref(), Some("a.b"));
        assert!(Transform::new("foo", "").unwrap().is_none());
    }

    #[test]
    fn mapping_functions() {
        let f = |dest: &str, subject: &str| t("*", dest, subject).unwrap();
        assert_eq!(f("{{splitFromLeft(1,3)}}", "12345"), "123.45");
        assert_eq!(f("{{splitFromRight(1,3)}}", "12345"), "12.345");
        assert_eq!(f("{{splitFromLeft(1,9)}}", "12345"), "12345");
        assert_eq!(f("{{sliceFromLeft(1,2)}}", "12345"), "12.34.5");
        assert_eq!(f("{{sliceFromRight(1,2)}}", "12345"), "1.23.45");
        assert_eq!(f("{{split(1,-)}}", "-a--b-c-"), "a.b.c");
        assert_eq!(f("{{left(1,2)}}", "12345"), "12");
        assert_eq!(f("{{right(1,2)}}", "12345"), "45");
        let r: u32 = f("{{random(3)}}", "x").parse().unwrap();
        assert!(r < 3);
    }

    #[test]
    fn partitions_hash_as_nats_server_does() {
        // FNV-1a 32 of "a" is 0xe40c292c = 3826002220; of "ab" (tokens concatenated)
        // 0x4d2505ca = 1294271946.
        assert_eq!(partition(b"a", 10), 3_826_002_220 % 10);
        assert_eq!(
            t("*.*", "p.{{partition(10,1,2)}}", "a.b").unwrap(),
            format!("p.{}", 1_294_271_946u32 % 10)
        );
        // Without token numbers: the whole subject.
        assert_eq!(
            t("foo", "p.{{partition(7)}}", "foo").unwrap(),
            format!("p.{}", partition(b"foo", 7))
        );
        assert_eq!(t("*", "{{partition(0,1)}}", "a").unwrap(), "0");
    }

    #[test]
    fn bad_transforms_say_why_as_nats_server_does() {
        let e = |s: &str, d: &str| Transform::new(s, d).unwrap_err().to_string();
        assert_eq!(e("foo.*", "bar.*"), "invalid subject");
        assert_eq!(e("foo.>", "bar"), "invalid subject");
        assert_eq!(e("foo..x", "bar"), "invalid subject");
        assert_eq!(
            e("foo.*", "{{nope(1)}}"),
            "invalid mapping destination: unknown function in {{nope(1)}}"
        );
        assert_eq!(
            e("foo.*", "bar.$2"),
            "invalid mapping destination: wildcard index out of range in $2: [2]"
        );
        assert_eq!(
            e("foo", "{{wildcard(1)}}"),
            "invalid mapping destination: wildcard index out of range in {{wildcard(1)}}"
        );
        assert_eq!(
            e("foo.*", "{{wildcard()}}"),
            "invalid mapping destination: not enough arguments passed to the function in {{wildcard()}}"
        );
        assert_eq!(
            e("foo.*", "{{wildcard(1,2)}}"),
            "invalid mapping destination: too many arguments passed to the function in {{wildcard(1,2)}}"
        );
        assert_eq!(
            e("foo.*", "{{left(x,2)}}"),
            "invalid mapping destination: function argument is invalid or in the wrong format in {{left(x,2)}}"
        );
    }
}

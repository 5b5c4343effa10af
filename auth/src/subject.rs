//! Subject patterns as permissions and exports use them: `.`-separated tokens, `*` matches one
//! token, a final `>` matches one or more.

/// Whether `pattern` matches `subject`, with the subject's tokens taken literally (a subscription
/// subject `foo.*` is matched as the three characters `foo`, `.`, `*`: the pattern `foo.*` or
/// `foo.>` matches it, the pattern `foo.bar` does not). This is how nats-server checks a
/// subscription against its permission lists.
///
/// A subject with an empty token (`.a`, `a..b`, `a.`) is matched by nothing, as in nats-server,
/// whose index finds no interest in such a subject (so a deny does not refuse it, and it is
/// delivered to nobody either).
pub fn matches(pattern: &str, subject: &str) -> bool {
    if subject.split('.').any(str::is_empty) {
        return false;
    }
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(pt), Some(st)) if pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

pub use junction_core::subject::{covers, overlaps};

/// Whether `s` is a valid pattern: non-empty tokens, `>` only last, wildcards whole tokens.
pub fn valid_pattern(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let tokens: Vec<&str> = s.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.contains(char::is_whitespace)
            && (*t == ">" && i == tokens.len() - 1 || *t == "*" || !t.contains(['*', '>']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_matching() {
        assert!(matches("foo.*", "foo.bar"));
        assert!(matches("foo.>", "foo.bar.baz"));
        assert!(!matches("foo.>", "foo"));
        assert!(matches("foo.*", "foo.*"));
        assert!(matches("foo.>", "foo.>"));
        assert!(!matches("foo.bar", "foo.*"));
        assert!(!matches("foo.*", "foo.bar.baz"));
        assert!(matches(">", "anything.at.all"));
        assert!(!matches("secret.>", "secret..x"));
        assert!(!matches(">", ".secret"));
        assert!(!matches("a.*", "a."));
    }

    #[test]
    fn coverage_and_overlap() {
        assert!(covers("foo.>", "foo.*"));
        assert!(covers("foo.>", "foo.>"));
        assert!(!covers("foo.*", "foo.>"));
        assert!(covers("*.bar", "x.bar"));
        assert!(!covers("foo.bar", "foo.*"));
        assert!(overlaps("foo.>", "foo.secret"));
        assert!(overlaps("foo.*", "*.bar"));
        assert!(!overlaps("foo.*", "bar.*"));
        assert!(!overlaps("foo.*", "foo.a.b"));
    }

    #[test]
    fn pattern_validity() {
        assert!(valid_pattern("a.*.>"));
        assert!(!valid_pattern("a.>.b"));
        assert!(!valid_pattern("a..b"));
        assert!(!valid_pattern("a.b*"));
        assert!(!valid_pattern(""));
    }
}

//! Subject syntax: tokens separated by `.`, with `*` (one token) and `>` (one or more trailing
//! tokens) as whole-token wildcards. These rules are the ones nats-server applies.

/// Token separator.
pub const SEPARATOR: u8 = b'.';
/// Single-token wildcard.
pub const PWC: u8 = b'*';
/// Full (trailing) wildcard.
pub const FWC: u8 = b'>';

/// The subjects the MQTT request/response bridge is answered on. No client may subscribe to
/// them or receive them through a wildcard: only the bridge's own subscription (whose subject
/// starts with this prefix) is delivered to there.
pub const BRIDGE_PREFIX: &[u8] = b"$MQTT.rr.";

/// Whether a subject is in the bridge's reserved space.
pub fn is_bridge(subject: &[u8]) -> bool {
    subject.starts_with(BRIDGE_PREFIX)
}

/// Whether `reply` starts with a prefix the server routes replies by (service imports,
/// JetStream acknowledgements, gateways): clients may not use them as reply subjects.
pub fn is_reserved_reply(reply: &[u8]) -> bool {
    [&b"_R_."[..], b"$JS.ACK.", b"_GR_."]
        .iter()
        .any(|p| reply.starts_with(p))
}

fn has_space(token: &[u8]) -> bool {
    token
        .iter()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c))
}

/// Iterates over the tokens of a subject.
pub fn tokens(subject: &[u8]) -> impl Iterator<Item = &[u8]> {
    subject.split(|b| *b == SEPARATOR)
}

/// A valid subscription subject: non-empty tokens, no white space, `>` only as the last token.
pub fn is_valid_subject(subject: &[u8]) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut seen_fwc = false;
    for token in tokens(subject) {
        if token.is_empty() || seen_fwc || has_space(token) {
            return false;
        }
        if token == [FWC] {
            seen_fwc = true;
        }
    }
    true
}

/// A valid publish subject: a valid subject with no wildcard tokens.
pub fn is_valid_literal_subject(subject: &[u8]) -> bool {
    !subject.is_empty()
        && tokens(subject).all(|t| !t.is_empty() && t != [PWC] && t != [FWC] && !has_space(t))
}

/// Whether a subject contains a wildcard token.
pub fn has_wildcard(subject: &[u8]) -> bool {
    tokens(subject).any(|t| t == [PWC] || t == [FWC])
}

/// Whether the literal `subject` matches the (possibly wildcard) `filter`.
///
/// This is the naive reference definition; the subject index must agree with it.
pub fn matches(filter: &[u8], subject: &[u8]) -> bool {
    let mut f = tokens(filter);
    let mut s = tokens(subject);
    loop {
        match (f.next(), s.next()) {
            (None, None) => return true,
            (Some(ft), Some(_)) if ft == [FWC] => return true,
            (Some(ft), Some(st)) => {
                if ft != [PWC] && ft != st {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Whether every subject `sub` can match is also matched by `pattern` (`foo.bar` and `foo.*` are
/// covered by `foo.>`; `foo.>` is not covered by `foo.*`).
pub fn covers(pattern: &str, sub: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = sub.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(st)) if st != ">" => {}
            (Some(pt), Some(st)) if pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some subject could match both `a` and `b`.
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_follows_nats_server() {
        for ok in [
            "foo", "foo.bar", "foo.*", "foo.>", "*", ">", "*.>", "foo*.bar", "a.b-c",
        ] {
            assert!(is_valid_subject(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "foo.",
            ".foo",
            "foo..bar",
            "foo.>.bar",
            "foo bar",
            "a.\tb",
            ">.a",
        ] {
            assert!(!is_valid_subject(bad.as_bytes()), "{bad}");
        }
        assert!(is_valid_literal_subject(b"foo.bar"));
        assert!(is_valid_literal_subject(b"foo*.bar>"));
        assert!(!is_valid_literal_subject(b"foo.*"));
        assert!(!is_valid_literal_subject(b">"));
        assert!(!is_valid_literal_subject(b"foo..bar"));
    }

    #[test]
    fn naive_matching() {
        assert!(matches(b"foo.*", b"foo.bar"));
        assert!(!matches(b"foo.*", b"foo"));
        assert!(!matches(b"foo.*", b"foo.bar.baz"));
        assert!(matches(b"foo.>", b"foo.bar.baz"));
        assert!(!matches(b"foo.>", b"foo"));
        assert!(matches(b">", b"foo"));
        assert!(matches(b"*.bar", b"foo.bar"));
        assert!(!matches(b"foo.bar", b"foo.baz"));
    }

    #[test]
    fn covering_and_overlapping_filters() {
        assert!(covers("foo.>", "foo.*"));
        assert!(covers("foo.>", "foo.>"));
        assert!(covers("a.*", "a.*"));
        assert!(covers(">", "a.*.c"));
        assert!(!covers("foo.*", "foo.>"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.>", "a"));
        assert!(!covers("a.b.c", "a.b"));
        assert!(overlaps("a.*", "a.b"));
        assert!(overlaps("*.b", "a.*"));
        assert!(overlaps(">", "x"));
        assert!(!overlaps("a.b", "a.c"));
        assert!(!overlaps("a.*", "a.b.c"));
        assert!(!overlaps("a.>", "a"));
    }
}

//! Relations between subject filters that streams and consumers need: whether two filters can
//! match a common subject, and whether one filter's subjects are all inside another's.

fn tokens(s: &str) -> Vec<&str> {
    s.split('.').collect()
}

/// Whether some subject matches both `a` and `b`.
pub fn overlap(a: &str, b: &str) -> bool {
    let (ta, tb) = (tokens(a), tokens(b));
    let mut i = 0;
    loop {
        match (ta.get(i), tb.get(i)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (Some(x), Some(y)) => {
                if *x != "*" && *y != "*" && x != y {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        i += 1;
    }
}

/// Whether every subject matching `inner` also matches `outer`.
pub fn subset(inner: &str, outer: &str) -> bool {
    let (ti, to) = (tokens(inner), tokens(outer));
    let mut i = 0;
    loop {
        match (ti.get(i), to.get(i)) {
            (_, Some(&">")) => return ti.len() > i,
            (Some(&">"), _) => return false,
            (Some(x), Some(y)) => {
                if *y != "*" && (x != y || *x == "*") {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_filters() {
        assert!(overlap("a.b", "a.b"));
        assert!(overlap("a.*", "a.b"));
        assert!(overlap("a.>", "a.b.c"));
        assert!(overlap(">", "x"));
        assert!(overlap("*.b", "a.*"));
        assert!(!overlap("a.b", "a.c"));
        assert!(!overlap("a.*", "a.b.c"));
        assert!(!overlap("a", "a.b"));
        assert!(!overlap("a.>", "a"));
    }

    #[test]
    fn subsets() {
        assert!(subset("a.b", "a.b"));
        assert!(subset("a.b", "a.*"));
        assert!(subset("a.*", "a.*"));
        assert!(subset("a.b.c", "a.>"));
        assert!(subset("a.>", "a.>"));
        assert!(subset("a.*.c", ">"));
        assert!(!subset("a.*", "a.b"));
        assert!(!subset("a.>", "a.*"));
        assert!(!subset("a", "a.>"));
        assert!(!subset("a.b", "a.b.c"));
    }
}

//! Subject mappings, as nats-server's `mappings` (or `maps`) block configures them for an
//! account: a publication whose subject matches a mapping's source is routed under a subject
//! made by one of the mapping's destinations (a [`Transform`]), chosen by weight.
//!
//! A destination's weight is a percentage. When the weights add up to less than 100 and the
//! source is not among the destinations, the source itself takes the rest (the message keeps
//! its subject that often); when the source is listed, the rest is dropped (nats-server's way of
//! losing a share of the messages on purpose). Client publications are mapped before their
//! publish permission is checked, so the permission applies to the mapped subject, as in
//! nats-server.

use crate::transform::{Transform, TransformError};

/// One destination as configured: a subject (with `$n` and mapping functions) and a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDest {
    pub subject: String,
    /// Percent, 0 to 100.
    pub weight: u8,
}

/// One mapping: its source and its destinations, each with the running total of the weights
/// up to it (the last is at most 100).
struct Mapping {
    src: String,
    dests: Vec<(Transform, u8)>,
}

/// An account's mappings, in the order configured (the first whose source matches applies).
#[derive(Default)]
pub struct Mappings {
    list: Vec<Mapping>,
}

/// Where a publication goes after the mappings.
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    /// No mapping matches: under its own subject.
    Same,
    /// Under this subject.
    To(String),
    /// Nowhere: the share its mapping drops.
    Dropped,
}

impl Mappings {
    /// Adds the mapping of `src` to `dests` (replacing an earlier one of the same source), with
    /// nats-server's checks and wording.
    pub fn add(&mut self, src: &str, dests: &[MapDest]) -> Result<(), String> {
        if !crate::subject::is_valid_subject(src.as_bytes()) {
            return Err("invalid subject".to_string());
        }
        let mut seen = Vec::new();
        let mut total = 0u32;
        let mut out = Vec::with_capacity(dests.len() + 1);
        for d in dests {
            if seen.contains(&d.subject.as_str()) {
                return Err(format!("duplicate entry for {:?}", d.subject));
            }
            seen.push(d.subject.as_str());
            if d.weight > 100 {
                return Err("individual weights need to be <= 100".to_string());
            }
            total += u32::from(d.weight);
            if total > 100 {
                return Err("total weight needs to be <= 100".to_string());
            }
            let t = transform(src, &d.subject).map_err(|e| e.to_string())?;
            out.push((t, d.weight));
        }
        if total != 100 && !seen.contains(&src) {
            // The rest keeps its subject: the source as a destination, its wildcards numbered.
            let mut n = 0;
            let same: Vec<String> = src
                .split('.')
                .map(|t| {
                    if t == "*" {
                        n += 1;
                        format!("${n}")
                    } else {
                        t.to_string()
                    }
                })
                .collect();
            let rest = if dests.is_empty() { 100 } else { 100 - total };
            out.push((
                transform(src, &same.join(".")).map_err(|e| e.to_string())?,
                rest as u8,
            ));
        }
        out.sort_by_key(|(_, w)| *w);
        let mut running = 0u8;
        for (_, w) in &mut out {
            running = running.saturating_add(*w);
            *w = running;
        }
        let m = Mapping {
            src: src.to_string(),
            dests: out,
        };
        match self.list.iter_mut().find(|x| x.src == src) {
            Some(old) => *old = m,
            None => self.list.push(m),
        }
        Ok(())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Where a publication on `subject` goes; `pick` draws a number below 100 (only asked for
    /// when a mapping has more than one destination or drops a share).
    pub fn map(&self, subject: &str, pick: impl FnOnce() -> u8) -> Mapped {
        let Some(m) = self.list.iter().find(|m| {
            m.src == subject || crate::subject::matches(m.src.as_bytes(), subject.as_bytes())
        }) else {
            return Mapped::Same;
        };
        let chosen = match m.dests.as_slice() {
            [(t, 100)] => Some(t),
            dests => {
                let w = pick();
                dests.iter().find(|(_, upto)| w < *upto).map(|(t, _)| t)
            }
        };
        match chosen.and_then(|t| t.apply(subject)) {
            Some(s) => Mapped::To(s),
            None => Mapped::Dropped,
        }
    }
}

fn transform(src: &str, dest: &str) -> Result<Transform, TransformError> {
    Transform::new(src, dest)?.ok_or(TransformError::BadSubject)
}

/// A number below 100 for [`Mappings::map`], from the process's random hasher keys and a
/// counter (weights need spread, not secrecy).
pub fn pick_percent() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = KEYS.get_or_init(Default::default).build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    (h.finish() % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(subject: &str, weight: u8) -> MapDest {
        MapDest {
            subject: subject.to_string(),
            weight,
        }
    }

    #[test]
    fn a_plain_mapping_renames_and_others_pass() {
        let mut m = Mappings::default();
        m.add("foo", &[dest("bar", 100)]).unwrap();
        m.add("orders.*.*", &[dest("orders.$2.$1", 100)]).unwrap();
        m.add("in.>", &[dest("out.>", 100)]).unwrap();
        let never = || panic!("one destination needs no draw");
        assert_eq!(m.map("foo", never), Mapped::To("bar".into()));
        assert_eq!(m.map("orders.a.b", never), Mapped::To("orders.b.a".into()));
        assert_eq!(m.map("in.x.y", never), Mapped::To("out.x.y".into()));
        assert_eq!(m.map("foo.bar", never), Mapped::Same);
        assert_eq!(m.map("orders.a", never), Mapped::Same);
    }

    #[test]
    fn weights_split_and_the_rest_keeps_its_subject_or_is_dropped() {
        let mut m = Mappings::default();
        m.add("a", &[dest("a1", 30), dest("a2", 50)]).unwrap();
        // Sorted by weight: a (20, the rest), a1 (30), a2 (50).
        assert_eq!(m.map("a", || 0), Mapped::To("a".into()));
        assert_eq!(m.map("a", || 19), Mapped::To("a".into()));
        assert_eq!(m.map("a", || 20), Mapped::To("a1".into()));
        assert_eq!(m.map("a", || 49), Mapped::To("a1".into()));
        assert_eq!(m.map("a", || 50), Mapped::To("a2".into()));
        assert_eq!(m.map("a", || 99), Mapped::To("a2".into()));
        // The source listed: the missing share is dropped.
        m.add("b", &[dest("b", 40), dest("b2", 40)]).unwrap();
        assert_eq!(m.map("b", || 10), Mapped::To("b".into()));
        assert_eq!(m.map("b", || 79), Mapped::To("b2".into()));
        assert_eq!(m.map("b", || 80), Mapped::Dropped);
        // With a wildcard source, the rest keeps each token.
        m.add("c.*", &[dest("d.$1", 40)]).unwrap();
        assert_eq!(m.map("c.x", || 10), Mapped::To("d.x".into()));
        assert_eq!(m.map("c.x", || 40), Mapped::To("c.x".into()));
        // Roughly as weighted, with the process's draws.
        let mut a1 = 0;
        for _ in 0..10_000 {
            if m.map("a", pick_percent) == Mapped::To("a1".into()) {
                a1 += 1;
            }
        }
        assert!(
            (2_500..3_500).contains(&a1),
            "{a1} of 10000 to a 30% destination"
        );
    }

    #[test]
    fn bad_mappings_are_refused_with_nats_servers_words() {
        let mut m = Mappings::default();
        let err = |m: &mut Mappings, src: &str, d: &[MapDest]| m.add(src, d).unwrap_err();
        assert_eq!(err(&mut m, "a..b", &[dest("x", 100)]), "invalid subject");
        assert_eq!(
            err(&mut m, "a", &[dest("x", 60), dest("y", 50)]),
            "total weight needs to be <= 100"
        );
        assert_eq!(
            err(&mut m, "a", &[dest("x", 10), dest("x", 10)]),
            "duplicate entry for \"x\""
        );
        assert_eq!(
            err(&mut m, "a", &[dest("x", 101)]),
            "individual weights need to be <= 100"
        );
        assert!(err(&mut m, "a.*", &[dest("x.$2", 100)]).contains("out of range"));
        assert!(m.is_empty());
        // A later mapping of the same source replaces the earlier one.
        m.add("a", &[dest("x", 100)]).unwrap();
        m.add("a", &[dest("y", 100)]).unwrap();
        assert_eq!(m.map("a", || 0), Mapped::To("y".into()));
    }
}

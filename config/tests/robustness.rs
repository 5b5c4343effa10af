//! `parse_str` must never panic, hang or overflow the stack, whatever it
//! is given. These tests feed it truncated and mutated versions of the
//! fixtures and plain noise; a cargo-fuzz target can take over from here.

mod common;

use std::fs;

use common::fixtures;
use junction_config::{parse_str, ConfigError};

/// Hand-written snippets covering every syntax form, used alongside the
/// fixture files as seeds.
const SNIPPETS: &[&str] = &[
    "foo = \"tab\\tnl\\n\\x41\\u00e9\"\nbar: 'raw\\n'\nbaz 3xyz; q = \\x41b",
    "a = [1, 2k, 3.5, -4MB, [true, off], {x: $a0}]\na0 = 1\nb = $a0",
    "{\n  \"json\": {\"k\": [1, 2, 3]},\n  \"x\": 1,\n}\n}\n",
    "block (\n  text ( with ) parens\n)\nnext = 1",
    "m {\n  include 'nothere.conf'\n  k = v // c\n  # c\n}\n",
    "listen: 127.0.0.1:4222\nroutes = [\n  nats://a:b@h:1\n  nats://c:d@h:2\n]",
    "password: $2a$11$abcdefghijklmnopqrstuv\nn = -9223372036854775808\nf = 1.25",
    "x = $HOME\ny = $JUNCTION_ROBUSTNESS_UNDEFINED\nz = [$x, {w: $y}]",
];

fn seeds() -> Vec<String> {
    let mut seeds: Vec<String> = SNIPPETS.iter().map(|s| s.to_string()).collect();
    for name in [
        "nats-server.conf",
        "accounts.conf",
        "simple.conf",
        "json.conf",
        "includes/users.conf",
        "includes/passwords.conf",
    ] {
        seeds.push(fs::read_to_string(fixtures().join(name)).unwrap());
    }
    seeds
}

/// Parses and checks that any error points inside (or just past) the text.
fn check(text: &str) {
    if let Err(err) = parse_str(text) {
        let message = err.to_string();
        assert!(!message.is_empty());
        if let ConfigError::Syntax { location, .. }
        | ConfigError::UndefinedVariable { location, .. } = &err
        {
            let lines = text.split('\n').count();
            assert!(
                location.line >= 1 && location.line <= lines && location.column >= 1,
                "location {location} outside the text for {text:?}: {message}"
            );
        }
    }
}

#[test]
fn every_prefix_of_every_seed() {
    for seed in seeds() {
        for (end, _) in seed.char_indices() {
            check(&seed[..end]);
        }
        check(&seed);
    }
}

#[test]
fn every_single_character_deletion() {
    for seed in seeds() {
        for (at, c) in seed.char_indices() {
            let mut text = seed.clone();
            text.replace_range(at..at + c.len_utf8(), "");
            check(&text);
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Characters that matter to the grammar, plus a few awkward ones.
const INTERESTING: &[char] = &[
    '{', '}', '[', ']', '(', ')', '"', '\'', '\\', '$', '#', '/', '=', ':', ';', ',', '\n', '\r',
    ' ', '\t', '0', '1', '9', '-', '.', 'k', 'K', 'b', 'B', 'i', 'x', 'u', 'e', 'E', 'a', 'z', 'é',
    '\u{0}', '\u{feff}', '\u{a0}', '\u{2028}', '😀',
];

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for _ in 0..1 + rng.below(8) {
        let len = chars.len();
        let at = rng.below(len + 1);
        match rng.below(6) {
            0 => chars.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            1 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                chars.drain(at.min(len - 1)..end);
            }
            2 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let copy: Vec<char> = chars[start..end].to_vec();
                let at = rng.below(chars.len() + 1);
                chars.splice(at..at, copy);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                chars[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            4 => {
                let c = char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('?');
                chars.insert(at, c);
            }
            _ => {
                let snippet = SNIPPETS[rng.below(SNIPPETS.len())];
                let start = rng.below(snippet.len());
                let piece: String = snippet
                    .chars()
                    .skip(start)
                    .take(1 + rng.below(24))
                    .collect();
                chars.splice(at..at, piece.chars());
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn random_mutations_of_seeds() {
    let seeds = seeds();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let seed = &seeds[rng.below(seeds.len())];
        check(&mutate(&mut rng, seed));
    }
}

#[test]
fn random_noise() {
    const ALPHABET: &[u8] = b"{}[]()\"'\\$#/=:;,\n \t0123456789.-kKmMbBiIxu";
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..5_000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(2) == 0 {
                    ALPHABET[rng.below(ALPHABET.len())]
                } else {
                    rng.below(256) as u8
                }
            })
            .collect();
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn pathological_sizes() {
    // Deep nesting of every kind stops at the limit instead of overflowing
    // the stack.
    for text in [
        "a = ".to_string() + &"[".repeat(100_000),
        "a = ".to_string() + &"{b = ".repeat(100_000),
        "a = ".to_string() + &"[{b: ".repeat(50_000),
        "{".repeat(100_000),
        "}".repeat(100_000),
        "a = 1\n".to_string() + &"}".repeat(100_000),
    ] {
        check(&text);
    }

    // Many entries, including many redefinitions of the same key, stay fast.
    let many: String = (0..50_000)
        .map(|i| format!("k{} = {i}\n", i % 100))
        .collect();
    let start = std::time::Instant::now();
    let map = parse_str(&many).unwrap();
    assert_eq!(map.len(), 100);
    let distinct: String = (0..50_000).map(|i| format!("k{i} = [{i}, x]\n")).collect();
    assert_eq!(parse_str(&distinct).unwrap().len(), 50_000);
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());

    // Very long tokens.
    let long = format!(
        "s = {}\nt = \"{}\"",
        "x".repeat(1 << 20),
        "y".repeat(1 << 20)
    );
    assert_eq!(parse_str(&long).unwrap().len(), 2);
}

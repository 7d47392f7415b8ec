//! Generated hostile inputs for parser tests: a seeded mutator over a corpus
//! of valid inputs, so every run feeds the same few hundred thousand inputs
//! and a failure names the one that broke.
//!
//! In scope: byte-level mutations that find parser bugs in practice (bit
//! flips, deletions, insertions of structural tokens, duplications,
//! truncations, splices between corpus entries, boundary numbers) and
//! [`run`], which feeds them to a parser and reports any panic with its
//! input. Out of scope: coverage guidance (cargo fuzz and libFuzzer need a
//! nightly toolchain, which this project's machines do not have); the
//! parsers' own tests decide what a correct refusal is.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Tokens that matter to the formats under test (structured fields, JSON,
/// signed notes, CBOR lengths), inserted whole.
const TOKENS: &[&[u8]] = &[
    b";",
    b",",
    b"=",
    b"\"",
    b":",
    b"(",
    b")",
    b" ",
    b"\n",
    b"\n\n",
    b"\\",
    b"?",
    b"*",
    b"\xe2\x80\x94 ",
    b"-1",
    b"0",
    b"01",
    b"18446744073709551616",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"1e999",
    b"{",
    b"}",
    b"[",
    b"]",
    b"null",
    b"true",
    b"%00",
    b"\x00",
    b"\xff",
    b"\x80",
    b"\xc3",
    b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x9f",
    b"\xbf",
    b"\x5b",
    b"AAAA",
    b"====",
    b"sig1",
    b"keyid",
    b"created",
    b"@method",
    b"@target-uri",
    b"sha-256",
    b"index ",
    b"extra ",
    b"c2sp.org/tlog-proof@v1\n",
];

/// A seeded mutator over a corpus.
pub struct Mutator {
    rng: SmallRng,
    corpus: Vec<Vec<u8>>,
}

impl Mutator {
    /// A mutator seeded with `seed` over `corpus` (valid inputs).
    pub fn new(seed: u64, corpus: Vec<Vec<u8>>) -> Mutator {
        assert!(!corpus.is_empty(), "a corpus to mutate");
        Mutator {
            rng: SmallRng::seed_from_u64(seed),
            corpus,
        }
    }

    /// A number of the kind that breaks size arithmetic.
    pub fn number(&mut self) -> u64 {
        match self.rng.gen_range(0..6) {
            0 => 0,
            1 => u64::MAX - self.rng.gen_range(0..3),
            2 => 1 << self.rng.gen_range(0..64),
            3 => (1 << self.rng.gen_range(0..64)) - 1,
            4 => self.rng.gen_range(0..70),
            _ => self.rng.r#gen(),
        }
    }

    /// Random bytes, up to `max` long.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.rng.gen_range(0..=max);
        (0..n).map(|_| self.rng.r#gen()).collect()
    }

    /// The next input: a corpus entry with one to five mutations.
    pub fn next_input(&mut self) -> Vec<u8> {
        let i = self.rng.gen_range(0..self.corpus.len());
        let mut v = self.corpus[i].clone();
        for _ in 0..self.rng.gen_range(1..=5) {
            let len = v.len();
            let at = if len == 0 {
                0
            } else {
                self.rng.gen_range(0..=len)
            };
            match self.rng.gen_range(0..8) {
                0 if len > 0 => {
                    let k = self.rng.gen_range(0..len);
                    v[k] ^= 1 << self.rng.gen_range(0..8);
                }
                1 if len > 0 => {
                    let end = (at + self.rng.gen_range(1..=16)).min(len);
                    v.drain(at.min(end)..end);
                }
                2 => {
                    let t = TOKENS[self.rng.gen_range(0..TOKENS.len())];
                    v.splice(at..at, t.iter().copied());
                }
                3 if len > 0 => {
                    let start = self.rng.gen_range(0..len);
                    let end = (start + self.rng.gen_range(1..=32)).min(len);
                    let copy = v[start..end].to_vec();
                    for _ in 0..self.rng.gen_range(1..=8) {
                        v.splice(at..at, copy.iter().copied());
                    }
                }
                4 => v.truncate(at),
                5 => {
                    let other = &self.corpus[self.rng.gen_range(0..self.corpus.len())];
                    if !other.is_empty() {
                        let from = self.rng.gen_range(0..other.len());
                        v.truncate(at);
                        v.extend_from_slice(&other[from..]);
                    }
                }
                6 => {
                    let junk = self.bytes(8);
                    v.splice(at..at, junk);
                }
                _ => {
                    let digits = self.number().to_string();
                    v.splice(at..at, digits.bytes());
                }
            }
        }
        v
    }
}

/// Feeds `count` mutated inputs to `parse`; a panic fails with the input
/// that caused it (as lossy UTF-8 and hex).
pub fn run(
    name: &str,
    seed: u64,
    count: usize,
    corpus: Vec<Vec<u8>>,
    mut parse: impl FnMut(&[u8]),
) {
    let mut m = Mutator::new(seed, corpus);
    for n in 0..count {
        let input = m.next_input();
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!(
                "{name}: input #{n} (seed {seed}) panicked: {:?} = {hex}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let corpus = vec![b"sig1=(\"@method\");created=1".to_vec()];
        let mut a = Mutator::new(7, corpus.clone());
        let mut b = Mutator::new(7, corpus);
        let xs: Vec<Vec<u8>> = (0..100).map(|_| a.next_input()).collect();
        let ys: Vec<Vec<u8>> = (0..100).map(|_| b.next_input()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().any(|x| x != &xs[0]), "inputs vary");
    }

    #[test]
    fn a_panicking_parser_is_reported_with_its_input() {
        let caught = catch_unwind(|| {
            run("demo", 1, 1000, vec![b"abc".to_vec()], |i| {
                assert!(!i.contains(&b';'), "semicolon");
            });
        });
        assert!(caught.is_err());
    }
}

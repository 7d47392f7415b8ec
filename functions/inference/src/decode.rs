//! The decode loop's state and its choices, free of wasi-nn so that it is
//! tested natively and mirrored exactly by the Python reference
//! (`tests/inference/reference.py`).
//!
//! Rules, in order, before each forward pass: `max_new_tokens` generated →
//! `Length`; the context full → `ContextFull`. After a pass the next token is
//! the first arg-max of the last position's logits (temperature 0) or drawn
//! from softmax(logits / temperature) with a splitmix64 stream seeded by the
//! request (temperature > 0). End-of-text ends generation without being
//! emitted; otherwise the token is appended, and a stop sequence at the end of
//! the output ends it (`Stop`, the sequence kept).

use crate::tokenizer::Tokenizer;

/// Hottest temperature accepted: above it sampling is noise.
pub const MAX_TEMPERATURE: f32 = 100.0;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// `max_new_tokens` reached.
    Length,
    /// A stop sequence appeared.
    Stop,
    /// The model emitted end-of-text.
    EndOfText,
    /// The context window is full.
    ContextFull,
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, seedable with any `u64`, and
/// easy to reproduce outside Rust.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Greedy or seeded sampling.
#[derive(Debug, Clone)]
pub enum Sampler {
    /// Arg-max.
    Greedy,
    /// Softmax sampling at a temperature.
    Sample {
        /// The temperature, as f64.
        temperature: f64,
        /// The random stream.
        rng: SplitMix64,
    },
}

impl Sampler {
    /// The sampler for a request's temperature and seed.
    pub fn new(temperature: f32, seed: u64) -> Result<Self, &'static str> {
        if !temperature.is_finite() || temperature < 0.0 {
            return Err("must be a finite number, 0 or more");
        }
        if temperature > MAX_TEMPERATURE {
            return Err("is above the maximum of 100");
        }
        Ok(if temperature == 0.0 {
            Sampler::Greedy
        } else {
            Sampler::Sample {
                temperature: f64::from(temperature),
                rng: SplitMix64::new(seed),
            }
        })
    }

    /// The next token from one position's logits.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            let mut best = 0usize;
            for (i, &l) in logits.iter().enumerate() {
                if l > logits[best] {
                    best = i;
                }
            }
            best
        };
        let index = match self {
            Sampler::Greedy => argmax(),
            Sampler::Sample { temperature, rng } => {
                let scaled: Vec<f64> = logits
                    .iter()
                    .map(|&l| f64::from(l) / *temperature)
                    .collect();
                let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scaled.iter().map(|&x| (x - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let r = rng.next_f64() * total;
                let mut acc = 0.0;
                let mut chosen = None;
                for (i, w) in weights.iter().enumerate() {
                    acc += w;
                    if acc > r {
                        chosen = Some(i);
                        break;
                    }
                }
                // Rounding can leave `r` at the very top: the last token
                // with any weight.
                chosen.unwrap_or_else(|| weights.iter().rposition(|&w| w > 0.0).unwrap_or(0))
            }
        };
        u32::try_from(index).unwrap_or(0)
    }
}

/// The loop's fixed parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    /// Most tokens to generate.
    pub max_new_tokens: u32,
    /// The model's context window.
    pub context_length: u32,
    /// The end-of-text token, if any.
    pub end_of_text: Option<u32>,
    /// Non-empty stop sequences.
    pub stops: &'a [&'a [u8]],
}

/// The loop's state.
#[derive(Debug)]
pub struct Decoder<'a> {
    tokens: Vec<u32>,
    generated: Vec<u32>,
    output: Vec<u8>,
    params: Params<'a>,
    sampler: Sampler,
    done: Option<Choice>,
}

impl<'a> Decoder<'a> {
    /// A decoder starting from the prompt's ids.
    pub fn new(prompt: Vec<u32>, params: Params<'a>, sampler: Sampler) -> Self {
        Self {
            tokens: prompt,
            generated: Vec::new(),
            output: Vec::new(),
            params,
            sampler,
            done: None,
        }
    }

    /// Why the loop has ended, if it has.
    pub fn finished(&mut self) -> Option<Choice> {
        if self.done.is_none() {
            if self.generated.len() >= self.params.max_new_tokens as usize {
                self.done = Some(Choice::Length);
            } else if self.tokens.len() >= self.params.context_length as usize {
                self.done = Some(Choice::ContextFull);
            }
        }
        self.done
    }

    /// The ids the next forward pass sees.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Takes the last position's logits.
    pub fn push(&mut self, logits: &[f32], tokenizer: &impl Tokenizer) {
        let next = self.sampler.pick(logits);
        if Some(next) == self.params.end_of_text {
            self.done = Some(Choice::EndOfText);
            return;
        }
        self.tokens.push(next);
        self.generated.push(next);
        self.output.extend(tokenizer.decode(next));
        if self.params.stops.iter().any(|s| self.output.ends_with(s)) {
            self.done = Some(Choice::Stop);
        }
    }

    /// The generated ids and bytes.
    pub fn into_output(self) -> (Vec<u32>, Vec<u8>) {
        (self.generated, self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Byte;

    #[test]
    fn splitmix64_matches_the_published_sequence() {
        // The first outputs for seed 1234567 from the reference C code.
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(0.0, 9).expect("sampler");
        assert_eq!(s.pick(&[0.0, 2.0, 2.0, 1.0]), 1);
    }

    #[test]
    fn sampling_is_reproducible_and_follows_the_weights() {
        let logits = [0.0f32, 5.0, 0.0, 5.0];
        let draw = |seed| {
            let mut s = Sampler::new(1.0, seed).expect("sampler");
            (0..200).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let picks = draw(7);
        let hot = picks.iter().filter(|&&p| p == 1 || p == 3).count();
        assert!(hot > 190, "{hot}");
    }

    #[test]
    fn bad_temperatures_are_refused() {
        for t in [-1.0, f32::NAN, f32::INFINITY, 101.0] {
            assert!(Sampler::new(t, 0).is_err(), "{t}");
        }
    }

    #[test]
    fn the_loop_stops_for_each_reason() {
        let greedy = || Sampler::new(0.0, 0).expect("sampler");
        let one_hot = |i: usize| {
            let mut l = vec![0.0f32; 256];
            l[i] = 1.0;
            l
        };
        let params = Params {
            max_new_tokens: 3,
            context_length: 8,
            end_of_text: Some(0),
            stops: &[b"yz"],
        };
        let mut d = Decoder::new(vec![1], params, greedy());
        while d.finished().is_none() {
            d.push(&one_hot(usize::from(b'a')), &Byte);
        }
        assert_eq!(d.finished(), Some(Choice::Length));
        assert_eq!(d.into_output().1, b"aaa");

        let mut d = Decoder::new(vec![1], params, greedy());
        d.push(&one_hot(usize::from(b'y')), &Byte);
        d.push(&one_hot(usize::from(b'z')), &Byte);
        assert_eq!(d.finished(), Some(Choice::Stop));

        let mut d = Decoder::new(vec![1], params, greedy());
        d.push(&one_hot(0), &Byte);
        assert_eq!(d.finished(), Some(Choice::EndOfText));
        assert!(d.into_output().0.is_empty());

        let mut d = Decoder::new(vec![1; 8], params, greedy());
        assert_eq!(d.finished(), Some(Choice::ContextFull));
    }
}

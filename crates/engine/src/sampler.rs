//! Choosing the next token from logits: greedy, temperature, top-k, top-p, seeded.

/// Sampling settings. `temperature == 0` is greedy (argmax, lowest index wins ties).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 = no limit).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("temperature must be ≥ 0 (and finite), got {0}")]
    Temperature(f32),
    #[error("top-p must be in (0, 1], got {0}")]
    TopP(f32),
}

impl SamplerConfig {
    pub fn validate(&self) -> Result<(), SamplerError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SamplerError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::TopP(self.top_p));
        }
        Ok(())
    }
}

/// Index of the largest value; the lowest index wins ties; NaN is never chosen over a number.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best as u32
}

/// A seeded sampler (xorshift64*: small, fast, reproducible across platforms).
pub struct Sampler {
    config: SamplerConfig,
    state: u64,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Self, SamplerError> {
        config.validate()?;
        let state = config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        Ok(Self { config, state })
    }

    fn next_f32(&mut self) -> f32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 40) as f32 / (1u64 << 24) as f32
    }

    fn greedy(&self) -> bool {
        self.config.temperature == 0.0 || self.config.top_k == 1
    }

    /// The tokens that may be sampled and their probabilities (not normalized: divide by
    /// their sum), most likely first: softmax(logits / T), cut by top-k and top-p.
    fn candidates(&self, logits: &[f32]) -> (Vec<u32>, Vec<f32>) {
        let c = &self.config;
        // Candidates sorted by logit, descending (stable: lower index first on ties).
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| {
            logits[b as usize]
                .partial_cmp(&logits[a as usize])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        if c.top_k > 0 {
            idx.truncate(c.top_k);
        }
        // softmax(logits / T) over the candidates.
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f32> = idx
            .iter()
            .map(|&i| ((logits[i as usize] - max) / c.temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    acc += p;
                    acc >= c.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            idx.truncate(keep);
        }
        (idx, probs)
    }

    /// Draw from `probs` (weights of `idx`), leaving out `skip`.
    fn draw(&mut self, idx: &[u32], probs: &[f32], skip: Option<u32>) -> u32 {
        let weight = |(p, &i): (&f32, &u32)| if Some(i) == skip { 0.0 } else { *p };
        let total: f32 = probs.iter().zip(idx).map(weight).sum();
        let mut r = self.next_f32() * total;
        let mut last = None;
        for (p, &i) in probs.iter().zip(idx) {
            if Some(i) == skip {
                continue;
            }
            last = Some(i);
            r -= p;
            if r < 0.0 {
                return i;
            }
        }
        last.or(skip).unwrap_or(0)
    }

    /// Pick the next token.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.greedy() {
            return argmax(logits);
        }
        let (idx, probs) = self.candidates(logits);
        self.draw(&idx, &probs, None)
    }

    /// Pick the next token where a drafter proposed `draft`, so that the result has exactly
    /// the distribution of [`Sampler::sample`] (speculative sampling with a deterministic
    /// draft): keep `draft` with probability p(draft), otherwise draw from p with `draft`
    /// left out. Greedy: the most likely token, as `sample`.
    pub fn sample_with_draft(&mut self, logits: &[f32], draft: u32) -> u32 {
        if self.greedy() {
            return argmax(logits);
        }
        let (idx, probs) = self.candidates(logits);
        let total: f32 = probs.iter().sum();
        let p_draft = idx
            .iter()
            .position(|&i| i == draft)
            .map_or(0.0, |k| probs[k] / total);
        if self.next_f32() < p_draft {
            return draft;
        }
        self.draw(&idx, &probs, Some(draft))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    #[test]
    fn greedy_picks_lowest_index_on_ties() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        assert_eq!(s.sample(&[0.5, 0.1, 2.0]), 2);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(cfg(1.0, 0, 1.0, seed)).unwrap();
            (0..40).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn top_k_and_top_p_restrict_candidates() {
        let logits = [5.0, 4.9, 4.8, -10.0, 4.7];
        let mut s = Sampler::new(cfg(1.0, 2, 1.0, 9)).unwrap();
        for _ in 0..200 {
            assert!(s.sample(&logits) < 2);
        }
        // Token 0 has ~90% of the mass: top-p 0.5 keeps it alone.
        let logits = [5.0, 2.8, 0.0, 0.0];
        let mut s = Sampler::new(cfg(1.0, 0, 0.5, 9)).unwrap();
        for _ in 0..200 {
            assert_eq!(s.sample(&logits), 0);
        }
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        // p = softmax([ln 3, 0]) = [0.75, 0.25]
        let logits = [3f32.ln(), 0.0];
        let mut s = Sampler::new(cfg(1.0, 0, 1.0, 5)).unwrap();
        let n = 20000;
        let zeros = (0..n).filter(|_| s.sample(&logits) == 0).count();
        let frac = zeros as f32 / n as f32;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    /// Frequency of each token over `n` draws.
    fn frequencies(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[s.sample(logits) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
        let e: Vec<f64> = logits
            .iter()
            .map(|&l| (f64::from(l) / temperature).exp())
            .collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|x| x / sum).collect()
    }

    #[test]
    fn other_temperatures_sample_softmax_of_scaled_logits() {
        let logits = [2.0, 1.0, 0.0, -1.0];
        // 40000 draws: a frequency's standard deviation is at most 0.0025, so 0.01 is 4 sigma.
        let n = 40_000;
        for (t, p0) in [(0.5, 0.865), (2.0, 0.455)] {
            let want = softmax(&logits, t);
            // The two temperatures give clearly different distributions (T = 1 has p0 = 0.64).
            assert!((want[0] - p0).abs() < 0.001, "T={t}: {want:?}");
            let mut s = Sampler::new(cfg(t as f32, 0, 1.0, 11)).unwrap();
            let got = frequencies(&mut s, &logits, n);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 0.01,
                    "T={t} token {i}: frequency {g:.4}, softmax {w:.4}"
                );
            }
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p_in_proportion() {
        // Probabilities [0.5, 0.3, 0.15, 0.05]: top-p 0.7 keeps tokens 0 and 1 (0.5 < 0.7 ≤ 0.8)
        // and renormalizes them to 5:3, i.e. token 0 with probability 0.625.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let mut s = Sampler::new(cfg(1.0, 0, 0.7, 3)).unwrap();
        // 20000 draws: the standard deviation of a frequency near 0.625 is 0.0034.
        let got = frequencies(&mut s, &logits, 20_000);
        assert_eq!(got[2], 0.0, "token 2 is outside the nucleus");
        assert_eq!(got[3], 0.0, "token 3 is outside the nucleus");
        assert!((got[0] - 0.625).abs() < 0.015, "{got:?}");
        assert!((got[1] - 0.375).abs() < 0.015, "{got:?}");
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let err = Sampler::new(cfg(-1.0, 0, 1.0, 0)).err().unwrap();
        assert_eq!(
            err.to_string(),
            "temperature must be ≥ 0 (and finite), got -1"
        );
        assert!(Sampler::new(cfg(f32::NAN, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(cfg(1.0, 0, 0.0, 0)).is_err());
        assert!(Sampler::new(cfg(1.0, 0, 1.5, 0)).is_err());
    }
}

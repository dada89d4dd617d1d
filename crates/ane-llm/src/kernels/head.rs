//! The output head: final RMSNorm + classifier + per-lane maximum (reference §5.10, §7.6).
//!
//! I/O: `i00_x [1, D, 1, L]` → `o{c:02}_logits [1, V_c, 1, L]` for each classifier chunk c
//! (chunks of ≤ 65,536 channels, the per-axis limit of §11.7), then `o{n:02}_max [1, 1, 1, L]`,
//! the maximum logit of each lane, which the host uses as the argmax hint (first channel whose
//! fp16 value equals it; lowest index wins ties), then `o{n+1:02}_hidden [1, D, 1, L]`, the
//! normed hidden state the classifier read (what a draft head proposes from; the backend's
//! `hidden_states`).

use super::{input_name, output_name, Blocks, Geometry, Kernel, KernelError, KernelIo, MAX_AXIS};

/// Channel ranges of the classifier chunks: as few as possible, near-equal, each ≤ 65,536.
pub fn classifier_chunks(vocab: usize) -> Vec<std::ops::Range<usize>> {
    let n = vocab.div_ceil(MAX_AXIS).max(1);
    let size = vocab.div_ceil(n);
    (0..n)
        .map(|c| c * size..((c + 1) * size).min(vocab))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Generate the head. `output_norm: [D]`, `classifier: [V][D]` row-major.
pub fn head(g: &Geometry, output_norm: &[f32], classifier: &[f32]) -> Result<Kernel, KernelError> {
    g.check()?;
    let (d, v, l) = (g.dim, g.vocab, g.lanes);
    if output_norm.len() != d || classifier.len() != v * d {
        return Err(KernelError::Weights(format!(
            "head weights: norm {} (need {d}), classifier {} (need {})",
            output_norm.len(),
            classifier.len(),
            v * d
        )));
    }
    let mut b = Blocks::new();
    let x_in = b.input(&input_name(0, "x"), g.io, &[1, d, 1, l]);
    let inputs = vec![b.io(x_in)];
    let x = b.as_compute(x_in);
    let xn = b.rms_norm("output_norm", output_norm, g.rms_eps, x);
    let chunks = classifier_chunks(v);
    let mut outs = Vec::new();
    let mut maxes = Vec::new();
    for (c, r) in chunks.iter().enumerate() {
        let w = &classifier[r.start * d..r.end * d];
        let logits = b.linear(&format!("classifier_{c:02}"), w, r.len(), xn);
        maxes.push(b.reduce_max(logits, 1, None));
        outs.push(b.as_io_output(logits, g.io, &output_name(c, "logits")));
    }
    let mx = if maxes.len() == 1 {
        maxes[0]
    } else {
        let cat = b.concat_channels(&maxes, None);
        b.reduce_max(cat, 1, None)
    };
    outs.push(b.as_io_output(mx, g.io, &output_name(chunks.len(), "max")));
    outs.push(b.as_io_output(xn, g.io, &output_name(chunks.len() + 1, "hidden")));
    let outputs = outs.iter().map(|&o| b.io(o)).collect();
    let (program, weights) = b.finish(&outs)?;
    Ok(Kernel {
        label: "head".into(),
        program,
        weights,
        io: KernelIo { inputs, outputs },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_vocabulary_within_the_axis_limit() {
        assert_eq!(classifier_chunks(49_152), vec![0..49_152]);
        let c = classifier_chunks(151_936);
        assert_eq!(c.len(), 3);
        assert!(c.iter().all(|r| r.len() <= MAX_AXIS));
        assert_eq!(c.first().map(|r| r.start), Some(0));
        assert_eq!(c.last().map(|r| r.end), Some(151_936));
        assert!(c.windows(2).all(|w| w[0].end == w[1].start));
    }
}

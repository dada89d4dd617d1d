//! Self-distillation of a [`crate::draft_head`]: the model's own greedy continuations give
//! `(h_t, c_{t+1}, c_{t+2})` triples (hidden state that chose `c_{t+1}`, that token, and the
//! token the model chose next), and the head learns `c_{t+2}` from `(h_t, c_{t+1})` with
//! cross-entropy over a reduced vocabulary, AdamW ([`engine::train::Optimizer`]) and a cosine
//! schedule.
//!
//! The hidden states come from the backend's own decode steps ([`engine::Backend::decode`]
//! one token at a time, [`engine::Backend::hidden_states`]), so they are exactly what the
//! head sees at inference.

use crate::draft_head::{head_logits, head_logits_backward, HeadError, HeadParams, SplitMix};
use crate::train::{cross_entropy_grad, IGNORE_INDEX};
use engine::train::optim::learning_rate;
use engine::train::{OptimState, Optimizer, Schedule};
use engine::{Backend, Feed, SlotInput};
use model::LlamaWeights;

/// Distilled triples, structure of arrays: `hidden: [N, D]`, `next: [N]`, `target: [N]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DistillData {
    pub dim: usize,
    pub hidden: Vec<f32>,
    pub next: Vec<u32>,
    pub target: Vec<u32>,
}

impl DistillData {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ..Self::default()
        }
    }
    pub fn len(&self) -> usize {
        self.next.len()
    }
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Serialize: `ESPDSTL1`, u64 dim, u64 N, then `hidden` (f32), `next`, `target` (u32),
    /// little-endian. A cache of distilled triples, so training can be re-run without
    /// generating again.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + self.hidden.len() * 4 + self.len() * 8);
        b.extend(DISTILL_MAGIC);
        b.extend((self.dim as u64).to_le_bytes());
        b.extend((self.len() as u64).to_le_bytes());
        self.hidden.iter().for_each(|v| b.extend(v.to_le_bytes()));
        self.next.iter().for_each(|v| b.extend(v.to_le_bytes()));
        self.target.iter().for_each(|v| b.extend(v.to_le_bytes()));
        b
    }

    /// Parse [`DistillData::to_bytes`]' format; `None` if the bytes are not exactly that.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<[u8; 4]> { b.get(i..i + 4)?.try_into().ok() };
        let long = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
        };
        if b.get(..8)? != DISTILL_MAGIC {
            return None;
        }
        let dim = usize::try_from(long(8)?).ok()?;
        let n = usize::try_from(long(16)?).ok()?;
        let floats = n.checked_mul(dim)?;
        let expected = floats
            .checked_add(n.checked_mul(2)?)?
            .checked_mul(4)?
            .checked_add(24)?;
        if b.len() != expected {
            return None;
        }
        let at = |k: usize| 24 + 4 * k;
        let hidden = (0..floats)
            .map(|k| word(at(k)).map(f32::from_le_bytes))
            .collect::<Option<_>>()?;
        let next = (0..n)
            .map(|k| word(at(floats + k)).map(u32::from_le_bytes))
            .collect::<Option<_>>()?;
        let target = (0..n)
            .map(|k| word(at(floats + n + k)).map(u32::from_le_bytes))
            .collect::<Option<_>>()?;
        Some(Self {
            dim,
            hidden,
            next,
            target,
        })
    }
}

const DISTILL_MAGIC: &[u8; 8] = b"ESPDSTL1";

/// Greedily continue `prompt` (from an empty cache) for up to `tokens` tokens, stopping after
/// a token for which `is_stop` holds or at the context end, and append a triple per decode
/// step. Returns the number of triples added. [`distill_batch`] with one prompt.
pub fn distill(
    backend: &mut dyn Backend,
    prompt: &[u32],
    tokens: usize,
    is_stop: &dyn Fn(u32) -> bool,
    data: &mut DistillData,
) -> Result<usize, HeadError> {
    distill_batch(
        backend,
        &[prompt.to_vec()],
        tokens,
        1,
        is_stop,
        data,
        &mut |_, _| {},
    )
}

/// One prompt being continued in a KV slot of [`distill_batch`].
struct Running {
    /// Index of the prompt, and its triples so far.
    prompt: usize,
    triples: DistillData,
    /// The token to feed next, the hidden state that chose it, and its position.
    c: u32,
    h: Vec<f32>,
    pos: usize,
}

/// [`distill`] of every prompt, continuing up to `slots` of them at once: each pass over the
/// weights ([`Backend::forward_batch`]) carries one decode step of every running prompt (and
/// the prompt pass of the ones that join), so the weights are streamed once for all of them.
/// The triples are appended in prompt order and are exactly those of [`distill`] on each
/// prompt in turn (decode rows are row-invariant; a prompt runs as a prompt either way).
/// `progress(prompts finished, triples)` is called as prompts finish. Empty prompts and
/// prompts that fill the context give no triples. Returns the number of triples added.
pub fn distill_batch(
    backend: &mut dyn Backend,
    prompts: &[Vec<u32>],
    tokens: usize,
    slots: usize,
    is_stop: &dyn Fn(u32) -> bool,
    data: &mut DistillData,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize, HeadError> {
    let ctx = backend.config().context_length;
    let d = data.dim;
    let slots = slots.clamp(1, backend.max_slots().max(1));
    let mut done: Vec<Option<DistillData>> = vec![None; prompts.len()];
    let (mut finished, mut added) = (0usize, 0usize);
    let mut running: Vec<Option<Running>> = (0..slots).map(|_| None).collect();
    let mut queue = prompts.iter().enumerate();
    loop {
        // New prompts join in free slots; the rest take their next decode step.
        let mut joining = vec![false; slots];
        for (slot, r) in running.iter_mut().enumerate() {
            if r.is_none() {
                for (i, p) in queue.by_ref() {
                    if p.is_empty() || p.len() >= ctx {
                        done[i] = Some(DistillData::new(d));
                        finished += 1;
                        progress(finished, added);
                        continue;
                    }
                    *r = Some(Running {
                        prompt: i,
                        triples: DistillData::new(d),
                        c: 0,
                        h: Vec::new(),
                        pos: p.len(),
                    });
                    joining[slot] = true;
                    break;
                }
            }
        }
        let inputs: Vec<SlotInput> = running
            .iter()
            .enumerate()
            .filter_map(|(slot, r)| {
                let r = r.as_ref()?;
                Some(if joining[slot] {
                    SlotInput {
                        slot,
                        tokens: &prompts[r.prompt],
                        pos: 0,
                        feed: Feed::Prompt,
                    }
                } else {
                    SlotInput {
                        slot,
                        tokens: std::slice::from_ref(&r.c),
                        pos: r.pos,
                        feed: Feed::Decode,
                    }
                })
            })
            .collect();
        if inputs.is_empty() {
            break;
        }
        let in_pass: Vec<usize> = inputs.iter().map(|s| s.slot).collect();
        let logits = backend.forward_batch(&inputs)?;
        let hidden = backend
            .hidden_states()
            .filter(|h| h.len() == in_pass.len() * d)
            .ok_or(HeadError::NoHiddenStates)?;
        let n_vocab = logits.len() / in_pass.len();
        for (row, &slot) in in_pass.iter().enumerate() {
            let Some(r) = running[slot].as_mut() else {
                continue;
            };
            let next = engine::argmax(&logits[row * n_vocab..(row + 1) * n_vocab]);
            let h = &hidden[row * d..(row + 1) * d];
            if !joining[slot] {
                r.triples.hidden.extend_from_slice(&r.h);
                r.triples.next.push(r.c);
                r.triples.target.push(next);
                r.pos += 1;
            }
            r.h.clear();
            r.h.extend_from_slice(h);
            r.c = next;
            if r.triples.len() >= tokens || is_stop(r.c) || r.pos + 1 >= ctx {
                if let Some(r) = running[slot].take() {
                    added += r.triples.len();
                    done[r.prompt] = Some(r.triples);
                    finished += 1;
                    progress(finished, added);
                }
            }
        }
    }
    for t in done.into_iter().flatten() {
        data.hidden.extend(t.hidden);
        data.next.extend(t.next);
        data.target.extend(t.target);
    }
    Ok(added)
}

/// The reduced vocabulary: the `size` most frequent targets (ties: lower id first), then, if
/// fewer distinct targets were seen, the lowest ids not yet in (BPE ids come roughly in merge
/// order, i.e. by frequency). Ids are below `n_vocab`.
pub fn select_vocab(targets: &[u32], size: usize, n_vocab: usize) -> Vec<u32> {
    let mut count = vec![0u64; n_vocab];
    for &t in targets {
        if let Some(c) = count.get_mut(t as usize) {
            *c += 1;
        }
    }
    let mut seen: Vec<u32> = (0..n_vocab as u32)
        .filter(|&t| count[t as usize] > 0)
        .collect();
    seen.sort_by(|&a, &b| count[b as usize].cmp(&count[a as usize]).then(a.cmp(&b)));
    seen.truncate(size);
    let rest: Vec<u32> = (0..n_vocab as u32)
        .filter(|&t| count[t as usize] == 0)
        .take(size.saturating_sub(seen.len()))
        .collect();
    seen.extend(rest);
    seen
}

/// Settings of [`train_head`].
#[derive(Debug, Clone)]
pub struct HeadTrainOptions {
    pub hidden: usize,
    pub vocab: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub seed: u64,
    /// Share of the triples held out for the top-1 agreement (0 ≤ f < 1).
    pub val_fraction: f64,
    /// Worker threads of the products.
    pub threads: usize,
    /// Weight of the feature regression: the mean squared distance of the head's normalized
    /// state `n` from the model's next hidden state (relative to the hidden states' mean
    /// square), so that the head applied to its own `n` (a chained proposal) sees what it
    /// was trained on. 0 = cross-entropy only.
    pub feature_weight: f64,
}

impl Default for HeadTrainOptions {
    fn default() -> Self {
        Self {
            hidden: 1024,
            vocab: 4096,
            steps: 1500,
            batch: 256,
            lr: 1e-3,
            warmup: 50,
            weight_decay: 0.0,
            seed: 0,
            val_fraction: 0.05,
            threads: 1,
            feature_weight: 0.0,
        }
    }
}

/// One optimizer step, for progress lines.
#[derive(Debug, Clone, Copy)]
pub struct HeadStep {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub lr: f64,
}

/// A trained head and how it did.
#[derive(Debug, Clone)]
pub struct HeadTrained {
    pub params: HeadParams<f32>,
    pub vocab: Vec<u32>,
    pub eps: f32,
    /// Mean loss of the first and of the last step.
    pub first_loss: f64,
    pub last_loss: f64,
    /// Held-out triples, and the share of them whose target the head ranks first (an
    /// out-of-vocabulary target counts as a miss): the offline estimate of acceptance.
    pub val_triples: usize,
    pub val_top1: f64,
    /// Share of all targets inside the reduced vocabulary.
    pub coverage: f64,
}

/// Rows of a matrix in any stored type, as f32 `[ids.len(), cols]`.
fn gather_rows(t: &model::Tensor, ids: &[u32]) -> Vec<f32> {
    let mut out = vec![0f32; ids.len() * t.cols];
    for (&id, row) in ids.iter().zip(out.chunks_exact_mut(t.cols)) {
        t.dequantize_row(id as usize, row);
    }
    out
}

/// The head's inputs for the triples `ids` of `data`: their hidden states and the embeddings
/// of their fed tokens, both `[ids.len(), D]`.
fn head_inputs(data: &DistillData, ids: &[usize], w: &LlamaWeights) -> (Vec<f32>, Vec<f32>) {
    let d = data.dim;
    let mut h = Vec::with_capacity(ids.len() * d);
    for &i in ids {
        h.extend_from_slice(&data.hidden[i * d..(i + 1) * d]);
    }
    let next: Vec<u32> = ids.iter().map(|&i| data.next[i]).collect();
    (h, gather_rows(&w.token_embd, &next))
}

/// Train a head on `data` for the model `w` (deterministic given `opts.seed`).
pub fn train_head(
    data: &DistillData,
    w: &LlamaWeights,
    opts: &HeadTrainOptions,
    progress: &mut (dyn FnMut(HeadStep) + Send),
) -> Result<HeadTrained, HeadError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .map_err(|e| HeadError::Threads(e.to_string()))?
        .install(|| train_head_here(data, w, opts, progress))
}

/// [`train_head`] on the current rayon pool.
fn train_head_here(
    data: &DistillData,
    w: &LlamaWeights,
    opts: &HeadTrainOptions,
    progress: &mut (dyn FnMut(HeadStep) + Send),
) -> Result<HeadTrained, HeadError> {
    let d = w.config.dim;
    let n_vocab = w.output.rows;
    let eps = w.config.rms_eps as f64;
    assert_eq!(data.dim, d, "train_head: data of another dim");
    let mut rng = SplitMix(opts.seed);
    // Shuffle once; the tail is the held-out set.
    let mut order: Vec<usize> = (0..data.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let n_val = ((data.len() as f64 * opts.val_fraction) as usize).min(data.len());
    let (train, val) = order.split_at(data.len() - n_val);
    if train.is_empty() {
        return Err(HeadError::Invalid {
            path: "training data".into(),
            why: "no triples to train on".into(),
        });
    }
    let train_targets: Vec<u32> = train.iter().map(|&i| data.target[i]).collect();
    let vocab = select_vocab(&train_targets, opts.vocab, n_vocab);
    // index[token] = its row in the reduced vocabulary, or IGNORE_INDEX
    let mut index = vec![IGNORE_INDEX; n_vocab];
    for (r, &t) in vocab.iter().enumerate() {
        index[t as usize] = r as u32;
    }
    let reduced = |t: u32| index.get(t as usize).copied().unwrap_or(IGNORE_INDEX);
    let covered = data
        .target
        .iter()
        .filter(|&&t| reduced(t) != IGNORE_INDEX)
        .count();
    let out = gather_rows(&w.output, &vocab); // [V, D]
    let v = vocab.len();

    // g starts at the typical RMS of h, so that n ≈ h at initialization.
    let rms = data
        .hidden
        .chunks_exact(d)
        .map(|h| (h.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / d as f64).sqrt())
        .sum::<f64>()
        / data.len().max(1) as f64;
    let mut params = HeadParams::<f32>::init(d, opts.hidden, rms, opts.seed ^ 0x5EED);
    let optimizer = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: opts.weight_decay,
    };
    let mut states = [
        OptimState::new(&optimizer, params.w1.len()),
        OptimState::new(&optimizer, params.w2.len()),
        OptimState::new(&optimizer, params.norm.len()),
    ];
    let batch_of = |ids: &[usize]| {
        let (h, e) = head_inputs(data, ids, w);
        let targets: Vec<u32> = ids.iter().map(|&i| reduced(data.target[i])).collect();
        (h, e, targets)
    };

    let mut epoch: Vec<usize> = train.to_vec();
    let mut cursor = epoch.len();
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for step in 1..=opts.steps {
        // The next batch of a reshuffled pass over the training triples.
        let mut ids = Vec::with_capacity(opts.batch);
        while ids.len() < opts.batch.min(epoch.len()) {
            if cursor == epoch.len() {
                for i in (1..epoch.len()).rev() {
                    epoch.swap(i, rng.below(i + 1));
                }
                cursor = 0;
            }
            ids.push(epoch[cursor]);
            cursor += 1;
        }
        let (h, e, targets) = batch_of(&ids);
        let (mut logits, cache) = head_logits(&params, &h, &e, &out, eps);
        let count = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let scale = 1.0 / count.max(1) as f32;
        // logits become dloss/dlogits of the mean loss
        let (sum, _) = cross_entropy_grad(&mut logits, v, &targets, scale)?;
        let loss = sum / count.max(1) as f64;
        if !loss.is_finite() {
            return Err(HeadError::Invalid {
                path: "training".into(),
                why: format!("the loss is {loss} at step {step}"),
            });
        }
        let dn = (opts.feature_weight > 0.0)
            .then(|| feature_grad(data, &ids, &cache.n, opts.feature_weight / (rms * rms)));
        let mut grads = HeadParams::<f32>::zeros(d, opts.hidden);
        head_logits_backward(&logits, dn.as_deref(), &params, &out, &cache, &mut grads);
        let lr = learning_rate(
            Schedule::Cosine,
            opts.lr,
            opts.warmup as u64,
            step as u64,
            opts.steps as u64,
        );
        let s = step as u64;
        optimizer.step(s, lr, &mut params.w1, &grads.w1, &mut states[0]);
        optimizer.step(s, lr, &mut params.w2, &grads.w2, &mut states[1]);
        optimizer.step(s, lr, &mut params.norm, &grads.norm, &mut states[2]);
        if step == 1 {
            first_loss = loss;
        }
        last_loss = loss;
        progress(HeadStep {
            step,
            steps: opts.steps,
            loss,
            lr,
        });
    }

    let val_top1 = top1(&judged(&params, &vocab, &out, eps, data, val, w));
    Ok(HeadTrained {
        params,
        vocab,
        eps: eps as f32,
        first_loss,
        last_loss,
        val_triples: val.len(),
        val_top1,
        coverage: covered as f64 / data.len().max(1) as f64,
    })
}

/// For each of the triples `ids` of `data`: the probability the head gives its first choice
/// among `vocab` (`out`: their output rows), and whether that choice is the target (an
/// out-of-vocabulary target is a miss). For greedy decoding with one drafted token the share of
/// hits is the acceptance rate.
fn judged(
    params: &HeadParams<f32>,
    vocab: &[u32],
    out: &[f32],
    eps: f64,
    data: &DistillData,
    ids: &[usize],
    w: &LlamaWeights,
) -> Vec<(f32, bool)> {
    let mut judged = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(256) {
        let (h, e) = head_inputs(data, chunk, w);
        let (logits, _) = head_logits(params, &h, &e, out, eps);
        for (row, &i) in logits.chunks_exact(vocab.len()).zip(chunk) {
            let best = engine::argmax(row) as usize;
            let sum: f32 = row.iter().map(|&l| (l - row[best]).exp()).sum();
            judged.push((1.0 / sum, vocab[best] == data.target[i]));
        }
    }
    judged
}

/// The share of hits among [`judged`] triples.
fn top1(judged: &[(f32, bool)]) -> f64 {
    judged.iter().filter(|j| j.1).count() as f64 / judged.len().max(1) as f64
}

/// For a trained head on every triple of `data`: the probability the head gives its first
/// choice and whether that choice is the target (for triples of held-out prompts: the offline
/// estimate of the head's acceptance on them, and how it depends on the head's confidence).
pub fn judge(trained: &HeadTrained, data: &DistillData, w: &LlamaWeights) -> Vec<(f32, bool)> {
    let out = gather_rows(&w.output, &trained.vocab);
    let ids: Vec<usize> = (0..data.len()).collect();
    let eps = trained.eps as f64;
    judged(&trained.params, &trained.vocab, &out, eps, data, &ids, w)
}

/// With proposals made only when the head's probability is at least `min_p`: the share of
/// decode steps that propose, and the share of those proposals that are accepted.
pub fn gated(judged: &[(f32, bool)], min_p: f32) -> (f64, f64) {
    let proposed: Vec<bool> = judged
        .iter()
        .filter(|j| j.0 >= min_p)
        .map(|j| j.1)
        .collect();
    let hits = proposed.iter().filter(|&&h| h).count();
    (
        proposed.len() as f64 / judged.len().max(1) as f64,
        hits as f64 / proposed.len().max(1) as f64,
    )
}

/// Whether triple `i + 1` continues triple `i`'s greedy chain (it feeds `i`'s target; true
/// inside a prompt's continuation), so its hidden state is the model's state after `i`'s.
fn continues(data: &DistillData, i: usize) -> bool {
    i + 1 < data.len() && data.next[i + 1] == data.target[i]
}

/// Gradient of `weight · mean over rows r with a successor of |n_r - h_{i+1}|² / D` with
/// respect to `n: [ids.len(), D]` (the feature regression of [`HeadTrainOptions`]).
fn feature_grad(data: &DistillData, ids: &[usize], n: &[f32], weight: f64) -> Vec<f32> {
    let d = data.dim;
    let rows: Vec<(usize, usize)> = ids
        .iter()
        .enumerate()
        .filter(|&(_, &i)| continues(data, i))
        .map(|(r, &i)| (r, i))
        .collect();
    let k = (2.0 * weight / (rows.len().max(1) * d) as f64) as f32;
    let mut dn = vec![0f32; n.len()];
    for (r, i) in rows {
        let next = &data.hidden[(i + 1) * d..(i + 2) * d];
        for ((g, &nv), &hv) in dn[r * d..(r + 1) * d].iter_mut().zip(&n[r * d..]).zip(next) {
            *g = k * (nv - hv);
        }
    }
    dn
}

/// Chained proposals on `data`: over the triples whose successor continues their chain and
/// whose own proposal the head gets right, how often the head applied to its own state `n`
/// and that token proposes the successor's target. Returns (such triples, second hits).
pub fn chain_judge(trained: &HeadTrained, data: &DistillData, w: &LlamaWeights) -> (usize, usize) {
    let d = data.dim;
    let out = gather_rows(&w.output, &trained.vocab);
    let eps = trained.eps as f64;
    let v = trained.vocab.len();
    let ids: Vec<usize> = (0..data.len()).filter(|&i| continues(data, i)).collect();
    let (mut firsts, mut seconds) = (0, 0);
    for chunk in ids.chunks(256) {
        let (h, e) = head_inputs(data, chunk, w);
        let (logits, cache) = head_logits(&trained.params, &h, &e, &out, eps);
        let hit: Vec<usize> = (0..chunk.len())
            .filter(|&r| {
                let best = engine::argmax(&logits[r * v..(r + 1) * v]) as usize;
                trained.vocab[best] == data.target[chunk[r]]
            })
            .collect();
        if hit.is_empty() {
            continue;
        }
        let mut n2 = Vec::with_capacity(hit.len() * d);
        for &r in &hit {
            n2.extend_from_slice(&cache.n[r * d..(r + 1) * d]);
        }
        let t2: Vec<u32> = hit.iter().map(|&r| data.target[chunk[r]]).collect();
        let e2 = gather_rows(&w.token_embd, &t2);
        let (logits2, _) = head_logits(&trained.params, &n2, &e2, &out, eps);
        firsts += hit.len();
        for (k, &r) in hit.iter().enumerate() {
            let best = engine::argmax(&logits2[k * v..(k + 1) * v]) as usize;
            seconds += usize::from(trained.vocab[best] == data.target[chunk[r] + 1]);
        }
    }
    (firsts, seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_by_frequency_then_padded_with_low_ids() {
        let targets = [7, 3, 7, 9, 3, 7, 12];
        assert_eq!(select_vocab(&targets, 2, 20), vec![7, 3]);
        // 9 and 12 tie at one occurrence: the lower id first; then unseen ids from 0.
        assert_eq!(select_vocab(&targets, 6, 20), vec![7, 3, 9, 12, 0, 1]);
        // Ids outside the vocabulary are not counted.
        assert_eq!(select_vocab(&[25, 1], 2, 20), vec![1, 0]);
    }

    #[test]
    fn triples_round_trip_and_reject_other_bytes() {
        let d = DistillData {
            dim: 2,
            hidden: vec![0.5, -1.0, 2.0, 3.5],
            next: vec![4, 5],
            target: vec![6, 7],
        };
        let b = d.to_bytes();
        assert_eq!(DistillData::from_bytes(&b), Some(d));
        assert_eq!(DistillData::from_bytes(&b[..b.len() - 1]), None);
        assert_eq!(DistillData::from_bytes(b"ESPDSTL2"), None);
        assert_eq!(DistillData::from_bytes(&[]), None);
    }
}

//! The training loop: steps, held-out evaluation, the JSONL log, checkpoints and resume.
//!
//! [`Trainer::run`] takes optimizer steps `step + 1 ..= steps`. Each step cuts its micro-batches
//! from the data ([`data::step_batches`], a pure function of the step number), so a run resumed
//! from a checkpoint (weights, optimizer moments, step) takes exactly the steps the
//! uninterrupted run would have taken: same batches, same arithmetic, same log lines (apart from
//! the measured `tokens_per_s`).

use super::checkpoint::{self, Checkpoint, CheckpointError};
use super::data::{self, Shuffle, TokenData};
use super::optim::{learning_rate, OptimState, Optimizer, Schedule};
use super::scale::{LossScaler, LossScaling};
use super::step::{mean_loss, optimizer_step_scaled};
use super::{ParamLayout, Params, StepError, TrainBackend};
use serde::Serialize;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything that shapes a run (the `espresso train` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    pub seq_len: usize,
    pub batch: usize,
    pub grad_accum: usize,
    /// Total optimizer steps (a resumed run continues up to this).
    pub steps: u64,
    pub lr: f64,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub warmup: u64,
    /// Global-norm clipping threshold (0 = off).
    pub clip: f64,
    pub shuffle: Shuffle,
    pub seed: u64,
    /// Held-out loss every K steps (0 = never; needs validation data).
    pub eval_every: u64,
    /// At most this many windows of `seq_len` for each held-out evaluation.
    pub eval_windows: usize,
    /// Checkpoint directory (written every `save_every` steps, at the end and on interrupt).
    pub checkpoint: Option<PathBuf>,
    pub save_every: u64,
    /// Loss scaling of the gradients (on for fp16 devices).
    pub loss_scaling: LossScaling,
}

impl TrainSettings {
    /// What must match between a checkpoint and the run that resumes it (everything that
    /// changes which batches are drawn or how they update the weights, except `steps`).
    fn identity(&self, data_fingerprint: &str) -> serde_json::Value {
        let shuffle = match self.shuffle {
            Shuffle::None => "none".to_string(),
            Shuffle::Random { seed } => format!("random:{seed}"),
        };
        let mut id = serde_json::json!({
            "seq_len": self.seq_len,
            "batch": self.batch,
            "grad_accum": self.grad_accum,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "warmup": self.warmup,
            "clip": self.clip,
            "shuffle": shuffle,
            "data": data_fingerprint,
        });
        // Only when on, so checkpoints of unscaled runs keep their identity.
        if self.loss_scaling != LossScaling::Off {
            id["loss_scale"] = serde_json::json!(self.loss_scaling);
        }
        id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot resume: the checkpoint was made with {field} = {saved}, this run has {now}")]
    ResumeMismatch {
        field: String,
        saved: String,
        now: String,
    },
    #[error("{0}")]
    Settings(String),
    #[error("cannot write the log {}", .path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One line of `--log`: one per optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Cumulative kernel compiles of a device backend (absent for the CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiles: Option<u64>,
    /// Cumulative kernel dispatches of a device backend (absent for the CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatches: Option<u64>,
    /// The loss scale of this step (absent without loss scaling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// The gradients overflowed at `loss_scale`: the step was skipped, nothing applied.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All `steps` are done.
    Finished,
    /// Stopped on request after this step (checkpoint saved if a directory was given).
    Interrupted { step: u64 },
}

/// Receives progress (the CLI draws a bar and writes the log).
pub trait Observer {
    fn on_step(&mut self, line: &LogLine, steps: u64);
    /// A message for the user (checkpoint written, initial held-out loss, …).
    fn note(&mut self, _message: &str) {}
}

/// A run in progress: the weights, the optimizer state and the step reached.
pub struct Trainer {
    pub settings: TrainSettings,
    pub params: Params,
    pub state: OptimState,
    /// Optimizer steps done (skipped ones included).
    pub step: u64,
    pub scaler: LossScaler,
    grads: Vec<f32>,
    data_fingerprint: String,
}

impl Trainer {
    /// A fresh run from `params`.
    pub fn new(
        settings: TrainSettings,
        params: Params,
        data: &TokenData,
    ) -> Result<Self, TrainError> {
        check_settings(&settings, &params)?;
        data.check(settings.seq_len)?;
        let n = params.data.len();
        Ok(Self {
            state: OptimState::new(&settings.optimizer, n),
            grads: vec![0.0; n],
            step: 0,
            scaler: LossScaler::new(settings.loss_scaling),
            data_fingerprint: data.fingerprint(),
            settings,
            params,
        })
    }

    /// Continue the run saved in `dir`. The checkpoint must hold a model of `layout`'s shape and
    /// match every setting that affects the arithmetic (see `identity`); only `steps` may differ.
    pub fn resume(
        settings: TrainSettings,
        dir: &Path,
        layout: &ParamLayout,
        data: &TokenData,
    ) -> Result<Self, TrainError> {
        let mut ck = checkpoint::load(dir)?;
        ck.check_shape(&layout.config, layout.tied)?;
        let data_fingerprint = data.fingerprint();
        let now = settings.identity(&data_fingerprint);
        if let (Some(now_map), Some(saved_map)) = (now.as_object(), ck.meta.as_object()) {
            let saved_only = saved_map.keys().filter(|k| !now_map.contains_key(*k));
            let absent = serde_json::Value::Null;
            for (field, v) in now_map.iter().chain(saved_only.map(|k| (k, &absent))) {
                let s = saved_map
                    .get(field)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                if &s != v {
                    let field = match field.as_str() {
                        "data" => "the training data (fingerprint)".to_string(),
                        "loss_scale" => "--loss-scale".to_string(),
                        f => format!("--{}", f.replace('_', "-")),
                    };
                    return Err(TrainError::ResumeMismatch {
                        field,
                        saved: s.to_string(),
                        now: v.to_string(),
                    });
                }
            }
        }
        // Move each buffer out of the loaded checkpoint (no copy).
        let mut take = |name: &str| -> Result<Vec<f32>, TrainError> {
            let found = ck.buffers.iter().position(|(n, _)| n == name);
            match found.map(|i| ck.buffers.swap_remove(i).1.into_owned()) {
                Some(b) if b.len() == layout.len => Ok(b),
                _ => Err(TrainError::Settings(format!(
                    "the checkpoint in {} has no '{name}' buffer of {} values (made with another optimizer?)",
                    dir.display(),
                    layout.len
                ))),
            }
        };
        let params = Params {
            layout: layout.clone(),
            data: take("params")?,
        };
        let state = match settings.optimizer {
            Optimizer::AdamW { .. } => OptimState {
                m: take("adam_m")?,
                v: take("adam_v")?,
            },
            Optimizer::Sgd { .. } => OptimState::default(),
        };
        let scaler = match ck.buffer("loss_scale") {
            Some(b) => LossScaler::from_buffer(settings.loss_scaling, b).ok_or_else(|| {
                TrainError::Settings(format!(
                    "the checkpoint in {} has a corrupt loss-scale state",
                    dir.display()
                ))
            })?,
            None => LossScaler::new(settings.loss_scaling),
        };
        check_settings(&settings, &params)?;
        data.check(settings.seq_len)?;
        Ok(Self {
            grads: vec![0.0; params.data.len()],
            step: ck.step,
            scaler,
            data_fingerprint,
            settings,
            params,
            state,
        })
    }

    /// Write the checkpoint (atomically) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let mut buffers = vec![("params".to_string(), Cow::Borrowed(&self.params.data[..]))];
        if !self.state.m.is_empty() {
            buffers.push(("adam_m".to_string(), Cow::Borrowed(&self.state.m[..])));
            buffers.push(("adam_v".to_string(), Cow::Borrowed(&self.state.v[..])));
        }
        if self.scaler.enabled() {
            buffers.push((
                "loss_scale".to_string(),
                Cow::Owned(self.scaler.to_buffer()),
            ));
        }
        let ck = Checkpoint {
            step: self.step,
            meta: self.settings.identity(&self.data_fingerprint),
            config: self.params.layout.config.clone(),
            tied: self.params.layout.tied,
            buffers,
        };
        checkpoint::save(dir, &ck)?;
        Ok(())
    }

    /// Held-out mean loss over the first `eval_windows` windows of `val`.
    pub fn eval(&self, backend: &mut dyn TrainBackend, val: &TokenData) -> Result<f64, TrainError> {
        let s = &self.settings;
        let batches = data::eval_batches(val, s.seq_len, s.batch, s.eval_windows);
        Ok(mean_loss(backend, &self.params, &batches)?)
    }

    /// Take steps `step + 1 ..= steps`. `stop` is polled between steps (Ctrl-C): when set, the
    /// checkpoint is saved and the run returns [`Outcome::Interrupted`]. A non-finite loss stops
    /// the run with an error before that step is applied; the last checkpoint on disk stays.
    pub fn run(
        &mut self,
        backend: &mut dyn TrainBackend,
        train: &TokenData,
        val: Option<&TokenData>,
        stop: &AtomicBool,
        obs: &mut dyn Observer,
    ) -> Result<Outcome, TrainError> {
        let s = self.settings.clone();
        while self.step < s.steps {
            if stop.load(Ordering::SeqCst) {
                self.save_if_asked(obs)?;
                return Ok(Outcome::Interrupted { step: self.step });
            }
            let k = self.step + 1;
            let t0 = Instant::now();
            let micro = data::step_batches(train, s.shuffle, k, s.grad_accum, s.batch, s.seq_len);
            let lr = learning_rate(s.schedule, s.lr, s.warmup, k, s.steps);
            let report = optimizer_step_scaled(
                backend,
                &mut self.params,
                &mut self.grads,
                &mut self.state,
                &s.optimizer,
                &micro,
                k,
                lr,
                s.clip,
                &mut self.scaler,
            )?;
            if report.skipped {
                obs.note(&format!(
                    "step {k}: gradients overflowed at loss scale {}; step skipped (nothing applied), scale now {}",
                    report.loss_scale, self.scaler.scale
                ));
            }
            self.step = k;
            let tokens = (s.grad_accum * s.batch * s.seq_len) as f64;
            let tokens_per_s = tokens / t0.elapsed().as_secs_f64().max(1e-9);
            let val_loss = match val {
                Some(v) if s.eval_every > 0 && k.is_multiple_of(s.eval_every) => {
                    Some(self.eval(backend, v)?)
                }
                _ => None,
            };
            let counters = backend.device_counters();
            obs.on_step(
                &LogLine {
                    step: k,
                    loss: report.loss,
                    lr,
                    grad_norm: report.grad_norm,
                    tokens_per_s,
                    val_loss,
                    compiles: counters.map(|c| c.compiles),
                    dispatches: counters.map(|c| c.dispatches),
                    loss_scale: self
                        .scaler
                        .enabled()
                        .then_some(f64::from(report.loss_scale)),
                    skipped: report.skipped,
                },
                s.steps,
            );
            if s.save_every > 0 && k.is_multiple_of(s.save_every) && k < s.steps {
                self.save_if_asked(obs)?;
            }
        }
        self.save_if_asked(obs)?;
        Ok(Outcome::Finished)
    }

    fn save_if_asked(&self, obs: &mut dyn Observer) -> Result<(), TrainError> {
        if let Some(dir) = &self.settings.checkpoint {
            self.save(dir)?;
            obs.note(&format!(
                "checkpoint at step {} written to {}",
                self.step,
                dir.display()
            ));
        }
        Ok(())
    }
}

fn check_settings(s: &TrainSettings, p: &Params) -> Result<(), TrainError> {
    let bad = |m: String| Err(TrainError::Settings(m));
    let ctx = p.layout.config.context_length;
    if !(s.lr > 0.0 && s.lr.is_finite()) {
        return bad(format!("--lr must be a positive number (got {})", s.lr));
    }
    if s.seq_len == 0 || s.batch == 0 || s.grad_accum == 0 {
        return bad("--seq-len, --batch and --grad-accum must be at least 1".into());
    }
    if s.seq_len > ctx {
        return bad(format!(
            "--seq-len {} is above the model's context length {ctx}",
            s.seq_len
        ));
    }
    if s.eval_every > 0 && s.eval_windows == 0 {
        return bad(
            "--eval-windows must be at least 1 (or turn evaluation off with --eval-every 0)".into(),
        );
    }
    if s.steps == 0 {
        return bad("--steps must be at least 1".into());
    }
    if s.clip.is_nan() || s.clip < 0.0 {
        return bad(format!("--clip must be ≥ 0 (got {})", s.clip));
    }
    Ok(())
}

/// Keep the first `step` lines of a JSONL log (a resumed run continues it; lines written after
/// the checkpoint by the interrupted run would otherwise appear twice).
pub fn truncate_log(path: &Path, step: u64) -> Result<(), TrainError> {
    let io = |source| TrainError::Log {
        path: path.to_path_buf(),
        source,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|k| k <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(io)
}

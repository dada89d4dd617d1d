//! Loss scaling for devices that compute gradients in fp16 (the ANE).
//!
//! fp16 flushes values below 6e-8 to zero and rounds those below 6.1e-5 to a few bits, and the
//! gradients of a mean loss over hundreds of tokens live exactly there. So the loss is multiplied
//! by a scale `S` before the backward (every gradient the device sees is `S` times larger), and
//! the accumulated f32 gradient is multiplied by `1/S` on the host before clipping and the
//! update. `S` is a power of two, so scaling and unscaling are exact in f32.
//!
//! A gradient that overflowed (inf/NaN while the loss itself is finite) means `S` was too
//! large for fp16's range: the step is **skipped** — weights and optimizer state untouched,
//! reported in the log — and, when dynamic, `S` is halved. After `growth_interval` good steps
//! in a row a dynamic `S` doubles. These are `torch.cuda.amp.GradScaler`'s rules.

use serde::Serialize;

/// How the loss is scaled (the `--loss-scale` flag).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossScaling {
    /// No scaling (f32 devices); a non-finite gradient stops the run.
    Off,
    /// A fixed scale (a power of two).
    Static { scale: f32 },
    /// GradScaler's dynamic rule, starting at `init`.
    Dynamic { init: f32, growth_interval: u32 },
}

impl LossScaling {
    /// The dynamic default: start at 2^16 (GradScaler's start), halve on overflow, double after
    /// 100 good steps in a row (GradScaler waits 2000; our runs are shorter).
    pub const DYNAMIC: LossScaling = LossScaling::Dynamic {
        init: 65536.0,
        growth_interval: 100,
    };

    /// Check that a scale is a positive power of two (so that unscaling is exact).
    pub fn check(self) -> Result<Self, String> {
        let s = match self {
            LossScaling::Off => return Ok(self),
            LossScaling::Static { scale } => scale,
            LossScaling::Dynamic { init, .. } => init,
        };
        let ok = s.is_finite() && s >= 1.0 && s <= 2f32.powi(100) && s.log2().fract() == 0.0;
        if ok {
            Ok(self)
        } else {
            Err(format!(
                "the loss scale must be a power of two between 1 and 2^100 (got {s})"
            ))
        }
    }
}

/// The state of a loss scale during a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    pub mode: LossScaling,
    /// The current scale `S`.
    pub scale: f32,
    /// Good steps in a row since the last change of `S`.
    pub good_steps: u32,
}

impl LossScaler {
    pub fn new(mode: LossScaling) -> Self {
        let scale = match mode {
            LossScaling::Off => 1.0,
            LossScaling::Static { scale } => scale,
            LossScaling::Dynamic { init, .. } => init,
        };
        Self {
            mode,
            scale,
            good_steps: 0,
        }
    }

    /// Scaling is on: an overflow skips the step instead of stopping the run.
    pub fn enabled(&self) -> bool {
        self.mode != LossScaling::Off
    }

    /// A step's gradients overflowed: back off (dynamic) and start counting again.
    pub fn overflowed(&mut self) {
        if let LossScaling::Dynamic { .. } = self.mode {
            self.scale = (self.scale * 0.5).max(1.0);
        }
        self.good_steps = 0;
    }

    /// A step's gradients were finite: grow after `growth_interval` of them (dynamic).
    pub fn good_step(&mut self) {
        self.good_steps += 1;
        if let LossScaling::Dynamic {
            growth_interval, ..
        } = self.mode
        {
            if self.good_steps >= growth_interval {
                let grown = self.scale * 2.0;
                if grown.is_finite() && grown <= 2f32.powi(100) {
                    self.scale = grown;
                }
                self.good_steps = 0;
            }
        }
    }

    /// The state as saved in a checkpoint: `[scale, good_steps]` (both exact in f32).
    pub fn to_buffer(&self) -> Vec<f32> {
        vec![self.scale, self.good_steps as f32]
    }

    /// The state saved by [`Self::to_buffer`] for a run with `mode`.
    pub fn from_buffer(mode: LossScaling, b: &[f32]) -> Option<Self> {
        match *b {
            [scale, good] if scale.is_finite() && scale >= 1.0 && good >= 0.0 => Some(Self {
                mode,
                scale,
                good_steps: good as u32,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_scale_halves_on_overflow_and_doubles_after_the_interval() {
        let mut s = LossScaler::new(LossScaling::Dynamic {
            init: 1024.0,
            growth_interval: 3,
        });
        s.overflowed();
        assert_eq!(s.scale, 512.0);
        s.good_step();
        s.good_step();
        assert_eq!(s.scale, 512.0);
        s.good_step();
        assert_eq!((s.scale, s.good_steps), (1024.0, 0));
        s.good_step();
        s.overflowed();
        assert_eq!((s.scale, s.good_steps), (512.0, 0));
        for _ in 0..20 {
            s.overflowed();
        }
        assert_eq!(s.scale, 1.0, "never below 1");
    }

    #[test]
    fn static_scale_never_moves_and_scales_must_be_powers_of_two() {
        let mut s = LossScaler::new(LossScaling::Static { scale: 256.0 });
        s.overflowed();
        for _ in 0..500 {
            s.good_step();
        }
        assert_eq!(s.scale, 256.0);
        assert!(LossScaling::Static { scale: 300.0 }.check().is_err());
        assert!(LossScaling::Static { scale: 0.5 }.check().is_err());
        assert!(LossScaling::Static { scale: f32::NAN }.check().is_err());
        assert!(LossScaling::DYNAMIC.check().is_ok());
        let back = LossScaler::from_buffer(s.mode, &s.to_buffer());
        assert_eq!(back, Some(s));
        assert_eq!(LossScaler::from_buffer(s.mode, &[1.0]), None);
    }
}

//! Optimizers applied in Rust to the flat parameter buffer.
//!
//! The lowered training graph only computes gradients; the update happens
//! here, with the exact formulas of the reference implementation
//! (onnxruntime-training's `SGDOptimizerV2` and `AdamWOptimizer` kernels, and
//! PyTorch's `torch.optim.SGD` for momentum), evaluated in `f32` in the same
//! order, so trajectories match the reference to float rounding.

use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};
use super::simd::avx2_dispatch;

/// Which optimizer to use, with its hyper-parameters (serde: tagged by `kind`).
///
/// ```json
/// {"kind": "sgd", "lr": 0.05, "momentum": 0.9}
/// {"kind": "adamw", "lr": 0.001, "weight_decay": 0.01}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// Stochastic gradient descent, optionally with momentum (PyTorch's formula).
    Sgd(SgdConfig),
    /// AdamW as implemented by onnxruntime-training's `AdamWOptimizer`.
    #[serde(rename = "adamw")]
    AdamW(AdamWConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::AdamW(AdamWConfig::default())
    }
}

impl OptimizerConfig {
    /// The learning rate.
    pub fn learning_rate(&self) -> f32 {
        match self {
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::AdamW(c) => c.lr,
        }
    }

    /// Checks every hyper-parameter is in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(EngineError::Config { reason });
        let lr = self.learning_rate();
        if !(lr.is_finite() && lr >= 0.0) {
            return bad(format!("optimizer lr must be finite and >= 0, got {lr}"));
        }
        match self {
            OptimizerConfig::Sgd(c) => {
                for (name, v) in [
                    ("momentum", c.momentum),
                    ("dampening", c.dampening),
                    ("weight_decay", c.weight_decay),
                ] {
                    if !(v.is_finite() && v >= 0.0) {
                        return bad(format!("sgd {name} must be finite and >= 0, got {v}"));
                    }
                }
                if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
                    return bad("sgd nesterov needs momentum > 0 and dampening = 0".into());
                }
            }
            OptimizerConfig::AdamW(c) => {
                for (name, v) in [("beta1", c.beta1), ("beta2", c.beta2)] {
                    if !(0.0..1.0).contains(&v) {
                        return bad(format!("adamw {name} must be in [0, 1), got {v}"));
                    }
                }
                if !(c.epsilon.is_finite() && c.epsilon > 0.0) {
                    return bad(format!("adamw epsilon must be > 0, got {}", c.epsilon));
                }
                if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
                    return bad(format!(
                        "adamw weight_decay must be finite and >= 0, got {}",
                        c.weight_decay
                    ));
                }
            }
        }
        Ok(())
    }
}

/// SGD hyper-parameters; with `momentum = 0` this is the reference's plain
/// `p ← p − lr·g`, otherwise PyTorch's `torch.optim.SGD`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor (0 = none).
    pub momentum: f32,
    /// Dampening of the momentum (PyTorch's `dampening`).
    pub dampening: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient (coupled, PyTorch's `weight_decay`).
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.01,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// Which AdamW variant (onnxruntime-training's `adam_mode` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdamWMode {
    /// `adam_mode = 0`: PyTorch's `torch.optim.AdamW` — decay first, bias
    /// correction on the moments.
    Pytorch,
    /// `adam_mode = 1` (what `generate_artifacts` emits): Hugging Face's
    /// AdamW — bias correction folded into the learning rate, decay after the
    /// update.
    Huggingface,
}

/// AdamW hyper-parameters (names as in `torch.optim.AdamW`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment (the kernel's `alpha`).
    pub beta1: f32,
    /// Decay of the second moment (the kernel's `beta`).
    pub beta2: f32,
    /// Added to the denominator.
    pub epsilon: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Bias correction of the moments (`correct_bias`).
    pub bias_correction: bool,
    /// Variant; the reference artifacts use `huggingface`.
    pub mode: AdamWMode,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
            bias_correction: true,
            mode: AdamWMode::Huggingface,
        }
    }
}

/// Per-step scalars, computed once per step and shared by all parameters.
#[derive(Debug, Clone, Copy)]
pub struct StepScalars {
    /// 1-based step number of this update.
    pub step: u64,
    alpha_correction: f32,
    beta_correction: f32,
    lr_corrected: f32,
}

/// An optimizer with its state (moments, momentum buffers, step count),
/// laid out like the flat parameter buffer.
#[derive(Debug, Clone)]
pub struct Optimizer {
    config: OptimizerConfig,
    steps: u64,
    /// Momentum buffer (SGD) or first moment (AdamW); empty until first needed.
    state1: Vec<f32>,
    /// Second moment (AdamW); empty until first needed.
    state2: Vec<f32>,
    len: usize,
}

impl Optimizer {
    /// An optimizer for `len` parameters.
    pub fn new(config: OptimizerConfig, len: usize) -> Result<Self> {
        config.validate()?;
        Ok(Optimizer {
            config,
            steps: 0,
            state1: Vec::new(),
            state2: Vec::new(),
            len,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Changes the learning rate, keeping the state.
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        let mut config = self.config.clone();
        match &mut config {
            OptimizerConfig::Sgd(c) => c.lr = lr,
            OptimizerConfig::AdamW(c) => c.lr = lr,
        }
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Forgets moments, momentum and the step count (e.g. after adopting new
    /// global weights).
    pub fn reset(&mut self) {
        self.steps = 0;
        self.state1.clear();
        self.state2.clear();
    }

    /// Starts an update: advances the step count and computes the per-step
    /// scalars. Call [`Optimizer::update`] for every parameter segment next.
    pub fn begin_step(&mut self) -> StepScalars {
        self.steps += 1;
        let step = self.steps;
        let (mut alpha_correction, mut beta_correction) = (1.0f32, 1.0f32);
        let lr_corrected = match &self.config {
            OptimizerConfig::Sgd(c) => {
                if c.momentum != 0.0 && self.state1.len() != self.len {
                    self.state1 = vec![0.0; self.len];
                }
                c.lr
            }
            OptimizerConfig::AdamW(c) => {
                if self.state1.len() != self.len {
                    self.state1 = vec![0.0; self.len];
                    self.state2 = vec![0.0; self.len];
                }
                let mut lr = c.lr;
                if c.bias_correction {
                    // As the reference kernel: pow in double, then cast to float.
                    let t = i32::try_from(step).unwrap_or(i32::MAX);
                    alpha_correction = 1.0 - f64::from(c.beta1).powi(t) as f32;
                    beta_correction = 1.0 - f64::from(c.beta2).powi(t) as f32;
                    lr *= beta_correction.sqrt() / alpha_correction;
                }
                lr
            }
        };
        StepScalars {
            step,
            alpha_correction,
            beta_correction,
            lr_corrected,
        }
    }

    /// Updates one parameter segment that starts at `offset` of the flat
    /// buffer. `params` and `grads` have the same length.
    ///
    /// # Panics
    /// If the segment does not fit the buffer the optimizer was made for, or
    /// `params` and `grads` differ in length (an engine bug, not bad input).
    pub fn update(&mut self, s: &StepScalars, offset: usize, params: &mut [f32], grads: &[f32]) {
        assert_eq!(
            params.len(),
            grads.len(),
            "parameter and gradient lengths differ"
        );
        let range = offset..offset + params.len();
        assert!(range.end <= self.len, "segment beyond the parameter buffer");
        match &self.config {
            OptimizerConfig::Sgd(c) => {
                if c.momentum == 0.0 {
                    sgd_plain(c, params, grads);
                } else {
                    sgd_momentum(c, s.step, params, grads, &mut self.state1[range]);
                }
            }
            OptimizerConfig::AdamW(c) => {
                let (m, v) = (&mut self.state1[range.clone()], &mut self.state2[range]);
                match c.mode {
                    AdamWMode::Huggingface => adamw_hf(c, s, params, grads, m, v),
                    AdamWMode::Pytorch => adamw_torch(c, s, params, grads, m, v),
                }
            }
        }
    }

    /// One whole update of the flat buffer (begin + one segment).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        let s = self.begin_step();
        self.update(&s, 0, params, grads);
    }
}

avx2_dispatch! {
    /// Plain SGD (with optional coupled weight decay).
    fn sgd_plain(c: &SgdConfig, params: &mut [f32], grads: &[f32]) => sgd_plain_kernel
}

avx2_dispatch! {
    /// `torch.optim.SGD` with momentum: the buffer starts as the first gradient.
    fn sgd_momentum(c: &SgdConfig, step: u64, params: &mut [f32], grads: &[f32], buf: &mut [f32]) => sgd_momentum_kernel
}

avx2_dispatch! {
    /// `adam_mode = 1`, in the reference kernel's evaluation order.
    fn adamw_hf(c: &AdamWConfig, s: &StepScalars, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) => adamw_hf_kernel
}

avx2_dispatch! {
    /// `adam_mode = 0` (PyTorch), in the reference kernel's evaluation order.
    fn adamw_torch(c: &AdamWConfig, s: &StepScalars, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) => adamw_torch_kernel
}

#[inline(always)]
fn sgd_plain_kernel(c: &SgdConfig, params: &mut [f32], grads: &[f32]) {
    let (lr, wd) = (c.lr, c.weight_decay);
    if wd == 0.0 {
        for (p, &g) in params.iter_mut().zip(grads) {
            *p -= lr * g;
        }
    } else {
        for (p, &g) in params.iter_mut().zip(grads) {
            let g = g + wd * *p;
            *p -= lr * g;
        }
    }
}

#[inline(always)]
fn sgd_momentum_kernel(
    c: &SgdConfig,
    step: u64,
    params: &mut [f32],
    grads: &[f32],
    buf: &mut [f32],
) {
    let (lr, wd, mu, damp) = (c.lr, c.weight_decay, c.momentum, 1.0 - c.dampening);
    for ((p, &g), b) in params.iter_mut().zip(grads).zip(buf.iter_mut()) {
        let g = if wd != 0.0 { g + wd * *p } else { g };
        *b = if step == 1 { g } else { mu * *b + damp * g };
        let d = if c.nesterov { g + mu * *b } else { *b };
        *p -= lr * d;
    }
}

#[inline(always)]
fn adamw_hf_kernel(
    c: &AdamWConfig,
    s: &StepScalars,
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let (a, b, eps) = (c.beta1, c.beta2, c.epsilon);
    let (oma, omb) = (1.0 - a, 1.0 - b);
    let lr_c = s.lr_corrected;
    let decay = c.lr * c.weight_decay;
    for (((p, &g), m), v) in params
        .iter_mut()
        .zip(grads)
        .zip(m.iter_mut())
        .zip(v.iter_mut())
    {
        *m = a * *m + oma * g;
        *v = b * *v + oma_g2(omb, g);
        let denom = v.sqrt() + eps;
        let w = *p - lr_c * *m / denom;
        *p = w - decay * w;
    }
}

#[inline(always)]
fn adamw_torch_kernel(
    c: &AdamWConfig,
    s: &StepScalars,
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let (a, b, eps, lr, wd) = (c.beta1, c.beta2, c.epsilon, c.lr, c.weight_decay);
    let (oma, omb) = (1.0 - a, 1.0 - b);
    let (ac, bc) = (s.alpha_correction, s.beta_correction);
    for (((p, &g), m), v) in params
        .iter_mut()
        .zip(grads)
        .zip(m.iter_mut())
        .zip(v.iter_mut())
    {
        let w = *p - *p * lr * wd;
        *m = a * *m + oma * g;
        *v = b * *v + oma_g2(omb, g);
        let denom = (*v / bc).sqrt() + eps;
        *p = w - (lr * *m) / (ac * denom);
    }
}

/// `(1 − β₂)·g·g`, evaluated left to right as the reference does.
#[inline(always)]
fn oma_g2(omb: f32, g: f32) -> f32 {
    omb * g * g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adamw(mode: AdamWMode) -> OptimizerConfig {
        OptimizerConfig::AdamW(AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            mode,
            ..AdamWConfig::default()
        })
    }

    #[test]
    fn plain_sgd_moves_against_the_gradient() {
        let mut opt = Optimizer::new(
            OptimizerConfig::Sgd(SgdConfig {
                lr: 0.5,
                ..SgdConfig::default()
            }),
            2,
        )
        .unwrap();
        let mut p = [1.0, -1.0];
        opt.step(&mut p, &[2.0, -4.0]);
        assert_eq!(p, [0.0, 1.0]);
    }

    #[test]
    fn momentum_matches_pytorch_by_hand() {
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..SgdConfig::default()
        };
        let mut opt = Optimizer::new(OptimizerConfig::Sgd(cfg), 1).unwrap();
        let mut p = [1.0f32];
        opt.step(&mut p, &[1.0]); // buf = 1, p = 0.9
        opt.step(&mut p, &[1.0]); // buf = 1.9, p = 0.71
        assert!((p[0] - 0.71).abs() < 1e-6, "{}", p[0]);
    }

    #[test]
    fn adamw_first_step_is_lr_sized() {
        // Step 1 with bias correction: m̂/√v̂ = ±1, so the step is lr; the
        // Hugging Face mode then decays the updated weight (PyTorch decays 0).
        for (mode, size) in [
            (AdamWMode::Huggingface, 0.1 * (1.0 - 0.05)),
            (AdamWMode::Pytorch, 0.1),
        ] {
            let mut opt = Optimizer::new(adamw(mode), 2).unwrap();
            let mut p = [0.0f32, 0.0];
            opt.step(&mut p, &[3.0, -0.5]);
            assert!(
                (p[0] + size).abs() < 1e-5 && (p[1] - size).abs() < 1e-5,
                "{mode:?} {p:?}"
            );
        }
    }

    #[test]
    fn adamw_modes_differ_only_in_decay_order() {
        let mut hf = Optimizer::new(adamw(AdamWMode::Huggingface), 1).unwrap();
        let mut pt = Optimizer::new(adamw(AdamWMode::Pytorch), 1).unwrap();
        let (mut a, mut b) = ([1.0f32], [1.0f32]);
        hf.step(&mut a, &[0.0]);
        pt.step(&mut b, &[0.0]);
        // Zero gradient: only decay acts, identical for both modes.
        assert!((a[0] - 0.95).abs() < 1e-6 && (b[0] - 0.95).abs() < 1e-6);
    }

    #[test]
    fn reset_restarts_bias_correction() {
        let mut opt = Optimizer::new(adamw(AdamWMode::Huggingface), 1).unwrap();
        let mut p = [0.0f32];
        opt.step(&mut p, &[1.0]);
        opt.reset();
        assert_eq!(opt.steps(), 0);
        let before = p[0];
        opt.step(&mut p, &[1.0]);
        assert!((before - p[0] - 0.1).abs() < 1e-2);
    }

    #[test]
    fn bad_settings_are_rejected() {
        for json in [
            r#"{"kind":"sgd","lr":-1}"#,
            r#"{"kind":"adamw","beta1":1.0}"#,
            r#"{"kind":"adamw","epsilon":0}"#,
            r#"{"kind":"sgd","nesterov":true}"#,
        ] {
            let cfg: OptimizerConfig = serde_json::from_str(json).unwrap();
            assert!(cfg.validate().is_err(), "{json} accepted");
        }
        assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind":"sgd","lr_rate":1}"#).is_err());
        assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind":"adam"}"#).is_err());
    }
}

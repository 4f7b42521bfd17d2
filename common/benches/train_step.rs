//! Train-step throughput (samples/s) at batch 64, for the MLP and the CNN,
//! all in the same run on the same machine:
//!
//! * (a) the Rust engine — `Engine::train_step` (validation, lowered graph,
//!   optimizer in Rust), with SGD and with AdamW;
//! * (b) a bare `ort` loop on the lowered graph with no framework around it:
//!   borrowed tensor views in, `session.run`, outputs read — and the same
//!   loop plus an inline `p -= lr·g` (b+SGD);
//! * (c) the reference: onnxruntime-training's `Module.train_step` +
//!   `Optimizer.step` (AdamW) in Python, run by `examples/bench_reference.py`
//!   with `.venv/training`.
//!
//! Targets: (a, SGD) ≥ 0.95 × (b), and (a, AdamW) ≥ 1.0 × (c).
//! Prints a table and writes `data/bench/train_step.json` (inputs, machine,
//! every figure and ratio). Settings come from the environment:
//! `BENCH_BATCH` (64), `BENCH_REPEATS` (7), `BENCH_THREADS` (1),
//! `BENCH_SECONDS` (time per measurement, 1.0), `BENCH_MODELS` (mlp,cnn).
//!
//! Run: `cargo bench -p common --bench train_step`
//! (needs deploy/ort/install.sh, examples/build_artifacts.sh, deploy/python-env.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use common::engine::runtime::{self, compiled_workspace};
use common::engine::{
    AdamWConfig, Batch, Engine, EngineConfig, Manifest, OptimizerConfig, SgdConfig,
};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

const SGD_LR: f32 = 0.01;
const ADAMW_LR: f32 = 1e-3;

/// Benchmark settings (from `BENCH_*` environment variables).
struct Settings {
    batch: usize,
    repeats: usize,
    threads: usize,
    seconds: f64,
    models: Vec<String>,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v} is not valid")),
                Err(_) => Ok(default),
            }
        }
        let models: String = var("BENCH_MODELS", "mlp,cnn".to_string())?;
        Ok(Settings {
            batch: var("BENCH_BATCH", 64)?,
            repeats: var("BENCH_REPEATS", 7)?,
            threads: var("BENCH_THREADS", 1)?,
            seconds: var("BENCH_SECONDS", 1.0)?,
            models: models
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }
}

/// A seeded random batch in [0, 1) with labels in 0..num_classes.
fn random_batch(manifest: &Manifest, n: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let per_sample = manifest.inputs[0].per_sample_len();
    let x = (0..n * per_sample).map(|_| rng.random::<f32>()).collect();
    let classes = i64::try_from(manifest.num_classes).unwrap_or(i64::MAX);
    let y = (0..n).map(|_| rng.random_range(0..classes)).collect();
    (x, y)
}

/// Something that performs one train step.
trait Stepper {
    fn step(&mut self) -> Result<f32>;
}

struct EngineStepper<'d> {
    engine: Engine,
    x: &'d [f32],
    y: &'d [i64],
}

impl Stepper for EngineStepper<'_> {
    fn step(&mut self) -> Result<f32> {
        Ok(self.engine.train_step(&Batch::new(self.x, self.y))?)
    }
}

/// The bare loop: positional borrowed inputs, `run`, read outputs; optional inline SGD.
struct BareStepper<'d> {
    session: Session,
    /// Per session input: `None` = data, `Some(usize::MAX)` = labels, `Some(j)` = parameter j.
    feeds: Vec<Option<usize>>,
    shapes: Vec<Vec<i64>>,
    ranges: Vec<std::ops::Range<usize>>,
    input_shape: Vec<i64>,
    params: Vec<f32>,
    x: &'d [f32],
    y: &'d [i64],
    sgd: bool,
}

impl<'d> BareStepper<'d> {
    fn new(
        dir: &Path,
        manifest: &Manifest,
        threads: usize,
        x: &'d [f32],
        y: &'d [i64],
        sgd: bool,
    ) -> Result<Self> {
        let rt = runtime::runtime(None)?;
        let mut builder = Session::builder(&rt.environment).map_err(|e| anyhow::anyhow!("{e}"))?;
        if threads > 0 {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let session = builder
            .commit_from_file(dir.join(&manifest.training_graph))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let feeds = session
            .inputs()
            .iter()
            .map(|i| {
                if i.name() == manifest.label.name {
                    Some(usize::MAX)
                } else {
                    manifest.parameters.iter().position(|p| p.name == i.name())
                }
            })
            .collect();
        let bytes = std::fs::read(dir.join(&manifest.initial_parameters))?;
        let params = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(BareStepper {
            session,
            feeds,
            shapes: manifest
                .parameters
                .iter()
                .map(|p| p.shape.clone())
                .collect(),
            ranges: manifest.parameters.iter().map(|p| p.range()).collect(),
            input_shape: manifest.inputs[0].batch_shape(y.len()),
            params,
            x,
            y,
            sgd,
        })
    }
}

impl Stepper for BareStepper<'_> {
    fn step(&mut self) -> Result<f32> {
        let n = self.y.len() as i64;
        let mut inputs: Vec<SessionInputValue<'_>> = Vec::with_capacity(self.feeds.len());
        for feed in &self.feeds {
            let v: SessionInputValue<'_> = match *feed {
                None => TensorRef::from_array_view((self.input_shape.as_slice(), self.x))?.into(),
                Some(usize::MAX) => TensorRef::from_array_view(([n], self.y))?.into(),
                Some(j) => TensorRef::from_array_view((
                    self.shapes[j].as_slice(),
                    &self.params[self.ranges[j].clone()],
                ))?
                .into(),
            };
            inputs.push(v);
        }
        let outputs = self.session.run(inputs.as_slice())?;
        let loss = outputs[0].try_extract_tensor::<f32>()?.1[0];
        for (j, r) in self.ranges.iter().enumerate() {
            let g = outputs[j + 1].try_extract_tensor::<f32>()?.1;
            if self.sgd {
                for (p, &g) in self.params[r.clone()].iter_mut().zip(g) {
                    *p -= SGD_LR * g;
                }
            }
        }
        Ok(loss)
    }
}

/// Length of one turn in phase 1, in seconds.
const TURN_SECONDS: f64 = 0.05;

/// One repeat of phase 1: the variants take turns of `turn_steps` steps
/// until each has run about `seconds`; returns samples/s per variant. Short
/// turns spread disturbances from other processes evenly over the variants
/// (so their ratios stay meaningful on a busy machine) while each turn runs
/// long enough to have its caches warm.
fn measure_in_turns(
    variants: &mut [(&str, Box<dyn Stepper + '_>)],
    batch: usize,
    seconds: f64,
    turn_steps: usize,
) -> Result<Vec<f64>> {
    let mut spent = vec![0.0f64; variants.len()];
    let mut steps = 0usize;
    while steps == 0 || spent.iter().any(|&t| t < seconds) {
        for (i, (name, stepper)) in variants.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..turn_steps {
                let loss = stepper.step()?;
                if !loss.is_finite() {
                    bail!("{name}: loss became {loss}");
                }
            }
            spent[i] += start.elapsed().as_secs_f64();
        }
        steps += turn_steps;
    }
    Ok(spent.iter().map(|t| (steps * batch) as f64 / t).collect())
}

/// Samples/s of one variant running alone for about `seconds`.
fn measure_alone(stepper: &mut dyn Stepper, batch: usize, seconds: f64) -> Result<f64> {
    let start = Instant::now();
    let mut steps = 0usize;
    while steps < 3 || start.elapsed().as_secs_f64() < seconds {
        let loss = stepper.step()?;
        if !loss.is_finite() {
            bail!("loss became {loss}");
        }
        steps += 1;
    }
    Ok((steps * batch) as f64 / start.elapsed().as_secs_f64())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Runs `examples/bench_reference.py` for one model (one repeat of `steps`);
/// `None` (with a note) when the venv is missing.
fn reference(root: &Path, dir: &Path, settings: &Settings, steps: usize) -> Result<Option<Value>> {
    let python = root.join(".venv/training/bin/python");
    if !python.is_file() {
        eprintln!(
            "note: {} missing (run deploy/python-env.sh); reference column left empty",
            python.display()
        );
        return Ok(None);
    }
    let out = Command::new(&python)
        .arg(root.join("examples/bench_reference.py"))
        .arg("--artifacts")
        .arg(dir)
        .args(["--batch", &settings.batch.to_string()])
        .args(["--steps", &steps.to_string()])
        .args(["--repeats", "1"])
        .args(["--threads", &settings.threads.to_string()])
        .args(["--lr", &ADAMW_LR.to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "bench_reference.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).context("parsing bench_reference.py output")?;
    Ok(Some(v))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let root = compiled_workspace();
    let rt = runtime::runtime(None)?;
    let mut results = serde_json::Map::new();
    let mut rows = Vec::new();

    for model in &settings.models {
        let dir: PathBuf = root.join("examples/artifacts").join(model);
        if !dir.join("manifest.json").is_file() {
            bail!(
                "{} missing: run examples/build_artifacts.sh",
                dir.join("manifest.json").display()
            );
        }
        let manifest = Manifest::load(&dir)?;
        let (x, y) = random_batch(&manifest, settings.batch, 0);
        let config = |optimizer| EngineConfig {
            intra_op_threads: settings.threads,
            optimizer,
            ..EngineConfig::default()
        };
        let sgd = OptimizerConfig::Sgd(SgdConfig {
            lr: SGD_LR,
            ..SgdConfig::default()
        });
        let adamw = OptimizerConfig::AdamW(AdamWConfig {
            lr: ADAMW_LR,
            ..AdamWConfig::default()
        });
        let mut variants: Vec<(&str, Box<dyn Stepper + '_>)> = vec![
            (
                "engine_sgd",
                Box::new(EngineStepper {
                    engine: Engine::load(&dir, &config(sgd))?,
                    x: &x,
                    y: &y,
                }),
            ),
            (
                "engine_adamw",
                Box::new(EngineStepper {
                    engine: Engine::load(&dir, &config(adamw))?,
                    x: &x,
                    y: &y,
                }),
            ),
            (
                "bare_ort",
                Box::new(BareStepper::new(
                    &dir,
                    &manifest,
                    settings.threads,
                    &x,
                    &y,
                    false,
                )?),
            ),
            (
                "bare_ort_sgd",
                Box::new(BareStepper::new(
                    &dir,
                    &manifest,
                    settings.threads,
                    &x,
                    &y,
                    true,
                )?),
            ),
        ];
        // Warm up; the slowest step sets the turn length of phase 1.
        let mut slowest = 0.0f64;
        for (_, s) in variants.iter_mut() {
            let start = Instant::now();
            for _ in 0..5 {
                s.step()?;
            }
            slowest = slowest.max(start.elapsed().as_secs_f64() / 5.0);
        }
        let turn_steps = ((TURN_SECONDS / slowest.max(1e-6)) as usize).max(1);

        // Phase 1, (a) against (b): the Rust variants take turns.
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for _ in 0..settings.repeats {
            let r = measure_in_turns(&mut variants, settings.batch, settings.seconds, turn_steps)?;
            for (i, v) in r.into_iter().enumerate() {
                rates[i].push(v);
            }
        }

        // Phase 2, (a) against (c): the engine with AdamW alone, then one
        // Python repeat of about the same length, alternating.
        let adamw = &mut variants[1].1;
        let start = Instant::now();
        for _ in 0..5 {
            adamw.step()?;
        }
        let py_steps =
            ((settings.seconds / (start.elapsed().as_secs_f64() / 5.0)) as usize).clamp(10, 20000);
        let (mut solo, mut python, mut ref_version) = (Vec::new(), Vec::new(), None);
        for _ in 0..settings.repeats {
            solo.push(measure_alone(
                adamw.as_mut(),
                settings.batch,
                settings.seconds,
            )?);
            match reference(&root, &dir, &settings, py_steps)? {
                Some(v) => {
                    ref_version = Some(v["onnxruntime"].clone());
                    python.extend(
                        v["models"][model.as_str()]["samples_per_s"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_f64),
                    );
                }
                None => break,
            }
        }
        let ref_med = (!python.is_empty()).then(|| median(&python));

        let med: Vec<f64> = rates.iter().map(|r| median(r)).collect();
        let per_repeat = |num: &[f64], den: &[f64]| -> Vec<f64> {
            num.iter().zip(den).map(|(a, b)| a / b).collect()
        };
        let sgd_vs_bare = per_repeat(&rates[0], &rates[2]);
        let adamw_vs_python = per_repeat(&solo, &python);
        let ratios = json!({
            "engine_sgd / bare_ort": median(&sgd_vs_bare),
            "engine_sgd / bare_ort_sgd": median(&per_repeat(&rates[0], &rates[3])),
            "engine_adamw / bare_ort": median(&per_repeat(&rates[1], &rates[2])),
            "engine_adamw_alone / reference_python": (!python.is_empty()).then(|| median(&adamw_vs_python)),
            "per_repeat": {"engine_sgd / bare_ort": sgd_vs_bare, "engine_adamw_alone / reference_python": adamw_vs_python},
        });
        let mut figures = serde_json::Map::new();
        for ((name, _), r) in variants.iter().zip(&rates) {
            figures.insert(
                name.to_string(),
                json!({"samples_per_s": r, "median": median(r)}),
            );
        }
        figures.insert(
            "engine_adamw_alone".into(),
            json!({"samples_per_s": solo, "median": median(&solo)}),
        );
        figures.insert(
            "reference_python".into(),
            json!({"samples_per_s": python, "median": ref_med, "steps_per_repeat": py_steps,
                   "onnxruntime_training": ref_version}),
        );
        results.insert(
            model.clone(),
            json!({"parameters": manifest.parameter_count(), "turn_steps": turn_steps, "figures": figures, "ratios": ratios}),
        );
        let ratio_a_c = (!python.is_empty()).then(|| median(&adamw_vs_python));
        rows.push((
            model.clone(),
            med[0],
            med[1],
            med[2],
            med[3],
            median(&solo),
            ref_med,
            median(&sgd_vs_bare),
            ratio_a_c,
        ));
    }

    println!();
    println!(
        "train-step throughput, samples/s: batch {}, {} intra-op thread(s), median of {} repeats of {:.1} s",
        settings.batch, settings.threads, settings.repeats, settings.seconds
    );
    println!("phase 1 (a)/(b): Rust variants take turns of {TURN_SECONDS} s; phase 2 (a)/(c): engine AdamW alone and Python alternate");
    println!(
        "{:<5} {:>9} {:>10} {:>9} {:>9} | {:>10} {:>9} | {:>10} {:>11}",
        "model",
        "(a) SGD",
        "(a) AdamW",
        "(b) bare",
        "(b)+SGD",
        "(a) AdamW",
        "(c) ref",
        "(a)SGD/(b)",
        "(a)AdamW/(c)"
    );
    for (model, a_sgd, a_adamw, b, b_sgd, solo, c, r_ab, r_ac) in &rows {
        let c_text = c.map_or("n/a".to_string(), |c| format!("{c:.0}"));
        let r_ac = r_ac.map_or("n/a".to_string(), |r| format!("{r:.3}"));
        println!(
            "{model:<5} {a_sgd:>9.0} {a_adamw:>10.0} {b:>9.0} {b_sgd:>9.0} | {solo:>10.0} {c_text:>9} | {r_ab:>10.3} {r_ac:>11}"
        );
    }
    println!("targets: (a)SGD/(b) >= 0.95, (a)AdamW/(c) >= 1.0");

    let report = json!({
        "benchmark": "train_step",
        "inputs": {
            "batch": settings.batch,
            "repeats": settings.repeats,
            "statistic": "phase 1: the four Rust variants take turns of about 0.05 s until each ran `seconds`; phase 2: engine AdamW alone for `seconds`, then one Python run of as many steps, alternating; figures are medians over repeats, ratios medians of per-repeat ratios",
            "seconds_per_measurement": settings.seconds,
            "intra_op_threads": settings.threads,
            "models": settings.models,
            "sgd_lr": SGD_LR,
            "adamw_lr": ADAMW_LR,
            "batch_data": "uniform [0,1) inputs, uniform labels, ChaCha8 seed 0 (Python: numpy seed 0)",
            "variants": {
                "engine_sgd": "(a) Engine::train_step with SGD: batch validation, lowered graph, SGD in Rust",
                "engine_adamw": "(a) Engine::train_step with AdamW (reference formula)",
                "bare_ort": "(b) ort session.run on the lowered graph with borrowed inputs, outputs read, no update",
                "bare_ort_sgd": "(b) as bare_ort plus an inline p -= lr*g",
                "reference_python": "(c) onnxruntime-training Module(train_step) + Optimizer.step (AdamW) + lazy_reset_grad, Python"
            },
            "targets": {"engine_sgd / bare_ort": ">= 0.95", "engine_adamw / reference_python": ">= 1.0"},
        },
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": cpu_model(),
            "onnxruntime_library": rt.library.display().to_string(),
        },
        "results": results,
    });
    let out_dir = root.join("data/bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join("train_step.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

//! Aggregation throughput: 8 updates folded into a 50 MB model (what a BSP
//! round of 8 workers does), against a plain memcpy of the same 8 × 50 MB in
//! the same run, and against the straightforward per-parameter loop the
//! master used before (one parameter at a time over all deltas).
//!
//! `cargo bench -p master --bench aggregation` prints a table and writes
//! `data/bench/aggregation.json` (`--reps N`, default 5; medians).

use std::time::Instant;

use master::aggregation::{apply, WeightedDelta};

const MODEL_BYTES: usize = 50 * 1024 * 1024;
const UPDATES: usize = 8;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The previous implementation, kept here as the baseline.
fn per_parameter(global: &mut [f32], deltas: &[WeightedDelta<'_>]) {
    let total: f64 = deltas.iter().map(|d| d.weight).sum();
    let c: Vec<f64> = deltas
        .iter()
        .map(|d| d.weight * d.damping / total)
        .collect();
    for (j, g) in global.iter_mut().enumerate() {
        let step: f64 = deltas
            .iter()
            .zip(&c)
            .map(|(d, c)| c * f64::from(d.values[j]))
            .sum();
        *g = (f64::from(*g) + step) as f32;
    }
}

fn main() {
    let mut reps = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--reps" {
            reps = args
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n >= 1)
                .unwrap_or_else(|| {
                    eprintln!("--reps takes a number ≥ 1");
                    std::process::exit(2)
                });
        }
    }
    let n = MODEL_BYTES / 4;
    let deltas: Vec<Vec<f32>> = (0..UPDATES)
        .map(|k| {
            (0..n)
                .map(|j| ((j.wrapping_mul(2654435761) ^ k) % 1000) as f32 * 1e-4 - 0.05)
                .collect()
        })
        .collect();
    let weighted: Vec<WeightedDelta<'_>> = deltas
        .iter()
        .enumerate()
        .map(|(k, v)| WeightedDelta {
            weight: 100.0 + k as f64,
            damping: 1.0,
            values: v,
        })
        .collect();
    let mut global = vec![0.25f32; n];
    let mut dst = vec![0f32; n];
    let bytes = (UPDATES * MODEL_BYTES) as f64;

    let (mut copy, mut ours, mut before) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        for d in &deltas {
            dst.copy_from_slice(d);
            std::hint::black_box(&mut dst);
        }
        copy.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        apply(&mut global, &weighted).expect("aggregation");
        std::hint::black_box(&mut global);
        ours.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        per_parameter(&mut global, &weighted);
        std::hint::black_box(&mut global);
        before.push(t.elapsed().as_secs_f64());
    }
    let (copy, ours, before) = (median(copy), median(ours), median(before));
    let gbs = |secs: f64| bytes / secs / 1e9;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "aggregation: {UPDATES} updates into a {} MB model, {reps} reps (medians), {threads} core(s)",
        MODEL_BYTES >> 20
    );
    println!(
        "{:<36} {:>9} {:>9} {:>10}",
        "what", "ms", "GB/s", "vs memcpy"
    );
    for (name, secs) in [
        ("memcpy of the 8 updates", copy),
        ("aggregation (blocked, threads)", ours),
        ("aggregation before (per parameter)", before),
    ] {
        println!(
            "{name:<36} {:>9.1} {:>9.2} {:>10.3}",
            secs * 1e3,
            gbs(secs),
            copy / secs
        );
    }
    let doc = serde_json::json!({
        "bench": "aggregation",
        "updates": UPDATES,
        "model_bytes": MODEL_BYTES,
        "reps": reps,
        "cores": threads,
        "memcpy_secs": copy,
        "aggregation_secs": ours,
        "per_parameter_secs": before,
        "memcpy_gb_per_s": gbs(copy),
        "aggregation_gb_per_s": gbs(ours),
        "ratio_vs_memcpy": copy / ours,
        "per_parameter_ratio_vs_memcpy": copy / before,
        "speedup_vs_per_parameter": before / ours,
        "date": chrono::Utc::now().to_rfc3339(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/bench");
    let path = dir.join("aggregation.json");
    match std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()))
    {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
